//! The raw types of a VirtualService rule's traffic policies, as written in the YAML
//! file with Istio's field names: `corsPolicy`, `fault` and `mirrors[]` (`mirror` and
//! `mirrorPercentage` are fields of the rule itself). `validate/traffic.rs`
//! checks them into the [`model_traffic`](super::model_traffic) types.

use serde::Deserialize;

use super::file::FileStringMatch;
use super::yaml::FieldPolicy;

/// `http[].corsPolicy`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileCorsPolicy {
    #[serde(rename = "allowOrigins")]
    pub(crate) allow_origins: Option<Vec<FileStringMatch>>,
    /// Deprecated: exact origins.
    #[serde(rename = "allowOrigin")]
    pub(crate) allow_origin: Option<Vec<String>>,
    #[serde(rename = "allowMethods", default)]
    pub(crate) allow_methods: Vec<String>,
    #[serde(rename = "allowHeaders", default)]
    pub(crate) allow_headers: Vec<String>,
    #[serde(rename = "exposeHeaders", default)]
    pub(crate) expose_headers: Vec<String>,
    #[serde(rename = "maxAge")]
    pub(crate) max_age: Option<String>,
    #[serde(rename = "allowCredentials")]
    pub(crate) allow_credentials: Option<bool>,
    #[serde(rename = "unmatchedPreflights")]
    pub(crate) unmatched_preflights: Option<String>,
}

/// `http[].fault`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileFault {
    pub(crate) delay: Option<FileFaultDelay>,
    pub(crate) abort: Option<FileFaultAbort>,
}

/// `fault.delay`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileFaultDelay {
    #[serde(rename = "fixedDelay")]
    pub(crate) fixed_delay: Option<String>,
    pub(crate) percentage: Option<FilePercent>,
    /// Deprecated: an integer percentage.
    pub(crate) percent: Option<i64>,
}

/// `fault.abort`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileFaultAbort {
    #[serde(rename = "httpStatus")]
    pub(crate) http_status: Option<i64>,
    /// A gRPC status name (`UNAVAILABLE`).
    #[serde(rename = "grpcStatus")]
    pub(crate) grpc_status: Option<String>,
    pub(crate) percentage: Option<FilePercent>,
}

/// `http[].mirrors[]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileMirrorPolicy {
    pub(crate) destination: Option<super::file::FileDestination>,
    pub(crate) percentage: Option<FilePercent>,
}

/// Istio's `Percent`: `value`, 0 to 100, with fractions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePercent {
    pub(crate) value: Option<f64>,
}

/// [`field_policy`](super::file::field_policy) for the types of this file.
pub(crate) fn traffic_field_policy(struct_name: &str) -> Option<FieldPolicy> {
    let (ignored, not_implemented): (&[&str], &[&str]) = match struct_name {
        "FileCorsPolicy" => (&[], &[]),
        "FileFault" => (&[], &[]),
        // Istio drops an exponential delay with a warning ("not yet supported").
        "FileFaultDelay" => (&[], &["exponentialDelay"]),
        // Istio itself refuses `http2Error` ("not supported yet").
        "FileFaultAbort" => (&[], &["http2Error"]),
        "FilePercent" => (&[], &[]),
        "FileMirrorPolicy" => (&[], &[]),
        _ => return None,
    };
    Some(FieldPolicy {
        ignored,
        not_implemented,
    })
}
