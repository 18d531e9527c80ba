//! Per-shard keep-alive pools of upstream connections, and the cap on connections per
//! cluster.
//!
//! Each shard owns one [`Pool`]: idle HTTP/1.1 connections keyed by endpoint address,
//! taken newest-first (a connection used a moment ago is the least likely to have been
//! closed by the upstream). A pooled connection is never handed out once the upstream
//! has closed it or sent anything unasked (its receive already holds an end, an error
//! or bytes), and is dropped once idle longer than its cluster's idle timeout
//! ([`DEFAULT_IDLE_TIMEOUT`], shorter than the keep-alive timeouts upstream servers
//! commonly use, so ringress normally closes first; an upstream's
//! `Keep-Alive: timeout=N` shortens it). [`Pool::sweep`] closes expired and closed
//! ones every second, so they hold no descriptor.
//!
//! Every open connection of a cluster, idle or in use, holds one of its slots
//! ([`Slots`]): a shard opens at most its share of the cluster's `maxConnections`
//! ([`PoolPolicy::max_connections`], [`DEFAULT_MAX_CONNECTIONS`] without a
//! DestinationRule). A request that finds its cluster full closes an idle connection
//! of the cluster to another endpoint if there is one, else waits until a connection
//! closes or comes back idle (one to its own endpoint it takes as it is; another's
//! slot it takes by closing it) or its try's deadline: at most the shard's share of `http.http1MaxPendingRequests`
//! ([`MAX_PENDING`] without it) wait per cluster, and one more is refused at once
//! (503 `UO`, Envoy's pending-request overflow). A connection that has carried
//! `http.maxRequestsPerConnection` requests is closed instead of pooled.
//!
//! The pool also holds the shard's multiplexed HTTP/2 connections (`super::http2`),
//! which take their cluster's slots like any other connection and are swept with the
//! idle ones.
//!
//! Nothing here is shared between threads, so nothing is locked.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::UpstreamStream;
use super::http2::H2Connections;
use crate::config::ConnectionPool;
use crate::fast_hash::FastMap;
use crate::tls::client_config::UpstreamTls;
use crate::tls::client_session::{self, ClientSession, HandshakeError, TlsUpstream};
use crate::uring::{self, TcpStream};

/// How long an idle upstream connection is kept without a DestinationRule
/// `connectionPool.http.idleTimeout`: below the 5 s of Node.js, Apache httpd and
/// uvicorn, so ringress closes first and never sends a request into a connection the
/// upstream is closing (Istio's "503 UC").
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Connections per cluster without `connectionPool.tcp.maxConnections` (Envoy's own
/// default circuit-breaker limit).
pub(crate) const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
/// How long a connect may take without `connectionPool.tcp.connectTimeout` (Istio's
/// default).
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept per endpoint per shard; more are closed when returned.
pub(crate) const MAX_IDLE_PER_ENDPOINT: usize = 128;
/// Requests that may wait for a slot of one full cluster without
/// `connectionPool.http.http1MaxPendingRequests` (Envoy's default); more are answered
/// 503 at once.
pub(crate) const MAX_PENDING: u32 = 1024;
/// How much sooner than an upstream's `Keep-Alive: timeout=` ringress closes.
const KEEP_ALIVE_MARGIN: Duration = Duration::from_secs(1);

/// A cluster's connection settings, from its DestinationRule's `connectionPool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolPolicy {
    /// Open connections to the cluster at most, over all shards.
    pub(crate) max_connections: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// Requests waiting for a connection at most, over all shards.
    pub(crate) max_pending: u32,
    /// Requests one upstream connection carries before it is closed.
    pub(crate) max_requests_per_connection: Option<u32>,
    /// Retries in flight at once at most, over all shards (unlimited without
    /// `maxRetries`, as Istio configures Envoy).
    pub(crate) max_retries: u32,
    /// Requests in flight at once at most, over all shards (`http2MaxRequests`;
    /// unlimited without, as Istio configures Envoy).
    pub(crate) max_requests: u32,
}

/// One shard's share of a cluster's limits: what [`reserve`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotLimits {
    pub(crate) connections: u32,
    pub(crate) pending: u32,
}

impl PoolPolicy {
    /// The policy of a cluster whose DestinationRule has `pool` (defaults without).
    pub(crate) fn from_rule(pool: Option<&ConnectionPool>) -> PoolPolicy {
        let pool = pool.copied().unwrap_or_default();
        PoolPolicy {
            max_connections: pool.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            connect_timeout: pool.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            idle_timeout: pool.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
            max_pending: pool.requests.max_pending.unwrap_or(MAX_PENDING),
            max_requests_per_connection: pool.requests.max_requests_per_connection,
            max_retries: pool.requests.max_retries.unwrap_or(u32::MAX),
            max_requests: pool.requests.max_requests.unwrap_or(u32::MAX),
        }
    }

    /// This shard's share of the connection and pending-request limits when `shards`
    /// share them.
    pub(crate) fn shard_limits(&self, shards: usize) -> SlotLimits {
        SlotLimits {
            connections: share(self.max_connections, shards),
            pending: share(self.max_pending, shards),
        }
    }

    /// This shard's share of `max_retries`.
    pub(crate) fn shard_retries(&self, shards: usize) -> u32 {
        share(self.max_retries, shards)
    }

    /// This shard's share of `max_requests`.
    pub(crate) fn shard_requests(&self, shards: usize) -> u32 {
        share(self.max_requests, shards)
    }

    /// The limits as `check` shows them, with Istio's field names.
    pub(crate) fn describe(&self) -> String {
        let per_connection = self
            .max_requests_per_connection
            .map_or("unlimited".to_owned(), |n| n.to_string());
        let unlimited = |n: u32| match n {
            u32::MAX => "unlimited".to_owned(),
            n => n.to_string(),
        };
        let (retries, requests) = (unlimited(self.max_retries), unlimited(self.max_requests));
        format!(
            "maxConnections {}, http1MaxPendingRequests {}, http2MaxRequests {requests}, maxRequestsPerConnection {per_connection}, maxRetries {retries}, connectTimeout {:?}, idleTimeout {:?}",
            self.max_connections, self.max_pending, self.connect_timeout, self.idle_timeout
        )
    }

    /// Whether a connection that has carried `served` requests may carry another.
    pub(crate) fn reusable_after(&self, served: u32) -> bool {
        self.max_requests_per_connection
            .is_none_or(|max| served < max)
    }
}

/// One shard's share of a limit `total` over all `shards` (at least 1).
fn share(total: u32, shards: usize) -> u32 {
    let shards = u32::try_from(shards.max(1)).unwrap_or(u32::MAX);
    total.div_ceil(shards).max(1)
}

impl Default for PoolPolicy {
    fn default() -> Self {
        PoolPolicy::from_rule(None)
    }
}

/// Why no connection to an endpoint could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect to {addr} failed: {source}")]
    Failed { addr: SocketAddr, source: io::Error },
    #[error("connect to {addr} timed out after {after:?}")]
    TimedOut { addr: SocketAddr, after: Duration },
    /// The TLS handshake failed (`reason`: Envoy's transport failure reason);
    /// `retried` when it was the last of several tries.
    #[error("TLS handshake with {addr} failed: {reason}")]
    Tls {
        addr: SocketAddr,
        reason: String,
        retried: bool,
    },
    #[error(
        "cluster {cluster} has all its {limit} connections of this shard open (connectionPool.tcp.maxConnections) and {waiting} requests waiting for one (http1MaxPendingRequests)"
    )]
    Overflow {
        cluster: String,
        limit: u32,
        waiting: usize,
    },
    #[error(
        "no connection of cluster {cluster} came free within {after:?} (connectionPool.tcp.maxConnections)"
    )]
    NoSlot { cluster: String, after: Duration },
    #[error(
        "cluster {cluster} has all its {limit} requests of this shard in flight (connectionPool.http.http2MaxRequests)"
    )]
    TooManyRequests { cluster: String, limit: u32 },
}

impl ConnectError {
    /// What Envoy answers the client when the TLS handshake failed: its local reply
    /// body, with the transport failure reason.
    pub(crate) fn local_reply_body(&self) -> Option<String> {
        let ConnectError::Tls {
            reason, retried, ..
        } = self
        else {
            return None;
        };
        let retried = if *retried {
            "retried and the latest "
        } else {
            ""
        };
        Some(format!(
            "upstream connect error or disconnect/reset before headers. {retried}reset reason: remote connection failure, transport failure reason: {reason}"
        ))
    }

    /// The cluster was full: no connect was tried (not a connect failure, and not
    /// retried as one).
    pub(crate) fn is_overflow(&self) -> bool {
        matches!(
            self,
            ConnectError::Overflow { .. }
                | ConnectError::NoSlot { .. }
                | ConnectError::TooManyRequests { .. }
        )
    }
}

/// The open connections of one cluster on one shard, and who waits for one to close.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    open: Cell<u32>,
    /// Requests waiting for a slot now.
    pending: Cell<u32>,
    waiters: RefCell<VecDeque<Waker>>,
}

/// One request counted as waiting for a slot of a cluster, until dropped.
struct Pending(Rc<Slots>);

impl Pending {
    fn new(slots: &Rc<Slots>) -> Pending {
        slots.pending.set(slots.pending.get() + 1);
        Pending(slots.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.set(self.0.pending.get().saturating_sub(1));
    }
}

impl Slots {
    /// Connections of the cluster open now.
    pub(crate) fn open(&self) -> u32 {
        self.open.get()
    }

    /// One connection closed: every waiter looks again (a waiter whose wait timed
    /// out left its waker behind, so waking only the first could wake nobody).
    fn release(&self) {
        self.open.set(self.open.get().saturating_sub(1));
        self.wake_waiters();
    }

    /// Every waiter looks again: a slot came free, or an idle connection of the
    /// cluster that a waiter may close for its own.
    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waiter in waiters {
            waiter.wake();
        }
    }
}

/// A slot of a cluster taken for one connection: given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Rc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// An upstream connection checked out of the pool (or freshly connected), or a
/// stream of a multiplexed HTTP/2 connection.
pub(crate) struct UpstreamConn {
    pub(crate) stream: UpstreamStream,
    pub(crate) addr: SocketAddr,
    /// Whether it served a request before: a reused connection the upstream closed
    /// meanwhile fails without the request having been seen, so it may be retried.
    pub(crate) reused: bool,
    /// Requests it has carried, the one in progress included (HTTP/1.1).
    pub(crate) served: u32,
    /// The local end (for the access log).
    pub(crate) local: Option<SocketAddr>,
    /// The cluster slot it holds while open (an HTTP/2 stream's connection holds
    /// it instead).
    pub(super) slot: Option<Slot>,
    /// Which TLS it speaks ([`tls_id`]) and to which server name: pooled
    /// connections are kept apart by both.
    pub(super) tls_id: usize,
    pub(super) server_name: Option<ServerName<'static>>,
}

/// Tells connections to the same address apart by their TLS: 0 for plain text, else
/// the address of the cluster's rustls config (which each of its sessions holds, so
/// no other config can take that address while one of them is pooled).
pub(crate) fn tls_id(tls: Option<&UpstreamTls>) -> usize {
    tls.map_or(0, |tls| std::sync::Arc::as_ptr(&tls.config) as usize)
}

struct Idle {
    conn: UpstreamConn,
    until: Instant,
}

/// One shard's upstream connections: the idle ones, and the slots of every cluster.
#[derive(Default)]
pub(crate) struct Pool {
    idle: FastMap<(SocketAddr, usize), Vec<Idle>>,
    clusters: FastMap<String, Rc<Slots>>,
    /// The multiplexed HTTP/2 connections.
    pub(super) h2: H2Connections,
}

impl Pool {
    /// An idle connection to `addr` speaking `tls` to `server_name` that may carry a
    /// request: not expired, nothing received from the upstream since its last
    /// response (a close, an error or bytes nobody asked for mean the upstream is done
    /// with it; a TLS session ticket is not such bytes).
    pub(crate) fn take(
        &mut self,
        addr: SocketAddr,
        tls: Option<&UpstreamTls>,
        server_name: Option<&ServerName<'static>>,
    ) -> Option<UpstreamConn> {
        let idle = self.idle.get_mut(&(addr, tls_id(tls)))?;
        let now = uring::now();
        // Newest first; those for other server names stay.
        while let Some(at) = idle
            .iter()
            .rposition(|i| i.conn.server_name.as_ref() == server_name)
        {
            let Idle { mut conn, until } = idle.remove(at);
            if now < until && conn.stream.try_recv().is_none() {
                conn.reused = true;
                conn.served = conn.served.saturating_add(1);
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection whose last exchange ended cleanly, to be kept for
    /// `keep_for` at most.
    pub(crate) fn put(&mut self, conn: UpstreamConn, keep_for: Duration) {
        // An HTTP/2 stream is done; its connection stays with its other streams.
        if keep_for.is_zero() || !conn.stream.is_connection() {
            return;
        }
        // A request waiting for a slot of the full cluster may take this one's.
        if let Some(slot) = &conn.slot {
            slot.0.wake_waiters();
        }
        let idle = self.idle.entry((conn.addr, conn.tls_id)).or_default();
        if idle.len() >= MAX_IDLE_PER_ENDPOINT {
            idle.remove(0);
        }
        idle.push(Idle {
            conn,
            until: uring::now() + keep_for,
        });
    }

    /// Closes the idle connections that expired or that the upstream closed (or sent
    /// something on) while they waited.
    pub(crate) fn sweep(&mut self) {
        let now = uring::now();
        self.h2.sweep(now);
        self.idle.retain(|_, idle| {
            idle.retain(|Idle { conn, until }| now < *until && conn.stream.try_recv().is_none());
            !idle.is_empty()
        });
        // Clusters a reload removed: nothing open, nobody waiting.
        self.clusters
            .retain(|_, slots| slots.open() > 0 || Rc::strong_count(slots) > 1);
    }

    /// The slots of `cluster`.
    pub(crate) fn slots(&mut self, cluster: &str) -> Rc<Slots> {
        if let Some(slots) = self.clusters.get(cluster) {
            return slots.clone();
        }
        let slots = Rc::new(Slots::default());
        self.clusters.insert(cluster.to_owned(), slots.clone());
        slots
    }

    /// Closes one idle connection holding a slot of `slots` (to another endpoint of
    /// the cluster than the one wanted); whether there was one.
    fn close_idle_of(&mut self, slots: &Rc<Slots>) -> bool {
        for idle in self.idle.values_mut() {
            let of = |c: &Idle| {
                c.conn
                    .slot
                    .as_ref()
                    .is_some_and(|s| Rc::ptr_eq(&s.0, slots))
            };
            if let Some(i) = idle.iter().position(of) {
                idle.remove(i);
                return true;
            }
        }
        false
    }
}

/// A slot of `cluster` for a new connection, within this shard's `limit`: at once
/// when one is free or an idle connection of the cluster can be closed for it, else
/// when one comes free within `wait`.
pub(crate) async fn reserve(
    pool: &RefCell<Pool>,
    cluster: &str,
    limits: SlotLimits,
    wait: Duration,
) -> Result<Slot, ConnectError> {
    let nothing = |_: &mut Pool| None::<std::convert::Infallible>;
    match reserve_or(pool, cluster, limits, wait, nothing).await? {
        Ok(slot) => Ok(slot),
        Err(never) => match never {},
    }
}

/// [`reserve`], or what `take` finds in the pool while the request waits (for an
/// HTTP/1.1 request, a connection to its endpoint that came back idle: taken as it
/// is rather than closed for a new one).
pub(crate) async fn reserve_or<T>(
    pool: &RefCell<Pool>,
    cluster: &str,
    limits: SlotLimits,
    wait: Duration,
    mut take: impl FnMut(&mut Pool) -> Option<T>,
) -> Result<Result<Slot, T>, ConnectError> {
    let slots = pool.borrow_mut().slots(cluster);
    let deadline = uring::now() + wait;
    let limit = limits.connections;
    // Counted while this request waits (a waiter's waker may stay queued after it
    // was woken, so the queue's length is not the number waiting).
    let mut pending: Option<Pending> = None;
    loop {
        if pending.is_some()
            && let Some(found) = take(&mut pool.borrow_mut())
        {
            return Ok(Err(found));
        }
        if slots.open() < limit || pool.borrow_mut().close_idle_of(&slots) {
            slots.open.set(slots.open() + 1);
            return Ok(Ok(Slot(slots)));
        }
        if pending.is_none() {
            let waiting = slots.pending.get();
            if waiting >= limits.pending {
                return Err(ConnectError::Overflow {
                    cluster: cluster.to_owned(),
                    limit,
                    waiting: waiting as usize,
                });
            }
            pending = Some(Pending::new(&slots));
        }
        let left = deadline.saturating_duration_since(uring::now());
        let mut queued = false;
        let freed = poll_fn(|cx| {
            if std::mem::replace(&mut queued, true) {
                return Poll::Ready(());
            }
            slots.waiters.borrow_mut().push_back(cx.waker().clone());
            Poll::Pending
        });
        if uring::timeout(left, freed).await.is_err() {
            return Err(ConnectError::NoSlot {
                cluster: cluster.to_owned(),
                after: wait,
            });
        }
    }
}

/// Opens a new connection to an upstream endpoint within `timeout` (the TLS
/// handshake with `server_name` included when the cluster has `tls`), holding `slot`.
pub(crate) async fn connect(
    addr: SocketAddr,
    slot: Slot,
    timeout: Duration,
    tls: Option<(&UpstreamTls, ServerName<'static>)>,
) -> Result<UpstreamConn, ConnectError> {
    let started = uring::now();
    let tcp = connect_tcp(addr, timeout).await?;
    let local = tcp.local_addr().ok();
    let tls_id = tls_id(tls.as_ref().map(|(tls, _)| *tls));
    let (stream, server_name) = match tls {
        None => (UpstreamStream::Tcp(tcp), None),
        Some((tls, name)) => {
            let left = timeout.saturating_sub(uring::now().saturating_duration_since(started));
            let (session, plain) =
                tls_handshake(&tcp, tls, name.clone(), addr, left, timeout).await?;
            let stream = UpstreamStream::Tls(Box::new(TlsUpstream::new(tcp, session, plain)));
            (stream, Some(name))
        }
    };
    Ok(UpstreamConn {
        stream,
        addr,
        reused: false,
        served: 1,
        local,
        slot: Some(slot),
        tls_id,
        server_name,
    })
}

/// The TLS handshake with `server_name` of a new connection to `addr` within `left`
/// (of the cluster's connect `timeout`), and the plaintext that came with it.
pub(super) async fn tls_handshake(
    tcp: &TcpStream,
    tls: &UpstreamTls,
    server_name: ServerName<'static>,
    addr: SocketAddr,
    left: Duration,
    timeout: Duration,
) -> Result<(ClientSession, Vec<u8>), ConnectError> {
    let mut session = ClientSession::new(tls, server_name).map_err(|e| ConnectError::Tls {
        addr,
        reason: client_session::envoy_reason(&e),
        retried: false,
    })?;
    let mut plain = Vec::new();
    match client_session::handshake(tcp, &mut session, &mut plain, left).await {
        Ok(()) => Ok((session, plain)),
        Err(HandshakeError::TimedOut) => Err(ConnectError::TimedOut {
            addr,
            after: timeout,
        }),
        Err(e) => Err(ConnectError::Tls {
            addr,
            reason: e.reason(),
            retried: false,
        }),
    }
}

/// A TCP connection to `addr` (`TCP_NODELAY` on) within `timeout`.
pub(super) async fn connect_tcp(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    match uring::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(source)) => Err(ConnectError::Failed { addr, source }),
        Err(_) => Err(ConnectError::TimedOut {
            addr,
            after: timeout,
        }),
    }
}

/// How long a connection may stay pooled after a response whose `Keep-Alive` header
/// is `keep_alive`: the cluster's idle timeout, or less when the upstream says it
/// closes sooner (`timeout=N`: `N` minus a second, nothing when that is nothing).
pub(crate) fn keep_for(idle_timeout: Duration, keep_alive: Option<&[u8]>) -> Duration {
    let upstream = keep_alive.and_then(|value| {
        value
            .split(|&b| b == b',')
            .filter_map(|param| {
                let param = std::str::from_utf8(param).ok()?.trim();
                let (name, value) = param.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("timeout")
                    .then(|| value.trim().parse::<u64>().ok())?
            })
            .next()
    });
    match upstream {
        Some(seconds) => {
            idle_timeout.min(Duration::from_secs(seconds).saturating_sub(KEEP_ALIVE_MARGIN))
        }
        None => idle_timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_timeouts_shorten_the_idle_timeout() {
        let idle = Duration::from_secs(4);
        assert_eq!(keep_for(idle, None), idle);
        assert_eq!(
            keep_for(idle, Some(b"timeout=2, max=100")),
            Duration::from_secs(1)
        );
        assert_eq!(
            keep_for(idle, Some(b"max=5,Timeout = 3")),
            Duration::from_secs(2)
        );
        assert_eq!(keep_for(idle, Some(b"timeout=60")), idle);
        assert_eq!(keep_for(idle, Some(b"timeout=1")), Duration::ZERO);
        assert_eq!(keep_for(idle, Some(b"timeout=x")), idle);
    }

    #[test]
    fn a_shard_gets_its_share_of_max_connections() {
        let policy = |max| PoolPolicy {
            max_connections: max,
            ..PoolPolicy::default()
        };
        let connections = |max, shards| policy(max).shard_limits(shards).connections;
        assert_eq!(connections(10, 2), 5);
        assert_eq!(connections(11, 2), 6);
        assert_eq!(connections(1, 4), 1);
        assert_eq!(connections(1024, 0), 1024);
        let limited = PoolPolicy::from_rule(Some(&ConnectionPool {
            requests: crate::config::RequestLimits {
                max_pending: Some(3),
                max_requests_per_connection: Some(2),
                max_retries: Some(5),
                max_requests: Some(4),
            },
            ..ConnectionPool::default()
        }));
        assert_eq!(limited.shard_limits(2).pending, 2);
        assert_eq!(limited.shard_retries(2), 3);
        assert_eq!(limited.shard_requests(3), 2);
        assert!(limited.reusable_after(1));
        assert!(!limited.reusable_after(2));
        assert!(PoolPolicy::default().reusable_after(u32::MAX));
        assert_eq!(
            PoolPolicy::default().shard_limits(2).pending,
            MAX_PENDING / 2
        );
        assert_eq!(PoolPolicy::default().shard_retries(3), u32::MAX.div_ceil(3));
        assert_eq!(
            PoolPolicy::default().max_connections,
            DEFAULT_MAX_CONNECTIONS
        );
    }
}
