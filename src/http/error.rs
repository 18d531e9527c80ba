//! Everything that can be wrong with an HTTP/1.1 head or body that ringress reads, and
//! the status code a client gets for it. Produced by the parsers (`request.rs`,
//! `response.rs`) and the body framer (`body.rs`); the proxy answers a client with
//! [`HttpError::status`] and an upstream's malformed response with 502.

use thiserror::Error;

use super::limits::{
    MAX_CHUNK_LINE, MAX_CHUNK_SIZE, MAX_HEAD_BYTES, MAX_HEADERS, MAX_TRAILER_BYTES,
};

/// Why a head or body was refused. Every variant closes the connection: after a framing
/// error nothing on it can be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HttpError {
    /// The bytes are not an HTTP/1.1 head; `part` names where (request line, header
    /// name, header value, line ending, status code).
    #[error("malformed HTTP head: invalid {part}")]
    Malformed { part: &'static str },
    /// The head did not end within [`MAX_HEAD_BYTES`].
    #[error("HTTP head is larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header lines.
    #[error("HTTP head has more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    /// A version other than HTTP/1.0 and HTTP/1.1.
    #[error("unsupported HTTP version (only HTTP/1.0 and HTTP/1.1 are served)")]
    UnsupportedVersion,
    /// The request target is neither origin-form (`/path`), absolute-form
    /// (`http://host/path`) nor `*` for OPTIONS.
    #[error("invalid request target {target:?}")]
    InvalidTarget { target: String },
    /// `CONNECT` tunnels are not offered by ringress.
    #[error("method CONNECT is not supported")]
    ConnectNotSupported,
    /// An HTTP/1.1 request without a Host header.
    #[error("HTTP/1.1 request has no Host header")]
    MissingHost,
    /// More than one Host header.
    #[error("request has more than one Host header")]
    DuplicateHost,
    /// A Host header (or absolute-form authority) that is not `name[:port]`,
    /// `a.b.c.d[:port]` or `[v6][:port]`.
    #[error("invalid Host {value:?}")]
    InvalidHost { value: String },
    /// A Content-Length that is not a plain decimal number fitting in 64 bits.
    #[error("invalid Content-Length {value:?}")]
    InvalidContentLength { value: String },
    /// Two Content-Length headers with different values.
    #[error("conflicting Content-Length headers {first} and {second}")]
    ConflictingContentLength { first: u64, second: u64 },
    /// Both Content-Length and Transfer-Encoding: the body length would be ambiguous.
    #[error("both Content-Length and Transfer-Encoding are present")]
    ContentLengthWithTransferEncoding,
    /// A Transfer-Encoding other than `chunked` (requests) or a coding list that does
    /// not end in exactly one `chunked` (responses).
    #[error("unsupported Transfer-Encoding {value:?}")]
    UnsupportedTransferEncoding { value: String },
    /// Transfer-Encoding in an HTTP/1.0 message, whose framing is then unreliable.
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    TransferEncodingInHttp10,
    /// An Expect header other than `100-continue`.
    #[error("unsupported Expect {value:?}")]
    UnsupportedExpectation { value: String },
    /// A response status code outside 100..=999.
    #[error("invalid response status code {code}")]
    InvalidStatus { code: u16 },
    /// A 101 Switching Protocols response to a request that did not ask to switch.
    #[error("upstream switched protocols without being asked to")]
    UnexpectedSwitchingProtocols,
    /// A chunk-size line with a byte that is not a hex digit where one is required.
    #[error("invalid chunk size: unexpected byte 0x{byte:02x}")]
    InvalidChunkSize { byte: u8 },
    /// A chunk larger than [`MAX_CHUNK_SIZE`].
    #[error("chunk is larger than {MAX_CHUNK_SIZE} bytes")]
    ChunkTooLarge,
    /// A chunk-size line longer than [`MAX_CHUNK_LINE`].
    #[error("chunk-size line is longer than {MAX_CHUNK_LINE} bytes")]
    ChunkLineTooLong,
    /// A control byte in a chunk extension.
    #[error("invalid chunk extension: byte 0x{byte:02x}")]
    InvalidChunkExtension { byte: u8 },
    /// A chunk line or chunk data not ended by CRLF (a bare LF or CR included).
    #[error("chunked body: expected {expected} but found byte 0x{found:02x}")]
    ChunkMissingCrlf { expected: &'static str, found: u8 },
    /// A trailer line that is not `name: value`.
    #[error("invalid trailer line: unexpected byte 0x{byte:02x}")]
    InvalidTrailer { byte: u8 },
    /// A trailer section larger than [`MAX_TRAILER_BYTES`].
    #[error("trailer section is larger than {MAX_TRAILER_BYTES} bytes")]
    TrailersTooLarge,
    /// The connection ended before the body did.
    #[error("connection closed before the end of the body")]
    IncompleteBody,
    /// A request path that path normalisation refuses.
    #[error("invalid request path: {0}")]
    InvalidPath(super::PathError),
}

impl HttpError {
    /// The status code a client gets when its request fails this way. (An upstream
    /// response failing to parse is the proxy's 502, whatever this says.)
    pub(crate) fn status(&self) -> u16 {
        match self {
            Self::HeadTooLarge | Self::TooManyHeaders => 431,
            Self::UnsupportedVersion => 505,
            Self::ConnectNotSupported => 501,
            Self::UnsupportedExpectation { .. } => 417,
            Self::UnexpectedSwitchingProtocols | Self::InvalidStatus { .. } => 502,
            Self::Malformed { .. }
            | Self::InvalidTarget { .. }
            | Self::MissingHost
            | Self::DuplicateHost
            | Self::InvalidHost { .. }
            | Self::InvalidContentLength { .. }
            | Self::ConflictingContentLength { .. }
            | Self::ContentLengthWithTransferEncoding
            | Self::UnsupportedTransferEncoding { .. }
            | Self::TransferEncodingInHttp10
            | Self::InvalidChunkSize { .. }
            | Self::ChunkTooLarge
            | Self::ChunkLineTooLong
            | Self::InvalidChunkExtension { .. }
            | Self::ChunkMissingCrlf { .. }
            | Self::InvalidTrailer { .. }
            | Self::TrailersTooLarge
            | Self::IncompleteBody
            | Self::InvalidPath(_) => 400,
        }
    }

    /// Maps an `httparse` error, naming the part of the head it concerns.
    pub(crate) fn from_httparse(e: httparse::Error) -> Self {
        let part = match e {
            httparse::Error::TooManyHeaders => return Self::TooManyHeaders,
            httparse::Error::Version => return Self::UnsupportedVersion,
            httparse::Error::HeaderName => "header name",
            httparse::Error::HeaderValue => "header value",
            httparse::Error::NewLine => "line ending",
            httparse::Error::Status => "status line",
            httparse::Error::Token => "request line (method or target)",
        };
        Self::Malformed { part }
    }
}

/// Shows at most 64 bytes of an offending value in an error message.
pub(crate) fn shown(value: &[u8]) -> String {
    let cut = value.get(..64).unwrap_or(value);
    String::from_utf8_lossy(cut).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_kind_of_failure() {
        assert_eq!(
            HttpError::Malformed {
                part: "header name"
            }
            .status(),
            400
        );
        assert_eq!(HttpError::HeadTooLarge.status(), 431);
        assert_eq!(HttpError::TooManyHeaders.status(), 431);
        assert_eq!(HttpError::UnsupportedVersion.status(), 505);
        assert_eq!(HttpError::ContentLengthWithTransferEncoding.status(), 400);
        assert_eq!(HttpError::ChunkTooLarge.status(), 400);
        assert_eq!(HttpError::ConnectNotSupported.status(), 501);
    }

    #[test]
    fn shown_values_are_truncated() {
        assert_eq!(shown(&[b'a'; 100]).len(), 64);
        assert_eq!(shown(b"x\xffy"), "x\u{fffd}y");
    }
}
