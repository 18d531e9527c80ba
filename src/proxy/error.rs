//! Why a request could not be proxied, which side failed, and what the client is told.
//!
//! Every failure on the request path becomes a [`ProxyError`]; [`ProxyError::status`]
//! is the one place that decides the status code (or that the connection is simply
//! closed because the client is gone or the response has already begun).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::Ending;
use crate::http::HttpError;
use crate::upstream::ConnectError;

/// Which party a failure belongs to, for logs and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Downstream,
    Upstream,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("client connection: {0}")]
    Client(io::Error),
    #[error("client closed the connection mid-request")]
    ClientClosed,
    #[error("client sent an invalid request: {0}")]
    BadRequest(HttpError),
    #[error("client sent no complete request within {0:?}")]
    ClientTimeout(Duration),
    #[error("no endpoint to send the request to (cluster {0} has none)")]
    NoEndpoint(String),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("upstream {addr} closed the connection before responding")]
    UpstreamClosed { addr: SocketAddr, reused: bool },
    #[error("upstream {addr}: {source}")]
    UpstreamIo { addr: SocketAddr, source: io::Error },
    #[error("upstream {addr} sent an invalid response: {source}")]
    BadResponse { addr: SocketAddr, source: HttpError },
    #[error("upstream {addr} did not respond within {after:?}")]
    UpstreamTimeout { addr: SocketAddr, after: Duration },
    #[error("upstream {addr} read none of the request body for {after:?}")]
    UpstreamStalled { addr: SocketAddr, after: Duration },
    #[error("response from {addr} aborted after it began: {reason}")]
    ResponseAborted { addr: SocketAddr, reason: String },
}

impl ProxyError {
    pub(crate) fn side(&self) -> Side {
        match self {
            ProxyError::Client(_)
            | ProxyError::ClientClosed
            | ProxyError::BadRequest(_)
            | ProxyError::ClientTimeout(_) => Side::Downstream,
            _ => Side::Upstream,
        }
    }

    /// How the client connection ends after this failure: reset when a response was
    /// cut short (it must not look complete: the upstream failed, or the client
    /// stopped reading it), lingering after an error response or a TLS alert (the
    /// client may have sent more than was read), plainly when the client is gone.
    pub(crate) fn ending(&self) -> Ending {
        match self {
            ProxyError::ResponseAborted { .. } => Ending::Abort,
            ProxyError::Client(e) if e.kind() == io::ErrorKind::TimedOut => Ending::Abort,
            ProxyError::Client(e) if e.kind() == io::ErrorKind::InvalidData => Ending::Lingering,
            ProxyError::Client(_) | ProxyError::ClientClosed => Ending::Clean,
            _ => Ending::Lingering,
        }
    }

    /// Envoy's response flag and response code details for this failure, as the
    /// access log prints them (`%RESPONSE_FLAGS%`, `%RESPONSE_CODE_DETAILS%`).
    pub(crate) fn log_reason(&self) -> (&'static str, &'static str) {
        use crate::upstream::ConnectError;
        match self {
            ProxyError::Client(e) if e.kind() == io::ErrorKind::TimedOut => {
                ("DC", "downstream_stopped_reading")
            }
            ProxyError::Client(_) | ProxyError::ClientClosed => {
                ("DC", "downstream_remote_disconnect")
            }
            ProxyError::BadRequest(_) => ("DPE", "http1.codec_error"),
            ProxyError::ClientTimeout(_) => ("SI", "stream_idle_timeout"),
            ProxyError::NoEndpoint(_) => ("UH", "no_healthy_upstream"),
            ProxyError::Connect(ConnectError::Failed { .. } | ConnectError::Tls { .. }) => (
                "UF",
                "upstream_reset_before_response_started{remote_connection_failure}",
            ),
            ProxyError::Connect(ConnectError::TimedOut { .. }) => (
                "UF",
                "upstream_reset_before_response_started{connection_timeout}",
            ),
            ProxyError::Connect(
                ConnectError::Overflow { .. }
                | ConnectError::NoSlot { .. }
                | ConnectError::TooManyRequests { .. },
            ) => ("UO", "upstream_reset_before_response_started{overflow}"),
            ProxyError::UpstreamClosed { .. } => (
                "UC",
                "upstream_reset_before_response_started{connection_termination}",
            ),
            ProxyError::UpstreamIo { .. } => {
                ("UR", "upstream_reset_before_response_started{remote_reset}")
            }
            ProxyError::BadResponse { .. } => (
                "UPE",
                "upstream_reset_before_response_started{protocol_error}",
            ),
            ProxyError::UpstreamTimeout { .. } | ProxyError::UpstreamStalled { .. } => {
                ("UT", "upstream_response_timeout")
            }
            ProxyError::ResponseAborted { .. } => {
                ("UR", "upstream_reset_after_response_started{remote_reset}")
            }
        }
    }

    /// The body of the answer when it is not the status line's reason: Envoy's own
    /// text, which clients match on, for an empty cluster (`no healthy upstream`),
    /// an overflow of its connection or request limits, and a failed upstream TLS
    /// handshake.
    pub(crate) fn local_reply_body(&self) -> Option<String> {
        match self {
            ProxyError::NoEndpoint(_) => Some("no healthy upstream".to_owned()),
            ProxyError::Connect(e) if e.is_overflow() => Some(
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
                    .to_owned(),
            ),
            ProxyError::Connect(e) => e.local_reply_body(),
            _ => None,
        }
    }

    /// The status to answer with, or `None` when the only thing left to do is to
    /// close the client connection (the client is gone, or a response has begun and
    /// must not be presented as complete).
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            ProxyError::Client(_) | ProxyError::ClientClosed => None,
            ProxyError::ResponseAborted { .. } => None,
            ProxyError::BadRequest(e) => Some(e.status()),
            ProxyError::ClientTimeout(_) => Some(408),
            ProxyError::NoEndpoint(_) | ProxyError::Connect(_) => Some(503),
            ProxyError::UpstreamClosed { .. }
            | ProxyError::UpstreamIo { .. }
            | ProxyError::BadResponse { .. } => Some(502),
            ProxyError::UpstreamTimeout { .. } | ProxyError::UpstreamStalled { .. } => Some(504),
        }
    }
}
