//! Building one rustls `ServerConfig` per Gateway server from its validated `tls` block
//! and its loaded certificate: protocol versions, cipher suites (Istio's OpenSSL-style
//! names mapped to rustls suites), client-certificate verification for MUTUAL and
//! OPTIONAL_MUTUAL, ALPN and the shared session ticketer. Built on the control thread;
//! a shard creates its rustls connection with the config of the server SNI chose.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ProducesTickets, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme, SupportedCipherSuite, SupportedProtocolVersion,
};
use x509_parser::extensions::GeneralName;

use super::credential::{load_certificates, load_crls, provider};
use super::{CertifiedMaterial, TlsError};
use crate::config::model::{ServerTls, TlsMode, TlsVersion};

/// Application protocols offered in ALPN, preferred first: HTTP/2, then HTTP/1.1, as
/// Envoy prefers them. `http/1.0` is there for clients that offer only it (`curl
/// --http1.0`): rustls refuses a handshake whose ALPN offer it shares nothing with,
/// where Envoy and nginx go on without ALPN.
pub(crate) const ALPN_PROTOCOLS: &[&[u8]] = &[b"h2", b"http/1.1", b"http/1.0"];

/// Creates the session ticket encrypter every shard shares: stateless tickets (no
/// per-shard session cache), keys rotated by rustls every 6 hours. Encrypting and
/// decrypting a ticket takes an uncontended read lock; only the rotation writes. Create it once at
/// start and pass the same one to every `server_config` call, across reloads too, so a
/// client resumes on any shard and after a reload.
pub fn new_ticketer() -> Result<Arc<dyn ProducesTickets>, TlsError> {
    rustls::crypto::aws_lc_rs::Ticketer::new().map_err(TlsError::Ticketer)
}

/// The rustls configuration of one Gateway server.
pub fn server_config(
    tls: &ServerTls,
    material: &CertifiedMaterial,
    ticketer: &Arc<dyn ProducesTickets>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let rustls_err = |source| TlsError::Rustls {
        source_name: material.source.clone(),
        source,
    };
    let versions = protocol_versions(tls)?;
    let tls12_only = !versions.contains(&&rustls::version::TLS13);
    let signing_key = provider()
        .key_provider
        .load_private_key(material.key.clone_key())
        .map_err(rustls_err)?;
    let suites = cipher_suites(&tls.cipher_suites)?;
    if tls12_only {
        let usable = suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS12)
            .any(|s| s.usable_for_signature_algorithm(signing_key.algorithm()));
        if !usable {
            return Err(TlsError::NoUsableSuite {
                suites: tls.cipher_suites.clone(),
                key_kind: format!("{:?}", signing_key.algorithm()),
                source_name: material.source.clone(),
            });
        }
    }
    let provider = Arc::new(CryptoProvider {
        cipher_suites: suites,
        ..provider()
    });
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(rustls_err)?;
    let builder = match tls.mode {
        TlsMode::Simple => builder.with_no_client_auth(),
        TlsMode::Mutual | TlsMode::OptionalMutual => {
            builder.with_client_cert_verifier(client_verifier(tls, material, provider)?)
        }
    };
    let certified = CertifiedKey::new(material.chain.clone(), signing_key);
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertified(Arc::new(certified))));
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    config.ticketer = Arc::clone(ticketer);
    // The server's order of suites decides, as in Envoy: a client listing AES-256-GCM
    // first (OpenSSL's default order) still gets AES-128-GCM with SHA-256.
    config.ignore_client_order = true;
    // Resumption is by stateless tickets only: a per-config session cache would take a
    // lock on every handshake and would not be shared between shards anyway.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    // One TLS 1.3 ticket per handshake (rustls sends two by default): each costs an
    // encryption and a record, wasted on clients that make one request and close.
    config.send_tls13_tickets = 1;
    // Established TLS 1.3 connections move to ringress's own record layer
    // (`tls::Records`), which needs the traffic keys.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// Serves one certificate to every ClientHello (SNI was already resolved by
/// `SniSelector` before this config was chosen). The key was checked against the
/// certificate when the credential was loaded.
#[derive(Debug)]
struct SingleCertified(Arc<CertifiedKey>);

impl ResolvesServerCert for SingleCertified {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// Resolves no certificate, so rustls aborts the handshake with an alert.
#[derive(Debug)]
struct ResolvesNothing;

impl ResolvesServerCert for ResolvesNothing {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

/// A configuration for a ClientHello that names no host served on its port: its
/// certificate resolver resolves nothing, so the client gets a TLS alert instead of
/// another host's certificate. One shared instance.
pub fn reject_config() -> Arc<ServerConfig> {
    static REJECT: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    Arc::clone(REJECT.get_or_init(|| {
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map(|b| {
                b.with_no_client_auth()
                    .with_cert_resolver(Arc::new(ResolvesNothing))
            })
            // The default provider supports every rustls version, so this branch is
            // not taken; it still yields a config that resolves nothing.
            .unwrap_or_else(|_| {
                ServerConfig::builder()
                    .with_no_client_auth()
                    .with_cert_resolver(Arc::new(ResolvesNothing))
            });
        config.session_storage = Arc::new(NoServerSessionStorage {});
        Arc::new(config)
    }))
}

fn version_name(v: TlsVersion) -> &'static str {
    match v {
        TlsVersion::V1_2 => "TLSV1_2",
        TlsVersion::V1_3 => "TLSV1_3",
    }
}

/// `minProtocolVersion` (default TLS 1.2) to `maxProtocolVersion` (default TLS 1.3).
fn protocol_versions(tls: &ServerTls) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    let min = tls.min_protocol_version.unwrap_or(TlsVersion::V1_2);
    let max = tls.max_protocol_version.unwrap_or(TlsVersion::V1_3);
    if min > max {
        return Err(TlsError::VersionRange {
            min: version_name(min),
            max: version_name(max),
        });
    }
    let mut versions = Vec::new();
    if max >= TlsVersion::V1_3 {
        versions.push(&rustls::version::TLS13);
    }
    if min <= TlsVersion::V1_2 {
        versions.push(&rustls::version::TLS12);
    }
    Ok(versions)
}

/// Maps one suite name, OpenSSL style (`ECDHE-RSA-AES128-GCM-SHA256`, as Istio and
/// Envoy write them) or IANA style (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`), to the
/// rustls suite. Case-insensitive.
pub(crate) fn cipher_suite_by_name(name: &str) -> Result<SupportedCipherSuite, TlsError> {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let upper = name.trim().to_ascii_uppercase();
    let suite = match upper.as_str() {
        "ECDHE-ECDSA-AES128-GCM-SHA256" | "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        }
        "ECDHE-ECDSA-AES256-GCM-SHA384" | "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        }
        "ECDHE-ECDSA-CHACHA20-POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "ECDHE-RSA-AES128-GCM-SHA256" | "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        }
        "ECDHE-RSA-AES256-GCM-SHA384" | "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => {
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        }
        "ECDHE-RSA-CHACHA20-POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_AES_128_GCM_SHA256" | "TLS13_AES_128_GCM_SHA256" => cs::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_256_GCM_SHA384" | "TLS13_AES_256_GCM_SHA384" => cs::TLS13_AES_256_GCM_SHA384,
        "TLS_CHACHA20_POLY1305_SHA256" | "TLS13_CHACHA20_POLY1305_SHA256" => {
            cs::TLS13_CHACHA20_POLY1305_SHA256
        }
        _ => {
            return Err(match unsupported_reason(&upper) {
                Some(reason) => TlsError::UnsupportedCipherSuite {
                    name: name.to_owned(),
                    reason,
                },
                None => TlsError::UnknownCipherSuite {
                    name: name.to_owned(),
                },
            });
        }
    };
    Ok(suite)
}

/// Why a well-known suite that rustls does not implement is refused, so the operator
/// knows what to write instead.
fn unsupported_reason(upper: &str) -> Option<&'static str> {
    let has = |s: &str| upper.contains(s);
    if has("RC4") || has("DES") || has("NULL") || has("EXPORT") || has("EXP-") || has("MD5") {
        Some("it uses a broken algorithm that rustls does not implement")
    } else if has("PSK") || has("SRP") {
        Some("pre-shared-key and SRP suites are not offered by ringress")
    } else if upper.starts_with("DHE-") || upper.starts_with("EDH-") || has("_DHE_") {
        Some("finite-field Diffie-Hellman is not offered by rustls; use an ECDHE suite")
    } else if has("CCM") || has("CAMELLIA") || has("ARIA") || has("SEED") || has("IDEA") {
        Some("rustls offers only AES-GCM and CHACHA20-POLY1305 suites")
    } else if upper.starts_with("AES") || upper.starts_with("TLS_RSA_") {
        Some(
            "RSA key exchange has no forward secrecy and is not offered by rustls; use an ECDHE suite",
        )
    } else if upper.starts_with("ECDHE-") || upper.starts_with("TLS_ECDHE_") {
        Some(
            "CBC-mode suites are not offered by rustls; use the AES-GCM or CHACHA20-POLY1305 variant",
        )
    } else {
        None
    }
}

/// The suites a server offers. `cipherSuites` restricts the TLS 1.2 suites (Envoy,
/// and so Istio, applies it to TLS 1.2 only); if it also names TLS 1.3 suites those are
/// restricted too. A version none of whose suites are named keeps rustls's defaults.
/// Envoy's equal-preference groups (`[A|B]`) are accepted and flattened.
pub(crate) fn cipher_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, TlsError> {
    let defaults = default_cipher_suites();
    if names.is_empty() {
        return Ok(defaults);
    }
    let mut tls12 = Vec::new();
    let mut tls13 = Vec::new();
    for entry in names {
        for name in entry
            .split(['[', ']', '|', ':'])
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            let suite = cipher_suite_by_name(name)?;
            let list = if suite.version() == &rustls::version::TLS13 {
                &mut tls13
            } else {
                &mut tls12
            };
            if !list
                .iter()
                .any(|s: &SupportedCipherSuite| s.suite() == suite.suite())
            {
                list.push(suite);
            }
        }
    }
    let defaults_of = |version: &'static SupportedProtocolVersion| {
        defaults
            .iter()
            .filter(|s| s.version() == version)
            .copied()
            .collect::<Vec<_>>()
    };
    if tls13.is_empty() {
        tls13 = defaults_of(&rustls::version::TLS13);
    }
    if tls12.is_empty() {
        tls12 = defaults_of(&rustls::version::TLS12);
    }
    tls13.extend(tls12);
    Ok(tls13)
}

/// The suites of a server whose `cipherSuites` is empty, in ringress's order of
/// preference: Envoy's defaults with AES hardware (AES-128-GCM first, then
/// CHACHA20-POLY1305, then AES-256-GCM for TLS 1.2; AES-128-GCM, AES-256-GCM,
/// CHACHA20-POLY1305 for TLS 1.3). Every suite is still offered; the order only decides
/// which one a client that offers several gets (see `ignore_client_order` in
/// [`server_config`]). AES-128-GCM with SHA-256 is the cheapest for both ends: SHA-256
/// runs on the SHA extensions of current CPUs where SHA-384 does not, which makes the
/// TLS 1.3 key schedule of a full handshake about three times cheaper, and AES-128 has
/// 10 rounds to AES-256's 14.
fn default_cipher_suites() -> Vec<SupportedCipherSuite> {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ]
}

fn mode_name(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::Simple => "SIMPLE",
        TlsMode::Mutual => "MUTUAL",
        TlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
    }
}

/// Client-certificate verification for MUTUAL (certificate required) and
/// OPTIONAL_MUTUAL (verified when sent), trusting `caCertificates` or else the CA that
/// came with the credential; restricted to `subjectAltNames` when given.
fn client_verifier(
    tls: &ServerTls,
    material: &CertifiedMaterial,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let (what, cas) = match (&tls.ca_certificates, &material.ca) {
        (Some(path), _) => (path.display().to_string(), load_certificates(path)?),
        (None, Some(ca)) => (format!("the CA of {}", material.source), ca.clone()),
        (None, None) => {
            return Err(TlsError::MissingClientCa {
                mode: mode_name(tls.mode),
                source_name: material.source.clone(),
            });
        }
    };
    let roots = root_store(cas, &what)?;
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    if let Some(path) = &tls.ca_crl {
        builder = builder.with_crls(load_crls(path)?);
    }
    if tls.mode == TlsMode::OptionalMutual {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder.build().map_err(|e| TlsError::ClientCa {
        what,
        detail: e.to_string(),
    })?;
    if tls.subject_alt_names.is_empty() {
        return Ok(verifier);
    }
    Ok(Arc::new(SanRestricted {
        inner: verifier,
        allowed: tls.subject_alt_names.clone(),
    }))
}

/// A client-certificate verifier that, after the chain is verified, also requires one
/// of the leaf's subject alternative names (DNS, URI, email or IP, compared exactly) to
/// be in `subjectAltNames`.
#[derive(Debug)]
struct SanRestricted {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

/// The CA certificates from `what` as a root store (a client CA, or an upstream's).
pub(crate) fn root_store(
    cas: Vec<CertificateDer<'static>>,
    what: &str,
) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, ca) in cas.into_iter().enumerate() {
        roots.add(ca).map_err(|e| TlsError::ClientCa {
            what: what.to_owned(),
            detail: format!("certificate {}: {e}", i + 1),
        })?;
    }
    Ok(roots)
}

/// Whether one of `end_entity`'s subject alternative names (DNS, URI, email or IP,
/// compared exactly) is in `allowed` (`subjectAltNames`, of a server or an upstream).
pub(crate) fn leaf_has_san(end_entity: &CertificateDer<'_>, allowed: &[String]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(end_entity) else {
        return false;
    };
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return false;
    };
    ext.value.general_names.iter().any(|name| {
        let value = match name {
            GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                (*s).to_owned()
            }
            GeneralName::IPAddress(bytes) => super::cert_info::ip_string(bytes),
            _ => return false,
        };
        allowed.contains(&value)
    })
}

impl ClientCertVerifier for SanRestricted {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if leaf_has_san(end_entity, &self.allowed) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
