//! Timers: [`sleep`] (one `IORING_OP_TIMEOUT` on the ring) and [`timeout`], which bounds
//! handshakes, header reads, sends, upstream connects and idle keep-alive connections.
//!
//! [`timeout`] costs no ring operation: its deadline goes into the runtime's [`Timers`]
//! (a heap of deadlines the executor consults once per turn), and the ring's wait is
//! bounded by the nearest deadline (`io_uring_enter` with a timeout argument). A request
//! thus pays a heap push and a slot release for each deadline instead of a timeout
//! submission, its cancellation and two completions. Dropping the wrapped future cancels its in-flight
//! operations through their own `Drop` (see `op.rs`), so a timeout never frees memory
//! the kernel still uses.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
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
            Some(timer) if now >= timer.deadline => {
                return Poll::Ready(Err(Elapsed { after: this.after }));
            }
            Some(timer) => timer.update(cx.waker()),
            None => {
                let rt = current();
                let deadline = now + this.after;
                let key = rt.timers.borrow_mut().insert(deadline, cx.waker());
                this.timer = Some(Registered { rt, key, deadline });
            }
        }
        Poll::Pending
    }
}

/// A deadline in the runtime's timers; removed when dropped.
struct Registered {
    rt: Rc<Shared>,
    key: TimerKey,
    deadline: Instant,
}

impl Registered {
    /// Makes sure the deadline wakes the task polling now.
    fn update(&self, waker: &Waker) {
        let mut timers = self.rt.timers.borrow_mut();
        match timers.waker_mut(self.key) {
            Some(w) if w.will_wake(waker) => {}
            Some(w) => w.clone_from(waker),
            // Fired while the future was not ready to notice: wake again at once.
            None => waker.wake_by_ref(),
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.rt.timers.borrow_mut().remove(self.key);
    }
}

/// A pending deadline's place in [`Timers`]: its slot and the slot's generation, so a
/// key whose deadline fired (and whose slot was reused) finds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimerKey {
    slot: u32,
    generation: u32,
}

/// A deadline in the heap, then its key. Entries whose key no longer matches its slot
/// were removed and are skipped.
type HeapEntry = Reverse<(Instant, u32, u32)>;

/// Removed entries the heap may hold beyond twice the pending ones before it is rebuilt.
const STALE_SLACK: usize = 1024;

/// The deadlines of one runtime's pending [`timeout`]s.
///
/// Nearly every deadline is removed long before it passes (a request that completes
/// drops its timeouts within microseconds), so removal is what must be cheap: a
/// binary heap ordered by deadline, beside a slab of wakers. Inserting pushes onto the
/// heap (deadlines mostly grow, so the push rarely sifts far); removing frees the slot
/// and leaves the heap entry behind, skipped when it reaches the top. Left-behind
/// entries are bounded: when they outnumber the pending ones by [`STALE_SLACK`], the
/// heap is rebuilt from the pending ones, and it is cleared when none is pending.
/// Against an ordered map (`BTreeMap`) this saves about 1,900 of the 28,600
/// instructions of a keep-alive request (`perf/instructions.sh`, 16 connections).
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<HeapEntry>,
    /// Per slot: its generation and, while pending, the waker.
    slots: Vec<Slot>,
    free: Vec<u32>,
    pending: usize,
}

struct Slot {
    generation: u32,
    waker: Option<Waker>,
}

impl Timers {
    fn insert(&mut self, at: Instant, waker: &Waker) -> TimerKey {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    waker: None,
                });
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 pending timeouts")
            }
        };
        let entry = &mut self.slots[slot as usize];
        entry.waker = Some(waker.clone());
        self.heap.push(Reverse((at, slot, entry.generation)));
        self.pending += 1;
        TimerKey {
            slot,
            generation: entry.generation,
        }
    }

    /// The waker of a pending deadline; `None` once it fired or was removed.
    fn waker_mut(&mut self, key: TimerKey) -> Option<&mut Waker> {
        let slot = self.slots.get_mut(key.slot as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.waker.as_mut()
    }

    /// Forgets a deadline (nothing if it already fired).
    fn remove(&mut self, key: TimerKey) {
        if self.waker_mut(key).is_none() {
            return;
        }
        self.free_slot(key.slot);
        if self.pending == 0 {
            self.heap.clear();
        } else if self.heap.len() > 2 * self.pending + STALE_SLACK {
            self.rebuild();
        }
    }

    /// Frees a pending slot: a new generation, so its heap entry and key go stale.
    fn free_slot(&mut self, slot: u32) -> Option<Waker> {
        let entry = &mut self.slots[slot as usize];
        let waker = entry.waker.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(slot);
        self.pending -= 1;
        Some(waker)
    }

    /// The heap again, from the entries of pending deadlines only (linear in the
    /// heap's length, which the caller bounds).
    fn rebuild(&mut self) {
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        let slots = &self.slots;
        entries.retain(|Reverse((_, slot, generation))| {
            let entry = &slots[*slot as usize];
            entry.generation == *generation && entry.waker.is_some()
        });
        self.heap = BinaryHeap::from(entries);
    }

    /// How long the ring may wait before the earliest deadline; `None` without any.
    /// The earliest heap entry may be one already removed: the ring then wakes early
    /// once, and [`Timers::expire`] discards it.
    pub(crate) fn wait_limit(&self, now: Instant) -> Option<Duration> {
        let Reverse((at, _, _)) = self.heap.peek()?;
        Some(at.saturating_duration_since(now))
    }

    /// Whether no deadline is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Moves the wakers of every deadline that passed by `now` into `woken`.
    pub(crate) fn expire(&mut self, now: Instant, woken: &mut Vec<Waker>) {
        while let Some(&Reverse((at, slot, generation))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.slots[slot as usize].generation == generation
                && let Some(waker) = self.free_slot(slot)
            {
                woken.push(waker);
            }
        }
        if self.pending == 0 {
            self.heap.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    /// Counts its wakes.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let c = Arc::new(Counter(AtomicUsize::new(0)));
        (Arc::clone(&c), Waker::from(c))
    }

    fn wake_all(woken: &mut Vec<Waker>) {
        for w in woken.drain(..) {
            w.wake();
        }
    }

    #[test]
    fn expire_wakes_passed_deadlines_in_order_and_never_removed_ones() {
        let mut timers = Timers::default();
        let t0 = Instant::now();
        let (fired, fired_waker) = counter();
        let (removed, removed_waker) = counter();
        let ms = Duration::from_millis;
        let late = timers.insert(t0 + ms(30), &fired_waker);
        let gone = timers.insert(t0 + ms(10), &removed_waker);
        let early = timers.insert(t0 + ms(20), &fired_waker);
        timers.remove(gone);
        assert!(!timers.is_empty());
        // The removed deadline is still the heap's top: one early wake, then discarded.
        assert_eq!(timers.wait_limit(t0), Some(ms(10)));
        let mut woken = Vec::new();
        timers.expire(t0 + ms(15), &mut woken);
        assert!(woken.is_empty());
        assert_eq!(timers.wait_limit(t0 + ms(15)), Some(ms(5)));
        timers.expire(t0 + ms(20), &mut woken);
        assert_eq!(woken.len(), 1);
        assert!(timers.waker_mut(early).is_none(), "fired");
        assert!(timers.waker_mut(late).is_some(), "still pending");
        timers.expire(t0 + ms(40), &mut woken);
        wake_all(&mut woken);
        assert_eq!(fired.0.load(Ordering::Relaxed), 2);
        assert_eq!(removed.0.load(Ordering::Relaxed), 0);
        assert!(timers.is_empty());
        assert_eq!(timers.wait_limit(t0), None);
    }

    #[test]
    fn a_fired_key_never_touches_the_deadline_that_reuses_its_slot() {
        let mut timers = Timers::default();
        let t0 = Instant::now();
        let (c, waker) = counter();
        let first = timers.insert(t0, &waker);
        let mut woken = Vec::new();
        timers.expire(t0, &mut woken);
        assert_eq!(woken.len(), 1);
        let second = timers.insert(t0 + Duration::from_secs(1), &waker);
        assert_eq!(second.slot, first.slot, "the slot is reused");
        // Dropping the fired timeout's registration must leave the new one pending.
        timers.remove(first);
        assert!(timers.waker_mut(first).is_none());
        assert!(timers.waker_mut(second).is_some());
        assert!(!timers.is_empty());
        woken.clear();
        timers.expire(t0 + Duration::from_secs(1), &mut woken);
        wake_all(&mut woken);
        assert_eq!(c.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn removed_deadlines_do_not_pile_up() {
        let mut timers = Timers::default();
        let t0 = Instant::now();
        let waker = Waker::noop();
        // One deadline that never completes, and many that are removed at once, as a
        // stuck client among fast requests makes them.
        let (stuck_wakes, stuck_waker) = counter();
        let stuck = timers.insert(t0 + Duration::from_secs(60), &stuck_waker);
        for i in 0..100_000u64 {
            let key = timers.insert(t0 + Duration::from_micros(i), waker);
            timers.remove(key);
            assert!(timers.heap.len() <= 2 * timers.pending + STALE_SLACK + 1);
        }
        assert!(timers.slots.len() <= 2, "slots are reused");
        assert_eq!(
            timers.wait_limit(t0).map(|d| d <= Duration::from_secs(60)),
            Some(true)
        );
        // The rebuilds kept it: it fires at its time, alone.
        let mut woken = Vec::new();
        timers.expire(t0 + Duration::from_secs(59), &mut woken);
        assert!(woken.is_empty());
        assert!(timers.waker_mut(stuck).is_some());
        timers.expire(t0 + Duration::from_secs(60), &mut woken);
        wake_all(&mut woken);
        assert_eq!(stuck_wakes.0.load(Ordering::Relaxed), 1);
        assert!(timers.is_empty());
        assert!(timers.heap.is_empty(), "cleared when nothing is pending");
        timers.remove(stuck);
        assert!(timers.is_empty());
    }
}
