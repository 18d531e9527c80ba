//! Body framing: after a head, tracks where its body ends while the proxy forwards it,
//! so the next pipelined request (or the next response on a pooled upstream
//! connection) starts at the right byte.
//!
//! A chunked body is re-serialised, never forwarded as received
//! ([`BodyFramer::forward`]): each size line is written anew as lowercase hex without
//! leading zeros, extensions and whitespace dropped, so no two parsers downstream can
//! read it two ways. Size lines must follow RFC 9112 7.1 exactly (whitespace only
//! before a `;`, extensions `name[=token|"quoted"]`); a chunk is at most
//! [`MAX_CHUNK_SIZE`] bytes, so no upstream can misread its size in 32 bits. Chunk
//! data, its CRLF and the validated trailers are passed on as they are: when an
//! upstream already writes canonical size lines (most do), the output is the input,
//! one contiguous slice per call. Every line must end in CRLF (a bare LF is refused).

use super::error::HttpError;
use super::fields::is_token_byte;
use super::limits::{MAX_CHUNK_LINE, MAX_CHUNK_SIZE, MAX_TRAILER_BYTES};

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyKind {
    /// No body (no framing headers on a request; HEAD, 1xx, 204 and 304 responses).
    #[default]
    None,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A response without Content-Length or chunked: the body ends when the upstream
    /// closes the connection.
    UntilClose,
}

/// Tracks the end of one body over any split of its bytes, in constant memory.
#[derive(Debug, Clone)]
pub struct BodyFramer {
    state: State,
    /// Bytes of a chunked body's trailer section read so far, kept past its end.
    trailer: usize,
}

#[derive(Debug, Clone)]
enum State {
    Length { remaining: u64 },
    Chunked(Chunked),
    UntilClose,
    Done,
    Failed(HttpError),
}

/// Where in a chunked body the next byte falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Reading the hex digits of a chunk size.
    SizeDigits,
    /// After the digits: whitespace, which only a `;` may follow.
    SizeSpace,
    /// After a `;`: whitespace, then an extension name.
    ExtNameStart,
    ExtName,
    /// After a name: whitespace, then `=` or `;`.
    ExtAfterName,
    /// After `=`: whitespace, then a token or a quoted string.
    ExtValueStart,
    ExtToken,
    ExtQuoted,
    /// After a backslash in a quoted string.
    ExtQuotedPair,
    /// After a value; `spaced` once whitespace followed it (then only `;` may come).
    ExtAfterValue {
        spaced: bool,
    },
    /// CR seen at the end of a size line.
    SizeLf,
    /// Inside chunk data.
    Data {
        remaining: u64,
    },
    /// Chunk data done; CR expected.
    DataCr,
    DataLf,
    /// At the start of a trailer line or of the final CRLF.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    /// CR of the final empty line seen.
    FinalLf,
}

impl Step {
    /// Whether this step is inside a chunk-size line.
    fn in_size_line(self) -> bool {
        matches!(
            self,
            Step::SizeDigits
                | Step::SizeSpace
                | Step::ExtNameStart
                | Step::ExtName
                | Step::ExtAfterName
                | Step::ExtValueStart
                | Step::ExtToken
                | Step::ExtQuoted
                | Step::ExtQuotedPair
                | Step::ExtAfterValue { .. }
                | Step::SizeLf
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Chunked {
    step: Step,
    size: u64,
    digits: usize,
    /// Bytes of the current size line so far.
    line: usize,
    /// The current size line is exactly how ringress writes one (forwarded as is).
    canonical: bool,
    /// Bytes of the trailer section so far.
    trailer: usize,
}

/// What a chunked body is turned into while it is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// Nothing: only the length is tracked.
    Nothing,
    /// The canonical chunked body ([`BodyFramer::forward`]).
    Canonical,
    /// The chunk data alone ([`BodyFramer::payload`]).
    Payload,
}

impl BodyFramer {
    pub fn new(kind: BodyKind) -> Self {
        let state = match kind {
            BodyKind::None | BodyKind::Length(0) => State::Done,
            BodyKind::Length(remaining) => State::Length { remaining },
            BodyKind::Chunked => State::Chunked(Chunked {
                step: Step::SizeDigits,
                size: 0,
                digits: 0,
                line: 0,
                canonical: true,
                trailer: 0,
            }),
            BodyKind::UntilClose => State::UntilClose,
        };
        Self { state, trailer: 0 }
    }

    /// Takes the next received bytes; returns how many of them belong to the body (the
    /// rest belongs to whatever follows it). Once an error is returned, every later
    /// call returns it again.
    pub fn advance(&mut self, data: &[u8]) -> Result<usize, HttpError> {
        self.advance_with(data, Output::Nothing, &mut |_| {})
    }

    /// Like [`advance`](Self::advance), and hands `emit` the bytes to forward for the
    /// body taken, in order: the same bytes for a length-delimited body, the
    /// re-serialised body for a chunked one (see the module doc). Consecutive input
    /// bytes come as one slice.
    pub(crate) fn forward(
        &mut self,
        data: &[u8],
        emit: &mut impl FnMut(&[u8]),
    ) -> Result<usize, HttpError> {
        self.advance_with(data, Output::Canonical, emit)
    }

    /// Like [`advance`](Self::advance), and also appends the body's payload (chunk data
    /// without sizes, extensions or trailers) to `payload`. Used when an upstream's
    /// chunked response goes to an HTTP/1.0 client, which cannot read chunked framing.
    pub(crate) fn payload(
        &mut self,
        data: &[u8],
        payload: &mut Vec<u8>,
    ) -> Result<usize, HttpError> {
        self.advance_with(data, Output::Payload, &mut |p| payload.extend_from_slice(p))
    }

    /// Like [`payload`](Self::payload), and also appends a chunked body's trailer
    /// section to `trailers`, its lines as received (`name: value` CRLF each, the
    /// final empty line left out): what HTTP/2 sends as a trailing HEADERS frame.
    pub(crate) fn payload_and_trailers(
        &mut self,
        data: &[u8],
        payload: &mut Vec<u8>,
        trailers: &mut Vec<u8>,
    ) -> Result<usize, HttpError> {
        let start = self.trailer;
        let used =
            self.advance_with(data, Output::Payload, &mut |p| payload.extend_from_slice(p))?;
        // The trailer section is the last thing before the end, and the bytes the
        // body took from `data` end with as many of its bytes as it grew by.
        let grown = self.trailer.saturating_sub(start);
        if grown > 0 {
            let section = &data[used.saturating_sub(grown)..used];
            let section = match self.is_done() {
                // The final CRLF counted too: it is not a trailer line.
                true => section.strip_suffix(b"\r\n").unwrap_or(section),
                false => section,
            };
            trailers.extend_from_slice(section);
        }
        Ok(used)
    }

    /// Whether the body has ended (never for [`BodyKind::UntilClose`]).
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Called when the connection ends: fine if the body was complete or runs until
    /// close, [`HttpError::IncompleteBody`] otherwise.
    #[cfg(test)]
    pub(crate) fn finish(&self) -> Result<(), HttpError> {
        match &self.state {
            State::Done | State::UntilClose => Ok(()),
            State::Failed(e) => Err(e.clone()),
            State::Length { .. } | State::Chunked(_) => Err(HttpError::IncompleteBody),
        }
    }

    fn advance_with(
        &mut self,
        data: &[u8],
        output: Output,
        emit: &mut impl FnMut(&[u8]),
    ) -> Result<usize, HttpError> {
        let emit_all = |bytes: &[u8], emit: &mut dyn FnMut(&[u8])| {
            if output != Output::Nothing && !bytes.is_empty() {
                emit(bytes);
            }
        };
        match &mut self.state {
            State::Done => Ok(0),
            State::Failed(e) => Err(e.clone()),
            State::UntilClose => {
                emit_all(data, emit);
                Ok(data.len())
            }
            State::Length { remaining } => {
                let take = clamp_len(*remaining, data.len());
                emit_all(data.get(..take).unwrap_or_default(), emit);
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.state = State::Done;
                }
                Ok(take)
            }
            State::Chunked(c) => match c.advance(data, output, emit) {
                Ok((used, done)) => {
                    self.trailer = c.trailer;
                    if done {
                        self.state = State::Done;
                    }
                    Ok(used)
                }
                Err(e) => {
                    self.state = State::Failed(e.clone());
                    Err(e)
                }
            },
        }
    }
}

/// The fields of a trailer section from [`BodyFramer::payload_and_trailers`], as
/// HTTP/2 sends them; `None` when there are none. The section was validated while
/// it was framed; an empty line (a split final CRLF) is skipped, and a field HTTP/2
/// cannot carry (an upper-case name) is dropped.
pub(crate) fn trailer_map(section: &[u8]) -> Option<::http::HeaderMap> {
    let mut map = ::http::HeaderMap::new();
    for line in section.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = ::http::HeaderName::from_bytes(&line[..colon]);
        let value = ::http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            map.append(name, value);
        }
    }
    (!map.is_empty()).then_some(map)
}

/// Appends `data` as one chunk of a chunked body, its size line as ringress writes
/// one.
pub(crate) fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    let mut line = [0; 18];
    out.extend_from_slice(size_line(data.len() as u64, &mut line));
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the last chunk of a chunked body and its trailer section: `trailers`
/// (HTTP/2's trailing fields), or none.
pub(crate) fn push_last_chunk(out: &mut Vec<u8>, trailers: Option<&::http::HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        super::rewrite::header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// `min(remaining, available)` as a usize.
fn clamp_len(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

/// Whitespace the chunk grammar allows (BWS).
fn is_bws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A byte of a quoted string's text (qdtext) or of a quoted pair's second half.
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

fn is_quoted_pair(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff)
}

/// The canonical size line of a chunk of `size` bytes: lowercase hex, CRLF.
fn size_line(size: u64, line: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = ((64 - size.leading_zeros()).div_ceil(4)).max(1) as usize;
    for (i, byte) in line[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *byte = HEX[((size >> shift) & 15) as usize];
    }
    line[digits] = b'\r';
    line[digits + 1] = b'\n';
    &line[..digits + 2]
}

impl Chunked {
    /// Returns bytes used and whether the body ended. In [`Output::Canonical`], input
    /// bytes are handed to `emit` in runs (`run` is where the current one started);
    /// a size line is held back until it is whole, then either stays in the run (it
    /// was canonical and began in this call) or is replaced by ringress's own.
    fn advance(
        &mut self,
        data: &[u8],
        output: Output,
        emit: &mut impl FnMut(&[u8]),
    ) -> Result<(usize, bool), HttpError> {
        let canonical = output == Output::Canonical;
        let mut run = 0;
        // Where the size line being read began in `data`, if it began in this call.
        let mut line_start = None;
        let mut i = 0;
        while let Some(&b) = data.get(i) {
            if let Step::Data { remaining } = self.step {
                let rest = data.get(i..).unwrap_or_default();
                let take = clamp_len(remaining, rest.len());
                if output == Output::Payload {
                    emit(rest.get(..take).unwrap_or_default());
                }
                i += take;
                let left = remaining - take as u64;
                self.step = if left == 0 {
                    Step::DataCr
                } else {
                    Step::Data { remaining: left }
                };
                continue;
            }
            if self.step == Step::SizeDigits && self.line == 0 {
                line_start = Some(i);
            }
            let was_in_line = self.step.in_size_line();
            i += 1;
            let done = self.step_byte(b)?;
            if canonical && was_in_line && !self.step.in_size_line() {
                // The size line just ended at `i`.
                match line_start.take() {
                    Some(_) if self.canonical => {}
                    start => {
                        let start = start.unwrap_or(0);
                        emit_run(emit, data, run, start);
                        let mut line = [0; 18];
                        emit(size_line(self.size, &mut line));
                        run = i;
                    }
                }
            }
            if done {
                if canonical {
                    emit_run(emit, data, run, i);
                }
                return Ok((i, true));
            }
        }
        if canonical {
            // A size line not yet whole stays back until it is (all of this call's
            // bytes since `run` when it began in an earlier one).
            let end = match self.step.in_size_line() && self.line > 0 {
                true => line_start.unwrap_or(run),
                false => i,
            };
            emit_run(emit, data, run, end);
        }
        Ok((i, false))
    }

    /// Consumes one framing byte; true when it was the body's last.
    fn step_byte(&mut self, b: u8) -> Result<bool, HttpError> {
        let crlf = |expected| HttpError::ChunkMissingCrlf { expected, found: b };
        let extension = HttpError::InvalidChunkExtension { byte: b };
        if self.step.in_size_line() {
            self.line += 1;
            // The CR and LF still to come count too.
            if self.line + 1 > MAX_CHUNK_LINE && self.step != Step::SizeLf {
                return Err(HttpError::ChunkLineTooLong);
            }
        }
        if matches!(
            self.step,
            Step::TrailerStart
                | Step::TrailerName
                | Step::TrailerValue
                | Step::TrailerLf
                | Step::FinalLf
        ) {
            self.trailer += 1;
            if self.trailer > MAX_TRAILER_BYTES {
                return Err(HttpError::TrailersTooLarge);
            }
        }
        self.step = match self.step {
            Step::SizeDigits => match hex_value(b) {
                Some(d) => {
                    if self.size > MAX_CHUNK_SIZE >> 4 || (self.size << 4 | d) > MAX_CHUNK_SIZE {
                        return Err(HttpError::ChunkTooLarge);
                    }
                    // Leading zeros and upper-case digits are not how ringress writes
                    // a size line.
                    let leading_zero = self.digits > 0 && self.size == 0;
                    self.canonical &= !(leading_zero || b.is_ascii_uppercase());
                    self.size = self.size << 4 | d;
                    self.digits += 1;
                    Step::SizeDigits
                }
                None if self.digits == 0 => return Err(HttpError::InvalidChunkSize { byte: b }),
                None => {
                    self.canonical &= b == b'\r';
                    match b {
                        b'\r' => Step::SizeLf,
                        b';' => Step::ExtNameStart,
                        b if is_bws(b) => Step::SizeSpace,
                        _ => return Err(HttpError::InvalidChunkSize { byte: b }),
                    }
                }
            },
            // RFC 9112 7.1.1: whitespace only before a `;`.
            Step::SizeSpace => match b {
                b';' => Step::ExtNameStart,
                b if is_bws(b) => Step::SizeSpace,
                _ => return Err(HttpError::InvalidChunkSize { byte: b }),
            },
            Step::ExtNameStart => match b {
                b if is_bws(b) => Step::ExtNameStart,
                b if is_token_byte(b) => Step::ExtName,
                _ => return Err(extension),
            },
            Step::ExtName => match b {
                b'\r' => Step::SizeLf,
                b';' => Step::ExtNameStart,
                b'=' => Step::ExtValueStart,
                b if is_bws(b) => Step::ExtAfterName,
                b if is_token_byte(b) => Step::ExtName,
                _ => return Err(extension),
            },
            Step::ExtAfterName => match b {
                b';' => Step::ExtNameStart,
                b'=' => Step::ExtValueStart,
                b if is_bws(b) => Step::ExtAfterName,
                _ => return Err(extension),
            },
            Step::ExtValueStart => match b {
                b'"' => Step::ExtQuoted,
                b if is_bws(b) => Step::ExtValueStart,
                b if is_token_byte(b) => Step::ExtToken,
                _ => return Err(extension),
            },
            Step::ExtToken => match b {
                b'\r' => Step::SizeLf,
                b';' => Step::ExtNameStart,
                b if is_bws(b) => Step::ExtAfterValue { spaced: true },
                b if is_token_byte(b) => Step::ExtToken,
                _ => return Err(extension),
            },
            Step::ExtQuoted => match b {
                b'"' => Step::ExtAfterValue { spaced: false },
                b'\\' => Step::ExtQuotedPair,
                b if is_qdtext(b) => Step::ExtQuoted,
                _ => return Err(extension),
            },
            Step::ExtQuotedPair => match b {
                b if is_quoted_pair(b) => Step::ExtQuoted,
                _ => return Err(extension),
            },
            Step::ExtAfterValue { spaced } => match b {
                b'\r' if !spaced => Step::SizeLf,
                b';' => Step::ExtNameStart,
                b if is_bws(b) => Step::ExtAfterValue { spaced: true },
                _ => return Err(extension),
            },
            Step::SizeLf => {
                if b != b'\n' {
                    return Err(crlf("LF after chunk size"));
                }
                if self.size == 0 {
                    Step::TrailerStart
                } else {
                    Step::Data {
                        remaining: self.size,
                    }
                }
            }
            // Handled in bulk by `advance`.
            Step::Data { remaining } => Step::Data { remaining },
            Step::DataCr => {
                if b != b'\r' {
                    return Err(crlf("CR after chunk data"));
                }
                Step::DataLf
            }
            Step::DataLf => {
                if b != b'\n' {
                    return Err(crlf("LF after chunk data"));
                }
                self.size = 0;
                self.digits = 0;
                self.line = 0;
                self.canonical = true;
                Step::SizeDigits
            }
            Step::TrailerStart => match b {
                b'\r' => Step::FinalLf,
                b if is_token_byte(b) => Step::TrailerName,
                // Includes obs-fold (a line starting with space or tab).
                _ => return Err(HttpError::InvalidTrailer { byte: b }),
            },
            Step::TrailerName => match b {
                b':' => Step::TrailerValue,
                b if is_token_byte(b) => Step::TrailerName,
                _ => return Err(HttpError::InvalidTrailer { byte: b }),
            },
            Step::TrailerValue => match b {
                b'\r' => Step::TrailerLf,
                b'\t' | 0x20..=0x7e | 0x80..=0xff => Step::TrailerValue,
                _ => return Err(HttpError::InvalidTrailer { byte: b }),
            },
            Step::TrailerLf => {
                if b != b'\n' {
                    return Err(crlf("LF after trailer line"));
                }
                Step::TrailerStart
            }
            Step::FinalLf => {
                if b != b'\n' {
                    return Err(crlf("LF ending the chunked body"));
                }
                return Ok(true);
            }
        };
        Ok(false)
    }
}

/// Hands `data[start..end]` to `emit` unless it is empty.
fn emit_run(emit: &mut impl FnMut(&[u8]), data: &[u8], start: usize, end: usize) {
    if let Some(bytes) = data.get(start..end).filter(|b| !b.is_empty()) {
        emit(bytes);
    }
}

fn hex_value(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every point (two pieces) and byte by byte; every way must
    /// agree on the body's length and payload. Returns (body length, payload).
    fn frame(kind: BodyKind, input: &[u8]) -> Result<(usize, Vec<u8>), HttpError> {
        let run = |pieces: &mut dyn Iterator<Item = &[u8]>| {
            let mut f = BodyFramer::new(kind);
            let mut used = 0;
            let mut payload = Vec::new();
            for piece in pieces {
                let n = f.payload(piece, &mut payload)?;
                used += n;
                if n < piece.len() {
                    assert!(f.is_done(), "stopped early without being done");
                    break;
                }
            }
            Ok::<_, HttpError>((used, payload, f.is_done()))
        };
        let whole = run(&mut std::iter::once(input));
        let bytewise = run(&mut input.chunks(1));
        assert_eq!(whole, bytewise, "byte-by-byte differs");
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            let split = run(&mut [a, b].into_iter());
            assert_eq!(whole, split, "split at {cut} differs");
        }
        let (used, payload, done) = whole?;
        assert!(done || kind == BodyKind::UntilClose, "body not done");
        Ok((used, payload))
    }

    #[test]
    fn length_body() {
        assert_eq!(
            frame(BodyKind::Length(5), b"helloGET /"),
            Ok((5, b"hello".to_vec()))
        );
        let mut f = BodyFramer::new(BodyKind::Length(5));
        assert_eq!(f.advance(b"hel"), Ok(3));
        assert_eq!(f.finish(), Err(HttpError::IncompleteBody));
        assert_eq!(f.advance(b"lo!"), Ok(2));
        assert!(f.is_done());
        assert_eq!(f.advance(b"more"), Ok(0));
    }

    #[test]
    fn no_body() {
        for kind in [BodyKind::None, BodyKind::Length(0)] {
            let mut f = BodyFramer::new(kind);
            assert!(f.is_done());
            assert_eq!(f.advance(b"GET / HTTP/1.1"), Ok(0));
            assert_eq!(f.finish(), Ok(()));
        }
    }

    #[test]
    fn until_close_takes_everything() {
        let mut f = BodyFramer::new(BodyKind::UntilClose);
        assert_eq!(f.advance(b"abc"), Ok(3));
        assert!(!f.is_done());
        assert_eq!(f.finish(), Ok(()));
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let body = b"5;name=value;q=\"x y\"\r\nhello\r\nA \t;e\r\n0123456789\r\n0\r\nX-Sum: 1\r\nX-B: two words\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (used, payload) = frame(BodyKind::Chunked, &input).unwrap();
        assert_eq!(used, body.len());
        assert_eq!(payload, b"hello0123456789");
    }

    #[test]
    fn trailers_come_apart_from_the_payload_at_any_split() {
        let body = b"5\r\nhello\r\n0\r\ngrpc-status: 0\r\ngrpc-message:  fine \r\n\r\n";
        for split in 0..=body.len() {
            let mut framer = BodyFramer::new(BodyKind::Chunked);
            let (mut payload, mut trailers) = (Vec::new(), Vec::new());
            let (a, b) = body.split_at(split);
            let used = framer
                .payload_and_trailers(a, &mut payload, &mut trailers)
                .unwrap();
            assert_eq!(used, a.len());
            let used = framer
                .payload_and_trailers(b, &mut payload, &mut trailers)
                .unwrap();
            assert_eq!(used, b.len());
            assert!(framer.is_done());
            assert_eq!(payload, b"hello", "split at {split}");
            let map = trailer_map(&trailers).unwrap();
            assert_eq!(map.len(), 2, "split at {split}");
            assert_eq!(map["grpc-status"], "0", "split at {split}");
            assert_eq!(map["grpc-message"], "fine", "split at {split}");
        }
        let mut framer = BodyFramer::new(BodyKind::Chunked);
        let mut trailers = Vec::new();
        framer
            .payload_and_trailers(b"0\r\n\r\n", &mut Vec::new(), &mut trailers)
            .unwrap();
        assert_eq!(trailer_map(&trailers), None);
    }

    #[test]
    fn chunked_minimal_and_uppercase_hex() {
        assert_eq!(frame(BodyKind::Chunked, b"0\r\n\r\n"), Ok((5, vec![])));
        let (used, payload) =
            frame(BodyKind::Chunked, b"0000B\r\nhello world\r\n0\r\n\r\n").unwrap();
        assert_eq!(used, 25);
        assert_eq!(payload, b"hello world");
    }

    #[test]
    fn chunked_errors() {
        let cases: &[(&[u8], HttpError)] = &[
            (b"x\r\n", HttpError::InvalidChunkSize { byte: b'x' }),
            (b"\r\n", HttpError::InvalidChunkSize { byte: b'\r' }),
            (b"-1\r\n", HttpError::InvalidChunkSize { byte: b'-' }),
            (b"5 5\r\n", HttpError::InvalidChunkSize { byte: b'5' }),
            (b"0x5\r\n", HttpError::InvalidChunkSize { byte: b'x' }),
            (b"10000000000000000\r\n", HttpError::ChunkTooLarge),
            (b"80000000\r\n", HttpError::ChunkTooLarge),
            // RFC 9112 7.1.1: whitespace only before a `;`.
            (
                b"5 \r\nhello\r\n0\r\n\r\n",
                HttpError::InvalidChunkSize { byte: b'\r' },
            ),
            (
                b"5;;;===\"\r\n",
                HttpError::InvalidChunkExtension { byte: b';' },
            ),
            (
                b"5;a=\"x\r\n",
                HttpError::InvalidChunkExtension { byte: b'\r' },
            ),
            (
                b"5;a= \r\n",
                HttpError::InvalidChunkExtension { byte: b'\r' },
            ),
            (
                b"5;a \r\n",
                HttpError::InvalidChunkExtension { byte: b'\r' },
            ),
            (
                b"5;a=b \r\n",
                HttpError::InvalidChunkExtension { byte: b'\r' },
            ),
            (b"5;=b\r\n", HttpError::InvalidChunkExtension { byte: b'=' }),
            (
                b"5;a=b=c\r\n",
                HttpError::InvalidChunkExtension { byte: b'=' },
            ),
            (
                b"5;a=\"x\"y\r\n",
                HttpError::InvalidChunkExtension { byte: b'y' },
            ),
            (
                b"5\nhello\r\n0\r\n\r\n",
                HttpError::InvalidChunkSize { byte: b'\n' },
            ),
            (
                b"5\r\nhello\n0\r\n\r\n",
                HttpError::ChunkMissingCrlf {
                    expected: "CR after chunk data",
                    found: b'\n',
                },
            ),
            (
                b"5\r\nhelloX\r\n",
                HttpError::ChunkMissingCrlf {
                    expected: "CR after chunk data",
                    found: b'X',
                },
            ),
            (
                b"5\rhello",
                HttpError::ChunkMissingCrlf {
                    expected: "LF after chunk size",
                    found: b'h',
                },
            ),
            (
                b"5;a\nb\r\n",
                HttpError::InvalidChunkExtension { byte: b'\n' },
            ),
            (b"5;a\0\r\n", HttpError::InvalidChunkExtension { byte: 0 }),
            (
                b"0\r\n X: y\r\n\r\n",
                HttpError::InvalidTrailer { byte: b' ' },
            ),
            (
                b"0\r\nX : y\r\n\r\n",
                HttpError::InvalidTrailer { byte: b' ' },
            ),
            (
                b"0\r\nX: y\0\r\n\r\n",
                HttpError::InvalidTrailer { byte: 0 },
            ),
            (
                b"0\r\nX: y\n\r\n",
                HttpError::InvalidTrailer { byte: b'\n' },
            ),
            (b"0\r\n\n", HttpError::InvalidTrailer { byte: b'\n' }),
            (
                b"0\r\n\rX",
                HttpError::ChunkMissingCrlf {
                    expected: "LF ending the chunked body",
                    found: b'X',
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                frame(BodyKind::Chunked, input).as_ref().err(),
                Some(want),
                "{}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(want.status(), 400);
        }
    }

    #[test]
    fn largest_chunk_size_is_accepted() {
        let mut f = BodyFramer::new(BodyKind::Chunked);
        assert_eq!(f.advance(b"7fffffff\r\nabc"), Ok(13));
        assert!(!f.is_done());
        assert_eq!(f.finish(), Err(HttpError::IncompleteBody));
        assert_eq!(MAX_CHUNK_SIZE, 0x7fff_ffff);
        assert_eq!(
            BodyFramer::new(BodyKind::Chunked).advance(b"0080000000\r\n"),
            Err(HttpError::ChunkTooLarge)
        );
    }

    /// What [`BodyFramer::forward`] hands on for `input` fed in the given pieces:
    /// the slices, concatenated per call, and the bytes used.
    fn forwarded(input: &[&[u8]]) -> Result<(Vec<Vec<u8>>, usize), HttpError> {
        let mut f = BodyFramer::new(BodyKind::Chunked);
        let mut calls = Vec::new();
        let mut used = 0;
        for piece in input {
            let mut slices: Vec<Vec<u8>> = Vec::new();
            used += f.forward(piece, &mut |s| slices.push(s.to_vec()))?;
            calls.push(slices.concat());
            assert!(slices.iter().all(|s| !s.is_empty()));
        }
        assert!(f.is_done());
        Ok((calls, used))
    }

    #[test]
    fn chunked_bodies_are_re_serialised_over_every_split() {
        let cases: &[(&[u8], &[u8])] = &[
            // Already canonical: forwarded as it is.
            (b"5\r\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
            (
                b"1f\r\n0123456789012345678901234567890\r\n0\r\nT: v\r\n\r\n",
                b"1f\r\n0123456789012345678901234567890\r\n0\r\nT: v\r\n\r\n",
            ),
            // Leading zeros, upper case, whitespace and extensions go.
            (b"0005\r\nhello\r\n00\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
            (
                b"A \t;e\r\n0123456789\r\n0;last\r\n\r\n",
                b"a\r\n0123456789\r\n0\r\n\r\n",
            ),
            (
                b"5;name=value;q=\"x y\\\"z\"\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n",
                b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n",
            ),
        ];
        for (input, want) in cases {
            let (whole, used) = forwarded(&[input]).unwrap();
            assert_eq!(used, input.len());
            assert_eq!(whole.concat(), *want, "{}", String::from_utf8_lossy(input));
            let bytewise: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(forwarded(&bytewise).unwrap().0.concat(), *want);
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                assert_eq!(
                    forwarded(&[a, b]).unwrap().0.concat(),
                    *want,
                    "cut at {cut}"
                );
            }
        }
    }

    /// Random chunked bodies in random pieces: what goes on is canonical (forwarding it
    /// again changes nothing), carries the same payload and does not depend on how
    /// the input was split.
    #[test]
    fn forwarding_keeps_the_payload_and_is_canonical() {
        let mut rng = fastrand::Rng::with_seed(0x6368_756e);
        for _ in 0..2_000 {
            let mut input = Vec::new();
            for _ in 0..rng.usize(0..4) {
                let size = rng.usize(1..40);
                let zeros = "0".repeat(rng.usize(0..3));
                let hex = if rng.bool() {
                    format!("{size:X}")
                } else {
                    format!("{size:x}")
                };
                let ext = ["", ";a", " ;b=c", ";q=\"x\""][rng.usize(0..4)];
                input.extend(format!("{zeros}{hex}{ext}\r\n").bytes());
                input.extend((0..size).map(|i| b'a' + (i % 26) as u8));
                input.extend(b"\r\n");
            }
            input.extend(b"0\r\n");
            if rng.bool() {
                input.extend(b"T: v\r\n");
            }
            input.extend(b"\r\n");
            let (whole, used) = forwarded(&[&input]).unwrap();
            assert_eq!(used, input.len());
            let out = whole.concat();
            let mut pieces = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let (a, b) = rest.split_at(rng.usize(1..=rest.len()));
                pieces.push(a);
                rest = b;
            }
            assert_eq!(forwarded(&pieces).unwrap().0.concat(), out);
            assert_eq!(forwarded(&[&out]).unwrap().0.concat(), out);
            let payload_of = |body: &[u8]| {
                let mut payload = Vec::new();
                BodyFramer::new(BodyKind::Chunked)
                    .payload(body, &mut payload)
                    .unwrap();
                payload
            };
            assert_eq!(payload_of(&out), payload_of(&input));
        }
    }

    #[test]
    fn a_canonical_body_goes_on_as_one_slice_per_call() {
        let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let mut f = BodyFramer::new(BodyKind::Chunked);
        let mut slices = Vec::new();
        f.forward(input, &mut |s| slices.push(s.as_ptr())).unwrap();
        assert_eq!(slices, [input.as_ptr()]);
        // A size line split over two calls is held back, then written whole.
        let mut f = BodyFramer::new(BodyKind::Chunked);
        let mut out = Vec::new();
        assert_eq!(
            f.forward(b"hello"[..0].as_ref(), &mut |s| out.push(s.to_vec())),
            Ok(0)
        );
        assert_eq!(f.forward(b"1", &mut |s| out.push(s.to_vec())), Ok(1));
        assert!(out.is_empty());
        f.forward(b"0\r\n0123456789abcdef\r\n", &mut |s| out.push(s.to_vec()))
            .unwrap();
        assert_eq!(out.concat(), b"10\r\n0123456789abcdef\r\n");
    }

    #[test]
    fn errors_are_sticky() {
        let mut f = BodyFramer::new(BodyKind::Chunked);
        assert!(f.advance(b"z").is_err());
        assert_eq!(
            f.advance(b"0\r\n\r\n"),
            Err(HttpError::InvalidChunkSize { byte: b'z' })
        );
        assert!(f.finish().is_err());
    }

    #[test]
    fn chunk_line_limit_boundary() {
        // A size line of exactly MAX_CHUNK_LINE bytes, CRLF included.
        let line = |len: usize| {
            let mut l = b"1;".to_vec();
            l.resize(len - 2, b'e');
            l.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
            l
        };
        let ok = line(MAX_CHUNK_LINE);
        assert_eq!(frame(BodyKind::Chunked, &ok), Ok((ok.len(), b"x".to_vec())));
        let long = line(MAX_CHUNK_LINE + 1);
        assert_eq!(
            frame(BodyKind::Chunked, &long).unwrap_err(),
            HttpError::ChunkLineTooLong
        );
        // Leading zeros count too, so they cannot grow without bound.
        let mut zeros = vec![b'0'; MAX_CHUNK_LINE];
        zeros.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            BodyFramer::new(BodyKind::Chunked).advance(&zeros),
            Err(HttpError::ChunkLineTooLong)
        );
    }

    #[test]
    fn trailer_limit_boundary() {
        // A trailer section of exactly MAX_TRAILER_BYTES: one line plus the final CRLF.
        let body = |len: usize| {
            let mut b = b"0\r\nX: ".to_vec();
            b.resize(3 + len - 4, b'v');
            b.extend_from_slice(b"\r\n\r\n");
            b
        };
        let ok = body(MAX_TRAILER_BYTES);
        let mut f = BodyFramer::new(BodyKind::Chunked);
        assert_eq!(f.advance(&ok), Ok(ok.len()));
        assert!(f.is_done());
        let big = body(MAX_TRAILER_BYTES + 1);
        assert_eq!(
            BodyFramer::new(BodyKind::Chunked).advance(&big),
            Err(HttpError::TrailersTooLarge)
        );
    }
}
