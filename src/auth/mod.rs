//! End-user authentication at the gateway: the JWTs of `RequestAuthentication` rules
//! and of a v1alpha1 `Policy`'s origins, checked on the shard before a request is
//! routed (as Envoy's `jwt_authn` and Istio's `authn` filters run before its router),
//! answered with Istio's exact refusals.
//!
//! - [`keys`]: a JWKS document → the keys a token may be verified with.
//! - [`jwt`]: one token's form, claims, time, audiences and signature.
//! - [`fetch`]: the control thread's fetching of remote key sets (never a shard's).
//! - `jws_vectors` (tests only): the published JWS vectors of RFC 7515, 7520 and 8037
//!   checked with [`keys`] and [`jwt`].
//! - this file: where tokens are found in a request, which provider checks them,
//!   and what the request becomes: refused, or passed on with its principal and the
//!   header changes the rules ask for.
//!
//! The keys a shard verifies with come in a [`KeyRing`] the control thread sends
//! through the shard's mailbox; a provider whose keys never loaded fails its tokens
//! (`Jwks remote fetch is failed`) while everything else serves.

pub(crate) mod fetch;
#[cfg(test)]
mod jws_vectors;
pub(crate) mod jwt;
mod keys;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, JwksSource, JwtProvider, OriginPolicy, TokenLocation, TriggerRule};
use crate::http::RequestHead;
pub(crate) use jwt::JwtError;
pub(crate) use keys::KeySet;

/// The body of a v1alpha1 Policy's refusal (Istio's authn filter).
pub(crate) const ORIGIN_FAILED: &str = "Origin authentication failed.";

/// The key sets of every remote source, as the control thread last fetched them,
/// keyed by the URL fetched (`jwksUri`, or the discovery document's URL).
#[derive(Debug, Default)]
pub(crate) struct KeyRing {
    pub(crate) sources: BTreeMap<String, SourceKeys>,
}

/// One remote source's keys and how its fetches went.
#[derive(Debug, Default, Clone)]
pub(crate) struct SourceKeys {
    /// The last key set that loaded; kept when a later refresh fails.
    pub(crate) keys: Option<Arc<KeySet>>,
    /// The JWKS URL: the source's own, or what its discovery document named.
    pub(crate) jwks_uri: Option<String>,
    pub(crate) last_success: Option<SystemTime>,
    pub(crate) last_attempt: Option<SystemTime>,
    pub(crate) last_error: Option<String>,
}

impl KeyRing {
    fn keys(&self, source: &JwksSource) -> Option<&Arc<KeySet>> {
        self.sources.get(source.url()?)?.keys.as_ref()
    }
}

/// A provider as a snapshot holds it: its rule, and its inline keys read.
struct Provider {
    rule: JwtProvider,
    inline: Option<Arc<KeySet>>,
}

impl Provider {
    fn new(rule: &JwtProvider) -> Provider {
        let inline = match &rule.keys {
            // Checked when the configuration loaded.
            JwksSource::Inline(text) => KeySet::parse(text).ok().map(Arc::new),
            _ => None,
        };
        Provider {
            rule: rule.clone(),
            inline,
        }
    }

    fn keys<'r>(&'r self, ring: &'r KeyRing) -> Option<&'r Arc<KeySet>> {
        self.inline.as_ref().or_else(|| ring.keys(&self.rule.keys))
    }

    /// A parsed token checked against this provider in Envoy's order: issuer, time,
    /// audiences, signature.
    fn verify(&self, parsed: &jwt::Parsed<'_>, ring: &KeyRing, now: u64) -> Result<(), JwtError> {
        if parsed.issuer.as_deref() != Some(self.rule.issuer.as_str()) {
            return Err(JwtError::UnknownIssuer);
        }
        parsed.check_time(now)?;
        parsed.check_audiences(&self.rule.audiences)?;
        let keys = self.keys(ring).ok_or(JwtError::JwksFetchFail)?;
        parsed.check_signature(keys)
    }
}

/// The v1alpha1 Policy as a snapshot holds it.
struct Origins {
    origins: Vec<(Provider, Vec<TriggerRule>)>,
    optional: bool,
    use_origin: bool,
}

/// A snapshot's authentication: the providers of every `RequestAuthentication` and
/// the v1alpha1 Policy, if any.
pub(crate) struct Authn {
    providers: Vec<Provider>,
    origins: Option<Origins>,
    /// Headers named by `outputPayloadToHeader`/`outputClaimToHeaders`: removed from
    /// every request before any are set, so a client cannot forge them.
    output_headers: Vec<String>,
}

/// What the request-side code needs to know of a request.
pub(crate) struct AuthRequest<'a> {
    pub(crate) head: &'a RequestHead,
    /// The path the request is routed by (normalised), with its query.
    pub(crate) path: &'a str,
    pub(crate) scheme: &'a str,
    pub(crate) host: &'a str,
}

/// Header changes for the upstream request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct HeaderEdits {
    /// Lower-case names of headers not forwarded.
    pub(crate) remove: Vec<String>,
    pub(crate) add: Vec<(String, String)>,
}

/// A request that passed.
#[derive(Debug, Default)]
pub(crate) struct Passed {
    /// `iss/sub` of the verified token.
    pub(crate) principal: Option<String>,
    pub(crate) edits: HeaderEdits,
}

/// A refusal, answered by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denial {
    pub(crate) status: u16,
    pub(crate) body: &'static str,
    pub(crate) www_authenticate: Option<String>,
    /// For counters and the access log (`jwt_expired`, `origin_authn_failed`).
    pub(crate) reason: &'static str,
}

/// Longest path quoted in `WWW-Authenticate`'s realm (as Envoy's jwt_authn).
const MAX_REALM_PATH: usize = 256;

impl Authn {
    /// The authentication `config` declares, `None` when it declares none.
    pub(crate) fn new(config: &Config) -> Option<Authn> {
        let providers: Vec<Provider> = config
            .request_authentications
            .iter()
            .flat_map(|ra| ra.rules.iter().map(Provider::new))
            .collect();
        let origins = config
            .origin_policy
            .as_ref()
            .map(|p: &OriginPolicy| Origins {
                origins: p
                    .origins
                    .iter()
                    .map(|o| (Provider::new(&o.provider), o.trigger_rules.clone()))
                    .collect(),
                optional: p.optional,
                use_origin: p.use_origin,
            });
        if providers.is_empty() && origins.is_none() {
            return None;
        }
        let mut output_headers: Vec<String> = Vec::new();
        for p in &providers {
            let names = p.rule.output_payload_to_header.iter();
            let names = names.chain(p.rule.output_claim_to_headers.iter().map(|(h, _)| h));
            for name in names {
                if !output_headers.contains(name) {
                    output_headers.push(name.clone());
                }
            }
        }
        Some(Authn {
            providers,
            origins,
            output_headers,
        })
    }

    /// Checks `req`'s tokens: `Ok` with what to change upstream, or the refusal.
    pub(crate) fn check(&self, req: &AuthRequest<'_>, ring: &KeyRing) -> Result<Passed, Denial> {
        if is_cors_preflight(req.head) {
            return Ok(Passed::default());
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut passed = self.request_authentication(req, ring, now)?;
        if let Some(origins) = &self.origins
            && let Some(principal) = origins.check(req, ring, now)?
        {
            passed.principal.get_or_insert(principal);
        }
        Ok(passed)
    }

    /// `RequestAuthentication`: every token found must verify with the provider of
    /// its issuer; no token at all passes with no identity.
    fn request_authentication(
        &self,
        req: &AuthRequest<'_>,
        ring: &KeyRing,
        now: u64,
    ) -> Result<Passed, Denial> {
        let mut passed = Passed::default();
        passed
            .edits
            .remove
            .extend(self.output_headers.iter().cloned());
        if self.providers.is_empty() {
            return Ok(passed);
        }
        let mut seen: Vec<(&TokenLocation, &str)> = Vec::new();
        for provider in &self.providers {
            for location in &provider.rule.locations {
                for token in tokens(req, location) {
                    if seen.iter().any(|(l, t)| *l == location && *t == token) {
                        continue;
                    }
                    seen.push((location, token));
                }
            }
        }
        for (location, token) in seen {
            let parsed = jwt::parse(token).map_err(|e| jwt_denial(e, req))?;
            // The provider of the token's issuer among those reading this location.
            let provider = self
                .providers
                .iter()
                .filter(|p| p.rule.locations.contains(location))
                .find(|p| parsed.issuer.as_ref() == Some(&p.rule.issuer))
                .or_else(|| {
                    self.providers
                        .iter()
                        .find(|p| p.rule.locations.contains(location))
                });
            let Some(provider) = provider else { continue };
            provider
                .verify(&parsed, ring, now)
                .map_err(|e| jwt_denial(e, req))?;
            if passed.principal.is_none() {
                passed.principal = Some(parsed.principal());
            }
            let rule = &provider.rule;
            if !rule.forward_original_token
                && let TokenLocation::Header { name, .. } = location
                && !passed.edits.remove.contains(name)
            {
                passed.edits.remove.push(name.clone());
            }
            if let Some(header) = &rule.output_payload_to_header {
                passed
                    .edits
                    .add
                    .push((header.clone(), parsed.payload_segment.to_owned()));
            }
            for (header, claim) in &rule.output_claim_to_headers {
                if let Some(value) = jwt::claim_text(&parsed.claims, claim) {
                    passed.edits.add.push((header.clone(), value));
                }
            }
        }
        Ok(passed)
    }
}

impl Origins {
    /// The v1alpha1 origin check: a verified token of one triggered origin; when no
    /// origin is triggered for the path, or `originIsOptional`, nothing is needed.
    /// `Ok(Some)` carries the principal with `principalBinding: USE_ORIGIN`.
    fn check(
        &self,
        req: &AuthRequest<'_>,
        ring: &KeyRing,
        now: u64,
    ) -> Result<Option<String>, Denial> {
        let path = req.path.split(['?', '#']).next().unwrap_or(req.path);
        let mut triggered = false;
        for (provider, rules) in &self.origins {
            if !is_triggered(rules, path) {
                continue;
            }
            triggered = true;
            for location in &provider.rule.locations {
                for token in tokens(req, location) {
                    if let Ok(parsed) = jwt::parse(token)
                        && provider.verify(&parsed, ring, now).is_ok()
                    {
                        return Ok(self.use_origin.then(|| parsed.principal()));
                    }
                }
            }
        }
        if !triggered || self.optional {
            return Ok(None);
        }
        Err(Denial {
            status: 401,
            body: ORIGIN_FAILED,
            www_authenticate: None,
            reason: "origin_authn_failed",
        })
    }
}

/// Istio's `triggerRules`: with none, every path; else a path no rule excludes and
/// one includes (a rule without `includedPaths` includes every path).
fn is_triggered(rules: &[TriggerRule], path: &str) -> bool {
    if rules.is_empty() {
        return true;
    }
    rules.iter().any(|rule| {
        !rule.excluded.iter().any(|m| m.matches(path))
            && (rule.included.is_empty() || rule.included.iter().any(|m| m.matches(path)))
    })
}

/// Envoy's `jwt_authn` refusal: the reason as body, and the Bearer challenge.
fn jwt_denial(error: JwtError, req: &AuthRequest<'_>) -> Denial {
    let mut path = req.path;
    if path.len() > MAX_REALM_PATH {
        let mut end = MAX_REALM_PATH;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        path = &path[..end];
    }
    Denial {
        status: error.status(),
        body: error.text(),
        www_authenticate: Some(format!(
            "Bearer realm=\"{}://{}{}\", error=\"invalid_token\"",
            req.scheme,
            req.host,
            path.replace('"', "%22")
        )),
        reason: error.label(),
    }
}

/// Envoy passes CORS preflights (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) without authentication.
fn is_cors_preflight(head: &RequestHead) -> bool {
    head.method() == "OPTIONS"
        && head.header("origin").is_some_and(|v| !v.is_empty())
        && head
            .header("access-control-request-method")
            .is_some_and(|v| !v.is_empty())
}

/// The tokens `location` holds in `req`.
fn tokens<'r>(req: &AuthRequest<'r>, location: &TokenLocation) -> Vec<&'r str> {
    let mut out = Vec::new();
    match location {
        TokenLocation::Header { name, prefix } => {
            for (n, value) in req.head.headers() {
                if !n.eq_ignore_ascii_case(name) {
                    continue;
                }
                let Ok(value) = std::str::from_utf8(value) else {
                    continue;
                };
                let value = value.trim();
                let token = match prefix.is_empty() {
                    true => Some(value),
                    false => value
                        .get(..prefix.len())
                        .filter(|p| p.eq_ignore_ascii_case(prefix))
                        .map(|_| value[prefix.len()..].trim()),
                };
                if let Some(token) = token.filter(|t| !t.is_empty()) {
                    out.push(token);
                }
            }
        }
        TokenLocation::Param(name) => {
            if let Some((_, query)) = req.path.split_once('?') {
                for pair in query.split('&') {
                    if let Some((n, v)) = pair.split_once('=')
                        && n == name
                        && !v.is_empty()
                    {
                        out.push(v);
                    }
                }
            }
        }
        TokenLocation::Cookie(name) => {
            for (n, value) in req.head.headers() {
                if !n.eq_ignore_ascii_case("cookie") {
                    continue;
                }
                let Ok(value) = std::str::from_utf8(value) else {
                    continue;
                };
                for pair in value.split(';') {
                    if let Some((n, v)) = pair.trim().split_once('=')
                        && n == name
                        && !v.is_empty()
                    {
                        out.push(v);
                    }
                }
            }
        }
    }
    out
}
