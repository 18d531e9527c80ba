//! rustls client configurations for TLS to upstreams (a DestinationRule's
//! `trafficPolicy.tls`), built on the control thread when a snapshot is built, one per
//! cluster (so the cluster's connections on every shard share its session cache and
//! resume their sessions). A file that cannot be loaded fails the build, naming it.
//!
//! What is verified, in Envoy's terms:
//! - the chain against `caCertificates` (or the credential's `ca.crt`), or the
//!   system's roots when neither is given (Istio with `VERIFY_CERTIFICATE_AT_CLIENT`,
//!   its default since 1.20), with `caCrl` when given;
//! - the name: one of `subjectAltNames` when given (any DNS, URI, email or IP name of
//!   the leaf, compared exactly), else the SNI name;
//! - nothing at all with `insecureSkipVerify` (the handshake's signatures still are).
//!
//! The SNI name is `sni`, else each request's authority (its `Host` after the route's
//! `rewrite.authority`, without the port), as Envoy's `auto_sni` sends it under
//! Istio; pooled connections are kept apart by it. ALPN offers `h2` to a cluster
//! that speaks HTTP/2, `http/1.1` otherwise.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::credential::{load_certificates, load_crls, load_named_ca, native_roots, provider};
use super::server_config::{leaf_has_san, root_store};
use super::{CertInfo, TlsError, describe, load_credential};
use crate::config::{ClientCredential, ClientTls, ClientTlsMode, Credential};

/// A cluster's TLS to its endpoints, ready for connections.
pub(crate) struct UpstreamTls {
    pub(crate) settings: ClientTls,
    pub(crate) config: Arc<ClientConfig>,
    /// `sni`: the SNI name (and, without `subjectAltNames`, the name verified) of
    /// every connection; `None`: each request's authority ([`UpstreamTls::server_name_for`]).
    pub(crate) server_name: Option<ServerName<'static>>,
    /// Where the CA comes from: a file, a credential, or the system's roots.
    pub(crate) ca_source: String,
    /// MUTUAL: where the client certificate comes from, and its leaf.
    pub(crate) client_certificate: Option<(String, Option<CertInfo>)>,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("settings", &self.settings)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings && self.server_name == other.server_name
    }
}

impl Eq for UpstreamTls {}

/// The TLS of a cluster for `host` (named in messages) under `settings` (`None` for
/// DISABLE); `h2` when the cluster speaks HTTP/2.
pub(crate) fn upstream_tls(
    settings: &ClientTls,
    host: &str,
    h2: bool,
    secrets_dir: Option<&std::path::Path>,
) -> Result<Option<UpstreamTls>, TlsError> {
    if settings.mode == ClientTlsMode::Disable {
        return Ok(None);
    }
    let mutual = settings.mode == ClientTlsMode::Mutual;
    let server_name = match settings.sni.as_deref() {
        Some(name) => {
            Some(
                ServerName::try_from(name.to_owned()).map_err(|e| TlsError::Rustls {
                    source_name: format!("sni {name:?}"),
                    source: rustls::Error::General(e.to_string()),
                })?,
            )
        }
        None => None,
    };
    // The CA and, for MUTUAL, the client certificate and key.
    let (ca, ca_source, client) = match &settings.credential {
        ClientCredential::Files { cert_and_key, ca } => {
            let cas = match ca {
                Some(path) => Some((load_certificates(path)?, path.display().to_string())),
                None => None,
            };
            let client = match cert_and_key {
                Some((cert, key)) if mutual => Some(load_credential(
                    &Credential::Files {
                        cert: cert.clone(),
                        key: key.clone(),
                    },
                    None,
                )?),
                _ => None,
            };
            (cas.clone().map(|c| c.0), cas.map(|c| c.1), client)
        }
        ClientCredential::Named(name) => {
            let Some(dir) = secrets_dir else {
                return Err(TlsError::NoSecretsDir { name: name.clone() });
            };
            if mutual {
                let material = load_credential(&Credential::Named(name.clone()), Some(dir))?;
                let source = material.source.clone();
                let ca = material.ca.clone();
                (ca.clone(), ca.map(|_| source), Some(material))
            } else {
                let ca = load_named_ca(name, dir)?;
                let source = format!("credential '{name}' ({})", dir.join(name).display());
                (ca.clone(), ca.map(|_| source), None)
            }
        }
    };
    let provider = Arc::new(provider());
    let chain = if settings.insecure_skip_verify {
        None
    } else {
        let (roots, what) = match ca {
            Some(cas) => {
                let what = ca_source.clone().unwrap_or_default();
                (root_store(cas, &what)?, what)
            }
            None => (system_roots()?, "the system's roots".to_owned()),
        };
        let mut builder =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        if let Some(path) = &settings.ca_crl {
            builder = builder.with_crls(load_crls(path)?);
        }
        Some(builder.build().map_err(|e| TlsError::ClientCa {
            what,
            detail: e.to_string(),
        })?)
    };
    let verifier = Arc::new(UpstreamVerifier {
        chain,
        allowed: settings.subject_alt_names.clone(),
        provider: provider.clone(),
    });
    let source_name = format!("the upstream {host}");
    let rustls_error = |source| TlsError::Rustls {
        source_name: source_name.clone(),
        source,
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let client_certificate = client.as_ref().map(|m| {
        let leaf = m.leaf().and_then(|c| describe(c).ok());
        (m.source.clone(), leaf)
    });
    let mut config = match client {
        Some(material) => builder
            .with_client_auth_cert(material.chain, material.key)
            .map_err(rustls_error)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(Some(UpstreamTls {
        settings: settings.clone(),
        config: Arc::new(config),
        server_name,
        ca_source: if settings.insecure_skip_verify {
            "none (insecureSkipVerify)".to_owned()
        } else {
            ca_source.unwrap_or_else(|| "the system's roots".to_owned())
        },
        client_certificate,
    }))
}

impl UpstreamTls {
    /// The SNI name of a connection for a request to `authority` (its `Host`, after
    /// the route's rewrite): `sni`, else the authority without its port (Envoy's
    /// `auto_sni`, which Istio turns on), else, when that is no DNS name or IP
    /// address, the destination host `host`.
    pub(crate) fn server_name_for(&self, authority: &str, host: &str) -> ServerName<'static> {
        if let Some(name) = &self.server_name {
            return name.clone();
        }
        ServerName::try_from(authority_host(authority).to_ascii_lowercase())
            .or_else(|_| ServerName::try_from(host.to_owned()))
            // The destination host is a validated host name: never reached.
            .unwrap_or_else(|_| ServerName::from(std::net::IpAddr::from([0, 0, 0, 0])))
    }

    /// The SNI name sent, as `check` and `/config_dump` say it.
    pub(crate) fn sni(&self) -> String {
        match &self.server_name {
            Some(ServerName::DnsName(name)) => name.as_ref().to_owned(),
            Some(ServerName::IpAddress(ip)) => std::net::IpAddr::from(*ip).to_string(),
            Some(other) => format!("{other:?}"),
            None => "each request's authority".to_owned(),
        }
    }

    /// What `ringress check` prints of it, one line each: mode, SNI, trust, and the
    /// client certificate.
    pub(crate) fn describe(&self) -> Vec<String> {
        let sans = if self.settings.subject_alt_names.is_empty() {
            String::new()
        } else {
            format!(
                "; subjectAltNames {}",
                self.settings.subject_alt_names.join(", ")
            )
        };
        let mut lines = vec![format!(
            "tls {}; sni {}; CA {}{sans}",
            self.settings.mode.istio_name(),
            self.sni(),
            self.ca_source
        )];
        if let Some((source, leaf)) = &self.client_certificate {
            let leaf = leaf.as_ref().map(|leaf| {
                let expiry = if leaf.days_until_expiry < 0 {
                    format!("EXPIRED {} days ago", -leaf.days_until_expiry)
                } else {
                    format!("expires in {} days", leaf.days_until_expiry)
                };
                format!(": subject {}; {expiry}", leaf.subject)
            });
            lines.push(format!(
                "client certificate {source}{}",
                leaf.unwrap_or_default()
            ));
        }
        lines
    }
}

/// The host of an authority: without its `:port`, an IPv6 address without brackets.
fn authority_host(authority: &str) -> &str {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The system's CA store, as a root store.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let certs = native_roots().map_err(|detail| TlsError::ClientCa {
        what: "the system's roots (no caCertificates given)".to_owned(),
        detail,
    })?;
    let mut roots = RootCertStore::empty();
    let (_, _) = roots.add_parsable_certificates(certs);
    Ok(roots)
}

/// What an upstream's certificate must be: its chain verified by `chain` (`None`:
/// `insecureSkipVerify`, nothing verified), and its name one of `allowed` instead of
/// the SNI name when there are any. The handshake's signatures are always checked.
#[derive(Debug)]
struct UpstreamVerifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    allowed: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        let verified =
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        if self.allowed.is_empty() {
            return verified;
        }
        match verified {
            // webpki checks the name last: the chain and revocation passed.
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                if leaf_has_san(end_entity, &self.allowed) {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::InvalidCertificate(
                        CertificateError::ApplicationVerificationFailure,
                    ))
                }
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authority_s_host_is_the_server_name() {
        for (authority, host) in [
            ("httpbin.example.com", "httpbin.example.com"),
            ("httpbin.example.com:8443", "httpbin.example.com"),
            ("[::1]:8443", "::1"),
            ("[::1]", "::1"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("odd:", "odd:"),
        ] {
            assert_eq!(authority_host(authority), host, "{authority}");
        }
    }
}
