//! Zero-downtime binary upgrades: a second `ringress run` with the same
//! `--upgrade-socket` takes the listening sockets (gateway ports, admin, health) of
//! the running one, serves, and only then does the old one drain and exit — wrk runs
//! across it fail no request, over plain HTTP and TLS, keep-alive and reconnecting.
//! A new process whose configuration fails leaves the old one serving; SIGUSR2 starts
//! the binary again to do the same; systemd hears READY=1, then MAINPID= from the new
//! process, and STOPPING=1 only from a real stop.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::*;

/// The log line of the new process once it serves on the inherited sockets.
const UPGRADED: &str = "binary upgrade: serving";
/// The old process's line when a new one took over.
const TOOK_OVER: &str = "took the listeners over";
/// How long an upgrade (start, hand-over, the old one's drain) may take.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(30);

/// A gateway configuration with an HTTP and an HTTPS port for `localhost` (wrk has no
/// `--resolve`), the admin and health endpoints and the upgrade socket, all shared by
/// every process the test starts.
struct Site {
    dir: TempDir,
    pki: pki::Pki,
    upstream: httpbin::Httpbin,
    http: u16,
    https: u16,
    admin: u16,
    health: u16,
    socket: PathBuf,
}

impl Site {
    fn new(tag: &str) -> Site {
        let dir = TempDir::new(tag);
        let pki = pki::generate(&dir.join("pki"), &[HTTPBIN, "localhost"]).expect("the test PKI");
        Site {
            pki,
            upstream: httpbin(),
            http: free_port(),
            https: free_port(),
            admin: free_port(),
            health: free_port(),
            socket: dir.join("upgrade.sock"),
            dir,
        }
    }

    fn config(&self) -> String {
        backend_config(
            &[
                http_server(self.http, &["localhost"]),
                simple_https(&self.pki, self.https, "https-localhost", "localhost"),
            ],
            &["localhost"],
            &[self.upstream.addr()],
        )
    }

    /// `ringress run` on `config` with the shared addresses.
    fn args(&self, config: &Path) -> Vec<String> {
        [
            "run",
            "--config",
            &config.to_string_lossy(),
            "--shards",
            "2",
            "--admin",
            &format!("127.0.0.1:{}", self.admin),
            "--health",
            &format!("127.0.0.1:{}", self.health),
            "--upgrade-socket",
            &self.socket.to_string_lossy(),
            "--drain-timeout",
            "10",
            "--log-level",
            "debug",
            "--no-watch",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Starts a process on `config` (with `env`); returns once the ports accept (at
    /// once when an older process holds them).
    fn start(&self, config: &Path, env: &[(&str, &str)]) -> Gateway {
        let args = self.args(config);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut gateway =
            Gateway::spawn_env(&self.dir, &args, config, &[self.http, self.https], env)
                .unwrap_or_else(|e| panic!("{e}"));
        gateway.admin_port = Some(self.admin);
        gateway
    }

    fn first(&self) -> Gateway {
        let config = self.dir.write("gateway.yaml", self.config());
        let mut gateway = self.start(&config, &[]);
        gateway.wait_admin_ready();
        gateway
    }

    fn http_url(&self) -> String {
        format!("http://localhost:{}/status/200", self.http)
    }

    fn https_url(&self) -> String {
        format!("https://localhost:{}/status/200", self.https)
    }

    /// Panics unless both ports and both endpoints answer.
    #[track_caller]
    fn assert_serving(&self) {
        let http = curl(&["-sS", &self.http_url()]);
        assert_eq!((http.code, http.status), (0, 200), "{http:?}");
        let ca = self.pki.root_cert.to_string_lossy().into_owned();
        let https = curl(&["-sS", "--cacert", &ca, &self.https_url()]);
        assert_eq!((https.code, https.status), (0, 200), "{https:?}");
        assert_eq!(curl_admin(self.admin, "/ready", &[]).status, 200);
        let health = curl(&[
            "-sS",
            &format!("http://127.0.0.1:{}/healthz/ready", self.health),
        ]);
        assert_eq!((health.status, health.text().as_str()), (200, "ready\n"));
    }
}

/// Waits until `new` serves on the inherited sockets and `old` exited 0; `old` no
/// longer waits for the ports to close when dropped (`new` holds them).
#[track_caller]
fn assert_upgraded(old: &mut Gateway, new: &mut Gateway) {
    let served = wait_for(UPGRADE_TIMEOUT, || {
        new.log_count(UPGRADED) > 0 || new.exited().is_some()
    });
    assert!(
        served && new.exited().is_none(),
        "the new process did not take over; its log:\n{}\nthe old one's:\n{}",
        new.log_text(),
        old.log_text()
    );
    match old.wait_exit(UPGRADE_TIMEOUT) {
        Some(status) => assert_eq!(status.code(), Some(0), "old log:\n{}", old.log_text()),
        None => panic!("the old process still runs; its log:\n{}", old.log_text()),
    }
    old.ports.clear();
    let log = old.log_text();
    assert!(log.contains(TOOK_OVER), "old log:\n{log}");
    assert!(!log.contains("drain timeout"), "old log:\n{log}");
}

#[test]
fn a_binary_upgrade_under_wrk_load_fails_no_request() {
    require("wrk");
    let site = Site::new("up-load");
    let mut old = site.first();
    site.assert_serving();
    let seconds = 6;
    let runs: Vec<(&str, thread::JoinHandle<std::process::Output>)> = [
        ("http keep-alive", site.http_url(), &[][..]),
        ("https keep-alive", site.https_url(), &[][..]),
        (
            "https Connection: close",
            site.https_url(),
            &["-H", "Connection: close"][..],
        ),
    ]
    .into_iter()
    .map(|(what, url, extra)| {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let run = thread::spawn(move || {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            wrk(&url, seconds, &extra)
        });
        (what, run)
    })
    .collect();
    thread::sleep(Duration::from_secs(2));
    let mut new = site.start(&old.config.clone(), &[]);
    assert_upgraded(&mut old, &mut new);
    for (what, run) in runs {
        let output = run.join().expect("wrk thread");
        let requests = assert_wrk_clean(&output, what);
        eprintln!("{what}: {requests} requests across the upgrade");
    }
    site.assert_serving();
    let log = new.log_text();
    assert!(log.contains("took over the listening sockets"), "{log}");
    new.assert_running();
}

#[test]
fn a_new_binary_that_fails_to_start_leaves_the_old_one_serving() {
    require("wrk");
    let site = Site::new("up-fail");
    let mut old = site.first();
    let load = thread::spawn({
        let url = site.https_url();
        move || wrk(&url, 5, &[])
    });
    thread::sleep(Duration::from_millis(500));
    // A configuration that does not load: the new process never connects.
    let broken = site.dir.write("broken.yaml", "kind: Gateway\nspec: [\n");
    let (code, output) = run_to_exit(&site, &broken);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("error"), "{output}");
    // One that loads but whose certificate is gone: it takes the sockets, fails to
    // build, and the old process serves on.
    let missing = site.dir.write(
        "missing.yaml",
        site.config().replace(
            &site.pki.cert("localhost").to_string_lossy().into_owned(),
            "/nonexistent/tls.crt",
        ),
    );
    let (code, output) = run_to_exit(&site, &missing);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("/nonexistent/tls.crt"), "{output}");
    assert!(
        wait_for(Duration::from_secs(5), || old
            .log_count("upgrade abandoned, still serving")
            > 0),
        "old log:\n{}",
        old.log_text()
    );
    assert_wrk_clean(&load.join().expect("wrk thread"), "https keep-alive");
    old.assert_running();
    site.assert_serving();
    assert_eq!(old.log_count(TOOK_OVER), 0, "{}", old.log_text());
    // The socket still works for an upgrade that succeeds.
    let mut new = site.start(&old.config.clone(), &[]);
    assert_upgraded(&mut old, &mut new);
    site.assert_serving();
}

/// Runs a process that is expected to exit by itself: its exit code and output.
fn run_to_exit(site: &Site, config: &Path) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringress"));
    command.args(site.args(config));
    let output = run_with_timeout(command, b"", EXIT_TIMEOUT);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// Kills a process started outside the harness (by a SIGUSR2 upgrade) when dropped.
struct Successor(u32);

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(self.0.to_string())
            .status();
    }
}

#[test]
fn sigusr2_starts_the_binary_again_and_it_takes_over() {
    let site = Site::new("up-usr2");
    let mut old = site.first();
    old.signal("USR2");
    // The new process writes to the old one's log (it inherits its output).
    let started = wait_for(UPGRADE_TIMEOUT, || {
        old.log_count("started the new process") > 0
    });
    assert!(started, "log:\n{}", old.log_text());
    let pid: u32 = old
        .log_text()
        .lines()
        .find(|l| l.contains("started the new process"))
        .and_then(|l| l.split("pid=").nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no pid in the log:\n{}", old.log_text()));
    let _successor = Successor(pid);
    match old.wait_exit(UPGRADE_TIMEOUT) {
        Some(status) => assert_eq!(status.code(), Some(0), "log:\n{}", old.log_text()),
        None => panic!("the old process still runs; log:\n{}", old.log_text()),
    }
    old.ports.clear();
    assert!(
        wait_for(UPGRADE_TIMEOUT, || old.log_count(UPGRADED) > 0),
        "log:\n{}",
        old.log_text()
    );
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the new process is gone"
    );
    site.assert_serving();
}

#[test]
fn sigusr2_without_an_upgrade_socket_is_refused_and_serving_goes_on() {
    let dir = TempDir::new("up-nosock");
    let upstream = httpbin();
    let port = free_port();
    let mut gw = Gateway::start_ready(&dir, &http_config(port, "localhost", upstream.addr()), &[]);
    gw.signal("USR2");
    gw.wait_log_count("needs --upgrade-socket", 1);
    let probe = curl(&["-sS", &format!("http://localhost:{port}/status/200")]);
    assert_eq!(probe.status, 200, "{probe:?}");
    gw.assert_running();
}

/// What a fake systemd hears on `$NOTIFY_SOCKET`, one datagram per state change.
fn next_notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn systemd_hears_ready_the_new_main_pid_and_the_final_stop() {
    let site = Site::new("up-notify");
    let notify_path = site.dir.join("notify.sock");
    let systemd = UnixDatagram::bind(&notify_path).expect("binding the notify socket");
    systemd
        .set_read_timeout(Some(UPGRADE_TIMEOUT))
        .expect("timeout");
    let env = [("NOTIFY_SOCKET", notify_path.to_str().expect("utf-8 path"))];
    let config = site.dir.write("gateway.yaml", site.config());
    let mut old = site.start(&config, &env);
    assert_eq!(next_notification(&systemd), "READY=1");
    let mut new = site.start(&config, &env);
    assert_eq!(
        next_notification(&systemd),
        format!("MAINPID={}\nREADY=1", new.pid())
    );
    assert_upgraded(&mut old, &mut new);
    // The old process drained without telling systemd the service stops.
    systemd
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    assert!(
        systemd.recv(&mut buf).is_err(),
        "the old process notified systemd"
    );
    systemd
        .set_read_timeout(Some(UPGRADE_TIMEOUT))
        .expect("timeout");
    new.signal("TERM");
    assert_eq!(next_notification(&systemd), "STOPPING=1");
    assert_eq!(
        new.wait_exit(UPGRADE_TIMEOUT).and_then(|s| s.code()),
        Some(0)
    );
}
