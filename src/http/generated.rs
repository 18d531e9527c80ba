//! Responses ringress writes itself instead of forwarding: errors (400 from a bad head,
//! 404 when no route matches, 502/503/504 when an upstream fails), `redirect` routes
//! and `directResponse` routes, plus `100 Continue` and request ids. Each is a complete
//! HTTP/1.1 head with `content-length`, so the client connection can stay open unless
//! `close` is asked for.

use super::rewrite::push_u64;

/// The interim response sent when a client waiting with `Expect: 100-continue` may send
/// its body.
pub(crate) const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The standard reason phrase of a status code (`""` for unknown codes).
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

fn status_line(status: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\nserver: ringress\r\n");
}

fn end_head(body_len: usize, close: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"content-length: ");
    push_u64(out, body_len as u64);
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// An error response with a one-line text body naming the status (`404 Not Found\n`).
pub(crate) fn error_response(status: u16, close: bool, out: &mut Vec<u8>) {
    let reason = reason_phrase(status);
    // "NNN " + reason + "\n"
    let body_len = 4 + reason.len() + 1;
    status_line(status, out);
    out.extend_from_slice(b"content-type: text/plain\r\n");
    end_head(body_len, close, out);
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.push(b'\n');
}

/// A redirect (301, 302, 307, 308...) to `location`, with an empty body. Bytes that
/// cannot appear in a header value (CR, LF, other controls) are dropped from `location`.
pub(crate) fn redirect_response(status: u16, location: &str, close: bool, out: &mut Vec<u8>) {
    status_line(status, out);
    out.extend_from_slice(b"location: ");
    out.extend(
        location
            .bytes()
            .filter(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
    );
    out.extend_from_slice(b"\r\n");
    end_head(0, close, out);
}

/// A route's direct response: `status` with `body` (sent as `text/plain` when not
/// empty).
pub(crate) fn direct_response(status: u16, body: &[u8], close: bool, out: &mut Vec<u8>) {
    status_line(status, out);
    if !body.is_empty() {
        out.extend_from_slice(b"content-type: text/plain\r\n");
    }
    end_head(body.len(), close, out);
    out.extend_from_slice(body);
}

/// `status` with these headers and an empty body (CORS preflight answers). Bytes that
/// cannot appear in a header value are dropped from the values.
pub(crate) fn headers_response(
    status: u16,
    headers: &[(&str, &[u8])],
    close: bool,
    out: &mut Vec<u8>,
) {
    status_line(status, out);
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend(
            value
                .iter()
                .copied()
                .filter(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
        );
        out.extend_from_slice(b"\r\n");
    }
    end_head(0, close, out);
}

/// A refusal with a `text/plain` body (end-user authentication's answers), and
/// `www-authenticate` when given.
pub(crate) fn text_response(
    status: u16,
    body: &[u8],
    www_authenticate: Option<&str>,
    close: bool,
    out: &mut Vec<u8>,
) {
    status_line(status, out);
    out.extend_from_slice(b"content-type: text/plain\r\n");
    if let Some(challenge) = www_authenticate {
        out.extend_from_slice(b"www-authenticate: ");
        out.extend(
            challenge
                .bytes()
                .filter(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
        );
        out.extend_from_slice(b"\r\n");
    }
    end_head(body.len(), close, out);
    out.extend_from_slice(body);
}

/// A new random request id in UUID version 4 form (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`),
/// for `x-request-id` when a client sent none.
pub(crate) fn new_request_id() -> RequestId {
    let mut bits = fastrand::u128(..);
    // Version 4 and the RFC 9562 variant.
    bits = (bits & !(0xf << 76)) | (0x4 << 76);
    bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [b'-'; 36];
    let mut nibbles = (0..32).map(|i| HEX[((bits >> (124 - 4 * i)) & 0xf) as usize]);
    for (at, byte) in id.iter_mut().enumerate() {
        if !matches!(at, 8 | 13 | 18 | 23) {
            *byte = nibbles.next().unwrap_or(b'0');
        }
    }
    RequestId(id)
}

/// A request id in UUID text form, kept on the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestId([u8; 36]);

impl RequestId {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn as_str(&self) -> &str {
        // Hex digits and dashes only, so always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn error_response_bytes() {
        assert_eq!(
            text(|o| error_response(404, false, o)),
            "HTTP/1.1 404 Not Found\r\nserver: ringress\r\ncontent-type: text/plain\r\ncontent-length: 14\r\n\r\n404 Not Found\n"
        );
        assert_eq!(
            text(|o| error_response(431, true, o)),
            "HTTP/1.1 431 Request Header Fields Too Large\r\nserver: ringress\r\ncontent-type: text/plain\r\ncontent-length: 36\r\nconnection: close\r\n\r\n431 Request Header Fields Too Large\n"
        );
        // Unknown codes still give a valid response.
        assert!(
            text(|o| error_response(599, false, o)).ends_with("content-length: 5\r\n\r\n599 \n")
        );
    }

    #[test]
    fn redirect_response_bytes() {
        assert_eq!(
            text(|o| redirect_response(301, "https://a.com/x?y", false, o)),
            "HTTP/1.1 301 Moved Permanently\r\nserver: ringress\r\nlocation: https://a.com/x?y\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(
            text(|o| redirect_response(302, "/a\r\nSet-Cookie: x", true, o)),
            "HTTP/1.1 302 Found\r\nserver: ringress\r\nlocation: /aSet-Cookie: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn direct_response_bytes() {
        assert_eq!(
            text(|o| direct_response(200, b"hello", false, o)),
            "HTTP/1.1 200 OK\r\nserver: ringress\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"
        );
        assert_eq!(
            text(|o| direct_response(204, b"", true, o)),
            "HTTP/1.1 204 No Content\r\nserver: ringress\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        for id in [a, b] {
            let id = id.as_str();
            assert_eq!(id.len(), 36);
            let groups: Vec<&str> = id.split('-').collect();
            assert_eq!(
                groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12]
            );
            assert!(groups[2].starts_with('4'), "{id}");
            assert!(
                matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
                "{id}"
            );
            assert!(
                id.bytes()
                    .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
    }
}
