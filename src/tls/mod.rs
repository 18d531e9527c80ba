//! TLS: certificate loading, SNI resolution and rustls server configurations.
//!
//! Where TLS sits between accept and response:
//!
//! ```text
//!  control thread (load / SIGHUP)                       shard (per connection)
//!  load_credential ─▶ CertifiedMaterial                 accept ─▶ read_client_hello (its SNI)
//!     check_covers, describe (check, /certs, warnings)        │
//!  server_config(tls, material, ticketer) ─▶ ServerConfig      ▼
//!  SniSelector::new(servers of one port)  ── snapshot ──▶ SniSelector::select(sni)
//!                                                              │ Some((id, config)) / None → reject()
//!                                                              ▼
//!                                   UnbufferedServerConnection::new(config), fed the same bytes
//!                                                              │ TLS 1.3: the client's Finished,
//!                                                              ▼ the last record rustls sees
//!                                                       Records::new (keys only; rustls'
//!                                                       connection object dropped)
//! ```
//!
//! Everything slow (files, PEM, key checks, verifier construction) happens on the
//! control thread, once per load or reload; shards never read files. A shard keeps the
//! `SniSelector` of the snapshot a connection started with. Session ticketers are
//! made per client-trust setting and shared by every `ServerConfig` of that trust in
//! every snapshot, so a client resumes its session on any shard and across reloads,
//! never on a server with other client-certificate settings: random keys by rustls
//! ([`new_ticketer`]), or keys derived from the `--session-ticket-keys` file, which
//! every replica given the same file shares.
//!
//! Files: [`credential`] (PEM and `--secrets-dir` loading), [`server_config`](mod@server_config)
//! (versions, cipher suites, client-certificate verification), [`sni`] (server choice,
//! certificate coverage), [`client_hello`] (the SNI name read from a ClientHello before
//! any connection exists), [`session`] (one server connection's TLS state machine,
//! without I/O: the handshake on rustls, the hand-off, records in and out), [`records`]
//! (TLS 1.3 record protection of established connections), [`cert_info`]
//! (descriptions for `check` and `/certs`),
//! [`client_config`] (rustls client configurations for TLS to upstreams),
//! [`client_session`] (an upstream connection's TLS over its socket),
//! [`client_identity`] (the `x-forwarded-client-cert` value of a verified client),
//! [`failure`] (why a handshake failed, for counters and logs), [`tickets`] (the
//! ticketer of each client-trust setting, kept across reloads), [`ticket_keys`] (the
//! `--session-ticket-keys` file and the ticketer over its keys), [`error`].

pub(crate) mod cert_info;
pub(crate) mod client_config;
pub(crate) mod client_hello;
pub(crate) mod client_identity;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod client_sealer;
pub(crate) mod client_session;
pub(crate) mod credential;
pub(crate) mod error;
pub(crate) mod failure;
pub(crate) mod records;
pub mod server_config;
pub(crate) mod session;
pub(crate) mod sni;
pub(crate) mod ticket_keys;
pub(crate) mod tickets;

pub(crate) use cert_info::{CertInfo, describe};
pub(crate) use client_hello::{ClientHelloError, ClientHelloInfo, HelloScan, read_client_hello};
pub(crate) use client_identity::forwarded_client_cert;
pub use credential::{CertifiedMaterial, load_credential};
pub use error::TlsError;
pub(crate) use failure::HandshakeFailure;
pub(crate) use records::{RecordError, Records};
pub use server_config::{new_ticketer, reject_config, server_config};
pub(crate) use session::{MAX_RECORD_PLAINTEXT, ServerSession, Step, TlsFailure};
pub use sni::{SniSelector, check_covers};
pub use ticket_keys::{LineProblem, TicketKeyError, generate_key_line};
pub(crate) use tickets::Ticketers;

#[cfg(test)]
mod tests;
