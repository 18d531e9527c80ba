//! `ringress check`: validates a configuration exactly as `run` would (certificates
//! load, keys match, each host is covered, every destination resolves, routes compile)
//! and describes what would be served on which port with which certificate.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::{self, Config, Protocol, RouteAction};
use crate::snapshot::Snapshot;
use crate::tls;

/// Loads and compiles the configuration; returns the description `check` prints.
pub fn check(config_path: &Path, secrets_dir: Option<&Path>) -> anyhow::Result<String> {
    let config = config::load(config_path)?;
    let snapshot = Snapshot::build(&config, secrets_dir, &mut tls::Ticketers::new(), 1)?;
    Ok(describe(&config, &snapshot))
}

/// What a snapshot serves, for people: listeners, certificates, routes, clusters.
fn describe(config: &Config, snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: OK ({} Gateway, {} VirtualService, {} ServiceEntry, {} DestinationRule)",
        config.source.display(),
        config.gateways.len(),
        config.virtual_services.len(),
        config.service_entries.len(),
        config.destination_rules.len()
    );
    for listener in &snapshot.listeners {
        let protocol = match listener.protocol {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
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
        describe_routes(config, listener.port(), &mut out);
    }
    if !snapshot.clusters.is_empty() {
        let _ = writeln!(out, "\nclusters");
        for (_, cluster) in snapshot.clusters.iter() {
            let endpoints: Vec<String> =
                cluster.endpoints.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "  {}  {}  {}",
                cluster.name,
                cluster.lb.istio_name(),
                endpoints.join(", ")
            );
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
        }
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
    if parts.is_empty() {
        "every request".to_owned()
    } else {
        parts.join(", ")
    }
}
