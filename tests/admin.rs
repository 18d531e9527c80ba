//! The admin endpoint end to end against the real `ringress` binary, with curl:
//! `/certs` (serial numbers as openssl reads them from the files, days until
//! expiration, the generation after a rotation), `/stats/prometheus` (responses by
//! status class, handshakes, active connections, reloads, certificate expiry),
//! `/ready`, `POST /reload` and `/config_dump`.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The names the admin tests give their resources, so `/config_dump` can be checked.
const GATEWAY: &str = "admin-gateway";
const VIRTUAL_SERVICE: &str = "admin-routes";

/// [`HTTPBIN`] and [`BOOKINFO`] on one HTTPS port (test PKI), everything routed to
/// `upstream`, with the resources named [`GATEWAY`] and [`VIRTUAL_SERVICE`].
fn admin_config(pki: &pki::Pki, port: u16, upstream: SocketAddr) -> String {
    docs(&[
        gateway_doc(GATEWAY, &sni_servers(pki, port)),
        virtual_service(
            VIRTUAL_SERVICE,
            &[HTTPBIN, BOOKINFO],
            &[GATEWAY],
            &route_all("backend", SERVICE_PORT),
        ),
        service_entry("backend", SERVICE_PORT, &[upstream]),
    ])
}

/// Starts ringress (ready, `--no-watch`) on a fresh [`HttpsFixture`] tagged `tag` with
/// [`admin_config`]; the fixture, the configuration and the gateway.
fn start_admin(tag: &str) -> (HttpsFixture, String, Gateway) {
    let s = HttpsFixture::new(tag);
    let config = admin_config(&s.pki, s.port, s.upstream.addr());
    let gw = Gateway::start_ready(&s.dir, &config, &["--no-watch"]);
    (s, config, gw)
}

/// `GET path` on the admin endpoint, expecting 200 and JSON.
#[track_caller]
fn admin_json(gw: &Gateway, path: &str) -> Value {
    let out = curl_admin(gw.admin(), path, &[]);
    assert_eq!((out.code, out.status), (0, 200), "GET {path}: {out:?}");
    serde_json::from_slice(&out.body)
        .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {out:?}"))
}

/// A serial number as hex digits only: upper-case, no separators, no leading zeros
/// (openssl prints `0A...`, other tools `a...` or `0a:..`).
fn normalize_serial(serial: &str) -> String {
    let hex: String = serial
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_uppercase();
    hex.trim_start_matches('0').to_owned()
}

/// The `/certs` entry of the TLS server whose hosts include `host`: its leaf's
/// serial number (normalized) and days until expiration.
#[track_caller]
fn served_leaf(certs: &Value, host: &str) -> (String, i64) {
    let servers = certs["listeners"]
        .as_array()
        .unwrap_or_else(|| panic!("no listeners in /certs: {certs}"))
        .iter()
        .flat_map(|l| l["servers"].as_array().cloned().unwrap_or_default());
    for server in servers {
        let hosts = server["hosts"].as_array().cloned().unwrap_or_default();
        if hosts.iter().any(|h| h.as_str() == Some(host)) {
            let leaf = &server["cert_chain"][0];
            let serial = leaf["serial_number"]
                .as_str()
                .unwrap_or_else(|| panic!("no serial_number for {host}: {server}"));
            let days = leaf["days_until_expiration"]
                .as_i64()
                .unwrap_or_else(|| panic!("no days_until_expiration for {host}: {server}"));
            return (normalize_serial(serial), days);
        }
    }
    panic!("no server for {host} in /certs: {certs}");
}

/// The Envoy-shaped `certificates[]` entry for `host`: its leaf's serial number
/// (normalized), days until expiration (Envoy's string) and path.
#[track_caller]
fn envoy_leaf(certs: &Value, host: &str) -> (String, i64, String) {
    let entry = certs["certificates"]
        .as_array()
        .unwrap_or_else(|| panic!("no certificates in /certs: {certs}"))
        .iter()
        .find(|c| {
            c["hosts"]
                .as_array()
                .is_some_and(|h| h.iter().any(|h| h == host))
        })
        .unwrap_or_else(|| panic!("no certificate for {host} in /certs: {certs}"));
    let leaf = &entry["cert_chain"][0];
    let days = leaf["days_until_expiration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("days_until_expiration is not a number string: {leaf}"));
    (
        normalize_serial(leaf["serial_number"].as_str().unwrap_or_default()),
        days,
        leaf["path"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn certs_lists_every_host_with_its_serial_and_follows_a_rotation() {
    require_tools();
    let (s, _, mut gw) = start_admin("ad-certs");
    let pki = &s.pki;
    let certs = admin_json(&gw, "/certs");
    assert_eq!(certs["generation"].as_u64(), Some(1), "{certs}");
    let mut before = BTreeMap::new();
    for host in [HTTPBIN, BOOKINFO] {
        let (serial, days) = served_leaf(&certs, host);
        assert_eq!(
            serial,
            normalize_serial(&openssl_serial(&pki.cert(host))),
            "{host}: /certs serial vs openssl x509 -serial"
        );
        let (envoy_serial, envoy_days, path) = envoy_leaf(&certs, host);
        assert_eq!(
            (envoy_serial, envoy_days),
            (serial.clone(), days),
            "{certs}"
        );
        assert_eq!(path, pki.cert(host).display().to_string());
        assert!(
            (360..=365).contains(&days),
            "{host}: {days} days left: {certs}"
        );
        before.insert(host, serial);
    }
    assert_ne!(before[HTTPBIN], before[BOOKINFO]);

    let rotated = pki::generate(&pki.dir, &[HTTPBIN, BOOKINFO]).expect("rotating");
    assert!(gw.sighup_and_wait(), "{}", gw.log_text());
    let certs = admin_json(&gw, "/certs");
    assert!(
        certs["generation"].as_u64().is_some_and(|g| g >= 2),
        "a higher generation after the reload: {certs}"
    );
    for host in [HTTPBIN, BOOKINFO] {
        let (serial, _) = served_leaf(&certs, host);
        assert_eq!(
            serial,
            normalize_serial(&openssl_serial(&rotated.cert(host)))
        );
        assert_ne!(serial, before[host], "{host}: the serial must change");
    }
}

/// Prometheus samples: `name{labels}` → value.
struct Metrics(Vec<(String, BTreeMap<String, String>, f64)>);

impl Metrics {
    #[track_caller]
    fn fetch(gw: &Gateway) -> Metrics {
        let out = curl_admin(gw.admin(), "/stats/prometheus", &[]);
        assert_eq!((out.code, out.status), (0, 200), "{out:?}");
        let mut samples = Vec::new();
        for line in out.text().lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            samples.push((name.to_owned(), labels, value));
        }
        Metrics(samples)
    }

    /// The sum of `name`'s samples whose labels include every `(label, value)`.
    fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.matching(name, filter).map(|(_, v)| v).sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.0
            .iter()
            .filter(move |(n, labels, _)| {
                n == name
                    && filter
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, labels, value)| (labels, *value))
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _, _)| n == name)
    }
}

/// `a="1",b="x"` → map (values without escapes, as ringress's labels are).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        labels.insert(
            key.trim_start_matches(',').to_owned(),
            after[..end].to_owned(),
        );
        rest = &after[end + 1..];
    }
    labels
}

#[test]
fn prometheus_counts_responses_handshakes_connections_reloads_and_expiry() {
    require_tools();
    let (s, good, mut gw) = start_admin("ad-stats");
    let (dir, pki, port) = (&s.dir, &s.pki, s.port);

    let before = Metrics::fetch(&gw);
    for family in [
        "ringress_responses_total",
        "ringress_tls_handshakes_total",
        "ringress_active_connections",
        "ringress_reloads_total",
        "ringress_certificate_expiry_seconds",
    ] {
        assert!(before.has(family), "{family} missing");
    }
    for path in ["/status/200", "/status/201", "/status/204"] {
        let out = curl_https(pki, port, path, &[]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let out = curl_https(pki, port, "/status/404", &[]);
    assert_eq!(out.status, 404, "{out:?}");
    // A handshake for a name no server covers fails.
    let out = curl_https_for("unknown.example.com", port, &pki.root_cert, "/");
    assert_ne!(out.code, 0, "{out:?}");

    let after = wait_metrics(&gw, |m| {
        m.sum("ringress_responses_total", &[("class", "2xx")])
            >= before.sum("ringress_responses_total", &[("class", "2xx")]) + 3.0
    });
    let grew =
        |name: &str, filter: &[(&str, &str)]| after.sum(name, filter) - before.sum(name, filter);
    assert_eq!(grew("ringress_responses_total", &[("class", "2xx")]), 3.0);
    assert_eq!(grew("ringress_responses_total", &[("class", "4xx")]), 1.0);
    assert_eq!(grew("ringress_responses_total", &[("class", "5xx")]), 0.0);
    assert!(
        grew("ringress_tls_handshakes_total", &[("outcome", "ok")]) >= 4.0,
        "handshakes ok"
    );
    let failed = wait_metrics(&gw, |m| {
        m.sum("ringress_tls_handshakes_total", &[("outcome", "failed")])
            > before.sum("ringress_tls_handshakes_total", &[("outcome", "failed")])
    });
    assert!(
        failed.sum("ringress_tls_handshakes_total", &[("outcome", "failed")])
            > before.sum("ringress_tls_handshakes_total", &[("outcome", "failed")]),
        "the refused handshake is counted as failed"
    );

    // An open keep-alive connection is active until it closes.
    let mut open = tls_connect(port, HTTPBIN, client_config(&pki.root_cert, None)).expect("TLS");
    assert_eq!(request_on(&mut open, HTTPBIN, "/status/200").0, 200);
    let active = Metrics::fetch(&gw).sum("ringress_active_connections", &[]);
    assert!(active >= 1.0, "active connections with one open: {active}");
    drop(open);
    let closed = wait_metrics(&gw, |m| m.sum("ringress_active_connections", &[]) < active);
    assert!(closed.sum("ringress_active_connections", &[]) < active);

    // Per-certificate expiry, labelled with the serial openssl reads from the file.
    let serial = normalize_serial(&openssl_serial(&pki.cert(HTTPBIN)));
    let expiry: Vec<f64> = after
        .matching("ringress_certificate_expiry_seconds", &[("role", "leaf")])
        .filter(|(labels, _)| {
            labels.get("serial").map(|s| normalize_serial(s)) == Some(serial.clone())
        })
        .map(|(_, v)| v)
        .collect();
    let day = 86_400.0;
    assert!(
        expiry.len() == 1 && (360.0 * day..=365.0 * day).contains(&expiry[0]),
        "expiry seconds of {HTTPBIN}'s leaf ({serial}): {expiry:?}"
    );

    // Reloads: ok after SIGHUP, failed after a broken config.
    // The reloads counted so far, as (ok, failed).
    let reloads = |m: &Metrics| {
        (
            m.sum("ringress_reloads_total", &[("outcome", "ok")]),
            m.sum("ringress_reloads_total", &[("outcome", "failed")]),
        )
    };
    let (ok, failed) = reloads(&after);
    assert!(gw.sighup_and_wait());
    assert_eq!(reloads(&Metrics::fetch(&gw)), (ok + 1.0, failed));
    dir.write("gateway.yaml", format!("{good}\n  - broken: [\n"));
    assert!(!gw.sighup_and_wait());
    assert_eq!(reloads(&Metrics::fetch(&gw)), (ok + 1.0, failed + 1.0));
}

/// Fetches the metrics until `check` holds (bounded); the last fetch.
fn wait_metrics(gw: &Gateway, check: impl Fn(&Metrics) -> bool) -> Metrics {
    let mut last = Metrics::fetch(gw);
    wait_for(Duration::from_secs(3), || {
        last = Metrics::fetch(gw);
        check(&last)
    });
    last
}

#[test]
fn ready_reload_and_config_dump() {
    require("curl");
    let (s, good, gw) = start_admin("ad-reload");
    let (dir, pki, port) = (&s.dir, &s.pki, s.port);
    let admin = gw.admin();

    let out = curl_admin(admin, "/ready", &[]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    assert!(out.text().contains("ready"), "{out:?}");

    let out = curl_admin(admin, "/reload", &["-X", "POST"]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    let reply: Value = serde_json::from_slice(&out.body).expect("POST /reload answers JSON");
    assert_eq!(reply["generation"].as_u64(), Some(2), "{out:?}");

    // A broken configuration: 500 with the error, and traffic keeps the old one.
    let missing = dir.join("no-such.key");
    dir.write(
        "gateway.yaml",
        good.replace(&yaml_path(&pki.key(HTTPBIN)), &yaml_path(&missing)),
    );
    let out = curl_admin(admin, "/reload", &["-X", "POST"]);
    assert_eq!((out.code, out.status), (0, 500), "{out:?}");
    assert!(
        out.text().contains("no-such.key"),
        "the error names the file: {out:?}"
    );
    let served = curl_https(pki, port, "/status/418", &[]);
    assert_eq!((served.code, served.status), (0, 418), "{served:?}");
    let certs = admin_json(&gw, "/certs");
    assert_eq!(certs["generation"].as_u64(), Some(2), "{certs}");

    let dump = admin_json(&gw, "/config_dump");
    let text = dump.to_string();
    for name in [GATEWAY, VIRTUAL_SERVICE, HTTPBIN, BOOKINFO] {
        assert!(text.contains(name), "/config_dump lacks {name}: {text}");
    }
    assert!(
        !text.contains("PRIVATE KEY"),
        "/config_dump must not hold key material"
    );
}
