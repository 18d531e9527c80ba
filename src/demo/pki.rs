//! A throw-away PKI for `ringress demo`, the integration tests and the benchmarks: a root
//! CA, an intermediate CA, one server certificate per host, a client certificate for
//! mutual TLS and an unrelated "other" CA for wrong-CA tests. It runs before the gateway
//! starts; the gateway then loads these files exactly as it loads an operator's.
//!
//! Files written in the directory (the same layout `scripts/gen-certs.sh DIR host...`
//! writes with the openssl command line):
//!
//! | file | what |
//! |---|---|
//! | `root-ca.crt`, `root-ca.key` | self-signed root CA, valid 10 years |
//! | `intermediate-ca.crt`, `intermediate-ca.key` | CA signed by the root, path length 0, 10 years |
//! | `ca-chain.pem` | intermediate then root: what `curl --cacert` and `caCertificates` take |
//! | `<host>.crt`, `<host>.key` | server leaf (SAN = host) THEN the intermediate, valid 1 year |
//! | `client.crt`, `client.key` | client leaf `client.example.com` then the intermediate |
//! | `other-ca.crt`, `other-ca.key` | an unrelated self-signed root CA |
//! | `other-client.crt`, `other-client.key` | client leaf `client.example.com` signed by the other CA |
//!
//! A wildcard host `*.example.com` is written as `_wildcard.example.com.crt` / `.key`
//! (a `*` in a file name trips up shells); [`Pki::cert`] and [`Pki::key`] do that mapping.
//! Every key is ECDSA P-256 in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) with mode 0600;
//! every file is written to a temporary name and renamed, so running [`generate`] again
//! over the same directory (a certificate rotation) never leaves a half-written file.

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, RsaKeySize, SanType, SerialNumber,
};

#[cfg(test)]
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a leaf (server or client) certificate is valid.
pub(crate) const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// How long the root, intermediate and other CA certificates are valid.
pub(crate) const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Certificates start being valid this long before "now", so a peer whose clock is a
/// little behind still accepts them.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(60 * 60);
/// The identity (CN and DNS SAN) of `client.crt` and `other-client.crt`.
pub const CLIENT_NAME: &str = "client.example.com";
/// Longest host name accepted (the DNS limit).
pub(crate) const MAX_HOST_LEN: usize = 253;
/// File-name prefix that replaces `*.` in a wildcard host's file names.
pub(crate) const WILDCARD_FILE_PREFIX: &str = "_wildcard.";

const ORGANIZATION: &str = "ringress demo";
const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;
/// File stems the layout uses for itself; a host cannot take them.
const RESERVED_STEMS: [&str; 6] = [
    "root-ca",
    "intermediate-ca",
    "ca-chain",
    "client",
    "other-ca",
    "other-client",
];

/// What went wrong while generating or writing the PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot create the certificate directory {dir}: {source}")]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("host {host:?} cannot be put in a certificate: {reason}")]
    BadHost { host: String, reason: &'static str },
    #[error("certificate file name {name:?} is not usable: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("cannot generate {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
    #[error("the system clock is before 1970, certificates cannot be dated")]
    Clock,
}

/// The key type of an issued leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum KeyAlgorithm {
    #[default]
    EcdsaP256,
    Rsa2048,
}

/// The validity window of an issued leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Validity {
    /// From now (minus [`CLOCK_SKEW`]) for [`LEAF_VALIDITY`].
    #[default]
    Current,
    /// Ended yesterday (started 30 days before).
    #[cfg(test)]
    Expired,
    /// Starts in 30 days.
    #[cfg(test)]
    NotYetValid,
}

/// What an issued leaf may be used for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Usage {
    #[default]
    Server,
    Client,
}

/// Which CA signs an issued leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Signer {
    /// The intermediate; the `.crt` file holds the leaf then the intermediate.
    #[default]
    Intermediate,
    /// The unrelated other CA; the `.crt` file holds only the leaf.
    OtherCa,
}

/// An extra leaf for [`Pki::issue`]: multi-SAN, wildcard, RSA, expired, wrong CA...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    /// File stem: the leaf is written as `DIR/<name>.crt` and `DIR/<name>.key`.
    pub(crate) name: String,
    /// Subject alternative names (DNS names, `*.suffix`, or IP addresses); the first is
    /// also the common name.
    pub(crate) sans: Vec<String>,
    pub(crate) key: KeyAlgorithm,
    pub(crate) validity: Validity,
    pub(crate) usage: Usage,
    pub(crate) signer: Signer,
}

impl LeafSpec {
    /// A current ECDSA server certificate for `host`, signed by the intermediate, with
    /// the same file names [`generate`] would give it.
    pub fn server(host: &str) -> LeafSpec {
        LeafSpec {
            name: file_stem(host),
            sans: vec![host.to_owned()],
            key: KeyAlgorithm::default(),
            validity: Validity::default(),
            usage: Usage::Server,
            signer: Signer::default(),
        }
    }

    /// A current ECDSA client certificate for `identity`, written as `<name>.crt`.
    pub fn client(name: &str, identity: &str) -> LeafSpec {
        LeafSpec {
            name: name.to_owned(),
            sans: vec![identity.to_owned()],
            usage: Usage::Client,
            ..LeafSpec::server(identity)
        }
    }

    /// The same, with one more subject alternative name: a DNS name, an IP address,
    /// or a URI (a SPIFFE id such as `spiffe://cluster.local/ns/default/sa/sleep`).
    pub fn with_san(mut self, san: &str) -> LeafSpec {
        self.sans.push(san.to_owned());
        self
    }
}

/// Paths of an issued leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedLeaf {
    /// Leaf, then the intermediate when the intermediate signed it.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A generated PKI: the paths of its files, and the CAs' keys kept in memory so tests
/// can [`issue`](Pki::issue) more leaves.
pub struct Pki {
    pub dir: PathBuf,
    pub root_cert: PathBuf,
    pub root_key: PathBuf,
    pub(crate) intermediate_cert: PathBuf,
    pub intermediate_key: PathBuf,
    /// Intermediate then root.
    pub ca_chain: PathBuf,
    /// An unrelated root CA: clients and servers of the main PKI do not trust it.
    pub other_ca_cert: PathBuf,
    pub(crate) other_ca_key: PathBuf,
    /// The hosts passed to [`generate`], as given.
    pub(crate) hosts: Vec<String>,
    intermediate: Issuer<'static, KeyPair>,
    intermediate_pem: String,
    other_ca: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// `DIR/<host>.crt` (leaf then intermediate); `*.x` becomes `_wildcard.x.crt`.
    pub fn cert(&self, host: &str) -> PathBuf {
        self.dir.join(format!("{}.crt", file_stem(host)))
    }

    /// `DIR/<host>.key` (PKCS#8 PEM); `*.x` becomes `_wildcard.x.key`.
    pub fn key(&self, host: &str) -> PathBuf {
        self.dir.join(format!("{}.key", file_stem(host)))
    }

    /// `DIR/client.crt`: client leaf for [`CLIENT_NAME`] then the intermediate.
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.crt")
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    /// `DIR/other-client.crt`: a client leaf for [`CLIENT_NAME`] signed by the other CA,
    /// which a MUTUAL server trusting `ca-chain.pem` must refuse.
    pub fn other_client_cert(&self) -> PathBuf {
        self.dir.join("other-client.crt")
    }

    pub fn other_client_key(&self) -> PathBuf {
        self.dir.join("other-client.key")
    }

    /// Issues one more leaf into the directory and returns its paths.
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedLeaf, PkiError> {
        check_stem(&spec.name)?;
        let what = format!("certificate {}", spec.name);
        let key = match spec.key {
            KeyAlgorithm::EcdsaP256 => KeyPair::generate(),
            KeyAlgorithm::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
            }
        }
        .map_err(|source| PkiError::Generate {
            what: what.clone(),
            source,
        })?;
        let mut params = leaf_params(&spec.sans, spec.usage, spec.validity)?;
        if spec.key == KeyAlgorithm::Rsa2048 {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        let (issuer, chain_tail) = match spec.signer {
            Signer::Intermediate => (&self.intermediate, self.intermediate_pem.as_str()),
            Signer::OtherCa => (&self.other_ca, ""),
        };
        let cert = params
            .signed_by(&key, issuer)
            .map_err(|source| PkiError::Generate { what, source })?;
        let leaf = IssuedLeaf {
            cert: self.dir.join(format!("{}.crt", spec.name)),
            key: self.dir.join(format!("{}.key", spec.name)),
        };
        write_file(&leaf.key, key.serialize_pem().as_bytes(), KEY_MODE)?;
        write_file(
            &leaf.cert,
            format!("{}{}", cert.pem(), chain_tail).as_bytes(),
            CERT_MODE,
        )?;
        Ok(leaf)
    }
}

/// The file stem of a host's certificate: the host lower-cased, `*.` replaced by
/// [`WILDCARD_FILE_PREFIX`].
pub(crate) fn file_stem(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.strip_prefix("*.") {
        Some(rest) => format!("{WILDCARD_FILE_PREFIX}{rest}"),
        None => host,
    }
}

/// Generates the whole layout described in the module doc into `dir` (created if
/// missing), with one server certificate per host. Existing files are replaced.
pub fn generate(dir: &Path, hosts: &[&str]) -> Result<Pki, PkiError> {
    for host in hosts {
        check_server_host(host)?;
    }
    fs::create_dir_all(dir).map_err(|source| PkiError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })?;

    let (root_pem, root_key, root) = new_ca("ringress demo root CA", None)?;
    let (intermediate_pem, intermediate_key, intermediate) =
        new_ca("ringress demo intermediate CA", Some(&root))?;
    let (other_pem, other_key, other_ca) = new_ca("ringress demo other CA", None)?;

    let pki = Pki {
        dir: dir.to_path_buf(),
        root_cert: dir.join("root-ca.crt"),
        root_key: dir.join("root-ca.key"),
        intermediate_cert: dir.join("intermediate-ca.crt"),
        intermediate_key: dir.join("intermediate-ca.key"),
        ca_chain: dir.join("ca-chain.pem"),
        other_ca_cert: dir.join("other-ca.crt"),
        other_ca_key: dir.join("other-ca.key"),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        intermediate,
        intermediate_pem,
        other_ca,
    };
    write_file(&pki.root_key, root_key.as_bytes(), KEY_MODE)?;
    write_file(&pki.root_cert, root_pem.as_bytes(), CERT_MODE)?;
    write_file(&pki.intermediate_key, intermediate_key.as_bytes(), KEY_MODE)?;
    write_file(
        &pki.intermediate_cert,
        pki.intermediate_pem.as_bytes(),
        CERT_MODE,
    )?;
    write_file(
        &pki.ca_chain,
        format!("{}{}", pki.intermediate_pem, root_pem).as_bytes(),
        CERT_MODE,
    )?;
    write_file(&pki.other_ca_key, other_key.as_bytes(), KEY_MODE)?;
    write_file(&pki.other_ca_cert, other_pem.as_bytes(), CERT_MODE)?;

    for host in hosts {
        pki.issue(&LeafSpec::server(host))?;
    }
    pki.issue(&LeafSpec::client("client", CLIENT_NAME))?;
    pki.issue(&LeafSpec {
        signer: Signer::OtherCa,
        ..LeafSpec::client("other-client", CLIENT_NAME)
    })?;
    Ok(pki)
}

/// A new CA: self-signed when `parent` is `None`, else signed by it with path length 0.
/// Returns the certificate PEM, the key PEM and the issuer.
fn new_ca(
    name: &str,
    parent: Option<&Issuer<'static, KeyPair>>,
) -> Result<(String, String, Issuer<'static, KeyPair>), PkiError> {
    let generate_error = |source| PkiError::Generate {
        what: name.to_owned(),
        source,
    };
    let key = KeyPair::generate().map_err(generate_error)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, ORGANIZATION);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    set_validity(&mut params, Validity::Current, CA_VALIDITY)?;
    let cert = match parent {
        None => {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.self_signed(&key)
        }
        Some(parent) => {
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.use_authority_key_identifier_extension = true;
            params.signed_by(&key, parent)
        }
    }
    .map_err(generate_error)?;
    let key_pem = key.serialize_pem();
    Ok((cert.pem(), key_pem, Issuer::new(params, key)))
}

fn leaf_params(
    sans: &[String],
    usage: Usage,
    validity: Validity,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, ORGANIZATION);
    if let Some(first) = sans.first() {
        params.distinguished_name.push(DnType::CommonName, first);
    }
    for san in sans {
        if san.contains("://") {
            let uri = san.clone().try_into().map_err(|_| PkiError::BadHost {
                host: san.clone(),
                reason: "not an ASCII URI",
            })?;
            params.subject_alt_names.push(SanType::URI(uri));
            continue;
        }
        check_host(san)?;
        let entry = match san.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(san.to_ascii_lowercase().try_into().map_err(|_| {
                PkiError::BadHost {
                    host: san.clone(),
                    reason: "not an ASCII DNS name",
                }
            })?),
        };
        params.subject_alt_names.push(entry);
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match usage {
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    set_validity(&mut params, validity, LEAF_VALIDITY)?;
    Ok(params)
}

/// Sets `not_before` / `not_after` relative to the current time.
fn set_validity(
    params: &mut CertificateParams,
    validity: Validity,
    length: Duration,
) -> Result<(), PkiError> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| PkiError::Clock)?;
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    let (not_before, not_after) = match validity {
        Validity::Current => (now - CLOCK_SKEW, now - CLOCK_SKEW + length),
        #[cfg(test)]
        Validity::Expired => (now - 30 * DAY, now - DAY),
        #[cfg(test)]
        Validity::NotYetValid => (now + 30 * DAY, now + 30 * DAY + length),
    };
    params.not_before = not_before;
    params.not_after = not_after;
    Ok(())
}

/// 16 random bytes, high bit clear so the DER integer stays positive and 16 bytes long.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    fastrand::fill(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// A host (or SAN) must be a DNS name (optionally `*.` + name) or an IP address.
fn check_host(host: &str) -> Result<(), PkiError> {
    let bad = |reason| {
        Err(PkiError::BadHost {
            host: host.to_owned(),
            reason,
        })
    };
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() {
        return bad("it is empty");
    }
    if host.len() > MAX_HOST_LEN {
        return bad("it is longer than 253 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return bad("only letters, digits, '-', '.', '_' and a leading '*.' are allowed");
    }
    if name.split('.').any(str::is_empty) {
        return bad("it has an empty label");
    }
    Ok(())
}

/// A host of [`generate`] must also not take one of the layout's own file names.
fn check_server_host(host: &str) -> Result<(), PkiError> {
    check_host(host)?;
    if RESERVED_STEMS.contains(&file_stem(host).as_str()) {
        return Err(PkiError::BadHost {
            host: host.to_owned(),
            reason: "its file name is one of the CA or client files",
        });
    }
    Ok(())
}

fn check_stem(name: &str) -> Result<(), PkiError> {
    let bad = |reason| {
        Err(PkiError::BadName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name == "." || name == ".." {
        return bad("it is empty or a directory name");
    }
    if name.contains('/') || name.contains('\0') {
        return bad("it contains '/' or NUL");
    }
    Ok(())
}

/// Writes `contents` to a temporary file next to `path` with `mode`, then renames it
/// over `path`.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let write_error = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` only applies to a new file; a stale temporary keeps its old mode.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::test_support::{
        ScratchDir, certs, have_openssl, key, openssl_verify, provider, roots, verify_client,
        verify_server,
    };
    use rustls::pki_types::{PrivateKeyDer, ServerName};
    use std::sync::Arc;

    /// Runs a full TLS handshake in memory: a server with `host`'s files (and client
    /// verification against `client_root` when given), a client trusting `ca_chain`.
    fn handshake(
        pki: &Pki,
        host: &str,
        sni: &str,
        client_root: Option<&Path>,
        client_files: Option<(&Path, &Path)>,
    ) -> Result<(), rustls::Error> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = match client_root {
            Some(root) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots(root),
                    provider(),
                )
                .build()
                .unwrap(),
            ),
            None => builder.with_no_client_auth(),
        };
        let server_config =
            builder.with_single_cert(certs(&pki.cert(host)), key(&pki.key(host)))?;
        let client_builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots(&pki.ca_chain));
        let client_config = match client_files {
            Some((cert, k)) => client_builder.with_client_auth_cert(certs(cert), key(k))?,
            None => client_builder.with_no_client_auth(),
        };
        let mut server = rustls::ServerConnection::new(Arc::new(server_config))?;
        let mut client = rustls::ClientConnection::new(
            Arc::new(client_config),
            ServerName::try_from(sni.to_owned()).unwrap(),
        )?;
        for _ in 0..20 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets()?;
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                // TLS 1.3: the server only sees the client certificate's verification
                // once it has read the client's last flight, done above.
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    const HOSTS: [&str; 3] = ["httpbin.example.com", "bookinfo.com", "*.wild.example.com"];

    #[test]
    fn layout_is_written_with_private_keys_0600() {
        let scratch = ScratchDir::new("pki-layout");
        let pki = generate(scratch.path(), &HOSTS).unwrap();
        for name in [
            "root-ca.crt",
            "root-ca.key",
            "intermediate-ca.crt",
            "intermediate-ca.key",
            "ca-chain.pem",
            "httpbin.example.com.crt",
            "httpbin.example.com.key",
            "bookinfo.com.crt",
            "_wildcard.wild.example.com.crt",
            "_wildcard.wild.example.com.key",
            "client.crt",
            "client.key",
            "other-ca.crt",
            "other-client.crt",
            "other-client.key",
        ] {
            let meta = fs::metadata(scratch.path().join(name)).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            if name.ends_with(".key") {
                assert_eq!(mode, 0o600, "{name}");
            }
        }
        assert_eq!(
            pki.cert("*.wild.example.com"),
            scratch.path().join("_wildcard.wild.example.com.crt")
        );
        // Leaf then intermediate; the chain file is intermediate then root.
        let leaf_chain = certs(&pki.cert("httpbin.example.com"));
        assert_eq!(leaf_chain.len(), 2);
        assert_eq!(leaf_chain[1], certs(&pki.intermediate_cert)[0]);
        let ca_chain = certs(&pki.ca_chain);
        assert_eq!(ca_chain.len(), 2);
        assert_eq!(ca_chain[0], certs(&pki.intermediate_cert)[0]);
        assert_eq!(ca_chain[1], certs(&pki.root_cert)[0]);
        assert_eq!(certs(&pki.client_cert()).len(), 2);
        // Keys are PKCS#8.
        let text = fs::read_to_string(pki.key("bookinfo.com")).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
        assert!(matches!(
            key(&pki.key("bookinfo.com")),
            PrivateKeyDer::Pkcs8(_)
        ));
    }

    #[test]
    fn server_chains_verify_with_webpki() {
        let scratch = ScratchDir::new("pki-webpki");
        let pki = generate(scratch.path(), &HOSTS).unwrap();
        verify_server(
            &pki.root_cert,
            &pki.cert("httpbin.example.com"),
            "httpbin.example.com",
        )
        .unwrap();
        verify_server(&pki.root_cert, &pki.cert("bookinfo.com"), "bookinfo.com").unwrap();
        verify_server(
            &pki.root_cert,
            &pki.cert("*.wild.example.com"),
            "a.wild.example.com",
        )
        .unwrap();
        // Wrong name, wrong trust anchor.
        assert!(
            verify_server(
                &pki.root_cert,
                &pki.cert("bookinfo.com"),
                "httpbin.example.com"
            )
            .is_err()
        );
        assert!(
            verify_server(
                &pki.other_ca_cert,
                &pki.cert("bookinfo.com"),
                "bookinfo.com"
            )
            .is_err()
        );
        // A client certificate is not a server certificate.
        assert!(verify_server(&pki.root_cert, &pki.client_cert(), CLIENT_NAME).is_err());
    }

    #[test]
    fn client_chains_verify_and_the_other_ca_does_not() {
        let scratch = ScratchDir::new("pki-client");
        let pki = generate(scratch.path(), &["httpbin.example.com"]).unwrap();
        verify_client(&pki.root_cert, &pki.client_cert()).unwrap();
        verify_client(&pki.ca_chain, &pki.client_cert()).unwrap();
        assert!(verify_client(&pki.root_cert, &pki.other_client_cert()).is_err());
        verify_client(&pki.other_ca_cert, &pki.other_client_cert()).unwrap();
        assert!(verify_client(&pki.root_cert, &pki.cert("httpbin.example.com")).is_err());
    }

    #[test]
    fn tls_handshakes_in_memory() {
        let scratch = ScratchDir::new("pki-handshake");
        let pki = generate(scratch.path(), &HOSTS).unwrap();
        handshake(
            &pki,
            "httpbin.example.com",
            "httpbin.example.com",
            None,
            None,
        )
        .unwrap();
        handshake(&pki, "*.wild.example.com", "x.wild.example.com", None, None).unwrap();
        assert!(handshake(&pki, "bookinfo.com", "httpbin.example.com", None, None).is_err());
        // Mutual TLS: the demo client passes, the other CA's client and no client fail.
        let client = (pki.client_cert(), pki.client_key());
        let other = (pki.other_client_cert(), pki.other_client_key());
        let host = "httpbin.example.com";
        handshake(
            &pki,
            host,
            host,
            Some(&pki.ca_chain),
            Some((&client.0, &client.1)),
        )
        .unwrap();
        assert!(
            handshake(
                &pki,
                host,
                host,
                Some(&pki.ca_chain),
                Some((&other.0, &other.1))
            )
            .is_err()
        );
        assert!(handshake(&pki, host, host, Some(&pki.ca_chain), None).is_err());
    }

    #[test]
    fn issue_makes_expired_rsa_multi_san_and_wrong_ca_leaves() {
        let scratch = ScratchDir::new("pki-issue");
        let pki = generate(scratch.path(), &[]).unwrap();
        let expired = pki
            .issue(&LeafSpec {
                validity: Validity::Expired,
                ..LeafSpec::server("expired.example.com")
            })
            .unwrap();
        let err = verify_server(&pki.root_cert, &expired.cert, "expired.example.com").unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext { .. })
                    | rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
            ),
            "{err:?}"
        );
        let future = pki
            .issue(&LeafSpec {
                validity: Validity::NotYetValid,
                ..LeafSpec::server("future.example.com")
            })
            .unwrap();
        assert!(verify_server(&pki.root_cert, &future.cert, "future.example.com").is_err());
        let multi = pki
            .issue(&LeafSpec {
                name: "multi".into(),
                sans: vec![
                    "a.example.com".into(),
                    "b.example.org".into(),
                    "127.0.0.1".into(),
                ],
                key: KeyAlgorithm::Rsa2048,
                ..LeafSpec::server("a.example.com")
            })
            .unwrap();
        for name in ["a.example.com", "b.example.org", "127.0.0.1"] {
            verify_server(&pki.root_cert, &multi.cert, name).unwrap();
        }
        assert!(matches!(key(&multi.key), PrivateKeyDer::Pkcs8(_)));
        let wrong = pki
            .issue(&LeafSpec {
                signer: Signer::OtherCa,
                ..LeafSpec::server("wrong.example.com")
            })
            .unwrap();
        assert_eq!(certs(&wrong.cert).len(), 1);
        assert!(verify_server(&pki.root_cert, &wrong.cert, "wrong.example.com").is_err());
        verify_server(&pki.other_ca_cert, &wrong.cert, "wrong.example.com").unwrap();
    }

    #[test]
    fn regenerating_replaces_the_ca() {
        let scratch = ScratchDir::new("pki-rotate");
        let first = generate(scratch.path(), &["bookinfo.com"]).unwrap();
        let old_root = scratch.path().join("old-root.crt");
        fs::copy(&first.root_cert, &old_root).unwrap();
        let second = generate(scratch.path(), &["bookinfo.com"]).unwrap();
        verify_server(
            &second.root_cert,
            &second.cert("bookinfo.com"),
            "bookinfo.com",
        )
        .unwrap();
        assert!(verify_server(&old_root, &second.cert("bookinfo.com"), "bookinfo.com").is_err());
        // No temporary files are left behind.
        for entry in fs::read_dir(scratch.path()).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(!name.to_string_lossy().contains(".tmp-"), "{name:?}");
        }
    }

    #[test]
    fn bad_hosts_are_refused_by_name() {
        let scratch = ScratchDir::new("pki-bad");
        for host in [
            "", "*.", "a..b", "a/b.com", "../etc", "client", "ca-chain", "é.com",
        ] {
            let err = generate(scratch.path(), &[host]).unwrap_err();
            assert!(
                matches!(&err, PkiError::BadHost { host: h, .. } if h == host),
                "{host:?}: {err}"
            );
        }
        let long = "a.".repeat(130) + "com";
        assert!(generate(scratch.path(), &[long.as_str()]).is_err());
        assert!(
            generate(
                scratch.path(),
                &["::1", "10.0.0.1", "under_score.example.com"]
            )
            .is_ok()
        );
    }

    #[test]
    fn openssl_verifies_the_chains() {
        if !have_openssl() {
            return;
        }
        let scratch = ScratchDir::new("pki-openssl");
        let pki = generate(scratch.path(), &HOSTS).unwrap();
        for host in HOSTS {
            assert!(
                openssl_verify(&pki.dir, &pki.cert(host), "sslserver"),
                "{host}"
            );
        }
        assert!(openssl_verify(&pki.dir, &pki.client_cert(), "sslclient"));
        assert!(!openssl_verify(
            &pki.dir,
            &pki.other_client_cert(),
            "sslclient"
        ));
        assert!(!openssl_verify(&pki.dir, &pki.client_cert(), "sslserver"));
    }
}
