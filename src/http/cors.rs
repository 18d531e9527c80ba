//! CORS as Envoy's CORS filter applies a route's `corsPolicy`, without I/O: which
//! requests are CORS requests, the preflight the gateway answers itself, and the
//! headers an allowed origin's response gets.
//!
//! Envoy's rules, kept here:
//! - a request is a CORS request when it has a non-empty `Origin`; the origin is
//!   allowed when one of `allowOrigins` matches it (or matches `*`);
//! - a preflight is an `OPTIONS` CORS request with a non-empty
//!   `Access-Control-Request-Method`. From an allowed origin it is answered `200` with
//!   `access-control-allow-origin` (the origin), `-allow-credentials: true` (if
//!   `allowCredentials`), `-allow-methods`, `-allow-headers` (the request's own when
//!   the policy says `*`), `-max-age`, and no body; it never reaches the upstream.
//!   From another origin it is forwarded (`unmatchedPreflights: FORWARD`, the
//!   default), or answered the same way without `access-control-allow-origin`
//!   (`IGNORE`);
//! - any other CORS request from an allowed origin is forwarded and its response gets
//!   `access-control-allow-origin`, `-allow-credentials` and `-expose-headers` (set,
//!   replacing the upstream's); no `vary` is added.

use crate::config::{CorsPolicy, HeaderOps};

/// What the CORS policy does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cors<'r> {
    /// Not a CORS request: forwarded as is.
    Untouched,
    /// A CORS request from an origin that is not allowed: forwarded as is.
    NotAllowed,
    /// A preflight the gateway answers; `allowed` says whether its origin is.
    Preflight { allowed: bool },
    /// A CORS request from an allowed origin, forwarded; its response gets headers.
    Allowed { origin: &'r str },
}

/// The request headers CORS reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CorsRequest<'r> {
    pub(crate) method: &'r str,
    pub(crate) origin: Option<&'r [u8]>,
    pub(crate) request_method: Option<&'r [u8]>,
    pub(crate) request_headers: Option<&'r [u8]>,
}

/// Decides what `policy` does with `req`.
pub(crate) fn decide<'r>(policy: &CorsPolicy, req: &CorsRequest<'r>) -> Cors<'r> {
    let Some(origin) = req.origin.filter(|o| !o.is_empty()) else {
        return Cors::Untouched;
    };
    // An origin that is not text matches no allowed origin.
    let origin = std::str::from_utf8(origin).ok();
    let allowed = origin.is_some_and(|o| policy.allows(o));
    let preflight = req.method == "OPTIONS" && req.request_method.is_some_and(|m| !m.is_empty());
    match (preflight, allowed, origin) {
        (true, false, _) if policy.forward_unmatched_preflights => Cors::NotAllowed,
        (true, allowed, _) => Cors::Preflight { allowed },
        (false, true, Some(origin)) => Cors::Allowed { origin },
        (false, _, _) => Cors::NotAllowed,
    }
}

/// Writes the gateway's answer to a preflight (see [`Cors::Preflight`]) into `out`.
pub(crate) fn write_preflight(
    policy: &CorsPolicy,
    req: &CorsRequest<'_>,
    allowed: bool,
    close: bool,
    out: &mut Vec<u8>,
) {
    let max_age = policy.max_age.map(|s| s.to_string());
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(5);
    if allowed && let Some(origin) = req.origin {
        headers.push(("access-control-allow-origin", origin));
    }
    if policy.allow_credentials == Some(true) {
        headers.push(("access-control-allow-credentials", b"true"));
    }
    if !policy.allow_methods.is_empty() {
        let value = match policy.allow_methods.as_str() {
            "*" => req.request_method.unwrap_or_default(),
            methods => methods.as_bytes(),
        };
        headers.push(("access-control-allow-methods", value));
    }
    if !policy.allow_headers.is_empty() {
        let value = match policy.allow_headers.as_str() {
            "*" => req.request_headers.unwrap_or_default(),
            names => names.as_bytes(),
        };
        headers.push(("access-control-allow-headers", value));
    }
    if let Some(age) = &max_age {
        headers.push(("access-control-max-age", age.as_bytes()));
    }
    super::headers_response(200, &headers, close, out);
}

/// The response header operations for a CORS request from an allowed `origin`: the
/// route's own (`base`), then CORS's headers set over them.
pub(crate) fn response_ops(policy: &CorsPolicy, origin: &str, base: &HeaderOps) -> HeaderOps {
    let mut ops = base.clone();
    let mut set = |name: &str, value: &str| {
        ops.set.retain(|(n, _)| n != name);
        ops.add.retain(|(n, _)| n != name);
        ops.set.push((name.to_owned(), value.to_owned()));
    };
    set("access-control-allow-origin", origin);
    if policy.allow_credentials == Some(true) {
        set("access-control-allow-credentials", "true");
    }
    if !policy.expose_headers.is_empty() {
        set("access-control-expose-headers", &policy.expose_headers);
    }
    ops
}

/// Adds the CORS headers of `ops` (those [`response_ops`] set) to the generated
/// response in `out`, after its other headers: the gateway's own answer to a request
/// it forwarded (an upstream failure) gets them as the upstream's response would.
pub(crate) fn add_to_local_reply(ops: &HeaderOps, out: &mut Vec<u8>) {
    let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return;
    };
    let mut lines = Vec::new();
    for (name, value) in &ops.set {
        if name.starts_with("access-control-") {
            super::rewrite::header(&mut lines, name.as_bytes(), value.as_bytes());
        }
    }
    let at = end + 2;
    out.splice(at..at, lines);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StringMatch;

    fn policy() -> CorsPolicy {
        CorsPolicy {
            allow_origins: vec![
                StringMatch::Exact("https://a.example".into()),
                StringMatch::Prefix("https://dev.".into()),
            ],
            allow_methods: "GET,POST".into(),
            allow_headers: "x-one,x-two".into(),
            expose_headers: "x-out".into(),
            max_age: Some(86400),
            allow_credentials: Some(true),
            forward_unmatched_preflights: true,
        }
    }

    fn request<'r>(
        method: &'r str,
        origin: Option<&'r [u8]>,
        acrm: Option<&'r [u8]>,
    ) -> CorsRequest<'r> {
        CorsRequest {
            method,
            origin,
            request_method: acrm,
            request_headers: Some(b"x-asked"),
        }
    }

    #[test]
    fn preflights_actual_requests_and_others() {
        let p = policy();
        let allowed = Some(&b"https://a.example"[..]);
        let other = Some(&b"https://evil.example"[..]);
        let d = |m, o, a| decide(&p, &request(m, o, a));
        assert_eq!(
            d("OPTIONS", allowed, Some(b"PUT")),
            Cors::Preflight { allowed: true }
        );
        assert_eq!(
            d("OPTIONS", Some(b"https://dev.x"), Some(b"PUT")),
            Cors::Preflight { allowed: true }
        );
        // Not preflights: no or empty Access-Control-Request-Method, another method.
        assert_eq!(
            d("OPTIONS", allowed, None),
            Cors::Allowed {
                origin: "https://a.example"
            }
        );
        assert_eq!(
            d("OPTIONS", allowed, Some(b"")),
            Cors::Allowed {
                origin: "https://a.example"
            }
        );
        assert_eq!(
            d("GET", allowed, Some(b"PUT")),
            Cors::Allowed {
                origin: "https://a.example"
            }
        );
        // No or empty Origin: not a CORS request.
        assert_eq!(d("OPTIONS", None, Some(b"PUT")), Cors::Untouched);
        assert_eq!(d("GET", Some(b""), None), Cors::Untouched);
        // An origin not allowed: forwarded, preflight or not; answered under IGNORE.
        assert_eq!(d("OPTIONS", other, Some(b"PUT")), Cors::NotAllowed);
        assert_eq!(d("GET", other, None), Cors::NotAllowed);
        let ignore = CorsPolicy {
            forward_unmatched_preflights: false,
            ..policy()
        };
        assert_eq!(
            decide(&ignore, &request("OPTIONS", other, Some(b"PUT"))),
            Cors::Preflight { allowed: false }
        );
        assert_eq!(
            decide(&ignore, &request("GET", other, None)),
            Cors::NotAllowed
        );
        // Not text: matches nothing.
        assert_eq!(d("GET", Some(b"\xff"), None), Cors::NotAllowed);
    }

    #[test]
    fn a_matcher_of_star_allows_every_origin() {
        let p = CorsPolicy {
            allow_origins: vec![StringMatch::Exact("*".into())],
            ..policy()
        };
        assert!(p.allows("https://anything.example"));
        assert!(!policy().allows("https://anything.example"));
    }

    fn text(out: &[u8]) -> String {
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn preflight_answers() {
        let p = policy();
        let mut out = Vec::new();
        let req = request("OPTIONS", Some(b"https://a.example"), Some(b"PUT"));
        write_preflight(&p, &req, true, false, &mut out);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nserver: ringress\r\n\
             access-control-allow-origin: https://a.example\r\n\
             access-control-allow-credentials: true\r\n\
             access-control-allow-methods: GET,POST\r\n\
             access-control-allow-headers: x-one,x-two\r\n\
             access-control-max-age: 86400\r\n\
             content-length: 0\r\n\r\n"
        );
        // `*` echoes what the request asks for; no origin when it is not allowed.
        let star = CorsPolicy {
            allow_methods: "*".into(),
            allow_headers: "*".into(),
            max_age: None,
            allow_credentials: None,
            ..policy()
        };
        out.clear();
        write_preflight(&star, &req, false, true, &mut out);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nserver: ringress\r\n\
             access-control-allow-methods: PUT\r\n\
             access-control-allow-headers: x-asked\r\n\
             content-length: 0\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn local_replies_get_the_cors_headers() {
        let ops = response_ops(&policy(), "https://a.example", &HeaderOps::default());
        let mut out = Vec::new();
        super::super::error_response(503, true, &mut out);
        add_to_local_reply(&ops, &mut out);
        let text = text(&out);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.ends_with(
                "access-control-allow-origin: https://a.example\r\n\
                 access-control-allow-credentials: true\r\n\
                 access-control-expose-headers: x-out"
            ),
            "{head}"
        );
        assert_eq!(body, "503 Service Unavailable\n");
    }

    #[test]
    fn response_headers_replace_the_routes_own() {
        let base = HeaderOps {
            set: vec![("access-control-allow-origin".into(), "*".into())],
            add: vec![("x-kept".into(), "1".into())],
            remove: vec![],
        };
        let ops = response_ops(&policy(), "https://a.example", &base);
        assert_eq!(
            ops.set,
            vec![
                (
                    "access-control-allow-origin".to_owned(),
                    "https://a.example".to_owned()
                ),
                (
                    "access-control-allow-credentials".to_owned(),
                    "true".to_owned()
                ),
                (
                    "access-control-expose-headers".to_owned(),
                    "x-out".to_owned()
                ),
            ]
        );
        assert_eq!(ops.add, base.add);
    }
}
