//! The bytes between an HTTP/2 connection (the `h2` crate) and its transport, in
//! memory: `h2` reads and writes a [`Pipe`] through tokio's `AsyncRead` and
//! `AsyncWrite` traits, and the connection's [`pump`] moves them to and from the
//! socket, a client's TLS records included. Both sides use it: client connections
//! (`proxy/http2/`, through `Downstream::pump`) and multiplexed upstream
//! connections (`upstream/http2/`). No tokio runtime is involved: the
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
use std::time::Duration;

use bytes::Bytes;
use h2::SendStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::buffers;
use crate::proxy::FloodGuard;
use crate::tls::{ServerSession, Step, TlsFailure};
use crate::uring::{self, FilledBuf, TcpStream};

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
    /// Bytes `h2` has read in all.
    read_total: usize,
    /// The first three bytes received (`first_len` of them): the length of the
    /// peer's first frame.
    first: [u8; 3],
    first_len: usize,
    /// A client connection's control-frame budget, and whether it ran out (what
    /// the client sends after that is dropped).
    guard: Option<FloodGuard>,
    flooded: bool,
    /// Plaintext `h2` wrote, not yet taken by the pump.
    outbound: Vec<u8>,
}

impl State {
    /// Marks `n` waiting inbound bytes read; an idle connection's pipe then holds no
    /// buffer.
    fn consume(&mut self, n: usize) {
        self.read_at += n;
        self.read_total += n;
        if self.read_at == self.inbound.len() {
            buffers::give(&mut self.inbound);
            self.read_at = 0;
        }
    }
}

/// One connection's pipe; clones share it (one for `h2`, one for the pump).
#[derive(Clone, Default)]
pub(crate) struct Pipe(Rc<RefCell<State>>);

impl Pipe {
    /// The pipe of a client connection, whose control frames are counted
    /// ([`FloodGuard`]).
    pub(crate) fn guarded() -> Pipe {
        let pipe = Pipe::default();
        pipe.0.borrow_mut().guard = Some(FloodGuard::default());
        pipe
    }

    /// Whether the client sent more control frames than its budget.
    pub(crate) fn flooded(&self) -> bool {
        self.0.borrow().flooded
    }

    /// Hands the peer's plaintext to `h2`.
    pub(crate) fn push_inbound(&self, data: &[u8]) {
        let mut state = self.0.borrow_mut();
        if state.flooded {
            return;
        }
        let mut data = data;
        if let Some(guard) = &mut state.guard
            && let Some(before) = guard.scan(data, uring::now)
        {
            // `h2` reads up to the flood, so a connection flooded from its first
            // bytes still completes the handshake and is sent GOAWAY.
            state.flooded = true;
            data = &data[..before];
        }
        let have = state.first_len;
        let want = (3 - have).min(data.len());
        state.first[have..have + want].copy_from_slice(&data[..want]);
        state.first_len += want;
        buffers::ensure(&mut state.inbound);
        state.inbound.extend_from_slice(data);
    }

    /// Whether `h2` has read the peer's whole first frame (a server's SETTINGS,
    /// which must come first).
    pub(crate) fn first_frame_read(&self) -> bool {
        let state = self.0.borrow();
        let [a, b, c] = state.first;
        let length = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
        state.first_len == 3 && state.read_total >= 9 + length
    }

    /// Tells `h2` the client sends no more.
    pub(crate) fn close_inbound(&self) {
        self.0.borrow_mut().inbound_closed = true;
    }

    /// Takes what `h2` wrote (appended to `out`); `h2` may write again.
    pub(crate) fn take_outbound(&self, out: &mut Vec<u8>) -> usize {
        let mut state = self.0.borrow_mut();
        let mut taken = std::mem::take(&mut state.outbound);
        let n = taken.len();
        if out.is_empty() {
            buffers::give(out);
            *out = taken;
        } else {
            out.extend_from_slice(&taken);
            buffers::give(&mut taken);
        }
        n
    }

    /// Whether `h2` wrote something not taken yet.
    pub(crate) fn has_outbound(&self) -> bool {
        !self.0.borrow().outbound.is_empty()
    }

    /// For a tunnel: moves the peer's plaintext waiting here to the end of `out`.
    /// `Some(0)` when none waits, `None` once the peer sent no more and all is taken.
    pub(crate) fn take_inbound(&self, out: &mut Vec<u8>) -> Option<usize> {
        let mut state = self.0.borrow_mut();
        let from = state.read_at;
        let n = state.inbound.len() - from;
        if n == 0 {
            return (!state.inbound_closed).then_some(0);
        }
        out.extend_from_slice(&state.inbound[from..]);
        state.consume(n);
        Some(n)
    }

    /// Appends to the output what of `data` fits under [`OUT_LIMIT`]; how much.
    pub(crate) fn write_outbound(&self, data: &[u8]) -> usize {
        let mut state = self.0.borrow_mut();
        let n = OUT_LIMIT
            .saturating_sub(state.outbound.len())
            .min(data.len());
        if n > 0 {
            buffers::ensure(&mut state.outbound);
            state.outbound.extend_from_slice(&data[..n]);
        }
        n
    }

    /// Peer bytes received and not read yet.
    fn inbound_waiting(&self) -> usize {
        let state = self.0.borrow();
        state.inbound.len() - state.read_at
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
            state.consume(n);
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
        match self.write_outbound(data) {
            // The pump polls again once it has sent what waits (see the module doc).
            0 if !data.is_empty() => Poll::Pending,
            n => Poll::Ready(Ok(n)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // What was written is sent by the pump after this poll.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// When [`pump`] is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PumpUntil {
    /// When the peer's end has reached the driven side, or the drive is done (HTTP/2:
    /// a connection without its client has nothing left to do).
    EitherEnds,
    /// When the drive is done, whatever the peer did: it learns of the peer's end from
    /// the pipe ([`Pipe::take_inbound`]) and finishes what it has in hand (a tunnel
    /// passes the peer's last bytes on). The peer's bytes are received only while
    /// fewer than [`OUT_LIMIT`] wait in the pipe unread.
    Driven,
}

/// Why [`pump`] stopped early.
pub(crate) enum PumpError {
    Io(io::Error),
    Tls(TlsFailure),
}

/// A TLS session the pump moves records through: a client's ([`ServerSession`]) or an
/// upstream's (`tls::client_session::ClientSession`).
pub(crate) trait PumpTls {
    /// Opens the received ciphertext `data`, appending its plaintext to `plain`;
    /// whether the peer's end (close_notify) came.
    fn open(&mut self, data: &[u8], plain: &mut Vec<u8>) -> Result<bool, TlsFailure>;
    /// Seals `data` into records to send.
    fn encrypt(&mut self, data: &[u8]) -> io::Result<()>;
    /// The records to send, if any, and their length; the buffer comes back to
    /// [`PumpTls::finish_send`].
    fn start_send(&mut self) -> io::Result<Option<(Vec<u8>, usize)>>;
    fn finish_send(&mut self, buf: Vec<u8>);
    /// Gives back buffers while the connection waits.
    fn release_buffers(&mut self);
}

impl PumpTls for ServerSession {
    fn open(&mut self, data: &[u8], plain: &mut Vec<u8>) -> Result<bool, TlsFailure> {
        self.received(data);
        let step = self.process_received(plain)?;
        Ok(step == Step::Closed || self.peer_closed())
    }

    fn encrypt(&mut self, data: &[u8]) -> io::Result<()> {
        ServerSession::encrypt(self, data)
    }

    fn start_send(&mut self) -> io::Result<Option<(Vec<u8>, usize)>> {
        ServerSession::start_send(self)
    }

    fn finish_send(&mut self, buf: Vec<u8>) {
        ServerSession::finish_send(self, buf);
    }

    fn release_buffers(&mut self) {
        ServerSession::release_buffers(self);
    }
}

/// Moves bytes between `tcp` (through `session`, a TLS session, when there is one) and the HTTP/2 connection or tunnel on `pipe` while `drive` polls it,
/// until `drive` is done and what it wrote is sent, or (with
/// [`PumpUntil::EitherEnds`]) the peer is gone.
pub(crate) async fn pump(
    tcp: &TcpStream,
    mut session: Option<&mut dyn PumpTls>,
    pipe: &Pipe,
    until: PumpUntil,
    mut drive: impl FnMut(&mut Context<'_>) -> Poll<()>,
) -> Result<(), PumpError> {
    type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;
    let mut recv: Option<Boxed<'_, io::Result<uring::RecvBuf>>> = None;
    let mut send: Option<Boxed<'_, (io::Result<()>, FilledBuf)>> = None;
    let (mut driven, mut client_done) = (false, false);
    // Plaintext both ways, from the shard's buffer pool while bytes move, given back
    // whenever the connection waits with nothing to send.
    let (mut plain, mut outbound) = (Vec::new(), Vec::new());
    std::future::poll_fn(|cx| {
        loop {
            let mut moved = false;
            if !driven && drive(cx).is_ready() {
                driven = true;
            }
            let room = until == PumpUntil::EitherEnds || pipe.inbound_waiting() < OUT_LIMIT;
            if !client_done && (room || recv.is_some()) {
                let receive = recv.get_or_insert_with(|| Box::pin(tcp.recv()));
                if let Poll::Ready(received) = receive.as_mut().poll(cx) {
                    recv = None;
                    moved = true;
                    let data = received.map_err(PumpError::Io)?;
                    match &mut session {
                        _ if data.is_empty() => client_done = true,
                        None => pipe.push_inbound(&data),
                        Some(tls) => {
                            plain.clear();
                            client_done = tls.open(&data, &mut plain).map_err(PumpError::Tls)?;
                            pipe.push_inbound(&plain);
                        }
                    }
                    if client_done {
                        pipe.close_inbound();
                    }
                }
            }
            if send.is_none() {
                outbound.clear();
                pipe.take_outbound(&mut outbound);
                let filled = match &mut session {
                    None => {
                        let len = outbound.len();
                        (len > 0).then(|| FilledBuf {
                            buf: std::mem::take(&mut outbound),
                            len,
                        })
                    }
                    Some(tls) => {
                        if !outbound.is_empty() {
                            tls.encrypt(&outbound).map_err(PumpError::Io)?;
                        }
                        tls.start_send()
                            .map_err(PumpError::Io)?
                            .map(|(buf, len)| FilledBuf { buf, len })
                    }
                };
                if let Some(filled) = filled {
                    send = Some(Box::pin(tcp.send_all(filled)));
                }
            }
            if let Some(sending) = &mut send
                && let Poll::Ready((sent, filled)) = sending.as_mut().poll(cx)
            {
                send = None;
                moved = true;
                match &mut session {
                    Some(tls) => tls.finish_send(filled.buf),
                    // The plaintext buffer comes back for the next send.
                    None => outbound = filled.buf,
                }
                sent.map_err(PumpError::Io)?;
            }
            let peer_ended = client_done && until == PumpUntil::EitherEnds;
            if (driven || peer_ended) && send.is_none() && !pipe.has_outbound() {
                if !driven {
                    // The peer's end reaches `h2` too, so the streams still waiting
                    // on the connection learn it ended.
                    let _ = drive(cx);
                }
                return Poll::Ready(Ok(()));
            }
            if !moved {
                if send.is_none() {
                    buffers::give(&mut plain);
                    buffers::give(&mut outbound);
                    if let Some(tls) = &mut session {
                        tls.release_buffers();
                    }
                }
                return Poll::Pending;
            }
        }
    })
    .await
}

/// Sends `data` on an HTTP/2 stream as the `peer`'s flow-control window allows (the
/// peer named in errors: "client", "upstream"), each wait for window at most `idle`;
/// `end` ends the stream with the last piece. Whether `END_STREAM` went (it does not
/// when `data` is empty: the caller ends the stream its own way).
pub(crate) async fn send_within(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    idle: Duration,
    peer: &str,
) -> io::Result<bool> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let capacity = uring::timeout(idle, std::future::poll_fn(|cx| send.poll_capacity(cx)));
        let granted = match capacity.await {
            Ok(Some(Ok(n))) => n,
            Ok(Some(Err(e))) => return Err(io::Error::other(e)),
            Ok(None) => {
                let message = format!("the {peer} reset the stream");
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, message));
            }
            Err(_) => {
                let message = format!("the {peer}'s flow-control window stayed closed");
                return Err(io::Error::new(io::ErrorKind::TimedOut, message));
            }
        };
        let piece = data.split_to(granted.min(data.len()));
        let last = end && data.is_empty();
        send.send_data(piece, last).map_err(io::Error::other)?;
        if last {
            return Ok(true);
        }
    }
    Ok(false)
}
