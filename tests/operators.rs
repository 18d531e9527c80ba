//! What an operator sees: the access log (Istio's text line, its JSON form, a custom
//! format, to stdout, a file or off), and the messages of a misconfigured start.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// A plain HTTP gateway for [`HTTPBIN`]: `/status` and `/bytes` routed to httpbin by
/// a rule named `httpbin-rule`, `/refused` to a closed port, nothing else.
struct Logged {
    port: u16,
    upstream: httpbin::Httpbin,
    gateway: Gateway,
    dir: TempDir,
}

impl Logged {
    fn start(tag: &str, extra: &[&str]) -> Logged {
        let dir = TempDir::new(tag);
        let upstream = httpbin();
        let port = free_port();
        let refused = std::net::SocketAddr::from(([127, 0, 0, 1], closed_port()));
        let http = format!(
            "  - name: httpbin-rule
    match:
    - uri:
        prefix: /status
    - uri:
        prefix: /bytes
{}{}",
            route_to("httpbin"),
            prefix_rule("/refused", "refused"),
        );
        let config = gateway_config(
            &[http_server(port, &[HTTPBIN])],
            &[HTTPBIN],
            &http,
            &[
                ("httpbin", &[upstream.addr()][..]),
                ("refused", &[refused][..]),
            ],
        );
        let gateway = Gateway::start(&dir, &config, extra);
        Logged {
            port,
            upstream,
            gateway,
            dir,
        }
    }

    /// Three requests: a routed one, one no rule matches, one whose upstream refuses.
    fn send_requests(&self) {
        let headers = [
            "-A",
            "curl/test",
            "-H",
            "X-Request-Id: 6c01d65f-a157-97cd-8782-320a40026901",
        ];
        assert_eq!(
            curl_http(HTTPBIN, self.port, "/status/418", &headers).status,
            418
        );
        assert_eq!(curl_http(HTTPBIN, self.port, "/nowhere", &[]).status, 404);
        assert_eq!(curl_http(HTTPBIN, self.port, "/refused", &[]).status, 503);
    }

    /// The access log lines in `text` (what starts with `[` or `{`) of the requests of
    /// [`Logged::send_requests`], in their order (shards flush their lines in turn,
    /// so they may come in any order).
    fn lines(&self, text: impl Fn() -> String) -> Vec<String> {
        let lines = || -> Vec<String> {
            let all: Vec<String> = text()
                .lines()
                .filter(|l| l.starts_with("[20") || l.starts_with('{'))
                .map(str::to_owned)
                .collect();
            ["/status/418", "/nowhere", "/refused"]
                .iter()
                .filter_map(|path| all.iter().find(|l| l.contains(path)).cloned())
                .collect()
        };
        assert!(
            wait_for(READ_TIMEOUT, || lines().len() == 3),
            "not every request has its access log line:\n{}",
            text()
        );
        lines()
    }
}

/// Istio's default text line, field by field, for a routed request, an unrouted one
/// (`NR route_not_found`) and a refused upstream (`UF`): to stdout by default.
#[test]
fn the_access_log_writes_istios_text_line_to_stdout() {
    let logged = Logged::start("log-text", &[]);
    logged.send_requests();
    let gw = &logged.gateway;
    let lines = logged.lines(|| gw.log_text());
    let port = logged.port;
    let upstream = logged.upstream.addr();
    let ok = &lines[0];
    // [START] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" RECEIVED SENT
    // DURATION SERVICE "XFF" "UA" "ID" "AUTHORITY" "UPSTREAM" CLUSTER UPSTREAM_LOCAL
    // DOWNSTREAM_LOCAL DOWNSTREAM_REMOTE SNI ROUTE
    let fields: Vec<&str> = ok.split(' ').collect();
    assert!(
        fields[0].starts_with('[') && fields[0].ends_with("Z]") && fields[0].len() == 26,
        "{ok}"
    );
    assert_eq!(
        &fields[1..8],
        [
            "\"GET",
            "/status/418",
            "HTTP/1.1\"",
            "418",
            "-",
            "via_upstream",
            "-"
        ],
        "{ok}"
    );
    assert_eq!(fields[8], "\"-\"");
    assert_eq!(fields[9], "0", "bytes received: {ok}");
    assert!(fields[10].parse::<u64>().unwrap() > 0, "bytes sent: {ok}");
    assert!(
        fields[11].parse::<u64>().is_ok() && fields[12].parse::<u64>().is_ok(),
        "{ok}"
    );
    assert_eq!(
        &fields[13..19],
        [
            "\"127.0.0.1\"",
            "\"curl/test\"",
            "\"6c01d65f-a157-97cd-8782-320a40026901\"",
            &format!("\"{HTTPBIN}:{port}\""),
            &format!("\"{upstream}\""),
            "outbound|8000||httpbin",
        ],
        "{ok}"
    );
    assert!(
        fields[19].starts_with("127.0.0.1:"),
        "upstream local address: {ok}"
    );
    assert_eq!(fields[20], format!("127.0.0.1:{port}"));
    assert!(fields[21].starts_with("127.0.0.1:"));
    assert_eq!(&fields[22..], ["-", "httpbin-rule"], "{ok}");

    let nr = &lines[1];
    assert!(
        nr.contains("\"GET /nowhere HTTP/1.1\" 404 NR route_not_found - \"-\" 0 "),
        "{nr}"
    );
    assert!(
        nr.contains("\" \"-\" - - 127.0.0.1:"),
        "no upstream host or cluster: {nr}"
    );
    let uf = &lines[2];
    // Istio's default retries (connect-failure) were tried and exhausted: URX.
    assert!(
        uf.contains("\"GET /refused HTTP/1.1\" 503 UF,URX upstream_reset_before_response_started{remote_connection_failure} - "),
        "{uf}"
    );
    // A generated request id is logged as the upstream got it.
    let id = nr.split('"').nth(9).unwrap_or_default();
    assert_eq!(id.len(), 36, "{nr}");
}

/// `--access-log-format json`: one object a line with Istio's keys, numbers as
/// numbers, missing values null; to the file `--access-log` names.
#[test]
fn the_access_log_writes_istios_json_to_a_file() {
    let dir = TempDir::new("log-json-file");
    let file = dir.join("access.log");
    let file_arg = file.to_string_lossy().into_owned();
    let logged = Logged::start(
        "log-json",
        &["--access-log", &file_arg, "--access-log-format", "json"],
    );
    logged.send_requests();
    let lines = logged.lines(|| std::fs::read_to_string(&file).unwrap_or_default());
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(parsed[0]["method"], "GET");
    assert_eq!(parsed[0]["path"], "/status/418");
    assert_eq!(parsed[0]["response_code"], 418);
    assert_eq!(parsed[0]["response_flags"], "-");
    assert_eq!(parsed[0]["route_name"], "httpbin-rule");
    assert_eq!(parsed[0]["upstream_cluster"], "outbound|8000||httpbin");
    assert!(parsed[0]["duration"].is_u64() && parsed[0]["upstream_service_time"].is_string());
    assert_eq!(parsed[0]["requested_server_name"], Value::Null);
    assert_eq!(parsed[1]["response_flags"], "NR");
    assert_eq!(parsed[1]["upstream_host"], Value::Null);
    assert_eq!(parsed[2]["response_flags"], "UF,URX");
    assert!(
        !logged.gateway.log_text().contains("\"GET /status/418"),
        "the file log also went to stdout"
    );
    drop(logged);
}

/// A custom format of Envoy operators, and `off`.
#[test]
fn custom_access_log_formats_and_off() {
    let logged = Logged::start(
        "log-custom",
        &[
            "--access-log-format",
            "[%START_TIME%] %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS%",
        ],
    );
    logged.send_requests();
    let gw = &logged.gateway;
    let lines = logged.lines(|| gw.log_text());
    assert!(
        lines[0].ends_with("] GET /status/418 418 -"),
        "{}",
        lines[0]
    );
    assert!(lines[1].ends_with("] GET /nowhere 404 NR"), "{}", lines[1]);
    assert!(
        lines[2].ends_with("] GET /refused 503 UF,URX"),
        "{}",
        lines[2]
    );
    drop(logged);

    let quiet = Logged::start("log-off", &["--access-log", "off"]);
    quiet.send_requests();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !quiet.gateway.log_text().contains("/status/418"),
        "{}",
        quiet.gateway.log_text()
    );

    let dir = TempDir::new("log-bad-format");
    let config = dir.write(
        "gateway.yaml",
        http_config(free_port(), HTTPBIN, quiet.upstream.addr()),
    );
    let (code, out) =
        run_expecting_exit(&config, &["--access-log-format", "%DOWNSTREAM_PEER_CERT%"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("%DOWNSTREAM_PEER_CERT% is not supported") && out.contains("START_TIME"),
        "{out}"
    );
    let _ = &quiet.dir;
}

/// Every failed TLS handshake is counted by its reason
/// (`ringress_tls_handshake_failures_total{reason}`) and logged at info with the
/// reason and what rustls said: an unknown server name, no cipher suite in common, a
/// MUTUAL server's missing client certificate, plain HTTP on a TLS port. A TCP probe
/// that sends nothing is counted (as closed) but not logged.
#[test]
fn tls_handshake_failures_are_counted_and_logged_by_reason() {
    require_tools();
    let MutualFixture {
        fixture,
        mutual_port,
        mut gateway,
    } = MutualFixture::start("op-tls-failures", &[]);
    let port = fixture.port;

    let unknown = s_client(port, "nobody.example.com", &[], b"");
    assert_ne!(unknown.code, 0, "{unknown:?}");
    let no_shared = s_client(port, HTTPBIN, &["-tls1_2", "-cipher", "AES128-SHA"], b"");
    assert_ne!(no_shared.code, 0, "{no_shared:?}");
    let no_cert = curl(&strs(&https_url(&fixture.pki, mutual_port, "/status/200")));
    assert_ne!(no_cert.code, 0, "{no_cert:?}");
    let (plain, _) = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!plain.starts_with(b"HTTP/"), "{plain:?}");
    drop(std::net::TcpStream::connect(("127.0.0.1", port)).expect("probe"));

    // Each with the name the client asked for, whichever step of the handshake failed.
    let wanted = [
        (
            "unknown_server_name",
            "nobody.example.com",
            "nobody.example.com",
        ),
        ("no_shared_parameters", "peer is incompatible", HTTPBIN),
        (
            "client_certificate_missing",
            "peer sent no certificates",
            HTTPBIN,
        ),
        ("bad_client_hello", "not a TLS handshake", "-"),
    ];
    for (reason, detail, sni) in wanted {
        let line = format!("reason=\"{reason}\"");
        let sni = format!("sni=\"{sni}\"");
        assert!(
            wait_for(Duration::from_secs(5), || gateway.log_text().lines().any(
                |l| {
                    l.contains("TLS handshake failed")
                        && l.contains(&line)
                        && l.contains(detail)
                        && l.contains(&sni)
                }
            )),
            "no info line with {line}, {sni} and {detail:?}:\n{}",
            gateway.log_text()
        );
    }
    let stats = curl_admin(gateway.admin(), "/stats/prometheus", &[]).text();
    for reason in [
        "unknown_server_name",
        "no_shared_parameters",
        "client_certificate_missing",
        "bad_client_hello",
        "closed",
    ] {
        // Summed over the shards.
        let label = format!(",reason=\"{reason}\"}} ");
        let count: u64 = stats
            .lines()
            .filter(|l| {
                l.starts_with("ringress_tls_handshake_failures_total{") && l.contains(&label)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        // The readiness probe of the test harness is a silent TCP connection too.
        let want = if reason == "closed" { count.max(1) } else { 1 };
        assert_eq!(count, want, "{reason}:\n{stats}");
    }
    assert_eq!(
        gateway.log_count("TLS handshake failed"),
        4,
        "the silent probe must not be logged:\n{}",
        gateway.log_text()
    );
    gateway.assert_running();
}
