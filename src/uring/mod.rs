//! The io_uring runtime: one ring and one single-threaded executor per shard thread.
//! Everything a connection does between accept and the last byte of the response —
//! accept, receive, send, connect upstream, timers — is an operation on this ring.
//! This is the only module of ringress where `unsafe` is allowed.
//!
//! # Ownership model
//!
//! - **Operations own their buffers** (the "rent" model). An operation takes its buffer
//!   (and an `Rc` of its socket's fd) by value and gives it back with the result, e.g.
//!   [`TcpStream::send_all`] returns `(io::Result<()>, B)`. No borrow crosses a
//!   submission: every pointer the kernel receives points into a heap block owned by the
//!   operation (`op.rs`).
//! - **Dropped futures do not free kernel memory.** If an operation's future is dropped
//!   while the kernel still owns it (a [`timeout`] fired, a connection task ended), its
//!   buffers and fd move into the driver's slot for that operation, an async cancel is
//!   submitted, and they are dropped only when the kernel's last completion for it
//!   arrives (`ring.rs`). A socket is therefore closed only when no operation uses it.
//! - **Receive buffers belong to the shard.** [`TcpStream::recv`] lets the kernel pick a
//!   buffer from the shard's provided buffer ring; the [`RecvBuf`] owns it and returns
//!   it on drop (`buf_ring.rs`). If the ring is empty the receive transparently falls
//!   back to an owned allocation.
//! - **Teardown waits for the kernel.** Dropping a [`Runtime`] drops its tasks, cancels
//!   everything still in flight and waits for those completions before any buffer is
//!   freed (buffers are leaked, not freed, if the kernel never answers).
//! - **Wakers are `Send + Sync`** and hold no `Rc`: see `executor.rs` for how a wake from
//!   another thread reaches the shard.
//!
//! Files: `ring.rs` (setup, slab of in-flight operations, submission, completion),
//! `op.rs` (operation futures), `executor.rs` ([`Runtime`], [`spawn`],
//! [`spawn_critical`], [`next_turn`]), `net.rs` ([`Listener`], [`TcpStream`],
//! [`IoBuf`](net::IoBuf)), `buf_ring.rs` ([`RecvBuf`]), `time.rs` ([`sleep`], [`timeout`]),
//! `notify.rs` ([`notify_pair`]).

mod buf_ring;
mod executor;
mod net;
mod notify;
mod op;
mod ring;
mod time;

#[cfg(test)]
mod tests;

pub(crate) use buf_ring::RecvBuf;
pub(crate) use executor::{Runtime, next_turn, now, panic_message, spawn, spawn_critical};
pub(crate) use net::{
    FilledBuf, ListenOptions, Listener, TcpStream, probe_exclusive_bind, raise_descriptor_limit,
};
pub(crate) use notify::{NotifyHandle, notify_pair};
pub(crate) use ring::{RingOptions, check_available};
pub(crate) use time::{sleep, timeout};
