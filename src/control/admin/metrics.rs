//! `GET /stats/prometheus`: the shards' counters, the routes' counters, reload
//! outcomes and certificate expiry in the Prometheus text exposition format 0.0.4.
//! Every family has `# HELP` and `# TYPE` lines and a `ringress_` name (per-cluster
//! health and outlier detection keep Envoy's `envoy_cluster_` names); label values
//! are escaped as the format requires (`\\`, `\"`, `\n`). Reads relaxed atomics that
//! the shards write: the numbers are each exact, though not one instant's photograph.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::UNIX_EPOCH;

use crate::auth::{self, SourceKeys};
use crate::control::status::Status;
use crate::shard::ShardStats;
use crate::tls::{CertInfo, HandshakeFailure};

/// Renders every family.
pub(super) fn render(status: &Status, now: i64) -> String {
    let mut out = Out::default();
    let (snapshot, _) = status.serving();
    let shards = &status.shards;

    out.family(
        "ringress_responses_total",
        "counter",
        "Responses sent to clients (one per request), by shard and status class.",
    );
    for (id, stats) in shards.iter().enumerate() {
        for (class, count) in stats.responses.classes() {
            out.sample(
                "ringress_responses_total",
                &[("shard", &id.to_string()), ("class", class)],
                count,
            );
        }
    }

    out.family(
        "ringress_route_responses_total",
        "counter",
        "Responses to requests a route matched, by VirtualService, rule index and status class (restarts at each reload).",
    );
    let mut per_route: BTreeMap<(&str, usize), [u64; 5]> = BTreeMap::new();
    for table in snapshot.routes.values() {
        for route in table.routes() {
            let sums = per_route
                .entry((route.virtual_service.as_str(), route.rule))
                .or_default();
            for (sum, (_, count)) in sums.iter_mut().zip(route.stats.classes()) {
                *sum = sum.saturating_add(count);
            }
        }
    }
    const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    for ((virtual_service, rule), sums) in &per_route {
        for (class, count) in CLASSES.iter().zip(sums) {
            out.sample(
                "ringress_route_responses_total",
                &[
                    ("virtual_service", virtual_service),
                    ("rule", &rule.to_string()),
                    ("class", class),
                ],
                *count,
            );
        }
    }

    out.family(
        "ringress_tls_handshakes_total",
        "counter",
        "TLS handshakes by shard, outcome (ok, failed) and negotiated version.",
    );
    for (id, stats) in shards.iter().enumerate() {
        let shard = id.to_string();
        for (outcome, version, counter) in [
            ("ok", "TLSv1.2", &stats.handshakes_tls12),
            ("ok", "TLSv1.3", &stats.handshakes_tls13),
        ] {
            out.sample(
                "ringress_tls_handshakes_total",
                &[
                    ("shard", &shard),
                    ("outcome", outcome),
                    ("version", version),
                ],
                ShardStats::get(counter),
            );
        }
        out.sample(
            "ringress_tls_handshakes_total",
            &[("shard", &shard), ("outcome", "failed")],
            ShardStats::get(&stats.handshakes_failed),
        );
    }

    out.family(
        "ringress_connections_refused_total",
        "counter",
        "Client connections reset at accept for being over a cap, by shard and reason (shard_limit: --max-connections, client_limit: --max-connections-per-client).",
    );
    for (id, stats) in shards.iter().enumerate() {
        let shard = id.to_string();
        for (reason, counter) in [
            ("shard_limit", &stats.refused_shard_full),
            ("client_limit", &stats.refused_client_full),
        ] {
            out.sample(
                "ringress_connections_refused_total",
                &[("shard", &shard), ("reason", reason)],
                ShardStats::get(counter),
            );
        }
    }

    out.family(
        "ringress_tls_handshake_failures_total",
        "counter",
        "Failed TLS handshakes by shard and reason (the log line of each says more).",
    );
    for (id, stats) in shards.iter().enumerate() {
        let shard = id.to_string();
        for (failure, counter) in HandshakeFailure::ALL.iter().zip(&stats.handshake_failures) {
            out.sample(
                "ringress_tls_handshake_failures_total",
                &[("shard", &shard), ("reason", failure.label())],
                ShardStats::get(counter),
            );
        }
    }

    for (name, help, labels, counters) in [
        (
            "ringress_authn_requests_total",
            "Requests by shard and end-user authentication outcome (allowed: a token verified; no_token; cors_preflight_bypassed; the refusals by reason).",
            &auth::AUTHN_OUTCOMES[..],
            (|s: &ShardStats| &s.authn[..]) as fn(&ShardStats) -> &[AtomicU64],
        ),
        (
            "ringress_l4_connections_total",
            "TLS passthrough and TCP connections by shard and outcome (relayed; no_route: Envoy's NR; no_healthy_upstream: UH; upstream_overflow: UO; upstream_connect_failed: UF; bad_client_hello, hello_timeout, client_closed: before a ClientHello was read).",
            &crate::proxy::L4_OUTCOMES[..],
            |s: &ShardStats| &s.l4[..],
        ),
        (
            "ringress_authz_requests_total",
            "Requests by shard and AuthorizationPolicy outcome (denied_by_policy: a DENY rule matched; denied_no_allow_match: no ALLOW rule did; audited: AUDIT rules that matched).",
            &auth::authz::AUTHZ_OUTCOMES[..],
            |s: &ShardStats| &s.authz[..],
        ),
    ] {
        out.family(name, "counter", help);
        for (id, stats) in shards.iter().enumerate() {
            let shard = id.to_string();
            for (outcome, counter) in labels.iter().zip(counters(stats)) {
                out.sample(
                    name,
                    &[("shard", &shard), ("outcome", outcome)],
                    ShardStats::get(counter),
                );
            }
        }
    }

    for (name, kind, help, counter) in [
        (
            "ringress_active_connections",
            "gauge",
            "Client connections open now, by shard.",
            (|s: &ShardStats| ShardStats::get(&s.active_connections)) as fn(&ShardStats) -> u64,
        ),
        (
            "ringress_accepted_connections_total",
            "counter",
            "Client connections accepted, by shard.",
            |s: &ShardStats| ShardStats::get(&s.accepted),
        ),
        (
            "ringress_upstream_connect_failures_total",
            "counter",
            "Upstream connects that failed or timed out, by shard.",
            |s: &ShardStats| ShardStats::get(&s.upstream_connect_failures),
        ),
        (
            "ringress_upstream_tls_failures_total",
            "counter",
            "Upstream TLS handshakes that failed (DestinationRule tls), among the connect failures, by shard.",
            |s: &ShardStats| ShardStats::get(&s.upstream_tls_failures),
        ),
        (
            "ringress_upstream_overflows_total",
            "counter",
            "Requests answered 503 because their cluster was full: maxConnections open and http1MaxPendingRequests waiting, or http2MaxRequests in flight, by shard.",
            |s: &ShardStats| ShardStats::get(&s.upstream_overflows),
        ),
        (
            "ringress_l4_received_bytes_total",
            "counter",
            "Bytes relayed from clients to upstreams on TLS passthrough and TCP connections, by shard.",
            |s: &ShardStats| ShardStats::get(&s.l4_bytes_received),
        ),
        (
            "ringress_l4_sent_bytes_total",
            "counter",
            "Bytes relayed from upstreams to clients on TLS passthrough and TCP connections, by shard.",
            |s: &ShardStats| ShardStats::get(&s.l4_bytes_sent),
        ),
        (
            "ringress_upstream_retry_overflows_total",
            "counter",
            "Retries not made because their cluster had connectionPool.http.maxRetries retries in flight, by shard.",
            |s: &ShardStats| ShardStats::get(&s.retry_overflows),
        ),
        (
            "ringress_access_log_dropped_total",
            "counter",
            "Access log lines dropped because the writer fell behind (a full disk, a stuck pipe), by shard.",
            |s: &ShardStats| ShardStats::get(&s.access_log_dropped),
        ),
        (
            "ringress_accept_failures_total",
            "counter",
            "Accepts that failed (EMFILE, ENFILE...), by shard.",
            |s: &ShardStats| ShardStats::get(&s.accept_failures),
        ),
        (
            "ringress_fault_delays_injected_total",
            "counter",
            "Requests a route's fault delayed, by shard.",
            |s: &ShardStats| ShardStats::get(&s.fault_delays_injected),
        ),
        (
            "ringress_fault_aborts_injected_total",
            "counter",
            "Requests a route's fault aborted, by shard.",
            |s: &ShardStats| ShardStats::get(&s.fault_aborts_injected),
        ),
        (
            "ringress_cors_origin_valid_total",
            "counter",
            "CORS requests whose Origin a route's corsPolicy allows, by shard.",
            |s: &ShardStats| ShardStats::get(&s.cors_origin_valid),
        ),
        (
            "ringress_cors_origin_invalid_total",
            "counter",
            "CORS requests whose Origin a route's corsPolicy does not allow, by shard.",
            |s: &ShardStats| ShardStats::get(&s.cors_origin_invalid),
        ),
        (
            "ringress_mirror_sent_total",
            "counter",
            "Mirrored copies of requests the mirror answered, by shard.",
            |s: &ShardStats| ShardStats::get(&s.mirror_sent),
        ),
        (
            "ringress_mirror_failed_total",
            "counter",
            "Mirrored copies of requests that failed (no endpoint, connect, I/O, timeout), by shard.",
            |s: &ShardStats| ShardStats::get(&s.mirror_failed),
        ),
        (
            "ringress_mirror_skipped_total",
            "counter",
            "Requests of a mirror's share not mirrored (body not whole with the head, too large, an upgrade, too many in flight), by shard.",
            |s: &ShardStats| ShardStats::get(&s.mirror_skipped),
        ),
        (
            "ringress_connection_panics_total",
            "counter",
            "Connection tasks that panicked, by shard (each closed only its own connection).",
            |s: &ShardStats| ShardStats::get(&s.connection_panics),
        ),
        (
            "ringress_shard_running",
            "gauge",
            "1 while the shard thread serves, 0 once it ended.",
            |s: &ShardStats| u64::from(s.is_running()),
        ),
    ] {
        out.family(name, kind, help);
        for (id, stats) in shards.iter().enumerate() {
            out.sample(name, &[("shard", &id.to_string())], counter(stats));
        }
    }

    out.family(
        "ringress_reloads_total",
        "counter",
        "Configuration reloads by outcome (a failed one keeps the previous configuration).",
    );
    for (outcome, counter) in [
        ("ok", &status.reloads_ok),
        ("failed", &status.reloads_failed),
    ] {
        out.sample(
            "ringress_reloads_total",
            &[("outcome", outcome)],
            ShardStats::get(counter),
        );
    }

    out.family(
        "ringress_last_reload_failure_timestamp_seconds",
        "gauge",
        "Unix time of the last failed reload, 0 if none failed.",
    );
    let last_failure = status
        .last_failure()
        .and_then(|r| r.at.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    out.sample(
        "ringress_last_reload_failure_timestamp_seconds",
        &[],
        last_failure,
    );

    clusters(&mut out, &snapshot);

    out.family(
        "ringress_config_generation",
        "gauge",
        "Generation of the configuration being served (1 at start, +1 per successful reload).",
    );
    out.sample("ringress_config_generation", &[], snapshot.generation);

    // Remote JWT key sets, as the control thread last fetched them.
    let ring = status.keys();
    let secs = |t: Option<std::time::SystemTime>| {
        t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs())
    };
    for (name, kind, help, value) in [
        (
            "ringress_jwks_keys",
            "gauge",
            "Keys of each remote JWT key set in use (0: none ever loaded, its tokens are refused), by source URL.",
            (&|s: &SourceKeys| s.keys.as_ref().map_or(0, |k| k.keys.len() as u64))
                as &dyn Fn(&SourceKeys) -> u64,
        ),
        (
            "ringress_jwks_fetch_failing",
            "gauge",
            "1 when the last fetch of a remote JWT key set failed (the keys fetched before stay in use), by source URL.",
            &|s: &SourceKeys| u64::from(s.last_error.is_some()),
        ),
        (
            "ringress_jwks_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last successful fetch of a remote JWT key set (0: never), by source URL.",
            &|s: &SourceKeys| secs(s.last_success),
        ),
    ]
    .into_iter()
    .filter(|_| !ring.sources.is_empty())
    {
        out.family(name, kind, help);
        for (url, state) in &ring.sources {
            out.sample(name, &[("source", url)], value(state));
        }
    }

    out.family(
        "ringress_start_time_seconds",
        "gauge",
        "Unix time ringress started.",
    );
    let started = status
        .started
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    out.sample("ringress_start_time_seconds", &[], started);

    out.family(
        "ringress_certificate_expiry_seconds",
        "gauge",
        "Seconds until a served certificate (role leaf or intermediate), a client CA (role client_ca) or the client certificate presented to an upstream (role upstream_client; port and hosts its cluster's) expires, negative once expired.",
    );
    let mut seen = BTreeSet::new();
    for listener in &snapshot.listeners {
        let port = listener.port().to_string();
        for cert in &listener.certificates {
            let hosts: Vec<String> = cert.hosts.iter().map(ToString::to_string).collect();
            let hosts = hosts.join(",");
            let chain = cert.chain.iter().enumerate().map(|(i, info)| {
                let role = if i == 0 { "leaf" } else { "intermediate" };
                (role, cert.source.as_str(), info)
            });
            let cas = cert.client_ca.iter().flat_map(|ca| {
                ca.certificates
                    .iter()
                    .map(|info| ("client_ca", ca.source.as_str(), info))
            });
            for (role, source, info) in chain.chain(cas) {
                let labels = [
                    ("port", port.as_str()),
                    ("hosts", hosts.as_str()),
                    ("source", source),
                    ("serial", info.serial.as_str()),
                    ("role", role),
                ];
                // The same server twice on a port would repeat a series; the format
                // forbids that.
                if seen.insert(labels.map(|(_, v)| v.to_owned())) {
                    out.sample_signed(
                        "ringress_certificate_expiry_seconds",
                        &labels,
                        seconds_until(info, now),
                    );
                }
            }
        }
    }
    // The client certificates ringress presents to upstreams (DestinationRule tls).
    for (_, cluster) in snapshot.clusters.iter() {
        let client = cluster
            .tls
            .as_deref()
            .and_then(|t| t.client_certificate.as_ref());
        let Some((source, Some(info))) = client else {
            continue;
        };
        let port = cluster.port.to_string();
        let labels = [
            ("port", port.as_str()),
            ("hosts", cluster.host.as_str()),
            ("source", source.as_str()),
            ("serial", info.serial.as_str()),
            ("role", "upstream_client"),
        ];
        if seen.insert(labels.map(|(_, v)| v.to_owned())) {
            out.sample_signed(
                "ringress_certificate_expiry_seconds",
                &labels,
                seconds_until(info, now),
            );
        }
    }
    out.0
}

fn seconds_until(info: &CertInfo, now: i64) -> i64 {
    info.not_after_unix.saturating_sub(now)
}

/// The text being written.
/// Envoy's per-cluster health gauges and outlier-detection counters, by Istio's
/// cluster name (they restart at each reload, with the tables).
fn clusters(out: &mut Out, snapshot: &crate::snapshot::Snapshot) {
    let now = std::time::Instant::now();
    type Value = fn(&crate::upstream::Cluster, std::time::Instant) -> u64;
    let families: [(&str, &str, &str, Value); 8] = [
        (
            "envoy_cluster_membership_total",
            "gauge",
            "Endpoints of the cluster.",
            |c, _| c.endpoints.len() as u64,
        ),
        (
            "envoy_cluster_membership_healthy",
            "gauge",
            "Endpoints of the cluster neither ejected by outlier detection nor failing their health check.",
            |c, now| c.health.healthy(now) as u64,
        ),
        (
            "envoy_cluster_outlier_detection_ejections_active",
            "gauge",
            "Endpoints ejected now.",
            |c, now| c.health.ejected(now) as u64,
        ),
        (
            "envoy_cluster_outlier_detection_ejections_enforced_total",
            "counter",
            "Ejections made by outlier detection.",
            |c, _| c.health.ejections_enforced.load(Relaxed),
        ),
        (
            "envoy_cluster_outlier_detection_ejections_overflow",
            "counter",
            "Ejections not made because maxEjectionPercent of the endpoints were ejected.",
            |c, _| c.health.ejections_overflow.load(Relaxed),
        ),
        (
            "envoy_cluster_health_check_attempt",
            "counter",
            "Active health-check probes made (ringress.io/health-check-path).",
            |c, _| c.health.hc_attempts.load(Relaxed),
        ),
        (
            "envoy_cluster_health_check_success",
            "counter",
            "Health-check probes answered 200 in time.",
            |c, _| c.health.hc_successes.load(Relaxed),
        ),
        (
            "envoy_cluster_health_check_failure",
            "counter",
            "Health-check probes that failed.",
            |c, _| c.health.hc_failures.load(Relaxed),
        ),
    ];
    for (name, kind, help, value) in families {
        out.family(name, kind, help);
        for (_, cluster) in snapshot.clusters.iter() {
            out.sample(
                name,
                &[("cluster_name", cluster.istio_name.as_str())],
                value(cluster, now),
            );
        }
    }
}

#[derive(Default)]
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.labels(name, labels);
        let _ = writeln!(self.0, " {value}");
    }

    fn sample_signed(&mut self, name: &str, labels: &[(&str, &str)], value: i64) {
        self.labels(name, labels);
        let _ = writeln!(self.0, " {value}");
    }

    fn labels(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.0.push_str(name);
        if labels.is_empty() {
            return;
        }
        self.0.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            let _ = write!(self.0, "{label}=\"{}\"", escape_label(value));
        }
        self.0.push('}');
    }
}

/// A label value as the text format writes it: backslash, double quote and line feed
/// escaped.
pub(super) fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A `# HELP` text: backslash and line feed escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("plain"), "plain");
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nbreak"), "line\\nbreak");
        assert_eq!(escape_label("größe ✓"), "größe ✓");
    }

    #[test]
    fn samples_are_written_in_the_text_format() {
        let mut out = Out::default();
        out.family("ringress_x_total", "counter", "An x.\nSecond line \\.");
        out.sample("ringress_x_total", &[("a", "1"), ("b", "q\"")], 7);
        out.sample_signed("ringress_y", &[], -3);
        assert_eq!(
            out.0,
            "# HELP ringress_x_total An x.\\nSecond line \\\\.\n# TYPE ringress_x_total counter\nringress_x_total{a=\"1\",b=\"q\\\"\"} 7\nringress_y -3\n"
        );
    }
}
