//! Forwarding one request to an upstream and streaming the response back.
//!
//! The request head is rewritten once (hop-by-hop headers out, `x-forwarded-*`,
//! `x-request-id`, the route's header operations and rewrites in) and sent together
//! with whatever body bytes already arrived. The rest of the body is streamed as the
//! client sends it, framed by [`BodyFramer`] so the end of the body (and the start of a
//! pipelined request) is exact. Then the response head is awaited, rewritten, and the
//! body streamed back. Attempts that the upstream cannot have seen (a failed connect, a
//! reused keep-alive connection found closed) are retried on another pick.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::retry::RetryPolicy;
use super::{Connection, Downstream, Next, ProxyError};
use crate::http::{
    self, BodyFramer, BodyKind, ForwardContext, RequestHead, ResponseContext, ResponseHead,
};
use crate::route::Route;
use crate::shard::ShardStats;
use crate::snapshot::Snapshot;
use crate::upstream::{ClusterId, UpstreamConn, pool};
use crate::uring;

/// What the request needs remembered once its head has been consumed.
struct RequestFacts {
    keep_alive: bool,
    is_head: bool,
    client_minor: u8,
    /// The client waits for `100 Continue` before sending its body.
    expects_continue: bool,
}

impl Connection {
    /// Sends the request to `cluster` and streams the response to the client.
    pub(super) async fn forward(
        &mut self,
        snapshot: &Arc<Snapshot>,
        route: &Route,
        cluster: ClusterId,
        head: RequestHead,
        path: Option<String>,
    ) -> Result<Next, ProxyError> {
        let facts = RequestFacts {
            keep_alive: head.keep_alive(),
            is_head: head.method().eq_ignore_ascii_case("HEAD"),
            client_minor: head.version_minor(),
            expects_continue: head.expects_continue(),
        };
        let mut request_body = BodyFramer::new(head.body());
        self.write_upstream_head(route, &head, path.as_deref());
        let head_len = head.len();
        drop(head);
        self.inbuf.drain(..head_len);
        // Body bytes that arrived with the head travel in the same send.
        let out = &mut self.out;
        let first = request_body
            .forward(&self.inbuf, &mut |piece| out.extend_from_slice(piece))
            .map_err(ProxyError::BadRequest)?;
        self.inbuf.drain(..first);

        let policy = RetryPolicy::for_route(route, self.ctx.settings.timeouts.idle, uring::now());
        // Only a request sent whole in the first send can be sent again.
        let resendable = request_body.is_done();
        let mut tries = 0;
        let mut redialled = false;
        let (mut upstream, endpoint, response, started) = loop {
            let Some((endpoint, addr)) = self.ctx.pick_endpoint(snapshot, cluster) else {
                let name = snapshot.clusters.get(cluster).name.clone();
                return Err(ProxyError::NoEndpoint(name));
            };
            let Some(wait) = policy.wait(uring::now()) else {
                self.ctx.finished(snapshot, cluster, endpoint);
                let after = route.timeout.unwrap_or_default();
                return Err(ProxyError::UpstreamTimeout { addr, after });
            };
            tries += 1;
            let result = self
                .try_upstream(addr, &mut request_body, &facts, wait)
                .await;
            match result {
                Ok((upstream, response, started)) => {
                    if resendable && policy.retry_status(response.status(), tries) {
                        // The upstream connection is dropped with the unread body.
                        self.ctx.finished(snapshot, cluster, endpoint);
                        tracing::debug!(%addr, status = response.status(), tries, "retrying");
                        continue;
                    }
                    break (upstream, endpoint, response, started);
                }
                Err(e) => {
                    self.ctx.finished(snapshot, cluster, endpoint);
                    if matches!(e, ProxyError::Connect(_)) {
                        ShardStats::add(&self.ctx.stats.upstream_connect_failures);
                    }
                    if resendable && e.is_stale_connection() && !redialled {
                        redialled = true;
                        tries -= 1;
                        continue;
                    }
                    if resendable && policy.retry_error(&e, tries) {
                        tracing::debug!(%addr, error = %e, tries, "retrying");
                        continue;
                    }
                    return Err(e);
                }
            }
        };

        let reusable = response.keep_alive() && response.body() != BodyKind::UntilClose;
        let status = response.status();
        self.ctx.stats.responses.count(status);
        route.stats.count(status);
        let close = !facts.keep_alive
            || response.client_must_close(facts.client_minor)
            || self.ctx.draining.is_stopped();
        let result = self
            .stream_response(&mut upstream, route, &facts, response, close, started)
            .await;
        self.ctx.finished(snapshot, cluster, endpoint);
        let complete = result?;
        if complete && reusable {
            self.ctx.pool.borrow_mut().put(upstream);
        }
        Ok(if close { Next::Close } else { Next::KeepAlive })
    }

    /// Writes the rewritten request head into `out`.
    fn write_upstream_head(&mut self, route: &Route, head: &RequestHead, path: Option<&str>) {
        let request_id = match head.header("x-request-id") {
            Some(_) => None,
            None => Some(http::new_request_id()),
        };
        let scheme = self.client.scheme();
        let ctx = ForwardContext {
            client_ip: self.peer.ip(),
            scheme,
            request_id: request_id.as_ref().map(http::RequestId::as_str),
            path,
            authority: route.rewrite.as_ref().and_then(|r| r.authority.as_deref()),
            ops: &route.headers.request,
            client_cert: self.client.client_identity(),
        };
        self.out.clear();
        http::write_upstream_request(head, &ctx, &mut self.out);
    }

    /// One attempt: a connection, the request sent (head, then any streamed body),
    /// and the response head received and written, rewritten, into `out`.
    async fn try_upstream(
        &mut self,
        addr: std::net::SocketAddr,
        request_body: &mut BodyFramer,
        facts: &RequestFacts,
        wait: Duration,
    ) -> Result<(UpstreamConn, ResponseHead, Instant), ProxyError> {
        let pooled = self.ctx.pool.borrow_mut().take(addr);
        let upstream = match pooled {
            Some(conn) => conn,
            None => pool::connect(addr).await?,
        };
        let reused = upstream.reused;
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
        self.stream_request_body(&upstream, request_body, facts.expects_continue)
            .await?;
        let started = uring::now();
        let response = self.read_response_head(&upstream, facts, wait).await?;
        Ok((upstream, response, started))
    }

    /// Streams the rest of the request body from the client to the upstream.
    async fn stream_request_body(
        &mut self,
        upstream: &UpstreamConn,
        body: &mut BodyFramer,
        expects_continue: bool,
    ) -> Result<(), ProxyError> {
        let idle = self.ctx.settings.timeouts.idle;
        let mut chunk = Vec::new();
        let mut continue_sent = !expects_continue;
        while !body.is_done() {
            if self.inbuf.is_empty() {
                if !continue_sent {
                    // The client holds its body back until told to go on.
                    self.out.clear();
                    self.out.extend_from_slice(http::CONTINUE_100);
                    self.send_out(Next::KeepAlive).await?;
                    continue_sent = true;
                }
                match uring::timeout(idle, self.client.read(&mut self.inbuf)).await {
                    Ok(Ok(0)) => return Err(ProxyError::ClientClosed),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(ProxyError::Client(e)),
                    Err(_) => return Err(ProxyError::ClientTimeout(idle)),
                }
            }
            chunk.clear();
            let n = body
                .forward(&self.inbuf, &mut |piece| chunk.extend_from_slice(piece))
                .map_err(ProxyError::BadRequest)?;
            self.inbuf.drain(..n);
            let (sent, back) = upstream.stream.send_all(chunk).await;
            chunk = back;
            sent.map_err(|source| ProxyError::UpstreamIo {
                addr: upstream.addr,
                source,
            })?;
        }
        Ok(())
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
        let method = if facts.is_head { "HEAD" } else { "GET" };
        let deadline = uring::now() + wait;
        // Once the client has seen an interim response, the request cannot be resent.
        let mut interim_sent = false;
        self.upbuf.clear();
        super::buffers::ensure(&mut self.upbuf);
        loop {
            if !self.upbuf.is_empty() {
                let parsed = http::parse_response(&self.upbuf, method)
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

    /// Sends the response head and streams the body. `Ok(true)` when the body ended
    /// exactly (the upstream connection may be reused); an upstream that fails or
    /// closes early ends the client connection.
    async fn stream_response(
        &mut self,
        upstream: &mut UpstreamConn,
        route: &Route,
        facts: &RequestFacts,
        head: ResponseHead,
        close: bool,
        started: Instant,
    ) -> Result<bool, ProxyError> {
        let addr = upstream.addr;
        let body_kind = head.body();
        // An HTTP/1.0 client gets a chunked body's payload only, then the close.
        let dechunk = head.dechunk_for(facts.client_minor);
        let elapsed = uring::now().saturating_duration_since(started).as_millis();
        let ctx = ResponseContext {
            upstream_service_time_ms: Some(u64::try_from(elapsed).unwrap_or(u64::MAX)),
            ops: &route.headers.response,
            close,
            client_minor: facts.client_minor,
        };
        self.out.clear();
        http::write_client_response_head(&head, &ctx, &mut self.out);
        let head_len = head.len();
        drop(head);
        self.upbuf.drain(..head_len);

        let mut body = BodyFramer::new(body_kind);
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
        let mut extra = self.upbuf.len() > n;
        self.upbuf.clear();
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
                    return Ok(false);
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
        Ok(!extra)
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
