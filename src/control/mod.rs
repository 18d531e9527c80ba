//! The control thread: loads the configuration, builds snapshots, starts the shards and
//! supervises them. Everything slow (files, DNS, PEM) happens here, never on a shard.

pub(crate) mod admin;
mod check;
mod health_check;
mod notify;
pub(crate) mod status;
pub(crate) mod upgrade;
pub(crate) mod watch;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use crossbeam_channel::{Receiver, Sender};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook::iterator::Signals;

pub use check::check;

use crate::access_log;
use crate::auth::{self, KeyRing};
use crate::config;
use crate::proxy::{self, Settings};
use crate::shard::{self, ShardDown, ShardHandle, ShardOptions};
use crate::snapshot::Snapshot;
use crate::tls;
use crate::uring;
use status::{ReloadRecord, Status};
use upgrade::{Inherited, OpenListeners};

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
    pub(crate) fn resolve(self) -> usize {
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
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    pub shards: ShardCount,
    /// Where `credentialName` resolves (`DIR/NAME/tls.crt`...).
    pub secrets_dir: Option<PathBuf>,
    /// Steer each new connection to the shard on the CPU that received it.
    pub steer_by_cpu: bool,
    /// Timeouts and the other per-connection settings.
    pub settings: Settings,
    /// The admin endpoint's address; `None` turns it off.
    pub admin: Option<SocketAddr>,
    /// How long SIGTERM/SIGINT let in-flight requests finish.
    pub drain_timeout: Duration,
    /// Watch certificate files, credentials and the config file for changes.
    pub watch: bool,
    /// `--max-connections`: client connections per shard; `None` for what the
    /// descriptor limit allows, at most [`proxy::DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: Option<usize>,
    /// `--access-log` and `--access-log-format`.
    pub access_log: access_log::Target,
    pub access_log_format: access_log::Format,
    /// How often remote JWT key sets are fetched again (`--jwks-refresh-interval`).
    pub jwks_refresh: Duration,
    /// `--health`: the address of the endpoint answering only `GET /healthz/ready`.
    pub health: Option<SocketAddr>,
    /// `--upgrade-socket`: where the listening sockets are taken from at start (when
    /// a ringress offers them there) and offered to the next binary.
    pub upgrade_socket: Option<PathBuf>,
    /// `--session-ticket-keys`: the file of session-ticket keys every replica shares;
    /// `None` for random keys of this process alone.
    pub session_ticket_keys: Option<PathBuf>,
}

/// The admin endpoint's default address (Envoy's, which Istio users know).
pub(crate) const DEFAULT_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15000);
/// How long a stop waits for in-flight requests by default.
pub(crate) const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What wakes the control thread.
pub(crate) enum ControlEvent {
    /// Re-read the configuration; `reply` hears the outcome (the admin endpoint).
    Reload {
        cause: String,
        reply: Option<Sender<Result<u64, String>>>,
    },
    /// SIGTERM or SIGINT: drain and exit.
    Stop { cause: String },
    /// A shard thread ended without a drain: the gateway stops with an error.
    ShardDown(ShardDown),
    /// Time to fetch the remote JWT key sets again.
    RefreshKeys,
    /// SIGUSR2: start this binary again to take the listeners over.
    Upgrade,
}

impl RunOptions {
    /// Options for serving `config` with every default.
    pub fn new(config: PathBuf) -> RunOptions {
        RunOptions {
            config,
            shards: ShardCount::Auto,
            secrets_dir: None,
            steer_by_cpu: false,
            settings: Settings::default(),
            admin: Some(DEFAULT_ADMIN),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            watch: true,
            max_connections: None,
            access_log: access_log::Target::Stdout,
            access_log_format: access_log::Format::default(),
            jwks_refresh: auth::fetch::DEFAULT_REFRESH,
            health: None,
            upgrade_socket: None,
            session_ticket_keys: None,
        }
    }
}

/// A running gateway: its shards, what they serve, and what a reload needs.
pub(crate) struct Gateway {
    pub(crate) shards: Vec<ShardHandle>,
    pub(crate) status: Arc<Status>,
    opts: RunOptions,
    /// Session-ticket keys by trust setting, kept across reloads so sessions resume
    /// on any shard and after a reload that did not change a server's trust (nor the
    /// `--session-ticket-keys` file).
    ticketers: tls::Ticketers,
    /// The JWT key sets the shards verify with, as last fetched.
    keys: Arc<KeyRing>,
    /// The access log's writer thread, when the log is on.
    access_log: Option<access_log::Writer>,
    /// The configuration of the last reload, when it loaded but did not build (a
    /// missing or mismatched certificate): its files are watched too, so fixing the
    /// one the error named reloads.
    failed: Option<Arc<config::Config>>,
    /// Every listening socket of this process, for a binary upgrade.
    pub(crate) listeners: Arc<OpenListeners>,
}

/// Builds the first snapshot of `config` (loaded from `opts.config`) and starts every
/// shard; returns once all listeners are bound (or adopted from `inherited`, the
/// sockets of the process before a binary upgrade). A shard that later ends without
/// a drain is reported on `events`.
fn start(
    opts: &RunOptions,
    config: config::Config,
    events: &Sender<ControlEvent>,
    mut inherited: Option<&mut Inherited>,
) -> anyhow::Result<Gateway> {
    uring::check_available().context("ringress needs io_uring")?;
    let config = Arc::new(config);
    let mut ticketers = tls::Ticketers::load(opts.session_ticket_keys.as_deref())?;
    let snapshot = Arc::new(Snapshot::build(
        &config,
        opts.secrets_dir.as_deref(),
        &mut ticketers,
        1,
    )?);
    let count = opts.shards.resolve();
    // Each shard adopts every `count`-th inherited socket of an address, in the old
    // process's order; a shard without one binds its own into the reuseport group.
    let mut adopted: Vec<Vec<(SocketAddr, OwnedFd)>> = (0..count).map(|_| Vec::new()).collect();
    let mut fresh = Vec::new();
    for listener in &snapshot.listeners {
        let fds = inherited
            .as_deref_mut()
            .map(|i| i.take(listener.addr))
            .unwrap_or_default();
        if fds.is_empty() {
            fresh.push(listener.addr);
        }
        for (i, fd) in fds.into_iter().enumerate() {
            adopted[i % count].push((listener.addr, fd));
        }
    }
    probe_listeners(fresh.into_iter())?;
    // Before any shard serves, so the first request already has the keys.
    let keys = Arc::new(auth::fetch::refresh(&config, &KeyRing::default(), false));
    let mut settings = opts.settings;
    settings.limits.max_connections = max_connections(opts.max_connections, count);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let access_log = access_log::Writer::start(&opts.access_log, opts.access_log_format.clone())
        .context("cannot open the access log")?;
    let mut shards = Vec::with_capacity(count);
    let listeners = Arc::new(OpenListeners::default());
    let events = events.clone();
    let on_down: shard::OnDown = Arc::new(move |down| {
        let _ = events.send(ControlEvent::ShardDown(down));
    });
    for (id, adopted) in adopted.into_iter().enumerate() {
        let cpu = (!cores.is_empty()).then(|| cores[id % cores.len()]);
        let handle = shard::spawn(
            ShardOptions {
                id,
                shards: count,
                cpu,
                steer_by_cpu: opts.steer_by_cpu,
                settings,
                on_down: on_down.clone(),
                keys: keys.clone(),
                access_log: access_log.as_ref().map(access_log::Writer::handle),
                listeners: listeners.clone(),
                adopted,
            },
            snapshot.clone(),
        )?;
        shards.push(handle);
    }
    log_serving(&snapshot);
    tracing::info!(
        shards = count,
        max_connections_per_shard = settings.limits.max_connections,
        config = %opts.config.display(),
        "ringress serving"
    );
    let stats = shards.iter().map(|s| s.stats.clone()).collect();
    Ok(Gateway {
        shards,
        status: Arc::new(Status::new(snapshot, config, stats, keys.clone())),
        opts: opts.clone(),
        ticketers,
        keys,
        access_log,
        failed: None,
        listeners,
    })
}

impl Gateway {
    /// Re-reads the configuration, certificates and credentials and hands the new
    /// snapshot to every shard, which open and close listeners to match. On any error
    /// nothing changes: the old snapshot keeps serving. Returns the new generation.
    pub(crate) fn reload(&mut self) -> anyhow::Result<u64> {
        let config = Arc::new(config::load(&self.opts.config)?);
        self.ticketers.reread_key_file()?;
        let generation = self.publish(&config);
        self.failed = generation.is_err().then_some(config);
        generation
    }

    /// Builds the snapshot of `config` and hands it to every shard; the new generation.
    fn publish(&mut self, config: &Arc<config::Config>) -> anyhow::Result<u64> {
        let config = config.clone();
        let (current, _) = self.status.serving();
        let generation = current.generation + 1;
        let snapshot = Snapshot::build(
            &config,
            self.opts.secrets_dir.as_deref(),
            &mut self.ticketers,
            generation,
        )?;
        let added = snapshot
            .listeners
            .iter()
            .map(|l| l.addr)
            .filter(|addr| !current.listeners.iter().any(|l| l.addr == *addr));
        probe_listeners(added)?;
        // Sources the new configuration adds are fetched now; the others keep theirs.
        let keys = auth::fetch::refresh(&config, &self.keys, true);
        self.publish_keys(keys);
        let snapshot = Arc::new(snapshot);
        let lost: Vec<String> = self
            .shards
            .iter()
            .filter(|shard| !shard.publish(snapshot.clone()))
            .map(|shard| shard.id.to_string())
            .collect();
        if !lost.is_empty() {
            anyhow::bail!(
                "shard {} is not running (ringress is stopping)",
                lost.join(", ")
            );
        }
        log_serving(&snapshot);
        self.status.set_serving(snapshot, config);
        Ok(generation)
    }

    /// Fetches every remote JWT key set of the configuration served again and hands
    /// the result to the shards (a failed fetch keeps that source's last keys).
    pub(crate) fn refresh_keys(&mut self) {
        let (_, config) = self.status.serving();
        if auth::fetch::source_urls(&config).is_empty() {
            return;
        }
        let keys = auth::fetch::refresh(&config, &self.keys, false);
        self.publish_keys(keys);
    }

    fn publish_keys(&mut self, keys: KeyRing) {
        let keys = Arc::new(keys);
        for shard in &self.shards {
            shard.publish_keys(keys.clone());
        }
        self.status.set_keys(keys.clone());
        self.keys = keys;
    }

    /// The files and directories whose changes should trigger a reload: those of the
    /// configuration served, and of the last one that failed to build.
    pub(crate) fn watched_paths(&self) -> Vec<PathBuf> {
        let (_, config) = self.status.serving();
        let secrets = self.opts.secrets_dir.as_deref();
        let keys = self.opts.session_ticket_keys.as_deref();
        let mut paths = watch::watched_paths(&config, &self.opts.config, secrets, keys);
        if let Some(failed) = &self.failed {
            for path in watch::watched_paths(failed, &self.opts.config, secrets, keys) {
                if !paths.contains(&path) {
                    paths.push(path);
                }
            }
        }
        paths
    }

    /// Stops accepting everywhere, lets in-flight requests finish within the drain
    /// timeout, and waits for every shard to end.
    pub(crate) fn drain(self) {
        self.status.set_draining();
        // Closed with the shards' own: a stop refuses new clients at once (after a
        // binary upgrade the new process holds the sockets).
        self.listeners.clear();
        for shard in &self.shards {
            shard.drain(self.opts.drain_timeout);
        }
        for shard in self.shards {
            shard.join();
        }
        // Every shard flushed its lines as it ended: the writer writes them out.
        if let Some(writer) = self.access_log {
            writer.finish();
        }
    }
}

/// Descriptors kept free of client connections: listeners, the ring, the admin
/// endpoint, files read at reloads.
const RESERVED_DESCRIPTORS: u64 = 256;

/// Client connections per shard: `requested`, or what the descriptor limit (raised
/// to its hard limit first) allows when each client connection may come with an
/// upstream one, at most [`proxy::DEFAULT_MAX_CONNECTIONS`]. Warns when the requested
/// number cannot all be open at once.
fn max_connections(requested: Option<usize>, shards: usize) -> usize {
    let descriptors = match uring::raise_descriptor_limit() {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit (RLIMIT_NOFILE)");
            return requested.unwrap_or(proxy::DEFAULT_MAX_CONNECTIONS);
        }
    };
    let per_shard = descriptors.saturating_sub(RESERVED_DESCRIPTORS) / (2 * shards.max(1) as u64);
    let fits = usize::try_from(per_shard).unwrap_or(usize::MAX).max(1);
    match requested {
        Some(n) => {
            if n > fits {
                tracing::warn!(
                    max_connections = n,
                    shards,
                    open_file_limit = descriptors,
                    "--max-connections is more than the open-file limit allows (each client connection may need an upstream one too): raise `ulimit -n` (LimitNOFILE= for systemd)"
                );
            }
            n
        }
        None => fits.min(proxy::DEFAULT_MAX_CONNECTIONS),
    }
}

/// Fails clearly when a listener's address is taken — also by another process that
/// uses `SO_REUSEPORT` (another ringress), which the shards' own reuseport sockets
/// would otherwise silently share the port with. The probe binds without listening,
/// so no client can reach it.
fn probe_listeners(addrs: impl Iterator<Item = SocketAddr>) -> anyhow::Result<()> {
    for addr in addrs {
        if let Err(e) = uring::probe_exclusive_bind(addr) {
            anyhow::bail!("cannot listen on {addr}: {e}{}", bind_hint(&e, addr));
        }
    }
    Ok(())
}

/// What to do about a bind error: a privileged port without the right, or a port
/// another process holds.
pub(crate) fn bind_hint(error: &std::io::Error, addr: SocketAddr) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            "; ports below 1024 need root or the CAP_NET_BIND_SERVICE capability (`sudo setcap cap_net_bind_service=+ep $(which ringress)`, or AmbientCapabilities=CAP_NET_BIND_SERVICE in a systemd unit), or use a port from 1024 up"
        }
        std::io::ErrorKind::AddrInUse => " (is another process, or another ringress, using it?)",
        _ => "",
    }
}

/// Logs what a snapshot serves, and warns about certificates already expired.
fn log_serving(snapshot: &Snapshot) {
    for listener in &snapshot.listeners {
        for cert in &listener.certificates {
            let Some(leaf) = &cert.leaf else { continue };
            if leaf.days_until_expiry < 0 {
                tracing::warn!(
                    certificate = %cert.source,
                    days = -leaf.days_until_expiry,
                    "serving an expired certificate; clients will refuse it"
                );
            }
            for warning in &leaf.warnings {
                tracing::warn!(
                    certificate = %cert.source,
                    subject = %leaf.subject,
                    "serving a certificate some clients refuse: {warning}"
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

/// Runs the gateway until SIGTERM or SIGINT. SIGHUP, `POST /reload` on the admin
/// endpoint and changes to watched files reload the configuration.
pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    upgrade::remember_command_line();
    let (events, inbox) = crossbeam_channel::unbounded();
    // Registered before the shards start, so an early SIGHUP cannot kill the process.
    forward_signals(events.clone())?;
    // The watcher takes its baseline right after the configuration is read and before
    // anything is built from it, so a file changed while ringress starts still triggers
    // a reload.
    let config = config::load(&opts.config)?;
    let watcher = if opts.watch {
        let paths = watch::watched_paths(
            &config,
            &opts.config,
            opts.secrets_dir.as_deref(),
            opts.session_ticket_keys.as_deref(),
        );
        let events = events.clone();
        let watcher = watch::Watcher::spawn(paths, move |cause| {
            let _ = events.send(ControlEvent::Reload { cause, reply: None });
        })
        .context("cannot start the certificate watcher")?;
        Some(watcher)
    } else {
        None
    };
    // A binary upgrade: the listening sockets of the ringress serving now, taken
    // once this one's configuration loaded (dropped unused if the rest of the start
    // fails: the old process then serves on).
    let mut inherited = match &opts.upgrade_socket {
        Some(path) => upgrade::take_over(path)?,
        None => None,
    };
    if let Some(inherited) = &inherited {
        tracing::info!(
            from_pid = inherited.from_pid,
            sockets = inherited.len(),
            "binary upgrade: took over the listening sockets"
        );
    }
    let mut gateway = start(&opts, config, &events, inherited.as_mut())?;
    spawn_key_refresh(opts.jwks_refresh, events.clone())?;
    health_check::spawn(gateway.status.clone())?;
    let mut endpoints = Vec::new();
    for (addr, routes, holder) in [
        (opts.admin, admin::Routes::Admin, upgrade::Holder::Admin),
        (opts.health, admin::Routes::Health, upgrade::Holder::Health),
    ] {
        let Some(addr) = addr else { continue };
        let listener = admin::listen(addr, routes, inherited.as_mut())?;
        endpoints.push(admin::spawn(
            listener,
            routes,
            gateway.status.clone(),
            events.clone(),
            Some((gateway.listeners.clone(), holder)),
        )?);
    }
    let offer = match &opts.upgrade_socket {
        Some(path) => Some(upgrade::offer(
            path,
            gateway.listeners.clone(),
            events.clone(),
        )?),
        None => None,
    };
    match inherited {
        Some(inherited) => {
            let from = inherited.from_pid;
            notify::notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
            match inherited.serving() {
                Ok(()) => tracing::info!(
                    from_pid = from,
                    "binary upgrade: serving; the old process drains"
                ),
                Err(e) => tracing::error!(from_pid = from, "binary upgrade: {e:#}"),
            }
        }
        None => notify::notify("READY=1"),
    }
    if let Some(watcher) = &watcher {
        watcher.set_paths(gateway.watched_paths());
        tracing::info!(
            mode = watcher.mode(),
            "watching certificates and configuration"
        );
    }
    let ended = serve_events(&mut gateway, &inbox, watcher.as_ref());
    // After a binary upgrade the new process is the service: systemd hears nothing.
    if !offer.as_ref().is_some_and(upgrade::Offer::handed_over) {
        notify::notify("STOPPING=1");
    }
    gateway.drain();
    drop(endpoints);
    match ended {
        Ended::Stopped => {
            tracing::info!("stopped");
            Ok(())
        }
        Ended::ShardDown(down) => Err(anyhow::anyhow!(
            "shard {} stopped unexpectedly ({}); exiting so that the service manager restarts ringress",
            down.id,
            down.reason
        )),
    }
}

/// Why the control loop ended.
enum Ended {
    /// SIGTERM, SIGINT, or every event sender gone.
    Stopped,
    ShardDown(ShardDown),
}

/// Asks the control loop to fetch the remote JWT key sets again every `interval`
/// (a zero interval: never).
fn spawn_key_refresh(interval: Duration, events: Sender<ControlEvent>) -> anyhow::Result<()> {
    if interval.is_zero() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("ringress-jwks".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                if events.send(ControlEvent::RefreshKeys).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the JWKS refresh thread")?;
    Ok(())
}

/// Turns SIGHUP into a reload, SIGTERM/SIGINT into a stop and SIGUSR2 into a binary
/// upgrade.
fn forward_signals(events: Sender<ControlEvent>) -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT, SIGUSR2])
        .context("cannot install the SIGHUP/SIGTERM/SIGUSR2 handlers")?;
    std::thread::Builder::new()
        .name("ringress-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let event = match signal {
                    SIGHUP => ControlEvent::Reload {
                        cause: "SIGHUP".into(),
                        reply: None,
                    },
                    SIGTERM => ControlEvent::Stop {
                        cause: "SIGTERM".into(),
                    },
                    SIGUSR2 => ControlEvent::Upgrade,
                    _ => ControlEvent::Stop {
                        cause: "SIGINT".into(),
                    },
                };
                if events.send(event).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// The control loop: reloads as asked (several queued requests make one reload) until
/// told to stop or a shard goes down.
fn serve_events(
    gateway: &mut Gateway,
    inbox: &Receiver<ControlEvent>,
    watcher: Option<&watch::Watcher>,
) -> Ended {
    while let Ok(event) = inbox.recv() {
        let mut causes = Vec::new();
        let mut replies = Vec::new();
        let mut stop = None;
        let mut down = None;
        let mut refresh = false;
        let mut upgrade = false;
        for event in std::iter::once(event).chain(inbox.try_iter()) {
            match event {
                ControlEvent::Reload { cause, reply } => {
                    causes.push(cause);
                    replies.extend(reply);
                }
                ControlEvent::Stop { cause } => stop = Some(cause),
                ControlEvent::ShardDown(shard) => down = Some(shard),
                ControlEvent::RefreshKeys => refresh = true,
                ControlEvent::Upgrade => upgrade = true,
            }
        }
        if let Some(shard) = down {
            let reason = format!("shard {} stopped: {}", shard.id, shard.reason);
            tracing::error!(
                shard = shard.id,
                reason = %shard.reason,
                "a shard thread stopped; draining the others and exiting with an error"
            );
            gateway.status.set_failed(reason.clone());
            for reply in replies {
                let _ = reply.send(Err(reason.clone()));
            }
            return Ended::ShardDown(shard);
        }
        if let Some(cause) = stop {
            tracing::info!(%cause, drain_timeout = ?gateway.opts.drain_timeout, "stopping: draining connections");
            for reply in replies {
                let _ = reply.send(Err("ringress is stopping".into()));
            }
            return Ended::Stopped;
        }
        if upgrade {
            start_successor(gateway.opts.upgrade_socket.is_some());
        }
        if causes.is_empty() {
            // Only the refresh timer: a reload fetches what it needs itself.
            if refresh {
                gateway.refresh_keys();
            }
            continue;
        }
        let cause = causes.join(", ");
        let outcome = gateway.reload().map_err(|e| format!("{e:#}"));
        // Before the outcome is told: what the reload named is watched from its state
        // as the reload left it.
        if let Some(watcher) = watcher {
            watcher.set_paths(gateway.watched_paths());
        }
        match &outcome {
            Ok(generation) => tracing::info!(generation, %cause, "configuration reloaded"),
            Err(error) => {
                tracing::error!(%cause, "reload failed, still serving the previous configuration: {error}")
            }
        }
        gateway.status.record_reload(ReloadRecord {
            at: SystemTime::now(),
            cause,
            outcome: outcome.clone(),
        });
        for reply in replies {
            let _ = reply.send(outcome.clone());
        }
    }
    Ended::Stopped
}

/// SIGUSR2: starts the successor process of a binary upgrade (it needs the upgrade
/// socket to take the listeners over).
fn start_successor(have_socket: bool) {
    if !have_socket {
        tracing::error!(
            "SIGUSR2 starts a binary upgrade, which needs --upgrade-socket PATH; still serving"
        );
        return;
    }
    match upgrade::spawn_successor() {
        Ok(pid) => tracing::info!(pid, "binary upgrade: started the new process"),
        Err(e) => tracing::error!("binary upgrade: {e:#}; still serving"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_errors_say_what_to_do() {
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let low: SocketAddr = "0.0.0.0:443".parse().unwrap();
        assert!(bind_hint(&denied, low).contains("CAP_NET_BIND_SERVICE"));
        assert_eq!(bind_hint(&denied, "0.0.0.0:8443".parse().unwrap()), "");
        let taken = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        assert!(bind_hint(&taken, low).contains("another process"));
    }
}
