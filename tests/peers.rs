//! Peers that do not keep pace: upstreams that answer before reading the request body
//! (full-duplex forwarding relays the answer at once), clients and upstreams that
//! trickle, stall or never read (every wait is bounded: the whole handshake, each
//! whole request head, each send without progress), and the caps on connections.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// An upstream that reads only the request head, answers with `reply` at once and,
/// before closing, keeps the connection open for `linger` without reading the body.
fn answers_before_reading(reply: &'static [u8], linger: Duration) -> Upstream {
    Upstream::spawn(move |mut stream, seen| {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        seen.record_head(String::from_utf8_lossy(&head).into_owned());
        let _ = stream.write_all(reply);
        std::thread::sleep(linger);
    })
}

/// A POST whose upstream answers before reading its body (gunicorn's httpbin does for
/// `/status/201`, any server does for a 401 or a 413) gets that answer, whatever the
/// body's size or framing: never a 502, never nothing. The client connection closes
/// after it; the gateway serves on.
#[test]
fn an_upstream_that_answers_before_reading_the_body_is_relayed() {
    require("curl");
    let dir = TempDir::new("peers-early");
    let pki = pki(&dir);
    let upstream = answers_before_reading(
        b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: text/plain\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large",
        Duration::from_millis(500),
    );
    let (port, https_port) = (free_port(), free_port());
    let config = backend_config(
        &http_and_https_servers(&pki, port, https_port),
        &[HTTPBIN],
        &[upstream.addr],
    );
    let mut gw = Gateway::start(&dir, &config, &[]);
    let small = dir.write("small.bin", vec![b'x'; 1024]);
    let large = dir.write("large.bin", vec![b'y'; 8 << 20]);
    for file in [&small, &large] {
        let data = format!("@{}", file.display());
        for framing in [&[][..], &["-H", "Transfer-Encoding: chunked"][..]] {
            let mut args = vec!["--data-binary", data.as_str(), "-H", "Expect:"];
            args.extend_from_slice(framing);
            for out in [
                curl_http(HTTPBIN, port, "/upload", &args),
                curl_https(&pki, https_port, "/upload", &args),
            ] {
                assert_eq!(out.status, 413, "{framing:?} {}: {out:?}", file.display());
                assert_eq!(out.text(), "too large", "{out:?}");
            }
        }
    }
    // With Expect: 100-continue the client has sent nothing yet: the answer comes
    // before any 100 Continue.
    let data = format!("@{}", small.display());
    let out = curl_http(
        HTTPBIN,
        port,
        "/upload",
        &["--data-binary", &data, "-H", "Expect: 100-continue"],
    );
    assert_eq!(out.status, 413, "{out:?}");
    assert_http_ok_after(&mut gw, port);
}

/// The gateway still answers a plain GET (the early upstream answers it too).
fn assert_http_ok_after(gw: &mut Gateway, port: u16) {
    let out = curl_http(HTTPBIN, port, "/x", &[]);
    assert_eq!(out.status, 413, "{out:?}");
    gw.assert_running();
}

/// A response head arriving while the body is still being sent goes to the client at
/// once, before the client has sent the rest: read with a raw connection that sends
/// only part of its body and then waits for the answer.
#[test]
fn an_early_answer_reaches_a_client_still_sending() {
    let dir = TempDir::new("peers-early-raw");
    let upstream = answers_before_reading(
        b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        Duration::from_secs(2),
    );
    let (port, mut gw) = start_http(&dir, upstream.addr, &[]);
    let mut stream = connect(port);
    let head = format!("POST /p HTTP/1.1\r\nHost: {HTTPBIN}\r\nContent-Length: 100000\r\n\r\n");
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(&[b'z'; 1000]).expect("first body bytes");
    let (status, _, _) = read_response(&mut stream).expect("a response before the body is done");
    assert_eq!(status, 401);
    // The rest of the body is read and dropped, then the connection closes.
    let _ = stream.write_all(&[b'z'; 99_000]);
    let (_, closed) = read_to_close(&mut stream);
    assert!(closed);
    gw.assert_running();
}

/// Sends `bytes` one at a time every `gap` from another thread, until they are all
/// sent or the gateway closed; how many went.
fn trickle(stream: &TcpStream, bytes: Vec<u8>, gap: Duration) -> std::thread::JoinHandle<usize> {
    let mut stream = stream.try_clone().expect("cloning the stream");
    std::thread::spawn(move || {
        for (i, byte) in bytes.iter().enumerate() {
            if stream.write_all(&[*byte]).is_err() {
                return i;
            }
            std::thread::sleep(gap);
        }
        bytes.len()
    })
}

/// A head trickled a byte at a time, each within the header timeout (2 s here) of the
/// last, is closed when the whole head is not there 2 s after its first byte; so is
/// a TLS handshake trickled the same way. Neither resets the clock with every byte.
#[test]
fn a_trickled_head_or_handshake_is_closed_at_its_deadline() {
    let dir = TempDir::new("peers-trickle");
    let upstream = Upstream::named("a");
    let (pki, port, https_port, mut gw) = start_http_and_https(&dir, upstream.addr);
    let head = format!(
        "GET /x HTTP/1.1\r\nHost: {HTTPBIN}\r\nUser-Agent: {}\r\n\r\n",
        "t".repeat(100)
    );
    let mut hello = Vec::new();
    {
        // A real ClientHello from rustls.
        let config = client_config(&pki.ca_chain, None);
        let name = rustls::pki_types::ServerName::try_from(HTTPBIN).expect("name");
        let mut client = rustls::ClientConnection::new(config, name).expect("client");
        client.write_tls(&mut hello).expect("hello");
    }
    for (p, bytes, what) in [
        (port, head.into_bytes(), "head"),
        (https_port, hello, "ClientHello"),
    ] {
        let mut stream = connect(p);
        let total = bytes.len();
        let sender = trickle(&stream, bytes, Duration::from_millis(250));
        let (_, closed) = read_to_close(&mut stream);
        assert!(closed, "the trickled {what} was never closed");
        let sent = sender.join().expect("trickle thread");
        assert!(
            sent < total,
            "the whole {what} ({total} bytes) got through before the close"
        );
    }
    gw.assert_running();
}

/// A request body with a pause longer than the idle timeout (1 s here) gets 408, and
/// the upstream connection it held is let go.
#[test]
fn a_body_that_stops_coming_gets_408() {
    let dir = TempDir::new("peers-slow-body");
    let upstream = Upstream::named("a");
    let (port, mut gw) = start_http(&dir, upstream.addr, &["--idle-timeout", "1"]);
    let mut stream = connect(port);
    let head = format!("POST /p HTTP/1.1\r\nHost: {HTTPBIN}\r\nContent-Length: 1000\r\n\r\n");
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(&[b'b'; 10]).expect("some of the body");
    let (bytes, closed) = read_to_close(&mut stream);
    assert_first_status(&bytes, 408, "slow body");
    assert!(closed);
    // The upstream saw the head, then its connection closed.
    assert!(wait_for(READ_TIMEOUT, || upstream.seen.requests() == 0
        && upstream
            .seen
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1));
    gw.assert_running();
}

/// The active-connection gauges of both shards.
fn active_connections(gw: &Gateway) -> u64 {
    let stats = curl_admin(gw.admin(), "/stats/prometheus", &[]).text();
    stats
        .lines()
        .filter(|l| l.starts_with("ringress_active_connections{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A client that asks for a large response and never reads it is cut off once the
/// gateway could send nothing for the idle timeout (1 s here), and its upstream
/// connection is let go: nothing waits on it forever.
#[test]
fn a_client_that_never_reads_is_cut_off() {
    let dir = TempDir::new("peers-no-read");
    let upstream = Upstream::source(64 << 20);
    let (port, mut gw) = start_http(&dir, upstream.addr, &["--idle-timeout", "1"]);
    gw.wait_admin_ready();
    let mut stream = connect(port);
    let request = format!("GET /big HTTP/1.1\r\nHost: {HTTPBIN}\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("request");
    assert!(
        wait_for(Duration::from_secs(10), || active_connections(&gw) == 0),
        "the gateway still holds the connection of a client that reads nothing"
    );
    // What the client reads now ends short of 64 MiB with a reset or an end.
    let (bytes, closed) = read_to_close(&mut stream);
    assert!(closed && bytes.len() < 64 << 20);
    gw.assert_running();
}

/// An upstream that reads no request body and answers nothing: the gateway's send to
/// it makes no progress for the idle timeout, and the client gets 504.
#[test]
fn an_upstream_that_never_reads_the_body_gets_504() {
    require("curl");
    let dir = TempDir::new("peers-upstream-no-read");
    let upstream = Upstream::spawn(|stream, seen| {
        seen.record_head("accepted".into());
        std::thread::sleep(Duration::from_secs(8));
        drop(stream);
    });
    let (port, mut gw) = start_http(&dir, upstream.addr, &["--idle-timeout", "1"]);
    let body = dir.write("body.bin", vec![b'q'; 64 << 20]);
    let data = format!("@{}", body.display());
    let out = curl_http(
        HTTPBIN,
        port,
        "/p",
        &["--data-binary", &data, "-H", "Expect:"],
    );
    assert_eq!(out.status, 504, "{out:?}");
    gw.assert_running();
}

/// Over `--max-connections` (per shard) connections are reset at accept, counted by
/// reason, and the gateway serves again once they are gone; the same per client
/// address with `--max-connections-per-client`.
#[test]
fn connections_over_a_cap_are_reset_and_counted() {
    let dir = TempDir::new("peers-caps");
    let upstream = Upstream::named("a");
    for (flag, reason) in [
        ("--max-connections", "shard_limit"),
        ("--max-connections-per-client", "client_limit"),
    ] {
        let (port, mut gw) = start_http(&dir, upstream.addr, &[flag, "2"]);
        gw.wait_admin_ready();
        // Two shards, two each: of ten idle connections six or more are refused.
        let mut open: Vec<TcpStream> = (0..10).map(|_| connect(port)).collect();
        let refused = |gw: &Gateway| {
            let stats = curl_admin(gw.admin(), "/stats/prometheus", &[]).text();
            stats
                .lines()
                .filter(|l| {
                    l.starts_with("ringress_connections_refused_total{") && l.contains(reason)
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum::<u64>()
        };
        assert!(
            wait_for(READ_TIMEOUT, || refused(&gw) >= 6),
            "{flag}: refused {}",
            refused(&gw)
        );
        let resets = open
            .iter_mut()
            .filter(|s: &&mut TcpStream| {
                let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
                match (&**s).read(&mut [0u8; 1]) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                }
            })
            .count();
        assert!(resets >= 6, "{flag}: {resets} connections were closed");
        assert!(
            gw.log_text()
                .contains("connection refused: over the connection cap")
        );
        drop(open);
        assert!(wait_for(READ_TIMEOUT, || active_connections(&gw) == 0));
        assert_http_ok(port, HTTPBIN, "/ok");
        gw.assert_running();
    }
}

/// slowhttptest's statistics (`-g`): per second, the connections closed, pending and
/// connected, and whether the probe was served (non-zero).
struct SlowStats {
    rows: Vec<[u64; 5]>,
    output: String,
}

/// Runs slowhttptest against `url` with `args` (a mode and its settings) for at most
/// `seconds`, with statistics.
fn slowhttptest(dir: &std::path::Path, url: &str, args: &[&str], seconds: u32) -> SlowStats {
    require("slowhttptest");
    let prefix = dir.join(format!("slow{}", args[0]));
    let mut command = std::process::Command::new("slowhttptest");
    command
        .args(args)
        .args(["-l", &seconds.to_string(), "-u", url, "-p", "3", "-g", "-o"])
        .arg(&prefix)
        .current_dir(dir);
    let out = run_with_timeout(command, b"", Duration::from_secs(u64::from(seconds) + 20));
    let csv = std::fs::read_to_string(prefix.with_extension("csv")).unwrap_or_default();
    let rows = csv
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<u64> = line
                .split(',')
                .filter_map(|f| f.trim().parse().ok())
                .collect();
            <[u64; 5]>::try_from(fields).ok()
        })
        .collect();
    SlowStats {
        rows,
        output: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// slowhttptest's slowloris (`-H`: heads that never end, a line a second) and slow
/// read (`-X`: a large response read a few bytes every 3 s, through a tiny window):
/// the gateway closes every such connection long before the test's end, and its
/// probe request is served all along. slowloris clients notice at their next line;
/// slow readers only once they have read what was already in their socket, so for
/// them the gateway's own count of open connections tells.
#[test]
fn slowloris_and_slow_readers_from_slowhttptest_are_cut_off() {
    let dir = TempDir::new("peers-slowhttptest");
    let upstream = httpbin();
    let port = free_port();
    let config = backend_config(&[http_server(port, &["*"])], &["*"], &[upstream.addr()]);
    let mut gw = Gateway::start(&dir, &config, &["--idle-timeout", "2"]);
    gw.wait_admin_ready();

    let url = format!("http://127.0.0.1:{port}/get");
    let stats = slowhttptest(
        dir.path(),
        &url,
        &["-H", "-c", "200", "-r", "200", "-i", "1"],
        15,
    );
    assert!(!stats.rows.is_empty(), "no statistics\n{}", stats.output);
    assert!(
        stats.rows.iter().all(|r| r[4] > 0),
        "the probe was not served at some point: {:?}\n{}",
        stats.rows,
        stats.output
    );
    assert!(
        stats.output.contains("No open connections left"),
        "slowloris connections stayed open to the end: {:?}\n{}",
        stats.rows,
        stats.output
    );

    let url = format!("http://127.0.0.1:{port}/bytes/50000000");
    let reader = std::thread::spawn({
        let dir = dir.path().to_path_buf();
        move || {
            let args = [
                "-X", "-c", "50", "-r", "50", "-w", "32", "-y", "64", "-n", "3", "-z", "16", "-k",
                "1",
            ];
            slowhttptest(&dir, &url, &args, 10)
        }
    });
    // The slow readers connect, then the gateway lets each go once it could send
    // nothing for the idle timeout: while slowhttptest still runs, none is left.
    let held = wait_for(Duration::from_secs(5), || active_connections(&gw) >= 20);
    let let_go = wait_for(Duration::from_secs(10), || active_connections(&gw) <= 1);
    let stats = reader.join().expect("slowhttptest thread");
    assert!(held, "the slow readers never connected:\n{}", stats.output);
    assert!(
        let_go,
        "slow readers were still held: {} open",
        active_connections(&gw)
    );
    assert!(
        stats.rows.iter().all(|r| r[4] > 0),
        "the probe was not served at some point: {:?}\n{}",
        stats.rows,
        stats.output
    );
    gw.assert_running();
}
