//! Human-readable descriptions of loaded certificates (subject, names, serial number,
//! expiry) for `ringress check` and the admin endpoint's `/certs`. Control thread only;
//! nothing here is on the path of a connection.

use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use super::TlsError;

const SECONDS_PER_DAY: i64 = 24 * 60 * 60;

/// What an operator wants to know about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertInfo {
    /// The subject distinguished name, `CN=httpbin.example.com, O=...`.
    pub(crate) subject: String,
    /// Subject alternative names: DNS names as written, IP addresses, `URI:...`,
    /// `email:...`.
    pub(crate) sans: Vec<String>,
    /// The DNS, URI and IP address names, in that order (Envoy's `/certs` lists
    /// `subject_alt_names` so).
    pub(crate) typed_sans: Vec<San>,
    /// The serial number in lower-case hex without separators.
    pub(crate) serial: String,
    pub(crate) not_after_unix: i64,
    /// Whole days left until `not_after` (negative once expired), as Envoy's
    /// `days_until_expiration`.
    pub(crate) days_until_expiry: i64,
    pub(crate) not_before_unix: i64,
    /// What a client may object to, each with the way to reissue the certificate
    /// ([`warnings`]); empty for a well-formed server certificate.
    pub(crate) warnings: Vec<String>,
}

/// A subjectAltName of one of the kinds Envoy's `/certs` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum San {
    Dns(String),
    Uri(String),
    IpAddress(String),
}

impl San {
    fn rank(&self) -> u8 {
        match self {
            San::Dns(_) => 0,
            San::Uri(_) => 1,
            San::IpAddress(_) => 2,
        }
    }
}

/// Describes a certificate as of now.
pub fn describe(cert: &CertificateDer<'_>) -> Result<CertInfo, TlsError> {
    describe_at(cert, now_unix())
}

/// Describes a certificate as of `now_unix` (seconds since the Unix epoch).
pub(crate) fn describe_at(cert: &CertificateDer<'_>, now_unix: i64) -> Result<CertInfo, TlsError> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| TlsError::BadCertificate {
            what: "certificate to describe".to_owned(),
            detail: e.to_string(),
        })?;
    let mut sans = Vec::new();
    let mut typed_sans = Vec::new();
    if let Ok(Some(ext)) = parsed.subject_alternative_name() {
        for name in &ext.value.general_names {
            sans.push(general_name(name));
            match name {
                GeneralName::DNSName(d) => typed_sans.push(San::Dns((*d).to_owned())),
                GeneralName::URI(u) => typed_sans.push(San::Uri((*u).to_owned())),
                GeneralName::IPAddress(ip) => typed_sans.push(San::IpAddress(ip_string(ip))),
                _ => {}
            }
        }
    }
    typed_sans.sort_by_key(San::rank);
    let serial = parsed
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let not_after_unix = parsed.validity().not_after.timestamp();
    Ok(CertInfo {
        subject: parsed.subject().to_string(),
        sans,
        typed_sans,
        serial,
        not_after_unix,
        days_until_expiry: (not_after_unix - now_unix).div_euclid(SECONDS_PER_DAY),
        not_before_unix: parsed.validity().not_before.timestamp(),
        warnings: warnings(&parsed),
    })
}

/// The fix named in certificate warnings.
const REISSUE: &str = "reissue it as an X.509 v3 certificate with the names in a subjectAltName, e.g. `openssl req ... -addext subjectAltName=DNS:<host>` or `openssl x509 -req ... -extfile <(printf 'subjectAltName=DNS:<host>')`";

/// What clients may object to in a server certificate that ringress serves anyway
/// (curl and OpenSSL accept each): no subjectAltName (the subject CN then names the
/// host, which browsers, Go and Envoy refuse), X.509 v1 (no extensions at all), a CA
/// certificate (basicConstraints CA:TRUE) used as the server's own.
pub(crate) fn warnings(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let mut found = Vec::new();
    if cert.version() == x509_parser::x509::X509Version::V1 {
        found.push(format!(
            "an X.509 v1 certificate (it can carry no subjectAltName or other extension): {REISSUE}"
        ));
    } else if !dns_or_ip_sans(cert) {
        found.push(format!("no subjectAltName: the subject CN names the host, which curl and OpenSSL accept but browsers, Go and Envoy do not; {REISSUE}"));
    }
    if cert.is_ca() {
        found.push(format!("a CA certificate (basicConstraints CA:TRUE) used as a server certificate: clients built on webpki or Go refuse it; {REISSUE} and without CA:TRUE"));
    }
    found
}

/// Whether `cert` has a DNS or IP address subjectAltName.
fn dns_or_ip_sans(cert: &x509_parser::certificate::X509Certificate<'_>) -> bool {
    matches!(cert.subject_alternative_name(), Ok(Some(ext))
        if ext.value.general_names.iter().any(|n| matches!(n, GeneralName::DNSName(_) | GeneralName::IPAddress(_))))
}

/// The host names and addresses a server certificate is valid for, as a client that
/// falls back to the subject CN decides (curl, OpenSSL; RFC 6125 6.4.4): its DNS and
/// IP subjectAltNames, or its subject common names when it has neither. Names are
/// lower-cased.
pub(crate) fn server_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(ext)) = parsed.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => names.push(ip_string(bytes)),
                _ => {}
            }
        }
    }
    if names.is_empty() {
        names.extend(
            parsed
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok(names)
}

/// The SubjectPublicKeyInfo of a certificate, DER, as written in it.
pub(crate) fn public_key_info(cert: &CertificateDer<'_>) -> Result<Vec<u8>, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| e.to_string())?;
    Ok(parsed.public_key().raw.to_vec())
}

fn general_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(d) => (*d).to_owned(),
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        GeneralName::IPAddress(bytes) => ip_string(bytes),
        other => other.to_string(),
    }
}

pub(crate) fn ip_string(bytes: &[u8]) -> String {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return std::net::Ipv4Addr::from(v4).to_string();
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return std::net::Ipv6Addr::from(v6).to_string();
    }
    format!("IP:{bytes:02x?}")
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The names a certificate is valid for, for messages (`a.example.com, *.example.com`).
pub(crate) fn names_for_message(cert: &CertificateDer<'_>) -> String {
    match describe(cert) {
        Ok(info) if !info.sans.is_empty() => info.sans.join(", "),
        Ok(info) => format!("no subjectAltName; subject {}", info.subject),
        Err(_) => "unparsable certificate".to_owned(),
    }
}
