//! Checks of `AuthorizationPolicy`: the action (CUSTOM is refused: ringress has no
//! external authorizer), every source, operation and condition field parsed into its
//! type (address blocks, ports, Istio's `*` forms), and what Istio's own validation
//! refuses (an empty `source` or `operation`, a condition without values, a `*` inside
//! a value, an unknown condition key).

use super::*;
use crate::config::file_authz::*;
use crate::config::model_authz::*;

/// The `when` keys ringress evaluates, as messages list them.
const CONDITION_KEYS: &str = "request.headers[<name>], source.ip, remote.ip, source.principal, source.namespace, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[<claim>], destination.ip, destination.port, connection.sni";

impl Check<'_, '_> {
    pub(super) fn authorization_policy(
        &mut self,
        raw: FileAuthorizationPolicySpec,
        origin: Origin,
        name: String,
        namespace: Option<String>,
    ) -> Option<AuthorizationPolicy> {
        let action = match raw.action.as_deref() {
            None | Some("ALLOW") => AuthzAction::Allow,
            Some("DENY") => AuthzAction::Deny,
            Some("AUDIT") => AuthzAction::Audit,
            Some("CUSTOM") => {
                self.err(
                    &spec().key("action"),
                    Problem::ValueNotImplemented {
                        what: "action CUSTOM (an external authorizer)".into(),
                        accepted: "ALLOW, DENY, AUDIT".into(),
                    },
                );
                return None;
            }
            Some(other) => {
                self.invalid(
                    &spec().key("action"),
                    format!("{other:?}"),
                    "expected ALLOW, DENY, AUDIT or CUSTOM",
                );
                return None;
            }
        };
        if let Some(provider) = raw.provider {
            let name = provider.name.unwrap_or_default();
            self.rule(
                &spec().key("provider"),
                format!("provider {name:?} is only for action CUSTOM"),
            );
            return None;
        }
        let mut ok = true;
        let mut rules = Vec::new();
        for (i, rule) in raw.rules.into_iter().enumerate() {
            match self.authz_rule(rule, &spec().key("rules").index(i)) {
                Some(rule) => rules.push(rule),
                None => ok = false,
            }
        }
        ok.then(|| AuthorizationPolicy {
            origin,
            namespace: namespace.unwrap_or_else(|| "default".to_owned()),
            name,
            action,
            rules,
        })
    }

    fn authz_rule(&mut self, raw: FileAuthzRule, p: &Path) -> Option<AuthzRule> {
        let mut ok = true;
        let mut rule = AuthzRule::default();
        for (i, from) in raw.from.into_iter().enumerate() {
            let fp = p.key("from").index(i).key("source");
            match from.source {
                None => {
                    self.err(&fp, Problem::Missing);
                    ok = false;
                }
                Some(source) => match self.authz_source(source, &fp) {
                    Some(source) => rule.from.push(source),
                    None => ok = false,
                },
            }
        }
        for (i, to) in raw.to.into_iter().enumerate() {
            let tp = p.key("to").index(i).key("operation");
            match to.operation {
                None => {
                    self.err(&tp, Problem::Missing);
                    ok = false;
                }
                Some(operation) => match self.authz_operation(operation, &tp) {
                    Some(operation) => rule.to.push(operation),
                    None => ok = false,
                },
            }
        }
        for (i, when) in raw.when.into_iter().enumerate() {
            match self.authz_condition(when, &p.key("when").index(i)) {
                Some(condition) => rule.when.push(condition),
                None => ok = false,
            }
        }
        ok.then_some(rule)
    }

    fn authz_source(&mut self, raw: FileAuthzSource, p: &Path) -> Option<AuthzSource> {
        let source = AuthzSource {
            principals: self.value_matches(raw.principals, raw.not_principals, p, "principals")?,
            request_principals: self.value_matches(
                raw.request_principals,
                raw.not_request_principals,
                p,
                "requestPrincipals",
            )?,
            namespaces: self.value_matches(raw.namespaces, raw.not_namespaces, p, "namespaces")?,
            ip_blocks: self.ip_blocks(raw.ip_blocks, raw.not_ip_blocks, p, "ipBlocks")?,
            remote_ip_blocks: self.ip_blocks(
                raw.remote_ip_blocks,
                raw.not_remote_ip_blocks,
                p,
                "remoteIpBlocks",
            )?,
        };
        let empty = source.principals.is_empty()
            && source.request_principals.is_empty()
            && source.namespaces.is_empty()
            && source.ip_blocks.is_empty()
            && source.remote_ip_blocks.is_empty();
        if empty {
            self.rule(p, "a source needs at least one field (principals, requestPrincipals, namespaces, ipBlocks, remoteIpBlocks or a not… form)");
            return None;
        }
        Some(source)
    }

    fn authz_operation(&mut self, raw: FileAuthzOperation, p: &Path) -> Option<AuthzOperation> {
        let lower = |list: Vec<String>| -> Vec<String> {
            list.into_iter().map(|h| h.to_ascii_lowercase()).collect()
        };
        let operation = AuthzOperation {
            hosts: self.value_matches(lower(raw.hosts), lower(raw.not_hosts), p, "hosts")?,
            ports: self.ports(raw.ports, raw.not_ports, p, "ports")?,
            methods: self.value_matches(raw.methods, raw.not_methods, p, "methods")?,
            paths: self.paths(raw.paths, raw.not_paths, p)?,
        };
        let empty = operation.hosts.is_empty()
            && operation.ports.is_empty()
            && operation.methods.is_empty()
            && operation.paths.is_empty();
        if empty {
            self.rule(p, "an operation needs at least one field (hosts, ports, methods, paths or a not… form)");
            return None;
        }
        Some(operation)
    }

    fn authz_condition(&mut self, raw: FileAuthzCondition, p: &Path) -> Option<AuthzCondition> {
        let Some(key) = raw.key else {
            self.err(&p.key("key"), Problem::Missing);
            return None;
        };
        if raw.values.is_empty() && raw.not_values.is_empty() {
            self.rule(p, format!("condition {key:?} needs values or notValues"));
            return None;
        }
        let parsed = self.condition_key(&key, &p.key("key"))?;
        let values = match parsed {
            ConditionKey::SourceIp | ConditionKey::RemoteIp | ConditionKey::DestinationIp => {
                ConditionValues::Ips(self.ip_blocks(raw.values, raw.not_values, p, "values")?)
            }
            ConditionKey::DestinationPort => {
                ConditionValues::Ports(self.ports(raw.values, raw.not_values, p, "values")?)
            }
            _ => ConditionValues::Strings(self.value_matches(
                raw.values,
                raw.not_values,
                p,
                "values",
            )?),
        };
        Some(AuthzCondition {
            key: parsed,
            values,
        })
    }

    fn condition_key(&mut self, key: &str, p: &Path) -> Option<ConditionKey> {
        let simple = match key {
            "source.ip" => Some(ConditionKey::SourceIp),
            "remote.ip" => Some(ConditionKey::RemoteIp),
            "source.principal" => Some(ConditionKey::SourcePrincipal),
            "source.namespace" => Some(ConditionKey::SourceNamespace),
            "request.auth.principal" => Some(ConditionKey::RequestPrincipal),
            "request.auth.audiences" => Some(ConditionKey::Audiences),
            "request.auth.presenter" => Some(ConditionKey::Presenter),
            "destination.ip" => Some(ConditionKey::DestinationIp),
            "destination.port" => Some(ConditionKey::DestinationPort),
            "connection.sni" => Some(ConditionKey::Sni),
            _ => None,
        };
        if simple.is_some() {
            return simple;
        }
        if let Some(name) = key
            .strip_prefix("request.headers[")
            .and_then(|rest| rest.strip_suffix(']'))
        {
            return self.header_name(name, p).map(ConditionKey::RequestHeader);
        }
        if let Some(rest) = key.strip_prefix("request.auth.claims")
            && let Some(path) = bracketed(rest)
        {
            return Some(ConditionKey::Claim(path));
        }
        self.invalid(
            p,
            format!("{key:?}"),
            format!("not a condition key ringress evaluates; accepted: {CONDITION_KEYS}"),
        );
        None
    }

    /// A field of Istio string forms and its `not…` form.
    fn value_matches(
        &mut self,
        values: Vec<String>,
        not_values: Vec<String>,
        p: &Path,
        field: &str,
    ) -> Option<Values<ValueMatch>> {
        self.values(values, not_values, p, field, |raw| {
            let inner = raw.strip_prefix('*').unwrap_or(raw);
            let inner = inner.strip_suffix('*').unwrap_or(inner);
            if raw.is_empty() {
                Err("a value cannot be empty".to_owned())
            } else if raw != "*" && (inner.is_empty() || inner.contains('*')) {
                Err("* may only begin or end a value (prefix*, *suffix, or * for any)".to_owned())
            } else {
                Ok(ValueMatch::parse(raw))
            }
        })
    }

    /// `paths`/`notPaths`: Istio's forms; its `{*}`/`{**}` templates are not read.
    fn paths(
        &mut self,
        values: Vec<String>,
        not_values: Vec<String>,
        p: &Path,
    ) -> Option<Values<ValueMatch>> {
        let templated = values
            .iter()
            .chain(&not_values)
            .position(|v| v.contains("{*}") || v.contains("{**}"));
        if let Some(i) = templated {
            let field = if i < values.len() {
                "paths"
            } else {
                "notPaths"
            };
            let index = if i < values.len() {
                i
            } else {
                i - values.len()
            };
            self.err(
                &p.key(field).index(index),
                Problem::ValueNotImplemented {
                    what: "path templates ({*}, {**})".into(),
                    accepted: "exact paths, prefix*, *suffix, *".into(),
                },
            );
            return None;
        }
        self.value_matches(values, not_values, p, "paths")
    }

    fn ip_blocks(
        &mut self,
        values: Vec<String>,
        not_values: Vec<String>,
        p: &Path,
        field: &str,
    ) -> Option<Values<IpBlock>> {
        self.values(values, not_values, p, field, IpBlock::parse)
    }

    fn ports(
        &mut self,
        values: Vec<String>,
        not_values: Vec<String>,
        p: &Path,
        field: &str,
    ) -> Option<Values<u16>> {
        self.values(values, not_values, p, field, |raw| {
            match raw.trim().parse::<u16>() {
                Ok(port) if port != 0 => Ok(port),
                _ => Err("a port number is 1 to 65535".to_owned()),
            }
        })
    }

    /// Parses `values` (at `p.field[i]`) and `not_values` (at `p.notField[i]`, or
    /// `notValues` for conditions), reporting every bad one.
    fn values<T>(
        &mut self,
        values: Vec<String>,
        not_values: Vec<String>,
        p: &Path,
        field: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Values<T>> {
        let not_field = match field {
            "values" => "notValues".to_owned(),
            f => {
                let mut chars = f.chars();
                let first = chars.next().map(|c| c.to_ascii_uppercase());
                format!("not{}{}", first.unwrap_or_default(), chars.as_str())
            }
        };
        let mut ok = true;
        let mut parse_all = |list: Vec<String>, name: &str, check: &mut Self| -> Vec<T> {
            let mut out = Vec::new();
            for (i, raw) in list.into_iter().enumerate() {
                match parse(&raw) {
                    Ok(v) => out.push(v),
                    Err(reason) => {
                        check.invalid(&p.key(name).index(i), format!("{raw:?}"), reason);
                        ok = false;
                    }
                }
            }
            out
        };
        let values = parse_all(values, field, self);
        let not_values = parse_all(not_values, &not_field, self);
        ok.then_some(Values { values, not_values })
    }
}

/// `[a][b]…` → `["a", "b"]`; `None` unless the whole text is such brackets, each
/// non-empty.
fn bracketed(mut rest: &str) -> Option<Vec<String>> {
    let mut path = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        if end == 0 {
            return None;
        }
        path.push(inner[..end].to_owned());
        rest = &inner[end + 1..];
    }
    (!path.is_empty()).then_some(path)
}
