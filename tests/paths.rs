//! Request paths as routing sees them: normalised before any rule matches (Istio's
//! `pathNormalization`, `BASE` by default), so a rule that keeps `/admin` from the
//! public cannot be walked around with `..`, `%2E%2E` or a backslash, and the
//! upstream gets the path the rule matched. Fragments and absolute-form targets
//! without Host are refused (RFC 9112 3.2).

mod common;

use common::*;

/// A plain HTTP gateway for [`HTTPBIN`]: `/admin` answered 403 by the gateway itself,
/// `/public/` routed to a recording upstream, nothing else routed.
struct Paths {
    port: u16,
    upstream: Upstream,
    _gateway: Gateway,
    _dir: TempDir,
}

impl Paths {
    fn start(tag: &str, extra: &[&str]) -> Paths {
        let dir = TempDir::new(tag);
        let upstream = Upstream::named("public");
        let port = free_port();
        let http = format!(
            "  - match:
    - uri:
        prefix: /admin
    directResponse:
      status: 403
      body:
        string: no admin from outside
{}",
            prefix_rule("/public/", "public")
        );
        let config = gateway_config(
            &[http_server(port, &[HTTPBIN])],
            &[HTTPBIN],
            &http,
            &[("public", &[upstream.addr])],
        );
        let gateway = Gateway::start(&dir, &config, extra);
        Paths {
            port,
            upstream,
            _gateway: gateway,
            _dir: dir,
        }
    }

    /// Sends `target` exactly as written; the status and the path the upstream saw
    /// (empty when it saw nothing).
    fn get(&self, target: &str) -> (u16, String) {
        let before = self.upstream.seen.requests();
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: {HTTPBIN}\r\nConnection: close\r\n\r\n");
        let (bytes, _) = raw_exchange(self.port, request.as_bytes());
        let heads = self.upstream.seen.heads();
        let seen = match heads.get(before) {
            Some(head) => head.split_whitespace().nth(1).unwrap_or("").to_owned(),
            None => String::new(),
        };
        (first_status(&bytes), seen)
    }
}

#[test]
fn dot_segments_and_their_encodings_never_walk_past_a_rule() {
    let paths = Paths::start("paths-base", &[]);
    for target in [
        "/public/../admin/",
        "/public/%2E%2E/admin/",
        "/public/%2e%2e/admin/",
        "/public/.%2e/admin",
        "/public/..\\admin",
        "/public/..;x=1/admin",
        "/public/./../admin",
        "/public/a/../../admin",
    ] {
        assert_eq!(paths.get(target), (403, String::new()), "{target}");
    }
    for (target, forwarded) in [
        ("/public/./x", "/public/x"),
        ("/public/a/../b?q=/../admin", "/public/b?q=/../admin"),
        ("/public/%7Euser/%41", "/public/~user/A"),
        ("/public/a\\b", "/public/a/b"),
        // An encoded slash stays encoded under BASE (Istio's default): the segment
        // `..%2Fadmin` is no dot segment.
        ("/public/..%2Fadmin", "/public/..%2Fadmin"),
        ("/public//x", "/public//x"),
    ] {
        assert_eq!(paths.get(target), (200, forwarded.to_owned()), "{target}");
    }
    // An encoded NUL, a fragment, an absolute-form target without Host: 400.
    assert_eq!(paths.get("/public/%00"), (400, String::new()));
    assert_eq!(paths.get("/public/x#frag"), (400, String::new()));
    let request = b"GET http://httpbin.example.com/public/x HTTP/1.1\r\nConnection: close\r\n\r\n";
    let (bytes, _) = raw_exchange(paths.port, request);
    assert_first_status(&bytes, 400, "absolute form without Host");
    // With Host, absolute form is served (its authority wins).
    let request = b"GET http://httpbin.example.com/public/x HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n";
    let (bytes, _) = raw_exchange(paths.port, request);
    assert_first_status(&bytes, 200, "absolute form with Host");
}

#[test]
fn each_istio_mode_does_what_istio_says() {
    let none = Paths::start("paths-none", &["--path-normalization", "NONE"]);
    assert_eq!(
        none.get("/public/../admin/"),
        (200, "/public/../admin/".to_owned())
    );
    assert_eq!(none.get("/public/x#frag"), (400, String::new()));

    let merge = Paths::start("paths-merge", &["--path-normalization", "MERGE_SLASHES"]);
    assert_eq!(merge.get("/public//x///y"), (200, "/public/x/y".to_owned()));
    assert_eq!(merge.get("//admin"), (403, String::new()));
    assert_eq!(
        merge.get("/public/..%2Fadmin"),
        (200, "/public/..%2Fadmin".to_owned())
    );

    let decode = Paths::start(
        "paths-decode",
        &["--path-normalization", "decode-and-merge-slashes"],
    );
    assert_eq!(decode.get("/public/..%2Fadmin"), (403, String::new()));
    assert_eq!(decode.get("/public/..%5cadmin"), (403, String::new()));
    assert_eq!(decode.get("/public%2Fx"), (200, "/public/x".to_owned()));
    assert_eq!(
        decode.get("/public/%252F"),
        (200, "/public/%252F".to_owned())
    );
}

#[test]
fn an_unknown_mode_is_refused_by_name() {
    let dir = TempDir::new("paths-bad");
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], closed_port()));
    let config = dir.write("gateway.yaml", http_config(free_port(), HTTPBIN, upstream));
    let (code, stderr) = run_expecting_exit(&config, &["--path-normalization", "SIMPLE"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--path-normalization") && stderr.contains("MERGE_SLASHES"),
        "{stderr}"
    );
}
