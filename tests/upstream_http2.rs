//! HTTP/2 and gRPC to upstreams against the real `ringress` binary: a Python `h2`
//! upstream (`tests/tools/h2_upstream.py`) behind a ServiceEntry port with
//! `protocol: HTTP2`, one named `http2-...`, and an HTTP port a DestinationRule
//! upgrades (`h2UpgradePolicy: UPGRADE`), reached by HTTP/1.1 and HTTP/2 clients, with
//! bodies, trailers both ways, and the upstream's `SETTINGS_MAX_CONCURRENT_STREAMS`
//! honoured by opening more connections; and a grpcio service
//! (`tests/tools/grpc_service.py`) behind `protocol: GRPC`, called by a grpcio client
//! over TLS: the health service, unary and streaming calls both ways, the service's
//! own errors with their trailers, the client's deadline, the gateway's `grpc-timeout`
//! and its answer when the service is gone.

mod common;

use common::*;

/// `yaml` with its ServiceEntry port turned into `protocol`, or (`None`) left
/// without a protocol and named `name`.
fn with_port(yaml: &str, name: &str, protocol: Option<&str>) -> String {
    let port = match protocol {
        Some(protocol) => format!("    name: {name}\n    protocol: {protocol}\n"),
        None => format!("    name: {name}\n"),
    };
    let yaml = yaml.replace("    name: http\n    protocol: HTTP\n", &port);
    yaml.replace("      http: ", &format!("      {name}: "))
}

/// A DestinationRule for the test service `backend` with `http` connection-pool
/// settings.
fn pool_rule(http: &str) -> String {
    backend_rule(&format!("    connectionPool:\n      http:\n{http}"))
}

/// A gateway on a free plain port for [`HTTPBIN`] routing every request to
/// `tests/tools/h2_upstream.py EXTRA...` behind a ServiceEntry port named `name` with
/// `protocol` (`None`: none, the name decides). Destructure it naming every field:
/// one left to `..` is dropped at once (the directory, the upstream).
struct H2Upstream {
    _dir: TempDir,
    _upstream: PyServer,
    port: u16,
    _gw: Gateway,
}

fn start_h2_upstream(tag: &str, extra: &[&str], name: &str, protocol: Option<&str>) -> H2Upstream {
    require("curl");
    require_python_module("h2");
    let dir = TempDir::new(tag);
    let upstream = PyServer::start(&dir, "h2_upstream.py", &[], extra);
    let port = free_port();
    let config = with_port(&http_config(port, HTTPBIN, upstream.addr), name, protocol);
    let gw = Gateway::start(&dir, &config, &[]);
    H2Upstream {
        _dir: dir,
        _upstream: upstream,
        port,
        _gw: gw,
    }
}

fn echo(out: &Curl) -> serde_json::Value {
    serde_json::from_slice(&out.body).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn an_http2_upstream_serves_http1_and_http2_clients() {
    let H2Upstream {
        _dir: dir,
        _upstream,
        port,
        _gw,
    } = start_h2_upstream("up-h2", &[], "http", Some("HTTP2"));

    for client in [&[][..], &["--http2-prior-knowledge"][..]] {
        let mut args = vec![
            "-H",
            "x-custom: yes",
            "-H",
            "connection: keep-alive, x-custom-hop",
        ];
        args.extend_from_slice(client);
        let out = curl_http(HTTPBIN, port, "/anything/a?b=c", &args);
        assert_eq!((out.code, out.status), (0, 200), "{client:?}: {out:?}");
        let echo = echo(&out);
        assert_eq!(echo["method"], "GET", "{echo}");
        assert_eq!(echo["path"], "/anything/a?b=c", "{echo}");
        assert_eq!(echo["scheme"], "http", "{echo}");
        assert_eq!(echo["authority"], format!("{HTTPBIN}:{port}"), "{echo}");
        let headers = &echo["headers"];
        assert_eq!(headers["x-custom"], "yes", "{echo}");
        assert_eq!(headers["x-forwarded-proto"], "http", "{echo}");
        assert!(headers["x-request-id"].is_string(), "{echo}");
        for hop in [
            "connection",
            "keep-alive",
            "transfer-encoding",
            "host",
            "te",
            "upgrade",
        ] {
            assert!(headers.get(hop).is_none(), "{hop} crossed: {echo}");
        }
        // Response headers reach the client, framing its own.
        assert_eq!(
            out.header("content-type"),
            Some("application/json"),
            "{out:?}"
        );
    }

    let payload = dir.write("payload.txt", "0123456789".repeat(10_000));
    let data = format!("@{}", payload.display());
    for framing in [
        &[][..],
        &["-H", "Transfer-Encoding: chunked"][..],
        &["--http2-prior-knowledge"][..],
    ] {
        let mut args = vec!["--data-binary", data.as_str()];
        args.extend_from_slice(framing);
        let out = curl_http(HTTPBIN, port, "/anything", &args);
        assert_eq!((out.code, out.status), (0, 200), "{framing:?}: {out:?}");
        let echo = echo(&out);
        assert_eq!(echo["method"], "POST", "{framing:?}");
        assert_eq!(
            echo["data"].as_str().map(str::len),
            Some(100_000),
            "{framing:?}"
        );
    }

    let out = curl_http(HTTPBIN, port, "/status/418", &[]);
    assert_eq!((out.code, out.status), (0, 418), "{out:?}");

    // Response trailers: an HTTP/1.1 client gets them after the last chunk.
    let out = curl_http(HTTPBIN, port, "/trailers", &["--raw"]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    let raw = out.text();
    assert!(
        raw.contains("\r\n0\r\nx-upstream-trailer: done\r\n\r\n"),
        "{raw}"
    );
    // Request trailers from an HTTP/1.1 client reach the upstream.
    let request = format!(
        "POST /anything HTTP/1.1\r\nhost: {HTTPBIN}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\nx-client-trailer: sent\r\n\r\n"
    );
    let (response, _) = raw_exchange(port, request.as_bytes());
    assert_first_status(&response, 200, "request trailers");
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.contains(r#""trailers": {"x-client-trailer": "sent"}"#),
        "{text}"
    );
    assert!(text.contains(r#""data": "hello""#), "{text}");
}

#[test]
fn the_upstreams_max_concurrent_streams_opens_more_connections() {
    // The upstream takes two streams per connection; its port is HTTP/2 by name.
    let H2Upstream {
        _dir,
        _upstream,
        port,
        _gw,
    } = start_h2_upstream("up-h2-streams", &["2"], "http2-api", None);
    // A few requests first: each shard that gets one learns the upstream's limit
    // (a shard that did not has its first streams over it refused, and retries them).
    let mut first = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let out = curl_http(HTTPBIN, port, "/anything", &[]);
        assert_eq!(out.status, 200, "{out:?}");
        first.insert(echo(&out)["connection"].as_u64().unwrap());
    }
    let burst: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || curl_http(HTTPBIN, port, "/slow/700", &[])))
        .collect();
    let mut connections = std::collections::BTreeSet::new();
    for handle in burst {
        let out = handle.join().unwrap();
        assert_eq!((out.code, out.status), (0, 200), "{out:?}");
        let echo = echo(&out);
        assert!(echo["peak_streams"].as_u64().unwrap() <= 2, "{echo}");
        connections.insert(echo["connection"].as_u64().unwrap());
    }
    assert!(connections.len() >= 3, "six streams on {connections:?}");
    // Later requests reuse the connections: no new one per request.
    for _ in 0..5 {
        let out = curl_http(HTTPBIN, port, "/anything", &[]);
        let n = echo(&out)["connection"].as_u64().unwrap();
        assert!(
            first.contains(&n) || connections.contains(&n),
            "connection {n}"
        );
    }
}

#[test]
fn an_upstream_goaway_moves_new_requests_to_a_new_connection() {
    let H2Upstream {
        _dir,
        _upstream,
        port,
        _gw,
    } = start_h2_upstream("up-h2-goaway", &[], "http", Some("HTTP2"));
    // The upstream says GOAWAY after this response and keeps the socket open, as a
    // server shutting down gracefully does: every later request still gets through.
    let out = curl_http(HTTPBIN, port, "/goaway", &[]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    let old = echo(&out)["connection"].as_u64().unwrap();
    for _ in 0..6 {
        let out = curl_http(HTTPBIN, port, "/anything", &[]);
        assert_eq!((out.code, out.status), (0, 200), "{out:?}");
        assert_ne!(echo(&out)["connection"].as_u64(), Some(old), "{out:?}");
    }
}

#[test]
fn h2_upgrade_policy_upgrade_speaks_http2_to_an_http_port() {
    require("curl");
    require_python_module("h2");
    let dir = TempDir::new("up-h2-upgrade");
    let upstream = PyServer::start(&dir, "h2_upstream.py", &[], &[]);
    let port = free_port();
    let mut config = http_config(port, HTTPBIN, upstream.addr);
    // The same upstream, which speaks HTTP/2 only, is not reachable in HTTP/1.1...
    let gw = Gateway::start(&dir, &config, &[]);
    let out = curl_http(HTTPBIN, port, "/anything", &[]);
    assert_eq!(out.status, 502, "{out:?}");
    drop(gw);
    // ...and is once the DestinationRule upgrades the port.
    config.push_str(&pool_rule("        h2UpgradePolicy: UPGRADE\n"));
    let _gw = Gateway::start(&dir, &config, &[]);
    let out = curl_http(HTTPBIN, port, "/anything", &[]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    assert_eq!(echo(&out)["scheme"], "http");
}

#[test]
fn a_grpc_service_behind_the_gateway_unary_streaming_and_errors() {
    require("curl");
    require_python_module("grpc");
    require_python_module("grpc_health");
    let dir = TempDir::new("up-grpc");
    let service = PyServer::start(&dir, "grpc_service.py", &["serve"], &[]);
    let pki = pki(&dir);
    let port = free_port();
    let config = with_port(
        &backend_config(
            &[https_server(
                port,
                "https",
                &["*"],
                &simple_tls_for(&pki, HTTPBIN),
            )],
            &["*"],
            &[service.addr],
        ),
        "grpc",
        Some("GRPC"),
    );
    let gw = Gateway::start(&dir, &config, &[]);
    let target = format!("127.0.0.1:{port}");
    let tls = Some((&pki, HTTPBIN));
    let results = grpc_calls(
        &target,
        tls,
        &[
            "health",
            "unary:hello",
            "server:abc",
            "client:a,b,c",
            "bidi:x,y,z",
            "unary:fail",
            "missing",
            "deadline:0.5",
            "unary:metadata",
            "pingpong:p,q,r",
        ],
    );
    let expect = |i: usize, code: &str, responses: &[&str]| {
        let r = &results[i];
        assert_eq!(r["code"], code, "{r}");
        let got: Vec<&str> = r["responses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(got, responses, "{r}");
    };
    expect(0, "OK", &["SERVING"]);
    expect(1, "OK", &["hello"]);
    expect(2, "OK", &["abc", "1", "2", "3"]);
    expect(3, "OK", &["a,b,c"]);
    expect(4, "OK", &["X", "Y", "Z"]);
    // Each message only after the answer to the one before: the response streams
    // while the request body is still open, and both keep going.
    expect(9, "OK", &["P", "Q", "R"]);
    for r in &results[1..=4] {
        // The service's trailing metadata crosses with grpc-status.
        assert_eq!(r["trailers"]["x-echo-trailer"], "done", "{r}");
    }
    // The service's own error, its message and trailers relayed as they are.
    expect(5, "NOT_FOUND", &[]);
    assert_eq!(results[5]["details"], "no such thing");
    assert_eq!(results[5]["trailers"]["x-echo-trailer"], "done");
    expect(6, "UNIMPLEMENTED", &[]);
    expect(7, "DEADLINE_EXCEEDED", &[]);
    // The gateway's request headers reach the service as metadata.
    let metadata = results[8]["responses"][0].as_str().unwrap();
    assert!(metadata.contains("x-forwarded-proto=https;"), "{metadata}");
    assert!(metadata.contains("x-request-id="), "{metadata}");

    // grpc-timeout is the gateway's deadline too: a call the service answers after
    // 3 s gets DEADLINE_EXCEEDED from the gateway, trailers-only.
    let frame = dir.write("slow.grpc", b"\x00\x00\x00\x00\x04slow");
    let data = format!("@{}", frame.display());
    let grpc_args = [
        "--http2",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "-H",
        "grpc-timeout: 300m",
        "--data-binary",
        data.as_str(),
    ];
    let mut args = https_url(&pki, port, "/ringress.test.Echo/Unary");
    args.splice(0..0, grpc_args.iter().map(|s| s.to_string()));
    let out = curl(&strs(&args));
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    assert_eq!(out.header("grpc-status"), Some("4"), "{out:?}");

    // The service gone: UNAVAILABLE, made by the gateway.
    drop(service);
    let results = grpc_calls(&target, tls, &["unary:hello"]);
    assert_eq!(results[0]["code"], "UNAVAILABLE", "{}", results[0]);
    drop(gw);
}
