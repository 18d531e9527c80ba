//! Head storage and header-field rules shared by request and response heads: the raw
//! head bytes with header name/value ranges into them (one buffer per head, reused across
//! keep-alive requests), and the framing rules (Content-Length, Transfer-Encoding,
//! Connection) that both parsers apply before a body is streamed.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use super::error::{HttpError, shown};
use super::limits::{MAX_HEAD_BYTES, MAX_HEADERS};

/// A byte range of a head buffer. Heads are at most [`MAX_HEAD_BYTES`], so `u32` fits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    pub(crate) fn new(start: usize, end: usize) -> Self {
        // Heads are bounded by MAX_HEAD_BYTES, far below u32::MAX.
        let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Self {
            start: clamp(start),
            end: clamp(end),
        }
    }

    /// The range `part` occupies in `base`; `part` must be a sub-slice of `base` (as
    /// httparse's results are). Anything else gives an empty span.
    pub(crate) fn within(base: &[u8], part: &[u8]) -> Self {
        let start = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
        match start.checked_add(part.len()) {
            Some(end) if start <= base.len() && end <= base.len() => Self::new(start, end),
            _ => Self::default(),
        }
    }

    pub(crate) fn get(self, buf: &[u8]) -> &[u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    pub(crate) fn str(self, buf: &[u8]) -> &str {
        std::str::from_utf8(self.get(buf)).unwrap_or_default()
    }

    pub(crate) fn sub(self, from: usize, to: usize) -> Self {
        let start = self.start as usize;
        Self::new(start + from, start + to)
    }
}

/// Header names ringress treats specially, recognised once when a head is parsed so
/// framing checks and rewriting never compare names again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Name {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    Expect,
    Server,
    XRequestId,
    XForwardedFor,
    XForwardedProto,
    XForwardedClientCert,
    XEnvoyUpstreamServiceTime,
    GrpcTimeout,
    /// Only the access log reads it.
    UserAgent,
}

impl Name {
    pub(crate) fn of(name: &str) -> Self {
        use Name::*;
        // Dispatch on length first: most names match no candidate of their length.
        let candidates: &[(&str, Name)] = match name.len() {
            2 => &[("te", Te)],
            4 => &[("host", Host)],
            6 => &[("expect", Expect), ("server", Server)],
            7 => &[("trailer", Trailer), ("upgrade", Upgrade)],
            10 => &[
                ("connection", Connection),
                ("keep-alive", KeepAlive),
                ("user-agent", UserAgent),
            ],
            12 => &[("x-request-id", XRequestId), ("grpc-timeout", GrpcTimeout)],
            14 => &[("content-length", ContentLength)],
            15 => &[("x-forwarded-for", XForwardedFor)],
            16 => &[("proxy-connection", ProxyConnection)],
            17 => &[
                ("transfer-encoding", TransferEncoding),
                ("x-forwarded-proto", XForwardedProto),
            ],
            23 => &[("x-forwarded-client-cert", XForwardedClientCert)],
            29 => &[("x-envoy-upstream-service-time", XEnvoyUpstreamServiceTime)],
            _ => return Other,
        };
        candidates
            .iter()
            .find(|(n, _)| name.eq_ignore_ascii_case(n))
            .map_or(Other, |&(_, k)| k)
    }

    /// Headers that describe one connection and are never forwarded (RFC 9110 §7.6.1).
    pub(crate) fn is_hop_by_hop(self) -> bool {
        use Name::*;
        matches!(
            self,
            Connection | KeepAlive | ProxyConnection | Te | Trailer | Upgrade | TransferEncoding
        )
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct HeaderSpan {
    pub(crate) name: Span,
    pub(crate) value: Span,
    pub(crate) kind: Name,
}

/// The raw bytes of one head and where its header lines are.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawHead {
    pub(crate) bytes: Vec<u8>,
    pub(crate) headers: Vec<HeaderSpan>,
    /// A Connection header names something other than `close`/`keep-alive`, so some
    /// end-to-end-looking headers are hop-by-hop for this message.
    pub(crate) connection_names_headers: bool,
}

/// Spare head allocations kept per shard thread, see [`RawHead`]'s `Drop`.
const SPARE_HEADS: usize = 64;

/// A head whose bytes outgrew this is freed rather than kept for reuse.
const SPARE_HEAD_MAX_BYTES: usize = 16 * 1024;

thread_local! {
    /// Emptied byte and span vectors of dropped heads, so parsing a request or response
    /// head on the steady path allocates nothing (each head would otherwise allocate
    /// twice and free twice).
    static SPARE: RefCell<Vec<(Vec<u8>, Vec<HeaderSpan>)>> = const { RefCell::new(Vec::new()) };
}

impl Drop for RawHead {
    fn drop(&mut self) {
        if self.bytes.capacity() == 0 || self.bytes.capacity() > SPARE_HEAD_MAX_BYTES {
            return;
        }
        let mut bytes = std::mem::take(&mut self.bytes);
        let mut headers = std::mem::take(&mut self.headers);
        bytes.clear();
        headers.clear();
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut()
                && spare.len() < SPARE_HEADS
            {
                spare.push((bytes, headers));
            }
        });
    }
}

impl RawHead {
    /// Copies the head (`buf[..len]`) and records the header ranges.
    pub(crate) fn fill(&mut self, buf: &[u8], len: usize, headers: &[httparse::Header<'_>]) {
        if self.bytes.capacity() == 0
            && let Ok(Some((bytes, spans))) =
                SPARE.try_with(|spare| spare.try_borrow_mut().ok().and_then(|mut s| s.pop()))
        {
            self.bytes = bytes;
            self.headers = spans;
        }
        self.bytes.clear();
        self.bytes.extend_from_slice(buf.get(..len).unwrap_or(buf));
        self.headers.clear();
        self.headers.extend(headers.iter().map(|h| HeaderSpan {
            name: Span::within(buf, h.name.as_bytes()),
            value: Span::within(buf, h.value),
            kind: Name::of(h.name),
        }));
        self.connection_names_headers = false;
    }

    pub(crate) fn name(&self, h: &HeaderSpan) -> &str {
        h.name.str(&self.bytes)
    }

    pub(crate) fn value(&self, h: &HeaderSpan) -> &[u8] {
        h.value.get(&self.bytes)
    }

    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| {
                h.name
                    .get(&self.bytes)
                    .eq_ignore_ascii_case(name.as_bytes())
            })
            .map(|h| self.value(h))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|h| (self.name(h), self.value(h)))
    }

    /// Values of every header of `kind`, in order.
    pub(crate) fn values_of(&self, kind: Name) -> impl Iterator<Item = &[u8]> {
        self.headers
            .iter()
            .filter(move |h| h.kind == kind)
            .map(|h| self.value(h))
    }

    /// Whether a Connection header lists `name` (so it is hop-by-hop for this message).
    pub(crate) fn named_in_connection(&self, name: &str) -> bool {
        self.connection_names_headers
            && self
                .values_of(Name::Connection)
                .flat_map(list_items)
                .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// An uninitialised header array for httparse, on the stack.
pub(crate) fn header_slots<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// The prefix of `buf` that the head parser looks at, and what to do when httparse
/// says the head is not complete within it.
pub(crate) fn head_window(buf: &[u8]) -> &[u8] {
    buf.get(..MAX_HEAD_BYTES).unwrap_or(buf)
}

/// An incomplete head: wait for more bytes unless the limit is already reached (the
/// head needs at least one more byte, so it would exceed [`MAX_HEAD_BYTES`]).
pub(crate) fn incomplete<T>(buf: &[u8]) -> Result<Option<T>, HttpError> {
    if buf.len() >= MAX_HEAD_BYTES {
        Err(HttpError::HeadTooLarge)
    } else {
        Ok(None)
    }
}

/// The comma-separated elements of a list-valued header, trimmed of spaces and tabs.
pub(crate) fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What the framing headers of one head say.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Framing {
    pub(crate) content_length: Option<u64>,
    pub(crate) chunked: bool,
    pub(crate) transfer_encoding: bool,
    pub(crate) close: bool,
    pub(crate) keep_alive: bool,
    /// The first Host header and how many there were.
    pub(crate) host: Option<Span>,
    pub(crate) host_count: usize,
    /// The first Expect header.
    pub(crate) expect: Option<Span>,
}

/// Which Transfer-Encoding values a parser accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TeRule {
    /// Requests: exactly `chunked`, nothing else, once.
    ChunkedOnly,
    /// Responses: a coding list ending in exactly one `chunked` (`gzip, chunked`); the
    /// body is passed through unchanged, so other codings reach the client intact.
    EndsInChunked,
}

impl Framing {
    /// Reads Content-Length, Transfer-Encoding and Connection; refuses every ambiguous
    /// combination (the request-smuggling cases).
    /// Also records in `raw` whether Connection names other headers.
    pub(crate) fn scan(raw: &mut RawHead, rule: TeRule) -> Result<Self, HttpError> {
        let mut f = Self::default();
        let mut te_items = 0usize;
        let mut chunked_at = None;
        let mut names_headers = false;
        for h in &raw.headers {
            let value = raw.value(h);
            match h.kind {
                Name::Host => {
                    f.host_count += 1;
                    f.host = f.host.or(Some(h.value));
                    continue;
                }
                Name::Expect => {
                    f.expect = f.expect.or(Some(h.value));
                    continue;
                }
                Name::ContentLength | Name::TransferEncoding | Name::Connection => {}
                _ => continue,
            }
            if h.kind == Name::ContentLength {
                let n = parse_content_length(value)?;
                match f.content_length {
                    Some(first) if first != n => {
                        return Err(HttpError::ConflictingContentLength { first, second: n });
                    }
                    _ => f.content_length = Some(n),
                }
            } else if h.kind == Name::TransferEncoding {
                f.transfer_encoding = true;
                for item in list_items(value) {
                    let bad = || HttpError::UnsupportedTransferEncoding {
                        value: shown(value),
                    };
                    if item.eq_ignore_ascii_case(b"chunked") {
                        if chunked_at.is_some() {
                            return Err(bad());
                        }
                        chunked_at = Some(te_items);
                    } else if rule == TeRule::ChunkedOnly
                        || item.is_empty()
                        || item.eq_ignore_ascii_case(b"identity")
                        || !item.iter().all(|&b| is_token_byte(b))
                    {
                        return Err(bad());
                    }
                    te_items += 1;
                }
            } else {
                for item in list_items(value) {
                    if item.eq_ignore_ascii_case(b"close") {
                        f.close = true;
                    } else if item.eq_ignore_ascii_case(b"keep-alive") {
                        f.keep_alive = true;
                    } else if !item.is_empty() {
                        names_headers = true;
                    }
                }
            }
        }
        raw.connection_names_headers = names_headers;
        if f.transfer_encoding {
            if f.content_length.is_some() {
                return Err(HttpError::ContentLengthWithTransferEncoding);
            }
            // `chunked` must be the final coding, or the body's end is unknowable.
            if chunked_at.is_none() || chunked_at != te_items.checked_sub(1) {
                let value = raw
                    .values_of(Name::TransferEncoding)
                    .last()
                    .map(shown)
                    .unwrap_or_default();
                return Err(HttpError::UnsupportedTransferEncoding { value });
            }
            f.chunked = true;
        }
        Ok(f)
    }
}

/// A Content-Length value: 1*DIGIT fitting in a u64. Lists (`5, 5`), signs and spaces
/// inside are refused.
pub(crate) fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    let bad = || HttpError::InvalidContentLength {
        value: shown(value),
    };
    if value.is_empty() {
        return Err(bad());
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(bad());
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or_else(bad)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_plain_decimal() {
        assert_eq!(parse_content_length(b"0"), Ok(0));
        assert_eq!(parse_content_length(b"18446744073709551615"), Ok(u64::MAX));
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"1 2",
            b"5, 5",
            b"0x10",
            b"18446744073709551616",
            b"1e3",
        ] {
            assert!(
                matches!(
                    parse_content_length(bad),
                    Err(HttpError::InvalidContentLength { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn list_items_are_trimmed() {
        let items: Vec<&[u8]> = list_items(b" a ,\tb,,c ").collect();
        assert_eq!(items, vec![&b"a"[..], b"b", b"", b"c"]);
    }

    #[test]
    fn span_outside_its_base_is_empty() {
        let base = b"hello";
        let other = b"world";
        assert_eq!(Span::within(base, other), Span::default());
        assert_eq!(Span::within(base, &base[1..3]).get(base), b"el");
    }
}
