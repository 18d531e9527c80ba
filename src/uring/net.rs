//! TCP on the ring: the shard's [`Listener`]s (multishot accept, `SO_REUSEPORT`,
//! optional CPU steering) where every client connection begins, and [`TcpStream`] for
//! both client and upstream connections: connect, receive from the buffer ring, send
//! owned buffers, shut down.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use io_uring::{opcode, types};

use super::buf_ring::{BUF_GROUP, RecvBuf};
use super::executor::{Shared, current};
use super::op::{MultiOp, Op};
use super::ring::{Cqe, OpKind};

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic value, used by x86-64 and aarch64; the libc
/// crate does not export it for glibc targets).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// A buffer an operation can send. The operation owns the value from submission to
/// its last completion (also when its future is dropped first, see `op.rs`), passes
/// the kernel the address of `as_slice()`, and hands the same value back after.
///
/// # Safety
///
/// The bytes `as_slice()` returns must not move when the value itself moves, and must
/// stay valid and unchanged while the value is alive and not used through `&mut`: they
/// live in a heap block the value owns, or in static memory, never inside the value.
/// That is what lets an operation keep the value by value (no extra `Box` per send)
/// while the kernel reads the bytes. Every implementation is in this file.
pub unsafe trait IoBuf: 'static {
    /// The bytes to send.
    fn as_slice(&self) -> &[u8];
}

// SAFETY: a Vec's elements are in its heap block, which moving the Vec does not move;
// an empty Vec is never sent.
unsafe impl IoBuf for Vec<u8> {
    fn as_slice(&self) -> &[u8] {
        self
    }
}

// SAFETY: as for Vec: the bytes are in the box's heap block.
unsafe impl IoBuf for Box<[u8]> {
    fn as_slice(&self) -> &[u8] {
        self
    }
}

// SAFETY: static memory never moves.
unsafe impl IoBuf for &'static [u8] {
    fn as_slice(&self) -> &[u8] {
        self
    }
}

// SAFETY: static memory never moves.
unsafe impl IoBuf for &'static str {
    fn as_slice(&self) -> &[u8] {
        self.as_bytes()
    }
}

// SAFETY: a String's bytes are in its heap block, as for Vec.
unsafe impl IoBuf for String {
    fn as_slice(&self) -> &[u8] {
        self.as_bytes()
    }
}

// SAFETY: a ring buffer's bytes are in the buffer ring's block, which the driver
// allocates once and never moves or frees while a `RecvBuf` holds an `Rc` of the ring;
// the `RecvBuf` owns its buffer id (the kernel fills it again only after the drop
// recycles it). An owned one's bytes are in its Vec's heap block, as for Vec.
unsafe impl IoBuf for RecvBuf {
    fn as_slice(&self) -> &[u8] {
        self
    }
}

impl Default for RecvBuf {
    /// No bytes (what a send that timed out hands back).
    fn default() -> Self {
        RecvBuf::from_vec(Vec::new())
    }
}

/// A vector of which only the first `len` bytes are sent: the bytes after them stay
/// as they are (initialized, ready for reuse) instead of being truncated away.
#[derive(Debug, Default)]
pub(crate) struct FilledBuf {
    pub(crate) buf: Vec<u8>,
    pub(crate) len: usize,
}

// SAFETY: the bytes are in the Vec's heap block, as for Vec; `len` past the end sends
// nothing.
unsafe impl IoBuf for FilledBuf {
    fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// How a [`Listener`] is bound.
#[derive(Debug, Clone)]
pub(crate) struct ListenOptions {
    /// Set `SO_REUSEPORT`, so every shard binds its own listener on the same port and
    /// the kernel spreads connections over them.
    pub(crate) reuseport: bool,
    /// The accept backlog passed to `listen(2)`.
    pub(crate) backlog: u32,
    /// `TCP_USER_TIMEOUT` for every accepted connection: how long data sent may stay
    /// unacknowledged before the kernel gives the connection up (a peer that
    /// vanished without a FIN or a reset).
    pub(crate) user_timeout: Option<Duration>,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            reuseport: true,
            backlog: 1024,
            user_timeout: None,
        }
    }
}

/// A listening TCP socket of one shard. Not `Send`: bind it on the shard thread.
///
/// One task should call [`Listener::accept`] at a time (the shard's accept loop);
/// concurrent callers are served, but only the last one to wait is woken.
#[derive(Debug)]
pub(crate) struct Listener {
    fd: Rc<OwnedFd>,
    accept: RefCell<Option<MultiOp>>,
}

/// Raises this process's soft limit on open descriptors (`RLIMIT_NOFILE`) to its hard
/// limit, as nginx and HAProxy do: every client and upstream connection is a
/// descriptor, and the usual soft limit of 1024 would cap a gateway at a few hundred
/// connections. Returns the limit now in force.
pub(crate) fn raise_descriptor_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass a pointer to.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass a pointer to.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

/// Checks that `addr` can be bound by a socket that does not share it: it fails when
/// any other socket holds the address, also one using `SO_REUSEPORT` (another
/// ringress). The probe binds without listening, so no client can connect to it, and is
/// closed at once.
pub(crate) fn probe_exclusive_bind(addr: SocketAddr) -> io::Result<()> {
    bound_socket(addr, false).map(drop)
}

/// A new TCP socket bound to `addr` (`SO_REUSEADDR` always, `SO_REUSEPORT` if asked),
/// not yet listening.
fn bound_socket(addr: SocketAddr, reuseport: bool) -> io::Result<OwnedFd> {
    let fd = new_socket(&addr)?;
    set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if reuseport {
        set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    let (storage, len) = socket_addr_to_raw(&addr);
    // SAFETY: `storage` is a valid sockaddr of `len` bytes on our stack; `fd` is ours.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const storage).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

impl Listener {
    /// Creates, binds and listens (`SO_REUSEADDR` always, `SO_REUSEPORT` if asked).
    /// `TCP_NODELAY` is set on the listening socket, and Linux copies it to every socket
    /// accepted from it: a proxy writes whole responses and never wants Nagle's delay,
    /// and a new connection then needs no `setsockopt` of its own.
    pub(crate) fn bind(addr: SocketAddr, opts: ListenOptions) -> io::Result<Listener> {
        let fd = bound_socket(addr, opts.reuseport)?;
        Listener::listen(fd, &opts)
    }

    /// Serves a listening socket another process handed over (a binary upgrade):
    /// checks that it is a listening TCP socket bound to `addr`, then sets this
    /// process's options on it as [`Listener::bind`] does. Connections already in
    /// its accept queue are served here; none is lost.
    pub(crate) fn adopt(
        fd: OwnedFd,
        addr: SocketAddr,
        opts: ListenOptions,
    ) -> io::Result<Listener> {
        if get_int_opt(&fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the inherited socket is not listening",
            ));
        }
        let bound = sock_name(&fd, libc::getsockname)?;
        if bound != addr {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the inherited socket is bound to {bound}, not {addr}"),
            ));
        }
        Listener::listen(fd, &opts)
    }

    /// Sets the options of every listener on a bound socket and listens (again, for
    /// an adopted one: `listen(2)` on a listening socket only updates its backlog).
    fn listen(fd: OwnedFd, opts: &ListenOptions) -> io::Result<Listener> {
        set_int_opt(&fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
        // Accepted sockets inherit it too.
        if let Some(limit) = opts.user_timeout {
            let millis = libc::c_int::try_from(limit.as_millis()).unwrap_or(libc::c_int::MAX);
            set_int_opt(&fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, millis)?;
        }
        let backlog = libc::c_int::try_from(opts.backlog).unwrap_or(libc::c_int::MAX);
        // SAFETY: plain syscall on our own fd.
        if unsafe { libc::listen(fd.as_raw_fd(), backlog) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Listener {
            fd: Rc::new(fd),
            accept: RefCell::new(None),
        })
    }

    /// The bound address (with the port the kernel chose for port 0).
    #[cfg(test)]
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        sock_name(&self.fd, libc::getsockname)
    }

    /// Accepts the next connection. Underneath, one multishot accept stays armed; the
    /// connections it accepted queue up in the ring driver until taken here, and it is
    /// re-armed when the kernel ends it (a completion without `IORING_CQE_F_MORE`).
    ///
    /// An error (e.g. EMFILE) ends the multishot accept; the next call re-arms it. A
    /// connection the client reset before it was taken here is skipped.
    pub(crate) async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        loop {
            let cqe = poll_fn(|cx| self.poll_accepted(cx)).await;
            let raw = cqe.result()?;
            let raw = RawFd::try_from(raw).map_err(io::Error::other)?;
            // SAFETY: the kernel created this fd for this accept completion; we are its
            // only owner from here on.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            match sock_name(&fd, libc::getpeername) {
                Ok(peer) => return Ok((TcpStream::from_fd(Rc::new(fd)), peer)),
                // The client already reset the connection: nothing to serve, take the next.
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Stops accepting without dropping a connection: cancels the multishot accept
    /// and returns the connections the kernel accepted for it before the cancel took
    /// effect (dropping the listener instead would close them: their clients would
    /// see a reset). Connections still in the socket's queue stay there, for another
    /// process holding the same socket (a binary upgrade) or, when the last holder
    /// closes it, to be reset by the kernel.
    pub(crate) async fn stop_accepting(&self) -> Vec<(TcpStream, SocketAddr)> {
        let mut accepted = Vec::new();
        let Some(mut op) = self.accept.borrow_mut().take() else {
            return accepted;
        };
        op.cancel();
        while !op.is_finished() {
            let cqe = poll_fn(|cx| op.poll_next(cx)).await;
            // The last completion is the cancel's (ECANCELED) or an error; skip those.
            if let Ok(raw) = cqe.result()
                && let Ok(raw) = RawFd::try_from(raw)
            {
                // SAFETY: the kernel created this fd for this accept completion; we are
                // its only owner from here on.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                if let Ok(peer) = sock_name(&fd, libc::getpeername) {
                    accepted.push((TcpStream::from_fd(Rc::new(fd)), peer));
                }
            }
        }
        accepted
    }

    /// The next completion of the multishot accept, arming it first if needed.
    fn poll_accepted(&self, cx: &mut std::task::Context<'_>) -> Poll<Cqe> {
        let mut armed = self.accept.borrow_mut();
        let op = match armed.as_mut() {
            Some(op) if !op.is_finished() => op,
            _ => {
                let entry = opcode::AcceptMulti::new(types::Fd(self.fd.as_raw_fd()))
                    .flags(libc::SOCK_CLOEXEC)
                    .build();
                // SAFETY: multishot accept carries no pointer (no address buffer); the op
                // holds an Rc of the listening fd so it stays open while armed.
                let op = unsafe {
                    MultiOp::submit(
                        current(),
                        OpKind::Accept,
                        Box::new(Rc::clone(&self.fd)),
                        entry,
                    )
                };
                armed.insert(op)
            }
        };
        op.poll_next(cx)
    }

    /// Attaches a classic BPF program to this listener's `SO_REUSEPORT` group that picks
    /// the socket whose index in the group equals the id of the CPU that received the
    /// connection (`A = cpu id; return A`).
    ///
    /// Use it so a connection is handled by the shard on the CPU whose NIC queue received
    /// it: shard `i` must be pinned to CPU `i` and must bind its listener `i`-th (the
    /// group's index is the bind order), and the NIC's RSS queues and IRQ affinity should
    /// map flows onto those CPUs. When the CPU id is not a valid index (more CPUs than
    /// listeners) the kernel falls back to its hash distribution. The program belongs to
    /// the group, so calling this on any one listener of the group is enough.
    pub(crate) fn steer_by_cpu(&self) -> io::Result<()> {
        // SKF_AD_OFF + SKF_AD_CPU as the unsigned offset the BPF ABI expects.
        let cpu_offset = (libc::SKF_AD_OFF + libc::SKF_AD_CPU).cast_unsigned();
        let mut program = [
            libc::sock_filter {
                code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
                jt: 0,
                jf: 0,
                k: cpu_offset,
            },
            libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_A) as u16,
                jt: 0,
                jf: 0,
                k: 0,
            },
        ];
        let fprog = libc::sock_fprog {
            len: program.len() as libc::c_ushort,
            filter: program.as_mut_ptr(),
        };
        // SAFETY: `fprog` and the program it points to live on our stack for the call; the
        // kernel copies the program.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_REUSEPORT_CBPF,
                (&raw const fprog).cast(),
                mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A TCP connection (client or upstream). Dropping it closes the fd once no in-flight
/// operation uses it any more (each operation holds an `Rc` of the fd).
#[derive(Debug)]
pub(crate) struct TcpStream {
    fd: Rc<OwnedFd>,
    /// The receive in progress, kept across `recv` calls.
    recv: RefCell<Receiving>,
    /// Longest a `send_all` may wait for any progress ([`TcpStream::set_send_timeout`]).
    send_timeout: Cell<Option<Duration>>,
}

/// What a stream's receive side is doing between `recv` calls.
#[derive(Debug, Default)]
enum Receiving {
    /// Nothing armed.
    #[default]
    Idle,
    /// A multishot receive into the buffer ring.
    Multi(MultiOp),
    /// A receive into an owned vector because the buffer ring was empty.
    Owned(Op<(Vec<u8>, Rc<OwnedFd>)>),
}

impl TcpStream {
    fn from_fd(fd: Rc<OwnedFd>) -> TcpStream {
        TcpStream {
            fd,
            recv: RefCell::new(Receiving::Idle),
            send_timeout: Cell::new(None),
        }
    }

    /// Bounds every later `send_all`: when one `send(2)` has
    /// moved no byte for `limit` (a peer that stopped reading, its window closed), the
    /// send fails with [`io::ErrorKind::TimedOut`]. A slow peer that keeps reading is
    /// never cut off.
    pub(crate) fn set_send_timeout(&self, limit: Duration) {
        self.send_timeout.set(Some(limit));
    }

    /// One send of `buf[offset..]` under the send timeout. On expiry the operation is
    /// cancelled (the driver keeps the buffer until the kernel lets go of it) and an
    /// empty buffer comes back in its place.
    async fn send_within<B: IoBuf + Default>(
        &self,
        buf: B,
        offset: usize,
    ) -> (io::Result<usize>, B) {
        let Some(limit) = self.send_timeout.get() else {
            return self.send_from(buf, offset).await;
        };
        match super::timeout(limit, self.send_from(buf, offset)).await {
            Ok(sent) => sent,
            Err(_) => {
                let message = format!("the peer read nothing for {limit:?}");
                (
                    Err(io::Error::new(io::ErrorKind::TimedOut, message)),
                    B::default(),
                )
            }
        }
    }

    /// Connects to `addr` through the ring.
    pub(crate) async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let rt = current();
        let fd = Rc::new(new_socket(&addr)?);
        let (storage, len) = socket_addr_to_raw(&addr);
        let storage = Box::new(storage);
        let entry = opcode::Connect::new(
            types::Fd(fd.as_raw_fd()),
            (&raw const *storage).cast::<libc::sockaddr>(),
            len,
        )
        .build();
        // SAFETY: the entry points to the boxed address, owned by the op with an Rc of the
        // socket until the connect completes.
        let op = unsafe { Op::submit(rt, OpKind::Plain, (storage, Rc::clone(&fd)), entry) };
        let (cqe, _) = op.await;
        cqe.result()?;
        Ok(TcpStream::from_fd(fd))
    }

    /// Receives the next bytes into a buffer from the shard's buffer ring. An empty
    /// buffer means the peer closed its sending side. When the ring has no free buffer
    /// (ENOBUFS) it receives into a fresh `Vec` instead; callers never see that error.
    ///
    /// Underneath, a multishot receive (`IORING_RECV_MULTISHOT`) stays armed on the
    /// stream and its chunks queue up in order until taken here; after
    /// `MAX_QUEUED_RECV` unread chunks the runtime stops it (so a slow reader leaves the
    /// rest in the socket, where TCP flow control applies) and the next call re-arms it.
    ///
    /// The receive in progress belongs to the stream, not to this future: dropping the
    /// future (e.g. on a timeout) loses no bytes, the next `recv` returns them. One task
    /// should receive on a stream at a time.
    pub(crate) async fn recv(&self) -> io::Result<RecvBuf> {
        self.recv_ready().await
    }

    /// What [`TcpStream::recv`] would return at once, without waiting: bytes (or the
    /// end, or an error) the kernel already delivered, or `None` when nothing is there
    /// yet. Used to put chunks that arrived together into one send.
    pub(crate) fn try_recv(&self) -> Option<io::Result<RecvBuf>> {
        let recv = std::pin::pin!(self.recv_ready());
        match recv.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(result) => Some(result),
            Poll::Pending => None,
        }
    }

    async fn recv_ready(&self) -> io::Result<RecvBuf> {
        let rt = current();
        let bufs = Rc::clone(&rt.driver.borrow().bufs);
        poll_fn(|cx| {
            loop {
                let mut receiving = self.recv.borrow_mut();
                match &mut *receiving {
                    Receiving::Owned(op) => {
                        let Poll::Ready((cqe, (mut buf, _))) = Pin::new(op).poll(cx) else {
                            return Poll::Pending;
                        };
                        *receiving = Receiving::Idle;
                        return Poll::Ready(cqe.result().map(|n| {
                            buf.truncate(n as usize);
                            RecvBuf::from_vec(buf)
                        }));
                    }
                    Receiving::Multi(op) if !op.is_finished() => {
                        let Poll::Ready(cqe) = op.poll_next(cx) else {
                            return Poll::Pending;
                        };
                        let selected = io_uring::cqueue::buffer_select(cqe.flags);
                        match (cqe.res, selected) {
                            (n, Some(bid)) if n >= 0 => {
                                let len = n.unsigned_abs() as usize;
                                return Poll::Ready(Ok(RecvBuf::from_ring(bufs.clone(), bid, len)));
                            }
                            (n, None) if n >= 0 => {
                                return Poll::Ready(Ok(RecvBuf::from_vec(Vec::new())));
                            }
                            (n, selected) => {
                                if let Some(bid) = selected {
                                    bufs.recycle(bid);
                                }
                                match -n {
                                    libc::ENOBUFS => {
                                        *receiving = Receiving::Owned(
                                            self.submit_recv_owned(&rt, bufs.buf_size()),
                                        );
                                    }
                                    // Stopped by the runtime's backpressure: re-arm.
                                    libc::ECANCELED => {}
                                    errno => {
                                        return Poll::Ready(Err(io::Error::from_raw_os_error(
                                            errno,
                                        )));
                                    }
                                }
                            }
                        }
                    }
                    Receiving::Multi(_) | Receiving::Idle => {
                        *receiving = Receiving::Multi(self.submit_recv_multi(&rt));
                    }
                }
            }
        })
        .await
    }

    /// Arms a multishot receive into the shard's buffer ring.
    fn submit_recv_multi(&self, rt: &Rc<Shared>) -> MultiOp {
        let entry = opcode::RecvMulti::new(types::Fd(self.fd.as_raw_fd()), BUF_GROUP).build();
        // SAFETY: no pointer: the kernel picks buffers from the registered ring, which the
        // driver keeps alive; the op holds an Rc of the socket so it stays open while the
        // receive is armed.
        unsafe {
            MultiOp::submit(
                Rc::clone(rt),
                OpKind::RecvMulti,
                Box::new(Rc::clone(&self.fd)),
                entry,
            )
        }
    }

    /// Submits a receive into an owned vector of `size` bytes (the buffer ring was empty).
    fn submit_recv_owned(&self, rt: &Rc<Shared>, size: usize) -> Op<(Vec<u8>, Rc<OwnedFd>)> {
        let mut buf = vec![0u8; size];
        let entry = opcode::Recv::new(
            types::Fd(self.fd.as_raw_fd()),
            buf.as_mut_ptr(),
            u32::try_from(size).unwrap_or(u32::MAX),
        )
        .build();
        // SAFETY: the entry points into the vector's heap block, owned by the op (moving
        // the Vec does not move its block) with an Rc of the socket until completion.
        unsafe {
            Op::submit(
                Rc::clone(rt),
                OpKind::Plain,
                (buf, Rc::clone(&self.fd)),
                entry,
            )
        }
    }

    /// Sends all of `buf`, within the send timeout if one is set (then the buffer may
    /// come back empty, see [`TcpStream::set_send_timeout`]).
    pub(crate) async fn send_all<B: IoBuf + Default>(&self, buf: B) -> (io::Result<()>, B) {
        let mut buf = buf;
        let mut sent = 0;
        loop {
            let total = buf.as_slice().len();
            if sent >= total {
                return (Ok(()), buf);
            }
            let (res, back) = self.send_within(buf, sent).await;
            buf = back;
            match res {
                Ok(0) => {
                    return (
                        Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "the connection accepted no more bytes",
                        )),
                        buf,
                    );
                }
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
        }
    }

    /// One send of `buf.as_slice()[offset..]`.
    async fn send_from<B: IoBuf>(&self, buf: B, offset: usize) -> (io::Result<usize>, B) {
        let (ptr, len) = match buf.as_slice().get(offset..) {
            Some(rest) if !rest.is_empty() => {
                (rest.as_ptr(), u32::try_from(rest.len()).unwrap_or(u32::MAX))
            }
            _ => return (Ok(0), buf),
        };
        let rt = current();
        let entry = opcode::Send::new(types::Fd(self.fd.as_raw_fd()), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        // SAFETY: the entry points into the bytes of the IoBuf, which do not move with
        // the value (the IoBuf contract); the op owns the value, with an Rc of the
        // socket, until the send completes.
        let op = unsafe { Op::submit(rt, OpKind::Plain, (buf, Rc::clone(&self.fd)), entry) };
        let (cqe, (buf, _)) = op.await;
        (cqe.result().map(|n| n as usize), buf)
    }

    /// Shuts down the sending side (the peer reads end of stream, after every byte
    /// sent before). A direct `shutdown(2)`, not a ring operation: on a TCP socket it
    /// only queues the FIN and never blocks, while io_uring always hands
    /// `IORING_OP_SHUTDOWN` to a worker thread (a wake-up and two context switches per
    /// closed connection).
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        // SAFETY: no pointer; `fd` is open while `self` holds it.
        if unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Makes the coming close reset the connection (`SO_LINGER` with a zero timeout):
    /// the peer sees `ECONNRESET`, never the orderly end of the stream, and bytes not
    /// yet sent are dropped. For a response that was cut short.
    pub(crate) fn reset_on_close(&self) -> io::Result<()> {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: passes a pointer to a local `linger` of the stated size; `fd` is open.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sets `TCP_NODELAY`.
    pub(crate) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        set_int_opt(
            &self.fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            i32::from(on),
        )
    }

    /// Whether `TCP_NODELAY` is set.
    #[cfg(test)]
    pub(crate) fn nodelay(&self) -> io::Result<bool> {
        get_int_opt(&self.fd, libc::IPPROTO_TCP, libc::TCP_NODELAY).map(|v| v != 0)
    }

    /// `TCP_USER_TIMEOUT`, in milliseconds (0: the kernel's default).
    #[cfg(test)]
    pub(crate) fn user_timeout_ms(&self) -> io::Result<u32> {
        get_int_opt(&self.fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT)
            .map(|v| u32::try_from(v).unwrap_or(0))
    }

    /// The peer's address.
    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        sock_name(&self.fd, libc::getpeername)
    }

    /// The local address.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        sock_name(&self.fd, libc::getsockname)
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A blocking-mode TCP socket for `addr`'s family (io_uring waits for readiness itself).
fn new_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_int_opt(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a local int of the stated size; `fd` is open.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_int_opt(fd: &OwnedFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: passes a pointer to a local int and its size; `fd` is open.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

type SockNameFn =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

/// `getsockname` / `getpeername` as a `SocketAddr`.
fn sock_name(fd: &OwnedFd, f: SockNameFn) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into our local storage; `fd` is open.
    let rc = unsafe { f(fd.as_raw_fd(), (&raw mut storage).cast(), &raw mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    raw_to_socket_addr(&storage)
}

fn socket_addr_to_raw(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn raw_to_socket_addr(storage: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; storage is
            // larger than and aligned for it.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        family => Err(io::Error::other(format!(
            "socket address family {family} is neither IPv4 nor IPv6"
        ))),
    }
}

/// A pipe for the splice measurement (`tests.rs`): its read and write ends.
#[cfg(test)]
pub(crate) fn pipe() -> io::Result<(Rc<OwnedFd>, Rc<OwnedFd>)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `pipe2` writes two descriptors into the local array of two; each is
    // owned by exactly one `OwnedFd` below.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((Rc::new(r), Rc::new(w)))
}

/// `IORING_OP_SPLICE` of up to `len` bytes from `from` to `to` (one of them a pipe),
/// for the splice measurement (`tests.rs`): the bytes moved; 0 at the end of `from`.
#[cfg(test)]
pub(crate) async fn splice(from: &Rc<OwnedFd>, to: &Rc<OwnedFd>, len: u32) -> io::Result<usize> {
    let rt = current();
    let entry = opcode::Splice::new(
        types::Fd(from.as_raw_fd()),
        -1,
        types::Fd(to.as_raw_fd()),
        -1,
        len,
    )
    .build();
    // SAFETY: no pointer; the op holds an Rc of both descriptors until it completes,
    // so neither is closed (or reused) while the kernel moves bytes between them.
    let op = unsafe { Op::submit(rt, OpKind::Plain, (Rc::clone(from), Rc::clone(to)), entry) };
    let (cqe, _) = op.await;
    cqe.result().map(|n| n as usize)
}

#[cfg(test)]
impl TcpStream {
    /// The socket, for [`splice`].
    pub(crate) fn fd(&self) -> &Rc<OwnedFd> {
        &self.fd
    }
}
