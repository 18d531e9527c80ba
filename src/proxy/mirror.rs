//! Request mirroring (Envoy's `request_mirror_policies`, Istio's `mirror`,
//! `mirrorPercentage` and `mirrors[]`): for each mirror of the matched rule whose
//! share is drawn, a copy of the request as it goes to the primary upstream is sent
//! to the mirror's cluster by a task of its own, fire and forget.
//!
//! - The copy is the head ringress writes for the upstream (route header operations,
//!   `x-forwarded-*`, `x-request-id` included) with Envoy's shadow host: `-shadow`
//!   appended to the host, before its port (`shop.example.com:8080` →
//!   `shop.example.com-shadow:8080`), and the body.
//! - The copy is sent once the request is whole, as Envoy's shadowing does: at once
//!   when the body came with the head, else once the rest of the body went to the
//!   primary (a copy of it kept meanwhile, [`Pending`]). A request over
//!   [`MAX_MIRRORED_REQUEST`] bytes, one whose body did not go out whole (the primary
//!   answered first), an upgrade, or a copy over the shard's [`MAX_MIRRORS_IN_FLIGHT`]
//!   is not mirrored and counted as skipped.
//! - The task holds the copy, a connection from the shard's pool for the mirror's
//!   cluster (its connection cap applies), and one receive at a time: the response is
//!   read to its end and discarded. The whole exchange is bounded by the route's
//!   `timeout` or, without one, `--idle-timeout`. Its failure is counted and logged
//!   at debug, and touches nothing else: the primary request never waits for it.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::forward::checkout;
use crate::http::{self, BodyFramer, BodyKind, HttpError};
use crate::route::Route;
use crate::shard::{ShardContext, ShardStats};
use crate::snapshot::Snapshot;
use crate::upstream::{Cluster, ClusterId, ConnectError, pool};
use crate::uring;

/// Mirrored requests one shard has in flight at most; more are skipped.
pub(crate) const MAX_MIRRORS_IN_FLIGHT: usize = 1024;

/// The largest request (head and body) that is copied to a mirror.
pub(crate) const MAX_MIRRORED_REQUEST: usize = 64 * 1024;

thread_local! {
    /// The mirror tasks of this shard's thread in flight.
    static IN_FLIGHT: Cell<usize> = const { Cell::new(0) };
}

/// Why a mirrored request failed.
#[derive(Debug, Error)]
enum MirrorError {
    #[error("cluster {0} has no endpoint")]
    NoEndpoint(String),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("mirror upstream {addr}: {source}")]
    Io {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("mirror upstream {0} closed before its response ended")]
    Closed(std::net::SocketAddr),
    #[error("mirror upstream {addr} sent an invalid response: {source}")]
    BadResponse {
        addr: std::net::SocketAddr,
        source: HttpError,
    },
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

/// Counts a mirror task in flight until dropped (done, timed out or dropped with the
/// shard).
struct InFlight;

impl InFlight {
    fn enter() -> Option<InFlight> {
        IN_FLIGHT.with(|n| {
            (n.get() < MAX_MIRRORS_IN_FLIGHT).then(|| {
                n.set(n.get() + 1);
                InFlight
            })
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// The copies of a request whose body is still on its way: the bytes forwarded so
/// far, kept while they stay within [`MAX_MIRRORED_REQUEST`]. Dropped unsent, its
/// copies count as skipped.
pub(super) struct Pending {
    ctx: Rc<ShardContext>,
    snapshot: Arc<Snapshot>,
    clusters: Vec<ClusterId>,
    request: Vec<u8>,
    method: &'static str,
    limit: Duration,
}

impl Pending {
    /// Adds body bytes as forwarded; `false` (and the copy is given up) past the
    /// limit.
    pub(super) fn extend(&mut self, bytes: &[u8]) -> bool {
        if self.request.len() + bytes.len() > MAX_MIRRORED_REQUEST {
            return false;
        }
        self.request.extend_from_slice(bytes);
        true
    }

    /// The body went out whole (`complete`): the copies are sent; else skipped.
    pub(super) fn finish(mut self, complete: bool) {
        if complete {
            let clusters = std::mem::take(&mut self.clusters);
            let request = std::mem::take(&mut self.request);
            for cluster in clusters {
                send(
                    &self.ctx,
                    &self.snapshot,
                    cluster,
                    &request,
                    self.method,
                    self.limit,
                );
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        for _ in &self.clusters {
            ShardStats::add(&self.ctx.stats.mirror_skipped);
        }
    }
}

/// Draws `route`'s mirrors for a request whose upstream head and first body bytes are
/// `request`: when `whole` (the body went out with them) the copies are sent now;
/// else they wait for the rest of the body (`Some`), unless the request is an
/// `upgrade` or already over the limit (skipped). `method` is what the response is
/// read for (`HEAD` or another), `limit` bounds each exchange.
#[expect(
    clippy::too_many_arguments,
    reason = "what a copy needs of the request, the route and the shard"
)]
pub(super) fn start(
    ctx: &Rc<ShardContext>,
    snapshot: &Arc<Snapshot>,
    route: &Route,
    request: &[u8],
    whole: bool,
    upgrade: bool,
    method: &'static str,
    limit: Duration,
) -> Option<Pending> {
    let drawn: Vec<ClusterId> = route
        .mirrors
        .iter()
        .filter(|(_, share)| share.draw())
        .map(|&(cluster, _)| cluster)
        .collect();
    if drawn.is_empty() {
        return None;
    }
    if upgrade {
        // An upgrade is never mirrored: each drawn copy counts as skipped.
        ShardStats::add_n(&ctx.stats.mirror_skipped, drawn.len() as u64);
        return None;
    }
    if whole {
        for cluster in drawn {
            send(ctx, snapshot, cluster, request, method, limit);
        }
        return None;
    }
    let mut pending = Pending {
        ctx: ctx.clone(),
        snapshot: snapshot.clone(),
        clusters: drawn,
        request: Vec::new(),
        method,
        limit,
    };
    pending.extend(request).then_some(pending)
}

/// Sends one copy of `request` (a whole request as written for the primary) to
/// `cluster`, unless it is too large or the shard has too many in flight (skipped).
fn send(
    ctx: &Rc<ShardContext>,
    snapshot: &Arc<Snapshot>,
    cluster: ClusterId,
    request: &[u8],
    method: &'static str,
    limit: Duration,
) {
    let copy = (request.len() <= MAX_MIRRORED_REQUEST)
        .then(|| shadow_request(request))
        .flatten();
    let (Some(copy), Some(in_flight)) = (copy, InFlight::enter()) else {
        ShardStats::add(&ctx.stats.mirror_skipped);
        return;
    };
    let ctx = ctx.clone();
    let snapshot = snapshot.clone();
    uring::spawn(async move {
        let _in_flight = in_flight;
        match exchange(&ctx, &snapshot, cluster, copy, method, limit).await {
            Ok(()) => ShardStats::add(&ctx.stats.mirror_sent),
            Err(error) => {
                ShardStats::add(&ctx.stats.mirror_failed);
                let cluster = &snapshot.clusters.get(cluster).name;
                tracing::debug!(%cluster, %error, "mirrored request failed");
            }
        }
    });
}

/// One mirrored exchange within `limit`: an endpoint of `cluster`, the copy sent,
/// the response read to its end and dropped; the connection pooled again when it can
/// be (one that timed out is dropped, so closed).
async fn exchange(
    ctx: &ShardContext,
    snapshot: &Snapshot,
    cluster: ClusterId,
    request: Vec<u8>,
    method: &str,
    limit: Duration,
) -> Result<(), MirrorError> {
    let spec = snapshot.clusters.get(cluster);
    // A mirror's cluster balances by its own policy; a hash of the request's key is
    // the primary cluster's.
    let Some((endpoint, addr)) = ctx.pick_endpoint(snapshot, cluster, None) else {
        return Err(MirrorError::NoEndpoint(spec.name.clone()));
    };
    let exchanged = uring::timeout(limit, send_and_drain(ctx, spec, addr, request, method)).await;
    ctx.finished(snapshot, cluster, endpoint);
    exchanged.unwrap_or(Err(MirrorError::Timeout(limit)))
}

async fn send_and_drain(
    ctx: &ShardContext,
    spec: &Cluster,
    addr: std::net::SocketAddr,
    request: Vec<u8>,
    method: &str,
) -> Result<(), MirrorError> {
    let io = |source| MirrorError::Io { addr, source };
    // A mirror with TLS names its own destination (or its `sni`): the copy's
    // `-shadow` host is no name a certificate has.
    let name = spec
        .tls
        .as_deref()
        .map(|tls| tls.server_name_for("", &spec.host));
    let upstream = checkout(ctx, spec, addr, name.as_ref(), ctx.settings.timeouts.idle).await?;
    upstream.stream.set_send_timeout(ctx.settings.timeouts.idle);
    let (sent, _) = upstream.stream.send_all(request).await;
    sent.map_err(io)?;
    let mut buf = Vec::new();
    let head = loop {
        // What is buffered first: a final head may have come with an interim one.
        match http::parse_response(&buf, method) {
            Ok(Some(head)) if head.is_informational() => {
                buf.drain(..head.len());
                continue;
            }
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(source) => return Err(MirrorError::BadResponse { addr, source }),
        }
        let received = upstream.stream.recv().await.map_err(io)?;
        if received.is_empty() {
            return Err(MirrorError::Closed(addr));
        }
        buf.extend_from_slice(&received);
    };
    let bad = |source| MirrorError::BadResponse { addr, source };
    let mut body = BodyFramer::new(head.body());
    let mut used = body.advance(&buf[head.len()..]).map_err(bad)?;
    let mut left_over = buf.len() > head.len() + used;
    drop(buf);
    while !body.is_done() {
        let received = upstream.stream.recv().await.map_err(io)?;
        if received.is_empty() {
            if head.body() == BodyKind::UntilClose {
                return Ok(());
            }
            return Err(MirrorError::Closed(addr));
        }
        used = body.advance(&received).map_err(bad)?;
        left_over = received.len() > used;
    }
    // Bytes after the response (none are asked for) make the connection unusable.
    if head.keep_alive() && !left_over {
        let keep_for = pool::keep_for(spec.pool.idle_timeout, head.header("keep-alive"));
        ctx.pool.borrow_mut().put(upstream, keep_for);
    }
    Ok(())
}

/// `request` (a head ringress wrote for an upstream, and what follows it) with
/// Envoy's shadow host; `None` when it has no Host header or no whole head.
fn shadow_request(request: &[u8]) -> Option<Vec<u8>> {
    let head_end = request.windows(4).position(|w| w == b"\r\n\r\n")? + 2;
    let mut out = Vec::with_capacity(request.len() + 7);
    let mut found = false;
    let mut lines = request[..head_end].split_inclusive(|&b| b == b'\n');
    out.extend_from_slice(lines.next()?);
    for line in lines {
        let name_end = line.iter().position(|&b| b == b':');
        let is_host = name_end.is_some_and(|n| line[..n].eq_ignore_ascii_case(b"host"));
        if !is_host || found {
            out.extend_from_slice(line);
            continue;
        }
        found = true;
        let n = name_end?;
        let value = line[n + 1..].trim_ascii();
        out.extend_from_slice(&line[..=n]);
        out.push(b' ');
        out.extend_from_slice(&shadow_host(value));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&request[head_end..]);
    found.then_some(out)
}

/// Envoy's `shadowAppendedHost`: `-shadow` before the port, if there is one (the
/// last `:` not inside an IPv6 literal's brackets), else at the end.
fn shadow_host(host: &[u8]) -> Vec<u8> {
    let colon = host.iter().rposition(|&b| b == b':');
    let bracket = host.iter().rposition(|&b| b == b']');
    let port_start = match (colon, bracket) {
        (Some(c), Some(b)) if b > c => None,
        (c, _) => c,
    };
    let (name, port) = host.split_at(port_start.unwrap_or(host.len()));
    [name, b"-shadow", port].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_host_goes_before_the_port() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"shop.example.com", b"shop.example.com-shadow"),
            (b"shop.example.com:8080", b"shop.example.com-shadow:8080"),
            (b"[::1]:80", b"[::1]-shadow:80"),
            (b"[::1]", b"[::1]-shadow"),
            (b"10.0.0.1:443", b"10.0.0.1-shadow:443"),
        ];
        for (host, shadow) in cases {
            assert_eq!(
                shadow_host(host),
                shadow,
                "{}",
                String::from_utf8_lossy(host)
            );
        }
    }

    #[test]
    fn a_shadow_request_changes_the_host_only() {
        let request = b"POST /a HTTP/1.1\r\nx-forwarded-for: 10.0.0.1\r\nHost: shop.example.com:8080\r\ncontent-length: 2\r\n\r\nhi";
        let shadow = shadow_request(request).unwrap();
        assert_eq!(
            String::from_utf8(shadow).unwrap(),
            "POST /a HTTP/1.1\r\nx-forwarded-for: 10.0.0.1\r\nHost: shop.example.com-shadow:8080\r\ncontent-length: 2\r\n\r\nhi"
        );
        assert_eq!(shadow_request(b"GET / HTTP/1.1\r\nx: y\r\n\r\n"), None);
        assert_eq!(shadow_request(b"GET / HTTP/1.1\r\nhost: a\r\n"), None);
    }
}
