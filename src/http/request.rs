//! Request heads: the first thing read from a client connection after TLS. Parses the
//! request line and headers with httparse, refuses ambiguous framing, and keeps the head
//! bytes with ranges into them so routing (host, path, headers) and the upstream rewrite
//! (`rewrite.rs`) read them without copying.
//!
//! Line endings: a bare LF is accepted as the end of a head line (RFC 9112 §2.2 allows
//! it). This is safe because the head is never forwarded as received: `rewrite.rs`
//! writes a fresh head with CRLF. Bodies are forwarded unchanged, so the chunked framer
//! (`body.rs`) is strict and requires CRLF. A bare CR, obs-fold (a line starting with
//! space or tab), a space before the colon, NUL or other control bytes in a value, and
//! invalid header-name bytes are all refused with 400.

use super::body::BodyKind;
use super::error::{HttpError, shown};
use super::fields::{
    Framing, Name, RawHead, Span, TeRule, head_window, header_slots, incomplete, list_items,
    trim_ows,
};

/// A parsed request head. Owns a copy of the head bytes (one buffer, reused by
/// [`parse_request_into`]) and ranges into it.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    raw: RawHead,
    method: Span,
    /// The request target as sent.
    target: Span,
    /// The origin-form part of the target (path and query).
    path: Span,
    /// Authority of an absolute-form target (`http://authority/path`), as sent.
    target_authority: Option<Span>,
    version_minor: u8,
    host: Host,
    /// Lower-cased host when the sent one had upper-case letters.
    host_lower: String,
    body: BodyKind,
    keep_alive: bool,
    expects_continue: bool,
}

#[derive(Debug, Clone, Copy, Default)]
enum Host {
    #[default]
    Absent,
    /// Already lower-case in the head.
    InHead(Span),
    /// In `host_lower`.
    Lowered,
}

/// Parses a request head from the start of `buf`. `Ok(None)`: the head is not complete
/// yet (read more; [`MAX_HEAD_BYTES`](super::limits::MAX_HEAD_BYTES) not reached).
/// `Ok(Some(head))`: the body (if any) starts at `buf[head.len()..]`.
pub fn parse_request(buf: &[u8]) -> Result<Option<RequestHead>, HttpError> {
    let mut head = RequestHead::default();
    Ok(parse_request_into(buf, &mut head)?.then_some(head))
}

/// Like [`parse_request`], but refills `head` so a keep-alive connection reuses its
/// buffers and parses without allocating. Returns `Ok(false)` when incomplete (`head`
/// then holds nothing meaningful).
pub fn parse_request_into(buf: &[u8], head: &mut RequestHead) -> Result<bool, HttpError> {
    let window = head_window(buf);
    let mut slots = header_slots();
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(window, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return incomplete::<()>(buf).map(|_| false);
        }
        Err(httparse::Error::Version) if !names_http_version(window) => {
            return Err(HttpError::Malformed {
                part: "request line (version)",
            });
        }
        Err(e) => return Err(HttpError::from_httparse(e)),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HttpError::Malformed {
            part: "request line",
        });
    };
    head.raw.fill(window, len, req.headers);
    head.method = Span::within(window, method.as_bytes());
    head.target = Span::within(window, target.as_bytes());
    head.version_minor = version;
    head.finish(method)?;
    Ok(true)
}

impl RequestHead {
    fn finish(&mut self, method: &str) -> Result<(), HttpError> {
        // A header name with `_` is dropped (nginx's `underscores_in_headers off`): an
        // upstream behind a CGI-style server would read `X_Forwarded_For` as
        // `X-Forwarded-For`, past the one ringress writes. Routing never sees it and
        // the upstream never gets it.
        let bytes = &self.raw.bytes;
        self.raw
            .headers
            .retain(|h| !h.name.get(bytes).contains(&b'_'));
        self.classify_target(method)?;
        let framing = Framing::scan(&mut self.raw, TeRule::ChunkedOnly)?;
        if framing.transfer_encoding && self.version_minor == 0 {
            return Err(HttpError::TransferEncodingInHttp10);
        }
        self.body = if framing.chunked {
            BodyKind::Chunked
        } else if let Some(n) = framing.content_length {
            BodyKind::Length(n)
        } else {
            // No framing: no body, whatever the method (RFC 9112 §6.3).
            BodyKind::None
        };
        self.keep_alive = !framing.close && (self.version_minor >= 1 || framing.keep_alive);
        self.find_host(&framing)?;
        self.expects_continue = false;
        if let Some(expect) = framing.expect.map(|s| s.get(&self.raw.bytes)) {
            // An HTTP/1.0 client cannot expect 100-continue (RFC 9110 §10.1.1).
            if self.version_minor >= 1 {
                if !expect.eq_ignore_ascii_case(b"100-continue") {
                    return Err(HttpError::UnsupportedExpectation {
                        value: shown(expect),
                    });
                }
                // Without a body there is nothing to wait for.
                self.expects_continue = self.body != BodyKind::None;
            }
        }
        Ok(())
    }

    /// Sorts the target into origin-form, absolute-form or `*`.
    fn classify_target(&mut self, method: &str) -> Result<(), HttpError> {
        let target = self.target.get(&self.raw.bytes);
        self.target_authority = None;
        self.path = self.target;
        if method == "CONNECT" {
            return Err(HttpError::ConnectNotSupported);
        }
        let bad = || HttpError::InvalidTarget {
            target: shown(target),
        };
        // A fragment is the client's own business, never part of a request target
        // (RFC 9112 3.2): one sent anyway is refused, not cut off.
        if target.contains(&b'#') {
            return Err(bad());
        }
        match target {
            [b'/', ..] => Ok(()),
            b"*" if method == "OPTIONS" => Ok(()),
            _ => {
                let scheme_len = if starts_with_ignore_case(target, b"http://") {
                    7
                } else if starts_with_ignore_case(target, b"https://") {
                    8
                } else {
                    return Err(bad());
                };
                let rest = target.get(scheme_len..).unwrap_or_default();
                let auth_len = rest
                    .iter()
                    .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                    .unwrap_or(rest.len());
                let authority = rest.get(..auth_len).unwrap_or_default();
                if authority.is_empty() || authority.contains(&b'@') {
                    return Err(bad());
                }
                let path_start = scheme_len + auth_len;
                match target.get(path_start) {
                    None | Some(b'/') => {}
                    Some(_) => return Err(bad()),
                }
                self.target_authority = Some(self.target.sub(scheme_len, path_start));
                self.path = self.target.sub(path_start, target.len());
                Ok(())
            }
        }
    }

    /// Host: the absolute-form authority if any (RFC 9112 §3.2.2), else the one Host
    /// header; lower-cased, port removed.
    fn find_host(&mut self, framing: &Framing) -> Result<(), HttpError> {
        if framing.host_count > 1 {
            return Err(HttpError::DuplicateHost);
        }
        let host_header = framing.host;
        // Also with an absolute-form target: its authority replaces Host, but an
        // HTTP/1.1 client must send Host all the same (RFC 9112 3.2).
        if host_header.is_none() && self.version_minor >= 1 {
            return Err(HttpError::MissingHost);
        }
        self.host = Host::Absent;
        let Some(span) = self.target_authority.or(host_header) else {
            return Ok(());
        };
        let value = span.get(&self.raw.bytes);
        if value.is_empty() {
            // An empty Host is allowed when the target has no authority.
            return Ok(());
        }
        let name_len = host_name_len(value).ok_or_else(|| HttpError::InvalidHost {
            value: shown(value),
        })?;
        let name = value.get(..name_len).unwrap_or_default();
        if name.iter().any(u8::is_ascii_uppercase) {
            self.host_lower.clear();
            self.host_lower
                .extend(name.iter().map(|b| char::from(b.to_ascii_lowercase())));
            self.host = Host::Lowered;
        } else {
            self.host = Host::InHead(span.sub(0, name_len));
        }
        Ok(())
    }

    /// Bytes of the head, request line to the empty line included; the body starts
    /// this far into the buffer given to the parser.
    pub(crate) fn len(&self) -> usize {
        self.raw.bytes.len()
    }

    /// The head bytes as received.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.raw.bytes
    }

    pub(crate) fn method(&self) -> &str {
        self.method.str(&self.raw.bytes)
    }

    /// The path and query, as in the request line (not decoded or normalised). For an
    /// absolute-form target (`http://host/p?q`) this is its origin-form part (`/p?q`,
    /// or `/` when empty); for `OPTIONS *` it is `*`.
    pub(crate) fn path(&self) -> &str {
        match self.path.str(&self.raw.bytes) {
            "" => "/",
            p => p,
        }
    }

    /// The request target exactly as sent.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn target(&self) -> &str {
        self.target.str(&self.raw.bytes)
    }

    /// The authority of an absolute-form target, as sent (with its port).
    pub(crate) fn target_authority(&self) -> Option<&str> {
        self.target_authority.map(|s| s.str(&self.raw.bytes))
    }

    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(crate) fn version_minor(&self) -> u8 {
        self.version_minor
    }

    /// The first header called `name` (ASCII case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.raw.header(name)
    }

    /// The first header of a classified kind: no name comparison.
    pub(crate) fn header_of(&self, kind: Name) -> Option<&[u8]> {
        self.raw.values_of(kind).next()
    }

    /// Every header line in order, names as sent.
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.raw.iter()
    }

    /// The non-empty values of the cookie `name` in every `Cookie` header, in order
    /// and as sent (quotes kept).
    pub(crate) fn cookies<'h>(&'h self, name: &str) -> impl Iterator<Item = &'h str> {
        self.headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .filter_map(|(_, value)| std::str::from_utf8(value).ok())
            .flat_map(|value| value.split(';'))
            .filter_map(move |pair| {
                pair.trim()
                    .split_once('=')
                    .filter(|(n, v)| *n == name && !v.is_empty())
                    .map(|(_, v)| v)
            })
    }

    /// The host the request is for (absolute-form authority, else Host), lower-cased,
    /// without port; IPv6 literals keep their brackets. `None` for an HTTP/1.0 request
    /// without Host or an empty Host.
    pub(crate) fn host(&self) -> Option<&str> {
        match self.host {
            Host::Absent => None,
            Host::InHead(span) => Some(span.str(&self.raw.bytes)),
            Host::Lowered => Some(&self.host_lower),
        }
    }

    /// How the request body is framed.
    pub(crate) fn body(&self) -> BodyKind {
        self.body
    }

    /// Whether the client wants the connection kept open after the response: HTTP/1.1
    /// unless `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
    pub(crate) fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// `Expect: 100-continue` on an HTTP/1.1 request with a body: the client waits for
    /// [`CONTINUE_100`](super::CONTINUE_100) before sending it. (The proxy sends it when
    /// it starts reading the body; the header is not forwarded upstream.)
    pub(crate) fn expects_continue(&self) -> bool {
        self.expects_continue
    }

    pub(crate) fn raw(&self) -> &RawHead {
        &self.raw
    }

    /// The protocol an HTTP/1.1 request asks to switch to: the first `Upgrade` value,
    /// when `Connection` lists `upgrade` (RFC 9110 §7.8). `None` for HTTP/1.0.
    pub(crate) fn upgrade(&self) -> Option<&[u8]> {
        let asked = self
            .raw
            .values_of(Name::Connection)
            .flat_map(list_items)
            .any(|t| t.eq_ignore_ascii_case(b"upgrade"));
        if self.version_minor == 0 || !asked {
            return None;
        }
        self.raw
            .values_of(Name::Upgrade)
            .flat_map(list_items)
            .find(|v| !v.is_empty())
    }

    /// The values of every `x-forwarded-for` header, in order.
    pub(crate) fn forwarded_for(&self) -> impl Iterator<Item = &[u8]> {
        self.raw.values_of(Name::XForwardedFor)
    }
}

/// Whether the third word of the request line starts like a version (`HTTP/` and a
/// digit): then a version httparse refuses is a 505, anything else a 400.
fn names_http_version(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = buf.get(start..).unwrap_or_default();
    let line = line
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    line.split(|&b| b == b' ')
        .nth(2)
        .is_some_and(|v| matches!(v, [b'H', b'T', b'T', b'P', b'/', d, ..] if d.is_ascii_digit()))
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// Length of the host part of `host[:port]`, or `None` if the value is not a valid
/// host: reg-name letters/digits/`-._~`, or `[` IPv6 `]`; port all digits.
fn host_name_len(value: &[u8]) -> Option<usize> {
    let value = trim_ows(value);
    let name_len = if value.first() == Some(&b'[') {
        let close = value.iter().position(|&b| b == b']')?;
        let inner = value.get(1..close)?;
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        close + 1
    } else {
        let n = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        let name = value.get(..n)?;
        if name.is_empty()
            || !name
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        {
            return None;
        }
        n
    };
    match value.get(name_len..)? {
        [] => Some(name_len),
        [b':', port @ ..] if port.len() <= 5 && port.iter().all(u8::is_ascii_digit) => {
            Some(name_len)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::limits::{MAX_HEAD_BYTES, MAX_HEADERS};

    /// Parses `input` fed as every prefix: each proper prefix must be incomplete, the
    /// whole input must give the same result as a single parse.
    fn parse_all_splits(input: &[u8]) -> Result<RequestHead, HttpError> {
        let whole = parse_request(input);
        let end = match &whole {
            Ok(Some(h)) => h.len(),
            Ok(None) => panic!("complete input reported incomplete"),
            Err(_) => input.len(),
        };
        for cut in 0..end {
            match parse_request(&input[..cut]) {
                Ok(None) => {}
                Err(e) if whole.as_ref().err() == Some(&e) => {}
                other => panic!("prefix of {cut} bytes gave {other:?}, whole gave {whole:?}"),
            }
        }
        whole.map(|h| h.expect("complete"))
    }

    fn ok(input: &[u8]) -> RequestHead {
        parse_all_splits(input).expect("valid request")
    }

    fn err(input: &[u8]) -> HttpError {
        parse_all_splits(input).expect_err("invalid request")
    }

    #[test]
    fn curl_request_over_every_split() {
        let input = b"GET /status/418?x=1 HTTP/1.1\r\nHost: HttpBin.Example.com:443\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\nNEXT";
        let h = ok(input);
        assert_eq!(h.len(), input.len() - 4);
        assert_eq!(h.method(), "GET");
        assert_eq!(h.path(), "/status/418?x=1");
        assert_eq!(h.version_minor(), 1);
        assert_eq!(h.host(), Some("httpbin.example.com"));
        assert_eq!(h.header("user-agent"), Some(&b"curl/8.5.0"[..]));
        assert_eq!(h.header("ACCEPT"), Some(&b"*/*"[..]));
        assert_eq!(h.header("missing"), None);
        assert_eq!(h.body(), BodyKind::None);
        assert!(h.keep_alive());
        assert!(!h.expects_continue());
        let names: Vec<&str> = h.headers().map(|(n, _)| n).collect();
        assert_eq!(names, ["Host", "User-Agent", "Accept"]);
    }

    #[test]
    fn header_returns_first_occurrence() {
        let h = ok(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
        assert_eq!(h.header("x-a"), Some(&b"1"[..]));
    }

    #[test]
    fn host_forms() {
        let host = |v: &str| {
            let req = format!("GET / HTTP/1.1\r\nHost: {v}\r\n\r\n");
            parse_request(req.as_bytes()).map(|h| h.and_then(|h| h.host().map(str::to_owned)))
        };
        assert_eq!(host("example.com"), Ok(Some("example.com".into())));
        assert_eq!(host("Example.COM:8080"), Ok(Some("example.com".into())));
        assert_eq!(host("127.0.0.1:80"), Ok(Some("127.0.0.1".into())));
        assert_eq!(host("[::1]:443"), Ok(Some("[::1]".into())));
        assert_eq!(host("[FE80::1]"), Ok(Some("[fe80::1]".into())));
        assert_eq!(host(""), Ok(None));
        for bad in [
            "a b", "a:b", "a:123456", "[::1", "[]", "a/b", "a@b", ":80", "[::1]x",
        ] {
            assert!(
                matches!(host(bad), Err(HttpError::InvalidHost { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn header_names_with_underscores_are_dropped() {
        let h = ok(b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\nx-forwarded_client-cert: Hash=x\r\nX-Real: 1\r\nContent_Length: 5\r\n\r\n");
        let names: Vec<&str> = h.headers().map(|(n, _)| n).collect();
        assert_eq!(names, ["Host", "X-Real"]);
        assert_eq!(h.header("x_forwarded_for"), None);
        assert_eq!(h.body(), BodyKind::None);
    }

    #[test]
    fn host_is_required_once_in_http11() {
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nA: b\r\n\r\n"),
            HttpError::MissingHost
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            HttpError::DuplicateHost
        );
        let h = ok(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(h.host(), None);
        assert!(!h.keep_alive());
    }

    #[test]
    fn absolute_form_target() {
        let h = ok(b"GET http://Example.com:8080/a?b HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(h.host(), Some("example.com"));
        assert_eq!(h.path(), "/a?b");
        assert_eq!(h.target(), "http://Example.com:8080/a?b");
        assert_eq!(h.target_authority(), Some("Example.com:8080"));
        let h = ok(b"GET https://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(h.path(), "/");
        assert_eq!(
            err(b"GET https://example.com/ HTTP/1.1\r\n\r\n"),
            HttpError::MissingHost
        );
        // HTTP/1.0 needs no Host: the authority is the host.
        assert_eq!(ok(b"GET http://a.b/ HTTP/1.0\r\n\r\n").host(), Some("a.b"));
        for bad in [
            &b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET http:/// HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET http://a?q HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a?b#frag HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET http://a/#f HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(matches!(err(bad), HttpError::InvalidTarget { .. }));
        }
        assert_eq!(ok(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").path(), "*");
        assert_eq!(
            err(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"),
            HttpError::ConnectNotSupported
        );
    }

    #[test]
    fn body_framing() {
        let h = ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.body(), BodyKind::Length(5));
        let h = ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(h.body(), BodyKind::Length(5));
        let h = ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.body(), BodyKind::Chunked);
        // A body with no framing is no body.
        let h = ok(b"POST / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.body(), BodyKind::None);
    }

    #[test]
    fn smuggling_framing_is_refused() {
        let cases: &[(&[u8], HttpError)] = &[
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::ContentLengthWithTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                HttpError::ContentLengthWithTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                HttpError::ConflictingContentLength { first: 5, second: 6 },
            ),
            (
                b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::TransferEncodingInHttp10,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&err(input), want, "{}", String::from_utf8_lossy(input));
        }
        for te in [
            "chunked, identity",
            "identity",
            "xchunked",
            "chunked, chunked",
            "gzip, chunked",
            "chunked;q=1",
            "chunked,",
            "",
        ] {
            let req = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert!(
                matches!(
                    err(req.as_bytes()),
                    HttpError::UnsupportedTransferEncoding { .. }
                ),
                "{te}"
            );
        }
        let two = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(
            err(two),
            HttpError::UnsupportedTransferEncoding { .. }
        ));
        for cl in ["-1", "abc", "1,1", "5 5", "99999999999999999999", "+5"] {
            let req = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\n\r\n");
            assert!(
                matches!(err(req.as_bytes()), HttpError::InvalidContentLength { .. }),
                "{cl}"
            );
        }
    }

    #[test]
    fn malformed_lines_are_refused() {
        let cases: &[&[u8]] = &[
            // obs-fold
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
            // space before colon
            b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
            // invalid header-name bytes
            b"GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n",
            // NUL and other controls in a value
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n",
            // bare CR
            b"GET / HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n",
            // space in target, missing version
            b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /\r\n\r\n",
            b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for input in cases {
            let e = err(input);
            assert_eq!(
                e.status(),
                400,
                "{e} for {}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn bare_lf_ends_lines() {
        let h = ok(b"GET / HTTP/1.1\nHost: a\nX-A: b\n\n");
        assert_eq!(h.header("x-a"), Some(&b"b"[..]));
        assert_eq!(h.len(), 31);
    }

    #[test]
    fn unsupported_versions_are_505() {
        for v in ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3"] {
            let req = format!("GET / {v}\r\nHost: a\r\n\r\n");
            let e = err(req.as_bytes());
            assert_eq!(e, HttpError::UnsupportedVersion);
            assert_eq!(e.status(), 505);
        }
        // The HTTP/2 connection preface (h2 with prior knowledge on a plain port).
        let e = err(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(e.status(), 505);
        // Not a version at all: a malformed request line.
        for line in [
            "GET / FOO/1.1",
            "GET / http/1.1",
            "GET /a b HTTP/1.1",
            "GET / HTTP/x",
        ] {
            let req = format!("{line}\r\nHost: a\r\n\r\n");
            assert_eq!(err(req.as_bytes()).status(), 400, "{line}");
        }
    }

    #[test]
    fn framing_header_names_are_case_insensitive() {
        let h = ok(b"POST / HTTP/1.1\r\nhOsT: a\r\ntRANSFER-eNCODING: CHUNKED\r\n\r\n");
        assert_eq!(h.body(), BodyKind::Chunked);
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nCONTENT-LENGTH: 1\r\ntransfer-encoding: chunked\r\n\r\n"),
            HttpError::ContentLengthWithTransferEncoding
        );
        // Look-alikes are not framing headers, and are not trusted as such.
        let h = ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(h.body(), BodyKind::Length(2));
        // Vertical tab or NUL around a value is a malformed value, not whitespace.
        for v in ["\x0bchunked", "chunked\x0b", "chunked\0"] {
            let req = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n");
            assert_eq!(err(req.as_bytes()).status(), 400, "{v:?}");
        }
        // Leading and trailing spaces and tabs are trimmed.
        let h = ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \t 7 \t\r\n\r\n");
        assert_eq!(h.body(), BodyKind::Length(7));
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive());
        assert!(!ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x, Close\r\n\r\n").keep_alive());
        assert!(ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive());
    }

    #[test]
    fn expect_continue() {
        let h =
            ok(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n");
        assert!(h.expects_continue());
        let h = ok(b"PUT / HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
        assert!(!h.expects_continue());
        let h = ok(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n");
        assert!(!h.expects_continue());
        let h = ok(b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
        assert!(h.expects_continue());
        let e = err(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n");
        assert_eq!(e.status(), 417);
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let h = ok(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.method(), "GET");
        assert_eq!(h.len(), 29);
    }

    fn with_headers(n: usize) -> Vec<u8> {
        let mut req = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 1..n {
            req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        req
    }

    #[test]
    fn max_headers_boundary() {
        let h = parse_request(&with_headers(MAX_HEADERS)).unwrap().unwrap();
        assert_eq!(h.headers().count(), MAX_HEADERS);
        let e = parse_request(&with_headers(MAX_HEADERS + 1)).unwrap_err();
        assert_eq!(e, HttpError::TooManyHeaders);
        assert_eq!(e.status(), 431);
    }

    /// A request whose head is exactly `size` bytes.
    fn head_of_size(size: usize) -> Vec<u8> {
        let start = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ";
        let mut req = start.to_vec();
        req.resize(size - 4, b'p');
        req.extend_from_slice(b"\r\n\r\n");
        req
    }

    #[test]
    fn max_head_bytes_boundary() {
        let exact = head_of_size(MAX_HEAD_BYTES);
        let h = parse_request(&exact).unwrap().unwrap();
        assert_eq!(h.len(), MAX_HEAD_BYTES);
        // A body after a full-size head is fine.
        let mut with_body = exact.clone();
        with_body.extend_from_slice(b"body");
        assert_eq!(
            parse_request(&with_body).unwrap().unwrap().len(),
            MAX_HEAD_BYTES
        );

        let over = head_of_size(MAX_HEAD_BYTES + 1);
        assert_eq!(parse_request(&over).unwrap_err(), HttpError::HeadTooLarge);
        assert_eq!(HttpError::HeadTooLarge.status(), 431);
        // Incomplete: waits until the limit is reached, then refuses.
        assert!(matches!(
            parse_request(&over[..MAX_HEAD_BYTES - 1]),
            Ok(None)
        ));
        assert_eq!(
            parse_request(&over[..MAX_HEAD_BYTES]).unwrap_err(),
            HttpError::HeadTooLarge
        );
    }

    #[test]
    fn reuse_keeps_no_stale_state() {
        let mut head = RequestHead::default();
        assert!(
            parse_request_into(
                b"GET http://A.b/x HTTP/1.1\r\nHost: A.b\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
                &mut head
            )
            .unwrap()
        );
        assert_eq!(head.host(), Some("a.b"));
        assert!(head.expects_continue());
        assert!(parse_request_into(b"GET /y HTTP/1.0\r\n\r\n", &mut head).unwrap());
        assert_eq!(head.host(), None);
        assert_eq!(head.path(), "/y");
        assert_eq!(head.target_authority(), None);
        assert!(!head.expects_continue());
        assert_eq!(head.body(), BodyKind::None);
    }
}
