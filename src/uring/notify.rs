//! Cross-thread wake-ups for a shard: the control thread calls [`NotifyHandle::notify`]
//! after putting a new snapshot or command in a shard's mailbox, and the shard's mailbox
//! task wakes from [`NotifyWaiter::wait`]. Built on an eventfd read through the ring.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use io_uring::{opcode, types};

use super::executor::current;
use super::op::Op;
use super::ring::OpKind;

/// How long [`NotifyWaiter::wait`] pauses after an eventfd read error, so a caller's
/// wait loop cannot spin.
const READ_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Creates an eventfd-backed pair: notifications from any thread wake the waiter.
pub(crate) fn notify_pair() -> io::Result<(NotifyHandle, NotifyWaiter)> {
    // SAFETY: eventfd has no pointer arguments; the returned fd is checked below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created by eventfd and is owned by nobody else.
    let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok((
        NotifyHandle {
            fd: Arc::clone(&fd),
        },
        NotifyWaiter { fd },
    ))
}

/// Wakes the paired [`NotifyWaiter`]. `Send + Sync + Clone`: call it from any thread.
/// Notifications coalesce: several before a wait wake it once.
#[derive(Debug, Clone)]
pub(crate) struct NotifyHandle {
    fd: Arc<OwnedFd>,
}

impl NotifyHandle {
    /// Wakes the waiter (now, or at its next `wait`).
    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a local u64 to the eventfd this handle keeps open.
        let n = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&raw const one).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if n < 0 {
            // Only possible if the counter would overflow, i.e. the waiter is already
            // far behind: it will wake anyway.
            tracing::debug!(error = %io::Error::last_os_error(), "eventfd notify failed");
        }
    }
}

/// The shard side of a notify pair.
#[derive(Debug)]
pub(crate) struct NotifyWaiter {
    fd: Arc<OwnedFd>,
}

impl NotifyWaiter {
    /// Waits until at least one `notify` happened since the previous wait returned.
    /// Like a condition variable it may return spuriously (after an eventfd error, which
    /// is logged), so callers re-check what they wait for.
    pub(crate) async fn wait(&self) {
        let rt = current();
        let mut counter = Box::new(0u64);
        let entry = opcode::Read::new(
            types::Fd(self.fd.as_raw_fd()),
            (&raw mut *counter).cast::<u8>(),
            8,
        )
        .build();
        // SAFETY: the entry points into the boxed counter, which the op owns together
        // with an Arc of the eventfd until the read completes.
        let op = unsafe { Op::submit(rt, OpKind::Plain, (counter, Arc::clone(&self.fd)), entry) };
        let (cqe, _) = op.await;
        if let Err(e) = cqe.result() {
            tracing::error!(error = %e, "reading the notify eventfd failed");
            super::time::sleep(READ_ERROR_PAUSE).await;
        }
    }
}
