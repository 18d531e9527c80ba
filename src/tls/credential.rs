//! Loading a server's certificate chain and private key (and an optional client CA)
//! from PEM files or from a `credentialName` in `--secrets-dir`. Runs on the control
//! thread at load and reload, long before any connection is accepted; the result,
//! [`CertifiedMaterial`], is what `server_config` turns into a rustls `ServerConfig`.
//!
//! A credential directory uses the key names Kubernetes secrets have when kubelet mounts
//! them: `DIR/NAME/tls.crt` + `tls.key` (+ `ca.crt`) for a TLS secret, or
//! `DIR/NAME/cert` + `key` (+ `cacert`) for a generic one; `DIR/NAME-cacert/` may hold
//! the CA on its own, as Istio allows. Kubelet's atomic `..data` symlink swap needs
//! nothing special: every file is opened through its symlinks.

use std::fmt;
use std::io::Read;
use std::path::Path;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

#[cfg(test)]
use super::CertInfo;
use super::TlsError;
use super::cert_info;
use crate::config::model::Credential;

/// Largest PEM file ringress reads (a certificate chain, a key or a CA bundle; the
/// whole Mozilla root bundle is about 250 KiB).
pub(crate) const MAX_PEM_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// A certificate chain with its private key, ready to be served.
pub struct CertifiedMaterial {
    /// Leaf first, then the intermediates, as they are sent to clients.
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
    /// Where the material came from, for messages: the certificate path, or
    /// `credential NAME (DIR/NAME)`.
    pub(crate) source: String,
    /// The CA found next to a named credential (`ca.crt`, `cacert`, or in
    /// `NAME-cacert/`), used to verify client certificates when no `caCertificates`
    /// file is given.
    pub(crate) ca: Option<Vec<CertificateDer<'static>>>,
}

impl Clone for CertifiedMaterial {
    fn clone(&self) -> Self {
        CertifiedMaterial {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            source: self.source.clone(),
            ca: self.ca.clone(),
        }
    }
}

impl fmt::Debug for CertifiedMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedMaterial")
            .field("source", &self.source)
            .field("chain_len", &self.chain.len())
            .field("ca_len", &self.ca.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

impl CertifiedMaterial {
    /// The leaf certificate (the first of the chain).
    pub(crate) fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.chain.first()
    }

    /// Descriptions of the chain (leaf first).
    #[cfg(test)]
    pub(crate) fn describe_chain(&self) -> Result<Vec<CertInfo>, TlsError> {
        self.chain.iter().map(super::describe).collect()
    }

    /// Descriptions of the client CA that came with the credential, if any.
    #[cfg(test)]
    pub(crate) fn describe_ca(&self) -> Result<Vec<CertInfo>, TlsError> {
        self.ca.iter().flatten().map(super::describe).collect()
    }
}

/// Loads a server credential: a PEM certificate chain (leaf first; the whole chain is
/// kept so clients can verify through an intermediate) and its PEM private key
/// (PKCS#8, SEC1 or PKCS#1), checking that the key belongs to the leaf certificate.
/// Expiry is not checked here: an expired chain is still served, as Envoy does, so a late
/// rotation does not take a host down; `run` warns about it and `/certs` shows it.
pub fn load_credential(
    cred: &Credential,
    secrets_dir: Option<&Path>,
) -> Result<CertifiedMaterial, TlsError> {
    match cred {
        Credential::Files { cert, key } => load_pair(cert, key, cert.display().to_string(), None),
        Credential::Named(name) => {
            let Some(dir) = secrets_dir else {
                return Err(TlsError::NoSecretsDir { name: name.clone() });
            };
            load_named(name, dir)
        }
    }
}

/// The file names of one secret layout: certificate, key, CA.
const LAYOUTS: [(&str, &str, &str); 2] =
    [("tls.crt", "tls.key", "ca.crt"), ("cert", "key", "cacert")];

fn load_named(name: &str, secrets_dir: &Path) -> Result<CertifiedMaterial, TlsError> {
    let dir = secrets_dir.join(name);
    let source = format!("credential '{name}' ({})", dir.display());
    for (cert_name, key_name, ca_name) in LAYOUTS {
        let cert = dir.join(cert_name);
        let key = dir.join(key_name);
        match (cert.exists(), key.exists()) {
            (false, false) => continue,
            (true, false) => {
                return Err(TlsError::CredentialIncomplete {
                    name: name.to_owned(),
                    present: cert,
                    missing: key,
                });
            }
            (false, true) => {
                return Err(TlsError::CredentialIncomplete {
                    name: name.to_owned(),
                    present: key,
                    missing: cert,
                });
            }
            (true, true) => {
                let ca = find_ca(&dir, ca_name, &secrets_dir.join(format!("{name}-cacert")))?;
                return load_pair(&cert, &key, source, ca);
            }
        }
    }
    Err(TlsError::CredentialNotFound {
        name: name.to_owned(),
        dir,
    })
}

/// The CA of a named credential that needs no certificate of its own (an upstream's
/// SIMPLE TLS): `ca.crt` or `cacert` in `DIR/NAME/`, else in `DIR/NAME-cacert/`;
/// `None` when there is none.
pub(crate) fn load_named_ca(
    name: &str,
    secrets_dir: &Path,
) -> Result<Option<Vec<CertificateDer<'static>>>, TlsError> {
    let dir = secrets_dir.join(name);
    let cacert_dir = secrets_dir.join(format!("{name}-cacert"));
    for (_, _, ca_name) in LAYOUTS {
        if dir.join(ca_name).exists() {
            return find_ca(&dir, ca_name, &cacert_dir);
        }
    }
    find_ca(&dir, "ca.crt", &cacert_dir)
}

/// The CA of a named credential: `ca.crt` / `cacert` next to the certificate, else in
/// the `NAME-cacert` directory under either name.
fn find_ca(
    dir: &Path,
    ca_name: &str,
    cacert_dir: &Path,
) -> Result<Option<Vec<CertificateDer<'static>>>, TlsError> {
    let candidates = [
        dir.join(ca_name),
        cacert_dir.join("ca.crt"),
        cacert_dir.join("cacert"),
    ];
    for path in candidates {
        if !path.exists() {
            continue;
        }
        // cert-manager writes an empty `ca.crt` when it has no CA to give: no CA.
        let bytes = read_pem_file(&path)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        return parse_certificates(&path, &bytes).map(Some);
    }
    Ok(None)
}

fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    source: String,
    ca: Option<Vec<CertificateDer<'static>>>,
) -> Result<CertifiedMaterial, TlsError> {
    let chain = load_certificates(cert_path)?;
    let key = load_private_key(key_path)?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    };
    // Parsed with x509-parser, not webpki: an X.509 v1 or CA:TRUE server certificate
    // (as the walkthroughs' `openssl x509 -req` makes) is served, with a warning
    // (`cert_info::warnings`); clients decide whether to accept it.
    let spki = cert_info::public_key_info(leaf).map_err(|detail| TlsError::BadCertificate {
        what: format!("the first certificate of {}", cert_path.display()),
        detail,
    })?;
    check_key_matches(&spki, &key, key_path, cert_path)?;
    Ok(CertifiedMaterial {
        chain,
        key,
        source,
        ca,
    })
}

/// The system's CA certificates (or `SSL_CERT_FILE`'s, `SSL_CERT_DIR`'s, as curl and
/// openssl read them); an error saying how to get some when there are none.
pub(crate) fn native_roots() -> Result<Vec<CertificateDer<'static>>, String> {
    let native = rustls_native_certs::load_native_certs();
    if native.certs.is_empty() {
        let why = native
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(format!(
            "no trusted CA certificates found (install ca-certificates, or set SSL_CERT_FILE){why}"
        ));
    }
    Ok(native.certs)
}

/// The crypto provider every ringress TLS object uses.
pub(crate) fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// Loads the key with the crypto provider (which knows which algorithms it can sign
/// with) and compares its public key with the leaf certificate's (`spki`).
fn check_key_matches(
    spki: &[u8],
    key: &PrivateKeyDer<'static>,
    key_path: &Path,
    cert_path: &Path,
) -> Result<(), TlsError> {
    let signing_key = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::UnsupportedKey {
            path: key_path.to_owned(),
            detail: e.to_string(),
        })?;
    match signing_key.public_key() {
        Some(public) if public.as_ref() != spki => Err(TlsError::KeyMismatch {
            key: key_path.to_owned(),
            cert: cert_path.to_owned(),
        }),
        // A key type whose public key the provider cannot state is checked by the
        // first handshake instead.
        _ => Ok(()),
    }
}

/// Reads a whole PEM file, following symlinks, refusing files over
/// [`MAX_PEM_FILE_BYTES`].
fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_err = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if size > MAX_PEM_FILE_BYTES {
        return Err(TlsError::FileTooLarge {
            path: path.to_owned(),
            size,
            limit: MAX_PEM_FILE_BYTES,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // Read at most one byte past the limit: the file may grow after `metadata`.
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(TlsError::FileTooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            limit: MAX_PEM_FILE_BYTES,
        });
    }
    Ok(bytes)
}

fn pem_error(path: &Path, e: pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

/// All `X509 CRL` blocks of a PEM file (`caCrl`); at least one.
pub(crate) fn load_crls(
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read_pem_file(path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if crls.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            detail: "no X509 CRL block found".to_owned(),
        });
    }
    Ok(crls)
}

/// All `CERTIFICATE` blocks of a PEM file, in file order; at least one.
pub(crate) fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certificates(path, &read_pem_file(path)?)
}

fn parse_certificates(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
pub(crate) fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem_file(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            if contains(&bytes, b"ENCRYPTED PRIVATE KEY")
                || contains(&bytes, b"Proc-Type: 4,ENCRYPTED")
            {
                Err(TlsError::EncryptedKey {
                    path: path.to_owned(),
                })
            } else {
                Err(TlsError::NoKey {
                    path: path.to_owned(),
                })
            }
        }
        Err(e) => Err(pem_error(path, e)),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
