//! Checks of the end-user authentication kinds: `RequestAuthentication` and the
//! v1alpha1 `Policy`. Inline `jwks` are read here, so a key set that cannot be used
//! fails the load with Envoy's reason; `jwksUri` must be an http(s) URL.

use std::time::Duration;

use super::*;
use crate::auth::KeySet;

/// How long fetching a provider's keys may take by default (Istio's `timeout`).
pub(crate) const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a token is looked for when a rule names no location: `Authorization:
/// Bearer`, then the `access_token` query parameter.
fn default_locations() -> Vec<TokenLocation> {
    vec![
        TokenLocation::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        },
        TokenLocation::Param("access_token".into()),
    ]
}

/// The fields every JWT provider has, whichever kind declares it.
struct ProviderFields {
    issuer: Option<String>,
    audiences: Vec<String>,
    jwks_uri: Option<String>,
    jwks: Option<String>,
}

impl Check<'_, '_> {
    pub(super) fn request_authentication(
        &mut self,
        raw: FileRequestAuthenticationSpec,
        origin: Origin,
    ) -> Option<RequestAuthentication> {
        let mut rules = Vec::new();
        let mut ok = true;
        for (i, rule) in raw.jwt_rules.into_iter().enumerate() {
            let p = spec().key("jwtRules").index(i);
            match self.jwt_rule(rule, &origin, &p) {
                Some(rule) => rules.push(rule),
                None => ok = false,
            }
        }
        ok.then_some(RequestAuthentication { origin, rules })
    }

    fn jwt_rule(&mut self, raw: FileJwtRule, origin: &Origin, p: &Path) -> Option<JwtProvider> {
        let fields = ProviderFields {
            issuer: raw.issuer,
            audiences: raw.audiences,
            jwks_uri: raw.jwks_uri,
            jwks: raw.jwks,
        };
        let (issuer, keys) = self.provider_fields(&fields, p)?;
        let mut ok = true;
        let mut locations = Vec::new();
        for (i, h) in raw.from_headers.into_iter().enumerate() {
            let hp = p.key("fromHeaders").index(i);
            let Some(name) = h.name else {
                self.err(&hp.key("name"), Problem::Missing);
                ok = false;
                continue;
            };
            match self.header_name(&name, &hp.key("name")) {
                Some(name) => locations.push(TokenLocation::Header {
                    name,
                    prefix: h.prefix.unwrap_or_default(),
                }),
                None => ok = false,
            }
        }
        for (i, param) in raw.from_params.into_iter().enumerate() {
            if param.is_empty() {
                self.invalid(
                    &p.key("fromParams").index(i),
                    "\"\"",
                    "expected a query parameter name",
                );
                ok = false;
            } else {
                locations.push(TokenLocation::Param(param));
            }
        }
        for (i, cookie) in raw.from_cookies.into_iter().enumerate() {
            if cookie.is_empty() || !cookie.bytes().all(is_token_byte) {
                self.invalid(
                    &p.key("fromCookies").index(i),
                    format!("{cookie:?}"),
                    "expected a cookie name",
                );
                ok = false;
            } else {
                locations.push(TokenLocation::Cookie(cookie));
            }
        }
        if locations.is_empty() {
            locations = default_locations();
        }
        let output_payload_to_header = match raw.output_payload_to_header {
            Some(h) => {
                let name = self.header_name(&h, &p.key("outputPayloadToHeader"));
                ok &= name.is_some();
                name
            }
            None => None,
        };
        let mut output_claim_to_headers = Vec::new();
        for (i, c) in raw.output_claim_to_headers.into_iter().enumerate() {
            let cp = p.key("outputClaimToHeaders").index(i);
            match (c.header, c.claim) {
                (Some(header), Some(claim)) if !claim.is_empty() => {
                    match self.header_name(&header, &cp.key("header")) {
                        Some(header) => output_claim_to_headers.push((header, claim)),
                        None => ok = false,
                    }
                }
                (None, _) => {
                    self.err(&cp.key("header"), Problem::Missing);
                    ok = false;
                }
                (_, _) => {
                    self.err(&cp.key("claim"), Problem::Missing);
                    ok = false;
                }
            }
        }
        let timeout = match raw.timeout {
            Some(t) => {
                let d = self.positive_duration(&t, &p.key("timeout"));
                ok &= d.is_some();
                d.unwrap_or(DEFAULT_JWKS_TIMEOUT)
            }
            None => DEFAULT_JWKS_TIMEOUT,
        };
        ok.then(|| JwtProvider {
            origin: origin.clone(),
            path: p.to_string(),
            issuer,
            audiences: fields.audiences,
            keys,
            locations,
            forward_original_token: raw.forward_original_token.unwrap_or(false),
            output_payload_to_header,
            output_claim_to_headers,
            timeout,
        })
    }

    /// `issuer` (required) and where the keys come from: `jwks`, `jwksUri`, or the
    /// issuer's OpenID discovery document when neither is set.
    fn provider_fields(&mut self, f: &ProviderFields, p: &Path) -> Option<(String, JwksSource)> {
        let issuer = match f.issuer.as_deref().map(str::trim) {
            Some(i) if !i.is_empty() => i.to_owned(),
            Some(_) => {
                self.invalid(&p.key("issuer"), "\"\"", "an issuer cannot be empty");
                return None;
            }
            None => {
                self.err(&p.key("issuer"), Problem::Missing);
                return None;
            }
        };
        let keys = match (&f.jwks_uri, &f.jwks) {
            (Some(_), Some(_)) => {
                self.rule(p, "jwksUri and jwks are exclusive; use one");
                return None;
            }
            (None, Some(jwks)) => {
                if let Err(e) = KeySet::parse(jwks) {
                    self.invalid(&p.key("jwks"), "(inline key set)", e.to_string());
                    return None;
                }
                JwksSource::Inline(jwks.clone())
            }
            (Some(uri), None) => {
                self.url(uri, &p.key("jwksUri"))?;
                JwksSource::Uri(uri.clone())
            }
            (None, None) => {
                let base = issuer.trim_end_matches('/');
                if !(base.starts_with("https://") || base.starts_with("http://")) {
                    self.rule(
                        p,
                        format!(
                            "without jwksUri or jwks the keys are found through the issuer's OpenID discovery document, and issuer {issuer:?} is not an http(s) URL; set jwksUri or jwks"
                        ),
                    );
                    return None;
                }
                JwksSource::Discovery(format!("{base}/.well-known/openid-configuration"))
            }
        };
        for (i, a) in f.audiences.iter().enumerate() {
            if a.is_empty() {
                self.invalid(
                    &p.key("audiences").index(i),
                    "\"\"",
                    "an audience cannot be empty",
                );
                return None;
            }
        }
        Some((issuer, keys))
    }

    fn url(&mut self, raw: &str, path: &Path) -> Option<()> {
        let rest = raw
            .strip_prefix("https://")
            .or_else(|| raw.strip_prefix("http://"));
        match rest {
            Some(rest)
                if !rest.is_empty()
                    && !rest.starts_with('/')
                    && raw.bytes().all(|b| b > 0x20 && b != 0x7f) =>
            {
                Some(())
            }
            _ => {
                self.invalid(
                    path,
                    format!("{raw:?}"),
                    "expected an https:// (or http://) URL",
                );
                None
            }
        }
    }

    pub(super) fn origin_policy(
        &mut self,
        raw: FilePolicySpec,
        origin: Origin,
    ) -> Option<OriginPolicy> {
        let mut ok = true;
        for (i, t) in raw.targets.iter().enumerate() {
            if t.name.as_deref().is_none_or(str::is_empty) {
                self.err(
                    &spec().key("targets").index(i).key("name"),
                    Problem::Missing,
                );
                ok = false;
            }
            for (j, port) in t.ports.iter().enumerate() {
                if port.number.is_none() && port.name.is_none() {
                    self.rule(
                        &spec().key("targets").index(i).key("ports").index(j),
                        "a port selector needs number or name",
                    );
                    ok = false;
                }
            }
        }
        let use_origin = match raw.principal_binding.as_deref() {
            None | Some("USE_PEER") => false,
            Some("USE_ORIGIN") => true,
            Some(other) => {
                self.invalid(
                    &spec().key("principalBinding"),
                    other,
                    "expected USE_PEER or USE_ORIGIN",
                );
                ok = false;
                false
            }
        };
        let mut origins = Vec::new();
        for (i, o) in raw.origins.into_iter().enumerate() {
            let p = spec().key("origins").index(i);
            let Some(jwt) = o.jwt else {
                self.err(&p.key("jwt"), Problem::Missing);
                ok = false;
                continue;
            };
            match self.origin_jwt(jwt, &origin, &p.key("jwt")) {
                Some(o) => origins.push(o),
                None => ok = false,
            }
        }
        ok.then(|| OriginPolicy {
            origin,
            origins,
            optional: raw.origin_is_optional.unwrap_or(false),
            use_origin,
        })
    }

    fn origin_jwt(&mut self, raw: FileJwt, origin: &Origin, p: &Path) -> Option<OriginJwt> {
        let fields = ProviderFields {
            issuer: raw.issuer,
            audiences: raw.audiences,
            jwks_uri: raw.jwks_uri,
            jwks: raw.jwks,
        };
        let (issuer, keys) = self.provider_fields(&fields, p)?;
        let mut ok = true;
        let mut locations = Vec::new();
        for (i, h) in raw.jwt_headers.into_iter().enumerate() {
            match self.header_name(&h, &p.key("jwtHeaders").index(i)) {
                // The whole value is the token, except Authorization's `Bearer `.
                Some(name) => {
                    let prefix = if name == "authorization" {
                        "Bearer "
                    } else {
                        ""
                    };
                    locations.push(TokenLocation::Header {
                        name,
                        prefix: prefix.into(),
                    });
                }
                None => ok = false,
            }
        }
        for param in raw.jwt_params {
            locations.push(TokenLocation::Param(param));
        }
        if locations.is_empty() {
            locations = default_locations();
        }
        let mut trigger_rules = Vec::new();
        for (i, rule) in raw.trigger_rules.into_iter().enumerate() {
            let rp = p.key("triggerRules").index(i);
            let excluded = self.path_matches(rule.excluded_paths, &rp.key("excludedPaths"));
            let included = self.path_matches(rule.included_paths, &rp.key("includedPaths"));
            match (excluded, included) {
                (Some(excluded), Some(included)) => {
                    trigger_rules.push(TriggerRule { excluded, included })
                }
                _ => ok = false,
            }
        }
        ok.then(|| OriginJwt {
            provider: JwtProvider {
                origin: origin.clone(),
                path: p.to_string(),
                issuer,
                audiences: fields.audiences,
                keys,
                locations,
                // v1alpha1 forwarded the token.
                forward_original_token: true,
                output_payload_to_header: None,
                output_claim_to_headers: Vec::new(),
                timeout: DEFAULT_JWKS_TIMEOUT,
            },
            trigger_rules,
        })
    }

    fn path_matches(&mut self, raw: Vec<FilePathMatch>, p: &Path) -> Option<Vec<PathMatch>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (i, m) in raw.into_iter().enumerate() {
            let mp = p.index(i);
            let others = m.exact.is_some() || m.prefix.is_some() || m.regex.is_some();
            match m.without_suffix() {
                Err(suffix) if !others => out.push(PathMatch::Suffix(suffix)),
                Err(_) => {
                    self.rule(
                        &mp,
                        "exact, prefix, suffix and regex are exclusive; use one",
                    );
                    ok = false;
                }
                Ok(m) => match self.string_match(m, &mp, false) {
                    Some(m) => out.push(PathMatch::String(m)),
                    None => ok = false,
                },
            }
        }
        ok.then_some(out)
    }
}

/// Checks across the authentication documents: one v1alpha1 Policy per gateway, and
/// an issuer declared once.
pub(super) fn cross_checks(report: &mut Report<'_>, infos: &[DocInfo<'_>], objects: &Objects) {
    for (pos, _) in objects.origin_policies.iter().skip(1) {
        report.add(
            &infos[*pos],
            &root().key("kind"),
            Problem::Rule(format!(
                "ringress applies one authentication Policy to the gateway and {} is already one; merge their origins into one Policy",
                objects.origin_policies[0].1.origin
            )),
        );
    }
    let mut seen: BTreeMap<&str, &JwtProvider> = BTreeMap::new();
    for (pos, ra) in &objects.request_authentications {
        for rule in &ra.rules {
            if let Some(first) = seen.get(rule.issuer.as_str()) {
                report.add(
                    &infos[*pos],
                    &Path::default(),
                    Problem::Rule(format!(
                        "{}: issuer {:?} is already declared by {} {}; declare each issuer once",
                        rule.path, rule.issuer, first.origin, first.path
                    )),
                );
            } else {
                seen.insert(&rule.issuer, rule);
            }
        }
    }
}
