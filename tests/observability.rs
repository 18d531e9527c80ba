//! What an operator plugs in: the Grafana dashboard (`deploy/grafana/ringress.json`)
//! names only metrics and labels a real scrape of `/stats/prometheus` has, and a
//! tracing system sees the gateway hop — `traceparent` and `tracestate` reach the
//! upstream byte for byte, a client's `x-request-id` is kept (and logged), and a
//! request without one gets a generated UUID — over HTTP/1.1, HTTPS and h2c.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;

/// Labels Prometheus adds at scrape time, never in ringress's own text.
const SCRAPE_LABELS: [&str; 2] = ["instance", "job"];

/// A gateway with an HTTP port (HTTP/1.1 and h2c) and an HTTPS port to the test
/// httpbin, and a RequestAuthentication and AuthorizationPolicy so the security
/// series exist too (the JWKS source is a closed port: its series say it fails).
struct Site {
    _dir: TempDir,
    pki: pki::Pki,
    _upstream: httpbin::Httpbin,
    gateway: Gateway,
    http: u16,
    https: u16,
}

fn site(tag: &str) -> Site {
    let dir = TempDir::new(tag);
    let pki = pki(&dir);
    let upstream = httpbin();
    let (http, https) = (free_port(), free_port());
    let policies = [
        format!(
            "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt
  namespace: istio-system
spec:
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: https://localhost:{}/jwks.json
    timeout: 1s
",
            closed_port()
        ),
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: no-admin
  namespace: istio-system
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: [\"/admin*\"]
"
        .to_owned(),
    ];
    let mut yaml = backend_config(
        &[
            http_server(http, &[HTTPBIN]),
            simple_https(&pki, https, "https", HTTPBIN),
        ],
        &[HTTPBIN],
        &[upstream.addr()],
    );
    for policy in policies {
        yaml.push_str("---\n");
        yaml.push_str(&policy);
    }
    let gateway = Gateway::start_ready(&dir, &yaml, &[]);
    Site {
        _dir: dir,
        pki,
        _upstream: upstream,
        gateway,
        http,
        https,
    }
}

/// Every metric name of a PromQL expression (ringress's are all `ringress_*`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("ringress_") {
        let start = i + at;
        let boundary = start == 0 || {
            let before = bytes[start - 1];
            !(before.is_ascii_alphanumeric() || before == b'_' || before == b':')
        };
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(expr.len(), |n| start + n);
        if boundary {
            names.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// The labels an expression selects on (`{label=..}`) or groups by (`by (..)`), each
/// with the metric it belongs to when the selector names one.
fn labels_used(expr: &str) -> Vec<(Option<String>, String)> {
    let mut used = Vec::new();
    // Selectors: NAME{label op "value", ...}
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let before = &rest[..open];
        let metric = before
            .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .next()
            .filter(|name| name.starts_with("ringress_"))
            .map(str::to_owned);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let inside = &rest[open + 1..open + close];
        let mut in_value = false;
        let mut label = String::new();
        for c in inside.chars() {
            match c {
                '"' => in_value = !in_value,
                '=' | '!' | '~' if !in_value => {
                    if !label.trim().is_empty() {
                        used.push((
                            metric.clone(),
                            label.trim().trim_matches(',').trim().to_owned(),
                        ));
                    }
                    label.clear();
                }
                _ if in_value => {}
                ',' => label.clear(),
                c => label.push(c),
            }
        }
        rest = &rest[open + close + 1..];
    }
    // Groupings: by (a, b) — checked against every metric of the expression.
    let mut rest = expr;
    while let Some(at) = rest.find("by (") {
        let inside = &rest[at + 4..];
        let Some(close) = inside.find(')') else { break };
        for label in inside[..close].split(',') {
            used.push((None, label.trim().to_owned()));
        }
        rest = &inside[close..];
    }
    used
}

/// Every PromQL expression of the dashboard: panel targets and template variables.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/ringress.json"
    ))
    .expect("reading deploy/grafana/ringress.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push(expr.to_owned());
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(query) = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .filter(|_| variable["type"] == "query")
        {
            queries.push(query.to_owned());
        }
    }
    queries
}

/// A scrape read into metric name → the label names its samples carry; names with a
/// `# TYPE` line but no sample have none.
fn scrape(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut metrics: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split(' ').next() {
                metrics.entry(name.to_owned()).or_default();
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = metrics.entry(line[..name_end].to_owned()).or_default();
        if let Some(open) = line.find('{') {
            let mut in_value = false;
            let mut label = String::new();
            for c in line[open + 1..].chars() {
                match c {
                    '"' => in_value = !in_value,
                    '}' if !in_value => break,
                    '=' if !in_value => {
                        labels.insert(std::mem::take(&mut label));
                    }
                    ',' if !in_value => label.clear(),
                    _ if in_value => {}
                    c => label.push(c),
                }
            }
        }
    }
    metrics
}

#[test]
fn every_metric_and_label_the_dashboard_names_is_in_a_real_scrape() {
    let site = site("obs-dash");
    // Traffic of every kind the panels show: routed 2xx/4xx/5xx, a denied path,
    // TLS handshakes, one that fails.
    for path in ["/status/200", "/status/404", "/status/503", "/admin/x"] {
        let r = curl_http(HTTPBIN, site.http, path, &[]);
        assert_ne!(r.status, 0, "{r:?}");
        let r = curl_https(&site.pki, site.https, path, &[]);
        assert_ne!(r.status, 0, "{r:?}");
    }
    let failed = curl(&["-sS", &format!("https://127.0.0.1:{}/", site.https)]);
    assert_ne!(failed.code, 0, "a handshake the client refuses: {failed:?}");
    let text = curl_admin(site.gateway.admin(), "/stats/prometheus", &[]).text();
    let metrics = scrape(&text);

    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{queries:#?}");
    let mut missing = Vec::new();
    for query in &queries {
        let names = metric_names(query);
        assert!(
            !names.is_empty(),
            "a query without a ringress metric: {query}"
        );
        for name in &names {
            if !metrics.contains_key(name) {
                missing.push(format!("metric {name} (in {query})"));
            }
        }
        for (metric, label) in labels_used(query) {
            if SCRAPE_LABELS.contains(&label.as_str()) || label.is_empty() {
                continue;
            }
            let owners: Vec<&String> = match &metric {
                Some(name) => vec![name],
                None => names.iter().collect(),
            };
            let found = owners.iter().any(|name| {
                metrics
                    .get(*name)
                    .is_some_and(|labels| labels.contains(&label))
            });
            if !found {
                missing.push(format!("label {label} on {owners:?} (in {query})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard names what ringress does not export:\n{}\n\nscrape:\n{text}",
        missing.join("\n")
    );
}

#[test]
fn the_checks_catch_a_name_ringress_does_not_export() {
    let metrics = scrape(
        "# TYPE ringress_responses_total counter\nringress_responses_total{shard=\"0\",class=\"2xx\"} 3\n",
    );
    let expr = "sum by (class) (rate(ringress_responses_total{shard=\"0\"}[5m])) / ringress_nope";
    let names = metric_names(expr);
    assert_eq!(
        names.iter().map(String::as_str).collect::<Vec<_>>(),
        ["ringress_nope", "ringress_responses_total"]
    );
    assert!(!metrics.contains_key("ringress_nope"));
    let labels = labels_used(expr);
    assert!(labels.contains(&(Some("ringress_responses_total".into()), "shard".into())));
    assert!(labels.contains(&(None, "class".into())));
    assert!(metrics["ringress_responses_total"].contains("class"));
    assert!(!metrics["ringress_responses_total"].contains("route"));
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
const REQUEST_ID: &str = "client-chosen-id-7d0c";

/// The headers httpbin saw, by lower-case name.
fn upstream_headers(body: &str) -> BTreeMap<String, String> {
    let json: serde_json::Value = serde_json::from_str(body).expect("httpbin /headers JSON");
    json["headers"]
        .as_object()
        .expect("headers")
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[test]
fn trace_headers_cross_the_gateway_untouched_and_request_ids_are_kept() {
    let site = site("obs-trace");
    let traced = [
        "-H",
        &format!("traceparent: {TRACEPARENT}"),
        "-H",
        &format!("tracestate: {TRACESTATE}"),
        "-H",
        &format!("x-request-id: {REQUEST_ID}"),
    ];
    let traced: Vec<&str> = traced.iter().map(|s| &**s).collect();
    let mut h2c = vec!["--http2-prior-knowledge"];
    h2c.extend_from_slice(&traced);
    let runs = [
        (
            "HTTP/1.1",
            curl_http(HTTPBIN, site.http, "/headers", &traced),
        ),
        ("h2c", curl_http(HTTPBIN, site.http, "/headers", &h2c)),
        (
            "HTTPS",
            curl_https(&site.pki, site.https, "/headers", &traced),
        ),
        (
            "HTTPS h2",
            curl_https(
                &site.pki,
                site.https,
                "/headers",
                &[&["--http2"][..], &traced].concat(),
            ),
        ),
    ];
    for (what, r) in &runs {
        assert_eq!(r.status, 200, "{what}: {r:?}");
        let seen = upstream_headers(&r.text());
        assert_eq!(
            seen.get("traceparent").map(String::as_str),
            Some(TRACEPARENT),
            "{what}: {seen:?}"
        );
        assert_eq!(
            seen.get("tracestate").map(String::as_str),
            Some(TRACESTATE),
            "{what}: {seen:?}"
        );
        assert_eq!(
            seen.get("x-request-id").map(String::as_str),
            Some(REQUEST_ID),
            "{what}: {seen:?}"
        );
    }
    // Without one: a generated UUID, a new one per request.
    let ids: Vec<String> = [&[][..], &["--http2-prior-knowledge"][..]]
        .iter()
        .map(|extra| {
            let r = curl_http(HTTPBIN, site.http, "/headers", extra);
            assert_eq!(r.status, 200, "{r:?}");
            upstream_headers(&r.text())
                .remove("x-request-id")
                .unwrap_or_else(|| panic!("no x-request-id reached the upstream: {r:?}"))
        })
        .collect();
    for id in &ids {
        assert!(is_uuid(id), "{id:?}");
    }
    assert_ne!(ids[0], ids[1]);
    // The access log (Istio's default line) carries the ids the upstream saw.
    let mut gateway = site.gateway;
    let logged = wait_for(std::time::Duration::from_secs(5), || {
        let log = gateway.log_text();
        log.matches(&format!("\"{REQUEST_ID}\"")).count() >= runs.len()
            && ids.iter().all(|id| log.contains(&format!("\"{id}\"")))
    });
    assert!(logged, "access log:\n{}", gateway.log_text());
    gateway.assert_running();
}
