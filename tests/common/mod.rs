//! The integration tests' shared harness: everything around the real `ringress` binary.
//!
//! A test makes a [`TempDir`], generates certificates into it with
//! [`ringress::demo::pki::generate`], starts an upstream ([`httpbin`] or one of the
//! scripted [`Upstream`]s below), writes an Istio manifest (the YAML helpers) and starts
//! the gateway with [`Gateway::start`]. Clients are real: [`curl`], [`s_client`] (openssl)
//! and a rustls client ([`tls_connect`]), plus raw sockets ([`raw_exchange`]) for what no
//! well-behaved client sends.
//!
//! Every wait is bounded; every process and thread started here ends when its handle is
//! dropped, so a failing test cleans up after itself.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub use ringress::demo::document_head;
pub use ringress::demo::httpbin;
pub use ringress::demo::pki;

/// How long a gateway has to open its listeners.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long any client process may run before it is killed.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// Read timeout of raw sockets.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The `--header-timeout` every test gateway runs with, in seconds.
pub const HEADER_TIMEOUT_SECS: u64 = 2;

/// The hosts every test PKI has a certificate for.
pub const HTTPBIN: &str = "httpbin.example.com";
pub const BOOKINFO: &str = "bookinfo.com";

// ---------------------------------------------------------------------------------------
// Temporary directories and ports

/// A fresh directory, removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ringress-itest-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a test directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `contents` to `DIR/name` and returns the path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("creating a test subdirectory");
        }
        std::fs::write(&path, contents).expect("writing a test file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nobody listens on right now, never handed out twice by this process.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
        let port = listener.local_addr().expect("local address").port();
        drop(listener);
        if given.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
    panic!("no free loopback port after 100 tries");
}

/// A port that refuses connections (bound, then closed).
pub fn closed_port() -> u16 {
    free_port()
}

/// A test PKI in `dir`: root → intermediate → [`HTTPBIN`] and [`BOOKINFO`] leaves, the
/// client certificate and the unrelated other CA.
pub fn pki(dir: &TempDir) -> pki::Pki {
    pki::generate(&dir.join("pki"), &[HTTPBIN, BOOKINFO]).expect("generating the test PKI")
}

/// An httpbin upstream on an ephemeral loopback port.
pub fn httpbin() -> httpbin::Httpbin {
    httpbin::spawn("127.0.0.1:0".parse().expect("address")).expect("starting httpbin")
}

/// What most HTTPS tests start from: a [`TempDir`] tagged `tag`, the test [`pki`] in it,
/// an [`httpbin`] upstream and a free port for the gateway.
pub struct HttpsFixture {
    pub dir: TempDir,
    pub pki: pki::Pki,
    pub upstream: httpbin::Httpbin,
    pub port: u16,
}

impl HttpsFixture {
    pub fn new(tag: &str) -> HttpsFixture {
        let dir = TempDir::new(tag);
        let pki = pki(&dir);
        let upstream = httpbin();
        let port = free_port();
        HttpsFixture {
            dir,
            pki,
            upstream,
            port,
        }
    }
}

/// A gateway serving [`HTTPBIN`] on a SIMPLE port (`fixture.port`) and on a MUTUAL port,
/// both to the fixture's upstream.
pub struct MutualFixture {
    pub fixture: HttpsFixture,
    pub mutual_port: u16,
    pub gateway: Gateway,
}

impl MutualFixture {
    /// Starts it (with `extra` arguments for `ringress run`) and waits until it serves.
    pub fn start(tag: &str, extra: &[&str]) -> MutualFixture {
        let fixture = HttpsFixture::new(tag);
        let mutual_port = free_port();
        let servers = [
            simple_https(&fixture.pki, fixture.port, "https", HTTPBIN),
            https_server(
                mutual_port,
                "https-mutual",
                &[HTTPBIN],
                &mutual_tls(&fixture.pki, "MUTUAL"),
            ),
        ];
        let config = backend_config(&servers, &[HTTPBIN], &[fixture.upstream.addr()]);
        let gateway = Gateway::start_ready(&fixture.dir, &config, extra);
        MutualFixture {
            fixture,
            mutual_port,
            gateway,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Client tools

/// Whether `tool` can be run.
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg(if tool == "openssl" {
            "version"
        } else {
            "--version"
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Fails the test (never skips it) when `tool` cannot be run: `scripts/test.sh`
/// installs every tool the tests use.
#[track_caller]
pub fn require(tool: &str) {
    assert!(
        have(tool),
        "`{tool}` is needed and not installed (scripts/test.sh installs it)"
    );
}

/// Fails the test when python3 cannot import `module` (`scripts/test.sh` installs the
/// ones the tests use).
#[track_caller]
pub fn require_python_module(module: &str) {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Python module `{module}` is needed and not installed (scripts/test.sh installs it)"
    );
}

/// [`require`] curl and openssl.
#[track_caller]
pub fn require_tools() {
    require("curl");
    require("openssl");
}

/// Runs a command with stdin `input`, killing it after `limit` (then panicking).
pub fn run_with_timeout(command: Command, input: &[u8], limit: Duration) -> Output {
    let description = format!("{command:?}");
    match try_run_with_timeout(command, input, limit) {
        Ok(output) => output,
        Err(output) => panic!(
            "{description} did not finish within {limit:?}; stdout: {}; stderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        ),
    }
}

/// Runs a command with stdin `input`; `Err` with what it printed when it was still
/// running after `limit` and had to be killed.
pub fn try_run_with_timeout(
    mut command: Command,
    input: &[u8],
    limit: Duration,
) -> Result<Output, Output> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("waiting for a killed process");
            }
        }
    };
    let _ = writer.join();
    let output = Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    };
    if timed_out { Err(output) } else { Ok(output) }
}

/// What one curl invocation produced.
pub struct Curl {
    /// curl's exit code (0 success, 7 refused, 18 partial file, 35 TLS, 56 receive...).
    pub code: i32,
    /// Status of the last response head (0 when none arrived).
    pub status: u16,
    /// Headers of the last response head, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body of the first URL.
    pub body: Vec<u8>,
    /// What `-w` printed.
    pub stdout: String,
    pub stderr: String,
}

/// Longest body excerpt a failure message shows.
const SHOWN_BODY: usize = 2000;

impl std::fmt::Debug for Curl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.text();
        let shown: String = text.chars().take(SHOWN_BODY).collect();
        f.debug_struct("Curl")
            .field("code", &self.code)
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("body", &shown)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .finish()
    }
}

impl Curl {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs `curl -sS --max-time 15 -D HEADERS -o BODY ARGS...`: the head and body of the
/// first URL are captured; `-w` output lands in `stdout`.
pub fn curl(args: &[&str]) -> Curl {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("ringress-itest-curl-{}-{n}", std::process::id()));
    let head_file = base.with_extension("head");
    let body_file = base.with_extension("body");
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "15", "-D"])
        .arg(&head_file)
        .arg("-o")
        .arg(&body_file)
        .args(args);
    let output = run_with_timeout(command, b"", CLIENT_TIMEOUT);
    let head = std::fs::read_to_string(&head_file).unwrap_or_default();
    let body = std::fs::read(&body_file).unwrap_or_default();
    let _ = std::fs::remove_file(&head_file);
    let _ = std::fs::remove_file(&body_file);
    let (status, headers) = parse_last_head(&head);
    Curl {
        code: output.status.code().unwrap_or(-1),
        status,
        headers,
        body,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The status and headers of the last head in a `curl -D` dump (several heads follow
/// each other after 100 Continue or redirects).
pub fn parse_last_head(dump: &str) -> (u16, Vec<(String, String)>) {
    let mut status = 0;
    let mut headers = Vec::new();
    for line in dump.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("HTTP/") {
            status = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            headers.clear();
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    (status, headers)
}

/// The value of the first header `name` (any case) in `headers`.
pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The header lines of a request or response head (its first line skipped), names
/// lower-cased.
pub fn head_headers(head: &str) -> Vec<(String, String)> {
    parse_last_head(head.split_once("\r\n").map_or("", |(_, rest)| rest)).1
}

/// `--resolve HOST:PORT:127.0.0.1`, the way the Istio walkthroughs point curl at the
/// ingress.
pub fn resolve(host: &str, port: u16) -> String {
    format!("{host}:{port}:127.0.0.1")
}

/// What `openssl s_client` printed (stdout and stderr together) and its exit code.
#[derive(Debug)]
pub struct SClient {
    pub code: i32,
    pub output: String,
}

/// Runs `openssl s_client -connect 127.0.0.1:PORT -servername SNI ARGS...` with `input`
/// on stdin (`-ign_eof` is added when `input` is not empty, so the reply is read until
/// the gateway closes). An empty `sni` sends no server name at all (`-noservername`).
pub fn s_client(port: u16, sni: &str, args: &[&str], input: &[u8]) -> SClient {
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"));
    if sni.is_empty() {
        command.arg("-noservername");
    } else {
        command.args(["-servername", sni]);
    }
    command.args(args);
    if !input.is_empty() {
        command.arg("-ign_eof");
    }
    let output = run_with_timeout(command, input, CLIENT_TIMEOUT);
    SClient {
        code: output.status.code().unwrap_or(-1),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// The leaf certificate's subject line from `s_client` output (`subject=CN = ...`).
pub fn served_subject(output: &str) -> Option<String> {
    output
        .lines()
        .find(|l| l.starts_with("subject="))
        .map(|l| l.trim().to_owned())
}

/// The SANs of the first certificate in `output` (`openssl x509 -noout -ext
/// subjectAltName` on the PEM block s_client printed).
pub fn served_sans(output: &str) -> String {
    let Some(start) = output.find("-----BEGIN CERTIFICATE-----") else {
        return String::new();
    };
    let end_marker = "-----END CERTIFICATE-----";
    let Some(end) = output[start..].find(end_marker) else {
        return String::new();
    };
    let pem = &output[start..start + end + end_marker.len()];
    let mut command = Command::new("openssl");
    command.args(["x509", "-noout", "-ext", "subjectAltName"]);
    let out = run_with_timeout(command, pem.as_bytes(), CLIENT_TIMEOUT);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------
// Raw sockets and a rustls client

/// Connects to `127.0.0.1:port` with read and write timeouts set.
pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("timeout");
    stream
        .set_write_timeout(Some(READ_TIMEOUT))
        .expect("timeout");
    stream
}

/// Reads until end of stream, a read error (reset) or `READ_TIMEOUT`; returns what
/// arrived and whether the peer closed the connection (end of stream or reset) rather
/// than leaving it open until the timeout.
pub fn read_to_close(stream: &mut impl Read) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        if Instant::now() > deadline {
            return (out, false);
        }
        match stream.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return (out, false);
            }
            Err(_) => return (out, true),
        }
    }
}

/// Sends `request` over plain TCP in one write and reads until the gateway closes.
pub fn raw_exchange(port: u16, request: &[u8]) -> (Vec<u8>, bool) {
    let mut stream = connect(port);
    stream.write_all(request).expect("sending the raw request");
    read_to_close(&mut stream)
}

/// `GET path` for `host` on an open keep-alive connection; the status and body text.
pub fn request_on(stream: &mut (impl Read + Write), host: &str, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .expect("sending a request");
    let (status, _, body) = read_response(stream).expect("reading a response");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Panics (showing `context` and the bytes) unless the first response in `bytes` has
/// status `want`.
#[track_caller]
pub fn assert_first_status(bytes: &[u8], want: u16, context: &str) {
    assert_eq!(
        first_status(bytes),
        want,
        "{context}{}",
        String::from_utf8_lossy(bytes)
    );
}

/// The status code of the first response in `bytes` (0 when there is none).
pub fn first_status(bytes: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(bytes);
    text.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Every status line's code in `bytes`, in order (for pipelined responses).
pub fn statuses(bytes: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut rest: &str = &text;
    while let Some(i) = rest.find("HTTP/1.1 ") {
        if let Some(code) = rest.get(i + 9..i + 12).and_then(|c| c.parse().ok()) {
            out.push(code);
        }
        rest = &rest[i + 9..];
    }
    out
}

/// Reads one whole HTTP/1.1 response (head, then a Content-Length or chunked body) from
/// `stream`; returns the status, the head text and the body.
pub fn read_response(stream: &mut impl Read) -> io::Result<(u16, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut body = buf.split_off(head_end);
    let status = first_status(head.as_bytes());
    let headers = head_headers(&head);
    let value = |name: &str| header_value(&headers, name).map(str::to_ascii_lowercase);
    if let Some(len) = value("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < len {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
    } else if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        // Decode as it arrives: size line, data, CRLF; the last chunk ends the body
        // (trailers are not expected from ringress's upstreams in these tests).
        let raw = std::mem::take(&mut body);
        let mut raw = raw;
        let mut pos = 0;
        let mut fill = |raw: &mut Vec<u8>| -> io::Result<()> {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            raw.extend_from_slice(&chunk[..n]);
            Ok(())
        };
        loop {
            let line_end = loop {
                if let Some(i) = find(&raw[pos..], b"\r\n") {
                    break pos + i;
                }
                fill(&mut raw)?;
            };
            let line = String::from_utf8_lossy(&raw[pos..line_end]).into_owned();
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
            let data_start = line_end + 2;
            while raw.len() < data_start + size + 2 {
                fill(&mut raw)?;
            }
            body.extend_from_slice(&raw[data_start..data_start + size]);
            pos = data_start + size + 2;
            if size == 0 {
                break;
            }
            if pos > 1 << 20 {
                raw.drain(..pos);
                pos = 0;
            }
        }
    }
    Ok((status, head, body))
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The aws-lc-rs provider, as ringress uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub fn load_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// A rustls client configuration trusting only the certificates in `ca_file`, with ALPN
/// `http/1.1`, optionally presenting a client certificate.
pub fn client_config(
    ca_file: &Path,
    client_auth: Option<(&Path, &Path)>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca_file) {
        roots.add(cert).expect("adding a trust anchor");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut config = match client_auth {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                load_certs(cert),
                PrivateKeyDer::from_pem_file(key).expect("client key"),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

pub type TlsClient = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A verified TLS connection to `127.0.0.1:port` for `sni`, handshake completed.
pub fn tls_connect(
    port: u16,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<TlsClient, rustls::Error> {
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    let conn = rustls::ClientConnection::new(config, name)?;
    let mut stream = rustls::StreamOwned::new(conn, connect(port));
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| match e.into_inner() {
                Some(inner) => match inner.downcast::<rustls::Error>() {
                    Ok(tls) => *tls,
                    Err(other) => rustls::Error::General(other.to_string()),
                },
                None => rustls::Error::General("I/O error during the handshake".into()),
            })?;
    }
    Ok(stream)
}

// ---------------------------------------------------------------------------------------
// The gateway

/// A running `ringress run`; killed and waited for on drop (its log is printed when the
/// test is failing).
pub struct Gateway {
    child: Option<Child>,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The listener ports found in the configuration, all accepting when `start` returned.
    pub ports: Vec<u16>,
    /// The admin endpoint's port (each test gateway gets its own).
    pub admin_port: Option<u16>,
}

/// The ports of `port: number:` entries under a Gateway's servers in `yaml`.
pub fn listener_ports(yaml: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    let mut in_gateway = false;
    let mut after_port = false;
    for line in yaml.lines() {
        let trimmed = line.trim();
        if trimmed == "---" {
            in_gateway = false;
        }
        if trimmed == "kind: Gateway" {
            in_gateway = true;
        }
        if !in_gateway {
            continue;
        }
        if trimmed == "- port:" || trimmed == "port:" {
            after_port = true;
            continue;
        }
        if after_port && let Some(n) = trimmed.strip_prefix("number:") {
            if let Ok(port) = n.trim().parse::<u16>()
                && !ports.contains(&port)
            {
                ports.push(port);
            }
            after_port = false;
        }
    }
    ports
}

impl Gateway {
    /// Writes `yaml` to `DIR/gateway.yaml` and starts `ringress run` on it with two
    /// shards, a short header timeout and debug logs (to `DIR/ringress.log`), plus
    /// `extra` arguments; returns once every listener port accepts TCP. Panics with the
    /// log when the process exits or the ports do not open in time.
    pub fn start(dir: &TempDir, yaml: &str, extra: &[&str]) -> Gateway {
        match Gateway::try_start(dir, yaml, extra) {
            Ok(gateway) => gateway,
            Err(message) => panic!("{message}"),
        }
    }

    /// [`Gateway::start`], returning the log as the error instead of panicking.
    pub fn try_start(dir: &TempDir, yaml: &str, extra: &[&str]) -> Result<Gateway, String> {
        let config = dir.write("gateway.yaml", yaml);
        Gateway::try_start_file(dir, &config, &listener_ports(yaml), extra)
    }

    /// Starts `ringress run --config CONFIG` and waits for `ports`.
    pub fn try_start_file(
        dir: &TempDir,
        config: &Path,
        ports: &[u16],
        extra: &[&str],
    ) -> Result<Gateway, String> {
        Gateway::try_start_file_env(dir, config, ports, extra, &[])
    }

    /// [`Gateway::try_start_file`] with extra environment variables for ringress.
    pub fn try_start_file_env(
        dir: &TempDir,
        config: &Path,
        ports: &[u16],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Gateway, String> {
        let config_arg = config.to_string_lossy().into_owned();
        let timeout = HEADER_TIMEOUT_SECS.to_string();
        let admin_port = free_port();
        let admin = format!("127.0.0.1:{admin_port}");
        let mut args = vec![
            "run",
            "--admin",
            &admin,
            "--config",
            &config_arg,
            "--shards",
            "2",
            "--header-timeout",
            &timeout,
            "--log-level",
            "debug",
        ];
        // scripts/test.sh runs the TLS tests a second time on rustls' record layer.
        let record_layer = std::env::var("RINGRESS_TEST_TLS_RECORD_LAYER").ok();
        if let Some(layer) = &record_layer {
            args.extend(["--tls-record-layer", layer.as_str()]);
        }
        args.extend_from_slice(extra);
        let mut gateway = Gateway::spawn_env(dir, &args, config, ports, env)?;
        gateway.admin_port = Some(admin_port);
        Ok(gateway)
    }

    /// Starts `ringress ARGS...` (any subcommand that serves, e.g. `demo`) with its
    /// output going to a log in `dir`, and waits until every one of `ports` accepts TCP.
    pub fn spawn(
        dir: &TempDir,
        args: &[&str],
        config: &Path,
        ports: &[u16],
    ) -> Result<Gateway, String> {
        Gateway::spawn_env(dir, args, config, ports, &[])
    }

    /// [`Gateway::spawn`] with extra environment variables.
    pub fn spawn_env(
        dir: &TempDir,
        args: &[&str],
        config: &Path,
        ports: &[u16],
        env: &[(&str, &str)],
    ) -> Result<Gateway, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let log = dir.join(&format!(
            "ringress-{}.log",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let log_file = std::fs::File::create(&log).expect("creating the gateway log");
        let child = Command::new(env!("CARGO_BIN_EXE_ringress"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start ringress: {e}"))?;
        let mut gateway = Gateway {
            child: Some(child),
            config: config.to_path_buf(),
            log,
            ports: ports.to_vec(),
            admin_port: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut waiting: Vec<u16> = ports.to_vec();
        while !waiting.is_empty() {
            if let Some(status) = gateway.exited() {
                return Err(format!(
                    "ringress exited with {status} before listening on {waiting:?}; log:\n{}",
                    gateway.log_text()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "ringress did not listen on {waiting:?} within {START_TIMEOUT:?}; log:\n{}",
                    gateway.log_text()
                ));
            }
            waiting.retain(|&port| !accepts(port));
            if !waiting.is_empty() {
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(gateway)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The peak resident memory (VmHWM) of the process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading /proc/PID/status of ringress");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// Panics with the log unless the gateway is still running.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!("ringress exited with {status}; log:\n{}", self.log_text());
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            // The kernel tears an io_uring instance down after the process is gone; its
            // listeners may accept for a moment longer. Wait until they refuse, so a test
            // that reuses a port talks to the next gateway only.
            for &port in &self.ports {
                wait_refused(port, STOP_TIMEOUT);
            }
        }
        if thread::panicking() {
            eprintln!(
                "---- ringress log ({}) ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Whether something listening on `127.0.0.1:port` accepts a connection. A connection
/// to itself does not count: connecting to a port of the ephemeral range that nobody
/// listens on can pick that very port as its own and "connect" (TCP's simultaneous
/// open), which would make a gateway that has not bound yet look ready.
pub fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
        Ok(stream) => stream.local_addr().ok() != Some(addr),
        Err(_) => false,
    }
}

/// How long a stopped gateway's listeners may keep accepting.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits (at most `limit`) until nothing accepts connections on `127.0.0.1:port`;
/// returns whether it does refuse by then.
pub fn wait_refused(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !accepts(port) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `ringress ARGS...` to completion (for `check` and failing `run`s).
pub fn ringress(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringress"));
    command.args(args);
    run_with_timeout(command, b"", CLIENT_TIMEOUT)
}

/// `ringress run --config CONFIG --shards 2 ARGS`, not started yet.
pub fn run_command(config: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringress"));
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(["--shards", "2", "--admin", "127.0.0.1:0"])
        .args(extra);
    command
}

/// `ringress check --config CONFIG`: its exit code, stdout and stderr.
pub fn check(config: &Path) -> (Option<i32>, String, String) {
    let out = ringress(&["check", "--config", &config.to_string_lossy()]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How long a `ringress run` expected to fail may take to exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// `ringress run --config CONFIG --shards 2 ARGS` expected to exit by itself: its exit
/// code and output (stdout and stderr). Panics when it is still running after
/// [`EXIT_TIMEOUT`] (it was killed then).
pub fn run_expecting_exit(config: &Path, extra: &[&str]) -> (i32, String) {
    let command = run_command(config, extra);
    let text = |out: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    match try_run_with_timeout(command, b"", EXIT_TIMEOUT) {
        Ok(out) => (out.status.code().unwrap_or(-1), text(&out)),
        Err(out) => panic!(
            "ringress run --config {} was expected to fail but was still running after \
             {EXIT_TIMEOUT:?}; output:\n{}",
            config.display(),
            text(&out)
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Configuration (Istio YAML)

/// A quoted YAML string of a path.
pub fn yaml_path(path: &Path) -> String {
    format!("{:?}", path.to_string_lossy())
}

/// A Gateway document named `name` with the given `servers` entries (each from
/// [`http_server`] or [`https_server`]).
pub fn gateway_doc(name: &str, servers: &[String]) -> String {
    let mut y = document_head("Gateway", name);
    y.push_str("  selector:\n    istio: ingressgateway\n  servers:\n");
    for server in servers {
        y.push_str(server);
    }
    y
}

/// A plain HTTP server entry on `port` for `hosts`.
pub fn http_server(port: u16, hosts: &[&str]) -> String {
    let mut y = format!(
        "  - port:
      number: {port}
      name: http-{port}
      protocol: HTTP
    bind: 127.0.0.1
    hosts:
"
    );
    for host in hosts {
        let _ = writeln!(y, "    - {host:?}");
    }
    y
}

/// An HTTPS server entry on `port` for `host`, with `tls` lines (already indented by six
/// spaces, e.g. from [`simple_tls`]).
pub fn https_server(port: u16, name: &str, hosts: &[&str], tls: &str) -> String {
    let mut y = format!(
        "  - port:
      number: {port}
      name: {name}
      protocol: HTTPS
    bind: 127.0.0.1
    tls:
{tls}    hosts:
"
    );
    for host in hosts {
        let _ = writeln!(y, "    - {host:?}");
    }
    y
}

/// `tls:` lines of a SIMPLE server with certificate files.
pub fn simple_tls(cert: &Path, key: &Path) -> String {
    format!(
        "      mode: SIMPLE
      serverCertificate: {}
      privateKey: {}
",
        yaml_path(cert),
        yaml_path(key)
    )
}

/// `tls:` lines of a SIMPLE server for `host` of the test PKI.
pub fn simple_tls_for(pki: &pki::Pki, host: &str) -> String {
    simple_tls(&pki.cert(host), &pki.key(host))
}

/// `tls:` lines of a `mode` (MUTUAL, OPTIONAL_MUTUAL) server for [`HTTPBIN`] of the test
/// PKI, trusting client certificates from its CA chain.
pub fn mutual_tls(pki: &pki::Pki, mode: &str) -> String {
    mutual_tls_for(pki, mode, HTTPBIN, &pki.ca_chain, "")
}

/// `tls:` lines of a `mode` server for `host` of the test PKI trusting client
/// certificates from `ca` (plus `extra` lines, already indented).
pub fn mutual_tls_for(pki: &pki::Pki, mode: &str, host: &str, ca: &Path, extra: &str) -> String {
    format!(
        "      mode: {mode}
      serverCertificate: {}
      privateKey: {}
      caCertificates: {}
{extra}",
        yaml_path(&pki.cert(host)),
        yaml_path(&pki.key(host)),
        yaml_path(ca),
    )
}

/// An HTTPS SIMPLE server entry on `port` for `host`, with its certificate from the
/// test PKI.
pub fn simple_https(pki: &pki::Pki, port: u16, name: &str, host: &str) -> String {
    https_server(port, name, &[host], &simple_tls_for(pki, host))
}

/// [`HTTPBIN`] and [`BOOKINFO`] on one HTTPS port, each with its own certificate
/// (chosen by SNI).
pub fn sni_servers(pki: &pki::Pki, port: u16) -> Vec<String> {
    vec![
        simple_https(pki, port, "https-httpbin", HTTPBIN),
        simple_https(pki, port, "https-bookinfo", BOOKINFO),
    ]
}

/// [`HTTPBIN`] and [`BOOKINFO`] on one HTTPS port, each a `mode` server whose
/// certificate comes from its `credentialName` secret (`httpbin-credential`,
/// `bookinfo-credential`; see [`write_secrets`]).
pub fn credential_servers(port: u16, mode: &str) -> Vec<String> {
    [
        ("https-httpbin", HTTPBIN, "httpbin-credential"),
        ("https-bookinfo", BOOKINFO, "bookinfo-credential"),
    ]
    .into_iter()
    .map(|(name, host, secret)| {
        let tls = format!("      mode: {mode}\n      credentialName: {secret}\n");
        https_server(port, name, &[host], &tls)
    })
    .collect()
}

/// Copies each `(file, "SECRET/KEY")` to `secrets/SECRET/KEY` in `dir`, as kubelet mounts
/// Kubernetes secrets; the `secrets` folder, for `--secrets-dir`.
pub fn write_secrets(dir: &TempDir, files: &[(PathBuf, &str)]) -> PathBuf {
    let secrets = dir.join("secrets");
    for (from, to) in files {
        let target = secrets.join(to);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("secret dir");
        std::fs::copy(from, &target).expect("copying a credential file");
    }
    secrets
}

/// A plain HTTP server on `http_port` and a SIMPLE HTTPS one on `https_port`, both for
/// [`HTTPBIN`].
pub fn http_and_https_servers(pki: &pki::Pki, http_port: u16, https_port: u16) -> Vec<String> {
    vec![
        http_server(http_port, &[HTTPBIN]),
        simple_https(pki, https_port, "https", HTTPBIN),
    ]
}

/// A VirtualService document; `http` is the `http:` list, indented by two spaces.
pub fn virtual_service(name: &str, hosts: &[&str], gateways: &[&str], http: &str) -> String {
    let mut y = document_head("VirtualService", name);
    y.push_str("  hosts:\n");
    for host in hosts {
        let _ = writeln!(y, "  - {host:?}");
    }
    y.push_str("  gateways:\n");
    for gateway in gateways {
        let _ = writeln!(y, "  - {gateway}");
    }
    y.push_str("  http:\n");
    y.push_str(http);
    y
}

/// The `route:` of an `http[]` rule sending every request it matches to `service` on
/// [`SERVICE_PORT`] (follows a `- match:` list).
pub fn route_to(service: &str) -> String {
    format!(
        "    route:
    - destination:
        host: {service}
        port:
          number: {SERVICE_PORT}
"
    )
}

/// One `http[]` rule sending requests whose path starts with `prefix` to `service`.
pub fn prefix_rule(prefix: &str, service: &str) -> String {
    format!(
        "  - match:
    - uri:
        prefix: {prefix}
{}",
        route_to(service)
    )
}

/// One `http[]` rule routing every request to `service:port`.
pub fn route_all(service: &str, port: u16) -> String {
    format!(
        "  - route:
    - destination:
        host: {service}
        port:
          number: {port}
"
    )
}

/// An issuer for the CA `name` of the test PKI (its distinguished name as
/// `pki::generate` writes it), signing with the key in `key_file`.
pub fn ca_issuer(name: &str, key_file: &Path) -> rcgen::Issuer<'static, rcgen::KeyPair> {
    let key_pem = std::fs::read_to_string(key_file).expect("reading a CA key");
    let key = rcgen::KeyPair::from_pem(&key_pem).expect("parsing a CA key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "ringress demo");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    rcgen::Issuer::new(params, key)
}

/// A PEM CRL signed by `issuer` revoking the certificates with `serials`.
pub fn crl_pem(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, serials: &[Vec<u8>]) -> String {
    let params = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|serial| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(serial),
                revocation_time: rcgen::date_time_ymd(2024, 1, 2),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params
        .signed_by(issuer)
        .expect("signing a CRL")
        .pem()
        .expect("CRL PEM")
}

/// The serial number bytes of the first certificate in `cert`.
pub fn serial_bytes(cert: &Path) -> Vec<u8> {
    let der = load_certs(cert).into_iter().next().expect("a certificate");
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).expect("parsing");
    parsed.tbs_certificate.raw_serial().to_vec()
}

/// A PEM file in `dir` with a CRL for each CA of `pki`'s chain (Envoy and webpki want
/// one per CA): the root's revokes nothing, the intermediate's the leaf certificates
/// of the files `revoked`.
pub fn chain_crl(dir: &TempDir, pki: &pki::Pki, revoked: &[&Path]) -> PathBuf {
    let root = ca_issuer("ringress demo root CA", &pki.root_key);
    let intermediate = ca_issuer("ringress demo intermediate CA", &pki.intermediate_key);
    let serials: Vec<Vec<u8>> = revoked.iter().map(|cert| serial_bytes(cert)).collect();
    dir.write(
        "revoked.crl.pem",
        format!(
            "{}{}",
            crl_pem(&root, &[]),
            crl_pem(&intermediate, &serials)
        ),
    )
}

/// A DestinationRule for the service `backend` (after a `---`), with `policy` under
/// its `trafficPolicy` (lines indented by four spaces).
pub fn backend_rule(policy: &str) -> String {
    format!(
        "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: backend
spec:
  host: backend
  trafficPolicy:
{policy}"
    )
}

/// A STATIC ServiceEntry `service` on `port` whose endpoints are `addrs`.
pub fn service_entry(service: &str, port: u16, addrs: &[SocketAddr]) -> String {
    let mut y = document_head("ServiceEntry", service);
    let _ = write!(
        y,
        "  hosts:
  - {service}
  ports:
  - number: {port}
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
"
    );
    for addr in addrs {
        let _ = write!(
            y,
            "  - address: {}
    ports:
      http: {}
",
            addr.ip(),
            addr.port()
        );
    }
    y
}

/// Joins documents with `---`.
pub fn docs(documents: &[String]) -> String {
    documents.join("---\n")
}

/// The service port every test ServiceEntry declares.
pub const SERVICE_PORT: u16 = 8000;

/// A Gateway `gw` with `servers`, a VirtualService `vs` for `hosts` with the `http`
/// rules, and a STATIC ServiceEntry on [`SERVICE_PORT`] for each `(name, endpoints)`.
pub fn gateway_config<S: AsRef<str>>(
    servers: &[String],
    hosts: &[&str],
    http: &str,
    services: &[(S, &[SocketAddr])],
) -> String {
    let mut documents = vec![
        gateway_doc("gw", servers),
        virtual_service("vs", hosts, &["gw"], http),
    ];
    for (name, endpoints) in services {
        documents.push(service_entry(name.as_ref(), SERVICE_PORT, endpoints));
    }
    docs(&documents)
}

/// [`gateway_config`] routing every request for `hosts` to the service `backend`, whose
/// endpoints are `upstreams`.
pub fn backend_config(servers: &[String], hosts: &[&str], upstreams: &[SocketAddr]) -> String {
    gateway_config(
        servers,
        hosts,
        &route_all("backend", SERVICE_PORT),
        &[("backend", upstreams)],
    )
}

/// [`backend_config`] for [`sni_servers`]: [`HTTPBIN`] and [`BOOKINFO`] on one HTTPS
/// `port`, each with its own certificate, every request routed to `upstream`.
pub fn sni_config(pki: &pki::Pki, port: u16, upstream: SocketAddr) -> String {
    backend_config(&sni_servers(pki, port), &[HTTPBIN, BOOKINFO], &[upstream])
}

/// The simplest complete configuration: one HTTP server on `port` for `host`, every
/// request routed to the service `backend` whose endpoint is `upstream`.
pub fn http_config(port: u16, host: &str, upstream: SocketAddr) -> String {
    backend_config(&[http_server(port, &[host])], &[host], &[upstream])
}

/// One HTTPS SIMPLE server on `port` for [`HTTPBIN`] (test PKI), every request routed to
/// `upstream`.
pub fn https_config(pki: &pki::Pki, port: u16, upstream: SocketAddr) -> String {
    backend_config(
        &[simple_https(pki, port, "https", HTTPBIN)],
        &[HTTPBIN],
        &[upstream],
    )
}

/// A gateway in `dir` on a free port serving [`http_config`] for [`HTTPBIN`] to
/// `upstream`, started with `extra` arguments; the port and the gateway.
pub fn start_http(dir: &TempDir, upstream: SocketAddr, extra: &[&str]) -> (u16, Gateway) {
    let port = free_port();
    let gateway = Gateway::start(dir, &http_config(port, HTTPBIN, upstream), extra);
    (port, gateway)
}

/// The test PKI in `dir` and a gateway on a free port serving [`https_config`] to
/// `upstream`; the PKI, the port and the gateway.
pub fn start_https(dir: &TempDir, upstream: SocketAddr) -> (pki::Pki, u16, Gateway) {
    let pki = pki(dir);
    let port = free_port();
    let gateway = Gateway::start(dir, &https_config(&pki, port, upstream), &[]);
    (pki, port, gateway)
}

/// The test PKI in `dir` and a gateway serving [`HTTPBIN`] on a free plain HTTP port and
/// a free HTTPS port, every request routed to `upstream`; the PKI, the HTTP and HTTPS
/// ports and the gateway.
pub fn start_http_and_https(dir: &TempDir, upstream: SocketAddr) -> (pki::Pki, u16, u16, Gateway) {
    let pki = pki(dir);
    let (http_port, https_port) = (free_port(), free_port());
    let config = backend_config(
        &http_and_https_servers(&pki, http_port, https_port),
        &[HTTPBIN],
        &[upstream],
    );
    let gateway = Gateway::start(dir, &config, &[]);
    (pki, http_port, https_port, gateway)
}

/// `curl` arguments for `https://HOST:PORT{path}` trusting only the certificates in
/// `ca`.
pub fn https_url_for(host: &str, port: u16, ca: &Path, path: &str) -> Vec<String> {
    vec![
        "--resolve".into(),
        resolve(host, port),
        "--cacert".into(),
        ca.to_string_lossy().into_owned(),
        format!("https://{host}:{port}{path}"),
    ]
}

/// `curl` on `https://HOST:PORT{path}` trusting only the certificates in `ca`.
pub fn curl_https_for(host: &str, port: u16, ca: &Path, path: &str) -> Curl {
    curl(&strs(&https_url_for(host, port, ca, path)))
}

/// `curl` arguments for `https://HTTPBIN:PORT{path}` trusting the test root.
pub fn https_url(pki: &pki::Pki, port: u16, path: &str) -> Vec<String> {
    https_url_for(HTTPBIN, port, &pki.root_cert, path)
}

/// `curl` arguments presenting the client certificate `cert` with its key.
pub fn client_cert_args(cert: &Path, key: &Path) -> Vec<String> {
    vec![
        "--cert".into(),
        cert.to_string_lossy().into_owned(),
        "--key".into(),
        key.to_string_lossy().into_owned(),
    ]
}

/// Borrows a `Vec<String>` as curl's `&[&str]`.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// `curl` on `https://HTTPBIN:PORT{path}` trusting the test root, with `extra` arguments.
pub fn curl_https(pki: &pki::Pki, port: u16, path: &str, extra: &[&str]) -> Curl {
    let url = https_url(pki, port, path);
    let mut args = strs(&url);
    args.extend_from_slice(extra);
    curl(&args)
}

/// `curl` on `http://HOST:PORT{path}` (resolved to the loopback gateway), with `extra`
/// arguments.
pub fn curl_http(host: &str, port: u16, path: &str, extra: &[&str]) -> Curl {
    let resolve = resolve(host, port);
    let url = format!("http://{host}:{port}{path}");
    let mut args = vec!["--resolve", resolve.as_str(), url.as_str()];
    args.extend_from_slice(extra);
    curl(&args)
}

/// A quick check that the gateway still answers: `GET http://HOST:PORT{path}`.
pub fn assert_http_ok(port: u16, host: &str, path: &str) {
    let out = curl_http(host, port, path, &[]);
    assert_eq!(
        (out.code, out.status),
        (0, 200),
        "the gateway should still serve {path}: {out:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Scripted upstreams

/// What an [`Upstream`] saw: every request head (text) and body length, per connection.
#[derive(Debug, Default)]
pub struct Seen {
    pub heads: Mutex<Vec<String>>,
    pub body_bytes: Mutex<Vec<u64>>,
    pub connections: AtomicUsize,
}

impl Seen {
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn requests(&self) -> usize {
        self.heads.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn record_head(&self, head: String) {
        self.heads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(head);
    }

    pub fn record_body(&self, len: u64) {
        self.body_bytes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(len);
    }
}

/// A small upstream that runs `handler` for every accepted connection on its own thread.
/// Dropping it stops accepting; handlers end when their peer closes.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

type Handler = dyn Fn(TcpStream, &Seen) + Send + Sync + 'static;

impl Upstream {
    pub fn spawn(handler: impl Fn(TcpStream, &Seen) + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a test upstream");
        let addr = listener.local_addr().expect("upstream address");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let handler: Arc<Handler> = Arc::new(handler);
        let accept = thread::spawn({
            let stop = Arc::clone(&stop);
            let seen = Arc::clone(&seen);
            move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    seen.connections.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    let handler = Arc::clone(&handler);
                    let seen = Arc::clone(&seen);
                    thread::spawn(move || handler(stream, &seen));
                }
            }
        });
        Upstream {
            addr,
            seen,
            stop,
            accept: Some(accept),
        }
    }

    /// Answers every request (keep-alive) with `200` and the body `NAME PATH`, recording
    /// each head; request bodies (Content-Length or chunked) are read and counted.
    pub fn named(name: &str) -> Upstream {
        let name = name.to_owned();
        Upstream::spawn(move |mut stream, seen| {
            let mut buf = Vec::new();
            while let Some((head, body_len)) = read_request(&mut stream, &mut buf) {
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                seen.record_head(head);
                seen.record_body(body_len);
                let body = format!("{name} {path} {body_len}");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        })
    }

    /// Answers every request `200 OK` with body `ok`; one whose path starts with
    /// `/slow` only after `delay`. Heads are recorded as they arrive, so a test can
    /// wait until a slow request is in flight.
    pub fn slow_on_request(delay: Duration) -> Upstream {
        Upstream::spawn(move |mut stream, seen| {
            let mut buf = Vec::new();
            while let Some((head, _)) = read_request(&mut stream, &mut buf) {
                let slow = head
                    .split_whitespace()
                    .nth(1)
                    .is_some_and(|p| p.starts_with("/slow"));
                seen.record_head(head);
                if slow {
                    thread::sleep(delay);
                }
                let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if stream.write_all(reply).is_err() {
                    return;
                }
            }
        })
    }

    /// Reads one request, records its head, writes `reply` (nothing when it is empty)
    /// and closes the connection.
    pub fn answer_once(reply: &'static [u8]) -> Upstream {
        Upstream::spawn(move |mut stream, seen| {
            let mut buf = Vec::new();
            if let Some((head, _)) = read_request(&mut stream, &mut buf) {
                seen.record_head(head);
                let _ = stream.write_all(reply);
            }
        })
    }

    /// Reads the request head (without consuming it: it stays in the socket's receive
    /// queue), answers a `Content-Length: 1000` head with only 10 body bytes, then closes
    /// with data unread, which makes the kernel reset the connection.
    pub fn truncating() -> Upstream {
        Upstream::cut_short(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 1000\r\n\r\n0123456789",
            Cut::Reset,
        )
    }

    /// Takes one request, then writes `reply` (a head and part of its body) and cuts
    /// the response short as `cut` says.
    pub fn cut_short(reply: &'static [u8], cut: Cut) -> Upstream {
        Upstream::spawn(move |mut stream, seen| {
            // The request stays unread in the socket until the cut: closing a socket
            // with unread bytes is what makes the kernel reset the connection.
            if !peek_head(&stream) {
                return;
            }
            seen.record_head("peeked".into());
            if stream.write_all(reply).is_err() {
                return;
            }
            match cut {
                Cut::Reset => thread::sleep(Duration::from_millis(100)),
                Cut::Stall(time) => {
                    let mut buf = Vec::new();
                    let _ = read_request(&mut stream, &mut buf);
                    thread::sleep(time);
                }
            }
        })
    }

    /// Accepts connections and never answers (they stay open until the upstream is
    /// dropped and the peer gives up).
    pub fn silent() -> Upstream {
        Upstream::spawn(|mut stream, seen| {
            let mut buf = [0u8; 4096];
            // Read (and drop) whatever arrives, so the sender never blocks; answer nothing.
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    return;
                }
                seen.record_body(n as u64);
            }
        })
    }

    /// Answers every request with `len` zero bytes under `Content-Length`, written in
    /// 64 KiB pieces.
    pub fn source(len: u64) -> Upstream {
        Upstream::spawn(move |mut stream, seen| {
            let mut buf = Vec::new();
            while let Some((head, _)) = read_request(&mut stream, &mut buf) {
                seen.record_head(head);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {len}\r\n\r\n"
                );
                if stream.write_all(reply.as_bytes()).is_err() {
                    return;
                }
                let piece = vec![0u8; 64 * 1024];
                let mut left = len;
                while left > 0 {
                    let n = left.min(piece.len() as u64) as usize;
                    if stream.write_all(&piece[..n]).is_err() {
                        return;
                    }
                    left -= n as u64;
                }
            }
        })
    }
}

/// Waits until a whole request head is in `stream`'s receive queue, without taking
/// it out; false when the peer closed or nothing came in [`READ_TIMEOUT`].
fn peek_head(stream: &TcpStream) -> bool {
    let mut peeked = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        match stream.peek(&mut peeked) {
            Ok(n) if n > 0 && find(&peeked[..n], b"\r\n\r\n").is_some() => return true,
            Ok(0) | Err(_) => return false,
            Ok(_) if Instant::now() > deadline => return false,
            Ok(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// How [`Upstream::cut_short`] ends its response.
#[derive(Debug, Clone, Copy)]
pub enum Cut {
    /// A TCP reset, as an upstream process that crashed or was killed with data unread.
    Reset,
    /// Nothing more for this long, then a close.
    Stall(Duration),
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Reads one request from `stream` (with `buf` holding bytes already received): its
/// head as text and the length of its body, which is read and discarded. `None` at end
/// of stream or on an error.
pub fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, u64)> {
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = read_until(stream, buf, &mut chunk, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let headers = head_headers(&head);
    let value = |name: &str| header_value(&headers, name).map(str::to_ascii_lowercase);
    let mut body_len = 0u64;
    if let Some(len) = value("content-length").and_then(|v| v.parse::<u64>().ok()) {
        discard(stream, buf, &mut chunk, len)?;
        body_len = len;
    } else if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        // Chunk by chunk: size line, data, CRLF; then the last chunk and trailers.
        loop {
            let line_end = read_until(stream, buf, &mut chunk, b"\r\n")?;
            let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = u64::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers end with an empty line.
                loop {
                    let i = read_until(stream, buf, &mut chunk, b"\r\n")?;
                    buf.drain(..i + 2);
                    if i == 0 {
                        break;
                    }
                }
                break;
            }
            discard(stream, buf, &mut chunk, size + 2)?;
            body_len += size;
        }
    }
    Some((head, body_len))
}

/// Reads from `stream` into `buf` (through `chunk`) until `buf` holds `needle`; its
/// position. `None` at end of stream or on an error.
fn read_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    needle: &[u8],
) -> Option<usize> {
    loop {
        if let Some(i) = find(buf, needle) {
            return Some(i);
        }
        let n = stream.read(chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Drops the next `len` bytes of the stream, those already in `buf` first.
fn discard(stream: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8], len: u64) -> Option<()> {
    let mut left = len;
    loop {
        let take = left.min(buf.len() as u64) as usize;
        buf.drain(..take);
        left -= take as u64;
        if left == 0 {
            return Some(());
        }
        let n = stream.read(chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

// ---------------------------------------------------------------------------------------
// Signals, logs, bounded waits and the admin endpoint (reload, mutual and admin tests)

/// Sends `kill -NAME pid` (`HUP`, `TERM`...); panics when `kill` fails.
pub fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

/// A `wrk` run: its output. `extra` goes before the URL.
pub fn wrk(url: &str, seconds: u64, extra: &[&str]) -> std::process::Output {
    let mut command = Command::new("wrk");
    command
        .args(["-t1", "-c8", "--timeout", "5s", "-d"])
        .arg(format!("{seconds}s"))
        .args(extra)
        .arg(url);
    run_with_timeout(command, b"", Duration::from_secs(seconds + 15))
}

/// Panics unless `wrk` output shows served requests and no failure of any kind; the
/// number of requests.
#[track_caller]
pub fn assert_wrk_clean(output: &std::process::Output, what: &str) -> u64 {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{what}: wrk failed:\n{text}");
    assert!(
        !text.contains("Non-2xx or 3xx responses"),
        "{what}:\n{text}"
    );
    assert!(!text.contains("Socket errors"), "{what}:\n{text}");
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(requests > 0, "{what}: no requests served:\n{text}");
    requests
}

/// Calls `check` every 20 ms until it returns true or `limit` passes; whether it did.
pub fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// How long a test waits for a reload (signal, watcher or admin) to take effect.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(8);

/// The log line of a successful reload.
pub const RELOADED: &str = "configuration reloaded";
/// The log line of the watcher's start.
pub const WATCHING: &str = "watching certificates and configuration";
/// The log line of a failed reload.
pub const RELOAD_FAILED: &str = "reload failed";

impl Gateway {
    /// Sends the signal `name` (`HUP`, `TERM`, `INT`) to the gateway.
    pub fn signal(&self, name: &str) {
        send_signal(self.pid(), name);
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Waits (at most [`RELOAD_TIMEOUT`]) until at least `count` log lines contain
    /// `needle`; panics with the log when they do not, or when the gateway exited.
    #[track_caller]
    pub fn wait_log_count(&mut self, needle: &str, count: usize) {
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        while self.log_count(needle) < count {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "expected {count} log lines with {needle:?} within {RELOAD_TIMEOUT:?}; {}; log:\n{}",
                self.describe_process(),
                self.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the watcher has taken its first look at the watched files (its
    /// start-up line is logged): a change made before that is part of its baseline.
    #[track_caller]
    pub fn wait_watching(&mut self) {
        self.wait_log_count(WATCHING, 1);
    }

    /// [`Gateway::start`], then [`Gateway::wait_admin_ready`]: every shard is
    /// listening. (`start` alone can return while only ringress's start-up probe of
    /// the ports accepts: `control::start` binds each address once with a plain
    /// listener before the shards open theirs, and a connection in that moment makes
    /// the port look open.)
    pub fn start_ready(dir: &TempDir, yaml: &str, extra: &[&str]) -> Gateway {
        let mut gateway = Gateway::start(dir, yaml, extra);
        gateway.wait_admin_ready();
        gateway
    }

    /// Waits until the admin endpoint answers `GET /ready` with 200 (it starts after
    /// the listeners, which is when [`Gateway::start`] returns); panics with the log
    /// when it does not within [`START_TIMEOUT`].
    #[track_caller]
    pub fn wait_admin_ready(&mut self) {
        let port = self.admin();
        let ready = wait_for(START_TIMEOUT, || {
            accepts(port) && curl_admin(port, "/ready", &[]).status == 200
        });
        if !ready {
            self.assert_running();
            panic!(
                "the admin endpoint on {port} is not ready within {START_TIMEOUT:?}; log:\n{}",
                self.log_text()
            );
        }
    }

    /// The process's threads with their kernel wait channels, for failure messages
    /// about a gateway that stopped making progress.
    pub fn describe_process(&self) -> String {
        let pid = self.pid();
        let mut out = format!(
            "ringress pid {pid}, log {} ({} bytes), stderr {:?}:",
            self.log.display(),
            std::fs::metadata(&self.log).map_or(0, |m| m.len()),
            std::fs::read_link(format!("/proc/{pid}/fd/2")).unwrap_or_default(),
        );
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return out + " no /proc entry";
        };
        for task in tasks.flatten() {
            let path = task.path();
            let read = |name: &str| {
                std::fs::read_to_string(path.join(name))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            let _ = write!(out, " [{} wchan={}]", read("comm"), read("wchan"));
        }
        out
    }

    /// Sends SIGHUP and waits until one more reload (successful or failed) is logged;
    /// whether it succeeded.
    pub fn sighup_and_wait(&mut self) -> bool {
        let (ok, failed) = (self.log_count(RELOADED), self.log_count(RELOAD_FAILED));
        self.signal("HUP");
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        loop {
            self.assert_running();
            if self.log_count(RELOADED) > ok {
                return true;
            }
            if self.log_count(RELOAD_FAILED) > failed {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "no reload logged within {RELOAD_TIMEOUT:?} of SIGHUP; log:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The admin endpoint's port; panics when the gateway has none.
    pub fn admin(&self) -> u16 {
        self.admin_port.expect("the gateway has an admin port")
    }

    /// Waits (at most `limit`) for the process to exit; its status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `curl http://127.0.0.1:PORT{path}` on an admin endpoint, with `extra` arguments.
pub fn curl_admin(port: u16, path: &str, extra: &[&str]) -> Curl {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut args = vec![url.as_str()];
    args.extend_from_slice(extra);
    curl(&args)
}

/// The serial number of the first certificate in `cert` as `openssl x509 -serial`
/// prints it (upper-case hex, no separators).
pub fn openssl_serial(cert: &Path) -> String {
    let mut command = Command::new("openssl");
    command.args(["x509", "-noout", "-serial", "-in"]).arg(cert);
    let out = run_with_timeout(command, b"", CLIENT_TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .strip_prefix("serial=")
        .unwrap_or_else(|| panic!("no serial from openssl x509 for {}: {text}", cert.display()))
        .to_owned()
}

/// Whether a verified TLS handshake for `sni` on `port` succeeds trusting only `ca`.
pub fn handshake_ok(port: u16, sni: &str, ca: &Path) -> bool {
    tls_connect(port, sni, client_config(ca, None)).is_ok()
}

/// Copies `from` to `to` through a temporary file and a rename (as certificate tools
/// replace files).
pub fn replace_file(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp-replace");
    std::fs::copy(from, &tmp)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), tmp.display()));
    std::fs::rename(&tmp, to)
        .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", tmp.display(), to.display()));
}

/// A Python upstream from `tests/tools/`, killed when dropped.
pub struct PyServer {
    child: Child,
    pub addr: SocketAddr,
}

impl PyServer {
    /// Starts `tests/tools/SCRIPT ARGS... PORT_FILE EXTRA...` and waits for the port
    /// it writes.
    pub fn start(dir: &TempDir, script: &str, args: &[&str], extra: &[&str]) -> PyServer {
        let port_file = dir.join(&format!("{script}.port"));
        let child = Command::new("python3")
            .arg(tool(script))
            .args(args)
            .arg(&port_file)
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 runs");
        // Killed and waited for when dropped, the wait for its port included.
        let mut server = PyServer {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(port) = std::fs::read_to_string(&port_file) {
                let port: u16 = port.trim().parse().expect("a port number");
                server.addr.set_port(port);
                return server;
            }
            assert!(Instant::now() < deadline, "{script} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of `tests/tools/SCRIPT`.
pub fn tool(script: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools")).join(script)
}

/// The grpcio client of `tests/tools/grpc_service.py`: one JSON result per call.
pub fn grpc_calls(
    target: &str,
    tls: Option<(&pki::Pki, &str)>,
    calls: &[&str],
) -> Vec<serde_json::Value> {
    let mut command = std::process::Command::new("python3");
    command.arg(tool("grpc_service.py")).arg("call").arg(target);
    if let Some((pki, name)) = tls {
        command
            .arg("--ca")
            .arg(&pki.root_cert)
            .arg("--name")
            .arg(name);
    }
    command.args(calls);
    let out = run_with_timeout(command, b"", CLIENT_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let results: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(
        results.len(),
        calls.len(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    results
}
