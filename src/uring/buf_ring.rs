//! The shard's provided buffer ring: receive buffers the kernel picks from when data
//! arrives on any connection (`IORING_OP_RECV` with buffer select), so idle connections
//! hold no buffer. A [`RecvBuf`] is one received chunk; it goes back to the ring when
//! dropped, i.e. as soon as TLS or HTTP parsing has consumed it.

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::fmt;
use std::io;
use std::ops::Deref;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

/// The buffer group id of the shard's only buffer ring.
pub(crate) const BUF_GROUP: u16 = 0;

/// Ring memory must be page aligned.
const RING_ALIGN: usize = 4096;

/// One ring entry as the kernel reads it (`struct io_uring_buf`). The first entry's
/// `resv` field is the ring's tail. Declared here so fields can be written through raw
/// pointers, without a `&mut` covering the tail the kernel reads concurrently.
#[repr(C)]
struct RawBufEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(
    std::mem::size_of::<RawBufEntry>() == std::mem::size_of::<io_uring::types::BufRingEntry>()
);

/// Receive buffers registered with the kernel as one provided buffer ring.
///
/// Ownership: the ring owns one heap block of `count * size` bytes. A buffer id is owned
/// either by the kernel (it is between the ring's head and tail) or by exactly one
/// [`RecvBuf`] / unclaimed completion, which gives it back with [`BufRing::recycle`].
pub(crate) struct BufRing {
    ring: NonNull<RawBufEntry>,
    ring_layout: Layout,
    mask: u16,
    buffers: NonNull<u8>,
    buffers_layout: Layout,
    buf_size: usize,
    count: u16,
    /// Our copy of the ring's tail (the kernel only reads it).
    tail: Cell<u16>,
}

impl BufRing {
    /// Allocates `count` buffers of `size` bytes and puts them all in the ring.
    pub(crate) fn new(count: u16, size: usize) -> io::Result<BufRing> {
        let entries = count
            .checked_next_power_of_two()
            .ok_or_else(|| io::Error::other("buffer count too large"))?;
        let ring_layout = Layout::from_size_align(
            usize::from(entries) * std::mem::size_of::<RawBufEntry>(),
            RING_ALIGN,
        )
        .map_err(io::Error::other)?;
        let buffers_layout = Layout::from_size_align(
            size.checked_mul(usize::from(count))
                .ok_or_else(|| io::Error::other("buffer memory size overflows"))?,
            64,
        )
        .map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (count >= 1, size >= 1 are checked by
        // the caller, entries >= 1). The blocks are owned by the returned BufRing and
        // freed in its Drop.
        let (ring, buffers) = unsafe {
            let ring = alloc::alloc_zeroed(ring_layout).cast::<RawBufEntry>();
            let buffers = alloc::alloc_zeroed(buffers_layout);
            (ring, buffers)
        };
        let (Some(ring), Some(buffers)) = (NonNull::new(ring), NonNull::new(buffers)) else {
            alloc::handle_alloc_error(ring_layout)
        };
        let bufs = BufRing {
            ring,
            ring_layout,
            mask: entries - 1,
            buffers,
            buffers_layout,
            buf_size: size,
            count,
            tail: Cell::new(0),
        };
        for bid in 0..count {
            bufs.recycle(bid);
        }
        Ok(bufs)
    }

    /// Registers the ring with the kernel under [`BUF_GROUP`].
    pub(crate) fn register(&self, submitter: &io_uring::Submitter<'_>) -> io::Result<()> {
        let entries = self.mask.wrapping_add(1);
        // SAFETY: the ring memory is owned by `self`, page aligned and `entries` entries
        // long; the driver that registers it holds an `Rc<BufRing>`, so it lives until the
        // io_uring instance is closed (after the driver's teardown).
        unsafe {
            submitter.register_buf_ring_with_flags(self.ring.as_ptr() as u64, entries, BUF_GROUP, 0)
        }
    }

    /// Size of each buffer: how much one receive may return.
    pub(crate) fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Gives buffer `bid` back to the kernel.
    pub(crate) fn recycle(&self, bid: u16) {
        if bid >= self.count {
            tracing::error!(bid, "kernel returned an unknown receive buffer id");
            return;
        }
        let tail = self.tail.get();
        let index = usize::from(tail & self.mask);
        let len = u32::try_from(self.buf_size).unwrap_or(u32::MAX);
        // SAFETY: `index` is within the ring allocation (masked by entries - 1), which
        // `self` owns. The entry at the tail is not visible to the kernel until the tail is
        // published below, and this runtime is single threaded, so nobody else reads or
        // writes these fields now; `resv` (the tail, in entry 0) is not touched. `bid <
        // count`, so the address is inside the buffers block, which lives as long as `self`.
        unsafe {
            let entry = self.ring.as_ptr().add(index);
            let addr = self.buffers.as_ptr().add(usize::from(bid) * self.buf_size);
            (&raw mut (*entry).addr).write(addr as u64);
            (&raw mut (*entry).len).write(len);
            (&raw mut (*entry).bid).write(bid);
        }
        let tail = tail.wrapping_add(1);
        self.tail.set(tail);
        // SAFETY: the tail is the `resv` field of the first ring entry, which we own,
        // 2-byte aligned; the kernel reads it concurrently, so it is only ever accessed
        // atomically (release: the entry above is visible before the new tail).
        unsafe {
            let tail_ptr = &raw mut (*self.ring.as_ptr()).resv;
            AtomicU16::from_ptr(tail_ptr).store(tail, Ordering::Release);
        }
    }

    /// The first `len` bytes of buffer `bid`.
    ///
    /// # Safety
    ///
    /// The caller must own `bid` (the kernel selected it for a completion that the caller
    /// holds and it has not been recycled), so the kernel does not write into it.
    unsafe fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        let bid = bid.min(self.count.saturating_sub(1));
        let len = len.min(self.buf_size);
        // SAFETY: bid < count and len <= buf_size keep the slice inside the buffers block;
        // the caller owns the buffer, so nothing writes to it while the slice lives.
        unsafe {
            std::slice::from_raw_parts(
                self.buffers.as_ptr().add(usize::from(bid) * self.buf_size),
                len,
            )
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both blocks were allocated in `new` with these layouts. The BufRing is
        // dropped only when the driver and every RecvBuf are gone, and the driver gives up
        // its reference only once no operation is in flight (when the kernel does not
        // finish them in time, the driver leaks a reference, so this never runs), so
        // neither the kernel nor Rust uses them.
        unsafe {
            alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            alloc::dealloc(self.buffers.as_ptr(), self.buffers_layout);
        }
    }
}

/// Bytes received from a connection. Empty means the peer closed its sending side.
///
/// Usually one of the shard's ring buffers, returned to the ring when this is dropped;
/// when the ring was empty it is an owned `Vec`.
pub(crate) struct RecvBuf {
    inner: RecvInner,
}

enum RecvInner {
    Ring {
        bufs: Rc<BufRing>,
        bid: u16,
        len: usize,
    },
    Owned(Vec<u8>),
}

impl RecvBuf {
    /// Buffer `bid` of `bufs` holding `len` received bytes; takes ownership of `bid`.
    pub(crate) fn from_ring(bufs: Rc<BufRing>, bid: u16, len: usize) -> RecvBuf {
        RecvBuf {
            inner: RecvInner::Ring { bufs, bid, len },
        }
    }

    /// Bytes received into an owned vector.
    pub(crate) fn from_vec(v: Vec<u8>) -> RecvBuf {
        RecvBuf {
            inner: RecvInner::Owned(v),
        }
    }

    /// Whether this came from the shard's buffer ring (false: the ring was empty and the
    /// runtime received into its own allocation).
    pub(crate) fn is_from_ring(&self) -> bool {
        matches!(self.inner, RecvInner::Ring { .. })
    }
}

impl Deref for RecvBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.inner {
            // SAFETY: this RecvBuf owns `bid` until its Drop recycles it.
            RecvInner::Ring { bufs, bid, len } => unsafe { bufs.bytes(*bid, *len) },
            RecvInner::Owned(v) => v,
        }
    }
}

impl AsRef<[u8]> for RecvBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for RecvBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBuf")
            .field("len", &self.len())
            .field("from_ring", &self.is_from_ring())
            .finish()
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        if let RecvInner::Ring { bufs, bid, .. } = &self.inner {
            bufs.recycle(*bid);
        }
    }
}
