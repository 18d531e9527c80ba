//! TLS to upstreams (DestinationRule `trafficPolicy.tls`) against the real `ringress`
//! binary: a Python `ssl` HTTP/1.1 upstream (`tests/tools/tls_upstream.py`) with
//! certificates from the test PKI, reached through a plain-HTTP gateway. SIMPLE with
//! `caCertificates`, `sni` and `subjectAltNames` (a certificate for another name is a
//! 503 with Envoy's TLS reason), each request's host as the SNI without `sni`, MUTUAL with files and with `credentialName`, an
//! upstream that requires a client certificate refusing one without, a self-signed
//! upstream with and without `insecureSkipVerify`, keep-alive reuse of one TLS
//! connection, `portLevelSettings` choosing TLS per port, and HTTP/2 over TLS to a
//! Python `h2` upstream.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::*;
use ringress::demo::pki::{self, LeafSpec};

/// The upstream's name in its certificate (the service is called `backend`).
const UPSTREAM_NAME: &str = "backend.internal";

/// The upstream PKI: root → intermediate → `backend.internal` and `other.internal`.
fn upstream_pki(dir: &TempDir) -> pki::Pki {
    pki::generate(
        &dir.join("upstream-pki"),
        &[UPSTREAM_NAME, "other.internal"],
    )
    .expect("generating the upstream PKI")
}

/// `tls_upstream.py` serving [`UPSTREAM_NAME`]'s certificate of `pki`, requiring a
/// client certificate from `pki`'s root when `mutual`.
fn backend_upstream(dir: &TempDir, pki: &pki::Pki, mutual: bool) -> PyServer {
    let root = path(&pki.root_cert);
    let cert = path(&pki.cert(UPSTREAM_NAME));
    let key = path(&pki.key(UPSTREAM_NAME));
    tls_upstream(dir, &cert, &key, mutual.then_some(root.as_str()))
}

/// `tls_upstream.py` serving `cert`/`key`, requiring a client certificate from
/// `client_ca` when given.
fn tls_upstream(dir: &TempDir, cert: &str, key: &str, client_ca: Option<&str>) -> PyServer {
    let mut extra = Vec::new();
    if let Some(ca) = client_ca {
        extra.push(ca);
    }
    PyServer::start(dir, "tls_upstream.py", &[cert, key], &extra)
}

/// A plain-HTTP gateway on `port` routing every request for [`HTTPBIN`] to `backend`
/// at `upstream`, with the DestinationRule `policy`.
fn config(port: u16, upstream: SocketAddr, policy: &str) -> String {
    http_config(port, HTTPBIN, upstream) + &backend_rule(policy)
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

fn echo(out: &Curl) -> serde_json::Value {
    serde_json::from_slice(&out.body).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// A gateway in `dir` routing to `upstream` with the DestinationRule `policy`, and
/// its answer to `GET /`.
fn answer(dir: &TempDir, upstream: SocketAddr, policy: &str) -> (Curl, Gateway) {
    let port = free_port();
    let gw = Gateway::start(dir, &config(port, upstream, policy), &[]);
    (get(port, "/"), gw)
}

fn get(port: u16, path: &str) -> Curl {
    curl(&[
        "-H",
        &format!("Host: {HTTPBIN}"),
        &format!("http://127.0.0.1:{port}{path}"),
    ])
}

fn simple(ca: &std::path::Path, extra: &str) -> String {
    format!(
        "    tls:\n      mode: SIMPLE\n      caCertificates: {}\n{extra}",
        path(ca)
    )
}

#[test]
fn simple_tls_verifies_the_upstream_and_keeps_the_connection() {
    require("curl");
    let dir = TempDir::new("utls-simple");
    let pki = upstream_pki(&dir);
    let upstream = backend_upstream(&dir, &pki, false);
    let port = free_port();
    let yaml = config(
        port,
        upstream.addr,
        &simple(&pki.root_cert, &format!("      sni: {UPSTREAM_NAME}\n")),
    );
    let gw = Gateway::start(&dir, &yaml, &[]);
    let out = get(port, "/first");
    assert_eq!(out.status, 200, "{out:?}\n{}", gw.log_text());
    let body = echo(&out);
    assert_eq!(body["sni"], UPSTREAM_NAME, "{body}");
    assert_eq!(body["alpn"], "http/1.1", "{body}");
    assert_eq!(body["path"], "/first", "{body}");

    // Several requests on one client connection (one shard): one TLS connection.
    let mut stream = connect(port);
    let mut connections = Vec::new();
    for i in 0..4 {
        let (status, text) = request_on(&mut stream, HTTPBIN, &format!("/again/{i}"));
        assert_eq!(status, 200, "{text}");
        let body: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        connections.push(body["connection"].clone());
    }
    assert!(
        connections.windows(2).all(|w| w[0] == w[1]),
        "every request on the same upstream TLS connection: {connections:?}"
    );
    // The upstream closes that connection; the next one resumes the TLS session.
    let (status, text) = request_on(&mut stream, HTTPBIN, "/close");
    assert_eq!(status, 200, "{text}");
    let (status, text) = request_on(&mut stream, HTTPBIN, "/after");
    assert_eq!(status, 200, "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_ne!(
        body["connection"], connections[0],
        "a new connection: {body}"
    );
    assert_eq!(body["resumed"], true, "the session was resumed: {body}");

    // `check` shows the cluster's TLS.
    let (code, stdout, stderr) = check(&dir.join("gateway.yaml"));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "tls SIMPLE; sni {UPSTREAM_NAME}; CA {}",
            path(&pki.root_cert)
        )),
        "{stdout}"
    );
}

#[test]
fn a_certificate_for_another_name_is_a_503_with_envoys_reason() {
    require("curl");
    let dir = TempDir::new("utls-san");
    let pki = upstream_pki(&dir);
    let upstream = backend_upstream(&dir, &pki, false);
    // Without `sni`, the SNI is the request's host, which is not the certificate's.
    let (out, mut gw) = answer(&dir, upstream.addr, &simple(&pki.root_cert, ""));
    assert_eq!(out.status, 503, "{out:?}");
    assert_eq!(
        out.text(),
        "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure, transport failure reason: TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end"
    );
    let log = gw.log_text();
    assert!(
        log.contains("TLS handshake with") && log.contains("CERTIFICATE_VERIFY_FAILED"),
        "{log}"
    );
    // Counted: 3 tries (Istio's 2 retries of a connect failure), on one shard or two.
    let metrics = curl(&[&format!("http://127.0.0.1:{}/stats/prometheus", gw.admin())]).text();
    let failures: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("ringress_upstream_tls_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(failures, 3.0, "{metrics}");
    // The access log's flags: an upstream connect failure, retries exhausted.
    gw.wait_log_count("\"GET / HTTP/1.1\" 503 UF,URX", 1);
    drop(gw);

    // subjectAltNames replace the name check: the certificate must carry one of them.
    for (sans, want) in [(UPSTREAM_NAME, 200), ("other.internal", 503)] {
        let extra = format!("      subjectAltNames:\n      - {sans}\n");
        let (out, gw) = answer(&dir, upstream.addr, &simple(&pki.root_cert, &extra));
        assert_eq!(
            out.status,
            want,
            "subjectAltNames [{sans}]: {out:?}\n{}",
            gw.log_text()
        );
    }

    // A CA that did not sign it.
    let other = pki::generate(&dir.join("other-pki"), &[UPSTREAM_NAME]).expect("PKI");
    let extra = format!("      sni: {UPSTREAM_NAME}\n");
    let (out, _gw) = answer(&dir, upstream.addr, &simple(&other.root_cert, &extra));
    assert_eq!(out.status, 503, "{out:?}");
    assert!(out.text().contains("CERTIFICATE_VERIFY_FAILED"), "{out:?}");
}

#[test]
fn mutual_tls_presents_the_client_certificate() {
    require("curl");
    let dir = TempDir::new("utls-mutual");
    let pki = upstream_pki(&dir);
    let upstream = backend_upstream(&dir, &pki, true);
    let client = pki
        .issue(&LeafSpec::client("gateway-client", "gateway.internal"))
        .expect("client certificate");
    let mutual = format!(
        "    tls:\n      mode: MUTUAL\n      caCertificates: {}\n      clientCertificate: {}\n      privateKey: {}\n      sni: {UPSTREAM_NAME}\n",
        path(&pki.root_cert),
        path(&client.cert),
        path(&client.key)
    );
    let (out, gw) = answer(&dir, upstream.addr, &mutual);
    assert_eq!(out.status, 200, "{out:?}\n{}", gw.log_text());
    assert_eq!(echo(&out)["client"], "gateway.internal");
    let (code, stdout, stderr) = check(&dir.join("gateway.yaml"));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.lines().any(|l| l.contains(&format!(
            "client certificate {}: subject",
            path(&client.cert)
        )) && l.contains("CN=gateway.internal")
            && l.contains("expires in")),
        "{stdout}"
    );
    // /certs lists it as Envoy lists an upstream TLS context; its expiry is a metric.
    let certs: serde_json::Value =
        serde_json::from_slice(&curl(&[&format!("http://127.0.0.1:{}/certs", gw.admin())]).body)
            .expect("JSON");
    let entry = certs["certificates"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|c| c["cluster"] == "outbound|8000||backend")
        })
        .unwrap_or_else(|| panic!("no upstream entry: {certs}"));
    let subject = entry["cert_chain"][0]["subject"]
        .as_str()
        .unwrap_or_default();
    assert!(subject.contains("CN=gateway.internal"), "{entry}");
    let metrics = curl(&[&format!("http://127.0.0.1:{}/stats/prometheus", gw.admin())]).text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ringress_certificate_expiry_seconds{")
                && l.contains("role=\"upstream_client\"")
                && l.contains("hosts=\"backend\"")),
        "{metrics}"
    );
    drop(gw);

    // Without a client certificate the upstream refuses (after the handshake, in
    // TLS 1.3): never a 200.
    let extra = format!("      sni: {UPSTREAM_NAME}\n");
    let (out, gw) = answer(&dir, upstream.addr, &simple(&pki.root_cert, &extra));
    assert!(
        matches!(out.status, 502 | 503),
        "{out:?}\n{}",
        gw.log_text()
    );
}

#[test]
fn credential_name_reads_the_client_certificate_from_the_secrets_dir() {
    require("curl");
    let dir = TempDir::new("utls-credential");
    let pki = upstream_pki(&dir);
    let upstream = backend_upstream(&dir, &pki, true);
    let secret = dir.join("secrets/backend-client");
    std::fs::create_dir_all(&secret).expect("secret dir");
    for (from, to) in [
        (pki.client_cert(), "tls.crt"),
        (pki.client_key(), "tls.key"),
        (pki.root_cert.clone(), "ca.crt"),
    ] {
        std::fs::copy(&from, secret.join(to)).expect("copying the secret");
    }
    let port = free_port();
    let policy = format!(
        "    tls:\n      mode: MUTUAL\n      credentialName: backend-client\n      sni: {UPSTREAM_NAME}\n"
    );
    let secrets = path(&dir.join("secrets"));
    let gw = Gateway::start(
        &dir,
        &config(port, upstream.addr, &policy),
        &["--secrets-dir", &secrets],
    );
    let out = get(port, "/");
    assert_eq!(out.status, 200, "{out:?}\n{}", gw.log_text());
    assert_eq!(echo(&out)["client"], pki::CLIENT_NAME);
}

#[test]
fn insecure_skip_verify_accepts_a_self_signed_upstream() {
    require("curl");
    require("openssl");
    let dir = TempDir::new("utls-insecure");
    let (cert, key) = (dir.join("self.crt"), dir.join("self.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "2", "-subj", "/CN=self-signed.internal", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{made:?}");
    let upstream = tls_upstream(&dir, &path(&cert), &path(&key), None);
    for (policy, want) in [
        ("    tls:\n      mode: SIMPLE\n", 503),
        (
            "    tls:\n      mode: SIMPLE\n      insecureSkipVerify: true\n",
            200,
        ),
    ] {
        let (out, gw) = answer(&dir, upstream.addr, policy);
        assert_eq!(out.status, want, "{policy}: {out:?}\n{}", gw.log_text());
    }
}

#[test]
fn port_level_settings_choose_tls_per_port() {
    require("curl");
    let dir = TempDir::new("utls-ports");
    let pki = upstream_pki(&dir);
    let tls = backend_upstream(&dir, &pki, false);
    let plain = httpbin();
    let port = free_port();
    let yaml = docs(&[
        gateway_doc("gw", &[http_server(port, &[HTTPBIN])]),
        virtual_service(
            "vs",
            &[HTTPBIN],
            &["gw"],
            "  - match:\n    - uri:\n        prefix: /tls\n    route:\n    - destination:\n        host: backend\n        port:\n          number: 8443\n  - route:\n    - destination:\n        host: backend\n        port:\n          number: 8080\n",
        ),
        format!(
            "{}  hosts:\n  - backend\n  ports:\n  - number: 8443\n    name: https\n    protocol: HTTP\n  - number: 8080\n    name: http\n    protocol: HTTP\n  resolution: STATIC\n  endpoints:\n  - address: 127.0.0.1\n    ports:\n      https: {}\n      http: {}\n",
            ringress::demo::document_head("ServiceEntry", "backend"),
            tls.addr.port(),
            plain.addr().port()
        ),
    ]) + &backend_rule(&format!(
        "{}    portLevelSettings:\n    - port:\n        number: 8080\n      tls:\n        mode: DISABLE\n",
        simple(&pki.root_cert, &format!("      sni: {UPSTREAM_NAME}\n"))
    ));
    let gw = Gateway::start(&dir, &yaml, &[]);
    let out = get(port, "/tls");
    assert_eq!(out.status, 200, "{out:?}\n{}", gw.log_text());
    assert_eq!(echo(&out)["sni"], UPSTREAM_NAME);
    let out = get(port, "/get");
    assert_eq!(out.status, 200, "{out:?}\n{}", gw.log_text());
    assert!(
        out.text().contains("\"url\""),
        "httpbin answered in plain text: {out:?}"
    );
}

#[test]
fn http2_over_tls_to_an_h2_upstream() {
    require("curl");
    require_python_module("h2");
    let dir = TempDir::new("utls-h2");
    let pki = upstream_pki(&dir);
    let cert = path(&pki.cert(UPSTREAM_NAME));
    let key = path(&pki.key(UPSTREAM_NAME));
    let upstream = PyServer::start(&dir, "h2_upstream.py", &[], &["--tls", &cert, &key]);
    let port = free_port();
    let yaml = http_config(port, HTTPBIN, upstream.addr)
        .replace(
            "    name: http\n    protocol: HTTP\n",
            "    name: http2\n    protocol: HTTP2\n",
        )
        .replace("      http: ", "      http2: ")
        + &backend_rule(&simple(
            &pki.root_cert,
            &format!("      sni: {UPSTREAM_NAME}\n"),
        ));
    let gw = Gateway::start(&dir, &yaml, &[]);
    for path in ["/one", "/two"] {
        let out = get(port, path);
        assert_eq!(out.status, 200, "{out:?}\n{}", gw.log_text());
        let body = echo(&out);
        assert_eq!(body["path"], path, "{body}");
        assert_eq!(body["scheme"], "https", "{body}");
    }
}

#[test]
fn a_websocket_tunnel_runs_over_tls_to_the_upstream() {
    require_python_module("websockets");
    let dir = TempDir::new("utls-ws");
    let pki = upstream_pki(&dir);
    let cert = path(&pki.cert(UPSTREAM_NAME));
    let key = path(&pki.key(UPSTREAM_NAME));
    let echo = PyServer::start(&dir, "ws_peer.py", &["serve"], &["--tls", &cert, &key]);
    let port = free_port();
    let policy = simple(&pki.root_cert, &format!("      sni: {UPSTREAM_NAME}\n"));
    let gw = Gateway::start(&dir, &config(port, echo.addr, &policy), &[]);
    let url = format!("ws://{HTTPBIN}:{port}/headers");
    let mut command = Command::new("python3");
    command
        .arg(tool("ws_peer.py"))
        .args(["client", &url, "--connect-to", "127.0.0.1"]);
    let out = run_with_timeout(command, b"", std::time::Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log_text()
    );
    let got: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(got["echoed"], 102, "{got}");
    assert_eq!(got["close"], 1000, "{got}");
}

#[test]
fn sighup_reloads_the_upstream_ca_and_a_bad_one_keeps_the_old() {
    require("curl");
    let dir = TempDir::new("utls-reload");
    let pki = upstream_pki(&dir);
    let upstream = backend_upstream(&dir, &pki, false);
    let ca = dir.join("upstream-ca.pem");
    std::fs::copy(&pki.root_cert, &ca).expect("CA copy");
    let port = free_port();
    let extra = format!("      sni: {UPSTREAM_NAME}\n");
    let mut gw = Gateway::start(
        &dir,
        &config(port, upstream.addr, &simple(&ca, &extra)),
        &["--no-watch"],
    );
    assert_eq!(get(port, "/").status, 200, "{}", gw.log_text());

    // A CA file that is not PEM: the reload fails, naming it; the old CA serves.
    std::fs::write(&ca, "not a certificate\n").expect("writing");
    assert!(!gw.sighup_and_wait(), "the reload must fail");
    let log = gw.log_text();
    assert!(
        log.contains("upstream-ca.pem") && log.contains("spec.trafficPolicy.tls"),
        "{log}"
    );
    assert_eq!(get(port, "/").status, 200, "{}", gw.log_text());

    // Another CA: the reload succeeds, and new connections are verified with it.
    let other = pki::generate(&dir.join("other-pki"), &[UPSTREAM_NAME]).expect("PKI");
    std::fs::copy(&other.root_cert, &ca).expect("CA copy");
    assert!(gw.sighup_and_wait(), "{}", gw.log_text());
    let out = get(port, "/");
    assert_eq!(out.status, 503, "{out:?}");
}

#[test]
fn without_sni_each_request_s_host_is_the_server_name() {
    require("curl");
    let dir = TempDir::new("utls-auto-sni");
    let pki = upstream_pki(&dir);
    let upstream = backend_upstream(&dir, &pki, false);
    let port = free_port();
    let hosts = [HTTPBIN, UPSTREAM_NAME];
    let yaml = backend_config(&[http_server(port, &hosts)], &hosts, &[upstream.addr])
        + &backend_rule(&simple(&pki.root_cert, ""));
    let gw = Gateway::start(&dir, &yaml, &[]);
    // One client connection: the connection verified for backend.internal is never
    // used for another host, whose name the upstream's certificate does not carry.
    let mut stream = connect(port);
    let (status, text) = request_on(&mut stream, &format!("{UPSTREAM_NAME}:{port}"), "/");
    assert_eq!(status, 200, "{text}\n{}", gw.log_text());
    let body: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(body["sni"], UPSTREAM_NAME, "{body}");
    let (status, text) = request_on(&mut stream, HTTPBIN, "/");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("CERTIFICATE_VERIFY_FAILED"), "{text}");
}

#[test]
fn ca_crl_refuses_a_revoked_upstream_certificate() {
    require("curl");
    let dir = TempDir::new("utls-crl");
    let pki = upstream_pki(&dir);
    let upstream = backend_upstream(&dir, &pki, false);
    for (revoked, want) in [("other.internal", 200), (UPSTREAM_NAME, 503)] {
        let crl = chain_crl(&dir, &pki, &[&pki.cert(revoked)]);
        let extra = format!("      sni: {UPSTREAM_NAME}\n      caCrl: {}\n", path(&crl));
        let (out, gw) = answer(&dir, upstream.addr, &simple(&pki.root_cert, &extra));
        assert_eq!(
            out.status,
            want,
            "{revoked} revoked: {out:?}\n{}",
            gw.log_text()
        );
        if want == 503 {
            assert!(out.text().contains("CERTIFICATE_VERIFY_FAILED"), "{out:?}");
        }
    }
}

#[test]
fn an_upstream_that_does_not_speak_tls_or_stays_silent_is_a_bounded_503() {
    require("curl");
    let dir = TempDir::new("utls-hostile");
    let pki = upstream_pki(&dir);
    // A plain-text HTTP server answers the ClientHello with an HTTP error.
    let plain = httpbin();
    let (out, gw) = answer(&dir, plain.addr(), &simple(&pki.root_cert, ""));
    assert_eq!(out.status, 503, "{out:?}\n{}", gw.log_text());
    assert!(out.text().contains("WRONG_VERSION_NUMBER"), "{out:?}");
    assert_eq!(out.header("content-type"), Some("text/plain"), "{out:?}");
    drop(gw);

    // A listener nobody accepts on: the kernel completes the TCP handshake, the TLS
    // one never comes; the connect timeout bounds it (each of Istio's 3 tries), well
    // within curl's own limit.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
    let policy = format!(
        "    connectionPool:\n      tcp:\n        connectTimeout: 300ms\n{}",
        simple(&pki.root_cert, "")
    );
    let (out, gw) = answer(&dir, silent.local_addr().expect("address"), &policy);
    assert_eq!(out.status, 503, "{out:?}\n{}", gw.log_text());
    assert!(
        gw.log_text().contains("connection_timeout") || gw.log_text().contains("timed out"),
        "{}",
        gw.log_text()
    );
}
