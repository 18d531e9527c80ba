//! DestinationRule load balancing against the real `ringress` binary, real upstreams
//! (`tests/tools/lb_upstream.py`, each answering with its name) and curl: `subsets`
//! chosen by `destination.subset` and matched against ServiceEntry endpoint `labels`,
//! `loadBalancer.consistentHash` by header and by a cookie the gateway generates and
//! sets when it is absent, and the `connectionPool.http` limits
//! (`maxRequestsPerConnection`, `http1MaxPendingRequests`, `http2MaxRequests`,
//! `maxRetries`), and
//! `outlierDetection` ejecting an endpoint that answers 5xx, as `/clusters` and the
//! metrics show, until its ejection time is up; and the `ringress.io/health-check-*`
//! annotations taking an endpoint that fails its probe out of every balancer. Every request is a new curl, so a new connection, which
//! the kernel spreads over the gateway's two shards: one key reaching one endpoint
//! shows it does on every shard.

mod common;

use std::collections::BTreeSet;

use common::*;

const HOST: &str = "shop.example.com";

/// A named upstream and the directory of its port file.
struct Upstream {
    server: PyServer,
    _dir: TempDir,
}

/// Upstreams named `names`, each on its own port.
fn upstreams(names: &[&str]) -> Vec<Upstream> {
    names.iter().map(|name| upstream(name, 200)).collect()
}

/// An upstream named `name` answering `status` to everything but its special paths.
fn upstream(name: &str, status: u16) -> Upstream {
    let dir = TempDir::new(&format!("lb-{name}"));
    let server = PyServer::start(&dir, "lb_upstream.py", &[name], &[&status.to_string()]);
    Upstream { server, _dir: dir }
}

/// A Gateway on `port`, a VirtualService with `http` rules, a STATIC ServiceEntry
/// `shop` whose endpoints are the upstreams (labelled `version: <name>`), and a
/// DestinationRule for `shop` with `rule` as its spec's body.
fn config(port: u16, http: &str, upstreams: &[(&str, &Upstream)], rule: &str) -> String {
    let endpoints: String = upstreams
        .iter()
        .map(|(name, server)| {
            format!(
                "  - address: 127.0.0.1\n    ports: {{http: {}}}\n    labels: {{version: {name}}}\n",
                server.server.addr.port()
            )
        })
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  servers:\n  - port:\n      number: {port}\n      name: http\n      protocol: HTTP\n    bind: 127.0.0.1\n    hosts: [\"*\"]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: shop\nspec:\n  hosts: [{HOST}]\n  gateways: [gw]\n  http:\n{http}---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: shop\nspec:\n  hosts: [shop]\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  resolution: STATIC\n  endpoints:\n{endpoints}---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: shop\nspec:\n  host: shop\n{rule}"
    )
}

/// The upstream that answered, or the status when none did.
fn answered(port: u16, path: &str, extra: &[&str]) -> Result<String, u16> {
    let r = curl_http(HOST, port, path, extra);
    match r.header("x-upstream") {
        Some(name) if r.status == 200 => Ok(name.to_owned()),
        _ => {
            eprintln!(
                "no upstream answered: {} {} {}",
                r.status,
                r.stderr,
                r.text()
            );
            Err(r.status)
        }
    }
}

#[test]
fn subsets_route_by_endpoint_labels() {
    require("curl");
    let dir = TempDir::new("subsets");
    let servers = upstreams(&["v1", "v2"]);
    let port = free_port();
    let http = "  - match:\n    - headers:\n        x-canary: {exact: \"yes\"}\n    route:\n    - destination: {host: shop, subset: v2}\n\
                \x20 - match:\n    - uri: {prefix: /nobody}\n    route:\n    - destination: {host: shop, subset: v3}\n\
                \x20 - route:\n    - destination: {host: shop, subset: v1}\n";
    let rule = "  trafficPolicy:\n    loadBalancer: {simple: RANDOM}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n  - name: v2\n    labels: {version: v2}\n    trafficPolicy:\n      loadBalancer: {simple: LEAST_REQUEST}\n  - name: v3\n    labels: {version: v3}\n";
    let yaml = config(
        port,
        http,
        &[("v1", &servers[0]), ("v2", &servers[1])],
        rule,
    );
    let _gw = Gateway::start(&dir, &yaml, &[]);
    for _ in 0..6 {
        assert_eq!(answered(port, "/", &[]), Ok("v1".to_owned()));
        assert_eq!(
            answered(port, "/", &["-H", "x-canary: yes"]),
            Ok("v2".to_owned())
        );
    }
    // A subset no endpoint's labels match: Envoy's empty cluster, 503 (flag UH).
    let none = curl_http(HOST, port, "/nobody", &[]);
    assert_eq!(
        (none.status, none.text().as_str()),
        (503, "no healthy upstream")
    );

    // `check` shows the subset clusters, Istio's names included.
    let (code, out, err) = check(&dir.join("gateway.yaml"));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("outbound|80|v1|shop"), "{out}");
    assert!(
        out.contains("(outbound|80|v2|shop)  LEAST_REQUEST"),
        "{out}"
    );
}

#[test]
fn a_subset_no_destination_rule_defines_is_a_load_error() {
    require("curl");
    let dir = TempDir::new("subset-unknown");
    let servers = upstreams(&["v1"]);
    let http = "  - route:\n    - destination: {host: shop, subset: canary}\n";
    let rule = "  subsets:\n  - name: v1\n    labels: {version: v1}\n";
    let yaml = config(free_port(), http, &[("v1", &servers[0])], rule);
    let path = dir.write("gateway.yaml", &yaml);
    let (code, _, err) = check(&path);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("http[0] destination shop subset canary: ")
            && err.contains("(DestinationRule shop) defines only subsets v1"),
        "{err}"
    );
}

/// Upstreams, and a gateway on `port` with the `http` rules and the DestinationRule
/// spec body `rule`.
struct Running {
    port: u16,
    gateway: Gateway,
    upstreams: Vec<Upstream>,
    _dir: TempDir,
}

/// The one route most tests need.
const ROUTE: &str = "  - route:\n    - destination: {host: shop}\n";

impl Running {
    /// Upstreams named `names`, answering 200.
    fn start(tag: &str, names: &[&str], http: &str, rule: &str) -> Running {
        let answering: Vec<(&str, u16)> = names.iter().map(|n| (*n, 200)).collect();
        Running::with(tag, &answering, http, rule, "")
    }

    /// Upstreams of (name, status), the DestinationRule with `annotations` (lines of
    /// `metadata.annotations`).
    fn with(
        tag: &str,
        answering: &[(&str, u16)],
        http: &str,
        rule: &str,
        annotations: &str,
    ) -> Running {
        require("curl");
        let dir = TempDir::new(tag);
        let upstreams: Vec<Upstream> = answering.iter().map(|(n, s)| upstream(n, *s)).collect();
        let port = free_port();
        let named: Vec<(&str, &Upstream)> =
            answering.iter().map(|(n, _)| *n).zip(&upstreams).collect();
        let mut yaml = config(port, http, &named, rule);
        if !annotations.is_empty() {
            let metadata = "kind: DestinationRule\nmetadata:\n  name: shop\n";
            yaml = yaml.replace(
                metadata,
                &format!("{metadata}  annotations:\n{annotations}"),
            );
        }
        let gateway = Gateway::start(&dir, &yaml, &[]);
        Running {
            port,
            gateway,
            upstreams,
            _dir: dir,
        }
    }

    /// Upstreams `a`, `b`, `c` under `load_balancer` as `trafficPolicy.loadBalancer`.
    fn hashed(tag: &str, load_balancer: &str) -> Running {
        let rule = format!("  trafficPolicy:\n    loadBalancer:\n{load_balancer}");
        Running::start(tag, &["a", "b", "c"], ROUTE, &rule)
    }
}

#[test]
fn consistent_hash_by_header_keeps_each_key_on_one_endpoint() {
    let hashed = Running::hashed(
        "hash-header",
        "      consistentHash:\n        httpHeaderName: x-user\n",
    );
    let port = hashed.port;
    let mut used = BTreeSet::new();
    for user in 0..20 {
        let header = format!("x-user: user-{user}");
        let first = answered(port, "/", &["-H", &header]).expect("an upstream answers");
        for _ in 0..3 {
            assert_eq!(
                answered(port, "/", &["-H", &header]).as_ref(),
                Ok(&first),
                "{header}"
            );
        }
        used.insert(first);
    }
    assert!(used.len() >= 2, "20 keys all hashed to {used:?}");
    // Without the header each request goes to a random endpoint.
    let random: BTreeSet<String> = (0..30)
        .map(|_| answered(port, "/", &[]).expect("an upstream answers"))
        .collect();
    assert!(
        random.len() >= 2,
        "30 requests without a key all went to {random:?}"
    );
}

#[test]
fn consistent_hash_by_cookie_sets_the_cookie_and_sticks_to_it() {
    let hashed = Running::hashed(
        "hash-cookie",
        "      consistentHash:\n        httpCookie: {name: sticky, path: /, ttl: 60s}\n        maglev: {tableSize: 1009}\n",
    );
    let port = hashed.port;

    let first = curl_http(HOST, port, "/", &[]);
    assert_eq!(first.status, 200);
    let set = first
        .header("set-cookie")
        .expect("a generated cookie")
        .to_owned();
    let value = set
        .strip_prefix("sticky=\"")
        .and_then(|rest| rest.strip_suffix("\"; Max-Age=60; Path=/; HttpOnly"))
        .unwrap_or_else(|| panic!("Set-Cookie: {set}"));
    assert!(
        value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit()),
        "{set}"
    );
    let owner = first.header("x-upstream").unwrap().to_owned();
    // The cookie, quoted as set or not, leads back to the endpoint that set it.
    for cookie in [
        format!("sticky=\"{value}\""),
        format!("other=1; sticky={value}"),
    ] {
        for _ in 0..3 {
            let r = curl_http(HOST, port, "/", &["-H", &format!("Cookie: {cookie}")]);
            assert_eq!(r.header("x-upstream"), Some(owner.as_str()), "{cookie}");
            assert_eq!(
                r.header("set-cookie"),
                None,
                "a request with the cookie gets none"
            );
        }
    }
    let used: BTreeSet<String> = (0..20)
        .map(|i| answered(port, "/", &["-H", &format!("Cookie: sticky=s{i}")]).expect("answered"))
        .collect();
    assert!(used.len() >= 2, "20 cookies all hashed to {used:?}");
}

/// `curl` fetching `paths` one after the other on one keep-alive connection: each
/// response's status and `x-upstream`, `x-connection`, `x-request` headers.
fn sequential(port: u16, paths: &[&str]) -> Vec<(u16, String, String, String)> {
    require("curl");
    let resolve = resolve(HOST, port);
    let mut command = std::process::Command::new("curl");
    command.args(["-sS", "--max-time", "15", "-D", "-", "--resolve", &resolve]);
    for path in paths {
        command.args(["-o", "/dev/null", &format!("http://{HOST}:{port}{path}")]);
    }
    let output = run_with_timeout(command, b"", CLIENT_TIMEOUT);
    let dump = String::from_utf8_lossy(&output.stdout).into_owned();
    dump.split("\r\n\r\n")
        .filter(|head| head.starts_with("HTTP/"))
        .map(|head| {
            let headers = head_headers(head);
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let value = |name| header_value(&headers, name).unwrap_or("").to_owned();
            (
                status,
                value("x-upstream"),
                value("x-connection"),
                value("x-request"),
            )
        })
        .collect()
}

#[test]
fn max_requests_per_connection_closes_upstream_connections() {
    let limited =
        "  trafficPolicy:\n    connectionPool:\n      http: {maxRequestsPerConnection: 2}\n";
    let limited = Running::start("max-requests", &["a"], ROUTE, limited);
    let port = limited.port;
    let paths = ["/1", "/2", "/3", "/4", "/5", "/6"];
    let responses = sequential(port, &paths);
    assert_eq!(responses.len(), 6, "{responses:?}");
    let connections: BTreeSet<&str> = responses.iter().map(|r| r.2.as_str()).collect();
    for (status, name, _, request) in &responses {
        assert_eq!((*status, name.as_str()), (200, "a"));
        assert!(request == "1" || request == "2", "{responses:?}");
    }
    assert_eq!(
        connections.len(),
        3,
        "six requests, two per connection: {responses:?}"
    );

    // Without the limit, one upstream connection carries them all.
    let unset = Running::start("max-requests-unset", &["b"], ROUTE, "");
    let port = unset.port;
    let responses = sequential(port, &paths);
    let requests: Vec<&str> = responses.iter().map(|r| r.3.as_str()).collect();
    assert_eq!(requests, ["1", "2", "3", "4", "5", "6"], "{responses:?}");
}

#[test]
fn pending_requests_over_http1_max_pending_requests_overflow() {
    // Two shards: one connection and one waiting request each.
    let rule = "  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 2}\n      http: {http1MaxPendingRequests: 2}\n";
    let slow = Running::start("max-pending", &["slow"], ROUTE, rule);
    let port = slow.port;
    // Three requests at once on one HTTP/2 connection (so one shard): the first takes
    // the shard's connection and is slow to answer, the second waits for it, the third
    // finds the wait full.
    let log = concurrent(port, "/slow/1500", 3);
    let count = |status: &str| log.matches(&format!(") :status: {status}")).count();
    assert_eq!((count("200"), count("503")), (2, 1), "{log}");
    // The one that waited got the first one's connection once it came back.
    assert!(log.contains(") x-request: 2"), "{log}");
    assert!(
        log.contains(
            "upstream connect error or disconnect/reset before headers. reset reason: overflow"
        ),
        "{log}"
    );
}

/// `nghttp` sending `path` `n` times at once on one HTTP/2 connection (so to one
/// shard): its verbose log.
fn concurrent(port: u16, path: &str, n: usize) -> String {
    require("nghttp");
    let mut command = std::process::Command::new("nghttp");
    command.args([
        "-v",
        "-m",
        &n.to_string(),
        "-H",
        &format!(":authority: {HOST}"),
        &format!("http://127.0.0.1:{port}{path}"),
    ]);
    let output = run_with_timeout(command, b"", CLIENT_TIMEOUT);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn retries_over_max_retries_are_not_made() {
    let http =
        "  - route:\n    - destination: {host: shop}\n    retries: {attempts: 3, retryOn: 5xx}\n";
    let rule = "  trafficPolicy:\n    connectionPool:\n      http: {maxRetries: 1}\n";
    let failing = Running::start("max-retries", &["failing"], http, rule);
    let port = failing.port;
    // Two requests at once, each answered 503 after a while: one retries (three
    // times, one retry in flight at a time), the other finds the budget taken and
    // answers its first 503.
    let log = concurrent(port, "/slow/300/503", 2);
    assert_eq!(log.matches(") :status: 503").count(), 2, "{log}");
    let answered = curl_http(HOST, port, "/requests", &[]).text();
    assert_eq!(answered.trim(), "5", "1 + 1 + 3 retries: {log}");
}

/// `GET http://127.0.0.1:ADMIN{path}`: the admin endpoint's answer (the endpoint
/// may open a moment after the listeners: its first connect is retried for a while).
fn admin(gateway: &Gateway, path: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = curl_admin(gateway.admin(), path, &[]);
        if r.status == 200 {
            return r.text();
        }
        assert!(
            r.status == 0 && std::time::Instant::now() < deadline,
            "{path}: {} {}",
            r.stderr,
            r.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn outlier_detection_ejects_a_failing_endpoint_until_its_time_is_up() {
    let rule = "  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection:\n      consecutive5xxErrors: 3\n      interval: 1s\n      baseEjectionTime: 4s\n      maxEjectionPercent: 50\n";
    let running = Running::with("outlier", &[("good", 200), ("bad", 500)], ROUTE, rule, "");
    let (port, gw, bad) = (running.port, &running.gateway, &running.upstreams[1]);
    let bad_addr = format!("127.0.0.1:{}", bad.server.addr.port());
    let flags = |gw: &Gateway| {
        admin(gw, "/clusters")
            .lines()
            .find(|l| l.starts_with(&format!("outbound|80||shop::{bad_addr}::health_flags::")))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    assert!(flags(gw).ends_with("::healthy"), "{}", flags(gw));
    // Round robin sends every other request to `bad`, over both shards: its third 500
    // in a row (counted across shards) ejects it.
    let mut statuses = Vec::new();
    while statuses.iter().filter(|s| **s == 500).count() < 3 {
        assert!(statuses.len() < 20, "{statuses:?}");
        statuses.push(curl_http(HOST, port, "/", &[]).status);
    }
    assert!(
        flags(gw).ends_with("::health_flags::/failed_outlier_check"),
        "{}",
        flags(gw)
    );
    // While it is out, every request reaches `good`.
    for _ in 0..8 {
        assert_eq!(answered(port, "/", &[]), Ok("good".to_owned()));
    }
    let metrics = admin(gw, "/stats/prometheus");
    for sample in [
        "envoy_cluster_outlier_detection_ejections_enforced_total{cluster_name=\"outbound|80||shop\"} 1",
        "envoy_cluster_outlier_detection_ejections_active{cluster_name=\"outbound|80||shop\"} 1",
        "envoy_cluster_membership_healthy{cluster_name=\"outbound|80||shop\"} 1",
        "envoy_cluster_membership_total{cluster_name=\"outbound|80||shop\"} 2",
    ] {
        assert!(metrics.contains(sample), "{sample} in\n{metrics}");
    }
    // After baseEjectionTime (and the next interval tick) it is back: a request
    // reaches it again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if curl_http(HOST, port, "/", &[]).status == 500 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the endpoint never came back"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(flags(gw).ends_with("::healthy"), "{}", flags(gw));
}

#[test]
fn active_health_checks_take_a_failing_endpoint_out() {
    // `sick` answers every request, its health path included, with 503.
    let annotations = "    ringress.io/health-check-path: /healthz\n    ringress.io/health-check-interval: 200ms\n    ringress.io/health-check-timeout: 500ms\n    ringress.io/health-check-unhealthy-threshold: \"2\"\n";
    let running = Running::with(
        "health-check",
        &[("good", 200), ("sick", 503)],
        ROUTE,
        "",
        annotations,
    );
    let (port, gw) = (running.port, &running.gateway);
    let (good, sick) = (&running.upstreams[0], &running.upstreams[1]);
    let dir_config = gw.config.clone();
    let sick_flags = format!(
        "outbound|80||shop::127.0.0.1:{}::health_flags::/failed_active_hc",
        sick.server.addr.port()
    );
    let good_flags = format!(
        "outbound|80||shop::127.0.0.1:{}::health_flags::healthy",
        good.server.addr.port()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let clusters = admin(gw, "/clusters");
        if clusters.lines().any(|l| l == sick_flags) {
            assert!(clusters.lines().any(|l| l == good_flags), "{clusters}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the failing endpoint was never taken out:\n{clusters}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Every request now reaches the endpoint that passes.
    for _ in 0..10 {
        assert_eq!(answered(port, "/", &[]), Ok("good".to_owned()));
    }
    let metrics = admin(gw, "/stats/prometheus");
    assert!(
        metrics.contains("envoy_cluster_membership_healthy{cluster_name=\"outbound|80||shop\"} 1"),
        "{metrics}"
    );
    let failures = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "envoy_cluster_health_check_failure{cluster_name=\"outbound|80||shop\"} ",
            )
        })
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(failures >= 2, "{metrics}");
    let (code, out, err) = check(&dir_config);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("health check: GET /healthz every 200ms, timeout 500ms, out after 2 failures"),
        "{out}"
    );
}

#[test]
fn requests_over_http2_max_requests_overflow() {
    // Two shards: one request in flight each.
    let rule = "  trafficPolicy:\n    connectionPool:\n      http: {http2MaxRequests: 2}\n";
    let slow = Running::start("max-requests-in-flight", &["slow"], ROUTE, rule);
    // Two at once on one HTTP/2 connection (one shard): the second finds the first in
    // flight, though connections are free.
    let log = concurrent(slow.port, "/slow/1000", 2);
    let count = |status: &str| log.matches(&format!(") :status: {status}")).count();
    assert_eq!((count("200"), count("503")), (1, 1), "{log}");
    assert!(
        log.contains(
            "upstream connect error or disconnect/reset before headers. reset reason: overflow"
        ),
        "{log}"
    );
    // Once it is done, the next goes through.
    assert_eq!(answered(slow.port, "/", &[]), Ok("slow".to_owned()));
}

#[test]
fn health_checks_of_a_cluster_reached_over_tls_are_a_load_error() {
    let dir = TempDir::new("health-check-tls");
    let servers = upstreams(&["v1"]);
    let ca = pki(&dir).root_cert.display().to_string();
    let rule =
        format!("  trafficPolicy:\n    tls:\n      mode: SIMPLE\n      caCertificates: {ca}\n");
    let yaml = config(free_port(), ROUTE, &[("v1", &servers[0])], &rule).replace(
        "kind: DestinationRule\nmetadata:\n  name: shop\n",
        "kind: DestinationRule\nmetadata:\n  name: shop\n  annotations:\n    ringress.io/health-check-path: /healthz\n",
    );
    let path = dir.write("gateway.yaml", &yaml);
    let (code, _, err) = check(&path);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("http[0] destination shop:80 speaks TLS, but the health checks of")
            && err.contains("probe with plain-text HTTP/1.1 only"),
        "{err}"
    );
}
