//! Configuration: Istio manifests (several YAML documents in one file) parsed into raw
//! `File*` types, then validated into the [`Config`] the rest of ringress uses. This runs
//! on the control thread at start-up and on every reload, long before any request: a
//! file that fails here never reaches `Snapshot::build`, and the old snapshot keeps
//! serving.
//!
//! - `yaml`: the documents as a tree of positioned nodes, and a serde deserializer over
//!   it that knows the field path of every value.
//! - [`file`](mod@file): the raw types, with Istio's field names.
//! - `validate`: raw types → [`model`], and the checks across documents.
//! - [`error`]: [`ConfigError`], one [`Issue`] per problem.
//!
//! Decisions worth knowing as a user:
//! - Fields Istio has but ringress does not implement are errors ("is not implemented by
//!   ringress yet"), never ignored; `metadata.labels`/`annotations` (but a DestinationRule's
//!   `ringress.io/health-check-*`), Gateway `selector` and `servers[].name`, `exportTo`
//!   and ServiceEntry `addresses`/`location` are accepted and have no effect.
//! - ServiceEntry `resolution: DNS_ROUND_ROBIN` is read as `DNS`; `NONE` is an error.
//! - With `credentialName`, `serverCertificate`/`privateKey`/`caCertificates` may only
//!   hold the placeholder `"use sds"` older Istio releases required.
//! - Relative certificate paths are resolved against the configuration file's directory.

pub(crate) mod duration;
pub(crate) mod error;
pub(crate) mod file;
mod file_auth;
mod file_authz;
mod file_destination;
mod file_l4;
mod file_lb;
mod file_traffic;
pub(crate) mod model;
pub(crate) mod model_authz;
pub(crate) mod model_destination;
pub(crate) mod model_l4;
pub(crate) mod model_lb;
pub(crate) mod model_traffic;
mod validate;
mod yaml;

use std::path::Path;

pub(crate) use error::{ConfigError, Issue, Problem};
pub use model::*;
pub use model_authz::*;
pub use model_destination::*;
pub use model_l4::*;
pub use model_lb::*;
pub use model_traffic::*;
#[cfg(test)]
use validate::API_VERSIONS;

/// Reads and validates the configuration file at `path`.
pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, path)
}

/// Validates configuration text; `source` names the file in messages and is the base
/// for relative certificate paths.
pub(crate) fn load_str(text: &str, source: &Path) -> Result<Config, ConfigError> {
    let docs = yaml::documents(text).map_err(|e| {
        ConfigError::Invalid(vec![Issue {
            file: source.to_path_buf(),
            line: e.line,
            document: e.document,
            kind: None,
            name: None,
            path: String::new(),
            problem: Problem::Syntax(e.message),
        }])
    })?;
    validate::validate(&docs, source).map_err(ConfigError::Invalid)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_lb;
