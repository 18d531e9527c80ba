//! Why a TLS handshake failed, as an operator reads it: one of a few reasons (counted
//! per shard in `ringress_tls_handshake_failures_total`) and, for the failures that
//! are a known misconfiguration, what to do about it. Shards log each failure at
//! `info`, at most once a second (`shard::LogLimit`).

use rustls::{AlertDescription, CertificateError, Error};

/// The reasons a handshake fails, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    /// The ClientHello named a host no server on the port serves.
    UnknownServerName,
    /// The ClientHello could not be read.
    BadClientHello,
    /// No TLS version, cipher suite, key exchange or signature scheme in common.
    NoSharedParameters,
    /// A MUTUAL server got no client certificate.
    ClientCertificateMissing,
    /// The client certificate did not verify (issuer, expiry, v1, revoked, SAN).
    ClientCertificateRejected,
    /// The client ended the handshake with an alert (it refused our certificate).
    ClientAlert,
    /// Malformed or misplaced messages.
    ProtocolError,
    /// The handshake did not complete within the header timeout.
    Timeout,
    /// The client closed the connection during the handshake.
    Closed,
}

impl HandshakeFailure {
    pub(crate) const ALL: [HandshakeFailure; 9] = [
        HandshakeFailure::UnknownServerName,
        HandshakeFailure::BadClientHello,
        HandshakeFailure::NoSharedParameters,
        HandshakeFailure::ClientCertificateMissing,
        HandshakeFailure::ClientCertificateRejected,
        HandshakeFailure::ClientAlert,
        HandshakeFailure::ProtocolError,
        HandshakeFailure::Timeout,
        HandshakeFailure::Closed,
    ];

    /// The metric label and log field.
    pub(crate) fn label(self) -> &'static str {
        match self {
            HandshakeFailure::UnknownServerName => "unknown_server_name",
            HandshakeFailure::BadClientHello => "bad_client_hello",
            HandshakeFailure::NoSharedParameters => "no_shared_parameters",
            HandshakeFailure::ClientCertificateMissing => "client_certificate_missing",
            HandshakeFailure::ClientCertificateRejected => "client_certificate_rejected",
            HandshakeFailure::ClientAlert => "client_alert",
            HandshakeFailure::ProtocolError => "protocol_error",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Closed => "closed",
        }
    }

    /// The reason rustls' `error` stands for.
    pub(crate) fn of(error: &Error) -> HandshakeFailure {
        match error {
            Error::PeerIncompatible(_) => HandshakeFailure::NoSharedParameters,
            Error::NoCertificatesPresented => HandshakeFailure::ClientCertificateMissing,
            Error::InvalidCertificate(_) | Error::InvalidCertRevocationList(_) => {
                HandshakeFailure::ClientCertificateRejected
            }
            Error::AlertReceived(_) => HandshakeFailure::ClientAlert,
            _ => HandshakeFailure::ProtocolError,
        }
    }
}

/// What the operator can do about `error`, when it is a known misconfiguration.
pub(crate) fn advice(error: &Error) -> Option<&'static str> {
    match error {
        Error::InvalidCertificate(CertificateError::Other(other))
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::UnsupportedCertVersion)
            ) =>
        {
            Some(
                "the client certificate is X.509 v1 (as `openssl x509 -req` makes without -extfile): it carries no extensions and cannot be verified; reissue it as v3, e.g. `openssl x509 -req ... -extfile <(printf 'basicConstraints=CA:FALSE\\nkeyUsage=digitalSignature\\nextendedKeyUsage=clientAuth')`",
            )
        }
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => Some(
            "the client certificate is not issued by a CA in the server's caCertificates (or its credential's ca.crt)",
        ),
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => Some("the client certificate has expired"),
        Error::NoCertificatesPresented => Some(
            "the server's tls.mode is MUTUAL and the client sent no certificate (curl: --cert and --key)",
        ),
        Error::AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown,
        ) => Some(
            "the client does not trust the server's certificate: its CA is not in the client's trust store, or the certificate does not name the host the client asked for",
        ),
        Error::PeerIncompatible(_) => Some(
            "the client and this server share no TLS version, cipher suite or key exchange (see the server's tls.minProtocolVersion, maxProtocolVersion, cipherSuites)",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn failures_are_classified_and_v1_client_certificates_explained() {
        let v1 = Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
            webpki::Error::UnsupportedCertVersion,
        ))));
        assert_eq!(
            HandshakeFailure::of(&v1),
            HandshakeFailure::ClientCertificateRejected
        );
        assert!(advice(&v1).is_some_and(|a| a.contains("X.509 v1") && a.contains("-extfile")));
        assert_eq!(
            HandshakeFailure::of(&Error::NoCertificatesPresented),
            HandshakeFailure::ClientCertificateMissing
        );
        let alert = Error::AlertReceived(AlertDescription::UnknownCA);
        assert_eq!(HandshakeFailure::of(&alert), HandshakeFailure::ClientAlert);
        assert!(advice(&alert).is_some());
        let labels: std::collections::HashSet<_> =
            HandshakeFailure::ALL.iter().map(|f| f.label()).collect();
        assert_eq!(labels.len(), HandshakeFailure::ALL.len());
    }
}
