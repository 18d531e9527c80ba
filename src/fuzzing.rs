//! Entry points for the fuzz targets in `fuzz/` (built with the `fuzzing` feature only).
//!
//! Each function takes the fuzzer's bytes, runs one parser or state machine of ringress
//! on them the way a shard does, and panics when an invariant breaks: the parsers never
//! panic on anything, a message split at any point reads as the whole one does, and
//! what ringress re-serialises (chunk lines, normalised paths) reads back the same.

use std::borrow::Cow;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{Acceptor, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

use crate::http::{self, BodyFramer, BodyKind, PathNormalization};
use crate::tls::client_sealer::ClientSealer;
use crate::tls::{HelloScan, Records, read_client_hello};

/// The ClientHello reader: never panics, agrees with itself on every prefix, and
/// names the same server as rustls' `Acceptor` whenever both take the hello.
pub fn client_hello(data: &[u8]) {
    let whole = read_client_hello(data);
    if let Ok(HelloScan::Complete(info)) = &whole {
        // A prefix is incomplete or already wrong, never complete with another name.
        let cut = data.len() / 2;
        if let Ok(HelloScan::Complete(other)) = read_client_hello(&data[..cut]) {
            assert_eq!(&other, info, "a prefix of the hello read differently");
        }
        let mut acceptor = Acceptor::default();
        // rustls takes a bounded amount: a hello past it is not a comparison to make.
        if acceptor.read_tls(&mut &data[..]).is_err() {
            return;
        }
        if let Ok(Some(accepted)) = acceptor.accept() {
            let rustls_name = accepted
                .client_hello()
                .server_name()
                .map(str::to_ascii_lowercase);
            assert_eq!(rustls_name, info.server_name, "rustls reads another SNI");
        }
    }
}

/// The request head parser: a head parses the same from exactly its own bytes, and
/// every accessor a shard calls works on it.
pub fn request_head(data: &[u8]) {
    let Ok(Some(head)) = http::parse_request(data) else {
        return;
    };
    assert!(head.len() <= data.len());
    let again = http::parse_request(&data[..head.len()])
        .expect("the head's own bytes parse")
        .expect("the head's own bytes are a whole head");
    assert_eq!(again.as_bytes(), head.as_bytes());
    let _ = (head.method(), head.target(), head.host(), head.body());
    let _ = (
        head.keep_alive(),
        head.expects_continue(),
        head.target_authority(),
    );
    let _ = http::normalize_path(head.path(), PathNormalization::Base);
    for (name, value) in head.headers() {
        assert!(!name.is_empty());
        let _ = value.len();
    }
    let _ = head.forwarded_for().count();
}

/// The response head parser, for a GET or (first byte odd) a HEAD request.
pub fn response_head(data: &[u8]) {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let method = if first & 1 == 1 { "HEAD" } else { "GET" };
    let Ok(Some(head)) = http::parse_response(data, method) else {
        return;
    };
    assert!(head.len() <= data.len());
    let again = http::parse_response(&data[..head.len()], method)
        .expect("the head's own bytes parse")
        .expect("the head's own bytes are a whole head");
    assert_eq!(again.status(), head.status());
    assert_eq!(again.body(), head.body());
    let _ = (head.reason(), head.keep_alive(), head.is_informational());
    let _ = (head.dechunk_for(0), head.client_must_close(0));
    for (name, value) in head.headers() {
        assert!(!name.is_empty());
        let _ = value.len();
    }
}

/// The body framer: the first byte picks the framing (chunked, a length, until close),
/// the second where the bytes are split. Any split reads as the whole does; what a
/// chunked body is forwarded as (re-serialised chunk lines) frames the same payload.
pub fn body_framer(data: &[u8]) {
    let [kind, split, body @ ..] = data else {
        return;
    };
    let kind = match kind % 3 {
        0 => BodyKind::Chunked,
        1 => BodyKind::Length(u64::from(*split) * 7),
        _ => BodyKind::UntilClose,
    };
    let whole = frame(kind, &[body]);
    let cut = usize::from(*split).min(body.len());
    let (front, back) = body.split_at(cut);
    let pieces = frame(kind, &[front, back]);
    assert_eq!(whole, pieces, "a split changed how the body frames");
    let Ok(framed) = whole else {
        return;
    };
    if kind == BodyKind::Chunked && framed.done {
        let reread = frame(kind, &[&framed.forwarded]).expect("forwarded chunks frame");
        assert!(reread.done, "forwarded chunks end");
        assert_eq!(
            reread.payload, framed.payload,
            "forwarded chunks carry the payload"
        );
        assert_eq!(
            reread.forwarded, framed.forwarded,
            "canonical chunks pass as they are"
        );
    }
}

/// What a body framer made of some pieces.
#[derive(Debug, PartialEq, Eq)]
struct Framed {
    /// The bytes `forward` emitted.
    forwarded: Vec<u8>,
    /// The payload `payload` extracted (a second framer over the same pieces).
    payload: Vec<u8>,
    /// How many bytes of the input belonged to the body.
    taken: usize,
    done: bool,
}

fn frame(kind: BodyKind, pieces: &[&[u8]]) -> Result<Framed, http::HttpError> {
    let mut forwarder = BodyFramer::new(kind);
    let mut extractor = BodyFramer::new(kind);
    let mut framed = Framed {
        forwarded: Vec::new(),
        payload: Vec::new(),
        taken: 0,
        done: false,
    };
    for piece in pieces {
        let mut rest = *piece;
        // A framer may take part of a piece and then the rest on the next call.
        while !rest.is_empty() && !forwarder.is_done() {
            let n =
                forwarder.forward(rest, &mut |bytes| framed.forwarded.extend_from_slice(bytes))?;
            let m = extractor.payload(rest, &mut framed.payload)?;
            assert_eq!(n, m, "forward and payload took different lengths");
            assert!(n <= rest.len());
            if n == 0 {
                break;
            }
            framed.taken += n;
            rest = &rest[n..];
        }
    }
    framed.done = forwarder.is_done();
    assert_eq!(framed.done, extractor.is_done());
    Ok(framed)
}

/// Path normalisation of any path a request line can carry: every mode is
/// idempotent, and all but `NONE` leave no dot segment.
pub fn path(data: &[u8]) {
    let mut request = b"GET /".to_vec();
    request.extend_from_slice(data);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: fuzz.example\r\n\r\n");
    let Ok(Some(head)) = http::parse_request(&request) else {
        return;
    };
    let target = head.path();
    for mode in [
        PathNormalization::None,
        PathNormalization::Base,
        PathNormalization::MergeSlashes,
        PathNormalization::DecodeAndMergeSlashes,
    ] {
        let Ok(once) = http::normalize_path(target, mode) else {
            continue;
        };
        let twice = http::normalize_path(&once, mode).expect("a normalised path normalises");
        assert_eq!(twice, once, "{mode:?} is not idempotent");
        if mode != PathNormalization::None {
            let path = once.split('?').next().unwrap_or_default();
            for segment in path.split('/') {
                assert!(
                    segment != "." && segment != "..",
                    "{mode:?} left {segment:?}"
                );
            }
        }
        if let Cow::Owned(owned) = &once {
            assert_ne!(owned, target, "an unchanged path was copied");
        }
    }
}

/// The configuration loader: never panics, whatever the text.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::config::load_str(text, Path::new("/nonexistent/fuzz.yaml"));
}

/// ringress's TLS 1.3 record layer after a real handshake: the fuzzer's bytes describe
/// records the client sends — sealed with the client's key (any inner content type,
/// any payload) or raw bytes — and how the stream is cut into receives. Opening never
/// panics, and what it hands on is exactly the application data sealed before the
/// first error or close_notify.
pub fn records_open(data: &[u8]) {
    let (mut sealer, mut records) = established();
    let mut wire = Vec::new();
    let mut cuts = Vec::new();
    // The application data sealed before the first record of any other kind.
    let mut sealed_data = Vec::new();
    let mut only_data = true;
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        match op % 4 {
            0 => {
                if only_data {
                    sealed_data.extend_from_slice(payload);
                }
                wire.extend(sealer.record(23, payload));
            }
            1 => {
                only_data = false;
                let (inner, payload) = payload.split_first().unwrap_or((&21, &[]));
                wire.extend(sealer.record(*inner, payload));
            }
            2 => {
                only_data = false;
                wire.extend_from_slice(payload);
            }
            _ => cuts.push(wire.len()),
        }
    }
    cuts.push(wire.len());
    cuts.sort_unstable();
    let mut incoming = Vec::new();
    let mut opened = Vec::new();
    let mut fed = 0;
    for cut in cuts {
        incoming.extend_from_slice(&wire[fed..cut]);
        fed = cut;
        match records.open(&mut incoming, |plain| opened.extend_from_slice(plain)) {
            Ok(false) => {}
            Ok(true) | Err(_) => break,
        }
    }
    // Records are opened in order: everything before the first other record arrives.
    assert!(
        opened.starts_with(&sealed_data),
        "application data lost or changed"
    );
    if only_data {
        assert_eq!(opened, sealed_data, "application data came out changed");
        assert!(incoming.is_empty(), "whole records were left unopened");
    }
}

/// The server and client configurations every record-layer run shares.
fn configs() -> &'static (Arc<ServerConfig>, Arc<ClientConfig>) {
    static CONFIGS: OnceLock<(Arc<ServerConfig>, Arc<ClientConfig>)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let issued = rcgen::generate_simple_self_signed(vec!["fuzz.example".to_owned()])
            .expect("certificate");
        let cert = CertificateDer::from(issued.cert.der().to_vec());
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.signing_key.serialize_der()));
        let provider = Arc::new(crate::tls::credential::provider());
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server config");
        server.send_tls13_tickets = 0;
        server.enable_secret_extraction = true;
        let mut roots = RootCertStore::empty();
        roots.add(cert).expect("root");
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.enable_secret_extraction = true;
        (Arc::new(server), Arc::new(client))
    })
}

/// A TLS 1.3 handshake in memory, the server moved to ringress's record layer.
fn established() -> (ClientSealer, Records) {
    let (server_config, client_config) = configs();
    let name = ServerName::try_from("fuzz.example").expect("name");
    let mut client = ClientConnection::new(client_config.clone(), name).expect("client");
    let mut server = UnbufferedServerConnection::new(server_config.clone()).expect("server");
    let mut to_server = Vec::new();
    while client.is_handshaking() || server.is_handshaking() {
        client.write_tls(&mut to_server).expect("client writes");
        let to_client = server_turn(&mut server, &mut to_server);
        client.read_tls(&mut &to_client[..]).expect("client reads");
        client.process_new_packets().expect("client handshake");
    }
    client.write_tls(&mut to_server).expect("client writes");
    server_turn(&mut server, &mut to_server);
    let sealer = ClientSealer::new(client);
    (sealer, Records::new(server).expect("records"))
}

/// Runs the unbuffered server over `incoming` until it waits; returns what it sent.
fn server_turn(server: &mut UnbufferedServerConnection, incoming: &mut Vec<u8>) -> Vec<u8> {
    let mut sent = Vec::new();
    loop {
        let UnbufferedStatus { discard, state } = server.process_tls_records(incoming);
        let more = match state.expect("server handshake") {
            ConnectionState::EncodeTlsData(mut record) => {
                let mut buf = vec![0; 32 * 1024];
                let n = record.encode(&mut buf).expect("encode");
                sent.extend_from_slice(&buf[..n]);
                true
            }
            ConnectionState::TransmitTlsData(transmit) => {
                transmit.done();
                true
            }
            _ => false,
        };
        incoming.drain(..discard);
        if !more {
            return sent;
        }
    }
}
