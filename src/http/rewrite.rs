//! Head rewriting: the request head ringress sends upstream and the response head it
//! sends the client, written fresh (CRLF, HTTP/1.1) from a parsed head. This is where
//! hop-by-hop headers are dropped, forwarding headers (`x-forwarded-for`,
//! `x-forwarded-proto`, `x-request-id`, `x-forwarded-client-cert`) are added, a route's
//! header operations are applied, and framing headers are written from the parsed
//! framing, so an upstream always sees exactly one unambiguous body length.
//!
//! Header operations never touch framing: `content-length`, `transfer-encoding` and
//! `connection` in a route's `set`/`add`/`remove` are ignored here, and so is
//! `remove` of `host` (it can be replaced with `set`). Names or values that would break
//! the head (CR, LF, NUL, a name that is not a token) are skipped too; the config
//! loader is expected to refuse them first.

use std::io::Write as _;
use std::net::IpAddr;

use super::body::BodyKind;
use super::fields::{Name, RawHead, is_token_byte};
use super::generated::reason_phrase;
use super::request::RequestHead;
use super::response::ResponseHead;
use crate::config::HeaderOps;

/// What the proxy knows about a request beyond its head, for the upstream rewrite.
#[derive(Debug, Clone, Copy)]
pub struct ForwardContext<'a> {
    /// The client's address, appended to `x-forwarded-for`.
    pub client_ip: IpAddr,
    /// `"http"` or `"https"`, for `x-forwarded-proto`.
    pub scheme: &'a str,
    /// A generated id for `x-request-id` when the client sent none.
    pub request_id: Option<&'a str>,
    /// The route's rewritten path (with query), replacing the request's.
    pub path: Option<&'a str>,
    /// The route's rewritten authority, replacing Host.
    pub authority: Option<&'a str>,
    /// The route's request header operations.
    pub ops: &'a HeaderOps,
    /// The `x-forwarded-client-cert` value from a verified client chain.
    pub client_cert: Option<&'a str>,
    /// Lower-case names of request headers end-user authentication keeps from the
    /// upstream (a verified token's header, client-sent claim headers).
    pub remove: &'a [String],
    /// Headers end-user authentication adds (claims, the token's payload).
    pub add: &'a [(String, String)],
    /// The protocol the request asks to switch to, when the proxy lets it
    /// (`websocket`): sent on as `connection: upgrade` and `upgrade`, which are
    /// otherwise hop-by-hop and dropped.
    pub upgrade: Option<&'a [u8]>,
}

/// What the proxy knows about a response beyond its head, for the client rewrite.
#[derive(Debug, Clone, Copy)]
pub struct ResponseContext<'a> {
    /// Time from sending the request upstream to its response head, for
    /// `x-envoy-upstream-service-time`.
    pub upstream_service_time_ms: Option<u64>,
    /// The route's response header operations.
    pub ops: &'a HeaderOps,
    /// Close the client connection after this response (`connection: close`); false
    /// for 1xx heads, which a final response follows.
    pub close: bool,
    /// The client's HTTP minor version (0: HTTP/1.0). An HTTP/1.0 client never gets
    /// a 1xx head: the proxy drops interim responses for it.
    pub client_minor: u8,
    /// For a chunked body de-chunked for an HTTP/1.0 client: its length, when the
    /// proxy gathered it whole before the head went out. It is sent as
    /// `content-length`, so the client knows where the body ends (and the connection
    /// may stay open); without it the body ends at the close.
    pub dechunked_length: Option<u64>,
    /// A `Set-Cookie` value the proxy adds (a generated consistent-hash cookie).
    pub set_cookie: Option<&'a str>,
}

/// Names a route's header operations may not touch.
fn is_framing(name: &str) -> bool {
    ["content-length", "transfer-encoding", "connection"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Whether bytes can go in a header value: no CR, LF, NUL or other controls but tab.
fn is_safe_value(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

fn is_safe_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(is_token_byte)
}

fn ops_remove(ops: &HeaderOps, name: &str) -> bool {
    if ops.remove.is_empty() {
        return false;
    }
    ops.remove.iter().any(|r| r.eq_ignore_ascii_case(name))
}

fn ops_set(ops: &HeaderOps, name: &str) -> bool {
    if ops.set.is_empty() {
        return false;
    }
    ops.set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// Whether header `name` is replaced or removed by `ops` (so the original is dropped).
fn ops_touch(ops: &HeaderOps, name: &str) -> bool {
    (ops_remove(ops, name) || ops_set(ops, name)) && !is_framing(name)
}

/// Writes one header line, `name: value`.
pub(crate) fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn push_u64(out: &mut Vec<u8>, n: u64) {
    // Most numbers here are below 1000 (statuses, octets, milliseconds): their digits
    // go out as one 4-byte word, leading zeros shifted away.
    if n < 1000 {
        let n = n as u32;
        let skip = u32::from(n < 100) + u32::from(n < 10);
        let word = u32::from_le_bytes([
            b'0' + (n / 100) as u8,
            b'0' + (n / 10 % 10) as u8,
            b'0' + (n % 10) as u8,
            0,
        ]) >> (8 * skip);
        push_prefix(out, &word.to_le_bytes(), (3 - skip) as usize);
        return;
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // A few bytes: pushed one by one, cheaper than the call of a slice copy.
    for &digit in &digits[i..] {
        out.push(digit);
    }
}

/// Writes an address as in `x-forwarded-for` (IPv4-mapped IPv6 as plain IPv4). IPv4 is
/// formatted by hand: `Display` costs more than the rest of the head rewrite.
pub(crate) fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let mut text = [0u8; V4_SOCKET_TEXT];
            let len = v4_text(v4, &mut text);
            push_prefix(out, &text, len);
        }
        // Display writes into the Vec without an intermediate String.
        v6 => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// The longest `a.b.c.d:port`.
const V4_SOCKET_TEXT: usize = 21;

/// Appends the first `len` bytes of `text`: the whole array in one fixed-size copy
/// (a few stores, where a slice of a length known only now costs a call), then the
/// rest cut off again.
pub(crate) fn push_prefix<const N: usize>(out: &mut Vec<u8>, text: &[u8; N], len: usize) {
    let end = out.len() + len.min(N);
    out.extend_from_slice(text);
    out.truncate(end);
}

/// `a.b.c.d` into the front of `text`; its length (at most 15).
fn v4_text(ip: std::net::Ipv4Addr, text: &mut [u8; V4_SOCKET_TEXT]) -> usize {
    /// Each octet's digits from the left, and how many there are, worked out at
    /// compile time.
    const DIGITS: [([u8; 4], u8); 256] = {
        let mut table = [([0u8; 4], 0u8); 256];
        let mut n = 0;
        while n < 256 {
            let (hundreds, tens, ones) = (
                b'0' + (n / 100) as u8,
                b'0' + (n / 10 % 10) as u8,
                b'0' + (n % 10) as u8,
            );
            table[n] = match n {
                0..=9 => ([ones, b'.', 0, 0], 1),
                10..=99 => ([tens, ones, b'.', 0], 2),
                _ => ([hundreds, tens, ones, b'.'], 3),
            };
            n += 1;
        }
        table
    };
    let mut len = 0;
    for octet in ip.octets() {
        // Four bytes each time (digits and a dot): at most 12 + 4 of the 21.
        let (digits, n) = DIGITS[usize::from(octet)];
        text[len..len + 4].copy_from_slice(&digits);
        len += usize::from(n) + 1;
    }
    // No dot after the last octet.
    len - 1
}

/// Writes `ip:port` (`[v6]:port` for IPv6), as `SocketAddr`'s `Display` does.
pub(crate) fn push_socket_addr(out: &mut Vec<u8>, addr: std::net::SocketAddr) {
    match addr {
        std::net::SocketAddr::V4(v4) => {
            // `a.b.c.d:port` in one buffer, copied in one go.
            let mut text = [0u8; V4_SOCKET_TEXT];
            let len = socket_v4_text(v4, &mut text);
            push_prefix(out, &text, len);
        }
        std::net::SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `a.b.c.d:port` into `text`; its length.
pub(crate) fn socket_v4_text(
    addr: std::net::SocketAddrV4,
    text: &mut [u8; V4_SOCKET_TEXT],
) -> usize {
    let mut len = v4_text(*addr.ip(), text);
    text[len] = b':';
    len += 1;
    let mut port = addr.port();
    let digits = match port {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    };
    for at in (len..len + digits).rev() {
        text[at] = b'0' + (port % 10) as u8;
        port /= 10;
    }
    len + digits
}

/// Writes `set` then `add` operations (except framing names and unsafe bytes).
fn write_ops(out: &mut Vec<u8>, ops: &HeaderOps) {
    for (name, value) in ops.set.iter().chain(&ops.add) {
        if is_safe_name(name) && is_safe_value(value.as_bytes()) && !is_framing(name) {
            header(out, name.as_bytes(), value.as_bytes());
        }
    }
}

/// Whether an end-to-end header from the received head is forwarded unchanged: not
/// named in Connection, not replaced or removed by the route.
fn forwarded(raw: &RawHead, name: &str, ops: &HeaderOps) -> bool {
    !ops_touch(ops, name) && !raw.named_in_connection(name)
}

/// Writes the request head to send upstream. See the module doc for the rules; in
/// order: request line (`HTTP/1.1`), `host`, the client's end-to-end headers,
/// framing (`content-length` or `transfer-encoding: chunked`), `x-forwarded-for`,
/// `x-forwarded-proto`, `x-request-id` (if the client sent none),
/// `x-forwarded-client-cert`, the route's `set` and `add` headers, empty line.
/// `Expect` is not forwarded: the proxy answers 100-continue itself.
pub fn write_upstream_request(head: &RequestHead, ctx: &ForwardContext<'_>, out: &mut Vec<u8>) {
    let raw = head.raw();
    let ops = ctx.ops;
    let path = ctx
        .path
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b > 0x20 && b != 0x7f))
        .unwrap_or(head.path());
    out.extend_from_slice(head.method().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");

    // Host: the route's `set` wins, then the rewritten authority, then the target's
    // authority (absolute-form), then the client's Host. Always exactly one.
    if !ops_set(ops, "host") {
        let host = ctx
            .authority
            .map(str::as_bytes)
            .filter(|a| is_safe_value(a))
            .or(head.target_authority().map(str::as_bytes))
            .or(head.header_of(Name::Host))
            .unwrap_or_default();
        header(out, b"host", host);
    }

    let mut client_request_id = false;
    for h in &raw.headers {
        let (name, value) = (raw.name(h), raw.value(h));
        match h.kind {
            // Written below from what ringress knows, never copied.
            Name::Host
            | Name::ContentLength
            | Name::XForwardedFor
            | Name::XForwardedProto
            | Name::XForwardedClientCert
            | Name::Expect => {}
            // Kept even if Connection names it: tracing must survive.
            Name::XRequestId => {
                if !ops_touch(ops, name) {
                    client_request_id = true;
                    header(out, name.as_bytes(), value);
                }
            }
            kind if kind.is_hop_by_hop() => {}
            _ => {
                if forwarded(raw, name, ops)
                    && !ctx.remove.iter().any(|r| r.eq_ignore_ascii_case(name))
                {
                    header(out, name.as_bytes(), value);
                }
            }
        }
    }

    match head.body() {
        BodyKind::Chunked => header(out, b"transfer-encoding", b"chunked"),
        BodyKind::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyKind::None | BodyKind::UntilClose => {}
    }

    if !ops_touch(ops, "x-forwarded-for") {
        out.extend_from_slice(b"x-forwarded-for: ");
        for v in raw.values_of(Name::XForwardedFor) {
            if !v.is_empty() {
                out.extend_from_slice(v);
                out.extend_from_slice(b", ");
            }
        }
        push_ip(out, ctx.client_ip);
        out.extend_from_slice(b"\r\n");
    }
    if !ops_touch(ops, "x-forwarded-proto") {
        header(out, b"x-forwarded-proto", ctx.scheme.as_bytes());
    }
    if !client_request_id
        && !ops_touch(ops, "x-request-id")
        && let Some(id) = ctx.request_id.filter(|id| is_safe_value(id.as_bytes()))
    {
        header(out, b"x-request-id", id.as_bytes());
    }
    if !ops_touch(ops, "x-forwarded-client-cert")
        && let Some(cert) = ctx.client_cert.filter(|c| is_safe_value(c.as_bytes()))
    {
        header(out, b"x-forwarded-client-cert", cert.as_bytes());
    }
    write_ops(out, ops);
    for (name, value) in ctx.add {
        if is_safe_name(name) && is_safe_value(value.as_bytes()) {
            header(out, name.as_bytes(), value.as_bytes());
        }
    }
    if let Some(protocol) = ctx.upgrade.filter(|p| is_safe_value(p)) {
        header(out, b"connection", b"upgrade");
        header(out, b"upgrade", protocol);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the response head to send the client: status line (`HTTP/1.1`, the
/// upstream's reason or the standard one), the upstream's end-to-end headers (hop-by-hop
/// and `server` dropped; `transfer-encoding` kept as sent unless the body is de-chunked
/// for an HTTP/1.0 client), `server: ringress`, `x-envoy-upstream-service-time`, the
/// route's `set` and `add` headers, then `connection: close` when the proxy closes or
/// the response forces it ([`ResponseHead::client_must_close`]), or
/// `connection: keep-alive` for an HTTP/1.0 client that keeps its connection. A `101
/// Switching Protocols` ends with `connection: upgrade` and the upstream's `upgrade`.
pub fn write_client_response_head(
    head: &ResponseHead,
    ctx: &ResponseContext<'_>,
    out: &mut Vec<u8>,
) {
    let raw = head.raw();
    let ops = ctx.ops;
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(head.status()));
    out.push(b' ');
    let reason = match head.reason() {
        "" => reason_phrase(head.status()),
        r => r,
    };
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");

    let dechunk = head.dechunk_for(ctx.client_minor);
    let service_time = ctx.upstream_service_time_ms;
    let mut content_length_sent = false;
    for h in &raw.headers {
        let (name, value) = (raw.name(h), raw.value(h));
        match h.kind {
            // The body is passed through as received, so its codings are too.
            Name::TransferEncoding => {
                if !dechunk && ctx.client_minor >= 1 {
                    header(out, name.as_bytes(), value);
                }
            }
            // Identical duplicates (checked by the parser) are sent once.
            Name::ContentLength => {
                if !content_length_sent {
                    content_length_sent = true;
                    header(out, name.as_bytes(), value);
                }
            }
            Name::Server => {}
            Name::XEnvoyUpstreamServiceTime if service_time.is_some() => {}
            kind if kind.is_hop_by_hop() => {}
            _ => {
                if forwarded(raw, name, ops) {
                    header(out, name.as_bytes(), value);
                }
            }
        }
    }
    if !ops_touch(ops, "server") {
        header(out, b"server", b"ringress");
    }
    if let Some(ms) = service_time
        && !ops_touch(ops, "x-envoy-upstream-service-time")
    {
        out.extend_from_slice(b"x-envoy-upstream-service-time: ");
        push_u64(out, ms);
        out.extend_from_slice(b"\r\n");
    }
    if let (true, Some(len)) = (dechunk, ctx.dechunked_length) {
        out.extend_from_slice(b"content-length: ");
        push_u64(out, len);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(cookie) = ctx.set_cookie {
        header(out, b"set-cookie", cookie.as_bytes());
    }
    write_ops(out, ops);
    if head.is_switching() {
        // The connection now carries the protocol the upstream switched to.
        header(out, b"connection", b"upgrade");
        for value in raw.values_of(Name::Upgrade) {
            header(out, b"upgrade", value);
        }
        out.extend_from_slice(b"\r\n");
        return;
    }
    let length_known = dechunk && ctx.dechunked_length.is_some();
    if ctx.close || (head.client_must_close(ctx.client_minor) && !length_known) {
        header(out, b"connection", b"close");
    } else if ctx.client_minor == 0 {
        header(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_request, parse_response};
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn addresses_as_display_writes_them() {
        for addr in [
            "1.2.3.4:5",
            "10.0.0.255:80",
            "127.0.0.1:65535",
            "255.255.255.0:1000",
            "[::1]:8443",
            "[2001:db8::1]:0",
        ] {
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            let mut out = Vec::new();
            push_socket_addr(&mut out, addr);
            assert_eq!(out, addr.to_string().into_bytes());
            let mut out = Vec::new();
            push_ip(&mut out, addr.ip());
            assert_eq!(out, addr.ip().to_string().into_bytes());
        }
    }

    #[test]
    fn every_octet_as_display_writes_it() {
        for octet in 0..=255u8 {
            for addr in [
                std::net::SocketAddrV4::new([octet, 0, 9, octet].into(), u16::from(octet)),
                std::net::SocketAddrV4::new([octet; 4].into(), 65535),
            ] {
                let mut out = Vec::new();
                push_socket_addr(&mut out, addr.into());
                assert_eq!(out, addr.to_string().into_bytes());
                let mut out = b"x".to_vec();
                push_ip(&mut out, (*addr.ip()).into());
                assert_eq!(out, format!("x{}", addr.ip()).into_bytes());
            }
        }
    }

    #[test]
    fn decimals_at_every_digit_boundary() {
        for n in [
            0,
            7,
            9,
            10,
            42,
            99,
            100,
            418,
            999,
            1000,
            65535,
            1 << 40,
            u64::MAX,
        ] {
            let mut out = b"x".to_vec();
            push_u64(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
        for n in 0..2000 {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    fn no_ops() -> HeaderOps {
        HeaderOps::default()
    }

    fn ctx(ops: &HeaderOps) -> ForwardContext<'_> {
        ForwardContext {
            client_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
            scheme: "https",
            request_id: Some("5f1e6c2a-0000-4000-8000-000000000001"),
            path: None,
            authority: None,
            ops,
            client_cert: None,
            remove: &[],
            add: &[],
            upgrade: None,
        }
    }

    fn upstream(req: &[u8], ctx: &ForwardContext<'_>) -> String {
        let head = parse_request(req).unwrap().unwrap();
        let mut out = Vec::new();
        write_upstream_request(&head, ctx, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn curl_request_upstream_bytes() {
        let ops = no_ops();
        let got = upstream(
            b"GET /status/418 HTTP/1.1\r\nHost: httpbin.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
            &ctx(&ops),
        );
        assert_eq!(
            got,
            "GET /status/418 HTTP/1.1\r\n\
             host: httpbin.example.com\r\n\
             User-Agent: curl/8.5.0\r\n\
             Accept: */*\r\n\
             x-forwarded-for: 10.0.0.7\r\n\
             x-forwarded-proto: https\r\n\
             x-request-id: 5f1e6c2a-0000-4000-8000-000000000001\r\n\
             \r\n"
        );
    }

    #[test]
    fn hop_by_hop_and_forwarding_headers() {
        let ops = no_ops();
        let mut c = ctx(&ops);
        c.client_cert = Some("By=spiffe://a;Hash=ab");
        c.client_ip = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        let got = upstream(
            b"POST /a HTTP/1.1\r\nHost: a.com\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers\r\nTrailer: X-Sum\r\nUpgrade: websocket\r\nX-Secret: s\r\nX-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Client-Cert: forged\r\nX-Request-Id: abc\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\nX-Keep: k\r\n\r\n",
            &c,
        );
        assert_eq!(
            got,
            "POST /a HTTP/1.1\r\n\
             host: a.com\r\n\
             X-Request-Id: abc\r\n\
             X-Keep: k\r\n\
             transfer-encoding: chunked\r\n\
             x-forwarded-for: 1.2.3.4, 5.6.7.8, 192.0.2.1\r\n\
             x-forwarded-proto: https\r\n\
             x-forwarded-client-cert: By=spiffe://a;Hash=ab\r\n\
             \r\n"
        );
    }

    #[test]
    fn rewrites_and_header_ops() {
        let ops = HeaderOps {
            set: vec![
                ("x-env".into(), "prod".into()),
                ("content-length".into(), "0".into()),
                ("x-bad".into(), "a\r\nInjected: 1".into()),
            ],
            add: vec![
                ("x-env".into(), "extra".into()),
                ("x-new".into(), "n".into()),
            ],
            remove: vec![
                "x-drop".into(),
                "content-length".into(),
                "x-forwarded-proto".into(),
            ],
        };
        let mut c = ctx(&ops);
        c.path = Some("/new/path?q=1");
        c.authority = Some("backend.internal:8000");
        c.client_ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let got = upstream(
            b"PUT /old HTTP/1.0\r\nHost: a.com\r\nX-Env: dev\r\nX-Drop: d\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            &c,
        );
        assert_eq!(
            got,
            "PUT /new/path?q=1 HTTP/1.1\r\n\
             host: backend.internal:8000\r\n\
             content-length: 3\r\n\
             x-forwarded-for: ::1\r\n\
             x-request-id: 5f1e6c2a-0000-4000-8000-000000000001\r\n\
             x-env: prod\r\n\
             x-env: extra\r\n\
             x-new: n\r\n\
             \r\n"
        );
    }

    #[test]
    fn absolute_form_and_missing_host() {
        let ops = no_ops();
        let mut c = ctx(&ops);
        c.request_id = None;
        let got = upstream(
            b"GET http://A.com:81/x HTTP/1.1\r\nHost: ignored\r\n\r\n",
            &c,
        );
        assert_eq!(
            got,
            "GET /x HTTP/1.1\r\nhost: A.com:81\r\nx-forwarded-for: 10.0.0.7\r\nx-forwarded-proto: https\r\n\r\n"
        );
        let got = upstream(b"GET / HTTP/1.0\r\n\r\n", &c);
        assert_eq!(
            got,
            "GET / HTTP/1.1\r\nhost: \r\nx-forwarded-for: 10.0.0.7\r\nx-forwarded-proto: https\r\n\r\n"
        );
    }

    #[test]
    fn host_set_by_ops() {
        let ops = HeaderOps {
            set: vec![("Host".into(), "h.internal".into())],
            add: vec![],
            remove: vec!["host".into()],
        };
        let mut c = ctx(&ops);
        c.request_id = None;
        let got = upstream(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &c);
        assert_eq!(
            got,
            "GET / HTTP/1.1\r\nx-forwarded-for: 10.0.0.7\r\nx-forwarded-proto: https\r\nHost: h.internal\r\n\r\n"
        );
    }

    fn client(resp: &[u8], method: &str, ctx: &ResponseContext<'_>) -> String {
        let head = parse_response(resp, method).unwrap().unwrap();
        let mut out = Vec::new();
        write_client_response_head(&head, ctx, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn client_response_bytes() {
        let ops = no_ops();
        let c = ResponseContext {
            upstream_service_time_ms: Some(12),
            ops: &ops,
            close: false,
            client_minor: 1,
            dechunked_length: None,
            set_cookie: None,
        };
        let got = client(
            b"HTTP/1.1 418 I'm a teapot\r\nServer: gunicorn\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: h\r\nx-envoy-upstream-service-time: 999\r\nContent-Length: 13\r\ncontent-length: 13\r\nX-More-Info: http://tools.ietf.org/html/rfc2324\r\n\r\n",
            "GET",
            &c,
        );
        assert_eq!(
            got,
            "HTTP/1.1 418 I'm a teapot\r\n\
             Content-Length: 13\r\n\
             X-More-Info: http://tools.ietf.org/html/rfc2324\r\n\
             server: ringress\r\n\
             x-envoy-upstream-service-time: 12\r\n\
             \r\n"
        );
    }

    #[test]
    fn client_response_close_and_http10() {
        let ops = HeaderOps {
            set: vec![("cache-control".into(), "no-store".into())],
            add: vec![("x-added".into(), "1".into())],
            remove: vec!["x-powered-by".into()],
        };
        let mut c = ResponseContext {
            upstream_service_time_ms: None,
            ops: &ops,
            close: true,
            client_minor: 1,
            dechunked_length: None,
            set_cookie: None,
        };
        let resp = b"HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=60\r\nX-Powered-By: x\r\n\r\n";
        assert_eq!(
            client(resp, "GET", &c),
            "HTTP/1.1 200 OK\r\n\
             Transfer-Encoding: chunked\r\n\
             server: ringress\r\n\
             cache-control: no-store\r\n\
             x-added: 1\r\n\
             connection: close\r\n\
             \r\n"
        );
        // HTTP/1.0 client: de-chunked, so no transfer-encoding and a forced close.
        c.close = false;
        c.client_minor = 0;
        assert_eq!(
            client(resp, "GET", &c),
            "HTTP/1.1 200 OK\r\n\
             server: ringress\r\n\
             cache-control: no-store\r\n\
             x-added: 1\r\n\
             connection: close\r\n\
             \r\n"
        );
        // ...unless the proxy gathered the body whole: then its length is sent.
        c.dechunked_length = Some(42);
        assert_eq!(
            client(resp, "GET", &c),
            "HTTP/1.1 200 OK\r\n\
             server: ringress\r\n\
             content-length: 42\r\n\
             cache-control: no-store\r\n\
             x-added: 1\r\n\
             connection: keep-alive\r\n\
             \r\n"
        );
        c.dechunked_length = None;
        // HTTP/1.0 client keeping its connection on a length-framed response.
        let resp = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            client(resp, "GET", &c),
            "HTTP/1.1 204 No Content\r\nserver: ringress\r\ncache-control: no-store\r\nx-added: 1\r\nconnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn push_u64_digits() {
        for n in [0, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn websocket_handshake_both_ways() {
        let ops = no_ops();
        let req = b"GET /chat HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let head = parse_request(req).unwrap().unwrap();
        assert_eq!(head.upgrade(), Some(&b"websocket"[..]));
        // Without the proxy's leave, Upgrade and Connection stay hop-by-hop.
        let plain = upstream(req, &ctx(&ops));
        assert!(!plain.to_ascii_lowercase().contains("upgrade"), "{plain}");
        let asked = ForwardContext {
            upgrade: head.upgrade(),
            ..ctx(&ops)
        };
        let sent = upstream(req, &asked);
        assert!(
            sent.contains("sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
                || sent.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
            "{sent}"
        );
        assert!(
            sent.ends_with("connection: upgrade\r\nupgrade: websocket\r\n\r\n"),
            "{sent}"
        );
        assert_eq!(sent.matches("onnection:").count(), 1, "{sent}");

        let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        let head = crate::http::parse_upgrade_response(resp, "GET")
            .unwrap()
            .unwrap();
        let rctx = ResponseContext {
            upstream_service_time_ms: Some(3),
            ops: &ops,
            close: false,
            client_minor: 1,
            dechunked_length: None,
            set_cookie: None,
        };
        let mut out = Vec::new();
        write_client_response_head(&head, &rctx, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{out}"
        );
        assert!(
            out.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{out}"
        );
        assert!(
            out.ends_with("connection: upgrade\r\nupgrade: websocket\r\n\r\n"),
            "{out}"
        );
        assert!(
            !out.contains("keep-alive") && !out.contains("close"),
            "{out}"
        );
        // An HTTP/1.0 request cannot upgrade (RFC 9110 §7.8).
        let old = parse_request(
            b"GET / HTTP/1.0\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        );
        assert_eq!(old.unwrap().unwrap().upgrade(), None);
        let no_connection =
            parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(no_connection.unwrap().unwrap().upgrade(), None);
    }
}
