//! Hostile peers at the TLS record layer: handshake messages split over records with
//! another record between them, key updates in pieces, renegotiation attempts, empty
//! and oversized records. Driven by `tests/tools/tls_peer.py` (tlslite-ng), a client
//! that misbehaves on purpose; each test checks what that connection got and that the
//! gateway still serves everyone else on every shard. Also: a shard thread that dies
//! makes the process exit non-zero, with `/ready` saying why; and testssl.sh's scan
//! of protocols, ciphers and known TLS vulnerabilities finds nothing to fix.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Where the record-level client lives.
const TLS_PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/tls_peer.py");

/// Connections per scenario: with two shards and the kernel spreading connections
/// by their port numbers, eight reach both shards but once in 2^7.
const TRIES: usize = 8;

/// Runs one scenario of the record-level client against `port`; its JSON report.
fn tls_peer(port: u16, sni: &str, scenario: &str, extra: &[&str]) -> serde_json::Value {
    require_tlslite();
    let mut command = Command::new("python3");
    command
        .arg(TLS_PEER)
        .args(["--port", &port.to_string(), "--sni", sni])
        .args(extra)
        .arg(scenario);
    let output = run_with_timeout(command, b"", CLIENT_TIMEOUT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "tls_peer {scenario}: no JSON report ({e}); stdout: {stdout}; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// [`tls_peer`] `TRIES` times at once (the client is CPU-bound Python: both cores).
fn tls_peers(port: u16, sni: &str, scenario: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..TRIES)
            .map(|_| scope.spawn(|| tls_peer(port, sni, scenario, extra)))
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("tls_peer thread"))
            .collect()
    })
}

/// The alert a report names, or "" for none.
fn alert(report: &serde_json::Value) -> &str {
    report["alert"].as_str().unwrap_or("")
}

/// Fails (never skips) when tlslite-ng is missing: `scripts/test.sh` installs it.
fn require_tlslite() {
    let found = Command::new("python3")
        .args(["-c", "import tlslite"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "python3 with tlslite-ng is needed (scripts/test.sh installs it: pip install tlslite-ng)"
    );
}

/// A gateway with [`HTTPBIN`] on a SIMPLE port and on a MUTUAL port.
type Fixture = MutualFixture;

impl Fixture {
    /// Asserts that well-behaved clients are served on both ports by every shard,
    /// and that nothing panicked.
    fn assert_serving(&mut self) {
        self.gateway.assert_running();
        for report in tls_peers(self.fixture.port, HTTPBIN, "request", &[]) {
            assert_eq!(report["status"], 200, "{report}");
        }
        for _ in 0..TRIES {
            let cert = client_cert_args(
                &self.fixture.pki.client_cert(),
                &self.fixture.pki.client_key(),
            );
            let mut args = https_url(&self.fixture.pki, self.mutual_port, "/status/200");
            args.extend(cert);
            let served = curl(&strs(&args));
            assert_eq!(served.status, 200, "{served:?}");
        }
        let log = self.gateway.log_text();
        assert!(!log.contains("panicked"), "a task panicked:\n{log}");
        let stats = curl_admin(self.gateway.admin(), "/stats/prometheus", &[]).text();
        for shard in ["0", "1"] {
            for (family, want) in [
                ("ringress_shard_running", 1),
                ("ringress_connection_panics_total", 0),
            ] {
                let line = format!("{family}{{shard=\"{shard}\"}} {want}\n");
                assert!(stats.contains(&line), "no `{}` in:\n{stats}", line.trim());
            }
        }
    }
}

/// Handshake messages split around another record: each once crashed a shard thread
/// inside rustls. Now the connection closes (with rustls' alert when it queued one)
/// and the gateway serves on.
#[test]
fn handshake_messages_split_around_other_records_never_stop_a_shard() {
    let mut f = Fixture::start("split-handshake", &[]);
    let port = f.fixture.port;
    let cases: [(&str, u16, &[&str]); 5] = [
        ("finished-split", port, &[]),
        ("certificate-split", f.mutual_port, &[]),
        ("keyupdate-split-with-finished", port, &[]),
        ("keyupdate-split", port, &[]),
        ("renegotiation-split", port, &["--tls12"]),
    ];
    for (scenario, port, extra) in cases {
        for report in tls_peers(port, HTTPBIN, scenario, extra) {
            assert!(
                report["closed"] == true && report["timeout"] == false,
                "{scenario}: the gateway should end the connection: {report}"
            );
            assert_eq!(report["status"], 0, "{scenario}: {report}");
        }
    }
    f.assert_serving();
}

/// After the handshake: a KeyUpdate in pieces is accepted (RFC 8446 5.1), with the
/// Finished or on its own; empty alert and handshake records, an interleaved piece
/// and an oversized record get the alert RFC 8446 names, readable by the client
/// before the close.
#[test]
fn records_after_the_handshake_get_rfc_8446_answers() {
    let mut f = Fixture::start("records", &[]);
    let port = f.fixture.port;
    for scenario in ["keyupdate-fragmented", "keyupdate-fragmented-with-finished"] {
        let report = tls_peer(port, HTTPBIN, scenario, &[]);
        assert_eq!(report["status"], 200, "{scenario}: {report}");
        if let Some(first) = report.get("first_status") {
            assert_eq!(first, 200, "{scenario}: {report}");
        }
    }
    // rustls' record layer (`--tls-record-layer rustls`) answers some of these its own
    // way: an empty alert is a decode_error, a record between KeyUpdate pieces ends
    // the connection without an alert, an oversized record fails its tag first
    // (bad_record_mac), and an empty handshake record is let pass
    // (the connection stays open). ringress's record layer follows RFC 8446 5.1/5.4.
    let on_rustls = std::env::var("RINGRESS_TEST_TLS_RECORD_LAYER").is_ok_and(|l| l == "rustls");
    // After a request, and right after the handshake (as tlsfuzzer sends them): the
    // connection is ringress's from the client's Finished on.
    let cases = [
        ("empty-alert", "unexpected_message", Some("decode_error")),
        ("empty-handshake", "unexpected_message", None),
        ("keyupdate-split", "unexpected_message", Some("")),
        ("record-overflow", "record_overflow", Some("bad_record_mac")),
    ];
    for at_handshake in [false, true] {
        for (scenario, ringress, rustls) in cases {
            let want = if on_rustls { rustls } else { Some(ringress) };
            let mut extra = vec![];
            if at_handshake {
                extra.push("--at-handshake");
            }
            let Some(want) = want else {
                extra.extend(["--timeout", "1"]);
                let report = tls_peer(port, HTTPBIN, scenario, &extra);
                assert!(
                    report["timeout"] == true && alert(&report).is_empty(),
                    "{scenario} (at handshake: {at_handshake}): {report}"
                );
                continue;
            };
            let report = tls_peer(port, HTTPBIN, scenario, &extra);
            if !at_handshake {
                assert_eq!(report["first_status"], 200, "{scenario}: {report}");
            }
            assert_eq!(report["closed"], true, "{scenario}: {report}");
            assert_eq!(
                alert(&report),
                want,
                "{scenario} (at handshake: {at_handshake}): {report}"
            );
        }
    }
    f.assert_serving();
}

/// A shard whose thread ends without a drain stops the gateway with an error: `/ready`
/// says why meanwhile, and the process exits non-zero for systemd or Kubernetes to
/// restart it (debug builds inject the fault on reload).
#[test]
fn a_dead_shard_makes_the_gateway_exit_non_zero() {
    let f = HttpsFixture::new("dead-shard");
    let config = https_config(&f.pki, f.port, f.upstream.addr());
    let path = f.dir.write("gateway.yaml", &config);
    let mut gateway = Gateway::try_start_file_env(
        &f.dir,
        &path,
        &[f.port],
        &["--drain-timeout", "1"],
        &[("RINGRESS_TEST_PANIC_SHARD", "1")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    gateway.wait_admin_ready();
    // Connections in their handshake hold the drain open for its whole second, long
    // enough to see `/ready` fail.
    let _pending: Vec<_> = (0..TRIES).map(|_| connect(f.port)).collect();
    let reload = curl_admin(gateway.admin(), "/reload", &["-X", "POST"]);
    // The reload itself is published before the shard dies; what follows is the stop.
    assert!(matches!(reload.status, 200 | 500), "{reload:?}");
    let admin = gateway.admin();
    let failed = wait_for(Duration::from_secs(5), || {
        let ready = curl_admin(admin, "/ready", &[]);
        ready.status == 503 && ready.text().contains("failed: shard 1 stopped: panicked")
    });
    assert!(
        failed,
        "/ready never said the shard failed:\n{}",
        gateway.log_text()
    );
    let status = gateway
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "ringress kept running with a dead shard:\n{}",
                gateway.log_text()
            )
        });
    assert_eq!(status.code(), Some(1), "{}", gateway.log_text());
    let log = gateway.log_text();
    assert!(
        log.contains("shard 1 stopped unexpectedly") && log.contains("the injected fault"),
        "{log}"
    );
}

/// testssl.sh, the scanner operators point at an HTTPS port, finds nothing to fix in
/// how ringress speaks TLS: only TLS 1.2 and 1.3, no weak cipher category, forward
/// secrecy, secure renegotiation and no client-initiated renegotiation, and none of
/// the vulnerabilities it probes for (Heartbleed, CCS, Ticketbleed, ROBOT, CRIME,
/// BREACH, POODLE, SWEET32, FREAK, DROWN, LOGJAM, BEAST, LUCKY13, RC4). The server
/// takes `*`, so the checks testssl.sh makes without SNI reach it too. Findings about
/// the test certificates themselves (a private CA, no OCSP) are not ringress's.
#[test]
fn testssl_finds_nothing_to_fix() {
    require("testssl");
    let fixture = HttpsFixture::new("hs-testssl");
    let servers = [https_server(
        fixture.port,
        "https",
        &["*"],
        &simple_tls_for(&fixture.pki, HTTPBIN),
    )];
    let config = backend_config(&servers, &["*"], &[fixture.upstream.addr()]);
    let mut gateway = Gateway::start_ready(&fixture.dir, &config, &[]);
    let report = fixture.dir.path().join("testssl.json");
    let mut command = Command::new("testssl");
    command
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--ip",
            "127.0.0.1",
        ])
        .args(["--protocols", "--std", "--fs", "--vulnerable"])
        .arg("--jsonfile-pretty")
        .arg(&report)
        .arg(format!("https://{HTTPBIN}:{}", fixture.port));
    let output = run_with_timeout(command, b"", Duration::from_secs(240));
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "testssl.sh wrote no report ({e}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let json: serde_json::Value = serde_json::from_str(&text).expect("testssl.sh JSON");
    let findings: Vec<(String, String, String)> = json["scanResult"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|target| target.as_object().into_iter().flatten())
        .filter_map(|(_, section)| section.as_array())
        .flatten()
        .map(|f| {
            let field = |name: &str| f[name].as_str().unwrap_or_default().to_owned();
            (field("id"), field("severity"), field("finding"))
        })
        .collect();
    let finding = |id: &str| {
        findings
            .iter()
            .find(|(i, _, _)| i == id)
            .map(|(_, _, f)| f.as_str())
            .unwrap_or_else(|| panic!("testssl.sh reported no {id}: {findings:#?}"))
    };
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert_eq!(finding(old), "not offered", "{old}");
    }
    assert_eq!(finding("TLS1_2"), "offered");
    assert!(
        finding("TLS1_3").starts_with("offered"),
        "{}",
        finding("TLS1_3")
    );
    assert_eq!(finding("secure_renego"), "supported");
    assert_eq!(finding("secure_client_renego"), "not vulnerable");
    for vulnerability in ["heartbleed", "CCS", "ticketbleed", "ROBOT", "POODLE_SSL"] {
        finding(vulnerability);
    }
    let problems: Vec<_> = findings
        .iter()
        .filter(|(id, severity, _)| {
            matches!(
                severity.as_str(),
                "LOW" | "MEDIUM" | "HIGH" | "CRITICAL" | "WARN"
            ) && !id.starts_with("cert")
        })
        .collect();
    assert!(problems.is_empty(), "testssl.sh found: {problems:#?}");
    gateway.assert_running();
}
