//! Size limits of the HTTP/1.1 parsers, checked while a head or a chunked body is read
//! from a client or an upstream, before anything is routed or forwarded.
//!
//! Each limit is enforced where its parser lives (`request.rs` and `response.rs` for
//! heads, `body.rs` for chunked framing) and tested at its exact boundary there.

/// Largest request or response head (request/status line, header lines and the empty
/// line), in bytes. A head of exactly this size is accepted; one byte more gives
/// [`HttpError::HeadTooLarge`](super::HttpError::HeadTooLarge) (431 for a client).
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most header lines in one head. Exactly this many are accepted; one more gives
/// [`HttpError::TooManyHeaders`](super::HttpError::TooManyHeaders) (431 for a client).
pub(crate) const MAX_HEADERS: usize = 100;

/// Longest chunk-size line of a chunked body (hex size, extensions, CRLF included).
/// Longer lines give [`HttpError::ChunkLineTooLong`](super::HttpError::ChunkLineTooLong).
pub(crate) const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Largest chunk of a chunked body, in bytes: 2^31 - 1, so that no upstream or
/// client parsing sizes into 32 bits can misread one. A larger size gives
/// [`HttpError::ChunkTooLarge`](super::HttpError::ChunkTooLarge).
pub(crate) const MAX_CHUNK_SIZE: u64 = (1 << 31) - 1;

/// Largest trailer section of a chunked body (every trailer line and the final CRLF).
/// Larger sections give [`HttpError::TrailersTooLarge`](super::HttpError::TrailersTooLarge).
pub(crate) const MAX_TRAILER_BYTES: usize = 16 * 1024;
