//! The shard-local executor: [`Runtime::block_on`] runs the shard's main future and
//! every task [`spawn`]ed onto it (one per client connection, in practice), submits the
//! operations they queued, sleeps in `io_uring_enter` only when no task is ready, and
//! wakes tasks whose operations completed.
//!
//! Wakers: a [`std::task::Waker`] must be `Send + Sync`, so each task's waker is an
//! `Arc<TaskWaker>` holding only the task id, an atomic "scheduled" flag and an `Arc` of
//! the runtime's remote queue; it holds no `Rc`. Woken on the shard thread inside
//! `block_on` (the normal case), it pushes the id onto the shard's run queue through the
//! thread-local context. Woken from any other thread, it pushes the id onto the mutex
//! protected remote queue and writes the runtime's eventfd, whose pending read wakes the
//! ring; the shard moves those ids to its run queue on its next turn. Either way no
//! thread-local data of another thread is touched, so waking from anywhere is sound.
//!
//! Panics: a task started with [`spawn`] is *isolated*: if polling it panics, the
//! executor drops it (closing whatever it owned, e.g. its connection), reports the
//! panic to the runtime's handler ([`Runtime::on_task_panic`]) and runs every other
//! task on. A task started with [`spawn_critical`] (a listener's accept loop) is one
//! the thread cannot serve without: its panic, like one of the future passed to
//! [`Runtime::block_on`], ends `block_on` and the thread, for its supervisor to see.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use super::notify::{NotifyHandle, NotifyWaiter, notify_pair};
use super::ring::{Driver, RingOptions, SetupError};
use super::time::Timers;

/// Tasks polled per executor turn before the ring is submitted and reaped again, so a
/// busy shard still picks up completions.
const TASK_BUDGET: usize = 256;

/// Task polls between two readings of the clock behind [`now`] within one turn, so
/// the cached time stays close even when a turn runs many handshakes.
const CLOCK_REFRESH_POLLS: usize = 16;

/// Task id of the future passed to `block_on` (never a slab index).
const MAIN_TASK: usize = usize::MAX;

thread_local! {
    /// The runtime whose `block_on` runs on this thread.
    static CURRENT: RefCell<Option<Rc<Shared>>> = const { RefCell::new(None) };
}

/// The runtime of the calling thread; only inside [`Runtime::block_on`].
pub(crate) fn current() -> Rc<Shared> {
    let rt = CURRENT.with(|c| c.borrow().clone());
    match rt {
        Some(rt) => rt,
        None => panic!(
            "ringress::uring: an io_uring operation or spawn() was used outside \
             Runtime::block_on on this thread (programming error: no runtime is running here)"
        ),
    }
}

/// The time of the current executor turn: read once when the ring returns completions
/// and again every [`CLOCK_REFRESH_POLLS`] task polls, instead of a clock read for
/// every deadline and duration a request measures. Never later than the real time, and
/// earlier by at most the work of a few tasks. Outside [`Runtime::block_on`] it reads
/// the clock.
pub(crate) fn now() -> Instant {
    CURRENT
        .try_with(|c| {
            c.try_borrow()
                .ok()
                .and_then(|rt| rt.as_ref().map(|rt| rt.now.get()))
        })
        .ok()
        .flatten()
        .unwrap_or_else(Instant::now)
}

/// Completes after the executor's next pass through the ring, which does not wait
/// for the kernel (a task is waiting here): operations submitted so far have been
/// issued, and completions the kernel already has (bytes a peer already sent, with
/// deferred task running) have been delivered to their futures. For a task that
/// can save a send by first seeing what has already arrived.
pub(crate) fn next_turn() -> impl Future<Output = ()> {
    let mut registered = false;
    std::future::poll_fn(move |cx| {
        if std::mem::replace(&mut registered, true) {
            return Poll::Ready(());
        }
        current().turn_waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    })
}

/// Spawns an isolated task onto the current thread's runtime. It runs until it
/// completes, panics (then it alone is dropped, see the module docs) or the runtime
/// is dropped.
///
/// # Panics
///
/// When called outside [`Runtime::block_on`] (a programming error).
pub(crate) fn spawn<F: Future<Output = ()> + 'static>(fut: F) {
    current().spawn_task(Box::pin(fut), false);
}

/// Spawns a task the thread cannot serve without: a panic while polling it ends
/// [`Runtime::block_on`] with that panic instead of being isolated.
///
/// # Panics
///
/// When called outside [`Runtime::block_on`] (a programming error).
pub(crate) fn spawn_critical<F: Future<Output = ()> + 'static>(fut: F) {
    current().spawn_task(Box::pin(fut), true);
}

/// The message of a panic's payload (`panic!` with a literal or a formatted string).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// Ids woken from other threads.
struct Remote {
    queue: Mutex<Vec<usize>>,
    pending: AtomicBool,
    kick: NotifyHandle,
}

/// A task's waker. See the module docs for why this is sound from any thread.
struct TaskWaker {
    id: usize,
    scheduled: AtomicBool,
    remote: Arc<Remote>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let queued_locally = CURRENT
            .try_with(|c| {
                let Ok(current) = c.try_borrow() else {
                    return false;
                };
                match current.as_ref() {
                    Some(rt) if Arc::ptr_eq(&rt.remote, &self.remote) => {
                        match rt.run_queue.try_borrow_mut() {
                            Ok(mut q) => {
                                q.push_back(self.id);
                                true
                            }
                            Err(_) => false,
                        }
                    }
                    _ => false,
                }
            })
            .unwrap_or(false);
        if !queued_locally {
            let mut q = self
                .remote
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            q.push(self.id);
            drop(q);
            self.remote.pending.store(true, Ordering::Release);
            self.remote.kick.notify();
        }
    }
}

struct Task {
    /// `None` while the task is being polled.
    fut: Option<Pin<Box<dyn Future<Output = ()>>>>,
    state: Arc<TaskWaker>,
    waker: Waker,
    /// A panic of this task ends `block_on` (see [`spawn_critical`]).
    critical: bool,
}

/// What a runtime does with the message of an isolated task's panic.
type PanicHandler = Box<dyn Fn(&str)>;

/// What operations, tasks and wakers of one runtime share, behind an `Rc`.
pub(crate) struct Shared {
    pub(crate) driver: RefCell<Driver>,
    /// Deadlines of pending `timeout`s; they bound the ring's wait.
    pub(crate) timers: RefCell<Timers>,
    run_queue: RefCell<VecDeque<usize>>,
    tasks: RefCell<Vec<Option<Task>>>,
    free_tasks: RefCell<Vec<usize>>,
    remote: Arc<Remote>,
    /// The waker vector swapped with the driver's each turn, so waking allocates nothing.
    spare_wakers: Cell<Vec<Waker>>,
    /// Taken by the first `block_on`, which starts the task that reads it.
    kick_waiter: Cell<Option<NotifyWaiter>>,
    /// The turn's time, see [`now`].
    now: Cell<Instant>,
    /// Tasks waiting in [`next_turn`], woken after the ring's next submit and reap.
    turn_waiters: RefCell<Vec<Waker>>,
    /// Hears every isolated task's panic.
    on_panic: RefCell<PanicHandler>,
}

impl Shared {
    fn spawn_task(&self, fut: Pin<Box<dyn Future<Output = ()>>>, critical: bool) {
        let mut tasks = self.tasks.borrow_mut();
        let id = self.free_tasks.borrow_mut().pop().unwrap_or(tasks.len());
        let state = Arc::new(TaskWaker {
            id,
            scheduled: AtomicBool::new(true),
            remote: Arc::clone(&self.remote),
        });
        let task = Task {
            fut: Some(fut),
            waker: Waker::from(Arc::clone(&state)),
            state,
            critical,
        };
        match tasks.get_mut(id) {
            Some(slot) => *slot = Some(task),
            None => tasks.push(Some(task)),
        }
        self.run_queue.borrow_mut().push_back(id);
    }

    /// Polls up to [`TASK_BUDGET`] ready tasks.
    fn run_tasks(&self) {
        for polled in 0..TASK_BUDGET {
            let Some(id) = self.run_queue.borrow_mut().pop_front() else {
                return;
            };
            if id == MAIN_TASK {
                continue;
            }
            // The future and its waker leave the slot while it is polled (it may spawn,
            // which needs the slot vector), and go back after: moved, not cloned, so a
            // poll costs no reference-count traffic.
            let taken = match self.tasks.borrow_mut().get_mut(id) {
                Some(Some(task)) => task.fut.take().map(|f| {
                    task.state.scheduled.store(false, Ordering::Release);
                    let waker = std::mem::replace(&mut task.waker, Waker::noop().clone());
                    (f, waker, task.critical)
                }),
                _ => None,
            };
            // A stale wake of a finished task (or one being polled): nothing to do.
            let Some((mut fut, waker, critical)) = taken else {
                continue;
            };
            if polled % CLOCK_REFRESH_POLLS == CLOCK_REFRESH_POLLS - 1 {
                self.now.set(Instant::now());
            }
            let mut cx = Context::from_waker(&waker);
            // The task's state is its own: after a panic it is dropped, never polled
            // again, so nothing it left half-done is observed (the shard's shared
            // state is in `RefCell`s, whose borrows end with the unwinding).
            match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
                Ok(Poll::Ready(())) => self.finish(id, fut),
                Ok(Poll::Pending) => {
                    if let Some(Some(task)) = self.tasks.borrow_mut().get_mut(id) {
                        task.fut = Some(fut);
                        task.waker = waker;
                    }
                }
                Err(payload) => {
                    if critical {
                        resume_unwind(payload);
                    }
                    // Dropping what the task owned may panic too; that is the same
                    // failure of the same task.
                    let _ = catch_unwind(AssertUnwindSafe(|| self.finish(id, fut)));
                    (self.on_panic.borrow())(panic_message(&*payload));
                }
            }
        }
    }

    /// Frees the slot of task `id`, which ended, and drops its future.
    fn finish(&self, id: usize, fut: Pin<Box<dyn Future<Output = ()>>>) {
        let finished = self.tasks.borrow_mut().get_mut(id).and_then(Option::take);
        self.free_tasks.borrow_mut().push(id);
        drop(finished);
        drop(fut);
    }

    /// Moves ids woken from other threads onto the run queue.
    fn take_remote(&self) {
        if !self.remote.pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let ids = std::mem::take(
            &mut *self
                .remote
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.run_queue.borrow_mut().extend(ids);
    }

    /// Submits queued operations, waits for a completion if `idle`, and wakes the tasks
    /// whose operations completed.
    fn turn_ring(&self, idle: bool) {
        let mut woken = self.spare_wakers.take();
        let timed = !self.timers.borrow().is_empty();
        // An idle wait lasts until a completion or the earliest deadline.
        let limit = match idle && timed {
            true => self.timers.borrow().wait_limit(Instant::now()),
            false => None,
        };
        let released = {
            let mut driver = self.driver.borrow_mut();
            driver.submit(idle, limit);
            driver.reap();
            std::mem::swap(&mut woken, &mut driver.woken);
            std::mem::take(&mut driver.released)
        };
        woken.append(&mut self.turn_waiters.borrow_mut());
        let now = Instant::now();
        self.now.set(now);
        if timed {
            self.timers.borrow_mut().expire(now, &mut woken);
        }
        // Data of finished cancelled operations may own sockets or runtime handles whose
        // drop uses the driver again, so it is dropped only now.
        drop(released);
        for w in woken.drain(..) {
            w.wake();
        }
        self.spare_wakers.set(woken);
    }
}

/// One shard's io_uring runtime. Not `Send`: create it on the shard thread that uses it.
pub(crate) struct Runtime {
    shared: Rc<Shared>,
}

impl Runtime {
    /// Sets up the ring (single issuer + deferred task running when the kernel has them)
    /// and registers the receive buffer ring.
    pub(crate) fn new(opts: RingOptions) -> Result<Runtime, SetupError> {
        let driver = Driver::new(&opts)?;
        let (kick, kick_waiter) = notify_pair().map_err(SetupError::Io)?;
        let shared = Rc::new(Shared {
            driver: RefCell::new(driver),
            timers: RefCell::new(Timers::default()),
            run_queue: RefCell::new(VecDeque::new()),
            tasks: RefCell::new(Vec::new()),
            free_tasks: RefCell::new(Vec::new()),
            remote: Arc::new(Remote {
                queue: Mutex::new(Vec::new()),
                pending: AtomicBool::new(false),
                kick,
            }),
            spare_wakers: Cell::new(Vec::new()),
            kick_waiter: Cell::new(Some(kick_waiter)),
            now: Cell::new(Instant::now()),
            turn_waiters: RefCell::new(Vec::new()),
            on_panic: RefCell::new(Box::new(|message| {
                tracing::error!(panic = message, "task panicked; it was dropped");
            })),
        });
        Ok(Runtime { shared })
    }

    /// Sets what hears the message of each isolated task's panic (by default it is
    /// logged as an error). The task itself is already dropped when it is called.
    pub(crate) fn on_task_panic(&self, handler: impl Fn(&str) + 'static) {
        *self.shared.on_panic.borrow_mut() = Box::new(handler);
    }

    /// Runs the executor until `fut` completes; spawned tasks run too and keep existing
    /// (suspended) after it returns, until the next `block_on` or the runtime's drop.
    ///
    /// # Panics
    ///
    /// When called from inside another `block_on` on the same thread.
    pub(crate) fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let _enter = EnterGuard::enter(Rc::clone(&self.shared));
        self.start_kick_reader();
        let main = Arc::new(TaskWaker {
            id: MAIN_TASK,
            scheduled: AtomicBool::new(true),
            remote: Arc::clone(&self.shared.remote),
        });
        let waker = Waker::from(Arc::clone(&main));
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        loop {
            if main.scheduled.swap(false, Ordering::AcqRel)
                && let Poll::Ready(out) = fut.as_mut().poll(&mut cx)
            {
                return out;
            }
            self.shared.run_tasks();
            self.shared.take_remote();
            let idle = self.shared.run_queue.borrow().is_empty()
                && !main.scheduled.load(Ordering::Acquire)
                && self.shared.turn_waiters.borrow().is_empty();
            self.shared.turn_ring(idle);
        }
    }

    /// The io_uring setup flags the kernel accepted for this ring (for the start-up log),
    /// e.g. `"single_issuer+defer_taskrun+coop_taskrun"`.
    #[cfg(test)]
    pub(crate) fn ring_setup(&self) -> &'static str {
        self.shared.driver.borrow().setup_flags
    }

    /// Operations the kernel still owns (for shard statistics and leak checks); includes
    /// the runtime's own eventfd read while `block_on` has run.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.shared.driver.borrow().in_flight()
    }

    /// Starts the task that keeps a read armed on the remote-wake eventfd, so a wake
    /// from another thread interrupts the ring wait.
    fn start_kick_reader(&self) {
        let Some(waiter) = self.shared.kick_waiter.take() else {
            return;
        };
        self.shared.spawn_task(
            Box::pin(async move {
                loop {
                    waiter.wait().await;
                }
            }),
            true,
        );
    }
}

impl Drop for Runtime {
    /// Drops every task (their in-flight operations are cancelled and their buffers kept
    /// until the kernel is done, see `Driver`'s drop).
    fn drop(&mut self) {
        let tasks = std::mem::take(&mut *self.shared.tasks.borrow_mut());
        self.shared.run_queue.borrow_mut().clear();
        drop(tasks);
    }
}

/// Marks the thread as running a runtime for the duration of `block_on`.
struct EnterGuard;

impl EnterGuard {
    fn enter(rt: Rc<Shared>) -> EnterGuard {
        CURRENT.with(|c| {
            let mut c = c.borrow_mut();
            assert!(
                c.is_none(),
                "ringress::uring: Runtime::block_on called inside block_on on the same thread"
            );
            *c = Some(rt);
        });
        EnterGuard
    }
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        let rt = CURRENT.with(|c| c.borrow_mut().take());
        drop(rt);
    }
}
