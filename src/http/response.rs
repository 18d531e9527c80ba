//! Response heads: what ringress reads from an upstream connection after forwarding a
//! request. Parses the status line and headers with httparse, decides how the body is
//! framed (which depends on the request's method), and keeps the head bytes with ranges
//! into them for `rewrite.rs` to write the client's head. Upstream heads follow the same
//! line-ending and header rules as requests (see `request.rs`); obs-fold is refused.

use super::body::BodyKind;
use super::error::HttpError;
use super::fields::{Framing, RawHead, Span, TeRule, head_window, header_slots, incomplete};

/// A parsed response head; owns a copy of the head bytes and ranges into it.
#[derive(Debug, Clone, Default)]
pub struct ResponseHead {
    raw: RawHead,
    status: u16,
    reason: Span,
    version_minor: u8,
    body: BodyKind,
    keep_alive: bool,
}

/// Parses a response head from the start of `buf`; `request_method` is the method of
/// the request it answers (a response to HEAD has no body). `Ok(None)`: incomplete.
pub fn parse_response(buf: &[u8], request_method: &str) -> Result<Option<ResponseHead>, HttpError> {
    let mut head = ResponseHead::default();
    Ok(parse_response_into(buf, request_method, &mut head)?.then_some(head))
}

/// Like [`parse_response`], refilling `head` so a pooled upstream connection reuses
/// its buffers. `Ok(false)`: incomplete.
pub fn parse_response_into(
    buf: &[u8],
    request_method: &str,
    head: &mut ResponseHead,
) -> Result<bool, HttpError> {
    parse_into(buf, request_method, false, head)
}

/// Like [`parse_response`] for the answer to a request that asked to switch protocols
/// (`Upgrade: websocket`): a `101 Switching Protocols` is then a final response, after
/// which the connection carries the new protocol.
pub fn parse_upgrade_response(
    buf: &[u8],
    request_method: &str,
) -> Result<Option<ResponseHead>, HttpError> {
    let mut head = ResponseHead::default();
    Ok(parse_into(buf, request_method, true, &mut head)?.then_some(head))
}

/// Parses into `head`; a 101 is an error unless the request asked for it
/// (`switching`).
fn parse_into(
    buf: &[u8],
    request_method: &str,
    switching: bool,
    head: &mut ResponseHead,
) -> Result<bool, HttpError> {
    let window = head_window(buf);
    let mut slots = header_slots();
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, window, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return incomplete::<()>(buf).map(|_| false),
        Err(e) => return Err(HttpError::from_httparse(e)),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err(HttpError::Malformed {
            part: "status line",
        });
    };
    if status < 100 {
        return Err(HttpError::InvalidStatus { code: status });
    }
    if status == 101 && !switching {
        return Err(HttpError::UnexpectedSwitchingProtocols);
    }
    head.raw.fill(window, len, resp.headers);
    head.reason = Span::within(window, resp.reason.unwrap_or_default().as_bytes());
    head.status = status;
    head.version_minor = version;
    let framing = Framing::scan(&mut head.raw, TeRule::EndsInChunked)?;
    if framing.transfer_encoding && version == 0 {
        return Err(HttpError::TransferEncodingInHttp10);
    }
    let bodiless = request_method == "HEAD" || status < 200 || status == 204 || status == 304;
    head.body = if bodiless {
        BodyKind::None
    } else if framing.chunked {
        BodyKind::Chunked
    } else if let Some(n) = framing.content_length {
        BodyKind::Length(n)
    } else {
        BodyKind::UntilClose
    };
    // After a 101 the connection is the new protocol's: never reused for HTTP.
    head.keep_alive = status != 101
        && head.body != BodyKind::UntilClose
        && !framing.close
        && (version >= 1 || framing.keep_alive);
    Ok(true)
}

impl ResponseHead {
    /// Bytes of the head; the body starts this far into the parsed buffer.
    pub(crate) fn len(&self) -> usize {
        self.raw.bytes.len()
    }

    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase as sent (may be empty).
    pub(crate) fn reason(&self) -> &str {
        self.reason.str(&self.raw.bytes)
    }

    /// The first header called `name` (ASCII case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.raw.header(name)
    }

    /// The end-to-end header lines, names as sent: without the hop-by-hop ones
    /// (RFC 9110 §7.6.1) and those the Connection header names. What a response
    /// carries to an HTTP/2 client.
    pub(crate) fn end_to_end_headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let raw = &self.raw;
        raw.headers
            .iter()
            .filter(move |h| !h.kind.is_hop_by_hop() && !raw.named_in_connection(raw.name(h)))
            .map(move |h| (raw.name(h), raw.value(h)))
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.raw.iter()
    }

    /// How the body is framed: `None` for HEAD requests, 1xx, 204 and 304; `UntilClose`
    /// without Content-Length or chunked.
    pub(crate) fn body(&self) -> BodyKind {
        self.body
    }

    /// Whether the upstream connection can be reused after this response.
    pub(crate) fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// A 1xx response (100 Continue, 103 Early Hints): the real response follows.
    /// Not a 101, which is final ([`parse_upgrade_response`]).
    pub(crate) fn is_informational(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// A `101 Switching Protocols`: the connection carries the protocol the request
    /// asked for from the end of this head on.
    pub(crate) fn is_switching(&self) -> bool {
        self.status == 101
    }

    /// Whether the body must be de-chunked for this client: an HTTP/1.0 client cannot
    /// read chunked framing, so the proxy forwards only the payload
    /// ([`BodyFramer::payload`](super::BodyFramer::payload)) and closes.
    pub(crate) fn dechunk_for(&self, client_minor: u8) -> bool {
        client_minor == 0 && self.body == BodyKind::Chunked
    }

    /// Whether the client connection must close after this response whatever the client
    /// asked: the body ends only at close, or is de-chunked for an HTTP/1.0 client.
    pub(crate) fn client_must_close(&self, client_minor: u8) -> bool {
        self.body == BodyKind::UntilClose || self.dechunk_for(client_minor)
    }

    pub(crate) fn raw(&self) -> &RawHead {
        &self.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::limits::{MAX_HEAD_BYTES, MAX_HEADERS};

    fn parse_all_splits(input: &[u8], method: &str) -> Result<ResponseHead, HttpError> {
        let whole = parse_response(input, method);
        let end = match &whole {
            Ok(Some(h)) => h.len(),
            Ok(None) => panic!("complete input reported incomplete"),
            Err(_) => input.len(),
        };
        for cut in 0..end {
            match parse_response(&input[..cut], method) {
                Ok(None) => {}
                Err(e) if whole.as_ref().err() == Some(&e) => {}
                other => panic!("prefix of {cut} bytes gave {other:?}, whole gave {whole:?}"),
            }
        }
        whole.map(|h| h.expect("complete"))
    }

    fn ok(input: &[u8]) -> ResponseHead {
        parse_all_splits(input, "GET").expect("valid response")
    }

    #[test]
    fn typical_response_over_every_split() {
        let input = b"HTTP/1.1 418 I'm a teapot\r\nServer: gunicorn\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nI'm a teapot\n";
        let h = ok(input);
        assert_eq!(h.len(), input.len() - 13);
        assert_eq!(h.status(), 418);
        assert_eq!(h.reason(), "I'm a teapot");
        assert_eq!(h.header("content-type"), Some(&b"text/plain"[..]));
        assert_eq!(h.headers().count(), 3);
        assert_eq!(h.body(), BodyKind::Length(13));
        assert!(h.keep_alive());
        assert!(!h.is_informational());
    }

    #[test]
    fn body_kind_by_method_and_status() {
        let cl = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(parse_all_splits(cl, "HEAD").unwrap().body(), BodyKind::None);
        assert_eq!(
            parse_all_splits(cl, "GET").unwrap().body(),
            BodyKind::Length(5)
        );
        for status in [
            "100 Continue",
            "103 Early Hints",
            "204 No Content",
            "304 Not Modified",
        ] {
            let r = format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\n");
            assert_eq!(ok(r.as_bytes()).body(), BodyKind::None, "{status}");
        }
        assert!(ok(b"HTTP/1.1 100 Continue\r\n\r\n").is_informational());
        let h = ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.body(), BodyKind::Chunked);
        assert!(h.dechunk_for(0));
        assert!(!h.dechunk_for(1));
        assert!(h.client_must_close(0));
        let h = ok(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.body(), BodyKind::UntilClose);
        assert!(!h.keep_alive());
        assert!(h.client_must_close(1));
    }

    #[test]
    fn keep_alive_rules() {
        assert!(
            !ok(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive()
        );
        assert!(!ok(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive());
        assert!(
            ok(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
                .keep_alive()
        );
    }

    #[test]
    fn empty_reason() {
        assert_eq!(
            ok(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").reason(),
            ""
        );
        assert_eq!(
            ok(b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n").reason(),
            ""
        );
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let cases: &[(&[u8], HttpError)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::ContentLengthWithTransferEncoding,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                HttpError::ConflictingContentLength {
                    first: 1,
                    second: 2,
                },
            ),
            (
                b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::TransferEncodingInHttp10,
            ),
            (
                b"HTTP/1.1 099 Low\r\n\r\n",
                HttpError::InvalidStatus { code: 99 },
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
                HttpError::UnexpectedSwitchingProtocols,
            ),
            (b"HTTP/2.0 200 OK\r\n\r\n", HttpError::UnsupportedVersion),
        ];
        for (input, want) in cases {
            assert_eq!(&parse_all_splits(input, "GET").unwrap_err(), want);
        }
        for te in [
            "chunked, gzip",
            "identity",
            "xchunked",
            "chunked, chunked",
            "gzip",
        ] {
            let r = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert!(
                matches!(
                    parse_all_splits(r.as_bytes(), "GET"),
                    Err(HttpError::UnsupportedTransferEncoding { .. })
                ),
                "{te}"
            );
        }
        // obs-fold and NUL are refused from upstreams too.
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", "GET").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nA: b\0\r\n\r\n", "GET").is_err());
    }

    #[test]
    fn limits() {
        let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            r.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        let mut over = r.clone();
        r.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_response(&r, "GET")
                .unwrap()
                .unwrap()
                .headers()
                .count(),
            MAX_HEADERS
        );
        over.extend_from_slice(b"X-last: v\r\n\r\n");
        assert_eq!(
            parse_response(&over, "GET").unwrap_err(),
            HttpError::TooManyHeaders
        );

        let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        big.resize(MAX_HEAD_BYTES - 4, b'v');
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_response(&big, "GET").unwrap().unwrap().len(),
            MAX_HEAD_BYTES
        );
        big.insert(20, b'v');
        assert_eq!(
            parse_response(&big, "GET").unwrap_err(),
            HttpError::HeadTooLarge
        );
    }

    #[test]
    fn a_101_is_final_only_for_an_upgrade() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi";
        assert!(matches!(
            parse_response(head, "GET"),
            Err(HttpError::UnexpectedSwitchingProtocols)
        ));
        let switched = parse_upgrade_response(head, "GET").unwrap().unwrap();
        assert!(switched.is_switching() && !switched.is_informational());
        assert!(!switched.keep_alive());
        assert_eq!(switched.body(), BodyKind::None);
        assert_eq!(&head[switched.len()..], b"\x81\x02hi");
        // Other answers to an upgrade request are ordinary responses.
        let refused = parse_upgrade_response(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
            "GET",
        );
        let refused = refused.unwrap().unwrap();
        assert!(!refused.is_switching() && refused.keep_alive());
        let interim = parse_upgrade_response(b"HTTP/1.1 100 Continue\r\n\r\n", "GET");
        assert!(interim.unwrap().unwrap().is_informational());
    }
}
