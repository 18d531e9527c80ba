//! The raw types of a DestinationRule's upstream TLS settings (`trafficPolicy.tls`,
//! Istio's `ClientTLSSettings`) and of `trafficPolicy.portLevelSettings[]`, as written
//! in the YAML file. A port-level entry is read into the same [`FileTrafficPolicy`] as
//! the top level ([`FilePortTrafficPolicy::into_policy`]), so one function validates
//! both.

use serde::Deserialize;

use super::file::{FileConnectionPool, FileLoadBalancer, FileTrafficPolicy};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileClientTls {
    pub(crate) mode: Option<String>,
    #[serde(rename = "clientCertificate")]
    pub(crate) client_certificate: Option<String>,
    #[serde(rename = "privateKey")]
    pub(crate) private_key: Option<String>,
    #[serde(rename = "caCertificates")]
    pub(crate) ca_certificates: Option<String>,
    #[serde(rename = "credentialName")]
    pub(crate) credential_name: Option<String>,
    #[serde(rename = "subjectAltNames", default)]
    pub(crate) subject_alt_names: Vec<String>,
    pub(crate) sni: Option<String>,
    #[serde(rename = "insecureSkipVerify")]
    pub(crate) insecure_skip_verify: Option<bool>,
    #[serde(rename = "caCrl")]
    pub(crate) ca_crl: Option<String>,
}

/// `portLevelSettings[]`: Istio's `PortTrafficPolicy`, the fields of a
/// `trafficPolicy` that may differ per port. A field added to [`FileTrafficPolicy`]
/// that Istio allows per port belongs here too, and in [`Self::into_policy`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePortTrafficPolicy {
    pub(crate) port: Option<FilePortSelector>,
    #[serde(rename = "loadBalancer")]
    pub(crate) load_balancer: Option<FileLoadBalancer>,
    #[serde(rename = "connectionPool")]
    pub(crate) connection_pool: Option<FileConnectionPool>,
    pub(crate) tls: Option<FileClientTls>,
    #[serde(rename = "outlierDetection")]
    pub(crate) outlier_detection: Option<super::file_lb::FileOutlierDetection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePortSelector {
    pub(crate) number: Option<i64>,
}

impl FilePortTrafficPolicy {
    /// The port selector, and the settings as a top-level policy would hold them.
    pub(crate) fn into_policy(self) -> (Option<FilePortSelector>, FileTrafficPolicy) {
        let policy = FileTrafficPolicy {
            load_balancer: self.load_balancer,
            connection_pool: self.connection_pool,
            tls: self.tls,
            outlier_detection: self.outlier_detection,
            port_level_settings: None,
        };
        (self.port, policy)
    }
}
