//! The admin endpoint over real loopback sockets: a `Status` built from a real snapshot
//! (certificates from the demo PKI), each route's status and content, the limits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Receiver;
use serde_json::Value;

use super::*;
use crate::control::status::ReloadRecord;
use crate::demo::pki;
use crate::shard::ShardStats;
use crate::snapshot::Snapshot;

const HOST: &str = "httpbin.example.com";
const MUTUAL_HOST: &str = "mtls.example.com";
/// A directResponse body with everything JSON must escape, and non-ASCII.
const TRICKY: &str = "say \"hi\" \\ tab\t bell\u{7} größe ✓";

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringress-admin-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn yaml_config(pki: &pki::Pki) -> String {
    let p = |p: PathBuf| p.display().to_string();
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: ["{HOST}"]
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    tls:
      mode: SIMPLE
      serverCertificate: "{cert}"
      privateKey: "{key}"
    hosts: ["{HOST}"]
  - port: {{number: 9443, name: mtls, protocol: HTTPS}}
    tls:
      mode: MUTUAL
      serverCertificate: "{mcert}"
      privateKey: "{mkey}"
      caCertificates: "{ca}"
    hosts: ["{MUTUAL_HOST}"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts: ["{HOST}", "{MUTUAL_HOST}"]
  gateways: [gw]
  http:
  - name: status
    match:
    - uri: {{prefix: /status}}
    route:
    - destination: {{host: httpbin, port: {{number: 8000}}}}
  - name: tricky
    directResponse:
      status: 200
      body:
        string: "{tricky}"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: httpbin
spec:
  hosts: [httpbin]
  ports:
  - {{number: 8000, name: http, protocol: HTTP}}
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports: {{http: 18000}}
"#,
        cert = p(pki.cert(HOST)),
        key = p(pki.key(HOST)),
        mcert = p(pki.cert(MUTUAL_HOST)),
        mkey = p(pki.key(MUTUAL_HOST)),
        ca = p(pki.ca_chain.clone()),
        tricky = TRICKY
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\t', "\\t")
            .replace('\u{7}', "\\a"),
    )
}

/// An endpoint with `routes` on a free loopback port.
fn spawn_endpoint(routes: Routes, status: &Arc<Status>, events: Sender<ControlEvent>) -> Admin {
    let listener = listen("127.0.0.1:0".parse().unwrap(), routes, None).unwrap();
    spawn(listener, routes, status.clone(), events, None).unwrap()
}

/// A running admin endpoint over a real snapshot, and the other end of its events.
struct Fixture {
    admin: Admin,
    status: Arc<Status>,
    events: Receiver<ControlEvent>,
    _dir: TempDir,
}

fn fixture() -> Fixture {
    let dir = TempDir::new();
    let pki = pki::generate(&dir.0, &[HOST, MUTUAL_HOST]).unwrap();
    let source = dir.0.join("gateway.yaml");
    let config = crate::config::load_str(&yaml_config(&pki), &source).unwrap();
    let snapshot = Snapshot::build(&config, None, &mut crate::tls::Ticketers::new(), 7).unwrap();
    let shards = vec![
        Arc::new(ShardStats::default()),
        Arc::new(ShardStats::default()),
    ];
    let status = Arc::new(Status::new(
        Arc::new(snapshot),
        Arc::new(config),
        shards,
        Arc::default(),
    ));
    let (events, inbox) = crossbeam_channel::unbounded();
    let admin = spawn_endpoint(Routes::Admin, &status, events);
    Fixture {
        admin,
        status,
        events: inbox,
        _dir: dir,
    }
}

/// Sends raw bytes, reads until the endpoint closes; returns (status, head, body).
fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, head.to_owned(), body.to_owned())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n").as_bytes(),
    )
}

fn post(addr: SocketAddr, path: &str) -> (u16, String, String) {
    exchange(
        addr,
        format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    )
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[test]
fn binds_port_zero_and_reports_the_address() {
    let f = fixture();
    assert!(f.admin.addr.ip().is_loopback());
    assert_ne!(f.admin.addr.port(), 0);
}

#[test]
fn index_lists_the_routes() {
    let f = fixture();
    let (status, head, body) = get(f.admin.addr, "/");
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("connection: close"));
    for route in [
        "/certs",
        "/stats/prometheus",
        "/ready",
        "/config_dump",
        "/reload",
    ] {
        assert!(body.contains(route), "{route} missing from {body}");
    }
}

#[test]
fn certs_show_hosts_chain_serial_and_expiry() {
    let f = fixture();
    let (status, head, body) = get(f.admin.addr, "/certs");
    assert_eq!(status, 200);
    assert!(head.contains("application/json"));
    let certs: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(certs["generation"], 7);
    let listeners = certs["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 3);

    let (snapshot, _) = f.status.serving();
    let https = listeners.iter().find(|l| l["port"] == 8443).unwrap();
    assert_eq!(https["protocol"], "HTTPS");
    let server = &https["servers"][0];
    assert_eq!(strings(&server["hosts"]), [HOST]);
    assert_eq!(server["mode"], "SIMPLE");
    assert!(server["source"].as_str().unwrap().ends_with(".crt"));
    assert!(server["ca_cert"].is_null());
    let chain = server["cert_chain"].as_array().unwrap();
    assert_eq!(chain.len(), 2, "leaf then intermediate");
    let leaf = &chain[0];
    let expected = snapshot.listeners[1].certificates[0].leaf.clone().unwrap();
    assert_eq!(leaf["serial_number"], expected.serial.as_str());
    assert!(!expected.serial.is_empty());
    assert!(strings(&leaf["subject_alt_names"]).contains(&HOST));
    assert!(leaf["subject"].as_str().unwrap().contains(HOST));
    let days = leaf["days_until_expiration"].as_i64().unwrap();
    assert!((363..=366).contains(&days), "{days}");
    let expiry = leaf["expiration_time"].as_str().unwrap();
    assert_eq!(expiry, json::rfc3339(expected.not_after_unix));
    assert!(expiry.ends_with('Z') && expiry.len() == 20, "{expiry}");

    let mutual = listeners.iter().find(|l| l["port"] == 9443).unwrap();
    let server = &mutual["servers"][0];
    assert_eq!(server["mode"], "MUTUAL");
    assert!(
        server["ca_cert"]["source"]
            .as_str()
            .unwrap()
            .ends_with("ca-chain.pem")
    );
    let cas = server["ca_cert"]["certificates"].as_array().unwrap();
    assert_eq!(cas.len(), 2, "intermediate and root");
    assert!(
        cas.iter()
            .all(|c| c["days_until_expiration"].as_i64().unwrap() > 3000)
    );

    let http = listeners.iter().find(|l| l["port"] == 8080).unwrap();
    assert_eq!(http["protocol"], "HTTP");
    assert!(http["servers"].as_array().unwrap().is_empty());

    // Envoy's shape, as `istioctl` and Istio's troubleshooting steps read it.
    let envoy = certs["certificates"].as_array().unwrap();
    assert_eq!(envoy.len(), 2, "one entry per TLS server");
    let simple = envoy
        .iter()
        .find(|c| c["listener"].as_str().unwrap().ends_with(":8443"))
        .unwrap();
    let chain = simple["cert_chain"].as_array().unwrap();
    assert_eq!(chain.len(), 1, "the leaf only, as Envoy");
    assert!(simple["ca_cert"].as_array().unwrap().is_empty());
    let leaf = &chain[0];
    assert!(leaf["path"].as_str().unwrap().ends_with(".crt"), "{leaf}");
    let serial = expected.serial.trim_start_matches("00");
    assert_eq!(leaf["serial_number"], serial, "{leaf}");
    assert!(
        leaf["subject_alt_names"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({ "dns": HOST })),
        "{leaf}"
    );
    let days: i64 = leaf["days_until_expiration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((363..=366).contains(&days), "{leaf}");
    assert_eq!(
        leaf["expiration_time"],
        json::rfc3339(expected.not_after_unix)
    );
    assert_eq!(leaf["valid_from"], json::rfc3339(expected.not_before_unix));
    let mutual = envoy
        .iter()
        .find(|c| c["listener"].as_str().unwrap().ends_with(":9443"))
        .unwrap();
    let cas = mutual["ca_cert"].as_array().unwrap();
    assert_eq!(cas.len(), 2);
    assert!(cas[0]["path"].as_str().unwrap().ends_with("ca-chain.pem"));
}

/// One sample of the text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses the exposition format strictly enough to catch malformed lines; checks each
/// sample's family was declared with `# HELP` and `# TYPE` before it.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut typed = std::collections::HashSet::new();
    let mut helped = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            typed.insert(name.to_owned());
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let name_end = line.find(['{', ' ']).unwrap();
        let name = &line[..name_end];
        assert!(
            name.starts_with("ringress_") || name.starts_with("envoy_cluster_"),
            "{line}"
        );
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        assert!(typed.contains(name) && helped.contains(name), "{line}");
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            let mut label = String::new();
            loop {
                let (_, c) = chars.next().unwrap();
                if c == '}' {
                    break;
                }
                if c == ',' {
                    continue;
                }
                if c != '=' {
                    label.push(c);
                    continue;
                }
                assert_eq!(chars.next().unwrap().1, '"', "{line}");
                let mut value = String::new();
                loop {
                    match chars.next().unwrap().1 {
                        '"' => break,
                        '\\' => match chars.next().unwrap().1 {
                            'n' => value.push('\n'),
                            c @ ('\\' | '"') => value.push(c),
                            c => panic!("bad escape \\{c} in {line}"),
                        },
                        c => value.push(c),
                    }
                }
                labels.push((std::mem::take(&mut label), value));
            }
            let consumed = chars.next().map_or(inner.len(), |(i, _)| i);
            rest = &inner[consumed..];
        }
        let value = rest.strip_prefix(' ').unwrap();
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value: value.parse().unwrap(),
        });
    }
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0].value
}

#[test]
fn prometheus_text_has_every_counter() {
    let f = fixture();
    let shard = &f.status.shards[1];
    for _ in 0..3 {
        shard.responses.count(200);
        ShardStats::add(&shard.accepted);
        ShardStats::add(&shard.handshakes_tls13);
    }
    shard.responses.count(503);
    ShardStats::add(&shard.handshakes_tls12);
    ShardStats::add(&shard.handshakes_failed);
    ShardStats::add(&shard.active_connections);
    ShardStats::add(&shard.upstream_connect_failures);
    ShardStats::add_n(&shard.access_log_dropped, 5);
    ShardStats::add(&shard.upstream_overflows);
    ShardStats::add(&shard.accept_failures);
    let (snapshot, _) = f.status.serving();
    let route = snapshot
        .routes(8443)
        .unwrap()
        .routes()
        .find(|r| r.rule == 1)
        .unwrap();
    route.stats.count(200);
    route.stats.count(200);
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    f.status.record_reload(ReloadRecord {
        at,
        cause: "test".into(),
        outcome: Err("bad".into()),
    });

    let (status, head, body) = get(f.admin.addr, "/stats/prometheus");
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let samples = parse_exposition(&body);
    let v = |name, labels: &[(&str, &str)]| value(&samples, name, labels);
    let responses = "ringress_responses_total";
    assert_eq!(v(responses, &[("shard", "1"), ("class", "2xx")]), 3.0);
    assert_eq!(v(responses, &[("shard", "1"), ("class", "5xx")]), 1.0);
    assert_eq!(v(responses, &[("shard", "0"), ("class", "2xx")]), 0.0);
    assert_eq!(
        v(
            "ringress_route_responses_total",
            &[
                ("virtual_service", "httpbin"),
                ("rule", "1"),
                ("class", "2xx")
            ]
        ),
        2.0
    );
    let handshakes = "ringress_tls_handshakes_total";
    assert_eq!(
        v(
            handshakes,
            &[("shard", "1"), ("outcome", "ok"), ("version", "TLSv1.3")]
        ),
        3.0
    );
    assert_eq!(
        v(
            handshakes,
            &[("shard", "1"), ("outcome", "ok"), ("version", "TLSv1.2")]
        ),
        1.0
    );
    assert_eq!(v(handshakes, &[("shard", "1"), ("outcome", "failed")]), 1.0);
    assert_eq!(v("ringress_active_connections", &[("shard", "1")]), 1.0);
    assert_eq!(
        v("ringress_accepted_connections_total", &[("shard", "1")]),
        3.0
    );
    assert_eq!(
        v(
            "ringress_upstream_connect_failures_total",
            &[("shard", "1")]
        ),
        1.0
    );
    for (name, count) in [
        ("ringress_access_log_dropped_total", 5.0),
        ("ringress_upstream_overflows_total", 1.0),
        ("ringress_accept_failures_total", 1.0),
        ("ringress_connection_panics_total", 0.0),
        ("ringress_shard_running", 0.0),
    ] {
        assert_eq!(v(name, &[("shard", "1")]), count, "{name}");
    }
    assert_eq!(v("ringress_reloads_total", &[("outcome", "ok")]), 0.0);
    assert_eq!(v("ringress_reloads_total", &[("outcome", "failed")]), 1.0);
    assert_eq!(
        v("ringress_last_reload_failure_timestamp_seconds", &[]),
        1_700_000_000.0
    );
    assert_eq!(v("ringress_config_generation", &[]), 7.0);

    let leaf = snapshot.listeners[1].certificates[0].leaf.clone().unwrap();
    let left = v(
        "ringress_certificate_expiry_seconds",
        &[
            ("port", "8443"),
            ("hosts", HOST),
            ("serial", &leaf.serial),
            ("role", "leaf"),
        ],
    );
    assert!(
        (363.0 * 86400.0..=366.0 * 86400.0).contains(&left),
        "{left}"
    );
    let client_cas = samples
        .iter()
        .filter(|s| {
            s.name == "ringress_certificate_expiry_seconds"
                && s.labels
                    .iter()
                    .any(|(k, v)| k == "role" && v == "client_ca")
        })
        .count();
    assert_eq!(client_cas, 2);
}

#[test]
fn ready_until_draining() {
    let f = fixture();
    let (status, _, body) = get(f.admin.addr, "/ready");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    f.status.set_draining();
    let (status, _, body) = get(f.admin.addr, "/ready");
    assert_eq!((status, body.as_str()), (503, "draining\n"));
}

#[test]
fn config_dump_is_json_without_key_material() {
    let f = fixture();
    let (status, _, body) = get(f.admin.addr, "/config_dump");
    assert_eq!(status, 200);
    assert!(!body.contains("PRIVATE KEY"), "{body}");
    assert!(!body.contains("-----BEGIN"), "{body}");
    let dump: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["generation"], 7);
    let servers = dump["gateways"][0]["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3);
    assert_eq!(servers[1]["port"]["number"], 8443);
    assert_eq!(servers[1]["tls"]["mode"], "SIMPLE");
    assert!(
        servers[1]["tls"]["server_certificate"]
            .as_str()
            .unwrap()
            .ends_with(".crt")
    );
    assert_eq!(servers[2]["tls"]["mode"], "MUTUAL");
    let http = &dump["virtual_services"][0]["http"];
    assert_eq!(http[0]["match"][0]["uri"]["prefix"], "/status");
    assert_eq!(http[0]["route"][0]["destination"]["host"], "httpbin");
    assert_eq!(http[0]["route"][0]["destination"]["port"], 8000);
    assert_eq!(http[1]["direct_response"]["body"], TRICKY);
    let se = &dump["service_entries"][0];
    assert_eq!(se["resolution"], "STATIC");
    assert_eq!(
        strings(&se["resolved"][0]["endpoints"]),
        ["127.0.0.1:18000"]
    );
}

#[test]
fn config_dump_shows_the_last_reload_failure() {
    let f = fixture();
    let (_, _, body) = get(f.admin.addr, "/config_dump");
    let dump: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["reloads"]["failed"], 0);
    assert!(dump["reloads"]["last_failure"].is_null());
    f.status
        .record_reload(crate::control::status::ReloadRecord {
            at: std::time::SystemTime::now(),
            cause: "SIGHUP".into(),
            outcome: Err("gateway.yaml:3:1: bad \"yaml\"".into()),
        });
    f.status
        .record_reload(crate::control::status::ReloadRecord {
            at: std::time::SystemTime::now(),
            cause: "POST /reload".into(),
            outcome: Ok(8),
        });
    let (_, _, body) = get(f.admin.addr, "/config_dump");
    let dump: Value = serde_json::from_str(&body).unwrap();
    let reloads = &dump["reloads"];
    assert_eq!(
        (reloads["ok"].as_u64(), reloads["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(reloads["last"]["generation"], 8);
    assert_eq!(reloads["last_failure"]["cause"], "SIGHUP");
    assert_eq!(
        reloads["last_failure"]["error"],
        "gateway.yaml:3:1: bad \"yaml\""
    );
}

/// Answers the next reload event with `outcome`, checking its cause.
fn answer_reload(events: Receiver<ControlEvent>, outcome: Result<u64, String>) {
    std::thread::spawn(move || match events.recv_timeout(Duration::from_secs(10)) {
        Ok(ControlEvent::Reload {
            cause,
            reply: Some(reply),
        }) => {
            assert_eq!(cause, "POST /reload");
            reply.send(outcome).unwrap();
        }
        _ => panic!("expected a reload with a reply"),
    });
}

#[test]
fn reload_reports_the_new_generation() {
    let f = fixture();
    answer_reload(f.events.clone(), Ok(8));
    let (status, _, body) = post(f.admin.addr, "/reload");
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer, serde_json::json!({ "generation": 8 }));
}

#[test]
fn reload_reports_the_error_as_logged() {
    let f = fixture();
    let error = "gateway.yaml document 1 (Gateway gw): bad \"port\"\n\\ ✓";
    answer_reload(f.events.clone(), Err(error.into()));
    let (status, _, body) = post(f.admin.addr, "/reload");
    assert_eq!(status, 500);
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["error"], error);
}

#[test]
fn reload_without_a_control_thread_is_503() {
    let f = fixture();
    let Fixture { admin, events, .. } = f;
    drop(events);
    let (status, _, body) = post(admin.addr, "/reload");
    assert_eq!(status, 503);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
}

#[test]
fn the_health_endpoint_answers_readiness_only() {
    let f = fixture();
    let (events, _inbox) = crossbeam_channel::unbounded();
    let health = spawn_endpoint(Routes::Health, &f.status, events);
    let (status, _, body) = get(health.addr, HEALTH_PATH);
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    assert_eq!(get(health.addr, "/certs").0, 404);
    assert_eq!(get(health.addr, "/ready").0, 404);
    assert_eq!(post(health.addr, HEALTH_PATH).0, 405);
    f.status.set_draining();
    let (status, _, body) = get(health.addr, HEALTH_PATH);
    assert_eq!((status, body.as_str()), (503, "draining\n"));
}

#[test]
fn unknown_paths_and_wrong_methods() {
    let f = fixture();
    assert_eq!(get(f.admin.addr, "/nope").0, 404);
    assert_eq!(get(f.admin.addr, "/certs/").0, 404);
    assert_eq!(get(f.admin.addr, "/certs?format=json").0, 200);
    let (status, head, _) = get(f.admin.addr, "/reload");
    assert_eq!(status, 405);
    assert!(head.to_ascii_lowercase().contains("allow: post"), "{head}");
    let (status, head, _) = post(f.admin.addr, "/certs");
    assert_eq!(status, 405);
    assert!(head.to_ascii_lowercase().contains("allow: get"), "{head}");
    assert!(f.events.try_recv().is_err(), "nothing was asked to reload");
}

#[test]
fn malformed_requests_are_refused() {
    let f = fixture();
    assert_eq!(exchange(f.admin.addr, b"GARBAGE\r\n\r\n").0, 400);
    assert_eq!(
        exchange(f.admin.addr, b"GET /ready HTTP/1.1\r\n\r\n").0,
        400,
        "HTTP/1.1 needs a Host"
    );
    let big_body = format!(
        "POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY_BYTES + 1
    );
    assert_eq!(exchange(f.admin.addr, big_body.as_bytes()).0, 413);
}

#[test]
fn oversized_head_gets_431_and_the_endpoint_keeps_serving() {
    let f = fixture();
    let mut request = b"GET /certs HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES + 100));
    request.extend_from_slice(b"\r\n\r\n");
    let started = Instant::now();
    let (status, _, _) = exchange(f.admin.addr, &request);
    assert_eq!(status, 431);
    assert!(started.elapsed() < REQUEST_TIMEOUT);
    assert_eq!(get(f.admin.addr, "/ready").0, 200);
}

#[test]
fn a_silent_client_does_not_block_others() {
    let f = fixture();
    let mut silent = TcpStream::connect(f.admin.addr).unwrap();
    silent.write_all(b"GET /ready HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    assert_eq!(get(f.admin.addr, "/ready").0, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    // The silent one is answered 408 once its time is up.
    silent.set_read_timeout(Some(REQUEST_TIMEOUT * 2)).unwrap();
    let mut answer = Vec::new();
    silent.read_to_end(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 408 "), "{answer:?}");
}

#[test]
fn requests_split_across_writes_are_read_whole() {
    let f = fixture();
    let request = b"GET /ready HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for split in 1..request.len() {
        let mut stream = TcpStream::connect(f.admin.addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.write_all(&request[..split]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
        stream.write_all(&request[split..]).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200 "),
            "split {split}: {answer}"
        );
        assert!(
            answer.ends_with("\r\n\r\nready\n"),
            "split {split}: {answer}"
        );
    }
}

#[test]
fn dropping_the_admin_stops_listening() {
    let f = fixture();
    let addr = f.admin.addr;
    let Fixture { admin, .. } = f;
    drop(admin);
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn connections_over_the_limit_get_503_until_one_ends() {
    let f = fixture();
    let silent: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(f.admin.addr).unwrap())
        .collect();
    let (status, _, body) = get(f.admin.addr, "/ready");
    assert_eq!(status, 503, "{body}");
    // A client that leaves frees its place at once.
    drop(silent);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (status, _, _) = get(f.admin.addr, "/ready");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reload_with_a_body_and_expect_continue() {
    let f = fixture();
    answer_reload(f.events.clone(), Ok(9));
    let mut stream = TcpStream::connect(f.admin.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    let mut interim = [0u8; CONTINUE_100.len()];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim[..], CONTINUE_100);
    stream.write_all(b"{}\r\n\r").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains("\"generation\": 9"), "{answer}");
}
