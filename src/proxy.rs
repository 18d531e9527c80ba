//! One client connection's life, from accept to close. Read this first.
//!
//! ```text
//! accept ─▶ TLS? ClientHello ─▶ SNI ─▶ that server's ServerConfig ─▶ handshake
//!   └─▶ loop: ReadingHead ─▶ parse (httparse) ─▶ route (host, path, headers)
//!         ├─ redirect / direct response / 404 ─▶ answer locally
//!         └─ forward: checkout upstream (pool or connect) ─▶ send head + body
//!               ─▶ AwaitingUpstream (response head) ─▶ stream body to client
//!               ─▶ upstream back to the pool if it ended cleanly
//!       until the client or a response says close, or the keep-alive timeout.
//!   └─▶ the client chose h2 (ALPN) or sent the h2c preface: `http2::serve` takes the
//!       connection; each stream runs the loop above for one request (`Downstream::H2`).
//! ```
//!
//! A connection takes the shard's newest snapshot at every request, so routes change
//! for keep-alive clients at their next request. Bodies are streamed in both
//! directions, never buffered whole; an upstream that fails mid-response closes the
//! client connection rather than letting a truncated body look complete.

mod downstream;
mod error;
mod forward;
mod http2;
mod retry;
mod tunnel;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use downstream::{Downstream, Ending, HandshakeError};
pub(crate) use error::{ProxyError, Side};
pub(crate) use http2::FloodGuard;

use crate::access_log::{Field, Record};
use crate::auth::{self, AuthRequest, AuthzRequest, HeaderEdits};
use crate::buffers;
use crate::http::{self, RequestHead};
use crate::route::{self, Action, RouteRequest};
use crate::shard::{Admitted, ShardContext, ShardStats};
use crate::snapshot::Snapshot;
use crate::tls::{self, HandshakeFailure};
use crate::uring::{self, TcpStream};

/// What an operator sets for every client connection (`ringress run` flags): how long
/// each side is waited for, which layer protects TLS 1.3 records, how request paths
/// are normalised before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settings {
    pub timeouts: Timeouts,
    pub record_layer: RecordLayer,
    pub path_normalization: http::PathNormalization,
    pub limits: ConnectionLimits,
    /// Proxies in front of the gateway that append to `x-forwarded-for`
    /// (`--trusted-proxies`, Istio's `numTrustedProxies`): where `remote.ip` is read.
    pub trusted_proxies: u8,
}

/// Caps on client connections (`--max-connections`, `--max-connections-per-client`,
/// see `shard::admission`) and on what one connection may have at once
/// (`--http2-max-concurrent-streams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Client connections one shard serves at once.
    pub max_connections: usize,
    /// Client connections one address may have open on one shard; `None`: no cap.
    pub max_connections_per_client: Option<usize>,
    /// Streams an HTTP/2 client may have open at once on one connection.
    pub http2_max_concurrent_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: None,
            http2_max_concurrent_streams: DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
        }
    }
}

/// Streams an HTTP/2 client may have open at once without
/// `--http2-max-concurrent-streams` (nginx's default is 128, HAProxy's 100).
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// How long a draining shard waits for the next request of an idle keep-alive
/// connection before closing it (never past the drain timeout): enough for a request
/// the client sent as the drain began to arrive and get its answer.
pub(crate) const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);

/// Client connections per shard without `--max-connections`, if the descriptor limit
/// allows (see `control::raise_fd_limit`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// Who protects the records of an established TLS 1.3 connection (`--tls-record-layer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordLayer {
    /// ringress's own record layer once the handshake is done ([`crate::tls::Records`]):
    /// less memory per idle connection, bodies sealed straight from receive buffers.
    #[default]
    Ringress,
    /// rustls' record layer throughout, for operators who prefer its audited code.
    Rustls,
}

impl std::str::FromStr for RecordLayer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ringress" => Ok(RecordLayer::Ringress),
            "rustls" => Ok(RecordLayer::Rustls),
            _ => Err(format!("expected `ringress` or `rustls`, got {s:?}")),
        }
    }
}

/// How long ringress waits for each side. The defaults suit public clients; tests and
/// operators change them with `ringress run --header-timeout` and friends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For a new connection to finish its TLS handshake and send a whole request head,
    /// and for the rest of any head once its first bytes arrived.
    pub header: Duration,
    /// How long an idle keep-alive client connection is kept open.
    pub keepalive: Duration,
    /// Longest silence while streaming a body in either direction, and the wait for
    /// an upstream's response head when the route sets no `timeout`.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(30),
            keepalive: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

/// Serves one accepted client connection until it closes.
///
/// The task keeps this future for the connection's whole life, so it holds only what
/// an idle connection needs: the handshake (and the arguments it consumes) runs in a
/// boxed future freed once it is done, then `Connection::run` owns the connection.
/// `admitted` holds the connection's place in the shard's caps until the task ends,
/// also by a panic (the task is then dropped, see `uring::spawn`), so a drain never
/// waits for a connection that is gone.
pub(crate) fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    port: u16,
    admitted: Admitted,
) -> impl Future<Output = ()> + 'static {
    let ctx = admitted.ctx().clone();
    ShardStats::add(&ctx.stats.accepted);
    let start = Box::pin(start(stream, peer, port, ctx));
    async move {
        let _admitted = admitted;
        // Boxed, and matched in a statement of its own: this future would otherwise
        // keep a second copy of the connection beside the one `run` owns.
        let h2 = match start.await.map(|conn| Box::pin(conn.run())) {
            Some(run) => run.await.map(serve_h2),
            None => None,
        };
        if let Some(h2) = h2 {
            h2.await;
        }
    }
}

/// The future of a connection whose client speaks HTTP/2, boxed: an HTTP/1.1
/// connection's task never carries HTTP/2's state.
fn serve_h2(conn: Connection) -> std::pin::Pin<Box<impl Future<Output = ()>>> {
    Box::pin(http2::serve(conn))
}

/// Finds the connection's listener and completes the TLS handshake's first steps.
async fn start(
    stream: TcpStream,
    peer: SocketAddr,
    port: u16,
    ctx: Rc<ShardContext>,
) -> Option<Connection> {
    let accepted = uring::now();
    let snapshot = ctx.snapshot();
    let listener = snapshot.listeners.iter().find(|l| l.port() == port)?;
    // TCP_NODELAY came with the socket from its listener (`Listener::bind`). A client
    // that stops reading fails its send after the idle timeout.
    stream.set_send_timeout(ctx.settings.timeouts.idle);
    let client = match &listener.tls {
        None => Downstream::Plain(stream),
        Some(selector) => {
            let own_records = ctx.settings.record_layer == RecordLayer::Ringress;
            let handshake = Downstream::accept_tls(stream, listener, selector, own_records);
            match uring::timeout(ctx.settings.timeouts.header, handshake).await {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => {
                    let (failure, sni, rustls) = match &e {
                        HandshakeError::UnknownServerName(name) => {
                            (HandshakeFailure::UnknownServerName, name.as_deref(), None)
                        }
                        HandshakeError::ClientHello(_) => {
                            (HandshakeFailure::BadClientHello, None, None)
                        }
                        HandshakeError::Tls(rustls, sni) => {
                            (HandshakeFailure::of(rustls), sni.as_deref(), Some(rustls))
                        }
                        HandshakeError::Silent | HandshakeError::Closed | HandshakeError::Io(_) => {
                            (HandshakeFailure::Closed, None, None)
                        }
                    };
                    // A connection closed before its first byte is a TCP health
                    // check: counted, not logged.
                    let log = !matches!(e, HandshakeError::Silent);
                    handshake_failed(&ctx, peer, port, sni, failure, &e.to_string(), rustls, log);
                    return None;
                }
                Err(_) => {
                    let detail = format!(
                        "no complete handshake within {:?}",
                        ctx.settings.timeouts.header
                    );
                    handshake_failed(
                        &ctx,
                        peer,
                        port,
                        None,
                        HandshakeFailure::Timeout,
                        &detail,
                        None,
                        true,
                    );
                    return None;
                }
            }
        }
    };
    Some(Connection {
        client,
        peer,
        port,
        ctx: ctx.clone(),
        inbuf: Vec::new(),
        upbuf: Vec::new(),
        out: Vec::new(),
        served: 0,
        head_request: false,
        ending: Ending::Clean,
        head_deadline: accepted + ctx.settings.timeouts.header,
        record: None,
        auth_edits: None,
    })
}

/// A request refused by authentication or authorization, as answered.
struct Refusal {
    status: u16,
    body: &'static str,
    www_authenticate: Option<String>,
    /// The outcome's label, the access log's details unless `details` says more.
    reason: &'static str,
    /// Envoy's details: the JWT's reason, or the RBAC policy that refused.
    details: Option<String>,
}

/// What to do after a request has been answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// A client connection between requests.
struct Connection {
    client: Downstream,
    peer: SocketAddr,
    port: u16,
    ctx: Rc<ShardContext>,
    /// Client bytes received and not yet consumed (a head, body bytes, pipelined
    /// requests). This and the two buffers below come from the shard's pool and go
    /// back to it while the connection waits for its next request.
    inbuf: Vec<u8>,
    /// Upstream bytes received and not yet forwarded.
    upbuf: Vec<u8>,
    /// Bytes being assembled for sending.
    out: Vec<u8>,
    /// Requests answered on this connection.
    served: u64,
    /// The request being answered is a HEAD: generated responses carry no body.
    head_request: bool,
    /// How the connection ends once no more requests are answered: clean unless an
    /// error was answered, bytes were left unread or a response was cut short.
    ending: Ending,
    /// When the head being read must be whole: the header timeout after accept for
    /// the first (the TLS handshake included), after its first byte for later ones.
    head_deadline: Instant,
    /// The access log record of the request being answered, while the log is on.
    record: Option<Box<Record>>,
    /// The header changes end-user authentication asks of the request being
    /// forwarded (the token removed, claims added).
    auth_edits: Option<Box<HeaderEdits>>,
}

impl Connection {
    /// The connection of one HTTP/2 stream (`client`), its request head in `head`.
    /// It counts as having served a request already: the connection's handshake is
    /// counted by the connection, not by each of its streams.
    fn for_stream(
        ctx: &Rc<ShardContext>,
        peer: SocketAddr,
        port: u16,
        client: Downstream,
        head: Vec<u8>,
    ) -> Connection {
        Connection {
            client,
            peer,
            port,
            ctx: ctx.clone(),
            inbuf: head,
            upbuf: Vec::new(),
            out: Vec::new(),
            served: 1,
            head_request: false,
            ending: Ending::Clean,
            head_deadline: uring::now() + ctx.settings.timeouts.header,
            record: None,
            auth_edits: None,
        }
    }

    /// Answers requests until the client or a response ends the connection.
    ///
    /// Not an `async fn`: that would keep a second copy of the moved-in connection in
    /// its future. The future holds the connection once, and while idle only the wait
    /// for the next request's first bytes.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would store the connection twice"
    )]
    /// The connection comes back when its client speaks HTTP/2 (see [`http2::serve`]).
    fn run(mut self) -> impl Future<Output = Option<Connection>> + 'static {
        async move {
            loop {
                self.head_request = false;
                let ready = self.await_request().await;
                if self.served == 0
                    && matches!(ready, Ok(true))
                    && self.client.speaks_h2(&self.inbuf)
                {
                    self.count_handshake();
                    return Some(self);
                }
                // Boxed: reading the rest of the head and answering (forwarding above
                // all) need kilobytes of future state that an idle keep-alive
                // connection would otherwise carry while it waits.
                if Box::pin(self.handle(ready)).await == Next::Close {
                    break;
                }
            }
            let ending = match self.ending {
                Ending::Clean if !self.inbuf.is_empty() => Ending::Lingering,
                ending => ending,
            };
            self.client.close(ending).await;
            None
        }
    }

    /// Reads the rest of the request head once its first bytes arrived (`ready`, from
    /// [`Self::await_request`]), answers the request and writes its access log line.
    async fn handle(&mut self, ready: Result<bool, ProxyError>) -> Next {
        if self.ctx.access_log.is_on() {
            self.record = Some(Record::start(self.peer));
        }
        let next = self.serve_request(ready).await;
        if let Some(record) = self.record.take() {
            if record.has_request() {
                self.ctx.log_request(&record);
            }
            Record::recycle(record);
        }
        next
    }

    /// [`Self::handle`] but for the log line.
    async fn serve_request(&mut self, ready: Result<bool, ProxyError>) -> Next {
        let head = match ready {
            Ok(true) => self.read_head().await.map(Some),
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        };
        if self.served == 0 {
            self.count_handshake();
        }
        let head = match head {
            Ok(Some(head)) => head,
            Ok(None) => return Next::Close,
            Err(e) => {
                self.fail(&e).await;
                return Next::Close;
            }
        };
        let snapshot = self.ctx.snapshot();
        let next = match self.answer(&snapshot, head).await {
            Ok(next) => next,
            Err(e) => {
                self.fail(&e).await;
                Next::Close
            }
        };
        self.served += 1;
        next
    }

    /// Waits until the client's next bytes are buffered (at once if some are).
    /// `Ok(false)`: the client closed or stayed idle past its timeout, or the shard is
    /// draining; nothing to answer. Buffers go back to the pool while it waits.
    async fn await_request(&mut self) -> Result<bool, ProxyError> {
        if !self.inbuf.is_empty() {
            return Ok(true);
        }
        let wait = match self.served {
            0 => self.head_deadline.saturating_duration_since(uring::now()),
            _ => self.ctx.settings.timeouts.keepalive,
        };
        // Nothing of this connection's buffers is needed until bytes arrive.
        buffers::give(&mut self.inbuf);
        buffers::give(&mut self.upbuf);
        buffers::give(&mut self.out);
        self.client.release_buffers();
        // Pinned here and lent to `or_stop`: moving it in would store it twice in
        // this future, which every idle connection keeps.
        let mut read = std::pin::pin!(uring::timeout(wait, self.client.read(&mut self.inbuf)));
        // Between requests a draining shard gives the client DRAIN_IDLE_GRACE for a
        // request already on its way (answered with `Connection: close`), then
        // closes: closing at once would race a keep-alive client's next request,
        // which then fails with no answer (a binary upgrade under load would fail
        // requests).
        let read = match self.ctx.draining.or_stop(read.as_mut()).await {
            Some(read) => read,
            None => match uring::timeout(DRAIN_IDLE_GRACE, read).await {
                Ok(read) => read,
                Err(_) => return Ok(false),
            },
        };
        let ready = match read {
            Err(_) | Ok(Ok(0)) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(ProxyError::Client(e)),
        };
        if self.served > 0 {
            self.head_deadline = uring::now() + self.ctx.settings.timeouts.header;
        }
        ready
    }

    /// Reads on until a whole request head is buffered, once its first bytes are (see
    /// [`Self::await_request`]): the whole head by `head_deadline`, however it trickles.
    async fn read_head(&mut self) -> Result<RequestHead, ProxyError> {
        let wait = self.ctx.settings.timeouts.header;
        loop {
            match http::parse_request(&self.inbuf) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(e) => return Err(ProxyError::BadRequest(e)),
            }
            let left = self.head_deadline.saturating_duration_since(uring::now());
            match uring::timeout(left, self.client.read(&mut self.inbuf)).await {
                Ok(Ok(0)) => return Err(ProxyError::ClientClosed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(ProxyError::Client(e)),
                Err(_) => return Err(ProxyError::ClientTimeout(wait)),
            }
        }
    }

    /// Routes one request and answers it, locally or through an upstream.
    async fn answer(
        &mut self,
        snapshot: &Arc<Snapshot>,
        head: RequestHead,
    ) -> Result<Next, ProxyError> {
        // A locally answered request with a body closes the connection afterwards:
        // its body is not read, so the next request could not be found.
        let close = !head.keep_alive()
            || head.body() != http::BodyKind::None
            || self.ctx.draining.is_stopped();
        self.head_request = head.method().eq_ignore_ascii_case("HEAD");
        if head.version_minor() >= 1 && head.host().is_none() {
            return Err(ProxyError::BadRequest(http::HttpError::MissingHost));
        }
        let host = head.host().unwrap_or_default().to_owned();
        buffers::ensure(&mut self.out);
        if self.misdirected(snapshot, &host) {
            self.out.clear();
            http::error_response(421, close, &mut self.out);
            self.answered_locally(421, None, "misdirected_request");
            return self.respond_locally(head.len(), close).await;
        }
        // Routes match, and the upstream gets, the normalised path (`--path-normalization`).
        let normalized =
            match http::normalize_path(head.path(), self.ctx.settings.path_normalization) {
                Ok(Cow::Borrowed(_)) => None,
                Ok(Cow::Owned(path)) => Some(path),
                Err(e) => return Err(ProxyError::BadRequest(http::HttpError::InvalidPath(e))),
            };
        let path = normalized.as_deref().unwrap_or(head.path());
        if self.record.is_some() {
            self.note_request(&head, path);
        }
        let scheme = self.client.scheme();
        self.auth_edits = None;
        if (snapshot.authn.is_some() || snapshot.authz.is_some())
            && let Err(refusal) = self.authorize(snapshot, &head, path, scheme)
        {
            self.out.clear();
            http::text_response(
                refusal.status,
                refusal.body.as_bytes(),
                refusal.www_authenticate.as_deref(),
                close,
                &mut self.out,
            );
            self.answered_locally(refusal.status, None, refusal.reason);
            if let (Some(record), Some(details)) = (self.record.as_deref_mut(), refusal.details) {
                record.set(Field::Details, details.as_bytes());
            }
            return self.respond_locally(head.len(), close).await;
        }
        let headers = HeadHeaders(&head);
        let request = RouteRequest {
            host: &host,
            path,
            method: head.method(),
            scheme,
            headers: &headers,
        };
        let Some(selected) = snapshot.routes(self.port).and_then(|t| t.select(&request)) else {
            self.out.clear();
            http::error_response(404, close, &mut self.out);
            self.answered_locally(404, Some("NR"), "route_not_found");
            return self.respond_locally(head.len(), close).await;
        };
        if let (Some(record), Some(name)) = (self.record.as_deref_mut(), &selected.route.name) {
            record.set(Field::RouteName, name.as_bytes());
        }
        let route = selected.route;
        self.out.clear();
        let (status, details) = match &route.action {
            Action::Forward(destinations) => {
                let cluster = destinations.pick();
                let protocol = snapshot.clusters.get(cluster).protocol;
                let upgrade = forward::UpgradeAsked::of(&head, protocol);
                if upgrade == forward::UpgradeAsked::Refused {
                    // Envoy's answer to an upgrade no configuration allows.
                    http::direct_response(403, b"", close, &mut self.out);
                    route.stats.count(403);
                    self.answered_locally(403, None, "upgrade_failed");
                    return self.respond_locally(head.len(), close).await;
                }
                let forwarded = route::rewrite_path(route, selected.matched_uri, path)
                    .or_else(|| normalized.clone());
                if let Some(record) = self.record.as_deref_mut()
                    && route.rewrite.as_ref().is_some_and(|r| r.uri.is_some())
                {
                    // The log's path is the one the request came with.
                    record.set(Field::OriginalPath, path.as_bytes());
                }
                let websocket = upgrade == forward::UpgradeAsked::WebSocket;
                return self
                    .forward(snapshot, route, cluster, head, forwarded, websocket)
                    .await;
            }
            Action::Redirect(redirect) => {
                let location = route::redirect_location(redirect, &request, self.port);
                http::redirect_response(redirect.code, &location, close, &mut self.out);
                (redirect.code, "redirect")
            }
            Action::HttpsRedirect => {
                let location = route::https_redirect_location(&request);
                http::redirect_response(301, &location, close, &mut self.out);
                (301, "redirect")
            }
            Action::Direct { status, body } => {
                let body = body.as_deref().unwrap_or_default();
                http::direct_response(*status, body.as_bytes(), close, &mut self.out);
                (*status, "direct_response")
            }
        };
        route.stats.count(status);
        self.answered_locally(status, None, details);
        self.respond_locally(head.len(), close).await
    }

    /// End-user authentication, then authorization, of a request about to be routed:
    /// `Ok` with the header changes kept for forwarding, or the refusal to answer.
    /// Outcomes are counted; the access log gets the request's principal.
    fn authorize(
        &mut self,
        snapshot: &Snapshot,
        head: &RequestHead,
        path: &str,
        scheme: &'static str,
    ) -> Result<(), Refusal> {
        let authority = head
            .target_authority()
            .map(str::as_bytes)
            .or(head.header_of(http::HeaderName::Host))
            .and_then(|h| std::str::from_utf8(h).ok())
            .unwrap_or_default();
        let stats = &self.ctx.stats;
        let mut token = None;
        if let Some(authn) = &snapshot.authn {
            let req = AuthRequest {
                head,
                path,
                scheme,
                host: authority,
            };
            let checked = authn.check(&req, &self.ctx.keys(), &mut self.ctx.tokens.borrow_mut());
            match checked {
                Ok(passed) => {
                    stats.count_authn(passed.outcome());
                    if passed.edits != HeaderEdits::default() {
                        self.auth_edits = Some(Box::new(passed.edits));
                    }
                    token = passed.token;
                }
                Err(denial) => {
                    stats.count_authn(denial.reason);
                    return Err(Refusal {
                        status: denial.status,
                        details: denial.details(),
                        body: denial.body,
                        www_authenticate: denial.www_authenticate,
                        reason: denial.reason,
                    });
                }
            }
        }
        if let (Some(record), Some(token)) = (self.record.as_deref_mut(), &token) {
            record.set(Field::RequestPrincipal, token.principal.as_bytes());
        }
        let Some(authz) = &snapshot.authz else {
            return Ok(());
        };
        let local = self.local_addr_in(snapshot);
        let (client_cert, sni) = self.client.identity_and_server_name();
        let req = AuthzRequest {
            head,
            path,
            host: authority,
            peer: self.peer.ip(),
            local,
            port: self.port,
            sni,
            client_cert,
            token: token.as_deref(),
            trusted_proxies: self.ctx.settings.trusted_proxies,
        };
        match authz.check(&req) {
            Ok(allowed) => {
                stats.count_authz(auth::authz::ALLOWED);
                for rule in allowed.audited {
                    stats.count_authz(auth::authz::AUDITED);
                    tracing::debug!(peer = %self.peer, rule, "AUDIT policy matched");
                }
                Ok(())
            }
            Err(refused) => {
                stats.count_authz(refused.label());
                tracing::debug!(peer = %self.peer, details = %refused.details(), "RBAC: access denied");
                Err(Refusal {
                    status: 403,
                    body: auth::authz::ACCESS_DENIED,
                    www_authenticate: None,
                    reason: refused.label(),
                    details: Some(refused.details()),
                })
            }
        }
    }

    /// Counts a response ringress makes itself and notes it in the access log record.
    fn answered_locally(&mut self, status: u16, flag: Option<&'static str>, details: &'static str) {
        self.ctx.stats.responses.count(status);
        if status >= 400 && details != "direct_response" {
            self.client.note_local_error(status);
        }
        if let Some(record) = self.record.as_deref_mut() {
            record.status = status;
            record.flags = flag.unwrap_or("");
            record.details = Some(details);
            // Envoy gives every request an id, answered upstream or not.
            if record.request_id.is_none() && !record.has_client_request_id() {
                record.request_id = Some(http::new_request_id());
            }
            let body = self
                .out
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|end| end + 4);
            if !self.head_request {
                record.bytes_sent = body.map_or(0, |start| (self.out.len() - start) as u64);
            }
        }
    }

    /// Copies what the access log reads of the request head into the record.
    fn note_request(&mut self, head: &RequestHead, path: &str) {
        let local = self.local_addr();
        let server_name = self.client.server_name();
        let Some(record) = self.record.as_deref_mut() else {
            return;
        };
        record.protocol = match (&self.client, head.version_minor()) {
            (Downstream::H2(_), _) => "HTTP/2",
            (_, 0) => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        record.set(Field::Method, head.method().as_bytes());
        record.set(Field::Path, path.as_bytes());
        if let Some(authority) = head
            .target_authority()
            .map(str::as_bytes)
            .or(head.header_of(http::HeaderName::Host))
        {
            record.set(Field::Authority, authority);
        }
        if let Some(agent) = head.header_of(http::HeaderName::UserAgent) {
            record.set(Field::UserAgent, agent);
        }
        if let Some(id) = head.header_of(http::HeaderName::XRequestId) {
            record.set(Field::ClientRequestId, id);
        }
        if let Some(name) = server_name {
            record.set(Field::ServerName, name.as_bytes());
        }
        // As forwarded: the client's list with the client's address after it.
        record.set_forwarded_for(head.forwarded_for(), self.peer.ip());
        record.downstream_local = local;
    }

    /// The address the client connected to: the listener's, or the socket's own when
    /// the listener is bound to every address.
    fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr_in(&self.ctx.snapshot())
    }

    /// [`Connection::local_addr`] with the listeners of `snapshot`.
    fn local_addr_in(&self, snapshot: &Snapshot) -> Option<SocketAddr> {
        let listener = snapshot.listeners.iter().find(|l| l.port() == self.port)?;
        match listener.addr.ip().is_unspecified() {
            true => self.client.local_addr(),
            false => Some(listener.addr),
        }
    }

    /// Sends the response assembled in `out` for a request answered without an upstream.
    async fn respond_locally(&mut self, head_len: usize, close: bool) -> Result<Next, ProxyError> {
        self.inbuf.drain(..head_len.min(self.inbuf.len()));
        if close {
            // The request's body, if any, is never read.
            self.ending = Ending::Lingering;
        }
        let then = if close { Next::Close } else { Next::KeepAlive };
        self.send_generated(then).await?;
        Ok(then)
    }

    /// Sends a response ringress generated (in `out`): without its body for HEAD.
    async fn send_generated(&mut self, then: Next) -> Result<(), ProxyError> {
        if self.head_request
            && let Some(end) = self.out.windows(4).position(|w| w == b"\r\n\r\n")
        {
            self.out.truncate(end + 4);
        }
        self.send_out(then).await
    }

    /// Sends `out` to the client; `then` says whether the connection ends after it
    /// (see [`Downstream::write_all`]).
    async fn send_out(&mut self, then: Next) -> Result<(), ProxyError> {
        let out = std::mem::take(&mut self.out);
        let (result, out) = self.client.write_all(out, then).await;
        self.out = out;
        self.out.clear();
        result.map_err(ProxyError::Client)
    }

    /// Answers a failure if the client can still be told, and logs it.
    async fn fail(&mut self, error: &ProxyError) {
        self.ending = error.ending();
        if let Some(record) = self.record.as_deref_mut() {
            let (flag, details) = error.log_reason();
            record.flags = flag;
            record.details = Some(details);
            if let Some(status) = error.status() {
                record.status = status;
            }
        }
        match error.side() {
            Side::Downstream => tracing::debug!(peer = %self.peer, %error, "request failed"),
            Side::Upstream => tracing::warn!(peer = %self.peer, %error, "request failed"),
        }
        if let Some(status) = error.status() {
            self.ctx.stats.responses.count(status);
            self.client.note_local_error(status);
            self.out.clear();
            match error.envoy_body() {
                Some(body) => http::direct_response(status, body.as_bytes(), true, &mut self.out),
                None => http::error_response(status, true, &mut self.out),
            }
            let _ = self.send_generated(Next::Close).await;
        }
    }
}

impl Connection {
    /// Whether `host` belongs to a server of this port whose TLS settings differ from
    /// those of the server the handshake chose, or (HTTP/2) to another server than the
    /// handshake's: its certificate or client-certificate policy never applied to this
    /// connection, so the request is refused (421 Misdirected Request), as a client
    /// reusing a connection across names expects.
    fn misdirected(&self, snapshot: &Snapshot, host: &str) -> bool {
        if self.client.is_server_name(host) {
            return false;
        }
        let Some(handshake) = self.client.server_settings() else {
            return false;
        };
        let Some(listener) = snapshot.listeners.iter().find(|l| l.port() == self.port) else {
            return false;
        };
        let Some(selector) = &listener.tls else {
            return false;
        };
        let Some((server, _)) = selector.select(Some(host)) else {
            return false;
        };
        if listener
            .certificates
            .get(server)
            .is_some_and(|served| *served.settings != *handshake)
        {
            return true;
        }
        // An HTTP/2 client may send a stream for another name over a connection it
        // made for one (RFC 9113 §9.1.1): only where the same server, so the same
        // certificate, serves both. Envoy answers 404 here.
        matches!(self.client, Downstream::H2(_))
            && selector
                .select(self.client.server_name())
                .is_none_or(|(handshake_server, _)| handshake_server != server)
    }

    /// Counts the TLS handshake once the first request (or its failure) shows how it
    /// ended.
    fn count_handshake(&self) {
        let stats = &self.ctx.stats;
        match self.client.tls_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => ShardStats::add(&stats.handshakes_tls13),
            Some(_) => ShardStats::add(&stats.handshakes_tls12),
            None if self.client.is_handshaking() => {
                let sni = self.client.server_name();
                let (failure, detail) = match self.client.rustls_error() {
                    Some(e) => (HandshakeFailure::of(e), e.to_string()),
                    None if uring::now() >= self.head_deadline => (
                        HandshakeFailure::Timeout,
                        format!(
                            "no complete handshake within {:?}",
                            self.ctx.settings.timeouts.header
                        ),
                    ),
                    None => (
                        HandshakeFailure::Closed,
                        "the client closed the connection".to_owned(),
                    ),
                };
                let rustls = self.client.rustls_error();
                handshake_failed(
                    &self.ctx, self.peer, self.port, sni, failure, &detail, rustls, true,
                );
            }
            None => {}
        }
    }
}

/// Counts a failed TLS handshake by reason and, if `log`, logs it at `info` (at most
/// ten a second per shard), with what to do about it when the reason is a known
/// misconfiguration.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site per way a handshake ends"
)]
fn handshake_failed(
    ctx: &ShardContext,
    peer: SocketAddr,
    port: u16,
    sni: Option<&str>,
    failure: HandshakeFailure,
    detail: &str,
    rustls: Option<&rustls::Error>,
    log: bool,
) {
    let stats = &ctx.stats;
    ShardStats::add(&stats.handshakes_failed);
    if let Some(i) = HandshakeFailure::ALL.iter().position(|f| *f == failure) {
        ShardStats::add(&stats.handshake_failures[i]);
    }
    if let Some(left_out) = log.then(|| ctx.tls_log.allow()).flatten() {
        let advice = rustls.and_then(tls::failure::advice).unwrap_or("");
        tracing::info!(
            %peer,
            port,
            sni = sni.unwrap_or("-"),
            reason = failure.label(),
            error = detail,
            advice,
            also_failed = left_out,
            "TLS handshake failed"
        );
    }
}

/// The request head's headers, as route matching reads them.
struct HeadHeaders<'a>(&'a RequestHead);

impl route::Headers for HeadHeaders<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.header(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every idle keep-alive connection keeps besides its TLS state: the task's
    /// future and the boxed `run` future waiting in `await_request` (sizes measured
    /// with rustc 1.95; the limits leave room for compiler changes, not for new state
    /// held across the idle wait).
    #[test]
    fn an_idle_connection_keeps_small_futures() {
        fn size4<A, B, C, D, F>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        fn size1<A, F>(_: impl FnOnce(A) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let serve = size4(serve);
        let run = size1(Connection::run);
        let wait = size1(|c: &mut Connection| c.await_request());
        // 72: 64 before HTTP/2, whose connection the task may box (8 bytes more).
        assert!(serve <= 72, "serve future: {serve} bytes");
        assert!(run <= 640, "run future: {run} bytes");
        assert!(wait <= 400, "await_request future: {wait} bytes");
        // An idle HTTP/2 connection's task: h2's connection inline, its handshake
        // boxed and dropped, nothing of the HTTP/1.1 connection but what HTTP/2
        // uses (2,464 bytes with rustc 1.95 and h2 0.4.20; 3,832 before).
        let h2 = size1(http2::serve);
        assert!(h2 <= 2560, "HTTP/2 serve future: {h2} bytes");
    }
}
