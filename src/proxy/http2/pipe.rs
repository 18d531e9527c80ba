//! The bytes between an HTTP/2 connection (the `h2` crate) and its transport, in
//! memory: `h2` reads and writes a [`Pipe`] through tokio's `AsyncRead` and
//! `AsyncWrite` traits, and the connection's pump (`Downstream::pump_h2`) moves them
//! to and from the socket, TLS records included. No tokio runtime is involved: the
//! traits are only the interface, the shard's executor polls and wakes.
//!
//! Writes are bounded: once [`OUT_LIMIT`] bytes wait to be sent, `h2` is told to wait
//! (`Poll::Pending`) until the pump has taken them, so a client that does not read
//! holds at most that much of the connection's output here.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

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
    /// `h2`, waiting for input or for room to write.
    h2: Option<Waker>,
    /// The pump, waiting for output.
    pump: Option<Waker>,
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
        wake(&mut state.h2);
    }

    /// Tells `h2` the client sends no more.
    pub(crate) fn close_inbound(&self) {
        let mut state = self.0.borrow_mut();
        state.inbound_closed = true;
        wake(&mut state.h2);
    }

    /// Takes what `h2` wrote (appended to `out`); `h2` may write again.
    pub(crate) fn take_outbound(&self, out: &mut Vec<u8>) -> usize {
        let mut state = self.0.borrow_mut();
        let n = state.outbound.len();
        out.append(&mut state.outbound);
        if n > 0 {
            wake(&mut state.h2);
        }
        n
    }

    /// Whether `h2` wrote something not taken yet.
    pub(crate) fn has_outbound(&self) -> bool {
        !self.0.borrow().outbound.is_empty()
    }

    /// Wakes the pump's task (`cx`) when `h2` writes.
    pub(crate) fn wake_pump_on_output(&self, cx: &Context<'_>) {
        self.0.borrow_mut().pump = Some(cx.waker().clone());
    }
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

impl AsyncRead for Pipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
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
        state.h2 = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.0.borrow_mut();
        let room = OUT_LIMIT.saturating_sub(state.outbound.len());
        if room == 0 {
            state.h2 = Some(cx.waker().clone());
            wake(&mut state.pump);
            return Poll::Pending;
        }
        let n = room.min(data.len());
        state.outbound.extend_from_slice(&data[..n]);
        wake(&mut state.pump);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The pump sends whatever was written; there is nothing to wait for here.
        wake(&mut self.0.borrow_mut().pump);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        wake(&mut self.0.borrow_mut().pump);
        Poll::Ready(Ok(()))
    }
}
