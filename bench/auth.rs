//! What end-user authentication and authorization cost a shard per request, in memory
//! (`ringress::auth_bench`, which calls `Authn::check` and `Authz::check` as the
//! shard does), with Istio's sample RS256 token (`src/auth/testdata/demo.jwt`) in
//! `Authorization: Bearer`, verified with its inline key set (RSA 2048):
//!
//! - `authn/cold_rs256`: the shard's token cache emptied before every check, so each
//!   one parses the token, checks issuer and time, verifies the RSA signature and keeps
//!   the result: what the first request of a token costs.
//! - `authn/warm_rs256`: the same token found in the cache (its `exp` still checked):
//!   what every later request of a keep-alive client costs.
//! - `authn/no_token`: a request without a token under the same rule (it passes with
//!   no identity; the policy below then refuses it).
//! - `authz/require_token`: `perf/compare.sh`'s jwt policy, one DENY rule
//!   `notRequestPrincipals: ["*"]`, for the request with the verified token.
//! - `authz/typical`: that DENY policy and an ALLOW policy of three rules (a workload
//!   principal; an admin host and path; then the token's principal with a method, path
//!   prefix and claim condition), the request matching the last: every rule is read.
//!
//! `perf/compare.sh --workloads keepalive,jwt` measures the same cost on a gateway
//! under load; this says how much of it is the check itself, and what the cache saves.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ringress::auth_bench::Checks;
use ringress::http::{RequestHead, parse_request};

const TOKEN: &str = include_str!("../src/auth/testdata/demo.jwt");
const JWKS: &str = include_str!("../src/auth/testdata/jwks.json");
const PRINCIPAL: &str = "testing@secure.istio.io/testing@secure.istio.io";

/// The RequestAuthentication and DENY policy of `perf/ringress-jwt.yaml`.
fn require_token() -> String {
    let jwks = JWKS.replace('\n', "");
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: bench-jwt
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '{jwks}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: bench-require-jwt
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  action: DENY
  rules:
  - from:
    - source:
        notRequestPrincipals: ["*"]
"#
    )
}

/// `require_token` and an ALLOW policy whose last rule the request matches.
fn typical() -> String {
    format!(
        r#"{}---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: bench-allow
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
  - to:
    - operation:
        hosts: ["admin.example.com"]
        paths: ["/admin/*"]
  - from:
    - source:
        requestPrincipals: ["{PRINCIPAL}"]
    to:
    - operation:
        methods: ["GET", "HEAD"]
        paths: ["/api/*", "/"]
    when:
    - key: request.auth.claims[foo]
      values: ["bar"]
"#,
        require_token()
    )
}

fn head(authorization: Option<&str>) -> RequestHead {
    let mut text = "GET / HTTP/1.1\r\nHost: bench.example.com\r\nUser-Agent: wrk\r\n".to_owned();
    if let Some(token) = authorization {
        text.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    text.push_str("\r\n");
    parse_request(text.as_bytes())
        .expect("bench head parses")
        .expect("bench head is whole")
}

fn benches(c: &mut Criterion) {
    let with_token = head(Some(TOKEN.trim()));
    let without = head(None);
    let mut checks = Checks::load(&require_token()).expect("bench config");
    let typical = Checks::load(&typical()).expect("typical config");

    // What each case must come to, checked before anything is timed.
    let passed = checks
        .authenticate(&with_token)
        .expect("the sample token passes");
    assert_eq!(passed.principal(), Some(PRINCIPAL));
    assert_eq!(checks.authorize(&with_token, &passed), Ok(()));
    assert_eq!(typical.authorize(&with_token, &passed), Ok(()));
    let anonymous = checks
        .authenticate(&without)
        .expect("no token passes authn");
    assert_eq!(anonymous.principal(), None);
    assert_eq!(checks.authorize(&without, &anonymous), Err(403));
    assert_eq!(typical.authorize(&without, &anonymous), Err(403));

    let mut group = c.benchmark_group("authn");
    group.bench_function("cold_rs256", |b| {
        b.iter(|| {
            checks.forget_tokens();
            black_box(checks.authenticate(black_box(&with_token))).is_ok()
        })
    });
    checks.authenticate(&with_token).expect("cached");
    group.bench_function("warm_rs256", |b| {
        b.iter(|| black_box(checks.authenticate(black_box(&with_token))).is_ok())
    });
    group.bench_function("no_token", |b| {
        b.iter(|| black_box(checks.authenticate(black_box(&without))).is_ok())
    });
    group.finish();

    let mut group = c.benchmark_group("authz");
    group.bench_function("require_token", |b| {
        b.iter(|| black_box(checks.authorize(black_box(&with_token), &passed)).is_ok())
    });
    group.bench_function("typical", |b| {
        b.iter(|| black_box(typical.authorize(black_box(&with_token), &passed)).is_ok())
    });
    group.finish();
}

criterion_group!(auth_benches, benches);
criterion_main!(auth_benches);
