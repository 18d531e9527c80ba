//! HTTP/2 to clients: a connection whose client chose `h2` by ALPN, or sent the
//! prior-knowledge preface on a plain port, is served by the `h2` crate, driven in
//! the connection's own task over an in-memory [`Pipe`] (no tokio runtime): the pump
//! (`Downstream::pump`) moves bytes between the socket (and its TLS session) and
//! the pipe, and polls the `h2` connection, which hands over each new stream.
//!
//! Each stream is its own task: an HTTP/1.1 [`Connection`] for one request over an
//! [`H2Stream`] ([`stream`]), so every route feature, retry, timeout, header rewrite,
//! access-log line and metric of the HTTP/1.1 path is the HTTP/2 path's too. An
//! extended CONNECT (RFC 8441, announced with `SETTINGS_ENABLE_CONNECT_PROTOCOL`)
//! becomes an HTTP/1.1 `Upgrade` request the same way, so WebSocket over HTTP/2
//! reaches an HTTP/1.1 WebSocket upstream (see `stream` and `super::tunnel`).
//!
//! Limits: at most `--http2-max-concurrent-streams` streams at once (100 by default), header lists as large
//! as an HTTP/1.1 head may be, a bounded send buffer per stream and per connection
//! ([`crate::pipe::OUT_LIMIT`]); rapid resets, CONTINUATION floods and the like are the `h2`
//! crate's to refuse (with GOAWAY), PING, SETTINGS and PRIORITY floods ringress's
//! ([`flood`]: GOAWAY `ENHANCE_YOUR_CALM`). An idle connection (no stream) is sent GOAWAY
//! after the keep-alive timeout; a draining shard sends GOAWAY at once and lets the
//! streams in flight finish.

mod flood;
mod stream;

use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;

pub(crate) use flood::FloodGuard;
pub(crate) use stream::{ConnectionFacts, H2Stream};

use super::{Connection, Downstream, Ending};
use crate::pipe::{self, Pipe};
use crate::uring;

/// The largest header list a request may have: the HTTP/1.1 head limit, so a request
/// is refused alike over both protocols.
const MAX_HEADER_LIST_SIZE: u32 = crate::http::limits::MAX_HEAD_BYTES as u32;

/// What an HTTP/2 connection's task keeps of the HTTP/1.1 [`Connection`] it
/// started as (the rest, dropped, would otherwise sit in every idle connection's
/// task).
struct Opened {
    client: Downstream,
    peer: std::net::SocketAddr,
    port: u16,
    ctx: Rc<crate::shard::ShardContext>,
    head_deadline: std::time::Instant,
    facts: Rc<ConnectionFacts>,
    pipe: Pipe,
}

/// Serves `conn`, whose first bytes (in `conn.inbuf`) start HTTP/2, until the client
/// or ringress ends it.
pub(super) fn serve(mut conn: Connection) -> impl Future<Output = ()> {
    let local = conn.local_addr();
    let facts = Rc::new(conn.client.h2_facts(local));
    let pipe = Pipe::guarded();
    pipe.push_inbound(&conn.inbuf);
    // The connection's HTTP/1.1 buffers are not used again.
    crate::buffers::give(&mut conn.inbuf);
    crate::buffers::give(&mut conn.out);
    crate::buffers::give(&mut conn.upbuf);
    // Moved out field by field: the rest of `conn` is dropped here, not carried in
    // the task.
    run(Opened {
        client: conn.client,
        peer: conn.peer,
        port: conn.port,
        ctx: conn.ctx,
        head_deadline: conn.head_deadline,
        facts,
        pipe,
    })
}

/// [`serve`]'s connection, from the `h2` handshake to its end.
async fn run(opened: Opened) {
    let Opened {
        mut client,
        peer,
        port,
        ctx,
        head_deadline,
        facts,
        pipe,
    } = opened;
    let idle = ctx.settings.timeouts.idle;
    let keepalive = ctx.settings.timeouts.keepalive;
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(ctx.settings.limits.http2_max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(pipe::OUT_LIMIT)
        // WebSocket over HTTP/2 (RFC 8441): SETTINGS_ENABLE_CONNECT_PROTOCOL.
        .enable_connect_protocol()
        .handshake::<_, Bytes>(pipe.clone());
    // Boxed and dropped once done: the handshake holds `h2`'s codec until it hands
    // it to the connection, and an idle connection's task should not keep both.
    let mut handshake = Some(Box::pin(handshake));
    // The preface and SETTINGS are part of the head a client owes within
    // `--header-timeout` of its connection.
    let mut handshake_deadline = pin!(uring::sleep(
        head_deadline.saturating_duration_since(uring::now())
    ));
    let mut connection = None;
    let mut stop = pin!(ctx.draining.or_stop(std::future::pending::<()>()));
    let mut stopping = false;
    // One timer for the keep-alive timeout, made again only when it fires: a stream
    // coming and going (every request of a client that sends one at a time) only
    // moves `idle_since`.
    let mut idle_since = Some(uring::now());
    let mut quiet: Pin<Box<dyn Future<Output = ()>>> = Box::pin(uring::sleep(keepalive));
    let mut failed = false;
    let driven = client
        .pump(&pipe, pipe::PumpUntil::EitherEnds, |cx| {
            let h2 = match &mut connection {
                Some(h2) => h2,
                None => match handshake
                    .as_mut()
                    .map_or(Poll::Pending, |h| h.as_mut().poll(cx))
                {
                    Poll::Ready(Ok(h2)) => {
                        handshake = None;
                        connection.insert(h2)
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "HTTP/2 handshake failed");
                        failed = true;
                        return Poll::Ready(());
                    }
                    Poll::Pending if handshake_deadline.as_mut().poll(cx).is_ready() => {
                        tracing::debug!(%peer, "no HTTP/2 preface within the header timeout");
                        failed = true;
                        return Poll::Ready(());
                    }
                    Poll::Pending => return Poll::Pending,
                },
            };
            if !stopping && pipe.flooded() {
                // More control frames than any client sends (see `flood`).
                tracing::debug!(%peer, "HTTP/2 control-frame flood");
                stopping = true;
                failed = true;
                h2.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
            }
            if !stopping && stop.as_mut().poll(cx).is_ready() {
                stopping = true;
                h2.graceful_shutdown();
            }
            // GOAWAY after the keep-alive timeout without a stream.
            if !stopping {
                match (h2.has_streams(), idle_since) {
                    (true, _) => idle_since = None,
                    (false, None) => idle_since = Some(uring::now()),
                    (false, Some(_)) => {}
                }
                if quiet.as_mut().poll(cx).is_ready() {
                    let idle =
                        idle_since.map(|since| uring::now().saturating_duration_since(since));
                    match idle {
                        Some(idle) if idle >= keepalive => {
                            // No stream to let finish: GOAWAY and close, without the
                            // graceful shutdown's PING round trip (a client that never
                            // answers it would hold the connection).
                            stopping = true;
                            h2.abrupt_shutdown(h2::Reason::NO_ERROR);
                        }
                        idle => {
                            let left = keepalive - idle.unwrap_or_default();
                            quiet = Box::pin(uring::sleep(left));
                            // Registers the new timer's wake-up.
                            let _ = quiet.as_mut().poll(cx);
                        }
                    }
                }
            }
            loop {
                match h2.poll_accept(cx) {
                    Poll::Ready(Some(Ok((request, respond)))) => {
                        let (mut stream, head) =
                            H2Stream::new(request, respond, facts.clone(), idle);
                        match head {
                            Ok(head) => {
                                let client = Downstream::H2(Box::new(stream));
                                let task = Connection::for_stream(&ctx, peer, port, client, head);
                                uring::spawn(async move {
                                    // A stream's request never turns into HTTP/2.
                                    let _ = task.run().await;
                                });
                            }
                            Err(reason) => {
                                tracing::debug!(%peer, reason, "HTTP/2 request refused");
                                stream.refuse(400);
                            }
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // A connection error: `h2` has sent GOAWAY with its code.
                        tracing::debug!(%peer, error = %e, "HTTP/2 connection failed");
                        failed = true;
                        return Poll::Ready(());
                    }
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
    let ending = match (driven, failed) {
        (Ok(()), false) => Ending::Clean,
        (Ok(()), true) => Ending::Lingering,
        (Err(e), _) => {
            tracing::debug!(%peer, error = %e, "HTTP/2 connection ended");
            Ending::Abort
        }
    };
    client.close(ending).await;
}
