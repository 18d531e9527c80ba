//! Operation futures: an [`Op`] owns everything the kernel may touch (buffers, socket
//! addresses, timespecs, the `Rc` of the fd) from submission to its last completion.
//! Every socket read, write, connect and timer of a connection is one of these.
//!
//! If the future is dropped first (a timeout fired, the connection task ended), the
//! owned data moves into the driver's slot, a cancel is submitted, and the data is
//! dropped only when the kernel's last completion for the operation arrives.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use io_uring::squeue;

use super::executor::Shared;
use super::ring::{Cqe, OpKind};

/// A submitted single-shot operation that yields its completion and gives its data back.
pub(crate) struct Op<T: 'static> {
    rt: Rc<Shared>,
    user_data: u64,
    /// `None` once the completion was delivered.
    data: Option<T>,
}

impl<T: 'static> Op<T> {
    /// Submits `entry`, built from pointers into `data`'s heap allocations.
    ///
    /// # Safety
    ///
    /// Every pointer in `entry` must point into heap memory owned by `data` (not into
    /// `data` itself, which moves), valid as long as `data` is alive and not otherwise
    /// used by Rust while the operation runs.
    pub(crate) unsafe fn submit(
        rt: Rc<Shared>,
        kind: OpKind,
        data: T,
        entry: squeue::Entry,
    ) -> Op<T> {
        // SAFETY: the caller guarantees the entry only points into `data`'s heap memory;
        // `data` is kept by this Op, or by the driver slot after `Drop`, until the last
        // completion.
        let user_data = unsafe { rt.driver.borrow_mut().push(kind, entry) };
        Op {
            rt,
            user_data,
            data: Some(data),
        }
    }
}

impl<T: 'static> std::fmt::Debug for Op<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op")
            .field("user_data", &self.user_data)
            .field("completed", &self.data.is_none())
            .finish()
    }
}

// `data` is never pinned (the kernel only sees its heap blocks), so moving an Op is fine.
impl<T: 'static> Unpin for Op<T> {}

impl<T: 'static> Future for Op<T> {
    type Output = (Cqe, T);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(Cqe, T)> {
        let this = &mut *self;
        if this.data.is_none() {
            // Polled after completion (a misuse): never completes again, never panics.
            return Poll::Pending;
        }
        let cqe = match this
            .rt
            .driver
            .borrow_mut()
            .poll_completion(this.user_data, cx)
        {
            Poll::Ready(cqe) => cqe,
            Poll::Pending => return Poll::Pending,
        };
        if cqe.more() {
            // Single-shot operations never set F_MORE; wait for the final completion.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match this.data.take() {
            Some(data) => Poll::Ready((cqe, data)),
            None => Poll::Pending,
        }
    }
}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            self.rt
                .driver
                .borrow_mut()
                .orphan(self.user_data, Box::new(data));
        }
    }
}

/// A submitted multishot operation (accept, receive): yields completions until one
/// arrives without `IORING_CQE_F_MORE`, then it must be submitted again.
pub(crate) struct MultiOp {
    rt: Rc<Shared>,
    user_data: u64,
    /// What the kernel uses (the fd's `Rc`); moved to the slot on early drop.
    data: Option<Box<dyn std::any::Any>>,
    finished: bool,
}

impl MultiOp {
    /// Submits a multishot entry.
    ///
    /// # Safety
    ///
    /// As for [`Op::submit`].
    pub(crate) unsafe fn submit(
        rt: Rc<Shared>,
        kind: OpKind,
        data: Box<dyn std::any::Any>,
        entry: squeue::Entry,
    ) -> MultiOp {
        // SAFETY: as in `Op::submit`: the entry's memory is owned by `data`.
        let user_data = unsafe { rt.driver.borrow_mut().push(kind, entry) };
        MultiOp {
            rt,
            user_data,
            data: Some(data),
            finished: false,
        }
    }

    /// Whether the last completion was delivered (re-submit to get more).
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    /// Asks the kernel to end the operation; its last completion (ECANCELED, or
    /// whatever ended it first) still arrives through [`MultiOp::poll_next`].
    pub(crate) fn cancel(&self) {
        if !self.finished {
            self.rt.driver.borrow_mut().cancel(self.user_data);
        }
    }

    /// The next completion.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Cqe> {
        if self.finished {
            return Poll::Pending;
        }
        let cqe = match self
            .rt
            .driver
            .borrow_mut()
            .poll_completion(self.user_data, cx)
        {
            Poll::Ready(cqe) => cqe,
            Poll::Pending => return Poll::Pending,
        };
        if !cqe.more() {
            self.finished = true;
            self.data = None;
        }
        Poll::Ready(cqe)
    }
}

impl std::fmt::Debug for MultiOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiOp")
            .field("user_data", &self.user_data)
            .field("finished", &self.finished)
            .finish()
    }
}

impl Drop for MultiOp {
    fn drop(&mut self) {
        if let Some(data) = self.data.take()
            && !self.finished
        {
            self.rt.driver.borrow_mut().orphan(self.user_data, data);
        }
    }
}
