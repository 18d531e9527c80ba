//! Counters a shard keeps about its traffic, read by the admin endpoint.
//!
//! Each shard owns one [`ShardStats`] and is the only writer: increments are relaxed
//! atomic adds on memory no other core writes, so counting costs a few cycles and takes
//! no lock. The admin endpoint (control thread) reads them whenever it is asked.
//! Per-route counts live in each compiled route ([`StatusCounters`]), shared by the
//! shards serving it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::auth;
use crate::tls::HandshakeFailure;

/// Responses counted by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
#[derive(Debug, Default)]
pub(crate) struct StatusCounters([AtomicU64; 5]);

impl Clone for StatusCounters {
    /// A copy with the counts as they are now.
    fn clone(&self) -> Self {
        StatusCounters(std::array::from_fn(|i| {
            AtomicU64::new(self.0[i].load(Ordering::Relaxed))
        }))
    }
}

impl StatusCounters {
    /// Counts one response with `status`; codes outside 100..=599 count as 5xx.
    pub(crate) fn count(&self, status: u16) {
        let class = match status {
            100..=599 => usize::from(status / 100) - 1,
            _ => 4,
        };
        self.0[class].fetch_add(1, Ordering::Relaxed);
    }

    /// `(class label, count)` for `1xx` to `5xx`.
    pub(crate) fn classes(&self) -> [(&'static str, u64); 5] {
        const LABELS: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        std::array::from_fn(|i| (LABELS[i], self.0[i].load(Ordering::Relaxed)))
    }
}

/// One shard's counters.
#[derive(Debug, Default)]
pub(crate) struct ShardStats {
    /// Client connections open now.
    pub(crate) active_connections: AtomicU64,
    /// Client connections accepted since start.
    pub(crate) accepted: AtomicU64,
    /// Responses sent to clients, by status class.
    pub(crate) responses: StatusCounters,
    /// Completed TLS handshakes by negotiated version.
    pub(crate) handshakes_tls12: AtomicU64,
    pub(crate) handshakes_tls13: AtomicU64,
    /// Handshakes that failed (alert, unknown name, timeout, client gone).
    pub(crate) handshakes_failed: AtomicU64,
    /// The same by reason, indexed like [`HandshakeFailure::ALL`].
    pub(crate) handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    /// Upstream connects that failed or timed out.
    pub(crate) upstream_connect_failures: AtomicU64,
    /// Of those, TLS handshakes with an upstream that failed (a DestinationRule
    /// `tls`: verification, an alert, a peer that does not speak TLS).
    pub(crate) upstream_tls_failures: AtomicU64,
    /// Requests refused because their cluster was full (`maxConnections` open and
    /// `http1MaxPendingRequests` waiting, or `http2MaxRequests` in flight), Envoy's "UO".
    pub(crate) upstream_overflows: AtomicU64,
    /// Retries not made because their cluster had `connectionPool.http.maxRetries`
    /// retries in flight (Envoy's `upstream_rq_retry_overflow`).
    pub(crate) retry_overflows: AtomicU64,
    /// Connections reset at accept: the shard had `--max-connections` open, or the
    /// client address `--max-connections-per-client`.
    pub(crate) refused_shard_full: AtomicU64,
    pub(crate) refused_client_full: AtomicU64,
    /// Accepts that failed (EMFILE, ENFILE...).
    pub(crate) accept_failures: AtomicU64,
    /// Access log lines dropped because the writer was behind.
    pub(crate) access_log_dropped: AtomicU64,
    /// Requests by authentication outcome, indexed like [`auth::AUTHN_OUTCOMES`].
    pub(crate) authn: [AtomicU64; auth::AUTHN_OUTCOMES.len()],
    /// Requests by authorization outcome, indexed like [`auth::authz::AUTHZ_OUTCOMES`]
    /// (`audited` counts AUDIT rules that matched).
    pub(crate) authz: [AtomicU64; auth::authz::AUTHZ_OUTCOMES.len()],
    /// Connection tasks that panicked (each closed its connection only).
    pub(crate) connection_panics: AtomicU64,
    /// Requests a route's `fault` delayed and aborted (Envoy's `fault.delays_injected`,
    /// `fault.aborts_injected`).
    pub(crate) fault_delays_injected: AtomicU64,
    pub(crate) fault_aborts_injected: AtomicU64,
    /// CORS requests whose origin a route's `corsPolicy` allowed or not (Envoy's
    /// `cors.origin_valid`, `cors.origin_invalid`).
    pub(crate) cors_origin_valid: AtomicU64,
    pub(crate) cors_origin_invalid: AtomicU64,
    /// Mirrored copies of requests: answered by the mirror (any status), failed
    /// (no endpoint, connect, I/O, timeout), and not sent (a body not whole with the
    /// head, too large, an upgrade, too many in flight).
    pub(crate) mirror_sent: AtomicU64,
    pub(crate) mirror_failed: AtomicU64,
    pub(crate) mirror_skipped: AtomicU64,
    /// TLS passthrough and TCP connections by how they ended, indexed like
    /// [`crate::proxy::L4_OUTCOMES`].
    pub(crate) l4: [AtomicU64; crate::proxy::L4_OUTCOMES.len()],
    /// Bytes relayed on TLS passthrough and TCP connections, client to upstream and
    /// upstream to client.
    pub(crate) l4_bytes_received: AtomicU64,
    pub(crate) l4_bytes_sent: AtomicU64,
    /// The shard thread is serving: set once its listeners are bound, cleared when
    /// the thread ends, drained or not.
    pub(crate) running: AtomicBool,
}

impl ShardStats {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an authentication outcome by its label.
    pub(crate) fn count_authn(&self, outcome: &str) {
        if let Some(i) = auth::AUTHN_OUTCOMES.iter().position(|o| *o == outcome) {
            Self::add(&self.authn[i]);
        }
    }

    /// Counts an authorization outcome by its label.
    pub(crate) fn count_authz(&self, outcome: &str) {
        if let Some(i) = auth::authz::AUTHZ_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
        {
            Self::add(&self.authz[i]);
        }
    }

    pub(crate) fn sub(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn add_n(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    pub(crate) fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_fall_into_their_class() {
        let counters = StatusCounters::default();
        for status in [100, 200, 204, 301, 404, 418, 503, 599, 0, 700] {
            counters.count(status);
        }
        assert_eq!(
            counters.classes(),
            [("1xx", 1), ("2xx", 2), ("3xx", 1), ("4xx", 2), ("5xx", 4)]
        );
    }
}
