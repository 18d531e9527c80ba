//! Body framing: after a head, tracks where its body ends while the proxy forwards the
//! received bytes unchanged, so the next pipelined request (or the next response on a
//! pooled upstream connection) starts at the right byte. Chunked bodies are checked, not
//! decoded: size lines, extensions and trailers are forwarded as received, which is why
//! every line must end in CRLF (a bare LF is refused so ringress and the upstream can
//! never disagree about where a chunk ends).

use super::error::HttpError;
use super::fields::is_token_byte;
use super::limits::{MAX_CHUNK_LINE, MAX_TRAILER_BYTES};

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
}

#[derive(Debug, Clone)]
enum State {
    Length { remaining: u64 },
    Chunked(Chunked),
    UntilClose,
    Done,
    Failed(HttpError),
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Reading the hex digits of a chunk size.
    SizeDigits,
    /// After the digits: optional spaces, then `;` or CR.
    SizeSpace,
    /// Inside chunk extensions, until CR.
    Extension,
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

#[derive(Debug, Clone, Copy)]
struct Chunked {
    step: Step,
    size: u64,
    digits: usize,
    /// Bytes of the current size line so far.
    line: usize,
    /// Bytes of the trailer section so far.
    trailer: usize,
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
                trailer: 0,
            }),
            BodyKind::UntilClose => State::UntilClose,
        };
        Self { state }
    }

    /// Takes the next received bytes; returns how many of them belong to the body (the
    /// rest belongs to whatever follows it). Once an error is returned, every later
    /// call returns it again.
    pub fn advance(&mut self, data: &[u8]) -> Result<usize, HttpError> {
        self.advance_with(data, |_| {})
    }

    /// Like [`advance`](Self::advance), and also appends the body's payload (chunk data
    /// without sizes, extensions or trailers) to `payload`. Used when an upstream's
    /// chunked response goes to an HTTP/1.0 client, which cannot read chunked framing.
    pub fn advance_payload(
        &mut self,
        data: &[u8],
        payload: &mut Vec<u8>,
    ) -> Result<usize, HttpError> {
        self.advance_with(data, |p| payload.extend_from_slice(p))
    }

    /// Whether the body has ended (never for [`BodyKind::UntilClose`]).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Called when the connection ends: fine if the body was complete or runs until
    /// close, [`HttpError::IncompleteBody`] otherwise.
    pub fn finish(&self) -> Result<(), HttpError> {
        match &self.state {
            State::Done | State::UntilClose => Ok(()),
            State::Failed(e) => Err(e.clone()),
            State::Length { .. } | State::Chunked(_) => Err(HttpError::IncompleteBody),
        }
    }

    fn advance_with(
        &mut self,
        data: &[u8],
        mut payload: impl FnMut(&[u8]),
    ) -> Result<usize, HttpError> {
        match &mut self.state {
            State::Done => Ok(0),
            State::Failed(e) => Err(e.clone()),
            State::UntilClose => {
                payload(data);
                Ok(data.len())
            }
            State::Length { remaining } => {
                let take = clamp_len(*remaining, data.len());
                payload(data.get(..take).unwrap_or_default());
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.state = State::Done;
                }
                Ok(take)
            }
            State::Chunked(c) => match c.advance(data, &mut payload) {
                Ok((used, done)) => {
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

/// `min(remaining, available)` as a usize.
fn clamp_len(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

impl Chunked {
    /// Returns bytes used and whether the body ended.
    fn advance(
        &mut self,
        data: &[u8],
        payload: &mut impl FnMut(&[u8]),
    ) -> Result<(usize, bool), HttpError> {
        let mut i = 0;
        while let Some(&b) = data.get(i) {
            if let Step::Data { remaining } = self.step {
                let rest = data.get(i..).unwrap_or_default();
                let take = clamp_len(remaining, rest.len());
                payload(rest.get(..take).unwrap_or_default());
                i += take;
                let left = remaining - take as u64;
                self.step = if left == 0 {
                    Step::DataCr
                } else {
                    Step::Data { remaining: left }
                };
                continue;
            }
            i += 1;
            if self.step_byte(b)? {
                return Ok((i, true));
            }
        }
        Ok((i, false))
    }

    /// Consumes one framing byte; true when it was the body's last.
    fn step_byte(&mut self, b: u8) -> Result<bool, HttpError> {
        let crlf = |expected| HttpError::ChunkMissingCrlf { expected, found: b };
        match self.step {
            Step::SizeDigits | Step::SizeSpace | Step::Extension => {
                self.line += 1;
                // The CR and LF still to come count too.
                if self.line + 1 > MAX_CHUNK_LINE {
                    return Err(HttpError::ChunkLineTooLong);
                }
            }
            Step::TrailerStart
            | Step::TrailerName
            | Step::TrailerValue
            | Step::TrailerLf
            | Step::FinalLf => {
                self.trailer += 1;
                if self.trailer > MAX_TRAILER_BYTES {
                    return Err(HttpError::TrailersTooLarge);
                }
            }
            _ => {}
        }
        match self.step {
            Step::SizeDigits => {
                if let Some(d) = hex_value(b) {
                    if self.size > u64::MAX >> 4 {
                        return Err(HttpError::ChunkSizeOverflow);
                    }
                    self.size = self.size << 4 | d;
                    self.digits += 1;
                } else if self.digits == 0 {
                    return Err(HttpError::InvalidChunkSize { byte: b });
                } else {
                    self.after_size(b)?;
                }
            }
            Step::SizeSpace => self.after_size(b)?,
            Step::Extension => match b {
                b'\r' => self.step = Step::SizeLf,
                b'\t' | 0x20..=0x7e | 0x80..=0xff => {}
                _ => return Err(HttpError::InvalidChunkExtension { byte: b }),
            },
            Step::SizeLf => {
                if b != b'\n' {
                    return Err(crlf("LF after chunk size"));
                }
                self.step = if self.size == 0 {
                    Step::TrailerStart
                } else {
                    Step::Data {
                        remaining: self.size,
                    }
                };
            }
            // Handled in bulk by `advance`.
            Step::Data { .. } => {}
            Step::DataCr => {
                if b != b'\r' {
                    return Err(crlf("CR after chunk data"));
                }
                self.step = Step::DataLf;
            }
            Step::DataLf => {
                if b != b'\n' {
                    return Err(crlf("LF after chunk data"));
                }
                self.step = Step::SizeDigits;
                self.size = 0;
                self.digits = 0;
                self.line = 0;
            }
            Step::TrailerStart => {
                if b == b'\r' {
                    self.step = Step::FinalLf;
                } else if is_token_byte(b) {
                    self.step = Step::TrailerName;
                } else {
                    // Includes obs-fold (a line starting with space or tab).
                    return Err(HttpError::InvalidTrailer { byte: b });
                }
            }
            Step::TrailerName => {
                if b == b':' {
                    self.step = Step::TrailerValue;
                } else if !is_token_byte(b) {
                    return Err(HttpError::InvalidTrailer { byte: b });
                }
            }
            Step::TrailerValue => match b {
                b'\r' => self.step = Step::TrailerLf,
                b'\t' | 0x20..=0x7e | 0x80..=0xff => {}
                _ => return Err(HttpError::InvalidTrailer { byte: b }),
            },
            Step::TrailerLf => {
                if b != b'\n' {
                    return Err(crlf("LF after trailer line"));
                }
                self.step = Step::TrailerStart;
            }
            Step::FinalLf => {
                if b != b'\n' {
                    return Err(crlf("LF ending the chunked body"));
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A byte after the size digits: spaces, `;` starting extensions, or CR.
    fn after_size(&mut self, b: u8) -> Result<(), HttpError> {
        self.step = match b {
            b' ' | b'\t' => Step::SizeSpace,
            b';' => Step::Extension,
            b'\r' => Step::SizeLf,
            _ => return Err(HttpError::InvalidChunkSize { byte: b }),
        };
        Ok(())
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
                let n = f.advance_payload(piece, &mut payload)?;
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
            (b"10000000000000000\r\n", HttpError::ChunkSizeOverflow),
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
        assert_eq!(f.advance(b"ffffffffffffffff\r\nabc"), Ok(21));
        assert!(!f.is_done());
        assert_eq!(f.finish(), Err(HttpError::IncompleteBody));
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
