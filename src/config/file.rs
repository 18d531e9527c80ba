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
pub struct FileHeader {
    #[serde(rename = "apiVersion")]
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub metadata: Option<FileMetadata>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMetadata {
    pub name: Option<String>,
    pub namespace: Option<String>,
}

/// A mapping whose entries keep the order they were written in (`headers.set`,
/// `match[].headers`, `endpoints[].ports`).
#[derive(Debug, Clone, PartialEq)]
pub struct Ordered<T>(pub Vec<(String, T)>);

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
pub struct FileGatewaySpec {
    #[serde(default)]
    pub servers: Vec<FileServer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    pub port: Option<FileServerPort>,
    pub bind: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub tls: Option<FileServerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServerPort {
    pub number: Option<i64>,
    pub name: Option<String>,
    pub protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServerTls {
    #[serde(rename = "httpsRedirect")]
    pub https_redirect: Option<bool>,
    pub mode: Option<String>,
    #[serde(rename = "serverCertificate")]
    pub server_certificate: Option<String>,
    #[serde(rename = "privateKey")]
    pub private_key: Option<String>,
    #[serde(rename = "caCertificates")]
    pub ca_certificates: Option<String>,
    #[serde(rename = "caCrl")]
    pub ca_crl: Option<String>,
    #[serde(rename = "credentialName")]
    pub credential_name: Option<String>,
    #[serde(rename = "subjectAltNames", default)]
    pub subject_alt_names: Vec<String>,
    #[serde(rename = "minProtocolVersion")]
    pub min_protocol_version: Option<String>,
    #[serde(rename = "maxProtocolVersion")]
    pub max_protocol_version: Option<String>,
    #[serde(rename = "cipherSuites", default)]
    pub cipher_suites: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// VirtualService

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileVirtualServiceSpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `None` when absent: Istio then applies the service to the mesh only.
    pub gateways: Option<Vec<String>>,
    #[serde(default)]
    pub http: Vec<FileHttpRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHttpRoute {
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matches: Vec<FileHttpMatch>,
    pub route: Option<Vec<FileRouteDestination>>,
    pub redirect: Option<FileRedirect>,
    #[serde(rename = "directResponse")]
    pub direct_response: Option<FileDirectResponse>,
    pub rewrite: Option<FileRewrite>,
    pub timeout: Option<String>,
    pub retries: Option<FileRetries>,
    pub headers: Option<FileHeaders>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHttpMatch {
    pub name: Option<String>,
    pub uri: Option<FileStringMatch>,
    pub scheme: Option<FileStringMatch>,
    pub method: Option<FileStringMatch>,
    pub authority: Option<FileStringMatch>,
    #[serde(default)]
    pub headers: Ordered<FileStringMatch>,
    #[serde(rename = "ignoreUriCase")]
    pub ignore_uri_case: Option<bool>,
}

/// Istio's `StringMatch`: exactly one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStringMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRouteDestination {
    pub destination: Option<FileDestination>,
    pub weight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDestination {
    pub host: Option<String>,
    pub subset: Option<String>,
    pub port: Option<FilePortSelector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePortSelector {
    pub number: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRedirect {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub scheme: Option<String>,
    pub port: Option<i64>,
    #[serde(rename = "redirectCode")]
    pub redirect_code: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDirectResponse {
    pub status: Option<i64>,
    pub body: Option<FileResponseBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileResponseBody {
    pub string: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRewrite {
    pub uri: Option<String>,
    pub authority: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRetries {
    pub attempts: Option<i64>,
    #[serde(rename = "perTryTimeout")]
    pub per_try_timeout: Option<String>,
    #[serde(rename = "retryOn")]
    pub retry_on: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaders {
    pub request: Option<FileHeaderOperations>,
    pub response: Option<FileHeaderOperations>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaderOperations {
    #[serde(default)]
    pub set: Ordered<String>,
    #[serde(default)]
    pub add: Ordered<String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// ServiceEntry

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServiceEntrySpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub ports: Vec<FileServicePort>,
    pub resolution: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<FileWorkloadEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServicePort {
    pub number: Option<i64>,
    pub name: Option<String>,
    pub protocol: Option<String>,
    #[serde(rename = "targetPort")]
    pub target_port: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWorkloadEntry {
    pub address: Option<String>,
    #[serde(default)]
    pub ports: Ordered<i64>,
    pub weight: Option<i64>,
}

// ---------------------------------------------------------------------------------------
// DestinationRule

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDestinationRuleSpec {
    pub host: Option<String>,
    #[serde(rename = "trafficPolicy")]
    pub traffic_policy: Option<FileTrafficPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTrafficPolicy {
    #[serde(rename = "loadBalancer")]
    pub load_balancer: Option<FileLoadBalancer>,
    #[serde(rename = "connectionPool")]
    pub connection_pool: Option<FileConnectionPool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConnectionPool {
    pub tcp: Option<FileTcpSettings>,
    pub http: Option<FileHttpSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTcpSettings {
    #[serde(rename = "maxConnections")]
    pub max_connections: Option<i64>,
    #[serde(rename = "connectTimeout")]
    pub connect_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHttpSettings {
    #[serde(rename = "idleTimeout")]
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLoadBalancer {
    pub simple: Option<String>,
}

/// What each raw struct does with mapping keys that are not its fields. The names are
/// the Rust struct names serde passes to `deserialize_struct`.
pub fn field_policy(struct_name: &str) -> FieldPolicy {
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
        "FileVirtualServiceSpec" => (&["exportTo"], &["tcp", "tls"]),
        "FileHttpRoute" => (
            &[],
            &[
                "fault",
                "mirror",
                "mirrors",
                "mirrorPercent",
                "mirrorPercentage",
                "mirror_percent",
                "corsPolicy",
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
        "FileHttpMatch" => (
            &[],
            &[
                "port",
                "sourceLabels",
                "gateways",
                "queryParams",
                "withoutHeaders",
                "sourceNamespace",
                "statPrefix",
            ],
        ),
        "FileRouteDestination" => (&[], &["headers"]),
        "FileRedirect" => (&[], &["derivePort"]),
        "FileResponseBody" => (&[], &["bytes"]),
        "FileRewrite" => (&[], &["uriRegexRewrite"]),
        "FileRetries" => (&[], &["retryRemoteLocalities"]),
        "FileServiceEntrySpec" => (
            &["addresses", "location", "exportTo"],
            &["workloadSelector", "subjectAltNames"],
        ),
        "FileWorkloadEntry" => (&["labels"], &["network", "locality", "serviceAccount"]),
        "FileDestinationRuleSpec" => (&["exportTo"], &["subsets", "workloadSelector"]),
        "FileTrafficPolicy" => (
            &[],
            &[
                "outlierDetection",
                "tls",
                "portLevelSettings",
                "tunnel",
                "proxyProtocol",
            ],
        ),
        "FileTcpSettings" => (
            &[],
            &["tcpKeepalive", "maxConnectionDuration", "idleTimeout"],
        ),
        "FileHttpSettings" => (
            &[],
            &[
                "http1MaxPendingRequests",
                "http2MaxRequests",
                "maxRequestsPerConnection",
                "maxRetries",
                "h2UpgradePolicy",
                "useClientProtocol",
                "maxConcurrentStreams",
            ],
        ),
        "FileLoadBalancer" => (
            &[],
            &[
                "consistentHash",
                "localityLbSetting",
                "warmupDurationSecs",
                "warmup",
            ],
        ),
        _ => (&[], &[]),
    };
    FieldPolicy {
        ignored,
        not_implemented,
    }
}
