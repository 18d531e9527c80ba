//! Raw DestinationRule types for load balancing beyond `loadBalancer.simple`:
//! `subsets[]` and `loadBalancer.consistentHash`, with Istio's field names
//! (`file.rs` holds the rest of the DestinationRule; `validate/lb.rs` checks these).

use serde::Deserialize;

use super::file::{FileTrafficPolicy, Ordered};
use super::yaml::FieldPolicy;

/// One entry of a DestinationRule's `subsets[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSubset {
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) labels: Ordered<String>,
    #[serde(rename = "trafficPolicy")]
    pub(crate) traffic_policy: Option<FileTrafficPolicy>,
}

/// `loadBalancer.consistentHash`: one hash key, at most one hash algorithm.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConsistentHash {
    #[serde(rename = "httpHeaderName")]
    pub(crate) http_header_name: Option<String>,
    #[serde(rename = "httpCookie")]
    pub(crate) http_cookie: Option<FileHttpCookie>,
    #[serde(rename = "useSourceIp")]
    pub(crate) use_source_ip: Option<bool>,
    #[serde(rename = "httpQueryParameterName")]
    pub(crate) http_query_parameter_name: Option<String>,
    #[serde(rename = "ringHash")]
    pub(crate) ring_hash: Option<FileRingHash>,
    pub(crate) maglev: Option<FileMaglev>,
    /// Deprecated by Istio for `ringHash.minimumRingSize`, still read.
    #[serde(rename = "minimumRingSize")]
    pub(crate) minimum_ring_size: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHttpCookie {
    pub(crate) name: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRingHash {
    #[serde(rename = "minimumRingSize")]
    pub(crate) minimum_ring_size: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileMaglev {
    #[serde(rename = "tableSize")]
    pub(crate) table_size: Option<i64>,
}

/// `trafficPolicy.outlierDetection`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileOutlierDetection {
    #[serde(rename = "consecutive5xxErrors")]
    pub(crate) consecutive_5xx_errors: Option<i64>,
    #[serde(rename = "consecutiveGatewayErrors")]
    pub(crate) consecutive_gateway_errors: Option<i64>,
    pub(crate) interval: Option<String>,
    #[serde(rename = "baseEjectionTime")]
    pub(crate) base_ejection_time: Option<String>,
    #[serde(rename = "maxEjectionPercent")]
    pub(crate) max_ejection_percent: Option<i64>,
    #[serde(rename = "minHealthPercent")]
    pub(crate) min_health_percent: Option<i64>,
}

/// The field policy of this file's structs (see [`super::file::field_policy`]).
pub(crate) fn lb_field_policy(struct_name: &str) -> Option<FieldPolicy> {
    let (ignored, not_implemented): (&[&str], &[&str]) = match struct_name {
        "FileSubset" => (&[], &[]),
        "FileConsistentHash" => (&[], &[]),
        "FileHttpCookie" => (&[], &["attributes"]),
        "FileRingHash" | "FileMaglev" => (&[], &[]),
        "FileOutlierDetection" => (
            &[],
            &[
                "consecutiveErrors",
                "splitExternalLocalOriginErrors",
                "consecutiveLocalOriginFailures",
            ],
        ),
        _ => return None,
    };
    Some(FieldPolicy {
        ignored,
        not_implemented,
    })
}
