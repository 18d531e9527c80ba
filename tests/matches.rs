//! VirtualService `match[]` fields beyond uri, authority, method, scheme and headers,
//! against the real `ringress` binary with curl: `queryParams` (exact and regex, on the
//! first value, as sent), `withoutHeaders`, `port` (the gateway port the request came
//! in on) and `gateways` (the Gateway it came through), each rule answering a direct
//! response of its own; and `ringress check` describing them.

mod common;

use common::*;

/// Two Gateways: `public` on two HTTP ports, `internal` on a third; one
/// VirtualService through both, whose rules say which match field chose them.
fn config(public: u16, public_alt: u16, internal: u16) -> String {
    let server = |port: u16| {
        format!(
            "  - port:\n      number: {port}\n      name: http-{port}\n      protocol: HTTP\n    bind: 127.0.0.1\n    hosts: [\"*\"]\n"
        )
    };
    let direct = |status: u16, body: &str| {
        format!(
            "    directResponse:\n      status: {status}\n      body:\n        string: \"{body}\"\n"
        )
    };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: public\nspec:\n  servers:\n{}{}---\n\
         apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: internal\nspec:\n  servers:\n{}---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: shop\nspec:\n  hosts: [shop.example.com]\n  gateways: [public, istio-system/internal]\n  http:\n\
         \x20 - name: v2-by-query\n    match:\n    - queryParams:\n        version: {{exact: \"2\"}}\n        id: {{regex: \"[0-9]+\"}}\n{}\
         \x20 - name: admin-inside\n    match:\n    - uri: {{prefix: /admin}}\n      gateways: [internal]\n{}\
         \x20 - name: admin-outside\n    match:\n    - uri: {{prefix: /admin}}\n{}\
         \x20 - name: alt-port\n    match:\n    - port: {public_alt}\n{}\
         \x20 - name: not-canary\n    match:\n    - withoutHeaders:\n        x-canary: {{exact: \"yes\"}}\n{}\
         \x20 - name: rest\n{}",
        server(public),
        server(public_alt),
        server(internal),
        direct(200, "v2"),
        direct(200, "admin"),
        direct(403, "no admin here"),
        direct(200, "alt port"),
        direct(200, "stable"),
        direct(200, "canary"),
    )
}

#[test]
fn query_params_without_headers_port_and_gateways_choose_the_rule() {
    require("curl");
    let dir = TempDir::new("matches");
    let (public, public_alt, internal) = (free_port(), free_port(), free_port());
    let yaml = config(public, public_alt, internal);
    let _gw = Gateway::start(&dir, &yaml, &[]);
    let get = |port: u16, path: &str, extra: &[&str]| {
        let r = curl_http("shop.example.com", port, path, extra);
        (r.status, r.text())
    };
    let ok = |body: &str| (200, body.to_owned());
    let canary = ["-H", "x-canary: yes"];
    // queryParams: both must hold, on the first value of each, not decoded.
    assert_eq!(get(public, "/?version=2&id=42", &canary), ok("v2"));
    assert_eq!(
        get(public, "/cart?id=7&version=2&version=3", &canary),
        ok("v2")
    );
    assert_eq!(
        get(public, "/?version=3&version=2&id=42", &canary),
        ok("canary")
    );
    assert_eq!(get(public, "/?version=2&id=4x", &canary), ok("canary"));
    assert_eq!(get(public, "/?version=2", &canary), ok("canary"));
    // gateways: /admin only through the internal Gateway.
    assert_eq!(get(internal, "/admin/users", &canary), ok("admin"));
    assert_eq!(
        get(public, "/admin/users", &canary),
        (403, "no admin here".into())
    );
    // port: the public Gateway's second port only.
    assert_eq!(get(public_alt, "/", &canary), ok("alt port"));
    assert_eq!(get(internal, "/", &canary), ok("canary"));
    // withoutHeaders: no header, or another value, lets the match hold.
    assert_eq!(get(public, "/", &[]), ok("stable"));
    assert_eq!(get(public, "/", &["-H", "x-canary: no"]), ok("stable"));
    assert_eq!(get(public, "/", &canary), ok("canary"));

    let config = dir.write("check.yaml", &yaml);
    let (code, stdout, stderr) = check(&config);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    for described in [
        "query version exact 2, query id regex",
        "uri prefix /admin, through internal",
        &format!("port {public_alt}"),
        "without header x-canary exact yes",
    ] {
        assert!(
            stdout.contains(described),
            "{described:?} not in:\n{stdout}"
        );
    }
}
