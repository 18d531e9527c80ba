//! A shard-local stop signal: tasks wait on it alongside their I/O, so a listener that
//! a reload removes stops accepting, and a draining shard wakes its idle keep-alive
//! connections to close them, without polling.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::task::{Poll, Waker};

use crate::fast_hash::FastMap;

/// Set once; every task waiting on it wakes.
#[derive(Default)]
pub(crate) struct StopSignal {
    stopped: Cell<bool>,
    next_id: Cell<u64>,
    /// Wakers of the tasks waiting now, each removed when its wait ends.
    waiters: RefCell<FastMap<u64, Waker>>,
}

impl StopSignal {
    pub(crate) fn stop(&self) {
        self.stopped.set(true);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters.into_values() {
            waker.wake();
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    /// Runs `fut` until it completes (`Some`) or the signal is set (`None`, and `fut`
    /// is dropped, cancelling its I/O).
    pub(crate) async fn or_stop<F: Future>(&self, fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        let mut waiting = Waiting {
            signal: self,
            id: None,
        };
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if self.stopped.get() {
                return Poll::Ready(None);
            }
            waiting.register(cx.waker());
            Poll::Pending
        })
        .await
    }
}

/// One task's place among the waiters; leaving it (drop) removes the waker.
struct Waiting<'a> {
    signal: &'a StopSignal,
    id: Option<u64>,
}

impl Waiting<'_> {
    fn register(&mut self, waker: &Waker) {
        let mut waiters = self.signal.waiters.borrow_mut();
        let id = *self.id.get_or_insert_with(|| {
            let id = self.signal.next_id.get();
            self.signal.next_id.set(id.wrapping_add(1));
            id
        });
        match waiters.get_mut(&id) {
            Some(known) if known.will_wake(waker) => {}
            Some(known) => known.clone_from(waker),
            None => {
                waiters.insert(id, waker.clone());
            }
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.signal.waiters.borrow_mut().remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uring::{self, RingOptions, Runtime};
    use std::rc::Rc;
    use std::time::Duration;

    #[test]
    fn a_stop_ends_waits_and_leaves_no_waiters() {
        let runtime = Runtime::new(RingOptions::default()).expect("ring");
        runtime.block_on(async {
            let signal = Rc::new(StopSignal::default());
            // A wait that completes first returns its value and unregisters.
            let quick = signal.or_stop(uring::sleep(Duration::from_millis(1))).await;
            assert_eq!(quick, Some(()));
            assert!(signal.waiters.borrow().is_empty());
            // A long wait is cut short by the stop.
            let stopper = signal.clone();
            uring::spawn(async move {
                uring::sleep(Duration::from_millis(5)).await;
                stopper.stop();
            });
            let long = signal.or_stop(uring::sleep(Duration::from_secs(30))).await;
            assert_eq!(long, None);
            assert!(signal.waiters.borrow().is_empty());
            // Once stopped, waits end at once.
            assert_eq!(
                signal.or_stop(uring::sleep(Duration::from_secs(30))).await,
                None
            );
        });
    }
}
