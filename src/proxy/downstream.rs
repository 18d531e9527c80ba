//! The client side of a connection: plain TCP, or TLS over the ring.
//!
//! For TLS, ringress reads the ClientHello's SNI name itself ([`tls::read_client_hello`])
//! from the first bytes received, the listener's [`SniSelector`] picks the Gateway
//! server, and a [`ServerSession`] is made with that server's own `ServerConfig` (its
//! certificate, its client-certificate policy) and fed the same bytes. A name no
//! server covers gets rustls' alert from [`tls::reject_config`]. The session is the
//! TLS state machine, sans-IO (`src/tls/session.rs`); this module moves its bytes:
//! ciphertext from the socket into it, its records onto the socket, with the
//! timeouts, the lingering close and the reset the connection's end calls for.

use std::io;

use std::task::{Context, Poll};
use std::time::Duration;

use crate::buffers;
use crate::config::ServerTls;
use crate::snapshot::ListenerSpec;
use crate::tls::{
    self, ClientHelloError, ClientHelloInfo, HelloScan, ServerSession, SniSelector, Step,
    TlsFailure,
};
use crate::uring::{self, FilledBuf, TcpStream};

use super::Next;
use super::http2::{ConnectionFacts, H2Stream};
use crate::pipe::{Pipe, PumpError, PumpTls, PumpUntil, pump};

/// Plaintext encrypted per send at most: three full records, so the ciphertext
/// buffer of a large response stays small enough for the pool to keep.
const WRITE_BATCH: usize = 3 * tls::MAX_RECORD_PLAINTEXT;

/// How long a closing connection keeps reading and dropping what the client still
/// sends (see [`Ending::Lingering`]): a time, not a size, so that a client still
/// streaming a large body has read the answer before the reset (nginx's
/// `lingering_time` is 30 s).
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(2);

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// Closed before its first byte: a TCP health check, most likely.
    #[error("client closed the connection without sending anything")]
    Silent,
    #[error("client closed the connection during the handshake")]
    Closed,
    /// What rustls refused, and the name the ClientHello asked for.
    #[error("TLS: {0}")]
    Tls(rustls::Error, Option<String>),
    #[error("ClientHello: {0}")]
    ClientHello(#[from] ClientHelloError),
    #[error("client named {0:?}, which no server on this port serves")]
    UnknownServerName(Option<String>),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// How a client connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// A TLS close_notify (unless the last response carried it) and a FIN: every
    /// response sent was whole.
    Clean,
    /// Clean, then what the client still sends is read and dropped for a moment (at
    /// most `LINGER_TIME`). A client may have sent more than was
    /// read — a refused request's body, pipelined requests, the rest of a bad
    /// record — and closing a socket with unread bytes resets the connection, which
    /// can destroy the error response or alert just sent before the client reads it.
    Lingering,
    /// A TCP reset, never a close_notify: a response was cut short, and nothing may
    /// make what the client got look complete (RFC 9112 §9.8).
    Abort,
}

/// A client connection, plain or TLS.
pub(crate) enum Downstream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
    /// One stream of an HTTP/2 connection (see `proxy::http2`).
    H2(Box<H2Stream>),
}

/// A TLS connection over a ring socket.
pub(crate) struct TlsStream {
    tcp: TcpStream,
    tls: ServerSession,
}

/// Receives a connection's first bytes into `incoming` until they hold its whole
/// ClientHello, and what the hello says; `incoming` keeps every byte received (the
/// hello and whatever followed it in the same reads), also when the hello is refused.
/// Unbounded in time: the caller puts it under the header timeout.
pub(crate) async fn receive_client_hello(
    tcp: &TcpStream,
    incoming: &mut Vec<u8>,
) -> Result<ClientHelloInfo, HandshakeError> {
    loop {
        match tls::read_client_hello(incoming)? {
            HelloScan::Complete(hello) => return Ok(hello),
            HelloScan::Incomplete => {}
        }
        let data = tcp.recv().await?;
        match (data.is_empty(), incoming.is_empty()) {
            (true, true) => return Err(HandshakeError::Silent),
            (true, false) => return Err(HandshakeError::Closed),
            _ => {}
        }
        buffers::ensure(incoming);
        incoming.extend_from_slice(&data);
    }
}

impl Downstream {
    /// Reads the ClientHello, chooses the server by SNI and answers the hello with
    /// that server's configuration. The handshake itself completes as the first
    /// request is read.
    /// `own_records`: move the established TLS 1.3 connection to ringress's record
    /// layer ([`tls::Records`]); otherwise rustls protects its records throughout.
    pub(crate) async fn accept_tls(
        tcp: TcpStream,
        listener: &ListenerSpec,
        selector: &SniSelector,
        own_records: bool,
    ) -> Result<Downstream, HandshakeError> {
        let mut incoming = Vec::new();
        let hello = match receive_client_hello(&tcp, &mut incoming).await {
            Ok(hello) => hello,
            Err(HandshakeError::ClientHello(error)) => {
                let alert = tls::client_hello::fatal_alert_record(error.alert());
                let _ = tcp.send_all(alert.to_vec()).await;
                return Err(error.into());
            }
            Err(e) => return Err(e),
        };
        let name = hello.server_name;
        let (server, config) = match selector.select(name.as_deref()) {
            Some((server, config)) => (Some(server), config.clone()),
            None => (None, selector.reject().clone()),
        };
        let settings = server
            .and_then(|i| listener.certificates.get(i))
            .map(|c| c.settings.clone());
        let session = ServerSession::new(config, incoming, settings, name.as_deref(), own_records)
            .map_err(|error| HandshakeError::Tls(error, name.clone()))?;
        let mut stream = TlsStream { tcp, tls: session };
        // Answer the hello (ServerHello up to the server's Finished); with the reject
        // configuration this fails and sends rustls' alert.
        let mut early = Vec::new();
        let answered = stream.tls.process_received(&mut early);
        let answered = match answered {
            Ok(step) => stream
                .send_out()
                .await
                .map(|()| step)
                .map_err(HandshakeError::Io),
            Err(error) => {
                let error = stream.fail(error).await;
                // The alert must reach the client before the socket closes.
                Box::pin(linger(&stream.tcp)).await;
                // What rustls failed with names the reason (no shared cipher suite...).
                Err(match stream.tls.take_rustls_error() {
                    Some(rustls) => HandshakeError::Tls(rustls, name.clone()),
                    None => HandshakeError::Io(error),
                })
            }
        };
        if server.is_none() {
            return Err(HandshakeError::UnknownServerName(name));
        }
        match answered {
            Ok(_) if !early.is_empty() => Err(HandshakeError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "application data before the handshake completed",
            ))),
            Ok(Step::Closed) => Err(HandshakeError::Closed),
            Ok(_) => Ok(Downstream::Tls(Box::new(stream))),
            Err(e) => Err(e),
        }
    }

    /// Appends plaintext from the client to `buf`; `Ok(0)` means the client is done.
    pub(crate) async fn read(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Downstream::Plain(tcp) => {
                let data = tcp.recv().await?;
                if !data.is_empty() {
                    buffers::ensure(buf);
                    buf.extend_from_slice(&data);
                }
                Ok(data.len())
            }
            Downstream::Tls(tls) => tls.read(buf).await,
            Downstream::H2(stream) => stream.read(buf).await,
        }
    }

    /// Sends `data` to the client, whole. With [`Next::Close`] it is the last data of
    /// the connection: a TLS close_notify goes out in the same send (not in a send of
    /// its own at [`Downstream::close`]). The buffer comes back for reuse.
    pub(super) async fn write_all(
        &mut self,
        data: Vec<u8>,
        then: Next,
    ) -> (io::Result<()>, Vec<u8>) {
        match self {
            Downstream::Plain(tcp) => tcp.send_all(data).await,
            Downstream::Tls(tls) => {
                let result = tls.write_all(&data, then).await;
                (result, data)
            }
            Downstream::H2(stream) => {
                let result = stream.write_all(&data).await;
                (result, data)
            }
        }
    }

    /// Takes response bytes for the client, to go out with the next
    /// `write_all`. An established TLS 1.3 connection encrypts them at
    /// once into its send buffer, straight from `data` (a receive buffer of the
    /// upstream connection); others append them to `staged`, the buffer `write_all`
    /// is then given ([`Downstream::waiting`] tells how much waits).
    pub(crate) fn stage(&mut self, data: &[u8], staged: &mut Vec<u8>) -> io::Result<()> {
        match self {
            Downstream::Tls(tls) if tls.tls.on_own_records() => {
                if !staged.is_empty() {
                    tls.tls.encrypt(staged)?;
                    staged.clear();
                }
                tls.tls.encrypt(data)
            }
            _ => {
                buffers::ensure(staged);
                staged.extend_from_slice(data);
                Ok(())
            }
        }
    }

    /// The bytes [`Downstream::stage`] has made wait to be sent, `staged` being the
    /// buffer it was given.
    pub(crate) fn waiting(&self, staged: &[u8]) -> usize {
        match self {
            Downstream::Tls(tls) if tls.tls.on_own_records() => tls.tls.output_len(),
            _ => staged.len(),
        }
    }

    /// Gives the connection's TLS buffers back to the shard's pool (between requests;
    /// received bytes not yet processed are kept).
    pub(crate) fn release_buffers(&mut self) {
        if let Downstream::Tls(tls) = self {
            tls.tls.release_buffers();
        }
    }

    /// Ends the connection as `ending` says: politely with a TLS close_notify (unless
    /// the last `write_all` sent it) and the write side shut, then lingering if asked;
    /// or with a reset.
    pub(crate) async fn close(&mut self, ending: Ending) {
        let tcp = match self {
            Downstream::Plain(tcp) => tcp,
            Downstream::H2(stream) => {
                stream.close(ending != Ending::Abort);
                return;
            }
            Downstream::Tls(tls) => {
                if ending != Ending::Abort {
                    tls.tls.close_notify();
                    let _ = Box::pin(tls.send_out()).await;
                }
                &tls.tcp
            }
        };
        match ending {
            Ending::Clean => {
                let _ = tcp.shutdown_write();
            }
            Ending::Lingering => Box::pin(linger(tcp)).await,
            Ending::Abort => {
                let _ = tcp.reset_on_close();
            }
        }
    }

    /// The client's verified certificate in `x-forwarded-client-cert` form, when the
    /// connection is mutual TLS and the client presented one.
    pub(crate) fn client_identity(&mut self) -> Option<&str> {
        match self {
            Downstream::Plain(_) => None,
            Downstream::Tls(tls) => tls.tls.client_identity(),
            Downstream::H2(stream) => stream.facts.client_identity.as_deref(),
        }
    }

    /// The client's verified certificate (see [`Downstream::client_identity`]) and
    /// the handshake's SNI, together.
    pub(crate) fn identity_and_server_name(&mut self) -> (Option<&str>, Option<&str>) {
        match self {
            Downstream::Plain(_) => (None, None),
            Downstream::Tls(tls) => tls.tls.identity_and_server_name(),
            Downstream::H2(stream) => (
                stream.facts.client_identity.as_deref(),
                stream.facts.server_name.as_deref(),
            ),
        }
    }

    /// Whether the handshake's SNI was `host` (a request for the very name its
    /// connection was made for).
    pub(crate) fn is_server_name(&self, host: &str) -> bool {
        self.server_name()
            .is_some_and(|n| n.eq_ignore_ascii_case(host))
    }

    /// The socket's local address.
    pub(crate) fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Downstream::Plain(tcp) => tcp.local_addr().ok(),
            Downstream::Tls(tls) => tls.tcp.local_addr().ok(),
            Downstream::H2(stream) => stream.facts.local_addr,
        }
    }

    /// What rustls failed with, if it did (a failed handshake's reason).
    pub(crate) fn rustls_error(&self) -> Option<&rustls::Error> {
        match self {
            Downstream::Tls(tls) => tls.tls.rustls_error(),
            Downstream::Plain(_) | Downstream::H2(_) => None,
        }
    }

    /// The name the ClientHello asked for (SNI).
    pub(crate) fn server_name(&self) -> Option<&str> {
        match self {
            Downstream::Tls(tls) => tls.tls.server_name(),
            Downstream::H2(stream) => stream.facts.server_name.as_deref(),
            Downstream::Plain(_) => None,
        }
    }

    /// The TLS settings of the server the handshake chose (`None` for plain TCP).
    pub(crate) fn server_settings(&self) -> Option<&ServerTls> {
        match self {
            Downstream::Plain(_) => None,
            Downstream::Tls(tls) => tls.tls.server_settings().map(|s| &**s),
            Downstream::H2(stream) => stream.facts.settings.as_deref(),
        }
    }

    /// The negotiated TLS version once the handshake completed; `None` for plain TCP
    /// or a handshake still going on.
    pub(crate) fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        match self {
            Downstream::Tls(tls) => tls.tls.tls_version(),
            Downstream::H2(stream) => stream.facts.tls_version,
            Downstream::Plain(_) => None,
        }
    }

    /// Whether a TLS handshake has started and not completed (or failed).
    pub(crate) fn is_handshaking(&self) -> bool {
        matches!(self, Downstream::Tls(tls) if tls.tls.is_handshaking())
    }

    /// `https` or `http`, for `x-forwarded-proto` and route `scheme` matches.
    pub(crate) fn scheme(&self) -> &'static str {
        match self {
            Downstream::Plain(_) => "http",
            Downstream::Tls(_) => "https",
            Downstream::H2(stream) if stream.facts.tls => "https",
            Downstream::H2(_) => "http",
        }
    }
}

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Downstream {
    /// Notes that the response written next is an error ringress made itself with
    /// `status` (an HTTP/2 stream answers a gRPC client with a `grpc-status` then).
    pub(crate) fn note_local_error(&mut self, status: u16) {
        if let Downstream::H2(stream) = self {
            stream.note_local_error(status);
        }
    }

    /// Like [`Downstream::note_local_error`], for an answer with its own `grpc-status`
    /// (`grpc`, else mapped from `status`) and `grpc-message`, whatever its status.
    pub(crate) fn note_local_reply(
        &mut self,
        status: u16,
        grpc: Option<u32>,
        message: &'static str,
    ) {
        if let Downstream::H2(stream) = self {
            stream.note_local_reply(status, grpc, message);
        }
    }

    /// Whether the client speaks HTTP/2: it chose `h2` by ALPN, or on plain TCP its
    /// first bytes (`first`, at least four) are the HTTP/2 preface (prior knowledge).
    pub(crate) fn speaks_h2(&self, first: &[u8]) -> bool {
        match self {
            Downstream::Tls(tls) => tls.tls.alpn_protocol() == Some(b"h2"),
            Downstream::Plain(_) => {
                first.len() >= 4
                    && H2_PREFACE.starts_with(&first[..first.len().min(H2_PREFACE.len())])
            }
            Downstream::H2(_) => false,
        }
    }

    /// What the streams of this connection, made HTTP/2, need to know of it.
    pub(crate) fn h2_facts(&mut self, local_addr: Option<std::net::SocketAddr>) -> ConnectionFacts {
        ConnectionFacts {
            tls: matches!(self, Downstream::Tls(_)),
            server_name: self.server_name().map(Box::from),
            settings: match self {
                Downstream::Tls(tls) => tls.tls.server_settings().cloned(),
                _ => None,
            },
            tls_version: self.tls_version(),
            client_identity: self.client_identity().map(str::to_owned),
            local_addr,
        }
    }

    /// Moves bytes between the socket and the HTTP/2 connection or tunnel on `pipe`
    /// (its records opened and sealed for TLS) while `drive` polls it, until `drive`
    /// is done and what it wrote is sent, or (as `until` says) the client is gone.
    pub(crate) async fn pump(
        &mut self,
        pipe: &Pipe,
        until: PumpUntil,
        drive: impl FnMut(&mut Context<'_>) -> Poll<()>,
    ) -> io::Result<()> {
        match self {
            Downstream::Plain(tcp) => match pump(tcp, None, pipe, until, drive).await {
                Ok(()) => Ok(()),
                Err(PumpError::Io(e)) => Err(e),
                Err(PumpError::Tls(e)) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            },
            Downstream::Tls(stream) => {
                let TlsStream { tcp, tls } = &mut **stream;
                match pump(tcp, Some(tls as &mut dyn PumpTls), pipe, until, drive).await {
                    Ok(()) => Ok(()),
                    Err(PumpError::Io(e)) => Err(e),
                    Err(PumpError::Tls(e)) => Err(Box::pin(stream.fail(e)).await),
                }
            }
            Downstream::H2(_) => Err(io::Error::other("HTTP/2 inside HTTP/2")),
        }
    }
}

/// Shuts the write side of `tcp`, then reads and drops what the client still sends
/// until it closes or [`LINGER_TIME`] passes (see [`Ending::Lingering`]).
async fn linger(tcp: &TcpStream) {
    if tcp.shutdown_write().is_err() {
        return;
    }
    let deadline = uring::now() + LINGER_TIME;
    loop {
        let left = deadline.saturating_duration_since(uring::now());
        match uring::timeout(left, tcp.recv()).await {
            Ok(Ok(data)) if !data.is_empty() => {}
            _ => return,
        }
    }
}

impl TlsStream {
    /// Appends the plaintext of every whole record received to `buf`, receiving
    /// when there is none; `Ok(0)` once the client closed (close_notify or EOF).
    ///
    /// This is what an idle keep-alive connection waits in, so its future holds little
    /// more than the receive: records are processed synchronously, and the sends a
    /// read can need (the handshake's flights, an alert) are boxed futures, allocated
    /// only while they run.
    async fn read(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let before = buf.len();
        let mut looked = false;
        let error = loop {
            let step = match self.tls.process_received(buf) {
                Ok(step) => step,
                Err(error) => break error,
            };
            let taken = buf.len().saturating_sub(before);
            if taken > 0 {
                // Records queued meanwhile (a session ticket) go out with the
                // response.
                return Ok(taken);
            }
            if step == Step::Closed || self.tls.peer_closed() {
                return Ok(0);
            }
            // A session ticket can go out with the response: the first request is
            // usually on its way (sent right after the client's Finished), and one
            // pass through the ring delivers it if it is.
            let early = match !looked && self.tls.only_a_ticket_to_send() {
                true => {
                    looked = true;
                    uring::next_turn().await;
                    self.tcp.try_recv()
                }
                false => None,
            };
            let data = match early {
                Some(data) => data?,
                None => {
                    if self.tls.has_output() {
                        Box::pin(self.send_out()).await?;
                    }
                    // A TLS 1.3 connection that could not move to ringress's records
                    // when its handshake completed moves while it waits for the
                    // client, once rustls holds and owes nothing.
                    if let Err(error) = self.tls.take_records() {
                        break error.into();
                    }
                    self.tcp.recv().await?
                }
            };
            if data.is_empty() {
                return Ok(0);
            }
            self.tls.received(&data);
        };
        Err(Box::pin(self.fail(error)).await)
    }

    /// Sends the alert for `error` (rustls' queued alert, or the record layer's),
    /// then returns the error for the caller.
    async fn fail(&mut self, error: TlsFailure) -> io::Error {
        self.tls.encode_failure(&error);
        let _ = self.send_out().await;
        io::Error::new(io::ErrorKind::InvalidData, error)
    }

    /// Encrypts `data` in batches of [`WRITE_BATCH`] and sends each, after the
    /// records [`Downstream::stage`] encrypted; the last send carries the close_notify
    /// when the connection ends after it.
    async fn write_all(&mut self, data: &[u8], then: Next) -> io::Result<()> {
        let mut batches = data.chunks(WRITE_BATCH).peekable();
        while let Some(batch) = batches.next() {
            self.tls.encrypt(batch)?;
            if batches.peek().is_some() {
                self.send_out().await?;
            }
        }
        if then == Next::Close {
            self.tls.close_notify();
        }
        self.send_out().await
    }

    /// Sends every record the session has to send (see
    /// [`ServerSession::start_send`] for why this is cancel-safe).
    async fn send_out(&mut self) -> io::Result<()> {
        let Some((buf, len)) = self.tls.start_send()? else {
            return Ok(());
        };
        let (result, filled) = self.tcp.send_all(FilledBuf { buf, len }).await;
        self.tls.finish_send(filled.buf);
        result
    }
}
