//! HTTP/1.1 without I/O: head parsing, body framing, header rewriting and the responses
//! ringress generates. The proxy (`proxy.rs`) owns the sockets and buffers; it hands
//! received bytes to this module and writes what it returns.
//!
//! A request's path through these files:
//!
//! 1. `request.rs`: [`parse_request`] on the bytes read after TLS; `Ok(None)` means
//!    read more. A [`RequestHead`] keeps the head bytes and ranges into them (one copy,
//!    no per-header allocation; [`parse_request_into`] reuses the buffers on keep-alive
//!    connections). Framing rules (`fields.rs`) refuse anything that could be read two
//!    ways: Content-Length with Transfer-Encoding, differing Content-Lengths, codings
//!    other than `chunked`, obs-fold, bad names, control bytes, a fragment in the
//!    target; header names with `_` are dropped. Limits (`limits.rs`) bound the head;
//!    failures are [`HttpError`]s (`error.rs`) with a status code.
//! 2. `path.rs`: [`normalize_path`] before routing (`--path-normalization`).
//! 3. The proxy routes on [`RequestHead::host`] and the normalised path. A request
//!    that cannot be served gets a response from `generated.rs` ([`error_response`],
//!    [`redirect_response`], [`direct_response`]).
//! 4. `rewrite.rs`: [`write_upstream_request`] writes the head for the upstream
//!    (hop-by-hop headers dropped, `x-forwarded-*`, `x-request-id`, route header ops).
//!    If the client [expects 100-continue](RequestHead::expects_continue), the proxy
//!    sends [`CONTINUE_100`] itself when it starts reading the body.
//! 5. `body.rs`: a [`BodyFramer`] built from [`RequestHead::body`] says how many of the
//!    following bytes belong to the body and hands on what to forward: the bytes as
//!    they are for a length, a re-serialised chunked body (canonical size lines, no
//!    extensions; [`BodyFramer::forward`]); the next pipelined request starts right
//!    after.
//! 6. `response.rs`: [`parse_response`] on the upstream's bytes, knowing the request's
//!    method; 1xx heads are [informational](ResponseHead::is_informational) and another
//!    head follows. `rewrite.rs`: [`write_client_response_head`] writes the client's
//!    head (`server: ringress`, `x-envoy-upstream-service-time`, route header ops,
//!    `connection: close` when needed), and a second [`BodyFramer`] delimits the
//!    response body (de-chunking it for an HTTP/1.0 client, see
//!    [`ResponseHead::dechunk_for`]).

mod body;
pub(crate) mod cors;
mod error;
mod fields;
mod generated;
pub(crate) mod limits;
mod path;
mod request;
mod response;
mod rewrite;

pub use body::{BodyFramer, BodyKind};
pub(crate) use body::{push_chunk, push_last_chunk, trailer_map};
pub use error::HttpError;
pub(crate) use fields::Name as HeaderName;
pub(crate) use generated::{
    CONTINUE_100, RequestId, direct_response, error_response, headers_response, new_request_id,
    reason_phrase, redirect_response, text_response,
};
pub(crate) use path::query_pairs;
pub use path::{PathError, PathNormalization, normalize as normalize_path};
pub use request::{RequestHead, parse_request, parse_request_into};
pub use response::{ResponseHead, parse_response, parse_response_into, parse_upgrade_response};
pub use rewrite::{
    ForwardContext, ResponseContext, write_client_response_head, write_upstream_request,
};
pub(crate) use rewrite::{
    header as push_header, push_ip, push_prefix, push_socket_addr, push_u64 as push_decimal,
    socket_v4_text,
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests and bodies as a connection reads them: `input` arrives in pieces of
    /// `step` bytes; heads are parsed when complete and bodies delimited by the framer.
    /// Returns (method, path, body bytes) per request.
    fn read_pipeline(
        input: &[u8],
        step: usize,
    ) -> Result<Vec<(String, String, Vec<u8>)>, HttpError> {
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut current: Option<(RequestHead, BodyFramer, Vec<u8>)> = None;
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                if let Some((head, framer, body)) = current.as_mut() {
                    let n = framer.advance(&buf)?;
                    body.extend_from_slice(&buf[..n]);
                    buf.drain(..n);
                    if !framer.is_done() {
                        break;
                    }
                    out.push((
                        head.method().to_owned(),
                        head.path().to_owned(),
                        std::mem::take(body),
                    ));
                    current = None;
                }
                match parse_request(&buf)? {
                    None => break,
                    Some(head) => {
                        buf.drain(..head.len());
                        let framer = BodyFramer::new(head.body());
                        current = Some((head, framer, Vec::new()));
                    }
                }
            }
        }
        if let Some((head, framer, body)) = current
            && framer.is_done()
        {
            out.push((head.method().to_owned(), head.path().to_owned(), body));
        }
        Ok(out)
    }

    #[test]
    fn pipelined_requests_over_every_piece_size() {
        let input = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc\
GET /b HTTP/1.1\r\nHost: h\r\n\r\n\
PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nhi\r\n0\r\nT: 1\r\n\r\n\
DELETE /d HTTP/1.1\r\nHost: h\r\n\r\n";
        let want = vec![
            ("POST".to_owned(), "/a".to_owned(), b"abc".to_vec()),
            ("GET".to_owned(), "/b".to_owned(), vec![]),
            (
                "PUT".to_owned(),
                "/c".to_owned(),
                b"2;x=y\r\nhi\r\n0\r\nT: 1\r\n\r\n".to_vec(),
            ),
            ("DELETE".to_owned(), "/d".to_owned(), vec![]),
        ];
        for step in 1..=input.len() {
            assert_eq!(
                read_pipeline(input, step).unwrap(),
                want,
                "pieces of {step}"
            );
        }
    }

    #[test]
    fn smuggled_request_is_never_parsed() {
        // CL.TE: a front end trusting Content-Length would see one request, one trusting
        // chunked would see a second; ringress refuses the first head outright.
        let input = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n";
        for step in 1..=input.len() {
            assert_eq!(
                read_pipeline(input, step),
                Err(HttpError::ContentLengthWithTransferEncoding)
            );
        }
    }

    /// Mutated heads and bodies (fixed seed, so failures reproduce): parsers and the
    /// framer never panic, never claim more bytes than they were given, and a framer
    /// fed byte by byte agrees with one fed everything at once.
    #[test]
    fn mutated_input_never_panics() {
        let seeds: [&[u8]; 3] = [
            b"POST /a?b HTTP/1.1\r\nHost: Ex.com:8\r\nTransfer-Encoding: chunked\r\nConnection: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"5;e=1\r\nhello\r\n0\r\nT: v\r\n\r\n",
        ];
        let alphabet = b"\r\n :;,0aA\t\0\xff-/HTTP1.chunked";
        let mut rng = fastrand::Rng::with_seed(0x7269_6e67);
        for _ in 0..20_000 {
            let mut input = seeds[rng.usize(..seeds.len())].to_vec();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..=input.len());
                match rng.u8(..3) {
                    0 if at < input.len() => {
                        input.remove(at);
                    }
                    1 if at < input.len() => input[at] = alphabet[rng.usize(..alphabet.len())],
                    _ => input.insert(at, alphabet[rng.usize(..alphabet.len())]),
                }
            }
            if let Ok(Some(h)) = parse_request(&input) {
                assert!(h.len() <= input.len());
                let _ = (h.host(), h.path(), h.body(), h.headers().count());
                let ops = crate::config::HeaderOps::default();
                let ctx = ForwardContext {
                    client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
                    scheme: "http",
                    request_id: None,
                    path: None,
                    authority: None,
                    ops: &ops,
                    client_cert: None,
                    remove: &[],
                    add: &[],
                    upgrade: None,
                };
                let mut out = Vec::new();
                write_upstream_request(&h, &ctx, &mut out);
                assert!(parse_request(&out).is_ok_and(|r| r.is_some()), "{out:?}");
            }
            if let Ok(Some(h)) = parse_response(&input, "GET") {
                assert!(h.len() <= input.len());
            }
            let mut whole = BodyFramer::new(BodyKind::Chunked);
            let mut bytewise = BodyFramer::new(BodyKind::Chunked);
            let all = whole.advance(&input);
            let mut used = 0;
            let mut failed = None;
            for b in input.chunks(1) {
                match bytewise.advance(b) {
                    Ok(0) => break,
                    Ok(n) => used += n,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match all {
                Ok(n) => {
                    assert!(n <= input.len());
                    assert_eq!((n, whole.is_done()), (used, bytewise.is_done()));
                }
                Err(e) => assert_eq!(Some(e), failed),
            }
        }
    }
}
