//! Peers that do not keep pace: upstreams that answer before reading the request body
//! (full-duplex forwarding relays the answer at once), clients and upstreams that
//! trickle, stall or never read (every wait is bounded: the whole handshake, each
//! whole request head, each send without progress), and the caps on connections.

mod common;

use std::io::{Read, Write};
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
