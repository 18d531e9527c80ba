//! The shard's pool of byte buffers, so an idle keep-alive connection holds none.
//!
//! A connection takes its request, response and ciphertext buffers from here when
//! bytes arrive and gives them back whenever it waits for the client's next request;
//! thousands of silent connections then share the few buffers the busy ones use,
//! instead of each keeping kilobytes of capacity it is not using. The pool is per
//! thread, i.e. per shard: no locking, no sharing between cores.

use std::cell::RefCell;

/// Capacity of a buffer the pool hands out when it has none to reuse.
pub(crate) const BUFFER_CAPACITY: usize = 4096;

/// Buffers kept for reuse at most; more are freed when given back. A busy connection
/// holds up to five (request, response, plaintext out, TLS in and out), so this covers
/// about a hundred connections in flight on one shard without a `malloc` per request,
/// and bounds what the pool keeps to 2 MiB of 4 KiB buffers (more if some grew).
const POOL_MAX_BUFFERS: usize = 512;

/// A buffer that grew beyond this (a large head, a big chunk) is freed, not kept.
const POOL_MAX_CAPACITY: usize = 64 * 1024;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with at least [`BUFFER_CAPACITY`] bytes of capacity.
pub(crate) fn take() -> Vec<u8> {
    POOL.with(|pool| pool.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(BUFFER_CAPACITY))
}

/// Makes sure `buf` has capacity, taking a pooled buffer when it has none.
pub(crate) fn ensure(buf: &mut Vec<u8>) {
    if buf.capacity() == 0 {
        *buf = take();
    }
}

/// Gives `buf`'s allocation back to the pool (its contents are dropped), leaving it
/// empty and without capacity.
pub(crate) fn give(buf: &mut Vec<u8>) {
    let mut buf = std::mem::take(buf);
    let capacity = buf.capacity();
    if !(BUFFER_CAPACITY..=POOL_MAX_CAPACITY).contains(&capacity) {
        return;
    }
    buf.clear();
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_MAX_BUFFERS {
            pool.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_buffers_come_back_empty_with_their_capacity() {
        let mut buf = take();
        assert!(buf.capacity() >= BUFFER_CAPACITY);
        buf.extend_from_slice(b"hello");
        let ptr = buf.as_ptr();
        give(&mut buf);
        assert_eq!(buf.capacity(), 0);
        let again = take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr);
    }

    #[test]
    fn ensure_keeps_a_buffer_that_has_capacity() {
        let mut buf = Vec::with_capacity(10);
        buf.push(1);
        ensure(&mut buf);
        assert_eq!(buf, [1]);
        let mut empty = Vec::new();
        ensure(&mut empty);
        assert!(empty.capacity() >= BUFFER_CAPACITY);
    }

    #[test]
    fn small_and_huge_buffers_are_not_pooled() {
        let mut small = Vec::with_capacity(16);
        give(&mut small);
        let mut huge = Vec::with_capacity(POOL_MAX_CAPACITY + 1);
        give(&mut huge);
        POOL.with(|pool| {
            assert!(
                pool.borrow()
                    .iter()
                    .all(|b| (BUFFER_CAPACITY..=POOL_MAX_CAPACITY).contains(&b.capacity()))
            );
        });
    }
}
