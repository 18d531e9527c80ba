//! Tests of the TLS layer: certificates generated at test time (root CA → intermediate
//! → leaf), credential loading from files and secrets-dir layouts, and full handshakes
//! in memory — bytes moved between a rustls client and the server side the way a shard
//! drives it (`Acceptor`, `SniSelector`, `Accepted::into_connection`), no sockets; the
//! shard's own ClientHello reading is checked against `Acceptor`'s on every handshake,
//! and rustls' unbuffered connection (what a shard runs) is driven the same way.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{Acceptor, ProducesTickets, ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeTlsData, UnbufferedStatus};
use rustls::{
    AlertDescription, ClientConfig, ClientConnection, HandshakeKind, RootCertStore, ServerConfig,
    ServerConnection,
};

mod records;

use super::credential::provider;
use super::server_config::{cipher_suite_by_name, cipher_suites};
use super::*;
use crate::config::model::{Credential, HostPattern, ServerTls, TlsMode, TlsVersion};

// ---------------------------------------------------------------------------------
// Certificates made at test time.

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn root_ca(cn: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let params = ca_params(cn);
    let cert = params.self_signed(&key).unwrap().der().clone();
    Ca {
        issuer: Issuer::new(params, key),
        cert,
    }
}

fn intermediate_ca(parent: &Ca, cn: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let params = ca_params(cn);
    let cert = params
        .signed_by(&key, &parent.issuer)
        .unwrap()
        .der()
        .clone();
    Ca {
        issuer: Issuer::new(params, key),
        cert,
    }
}

struct Leaf {
    cert: CertificateDer<'static>,
    key: KeyPair,
}

impl Leaf {
    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

fn leaf_params(names: &[&str], purpose: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
    params.distinguished_name = dn;
    params.extended_key_usages = vec![purpose];
    params
}

fn server_leaf(parent: &Ca, names: &[&str]) -> Leaf {
    leaf_with(
        parent,
        leaf_params(names, ExtendedKeyUsagePurpose::ServerAuth),
        KeyPair::generate().unwrap(),
    )
}

fn client_leaf(parent: &Ca, names: &[&str]) -> Leaf {
    leaf_with(
        parent,
        leaf_params(names, ExtendedKeyUsagePurpose::ClientAuth),
        KeyPair::generate().unwrap(),
    )
}

fn leaf_with(parent: &Ca, params: CertificateParams, key: KeyPair) -> Leaf {
    let cert = params
        .signed_by(&key, &parent.issuer)
        .unwrap()
        .der()
        .clone();
    Leaf { cert, key }
}

/// Root → intermediate → leaf for the given names; material holds leaf + intermediate.
struct Pki {
    root: Ca,
    intermediate: Ca,
    leaf: Leaf,
}

impl Pki {
    fn new(root_cn: &str, names: &[&str]) -> Pki {
        let root = root_ca(root_cn);
        let intermediate = intermediate_ca(&root, &format!("{root_cn} intermediate"));
        let leaf = server_leaf(&intermediate, names);
        Pki {
            root,
            intermediate,
            leaf,
        }
    }

    fn material(&self) -> CertifiedMaterial {
        CertifiedMaterial {
            chain: vec![self.leaf.cert.clone(), self.intermediate.cert.clone()],
            key: self.leaf.key_der(),
            source: "test".to_owned(),
            ca: None,
        }
    }

    fn chain_pem(&self) -> String {
        pem("CERTIFICATE", &self.leaf.cert) + &pem("CERTIFICATE", &self.intermediate.cert)
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    // Base64 without a dependency: the standard alphabet, 64 characters a line.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Unwraps PKCS#8 `PrivateKeyInfo` to the inner algorithm-specific key (PKCS#1 for
/// RSA, SEC1 for EC), to test those PEM formats.
fn pkcs8_inner(der: &[u8]) -> Vec<u8> {
    fn header(d: &[u8]) -> (u8, usize, usize) {
        let tag = d[0];
        if d[1] < 0x80 {
            (tag, 2, d[1] as usize)
        } else {
            let n = (d[1] & 0x7f) as usize;
            let len = d[2..2 + n].iter().fold(0usize, |l, b| l << 8 | *b as usize);
            (tag, 2 + n, len)
        }
    }
    let (tag, h, _) = header(der);
    assert_eq!(tag, 0x30);
    let mut rest = &der[h..];
    for _ in 0..2 {
        let (_, h, l) = header(rest); // version INTEGER, then AlgorithmIdentifier
        rest = &rest[h + l..];
    }
    let (tag, h, l) = header(rest);
    assert_eq!(tag, 0x04);
    rest[h..h + l].to_vec()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringress-tls-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------
// In-memory handshakes.

fn tls(mode: TlsMode) -> ServerTls {
    ServerTls {
        mode,
        credential: Credential::Named("unused".to_owned()),
        ca_certificates: None,
        ca_crl: None,
        min_protocol_version: None,
        max_protocol_version: None,
        cipher_suites: Vec::new(),
        subject_alt_names: Vec::new(),
    }
}

fn ticketer() -> Arc<dyn ProducesTickets> {
    new_ticketer().unwrap()
}

fn client_config(roots: &[&CertificateDer<'static>]) -> ClientConfig {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth()
}

fn client_with_cert(root: &CertificateDer<'static>, leaf: &Leaf, chain: &[&Ca]) -> ClientConfig {
    let mut store = RootCertStore::empty();
    store.add(root.clone()).unwrap();
    let mut certs = vec![leaf.cert.clone()];
    certs.extend(chain.iter().map(|ca| ca.cert.clone()));
    ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_client_auth_cert(certs, leaf.key_der())
        .unwrap()
}

fn client_out(client: &mut ClientConnection) -> Vec<u8> {
    let mut buf = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut buf).unwrap();
    }
    buf
}

fn server_out(server: &mut ServerConnection) -> Vec<u8> {
    let mut buf = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut buf).unwrap();
    }
    buf
}

fn feed_client(client: &mut ClientConnection, mut bytes: &[u8]) -> Result<(), rustls::Error> {
    while !bytes.is_empty() {
        client.read_tls(&mut bytes).unwrap();
        client.process_new_packets()?;
    }
    Ok(())
}

fn feed_server(server: &mut ServerConnection, mut bytes: &[u8]) -> Result<(), rustls::Error> {
    while !bytes.is_empty() {
        server.read_tls(&mut bytes).unwrap();
        server.process_new_packets()?;
    }
    Ok(())
}

/// A failed handshake: the error each side saw (after the alert was delivered).
#[derive(Debug)]
struct Failed {
    server: Option<rustls::Error>,
    client: Option<rustls::Error>,
}

/// The server side of a connection as a shard runs it: read the ClientHello with an
/// `Acceptor`, select by SNI, continue with the chosen (or the reject) config.
struct Shard<'a> {
    selector: &'a SniSelector,
}

#[derive(Debug)]
struct Accepted {
    server: ServerConnection,
    server_id: Option<usize>,
}

impl Shard<'_> {
    /// Runs the handshake of `client` to completion (or failure) against this shard.
    fn handshake(&self, client: &mut ClientConnection) -> Result<Accepted, Box<Failed>> {
        let mut acceptor = Acceptor::default();
        let hello = client_out(client);
        let mut rd = &hello[..];
        let accepted = loop {
            acceptor.read_tls(&mut rd).unwrap();
            match acceptor.accept() {
                Ok(Some(accepted)) => break accepted,
                Ok(None) => assert!(!rd.is_empty(), "ClientHello incomplete"),
                Err((e, _)) => {
                    return Err(Box::new(Failed {
                        server: Some(e),
                        client: None,
                    }));
                }
            }
        };
        // ringress reads the name itself (the shard's path): it must agree with rustls.
        match read_client_hello(&hello) {
            Ok(HelloScan::Complete(info)) => assert_eq!(
                info.server_name.as_deref(),
                accepted.client_hello().server_name()
            ),
            other => panic!("ClientHello not read: {other:?}"),
        }
        let chosen = self.selector.select(accepted.client_hello().server_name());
        let (server_id, config) = match chosen {
            Some((id, config)) => (Some(id), Arc::clone(config)),
            None => (None, Arc::clone(self.selector.reject())),
        };
        let mut server = match accepted.into_connection(config) {
            Ok(server) => server,
            Err((e, mut alert)) => {
                let mut buf = Vec::new();
                alert.write_all(&mut buf).unwrap();
                return Err(Box::new(Failed {
                    server: Some(e),
                    client: feed_client(client, &buf).err(),
                }));
            }
        };
        // Any bytes of the first flight after the ClientHello.
        if let Err(e) = feed_server(&mut server, rd) {
            return Err(Box::new(Failed {
                server: Some(e),
                client: None,
            }));
        }
        complete(client, &mut server)?;
        Ok(Accepted { server, server_id })
    }
}

/// Moves bytes both ways until neither side has anything to send. On an error the
/// failing side's alert is delivered to the other side.
fn complete(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
) -> Result<(), Box<Failed>> {
    loop {
        let to_client = server_out(server);
        if let Err(e) = feed_client(client, &to_client) {
            let alert = client_out(client);
            return Err(Box::new(Failed {
                client: Some(e),
                server: feed_server(server, &alert).err(),
            }));
        }
        let to_server = client_out(client);
        if let Err(e) = feed_server(server, &to_server) {
            let alert = server_out(server);
            return Err(Box::new(Failed {
                server: Some(e),
                client: feed_client(client, &alert).err(),
            }));
        }
        if to_client.is_empty() && to_server.is_empty() {
            return Ok(());
        }
    }
}

/// Sends one request and one response over an established connection.
fn exchange(client: &mut ClientConnection, server: &mut ServerConnection) {
    client
        .writer()
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap();
    complete(client, server).unwrap();
    let mut got = [0u8; 18];
    server.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"GET / HTTP/1.1\r\n\r\n");
    server
        .writer()
        .write_all(b"HTTP/1.1 200 OK\r\n\r\n")
        .unwrap();
    complete(client, server).unwrap();
    let mut got = [0u8; 19];
    client.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"HTTP/1.1 200 OK\r\n\r\n");
}

fn connect(config: ClientConfig, name: &str) -> ClientConnection {
    ClientConnection::new(
        Arc::new(config),
        ServerName::try_from(name.to_owned()).unwrap(),
    )
    .unwrap()
}

fn single(hosts: Vec<HostPattern>, config: Arc<ServerConfig>) -> SniSelector {
    SniSelector::new(vec![(hosts, config)]).unwrap()
}

fn exact(h: &str) -> HostPattern {
    HostPattern::Exact(h.to_owned())
}

fn suffix(s: &str) -> HostPattern {
    HostPattern::Suffix(s.to_owned())
}

// ---------------------------------------------------------------------------------
// Credential loading.

#[test]
fn files_credential_keeps_the_full_chain() {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let dir = TempDir::new();
    let cert = dir.write("server.pem", pki.chain_pem());
    let key = dir.write("server.key", pki.leaf.key.serialize_pem());
    let material = load_credential(
        &Credential::Files {
            cert: cert.clone(),
            key,
        },
        None,
    )
    .unwrap();
    assert_eq!(material.chain.len(), 2);
    assert_eq!(material.chain[0], pki.leaf.cert);
    assert_eq!(material.chain[1], pki.intermediate.cert);
    assert_eq!(material.source, cert.display().to_string());
    assert!(material.ca.is_none());
}

#[test]
fn pkcs1_and_sec1_keys_load() {
    let root = root_ca("root");
    let dir = TempDir::new();

    let rsa = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    let leaf = leaf_with(
        &root,
        leaf_params(&["rsa.example.com"], ExtendedKeyUsagePurpose::ServerAuth),
        rsa,
    );
    let cert = dir.write("rsa.crt", pem("CERTIFICATE", &leaf.cert));
    let key = dir.write(
        "rsa.key",
        pem("RSA PRIVATE KEY", &pkcs8_inner(&leaf.key.serialize_der())),
    );
    let material = load_credential(&Credential::Files { cert, key }, None).unwrap();
    assert!(matches!(material.key, PrivateKeyDer::Pkcs1(_)));
    server_config(&tls(TlsMode::Simple), &material, &ticketer()).unwrap();

    let ec = server_leaf(&root, &["ec.example.com"]);
    let cert = dir.write("ec.crt", pem("CERTIFICATE", &ec.cert));
    let key = dir.write(
        "ec.key",
        pem("EC PRIVATE KEY", &pkcs8_inner(&ec.key.serialize_der())),
    );
    let material = load_credential(&Credential::Files { cert, key }, None).unwrap();
    assert!(matches!(material.key, PrivateKeyDer::Sec1(_)));
}

#[test]
fn key_of_another_certificate_is_refused() {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let other = KeyPair::generate().unwrap();
    let dir = TempDir::new();
    let cert = dir.write("server.pem", pki.chain_pem());
    let key = dir.write("other.key", other.serialize_pem());
    let err = load_credential(&Credential::Files { cert, key }, None).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("other.key") && msg.contains("server.pem"),
        "{msg}"
    );
}

#[test]
fn missing_and_empty_files_are_named() {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let dir = TempDir::new();
    let cert = dir.write("server.pem", pki.chain_pem());
    let key = dir.write("server.key", pki.leaf.key.serialize_pem());
    let missing = dir.0.join("nope.pem");

    let err = load_credential(
        &Credential::Files {
            cert: missing.clone(),
            key: key.clone(),
        },
        None,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("cannot read {}", missing.display())),
        "{msg}"
    );

    let err = load_credential(
        &Credential::Files {
            cert: cert.clone(),
            key: missing.clone(),
        },
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");

    // A key file given as certificate: no certificate in it.
    let err = load_credential(
        &Credential::Files {
            cert: key.clone(),
            key: key.clone(),
        },
        None,
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    assert!(err.to_string().contains("server.key"), "{err}");

    // A certificate given as key: no key in it.
    let err = load_credential(
        &Credential::Files {
            cert: cert.clone(),
            key: cert.clone(),
        },
        None,
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
    assert!(err.to_string().contains("server.pem"), "{err}");

    let enc = dir.write(
        "enc.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let err = load_credential(
        &Credential::Files {
            cert: cert.clone(),
            key: enc,
        },
        None,
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::EncryptedKey { .. }), "{err}");

    let broken = dir.write("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
    let err = load_credential(&Credential::Files { cert: broken, key }, None).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err}");
    assert!(err.to_string().contains("broken.pem"), "{err}");
}

#[test]
fn named_credential_needs_secrets_dir() {
    let err =
        load_credential(&Credential::Named("httpbin-credential".to_owned()), None).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("httpbin-credential") && msg.contains("--secrets-dir"),
        "{msg}"
    );
}

#[test]
fn secrets_dir_tls_secret_layout() {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let dir = TempDir::new();
    dir.write("httpbin/tls.crt", pki.chain_pem());
    dir.write("httpbin/tls.key", pki.leaf.key.serialize_pem());
    dir.write("httpbin/ca.crt", pem("CERTIFICATE", &pki.root.cert));
    let material = load_credential(&Credential::Named("httpbin".to_owned()), Some(&dir.0)).unwrap();
    assert_eq!(material.chain.len(), 2);
    assert_eq!(material.ca, Some(vec![pki.root.cert.clone()]));
    assert!(material.source.contains("httpbin"), "{}", material.source);
}

#[test]
fn secrets_dir_generic_secret_layout_with_separate_cacert() {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let dir = TempDir::new();
    dir.write("httpbin/cert", pki.chain_pem());
    dir.write("httpbin/key", pki.leaf.key.serialize_pem());
    let material = load_credential(&Credential::Named("httpbin".to_owned()), Some(&dir.0)).unwrap();
    assert!(material.ca.is_none());

    dir.write("httpbin-cacert/cacert", pem("CERTIFICATE", &pki.root.cert));
    let material = load_credential(&Credential::Named("httpbin".to_owned()), Some(&dir.0)).unwrap();
    assert_eq!(material.ca, Some(vec![pki.root.cert.clone()]));

    let other = TempDir::new();
    other.write("httpbin/tls.crt", pki.chain_pem());
    other.write("httpbin/tls.key", pki.leaf.key.serialize_pem());
    other.write("httpbin-cacert/ca.crt", pem("CERTIFICATE", &pki.root.cert));
    let material =
        load_credential(&Credential::Named("httpbin".to_owned()), Some(&other.0)).unwrap();
    assert_eq!(material.ca, Some(vec![pki.root.cert.clone()]));
}

#[test]
fn secrets_dir_empty_ca_file_means_no_ca() {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let dir = TempDir::new();
    dir.write("httpbin/tls.crt", pki.chain_pem());
    dir.write("httpbin/tls.key", pki.leaf.key.serialize_pem());
    dir.write("httpbin/ca.crt", "");
    let material = load_credential(&Credential::Named("httpbin".to_owned()), Some(&dir.0)).unwrap();
    assert!(material.ca.is_none());
    // ...and the `-cacert` directory is still consulted.
    dir.write("httpbin-cacert/ca.crt", pem("CERTIFICATE", &pki.root.cert));
    let material = load_credential(&Credential::Named("httpbin".to_owned()), Some(&dir.0)).unwrap();
    assert_eq!(material.ca, Some(vec![pki.root.cert.clone()]));
    assert_eq!(material.describe_ca().unwrap()[0].subject, "CN=root");
    let chain = material.describe_chain().unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].sans, ["httpbin.example.com"]);

    // A CA file that is not PEM is an error naming it.
    dir.write("httpbin/ca.crt", "garbage");
    let err = load_credential(&Credential::Named("httpbin".to_owned()), Some(&dir.0)).unwrap_err();
    assert!(err.to_string().contains("ca.crt"), "{err}");
}

#[test]
fn pem_files_over_the_limit_are_refused() {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let dir = TempDir::new();
    let mut big = pki.chain_pem().into_bytes();
    big.resize(credential::MAX_PEM_FILE_BYTES as usize + 1, b'\n');
    let cert = dir.write("big.pem", big);
    let key = dir.write("server.key", pki.leaf.key.serialize_pem());
    let err = load_credential(&Credential::Files { cert, key }, None).unwrap_err();
    assert!(matches!(err, TlsError::FileTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("big.pem"), "{err}");
}

#[test]
fn secrets_dir_kubelet_symlink_layout() {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let dir = TempDir::new();
    dir.write("httpbin/..2026_01_01_00_00_00.123/tls.crt", pki.chain_pem());
    dir.write(
        "httpbin/..2026_01_01_00_00_00.123/tls.key",
        pki.leaf.key.serialize_pem(),
    );
    let base = dir.0.join("httpbin");
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.123", base.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/tls.crt", base.join("tls.crt")).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", base.join("tls.key")).unwrap();
    let material = load_credential(&Credential::Named("httpbin".to_owned()), Some(&dir.0)).unwrap();
    assert_eq!(material.chain[0], pki.leaf.cert);
}

#[test]
fn secrets_dir_errors_name_what_is_missing() {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let dir = TempDir::new();
    let err = load_credential(&Credential::Named("absent".to_owned()), Some(&dir.0)).unwrap_err();
    assert!(matches!(err, TlsError::CredentialNotFound { .. }), "{err}");
    assert!(err.to_string().contains("absent"), "{err}");

    dir.write("half/tls.crt", pki.chain_pem());
    let err = load_credential(&Credential::Named("half".to_owned()), Some(&dir.0)).unwrap_err();
    assert!(
        matches!(err, TlsError::CredentialIncomplete { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("tls.key"), "{err}");
}

#[test]
fn expired_certificates_are_served_not_refused() {
    let root = root_ca("root");
    let mut params = leaf_params(&["old.example.com"], ExtendedKeyUsagePurpose::ServerAuth);
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let old = leaf_with(&root, params, KeyPair::generate().unwrap());
    let dir = TempDir::new();
    let cert = dir.write("old.crt", pem("CERTIFICATE", &old.cert));
    let key = dir.write("old.key", old.key.serialize_pem());
    let material = load_credential(&Credential::Files { cert, key }, None).unwrap();
    assert!(material.describe_chain().unwrap()[0].days_until_expiry < 0);
    // Still usable: ringress serves an expired certificate rather than nothing.
    server_config(&tls(TlsMode::Simple), &material, &ticketer()).unwrap();
}

#[test]
fn describe_reports_names_serial_and_expiry() {
    let root = root_ca("root");
    let mut params = leaf_params(
        &["httpbin.example.com", "*.example.org"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0xab, 0xcd]));
    params.not_after = rcgen::date_time_ymd(2030, 1, 1);
    let leaf = leaf_with(&root, params, KeyPair::generate().unwrap());
    let now = 1_893_456_000 - 10 * 86_400 - 1; // 2030-01-01 minus 10 days and a second
    let info = cert_info::describe_at(&leaf.cert, now).unwrap();
    assert_eq!(info.subject, "CN=httpbin.example.com");
    assert_eq!(
        info.sans,
        ["httpbin.example.com", "*.example.org", "127.0.0.1"]
    );
    assert_eq!(info.serial, "01abcd");
    assert_eq!(info.not_after_unix, 1_893_456_000);
    assert_eq!(info.days_until_expiry, 10);
    let later = cert_info::describe_at(&leaf.cert, 1_893_456_000 + 1).unwrap();
    assert_eq!(later.days_until_expiry, -1);
    assert!(describe(&CertificateDer::from(vec![1u8, 2, 3])).is_err());
}

// ---------------------------------------------------------------------------------
// Coverage of hosts.

#[test]
fn check_covers_exact_wildcard_and_any() {
    let pki = Pki::new("root", &["httpbin.example.com", "*.apps.example.com"]);
    let material = pki.material();
    check_covers(&material, &exact("httpbin.example.com")).unwrap();
    check_covers(&material, &exact("shop.apps.example.com")).unwrap();
    check_covers(&material, &suffix(".apps.example.com")).unwrap();
    check_covers(&material, &HostPattern::Any).unwrap();

    let err = check_covers(&material, &exact("bookinfo.com")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("bookinfo.com") && msg.contains("httpbin.example.com"),
        "{msg}"
    );
    // An exact-name certificate does not cover a wildcard host.
    assert!(check_covers(&material, &suffix(".example.com")).is_err());
}

// ---------------------------------------------------------------------------------
// SNI selection.

#[test]
fn sni_exact_beats_wildcard_longest_wildcard_wins() {
    let pki = Pki::new("root", &["a.example.com"]);
    let config = server_config(&tls(TlsMode::Simple), &pki.material(), &ticketer()).unwrap();
    let selector = SniSelector::new(vec![
        (vec![suffix(".example.com")], config.clone()),
        (
            vec![exact("a.example.com"), exact("b.example.com")],
            config.clone(),
        ),
        (vec![suffix(".apps.example.com")], config.clone()),
    ])
    .unwrap();
    let id = |name: &str| selector.select(Some(name)).map(|(id, _)| id);
    assert_eq!(id("a.example.com"), Some(1));
    assert_eq!(id("B.Example.COM"), Some(1));
    assert_eq!(id("b.example.com."), Some(1));
    assert_eq!(id("c.example.com"), Some(0));
    assert_eq!(id("x.y.example.com"), Some(0));
    assert_eq!(id("shop.apps.example.com"), Some(2));
    assert_eq!(id("deep.shop.apps.example.com"), Some(2));
    assert_eq!(id("apps.example.com"), Some(0));
    assert_eq!(id("example.com"), None);
    assert_eq!(id("bookinfo.com"), None);
    assert_eq!(id(".example.com"), None);
    assert_eq!(id(""), None);
    assert_eq!(selector.select(None).map(|(id, _)| id), None);
    assert_eq!(selector.len(), 3);
}

#[test]
fn sni_any_catches_unknown_names_and_missing_sni() {
    let pki = Pki::new("root", &["a.example.com"]);
    let config = server_config(&tls(TlsMode::Simple), &pki.material(), &ticketer()).unwrap();
    let selector = SniSelector::new(vec![
        (vec![exact("a.example.com")], config.clone()),
        (vec![HostPattern::Any], config.clone()),
    ])
    .unwrap();
    assert_eq!(
        selector.select(Some("a.example.com")).map(|(id, _)| id),
        Some(0)
    );
    assert_eq!(
        selector.select(Some("other.org")).map(|(id, _)| id),
        Some(1)
    );
    assert_eq!(selector.select(None).map(|(id, _)| id), Some(1));
}

#[test]
fn sni_duplicate_host_is_an_error() {
    let pki = Pki::new("root", &["a.example.com"]);
    let config = server_config(&tls(TlsMode::Simple), &pki.material(), &ticketer()).unwrap();
    let err = SniSelector::new(vec![
        (vec![exact("a.example.com")], config.clone()),
        (vec![exact("a.example.com")], config.clone()),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("a.example.com"), "{err}");
    assert!(
        SniSelector::new(vec![
            (vec![HostPattern::Any], config.clone()),
            (vec![HostPattern::Any], config)
        ])
        .is_err()
    );
}

// ---------------------------------------------------------------------------------
// Handshakes.

#[test]
fn handshake_verifies_through_intermediate_with_only_root_trusted() {
    let httpbin = Pki::new("httpbin root", &["httpbin.example.com"]);
    let bookinfo = Pki::new("bookinfo root", &["bookinfo.com"]);
    let t = ticketer();
    let selector = SniSelector::new(vec![
        (
            vec![exact("httpbin.example.com")],
            server_config(&tls(TlsMode::Simple), &httpbin.material(), &t).unwrap(),
        ),
        (
            vec![exact("bookinfo.com")],
            server_config(&tls(TlsMode::Simple), &bookinfo.material(), &t).unwrap(),
        ),
    ])
    .unwrap();
    let shard = Shard {
        selector: &selector,
    };

    let mut client = connect(client_config(&[&httpbin.root.cert]), "httpbin.example.com");
    let mut accepted = shard.handshake(&mut client).unwrap();
    assert_eq!(accepted.server_id, Some(0));
    assert_eq!(accepted.server.server_name(), Some("httpbin.example.com"));
    assert_eq!(client.alpn_protocol(), None);
    exchange(&mut client, &mut accepted.server);

    // Each name gets its own certificate: bookinfo's root does not verify httpbin.
    let mut client = connect(client_config(&[&bookinfo.root.cert]), "bookinfo.com");
    let accepted = shard.handshake(&mut client).unwrap();
    assert_eq!(accepted.server_id, Some(1));
    let mut client = connect(client_config(&[&bookinfo.root.cert]), "httpbin.example.com");
    let err = shard.handshake(&mut client).unwrap_err();
    assert!(
        matches!(err.client, Some(rustls::Error::InvalidCertificate(_))),
        "{err:?}"
    );
}

#[test]
fn alpn_prefers_h2_then_http1() {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let config = server_config(&tls(TlsMode::Simple), &pki.material(), &ticketer()).unwrap();
    let selector = single(vec![exact("httpbin.example.com")], config);
    for (offered, chosen) in [
        (&[&b"h2"[..], b"http/1.1"][..], &b"h2"[..]),
        (&[&b"http/1.1"[..], b"h2"][..], b"h2"),
        (&[&b"http/1.1"[..]][..], b"http/1.1"),
    ] {
        let mut cc = client_config(&[&pki.root.cert]);
        cc.alpn_protocols = offered.iter().map(|p| p.to_vec()).collect();
        let mut client = connect(cc, "httpbin.example.com");
        let accepted = Shard {
            selector: &selector,
        }
        .handshake(&mut client)
        .unwrap();
        assert_eq!(client.alpn_protocol(), Some(chosen));
        assert_eq!(accepted.server.alpn_protocol(), Some(chosen));
    }
}

#[test]
fn unknown_name_gets_an_alert_not_another_certificate() {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let config = server_config(&tls(TlsMode::Simple), &pki.material(), &ticketer()).unwrap();
    let selector = single(vec![exact("httpbin.example.com")], config);
    let shard = Shard {
        selector: &selector,
    };
    let mut client = connect(client_config(&[&pki.root.cert]), "bookinfo.com");
    let err = shard.handshake(&mut client).unwrap_err();
    assert!(
        matches!(
            err.client,
            Some(rustls::Error::AlertReceived(AlertDescription::AccessDenied))
        ),
        "{err:?}"
    );
    assert!(client.peer_certificates().is_none());

    // Without SNI: this port has no `*` server, so the same alert.
    let mut cc = client_config(&[&pki.root.cert]);
    cc.enable_sni = false;
    let mut client = connect(cc, "httpbin.example.com");
    let err = shard.handshake(&mut client).unwrap_err();
    assert!(
        matches!(err.client, Some(rustls::Error::AlertReceived(_))),
        "{err:?}"
    );
}

fn versions(min: Option<TlsVersion>, max: Option<TlsVersion>) -> ServerTls {
    ServerTls {
        min_protocol_version: min,
        max_protocol_version: max,
        ..tls(TlsMode::Simple)
    }
}

#[test]
fn protocol_version_limits() {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let t = ticketer();
    let handshake = |server_tls: &ServerTls| {
        let config = server_config(server_tls, &pki.material(), &t).unwrap();
        let selector = single(vec![exact("httpbin.example.com")], config);
        let mut client = connect(client_config(&[&pki.root.cert]), "httpbin.example.com");
        Shard {
            selector: &selector,
        }
        .handshake(&mut client)
        .map(|_| client.protocol_version())
    };
    assert_eq!(
        handshake(&versions(None, None)).unwrap(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        handshake(&versions(None, Some(TlsVersion::V1_2))).unwrap(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(
        handshake(&versions(Some(TlsVersion::V1_3), None)).unwrap(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    // A TLS 1.2-only client against a TLS 1.3-only server.
    let config =
        server_config(&versions(Some(TlsVersion::V1_3), None), &pki.material(), &t).unwrap();
    let selector = single(vec![exact("httpbin.example.com")], config);
    let mut store = RootCertStore::empty();
    store.add(pki.root.cert.clone()).unwrap();
    let cc = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let mut client = connect(cc, "httpbin.example.com");
    assert!(
        Shard {
            selector: &selector
        }
        .handshake(&mut client)
        .is_err()
    );

    let err = server_config(
        &versions(Some(TlsVersion::V1_3), Some(TlsVersion::V1_2)),
        &pki.material(),
        &t,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("minProtocolVersion TLSV1_3"),
        "{err}"
    );
}

#[test]
fn cipher_suite_names_map_to_rustls_suites() {
    use rustls::CipherSuite as C;
    let cases = [
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "ECDHE-RSA-AES128-GCM-SHA256",
            C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "ECDHE-RSA-AES256-GCM-SHA384",
            C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "ECDHE-RSA-CHACHA20-POLY1305",
            C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        ("tls_aes_128_gcm_sha256", C::TLS13_AES_128_GCM_SHA256),
        ("TLS_AES_256_GCM_SHA384", C::TLS13_AES_256_GCM_SHA384),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            C::TLS13_CHACHA20_POLY1305_SHA256,
        ),
    ];
    for (name, want) in cases {
        assert_eq!(cipher_suite_by_name(name).unwrap().suite(), want, "{name}");
    }
    for name in [
        "AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "AES256-GCM-SHA384",
        "DES-CBC3-SHA",
        "DHE-RSA-AES128-GCM-SHA256",
    ] {
        let err = cipher_suite_by_name(name).unwrap_err();
        assert!(
            matches!(err, TlsError::UnsupportedCipherSuite { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
    let err = cipher_suite_by_name("FANCY-NEW-CIPHER").unwrap_err();
    assert!(matches!(err, TlsError::UnknownCipherSuite { .. }), "{err}");

    // Only TLS 1.2 names: TLS 1.3 keeps its defaults; Envoy groups are flattened.
    let suites = cipher_suites(&[
        "[ECDHE-ECDSA-AES256-GCM-SHA384|ECDHE-ECDSA-CHACHA20-POLY1305]".to_owned(),
        "ECDHE-ECDSA-AES256-GCM-SHA384".to_owned(),
    ])
    .unwrap();
    let tls12: Vec<_> = suites
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS12)
        .map(|s| s.suite())
        .collect();
    assert_eq!(
        tls12,
        [
            C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        ]
    );
    assert_eq!(
        suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .count(),
        3
    );
}

#[test]
fn cipher_suites_limit_the_negotiated_suite() {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let server_tls = ServerTls {
        cipher_suites: vec![
            "ECDHE-ECDSA-CHACHA20-POLY1305".to_owned(),
            "TLS_AES_256_GCM_SHA384".to_owned(),
        ],
        ..tls(TlsMode::Simple)
    };
    // The suite a default client ends up with against `settings`.
    let negotiated = |settings: &ServerTls| {
        let config = server_config(settings, &pki.material(), &ticketer()).unwrap();
        let selector = single(vec![exact("httpbin.example.com")], config);
        let mut client = connect(client_config(&[&pki.root.cert]), "httpbin.example.com");
        Shard {
            selector: &selector,
        }
        .handshake(&mut client)
        .unwrap();
        client.negotiated_cipher_suite().map(|s| s.suite())
    };
    // No `cipherSuites`: the server's order decides, whatever the client's order
    // (rustls' client, like OpenSSL's, lists AES-256-GCM first).
    assert_eq!(
        negotiated(&tls(TlsMode::Simple)),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    assert_eq!(
        negotiated(&ServerTls {
            max_protocol_version: Some(TlsVersion::V1_2),
            ..tls(TlsMode::Simple)
        }),
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
    );
    assert_eq!(
        negotiated(&server_tls),
        Some(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384)
    );
    let tls12_only = ServerTls {
        max_protocol_version: Some(TlsVersion::V1_2),
        ..server_tls.clone()
    };
    assert_eq!(
        negotiated(&tls12_only),
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
    );

    // RSA-only suites for an ECDSA certificate with TLS 1.3 off: refused at load.
    let rsa_only = ServerTls {
        cipher_suites: vec!["ECDHE-RSA-AES128-GCM-SHA256".to_owned()],
        max_protocol_version: Some(TlsVersion::V1_2),
        ..tls(TlsMode::Simple)
    };
    let err = server_config(&rsa_only, &pki.material(), &ticketer()).unwrap_err();
    assert!(matches!(err, TlsError::NoUsableSuite { .. }), "{err}");

    let bad = ServerTls {
        cipher_suites: vec!["ECDHE-RSA-AES128-SHA".to_owned()],
        ..tls(TlsMode::Simple)
    };
    let err = server_config(&bad, &pki.material(), &ticketer()).unwrap_err();
    assert!(err.to_string().contains("ECDHE-RSA-AES128-SHA"), "{err}");
}

/// Two shards, two `ServerConfig`s built from the same ticketer: a session from one
/// resumes on the other; with another ticketer it does not.
fn resumption_across_shards(version: TlsVersion) {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let server_tls = versions(Some(version), Some(version));
    let shared = ticketer();
    let shard_a = single(
        vec![exact("httpbin.example.com")],
        server_config(&server_tls, &pki.material(), &shared).unwrap(),
    );
    let shard_b = single(
        vec![exact("httpbin.example.com")],
        server_config(&server_tls, &pki.material(), &shared).unwrap(),
    );
    let elsewhere = single(
        vec![exact("httpbin.example.com")],
        server_config(&server_tls, &pki.material(), &ticketer()).unwrap(),
    );
    let client_config = Arc::new(client_config(&[&pki.root.cert]));
    let connect_shared = || {
        ClientConnection::new(
            Arc::clone(&client_config),
            ServerName::try_from("httpbin.example.com").unwrap(),
        )
        .unwrap()
    };

    let mut client = connect_shared();
    let mut first = Shard { selector: &shard_a }.handshake(&mut client).unwrap();
    exchange(&mut client, &mut first.server);
    assert_eq!(first.server.handshake_kind(), Some(HandshakeKind::Full));

    let mut client = connect_shared();
    let second = Shard { selector: &shard_b }.handshake(&mut client).unwrap();
    assert_eq!(second.server.handshake_kind(), Some(HandshakeKind::Resumed));
    assert_eq!(client.handshake_kind(), Some(HandshakeKind::Resumed));

    let mut client = connect_shared();
    let third = Shard {
        selector: &elsewhere,
    }
    .handshake(&mut client)
    .unwrap();
    assert_eq!(third.server.handshake_kind(), Some(HandshakeKind::Full));
}

#[test]
fn session_resumes_on_another_shard_tls13() {
    resumption_across_shards(TlsVersion::V1_3);
}

#[test]
fn session_resumes_on_another_shard_tls12() {
    resumption_across_shards(TlsVersion::V1_2);
}

/// Two processes given the same `--session-ticket-keys` file (each its own
/// `Ticketers`): a session from one resumes on the other; a process reading another
/// file's keys makes a full handshake.
fn resumption_across_replicas(version: TlsVersion) {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let server_tls = versions(Some(version), Some(version));
    let dir = TempDir::new();
    let shared = dir.write("keys", generate_key_line().unwrap() + "\n");
    let other = dir.write("other-keys", generate_key_line().unwrap() + "\n");
    let replica = |keys: &Path| {
        let mut ticketers = Ticketers::load(Some(keys)).unwrap();
        let ticketer = ticketers.for_server(&server_tls, &pki.material()).unwrap();
        ticketers.finish_build(true);
        single(
            vec![exact("httpbin.example.com")],
            server_config(&server_tls, &pki.material(), &ticketer).unwrap(),
        )
    };
    let (a, b, elsewhere) = (replica(&shared), replica(&shared), replica(&other));
    let client_config = Arc::new(client_config(&[&pki.root.cert]));
    let connect = || {
        ClientConnection::new(
            Arc::clone(&client_config),
            ServerName::try_from("httpbin.example.com").unwrap(),
        )
        .unwrap()
    };

    let mut client = connect();
    let mut first = Shard { selector: &a }.handshake(&mut client).unwrap();
    exchange(&mut client, &mut first.server);
    assert_eq!(first.server.handshake_kind(), Some(HandshakeKind::Full));

    let mut client = connect();
    let second = Shard { selector: &b }.handshake(&mut client).unwrap();
    assert_eq!(second.server.handshake_kind(), Some(HandshakeKind::Resumed));

    let mut client = connect();
    let third = Shard {
        selector: &elsewhere,
    }
    .handshake(&mut client)
    .unwrap();
    assert_eq!(third.server.handshake_kind(), Some(HandshakeKind::Full));
}

#[test]
fn session_resumes_on_another_replica_with_the_same_key_file_tls13() {
    resumption_across_replicas(TlsVersion::V1_3);
}

#[test]
fn session_resumes_on_another_replica_with_the_same_key_file_tls12() {
    resumption_across_replicas(TlsVersion::V1_2);
}

fn mutual(ca: &Path) -> ServerTls {
    ServerTls {
        ca_certificates: Some(ca.to_owned()),
        ..tls(TlsMode::Mutual)
    }
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let server = Pki::new("server root", &["httpbin.example.com"]);
    let client_root = root_ca("client root");
    let client_inter = intermediate_ca(&client_root, "client intermediate");
    let good = client_leaf(&client_inter, &["client.example.com"]);
    let stranger_root = root_ca("stranger root");
    let stranger = client_leaf(&stranger_root, &["client.example.com"]);
    let dir = TempDir::new();
    let ca = dir.write("client-ca.pem", pem("CERTIFICATE", &client_root.cert));
    let config = server_config(&mutual(&ca), &server.material(), &ticketer()).unwrap();
    let selector = single(vec![exact("httpbin.example.com")], config);
    let shard = Shard {
        selector: &selector,
    };

    // No client certificate.
    let mut client = connect(client_config(&[&server.root.cert]), "httpbin.example.com");
    let err = shard.handshake(&mut client).unwrap_err();
    assert!(
        matches!(err.server, Some(rustls::Error::NoCertificatesPresented)),
        "{err:?}"
    );
    assert!(
        matches!(err.client, Some(rustls::Error::AlertReceived(_))),
        "{err:?}"
    );

    // A certificate from another CA.
    let mut client = connect(
        client_with_cert(&server.root.cert, &stranger, &[]),
        "httpbin.example.com",
    );
    let err = shard.handshake(&mut client).unwrap_err();
    assert!(
        matches!(err.server, Some(rustls::Error::InvalidCertificate(_))),
        "{err:?}"
    );
    assert!(
        matches!(err.client, Some(rustls::Error::AlertReceived(_))),
        "{err:?}"
    );

    // A good one, sent with its intermediate.
    let mut client = connect(
        client_with_cert(&server.root.cert, &good, &[&client_inter]),
        "httpbin.example.com",
    );
    let mut accepted = shard.handshake(&mut client).unwrap();
    let peer = accepted.server.peer_certificates().unwrap();
    assert_eq!(peer[0], good.cert);
    exchange(&mut client, &mut accepted.server);
}

#[test]
fn mutual_tls_uses_the_credential_ca_and_subject_alt_names() {
    let server = Pki::new("server root", &["httpbin.example.com"]);
    let client_root = root_ca("client root");
    let alice = client_leaf(&client_root, &["alice.example.com"]);
    let bob = client_leaf(&client_root, &["bob.example.com"]);
    let mut material = server.material();
    material.ca = Some(vec![client_root.cert.clone()]);
    let server_tls = ServerTls {
        subject_alt_names: vec!["alice.example.com".to_owned()],
        ..tls(TlsMode::Mutual)
    };
    let config = server_config(&server_tls, &material, &ticketer()).unwrap();
    let selector = single(vec![exact("httpbin.example.com")], config);
    let shard = Shard {
        selector: &selector,
    };
    let mut client = connect(
        client_with_cert(&server.root.cert, &alice, &[]),
        "httpbin.example.com",
    );
    shard.handshake(&mut client).unwrap();
    let mut client = connect(
        client_with_cert(&server.root.cert, &bob, &[]),
        "httpbin.example.com",
    );
    assert!(shard.handshake(&mut client).is_err());

    // MUTUAL without any CA is an error naming the credential.
    let err = server_config(&tls(TlsMode::Mutual), &server.material(), &ticketer()).unwrap_err();
    assert!(matches!(err, TlsError::MissingClientCa { .. }), "{err}");
}

#[test]
fn optional_mutual_accepts_no_certificate_but_verifies_one_sent() {
    let server = Pki::new("server root", &["httpbin.example.com"]);
    let client_root = root_ca("client root");
    let good = client_leaf(&client_root, &["client.example.com"]);
    let stranger = client_leaf(&root_ca("stranger"), &["client.example.com"]);
    let mut material = server.material();
    material.ca = Some(vec![client_root.cert.clone()]);
    let config = server_config(&tls(TlsMode::OptionalMutual), &material, &ticketer()).unwrap();
    let selector = single(vec![exact("httpbin.example.com")], config);
    let shard = Shard {
        selector: &selector,
    };

    let mut client = connect(client_config(&[&server.root.cert]), "httpbin.example.com");
    let accepted = shard.handshake(&mut client).unwrap();
    assert!(accepted.server.peer_certificates().is_none());

    let mut client = connect(
        client_with_cert(&server.root.cert, &good, &[]),
        "httpbin.example.com",
    );
    let accepted = shard.handshake(&mut client).unwrap();
    assert!(accepted.server.peer_certificates().is_some());

    let mut client = connect(
        client_with_cert(&server.root.cert, &stranger, &[]),
        "httpbin.example.com",
    );
    assert!(shard.handshake(&mut client).is_err());
}

/// Runs an unbuffered server connection over `incoming` as a shard does, until it
/// needs more bytes: the records it sends, or its error with the alert it sends.
fn unbuffered_turn(
    server: &mut UnbufferedServerConnection,
    incoming: &mut Vec<u8>,
) -> Result<Vec<u8>, (rustls::Error, Vec<u8>)> {
    let mut sent = Vec::new();
    let encode = |record: &mut EncodeTlsData<'_, ServerConnectionData>, sent: &mut Vec<u8>| {
        let mut buf = vec![0; 32 * 1024];
        let n = record.encode(&mut buf).unwrap();
        sent.extend_from_slice(&buf[..n]);
    };
    loop {
        let UnbufferedStatus { discard, state } = server.process_tls_records(incoming);
        let more = match state {
            Ok(ConnectionState::EncodeTlsData(mut record)) => {
                encode(&mut record, &mut sent);
                true
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                true
            }
            Ok(_) => false,
            Err(error) => {
                incoming.drain(..discard);
                // The alert rustls queued comes out of the next turns.
                loop {
                    match server.process_tls_records(&mut []).state {
                        Ok(ConnectionState::EncodeTlsData(mut record)) => {
                            encode(&mut record, &mut sent)
                        }
                        Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                        _ => return Err((error, sent)),
                    }
                }
            }
        };
        incoming.drain(..discard);
        if !more {
            return Ok(sent);
        }
    }
}

#[test]
fn an_unbuffered_connection_with_the_reject_config_sends_access_denied() {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let config = server_config(&tls(TlsMode::Simple), &pki.material(), &ticketer()).unwrap();
    let selector = single(vec![exact("httpbin.example.com")], config);
    let mut client = connect(client_config(&[&pki.root.cert]), "bookinfo.com");
    let mut incoming = client_out(&mut client);
    let Ok(HelloScan::Complete(hello)) = read_client_hello(&incoming) else {
        panic!("ClientHello not read");
    };
    assert_eq!(hello.server_name.as_deref(), Some("bookinfo.com"));
    assert!(selector.select(hello.server_name.as_deref()).is_none());
    let mut server = UnbufferedServerConnection::new(Arc::clone(selector.reject())).unwrap();
    let (_, alert) = unbuffered_turn(&mut server, &mut incoming).unwrap_err();
    assert!(
        matches!(
            feed_client(&mut client, &alert),
            Err(rustls::Error::AlertReceived(AlertDescription::AccessDenied))
        ),
        "{alert:?}"
    );
    assert!(client.peer_certificates().is_none());
}

/// A rustls client and an unbuffered server (a SIMPLE server for httpbin.example.com)
/// after their handshake, every record of it delivered (the session ticket included),
/// and the bytes the server has not processed.
fn unbuffered_pair() -> (ClientConnection, UnbufferedServerConnection, Vec<u8>) {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let config = server_config(&tls(TlsMode::Simple), &pki.material(), &ticketer()).unwrap();
    // Secret extraction lets record tests seal what rustls' client never sends.
    let mut client_config = client_config(&[&pki.root.cert]);
    client_config.enable_secret_extraction = true;
    let mut client = connect(client_config, "httpbin.example.com");
    let mut server = UnbufferedServerConnection::new(config).unwrap();
    let mut incoming = Vec::new();
    for _ in 0..10 {
        incoming.extend(client_out(&mut client));
        let sent = unbuffered_turn(&mut server, &mut incoming).unwrap();
        feed_client(&mut client, &sent).unwrap();
        if !client.is_handshaking() && !server.is_handshaking() && incoming.is_empty() {
            break;
        }
    }
    (client, server, incoming)
}

#[test]
fn an_unbuffered_connection_completes_the_handshake_and_carries_data() {
    let (mut client, mut server, mut incoming) = unbuffered_pair();
    assert!(!server.is_handshaking());
    assert_eq!(
        server.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    client
        .writer()
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap();
    incoming.extend(client_out(&mut client));
    let mut plain = Vec::new();
    let UnbufferedStatus { discard, state } = server.process_tls_records(&mut incoming);
    let Ok(ConnectionState::ReadTraffic(mut traffic)) = state else {
        panic!("no application data");
    };
    while let Some(record) = traffic.next_record() {
        plain.extend_from_slice(record.unwrap().payload);
    }
    incoming.drain(..discard);
    assert_eq!(plain, b"GET / HTTP/1.1\r\n\r\n");
}

#[test]
fn reject_config_is_shared() {
    assert!(Arc::ptr_eq(&reject_config(), &reject_config()));
}

#[test]
fn client_hello_split_at_every_byte_still_selects_the_server() {
    let pki = Pki::new("root", &["httpbin.example.com"]);
    let config = server_config(&tls(TlsMode::Simple), &pki.material(), &ticketer()).unwrap();
    let selector = SniSelector::new(vec![
        (vec![exact("bookinfo.com")], config.clone()),
        (vec![exact("httpbin.example.com")], config),
    ])
    .unwrap();
    let mut client = connect(client_config(&[&pki.root.cert]), "httpbin.example.com");
    let hello = client_out(&mut client);
    for split in 1..hello.len() {
        let mut acceptor = Acceptor::default();
        let (first, second) = hello.split_at(split);
        acceptor.read_tls(&mut &first[..]).unwrap();
        assert!(acceptor.accept().unwrap().is_none(), "split {split}");
        acceptor.read_tls(&mut &second[..]).unwrap();
        let accepted = acceptor.accept().unwrap().unwrap();
        let chosen = selector.select(accepted.client_hello().server_name());
        assert_eq!(chosen.map(|(id, _)| id), Some(1), "split {split}");
    }
}
