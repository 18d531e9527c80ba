//! What ringress does when something goes wrong: upstreams that refuse, stall, close or
//! reset; clients that send malformed, oversized, ambiguous or no requests; TLS names no
//! server covers; and start-up errors (missing files, ports in use). After every failure
//! the gateway must still serve a good request.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// A gateway on a plain HTTP port for [`HTTPBIN`]: `/good` goes to httpbin (rewritten to
/// `/status/200`), everything else to the service `backend` at `backend_addr`.
fn start_with_backend(
    dir: &TempDir,
    port: u16,
    good: SocketAddr,
    backend_addr: SocketAddr,
) -> Gateway {
    start_with_rules(dir, port, good, backend_addr, "")
}

/// As [`start_with_backend`], with extra lines (e.g. `timeout: 1s`) in the backend rule.
fn start_with_rules(
    dir: &TempDir,
    port: u16,
    good: SocketAddr,
    backend_addr: SocketAddr,
    backend_rule_extra: &str,
) -> Gateway {
    let servers = [http_server(port, &[HTTPBIN])];
    let config = good_and_backend(&servers, good, backend_addr, backend_rule_extra);
    Gateway::start(dir, &config, &[])
}

/// The configuration of [`start_with_rules`] on the given `servers`.
fn good_and_backend(
    servers: &[String],
    good: SocketAddr,
    backend_addr: SocketAddr,
    backend_rule_extra: &str,
) -> String {
    let http = format!(
        "  - match:
    - uri:
        exact: /good
    rewrite:
      uri: /status/200
{}{}{backend_rule_extra}",
        route_to("good"),
        route_all("backend", SERVICE_PORT),
    );
    gateway_config(
        servers,
        &[HTTPBIN],
        &http,
        &[("good", &[good]), ("backend", &[backend_addr])],
    )
}

/// curl `http://HTTPBIN:PORT{path}` through the gateway.
fn curl_plain(port: u16, path: &str, extra: &[&str]) -> Curl {
    curl_http(HTTPBIN, port, path, extra)
}

#[test]
fn refused_upstream_gives_503() {
    require("curl");
    let dir = TempDir::new("fx-refused");
    let good = httpbin();
    let port = free_port();
    let refused: SocketAddr = ([127, 0, 0, 1], closed_port()).into();
    let mut gw = start_with_backend(&dir, port, good.addr(), refused);
    let out = curl_plain(port, "/anything", &[]);
    assert_eq!((out.code, out.status), (0, 503), "{out:?}");
    assert_http_ok(port, HTTPBIN, "/good");
    gw.assert_running();
}

#[test]
fn route_timeout_gives_504() {
    require("curl");
    let dir = TempDir::new("fx-timeout");
    let upstream = httpbin();
    let port = free_port();
    let mut gw = start_with_rules(
        &dir,
        port,
        upstream.addr(),
        upstream.addr(),
        "    timeout: 1s\n",
    );
    let out = curl_plain(port, "/delay/3", &[]);
    assert_eq!((out.code, out.status), (0, 504), "{out:?}");
    // A fast request on the same route is unaffected.
    let out = curl_plain(port, "/delay/0", &[]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    assert_http_ok(port, HTTPBIN, "/good");
    gw.assert_running();
}

#[test]
fn silent_upstream_gives_504_after_the_idle_timeout() {
    require("curl");
    let dir = TempDir::new("fx-silent");
    let good = httpbin();
    let silent = Upstream::silent();
    let port = free_port();
    let config = gateway_config(
        &[http_server(port, &[HTTPBIN])],
        &[HTTPBIN],
        &(prefix_rule("/status", "good") + &route_all("backend", SERVICE_PORT)),
        &[("good", &[good.addr()]), ("backend", &[silent.addr])],
    );
    let mut gw = Gateway::start(&dir, &config, &["--idle-timeout", "1"]);
    let out = curl_plain(port, "/anything", &[]);
    assert_eq!((out.code, out.status), (0, 504), "{out:?}");
    assert_http_ok(port, HTTPBIN, "/status/200");
    gw.assert_running();
}

#[test]
fn upstream_closing_before_responding_gives_502() {
    require("curl");
    let dir = TempDir::new("fx-close");
    let good = httpbin();
    // Reads the request and closes without a word.
    let closing = Upstream::answer_once(b"");
    let port = free_port();
    let mut gw = start_with_backend(&dir, port, good.addr(), closing.addr);
    let out = curl_plain(port, "/anything", &[]);
    assert_eq!((out.code, out.status), (0, 502), "{out:?}");
    assert!(closing.seen.requests() >= 1);
    assert_http_ok(port, HTTPBIN, "/good");
    gw.assert_running();
}

#[test]
fn upstream_reset_mid_body_is_never_a_complete_response() {
    require("curl");
    let dir = TempDir::new("fx-reset");
    let pki = pki(&dir);
    let good = httpbin();
    let truncating = Upstream::truncating();
    let port = free_port();
    let https_port = free_port();
    let config = good_and_backend(
        &http_and_https_servers(&pki, port, https_port),
        good.addr(),
        truncating.addr,
        "",
    );
    let mut gw = Gateway::start(&dir, &config, &[]);

    // curl: the head promised 1000 bytes, 10 came: a transfer error, never success
    // (over HTTPS curl speaks HTTP/2: the stream is reset, exit 92).
    for out in [
        curl_plain(port, "/download", &[]),
        curl_https(&pki, https_port, "/download", &["--http1.1"]),
        curl_https(&pki, https_port, "/download", &[]),
    ] {
        assert!(
            out.code == 18 || out.code == 56 || out.code == 92,
            "curl must report a partial transfer (18 or 56, 92 over HTTP/2), got exit {}: {out:?}",
            out.code
        );
        assert!(out.body.len() < 1000, "{out:?}");
    }

    // Raw: the connection is closed after fewer than 1000 body bytes, even though the
    // client asked for keep-alive.
    let request = format!("GET /download HTTP/1.1\r\nHost: {HTTPBIN}\r\n\r\n");
    let (bytes, closed) = raw_exchange(port, request.as_bytes());
    let text = String::from_utf8_lossy(&bytes);
    assert!(closed, "the client connection must be closed: {text}");
    if let Some(i) = find(&bytes, b"\r\n\r\n") {
        assert_eq!(first_status(&bytes), 200, "{text}");
        assert!(bytes.len() - (i + 4) < 1000, "{text}");
    }
    assert_http_ok(port, HTTPBIN, "/good");
    gw.assert_running();
}

/// A body whose end ringress cannot vouch for is never presented as complete (RFC
/// 9112 §9.8): a close-delimited response reset or stalled mid-body, and a chunked
/// one de-chunked for an HTTP/1.0 client beyond what ringress gathers, end the client
/// connection with a TCP reset — never a FIN or a TLS close_notify, which are how a
/// complete close-delimited body ends. curl then reports a receive error (56), never
/// success. A chunked body cut short while it is still being gathered for an HTTP/1.0
/// client never reaches it: the client gets a 502 instead.
#[test]
fn a_body_cut_short_never_ends_like_a_complete_one() {
    require("curl");
    let close_delimited: &'static [u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n0123456789abcdefghij";
    let chunked: &'static [u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n14\r\n0123456789abcdefghij\r\n10\r\n01234";
    // Past the 64 KiB ringress gathers for an HTTP/1.0 client, then cut.
    let mut long =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n14\r\n0123456789abcdefghij\r\n"
            .to_vec();
    long.extend_from_slice(format!("{:x}\r\n", 80 * 1024).as_bytes());
    long.extend_from_slice(&[b'x'; 70 * 1024]);
    let long: &'static [u8] = Box::leak(long.into_boxed_slice());
    let stall = Cut::Stall(Duration::from_secs(3));
    // (upstream reply, how it ends, client's HTTP version, the status curl sees and
    // its exit code).
    for (reply, cut, client, status, code) in [
        (close_delimited, Cut::Reset, "--http1.1", 200, 56),
        (close_delimited, stall, "--http1.1", 200, 56),
        (long, Cut::Reset, "--http1.0", 200, 56),
        (long, stall, "--http1.0", 200, 56),
        (chunked, Cut::Reset, "--http1.0", 502, 0),
        (chunked, stall, "--http1.0", 504, 0),
    ] {
        let dir = TempDir::new("fx-cut");
        let pki = pki(&dir);
        let good = httpbin();
        let cutting = Upstream::cut_short(reply, cut);
        let (port, https_port) = (free_port(), free_port());
        let config = good_and_backend(
            &http_and_https_servers(&pki, port, https_port),
            good.addr(),
            cutting.addr,
            "",
        );
        let mut gw = Gateway::start(&dir, &config, &["--idle-timeout", "1"]);
        for out in [
            curl_plain(port, "/download", &[client]),
            curl_https(&pki, https_port, "/download", &[client]),
        ] {
            assert_eq!(
                (out.code, out.status),
                (code, status),
                "{client} {cut:?}: curl must see {status} and exit {code}, got exit {}: {out:?}",
                out.code
            );
            if status == 200 {
                assert!(out.body.starts_with(b"0123456789"), "{out:?}");
            }
        }
        assert_http_ok(port, HTTPBIN, "/good");
        gw.assert_running();
    }
}

/// A gateway for the client-misbehaviour tests: plain HTTP, every request to a
/// recording upstream.
struct ClientFixture {
    // Dropped in this order: the gateway (printing its log on failure), then its
    // directory.
    gw: Gateway,
    _dir: TempDir,
    port: u16,
    upstream: Upstream,
}

impl ClientFixture {
    fn start(tag: &str) -> ClientFixture {
        let dir = TempDir::new(tag);
        let upstream = Upstream::named("a");
        let (port, gw) = start_http(&dir, upstream.addr, &[]);
        ClientFixture {
            _dir: dir,
            gw,
            port,
            upstream,
        }
    }

    /// Sends `request` in one write; returns the response bytes, whether the gateway
    /// closed the connection, and checks nothing reached the upstream.
    fn reject(&self, request: &[u8]) -> (Vec<u8>, bool) {
        let before = self.upstream.seen.requests();
        let (bytes, closed) = raw_exchange(self.port, request);
        assert_eq!(
            self.upstream.seen.requests(),
            before,
            "a rejected request reached the upstream: {:?}",
            String::from_utf8_lossy(request)
        );
        (bytes, closed)
    }

    /// [`ClientFixture::reject`], checking the response's status is `want`; returns the
    /// response text and whether the gateway closed the connection.
    #[track_caller]
    fn reject_with(&self, request: &[u8], want: u16) -> (String, bool) {
        let (bytes, closed) = self.reject(request);
        let context = format!("{:?}: ", String::from_utf8_lossy(request));
        assert_first_status(&bytes, want, &context);
        (String::from_utf8_lossy(&bytes).into_owned(), closed)
    }

    /// A good request still gets through.
    fn assert_serving(&mut self) {
        let request = format!("GET /ok HTTP/1.1\r\nHost: {HTTPBIN}\r\nConnection: close\r\n\r\n");
        let (bytes, _) = raw_exchange(self.port, request.as_bytes());
        assert_first_status(&bytes, 200, "");
        assert!(
            bytes.ends_with(b"a /ok 0"),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        self.gw.assert_running();
    }
}

#[test]
fn malformed_request_line_gives_400_and_close() {
    let mut fx = ClientFixture::start("fx-malformed");
    for request in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET  HTTP/1.1\r\nHost: httpbin.example.com\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost httpbin.example.com\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: httpbin.example.com\r\nBad Name: v\r\n\r\n",
    ] {
        let (text, closed) = fx.reject_with(request, 400);
        assert!(closed, "the connection must be closed after a 400: {text}");
    }
    // A well-formed line with a version ringress does not speak: 505, and close.
    let (_, closed) = fx.reject_with(b"GET /x HTTP/9.9\r\nHost: httpbin.example.com\r\n\r\n", 505);
    assert!(closed);
    // HTTP/1.1 without Host.
    fx.reject_with(b"GET /x HTTP/1.1\r\n\r\n", 400);
    fx.assert_serving();
}

#[test]
fn oversized_head_gives_431() {
    let mut fx = ClientFixture::start("fx-431");
    let big = "a".repeat(100 * 1024);
    let request = format!("GET /x HTTP/1.1\r\nHost: {HTTPBIN}\r\nX-Big: {big}\r\n\r\n");
    let (_, closed) = fx.reject_with(request.as_bytes(), 431);
    assert!(closed);

    // Many small headers adding up past the limit too.
    let mut many = format!("GET /x HTTP/1.1\r\nHost: {HTTPBIN}\r\n");
    for i in 0..2000 {
        many.push_str(&format!("X-H-{i}: {}\r\n", "b".repeat(40)));
    }
    many.push_str("\r\n");
    fx.reject_with(many.as_bytes(), 431);
    fx.assert_serving();
}

#[test]
fn ambiguous_framing_gives_400() {
    let mut fx = ClientFixture::start("fx-framing");
    let cases = [
        // Content-Length with Transfer-Encoding: request smuggling territory.
        format!(
            "POST /x HTTP/1.1\r\nHost: {HTTPBIN}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        // Two different lengths.
        format!(
            "POST /x HTTP/1.1\r\nHost: {HTTPBIN}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
        ),
        // A coding ringress does not know.
        format!("POST /x HTTP/1.1\r\nHost: {HTTPBIN}\r\nTransfer-Encoding: bogus\r\n\r\nhello"),
        // Chunked must be last.
        format!(
            "POST /x HTTP/1.1\r\nHost: {HTTPBIN}\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
        ),
        // Not a number.
        format!("POST /x HTTP/1.1\r\nHost: {HTTPBIN}\r\nContent-Length: 5x\r\n\r\nhello"),
    ];
    for request in &cases {
        let (text, closed) = fx.reject_with(request.as_bytes(), 400);
        assert!(closed, "{request:?}: {text}");
    }
    fx.assert_serving();
}

/// What a request-smuggling list found lenient is refused before anything reaches
/// the upstream: whitespace before a chunk line's CRLF, a malformed chunk extension,
/// a fragment in the target. Header names with `_` never reach it.
#[test]
fn smuggling_leniencies_are_refused() {
    let mut fx = ClientFixture::start("fx-smuggling");
    let chunked = |body: &str| {
        format!("POST /x HTTP/1.1\r\nHost: {HTTPBIN}\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
    };
    for request in [
        chunked("5 \r\nhello\r\n0\r\n\r\n"),
        chunked("5;;;===\"\r\nhello\r\n0\r\n\r\n"),
        chunked("80000000\r\nhello\r\n0\r\n\r\n"),
        format!("GET /x#fragment HTTP/1.1\r\nHost: {HTTPBIN}\r\n\r\n"),
    ] {
        let (text, closed) = fx.reject_with(request.as_bytes(), 400);
        assert!(closed, "{request:?}: {text}");
    }
    let request = format!(
        "GET /u HTTP/1.1\r\nHost: {HTTPBIN}\r\nX_Forwarded_For: 6.6.6.6\r\nX-Forwarded_Client-Cert: Hash=forged\r\nX_Plain: 1\r\nConnection: close\r\n\r\n"
    );
    let (bytes, _) = raw_exchange(fx.port, request.as_bytes());
    assert_first_status(&bytes, 200, "underscores");
    let head = fx
        .upstream
        .seen
        .heads()
        .pop()
        .expect("the upstream saw the request");
    let lower = head.to_ascii_lowercase();
    assert!(
        !lower.contains('_')
            && lower.contains("x-forwarded-for: 127.0.0.1\r\n")
            && !lower.contains("6.6.6.6"),
        "{head}"
    );
    fx.assert_serving();
}

/// A chunked request body reaches the upstream re-serialised: size lines in
/// canonical form, extensions gone, trailers kept.
#[test]
fn chunked_request_bodies_are_re_serialised() {
    let received = Arc::new(Mutex::new(Vec::new()));
    let upstream = Upstream::spawn({
        let received = received.clone();
        move |mut stream, _| {
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            while find(&raw, b"\r\n0\r\n").is_none() || !raw.ends_with(b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
            }
            *received.lock().unwrap() = raw;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    let dir = TempDir::new("fx-rechunk");
    let (port, mut gw) = start_http(&dir, upstream.addr, &[]);
    let request = format!(
        "POST /c HTTP/1.1\r\nHost: {HTTPBIN}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0005;name=\"v\"\r\nhello\r\nA ;x\r\n0123456789\r\n0\r\nX-Sum: 15\r\n\r\n"
    );
    let (bytes, _) = raw_exchange(port, request.as_bytes());
    assert_first_status(&bytes, 200, "chunked");
    let raw = received.lock().unwrap().clone();
    let body = &raw[find(&raw, b"\r\n\r\n").expect("a head") + 4..];
    assert_eq!(
        String::from_utf8_lossy(body),
        "5\r\nhello\r\na\r\n0123456789\r\n0\r\nX-Sum: 15\r\n\r\n"
    );
    gw.assert_running();
}

#[test]
fn a_silent_client_is_closed_after_the_header_timeout() {
    let dir = TempDir::new("fx-header-timeout");
    let upstream = Upstream::named("a");
    let (_pki, port, https_port, mut gw) = start_http_and_https(&dir, upstream.addr);
    // READ_TIMEOUT (10 s) is well above --header-timeout (2 s): a close before it is the
    // gateway's doing.
    assert!(READ_TIMEOUT > Duration::from_secs(HEADER_TIMEOUT_SECS * 3));

    // Nothing at all on the plain and the TLS port (no ClientHello), and half a head:
    // closed, with nothing or a 408.
    let half_head = format!("GET /x HTTP/1.1\r\nHost: {HTTPBIN}\r\n");
    for (p, sent, what) in [
        (port, "", "nothing"),
        (https_port, "", "nothing"),
        (port, half_head.as_str(), "a half head"),
    ] {
        let mut stream = connect(p);
        stream.write_all(sent.as_bytes()).expect("sending");
        let (bytes, closed) = read_to_close(&mut stream);
        assert!(
            closed,
            "port {p}, {what}: not closed within {READ_TIMEOUT:?}"
        );
        assert!(
            bytes.is_empty() || first_status(&bytes) == 408,
            "port {p}, {what}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    assert_eq!(upstream.seen.requests(), 0);
    assert_http_ok(port, HTTPBIN, "/fine");
    gw.assert_running();
}

#[test]
fn unknown_sni_gets_an_alert_never_another_certificate() {
    require_tools();
    let dir = TempDir::new("fx-sni");
    let pki = pki(&dir);
    let upstream = httpbin();
    let port = free_port();
    let mut gw = Gateway::start(&dir, &sni_config(&pki, port, upstream.addr()), &[]);
    let root = pki.root_cert.to_string_lossy().into_owned();

    // A name no server covers: an alert, no certificate. No SNI at all: no server is
    // chosen either, so no certificate.
    for (sni, what) in [
        ("unknown.example.com", "for an unknown name"),
        ("", "without SNI"),
    ] {
        let out = s_client(port, sni, &["-CAfile", &root], b"");
        assert_ne!(out.code, 0, "{}", out.output);
        if !sni.is_empty() {
            assert!(out.output.contains("alert"), "{}", out.output);
        }
        assert!(
            served_subject(&out.output).is_none() && !out.output.contains("BEGIN CERTIFICATE"),
            "a certificate was served {what}: {}",
            out.output
        );
    }
    // curl: a TLS error (35), no HTTP exchange.
    let out = curl_https_for("unknown.example.com", port, &pki.root_cert, "/status/200");
    assert_eq!(out.code, 35, "{out:?}");
    assert_eq!(out.status, 0, "{out:?}");

    // The served hosts still work.
    let out = curl_https(&pki, port, "/status/200", &[]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    gw.assert_running();
}

#[test]
fn run_with_a_missing_certificate_names_the_file() {
    let dir = TempDir::new("fx-missing-cert");
    let pki = pki(&dir);
    let port = free_port();
    let missing = dir.join("pki/missing.crt");
    let config = dir.write(
        "gateway.yaml",
        backend_config(
            &[https_server(
                port,
                "https",
                &[HTTPBIN],
                &simple_tls(&missing, &pki.key(HTTPBIN)),
            )],
            &[HTTPBIN],
            &["127.0.0.1:9".parse().expect("addr")],
        ),
    );
    let (code, output) = run_expecting_exit(&config, &[]);
    assert_ne!(code, 0, "{output}");
    assert!(output.contains(&*missing.to_string_lossy()), "{output}");
}

#[test]
fn a_port_in_use_is_a_clear_error_naming_the_address() {
    let dir = TempDir::new("fx-port-in-use");
    let upstream = Upstream::named("a");
    let port = free_port();
    let taken = TcpListener::bind(("127.0.0.1", port)).expect("taking the port");
    let config = dir.write("gateway.yaml", http_config(port, HTTPBIN, upstream.addr));
    let (code, output) = run_expecting_exit(&config, &[]);
    assert_ne!(code, 0, "{output}");
    assert!(output.contains(&format!("127.0.0.1:{port}")), "{output}");
    drop(taken);
}

#[test]
fn a_second_gateway_on_the_same_port_is_refused() {
    let dir = TempDir::new("fx-two-gateways");
    let upstream = Upstream::named("a");
    let (port, mut first) = start_http(&dir, upstream.addr, &[]);
    let second_dir = TempDir::new("fx-two-gateways-2");
    let config = second_dir.write("gateway.yaml", http_config(port, HTTPBIN, upstream.addr));
    let second = run_command(&config, &[]);
    // A start-up error takes well under a second; a second gateway still running after
    // this long has bound the port alongside the first.
    let out = try_run_with_timeout(second, b"", Duration::from_secs(3)).unwrap_or_else(|out| {
        panic!(
            "a second ringress started on 127.0.0.1:{port}, already served by the first, \
             and shares it instead of failing; its output:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let output = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{output}");
    assert!(output.contains(&format!("127.0.0.1:{port}")), "{output}");
    first.assert_running();
    assert_http_ok(port, HTTPBIN, "/still-first");
}

#[test]
fn invalid_upstream_response_gives_502() {
    require("curl");
    let dir = TempDir::new("fx-bad-response");
    let good = httpbin();
    let garbage = Upstream::answer_once(b"SPLAT not http at all\r\n\r\n");
    let port = free_port();
    let mut gw = start_with_backend(&dir, port, good.addr(), garbage.addr);
    let out = curl_plain(port, "/anything", &[]);
    assert_eq!((out.code, out.status), (0, 502), "{out:?}");
    assert_http_ok(port, HTTPBIN, "/good");
    gw.assert_running();
}

#[test]
fn idle_keep_alive_clients_are_closed_after_the_keepalive_timeout() {
    let dir = TempDir::new("fx-keepalive-timeout");
    let upstream = Upstream::named("a");
    let (port, mut gw) = start_http(&dir, upstream.addr, &["--keepalive-timeout", "1"]);
    let mut stream = connect(port);
    let (status, body) = request_on(&mut stream, HTTPBIN, "/one");
    assert_eq!((status, body.as_str()), (200, "a /one 0"));
    // Idle now: closed well before READ_TIMEOUT, with nothing more sent.
    let (rest, closed) = read_to_close(&mut stream);
    assert!(closed, "an idle keep-alive connection must be closed");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    gw.assert_running();
}

#[test]
fn plaintext_on_the_tls_port_is_refused_and_the_port_keeps_serving() {
    require("curl");
    let dir = TempDir::new("fx-plaintext-tls");
    let upstream = httpbin();
    let (pki, port, mut gw) = start_https(&dir, upstream.addr());
    let request = format!("GET /status/200 HTTP/1.1\r\nHost: {HTTPBIN}\r\n\r\n");
    let (bytes, closed) = raw_exchange(port, request.as_bytes());
    assert!(closed, "plaintext on a TLS port must be closed");
    assert!(
        !String::from_utf8_lossy(&bytes).contains("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let out = curl_https(&pki, port, "/status/200", &[]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    gw.assert_running();
}

#[test]
fn many_concurrent_clients_are_all_served() {
    let dir = TempDir::new("fx-concurrent");
    let upstream = httpbin();
    let (pki, port, _gw) = start_https(&dir, upstream.addr());
    let config = client_config(&pki.root_cert, None);
    let clients: Vec<_> = (0..32)
        .map(|i| {
            let config = config.clone();
            std::thread::spawn(move || -> Result<Vec<u16>, String> {
                let mut tls = tls_connect(port, HTTPBIN, config).map_err(|e| e.to_string())?;
                let mut statuses = Vec::new();
                for j in 0..5 {
                    let request =
                        format!("GET /anything/{i}/{j} HTTP/1.1\r\nHost: {HTTPBIN}\r\n\r\n");
                    tls.write_all(request.as_bytes())
                        .map_err(|e| e.to_string())?;
                    let (status, _, body) = read_response(&mut tls).map_err(|e| e.to_string())?;
                    let body = String::from_utf8_lossy(&body);
                    if !body.contains(&format!("/anything/{i}/{j}")) {
                        return Err(format!("client {i} request {j} got {body}"));
                    }
                    statuses.push(status);
                }
                Ok(statuses)
            })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let statuses = client
            .join()
            .expect("client thread")
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(statuses, vec![200; 5], "client {i}");
    }
}

#[test]
fn bad_command_lines_and_missing_config_files_are_named() {
    let dir = TempDir::new("fx-cli");
    let upstream = Upstream::named("a");
    let port = free_port();
    let config = dir.write("gateway.yaml", http_config(port, HTTPBIN, upstream.addr));
    for (flag, value) in [
        ("--header-timeout", "0"),
        ("--keepalive-timeout", "-1"),
        ("--idle-timeout", "soon"),
        ("--shards", "0"),
    ] {
        let arg = format!("{flag}={value}");
        let (code, output) = run_expecting_exit(&config, &[&arg]);
        assert_ne!(code, 0, "{arg}: {output}");
        assert!(output.contains(flag), "{arg}: {output}");
    }
    let missing = dir.join("nowhere.yaml");
    let (code, output) = run_expecting_exit(&missing, &[]);
    assert_ne!(code, 0, "{output}");
    assert!(output.contains(&*missing.to_string_lossy()), "{output}");
    let out = ringress(&["check", "--config", &missing.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&*missing.to_string_lossy()));
}

#[test]
fn retries_follow_retry_on_and_a_zero_timeout_means_none() {
    require("curl");
    let dir = TempDir::new("fl-retries");
    // The first request for each path is answered 503, every later one 200.
    let upstream = Upstream::spawn(|mut stream, seen| {
        let mut buf = Vec::new();
        while let Some((head, _)) = read_request(&mut stream, &mut buf) {
            let line = head.lines().next().unwrap_or_default().to_owned();
            let first = !seen.heads().iter().any(|h| h.starts_with(&line));
            seen.record_head(head);
            let reply: &[u8] = if first {
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbusy"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            };
            if stream.write_all(reply).is_err() || first {
                return;
            }
        }
    });
    let port = free_port();
    let http = "  - match:
    - uri:
        prefix: /no-retries
    retries:
      attempts: 0
    route:
    - destination:
        host: backend
        port:
          number: 8000
  - timeout: 0s
    retries:
      attempts: 2
      perTryTimeout: 2s
      retryOn: 5xx
    route:
    - destination:
        host: backend
        port:
          number: 8000
";
    let config = gateway_config(
        &[http_server(port, &[HTTPBIN])],
        &[HTTPBIN],
        http,
        &[("backend", &[upstream.addr][..])],
    );
    let _gw = Gateway::start(&dir, &config, &[]);
    let tries = |path: &str| {
        let request_line = format!("GET {path} ");
        let heads = upstream.seen.heads();
        heads
            .iter()
            .filter(|h| h.starts_with(&request_line))
            .count()
    };
    // retryOn 5xx (and `timeout: 0s`, no limit): the 503 is retried, the client sees
    // the second try's 200.
    let out = curl_http(HTTPBIN, port, "/retried", &[]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    assert_eq!(out.body, b"ok", "{out:?}");
    assert_eq!(tries("/retried"), 2, "one failed try, one retry");
    // attempts: 0 never retries: the 503 reaches the client.
    let out = curl_http(HTTPBIN, port, "/no-retries", &[]);
    assert_eq!((out.code, out.status), (0, 503), "{out:?}");
    assert_eq!(tries("/no-retries"), 1, "exactly one try");
}
