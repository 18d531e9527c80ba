//! HTTP/2 to clients against the real `ringress` binary: curl over TLS (ALPN `h2`) and
//! with prior knowledge on a plain port, the walkthrough's `HTTP/2 418`, MUTUAL
//! included, request bodies with and without `content-length`, large responses under
//! flow control, the access log's protocol, the advertised limits (nghttp), h2load in
//! its default mode, and from a Python `h2` client a rapid-reset attack
//! (CVE-2023-44487) and a flow-control window never opened, after which the gateway
//! still serves, and CONTINUATION, PING, SETTINGS and empty-DATA floods (GOAWAY
//! ENHANCE_YOUR_CALM); an idle connection's GOAWAY; a stream in
//! flight finishing through SIGTERM's drain; gRPC clients' trailers-only answers to
//! gateway-made errors.

mod common;

use std::process::Command;

use common::*;

/// One HTTPS server for every host (`*`) with [`HTTPBIN`]'s certificate, so tools
/// that take the SNI name from the URL (`h2load https://localhost:PORT`) reach it;
/// every request routed to `upstream`.
fn any_host_config(pki: &pki::Pki, port: u16, upstream: std::net::SocketAddr) -> String {
    backend_config(
        &[https_server(
            port,
            "https",
            &["*"],
            &simple_tls_for(pki, HTTPBIN),
        )],
        &["*"],
        &[upstream],
    )
}

/// A gateway in a [`TempDir`] serving [`any_host_config`] on a free port to an
/// [`httpbin`], started with `extra` arguments: what a test keeps of it. Destructure it
/// naming every field: one left to `..` is dropped at once (the directory with the
/// certificates, the upstream). `_dir` comes first there, so that it is dropped last:
/// a failing test's gateway prints its log from it.
struct AnyHost {
    _dir: TempDir,
    _upstream: httpbin::Httpbin,
    pki: pki::Pki,
    port: u16,
    gw: Gateway,
}

fn start_any_host(tag: &str, extra: &[&str]) -> AnyHost {
    let dir = TempDir::new(tag);
    let upstream = httpbin();
    let pki = pki(&dir);
    let port = free_port();
    let gw = Gateway::start(&dir, &any_host_config(&pki, port, upstream.addr()), extra);
    AnyHost {
        _dir: dir,
        _upstream: upstream,
        pki,
        port,
        gw,
    }
}

/// Runs the frame-level client `tests/tools/h2_peer.py` with `args`.
fn h2_peer(args: &[&str]) -> std::process::Output {
    let mut command = Command::new("python3");
    command
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/h2_peer.py"
        ))
        .args(args);
    run_with_timeout(command, b"", CLIENT_TIMEOUT)
}

#[test]
fn the_walkthrough_answers_http2_418_simple_and_mutual() {
    require("curl");
    let mutual = MutualFixture::start("h2-walk", &[]);
    let s = &mutual.fixture;
    // `curl -sI --http2`, as the walkthrough runs it: the status line is `HTTP/2 418`.
    let mut args = https_url(&s.pki, s.port, "/status/418");
    args.splice(0..0, ["-sI".to_owned(), "--http2".to_owned()]);
    let mut command = Command::new("curl");
    command.args(&args);
    let out = run_with_timeout(command, b"", CLIENT_TIMEOUT);
    let head = String::from_utf8_lossy(&out.stdout);
    assert_eq!(head.lines().next(), Some("HTTP/2 418 "), "{head}");

    let mut args = https_url(&s.pki, mutual.mutual_port, "/status/418");
    args.extend(client_cert_args(&s.pki.client_cert(), &s.pki.client_key()));
    args.extend(["-w".to_owned(), "%{http_version}".to_owned()]);
    let out = curl(&strs(&args));
    assert_eq!((out.code, out.status), (0, 418), "{out:?}");
    assert_eq!(out.stdout, "2", "{out:?}");
    // The client certificate reaches the upstream over HTTP/2 too.
    let mut args = https_url(&s.pki, mutual.mutual_port, "/headers");
    args.extend(client_cert_args(&s.pki.client_cert(), &s.pki.client_key()));
    let out = curl(&strs(&args));
    assert!(out.text().contains("X-Forwarded-Client-Cert"), "{out:?}");
}

#[test]
fn prior_knowledge_on_a_plain_port_is_http2() {
    require("curl");
    let dir = TempDir::new("h2-h2c");
    let upstream = httpbin();
    let (port, _gw) = start_http(&dir, upstream.addr(), &[]);
    let out = curl_http(
        HTTPBIN,
        port,
        "/status/418",
        &["--http2-prior-knowledge", "-w", "%{http_version}"],
    );
    assert_eq!(
        (out.code, out.status, out.stdout.as_str()),
        (0, 418, "2"),
        "{out:?}"
    );
    // HTTP/1.1 on the same port as before.
    let out = curl_http(HTTPBIN, port, "/status/200", &["-w", "%{http_version}"]);
    assert_eq!(
        (out.code, out.status, out.stdout.as_str()),
        (0, 200, "1.1"),
        "{out:?}"
    );
}

#[test]
fn bodies_cross_both_ways_with_and_without_a_length() {
    require("curl");
    let dir = TempDir::new("h2-bodies");
    let upstream = httpbin();
    let (pki, port, _gw) = start_https(&dir, upstream.addr());
    let payload = dir.write("payload.txt", "0123456789".repeat(40_000));
    let data = format!("@{}", payload.display());
    for framing in [&[][..], &["-H", "Transfer-Encoding: chunked"][..]] {
        let mut args = vec!["--http2", "--data-binary", data.as_str()];
        args.extend_from_slice(framing);
        let out = curl_https(&pki, port, "/anything", &args);
        assert_eq!((out.code, out.status), (0, 200), "{framing:?}: {out:?}");
        let echo: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            echo["data"].as_str().map(str::len),
            Some(400_000),
            "{framing:?}: the upstream got the whole body"
        );
    }
    // A response far larger than a stream's initial window (64 KiB).
    let out = curl_https(&pki, port, "/bytes/3000000", &["--http2"]);
    assert_eq!(
        (out.code, out.status, out.body.len()),
        (0, 200, 3_000_000),
        "{:?}",
        out.stderr
    );
}

#[test]
fn the_access_log_says_http2_and_the_stream_limit_is_advertised() {
    require("curl");
    require("nghttp");
    let dir = TempDir::new("h2-log");
    let upstream = httpbin();
    let pki = pki(&dir);
    let port = free_port();
    let log = dir.join("access.log");
    let log_arg = log.to_string_lossy().into_owned();
    let _gw = Gateway::start(
        &dir,
        &https_config(&pki, port, upstream.addr()),
        &[
            "--access-log",
            &log_arg,
            "--http2-max-concurrent-streams",
            "37",
        ],
    );
    let out = curl_https(&pki, port, "/status/418", &["--http2"]);
    assert_eq!((out.code, out.status), (0, 418), "{out:?}");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_for(READ_TIMEOUT, || read().contains("/status/418")),
        "no access log line in {}",
        log.display()
    );
    let line = read();
    assert!(line.contains("\"GET /status/418 HTTP/2\" 418 "), "{line}");

    let mut command = Command::new("nghttp");
    command.args([
        "-nv",
        "--no-verify-peer",
        &format!("https://127.0.0.1:{port}/status/200"),
        "-H",
        &format!(":authority: {HTTPBIN}"),
    ]);
    let out = run_with_timeout(command, b"", CLIENT_TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):37]"),
        "{text}"
    );
}

#[test]
fn h2load_in_its_default_mode_completes_every_request_over_h2() {
    require("h2load");
    let dir = TempDir::new("h2-h2load");
    let upstream = httpbin();
    let pki = pki(&dir);
    let port = free_port();
    let _gw = Gateway::start(&dir, &any_host_config(&pki, port, upstream.addr()), &[]);
    let mut command = Command::new("h2load");
    command.args([
        "-n",
        "3000",
        "-c",
        "4",
        "-m",
        "10",
        &format!("https://localhost:{port}/status/200"),
    ]);
    let out = run_with_timeout(command, b"", CLIENT_TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert!(
        text.contains("requests: 3000 total, 3000 started, 3000 done, 3000 succeeded, 0 failed"),
        "{text}"
    );
    assert!(text.contains("status codes: 3000 2xx"), "{text}");
}

#[test]
fn a_rapid_reset_attack_gets_goaway_and_others_are_still_served() {
    require("curl");
    require_python_module("h2");
    let AnyHost {
        _dir,
        pki,
        port,
        mut gw,
        _upstream,
    } = start_any_host("h2-reset", &[]);
    let out = h2_peer(&["rapid-reset", &port.to_string(), "2000"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // h2 answers a flood of streams reset before they are served with GOAWAY
    // ENHANCE_YOUR_CALM, long before the 2000th.
    assert!(report.contains("goaway ENHANCE_YOUR_CALM"), "{report}");
    let out = curl_https(&pki, port, "/status/200", &["--http2"]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    gw.assert_running();
}

#[test]
fn a_window_never_opened_resets_the_stream_after_the_idle_timeout() {
    require("curl");
    require_python_module("h2");
    let AnyHost {
        _dir,
        pki,
        port,
        mut gw,
        _upstream,
    } = start_any_host("h2-window", &["--idle-timeout", "1"]);
    let peer = std::thread::spawn(move || h2_peer(&["shut-window", &port.to_string()]));
    // Meanwhile another client is served.
    let out = curl_https(&pki, port, "/status/200", &["--http2"]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    let out = peer.join().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    // The head goes out (it needs no window), the body never can: the stream is
    // reset once a send waited past the idle timeout.
    assert!(report.starts_with("headers\n"), "{report}");
    assert!(report.contains("reset INTERNAL_ERROR"), "{report}");
    assert!(!report.contains("data"), "{report}");
    gw.assert_running();
}

#[test]
fn an_idle_connection_gets_goaway_after_the_keepalive_timeout() {
    require_python_module("h2");
    let AnyHost {
        _dir,
        pki: _,
        port,
        gw: _gw,
        _upstream,
    } = start_any_host("h2-idle", &["--keepalive-timeout", "1"]);
    let started = std::time::Instant::now();
    let out = h2_peer(&["idle", &port.to_string()]);
    let report = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    assert_eq!(report, "goaway NO_ERROR\nclosed\n", "{errors}");
    // Not before the timeout (the script's own socket timeout is 10 s).
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "{report}"
    );
}

#[test]
fn grpc_clients_get_envoys_trailers_only_answer_to_gateway_errors() {
    require("curl");
    let dir = TempDir::new("h2-grpc");
    let upstream = httpbin();
    let pki = pki(&dir);
    let port = free_port();
    let dead: std::net::SocketAddr = ([127, 0, 0, 1], closed_port()).into();
    let http = format!(
        "  - match:
    - uri:
        prefix: /delay
{}    timeout: 1s
  - match:
    - uri:
        prefix: /dead
{}  - match:
    - uri:
        prefix: /status
{}",
        route_to("backend"),
        route_to("dead"),
        route_to("backend"),
    );
    let config = gateway_config(
        &[simple_https(&pki, port, "https", HTTPBIN)],
        &[HTTPBIN],
        &http,
        &[("backend", &[upstream.addr()]), ("dead", &[dead])],
    );
    let _gw = Gateway::start(&dir, &config, &[]);
    let grpc = [
        "--http2",
        "-X",
        "POST",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
    ];
    // (path, grpc-status): no route, no upstream, the route's timeout.
    for (path, code) in [("/nothing", "12"), ("/dead", "14"), ("/delay/3", "4")] {
        let out = curl_https(&pki, port, path, &grpc);
        assert_eq!((out.code, out.status), (0, 200), "{path}: {out:?}");
        assert_eq!(
            out.header("content-type"),
            Some("application/grpc"),
            "{path}: {out:?}"
        );
        assert_eq!(out.header("grpc-status"), Some(code), "{path}: {out:?}");
        assert!(out.header("grpc-message").is_some(), "{path}: {out:?}");
        assert!(out.body.is_empty(), "{path}: {out:?}");
    }
    // An upstream's own answer passes as it is, and a non-gRPC request gets the HTTP
    // error.
    let out = curl_https(&pki, port, "/status/404", &grpc);
    assert_eq!(
        (out.status, out.header("grpc-status")),
        (404, None),
        "{out:?}"
    );
    let out = curl_https(&pki, port, "/nothing", &["--http2"]);
    assert_eq!(
        (out.status, out.header("grpc-status")),
        (404, None),
        "{out:?}"
    );
}

#[test]
fn sigterm_lets_a_stream_in_flight_finish_and_exits_zero() {
    require("curl");
    let dir = TempDir::new("h2-drain");
    let upstream = Upstream::slow_on_request(std::time::Duration::from_secs(2));
    let pki = pki(&dir);
    let port = free_port();
    let mut gw = Gateway::start_ready(
        &dir,
        &https_config(&pki, port, upstream.addr),
        &["--drain-timeout", "30"],
    );
    let ca = pki.root_cert.clone();
    let slow = std::thread::spawn(move || {
        let args = https_url_for(HTTPBIN, port, &ca, "/slow");
        let mut args = strs(&args);
        args.extend(["--http2", "-w", "%{http_version}"]);
        curl(&args)
    });
    // The first request the upstream sees is the slow one (start_ready asked the
    // admin endpoint, not the port).
    assert!(
        wait_for(std::time::Duration::from_secs(5), || upstream
            .seen
            .requests()
            >= 1),
        "the slow request never reached the upstream"
    );
    gw.signal("TERM");
    let out = slow.join().expect("curl thread");
    assert_eq!(
        (out.code, out.status, out.stdout.as_str()),
        (0, 200, "2"),
        "{out:?}"
    );
    match gw.wait_exit(std::time::Duration::from_secs(20)) {
        Some(status) => assert_eq!(status.code(), Some(0), "log:\n{}", gw.log_text()),
        None => panic!("still running 20 s after SIGTERM; log:\n{}", gw.log_text()),
    }
    assert!(
        !gw.log_text().contains("drain timeout"),
        "{}",
        gw.log_text()
    );
}

#[test]
fn a_continuation_flood_gets_goaway_and_others_are_still_served() {
    require("curl");
    require_python_module("h2");
    let AnyHost {
        _dir,
        pki,
        port,
        mut gw,
        _upstream,
    } = start_any_host("h2-continuation", &[]);
    let out = h2_peer(&["continuation-flood", &port.to_string(), "5000"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Once the header list passes its limit (64 KiB, some 65 of these frames) the
    // connection ends with GOAWAY (ENHANCE_YOUR_CALM from the h2 crate) instead of
    // buffering 5 MB of headers that never end.
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("goaway ") && l != "goaway None"),
        "{report}"
    );
    let out = curl_https(&pki, port, "/status/200", &["--http2"]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    gw.assert_running();
}

/// Floods of frames that cost the sender nothing end in GOAWAY `ENHANCE_YOUR_CALM`:
/// empty DATA frames (the h2 crate's limit), PING and SETTINGS frames (ringress's
/// control-frame budget); memory stays bounded meanwhile, and other clients are served
/// throughout.
#[test]
fn ping_settings_and_empty_data_floods_get_goaway_and_others_are_served() {
    require("curl");
    require_python_module("h2");
    let AnyHost {
        _dir,
        pki,
        port,
        mut gw,
        _upstream,
    } = start_any_host("h2-floods", &[]);
    let rss_before = gw.peak_rss_kib();
    for kind in ["ping", "settings", "data"] {
        let out = h2_peer(&["flood", kind, &port.to_string(), "200000"]);
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{kind}: {report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seen = report.lines().find_map(|l| l.strip_prefix("goaway "));
        assert_eq!(seen, Some("ENHANCE_YOUR_CALM"), "{kind}: {report}");
        let out = curl_https(&pki, port, "/status/200", &["--http2"]);
        assert_eq!(
            (out.code, out.status),
            (0, 200),
            "after the {kind} flood: {out:?}"
        );
    }
    // 600,000 frames (some 10 MB) moved the peak by far less than they weigh.
    let grown = gw.peak_rss_kib().saturating_sub(rss_before);
    assert!(grown < 16 * 1024, "peak RSS grew by {grown} KiB");
    gw.assert_running();
}

#[test]
fn a_client_that_never_finishes_its_preface_is_closed_at_the_header_timeout() {
    require_python_module("h2");
    // The gateway's header timeout is HEADER_TIMEOUT_SECS (2 s).
    let AnyHost {
        _dir,
        pki: _,
        port,
        gw: _gw,
        _upstream,
    } = start_any_host("h2-preface", &[]);
    let out = h2_peer(&["stalled-preface", &port.to_string()]);
    // The script gives up after 10 s ("timeout"); the gateway closes after 2.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "closed\n", "{out:?}");
}
