//! End-user authentication at the gateway: the JWTs of `RequestAuthentication` rules
//! and of a v1alpha1 `Policy`'s origins, checked on the shard before a request is
//! routed (as Envoy's `jwt_authn` and Istio's `authn` filters run before its router),
//! answered with Istio's exact refusals.
//!
//! - [`keys`]: a JWKS document → the keys a token may be verified with.
//! - [`jwt`]: one token's form, claims, time, audiences and signature.
//! - [`fetch`]: the control thread's fetching of remote key sets (never a shard's).
//! - [`cache`]: the shard's tokens that verified, so a client's token is checked
//!   once, not on every request.
//! - [`authz`]: `AuthorizationPolicy`, decided after authentication.
//! - [`bench`](mod@bench): the two checks as `bench/auth.rs` reaches them from outside the crate.
//! - `jws_vectors` (tests only): the published JWS vectors of RFC 7515, 7520 and 8037
//!   checked with [`keys`] and [`jwt`].
//! - this file: where tokens are found in a request, which provider checks them,
//!   and what the request becomes: refused, or passed on with its verified token and
//!   the header changes the rules ask for.
//!
//! The keys a shard verifies with come in a [`KeyRing`] the control thread sends
//! through the shard's mailbox; a provider whose keys never loaded fails its tokens
//! (`Jwks remote fetch is failed`) while everything else serves.

pub(crate) mod authz;
pub mod bench;
mod cache;
pub(crate) mod fetch;
#[cfg(test)]
mod jws_vectors;
pub(crate) mod jwt;
mod keys;

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::config::{Config, JwksSource, JwtProvider, OriginPolicy, TokenLocation, TriggerRule};
use crate::http::RequestHead;
pub(crate) use authz::{Authz, AuthzRequest};
pub(crate) use cache::TokenCache;
pub(crate) use jwt::JwtError;
pub(crate) use keys::KeySet;

/// The body of a v1alpha1 Policy's refusal (Istio's authn filter).
pub(crate) const ORIGIN_FAILED: &str = "Origin authentication failed.";

/// What authentication made of a request, as counters label it: passed with a
/// verified token, passed without one, a CORS preflight let through, then the
/// refusals ([`Denial::reason`], [`JwtError::label`]).
pub(crate) const AUTHN_OUTCOMES: [&str; 13] = [
    "allowed",
    "no_token",
    "cors_preflight_bypassed",
    "origin_authn_failed",
    "jwt_malformed",
    "jwt_alg_not_supported",
    "jwt_unknown_issuer",
    "jwt_not_yet_valid",
    "jwt_expired",
    "jwt_audience_not_allowed",
    "jwks_fetch_failed",
    "jwt_no_matching_key",
    "jwt_verification_failed",
];

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

/// The v1alpha1 Policy as a snapshot holds it: its origins are providers of the
/// [`Authn`], by index.
struct Origins {
    origins: Vec<(usize, Vec<TriggerRule>)>,
    optional: bool,
    use_origin: bool,
}

/// A snapshot's authentication: the providers of every `RequestAuthentication`, then
/// those of the v1alpha1 Policy, if any.
pub(crate) struct Authn {
    /// The snapshot's generation: what the shard's [`TokenCache`] is kept for.
    generation: u64,
    providers: Vec<Provider>,
    /// How many of `providers` are `RequestAuthentication` rules (the first ones).
    rules: usize,
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
    /// The first token that verified (with `principalBinding: USE_ORIGIN`, the
    /// v1alpha1 origin's when no `RequestAuthentication` token came first).
    pub(crate) token: Option<Rc<Verified>>,
    pub(crate) edits: HeaderEdits,
    /// A CORS preflight, passed without a look at its tokens.
    preflight: bool,
}

impl Passed {
    /// The outcome's label (one of [`AUTHN_OUTCOMES`]).
    pub(crate) fn outcome(&self) -> &'static str {
        match (&self.token, self.preflight) {
            (_, true) => "cors_preflight_bypassed",
            (Some(_), false) => "allowed",
            (None, false) => "no_token",
        }
    }
}

/// A token that verified, as authorization, the header rules and the cache read it.
#[derive(Debug, Default)]
pub(crate) struct Verified {
    /// The provider that verified it (its index in the [`Authn`]).
    provider: usize,
    /// `iss/sub`, Istio's request principal.
    pub(crate) principal: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) claims: Map<String, Value>,
    /// The payload segment as sent, for `outputPayloadToHeader`.
    pub(crate) payload_segment: Box<str>,
    nbf: Option<u64>,
    exp: Option<u64>,
}

impl Verified {
    fn new(provider: usize, parsed: &jwt::Parsed<'_>) -> Verified {
        Verified {
            provider,
            principal: parsed.principal(),
            audiences: parsed.audiences.clone(),
            claims: parsed.claims.clone(),
            payload_segment: parsed.payload_segment.into(),
            nbf: parsed.nbf(),
            exp: parsed.exp,
        }
    }

    /// About how many bytes it holds (the claims weigh about what their encoding
    /// does), for the cache's budget.
    fn weight(&self) -> usize {
        std::mem::size_of::<Verified>()
            + self.principal.len()
            + self.audiences.iter().map(String::len).sum::<usize>()
            + 2 * self.payload_segment.len()
    }
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

impl Denial {
    /// The access log's `%RESPONSE_CODE_DETAILS%` for a JWT refusal, as Envoy's
    /// `jwt_authn` words it: `jwt_authn_access_denied{Jwt_is_expired}` (the reason,
    /// spaces as `_`). `None` for the v1alpha1 origin refusal, whose label is its details.
    pub(crate) fn details(&self) -> Option<String> {
        (self.reason != "origin_authn_failed")
            .then(|| format!("jwt_authn_access_denied{{{}}}", self.body.replace(' ', "_")))
    }
}

/// Longest path quoted in `WWW-Authenticate`'s realm (as Envoy's jwt_authn).
const MAX_REALM_PATH: usize = 256;

impl Authn {
    /// The authentication `config` declares, `None` when it declares none.
    pub(crate) fn new(config: &Config, generation: u64) -> Option<Authn> {
        let mut providers: Vec<Provider> = config
            .request_authentications
            .iter()
            .flat_map(|ra| ra.rules.iter().map(Provider::new))
            .collect();
        let rules = providers.len();
        let origins = config.origin_policy.as_ref().map(|p: &OriginPolicy| {
            let mut origins = Vec::new();
            for o in &p.origins {
                origins.push((providers.len(), o.trigger_rules.clone()));
                providers.push(Provider::new(&o.provider));
            }
            Origins {
                origins,
                optional: p.optional,
                use_origin: p.use_origin,
            }
        });
        if providers.is_empty() && origins.is_none() {
            return None;
        }
        let mut output_headers: Vec<String> = Vec::new();
        for p in &providers[..rules] {
            let names = p.rule.output_payload_to_header.iter();
            let names = names.chain(p.rule.output_claim_to_headers.iter().map(|(h, _)| h));
            for name in names {
                if !output_headers.contains(name) {
                    output_headers.push(name.clone());
                }
            }
        }
        Some(Authn {
            generation,
            providers,
            rules,
            origins,
            output_headers,
        })
    }

    /// Checks `req`'s tokens: `Ok` with what to change upstream, or the refusal.
    /// Tokens already verified under this snapshot and `ring` come from `cache`.
    pub(crate) fn check(
        &self,
        req: &AuthRequest<'_>,
        ring: &Arc<KeyRing>,
        cache: &mut TokenCache,
    ) -> Result<Passed, Denial> {
        if is_cors_preflight(req.head) {
            return Ok(Passed {
                preflight: true,
                ..Passed::default()
            });
        }
        cache.enter(self.generation, ring);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut verify = Verifier {
            authn: self,
            ring,
            cache,
            now,
        };
        let mut passed = self.request_authentication(req, &mut verify)?;
        if let Some(origins) = &self.origins
            && let Some(token) = origins.check(req, &mut verify)?
        {
            passed.token.get_or_insert(token);
        }
        Ok(passed)
    }

    /// `RequestAuthentication`: every token found must verify with the provider of
    /// its issuer; no token at all passes with no identity.
    fn request_authentication(
        &self,
        req: &AuthRequest<'_>,
        verify: &mut Verifier<'_>,
    ) -> Result<Passed, Denial> {
        let mut passed = Passed::default();
        passed
            .edits
            .remove
            .extend(self.output_headers.iter().cloned());
        let rules = &self.providers[..self.rules];
        if rules.is_empty() {
            return Ok(passed);
        }
        let mut seen: Vec<(&TokenLocation, &str)> = Vec::new();
        for provider in rules {
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
            let reads = |i: &usize| rules[*i].rule.locations.contains(location);
            let verified = match verify.cached(token, |i| i < rules.len() && reads(&i)) {
                Some(hit) => hit.map_err(|e| jwt_denial(e, req))?,
                None => {
                    let parsed = jwt::parse(token).map_err(|e| jwt_denial(e, req))?;
                    // The provider of the token's issuer among those reading this
                    // location.
                    let readers = || (0..rules.len()).filter(reads);
                    let Some(id) = readers()
                        .find(|i| parsed.issuer.as_ref() == Some(&rules[*i].rule.issuer))
                        .or_else(|| readers().next())
                    else {
                        continue;
                    };
                    verify
                        .verify(id, token, &parsed)
                        .map_err(|e| jwt_denial(e, req))?
                }
            };
            let rule = &rules[verified.provider].rule;
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
                    .push((header.clone(), verified.payload_segment.to_string()));
            }
            for (header, claim) in &rule.output_claim_to_headers {
                if let Some(value) = jwt::claim_text(&verified.claims, claim) {
                    passed.edits.add.push((header.clone(), value));
                }
            }
            if passed.token.is_none() {
                passed.token = Some(verified);
            }
        }
        Ok(passed)
    }
}

/// One request's token checks: the providers, the keys, the shard's cache, the time.
struct Verifier<'a> {
    authn: &'a Authn,
    ring: &'a KeyRing,
    cache: &'a mut TokenCache,
    now: u64,
}

impl Verifier<'_> {
    /// `token` as the cache has it, if a provider `wanted` verified it: still in
    /// its time, or the time's refusal. `None` when it must be verified.
    fn cached(
        &self,
        token: &str,
        wanted: impl Fn(usize) -> bool,
    ) -> Option<Result<Rc<Verified>, JwtError>> {
        let hit = self.cache.get(token).filter(|v| wanted(v.provider))?;
        Some(jwt::check_times(hit.nbf, hit.exp, self.now).map(|()| hit))
    }

    /// Verifies a parsed `token` with provider `id`, and keeps it when it verified.
    fn verify(
        &mut self,
        id: usize,
        token: &str,
        parsed: &jwt::Parsed<'_>,
    ) -> Result<Rc<Verified>, JwtError> {
        self.authn.providers[id].verify(parsed, self.ring, self.now)?;
        let verified = Rc::new(Verified::new(id, parsed));
        self.cache.insert(token, verified.clone());
        Ok(verified)
    }
}

impl Origins {
    /// The v1alpha1 origin check: a verified token of one triggered origin; when no
    /// origin is triggered for the path, or `originIsOptional`, nothing is needed.
    /// `Ok(Some)` carries the token with `principalBinding: USE_ORIGIN`.
    fn check(
        &self,
        req: &AuthRequest<'_>,
        verify: &mut Verifier<'_>,
    ) -> Result<Option<Rc<Verified>>, Denial> {
        let path = req.path.split(['?', '#']).next().unwrap_or(req.path);
        let mut triggered = false;
        for (id, rules) in &self.origins {
            if !is_triggered(rules, path) {
                continue;
            }
            triggered = true;
            let provider = &verify.authn.providers[*id];
            for location in &provider.rule.locations {
                for token in tokens(req, location) {
                    let verified = match verify.cached(token, |i| i == *id) {
                        Some(hit) => hit.ok(),
                        None => jwt::parse(token)
                            .ok()
                            .and_then(|parsed| verify.verify(*id, token, &parsed).ok()),
                    };
                    if let Some(verified) = verified {
                        return Ok(self.use_origin.then_some(verified));
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
            out.extend(
                crate::http::query_pairs(req.path)
                    .filter(|&(n, v)| n == name && !v.is_empty())
                    .map(|(_, v)| v),
            );
        }
        TokenLocation::Cookie(name) => out.extend(req.head.cookies(name)),
    }
    out
}
