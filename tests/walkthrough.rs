//! The Istio walkthroughs ringress users follow ("Control Ingress Traffic", "Securing
//! Gateways with HTTPS"), step by step against the real binary: the manifests from the
//! docs (file paths and ports adapted), curl and openssl as the docs run them, and
//! `ringress check` as an operator would before starting.

mod common;

use std::path::PathBuf;

use common::*;

/// The walkthrough's VirtualService: `/status` and `/delay` of `host` go to httpbin.
fn httpbin_vs(name: &str, host: &str, gateway: &str) -> String {
    let http = format!(
        "  - match:
    - uri:
        prefix: /status
    - uri:
        prefix: /delay
{}",
        route_to("httpbin")
    );
    virtual_service(name, &[host], &[gateway], &http)
}

/// The walkthrough's Gateway `httpbin-gateway` with the given servers, its
/// VirtualService and the ServiceEntry saying where httpbin lives.
fn walkthrough_config(servers: &[String], upstream: std::net::SocketAddr) -> String {
    docs(&[
        gateway_doc("httpbin-gateway", servers),
        httpbin_vs("httpbin", HTTPBIN, "httpbin-gateway"),
        service_entry("httpbin", SERVICE_PORT, &[upstream]),
    ])
}

/// The multi-host walkthrough: Gateway `mygateway` with `servers`, httpbin's
/// VirtualService (`/status`, `/delay`) and bookinfo's (every path), both to httpbin at
/// `upstream`.
fn two_hosts_config(servers: &[String], upstream: std::net::SocketAddr) -> String {
    docs(&[
        gateway_doc("mygateway", servers),
        httpbin_vs("httpbin", HTTPBIN, "mygateway"),
        virtual_service(
            "bookinfo",
            &[BOOKINFO],
            &["mygateway"],
            &route_all("httpbin", SERVICE_PORT),
        ),
        service_entry("httpbin", SERVICE_PORT, &[upstream]),
    ])
}

/// Writes the walkthrough configuration with one HTTPS server for [`HTTPBIN`] whose
/// `tls:` lines are `tls` (its upstream never needed) to `DIR/gateway.yaml`, and checks
/// that `ringress check` refuses it with exit code 1; the file and check's stderr.
fn check_refuses(dir: &TempDir, tls: &str) -> (PathBuf, String) {
    let port = free_port();
    let config = dir.write(
        "gateway.yaml",
        walkthrough_config(
            &[https_server(port, "https", &[HTTPBIN], tls)],
            "127.0.0.1:9".parse().expect("address"),
        ),
    );
    let (code, _, stderr) = check(&config);
    assert_eq!(code, Some(1), "{stderr}");
    (config, stderr)
}

#[test]
fn control_ingress_traffic_over_http() {
    require("curl");
    let dir = TempDir::new("wt-http");
    let upstream = httpbin();
    let port = free_port();
    let _gw = Gateway::start(
        &dir,
        &walkthrough_config(&[http_server(port, &[HTTPBIN])], upstream.addr()),
        &[],
    );

    // curl to the ingress address with a `Host` header, as the docs do.
    let with_host = |host: &str, path: &str, extra: &[&str]| {
        let header = format!("Host: {host}");
        let url = format!("http://127.0.0.1:{port}{path}");
        let mut args = vec!["-H", header.as_str(), url.as_str()];
        args.extend_from_slice(extra);
        curl(&args)
    };

    // `curl -s -I -HHost:httpbin.example.com http://$INGRESS_HOST:$INGRESS_PORT/status/200`
    let out = with_host(HTTPBIN, "/status/200", &["-I"]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    assert_eq!(out.header("server"), Some("ringress"), "{out:?}");

    // The same with --resolve, as the newer docs do.
    let out = curl_http(HTTPBIN, port, "/status/200", &["-I"]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");

    // "Access any other URL that has not been explicitly exposed. You should see an
    // HTTP 404 error."
    let out = with_host(HTTPBIN, "/headers", &["-I"]);
    assert_eq!((out.code, out.status), (0, 404), "{out:?}");

    // A host the Gateway does not serve is not routed either.
    let out = with_host("other.example.com", "/status/200", &[]);
    assert_eq!((out.code, out.status), (0, 404), "{out:?}");

    // /delay is routed too, and GET bodies arrive whole.
    let out = with_host(HTTPBIN, "/delay/0", &[]);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    assert!(out.text().contains("\"url\""), "{out:?}");
}

#[test]
fn securing_gateways_simple_tls_verifies_through_the_intermediate() {
    require("curl");
    let dir = TempDir::new("wt-simple");
    let pki = pki(&dir);
    let upstream = httpbin();
    let port = free_port();
    let _gw = Gateway::start(
        &dir,
        &walkthrough_config(
            &[simple_https(&pki, port, "https", HTTPBIN)],
            upstream.addr(),
        ),
        &[],
    );

    // `curl -v -HHost:httpbin.example.com --resolve ... --cacert root-ca.crt
    //  https://httpbin.example.com:$SECURE_INGRESS_PORT/status/418` prints the teapot:
    // the client trusts only the root, the gateway sends leaf + intermediate.
    let out = curl(&strs(&https_url(&pki, port, "/status/418")));
    assert_eq!((out.code, out.status), (0, 418), "{out:?}");
    assert!(out.text().contains("I'm a teapot"), "{out:?}");
    assert!(out.text().contains("TEA"), "{out:?}");

    // ca-chain.pem (intermediate + root), as the demo prints, works as well.
    let out = curl_https_for(HTTPBIN, port, &pki.ca_chain, "/status/418");
    assert_eq!((out.code, out.status), (0, 418), "{out:?}");

    // Not exposed: 404, over TLS too.
    let out = curl(&strs(&https_url(&pki, port, "/headers")));
    assert_eq!((out.code, out.status), (0, 404), "{out:?}");

    // A client trusting another CA refuses the certificate (curl exit 60).
    let out = curl_https_for(HTTPBIN, port, &pki.other_ca_cert, "/status/418");
    assert_eq!(
        out.code, 60,
        "a client trusting only other-ca must fail: {out:?}"
    );
    assert_eq!(out.status, 0, "{out:?}");
}

#[test]
fn mutual_tls_needs_a_client_certificate_from_the_trusted_ca() {
    require("curl");
    let dir = TempDir::new("wt-mutual");
    let pki = pki(&dir);
    let upstream = httpbin();
    let port = free_port();
    let tls = mutual_tls(&pki, "MUTUAL");
    let _gw = Gateway::start(
        &dir,
        &walkthrough_config(
            &[https_server(port, "https", &[HTTPBIN], &tls)],
            upstream.addr(),
        ),
        &[],
    );
    let url = https_url(&pki, port, "/status/418");

    // Without a client certificate the handshake (or, with TLS 1.3, the first read)
    // fails: no response.
    let out = curl(&strs(&url));
    assert_ne!(out.code, 0, "no client certificate must fail: {out:?}");
    assert_eq!(out.status, 0, "{out:?}");

    // With the client certificate issued by the trusted CA: the teapot.
    let with_identity = |cert: &std::path::Path, key: &std::path::Path| {
        let args = [url.clone(), client_cert_args(cert, key)].concat();
        curl(&strs(&args))
    };
    let out = with_identity(&pki.client_cert(), &pki.client_key());
    assert_eq!((out.code, out.status), (0, 418), "{out:?}");

    // A client certificate from another CA is refused.
    let out = with_identity(&pki.other_client_cert(), &pki.other_client_key());
    assert_ne!(
        out.code, 0,
        "a client certificate from other-ca must fail: {out:?}"
    );
    assert_eq!(out.status, 0, "{out:?}");
}

#[test]
fn multiple_hosts_on_one_port_get_their_own_certificates() {
    require_tools();
    let dir = TempDir::new("wt-multi");
    let pki = pki(&dir);
    let upstream = httpbin();
    let port = free_port();
    let config = two_hosts_config(&sni_servers(&pki, port), upstream.addr());
    let _gw = Gateway::start(&dir, &config, &[]);
    let root = pki.root_cert.to_string_lossy().into_owned();

    for host in [HTTPBIN, BOOKINFO] {
        // openssl sees the host's own certificate, verified through the intermediate.
        let out = s_client(port, host, &["-CAfile", &root, "-showcerts"], b"");
        let subject = served_subject(&out.output).unwrap_or_default();
        assert!(
            subject.replace(' ', "").contains(&format!("CN={host}")),
            "SNI {host} got subject {subject:?}: {}",
            out.output
        );
        let sans = served_sans(&out.output);
        assert!(
            sans.contains(&format!("DNS:{host}")),
            "SNI {host}: SANs {sans:?}"
        );
        let other = if host == HTTPBIN { BOOKINFO } else { HTTPBIN };
        assert!(!sans.contains(other), "SNI {host}: SANs {sans:?}");
        assert!(
            out.output.contains("Verify return code: 0 (ok)"),
            "SNI {host}: {}",
            out.output
        );

        // curl with the root as its only trust anchor gets an answer from each host.
        let out = curl_https_for(host, port, &pki.root_cert, "/status/418");
        assert_eq!((out.code, out.status), (0, 418), "{host}: {out:?}");

        // A client trusting the wrong root fails for each host.
        let out = curl_https_for(host, port, &pki.other_ca_cert, "/status/418");
        assert_eq!(out.code, 60, "{host} with other-ca: {out:?}");
    }

    // bookinfo's VirtualService routes every path; httpbin's only /status and /delay.
    let bookinfo = curl_https_for(BOOKINFO, port, &pki.root_cert, "/headers");
    assert_eq!((bookinfo.code, bookinfo.status), (0, 200), "{bookinfo:?}");
    let httpbin = curl(&strs(&https_url(&pki, port, "/headers")));
    assert_eq!((httpbin.code, httpbin.status), (0, 404), "{httpbin:?}");
}

#[test]
fn removing_the_http_server_leaves_https_only() {
    require("curl");
    let dir = TempDir::new("wt-https-only");
    let pki = pki(&dir);
    let upstream = httpbin();
    let http_port = free_port();
    let https_port = free_port();
    let https = simple_https(&pki, https_port, "https", HTTPBIN);

    // First both servers, as after "Configuring an ingress gateway" + HTTPS.
    let both = Gateway::start(
        &dir,
        &walkthrough_config(
            &[http_server(http_port, &[HTTPBIN]), https.clone()],
            upstream.addr(),
        ),
        &[],
    );
    assert_http_ok(http_port, HTTPBIN, "/status/200");
    let out = curl(&strs(&https_url(&pki, https_port, "/status/418")));
    assert_eq!((out.code, out.status), (0, 418), "{out:?}");
    drop(both);

    // Then the Gateway without its HTTP server: the old HTTP port refuses connections
    // (curl exit 7), HTTPS keeps working.
    let _https_only = Gateway::start(&dir, &walkthrough_config(&[https], upstream.addr()), &[]);
    let out = curl_http(HTTPBIN, http_port, "/status/200", &[]);
    assert_eq!(out.code, 7, "the removed HTTP port must refuse: {out:?}");
    let out = curl(&strs(&https_url(&pki, https_port, "/status/418")));
    assert_eq!((out.code, out.status), (0, 418), "{out:?}");
}

#[test]
fn credential_name_resolves_in_the_secrets_dir() {
    require("curl");
    let dir = TempDir::new("wt-credential");
    let pki = pki(&dir);
    let upstream = httpbin();
    let port = free_port();
    // A Kubernetes TLS secret as kubelet mounts it (tls.crt, tls.key), and a generic
    // secret (cert, key) for the second host.
    let secrets = write_secrets(
        &dir,
        &[
            (pki.cert(HTTPBIN), "httpbin-credential/tls.crt"),
            (pki.key(HTTPBIN), "httpbin-credential/tls.key"),
            (pki.cert(BOOKINFO), "bookinfo-credential/cert"),
            (pki.key(BOOKINFO), "bookinfo-credential/key"),
        ],
    );
    let config = two_hosts_config(&credential_servers(port, "SIMPLE"), upstream.addr());
    let secrets_arg = secrets.to_string_lossy().into_owned();
    let _gw = Gateway::start(&dir, &config, &["--secrets-dir", &secrets_arg]);

    let out = curl(&strs(&https_url(&pki, port, "/status/418")));
    assert_eq!((out.code, out.status), (0, 418), "{out:?}");
    assert!(out.text().contains("I'm a teapot"), "{out:?}");
    let out = curl_https_for(BOOKINFO, port, &pki.root_cert, "/status/200");
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");

    // Without --secrets-dir the same configuration does not start, and says why.
    let (code, output) = run_expecting_exit(&dir.join("gateway.yaml"), &[]);
    assert_ne!(code, 0, "{output}");
    assert!(output.contains("httpbin-credential"), "{output}");
    assert!(output.contains("--secrets-dir"), "{output}");
}

#[test]
fn check_describes_a_good_config() {
    let dir = TempDir::new("wt-check-ok");
    let pki = pki(&dir);
    let upstream = httpbin();
    let port = free_port();
    let http_port = free_port();
    let config = dir.write(
        "gateway.yaml",
        walkthrough_config(
            &[
                http_server(http_port, &[HTTPBIN]),
                simple_https(&pki, port, "https", HTTPBIN),
            ],
            upstream.addr(),
        ),
    );
    let (code, stdout, stderr) = check(&config);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    // The ports, the certificate (file, subject, SANs) and the routes are printed.
    assert!(stdout.contains(&port.to_string()), "{stdout}");
    assert!(stdout.contains(&http_port.to_string()), "{stdout}");
    assert!(stdout.contains("HTTPS"), "{stdout}");
    assert!(
        stdout.contains(&pki.cert(HTTPBIN).to_string_lossy().into_owned()),
        "the certificate file should be named: {stdout}"
    );
    assert!(stdout.contains(HTTPBIN), "{stdout}");
    assert!(stdout.to_lowercase().contains("serial"), "{stdout}");
    assert!(stdout.contains("/status"), "{stdout}");
}

#[test]
fn check_names_the_document_and_field_of_an_unknown_field() {
    let dir = TempDir::new("wt-check-field");
    let pki = pki(&dir);
    let tls = format!("{}      bogusField: 1\n", simple_tls_for(&pki, HTTPBIN));
    let (config, stderr) = check_refuses(&dir, &tls);
    assert!(
        stderr.contains(&*config.to_string_lossy()),
        "the file: {stderr}"
    );
    assert!(
        stderr.contains("document 1 (Gateway httpbin-gateway)"),
        "the document: {stderr}"
    );
    assert!(
        stderr.contains("spec.servers[0].tls.bogusField"),
        "the field path: {stderr}"
    );

    // `run` refuses it the same way.
    let (code, output) = run_expecting_exit(&config, &[]);
    assert_ne!(code, 0, "{output}");
    assert!(output.contains("bogusField"), "{output}");
}

#[test]
fn check_names_both_files_when_the_key_does_not_match() {
    let dir = TempDir::new("wt-check-key");
    let pki = pki(&dir);
    let cert = pki.cert(HTTPBIN);
    let key = pki.key(BOOKINFO);
    let (_, stderr) = check_refuses(&dir, &simple_tls(&cert, &key));
    assert!(
        stderr.contains(&*cert.to_string_lossy()),
        "the certificate: {stderr}"
    );
    assert!(
        stderr.contains(&*key.to_string_lossy()),
        "the key: {stderr}"
    );
    assert!(stderr.contains("does not match"), "{stderr}");
}

#[test]
fn check_names_a_missing_certificate_file() {
    let dir = TempDir::new("wt-check-missing");
    let pki = pki(&dir);
    let missing = dir.join("pki/nowhere.crt");
    let (_, stderr) = check_refuses(&dir, &simple_tls(&missing, &pki.key(HTTPBIN)));
    assert!(stderr.contains(&*missing.to_string_lossy()), "{stderr}");
}

#[test]
fn the_demo_serves_the_commands_it_prints() {
    require("curl");
    let dir = TempDir::new("wt-demo");
    let demo_dir = dir.join("demo");
    let http_port = free_port();
    let https_port = free_port();
    let (http, https) = (http_port.to_string(), https_port.to_string());
    let gw = Gateway::spawn(
        &dir,
        &[
            "demo",
            "--dir",
            &demo_dir.to_string_lossy(),
            "--http-port",
            &http,
            "--https-port",
            &https,
            "--shards",
            "1",
            "--admin",
            "127.0.0.1:0",
        ],
        &demo_dir.join("gateway.yaml"),
        &[http_port, https_port],
    )
    .unwrap_or_else(|log| panic!("{log}"));
    let banner = gw.log_text();
    let ca_chain = demo_dir.join("ca-chain.pem");
    assert!(banner.contains(&*ca_chain.to_string_lossy()), "{banner}");

    // The banner's commands, as printed.
    let curl_lines: Vec<&str> = banner
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert!(curl_lines.len() >= 4, "{banner}");
    let mut teapot = false;
    for line in curl_lines {
        let words = shell_words(line);
        let out = curl(&strs(&words[1..]));
        assert_eq!(out.code, 0, "{line}: {out:?}");
        if line.contains("/status/418") {
            assert_eq!(out.status, 418, "{line}: {out:?}");
            assert!(out.text().contains("I'm a teapot"), "{line}: {out:?}");
            teapot = true;
        } else if line.contains("httpbin.example.com") && line.contains("/headers") {
            assert_eq!(out.status, 404, "{line}: {out:?}");
        } else {
            assert_eq!(out.status, 200, "{line}: {out:?}");
        }
    }
    assert!(teapot, "{banner}");
}

/// Splits a command line as a POSIX shell would for plain words and single quotes.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[test]
fn certificate_rotation_with_sighup() {
    let dir = TempDir::new("wt-rotate");
    let pki = pki(&dir);
    let upstream = httpbin();
    let port = free_port();
    let mut gw = Gateway::start(
        &dir,
        &walkthrough_config(
            &[simple_https(&pki, port, "https", HTTPBIN)],
            upstream.addr(),
        ),
        &[],
    );
    let old_root = dir.write(
        "old-root-ca.crt",
        std::fs::read(&pki.root_cert).expect("reading the root"),
    );
    // A keep-alive connection open across the rotation.
    let mut in_flight =
        tls_connect(port, HTTPBIN, client_config(&old_root, None)).expect("TLS handshake");
    assert_eq!(status_on(&mut in_flight, "/status/200"), 200);

    // Replace every file (a new root, intermediate and leaves), then SIGHUP.
    let rotated = pki::generate(&pki.dir, &[HTTPBIN, BOOKINFO]).expect("regenerating");
    let kill = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("running kill");
    assert!(kill.success());

    // New handshakes get the new certificate (bounded wait for the reload), on every
    // shard: each installs the new snapshot on its own turn, so eight handshakes in a
    // row must succeed (they reach both shards but once in 2^7).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        gw.assert_running();
        if (0..8)
            .all(|_| tls_connect(port, HTTPBIN, client_config(&rotated.root_cert, None)).is_ok())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate is not served 5 s after SIGHUP"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut fresh = tls_connect(port, HTTPBIN, client_config(&rotated.root_cert, None))
        .expect("handshake with the new root");
    assert_eq!(status_on(&mut fresh, "/status/418"), 418);
    // A client that only trusts the old CA now fails.
    assert!(tls_connect(port, HTTPBIN, client_config(&old_root, None)).is_err());
    // Nothing in flight failed: the old connection still serves its next request.
    assert_eq!(status_on(&mut in_flight, "/status/200"), 200);
    gw.assert_running();
}

/// `GET path` for [`HTTPBIN`] on an open connection; the response status.
fn status_on(stream: &mut TlsClient, path: &str) -> u16 {
    request_on(stream, HTTPBIN, path).0
}

#[test]
fn optional_mutual_and_subject_alt_names() {
    require("curl");
    let dir = TempDir::new("wt-mtls-modes");
    let pki = pki(&dir);
    let stranger = pki
        .issue(&pki::LeafSpec::client("stranger", "stranger.example.com"))
        .expect("issuing a second client certificate");
    let upstream = httpbin();
    let optional = free_port();
    let restricted = free_port();
    let tls = |mode: &str, extra: &str| format!("{}{extra}", mutual_tls(&pki, mode));
    let _gw = Gateway::start(
        &dir,
        &walkthrough_config(
            &[
                https_server(
                    optional,
                    "optional",
                    &[HTTPBIN],
                    &tls("OPTIONAL_MUTUAL", ""),
                ),
                https_server(
                    restricted,
                    "restricted",
                    &[HTTPBIN],
                    &tls(
                        "MUTUAL",
                        &format!("      subjectAltNames:\n      - {}\n", pki::CLIENT_NAME),
                    ),
                ),
            ],
            upstream.addr(),
        ),
        &[],
    );
    let client = client_cert_args(&pki.client_cert(), &pki.client_key());
    let other = client_cert_args(&pki.other_client_cert(), &pki.other_client_key());
    let stranger = client_cert_args(&stranger.cert, &stranger.key);
    let with = |port: u16, identity: Option<&Vec<String>>| {
        let extra = identity.map(|args| strs(args)).unwrap_or_default();
        curl_https(&pki, port, "/status/418", &extra)
    };

    // OPTIONAL_MUTUAL: no certificate is fine, a trusted one is fine, an untrusted one
    // is refused.
    let out = with(optional, None);
    assert_eq!((out.code, out.status), (0, 418), "{out:?}");
    let out = with(optional, Some(&client));
    assert_eq!((out.code, out.status), (0, 418), "{out:?}");
    let out = with(optional, Some(&other));
    assert_ne!(out.code, 0, "{out:?}");

    // MUTUAL with subjectAltNames: only the listed identity passes, even though the
    // stranger's certificate comes from the same trusted CA.
    let out = with(restricted, Some(&client));
    assert_eq!((out.code, out.status), (0, 418), "{out:?}");
    let out = with(restricted, Some(&stranger));
    assert_ne!(out.code, 0, "{out:?}");
    assert_eq!(out.status, 0, "{out:?}");
    let out = with(restricted, None);
    assert_ne!(out.code, 0, "{out:?}");
}

#[test]
fn check_names_a_host_the_certificate_does_not_cover() {
    let dir = TempDir::new("wt-check-cover");
    let pki = pki(&dir);
    // bookinfo.com's certificate on the httpbin.example.com server.
    let (_, stderr) = check_refuses(&dir, &simple_tls_for(&pki, BOOKINFO));
    assert!(stderr.contains(HTTPBIN), "the host: {stderr}");
    assert!(
        stderr.contains(BOOKINFO),
        "the certificate's names: {stderr}"
    );
    assert!(stderr.contains("httpbin-gateway"), "the Gateway: {stderr}");
}

/// Runs the shell command lines of a walkthrough in `dir`, as a user pastes them.
fn run_lines(dir: &TempDir, lines: &[&str]) {
    for line in lines {
        let out = std::process::Command::new("sh")
            .args(["-c", line])
            .current_dir(dir.path())
            .output()
            .expect("running sh");
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The walkthroughs make their certificates with openssl and the subject CN only: a
/// self-signed CA (v3, CA:TRUE, no subjectAltName) and, with `openssl x509 -req`,
/// X.509 v1 leaves. ringress serves such server certificates (the CN names the host
/// when there is no subjectAltName, as curl and OpenSSL read it), and `check` and the
/// log say what other clients will object to and how to reissue them. A v1 client
/// certificate cannot be verified: the handshake fails, and the log says why.
#[test]
fn the_walkthroughs_openssl_certificates_are_served_with_warnings() {
    require_tools();
    let dir = TempDir::new("wt-openssl");
    // 001, verbatim (file names and all), plus 002's self-signed server certificate.
    run_lines(
        &dir,
        &[
            "openssl req -x509 -sha256 -nodes -days 365 -newkey rsa:2048 -subj '/O=example Inc./CN=example.com' -keyout example.com.key -out example.com.crt",
            "openssl req -out bookinfo.example.com.csr -newkey rsa:2048 -nodes -keyout bookinfo.example.com.key -subj \"/CN=bookinfo.example.com/O=bookinfo organization\"",
            "openssl x509 -req -days 365 -CA example.com.crt -CAkey example.com.key -set_serial 0 -in bookinfo.example.com.csr -out bookinfo.example.com.crt",
            "openssl req -out client.example.com.csr -newkey rsa:2048 -nodes -keyout client.example.com.key -subj \"/CN=client.example.com/O=client organization\"",
            "openssl x509 -req -days 365 -CA example.com.crt -CAkey example.com.key -set_serial 1 -in client.example.com.csr -out client.example.com.crt",
            "openssl req -x509 -sha256 -nodes -days 365 -newkey rsa:2048 -subj '/CN=httpbin.example.com' -keyout httpbin.example.com.key -out httpbin.example.com.crt",
        ],
    );
    let upstream = httpbin();
    let (port, mutual_port) = (free_port(), free_port());
    let bookinfo = "bookinfo.example.com";
    let tls = |name: &str| {
        simple_tls(
            &dir.join(&format!("{name}.crt")),
            &dir.join(&format!("{name}.key")),
        )
    };
    let mutual = format!(
        "{}      caCertificates: {}\n",
        tls(bookinfo).replace("SIMPLE", "MUTUAL"),
        yaml_path(&dir.join("example.com.crt"))
    );
    let servers = [
        https_server(port, "https-bookinfo", &[bookinfo], &tls(bookinfo)),
        https_server(port, "https-httpbin", &[HTTPBIN], &tls(HTTPBIN)),
        https_server(mutual_port, "https-mutual", &[bookinfo], &mutual),
    ];
    let config = backend_config(&servers, &[bookinfo, HTTPBIN], &[upstream.addr()]);
    let path = dir.write("gateway.yaml", &config);
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for warning in [
        "warning: an X.509 v1 certificate",
        "warning: no subjectAltName",
        "warning: a CA certificate (basicConstraints CA:TRUE)",
        "-addext subjectAltName=DNS:",
    ] {
        assert!(
            stdout.contains(warning),
            "check does not say {warning:?}:\n{stdout}"
        );
    }

    let mut gw = Gateway::start(&dir, &config, &[]);
    let ca = dir.join("example.com.crt");
    let out = curl_https_for(bookinfo, port, &ca, "/status/418");
    assert_eq!(
        (out.code, out.status),
        (0, 418),
        "the v1, CN-only leaf: {out:?}"
    );
    let out = curl_https_for(
        HTTPBIN,
        port,
        &dir.join("httpbin.example.com.crt"),
        "/status/418",
    );
    assert_eq!(
        (out.code, out.status),
        (0, 418),
        "the self-signed CA:TRUE certificate: {out:?}"
    );
    assert!(
        gw.log_text()
            .contains("serving a certificate some clients refuse")
    );

    // 001's v1 client certificate on a MUTUAL server: refused, and the log says why.
    let mut args = https_url_for(bookinfo, mutual_port, &ca, "/status/200");
    args.extend(client_cert_args(
        &dir.join("client.example.com.crt"),
        &dir.join("client.example.com.key"),
    ));
    let out = curl(&strs(&args));
    assert_ne!(out.code, 0, "a v1 client certificate was accepted: {out:?}");
    assert!(
        wait_for(READ_TIMEOUT, || gw
            .log_text()
            .contains("the client certificate is X.509 v1")),
        "no log line about the v1 client certificate:\n{}",
        gw.log_text()
    );
    gw.assert_running();
}
