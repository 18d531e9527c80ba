//! Endpoint health shared by every shard: DestinationRule `outlierDetection` (passive,
//! from the answers requests get) with Envoy's semantics, active health checks'
//! results (`ringress.io/health-check-*`, probed by `control::health_check`), and the
//! per-endpoint request counts `/clusters` shows. An endpoint is available when it is
//! neither ejected nor failing its health check.
//!
//! One [`EndpointHealth`] per cluster, built with the snapshot and shared by every
//! shard through it; each shard reports every try's outcome into the same relaxed
//! atomics, so the consecutive-error counts are the cluster's, as Envoy's are, and an
//! ejection one shard decides is seen by every shard's next pick. Nothing is locked:
//! an ejection is a compare-and-swap on the endpoint's ejection time.
//!
//! Envoy's rules, as `outlier_detection_impl.cc` has them:
//! - a 5xx answer counts toward `consecutive5xxErrors`, a 502, 503 or 504 also toward
//!   `consecutiveGatewayErrors`; a connect failure, reset or timeout counts as a 503
//!   (local-origin errors are not split); any other answer resets both counts;
//! - reaching a count ejects the endpoint, unless `100 × ejected / endpoints` is not
//!   below `maxEjectionPercent` (then it is counted as an overflow);
//! - an ejection lasts `baseEjectionTime × n` (`n` the times it was ejected, less one
//!   for each `interval` it then stayed in), at most 300s or `baseEjectionTime`; the
//!   endpoint returns at the first `interval` tick after that (ticks are counted from
//!   the cluster's creation: a reload starts them, and the table, afresh);
//! - when fewer than `minHealthPercent` of the endpoints are available, balancers
//!   use all of them (Envoy's panic threshold; 0, Istio's default, never panics: with
//!   every endpoint ejected the cluster answers 503 `UH`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::config::{HealthCheck, MAX_EJECTION_TIME, OutlierDetection};

/// What one try to an endpoint ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A response head with this status.
    Status(u16),
    /// No response: the connect failed or timed out, the connection was reset or
    /// closed, or the response did not come in time.
    Failed,
}

/// An ejection's base time and its longest, in ms (Envoy's `max_ejection_time`: 300s,
/// or the base time when that is longer).
fn ejection_bounds(od: &OutlierDetection) -> (u64, u64) {
    let base = (od.base_ejection_time.as_millis() as u64).max(1);
    (
        base,
        MAX_EJECTION_TIME.max(od.base_ejection_time).as_millis() as u64,
    )
}

/// One endpoint's state.
#[derive(Debug, Default)]
struct Endpoint {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Milliseconds since the table's epoch, plus one, of the ejection in force; 0:
    /// not ejected.
    ejected_at: AtomicU64,
    /// The ejection-time multiplier (Envoy's `ejectTimeBackoff`).
    multiplier: AtomicU32,
    /// When it last came back (ms since the epoch), for the multiplier's decrease.
    returned_at: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    /// Active health checking: failing now (1) or not (0), and the failures or
    /// passes in a row.
    hc_failed: AtomicU32,
    hc_failures: AtomicU32,
    hc_passes: AtomicU32,
    /// When its next probe is due (ms since the epoch).
    hc_due: AtomicU64,
}

/// A cluster's endpoints' health, shared by the shards.
#[derive(Debug)]
pub(crate) struct EndpointHealth {
    outlier: Option<OutlierDetection>,
    health_check: Option<HealthCheck>,
    /// Endpoints failing their health check now.
    hc_down: AtomicU32,
    /// Probes made, passed and failed.
    pub(crate) hc_attempts: AtomicU64,
    pub(crate) hc_successes: AtomicU64,
    pub(crate) hc_failures: AtomicU64,
    epoch: Instant,
    endpoints: Box<[Endpoint]>,
    /// Endpoints ejected now.
    ejected: AtomicU32,
    /// Ejections made, and those `maxEjectionPercent` prevented.
    pub(crate) ejections_enforced: AtomicU64,
    pub(crate) ejections_overflow: AtomicU64,
}

impl PartialEq for EndpointHealth {
    /// Tables compare by configuration (a cluster's equality is its configuration's).
    fn eq(&self, other: &Self) -> bool {
        self.outlier == other.outlier
            && self.health_check == other.health_check
            && self.endpoints.len() == other.endpoints.len()
    }
}

impl Eq for EndpointHealth {}

impl EndpointHealth {
    pub(crate) fn new(
        endpoints: usize,
        outlier: Option<OutlierDetection>,
        health_check: Option<HealthCheck>,
    ) -> EndpointHealth {
        EndpointHealth {
            outlier,
            health_check,
            hc_down: AtomicU32::new(0),
            hc_attempts: AtomicU64::new(0),
            hc_successes: AtomicU64::new(0),
            hc_failures: AtomicU64::new(0),
            epoch: Instant::now(),
            endpoints: (0..endpoints).map(|_| Endpoint::default()).collect(),
            ejected: AtomicU32::new(0),
            ejections_enforced: AtomicU64::new(0),
            ejections_overflow: AtomicU64::new(0),
        }
    }

    pub(crate) fn outlier(&self) -> Option<&OutlierDetection> {
        self.outlier.as_ref()
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Whether any endpoint may be unavailable: the balancers' fast path skips all
    /// checks when not.
    pub(crate) fn all_available(&self) -> bool {
        self.ejected.load(Relaxed) == 0 && self.hc_down.load(Relaxed) == 0
    }

    pub(crate) fn health_check(&self) -> Option<&HealthCheck> {
        self.health_check.as_ref()
    }

    /// Whether `endpoint`'s next probe is due at `now`; if so, the one after is
    /// scheduled an interval on.
    pub(crate) fn probe_due(&self, endpoint: usize, now: Instant) -> bool {
        let (Some(hc), Some(e)) = (&self.health_check, self.endpoints.get(endpoint)) else {
            return false;
        };
        let now_ms = self.ms(now);
        let due = e.hc_due.load(Relaxed);
        if now_ms < due {
            return false;
        }
        e.hc_due
            .store(now_ms + hc.interval.as_millis() as u64, Relaxed);
        true
    }

    /// Records a probe of `endpoint`: after `unhealthy_threshold` failures in a row it
    /// is taken out, after `healthy_threshold` passes in a row it is back.
    pub(crate) fn probed(&self, endpoint: usize, passed: bool) {
        let (Some(hc), Some(e)) = (&self.health_check, self.endpoints.get(endpoint)) else {
            return;
        };
        self.hc_attempts.fetch_add(1, Relaxed);
        let (run, other, threshold, set) = if passed {
            self.hc_successes.fetch_add(1, Relaxed);
            (&e.hc_passes, &e.hc_failures, hc.healthy_threshold, 0)
        } else {
            self.hc_failures.fetch_add(1, Relaxed);
            (&e.hc_failures, &e.hc_passes, hc.unhealthy_threshold, 1)
        };
        other.store(0, Relaxed);
        if run.fetch_add(1, Relaxed).saturating_add(1) >= threshold
            && e.hc_failed.swap(set, Relaxed) != set
        {
            if set == 1 {
                self.hc_down.fetch_add(1, Relaxed);
            } else {
                self.hc_down.fetch_sub(1, Relaxed);
            }
        }
    }

    /// Whether `endpoint` fails its health check now.
    pub(crate) fn failed_active_hc(&self, endpoint: usize) -> bool {
        self.endpoints
            .get(endpoint)
            .is_some_and(|e| e.hc_failed.load(Relaxed) == 1)
    }

    /// Records a try's outcome on `endpoint`, ejecting it when a count is reached.
    pub(crate) fn report(&self, endpoint: usize, outcome: Outcome, now: Instant) {
        let Some(e) = self.endpoints.get(endpoint) else {
            return;
        };
        e.requests.fetch_add(1, Relaxed);
        let (five, gateway) = match outcome {
            Outcome::Status(s) => ((500..600).contains(&s), matches!(s, 502..=504)),
            Outcome::Failed => (true, true),
        };
        if five {
            e.errors.fetch_add(1, Relaxed);
        }
        let Some(od) = &self.outlier else {
            return;
        };
        let bump = |count: &AtomicU32, hit: bool, limit: Option<u32>| {
            if !hit {
                // Written only when it changes: no shared write per success.
                if count.load(Relaxed) != 0 {
                    count.store(0, Relaxed);
                }
                return false;
            }
            let n = count.fetch_add(1, Relaxed).saturating_add(1);
            limit.is_some_and(|limit| n == limit)
        };
        let by_5xx = bump(&e.consecutive_5xx, five, od.consecutive_5xx);
        let by_gateway = bump(&e.consecutive_gateway, gateway, od.consecutive_gateway);
        if by_5xx || by_gateway {
            self.eject(endpoint, od, now);
        }
    }

    fn eject(&self, endpoint: usize, od: &OutlierDetection, now: Instant) {
        let e = &self.endpoints[endpoint];
        if e.ejected_at.load(Relaxed) != 0 {
            return;
        }
        let ejected = u64::from(self.ejected.load(Relaxed));
        if 100 * ejected / (self.endpoints.len().max(1) as u64)
            >= u64::from(od.max_ejection_percent)
        {
            self.ejections_overflow.fetch_add(1, Relaxed);
            return;
        }
        let now_ms = self.ms(now);
        if e.ejected_at
            .compare_exchange(0, now_ms + 1, Relaxed, Relaxed)
            .is_err()
        {
            return;
        }
        self.ejected.fetch_add(1, Relaxed);
        self.ejections_enforced.fetch_add(1, Relaxed);
        // The multiplier falls by one for each interval spent back in service.
        let interval = (od.interval.as_millis() as u64).max(1);
        let returned = e.returned_at.load(Relaxed);
        let multiplier = e.multiplier.load(Relaxed);
        let served = if returned == 0 {
            0
        } else {
            (now_ms - returned.min(now_ms)) / interval
        };
        let decayed = u64::from(multiplier).saturating_sub(served);
        let (base, cap) = ejection_bounds(od);
        let next = (decayed + 1).min(cap.div_ceil(base)).max(1);
        e.multiplier.store(next as u32, Relaxed);
        e.consecutive_5xx.store(0, Relaxed);
        e.consecutive_gateway.store(0, Relaxed);
    }

    /// When the ejection of `e` in force ends (ms since the epoch): the first
    /// interval tick after its time is up.
    fn returns_at(&self, e: &Endpoint, ejected_at: u64) -> u64 {
        let Some(od) = &self.outlier else {
            return 0;
        };
        let (base, cap) = ejection_bounds(od);
        let lasts = (base * u64::from(e.multiplier.load(Relaxed).max(1))).min(cap);
        let interval = (od.interval.as_millis() as u64).max(1);
        (ejected_at + lasts).div_ceil(interval) * interval
    }

    /// Whether `endpoint` may be picked at `now`; an ejection whose time is up ends
    /// here.
    pub(crate) fn available(&self, endpoint: usize, now: Instant) -> bool {
        let Some(e) = self.endpoints.get(endpoint) else {
            return true;
        };
        if e.hc_failed.load(Relaxed) == 1 {
            return false;
        }
        let at = e.ejected_at.load(Relaxed);
        if at == 0 {
            return true;
        }
        let now_ms = self.ms(now);
        if now_ms < self.returns_at(e, at - 1) {
            return false;
        }
        if e.ejected_at
            .compare_exchange(at, 0, Relaxed, Relaxed)
            .is_ok()
        {
            self.ejected.fetch_sub(1, Relaxed);
            e.returned_at.store(now_ms.max(1), Relaxed);
        }
        true
    }

    /// Whether `endpoint` is ejected at `now`, without ending an ejection (for the
    /// admin endpoint).
    pub(crate) fn is_ejected(&self, endpoint: usize, now: Instant) -> bool {
        self.endpoints.get(endpoint).is_some_and(|e| {
            let at = e.ejected_at.load(Relaxed);
            at != 0 && self.ms(now) < self.returns_at(e, at - 1)
        })
    }

    /// Endpoints neither ejected nor failing their health check at `now`.
    pub(crate) fn healthy(&self, now: Instant) -> usize {
        (0..self.endpoints.len())
            .filter(|&i| !self.is_ejected(i, now) && !self.failed_active_hc(i))
            .count()
    }

    /// Endpoints ejected by outlier detection at `now`.
    pub(crate) fn ejected(&self, now: Instant) -> usize {
        (0..self.endpoints.len())
            .filter(|&i| self.is_ejected(i, now))
            .count()
    }

    /// Whether balancers should ignore health: fewer than `minHealthPercent` of the
    /// endpoints are available (`available` of them).
    pub(crate) fn panics(&self, available: usize) -> bool {
        let min = self.outlier.map_or(0, |od| od.min_health_percent) as usize;
        available * 100 < min * self.endpoints.len()
    }

    /// Requests and 5xx (or failed) answers of `endpoint`.
    pub(crate) fn counts(&self, endpoint: usize) -> (u64, u64) {
        self.endpoints.get(endpoint).map_or((0, 0), |e| {
            (e.requests.load(Relaxed), e.errors.load(Relaxed))
        })
    }

    /// How long an ejection lasts now for an endpoint ejected `times` times (tests).
    #[cfg(test)]
    fn lasts(&self, endpoint: usize) -> std::time::Duration {
        let e = &self.endpoints[endpoint];
        let od = self.outlier.unwrap();
        (od.base_ejection_time * e.multiplier.load(Relaxed)).min(MAX_EJECTION_TIME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn od(consecutive_5xx: u32, max_ejection_percent: u32) -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: Some(consecutive_5xx),
            consecutive_gateway: None,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(10),
            max_ejection_percent,
            min_health_percent: 0,
        }
    }

    #[test]
    fn consecutive_5xx_eject_and_the_endpoint_returns_after_the_base_time() {
        let h = EndpointHealth::new(2, Some(od(3, 100)), None);
        let t0 = h.epoch;
        h.report(1, Outcome::Status(500), t0);
        h.report(1, Outcome::Status(200), t0);
        h.report(1, Outcome::Status(503), t0);
        h.report(1, Outcome::Failed, t0);
        assert!(h.available(1, t0), "a success reset the count");
        h.report(1, Outcome::Status(502), t0);
        assert!(!h.available(1, t0));
        assert!(!h.all_available());
        assert_eq!(h.healthy(t0), 1);
        assert!(!h.available(1, t0 + Duration::from_millis(9_999)));
        assert!(h.available(1, t0 + Duration::from_secs(10)));
        assert!(h.all_available());
        // Ejected again at once: twice as long.
        let t1 = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            h.report(1, Outcome::Status(500), t1);
        }
        assert_eq!(h.lasts(1), Duration::from_secs(20));
        assert!(!h.available(1, t1 + Duration::from_secs(19)));
        assert!(h.available(1, t1 + Duration::from_secs(20)));
        assert_eq!(h.ejections_enforced.load(Relaxed), 2);
        assert_eq!(h.counts(1), (8, 7));
    }

    #[test]
    fn max_ejection_percent_and_gateway_errors() {
        let h = EndpointHealth::new(3, Some(od(1, 40)), None);
        let t0 = h.epoch;
        h.report(0, Outcome::Status(500), t0);
        h.report(1, Outcome::Status(500), t0);
        // 1 of 3 ejected is 33% < 40%: the second ejection goes ahead, the third not.
        h.report(2, Outcome::Status(500), t0);
        assert_eq!(h.healthy(t0), 1);
        assert_eq!(h.ejections_overflow.load(Relaxed), 1);

        let gateway = EndpointHealth::new(
            2,
            Some(OutlierDetection {
                consecutive_5xx: None,
                consecutive_gateway: Some(2),
                ..od(1, 100)
            }),
            None,
        );
        gateway.report(0, Outcome::Status(500), t0);
        gateway.report(0, Outcome::Status(500), t0);
        assert!(gateway.available(0, t0), "500 is no gateway error");
        gateway.report(0, Outcome::Status(504), t0);
        gateway.report(0, Outcome::Failed, t0);
        assert!(!gateway.available(0, t0));
    }

    #[test]
    fn health_checks_take_endpoints_out_and_back() {
        let hc = HealthCheck {
            path: "/health".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 2,
            healthy_threshold: 2,
        };
        let h = EndpointHealth::new(2, None, Some(hc));
        let t0 = h.epoch;
        assert!(h.probe_due(0, t0));
        assert!(!h.probe_due(0, t0 + Duration::from_secs(4)));
        assert!(h.probe_due(0, t0 + Duration::from_secs(5)));
        h.probed(0, false);
        assert!(h.available(0, t0), "one failure is not enough");
        h.probed(0, false);
        assert!(!h.available(0, t0) && h.failed_active_hc(0));
        assert!(!h.all_available());
        assert_eq!(h.healthy(t0), 1);
        h.probed(0, true);
        assert!(!h.available(0, t0));
        h.probed(0, true);
        assert!(h.available(0, t0) && h.all_available());
        assert_eq!(h.hc_attempts.load(Relaxed), 4);
        assert_eq!(h.hc_failures.load(Relaxed), 2);
    }

    #[test]
    fn panic_threshold_and_no_outlier_detection() {
        let h = EndpointHealth::new(4, None, None);
        h.report(0, Outcome::Status(500), h.epoch);
        assert!(h.all_available());
        assert!(!h.panics(0), "minHealthPercent 0 never panics");
        let h = EndpointHealth::new(
            4,
            Some(OutlierDetection {
                min_health_percent: 50,
                ..od(1, 100)
            }),
            None,
        );
        assert!(!h.panics(2));
        assert!(h.panics(1));
    }
}
