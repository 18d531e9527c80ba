//! Configuration errors: every problem `config::load` finds, each naming the file, the
//! YAML document, the resource (`Gateway httpbin-gateway`), the field path
//! (`spec.servers[0].tls.mode`), what was wrong and what is accepted. Nothing here runs
//! on the request path: a bad file is rejected before a snapshot is built from it.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration file was rejected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid ringress configuration; one issue per line.
    #[error("{}", IssueLines(.0))]
    Invalid(Vec<Issue>),
}

impl ConfigError {
    /// The individual problems (empty for [`ConfigError::Read`]).
    #[cfg(test)]
    pub(crate) fn issues(&self) -> &[Issue] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid(issues) => issues,
        }
    }
}

struct IssueLines<'a>(&'a [Issue]);

impl fmt::Display for IssueLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// One problem, located as precisely as the loader knows it.
///
/// Displayed as
/// `gateway.yaml:14:9: document 2 (Gateway httpbin-gateway): spec.servers[0].tls.mode: ...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    pub(crate) file: PathBuf,
    /// 1-based line and column of the offending node, when known.
    pub(crate) line: Option<(u64, u64)>,
    /// 1-based index of the YAML document; `None` for problems of the whole file.
    pub(crate) document: Option<usize>,
    /// `kind` of the document, when it could be read.
    pub(crate) kind: Option<String>,
    /// `metadata.name` of the document, when it could be read.
    pub(crate) name: Option<String>,
    /// Field path inside the document, like `spec.servers[0].tls.mode`; empty for the
    /// document itself.
    pub(crate) path: String,
    pub(crate) problem: Problem,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.line {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if let Some(document) = self.document {
            write!(f, "document {document}")?;
            match (&self.kind, &self.name) {
                (Some(kind), Some(name)) => write!(f, " ({kind} {name})")?,
                (Some(kind), None) => write!(f, " ({kind})")?,
                (None, Some(name)) => write!(f, " ({name})")?,
                (None, None) => {}
            }
            f.write_str(": ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.problem)
    }
}

/// What is wrong at an [`Issue`]'s place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Problem {
    /// The text is not YAML.
    #[error("invalid YAML: {0}")]
    Syntax(String),
    /// The file holds no resources at all.
    #[error("no Gateway, VirtualService, ServiceEntry or DestinationRule in the file")]
    Empty,
    #[error(
        "kind {0} is not supported yet; accepted: Gateway, VirtualService, ServiceEntry, DestinationRule, RequestAuthentication, AuthorizationPolicy, Policy (authentication.istio.io/v1alpha1)"
    )]
    UnsupportedKind(String),
    #[error("apiVersion {version} is not supported for {kind}; accepted: {}", accepted.join(", "))]
    UnsupportedApiVersion {
        version: String,
        kind: String,
        accepted: &'static [&'static str],
    },
    /// A field ringress does not know, neither implemented nor a known Istio field.
    #[error("unknown field `{field}`; accepted: {}", accepted.join(", "))]
    UnknownField {
        field: String,
        accepted: Vec<String>,
    },
    /// An Istio field ringress knows but does not implement.
    #[error("field `{0}` is not implemented by ringress yet")]
    FieldNotImplemented(String),
    /// An Istio value (a TLS mode, a protocol) ringress knows but does not implement.
    #[error("{what} is not implemented by ringress yet; accepted: {accepted}")]
    ValueNotImplemented { what: String, accepted: String },
    #[error("required field is missing")]
    Missing,
    /// The YAML node has the wrong shape (a string where a number belongs).
    #[error("expected {expected}, found {found}")]
    WrongType { expected: String, found: String },
    /// A value of the right type that is not acceptable.
    #[error("invalid value {value}: {reason}")]
    InvalidValue { value: String, reason: String },
    /// A rule spanning several fields or documents.
    #[error("{0}")]
    Rule(String),
}
