//! Per-shard keep-alive pools of upstream connections.
//!
//! Each shard owns one [`Pool`]: idle HTTP/1.1 connections keyed by endpoint address,
//! taken newest-first (a connection used a moment ago is the least likely to have been
//! closed by the upstream) and dropped once idle longer than [`IDLE_TIMEOUT`]. Nothing
//! here is shared between threads, so nothing is locked.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::fast_hash::FastMap;
use crate::uring::{self, TcpStream};

/// How long an idle upstream connection is kept (below nginx's 75 s and most upstream
/// servers' keep-alive timeouts, so ringress normally closes first).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// Idle connections kept per endpoint per shard; more are closed when returned.
pub const MAX_IDLE_PER_ENDPOINT: usize = 128;
/// How long a connect to an upstream endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no connection to an endpoint could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr} failed: {source}")]
    Failed { addr: SocketAddr, source: io::Error },
    #[error("connect to {addr} timed out after {CONNECT_TIMEOUT:?}")]
    TimedOut { addr: SocketAddr },
}

/// An upstream connection checked out of the pool (or freshly connected).
pub struct UpstreamConn {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    /// Whether it served a request before: a reused connection the upstream closed
    /// meanwhile fails without the request having been seen, so it may be retried.
    pub reused: bool,
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// One shard's idle upstream connections.
#[derive(Default)]
pub struct Pool {
    idle: FastMap<SocketAddr, Vec<Idle>>,
}

impl Pool {
    /// An idle connection to `addr`, if one fresh enough is pooled.
    pub fn take(&mut self, addr: SocketAddr) -> Option<UpstreamConn> {
        let idle = self.idle.get_mut(&addr)?;
        let now = uring::now();
        while let Some(conn) = idle.pop() {
            if now.duration_since(conn.since) < IDLE_TIMEOUT {
                return Some(UpstreamConn {
                    stream: conn.stream,
                    addr,
                    reused: true,
                });
            }
        }
        None
    }

    /// Returns a connection whose last exchange ended cleanly.
    pub fn put(&mut self, conn: UpstreamConn) {
        let idle = self.idle.entry(conn.addr).or_default();
        if idle.len() >= MAX_IDLE_PER_ENDPOINT {
            idle.remove(0);
        }
        idle.push(Idle {
            stream: conn.stream,
            since: uring::now(),
        });
    }

    /// Idle connections currently held, over all endpoints.
    pub fn idle_count(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }
}

/// Opens a new connection to an upstream endpoint, with [`CONNECT_TIMEOUT`].
pub async fn connect(addr: SocketAddr) -> Result<UpstreamConn, ConnectError> {
    match uring::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(UpstreamConn {
                stream,
                addr,
                reused: false,
            })
        }
        Ok(Err(source)) => Err(ConnectError::Failed { addr, source }),
        Err(_) => Err(ConnectError::TimedOut { addr }),
    }
}
