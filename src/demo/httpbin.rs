//! A built-in httpbin-like upstream: the service behind the gateway in `ringress demo`,
//! the integration tests and the benchmarks. It sits after the proxy, where a real
//! backend would: the gateway's upstream pool connects to it over loopback.
//!
//! It is deliberately plain: `std::net`, one thread per connection, requests parsed with
//! `httparse`, bodies read fully (bounded). HTTP/1.1 keep-alive and pipelining work
//! (requests on one connection are answered in order); `Content-Length` and chunked
//! request bodies are accepted; `Expect: 100-continue` is answered.
//!
//! Endpoints (like httpbin.org's; JSON is pretty-printed with sorted keys):
//! - `/` — a short text listing these endpoints.
//! - `/get` (GET, HEAD), `/post`, `/put`, `/patch`, `/delete` — JSON echo: `args`,
//!   `headers`, `origin`, `url` (and `data`, `method` except for `/get`).
//! - `/anything`, `/anything/...` — any method, JSON echo with `method` and `data`.
//! - `/headers` — `{"headers": {...}}` with Title-Case names; `/ip`, `/user-agent`.
//! - `/status/N` — answers status N (200..=599); 418 is the teapot with `x-more-info`;
//!   3xx (but 304) carry `location: /redirect/1`; anything else is 400.
//! - `/delay/N` — sleeps min(N, 10) seconds (N may be fractional), then the echo.
//! - `/redirect/N` — 302 to `/redirect/N-1`, and `/redirect/1` to `/get`.
//! - `/bytes/N` — N pseudo-random bytes (N <= 100 MiB) with `Content-Length`;
//!   `?seed=S` makes them reproducible.
//! - `/stream-bytes/N` — the same, chunked (`?chunk_size=`, default 10240).
//!
//! Anything else is 404. Malformed requests get 400, a head over [`MAX_HEAD_BYTES`] or
//! with more than [`MAX_HEADERS`] headers 431, a body over [`MAX_BODY_BYTES`] 413; each
//! of those closes the connection.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Largest request head (request line and headers) accepted; past it: 431.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most request headers accepted; past it: 431.
pub(crate) const MAX_HEADERS: usize = 100;
/// Largest request body accepted (either framing); past it: 413.
pub(crate) const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Longest chunk-size line (size and extensions); past it: 400.
pub(crate) const MAX_CHUNK_LINE_BYTES: usize = 1024;
/// Most bytes of trailer fields after the last chunk; past it: 431.
pub(crate) const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Largest N of `/bytes/N` and `/stream-bytes/N`; past it: 400.
pub(crate) const MAX_GENERATED_BYTES: u64 = 100 * 1024 * 1024;
/// Longest sleep of `/delay/N`.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(10);
/// Largest N of `/redirect/N`.
pub(crate) const MAX_REDIRECTS: u32 = 100;
/// Default and largest `chunk_size` of `/stream-bytes/N`.
pub(crate) const DEFAULT_STREAM_CHUNK: usize = 10 * 1024;
pub(crate) const MAX_STREAM_CHUNK: usize = 1024 * 1024;
/// A connection idle (or stalled mid-request) this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once; more are closed as soon as they are accepted.
pub(crate) const MAX_CONNECTIONS: usize = 4096;

const READ_CHUNK: usize = 16 * 1024;
const WRITE_CHUNK: usize = 64 * 1024;
const CONNECTION_STACK: usize = 256 * 1024;

const TEAPOT: &str = r#"
        -=[ I'm a teapot ]=-

                 _
              __|_|__
         ,-. /       \  ____
         \  \|  TEA  |-'   /
          `._|       |____/
             \_______/
"#;

/// A running upstream. Dropping it stops accepting new connections; connections
/// already open are served until their client closes them (or [`IDLE_TIMEOUT`]) and
/// are closed after their current response.
#[derive(Debug)]
pub struct Httpbin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Httpbin {
    /// The address it listens on (with the real port when spawned on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Httpbin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let wake = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, self.addr.port()).into(),
            IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, self.addr.port()).into(),
            _ => self.addr,
        };
        let woken = TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok();
        if let Some(accept) = self.accept.take()
            && woken
        {
            let _ = accept.join();
        }
    }
}

/// Binds `addr` (port 0: an ephemeral port) and serves on a background thread.
pub fn spawn(addr: SocketAddr) -> io::Result<Httpbin> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let accept = thread::Builder::new()
        .name(format!("httpbin-accept-{}", addr.port()))
        .spawn({
            let stop = Arc::clone(&stop);
            move || accept_loop(listener, stop)
        })?;
    Ok(Httpbin {
        addr,
        stop,
        accept: Some(accept),
    })
}

fn accept_loop(listener: TcpListener, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::debug!("httpbin accept failed: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let spawned = thread::Builder::new()
            .name("httpbin-conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn({
                let stop = Arc::clone(&stop);
                let active = Arc::clone(&active);
                move || {
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
                    let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
                    if let Err(e) = serve(stream, peer, &stop) {
                        tracing::trace!("httpbin connection from {peer} ended: {e}");
                    }
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// One parsed request head.
#[derive(Debug)]
struct Request {
    method: String,
    target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    minor_version: u8,
    /// Names as sent, values lossily decoded.
    headers: Vec<(String, String)>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// Why a request could not be read.
#[derive(Debug)]
enum ReadError {
    /// The socket failed or the peer closed mid-request: nothing to answer.
    Io(io::Error),
    /// Answer with this status and message, then close.
    Reject(u16, &'static str),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// A connection's stream and the bytes received but not yet consumed (the start of the
/// next pipelined request, or the rest of a body).
struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: Read + Write> Conn<S> {
    /// Reads more bytes into `buf`; `Ok(0)` at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        let start = self.buf.len();
        self.buf.resize(start + READ_CHUNK, 0);
        let result = loop {
            match self.stream.read(&mut self.buf[start..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(start + n);
        result
    }

    /// Makes `buf` hold at least `n` bytes; an early end of stream is an error.
    fn fill_to(&mut self, n: usize) -> Result<(), ReadError> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
        Ok(())
    }

    /// The next request head, or `None` when the peer closed between requests.
    fn read_head(&mut self) -> Result<Option<Request>, ReadError> {
        loop {
            if !self.buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut parsed = httparse::Request::new(&mut headers);
                match parsed.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let request = build_request(&parsed)?;
                        self.buf.drain(..len);
                        return Ok(Some(request));
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.buf.len() >= MAX_HEAD_BYTES {
                            return Err(ReadError::Reject(431, "request head too large"));
                        }
                    }
                    Err(httparse::Error::TooManyHeaders) => {
                        return Err(ReadError::Reject(431, "too many request headers"));
                    }
                    Err(_) => return Err(ReadError::Reject(400, "malformed request head")),
                }
            }
            if self.fill()? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()))
                };
            }
        }
    }

    /// Reads the request's whole body.
    fn read_body(&mut self, request: &Request) -> Result<Vec<u8>, ReadError> {
        match request.framing {
            Framing::Empty => Ok(Vec::new()),
            Framing::Length(len) => {
                if len > MAX_BODY_BYTES {
                    return Err(ReadError::Reject(413, "request body too large"));
                }
                let len = usize::try_from(len)
                    .map_err(|_| ReadError::Reject(413, "request body too large"))?;
                if self.buf.len() < len {
                    self.send_continue(request)?;
                }
                self.fill_to(len)?;
                Ok(self.buf.drain(..len).collect())
            }
            Framing::Chunked => {
                if self.buf.is_empty() {
                    self.send_continue(request)?;
                }
                self.read_chunked()
            }
        }
    }

    fn send_continue(&mut self, request: &Request) -> io::Result<()> {
        if request.expect_continue && request.minor_version == 1 {
            self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            self.stream.flush()?;
        }
        Ok(())
    }

    /// Decodes a chunked body: `size[;ext] CRLF data CRLF ... 0 CRLF trailers CRLF`.
    fn read_chunked(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line(MAX_CHUNK_LINE_BYTES, (400, "chunk-size line too long"))?;
            let size = parse_chunk_size(&line)?;
            if size == 0 {
                break;
            }
            if body.len() as u64 + size > MAX_BODY_BYTES {
                return Err(ReadError::Reject(413, "request body too large"));
            }
            // Bounded by MAX_BODY_BYTES just above.
            let size = size as usize;
            self.fill_to(size + 2)?;
            if self.buf.get(size..size + 2) != Some(b"\r\n".as_slice()) {
                return Err(ReadError::Reject(400, "chunk data not followed by CRLF"));
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
        let mut trailers = 0;
        loop {
            let line = self.read_line(MAX_TRAILER_BYTES, (431, "trailer fields too large"))?;
            if line.is_empty() {
                return Ok(body);
            }
            trailers += line.len() + 2;
            if trailers > MAX_TRAILER_BYTES {
                return Err(ReadError::Reject(431, "trailer fields too large"));
            }
        }
    }

    /// One CRLF-terminated line (without the CRLF), at most `limit` bytes.
    fn read_line(
        &mut self,
        limit: usize,
        too_long: (u16, &'static str),
    ) -> Result<Vec<u8>, ReadError> {
        let mut searched = 0;
        loop {
            if let Some(i) = self.buf[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + i;
                if end > limit {
                    return Err(ReadError::Reject(too_long.0, too_long.1));
                }
                if end == 0 || self.buf[end - 1] != b'\r' {
                    return Err(ReadError::Reject(
                        400,
                        "line in chunked body not ended by CRLF",
                    ));
                }
                let line = self.buf[..end - 1].to_vec();
                self.buf.drain(..=end);
                return Ok(line);
            }
            searched = self.buf.len();
            if searched > limit {
                return Err(ReadError::Reject(too_long.0, too_long.1));
            }
            if self.fill()? == 0 {
                return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Writes `response`; the body is left out for HEAD requests.
    fn write_response(
        &mut self,
        response: Response,
        head_only: bool,
        close: bool,
        http10: bool,
    ) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\n",
            response.status,
            reason(response.status)
        );
        for (name, value) in &response.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let no_body = response.status == 204
            || response.status == 304
            || (100..200).contains(&response.status);
        let streamed_http10 = http10 && matches!(response.body, Body::Stream { .. });
        if !no_body {
            match &response.body {
                Body::Bytes(bytes) => {
                    let _ = write!(head, "content-length: {}\r\n", bytes.len());
                }
                Body::Random { len, .. } => {
                    let _ = write!(head, "content-length: {len}\r\n");
                }
                Body::Stream { .. } if streamed_http10 => {}
                Body::Stream { .. } => head.push_str("transfer-encoding: chunked\r\n"),
            }
        }
        if close || streamed_http10 {
            head.push_str("connection: close\r\n");
        } else if http10 {
            head.push_str("connection: keep-alive\r\n");
        }
        head.push_str("\r\n");
        if no_body || head_only {
            self.stream.write_all(head.as_bytes())?;
            return self.stream.flush();
        }
        match response.body {
            Body::Bytes(bytes) => {
                let mut out = head.into_bytes();
                out.extend_from_slice(&bytes);
                self.stream.write_all(&out)?;
            }
            Body::Random { len, seed } => {
                self.stream.write_all(head.as_bytes())?;
                let mut rng = fastrand::Rng::with_seed(seed);
                let mut chunk = vec![0u8; WRITE_CHUNK];
                let mut left = len;
                while left > 0 {
                    let n = left.min(WRITE_CHUNK as u64) as usize;
                    rng.fill(&mut chunk[..n]);
                    self.stream.write_all(&chunk[..n])?;
                    left -= n as u64;
                }
            }
            Body::Stream {
                len,
                seed,
                chunk_size,
            } => {
                self.stream.write_all(head.as_bytes())?;
                let mut rng = fastrand::Rng::with_seed(seed);
                let mut chunk = Vec::with_capacity(chunk_size + 16);
                let mut left = len;
                while left > 0 {
                    let n = left.min(chunk_size as u64) as usize;
                    chunk.clear();
                    if !streamed_http10 {
                        let _ = write!(ChunkHead(&mut chunk), "{n:x}\r\n");
                    }
                    let start = chunk.len();
                    chunk.resize(start + n, 0);
                    rng.fill(&mut chunk[start..]);
                    if !streamed_http10 {
                        chunk.extend_from_slice(b"\r\n");
                    }
                    self.stream.write_all(&chunk)?;
                    left -= n as u64;
                }
                if !streamed_http10 {
                    self.stream.write_all(b"0\r\n\r\n")?;
                }
            }
        }
        self.stream.flush()
    }
}

/// `write!` into a byte vector (for chunk-size lines).
struct ChunkHead<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ChunkHead<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Serves one connection until the peer closes it, a response closes it, or the
/// upstream is stopping.
fn serve<S: Read + Write>(stream: S, peer: SocketAddr, stop: &AtomicBool) -> io::Result<()> {
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(READ_CHUNK),
    };
    loop {
        let read = conn.read_head().and_then(|head| match head {
            Some(request) => {
                let body = conn.read_body(&request)?;
                Ok(Some((request, body)))
            }
            None => Ok(None),
        });
        let (request, body) = match read {
            Ok(Some(read)) => read,
            Ok(None) => return Ok(()),
            Err(ReadError::Io(e)) => return Err(e),
            Err(ReadError::Reject(status, message)) => {
                let response = Response::text(status, format!("{message}\n"));
                return conn.write_response(response, false, true, false);
            }
        };
        // A request with both framings may have been smuggled past something: close.
        let close = !request.keep_alive
            || stop.load(Ordering::SeqCst)
            || (request.framing == Framing::Chunked && request.header("content-length").is_some());
        let response = handle(&request, &body, peer);
        let head_only = request.method == "HEAD";
        conn.write_response(response, head_only, close, request.minor_version == 0)?;
        if close {
            return Ok(());
        }
    }
}

fn build_request(parsed: &httparse::Request<'_, '_>) -> Result<Request, ReadError> {
    let bad = |message| ReadError::Reject(400, message);
    let method = parsed.method.ok_or(bad("no method"))?.to_owned();
    let target = parsed.path.ok_or(bad("no request target"))?.to_owned();
    let minor_version = parsed.version.ok_or(bad("no HTTP version"))?;
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<String> = None;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expect_continue = false;
    for (name, value) in &headers {
        if name.eq_ignore_ascii_case("content-length") {
            for part in value.split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("invalid content-length"));
                }
                let len: u64 = part
                    .parse()
                    .map_err(|_| ReadError::Reject(413, "request body too large"))?;
                if content_length.is_some_and(|l| l != len) {
                    return Err(bad("conflicting content-length values"));
                }
                content_length = Some(len);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let joined = match transfer_encoding.take() {
                Some(before) => format!("{before},{value}"),
                None => value.clone(),
            };
            transfer_encoding = Some(joined);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                let token = token.trim();
                connection_close |= token.eq_ignore_ascii_case("close");
                connection_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = value.trim().eq_ignore_ascii_case("100-continue");
        }
    }
    let framing = match (&transfer_encoding, content_length) {
        (Some(te), _) => {
            let last = te.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err(ReadError::Reject(
                    501,
                    "only chunked transfer-encoding is supported",
                ));
            }
            Framing::Chunked
        }
        (None, Some(0)) | (None, None) => Framing::Empty,
        (None, Some(len)) => Framing::Length(len),
    };
    let keep_alive = if minor_version == 1 {
        !connection_close
    } else {
        connection_keep_alive && !connection_close
    };
    Ok(Request {
        method,
        target,
        minor_version,
        headers,
        framing,
        keep_alive,
        expect_continue,
    })
}

/// `1a;ext=1` → 26. At most 15 hex digits (so the sum with the body cannot overflow).
fn parse_chunk_size(line: &[u8]) -> Result<u64, ReadError> {
    let bad = ReadError::Reject(400, "invalid chunk size");
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits_end == 0 || digits_end > 15 {
        return Err(bad);
    }
    match line.get(digits_end..) {
        Some([]) => {}
        Some([b';' | b' ' | b'\t', ..]) => {}
        _ => return Err(bad),
    }
    let digits = std::str::from_utf8(&line[..digits_end])
        .map_err(|_| ReadError::Reject(400, "invalid chunk size"))?;
    u64::from_str_radix(digits, 16).map_err(|_| bad)
}

/// What a handler answers.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Bytes(Vec<u8>),
    /// `len` pseudo-random bytes with `content-length`.
    Random {
        len: u64,
        seed: u64,
    },
    /// `len` pseudo-random bytes, chunked.
    Stream {
        len: u64,
        seed: u64,
        chunk_size: usize,
    },
}

impl Response {
    fn text(status: u16, text: impl Into<String>) -> Response {
        Response {
            status,
            headers: vec![("content-type", "text/plain; charset=utf-8".into())],
            body: Body::Bytes(text.into().into_bytes()),
        }
    }

    fn json(value: &Json) -> Response {
        let mut text = String::new();
        value.write(&mut text, 0);
        text.push('\n');
        Response {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: Body::Bytes(text.into_bytes()),
        }
    }

    fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Bytes(Vec::new()),
        }
    }

    fn method_not_allowed(allow: &str) -> Response {
        let mut response = Response::text(405, "method not allowed\n");
        response.headers.push(("allow", allow.to_owned()));
        response
    }
}

/// Routes one request to its endpoint.
fn handle(request: &Request, body: &[u8], peer: SocketAddr) -> Response {
    let (path, query) = split_target(&request.target);
    let method = request.method.as_str();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] => Response::text(200, INDEX),
        ["get"] => match method {
            "GET" | "HEAD" => Response::json(&echo(request, body, peer, false)),
            _ => Response::method_not_allowed("GET, HEAD"),
        },
        ["post"] | ["put"] | ["patch"] | ["delete"] => {
            let expected = path.trim_start_matches('/').to_ascii_uppercase();
            if method == expected {
                Response::json(&echo(request, body, peer, true))
            } else {
                Response::method_not_allowed(&expected)
            }
        }
        ["anything", ..] => Response::json(&echo(request, body, peer, true)),
        ["headers"] => Response::json(&Json::Obj(vec![("headers".into(), headers_json(request))])),
        ["ip"] => Response::json(&Json::Obj(vec![(
            "origin".into(),
            Json::Str(origin(request, peer)),
        )])),
        ["user-agent"] => Response::json(&Json::Obj(vec![(
            "user-agent".into(),
            Json::Str(request.header("user-agent").unwrap_or("").to_owned()),
        )])),
        ["status", code] => status(code),
        ["delay", seconds] => match seconds.parse::<f64>() {
            Ok(s) if s.is_finite() && s >= 0.0 => {
                thread::sleep(Duration::from_secs_f64(s).min(MAX_DELAY));
                Response::json(&echo(request, body, peer, true))
            }
            _ => Response::text(400, "delay must be a number of seconds\n"),
        },
        ["redirect", n] => match n.parse::<u32>() {
            Ok(n) if (1..=MAX_REDIRECTS).contains(&n) => {
                let mut response = Response::empty(302);
                let location = if n == 1 {
                    "/get".to_owned()
                } else {
                    format!("/redirect/{}", n - 1)
                };
                response.headers.push(("location", location));
                response
            }
            _ => Response::text(400, "redirect count must be 1..=100\n"),
        },
        ["bytes", n] | ["stream-bytes", n] => {
            let Some(len) = n.parse::<u64>().ok().filter(|&n| n <= MAX_GENERATED_BYTES) else {
                return Response::text(400, "byte count must be 0..=104857600\n");
            };
            let args = parse_query(query);
            let seed = args
                .get("seed")
                .and_then(|v| v.first())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or_else(|| fastrand::u64(..));
            let body = if segments.first() == Some(&"bytes") {
                Body::Random { len, seed }
            } else {
                let chunk_size = args
                    .get("chunk_size")
                    .and_then(|v| v.first())
                    .and_then(|s| s.parse::<usize>().ok())
                    .filter(|&c| (1..=MAX_STREAM_CHUNK).contains(&c))
                    .unwrap_or(DEFAULT_STREAM_CHUNK);
                Body::Stream {
                    len,
                    seed,
                    chunk_size,
                }
            };
            Response {
                status: 200,
                headers: vec![("content-type", "application/octet-stream".into())],
                body,
            }
        }
        _ => Response::text(404, "not found\n"),
    }
}

const INDEX: &str = "ringress demo upstream (httpbin-like)
endpoints: /get /post /put /patch /delete /anything[/...] /headers /ip /user-agent
           /status/N /delay/N /redirect/N /bytes/N /stream-bytes/N
";

fn status(code: &str) -> Response {
    let code = match code.parse::<u16>() {
        Ok(code) if (200..=599).contains(&code) => code,
        _ => return Response::text(400, "status code must be 200..=599\n"),
    };
    let mut response = Response::empty(code);
    match code {
        418 => {
            response = Response::text(418, TEAPOT);
            response
                .headers
                .push(("x-more-info", "http://tools.ietf.org/html/rfc2324".into()));
        }
        401 => response
            .headers
            .push(("www-authenticate", r#"Basic realm="Fake Realm""#.into())),
        407 => response
            .headers
            .push(("proxy-authenticate", r#"Basic realm="Fake Realm""#.into())),
        300..=399 if code != 304 => response.headers.push(("location", "/redirect/1".into())),
        _ => {}
    }
    response
}

/// Path and query of a request target (origin-form or absolute-form).
fn split_target(target: &str) -> (&str, &str) {
    let target = match target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    }
}

/// The JSON echo of `/get`, `/anything`, `/post`...
fn echo(request: &Request, body: &[u8], peer: SocketAddr, with_body: bool) -> Json {
    let (_, query) = split_target(&request.target);
    let args = parse_query(query)
        .into_iter()
        .map(|(k, mut v)| {
            let value = if v.len() == 1 {
                Json::Str(v.remove(0))
            } else {
                Json::Arr(v.into_iter().map(Json::Str).collect())
            };
            (k, value)
        })
        .collect();
    let mut fields = vec![("args".to_owned(), Json::Obj(args))];
    if with_body {
        let data = match std::str::from_utf8(body) {
            Ok(text) => text.to_owned(),
            Err(_) => format!("data:application/octet-stream;base64,{}", base64(body)),
        };
        fields.push(("data".into(), Json::Str(data)));
    }
    fields.push(("headers".into(), headers_json(request)));
    if with_body {
        fields.push(("method".into(), Json::Str(request.method.clone())));
    }
    fields.push(("origin".into(), Json::Str(origin(request, peer))));
    fields.push(("url".into(), Json::Str(url(request, peer))));
    Json::Obj(fields)
}

/// Request headers with Title-Case names, repeated ones joined with `,`, sorted.
fn headers_json(request: &Request) -> Json {
    let mut merged: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &request.headers {
        merged
            .entry(title_case(name))
            .and_modify(|v| {
                v.push(',');
                v.push_str(value);
            })
            .or_insert_with(|| value.clone());
    }
    Json::Obj(merged.into_iter().map(|(k, v)| (k, Json::Str(v))).collect())
}

/// `x-forwarded-for` → `X-Forwarded-For`.
fn title_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

/// The client as httpbin reports it: `X-Forwarded-For` when a proxy set it, else the peer.
fn origin(request: &Request, peer: SocketAddr) -> String {
    match request.header("x-forwarded-for") {
        Some(xff) if !xff.trim().is_empty() => xff.trim().to_owned(),
        _ => peer.ip().to_string(),
    }
}

/// The URL the client asked for: scheme from `X-Forwarded-Proto` (else http), the
/// `Host` header (else the peer address), then the target's path and query.
fn url(request: &Request, peer: SocketAddr) -> String {
    let scheme = request
        .header("x-forwarded-proto")
        .and_then(|p| p.split(',').next())
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .unwrap_or("http");
    let host = request
        .header("host")
        .map_or_else(|| peer.to_string(), str::to_owned);
    let (path, query) = split_target(&request.target);
    if query.is_empty() {
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{host}{path}?{query}")
    }
}

/// `a=1&b=x+y&a=2` → {a: [1, 2], b: ["x y"]}, percent-decoded.
fn parse_query(query: &str) -> BTreeMap<String, Vec<String>> {
    let mut args: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        args.entry(percent_decode(key))
            .or_default()
            .push(percent_decode(value));
    }
    args
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| bytes.get(j).and_then(|&c| (c as char).to_digit(16));
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                if let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= group.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Just enough JSON for the echo endpoints, printed like httpbin (two-space indent).
#[derive(Debug)]
enum Json {
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn write(&self, out: &mut String, indent: usize) {
        match self {
            Json::Str(s) => crate::demo::push_quoted(out, s),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    push_indent(out, indent + 1);
                    item.write(out, indent + 1);
                }
                if !items.is_empty() {
                    out.push('\n');
                    push_indent(out, indent);
                }
                out.push(']');
            }
            Json::Obj(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    push_indent(out, indent + 1);
                    crate::demo::push_quoted(out, key);
                    out.push_str(": ");
                    value.write(out, indent + 1);
                }
                if !fields.is_empty() {
                    out.push('\n');
                    push_indent(out, indent);
                }
                out.push('}');
            }
        }
    }
}

fn push_indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

/// The reason phrase of the status line: ringress's own table, plus the one code
/// `/status/N` gives meaning to that a gateway never sends.
fn reason(status: u16) -> &'static str {
    match (status, crate::http::reason_phrase(status)) {
        (407, _) => "Proxy Authentication Required",
        (_, "") => "Unknown",
        (_, phrase) => phrase,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    /// An in-memory connection: reads `input` stopping at each boundary in `splits`
    /// (so a parser sees the bytes cut there), collects what is written.
    struct MemStream {
        input: Vec<u8>,
        pos: usize,
        splits: Vec<usize>,
        output: Vec<u8>,
    }

    impl Read for MemStream {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let boundary = self
                .splits
                .iter()
                .copied()
                .find(|&s| s > self.pos)
                .unwrap_or(self.input.len())
                .min(self.input.len());
            let n = buf.len().min(boundary - self.pos);
            buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    impl Write for MemStream {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn peer() -> SocketAddr {
        "192.0.2.7:5555".parse().unwrap()
    }

    /// Serves `input` read in pieces cut at `splits`; returns what was written.
    fn serve_bytes(input: &[u8], splits: Vec<usize>) -> String {
        let mut stream = MemStream {
            input: input.to_vec(),
            pos: 0,
            splits,
            output: Vec::new(),
        };
        let _ = serve(&mut stream, peer(), &AtomicBool::new(false));
        String::from_utf8_lossy(&stream.output).into_owned()
    }

    const PIPELINE: &str = "GET /status/418 HTTP/1.1\r\nHost: a\r\n\r\n\
        POST /anything/x?q=1&q=2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n\
        PUT /put HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
        GET /get?x=%41+b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n\
        GET /never-read HTTP/1.1\r\n\r\n";

    #[test]
    fn pipelined_requests_are_answered_in_order_over_every_split() {
        let whole = serve_bytes(PIPELINE.as_bytes(), Vec::new());
        assert_eq!(whole.matches("HTTP/1.1 ").count(), 4, "{whole}");
        let first = whole.find("418 I'm a teapot").unwrap();
        let second = whole.find("\"data\": \"hello, world\"").unwrap();
        let third = whole.find("\"data\": \"abc\"").unwrap();
        let fourth = whole.find("\"x\": \"A b\"").unwrap();
        assert!(
            first < second && second < third && third < fourth,
            "{whole}"
        );
        assert!(
            whole.contains("\"q\": [\n      \"1\",\n      \"2\"\n    ]"),
            "{whole}"
        );
        assert!(
            whole.contains("\"url\": \"http://a/anything/x?q=1&q=2\""),
            "{whole}"
        );
        assert!(whole.contains("\"origin\": \"192.0.2.7\""), "{whole}");
        assert!(
            whole.ends_with("}\n"),
            "the request after Connection: close was answered"
        );
        for split in 1..PIPELINE.len() {
            assert_eq!(
                serve_bytes(PIPELINE.as_bytes(), vec![split]),
                whole,
                "split at {split}"
            );
        }
        let every_byte: Vec<usize> = (1..PIPELINE.len()).collect();
        assert_eq!(serve_bytes(PIPELINE.as_bytes(), every_byte), whole);
    }

    fn status_of(output: &str) -> u16 {
        output
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {output:?}"))
    }

    #[test]
    fn limits_and_malformed_requests_are_refused_and_close() {
        let long_head = format!(
            "GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let too_many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        let huge_length = format!(
            "POST /post HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        let huge_chunk = format!(
            "POST /post HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            MAX_BODY_BYTES + 1
        );
        let cases: [(&str, u16); 10] = [
            (&long_head, 431),
            (&too_many, 431),
            (&huge_length, 413),
            (&huge_chunk, 413),
            (
                "POST /post HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                400,
            ),
            (
                "POST /post HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
                400,
            ),
            (
                "POST /post HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n",
                400,
            ),
            (
                "POST /post HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                501,
            ),
            (
                "POST /post HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                400,
            ),
            (
                "GET / HTTP/1.1\r\nbad header\r\n\r\nGET / HTTP/1.1\r\n\r\n",
                400,
            ),
        ];
        for (input, expected) in cases {
            let output = serve_bytes(input.as_bytes(), Vec::new());
            assert_eq!(status_of(&output), expected, "{output}");
            assert!(output.contains("connection: close\r\n"), "{output}");
            assert_eq!(output.matches("HTTP/1.1 ").count(), 1, "{output}");
        }
        // Just inside the limits is fine.
        let many: String = (0..MAX_HEADERS - 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let output = serve_bytes(
            format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes(),
            Vec::new(),
        );
        assert_eq!(status_of(&output), 200, "{output}");
    }

    #[test]
    fn http10_expect_and_head() {
        let output = serve_bytes(
            b"GET /get HTTP/1.0\r\n\r\nGET /get HTTP/1.0\r\n\r\n",
            Vec::new(),
        );
        assert_eq!(
            output.matches("HTTP/1.1 200").count(),
            1,
            "1.0 closes by default"
        );
        assert!(output.contains("connection: close"));
        let output = serve_bytes(
            b"GET /ip HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /ip HTTP/1.0\r\n\r\n",
            Vec::new(),
        );
        assert_eq!(output.matches("HTTP/1.1 200").count(), 2, "{output}");
        let output = serve_bytes(b"GET /stream-bytes/5 HTTP/1.0\r\n\r\n", Vec::new());
        assert!(
            !output.contains("chunked") && output.contains("connection: close"),
            "{output}"
        );
        // The body arrives after the 100 Continue.
        let input = b"POST /post HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi";
        let head_len = input.len() - 2;
        let output = serve_bytes(input, vec![head_len]);
        assert!(
            output.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
            "{output}"
        );
        let output = serve_bytes(
            b"HEAD /bytes/100 HTTP/1.1\r\nConnection: close\r\n\r\n",
            Vec::new(),
        );
        assert!(
            output.ends_with("content-length: 100\r\nconnection: close\r\n\r\n"),
            "{output}"
        );
    }

    #[test]
    fn endpoints() {
        let get = |target: &str| {
            let input = format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
            serve_bytes(input.as_bytes(), Vec::new())
        };
        assert_eq!(status_of(&get("/status/204")), 204);
        assert!(!get("/status/204").contains("content-length"));
        assert!(get("/status/302").contains("location: /redirect/1\r\n"));
        assert!(get("/status/401").contains("www-authenticate: Basic"));
        for bad in [
            "/status/600",
            "/status/99",
            "/status/abc",
            "/status/100",
            "/bytes/104857601",
            "/delay/x",
            "/redirect/0",
        ] {
            assert_eq!(status_of(&get(bad)), 400, "{bad}");
        }
        assert!(get("/redirect/3").contains("location: /redirect/2\r\n"));
        assert!(get("/redirect/1").contains("location: /get\r\n"));
        assert_eq!(status_of(&get("/nope")), 404);
        assert_eq!(status_of(&get("/status")), 404);
        assert_eq!(status_of(&get("/post")), 405);
        assert!(get("/").contains("/status/N"));
        assert!(get("/user-agent").contains("\"user-agent\": \"\""));
        let delayed = get("/delay/0");
        assert!(
            delayed.contains("\"url\": \"http://h/delay/0\""),
            "{delayed}"
        );
        // Seeded bytes are reproducible.
        let a = get("/bytes/64?seed=7");
        assert_eq!(a, get("/bytes/64?seed=7"));
        assert!(a.contains("content-length: 64\r\n"));
        let stream = get("/stream-bytes/25000?chunk_size=10000");
        assert!(stream.contains("transfer-encoding: chunked\r\n"));
        assert_eq!(
            stream.matches("\r\n2710\r\n").count(),
            2,
            "two 10000-byte chunks"
        );
        // Absolute-form targets route by their path.
        assert_eq!(status_of(&get("http://h/status/418")), 418);
    }

    #[test]
    fn headers_are_title_cased_and_merged_and_forwarded_values_used() {
        let input = "GET /anything HTTP/1.1\r\nhost: h:8080\r\nx-custom-thing: 1\r\nX-CUSTOM-THING: 2\r\n\
            x-forwarded-for: 203.0.113.9\r\nx-forwarded-proto: https\r\nConnection: close\r\n\r\n";
        let output = serve_bytes(input.as_bytes(), Vec::new());
        assert!(output.contains("\"X-Custom-Thing\": \"1,2\""), "{output}");
        assert!(output.contains("\"Host\": \"h:8080\""), "{output}");
        assert!(output.contains("\"origin\": \"203.0.113.9\""), "{output}");
        assert!(
            output.contains("\"url\": \"https://h:8080/anything\""),
            "{output}"
        );
        assert!(output.contains("\"method\": \"GET\""), "{output}");
    }

    #[test]
    fn small_parsers() {
        assert!(matches!(parse_chunk_size(b"1a"), Ok(26)));
        assert!(matches!(parse_chunk_size(b"0;name=value"), Ok(0)));
        assert!(matches!(parse_chunk_size(b"A ;x"), Ok(10)));
        for bad in [&b""[..], b";", b"g", b"1x", b"1000000000000000", b"-1"] {
            assert!(parse_chunk_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(percent_decode("a%20b+c%zz%4"), "a b c%zz%4");
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xff, 0xfe, 0x00, 0x80]), "//4AgA==");
        assert_eq!(title_case("x-REQUEST-id"), "X-Request-Id");
        assert_eq!(reason(418), "I'm a teapot");
        assert_eq!(reason(407), "Proxy Authentication Required");
        assert_eq!(reason(599), "Unknown");
        let mut out = String::new();
        crate::demo::push_quoted(&mut out, "a\"b\\c\n\u{1}é");
        assert_eq!(out, r#""a\"b\\c\n\u0001é""#);
        assert_eq!(split_target("https://h:1"), ("/", ""));
        assert_eq!(split_target("/a?b=c?d"), ("/a", "b=c?d"));
    }

    #[test]
    fn binary_bodies_are_echoed_as_base64_data_urls() {
        let mut input =
            b"POST /post HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\n".to_vec();
        input.extend_from_slice(&[0xff, 0x00, 0x01]);
        let output = serve_bytes(&input, Vec::new());
        assert!(
            output.contains("\"data\": \"data:application/octet-stream;base64,/wAB\""),
            "{output}"
        );
    }

    // Over real loopback sockets.

    /// A minimal HTTP/1.1 client: status, headers (lower-case names), decoded body.
    fn read_response(reader: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status: u16 = line[9..12].parse().unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            let (name, value) = trimmed.split_once(':').unwrap();
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if header("transfer-encoding").as_deref() == Some("chunked") {
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let size = usize::from_str_radix(line.trim_end(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = header("content-length") {
            body.resize(len.parse().unwrap(), 0);
            reader.read_exact(&mut body).unwrap();
        }
        (status, headers, body)
    }

    fn connect(bin: &Httpbin) -> (TcpStream, BufReader<TcpStream>) {
        let stream = TcpStream::connect(bin.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        (stream, reader)
    }

    fn loopback() -> Httpbin {
        spawn("127.0.0.1:0".parse().unwrap()).unwrap()
    }

    #[test]
    fn teapot_and_404_over_loopback() {
        let bin = loopback();
        assert_ne!(bin.addr().port(), 0);
        let (mut stream, mut reader) = connect(&bin);
        stream
            .write_all(b"GET /status/418 HTTP/1.1\r\nHost: httpbin.example.com\r\n\r\n")
            .unwrap();
        let (status, headers, body) = read_response(&mut reader);
        assert_eq!(status, 418);
        assert!(headers.contains(&(
            "x-more-info".into(),
            "http://tools.ietf.org/html/rfc2324".into()
        )));
        assert_eq!(String::from_utf8(body).unwrap(), TEAPOT);
        stream
            .write_all(b"GET /no/such/path HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut reader).0, 404);
    }

    #[test]
    fn keep_alive_serves_two_requests_on_one_connection() {
        let bin = loopback();
        let (mut stream, mut reader) = connect(&bin);
        stream
            .write_all(b"GET /get HTTP/1.1\r\nHost: one\r\n\r\n")
            .unwrap();
        let (status, _, body) = read_response(&mut reader);
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains("\"url\": \"http://one/get\""));
        stream
            .write_all(b"GET /ip HTTP/1.1\r\nHost: two\r\n\r\n")
            .unwrap();
        let (status, _, body) = read_response(&mut reader);
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains("\"origin\": \"127.0.0.1\""));
    }

    #[test]
    fn chunked_post_to_anything_echoes_the_data() {
        let bin = loopback();
        let (mut stream, mut reader) = connect(&bin);
        stream
            .write_all(b"POST /anything/echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello ")
            .unwrap();
        thread::sleep(Duration::from_millis(20));
        stream.write_all(b"\r\n5\r\nworld\r\n0\r\n\r\n").unwrap();
        let (status, _, body) = read_response(&mut reader);
        assert_eq!(status, 200);
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("\"data\": \"hello world\""), "{text}");
        assert!(text.contains("\"method\": \"POST\""), "{text}");
    }

    #[test]
    fn bytes_and_stream_bytes_have_the_asked_length() {
        let bin = loopback();
        let (mut stream, mut reader) = connect(&bin);
        for n in [0usize, 1, 65_536, 1_000_003] {
            stream
                .write_all(format!("GET /bytes/{n} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
                .unwrap();
            let (status, headers, body) = read_response(&mut reader);
            assert_eq!(status, 200);
            assert!(headers.contains(&("content-length".into(), n.to_string())));
            assert_eq!(body.len(), n);
            stream
                .write_all(format!("GET /stream-bytes/{n} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
                .unwrap();
            let (status, _, body) = read_response(&mut reader);
            assert_eq!(status, 200);
            assert_eq!(body.len(), n);
        }
    }

    #[test]
    fn headers_json_contains_a_sent_header() {
        let bin = loopback();
        let (mut stream, mut reader) = connect(&bin);
        stream
            .write_all(b"GET /headers HTTP/1.1\r\nHost: h\r\nx-test-header: ringress-42\r\n\r\n")
            .unwrap();
        let (status, headers, body) = read_response(&mut reader);
        assert_eq!(status, 200);
        assert!(headers.contains(&("content-type".into(), "application/json".into())));
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with("{\n  \"headers\": {\n"), "{text}");
        assert!(
            text.contains("\"X-Test-Header\": \"ringress-42\""),
            "{text}"
        );
    }

    #[test]
    fn dropping_stops_accepting() {
        // An address of its own: on 127.0.0.1 another test running in parallel may bind
        // the freed port, and the connect below would reach that test's listener.
        let bin = spawn("127.0.0.93:0".parse().unwrap()).unwrap();
        let addr = bin.addr();
        let (mut stream, mut reader) = connect(&bin);
        // Make sure the connection has been accepted before stopping.
        stream
            .write_all(b"GET /ip HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut reader).0, 200);
        drop(bin);
        assert!(
            TcpStream::connect(addr).is_err(),
            "still accepting after drop"
        );
        // The open connection gets its answer, then is closed.
        stream
            .write_all(b"GET /get HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        let (status, headers, _) = read_response(&mut reader);
        assert_eq!(status, 200);
        assert!(headers.contains(&("connection".into(), "close".into())));
    }

    /// curl as the client: a large body (curl sends `Expect: 100-continue`), a chunked
    /// upload, and two URLs reusing one connection.
    #[test]
    fn curl_is_served() {
        use std::process::Command;
        if Command::new("curl").arg("--version").output().is_err() {
            eprintln!("note: curl is not on PATH; skipping the curl test");
            return;
        }
        let bin = loopback();
        let base = format!("http://{}", bin.addr());
        let body = "x".repeat(2 * 1024 * 1024);
        let curl = |args: &[&str], stdin: &str| {
            let mut child = Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "20",
                    "-w",
                    "\\n%{http_code} %{num_connects}\\n",
                ])
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.as_bytes())
                .unwrap();
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success());
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        let out = curl(&["--data-binary", "@-", &format!("{base}/post")], &body);
        assert!(out.contains(&format!("\"data\": \"{body}\"")));
        assert!(out.ends_with("\n200 1\n"), "{}", &out[out.len() - 20..]);
        let out = curl(
            &[
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                "@-",
                &format!("{base}/anything"),
            ],
            "chunked upload",
        );
        assert!(out.contains("\"data\": \"chunked upload\""), "{out}");
        assert!(out.contains("\"Transfer-Encoding\": \"chunked\""), "{out}");
        let out = curl(
            &[&format!("{base}/status/418"), &format!("{base}/bytes/10")],
            "",
        );
        assert!(out.contains("I'm a teapot"), "{out}");
        // The second transfer reused the first connection.
        assert!(out.ends_with("\n200 0\n"), "{out:?}");
    }

    #[test]
    fn many_concurrent_connections() {
        let bin = loopback();
        let addr = bin.addr();
        let clients: Vec<_> = (0..32)
            .map(|i| {
                thread::spawn(move || {
                    let stream = TcpStream::connect(addr).unwrap();
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut stream = stream;
                    for _ in 0..10 {
                        stream
                            .write_all(
                                format!("GET /anything/{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
                            )
                            .unwrap();
                        let (status, _, body) = read_response(&mut reader);
                        assert_eq!(status, 200);
                        assert!(
                            String::from_utf8_lossy(&body).contains(&format!("/anything/{i}\""))
                        );
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().unwrap();
        }
    }
}
