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
pub struct CertInfo {
    /// The subject distinguished name, `CN=httpbin.example.com, O=...`.
    pub subject: String,
    /// Subject alternative names: DNS names as written, IP addresses, `URI:...`,
    /// `email:...`.
    pub sans: Vec<String>,
    /// The serial number in lower-case hex without separators.
    pub serial: String,
    pub not_after_unix: i64,
    /// Whole days left until `not_after` (negative once expired), as Envoy's
    /// `days_until_expiration`.
    pub days_until_expiry: i64,
}

/// Describes a certificate as of now.
pub fn describe(cert: &CertificateDer<'_>) -> Result<CertInfo, TlsError> {
    describe_at(cert, now_unix())
}

/// Describes a certificate as of `now_unix` (seconds since the Unix epoch).
pub fn describe_at(cert: &CertificateDer<'_>, now_unix: i64) -> Result<CertInfo, TlsError> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| TlsError::BadCertificate {
            what: "certificate to describe".to_owned(),
            detail: e.to_string(),
        })?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = parsed.subject_alternative_name() {
        for name in &ext.value.general_names {
            sans.push(general_name(name));
        }
    }
    let serial = parsed
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let not_after_unix = parsed.validity().not_after.timestamp();
    Ok(CertInfo {
        subject: parsed.subject().to_string(),
        sans,
        serial,
        not_after_unix,
        days_until_expiry: (not_after_unix - now_unix).div_euclid(SECONDS_PER_DAY),
    })
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
