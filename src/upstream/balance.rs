//! Load balancing: after routing has chosen a cluster, a shard's [`Balancer`] for that
//! cluster picks the endpoint its pool connects to (or takes an idle connection to).
//!
//! A balancer belongs to one shard and one cluster; it is mutable and never shared
//! between threads, so picking takes no lock. Policies, as DestinationRule
//! `loadBalancer.simple` names them:
//! - `ROUND_ROBIN`: a cursor over the endpoints, starting at a random one so shards
//!   do not all begin with the first endpoint;
//! - `LEAST_REQUEST`: power of two choices: two distinct random endpoints, the one
//!   with fewer requests in flight on this shard wins (as Envoy does);
//! - `RANDOM`: a uniformly random endpoint;
//! - `consistentHash`: the request's hash looked up in the cluster's table
//!   (`super::hash`), the same on every shard.

use std::time::Instant;

use crate::config::LoadBalancer;
use crate::upstream::cluster::Cluster;

/// One shard's endpoint chooser for one cluster.
#[derive(Debug, Clone)]
pub(crate) struct Balancer {
    rng: fastrand::Rng,
    cursor: usize,
    /// Requests in flight per endpoint, counted by [`Balancer::started`] and
    /// [`Balancer::finished`].
    active: Vec<u32>,
    /// Retries of the cluster's requests in flight on this shard (its share of
    /// `connectionPool.http.maxRetries` is the limit).
    pub(crate) retrying: u32,
    /// Requests of the cluster in flight on this shard (all endpoints): its share of
    /// `connectionPool.http.http2MaxRequests` is the limit.
    pub(crate) in_flight: u32,
}

impl Balancer {
    pub(crate) fn new(cluster: &Cluster) -> Self {
        let mut rng = fastrand::Rng::new();
        let cursor = rng.usize(..cluster.endpoints.len().max(1));
        Balancer {
            rng,
            cursor,
            active: vec![0; cluster.endpoints.len()],
            retrying: 0,
            in_flight: 0,
        }
    }

    /// The index in `cluster.endpoints` of the endpoint the next request goes to,
    /// among those its health table (`super::health`) makes available at `now` (all
    /// of them when fewer than `minHealthPercent` are). `cluster` must be the one this
    /// balancer was made for. `None`: no endpoint (a subset no endpoint matches, or
    /// every one ejected). A cluster with a consistent hash looks `hash` up in its
    /// table (a random point for a request without one).
    pub(crate) fn pick(
        &mut self,
        cluster: &Cluster,
        hash: Option<u64>,
        now: Instant,
    ) -> Option<usize> {
        let n = cluster.endpoints.len();
        let health = &cluster.health;
        let mut check = !health.all_available();
        let mut available = n;
        if check {
            available = (0..n).filter(|&i| health.available(i, now)).count();
            if health.panics(available) {
                check = false;
            } else if available == 0 {
                return None;
            }
        }
        let usable = |i: usize| !check || health.available(i, now);
        match n {
            0 => return None,
            1 => return Some(0),
            _ => {}
        }
        if let Some(table) = &cluster.hash {
            return Some(table.pick_where(hash.unwrap_or_else(|| self.rng.u64(..)), usable));
        }
        if check {
            return self.pick_available(cluster, n, available, &usable);
        }
        Some(self.pick_any(cluster, n))
    }

    /// [`Balancer::pick`] when some endpoints are unavailable: the policy over the
    /// `available` others (at least one).
    fn pick_available(
        &mut self,
        cluster: &Cluster,
        n: usize,
        available: usize,
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        match cluster.lb {
            LoadBalancer::RoundRobin => (0..n).find_map(|_| {
                let pick = self.cursor % n;
                self.cursor = (pick + 1) % n;
                usable(pick).then_some(pick)
            }),
            LoadBalancer::Random | LoadBalancer::LeastRequest => {
                // The k-th usable endpoint: no list of them is made per request.
                let nth = |k: usize| (0..n).filter(|&i| usable(i)).nth(k);
                let first_at = self.rng.usize(..available.max(1));
                let first = nth(first_at)?;
                if cluster.lb == LoadBalancer::Random || available < 2 {
                    return Some(first);
                }
                // Another one, drawn among the rest (skipping the first's place).
                let mut second_at = self.rng.usize(..available - 1);
                if second_at >= first_at {
                    second_at += 1;
                }
                let second = nth(second_at)?;
                Some(if self.active_on(second) < self.active_on(first) {
                    second
                } else {
                    first
                })
            }
        }
    }

    /// [`Balancer::pick`] when every endpoint is available.
    fn pick_any(&mut self, cluster: &Cluster, n: usize) -> usize {
        match cluster.lb {
            LoadBalancer::RoundRobin => {
                let pick = self.cursor % n;
                self.cursor = (pick + 1) % n;
                pick
            }
            LoadBalancer::Random => self.rng.usize(..n),
            LoadBalancer::LeastRequest => {
                let first = self.rng.usize(..n);
                let mut second = self.rng.usize(..n - 1);
                if second >= first {
                    second += 1;
                }
                if self.active_on(second) < self.active_on(first) {
                    second
                } else {
                    first
                }
            }
        }
    }

    /// A request to `endpoint` has started (counts toward LEAST_REQUEST).
    pub(crate) fn started(&mut self, endpoint: usize) {
        if let Some(active) = self.active.get_mut(endpoint) {
            *active = active.saturating_add(1);
            self.in_flight = self.in_flight.saturating_add(1);
        }
    }

    /// A request to `endpoint` has finished, successfully or not.
    pub(crate) fn finished(&mut self, endpoint: usize) {
        if let Some(active) = self.active.get_mut(endpoint)
            && *active > 0
        {
            *active -= 1;
            self.in_flight = self.in_flight.saturating_sub(1);
        }
    }

    /// Requests in flight to `endpoint` from this shard.
    pub(crate) fn active_on(&self, endpoint: usize) -> u32 {
        self.active.get(endpoint).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn cluster(endpoints: usize, lb: LoadBalancer) -> Cluster {
        Cluster {
            name: "httpbin:8000".to_owned(),
            istio_name: "outbound|8000||httpbin".to_owned(),
            host: "httpbin".to_owned(),
            port: 8000,
            endpoints: (0..endpoints)
                .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)))
                .collect(),
            subset: None,
            lb,
            pool: Default::default(),
            protocol: Default::default(),
            tls: None,
            hash: None,
            health: std::sync::Arc::new(crate::upstream::health::EndpointHealth::new(
                endpoints, None, None,
            )),
        }
    }

    #[test]
    fn round_robin_cycles_through_every_endpoint() {
        let c = cluster(3, LoadBalancer::RoundRobin);
        let mut b = Balancer::new(&c);
        let first = b.pick(&c, None, Instant::now()).unwrap_or(0);
        let picks: Vec<usize> = (0..9)
            .map(|_| b.pick(&c, None, Instant::now()).unwrap_or(0))
            .collect();
        for (i, pick) in picks.iter().enumerate() {
            assert_eq!(*pick, (first + 1 + i) % 3);
        }
    }

    #[test]
    fn round_robin_ignores_requests_in_flight() {
        let c = cluster(2, LoadBalancer::RoundRobin);
        let mut b = Balancer::new(&c);
        let first = b.pick(&c, None, Instant::now()).unwrap_or(0);
        b.started(1 - first);
        b.started(1 - first);
        assert_eq!(b.pick(&c, None, Instant::now()).unwrap_or(0), 1 - first);
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let c = cluster(2, LoadBalancer::LeastRequest);
        let mut b = Balancer::new(&c);
        b.started(0);
        for _ in 0..100 {
            assert_eq!(b.pick(&c, None, Instant::now()).unwrap_or(0), 1);
        }
        b.finished(0);
        b.started(1);
        for _ in 0..100 {
            assert_eq!(b.pick(&c, None, Instant::now()).unwrap_or(0), 0);
        }
        // With three endpoints the idle one is in the pair two times in three.
        let c = cluster(3, LoadBalancer::LeastRequest);
        let mut b = Balancer::new(&c);
        for _ in 0..5 {
            b.started(0);
            b.started(2);
        }
        let idle = (0..3000)
            .filter(|_| b.pick(&c, None, Instant::now()).unwrap_or(0) == 1)
            .count();
        assert!(
            (1700..=2300).contains(&idle),
            "idle endpoint picked {idle} of 3000"
        );
    }

    #[test]
    fn counts_saturate_and_ignore_unknown_endpoints() {
        let c = cluster(2, LoadBalancer::LeastRequest);
        let mut b = Balancer::new(&c);
        b.finished(0);
        assert_eq!(b.active_on(0), 0);
        b.started(7);
        b.finished(7);
        assert_eq!(b.active_on(7), 0);
        b.started(1);
        assert_eq!(b.active_on(1), 1);
    }

    #[test]
    fn random_reaches_every_endpoint() {
        let c = cluster(4, LoadBalancer::Random);
        let mut b = Balancer::new(&c);
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[b.pick(&c, None, Instant::now()).unwrap_or(0)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 700), "{seen:?}");
    }

    #[test]
    fn single_and_empty_clusters_pick_zero() {
        for lb in [
            LoadBalancer::RoundRobin,
            LoadBalancer::LeastRequest,
            LoadBalancer::Random,
        ] {
            for n in [0, 1] {
                let c = cluster(n, lb);
                let mut b = Balancer::new(&c);
                assert_eq!(b.pick(&c, None, Instant::now()).unwrap_or(0), 0);
            }
        }
    }

    #[test]
    fn ejected_endpoints_are_skipped_by_every_policy() {
        use crate::config::{HashKey, HashTable, OutlierDetection};
        use crate::upstream::hash::EndpointHash;
        use crate::upstream::health::{EndpointHealth, Outcome};
        use std::sync::Arc;
        use std::time::Duration;
        let od = |min_health_percent| OutlierDetection {
            consecutive_5xx: Some(1),
            consecutive_gateway: None,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 100,
            min_health_percent,
        };
        let now = Instant::now();
        for lb in [
            LoadBalancer::RoundRobin,
            LoadBalancer::LeastRequest,
            LoadBalancer::Random,
        ] {
            let mut c = cluster(3, lb);
            c.health = Arc::new(EndpointHealth::new(3, Some(od(0)), None));
            c.health.report(1, Outcome::Status(500), now);
            let mut b = Balancer::new(&c);
            for _ in 0..60 {
                assert_ne!(b.pick(&c, None, now), Some(1), "{lb:?}");
            }
            c.health.report(0, Outcome::Status(500), now);
            c.health.report(2, Outcome::Status(500), now);
            assert_eq!(b.pick(&c, None, now), None, "all ejected: no endpoint");
        }
        // A hash key whose endpoint is ejected goes to the next one on the ring.
        let mut c = cluster(3, LoadBalancer::RoundRobin);
        let table = HashTable::RingHash {
            minimum_ring_size: 64,
        };
        c.hash = Some(Arc::new(EndpointHash::build(
            HashKey::SourceIp,
            table,
            &c.endpoints,
        )));
        c.health = Arc::new(EndpointHealth::new(3, Some(od(0)), None));
        let mut b = Balancer::new(&c);
        let home = b.pick(&c, Some(42), now).unwrap();
        c.health.report(home, Outcome::Status(500), now);
        let moved = b.pick(&c, Some(42), now).unwrap();
        assert_ne!(moved, home);
        assert_eq!(b.pick(&c, Some(42), now), Some(moved));
        // Under minHealthPercent, every endpoint is used again (Envoy's panic mode).
        let mut c = cluster(2, LoadBalancer::RoundRobin);
        c.health = Arc::new(EndpointHealth::new(2, Some(od(60)), None));
        c.health.report(0, Outcome::Status(500), now);
        let mut b = Balancer::new(&c);
        let picks: std::collections::BTreeSet<_> =
            (0..4).filter_map(|_| b.pick(&c, None, now)).collect();
        assert_eq!(picks.len(), 2);
    }
}
