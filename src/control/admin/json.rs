//! The admin endpoint's JSON answers: `/certs` (what certificate each listener serves
//! for which hosts, and when it expires) and `/config_dump` (the validated
//! configuration being served). Built from the snapshot and configuration the control
//! thread published; certificates were described once when the snapshot was built, so
//! an answer only recomputes the days left. Strings go through `serde_json`, so any
//! content (quotes, control characters, non-ASCII) stays valid JSON.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::auth::{KeyRing, KeySet};
use crate::config::{
    ClientCredential, Config, Credential, DestinationRule, Gateway, HeaderOperations, HeaderOps,
    HttpRoute, JwksSource, L4Route, Protocol, Resolution, RouteAction, RouteMatch, Server,
    ServerTls, ServiceEntry, StringMatch, TlsVersion, VirtualService, WeightedDestination,
};
use crate::control::status::{ReloadRecord, Status};
use crate::snapshot::{ListenerSpec, ServedCertificate, Snapshot};
use crate::tls::CertInfo;
use crate::tls::cert_info::San;
use crate::upstream::Cluster;

const SECONDS_PER_DAY: i64 = 24 * 60 * 60;

/// `GET /certs`: `certificates`, in the shape of Envoy's admin `/certs` (one entry per
/// TLS server: `ca_cert` and `cert_chain` of `CertificateDetails`; then one per
/// cluster presenting a client certificate to its upstream), which Istio's
/// troubleshooting steps and tooling read; beside it, ringress's own view per
/// listener and TLS server: hosts, mode, source, the whole chain and the client CA.
/// Typed (not a `json!` map) so the fields keep this order in the answer.
#[derive(Serialize)]
pub(super) struct Certs<'a> {
    certificates: Vec<EnvoyCertificate<'a>>,
    generation: u64,
    now: String,
    listeners: Vec<ListenerCerts<'a>>,
}

/// One TLS server as Envoy's `/certs` lists an SSL context, with ringress's listener
/// and hosts beside.
#[derive(Serialize)]
struct EnvoyCertificate<'a> {
    ca_cert: Vec<CertificateDetails<'a>>,
    cert_chain: Vec<CertificateDetails<'a>>,
    /// A TLS server's listener, or (upstream TLS with a client certificate) the
    /// cluster whose connections present `cert_chain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    listener: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<&'a str>,
    hosts: Vec<String>,
}

/// Envoy's `CertificateDetails` (admin/v3/certs.proto) as its JSON prints it:
/// `days_until_expiration` a string (a uint64), 0 once expired; the serial in
/// lower-case hex without leading zero bytes; `subject_alt_names` DNS, then URI, then
/// IP. `subject` is ringress's addition.
#[derive(Serialize)]
struct CertificateDetails<'a> {
    path: &'a str,
    serial_number: String,
    subject_alt_names: Vec<Map<String, Value>>,
    days_until_expiration: String,
    valid_from: String,
    expiration_time: String,
    subject: &'a str,
}

#[derive(Serialize)]
struct ListenerCerts<'a> {
    address: String,
    port: u16,
    protocol: &'static str,
    servers: Vec<ServerCerts<'a>>,
}

#[derive(Serialize)]
struct ServerCerts<'a> {
    hosts: Vec<String>,
    mode: &'static str,
    source: &'a str,
    cert_chain: Vec<Cert<'a>>,
    /// MUTUAL and OPTIONAL_MUTUAL only.
    ca_cert: Option<CaCerts<'a>>,
}

#[derive(Serialize)]
struct CaCerts<'a> {
    source: &'a str,
    certificates: Vec<Cert<'a>>,
}

/// One certificate, with the names Envoy's `/certs` uses where they exist.
#[derive(Serialize)]
pub(super) struct Cert<'a> {
    subject: &'a str,
    subject_alt_names: &'a [String],
    serial_number: &'a str,
    expiration_time: String,
    days_until_expiration: i64,
}

pub(super) fn certs(snapshot: &Snapshot, now: i64) -> Certs<'_> {
    let certificates = snapshot
        .listeners
        .iter()
        .flat_map(|listener| {
            listener
                .certificates
                .iter()
                .map(move |served| EnvoyCertificate {
                    ca_cert: served
                        .client_ca
                        .iter()
                        .flat_map(|ca| {
                            ca.certificates
                                .iter()
                                .map(|c| certificate_details(c, &ca.path, now))
                        })
                        .collect(),
                    cert_chain: served
                        .leaf
                        .iter()
                        .map(|c| certificate_details(c, &served.path, now))
                        .collect(),
                    listener: Some(listener.addr.to_string()),
                    cluster: None,
                    hosts: served.hosts.iter().map(ToString::to_string).collect(),
                })
        })
        .chain(upstream_client_certs(snapshot, now))
        .collect();
    Certs {
        certificates,
        generation: snapshot.generation,
        now: rfc3339(now),
        listeners: snapshot
            .listeners
            .iter()
            .map(|l| listener_certs(l, now))
            .collect(),
    }
}

fn listener_certs(listener: &ListenerSpec, now: i64) -> ListenerCerts<'_> {
    ListenerCerts {
        address: listener.addr.to_string(),
        port: listener.port(),
        protocol: protocol_name(listener.protocol),
        servers: listener
            .certificates
            .iter()
            .map(|c| served_certificate(c, now))
            .collect(),
    }
}

fn served_certificate(cert: &ServedCertificate, now: i64) -> ServerCerts<'_> {
    ServerCerts {
        hosts: cert.hosts.iter().map(ToString::to_string).collect(),
        mode: cert.mode.istio_name(),
        source: &cert.source,
        cert_chain: cert.chain.iter().map(|c| cert_info(c, now)).collect(),
        ca_cert: cert.client_ca.as_ref().map(|ca| CaCerts {
            source: &ca.source,
            certificates: ca.certificates.iter().map(|c| cert_info(c, now)).collect(),
        }),
    }
}

/// The client certificates presented to upstreams, one entry per cluster that has one
/// (Envoy lists its upstream TLS contexts in `/certs` too).
fn upstream_client_certs(
    snapshot: &Snapshot,
    now: i64,
) -> impl Iterator<Item = EnvoyCertificate<'_>> {
    snapshot.clusters.iter().filter_map(move |(_, cluster)| {
        let (source, leaf) = cluster.tls.as_deref()?.client_certificate.as_ref()?;
        Some(EnvoyCertificate {
            ca_cert: Vec::new(),
            cert_chain: leaf
                .iter()
                .map(|c| certificate_details(c, source, now))
                .collect(),
            listener: None,
            cluster: Some(&cluster.istio_name),
            hosts: vec![cluster.host.clone()],
        })
    })
}

pub(super) fn cert_info(info: &CertInfo, now: i64) -> Cert<'_> {
    Cert {
        subject: &info.subject,
        subject_alt_names: &info.sans,
        serial_number: &info.serial,
        expiration_time: rfc3339(info.not_after_unix),
        days_until_expiration: days_until(info.not_after_unix, now),
    }
}

fn certificate_details<'a>(info: &'a CertInfo, path: &'a str, now: i64) -> CertificateDetails<'a> {
    let subject_alt_names = info
        .typed_sans
        .iter()
        .map(|san| {
            let (kind, name) = match san {
                San::Dns(name) => ("dns", name),
                San::Uri(name) => ("uri", name),
                San::IpAddress(name) => ("ip_address", name),
            };
            let mut entry = Map::new();
            entry.insert(kind.to_owned(), Value::String(name.clone()));
            entry
        })
        .collect();
    CertificateDetails {
        path,
        serial_number: envoy_serial(&info.serial),
        subject_alt_names,
        days_until_expiration: days_until(info.not_after_unix, now).max(0).to_string(),
        valid_from: rfc3339(info.not_before_unix),
        expiration_time: rfc3339(info.not_after_unix),
        subject: &info.subject,
    }
}

/// A serial number as Envoy prints it (BoringSSL's `BN_bn2hex`): lower-case hex of its
/// bytes without the leading zero bytes, `0` for zero.
fn envoy_serial(hex: &str) -> String {
    let mut rest = hex;
    while let Some(after) = rest.strip_prefix("00") {
        rest = after;
    }
    match rest {
        "" => "0".to_owned(),
        serial => serial.to_ascii_lowercase(),
    }
}

/// Whole days from `now` to `not_after`, negative once expired.
pub(super) fn days_until(not_after: i64, now: i64) -> i64 {
    not_after.saturating_sub(now).div_euclid(SECONDS_PER_DAY)
}

/// `2026-11-22T01:05:46Z` for seconds since the Unix epoch (proleptic Gregorian, UTC).
pub(super) fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(SECONDS_PER_DAY);
    let secs = unix.rem_euclid(SECONDS_PER_DAY);
    // Civil date from days since 1970-01-01, in 400-year eras of 146097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn protocol_name(protocol: Protocol) -> &'static str {
    protocol.istio_name()
}

/// `GET /config_dump`: the configuration as ringress understood it.
pub(super) fn config_dump(config: &Config, snapshot: &Snapshot) -> Value {
    json!({
        "generation": snapshot.generation,
        "source": config.source.display().to_string(),
        "gateways": config.gateways.iter().map(gateway).collect::<Vec<_>>(),
        "virtual_services": config.virtual_services.iter().map(virtual_service).collect::<Vec<_>>(),
        "service_entries": config.service_entries.iter().map(|se| service_entry(se, snapshot)).collect::<Vec<_>>(),
        "destination_rules": config.destination_rules.iter().map(destination_rule).collect::<Vec<_>>(),
        "clusters": snapshot.clusters.iter().map(|(_, c)| cluster(c)).collect::<Vec<_>>(),
    })
}

/// A cluster as the snapshot holds it: endpoints, protocol, and its upstream TLS.
fn cluster(c: &Cluster) -> Value {
    let now = crate::tls::cert_info::now_unix();
    let tls = c.tls.as_deref().map(|tls| {
        json!({
            "mode": tls.settings.mode.istio_name(),
            "sni": tls.sni(),
            "ca": tls.ca_source,
            "subject_alt_names": tls.settings.subject_alt_names,
            "insecure_skip_verify": tls.settings.insecure_skip_verify,
            "client_certificate": tls.client_certificate.as_ref().map(|(source, leaf)| json!({
                "source": source,
                "certificate": leaf.as_ref().map(|leaf| cert_info(leaf, now)),
            })),
        })
    });
    json!({
        "name": c.istio_name,
        "load_balancer": crate::upstream::cluster::balancing_name(c),
        "subset": c.subset,
        "protocol": c.protocol.name(),
        "endpoints": c.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "tls": tls,
    })
}

/// The `jwks` section of `/config_dump`: each JWT provider's issuer and where its
/// keys come from, and for remote sources the key ids loaded, when the last fetch
/// succeeded and the last error.
pub(super) fn jwks(config: &Config, ring: &KeyRing) -> Value {
    let time = |t: Option<std::time::SystemTime>| {
        t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| rfc3339(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
    };
    config
        .jwt_providers()
        .map(|rule| {
            let mut provider = json!({
                "issuer": rule.issuer,
                "origin": format!("{} {}", rule.origin, rule.path),
                "audiences": rule.audiences,
            });
            match &rule.keys {
                JwksSource::Inline(text) => {
                    provider["source"] = json!("inline");
                    provider["kids"] =
                        json!(KeySet::parse(text).map(|k| k.kids()).unwrap_or_default());
                }
                remote => {
                    let url = remote.url().unwrap_or_default();
                    let state = ring.sources.get(url);
                    provider["source"] = json!(url);
                    provider["jwks_uri"] = json!(state.and_then(|s| s.jwks_uri.clone()));
                    provider["kids"] = json!(state.and_then(|s| s.keys.as_ref()).map(|k| k.kids()));
                    provider["last_success"] = json!(time(state.and_then(|s| s.last_success)));
                    provider["last_attempt"] = json!(time(state.and_then(|s| s.last_attempt)));
                    provider["last_error"] = json!(state.and_then(|s| s.last_error.clone()));
                }
            }
            provider
        })
        .collect()
}

/// The `reloads` section of `/config_dump`: the counts, the last attempt and the last
/// failure with its error, so an operator sees why a reload did not take.
pub(super) fn reloads(status: &Status) -> Value {
    let record = |r: ReloadRecord| {
        let at =
            r.at.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let (generation, error) = match r.outcome {
            Ok(generation) => (Some(generation), None),
            Err(error) => (None, Some(error)),
        };
        json!({ "time": rfc3339(at), "cause": r.cause, "generation": generation, "error": error })
    };
    json!({
        "ok": status.reloads_ok.load(std::sync::atomic::Ordering::Relaxed),
        "failed": status.reloads_failed.load(std::sync::atomic::Ordering::Relaxed),
        "last": status.last_reload().map(record),
        "last_failure": status.last_failure().map(record),
    })
}

fn gateway(g: &Gateway) -> Value {
    json!({
        "name": g.name,
        "namespace": g.namespace,
        "origin": g.origin.to_string(),
        "servers": g.servers.iter().map(server).collect::<Vec<_>>(),
    })
}

fn server(s: &Server) -> Value {
    json!({
        "port": { "number": s.port, "name": s.port_name, "protocol": protocol_name(s.protocol) },
        "bind": s.bind.map(|ip| ip.to_string()),
        "hosts": s.hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "https_redirect": s.https_redirect,
        "tls": s.tls.as_ref().map(server_tls),
    })
}

/// A server's `tls`: where the certificate and key are, never what they contain.
fn server_tls(t: &ServerTls) -> Value {
    let mut out = Map::new();
    out.insert("mode".into(), t.mode.istio_name().into());
    match &t.credential {
        Credential::Files { cert, key } => {
            out.insert(
                "server_certificate".into(),
                cert.display().to_string().into(),
            );
            out.insert("private_key".into(), key.display().to_string().into());
        }
        Credential::Named(name) => {
            out.insert("credential_name".into(), name.clone().into());
        }
    }
    out.insert(
        "ca_certificates".into(),
        t.ca_certificates
            .as_ref()
            .map(|p| p.display().to_string())
            .into(),
    );
    out.insert(
        "min_protocol_version".into(),
        t.min_protocol_version.map(version_name).into(),
    );
    out.insert(
        "max_protocol_version".into(),
        t.max_protocol_version.map(version_name).into(),
    );
    out.insert("cipher_suites".into(), t.cipher_suites.clone().into());
    out.insert(
        "subject_alt_names".into(),
        t.subject_alt_names.clone().into(),
    );
    Value::Object(out)
}

fn version_name(v: TlsVersion) -> &'static str {
    match v {
        TlsVersion::V1_2 => "TLSV1_2",
        TlsVersion::V1_3 => "TLSV1_3",
    }
}

fn virtual_service(vs: &VirtualService) -> Value {
    json!({
        "name": vs.name,
        "namespace": vs.namespace,
        "origin": vs.origin.to_string(),
        "hosts": vs.hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "gateways": vs.gateways,
        "http": vs.http.iter().enumerate().map(|(i, r)| http_route(i, r)).collect::<Vec<_>>(),
        "tls": vs.tls.iter().enumerate().map(|(i, r)| l4_route(i, r)).collect::<Vec<_>>(),
        "tcp": vs.tcp.iter().enumerate().map(|(i, r)| l4_route(i, r)).collect::<Vec<_>>(),
    })
}

/// A `tls[]` or `tcp[]` rule (a `tcp[]` match has no `sni_hosts`).
fn l4_route(index: usize, r: &L4Route) -> Value {
    let matches: Vec<Value> = r
        .matches
        .iter()
        .map(|m| {
            json!({
                "sni_hosts": m.sni_hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "port": m.port,
                "gateways": m.gateways,
            })
        })
        .collect();
    json!({ "index": index, "match": matches, "route": route_destinations(&r.route) })
}

/// A rule's weighted destinations.
fn route_destinations(destinations: &[WeightedDestination]) -> Vec<Value> {
    destinations
        .iter()
        .map(|d| {
            json!({
                "destination": { "host": d.host, "port": d.port, "subset": d.subset },
                "weight": d.weight,
            })
        })
        .collect()
}

fn http_route(index: usize, r: &HttpRoute) -> Value {
    let mut out = Map::new();
    out.insert("index".into(), index.into());
    out.insert("name".into(), r.name.clone().into());
    out.insert(
        "match".into(),
        r.matches.iter().map(route_match).collect::<Vec<_>>().into(),
    );
    match &r.action {
        RouteAction::Route(destinations) => {
            out.insert("route".into(), route_destinations(destinations).into());
        }
        RouteAction::Redirect(r) => {
            out.insert(
                "redirect".into(),
                json!({
                    "uri": r.uri,
                    "authority": r.authority,
                    "scheme": r.scheme,
                    "port": r.port,
                    "redirect_code": r.code,
                }),
            );
        }
        RouteAction::DirectResponse { status, body } => {
            out.insert(
                "direct_response".into(),
                json!({ "status": status, "body": body }),
            );
        }
    }
    if let Some(rewrite) = &r.rewrite {
        out.insert(
            "rewrite".into(),
            json!({ "uri": rewrite.uri, "authority": rewrite.authority }),
        );
    }
    out.insert(
        "timeout".into(),
        r.timeout.map(|t| format!("{}s", t.as_secs_f64())).into(),
    );
    if let Some(retries) = &r.retries {
        out.insert(
            "retries".into(),
            json!({
                "attempts": retries.attempts,
                "per_try_timeout": retries.per_try_timeout.map(|t| format!("{}s", t.as_secs_f64())),
                "retry_on": retries.retry_on,
            }),
        );
    }
    out.insert("headers".into(), header_operations(&r.headers));
    route_policies(&r.policies, &mut out);
    Value::Object(out)
}

/// A rule's `fault`, `cors_policy` and `mirrors`, when it has them.
fn route_policies(p: &crate::config::RoutePolicies, out: &mut Map<String, Value>) {
    if !p.mirrors.is_empty() {
        let mirrors: Vec<Value> = p
            .mirrors
            .iter()
            .map(|m| {
                json!({
                    "destination": { "host": m.host, "port": m.port },
                    "percentage": m.share.percent(),
                })
            })
            .collect();
        out.insert("mirrors".into(), mirrors.into());
    }
    if let Some(fault) = &p.fault {
        out.insert(
            "fault".into(),
            json!({
                "delay": fault.delay.map(|d| json!({
                    "fixed_delay": format!("{}s", d.fixed.as_secs_f64()),
                    "percentage": d.share.percent(),
                })),
                "abort": fault.abort.map(|a| json!({
                    "http_status": a.status,
                    "grpc_status": a.grpc_status,
                    "percentage": a.share.percent(),
                })),
            }),
        );
    }
    if let Some(cors) = &p.cors {
        out.insert(
            "cors_policy".into(),
            json!({
                "allow_origins": cors.allow_origins.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "allow_methods": cors.allow_methods,
                "allow_headers": cors.allow_headers,
                "expose_headers": cors.expose_headers,
                "max_age": cors.max_age,
                "allow_credentials": cors.allow_credentials,
                "unmatched_preflights": if cors.forward_unmatched_preflights { "FORWARD" } else { "IGNORE" },
            }),
        );
    }
}

fn route_match(m: &RouteMatch) -> Value {
    let mut out = Map::new();
    if let Some(name) = &m.name {
        out.insert("name".into(), name.clone().into());
    }
    for (field, condition) in [
        ("uri", &m.uri),
        ("authority", &m.authority),
        ("method", &m.method),
        ("scheme", &m.scheme),
    ] {
        if let Some(condition) = condition {
            out.insert(field.into(), string_match(condition));
        }
    }
    for (field, conditions) in [
        ("headers", &m.headers),
        ("without_headers", &m.without_headers),
        ("query_params", &m.query_params),
    ] {
        if !conditions.is_empty() {
            let conditions: Map<String, Value> = conditions
                .iter()
                .map(|(name, condition)| (name.clone(), string_match(condition)))
                .collect();
            out.insert(field.into(), Value::Object(conditions));
        }
    }
    if let Some(port) = m.port {
        out.insert("port".into(), port.into());
    }
    if !m.gateways.is_empty() {
        out.insert("gateways".into(), m.gateways.clone().into());
    }
    if m.ignore_uri_case {
        out.insert("ignore_uri_case".into(), true.into());
    }
    Value::Object(out)
}

fn string_match(m: &StringMatch) -> Value {
    match m {
        StringMatch::Exact(s) => json!({ "exact": s }),
        StringMatch::Prefix(s) => json!({ "prefix": s }),
        StringMatch::Regex(r) => json!({ "regex": r.as_str() }),
    }
}

fn header_operations(h: &HeaderOperations) -> Value {
    let ops = |o: &HeaderOps| {
        json!({
            "set": o.set.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
            "add": o.add.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
            "remove": o.remove,
        })
    };
    json!({ "request": ops(&h.request), "response": ops(&h.response) })
}

/// A ServiceEntry, with the clusters built from its hosts and their resolved endpoints.
fn service_entry(se: &ServiceEntry, snapshot: &Snapshot) -> Value {
    let resolved: Vec<Value> = snapshot
        .clusters
        .iter()
        .filter(|(_, c)| se.hosts.contains(&c.host))
        .map(|(_, c)| {
            json!({
                "cluster": c.name,
                "istio_name": c.istio_name,
                "subset": c.subset,
                "load_balancer": crate::upstream::cluster::balancing_name(c),
                "protocol": c.protocol.name(),
                "endpoints": c.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "name": se.name,
        "origin": se.origin.to_string(),
        "hosts": se.hosts,
        "ports": se.ports.iter().map(|p| json!({
            "number": p.number,
            "name": p.name,
            "protocol": p.protocol,
            "target_port": p.target_port,
        })).collect::<Vec<_>>(),
        "resolution": match se.resolution {
            Resolution::Static => "STATIC",
            Resolution::Dns => "DNS",
        },
        "endpoints": se.endpoints.iter().map(|e| json!({
            "address": e.address,
            "ports": e.ports,
            "weight": e.weight,
            "labels": e.labels,
        })).collect::<Vec<_>>(),
        "resolved": resolved,
    })
}

fn destination_rule(dr: &DestinationRule) -> Value {
    let port_level = |settings: &[crate::config::PortTrafficPolicy]| {
        settings
            .iter()
            .map(|p| {
                json!({
                    "port": { "number": p.port },
                    "policy": traffic_policy(&p.policy),
                })
            })
            .collect::<Vec<_>>()
    };
    json!({
        "name": dr.name,
        "origin": dr.origin.to_string(),
        "host": dr.host,
        "traffic_policy": traffic_policy(&dr.traffic_policy),
        "port_level_settings": port_level(&dr.port_level_settings),
        "health_check": dr.health_check.as_ref().map(|hc| json!({
            "path": hc.path,
            "interval_ms": hc.interval.as_millis() as u64,
            "timeout_ms": hc.timeout.as_millis() as u64,
            "unhealthy_threshold": hc.unhealthy_threshold,
            "healthy_threshold": hc.healthy_threshold,
        })),
        "subsets": dr.subsets.iter().map(|s| json!({
            "name": s.name,
            "labels": s.labels,
            "traffic_policy": traffic_policy(&s.traffic_policy),
            "port_level_settings": port_level(&s.port_level_settings),
        })).collect::<Vec<_>>(),
    })
}

/// A `trafficPolicy`'s blocks; a block it does not set is left out.
fn traffic_policy(policy: &crate::config::TrafficPolicy) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(lb) = &policy.load_balancer {
        let value = match &lb.consistent_hash {
            Some(h) => json!({ "consistent_hash": {
                "key": h.key.describe(),
                "table": h.table.describe(),
            } }),
            None => json!({ "simple": lb.simple.istio_name() }),
        };
        out.insert("load_balancer".into(), value);
    }
    if let Some(pool) = &policy.connection_pool {
        out.insert(
            "connection_pool".into(),
            json!({
                "max_connections": pool.max_connections,
                "connect_timeout_ms": pool.connect_timeout.map(|d| d.as_millis() as u64),
                "idle_timeout_ms": pool.idle_timeout.map(|d| d.as_millis() as u64),
                "h2_upgrade": pool.h2_upgrade,
                "http1_max_pending_requests": pool.requests.max_pending,
                "max_requests_per_connection": pool.requests.max_requests_per_connection,
                "max_retries": pool.requests.max_retries,
                "http2_max_requests": pool.requests.max_requests,
            }),
        );
    }
    if let Some(tls) = &policy.tls {
        out.insert(
            "tls".into(),
            json!({
                "mode": tls.mode.istio_name(),
                "credential": match &tls.credential {
                    ClientCredential::Files { cert_and_key, ca } => json!({
                        "client_certificate": cert_and_key.as_ref().map(|(c, _)| c.display().to_string()),
                        "private_key": cert_and_key.as_ref().map(|(_, k)| k.display().to_string()),
                        "ca_certificates": ca.as_ref().map(|c| c.display().to_string()),
                    }),
                    ClientCredential::Named(name) => json!({ "credential_name": name }),
                },
                "ca_crl": tls.ca_crl.as_ref().map(|c| c.display().to_string()),
                "sni": tls.sni,
                "subject_alt_names": tls.subject_alt_names,
                "insecure_skip_verify": tls.insecure_skip_verify,
            }),
        );
    }
    if let Some(od) = &policy.outlier_detection {
        out.insert(
            "outlier_detection".into(),
            json!({
                "consecutive_5xx_errors": od.consecutive_5xx,
                "consecutive_gateway_errors": od.consecutive_gateway,
                "interval_ms": od.interval.as_millis() as u64,
                "base_ejection_time_ms": od.base_ejection_time.as_millis() as u64,
                "max_ejection_percent": od.max_ejection_percent,
                "min_health_percent": od.min_health_percent,
            }),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_309_546), "2026-11-22T01:05:46Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        // Extreme values format without panicking.
        let _ = rfc3339(i64::MAX);
        let _ = rfc3339(i64::MIN);
    }

    #[test]
    fn days_count_down_and_go_negative() {
        assert_eq!(days_until(10 * SECONDS_PER_DAY, 0), 10);
        assert_eq!(days_until(10 * SECONDS_PER_DAY, 1), 9);
        assert_eq!(days_until(0, 1), -1);
        assert_eq!(days_until(0, SECONDS_PER_DAY + 1), -2);
        assert_eq!(
            days_until(i64::MIN, i64::MAX),
            i64::MIN.div_euclid(SECONDS_PER_DAY)
        );
    }
}
