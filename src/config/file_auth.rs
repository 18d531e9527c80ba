//! The raw types of the end-user authentication kinds, as written in the YAML file
//! with Istio's field names: `authentication.istio.io/v1alpha1` `Policy` (Istio
//! 1.0–1.5, the kind the "Securing Gateways with HTTPS" walkthrough applies) and
//! `security.istio.io` `RequestAuthentication`. `validate_auth.rs` checks them into the
//! [`model::auth`](super::model) types.

use serde::Deserialize;

use super::file::FileStringMatch;
use super::yaml::FieldPolicy;

// ---------------------------------------------------------------------------------------
// authentication.istio.io/v1alpha1 Policy

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePolicySpec {
    #[serde(default)]
    pub(crate) targets: Vec<FileTargetSelector>,
    #[serde(default)]
    pub(crate) origins: Vec<FileOriginAuthenticationMethod>,
    #[serde(rename = "originIsOptional")]
    pub(crate) origin_is_optional: Option<bool>,
    #[serde(rename = "principalBinding")]
    pub(crate) principal_binding: Option<String>,
}

/// `targets[]`: which services the policy is for. A gateway serves one set of
/// services, so targets are read (their shape is checked) and have no effect.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTargetSelector {
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) ports: Vec<FilePortSelector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePortSelector {
    pub(crate) number: Option<i64>,
    pub(crate) name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileOriginAuthenticationMethod {
    pub(crate) jwt: Option<FileJwt>,
}

/// `origins[].jwt` of a v1alpha1 Policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileJwt {
    pub(crate) issuer: Option<String>,
    #[serde(default)]
    pub(crate) audiences: Vec<String>,
    #[serde(rename = "jwksUri")]
    pub(crate) jwks_uri: Option<String>,
    pub(crate) jwks: Option<String>,
    #[serde(rename = "jwtHeaders", default)]
    pub(crate) jwt_headers: Vec<String>,
    #[serde(rename = "jwtParams", default)]
    pub(crate) jwt_params: Vec<String>,
    #[serde(rename = "triggerRules", default)]
    pub(crate) trigger_rules: Vec<FileTriggerRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTriggerRule {
    #[serde(rename = "excludedPaths", default)]
    pub(crate) excluded_paths: Vec<FilePathMatch>,
    #[serde(rename = "includedPaths", default)]
    pub(crate) included_paths: Vec<FilePathMatch>,
}

/// v1alpha1's `StringMatch`, which has `suffix` besides the routes' three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePathMatch {
    pub(crate) exact: Option<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) suffix: Option<String>,
    pub(crate) regex: Option<String>,
}

impl FilePathMatch {
    /// The match without `suffix`, when it has none, for the shared checks.
    pub(crate) fn without_suffix(self) -> Result<FileStringMatch, String> {
        match self.suffix {
            Some(suffix) => Err(suffix),
            None => Ok(FileStringMatch {
                exact: self.exact,
                prefix: self.prefix,
                regex: self.regex,
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// security.istio.io RequestAuthentication

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRequestAuthenticationSpec {
    #[serde(rename = "jwtRules", default)]
    pub(crate) jwt_rules: Vec<FileJwtRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileJwtRule {
    pub(crate) issuer: Option<String>,
    #[serde(default)]
    pub(crate) audiences: Vec<String>,
    #[serde(rename = "jwksUri")]
    pub(crate) jwks_uri: Option<String>,
    pub(crate) jwks: Option<String>,
    #[serde(rename = "fromHeaders", default)]
    pub(crate) from_headers: Vec<FileJwtHeader>,
    #[serde(rename = "fromParams", default)]
    pub(crate) from_params: Vec<String>,
    #[serde(rename = "fromCookies", default)]
    pub(crate) from_cookies: Vec<String>,
    #[serde(rename = "outputPayloadToHeader")]
    pub(crate) output_payload_to_header: Option<String>,
    #[serde(rename = "outputClaimToHeaders", default)]
    pub(crate) output_claim_to_headers: Vec<FileClaimToHeader>,
    #[serde(rename = "forwardOriginalToken")]
    pub(crate) forward_original_token: Option<bool>,
    pub(crate) timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileJwtHeader {
    pub(crate) name: Option<String>,
    pub(crate) prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileClaimToHeader {
    pub(crate) header: Option<String>,
    pub(crate) claim: Option<String>,
}

/// What each raw struct of this file does with keys that are not its fields (see
/// [`super::file::field_policy`]).
pub(crate) fn auth_field_policy(struct_name: &str) -> Option<FieldPolicy> {
    let (ignored, not_implemented): (&[&str], &[&str]) = match struct_name {
        // One gateway: which workloads a policy selects does not change what it does.
        "FilePolicySpec" => (&[], &["peers", "peerIsOptional"]),
        "FileRequestAuthenticationSpec" => (&["selector", "targetRef", "targetRefs"], &[]),
        _ => return None,
    };
    Some(FieldPolicy {
        ignored,
        not_implemented,
    })
}
