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

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::Downstream;
use crate::pipe::{Pipe, PumpUntil};
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
