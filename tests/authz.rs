//! `AuthorizationPolicy` against the real binary, with curl: today's Istio forms with
//! `RequestAuthentication` (a JWT required by a DENY policy, an ALLOW policy on the
//! token's principal and claims), principals from MUTUAL client certificates, and
//! address blocks behind a trusted proxy — over HTTP/1.1 and HTTP/2, with Envoy's
//! answers (`403 RBAC: access denied`), its access log details and the counters.

mod common;

use common::*;
use ringress::demo::httpbin;

/// Istio's sample token and key set, kept in the repository as downloaded.
const DEMO_JWT: &str = include_str!("../src/auth/testdata/demo.jwt");
const JWKS: &str = include_str!("../src/auth/testdata/jwks.json");

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: istio-system\nspec:\n  selector:\n    matchLabels:\n      istio: ingressgateway\n{spec}"
    )
}

fn request_authentication() -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\n  namespace: istio-system\nspec:\n  jwtRules:\n  - issuer: testing@secure.istio.io\n    jwks: '{}'\n",
        JWKS.trim().replace('\'', "''")
    )
}

/// A plain HTTP gateway for [`HTTPBIN`] on httpbin, with `extra` documents.
fn http_gateway(
    dir: &TempDir,
    extra: &[String],
    args: &[&str],
) -> (u16, Gateway, httpbin::Httpbin) {
    let upstream = httpbin();
    let port = free_port();
    let mut documents = vec![
        gateway_doc("gw", &[http_server(port, &[HTTPBIN])]),
        virtual_service(
            "vs",
            &[HTTPBIN],
            &["gw"],
            &route_all("httpbin", SERVICE_PORT),
        ),
        service_entry("httpbin", SERVICE_PORT, &[upstream.addr()]),
    ];
    documents.extend_from_slice(extra);
    let gw = Gateway::start(dir, &docs(&documents), args);
    (port, gw, upstream)
}

/// The two ways a client reaches a plain port: HTTP/1.1, and HTTP/2 with prior
/// knowledge (h2c).
const PLAIN_CLIENTS: [&[&str]; 2] = [&[], &["--http2-prior-knowledge"]];

fn counter(gw: &Gateway, family: &str, outcome: &str) -> u64 {
    let port = gw.admin_port.expect("an admin endpoint");
    let metrics = curl_admin(port, "/stats/prometheus", &[]).text();
    metrics
        .lines()
        .filter(|l| l.starts_with(family) && l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_jwt_required_by_deny_and_allowed_by_its_principal_and_claims() {
    require("curl");
    let dir = TempDir::new("authz-jwt");
    let deny_without_token = policy(
        "require-jwt",
        "  action: DENY\n  rules:\n  - from:\n    - source:\n        notRequestPrincipals: [\"*\"]\n    to:\n    - operation:\n        paths: [\"/headers\", \"/status/*\"]\n",
    );
    let allow_sample = policy(
        "allow-sample",
        "  action: ALLOW\n  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"testing@secure.istio.io/testing@secure.istio.io\"]\n    when:\n    - key: request.auth.claims[foo]\n      values: [\"bar\"]\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        paths: [\"/ip\"]\n",
    );
    let (port, mut gw, _upstream) = http_gateway(
        &dir,
        &[request_authentication(), deny_without_token, allow_sample],
        &[
            "--access-log-format",
            "%RESPONSE_CODE% %RESPONSE_CODE_DETAILS% %DYNAMIC_METADATA(istio_authn:request.auth.principal)% %REQ(:PATH)%",
        ],
    );
    let bearer = format!("Authorization: Bearer {}", DEMO_JWT.trim());
    for client in PLAIN_CLIENTS {
        // No token: the DENY policy refuses, as Envoy's RBAC filter does.
        let r = curl_http(HTTPBIN, port, "/headers", &strs_of(client, &[]));
        assert_eq!(r.status, 403, "{client:?} {r:?}");
        assert_eq!(r.text(), "RBAC: access denied", "{client:?}");
        assert!(
            r.header("content-type")
                .is_some_and(|v| v.starts_with("text/plain")),
            "{r:?}"
        );
        // The sample token: its principal and `foo: bar` claim are allowed.
        let r = curl_http(
            HTTPBIN,
            port,
            "/headers",
            &strs_of(client, &["-H", &bearer]),
        );
        assert_eq!(r.status, 200, "{client:?} {r:?}\n{}", gw.log_text());
        // An invalid token (its signature no longer base64url) never reaches
        // authorization: 401 from authentication.
        let tampered = format!("{}x", bearer);
        let r = curl_http(
            HTTPBIN,
            port,
            "/headers",
            &strs_of(client, &["-H", &tampered]),
        );
        assert_eq!(r.status, 401, "{client:?} {r:?}");
        // Outside the DENY policy's paths no token is needed, but an ALLOW policy
        // exists, so only what one allows passes.
        let r = curl_http(HTTPBIN, port, "/ip", &strs_of(client, &[]));
        assert_eq!(r.status, 200, "{client:?} {r:?}");
        let r = curl_http(HTTPBIN, port, "/get", &strs_of(client, &[]));
        assert_eq!((r.status, r.text().as_str()), (403, "RBAC: access denied"));
        let r = curl_http(HTTPBIN, port, "/ip", &strs_of(client, &["-X", "POST"]));
        assert_eq!(r.status, 403, "{client:?} {r:?}");
    }
    // Envoy's details name the refusing rule, or `none` when no ALLOW rule matched;
    // the counters say the same by reason. Access-log lines are written in batches per
    // shard: each client's is awaited.
    let clients = PLAIN_CLIENTS.len();
    for line in [
        "rbac_access_denied_matched_policy[ns[istio-system]-policy[require-jwt]-rule[0]] - /headers",
        "rbac_access_denied_matched_policy[none] - /get",
        // The principal of the verified token, where Istio's authn filter records it.
        "200 via_upstream testing@secure.istio.io/testing@secure.istio.io /headers",
        "200 via_upstream - /ip",
        // A refused token: Envoy's jwt_authn details.
        "401 jwt_authn_access_denied{Jwt_signature_is_an_invalid_Base64url_encoded} - /headers",
    ] {
        gw.wait_log_count(line, clients);
    }
    assert_eq!(
        counter(&gw, "ringress_authz_requests_total", "denied_by_policy"),
        2
    );
    assert_eq!(
        counter(
            &gw,
            "ringress_authz_requests_total",
            "denied_no_allow_match"
        ),
        4
    );
    assert_eq!(counter(&gw, "ringress_authn_requests_total", "allowed"), 2);
    assert_eq!(
        counter(&gw, "ringress_authn_requests_total", "jwt_malformed"),
        2
    );
}

/// `client` arguments followed by `more`.
fn strs_of<'a>(client: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    client.iter().chain(more).copied().collect()
}

#[test]
fn principals_from_mutual_client_certificates_over_http1_and_http2() {
    require("curl");
    let dir = TempDir::new("authz-mtls");
    let pki = pki(&dir);
    let upstream = httpbin();
    let port = free_port();
    let sleep = pki
        .issue(
            &pki::LeafSpec::client("sleep", "sleep.example.com")
                .with_san("spiffe://cluster.local/ns/default/sa/sleep"),
        )
        .expect("a client certificate with a SPIFFE id");
    let other = pki
        .issue(&pki::LeafSpec::client("other", "other.example.com"))
        .expect("a client certificate with a DNS name");
    let servers = [https_server(
        port,
        "https-mutual",
        &[HTTPBIN],
        &mutual_tls(&pki, "MUTUAL"),
    )];
    let allow = policy(
        "allow-sleep",
        "  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/default/sa/sleep\"]\n  - from:\n    - source:\n        namespaces: [\"prod\"]\n    to:\n    - operation:\n        paths: [\"/ip\"]\n  - when:\n    - key: source.principal\n      values: [\"other.example.com\"]\n    - key: connection.sni\n      values: [\"httpbin.example.com\"]\n    to:\n    - operation:\n        paths: [\"/get\"]\n",
    );
    let config = format!(
        "{}---\n{allow}",
        backend_config(&servers, &[HTTPBIN], &[upstream.addr()])
    );
    let gw = Gateway::start(&dir, &config, &[]);
    for client in [&["--http1.1"][..], &["--http2"][..]] {
        let with = |leaf: &pki::IssuedLeaf, path: &str| {
            let mut args = https_url(&pki, port, path);
            args.extend(client_cert_args(&leaf.cert, &leaf.key));
            args.extend(client.iter().map(|s| s.to_string()));
            curl(&strs(&args))
        };
        let r = with(&sleep, "/headers");
        assert_eq!(r.status, 200, "{client:?} {r:?}\n{}", gw.log_text());
        // The DNS SAN is the identity only without a URI SAN.
        let r = with(&other, "/headers");
        assert_eq!((r.status, r.text().as_str()), (403, "RBAC: access denied"));
        let r = with(&other, "/get");
        assert_eq!(r.status, 200, "{client:?} {r:?}");
        let r = with(&sleep, "/get");
        assert_eq!(
            r.status, 200,
            "{client:?}: the first rule allows it everywhere"
        );
    }
}

#[test]
fn ip_blocks_and_remote_ip_blocks_behind_a_trusted_proxy() {
    require("curl");
    let dir = TempDir::new("authz-ip");
    let deny_remote = policy(
        "deny-remote",
        "  action: DENY\n  rules:\n  - from:\n    - source:\n        remoteIpBlocks: [\"203.0.113.0/24\"]\n",
    );
    let allow_loopback = policy(
        "allow-loopback",
        "  action: ALLOW\n  rules:\n  - from:\n    - source:\n        ipBlocks: [\"127.0.0.0/8\", \"::1\"]\n        notRemoteIpBlocks: [\"198.51.100.66\"]\n",
    );
    let (port, gw, _upstream) = http_gateway(
        &dir,
        &[deny_remote, allow_loopback],
        &["--trusted-proxies", "1"],
    );
    for client in PLAIN_CLIENTS {
        let r = curl_http(HTTPBIN, port, "/status/200", &strs_of(client, &[]));
        assert_eq!(r.status, 200, "{client:?} {r:?}\n{}", gw.log_text());
        // The address one trusted proxy put last is the client's.
        let xff = "x-forwarded-for: 10.9.9.9, 203.0.113.5";
        let r = curl_http(HTTPBIN, port, "/status/200", &strs_of(client, &["-H", xff]));
        assert_eq!((r.status, r.text().as_str()), (403, "RBAC: access denied"));
        // What the client wrote left of it is not believed.
        let xff = "x-forwarded-for: 203.0.113.5, 10.9.9.9";
        let r = curl_http(HTTPBIN, port, "/status/200", &strs_of(client, &["-H", xff]));
        assert_eq!(r.status, 200, "{client:?} {r:?}");
        let xff = "x-forwarded-for: 198.51.100.66";
        let r = curl_http(HTTPBIN, port, "/status/200", &strs_of(client, &["-H", xff]));
        assert_eq!(r.status, 403, "{client:?} {r:?}");
    }
    let log = gw.log_text();
    assert!(
        log.contains(
            "rbac_access_denied_matched_policy[ns[istio-system]-policy[deny-remote]-rule[0]]"
        ),
        "{log}"
    );
}

#[test]
fn check_prints_issuers_with_their_key_state_and_the_policies_in_order() {
    let dir = TempDir::new("authz-check");
    let upstream = httpbin();
    let unreachable = closed_port();
    let remote = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: remote\nspec:\n  jwtRules:\n  - issuer: https://idp.example.com\n    jwksUri: https://127.0.0.1:{unreachable}/jwks.json\n    timeout: 2s\n"
    );
    let documents = [
        gateway_doc("gw", &[http_server(free_port(), &[HTTPBIN])]),
        virtual_service(
            "vs",
            &[HTTPBIN],
            &["gw"],
            &route_all("httpbin", SERVICE_PORT),
        ),
        service_entry("httpbin", SERVICE_PORT, &[upstream.addr()]),
        request_authentication(),
        remote,
        policy(
            "allow-get",
            "  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        notPaths: [\"/admin*\"]\n    when:\n    - key: request.auth.claims[groups]\n      values: [\"dev\"]\n",
        ),
        policy(
            "deny-ips",
            "  action: DENY\n  rules:\n  - from:\n    - source:\n        ipBlocks: [\"10.0.0.0/8\"]\n",
        ),
    ];
    let config = dir.write("gateway.yaml", docs(&documents));
    let (code, stdout, stderr) = check(&config);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("2 RequestAuthentication, 2 AuthorizationPolicy)"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("keys: inline jwks, kids [\"DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ\"]"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "keys: https://127.0.0.1:{unreachable}/jwks.json: FETCH FAILED"
        )),
        "{stdout}"
    );
    // DENY policies decide first, so they are listed first.
    let deny = stdout.find("DENY istio-system/deny-ips").expect(&stdout);
    let allow = stdout.find("ALLOW istio-system/allow-get").expect(&stdout);
    assert!(deny < allow, "{stdout}");
    assert!(
        stdout.contains(
            "rule[0] to methods=[GET] paths!=[/admin*]; when request.auth.claims[groups]=[dev]"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("rule[0] from ipBlocks=[10.0.0.0/8]"),
        "{stdout}"
    );
}
