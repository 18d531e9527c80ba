//! The verified client identity of a mutual-TLS connection, as the
//! `x-forwarded-client-cert` header carries it to the upstream.
//!
//! The value uses Envoy's element format, which Istio's upstream services already parse:
//! `Hash=<hex SHA-256 of the leaf DER>;Subject="<subject DN>";URI=<uri SAN>;DNS=<dns SAN>`
//! (one `URI=`/`DNS=` element per name). It is built only from a chain rustls has
//! verified, once per connection, on the shard that owns it.

use std::fmt::Write as _;

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use super::TlsError;

/// The `x-forwarded-client-cert` value for a verified client leaf certificate.
pub(crate) fn forwarded_client_cert(leaf: &CertificateDer<'_>) -> Result<String, TlsError> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::BadCertificate {
            what: "client certificate".to_owned(),
            detail: e.to_string(),
        })?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref());
    let mut value = String::with_capacity(160);
    value.push_str("Hash=");
    for byte in digest.as_ref() {
        let _ = write!(value, "{byte:02x}");
    }
    value.push_str(";Subject=\"");
    push_escaped(&mut value, &parsed.subject().to_string());
    value.push('"');
    if let Ok(Some(ext)) = parsed.subject_alternative_name() {
        for name in &ext.value.general_names {
            let (key, name) = match name {
                GeneralName::URI(uri) => ("URI", *uri),
                GeneralName::DNSName(dns) => ("DNS", *dns),
                _ => continue,
            };
            if is_safe_element(name) {
                let _ = write!(value, ";{key}={name}");
            }
        }
    }
    Ok(value)
}

/// Escapes a quoted element value: `"` and `\` get a backslash; control characters,
/// which could never be sent in a header, are dropped.
fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
}

/// A SAN may be written unquoted only if it cannot break the element syntax or the
/// header: no separators, quotes, spaces or control characters.
fn is_safe_element(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, ';' | ',' | '"' | '\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(sans: &[&str], cn: &str) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn hash_subject_and_sans_in_envoy_format() {
        let cert = leaf(&["client.example.com"], "client.example.com");
        let value = forwarded_client_cert(&cert).expect("value");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            value,
            format!("Hash={hex};Subject=\"CN=client.example.com\";DNS=client.example.com")
        );
    }

    #[test]
    fn quotes_in_the_subject_are_escaped() {
        let cert = leaf(&["a.example.com"], "evil\";URI=spiffe://x");
        let value = forwarded_client_cert(&cert).expect("value");
        assert!(
            value.contains(r#"Subject="CN=evil\";URI=spiffe://x""#),
            "{value}"
        );
        assert_eq!(value.matches(";URI=").count(), 1, "{value}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let err = forwarded_client_cert(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]));
        assert!(err.is_err());
    }
}
