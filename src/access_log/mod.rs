//! The access log: one line per request answered, in Istio's default text format (or
//! its JSON form, or the operator's own; [`format`](mod@format)), to stdout by default as Istio's
//! gateway does (`--access-log -|PATH|off`, `--access-log-format text|json|FORMAT`).
//!
//! A shard never waits for the log. Each request fills a [`Record`] as it goes (what
//! the client asked for when its head is read, what the upstream did as it answers);
//! when the request is done the shard renders its line into the shard's buffer
//! ([`ShardLog`]), and hands a full buffer (or, every 100 ms, whatever it holds) to
//! the writer thread over a bounded channel ([`Writer`]), which looks for them every
//! 50 ms. When the writer cannot keep
//! up (a full disk, a stuck pipe) the shard drops the lines instead of waiting, counts
//! them (`ringress_access_log_dropped_total`), and the writer notes it.

pub(crate) mod format;

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

pub use format::{Format, FormatError};

use crate::http::RequestId;

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
    Off,
}

impl std::str::FromStr for Target {
    type Err = String;
    /// `-` (stdout), `off`, or a file path (appended to).
    fn from_str(s: &str) -> Result<Target, String> {
        match s {
            "-" | "/dev/stdout" => Ok(Target::Stdout),
            "off" => Ok(Target::Off),
            "" => Err("expected `-` (stdout), `off` or a file path".to_owned()),
            path => Ok(Target::File(PathBuf::from(path))),
        }
    }
}

/// Bytes a shard gathers before it hands them to the writer.
const FLUSH_AT: usize = 64 * 1024;
/// Buffers that may wait for the writer; more are dropped.
const QUEUE: usize = 64;
/// How often the writer looks for lines. It polls rather than waits on the channel,
/// so a shard handing over lines never has to wake a thread (a system call, and a
/// context switch on the shard's CPU).
const WRITE_EVERY: Duration = Duration::from_millis(50);

/// What one request did, as a log line reads it (see [`Record::exchange`]). Strings
/// are bytes as received.
#[derive(Debug, Clone)]
pub(crate) struct Exchange<'a> {
    /// When the request started: milliseconds since the Unix epoch.
    pub(crate) start_ms: u64,
    pub(crate) method: Option<&'a [u8]>,
    pub(crate) path: Option<&'a [u8]>,
    pub(crate) original_path: Option<&'a [u8]>,
    pub(crate) protocol: &'a str,
    pub(crate) status: u16,
    /// Envoy's response flags (`NR`, `UF`, `UH`...), comma-separated; empty for none.
    pub(crate) flags: &'a str,
    pub(crate) details: Option<&'a str>,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) duration_ms: u64,
    pub(crate) upstream_service_time_ms: Option<u64>,
    pub(crate) forwarded_for: Option<&'a [u8]>,
    pub(crate) user_agent: Option<&'a [u8]>,
    /// The id ringress generated when the client sent none.
    pub(crate) request_id: Option<&'a RequestId>,
    pub(crate) client_request_id: Option<&'a [u8]>,
    pub(crate) authority: Option<&'a [u8]>,
    pub(crate) upstream_host: Option<SocketAddr>,
    pub(crate) upstream_cluster: Option<&'a [u8]>,
    pub(crate) upstream_local: Option<SocketAddr>,
    pub(crate) downstream_local: Option<SocketAddr>,
    pub(crate) downstream_remote: SocketAddr,
    pub(crate) server_name: Option<&'a [u8]>,
    pub(crate) route_name: Option<&'a [u8]>,
    /// `iss/sub` of the request's verified JWT.
    pub(crate) request_principal: Option<&'a [u8]>,
}

/// A range of a record's text.
#[derive(Debug, Clone, Copy, Default)]
struct Span(u32, u32);

/// What one request did, filled in as it is served (only while the log is on). Its
/// strings are copied into one buffer.
#[derive(Debug)]
pub(crate) struct Record {
    /// When the request started, by the shard's clock (the wall-clock time is worked
    /// out from it as the line is written: [`format::Memo::wall_time_ms`]).
    started: Instant,
    /// The strings, one after the other (spans index into it), as received: header
    /// values are bytes, not always UTF-8 ([`format`](mod@format) escapes what needs it).
    text: Vec<u8>,
    method: Option<Span>,
    path: Option<Span>,
    original_path: Option<Span>,
    authority: Option<Span>,
    user_agent: Option<Span>,
    forwarded_for: Option<Span>,
    client_request_id: Option<Span>,
    upstream_cluster: Option<Span>,
    route_name: Option<Span>,
    server_name: Option<Span>,
    request_principal: Option<Span>,
    /// Details made for this request (an RBAC policy's name in them), instead of
    /// `details`.
    details_text: Option<Span>,
    pub(crate) request_id: Option<RequestId>,
    pub(crate) protocol: &'static str,
    pub(crate) status: u16,
    /// Envoy's response flag of what went wrong (`NR`, `UF`...), or empty.
    pub(crate) flags: &'static str,
    /// The request was tried as often as its retry policy allows (adds `URX`).
    pub(crate) retries_exhausted: bool,
    pub(crate) details: Option<&'static str>,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) upstream_service_time_ms: Option<u64>,
    pub(crate) upstream_host: Option<SocketAddr>,
    pub(crate) upstream_local: Option<SocketAddr>,
    pub(crate) downstream_local: Option<SocketAddr>,
    pub(crate) downstream_remote: SocketAddr,
}

/// Which of a record's strings to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Method,
    Path,
    OriginalPath,
    Authority,
    UserAgent,
    ForwardedFor,
    ClientRequestId,
    UpstreamCluster,
    RouteName,
    ServerName,
    RequestPrincipal,
    Details,
}

thread_local! {
    /// Records of finished requests, kept for the next ones (with their text's room):
    /// boxed as a connection holds them, so reuse allocates nothing.
    #[expect(clippy::vec_box, reason = "the boxes are what is reused")]
    static SPARE: RefCell<Vec<Box<Record>>> = const { RefCell::new(Vec::new()) };
}

/// Records a shard keeps for reuse at most.
const SPARE_RECORDS: usize = 256;

impl Record {
    /// A record of a request from `peer` that starts now: a reused one when the
    /// shard has one.
    pub(crate) fn start(peer: SocketAddr) -> Box<Record> {
        let spare = SPARE.with(|spare| spare.borrow_mut().pop());
        match spare {
            Some(mut record) => {
                let text = std::mem::take(&mut record.text);
                *record = Record::new(peer);
                record.text = text;
                record.text.clear();
                record
            }
            None => Box::new(Record::new(peer)),
        }
    }

    /// Gives a finished record back for reuse.
    pub(crate) fn recycle(record: Box<Record>) {
        SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_RECORDS {
                spare.push(record);
            }
        });
    }

    fn new(peer: SocketAddr) -> Record {
        Record {
            started: crate::uring::now(),
            text: Vec::new(),
            method: None,
            path: None,
            original_path: None,
            authority: None,
            user_agent: None,
            forwarded_for: None,
            client_request_id: None,
            upstream_cluster: None,
            route_name: None,
            server_name: None,
            request_principal: None,
            details_text: None,
            request_id: None,
            protocol: "-",
            status: 0,
            flags: "",
            retries_exhausted: false,
            details: None,
            bytes_received: 0,
            bytes_sent: 0,
            upstream_service_time_ms: None,
            upstream_host: None,
            upstream_local: None,
            downstream_local: None,
            downstream_remote: peer,
        }
    }

    /// Whether a request head was read (a line is written only then, or when an
    /// answer went out without one, such as a 400).
    pub(crate) fn has_request(&self) -> bool {
        self.method.is_some() || self.status != 0
    }

    /// Whether the client sent an `x-request-id`.
    pub(crate) fn has_client_request_id(&self) -> bool {
        self.client_request_id.is_some()
    }

    /// Sets one of the strings.
    pub(crate) fn set(&mut self, field: Field, value: &[u8]) {
        self.set_with(field, |text| text.extend_from_slice(value));
    }

    /// Sets `x-forwarded-for` as forwarded: the client's list, then `client`.
    pub(crate) fn set_forwarded_for<'v>(
        &mut self,
        sent: impl Iterator<Item = &'v [u8]>,
        client: IpAddr,
    ) {
        self.set_with(Field::ForwardedFor, |text| {
            for value in sent.filter(|v| !v.is_empty()) {
                text.extend_from_slice(value);
                text.extend_from_slice(b", ");
            }
            crate::http::push_ip(text, client);
        });
    }

    /// Sets `field` to what `write` appends to the text.
    fn set_with(&mut self, field: Field, write: impl FnOnce(&mut Vec<u8>)) {
        if self.text.capacity() == 0 {
            self.text.reserve(256);
        }
        let start = self.text.len();
        write(&mut self.text);
        let span = Some(Span(start as u32, self.text.len() as u32));
        let slot = match field {
            Field::Method => &mut self.method,
            Field::Path => &mut self.path,
            Field::OriginalPath => &mut self.original_path,
            Field::Authority => &mut self.authority,
            Field::UserAgent => &mut self.user_agent,
            Field::ForwardedFor => &mut self.forwarded_for,
            Field::ClientRequestId => &mut self.client_request_id,
            Field::UpstreamCluster => &mut self.upstream_cluster,
            Field::RouteName => &mut self.route_name,
            Field::ServerName => &mut self.server_name,
            Field::RequestPrincipal => &mut self.request_principal,
            Field::Details => &mut self.details_text,
        };
        *slot = span;
    }

    /// The flags as printed: `URX` joins the flag of the last try's failure.
    fn flags(&self) -> &'static str {
        if !self.retries_exhausted {
            return self.flags;
        }
        match self.flags {
            "" => "URX",
            "UF" => "UF,URX",
            "UH" => "UH,URX",
            "UC" => "UC,URX",
            "UR" => "UR,URX",
            "UT" => "UT,URX",
            "UPE" => "UPE,URX",
            other => other,
        }
    }

    fn get(&self, span: Option<Span>) -> Option<&[u8]> {
        let Span(start, end) = span?;
        self.text.get(start as usize..end as usize)
    }

    /// The record as a line reads it, started at `start_ms` (since the Unix epoch),
    /// its duration ending now.
    pub(crate) fn exchange(&self, start_ms: u64) -> Exchange<'_> {
        let duration = crate::uring::now().saturating_duration_since(self.started);
        Exchange {
            start_ms,
            method: self.get(self.method),
            path: self.get(self.path),
            original_path: self.get(self.original_path),
            protocol: self.protocol,
            status: self.status,
            flags: self.flags(),
            details: match self.get(self.details_text) {
                Some(text) => std::str::from_utf8(text).ok(),
                None => self.details,
            },
            bytes_received: self.bytes_received,
            bytes_sent: self.bytes_sent,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            upstream_service_time_ms: self.upstream_service_time_ms,
            forwarded_for: self.get(self.forwarded_for),
            user_agent: self.get(self.user_agent),
            request_id: self.request_id.as_ref(),
            client_request_id: self.get(self.client_request_id),
            authority: self.get(self.authority),
            upstream_host: self.upstream_host,
            upstream_cluster: self.get(self.upstream_cluster),
            upstream_local: self.upstream_local,
            downstream_local: self.downstream_local,
            downstream_remote: self.downstream_remote,
            server_name: self.get(self.server_name),
            route_name: self.get(self.route_name),
            request_principal: self.get(self.request_principal),
        }
    }
}

/// What a shard needs of the writer: the format and the way to it.
#[derive(Clone)]
pub(crate) struct LogHandle {
    format: Arc<Format>,
    sender: Sender<Vec<u8>>,
}

/// One shard's side of the access log: the format, the lines not yet handed over.
pub(crate) struct ShardLog {
    format: Option<Arc<Format>>,
    memo: RefCell<format::Memo>,
    lines: RefCell<Vec<u8>>,
    writer: Option<Sender<Vec<u8>>>,
}

impl ShardLog {
    /// The shard side of a writer (`None`: the log is off).
    pub(crate) fn new(handle: Option<LogHandle>) -> ShardLog {
        let (format, writer) = match handle {
            Some(LogHandle { format, sender }) => (Some(format), Some(sender)),
            None => (None, None),
        };
        ShardLog {
            format,
            memo: RefCell::new(format::Memo::default()),
            lines: RefCell::new(Vec::new()),
            writer,
        }
    }

    pub(crate) fn is_on(&self) -> bool {
        self.format.is_some()
    }

    /// Writes the line of `record`; hands the buffer over once it is full. Returns
    /// the lines dropped (see [`ShardLog::flush`]).
    pub(crate) fn log(&self, record: &Record) -> u64 {
        let Some(format) = &self.format else {
            return 0;
        };
        let mut lines = self.lines.borrow_mut();
        if lines.capacity() == 0 {
            lines.reserve(FLUSH_AT + 1024);
        }
        let mut memo = self.memo.borrow_mut();
        let start = memo.wall_time_ms(record.started);
        format.render(&record.exchange(start), &mut memo, &mut lines);
        drop(memo);
        if lines.len() < FLUSH_AT {
            return 0;
        }
        drop(lines);
        self.flush()
    }

    /// Hands what is buffered to the writer, or drops it if the writer is behind;
    /// returns how many lines were dropped.
    pub(crate) fn flush(&self) -> u64 {
        let (Some(writer), mut lines) = (&self.writer, self.lines.borrow_mut()) else {
            return 0;
        };
        if lines.is_empty() {
            return 0;
        }
        let batch = std::mem::take(&mut *lines);
        match writer.try_send(batch) {
            Ok(()) => 0,
            Err(TrySendError::Full(batch) | TrySendError::Disconnected(batch)) => {
                batch.iter().filter(|&&b| b == b'\n').count() as u64
            }
        }
    }
}

/// The thread that writes the access log, and the shards' way to it.
pub(crate) struct Writer {
    format: Arc<Format>,
    sender: Sender<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Opens `target` (a file is created if missing and appended to) and starts the
    /// writer; `None` when the log is off.
    pub(crate) fn start(target: &Target, format: Format) -> io::Result<Option<Writer>> {
        let mut out: Box<dyn Write + Send> = match target {
            Target::Off => return Ok(None),
            Target::Stdout => Box::new(io::stdout()),
            Target::File(path) => Box::new(
                File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
            ),
        };
        let (sender, batches) = crossbeam_channel::bounded::<Vec<u8>>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("ringress-access-log".into())
            .spawn(move || write_batches(&batches, &mut *out))?;
        Ok(Some(Writer {
            format: Arc::new(format),
            sender,
            thread: Some(thread),
        }))
    }

    /// What each shard keeps of the writer.
    pub(crate) fn handle(&self) -> LogHandle {
        LogHandle {
            format: self.format.clone(),
            sender: self.sender.clone(),
        }
    }

    /// Waits until every line handed over is written (the shards' senders must be
    /// gone, as after a drain).
    pub(crate) fn finish(mut self) {
        let (sender, _) = crossbeam_channel::bounded(1);
        drop(std::mem::replace(&mut self.sender, sender));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_batches(batches: &Receiver<Vec<u8>>, out: &mut dyn Write) {
    let mut failed = false;
    loop {
        let batch = match batches.try_recv() {
            Ok(batch) => batch,
            Err(TryRecvError::Empty) => {
                std::thread::sleep(WRITE_EVERY);
                continue;
            }
            Err(TryRecvError::Disconnected) => return,
        };
        let written = out.write_all(&batch).and_then(|()| out.flush());
        match written {
            Err(e) if !failed => {
                failed = true;
                tracing::error!(error = %e, "cannot write the access log; lines are dropped until it works again");
            }
            Ok(()) if failed => {
                failed = false;
                tracing::info!("the access log is written again");
            }
            _ => {}
        }
    }
}
