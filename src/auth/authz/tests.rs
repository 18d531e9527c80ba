//! `AuthorizationPolicy` decisions, request by request, from policies as users write
//! them (loaded through the configuration's own validation).

use std::path::Path;

use super::*;
use crate::http::parse_request;

fn authz(policies: &str) -> Authz {
    let config = crate::config::load_str(policies, Path::new("/etc/ringress/gw.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    Authz::new(&config).expect("policies")
}

fn policy(name: &str, action: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: istio-system\nspec:\n  action: {action}\n{rules}"
    )
}

/// A request as a test describes it.
struct Req {
    wire: String,
    peer: &'static str,
    port: u16,
    sni: Option<&'static str>,
    client_cert: Option<&'static str>,
    token: Option<Verified>,
    trusted_proxies: u8,
}

fn get(path: &str, headers: &str) -> Req {
    Req {
        wire: format!("GET {path} HTTP/1.1\r\nHost: app.example.com\r\n{headers}\r\n"),
        peer: "192.0.2.10",
        port: 443,
        sni: Some("app.example.com"),
        client_cert: None,
        token: None,
        trusted_proxies: 0,
    }
}

fn decide(authz: &Authz, req: &Req) -> Result<Vec<String>, Option<String>> {
    let head = parse_request(req.wire.as_bytes()).unwrap().unwrap();
    let path = head.path().to_owned();
    let host = head.host().unwrap_or_default().to_owned();
    let request = AuthzRequest {
        head: &head,
        path: &path,
        host: &host,
        peer: req.peer.parse().unwrap(),
        local: Some(SocketAddr::from(([127, 0, 0, 1], req.port))),
        port: req.port,
        sni: req.sni,
        client_cert: req.client_cert,
        token: req.token.as_ref(),
        trusted_proxies: req.trusted_proxies,
    };
    authz
        .check(&request)
        .map(|a| a.audited.iter().map(|s| s.to_string()).collect())
        .map_err(|r| r.rule.map(str::to_owned))
}

fn token(issuer: &str, subject: &str, claims: &str) -> Verified {
    let claims: serde_json::Value = serde_json::from_str(claims).unwrap();
    let claims = claims.as_object().unwrap().clone();
    let audiences = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    Verified {
        principal: format!("{issuer}/{subject}"),
        audiences,
        claims,
        ..Verified::default()
    }
}

#[test]
fn deny_comes_first_then_allow_must_match() {
    let text = policy(
        "allow-get",
        "ALLOW",
        "  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        paths: [\"/public*\", \"/status/*\"]\n",
    ) + &policy(
        "deny-admin",
        "DENY",
        "  rules:\n  - to:\n    - operation:\n        paths: [\"/public/admin*\"]\n",
    );
    let authz = authz(&text);
    assert_eq!(decide(&authz, &get("/public/page", "")), Ok(vec![]));
    assert_eq!(decide(&authz, &get("/status/200?x=1", "")), Ok(vec![]));
    assert_eq!(
        decide(&authz, &get("/public/admin/users", "")),
        Err(Some(
            "ns[istio-system]-policy[deny-admin]-rule[0]".to_owned()
        ))
    );
    // Allowed by nothing.
    assert_eq!(decide(&authz, &get("/private", "")), Err(None));
    let mut post = get("/public/page", "");
    post.wire = post.wire.replacen("GET", "POST", 1);
    assert_eq!(decide(&authz, &post), Err(None));
}

#[test]
fn an_allow_policy_without_rules_allows_nothing_and_a_deny_without_rules_denies_nothing() {
    let allow_nothing = authz(&policy("allow-nothing", "ALLOW", ""));
    assert_eq!(decide(&allow_nothing, &get("/", "")), Err(None));
    // Istio's own allow-nothing form.
    let spec_empty =
        policy("allow-nothing", "ALLOW", "").replace("spec:\n  action: ALLOW\n", "spec: {}\n");
    assert_eq!(decide(&authz(&spec_empty), &get("/", "")), Err(None));
    let deny = authz(&policy("deny-nothing", "DENY", ""));
    assert_eq!(decide(&deny, &get("/", "")), Ok(vec![]));
    // An empty rule matches everything.
    let allow_all = authz(&policy("allow-all", "ALLOW", "  rules:\n  - {}\n"));
    assert_eq!(decide(&allow_all, &get("/", "")), Ok(vec![]));
}

#[test]
fn audit_records_and_never_refuses() {
    let authz = authz(&policy(
        "audit-admin",
        "AUDIT",
        "  rules:\n  - to:\n    - operation:\n        paths: [\"/admin\"]\n",
    ));
    assert_eq!(
        decide(&authz, &get("/admin", "")),
        Ok(vec![
            "ns[istio-system]-policy[audit-admin]-rule[0]".to_owned()
        ])
    );
    assert_eq!(decide(&authz, &get("/other", "")), Ok(vec![]));
}

#[test]
fn request_principals_and_claims_from_the_verified_token() {
    let text = policy(
        "require-jwt",
        "ALLOW",
        "  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"testing@secure.istio.io/testing@secure.istio.io\"]\n    when:\n    - key: request.auth.claims[groups]\n      values: [\"group1\"]\n",
    ) + &policy(
        "deny-no-token",
        "DENY",
        "  rules:\n  - from:\n    - source:\n        notRequestPrincipals: [\"*\"]\n    to:\n    - operation:\n        paths: [\"/headers\"]\n",
    );
    let authz = authz(&text);
    let mut req = get("/headers", "");
    assert_eq!(
        decide(&authz, &req),
        Err(Some(
            "ns[istio-system]-policy[deny-no-token]-rule[0]".to_owned()
        ))
    );
    req.token = Some(token(
        "testing@secure.istio.io",
        "testing@secure.istio.io",
        r#"{"groups": ["group1", "group2"], "aud": "app"}"#,
    ));
    assert_eq!(decide(&authz, &req), Ok(vec![]));
    req.token = Some(token(
        "testing@secure.istio.io",
        "testing@secure.istio.io",
        r#"{"groups": ["group2"]}"#,
    ));
    assert_eq!(decide(&authz, &req), Err(None));
    req.token = Some(token(
        "other",
        "testing@secure.istio.io",
        r#"{"groups": "group1"}"#,
    ));
    assert_eq!(decide(&authz, &req), Err(None));
}

#[test]
fn nested_claims_audiences_and_presenter() {
    let authz = authz(&policy(
        "claims",
        "ALLOW",
        "  rules:\n  - when:\n    - key: request.auth.claims[nested][key1]\n      values: [\"value*\"]\n    - key: request.auth.audiences\n      values: [\"app\"]\n    - key: request.auth.presenter\n      notValues: [\"evil\"]\n    - key: request.auth.principal\n      values: [\"*\"]\n",
    ));
    let mut req = get("/", "");
    req.token = Some(token(
        "iss",
        "sub",
        r#"{"nested": {"key1": "value1"}, "aud": ["web", "app"], "azp": "client"}"#,
    ));
    assert_eq!(decide(&authz, &req), Ok(vec![]));
    req.token = Some(token(
        "iss",
        "sub",
        r#"{"nested": {"key1": "value1"}, "aud": ["web", "app"], "azp": "evil"}"#,
    ));
    assert_eq!(decide(&authz, &req), Err(None));
    req.token = Some(token(
        "iss",
        "sub",
        r#"{"nested": {"key1": "other"}, "aud": "app"}"#,
    ));
    assert_eq!(decide(&authz, &req), Err(None));
    req.token = None;
    assert_eq!(decide(&authz, &req), Err(None));
}

#[test]
fn principals_and_namespaces_from_the_client_certificate() {
    let authz = authz(&policy(
        "mtls",
        "ALLOW",
        "  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/default/sa/sleep\"]\n    - source:\n        namespaces: [\"prod\"]\n    - source:\n        principals: [\"client.example.com\"]\n",
    ));
    let mut req = get("/", "");
    assert_eq!(decide(&authz, &req), Err(None));
    req.client_cert = Some(
        "Hash=ab;Subject=\"CN=x\";URI=spiffe://cluster.local/ns/default/sa/sleep;DNS=client.example.com",
    );
    assert_eq!(decide(&authz, &req), Ok(vec![]));
    req.client_cert = Some("Hash=ab;Subject=\"CN=x\";URI=spiffe://cluster.local/ns/prod/sa/web");
    assert_eq!(decide(&authz, &req), Ok(vec![]));
    // The DNS SAN counts only without a URI SAN.
    req.client_cert = Some("Hash=ab;Subject=\"CN=x\";DNS=client.example.com");
    assert_eq!(decide(&authz, &req), Ok(vec![]));
    req.client_cert = Some(
        "Hash=ab;Subject=\"CN=x\";URI=spiffe://cluster.local/ns/dev/sa/x;DNS=client.example.com",
    );
    assert_eq!(decide(&authz, &req), Err(None));
    // A subject cannot pose as a SAN.
    req.client_cert = Some(
        "Hash=ab;Subject=\"CN=\\\";URI=spiffe://cluster.local/ns/default/sa/sleep\";URI=spiffe://x/ns/dev/sa/y",
    );
    assert_eq!(decide(&authz, &req), Err(None));
}

#[test]
fn ip_blocks_and_remote_ip_blocks_behind_trusted_proxies() {
    let authz = authz(&policy(
        "ips",
        "DENY",
        "  rules:\n  - from:\n    - source:\n        ipBlocks: [\"203.0.113.0/24\"]\n  - from:\n    - source:\n        remoteIpBlocks: [\"198.51.100.7\"]\n  - when:\n    - key: remote.ip\n      values: [\"2001:db8::/32\"]\n",
    ));
    let mut req = get("/", "x-forwarded-for: 198.51.100.7\r\n");
    assert_eq!(
        decide(&authz, &req),
        Ok(vec![]),
        "no trusted proxy: the peer"
    );
    req.trusted_proxies = 1;
    assert_eq!(
        decide(&authz, &req),
        Err(Some("ns[istio-system]-policy[ips]-rule[1]".to_owned()))
    );
    // One trusted proxy: the rightmost entry; what the client wrote left of it is not
    // believed.
    let mut req = get("/", "x-forwarded-for: 198.51.100.7, 192.0.2.99\r\n");
    req.trusted_proxies = 1;
    assert_eq!(decide(&authz, &req), Ok(vec![]));
    req.trusted_proxies = 2;
    assert!(decide(&authz, &req).is_err());
    // Fewer entries than trusted proxies: the peer.
    req.trusted_proxies = 3;
    assert_eq!(decide(&authz, &req), Ok(vec![]));
    let mut req = get("/", "x-forwarded-for: 2001:db8::5\r\n");
    req.trusted_proxies = 1;
    assert_eq!(
        decide(&authz, &req),
        Err(Some("ns[istio-system]-policy[ips]-rule[2]".to_owned()))
    );
    let mut req = get("/", "");
    req.peer = "203.0.113.77";
    assert_eq!(
        decide(&authz, &req),
        Err(Some("ns[istio-system]-policy[ips]-rule[0]".to_owned()))
    );
}

#[test]
fn hosts_ports_headers_and_sni() {
    let authz = authz(&policy(
        "to",
        "ALLOW",
        "  rules:\n  - to:\n    - operation:\n        hosts: [\"APP.example.com\", \"*.internal\"]\n        notPorts: [\"8080\"]\n    when:\n    - key: request.headers[X-Version]\n      values: [\"v1\", \"v2*\"]\n    - key: connection.sni\n      notValues: [\"blocked.example.com\"]\n    - key: destination.port\n      values: [\"443\", \"8443\"]\n",
    ));
    let mut req = get("/", "x-version: v2-beta\r\n");
    assert_eq!(decide(&authz, &req), Ok(vec![]));
    req.wire = req
        .wire
        .replace("Host: app.example.com", "Host: app.example.com:8443");
    req.port = 8443;
    assert_eq!(
        decide(&authz, &req),
        Ok(vec![]),
        "the host matches without its port"
    );
    req.port = 8080;
    assert_eq!(decide(&authz, &req), Err(None));
    let mut req = get("/", "x-version: v3\r\n");
    assert_eq!(decide(&authz, &req), Err(None));
    req.wire = get("/", "X-Version: v1\r\n")
        .wire
        .replace("app.example.com", "db.internal");
    assert_eq!(decide(&authz, &req), Ok(vec![]));
    req.sni = Some("blocked.example.com");
    assert_eq!(decide(&authz, &req), Err(None));
    assert_eq!(decide(&authz, &get("/", "")), Err(None), "no header");
}

#[test]
fn peer_principal_reads_the_first_uri_then_dns() {
    assert_eq!(
        principal_of("Hash=1;Subject=\"CN=a;URI=x\";DNS=d.example;URI=spiffe://td/ns/a/sa/b"),
        Some("spiffe://td/ns/a/sa/b")
    );
    assert_eq!(
        principal_of("Hash=1;Subject=\"\";DNS=d.example"),
        Some("d.example")
    );
    assert_eq!(principal_of("Hash=1;Subject=\"CN=a\""), None);
    assert_eq!(principal_of("Hash=1;Subject=\"unterminated"), None);
    assert_eq!(
        namespace("spiffe://cluster.local/ns/prod/sa/web"),
        Some("prod")
    );
    assert_eq!(namespace("client.example.com"), None);
}
