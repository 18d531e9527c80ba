//! Upstream clusters: one per distinct (destination host, port) that a VirtualService
//! route names, with the endpoint addresses it resolves to and its load-balancing
//! policy. Built on the control thread when a configuration is loaded (this is where
//! DNS is resolved, never on a shard); after routing has chosen a [`ClusterId`], a
//! shard's balancer picks one of the cluster's endpoints and its pool connects there.
//!
//! Resolution, for a destination `host[:port]`:
//! - a ServiceEntry whose `hosts` contain the host decides: the destination's port
//!   must be one of its `ports` (and may be omitted when it declares exactly one);
//!   - `STATIC`: each endpoint's IP address, with the port from the endpoint's
//!     `ports[service port name]`, else the service port's `targetPort`, else its number;
//!   - `DNS`: each endpoint's address (or, with no endpoints, the host itself) resolved
//!     now, with the same port rule;
//! - a host no ServiceEntry declares is resolved with DNS now, on the destination port
//!   ([`DEFAULT_PORT`] when the route names none).
//!
//! DNS names keep only their IPv4 addresses when they have any (as Istio's gateway does
//! by default), so `localhost` does not become an IPv6 endpoint that a v4-only upstream
//! refuses. A DestinationRule for the host sets the load balancer (default ROUND_ROBIN).
//!
//! A destination with a `subset` has a cluster of its own, Istio's
//! `outbound|PORT|SUBSET|HOST`: the endpoints whose `labels` include the subset's
//! (none may match: the cluster then answers 503 "no healthy upstream", as Envoy's
//! empty cluster does), under the rule's `trafficPolicy` with each block the subset
//! sets replacing the rule's (Istio's `MergeTrafficPolicy`). A subset no
//! DestinationRule of the host defines is a load error.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use thiserror::Error;

use super::PoolPolicy;
use super::hash::EndpointHash;
use super::health::EndpointHealth;
use crate::tls::TlsError;
use crate::tls::client_config::{UpstreamTls, upstream_tls};

use crate::config::{
    Config, ConnectionPool, DestinationRule, Endpoint, LoadBalancer, Origin, Resolution,
    RouteAction, ServiceEntry, ServicePort, Subset,
};

/// The port a destination goes to when its route names none and no ServiceEntry
/// declares its host.
pub(crate) const DEFAULT_PORT: u16 = 80;

/// Index of a cluster in its [`Clusters`]; valid only for the `Clusters` that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(pub u32);

/// One upstream service on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `host:port` as the route names it, e.g. `httpbin:8000` (the service port, not the
    /// endpoints' target port).
    pub(crate) name: String,
    /// Istio's name of it, `outbound|PORT||HOST` (the access log's upstream cluster).
    pub(crate) istio_name: String,
    /// The destination host as the route names it.
    pub(crate) host: String,
    /// The service port.
    pub(crate) port: u16,
    /// The route's `destination.subset`.
    pub(crate) subset: Option<String>,
    /// Where connections go; empty only for a subset no endpoint's labels match.
    pub(crate) endpoints: Vec<SocketAddr>,
    /// The DestinationRule's load balancer; ROUND_ROBIN without one.
    pub(crate) lb: LoadBalancer,
    /// Connection limits and timeouts (the DestinationRule's `connectionPool`).
    pub(crate) pool: PoolPolicy,
    /// The protocol requests go to the endpoints in.
    pub(crate) protocol: UpstreamProtocol,
    /// TLS to the endpoints (the DestinationRule's `tls` for this port, unless
    /// DISABLE), loaded when the snapshot was built.
    pub(crate) tls: Option<Arc<UpstreamTls>>,
    /// `loadBalancer.consistentHash`: the key and the table built over `endpoints`
    /// (then `lb` is unused).
    pub(crate) hash: Option<Arc<EndpointHash>>,
    /// Which endpoints are ejected (`outlierDetection`), shared by every shard.
    pub(crate) health: Arc<EndpointHealth>,
}

/// What a cluster's connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum UpstreamProtocol {
    /// HTTP/1.1 over keep-alive connections, one request at a time.
    #[default]
    Http1,
    /// HTTP/2 without TLS (h2c, prior knowledge), many streams per connection: a
    /// ServiceEntry port with `protocol: HTTP2` or `GRPC` (or named `http2-`,
    /// `grpc-`), or a DestinationRule with `h2UpgradePolicy: UPGRADE`.
    Http2,
}

impl UpstreamProtocol {
    /// The protocol of a cluster on `port` (`None` for a host no ServiceEntry
    /// declares) under `pool`'s `h2UpgradePolicy`, as Istio decides it: an HTTP
    /// port is upgraded by UPGRADE; an HTTP2 or GRPC port always speaks HTTP/2.
    fn of(port: Option<&ServicePort>, pool: Option<&ConnectionPool>) -> Self {
        let h2_port = port.is_some_and(ServicePort::speaks_http2);
        let upgrade = pool.and_then(|p| p.h2_upgrade) == Some(true);
        if h2_port || upgrade {
            UpstreamProtocol::Http2
        } else {
            UpstreamProtocol::Http1
        }
    }

    /// How Istio names it (`/config_dump`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "HTTP/1.1",
            UpstreamProtocol::Http2 => "HTTP/2",
        }
    }
}

/// Clusters of one host: by service port, plus the one a route without a port means.
#[derive(Debug, Clone, Default)]
struct HostClusters {
    by_port: Vec<(u16, ClusterId)>,
    implied: Option<ClusterId>,
}

/// Every cluster a configuration's routes need, immutable once built.
#[derive(Debug, Clone, Default)]
pub struct Clusters {
    clusters: Vec<Cluster>,
    /// By destination host and subset.
    by_host: HashMap<(String, Option<String>), HostClusters>,
    /// Where upstream TLS `credentialName`s are read from while building.
    secrets_dir: Option<std::path::PathBuf>,
}

/// Why a destination of a VirtualService route has no cluster. Every variant names
/// the VirtualService document, the rule (`http[0]`, `tls[1]`, `tcp[0]`) and the
/// destination.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error(
        "{origin}: {rule} destination {destination}: cannot resolve `{name}` with DNS: {source}"
    )]
    Resolve {
        origin: Box<Origin>,
        rule: RuleRef,
        destination: String,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("{origin}: {rule} destination {destination}: `{name}` resolved to no addresses")]
    NoAddresses {
        origin: Box<Origin>,
        rule: RuleRef,
        destination: String,
        name: String,
    },
    #[error(
        "{origin}: {rule} destination {host}:{port}: port {port} is not declared by {service_entry}, which declares ports {declared}"
    )]
    UndeclaredPort {
        origin: Box<Origin>,
        rule: RuleRef,
        host: String,
        port: u16,
        service_entry: Box<Origin>,
        declared: String,
    },
    #[error(
        "{origin}: {rule} destination {host} names no destination.port.number, but {service_entry} declares several ports ({declared}); name one"
    )]
    PortRequired {
        origin: Box<Origin>,
        rule: RuleRef,
        host: String,
        service_entry: Box<Origin>,
        declared: String,
    },
    #[error(
        "{origin}: {rule} destination {destination}: {service_entry} endpoints[{endpoint}].address `{address}` is not an IP address, as resolution STATIC requires"
    )]
    StaticAddress {
        origin: Box<Origin>,
        rule: RuleRef,
        destination: String,
        service_entry: Box<Origin>,
        endpoint: usize,
        address: String,
    },
    #[error(
        "{origin}: {rule} destination {destination}: {service_entry} has resolution STATIC but no endpoints"
    )]
    NoEndpoints {
        origin: Box<Origin>,
        rule: RuleRef,
        destination: String,
        service_entry: Box<Origin>,
    },
    #[error(
        "{origin}: {rule} destination {destination}: its DestinationRule's tls (TLS from ringress to the upstream) is not implemented for tls and tcp routes, whose bytes are relayed as they are; set tls.mode DISABLE for this port"
    )]
    TlsOnL4Route {
        origin: Box<Origin>,
        rule: RuleRef,
        destination: String,
    },
    #[error("{origin}: {field} (cluster {cluster}): {source}")]
    Tls {
        /// The DestinationRule.
        origin: Box<Origin>,
        /// `spec.trafficPolicy.tls` or `...portLevelSettings[i].tls`.
        field: String,
        cluster: String,
        #[source]
        source: Box<TlsError>,
    },
    #[error(
        "{origin}: {rule} destination {destination}: more than {} clusters",
        u32::MAX
    )]
    TooMany {
        origin: Box<Origin>,
        rule: RuleRef,
        destination: String,
    },
    #[error("{origin}: {rule} destination {host} subset {subset}: {defined}")]
    UnknownSubset {
        origin: Box<Origin>,
        rule: RuleRef,
        host: String,
        subset: String,
        /// Which DestinationRule defines which subsets, or that none applies.
        defined: String,
    },
    #[error(
        "{origin}: {rule} destination {destination} speaks {speaks}, but the health checks of {rule_origin} (ringress.io/health-check-*) probe with plain-text HTTP/1.1 only"
    )]
    HealthCheckUnsupported {
        origin: Box<Origin>,
        rule: RuleRef,
        destination: String,
        /// `HTTP/2` or `TLS` (a DestinationRule `tls`).
        speaks: &'static str,
        rule_origin: Box<Origin>,
    },
}

/// A rule of a VirtualService, as messages name it: `http[0]`, `tls[1]`, `tcp[0]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleRef {
    pub section: &'static str,
    pub index: usize,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.section, self.index)
    }
}

/// The route that asked for a cluster, for error messages.
#[derive(Clone, Copy)]
struct Reference<'c> {
    origin: &'c Origin,
    rule: RuleRef,
}

impl Clusters {
    /// Builds one cluster per distinct (destination host, port) referenced by any
    /// VirtualService route or mirror, resolving DNS names now; a `credentialName` of
    /// a DestinationRule's `tls` needs `secrets_dir`.
    pub fn build(config: &Config) -> Result<Clusters, ClusterError> {
        Clusters::build_with_secrets(config, None)
    }

    /// [`Clusters::build`], with `--secrets-dir` for the upstream TLS credentials.
    pub(crate) fn build_with_secrets(
        config: &Config,
        secrets_dir: Option<&Path>,
    ) -> Result<Clusters, ClusterError> {
        let mut clusters = Clusters {
            secrets_dir: secrets_dir.map(Path::to_path_buf),
            ..Clusters::default()
        };
        for vs in &config.virtual_services {
            let http = vs.http.iter().map(|http| match &http.action {
                RouteAction::Route(destinations) => destinations.as_slice(),
                _ => &[],
            });
            let sections = [
                ("http", http.collect::<Vec<_>>()),
                ("tls", vs.tls.iter().map(|r| r.route.as_slice()).collect()),
                ("tcp", vs.tcp.iter().map(|r| r.route.as_slice()).collect()),
            ];
            for (section, rules) in sections {
                for (index, destinations) in rules.into_iter().enumerate() {
                    let reference = Reference {
                        origin: &vs.origin,
                        rule: RuleRef { section, index },
                    };
                    for destination in destinations {
                        let subset = destination.subset.as_deref();
                        let (host, port) = (&destination.host, destination.port);
                        let id = clusters.add(config, host, subset, port, reference)?;
                        if section != "http" && clusters.get(id).tls.is_some() {
                            return Err(ClusterError::TlsOnL4Route {
                                origin: Box::new(vs.origin.clone()),
                                rule: reference.rule,
                                destination: destination.host.clone(),
                            });
                        }
                    }
                }
            }
            for (index, http) in vs.http.iter().enumerate() {
                if !matches!(http.action, RouteAction::Route(_)) {
                    continue;
                }
                let reference = Reference {
                    origin: &vs.origin,
                    rule: RuleRef {
                        section: "http",
                        index,
                    },
                };
                for mirror in &http.policies.mirrors {
                    let subset = mirror.subset.as_deref();
                    clusters.add(config, &mirror.host, subset, mirror.port, reference)?;
                }
            }
        }
        Ok(clusters)
    }

    /// The cluster `id` names.
    ///
    /// # Panics
    /// If `id` was not issued by this `Clusters` (ids come from [`Clusters::lookup`] and
    /// route tables built from it, never from a request).
    pub(crate) fn get(&self, id: ClusterId) -> &Cluster {
        &self.clusters[id.0 as usize]
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.clusters.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (ClusterId, &Cluster)> {
        self.clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (ClusterId(i as u32), c))
    }

    /// The cluster for a destination as a route names it: `port` is the service port,
    /// `None` for a route that names none; `subset` the route's `destination.subset`.
    pub(crate) fn lookup(
        &self,
        host: &str,
        subset: Option<&str>,
        port: Option<u16>,
    ) -> Option<ClusterId> {
        let entry = self
            .by_host
            .get(&(host.to_owned(), subset.map(str::to_owned)))?;
        match port {
            Some(port) => entry
                .by_port
                .iter()
                .find(|(p, _)| *p == port)
                .map(|(_, id)| *id),
            None => entry.implied.or(match entry.by_port.as_slice() {
                [(_, id)] => Some(*id),
                _ => None,
            }),
        }
    }

    fn add(
        &mut self,
        config: &Config,
        host: &str,
        subset: Option<&str>,
        port: Option<u16>,
        reference: Reference<'_>,
    ) -> Result<ClusterId, ClusterError> {
        let service_entry = config
            .service_entries
            .iter()
            .find(|se| se.hosts.iter().any(|h| h == host));
        let service_port = match service_entry {
            Some(se) => Some(service_port(se, host, port, reference)?),
            None => None,
        };
        let number = service_port
            .map(|sp| sp.number)
            .or(port)
            .unwrap_or(DEFAULT_PORT);
        let key = (host.to_owned(), subset.map(str::to_owned));

        let id = match self.lookup(host, subset, Some(number)) {
            Some(id) => id,
            None => {
                let rule = destination_rule(&config.destination_rules, host);
                let subset = match subset {
                    Some(name) => Some(find_subset(rule, host, name, reference)?),
                    None => None,
                };
                let destination = match subset {
                    Some(s) => format!("{host}:{number} subset {}", s.name),
                    None => format!("{host}:{number}"),
                };
                let endpoints = match (service_entry, service_port) {
                    (Some(se), Some(sp)) => {
                        service_entry_endpoints(se, sp, host, subset, &destination, reference)?
                    }
                    // A host no ServiceEntry declares has no labels.
                    _ if subset.is_some_and(|s| !s.labels.is_empty()) => Vec::new(),
                    _ => resolve(host, number, &destination, reference)?,
                };
                let id = u32::try_from(self.clusters.len()).map_err(|_| ClusterError::TooMany {
                    origin: Box::new(reference.origin.clone()),
                    rule: reference.rule,
                    destination: destination.clone(),
                })?;
                let policy = rule
                    .map(|r| r.policy_for(number, subset))
                    .unwrap_or_default();
                let pool = policy.connection_pool.as_ref();
                let protocol = UpstreamProtocol::of(service_port, pool);
                let istio_name = format!(
                    "outbound|{number}|{}|{host}",
                    subset.map_or("", |s| s.name.as_str())
                );
                let health_check = rule.and_then(|r| r.health_check.clone());
                let tls = match (rule, &policy.tls) {
                    (Some(rule), Some(settings)) => {
                        let h2 = protocol == UpstreamProtocol::Http2;
                        upstream_tls(settings, host, h2, self.secrets_dir.as_deref())
                            .map_err(|source| ClusterError::Tls {
                                origin: Box::new(rule.origin.clone()),
                                field: tls_field(rule, number),
                                cluster: istio_name.clone(),
                                source: Box::new(source),
                            })?
                            .map(Arc::new)
                    }
                    _ => None,
                };
                if let (Some(r), Some(_)) = (rule, &health_check) {
                    let speaks = match (protocol, &tls) {
                        (UpstreamProtocol::Http2, _) => Some("HTTP/2"),
                        (_, Some(_)) => Some("TLS"),
                        _ => None,
                    };
                    if let Some(speaks) = speaks {
                        return Err(ClusterError::HealthCheckUnsupported {
                            origin: Box::new(reference.origin.clone()),
                            rule: reference.rule,
                            destination,
                            speaks,
                            rule_origin: Box::new(r.origin.clone()),
                        });
                    }
                }
                let balancing = policy.load_balancer.clone().unwrap_or_default();
                let outlier = policy.outlier_detection;
                let health = Arc::new(EndpointHealth::new(endpoints.len(), outlier, health_check));
                let hash = balancing
                    .consistent_hash
                    .map(|h| Arc::new(EndpointHash::build(h.key, h.table, &endpoints)));
                self.clusters.push(Cluster {
                    name: destination,
                    istio_name,
                    host: host.to_owned(),
                    port: number,
                    subset: subset.map(|s| s.name.clone()),
                    endpoints,
                    lb: balancing.simple,
                    pool: PoolPolicy::from_rule(pool),
                    protocol,
                    tls,
                    hash,
                    health,
                });
                let id = ClusterId(id);
                self.by_host
                    .entry(key.clone())
                    .or_default()
                    .by_port
                    .push((number, id));
                id
            }
        };
        if port.is_none() {
            self.by_host.entry(key).or_default().implied = Some(id);
        }
        Ok(id)
    }
}

/// Where the `tls` that applies to port `port` of `rule` is written.
fn tls_field(rule: &DestinationRule, port: u16) -> String {
    let at = rule
        .port_level_settings
        .iter()
        .position(|p| p.port == port && p.policy.tls.is_some());
    match at {
        Some(i) => format!("spec.trafficPolicy.portLevelSettings[{i}].tls"),
        None => "spec.trafficPolicy.tls".to_owned(),
    }
}

/// How `check` and `/config_dump` name a cluster's balancing: `ROUND_ROBIN`, or
/// `consistentHash httpHeaderName x-user RING_HASH 1024`.
pub(crate) fn balancing_name(cluster: &Cluster) -> String {
    match &cluster.hash {
        Some(h) => format!(
            "consistentHash {} {}",
            h.key.describe(),
            h.algorithm.describe()
        ),
        None => cluster.lb.istio_name().to_owned(),
    }
}

/// The subset `name` of the host's DestinationRule.
fn find_subset<'r>(
    rule: Option<&'r DestinationRule>,
    host: &str,
    name: &str,
    reference: Reference<'_>,
) -> Result<&'r Subset, ClusterError> {
    let defined = match rule {
        None => format!("no DestinationRule for {host} defines subsets"),
        Some(rule) => match rule.subsets.iter().find(|s| s.name == name) {
            Some(subset) => return Ok(subset),
            None if rule.subsets.is_empty() => {
                format!("{} defines no subsets", rule.origin)
            }
            None => format!(
                "{} defines only subsets {}",
                rule.origin,
                rule.subsets
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    Err(ClusterError::UnknownSubset {
        origin: Box::new(reference.origin.clone()),
        rule: reference.rule,
        host: host.to_owned(),
        subset: name.to_owned(),
        defined,
    })
}

/// The ServiceEntry port a destination names (or implies, when the entry has one).
fn service_port<'c>(
    se: &'c ServiceEntry,
    host: &str,
    port: Option<u16>,
    reference: Reference<'_>,
) -> Result<&'c ServicePort, ClusterError> {
    let declared = || {
        se.ports
            .iter()
            .map(|p| p.number.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match port {
        Some(number) => se.ports.iter().find(|p| p.number == number).ok_or_else(|| {
            ClusterError::UndeclaredPort {
                origin: Box::new(reference.origin.clone()),
                rule: reference.rule,
                host: host.to_owned(),
                port: number,
                service_entry: Box::new(se.origin.clone()),
                declared: declared(),
            }
        }),
        None => match se.ports.as_slice() {
            [only] => Ok(only),
            _ => Err(ClusterError::PortRequired {
                origin: Box::new(reference.origin.clone()),
                rule: reference.rule,
                host: host.to_owned(),
                service_entry: Box::new(se.origin.clone()),
                declared: declared(),
            }),
        },
    }
}

/// The port an endpoint listens on for a service port.
fn endpoint_port(endpoint: Option<&Endpoint>, sp: &ServicePort) -> u16 {
    endpoint
        .and_then(|e| e.ports.get(&sp.name).copied())
        .or(sp.target_port)
        .unwrap_or(sp.number)
}

/// The addresses of the entry's endpoints (those `subset` selects) on `sp`.
fn service_entry_endpoints(
    se: &ServiceEntry,
    sp: &ServicePort,
    host: &str,
    subset: Option<&Subset>,
    destination: &str,
    reference: Reference<'_>,
) -> Result<Vec<SocketAddr>, ClusterError> {
    let selected = |e: &Endpoint| subset.is_none_or(|s| s.selects(&e.labels));
    let mut endpoints = Vec::new();
    match se.resolution {
        Resolution::Static => {
            if se.endpoints.is_empty() {
                return Err(ClusterError::NoEndpoints {
                    origin: Box::new(reference.origin.clone()),
                    rule: reference.rule,
                    destination: destination.to_owned(),
                    service_entry: Box::new(se.origin.clone()),
                });
            }
            for (index, endpoint) in se.endpoints.iter().enumerate() {
                if !selected(endpoint) {
                    continue;
                }
                let ip: IpAddr =
                    endpoint
                        .address
                        .parse()
                        .map_err(|_| ClusterError::StaticAddress {
                            origin: Box::new(reference.origin.clone()),
                            rule: reference.rule,
                            destination: destination.to_owned(),
                            service_entry: Box::new(se.origin.clone()),
                            endpoint: index,
                            address: endpoint.address.clone(),
                        })?;
                push_unique(
                    &mut endpoints,
                    SocketAddr::new(ip, endpoint_port(Some(endpoint), sp)),
                );
            }
        }
        Resolution::Dns => {
            if se.endpoints.is_empty() {
                if subset.is_some_and(|s| !s.labels.is_empty()) {
                    return Ok(Vec::new());
                }
                return resolve(host, endpoint_port(None, sp), destination, reference);
            }
            for endpoint in se.endpoints.iter().filter(|e| selected(e)) {
                let port = endpoint_port(Some(endpoint), sp);
                for addr in resolve(&endpoint.address, port, destination, reference)? {
                    push_unique(&mut endpoints, addr);
                }
            }
        }
    }
    Ok(endpoints)
}

/// Resolves `name` with the system resolver, keeping only IPv4 addresses when there
/// are any. Never returns an empty list.
fn resolve(
    name: &str,
    port: u16,
    destination: &str,
    reference: Reference<'_>,
) -> Result<Vec<SocketAddr>, ClusterError> {
    let resolved: Vec<SocketAddr> = (name, port)
        .to_socket_addrs()
        .map_err(|source| ClusterError::Resolve {
            origin: Box::new(reference.origin.clone()),
            rule: reference.rule,
            destination: destination.to_owned(),
            name: name.to_owned(),
            source,
        })?
        .collect();
    let any_v4 = resolved.iter().any(SocketAddr::is_ipv4);
    let mut endpoints = Vec::with_capacity(resolved.len());
    for addr in resolved {
        if addr.is_ipv4() || !any_v4 {
            push_unique(&mut endpoints, addr);
        }
    }
    if endpoints.is_empty() {
        return Err(ClusterError::NoAddresses {
            origin: Box::new(reference.origin.clone()),
            rule: reference.rule,
            destination: destination.to_owned(),
            name: name.to_owned(),
        });
    }
    Ok(endpoints)
}

fn push_unique(endpoints: &mut Vec<SocketAddr>, addr: SocketAddr) {
    if !endpoints.contains(&addr) {
        endpoints.push(addr);
    }
}

/// The DestinationRule for `host`: one naming the host exactly wins over a `*.suffix`
/// one, which wins over `*`.
fn destination_rule<'r>(rules: &'r [DestinationRule], host: &str) -> Option<&'r DestinationRule> {
    let exact = rules.iter().find(|r| r.host == host);
    let wildcard = || {
        rules
            .iter()
            .filter(|r| match r.host.strip_prefix('*') {
                Some("") => true,
                Some(suffix) => {
                    suffix.starts_with('.') && host.len() > suffix.len() && host.ends_with(suffix)
                }
                None => false,
            })
            .max_by_key(|r| r.host.len())
    };
    exact.or_else(wildcard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HttpRoute, TrafficPolicy, VirtualService, WeightedDestination};
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;
    use std::path::PathBuf;

    fn origin(kind: &str, name: &str) -> Origin {
        Origin {
            file: PathBuf::from("gateway.yaml"),
            document: 2,
            kind: kind.to_owned(),
            name: name.to_owned(),
        }
    }

    fn vs(name: &str, destinations: &[(&str, Option<u16>)]) -> VirtualService {
        VirtualService {
            origin: origin("VirtualService", name),
            name: name.to_owned(),
            namespace: None,
            hosts: vec![],
            gateways: vec![],
            http: destinations
                .iter()
                .map(|(host, port)| HttpRoute {
                    name: None,
                    matches: vec![],
                    action: RouteAction::Route(vec![WeightedDestination {
                        host: (*host).to_owned(),
                        port: *port,
                        subset: None,
                        weight: 0,
                    }]),
                    rewrite: None,
                    timeout: None,
                    retries: None,
                    headers: Default::default(),
                    policies: Default::default(),
                })
                .collect(),
            tls: vec![],
            tcp: vec![],
        }
    }

    fn port(number: u16, name: &str, target_port: Option<u16>) -> ServicePort {
        ServicePort {
            number,
            name: name.to_owned(),
            protocol: "HTTP".to_owned(),
            target_port,
        }
    }

    fn endpoint(address: &str, ports: &[(&str, u16)]) -> Endpoint {
        Endpoint {
            address: address.to_owned(),
            ports: ports
                .iter()
                .map(|(n, p)| ((*n).to_owned(), *p))
                .collect::<BTreeMap<_, _>>(),
            weight: None,
            labels: BTreeMap::new(),
        }
    }

    fn service_entry(
        host: &str,
        resolution: Resolution,
        ports: Vec<ServicePort>,
        endpoints: Vec<Endpoint>,
    ) -> ServiceEntry {
        ServiceEntry {
            origin: origin("ServiceEntry", host),
            name: host.to_owned(),
            hosts: vec![host.to_owned()],
            ports,
            resolution,
            endpoints,
        }
    }

    fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(a, b, c, d), port))
    }

    #[test]
    fn static_service_entry_uses_named_endpoint_ports_then_target_port() {
        let config = Config {
            virtual_services: vec![vs(
                "httpbin",
                &[("httpbin", Some(8000)), ("httpbin", Some(9000))],
            )],
            service_entries: vec![service_entry(
                "httpbin",
                Resolution::Static,
                vec![port(8000, "http", Some(8080)), port(9000, "admin", None)],
                vec![
                    endpoint("10.0.0.1", &[("http", 18000)]),
                    endpoint("10.0.0.2", &[]),
                ],
            )],
            ..Config::default()
        };
        let clusters = Clusters::build(&config).unwrap();
        assert_eq!(clusters.len(), 2);
        let http = clusters.get(clusters.lookup("httpbin", None, Some(8000)).unwrap());
        assert_eq!(http.name, "httpbin:8000");
        assert_eq!(
            http.endpoints,
            vec![v4(10, 0, 0, 1, 18000), v4(10, 0, 0, 2, 8080)]
        );
        assert_eq!(http.lb, LoadBalancer::RoundRobin);
        let admin = clusters.get(clusters.lookup("httpbin", None, Some(9000)).unwrap());
        assert_eq!(admin.name, "httpbin:9000");
        assert_eq!(
            admin.endpoints,
            vec![v4(10, 0, 0, 1, 9000), v4(10, 0, 0, 2, 9000)]
        );
        assert_eq!(clusters.lookup("httpbin", None, Some(7000)), None);
        assert_eq!(clusters.lookup("other", None, Some(8000)), None);
    }

    #[test]
    fn omitted_port_means_the_only_declared_port() {
        let config = Config {
            virtual_services: vec![vs("httpbin", &[("httpbin", None), ("httpbin", Some(8000))])],
            service_entries: vec![service_entry(
                "httpbin",
                Resolution::Static,
                vec![port(8000, "http", None)],
                vec![endpoint("127.0.0.1", &[])],
            )],
            ..Config::default()
        };
        let clusters = Clusters::build(&config).unwrap();
        assert_eq!(clusters.len(), 1);
        let id = clusters.lookup("httpbin", None, None).unwrap();
        assert_eq!(clusters.lookup("httpbin", None, Some(8000)), Some(id));
        assert_eq!(clusters.get(id).endpoints, vec![v4(127, 0, 0, 1, 8000)]);
        assert_eq!(clusters.iter().count(), 1);
    }

    #[test]
    fn undeclared_and_missing_ports_are_errors() {
        let se = service_entry(
            "httpbin",
            Resolution::Static,
            vec![port(8000, "http", None), port(9000, "admin", None)],
            vec![endpoint("127.0.0.1", &[])],
        );
        let config = Config {
            virtual_services: vec![vs(
                "httpbin",
                &[("httpbin", Some(8000)), ("httpbin", Some(7000))],
            )],
            service_entries: vec![se.clone()],
            ..Config::default()
        };
        let message = Clusters::build(&config).unwrap_err().to_string();
        assert_eq!(
            message,
            "gateway.yaml document 2 (VirtualService httpbin): http[1] destination httpbin:7000: \
             port 7000 is not declared by gateway.yaml document 2 (ServiceEntry httpbin), \
             which declares ports 8000, 9000"
        );
        let config = Config {
            virtual_services: vec![vs("httpbin", &[("httpbin", None)])],
            service_entries: vec![se],
            ..Config::default()
        };
        let message = Clusters::build(&config).unwrap_err().to_string();
        assert!(
            message.contains("http[0] destination httpbin names no destination.port.number"),
            "{message}"
        );
    }

    #[test]
    fn static_address_must_be_an_ip() {
        let config = Config {
            virtual_services: vec![vs("httpbin", &[("httpbin", Some(8000))])],
            service_entries: vec![service_entry(
                "httpbin",
                Resolution::Static,
                vec![port(8000, "http", None)],
                vec![endpoint("httpbin.local", &[])],
            )],
            ..Config::default()
        };
        let message = Clusters::build(&config).unwrap_err().to_string();
        assert!(
            message.contains("endpoints[0].address `httpbin.local` is not an IP address"),
            "{message}"
        );
    }

    #[test]
    fn dns_resolves_localhost_to_ipv4() {
        let config = Config {
            virtual_services: vec![vs(
                "local",
                &[("localhost", Some(8000)), ("upstream", Some(80))],
            )],
            service_entries: vec![service_entry(
                "upstream",
                Resolution::Dns,
                vec![port(80, "http", Some(8081))],
                vec![
                    endpoint("localhost", &[]),
                    endpoint("127.0.0.2", &[("http", 9)]),
                ],
            )],
            ..Config::default()
        };
        let clusters = Clusters::build(&config).unwrap();
        let local = clusters.get(clusters.lookup("localhost", None, Some(8000)).unwrap());
        assert_eq!(local.name, "localhost:8000");
        assert_eq!(local.endpoints, vec![v4(127, 0, 0, 1, 8000)]);
        let upstream = clusters.get(clusters.lookup("upstream", None, None).unwrap());
        assert_eq!(
            upstream.endpoints,
            vec![v4(127, 0, 0, 1, 8081), v4(127, 0, 0, 2, 9)]
        );
    }

    #[test]
    fn dns_service_entry_without_endpoints_resolves_its_host() {
        let config = Config {
            virtual_services: vec![vs("local", &[("localhost", None)])],
            service_entries: vec![service_entry(
                "localhost",
                Resolution::Dns,
                vec![port(8000, "http", None)],
                vec![],
            )],
            ..Config::default()
        };
        let clusters = Clusters::build(&config).unwrap();
        let local = clusters.get(clusters.lookup("localhost", None, None).unwrap());
        assert_eq!(local.endpoints, vec![v4(127, 0, 0, 1, 8000)]);
    }

    #[test]
    fn unresolvable_host_names_the_virtual_service_rule_and_destination() {
        let config = Config {
            virtual_services: vec![vs(
                "bookinfo",
                &[("localhost", Some(80)), ("nowhere.invalid", Some(9080))],
            )],
            ..Config::default()
        };
        let message = Clusters::build(&config).unwrap_err().to_string();
        assert!(
            message.starts_with(
                "gateway.yaml document 2 (VirtualService bookinfo): http[1] destination \
                 nowhere.invalid:9080: cannot resolve `nowhere.invalid` with DNS: "
            ),
            "{message}"
        );
    }

    #[test]
    fn destination_rule_sets_the_load_balancer() {
        let rule = |host: &str, lb| DestinationRule {
            origin: origin("DestinationRule", host),
            name: host.to_owned(),
            host: host.to_owned(),
            traffic_policy: TrafficPolicy {
                load_balancer: Some(crate::config::Balancing::from(lb)),
                connection_pool: Some(ConnectionPool {
                    max_connections: Some(7),
                    ..ConnectionPool::default()
                }),
                outlier_detection: None,
                tls: None,
            },
            port_level_settings: Vec::new(),
            subsets: vec![],
            health_check: None,
        };
        let config = Config {
            virtual_services: vec![vs(
                "lb",
                &[
                    ("127.0.0.1", Some(1)),
                    ("127.0.0.2", Some(1)),
                    ("localhost", Some(1)),
                ],
            )],
            destination_rules: vec![
                rule("*", LoadBalancer::Random),
                rule("127.0.0.1", LoadBalancer::LeastRequest),
            ],
            ..Config::default()
        };
        let clusters = Clusters::build(&config).unwrap();
        let lb = |host| {
            clusters
                .get(clusters.lookup(host, None, Some(1)).unwrap())
                .lb
        };
        assert_eq!(lb("127.0.0.1"), LoadBalancer::LeastRequest);
        assert_eq!(lb("127.0.0.2"), LoadBalancer::Random);
        let policy = |host| {
            clusters
                .get(clusters.lookup(host, None, Some(1)).unwrap())
                .pool
        };
        assert_eq!(policy("127.0.0.1").max_connections, 7);
        assert_eq!(
            policy("localhost").max_connections,
            7,
            "the `*` rule's connectionPool applies"
        );
        let rules = [rule("*.example.com", LoadBalancer::Random)];
        assert_eq!(
            destination_rule(&rules, "a.example.com")
                .and_then(|r| r.traffic_policy.load_balancer.clone()),
            Some(LoadBalancer::Random.into())
        );
        assert!(destination_rule(&rules, "example.com").is_none());
    }

    #[test]
    fn subsets_select_endpoints_by_label_and_merge_policies() {
        use crate::config::{ConsistentHash, HashKey, HashTable, Subset, TrafficPolicy};
        let labelled = |address: &str, version: &str| Endpoint {
            labels: [("version".to_owned(), version.to_owned())].into(),
            ..endpoint(address, &[])
        };
        let subset = |name: &str, version: &str, policy: TrafficPolicy| Subset {
            name: name.to_owned(),
            labels: [("version".to_owned(), version.to_owned())].into(),
            traffic_policy: policy,
            port_level_settings: Vec::new(),
        };
        let hash = ConsistentHash {
            key: HashKey::SourceIp,
            table: HashTable::RingHash {
                minimum_ring_size: 16,
            },
        };
        let rule = DestinationRule {
            origin: origin("DestinationRule", "httpbin"),
            name: "httpbin".to_owned(),
            host: "httpbin".to_owned(),
            traffic_policy: TrafficPolicy {
                load_balancer: Some(LoadBalancer::Random.into()),
                connection_pool: Some(ConnectionPool {
                    max_connections: Some(9),
                    ..ConnectionPool::default()
                }),
                ..TrafficPolicy::default()
            },
            port_level_settings: Vec::new(),
            health_check: None,
            subsets: vec![
                subset("v1", "v1", TrafficPolicy::default()),
                subset(
                    "v2",
                    "v2",
                    TrafficPolicy {
                        load_balancer: Some(crate::config::Balancing {
                            simple: LoadBalancer::RoundRobin,
                            consistent_hash: Some(hash.clone()),
                        }),
                        ..TrafficPolicy::default()
                    },
                ),
                subset("v3", "v3", TrafficPolicy::default()),
            ],
        };
        let mut routes = vs(
            "httpbin",
            &[
                ("httpbin", None),
                ("httpbin", None),
                ("httpbin", None),
                ("httpbin", None),
            ],
        );
        for (http, subset) in routes
            .http
            .iter_mut()
            .zip([None, Some("v1"), Some("v2"), Some("v3")])
        {
            if let RouteAction::Route(d) = &mut http.action {
                d[0].subset = subset.map(str::to_owned);
            }
        }
        let config = Config {
            virtual_services: vec![routes.clone()],
            service_entries: vec![service_entry(
                "httpbin",
                Resolution::Static,
                vec![port(8000, "http", None)],
                vec![
                    labelled("10.0.0.1", "v1"),
                    labelled("10.0.0.2", "v2"),
                    labelled("10.0.0.3", "v1"),
                ],
            )],
            destination_rules: vec![rule.clone()],
            ..Config::default()
        };
        let clusters = Clusters::build(&config).unwrap();
        assert_eq!(clusters.len(), 4);
        let get = |subset| clusters.get(clusters.lookup("httpbin", subset, None).unwrap());
        assert_eq!(get(None).endpoints.len(), 3);
        let v1 = get(Some("v1"));
        assert_eq!(v1.istio_name, "outbound|8000|v1|httpbin");
        assert_eq!(v1.name, "httpbin:8000 subset v1");
        assert_eq!(
            v1.endpoints,
            vec![v4(10, 0, 0, 1, 8000), v4(10, 0, 0, 3, 8000)]
        );
        assert_eq!(v1.lb, LoadBalancer::Random, "the rule's loadBalancer");
        assert_eq!(v1.pool.max_connections, 9);
        assert!(v1.hash.is_none());
        let v2 = get(Some("v2"));
        assert_eq!(v2.endpoints, vec![v4(10, 0, 0, 2, 8000)]);
        assert_eq!(v2.lb, LoadBalancer::RoundRobin, "the subset's loadBalancer");
        assert_eq!(
            v2.hash.as_ref().map(|h| h.key.clone()),
            Some(HashKey::SourceIp)
        );
        assert_eq!(v2.pool.max_connections, 9, "the rule's connectionPool");
        assert!(
            get(Some("v3")).endpoints.is_empty(),
            "no endpoint is labelled v3"
        );

        let mut unknown = routes.clone();
        if let RouteAction::Route(d) = &mut unknown.http[3].action {
            d[0].subset = Some("v9".to_owned());
        }
        let config = Config {
            virtual_services: vec![unknown],
            destination_rules: vec![rule],
            ..config
        };
        assert_eq!(
            Clusters::build(&config).unwrap_err().to_string(),
            "gateway.yaml document 2 (VirtualService httpbin): http[3] destination httpbin subset v9: \
             gateway.yaml document 2 (DestinationRule httpbin) defines only subsets v1, v2, v3"
        );
        let config = Config {
            destination_rules: vec![],
            ..config
        };
        assert!(Clusters::build(&config).unwrap_err().to_string().ends_with(
            "http[1] destination httpbin subset v1: no DestinationRule for httpbin defines subsets"
        ));
    }
}
