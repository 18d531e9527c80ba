//! Per-request HTTP/1.1 head cost on a shard: parsing a typical `curl`/`wrk` request
//! head and writing the head sent upstream (hop-by-hop removal, `x-forwarded-*`,
//! `x-request-id`), then parsing an upstream response head and writing the client's.
//! Heads and output buffers are reused as a keep-alive connection reuses them, so the
//! numbers show the steady state: no allocation, just parsing and copying.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringress::config::HeaderOps;
use ringress::http::{
    BodyFramer, BodyKind, ForwardContext, RequestHead, ResponseContext, ResponseHead,
    parse_request_into, parse_response_into, write_client_response_head, write_upstream_request,
};

const CURL_REQUEST: &[u8] = b"GET /status/418 HTTP/1.1\r\nHost: httpbin.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";

const WRK_REQUEST: &[u8] = b"GET /delay/0?x=1 HTTP/1.1\r\nHost: httpbin.example.com:443\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\nCookie: session=0123456789abcdef; theme=dark\r\nConnection: keep-alive\r\nX-Request-Id: 7d3c1f0e-9a1b-4c2d-8e3f-405162738495\r\n\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Sun, 22 Nov 2026 00:00:00 GMT\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 312\r\nAccess-Control-Allow-Origin: *\r\nAccess-Control-Allow-Credentials: true\r\n\r\n";

fn request_heads(c: &mut Criterion) {
    let ops = HeaderOps::default();
    let ctx = ForwardContext {
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        scheme: "https",
        request_id: Some("5f1e6c2a-3b4d-4e5f-8a6b-7c8d9e0f1a2b"),
        path: None,
        authority: None,
        ops: &ops,
        client_cert: None,
        remove: &[],
        add: &[],
        upgrade: None,
    };
    let mut group = c.benchmark_group("request_head");
    for (name, input) in [("curl", CURL_REQUEST), ("wrk_browser", WRK_REQUEST)] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        let mut head = RequestHead::default();
        let mut out = Vec::with_capacity(1024);
        // What httparse alone costs, for comparison with `parse` (which adds the copy of
        // the head, framing checks and Host validation).
        group.bench_function(format!("httparse_only/{name}"), |b| {
            b.iter(|| {
                let mut headers = [httparse::EMPTY_HEADER; 100];
                let mut req = httparse::Request::new(&mut headers);
                black_box(req.parse(black_box(input)).is_ok())
            })
        });
        group.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| parse_request_into(black_box(input), &mut head))
        });
        let _ = parse_request_into(input, &mut head);
        group.bench_function(format!("write_upstream/{name}"), |b| {
            b.iter(|| {
                out.clear();
                write_upstream_request(black_box(&head), &ctx, &mut out);
                black_box(out.len())
            })
        });
        group.bench_function(format!("parse_and_write_upstream/{name}"), |b| {
            b.iter(|| {
                let _ = parse_request_into(black_box(input), &mut head);
                out.clear();
                write_upstream_request(&head, &ctx, &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn response_heads(c: &mut Criterion) {
    let ops = HeaderOps::default();
    let ctx = ResponseContext {
        upstream_service_time_ms: Some(3),
        ops: &ops,
        close: false,
        client_minor: 1,
        dechunked_length: None,
        set_cookie: None,
    };
    let mut group = c.benchmark_group("response_head");
    group.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    let mut head = ResponseHead::default();
    let mut out = Vec::with_capacity(1024);
    group.bench_function("parse", |b| {
        b.iter(|| parse_response_into(black_box(RESPONSE), "GET", &mut head))
    });
    group.bench_function("parse_and_write_client", |b| {
        b.iter(|| {
            let _ = parse_response_into(black_box(RESPONSE), "GET", &mut head);
            out.clear();
            write_client_response_head(&head, &ctx, &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

fn chunked_body(c: &mut Criterion) {
    // 64 chunks of 1 KiB with an extension, then a trailer.
    let mut body = Vec::new();
    for _ in 0..64 {
        body.extend_from_slice(b"400;ext=1\r\n");
        body.extend_from_slice(&[b'x'; 1024]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\nX-Checksum: abc\r\n\r\n");
    let mut group = c.benchmark_group("body_framer");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("chunked_64k", |b| {
        b.iter(|| {
            let mut framer = BodyFramer::new(BodyKind::Chunked);
            black_box(framer.advance(black_box(&body)))
        })
    });
    group.finish();
}

criterion_group!(benches, request_heads, response_heads, chunked_body);
criterion_main!(benches);
