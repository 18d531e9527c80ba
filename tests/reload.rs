//! Reloads end to end against the real `ringress` binary: certificate rotation by
//! SIGHUP and by the watcher (files replaced, a kubelet `..data` symlink swap), a
//! certificate that arrives before its key, broken reloads that leave traffic alone,
//! routes and listeners that follow a reload, reloads under `wrk` load, and the SIGTERM
//! drain.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A copy of `path` under `dir` (as `name`), so a test keeps trusting a root that a
/// rotation replaces.
fn keep_copy(dir: &TempDir, path: &Path, name: &str) -> PathBuf {
    dir.write(name, std::fs::read(path).expect("reading a file to keep"))
}

/// Waits until a handshake trusting only `ca` succeeds on `port`; panics with the log
/// when it does not within [`RELOAD_TIMEOUT`].
#[track_caller]
fn wait_served_by(gw: &mut Gateway, port: u16, ca: &Path, what: &str) {
    let served = wait_for(RELOAD_TIMEOUT, || handshake_ok(port, HTTPBIN, ca));
    if !served {
        gw.assert_running();
        panic!(
            "{what}: not served within {RELOAD_TIMEOUT:?}; log:\n{}",
            gw.log_text()
        );
    }
}

/// `GET path` for [`HTTPBIN`] on a fresh verified connection trusting `ca`: the status.
fn fresh_status(port: u16, ca: &Path, path: &str) -> u16 {
    let mut stream = tls_connect(port, HTTPBIN, client_config(ca, None)).expect("TLS handshake");
    request_on(&mut stream, HTTPBIN, path).0
}

#[test]
fn sighup_rotates_certificates_and_keeps_open_connections() {
    let dir = TempDir::new("rl-sighup");
    let upstream = httpbin();
    let (pki, port) = (pki(&dir), free_port());
    let mut gw = Gateway::start_ready(
        &dir,
        &https_config(&pki, port, upstream.addr()),
        &["--no-watch"],
    );
    let old_root = keep_copy(&dir, &pki.root_cert, "old-root.crt");
    let mut open = tls_connect(port, HTTPBIN, client_config(&old_root, None)).expect("handshake");
    assert_eq!(request_on(&mut open, HTTPBIN, "/status/200").0, 200);

    // New files, no signal: with --no-watch nothing changes.
    let rotated = pki::generate(&pki.dir, &[HTTPBIN, BOOKINFO]).expect("rotating");
    thread::sleep(Duration::from_millis(800));
    assert!(
        handshake_ok(port, HTTPBIN, &old_root) && !handshake_ok(port, HTTPBIN, &rotated.root_cert),
        "with --no-watch the old certificate is served until SIGHUP"
    );
    assert_eq!(gw.log_count(RELOADED), 0, "{}", gw.log_text());

    assert!(gw.sighup_and_wait(), "{}", gw.log_text());
    assert_eq!(fresh_status(port, &rotated.root_cert, "/status/418"), 418);
    assert!(
        !handshake_ok(port, HTTPBIN, &old_root),
        "a client trusting only the old root must now fail"
    );
    // The connection opened before the rotation keeps working.
    assert_eq!(request_on(&mut open, HTTPBIN, "/status/200").0, 200);
    assert_eq!(request_on(&mut open, HTTPBIN, "/status/418").0, 418);
    gw.assert_running();
}

#[test]
fn the_watcher_reloads_replaced_certificate_files() {
    let dir = TempDir::new("rl-watch-files");
    let upstream = httpbin();
    let (pki, port) = (pki(&dir), free_port());
    let mut gw = Gateway::start_ready(&dir, &https_config(&pki, port, upstream.addr()), &[]);
    gw.wait_watching();
    let old_root = keep_copy(&dir, &pki.root_cert, "old-root.crt");
    assert!(handshake_ok(port, HTTPBIN, &old_root));

    // generate() renames new files over the old ones; no signal is sent.
    let rotated = pki::generate(&pki.dir, &[HTTPBIN, BOOKINFO]).expect("rotating");
    wait_served_by(&mut gw, port, &rotated.root_cert, "the rotated certificate");
    // Each shard installs the new snapshot on its own turn: a handshake on the other
    // shard may still see the old certificate for a moment.
    assert!(
        wait_for(RELOAD_TIMEOUT, || (0..8)
            .all(|_| !handshake_ok(port, HTTPBIN, &old_root))),
        "the old certificate is still served"
    );
    assert_eq!(fresh_status(port, &rotated.root_cert, "/status/418"), 418);
}

/// A configuration that names certificate files not there yet fails to reload; the
/// files it named are watched from then on, so writing them reloads it.
#[test]
fn fixing_the_files_a_failed_reload_named_reloads() {
    let dir = TempDir::new("rl-watch-failed");
    let upstream = httpbin();
    let (pki, port) = (pki(&dir), free_port());
    let config = dir.join("gateway.yaml");
    let mut gw = Gateway::start_ready(&dir, &https_config(&pki, port, upstream.addr()), &[]);
    gw.wait_watching();
    let rotated_dir = TempDir::new("rl-watch-failed-pki");
    let rotated = pki::generate(rotated_dir.path(), &[HTTPBIN]).expect("a second PKI");
    let (cert, key) = (dir.join("new/httpbin.crt"), dir.join("new/httpbin.key"));
    let servers = [https_server(
        port,
        "https",
        &[HTTPBIN],
        &simple_tls(&cert, &key),
    )];
    let pointing = backend_config(&servers, &[HTTPBIN], &[upstream.addr()]);
    std::fs::write(&config, pointing).expect("rewriting the configuration");
    gw.wait_log_count(RELOAD_FAILED, 1);
    assert!(
        gw.log_text().contains("new/httpbin.crt"),
        "{}",
        gw.log_text()
    );
    // The old certificate keeps serving; then the files appear.
    assert!(handshake_ok(port, HTTPBIN, &pki.root_cert));
    std::fs::create_dir_all(dir.join("new")).expect("new dir");
    std::fs::copy(rotated.key(HTTPBIN), &key).expect("key");
    std::fs::copy(rotated.cert(HTTPBIN), &cert).expect("cert");
    wait_served_by(
        &mut gw,
        port,
        &rotated.root_cert,
        "the certificate the failed configuration named",
    );
}

/// Writes a kubelet-style secret `DIR/NAME`: the files in a timestamped directory
/// `..<stamp>`, `..data -> ..<stamp>`, and `tls.crt -> ..data/tls.crt` (same for the
/// key). When the secret exists, the new directory replaces the old one through an
/// atomic rename of a `..data_tmp` symlink over `..data`, as kubelet does.
fn kubelet_secret(dir: &Path, stamp: &str, cert: &Path, key: &Path) {
    use std::os::unix::fs::symlink;
    std::fs::create_dir_all(dir).expect("secret dir");
    let data = format!("..{stamp}");
    let data_dir = dir.join(&data);
    std::fs::create_dir_all(&data_dir).expect("timestamped dir");
    std::fs::copy(cert, data_dir.join("tls.crt")).expect("tls.crt");
    std::fs::copy(key, data_dir.join("tls.key")).expect("tls.key");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&data, &tmp).expect("..data_tmp symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swapping ..data");
    for name in ["tls.crt", "tls.key"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link).expect("file symlink");
        }
    }
}

#[test]
fn the_watcher_follows_a_kubelet_data_swap_in_the_secrets_dir() {
    let dir = TempDir::new("rl-kubelet");
    let upstream = httpbin();
    let (pki, port) = (pki(&dir), free_port());
    let old_root = keep_copy(&dir, &pki.root_cert, "old-root.crt");
    let secrets = dir.join("secrets");
    let secret = secrets.join("httpbin-credential");
    kubelet_secret(
        &secret,
        "2026_01_01_00_00_00.1",
        &pki.cert(HTTPBIN),
        &pki.key(HTTPBIN),
    );
    let config = backend_config(
        &[https_server(
            port,
            "https",
            &[HTTPBIN],
            "      mode: SIMPLE\n      credentialName: httpbin-credential\n",
        )],
        &[HTTPBIN],
        &[upstream.addr()],
    );
    let secrets_arg = secrets.to_string_lossy().into_owned();
    let mut gw = Gateway::start_ready(&dir, &config, &["--secrets-dir", &secrets_arg]);
    gw.wait_watching();
    assert_eq!(fresh_status(port, &old_root, "/status/418"), 418);

    // A new PKI elsewhere; kubelet swaps ..data to a directory holding its files.
    let rotated = pki::generate(&dir.join("pki2"), &[HTTPBIN]).expect("a second PKI");
    kubelet_secret(
        &secret,
        "2026_01_01_00_01_00.2",
        &rotated.cert(HTTPBIN),
        &rotated.key(HTTPBIN),
    );
    wait_served_by(
        &mut gw,
        port,
        &rotated.root_cert,
        "the swapped-in credential",
    );
    assert!(!handshake_ok(port, HTTPBIN, &old_root));
    assert_eq!(fresh_status(port, &rotated.root_cert, "/status/418"), 418);
}

#[test]
fn a_certificate_without_its_key_is_never_served_mismatched() {
    let dir = TempDir::new("rl-cert-first");
    let upstream = httpbin();
    let (pki, port) = (pki(&dir), free_port());
    let mut gw = Gateway::start_ready(&dir, &https_config(&pki, port, upstream.addr()), &[]);
    gw.wait_watching();
    let next = pki::generate(&dir.join("next"), &[HTTPBIN]).expect("the next PKI");

    // Only the certificate is replaced: the reload fails, the old pair keeps serving.
    let failed = gw.log_count(RELOAD_FAILED);
    replace_file(&next.cert(HTTPBIN), &pki.cert(HTTPBIN));
    gw.wait_log_count(RELOAD_FAILED, failed + 1);
    for _ in 0..5 {
        assert_eq!(
            fresh_status(port, &pki.root_cert, "/status/200"),
            200,
            "the old pair must keep serving while the key is missing"
        );
        assert!(!handshake_ok(port, HTTPBIN, &next.root_cert));
    }
    // The key arrives: the new pair is served.
    replace_file(&next.key(HTTPBIN), &pki.key(HTTPBIN));
    wait_served_by(
        &mut gw,
        port,
        &next.root_cert,
        "the new pair once its key arrived",
    );
    assert_eq!(fresh_status(port, &next.root_cert, "/status/418"), 418);
}

#[test]
fn broken_reloads_leave_traffic_untouched_and_are_logged_once() {
    let dir = TempDir::new("rl-broken");
    let upstream = httpbin();
    let (pki, port) = (pki(&dir), free_port());
    let good = https_config(&pki, port, upstream.addr());
    let mut gw = Gateway::start_ready(&dir, &good, &["--no-watch"]);
    let mut open = tls_connect(port, HTTPBIN, client_config(&pki.root_cert, None)).expect("TLS");
    let missing = dir.join("no-such.crt");
    let broken = [
        (
            "malformed YAML",
            format!("{good}\n  - this: [is not: closed\n"),
        ),
        (
            "a missing certificate file",
            good.replace(&yaml_path(&pki.cert(HTTPBIN)), &yaml_path(&missing)),
        ),
        (
            "a key that does not match",
            good.replace(
                &yaml_path(&pki.key(HTTPBIN)),
                &yaml_path(&pki.key(BOOKINFO)),
            ),
        ),
    ];
    for (i, (what, yaml)) in broken.iter().enumerate() {
        assert_ne!(yaml, &good, "{what}: the config must change");
        dir.write("gateway.yaml", yaml);
        assert!(!gw.sighup_and_wait(), "{what}: the reload must fail");
        assert_eq!(
            gw.log_count(RELOAD_FAILED),
            i + 1,
            "{what}: logged exactly once; log:\n{}",
            gw.log_text()
        );
        assert_eq!(
            request_on(&mut open, HTTPBIN, "/status/418").0,
            418,
            "{what}"
        );
        assert_eq!(
            fresh_status(port, &pki.root_cert, "/status/200"),
            200,
            "{what}"
        );
    }
    let log = gw.log_text();
    assert!(
        log.contains("no-such.crt"),
        "the missing file is named:\n{log}"
    );

    // With the watcher on, one broken write is one failed reload, not one per event.
    drop(gw);
    let dir = TempDir::new("rl-broken-watch");
    let (pki, port) = (common::pki(&dir), free_port());
    let good = https_config(&pki, port, upstream.addr());
    let mut gw = Gateway::start_ready(&dir, &good, &[]);
    gw.wait_watching();
    dir.write(
        "gateway.yaml",
        format!("{good}\n  - this: [is not: closed\n"),
    );
    gw.wait_log_count(RELOAD_FAILED, 1);
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        gw.log_count(RELOAD_FAILED),
        1,
        "one broken write must be logged once; log:\n{}",
        gw.log_text()
    );
    assert_eq!(fresh_status(port, &pki.root_cert, "/status/418"), 418);
    // Fixing the file reloads again.
    dir.write("gateway.yaml", &good);
    gw.wait_log_count(RELOADED, 1);
    assert_eq!(fresh_status(port, &pki.root_cert, "/status/418"), 418);
}

#[test]
fn a_keep_alive_client_meets_new_routes_at_its_next_request() {
    let dir = TempDir::new("rl-routes");
    let (a, b) = (Upstream::named("a"), Upstream::named("b"));
    let (pki, port) = (pki(&dir), free_port());
    let config = |to: &str| {
        gateway_config(
            &[simple_https(&pki, port, "https", HTTPBIN)],
            &[HTTPBIN],
            &route_all(to, SERVICE_PORT),
            &[("svc-a", &[a.addr][..]), ("svc-b", &[b.addr][..])],
        )
    };
    let mut gw = Gateway::start_ready(&dir, &config("svc-a"), &["--no-watch"]);
    let mut open = tls_connect(port, HTTPBIN, client_config(&pki.root_cert, None)).expect("TLS");
    assert_eq!(request_on(&mut open, HTTPBIN, "/x"), (200, "a /x 0".into()));

    dir.write("gateway.yaml", config("svc-b"));
    assert!(gw.sighup_and_wait(), "{}", gw.log_text());
    assert_eq!(
        request_on(&mut open, HTTPBIN, "/y"),
        (200, "b /y 0".into()),
        "the open connection's next request follows the new route"
    );
    assert_eq!(b.seen.requests(), 1);
    assert_eq!(a.seen.requests(), 1);
}

#[test]
fn reloads_open_and_close_listeners() {
    require("curl");
    let dir = TempDir::new("rl-listeners");
    let upstream = httpbin();
    let (pki, https, http) = (pki(&dir), free_port(), free_port());
    let only_https = https_config(&pki, https, upstream.addr());
    let both = backend_config(
        &http_and_https_servers(&pki, http, https),
        &[HTTPBIN],
        &[upstream.addr()],
    );
    let mut gw = Gateway::start_ready(&dir, &only_https, &["--no-watch"]);
    assert_eq!(curl_http(HTTPBIN, http, "/status/200", &[]).code, 7);

    // Adding the HTTP server opens its port.
    dir.write("gateway.yaml", &both);
    assert!(gw.sighup_and_wait(), "{}", gw.log_text());
    let opened = wait_for(RELOAD_TIMEOUT, || {
        curl_http(HTTPBIN, http, "/status/200", &[]).status == 200
    });
    assert!(
        opened,
        "the added port does not serve; log:\n{}",
        gw.log_text()
    );
    assert_eq!(fresh_status(https, &pki.root_cert, "/status/418"), 418);

    // Removing it closes the port: connections are refused.
    dir.write("gateway.yaml", &only_https);
    assert!(gw.sighup_and_wait(), "{}", gw.log_text());
    assert!(
        wait_refused(http, RELOAD_TIMEOUT),
        "the removed port still accepts; log:\n{}",
        gw.log_text()
    );
    let out = curl_http(HTTPBIN, http, "/status/200", &[]);
    assert_eq!(out.code, 7, "connection refused: {out:?}");
    assert_eq!(fresh_status(https, &pki.root_cert, "/status/418"), 418);

    // A new port another process holds fails the reload; the rest keeps serving.
    let taken = std::net::TcpListener::bind(("127.0.0.1", http)).expect("taking the port");
    dir.write("gateway.yaml", &both);
    assert!(!gw.sighup_and_wait(), "a taken port must fail the reload");
    let log = gw.log_text();
    assert!(log.contains(&format!("127.0.0.1:{http}")), "{log}");
    assert_eq!(fresh_status(https, &pki.root_cert, "/status/418"), 418);
    drop(taken);
}

/// How many SIGHUP reloads the load test makes.
const LOAD_RELOADS: usize = 20;

#[test]
fn twenty_reloads_under_load_fail_no_request() {
    require("wrk");
    let dir = TempDir::new("rl-load");
    let upstream = httpbin();
    // wrk has no --resolve: the host is `localhost`, which /etc/hosts maps to 127.0.0.1.
    let hosts = [HTTPBIN, "localhost"];
    let pki = pki::generate(&dir.join("pki"), &hosts).expect("the test PKI");
    let port = free_port();
    let config = |header: &str| {
        backend_config(
            &[
                simple_https(&pki, port, "https-localhost", "localhost"),
                simple_https(&pki, port, "https-httpbin", HTTPBIN),
            ],
            &hosts,
            &[upstream.addr()],
        )
        .replace("  http:\n", &format!("  http:\n  - headers:\n      response:\n        set:\n          x-generation: \"{header}\"\n    route:\n    - destination:\n        host: backend\n        port:\n          number: {SERVICE_PORT}\n"))
    };
    let mut gw = Gateway::start_ready(&dir, &config("0"), &["--no-watch"]);
    let url = format!("https://localhost:{port}/status/200");
    let probe = curl(&["-k", "-sS", &url]);
    assert_eq!((probe.code, probe.status), (0, 200), "{probe:?}");
    assert_eq!(probe.header("x-generation"), Some("0"), "{probe:?}");

    let seconds = 6;
    let keep_alive = thread::spawn({
        let url = url.clone();
        move || wrk(&url, seconds, &[])
    });
    let reconnecting = thread::spawn({
        let url = url.clone();
        move || wrk(&url, seconds, &["-H", "Connection: close"])
    });
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    for i in 1..=LOAD_RELOADS {
        if i % 2 == 0 {
            pki::generate(&dir.join("pki"), &hosts).expect("rotating");
        }
        dir.write("gateway.yaml", config(&i.to_string()));
        gw.signal("HUP");
        thread::sleep(Duration::from_millis(150));
    }
    gw.wait_log_count(RELOADED, 1);
    // Several queued SIGHUPs may make one reload; the last one must have happened.
    let last = wait_for(RELOAD_TIMEOUT, || {
        curl(&["-k", "-sS", &url]).header("x-generation") == Some(&LOAD_RELOADS.to_string())
    });
    assert!(
        last,
        "the last configuration is not served; log:\n{}",
        gw.log_text()
    );
    let reloading_took = started.elapsed();
    let keep_alive = keep_alive.join().expect("wrk thread");
    let reconnecting = reconnecting.join().expect("wrk thread");
    let a = assert_wrk_clean(&keep_alive, "keep-alive wrk");
    let b = assert_wrk_clean(&reconnecting, "Connection: close wrk");
    let reloads = gw.log_count(RELOADED);
    let failures: Vec<String> = gw
        .log_text()
        .lines()
        .filter(|l| l.contains(RELOAD_FAILED))
        .map(str::to_owned)
        .collect();
    assert!(
        failures.is_empty(),
        "reloads failed under load: {failures:#?}"
    );
    assert!(
        reloads >= LOAD_RELOADS / 2,
        "only {reloads} reloads in {reloading_took:?}"
    );
    eprintln!("{a} keep-alive and {b} reconnecting requests across {reloads} reloads");
    gw.assert_running();
}

/// SIGTERM: the ports stop accepting, /ready says 503, idle keep-alive connections
/// close at once, a request in flight finishes, and the process exits 0 as soon as
/// it has — before `--drain-timeout`, which it never reaches (no "drain timeout" in
/// the log). Ordering, not timing: the idle connection must close while the slow
/// request is still running.
#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let dir = TempDir::new("rl-drain");
    let upstream = Upstream::slow_on_request(Duration::from_secs(3));
    let (pki, port) = (pki(&dir), free_port());
    let mut gw = Gateway::start_ready(
        &dir,
        &https_config(&pki, port, upstream.addr),
        &["--drain-timeout", "30"],
    );
    let config = client_config(&pki.root_cert, None);
    // An idle keep-alive connection (one request done) and a slow request in flight.
    let mut idle = tls_connect(port, HTTPBIN, config.clone()).expect("TLS");
    assert_eq!(request_on(&mut idle, HTTPBIN, "/status/200").0, 200);
    let mut slow = tls_connect(port, HTTPBIN, config.clone()).expect("TLS");
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: httpbin.example.com\r\n\r\n")
        .expect("sending the slow request");
    slow.flush().expect("flush");
    assert!(
        wait_for(Duration::from_secs(5), || upstream.seen.requests() >= 2),
        "the slow request never reached the upstream"
    );
    let slow = thread::spawn(move || read_response(&mut slow));

    gw.signal("TERM");
    // New connections are refused while the slow request is still running.
    assert!(
        wait_refused(port, Duration::from_secs(2)),
        "the port still accepts after SIGTERM; log:\n{}",
        gw.log_text()
    );
    // The admin endpoint says so while the slow request still runs.
    let ready = curl_admin(gw.admin(), "/ready", &[]);
    assert_eq!(ready.status, 503, "/ready while draining: {ready:?}");
    // The idle keep-alive connection is closed without waiting for the slow request.
    let (bytes, closed) = read_to_close(&mut idle);
    assert!(
        closed && bytes.is_empty(),
        "idle connection: {bytes:?} closed={closed}"
    );
    assert!(
        !slow.is_finished(),
        "the idle connection stayed open until the slow request was answered"
    );

    let response = slow.join().expect("slow request thread");
    let (status, _, _) = response.expect("the slow request completes");
    assert_eq!(status, 200, "the in-flight request finishes");
    match gw.wait_exit(Duration::from_secs(20)) {
        Some(status) => assert_eq!(status.code(), Some(0), "log:\n{}", gw.log_text()),
        None => panic!("still running 20 s after SIGTERM; log:\n{}", gw.log_text()),
    }
    let log = gw.log_text();
    assert!(
        !log.contains("drain timeout"),
        "the drain waited for its timeout instead of the last request:\n{log}"
    );
}
