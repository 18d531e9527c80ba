//! Session tickets shared across replicas (`--session-ticket-keys`): two ringress
//! processes given the same key file resume each other's TLS 1.3 sessions
//! (`openssl s_client -sess_out` on one, `-sess_in` on the other); rotating the file
//! (a new first key, the old one kept, then dropped) is picked up by the watcher; a
//! bad file stops start-up with its line named, and a bad rewrite keeps the keys in
//! use; a SIMPLE server's ticket still never resumes on a MUTUAL one; `check` and
//! `generate-ticket-key`.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;

/// The request s_client sends.
const CLOSE_REQUEST: &[u8] =
    b"GET /status/418 HTTP/1.1\r\nHost: httpbin.example.com\r\nConnection: close\r\n\r\n";

/// Resumptions tried where one is expected (or not): enough that both shards of a
/// test gateway see one.
const ATTEMPTS: usize = 4;

/// A new key line, as `ringress generate-ticket-key` prints it.
fn key_line() -> String {
    let out = ringress(&["generate-ticket-key"]);
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(line.lines().count(), 1, "{line:?}");
    line.trim().to_owned()
}

/// The 16-byte name of a key line.
fn key_name(line: &str) -> Vec<u8> {
    STANDARD.decode(line).expect("base64")[..16].to_vec()
}

/// Writes `lines` to `path` as an operator would rotate it: a new file, mode 0600,
/// renamed over the old one.
fn write_keys(path: &Path, lines: &[&str]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!("# session ticket keys\n{}\n", lines.join("\n")),
    )
    .expect("writing the key file");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::rename(&tmp, path).expect("renaming the key file");
}

/// A gateway serving [`https_config`] on its own port and configuration file, with
/// the key file `keys`; its port and handle, once it serves and watches.
fn replica(fixture: &HttpsFixture, keys: &Path, name: &str) -> (u16, Gateway) {
    let port = free_port();
    let config = fixture.dir.write(
        &format!("{name}.yaml"),
        https_config(&fixture.pki, port, fixture.upstream.addr()),
    );
    let keys = keys.to_string_lossy().into_owned();
    let mut gateway = Gateway::try_start_file(
        &fixture.dir,
        &config,
        &[port],
        &["--session-ticket-keys", &keys],
    )
    .unwrap_or_else(|log| panic!("{name}: {log}"));
    gateway.wait_admin_ready();
    gateway.wait_watching();
    (port, gateway)
}

/// A TLS 1.3 handshake and a request on `port`, saving the session to `session`
/// (`-sess_out`) or offering it (`-sess_in`).
fn connect(fixture: &HttpsFixture, port: u16, session_flag: &str, session: &Path) -> SClient {
    let ca = fixture.pki.root_cert.to_string_lossy().into_owned();
    let session = session.to_string_lossy().into_owned();
    s_client(
        port,
        HTTPBIN,
        &["-tls1_3", "-CAfile", &ca, session_flag, &session],
        CLOSE_REQUEST,
    )
}

/// A new session from `port`, saved to `session`; panics unless it was a full
/// handshake that was answered.
fn new_session(fixture: &HttpsFixture, port: u16, session: &Path) {
    let first = connect(fixture, port, "-sess_out", session);
    assert!(first.output.contains("New, TLSv1.3"), "{first:?}");
    assert!(first.output.contains("HTTP/1.1 418"), "{first:?}");
    assert!(
        std::fs::metadata(session).is_ok_and(|m| m.len() > 0),
        "s_client saved no session: {first:?}"
    );
}

/// Offers `session` to `port` [`ATTEMPTS`] times; panics unless each handshake
/// resumed (`resumes`) or each was a full one, and each request was answered.
#[track_caller]
fn assert_resumes(fixture: &HttpsFixture, port: u16, session: &Path, resumes: bool, what: &str) {
    for attempt in 0..ATTEMPTS {
        let again = connect(fixture, port, "-sess_in", session);
        let wanted = if resumes {
            "Reused, TLSv1.3"
        } else {
            "New, TLSv1.3"
        };
        assert!(
            again.output.contains(wanted),
            "{what} (attempt {attempt}): expected {wanted:?}: {again:?}"
        );
        assert!(again.output.contains("HTTP/1.1 418"), "{what}: {again:?}");
    }
}

/// The session ticket in the session file `session`, as `openssl sess_id` prints it.
fn ticket(session: &Path) -> Vec<u8> {
    let mut command = Command::new("openssl");
    command
        .args(["sess_id", "-noout", "-text", "-in"])
        .arg(session);
    let out = run_with_timeout(command, b"", CLIENT_TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // `    0000 - 8f 3c ... 07-a1 ...   ..text..`, after `TLS session ticket:`.
    let dump = text
        .split_once("TLS session ticket:")
        .unwrap_or_else(|| panic!("no ticket in {}: {text}", session.display()))
        .1;
    let mut bytes = Vec::new();
    for line in dump.lines().skip(1) {
        let Some((offset, rest)) = line.trim().split_once(" - ") else {
            break;
        };
        if offset.len() != 4 || !offset.chars().all(|c| c.is_ascii_hexdigit()) {
            break;
        }
        let hex = rest.get(..47).unwrap_or(rest).replace('-', " ");
        bytes.extend(
            hex.split_whitespace()
                .map(|b| u8::from_str_radix(b, 16).expect("a hex byte")),
        );
    }
    bytes
}

/// Waits until `gateway` logged `reloads` successful reloads and both of its shards
/// installed the snapshot of the last one.
#[track_caller]
fn wait_reloaded(gateway: &mut Gateway, reloads: usize) {
    gateway.wait_log_count(RELOADED, reloads);
    let log = gateway.log_text();
    let generation = log
        .lines()
        .rfind(|line| line.contains(RELOADED))
        .and_then(|line| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix("generation="))
        })
        .unwrap_or_else(|| panic!("no generation in the reload line; log:\n{log}"))
        .to_owned();
    for shard in 0..2 {
        gateway.wait_log_count(
            &format!("snapshot installed shard={shard} generation={generation}"),
            1,
        );
    }
}

#[test]
fn a_session_resumes_on_another_replica_until_its_key_is_dropped() {
    require("openssl");
    let fixture = HttpsFixture::new("tk-replicas");
    let keys = fixture.dir.join("ticket-keys");
    let (old, new) = (key_line(), key_line());
    write_keys(&keys, &[&old]);
    let (port_a, _a) = replica(&fixture, &keys, "a");
    let (port_b, mut b) = replica(&fixture, &keys, "b");

    // A session from process A resumes on process B: the same file, the same keys.
    let from_a = fixture.dir.join("from-a.session");
    new_session(&fixture, port_a, &from_a);
    assert_eq!(ticket(&from_a)[..16], key_name(&old), "the only key seals");
    assert_resumes(
        &fixture,
        port_a,
        &from_a,
        true,
        "on the process that issued it",
    );
    assert_resumes(&fixture, port_b, &from_a, true, "on the other process");

    // A new key first, the old one kept: old tickets still resume, new ones are
    // sealed with the new key.
    write_keys(&keys, &[&new, &old]);
    wait_reloaded(&mut b, 1);
    assert!(
        b.log_text().contains("session ticket keys changed"),
        "{}",
        b.log_text()
    );
    assert_resumes(&fixture, port_b, &from_a, true, "with the old key second");
    let from_b = fixture.dir.join("from-b.session");
    new_session(&fixture, port_b, &from_b);
    assert_eq!(ticket(&from_b)[..16], key_name(&new), "the first key seals");

    // The old key dropped: its tickets no longer resume (a full handshake instead),
    // the new key's still do.
    write_keys(&keys, &[&new]);
    wait_reloaded(&mut b, 2);
    assert_resumes(&fixture, port_b, &from_a, false, "with the old key dropped");
    assert_resumes(&fixture, port_b, &from_b, true, "with the new key kept");
}

#[test]
fn a_bad_key_file_stops_start_up_and_a_bad_rewrite_keeps_the_keys() {
    require("openssl");
    let fixture = HttpsFixture::new("tk-bad");
    let keys = fixture.dir.join("ticket-keys");
    let keys_arg = keys.to_string_lossy().into_owned();
    let config = fixture.dir.write(
        "gateway.yaml",
        https_config(&fixture.pki, fixture.port, fixture.upstream.addr()),
    );
    let first = key_line();

    // At start: exit 1 naming the file and the line.
    let short = STANDARD.encode([7; 32]);
    write_keys(&keys, &[&first, &short]);
    let (code, output) = run_expecting_exit(&config, &["--session-ticket-keys", &keys_arg]);
    assert_eq!(code, 1, "{output}");
    let line_error = format!(
        "{keys_arg} line 3: a ticket key is 48 bytes of base64, this one decodes to 32 bytes"
    );
    assert!(output.contains(&line_error), "{output}");
    for (lines, error) in [
        (vec![], "no session ticket key"),
        (
            vec![first.as_str(), first.as_str()],
            "line 3: the same key name",
        ),
    ] {
        write_keys(&keys, &lines);
        let (code, output) = run_expecting_exit(&config, &["--session-ticket-keys", &keys_arg]);
        assert_eq!(code, 1, "{output}");
        assert!(output.contains(error), "{error}: {output}");
    }
    let missing = fixture
        .dir
        .join("no-such-keys")
        .to_string_lossy()
        .into_owned();
    let (code, output) = run_expecting_exit(&config, &["--session-ticket-keys", &missing]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("cannot read the session ticket keys {missing}")),
        "{output}"
    );

    // A good file readable by others: a warning, and ringress serves.
    write_keys(&keys, &[&first]);
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (port, mut gateway) = replica(&fixture, &keys, "gw");
    assert_eq!(
        gateway.log_count("can be read by any user"),
        1,
        "{}",
        gateway.log_text()
    );
    let session = fixture.dir.join("session");
    new_session(&fixture, port, &session);
    assert_resumes(&fixture, port, &session, true, "before the bad rewrite");

    // A bad rewrite fails the reload, logged with its line; the keys in use stay.
    write_keys(&keys, &[&first, "not base64!"]);
    gateway.wait_log_count(RELOAD_FAILED, 1);
    let log = gateway.log_text();
    assert!(log.contains("line 3: not base64"), "{log}");
    assert_resumes(&fixture, port, &session, true, "after the bad rewrite");

    // The file is still watched: fixing it (without the first key) reloads.
    write_keys(&keys, &[&key_line()]);
    wait_reloaded(&mut gateway, 1);
    assert_resumes(
        &fixture,
        port,
        &session,
        false,
        "after the fix dropped the key",
    );
}

#[test]
fn a_simple_servers_ticket_never_resumes_on_a_mutual_server_with_a_key_file() {
    require("openssl");
    let keys_dir = TempDir::new("tk-mutual-keys");
    let keys = keys_dir.join("ticket-keys");
    write_keys(&keys, &[&key_line()]);
    let keys_arg = keys.to_string_lossy().into_owned();
    let m = MutualFixture::start("tk-mutual", &["--session-ticket-keys", &keys_arg]);
    let s = &m.fixture;
    let session = s.dir.join("simple.session");

    new_session(s, s.port, &session);
    assert_resumes(s, s.port, &session, true, "on the SIMPLE port");
    let crossed = connect(s, m.mutual_port, "-sess_in", &session);
    assert!(
        !crossed.output.contains("Reused"),
        "a SIMPLE server's ticket resumed on the MUTUAL server: {crossed:?}"
    );
    assert!(
        !crossed.output.contains("HTTP/1.1"),
        "the MUTUAL server answered a client without a certificate: {crossed:?}"
    );
}

#[test]
fn check_describes_the_key_file_and_generated_keys_are_accepted() {
    let fixture = HttpsFixture::new("tk-check");
    let config = fixture.dir.write(
        "gateway.yaml",
        https_config(&fixture.pki, fixture.port, fixture.upstream.addr()),
    );
    let keys: PathBuf = fixture.dir.join("ticket-keys");
    let keys_arg = keys.to_string_lossy().into_owned();
    let (ours, theirs) = (key_line(), key_line());
    let mut lines = vec![ours.clone(), theirs.clone()];
    // `openssl rand -base64 48` makes a key line too.
    if have("openssl") {
        let mut command = Command::new("openssl");
        command.args(["rand", "-base64", "48"]);
        let out = run_with_timeout(command, b"", CLIENT_TIMEOUT);
        lines.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    write_keys(&keys, &refs);
    let config_arg = config.to_string_lossy().into_owned();
    let out = ringress(&[
        "check",
        "--config",
        &config_arg,
        "--session-ticket-keys",
        &keys_arg,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let name = key_name(&ours)[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert!(
        stdout.contains(&format!(
            "keys from {keys_arg}: {} keys, new tickets sealed with the first (name {name}",
            lines.len()
        )),
        "{stdout}"
    );
    for line in &lines {
        assert!(!stdout.contains(&line[..20]), "a key printed: {stdout}");
    }

    write_keys(&keys, &[&ours, "Zm9v"]);
    let out = ringress(&[
        "check",
        "--config",
        &config_arg,
        "--session-ticket-keys",
        &keys_arg,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{keys_arg} line 3: a ticket key is 48 bytes of base64, this one decodes to 3 bytes"
        )),
        "{stderr}"
    );
}
