//! Timers on the ring (`IORING_OP_TIMEOUT`): [`sleep`] and [`timeout`], which bounds
//! handshakes, header reads, upstream connects and idle keep-alive connections.
//! Dropping the wrapped future cancels its in-flight operations through their own
//! `Drop` (see `op.rs`), so a timeout never frees memory the kernel still uses.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use io_uring::{opcode, types};

use super::executor::current;
use super::op::Op;
use super::ring::OpKind;

/// What [`timeout`] returns when the deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {after:?}")]
pub struct Elapsed {
    /// The duration that passed.
    pub after: Duration,
}

/// Completes after `d`.
pub async fn sleep(d: Duration) {
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
/// operations safely.
pub async fn timeout<F: Future>(d: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = pin!(fut);
    let mut timer = pin!(sleep(d));
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Elapsed { after: d }));
        }
        Poll::Pending
    })
    .await
}
