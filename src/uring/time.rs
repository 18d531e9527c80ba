//! Timers: [`sleep`] (one `IORING_OP_TIMEOUT` on the ring) and [`timeout`], which bounds
//! handshakes, header reads, upstream connects and idle keep-alive connections.
//!
//! [`timeout`] costs no ring operation: its deadline goes into the runtime's [`Timers`],
//! an ordered map the executor consults once per turn, and the ring's wait is bounded by
//! the nearest deadline (`io_uring_enter` with a timeout argument). A request thus pays a
//! map insert and remove for each deadline instead of a timeout submission, its
//! cancellation and two completions. Dropping the wrapped future cancels its in-flight
//! operations through their own `Drop` (see `op.rs`), so a timeout never frees memory
//! the kernel still uses.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use io_uring::{opcode, types};

use super::executor::{Shared, current};
use super::op::Op;
use super::ring::OpKind;

/// What [`timeout`] returns when the deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {after:?}")]
pub(crate) struct Elapsed {
    /// The duration that passed.
    pub(crate) after: Duration,
}

/// Completes after `d`.
pub(crate) async fn sleep(d: Duration) {
    let rt = current();
    let spec = Box::new(types::Timespec::from(d));
    let entry = opcode::Timeout::new(&raw const *spec).build();
    // SAFETY: the entry points to the boxed timespec, which the op owns until the
    // timeout's completion.
    let op = unsafe { Op::submit(rt, OpKind::Plain, spec, entry) };
    // -ETIME is the normal expiry; nothing else can be done with other results here.
    let _ = op.await;
}

/// Runs `fut` for at most `d`. On expiry `fut` is dropped, which cancels its in-flight
/// operations safely. The clock starts at the first poll.
pub(crate) fn timeout<F: Future>(d: Duration, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        after: d,
        timer: None,
    }
}

/// The future of [`timeout`].
#[must_use = "futures do nothing unless polled"]
pub(crate) struct Timeout<F> {
    /// Structurally pinned: never moved out of a pinned `Timeout`.
    fut: F,
    after: Duration,
    /// The deadline, registered with the runtime at the first poll.
    timer: Option<Registered>,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `fut` is pinned structurally: it is only ever reached through this
        // projection, never moved out, and `Timeout` has no `Drop` of its own that could
        // move it (`Registered`'s drop touches only the timer). The other fields are not
        // pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above; `this.fut` stays where the pinned `Timeout` keeps it.
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        if let Poll::Ready(out) = fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let now = super::executor::now();
        match &mut this.timer {
            Some(timer) if now >= timer.key.0 => {
                return Poll::Ready(Err(Elapsed { after: this.after }));
            }
            Some(timer) => timer.update(cx.waker()),
            None => {
                let rt = current();
                let key = rt.timers.borrow_mut().insert(now + this.after, cx.waker());
                this.timer = Some(Registered { rt, key });
            }
        }
        Poll::Pending
    }
}

/// A deadline in the runtime's timers; removed when dropped.
struct Registered {
    rt: Rc<Shared>,
    key: TimerKey,
}

impl Registered {
    /// Makes sure the deadline wakes the task polling now.
    fn update(&self, waker: &Waker) {
        let mut timers = self.rt.timers.borrow_mut();
        match timers.map.get_mut(&self.key) {
            Some(w) if w.will_wake(waker) => {}
            Some(w) => w.clone_from(waker),
            // Fired while the future was not ready to notice: wake again at once.
            None => waker.wake_by_ref(),
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.rt.timers.borrow_mut().map.remove(&self.key);
    }
}

/// A deadline and a sequence number that makes it unique.
type TimerKey = (Instant, u64);

/// The deadlines of one runtime's pending [`timeout`]s, earliest first.
#[derive(Default)]
pub(crate) struct Timers {
    map: BTreeMap<TimerKey, Waker>,
    next: u64,
}

impl Timers {
    fn insert(&mut self, deadline: Instant, waker: &Waker) -> TimerKey {
        let key = (deadline, self.next);
        self.next = self.next.wrapping_add(1);
        self.map.insert(key, waker.clone());
        key
    }

    /// How long the ring may wait before the earliest deadline; `None` without any.
    pub(crate) fn wait_limit(&self, now: Instant) -> Option<Duration> {
        let ((deadline, _), _) = self.map.first_key_value()?;
        Some(deadline.saturating_duration_since(now))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Moves the wakers of every deadline that passed by `now` into `woken`.
    pub(crate) fn expire(&mut self, now: Instant, woken: &mut Vec<Waker>) {
        while let Some(entry) = self.map.first_entry() {
            if entry.key().0 > now {
                break;
            }
            woken.push(entry.remove());
        }
    }
}
