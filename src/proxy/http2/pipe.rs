//! The bytes between an HTTP/2 connection (the `h2` crate) and its transport, in
//! memory: `h2` reads and writes a [`Pipe`] through tokio's `AsyncRead` and
//! `AsyncWrite` traits, and the connection's pump (`Downstream::pump_h2`) moves them
//! to and from the socket, TLS records included. No tokio runtime is involved: the
//! traits are only the interface, the shard's executor polls.
//!
//! Writes are bounded: once [`OUT_LIMIT`] bytes wait to be sent, `h2` is told to wait
//! (`Poll::Pending`) until the pump has taken them, so a client that does not read
//! holds at most that much of the connection's output here.
//!
//! The pipe wakes no one. `h2` is polled by the pump alone, in the pump's task, right
//! after every change to the pipe (bytes in, bytes taken out) and whenever anything
//! else wakes that task (a stream's task handing `h2` data wakes it through `h2`'s own
//! waker, the socket through the ring). A wake from the pipe could only re-poll the
//! same task for nothing: `h2` flushes on every poll, and a flush that woke the pump
//! would have the task poll itself again and again.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Output bytes a connection holds before `h2` is made to wait: four full TLS
/// records, what one send takes at most.
pub(crate) const OUT_LIMIT: usize = 64 * 1024;

#[derive(Default)]
struct State {
    /// Plaintext from the client not yet read by `h2`, from `read_at` on.
    inbound: Vec<u8>,
    read_at: usize,
    /// The client sent no more (EOF or close_notify).
    inbound_closed: bool,
    /// Plaintext `h2` wrote, not yet taken by the pump.
    outbound: Vec<u8>,
}

/// One connection's pipe; clones share it (one for `h2`, one for the pump).
#[derive(Clone, Default)]
pub(crate) struct Pipe(Rc<RefCell<State>>);

impl Pipe {
    /// Hands client plaintext to `h2`.
    pub(crate) fn push_inbound(&self, data: &[u8]) {
        let mut state = self.0.borrow_mut();
        if state.read_at == state.inbound.len() {
            state.inbound.clear();
            state.read_at = 0;
        }
        state.inbound.extend_from_slice(data);
    }

    /// Tells `h2` the client sends no more.
    pub(crate) fn close_inbound(&self) {
        self.0.borrow_mut().inbound_closed = true;
    }

    /// Takes what `h2` wrote (appended to `out`); `h2` may write again.
    pub(crate) fn take_outbound(&self, out: &mut Vec<u8>) -> usize {
        let mut state = self.0.borrow_mut();
        let n = state.outbound.len();
        out.append(&mut state.outbound);
        n
    }

    /// Whether `h2` wrote something not taken yet.
    pub(crate) fn has_outbound(&self) -> bool {
        !self.0.borrow().outbound.is_empty()
    }
}

impl AsyncRead for Pipe {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut state = self.0.borrow_mut();
        let waiting = state.inbound.len() - state.read_at;
        if waiting > 0 {
            let n = waiting.min(buf.remaining());
            let from = state.read_at;
            buf.put_slice(&state.inbound[from..from + n]);
            state.read_at += n;
            return Poll::Ready(Ok(()));
        }
        if state.inbound_closed {
            // Nothing put: the end of the stream.
            return Poll::Ready(Ok(()));
        }
        // The pump polls again once bytes arrive (see the module doc).
        Poll::Pending
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.0.borrow_mut();
        let room = OUT_LIMIT.saturating_sub(state.outbound.len());
        if room == 0 {
            // The pump polls again once it has sent what waits (see the module doc).
            return Poll::Pending;
        }
        let n = room.min(data.len());
        state.outbound.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // What was written is sent by the pump after this poll.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
