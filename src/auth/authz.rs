//! `AuthorizationPolicy` evaluated on the shard, after authentication and before
//! routing, in Istio's order: a request that one DENY policy matches is refused;
//! then, if there is any ALLOW policy, a request that none matches is refused; AUDIT
//! policies only record that they matched. A refusal is Envoy's RBAC answer: `403`,
//! body `RBAC: access denied`, and in the access log
//! `rbac_access_denied_matched_policy[ns[<namespace>]-policy[<name>]-rule[<i>]]` (or
//! `[none]` when no ALLOW policy matched).
//!
//! What each field reads of a request:
//! - `principals`, `source.principal`: the verified client certificate's identity
//!   (its first URI SAN, else its first DNS SAN); a SPIFFE id matches with or without
//!   `spiffe://`, as Istio writes principals without it. `namespaces`: the
//!   `/ns/<namespace>/` part of that id.
//! - `requestPrincipals`, `request.auth.*`: the verified JWT (`iss/sub`, `aud`,
//!   `azp`, its claims); absent without one.
//! - `ipBlocks`, `source.ip`: the connection's peer. `remoteIpBlocks`, `remote.ip`:
//!   with `--trusted-proxies N`, the Nth address of `x-forwarded-for` from the right
//!   (the peer when the header has fewer), else the peer.
//! - `hosts`: the request's authority, case-insensitively, with or without its port;
//!   `ports`, `destination.port`: the gateway port; `paths`: the normalised path
//!   without its query; `methods`; `connection.sni`; `destination.ip`.

use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use super::{Verified, jwt};
use crate::config::{
    AuthorizationPolicy, AuthzAction, AuthzCondition, AuthzOperation, AuthzRule, AuthzSource,
    ConditionKey, ConditionValues, Config, ValueMatch, Values,
};
use crate::http::RequestHead;

/// The body of an RBAC refusal (Envoy's).
pub(crate) const ACCESS_DENIED: &str = "RBAC: access denied";
/// The access log's details when no ALLOW policy matched.
pub(crate) const DENIED_NO_MATCH: &str = "rbac_access_denied_matched_policy[none]";

/// Outcomes, as counters label them.
pub(crate) const ALLOWED: &str = "allowed";
pub(crate) const DENIED_BY_POLICY: &str = "denied_by_policy";
pub(crate) const DENIED_NO_ALLOW_MATCH: &str = "denied_no_allow_match";
pub(crate) const AUDITED: &str = "audited";
pub(crate) const AUTHZ_OUTCOMES: [&str; 4] =
    [ALLOWED, DENIED_BY_POLICY, DENIED_NO_ALLOW_MATCH, AUDITED];

/// A policy as a snapshot holds it: its rules with their names.
struct Policy {
    rules: Vec<(AuthzRule, Box<str>)>,
}

impl Policy {
    fn new(policy: &AuthorizationPolicy) -> Policy {
        Policy {
            rules: policy
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| (r.clone(), policy.rule_name(i).into_boxed_str()))
                .collect(),
        }
    }

    /// The name of the first rule `req` matches.
    fn matched(&self, req: &AuthzRequest<'_>) -> Option<&str> {
        self.rules
            .iter()
            .find(|(rule, _)| rule_matches(rule, req))
            .map(|(_, name)| &**name)
    }
}

/// A snapshot's authorization: its policies by action.
pub(crate) struct Authz {
    deny: Vec<Policy>,
    allow: Vec<Policy>,
    audit: Vec<Policy>,
}

/// What a request is, as the policies read it.
pub(crate) struct AuthzRequest<'a> {
    pub(crate) head: &'a RequestHead,
    /// The normalised path, with its query.
    pub(crate) path: &'a str,
    /// The authority (`:authority` or `Host`).
    pub(crate) host: &'a str,
    pub(crate) peer: IpAddr,
    /// The gateway's address and port the request came to.
    pub(crate) local: Option<SocketAddr>,
    pub(crate) port: u16,
    pub(crate) sni: Option<&'a str>,
    /// The client certificate's `x-forwarded-client-cert` value, when verified.
    pub(crate) client_cert: Option<&'a str>,
    pub(crate) token: Option<&'a Verified>,
    /// `--trusted-proxies`.
    pub(crate) trusted_proxies: u8,
}

/// The outcome of a request that was not refused.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Allowed<'p> {
    /// Rules of AUDIT policies that matched.
    pub(crate) audited: Vec<&'p str>,
}

/// A refusal: which rule (of a DENY policy) refused, `None` when no ALLOW policy
/// matched.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused<'p> {
    pub(crate) rule: Option<&'p str>,
}

impl Refused<'_> {
    /// The outcome's label (one of [`AUTHZ_OUTCOMES`]).
    pub(crate) fn label(&self) -> &'static str {
        match self.rule {
            Some(_) => DENIED_BY_POLICY,
            None => DENIED_NO_ALLOW_MATCH,
        }
    }

    /// The access log's `%RESPONSE_CODE_DETAILS%`, as Envoy words it.
    pub(crate) fn details(&self) -> String {
        match self.rule {
            Some(rule) => format!("rbac_access_denied_matched_policy[{rule}]"),
            None => DENIED_NO_MATCH.to_owned(),
        }
    }
}

impl Authz {
    /// The authorization `config` declares, `None` without any policy.
    pub(crate) fn new(config: &Config) -> Option<Authz> {
        if config.authorization_policies.is_empty() {
            return None;
        }
        let of = |action| {
            config
                .authorization_policies
                .iter()
                .filter(|p| p.action == action)
                .map(Policy::new)
                .collect()
        };
        Some(Authz {
            deny: of(AuthzAction::Deny),
            allow: of(AuthzAction::Allow),
            audit: of(AuthzAction::Audit),
        })
    }

    /// Decides `req`.
    pub(crate) fn check(&self, req: &AuthzRequest<'_>) -> Result<Allowed<'_>, Refused<'_>> {
        if let Some(rule) = self.deny.iter().find_map(|p| p.matched(req)) {
            return Err(Refused { rule: Some(rule) });
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|p| p.matched(req).is_some()) {
            return Err(Refused { rule: None });
        }
        Ok(Allowed {
            audited: self.audit.iter().filter_map(|p| p.matched(req)).collect(),
        })
    }
}

fn rule_matches(rule: &AuthzRule, req: &AuthzRequest<'_>) -> bool {
    (rule.from.is_empty() || rule.from.iter().any(|s| source_matches(s, req)))
        && (rule.to.is_empty() || rule.to.iter().any(|o| operation_matches(o, req)))
        && rule.when.iter().all(|c| condition_matches(c, req))
}

fn source_matches(source: &AuthzSource, req: &AuthzRequest<'_>) -> bool {
    let peer = peer_principal(req);
    source.principals.admit(|m| principal_matches(m, peer))
        && source
            .request_principals
            .admit(|m| req.token.is_some_and(|t| m.matches(&t.principal)))
        && source
            .namespaces
            .admit(|m| peer.and_then(namespace).is_some_and(|ns| m.matches(ns)))
        && source.ip_blocks.admit(|b| b.contains(req.peer))
        && source
            .remote_ip_blocks
            .admit(|b| b.contains(remote_ip(req)))
}

fn operation_matches(operation: &AuthzOperation, req: &AuthzRequest<'_>) -> bool {
    let path = req.path.split(['?', '#']).next().unwrap_or(req.path);
    operation.hosts.admit(|m| host_matches(m, req.host))
        && operation.ports.admit(|p| *p == req.port)
        && operation.methods.admit(|m| m.matches(req.head.method()))
        && operation.paths.admit(|m| m.matches(path))
}

fn condition_matches(condition: &AuthzCondition, req: &AuthzRequest<'_>) -> bool {
    match &condition.values {
        ConditionValues::Ips(blocks) => {
            let ip = match condition.key {
                ConditionKey::SourceIp => Some(req.peer),
                ConditionKey::RemoteIp => Some(remote_ip(req)),
                _ => req.local.map(|a| a.ip()),
            };
            blocks.admit(|b| ip.is_some_and(|ip| b.contains(ip)))
        }
        ConditionValues::Ports(ports) => ports.admit(|p| *p == req.port),
        ConditionValues::Strings(values) => strings_admit(&condition.key, values, req),
    }
}

/// A string condition: the attribute may have several values (a header sent twice
/// is one value joined with `,`; audiences and list claims are several), and one of
/// them matching counts.
fn strings_admit(key: &ConditionKey, values: &Values<ValueMatch>, req: &AuthzRequest<'_>) -> bool {
    let token = req.token;
    match key {
        ConditionKey::RequestHeader(name) => {
            let joined = header_value(req.head, name);
            values.admit(|m| joined.as_deref().is_some_and(|v| m.matches(v)))
        }
        ConditionKey::SourcePrincipal => {
            let peer = peer_principal(req);
            values.admit(|m| principal_matches(m, peer))
        }
        ConditionKey::SourceNamespace => {
            let ns = peer_principal(req).and_then(namespace);
            values.admit(|m| ns.is_some_and(|ns| m.matches(ns)))
        }
        ConditionKey::RequestPrincipal => {
            values.admit(|m| token.is_some_and(|t| m.matches(&t.principal)))
        }
        ConditionKey::Audiences => {
            values.admit(|m| token.is_some_and(|t| t.audiences.iter().any(|a| m.matches(a))))
        }
        ConditionKey::Presenter => values.admit(|m| {
            token
                .and_then(|t| t.claims.get("azp"))
                .and_then(Value::as_str)
                .is_some_and(|azp| m.matches(azp))
        }),
        ConditionKey::Claim(path) => {
            let claim =
                token.and_then(|t| jwt::claim_at(&t.claims, path.iter().map(String::as_str)));
            values.admit(|m| claim.is_some_and(|c| claim_matches(m, c)))
        }
        ConditionKey::Sni => values.admit(|m| req.sni.is_some_and(|s| m.matches(s))),
        // Parsed as addresses or ports, never strings.
        ConditionKey::SourceIp
        | ConditionKey::RemoteIp
        | ConditionKey::DestinationIp
        | ConditionKey::DestinationPort => false,
    }
}

/// A claim matches as a string, or as a list one of whose strings matches (Istio's
/// `groups`); numbers and booleans in their JSON form.
fn claim_matches(m: &ValueMatch, claim: &Value) -> bool {
    match claim {
        Value::String(s) => m.matches(s),
        Value::Array(list) => list.iter().any(|v| match v {
            Value::String(s) => m.matches(s),
            Value::Number(_) | Value::Bool(_) => m.matches(&v.to_string()),
            _ => false,
        }),
        Value::Number(_) | Value::Bool(_) => m.matches(&claim.to_string()),
        _ => false,
    }
}

/// Every value of header `name`, joined with `,` (as Envoy's header matcher sees a
/// repeated header).
fn header_value(head: &RequestHead, name: &str) -> Option<String> {
    let mut joined: Option<String> = None;
    for (n, value) in head.headers() {
        if !n.eq_ignore_ascii_case(name) {
            continue;
        }
        let value = String::from_utf8_lossy(value);
        match &mut joined {
            Some(j) => {
                j.push(',');
                j.push_str(&value);
            }
            None => joined = Some(value.into_owned()),
        }
    }
    joined
}

/// The host matches as sent, or without its port (`example.com:8443`).
fn host_matches(m: &ValueMatch, host: &str) -> bool {
    let host = match host.bytes().any(|b| b.is_ascii_uppercase()) {
        true => std::borrow::Cow::Owned(host.to_ascii_lowercase()),
        false => std::borrow::Cow::Borrowed(host),
    };
    if m.matches(&host) {
        return true;
    }
    let bare = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => return false,
    };
    m.matches(bare)
}

/// The client certificate's identity: its first URI SAN, else its first DNS SAN,
/// read from the `x-forwarded-client-cert` value ringress made of it.
pub(crate) fn peer_principal<'a>(req: &AuthzRequest<'a>) -> Option<&'a str> {
    principal_of(req.client_cert?)
}

/// See [`peer_principal`]: `Hash=…;Subject="…";URI=…;DNS=…`, the subject quoted with
/// `\` escapes (so a `;URI=` inside it is not an element).
fn principal_of(xfcc: &str) -> Option<&str> {
    let after_subject = match xfcc.find(";Subject=\"") {
        Some(start) => {
            let quoted = &xfcc[start + ";Subject=\"".len()..];
            let mut escaped = false;
            let end = quoted.char_indices().find_map(|(i, c)| {
                let close = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                close.then_some(i)
            })?;
            &quoted[end + 1..]
        }
        None => xfcc,
    };
    let element = |key: &str| {
        after_subject
            .split(';')
            .find_map(|e| e.strip_prefix(key))
            .filter(|v| !v.is_empty())
    };
    element("URI=").or_else(|| element("DNS="))
}

/// Whether a principal value matches the peer's identity: as it is, or, for a SPIFFE
/// id, without `spiffe://` (how Istio writes principals).
fn principal_matches(m: &ValueMatch, peer: Option<&str>) -> bool {
    let Some(peer) = peer else { return false };
    m.matches(peer)
        || peer
            .strip_prefix("spiffe://")
            .is_some_and(|id| m.matches(id))
}

/// The namespace of a SPIFFE id `spiffe://<domain>/ns/<namespace>/sa/<account>`.
fn namespace(principal: &str) -> Option<&str> {
    let id = principal.strip_prefix("spiffe://")?;
    let (_, rest) = id.split_once("/ns/")?;
    Some(rest.split('/').next().unwrap_or(rest)).filter(|ns| !ns.is_empty())
}

/// The client's address behind `--trusted-proxies` proxies (see the module doc).
pub(crate) fn remote_ip(req: &AuthzRequest<'_>) -> IpAddr {
    let hops = usize::from(req.trusted_proxies);
    if hops == 0 {
        return req.peer;
    }
    let mut listed: Vec<&str> = Vec::new();
    for (n, value) in req.head.headers() {
        if n.eq_ignore_ascii_case("x-forwarded-for")
            && let Ok(value) = std::str::from_utf8(value)
        {
            listed.extend(value.split(',').map(str::trim).filter(|a| !a.is_empty()));
        }
    }
    listed
        .len()
        .checked_sub(hops)
        .and_then(|i| listed[i].parse::<IpAddr>().ok())
        .unwrap_or(req.peer)
}

#[cfg(test)]
mod tests;
