//! End-user authentication against the real binary: the "Securing Gateways with HTTPS"
//! JWT step verbatim (its v1alpha1 Policy, the Istio sample token and key set served
//! over HTTPS by a server the test starts, trusted through `SSL_CERT_FILE`), and
//! `RequestAuthentication` with Istio's answers case by case, over HTTP/1.1 and
//! HTTP/2, with curl.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;

/// Istio's sample token and key set (`security/tools/jwt/samples/`), kept in the
/// repository byte for byte as the walkthrough downloads them.
const DEMO_JWT: &str = include_str!("../src/auth/testdata/demo.jwt");
const JWKS: &str = include_str!("../src/auth/testdata/jwks.json");
const ISSUER: &str = "testing@secure.istio.io";
const KID: &str = "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ";

/// A python HTTPS server for the files of a directory, with a certificate for
/// `localhost` from the test PKI; killed on drop.
struct JwksServer {
    child: Child,
    port: u16,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn jwks_server(dir: &TempDir, pki: &pki::Pki) -> JwksServer {
    require("python3");
    let leaf = pki
        .issue(&pki::LeafSpec::server("localhost"))
        .expect("a certificate for localhost");
    let files = dir.join("jwks-files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("jwks.json"), JWKS).unwrap();
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/jwks_server.py");
    let mut child = Command::new("python3")
        .arg(tool)
        .arg("--dir")
        .arg(&files)
        .arg("--cert")
        .arg(&leaf.cert)
        .arg("--key")
        .arg(&leaf.key)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the JWKS server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the JWKS server did not start: {line:?}"));
    JwksServer { child, port }
}

/// The walkthrough's gateway, VirtualService (`/status`, `/headers`) and ServiceEntry,
/// plus `extra` documents.
fn config(port: u16, upstream: std::net::SocketAddr, extra: &[String]) -> String {
    let http = format!(
        "  - match:
    - uri:
        prefix: /status
    - uri:
        prefix: /headers
{}",
        route_to("httpbin")
    );
    let mut documents = vec![
        gateway_doc("httpbin-gateway", &[http_server(port, &[HTTPBIN])]),
        virtual_service("httpbin", &[HTTPBIN], &["httpbin-gateway"], &http),
        service_entry("httpbin", SERVICE_PORT, &[upstream]),
    ];
    documents.extend_from_slice(extra);
    docs(&documents)
}

/// Starts the gateway with `SSL_CERT_FILE` set to the test root.
fn start(dir: &TempDir, pki: &pki::Pki, yaml: &str) -> Gateway {
    let config = dir.write("gateway.yaml", yaml);
    let root = pki.root_cert.to_string_lossy().into_owned();
    Gateway::try_start_file_env(
        dir,
        &config,
        &listener_ports(yaml),
        &[],
        &[("SSL_CERT_FILE", root.as_str())],
    )
    .unwrap_or_else(|log| panic!("{log}"))
}

/// `curl -I`-like request to the gateway with `Host: httpbin.example.com`.
fn get(port: u16, path: &str, extra: &[&str]) -> Curl {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut args = vec!["-H", "Host: httpbin.example.com", url.as_str()];
    args.extend_from_slice(extra);
    curl(&args)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// The sample token with one byte of its signature changed.
fn tampered() -> String {
    let (signed, signature) = DEMO_JWT.trim().rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    format!("{signed}.{first}{}", &signature[1..])
}

/// An unsigned token with `header` and `payload` (a signature of junk): enough for
/// every check Envoy makes before the signature.
fn crafted(header: &str, payload: &str) -> String {
    format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    )
}

#[test]
fn securing_gateways_jwt_step_answers_401_then_200() {
    require("curl");
    let dir = TempDir::new("authn-seed");
    let pki = pki(&dir);
    let server = jwks_server(&dir, &pki);
    let upstream = httpbin();
    let port = free_port();
    // The walkthrough's Policy, with the jwksUri pointed at the test's server.
    let policy = format!(
        r#"apiVersion: "authentication.istio.io/v1alpha1"
kind: "Policy"
metadata:
  name: "ingressgateway"
  namespace: istio-system
spec:
  targets:
  - name: istio-ingressgateway
  origins:
  - jwt:
      issuer: "testing@secure.istio.io"
      jwksUri: "https://localhost:{}/jwks.json"
  principalBinding: USE_ORIGIN
"#,
        server.port
    );
    let gw = start(&dir, &pki, &config(port, upstream.addr(), &[policy]));

    // Step 3: no token.
    let r = get(port, "/status/200", &["-I"]);
    assert_eq!(r.status, 401, "{r:?}\n{}", gw.log_text());
    assert_eq!(r.header("content-length"), Some("29"), "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain"), "{r:?}");
    assert_eq!(r.header("www-authenticate"), None, "{r:?}");
    let r = get(port, "/status/200", &[]);
    assert_eq!(r.text(), "Origin authentication failed.");

    // Step 5: the sample token.
    let token = bearer(DEMO_JWT.trim());
    let r = get(port, "/status/200", &["-I", "--header", &token]);
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.log_text());
    // The token reaches the upstream (v1alpha1 forwarded it).
    let r = get(port, "/headers", &["--header", &token]);
    assert!(r.text().contains("Authorization"), "{}", r.text());

    // A token that fails is the same 401.
    let r = get(port, "/status/200", &["--header", &bearer(&tampered())]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (401, "Origin authentication failed.")
    );

    // Over HTTP/2 (h2c prior knowledge) too.
    let r = get(port, "/status/200", &["--http2-prior-knowledge"]);
    assert_eq!(r.status, 401, "{r:?}");
    let r = get(
        port,
        "/status/200",
        &["--http2-prior-knowledge", "--header", &token],
    );
    assert_eq!(r.status, 200, "{r:?}");

    // The key state is visible.
    let admin = gw.admin_port.unwrap();
    let dump = curl(&[&format!("http://127.0.0.1:{admin}/config_dump")]).text();
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["jwks"][0]["issuer"], ISSUER, "{dump}");
    assert_eq!(dump["jwks"][0]["kids"][0], KID, "{dump}");
    assert!(dump["jwks"][0]["last_error"].is_null(), "{dump}");
}

fn request_authentication(rules: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
{rules}"
    )
}

#[test]
fn request_authentication_answers_as_envoy_case_by_case() {
    require("curl");
    let dir = TempDir::new("authn-ra");
    let pki = pki(&dir);
    let server = jwks_server(&dir, &pki);
    let upstream = httpbin();
    let port = free_port();
    let rules = format!(
        "  - issuer: {ISSUER}
    jwksUri: https://localhost:{}/jwks.json
    outputClaimToHeaders:
    - header: x-jwt-foo
      claim: foo
  - issuer: aud@example.com
    jwks: '{}'
    audiences: [bookinfo]
",
        server.port,
        JWKS.trim().replace('\n', "")
    );
    let gw = start(
        &dir,
        &pki,
        &config(port, upstream.addr(), &[request_authentication(&rules)]),
    );
    let realm = format!("Bearer realm=\"http://{HTTPBIN}/status/200\", error=\"invalid_token\"");

    // No token: passes with no identity; a client's own x-jwt-foo never reaches the upstream.
    let r = get(port, "/headers", &["-H", "x-jwt-foo: forged"]);
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.log_text());
    assert!(!r.text().contains("forged"), "{}", r.text());

    // The sample token: passes; Authorization is removed, the claim is added.
    let token = bearer(DEMO_JWT.trim());
    let r = get(port, "/headers", &["--header", &token]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!r.text().contains("Authorization"), "{}", r.text());
    assert!(r.text().contains("\"X-Jwt-Foo\": \"bar\""), "{}", r.text());
    // The access_token query parameter is read too.
    let r = get(
        port,
        &format!("/status/200?access_token={}", DEMO_JWT.trim()),
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");

    let header = format!(r#"{{"alg":"RS256","kid":"{KID}","typ":"JWT"}}"#);
    let cases: Vec<(String, u16, &str)> = vec![
        (tampered(), 401, "Jwt verification fails"),
        (
            format!("{}x", DEMO_JWT.trim()),
            401,
            "Jwt signature is an invalid Base64url encoded",
        ),
        (
            "not-a-token".into(),
            401,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
        (
            crafted(r#"{"alg":"none"}"#, &format!(r#"{{"iss":"{ISSUER}"}}"#)),
            401,
            "Jwt header [alg] is not supported",
        ),
        (
            crafted(
                &format!(r#"{{"alg":"HS256","kid":"{KID}"}}"#),
                &format!(r#"{{"iss":"{ISSUER}"}}"#),
            ),
            401,
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
        (
            crafted(
                r#"{"alg":"RS256","kid":"unknown"}"#,
                &format!(r#"{{"iss":"{ISSUER}"}}"#),
            ),
            401,
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
        (
            crafted(&header, &format!(r#"{{"iss":"{ISSUER}","exp":1000}}"#)),
            401,
            "Jwt is expired",
        ),
        (
            crafted(
                &header,
                &format!(r#"{{"iss":"{ISSUER}","nbf":4685989700}}"#),
            ),
            401,
            "Jwt not yet valid",
        ),
        (
            crafted(&header, r#"{"iss":"someone@else"}"#),
            401,
            "Jwt issuer is not configured",
        ),
        (
            crafted(&header, r#"{"iss":"aud@example.com","aud":"other"}"#),
            403,
            "Audiences in Jwt are not allowed",
        ),
    ];
    for (token, status, body) in &cases {
        let r = get(port, "/status/200", &["--header", &bearer(token)]);
        assert_eq!(
            (r.status, r.text().as_str()),
            (*status, *body),
            "{token}: {r:?}"
        );
        assert_eq!(r.header("www-authenticate"), Some(realm.as_str()), "{r:?}");
        assert_eq!(r.header("content-type"), Some("text/plain"), "{r:?}");
    }
    // The same answers over HTTP/2.
    let r = get(
        port,
        "/status/200",
        &["--http2-prior-knowledge", "--header", &bearer(&cases[0].0)],
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (401, "Jwt verification fails"),
        "{r:?}"
    );
    // A second token that fails fails the request, even beside a good one.
    let r = get(
        port,
        &format!("/status/200?access_token={}", cases[0].0),
        &["--header", &token],
    );
    assert_eq!(r.status, 401, "{r:?}");
    // CORS preflights pass without a token check, as Envoy's do.
    let r = get(
        port,
        "/status/200",
        &[
            "-X",
            "OPTIONS",
            "-H",
            "Origin: https://app.example.com",
            "-H",
            "Access-Control-Request-Method: GET",
            "--header",
            &bearer("not-a-token"),
        ],
    );
    assert_ne!(r.status, 401, "{r:?}");
    assert_ne!(r.status, 0, "{r:?}");
}

#[test]
fn a_jwks_outage_fails_its_tokens_closed_and_serves_the_rest() {
    require("curl");
    let dir = TempDir::new("authn-outage");
    let pki = pki(&dir);
    let upstream = httpbin();
    let port = free_port();
    let rules = format!(
        "  - issuer: {ISSUER}
    jwksUri: https://localhost:{}/jwks.json
    timeout: 1s
",
        closed_port()
    );
    let gw = start(
        &dir,
        &pki,
        &config(port, upstream.addr(), &[request_authentication(&rules)]),
    );
    let r = get(port, "/status/200", &["--header", &bearer(DEMO_JWT.trim())]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (401, "Jwks remote fetch is failed"),
        "{r:?}"
    );
    let r = get(port, "/status/200", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let admin = gw.admin_port.unwrap();
    let dump = curl(&[&format!("http://127.0.0.1:{admin}/config_dump")]).text();
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert!(dump["jwks"][0]["kids"].is_null(), "{dump}");
    assert!(
        dump["jwks"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("GET https://localhost")),
        "{dump}"
    );
}
