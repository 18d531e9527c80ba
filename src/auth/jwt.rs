//! One JWT (a JWS in compact form, RFC 7515/7519) checked the way Envoy's `jwt_authn`
//! checks it, in the same order, so a refusal names the same reason: the form and
//! JSON of header and payload, the issuer, `exp`/`nbf` with 60 s of clock skew, the
//! audiences, then a key of the set that fits the token's `kid` and `alg`, whose
//! signature check is `jsonwebtoken`'s (aws-lc-rs).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::keys::KeySet;

/// Clock skew allowed on `exp` and `nbf` (Envoy's default).
pub(crate) const CLOCK_SKEW_SECS: u64 = 60;

/// Why a token was refused, with Envoy's (jwt_verify_lib's) words, which clients and
/// tooling match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JwtError {
    BadFormat,
    HeaderBadBase64,
    HeaderBadJson,
    HeaderBadAlg,
    HeaderNotImplementedAlg,
    HeaderBadKid,
    PayloadBadBase64,
    PayloadBadJson,
    IssNotString,
    SubNotString,
    IatNotInteger,
    NbfNotInteger,
    ExpNotInteger,
    AudNotString,
    SignatureBadBase64,
    UnknownIssuer,
    NotYetValid,
    Expired,
    AudienceNotAllowed,
    JwksFetchFail,
    KidAlgMismatch,
    VerificationFail,
}

impl JwtError {
    /// Envoy's words for the refusal (the body of its answer).
    pub(crate) fn text(self) -> &'static str {
        match self {
            JwtError::BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            JwtError::HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            JwtError::HeaderBadJson => "Jwt header is an invalid JSON",
            JwtError::HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            JwtError::HeaderNotImplementedAlg => "Jwt header [alg] is not supported",
            JwtError::HeaderBadKid => "Jwt header [kid] field is not a string",
            JwtError::PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            JwtError::PayloadBadJson => "Jwt payload is an invalid JSON",
            JwtError::IssNotString => "Jwt payload [iss] field is not a string",
            JwtError::SubNotString => "Jwt payload [sub] field is not a string",
            JwtError::IatNotInteger => "Jwt payload [iat] field is not an integer",
            JwtError::NbfNotInteger => "Jwt payload [nbf] field is not an integer",
            JwtError::ExpNotInteger => "Jwt payload [exp] field is not an integer",
            JwtError::AudNotString => "Jwt payload [aud] field is not a string or string list",
            JwtError::SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            JwtError::UnknownIssuer => "Jwt issuer is not configured",
            JwtError::NotYetValid => "Jwt not yet valid",
            JwtError::Expired => "Jwt is expired",
            JwtError::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            JwtError::JwksFetchFail => "Jwks remote fetch is failed",
            JwtError::KidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            JwtError::VerificationFail => "Jwt verification fails",
        }
    }
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

impl std::error::Error for JwtError {}

impl JwtError {
    /// The status Envoy answers with: 403 for a disallowed audience, else 401.
    pub(crate) fn status(self) -> u16 {
        match self {
            JwtError::AudienceNotAllowed => 403,
            _ => 401,
        }
    }

    /// A short name for counters and logs (`jwt_expired`...).
    pub(crate) fn label(self) -> &'static str {
        match self {
            JwtError::BadFormat
            | JwtError::HeaderBadBase64
            | JwtError::HeaderBadJson
            | JwtError::HeaderBadAlg
            | JwtError::HeaderBadKid
            | JwtError::PayloadBadBase64
            | JwtError::PayloadBadJson
            | JwtError::IssNotString
            | JwtError::SubNotString
            | JwtError::IatNotInteger
            | JwtError::NbfNotInteger
            | JwtError::ExpNotInteger
            | JwtError::AudNotString
            | JwtError::SignatureBadBase64 => "jwt_malformed",
            JwtError::HeaderNotImplementedAlg => "jwt_alg_not_supported",
            JwtError::UnknownIssuer => "jwt_unknown_issuer",
            JwtError::NotYetValid => "jwt_not_yet_valid",
            JwtError::Expired => "jwt_expired",
            JwtError::AudienceNotAllowed => "jwt_audience_not_allowed",
            JwtError::JwksFetchFail => "jwks_fetch_failed",
            JwtError::KidAlgMismatch => "jwt_no_matching_key",
            JwtError::VerificationFail => "jwt_verification_failed",
        }
    }
}

/// A token split and its header and payload read, not yet verified.
#[derive(Debug)]
pub(crate) struct Parsed<'t> {
    alg: Algorithm,
    kid: Option<String>,
    /// `header.payload`, what the signature covers.
    signed: &'t str,
    /// The payload segment as sent (base64url), for `outputPayloadToHeader`.
    pub(crate) payload_segment: &'t str,
    signature: &'t str,
    pub(crate) issuer: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) audiences: Vec<String>,
    pub(crate) exp: Option<u64>,
    nbf: Option<u64>,
    pub(crate) claims: Map<String, Value>,
}

fn decode_segment(segment: &str) -> Option<Vec<u8>> {
    // Padding is tolerated, as jwt_verify_lib does.
    URL_SAFE_NO_PAD.decode(segment.trim_end_matches('=')).ok()
}

fn integer(
    claims: &Map<String, Value>,
    name: &str,
    error: JwtError,
) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or(error),
        Some(_) => Err(error),
    }
}

fn string(
    claims: &Map<String, Value>,
    name: &str,
    error: JwtError,
) -> Result<Option<String>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(error),
    }
}

/// Reads a token's form, header and payload.
pub(crate) fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::BadFormat);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(JwtError::BadFormat);
    }
    let header_json = decode_segment(header).ok_or(JwtError::HeaderBadBase64)?;
    let Ok(Value::Object(header_map)) = serde_json::from_slice::<Value>(&header_json) else {
        return Err(JwtError::HeaderBadJson);
    };
    let alg = match header_map.get("alg") {
        Some(Value::String(alg)) => alg
            .parse::<Algorithm>()
            .map_err(|_| JwtError::HeaderNotImplementedAlg)?,
        _ => return Err(JwtError::HeaderBadAlg),
    };
    let kid = string(&header_map, "kid", JwtError::HeaderBadKid)?;
    let payload_json = decode_segment(payload).ok_or(JwtError::PayloadBadBase64)?;
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&payload_json) else {
        return Err(JwtError::PayloadBadJson);
    };
    let issuer = string(&claims, "iss", JwtError::IssNotString)?;
    let subject = string(&claims, "sub", JwtError::SubNotString)?;
    integer(&claims, "iat", JwtError::IatNotInteger)?;
    let nbf = integer(&claims, "nbf", JwtError::NbfNotInteger)?;
    let exp = integer(&claims, "exp", JwtError::ExpNotInteger)?;
    let audiences = match claims.get("aud") {
        None => Vec::new(),
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|a| a.as_str().map(str::to_owned).ok_or(JwtError::AudNotString))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(JwtError::AudNotString),
    };
    match decode_segment(signature) {
        Some(sig) if !sig.is_empty() => {}
        _ => return Err(JwtError::SignatureBadBase64),
    }
    Ok(Parsed {
        alg,
        kid,
        signed: &token[..header.len() + 1 + payload.len()],
        payload_segment: payload,
        signature,
        issuer,
        subject,
        audiences,
        exp,
        nbf,
        claims,
    })
}

impl Parsed<'_> {
    /// `exp` and `nbf` against `now` (seconds since the epoch), with the clock skew.
    pub(crate) fn check_time(&self, now: u64) -> Result<(), JwtError> {
        check_times(self.nbf, self.exp, now)
    }

    /// The token's `nbf`.
    pub(crate) fn nbf(&self) -> Option<u64> {
        self.nbf
    }

    /// Whether one of the token's audiences is allowed (any, when none are configured).
    pub(crate) fn check_audiences(&self, allowed: &[String]) -> Result<(), JwtError> {
        if allowed.is_empty() || self.audiences.iter().any(|a| allowed.contains(a)) {
            Ok(())
        } else {
            Err(JwtError::AudienceNotAllowed)
        }
    }

    /// The signature, with the keys of `set` that fit the token's `kid` and `alg`
    /// (every key of the right type when the token has no `kid`).
    pub(crate) fn check_signature(&self, set: &KeySet) -> Result<(), JwtError> {
        verify_signature(
            set,
            self.alg,
            self.kid.as_deref(),
            self.signed,
            self.signature,
        )
    }

    /// `iss/sub`, Istio's request principal.
    pub(crate) fn principal(&self) -> String {
        format!(
            "{}/{}",
            self.issuer.as_deref().unwrap_or_default(),
            self.subject.as_deref().unwrap_or_default()
        )
    }
}

/// `nbf` and `exp` against `now` (seconds since the epoch), with the clock skew.
pub(crate) fn check_times(nbf: Option<u64>, exp: Option<u64>, now: u64) -> Result<(), JwtError> {
    if let Some(nbf) = nbf
        && now.saturating_add(CLOCK_SKEW_SECS) < nbf
    {
        return Err(JwtError::NotYetValid);
    }
    if let Some(exp) = exp
        && now > exp.saturating_add(CLOCK_SKEW_SECS)
    {
        return Err(JwtError::Expired);
    }
    Ok(())
}

/// The JWS layer alone: `signature` (base64url) over `signed` (the `header.payload`
/// segments as sent) with the keys of `set` that fit `kid` and `alg` (every key of
/// the right type when there is no `kid`). [`Parsed::check_signature`] for a token;
/// apart from it only so that the published JWS vectors, whose payloads are not JSON
/// and so are no JWTs, can be checked with the same code (`jws_vectors`).
pub(super) fn verify_signature(
    set: &KeySet,
    alg: Algorithm,
    kid: Option<&str>,
    signed: &str,
    signature: &str,
) -> Result<(), JwtError> {
    // Padding is tolerated (see `decode_segment`); jsonwebtoken's decoder is strict.
    let unpadded = signature.trim_end_matches('=');
    let mut tried = false;
    for key in &set.keys {
        if let (Some(want), Some(have)) = (kid, &key.kid)
            && want != have
        {
            continue;
        }
        if !key.fits(alg) {
            continue;
        }
        tried = true;
        let verified =
            jsonwebtoken::crypto::verify(unpadded, signed.as_bytes(), key.decoding_key(), alg);
        if matches!(verified, Ok(true)) {
            return Ok(());
        }
    }
    Err(match tried {
        true => JwtError::VerificationFail,
        false => JwtError::KidAlgMismatch,
    })
}

/// A claim by name, `a.b` reaching into nested objects, as text for a header:
/// strings as they are, numbers and booleans in JSON form, lists of those joined
/// with `,`. `None` for a missing claim or another type.
pub(crate) fn claim_text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    let value = claims
        .get(name)
        .or_else(|| claim_at(claims, name.split('.')))?;
    if let Value::Array(list) = value {
        let texts: Option<Vec<String>> = list.iter().map(scalar_text).collect();
        return texts.map(|t| t.join(","));
    }
    scalar_text(value)
}

/// A claim reached through nested objects, one name per level (`outputClaimToHeaders`'
/// `a.b`, AuthorizationPolicy's `request.auth.claims[a][b]`).
pub(crate) fn claim_at<'v, 'p>(
    claims: &'v Map<String, Value>,
    mut path: impl Iterator<Item = &'p str>,
) -> Option<&'v Value> {
    let mut value = claims.get(path.next()?)?;
    for part in path {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO_JWT: &str = include_str!("testdata/demo.jwt");
    const JWKS: &str = include_str!("testdata/jwks.json");

    fn demo() -> &'static str {
        DEMO_JWT.trim()
    }

    #[test]
    fn the_istio_demo_token_verifies_with_its_key_set() {
        let parsed = parse(demo()).unwrap();
        assert_eq!(
            parsed.principal(),
            "testing@secure.istio.io/testing@secure.istio.io"
        );
        assert_eq!(parsed.exp, Some(4685989700));
        parsed.check_time(1_800_000_000).unwrap();
        parsed.check_audiences(&[]).unwrap();
        parsed
            .check_signature(&KeySet::parse(JWKS).unwrap())
            .unwrap();
        assert_eq!(claim_text(&parsed.claims, "foo").as_deref(), Some("bar"));
    }

    #[test]
    fn a_changed_byte_fails_the_signature() {
        let set = KeySet::parse(JWKS).unwrap();
        let token = demo();
        let (head, sig) = token.rsplit_once('.').unwrap();
        let mut sig = sig.to_owned();
        let c = if sig.starts_with('A') { "B" } else { "A" };
        sig.replace_range(0..1, c);
        let tampered = format!("{head}.{sig}");
        assert_eq!(
            parse(&tampered).unwrap().check_signature(&set),
            Err(JwtError::VerificationFail)
        );
    }

    fn token(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn malformed_tokens_name_envoys_reason() {
        let cases: &[(&str, JwtError)] = &[
            ("abc", JwtError::BadFormat),
            ("a.b", JwtError::BadFormat),
            ("a.b.c.d", JwtError::BadFormat),
            ("!!.e30.c2ln", JwtError::HeaderBadBase64),
        ];
        for (t, want) in cases {
            assert_eq!(parse(t).unwrap_err(), *want, "{t}");
        }
        let cases: &[(&str, &str, JwtError)] = &[
            ("nope", "{}", JwtError::HeaderBadJson),
            ("{}", "{}", JwtError::HeaderBadAlg),
            (r#"{"alg":3}"#, "{}", JwtError::HeaderBadAlg),
            (r#"{"alg":"none"}"#, "{}", JwtError::HeaderNotImplementedAlg),
            (r#"{"alg":"RS256","kid":1}"#, "{}", JwtError::HeaderBadKid),
            (r#"{"alg":"RS256"}"#, "[]", JwtError::PayloadBadJson),
            (r#"{"alg":"RS256"}"#, r#"{"iss":1}"#, JwtError::IssNotString),
            (
                r#"{"alg":"RS256"}"#,
                r#"{"exp":"x"}"#,
                JwtError::ExpNotInteger,
            ),
            (
                r#"{"alg":"RS256"}"#,
                r#"{"nbf":-1}"#,
                JwtError::NbfNotInteger,
            ),
            (
                r#"{"alg":"RS256"}"#,
                r#"{"aud":[1]}"#,
                JwtError::AudNotString,
            ),
        ];
        for (h, p, want) in cases {
            assert_eq!(parse(&token(h, p)).unwrap_err(), *want, "{h} {p}");
        }
        let unsigned = format!(
            "{}.",
            token(r#"{"alg":"RS256"}"#, "{}")
                .rsplit_once('.')
                .unwrap()
                .0
        );
        assert_eq!(parse(&unsigned).unwrap_err(), JwtError::SignatureBadBase64);
    }

    #[test]
    fn time_and_audience_checks_allow_the_skew() {
        let t = token(
            r#"{"alg":"RS256"}"#,
            r#"{"exp":1000,"nbf":500,"aud":["a","b"]}"#,
        );
        let p = parse(&t).unwrap();
        assert_eq!(p.check_time(1061), Err(JwtError::Expired));
        p.check_time(1060).unwrap();
        assert_eq!(p.check_time(439), Err(JwtError::NotYetValid));
        p.check_time(440).unwrap();
        p.check_audiences(&["b".into()]).unwrap();
        assert_eq!(
            p.check_audiences(&["c".into()]),
            Err(JwtError::AudienceNotAllowed)
        );
        assert_eq!(JwtError::AudienceNotAllowed.status(), 403);
        assert_eq!(JwtError::Expired.status(), 401);
    }

    #[test]
    fn an_rsa_key_is_never_an_hmac_secret_and_an_unknown_kid_has_no_key() {
        let set = KeySet::parse(JWKS).unwrap();
        let hs = token(r#"{"alg":"HS256"}"#, "{}");
        assert_eq!(
            parse(&hs).unwrap().check_signature(&set),
            Err(JwtError::KidAlgMismatch)
        );
        let other_kid = token(r#"{"alg":"RS256","kid":"other"}"#, "{}");
        assert_eq!(
            parse(&other_kid).unwrap().check_signature(&set),
            Err(JwtError::KidAlgMismatch)
        );
    }

    #[test]
    fn claims_as_header_text() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"s":"x","n":3,"b":true,"l":["a","b"],"o":{"p":{"q":"deep"}},"a.b":"dotted"}"#,
        )
        .unwrap();
        assert_eq!(claim_text(&claims, "s").as_deref(), Some("x"));
        assert_eq!(claim_text(&claims, "n").as_deref(), Some("3"));
        assert_eq!(claim_text(&claims, "b").as_deref(), Some("true"));
        assert_eq!(claim_text(&claims, "l").as_deref(), Some("a,b"));
        assert_eq!(claim_text(&claims, "o.p.q").as_deref(), Some("deep"));
        assert_eq!(claim_text(&claims, "a.b").as_deref(), Some("dotted"));
        assert_eq!(claim_text(&claims, "o"), None);
        assert_eq!(claim_text(&claims, "missing"), None);
    }
}
