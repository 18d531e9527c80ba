//! The second step of `config::load`: each YAML document is read into its raw `File*`
//! type (through the path-tracking deserializer of `yaml.rs`) and checked field by field
//! into the `model` types; then the checks that span documents run (VirtualService
//! gateways exist, servers sharing a port agree, SNI is unambiguous). Every problem is
//! collected, so one run of `ringress check` lists all of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod auth;
mod authz;
mod destination;
mod l4;
mod lb;
mod traffic;

use super::duration::parse_duration;
use super::error::{Issue, Problem};
use super::file::*;
use super::file_auth::*;
use super::file_authz::FileAuthorizationPolicySpec;
use super::model::*;
use super::model_authz::AuthorizationPolicy;
use super::model_destination::*;
use super::yaml::{Ctx, Document, Node, NodeDe, Path, Value};

/// The apiVersions ringress reads; Istio serves the same schema under all three.
pub(crate) const API_VERSIONS: &[&str] = &[
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// The value older Istio releases required in `serverCertificate`, `privateKey` and
/// `caCertificates` next to `credentialName` ("arbitrary non-empty string"); ringress
/// accepts exactly this placeholder there and nothing else.
pub(crate) const SDS_PLACEHOLDER: &str = "use sds";

/// Most retries ringress makes for one request (`retries.attempts`).
pub(crate) const MAX_RETRY_ATTEMPTS: i64 = 10;

/// Longest host name (RFC 1035 limit, in text form).
pub(crate) const MAX_HOST_LEN: usize = 253;

/// Largest regular expression program (bytes) a match may compile to.
pub(crate) const MAX_REGEX_SIZE: usize = 1 << 20;

/// The apiVersions of the end-user authentication kinds.
pub(crate) const SECURITY_API_VERSIONS: &[&str] =
    &["security.istio.io/v1", "security.istio.io/v1beta1"];
pub(crate) const AUTHENTICATION_API_VERSIONS: &[&str] = &["authentication.istio.io/v1alpha1"];

/// The apiVersions ringress reads `kind` under.
fn api_versions(kind: &str) -> &'static [&'static str] {
    match kind {
        "RequestAuthentication" | "AuthorizationPolicy" => SECURITY_API_VERSIONS,
        "Policy" => AUTHENTICATION_API_VERSIONS,
        _ => API_VERSIONS,
    }
}

/// Redirect codes Istio accepts in `redirectCode`.
const REDIRECT_CODES: &[i64] = &[301, 302, 303, 307, 308];

/// `retryOn` conditions ringress accepts (Envoy's names, as Istio passes them through),
/// besides numeric status codes.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Gateway server protocols Istio knows that ringress does not serve yet.
const OTHER_SERVER_PROTOCOLS: &[&str] = &[
    "HTTP2", "GRPC", "GRPC-WEB", "MONGO", "MYSQL", "REDIS", "UDP",
];

/// Gateway server protocols ringress serves, as messages list them.
const SERVER_PROTOCOLS: &str = "HTTP, HTTPS, TLS, TCP";

/// ServiceEntry port protocols ringress proxies to.
const UPSTREAM_PROTOCOLS: &[&str] = &["HTTP", "HTTP2", "GRPC", "TCP", "TLS"];

/// ServiceEntry port protocols Istio knows that ringress does not proxy to yet.
const OTHER_UPSTREAM_PROTOCOLS: &[&str] = &["HTTPS", "GRPC-WEB", "MONGO", "MYSQL", "REDIS", "UDP"];

/// What a document is, for messages and for the checks across documents.
struct DocInfo<'a> {
    index: usize,
    kind: Option<String>,
    name: Option<String>,
    root: &'a Node,
}

impl DocInfo<'_> {
    /// `document 2 (Gateway httpbin-gateway)`, for messages that point at another one.
    fn label(&self) -> String {
        format!(
            "document {} ({} {})",
            self.index,
            self.kind.as_deref().unwrap_or("?"),
            self.name.as_deref().unwrap_or("?")
        )
    }
}

/// Collects issues with file, document and position filled in.
struct Report<'a> {
    file: &'a FsPath,
    issues: Vec<Issue>,
}

impl Report<'_> {
    fn add(&mut self, doc: &DocInfo<'_>, path: &Path, problem: Problem) {
        let line = doc.root.locate(path);
        self.issues.push(Issue {
            file: self.file.to_path_buf(),
            line: Some(line),
            document: Some(doc.index),
            kind: doc.kind.clone(),
            name: doc.name.clone(),
            path: path.to_string(),
            problem,
        });
    }
}

/// Validates every document of a file into a [`Config`].
pub(crate) fn validate(docs: &[Document], source: &FsPath) -> Result<Config, Vec<Issue>> {
    let base = base_dir(source);
    let mut report = Report {
        file: source,
        issues: Vec::new(),
    };
    if docs.is_empty() {
        report.issues.push(Issue {
            file: source.to_path_buf(),
            line: None,
            document: None,
            kind: None,
            name: None,
            path: String::new(),
            problem: Problem::Empty,
        });
        return Err(report.issues);
    }
    let infos: Vec<DocInfo<'_>> = docs
        .iter()
        .map(|d| DocInfo {
            index: d.index,
            kind: scalar_string(d.root.get("kind")),
            name: scalar_string(d.root.get("metadata").and_then(|m| m.get("name"))),
            root: &d.root,
        })
        .collect();

    let mut objects = Objects::default();
    for (i, doc) in infos.iter().enumerate() {
        let mut check = Check {
            report: &mut report,
            doc,
            base: &base,
            source,
        };
        check.document(i, &mut objects);
    }
    cross_checks(&mut report, &infos, &objects);

    if report.issues.is_empty() {
        Ok(Config {
            source: source.to_path_buf(),
            gateways: objects.gateways.into_iter().map(|(_, g, _)| g).collect(),
            virtual_services: objects
                .virtual_services
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
            service_entries: objects
                .service_entries
                .into_iter()
                .map(|(_, s)| s)
                .collect(),
            destination_rules: objects
                .destination_rules
                .into_iter()
                .map(|(_, d)| d)
                .collect(),
            request_authentications: objects
                .request_authentications
                .into_iter()
                .map(|(_, r)| r)
                .collect(),
            origin_policy: objects.origin_policies.into_iter().map(|(_, p)| p).next(),
            authorization_policies: objects
                .authorization_policies
                .into_iter()
                .map(|(_, p)| p)
                .collect(),
        })
    } else {
        // Stable: issues of one document stay in the order they were found.
        report
            .issues
            .sort_by_key(|i| (i.document, i.line.map(|(l, _)| l)));
        Err(report.issues)
    }
}

/// The directory relative certificate paths are resolved against: the config file's.
fn base_dir(source: &FsPath) -> PathBuf {
    let dir = source.parent().unwrap_or(FsPath::new(""));
    let dir = if dir.as_os_str().is_empty() {
        FsPath::new(".")
    } else {
        dir
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

fn scalar_string(node: Option<&Node>) -> Option<String> {
    match &node?.value {
        Value::Str(s) => Some(s.clone()),
        _ => None,
    }
}

/// Validated objects with the position of their document in the file's list.
#[derive(Default)]
struct Objects {
    /// With each server's index in the document's `spec.servers`.
    gateways: Vec<(usize, Gateway, Vec<usize>)>,
    virtual_services: Vec<(usize, VirtualService)>,
    service_entries: Vec<(usize, ServiceEntry)>,
    destination_rules: Vec<(usize, DestinationRule)>,
    request_authentications: Vec<(usize, RequestAuthentication)>,
    origin_policies: Vec<(usize, OriginPolicy)>,
    authorization_policies: Vec<(usize, AuthorizationPolicy)>,
}

fn root() -> Path {
    Path::default()
}

fn spec() -> Path {
    root().key("spec")
}

/// Checks one document.
struct Check<'r, 'a> {
    report: &'r mut Report<'a>,
    doc: &'r DocInfo<'r>,
    base: &'r FsPath,
    source: &'r FsPath,
}

impl Check<'_, '_> {
    fn err(&mut self, path: &Path, problem: Problem) {
        self.report.add(self.doc, path, problem);
    }

    fn rule(&mut self, path: &Path, message: impl Into<String>) {
        self.err(path, Problem::Rule(message.into()));
    }

    fn invalid(&mut self, path: &Path, value: impl Into<String>, reason: impl Into<String>) {
        self.err(
            path,
            Problem::InvalidValue {
                value: value.into(),
                reason: reason.into(),
            },
        );
    }

    /// Deserializes the raw type at `path` of this document; `None` after reporting
    /// when the shape is wrong. Unknown and unimplemented fields are reported either way.
    fn read<T: for<'de> Deserialize<'de>>(&mut self, node: &Node, path: Path) -> Option<T> {
        let ctx = Ctx::new(field_policy);
        let result = T::deserialize(NodeDe {
            node,
            path: path.clone(),
            ctx: &ctx,
        });
        for (p, problem) in ctx.issues.into_inner() {
            self.err(&p, problem);
        }
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                let p = e.path.unwrap_or(path);
                self.err(&p, e.problem);
                None
            }
        }
    }

    fn document(&mut self, position: usize, objects: &mut Objects) {
        let Some(header) = self.read::<FileHeader>(self.doc.root, root()) else {
            return;
        };
        let kind = match header.kind.as_deref() {
            None => {
                self.err(&root().key("kind"), Problem::Missing);
                return;
            }
            Some(
                k @ ("Gateway"
                | "VirtualService"
                | "ServiceEntry"
                | "DestinationRule"
                | "RequestAuthentication"
                | "AuthorizationPolicy"
                | "Policy"),
            ) => k,
            Some(other) => {
                self.err(
                    &root().key("kind"),
                    Problem::UnsupportedKind(other.to_owned()),
                );
                return;
            }
        };
        match header.api_version.as_deref() {
            None => {
                self.err(&root().key("apiVersion"), Problem::Missing);
                return;
            }
            Some(v) if api_versions(kind).contains(&v) => {}
            Some(other) => {
                self.err(
                    &root().key("apiVersion"),
                    Problem::UnsupportedApiVersion {
                        version: other.to_owned(),
                        kind: kind.to_owned(),
                        accepted: api_versions(kind),
                    },
                );
                return;
            }
        }
        let (name, namespace) = match header.metadata {
            Some(FileMetadata {
                name: Some(name),
                namespace,
            }) if !name.trim().is_empty() => (name, namespace),
            Some(FileMetadata { name: Some(_), .. }) => {
                self.invalid(
                    &root().key("metadata").key("name"),
                    "\"\"",
                    "a name cannot be empty",
                );
                return;
            }
            _ => {
                self.err(&root().key("metadata").key("name"), Problem::Missing);
                return;
            }
        };
        let Some(spec_node) = self.doc.root.get("spec") else {
            self.err(&spec(), Problem::Missing);
            return;
        };
        let origin = Origin {
            file: self.source.to_path_buf(),
            document: self.doc.index,
            kind: kind.to_owned(),
            name: name.clone(),
        };
        match kind {
            "Gateway" => {
                if let Some(raw) = self.read::<FileGatewaySpec>(spec_node, spec()) {
                    let (indexes, servers) = self.servers(raw).into_iter().unzip();
                    objects.gateways.push((
                        position,
                        Gateway {
                            origin,
                            name,
                            namespace,
                            servers,
                        },
                        indexes,
                    ));
                }
            }
            "VirtualService" => {
                if let Some(raw) = self.read::<FileVirtualServiceSpec>(spec_node, spec()) {
                    let vs = self.virtual_service(raw, origin, name, namespace);
                    objects.virtual_services.push((position, vs));
                }
            }
            "ServiceEntry" => {
                if let Some(raw) = self.read::<FileServiceEntrySpec>(spec_node, spec())
                    && let Some(se) = self.service_entry(raw, origin, name)
                {
                    objects.service_entries.push((position, se));
                }
            }
            "RequestAuthentication" => {
                if let Some(raw) = self.read::<FileRequestAuthenticationSpec>(spec_node, spec())
                    && let Some(ra) = self.request_authentication(raw, origin)
                {
                    objects.request_authentications.push((position, ra));
                }
            }
            "AuthorizationPolicy" => {
                if let Some(raw) = self.read::<FileAuthorizationPolicySpec>(spec_node, spec())
                    && let Some(policy) = self.authorization_policy(raw, origin, name, namespace)
                {
                    objects.authorization_policies.push((position, policy));
                }
            }
            "Policy" => {
                if let Some(raw) = self.read::<FilePolicySpec>(spec_node, spec())
                    && let Some(policy) = self.origin_policy(raw, origin)
                {
                    objects.origin_policies.push((position, policy));
                }
            }
            _ => {
                if let Some(raw) = self.read::<FileDestinationRuleSpec>(spec_node, spec())
                    && let Some(dr) = self.destination_rule(raw, origin, name)
                {
                    objects.destination_rules.push((position, dr));
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Shared value checks

    fn port(&mut self, value: Option<i64>, path: &Path) -> Option<u16> {
        let Some(n) = value else {
            self.err(path, Problem::Missing);
            return None;
        };
        match u16::try_from(n) {
            Ok(p) if p != 0 => Some(p),
            _ => {
                self.invalid(path, n.to_string(), "a port number is 1 to 65535");
                None
            }
        }
    }

    /// A Gateway or VirtualService host: `namespace/` prefix removed, lower-cased.
    fn host_pattern(&mut self, raw: &str, path: &Path) -> Option<HostPattern> {
        let host = raw
            .rsplit('/')
            .next()
            .unwrap_or(raw)
            .trim()
            .to_ascii_lowercase();
        if host == "*" {
            return Some(HostPattern::Any);
        }
        if let Some(suffix) = host.strip_prefix("*.") {
            if valid_host_name(suffix) {
                return Some(HostPattern::Suffix(format!(".{suffix}")));
            }
        } else if valid_host_name(&host) {
            return Some(HostPattern::Exact(host));
        }
        self.invalid(
            path,
            format!("{raw:?}"),
            "expected a host name (httpbin.example.com), a wildcard (*.example.com) or *",
        );
        None
    }

    /// A concrete host name (destination, ServiceEntry, DestinationRule), lower-cased.
    fn host_name(&mut self, raw: Option<&str>, path: &Path) -> Option<String> {
        let Some(raw) = raw else {
            self.err(path, Problem::Missing);
            return None;
        };
        let host = raw.trim().to_ascii_lowercase();
        if valid_host_name(&host) {
            Some(host)
        } else {
            self.invalid(
                path,
                format!("{raw:?}"),
                "expected a host name like httpbin or httpbin.example.com (no wildcards)",
            );
            None
        }
    }

    fn string_match(
        &mut self,
        m: FileStringMatch,
        path: &Path,
        case_insensitive: bool,
    ) -> Option<StringMatch> {
        match (m.exact, m.prefix, m.regex) {
            (Some(e), None, None) => Some(StringMatch::Exact(e)),
            (None, Some(p), None) => Some(StringMatch::Prefix(p)),
            (None, None, Some(r)) => {
                // Checked as written first, so a syntax error quotes the user's pattern.
                if let Err(regex::Error::Syntax(msg)) = regex::Regex::new(&r) {
                    self.invalid(
                        &path.key("regex"),
                        format!("{r:?}"),
                        format!("not a valid regex: {}", one_line(&msg)),
                    );
                    return None;
                }
                let anchored = format!("^(?:{r})$");
                match regex::RegexBuilder::new(&anchored)
                    .case_insensitive(case_insensitive)
                    .size_limit(MAX_REGEX_SIZE)
                    .build()
                {
                    Ok(re) => Some(StringMatch::Regex(re)),
                    Err(e) => {
                        let reason = match e {
                            regex::Error::CompiledTooBig(_) => {
                                format!("the regex compiles to more than {MAX_REGEX_SIZE} bytes")
                            }
                            other => format!("not a valid regex: {}", one_line(&other.to_string())),
                        };
                        self.invalid(&path.key("regex"), format!("{r:?}"), reason);
                        None
                    }
                }
            }
            (None, None, None) => {
                self.rule(path, "a string match needs one of exact, prefix or regex");
                None
            }
            _ => {
                self.rule(path, "exact, prefix and regex are exclusive; use one");
                None
            }
        }
    }

    fn duration(&mut self, raw: &str, path: &Path) -> Option<Duration> {
        match parse_duration(raw) {
            Ok(d) => Some(d),
            Err(e) => {
                self.rule(path, e.to_string());
                None
            }
        }
    }

    /// A certificate or key path: relative paths are resolved against the directory of
    /// the configuration file.
    fn file_path(&mut self, raw: &str, path: &Path) -> Option<PathBuf> {
        if raw.trim().is_empty() {
            self.invalid(path, "\"\"", "expected a file path");
            return None;
        }
        let p = FsPath::new(raw);
        Some(if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        })
    }

    /// Whether a `credentialName` can name a directory in `--secrets-dir`.
    fn secret_name(&mut self, name: &str, path: &Path) -> bool {
        let ok = !(name.contains('/') || name == "." || name == "..");
        if !ok {
            self.invalid(
                path,
                format!("{name:?}"),
                "a credentialName names a directory in --secrets-dir and cannot contain '/'",
            );
        }
        ok
    }

    fn header_name(&mut self, raw: &str, path: &Path) -> Option<String> {
        if !raw.is_empty() && raw.bytes().all(is_token_byte) {
            Some(raw.to_ascii_lowercase())
        } else {
            self.invalid(
                path,
                format!("{raw:?}"),
                "expected an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)",
            );
            None
        }
    }

    fn header_value(&mut self, raw: &str, path: &Path) -> Option<String> {
        if raw.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            self.invalid(
                path,
                format!("{raw:?}"),
                "a header value cannot contain CR, LF or NUL",
            );
            None
        } else {
            Some(raw.to_owned())
        }
    }

    // ---------------------------------------------------------------------------------
    // Gateway

    /// The valid servers with their index in `spec.servers`.
    fn servers(&mut self, raw: FileGatewaySpec) -> Vec<(usize, Server)> {
        let base = spec().key("servers");
        if raw.servers.is_empty() {
            self.rule(&base, "a Gateway needs at least one server");
        }
        let mut servers = Vec::new();
        for (i, s) in raw.servers.into_iter().enumerate() {
            if let Some(server) = self.server(s, &base.index(i)) {
                servers.push((i, server));
            }
        }
        servers
    }

    fn server(&mut self, raw: FileServer, p: &Path) -> Option<Server> {
        let Some(port) = raw.port else {
            self.err(&p.key("port"), Problem::Missing);
            return None;
        };
        let number = self.port(port.number, &p.key("port").key("number"));
        let protocol =
            self.server_protocol(port.protocol.as_deref(), &p.key("port").key("protocol"));
        let bind = raw
            .bind
            .as_deref()
            .and_then(|b| self.bind(b, &p.key("bind")));
        if raw.hosts.is_empty() {
            self.rule(
                &p.key("hosts"),
                "a server needs at least one host; use \"*\" for any",
            );
        }
        let hosts: Vec<HostPattern> = raw
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(j, h)| self.host_pattern(h, &p.key("hosts").index(j)))
            .collect();
        let (number, protocol) = (number?, protocol?);
        let tls_path = p.key("tls");
        // HTTPS with PASSTHROUGH is served as Istio serves it: like TLS.
        let passthrough = raw
            .tls
            .as_ref()
            .is_some_and(|t| t.mode.as_deref() == Some("PASSTHROUGH"));
        let protocol = match protocol {
            Protocol::Https if passthrough => Protocol::TlsPassthrough,
            other => other,
        };
        let (tls, https_redirect) = match (protocol, raw.tls) {
            (Protocol::TlsPassthrough | Protocol::Tcp, tls) => {
                self.l4_server_tls(protocol, tls.as_ref(), &tls_path)?;
                (None, false)
            }
            (Protocol::Https, None) => {
                self.rule(
                    &tls_path,
                    "an HTTPS server needs tls with credentialName, or serverCertificate and privateKey",
                );
                return None;
            }
            (Protocol::Https, Some(tls)) => {
                if tls.https_redirect == Some(true) {
                    self.rule(
                        &tls_path.key("httpsRedirect"),
                        "httpsRedirect applies to HTTP servers only; this server is HTTPS",
                    );
                }
                (Some(self.server_tls(tls, &tls_path)?), false)
            }
            (Protocol::Http, None) => (None, false),
            (Protocol::Http, Some(tls)) => {
                self.http_server_tls(&tls, &tls_path);
                (None, tls.https_redirect.unwrap_or(false))
            }
        };
        let port_name = port.name.unwrap_or_else(|| {
            format!("{}-{number}", protocol_name(protocol).to_ascii_lowercase())
        });
        Some(Server {
            port: number,
            port_name,
            protocol,
            bind,
            hosts,
            tls,
            https_redirect,
        })
    }

    fn server_protocol(&mut self, raw: Option<&str>, path: &Path) -> Option<Protocol> {
        let Some(raw) = raw else {
            self.err(path, Problem::Missing);
            return None;
        };
        let upper = raw.to_ascii_uppercase();
        match upper.as_str() {
            "HTTP" => Some(Protocol::Http),
            "HTTPS" => Some(Protocol::Https),
            "TLS" => Some(Protocol::TlsPassthrough),
            "TCP" => Some(Protocol::Tcp),
            other if OTHER_SERVER_PROTOCOLS.contains(&other) => {
                self.err(
                    path,
                    Problem::ValueNotImplemented {
                        what: format!("protocol {raw}"),
                        accepted: SERVER_PROTOCOLS.to_owned(),
                    },
                );
                None
            }
            _ => {
                self.invalid(
                    path,
                    format!("{raw:?}"),
                    format!("accepted protocols: {SERVER_PROTOCOLS}"),
                );
                None
            }
        }
    }

    fn bind(&mut self, raw: &str, path: &Path) -> Option<IpAddr> {
        if raw.starts_with("unix://") {
            self.err(
                path,
                Problem::ValueNotImplemented {
                    what: "binding to a Unix socket".to_owned(),
                    accepted: "an IP address".to_owned(),
                },
            );
            return None;
        }
        match raw.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.invalid(
                    path,
                    format!("{raw:?}"),
                    "expected an IP address like 0.0.0.0, 127.0.0.1 or ::",
                );
                None
            }
        }
    }

    /// An HTTP server's tls block may only ask for the redirect to HTTPS.
    fn http_server_tls(&mut self, tls: &FileServerTls, p: &Path) {
        for field in l4::tls_fields_set(tls) {
            self.rule(
                &p.key(field),
                format!(
                    "`{field}` applies to HTTPS servers only; the tls block of an HTTP server may only set httpsRedirect"
                ),
            );
        }
    }

    fn server_tls(&mut self, tls: FileServerTls, p: &Path) -> Option<ServerTls> {
        let mode = match tls.mode.as_deref() {
            None => {
                self.err(&p.key("mode"), Problem::Missing);
                None
            }
            Some("SIMPLE") => Some(TlsMode::Simple),
            Some("MUTUAL") => Some(TlsMode::Mutual),
            Some("OPTIONAL_MUTUAL") => Some(TlsMode::OptionalMutual),
            Some(m @ ("AUTO_PASSTHROUGH" | "ISTIO_MUTUAL")) => {
                self.rule(&p.key("mode"), l4::mesh_tls_mode_reason(m));
                None
            }
            Some(other) => {
                self.invalid(
                    &p.key("mode"),
                    format!("{other:?}"),
                    "accepted tls modes: SIMPLE, MUTUAL, OPTIONAL_MUTUAL, PASSTHROUGH",
                );
                None
            }
        };
        if tls.mode.is_some() && mode.is_none() {
            // A mode ringress does not serve: its credential rules would only add noise.
            return None;
        }
        let credential_name = tls
            .credential_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        let mut ca_certificates = None;
        let credential = if let Some(name) = credential_name {
            let fields = [
                ("serverCertificate", &tls.server_certificate),
                ("privateKey", &tls.private_key),
                ("caCertificates", &tls.ca_certificates),
            ];
            let mut ok = true;
            for (field, value) in fields {
                if value.as_deref().is_some_and(|v| v != SDS_PLACEHOLDER) {
                    self.rule(
                        &p.key(field),
                        format!(
                            "credentialName and {field} are both set; use credentialName or the file paths, not both (\"{SDS_PLACEHOLDER}\" is accepted as the placeholder older Istio releases required)"
                        ),
                    );
                    ok = false;
                }
            }
            ok &= self.secret_name(name, &p.key("credentialName"));
            ok.then(|| Credential::Named(name.to_owned()))
        } else {
            let cert = tls.server_certificate.as_deref();
            let key = tls.private_key.as_deref();
            let cred = match (cert, key) {
                (Some(c), Some(k)) => {
                    let cert = self.file_path(c, &p.key("serverCertificate"));
                    let key = self.file_path(k, &p.key("privateKey"));
                    cert.zip(key)
                        .map(|(cert, key)| Credential::Files { cert, key })
                }
                (Some(_), None) => {
                    self.rule(
                        &p.key("privateKey"),
                        "privateKey is required with serverCertificate",
                    );
                    None
                }
                (None, Some(_)) => {
                    self.rule(
                        &p.key("serverCertificate"),
                        "serverCertificate is required with privateKey",
                    );
                    None
                }
                (None, None) => {
                    self.rule(
                        p,
                        "an HTTPS server needs credentialName, or serverCertificate and privateKey",
                    );
                    None
                }
            };
            if let Some(ca) = tls.ca_certificates.as_deref() {
                ca_certificates = self.file_path(ca, &p.key("caCertificates"));
            }
            cred
        };
        let mutual = matches!(mode, Some(TlsMode::Mutual | TlsMode::OptionalMutual));
        if let Some(m) = mode {
            let mode_name = match m {
                TlsMode::Simple => "SIMPLE",
                TlsMode::Mutual => "MUTUAL",
                TlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
            };
            if mutual
                && matches!(credential, Some(Credential::Files { .. }))
                && ca_certificates.is_none()
            {
                self.rule(
                    &p.key("caCertificates"),
                    format!(
                        "tls mode {mode_name} with serverCertificate and privateKey needs caCertificates, the CA bundle client certificates are verified against"
                    ),
                );
            }
            if !mutual && ca_certificates.is_some() {
                self.rule(
                    &p.key("caCertificates"),
                    "caCertificates is only used by tls modes MUTUAL and OPTIONAL_MUTUAL",
                );
            }
            if !mutual && tls.ca_crl.is_some() {
                self.rule(
                    &p.key("caCrl"),
                    "caCrl is only used by tls modes MUTUAL and OPTIONAL_MUTUAL",
                );
            }
            if !mutual && !tls.subject_alt_names.is_empty() {
                self.rule(
                    &p.key("subjectAltNames"),
                    "subjectAltNames is only used by tls modes MUTUAL and OPTIONAL_MUTUAL",
                );
            }
        }
        let min = tls
            .min_protocol_version
            .as_deref()
            .map(|v| self.tls_version(v, &p.key("minProtocolVersion")));
        let max = tls
            .max_protocol_version
            .as_deref()
            .map(|v| self.tls_version(v, &p.key("maxProtocolVersion")));
        let (min, max) = (min.unwrap_or(Ok(None)), max.unwrap_or(Ok(None)));
        if let (Ok(Some(lo)), Ok(Some(hi))) = (min, max)
            && lo > hi
        {
            self.rule(
                &p.key("minProtocolVersion"),
                "minProtocolVersion TLSV1_3 is above maxProtocolVersion TLSV1_2",
            );
        }
        for (i, suite) in tls.cipher_suites.iter().enumerate() {
            if suite.trim().is_empty() {
                self.invalid(
                    &p.key("cipherSuites").index(i),
                    "\"\"",
                    "expected a cipher suite name",
                );
            }
        }
        let ca_crl = match tls.ca_crl.as_deref() {
            Some(crl) => Some(self.file_path(crl, &p.key("caCrl"))?),
            None => None,
        };
        Some(ServerTls {
            mode: mode?,
            credential: credential?,
            ca_certificates,
            ca_crl,
            min_protocol_version: min.ok()?,
            max_protocol_version: max.ok()?,
            cipher_suites: tls.cipher_suites,
            subject_alt_names: tls.subject_alt_names,
        })
    }

    /// `Ok(None)` is TLS_AUTO (the default); `Err` has been reported.
    fn tls_version(&mut self, raw: &str, path: &Path) -> Result<Option<TlsVersion>, ()> {
        match raw {
            "TLS_AUTO" => Ok(None),
            "TLSV1_2" => Ok(Some(TlsVersion::V1_2)),
            "TLSV1_3" => Ok(Some(TlsVersion::V1_3)),
            "TLSV1_0" | "TLSV1_1" => {
                self.invalid(
                    path,
                    format!("{raw:?}"),
                    "ringress speaks TLS 1.2 and 1.3 only; accepted: TLS_AUTO, TLSV1_2, TLSV1_3",
                );
                Err(())
            }
            other => {
                self.invalid(
                    path,
                    format!("{other:?}"),
                    "accepted: TLS_AUTO, TLSV1_2, TLSV1_3",
                );
                Err(())
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // VirtualService

    fn virtual_service(
        &mut self,
        raw: FileVirtualServiceSpec,
        origin: Origin,
        name: String,
        namespace: Option<String>,
    ) -> VirtualService {
        let s = spec();
        if raw.hosts.is_empty() {
            self.rule(&s.key("hosts"), "a VirtualService needs at least one host");
        }
        let hosts: Vec<HostPattern> = raw
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| self.host_pattern(h, &s.key("hosts").index(i)))
            .collect();
        let mut gateways = Vec::new();
        match raw.gateways {
            None => self.rule(
                &s.key("gateways"),
                "gateways is missing, which in Istio means the mesh only; ringress serves gateway traffic only: list the Gateways this VirtualService applies to",
            ),
            Some(list) if list.is_empty() => self.rule(
                &s.key("gateways"),
                "gateways is empty; ringress serves gateway traffic only: list the Gateways this VirtualService applies to",
            ),
            Some(list) => {
                for (i, g) in list.iter().enumerate() {
                    if let Some(name) = self.gateway_name(g, &s.key("gateways").index(i)) {
                        gateways.push(name);
                    }
                }
            }
        }
        if raw.http.is_empty() && raw.tls.is_empty() && raw.tcp.is_empty() {
            self.rule(
                &s.key("http"),
                "a VirtualService needs at least one http, tls or tcp route",
            );
        }
        let tls = self.l4_routes("tls", raw.tls, Some(&hosts), &gateways);
        let tcp = self.l4_routes("tcp", raw.tcp, None, &gateways);
        let mut http = Vec::new();
        for (i, raw_route) in raw.http.into_iter().enumerate() {
            let at = s.key("http").index(i);
            let Some(route) = self.http_route(raw_route, &at) else {
                continue;
            };
            // A match's `gateways` narrow the VirtualService's own: a Gateway it is
            // not bound to never brings it a request.
            for (j, m) in route.matches.iter().enumerate() {
                for (k, g) in m.gateways.iter().enumerate() {
                    let path = at.key("match").index(j).key("gateways").index(k);
                    self.bound_gateway(g, &gateways, &path);
                }
            }
            http.push(route);
        }
        VirtualService {
            origin,
            name,
            namespace,
            hosts,
            gateways,
            http,
            tls,
            tcp,
        }
    }

    /// Whether a match's Gateway `g` is one of the VirtualService's `gateways`
    /// (reported when not: a Gateway it is not bound to never brings it traffic).
    fn bound_gateway(&mut self, g: &str, gateways: &[String], path: &Path) -> bool {
        let bound = gateways.iter().any(|b| b == g);
        if !bound {
            self.rule(
                path,
                format!(
                    "Gateway {g:?} is not in this VirtualService's gateways ({}): the match could never apply",
                    gateways.join(", ")
                ),
            );
        }
        bound
    }

    /// A match's `gateways`, each bound to the VirtualService; `None` after reporting.
    fn match_gateways(
        &mut self,
        raw: Option<Vec<String>>,
        gateways: &[String],
        p: &Path,
    ) -> Option<Vec<String>> {
        let mut ok = true;
        let mut out = Vec::new();
        for (i, g) in raw.unwrap_or_default().iter().enumerate() {
            match self.gateway_name(g, &p.index(i)) {
                Some(name) => {
                    ok &= self.bound_gateway(&name, gateways, &p.index(i));
                    out.push(name);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A match's `port` (the gateway port); `Err` after reporting.
    fn match_port(&mut self, raw: Option<i64>, path: &Path) -> Result<Option<u16>, ()> {
        let Some(n) = raw else {
            return Ok(None);
        };
        match u16::try_from(n).ok().filter(|&n| n > 0) {
            Some(port) => Ok(Some(port)),
            None => {
                self.invalid(path, n.to_string(), "expected a port from 1 to 65535");
                Err(())
            }
        }
    }

    fn http_route(&mut self, raw: FileHttpRoute, p: &Path) -> Option<HttpRoute> {
        let mut ok = true;
        let mut matches = Vec::new();
        for (j, m) in raw.matches.into_iter().enumerate() {
            match self.route_match(m, &p.key("match").index(j)) {
                Some(m) => matches.push(m),
                None => ok = false,
            }
        }
        let present: Vec<&str> = [
            ("route", raw.route.is_some()),
            ("redirect", raw.redirect.is_some()),
            ("directResponse", raw.direct_response.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, present)| present.then_some(n))
        .collect();
        let action = match present.len() {
            0 => {
                self.rule(
                    p,
                    "an http route needs one of route, redirect or directResponse",
                );
                None
            }
            1 => {
                if let Some(route) = raw.route {
                    self.destinations(route, &p.key("route"))
                        .map(RouteAction::Route)
                } else if let Some(redirect) = raw.redirect {
                    self.redirect(redirect, &p.key("redirect"))
                        .map(RouteAction::Redirect)
                } else if let Some(direct) = raw.direct_response {
                    self.direct_response(direct, &p.key("directResponse"))
                } else {
                    None
                }
            }
            _ => {
                self.rule(
                    p,
                    format!(
                        "route, redirect and directResponse are exclusive; found {}",
                        present.join(" and ")
                    ),
                );
                None
            }
        };
        let only = match present.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        let rewrite = match raw.rewrite {
            None => None,
            Some(_) if only.is_some_and(|a| a != "route") => {
                self.rule(
                    &p.key("rewrite"),
                    format!(
                        "rewrite applies to route only, not to {}",
                        only.unwrap_or_default()
                    ),
                );
                ok = false;
                None
            }
            Some(rw) => {
                if rw.uri.is_none() && rw.authority.is_none() {
                    self.rule(&p.key("rewrite"), "rewrite needs uri or authority");
                    ok = false;
                }
                if rw.uri.as_deref().is_some_and(str::is_empty) {
                    self.invalid(&p.key("rewrite").key("uri"), "\"\"", "expected a path");
                    ok = false;
                }
                if let Some(a) = rw.authority.as_deref()
                    && (a.is_empty()
                        || a.bytes()
                            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control()))
                {
                    self.invalid(
                        &p.key("rewrite").key("authority"),
                        format!("{a:?}"),
                        "expected a host name, optionally with :port",
                    );
                    ok = false;
                }
                Some(Rewrite {
                    uri: rw.uri,
                    authority: rw.authority,
                })
            }
        };
        let timeout = match raw.timeout.as_deref() {
            Some(t) => {
                let d = self.duration(t, &p.key("timeout"));
                ok &= d.is_some();
                d
            }
            None => None,
        };
        let retries = match raw.retries {
            Some(r) => {
                let r = self.retries(r, &p.key("retries"));
                ok &= r.is_some();
                r
            }
            None => None,
        };
        let headers = match raw.headers {
            Some(h) => {
                let h = self.header_operations(h, &p.key("headers"));
                ok &= h.is_some();
                h.unwrap_or_default()
            }
            None => HeaderOperations::default(),
        };
        let raw_policies = traffic::RawPolicies {
            cors: raw.cors_policy,
            fault: raw.fault,
            mirror: raw.mirror,
            mirror_percentage: raw.mirror_percentage,
            mirror_percent: raw.mirror_percent,
            mirrors: raw.mirrors,
        };
        let policies = self.route_policies(raw_policies, only, p);
        ok &= policies.is_some();
        let action = action?;
        ok.then_some(HttpRoute {
            name: raw.name,
            matches,
            action,
            rewrite,
            timeout,
            retries,
            headers,
            policies: policies.unwrap_or_default(),
        })
    }

    fn route_match(&mut self, raw: FileHttpMatch, p: &Path) -> Option<RouteMatch> {
        let ignore_case = raw.ignore_uri_case.unwrap_or(false);
        let mut ok = true;
        let mut one = |this: &mut Self, m: Option<FileStringMatch>, field: &str, ci: bool| match m {
            Some(m) => {
                let r = this.string_match(m, &p.key(field), ci);
                ok &= r.is_some();
                r
            }
            None => None,
        };
        let uri = one(self, raw.uri, "uri", ignore_case);
        let authority = one(self, raw.authority, "authority", false);
        let method = one(self, raw.method, "method", false);
        let scheme = one(self, raw.scheme, "scheme", false);
        let headers = self.header_matches(raw.headers, &p.key("headers"));
        let without_headers = self.header_matches(raw.without_headers, &p.key("withoutHeaders"));
        ok &= headers.is_some() && without_headers.is_some();
        let mut query_params = Vec::new();
        for (name, m) in raw.query_params.0 {
            let qp = p.key("queryParams").key(&name);
            if m.prefix.is_some() {
                ok = false;
                self.rule(
                    &qp.key("prefix"),
                    "Istio matches query parameters by exact or regex only",
                );
                continue;
            }
            match self.string_match(m, &qp, false) {
                Some(m) if !name.is_empty() => query_params.push((name, m)),
                Some(_) => {
                    ok = false;
                    self.invalid(&qp, "\"\"".to_owned(), "expected a query parameter name");
                }
                None => ok = false,
            }
        }
        let port = self.match_port(raw.port, &p.key("port"));
        ok &= port.is_ok();
        let port = port.unwrap_or_default();
        let mut gateways = Vec::new();
        for (i, g) in raw.gateways.unwrap_or_default().iter().enumerate() {
            match self.gateway_name(g, &p.key("gateways").index(i)) {
                Some(name) => gateways.push(name),
                None => ok = false,
            }
        }
        ok.then_some(RouteMatch {
            name: raw.name,
            uri,
            authority,
            method,
            scheme,
            headers: headers.unwrap_or_default(),
            without_headers: without_headers.unwrap_or_default(),
            query_params,
            port,
            gateways,
            ignore_uri_case: ignore_case,
        })
    }

    /// A VirtualService's Gateway reference (`name` or `namespace/name`) as its name;
    /// `mesh` is refused, ringress serving gateway traffic only.
    fn gateway_name(&mut self, raw: &str, path: &Path) -> Option<String> {
        let short = raw.rsplit('/').next().unwrap_or(raw).trim();
        if short == "mesh" {
            self.rule(
                path,
                "`mesh` (traffic between sidecars) is not served: ringress serves gateway traffic only; list Gateways instead",
            );
            None
        } else if short.is_empty() {
            self.invalid(path, format!("{raw:?}"), "expected a Gateway name");
            None
        } else {
            Some(short.to_owned())
        }
    }

    /// `headers` or `withoutHeaders` of a match: lower-case names and their conditions.
    fn header_matches(
        &mut self,
        raw: Ordered<FileStringMatch>,
        path: &Path,
    ) -> Option<Vec<(String, StringMatch)>> {
        let mut ok = true;
        let mut out = Vec::new();
        for (name, m) in raw.0 {
            let hp = path.key(&name);
            let n = self.header_name(&name, &hp);
            let m = self.string_match(m, &hp, false);
            match n.zip(m) {
                Some(pair) => out.push(pair),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn destinations(
        &mut self,
        raw: Vec<FileRouteDestination>,
        p: &Path,
    ) -> Option<Vec<WeightedDestination>> {
        if raw.is_empty() {
            self.rule(p, "route is empty; list at least one destination");
            return None;
        }
        let single = raw.len() == 1;
        let mut ok = true;
        let mut out = Vec::new();
        for (k, d) in raw.into_iter().enumerate() {
            let dp = p.index(k);
            let weight = match d.weight {
                None if single => Some(100),
                None => Some(0),
                Some(w) if (0..=100).contains(&w) => {
                    if single && w != 100 {
                        self.rule(
                            &dp.key("weight"),
                            format!("a single destination takes all traffic; its weight must be 100 or omitted, found {w}"),
                        );
                        None
                    } else {
                        u32::try_from(w).ok()
                    }
                }
                Some(w) => {
                    self.invalid(&dp.key("weight"), w.to_string(), "a weight is 0 to 100");
                    None
                }
            };
            let Some(dest) = d.destination else {
                self.err(&dp.key("destination"), Problem::Missing);
                ok = false;
                continue;
            };
            let subset = dest.subset.clone();
            match (self.destination(dest, &dp.key("destination")), weight) {
                (Some((host, port)), Some(weight)) => out.push(WeightedDestination {
                    host,
                    port,
                    subset,
                    weight,
                }),
                _ => ok = false,
            }
        }
        if !ok {
            return None;
        }
        if !single {
            let sum: u32 = out.iter().map(|d| d.weight).sum();
            if sum != 100 {
                let weights: Vec<String> = out.iter().map(|d| d.weight.to_string()).collect();
                self.rule(
                    p,
                    format!(
                        "destination weights add up to {sum} ({}); they must add up to 100",
                        weights.join(" + ")
                    ),
                );
                return None;
            }
        }
        Some(out)
    }

    /// A route's or a mirror's `destination`: its host and port.
    fn destination(&mut self, raw: FileDestination, p: &Path) -> Option<(String, Option<u16>)> {
        let host = self.host_name(raw.host.as_deref(), &p.key("host"));
        let port = match raw.port {
            None => Some(None),
            Some(ps) => self.port(ps.number, &p.key("port").key("number")).map(Some),
        };
        Some((host?, port?))
    }

    fn redirect(&mut self, raw: FileRedirect, p: &Path) -> Option<Redirect> {
        let mut ok = true;
        let code = match raw.redirect_code {
            None => 301,
            Some(c) if REDIRECT_CODES.contains(&c) => c as u16,
            Some(c) => {
                self.invalid(
                    &p.key("redirectCode"),
                    c.to_string(),
                    "accepted redirect codes: 301, 302, 303, 307, 308",
                );
                ok = false;
                301
            }
        };
        let port = match raw.port {
            Some(n) => {
                let port = self.port(Some(n), &p.key("port"));
                ok &= port.is_some();
                port
            }
            None => None,
        };
        let scheme = match raw.scheme.as_deref() {
            Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {
                Some(s.to_ascii_lowercase())
            }
            Some(s) => {
                self.invalid(
                    &p.key("scheme"),
                    format!("{s:?}"),
                    "accepted schemes: http, https",
                );
                ok = false;
                None
            }
            None => None,
        };
        if let Some(uri) = raw.uri.as_deref()
            && !uri.starts_with('/')
        {
            self.invalid(
                &p.key("uri"),
                format!("{uri:?}"),
                "a redirect uri is a path starting with /",
            );
            ok = false;
        }
        if let Some(a) = raw.authority.as_deref()
            && (a.is_empty()
                || a.bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'/'))
        {
            self.invalid(
                &p.key("authority"),
                format!("{a:?}"),
                "expected a host name, optionally with :port",
            );
            ok = false;
        }
        ok.then_some(Redirect {
            uri: raw.uri,
            authority: raw.authority,
            scheme,
            port,
            code,
        })
    }

    fn direct_response(&mut self, raw: FileDirectResponse, p: &Path) -> Option<RouteAction> {
        let Some(status) = raw.status else {
            self.err(&p.key("status"), Problem::Missing);
            return None;
        };
        if !(200..=599).contains(&status) {
            self.invalid(
                &p.key("status"),
                status.to_string(),
                "a directResponse status is 200 to 599",
            );
            return None;
        }
        Some(RouteAction::DirectResponse {
            status: status as u16,
            body: raw.body.and_then(|b| b.string),
        })
    }

    fn retries(&mut self, raw: FileRetries, p: &Path) -> Option<Retries> {
        let attempts = match raw.attempts {
            None => {
                self.err(&p.key("attempts"), Problem::Missing);
                None
            }
            Some(a) if (0..=MAX_RETRY_ATTEMPTS).contains(&a) => u32::try_from(a).ok(),
            Some(a) => {
                self.invalid(
                    &p.key("attempts"),
                    a.to_string(),
                    format!("attempts is 0 to {MAX_RETRY_ATTEMPTS}"),
                );
                None
            }
        };
        let per_try_timeout = match raw.per_try_timeout.as_deref() {
            Some(t) => Some(self.duration(t, &p.key("perTryTimeout"))?),
            None => None,
        };
        let mut retry_on = Vec::new();
        if let Some(on) = raw.retry_on.as_deref() {
            for cond in on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                let numeric = cond.len() == 3 && cond.bytes().all(|b| b.is_ascii_digit());
                if numeric || RETRY_ON.contains(&cond) {
                    retry_on.push(cond.to_owned());
                } else {
                    self.invalid(
                        &p.key("retryOn"),
                        format!("{cond:?}"),
                        format!(
                            "accepted: {}, or a status code like 503",
                            RETRY_ON.join(", ")
                        ),
                    );
                    return None;
                }
            }
        }
        Some(Retries {
            attempts: attempts?,
            per_try_timeout,
            retry_on,
        })
    }

    fn header_operations(&mut self, raw: FileHeaders, p: &Path) -> Option<HeaderOperations> {
        let request = match raw.request {
            Some(r) => self.header_ops(r, &p.key("request")),
            None => Some(HeaderOps::default()),
        };
        let response = match raw.response {
            Some(r) => self.header_ops(r, &p.key("response")),
            None => Some(HeaderOps::default()),
        };
        Some(HeaderOperations {
            request: request?,
            response: response?,
        })
    }

    fn header_ops(&mut self, raw: FileHeaderOperations, p: &Path) -> Option<HeaderOps> {
        let mut ok = true;
        let mut pairs = |this: &mut Self, list: Ordered<String>, field: &str| {
            let mut out = Vec::new();
            for (name, value) in list.0 {
                let hp = p.key(field).key(&name);
                let n = this.header_name(&name, &hp);
                let v = this.header_value(&value, &hp);
                match n.zip(v) {
                    Some(pair) => out.push(pair),
                    None => ok = false,
                }
            }
            out
        };
        let set = pairs(self, raw.set, "set");
        let add = pairs(self, raw.add, "add");
        let mut remove = Vec::new();
        for (i, name) in raw.remove.iter().enumerate() {
            match self.header_name(name, &p.key("remove").index(i)) {
                Some(n) => remove.push(n),
                None => ok = false,
            }
        }
        ok.then_some(HeaderOps { set, add, remove })
    }

    // ---------------------------------------------------------------------------------
    // ServiceEntry

    fn service_entry(
        &mut self,
        raw: FileServiceEntrySpec,
        origin: Origin,
        name: String,
    ) -> Option<ServiceEntry> {
        let s = spec();
        let mut ok = true;
        if raw.hosts.is_empty() {
            self.rule(&s.key("hosts"), "a ServiceEntry needs at least one host");
            ok = false;
        }
        let mut hosts = Vec::new();
        for (i, h) in raw.hosts.iter().enumerate() {
            let hp = s.key("hosts").index(i);
            if h.contains('*') {
                self.err(
                    &hp,
                    Problem::ValueNotImplemented {
                        what: format!("wildcard ServiceEntry host {h:?}"),
                        accepted: "host names like httpbin or api.example.com".to_owned(),
                    },
                );
                ok = false;
            } else if let Some(h) = self.host_name(Some(h), &hp) {
                hosts.push(h);
            } else {
                ok = false;
            }
        }
        if raw.ports.is_empty() {
            self.rule(&s.key("ports"), "a ServiceEntry needs at least one port");
            ok = false;
        }
        let mut ports: Vec<ServicePort> = Vec::new();
        for (i, port) in raw.ports.into_iter().enumerate() {
            let pp = s.key("ports").index(i);
            let number = self.port(port.number, &pp.key("number"));
            let target_port = port
                .target_port
                .map(|t| self.port(Some(t), &pp.key("targetPort")));
            let pname = port.name.filter(|n| !n.trim().is_empty());
            if pname.is_none() {
                self.err(&pp.key("name"), Problem::Missing);
            }
            let protocol = self.upstream_protocol(
                port.protocol.as_deref(),
                pname.as_deref(),
                &pp.key("protocol"),
            );
            match (number, pname, protocol, target_port) {
                (Some(number), Some(pname), Some(protocol), None | Some(Some(_))) => {
                    if let Some(prev) = ports.iter().find(|q| q.number == number) {
                        self.rule(
                            &pp.key("number"),
                            format!("port {number} is listed twice (also as {})", prev.name),
                        );
                        ok = false;
                    } else if ports.iter().any(|q| q.name == pname) {
                        self.rule(&pp.key("name"), format!("port name {pname} is used twice"));
                        ok = false;
                    }
                    ports.push(ServicePort {
                        number,
                        name: pname,
                        protocol,
                        target_port: target_port.flatten(),
                    });
                }
                _ => ok = false,
            }
        }
        let resolution = match raw.resolution.as_deref() {
            Some("STATIC") => Some(Resolution::Static),
            Some("DNS" | "DNS_ROUND_ROBIN") => Some(Resolution::Dns),
            Some("NONE") => {
                self.err(
                    &s.key("resolution"),
                    Problem::ValueNotImplemented {
                        what: "resolution NONE (forwarding to the original destination address)"
                            .to_owned(),
                        accepted: "STATIC, DNS, DNS_ROUND_ROBIN".to_owned(),
                    },
                );
                None
            }
            Some(other) => {
                self.invalid(
                    &s.key("resolution"),
                    format!("{other:?}"),
                    "accepted: STATIC, DNS, DNS_ROUND_ROBIN",
                );
                None
            }
            None => {
                self.rule(
                    &s.key("resolution"),
                    "resolution is missing; accepted: STATIC, DNS, DNS_ROUND_ROBIN",
                );
                None
            }
        };
        let mut endpoints = Vec::new();
        for (i, e) in raw.endpoints.into_iter().enumerate() {
            let ep = s.key("endpoints").index(i);
            match self.endpoint(e, &ep, resolution, &ports) {
                Some(e) => endpoints.push(e),
                None => ok = false,
            }
        }
        if resolution == Some(Resolution::Static) && endpoints.is_empty() && ok {
            self.rule(
                &s.key("endpoints"),
                "resolution STATIC needs endpoints with IP addresses",
            );
            ok = false;
        }
        let resolution = resolution?;
        ok.then_some(ServiceEntry {
            origin,
            name,
            hosts,
            ports,
            resolution,
            endpoints,
        })
    }

    /// A port's protocol: its `protocol` field, else what its name says as Istio
    /// reads it (`grpc`, `grpc-web`, `http2-api`: the part before the first `-`),
    /// else HTTP (Istio would sniff; ringress speaks HTTP/1.1 to such a port).
    fn upstream_protocol(
        &mut self,
        raw: Option<&str>,
        name: Option<&str>,
        path: &Path,
    ) -> Option<String> {
        let Some(raw) = raw else {
            let named = name
                .map(|n| n.split('-').next().unwrap_or(n).to_ascii_uppercase())
                .filter(|p| p == "HTTP2" || p == "GRPC");
            return Some(named.unwrap_or_else(|| "HTTP".to_owned()));
        };
        let upper = raw.to_ascii_uppercase();
        if UPSTREAM_PROTOCOLS.contains(&upper.as_str()) {
            Some(upper)
        } else if OTHER_UPSTREAM_PROTOCOLS.contains(&upper.as_str()) {
            self.err(
                path,
                Problem::ValueNotImplemented {
                    what: format!("upstream protocol {raw}"),
                    accepted: UPSTREAM_PROTOCOLS.join(", "),
                },
            );
            None
        } else {
            let accepted = format!("accepted protocols: {}", UPSTREAM_PROTOCOLS.join(", "));
            self.invalid(path, format!("{raw:?}"), accepted);
            None
        }
    }

    fn endpoint(
        &mut self,
        raw: FileWorkloadEntry,
        p: &Path,
        resolution: Option<Resolution>,
        ports: &[ServicePort],
    ) -> Option<Endpoint> {
        let mut ok = true;
        let address = match raw.address {
            None => {
                self.err(&p.key("address"), Problem::Missing);
                None
            }
            Some(a) if a.starts_with("unix://") => {
                self.err(
                    &p.key("address"),
                    Problem::ValueNotImplemented {
                        what: "a Unix socket endpoint".to_owned(),
                        accepted: "IP addresses and host names".to_owned(),
                    },
                );
                None
            }
            Some(a) => match resolution {
                Some(Resolution::Static) if a.parse::<IpAddr>().is_err() => {
                    self.invalid(
                        &p.key("address"),
                        format!("{a:?}"),
                        "resolution STATIC needs IP addresses; use resolution DNS for host names",
                    );
                    None
                }
                Some(Resolution::Dns) if a.parse::<IpAddr>().is_err() => {
                    self.host_name(Some(&a), &p.key("address"))
                }
                _ => Some(a),
            },
        };
        let mut endpoint_ports = BTreeMap::new();
        for (name, number) in raw.ports.0 {
            let pp = p.key("ports").key(&name);
            if !ports.iter().any(|q| q.name == name) {
                let names: Vec<&str> = ports.iter().map(|q| q.name.as_str()).collect();
                self.rule(
                    &pp,
                    format!(
                        "port name {name} is not one of the ServiceEntry's ports ({})",
                        names.join(", ")
                    ),
                );
                ok = false;
            } else if let Some(n) = self.port(Some(number), &pp) {
                endpoint_ports.insert(name, n);
            } else {
                ok = false;
            }
        }
        let weight = match raw.weight {
            None => None,
            Some(w) => match u32::try_from(w) {
                Ok(w) if w > 0 => Some(w),
                _ => {
                    self.invalid(
                        &p.key("weight"),
                        w.to_string(),
                        "an endpoint weight is 1 to 4294967295",
                    );
                    ok = false;
                    None
                }
            },
        };
        let labels = self.labels(raw.labels, &p.key("labels"));
        let address = address?;
        ok.then_some(Endpoint {
            address,
            ports: endpoint_ports,
            weight,
            labels: labels?,
        })
    }

    // ---------------------------------------------------------------------------------
    // DestinationRule

    fn destination_rule(
        &mut self,
        raw: FileDestinationRuleSpec,
        origin: Origin,
        name: String,
    ) -> Option<DestinationRule> {
        let s = spec();
        let host = match raw.host.as_deref() {
            Some(h) if h.contains('*') => {
                self.err(
                    &s.key("host"),
                    Problem::ValueNotImplemented {
                        what: format!("wildcard DestinationRule host {h:?}"),
                        accepted: "host names like httpbin or api.example.com".to_owned(),
                    },
                );
                None
            }
            h => self.host_name(h, &s.key("host")),
        };
        let (traffic_policy, port_level_settings) =
            self.traffic_policy_and_ports(raw.traffic_policy, &s.key("trafficPolicy"));
        let subsets = self.subsets(raw.subsets, &s.key("subsets"));
        Some(DestinationRule {
            origin,
            name,
            host: host?,
            traffic_policy: traffic_policy?,
            port_level_settings: port_level_settings?,
            subsets: subsets?,
            health_check: self.health_check()?,
        })
    }

    /// `trafficPolicy.connectionPool`: `tcp.maxConnections` (at least 1),
    /// `tcp.connectTimeout` and `http.idleTimeout` (positive durations).
    fn connection_pool(
        &mut self,
        raw: Option<FileConnectionPool>,
        path: &Path,
    ) -> Option<ConnectionPool> {
        let Some(raw) = raw else {
            return Some(ConnectionPool::default());
        };
        let mut pool = ConnectionPool::default();
        let mut ok = true;
        if let Some(tcp) = raw.tcp {
            let tcp_path = path.key("tcp");
            if let Some(max) = tcp.max_connections {
                match u32::try_from(max) {
                    Ok(max) if max >= 1 => pool.max_connections = Some(max),
                    _ => {
                        self.invalid(
                            &tcp_path.key("maxConnections"),
                            max.to_string(),
                            "expected a number of connections from 1 to 4294967295",
                        );
                        ok = false;
                    }
                }
            }
            if let Some(raw) = &tcp.connect_timeout {
                pool.connect_timeout = self.positive_duration(raw, &tcp_path.key("connectTimeout"));
                ok &= pool.connect_timeout.is_some();
            }
        }
        if let Some(http) = raw.http {
            pool.requests = self.request_limits(&http, &path.key("http"))?;
            if let Some(raw) = http.idle_timeout {
                pool.idle_timeout =
                    self.positive_duration(&raw, &path.key("http").key("idleTimeout"));
                ok &= pool.idle_timeout.is_some();
            }
            match http.h2_upgrade_policy.as_deref() {
                None | Some("DEFAULT") => {}
                Some("UPGRADE") => pool.h2_upgrade = Some(true),
                Some("DO_NOT_UPGRADE") => pool.h2_upgrade = Some(false),
                Some(other) => {
                    self.invalid(
                        &path.key("http").key("h2UpgradePolicy"),
                        format!("{other:?}"),
                        "accepted: DEFAULT, DO_NOT_UPGRADE, UPGRADE",
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(pool)
    }

    /// A duration that must be more than zero.
    fn positive_duration(&mut self, raw: &str, path: &Path) -> Option<Duration> {
        match self.duration(raw, path)? {
            d if d.is_zero() => {
                self.invalid(path, format!("{raw:?}"), "expected a duration above 0s");
                None
            }
            d => Some(d),
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Letters, digits, `-` and `_` in dot-separated non-empty labels.
fn valid_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= MAX_HOST_LEN
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

// ---------------------------------------------------------------------------------------
// Checks across documents

fn cross_checks(report: &mut Report<'_>, infos: &[DocInfo<'_>], objects: &Objects) {
    duplicate_names(report, infos);
    auth::cross_checks(report, infos, objects);

    // VirtualService gateways must name Gateways of this file.
    // Names come from the documents, not the validated Gateways, so a Gateway with its
    // own errors does not also make every VirtualService on it fail.
    let gateway_names: BTreeSet<&str> = infos
        .iter()
        .filter(|d| d.kind.as_deref() == Some("Gateway"))
        .filter_map(|d| d.name.as_deref())
        .collect();
    for (pos, _) in &objects.virtual_services {
        let doc = &infos[*pos];
        let Some(list) = doc.root.get("spec").and_then(|s| s.get("gateways")) else {
            continue;
        };
        let Value::Seq(items) = &list.value else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let Value::Str(raw) = &item.value else {
                continue;
            };
            let short = raw.rsplit('/').next().unwrap_or(raw).trim();
            if short == "mesh" || short.is_empty() || gateway_names.contains(short) {
                continue;
            }
            let known: Vec<&str> = gateway_names.iter().copied().collect();
            let known = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            report.add(
                doc,
                &spec().key("gateways").index(i),
                Problem::Rule(format!(
                    "no Gateway named {short} in this file (Gateways: {known})"
                )),
            );
        }
    }

    // Servers sharing a port agree on protocol and bind; on HTTPS, one host per port.
    struct PortOwner<'g> {
        doc: usize,
        server: usize,
        protocol: Protocol,
        bind: Option<IpAddr>,
        hosts: HashMap<&'g HostPattern, (usize, usize)>,
    }
    let mut ports: BTreeMap<u16, PortOwner<'_>> = BTreeMap::new();
    for (pos, gw, indexes) in &objects.gateways {
        let doc = &infos[*pos];
        for (server, &index) in gw.servers.iter().zip(indexes) {
            let sp = spec().key("servers").index(index);
            let owner = ports.entry(server.port).or_insert_with(|| PortOwner {
                doc: *pos,
                server: index,
                protocol: server.protocol,
                bind: server.bind,
                hosts: HashMap::new(),
            });
            let first = format!(
                "{} spec.servers[{}]",
                infos[owner.doc].label(),
                owner.server
            );
            if owner.protocol != server.protocol {
                report.add(
                    doc,
                    &sp.key("port").key("protocol"),
                    Problem::Rule(format!(
                        "port {} is already served as {} by {first}; servers sharing a port must use the same protocol",
                        server.port,
                        protocol_name(owner.protocol)
                    )),
                );
                continue;
            }
            if owner.bind != server.bind {
                let show =
                    |b: Option<IpAddr>| b.map_or("all addresses".to_owned(), |ip| ip.to_string());
                report.add(
                    doc,
                    &sp.key("bind"),
                    Problem::Rule(format!(
                        "port {} is already bound to {} by {first}; servers sharing a port must use the same bind",
                        server.port,
                        show(owner.bind)
                    )),
                );
                continue;
            }
            if server.protocol != Protocol::Https {
                continue;
            }
            for (hi, host) in server.hosts.iter().enumerate() {
                if let Some(&(odoc, oserver)) = owner.hosts.get(host) {
                    report.add(
                        doc,
                        &sp.key("hosts").index(hi),
                        Problem::Rule(format!(
                            "host {host} is already served on HTTPS port {} by {} spec.servers[{oserver}]; SNI could not choose between their certificates",
                            server.port,
                            infos[odoc].label()
                        )),
                    );
                } else {
                    owner.hosts.insert(host, (*pos, index));
                }
            }
        }
    }

    // One DestinationRule per host, one ServiceEntry per host.
    let mut dr_hosts: HashMap<&str, usize> = HashMap::new();
    for (pos, dr) in &objects.destination_rules {
        if let Some(&first) = dr_hosts.get(dr.host.as_str()) {
            report.add(
                &infos[*pos],
                &spec().key("host"),
                Problem::Rule(format!(
                    "host {} already has a DestinationRule: {}",
                    dr.host,
                    infos[first].label()
                )),
            );
        } else {
            dr_hosts.insert(&dr.host, *pos);
        }
    }
    let mut se_hosts: HashMap<&str, usize> = HashMap::new();
    for (pos, se) in &objects.service_entries {
        for (i, h) in se.hosts.iter().enumerate() {
            match se_hosts.get(h.as_str()) {
                Some(&first) if first != *pos => report.add(
                    &infos[*pos],
                    &spec().key("hosts").index(i),
                    Problem::Rule(format!(
                        "host {h} is already declared by {}",
                        infos[first].label()
                    )),
                ),
                _ => {
                    se_hosts.insert(h, *pos);
                }
            }
        }
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    p.istio_name()
}

/// Two documents of the same kind and namespace may not share a name.
fn duplicate_names(report: &mut Report<'_>, infos: &[DocInfo<'_>]) {
    let mut seen: HashMap<(String, String, String), usize> = HashMap::new();
    for (i, doc) in infos.iter().enumerate() {
        let (Some(kind), Some(name)) = (&doc.kind, &doc.name) else {
            continue;
        };
        let namespace = scalar_string(doc.root.get("metadata").and_then(|m| m.get("namespace")))
            .unwrap_or_default();
        let key = (kind.clone(), namespace, name.clone());
        if let Some(&first) = seen.get(&key) {
            report.add(
                doc,
                &root().key("metadata").key("name"),
                Problem::Rule(format!(
                    "{kind} {name} is already defined in {}",
                    infos[first].label()
                )),
            );
        } else {
            seen.insert(key, i);
        }
    }
}

/// A field that may be absent (`None`) or set and checked (`Some(None)` when it was
/// invalid): `None` when it was invalid, else whether it is set.
fn valid_if_set<T>(field: Option<Option<T>>) -> Option<Option<T>> {
    match field {
        None => Some(None),
        Some(checked) => checked.map(Some),
    }
}
