//! When a request is tried again, and how long each try may wait: a route's `retries`
//! (`attempts`, `perTryTimeout`, `retryOn`) and `timeout`, with Istio's defaults, and
//! a gRPC request's `grpc-timeout` (within the route's `timeout`, as Istio configures
//! Envoy's `grpc_timeout_header_max`).
//!
//! Only a request whose body went out whole in the first send is ever retried (the
//! body is gone once streamed). A pooled keep-alive connection that turns out to be
//! closed before any response byte is re-dialled once without using up an attempt: the
//! upstream never saw the request. `retryOn` takes Envoy's conditions as Istio passes
//! them; `refused-stream` is an HTTP/2 upstream's `REFUSED_STREAM` (or a stream its
//! GOAWAY left unprocessed); those about gRPC status never trigger.

use std::time::{Duration, Instant};

use super::ProxyError;
use crate::route::Route;

/// Istio's default when a route sets no `retries`: 2 retries.
const DEFAULT_ATTEMPTS: u32 = 2;
/// Istio's default `retryOn` (`connect-failure,refused-stream,unavailable,cancelled,
/// retriable-status-codes` with 503 retriable), less the gRPC-status conditions.
const DEFAULT_RETRY_ON: &[&str] = &["connect-failure", "refused-stream", "503"];

/// One request's retry budget and deadlines.
pub(super) struct RetryPolicy<'r> {
    /// Retries allowed after the first try.
    retries: u32,
    retry_on: RetryOn<'r>,
    per_try: Option<Duration>,
    /// The route's `timeout` (or the request's `grpc-timeout`) over all tries;
    /// `None`: no limit (`0s` or unset).
    deadline: Option<Instant>,
    /// What `deadline` is from the request's start.
    timeout: Option<Duration>,
    /// The wait for a response head when neither timeout applies.
    idle: Duration,
}

enum RetryOn<'r> {
    Default,
    Configured(&'r [String]),
}

impl<'r> RetryPolicy<'r> {
    pub(super) fn for_route(route: &'r Route, idle: Duration, now: Instant) -> RetryPolicy<'r> {
        let (retries, retry_on, per_try) = match &route.retries {
            Some(r) => (
                r.attempts,
                RetryOn::Configured(&r.retry_on),
                r.per_try_timeout,
            ),
            None => (DEFAULT_ATTEMPTS, RetryOn::Default, None),
        };
        let timeout = route.timeout.filter(|t| !t.is_zero());
        RetryPolicy {
            retries,
            retry_on,
            per_try: per_try.filter(|t| !t.is_zero()),
            deadline: timeout.map(|t| now + t),
            timeout,
            idle,
        }
    }

    /// Limits the request to its `grpc-timeout` (a gRPC client's deadline), within
    /// the route's `timeout`; a zero or unreadable one changes nothing.
    pub(super) fn with_grpc_timeout(mut self, header: Option<&[u8]>, now: Instant) -> Self {
        let Some(grpc) = header.and_then(grpc_timeout).filter(|t| !t.is_zero()) else {
            return self;
        };
        let timeout = self.timeout.map_or(grpc, |t| t.min(grpc));
        self.timeout = Some(timeout);
        self.deadline = Some(now + timeout);
        self
    }

    /// The limit over all tries, for the error once it ran out.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout.unwrap_or_default()
    }

    /// How long try number `attempt` (1-based) may wait for its response head, or
    /// `None` when the route's `timeout` has already run out.
    pub(super) fn wait(&self, now: Instant) -> Option<Duration> {
        let left = match self.deadline {
            Some(deadline) if deadline <= now => return None,
            Some(deadline) => Some(deadline - now),
            None => None,
        };
        Some(match (left, self.per_try) {
            (Some(left), Some(per_try)) => left.min(per_try),
            (Some(left), None) => left,
            (None, Some(per_try)) => per_try,
            (None, None) => self.idle,
        })
    }

    /// Whether a try that ended in `error` may be followed by another (`tries` made).
    pub(super) fn retry_error(&self, error: &ProxyError, tries: u32) -> bool {
        if tries > self.retries {
            return false;
        }
        // Envoy answers these itself with 503 or 504, so `5xx` and `gateway-error`
        // cover them too.
        let condition = match error {
            ProxyError::Connect(e) if e.is_overflow() => return false,
            ProxyError::Connect(_) => "connect-failure",
            ProxyError::UpstreamIo { source, .. }
                if source.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                "refused-stream"
            }
            ProxyError::UpstreamClosed { .. } | ProxyError::UpstreamIo { .. } => "reset",
            ProxyError::UpstreamTimeout { .. } => "per-try timeout",
            _ => return false,
        };
        self.any(|on| on == condition || on == "5xx" || on == "gateway-error")
    }

    /// Whether a response with `status` is discarded for another try.
    pub(super) fn retry_status(&self, status: u16, tries: u32) -> bool {
        tries <= self.retries
            && self.any(|on| match on {
                "5xx" => status >= 500,
                "gateway-error" => matches!(status, 502..=504),
                "retriable-4xx" => status == 409,
                code => code.parse::<u16>() == Ok(status),
            })
    }

    fn any(&self, mut test: impl FnMut(&str) -> bool) -> bool {
        match self.retry_on {
            RetryOn::Default => DEFAULT_RETRY_ON.iter().any(|on| test(on)),
            RetryOn::Configured(on) => on.iter().any(|on| test(on)),
        }
    }
}

/// A `grpc-timeout` value: 1 to 8 digits and a unit (`H`ours, `M`inutes, `S`econds,
/// `m`illi-, `u` micro-, `n` nanoseconds), as gRPC's HTTP/2 protocol spells it.
fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

impl ProxyError {
    /// A pooled keep-alive connection found closed before any response byte: the
    /// upstream never saw the request, so it is sent again on a new connection.
    pub(super) fn is_stale_connection(&self) -> bool {
        matches!(self, ProxyError::UpstreamClosed { reused: true, .. })
    }

    /// What a try that failed so tells outlier detection: a failure of the endpoint
    /// (connect failure or timeout, reset, close, bad response, no answer in time),
    /// or nothing (the cluster was full, a pooled connection had gone stale, the
    /// client went away).
    pub(super) fn outlier_outcome(&self) -> Option<crate::upstream::health::Outcome> {
        match self {
            ProxyError::Connect(c) if c.is_overflow() => None,
            _ if self.is_stale_connection() => None,
            ProxyError::Connect(_)
            | ProxyError::UpstreamClosed { .. }
            | ProxyError::UpstreamIo { .. }
            | ProxyError::BadResponse { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::UpstreamStalled { .. } => Some(crate::upstream::health::Outcome::Failed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_read_as_grpc_writes_them() {
        assert_eq!(grpc_timeout(b"200m"), Some(Duration::from_millis(200)));
        assert_eq!(grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(
            grpc_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(grpc_timeout(b"5u"), Some(Duration::from_micros(5)));
        for bad in [&b""[..], b"m", b"123456789S", b"1s", b"-1S", b"1 S", b"10"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }
    use crate::config::{HeaderOperations, Retries};
    use crate::route::Action;
    use crate::upstream::ConnectError;

    fn route(retries: Option<Retries>, timeout: Option<Duration>) -> Route {
        Route {
            virtual_service: "vs".into(),
            rule: 0,
            name: None,
            action: Action::Direct {
                status: 200,
                body: None,
            },
            rewrite: None,
            timeout,
            retries,
            headers: HeaderOperations::default(),
            policies: Default::default(),
            mirrors: Default::default(),
            stats: Default::default(),
        }
    }

    fn retries(attempts: u32, on: &[&str], per_try: Option<u64>) -> Option<Retries> {
        Some(Retries {
            attempts,
            per_try_timeout: per_try.map(Duration::from_millis),
            retry_on: on.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn connect_failure() -> ProxyError {
        ProxyError::Connect(ConnectError::TimedOut {
            addr: "127.0.0.1:1".parse().unwrap(),
            after: Duration::from_secs(10),
        })
    }

    fn reset() -> ProxyError {
        ProxyError::UpstreamClosed {
            addr: "127.0.0.1:1".parse().unwrap(),
            reused: false,
        }
    }

    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn istio_defaults_retry_connect_failures_and_503_twice() {
        let r = route(None, None);
        let p = RetryPolicy::for_route(&r, IDLE, Instant::now());
        assert!(p.retry_error(&connect_failure(), 1));
        assert!(p.retry_error(&connect_failure(), 2));
        assert!(!p.retry_error(&connect_failure(), 3), "2 retries, 3 tries");
        assert!(!p.retry_error(&reset(), 1));
        assert!(p.retry_status(503, 1));
        assert!(!p.retry_status(502, 1));
        assert!(!p.retry_status(200, 1));
    }

    #[test]
    fn retry_on_conditions() {
        let r = route(retries(3, &["5xx"], None), None);
        let p = RetryPolicy::for_route(&r, IDLE, Instant::now());
        assert!(p.retry_status(500, 1) && p.retry_status(504, 3) && !p.retry_status(504, 4));
        assert!(p.retry_error(&reset(), 1) && p.retry_error(&connect_failure(), 1));
        assert!(!p.retry_status(404, 1));

        let r = route(retries(1, &["gateway-error"], None), None);
        let p = RetryPolicy::for_route(&r, IDLE, Instant::now());
        assert!(p.retry_status(502, 1) && !p.retry_status(500, 1));
        assert!(p.retry_error(&connect_failure(), 1) && p.retry_error(&reset(), 1));
        let timeout = ProxyError::UpstreamTimeout {
            addr: "127.0.0.1:1".parse().unwrap(),
            after: Duration::from_millis(300),
        };
        assert!(p.retry_error(&timeout, 1));

        let r = route(retries(2, &["reset", "409"], None), None);
        let p = RetryPolicy::for_route(&r, IDLE, Instant::now());
        assert!(p.retry_error(&reset(), 1) && !p.retry_error(&connect_failure(), 1));
        assert!(p.retry_status(409, 2) && !p.retry_status(503, 1));

        let r = route(retries(0, &["5xx"], None), None);
        let p = RetryPolicy::for_route(&r, IDLE, Instant::now());
        assert!(!p.retry_status(503, 1) && !p.retry_error(&connect_failure(), 1));
    }

    #[test]
    fn waits_respect_per_try_and_the_route_deadline() {
        let now = Instant::now();
        let r = route(None, None);
        assert_eq!(RetryPolicy::for_route(&r, IDLE, now).wait(now), Some(IDLE));

        // `timeout: 0s` is Istio's "no timeout".
        let r = route(None, Some(Duration::ZERO));
        assert_eq!(RetryPolicy::for_route(&r, IDLE, now).wait(now), Some(IDLE));

        let r = route(
            retries(2, &["5xx"], Some(300)),
            Some(Duration::from_secs(1)),
        );
        let p = RetryPolicy::for_route(&r, IDLE, now);
        assert_eq!(p.wait(now), Some(Duration::from_millis(300)));
        let late = now + Duration::from_millis(800);
        assert_eq!(p.wait(late), Some(Duration::from_millis(200)));
        assert_eq!(p.wait(now + Duration::from_secs(1)), None);
    }
}
