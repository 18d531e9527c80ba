//! Errors of the TLS layer: everything that can go wrong while the control thread loads
//! certificates and keys, builds rustls server configurations or compiles an SNI map.
//! Each message names the file, credential, host or config value at fault, because it
//! is printed as-is by `ringress check` and logged when a reload is refused.

use std::path::PathBuf;

/// What went wrong while preparing TLS for a Gateway server.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is {size} bytes, more than the {limit} bytes allowed for a PEM file", path.display())]
    FileTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },

    #[error("{}: malformed PEM: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },

    #[error("{}: no certificate found (expected a PEM block 'BEGIN CERTIFICATE')", path.display())]
    NoCertificate { path: PathBuf },

    #[error(
        "{}: no private key found (expected a PEM block 'BEGIN PRIVATE KEY' (PKCS#8), \
         'BEGIN EC PRIVATE KEY' (SEC1) or 'BEGIN RSA PRIVATE KEY' (PKCS#1))",
        path.display()
    )]
    NoKey { path: PathBuf },

    #[error("{}: the private key is encrypted; ringress needs an unencrypted key", path.display())]
    EncryptedKey { path: PathBuf },

    #[error("{}: unsupported private key: {detail}", path.display())]
    UnsupportedKey { path: PathBuf, detail: String },

    #[error(
        "the private key in {} does not match the certificate in {} (the key's public key \
         differs from the leaf certificate's)",
        key.display(),
        cert.display()
    )]
    KeyMismatch { key: PathBuf, cert: PathBuf },

    #[error("{what}: invalid certificate: {detail}")]
    BadCertificate { what: String, detail: String },

    #[error(
        "credentialName '{name}' needs --secrets-dir: credentials are read from \
         DIR/{name}/ (tls.crt + tls.key, or cert + key)"
    )]
    NoSecretsDir { name: String },

    #[error(
        "credentialName '{name}': {} holds neither tls.crt + tls.key nor cert + key",
        dir.display()
    )]
    CredentialNotFound { name: String, dir: PathBuf },

    #[error("credentialName '{name}': {} exists but {} is missing", present.display(), missing.display())]
    CredentialIncomplete {
        name: String,
        present: PathBuf,
        missing: PathBuf,
    },

    #[error(
        "the certificate from {source_name} is not valid for host '{host}' (its names: {sans})"
    )]
    NotCovered {
        source_name: String,
        host: String,
        sans: String,
    },

    #[error("cipherSuites: unknown cipher suite '{name}'")]
    UnknownCipherSuite { name: String },

    #[error("cipherSuites: '{name}' is not supported: {reason}")]
    UnsupportedCipherSuite { name: String, reason: &'static str },

    #[error(
        "cipherSuites: none of the TLS 1.2 suites {suites:?} can be used with the {key_kind} key \
         of {source_name}, and TLS 1.3 is disabled"
    )]
    NoUsableSuite {
        suites: Vec<String>,
        key_kind: String,
        source_name: String,
    },

    #[error("minProtocolVersion {min} is above maxProtocolVersion {max}")]
    VersionRange {
        min: &'static str,
        max: &'static str,
    },

    #[error(
        "tls.mode {mode} for {source_name} needs client CA certificates: set caCertificates, \
         or put ca.crt (or cacert) in the credential or a '-cacert' credential"
    )]
    MissingClientCa {
        mode: &'static str,
        source_name: String,
    },

    #[error("client CA certificates from {what}: {detail}")]
    ClientCa { what: String, detail: String },

    #[error("building the TLS configuration for {source_name}: {source}")]
    Rustls {
        source_name: String,
        #[source]
        source: rustls::Error,
    },

    #[error("creating the session ticket key: {0}")]
    Ticketer(#[source] rustls::Error),

    #[error(transparent)]
    TicketKeys(#[from] super::ticket_keys::TicketKeyError),

    #[error(
        "host '{host}' is served by two servers on one port (server {first} and server {second})"
    )]
    DuplicateHost {
        host: String,
        first: usize,
        second: usize,
    },
}
