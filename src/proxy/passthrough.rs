//! A TLS passthrough or TCP connection's life: bytes relayed untouched between the
//! client and one upstream connection.
//!
//! ```text
//! accept ─▶ TLS passthrough? receive the ClientHello (under --header-timeout), its SNI
//!   │                        └─ not TLS, a hello that does not parse ─▶ close
//!   └─▶ route: the port's L4Table (SNI, or the TCP port's one route) ─ none ─▶ close (NR)
//!         ─▶ a cluster by weight ─▶ an endpoint by its balancer ─ none ─▶ close (UH)
//!         ─▶ a cluster slot (maxConnections) ─ full ─▶ close (UO)
//!         ─▶ connect (connectTimeout) ─ failed ─▶ close (UF)
//!         ─▶ the bytes already read go first, then both ways until both sides closed
//!            (a FIN one way is passed on: half-close), one fails, or nothing moved
//!            either way for --idle-timeout.
//! ```
//!
//! As Envoy's tcp_proxy: a TCP port connects at once (server-first protocols work), a
//! connection is never pooled or reused, a hello without SNI is routed by a `*` route
//! only, and bytes that are not a ClientHello close the connection. Each
//! direction has one receive and one send in flight at most; the receive buffer from
//! the shard's buffer ring is sent as it is (no copy in user space), and the multishot
//! receive stops after a few unread chunks, so a side that does not read holds the
//! other back through TCP flow control instead of filling memory. The connection
//! writes one access-log line (Istio's TCP fields: bytes each way, duration, upstream
//! host and cluster, the SNI as requested server name, a response flag) and counts its
//! outcome in `ringress_l4_connections_total`.

use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::downstream::{HandshakeError, receive_client_hello};
use crate::access_log::{Field, Record};
use crate::config::Protocol;
use crate::shard::{ShardContext, ShardStats};
use crate::snapshot::Snapshot;
use crate::tls::ClientHelloError;
use crate::upstream::{UpstreamStream, pool};
use crate::uring::{self, TcpStream};

/// The outcomes `ringress_l4_connections_total` counts, by label.
pub(crate) const L4_OUTCOMES: [&str; 8] = [
    "relayed",
    "no_route",
    "no_healthy_upstream",
    "upstream_overflow",
    "upstream_connect_failed",
    "bad_client_hello",
    "hello_timeout",
    "client_closed",
];

/// Why a relayed connection ended.
#[derive(Debug)]
enum RelayEnd {
    /// Both sides closed their sending side.
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// A receive or send on the client failed (a reset, the send timeout).
    Client(io::Error),
    /// A receive or send on the upstream failed.
    Upstream(io::Error),
}

impl std::fmt::Display for RelayEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayEnd::Closed => f.write_str("both sides closed"),
            RelayEnd::Idle => f.write_str("no bytes either way for the idle timeout"),
            RelayEnd::Client(e) => write!(f, "the client connection failed: {e}"),
            RelayEnd::Upstream(e) => write!(f, "the upstream connection failed: {e}"),
        }
    }
}

/// Bytes relayed each way.
#[derive(Debug, Default)]
struct Counts {
    to_upstream: Cell<u64>,
    to_client: Cell<u64>,
}

/// Serves one accepted connection of a TLS passthrough or TCP listener.
pub(crate) async fn serve(client: TcpStream, peer: SocketAddr, port: u16, ctx: Rc<ShardContext>) {
    let snapshot = ctx.snapshot();
    let mut record = ctx.access_log.is_on().then(|| Record::start(peer));
    if let Some(record) = record.as_deref_mut() {
        record.downstream_local = client.local_addr().ok();
    }
    let timeouts = ctx.settings.timeouts;
    client.set_send_timeout(timeouts.idle);
    let passthrough = snapshot
        .listeners
        .iter()
        .find(|l| l.port() == port)
        .is_some_and(|l| l.protocol == Protocol::TlsPassthrough);

    let mut first = Vec::new();
    let mut sni = None;
    let mut outcome = "relayed";
    if passthrough {
        let hello = receive_client_hello(&client, &mut first);
        match uring::timeout(timeouts.header, hello).await {
            Ok(Ok(hello)) => sni = hello.server_name,
            // A name rustls would refuse (an underscore...) still picks the route: Envoy's
            // tls_inspector (BoringSSL) takes any name without a NUL byte.
            Ok(Err(HandshakeError::ClientHello(ClientHelloError::InvalidServerName(name))))
                if !name.contains('\0') =>
            {
                sni = Some(name.to_ascii_lowercase());
            }
            // Not TLS, or a hello that does not parse: closed, as tls_inspector does.
            Ok(Err(HandshakeError::ClientHello(error))) => {
                tracing::debug!(port, %peer, %error, "not a ClientHello");
                outcome = "bad_client_hello";
            }
            Ok(Err(_)) => outcome = "client_closed",
            Err(_) => outcome = "hello_timeout",
        }
    }
    if let Some(record) = record.as_deref_mut() {
        if let Some(name) = &sni {
            record.set(Field::ServerName, name.as_bytes());
        }
        if outcome != "relayed" {
            record.details = Some(outcome);
        }
    }
    let relayed = match outcome {
        "relayed" => {
            connect_and_relay(
                &ctx,
                snapshot,
                port,
                &client,
                sni.as_deref(),
                first,
                &mut record,
            )
            .await
        }
        other => Err(other),
    };
    let outcome = match relayed {
        Ok(counts) => {
            ShardStats::add_n(&ctx.stats.l4_bytes_received, counts.to_upstream.get());
            ShardStats::add_n(&ctx.stats.l4_bytes_sent, counts.to_client.get());
            if let Some(record) = record.as_deref_mut() {
                record.bytes_received = counts.to_upstream.get();
                record.bytes_sent = counts.to_client.get();
            }
            "relayed"
        }
        Err(outcome) => outcome,
    };
    if let Some(i) = L4_OUTCOMES.iter().position(|o| *o == outcome) {
        ShardStats::add(&ctx.stats.l4[i]);
    }
    // A connection closed before its first byte is a TCP health check: not logged.
    if let Some(record) = record
        && outcome != "client_closed"
    {
        ctx.log_request(&record);
        Record::recycle(record);
    }
}

/// Routes the connection, connects to the upstream and relays; the bytes relayed, or
/// the outcome label of why no upstream took the connection.
async fn connect_and_relay(
    ctx: &ShardContext,
    snapshot: Arc<Snapshot>,
    port: u16,
    client: &TcpStream,
    sni: Option<&str>,
    first: Vec<u8>,
    record: &mut Option<Box<Record>>,
) -> Result<Counts, &'static str> {
    let flag = |record: &mut Option<Box<Record>>, flag, details| {
        if let Some(record) = record.as_deref_mut() {
            record.flags = flag;
            record.details = Some(details);
        }
    };
    let Some(target) = snapshot.l4_routes.get(&port).and_then(|t| t.find(sni)) else {
        flag(record, "NR", "filter_chain_not_found");
        return Err("no_route");
    };
    let cluster_id = target.clusters.pick();
    let cluster = snapshot.clusters.get(cluster_id);
    if let Some(record) = record.as_deref_mut() {
        record.set(Field::UpstreamCluster, cluster.istio_name.as_bytes());
        let name = format!(
            "{}.{}[{}]",
            target.virtual_service, target.section, target.rule
        );
        record.set(Field::RouteName, name.as_bytes());
    }
    // consistentHash's useSourceIp (the only key a byte stream has), as Envoy's TCP
    // proxy hashes.
    let hash = match cluster.hash.as_deref() {
        Some(table) => client
            .peer_addr()
            .ok()
            .and_then(|p| table.connection_hash(p)),
        None => None,
    };
    let Some((endpoint, addr)) = ctx.pick_endpoint(&snapshot, cluster_id, hash) else {
        flag(record, "UH", "no_healthy_upstream");
        return Err("no_healthy_upstream");
    };
    if let Some(record) = record.as_deref_mut() {
        record.upstream_host = Some(addr);
    }
    let limits = cluster.pool.shard_limits(ctx.shards);
    // As Envoy's tcp_proxy, a full cluster refuses at once (no queue of connections).
    let connected = match pool::reserve(&ctx.pool, &cluster.name, limits, Duration::ZERO).await {
        // Never TLS of ringress's: the cluster of an L4 route has none (`Clusters::build`).
        Ok(slot) => pool::connect(addr, slot, cluster.pool.connect_timeout, None)
            .await
            .map_err(|e| {
                ShardStats::add(&ctx.stats.upstream_connect_failures);
                ("UF", "upstream_connect_failed", e)
            }),
        Err(e) => {
            ShardStats::add(&ctx.stats.upstream_overflows);
            Err(("UO", "upstream_overflow", e))
        }
    };
    let upstream = match connected {
        Ok(upstream) => upstream,
        Err((f, outcome, error)) => {
            ctx.finished(&snapshot, cluster_id, endpoint);
            tracing::debug!(port, %addr, %error, "no upstream connection");
            flag(record, f, outcome);
            return Err(outcome);
        }
    };
    if let Some(record) = record.as_deref_mut() {
        record.upstream_local = upstream.local;
    }
    // A relay may last for hours: it keeps no snapshot (a reload frees the old one).
    let generation = snapshot.generation;
    drop(snapshot);
    let counts = Counts::default();
    let end = match &upstream.stream {
        UpstreamStream::Tcp(up) => {
            up.set_send_timeout(ctx.settings.timeouts.idle);
            relay(client, up, first, ctx.settings.timeouts.idle, &counts).await
        }
        _ => RelayEnd::Upstream(io::Error::other("not a TCP connection")),
    };
    let now = ctx.snapshot();
    if now.generation == generation {
        ctx.finished(&now, cluster_id, endpoint);
    }
    let details = match &end {
        RelayEnd::Closed => None,
        RelayEnd::Idle => Some("idle_timeout"),
        RelayEnd::Client(_) => Some("downstream_connection_failure"),
        RelayEnd::Upstream(_) => {
            flag(record, "UC", "upstream_connection_termination");
            Some("upstream_connection_termination")
        }
    };
    if let (Some(record), Some(details)) = (record.as_deref_mut(), details) {
        record.details = Some(details);
    }
    tracing::debug!(port, %addr, %end, "relay ended");
    Ok(counts)
}

/// Relays between `client` and `upstream` (sending `first`, the client bytes already
/// read, ahead) until both sides have closed, one fails, or nothing moved either way
/// for `idle`.
async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    first: Vec<u8>,
    idle: Duration,
    counts: &Counts,
) -> RelayEnd {
    let moved = Cell::new(uring::now());
    let up = pin!(async {
        if !first.is_empty() {
            let n = first.len() as u64;
            let (sent, _) = upstream.send_all(first).await;
            sent.map_err(RelayEnd::Upstream)?;
            counts.to_upstream.set(n);
            moved.set(uring::now());
        }
        copy(
            client,
            upstream,
            &moved,
            &counts.to_upstream,
            RelayEnd::Client,
            RelayEnd::Upstream,
        )
        .await
    });
    let down = pin!(copy(
        upstream,
        client,
        &moved,
        &counts.to_client,
        RelayEnd::Upstream,
        RelayEnd::Client,
    ));
    let quiet = pin!(idle_timer(idle, &moved));
    let (mut up, mut down, mut quiet) = (Some(up), Some(down), quiet);
    poll_fn(|cx| {
        if let Some(end) = poll_direction(&mut up, cx).or_else(|| poll_direction(&mut down, cx)) {
            return Poll::Ready(end);
        }
        if up.is_none() && down.is_none() {
            return Poll::Ready(RelayEnd::Closed);
        }
        quiet.as_mut().poll(cx).map(|()| RelayEnd::Idle)
    })
    .await
}

/// Polls one direction while it runs: `Some` when it failed (the relay ends); it is
/// set to `None` once it ended either way.
fn poll_direction<F: Future<Output = Result<(), RelayEnd>>>(
    direction: &mut Option<Pin<&mut F>>,
    cx: &mut Context<'_>,
) -> Option<RelayEnd> {
    let fut = direction.as_mut()?;
    let Poll::Ready(done) = fut.as_mut().poll(cx) else {
        return None;
    };
    *direction = None;
    done.err()
}

/// One direction: what `from` sends goes to `to` until `from` closes its sending side,
/// which is passed on to `to` (half-close).
async fn copy(
    from: &TcpStream,
    to: &TcpStream,
    moved: &Cell<Instant>,
    count: &Cell<u64>,
    from_failed: fn(io::Error) -> RelayEnd,
    to_failed: fn(io::Error) -> RelayEnd,
) -> Result<(), RelayEnd> {
    loop {
        let data = from.recv().await.map_err(from_failed)?;
        if data.is_empty() {
            // The peer may already be gone; its own direction reports that.
            let _ = to.shutdown_write();
            return Ok(());
        }
        let n = data.len() as u64;
        let (sent, _) = to.send_all(data).await;
        sent.map_err(to_failed)?;
        count.set(count.get() + n);
        moved.set(uring::now());
    }
}

/// Completes once nothing has moved for `idle` since `moved` (re-armed for what is
/// left whenever bytes moved meanwhile).
async fn idle_timer(idle: Duration, moved: &Cell<Instant>) {
    loop {
        let quiet = uring::now().saturating_duration_since(moved.get());
        if quiet >= idle {
            return;
        }
        uring::sleep(idle - quiet).await;
    }
}
