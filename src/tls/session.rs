//! One TLS server connection, sans-IO: ciphertext goes in ([`ServerSession::received`]),
//! plaintext comes out ([`ServerSession::process_received`]), and the records to send
//! (handshake flights, alerts, encrypted responses) collect in a send buffer the
//! caller puts on the wire ([`ServerSession::start_send`]). It owns the buffers and
//! knows nothing of sockets; `proxy::downstream` drives it over the ring.
//!
//! rustls' unbuffered connection runs the handshake. A TLS 1.3 connection moves to
//! ringress's own record layer ([`Records`]) at the client's Finished: rustls is
//! shown the handshake one record at a time ([`rustls_window`]), so the next record
//! is already ringress's; rustls' connection object is dropped, the traffic keys stay.
//! Where that moment is missed, it moves the next time the connection waits for its
//! client with nothing pending ([`ServerSession::take_records`]). TLS 1.2
//! connections, and all under `--tls-record-layer rustls`, stay with rustls
//! throughout ([`Session`]).
//!
//! Every buffer is ringress's: received ciphertext waits in `incoming` until it forms
//! whole records, and records to send are encrypted into `out`. Both come from the
//! shard's pool ([`buffers`]) and go back to it between requests, so an idle
//! keep-alive connection holds no buffer at all, only its keys.

use std::io;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    UnbufferedStatus, WriteTraffic,
};

use super::{RecordError, Records};
use crate::buffers;
use crate::config::ServerTls;

/// Largest plaintext of one TLS record.
pub(crate) const MAX_RECORD_PLAINTEXT: usize = 16 * 1024;

/// Room first offered for a handshake record (a hello, the certificate flight, a
/// ticket). Larger ones say how much they need and are encoded again into that; the
/// guess keeps a new connection from zeroing 16 KiB of buffer it does not use.
const HANDSHAKE_RECORD_GUESS: usize = 2 * 1024;

/// Bytes a record adds to its plaintext at most: header, TLS 1.2 explicit nonce,
/// AEAD tag and TLS 1.3 content type. Only a first guess of the room to encrypt
/// into: rustls names the exact size when it needs more.
const MAX_RECORD_OVERHEAD: usize = 5 + 8 + 16 + 1;

/// `process_tls_records` steps taken without progress before a connection is given
/// up (each step normally moves at least one record or state; this only bounds a
/// misbehaving state machine).
const MAX_IDLE_STEPS: usize = 64;

/// A TLS server connection's state: the protection of its records, its buffers, and
/// what the handshake chose.
pub(crate) struct ServerSession {
    session: Session,
    wire: Wire,
    /// The TLS settings of the server the ClientHello chose.
    settings: Option<Arc<ServerTls>>,
    /// The name the ClientHello asked for (SNI).
    server_name: Option<Box<str>>,
    /// rustls processed records since it last encrypted application data. It may then
    /// owe the client a KeyUpdate (queued inside it until its next encryption), which
    /// the move to `Records` would lose: the move waits for a quiet moment.
    rustls_may_owe: bool,
    /// Our close_notify is encoded: nothing more is encrypted.
    close_notified: bool,
    /// rustls failed before the handshake completed (the session is `Failed`).
    handshake_failed: bool,
    /// What rustls failed with, once it has (for the log and the counters).
    rustls_error: Option<rustls::Error>,
    /// Move to [`Records`] once established (`--tls-record-layer ringress`).
    own_records: bool,
    /// The verified client certificate as `x-forwarded-client-cert` carries it;
    /// computed at the first request that needs it, or when the certificate goes
    /// away with rustls' connection.
    identity: Option<Option<String>>,
    /// The protocol ALPN chose, kept when rustls' connection goes away.
    alpn: Option<Box<[u8]>>,
}

/// Who protects the connection's records.
#[expect(
    clippy::large_enum_variant,
    reason = "Records is the state of every established TLS 1.3 connection; it lives in \
              the boxed client stream, and a box of its own would cost an allocation each"
)]
enum Session {
    /// rustls' unbuffered connection: the handshake, and TLS 1.2 connections
    /// throughout. Boxed: it is about twice the size of `Records`.
    Rustls(Box<UnbufferedServerConnection>),
    /// An established TLS 1.3 connection: ringress's record layer.
    Records(Records),
    /// The record layer failed (its alert was sent) or the move to it did: nothing
    /// more is sent or read, the connection only closes.
    Failed,
}

/// The ciphertext on its way in and out.
#[derive(Default)]
struct Wire {
    /// Ciphertext received and not yet processed: at most a partial record between
    /// reads. A pooled buffer, given back whenever it is empty and the connection idle.
    incoming: Vec<u8>,
    /// Ciphertext being sent: a pooled buffer, kept while the connection is busy (a
    /// large response reuses it for every batch) and given back when it goes idle.
    out: OutBuf,
    /// The client sent close_notify: no more plaintext will come.
    peer_closed: bool,
    /// A send of `out` is under way. Still set when no send is: that send's future
    /// was dropped halfway (a timeout, a race lost), so a record may be cut on the
    /// wire and nothing more can be sent on this connection.
    sending: bool,
    /// The established TLS 1.3 connection is to move to [`Records`] the moment its
    /// handshake completes (`--tls-record-layer ringress`), before rustls sees any
    /// record after the client's Finished: rustls is then given the received bytes one
    /// record at a time. Cleared when that moment passed (see [`rustls_window`]).
    handover_at_handshake: bool,
    /// Bytes at the front of `incoming` that rustls has been shown and not discarded
    /// yet: every later call must show it at least these (its state may point into
    /// them).
    rustls_seen: usize,
}

/// Why records could not be processed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsFailure {
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error("the connection's TLS state failed")]
    Failed,
}

/// Ciphertext to send. `buf` stays initialized to its whole length, so records are
/// encrypted straight into it without zeroing it first; `len` bytes are filled.
#[derive(Default)]
struct OutBuf {
    buf: Vec<u8>,
    len: usize,
}

impl OutBuf {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room for at least `room` more bytes after the filled ones, as a slice.
    fn spare(&mut self, room: usize) -> &mut [u8] {
        buffers::ensure(&mut self.buf);
        // Only what is asked for is zeroed (a small response touches a few hundred
        // bytes of the pooled buffer, not all of it); bytes once zeroed stay usable.
        let want = self.len.saturating_add(room);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        self.buf.get_mut(self.len..).unwrap_or_default()
    }

    /// Lets `write` fill `room` or more spare bytes; when it fails asking for more
    /// room (`Err(Some(size))`) the buffer grows to that once. Whether it succeeded.
    fn fill(
        &mut self,
        room: usize,
        mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
    ) -> bool {
        let mut room = room;
        for _ in 0..2 {
            match write(self.spare(room)) {
                Ok(n) => {
                    self.len += n;
                    return true;
                }
                Err(Some(required)) if required > room => room = required,
                Err(_) => return false,
            }
        }
        false
    }

    /// Gives the allocation back to the pool.
    fn release(&mut self) {
        self.len = 0;
        buffers::give(&mut self.buf);
    }
}

/// What processing received records led to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Something moved (plaintext taken, a record encoded); process again.
    Again,
    /// Every whole record is processed: more bytes from the client are needed (the
    /// handshake may be complete or not).
    NeedData,
    /// Both sides closed.
    Closed,
    /// The TLS 1.3 handshake completed, rustls has encoded all it had to send and
    /// seen no record after the client's Finished: the connection moves to
    /// [`Records`] now.
    Established,
}

impl ServerSession {
    /// A session answering a ClientHello with `config`. `incoming` holds the bytes
    /// received so far (the ClientHello); `own_records`: move the established TLS 1.3
    /// connection to ringress's record layer ([`Records`]), otherwise rustls protects
    /// its records throughout.
    pub(crate) fn new(
        config: Arc<ServerConfig>,
        incoming: Vec<u8>,
        settings: Option<Arc<ServerTls>>,
        server_name: Option<&str>,
        own_records: bool,
    ) -> Result<ServerSession, rustls::Error> {
        let conn = UnbufferedServerConnection::new(config)?;
        Ok(ServerSession {
            session: Session::Rustls(Box::new(conn)),
            wire: Wire {
                incoming,
                handover_at_handshake: own_records,
                ..Wire::default()
            },
            settings,
            server_name: server_name.map(Box::from),
            rustls_may_owe: false,
            close_notified: false,
            handshake_failed: false,
            rustls_error: None,
            own_records,
            identity: None,
            alpn: None,
        })
    }

    /// Takes ciphertext from the client, to be processed by the next
    /// [`ServerSession::process_received`].
    pub(crate) fn received(&mut self, data: &[u8]) {
        buffers::ensure(&mut self.wire.incoming);
        self.wire.incoming.extend_from_slice(data);
    }

    /// Whether the client sent close_notify: no more plaintext will come.
    pub(crate) fn peer_closed(&self) -> bool {
        self.wire.peer_closed
    }

    /// Whether records wait to be sent.
    pub(crate) fn has_output(&self) -> bool {
        !self.wire.out.is_empty()
    }

    /// Bytes waiting to be sent.
    pub(crate) fn output_len(&self) -> usize {
        self.wire.out.len
    }

    /// Whether the connection's records are ringress's ([`Records`]): plaintext is
    /// then best encrypted as it comes, straight from where it is.
    pub(crate) fn on_own_records(&self) -> bool {
        matches!(self.session, Session::Records(_))
    }

    /// Whether all there is to send is what the client does not wait for: the
    /// session ticket rustls makes once a TLS 1.3 handshake completed (unlike a TLS
    /// 1.2 server's Finished), or a KeyUpdate answer. It may then go out with the
    /// response, one send instead of two.
    pub(crate) fn only_a_ticket_to_send(&self) -> bool {
        match &self.session {
            Session::Rustls(conn) => {
                !self.wire.out.is_empty()
                    && !conn.is_handshaking()
                    && conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
            }
            Session::Records(_) => !self.wire.out.is_empty(),
            Session::Failed => false,
        }
    }

    /// Processes every whole record received: plaintext is appended to `buf`,
    /// records to send are collected in the send buffer (the caller sends them
    /// before it waits for the client). Returns [`Step::NeedData`] or
    /// [`Step::Closed`].
    pub(crate) fn process_received(&mut self, buf: &mut Vec<u8>) -> Result<Step, TlsFailure> {
        match &mut self.session {
            Session::Rustls(conn) => {
                let before = self.wire.incoming.len();
                let step = process_all(conn, &mut self.wire, buf)?;
                self.rustls_may_owe |= self.wire.incoming.len() != before;
                if step != Step::Established {
                    return Ok(step);
                }
                // rustls owes nothing: the handshake's last records are encoded and
                // it processed none after them.
                self.rustls_may_owe = false;
                self.take_records()?;
                self.process_received(buf)
            }
            Session::Records(records) => {
                let closed = records.open(&mut self.wire.incoming, |plaintext| {
                    buffers::ensure(buf);
                    buf.extend_from_slice(plaintext);
                })?;
                self.wire.peer_closed |= closed;
                Ok(Step::NeedData)
            }
            Session::Failed => Err(TlsFailure::Failed),
        }
    }

    /// Moves an established TLS 1.3 connection from rustls to [`Records`] (nothing
    /// for others). rustls must have processed every whole record received (its
    /// `WriteTraffic` state, as after [`ServerSession::process_received`]). The client
    /// certificate, if any, is kept as its `x-forwarded-client-cert` value.
    pub(crate) fn take_records(&mut self) -> Result<(), rustls::Error> {
        // rustls holds nothing of `incoming` (no handshake fragment it was shown; it
        // may not have seen what is there at all) and owes nothing since it last
        // encrypted a response.
        let quiet = self.wire.rustls_seen == 0 && !self.rustls_may_owe;
        if !self.own_records
            || !quiet
            || !matches!(&self.session, Session::Rustls(conn) if Records::can_take(conn))
        {
            return Ok(());
        }
        match std::mem::replace(&mut self.session, Session::Failed) {
            Session::Rustls(conn) => {
                if self.identity.is_none() {
                    self.identity = Some(client_identity(&conn));
                }
                self.alpn = conn.alpn_protocol().map(Box::from);
                self.session = Session::Records(Records::new(*conn)?);
            }
            other => self.session = other,
        }
        Ok(())
    }

    /// Leaves rustls after it failed: nothing more is asked of it (see
    /// `encode_alert`), and whether its handshake had completed is kept.
    fn rustls_failed(&mut self) {
        if let Session::Rustls(conn) = &self.session {
            self.handshake_failed = conn.is_handshaking();
        }
        self.session = Session::Failed;
    }

    /// Encodes the alert for `error` (rustls' queued alert, or the record layer's)
    /// into the send buffer; the session is failed afterwards.
    pub(crate) fn encode_failure(&mut self, error: &TlsFailure) {
        if let TlsFailure::Rustls(e) = error {
            self.rustls_error.get_or_insert_with(|| e.clone());
        }
        match (&mut self.session, error) {
            (Session::Rustls(conn), _) => {
                encode_alert(conn, &mut self.wire);
                self.rustls_failed();
            }
            (Session::Records(records), TlsFailure::Records(failure)) => {
                if let Some(alert) = failure.alert() {
                    self.wire
                        .out
                        .fill(Records::ALERT_LEN, |out| Ok(records.seal_alert(alert, out)));
                }
                // Closed at once: no close_notify after a fatal alert (RFC 8446 6.2).
                self.session = Session::Failed;
            }
            _ => {}
        }
    }

    /// Encrypts `data` into the send buffer (after any handshake records rustls
    /// still has to send: a session ticket, a key update).
    pub(crate) fn encrypt(&mut self, data: &[u8]) -> io::Result<()> {
        self.interrupted();
        let result = match &mut self.session {
            Session::Rustls(conn) => {
                let result = encrypt_rustls(conn, &mut self.wire, data);
                // Application data encrypted: a KeyUpdate rustls owed went out before it.
                self.rustls_may_owe &= data.is_empty() || result.is_err();
                if result.is_err() {
                    self.rustls_failed();
                }
                result
            }
            Session::Records(records) => {
                let room = Records::sealed_len(data.len());
                if self.wire.out.fill(room, |out| records.seal(data, out)) {
                    Ok(())
                } else {
                    self.session = Session::Failed;
                    Err(TlsFailure::Rustls(rustls::Error::EncryptError))
                }
            }
            Session::Failed => Err(TlsFailure::Failed),
        };
        result.map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
    }

    /// Encodes a close_notify into the send buffer (after anything still to send),
    /// once; nothing when the handshake never completed or the connection failed.
    pub(crate) fn close_notify(&mut self) {
        if std::mem::replace(&mut self.close_notified, true) || self.interrupted() {
            return;
        }
        match &mut self.session {
            Session::Rustls(conn) => close_notify_rustls(conn, &mut self.wire),
            Session::Records(records) => {
                self.wire.out.fill(Records::ALERT_LEN, |out| {
                    Ok(records.seal_alert(rustls::AlertDescription::CloseNotify, out))
                });
            }
            Session::Failed => {}
        }
    }

    /// Takes the send buffer and how much of it is filled, for a send; `None` when
    /// there is nothing to send. [`ServerSession::finish_send`] gives the buffer back.
    ///
    /// Cancel safety: the buffer and its length leave the session before the send
    /// starts, so a dropped send leaves nothing behind that a later send would put on
    /// the wire as zeros; and the session counts the send as under way until
    /// `finish_send`, so after a send that was abandoned halfway (a record may be cut
    /// on the wire) nothing more is encrypted or sent ([`ServerSession::interrupted`]).
    pub(crate) fn start_send(&mut self) -> io::Result<Option<(Vec<u8>, usize)>> {
        if self.interrupted() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier send to the client was abandoned halfway",
            ));
        }
        let out = &mut self.wire.out;
        if out.is_empty() {
            return Ok(None);
        }
        let taken = (std::mem::take(&mut out.buf), std::mem::take(&mut out.len));
        self.wire.sending = true;
        Ok(Some(taken))
    }

    /// Ends the send [`ServerSession::start_send`] began, keeping its buffer (a busy
    /// connection reuses it).
    pub(crate) fn finish_send(&mut self, buf: Vec<u8>) {
        self.wire.sending = false;
        self.wire.out.buf = buf;
    }

    /// Whether an earlier send was abandoned halfway (see
    /// [`ServerSession::start_send`]): then the session is over, nothing more is
    /// encrypted or sent.
    fn interrupted(&mut self) -> bool {
        if self.wire.sending {
            self.session = Session::Failed;
            self.wire.out.len = 0;
        }
        self.wire.sending
    }

    /// Gives the buffers back to the shard's pool (between requests; received bytes
    /// not yet processed are kept).
    pub(crate) fn release_buffers(&mut self) {
        self.wire.out.release();
        if self.wire.incoming.is_empty() {
            buffers::give(&mut self.wire.incoming);
        }
    }

    /// The client's verified certificate in `x-forwarded-client-cert` form, when the
    /// connection is mutual TLS and the client presented one.
    pub(crate) fn client_identity(&mut self) -> Option<&str> {
        if let (None, Session::Rustls(conn)) = (&self.identity, &self.session) {
            self.identity = Some(client_identity(conn));
        }
        self.identity.as_ref()?.as_deref()
    }

    /// [`ServerSession::client_identity`] and [`ServerSession::server_name`] together.
    pub(crate) fn identity_and_server_name(&mut self) -> (Option<&str>, Option<&str>) {
        self.client_identity();
        let identity = self.identity.as_ref().and_then(|i| i.as_deref());
        (identity, self.server_name.as_deref())
    }

    /// The name the ClientHello asked for (SNI).
    pub(crate) fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The TLS settings of the server the handshake chose.
    pub(crate) fn server_settings(&self) -> Option<&Arc<ServerTls>> {
        self.settings.as_ref()
    }

    /// The application protocol ALPN chose (`h2`, `http/1.1`), once the handshake
    /// got that far; `None` when the client offered none.
    pub(crate) fn alpn_protocol(&self) -> Option<&[u8]> {
        match &self.session {
            Session::Rustls(conn) => conn.alpn_protocol(),
            Session::Records(_) | Session::Failed => self.alpn.as_deref(),
        }
    }

    /// What rustls failed with, if it did (a failed handshake's reason).
    pub(crate) fn rustls_error(&self) -> Option<&rustls::Error> {
        self.rustls_error.as_ref()
    }

    /// Takes what rustls failed with, if it did.
    pub(crate) fn take_rustls_error(&mut self) -> Option<rustls::Error> {
        self.rustls_error.take()
    }

    /// The negotiated TLS version once the handshake completed; `None` while it
    /// runs or after it failed.
    pub(crate) fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        match &self.session {
            Session::Rustls(conn) if !conn.is_handshaking() => conn.protocol_version(),
            Session::Records(_) => Some(rustls::ProtocolVersion::TLSv1_3),
            Session::Rustls(_) | Session::Failed => None,
        }
    }

    /// Whether the handshake has not completed (or failed before it did).
    pub(crate) fn is_handshaking(&self) -> bool {
        match &self.session {
            Session::Rustls(conn) => conn.is_handshaking(),
            Session::Records(_) => false,
            Session::Failed => self.handshake_failed,
        }
    }
}

/// The client certificate rustls verified, in `x-forwarded-client-cert` form.
fn client_identity(conn: &UnbufferedServerConnection) -> Option<String> {
    let leaf = conn.peer_certificates()?.first()?;
    super::forwarded_client_cert(leaf)
        .inspect_err(|e| tracing::debug!(error = %e, "client certificate unreadable"))
        .ok()
}

/// Runs rustls over every whole record in `wire.incoming` until it needs more data
/// or the connection closed (see [`ServerSession::process_received`]).
fn process_all(
    conn: &mut UnbufferedServerConnection,
    wire: &mut Wire,
    buf: &mut Vec<u8>,
) -> Result<Step, rustls::Error> {
    let mut idle_steps = 0;
    loop {
        let before = (
            buf.len(),
            wire.incoming.len(),
            wire.out.len,
            wire.rustls_seen,
        );
        match process_step(conn, wire, buf)? {
            Step::Again => {}
            step => return Ok(step),
        }
        if before
            == (
                buf.len(),
                wire.incoming.len(),
                wire.out.len,
                wire.rustls_seen,
            )
        {
            idle_steps += 1;
            if idle_steps > MAX_IDLE_STEPS {
                return Err(rustls::Error::General(
                    "the TLS state machine made no progress".into(),
                ));
            }
        }
    }
}

/// One `process_tls_records` step over `wire.incoming`.
fn process_step(
    conn: &mut UnbufferedServerConnection,
    wire: &mut Wire,
    buf: &mut Vec<u8>,
) -> Result<Step, rustls::Error> {
    let window = rustls_window(conn, wire);
    let UnbufferedStatus { mut discard, state } =
        conn.process_tls_records(&mut wire.incoming[..window]);
    wire.rustls_seen = window.saturating_sub(discard);
    let step = match state {
        Err(error) => Err(error),
        Ok(ConnectionState::ReadTraffic(mut traffic)) => loop {
            match traffic.next_record() {
                None => break Ok(Step::Again),
                Some(Ok(record)) => {
                    discard += record.discard;
                    buffers::ensure(buf);
                    buf.extend_from_slice(record.payload);
                }
                Some(Err(error)) => break Err(error),
            }
        },
        Ok(ConnectionState::EncodeTlsData(mut data)) => {
            encode(&mut data, &mut wire.out).map(|()| Step::Again)
        }
        Ok(ConnectionState::TransmitTlsData(transmit)) => {
            // `out` is sent before the connection waits for the client again.
            transmit.done();
            Ok(Step::Again)
        }
        Ok(ConnectionState::WriteTraffic(_)) if wire.handover_at_handshake => {
            // Only reached once the handshake completed with nothing left seen.
            wire.handover_at_handshake = false;
            Ok(Step::Established)
        }
        Ok(ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_)) => {
            // More of the handshake is needed, or more records: rustls may be shown
            // all that arrives.
            Ok(if window < wire.incoming.len() {
                Step::Again
            } else {
                Step::NeedData
            })
        }
        Ok(ConnectionState::PeerClosed) => {
            wire.peer_closed = true;
            Ok(Step::Again)
        }
        Ok(ConnectionState::Closed) => Ok(Step::Closed),
        // Early data is not enabled; later rustls states are not expected.
        Ok(other) => Err(rustls::Error::General(format!(
            "unexpected TLS connection state {other:?}"
        ))),
    };
    wire.incoming.drain(..discard.min(wire.incoming.len()));
    step
}

/// How much of `wire.incoming` rustls is shown in its next step. All of it, unless
/// the connection is to move to [`Records`] when its handshake completes: then, while
/// the handshake runs, one whole record at a time (so the client's Finished is the
/// last record rustls sees), and once it completed only what rustls has already seen
/// (nothing, usually: it then just encodes its last handshake records). When rustls
/// holds part of a record at that point (handshake messages coalesced after the
/// Finished) or the connection is TLS 1.2, the moment is gone: rustls is shown
/// everything, and a TLS 1.3 connection moves later (`ServerSession::take_records`).
fn rustls_window(conn: &UnbufferedServerConnection, wire: &mut Wire) -> usize {
    let all = wire.incoming.len();
    if !wire.handover_at_handshake {
        return all;
    }
    if conn.is_handshaking() {
        // What rustls saw ends at a record boundary: show it the next record too.
        let seen = wire.rustls_seen.min(all);
        let next = match wire.incoming[seen..].get(..5) {
            Some(&[_, _, _, hi, lo]) => 5 + usize::from(u16::from_be_bytes([hi, lo])),
            _ => all,
        };
        return seen.saturating_add(next).min(all);
    }
    if wire.rustls_seen > 0 || !Records::can_take(conn) {
        wire.handover_at_handshake = false;
        return all;
    }
    0
}

/// Encrypts `data` with rustls (a TLS 1.2 connection) into `wire.out`, after any
/// handshake records rustls still has to send.
fn encrypt_rustls(
    conn: &mut UnbufferedServerConnection,
    wire: &mut Wire,
    data: &[u8],
) -> Result<(), TlsFailure> {
    // rustls sees all that was received: no hand-off at the handshake's end after this.
    wire.handover_at_handshake = false;
    for _ in 0..MAX_IDLE_STEPS {
        let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut wire.incoming);
        let done = match state {
            Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                encrypt(&mut traffic, data, &mut wire.out).map(|()| true)
            }
            Ok(ConnectionState::EncodeTlsData(mut record)) => {
                encode(&mut record, &mut wire.out).map(|()| false)
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                // Goes out with this batch, ahead of its records.
                transmit.done();
                Ok(false)
            }
            Ok(ConnectionState::PeerClosed) => {
                wire.peer_closed = true;
                Ok(false)
            }
            Ok(ConnectionState::BlockedHandshake) => Err(rustls::Error::HandshakeNotComplete),
            Ok(ConnectionState::Closed) => {
                Err(rustls::Error::General("the connection is closed".into()))
            }
            // Every whole record was read before the response was written; data
            // arriving now would be out of turn.
            Ok(other) => Err(rustls::Error::General(format!(
                "unexpected TLS connection state {other:?} while sending"
            ))),
            Err(error) => Err(error),
        };
        wire.incoming.drain(..discard.min(wire.incoming.len()));
        wire.rustls_seen = wire.incoming.len();
        if done? {
            return Ok(());
        }
    }
    Err(rustls::Error::General("the TLS state machine made no progress".into()).into())
}

/// Encodes rustls' close_notify into `wire.out` (after anything rustls still has to
/// send).
fn close_notify_rustls(conn: &mut UnbufferedServerConnection, wire: &mut Wire) {
    for _ in 0..MAX_IDLE_STEPS {
        let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut wire.incoming);
        let done = match state {
            Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                wire.out.fill(2 * MAX_RECORD_OVERHEAD, |out| {
                    traffic.queue_close_notify(out).map_err(encrypt_room)
                });
                true
            }
            Ok(ConnectionState::EncodeTlsData(mut record)) => {
                encode(&mut record, &mut wire.out).is_err()
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                false
            }
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                // Plaintext after the last request is not read any more.
                while let Some(Ok(_)) = traffic.next_record() {}
                false
            }
            Ok(ConnectionState::PeerClosed) => false,
            Ok(_) | Err(_) => true,
        };
        wire.incoming.drain(..discard.min(wire.incoming.len()));
        if done {
            return;
        }
    }
}

/// Encodes the alert rustls queued when it failed. Called once, right after the
/// failure; rustls is never called again afterwards.
///
/// rustls queues at most one fatal alert (none for some failures, such as a record
/// interleaved with a split handshake message), and the next `process_tls_records`
/// hands it out before it looks at any record. A call after that would deframe the
/// rest of `incoming` once more, records it has already decrypted in place included,
/// and fail again for the wrong reason (a bad_record_mac alert) or trip an internal
/// assertion. rustls is given the connection's own `incoming`, as on every call: its
/// handshake deframer keeps offsets into that buffer while a message split over
/// records is being joined, and any other buffer (an empty one, say) would send it
/// past its end.
fn encode_alert(conn: &mut UnbufferedServerConnection, wire: &mut Wire) {
    let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut wire.incoming);
    if let Ok(ConnectionState::EncodeTlsData(mut record)) = state {
        let _ = encode(&mut record, &mut wire.out);
    }
    wire.incoming.drain(..discard.min(wire.incoming.len()));
}

/// Copies a handshake record rustls prepared into `out`.
fn encode(
    record: &mut EncodeTlsData<'_, ServerConnectionData>,
    out: &mut OutBuf,
) -> Result<(), rustls::Error> {
    let encoded = out.fill(HANDSHAKE_RECORD_GUESS, |spare| {
        record.encode(spare).map_err(|e| match e {
            EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
                Some(required_size)
            }
            EncodeError::AlreadyEncoded => None,
        })
    });
    if encoded {
        Ok(())
    } else {
        Err(rustls::Error::General(
            "cannot encode a TLS handshake record".into(),
        ))
    }
}

/// Encrypts `data` into `out`, in records of at most 16 KiB of plaintext.
fn encrypt(
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    data: &[u8],
    out: &mut OutBuf,
) -> Result<(), rustls::Error> {
    let records = data.len().div_ceil(MAX_RECORD_PLAINTEXT).max(1);
    let room = data.len() + records * MAX_RECORD_OVERHEAD;
    if out.fill(room, |spare| {
        traffic.encrypt(data, spare).map_err(encrypt_room)
    }) {
        Ok(())
    } else {
        Err(rustls::Error::EncryptError)
    }
}

/// The room an encryption asked for, if that is why it failed.
fn encrypt_room(error: EncryptError) -> Option<usize> {
    match error {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(required_size)
        }
        _ => None,
    }
}
