//! One upstream connection's TLS: a rustls `ClientConnection` driven over buffers
//! (rustls never touches the socket), the handshake over the io_uring socket
//! ([`handshake`]), and the HTTP/1.1 transport over it ([`TlsUpstream`]: plaintext
//! in, plaintext out, as a TCP connection would give). HTTP/2 upstream connections
//! drive the same [`ClientSession`] from their pump (`pipe::pump`).
//!
//! What a failed handshake tells the client is Envoy's `TLS_error:` reason
//! ([`envoy_reason`]), mapped from rustls' error to the BoringSSL name Envoy prints.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConnection};

use super::client_config::UpstreamTls;
use super::session::TlsFailure;
use crate::buffers;
use crate::pipe::PumpTls;
use crate::uring::{self, RecvBuf, TcpStream};

/// A client TLS session without I/O.
pub(crate) struct ClientSession {
    conn: ClientConnection,
    /// The upstream sent close_notify.
    closed: bool,
    /// The session failed: nothing more is decrypted or sent.
    failed: bool,
    /// The pump's send buffer between sends.
    spare: Vec<u8>,
}

impl ClientSession {
    /// A session to `server_name` with the cluster's config.
    pub(crate) fn new(
        tls: &UpstreamTls,
        server_name: ServerName<'static>,
    ) -> Result<ClientSession, rustls::Error> {
        let mut conn = ClientConnection::new(tls.config.clone(), server_name)?;
        // Plaintext is encrypted and taken out at once: rustls need not bound it.
        conn.set_buffer_limit(None);
        Ok(ClientSession {
            conn,
            closed: false,
            failed: false,
            spare: Vec::new(),
        })
    }

    /// Gives rustls the ciphertext `data`, appending what it decrypts to `plain`.
    pub(crate) fn feed(&mut self, data: &[u8], plain: &mut Vec<u8>) -> Result<(), rustls::Error> {
        if self.failed {
            return Err(rustls::Error::General("the TLS session failed".into()));
        }
        let result = self.feed_inner(data, plain);
        self.failed = result.is_err();
        result
    }

    fn feed_inner(&mut self, data: &[u8], plain: &mut Vec<u8>) -> Result<(), rustls::Error> {
        let mut rest = data;
        loop {
            if !rest.is_empty() {
                match self.conn.read_tls(&mut rest) {
                    Ok(0) => {
                        return Err(rustls::Error::General(
                            "rustls took none of the received bytes".into(),
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(rustls::Error::General(e.to_string())),
                }
            }
            let state = self.conn.process_new_packets()?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = plain.len();
                plain.resize(start + n, 0);
                self.conn
                    .reader()
                    .read_exact(&mut plain[start..])
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
            }
            if state.peer_has_closed() {
                self.closed = true;
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Whether the upstream sent close_notify.
    pub(crate) fn peer_closed(&self) -> bool {
        self.closed
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Encrypts `data` into records waiting to be sent ([`Self::take_output`]).
    pub(crate) fn encrypt(&mut self, data: &[u8]) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("the TLS session failed"));
        }
        self.conn.writer().write_all(data)
    }

    /// Queues a close_notify alert: ringress sends nothing more.
    pub(crate) fn close_notify(&mut self) {
        self.conn.send_close_notify();
    }

    /// Appends the records waiting to be sent to `out`; whether there were any.
    pub(crate) fn take_output(&mut self, out: &mut Vec<u8>) -> bool {
        let mut any = false;
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(n) => any |= n > 0,
                Err(_) => break,
            }
        }
        any
    }
}

/// An HTTP/2 upstream connection's pump moves its records through the session.
impl PumpTls for ClientSession {
    fn open(&mut self, data: &[u8], plain: &mut Vec<u8>) -> Result<bool, TlsFailure> {
        self.feed(data, plain)?;
        Ok(self.closed)
    }

    fn encrypt(&mut self, data: &[u8]) -> io::Result<()> {
        ClientSession::encrypt(self, data)
    }

    fn start_send(&mut self) -> io::Result<Option<(Vec<u8>, usize)>> {
        let mut out = std::mem::take(&mut self.spare);
        out.clear();
        if self.take_output(&mut out) {
            let len = out.len();
            Ok(Some((out, len)))
        } else {
            self.spare = out;
            Ok(None)
        }
    }

    fn finish_send(&mut self, buf: Vec<u8>) {
        self.spare = buf;
    }

    fn release_buffers(&mut self) {
        self.spare = Vec::new();
    }
}

/// Why the TLS handshake with an upstream failed.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    Io(io::Error),
    /// The upstream closed the connection during the handshake.
    Closed,
    Tls(rustls::Error),
    TimedOut,
}

impl HandshakeError {
    /// Envoy's transport failure reason for it (`TLS_error:|...:TLS_error_end`), or
    /// what happened to the socket.
    pub(crate) fn reason(&self) -> String {
        match self {
            HandshakeError::Io(e) => e.to_string(),
            HandshakeError::Closed => {
                "the upstream closed the connection during the TLS handshake".to_owned()
            }
            HandshakeError::Tls(e) => envoy_reason(e),
            HandshakeError::TimedOut => "the TLS handshake timed out".to_owned(),
        }
    }
}

/// Runs the handshake of `session` over `tcp` within `limit`; plaintext the upstream
/// sent with its last handshake flight goes to `plain`.
pub(crate) async fn handshake(
    tcp: &TcpStream,
    session: &mut ClientSession,
    plain: &mut Vec<u8>,
    limit: Duration,
) -> Result<(), HandshakeError> {
    let run = async {
        let mut out = Vec::new();
        loop {
            out.clear();
            if session.take_output(&mut out) {
                let (sent, back) = tcp.send_all(std::mem::take(&mut out)).await;
                out = back;
                sent.map_err(HandshakeError::Io)?;
            }
            if !session.is_handshaking() {
                return Ok(());
            }
            let data = tcp.recv().await.map_err(HandshakeError::Io)?;
            if data.is_empty() {
                return Err(HandshakeError::Closed);
            }
            let taken = session.feed(&data, plain);
            if let Err(e) = taken {
                // The alert rustls prepared goes out before the close.
                out.clear();
                if session.take_output(&mut out) {
                    let _ = tcp.send_all(std::mem::take(&mut out)).await;
                }
                return Err(HandshakeError::Tls(e));
            }
        }
    };
    match uring::timeout(limit, run).await {
        Ok(result) => result,
        Err(_) => Err(HandshakeError::TimedOut),
    }
}

/// An HTTP/1.1 upstream connection over TLS: what `UpstreamStream` needs of a
/// transport, in plaintext.
pub(crate) struct TlsUpstream {
    tcp: TcpStream,
    state: RefCell<TlsState>,
}

struct TlsState {
    session: ClientSession,
    /// Plaintext received and not yet handed out.
    plain: Vec<u8>,
}

impl TlsUpstream {
    /// `tcp` after `session`'s handshake, with the plaintext that came with it.
    pub(crate) fn new(tcp: TcpStream, session: ClientSession, plain: Vec<u8>) -> TlsUpstream {
        TlsUpstream {
            tcp,
            state: RefCell::new(TlsState { session, plain }),
        }
    }

    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Decrypts `data` (empty: the upstream closed); `Some` when there is something
    /// to hand out: plaintext, or the end (empty).
    fn take_received(&self, data: &RecvBuf) -> Option<io::Result<Vec<u8>>> {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        if data.is_empty() {
            return Some(Ok(std::mem::take(&mut state.plain)));
        }
        if let Err(e) = state.session.feed(data, &mut state.plain) {
            return Some(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
        }
        if !state.plain.is_empty() || state.session.peer_closed() {
            return Some(Ok(std::mem::take(&mut state.plain)));
        }
        None
    }

    /// Plaintext waiting, or the end the upstream's close_notify announced.
    fn waiting(&self) -> Option<Vec<u8>> {
        let mut state = self.state.borrow_mut();
        if !state.plain.is_empty() || state.session.peer_closed() {
            return Some(std::mem::take(&mut state.plain));
        }
        None
    }

    /// The next plaintext of the response; empty at its end. Cancel safe: a dropped
    /// socket receive loses nothing, and decryption happens after it completes.
    pub(crate) async fn recv(&self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(plain) = self.waiting() {
                return Ok(plain);
            }
            let data = self.tcp.recv().await?;
            if let Some(result) = self.take_received(&data) {
                return result;
            }
        }
    }

    /// What a receive would give at once: `None` when nothing came, or only records
    /// without plaintext (a TLS 1.3 session ticket).
    pub(crate) fn try_recv(&self) -> Option<io::Result<Vec<u8>>> {
        if let Some(plain) = self.waiting() {
            return Some(Ok(plain));
        }
        match self.tcp.try_recv()? {
            Ok(data) => self.take_received(&data),
            Err(e) => Some(Err(e)),
        }
    }

    /// Sends close_notify, then shuts the socket's write side (the upstream may go
    /// on sending).
    pub(crate) async fn shutdown_write(&self) -> io::Result<()> {
        let mut records = Vec::new();
        {
            let mut state = self.state.borrow_mut();
            state.session.close_notify();
            state.session.take_output(&mut records);
        }
        let (sent, _) = self.tcp.send_all(records).await;
        sent?;
        self.tcp.shutdown_write()
    }

    /// Encrypts and sends `buf` whole, and gives it back.
    pub(crate) async fn send_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        // The records go out of the shard's buffer pool and back to it: a pooled
        // connection holds none.
        let mut records = buffers::take();
        let encrypted = {
            let mut state = self.state.borrow_mut();
            let encrypted = state.session.encrypt(&buf);
            state.session.take_output(&mut records);
            encrypted
        };
        if let Err(e) = encrypted {
            buffers::give(&mut records);
            return (Err(e), buf);
        }
        let (sent, mut records) = self.tcp.send_all(records).await;
        buffers::give(&mut records);
        (sent, buf)
    }
}

/// `TLS_error:|CODE:SSL routines:OPENSSL_internal:NAME:TLS_error_end`, as Envoy
/// prints BoringSSL's errors.
fn envoy_tls_error(code: u32, name: &str) -> String {
    format!("TLS_error:|{code}:SSL routines:OPENSSL_internal:{name}:TLS_error_end")
}

/// Envoy's transport failure reason for a rustls handshake error: the BoringSSL
/// error Envoy would log in the same case (a certificate that does not verify is
/// CERTIFICATE_VERIFY_FAILED, an alert from the upstream its `*_ALERT_*` name), and
/// rustls' own description where BoringSSL has no counterpart.
pub(crate) fn envoy_reason(error: &rustls::Error) -> String {
    // BoringSSL: ERR_LIB_SSL (16) << 24 | reason; alert reasons are 1000 + alert.
    const SSL: u32 = 16 << 24;
    match error {
        // Whatever webpki found (unknown issuer, expired, another name, revoked).
        rustls::Error::InvalidCertificate(_) => {
            envoy_tls_error(SSL + 125, "CERTIFICATE_VERIFY_FAILED")
        }
        rustls::Error::AlertReceived(alert) => {
            let name = match alert {
                AlertDescription::HandshakeFailure => "SSLV3_ALERT_HANDSHAKE_FAILURE",
                AlertDescription::BadCertificate => "SSLV3_ALERT_BAD_CERTIFICATE",
                AlertDescription::CertificateUnknown => "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
                AlertDescription::CertificateExpired => "SSLV3_ALERT_CERTIFICATE_EXPIRED",
                AlertDescription::UnknownCA => "TLSV1_ALERT_UNKNOWN_CA",
                AlertDescription::AccessDenied => "TLSV1_ALERT_ACCESS_DENIED",
                AlertDescription::DecryptError => "TLSV1_ALERT_DECRYPT_ERROR",
                AlertDescription::ProtocolVersion => "TLSV1_ALERT_PROTOCOL_VERSION",
                AlertDescription::InternalError => "TLSV1_ALERT_INTERNAL_ERROR",
                AlertDescription::UnrecognisedName => "TLSV1_ALERT_UNRECOGNIZED_NAME",
                AlertDescription::CertificateRequired => "TLSV13_ALERT_CERTIFICATE_REQUIRED",
                AlertDescription::NoApplicationProtocol => "TLSV1_ALERT_NO_APPLICATION_PROTOCOL",
                _ => return format!("TLS_error:|{error}:TLS_error_end"),
            };
            envoy_tls_error(SSL + 1000 + u32::from(u8::from(*alert)), name)
        }
        // Not TLS at all (a plain-text server answering): BoringSSL's
        // WRONG_VERSION_NUMBER.
        rustls::Error::InvalidMessage(_) => envoy_tls_error(SSL + 247, "WRONG_VERSION_NUMBER"),
        other => format!("TLS_error:|{other}:TLS_error_end"),
    }
}

#[cfg(test)]
mod tests {
    use rustls::CertificateError;

    use super::*;

    #[test]
    fn reasons_are_envoys() {
        let e = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(
            envoy_reason(&e),
            "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end"
        );
        let e = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert_eq!(
            envoy_reason(&e),
            "TLS_error:|268436572:SSL routines:OPENSSL_internal:TLSV13_ALERT_CERTIFICATE_REQUIRED:TLS_error_end"
        );
    }
}
