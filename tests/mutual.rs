//! Mutual TLS end to end against the real `ringress` binary: the Istio "Securing
//! Gateways with HTTPS" MUTUAL walkthrough with curl, a client CA per host on one port,
//! `credentialName` CAs (`ca.crt` in the secret and a separate `NAME-cacert` secret),
//! `caCrl` revocation, OPTIONAL_MUTUAL, session tickets that never cross from a SIMPLE
//! server to a MUTUAL one (openssl s_client `-sess_out`/`-sess_in`), and 421 for a
//! request whose Host belongs to a server with other TLS settings than the SNI chose.

mod common;

use std::path::PathBuf;

use common::*;

/// A client certificate and its key, as curl presents them.
type Identity = (PathBuf, PathBuf);

/// The test PKI's client certificate (issued by the test chain's intermediate).
fn ours(pki: &pki::Pki) -> Identity {
    (pki.client_cert(), pki.client_key())
}

/// The client certificate of the unrelated other CA.
fn others(pki: &pki::Pki) -> Identity {
    (pki.other_client_cert(), pki.other_client_key())
}

/// Starts ringress (ready) with one HTTPS server `https` for [`HTTPBIN`] on the
/// fixture's port with the `tls` lines, every request routed to its httpbin.
fn start_one(s: &HttpsFixture, tls: &str) -> Gateway {
    let config = backend_config(
        &[https_server(s.port, "https", &[HTTPBIN], tls)],
        &[HTTPBIN],
        &[s.upstream.addr()],
    );
    Gateway::start_ready(&s.dir, &config, &[])
}

/// `curl https://HOST:PORT{path}` on the fixture's port trusting the test root,
/// presenting `identity` when given.
fn curl_as(s: &HttpsFixture, host: &str, path: &str, identity: Option<&Identity>) -> Curl {
    let mut args = https_url_for(host, s.port, &s.pki.root_cert, path);
    if let Some((cert, key)) = identity {
        args.extend(client_cert_args(cert, key));
    }
    curl(&strs(&args))
}

/// Panics unless `out` is a refused handshake: curl failed and no response arrived.
#[track_caller]
fn assert_refused(out: &Curl, what: &str) {
    assert!(
        out.code != 0 && out.status == 0,
        "{what} must fail the TLS handshake: {out:?}"
    );
}

/// Panics unless curl completed and got `status`.
#[track_caller]
fn assert_served(out: &Curl, status: u16, what: &str) {
    assert_eq!((out.code, out.status), (0, status), "{what}: {out:?}");
}

/// For each `(host, identity, want, what)`: `GET /status/418` for `host` presenting
/// `identity` is served with `want`, or (`None`) refused at the handshake.
#[track_caller]
fn check_clients(s: &HttpsFixture, cases: &[(&str, Option<&Identity>, Option<u16>, &str)]) {
    for &(host, identity, want, what) in cases {
        let out = curl_as(s, host, "/status/418", identity);
        match want {
            Some(status) => assert_served(&out, status, what),
            None => assert_refused(&out, what),
        }
    }
}

#[test]
fn mutual_walkthrough_needs_a_client_certificate_from_the_client_ca() {
    require("curl");
    let s = HttpsFixture::new("mu-walk");
    let _gw = start_one(&s, &mutual_tls(&s.pki, "MUTUAL"));

    // curl without --cert: the handshake fails, nothing is served.
    let out = curl_as(&s, HTTPBIN, "/status/418", None);
    assert_refused(&out, "a client without a certificate");
    // With the client CA's certificate: the teapot.
    let out = curl_as(&s, HTTPBIN, "/status/418", Some(&ours(&s.pki)));
    assert_eq!((out.code, out.status), (0, 418), "{out:?}");
    assert!(out.text().contains("teapot"), "{out:?}");
    // A client certificate from another CA fails.
    let out = curl_as(&s, HTTPBIN, "/status/418", Some(&others(&s.pki)));
    assert_refused(&out, "a client certificate from other-ca");
}

#[test]
fn two_mutual_servers_on_one_port_trust_only_their_own_client_ca() {
    require("curl");
    let s = HttpsFixture::new("mu-per-host");
    // httpbin trusts the test chain's clients, bookinfo only other-ca's.
    let config = backend_config(
        &[
            https_server(
                s.port,
                "https-httpbin",
                &[HTTPBIN],
                &mutual_tls_for(&s.pki, "MUTUAL", HTTPBIN, &s.pki.ca_chain, ""),
            ),
            https_server(
                s.port,
                "https-bookinfo",
                &[BOOKINFO],
                &mutual_tls_for(&s.pki, "MUTUAL", BOOKINFO, &s.pki.other_ca_cert, ""),
            ),
        ],
        &[HTTPBIN, BOOKINFO],
        &[s.upstream.addr()],
    );
    let _gw = Gateway::start_ready(&s.dir, &config, &[]);
    let (ours, others) = (ours(&s.pki), others(&s.pki));

    check_clients(
        &s,
        &[
            (HTTPBIN, Some(&ours), Some(418), "httpbin with its client"),
            (
                BOOKINFO,
                Some(&others),
                Some(418),
                "bookinfo with its client",
            ),
            (HTTPBIN, Some(&others), None, "other-ca's client on httpbin"),
            (
                BOOKINFO,
                Some(&ours),
                None,
                "the test chain's client on bookinfo",
            ),
            (BOOKINFO, None, None, "no client certificate on bookinfo"),
        ],
    );
}

#[test]
fn credential_name_ca_from_the_secret_or_a_separate_cacert_secret() {
    require("curl");
    let s = HttpsFixture::new("mu-credential");
    let pki = &s.pki;
    // httpbin-credential: a TLS secret with its own ca.crt (the test chain).
    // bookinfo-credential: tls.crt + tls.key only; bookinfo-credential-cacert holds
    // ca.crt (other-ca), as Istio's separate CA secret.
    let secrets = write_secrets(
        &s.dir,
        &[
            (pki.cert(HTTPBIN), "httpbin-credential/tls.crt"),
            (pki.key(HTTPBIN), "httpbin-credential/tls.key"),
            (pki.ca_chain.clone(), "httpbin-credential/ca.crt"),
            (pki.cert(BOOKINFO), "bookinfo-credential/tls.crt"),
            (pki.key(BOOKINFO), "bookinfo-credential/tls.key"),
            (
                pki.other_ca_cert.clone(),
                "bookinfo-credential-cacert/ca.crt",
            ),
        ],
    );
    let config = backend_config(
        &credential_servers(s.port, "MUTUAL"),
        &[HTTPBIN, BOOKINFO],
        &[s.upstream.addr()],
    );
    let secrets_arg = secrets.to_string_lossy().into_owned();
    let _gw = Gateway::start_ready(&s.dir, &config, &["--secrets-dir", &secrets_arg]);
    let (ours, others) = (ours(pki), others(pki));

    check_clients(
        &s,
        &[
            (HTTPBIN, Some(&ours), Some(418), "ca.crt in the secret"),
            (
                HTTPBIN,
                Some(&others),
                None,
                "other-ca's client against ca.crt of httpbin-credential",
            ),
            (HTTPBIN, None, None, "no client certificate on httpbin"),
            (
                BOOKINFO,
                Some(&others),
                Some(418),
                "the CA from bookinfo-credential-cacert",
            ),
            (
                BOOKINFO,
                Some(&ours),
                None,
                "the test chain's client against bookinfo-credential-cacert",
            ),
        ],
    );
}

#[test]
fn ca_crl_revokes_a_client_certificate() {
    require("curl");
    let s = HttpsFixture::new("mu-crl");
    let (dir, pki) = (&s.dir, &s.pki);
    let stranger = pki
        .issue(&pki::LeafSpec::client("stranger", "stranger.example.com"))
        .expect("issuing a second client certificate");
    // One file, a CRL per CA of the chain: the root revokes nothing, the intermediate
    // revokes client.crt (whose serial openssl agrees on).
    let revoked = serial_bytes(&pki.client_cert());
    let hex: String = revoked.iter().map(|b| format!("{b:02X}")).collect();
    require("openssl");
    assert_eq!(
        openssl_serial(&pki.client_cert()).trim_start_matches('0'),
        hex.trim_start_matches('0')
    );
    let crl = chain_crl(dir, pki, &[&pki.client_cert()]);
    let crl_line = format!("      caCrl: {}\n", yaml_path(&crl));
    let _gw = start_one(
        &s,
        &mutual_tls_for(pki, "MUTUAL", HTTPBIN, &pki.ca_chain, &crl_line),
    );

    // The stranger, from the same intermediate but not revoked, is served...
    let stranger = (stranger.cert, stranger.key);
    let out = curl_as(&s, HTTPBIN, "/status/418", Some(&stranger));
    assert_served(&out, 418, "a client certificate the CRL does not list");
    // ...the revoked client certificate is refused at the handshake.
    let out = curl_as(&s, HTTPBIN, "/status/418", Some(&ours(pki)));
    assert_refused(&out, "the revoked client certificate");
}

#[test]
fn optional_mutual_serves_without_a_certificate_and_forwards_a_verified_one() {
    require("curl");
    let s = HttpsFixture::new("mu-optional");
    let _gw = start_one(&s, &mutual_tls(&s.pki, "OPTIONAL_MUTUAL"));

    let out = curl_as(&s, HTTPBIN, "/headers", None);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    assert!(
        !out.text()
            .to_ascii_lowercase()
            .contains("x-forwarded-client-cert"),
        "no client certificate, no x-forwarded-client-cert: {out:?}"
    );
    let out = curl_as(&s, HTTPBIN, "/headers", Some(&ours(&s.pki)));
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    let text = out.text();
    assert!(
        text.to_ascii_lowercase()
            .contains("x-forwarded-client-cert")
            && text.contains(pki::CLIENT_NAME),
        "a verified client certificate reaches the upstream: {out:?}"
    );
    let out = curl_as(&s, HTTPBIN, "/headers", Some(&others(&s.pki)));
    assert_refused(&out, "an untrusted client certificate on OPTIONAL_MUTUAL");
}

/// The request s_client sends in the ticket tests.
const CLOSE_REQUEST: &[u8] =
    b"GET /status/418 HTTP/1.1\r\nHost: httpbin.example.com\r\nConnection: close\r\n\r\n";

#[test]
fn a_simple_servers_session_ticket_never_resumes_on_a_mutual_server() {
    require("openssl");
    let s = HttpsFixture::new("mu-tickets");
    let (dir, pki) = (&s.dir, &s.pki);
    let (simple, mutual) = (s.port, free_port());
    let config = backend_config(
        &[
            simple_https(pki, simple, "https-simple", HTTPBIN),
            https_server(
                mutual,
                "https-mutual",
                &[HTTPBIN],
                &mutual_tls(pki, "MUTUAL"),
            ),
        ],
        &[HTTPBIN],
        &[s.upstream.addr()],
    );
    let _gw = Gateway::start_ready(dir, &config, &[]);
    let session = dir.join("simple.session");
    let session_arg = session.to_string_lossy().into_owned();
    let ca = pki.root_cert.to_string_lossy().into_owned();
    // A TLS 1.3 handshake on `port` offering the saved ticket, then the request.
    let resume = |port: u16| {
        s_client(
            port,
            HTTPBIN,
            &["-tls1_3", "-CAfile", &ca, "-sess_in", &session_arg],
            CLOSE_REQUEST,
        )
    };

    // A full TLS 1.3 handshake and a request on the SIMPLE port; the ticket is saved.
    let first = s_client(
        simple,
        HTTPBIN,
        &["-tls1_3", "-CAfile", &ca, "-sess_out", &session_arg],
        CLOSE_REQUEST,
    );
    assert!(first.output.contains("HTTP/1.1 418"), "{first:?}");
    assert!(
        std::fs::metadata(&session).is_ok_and(|m| m.len() > 0),
        "s_client saved no session: {first:?}"
    );
    // The ticket does resume on the port that issued it (so the test can tell).
    let again = resume(simple);
    assert!(
        again.output.contains("Reused, TLSv1.3"),
        "the ticket should resume on the SIMPLE port: {again:?}"
    );
    assert!(again.output.contains("HTTP/1.1 418"), "{again:?}");

    // On the MUTUAL port (same host, same SNI) the ticket is not accepted, and without
    // a client certificate nothing is served.
    let crossed = resume(mutual);
    assert!(
        !crossed.output.contains("Reused"),
        "a SIMPLE server's ticket resumed on the MUTUAL server: {crossed:?}"
    );
    assert!(
        !crossed.output.contains("HTTP/1.1"),
        "the MUTUAL server answered a client without a certificate: {crossed:?}"
    );
    // With the client certificate the MUTUAL port serves, on a new session.
    let cert = pki.client_cert().to_string_lossy().into_owned();
    let key = pki.client_key().to_string_lossy().into_owned();
    let with_cert = s_client(
        mutual,
        HTTPBIN,
        &[
            "-tls1_3",
            "-CAfile",
            &ca,
            "-sess_in",
            &session_arg,
            "-cert",
            &cert,
            "-key",
            &key,
        ],
        CLOSE_REQUEST,
    );
    assert!(!with_cert.output.contains("Reused"), "{with_cert:?}");
    assert!(with_cert.output.contains("HTTP/1.1 418"), "{with_cert:?}");
}

#[test]
fn a_host_of_another_server_on_the_connection_gets_421() {
    require("openssl");
    let s = HttpsFixture::new("mu-421");
    let _gw = Gateway::start_ready(&s.dir, &sni_config(&s.pki, s.port, s.upstream.addr()), &[]);
    let ca = s.pki.root_cert.to_string_lossy().into_owned();
    // `GET /status/418` for `host` on a connection whose SNI is `sni`.
    let exchange = |sni: &str, host: &str| {
        let request =
            format!("GET /status/418 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s_client(s.port, sni, &["-CAfile", &ca], request.as_bytes())
    };

    // SNI httpbin, Host httpbin: served.
    let same = exchange(HTTPBIN, HTTPBIN);
    assert!(same.output.contains("HTTP/1.1 418"), "{same:?}");
    // SNI httpbin, Host bookinfo (another certificate on this port): misdirected.
    let crossed = exchange(HTTPBIN, BOOKINFO);
    assert!(
        crossed.output.contains("HTTP/1.1 421"),
        "expected 421 Misdirected Request: {crossed:?}"
    );
    assert!(!crossed.output.contains("HTTP/1.1 418"), "{crossed:?}");
    // And the other way round.
    let crossed = exchange(BOOKINFO, HTTPBIN);
    assert!(crossed.output.contains("HTTP/1.1 421"), "{crossed:?}");
}
