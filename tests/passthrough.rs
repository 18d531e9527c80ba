//! TLS passthrough and TCP through the real `ringress` binary: upstreams that
//! terminate their own TLS (`tests/tools/l4_upstream.py tls`, each with its own
//! certificate) reached by curl through a `PASSTHROUGH` server, routed by SNI to two
//! upstreams (the certificate curl verifies and the SNI the upstream saw are the
//! upstream's own, so the bytes went through untouched); an unknown SNI, a client that
//! is not TLS, one that sends half a hello and one that sends nothing, each closed
//! with nothing sent; a `tcp:` route to an echo server with megabytes both ways and a
//! half-close passed on; weights between two upstreams that speak first; an upstream
//! that refuses; a silent relay closed after `--idle-timeout`; a relay that outlives
//! a reload moving its route; and what `check`, the access log and
//! `/stats/prometheus` say.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use common::*;

/// The port every test ServiceEntry of an L4 upstream declares.
const L4_PORT: u16 = 9000;

/// `tests/tools/l4_upstream.py ARGS` in a directory of its own (a server's port file
/// is named after its script).
fn l4_upstream(tag: &str, args: &[&str]) -> (PyServer, TempDir) {
    let dir = TempDir::new(tag);
    (PyServer::start(&dir, "l4_upstream.py", args, &[]), dir)
}

fn tls_upstream(pki: &pki::Pki, host: &str, name: &str) -> (PyServer, TempDir) {
    let cert = pki.cert(host).to_string_lossy().into_owned();
    let key = pki.key(host).to_string_lossy().into_owned();
    l4_upstream(name, &["tls", &cert, &key, name])
}

/// A STATIC ServiceEntry `service` whose port [`L4_PORT`] has `protocol` (TCP, TLS).
fn l4_service_entry(service: &str, protocol: &str, addr: SocketAddr) -> String {
    let mut y = document_head("ServiceEntry", service);
    y.push_str(&format!(
        "  hosts:
  - {service}
  ports:
  - number: {L4_PORT}
    name: {}
    protocol: {protocol}
  resolution: STATIC
  endpoints:
  - address: {}
    ports:
      {}: {}
",
        protocol.to_ascii_lowercase(),
        addr.ip(),
        protocol.to_ascii_lowercase(),
        addr.port()
    ));
    y
}

fn passthrough_server(port: u16, hosts: &[&str]) -> String {
    let mut y = format!(
        "  - port:
      number: {port}
      name: tls-{port}
      protocol: TLS
    bind: 127.0.0.1
    tls:
      mode: PASSTHROUGH
    hosts:
"
    );
    for host in hosts {
        y.push_str(&format!("    - {host:?}\n"));
    }
    y
}

fn tcp_server(port: u16) -> String {
    format!(
        "  - port:
      number: {port}
      name: tcp-{port}
      protocol: TCP
    bind: 127.0.0.1
    hosts:
    - \"*\"
"
    )
}

/// A VirtualService `name` for `hosts` on Gateway `gw` with `section` (`tls:` or
/// `tcp:` and its rules, indented by two spaces).
fn l4_virtual_service(name: &str, hosts: &[&str], section: &str) -> String {
    let mut y = document_head("VirtualService", name);
    y.push_str("  hosts:\n");
    for host in hosts {
        y.push_str(&format!("  - {host:?}\n"));
    }
    y.push_str("  gateways:\n  - gw\n");
    y.push_str(section);
    y
}

/// One destination line of a route: `service` on [`L4_PORT`] with `weight`.
fn destination(service: &str, weight: u32) -> String {
    format!(
        "    - destination:
        host: {service}
        port:
          number: {L4_PORT}
      weight: {weight}
"
    )
}

/// The passthrough site: [`HTTPBIN`] and [`BOOKINFO`] on one TLS port, each SNI routed
/// to its own TLS upstream.
struct Site {
    dir: TempDir,
    pki: pki::Pki,
    port: u16,
    gateway: Gateway,
    _upstreams: Vec<(PyServer, TempDir)>,
}

fn passthrough_site(tag: &str) -> Site {
    let dir = TempDir::new(tag);
    let pki = pki(&dir);
    let httpbin = tls_upstream(&pki, HTTPBIN, "httpbin-upstream");
    let bookinfo = tls_upstream(&pki, BOOKINFO, "bookinfo-upstream");
    let port = free_port();
    let tls = format!(
        "  tls:
  - match:
    - sniHosts:
      - {HTTPBIN}
    route:
{}  - match:
    - sniHosts:
      - {BOOKINFO}
      port: {port}
    route:
{}",
        destination("httpbin-tls", 100),
        destination("bookinfo-tls", 100)
    );
    let yaml = docs(&[
        gateway_doc("gw", &[passthrough_server(port, &[HTTPBIN, BOOKINFO])]),
        l4_virtual_service("vs", &[HTTPBIN, BOOKINFO], &tls),
        l4_service_entry("httpbin-tls", "TLS", httpbin.0.addr),
        l4_service_entry("bookinfo-tls", "TLS", bookinfo.0.addr),
    ]);
    let gateway = Gateway::start(&dir, &yaml, &[]);
    Site {
        dir,
        pki,
        port,
        gateway,
        _upstreams: vec![httpbin, bookinfo],
    }
}

/// curl, trusting the test CA, to `https://HOST:PORT` and each of `paths` (one
/// connection), `HOST` resolved to the gateway.
fn curl_host(pki: &pki::Pki, port: u16, host: &str, paths: &[&str]) -> Curl {
    let ca = pki.ca_chain.to_string_lossy().into_owned();
    let resolve = resolve(host, port);
    let urls: Vec<String> = paths
        .iter()
        .map(|p| format!("https://{host}:{port}{p}"))
        .collect();
    let mut args = vec!["--resolve", &resolve, "--cacert", &ca];
    args.extend(urls.iter().map(String::as_str));
    curl(&args)
}

/// The value of the sample of `name` whose labels contain `labels`, summed over shards.
fn metric(gateway: &Gateway, name: &str, labels: &str) -> u64 {
    let text = curl_admin(gateway.admin(), "/stats/prometheus", &[]).text();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn sni_picks_the_upstream_and_its_own_tls_reaches_the_client() {
    require_tools();
    let site = passthrough_site("pass-sni");
    let ca = site.pki.ca_chain.to_string_lossy().into_owned();
    for (host, upstream) in [
        (HTTPBIN, "httpbin-upstream"),
        (BOOKINFO, "bookinfo-upstream"),
    ] {
        // curl verifies the upstream's certificate for `host` with the CA: the
        // gateway has no certificate at all for this port.
        let r = curl_host(&site.pki, site.port, host, &["/anything"]);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), format!("{upstream} sni={host}\n"), "{r:?}");
        let s = s_client(site.port, host, &["-CAfile", &ca], b"");
        let subject = served_subject(&s.output).unwrap_or_default();
        assert!(subject.contains(host), "{subject}\n{}", s.output);
    }
    // One connection, many requests: the TLS session is the upstream's throughout.
    let r = curl_host(&site.pki, site.port, HTTPBIN, &["/", "/"]);
    assert_eq!(r.code, 0, "{r:?}");
    let mut gateway = site.gateway;
    let logged = wait_for(Duration::from_secs(5), || {
        let log = gateway.log_text();
        log.contains(&format!(" {HTTPBIN} vs.tls[0]"))
            && log.contains(&format!(" {BOOKINFO} vs.tls[1]"))
            && log.contains("outbound|9000||httpbin-tls")
    });
    assert!(logged, "access log:\n{}", gateway.log_text());
    assert!(
        metric(
            &gateway,
            "ringress_l4_connections_total",
            "outcome=\"relayed\""
        ) >= 5
    );
    assert!(metric(&gateway, "ringress_l4_received_bytes_total", "") > 0);
    // /config_dump describes the tls routes as the file has them.
    let dump = curl_admin(gateway.admin(), "/config_dump", &[]).text();
    let dump: serde_json::Value =
        serde_json::from_str(&dump).unwrap_or_else(|e| panic!("{e}: {dump}"));
    let vs = &dump["virtual_services"][0];
    assert_eq!(vs["tls"][0]["match"][0]["sni_hosts"][0], HTTPBIN, "{vs}");
    assert_eq!(vs["tls"][1]["match"][0]["port"], site.port, "{vs}");
    assert_eq!(
        vs["tls"][1]["route"][0]["destination"]["host"], "bookinfo-tls",
        "{vs}"
    );
    assert_eq!(
        dump["gateways"][0]["servers"][0]["port"]["protocol"], "TLS",
        "{dump}"
    );
    gateway.assert_running();
}

#[test]
fn unknown_sni_plain_text_and_silent_clients_are_closed() {
    require_tools();
    let site = passthrough_site("pass-closed");
    let ca = site.pki.ca_chain.to_string_lossy().into_owned();
    // A name no tls route claims: the connection is closed, nothing is sent.
    let host = "other.example.com";
    let r = curl_host(&site.pki, site.port, host, &["/"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert_eq!(r.status, 0, "{r:?}");
    // No SNI at all: no `*` route, closed.
    let s = s_client(site.port, "", &["-CAfile", &ca], b"");
    assert!(served_subject(&s.output).is_none(), "{}", s.output);
    // Not TLS: closed without an answer.
    let (bytes, closed) = raw_exchange(site.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(closed && bytes.is_empty(), "{bytes:?}");
    // Half a record header, then nothing: closed by the header timeout.
    let mut trickle = connect(site.port);
    trickle.write_all(&[22, 3, 1]).expect("writing");
    let (bytes, closed) = read_to_close(&mut trickle);
    assert!(closed && bytes.is_empty(), "{bytes:?} closed {closed}");
    // Nothing at all: closed by the header timeout too.
    let mut silent = connect(site.port);
    let (bytes, closed) = read_to_close(&mut silent);
    assert!(closed && bytes.is_empty(), "{bytes:?} closed {closed}");

    let mut gateway = site.gateway;
    let counted = wait_for(Duration::from_secs(5), || {
        metric(
            &gateway,
            "ringress_l4_connections_total",
            "outcome=\"no_route\"",
        ) >= 2
            && metric(
                &gateway,
                "ringress_l4_connections_total",
                "outcome=\"bad_client_hello\"",
            ) >= 1
            && metric(
                &gateway,
                "ringress_l4_connections_total",
                "outcome=\"hello_timeout\"",
            ) >= 2
    });
    assert!(
        counted,
        "{}",
        curl_admin(gateway.admin(), "/stats/prometheus", &[]).text()
    );
    let log = gateway.log_text();
    assert!(
        log.contains(" NR filter_chain_not_found ") && log.contains(&format!(" {host} ")),
        "access log:\n{log}"
    );
    // The gateway still serves the names it routes.
    let r = curl_host(&site.pki, site.port, HTTPBIN, &["/"]);
    assert_eq!(r.status, 200, "{r:?}");
    gateway.assert_running();
    drop(site.dir);
}

/// Sends `len` bytes on `stream` from one thread while reading the echo on this one,
/// then half-closes and reads to the end: what came back.
fn echo_through(mut stream: std::net::TcpStream, len: usize) -> Vec<u8> {
    let mut writer = stream.try_clone().expect("cloning the socket");
    let sender = std::thread::spawn(move || {
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            writer.write_all(&chunk[..n]).expect("sending");
            left -= n;
        }
        writer.shutdown(Shutdown::Write).expect("half-closing");
    });
    let mut received = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream.read_to_end(&mut received).expect("reading the echo");
    sender.join().expect("the sender");
    received
}

#[test]
fn tcp_route_relays_megabytes_both_ways_and_passes_the_half_close_on() {
    require_tools();
    let dir = TempDir::new("pass-tcp");
    let echo = PyServer::start(&dir, "l4_upstream.py", &["echo"], &[]);
    let port = free_port();
    let tcp = format!(
        "  tcp:
  - match:
    - port: {port}
    route:
{}",
        destination("echo", 100)
    );
    let yaml = docs(&[
        gateway_doc("gw", &[tcp_server(port)]),
        l4_virtual_service("tcp", &["*"], &tcp),
        l4_service_entry("echo", "TCP", echo.addr),
    ]);
    let mut gateway = Gateway::start(&dir, &yaml, &[]);
    const LEN: usize = 8 * 1024 * 1024;
    let received = echo_through(connect(port), LEN);
    // Every byte came back, then the upstream's answer to the half-close: it saw the
    // client's FIN after all of them, and could still send.
    let trailer = format!("EOF {LEN}\n");
    assert_eq!(received.len(), LEN + trailer.len());
    assert!(received.ends_with(trailer.as_bytes()));
    let expected: Vec<u8> = (0..LEN).map(|i| ((i % (64 * 1024)) % 251) as u8).collect();
    assert!(
        received[..LEN] == expected[..],
        "the echo differs from what was sent"
    );
    let logged = wait_for(Duration::from_secs(5), || {
        let log = gateway.log_text();
        log.contains(&format!(" {LEN} {} ", LEN + trailer.len()))
            && log.contains("outbound|9000||echo")
    });
    assert!(logged, "access log:\n{}", gateway.log_text());
    gateway.assert_running();
}

#[test]
fn tcp_weights_split_connections_and_server_first_protocols_work() {
    require_tools();
    let dir = TempDir::new("pass-weights");
    let (a, _a) = l4_upstream("alpha", &["banner", "alpha"]);
    let (b, _b) = l4_upstream("beta", &["banner", "beta"]);
    let port = free_port();
    let tcp = format!(
        "  tcp:
  - route:
{}{}",
        destination("alpha", 50),
        destination("beta", 50)
    );
    let yaml = docs(&[
        gateway_doc("gw", &[tcp_server(port)]),
        l4_virtual_service("tcp", &["*"], &tcp),
        l4_service_entry("alpha", "TCP", a.addr),
        l4_service_entry("beta", "TCP", b.addr),
    ]);
    let mut gateway = Gateway::start(&dir, &yaml, &[]);
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..40 {
        // The upstream speaks first: the gateway connected without waiting for the
        // client's bytes.
        let mut stream = connect(port);
        let mut line = [0u8; 6];
        let mut got = 0;
        while got < line.len() && !line[..got].contains(&b'\n') {
            match stream.read(&mut line[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        let name = String::from_utf8_lossy(&line[..got]).trim().to_owned();
        *seen.entry(name).or_insert(0) += 1;
    }
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["alpha", "beta"],
        "{seen:?}"
    );
    gateway.assert_running();
}

#[test]
fn an_upstream_that_refuses_closes_the_client_connection() {
    require_tools();
    let dir = TempDir::new("pass-refused");
    let port = free_port();
    let refused: SocketAddr = ([127, 0, 0, 1], closed_port()).into();
    let tcp = format!("  tcp:\n  - route:\n{}", destination("gone", 100));
    let yaml = docs(&[
        gateway_doc("gw", &[tcp_server(port)]),
        l4_virtual_service("tcp", &["*"], &tcp),
        l4_service_entry("gone", "TCP", refused),
    ]);
    let mut gateway = Gateway::start(&dir, &yaml, &[]);
    let (bytes, closed) = raw_exchange(port, b"hello");
    assert!(closed && bytes.is_empty(), "{bytes:?}");
    let counted = wait_for(Duration::from_secs(5), || {
        metric(
            &gateway,
            "ringress_l4_connections_total",
            "outcome=\"upstream_connect_failed\"",
        ) >= 1
    });
    assert!(counted);
    let logged = wait_for(Duration::from_secs(5), || {
        gateway.log_text().contains(" UF upstream_connect_failed ")
    });
    assert!(logged, "access log:\n{}", gateway.log_text());
    gateway.assert_running();
}

#[test]
fn check_prints_the_routes_and_mesh_modes_are_refused_with_the_reason() {
    let dir = TempDir::new("pass-check");
    let port = free_port();
    let tls = format!(
        "  tls:
  - match:
    - sniHosts:
      - \"*.example.com\"
    route:
{}",
        destination("wild", 100)
    );
    let upstream: SocketAddr = ([127, 0, 0, 1], 9443).into();
    let yaml = docs(&[
        gateway_doc("gw", &[passthrough_server(port, &["*.example.com"])]),
        l4_virtual_service("vs", &["*.example.com"], &tls),
        l4_service_entry("wild", "TLS", upstream),
    ]);
    let config = dir.write("gateway.yaml", &yaml);
    let (code, out, err) = check(&config);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("TLS passthrough"), "{out}");
    assert!(
        out.contains("SNI *.example.com -> VirtualService vs tls[0] -> wild:9000 (100%)"),
        "{out}"
    );

    let yaml = yaml.replace("mode: PASSTHROUGH", "mode: AUTO_PASSTHROUGH");
    let config = dir.write("gateway.yaml", &yaml);
    let (code, out, err) = check(&config);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("spec.servers[0].tls.mode") && err.contains("mesh"),
        "{err}"
    );
}

#[test]
fn a_silent_relay_is_closed_after_the_idle_timeout() {
    require_tools();
    let (echo, _echo_dir) = l4_upstream("idle-echo", &["echo"]);
    let dir = TempDir::new("pass-idle");
    let port = free_port();
    let tcp = format!("  tcp:\n  - route:\n{}", destination("echo", 100));
    let yaml = docs(&[
        gateway_doc("gw", &[tcp_server(port)]),
        l4_virtual_service("tcp", &["*"], &tcp),
        l4_service_entry("echo", "TCP", echo.addr),
    ]);
    let mut gateway = Gateway::start(&dir, &yaml, &["--idle-timeout", "1"]);
    let mut stream = connect(port);
    stream.write_all(b"ping").expect("writing");
    // The echo comes back, then neither side sends: the gateway closes (well before
    // the read timeout of the harness).
    let (bytes, closed) = read_to_close(&mut stream);
    assert!(closed, "still open after {:?}", READ_TIMEOUT);
    assert_eq!(bytes, b"ping");
    let logged = wait_for(Duration::from_secs(5), || {
        gateway.log_text().contains(" idle_timeout ")
    });
    assert!(logged, "access log:\n{}", gateway.log_text());
    gateway.assert_running();
}

#[test]
fn a_relay_outlives_a_reload_that_moves_its_route() {
    require_tools();
    let (old, _old_dir) = l4_upstream("reload-old", &["banner", "old"]);
    let (new, _new_dir) = l4_upstream("reload-new", &["banner", "new"]);
    let dir = TempDir::new("pass-reload");
    let port = free_port();
    let config = |to: SocketAddr| {
        let tcp = format!("  tcp:\n  - route:\n{}", destination("banner", 100));
        docs(&[
            gateway_doc("gw", &[tcp_server(port)]),
            l4_virtual_service("tcp", &["*"], &tcp),
            l4_service_entry("banner", "TCP", to),
        ])
    };
    let mut gateway = Gateway::start(&dir, &config(old.addr), &["--no-watch"]);
    let mut before = connect(port);
    let mut line = [0u8; 4];
    before
        .read_exact(&mut line)
        .expect("the old upstream's banner");
    assert_eq!(&line, b"old\n");
    // The route moves to another upstream; the open relay stays with its own.
    dir.write("gateway.yaml", config(new.addr));
    assert!(gateway.sighup_and_wait(), "{}", gateway.log_text());
    let mut after = connect(port);
    after
        .read_exact(&mut line)
        .expect("the new upstream's banner");
    assert_eq!(&line, b"new\n");
    before.write_all(b"still here").expect("writing");
    before.shutdown(Shutdown::Write).expect("half-closing");
    let (bytes, closed) = read_to_close(&mut before);
    assert!(closed);
    assert_eq!(String::from_utf8_lossy(&bytes), "still hereEOF 10\n");
    gateway.assert_running();
}
