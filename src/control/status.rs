//! What the control thread knows about the running gateway, shared with the admin
//! endpoint's thread: the snapshot and configuration being served, reload outcomes,
//! and each shard's counters. Only the control and admin threads touch the locks here;
//! shards never do.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::auth::KeyRing;
use crate::config::Config;
use crate::shard::ShardStats;
use crate::snapshot::Snapshot;

/// The outcome of the most recent reload attempt.
#[derive(Debug, Clone)]
pub(crate) struct ReloadRecord {
    pub(crate) at: SystemTime,
    /// What asked for it: `SIGHUP`, `POST /reload`, `changed: /path`.
    pub(crate) cause: String,
    /// `Ok(generation)` or the error, as logged.
    pub(crate) outcome: Result<u64, String>,
}

/// Shared state of a running gateway.
pub(crate) struct Status {
    pub(crate) started: SystemTime,
    serving: Mutex<(Arc<Snapshot>, Arc<Config>)>,
    pub(crate) shards: Vec<Arc<ShardStats>>,
    pub(crate) reloads_ok: AtomicU64,
    pub(crate) reloads_failed: AtomicU64,
    last_reload: Mutex<Option<ReloadRecord>>,
    last_failure: Mutex<Option<ReloadRecord>>,
    /// False once the gateway is draining.
    ready: AtomicBool,
    /// Why the gateway is stopping with an error (a shard thread went down).
    failed: Mutex<Option<String>>,
    /// The JWT key sets the shards verify with.
    keys: Mutex<Arc<KeyRing>>,
}

impl Status {
    pub(crate) fn new(
        snapshot: Arc<Snapshot>,
        config: Arc<Config>,
        shards: Vec<Arc<ShardStats>>,
        keys: Arc<KeyRing>,
    ) -> Status {
        Status {
            started: SystemTime::now(),
            serving: Mutex::new((snapshot, config)),
            shards,
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_reload: Mutex::new(None),
            last_failure: Mutex::new(None),
            ready: AtomicBool::new(true),
            failed: Mutex::new(None),
            keys: Mutex::new(keys),
        }
    }

    /// The snapshot and configuration being served now.
    pub(crate) fn serving(&self) -> (Arc<Snapshot>, Arc<Config>) {
        lock(&self.serving).clone()
    }

    pub(crate) fn set_serving(&self, snapshot: Arc<Snapshot>, config: Arc<Config>) {
        *lock(&self.serving) = (snapshot, config);
    }

    pub(crate) fn record_reload(&self, record: ReloadRecord) {
        let counter = match record.outcome {
            Ok(_) => &self.reloads_ok,
            Err(_) => &self.reloads_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if record.outcome.is_err() {
            *lock(&self.last_failure) = Some(record.clone());
        }
        *lock(&self.last_reload) = Some(record);
    }

    pub(crate) fn last_reload(&self) -> Option<ReloadRecord> {
        lock(&self.last_reload).clone()
    }

    pub(crate) fn last_failure(&self) -> Option<ReloadRecord> {
        lock(&self.last_failure).clone()
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub(crate) fn set_draining(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }

    /// Marks the gateway as failed (not ready) for `reason`.
    pub(crate) fn set_failed(&self, reason: String) {
        *lock(&self.failed) = Some(reason);
        self.set_draining();
    }

    /// The JWT key sets the shards verify with.
    pub(crate) fn keys(&self) -> Arc<KeyRing> {
        lock(&self.keys).clone()
    }

    pub(crate) fn set_keys(&self, keys: Arc<KeyRing>) {
        *lock(&self.keys) = keys;
    }

    /// Why the gateway failed, once it has.
    pub(crate) fn failure(&self) -> Option<String> {
        lock(&self.failed).clone()
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (each update
/// is a single assignment).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
