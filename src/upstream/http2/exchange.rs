//! One request on a multiplexed HTTP/2 upstream connection, seen by the forwarding
//! code as an HTTP/1.1 exchange: it writes the rewritten HTTP/1.1 request (head, then
//! the body as the client framed it) and reads an HTTP/1.1 response, as it does with
//! an HTTP/1.1 upstream, so routing, retries, timeouts, header rewriting and the
//! access log are the same code for both.
//!
//! The request head becomes the stream's HEADERS (`:method`, `:path`, `:authority`
//! from `host`, `:scheme http` (`https` over TLS); hop-by-hop fields dropped, `te: trailers` kept for
//! gRPC), its body DATA as the upstream's flow-control window allows, and a chunked
//! body's trailers a trailing HEADERS frame. The response HEADERS become an HTTP/1.1
//! head, its DATA the body, chunked when the response has no `content-length` so
//! that its trailers (`grpc-status`, `grpc-message`) follow the last chunk; a
//! response that ends with its HEADERS (gRPC's trailers-only answer) gets
//! `content-length: 0`.
//!
//! Every step is a poll over state kept here, so a receive dropped by the forwarding
//! code's race between sending and listening loses nothing.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};

use super::Lease;
use crate::http::{self, BodyFramer, BodyKind, HeaderName};
use crate::pipe;
use crate::uring;

/// One stream of an upstream HTTP/2 connection (see the module doc).
pub(crate) struct H2Exchange {
    state: RefCell<State>,
    send_timeout: Cell<Duration>,
    /// The stream's place on its connection, given back when the exchange ends.
    lease: Lease,
}

struct State {
    /// The connection's handle, until the request head is sent.
    send_request: Option<SendRequest<Bytes>>,
    /// Request head bytes not yet whole.
    head: Vec<u8>,
    /// The request body's framing, once the head is sent, until the body ends.
    body: Option<BodyFramer>,
    /// The request body's payload not yet sent (the window was closed).
    data: BytesMut,
    /// The request body ended: `END_STREAM`, on its trailers if it had any, goes
    /// after `data`.
    end: Option<Option<::http::HeaderMap>>,
    stream: Option<SendStream<Bytes>>,
    /// The response, until its head arrived.
    response: Option<ResponseFuture>,
    /// The response body, once the head was read.
    response_body: Option<RecvStream>,
    /// The response body is written chunked (it has no `content-length`).
    chunked: bool,
    /// The request is HEAD: its response's body is none, whatever it says.
    head_request: bool,
    /// The response was read whole.
    done: bool,
    /// The upstream sent GOAWAY: its connection takes no new stream.
    goaway: bool,
    /// The connection speaks TLS: `:scheme` is `https`.
    https: bool,
}

impl H2Exchange {
    pub(super) fn new(send_request: SendRequest<Bytes>, lease: Lease) -> H2Exchange {
        H2Exchange {
            state: RefCell::new(State {
                send_request: Some(send_request),
                head: Vec::new(),
                body: None,
                data: BytesMut::new(),
                end: None,
                stream: None,
                response: None,
                response_body: None,
                chunked: false,
                head_request: false,
                done: false,
                goaway: false,
                https: lease.over_tls(),
            }),
            send_timeout: Cell::new(Duration::from_secs(60)),
            lease,
        }
    }

    pub(crate) fn set_send_timeout(&self, limit: Duration) {
        self.send_timeout.set(limit);
    }

    /// Takes request bytes (HTTP/1.1) and sends what they make, waiting for the
    /// upstream's window at most the send timeout.
    pub(crate) async fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let taken = self.state.borrow_mut().take_request(bytes);
        self.retire_after_goaway();
        taken?;
        let limit = self.send_timeout.get();
        let sent = uring::timeout(limit, poll_fn(|cx| self.state.borrow_mut().poll_send(cx)));
        let sent = match sent.await {
            Ok(sent) => sent,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the upstream's HTTP/2 flow-control window stayed closed",
            )),
        };
        self.retire_after_goaway();
        sent
    }

    /// Takes request bytes (HTTP/1.1) without sending them yet: they go first when
    /// the body is relayed ([`H2Exchange::relay_rest`]).
    pub(crate) fn queue(&self, bytes: &[u8]) -> io::Result<()> {
        self.state.borrow_mut().take_request(bytes)
    }

    /// Sends the rest of the request body from `body`, a client's HTTP/2 stream, in a
    /// task of its own, while the forwarding code relays the response: a streaming
    /// call's messages go on both ways at once. What was queued goes first; the
    /// client's trailers end the stream; each wait (the client's data, the upstream's
    /// window) is bounded by `idle`, and a failure resets the upstream stream.
    pub(crate) fn relay_rest(&self, body: Option<RecvStream>, idle: Duration) {
        let mut state = self.state.borrow_mut();
        let Some(stream) = state.stream.take() else {
            // The body went whole already.
            return;
        };
        state.body = None;
        let queued = std::mem::take(&mut state.data).freeze();
        let end = state.end.take();
        uring::spawn(relay(stream, queued, end, body, idle));
    }

    /// The next response bytes (HTTP/1.1); empty once the response ended.
    pub(crate) async fn recv(&self) -> io::Result<Vec<u8>> {
        let received = poll_fn(|cx| self.state.borrow_mut().poll_recv(cx)).await;
        self.retire_after_goaway();
        received
    }

    /// Once the upstream said GOAWAY, its connection gets no new stream (the
    /// streams it still serves finish, then `h2` closes it).
    fn retire_after_goaway(&self) {
        if self.state.borrow().goaway {
            self.lease.retire();
        }
    }
}

impl State {
    /// `e` as an I/O error; a GOAWAY is noted.
    fn error(&mut self, e: h2::Error) -> io::Error {
        self.goaway |= e.is_go_away();
        h2_error(e)
    }

    fn take_request(&mut self, bytes: &[u8]) -> io::Result<()> {
        let rest = match self.send_request.take() {
            Some(send_request) => {
                self.head.extend_from_slice(bytes);
                let Some(head) = http::parse_request(&self.head).map_err(invalid)? else {
                    self.send_request = Some(send_request);
                    return Ok(());
                };
                let used = head.len();
                self.send_head(send_request, &head)?;
                drop(head);
                let mut head = std::mem::take(&mut self.head);
                head.drain(..used);
                head
            }
            None => bytes.to_vec(),
        };
        if let Some(body) = &mut self.body {
            let mut payload = Vec::new();
            let mut trailers = Vec::new();
            body.payload_and_trailers(&rest, &mut payload, &mut trailers)
                .map_err(invalid)?;
            self.data.extend_from_slice(&payload);
            if body.is_done() {
                self.body = None;
                self.end = Some(http::trailer_map(&trailers));
            }
        }
        Ok(())
    }

    /// Opens the stream with the HEADERS of `head` (see the module doc).
    fn send_head(
        &mut self,
        mut send_request: SendRequest<Bytes>,
        head: &http::RequestHead,
    ) -> io::Result<()> {
        let authority = head
            .header_of(HeaderName::Host)
            .and_then(|h| std::str::from_utf8(h).ok())
            .or(head.target_authority())
            .unwrap_or_default();
        let scheme = if self.https { "https" } else { "http" };
        let uri = ::http::Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(head.path())
            .build()
            .map_err(invalid)?;
        let mut request = ::http::Request::builder().method(head.method()).uri(uri);
        let mut grpc = false;
        for (name, value) in head.headers() {
            let kind = HeaderName::of(name);
            if kind.is_hop_by_hop() || kind == HeaderName::Host {
                continue;
            }
            grpc |=
                name.eq_ignore_ascii_case("content-type") && value.starts_with(b"application/grpc");
            request = request.header(name, value);
        }
        if grpc {
            // gRPC servers expect it, and it is the one `te` HTTP/2 allows.
            request = request.header("te", "trailers");
        }
        let request = request.body(()).map_err(invalid)?;
        let kind = head.body();
        let bodiless = matches!(kind, BodyKind::None | BodyKind::Length(0));
        let (response, stream) = send_request
            .send_request(request, bodiless)
            .map_err(|e| self.error(e))?;
        self.head_request = head.method().eq_ignore_ascii_case("HEAD");
        self.response = Some(response);
        if !bodiless {
            self.body = Some(BodyFramer::new(kind));
            self.stream = Some(stream);
        }
        Ok(())
    }

    /// Sends the body payload waiting, then the end once the body ended.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(stream) = &mut self.stream else {
            return Poll::Ready(Ok(()));
        };
        while !self.data.is_empty() {
            stream.reserve_capacity(self.data.len());
            let granted = match ready!(stream.poll_capacity(cx)) {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Poll::Ready(Err(self.error(e))),
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the upstream ended the stream",
                    )));
                }
            };
            let piece = self.data.split_to(granted.min(self.data.len())).freeze();
            let last = self.data.is_empty() && matches!(self.end, Some(None));
            stream.send_data(piece, last).map_err(h2_error)?;
            if last {
                self.end = None;
                self.stream = None;
                return Poll::Ready(Ok(()));
            }
        }
        match self.end.take() {
            Some(Some(trailers)) => stream.send_trailers(trailers).map_err(h2_error)?,
            Some(None) => stream.send_data(Bytes::new(), true).map_err(h2_error)?,
            None => return Poll::Ready(Ok(())),
        }
        self.stream = None;
        Poll::Ready(Ok(()))
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Vec<u8>>> {
        if self.done {
            return Poll::Ready(Ok(Vec::new()));
        }
        if let Some(response) = &mut self.response {
            let polled = ready!(Pin::new(response).poll(cx));
            let response = polled.map_err(|e| self.error(e))?;
            self.response = None;
            let (parts, body) = response.into_parts();
            let head = self.response_head(&parts, body.is_end_stream());
            self.done = body.is_end_stream() || self.head_request;
            self.response_body = (!self.done).then_some(body);
            return Poll::Ready(Ok(head));
        }
        let Some(body) = &mut self.response_body else {
            // Not reached: the forwarding code reads only after sending the head.
            return Poll::Pending;
        };
        loop {
            match ready!(body.poll_data(cx)) {
                Some(Ok(data)) if data.is_empty() => continue,
                Some(Ok(data)) => {
                    let _ = body.flow_control().release_capacity(data.len());
                    if !self.chunked {
                        return Poll::Ready(Ok(data.to_vec()));
                    }
                    let mut out = Vec::with_capacity(data.len() + 12);
                    http::push_chunk(&mut out, &data);
                    return Poll::Ready(Ok(out));
                }
                Some(Err(e)) => return Poll::Ready(Err(self.error(e))),
                None => break,
            }
        }
        let polled = ready!(body.poll_trailers(cx));
        let trailers = polled.map_err(|e| self.error(e))?;
        self.done = true;
        self.response_body = None;
        if !self.chunked {
            // A body with a length has no place for trailers in HTTP/1.1.
            return Poll::Ready(Ok(Vec::new()));
        }
        let mut out = Vec::new();
        http::push_last_chunk(&mut out, trailers.as_ref());
        Poll::Ready(Ok(out))
    }

    /// The HTTP/1.1 head of a response (see the module doc).
    fn response_head(&mut self, parts: &::http::response::Parts, ended: bool) -> Vec<u8> {
        let status = parts.status.as_u16();
        let mut head = Vec::with_capacity(256);
        let _ = write!(
            head,
            "HTTP/1.1 {status} {}\r\n",
            parts.status.canonical_reason().unwrap_or("")
        );
        for (name, value) in &parts.headers {
            http::push_header(&mut head, name.as_str().as_bytes(), value.as_bytes());
        }
        let bodiless_status = matches!(status, 100..=199 | 204 | 304);
        let has_length = parts.headers.contains_key(::http::header::CONTENT_LENGTH);
        if !(bodiless_status || self.head_request || has_length) {
            if ended {
                http::push_header(&mut head, b"content-length", b"0");
            } else {
                self.chunked = true;
                http::push_header(&mut head, b"transfer-encoding", b"chunked");
            }
        }
        head.extend_from_slice(b"\r\n");
        head
    }
}

/// [`H2Exchange::relay_rest`]'s task.
async fn relay(
    mut send: SendStream<Bytes>,
    queued: Bytes,
    end: Option<Option<::http::HeaderMap>>,
    body: Option<RecvStream>,
    idle: Duration,
) {
    let relayed = async {
        pipe::send_within(&mut send, queued, false, idle, "upstream").await?;
        let trailers = match (end, body) {
            (Some(trailers), _) => trailers,
            (None, None) => None,
            (None, Some(mut body)) => {
                loop {
                    match uring::timeout(idle, body.data()).await {
                        Ok(Some(Ok(data))) => {
                            let _ = body.flow_control().release_capacity(data.len());
                            pipe::send_within(&mut send, data, false, idle, "upstream").await?;
                        }
                        Ok(Some(Err(e))) => return Err(io::Error::other(e)),
                        Ok(None) => break,
                        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                    }
                }
                match uring::timeout(idle, body.trailers()).await {
                    Ok(Ok(trailers)) => trailers,
                    Ok(Err(e)) => return Err(io::Error::other(e)),
                    Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                }
            }
        };
        match trailers {
            Some(trailers) => send.send_trailers(trailers),
            None => send.send_data(Bytes::new(), true),
        }
        .map_err(io::Error::other)
    };
    if let Err(e) = relayed.await {
        tracing::debug!(error = %e, "HTTP/2 request body relay ended");
        send.send_reset(h2::Reason::CANCEL);
    }
}

/// An `h2` error as the forwarding code reads errors: a stream the upstream refused
/// (`REFUSED_STREAM`, or one above a GOAWAY's last stream id) was never processed
/// and is `ConnectionRefused` (retried as Envoy's `refused-stream`); the rest are
/// resets.
fn h2_error(e: h2::Error) -> io::Error {
    let refused = e.reason() == Some(h2::Reason::REFUSED_STREAM)
        || (e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR));
    let kind = match () {
        _ if refused => io::ErrorKind::ConnectionRefused,
        _ if e.is_io() => io::ErrorKind::BrokenPipe,
        _ => io::ErrorKind::ConnectionReset,
    };
    io::Error::new(kind, format!("HTTP/2: {e}"))
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}
