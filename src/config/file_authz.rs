//! The raw types of `security.istio.io` `AuthorizationPolicy`, as written in the YAML
//! file with Istio's field names. `validate/authz.rs` checks them into the
//! [`model`](super::model) authorization types.

use serde::Deserialize;

use super::yaml::FieldPolicy;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAuthorizationPolicySpec {
    pub(crate) action: Option<String>,
    /// Absent and empty alike: the policy matches no request.
    #[serde(default)]
    pub(crate) rules: Vec<FileAuthzRule>,
    /// The external authorizer of a CUSTOM policy.
    pub(crate) provider: Option<FileAuthzProvider>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAuthzProvider {
    pub(crate) name: Option<String>,
}

/// `rules[]`: matches when one `from`, one `to` and every `when` do (an absent list
/// matches anything).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAuthzRule {
    #[serde(default)]
    pub(crate) from: Vec<FileAuthzFrom>,
    #[serde(default)]
    pub(crate) to: Vec<FileAuthzTo>,
    #[serde(default)]
    pub(crate) when: Vec<FileAuthzCondition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAuthzFrom {
    pub(crate) source: Option<FileAuthzSource>,
}

/// `from[].source`: every field given must match (one of its values), and no
/// `not…` value may.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAuthzSource {
    #[serde(default)]
    pub(crate) principals: Vec<String>,
    #[serde(rename = "notPrincipals", default)]
    pub(crate) not_principals: Vec<String>,
    #[serde(rename = "requestPrincipals", default)]
    pub(crate) request_principals: Vec<String>,
    #[serde(rename = "notRequestPrincipals", default)]
    pub(crate) not_request_principals: Vec<String>,
    #[serde(default)]
    pub(crate) namespaces: Vec<String>,
    #[serde(rename = "notNamespaces", default)]
    pub(crate) not_namespaces: Vec<String>,
    #[serde(rename = "ipBlocks", default)]
    pub(crate) ip_blocks: Vec<String>,
    #[serde(rename = "notIpBlocks", default)]
    pub(crate) not_ip_blocks: Vec<String>,
    #[serde(rename = "remoteIpBlocks", default)]
    pub(crate) remote_ip_blocks: Vec<String>,
    #[serde(rename = "notRemoteIpBlocks", default)]
    pub(crate) not_remote_ip_blocks: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAuthzTo {
    pub(crate) operation: Option<FileAuthzOperation>,
}

/// `to[].operation`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAuthzOperation {
    #[serde(default)]
    pub(crate) hosts: Vec<String>,
    #[serde(rename = "notHosts", default)]
    pub(crate) not_hosts: Vec<String>,
    #[serde(default)]
    pub(crate) ports: Vec<String>,
    #[serde(rename = "notPorts", default)]
    pub(crate) not_ports: Vec<String>,
    #[serde(default)]
    pub(crate) methods: Vec<String>,
    #[serde(rename = "notMethods", default)]
    pub(crate) not_methods: Vec<String>,
    #[serde(default)]
    pub(crate) paths: Vec<String>,
    #[serde(rename = "notPaths", default)]
    pub(crate) not_paths: Vec<String>,
}

/// `when[]`: a key and the values it must (or must not) have.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAuthzCondition {
    pub(crate) key: Option<String>,
    #[serde(default)]
    pub(crate) values: Vec<String>,
    #[serde(rename = "notValues", default)]
    pub(crate) not_values: Vec<String>,
}

/// What each raw struct of this file does with keys that are not its fields (see
/// [`super::file::field_policy`]).
pub(crate) fn authz_field_policy(struct_name: &str) -> Option<FieldPolicy> {
    let (ignored, not_implemented): (&[&str], &[&str]) = match struct_name {
        // One gateway: which workloads a policy selects does not change what it does.
        "FileAuthorizationPolicySpec" => (&["selector", "targetRef", "targetRefs"], &[]),
        "FileAuthzSource" => (&[], &["serviceAccounts", "notServiceAccounts"]),
        _ => return None,
    };
    Some(FieldPolicy {
        ignored,
        not_implemented,
    })
}
