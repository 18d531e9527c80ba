//! Shard threads: one per core, pinned to CPU i, each with its own io_uring ring, its
//! own `SO_REUSEPORT` listener for every Gateway port, its own upstream pools and load
//! balancer state.
//!
//! The control thread starts shards one at a time and waits until each has bound its
//! listeners, so that shard i holds index i of every reuseport group (what
//! `--steer-by-cpu` relies on) and a port that cannot be bound stops start-up with a
//! clear error. Afterwards the control thread talks to a shard only through its
//! mailbox: a channel of new snapshots plus an eventfd that wakes the ring.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender};

use crate::proxy::Timeouts;
use crate::snapshot::Snapshot;
use crate::upstream::{Balancer, ClusterId, Pool};
use crate::uring::{self, ListenOptions, Listener, NotifyHandle, RingOptions, Runtime};

/// What a shard thread needs to start.
pub struct ShardOptions {
    pub id: usize,
    /// The CPU to pin to; `None` leaves the thread unpinned.
    pub cpu: Option<core_affinity::CoreId>,
    /// Attach the reuseport CPU-steering program (done by shard 0 once the group exists).
    pub steer_by_cpu: bool,
    pub timeouts: Timeouts,
}

/// The control thread's handle on a running shard.
pub struct ShardHandle {
    pub id: usize,
    mailbox: Sender<Arc<Snapshot>>,
    wake: NotifyHandle,
    thread: Option<thread::JoinHandle<()>>,
}

impl ShardHandle {
    /// Hands the shard a new snapshot; new connections and the next request of open
    /// ones use it.
    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        if self.mailbox.send(snapshot).is_ok() {
            self.wake.notify();
        }
    }

    /// Waits for the shard thread to end.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Why a shard could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("shard {id}: {message}")]
    Start { id: usize, message: String },
}

/// Starts one shard and waits until its listeners are bound.
pub fn spawn(opts: ShardOptions, snapshot: Arc<Snapshot>) -> Result<ShardHandle, ShardError> {
    let id = opts.id;
    let start_error = |message: String| ShardError::Start { id, message };
    let (mailbox, inbox) = crossbeam_channel::unbounded();
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<NotifyHandle, String>>(1);
    let thread = thread::Builder::new()
        .name(format!("ringress-shard-{id}"))
        .spawn(move || shard_main(opts, snapshot, inbox, ready_tx))
        .map_err(|e| start_error(format!("cannot start thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(wake)) => Ok(ShardHandle {
            id,
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
pub struct ShardContext {
    pub id: usize,
    pub timeouts: Timeouts,
    snapshot: RefCell<Arc<Snapshot>>,
    pub pool: RefCell<Pool>,
    balancers: RefCell<Balancers>,
    /// Open client connections.
    pub connections: Cell<u64>,
}

/// Load-balancer state for the clusters of one snapshot generation.
struct Balancers {
    generation: u64,
    by_cluster: Vec<Balancer>,
}

impl ShardContext {
    fn new(id: usize, timeouts: Timeouts, snapshot: Arc<Snapshot>) -> ShardContext {
        let balancers = Balancers::for_snapshot(&snapshot);
        ShardContext {
            id,
            timeouts,
            snapshot: RefCell::new(snapshot),
            pool: RefCell::new(Pool::default()),
            balancers: RefCell::new(balancers),
            connections: Cell::new(0),
        }
    }

    /// The newest snapshot this shard has received.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    fn install(&self, snapshot: Arc<Snapshot>) {
        *self.balancers.borrow_mut() = Balancers::for_snapshot(&snapshot);
        *self.snapshot.borrow_mut() = snapshot;
    }

    /// Chooses an endpoint of `cluster` by its load-balancing policy and counts a
    /// request started on it. `None` when the cluster has no endpoints.
    pub fn pick_endpoint(
        &self,
        snapshot: &Snapshot,
        cluster: ClusterId,
    ) -> Option<(usize, SocketAddr)> {
        let spec = snapshot.clusters.get(cluster);
        if spec.endpoints.is_empty() {
            return None;
        }
        let mut balancers = self.balancers.borrow_mut();
        let balancer = balancers.get(snapshot, cluster)?;
        let endpoint = balancer.pick(spec);
        balancer.started(endpoint);
        spec.endpoints.get(endpoint).map(|addr| (endpoint, *addr))
    }

    /// Counts a request on an endpoint as finished (for LEAST_REQUEST).
    pub fn finished(&self, snapshot: &Snapshot, cluster: ClusterId, endpoint: usize) {
        if let Some(balancer) = self.balancers.borrow_mut().get(snapshot, cluster) {
            balancer.finished(endpoint);
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
    inbox: Receiver<Arc<Snapshot>>,
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
    runtime.block_on(async move {
        let ctx = Rc::new(ShardContext::new(opts.id, opts.timeouts, snapshot.clone()));
        let (wake, waiter) = match uring::notify_pair() {
            Ok(pair) => pair,
            Err(e) => {
                let _ = ready.send(Err(format!("cannot create the mailbox eventfd: {e}")));
                return;
            }
        };
        let mut listeners = Vec::new();
        for spec in &snapshot.listeners {
            match Listener::bind(spec.addr, ListenOptions::default()) {
                Ok(listener) => listeners.push((spec.port(), listener)),
                Err(e) => {
                    let _ = ready.send(Err(format!("cannot listen on {}: {e}", spec.addr)));
                    return;
                }
            }
        }
        if opts.steer_by_cpu && opts.id == 0 {
            for (port, listener) in &listeners {
                if let Err(e) = listener.steer_by_cpu() {
                    let _ = ready.send(Err(format!(
                        "cannot attach the CPU steering program to port {port}: {e}"
                    )));
                    return;
                }
            }
        }
        for (port, listener) in listeners {
            uring::spawn(accept_loop(listener, port, ctx.clone()));
        }
        let _ = ready.send(Ok(wake));
        tracing::debug!(shard = ctx.id, "shard serving");
        // The mailbox: install every snapshot the control thread publishes.
        loop {
            waiter.wait().await;
            let mut newest = None;
            while let Ok(snapshot) = inbox.try_recv() {
                newest = Some(snapshot);
            }
            if let Some(snapshot) = newest {
                tracing::debug!(
                    shard = ctx.id,
                    generation = snapshot.generation,
                    "snapshot installed"
                );
                ctx.install(snapshot);
            }
        }
    });
}

async fn accept_loop(listener: Listener, port: u16, ctx: Rc<ShardContext>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                uring::spawn(crate::proxy::serve(stream, peer, port, ctx.clone()));
            }
            Err(e) => {
                // EMFILE and friends: note it and keep accepting; the ring re-arms.
                tracing::warn!(shard = ctx.id, port, error = %e, "accept failed");
                uring::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}
