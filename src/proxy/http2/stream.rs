//! One HTTP/2 stream seen as an HTTP/1.1 client connection that makes one request,
//! so the stream is answered by the same code as every HTTP/1.1 request (routing,
//! rewriting, retries, timeouts, `x-forwarded-*`, the access log, the metrics).
//!
//! The request's pseudo-headers and headers become an HTTP/1.1 head
//! ([`request_head`]): `:method` and `:path` the request line, `:authority` the
//! `host`, split `cookie` fields joined, `connection: close` (one request per
//! stream). A body without `content-length` is sent chunked, with the stream's
//! trailers (gRPC metadata) as its trailer section. The HTTP/1.1 response
//! the connection code writes is parsed back ([`H2Stream::write_all`]): its status
//! and end-to-end headers become the HTTP/2 response head, its body (chunked framing
//! removed) DATA frames, sent as the client's flow-control window allows, and a
//! chunked body's trailer section (`grpc-status`) a trailing HEADERS frame. An
//! informational response (`100 Continue`) is not relayed. A response cut short
//! ends in `RST_STREAM`, never in `END_STREAM`.
//!
//! An extended CONNECT (`:method CONNECT` with `:protocol`, RFC 8441) becomes a
//! `GET` with `upgrade: PROTOCOL` and `connection: upgrade` ([`upgrade_head`], as
//! Envoy translates it), with a `sec-websocket-key` of ringress's when the client
//! sent none. The upstream's `101` goes to the client as `200`, and the stream then
//! carries the tunnel's bytes as DATA each way (`super::super::tunnel`).

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};

use super::super::downstream::LINGER_TIME;
use crate::buffers;
use crate::config::ServerTls;
use crate::http::{self, BodyFramer, BodyKind};
use crate::pipe;
use crate::uring;

/// What every stream of one HTTP/2 connection shares: what the connection's
/// handshake chose.
#[derive(Debug, Default)]
pub(crate) struct ConnectionFacts {
    pub(crate) tls: bool,
    pub(crate) server_name: Option<Box<str>>,
    pub(crate) settings: Option<Arc<ServerTls>>,
    pub(crate) client_identity: Option<String>,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) tls_version: Option<rustls::ProtocolVersion>,
}

/// The most a stream's response head may be before it is refused.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// One HTTP/2 stream, as [`super::super::Downstream::H2`] reads and writes it.
pub(crate) struct H2Stream {
    pub(crate) facts: Rc<ConnectionFacts>,
    /// The request's body, until its end.
    body: Option<RecvStream>,
    /// The body is sent on chunked: its DATA is framed as chunks.
    chunked: bool,
    /// The head was made for a HEAD request: the response has no body.
    head_request: bool,
    respond: SendResponse<Bytes>,
    /// The response's body, once its head went out (and it has a body).
    send: Option<SendStream<Bytes>>,
    /// Response bytes written and not yet translated (a head still incomplete).
    pending: Vec<u8>,
    /// The response's trailer section so far (a chunked body's, from HTTP/1.1).
    trailers: Vec<u8>,
    /// The response body's framing, once the head is parsed.
    framer: Option<BodyFramer>,
    /// The response body ends when the connection code closes (no length, not
    /// chunked).
    until_close: bool,
    /// The stream ended (`END_STREAM` or `RST_STREAM` sent).
    finished: bool,
    /// How long a send waits for the client's window.
    idle: Duration,
    /// The request is gRPC (`content-type: application/grpc...`).
    grpc: bool,
    /// The connection code is about to send an error it made itself, with this
    /// status ([`H2Stream::note_local_error`]).
    local_error: Option<u16>,
    /// The `grpc-status` and `grpc-message` of that error when they are not the ones
    /// mapped from its status (a fault's abort).
    local_grpc: Option<(u32, &'static str)>,
    /// The response went out whole already (a gRPC trailers-only answer): what the
    /// connection code still writes is dropped.
    discard: bool,
    /// The request is an extended CONNECT (RFC 8441, WebSocket over HTTP/2), made an
    /// HTTP/1.1 `Upgrade` request: its DATA are the tunnel's bytes.
    tunnel: Option<Tunnel>,
}

/// What an extended CONNECT stream remembers of its translation.
#[derive(Debug, Clone, Copy)]
struct Tunnel {
    /// ringress made the `sec-websocket-key` the upstream is sent (an HTTP/2 client
    /// sends none): the upstream's `sec-websocket-accept` answers ringress, not the
    /// client, and is not relayed.
    own_key: bool,
}

impl H2Stream {
    /// The stream of `request`, and the HTTP/1.1 head to answer it with (client
    /// bytes the connection code reads first). `Err`: the request cannot be written
    /// as HTTP/1.1 (the reason goes into a 400).
    pub(crate) fn new(
        request: ::http::Request<RecvStream>,
        respond: SendResponse<Bytes>,
        facts: Rc<ConnectionFacts>,
        idle: Duration,
    ) -> (H2Stream, Result<Vec<u8>, &'static str>) {
        let (parts, body) = request.into_parts();
        let has_body = !body.is_end_stream();
        let grpc = parts
            .headers
            .get(::http::header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
        let protocol = match parts.method == ::http::Method::CONNECT {
            true => parts.extensions.get::<h2::ext::Protocol>(),
            false => None,
        };
        // An extended CONNECT's DATA are the tunnel's, not a request body.
        let chunked = has_body
            && protocol.is_none()
            && !parts.headers.contains_key(::http::header::CONTENT_LENGTH);
        let (head, tunnel) = match protocol {
            Some(protocol) => match upgrade_head(&parts, protocol.as_str()) {
                Ok((head, tunnel)) => (Ok(head), Some(tunnel)),
                Err(e) => (Err(e), None),
            },
            None => (request_head(&parts, chunked), None),
        };
        let stream = H2Stream {
            facts,
            body: has_body.then_some(body),
            chunked,
            head_request: parts.method == ::http::Method::HEAD,
            respond,
            send: None,
            pending: Vec::new(),
            trailers: Vec::new(),
            framer: None,
            until_close: false,
            finished: false,
            idle,
            grpc,
            local_error: None,
            local_grpc: None,
            discard: false,
            tunnel,
        };
        (stream, head)
    }

    /// The rest of the request body, to be read by someone else (see
    /// `H2Exchange::relay_rest`); the stream reads no more of it.
    pub(crate) fn take_body(&mut self) -> Option<RecvStream> {
        self.body.take()
    }

    /// The two halves of a stream whose extended CONNECT the upstream accepted (its
    /// `101` went out as a `200`): the client's DATA, and the sender of DATA to it.
    /// `None` when either half is gone (the client already ended its side).
    pub(crate) fn tunnel_halves(&mut self) -> Option<(RecvStream, &mut SendStream<Bytes>)> {
        if self.tunnel.is_none() || self.finished {
            return None;
        }
        let send = self.send.as_mut()?;
        Some((self.body.take()?, send))
    }

    /// Ends a tunnel's stream as the upstream's close says: `END_STREAM` when it
    /// closed cleanly, `RST_STREAM` otherwise.
    pub(crate) fn end_tunnel(&mut self, whole: bool) {
        self.finish(whole);
    }

    /// Answers the request with a bodiless `status` itself (a request the
    /// connection code cannot be given).
    pub(crate) fn refuse(&mut self, status: u16) {
        let response = ::http::Response::builder().status(status).body(());
        if let Ok(response) = response {
            let _ = self.respond.send_response(response, true);
        }
        self.finished = true;
    }

    /// Appends request body bytes (chunk-framed when the body is sent chunked) to
    /// `buf`; `Ok(0)` once the body ended.
    pub(crate) async fn read(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let Some(body) = &mut self.body else {
            return Ok(0);
        };
        let before = buf.len();
        buffers::ensure(buf);
        match body.data().await {
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                if self.chunked {
                    http::push_chunk(buf, &data);
                } else {
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Err(io::Error::other(e)),
            None => {
                // Trailers (gRPC metadata a client sends last) end a chunked body;
                // a body with a length has no place for them.
                let trailers = body.trailers().await.map_err(io::Error::other)?;
                self.body = None;
                if self.chunked {
                    http::push_last_chunk(buf, trailers.as_ref());
                }
            }
        }
        Ok(buf.len() - before)
    }

    /// Takes HTTP/1.1 response bytes the connection code wrote and sends what they
    /// make: the response head once it is whole, then body DATA, waiting for the
    /// client's window.
    pub(crate) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if self.discard {
            return Ok(());
        }
        if self.finished {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the stream ended",
            ));
        }
        self.pending.extend_from_slice(data);
        while !self.pending.is_empty() {
            let Some(framer) = &mut self.framer else {
                if !self.send_head()? {
                    return Ok(());
                }
                continue;
            };
            let mut payload = Vec::new();
            let taken = framer
                .payload_and_trailers(&self.pending, &mut payload, &mut self.trailers)
                .map_err(invalid)?;
            let done = framer.is_done();
            self.pending.drain(..taken);
            if taken == 0 && !done {
                // Bytes after the body's end: nothing more belongs to this stream.
                self.pending.clear();
            }
            let trailers = match done {
                true => http::trailer_map(&self.trailers),
                false => None,
            };
            self.send_data(Bytes::from(payload), done && trailers.is_none())
                .await?;
            if let Some(trailers) = trailers {
                self.send_trailers(trailers)?;
            }
            if done {
                self.pending.clear();
            }
        }
        Ok(())
    }

    /// Parses the response head in `pending` and sends it; `false` while incomplete.
    fn send_head(&mut self) -> io::Result<bool> {
        let method = if self.head_request { "HEAD" } else { "GET" };
        let parsed = match self.tunnel {
            Some(_) => http::parse_upgrade_response(&self.pending, method),
            None => http::parse_response(&self.pending, method),
        };
        let head = match parsed {
            Ok(Some(head)) => head,
            Ok(None) if self.pending.len() > MAX_RESPONSE_HEAD => {
                return Err(invalid("response head too large"));
            }
            Ok(None) => return Ok(false),
            Err(e) => return Err(invalid(e)),
        };
        self.pending.drain(..head.len());
        if head.is_informational() {
            // `100 Continue` and the like are answered for the client by ringress
            // (or not at all): the next head is the response.
            return Ok(true);
        }
        if self.grpc && self.local_error == Some(head.status()) {
            self.send_grpc_error(head.status());
            return Ok(true);
        }
        // An extended CONNECT the upstream accepted: its `101` is the stream's `200`
        // (RFC 8441 §5), and the tunnel's bytes follow as DATA until either side ends.
        let switched = self.tunnel.filter(|_| head.status() == 101);
        let status = if switched.is_some() {
            200
        } else {
            head.status()
        };
        let mut response = ::http::Response::builder().status(status);
        for (name, value) in head.end_to_end_headers() {
            if switched.is_some_and(|t| t.own_key)
                && name.eq_ignore_ascii_case("sec-websocket-accept")
            {
                continue;
            }
            response = response.header(name, value);
        }
        let response = response.body(()).map_err(invalid)?;
        let body = match switched {
            Some(_) => BodyKind::UntilClose,
            None => head.body(),
        };
        let end = matches!(body, BodyKind::None | BodyKind::Length(0));
        let send = self
            .respond
            .send_response(response, end)
            .map_err(io::Error::other)?;
        self.framer = Some(BodyFramer::new(body));
        self.until_close = body == BodyKind::UntilClose;
        if end {
            self.finished = true;
        } else {
            self.send = Some(send);
        }
        Ok(true)
    }

    /// Notes that the response the connection code writes next is an error it made
    /// itself (no route, no upstream, a timeout...), with `status`: a gRPC client is
    /// then answered as Envoy answers it ([`H2Stream::send_grpc_error`]).
    pub(crate) fn note_local_error(&mut self, status: u16) {
        self.local_error = Some(status);
    }

    /// Completes when the client resets the stream or its connection ends (before the
    /// response began); pending until then.
    pub(crate) async fn reset_by_client(&mut self) {
        let _ = std::future::poll_fn(|cx| self.respond.poll_reset(cx)).await;
    }

    /// [`H2Stream::note_local_error`] for an answer whose `grpc-status` (`grpc`, else
    /// the one mapped from `status`) and `grpc-message` are its own.
    pub(crate) fn note_local_reply(
        &mut self,
        status: u16,
        grpc: Option<u32>,
        message: &'static str,
    ) {
        self.local_error = Some(status);
        self.local_grpc = Some((grpc.unwrap_or_else(|| grpc_status(status)), message));
    }

    /// Answers a gRPC request with a gateway-made error as Envoy does: a
    /// trailers-only response (`:status 200`, `content-type: application/grpc`,
    /// `grpc-status` mapped from the HTTP status, `grpc-message` its reason), the
    /// HTTP body dropped.
    fn send_grpc_error(&mut self, status: u16) {
        let (code, message) = self
            .local_grpc
            .unwrap_or_else(|| (grpc_status(status), http::reason_phrase(status)));
        let response = ::http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", code.to_string())
            .header("grpc-message", message)
            .body(());
        if let Ok(response) = response {
            let _ = self.respond.send_response(response, true);
        }
        self.finished = true;
        self.discard = true;
        self.pending.clear();
    }

    /// Sends `data` as the client's window allows; `end` ends the stream after it.
    async fn send_data(&mut self, data: Bytes, end: bool) -> io::Result<()> {
        let Some(send) = &mut self.send else {
            return Ok(());
        };
        if pipe::send_within(send, data, end, self.idle, "client").await? {
            self.finished = true;
        } else if end {
            self.finish(true);
        }
        Ok(())
    }

    /// Ends the stream with the response's trailers (gRPC's `grpc-status`).
    fn send_trailers(&mut self, trailers: ::http::HeaderMap) -> io::Result<()> {
        self.finished = true;
        match &mut self.send {
            Some(send) => send.send_trailers(trailers).map_err(io::Error::other),
            None => Ok(()),
        }
    }

    /// Ends the stream: whole (`END_STREAM`, when the response body runs until the
    /// connection closes), or cut short (`RST_STREAM`, also when no response was
    /// sent at all).
    pub(crate) fn close(&mut self, whole: bool) {
        if let Some(body) = self.body.take()
            && whole
        {
            // The answer came before the whole body (a 413, a 401): what the client
            // still sends is read and dropped for a moment, as an HTTP/1.1 connection
            // lingers, rather than the stream reset at once (`RST_STREAM` after a whole
            // response reads as a failure to some clients, curl 7.88 among them).
            uring::spawn(linger(body));
        }
        if self.finished {
            return;
        }
        // Only a body that runs until the close is whole at the close: any other
        // body not yet at its end was cut short.
        self.finish(whole && self.until_close);
    }

    fn finish(&mut self, whole: bool) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        match (&mut self.send, whole) {
            (Some(send), true) => {
                let _ = send.send_data(Bytes::new(), true);
            }
            (Some(send), false) => send.send_reset(h2::Reason::INTERNAL_ERROR),
            (None, _) => self.respond.send_reset(h2::Reason::INTERNAL_ERROR),
        }
    }
}

/// The gRPC status of a gateway-made error with HTTP `status`: gRPC's HTTP mapping
/// (`doc/http-grpc-status-mapping.md`), with a timeout as DEADLINE_EXCEEDED as Envoy
/// sends it.
fn grpc_status(status: u16) -> u32 {
    match status {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        408 | 504 => 4,        // DEADLINE_EXCEEDED
        429 | 502 | 503 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// Reads and drops the rest of a request body for [`LINGER_TIME`] (see
/// [`H2Stream::close`]); then the stream is reset.
async fn linger(mut body: RecvStream) {
    let _ = uring::timeout(LINGER_TIME, async {
        while let Some(Ok(data)) = body.data().await {
            let _ = body.flow_control().release_capacity(data.len());
        }
    })
    .await;
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// The HTTP/1.1 head of an extended CONNECT for `protocol` (RFC 8441), as Envoy
/// translates it: a `GET` with `upgrade: PROTOCOL` and `connection: upgrade`; for
/// `websocket`, with a `sec-websocket-key` when the client sent none (an HTTP/2
/// client never does; an HTTP/1.1 upstream requires one, RFC 6455 §4.1).
fn upgrade_head(
    parts: &::http::request::Parts,
    protocol: &str,
) -> Result<(Vec<u8>, Tunnel), &'static str> {
    let needs_key = protocol.eq_ignore_ascii_case("websocket")
        && !parts
            .headers
            .contains_key(::http::header::SEC_WEBSOCKET_KEY);
    let key = match needs_key {
        true => Some(websocket_key().ok_or("no random bytes for a WebSocket key")?),
        false => None,
    };
    if protocol.is_empty() || !protocol.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("invalid :protocol");
    }
    let upgrade = Upgrade {
        protocol,
        key: key.as_deref(),
    };
    let head = build_head(parts, false, Some(&upgrade))?;
    Ok((head, Tunnel { own_key: needs_key }))
}

/// What an extended CONNECT adds to its HTTP/1.1 head.
struct Upgrade<'a> {
    protocol: &'a str,
    key: Option<&'a str>,
}

/// A fresh `sec-websocket-key`: 16 random bytes, base64.
fn websocket_key() -> Option<String> {
    use base64::Engine as _;
    let mut nonce = [0u8; 16];
    aws_lc_rs::rand::fill(&mut nonce).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(nonce))
}

/// The HTTP/1.1 head of an HTTP/2 request (see the module doc).
fn request_head(parts: &::http::request::Parts, chunked: bool) -> Result<Vec<u8>, &'static str> {
    if parts.method == ::http::Method::CONNECT {
        // Only an extended CONNECT (`:protocol`, see `upgrade_head`) is served.
        return Err("CONNECT is not supported");
    }
    build_head(parts, chunked, None)
}

/// [`request_head`]'s head, or with `upgrade` [`upgrade_head`]'s.
fn build_head(
    parts: &::http::request::Parts,
    chunked: bool,
    upgrade: Option<&Upgrade<'_>>,
) -> Result<Vec<u8>, &'static str> {
    let method = match upgrade {
        Some(_) => "GET",
        None => parts.method.as_str(),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .ok_or("the request has no :path")?;
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let authority = parts.uri.authority().map(|a| a.as_str());
    match authority {
        Some(authority) => http::push_header(&mut head, b"host", authority.as_bytes()),
        None if parts.headers.contains_key(::http::header::HOST) => {}
        None => return Err("the request has neither :authority nor host"),
    }
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in &parts.headers {
        match name.as_str() {
            // :authority wins over host (RFC 9113 §8.3.1).
            "host" if authority.is_some() => {}
            "cookie" => cookies.push(value.as_bytes()),
            // Framing is ringress's to write; a tunnel's bytes have none.
            "transfer-encoding" => {}
            "content-length" if upgrade.is_some() => {}
            _ => http::push_header(&mut head, name.as_str().as_bytes(), value.as_bytes()),
        }
    }
    if !cookies.is_empty() {
        // HTTP/2 may split cookies into fields of their own (RFC 9113 §8.2.3).
        http::push_header(&mut head, b"cookie", &cookies.join(&b"; "[..]));
    }
    if chunked {
        http::push_header(&mut head, b"transfer-encoding", b"chunked");
    }
    match upgrade {
        Some(upgrade) => {
            http::push_header(&mut head, b"upgrade", upgrade.protocol.as_bytes());
            if let Some(key) = upgrade.key {
                http::push_header(&mut head, b"sec-websocket-key", key.as_bytes());
            }
            http::push_header(&mut head, b"connection", b"upgrade");
        }
        None => http::push_header(&mut head, b"connection", b"close"),
    }
    head.extend_from_slice(b"\r\n");
    Ok(head)
}
