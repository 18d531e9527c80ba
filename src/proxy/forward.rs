//! Forwarding one request to an upstream and streaming the response back.
//!
//! The request head is rewritten once (hop-by-hop headers out, `x-forwarded-*`,
//! `x-request-id`, the route's header operations and rewrites in) and sent together
//! with whatever body bytes already arrived. The rest of the body is streamed as the
//! client sends it, framed by [`BodyFramer`] so the end of the body (and the start of a
//! pipelined request) is exact. Then the response head is awaited, rewritten, and the
//! body streamed back. Attempts that the upstream cannot have seen (a failed connect, a
//! reused keep-alive connection found closed) are retried on another pick.
//!
//! Forwarding is full duplex: while the request body streams, the upstream is
//! listened to as well, and a final response that begins before the body has gone
//! whole (a 401, a 413, an upstream that answers without reading) stops the body and
//! is relayed at once. The client connection then closes after the response, with
//! what the client still sends read and dropped for a moment (a lingering close, as
//! nginx does), and the upstream connection is not reused. Between an HTTP/2 client
//! and an HTTP/2 upstream (gRPC's streaming calls) the body does not stop: the rest
//! of it is relayed from stream to stream by a task of its own
//! (`H2Exchange::relay_rest`) while the response streams back.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::mirror;
use super::policies;
use super::retry::RetryPolicy;
use super::tunnel;
use super::{Connection, Downstream, Next, ProxyError};
use crate::access_log;
use crate::http::{
    self, BodyFramer, BodyKind, ForwardContext, RequestHead, ResponseContext, ResponseHead,
};
use crate::route::Route;
use crate::shard::{RetryTicket, ShardContext, ShardStats};
use crate::snapshot::Snapshot;
use crate::upstream::health::Outcome;
use crate::upstream::{
    Cluster, ClusterId, ConnectError, Received, UpstreamConn, UpstreamProtocol, UpstreamStream,
    http2, pool,
};
use crate::uring;

use super::Ending;

/// What the request needs remembered once its head has been consumed.
struct RequestFacts {
    keep_alive: bool,
    is_head: bool,
    client_minor: u8,
    /// The client waits for `100 Continue` before sending its body.
    expects_continue: bool,
    /// The request asks to switch to WebSocket and the upstream is told so: a `101
    /// Switching Protocols` then turns the connection into a tunnel.
    upgrade: bool,
    /// The server name of a TLS connection for it (see
    /// `UpstreamTls::server_name_for`); `None` for a cluster without TLS.
    server_name: Option<ServerName<'static>>,
    /// A consistent-hash cookie generated for this request, set on its response.
    set_cookie: Option<String>,
}

/// What the proxy does with a request's `Upgrade` (RFC 9110 §7.8), as Istio's
/// gateways do: Envoy's connection manager there allows `websocket` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UpgradeAsked {
    /// No upgrade, or `h2c`: Envoy drops an h2c upgrade and serves the request as
    /// HTTP/1.1, and so does ringress (`Upgrade` is hop-by-hop).
    None,
    /// `websocket`, to an HTTP/1.1 upstream: relayed.
    WebSocket,
    /// Anything else, or WebSocket to an HTTP/2 upstream: refused with Envoy's 403
    /// (`upgrade_failed`).
    Refused,
}

impl UpgradeAsked {
    pub(super) fn of(head: &RequestHead, upstream: UpstreamProtocol) -> UpgradeAsked {
        match head.upgrade() {
            None => UpgradeAsked::None,
            Some(p) if p.eq_ignore_ascii_case(b"h2c") => UpgradeAsked::None,
            Some(p)
                if p.eq_ignore_ascii_case(b"websocket") && upstream == UpstreamProtocol::Http1 =>
            {
                UpgradeAsked::WebSocket
            }
            Some(_) => UpgradeAsked::Refused,
        }
    }
}

impl Connection {
    /// Sends the request to `cluster` and streams the response to the client; with
    /// `websocket` (see [`UpgradeAsked`]) the upstream is asked to switch protocols.
    pub(super) async fn forward(
        &mut self,
        snapshot: &Arc<Snapshot>,
        route: &Route,
        cluster: ClusterId,
        head: RequestHead,
        path: Option<String>,
        websocket: bool,
    ) -> Result<Next, ProxyError> {
        let spec = snapshot.clusters.get(cluster);
        let server_name = spec.tls.as_deref().map(|tls| {
            // The host the upstream is sent: `rewrite.authority`, else the request's
            // (absolute-form authority, else Host), as `write_upstream_request` picks it.
            let authority = route
                .rewrite
                .as_ref()
                .and_then(|r| r.authority.as_deref())
                .or(head.host())
                .unwrap_or_default();
            tls.server_name_for(authority, &spec.host)
        });
        let mut facts = RequestFacts {
            keep_alive: head.keep_alive(),
            is_head: head.method().eq_ignore_ascii_case("HEAD"),
            client_minor: head.version_minor(),
            expects_continue: head.expects_continue(),
            upgrade: websocket,
            server_name,
            set_cookie: None,
        };
        let hash = match spec.hash.as_deref() {
            Some(table) => {
                let (hash, set_cookie) = table.request_hash(&head, self.peer);
                facts.set_cookie = set_cookie;
                hash
            }
            None => None,
        };
        let mut request_body = BodyFramer::new(head.body());
        let now = uring::now();
        let policy = RetryPolicy::for_route(route, self.ctx.settings.timeouts.idle, now)
            .with_grpc_timeout(head.header_of(http::HeaderName::GrpcTimeout), now);
        self.write_upstream_head(route, &head, path.as_deref(), facts.upgrade);
        let head_len = head.len();
        drop(head);
        self.inbuf.drain(..head_len);
        // Body bytes that arrived with the head travel in the same send.
        let out = &mut self.out;
        let first = request_body
            .forward(&self.inbuf, &mut |piece| out.extend_from_slice(piece))
            .map_err(ProxyError::BadRequest)?;
        self.inbuf.drain(..first);
        self.count_received(first);

        // Only a request sent whole in the first send can be sent again (or mirrored).
        let resendable = request_body.is_done();
        if !route.mirrors.is_empty() {
            let limit = route
                .timeout
                .filter(|t| !t.is_zero())
                .unwrap_or(self.ctx.settings.timeouts.idle);
            let method = response_method(&facts);
            let waiting = mirror::start(
                &self.ctx,
                snapshot,
                route,
                &self.out,
                resendable,
                facts.upgrade,
                method,
                limit,
            );
            if waiting.is_some() {
                self.applied.get_or_insert_default().mirroring = waiting;
            }
        }
        let mut tries = 0;
        let mut redialled = false;
        // The retry under way, counted against the cluster's `maxRetries` until its
        // try has an answer.
        let mut _retry: Option<RetryTicket> = None;
        let (mut upstream, endpoint, response, started, mut answered_early) = loop {
            let spec = snapshot.clusters.get(cluster);
            if let Some(record) = self.record.as_deref_mut() {
                record.set(
                    access_log::Field::UpstreamCluster,
                    spec.istio_name.as_bytes(),
                );
                record.retries_exhausted = tries > 0;
            }
            if let Some(limit) = self.ctx.requests_full(snapshot, cluster) {
                ShardStats::add(&self.ctx.stats.upstream_overflows);
                return Err(ProxyError::Connect(ConnectError::TooManyRequests {
                    cluster: spec.name.clone(),
                    limit,
                }));
            }
            let Some((endpoint, addr)) = self.ctx.pick_endpoint(snapshot, cluster, hash) else {
                return Err(ProxyError::NoEndpoint(spec.name.clone()));
            };
            if let Some(record) = self.record.as_deref_mut() {
                record.upstream_host = Some(addr);
            }
            let Some(wait) = policy.wait(uring::now()) else {
                self.ctx.finished(snapshot, cluster, endpoint);
                let after = policy.timeout();
                return Err(ProxyError::UpstreamTimeout { addr, after });
            };
            tries += 1;
            let result = self
                .try_upstream(spec, addr, &mut request_body, &facts, wait)
                .await;
            _retry = None;
            // Every answer (or failure to get one) counts toward outlier detection.
            let outcome = match &result {
                Ok(tried) => Some(Outcome::Status(tried.response.status())),
                Err(e) => e.outlier_outcome(),
            };
            if let Some(outcome) = outcome {
                spec.health.report(endpoint, outcome, uring::now());
            }
            match result {
                Ok(Tried {
                    upstream,
                    response,
                    started,
                    body,
                }) => {
                    if resendable
                        && policy.retry_status(response.status(), tries)
                        && let Some(ticket) = self.ctx.begin_retry(snapshot, cluster)
                    {
                        _retry = Some(ticket);
                        // The upstream connection is dropped with the unread body.
                        self.ctx.finished(snapshot, cluster, endpoint);
                        tracing::debug!(%addr, status = response.status(), tries, "retrying");
                        continue;
                    }
                    let early = body == BodySent::Answered;
                    if let Some(record) = self.record.as_deref_mut() {
                        // Retries exhausted shows only where the last try failed too.
                        record.retries_exhausted &= policy.retry_status(response.status(), 1);
                        record.upstream_local = upstream.local;
                    }
                    break (upstream, endpoint, response, started, early);
                }
                Err(e) => {
                    self.ctx.finished(snapshot, cluster, endpoint);
                    match &e {
                        ProxyError::Connect(c) if c.is_overflow() => {
                            ShardStats::add(&self.ctx.stats.upstream_overflows);
                        }
                        ProxyError::Connect(c) => {
                            ShardStats::add(&self.ctx.stats.upstream_connect_failures);
                            if matches!(c, ConnectError::Tls { .. }) {
                                ShardStats::add(&self.ctx.stats.upstream_tls_failures);
                            }
                        }
                        _ => {}
                    }
                    if resendable && e.is_stale_connection() && !redialled {
                        redialled = true;
                        tries -= 1;
                        continue;
                    }
                    if resendable
                        && policy.retry_error(&e, tries)
                        && let Some(ticket) = self.ctx.begin_retry(snapshot, cluster)
                    {
                        _retry = Some(ticket);
                        tracing::debug!(%addr, error = %e, tries, "retrying");
                        continue;
                    }
                    let mut e = e;
                    if let ProxyError::Connect(ConnectError::Tls { retried, .. }) = &mut e {
                        *retried = tries > 1;
                    }
                    return Err(e);
                }
            }
        };

        if let Some(copies) = self.applied.as_deref_mut().and_then(|a| a.mirroring.take()) {
            copies.finish(request_body.is_done() && !answered_early);
        }
        if response.is_switching() {
            let result = self
                .switch_protocols(upstream, route, response, started, &facts)
                .await;
            self.ctx.finished(snapshot, cluster, endpoint);
            return result;
        }
        let idle = self.ctx.settings.timeouts.idle;
        let mut relayed = 0;
        if answered_early
            && let (Downstream::H2(client), UpstreamStream::H2(exchange)) =
                (&mut self.client, &upstream.stream)
        {
            // HTTP/2 both ways (gRPC's streaming calls): the response began while the
            // request body still flows, and both go on at once. What was read of the
            // body goes first, the rest is a task of its own from stream to stream.
            let mut rest = Vec::new();
            let n = request_body
                .forward(&self.inbuf, &mut |piece| rest.extend_from_slice(piece))
                .map_err(ProxyError::BadRequest)?;
            self.inbuf.drain(..n);
            relayed = n;
            exchange
                .queue(&rest)
                .map_err(|source| ProxyError::UpstreamIo {
                    addr: upstream.addr,
                    source,
                })?;
            exchange.relay_rest(client.take_body(), idle);
            answered_early = false;
        }
        self.count_received(relayed);
        // An early answer left the request body half sent and half read: neither
        // connection can carry another request.
        // An upgrade the upstream declined leaves its connection to no one else.
        let reusable = response.keep_alive()
            && response.body() != BodyKind::UntilClose
            && !answered_early
            && !facts.upgrade;
        self.note_upstream_status(route, response.status());
        let keep_alive = reusable
            .then(|| response.header("keep-alive").map(<[u8]>::to_vec))
            .flatten();
        // A chunked body de-chunked for an HTTP/1.0 client may close the connection
        // too: stream_response decides once it knows whether the length is known.
        let close = !facts.keep_alive
            || response.body() == BodyKind::UntilClose
            || self.ctx.draining.is_stopped()
            || answered_early;
        if answered_early {
            self.ending = Ending::Lingering;
        }
        let result = self
            .stream_response(&mut upstream, route, &facts, response, close, started)
            .await;
        self.ctx.finished(snapshot, cluster, endpoint);
        let Relayed {
            reusable: complete,
            close,
        } = result?;
        let spec = snapshot.clusters.get(cluster);
        if complete && reusable && spec.pool.reusable_after(upstream.served) {
            let keep_for = pool::keep_for(spec.pool.idle_timeout, keep_alive.as_deref());
            self.ctx.pool.borrow_mut().put(upstream, keep_for);
        }
        Ok(if close { Next::Close } else { Next::KeepAlive })
    }

    /// The upstream switched protocols (WebSocket): the `101` goes to the client, then
    /// the connection is a tunnel ([`tunnel::relay`]) until either side closes or it
    /// stays idle for `--idle-timeout`; then it closes, the upstream connection too.
    async fn switch_protocols(
        &mut self,
        upstream: UpstreamConn,
        route: &Route,
        response: ResponseHead,
        started: Instant,
        facts: &RequestFacts,
    ) -> Result<Next, ProxyError> {
        let addr = upstream.addr;
        if !upstream.stream.is_connection() {
            // Only an HTTP/1.1 upstream is asked to switch (`UpgradeAsked`).
            return Err(ProxyError::ResponseAborted {
                addr,
                reason: "101 from an HTTP/2 upstream".into(),
            });
        }
        // Plain text or TLS: the tunnel relays plaintext either way.
        let transport = &upstream.stream;
        self.note_upstream_status(route, 101);
        let service_time = self.note_service_time(started);
        let ctx = ResponseContext {
            upstream_service_time_ms: Some(service_time),
            ops: policies::response_ops(self.applied.as_deref(), route),
            close: false,
            client_minor: 1,
            dechunked_length: None,
            set_cookie: facts.set_cookie.as_deref(),
        };
        self.out.clear();
        http::write_client_response_head(&response, &ctx, &mut self.out);
        // What the upstream sent after its 101 (a first WebSocket message) follows the
        // head; what the client sent after its request goes to the upstream first.
        let after = self.upbuf.get(response.len()..).unwrap_or_default();
        self.client
            .stage(after, &mut self.out)
            .map_err(ProxyError::Client)?;
        let mut relayed = tunnel::Relayed {
            to_client: after.len() as u64,
            ..Default::default()
        };
        self.upbuf.clear();
        drop(response);
        self.send_out(Next::KeepAlive).await?;
        if !self.inbuf.is_empty() {
            let early = std::mem::take(&mut self.inbuf);
            relayed.to_upstream += early.len() as u64;
            let (sent, early) = transport.send_all(early).await;
            self.inbuf = early;
            self.inbuf.clear();
            sent.map_err(|source| ProxyError::UpstreamIo { addr, source })?;
        }
        let idle = self.ctx.settings.timeouts.idle;
        let (end, tunnelled) = tunnel::relay(&mut self.client, transport, idle).await;
        self.count_received((relayed.to_upstream + tunnelled.to_upstream) as usize);
        self.count_sent((relayed.to_client + tunnelled.to_client) as usize);
        tracing::debug!(peer = %self.peer, %addr, %end, "tunnel ended");
        self.ending = match end {
            tunnel::TunnelEnd::Upstream(_) | tunnel::TunnelEnd::Client(_) => Ending::Abort,
            _ => Ending::Clean,
        };
        Ok(Next::Close)
    }

    /// Counts a status the upstream answered, for the shard and the route, and
    /// records it for the access log.
    fn note_upstream_status(&mut self, route: &Route, status: u16) {
        self.ctx.stats.responses.count(status);
        route.stats.count(status);
        if let Some(record) = self.record.as_deref_mut() {
            record.status = status;
            record.details = Some("via_upstream");
        }
    }

    /// Milliseconds from `started` (the request gone) to now, the upstream's service
    /// time, recorded for the access log.
    fn note_service_time(&mut self, started: Instant) -> u64 {
        let elapsed = uring::now().saturating_duration_since(started).as_millis();
        let service_time = u64::try_from(elapsed).unwrap_or(u64::MAX);
        if let Some(record) = self.record.as_deref_mut() {
            record.upstream_service_time_ms = Some(service_time);
        }
        service_time
    }

    /// Counts `n` request body bytes taken from the client, for the access log.
    fn count_received(&mut self, n: usize) {
        if let Some(record) = self.record.as_deref_mut() {
            record.bytes_received += n as u64;
        }
    }

    /// Counts `n` response body bytes passed to the client, for the access log.
    fn count_sent(&mut self, n: usize) {
        if let Some(record) = self.record.as_deref_mut() {
            record.bytes_sent += n as u64;
        }
    }

    /// Writes the rewritten request head into `out` (asking the upstream to switch
    /// protocols when `upgrade`).
    fn write_upstream_head(
        &mut self,
        route: &Route,
        head: &RequestHead,
        path: Option<&str>,
        upgrade: bool,
    ) {
        let request_id = match head.header("x-request-id") {
            Some(_) => None,
            None => Some(http::new_request_id()),
        };
        if let Some(record) = self.record.as_deref_mut() {
            record.request_id = request_id;
        }
        let scheme = self.client.scheme();
        let ctx = ForwardContext {
            client_ip: self.peer.ip(),
            scheme,
            request_id: request_id.as_ref().map(http::RequestId::as_str),
            path,
            authority: route.rewrite.as_ref().and_then(|r| r.authority.as_deref()),
            ops: &route.headers.request,
            client_cert: self.client.client_identity(),
            remove: self.auth_edits.as_deref().map_or(&[], |e| &e.remove[..]),
            add: self.auth_edits.as_deref().map_or(&[], |e| &e.add[..]),
            upgrade: head.upgrade().filter(|_| upgrade),
        };
        self.out.clear();
        http::write_upstream_request(head, &ctx, &mut self.out);
    }

    /// One attempt: a connection, the request sent (head, then any streamed body, or
    /// as much of it as went before the upstream answered), and the response head
    /// received.
    async fn try_upstream(
        &mut self,
        cluster: &Cluster,
        addr: std::net::SocketAddr,
        request_body: &mut BodyFramer,
        facts: &RequestFacts,
        wait: Duration,
    ) -> Result<Tried, ProxyError> {
        let name = facts.server_name.as_ref();
        let upstream = checkout(&self.ctx, cluster, addr, name, wait).await?;
        upstream
            .stream
            .set_send_timeout(self.ctx.settings.timeouts.idle);
        let reused = upstream.reused;
        self.upbuf.clear();
        crate::buffers::ensure(&mut self.upbuf);
        // `out` holds the head and first body bytes; keep them for a retry.
        let out = std::mem::take(&mut self.out);
        let (sent, out) = upstream.stream.send_all(out).await;
        self.out = out;
        if let Err(source) = sent {
            return Err(if reused {
                ProxyError::UpstreamClosed { addr, reused }
            } else {
                ProxyError::UpstreamIo { addr, source }
            });
        }
        let body = self
            .stream_request_body(&upstream, request_body, facts)
            .await?;
        let started = uring::now();
        let response = self.read_response_head(&upstream, facts, wait).await?;
        Ok(Tried {
            upstream,
            response,
            started,
            body,
        })
    }

    /// Streams the rest of the request body from the client to the upstream, until it
    /// went whole or the upstream began its final response.
    async fn stream_request_body(
        &mut self,
        upstream: &UpstreamConn,
        body: &mut BodyFramer,
        facts: &RequestFacts,
    ) -> Result<BodySent, ProxyError> {
        let idle = self.ctx.settings.timeouts.idle;
        let method = response_method(facts);
        let mut chunk = Vec::new();
        let mut continue_sent = !facts.expects_continue;
        while !body.is_done() {
            if self.inbuf.is_empty() {
                if !continue_sent {
                    // The client holds its body back until told to go on.
                    self.out.clear();
                    self.out.extend_from_slice(http::CONTINUE_100);
                    self.send_out(Next::KeepAlive).await?;
                    continue_sent = true;
                }
                let read = uring::timeout(idle, self.client.read(&mut self.inbuf));
                match unless_answered(read, &upstream.stream, &mut self.upbuf, method).await {
                    Raced::Done(Ok(Ok(0))) => return Err(ProxyError::ClientClosed),
                    Raced::Done(Ok(Ok(_))) => {}
                    Raced::Done(Ok(Err(e))) => return Err(ProxyError::Client(e)),
                    Raced::Done(Err(_)) => return Err(ProxyError::ClientTimeout(idle)),
                    Raced::Answered => return Ok(BodySent::Answered),
                }
            }
            chunk.clear();
            let n = body
                .forward(&self.inbuf, &mut |piece| chunk.extend_from_slice(piece))
                .map_err(ProxyError::BadRequest)?;
            self.inbuf.drain(..n);
            self.count_received(n);
            if let Some(applied) = self.applied.as_deref_mut()
                && let Some(copies) = &mut applied.mirroring
                && !copies.extend(&chunk)
            {
                applied.mirroring = None;
            }
            let send = upstream.stream.send_all(chunk);
            match unless_answered(send, &upstream.stream, &mut self.upbuf, method).await {
                Raced::Done((sent, back)) => {
                    chunk = back;
                    sent.map_err(|source| match source.kind() {
                        std::io::ErrorKind::TimedOut => ProxyError::UpstreamStalled {
                            addr: upstream.addr,
                            after: idle,
                        },
                        _ => ProxyError::UpstreamIo {
                            addr: upstream.addr,
                            source,
                        },
                    })?;
                }
                Raced::Answered => return Ok(BodySent::Answered),
            }
        }
        Ok(BodySent::Whole)
    }

    /// Waits for the upstream's final response head, forwarding `100 Continue` and
    /// other informational responses to the client as they come.
    async fn read_response_head(
        &mut self,
        upstream: &UpstreamConn,
        facts: &RequestFacts,
        wait: Duration,
    ) -> Result<ResponseHead, ProxyError> {
        let addr = upstream.addr;
        let method = response_method(facts);
        let parse = if facts.upgrade {
            http::parse_upgrade_response
        } else {
            http::parse_response
        };
        let deadline = uring::now() + wait;
        // Once the client has seen an interim response, the request cannot be resent.
        let mut interim_sent = false;
        // `upbuf` may already hold what the upstream sent while the body streamed.
        loop {
            if !self.upbuf.is_empty() {
                let parsed = parse(&self.upbuf, method)
                    .map_err(|source| ProxyError::BadResponse { addr, source })?;
                if let Some(response) = parsed {
                    let len = response.len();
                    if response.is_informational() {
                        // Interim responses (103 Early Hints...) go to HTTP/1.1 clients as
                        // they are; an HTTP/1.0 client cannot read them.
                        if facts.client_minor >= 1 {
                            self.out.clear();
                            self.out.extend_from_slice(&self.upbuf[..len]);
                            self.send_out(Next::KeepAlive).await?;
                            interim_sent = true;
                        }
                        self.upbuf.drain(..len);
                        continue;
                    }
                    return Ok(response);
                }
            }
            let left = deadline.saturating_duration_since(uring::now());
            let received = match uring::timeout(left, upstream.stream.recv()).await {
                Ok(Ok(data)) => data,
                Ok(Err(_)) if self.upbuf.is_empty() && upstream.reused && !interim_sent => {
                    return Err(ProxyError::UpstreamClosed { addr, reused: true });
                }
                Ok(Err(source)) => return Err(ProxyError::UpstreamIo { addr, source }),
                Err(_) => return Err(ProxyError::UpstreamTimeout { addr, after: wait }),
            };
            if received.is_empty() {
                return Err(ProxyError::UpstreamClosed {
                    addr,
                    reused: upstream.reused && self.upbuf.is_empty() && !interim_sent,
                });
            }
            self.upbuf.extend_from_slice(&received);
        }
    }

    /// Sends the response head and streams the body. Says whether the body ended
    /// exactly (the upstream connection may be reused) and whether the client
    /// connection closes after it; an upstream that fails or closes early ends the
    /// client connection.
    async fn stream_response(
        &mut self,
        upstream: &mut UpstreamConn,
        route: &Route,
        facts: &RequestFacts,
        head: ResponseHead,
        close: bool,
        started: Instant,
    ) -> Result<Relayed, ProxyError> {
        let addr = upstream.addr;
        let body_kind = head.body();
        // An HTTP/1.0 client gets a chunked body's payload only: with its length when
        // it arrives whole within a bound, else ending at the close.
        let dechunk = head.dechunk_for(facts.client_minor);
        let service_time = self.note_service_time(started);
        let head_len = head.len();
        self.upbuf.drain(..head_len);
        let mut body = BodyFramer::new(body_kind);
        let mut payload = Vec::new();
        let mut extra = false;
        if dechunk {
            extra = self
                .gather_payload(upstream, &mut body, &mut payload)
                .await?;
        }
        let dechunked_length = (dechunk && body.is_done()).then_some(payload.len() as u64);
        let close = close || (dechunk && dechunked_length.is_none());
        let ctx = ResponseContext {
            upstream_service_time_ms: Some(service_time),
            ops: policies::response_ops(self.applied.as_deref(), route),
            close,
            client_minor: facts.client_minor,
            dechunked_length,
            set_cookie: facts.set_cookie.as_deref(),
        };
        self.out.clear();
        http::write_client_response_head(&head, &ctx, &mut self.out);
        drop(head);
        self.out.extend_from_slice(&payload);
        drop(payload);

        let aborted = |reason: String| ProxyError::ResponseAborted { addr, reason };
        let body_error = |error: BodyError| match error {
            BodyError::Framing(e) => aborted(e.to_string()),
            BodyError::Client(e) => ProxyError::Client(e),
        };
        // The body bytes that came with the head follow it (staging keeps the order).
        let (n, _) = forward_body(
            &mut body,
            dechunk,
            &self.upbuf,
            &mut self.client,
            &mut self.out,
        )
        .map_err(body_error)?;
        extra |= self.upbuf.len() > n;
        self.upbuf.clear();
        self.count_sent(n);
        // A response that ends the connection takes the TLS close_notify along in its
        // last send.
        let then = |done: bool| {
            if close && done {
                Next::Close
            } else {
                Next::KeepAlive
            }
        };
        self.send_out(then(body.is_done())).await?;

        let idle = self.ctx.settings.timeouts.idle;
        // The end or an error found while gathering chunks, for the next turn.
        let mut deferred = None;
        while !body.is_done() {
            let next = match deferred.take() {
                Some(next) => Ok(next),
                None => uring::timeout(idle, upstream.stream.recv()).await,
            };
            let received = match next {
                Ok(Ok(data)) => data,
                Ok(Err(e)) => return Err(aborted(e.to_string())),
                Err(_) => return Err(aborted(format!("no data for {idle:?}"))),
            };
            if received.is_empty() {
                if body_kind == BodyKind::UntilClose {
                    return Ok(Relayed {
                        reusable: false,
                        close,
                    });
                }
                return Err(aborted("upstream closed before the body ended".into()));
            }
            self.out.clear();
            let mut chunk = Some(received);
            while let Some(received) = chunk.take() {
                let (n, waiting) = forward_body(
                    &mut body,
                    dechunk,
                    &received,
                    &mut self.client,
                    &mut self.out,
                )
                .map_err(body_error)?;
                extra |= received.len() > n;
                drop(received);
                self.count_sent(n);
                if body.is_done() || waiting >= BODY_SEND_BATCH {
                    break;
                }
                // Chunks the kernel already delivered go out in the same send.
                match upstream.stream.try_recv() {
                    Some(Ok(more)) if !more.is_empty() => chunk = Some(more),
                    Some(other) => deferred = Some(other),
                    None => {}
                }
            }
            self.send_out(then(body.is_done())).await?;
        }
        // Bytes after the body are a protocol error: never reuse that connection.
        Ok(Relayed {
            reusable: !extra,
            close,
        })
    }

    /// Reads the payload of a chunked response body to be de-chunked for an HTTP/1.0
    /// client into `payload`, until the body ends or [`DECHUNK_GATHER_LIMIT`] bytes
    /// are held. Nothing has gone to the client yet, so an upstream that fails here
    /// gets the client a 502 (504 when it stalls). Returns whether bytes followed the
    /// body.
    async fn gather_payload(
        &mut self,
        upstream: &UpstreamConn,
        body: &mut BodyFramer,
        payload: &mut Vec<u8>,
    ) -> Result<bool, ProxyError> {
        let addr = upstream.addr;
        let bad = |source| ProxyError::BadResponse { addr, source };
        let n = body.payload(&self.upbuf, payload).map_err(bad)?;
        self.count_sent(n);
        let extra = self.upbuf.len() > n;
        self.upbuf.drain(..n);
        if extra || body.is_done() {
            return Ok(extra);
        }
        let idle = self.ctx.settings.timeouts.idle;
        while !body.is_done() && payload.len() < DECHUNK_GATHER_LIMIT {
            let received = match uring::timeout(idle, upstream.stream.recv()).await {
                Ok(Ok(data)) if !data.is_empty() => data,
                Ok(Ok(_)) => {
                    return Err(ProxyError::UpstreamClosed {
                        addr,
                        reused: false,
                    });
                }
                Ok(Err(source)) => return Err(ProxyError::UpstreamIo { addr, source }),
                Err(_) => return Err(ProxyError::UpstreamTimeout { addr, after: idle }),
            };
            let n = body.payload(&received, payload).map_err(bad)?;
            self.count_sent(n);
            if received.len() > n {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// How a relayed response ended.
pub(super) struct Relayed {
    /// The body ended exactly: the upstream connection may carry another request.
    pub(super) reusable: bool,
    /// The client connection closes after this response.
    pub(super) close: bool,
}

/// How much of a chunked body is gathered to give an HTTP/1.0 client its length
/// (`content-length`) instead of a body that ends at the close: a response of the
/// size most APIs answer with, within a pooled buffer's capacity.
const DECHUNK_GATHER_LIMIT: usize = 64 * 1024;

/// What one attempt got: the connection, the response head, when the request had
/// gone (for `x-envoy-upstream-service-time`) and how far the request body got.
struct Tried {
    upstream: UpstreamConn,
    response: ResponseHead,
    started: Instant,
    body: BodySent,
}

/// How the request body's forwarding ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodySent {
    /// All of it went to the upstream.
    Whole,
    /// The upstream began its final response first; the rest was not sent.
    Answered,
}

/// The method response framing depends on: a response to HEAD has no body; any other
/// method frames like GET.
/// A connection to `addr` of `cluster` for one request: a stream on one of the
/// shard's HTTP/2 connections, or an idle pooled HTTP/1.1 connection, or a new one
/// within the cluster's connection cap (waiting at most `wait` for a place); for a
/// cluster with TLS, one whose session was made for `server_name`.
pub(super) async fn checkout(
    ctx: &ShardContext,
    cluster: &Cluster,
    addr: SocketAddr,
    server_name: Option<&ServerName<'static>>,
    wait: Duration,
) -> Result<UpstreamConn, ConnectError> {
    let limits = cluster.pool.shard_limits(ctx.shards);
    match cluster.protocol {
        UpstreamProtocol::Http2 => {
            let name = server_name.cloned();
            // Boxed: the HTTP/1.1 path's future stays as small as it was.
            Box::pin(http2::stream(&ctx.pool, cluster, addr, name, limits, wait)).await
        }
        UpstreamProtocol::Http1 => {
            let tls = cluster.tls.as_deref();
            let pooled = ctx.pool.borrow_mut().take(addr, tls, server_name);
            match pooled {
                Some(conn) => Ok(conn),
                None => {
                    // A connection to `addr` (for the same server name) that comes
                    // back while this waits for a slot is taken as it is.
                    let take = |pool: &mut pool::Pool| pool.take(addr, tls, server_name);
                    let reserved = pool::reserve_or(&ctx.pool, &cluster.name, limits, wait, take);
                    match reserved.await? {
                        Ok(slot) => {
                            let tls = tls.zip(server_name.cloned());
                            pool::connect(addr, slot, cluster.pool.connect_timeout, tls).await
                        }
                        Err(idle) => Ok(idle),
                    }
                }
            }
        }
    }
}

fn response_method(facts: &RequestFacts) -> &'static str {
    if facts.is_head { "HEAD" } else { "GET" }
}

/// What [`unless_answered`] ended with.
enum Raced<T> {
    /// The work finished first.
    Done(T),
    /// The upstream began its final response, closed or failed first (the response
    /// head is read next and tells which); the work was dropped.
    Answered,
}

/// Runs `work` (a client read or an upstream send, both cancel safe) while listening
/// to the upstream: what arrives is kept in `upbuf`; interim (1xx) responses let the
/// work go on, the start of a final response, a close or an error end it.
async fn unless_answered<F: Future>(
    work: F,
    upstream: &UpstreamStream,
    upbuf: &mut Vec<u8>,
    method: &str,
) -> Raced<F::Output> {
    let mut work = pin!(work);
    loop {
        let next = poll_fn(|cx| {
            if let Poll::Ready(done) = work.as_mut().poll(cx) {
                return Poll::Ready(Ok(done));
            }
            // The receive in progress belongs to the stream: a fresh future per poll
            // loses nothing.
            match pin!(upstream.recv()).poll(cx) {
                Poll::Ready(received) => Poll::Ready(Err(received)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let received: Received = match next {
            Ok(done) => return Raced::Done(done),
            Err(Ok(received)) if !received.is_empty() => received,
            Err(_) => return Raced::Answered,
        };
        upbuf.extend_from_slice(&received);
        if final_response_began(upbuf, method) {
            return Raced::Answered;
        }
    }
}

/// Whether `upbuf` holds (the start of) a final response, after any complete interim
/// ones. A head that does not parse counts too: reading it will say why.
fn final_response_began(upbuf: &[u8], method: &str) -> bool {
    let mut rest = upbuf;
    loop {
        match http::parse_response(rest, method) {
            Ok(Some(head)) if head.is_informational() => {
                rest = rest.get(head.len()..).unwrap_or_default();
            }
            Ok(Some(_)) | Err(_) => return true,
            // Incomplete: interim if its status line already says 1xx.
            Ok(None) => {
                let status = rest.get(9..10);
                return rest.len() >= 12 && status != Some(b"1");
            }
        }
    }
}

/// Response body bytes gathered from chunks already received before one send to the
/// client (with 16 KiB receive buffers the send buffer stays within the pool's 64 KiB):
/// fewer, larger `send(2)`s (and TLS flushes) for big bodies, while a body
/// that trickles in still goes out chunk by chunk without waiting.
const BODY_SEND_BATCH: usize = 48 * 1024;

/// Why a response body chunk could not be passed on.
enum BodyError {
    /// The upstream's framing (chunk syntax, length) is broken.
    Framing(http::HttpError),
    /// Encrypting for the client failed.
    Client(std::io::Error),
}

/// Passes what of `data` belongs to the body to the client — as [`BodyFramer::forward`]
/// gives it, staged with [`Downstream::stage`] (a TLS 1.3 client's records are
/// encrypted straight from `data`), or only the payload when de-chunking, appended to
/// `out`. Returns how many bytes of `data` the body took and how many bytes now wait
/// to be sent.
fn forward_body(
    body: &mut BodyFramer,
    dechunk: bool,
    data: &[u8],
    client: &mut Downstream,
    out: &mut Vec<u8>,
) -> Result<(usize, usize), BodyError> {
    if dechunk {
        let n = body.payload(data, out).map_err(BodyError::Framing)?;
        return Ok((n, out.len()));
    }
    let mut staged = Ok(());
    let n = body
        .forward(data, &mut |piece| {
            if staged.is_ok() {
                staged = client.stage(piece, out);
            }
        })
        .map_err(BodyError::Framing)?;
    staged.map_err(BodyError::Client)?;
    Ok((n, client.waiting(out)))
}
