//! The validated configuration: what `config::load` produces after every document has
//! been parsed and checked. Field names follow Istio's, but every value here is already
//! known to be well-formed (ports in range, hosts lower-cased, regexes compiled, paths
//! present). Compiling it into route tables, TLS configs and clusters is `snapshot`'s job.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::model_destination::{PortTrafficPolicy, TrafficPolicy};

/// Everything one configuration file (several YAML documents) declares.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The file the configuration was read from (for messages).
    pub source: PathBuf,
    pub gateways: Vec<Gateway>,
    pub virtual_services: Vec<VirtualService>,
    pub service_entries: Vec<ServiceEntry>,
    pub destination_rules: Vec<DestinationRule>,
    pub request_authentications: Vec<RequestAuthentication>,
    /// At most one: the gateway's v1alpha1 `Policy`.
    pub origin_policy: Option<OriginPolicy>,
    pub authorization_policies: Vec<super::AuthorizationPolicy>,
}

/// Where a document came from, so later stages can name it in errors:
/// `gateway.yaml` document 2 (`Gateway httpbin-gateway`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based index of the YAML document in the file.
    pub document: usize,
    pub kind: String,
    pub name: String,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} document {} ({} {})",
            self.file.display(),
            self.document,
            self.kind,
            self.name
        )
    }
}

/// A host pattern as Gateway servers and VirtualServices write it. Always lower-case;
/// a `namespace/` prefix has been removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// `httpbin.example.com`
    Exact(String),
    /// `*.example.com`, stored as the suffix with its leading dot: `.example.com`.
    Suffix(String),
    /// `*`
    Any,
}

impl HostPattern {
    /// Whether a concrete host name (lower-case, no port) matches this pattern.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
            HostPattern::Any => true,
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Gateway {
    pub origin: Origin,
    /// `metadata.name`; VirtualServices refer to it as `name` or `namespace/name`.
    pub name: String,
    pub namespace: Option<String>,
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Https,
    /// `TLS` (or `HTTPS`) with `tls.mode: PASSTHROUGH`: the ClientHello's SNI picks a
    /// `tls[]` route, the bytes go to the upstream untouched.
    TlsPassthrough,
    /// `TCP`: the first `tcp[]` route that applies takes the connection.
    Tcp,
}

impl Protocol {
    /// Whether connections on the port are relayed as bytes (`tls[]`/`tcp[]` routes),
    /// not served as HTTP.
    pub fn is_l4(self) -> bool {
        matches!(self, Protocol::TlsPassthrough | Protocol::Tcp)
    }

    /// The `port.protocol` Istio's manifests write (`HTTPS` with PASSTHROUGH is `TLS`).
    pub fn istio_name(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
            Protocol::TlsPassthrough => "TLS",
            Protocol::Tcp => "TCP",
        }
    }
}

/// One entry of a Gateway's `servers[]`.
#[derive(Debug, Clone)]
pub struct Server {
    /// `port.number`
    pub port: u16,
    /// `port.name`
    pub port_name: String,
    pub protocol: Protocol,
    /// `bind`: the address to listen on; `None` means all addresses (0.0.0.0).
    pub bind: Option<IpAddr>,
    pub hosts: Vec<HostPattern>,
    /// Present exactly when `protocol` is HTTPS (an HTTP server's only TLS field,
    /// `httpsRedirect`, is `https_redirect`).
    pub tls: Option<ServerTls>,
    /// `tls.httpsRedirect: true`: every request is answered 301 to its https:// URL.
    pub https_redirect: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Simple,
    Mutual,
    OptionalMutual,
}

impl TlsMode {
    /// The name Istio's manifests use: `SIMPLE`, `MUTUAL`, `OPTIONAL_MUTUAL`.
    pub fn istio_name(self) -> &'static str {
        match self {
            TlsMode::Simple => "SIMPLE",
            TlsMode::Mutual => "MUTUAL",
            TlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// Where a server's certificate and key come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Credential {
    /// `serverCertificate` + `privateKey` PEM files (paths relative to the config
    /// file's directory have been made absolute).
    Files { cert: PathBuf, key: PathBuf },
    /// `credentialName`: resolved in `--secrets-dir` as `DIR/NAME/`.
    Named(String),
}

/// A server's `tls` block (for HTTPS servers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub mode: TlsMode,
    pub credential: Credential,
    /// `caCertificates`: CA bundle for verifying client certificates (MUTUAL).
    pub ca_certificates: Option<PathBuf>,
    /// `caCrl`: PEM certificate revocation lists checked against client certificates.
    pub ca_crl: Option<PathBuf>,
    pub min_protocol_version: Option<TlsVersion>,
    pub max_protocol_version: Option<TlsVersion>,
    /// `cipherSuites`, in Istio's (OpenSSL-style) names; empty means the defaults.
    pub cipher_suites: Vec<String>,
    /// `subjectAltNames`: client identities a MUTUAL server accepts; empty means any.
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct VirtualService {
    pub origin: Origin,
    pub name: String,
    pub namespace: Option<String>,
    pub hosts: Vec<HostPattern>,
    /// Gateway names as written (`name` or `namespace/name`), namespace removed.
    pub gateways: Vec<String>,
    pub http: Vec<HttpRoute>,
    /// `tls[]`: routes of TLS passthrough servers, by SNI.
    pub tls: Vec<super::L4Route>,
    /// `tcp[]`: routes of TCP servers.
    pub tcp: Vec<super::L4Route>,
}

/// A string condition of a `match` (`exact`, `prefix`, `regex`).
#[derive(Debug, Clone)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    /// Anchored: the whole value must match, as Envoy's `safe_regex` does.
    Regex(regex::Regex),
}

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(p) => value.starts_with(p.as_str()),
            StringMatch::Regex(r) => r.is_match(value),
        }
    }
}

impl std::fmt::Display for StringMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StringMatch::Exact(s) => write!(f, "exact {s}"),
            StringMatch::Prefix(p) => write!(f, "prefix {p}"),
            StringMatch::Regex(r) => write!(f, "regex {}", r.as_str()),
        }
    }
}

/// One entry of `http[].match[]`: every present condition must hold.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    pub name: Option<String>,
    pub uri: Option<StringMatch>,
    /// Compared against the request's host without its port.
    pub authority: Option<StringMatch>,
    pub method: Option<StringMatch>,
    /// `scheme`: compared against `http` / `https`.
    pub scheme: Option<StringMatch>,
    /// Header name (lower-case) and condition.
    pub headers: Vec<(String, StringMatch)>,
    /// `withoutHeaders`: the match holds only if none of these does (an absent header
    /// does not).
    pub without_headers: Vec<(String, StringMatch)>,
    /// `queryParams`: parameter name and condition (`exact` or `regex`) on its first
    /// value in the query string, as sent.
    pub query_params: Vec<(String, StringMatch)>,
    /// `port`: the gateway port the request came in on.
    pub port: Option<u16>,
    /// `gateways`: the match holds only for requests through these Gateways (names of
    /// the VirtualService's own `gateways`).
    pub gateways: Vec<String>,
    /// `ignoreUriCase`
    pub ignore_uri_case: bool,
}

/// One `http[]` rule of a VirtualService.
#[derive(Debug, Clone)]
pub struct HttpRoute {
    pub name: Option<String>,
    /// Empty means the rule matches every request.
    pub matches: Vec<RouteMatch>,
    pub action: RouteAction,
    pub rewrite: Option<Rewrite>,
    /// `timeout`: the whole upstream exchange; `None` means the default.
    pub timeout: Option<Duration>,
    pub retries: Option<Retries>,
    pub headers: HeaderOperations,
    /// `corsPolicy`, `fault`.
    pub policies: super::RoutePolicies,
}

#[derive(Debug, Clone)]
pub enum RouteAction {
    /// `route[]`: weighted destinations (weights sum to 100, or a single destination).
    Route(Vec<WeightedDestination>),
    /// `redirect`
    Redirect(Redirect),
    /// `directResponse`
    DirectResponse { status: u16, body: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedDestination {
    /// `destination.host`, lower-case (a short name like `httpbin` stays as written).
    pub host: String,
    /// `destination.port.number`; `None` when the service has exactly one port.
    pub port: Option<u16>,
    /// `destination.subset`
    pub subset: Option<String>,
    pub weight: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Redirect {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub scheme: Option<String>,
    pub port: Option<u16>,
    /// `redirectCode`, default 301.
    pub code: u16,
}

#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// Replaces the matched prefix (or the whole path for exact/regex matches).
    pub uri: Option<String>,
    pub authority: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Retries {
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    /// `retryOn`, split on commas (`connect-failure`, `refused-stream`, `5xx`, ...).
    pub retry_on: Vec<String>,
}

/// `headers.request` and `headers.response`.
#[derive(Debug, Clone, Default)]
pub struct HeaderOperations {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

/// `set`, `add`, `remove`; names lower-case.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// `STATIC`: `endpoints[].address` are IP addresses.
    Static,
    /// `DNS`: endpoint addresses (or the hosts themselves) are names resolved when
    /// the configuration is loaded.
    Dns,
}

#[derive(Debug, Clone)]
pub struct ServiceEntry {
    pub origin: Origin,
    pub name: String,
    /// Lower-case host names this entry declares (`httpbin`, `httpbin.default.svc`).
    pub hosts: Vec<String>,
    pub ports: Vec<ServicePort>,
    pub resolution: Resolution,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub number: u16,
    pub name: String,
    /// `HTTP`, `HTTP2` or `GRPC`: the `protocol` field, upper-case, or what the
    /// port's name says when there is none (Istio's `http2-`, `grpc-` prefixes).
    pub protocol: String,
    /// `targetPort`: the port endpoints listen on, when it differs from `number`.
    pub target_port: Option<u16>,
}

impl ServicePort {
    /// Whether the port speaks HTTP/2 (`HTTP2` and `GRPC` ports).
    pub fn speaks_http2(&self) -> bool {
        matches!(self.protocol.as_str(), "HTTP2" | "GRPC")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// An IP address (STATIC) or a host name (DNS).
    pub address: String,
    /// `ports`: service port name → endpoint port.
    pub ports: BTreeMap<String, u16>,
    pub weight: Option<u32>,
    /// `labels`, which DestinationRule subsets select by.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadBalancer {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
}

impl LoadBalancer {
    /// The name Istio's manifests use in `loadBalancer.simple`.
    pub fn istio_name(self) -> &'static str {
        match self {
            LoadBalancer::RoundRobin => "ROUND_ROBIN",
            LoadBalancer::LeastRequest => "LEAST_REQUEST",
            LoadBalancer::Random => "RANDOM",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DestinationRule {
    pub origin: Origin,
    pub name: String,
    /// The service host the rule applies to.
    pub host: String,
    /// `trafficPolicy` (without its `portLevelSettings`).
    pub traffic_policy: TrafficPolicy,
    /// `trafficPolicy.portLevelSettings`, one per port.
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// `subsets[]`, in order; names are unique.
    pub subsets: Vec<super::Subset>,
    /// The `ringress.io/health-check-*` annotations.
    pub health_check: Option<super::HealthCheck>,
}

impl DestinationRule {
    /// The policy of the cluster on service port `port` (of `subset`), in Istio's
    /// order (`MergeTrafficPolicy`): the rule's, each field its port-level settings
    /// set replacing it, then each field the subset sets, then each field the
    /// subset's port-level settings set.
    pub fn policy_for(&self, port: u16, subset: Option<&super::Subset>) -> TrafficPolicy {
        let at_port = |settings: &[PortTrafficPolicy]| {
            settings
                .iter()
                .find(|p| p.port == port)
                .map(|p| p.policy.clone())
                .unwrap_or_default()
        };
        let policy = self
            .traffic_policy
            .overridden_by(&at_port(&self.port_level_settings));
        match subset {
            Some(subset) => policy
                .overridden_by(&subset.traffic_policy)
                .overridden_by(&at_port(&subset.port_level_settings)),
            None => policy,
        }
    }
}

/// A DestinationRule's `trafficPolicy.connectionPool`, what ringress implements of it;
/// `None` where the rule says nothing (the defaults are the upstream module's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionPool {
    /// `tcp.maxConnections`: connections to the host at most, idle ones included.
    pub max_connections: Option<u32>,
    /// `tcp.connectTimeout`
    pub connect_timeout: Option<Duration>,
    /// `http.idleTimeout`: how long an idle keep-alive connection is kept.
    pub idle_timeout: Option<Duration>,
    /// `http.h2UpgradePolicy`: `Some(true)` for UPGRADE (HTTP/2 to an HTTP port),
    /// `Some(false)` for DO_NOT_UPGRADE, `None` for DEFAULT (the port's protocol).
    pub h2_upgrade: Option<bool>,
    /// `http.http1MaxPendingRequests`, `http.maxRequestsPerConnection` and
    /// `http.maxRetries` (see [`super::RequestLimits`]).
    pub requests: super::RequestLimits,
}

impl Config {
    /// Every JWT provider the configuration declares: the `RequestAuthentication`
    /// rules, then the v1alpha1 Policy's origins.
    pub fn jwt_providers(&self) -> impl Iterator<Item = &JwtProvider> {
        let rules = self
            .request_authentications
            .iter()
            .flat_map(|ra| ra.rules.iter());
        let origins = self
            .origin_policy
            .iter()
            .flat_map(|p| p.origins.iter().map(|o| &o.provider));
        rules.chain(origins)
    }
}

/// Where a JWT provider's keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JwksSource {
    /// `jwksUri`: fetched over HTTPS by the control thread (and refreshed).
    Uri(String),
    /// No `jwksUri` and no `jwks`: `<issuer>/.well-known/openid-configuration` names it.
    Discovery(String),
    /// `jwks`: the key set itself.
    Inline(String),
}

impl JwksSource {
    /// The URL fetched for this source, if any.
    pub fn url(&self) -> Option<&str> {
        match self {
            JwksSource::Uri(u) | JwksSource::Discovery(u) => Some(u),
            JwksSource::Inline(_) => None,
        }
    }
}

/// Where a request's token is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLocation {
    /// A header, its value after `prefix` (`Authorization: Bearer <token>`).
    Header { name: String, prefix: String },
    /// A query parameter (`?access_token=<token>`).
    Param(String),
    /// A cookie.
    Cookie(String),
}

/// One issuer whose tokens are verified: a `RequestAuthentication` `jwtRules[]` entry
/// or a v1alpha1 Policy `origins[].jwt`.
#[derive(Debug, Clone)]
pub struct JwtProvider {
    pub origin: Origin,
    /// The field path of the rule, for messages (`spec.jwtRules[0]`).
    pub path: String,
    pub issuer: String,
    /// Empty: any audience (or none) is accepted.
    pub audiences: Vec<String>,
    pub keys: JwksSource,
    /// In the order they are tried.
    pub locations: Vec<TokenLocation>,
    pub forward_original_token: bool,
    pub output_payload_to_header: Option<String>,
    /// (header, claim) pairs; the claim may be nested (`a.b`).
    pub output_claim_to_headers: Vec<(String, String)>,
    /// How long fetching the keys may take.
    pub timeout: Duration,
}

/// A `RequestAuthentication`: tokens of its issuers are verified; a request without
/// a token passes with no identity.
#[derive(Debug, Clone)]
pub struct RequestAuthentication {
    pub origin: Origin,
    pub rules: Vec<JwtProvider>,
}

/// When a v1alpha1 `origins[].jwt` applies: its `triggerRules`.
#[derive(Debug, Clone)]
pub struct TriggerRule {
    pub excluded: Vec<PathMatch>,
    pub included: Vec<PathMatch>,
}

/// A v1alpha1 path match (`exact`, `prefix`, `suffix` or `regex`).
#[derive(Debug, Clone)]
pub enum PathMatch {
    String(StringMatch),
    Suffix(String),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::String(m) => m.matches(path),
            PathMatch::Suffix(s) => path.ends_with(s.as_str()),
        }
    }
}

/// A v1alpha1 `origins[]` entry: a provider and the paths it is required on.
#[derive(Debug, Clone)]
pub struct OriginJwt {
    pub provider: JwtProvider,
    pub trigger_rules: Vec<TriggerRule>,
}

/// An `authentication.istio.io/v1alpha1` `Policy`: a request needs a valid token of
/// one of its origins (unless `originIsOptional`), else 401.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    pub origin: Origin,
    pub origins: Vec<OriginJwt>,
    pub optional: bool,
    /// `principalBinding: USE_ORIGIN`: the request's principal is the token's `iss/sub`.
    pub use_origin: bool,
}
