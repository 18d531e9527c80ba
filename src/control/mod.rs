//! The control thread: loads the configuration, builds snapshots, starts the shards and
//! supervises them. Everything slow (files, DNS, PEM) happens here, never on a shard.

mod check;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

pub use check::{check, describe};

use crate::config;
use crate::proxy::Timeouts;
use crate::shard::{self, ShardHandle, ShardOptions};
use crate::snapshot::Snapshot;
use crate::tls;
use crate::uring;

/// How many shard threads to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShardCount {
    /// One per available core.
    #[default]
    Auto,
    Fixed(usize),
}

impl ShardCount {
    /// The number of shards to start on this machine.
    pub fn resolve(self) -> usize {
        match self {
            ShardCount::Fixed(n) => n.max(1),
            ShardCount::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl std::str::FromStr for ShardCount {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(ShardCount::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(ShardCount::Fixed(n)),
            _ => Err(format!(
                "expected `auto` or a number of shards ≥ 1, got {s:?}"
            )),
        }
    }
}

/// What `ringress run` (and `ringress demo`) hands the control thread.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub config: PathBuf,
    pub shards: ShardCount,
    /// Where `credentialName` resolves (`DIR/NAME/tls.crt`...).
    pub secrets_dir: Option<PathBuf>,
    /// Steer each new connection to the shard on the CPU that received it.
    pub steer_by_cpu: bool,
    pub timeouts: Timeouts,
}

/// A running gateway: its shards and the snapshot they serve.
pub struct Gateway {
    pub shards: Vec<ShardHandle>,
    pub snapshot: Arc<Snapshot>,
}

/// Loads the configuration, builds the first snapshot and starts every shard; returns
/// once all listeners are bound.
pub fn start(opts: &RunOptions) -> anyhow::Result<Gateway> {
    uring::check_available().context("ringress needs io_uring")?;
    let config = config::load(&opts.config)?;
    let ticketer = tls::new_ticketer()?;
    let snapshot = Arc::new(Snapshot::build(
        &config,
        opts.secrets_dir.as_deref(),
        &ticketer,
        1,
    )?);
    let count = opts.shards.resolve();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut shards = Vec::with_capacity(count);
    for id in 0..count {
        let cpu = (!cores.is_empty()).then(|| cores[id % cores.len()]);
        let handle = shard::spawn(
            ShardOptions {
                id,
                cpu,
                steer_by_cpu: opts.steer_by_cpu,
                timeouts: opts.timeouts,
            },
            snapshot.clone(),
        )?;
        shards.push(handle);
    }
    for listener in &snapshot.listeners {
        for cert in &listener.certificates {
            if let Some(leaf) = cert.leaf.as_ref().filter(|l| l.days_until_expiry < 0) {
                tracing::warn!(
                    certificate = %cert.source,
                    days = -leaf.days_until_expiry,
                    "serving an expired certificate; clients will refuse it"
                );
            }
        }
        tracing::info!(
            addr = %listener.addr,
            protocol = ?listener.protocol,
            servers = listener.certificates.len(),
            "listening"
        );
    }
    tracing::info!(
        shards = count,
        config = %opts.config.display(),
        "ringress serving"
    );
    Ok(Gateway { shards, snapshot })
}

/// Runs the gateway until the process is stopped.
pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    let gateway = start(&opts)?;
    for shard in gateway.shards {
        shard.join();
    }
    Ok(())
}
