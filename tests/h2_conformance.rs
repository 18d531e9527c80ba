//! RFC 9113 conformance of HTTP/2 to clients, frame by frame, against the real
//! `ringress` binary: `tests/tools/h2_conformance.py` (Python `hyperframe` and `hpack`,
//! frames written by hand so that invalid ones can be sent) opens a fresh h2c
//! connection (prior knowledge, plain port) per case and checks what the RFC requires
//! of the preface and SETTINGS, of each frame type, of stream states, flow control,
//! HPACK and request fields: connection errors are GOAWAY with the named code and a
//! close, stream errors RST_STREAM with the named code after which the connection
//! still serves a new stream. The script's table `KNOWN_DEVIATIONS` lists the cases
//! where the gateway (mostly the `h2` crate under it) is known to answer otherwise;
//! those print XFAIL and do not fail this test, anything else that differs does (and
//! so does a listed case that now conforms, so that the table stays true).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The whole suite's limit: it takes well under a second, each case has 5 s at most,
/// and the script gives up on the cases left after 90 s, so a hanging gateway still
/// gets its summary printed.
const SUITE_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn http2_to_clients_conforms_to_rfc_9113_frame_by_frame() {
    for module in ["h2", "hyperframe", "hpack"] {
        require_python_module(module);
    }
    let dir = TempDir::new("h2-conformance");
    let upstream = httpbin();
    // The port may accept before the gateway serves it (its start-up probe); the
    // script's first case retries a valid request until it is answered.
    let (port, mut gw) = start_http(&dir, upstream.addr(), &[]);
    let mut command = Command::new("python3");
    command
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/h2_conformance.py"
        ))
        .arg(port.to_string());
    let started = Instant::now();
    let out = run_with_timeout(command, b"", SUITE_TIMEOUT);
    let report = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the RFC 9113 conformance suite failed ({}):\n{report}{errors}",
        out.status
    );
    // Shown with --nocapture: which cases passed and which deviations are known.
    println!("{report}(the suite took {:?})", started.elapsed());
    assert!(
        report.lines().any(|l| l.contains(" cases in ")),
        "no summary from the suite:\n{report}{errors}"
    );
    gw.assert_running();
}
