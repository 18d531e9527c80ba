//! The control thread: loads the configuration, builds snapshots, starts the shards and
//! supervises them. Everything slow (files, DNS, PEM) happens here, never on a shard.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How many shard threads to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShardCount {
    /// One per available core.
    #[default]
    Auto,
    Fixed(usize),
}

/// What `ringress run` (and `ringress demo`) hands the control thread.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub config: PathBuf,
    pub shards: ShardCount,
    /// Where `credentialName` resolves (`DIR/NAME/tls.crt`...).
    pub secrets_dir: Option<PathBuf>,
    /// The admin endpoint's address; `None` means the default 127.0.0.1:15000.
    pub admin: Option<SocketAddr>,
    /// Steer each new connection to the shard on the CPU that received it.
    pub steer_by_cpu: bool,
}

/// Runs the gateway until it is told to stop.
pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    anyhow::bail!(
        "the gateway for {} cannot start: shards are not built yet",
        opts.config.display()
    )
}
