//! Mutual TLS end to end against the real `ringress` binary: the Istio "Securing
//! Gateways with HTTPS" MUTUAL walkthrough with curl, a client CA per host on one port,
//! `credentialName` CAs (`ca.crt` in the secret and a separate `NAME-cacert` secret),
//! `caCrl` revocation, OPTIONAL_MUTUAL, session tickets that never cross from a SIMPLE
//! server to a MUTUAL one (openssl s_client `-sess_out`/`-sess_in`), and 421 for a
//! request whose Host belongs to a server with other TLS settings than the SNI chose.

mod common;

use std::path::Path;

use common::*;
use rcgen::{
    CertificateParams, CertificateRevocationListParams, DnType, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SerialNumber,
};

/// `tls:` lines of a `mode` server for `host` of the test PKI trusting client
/// certificates from `ca` (plus `extra` lines, already indented).
fn mutual_tls_for(pki: &pki::Pki, mode: &str, host: &str, ca: &Path, extra: &str) -> String {
    format!(
        "      mode: {mode}
      serverCertificate: {}
      privateKey: {}
      caCertificates: {}
{extra}",
        yaml_path(&pki.cert(host)),
        yaml_path(&pki.key(host)),
        yaml_path(ca),
    )
}

/// `curl https://HOST:PORT{path}` trusting the test root, presenting `identity` (a
/// certificate and its key) when given.
fn curl_as(
    pki: &pki::Pki,
    host: &str,
    port: u16,
    path: &str,
    identity: Option<(&Path, &Path)>,
) -> Curl {
    let mut args = https_url_for(host, port, &pki.root_cert, path);
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

#[test]
fn mutual_walkthrough_needs_a_client_certificate_from_the_client_ca() {
    if !have("curl") {
        return;
    }
    let dir = TempDir::new("mu-walk");
    let pki = pki(&dir);
    let upstream = httpbin();
    let port = free_port();
    let config = backend_config(
        &[https_server(
            port,
            "https",
            &[HTTPBIN],
            &mutual_tls(&pki, "MUTUAL"),
        )],
        &[HTTPBIN],
        &[upstream.addr()],
    );
    let _gw = Gateway::start_ready(&dir, &config, &[]);

    // curl without --cert: the handshake fails, nothing is served.
    let out = curl_as(&pki, HTTPBIN, port, "/status/418", None);
    assert_refused(&out, "a client without a certificate");
    // With the client CA's certificate: the teapot.
    let identity = (pki.client_cert(), pki.client_key());
    let out = curl_as(
        &pki,
        HTTPBIN,
        port,
        "/status/418",
        Some((&identity.0, &identity.1)),
    );
    assert_eq!((out.code, out.status), (0, 418), "{out:?}");
    assert!(out.text().contains("teapot"), "{out:?}");
    // A client certificate from another CA fails.
    let (cert, key) = (pki.other_client_cert(), pki.other_client_key());
    let out = curl_as(&pki, HTTPBIN, port, "/status/418", Some((&cert, &key)));
    assert_refused(&out, "a client certificate from other-ca");
}

#[test]
fn two_mutual_servers_on_one_port_trust_only_their_own_client_ca() {
    if !have("curl") {
        return;
    }
    let dir = TempDir::new("mu-per-host");
    let pki = pki(&dir);
    let upstream = httpbin();
    let port = free_port();
    // httpbin trusts the test chain's clients, bookinfo only other-ca's.
    let config = backend_config(
        &[
            https_server(
                port,
                "https-httpbin",
                &[HTTPBIN],
                &mutual_tls_for(&pki, "MUTUAL", HTTPBIN, &pki.ca_chain, ""),
            ),
            https_server(
                port,
                "https-bookinfo",
                &[BOOKINFO],
                &mutual_tls_for(&pki, "MUTUAL", BOOKINFO, &pki.other_ca_cert, ""),
            ),
        ],
        &[HTTPBIN, BOOKINFO],
        &[upstream.addr()],
    );
    let _gw = Gateway::start_ready(&dir, &config, &[]);
    let ours = (pki.client_cert(), pki.client_key());
    let others = (pki.other_client_cert(), pki.other_client_key());
    let ours = Some((ours.0.as_path(), ours.1.as_path()));
    let others = Some((others.0.as_path(), others.1.as_path()));

    let out = curl_as(&pki, HTTPBIN, port, "/status/418", ours);
    assert_eq!(
        (out.code, out.status),
        (0, 418),
        "httpbin with its client: {out:?}"
    );
    let out = curl_as(&pki, BOOKINFO, port, "/status/418", others);
    assert_eq!(
        (out.code, out.status),
        (0, 418),
        "bookinfo with its client: {out:?}"
    );
    let out = curl_as(&pki, HTTPBIN, port, "/status/418", others);
    assert_refused(&out, "other-ca's client on httpbin");
    let out = curl_as(&pki, BOOKINFO, port, "/status/418", ours);
    assert_refused(&out, "the test chain's client on bookinfo");
    let out = curl_as(&pki, BOOKINFO, port, "/status/418", None);
    assert_refused(&out, "no client certificate on bookinfo");
}

#[test]
fn credential_name_ca_from_the_secret_or_a_separate_cacert_secret() {
    if !have("curl") {
        return;
    }
    let dir = TempDir::new("mu-credential");
    let pki = pki(&dir);
    let upstream = httpbin();
    let port = free_port();
    let secrets = dir.join("secrets");
    // httpbin-credential: a TLS secret with its own ca.crt (the test chain).
    // bookinfo-credential: tls.crt + tls.key only; bookinfo-credential-cacert holds
    // ca.crt (other-ca), as Istio's separate CA secret.
    for (from, to) in [
        (pki.cert(HTTPBIN), "httpbin-credential/tls.crt"),
        (pki.key(HTTPBIN), "httpbin-credential/tls.key"),
        (pki.ca_chain.clone(), "httpbin-credential/ca.crt"),
        (pki.cert(BOOKINFO), "bookinfo-credential/tls.crt"),
        (pki.key(BOOKINFO), "bookinfo-credential/tls.key"),
        (
            pki.other_ca_cert.clone(),
            "bookinfo-credential-cacert/ca.crt",
        ),
    ] {
        let target = secrets.join(to);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("secret dir");
        std::fs::copy(&from, &target).expect("copying a credential file");
    }
    let credential = |name: &str| format!("      mode: MUTUAL\n      credentialName: {name}\n");
    let config = backend_config(
        &[
            https_server(
                port,
                "https-httpbin",
                &[HTTPBIN],
                &credential("httpbin-credential"),
            ),
            https_server(
                port,
                "https-bookinfo",
                &[BOOKINFO],
                &credential("bookinfo-credential"),
            ),
        ],
        &[HTTPBIN, BOOKINFO],
        &[upstream.addr()],
    );
    let secrets_arg = secrets.to_string_lossy().into_owned();
    let _gw = Gateway::start_ready(&dir, &config, &["--secrets-dir", &secrets_arg]);
    let ours = (pki.client_cert(), pki.client_key());
    let others = (pki.other_client_cert(), pki.other_client_key());
    let ours = Some((ours.0.as_path(), ours.1.as_path()));
    let others = Some((others.0.as_path(), others.1.as_path()));

    let out = curl_as(&pki, HTTPBIN, port, "/status/418", ours);
    assert_eq!(
        (out.code, out.status),
        (0, 418),
        "ca.crt in the secret: {out:?}"
    );
    let out = curl_as(&pki, HTTPBIN, port, "/status/418", others);
    assert_refused(
        &out,
        "other-ca's client against ca.crt of httpbin-credential",
    );
    let out = curl_as(&pki, HTTPBIN, port, "/status/418", None);
    assert_refused(&out, "no client certificate on httpbin");

    let out = curl_as(&pki, BOOKINFO, port, "/status/418", others);
    assert_eq!(
        (out.code, out.status),
        (0, 418),
        "the CA from bookinfo-credential-cacert: {out:?}"
    );
    let out = curl_as(&pki, BOOKINFO, port, "/status/418", ours);
    assert_refused(
        &out,
        "the test chain's client against bookinfo-credential-cacert",
    );
}

/// An issuer for the CA `name` of the test PKI (its distinguished name as
/// `pki::generate` writes it), signing with the key in `key_file`.
fn ca_issuer(name: &str, key_file: &Path) -> Issuer<'static, KeyPair> {
    let key_pem = std::fs::read_to_string(key_file).expect("reading a CA key");
    let key = KeyPair::from_pem(&key_pem).expect("parsing a CA key");
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "ringress demo");
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Issuer::new(params, key)
}

/// A PEM CRL signed by `issuer` revoking the certificates with `serials`.
fn crl_pem(issuer: &Issuer<'static, KeyPair>, serials: &[Vec<u8>]) -> String {
    let params = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: rcgen::date_time_ymd(2024, 1, 2),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params
        .signed_by(issuer)
        .expect("signing a CRL")
        .pem()
        .expect("CRL PEM")
}

/// The serial number bytes of the first certificate in `cert`.
fn serial_bytes(cert: &Path) -> Vec<u8> {
    let der = load_certs(cert).into_iter().next().expect("a certificate");
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).expect("parsing");
    parsed.tbs_certificate.raw_serial().to_vec()
}

#[test]
fn ca_crl_revokes_a_client_certificate() {
    if !have("curl") {
        return;
    }
    let dir = TempDir::new("mu-crl");
    let pki = pki(&dir);
    let stranger = pki
        .issue(&pki::LeafSpec::client("stranger", "stranger.example.com"))
        .expect("issuing a second client certificate");
    let upstream = httpbin();
    let port = free_port();
    // One file, a CRL per CA of the chain: the root revokes nothing, the intermediate
    // revokes client.crt (whose serial openssl agrees on).
    let revoked = serial_bytes(&pki.client_cert());
    let hex: String = revoked.iter().map(|b| format!("{b:02X}")).collect();
    if have("openssl") {
        assert_eq!(
            openssl_serial(&pki.client_cert()).trim_start_matches('0'),
            hex.trim_start_matches('0')
        );
    }
    let root = ca_issuer("ringress demo root CA", &pki.root_key);
    let intermediate = ca_issuer("ringress demo intermediate CA", &pki.intermediate_key);
    let crl = dir.write(
        "revoked.crl.pem",
        format!(
            "{}{}",
            crl_pem(&root, &[]),
            crl_pem(&intermediate, &[revoked])
        ),
    );
    let config = backend_config(
        &[https_server(
            port,
            "https",
            &[HTTPBIN],
            &mutual_tls_for(
                &pki,
                "MUTUAL",
                HTTPBIN,
                &pki.ca_chain,
                &format!("      caCrl: {}\n", yaml_path(&crl)),
            ),
        )],
        &[HTTPBIN],
        &[upstream.addr()],
    );
    let _gw = Gateway::start_ready(&dir, &config, &[]);

    // The stranger, from the same intermediate but not revoked, is served...
    let out = curl_as(
        &pki,
        HTTPBIN,
        port,
        "/status/418",
        Some((&stranger.cert, &stranger.key)),
    );
    assert_eq!(
        (out.code, out.status),
        (0, 418),
        "a client certificate the CRL does not list: {out:?}"
    );
    // ...the revoked client certificate is refused at the handshake.
    let (cert, key) = (pki.client_cert(), pki.client_key());
    let out = curl_as(&pki, HTTPBIN, port, "/status/418", Some((&cert, &key)));
    assert_refused(&out, "the revoked client certificate");
}

#[test]
fn optional_mutual_serves_without_a_certificate_and_forwards_a_verified_one() {
    if !have("curl") {
        return;
    }
    let dir = TempDir::new("mu-optional");
    let pki = pki(&dir);
    let upstream = httpbin();
    let port = free_port();
    let config = backend_config(
        &[https_server(
            port,
            "https",
            &[HTTPBIN],
            &mutual_tls(&pki, "OPTIONAL_MUTUAL"),
        )],
        &[HTTPBIN],
        &[upstream.addr()],
    );
    let _gw = Gateway::start_ready(&dir, &config, &[]);

    let out = curl_as(&pki, HTTPBIN, port, "/headers", None);
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    assert!(
        !out.text()
            .to_ascii_lowercase()
            .contains("x-forwarded-client-cert"),
        "no client certificate, no x-forwarded-client-cert: {out:?}"
    );
    let (cert, key) = (pki.client_cert(), pki.client_key());
    let out = curl_as(&pki, HTTPBIN, port, "/headers", Some((&cert, &key)));
    assert_eq!((out.code, out.status), (0, 200), "{out:?}");
    let text = out.text();
    assert!(
        text.to_ascii_lowercase()
            .contains("x-forwarded-client-cert")
            && text.contains(pki::CLIENT_NAME),
        "a verified client certificate reaches the upstream: {out:?}"
    );
    let (cert, key) = (pki.other_client_cert(), pki.other_client_key());
    let out = curl_as(&pki, HTTPBIN, port, "/headers", Some((&cert, &key)));
    assert_refused(&out, "an untrusted client certificate on OPTIONAL_MUTUAL");
}

/// The request s_client sends in the ticket tests.
const CLOSE_REQUEST: &[u8] =
    b"GET /status/418 HTTP/1.1\r\nHost: httpbin.example.com\r\nConnection: close\r\n\r\n";

#[test]
fn a_simple_servers_session_ticket_never_resumes_on_a_mutual_server() {
    if !have("openssl") {
        return;
    }
    let dir = TempDir::new("mu-tickets");
    let pki = pki(&dir);
    let upstream = httpbin();
    let (simple, mutual) = (free_port(), free_port());
    let config = backend_config(
        &[
            simple_https(&pki, simple, "https-simple", HTTPBIN),
            https_server(
                mutual,
                "https-mutual",
                &[HTTPBIN],
                &mutual_tls(&pki, "MUTUAL"),
            ),
        ],
        &[HTTPBIN],
        &[upstream.addr()],
    );
    let _gw = Gateway::start_ready(&dir, &config, &[]);
    let session = dir.join("simple.session");
    let session_arg = session.to_string_lossy().into_owned();
    let ca = pki.root_cert.to_string_lossy().into_owned();

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
    let again = s_client(
        simple,
        HTTPBIN,
        &["-tls1_3", "-CAfile", &ca, "-sess_in", &session_arg],
        CLOSE_REQUEST,
    );
    assert!(
        again.output.contains("Reused, TLSv1.3"),
        "the ticket should resume on the SIMPLE port: {again:?}"
    );
    assert!(again.output.contains("HTTP/1.1 418"), "{again:?}");

    // On the MUTUAL port (same host, same SNI) the ticket is not accepted, and without
    // a client certificate nothing is served.
    let crossed = s_client(
        mutual,
        HTTPBIN,
        &["-tls1_3", "-CAfile", &ca, "-sess_in", &session_arg],
        CLOSE_REQUEST,
    );
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
    if !have("openssl") {
        return;
    }
    let dir = TempDir::new("mu-421");
    let pki = pki(&dir);
    let upstream = httpbin();
    let port = free_port();
    let config = backend_config(
        &sni_servers(&pki, port),
        &[HTTPBIN, BOOKINFO],
        &[upstream.addr()],
    );
    let _gw = Gateway::start_ready(&dir, &config, &[]);
    let ca = pki.root_cert.to_string_lossy().into_owned();
    let request = |host: &str| {
        format!("GET /status/418 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };

    // SNI httpbin, Host httpbin: served.
    let same = s_client(
        port,
        HTTPBIN,
        &["-CAfile", &ca],
        request(HTTPBIN).as_bytes(),
    );
    assert!(same.output.contains("HTTP/1.1 418"), "{same:?}");
    // SNI httpbin, Host bookinfo (another certificate on this port): misdirected.
    let crossed = s_client(
        port,
        HTTPBIN,
        &["-CAfile", &ca],
        request(BOOKINFO).as_bytes(),
    );
    assert!(
        crossed.output.contains("HTTP/1.1 421"),
        "expected 421 Misdirected Request: {crossed:?}"
    );
    assert!(!crossed.output.contains("HTTP/1.1 418"), "{crossed:?}");
    // And the other way round.
    let crossed = s_client(
        port,
        BOOKINFO,
        &["-CAfile", &ca],
        request(HTTPBIN).as_bytes(),
    );
    assert!(crossed.output.contains("HTTP/1.1 421"), "{crossed:?}");
}
