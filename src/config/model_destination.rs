//! A DestinationRule's `trafficPolicy` as the upstream module uses it: the top-level
//! policy and each `portLevelSettings[]` entry are the same [`TrafficPolicy`], and a
//! cluster on a port gets [`TrafficPolicy::overridden_by`] of the two, as Istio's
//! `MergeTrafficPolicy` does (a field the port sets replaces the whole top-level field;
//! nothing is merged inside a field). Also the upstream TLS settings
//! (`trafficPolicy.tls`, Istio's `ClientTLSSettings`).

use std::path::PathBuf;

use super::model::ConnectionPool;
use super::model_lb::{Balancing, OutlierDetection};

/// One `trafficPolicy` (a DestinationRule's, a subset's, or a `portLevelSettings[]`
/// entry): `None` where it says nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrafficPolicy {
    /// `loadBalancer` (`simple` or `consistentHash`)
    pub load_balancer: Option<Balancing>,
    /// `connectionPool`
    pub connection_pool: Option<ConnectionPool>,
    /// `outlierDetection`
    pub outlier_detection: Option<OutlierDetection>,
    /// `tls`
    pub tls: Option<ClientTls>,
}

impl TrafficPolicy {
    /// This policy with the fields `over` sets (a port's, a subset's) replacing its
    /// own, whole.
    pub fn overridden_by(&self, over: &TrafficPolicy) -> TrafficPolicy {
        TrafficPolicy {
            load_balancer: over
                .load_balancer
                .clone()
                .or_else(|| self.load_balancer.clone()),
            connection_pool: over.connection_pool.or(self.connection_pool),
            outlier_detection: over.outlier_detection.or(self.outlier_detection),
            tls: over.tls.clone().or_else(|| self.tls.clone()),
        }
    }
}

/// A `portLevelSettings[]` entry: the policy of one service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortTrafficPolicy {
    /// `port.number`
    pub port: u16,
    pub policy: TrafficPolicy,
}

/// `tls.mode` (ISTIO_MUTUAL needs a mesh and is refused at load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTlsMode {
    /// `DISABLE`: plain TCP (also how a port-level setting turns TLS off).
    Disable,
    /// `SIMPLE`: TLS, the upstream's certificate verified.
    Simple,
    /// `MUTUAL`: TLS with a client certificate.
    Mutual,
}

impl ClientTlsMode {
    /// The name Istio's manifests use.
    pub fn istio_name(self) -> &'static str {
        match self {
            ClientTlsMode::Disable => "DISABLE",
            ClientTlsMode::Simple => "SIMPLE",
            ClientTlsMode::Mutual => "MUTUAL",
        }
    }
}

/// Where the client certificate and the CA of an upstream TLS setting come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientCredential {
    /// File paths (made absolute): `clientCertificate` + `privateKey` (MUTUAL only)
    /// and `caCertificates` (`None`: the system's roots).
    Files {
        cert_and_key: Option<(PathBuf, PathBuf)>,
        ca: Option<PathBuf>,
    },
    /// `credentialName`: `--secrets-dir/NAME/` (`tls.crt`, `tls.key` for MUTUAL;
    /// `ca.crt`, or the system's roots without one).
    Named(String),
}

/// `trafficPolicy.tls`: how connections to the upstream are secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    pub mode: ClientTlsMode,
    pub credential: ClientCredential,
    /// `caCrl`: revocation lists checked against the upstream's chain.
    pub ca_crl: Option<PathBuf>,
    /// `sni`: the server name sent; `None` means the destination host.
    pub sni: Option<String>,
    /// `subjectAltNames`: names one of which the upstream's certificate must carry
    /// (instead of the SNI name); empty means the SNI name.
    pub subject_alt_names: Vec<String>,
    /// `insecureSkipVerify`: the upstream's certificate is not verified at all.
    pub insecure_skip_verify: bool,
}
