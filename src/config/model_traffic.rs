//! The validated traffic policies of a VirtualService rule, as Istio translates them
//! for Envoy: `corsPolicy` (Envoy's CORS filter, run by the proxy before forwarding),
//! `fault` (Envoy's fault filter, run before CORS) and the mirrors (the router's
//! request mirror policies). What each does to a request is in `proxy/policies.rs`,
//! `http/cors.rs` and `proxy/mirror.rs`.

use std::time::Duration;

use super::model::StringMatch;

/// What a rule asks of its requests besides routing them; empty by default.
#[derive(Debug, Clone, Default)]
pub struct RoutePolicies {
    pub cors: Option<CorsPolicy>,
    pub fault: Option<Fault>,
    /// `mirror` (with `mirrorPercentage`) or `mirrors[]`, those with a share above 0.
    pub mirrors: Vec<Mirror>,
}

/// A destination a copy of each request (of its share) is sent to, its response
/// discarded: Envoy's `request_mirror_policies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `destination.host`, lower-case.
    pub host: String,
    /// `destination.port.number`; `None` when the service has exactly one port.
    pub port: Option<u16>,
    /// `destination.subset`: a subset of the host's DestinationRule.
    pub subset: Option<String>,
    pub share: Share,
}

/// `corsPolicy`, as Istio passes it to Envoy: the lists joined with `,` as written,
/// `maxAge` in whole seconds.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    /// `allowOrigins` (or the deprecated `allowOrigin`, as exact matches).
    pub allow_origins: Vec<StringMatch>,
    pub allow_methods: String,
    pub allow_headers: String,
    pub expose_headers: String,
    /// `maxAge` in seconds.
    pub max_age: Option<u64>,
    /// `allowCredentials`: `Some(true)` sends `access-control-allow-credentials: true`.
    pub allow_credentials: Option<bool>,
    /// `unmatchedPreflights`: `FORWARD` (the default) sends a preflight whose origin
    /// is not allowed to the upstream; `IGNORE` answers it without
    /// `access-control-allow-origin`.
    pub forward_unmatched_preflights: bool,
}

impl CorsPolicy {
    /// Envoy's rule: an origin is allowed when a matcher matches it, or matches `*`
    /// (so `exact: "*"` or `regex: ".*"` allow every origin).
    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origins
            .iter()
            .any(|m| m.matches("*") || m.matches(origin))
    }
}

/// `fault`: a delay, an abort, or both (the delay first, as Envoy does).
#[derive(Debug, Clone)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

/// `fault.delay`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultDelay {
    /// `fixedDelay`
    pub fixed: Duration,
    pub share: Share,
}

/// `fault.abort`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultAbort {
    /// `httpStatus`; 200 for a `grpcStatus` abort (Envoy's answer to a client that
    /// does not speak gRPC).
    pub status: u16,
    /// `grpcStatus`, as its code: a gRPC client gets it in `grpc-status`.
    pub grpc_status: Option<u32>,
    pub share: Share,
}

/// The share of requests a fault or a mirror applies to, in millionths, as Istio
/// gives it to Envoy (`percentage.value` × 10,000 per million; the deprecated
/// integer `percent` per hundred).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub per_million: u32,
}

impl Share {
    /// No request (Istio's meaning of a fault without `percentage`).
    pub const NONE: Share = Share { per_million: 0 };

    /// From a percentage 0 to 100, truncated to millionths as Istio does.
    pub fn of_percent(value: f64) -> Share {
        Share {
            per_million: (value * 10_000.0) as u32,
        }
    }

    /// Every request.
    pub const ALL: Share = Share {
        per_million: 1_000_000,
    };

    /// Whether this request is one of the share (Envoy draws a number below a
    /// million for each request and decision).
    pub fn draw(self) -> bool {
        match self.per_million {
            0 => false,
            p if p >= 1_000_000 => true,
            p => fastrand::u32(..1_000_000) < p,
        }
    }

    /// As a percentage, for descriptions (`50`, `0.5`).
    pub fn percent(self) -> f64 {
        f64::from(self.per_million) / 10_000.0
    }
}
