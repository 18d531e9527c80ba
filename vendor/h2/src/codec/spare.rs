//! ringress: the connection buffers a thread keeps for reuse.
//!
//! A connection takes its read and write buffers only while bytes move and gives
//! them back when it has nothing to read or write (see `FramedRead` and
//! `FramedWrite`), so an idle connection holds none. Given back here, they are taken
//! again by the next connection on the same thread that needs one, instead of a
//! `malloc` and `free` of 8 and 16 KiB per turn of a busy connection.

use bytes::BytesMut;
use std::cell::RefCell;
use std::thread::LocalKey;

/// Buffers of each kind a thread keeps at most (with the default sizes, 1.5 MiB).
const MAX_SPARE: usize = 64;

/// A buffer that grew past this many times its kind's size is freed, not kept.
const MAX_GROWTH: usize = 4;

type Pool = RefCell<Vec<BytesMut>>;

thread_local! {
    static READ: Pool = const { RefCell::new(Vec::new()) };
    static WRITE: Pool = const { RefCell::new(Vec::new()) };
}

/// An empty read buffer of at least `capacity` bytes.
pub(crate) fn take_read(capacity: usize) -> BytesMut {
    take(&READ, capacity)
}

/// Gives back an empty read buffer (one still shared with received frames is
/// dropped: its memory goes when they do).
pub(crate) fn give_read(buf: BytesMut, capacity: usize) {
    give(&READ, buf, capacity)
}

/// An empty write buffer of at least `capacity` bytes.
pub(crate) fn take_write(capacity: usize) -> BytesMut {
    take(&WRITE, capacity)
}

/// Gives back an empty write buffer.
pub(crate) fn give_write(buf: BytesMut, capacity: usize) {
    give(&WRITE, buf, capacity)
}

fn take(pool: &'static LocalKey<Pool>, capacity: usize) -> BytesMut {
    pool.try_with(|pool| pool.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| BytesMut::with_capacity(capacity))
}

fn give(pool: &'static LocalKey<Pool>, mut buf: BytesMut, capacity: usize) {
    // `try_reclaim` succeeds only for storage no frame shares any more; it makes the
    // whole allocation usable from the start again.
    if !buf.is_empty() || !buf.try_reclaim(capacity) || buf.capacity() > capacity * MAX_GROWTH {
        return;
    }
    let _ = pool.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < MAX_SPARE {
            pool.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again() {
        let mut buf = take_write(1024);
        buf.extend_from_slice(b"frame");
        buf.clear();
        let ptr = buf.as_ptr();
        give_write(buf, 1024);
        let again = take_write(1024);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty() && again.capacity() >= 1024);
    }

    #[test]
    fn a_buffer_shared_with_a_frame_is_not_kept() {
        let mut buf = take_read(1024);
        buf.extend_from_slice(b"frame");
        let frame = buf.split_to(5).freeze();
        give_read(buf, 1024);
        let again = take_read(1024);
        assert!(again.as_ptr() != frame.as_ptr());
        drop(frame);
    }
}
