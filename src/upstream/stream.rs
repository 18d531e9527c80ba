//! What one request to an upstream travels over: a TCP connection speaking HTTP/1.1
//! (in plain text or over TLS, [`TlsUpstream`]), or one stream of a multiplexed
//! HTTP/2 connection ([`H2Exchange`]). The forwarding
//! code writes an HTTP/1.1 request and reads an HTTP/1.1 response either way; the
//! HTTP/2 stream translates both, so every route feature works for both protocols.

use std::io;
use std::ops::Deref;
use std::time::Duration;

use super::http2::H2Exchange;
use crate::tls::client_session::TlsUpstream;
use crate::uring::{RecvBuf, TcpStream};

/// The transport of an [`super::UpstreamConn`].
pub(crate) enum UpstreamStream {
    Tcp(TcpStream),
    /// HTTP/1.1 over TLS (a DestinationRule's `tls`).
    Tls(Box<TlsUpstream>),
    H2(Box<H2Exchange>),
}

/// Bytes received from an upstream: a ring buffer of the TCP connection's, or the
/// HTTP/1.1 bytes an HTTP/2 stream was translated into.
pub(crate) enum Received {
    Ring(RecvBuf),
    Owned(Vec<u8>),
}

impl Deref for Received {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Received::Ring(buf) => buf,
            Received::Owned(bytes) => bytes,
        }
    }
}

impl UpstreamStream {
    /// Whether it is a connection of its own (HTTP/1.1), which a pool may keep.
    pub(crate) fn is_connection(&self) -> bool {
        !matches!(self, UpstreamStream::H2(_))
    }

    /// How long a send may wait without progress (a full socket, a closed HTTP/2
    /// flow-control window).
    pub(crate) fn set_send_timeout(&self, limit: Duration) {
        match self {
            UpstreamStream::Tcp(tcp) => tcp.set_send_timeout(limit),
            UpstreamStream::Tls(tls) => tls.tcp().set_send_timeout(limit),
            UpstreamStream::H2(exchange) => exchange.set_send_timeout(limit),
        }
    }

    /// The next bytes of the response; empty at its end. Cancel safe: what a
    /// dropped receive had got is kept for the next.
    pub(crate) async fn recv(&self) -> io::Result<Received> {
        match self {
            UpstreamStream::Tcp(tcp) => tcp.recv().await.map(Received::Ring),
            UpstreamStream::Tls(tls) => tls.recv().await.map(Received::Owned),
            UpstreamStream::H2(exchange) => exchange.recv().await.map(Received::Owned),
        }
    }

    /// What a receive would give at once, if anything.
    pub(crate) fn try_recv(&self) -> Option<io::Result<Received>> {
        match self {
            UpstreamStream::Tcp(tcp) => tcp.try_recv().map(|r| r.map(Received::Ring)),
            UpstreamStream::Tls(tls) => tls.try_recv().map(|r| r.map(Received::Owned)),
            // Each stream's receive is polled by its own task: nothing is gathered.
            UpstreamStream::H2(_) => None,
        }
    }

    /// Ends what ringress sends on a connection of its own (a tunnel's half-close):
    /// a FIN, after a TLS close_notify over TLS. An HTTP/2 stream is never a
    /// tunnel's upstream.
    pub(crate) async fn shutdown_write(&self) -> io::Result<()> {
        match self {
            UpstreamStream::Tcp(tcp) => tcp.shutdown_write(),
            UpstreamStream::Tls(tls) => tls.shutdown_write().await,
            UpstreamStream::H2(_) => Err(io::Error::other("a tunnel over an HTTP/2 stream")),
        }
    }

    /// Sends `buf` whole (request bytes, HTTP/1.1), and gives it back.
    pub(crate) async fn send_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            UpstreamStream::Tcp(tcp) => tcp.send_all(buf).await,
            UpstreamStream::Tls(tls) => tls.send_all(buf).await,
            UpstreamStream::H2(exchange) => {
                let sent = exchange.send(&buf).await;
                (sent, buf)
            }
        }
    }
}
