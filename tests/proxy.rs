//! What ringress does to requests it proxies: connection reuse and pipelining, bodies in
//! both framings and at size (with a bound on the gateway's memory while they stream),
//! the headers it adds and removes, routing (match kinds, first match wins, redirects,
//! direct responses, weights, load balancing) and TLS (verification, ALPN, versions,
//! session resumption).

mod common;

use std::io::{Read, Write};

use common::*;

use common::header_value as get;

/// The values of every header `name` in `headers`.
fn all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a String> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn keep_alive_reuses_one_client_and_one_upstream_connection() {
    require("curl");
    let dir = TempDir::new("px-keepalive");
    let upstream = Upstream::named("a");
    let (pki, port, _gw) = start_https(&dir, upstream.addr);
    let out = curl(&[
        "--resolve",
        &resolve(HTTPBIN, port),
        "--cacert",
        &pki.root_cert.to_string_lossy(),
        "-w",
        "%{num_connects}\n",
        &format!("https://{HTTPBIN}:{port}/one"),
        "-o",
        "/dev/null",
        &format!("https://{HTTPBIN}:{port}/two"),
    ]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    let connects: Vec<u32> = out
        .stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(
        connects,
        vec![1, 0],
        "two URLs over one connection: {out:?}"
    );
    assert_eq!(upstream.seen.requests(), 2);
    assert_eq!(
        upstream
            .seen
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the upstream connection should be kept alive and reused"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let dir = TempDir::new("px-pipeline");
    let upstream = Upstream::named("a");
    let (pki, http_port, https_port, _gw) = start_http_and_https(&dir, upstream.addr);
    let pipelined = format!(
        "GET /first HTTP/1.1\r\nHost: {HTTPBIN}\r\n\r\n\
         POST /second HTTP/1.1\r\nHost: {HTTPBIN}\r\nContent-Length: 5\r\n\r\nhello\
         GET /third HTTP/1.1\r\nHost: {HTTPBIN}\r\nConnection: close\r\n\r\n"
    );

    // Three responses, in the order of the requests.
    let assert_in_order = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        assert_eq!(statuses(bytes), vec![200, 200, 200], "{text}");
        let first = text.find("a /first 0").expect(&text);
        let second = text.find("a /second 5").expect(&text);
        let third = text.find("a /third 0").expect(&text);
        assert!(first < second && second < third, "{text}");
    };

    // Plain: three requests in one write, three responses in order, then close.
    let (bytes, clean) = raw_exchange(http_port, pipelined.as_bytes());
    assert_in_order(&bytes);
    assert!(
        clean,
        "the gateway should close after `Connection: close`: {}",
        String::from_utf8_lossy(&bytes)
    );

    // The same over TLS with a rustls client.
    let mut tls = tls_connect(https_port, HTTPBIN, client_config(&pki.root_cert, None))
        .expect("TLS handshake");
    tls.write_all(pipelined.as_bytes()).expect("sending");
    let (bytes, _) = read_to_close(&mut tls);
    assert_in_order(&bytes);
}

#[test]
fn chunked_upload_reaches_the_upstream_whole() {
    require("curl");
    let dir = TempDir::new("px-chunked");
    let upstream = httpbin();
    let (pki, port, _gw) = start_https(&dir, upstream.addr());
    let payload: String = (0..2000).map(|i| format!("line {i};")).collect();
    let out = curl_https(
        &pki,
        port,
        "/anything/upload",
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            &payload,
        ],
    );
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    let body = out.text();
    assert!(body.contains("\"method\": \"POST\""), "{body}");
    assert!(
        body.contains(&format!("\"data\": \"{payload}\"")),
        "the echoed data should be the payload: {}",
        &body[..body.len().min(500)]
    );

    // A raw chunked request with odd chunk sizes, split over several writes.
    let plain_dir = TempDir::new("px-chunked-raw");
    let recorder = Upstream::named("r");
    let (plain_port, _plain) = start_http(&plain_dir, recorder.addr, &[]);
    let mut stream = connect(plain_port);
    let head =
        format!("POST /raw HTTP/1.1\r\nHost: {HTTPBIN}\r\nTransfer-Encoding: chunked\r\n\r\n");
    let pieces: [&[u8]; 5] = [
        head.as_bytes(),
        b"3\r\nabc\r\n1",
        b"0\r\n0123456789abcdef\r\n",
        b"0\r\n",
        b"\r\n",
    ];
    for piece in pieces {
        stream.write_all(piece).expect("sending a piece");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (status, _, body) = read_response(&mut stream).expect("response");
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body), "r /raw 19");
}

/// Bytes each way in the large-transfer test.
const LARGE: u64 = 256 * 1024 * 1024;
/// How much the gateway's peak resident memory may grow while `LARGE` bytes stream
/// through it each way: far less than the body, so it cannot have been buffered.
const STREAM_MEMORY_GROWTH_KIB: u64 = 32 * 1024;
/// A generous bound on the whole process's peak resident memory during that test.
const STREAM_MEMORY_PEAK_KIB: u64 = 64 * 1024;

#[test]
fn large_bodies_stream_both_ways_in_bounded_memory() {
    let dir = TempDir::new("px-large");
    let sink = Upstream::named("sink");
    let source = Upstream::source(LARGE);
    let port = free_port();
    let config = gateway_config(
        &[http_server(port, &[HTTPBIN])],
        &[HTTPBIN],
        &(prefix_rule("/download", "source") + &route_all("sink", SERVICE_PORT)),
        &[("sink", &[sink.addr]), ("source", &[source.addr])],
    );
    let gw = Gateway::start(&dir, &config, &[]);
    // Warm up (first connections, buffers), then take the baseline.
    let mut stream = connect(port);
    assert_eq!(request_on(&mut stream, HTTPBIN, "/warm").0, 200);
    let baseline = gw.peak_rss_kib();

    // Upload: Content-Length, written in 64 KiB pieces.
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {HTTPBIN}\r\nContent-Type: application/octet-stream\r\nContent-Length: {LARGE}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("upload head");
    let piece = vec![7u8; 64 * 1024];
    let mut left = LARGE;
    while left > 0 {
        let n = left.min(piece.len() as u64) as usize;
        stream.write_all(&piece[..n]).expect("upload body");
        left -= n as u64;
    }
    let (status, _, body) = read_response(&mut stream).expect("upload response");
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("sink /upload {LARGE}")
    );

    // Download on the same connection: count the bytes.
    let request = format!("GET /download HTTP/1.1\r\nHost: {HTTPBIN}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .expect("download request");
    let mut buf = vec![0u8; 256 * 1024];
    let mut received: Vec<u8> = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&received, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).expect("download head");
        assert!(n > 0, "closed before the head");
        received.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    assert_eq!(first_status(head.as_bytes()), 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {LARGE}")),
        "{head}"
    );
    let mut got = (received.len() - head_end) as u64;
    while got < LARGE {
        let n = stream.read(&mut buf).expect("download body");
        assert!(n > 0, "download ended after {got} of {LARGE} bytes");
        got += n as u64;
    }
    assert_eq!(got, LARGE);

    let peak = gw.peak_rss_kib();
    eprintln!("ringress VmHWM: {baseline} KiB before, {peak} KiB after 2 x {LARGE} bytes");
    assert!(
        peak < STREAM_MEMORY_PEAK_KIB,
        "ringress's peak memory reached {peak} KiB while streaming"
    );
    assert!(
        peak.saturating_sub(baseline) < STREAM_MEMORY_GROWTH_KIB,
        "ringress's peak memory grew from {baseline} KiB to {peak} KiB while streaming"
    );
}

#[test]
fn download_over_tls_arrives_whole() {
    let dir = TempDir::new("px-tls-download");
    let upstream = httpbin();
    let (pki, port, _gw) = start_https(&dir, upstream.addr());
    let mut tls =
        tls_connect(port, HTTPBIN, client_config(&pki.root_cert, None)).expect("TLS handshake");
    let len = 8 * 1024 * 1024;
    // Content-Length and chunked downloads, reproducible bytes. The first response goes
    // out while rustls still holds the connection, the later ones through ringress's
    // TLS 1.3 records: the same bytes either way.
    let mut bodies = Vec::new();
    for path in [
        format!("/bytes/{len}?seed=7"),
        format!("/stream-bytes/{len}?seed=7&chunk_size=65536"),
        format!("/bytes/{len}?seed=7"),
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {HTTPBIN}\r\n\r\n");
        tls.write_all(request.as_bytes()).expect("request");
        let (status, head, body) = read_response(&mut tls).expect("response");
        assert_eq!(status, 200, "{head}");
        assert_eq!(body.len(), len, "{path}: {head}");
        bodies.push(body);
    }
    assert!(
        bodies[0] == bodies[2],
        "the same download differs between the two paths"
    );
}

#[test]
fn upstream_sees_forwarding_headers_and_no_hop_by_hop_ones() {
    require("curl");
    let dir = TempDir::new("px-headers");
    let upstream = Upstream::named("a");
    let (pki, port, _gw) = start_https(&dir, upstream.addr);
    // HTTP/1.1: HTTP/2 has no hop-by-hop headers (curl drops them there).
    let out = curl_https(
        &pki,
        port,
        "/h",
        &[
            "--http1.1",
            "-H",
            "X-Forwarded-Client-Cert: By=spiffe://forged;Hash=00",
            "-H",
            "TE: trailers",
            "-H",
            "Connection: keep-alive, x-hop",
            "-H",
            "X-Hop: must-go",
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "Proxy-Connection: keep-alive",
            "-H",
            "X-Custom: kept",
        ],
    );
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");

    // Response headers ringress adds.
    assert_eq!(out.header("server"), Some("ringress"), "{out:?}");
    let service_time = out
        .header("x-envoy-upstream-service-time")
        .unwrap_or_else(|| panic!("no x-envoy-upstream-service-time: {out:?}"));
    assert!(service_time.parse::<u64>().is_ok(), "{service_time:?}");

    let heads = upstream.seen.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let headers = head_headers(&heads[0]);
    let head = &heads[0];
    assert_eq!(
        get(&headers, "x-forwarded-for"),
        Some("127.0.0.1"),
        "{head}"
    );
    assert_eq!(get(&headers, "x-forwarded-proto"), Some("https"), "{head}");
    let request_id = get(&headers, "x-request-id").unwrap_or_default();
    assert!(!request_id.is_empty(), "x-request-id missing: {head}");
    assert!(
        get(&headers, "host").is_some_and(|h| h.starts_with(HTTPBIN)),
        "{head}"
    );
    assert_eq!(get(&headers, "x-custom"), Some("kept"), "{head}");
    for gone in [
        "x-forwarded-client-cert",
        "te",
        "x-hop",
        "keep-alive",
        "proxy-connection",
    ] {
        assert!(
            get(&headers, gone).is_none(),
            "{gone} reached the upstream: {head}"
        );
    }
    // A `connection` header may only be ringress's own keep-alive, never the client's.
    if let Some(connection) = get(&headers, "connection") {
        assert!(!connection.contains("x-hop"), "{head}");
    }

    // A client-sent x-request-id is passed on unchanged; every request gets its own.
    let out = curl_https(&pki, port, "/h2", &["-H", "X-Request-Id: client-chosen-id"]);
    assert_eq!(out.status, 200, "{out:?}");
    let out = curl_https(&pki, port, "/h3", &[]);
    assert_eq!(out.status, 200);
    let heads = upstream.seen.heads();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert_eq!(
        get(&head_headers(&heads[1]), "x-request-id"),
        Some("client-chosen-id")
    );
    let third = head_headers(&heads[2]);
    let third_id = get(&third, "x-request-id").unwrap_or_default();
    assert!(!third_id.is_empty() && third_id != request_id, "{heads:?}");
}

#[test]
fn routes_match_by_uri_header_method_first_match_wins() {
    let dir = TempDir::new("px-routing");
    let names = ["a", "b", "c", "d", "e", "f"];
    let upstreams: Vec<Upstream> = names.iter().map(|n| Upstream::named(n)).collect();
    let port = free_port();
    let dest = |svc: &str| route_to(&format!("svc-{svc}"));
    let http = format!(
        "  - match:
    - uri:
        exact: /exact
{a}  - match:
    - uri:
        prefix: /first
{b}  - match:
    - uri:
        prefix: /first/second
{c}  - match:
    - uri:
        regex: /re/[0-9]+
{d}  - match:
    - uri:
        prefix: /h
      headers:
        x-route:
          exact: go
{e}  - match:
    - uri:
        prefix: /m
      method:
        exact: DELETE
{f}  - match:
    - uri:
        exact: /old
    redirect:
      uri: /new
      authority: new.example.com
  - match:
    - uri:
        prefix: /maintenance
    directResponse:
      status: 503
      body:
        string: down for maintenance
",
        a = dest("a"),
        b = dest("b"),
        c = dest("c"),
        d = dest("d"),
        e = dest("e"),
        f = dest("f"),
    );
    let services: Vec<(String, &[std::net::SocketAddr])> = names
        .iter()
        .zip(&upstreams)
        .map(|(name, upstream)| (format!("svc-{name}"), std::slice::from_ref(&upstream.addr)))
        .collect();
    let config = gateway_config(
        &[http_server(port, &[HTTPBIN])],
        &[HTTPBIN],
        &http,
        &services,
    );
    let _gw = Gateway::start(&dir, &config, &[]);

    let send = |method: &str, path: &str, extra: &str| -> (u16, String, String) {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {HTTPBIN}\r\n{extra}Connection: close\r\n\r\n"
        );
        let (bytes, _) = raw_exchange(port, request.as_bytes());
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (first_status(&bytes), head.to_owned(), body.to_owned())
    };
    let cases: [(&str, &str, &str, u16, &str); 12] = [
        ("GET", "/exact", "", 200, "a /exact 0"),
        ("GET", "/exact/more", "", 404, ""),
        ("GET", "/first", "", 200, "b /first 0"),
        // The /first prefix rule comes first, so it wins over the longer prefix.
        ("GET", "/first/second", "", 200, "b /first/second 0"),
        ("GET", "/re/123", "", 200, "d /re/123 0"),
        // Regexes are anchored: the whole path must match.
        ("GET", "/re/123x", "", 404, ""),
        ("GET", "/x/re/1", "", 404, ""),
        ("GET", "/h", "x-route: go\r\n", 200, "e /h 0"),
        ("GET", "/h", "x-route: no\r\n", 404, ""),
        ("DELETE", "/m", "", 200, "f /m 0"),
        ("GET", "/m", "", 404, ""),
        ("GET", "/nothing", "", 404, ""),
    ];
    for (method, path, extra, status, body) in cases {
        let (got_status, head, got_body) = send(method, path, extra);
        assert_eq!(
            got_status, status,
            "{method} {path} {extra:?}: {head}\n{got_body}"
        );
        if status == 200 {
            assert_eq!(got_body, body, "{method} {path} {extra:?}");
        }
    }
    // Host names match case-insensitively, with or without the port.
    for host in [
        "HTTPBIN.Example.COM".to_owned(),
        format!("{HTTPBIN}:{port}"),
    ] {
        let request = format!("GET /exact HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let (bytes, _) = raw_exchange(port, request.as_bytes());
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(first_status(&bytes), 200, "Host: {host}: {text}");
        assert!(text.ends_with("a /exact 0"), "Host: {host}: {text}");
    }
    // Nothing reached svc-c: its rule is shadowed by the earlier prefix.
    assert_eq!(upstreams[2].seen.requests(), 0);

    let (status, head, _) = send("GET", "/old", "");
    assert_eq!(status, 301, "{head}");
    let (_, headers) = parse_last_head(&head);
    let location = get(&headers, "location").unwrap_or_default();
    assert!(
        location.starts_with("http://new.example.com") && location.ends_with("/new"),
        "location {location:?}: {head}"
    );

    let (status, head, body) = send("GET", "/maintenance", "");
    assert_eq!(status, 503, "{head}");
    assert_eq!(body, "down for maintenance", "{head}");
}

#[test]
fn https_redirect_answers_301_to_the_https_url() {
    let dir = TempDir::new("px-https-redirect");
    let upstream = Upstream::named("a");
    let port = free_port();
    let server = format!(
        "{}    tls:\n      httpsRedirect: true\n",
        http_server(port, &[HTTPBIN])
    );
    let config = backend_config(&[server], &[HTTPBIN], &[upstream.addr]);
    let _gw = Gateway::start(&dir, &config, &[]);
    let request =
        format!("GET /status/200?x=1 HTTP/1.1\r\nHost: {HTTPBIN}\r\nConnection: close\r\n\r\n");
    let (bytes, _) = raw_exchange(port, request.as_bytes());
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(first_status(&bytes), 301, "{text}");
    let (_, headers) = parse_last_head(&text);
    let location = get(&headers, "location").unwrap_or_default();
    assert!(
        location.starts_with(&format!("https://{HTTPBIN}")),
        "{text}"
    );
    assert!(location.ends_with("/status/200?x=1"), "{text}");
    assert_eq!(
        upstream.seen.requests(),
        0,
        "a redirect never reaches the upstream"
    );
}

#[test]
fn weighted_destinations_both_get_traffic() {
    let dir = TempDir::new("px-weights");
    let a = Upstream::named("a");
    let b = Upstream::named("b");
    let port = free_port();
    let http = format!(
        "  - route:
    - destination:
        host: svc-a
        port:
          number: {SERVICE_PORT}
      weight: 50
    - destination:
        host: svc-b
        port:
          number: {SERVICE_PORT}
      weight: 50
"
    );
    let config = gateway_config(
        &[http_server(port, &[HTTPBIN])],
        &[HTTPBIN],
        &http,
        &[("svc-a", &[a.addr]), ("svc-b", &[b.addr])],
    );
    let _gw = Gateway::start(&dir, &config, &[]);
    let mut stream = connect(port);
    let mut counts = [0u32; 2];
    for i in 0..60 {
        let (status, body) = request_on(&mut stream, HTTPBIN, &format!("/w{i}"));
        assert_eq!(status, 200, "{body}");
        match body.split(' ').next() {
            Some("a") => counts[0] += 1,
            Some("b") => counts[1] += 1,
            _ => panic!("unexpected body {body:?}"),
        }
    }
    assert!(counts[0] > 0 && counts[1] > 0, "a/b split {counts:?}");
}

#[test]
fn round_robin_spreads_over_the_endpoints_of_one_service() {
    let dir = TempDir::new("px-round-robin");
    let a = Upstream::named("a");
    let b = Upstream::named("b");
    let port = free_port();
    let config = docs(&[
        backend_config(
            &[http_server(port, &[HTTPBIN])],
            &[HTTPBIN],
            &[a.addr, b.addr],
        ),
        document_head("DestinationRule", "backend")
            + "  host: backend
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
",
    ]);
    let _gw = Gateway::start(&dir, &config, &[]);
    let mut stream = connect(port);
    let mut order = Vec::new();
    for i in 0..10 {
        let (status, body) = request_on(&mut stream, HTTPBIN, &format!("/rr{i}"));
        assert_eq!(status, 200, "{body}");
        order.push(body.split(' ').next().unwrap_or("").to_owned());
    }
    let a_count = order.iter().filter(|n| *n == "a").count();
    let b_count = order.iter().filter(|n| *n == "b").count();
    assert_eq!(a_count + b_count, 10, "{order:?}");
    // One connection stays on one shard: round robin alternates exactly there.
    assert_eq!((a_count, b_count), (5, 5), "{order:?}");
}

#[test]
fn rustls_client_verifies_the_chain_and_negotiates_http11() {
    let dir = TempDir::new("px-rustls");
    let upstream = httpbin();
    let (pki, port, _gw) = start_https(&dir, upstream.addr());

    // Only the root is trusted: the gateway must send the intermediate.
    let mut tls =
        tls_connect(port, HTTPBIN, client_config(&pki.root_cert, None)).expect("TLS handshake");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = request_on(&mut tls, HTTPBIN, "/status/418");
    assert_eq!(status, 418);
    assert!(body.contains("I'm a teapot"), "{body}");
    // Keep-alive over TLS: a second request on the same connection.
    let (status, _) = request_on(&mut tls, HTTPBIN, "/status/200");
    assert_eq!(status, 200);

    // The wrong trust anchor fails verification.
    let Err(err) = tls_connect(port, HTTPBIN, client_config(&pki.other_ca_cert, None)) else {
        panic!("a client trusting other-ca must not connect");
    };
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "expected a certificate error, got {err:?}"
    );
}

#[test]
fn tls_version_limits_are_enforced() {
    require("curl");
    let dir = TempDir::new("px-versions");
    let pki = pki(&dir);
    let upstream = httpbin();
    let only12 = free_port();
    let only13 = free_port();
    let tls = |line: &str| format!("{}      {line}\n", simple_tls_for(&pki, HTTPBIN));
    let config = backend_config(
        &[
            https_server(
                only12,
                "tls12",
                &[HTTPBIN],
                &tls("maxProtocolVersion: TLSV1_2"),
            ),
            https_server(
                only13,
                "tls13",
                &[HTTPBIN],
                &tls("minProtocolVersion: TLSV1_3"),
            ),
        ],
        &[HTTPBIN],
        &[upstream.addr()],
    );
    let _gw = Gateway::start(&dir, &config, &[]);
    let with = |port: u16, flags: &[&str]| curl_https(&pki, port, "/status/200", flags);

    let out = with(only12, &["--tls-max", "1.2"]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    let out = with(only12, &["--tlsv1.3"]);
    assert_eq!(out.code, 35, "TLS 1.3 against a 1.2-only server: {out:?}");

    let out = with(only13, &["--tlsv1.3"]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    let out = with(only13, &["--tls-max", "1.2"]);
    assert_eq!(out.code, 35, "TLS 1.2 against a 1.3-only server: {out:?}");

    // The rustls client agrees on the negotiated versions.
    let tls12 = tls_connect(only12, HTTPBIN, client_config(&pki.root_cert, None)).expect("1.2");
    assert_eq!(
        tls12.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let tls13 = tls_connect(only13, HTTPBIN, client_config(&pki.root_cert, None)).expect("1.3");
    assert_eq!(
        tls13.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[test]
fn sessions_resume_with_tickets_across_shards() {
    require("openssl");
    let dir = TempDir::new("px-resume");
    let upstream = httpbin();
    let (pki, port, _gw) = start_https(&dir, upstream.addr());
    let root = pki.root_cert.to_string_lossy().into_owned();
    let request =
        format!("GET /status/200 HTTP/1.1\r\nHost: {HTTPBIN}\r\nConnection: close\r\n\r\n");
    for version in ["-tls1_3", "-tls1_2"] {
        let session = dir.join(&format!("session{version}.pem"));
        let session = session.to_string_lossy().into_owned();
        // `-sess_out` saves the session, `-sess_in` resumes it.
        let connect = |session_flag: &str| {
            s_client(
                port,
                HTTPBIN,
                &["-CAfile", &root, version, session_flag, &session],
                request.as_bytes(),
            )
        };
        let first = connect("-sess_out");
        assert!(
            first.output.contains("HTTP/1.1 200"),
            "{version}: {}",
            first.output
        );
        assert!(
            first.output.contains("New, TLSv1."),
            "{version}: {}",
            first.output
        );
        // Several resumptions, so both shards see one (the ticket key is shared).
        for attempt in 0..4 {
            let again = connect("-sess_in");
            assert!(
                again.output.contains("Reused, TLSv1."),
                "{version} attempt {attempt}: {}",
                again.output
            );
            assert!(again.output.contains("HTTP/1.1 200"), "{}", again.output);
        }
    }
}

#[test]
fn route_header_operations_and_rewrites_apply() {
    let dir = TempDir::new("px-header-ops");
    let upstream = Upstream::named("a");
    let port = free_port();
    let http = format!(
        "  - match:
    - uri:
        prefix: /api/
    rewrite:
      uri: /v1/
      authority: internal.example.com
    headers:
      request:
        set:
          x-added: by-route
        add:
          x-also: more
        remove:
        - x-secret
      response:
        set:
          x-resp: set-by-route
        remove:
        - content-type
    route:
    - destination:
        host: backend
        port:
          number: {SERVICE_PORT}
"
    );
    let config = gateway_config(
        &[http_server(port, &[HTTPBIN])],
        &[HTTPBIN],
        &http,
        &[("backend", &[upstream.addr])],
    );
    let _gw = Gateway::start(&dir, &config, &[]);
    let request = format!(
        "GET /api/items?q=1 HTTP/1.1\r\nHost: {HTTPBIN}\r\nX-Secret: hush\r\nX-Added: from-client\r\nConnection: close\r\n\r\n"
    );
    let (bytes, _) = raw_exchange(port, request.as_bytes());
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(first_status(&bytes), 200, "{text}");
    // The upstream saw the rewritten path (prefix replaced, query kept) and authority.
    assert!(text.ends_with("a /v1/items?q=1 0"), "{text}");
    let (_, response_headers) = parse_last_head(&text);
    assert_eq!(
        get(&response_headers, "x-resp"),
        Some("set-by-route"),
        "{text}"
    );
    assert!(get(&response_headers, "content-type").is_none(), "{text}");

    let heads = upstream.seen.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let headers = head_headers(&heads[0]);
    let head = &heads[0];
    assert_eq!(
        get(&headers, "host"),
        Some("internal.example.com"),
        "{head}"
    );
    assert!(get(&headers, "x-secret").is_none(), "{head}");
    let added = all(&headers, "x-added");
    assert_eq!(
        added,
        ["by-route"],
        "set replaces the client's value: {head}"
    );
    assert_eq!(get(&headers, "x-also"), Some("more"), "{head}");
}

#[test]
fn mutual_tls_client_identity_reaches_the_upstream_only_from_the_verified_chain() {
    require("curl");
    let dir = TempDir::new("px-xfcc");
    let pki = pki(&dir);
    let upstream = Upstream::named("a");
    let port = free_port();
    let tls = mutual_tls(&pki, "MUTUAL");
    let config = backend_config(
        &[https_server(port, "https", &[HTTPBIN], &tls)],
        &[HTTPBIN],
        &[upstream.addr],
    );
    let _gw = Gateway::start(&dir, &config, &[]);
    let identity = client_cert_args(&pki.client_cert(), &pki.client_key());
    let mut extra = strs(&identity);
    extra.extend([
        "-H",
        "X-Forwarded-Client-Cert: By=spiffe://forged;Subject=\"CN=admin\"",
    ]);
    let out = curl_https(&pki, port, "/whoami", &extra);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    let heads = upstream.seen.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let headers = head_headers(&heads[0]);
    let xfcc = all(&headers, "x-forwarded-client-cert");
    assert_eq!(
        xfcc.len(),
        1,
        "exactly one x-forwarded-client-cert, from the verified chain: {}",
        heads[0]
    );
    let value = xfcc[0];
    assert!(
        !value.contains("forged") && !value.contains("CN=admin"),
        "{value}"
    );
    assert!(value.contains("Hash="), "{value}");
    assert!(value.contains(pki::CLIENT_NAME), "{value}");
}

#[test]
fn upstreams_that_close_keep_alive_connections_are_not_reused_blindly() {
    let dir = TempDir::new("px-upstream-close");
    // One upstream says `Connection: close` and closes; the other closes after each
    // response without saying so (an idle keep-alive connection found dead later).
    let announced = Upstream::answer_once(
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 9\r\n\r\nannounced",
    );
    let unannounced =
        Upstream::answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nunannounced");
    let port = free_port();
    let config = gateway_config(
        &[http_server(port, &[HTTPBIN])],
        &[HTTPBIN],
        &(prefix_rule("/announced", "announced") + &route_all("unannounced", SERVICE_PORT)),
        &[
            ("announced", &[announced.addr]),
            ("unannounced", &[unannounced.addr]),
        ],
    );
    let _gw = Gateway::start(&dir, &config, &[]);
    let mut stream = connect(port);
    for i in 0..4 {
        let (status, body) = request_on(&mut stream, HTTPBIN, &format!("/announced/{i}"));
        assert_eq!((status, body.as_str()), (200, "announced"), "request {i}");
    }
    for i in 0..4 {
        // Give the upstream's close time to arrive, so the pooled connection is dead.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (status, body) = request_on(&mut stream, HTTPBIN, &format!("/other/{i}"));
        assert_eq!((status, body.as_str()), (200, "unannounced"), "request {i}");
    }
    assert_eq!(announced.seen.requests(), 4);
    assert_eq!(unannounced.seen.requests(), 4);
}

#[test]
fn http10_and_expect_continue_clients_are_served() {
    require("curl");
    let dir = TempDir::new("px-http10");
    let upstream = httpbin();
    let (port, _gw) = start_http(&dir, upstream.addr(), &[]);

    // HTTP/1.0: answered, and the connection ends with the response.
    let out = curl_http(HTTPBIN, port, "/anything/old", &["--http1.0"]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    let request = format!("GET /status/418 HTTP/1.0\r\nHost: {HTTPBIN}\r\n\r\n");
    let (bytes, closed) = raw_exchange(port, request.as_bytes());
    assert_first_status(&bytes, 418, "");
    assert!(
        closed,
        "an HTTP/1.0 request without keep-alive ends its connection"
    );

    // A chunked body for an HTTP/1.0 client is gathered and sent with its length, so
    // the client knows where it ends and can keep its connection.
    let mut stream = connect(port);
    for round in 0..2 {
        let request = format!(
            "GET /stream-bytes/3000?chunk_size=700 HTTP/1.0\r\nHost: {HTTPBIN}\r\nConnection: keep-alive\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let (status, head, body) = read_response(&mut stream).expect("a framed response");
        let headers = head_headers(&head);
        assert_eq!(status, 200, "round {round}: {head}");
        assert_eq!(get(&headers, "content-length"), Some("3000"), "{head}");
        assert_eq!(get(&headers, "transfer-encoding"), None, "{head}");
        assert_eq!(get(&headers, "connection"), Some("keep-alive"), "{head}");
        assert_eq!(body.len(), 3000);
    }
    // One larger than what is gathered ends at the close, which then means complete.
    let request = format!("GET /stream-bytes/200000 HTTP/1.0\r\nHost: {HTTPBIN}\r\n\r\n");
    let (bytes, closed) = raw_exchange(port, request.as_bytes());
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = String::from_utf8_lossy(&bytes[..head_end]);
    let headers = head_headers(&head);
    assert_first_status(&bytes, 200, "");
    assert_eq!(get(&headers, "content-length"), None, "{head}");
    assert_eq!(get(&headers, "connection"), Some("close"));
    assert_eq!(bytes.len() - head_end, 200_000);
    assert!(closed);

    // Expect: 100-continue with a body of 300 KiB.
    let payload = "x".repeat(300 * 1024);
    let file = dir.write("payload.txt", &payload);
    let data = format!("@{}", file.display());
    let out = curl_http(
        HTTPBIN,
        port,
        "/anything/old",
        &[
            "-H",
            "Expect: 100-continue",
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            &data,
        ],
    );
    assert_eq!(
        (out.code, out.status),
        (0, 200),
        "exit {}, status {}: {}",
        out.code,
        out.status,
        out.stderr
    );
    assert!(
        out.text().contains(&format!("\"data\": \"{payload}\"")),
        "the whole body should reach the upstream"
    );
}

#[test]
fn wildcard_hosts_get_the_wildcard_certificate_and_routes() {
    let dir = TempDir::new("px-wildcard");
    let pki = pki(&dir);
    let wild = pki
        .issue(&pki::LeafSpec::server("*.wild.example.com"))
        .expect("issuing the wildcard certificate");
    let upstream = Upstream::named("w");
    let port = free_port();
    let config = backend_config(
        &[
            https_server(
                port,
                "https-wild",
                &["*.wild.example.com"],
                &simple_tls(&wild.cert, &wild.key),
            ),
            simple_https(&pki, port, "https", HTTPBIN),
        ],
        &["*.wild.example.com", HTTPBIN],
        &[upstream.addr],
    );
    let _gw = Gateway::start(&dir, &config, &[]);
    for host in ["a.wild.example.com", "b.wild.example.com", HTTPBIN] {
        let mut tls = tls_connect(port, host, client_config(&pki.root_cert, None))
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        let (status, body) = request_on(&mut tls, host, "/x");
        assert_eq!((status, body.as_str()), (200, "w /x 0"), "{host}");
    }
    // The wildcard covers one label only.
    assert!(
        tls_connect(
            port,
            "wild.example.com",
            client_config(&pki.root_cert, None)
        )
        .is_err()
    );
    assert!(
        tls_connect(
            port,
            "a.b.wild.example.com",
            client_config(&pki.root_cert, None)
        )
        .is_err()
    );
}

#[test]
fn alpn_gives_http2_to_clients_that_offer_it_and_http11_to_others() {
    require("curl");
    let dir = TempDir::new("px-alpn");
    let upstream = httpbin();
    let (pki, port, _gw) = start_https(&dir, upstream.addr());
    // curl offers h2 and http/1.1 by ALPN: h2 is preferred, as Envoy prefers it.
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = curl_https(&pki, port, "/status/418", &[flag, "-w", "%{http_version}"]);
        assert_eq!((out.code, out.status), (0, 418), "{out:?}");
        assert_eq!(out.stdout.trim(), version, "{flag}: {out:?}");
    }
}

#[test]
fn cpu_steering_accepts_on_every_shard() {
    require("curl");
    let dir = TempDir::new("px-steer");
    let upstream = httpbin();
    let port = free_port();
    // Ready: every shard listens (a connection steered to a shard whose socket is not
    // open yet would be refused).
    let mut gw = Gateway::start_ready(
        &dir,
        &http_config(port, HTTPBIN, upstream.addr()),
        &["--steer-by-cpu"],
    );
    // Connections from any CPU land on a shard (the CPU's own when one exists) and are
    // served; the steering program must never drop one.
    for _ in 0..20 {
        let out = curl_http(HTTPBIN, port, "/status/200", &[]);
        assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    }
    gw.assert_running();
}

/// TLS 1.3 key updates on a keep-alive connection, from the rustls client and from
/// OpenSSL's s_client (`K`: update and ask the server to update too): requests after
/// each update are read with the client's new key, and responses (one larger than a
/// record) reach the client under the server's new key.
#[test]
fn tls13_key_updates_keep_a_connection_serving() {
    let dir = TempDir::new("px-keyupdate");
    let upstream = httpbin();
    let (pki, port, _gw) = start_https(&dir, upstream.addr());
    let mut tls = tls_connect(port, HTTPBIN, client_config(&pki.root_cert, None)).expect("TLS");
    assert_eq!(
        tls.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(request_on(&mut tls, HTTPBIN, "/status/200").0, 200);
    for round in 0..3 {
        tls.conn.refresh_traffic_keys().expect("key update");
        let (status, body) = request_on(&mut tls, HTTPBIN, "/bytes/40000?seed=3");
        assert_eq!((status, body.is_empty()), (200, false), "round {round}");
        assert_eq!(
            request_on(&mut tls, HTTPBIN, "/status/418").0,
            418,
            "round {round}"
        );
    }

    require("openssl");
    let root = pki.root_cert.to_string_lossy().into_owned();
    let mut child = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", HTTPBIN, "-CAfile", &root, "-tls1_3"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = child.stdin.take().expect("stdin");
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: {HTTPBIN}\r\n\r\n");
    // s_client takes a line starting with K as a command only when it arrives alone.
    let pause = || std::thread::sleep(std::time::Duration::from_millis(700));
    for input in [
        request("/status/200"),
        "K\n".to_owned(),
        request("/status/418"),
        "K\n".to_owned(),
        request("/status/202"),
    ] {
        pause();
        stdin.write_all(input.as_bytes()).expect("s_client stdin");
    }
    pause();
    drop(stdin);
    let output = child.wait_with_output().expect("s_client output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(text.matches("KEYUPDATE").count(), 2, "{text}");
    for status in ["HTTP/1.1 200", "HTTP/1.1 418", "HTTP/1.1 202"] {
        assert!(text.contains(status), "{status} missing: {text}");
    }
}

/// A client whose Finished and a KeyUpdate asking for ours arrive in one segment,
/// before any request: rustls answers the KeyUpdate only with its next encryption, so
/// the connection must not leave rustls before that answer went out (else every later
/// record would use a key the client was never told of).
#[test]
fn a_key_update_right_after_the_handshake_is_answered() {
    let dir = TempDir::new("px-keyupdate-early");
    let upstream = httpbin();
    let (pki, port, _gw) = start_https(&dir, upstream.addr());
    let name = rustls::pki_types::ServerName::try_from(HTTPBIN).expect("name");
    let mut conn =
        rustls::ClientConnection::new(client_config(&pki.root_cert, None), name).expect("client");
    let mut sock = connect(port);
    // Until the server's Finished is processed; the client's own Finished stays queued.
    while conn.is_handshaking() {
        while conn.wants_write() {
            conn.write_tls(&mut sock).expect("write");
        }
        if conn.is_handshaking() {
            conn.read_tls(&mut sock).expect("read");
            conn.process_new_packets().expect("handshake");
        }
    }
    conn.refresh_traffic_keys().expect("key update");
    let mut flight = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut flight).expect("encode");
    }
    sock.write_all(&flight).expect("Finished and KeyUpdate");
    // Let the gateway process both and wait for the client.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut tls = rustls::StreamOwned::new(conn, sock);
    for path in ["/status/200", "/status/418", "/status/202"] {
        let expected: u16 = path["/status/".len()..].parse().expect("status");
        assert_eq!(request_on(&mut tls, HTTPBIN, path).0, expected, "{path}");
    }
}

/// A response that ends the connection (`Connection: close`) carries the TLS
/// close_notify in its own last send, and `close` then adds no second one: after the
/// response come exactly one close_notify record and the end of the stream. Checked
/// for a first request (still on rustls' connection) and a later one (on ringress's
/// own TLS 1.3 records).
#[test]
fn a_closing_response_ends_with_one_close_notify() {
    /// A TLS 1.3 close_notify record's payload: the alert (2), content type (1), tag (16).
    const CLOSE_NOTIFY_LEN: usize = 2 + 1 + 16;
    let dir = TempDir::new("px-close-notify");
    let upstream = httpbin();
    let (pki, port, _gw) = start_https(&dir, upstream.addr());
    for earlier in 0..2 {
        let mut tls =
            tls_connect(port, HTTPBIN, client_config(&pki.root_cert, None)).expect("handshake");
        for _ in 0..earlier {
            assert_eq!(request_on(&mut tls, HTTPBIN, "/status/200").0, 200);
        }
        let request =
            format!("GET /status/202 HTTP/1.1\r\nHost: {HTTPBIN}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).expect("request");
        tls.flush().expect("flush");
        let (wire, closed) = read_to_close(&mut tls.sock);
        assert!(closed, "after {earlier} requests: the gateway closes");
        // The records' lengths, from their headers.
        let mut lengths = Vec::new();
        let mut rest = &wire[..];
        while let [kind, _, _, hi, lo, tail @ ..] = rest {
            assert_eq!(*kind, 23, "TLS 1.3 sends only application_data records");
            let len = usize::from(*hi) << 8 | usize::from(*lo);
            lengths.push(len);
            rest = tail.get(len..).expect("whole records");
        }
        assert!(rest.is_empty(), "whole records: {} bytes left", rest.len());
        assert_eq!(
            lengths.iter().filter(|&&n| n == CLOSE_NOTIFY_LEN).count(),
            1,
            "after {earlier} requests, records {lengths:?}"
        );
        assert_eq!(lengths.last(), Some(&CLOSE_NOTIFY_LEN), "{lengths:?}");
        // And the records decrypt to the whole response, then the close.
        let mut wire = &wire[..];
        while !wire.is_empty() {
            tls.conn.read_tls(&mut wire).expect("records");
            tls.conn.process_new_packets().expect("valid records");
        }
        let mut plain = Vec::new();
        tls.conn
            .reader()
            .read_to_end(&mut plain)
            .expect("clean close");
        assert_eq!(
            first_status(&plain),
            202,
            "{}",
            String::from_utf8_lossy(&plain)
        );
    }
}
