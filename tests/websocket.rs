//! WebSocket through the real `ringress` binary: a `websockets` echo server
//! (`tests/tools/ws_peer.py serve`) behind a plain HTTP and an HTTPS server, reached by
//! the `websockets` client (text, 1 MiB binary and many small messages both ways, the
//! upstream's view of the handshake), the Autobahn fuzzing cases run by `kosoku`
//! straight at the echo server and through the gateway (every case that passes
//! straight must pass through), an idle tunnel closed after `--idle-timeout`, and the
//! upgrades ringress does not relay. WebSocket over HTTP/2 (RFC 8441's extended
//! CONNECT, `ws_peer.py h2-client` on the `h2` and `websockets` packages) reaches the
//! same HTTP/1.1 echo server, over TLS and over prior-knowledge h2c, and the
//! Autobahn cases run over it too (through `ws_peer.py h2-bridge`). Of the
//! upgrades ringress does not relay: another protocol is refused with Envoy's 403
//! (`upgrade_failed`), `h2c` is served as HTTP/1.1 without it, and an upstream that
//! declines the upgrade answers as usual.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Runs `tests/tools/ws_peer.py ARGS` and parses its one JSON line.
fn ws_peer(args: &[&str], limit: Duration) -> serde_json::Value {
    let mut command = Command::new("python3");
    command.arg(tool("ws_peer.py")).args(args);
    let out = run_with_timeout(command, b"", limit);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ws_peer.py {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn echo_server(dir: &TempDir) -> PyServer {
    require_python_module("websockets");
    PyServer::start(dir, "ws_peer.py", &["serve"], &[])
}

#[test]
fn messages_go_both_ways_over_http_and_https() {
    let dir = TempDir::new("ws-echo");
    let echo = echo_server(&dir);
    let (pki, http_port, https_port, mut gw) = start_http_and_https(&dir, echo.addr);
    let ca = pki.root_cert.to_string_lossy().into_owned();
    for (scheme, port, proto) in [("ws", http_port, "http"), ("wss", https_port, "https")] {
        let url = format!("{scheme}://{HTTPBIN}:{port}/headers");
        let args = ["client", &url, "--cafile", &ca, "--connect-to", "127.0.0.1"];
        let got = ws_peer(&args, Duration::from_secs(30));
        assert_eq!(got["echoed"], 102, "{url}: {got}");
        assert_eq!(got["close"], 1000, "{url}: {got}");
        // What the upstream saw of the handshake: the upgrade asked for, the
        // gateway's forwarding headers, the client's WebSocket headers as sent.
        let seen = &got["headers"];
        assert_eq!(seen["upgrade"], "websocket", "{url}: {seen}");
        assert_eq!(seen["connection"], "upgrade", "{url}: {seen}");
        assert_eq!(seen["x-forwarded-proto"], proto, "{url}: {seen}");
        assert_eq!(seen["sec-websocket-version"], "13", "{url}: {seen}");
        assert!(seen["sec-websocket-key"].is_string(), "{url}: {seen}");
        assert!(seen["x-request-id"].is_string(), "{url}: {seen}");
        // And of the 101: the server's accept key and extensions, ringress's name.
        let answer = &got["response_headers"];
        assert_eq!(answer["upgrade"], "websocket", "{url}: {answer}");
        assert_eq!(answer["server"], "ringress", "{url}: {answer}");
        assert!(
            answer["sec-websocket-accept"].is_string(),
            "{url}: {answer}"
        );
    }
    // One access-log line per tunnel, written when it ends, as Envoy logs a stream.
    gw.wait_log_count("\"GET /headers HTTP/1.1\" 101 - via_upstream", 2);
}

#[test]
fn websocket_over_http2_reaches_an_http1_upstream() {
    require_python_module("h2");
    let dir = TempDir::new("ws-h2");
    let echo = echo_server(&dir);
    let (pki, http_port, https_port, mut gw) = start_http_and_https(&dir, echo.addr);
    let ca = pki.root_cert.to_string_lossy().into_owned();
    for (scheme, port, proto) in [("wss", https_port, "https"), ("ws", http_port, "http")] {
        let url = format!("{scheme}://{HTTPBIN}:{port}/headers");
        let args = [
            "h2-client",
            &url,
            "--cafile",
            &ca,
            "--connect-to",
            "127.0.0.1",
        ];
        let got = ws_peer(&args, Duration::from_secs(30));
        // The upstream's 101 is the stream's 200 (RFC 8441 §5).
        assert_eq!(got["status"], 200, "{url}: {got}");
        assert_eq!(got["echoed"], 102, "{url}: {got}");
        assert_eq!(got["close"], 1000, "{url}: {got}");
        // The client's END_STREAM half-closed the upstream, whose close ended the
        // stream cleanly.
        assert_eq!(got["ended"], "end_stream", "{url}: {got}");
        // What the upstream saw: an HTTP/1.1 upgrade, with a key ringress made (an
        // HTTP/2 client sends none) and the gateway's forwarding headers.
        let seen = &got["headers"];
        assert_eq!(seen["upgrade"], "websocket", "{url}: {seen}");
        assert_eq!(seen["connection"], "upgrade", "{url}: {seen}");
        assert_eq!(seen["sec-websocket-version"], "13", "{url}: {seen}");
        let key = seen["sec-websocket-key"].as_str().unwrap_or_default();
        assert_eq!(key.len(), 24, "a base64 16-byte nonce: {url}: {seen}");
        assert_eq!(seen["x-forwarded-proto"], proto, "{url}: {seen}");
        // The accept key answers ringress's key, not the client's: not relayed; and
        // no HTTP/1.1 connection headers in an HTTP/2 response.
        let answer = &got["response_headers"];
        assert_eq!(answer["server"], "ringress", "{url}: {answer}");
        assert!(
            answer.get("sec-websocket-accept").is_none(),
            "{url}: {answer}"
        );
        assert!(answer.get("upgrade").is_none(), "{url}: {answer}");
    }
    // Each tunnel logged once, when it ended, with the upstream's 101.
    gw.wait_log_count("\"GET /headers HTTP/2\" 101 - via_upstream", 2);

    // Another protocol is refused as over HTTP/1.1: Envoy's 403.
    let url = format!("wss://{HTTPBIN}:{https_port}/");
    let args = [
        "h2-client",
        &url,
        "--cafile",
        &ca,
        "--connect-to",
        "127.0.0.1",
        "--protocol",
        "chat",
    ];
    let got = ws_peer(&args, Duration::from_secs(30));
    assert_eq!(got["status"], 403, "{got}");
    gw.assert_running();
}

#[test]
fn an_http2_clients_end_stream_half_closes_the_upstream() {
    require_python_module("h2");
    let dir = TempDir::new("ws-h2-half");
    let counting = PyServer::start(&dir, "ws_peer.py", &["serve-counting"], &[]);
    let (pki, _, https_port, mut gw) = start_http_and_https(&dir, counting.addr);
    let ca = pki.root_cert.to_string_lossy().into_owned();
    let url = format!("wss://{HTTPBIN}:{https_port}/");
    // More than the stream's initial window: the upstream's pace holds the client.
    let count = (3 << 20).to_string();
    let args = [
        "h2-half-close",
        &url,
        &count,
        "--cafile",
        &ca,
        "--connect-to",
        "127.0.0.1",
    ];
    let got = ws_peer(&args, Duration::from_secs(30));
    assert_eq!(got["status"], 200, "{got}");
    // The upstream answered after it saw the FIN: the tunnel outlived the client's
    // END_STREAM, and ended with the upstream's close.
    assert_eq!(got["reply"], format!("received {count}"), "{got}");
    assert_eq!(got["ended"], "end_stream", "{got}");
    gw.assert_running();
}

#[test]
fn other_upgrades_are_refused_and_h2c_is_served_without_it() {
    let dir = TempDir::new("ws-refused");
    let upstream = httpbin();
    let (port, mut gw) = start_http(&dir, upstream.addr(), &[]);
    // Envoy's answer to an upgrade its configuration does not allow.
    let r = curl_http(
        HTTPBIN,
        port,
        "/get",
        &["-H", "Connection: upgrade", "-H", "Upgrade: spdy/3"],
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.text(), "", "{r:?}");
    // h2c: the request goes on as HTTP/1.1, Upgrade and Connection dropped.
    let r = curl_http(
        HTTPBIN,
        port,
        "/headers",
        &[
            "-H",
            "Connection: upgrade, HTTP2-Settings",
            "-H",
            "Upgrade: h2c",
            "-H",
            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = r.text().to_ascii_lowercase();
    assert!(
        !seen.contains("\"upgrade\"") && !seen.contains("http2-settings"),
        "{seen}"
    );
    // An upstream that is not a WebSocket server answers the handshake as any request.
    let r = curl_http(
        HTTPBIN,
        port,
        "/get",
        &[
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    gw.wait_log_count("\"GET /get HTTP/1.1\" 403 - upgrade_failed", 1);
}

#[test]
fn an_idle_tunnel_is_closed_after_the_idle_timeout() {
    let dir = TempDir::new("ws-idle");
    let echo = echo_server(&dir);
    let (port, _gw) = start_http(&dir, echo.addr, &["--idle-timeout", "1"]);
    let url = format!("ws://{HTTPBIN}:{port}/");
    let got = ws_peer(
        &["idle", &url, "8", "--connect-to", "127.0.0.1"],
        Duration::from_secs(30),
    );
    let after = got["closed_after"]
        .as_f64()
        .unwrap_or_else(|| panic!("never closed: {got}"));
    assert!((0.5..6.0).contains(&after), "{got}");
}

/// Autobahn's cases except 12.* and 13.* (permessage-deflate: relayed as any other
/// bytes, and minutes long; run by hand, see the README).
#[test]
fn autobahn_cases_that_pass_straight_pass_through_the_gateway() {
    require_python_module("kosoku");
    let dir = TempDir::new("ws-autobahn");
    let echo = echo_server(&dir);
    // Any Host: the runner sends its own address.
    let port = free_port();
    let _gw = Gateway::start(&dir, &http_config(port, "*", echo.addr), &[]);
    let run = |url: String, out: &str| -> BTreeMap<String, String> {
        let outdir = dir.join(out).to_string_lossy().into_owned();
        let report = ws_peer(
            &["autobahn", &url, &outdir, "-x", "12.*", "-x", "13.*"],
            Duration::from_secs(600),
        );
        serde_json::from_value(report).expect("a case map")
    };
    // And over HTTP/2: the runner speaks HTTP/1.1 to a bridge that opens an extended
    // CONNECT to the gateway (h2c) for each of its connections.
    require_python_module("h2");
    let bridge_dir = TempDir::new("ws-autobahn-bridge");
    let gateway = format!("ws://127.0.0.1:{port}/");
    let bridge = PyServer::start(&bridge_dir, "ws_peer.py", &["h2-bridge"], &[&gateway]);
    let straight = run(format!("ws://{}", echo.addr), "straight");
    let through = run(format!("ws://127.0.0.1:{port}"), "through");
    let over_h2 = run(format!("ws://{}", bridge.addr), "over-h2");
    assert!(straight.len() > 250, "{straight:?}");
    let passed = straight.iter().filter(|(_, r)| *r == "OK").count();
    assert!(
        passed > 250,
        "only {passed} cases pass against the echo server itself"
    );
    for (how, results) in [("through the gateway", &through), ("over HTTP/2", &over_h2)] {
        let worse: Vec<_> = straight
            .iter()
            .filter(|(case, r)| *r == "OK" && results.get(*case).map(String::as_str) != Some("OK"))
            .map(|(case, _)| (case, results.get(case)))
            .collect();
        assert!(worse.is_empty(), "cases that fail only {how}: {worse:?}");
    }
}
