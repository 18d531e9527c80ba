//! `ringress check`: validates a configuration exactly as `run` would (certificates
//! load, keys match, each host is covered, every destination resolves, routes compile)
//! and describes what would be served on which port with which certificate, which
//! JWT issuers are trusted (their remote key sets fetched, as `run` would at start),
//! which authorization policies decide requests, and where session-ticket keys come
//! from (a `--session-ticket-keys` file: its name and number of keys, never a secret).

use std::fmt::Write as _;
use std::path::Path;

use crate::auth::{KeyRing, KeySet, fetch};
use crate::config::{
    self, AuthorizationPolicy, AuthzRule, ConditionValues, Config, HostPattern, IpBlock,
    JwksSource, Protocol, RouteAction, ValueMatch, Values,
};
use crate::snapshot::Snapshot;
use crate::tls;

/// Loads and compiles the configuration (and reads the session-ticket key file, when
/// there is one); returns the description `check` prints.
pub fn check(
    config_path: &Path,
    secrets_dir: Option<&Path>,
    session_ticket_keys: Option<&Path>,
) -> anyhow::Result<String> {
    let config = config::load(config_path)?;
    let mut ticketers = tls::Ticketers::load(session_ticket_keys)?;
    let snapshot = Snapshot::build(&config, secrets_dir, &mut ticketers, 1)?;
    let mut out = describe(&config, &snapshot);
    if let Some(keys) = ticketers.file_keys() {
        let _ = writeln!(
            out,
            "\nsession tickets\n  keys from {}: {} key{}, new tickets sealed with the first (name {}…)",
            keys.path().display(),
            keys.len(),
            if keys.len() == 1 { "" } else { "s" },
            keys.sealing_key_id()
        );
    }
    let keys = fetch::refresh(&config, &KeyRing::default(), false);
    describe_authentication(&config, &keys, &mut out);
    describe_authorization(&config, &mut out);
    Ok(out)
}

/// Every JWT issuer, where its keys come from and whether they loaded.
fn describe_authentication(config: &Config, keys: &KeyRing, out: &mut String) {
    let mut providers = config.jwt_providers().peekable();
    if providers.peek().is_none() {
        return;
    }
    let _ = writeln!(
        out,
        "
authentication (every listener)"
    );
    if let Some(policy) = &config.origin_policy {
        let _ = writeln!(
            out,
            "  {}: a token of one origin is required{}",
            policy.origin,
            if policy.optional {
                " (originIsOptional)"
            } else {
                ""
            }
        );
    }
    for provider in providers {
        let _ = writeln!(
            out,
            "  issuer {}  ({} {} {})",
            provider.issuer, provider.origin.kind, provider.origin.name, provider.path
        );
        let state = match &provider.keys {
            JwksSource::Inline(text) => match KeySet::parse(text) {
                Ok(set) => format!("inline jwks, kids {:?}", set.kids()),
                Err(e) => format!("inline jwks unusable: {e}"),
            },
            source => {
                let url = source.url().unwrap_or_default();
                match keys.sources.get(url) {
                    Some(state) => match (&state.keys, &state.last_error) {
                        (Some(set), _) => format!(
                            "{url}: fetched, kids {:?}{}",
                            set.kids(),
                            state
                                .jwks_uri
                                .as_deref()
                                .filter(|u| *u != url)
                                .map(|u| format!(" (jwks_uri {u})"))
                                .unwrap_or_default()
                        ),
                        (None, Some(error)) => format!(
                            "{url}: FETCH FAILED: {error} (its tokens are refused until a fetch succeeds)"
                        ),
                        (None, None) => format!("{url}: not fetched"),
                    },
                    None => format!("{url}: not fetched"),
                }
            }
        };
        let _ = writeln!(out, "    keys: {state}");
    }
}

/// Every AuthorizationPolicy, in the order they decide: DENY, ALLOW, AUDIT.
fn describe_authorization(config: &Config, out: &mut String) {
    if config.authorization_policies.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "
authorization (every listener; DENY first, then ALLOW must match if any, AUDIT records)"
    );
    let mut policies: Vec<&AuthorizationPolicy> = config.authorization_policies.iter().collect();
    policies.sort_by_key(|p| match p.action {
        config::AuthzAction::Deny => 0,
        config::AuthzAction::Allow => 1,
        config::AuthzAction::Audit => 2,
    });
    for policy in policies {
        let _ = writeln!(
            out,
            "  {} {}/{}{}",
            policy.action.name(),
            policy.namespace,
            policy.name,
            if policy.rules.is_empty() {
                "  (no rules: matches nothing)"
            } else {
                ""
            }
        );
        for (i, rule) in policy.rules.iter().enumerate() {
            let _ = writeln!(out, "    rule[{i}] {}", describe_rule(rule));
        }
    }
}

/// A rule on one line: `from … to … when …`, `any request` for an empty rule.
fn describe_rule(rule: &AuthzRule) -> String {
    let mut parts = Vec::new();
    for source in &rule.from {
        let mut fields = Vec::new();
        push_values(&mut fields, "principals", &source.principals, show_match);
        push_values(
            &mut fields,
            "requestPrincipals",
            &source.request_principals,
            show_match,
        );
        push_values(&mut fields, "namespaces", &source.namespaces, show_match);
        push_values(&mut fields, "ipBlocks", &source.ip_blocks, show_block);
        push_values(
            &mut fields,
            "remoteIpBlocks",
            &source.remote_ip_blocks,
            show_block,
        );
        parts.push(format!("from {}", fields.join(" ")));
    }
    for operation in &rule.to {
        let mut fields = Vec::new();
        push_values(&mut fields, "hosts", &operation.hosts, show_match);
        push_values(&mut fields, "ports", &operation.ports, u16::to_string);
        push_values(&mut fields, "methods", &operation.methods, show_match);
        push_values(&mut fields, "paths", &operation.paths, show_match);
        parts.push(format!("to {}", fields.join(" ")));
    }
    for condition in &rule.when {
        let mut fields = Vec::new();
        let key = condition.key.istio_name();
        match &condition.values {
            ConditionValues::Strings(v) => push_values(&mut fields, &key, v, show_match),
            ConditionValues::Ips(v) => push_values(&mut fields, &key, v, show_block),
            ConditionValues::Ports(v) => push_values(&mut fields, &key, v, u16::to_string),
        }
        parts.push(format!("when {}", fields.join(" ")));
    }
    if parts.is_empty() {
        return "any request".to_owned();
    }
    parts.join("; ")
}

fn push_values<T>(
    out: &mut Vec<String>,
    name: &str,
    values: &Values<T>,
    show: impl Fn(&T) -> String,
) {
    let list = |v: &[T]| v.iter().map(&show).collect::<Vec<_>>().join(", ");
    if !values.values.is_empty() {
        out.push(format!("{name}=[{}]", list(&values.values)));
    }
    if !values.not_values.is_empty() {
        out.push(format!("{name}!=[{}]", list(&values.not_values)));
    }
}

fn show_match(m: &ValueMatch) -> String {
    match m {
        ValueMatch::Exact(e) => e.clone(),
        ValueMatch::Prefix(p) => format!("{p}*"),
        ValueMatch::Suffix(s) => format!("*{s}"),
        ValueMatch::Any => "*".to_owned(),
    }
}

fn show_block(b: &IpBlock) -> String {
    format!("{}/{}", b.addr, b.prefix)
}

/// What a snapshot serves, for people: listeners, certificates, routes, clusters.
fn describe(config: &Config, snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: OK ({} Gateway, {} VirtualService, {} ServiceEntry, {} DestinationRule{})",
        config.source.display(),
        config.gateways.len(),
        config.virtual_services.len(),
        config.service_entries.len(),
        config.destination_rules.len(),
        security_counts(config)
    );
    for listener in &snapshot.listeners {
        let protocol = match listener.protocol {
            Protocol::TlsPassthrough => "TLS passthrough",
            other => other.istio_name(),
        };
        let _ = writeln!(out, "\nlistener {} {protocol}", listener.addr);
        for cert in &listener.certificates {
            let hosts: Vec<String> = cert.hosts.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "  {}  {}  certificate {}",
                hosts.join(", "),
                cert.mode.istio_name(),
                cert.source
            );
            if let Some(leaf) = &cert.leaf {
                let expiry = if leaf.days_until_expiry < 0 {
                    format!("EXPIRED {} days ago", -leaf.days_until_expiry)
                } else {
                    format!("expires in {} days", leaf.days_until_expiry)
                };
                let _ = writeln!(
                    out,
                    "    subject {}; SANs {}; serial {}; {expiry}",
                    leaf.subject,
                    leaf.sans.join(", "),
                    leaf.serial,
                );
                for warning in &leaf.warnings {
                    let _ = writeln!(out, "    warning: {warning}");
                }
            }
        }
        if listener.protocol.is_l4() {
            describe_l4_routes(snapshot, listener.port(), &mut out);
        } else {
            describe_routes(config, listener.port(), &mut out);
        }
    }
    if !snapshot.clusters.is_empty() {
        let _ = writeln!(out, "\nclusters");
        for (_, cluster) in snapshot.clusters.iter() {
            let endpoints: Vec<String> =
                cluster.endpoints.iter().map(ToString::to_string).collect();
            let endpoints = match endpoints.is_empty() {
                true => "no endpoints (503 no healthy upstream)".to_owned(),
                false => endpoints.join(", "),
            };
            let _ = writeln!(
                out,
                "  {} ({})  {}  {}",
                cluster.name,
                cluster.istio_name,
                crate::upstream::cluster::balancing_name(cluster),
                endpoints
            );
            for line in cluster.tls.iter().flat_map(|tls| tls.describe()) {
                let _ = writeln!(out, "    {line}");
            }
            let _ = writeln!(out, "    limits: {}", cluster.pool.describe());
            if let Some(hc) = cluster.health.health_check() {
                let _ = writeln!(
                    out,
                    "    health check: GET {} every {:?}, timeout {:?}, out after {} failures, back after {} passes",
                    hc.path, hc.interval, hc.timeout, hc.unhealthy_threshold, hc.healthy_threshold
                );
            }
            if let Some(od) = cluster.health.outlier() {
                let count = |n: Option<u32>| n.map_or("off".to_owned(), |n| n.to_string());
                let _ = writeln!(
                    out,
                    "    outlierDetection: consecutive5xxErrors {}, consecutiveGatewayErrors {}, interval {:?}, baseEjectionTime {:?}, maxEjectionPercent {}, minHealthPercent {}",
                    count(od.consecutive_5xx),
                    count(od.consecutive_gateway),
                    od.interval,
                    od.base_ejection_time,
                    od.max_ejection_percent,
                    od.min_health_percent
                );
            }
        }
    }
    out
}

/// `, 1 RequestAuthentication, 2 AuthorizationPolicy` for the kinds present.
fn security_counts(config: &Config) -> String {
    let mut out = String::new();
    for (n, kind) in [
        (
            config.request_authentications.len(),
            "RequestAuthentication",
        ),
        (config.authorization_policies.len(), "AuthorizationPolicy"),
        (usize::from(config.origin_policy.is_some()), "Policy"),
    ] {
        if n > 0 {
            let _ = write!(out, ", {n} {kind}");
        }
    }
    out
}

/// The VirtualService rules bound to a Gateway with a server on `port`.
fn describe_routes(config: &Config, port: u16, out: &mut String) {
    let gateways: Vec<&str> = config
        .gateways
        .iter()
        .filter(|g| g.servers.iter().any(|s| s.port == port))
        .map(|g| g.name.as_str())
        .collect();
    for vs in &config.virtual_services {
        if !vs.gateways.iter().any(|g| gateways.contains(&g.as_str())) {
            continue;
        }
        let hosts: Vec<String> = vs.hosts.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "  VirtualService {} ({})", vs.name, hosts.join(", "));
        for (index, rule) in vs.http.iter().enumerate() {
            let condition = if rule.matches.is_empty() {
                "every request".to_owned()
            } else {
                rule.matches
                    .iter()
                    .map(describe_match)
                    .collect::<Vec<_>>()
                    .join(" or ")
            };
            let action = match &rule.action {
                RouteAction::Route(destinations) => destinations
                    .iter()
                    .map(|d| match d.port {
                        Some(port) => format!("{}:{port} ({}%)", d.host, d.weight),
                        None => format!("{} ({}%)", d.host, d.weight),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                RouteAction::Redirect(r) => format!("redirect {}", r.code),
                RouteAction::DirectResponse { status, .. } => format!("respond {status}"),
            };
            let _ = writeln!(out, "    http[{index}]: {condition} -> {action}");
            describe_policies(&rule.policies, out);
        }
    }
}

/// The `tls[]`/`tcp[]` routes a passthrough or TCP port serves, as compiled: which
/// SNI (or every connection) goes where.
fn describe_l4_routes(snapshot: &Snapshot, port: u16, out: &mut String) {
    let entries = snapshot
        .l4_routes
        .get(&port)
        .map(|t| t.entries())
        .unwrap_or_default();
    if entries.is_empty() {
        let _ = writeln!(
            out,
            "  no tls or tcp route applies: every connection is closed"
        );
    }
    for (pattern, target) in entries {
        let condition = match (target.section, pattern) {
            ("tcp", _) => "every connection".to_owned(),
            (_, HostPattern::Any) => "any SNI (or none)".to_owned(),
            (_, pattern) => format!("SNI {pattern}"),
        };
        let destinations: Vec<String> = target
            .clusters
            .iter()
            .map(|(id, weight)| format!("{} ({weight}%)", snapshot.clusters.get(id).name))
            .collect();
        let _ = writeln!(
            out,
            "  {condition} -> VirtualService {} {}[{}] -> {}",
            target.virtual_service,
            target.section,
            target.rule,
            destinations.join(", ")
        );
    }
}

/// One `match[]` entry in words: `uri prefix /status, method exact GET`.
fn describe_match(m: &config::RouteMatch) -> String {
    let mut parts = Vec::new();
    let fields = [
        ("uri", &m.uri),
        ("authority", &m.authority),
        ("method", &m.method),
        ("scheme", &m.scheme),
    ];
    for (name, condition) in fields {
        if let Some(condition) = condition {
            parts.push(format!("{name} {condition}"));
        }
    }
    for (name, condition) in &m.headers {
        parts.push(format!("header {name} {condition}"));
    }
    for (name, condition) in &m.without_headers {
        parts.push(format!("without header {name} {condition}"));
    }
    for (name, condition) in &m.query_params {
        parts.push(format!("query {name} {condition}"));
    }
    if let Some(port) = m.port {
        parts.push(format!("port {port}"));
    }
    if !m.gateways.is_empty() {
        parts.push(format!("through {}", m.gateways.join(", ")));
    }
    if parts.is_empty() {
        "every request".to_owned()
    } else {
        parts.join(", ")
    }
}

/// A rule's `fault`, `corsPolicy` and mirrors, one line each, under the rule.
fn describe_policies(policies: &config::RoutePolicies, out: &mut String) {
    if let Some(fault) = &policies.fault {
        let mut parts = Vec::new();
        if let Some(d) = &fault.delay {
            parts.push(format!(
                "delay {:?} for {}% of requests",
                d.fixed,
                d.share.percent()
            ));
        }
        if let Some(a) = &fault.abort {
            let answer = match a.grpc_status {
                Some(code) => format!("grpc-status {code}"),
                None => a.status.to_string(),
            };
            parts.push(format!(
                "abort {answer} for {}% of requests",
                a.share.percent()
            ));
        }
        let _ = writeln!(out, "      fault: {}", parts.join(", then "));
    }
    if let Some(cors) = &policies.cors {
        let origins: Vec<String> = cors.allow_origins.iter().map(ToString::to_string).collect();
        let mut line = format!("      cors: origins [{}]", origins.join("; "));
        for (name, value) in [
            ("methods", &cors.allow_methods),
            ("headers", &cors.allow_headers),
            ("expose", &cors.expose_headers),
        ] {
            if !value.is_empty() {
                let _ = write!(line, ", {name} {value}");
            }
        }
        if let Some(age) = cors.max_age {
            let _ = write!(line, ", max age {age}s");
        }
        if cors.allow_credentials == Some(true) {
            line.push_str(", credentials");
        }
        if !cors.forward_unmatched_preflights {
            line.push_str(", unmatched preflights answered");
        }
        let _ = writeln!(out, "{line}");
    }
    for m in &policies.mirrors {
        let port = m.port.map(|p| format!(":{p}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "      mirror: {}{port} ({}% of requests)",
            m.host,
            m.share.percent()
        );
    }
}
