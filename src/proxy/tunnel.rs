//! The bytes of a switched protocol (WebSocket, after the upstream's `101 Switching
//! Protocols`), relayed as they are between the client and the upstream connection
//! until either side closes or nothing moves for the idle timeout.
//!
//! The client side goes through the same in-memory [`Pipe`] and pump as an HTTP/2
//! connection (`Downstream::pump`, which opens and seals the client's TLS records),
//! with [`PumpUntil::Driven`]: the tunnel below decides when it is done, so the
//! client's last bytes before its close still reach the upstream. Each direction has
//! one operation in flight at a time, and the pipe holds at most
//! [`OUT_LIMIT`](crate::pipe::OUT_LIMIT) bytes each way, so a side that does not read
//! holds back the other instead of filling ringress's memory.
//!
//! A client on HTTP/2 (an extended CONNECT, RFC 8441) has its tunnel on its stream
//! ([`relay_h2`]): the client's DATA go to the upstream, one at a time, and their
//! flow-control window is given back only once sent, so a slow upstream slows the
//! client; the upstream's bytes go out as DATA as the client's window allows. The
//! client's `END_STREAM` half-closes the upstream connection (its FIN), and the
//! tunnel goes on until the upstream closes too; the upstream's close ends the
//! stream (`END_STREAM`, or `RST_STREAM` after a failure).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::cell::Cell;

use bytes::Bytes;
use h2::{RecvStream, SendStream};

use super::Downstream;
use super::http2::H2Stream;
use crate::pipe::{self, Pipe, PumpUntil};
use crate::upstream::{Received, UpstreamStream};
use crate::uring;

/// How a tunnel ended.
#[derive(Debug)]
pub(super) enum TunnelEnd {
    /// The client closed; what it sent before went on.
    ClientClosed,
    /// The upstream closed; what it sent before reached the client.
    UpstreamClosed,
    /// Nothing moved either way for the idle timeout.
    Idle(Duration),
    /// The upstream connection failed.
    Upstream(io::Error),
    /// The client connection failed (a TLS or socket error).
    Client(io::Error),
}

impl std::fmt::Display for TunnelEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunnelEnd::ClientClosed => f.write_str("the client closed"),
            TunnelEnd::UpstreamClosed => f.write_str("the upstream closed"),
            TunnelEnd::Idle(after) => write!(f, "no bytes either way for {after:?}"),
            TunnelEnd::Upstream(e) => write!(f, "the upstream connection failed: {e}"),
            TunnelEnd::Client(e) => write!(f, "the client connection failed: {e}"),
        }
    }
}

/// Bytes relayed each way.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Relayed {
    pub(super) to_upstream: u64,
    pub(super) to_client: u64,
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Relays bytes between `client` and `upstream` until one of them closes, fails or
/// both stay silent for `idle`.
pub(super) async fn relay(
    client: &mut Downstream,
    upstream: &UpstreamStream,
    idle: Duration,
) -> (TunnelEnd, Relayed) {
    if let Downstream::H2(stream) = client {
        return relay_h2(stream, upstream, idle).await;
    }
    let pipe = Pipe::default();
    let mut relayed = Relayed::default();
    let mut ended = None;
    let mut state = Directions::new(idle);
    let pumped = client
        .pump(&pipe, PumpUntil::Driven, |cx| {
            match state.poll(cx, &pipe, upstream, &mut relayed) {
                Poll::Ready(end) => {
                    ended = Some(end);
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
    let end = match (pumped, ended) {
        (Err(e), _) => TunnelEnd::Client(e),
        (Ok(()), Some(end)) => end,
        (Ok(()), None) => TunnelEnd::ClientClosed,
    };
    (end, relayed)
}

/// [`relay`] for a client's HTTP/2 stream (see the module doc).
async fn relay_h2(
    stream: &mut H2Stream,
    upstream: &UpstreamStream,
    idle: Duration,
) -> (TunnelEnd, Relayed) {
    let moved = Moved::new();
    let end = match stream.tunnel_halves() {
        Some((body, send)) => h2_directions(body, send, upstream, idle, &moved).await,
        None => {
            // The client ended its side before the upstream's answer.
            let _ = upstream.shutdown_write().await;
            TunnelEnd::ClientClosed
        }
    };
    let whole = matches!(end, TunnelEnd::ClientClosed | TunnelEnd::UpstreamClosed);
    stream.end_tunnel(whole);
    let relayed = Relayed {
        to_upstream: moved.to_upstream.get(),
        to_client: moved.to_client.get(),
    };
    (end, relayed)
}

/// What [`h2_directions`]' two directions moved, and when last.
struct Moved {
    to_upstream: Cell<u64>,
    to_client: Cell<u64>,
    last: Cell<Instant>,
}

impl Moved {
    fn new() -> Moved {
        Moved {
            to_upstream: Cell::new(0),
            to_client: Cell::new(0),
            last: Cell::new(uring::now()),
        }
    }

    fn add(&self, count: &Cell<u64>, n: usize) {
        count.set(count.get() + n as u64);
        self.last.set(uring::now());
    }
}

/// The client's DATA to the upstream and the upstream's bytes to the client, each
/// its own future, until the tunnel ends (see the module doc).
async fn h2_directions(
    mut body: RecvStream,
    send: &mut SendStream<Bytes>,
    upstream: &UpstreamStream,
    idle: Duration,
    moved: &Moved,
) -> TunnelEnd {
    let client_side = async {
        loop {
            match body.data().await {
                Some(Ok(data)) => {
                    let n = data.len();
                    let (sent, _) = upstream.send_all(Vec::from(data)).await;
                    if let Err(e) = sent {
                        return TunnelEnd::Upstream(e);
                    }
                    // The window goes back once sent: the upstream's pace is the client's.
                    let _ = body.flow_control().release_capacity(n);
                    moved.add(&moved.to_upstream, n);
                }
                Some(Err(e)) => return TunnelEnd::Client(io::Error::other(e)),
                None => {
                    // END_STREAM: the upstream gets a FIN, and may still answer.
                    return match upstream.shutdown_write().await {
                        Ok(()) => TunnelEnd::ClientClosed,
                        Err(e) => TunnelEnd::Upstream(e),
                    };
                }
            }
        }
    };
    let upstream_side = async {
        loop {
            let data = match upstream.recv().await {
                Ok(data) if data.is_empty() => return TunnelEnd::UpstreamClosed,
                Ok(data) => Bytes::copy_from_slice(&data),
                Err(e) => return TunnelEnd::Upstream(e),
            };
            let n = data.len();
            if let Err(e) = pipe::send_within(send, data, false, idle, "client").await {
                return TunnelEnd::Client(e);
            }
            moved.add(&moved.to_client, n);
        }
    };
    let mut client_side = std::pin::pin!(client_side);
    let mut upstream_side = std::pin::pin!(upstream_side);
    let mut half_closed = false;
    let mut timer: Boxed<'_, ()> = Box::pin(uring::sleep(idle));
    std::future::poll_fn(|cx| {
        if !half_closed && let Poll::Ready(end) = client_side.as_mut().poll(cx) {
            match end {
                TunnelEnd::ClientClosed => half_closed = true,
                failed => return Poll::Ready(failed),
            }
        }
        if let Poll::Ready(end) = upstream_side.as_mut().poll(cx) {
            return Poll::Ready(match end {
                TunnelEnd::UpstreamClosed if half_closed => TunnelEnd::ClientClosed,
                end => end,
            });
        }
        while timer.as_mut().poll(cx).is_ready() {
            let quiet = uring::now().saturating_duration_since(moved.last.get());
            if quiet >= idle {
                return Poll::Ready(TunnelEnd::Idle(idle));
            }
            timer = Box::pin(uring::sleep(idle - quiet));
        }
        Poll::Pending
    })
    .await
}

/// The two directions' operations in flight, and the idle timer.
struct Directions<'a> {
    /// Client bytes being sent to the upstream; the buffer comes back with the result.
    to_upstream: Option<Boxed<'a, (io::Result<()>, Vec<u8>)>>,
    spare: Vec<u8>,
    client_done: bool,
    /// The upstream receive in flight, and received bytes not yet all in the pipe.
    from_upstream: Option<Boxed<'a, io::Result<Received>>>,
    to_client: Option<(Received, usize)>,
    upstream_done: bool,
    idle: Duration,
    last_moved: Instant,
    timer: Boxed<'a, ()>,
}

impl<'a> Directions<'a> {
    fn new(idle: Duration) -> Self {
        Directions {
            to_upstream: None,
            spare: Vec::new(),
            client_done: false,
            from_upstream: None,
            to_client: None,
            upstream_done: false,
            idle,
            last_moved: uring::now(),
            timer: Box::pin(uring::sleep(idle)),
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        pipe: &Pipe,
        upstream: &'a UpstreamStream,
        relayed: &mut Relayed,
    ) -> Poll<TunnelEnd> {
        loop {
            let mut moved = false;
            // Client to upstream: what the pipe holds, one send at a time.
            if self.to_upstream.is_none() && !self.client_done {
                let mut chunk = std::mem::take(&mut self.spare);
                chunk.clear();
                match pipe.take_inbound(&mut chunk) {
                    Some(0) => self.spare = chunk,
                    Some(n) => {
                        relayed.to_upstream += n as u64;
                        self.to_upstream = Some(Box::pin(upstream.send_all(chunk)));
                    }
                    None => self.client_done = true,
                }
            }
            if let Some(sending) = &mut self.to_upstream
                && let Poll::Ready((sent, chunk)) = sending.as_mut().poll(cx)
            {
                self.to_upstream = None;
                self.spare = chunk;
                if let Err(e) = sent {
                    return Poll::Ready(TunnelEnd::Upstream(e));
                }
                moved = true;
            }
            if self.client_done && self.to_upstream.is_none() {
                return Poll::Ready(TunnelEnd::ClientClosed);
            }
            // Upstream to client: received bytes go into the pipe as it has room.
            if self.to_client.is_none() && !self.upstream_done {
                let receive = self
                    .from_upstream
                    .get_or_insert_with(|| Box::pin(upstream.recv()));
                if let Poll::Ready(received) = receive.as_mut().poll(cx) {
                    self.from_upstream = None;
                    moved = true;
                    match received {
                        Ok(data) if data.is_empty() => self.upstream_done = true,
                        Ok(data) => self.to_client = Some((data, 0)),
                        Err(e) => return Poll::Ready(TunnelEnd::Upstream(e)),
                    }
                }
            }
            if let Some((data, at)) = &mut self.to_client {
                let n = pipe.write_outbound(&data[*at..]);
                *at += n;
                relayed.to_client += n as u64;
                moved |= n > 0;
                if *at == data.len() {
                    self.to_client = None;
                }
            }
            if self.upstream_done && self.to_client.is_none() {
                return Poll::Ready(TunnelEnd::UpstreamClosed);
            }
            if moved {
                self.last_moved = uring::now();
                continue;
            }
            // Nothing moved: the idle timer, re-armed for what is left when bytes moved
            // since it was set.
            while self.timer.as_mut().poll(cx).is_ready() {
                let quiet = uring::now().saturating_duration_since(self.last_moved);
                if quiet >= self.idle {
                    return Poll::Ready(TunnelEnd::Idle(self.idle));
                }
                self.timer = Box::pin(uring::sleep(self.idle - quiet));
            }
            return Poll::Pending;
        }
    }
}
