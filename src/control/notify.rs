//! systemd readiness (`sd_notify`): with `Type=notify`, systemd starts ordering
//! dependants and counts the service as started only once ringress says `READY=1`
//! (after every listener is bound); `STOPPING=1` when a drain begins; and after a
//! binary upgrade the new process names itself the service's main process
//! (`MAINPID=`, which needs `NotifyAccess=all`). Without `$NOTIFY_SOCKET` (not run by
//! systemd) nothing is sent.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (newline-separated `KEY=VALUE` lines) to systemd, if it listens.
pub(crate) fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| {
        let path = path.as_bytes();
        let addr = match path.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(OsStr::from_bytes(path))?,
        };
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &addr)
    })();
    match sent {
        Ok(_) => tracing::debug!(state, "told systemd"),
        Err(e) => tracing::warn!(state, "cannot notify systemd on $NOTIFY_SOCKET: {e}"),
    }
}
