//! Zero-downtime binary upgrade: a new ringress process takes the listening sockets
//! of the running one over a Unix socket (`--upgrade-socket PATH`, file descriptors
//! passed with `SCM_RIGHTS`), starts serving on them, and only then does the old one
//! stop accepting and drain. The sockets themselves never close, so their accept
//! queues carry over: no client is refused or reset in between.
//!
//! ```text
//!  old process                                   new process (same flags)
//!  offer(PATH): listens on PATH                  config loads, snapshot builds
//!                                     ◀──────    "ringress-upgrade 1 <pid>"
//!  every listener (shards', admin, health) ──▶   take_over: the fds, by address
//!  "fds <n>" + SCM_RIGHTS …, "end <n> <pid>"     shards adopt them (Listener::adopt),
//!                                                bind PATH itself, READY=1 / MAINPID
//!                                     ◀──────    "serving <pid>"
//!  "draining" ──▶, then stops: accept loops
//!  cancel (connections already accepted are
//!  served), open ones finish (--drain-timeout)
//! ```
//!
//! A new process whose configuration does not load never connects: the old one goes
//! on serving. One that connects and then fails (or stays silent past
//! [`SERVING_TIMEOUT`]) leaves the old one serving too; it only steps down on
//! `serving`. Only a process of the same user may connect (checked with
//! `SO_PEERCRED`; the socket file is also mode 0600).
//!
//! `SIGUSR2` runs the upgrade from inside: the running process starts its own binary
//! again (the path it was started from, so a binary replaced on disk is the new one)
//! with the same arguments; see [`spawn_successor`].

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use crossbeam_channel::Sender;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::ControlEvent;

/// The first line a new process sends, and the protocol version.
const HELLO: &str = "ringress-upgrade 1";
/// Descriptors per message (the kernel takes at most 253 in one `SCM_RIGHTS`).
const FDS_PER_MESSAGE: usize = 64;
/// Longest line either side reads.
const MAX_LINE: usize = 256;
/// How long either side waits for each step of the exchange of descriptors.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the old process waits, after handing its sockets over, for the new one
/// to say it serves; past it, the upgrade is abandoned and the old one serves on.
pub(crate) const SERVING_TIMEOUT: Duration = Duration::from_secs(120);

/// Who in this process holds a listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    Shard(usize),
    Admin,
    Health,
}

/// The listening sockets of this process a new one can take over: each holder adds a
/// duplicate of its socket when it binds or adopts it and removes it when it closes
/// it, so a socket a reload closed is never handed over. Only binds, closes and an
/// upgrade take the lock.
#[derive(Default)]
pub(crate) struct OpenListeners {
    sockets: Mutex<Vec<(Holder, SocketAddr, OwnedFd)>>,
}

impl OpenListeners {
    /// Records a socket `holder` listens on at `addr`.
    pub(crate) fn add(&self, holder: Holder, addr: SocketAddr, fd: BorrowedFd<'_>) {
        match fd.try_clone_to_owned() {
            Ok(fd) => self.lock().push((holder, addr, fd)),
            Err(e) => tracing::warn!(
                %addr,
                "cannot keep a copy of the listening socket for binary upgrades: {e}"
            ),
        }
    }

    /// Forgets every socket (a stop: they close with their holders').
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// Forgets `holder`'s sockets at `addr`.
    pub(crate) fn remove(&self, holder: Holder, addr: SocketAddr) {
        self.lock()
            .retain(|(h, a, _)| !(*h == holder && *a == addr));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Holder, SocketAddr, OwnedFd)>> {
        // A panic while holding it left the list whole (pushes and retains only).
        self.sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Listening sockets taken over from the process that ran before.
pub(crate) struct Inherited {
    /// Each socket with the address it is bound to, in the old process's order (by
    /// shard, so reuseport group positions carry over).
    sockets: Vec<(SocketAddr, OwnedFd)>,
    /// The old process, told when this one serves.
    peer: UnixStream,
    pub(crate) from_pid: u32,
}

impl Inherited {
    /// Takes every inherited socket bound to `addr`.
    pub(crate) fn take(&mut self, addr: SocketAddr) -> Vec<OwnedFd> {
        let (taken, kept) = std::mem::take(&mut self.sockets)
            .into_iter()
            .partition(|(a, _)| *a == addr);
        self.sockets = kept;
        taken.into_iter().map(|(_, fd)| fd).collect()
    }

    /// How many sockets are left untaken.
    pub(crate) fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Tells the old process this one serves, so it drains; closes the sockets
    /// nothing took (addresses the new configuration does not serve).
    pub(crate) fn serving(mut self) -> anyhow::Result<()> {
        for (addr, _) in &self.sockets {
            tracing::info!(%addr, "upgrade: not serving an inherited listener the configuration no longer has; it closes when the old process exits");
        }
        self.sockets.clear();
        writeln!(self.peer, "serving {}", std::process::id())
            .context("cannot tell the old process that this one serves")?;
        let mut reader = BufReader::new(&self.peer);
        match read_line(&mut reader)?.as_deref() {
            Some("draining") => Ok(()),
            other => anyhow::bail!(
                "the old process (pid {}) answered {other:?} instead of draining",
                self.from_pid
            ),
        }
    }
}

/// Takes the listening sockets of the ringress offering them on `path`. `None` when
/// nobody does (no socket file, or a stale one): a fresh start.
pub(crate) fn take_over(path: &Path) -> anyhow::Result<Option<Inherited>> {
    let peer = match UnixStream::connect(path) {
        Ok(peer) => peer,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot connect to the upgrade socket {}", path.display())
            });
        }
    };
    let context = || format!("upgrade over {}", path.display());
    receive_sockets(peer).with_context(context).map(Some)
}

fn receive_sockets(mut peer: UnixStream) -> anyhow::Result<Inherited> {
    peer.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
    peer.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
    writeln!(peer, "{HELLO} {}", std::process::id())?;
    let mut fds = Vec::new();
    let mut text = Vec::new();
    let from_pid = loop {
        let mut buf = [0u8; MAX_LINE];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = rustix::net::recvmsg(
            &peer,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)
        .context("cannot receive the listening sockets")?;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(passed) = message {
                fds.extend(passed);
            }
        }
        if received.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
            anyhow::bail!(
                "some listening sockets were lost on the way (too many open files? raise `ulimit -n`)"
            );
        }
        if received.bytes == 0 {
            anyhow::bail!("the old process closed the upgrade socket before sending its listeners");
        }
        text.extend_from_slice(&buf[..received.bytes]);
        if text.len() > 64 * MAX_LINE {
            anyhow::bail!("the old process sent too much text");
        }
        if let Some(end) = parse_end(&text)? {
            let (count, pid) = end;
            if count != fds.len() {
                anyhow::bail!(
                    "the old process announced {count} listening sockets and sent {}",
                    fds.len()
                );
            }
            break pid;
        }
    };
    let sockets = fds
        .into_iter()
        .map(|fd| {
            let addr = rustix::net::getsockname(&fd)
                .ok()
                .and_then(|addr| SocketAddr::try_from(addr).ok())
                .context("an inherited socket is not a TCP socket")?;
            Ok((addr, fd))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Inherited {
        sockets,
        peer,
        from_pid,
    })
}

/// The `end <count> <pid>` line once it has arrived; the lines before it must be
/// `fds <n>` lines.
fn parse_end(text: &[u8]) -> anyhow::Result<Option<(usize, u32)>> {
    let text = std::str::from_utf8(text).context("the old process sent text that is not UTF-8")?;
    for line in text.split_inclusive('\n') {
        let Some(line) = line.strip_suffix('\n') else {
            return Ok(None);
        };
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["fds", n] if n.parse::<usize>().is_ok() => {}
            ["end", count, pid] => {
                let count = count.parse().context("a bad socket count")?;
                let pid = pid.parse().context("a bad process id")?;
                return Ok(Some((count, pid)));
            }
            _ => anyhow::bail!("the old process sent {line:?}, not a ringress upgrade line"),
        }
    }
    Ok(None)
}

/// Reads one line of at most [`MAX_LINE`] bytes; `None` at end of stream.
fn read_line(reader: &mut impl BufRead) -> anyhow::Result<Option<String>> {
    let mut line = Vec::new();
    let read = reader
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .context("cannot read from the upgrade socket")?;
    if read == 0 {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        anyhow::bail!("a line on the upgrade socket is too long or cut short");
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

/// Offers this process's listening sockets on `path` to the next ringress. Set once
/// an upgrade completed: the process then drains without announcing a stop to
/// systemd (the new process is the service now) and leaves `path` (now the new
/// process's) in place.
pub(crate) struct Offer {
    path: PathBuf,
    /// The socket file this process bound (device, inode), to remove only its own.
    file: (u64, u64),
    pub(crate) handed_over: Arc<std::sync::atomic::AtomicBool>,
}

impl Offer {
    /// Whether a new process took the sockets over.
    pub(crate) fn handed_over(&self) -> bool {
        self.handed_over.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for Offer {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Listens on `path` (replacing a stale socket file or the old process's, whose
/// sockets this process already took) and hands `listeners` to each new ringress
/// that connects; one that then says it serves ends this process with a drain.
pub(crate) fn offer(
    path: &Path,
    listeners: Arc<OpenListeners>,
    events: Sender<ControlEvent>,
) -> anyhow::Result<Offer> {
    let context = || format!("cannot listen on the upgrade socket {}", path.display());
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).with_context(context)?;
        }
        Ok(_) => anyhow::bail!(
            "{} exists and is not a socket; --upgrade-socket needs a path of its own",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(context),
    }
    let listener = UnixListener::bind(path).with_context(context)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).with_context(context)?;
    let meta = std::fs::symlink_metadata(path).with_context(context)?;
    let handed_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = handed_over.clone();
    std::thread::Builder::new()
        .name("ringress-upgrade".into())
        .spawn(move || {
            for peer in listener.incoming() {
                let peer = match peer {
                    Ok(peer) => peer,
                    Err(e) => {
                        tracing::warn!("upgrade socket: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                match hand_over(peer, &listeners) {
                    Ok(pid) => {
                        done.store(true, std::sync::atomic::Ordering::Release);
                        let _ = events.send(ControlEvent::Stop {
                            cause: format!("binary upgrade: process {pid} took the listeners over"),
                        });
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("upgrade abandoned, still serving: {}", format!("{e:#}"))
                    }
                }
            }
        })
        .context("cannot start the upgrade socket thread")?;
    tracing::info!(path = %path.display(), "offering the listeners to a binary upgrade");
    Ok(Offer {
        path: path.to_owned(),
        file: (meta.dev(), meta.ino()),
        handed_over,
    })
}

/// One new process: checks who it is, sends every listening socket, and waits for it
/// to serve. The new process's pid once it does.
fn hand_over(peer: UnixStream, listeners: &OpenListeners) -> anyhow::Result<u32> {
    let ours = rustix::process::geteuid();
    let theirs = rustix::net::sockopt::socket_peercred(&peer)
        .map_err(io::Error::from)
        .context("cannot read the upgrading process's credentials")?;
    if theirs.uid != ours && !theirs.uid.is_root() {
        anyhow::bail!(
            "process {} of user {} may not take the listeners of user {}",
            theirs.pid.as_raw_nonzero(),
            theirs.uid.as_raw(),
            ours.as_raw()
        );
    }
    peer.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
    peer.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
    let mut reader = BufReader::new(&peer);
    let hello = read_line(&mut reader)?.unwrap_or_default();
    let Some(pid) = hello
        .strip_prefix(HELLO)
        .and_then(|rest| rest.trim().parse::<u32>().ok())
    else {
        anyhow::bail!("a client of the upgrade socket sent {hello:?}, not {HELLO:?}");
    };
    let count = {
        let sockets = listeners.lock();
        let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|(_, _, fd)| fd.as_fd()).collect();
        for batch in fds.chunks(FDS_PER_MESSAGE) {
            send_fds(&peer, format!("fds {}\n", batch.len()).as_bytes(), batch)?;
        }
        fds.len()
    };
    (&peer)
        .write_all(format!("end {count} {}\n", std::process::id()).as_bytes())
        .context("cannot send the listening sockets")?;
    tracing::info!(
        pid,
        sockets = count,
        "upgrade: handed the listening sockets to a new process"
    );
    peer.set_read_timeout(Some(SERVING_TIMEOUT))?;
    match read_line(&mut reader)? {
        Some(line) if line == format!("serving {pid}") => {
            (&peer).write_all(b"draining\n")?;
            Ok(pid)
        }
        Some(line) => anyhow::bail!("process {pid} sent {line:?} instead of `serving`"),
        None => anyhow::bail!("process {pid} went away before it served"),
    }
}

/// One message carrying `fds` and `text`.
fn send_fds(peer: &UnixStream, text: &[u8], fds: &[BorrowedFd<'_>]) -> anyhow::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        anyhow::bail!("too many sockets for one message");
    }
    let sent = rustix::net::sendmsg(
        peer,
        &[IoSlice::new(text)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .map_err(io::Error::from)
    .context("cannot send the listening sockets")?;
    if sent != text.len() {
        // A stream socket sends a message this small whole, or fails.
        anyhow::bail!("the upgrade socket took {sent} of {} bytes", text.len());
    }
    Ok(())
}

/// The binary and arguments this process was started with, for `SIGUSR2`. Read at
/// start: once the file is replaced, `/proc/self/exe` names the deleted old one.
static COMMAND_LINE: OnceLock<Option<(PathBuf, Vec<OsString>)>> = OnceLock::new();

/// Remembers how this process was started (call early in `run`).
pub(crate) fn remember_command_line() {
    COMMAND_LINE.get_or_init(|| {
        let exe = std::env::current_exe().ok()?;
        Some((exe, std::env::args_os().skip(1).collect()))
    });
}

/// `SIGUSR2`: starts this process's binary again, with the same arguments; the new
/// process takes the listeners over (`--upgrade-socket`) and this one then drains.
/// A new process that exits before that is reported here; this one serves on.
pub(crate) fn spawn_successor() -> anyhow::Result<u32> {
    let Some(Some((exe, args))) = COMMAND_LINE.get() else {
        anyhow::bail!("the path of ringress's own binary is unknown");
    };
    let mut child = std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let pid = child.id();
    std::thread::Builder::new()
        .name("ringress-successor".into())
        .spawn(move || {
            // Only heard while this process still runs, i.e. when the upgrade failed.
            if let Ok(status) = child.wait() {
                tracing::error!(pid, %status, "upgrade: the new process exited; still serving");
            }
        })
        .context("cannot start the thread that waits for the new process")?;
    Ok(pid)
}

#[cfg(test)]
mod tests;
