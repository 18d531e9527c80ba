//! The validated `AuthorizationPolicy`: who may reach what, as Istio's fields say it,
//! every value already parsed (address blocks, ports, Istio's `*` string forms).
//! Evaluating a request against them is [`crate::auth::authz`]'s job.

use std::net::IpAddr;

use super::Origin;

/// A `security.istio.io` `AuthorizationPolicy`.
#[derive(Debug, Clone)]
pub struct AuthorizationPolicy {
    pub origin: Origin,
    /// `metadata.namespace` (`default` when absent), for Envoy's policy names.
    pub namespace: String,
    pub name: String,
    pub action: AuthzAction,
    /// None: the policy matches no request (an ALLOW policy without rules allows
    /// nothing).
    pub rules: Vec<AuthzRule>,
}

impl AuthorizationPolicy {
    /// Envoy's name for rule `index` of this policy, as Istio generates it (and as
    /// `rbac_access_denied_matched_policy[...]` quotes it).
    pub fn rule_name(&self, index: usize) -> String {
        format!("ns[{}]-policy[{}]-rule[{index}]", self.namespace, self.name)
    }
}

/// `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthzAction {
    Allow,
    Deny,
    /// Matches are recorded (counters, debug log); the request is not affected.
    Audit,
}

impl AuthzAction {
    pub fn name(self) -> &'static str {
        match self {
            AuthzAction::Allow => "ALLOW",
            AuthzAction::Deny => "DENY",
            AuthzAction::Audit => "AUDIT",
        }
    }
}

/// `rules[]`: one of `from`, one of `to` and every `when` must match; an empty list
/// matches any request.
#[derive(Debug, Clone, Default)]
pub struct AuthzRule {
    pub from: Vec<AuthzSource>,
    pub to: Vec<AuthzOperation>,
    pub when: Vec<AuthzCondition>,
}

/// A field and its `not…` form: the request's value must match one of `values`
/// (when there are any) and none of `not_values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values<T> {
    pub values: Vec<T>,
    pub not_values: Vec<T>,
}

impl<T> Default for Values<T> {
    fn default() -> Self {
        Values {
            values: Vec::new(),
            not_values: Vec::new(),
        }
    }
}

impl<T> Values<T> {
    /// Whether the field says nothing.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.not_values.is_empty()
    }

    /// Whether the request's value fits, `matches` telling whether one value of the
    /// field matches it.
    pub fn admit(&self, matches: impl Fn(&T) -> bool) -> bool {
        (self.values.is_empty() || self.values.iter().any(&matches))
            && !self.not_values.iter().any(matches)
    }
}

/// `from[].source`.
#[derive(Debug, Clone, Default)]
pub struct AuthzSource {
    /// The mutual-TLS client certificate's identity.
    pub principals: Values<ValueMatch>,
    /// `iss/sub` of the verified JWT.
    pub request_principals: Values<ValueMatch>,
    /// The namespace of the client certificate's SPIFFE id (`.../ns/<namespace>/...`).
    pub namespaces: Values<ValueMatch>,
    /// The connection's peer address.
    pub ip_blocks: Values<IpBlock>,
    /// The client address `x-forwarded-for` gives, past the trusted proxies.
    pub remote_ip_blocks: Values<IpBlock>,
}

/// `to[].operation`.
#[derive(Debug, Clone, Default)]
pub struct AuthzOperation {
    /// Lower-case; a request's host matches with or without its port.
    pub hosts: Values<ValueMatch>,
    /// The gateway port the request came to.
    pub ports: Values<u16>,
    pub methods: Values<ValueMatch>,
    /// Matched against the normalised path without its query.
    pub paths: Values<ValueMatch>,
}

/// `when[]`.
#[derive(Debug, Clone)]
pub struct AuthzCondition {
    pub key: ConditionKey,
    pub values: ConditionValues,
}

/// The attributes a `when` key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionKey {
    /// `request.headers[<name>]` (the name lower-case).
    RequestHeader(String),
    /// `source.ip`
    SourceIp,
    /// `remote.ip`
    RemoteIp,
    /// `source.principal`
    SourcePrincipal,
    /// `source.namespace`
    SourceNamespace,
    /// `request.auth.principal`
    RequestPrincipal,
    /// `request.auth.audiences`
    Audiences,
    /// `request.auth.presenter` (the token's `azp`)
    Presenter,
    /// `request.auth.claims[a][b]…`: the path into the token's claims.
    Claim(Vec<String>),
    /// `destination.ip`
    DestinationIp,
    /// `destination.port`
    DestinationPort,
    /// `connection.sni`
    Sni,
}

impl ConditionKey {
    /// The key as a policy writes it (`request.headers[x-token]`).
    pub fn istio_name(&self) -> String {
        match self {
            ConditionKey::RequestHeader(name) => format!("request.headers[{name}]"),
            ConditionKey::SourceIp => "source.ip".into(),
            ConditionKey::RemoteIp => "remote.ip".into(),
            ConditionKey::SourcePrincipal => "source.principal".into(),
            ConditionKey::SourceNamespace => "source.namespace".into(),
            ConditionKey::RequestPrincipal => "request.auth.principal".into(),
            ConditionKey::Audiences => "request.auth.audiences".into(),
            ConditionKey::Presenter => "request.auth.presenter".into(),
            ConditionKey::Claim(path) => format!("request.auth.claims[{}]", path.join("][")),
            ConditionKey::DestinationIp => "destination.ip".into(),
            ConditionKey::DestinationPort => "destination.port".into(),
            ConditionKey::Sni => "connection.sni".into(),
        }
    }
}

/// A `when`'s `values`/`notValues`, parsed as its key's type.
#[derive(Debug, Clone)]
pub enum ConditionValues {
    Strings(Values<ValueMatch>),
    Ips(Values<IpBlock>),
    Ports(Values<u16>),
}

/// Istio's string forms in authorization fields: `abc` exact, `abc*` prefix, `*abc`
/// suffix, `*` any (present) value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Any,
}

impl ValueMatch {
    /// Reads Istio's form; `*` elsewhere than at one end is left to the caller to
    /// refuse.
    pub fn parse(raw: &str) -> ValueMatch {
        if raw == "*" {
            ValueMatch::Any
        } else if let Some(suffix) = raw.strip_prefix('*') {
            ValueMatch::Suffix(suffix.to_owned())
        } else if let Some(prefix) = raw.strip_suffix('*') {
            ValueMatch::Prefix(prefix.to_owned())
        } else {
            ValueMatch::Exact(raw.to_owned())
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(e) => value == e,
            ValueMatch::Prefix(p) => value.starts_with(p.as_str()),
            ValueMatch::Suffix(s) => value.ends_with(s.as_str()),
            ValueMatch::Any => true,
        }
    }
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpBlock {
    /// Reads `a.b.c.d[/n]` or an IPv6 address with an optional `/n`; the host bits
    /// may be set (Istio masks them).
    pub fn parse(raw: &str) -> Result<IpBlock, String> {
        let (addr, prefix) = match raw.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (raw, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| "expected an IP address or a CIDR block like 10.0.0.0/8".to_owned())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("a prefix length is 0 to {max}")),
            },
        };
        Ok(IpBlock { addr, prefix })
    }

    /// Whether `ip` is in the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(block), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(block) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(block), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(block) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_blocks_contain_their_addresses_only() {
        let block = IpBlock::parse("10.1.0.0/16").unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!block.contains("2001:db8::1".parse().unwrap()));
        let one = IpBlock::parse("192.0.2.7").unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        assert!(
            IpBlock::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        let v6 = IpBlock::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(
            IpBlock::parse("::/0")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "10.0.0/8", "host", "::/129", "1.2.3.4/x", ""] {
            assert!(IpBlock::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn istio_string_forms() {
        assert!(ValueMatch::parse("/admin*").matches("/admin/users"));
        assert!(!ValueMatch::parse("/admin*").matches("/public"));
        assert!(ValueMatch::parse("*.json").matches("/a/b.json"));
        assert!(ValueMatch::parse("*").matches(""));
        assert!(ValueMatch::parse("GET").matches("GET"));
        assert!(!ValueMatch::parse("GET").matches("get"));
        let values = Values {
            values: vec![ValueMatch::parse("/a*")],
            not_values: vec![ValueMatch::parse("/a/secret")],
        };
        assert!(values.admit(|m| m.matches("/a/b")));
        assert!(!values.admit(|m| m.matches("/a/secret")));
        assert!(!values.admit(|m| m.matches("/b")));
        assert!(Values::<ValueMatch>::default().admit(|_| false));
    }
}
