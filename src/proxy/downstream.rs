//! The client side of a connection: plain TCP, or TLS driven sans-IO over the ring.
//!
//! For TLS the ClientHello is read first with rustls' `Acceptor`, the listener's
//! [`SniSelector`] picks the Gateway server for its SNI, and the connection continues
//! with that server's own `ServerConfig` (its certificate, its client-certificate
//! policy). A name no server covers gets rustls' alert from [`tls::reject_config`].
//! Plaintext is appended to the caller's buffer; ciphertext moves between rustls and
//! the socket in owned buffers the ring can hold.

use std::io::{self, BufRead, Write};
use std::sync::Arc;

use rustls::ServerConnection;
use rustls::server::Acceptor;

use crate::config::ServerTls;
use crate::snapshot::ListenerSpec;
use crate::tls::{self, SniSelector};
use crate::uring::TcpStream;

use super::buffers;

/// How many plaintext bytes one read takes from rustls at most (whole decrypted
/// records are taken, so a read may end a little above it).
const PLAINTEXT_READ: usize = 16 * 1024;

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("client closed the connection during the handshake")]
    Closed,
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client named {0:?}, which no server on this port serves")]
    UnknownServerName(Option<String>),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A client connection, plain or TLS.
pub enum Downstream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

/// rustls' server connection over a ring socket.
pub struct TlsStream {
    tcp: TcpStream,
    conn: ServerConnection,
    /// Ciphertext being sent: a pooled buffer, kept while the connection is busy (a
    /// large response reuses it for every chunk) and given back when it goes idle.
    out: Vec<u8>,
    /// The TLS settings of the server the ClientHello chose.
    settings: Option<Arc<ServerTls>>,
    /// The name the ClientHello asked for (SNI).
    server_name: Option<Box<str>>,
    /// The verified client certificate as `x-forwarded-client-cert` carries it;
    /// computed at the first request that needs it.
    identity: Option<Option<String>>,
}

impl Downstream {
    /// Reads the ClientHello, chooses the server by SNI and starts its handshake. The
    /// handshake itself completes as the first request is read.
    pub async fn accept_tls(
        tcp: TcpStream,
        listener: &ListenerSpec,
        selector: &SniSelector,
    ) -> Result<Downstream, HandshakeError> {
        let mut acceptor = Acceptor::default();
        let accepted = loop {
            let data = tcp.recv().await?;
            if data.is_empty() {
                return Err(HandshakeError::Closed);
            }
            let mut rest: &[u8] = &data;
            while !rest.is_empty() {
                if acceptor.read_tls(&mut rest)? == 0 {
                    break;
                }
            }
            match acceptor.accept() {
                Ok(None) => continue,
                Ok(Some(accepted)) => break accepted,
                Err((error, mut alert)) => {
                    let mut out = Vec::new();
                    let _ = alert.write_all(&mut out);
                    let _ = tcp.send_all(out).await;
                    return Err(error.into());
                }
            }
        };
        let name = accepted.client_hello().server_name().map(str::to_owned);
        let (server, config) = match selector.select(name.as_deref()) {
            Some((server, config)) => (Some(server), config.clone()),
            None => (None, tls::reject_config()),
        };
        let conn = match accepted.into_connection(config) {
            Ok(conn) => conn,
            Err((error, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                let _ = tcp.send_all(out).await;
                return Err(error.into());
            }
        };
        let mut stream = TlsStream {
            tcp,
            conn,
            out: Vec::new(),
            settings: server
                .and_then(|i| listener.certificates.get(i))
                .map(|c| c.settings.clone()),
            server_name: name.as_deref().map(Box::from),
            identity: None,
        };
        if server.is_none() {
            // The reject config fails the handshake with an alert; send it and stop.
            let _ = stream.conn.process_new_packets();
            let _ = stream.flush().await;
            return Err(HandshakeError::UnknownServerName(name));
        }
        stream.flush().await?;
        Ok(Downstream::Tls(Box::new(stream)))
    }

    /// Appends plaintext from the client to `buf`; `Ok(0)` means the client is done.
    pub async fn read(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
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
        }
    }

    /// Sends `data` to the client, whole. The buffer comes back for reuse.
    pub async fn write_all(&mut self, data: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            Downstream::Plain(tcp) => tcp.send_all(data).await,
            Downstream::Tls(tls) => {
                let result = match tls.conn.writer().write_all(&data) {
                    Ok(()) => tls.flush().await,
                    Err(e) => Err(e),
                };
                (result, data)
            }
        }
    }

    /// Gives the connection's send buffer back to the shard's pool (between requests).
    pub fn release_buffers(&mut self) {
        if let Downstream::Tls(tls) = self {
            buffers::give(&mut tls.out);
        }
    }

    /// Ends the connection politely: a TLS close_notify, then the write side shut.
    pub async fn close(&mut self) {
        match self {
            Downstream::Plain(tcp) => {
                let _ = tcp.shutdown_write().await;
            }
            Downstream::Tls(tls) => {
                tls.conn.send_close_notify();
                let _ = tls.flush().await;
                let _ = tls.tcp.shutdown_write().await;
            }
        }
    }

    /// The client's verified certificate in `x-forwarded-client-cert` form, when the
    /// connection is mutual TLS and the client presented one.
    pub fn client_identity(&mut self) -> Option<&str> {
        match self {
            Downstream::Plain(_) => None,
            Downstream::Tls(tls) => tls
                .identity
                .get_or_insert_with(|| {
                    let leaf = tls.conn.peer_certificates()?.first()?;
                    tls::forwarded_client_cert(leaf)
                        .inspect_err(
                            |e| tracing::debug!(error = %e, "client certificate unreadable"),
                        )
                        .ok()
                })
                .as_deref(),
        }
    }

    /// Whether the handshake's SNI was `host` (a request for the very name its
    /// connection was made for).
    pub fn is_server_name(&self, host: &str) -> bool {
        matches!(self, Downstream::Tls(tls)
            if tls.server_name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(host)))
    }

    /// The TLS settings of the server the handshake chose (`None` for plain TCP).
    pub fn server_settings(&self) -> Option<&ServerTls> {
        match self {
            Downstream::Plain(_) => None,
            Downstream::Tls(tls) => tls.settings.as_deref(),
        }
    }

    /// The negotiated TLS version once the handshake completed; `None` for plain TCP
    /// or a handshake still going on.
    pub fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        match self {
            Downstream::Tls(tls) if !tls.conn.is_handshaking() => tls.conn.protocol_version(),
            _ => None,
        }
    }

    /// Whether a TLS handshake has started and not completed.
    pub fn is_handshaking(&self) -> bool {
        matches!(self, Downstream::Tls(tls) if tls.conn.is_handshaking())
    }

    /// `https` or `http`, for `x-forwarded-proto` and route `scheme` matches.
    pub fn scheme(&self) -> &'static str {
        match self {
            Downstream::Plain(_) => "http",
            Downstream::Tls(_) => "https",
        }
    }
}

impl TlsStream {
    async fn read(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        loop {
            // Decrypted records are copied straight from rustls into `buf`, which
            // needs capacity only once there is plaintext to hold.
            let mut taken = 0;
            let mut reader = self.conn.reader();
            let ended = loop {
                match reader.fill_buf() {
                    Ok([]) => break Ok(true), // close_notify received
                    Ok(chunk) => {
                        let n = chunk.len();
                        buffers::ensure(buf);
                        buf.extend_from_slice(chunk);
                        reader.consume(n);
                        taken += n;
                        if taken >= PLAINTEXT_READ {
                            break Ok(false);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
                    Err(e) => break Err(e),
                }
            };
            match ended {
                Ok(_) if taken > 0 => return Ok(taken),
                Ok(true) => return Ok(0),
                Ok(false) => {}
                Err(e) => return Err(e),
            }
            if self.conn.wants_write() {
                self.flush().await?;
            }
            let data = self.tcp.recv().await?;
            if data.is_empty() {
                return Ok(0);
            }
            // Alternate reading and processing so rustls' buffers never overflow.
            let mut rest: &[u8] = &data;
            while !rest.is_empty() {
                self.conn.read_tls(&mut rest)?;
                if let Err(error) = self.conn.process_new_packets() {
                    // Tell the client why before giving up (rustls queued an alert).
                    let _ = self.flush().await;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, error));
                }
            }
        }
    }

    /// Sends every byte of ciphertext rustls has queued.
    async fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            let mut out = std::mem::take(&mut self.out);
            buffers::ensure(&mut out);
            out.clear();
            self.conn.write_tls(&mut out)?;
            let (result, out) = self.tcp.send_all(out).await;
            self.out = out;
            result?;
        }
        Ok(())
    }
}
