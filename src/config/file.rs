//! The raw configuration types: one struct per Istio object as it is written in the
//! YAML file, with Istio's camelCase field names and no checks beyond the shape of the
//! data. `validate.rs` turns them into the `model` types. Each struct's
//! [`field_policy`] lists the Istio fields it accepts and ignores and the ones ringress
//! does not implement yet; any other unknown field is an error.
//!
//! Enumerations (TLS mode, protocol, resolution) stay strings here so that validation
//! can tell "not implemented by ringress yet" apart from "not an Istio value".

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::yaml::FieldPolicy;

/// `apiVersion`, `kind`, `metadata` of every document; `spec` is read by kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHeader {
    #[serde(rename = "apiVersion")]
    pub(crate) api_version: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) metadata: Option<FileMetadata>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileMetadata {
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
}

/// A mapping whose entries keep the order they were written in (`headers.set`,
/// `match[].headers`, `endpoints[].ports`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ordered<T>(pub Vec<(String, T)>);

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OrderedVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OrderedVisitor<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, T>()? {
                    entries.push((k, v));
                }
                Ok(Ordered(entries))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Ordered(Vec::new()))
            }
        }
        d.deserialize_map(OrderedVisitor(std::marker::PhantomData))
    }
}

// ---------------------------------------------------------------------------------------
// Gateway

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileGatewaySpec {
    #[serde(default)]
    pub(crate) servers: Vec<FileServer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileServer {
    pub(crate) port: Option<FileServerPort>,
    pub(crate) bind: Option<String>,
    #[serde(default)]
    pub(crate) hosts: Vec<String>,
    pub(crate) tls: Option<FileServerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileServerPort {
    pub(crate) number: Option<i64>,
    pub(crate) name: Option<String>,
    pub(crate) protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileServerTls {
    #[serde(rename = "httpsRedirect")]
    pub(crate) https_redirect: Option<bool>,
    pub(crate) mode: Option<String>,
    #[serde(rename = "serverCertificate")]
    pub(crate) server_certificate: Option<String>,
    #[serde(rename = "privateKey")]
    pub(crate) private_key: Option<String>,
    #[serde(rename = "caCertificates")]
    pub(crate) ca_certificates: Option<String>,
    #[serde(rename = "caCrl")]
    pub(crate) ca_crl: Option<String>,
    #[serde(rename = "credentialName")]
    pub(crate) credential_name: Option<String>,
    #[serde(rename = "subjectAltNames", default)]
    pub(crate) subject_alt_names: Vec<String>,
    #[serde(rename = "minProtocolVersion")]
    pub(crate) min_protocol_version: Option<String>,
    #[serde(rename = "maxProtocolVersion")]
    pub(crate) max_protocol_version: Option<String>,
    #[serde(rename = "cipherSuites", default)]
    pub(crate) cipher_suites: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// VirtualService

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileVirtualServiceSpec {
    #[serde(default)]
    pub(crate) hosts: Vec<String>,
    /// `None` when absent: Istio then applies the service to the mesh only.
    pub(crate) gateways: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) http: Vec<FileHttpRoute>,
    #[serde(default)]
    pub(crate) tls: Vec<super::file_l4::FileL4Route>,
    #[serde(default)]
    pub(crate) tcp: Vec<super::file_l4::FileL4Route>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHttpRoute {
    pub(crate) name: Option<String>,
    #[serde(rename = "match", default)]
    pub(crate) matches: Vec<FileHttpMatch>,
    pub(crate) route: Option<Vec<FileRouteDestination>>,
    pub(crate) redirect: Option<FileRedirect>,
    #[serde(rename = "directResponse")]
    pub(crate) direct_response: Option<FileDirectResponse>,
    pub(crate) rewrite: Option<FileRewrite>,
    pub(crate) timeout: Option<String>,
    pub(crate) retries: Option<FileRetries>,
    pub(crate) headers: Option<FileHeaders>,
    #[serde(rename = "corsPolicy")]
    pub(crate) cors_policy: Option<super::file_traffic::FileCorsPolicy>,
    pub(crate) fault: Option<super::file_traffic::FileFault>,
    pub(crate) mirror: Option<FileDestination>,
    #[serde(rename = "mirrorPercentage")]
    pub(crate) mirror_percentage: Option<super::file_traffic::FilePercent>,
    /// Deprecated: an integer percentage.
    #[serde(rename = "mirrorPercent", alias = "mirror_percent")]
    pub(crate) mirror_percent: Option<i64>,
    pub(crate) mirrors: Option<Vec<super::file_traffic::FileMirrorPolicy>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHttpMatch {
    pub(crate) name: Option<String>,
    pub(crate) uri: Option<FileStringMatch>,
    pub(crate) scheme: Option<FileStringMatch>,
    pub(crate) method: Option<FileStringMatch>,
    pub(crate) authority: Option<FileStringMatch>,
    #[serde(default)]
    pub(crate) headers: Ordered<FileStringMatch>,
    #[serde(rename = "withoutHeaders", default)]
    pub(crate) without_headers: Ordered<FileStringMatch>,
    #[serde(rename = "queryParams", default)]
    pub(crate) query_params: Ordered<FileStringMatch>,
    pub(crate) port: Option<i64>,
    pub(crate) gateways: Option<Vec<String>>,
    #[serde(rename = "ignoreUriCase")]
    pub(crate) ignore_uri_case: Option<bool>,
}

/// Istio's `StringMatch`: exactly one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileStringMatch {
    pub(crate) exact: Option<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRouteDestination {
    pub(crate) destination: Option<FileDestination>,
    pub(crate) weight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileDestination {
    pub(crate) host: Option<String>,
    pub(crate) subset: Option<String>,
    pub(crate) port: Option<FilePortSelector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePortSelector {
    pub(crate) number: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRedirect {
    pub(crate) uri: Option<String>,
    pub(crate) authority: Option<String>,
    pub(crate) scheme: Option<String>,
    pub(crate) port: Option<i64>,
    #[serde(rename = "redirectCode")]
    pub(crate) redirect_code: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileDirectResponse {
    pub(crate) status: Option<i64>,
    pub(crate) body: Option<FileResponseBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileResponseBody {
    pub(crate) string: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRewrite {
    pub(crate) uri: Option<String>,
    pub(crate) authority: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRetries {
    pub(crate) attempts: Option<i64>,
    #[serde(rename = "perTryTimeout")]
    pub(crate) per_try_timeout: Option<String>,
    #[serde(rename = "retryOn")]
    pub(crate) retry_on: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHeaders {
    pub(crate) request: Option<FileHeaderOperations>,
    pub(crate) response: Option<FileHeaderOperations>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHeaderOperations {
    #[serde(default)]
    pub(crate) set: Ordered<String>,
    #[serde(default)]
    pub(crate) add: Ordered<String>,
    #[serde(default)]
    pub(crate) remove: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// ServiceEntry

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileServiceEntrySpec {
    #[serde(default)]
    pub(crate) hosts: Vec<String>,
    #[serde(default)]
    pub(crate) ports: Vec<FileServicePort>,
    pub(crate) resolution: Option<String>,
    #[serde(default)]
    pub(crate) endpoints: Vec<FileWorkloadEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileServicePort {
    pub(crate) number: Option<i64>,
    pub(crate) name: Option<String>,
    pub(crate) protocol: Option<String>,
    #[serde(rename = "targetPort")]
    pub(crate) target_port: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileWorkloadEntry {
    pub(crate) address: Option<String>,
    #[serde(default)]
    pub(crate) ports: Ordered<i64>,
    pub(crate) weight: Option<i64>,
    /// Matched by DestinationRule `subsets[].labels`.
    #[serde(default)]
    pub(crate) labels: Ordered<String>,
}

// ---------------------------------------------------------------------------------------
// DestinationRule

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileDestinationRuleSpec {
    pub(crate) host: Option<String>,
    #[serde(rename = "trafficPolicy")]
    pub(crate) traffic_policy: Option<FileTrafficPolicy>,
    #[serde(default)]
    pub(crate) subsets: Vec<super::file_lb::FileSubset>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTrafficPolicy {
    #[serde(rename = "loadBalancer")]
    pub(crate) load_balancer: Option<FileLoadBalancer>,
    #[serde(rename = "connectionPool")]
    pub(crate) connection_pool: Option<FileConnectionPool>,
    pub(crate) tls: Option<super::file_destination::FileClientTls>,
    #[serde(rename = "portLevelSettings")]
    pub(crate) port_level_settings: Option<Vec<super::file_destination::FilePortTrafficPolicy>>,
    #[serde(rename = "outlierDetection")]
    pub(crate) outlier_detection: Option<super::file_lb::FileOutlierDetection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConnectionPool {
    pub(crate) tcp: Option<FileTcpSettings>,
    pub(crate) http: Option<FileHttpSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTcpSettings {
    #[serde(rename = "maxConnections")]
    pub(crate) max_connections: Option<i64>,
    #[serde(rename = "connectTimeout")]
    pub(crate) connect_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHttpSettings {
    #[serde(rename = "idleTimeout")]
    pub(crate) idle_timeout: Option<String>,
    #[serde(rename = "http1MaxPendingRequests")]
    pub(crate) http1_max_pending_requests: Option<i64>,
    #[serde(rename = "maxRequestsPerConnection")]
    pub(crate) max_requests_per_connection: Option<i64>,
    #[serde(rename = "maxRetries")]
    pub(crate) max_retries: Option<i64>,
    #[serde(rename = "http2MaxRequests")]
    pub(crate) http2_max_requests: Option<i64>,
    #[serde(rename = "h2UpgradePolicy")]
    pub(crate) h2_upgrade_policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileLoadBalancer {
    pub(crate) simple: Option<String>,
    #[serde(rename = "consistentHash")]
    pub(crate) consistent_hash: Option<super::file_lb::FileConsistentHash>,
}

/// What each raw struct does with mapping keys that are not its fields. The names are
/// the Rust struct names serde passes to `deserialize_struct`.
pub(crate) fn field_policy(struct_name: &str) -> FieldPolicy {
    let (ignored, not_implemented): (&[&str], &[&str]) = match struct_name {
        // `spec` is read separately, by kind.
        "FileHeader" => (&["spec"], &[]),
        "FileMetadata" => (&["labels", "annotations"], &[]),
        "FileGatewaySpec" => (&["selector"], &[]),
        // `name` only names the server in Istio's own statistics.
        "FileServer" => (&["name"], &["defaultEndpoint"]),
        "FileServerPort" => (&[], &["targetPort"]),
        "FileServerTls" => (
            &[],
            &[
                "credentialNames",
                "tlsCertificates",
                "verifyCertificateSpki",
                "verifyCertificateHash",
            ],
        ),
        "FileVirtualServiceSpec" => (&["exportTo"], &[]),
        "FileHttpRoute" => (
            &[],
            &[
                "delegate",
                "websocketUpgrade",
                "appendHeaders",
                "removeResponseHeaders",
                "appendResponseHeaders",
                "removeRequestHeaders",
                "appendRequestHeaders",
                "directResponseBody",
            ],
        ),
        "FileHttpMatch" => (&[], &["sourceLabels", "sourceNamespace", "statPrefix"]),
        "FileRouteDestination" => (&[], &["headers"]),
        "FileRedirect" => (&[], &["derivePort"]),
        "FileResponseBody" => (&[], &["bytes"]),
        "FileRewrite" => (&[], &["uriRegexRewrite"]),
        "FileRetries" => (&[], &["retryRemoteLocalities"]),
        "FileServiceEntrySpec" => (
            &["addresses", "location", "exportTo"],
            &["workloadSelector", "subjectAltNames"],
        ),
        "FileWorkloadEntry" => (&[], &["network", "locality", "serviceAccount"]),
        "FileDestinationRuleSpec" => (&["exportTo"], &["workloadSelector"]),
        "FileTrafficPolicy" => (&[], &["tunnel", "proxyProtocol"]),
        "FileTcpSettings" => (
            &[],
            &["tcpKeepalive", "maxConnectionDuration", "idleTimeout"],
        ),
        "FileHttpSettings" => (&[], &["useClientProtocol", "maxConcurrentStreams"]),
        "FileLoadBalancer" => (&[], &["localityLbSetting", "warmupDurationSecs", "warmup"]),
        other => {
            return super::file_auth::auth_field_policy(other)
                .or_else(|| super::file_authz::authz_field_policy(other))
                .or_else(|| super::file_traffic::traffic_field_policy(other))
                .or_else(|| super::file_lb::lb_field_policy(other))
                .unwrap_or_default();
        }
    };
    FieldPolicy {
        ignored,
        not_implemented,
    }
}
