//! Active health checks, ringress's addition to Istio (which has none): a
//! DestinationRule with `ringress.io/health-check-path` (and optionally `-interval`,
//! `-timeout`, `-unhealthy-threshold`, `-healthy-threshold`) has every endpoint of its
//! host's clusters probed with `GET PATH` over HTTP/1.1 (`Host` the cluster's host,
//! `User-Agent: Envoy/HC` as Envoy sends, `Connection: close`); a `200` within the
//! timeout passes, anything else (no connection, another status, silence) fails.
//!
//! One thread of the control side probes, off the shards: it looks at the snapshot
//! being served every [`TICK`], probes each endpoint whose interval is up with
//! blocking sockets bounded by the timeout, and writes the result into the cluster's
//! shared health table (`upstream::health`), which every shard's balancer reads. A
//! reload's new snapshot brings new tables: probing starts afresh on them. Probes run
//! one after another, so a host with many slow endpoints stretches its intervals.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::status::Status;
use crate::config::HealthCheck;

/// How often the prober looks for probes that are due.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// The most of a response the prober reads: its status line is all it needs.
const MAX_STATUS_LINE: usize = 1024;

/// Starts the prober thread; it runs as long as the process.
pub(crate) fn spawn(status: Arc<Status>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("ringress-health-check".into())
        .spawn(move || {
            loop {
                std::thread::sleep(TICK);
                let (snapshot, _) = status.serving();
                for (_, cluster) in snapshot.clusters.iter() {
                    let Some(check) = cluster.health.health_check() else {
                        continue;
                    };
                    for (i, addr) in cluster.endpoints.iter().enumerate() {
                        if cluster.health.probe_due(i, Instant::now()) {
                            let passed = probe(*addr, &cluster.host, check);
                            if !passed {
                                tracing::debug!(%addr, cluster = %cluster.istio_name, "health check failed");
                            }
                            cluster.health.probed(i, passed);
                        }
                    }
                }
            }
        })
        .context("cannot start the health-check thread")?;
    Ok(())
}

/// One probe of `addr`: whether it answered `200` within the check's timeout.
fn probe(addr: SocketAddr, host: &str, check: &HealthCheck) -> bool {
    let deadline = Instant::now() + check.timeout;
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, check.timeout) else {
        return false;
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Envoy/HC\r\nConnection: close\r\n\r\n",
        check.path
    );
    let left = || deadline.saturating_duration_since(Instant::now());
    if stream
        .set_write_timeout(Some(left().max(Duration::from_millis(1))))
        .is_err()
        || stream.write_all(request.as_bytes()).is_err()
    {
        return false;
    }
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < MAX_STATUS_LINE {
        let wait = left();
        if wait.is_zero() || stream.set_read_timeout(Some(wait)).is_err() {
            return false;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    status_is_200(&head)
}

/// Whether a response starts with an HTTP/1.x status line of 200.
fn status_is_200(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    matches!(parts.next(), Some(b"HTTP/1.1" | b"HTTP/1.0")) && parts.next() == Some(b"200")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn check(timeout: Duration) -> HealthCheck {
        HealthCheck {
            path: "/health".into(),
            interval: Duration::from_secs(1),
            timeout,
            unhealthy_threshold: 1,
            healthy_threshold: 1,
        }
    }

    /// A server answering one connection with `answer` (after reading the request),
    /// or saying nothing when it is empty.
    fn serve(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut request = [0u8; 1024];
                let n = conn.read(&mut request).unwrap_or(0);
                assert!(request[..n].starts_with(b"GET /health HTTP/1.1\r\nHost: shop\r\n"));
                if answer.is_empty() {
                    std::thread::sleep(Duration::from_secs(2));
                } else {
                    let _ = conn.write_all(answer);
                }
            }
        });
        addr
    }

    #[test]
    fn a_200_passes_anything_else_fails() {
        let timeout = Duration::from_millis(500);
        let ok = serve(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert!(probe(ok, "shop", &check(timeout)));
        let bad = serve(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert!(!probe(bad, "shop", &check(timeout)));
        let silent = serve(b"");
        assert!(!probe(silent, "shop", &check(timeout)));
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(!probe(closed, "shop", &check(timeout)));
        assert!(!status_is_200(b"HTTP/1.1 2000 x\r\n"));
        assert!(!status_is_200(b"garbage"));
    }
}
