//! Reading the SNI name from a client's first bytes, before any TLS connection exists.
//!
//! A shard receives the ClientHello into the connection's own ciphertext buffer, and
//! [`read_client_hello`] looks into it: TLS record header(s) → handshake header →
//! ClientHello → extensions → `server_name` → `host_name`. The name chooses the
//! Gateway server ([`super::SniSelector`]) and so the `ServerConfig` that rustls'
//! unbuffered connection is then created with; that connection reads the very same
//! bytes again and does the full validation of the handshake. This parser only has to
//! be strict about what it reads itself, never panic, and wait for more bytes while
//! the hello is incomplete. A hello may be split over several handshake records (up
//! to [`MAX_CLIENT_HELLO_WIRE_LEN`] bytes of them) and across any number of reads.
//!
//! The name is read as rustls reads it: one `host_name` entry at most, an IP address
//! given as a host name counts as no SNI, a name that is neither a DNS name nor an IP
//! address is refused (`illegal_parameter`). DNS names are lowercased.

use std::borrow::Cow;

use rustls::AlertDescription;
use rustls::pki_types::ServerName;

/// Largest ClientHello message body accepted (the handshake message, without its
/// 4-byte header). Real hellos, post-quantum key shares included, are 2 KiB or less.
pub(crate) const MAX_CLIENT_HELLO_LEN: usize = 16 * 1024;

/// Most bytes of TLS records (headers included) the ClientHello may take on the wire:
/// room for a maximal hello cut into small records.
pub(crate) const MAX_CLIENT_HELLO_WIRE_LEN: usize = 32 * 1024;

/// Longest TLS plaintext record payload (2^14, RFC 8446 §5.1).
const MAX_RECORD_LEN: usize = 16 * 1024;

/// Size of a TLS record header: type, version, length.
const RECORD_HEADER_LEN: usize = 5;

/// Size of a handshake message header: type, 24-bit length.
const HANDSHAKE_HEADER_LEN: usize = 4;

const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const SERVER_NAME_HOST_NAME: u8 = 0;
const MAX_SESSION_ID_LEN: usize = 32;

/// What the bytes received so far say about the ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HelloScan {
    /// The hello is not complete yet: receive more bytes and scan them all again.
    Incomplete,
    /// The whole hello is there and well formed as far as SNI goes.
    Complete(ClientHelloInfo),
}

/// What ringress takes from a ClientHello before the handshake starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientHelloInfo {
    /// The `host_name` of the `server_name` extension, lowercased; `None` without the
    /// extension or when it holds an IP address.
    pub(crate) server_name: Option<String>,
}

/// Why the first bytes of a connection are not a ClientHello ringress accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClientHelloError {
    #[error(
        "the first record has content type {0} (0x{0:02x}), not a TLS handshake (22); \
         a plain-text client (HTTP?) on a TLS port"
    )]
    NotHandshake(u8),
    #[error("record version 0x{0:04x} is not a TLS version (0x03xx)")]
    RecordVersion(u16),
    #[error("a handshake record of length 0")]
    EmptyRecord,
    #[error("a record of {0} bytes, more than the 16384 TLS allows")]
    RecordTooLong(usize),
    #[error("handshake message type {0} where a ClientHello (1) must come first")]
    NotClientHello(u8),
    #[error("a ClientHello of {0} bytes, more than the {MAX_CLIENT_HELLO_LEN} accepted")]
    HelloTooLong(usize),
    #[error(
        "the ClientHello is cut into records taking more than {MAX_CLIENT_HELLO_WIRE_LEN} bytes"
    )]
    TooManyRecords,
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    #[error("the ClientHello has two server_name extensions or two host_name entries")]
    DuplicateServerName,
    #[error("the server_name extension holds no host_name")]
    NoHostName,
    #[error("server_name {0:?} is neither a DNS name nor an IP address")]
    InvalidServerName(String),
}

impl ClientHelloError {
    /// The TLS alert that tells the client what was wrong.
    pub(crate) fn alert(&self) -> AlertDescription {
        match self {
            ClientHelloError::NotHandshake(_) | ClientHelloError::NotClientHello(_) => {
                AlertDescription::UnexpectedMessage
            }
            ClientHelloError::RecordTooLong(_) => AlertDescription::RecordOverflow,
            ClientHelloError::NoHostName | ClientHelloError::InvalidServerName(_) => {
                AlertDescription::IllegalParameter
            }
            ClientHelloError::HelloTooLong(_) | ClientHelloError::TooManyRecords => {
                AlertDescription::HandshakeFailure
            }
            ClientHelloError::RecordVersion(_)
            | ClientHelloError::EmptyRecord
            | ClientHelloError::Malformed(_)
            | ClientHelloError::DuplicateServerName => AlertDescription::DecodeError,
        }
    }
}

/// A plaintext fatal alert record, as sent before any keys exist.
pub(crate) fn fatal_alert_record(alert: AlertDescription) -> [u8; 7] {
    // type alert (21), version TLS 1.2, length 2, level fatal (2), description.
    [21, 3, 3, 0, 2, 2, u8::from(alert)]
}

/// Scans the bytes a client sent first (`wire`, from the connection's start) for its
/// ClientHello and reads the SNI name from it. Bytes after the hello are ignored.
pub(crate) fn read_client_hello(wire: &[u8]) -> Result<HelloScan, ClientHelloError> {
    match handshake_message(wire)? {
        None => Ok(HelloScan::Incomplete),
        Some(body) => parse_client_hello(&body).map(HelloScan::Complete),
    }
}

/// The body of the first handshake message, joined from as many records as it takes;
/// `None` while it is incomplete. Borrowed when one record holds it all.
fn handshake_message(wire: &[u8]) -> Result<Option<Cow<'_, [u8]>>, ClientHelloError> {
    let mut joined: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        // A wrong content type is known from its first byte.
        if let Some(&content_type) = wire.get(pos)
            && content_type != CONTENT_TYPE_HANDSHAKE
        {
            return Err(ClientHelloError::NotHandshake(content_type));
        }
        let Some(header) = wire.get(pos..pos + RECORD_HEADER_LEN) else {
            return Ok(None);
        };
        let &[content_type, major, minor, len_hi, len_lo] = header else {
            return Ok(None);
        };
        debug_assert_eq!(content_type, CONTENT_TYPE_HANDSHAKE);
        if major != 3 {
            return Err(ClientHelloError::RecordVersion(u16::from_be_bytes([
                major, minor,
            ])));
        }
        let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        if len == 0 {
            return Err(ClientHelloError::EmptyRecord);
        }
        if len > MAX_RECORD_LEN {
            return Err(ClientHelloError::RecordTooLong(len));
        }
        let start = pos + RECORD_HEADER_LEN;
        let end = start + len;
        if end > MAX_CLIENT_HELLO_WIRE_LEN {
            return Err(ClientHelloError::TooManyRecords);
        }
        // The message header is known as soon as its 4 bytes are: check it before
        // waiting for the rest of a record.
        let available = wire.get(start..end.min(wire.len())).unwrap_or_default();
        let first = pos == 0;
        if !first {
            joined.extend_from_slice(available);
        }
        let have: &[u8] = if first { available } else { &joined };
        let message_end = match have.get(..HANDSHAKE_HEADER_LEN) {
            Some(&[msg_type, l1, l2, l3]) => {
                if msg_type != HANDSHAKE_CLIENT_HELLO {
                    return Err(ClientHelloError::NotClientHello(msg_type));
                }
                let body_len = usize::from(l1) << 16 | usize::from(l2) << 8 | usize::from(l3);
                if body_len > MAX_CLIENT_HELLO_LEN {
                    return Err(ClientHelloError::HelloTooLong(body_len));
                }
                Some(HANDSHAKE_HEADER_LEN + body_len)
            }
            _ => None,
        };
        // Only whole records count: the rest of this one must have arrived.
        if wire.len() < end {
            return Ok(None);
        }
        if let Some(message_end) = message_end
            && have.len() >= message_end
        {
            if have.len() > message_end {
                // Another handshake message shares the record: never the case for a
                // ClientHello, which is answered before anything follows it.
                return Err(ClientHelloError::Malformed(
                    "bytes after the ClientHello in its record",
                ));
            }
            if first {
                let body = available.get(HANDSHAKE_HEADER_LEN..).unwrap_or_default();
                return Ok(Some(Cow::Borrowed(body)));
            }
            joined.drain(..HANDSHAKE_HEADER_LEN.min(joined.len()));
            return Ok(Some(Cow::Owned(joined)));
        }
        if first {
            // The first record was whole but the message goes on: keep its bytes.
            joined.extend_from_slice(available);
        }
        pos = end;
    }
}

/// Reads a ClientHello body (RFC 8446 §4.1.2) up to its `server_name` extension,
/// checking the framing of every field on the way.
fn parse_client_hello(body: &[u8]) -> Result<ClientHelloInfo, ClientHelloError> {
    let mut r = Reader(body);
    r.take(2, "legacy_version")?;
    r.take(32, "random")?;
    let session_id_len = usize::from(r.u8("session_id length")?);
    if session_id_len > MAX_SESSION_ID_LEN {
        return Err(ClientHelloError::Malformed(
            "session_id longer than 32 bytes",
        ));
    }
    r.take(session_id_len, "session_id")?;
    let suites_len = usize::from(r.u16("cipher_suites length")?);
    if suites_len < 2 || suites_len % 2 != 0 {
        return Err(ClientHelloError::Malformed(
            "cipher_suites empty or of odd length",
        ));
    }
    r.take(suites_len, "cipher_suites")?;
    let compression_len = usize::from(r.u8("compression_methods length")?);
    if compression_len == 0 {
        return Err(ClientHelloError::Malformed("no compression_methods"));
    }
    r.take(compression_len, "compression_methods")?;
    let mut server_name = None;
    if r.is_empty() {
        // A hello without extensions (TLS 1.2 and older clients).
        return Ok(ClientHelloInfo { server_name });
    }
    let extensions_len = usize::from(r.u16("extensions length")?);
    let mut extensions = Reader(r.take(extensions_len, "extensions")?);
    if !r.is_empty() {
        return Err(ClientHelloError::Malformed("bytes after the extensions"));
    }
    let mut seen_server_name = false;
    while !extensions.is_empty() {
        let kind = extensions.u16("extension type")?;
        let len = usize::from(extensions.u16("extension length")?);
        let data = extensions.take(len, "extension data")?;
        if kind == EXTENSION_SERVER_NAME {
            if seen_server_name {
                return Err(ClientHelloError::DuplicateServerName);
            }
            seen_server_name = true;
            server_name = parse_server_name(data)?;
        }
    }
    Ok(ClientHelloInfo { server_name })
}

/// Reads a `server_name` extension (RFC 6066 §3): the `host_name` entry's name, or
/// `None` when it is an IP address.
fn parse_server_name(data: &[u8]) -> Result<Option<String>, ClientHelloError> {
    let mut r = Reader(data);
    let list_len = usize::from(r.u16("server_name_list length")?);
    if list_len == 0 {
        return Err(ClientHelloError::Malformed("empty server_name_list"));
    }
    let mut list = Reader(r.take(list_len, "server_name_list")?);
    if !r.is_empty() {
        return Err(ClientHelloError::Malformed(
            "bytes after the server_name_list",
        ));
    }
    let mut host_name: Option<&[u8]> = None;
    while !list.is_empty() {
        let name_type = list.u8("server name type")?;
        if name_type != SERVER_NAME_HOST_NAME {
            // An unknown name type's encoding is unknown: nothing after it can be read.
            break;
        }
        let len = usize::from(list.u16("host_name length")?);
        if len == 0 {
            return Err(ClientHelloError::Malformed("empty host_name"));
        }
        let name = list.take(len, "host_name")?;
        if host_name.replace(name).is_some() {
            return Err(ClientHelloError::DuplicateServerName);
        }
    }
    let name = host_name.ok_or(ClientHelloError::NoHostName)?;
    match ServerName::try_from(name) {
        Ok(ServerName::DnsName(dns)) => Ok(Some(dns.as_ref().to_ascii_lowercase())),
        Ok(ServerName::IpAddress(_)) => Ok(None),
        Ok(_) | Err(_) => Err(ClientHelloError::InvalidServerName(
            String::from_utf8_lossy(name).into_owned(),
        )),
    }
}

/// A cursor over untrusted bytes whose reads fail, naming the field, when too short.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ClientHelloError> {
        let Some((head, rest)) = self.0.split_at_checked(n) else {
            return Err(ClientHelloError::Malformed(field));
        };
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ClientHelloError> {
        match self.take(1, field)? {
            &[b] => Ok(b),
            _ => Err(ClientHelloError::Malformed(field)),
        }
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, ClientHelloError> {
        match self.take(2, field)? {
            &[hi, lo] => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err(ClientHelloError::Malformed(field)),
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    use super::*;

    /// The bytes a rustls client sends first, for `name`, with or without SNI.
    fn real_hello(name: &str, sni: bool) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        config.enable_sni = sni;
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let mut client = ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut out).unwrap();
        }
        out
    }

    /// The handshake message inside a single-record hello.
    fn message_of(record: &[u8]) -> &[u8] {
        assert_eq!(record[0], 22);
        let len = usize::from(u16::from_be_bytes([record[3], record[4]]));
        assert_eq!(record.len(), 5 + len, "one record");
        &record[5..]
    }

    /// `message` cut into handshake records of `size` bytes.
    fn records(message: &[u8], size: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        for part in message.chunks(size) {
            wire.extend_from_slice(&[22, 3, 1]);
            wire.extend_from_slice(&u16::try_from(part.len()).unwrap().to_be_bytes());
            wire.extend_from_slice(part);
        }
        wire
    }

    /// `message` with its 24-bit length and the record's length fixed after an edit.
    fn record_of(message: &[u8]) -> Vec<u8> {
        records(message, MAX_RECORD_LEN)
    }

    fn complete(name: Option<&str>) -> HelloScan {
        HelloScan::Complete(ClientHelloInfo {
            server_name: name.map(str::to_owned),
        })
    }

    /// Every prefix of `wire` is incomplete and the whole gives `expected`.
    fn check_every_split(wire: &[u8], expected: &HelloScan) {
        for cut in 0..wire.len() {
            assert_eq!(
                read_client_hello(&wire[..cut]),
                Ok(HelloScan::Incomplete),
                "prefix of {cut} of {} bytes",
                wire.len()
            );
        }
        assert_eq!(read_client_hello(wire).as_ref(), Ok(expected));
    }

    #[test]
    fn reads_the_sni_of_a_real_hello_over_every_split() {
        let wire = real_hello("Api.Example.com", true);
        check_every_split(&wire, &complete(Some("api.example.com")));
    }

    #[test]
    fn a_hello_without_sni_is_complete_without_a_name() {
        let wire = real_hello("api.example.com", false);
        check_every_split(&wire, &complete(None));
        // rustls sends no SNI for an IP address.
        let wire = real_hello("10.0.0.1", true);
        assert_eq!(read_client_hello(&wire), Ok(complete(None)));
    }

    #[test]
    fn a_hello_over_several_records_is_joined() {
        let wire = real_hello("www.example.com", true);
        let message = message_of(&wire);
        for size in [1, 2, 3, 4, 5, 7, 64, 100, message.len() - 1] {
            let split = records(message, size);
            check_every_split(&split, &complete(Some("www.example.com")));
        }
    }

    #[test]
    fn bytes_after_the_hello_are_left_alone() {
        let mut wire = real_hello("www.example.com", true);
        wire.extend_from_slice(&[20, 3, 3, 0, 1, 1, 23, 3, 3]);
        assert_eq!(
            read_client_hello(&wire),
            Ok(complete(Some("www.example.com")))
        );
    }

    #[test]
    fn plain_http_and_other_records_are_refused() {
        let error = read_client_hello(b"GET / HTTP/1.1\r\n").unwrap_err();
        assert_eq!(error, ClientHelloError::NotHandshake(b'G'));
        assert!(error.to_string().contains("plain-text"));
        assert_eq!(error.alert(), AlertDescription::UnexpectedMessage);
        // Content type is checked from the first byte on.
        assert_eq!(
            read_client_hello(&[23]),
            Err(ClientHelloError::NotHandshake(23))
        );
        assert_eq!(
            read_client_hello(&[22, 2, 0, 0, 1]),
            Err(ClientHelloError::RecordVersion(0x0200))
        );
        assert_eq!(
            read_client_hello(&[22, 3, 1, 0, 0]),
            Err(ClientHelloError::EmptyRecord)
        );
        assert_eq!(
            read_client_hello(&[22, 3, 1, 0x40, 1]),
            Err(ClientHelloError::RecordTooLong(16385))
        );
        // A ServerHello (2) where the ClientHello must be, known from its header.
        assert_eq!(
            read_client_hello(&[22, 3, 3, 0, 40, 2, 0, 0, 36]),
            Err(ClientHelloError::NotClientHello(2))
        );
    }

    #[test]
    fn a_second_record_of_another_type_is_refused() {
        let wire = real_hello("www.example.com", true);
        let message = message_of(&wire);
        let mut split = records(&message[..10], 10);
        split.extend_from_slice(&[21, 3, 3, 0, 2, 2, 40]);
        assert_eq!(
            read_client_hello(&split),
            Err(ClientHelloError::NotHandshake(21))
        );
    }

    #[test]
    fn length_limits_are_enforced() {
        // A hello announcing more than the limit is refused from its header.
        let len = MAX_CLIENT_HELLO_LEN + 1;
        let header = [
            22,
            3,
            1,
            0,
            4,
            1,
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
        ];
        assert_eq!(
            read_client_hello(&header),
            Err(ClientHelloError::HelloTooLong(len))
        );
        let error = ClientHelloError::HelloTooLong(len);
        assert_eq!(error.alert(), AlertDescription::HandshakeFailure);
        // A hello at the limit cut into 1-byte records takes too much of the wire.
        let len = MAX_CLIENT_HELLO_LEN;
        let mut message = vec![1, (len >> 16) as u8, (len >> 8) as u8, len as u8];
        message.resize(4 + len, 0);
        let wire = records(&message, 1);
        assert_eq!(
            read_client_hello(&wire),
            Err(ClientHelloError::TooManyRecords)
        );
        // The same in one record is read (and found malformed: it is all zeros).
        assert!(matches!(
            read_client_hello(&records(&message, MAX_RECORD_LEN)),
            Err(ClientHelloError::Malformed(_))
        ));
    }

    /// A real hello's message with its body replaced by `body`.
    fn with_body(body: &[u8]) -> Vec<u8> {
        let len = body.len();
        let mut message = vec![1, (len >> 16) as u8, (len >> 8) as u8, len as u8];
        message.extend_from_slice(body);
        record_of(&message)
    }

    /// A minimal hello body (no session id, one suite, null compression) with the
    /// given extensions block (`None`: no extensions at all).
    fn body(extensions: Option<&[u8]>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        if let Some(ext) = extensions {
            body.extend_from_slice(&u16::try_from(ext.len()).unwrap().to_be_bytes());
            body.extend_from_slice(ext);
        }
        body
    }

    /// A `server_name` extension holding `entries` (type, name) pairs.
    fn sni_extension(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (kind, name) in entries {
            list.push(*kind);
            list.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
            list.extend_from_slice(name);
        }
        let mut data = u16::try_from(list.len()).unwrap().to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        let mut ext = vec![0, 0];
        ext.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        ext.extend_from_slice(&data);
        ext
    }

    #[test]
    fn handmade_hellos_are_read() {
        assert_eq!(
            read_client_hello(&with_body(&body(None))),
            Ok(complete(None))
        );
        assert_eq!(
            read_client_hello(&with_body(&body(Some(&[])))),
            Ok(complete(None))
        );
        let mut ext = vec![0x00, 0x0a, 0, 2, 0, 0x1d]; // an unrelated extension first
        ext.extend(sni_extension(&[(0, b"a.example")]));
        let wire = with_body(&body(Some(&ext)));
        check_every_split(&wire, &complete(Some("a.example")));
        // An IP address as host_name counts as no SNI, as rustls treats it.
        let ext = sni_extension(&[(0, b"192.0.2.1")]);
        assert_eq!(
            read_client_hello(&with_body(&body(Some(&ext)))),
            Ok(complete(None))
        );
        // An unknown name type after the host name ends the list.
        let ext = sni_extension(&[(0, b"a.example"), (9, b"zz")]);
        assert_eq!(
            read_client_hello(&with_body(&body(Some(&ext)))),
            Ok(complete(Some("a.example")))
        );
    }

    #[test]
    fn bad_server_names_are_refused() {
        let cases: [(Vec<u8>, ClientHelloError); 5] = [
            (
                sni_extension(&[(0, b"a.example"), (0, b"b.example")]),
                ClientHelloError::DuplicateServerName,
            ),
            (
                [
                    sni_extension(&[(0, b"a.example")]),
                    sni_extension(&[(0, b"a.example")]),
                ]
                .concat(),
                ClientHelloError::DuplicateServerName,
            ),
            (
                sni_extension(&[(0, b"bad name!")]),
                ClientHelloError::InvalidServerName("bad name!".into()),
            ),
            (sni_extension(&[(9, b"zz")]), ClientHelloError::NoHostName),
            (
                sni_extension(&[(0, b"")]),
                ClientHelloError::Malformed("empty host_name"),
            ),
        ];
        for (ext, expected) in cases {
            assert_eq!(
                read_client_hello(&with_body(&body(Some(&ext)))),
                Err(expected)
            );
        }
        let error = ClientHelloError::InvalidServerName("x".into());
        assert_eq!(error.alert(), AlertDescription::IllegalParameter);
    }

    #[test]
    fn truncated_and_padded_bodies_are_malformed() {
        let ext = sni_extension(&[(0, b"a.example")]);
        let full = body(Some(&ext));
        // Every shorter body is malformed (or, cut right after the compression
        // methods, a valid hello without extensions).
        for cut in 0..full.len() {
            match read_client_hello(&with_body(&full[..cut])) {
                Err(ClientHelloError::Malformed(_)) => {}
                Ok(scan) if cut == body(None).len() => assert_eq!(scan, complete(None)),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        let mut padded = full.clone();
        padded.push(0);
        assert_eq!(
            read_client_hello(&with_body(&padded)),
            Err(ClientHelloError::Malformed("bytes after the extensions"))
        );
        // A second handshake message in the hello's record.
        let mut wire = with_body(&full);
        let record_len = u16::from_be_bytes([wire[3], wire[4]]) + 4;
        wire[3..5].copy_from_slice(&record_len.to_be_bytes());
        wire.extend_from_slice(&[20, 0, 0, 0]);
        assert_eq!(
            read_client_hello(&wire),
            Err(ClientHelloError::Malformed(
                "bytes after the ClientHello in its record"
            ))
        );
    }

    #[test]
    fn field_checks() {
        let mut long_session = body(None);
        long_session[34] = 33;
        assert_eq!(
            read_client_hello(&with_body(&long_session)),
            Err(ClientHelloError::Malformed(
                "session_id longer than 32 bytes"
            ))
        );
        let mut odd_suites = body(None);
        odd_suites[36] = 1;
        assert!(matches!(
            read_client_hello(&with_body(&odd_suites)),
            Err(ClientHelloError::Malformed(_))
        ));
        let mut no_compression = body(None);
        no_compression[39] = 0;
        assert!(matches!(
            read_client_hello(&with_body(&no_compression)),
            Err(ClientHelloError::Malformed(_))
        ));
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic fuzz: mutate a real hello byte by byte.
        let wire = real_hello("fuzz.example.com", true);
        for i in 0..wire.len() {
            for value in [0u8, 1, 0x7f, 0xff] {
                let mut mutated = wire.clone();
                mutated[i] = value;
                let _ = read_client_hello(&mutated);
                let _ = read_client_hello(&mutated[..i]);
            }
        }
    }

    #[test]
    fn alert_record_bytes() {
        assert_eq!(
            fatal_alert_record(AlertDescription::DecodeError),
            [21, 3, 3, 0, 2, 2, 50]
        );
    }
}
