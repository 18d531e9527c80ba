//! Access log formats: Istio's default text line (`EnvoyTextLogFormat`), its default
//! JSON object (`EnvoyJSONLogFormatIstio`), or a text line of the operator's own
//! from the same Envoy command operators. A format is compiled once at start into
//! pieces (literal text, then one operator); rendering a line writes each piece's
//! text and value for an [`Exchange`] into a byte buffer, without allocating.
//!
//! Values print as Envoy prints them: a missing one as `-` in text and `null` in
//! JSON; `%START_TIME%` as `2024-01-09T15:35:47.283Z` (UTC, milliseconds); counts and
//! durations (milliseconds) as numbers; JSON strings escaped.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Exchange;
use crate::http::RequestId;

/// Istio's default text format (`meshConfig.accessLogFormat` empty), verbatim.
pub(crate) const ISTIO_TEXT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// Istio's default JSON format (`accessLogEncoding: JSON`): key and operator, in
/// Istio's order.
const ISTIO_JSON: &[(&str, &str)] = &[
    ("start_time", "START_TIME"),
    ("route_name", "ROUTE_NAME"),
    ("method", "REQ(:METHOD)"),
    ("path", "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)"),
    ("protocol", "PROTOCOL"),
    ("response_code", "RESPONSE_CODE"),
    ("response_flags", "RESPONSE_FLAGS"),
    ("response_code_details", "RESPONSE_CODE_DETAILS"),
    (
        "connection_termination_details",
        "CONNECTION_TERMINATION_DETAILS",
    ),
    ("bytes_received", "BYTES_RECEIVED"),
    ("bytes_sent", "BYTES_SENT"),
    ("duration", "DURATION"),
    (
        "upstream_service_time",
        "RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)",
    ),
    ("x_forwarded_for", "REQ(X-FORWARDED-FOR)"),
    ("user_agent", "REQ(USER-AGENT)"),
    ("request_id", "REQ(X-REQUEST-ID)"),
    ("authority", "REQ(:AUTHORITY)"),
    ("upstream_host", "UPSTREAM_HOST"),
    ("upstream_cluster", "UPSTREAM_CLUSTER_RAW"),
    ("upstream_local_address", "UPSTREAM_LOCAL_ADDRESS"),
    ("downstream_local_address", "DOWNSTREAM_LOCAL_ADDRESS"),
    ("downstream_remote_address", "DOWNSTREAM_REMOTE_ADDRESS"),
    ("requested_server_name", "REQUESTED_SERVER_NAME"),
    (
        "upstream_transport_failure_reason",
        "UPSTREAM_TRANSPORT_FAILURE_REASON",
    ),
];

/// One Envoy command operator ringress can fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StartTime,
    Method,
    /// `REQ(:PATH)`: the path as forwarded (normalised, rewritten).
    Path,
    /// `REQ(X-ENVOY-ORIGINAL-PATH?:PATH)`: the path before a rewrite.
    OriginalPath,
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamServiceTime,
    ForwardedFor,
    UserAgent,
    RequestId,
    Authority,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamLocalAddress,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    RequestedServerName,
    RouteName,
    RequestPrincipal,
}

/// The operators a custom format may use, as written.
const OPERATORS: &[(&str, Op)] = &[
    ("START_TIME", Op::StartTime),
    ("REQ(:METHOD)", Op::Method),
    ("REQ(:PATH)", Op::Path),
    ("REQ(X-ENVOY-ORIGINAL-PATH?:PATH)", Op::OriginalPath),
    ("PROTOCOL", Op::Protocol),
    ("RESPONSE_CODE", Op::ResponseCode),
    ("RESPONSE_FLAGS", Op::ResponseFlags),
    ("RESPONSE_CODE_DETAILS", Op::ResponseCodeDetails),
    (
        "CONNECTION_TERMINATION_DETAILS",
        Op::ConnectionTerminationDetails,
    ),
    (
        "UPSTREAM_TRANSPORT_FAILURE_REASON",
        Op::UpstreamTransportFailureReason,
    ),
    ("BYTES_RECEIVED", Op::BytesReceived),
    ("BYTES_SENT", Op::BytesSent),
    ("DURATION", Op::Duration),
    (
        "RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)",
        Op::UpstreamServiceTime,
    ),
    ("REQ(X-FORWARDED-FOR)", Op::ForwardedFor),
    ("REQ(USER-AGENT)", Op::UserAgent),
    ("REQ(X-REQUEST-ID)", Op::RequestId),
    ("REQ(:AUTHORITY)", Op::Authority),
    ("UPSTREAM_HOST", Op::UpstreamHost),
    ("UPSTREAM_CLUSTER", Op::UpstreamCluster),
    ("UPSTREAM_CLUSTER_RAW", Op::UpstreamCluster),
    ("UPSTREAM_LOCAL_ADDRESS", Op::UpstreamLocalAddress),
    ("DOWNSTREAM_LOCAL_ADDRESS", Op::DownstreamLocalAddress),
    ("DOWNSTREAM_REMOTE_ADDRESS", Op::DownstreamRemoteAddress),
    (
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
        Op::DownstreamRemoteAddressWithoutPort,
    ),
    ("REQUESTED_SERVER_NAME", Op::RequestedServerName),
    ("ROUTE_NAME", Op::RouteName),
    // What Istio's authn filter records of the verified JWT.
    (
        "DYNAMIC_METADATA(istio_authn:request.auth.principal)",
        Op::RequestPrincipal,
    ),
];

/// A compiled access log format: literal text and operators as pieces, each piece
/// the text before one operator, so a line costs one step per operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pieces: Vec<Piece>,
    /// Values are JSON (strings quoted and escaped, a missing one `null`).
    json: bool,
}

/// Literal text, then the operator after it (none: the text that ends the line).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    literal: Literal,
    op: Option<Op>,
}

/// Literal text of a format. Most are a separator of a few bytes, kept inline and
/// copied as one fixed-size block ([`push_prefix`](crate::http::push_prefix)).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Literal {
    Short { bytes: [u8; SHORT], len: u8 },
    Long(Box<[u8]>),
}

/// The longest literal kept inline.
const SHORT: usize = 8;

impl Literal {
    fn new(text: &str) -> Literal {
        let bytes = text.as_bytes();
        if bytes.len() > SHORT {
            return Literal::Long(bytes.into());
        }
        let mut short = [0; SHORT];
        short[..bytes.len()].copy_from_slice(bytes);
        Literal::Short {
            bytes: short,
            len: bytes.len() as u8,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Literal::Short { bytes, len } => {
                crate::http::push_prefix(out, bytes, usize::from(*len))
            }
            Literal::Long(bytes) => out.extend_from_slice(bytes),
        }
    }
}

/// Why a custom format cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error(
        "access log format: `%` at byte {at} starts no operator (an operator is written %NAME%)"
    )]
    Unterminated { at: usize },
    #[error("access log format: operator %{name}% is not supported; supported: {supported}")]
    Unknown { name: String, supported: String },
}

impl std::str::FromStr for Format {
    type Err = FormatError;

    /// `text` (Istio's default line), `json` (Istio's default JSON), or a line of
    /// literal text and `%OPERATOR%`s; a newline ends it whether written or not.
    fn from_str(s: &str) -> Result<Format, FormatError> {
        match s {
            "text" => Format::text(ISTIO_TEXT),
            "json" => Ok(Format::json(ISTIO_JSON)),
            custom => {
                let line = match custom.ends_with('\n') {
                    true => custom.to_owned(),
                    false => format!("{custom}\n"),
                };
                Format::text(&line)
            }
        }
    }
}

impl Default for Format {
    /// Istio's default text line.
    fn default() -> Format {
        // ISTIO_TEXT compiles (a test says so); an empty format would log nothing.
        Format::text(ISTIO_TEXT).unwrap_or(Format {
            pieces: Vec::new(),
            json: false,
        })
    }
}

fn operator(name: &str) -> Option<Op> {
    OPERATORS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, op)| *op)
}

impl Format {
    fn text(line: &str) -> Result<Format, FormatError> {
        let mut pieces = Vec::new();
        let mut rest = line;
        let mut offset = 0;
        while let Some(start) = rest.find('%') {
            let after = &rest[start + 1..];
            let end = after
                .find('%')
                .ok_or(FormatError::Unterminated { at: offset + start })?;
            let name = &after[..end];
            let op = operator(name).ok_or_else(|| FormatError::Unknown {
                name: name.to_owned(),
                supported: OPERATORS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
            pieces.push(Piece {
                literal: Literal::new(&rest[..start]),
                op: Some(op),
            });
            let consumed = start + 1 + end + 1;
            offset += consumed;
            rest = &rest[consumed..];
        }
        pieces.push(Piece {
            literal: Literal::new(rest),
            op: None,
        });
        Ok(Format {
            pieces,
            json: false,
        })
    }

    /// An object of `fields` (key, operator), one line.
    fn json(fields: &[(&str, &str)]) -> Format {
        let mut pieces: Vec<Piece> = fields
            .iter()
            .enumerate()
            .filter_map(|(i, (key, name))| {
                let separator = if i == 0 { "{" } else { "," };
                Some(Piece {
                    literal: Literal::new(&format!("{separator}\"{key}\":")),
                    op: Some(operator(name)?),
                })
            })
            .collect();
        pieces.push(Piece {
            literal: Literal::new("}\n"),
            op: None,
        });
        Format { pieces, json: true }
    }

    /// Appends the line of `exchange` to `out`.
    pub(crate) fn render(&self, exchange: &Exchange<'_>, memo: &mut Memo, out: &mut Vec<u8>) {
        // Room for a whole line at once.
        out.reserve(1024);
        match self.json {
            false => self.render_as::<false>(exchange, memo, out),
            true => self.render_as::<true>(exchange, memo, out),
        }
    }

    fn render_as<const JSON: bool>(&self, ex: &Exchange<'_>, memo: &mut Memo, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            piece.literal.write(out);
            if let Some(op) = piece.op {
                value::<JSON>(op, ex, memo, out);
            }
        }
    }
}

/// Writes one operator's value, as JSON or as text.
#[inline(always)]
fn value<const JSON: bool>(op: Op, ex: &Exchange<'_>, memo: &mut Memo, out: &mut Vec<u8>) {
    let text = |out: &mut Vec<u8>, s: Option<&[u8]>| match (s.filter(|s| !s.is_empty()), JSON) {
        (Some(s), false) => out.extend_from_slice(s),
        (Some(s), true) => json_string(out, s),
        (None, false) => out.push(b'-'),
        (None, true) => out.extend_from_slice(b"null"),
    };
    let quote = |out: &mut Vec<u8>| {
        if JSON {
            out.push(b'"');
        }
    };
    let static_text = |out: &mut Vec<u8>, s: Option<&str>| text(out, s.map(str::as_bytes));
    let number = |out: &mut Vec<u8>, n: u64| crate::http::push_decimal(out, n);
    let addr = |memo: &mut Memo, out: &mut Vec<u8>, a: Option<SocketAddr>| match a {
        Some(a) => {
            quote(out);
            memo.write_addr(a, out);
            quote(out);
        }
        None => text(out, None),
    };
    match op {
        Op::StartTime => {
            quote(out);
            memo.write_time(ex.start_ms, out);
            quote(out);
        }
        Op::Method => text(out, ex.method),
        Op::Path => text(out, ex.path),
        Op::OriginalPath => text(out, ex.original_path.or(ex.path)),
        Op::Protocol => static_text(out, Some(ex.protocol)),
        Op::ResponseCode => number(out, u64::from(ex.status)),
        // Envoy prints `-` for no flags, in JSON too.
        Op::ResponseFlags => match (ex.flags, JSON) {
            ("", true) => out.extend_from_slice(b"\"-\""),
            ("", false) => out.push(b'-'),
            (flags, _) => static_text(out, Some(flags)),
        },
        Op::ResponseCodeDetails => static_text(out, ex.details),
        Op::ConnectionTerminationDetails | Op::UpstreamTransportFailureReason => text(out, None),
        Op::BytesReceived => number(out, ex.bytes_received),
        Op::BytesSent => number(out, ex.bytes_sent),
        Op::Duration => number(out, ex.duration_ms),
        Op::UpstreamServiceTime => match ex.upstream_service_time_ms {
            Some(ms) => {
                // A header's value: a string in JSON, as Envoy prints it.
                quote(out);
                number(out, ms);
                quote(out);
            }
            None => text(out, None),
        },
        Op::ForwardedFor => text(out, ex.forwarded_for),
        Op::UserAgent => text(out, ex.user_agent),
        Op::RequestId => text(
            out,
            ex.request_id
                .map(RequestId::as_bytes)
                .or(ex.client_request_id),
        ),
        Op::Authority => text(out, ex.authority),
        Op::UpstreamHost => addr(memo, out, ex.upstream_host),
        Op::UpstreamCluster => text(out, ex.upstream_cluster),
        Op::UpstreamLocalAddress => addr(memo, out, ex.upstream_local),
        Op::DownstreamLocalAddress => addr(memo, out, ex.downstream_local),
        Op::DownstreamRemoteAddress => addr(memo, out, Some(ex.downstream_remote)),
        Op::DownstreamRemoteAddressWithoutPort => {
            quote(out);
            crate::http::push_ip(out, ex.downstream_remote.ip());
            quote(out);
        }
        Op::RequestedServerName => text(out, ex.server_name),
        Op::RouteName => text(out, ex.route_name),
        Op::RequestPrincipal => text(out, ex.request_principal),
    }
}

/// `s` as a JSON string: quotes, backslash and control bytes escaped (`\u00XX`); a
/// string that is not UTF-8 has its bytes above 0x7f escaped as `\u00XX` too (read
/// as Latin-1), so the line stays valid JSON.
fn json_string(out: &mut Vec<u8>, s: &[u8]) {
    let utf8 = std::str::from_utf8(s).is_ok();
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f | 0x7f => {
                let _ = write!(Utf8(out), "\\u{b:04x}");
            }
            0x80.. if !utf8 => {
                let _ = write!(Utf8(out), "\\u{b:04x}");
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// `fmt::Write` into a byte vector.
struct Utf8<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// What one shard's lines share, so that a line costs less than a first one: a
/// reading of the wall clock beside the shard's clock (a request's start time is
/// worked out from it, not read from the system), the date and time of the current
/// second (`%START_TIME%` then formats the milliseconds only), and the text of IPv4
/// socket addresses formatted before (a keep-alive connection's four addresses repeat
/// on every one of its lines).
#[derive(Debug, Default)]
pub(crate) struct Memo {
    /// The shard's clock and the wall clock (nanoseconds since the Unix epoch) read
    /// together, at most [`ANCHOR_FOR`] before the instants worked out from it.
    anchor: Option<(Instant, u64)>,
    second: Option<u64>,
    /// `2024-01-09T15:35:47.`
    prefix: Vec<u8>,
    /// [`ADDRESS_SLOTS`] entries once an address was written, each holding the last
    /// address that hashed there.
    addresses: Vec<AddressText>,
}

/// Socket addresses whose text a shard keeps: a few KiB, enough for the addresses of
/// a few hundred busy connections.
const ADDRESS_SLOTS: usize = 256;

/// An IPv4 socket address and its text (`len` 0: none yet).
#[derive(Debug, Clone, Copy)]
struct AddressText {
    addr: SocketAddrV4,
    text: [u8; 21],
    len: u8,
}

/// How long a reading of the wall clock is used for: the two clocks drift apart by
/// far less than a millisecond in that time, and a step of the wall clock (NTP, an
/// operator) shows in the log within it.
const ANCHOR_FOR: Duration = Duration::from_secs(1);

impl Memo {
    /// The wall-clock time of the shard's instant `at`, in milliseconds since the
    /// Unix epoch.
    pub(crate) fn wall_time_ms(&mut self, at: Instant) -> u64 {
        if let Some((instant, wall_ns)) = self.anchor {
            // A request that started before the reading (a long one) is dated back
            // from it.
            let ns = match at.checked_duration_since(instant) {
                None => wall_ns.saturating_sub(nanos(instant - at)),
                Some(after) if after < ANCHOR_FOR => wall_ns + nanos(after),
                Some(_) => return self.read_wall_clock(at),
            };
            return ns / 1_000_000;
        }
        self.read_wall_clock(at)
    }

    /// Reads the wall clock, keeps the reading, and dates `at` from it.
    fn read_wall_clock(&mut self, at: Instant) -> u64 {
        let (instant, wall) = (Instant::now(), SystemTime::now());
        let wall_ns = nanos(wall.duration_since(UNIX_EPOCH).unwrap_or_default());
        self.anchor = Some((instant, wall_ns));
        // `at` is a moment ago: the start of the request, or of the shard's pass
        // through its ring.
        wall_ns.saturating_sub(nanos(instant.saturating_duration_since(at))) / 1_000_000
    }

    /// Writes `addr` as `a.b.c.d:port` (IPv6 as `[..]:port`).
    fn write_addr(&mut self, addr: SocketAddr, out: &mut Vec<u8>) {
        let SocketAddr::V4(v4) = addr else {
            crate::http::push_socket_addr(out, addr);
            return;
        };
        if self.addresses.is_empty() {
            let none = AddressText {
                addr: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                text: [0; 21],
                len: 0,
            };
            self.addresses = vec![none; ADDRESS_SLOTS];
        }
        // Fibonacci hashing of address and port: the top 8 bits pick the slot.
        let key = u32::from(*v4.ip()) ^ u32::from(v4.port()).rotate_left(16);
        let slot = (key.wrapping_mul(0x9E37_79B9) >> 24) as usize % ADDRESS_SLOTS;
        let entry = &mut self.addresses[slot];
        if entry.len == 0 || entry.addr != v4 {
            entry.addr = v4;
            entry.len = crate::http::socket_v4_text(v4, &mut entry.text) as u8;
        }
        crate::http::push_prefix(out, &entry.text, usize::from(entry.len));
    }

    /// Writes `ms` (milliseconds since the Unix epoch) as `2024-01-09T15:35:47.283Z`.
    fn write_time(&mut self, ms: u64, out: &mut Vec<u8>) {
        let second = ms / 1000;
        if self.second != Some(second) {
            self.second = Some(second);
            self.prefix.clear();
            let (year, month, day) = civil_date(second / 86_400);
            let time = second % 86_400;
            let _ = write!(
                Utf8(&mut self.prefix),
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
                time / 3600,
                time % 3600 / 60,
                time % 60
            );
        }
        out.extend_from_slice(&self.prefix);
        let millis = ms % 1000;
        out.extend_from_slice(&[
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
            b'Z',
        ]);
    }
}

/// `d` in nanoseconds, saturating (in the year 2554).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The proleptic Gregorian date of day `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn exchange() -> Exchange<'static> {
        Exchange {
            start_ms: 1_704_814_547_283,
            method: Some(b"GET"),
            path: Some(b"/politics"),
            original_path: None,
            protocol: "HTTP/1.1",
            status: 301,
            flags: "",
            details: Some("via_upstream"),
            bytes_received: 0,
            bytes_sent: 0,
            duration_ms: 2,
            upstream_service_time_ms: Some(2),
            forwarded_for: Some(b"172.30.239.55"),
            user_agent: Some(b"curl/7.87.0-DEV"),
            request_id: None,
            client_request_id: Some(b"6c01d65f-a157-97cd-8782-320a40026901"),
            authority: Some(b"edition.cnn.com"),
            upstream_host: Some("151.101.195.5:80".parse().unwrap()),
            upstream_cluster: Some(b"outbound|80||edition.cnn.com"),
            upstream_local: Some("172.30.239.16:55636".parse().unwrap()),
            downstream_local: Some("172.30.239.16:80".parse().unwrap()),
            downstream_remote: "172.30.239.55:59224".parse().unwrap(),
            server_name: None,
            route_name: Some(b"default.forward-cnn-from-egress-gateway.0"),
            request_principal: None,
        }
    }

    fn render(format: &Format, ex: &Exchange<'_>) -> String {
        let mut out = Vec::new();
        format.render(ex, &mut Memo::default(), &mut out);
        String::from_utf8(out).unwrap()
    }

    /// The istio.io sample line, field for field.
    #[test]
    fn the_text_format_prints_istios_sample_line() {
        let format: Format = "text".parse().unwrap();
        assert_eq!(format, Format::default());
        assert_eq!(
            render(&format, &exchange()),
            "[2024-01-09T15:35:47.283Z] \"GET /politics HTTP/1.1\" 301 - via_upstream - \"-\" 0 0 2 2 \"172.30.239.55\" \"curl/7.87.0-DEV\" \"6c01d65f-a157-97cd-8782-320a40026901\" \"edition.cnn.com\" \"151.101.195.5:80\" outbound|80||edition.cnn.com 172.30.239.16:55636 172.30.239.16:80 172.30.239.55:59224 - default.forward-cnn-from-egress-gateway.0\n"
        );
        let no_route = Exchange {
            status: 404,
            flags: "NR",
            details: Some("route_not_found"),
            upstream_service_time_ms: None,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local: None,
            route_name: None,
            request_principal: None,
            ..exchange()
        };
        assert!(
            render(&format, &no_route).contains("\" 404 NR route_not_found - \"-\" 0 0 2 - \"")
        );
    }

    #[test]
    fn the_json_format_types_its_values() {
        let format: Format = "json".parse().unwrap();
        let line = render(
            &format,
            &Exchange {
                user_agent: Some(b"a \"quoted\"\tagent"),
                authority: Some(b"caf\xe9"),
                server_name: None,
                ..exchange()
            },
        );
        assert!(line.ends_with("}\n"));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["start_time"], "2024-01-09T15:35:47.283Z");
        assert_eq!(value["response_code"], 301);
        assert_eq!(value["duration"], 2);
        assert_eq!(value["upstream_service_time"], "2");
        assert_eq!(value["response_flags"], "-");
        assert_eq!(value["requested_server_name"], serde_json::Value::Null);
        assert_eq!(value["user_agent"], "a \"quoted\"\tagent");
        assert_eq!(value["authority"], "caf\u{e9}", "Latin-1 bytes are escaped");
        assert_eq!(value["authority"], "caf\u{e9}", "Latin-1 bytes are escaped");
        assert_eq!(value["upstream_cluster"], "outbound|80||edition.cnn.com");
        assert_eq!(value.as_object().unwrap().len(), ISTIO_JSON.len());
        let keys: Vec<&str> = line
            .split(",\"")
            .map(|k| k.trim_start_matches("{\"").split('"').next().unwrap())
            .collect();
        assert_eq!(keys, ISTIO_JSON.iter().map(|(k, _)| *k).collect::<Vec<_>>());
    }

    #[test]
    fn custom_formats_compile_or_say_what_is_wrong() {
        let format: Format = "%REQ(:METHOD)% %RESPONSE_CODE% took %DURATION%ms"
            .parse()
            .unwrap();
        assert_eq!(render(&format, &exchange()), "GET 301 took 2ms\n");
        assert_eq!(
            "%REQ(:METHOD) x".parse::<Format>(),
            Err(FormatError::Unterminated { at: 0 })
        );
        let unknown = "%FILTER_STATE(x)%".parse::<Format>().unwrap_err();
        assert!(
            unknown.to_string().contains("FILTER_STATE(x)")
                && unknown.to_string().contains("START_TIME")
        );
    }

    #[test]
    fn remembered_addresses_read_as_fresh_ones() {
        let mut memo = Memo::default();
        // More addresses than slots, each written twice, interleaved: every slot is
        // reused, and a colliding address must never come back with another's text.
        let addrs: Vec<SocketAddr> = (0..600u16)
            .map(|i| SocketAddr::from(([127, 0, (i % 3) as u8, 1], 40_000 + i)))
            .chain(["[::1]:8443".parse().unwrap()])
            .collect();
        for round in 0..2 {
            for a in &addrs {
                let mut fresh = Vec::new();
                crate::http::push_socket_addr(&mut fresh, *a);
                let mut out = Vec::new();
                memo.write_addr(*a, &mut out);
                assert_eq!(out, fresh, "{a} in round {round}");
                assert_eq!(out, a.to_string().as_bytes());
            }
        }
    }

    #[test]
    fn wall_times_follow_the_shards_clock() {
        let mut memo = Memo::default();
        let now = Instant::now();
        let first = memo.wall_time_ms(now);
        let read = nanos(SystemTime::now().duration_since(UNIX_EPOCH).unwrap()) / 1_000_000;
        assert!(first.abs_diff(read) < 50, "{first} is now ({read})");
        // Within the reading's second, and before it: dated from the reading.
        let later = memo.wall_time_ms(now + Duration::from_millis(700));
        assert!((699..=701).contains(&(later - first)), "{later} - {first}");
        let earlier = memo.wall_time_ms(now - Duration::from_secs(90));
        assert!(
            (89_999..=90_001).contains(&(first - earlier)),
            "{first} - {earlier}"
        );
        // Past it: the clock is read again.
        let anchor = memo.anchor;
        memo.wall_time_ms(now + Duration::from_millis(1500));
        assert_ne!(memo.anchor, anchor);
    }

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(19_731), (2024, 1, 9));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(20_788), (2026, 12, 1));
        let mut memo = Memo::default();
        let mut out = Vec::new();
        memo.write_time(951_782_400_007, &mut out);
        assert_eq!(out, b"2000-02-29T00:00:00.007Z");
    }
}
