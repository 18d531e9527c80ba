//! What TLS costs ringress per connection and per request, in memory (no sockets):
//!
//! - `sni/select`: choosing the Gateway server for a ClientHello's name among 50 exact
//!   and 10 wildcard hosts (every new connection pays it once).
//! - `handshake/full_tls13`: a complete TLS 1.3 handshake with an ECDSA P-256
//!   certificate through an intermediate: rustls' buffered `Acceptor`, SNI choice,
//!   `into_connection`, then the flights until both sides are done (the shard reads the
//!   SNI itself and drives rustls' unbuffered connection; the handshake's cryptography,
//!   which is what this measures, is the same). Both ends run here,
//!   so this is client plus server work (the client's chain verification included); the
//!   server's share is the floor of the "new TLS connection per request" workload of
//!   `perf/compare.sh`.
//! - `handshake/resumed_tls13`: the same with a session ticket from an earlier
//!   handshake (what a returning client costs).
//! - `record/seal_open_{1k,16k}`: one application-data record written by the server and
//!   read by the client, for a small response and a full record (keep-alive and bulk
//!   transfer costs).
//!
//! Certificates come from `ringress::demo::pki` in a temporary directory, so the numbers
//! are for the same kind of certificate `perf/compare.sh` uses.

use std::hint::black_box;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use ringress::config::{Credential, HostPattern, ServerTls, TlsMode};
use ringress::demo::pki;
use ringress::tls::{self, SniSelector};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::Acceptor;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

const HOST: &str = "bench.example.com";

struct Fixture {
    _dir: PathBuf,
    selector: SniSelector,
    client: Arc<ClientConfig>,
}

fn fixture() -> Fixture {
    let dir = std::env::temp_dir().join(format!("ringress-bench-tls-{}", std::process::id()));
    let pki = pki::generate(&dir, &[HOST]).expect("bench PKI");
    let settings = ServerTls {
        mode: TlsMode::Simple,
        credential: Credential::Files {
            cert: pki.cert(HOST),
            key: pki.key(HOST),
        },
        ca_certificates: None,
        ca_crl: None,
        min_protocol_version: None,
        max_protocol_version: None,
        cipher_suites: Vec::new(),
        subject_alt_names: Vec::new(),
    };
    let material = tls::load_credential(&settings.credential, None).expect("credential");
    let ticketer = tls::new_ticketer().expect("ticketer");
    let config = tls::server_config(&settings, &material, &ticketer).expect("server config");
    let mut servers: Vec<(Vec<HostPattern>, Arc<ServerConfig>)> = (0..50)
        .map(|i| {
            let host = HostPattern::Exact(format!("host{i}.example.net"));
            (vec![host], config.clone())
        })
        .collect();
    servers.extend((0..10).map(|i| {
        let host = HostPattern::Suffix(format!(".zone{i}.example.org"));
        (vec![host], config.clone())
    }));
    servers.push((vec![HostPattern::Exact(HOST.to_owned())], config));
    let selector = SniSelector::new(servers).expect("selector");

    let mut roots = RootCertStore::empty();
    let root = CertificateDer::from_pem_file(&pki.root_cert).expect("root");
    roots.add(root).expect("root in store");
    let client = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Fixture {
        _dir: dir,
        selector,
        client: Arc::new(client),
    }
}

/// Moves every pending byte from one side to the other.
fn transfer(from: &mut dyn FnMut(&mut Vec<u8>), to: &mut dyn FnMut(&[u8])) -> bool {
    let mut buf = Vec::new();
    from(&mut buf);
    if buf.is_empty() {
        return false;
    }
    to(&buf);
    true
}

/// A full handshake: Acceptor, SNI choice, then flights.
fn handshake(fixture: &Fixture, client: &mut ClientConnection) -> ServerConnection {
    let mut hello = Vec::new();
    client.write_tls(&mut hello).expect("client hello");
    let mut acceptor = Acceptor::default();
    acceptor
        .read_tls(&mut hello.as_slice())
        .expect("read hello");
    let accepted = acceptor.accept().expect("accept").expect("whole hello");
    let name = accepted.client_hello().server_name().map(str::to_owned);
    let (_, config) = fixture.selector.select(name.as_deref()).expect("server");
    let mut server = accepted
        .into_connection(config.clone())
        .expect("connection");
    loop {
        let moved_server = transfer(
            &mut |buf| {
                while server.wants_write() {
                    server.write_tls(buf).expect("server flight");
                }
            },
            &mut |bytes| {
                client.read_tls(&mut &bytes[..]).expect("client read");
                client.process_new_packets().expect("client process");
            },
        );
        let moved_client = transfer(
            &mut |buf| {
                while client.wants_write() {
                    client.write_tls(buf).expect("client flight");
                }
            },
            &mut |bytes| {
                let mut rest = bytes;
                while !rest.is_empty() {
                    server.read_tls(&mut rest).expect("server read");
                    server.process_new_packets().expect("server process");
                }
            },
        );
        if !moved_server && !moved_client {
            break;
        }
    }
    assert!(!server.is_handshaking() && !client.is_handshaking());
    server
}

fn connect(fixture: &Fixture) -> ClientConnection {
    let name = ServerName::try_from(HOST).expect("name");
    ClientConnection::new(fixture.client.clone(), name).expect("client")
}

fn benches(c: &mut Criterion) {
    let fixture = fixture();

    c.bench_function("sni/select", |b| {
        b.iter(|| {
            fixture
                .selector
                .select(black_box(Some(HOST)))
                .map(|(i, _)| i)
        })
    });

    c.bench_function("handshake/full_tls13", |b| {
        b.iter_batched(
            || {
                // A fresh client config: no stored ticket, so every handshake is full.
                let name = ServerName::try_from(HOST).expect("name");
                let config = Arc::new((*fixture.client).clone());
                ClientConnection::new(config, name).expect("client")
            },
            |mut client| handshake(&fixture, &mut client),
            criterion::BatchSize::SmallInput,
        )
    });

    // One shared client config keeps the server's tickets: every handshake resumes.
    // Each client takes a ticket when it is created, so set-up and handshake alternate
    // (PerIteration) to keep a fresh ticket in the client's store.
    let mut warm = connect(&fixture);
    drop(handshake(&fixture, &mut warm));
    let mut check = connect(&fixture);
    let resumed = handshake(&fixture, &mut check);
    assert_eq!(
        resumed.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed),
        "the resumption bench must resume"
    );
    c.bench_function("handshake/resumed_tls13", |b| {
        b.iter_batched(
            || connect(&fixture),
            |mut client| handshake(&fixture, &mut client),
            criterion::BatchSize::PerIteration,
        )
    });

    for (label, size) in [
        ("record/seal_open_1k", 1024),
        ("record/seal_open_16k", 16 * 1024),
    ] {
        let mut client = connect(&fixture);
        let mut server = handshake(&fixture, &mut client);
        let payload = vec![0x5a; size];
        let mut wire = Vec::with_capacity(size + 64);
        let mut plain = vec![0; size];
        c.bench_function(label, |b| {
            b.iter(|| {
                server.writer().write_all(&payload).expect("write");
                wire.clear();
                while server.wants_write() {
                    server.write_tls(&mut wire).expect("seal");
                }
                let mut rest = wire.as_slice();
                while !rest.is_empty() {
                    client.read_tls(&mut rest).expect("read");
                    client.process_new_packets().expect("open");
                }
                client.reader().read_exact(&mut plain).expect("plaintext");
                black_box(&plain);
            })
        });
    }
}

criterion_group!(tls_benches, benches);
criterion_main!(tls_benches);
