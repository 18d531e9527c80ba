//! ringress: an Istio-compatible TLS ingress gateway on per-core io_uring shards.
//!
//! ringress reads the Istio manifests an operator already has (Gateway, VirtualService,
//! ServiceEntry, DestinationRule), terminates TLS with rustls (certificate chosen by SNI),
//! serves HTTP/1.1 and HTTP/2 to clients and proxies HTTP/1.1 to keep-alive upstream
//! pools. Every CPU core runs one shard
//! thread with its own io_uring ring, its own `SO_REUSEPORT` listeners and its own
//! upstream connections; the control thread does everything slow and hands shards an
//! immutable [`snapshot::Snapshot`].
//!
//! ```text
//!               control thread (main)                         shard thread × N (one per core, pinned)
//!  CLI ─ config::load ─ Snapshot::build ──Arc<Snapshot>──▶ mailbox ─▶ io_uring ring + local executor
//!                                                                │
//!  accept (multishot, SO_REUSEPORT) ─▶ TLS (rustls, SNI → server) ─▶ HTTP/1.1 head (httparse)
//!    ─▶ route (host, path, headers) ─▶ upstream pool (per shard, keep-alive) ─▶ stream body both ways
//! ```
//!
//! Modules, in the order a request meets them:
//! - [`config`]: raw YAML types with Istio's field names, validated into [`config::Config`].
//! - [`snapshot`]: what a shard reads: listeners, TLS configs, route tables, clusters.
//! - [`control`]: the control thread: start-up, shard supervision.
//! - [`shard`]: one pinned thread per core: listeners, accept loop, mailbox.
//! - [`uring`]: the io_uring runtime, the only module with `unsafe`.
//! - [`tls`]: certificate loading, SNI resolution, rustls server configs, tickets.
//! - [`proxy`]: one client connection's life; read this first (TLS passthrough and TCP
//!   connections are relayed whole by `proxy/passthrough.rs`).
//! - [`http`]: HTTP/1.1 head parsing, body framing, header rewriting, error responses.
//! - [`route`]: compiled route tables: (port, host, path, headers) → action, and (port,
//!   SNI) → clusters for `tls:`/`tcp:` routes.
//! - [`upstream`]: clusters, load balancing, per-shard keep-alive pools.
//! - [`access_log`]: the line each request leaves, written off the shards.
//! - [`demo`]: `ringress demo`: generated PKI and a built-in httpbin-like upstream.
//! - [`buffers`]: the shard's pool of byte buffers, shared by TLS and proxying.
//! - [`fast_hash`]: the unkeyed hash of per-request maps whose keys the network never
//!   chooses.
//!
//! The library exists for `main.rs`, `tests/`, `bench/` and `fuzz/`: what they use is
//! `pub`, everything else `pub(crate)`. Read the whole of it with
//! `cargo doc --document-private-items --open`.

// The docs are written for that private view, so they link to crate-private items.
#![allow(rustdoc::private_intra_doc_links)]

pub mod access_log;
pub(crate) mod auth;
/// `bench/auth.rs`'s way in to authentication and authorization, which are otherwise
/// crate-private.
#[doc(hidden)]
pub use auth::bench as auth_bench;
pub(crate) mod buffers;
pub mod config;
pub mod control;
pub mod demo;
pub(crate) mod fast_hash;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub(crate) mod pipe;
pub mod proxy;
pub mod route;
pub(crate) mod shard;
pub(crate) mod snapshot;
pub mod tls;
pub mod upstream;
#[allow(unsafe_code)]
pub(crate) mod uring;
