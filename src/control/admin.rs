//! The admin endpoint: a small HTTP/1.1 server on its own thread (default
//! `127.0.0.1:15000`, Envoy's admin port, which Istio users already type) that tells
//! operators what ringress is serving and lets them reload it. It sits beside the
//! accept → TLS → route → upstream path, never on it: it only reads the shared
//! [`Status`] (snapshot, configuration, the shards' relaxed atomic counters) and sends
//! reload requests to the control thread.
//!
//! Routes:
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /` | this list of routes (plain text) |
//! | `GET /certs` | JSON: every listener and TLS server with its hosts, TLS mode, certificate source, the chain (subject, SANs, serial, expiry, days left) and for MUTUAL servers the client CA; the config generation |
//! | `GET /stats/prometheus` | Prometheus text format 0.0.4: responses, per-route responses, handshakes, connections, upstream connect failures, reloads, generation, certificate expiry, authentication and authorization outcomes, JWT key set state |
//! | `GET /ready` | `200 ready` while serving, `503 draining` once a stop began |
//! | `GET /clusters` | Envoy's text format: each cluster's limits, and each endpoint's request counts and `health_flags` (`healthy`, `/failed_outlier_check`) |
//! | `GET /config_dump` | JSON: the validated configuration being served (never key contents), with the endpoints each destination resolved to, and `reloads`: counts, the last attempt and the last failure with its error |
//! | `POST /reload` | reloads like SIGHUP and waits for the outcome: `200 {"generation": N}` or `500 {"error": "..."}` |
//!
//! Every answer closes the connection. Unknown paths get 404, a known path with the
//! wrong method 405. Requests are parsed by ringress's own [`parse_request`]; heads
//! over [`MAX_HEAD_BYTES`] get 431. Each connection runs on its own short-lived
//! thread (a reload can take a while and must not hold up `/ready`), at most
//! [`MAX_CONNECTIONS`] at once, each bounded by [`REQUEST_TIMEOUT`].
//!
//! The endpoint can reload the configuration and shows where certificates live, so it
//! should stay on loopback; another address is allowed but logged as a warning.
//!
//! The same server, with [`Routes::Health`], is the health endpoint (`--health`): it
//! answers only `GET /healthz/ready` (Istio's gateway readiness path) as `/ready`
//! does, so it can face load balancers and the kubelet. Both wait on their socket
//! with `poll(2)` and accept without blocking: after a binary upgrade the new process
//! accepts from the same socket until this one exits.

mod clusters;
mod json;
mod metrics;
#[cfg(test)]
mod tests;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::{RecvTimeoutError, Sender};

use super::ControlEvent;
use super::status::Status;
use super::upgrade::{Holder, Inherited, OpenListeners};
use crate::http::{BodyKind, CONTINUE_100, HttpError, parse_request, reason_phrase};

/// Largest request head the endpoint reads; a larger one gets 431.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body read (and discarded: no route takes a body); a larger one
/// gets 413.
pub(crate) const MAX_BODY_BYTES: u64 = 64 * 1024;
/// How long a client has to send its whole request, and the limit on each write of
/// the answer.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; one more is answered 503 at once.
pub(crate) const MAX_CONNECTIONS: usize = 16;
/// How long `POST /reload` waits for the control thread's outcome.
pub(crate) const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the accept thread reads a request it refuses for lack of room.
const BUSY_GRACE: Duration = Duration::from_millis(50);
/// How long, after answering, the endpoint reads what the client still sends (so
/// closing does not reset the connection before the client read the answer).
const LINGER: Duration = Duration::from_millis(500);
/// How much it reads then, at most.
const LINGER_BYTES: usize = 256 * 1024;

/// The routes, as `GET /` lists them.
const INDEX: &str = "ringress admin endpoint
GET  /certs              certificates served per listener and host, with expiry
GET  /stats/prometheus   counters and gauges in the Prometheus text format
GET  /ready              200 while serving, 503 while draining
GET  /clusters           clusters, endpoints and their health, in Envoy's text format
GET  /config_dump        the configuration being served, as JSON
POST /reload             reload the configuration and certificates now
";

/// Which routes an endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Routes {
    /// Every admin route (`--admin`).
    Admin,
    /// Only `GET /healthz/ready` (`--health`): the readiness check of Istio's gateway
    /// pods (port 15021), safe to expose to a load balancer or the kubelet.
    Health,
}

impl Routes {
    fn name(self) -> &'static str {
        match self {
            Routes::Admin => "admin endpoint",
            Routes::Health => "health endpoint",
        }
    }
}

/// The running admin endpoint. Dropping it stops accepting (connections being served
/// finish on their own threads).
pub(crate) struct Admin {
    /// The bound address (a requested port 0 resolved).
    pub(crate) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Where the listening socket is offered to a binary upgrade, to withdraw it.
    offered: Option<(Arc<OpenListeners>, Holder)>,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some((listeners, holder)) = self.offered.take() {
            listeners.remove(holder, self.addr);
        }
        // The accept loop looks at `stop` at least every ACCEPT_POLL.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How often the accept loop looks whether it should stop.
const ACCEPT_POLL: Duration = Duration::from_millis(200);

/// Binds the endpoint's listening socket at `addr`, or serves `inherited` (from the
/// process before a binary upgrade) when it has one for `addr`.
pub(crate) fn listen(
    addr: SocketAddr,
    routes: Routes,
    inherited: Option<&mut Inherited>,
) -> anyhow::Result<TcpListener> {
    if let Some(fd) = inherited.and_then(|i| i.take(addr).pop()) {
        return Ok(TcpListener::from(fd));
    }
    TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} for the {}: {e}{}",
            routes.name(),
            super::bind_hint(&e, addr)
        )
    })
}

/// Starts the endpoint on `listener`; returns at once. With `offered`, the listening
/// socket is offered to binary upgrades as `holder`.
pub(crate) fn spawn(
    listener: TcpListener,
    routes: Routes,
    status: Arc<Status>,
    events: Sender<ControlEvent>,
    offered: Option<(Arc<OpenListeners>, Holder)>,
) -> anyhow::Result<Admin> {
    let name = routes.name();
    let addr = listener
        .local_addr()
        .with_context(|| format!("cannot read the {name}'s bound address"))?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("cannot set up the {name}'s socket"))?;
    if let Some((listeners, holder)) = &offered {
        listeners.add(*holder, addr, listener.as_fd());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(format!(
                "ringress-{}",
                name.split(' ').next().unwrap_or("admin")
            ))
            .spawn(move || accept_loop(&listener, routes, &stop, &status, &events))
            .with_context(|| format!("cannot start the {name} thread"))?
    };
    tracing::info!(%addr, "{name} listening");
    if routes == Routes::Admin && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "the admin endpoint is not on a loopback address: anyone who can reach it can read the configuration and reload it"
        );
    }
    Ok(Admin {
        addr,
        stop,
        thread: Some(thread),
        offered,
    })
}

/// Accepts until told to stop. The socket is non-blocking and waited on with
/// `poll(2)`: after a binary upgrade another process accepts from the same socket,
/// so a connection that woke this thread may be gone by the time it accepts.
fn accept_loop(
    listener: &TcpListener,
    routes: Routes,
    stop: &AtomicBool,
    status: &Arc<Status>,
    events: &Sender<ControlEvent>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let timeout = rustix::event::Timespec::try_from(ACCEPT_POLL).unwrap_or_default();
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [rustix::event::PollFd::new(
            listener,
            rustix::event::PollFlags::IN,
        )];
        if let Err(e) = rustix::event::poll(&mut fds, Some(&timeout)) {
            if e != rustix::io::Errno::INTR {
                tracing::warn!("admin endpoint: poll failed: {e}");
                std::thread::sleep(ACCEPT_POLL);
            }
            continue;
        }
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::warn!("admin endpoint: accept failed: {e}");
                // Out of file descriptors and the like: do not spin.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // Accepted sockets do not inherit the listener's O_NONBLOCK on Linux; make sure.
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
        if active.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::Relaxed);
            refuse_busy(&mut stream);
            continue;
        }
        let slot = ConnectionSlot(active.clone());
        let status = status.clone();
        let events = events.clone();
        let spawned = std::thread::Builder::new()
            .name("ringress-admin-conn".into())
            .spawn(move || {
                let _slot = slot;
                serve_connection(stream, routes, &status, &events);
            });
        if let Err(e) = spawned {
            tracing::warn!("admin endpoint: cannot start a connection thread: {e}");
        }
    }
}

/// Answers 503 on the accept thread. What the client already sent is read first (for
/// at most [`BUSY_GRACE`]), so closing with it unread does not reset the connection
/// before the client reads the answer.
fn refuse_busy(stream: &mut TcpStream) {
    let deadline = Instant::now() + BUSY_GRACE;
    let mut buf = [0u8; 4096];
    let mut read = 0;
    while read <= MAX_HEAD_BYTES {
        match read_some(stream, &mut buf, deadline) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    let busy = Response::text(503, "too many admin connections; try again\n");
    if busy.write_to(stream).is_ok() {
        let _ = stream.shutdown(Shutdown::Write);
    }
}

/// Frees its place in the connection count when the connection's thread ends.
struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer: status, content type and body. Always sent with `Connection: close`.
#[derive(Debug)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// For 405: the methods the path takes.
    allow: Option<&'static str>,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            allow: None,
        }
    }

    fn json(status: u16, value: &impl serde::Serialize) -> Response {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body,
            allow: None,
        }
    }

    fn write_to(&self, stream: &mut TcpStream) -> io::Result<()> {
        let mut out = Vec::with_capacity(self.body.len() + 160);
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\ncache-control: no-cache\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        if let Some(allow) = self.allow {
            let _ = write!(out, "allow: {allow}\r\n");
        }
        out.extend_from_slice(b"connection: close\r\n\r\n");
        out.extend_from_slice(&self.body);
        stream.write_all(&out)?;
        stream.flush()
    }
}

/// Reads one request, answers it and closes.
fn serve_connection(
    mut stream: TcpStream,
    routes: Routes,
    status: &Status,
    events: &Sender<ControlEvent>,
) {
    let peer = stream.peer_addr().ok();
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let response = match read_request(&mut stream, deadline) {
        Ok((method, path)) => {
            let response = match routes {
                Routes::Admin => route(&method, &path, status, events),
                Routes::Health => health_route(&method, &path, status),
            };
            tracing::debug!(?peer, %method, %path, status = response.status, "admin request");
            response
        }
        Err(RequestError::Closed) => return,
        Err(RequestError::Refused(status, why)) => {
            tracing::debug!(?peer, status, "admin request refused: {why}");
            Response::text(status, &format!("{why}\n"))
        }
    };
    if response.write_to(&mut stream).is_ok() {
        linger(&mut stream);
    }
}

/// After answering: half-close, then read (and drop) what the client still sends for
/// a moment, so unread request bytes do not turn the close into a reset that could
/// discard the answer before the client reads it.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut buf = [0u8; 4096];
    let mut read = 0;
    while read < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => read += n,
        }
    }
}

/// Why no request could be routed.
#[derive(Debug)]
enum RequestError {
    /// The client left (or sent nothing in time) before a whole head: nothing to answer.
    Closed,
    /// Answer with this status and reason.
    Refused(u16, String),
}

/// Reads a request head (and a small body, discarded) before `deadline`; returns the
/// method and the path without its query.
fn read_request(
    stream: &mut TcpStream,
    deadline: Instant,
) -> Result<(String, String), RequestError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head = loop {
        match parse_request(&buf) {
            Ok(Some(head)) => break head,
            Ok(None) if buf.len() > MAX_HEAD_BYTES => {
                return Err(refused(&HttpError::HeadTooLarge, MAX_HEAD_BYTES));
            }
            Ok(None) => {}
            Err(e) => return Err(refused(&e, MAX_HEAD_BYTES)),
        }
        // Never read past the limit by more than one byte: enough to know it was passed.
        let room = (MAX_HEAD_BYTES + 1 - buf.len().min(MAX_HEAD_BYTES)).min(chunk.len());
        match read_some(stream, &mut chunk[..room], deadline) {
            Ok(0) => {
                return Err(if buf.is_empty() {
                    RequestError::Closed
                } else {
                    RequestError::Refused(400, "the request head ended early".into())
                });
            }
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if is_timeout(&e) && !buf.is_empty() => {
                return Err(RequestError::Refused(
                    408,
                    format!("the request head did not arrive within {REQUEST_TIMEOUT:?}"),
                ));
            }
            Err(_) => return Err(RequestError::Closed),
        }
    };
    let body_len = match head.body() {
        BodyKind::None => 0,
        BodyKind::Length(n) if n <= MAX_BODY_BYTES => n,
        BodyKind::Length(n) => {
            return Err(RequestError::Refused(
                413,
                format!("request body of {n} bytes is over the admin limit of {MAX_BODY_BYTES}"),
            ));
        }
        BodyKind::Chunked | BodyKind::UntilClose => {
            return Err(RequestError::Refused(
                411,
                "the admin endpoint takes no chunked request body".into(),
            ));
        }
    };
    if body_len > 0 && head.expects_continue() {
        // curl waits a second for this before sending a body it announced.
        let _ = stream.write_all(CONTINUE_100);
    }
    // Discard the body so the answer is not lost to a reset when the socket closes.
    let already = u64::try_from(buf.len().saturating_sub(head.len())).unwrap_or(u64::MAX);
    let mut left = body_len.saturating_sub(already);
    while left > 0 {
        let room = usize::try_from(left).unwrap_or(usize::MAX).min(chunk.len());
        match read_some(stream, &mut chunk[..room], deadline) {
            Ok(0) | Err(_) => {
                return Err(RequestError::Refused(
                    400,
                    "the request body ended early".into(),
                ));
            }
            Ok(n) => left = left.saturating_sub(u64::try_from(n).unwrap_or(u64::MAX)),
        }
    }
    let path = head.path();
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    Ok((head.method().to_owned(), path.to_owned()))
}

fn refused(e: &HttpError, limit: usize) -> RequestError {
    let why = match e {
        HttpError::HeadTooLarge => format!("request head is larger than {limit} bytes"),
        other => other.to_string(),
    };
    RequestError::Refused(e.status(), why)
}

/// One read, with the time left until `deadline` as its timeout.
fn read_some(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    stream.set_read_timeout(Some(left))?;
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The answer of the health endpoint to `method path`.
fn health_route(method: &str, path: &str, status: &Status) -> Response {
    if path != HEALTH_PATH {
        return Response::text(
            404,
            &format!("the health endpoint answers GET {HEALTH_PATH} only\n"),
        );
    }
    if method != "GET" {
        return Response {
            allow: Some("GET"),
            ..Response::text(405, &format!("{HEALTH_PATH} takes GET only\n"))
        };
    }
    ready(status)
}

/// The readiness answer of `/ready` and `/healthz/ready`.
fn ready(status: &Status) -> Response {
    if status.is_ready() {
        return Response::text(200, "ready\n");
    }
    match status.failure() {
        Some(reason) => Response::text(503, &format!("failed: {reason}\n")),
        None => Response::text(503, "draining\n"),
    }
}

/// The health endpoint's one route (Istio's gateway readiness path).
pub(crate) const HEALTH_PATH: &str = "/healthz/ready";

/// The answer to `method path`.
fn route(method: &str, path: &str, status: &Status, events: &Sender<ControlEvent>) -> Response {
    let (allow, want) = match path {
        "/" | "/certs" | "/stats/prometheus" | "/ready" | "/config_dump" | "/clusters" => {
            ("GET", "GET")
        }
        "/reload" => ("POST", "POST"),
        _ => return Response::text(404, "no such admin route; GET / lists them\n"),
    };
    if method != want {
        return Response {
            allow: Some(allow),
            ..Response::text(405, &format!("{path} takes {allow} only\n"))
        };
    }
    match path {
        "/certs" => {
            let (snapshot, _) = status.serving();
            Response::json(200, &json::certs(&snapshot, now_unix()))
        }
        "/stats/prometheus" => Response {
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            ..Response::text(200, &metrics::render(status, now_unix()))
        },
        "/ready" => ready(status),
        "/clusters" => {
            let (snapshot, _) = status.serving();
            Response::text(200, &clusters::render(&snapshot, std::time::Instant::now()))
        }
        "/config_dump" => {
            let (snapshot, config) = status.serving();
            let mut dump = json::config_dump(&config, &snapshot);
            dump["reloads"] = json::reloads(status);
            dump["jwks"] = json::jwks(&config, &status.keys());
            Response::json(200, &dump)
        }
        "/reload" => reload(events),
        _ => Response::text(200, INDEX),
    }
}

/// Asks the control thread to reload and waits for its outcome.
fn reload(events: &Sender<ControlEvent>) -> Response {
    let (reply, outcome) = crossbeam_channel::bounded(1);
    let event = ControlEvent::Reload {
        cause: "POST /reload".into(),
        reply: Some(reply),
    };
    if events.send(event).is_err() {
        return Response::json(
            503,
            &serde_json::json!({ "error": "the control thread is not running" }),
        );
    }
    match outcome.recv_timeout(RELOAD_TIMEOUT) {
        Ok(Ok(generation)) => Response::json(200, &serde_json::json!({ "generation": generation })),
        Ok(Err(error)) => Response::json(500, &serde_json::json!({ "error": error })),
        Err(RecvTimeoutError::Timeout) => Response::json(
            504,
            &serde_json::json!({
                "error": format!("the reload did not finish within {RELOAD_TIMEOUT:?}; it may still complete")
            }),
        ),
        Err(RecvTimeoutError::Disconnected) => Response::json(
            503,
            &serde_json::json!({ "error": "the control thread ended without answering" }),
        ),
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
