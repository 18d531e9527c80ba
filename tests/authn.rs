//! End-user authentication against the real binary: the "Securing Gateways with HTTPS"
//! JWT step verbatim (its v1alpha1 Policy, the Istio sample token and key set served
//! over HTTPS by a server the test starts, trusted through `SSL_CERT_FILE`), and
//! `RequestAuthentication` with Istio's answers case by case, over HTTP/1.1 and
//! HTTP/2, with curl. Beyond the sample token, tests sign their own (an RSA key made
//! with openssl at test time, [`RsaKey`]): a key set rotated on refresh, keys found
//! through OpenID discovery, and tokens as large as a request head may be.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

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
    /// The directory served: files written here are served from the next request on.
    files: PathBuf,
}

impl JwksServer {
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// Serves `contents` at `/name` from now on; written aside and renamed, so no
    /// request sees half a file.
    fn serve(&self, name: &str, contents: &str) {
        let path = self.files.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let aside = self.files.join(".writing");
        std::fs::write(&aside, contents).unwrap();
        std::fs::rename(&aside, &path).unwrap();
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// [`JwksServer`] serving the Istio sample key set at `/jwks.json`.
fn jwks_server(dir: &TempDir, pki: &pki::Pki) -> JwksServer {
    files_server(dir, pki, JWKS)
}

/// [`JwksServer`] serving `jwks` at `/jwks.json`.
fn files_server(dir: &TempDir, pki: &pki::Pki, jwks: &str) -> JwksServer {
    require("python3");
    let leaf = pki
        .issue(&pki::LeafSpec::server("localhost"))
        .expect("a certificate for localhost");
    let files = dir.join("jwks-files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("jwks.json"), jwks).unwrap();
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
    JwksServer { child, port, files }
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
    start_with(dir, pki, yaml, &[])
}

/// [`start`] with `extra` arguments for `ringress run`.
fn start_with(dir: &TempDir, pki: &pki::Pki, yaml: &str, extra: &[&str]) -> Gateway {
    let config = dir.write("gateway.yaml", yaml);
    let root = pki.root_cert.to_string_lossy().into_owned();
    Gateway::try_start_file_env(
        dir,
        &config,
        &listener_ports(yaml),
        extra,
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

/// An RSA key made with openssl for one test: its public JWK for a key set, and RS256
/// tokens signed with it (`openssl dgst -sha256 -sign`, RSASSA-PKCS1-v1_5).
struct RsaKey {
    pem: PathBuf,
    kid: String,
}

impl RsaKey {
    fn generate(dir: &TempDir, kid: &str) -> RsaKey {
        require("openssl");
        let pem = dir.join(&format!("{kid}.key.pem"));
        let mut command = Command::new("openssl");
        command
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .args(["-pkeyopt", "rsa_keygen_pubexp:65537", "-out"])
            .arg(&pem);
        let out = run_with_timeout(command, b"", CLIENT_TIMEOUT);
        assert!(out.status.success(), "openssl genpkey: {out:?}");
        RsaKey {
            pem,
            kid: kid.into(),
        }
    }

    /// The public key as a JWK (`n` read from `openssl rsa -modulus`, `e` 65537).
    fn jwk(&self) -> String {
        let mut command = Command::new("openssl");
        command
            .args(["rsa", "-noout", "-modulus", "-in"])
            .arg(&self.pem);
        let out = run_with_timeout(command, b"", CLIENT_TIMEOUT);
        assert!(out.status.success(), "openssl rsa -modulus: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let hex = text.trim().strip_prefix("Modulus=").expect("Modulus=HEX");
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        format!(
            r#"{{"kty":"RSA","kid":"{}","alg":"RS256","use":"sig","n":"{}","e":"AQAB"}}"#,
            self.kid,
            URL_SAFE_NO_PAD.encode(n)
        )
    }

    /// A token of `claims` signed with this key, its `kid` in the header when `with_kid`.
    fn sign(&self, claims: &str, with_kid: bool) -> String {
        let header = match with_kid {
            true => format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{}"}}"#, self.kid),
            false => r#"{"alg":"RS256","typ":"JWT"}"#.to_owned(),
        };
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let mut command = Command::new("openssl");
        command.args(["dgst", "-sha256", "-sign"]).arg(&self.pem);
        let out = run_with_timeout(command, signed.as_bytes(), CLIENT_TIMEOUT);
        assert!(out.status.success(), "openssl dgst -sign: {out:?}");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(out.stdout))
    }
}

/// A key set document of `jwks` (JWKs).
fn key_set(jwks: &[String]) -> String {
    format!(r#"{{"keys":[{}]}}"#, jwks.join(","))
}

/// Claims of `issuer` for subject `sub`, valid for an hour from now.
fn claims(issuer: &str, sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        r#"{{"iss":"{issuer}","sub":"{sub}","iat":{now},"exp":{}}}"#,
        now + 3600
    )
}

/// `token`'s answer on `/status/200`: the status and body.
fn answer(port: u16, token: &str) -> (u16, String) {
    let r = get(port, "/status/200", &["--header", &bearer(token)]);
    (r.status, r.text())
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
    // The same in the metrics: no keys, the fetch failing, never a success.
    let metrics = curl(&[&format!("http://127.0.0.1:{admin}/stats/prometheus")]).text();
    for line in [
        "ringress_jwks_keys{source=\"https://localhost:",
        "ringress_jwks_fetch_failing{source=\"https://localhost:",
        "ringress_jwks_last_success_timestamp_seconds{source=\"https://localhost:",
    ] {
        let sample = metrics
            .lines()
            .find(|l| l.starts_with(line))
            .expect(&metrics);
        let want = if line.contains("failing") { " 1" } else { " 0" };
        assert!(sample.ends_with(want), "{sample}");
    }
}

#[test]
fn a_key_set_rotated_at_the_source_is_picked_up_on_refresh() {
    require("curl");
    let dir = TempDir::new("authn-rotate");
    let pki = pki(&dir);
    let key_a = RsaKey::generate(&dir, "key-a");
    let key_b = RsaKey::generate(&dir, "key-b");
    let server = files_server(&dir, &pki, &key_set(&[key_a.jwk()]));
    let upstream = httpbin();
    let port = free_port();
    let issuer = "rotation@ringress.test";
    let rules = format!(
        "  - issuer: {issuer}
    jwksUri: {}
",
        server.url("/jwks.json")
    );
    let gw = start_with(
        &dir,
        &pki,
        &config(port, upstream.addr(), &[request_authentication(&rules)]),
        &["--jwks-refresh-interval", "1"],
    );
    let claims = claims(issuer, "rotation");
    let signed_a = key_a.sign(&claims, true);
    let signed_a_no_kid = key_a.sign(&claims, false);
    let signed_b = key_b.sign(&claims, true);

    assert_eq!(answer(port, &signed_a).0, 200, "{}", gw.log_text());
    assert_eq!(answer(port, &signed_a_no_kid).0, 200);
    let no_key = (
        401,
        "Jwks doesn't have key to match kid or alg from Jwt".to_owned(),
    );
    assert_eq!(answer(port, &signed_b), no_key);

    // The source now serves key B only; a refresh (every second) takes it.
    server.serve("jwks.json", &key_set(&[key_b.jwk()]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while answer(port, &signed_b).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "key B never verified after the rotation: {:?}\n{}",
            answer(port, &signed_b),
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A's kid is no longer in the set; without a kid, B is tried and does not verify.
    assert_eq!(answer(port, &signed_a), no_key);
    assert_eq!(
        answer(port, &signed_a_no_kid),
        (401, "Jwt verification fails".to_owned())
    );
    let admin = gw.admin_port.unwrap();
    let dump = curl(&[&format!("http://127.0.0.1:{admin}/config_dump")]).text();
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(
        dump["jwks"][0]["kids"],
        serde_json::json!(["key-b"]),
        "{dump}"
    );
}

#[test]
fn keys_are_found_through_the_issuers_openid_discovery_document() {
    require("curl");
    let dir = TempDir::new("authn-discovery");
    let pki = pki(&dir);
    let key = RsaKey::generate(&dir, "discovered");
    let stranger = RsaKey::generate(&dir, "discovered-elsewhere");
    let server = files_server(&dir, &pki, &key_set(&[key.jwk()]));
    // The issuer is the server's URL; its discovery document names the key set.
    let issuer = server.url("");
    server.serve(
        ".well-known/openid-configuration",
        &format!(
            r#"{{"issuer":"{issuer}","jwks_uri":"{}"}}"#,
            server.url("/jwks.json")
        ),
    );
    let upstream = httpbin();
    let port = free_port();
    let rules = format!("  - issuer: {issuer}\n");
    let gw = start(
        &dir,
        &pki,
        &config(port, upstream.addr(), &[request_authentication(&rules)]),
    );
    let claims = claims(&issuer, "discovery");
    let r = get(
        port,
        "/headers",
        &["--header", &bearer(&key.sign(&claims, true))],
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.log_text());
    // A key of the same kid that the discovered set does not hold fails.
    let forged = RsaKey {
        pem: stranger.pem.clone(),
        kid: key.kid.clone(),
    };
    assert_eq!(
        answer(port, &forged.sign(&claims, true)),
        (401, "Jwt verification fails".to_owned())
    );

    let admin = gw.admin_port.unwrap();
    let dump = curl(&[&format!("http://127.0.0.1:{admin}/config_dump")]).text();
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let source = &dump["jwks"][0];
    assert_eq!(source["issuer"], issuer.as_str(), "{dump}");
    assert_eq!(
        source["source"],
        server.url("/.well-known/openid-configuration").as_str(),
        "{dump}"
    );
    assert_eq!(
        source["jwks_uri"],
        server.url("/jwks.json").as_str(),
        "{dump}"
    );
    assert_eq!(source["kids"], serde_json::json!(["discovered"]), "{dump}");
    assert!(source["last_error"].is_null(), "{dump}");
}

#[test]
fn huge_tokens_are_answered_and_the_gateway_keeps_serving() {
    require("curl");
    let dir = TempDir::new("authn-huge");
    let pki = pki(&dir);
    let key = RsaKey::generate(&dir, "huge");
    let upstream = httpbin();
    let port = free_port();
    let issuer = "huge@ringress.test";
    let rules = format!(
        "  - issuer: {issuer}
    jwks: '{}'
",
        key_set(&[key.jwk()])
    );
    let mut gw = start(
        &dir,
        &pki,
        &config(port, upstream.addr(), &[request_authentication(&rules)]),
    );
    // A claim that makes the token about 60 KiB: the head stays under the 64 KiB limit.
    let padded = |bytes: usize| {
        let claims = claims(issuer, "huge");
        let pad = format!(r#","pad":"{}"}}"#, "x".repeat(bytes * 3 / 4));
        key.sign(&claims.replacen('}', &pad, 1), true)
    };
    let token = padded(60 * 1024);
    assert!(
        (58 * 1024..63 * 1024).contains(&token.len()),
        "{}",
        token.len()
    );
    let tampered = {
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let first = if signature.starts_with('A') { 'B' } else { 'A' };
        format!("{signed}.{first}{}", &signature[1..])
    };
    for http2 in [false, true] {
        let flag: &[&str] = if http2 {
            &["--http2-prior-knowledge"]
        } else {
            &[]
        };
        let ask = |token: &str| {
            let mut args = flag.to_vec();
            let header = bearer(token);
            args.extend(["--header", header.as_str()]);
            get(port, "/status/200", &args)
        };
        let r = ask(&token);
        assert_eq!(r.status, 200, "http2 {http2}: {r:?}\n{}", gw.log_text());
        let r = ask(&tampered);
        assert_eq!(
            (r.status, r.text().as_str()),
            (401, "Jwt verification fails"),
            "http2 {http2}: {r:?}"
        );
    }
    // Past the head limit: 431, never a hang (curl's own timeout) or a crash; the
    // gateway serves the next request. Over HTTP/1.1 only: curl (nghttp2) will not
    // send an HTTP/2 header block this large, it refuses the stream itself.
    let beyond = padded(70 * 1024);
    let r = get(port, "/status/200", &["--header", &bearer(&beyond)]);
    assert_eq!(r.status, 431, "{r:?}\n{}", gw.log_text());
    gw.assert_running();
    assert_eq!(
        answer(port, &key.sign(&claims(issuer, "after"), true)).0,
        200
    );
    let r = get(port, "/status/200", &[]);
    assert_eq!(r.status, 200, "{r:?}");
}
