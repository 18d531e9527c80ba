//! The validated DestinationRule load-balancing settings beyond `loadBalancer.simple`:
//! `subsets[]` (endpoint labels and the subset's own `trafficPolicy`) and
//! `loadBalancer.consistentHash`. The cluster that uses them is built in
//! [`crate::upstream::cluster`]; the endpoint a hash picks, in
//! [`crate::upstream::balance`].

use std::collections::BTreeMap;
use std::time::Duration;

use super::LoadBalancer;
use super::model_destination::TrafficPolicy;

/// Envoy's default `ring_hash_lb_config.minimum_ring_size`.
pub const DEFAULT_MINIMUM_RING_SIZE: u64 = 1024;
/// Envoy's largest ring (`maximum_ring_size`'s default): a larger `minimumRingSize`
/// is an error.
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Envoy's default Maglev `table_size` (a prime).
pub const DEFAULT_MAGLEV_TABLE_SIZE: u64 = 65537;
/// Envoy's largest Maglev table (`table_size` is at most 5000011).
pub const MAX_MAGLEV_TABLE_SIZE: u64 = 5_000_011;

/// The request limits of a `connectionPool.http` block, `None` where it sets none
/// (0 is Istio's "unset" for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestLimits {
    /// `http1MaxPendingRequests`: requests waiting for a connection of the cluster
    /// at most (Envoy's `max_pending_requests`).
    pub max_pending: Option<u32>,
    /// `maxRequestsPerConnection`: an upstream connection is closed after this many
    /// requests (1: no keep-alive).
    pub max_requests_per_connection: Option<u32>,
    /// `maxRetries`: retries of the cluster's requests in flight at once at most
    /// (Envoy's `max_retries`).
    pub max_retries: Option<u32>,
    /// `http2MaxRequests`: requests to the cluster in flight at once at most, over
    /// any protocol (Envoy's `max_requests`).
    pub max_requests: Option<u32>,
}

/// `trafficPolicy.outlierDetection`, Istio's defaults filled in (Envoy's where
/// Istio leaves it to Envoy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetection {
    /// `consecutive5xxErrors`: 5 when absent (Envoy's default), `None` for 0
    /// (disabled).
    pub consecutive_5xx: Option<u32>,
    /// `consecutiveGatewayErrors` (502, 503, 504, connect failures): `None` when
    /// absent or 0.
    pub consecutive_gateway: Option<u32>,
    /// `interval`: how often ejected endpoints are looked at (default 10s).
    pub interval: Duration,
    /// `baseEjectionTime` (default 30s): an ejection lasts this times the number of
    /// times the endpoint was ejected (at most 300s or this, whichever is more).
    pub base_ejection_time: Duration,
    /// `maxEjectionPercent` (default 10): no ejection while this share of the
    /// endpoints is ejected.
    pub max_ejection_percent: u32,
    /// `minHealthPercent` (default 0): below this share of available endpoints, the
    /// balancer uses them all (Envoy's panic threshold).
    pub min_health_percent: u32,
}

/// Active health checking, ringress's own (Istio has none): the DestinationRule's
/// `ringress.io/health-check-*` annotations. Every endpoint of the host's clusters
/// gets `GET path` over HTTP/1.1 every `interval`; a 200 within `timeout` passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `ringress.io/health-check-path` (required to turn checks on).
    pub path: String,
    /// `ringress.io/health-check-interval` (default 5s).
    pub interval: Duration,
    /// `ringress.io/health-check-timeout` (default 1s).
    pub timeout: Duration,
    /// `ringress.io/health-check-unhealthy-threshold`: failures in a row that take an
    /// endpoint out (default 2).
    pub unhealthy_threshold: u32,
    /// `ringress.io/health-check-healthy-threshold`: passes in a row that bring it
    /// back (default 1).
    pub healthy_threshold: u32,
}

/// The annotation prefix of [`HealthCheck`].
pub const HEALTH_CHECK_ANNOTATION: &str = "ringress.io/health-check-";

/// Istio's and Envoy's outlier detection defaults.
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
pub const DEFAULT_OUTLIER_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
/// Envoy's `max_ejection_time` default: the longest an ejection lasts (unless the
/// base ejection time is longer).
pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// A `loadBalancer` block: `simple`, or `consistentHash` (one of the two, as Istio's
/// `oneof` says).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Balancing {
    /// ROUND_ROBIN when the block says nothing or says `consistentHash`.
    pub simple: LoadBalancer,
    pub consistent_hash: Option<ConsistentHash>,
}

impl From<LoadBalancer> for Balancing {
    /// `loadBalancer.simple`.
    fn from(simple: LoadBalancer) -> Balancing {
        Balancing {
            simple,
            consistent_hash: None,
        }
    }
}

/// One of a DestinationRule's `subsets[]`: the endpoints whose labels include all of
/// `labels`, under the rule's policy merged with the subset's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub traffic_policy: TrafficPolicy,
    /// The subset's own `trafficPolicy.portLevelSettings`.
    pub port_level_settings: Vec<super::PortTrafficPolicy>,
}

impl Subset {
    /// Whether an endpoint with `labels` belongs to the subset.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// `loadBalancer.consistentHash`: what a request is hashed on, and the table the
/// hash is looked up in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistentHash {
    pub key: HashKey,
    pub table: HashTable,
}

/// What a request's hash is computed from. A request without it (no such header,
/// cookie or parameter) goes to a random endpoint, as Envoy does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `httpHeaderName` (lower-case): the header's first value.
    Header(String),
    /// `httpCookie`: the cookie's value; a request without the cookie gets one
    /// generated (and set on its response with `Max-Age` = `ttl`, a session cookie
    /// for 0s), as Envoy does.
    Cookie {
        name: String,
        path: Option<String>,
        ttl: Duration,
    },
    /// `useSourceIp`: the client's address.
    SourceIp,
    /// `httpQueryParameterName`: the parameter's first value, as sent.
    QueryParameter(String),
}

impl HashKey {
    /// How `check` and `/config_dump` name it.
    pub fn describe(&self) -> String {
        match self {
            HashKey::Header(h) => format!("httpHeaderName {h}"),
            HashKey::Cookie { name, path, ttl } => format!(
                "httpCookie {name} (path {}, ttl {}s)",
                path.as_deref().unwrap_or("none"),
                ttl.as_secs()
            ),
            HashKey::SourceIp => "useSourceIp".to_owned(),
            HashKey::QueryParameter(q) => format!("httpQueryParameterName {q}"),
        }
    }
}

/// The hash algorithm: Envoy's ring hash (Istio's default) or Maglev.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashTable {
    /// `ringHash.minimumRingSize` (or the deprecated `minimumRingSize`).
    RingHash { minimum_ring_size: u64 },
    /// `maglev.tableSize`, a prime.
    Maglev { table_size: u64 },
}

impl HashTable {
    /// How `check` and `/config_dump` name it: `RING_HASH 1024`, `MAGLEV 65537`.
    pub fn describe(&self) -> String {
        match self {
            HashTable::RingHash { minimum_ring_size } => format!("RING_HASH {minimum_ring_size}"),
            HashTable::Maglev { table_size } => format!("MAGLEV {table_size}"),
        }
    }
}
