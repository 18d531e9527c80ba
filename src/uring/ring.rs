//! The ring itself: setup (with the reasons io_uring can be unavailable), the slab of
//! in-flight operations keyed by `user_data`, submission and completion. Every socket
//! operation of a shard, from accept to the last byte of a response, passes through
//! [`Driver::push`] and comes back through [`Driver::reap`].

use std::any::Any;
use std::collections::VecDeque;
use std::io;
use std::mem::ManuallyDrop;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::buf_ring::BufRing;

/// Where the kernel publishes whether io_uring may be used.
const IO_URING_DISABLED_SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

/// `user_data` of the cancel requests the runtime submits itself; their completions are
/// ignored (the cancelled operation reports its own completion).
const CANCEL_USER_DATA: u64 = u64::MAX;

/// Received chunks a multishot receive may queue for a stream before the runtime stops
/// it (so a slow reader cannot drain the shard's buffer ring); the reader re-arms it.
pub(crate) const MAX_QUEUED_RECV: usize = 4;

/// Generations are 31 bits so that no operation's `user_data` equals [`CANCEL_USER_DATA`].
const GENERATION_MASK: u32 = 0x7fff_ffff;

/// How many completion-queue waits of [`TEARDOWN_WAIT`] each [`Driver`]'s drop spends
/// on cancelled operations before it gives up and leaks their buffers instead of
/// freeing them.
const TEARDOWN_MAX_WAITS: usize = 200;
const TEARDOWN_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// Sizes of one shard's ring and of its receive buffer ring.
#[derive(Debug, Clone)]
pub(crate) struct RingOptions {
    /// Submission queue entries (the completion queue gets twice as many).
    pub(crate) entries: u32,
    /// Buffers in the provided buffer ring that `recv` selects from (at most 32768).
    pub(crate) recv_buffers: u16,
    /// Size of each receive buffer in bytes.
    pub(crate) recv_buffer_size: usize,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            entries: 1024,
            recv_buffers: 512,
            recv_buffer_size: 16 * 1024,
        }
    }
}

/// Why a shard could not get an io_uring ring.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    /// `io_uring_setup` returned ENOSYS.
    #[error(
        "io_uring is unavailable: the kernel has no io_uring_setup system call (ENOSYS); \
         ringress needs Linux 6.0 or newer"
    )]
    KernelTooOld,
    /// The kernel has io_uring but not the features the runtime uses.
    #[error(
        "io_uring on kernel {release} lacks multishot receive; ringress needs Linux 6.0 or newer"
    )]
    KernelMissingFeatures {
        /// `uname -r`.
        release: String,
    },
    /// `io_uring_setup` returned EPERM and the sysctl says why.
    #[error(
        "io_uring is disabled by sysctl kernel.io_uring_disabled = {value} \
         ({IO_URING_DISABLED_SYSCTL}): {meaning}; set it to 0 to run ringress"
    )]
    DisabledBySysctl {
        /// The sysctl's value (1 or 2).
        value: u8,
        /// What that value means.
        meaning: &'static str,
    },
    /// `io_uring_setup` returned EPERM although the sysctl allows io_uring.
    #[error(
        "io_uring_setup was denied (EPERM) although kernel.io_uring_disabled = {sysctl}: \
         a seccomp filter or container policy forbids io_uring (for Docker or Kubernetes, \
         use a seccomp profile that allows io_uring_setup, io_uring_enter and io_uring_register)"
    )]
    Denied {
        /// What the sysctl file said (or why it could not be read).
        sysctl: String,
    },
    /// Registering the receive buffer ring failed.
    #[error(
        "registering the receive buffer ring ({buffers} buffers of {size} bytes) failed: {source} \
         (provided buffer rings need Linux 5.19 or newer)"
    )]
    BufRing {
        /// Number of buffers asked for.
        buffers: u16,
        /// Size of each.
        size: usize,
        /// The kernel's answer.
        source: io::Error,
    },
    /// Bad [`RingOptions`].
    #[error("invalid ring options: {0}")]
    Options(&'static str),
    /// Any other error from `io_uring_setup`.
    #[error("io_uring_setup failed: {0}")]
    Io(#[source] io::Error),
}

/// Checks once, at start-up, that this process may create an io_uring ring, and says
/// precisely why not otherwise.
///
/// Beyond creating a ring it registers a small provided buffer ring (Linux 5.19) and
/// checks the kernel release for multishot receive (Linux 6.0), so an old kernel is
/// reported at start-up rather than by the first connection.
pub(crate) fn check_available() -> Result<(), SetupError> {
    IoUring::<squeue::Entry, cqueue::Entry>::new(8)
        .map(drop)
        .map_err(classify_setup_error)?;
    if let Some(release) = kernel_release()
        && let Some(version) = parse_release(&release)
        && version < MIN_KERNEL
    {
        return Err(SetupError::KernelMissingFeatures { release });
    }
    Driver::new(&RingOptions {
        entries: 8,
        recv_buffers: 1,
        recv_buffer_size: 64,
    })
    .map(drop)
}

/// Oldest kernel with everything the runtime uses (multishot receive came in 6.0).
const MIN_KERNEL: (u32, u32) = (6, 0);

/// The running kernel's release string (`uname -r`).
fn kernel_release() -> Option<String> {
    // SAFETY: utsname is plain data; all-zero is valid.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the local struct we pass.
    if unsafe { libc::uname(&raw mut uts) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c.cast_unsigned())
        .collect();
    String::from_utf8(bytes).ok()
}

/// `(major, minor)` of a release such as `6.8.0-45-generic`.
pub(crate) fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Turns an `io_uring_setup` error into the reason a user can act on.
fn classify_setup_error(err: io::Error) -> SetupError {
    match err.raw_os_error() {
        Some(libc::ENOSYS) => SetupError::KernelTooOld,
        Some(libc::EPERM) => match std::fs::read_to_string(IO_URING_DISABLED_SYSCTL) {
            Ok(text) => match text.trim() {
                "1" => SetupError::DisabledBySysctl {
                    value: 1,
                    meaning: "only root and members of kernel.io_uring_group may create rings",
                },
                "2" => SetupError::DisabledBySysctl {
                    value: 2,
                    meaning: "io_uring is disabled for every process",
                },
                other => SetupError::Denied {
                    sysctl: other.to_string(),
                },
            },
            Err(e) => SetupError::Denied {
                sysctl: format!("unknown ({IO_URING_DISABLED_SYSCTL} unreadable: {e})"),
            },
        },
        _ => SetupError::Io(err),
    }
}

/// One completion as the runtime hands it to an operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cqe {
    /// The result: a count or fd when `>= 0`, minus an errno otherwise.
    pub(crate) res: i32,
    /// `IORING_CQE_F_*` flags.
    pub(crate) flags: u32,
}

impl Cqe {
    /// The result as an `io::Result`.
    pub(crate) fn result(&self) -> io::Result<u32> {
        if self.res < 0 {
            Err(io::Error::from_raw_os_error(-self.res))
        } else {
            Ok(self.res.unsigned_abs())
        }
    }

    /// Whether more completions follow for the same operation (multishot).
    pub(crate) fn more(&self) -> bool {
        cqueue::more(self.flags)
    }
}

/// What the runtime must do with a completion nobody waits for any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Nothing to release but the operation's own data.
    Plain,
    /// A non-negative result is a new file descriptor that must be closed.
    Accept,
    /// Multishot receive: cancelled when too many completions queue up unread.
    RecvMulti,
}

/// One entry of the in-flight slab. Its completion queue keeps its allocation when the
/// slot is reused, so steady-state operations allocate nothing here.
struct Slot {
    generation: u32,
    /// Whether an operation occupies the slot.
    live: bool,
    kind: OpKind,
    waker: Option<Waker>,
    /// Completions not yet taken by the operation's future (several for multishot).
    completions: VecDeque<Cqe>,
    /// Set when the future was dropped before the last completion: the buffers and fds
    /// the kernel may still use, kept here until that completion arrives.
    orphan: Option<Box<dyn Any>>,
    /// A cancel was already submitted for this operation.
    cancelling: bool,
}

/// The ring, the in-flight slab and the receive buffer ring of one shard.
pub(crate) struct Driver {
    /// Dropped by hand in `Drop`: leaked instead when the kernel does not finish the
    /// operations in flight at shutdown, so it never writes into memory given back.
    uring: ManuallyDrop<IoUring>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    in_flight: usize,
    /// Completions copied out of the completion queue, reused between reaps.
    reaped: Vec<(u64, Cqe)>,
    /// Wakers of operations that completed, called by the executor once the driver is no
    /// longer borrowed.
    pub(crate) woken: Vec<Waker>,
    /// Data of finished orphaned operations, dropped by the executor once the driver is
    /// no longer borrowed (its `Drop` may use the runtime).
    pub(crate) released: Vec<Box<dyn Any>>,
    pub(crate) bufs: Rc<BufRing>,
    /// Which setup flags the kernel accepted.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests' ring check"))]
    pub(crate) setup_flags: &'static str,
}

impl Driver {
    /// Creates the ring, trying single-issuer + deferred task running first and falling
    /// back to older setups when the kernel refuses those flags.
    pub(crate) fn new(opts: &RingOptions) -> Result<Driver, SetupError> {
        if opts.entries == 0 {
            return Err(SetupError::Options("entries must be at least 1"));
        }
        if opts.recv_buffers == 0 || opts.recv_buffers > 32768 {
            return Err(SetupError::Options(
                "recv_buffers must be between 1 and 32768",
            ));
        }
        if opts.recv_buffer_size == 0 || u32::try_from(opts.recv_buffer_size).is_err() {
            return Err(SetupError::Options(
                "recv_buffer_size must be between 1 and 4 GiB",
            ));
        }
        let (uring, setup_flags) = build_ring(opts.entries)?;
        let buf_ring_error = |source| SetupError::BufRing {
            buffers: opts.recv_buffers,
            size: opts.recv_buffer_size,
            source,
        };
        let bufs =
            BufRing::new(opts.recv_buffers, opts.recv_buffer_size).map_err(buf_ring_error)?;
        bufs.register(&uring.submitter()).map_err(buf_ring_error)?;
        Ok(Driver {
            uring: ManuallyDrop::new(uring),
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            reaped: Vec::new(),
            woken: Vec::new(),
            released: Vec::new(),
            bufs: Rc::new(bufs),
            setup_flags,
        })
    }

    /// Allocates a slot for a new operation and queues its submission entry.
    ///
    /// # Safety
    ///
    /// Every pointer in `entry` must stay valid (and, for memory the kernel writes,
    /// otherwise unused) until the operation's last completion has been reaped. Callers
    /// guarantee this by keeping the pointed-to memory in heap allocations owned by the
    /// operation's future, which hands them to [`Driver::orphan`] if it is dropped early.
    pub(crate) unsafe fn push(&mut self, kind: OpKind, entry: squeue::Entry) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Slot {
                    generation: 0,
                    live: false,
                    kind: OpKind::Plain,
                    waker: None,
                    completions: VecDeque::new(),
                    orphan: None,
                    cancelling: false,
                });
                i
            }
        };
        let Some(slot) = self.slots.get_mut(index as usize) else {
            unreachable!("slot index comes from the slab itself")
        };
        slot.live = true;
        slot.kind = kind;
        slot.cancelling = false;
        self.in_flight += 1;
        let user_data = (u64::from(slot.generation) << 32) | u64::from(index);
        let entry = entry.user_data(user_data);
        // SAFETY: the caller guarantees that the entry's memory outlives the operation.
        unsafe { self.push_entry(&entry) };
        user_data
    }

    /// Puts an entry on the submission queue, flushing the queue to the kernel first if
    /// it is full.
    ///
    /// # Safety
    ///
    /// As for [`Driver::push`].
    unsafe fn push_entry(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: the caller guarantees that the memory the entry points to stays
            // valid until its completion; a cancel entry points to nothing.
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                return;
            }
            // Queue full: hand the queued entries to the kernel and retry. On EBUSY the
            // completion queue must be drained first.
            if let Err(e) = self.uring.submit() {
                tracing::warn!(error = %e, "io_uring submit failed while the submission queue was full");
                self.reap();
            }
        }
    }

    /// Polls an operation for its next completion. The slot is freed when the last one
    /// (no `IORING_CQE_F_MORE`) is taken.
    pub(crate) fn poll_completion(&mut self, user_data: u64, cx: &mut Context<'_>) -> Poll<Cqe> {
        let Some(slot) = self.slot(user_data) else {
            // Cannot happen: a future only polls the slot it owns, which is freed only
            // after it took the last completion. Report it as a cancelled operation.
            return Poll::Ready(Cqe {
                res: -libc::ECANCELED,
                flags: 0,
            });
        };
        match slot.completions.pop_front() {
            Some(cqe) => {
                if !cqe.more() {
                    self.free_slot(user_data);
                }
                Poll::Ready(cqe)
            }
            None => {
                match &slot.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => slot.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// Called when an operation's future is dropped before its last completion: keeps
    /// `data` (buffers, fds) alive until the kernel is done and asks the kernel to cancel.
    /// Completions already queued are released (fds closed, receive buffers recycled).
    pub(crate) fn orphan(&mut self, user_data: u64, data: Box<dyn Any>) {
        let bufs = Rc::clone(&self.bufs);
        let Some(slot) = self.slot(user_data) else {
            self.released.push(data);
            return;
        };
        let mut finished = false;
        for cqe in slot.completions.drain(..) {
            release_unclaimed(slot.kind, cqe, &bufs);
            finished |= !cqe.more();
        }
        slot.waker = None;
        if finished {
            self.released.push(data);
            self.free_slot(user_data);
            return;
        }
        slot.orphan = Some(data);
        self.cancel(user_data);
    }

    /// Asks the kernel to cancel one operation (once); its completion arrives as usual.
    pub(crate) fn cancel(&mut self, user_data: u64) {
        match self.slot(user_data) {
            Some(slot) if !slot.cancelling => slot.cancelling = true,
            _ => return,
        }
        let entry = opcode::AsyncCancel::new(user_data)
            .build()
            .user_data(CANCEL_USER_DATA);
        // SAFETY: a cancel request carries no pointer; it names its target by user_data.
        unsafe { self.push_entry(&entry) };
    }

    /// The live slot `user_data` names, if it is still that operation's.
    fn slot(&mut self, user_data: u64) -> Option<&mut Slot> {
        let (index, generation) = split_user_data(user_data);
        let slot = self.slots.get_mut(index)?;
        (slot.live && slot.generation == generation).then_some(slot)
    }

    fn free_slot(&mut self, user_data: u64) {
        let Some(slot) = self.slot(user_data) else {
            return;
        };
        slot.live = false;
        slot.waker = None;
        slot.completions.clear();
        slot.generation = slot.generation.wrapping_add(1) & GENERATION_MASK;
        let orphan = slot.orphan.take();
        self.released.extend(orphan);
        self.in_flight -= 1;
        let (index, _) = split_user_data(user_data);
        if let Ok(i) = u32::try_from(index) {
            self.free.push(i);
        }
    }

    /// Submits queued entries; waits for at least one completion when `wait` is set,
    /// for at most `limit` when given.
    /// With deferred task running, completions are only posted by an enter that asks for
    /// events, so this always does.
    pub(crate) fn submit(&mut self, wait: bool, limit: Option<Duration>) {
        let result = if let (true, Some(limit)) = (wait, limit) {
            // Wait for a completion, but no longer than `limit` (EXT_ARG, Linux 5.11;
            // ringress needs 6.0). Timing out is reported as ETIME.
            let ts = types::Timespec::from(limit);
            let args = types::SubmitArgs::new().timespec(&ts);
            self.uring.submitter().submit_with_args(1, &args)
        } else if wait {
            self.uring.submit_and_wait(1)
        } else {
            let pending = self.uring.submission().len();
            // SAFETY: plain io_uring_enter on our own ring: submit the `pending` entries we
            // queued (their memory is owned as `push` requires) and run deferred completions
            // without waiting; no argument pointer is passed.
            unsafe {
                self.uring.submitter().enter::<libc::sigset_t>(
                    u32::try_from(pending).unwrap_or(u32::MAX),
                    0,
                    IORING_ENTER_GETEVENTS,
                    None,
                )
            }
        };
        if let Err(e) = result {
            match e.raw_os_error() {
                // Interrupted, or completions must be reaped before more can be submitted.
                // ETIME: the wait reached its limit (the earliest timer deadline).
                Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::ETIME) => {}
                _ => tracing::warn!(error = %e, "io_uring_enter failed"),
            }
        }
    }

    /// Moves completions from the completion queue to their slots and collects the
    /// wakers to call (in [`Driver::woken`]) once the driver is no longer borrowed.
    pub(crate) fn reap(&mut self) {
        let mut reaped = std::mem::take(&mut self.reaped);
        reaped.extend(self.uring.completion().map(|e| {
            (
                e.user_data(),
                Cqe {
                    res: e.result(),
                    flags: e.flags(),
                },
            )
        }));
        let bufs = Rc::clone(&self.bufs);
        for (user_data, cqe) in reaped.drain(..) {
            if user_data == CANCEL_USER_DATA {
                continue;
            }
            let Some(slot) = self.slot(user_data) else {
                // A completion for a freed slot cannot happen (slots are freed only after
                // their last completion); if it does, still return a selected buffer.
                release_unclaimed(OpKind::Plain, cqe, &bufs);
                continue;
            };
            if slot.orphan.is_some() {
                release_unclaimed(slot.kind, cqe, &bufs);
                if !cqe.more() {
                    self.free_slot(user_data);
                }
                continue;
            }
            slot.completions.push_back(cqe);
            let waker = slot.waker.take();
            // Backpressure for multishot receive: a stream whose reader does not keep up
            // stops taking ring buffers; its reader re-arms after draining.
            let too_many = slot.kind == OpKind::RecvMulti
                && cqe.more()
                && slot.completions.len() >= MAX_QUEUED_RECV;
            self.woken.extend(waker);
            if too_many {
                self.cancel(user_data);
            }
        }
        self.reaped = reaped;
    }

    /// Number of operations the kernel still owns.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }
}

impl Drop for Driver {
    /// Cancels everything still in flight and waits for the kernel to finish with it, so
    /// no buffer is freed while the kernel may still write into it. If the kernel does not
    /// answer in time the remaining buffers are leaked rather than freed.
    fn drop(&mut self) {
        if self.teardown() {
            // SAFETY: the ring is not used again; nothing is in flight any more.
            unsafe { ManuallyDrop::drop(&mut self.uring) };
            return;
        }
        tracing::error!(
            in_flight = self.in_flight,
            "io_uring operations did not finish at shutdown; leaking the ring and its buffers"
        );
        // The kernel may still complete these operations: their buffers, the provided
        // buffer ring and the ring itself (its fd keeps the operations alive, its queues
        // are written by the kernel) are leaked instead of freed. The process is exiting.
        for slot in std::mem::take(&mut self.slots) {
            if slot.live {
                std::mem::forget(slot);
            }
        }
        std::mem::forget(Rc::clone(&self.bufs));
    }
}

impl Driver {
    /// Cancels every operation in flight and waits, a bounded time, for the kernel to
    /// finish them; true when nothing is left in flight.
    fn teardown(&mut self) -> bool {
        if self.in_flight == 0 {
            return true;
        }
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(CANCEL_USER_DATA);
        // SAFETY: a cancel request carries no pointer.
        unsafe { self.push_entry(&entry) };
        for _ in 0..TEARDOWN_MAX_WAITS {
            if self.in_flight == 0 {
                return true;
            }
            let wait = types::Timespec::from(TEARDOWN_WAIT);
            let args = types::SubmitArgs::new().timespec(&wait);
            // ETIME (nothing finished within the wait) and EINTR just mean "look again".
            let _ = self.uring.submitter().submit_with_args(1, &args);
            self.reap();
            self.woken.clear();
            self.released.clear();
        }
        self.in_flight == 0
    }
}

/// Releases what a completion nobody will read carries: an accepted fd or a selected
/// receive buffer.
fn release_unclaimed(kind: OpKind, cqe: Cqe, bufs: &BufRing) {
    if kind == OpKind::Accept && cqe.res >= 0 {
        // SAFETY: the kernel just created this fd for us and nobody else has seen it.
        unsafe { libc::close(cqe.res) };
    }
    if let Some(bid) = cqueue::buffer_select(cqe.flags) {
        bufs.recycle(bid);
    }
}

fn split_user_data(user_data: u64) -> (usize, u32) {
    let index = (user_data & 0xffff_ffff) as usize;
    let generation = (user_data >> 32) as u32;
    (index, generation)
}

/// `IORING_ENTER_GETEVENTS` (the crate keeps its enter flags private).
const IORING_ENTER_GETEVENTS: u32 = 1;

/// A name for the log and a way to configure the ring builder.
type SetupAttempt = (&'static str, fn(&mut io_uring::Builder));

/// Builds the ring with the best flags the kernel accepts.
fn build_ring(entries: u32) -> Result<(IoUring, &'static str), SetupError> {
    let cq_entries = entries.saturating_mul(2);
    let attempts: [SetupAttempt; 3] = [
        ("single_issuer+defer_taskrun+coop_taskrun", |b| {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_coop_taskrun();
        }),
        ("coop_taskrun", |b| {
            b.setup_coop_taskrun();
        }),
        ("no setup flags", |_| {}),
    ];
    let mut last = None;
    for (name, configure) in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq_entries).setup_clamp();
        configure(&mut builder);
        match builder.build(entries) {
            Ok(ring) => {
                tracing::debug!(flags = name, entries, "io_uring ring created");
                return Ok((ring, name));
            }
            // EINVAL: the kernel does not know one of the flags; try fewer.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(classify_setup_error(e)),
        }
    }
    Err(SetupError::Io(last.unwrap_or_else(|| {
        io::Error::other("no io_uring setup flags accepted")
    })))
}
