//! The control thread: loads the configuration, builds snapshots, starts the shards and
//! supervises them. Everything slow (files, DNS, PEM) happens here, never on a shard.

mod check;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use rustls::server::ProducesTickets;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

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

/// A running gateway: its shards, the snapshot they serve, and what a reload needs.
pub struct Gateway {
    pub shards: Vec<ShardHandle>,
    pub snapshot: Arc<Snapshot>,
    opts: RunOptions,
    /// Shared by every snapshot, so sessions resume across shards and reloads.
    ticketer: Arc<dyn ProducesTickets>,
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
    probe_listeners(&snapshot)?;
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
    log_serving(&snapshot);
    tracing::info!(
        shards = count,
        config = %opts.config.display(),
        "ringress serving"
    );
    Ok(Gateway {
        shards,
        snapshot,
        opts: opts.clone(),
        ticketer,
    })
}

impl Gateway {
    /// Re-reads the configuration, certificates and credentials and hands the new
    /// snapshot to every shard. On any error nothing changes: the old snapshot keeps
    /// serving. Returns the new generation.
    pub fn reload(&mut self) -> anyhow::Result<u64> {
        let config = config::load(&self.opts.config)?;
        let generation = self.snapshot.generation + 1;
        let snapshot = Snapshot::build(
            &config,
            self.opts.secrets_dir.as_deref(),
            &self.ticketer,
            generation,
        )?;
        let listening = |s: &Snapshot| -> Vec<std::net::SocketAddr> {
            let mut addrs: Vec<_> = s.listeners.iter().map(|l| l.addr).collect();
            addrs.sort();
            addrs
        };
        let (old, new) = (listening(&self.snapshot), listening(&snapshot));
        if old != new {
            anyhow::bail!(
                "the new configuration listens on {new:?} instead of {old:?}; \
                 opening or closing listeners needs a restart"
            );
        }
        let snapshot = Arc::new(snapshot);
        for shard in &self.shards {
            shard.publish(snapshot.clone());
        }
        self.snapshot = snapshot;
        log_serving(&self.snapshot);
        Ok(generation)
    }
}

/// Fails clearly when a listener's address is taken — also by another process that
/// uses `SO_REUSEPORT` (another ringress), which the shards' own reuseport sockets
/// would otherwise silently share the port with. The probe socket does not set
/// `SO_REUSEPORT`, so any holder of the port makes it fail; it is closed at once.
fn probe_listeners(snapshot: &Snapshot) -> anyhow::Result<()> {
    for listener in &snapshot.listeners {
        std::net::TcpListener::bind(listener.addr).with_context(|| {
            format!(
                "cannot listen on {}: is another process (or another ringress) using it?",
                listener.addr
            )
        })?;
    }
    Ok(())
}

/// Logs what a snapshot serves, and warns about certificates already expired.
fn log_serving(snapshot: &Snapshot) {
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
            generation = snapshot.generation,
            "listening"
        );
    }
}

/// Runs the gateway until SIGTERM or SIGINT; SIGHUP reloads the configuration.
pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    // Registered before the shards start, so an early SIGHUP cannot kill the process.
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])
        .context("cannot install the SIGHUP/SIGTERM handlers")?;
    let mut gateway = start(&opts)?;
    for signal in signals.forever() {
        if signal == SIGHUP {
            match gateway.reload() {
                Ok(generation) => tracing::info!(generation, "configuration reloaded"),
                Err(error) => tracing::error!(
                    generation = gateway.snapshot.generation,
                    "reload failed, still serving the previous configuration: {error:#}"
                ),
            }
        } else {
            tracing::info!(signal, "stopping");
            break;
        }
    }
    Ok(())
}
