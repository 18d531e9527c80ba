//! A VirtualService rule's traffic policies against the real `ringress` binary, with
//! curl and a recording upstream: `fault` (abort at 100 %, 0 %, 50 % and without a
//! percentage; a delay) and `corsPolicy` (preflights answered by the gateway, actual
//! requests given the headers, other origins forwarded untouched, `IGNORE`); the
//! access log's flags and details, the counters, `ringress check` and `/config_dump`.

mod common;

use common::*;
use serde_json::Value;

const HOST: &str = "shop.example.com";

fn cors(extra: &str) -> String {
    format!(
        "    corsPolicy:
      allowOrigins:
      - exact: https://a.example
      - prefix: https://dev.
      allowMethods: [GET, POST]
      allowHeaders: [x-one, X-Two]
      exposeHeaders: [x-out]
      maxAge: 24h
      allowCredentials: true
{extra}"
    )
}

/// One rule per policy, each on its own path prefix, all routed to `backend`.
fn rules() -> String {
    let rule = |prefix: &str, policy: &str| {
        format!(
            "  - name: {}\n    match:\n    - uri:\n        prefix: {prefix}\n{policy}{}",
            prefix.trim_start_matches('/'),
            route_to("backend")
        )
    };
    [
        rule(
            "/abort",
            "    fault:\n      abort:\n        httpStatus: 503\n        percentage:\n          value: 100\n",
        ),
        rule(
            "/never",
            "    fault:\n      abort:\n        httpStatus: 503\n        percentage:\n          value: 0\n",
        ),
        rule(
            "/unset",
            "    fault:\n      abort:\n        httpStatus: 418\n",
        ),
        rule(
            "/half",
            "    fault:\n      abort:\n        httpStatus: 500\n        percentage:\n          value: 50\n",
        ),
        rule(
            "/delay",
            "    fault:\n      delay:\n        fixedDelay: 100ms\n        percentage:\n          value: 100\n",
        ),
        rule(
            "/both",
            "    fault:\n      delay:\n        fixedDelay: 10ms\n        percent: 100\n      abort:\n        httpStatus: 429\n        percentage:\n          value: 100\n",
        ),
        format!(
            "  - name: gone\n    match:\n    - uri:\n        prefix: /gone\n{}{}",
            cors(""),
            route_to("dead")
        ),
        rule("/cors", &cors("")),
        rule("/ignore", &cors("      unmatchedPreflights: IGNORE\n")),
    ]
    .concat()
}

fn json_lines(log: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits until the access log has `count` lines and returns them.
fn logged(log: &std::path::Path, count: usize) -> Vec<Value> {
    assert!(
        wait_for(READ_TIMEOUT, || json_lines(log).len() >= count),
        "fewer than {count} access log lines in {}",
        log.display()
    );
    json_lines(log)
}

fn line_for<'a>(lines: &'a [Value], path: &str) -> &'a Value {
    lines
        .iter()
        .rev()
        .find(|l| l["path"] == path)
        .unwrap_or_else(|| panic!("no log line for {path} in {lines:?}"))
}

/// How many requests for paths starting with `prefix` the upstream saw.
fn seen_under(upstream: &Upstream, prefix: &str) -> usize {
    upstream
        .seen
        .heads()
        .iter()
        .filter(|h| {
            h.split_whitespace()
                .nth(1)
                .is_some_and(|p| p.starts_with(prefix))
        })
        .count()
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A gateway on a free port serving [`rules`] for [`HOST`] to a recording upstream,
/// its access log in JSON to `log`.
struct Setup {
    dir: TempDir,
    upstream: Upstream,
    port: u16,
    log: std::path::PathBuf,
    yaml: String,
    gw: Gateway,
}

impl Setup {
    fn start(tag: &str) -> Setup {
        require("curl");
        let dir = TempDir::new(tag);
        let upstream = Upstream::named("backend");
        let dead: std::net::SocketAddr = ([127, 0, 0, 1], closed_port()).into();
        let port = free_port();
        let log = dir.join("access.log");
        let log_arg = log.to_string_lossy().into_owned();
        let yaml = gateway_config(
            &[http_server(port, &[HOST])],
            &[HOST],
            &rules(),
            &[("backend", &[upstream.addr][..]), ("dead", &[dead][..])],
        );
        let gw = Gateway::start(
            &dir,
            &yaml,
            &["--access-log", &log_arg, "--access-log-format", "json"],
        );
        Setup {
            dir,
            upstream,
            port,
            log,
            yaml,
            gw,
        }
    }
}

/// `ringress check` accepts `yaml` and prints each of `described`.
fn assert_check_describes(dir: &TempDir, yaml: &str, described: &[&str]) {
    let config = dir.write("check.yaml", yaml);
    let (code, stdout, stderr) = check(&config);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    for described in described {
        assert!(
            stdout.contains(described),
            "{described:?} not in:\n{stdout}"
        );
    }
}

#[test]
fn fault_aborts_and_delays_as_envoys_fault_filter() {
    let t = Setup::start("traffic-fault");
    let (dir, upstream, port, log, yaml, gw) =
        (&t.dir, &t.upstream, t.port, &t.log, &t.yaml, &t.gw);
    let mut lines = 0;

    // 100 %: answered by the gateway, never forwarded.
    let r = curl_http(HOST, port, "/abort", &[]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (503, "fault filter abort"),
        "{r:?}"
    );
    assert_eq!(r.header("content-type"), Some("text/plain"));
    lines += 1;
    let l = logged(log, lines);
    let line = line_for(&l, "/abort");
    assert_eq!(line["response_flags"], "FI", "{line}");
    assert_eq!(
        line["response_code_details"], "fault_filter_abort",
        "{line}"
    );
    assert_eq!(seen_under(upstream, "/abort"), 0);

    // 0 %, and no percentage at all (Istio: no request aborted): always forwarded.
    for path in ["/never", "/unset"] {
        for _ in 0..20 {
            let r = curl_http(HOST, port, path, &[]);
            assert_eq!(r.status, 200, "{path}: {r:?}");
            lines += 1;
        }
        assert_eq!(seen_under(upstream, path), 20, "{path}");
    }

    // 50 %: of 200 requests, some of each (the chance of fewer than 50 of either is
    // below 1e-12).
    let mut aborted = 0;
    for _ in 0..200 {
        let r = curl_http(HOST, port, "/half", &[]);
        match r.status {
            500 => {
                assert_eq!(r.text(), "fault filter abort");
                aborted += 1;
            }
            200 => {}
            other => panic!("/half answered {other}: {r:?}"),
        }
        lines += 1;
    }
    assert!((50..=150).contains(&aborted), "{aborted} of 200 aborted");
    assert_eq!(seen_under(upstream, "/half"), 200 - aborted);

    // A delay: the request waits, then reaches the upstream; flag DI.
    let r = curl_http(HOST, port, "/delay", &[]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "backend /delay 0"),
        "{r:?}"
    );
    lines += 1;
    let l = logged(log, lines);
    assert_eq!(line_for(&l, "/delay")["response_flags"], "DI");
    assert_eq!(seen_under(upstream, "/delay"), 1);
    // A body sent during the delay is forwarded whole.
    let r = curl_http(HOST, port, "/delay/body", &["--data-binary", "0123456789"]);
    assert_eq!(r.text(), "backend /delay/body 10", "{r:?}");
    lines += 1;

    // A delay, then an abort (the deprecated integer `percent`).
    let r = curl_http(HOST, port, "/both", &[]);
    assert_eq!((r.status, r.text().as_str()), (429, "fault filter abort"));
    lines += 1;
    let l = logged(log, lines);
    assert_eq!(line_for(&l, "/both")["response_flags"], "DI,FI");
    assert_eq!(seen_under(upstream, "/both"), 0);

    let metrics = curl_admin(gw.admin(), "/stats/prometheus", &[]).text();
    assert_eq!(
        counter(&metrics, "ringress_fault_aborts_injected_total"),
        2 + aborted as u64,
        "{metrics}"
    );
    assert_eq!(counter(&metrics, "ringress_fault_delays_injected_total"), 3);

    // check and /config_dump describe the faults.
    assert_check_describes(
        dir,
        yaml,
        &[
            "fault: abort 503 for 100% of requests",
            "fault: abort 418 for 0% of requests",
            "fault: delay 10ms for 100% of requests, then abort 429 for 100% of requests",
            "cors: origins [exact https://a.example; prefix https://dev.], methods GET,POST, headers x-one,X-Two, expose x-out, max age 86400s, credentials",
        ],
    );
    let dump: Value =
        serde_json::from_str(&curl_admin(gw.admin(), "/config_dump", &[]).text()).unwrap();
    let text = dump.to_string();
    for described in [
        r#""abort":{"grpc_status":null,"http_status":500,"percentage":50.0}"#,
        r#""delay":{"fixed_delay":"0.1s","percentage":100.0}"#,
        r#""unmatched_preflights":"IGNORE""#,
        r#""max_age":86400"#,
    ] {
        assert!(text.contains(described), "{described} not in {text}");
    }
}

#[test]
fn cors_preflights_are_answered_and_allowed_origins_get_headers() {
    let t = Setup::start("traffic-cors");
    let (upstream, port, log, gw) = (&t.upstream, t.port, &t.log, &t.gw);
    let preflight = |path: &str, origin: &str| {
        curl_http(
            HOST,
            port,
            path,
            &[
                "-X",
                "OPTIONS",
                "-H",
                &format!("Origin: {origin}"),
                "-H",
                "Access-Control-Request-Method: PUT",
                "-H",
                "Access-Control-Request-Headers: x-asked",
            ],
        )
    };

    // A preflight from an allowed origin: answered here, never forwarded.
    let r = preflight("/cors/items", "https://dev.example");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://dev.example")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("x-one,X-Two")
    );
    assert_eq!(r.header("access-control-max-age"), Some("86400"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("content-length"), Some("0"));
    assert_eq!(r.text(), "");
    assert_eq!(seen_under(upstream, "/cors"), 0);
    let l = logged(log, 1);
    assert_eq!(
        line_for(&l, "/cors/items")["response_code_details"],
        "cors_response"
    );

    // A preflight from another origin: forwarded, no CORS headers.
    let r = preflight("/cors/items", "https://evil.example");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "backend /cors/items 0")
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(seen_under(upstream, "/cors"), 1);
    assert!(upstream.seen.heads()[0].starts_with("OPTIONS /cors/items"));

    // ... unless unmatchedPreflights is IGNORE: answered, without the origin.
    let r = preflight("/ignore", "https://evil.example");
    assert_eq!((r.status, r.text().as_str()), (200, ""), "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(seen_under(upstream, "/ignore"), 0);

    // An actual request from an allowed origin: forwarded, headers on the response.
    let r = curl_http(
        HOST,
        port,
        "/cors/get",
        &["-H", "Origin: https://a.example"],
    );
    assert_eq!((r.status, r.text().as_str()), (200, "backend /cors/get 0"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-expose-headers"), Some("x-out"));
    assert_eq!(r.header("access-control-allow-methods"), None);

    // The gateway's own answer to a forwarded request gets them too (as Envoy's
    // router's answers pass its CORS filter).
    let r = curl_http(HOST, port, "/gone", &["-H", "Origin: https://a.example"]);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://a.example")
    );

    // From another origin, or with no origin: forwarded, no CORS headers.
    for extra in [&["-H", "Origin: https://evil.example"][..], &[][..]] {
        let r = curl_http(HOST, port, "/cors/get", extra);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("access-control-allow-origin"), None, "{extra:?}");
        assert_eq!(r.header("access-control-expose-headers"), None, "{extra:?}");
    }
    assert_eq!(seen_under(upstream, "/cors/get"), 3);

    let metrics = curl_admin(gw.admin(), "/stats/prometheus", &[]).text();
    assert_eq!(
        counter(&metrics, "ringress_cors_origin_valid_total"),
        3,
        "{metrics}"
    );
    assert_eq!(counter(&metrics, "ringress_cors_origin_invalid_total"), 3);
}

/// Rules that mirror to `shadow` (a recording upstream) and to `dead` (a closed port).
fn mirror_rules() -> String {
    let rule = |prefix: &str, policy: &str| {
        format!(
            "  - match:\n    - uri:\n        prefix: {prefix}\n{policy}{}",
            route_to("backend")
        )
    };
    let to =
        |service: &str| format!("host: {service}\n        port:\n          number: {SERVICE_PORT}");
    [
        rule("/zero", &format!("    mirror:\n      {}\n    mirrorPercentage:\n      value: 0\n", to("shadow").replace("\n  ", "\n"))),
        rule("/dead", &format!("    mirrors:\n    - destination:\n        {}\n", to("dead"))),
        rule("/half", &format!("    mirrors:\n    - destination:\n        {}\n      percentage:\n        value: 50\n", to("shadow"))),
        rule("/", &format!("    mirror:\n      {}\n", to("shadow").replace("\n  ", "\n"))),
    ]
    .concat()
}

#[test]
fn mirrors_get_a_shadow_copy_and_never_touch_the_request() {
    require("curl");
    let dir = TempDir::new("traffic-mirror");
    let primary = Upstream::named("primary");
    let shadow = Upstream::named("shadow");
    let dead: std::net::SocketAddr = ([127, 0, 0, 1], closed_port()).into();
    let port = free_port();
    let yaml = gateway_config(
        &[http_server(port, &[HOST])],
        &[HOST],
        &mirror_rules(),
        &[
            ("backend", &[primary.addr][..]),
            ("shadow", &[shadow.addr][..]),
            ("dead", &[dead][..]),
        ],
    );
    let gw = Gateway::start(&dir, &yaml, &[]);
    let mirrored = |prefix: &str| seen_under(&shadow, prefix);

    // The client gets the primary's answer; the mirror a copy with the -shadow host.
    let r = curl_http(HOST, port, "/items?x=1", &["-H", "x-test: copied"]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "primary /items?x=1 0"),
        "{r:?}"
    );
    assert!(
        wait_for(READ_TIMEOUT, || mirrored("/items") == 1),
        "no mirrored copy"
    );
    let head = shadow.seen.heads()[0].to_ascii_lowercase();
    assert!(head.starts_with("get /items?x=1 http/1.1\r\n"), "{head}");
    // Before the port, as Envoy puts it.
    assert!(
        head.contains(&format!("host: {HOST}-shadow:{port}\r\n")),
        "{head}"
    );
    assert!(head.contains("x-test: copied\r\n"), "{head}");
    let primary_head = primary.seen.heads()[0].to_ascii_lowercase();
    assert!(
        primary_head.contains(&format!("host: {HOST}:{port}\r\n")),
        "{primary_head}"
    );

    // A body that came with its head is copied whole.
    let r = curl_http(HOST, port, "/post", &["--data-binary", "0123456789"]);
    assert_eq!(r.text(), "primary /post 10");
    assert!(wait_for(READ_TIMEOUT, || mirrored("/post") == 1));
    assert_eq!(*shadow.seen.body_bytes.lock().unwrap().last().unwrap(), 10);

    // A body that follows its head (after 100 Continue) is copied once whole.
    let later = dir.write("later", vec![b'y'; 20_000]);
    let later_arg = format!("@{}", later.display());
    let expect = ["--data-binary", &later_arg, "-H", "Expect: 100-continue"];
    let r = curl_http(HOST, port, "/later", &expect);
    assert_eq!(r.text(), "primary /later 20000", "{r:?}");
    assert!(wait_for(READ_TIMEOUT, || mirrored("/later") == 1));
    assert_eq!(
        *shadow.seen.body_bytes.lock().unwrap().last().unwrap(),
        20_000
    );

    // A body longer than what is copied reaches the primary whole, is not mirrored.
    let big = dir.write("big", vec![b'x'; 300_000]);
    let big_arg = format!("@{}", big.display());
    let r = curl_http(HOST, port, "/big", &["--data-binary", &big_arg]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "primary /big 300000"),
        "{r:?}"
    );

    // mirrorPercentage 0 mirrors nothing; a dead mirror fails nothing.
    for _ in 0..10 {
        assert_eq!(
            curl_http(HOST, port, "/zero", &[]).text(),
            "primary /zero 0"
        );
        assert_eq!(
            curl_http(HOST, port, "/dead", &[]).text(),
            "primary /dead 0"
        );
    }
    // 50 %: of 100 requests some are mirrored, some not (wide bounds: counts only).
    for _ in 0..100 {
        assert_eq!(curl_http(HOST, port, "/half", &[]).status, 200);
    }
    let metrics = || curl_admin(gw.admin(), "/stats/prometheus", &[]).text();
    assert!(
        wait_for(READ_TIMEOUT, || counter(
            &metrics(),
            "ringress_mirror_failed_total"
        ) == 10),
        "{}",
        metrics()
    );
    let half = || mirrored("/half");
    assert!(wait_for(READ_TIMEOUT, || half() >= 20));
    assert!((20..=80).contains(&half()), "{} of 100 mirrored", half());
    assert_eq!(mirrored("/zero"), 0);
    assert_eq!(mirrored("/big"), 0);
    let m = metrics();
    assert_eq!(counter(&m, "ringress_mirror_skipped_total"), 1, "{m}");
    assert!(wait_for(READ_TIMEOUT, || {
        counter(&metrics(), "ringress_mirror_sent_total") == 3 + half() as u64
    }));
    // An upgrade request is not mirrored (it has no body: the check is not the body's).
    let upgrade = ["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"];
    let r = curl_http(HOST, port, "/upgrade", &upgrade);
    assert_eq!(r.text(), "primary /upgrade 0", "{r:?}");
    let m = metrics();
    assert_eq!(counter(&m, "ringress_mirror_skipped_total"), 2, "{m}");
    assert_eq!(mirrored("/upgrade"), 0);

    assert_check_describes(
        &dir,
        &yaml,
        &[
            "mirror: dead:8000 (100% of requests)",
            "mirror: shadow:8000 (50% of requests)",
        ],
    );
    let dump: Value =
        serde_json::from_str(&curl_admin(gw.admin(), "/config_dump", &[]).text()).unwrap();
    let dump = dump.to_string();
    assert!(
        dump.contains(
            r#""mirrors":[{"destination":{"host":"shadow","port":8000},"percentage":50.0}]"#
        ),
        "{dump}"
    );
}

#[test]
fn fault_aborts_answer_grpc_clients_as_envoy_does() {
    require("curl");
    require_python_module("grpc");
    let dir = TempDir::new("traffic-grpc-abort");
    let upstream = Upstream::named("backend");
    let (grpc_port, http_port) = (free_port(), free_port());
    let rule = |port: u16, abort: &str| {
        format!(
            "  - match:\n    - port: {port}\n    fault:\n      abort:\n        {abort}\n        percentage:\n          value: 100\n{}",
            route_to("backend")
        )
    };
    let yaml = gateway_config(
        &[
            http_server(grpc_port, &["*"]),
            http_server(http_port, &["*"]),
        ],
        &["*"],
        &[
            rule(grpc_port, "grpcStatus: UNAVAILABLE"),
            rule(http_port, "httpStatus: 403"),
        ]
        .concat(),
        &[("backend", &[upstream.addr][..])],
    );
    let _gw = Gateway::start(&dir, &yaml, &[]);
    let grpc = grpc_calls(&format!("127.0.0.1:{grpc_port}"), None, &["unary:hello"]);
    assert_eq!(grpc[0]["code"], "UNAVAILABLE", "{}", grpc[0]);
    assert_eq!(grpc[0]["details"], "fault filter abort", "{}", grpc[0]);
    // httpStatus mapped as Envoy maps a local reply's status (403: PERMISSION_DENIED).
    let http = grpc_calls(&format!("127.0.0.1:{http_port}"), None, &["unary:hello"]);
    assert_eq!(http[0]["code"], "PERMISSION_DENIED", "{}", http[0]);
    assert_eq!(http[0]["details"], "fault filter abort", "{}", http[0]);
    // A client that does not speak gRPC gets 200 and the body.
    let r = curl_http(HOST, grpc_port, "/", &[]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "fault filter abort"),
        "{r:?}"
    );
    assert_eq!(upstream.seen.requests(), 0);
}

/// A delay far longer than the test waits: a client that gives up ends it, over
/// HTTP/1.1 (its close) and HTTP/2 (its connection's end), and its log line (`DC`)
/// is written then, the upstream never asked.
#[test]
fn a_client_that_leaves_during_a_delay_ends_it() {
    require("curl");
    let dir = TempDir::new("traffic-delay-gone");
    let upstream = Upstream::named("backend");
    let pki = pki(&dir);
    let (port, https_port) = (free_port(), free_port());
    let log = dir.join("access.log");
    let log_arg = log.to_string_lossy().into_owned();
    let rule = format!(
        "  - fault:\n      delay:\n        fixedDelay: 300s\n        percentage:\n          value: 100\n{}",
        route_to("backend")
    );
    let yaml = gateway_config(
        &[
            http_server(port, &[HOST]),
            simple_https(&pki, https_port, "https", HTTPBIN),
        ],
        &[HOST, HTTPBIN],
        &rule,
        &[("backend", &[upstream.addr][..])],
    );
    let _gw = Gateway::start(
        &dir,
        &yaml,
        &["--access-log", &log_arg, "--access-log-format", "json"],
    );
    let r = curl_http(HOST, port, "/h1", &["--max-time", "1"]);
    assert_eq!(r.code, 28, "curl did not time out: {r:?}");
    let r = curl_https(&pki, https_port, "/h2", &["--http2", "--max-time", "1"]);
    assert_eq!(r.code, 28, "curl did not time out: {r:?}");
    let lines = logged(&log, 2);
    for path in ["/h1", "/h2"] {
        let line = line_for(&lines, path);
        assert_eq!(line["response_flags"], "DC", "{line}");
    }
    assert_eq!(line_for(&lines, "/h2")["protocol"], "HTTP/2");
    assert_eq!(upstream.seen.requests(), 0);
}
