//! Shard threads: one per core, pinned to CPU i, each with its own io_uring ring, its
//! own `SO_REUSEPORT` listener for every Gateway port, its own upstream pools and load
//! balancer state.
//!
//! The control thread starts shards one at a time and waits until each has bound its
//! listeners, so that shard i holds index i of every reuseport group (what
//! `--steer-by-cpu` relies on) and a port that cannot be bound stops start-up with a
//! clear error. Afterwards the control thread talks to a shard only through its
//! mailbox: a channel of [`ShardMessage`]s plus an eventfd that wakes the ring. A new
//! snapshot may add or remove listeners; the shard opens and closes its sockets to
//! match. A drain closes every listener, lets open connections finish their current
//! request (idle keep-alive connections close at once), and ends the thread.
//!
//! Failure containment: each connection is an isolated task, so a panic while serving
//! one closes that connection and nothing else (counted in
//! [`ShardStats::connection_panics`]). A shard thread that ends any other way than by
//! a drain — its mailbox loop or an accept loop panicked — tells its supervisor
//! through [`ShardOptions::on_down`]; the control thread then stops the process with
//! an error, so that systemd or Kubernetes restart it instead of leaving a port whose
//! listeners are gone.

pub(crate) mod admission;
pub(crate) mod log_limit;
pub(crate) mod stats;
pub(crate) mod stop;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

pub(crate) use admission::Admitted;
pub(crate) use log_limit::LogLimit;
pub(crate) use stats::{ShardStats, StatusCounters};
pub(crate) use stop::StopSignal;

use crate::access_log::{LogHandle, Record, ShardLog};
use crate::auth::{KeyRing, TokenCache};
use crate::control::upgrade::{Holder, OpenListeners};
use crate::proxy::Settings;
use crate::snapshot::Snapshot;
use crate::upstream::{Balancer, ClusterId, Pool};
use crate::uring::{self, ListenOptions, Listener, NotifyHandle, RingOptions, Runtime};

/// What a shard thread needs to start.
pub(crate) struct ShardOptions {
    pub(crate) id: usize,
    /// Shards of the gateway (per-cluster connection caps are shared out by it).
    pub(crate) shards: usize,
    /// The CPU to pin to; `None` leaves the thread unpinned.
    pub(crate) cpu: Option<core_affinity::CoreId>,
    /// Attach the reuseport CPU-steering program (done by shard 0 once the group exists).
    pub(crate) steer_by_cpu: bool,
    pub(crate) settings: Settings,
    /// Hears the shard thread end without having been told to drain.
    pub(crate) on_down: OnDown,
    /// The JWT key sets fetched before the shard starts.
    pub(crate) keys: Arc<KeyRing>,
    /// The access log writer, when the log is on.
    pub(crate) access_log: Option<LogHandle>,
    /// Where the shard records its listening sockets for a binary upgrade.
    pub(crate) listeners: Arc<OpenListeners>,
    /// Listening sockets taken over from the process before (a binary upgrade),
    /// served instead of binding new ones for their addresses.
    pub(crate) adopted: Vec<(SocketAddr, OwnedFd)>,
}

/// A shard thread that ended without a drain, and why.
#[derive(Debug, Clone)]
pub(crate) struct ShardDown {
    pub(crate) id: usize,
    pub(crate) reason: String,
}

/// Called on a shard's own thread when it ends without a drain.
pub(crate) type OnDown = Arc<dyn Fn(ShardDown) + Send + Sync>;

/// What the control thread tells a shard.
pub(crate) enum ShardMessage {
    /// Serve this snapshot from now on (open or close listeners to match it).
    Snapshot(Arc<Snapshot>),
    /// Verify tokens with these key sets from now on.
    Keys(Arc<KeyRing>),
    /// Stop accepting, let open connections finish within this time, then end.
    Drain(Duration),
}

/// The control thread's handle on a running shard.
pub(crate) struct ShardHandle {
    pub(crate) id: usize,
    pub(crate) stats: Arc<ShardStats>,
    mailbox: Sender<ShardMessage>,
    wake: NotifyHandle,
    thread: Option<thread::JoinHandle<()>>,
}

impl ShardHandle {
    /// Hands the shard a new snapshot; new connections and the next request of open
    /// ones use it. `false` when the shard thread is gone.
    pub(crate) fn publish(&self, snapshot: Arc<Snapshot>) -> bool {
        self.send(ShardMessage::Snapshot(snapshot))
    }

    /// Hands the shard newly fetched JWT key sets. `false` when the shard is gone.
    pub(crate) fn publish_keys(&self, keys: Arc<KeyRing>) -> bool {
        self.send(ShardMessage::Keys(keys))
    }

    /// Asks the shard to drain and end.
    pub(crate) fn drain(&self, within: Duration) {
        self.send(ShardMessage::Drain(within));
    }

    fn send(&self, message: ShardMessage) -> bool {
        let sent = self.mailbox.send(message).is_ok();
        if sent {
            self.wake.notify();
        }
        sent
    }

    /// Waits for the shard thread to end.
    pub(crate) fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Why a shard could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShardError {
    #[error("shard {id}: {message}")]
    Start { id: usize, message: String },
}

/// Starts one shard and waits until its listeners are bound.
pub(crate) fn spawn(
    opts: ShardOptions,
    snapshot: Arc<Snapshot>,
) -> Result<ShardHandle, ShardError> {
    let id = opts.id;
    let start_error = |message: String| ShardError::Start { id, message };
    let (mailbox, inbox) = crossbeam_channel::unbounded();
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<NotifyHandle, String>>(1);
    let stats = Arc::new(ShardStats::default());
    let shard_stats = stats.clone();
    let thread = thread::Builder::new()
        .name(format!("ringress-shard-{id}"))
        .spawn(move || {
            let on_down = opts.on_down.clone();
            let stats = shard_stats.clone();
            let run = AssertUnwindSafe(|| shard_main(opts, snapshot, shard_stats, inbox, ready_tx));
            let ended = catch_unwind(run);
            stats.set_running(false);
            if let Err(payload) = ended {
                let reason = format!("panicked: {}", uring::panic_message(&*payload));
                on_down(ShardDown { id, reason });
            }
        })
        .map_err(|e| start_error(format!("cannot start thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(wake)) => Ok(ShardHandle {
            id,
            stats,
            mailbox,
            wake,
            thread: Some(thread),
        }),
        Ok(Err(message)) => {
            let _ = thread.join();
            Err(start_error(message))
        }
        Err(_) => {
            let _ = thread.join();
            Err(start_error("thread ended during start-up".into()))
        }
    }
}

/// What every connection task of a shard shares. Single-threaded: `RefCell`s are
/// borrowed briefly and never across an `.await`.
pub(crate) struct ShardContext {
    pub(crate) id: usize,
    /// Shards of the gateway, this one included.
    pub(crate) shards: usize,
    pub(crate) settings: Settings,
    snapshot: RefCell<Arc<Snapshot>>,
    /// The JWT key sets the control thread fetched last.
    keys: RefCell<Arc<KeyRing>>,
    /// Tokens that verified, for the requests after (see [`TokenCache`]).
    pub(crate) tokens: RefCell<TokenCache>,
    pub(crate) pool: RefCell<Pool>,
    balancers: RefCell<Balancers>,
    pub(crate) stats: Arc<ShardStats>,
    /// Set when the shard drains: connections close after their current request.
    pub(crate) draining: StopSignal,
    /// The stop signal of each open listener's accept loop, by address.
    listeners: RefCell<HashMap<SocketAddr, Rc<StopSignal>>>,
    /// Open connections per client address (`--max-connections-per-client`).
    clients: admission::Clients,
    /// Rate limits of the warnings about refused connections and failed accepts, and
    /// of the log of failed TLS handshakes.
    refusals_log: LogLimit,
    accept_log: LogLimit,
    pub(crate) tls_log: LogLimit,
    /// This shard's side of the access log.
    pub(crate) access_log: ShardLog,
    /// Where this shard's listening sockets are offered to a binary upgrade.
    offered: Arc<OpenListeners>,
}

/// Load-balancer state for the clusters of one snapshot generation.
struct Balancers {
    generation: u64,
    by_cluster: Vec<Balancer>,
}

impl ShardContext {
    fn new(opts: &ShardOptions, snapshot: Arc<Snapshot>, stats: Arc<ShardStats>) -> ShardContext {
        let balancers = Balancers::for_snapshot(&snapshot);
        ShardContext {
            id: opts.id,
            shards: opts.shards,
            settings: opts.settings,
            snapshot: RefCell::new(snapshot),
            keys: RefCell::new(opts.keys.clone()),
            tokens: RefCell::new(TokenCache::default()),
            pool: RefCell::new(Pool::default()),
            balancers: RefCell::new(balancers),
            stats,
            draining: StopSignal::default(),
            listeners: RefCell::new(HashMap::new()),
            clients: admission::Clients::default(),
            refusals_log: LogLimit::new(1),
            accept_log: LogLimit::new(1),
            tls_log: LogLimit::new(10),
            access_log: ShardLog::new(opts.access_log.clone()),
            offered: opts.listeners.clone(),
        }
    }

    /// The newest snapshot this shard has received.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// The newest JWT key sets this shard has received.
    pub(crate) fn keys(&self) -> Arc<KeyRing> {
        self.keys.borrow().clone()
    }

    /// Serves `snapshot` from now on: opens the listeners it adds (the control thread
    /// checked their addresses are free) and stops those it removes.
    fn install(self: &Rc<Self>, snapshot: Arc<Snapshot>) {
        let wanted: Vec<(SocketAddr, u16)> = snapshot
            .listeners
            .iter()
            .map(|l| (l.addr, l.port()))
            .collect();
        self.listeners.borrow_mut().retain(|addr, stop| {
            let keep = wanted.iter().any(|(a, _)| a == addr);
            if !keep {
                tracing::info!(shard = self.id, %addr, "listener closed");
                self.offered.remove(Holder::Shard(self.id), *addr);
                stop.stop();
            }
            keep
        });
        for (addr, port) in wanted {
            if self.listeners.borrow().contains_key(&addr) {
                continue;
            }
            match Listener::bind(addr, self.listen_options()) {
                Ok(listener) => self.serve_listener(listener, addr, port),
                Err(e) => {
                    let hint = crate::control::bind_hint(&e, addr);
                    tracing::error!(shard = self.id, %addr, "cannot open listener: {e}{hint}")
                }
            }
        }
        *self.balancers.borrow_mut() = Balancers::for_snapshot(&snapshot);
        *self.snapshot.borrow_mut() = snapshot;
    }

    /// How this shard's listeners are bound: `SO_REUSEPORT`, and `TCP_USER_TIMEOUT`
    /// at the idle timeout (a client gone without a word is given up as late as a
    /// silent one).
    fn listen_options(&self) -> ListenOptions {
        ListenOptions {
            user_timeout: Some(self.settings.timeouts.idle),
            ..ListenOptions::default()
        }
    }

    /// Starts the accept loop of a bound listener (several for one address share its
    /// stop signal: an upgrade from a process with more shards hands over more
    /// sockets of the reuseport group than this one has shards).
    fn serve_listener(self: &Rc<Self>, listener: Listener, addr: SocketAddr, port: u16) {
        self.offered
            .add(Holder::Shard(self.id), addr, listener.as_fd());
        let stop = self
            .listeners
            .borrow_mut()
            .entry(addr)
            .or_insert_with(|| Rc::new(StopSignal::default()))
            .clone();
        // A listener lost to a panic would leave its port refusing connections while
        // the process looks healthy: the shard goes down instead (see the module doc).
        uring::spawn_critical(accept_loop(listener, port, stop, self.clone()));
    }

    /// Closes every listener and tells connections to finish; returns when none is
    /// left or `within` has passed.
    async fn drain(&self, within: Duration) {
        for (_, stop) in self.listeners.borrow_mut().drain() {
            stop.stop();
        }
        self.draining.stop();
        let deadline = Instant::now() + within;
        while ShardStats::get(&self.stats.active_connections) > 0 && Instant::now() < deadline {
            uring::sleep(Duration::from_millis(20)).await;
        }
        let left = ShardStats::get(&self.stats.active_connections);
        if left > 0 {
            tracing::warn!(
                shard = self.id,
                connections = left,
                "drain timeout: closing connections still open"
            );
        }
    }

    /// Whether `cluster` has this shard's share of its `http2MaxRequests` in flight.
    pub(crate) fn requests_full(&self, snapshot: &Snapshot, cluster: ClusterId) -> Option<u32> {
        let limit = snapshot
            .clusters
            .get(cluster)
            .pool
            .shard_requests(self.shards);
        let mut balancers = self.balancers.borrow_mut();
        let balancer = balancers.get(snapshot, cluster)?;
        (balancer.in_flight >= limit).then_some(limit)
    }

    /// Chooses an endpoint of `cluster` by its load-balancing policy (`hash`: the
    /// request's, for a consistent-hash cluster) and counts a request started on it.
    /// `None` when the cluster has no endpoints.
    pub(crate) fn pick_endpoint(
        &self,
        snapshot: &Snapshot,
        cluster: ClusterId,
        hash: Option<u64>,
    ) -> Option<(usize, SocketAddr)> {
        let spec = snapshot.clusters.get(cluster);
        if spec.endpoints.is_empty() {
            return None;
        }
        let mut balancers = self.balancers.borrow_mut();
        let balancer = balancers.get(snapshot, cluster)?;
        let endpoint = balancer.pick(spec, hash, uring::now())?;
        balancer.started(endpoint);
        spec.endpoints.get(endpoint).map(|addr| (endpoint, *addr))
    }

    /// A retry of a request to `cluster`, if the cluster has fewer than this shard's
    /// share of its `maxRetries` in flight (Envoy's retry circuit breaker); it
    /// counts until the ticket is dropped. `None` (counted as a retry overflow):
    /// the request is not retried.
    pub(crate) fn begin_retry(
        self: &Rc<Self>,
        snapshot: &Snapshot,
        cluster: ClusterId,
    ) -> Option<RetryTicket> {
        let limit = snapshot
            .clusters
            .get(cluster)
            .pool
            .shard_retries(self.shards);
        let mut balancers = self.balancers.borrow_mut();
        // A request still on an older snapshot is not counted (its cluster's state
        // is gone).
        if let Some(balancer) = balancers.get(snapshot, cluster) {
            if balancer.retrying >= limit {
                ShardStats::add(&self.stats.retry_overflows);
                return None;
            }
            balancer.retrying += 1;
        }
        Some(RetryTicket {
            ctx: self.clone(),
            generation: snapshot.generation,
            cluster,
        })
    }

    /// Counts a request on an endpoint as finished (for LEAST_REQUEST).
    pub(crate) fn finished(&self, snapshot: &Snapshot, cluster: ClusterId, endpoint: usize) {
        if let Some(balancer) = self.balancers.borrow_mut().get(snapshot, cluster) {
            balancer.finished(endpoint);
        }
    }
}

/// A retry in flight, counted against its cluster's `maxRetries` until dropped.
pub(crate) struct RetryTicket {
    ctx: Rc<ShardContext>,
    generation: u64,
    cluster: ClusterId,
}

impl Drop for RetryTicket {
    fn drop(&mut self) {
        let mut balancers = self.ctx.balancers.borrow_mut();
        if balancers.generation == self.generation
            && let Some(balancer) = balancers.by_cluster.get_mut(self.cluster.0 as usize)
        {
            balancer.retrying = balancer.retrying.saturating_sub(1);
        }
    }
}

impl Balancers {
    fn for_snapshot(snapshot: &Snapshot) -> Balancers {
        Balancers {
            generation: snapshot.generation,
            by_cluster: snapshot
                .clusters
                .iter()
                .map(|(_, cluster)| Balancer::new(cluster))
                .collect(),
        }
    }

    /// The balancer of `cluster`, if `snapshot` is the generation this state is for
    /// (a connection still finishing a request on an older snapshot gets none).
    fn get(&mut self, snapshot: &Snapshot, cluster: ClusterId) -> Option<&mut Balancer> {
        if snapshot.generation != self.generation {
            return None;
        }
        self.by_cluster.get_mut(cluster.0 as usize)
    }
}

fn shard_main(
    opts: ShardOptions,
    snapshot: Arc<Snapshot>,
    stats: Arc<ShardStats>,
    inbox: Receiver<ShardMessage>,
    ready: Sender<Result<NotifyHandle, String>>,
) {
    if let Some(cpu) = opts.cpu
        && !core_affinity::set_for_current(cpu)
    {
        tracing::warn!(
            shard = opts.id,
            cpu = cpu.id,
            "could not pin shard to its CPU"
        );
    }
    let runtime = match Runtime::new(RingOptions::default()) {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let panic_stats = stats.clone();
    let shard = opts.id;
    runtime.on_task_panic(move |message| {
        ShardStats::add(&panic_stats.connection_panics);
        tracing::error!(
            shard,
            panic = message,
            "a connection's task panicked; that connection was closed, the shard serves on"
        );
    });
    runtime.block_on(async move {
        let ctx = Rc::new(ShardContext::new(&opts, snapshot.clone(), stats));
        let (wake, waiter) = match uring::notify_pair() {
            Ok(pair) => pair,
            Err(e) => {
                let _ = ready.send(Err(format!("cannot create the mailbox eventfd: {e}")));
                return;
            }
        };
        let mut listeners = Vec::new();
        let mut adopted = opts.adopted;
        for spec in &snapshot.listeners {
            let inherited: Vec<OwnedFd> = adopted
                .extract_if(.., |(addr, _)| *addr == spec.addr)
                .map(|(_, fd)| fd)
                .collect();
            if inherited.is_empty() {
                match Listener::bind(spec.addr, ctx.listen_options()) {
                    Ok(listener) => listeners.push((spec.addr, spec.port(), listener)),
                    Err(e) => {
                        let hint = crate::control::bind_hint(&e, spec.addr);
                        let _ =
                            ready.send(Err(format!("cannot listen on {}: {e}{hint}", spec.addr)));
                        return;
                    }
                }
            }
            for fd in inherited {
                match Listener::adopt(fd, spec.addr, ctx.listen_options()) {
                    Ok(listener) => listeners.push((spec.addr, spec.port(), listener)),
                    Err(e) => {
                        let _ = ready.send(Err(format!(
                            "cannot serve the listener of {} taken over from the old process: {e}",
                            spec.addr
                        )));
                        return;
                    }
                }
            }
        }
        if opts.steer_by_cpu && opts.id == 0 {
            for (addr, _, listener) in &listeners {
                if let Err(e) = listener.steer_by_cpu() {
                    let _ = ready.send(Err(format!(
                        "cannot attach the CPU steering program to {addr}: {e}"
                    )));
                    return;
                }
            }
        }
        for (addr, port, listener) in listeners {
            ctx.serve_listener(listener, addr, port);
        }
        uring::spawn(sweep_pool(ctx.clone()));
        if ctx.access_log.is_on() {
            uring::spawn(flush_access_log(ctx.clone()));
        }
        ctx.stats.set_running(true);
        let _ = ready.send(Ok(wake));
        tracing::debug!(shard = ctx.id, "shard serving");
        // The mailbox: install the newest snapshot published; drain when told.
        loop {
            waiter.wait().await;
            let mut newest = None;
            let mut drain = None;
            while let Ok(message) = inbox.try_recv() {
                match message {
                    ShardMessage::Snapshot(snapshot) => newest = Some(snapshot),
                    ShardMessage::Keys(keys) => *ctx.keys.borrow_mut() = keys,
                    ShardMessage::Drain(within) => drain = Some(within),
                }
            }
            if let Some(snapshot) = newest {
                #[cfg(debug_assertions)]
                test_fault(ctx.id);
                tracing::debug!(
                    shard = ctx.id,
                    generation = snapshot.generation,
                    "snapshot installed"
                );
                ctx.install(snapshot);
            }
            if let Some(within) = drain {
                ctx.drain(within).await;
                ctx.flush_access_log();
                break;
            }
        }
    });
}

/// How often a shard hands its access log lines to the writer at least.
const ACCESS_LOG_FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Hands the access log lines to the writer at least every
/// [`ACCESS_LOG_FLUSH_EVERY`], so a quiet shard's lines appear soon.
async fn flush_access_log(ctx: Rc<ShardContext>) {
    loop {
        uring::sleep(ACCESS_LOG_FLUSH_EVERY).await;
        ctx.flush_access_log();
    }
}

impl ShardContext {
    /// Writes the access log line of `record` (counting lines the writer dropped).
    pub(crate) fn log_request(&self, record: &Record) {
        ShardStats::add_n(&self.stats.access_log_dropped, self.access_log.log(record));
    }

    fn flush_access_log(&self) {
        ShardStats::add_n(&self.stats.access_log_dropped, self.access_log.flush());
    }
}

/// How often the upstream pool closes its expired and closed idle connections.
const POOL_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Closes the pool's expired idle connections and those their upstream closed, so
/// they hold no descriptor until a request would have found them.
async fn sweep_pool(ctx: Rc<ShardContext>) {
    loop {
        uring::sleep(POOL_SWEEP_EVERY).await;
        ctx.pool.borrow_mut().sweep();
    }
}

/// Fault injection for the tests of shard supervision, in debug builds only: with
/// `RINGRESS_TEST_PANIC_SHARD=N`, shard N's mailbox loop panics when a reload hands it
/// a snapshot, as a bug there would (`tests/hostile.rs`).
#[cfg(debug_assertions)]
fn test_fault(shard: usize) {
    if std::env::var("RINGRESS_TEST_PANIC_SHARD").is_ok_and(|v| v == shard.to_string()) {
        panic!("RINGRESS_TEST_PANIC_SHARD={shard}: the injected fault");
    }
}

async fn accept_loop(listener: Listener, port: u16, stop: Rc<StopSignal>, ctx: Rc<ShardContext>) {
    while let Some(accepted) = stop.or_stop(listener.accept()).await {
        match accepted {
            Ok((stream, peer)) => ctx.serve_accepted(stream, peer, port),
            Err(e) => {
                // EMFILE and friends: note it and keep accepting; the ring re-arms.
                ShardStats::add(&ctx.stats.accept_failures);
                if let Some(left_out) = ctx.accept_log.allow() {
                    tracing::warn!(shard = ctx.id, port, error = %e, also_failed = left_out, "accept failed");
                }
                uring::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    // Stopped (a drain, or a reload without this address): the connections the ring
    // accepted before the cancel are served, not dropped.
    for (stream, peer) in listener.stop_accepting().await {
        ctx.serve_accepted(stream, peer, port);
    }
}

impl ShardContext {
    /// Serves an accepted connection, or resets it when admission refuses it.
    fn serve_accepted(self: &Rc<Self>, stream: uring::TcpStream, peer: SocketAddr, port: u16) {
        match self.admit(peer.ip()) {
            Ok(admitted) => uring::spawn(crate::proxy::serve(stream, peer, port, admitted)),
            Err(_) => {
                // Counted and logged by `admit`; the client sees a reset.
                let _ = stream.reset_on_close();
            }
        }
    }
}
