//! HTTP/2 to upstreams: a cluster whose port speaks HTTP2 or GRPC (or whose
//! DestinationRule says `h2UpgradePolicy: UPGRADE`) gets its requests as streams of a
//! few multiplexed h2c connections per shard and endpoint, not one connection per
//! request in flight.
//!
//! Each connection ([`H2Conn`]) is a task of the shard: it connects, says the
//! HTTP/2 preface, and from then on moves bytes between the socket and the `h2`
//! client connection through an in-memory [`Pipe`] ([`pipe::pump`], as client
//! connections do). A request leases a stream on the first connection to its
//! endpoint with room: fewer streams open than the upstream's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` (until a connection's SETTINGS arrive, what the
//! endpoint's other connections were told, else 100). When none has
//! room, a new connection is opened, within the cluster's `maxConnections` like any
//! other; requests that arrive while it is being opened wait for it rather than
//! opening their own (and look again, one of them opening the next, if the request
//! opening it goes away or finds the cluster full before it connects). A connection with no stream for the cluster's idle timeout is
//! closed (GOAWAY) by the pool's sweep; one the upstream closes or sends GOAWAY on
//! takes no new stream.
//!
//! The request itself is an [`H2Exchange`] ([`exchange`]).

mod exchange;

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use rustls::pki_types::ServerName;

pub(crate) use exchange::H2Exchange;

use super::pool::{self, ConnectError, Pool, Slot, SlotLimits};
use super::{Cluster, UpstreamConn, UpstreamStream};
use crate::fast_hash::FastMap;
use crate::pipe::{self, Pipe};
use crate::tls::client_config::UpstreamTls;
use crate::uring;

/// Streams a connection is assumed to take before the upstream's SETTINGS say how
/// many (h2's own default, and what most servers announce).
const INITIAL_MAX_STREAMS: usize = 100;
/// The receive window of each stream, and of a whole connection: a response body
/// streams at loopback speed without a WINDOW_UPDATE round trip per 64 KiB, and a
/// client that reads slowly holds at most this much per stream in `h2`.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// The largest response header list accepted: the HTTP/1.1 head limit.
const MAX_HEADER_LIST_SIZE: u32 = crate::http::limits::MAX_HEAD_BYTES as u32;

/// One upstream HTTP/2 connection, as requests and the pool see it.
pub(crate) struct H2Conn {
    addr: SocketAddr,
    /// Its TLS (`pool::tls_id`) and server name: connections to one address are kept
    /// apart by both.
    tls_id: usize,
    server_name: Option<ServerName<'static>>,
    /// Streams it takes until the upstream's SETTINGS say.
    assumed_max: usize,
    /// The upstream's SETTINGS arrived: `h2` knows its limit.
    settled: Cell<bool>,
    /// Streams leased on it now.
    active: Cell<usize>,
    /// Streams it has carried.
    served: Cell<u64>,
    /// `maxRequestsPerConnection`: streams it carries at most; then it takes no new
    /// one and closes when the last ends.
    max_served: Option<u64>,
    state: RefCell<ConnState>,
    /// Since when no stream was leased (meaningful while `active` is 0).
    idle_since: Cell<Instant>,
    keep_for: Duration,
}

enum ConnState {
    /// Being connected: these requests wait.
    Connecting(Vec<Waker>),
    Open {
        send: SendRequest<Bytes>,
        local: Option<SocketAddr>,
    },
    /// The connect failed (what waiting requests are told).
    Failed(Failure),
    /// Never connected: the request opening it went away, or found its cluster
    /// full, before its task began. Waiting requests look again.
    Abandoned,
    /// Closed, or closing: no new stream.
    Closed,
}

#[derive(Debug, Clone)]
enum Failure {
    Io(io::ErrorKind, String),
    TimedOut(Duration),
    /// The TLS handshake failed: Envoy's transport failure reason.
    Tls(String),
}

impl H2Conn {
    /// The upstream's SETTINGS_MAX_CONCURRENT_STREAMS, once its SETTINGS arrived.
    fn announced_max(&self) -> Option<usize> {
        match &*self.state.borrow() {
            ConnState::Open { send, .. } if self.settled.get() => {
                Some(send.current_max_send_streams())
            }
            _ => None,
        }
    }

    fn usable(&self) -> bool {
        let max = match &*self.state.borrow() {
            ConnState::Connecting(_) | ConnState::Open { .. } => {
                self.announced_max().unwrap_or(self.assumed_max)
            }
            ConnState::Failed(_) | ConnState::Abandoned | ConnState::Closed => return false,
        };
        self.active.get() < max && !self.used_up()
    }

    /// It has carried its `maxRequestsPerConnection` streams.
    fn used_up(&self) -> bool {
        self.max_served.is_some_and(|max| self.served.get() >= max)
    }

    fn settle(&self, state: ConnState) {
        let before = std::mem::replace(&mut *self.state.borrow_mut(), state);
        if let ConnState::Connecting(waiters) = before {
            waiters.into_iter().for_each(Waker::wake);
        }
    }

    fn fail(&self, e: &ConnectError) {
        let failure = match e {
            ConnectError::TimedOut { after, .. } => Failure::TimedOut(*after),
            ConnectError::Failed { source, .. } => Failure::Io(source.kind(), source.to_string()),
            ConnectError::Tls { reason, .. } => Failure::Tls(reason.clone()),
            other => Failure::Io(io::ErrorKind::Other, other.to_string()),
        };
        self.settle(ConnState::Failed(failure));
    }

    /// Closes the connection to new streams; the `h2` connection ends (GOAWAY) once
    /// the streams in flight are done.
    fn close(&self) {
        self.settle(ConnState::Closed);
    }
}

/// A stream's place on a connection; given back when dropped.
pub(crate) struct Lease(Rc<H2Conn>);

impl Lease {
    /// Whether its connection speaks TLS (the requests' `:scheme` is then `https`).
    pub(super) fn over_tls(&self) -> bool {
        self.0.tls_id != 0
    }

    fn new(conn: Rc<H2Conn>) -> Lease {
        conn.active.set(conn.active.get() + 1);
        conn.served.set(conn.served.get() + 1);
        Lease(conn)
    }

    /// Takes the connection out of service: no new stream goes on it.
    pub(super) fn retire(&self) {
        if matches!(*self.0.state.borrow(), ConnState::Open { .. }) {
            self.0.close();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let active = self.0.active.get().saturating_sub(1);
        self.0.active.set(active);
        if active == 0 {
            self.0.idle_since.set(uring::now());
            if self.0.used_up() {
                self.retire();
            }
        }
    }
}

/// One shard's HTTP/2 upstream connections, by endpoint.
#[derive(Default)]
pub(crate) struct H2Connections {
    by_addr: FastMap<(SocketAddr, usize), Vec<Rc<H2Conn>>>,
    /// The last `SETTINGS_MAX_CONCURRENT_STREAMS` each endpoint announced.
    known_max: FastMap<SocketAddr, usize>,
}

impl H2Connections {
    /// A stream on a connection to `addr` speaking TLS `tls_id` to `server_name`
    /// with room, if there is one.
    fn lease(
        &mut self,
        addr: SocketAddr,
        tls_id: usize,
        server_name: Option<&ServerName<'static>>,
    ) -> Option<Lease> {
        let conns = self.by_addr.get(&(addr, tls_id))?;
        let mut found = None;
        for conn in conns {
            // What the endpoint announced, for the connections opened next.
            if let Some(max) = conn.announced_max() {
                self.known_max.insert(addr, max);
            }
            if found.is_none() && conn.server_name.as_ref() == server_name && conn.usable() {
                found = Some(conn);
            }
        }
        found.map(|conn| Lease::new(conn.clone()))
    }

    /// Streams a new connection to `addr` takes before its SETTINGS arrive.
    fn assumed_max(&self, addr: SocketAddr) -> usize {
        self.known_max
            .get(&addr)
            .copied()
            .unwrap_or(INITIAL_MAX_STREAMS)
    }

    fn insert(&mut self, conn: Rc<H2Conn>) {
        self.by_addr
            .entry((conn.addr, conn.tls_id))
            .or_default()
            .push(conn);
    }

    /// Forgets failed and closed connections, and closes those idle longer than
    /// their cluster's idle timeout.
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.by_addr.retain(|_, conns| {
            conns.retain(|conn| {
                let idle = conn.active.get() == 0
                    && now.saturating_duration_since(conn.idle_since.get()) >= conn.keep_for;
                let open = match &*conn.state.borrow() {
                    ConnState::Connecting(_) => true,
                    ConnState::Open { .. } => !idle,
                    ConnState::Failed(_) | ConnState::Abandoned | ConnState::Closed => false,
                };
                if !open {
                    conn.close();
                }
                open
            });
            !conns.is_empty()
        });
        let by_addr = &self.by_addr;
        self.known_max
            .retain(|addr, _| by_addr.keys().any(|(a, _)| a == addr));
    }
}

/// Abandons a connection still being opened when the request opening it goes away
/// before its task is started: the requests waiting for it look again.
struct Opening(Option<Rc<H2Conn>>);

impl Drop for Opening {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            conn.settle(ConnState::Abandoned);
        }
    }
}

/// Why a leased stream's connection cannot take it.
enum NotOpen {
    Failed(Failure),
    /// No slot of the cluster for a new connection.
    Cluster(ConnectError),
    /// It was abandoned before connecting: lease again.
    Abandoned,
}

/// A stream to `addr` of `cluster` (HTTP/2; over TLS to `server_name` when the
/// cluster has TLS): on a connection with room, or on a new one (this shard's `limit`
/// of the cluster's connections), within `wait`.
pub(crate) async fn stream(
    pool: &RefCell<Pool>,
    cluster: &Cluster,
    addr: SocketAddr,
    server_name: Option<ServerName<'static>>,
    limits: SlotLimits,
    wait: Duration,
) -> Result<UpstreamConn, ConnectError> {
    let deadline = uring::now() + wait;
    let (lease, (send, local)) = loop {
        let left = deadline.saturating_duration_since(uring::now());
        match lease_open(pool, cluster, addr, server_name.as_ref(), limits, left).await {
            Ok(leased) => break leased,
            Err(NotOpen::Abandoned) => continue,
            Err(NotOpen::Failed(Failure::TimedOut(after))) => {
                return Err(ConnectError::TimedOut { addr, after });
            }
            Err(NotOpen::Failed(Failure::Tls(reason))) => {
                let retried = false;
                return Err(ConnectError::Tls {
                    addr,
                    reason,
                    retried,
                });
            }
            Err(NotOpen::Failed(Failure::Io(kind, message))) => {
                let source = io::Error::new(kind, message);
                return Err(ConnectError::Failed { addr, source });
            }
            Err(NotOpen::Cluster(e)) => return Err(e),
        }
    };
    Ok(UpstreamConn {
        stream: UpstreamStream::H2(Box::new(H2Exchange::new(send, lease))),
        addr,
        // A stream is never stale: one the upstream did not process is refused
        // (REFUSED_STREAM, GOAWAY), and retried as `refused-stream`.
        reused: false,
        served: 1,
        local,
        slot: None,
        tls_id: 0,
        server_name: None,
    })
}

/// One try of [`stream`]: a lease on a connection with room or a new one, and the
/// connection's handle once it is open, within `wait`.
async fn lease_open(
    pool: &RefCell<Pool>,
    cluster: &Cluster,
    addr: SocketAddr,
    server_name: Option<&ServerName<'static>>,
    limits: SlotLimits,
    wait: Duration,
) -> Result<(Lease, (SendRequest<Bytes>, Option<SocketAddr>)), NotOpen> {
    let deadline = uring::now() + wait;
    let tls_id = pool::tls_id(cluster.tls.as_deref());
    let leased = pool.borrow_mut().h2.lease(addr, tls_id, server_name);
    let lease = match leased {
        Some(lease) => lease,
        None => {
            let assumed_max = pool.borrow().h2.assumed_max(addr);
            let conn = Rc::new(H2Conn {
                addr,
                tls_id,
                server_name: server_name.cloned(),
                assumed_max,
                settled: Cell::new(false),
                active: Cell::new(0),
                served: Cell::new(0),
                max_served: cluster.pool.max_requests_per_connection.map(u64::from),
                state: RefCell::new(ConnState::Connecting(Vec::new())),
                idle_since: Cell::new(uring::now()),
                keep_for: cluster.pool.idle_timeout,
            });
            pool.borrow_mut().h2.insert(conn.clone());
            let lease = Lease::new(conn.clone());
            let mut opening = Opening(Some(conn.clone()));
            let slot = match pool::reserve(pool, &cluster.name, limits, wait).await {
                Ok(slot) => slot,
                Err(e) => {
                    // Those waiting for it try for a slot themselves.
                    return Err(NotOpen::Cluster(e));
                }
            };
            opening.0 = None;
            let tls = cluster.tls.clone().zip(server_name.cloned());
            uring::spawn(run(conn, slot, cluster.pool.connect_timeout, tls));
            lease
        }
    };
    let conn = lease.0.clone();
    let left = deadline.saturating_duration_since(uring::now());
    let opened = poll_fn(|cx| match &mut *conn.state.borrow_mut() {
        ConnState::Connecting(waiters) => {
            waiters.push(cx.waker().clone());
            Poll::Pending
        }
        ConnState::Open { send, local } => Poll::Ready(Ok((send.clone(), *local))),
        ConnState::Failed(failure) => Poll::Ready(Err(NotOpen::Failed(failure.clone()))),
        ConnState::Abandoned => Poll::Ready(Err(NotOpen::Abandoned)),
        ConnState::Closed => Poll::Ready(Err(NotOpen::Failed(Failure::Io(
            io::ErrorKind::ConnectionReset,
            "the connection closed before its first stream".to_owned(),
        )))),
    });
    match uring::timeout(left, opened).await {
        Ok(Ok(open)) => Ok((lease, open)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(NotOpen::Failed(Failure::TimedOut(wait))),
    }
}

/// A connection's task: connects, opens HTTP/2, and runs the connection until it
/// ends (closed by the pool, by the upstream, or failed), holding its cluster `slot`.
async fn run(
    conn: Rc<H2Conn>,
    slot: Slot,
    connect_timeout: Duration,
    tls: Option<(Arc<UpstreamTls>, ServerName<'static>)>,
) {
    let addr = conn.addr;
    let started = uring::now();
    let tcp = match pool::connect_tcp(addr, connect_timeout).await {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::debug!(%addr, error = %e, "HTTP/2 upstream connect failed");
            conn.fail(&e);
            return;
        }
    };
    // The TLS handshake takes what the connect left of the connect timeout.
    let mut session = None;
    let mut early = Vec::new();
    if let Some((tls, name)) = tls {
        let left = connect_timeout.saturating_sub(uring::now().saturating_duration_since(started));
        match pool::tls_handshake(&tcp, &tls, name, addr, left, connect_timeout).await {
            Ok((tls_session, plain)) => {
                session = Some(tls_session);
                early = plain;
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "HTTP/2 upstream TLS handshake failed");
                conn.fail(&e);
                return;
            }
        }
    }
    let local = tcp.local_addr().ok();
    let pipe = Pipe::default();
    if !early.is_empty() {
        pipe.push_inbound(&early);
    }
    let handshake = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_max_send_streams(conn.assumed_max)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(pipe::OUT_LIMIT)
        .enable_push(false)
        .handshake::<_, Bytes>(pipe.clone());
    // The handshake only writes the preface and SETTINGS into the pipe: it is done
    // in its first poll.
    let mut handshake = pin!(handshake);
    let made = poll_fn(|cx| Poll::Ready(handshake.as_mut().poll(cx))).await;
    let (send, connection) = match made {
        Poll::Ready(Ok(made)) => made,
        Poll::Ready(Err(e)) => {
            let source = io::Error::other(e);
            conn.fail(&ConnectError::Failed { addr, source });
            return;
        }
        Poll::Pending => {
            let source = io::Error::other("the HTTP/2 handshake did not complete at once");
            conn.fail(&ConnectError::Failed { addr, source });
            return;
        }
    };
    conn.settle(ConnState::Open { send, local });
    let mut connection = pin!(connection);
    let session = session.as_mut().map(|s| s as &mut dyn pipe::PumpTls);
    let pumped = pipe::pump(&tcp, session, &pipe, pipe::PumpUntil::EitherEnds, |cx| {
        let polled = connection.as_mut().poll(cx);
        if !conn.settled.get() && pipe.first_frame_read() {
            conn.settled.set(true);
        }
        polled.map(|ended| {
            if let Err(e) = ended {
                tracing::debug!(%addr, error = %e, "HTTP/2 upstream connection ended");
            }
        })
    })
    .await;
    if let Err(pipe::PumpError::Io(e)) = pumped {
        tracing::debug!(%addr, error = %e, "HTTP/2 upstream connection failed");
    }
    conn.close();
    drop(slot);
}

#[cfg(test)]
mod tests {
    use std::pin::{Pin, pin};

    use super::*;
    use crate::config::LoadBalancer;
    use crate::upstream::{PoolPolicy, UpstreamProtocol};
    use crate::uring::{RingOptions, Runtime};

    /// Polls `fut` once.
    async fn poll_once<F: Future>(mut fut: Pin<&mut F>) {
        poll_fn(|cx| {
            let _ = fut.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
    }

    #[test]
    fn requests_waiting_on_an_abandoned_connection_open_their_own() {
        let runtime = Runtime::new(RingOptions::default()).expect("ring");
        // The kernel completes connects into the backlog: nobody needs to accept.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cluster = Cluster {
            name: "h2:80".to_owned(),
            istio_name: "outbound|80||h2".to_owned(),
            host: "h2".to_owned(),
            port: 80,
            subset: None,
            endpoints: vec![addr],
            lb: LoadBalancer::RoundRobin,
            pool: PoolPolicy::default(),
            protocol: UpstreamProtocol::Http2,
            tls: None,
            hash: None,
            health: std::sync::Arc::new(crate::upstream::health::EndpointHealth::new(
                1, None, None,
            )),
        };
        let pool = RefCell::new(Pool::default());
        let wait = Duration::from_secs(5);
        let one = SlotLimits {
            connections: 1,
            pending: 1024,
        };
        runtime.block_on(async {
            // The cluster's one slot is taken: the first request waits for it, with
            // its connection registered, and the second waits on that connection.
            let held = pool::reserve(&pool, &cluster.name, one, wait)
                .await
                .unwrap();
            let mut first = Box::pin(stream(&pool, &cluster, addr, None, one, wait));
            poll_once(first.as_mut()).await;
            let mut second = pin!(stream(&pool, &cluster, addr, None, one, wait));
            poll_once(second.as_mut()).await;
            // The first goes away before connecting; the slot comes free.
            drop(first);
            drop(held);
            let conn = second.await.expect("the second request opens a connection");
            assert_eq!(conn.addr, addr);
            assert!(matches!(conn.stream, UpstreamStream::H2(_)));
        });
    }
}
