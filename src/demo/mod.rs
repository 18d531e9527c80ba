//! `ringress demo`: everything a newcomer needs to see the gateway work in one command.
//! Before the gateway starts, it generates a PKI ([`pki`]), starts a built-in
//! httpbin-like upstream ([`httpbin`]) on a loopback port, writes an Istio-format
//! `gateway.yaml` routing to it, prints curl commands, then runs the gateway on that file
//! through the same [`crate::control::run`] entry point as `ringress run`.
//!
//! The pieces are public because the integration tests and benchmarks use them too:
//! [`pki::generate`] for certificate fixtures and [`httpbin::spawn`] as the upstream.

pub mod httpbin;
pub mod pki;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The host the demo's `httpbin` VirtualService serves (HTTP and HTTPS).
pub(crate) const HTTPBIN_HOST: &str = "httpbin.example.com";
/// The second HTTPS host, with its own certificate on the same port.
pub(crate) const BOOKINFO_HOST: &str = "bookinfo.com";
/// The ServiceEntry host and port the VirtualServices route to.
pub(crate) const UPSTREAM_SERVICE: &str = "httpbin";
pub(crate) const UPSTREAM_SERVICE_PORT: u16 = 8000;

/// What `ringress demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where to write certificates and `gateway.yaml`; `None` means a new directory
    /// `ringress-demo-<pid>` under the system temporary directory.
    pub dir: Option<PathBuf>,
    /// The Gateway's plain HTTP port.
    pub http_port: u16,
    /// The Gateway's HTTPS port (both hosts, certificate chosen by SNI).
    pub https_port: u16,
    pub shards: crate::control::ShardCount,
    /// The admin endpoint's address (`None`: off).
    pub admin: Option<std::net::SocketAddr>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            dir: None,
            http_port: 8080,
            https_port: 8443,
            shards: crate::control::ShardCount::Auto,
            admin: Some(crate::control::DEFAULT_ADMIN),
        }
    }
}

/// A prepared demo: certificates written, upstream running, configuration written.
/// Dropping it stops the upstream.
#[derive(Debug)]
pub(crate) struct Demo {
    pub(crate) pki: pki::Pki,
    pub(crate) upstream: httpbin::Httpbin,
    /// `DIR/gateway.yaml`.
    pub(crate) config: PathBuf,
    pub(crate) http_port: u16,
    pub(crate) https_port: u16,
}

impl Demo {
    /// What `ringress demo` prints before the gateway starts.
    pub(crate) fn banner(&self) -> String {
        banner(
            &self.pki,
            &self.config,
            self.upstream.addr(),
            self.http_port,
            self.https_port,
        )
    }
}

/// Generates the PKI (hosts [`HTTPBIN_HOST`], [`BOOKINFO_HOST`]) into the directory
/// (made absolute, so the paths in `gateway.yaml` and the banner work from anywhere),
/// starts the upstream on 127.0.0.1 and writes `DIR/gateway.yaml`.
pub(crate) fn prepare(opts: &DemoOptions) -> anyhow::Result<Demo> {
    if opts.http_port == 0 || opts.https_port == 0 {
        anyhow::bail!(
            "demo ports must be fixed numbers (http port {}, https port {})",
            opts.http_port,
            opts.https_port
        );
    }
    if opts.http_port == opts.https_port {
        anyhow::bail!(
            "the demo's http and https ports are both {}: one port cannot serve both",
            opts.http_port
        );
    }
    let dir = opts.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ringress-demo-{}", std::process::id()))
    });
    let dir = std::path::absolute(&dir)
        .with_context(|| format!("resolving the demo directory {}", dir.display()))?;
    let pki = pki::generate(&dir, &[HTTPBIN_HOST, BOOKINFO_HOST])
        .with_context(|| format!("generating demo certificates in {}", dir.display()))?;
    let upstream = httpbin::spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .context("starting the built-in httpbin upstream on 127.0.0.1")?;
    let yaml = gateway_yaml(&pki, upstream.addr(), opts.http_port, opts.https_port);
    let config = dir.join("gateway.yaml");
    std::fs::write(&config, yaml).with_context(|| format!("writing {}", config.display()))?;
    Ok(Demo {
        pki,
        upstream,
        config,
        http_port: opts.http_port,
        https_port: opts.https_port,
    })
}

/// `ringress demo`: [`prepare`], print the banner, then run the gateway on the demo's
/// configuration until it stops; returns the gateway's result.
pub fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let demo = prepare(&opts)?;
    print!("{}", demo.banner());
    crate::control::run(crate::control::RunOptions {
        shards: opts.shards,
        admin: opts.admin,
        ..crate::control::RunOptions::new(demo.config.clone())
    })
}

/// The demo's configuration: one Gateway, two VirtualServices and a ServiceEntry, in
/// Istio's own format, with certificate paths into the PKI's directory and the
/// ServiceEntry pointing at `upstream`.
pub(crate) fn gateway_yaml(
    pki: &pki::Pki,
    upstream: SocketAddr,
    http_port: u16,
    https_port: u16,
) -> String {
    let path = |p: &Path| quoted(&p.to_string_lossy());
    let mut y = String::from(
        "# Written by `ringress demo`: the Istio secure-ingress walkthrough, served locally.\n",
    );
    y.push_str(&document_head("Gateway", GATEWAY_NAME));
    y.push_str("  selector:\n    istio: ingressgateway\n  servers:\n");
    push_server(&mut y, http_port, "http", "HTTP", "", HTTPBIN_HOST);
    for (name, host) in [
        ("https-httpbin", HTTPBIN_HOST),
        ("https-bookinfo", BOOKINFO_HOST),
    ] {
        let tls = format!(
            "    tls:
      mode: SIMPLE
      serverCertificate: {cert}
      privateKey: {key}
",
            cert = path(&pki.cert(host)),
            key = path(&pki.key(host)),
        );
        push_server(&mut y, https_port, name, "HTTPS", &tls, host);
    }
    push_virtual_service(&mut y, "httpbin", HTTPBIN_HOST, &["/status", "/delay"]);
    push_virtual_service(&mut y, "bookinfo", BOOKINFO_HOST, &["/"]);
    y.push_str("---\n");
    y.push_str(&document_head("ServiceEntry", "httpbin"));
    let _ = write!(
        y,
        "  hosts:
  - {UPSTREAM_SERVICE}
  ports:
  - number: {UPSTREAM_SERVICE_PORT}
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
  - address: {ip}
    ports:
      http: {port}
",
        ip = upstream.ip(),
        port = upstream.port(),
    );
    y
}

/// The Gateway the demo's VirtualServices attach to.
const GATEWAY_NAME: &str = "httpbin-gateway";

/// The lines every Istio document starts with, up to `spec:` (the integration tests'
/// YAML builders start their documents with it too).
pub fn document_head(kind: &str, name: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: {kind}
metadata:
  name: {name}
spec:
"
    )
}

/// One `servers[]` entry for `host`; `tls` is the server's `tls:` block (or empty).
fn push_server(y: &mut String, port: u16, name: &str, protocol: &str, tls: &str, host: &str) {
    let _ = write!(
        y,
        "  - port:
      number: {port}
      name: {name}
      protocol: {protocol}
{tls}    hosts:
    - {host}
"
    );
}

/// A VirtualService `name` for `host` on the demo Gateway, routing the URI `prefixes`
/// to the upstream service.
fn push_virtual_service(y: &mut String, name: &str, host: &str, prefixes: &[&str]) {
    y.push_str("---\n");
    y.push_str(&document_head("VirtualService", name));
    let _ = write!(
        y,
        "  hosts:
  - {host}
  gateways:
  - {GATEWAY_NAME}
  http:
  - match:
"
    );
    for prefix in prefixes {
        let _ = writeln!(y, "    - uri:\n        prefix: {prefix}");
    }
    let _ = write!(
        y,
        "    route:
    - destination:
        host: {UPSTREAM_SERVICE}
        port:
          number: {UPSTREAM_SERVICE_PORT}
"
    );
}

/// What `ringress demo` prints before the gateway starts: where the files are and curl
/// commands to paste.
pub(crate) fn banner(
    pki: &pki::Pki,
    config: &Path,
    upstream: SocketAddr,
    http_port: u16,
    https_port: u16,
) -> String {
    let dir = pki.dir.display();
    let cacert = shell_word(&pki.ca_chain.to_string_lossy());
    let cert = shell_word(&pki.client_cert().to_string_lossy());
    let key = shell_word(&pki.client_key().to_string_lossy());
    let https = |host: &str, path: &str| {
        format!(
            "curl --resolve {host}:{https_port}:127.0.0.1 --cacert {cacert} https://{host}:{https_port}{path}"
        )
    };
    format!(
        "ringress demo
  certificates: {dir} (root-ca.crt, intermediate-ca.crt, ca-chain.pem, one .crt/.key per host, client.crt/.key)
  config:       {config}
  upstream:     built-in httpbin on {upstream} (the ServiceEntry `httpbin:{UPSTREAM_SERVICE_PORT}`)

Try it (in another terminal):
  # the teapot, over TLS with the demo CA:
  {teapot}
  # not routed by the VirtualService (only /status and /delay are): 404
  {not_routed} -i
  # plain HTTP on port {http_port}:
  curl -H 'Host: {h}' http://127.0.0.1:{http_port}/status/200 -i
  # a second host on the same port, its own certificate chosen by SNI (every path routed):
  {bookinfo}
  # add -v to any of these to see the handshake and the certificate the gateway sent.
  # for mutual TLS (after switching a server to mode: MUTUAL with caCertificates: ca-chain.pem):
  #   curl ... --cert {cert} --key {key}

",
        config = config.display(),
        teapot = https(HTTPBIN_HOST, "/status/418"),
        not_routed = https(HTTPBIN_HOST, "/headers"),
        h = HTTPBIN_HOST,
        bookinfo = https(BOOKINFO_HOST, "/headers"),
    )
}

/// A double-quoted string that is both a JSON string and a YAML double-quoted scalar:
/// quotes, backslashes and control characters escaped. Used for the paths in
/// `gateway.yaml` and for the strings of [`httpbin`]'s JSON.
pub(crate) fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// [`push_quoted`] into a new string.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_quoted(&mut out, s);
    out
}

/// A word a POSIX shell reads back unchanged: as is when plain, else single-quoted.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=,@%".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Scratch directories and openssl helpers for the demo's tests.

    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

    /// A fresh directory under the system temporary directory, removed on drop.
    pub(crate) struct ScratchDir(PathBuf);

    impl ScratchDir {
        pub(crate) fn new(tag: &str) -> ScratchDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "ringress-test-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            ScratchDir(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    pub(crate) fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(path)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    pub(crate) fn key(path: &Path) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_file(path).unwrap()
    }

    pub(crate) fn roots(path: &Path) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(path) {
            roots.add(cert).unwrap();
        }
        Arc::new(roots)
    }

    /// Verifies `chain` (leaf first) for `host` with rustls' webpki verifier trusting
    /// only `root`.
    pub(crate) fn verify_server(
        root: &Path,
        chain: &Path,
        host: &str,
    ) -> Result<(), rustls::Error> {
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(root), provider())
                .build()
                .unwrap();
        let chain = certs(chain);
        let name = ServerName::try_from(host.to_owned()).unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    pub(crate) fn verify_client(root: &Path, chain: &Path) -> Result<(), rustls::Error> {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots(root), provider())
                .build()
                .unwrap();
        let chain = certs(chain);
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map(|_| ())
    }

    /// Whether `openssl` runs; prints a note when it does not.
    pub(crate) fn have_openssl() -> bool {
        let found = Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("note: openssl is not on PATH; skipping the openssl cross-check");
        }
        found
    }

    /// `openssl verify -purpose P -CAfile DIR/root-ca.crt -untrusted
    /// DIR/intermediate-ca.crt LEAF`, where LEAF is the first certificate of `chain`.
    pub(crate) fn openssl_verify(dir: &Path, chain: &Path, purpose: &str) -> bool {
        let text = std::fs::read_to_string(chain).unwrap();
        let end = "-----END CERTIFICATE-----";
        let cut = text.find(end).unwrap() + end.len();
        let leaf = dir.join(".leaf-under-test.pem");
        std::fs::write(&leaf, format!("{}\n", &text[..cut])).unwrap();
        let output = Command::new("openssl")
            .arg("verify")
            .arg("-purpose")
            .arg(purpose)
            .arg("-CAfile")
            .arg(dir.join("root-ca.crt"))
            .arg("-untrusted")
            .arg(dir.join("intermediate-ca.crt"))
            .arg(&leaf)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&leaf);
        output.status.success()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{
        ScratchDir, have_openssl, openssl_verify, verify_client, verify_server,
    };
    use super::*;
    use std::process::Command;

    #[derive(serde::Deserialize)]
    struct Doc {
        kind: String,
        metadata: Meta,
        spec: serde::de::IgnoredAny,
    }

    #[derive(serde::Deserialize)]
    struct Meta {
        name: String,
    }

    #[test]
    fn gateway_yaml_is_istio_shaped_and_points_at_the_files() {
        let scratch = ScratchDir::new("demo-yaml");
        let pki = pki::generate(scratch.path(), &[HTTPBIN_HOST, BOOKINFO_HOST]).unwrap();
        let upstream: SocketAddr = "127.0.0.1:41234".parse().unwrap();
        let yaml = gateway_yaml(&pki, upstream, 8080, 8443);
        let docs: Vec<Doc> = serde_saphyr::from_multiple(&yaml).unwrap();
        let kinds: Vec<(String, String)> = docs
            .into_iter()
            .map(|d| {
                let _ = d.spec;
                (d.kind, d.metadata.name)
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("Gateway", "httpbin-gateway"),
                ("VirtualService", "httpbin"),
                ("VirtualService", "bookinfo"),
                ("ServiceEntry", "httpbin"),
            ]
            .map(|(k, n)| (k.to_owned(), n.to_owned()))
        );
        let cert = pki.cert(BOOKINFO_HOST);
        assert!(yaml.contains(&format!("serverCertificate: \"{}\"", cert.display())));
        assert!(yaml.contains("      http: 41234\n"));
        assert!(yaml.contains("number: 8080"));
        assert!(yaml.contains("        prefix: /delay\n"));
    }

    #[test]
    fn banner_has_paste_ready_commands() {
        let scratch = ScratchDir::new("demo-banner");
        let pki = pki::generate(scratch.path(), &[HTTPBIN_HOST, BOOKINFO_HOST]).unwrap();
        let text = banner(
            &pki,
            &scratch.path().join("gateway.yaml"),
            "127.0.0.1:4000".parse().unwrap(),
            8080,
            8443,
        );
        let expected = format!(
            "curl --resolve httpbin.example.com:8443:127.0.0.1 --cacert {} https://httpbin.example.com:8443/status/418",
            pki.ca_chain.display()
        );
        assert!(text.contains(&expected), "{text}");
        assert!(text.contains("https://bookinfo.com:8443/"));
        assert!(text.contains("http://127.0.0.1:8080/"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quoted(r#"/a b/"c"\d"#), r#""/a b/\"c\"\\d""#);
        assert_eq!(quoted("\r\u{7f}"), r#""\r\u007f""#);
        assert_eq!(
            shell_word("/tmp/ringress-demo-1/ca-chain.pem"),
            "/tmp/ringress-demo-1/ca-chain.pem"
        );
        assert_eq!(shell_word("/tmp/it's here"), r"'/tmp/it'\''s here'");
    }

    #[test]
    fn run_refuses_clashing_ports() {
        let err = run(DemoOptions {
            http_port: 9000,
            https_port: 9000,
            ..DemoOptions::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("9000"), "{err}");
    }

    #[test]
    fn prepare_writes_everything_and_starts_the_upstream() {
        use std::io::{Read, Write};
        let scratch = ScratchDir::new("demo-prepare");
        let demo = prepare(&DemoOptions {
            dir: Some(scratch.path().join("demo")),
            ..DemoOptions::default()
        })
        .unwrap();
        assert!(demo.pki.dir.is_absolute());
        assert_eq!(demo.config, scratch.path().join("demo/gateway.yaml"));
        let yaml = std::fs::read_to_string(&demo.config).unwrap();
        let port = demo.upstream.addr().port();
        assert!(yaml.contains(&format!("      http: {port}\n")), "{yaml}");
        assert!(demo.pki.cert(HTTPBIN_HOST).exists());
        assert!(demo.pki.key(BOOKINFO_HOST).exists());
        assert!(demo.banner().contains(&demo.config.display().to_string()));
        let mut stream = std::net::TcpStream::connect(demo.upstream.addr()).unwrap();
        stream
            .write_all(b"GET /status/418 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 418 "), "{response}");
    }

    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gen-certs.sh")
    }

    #[test]
    fn gen_certs_script_writes_a_layout_openssl_and_rustls_accept() {
        if !have_openssl() {
            return;
        }
        let scratch = ScratchDir::new("gen-certs");
        let dir = scratch.path().join("certs");
        let output = Command::new("bash")
            .arg(script())
            .arg(&dir)
            .args(["httpbin.example.com", "bookinfo.com", "*.wild.example.com"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for host in [
            "httpbin.example.com",
            "bookinfo.com",
            "_wildcard.wild.example.com",
        ] {
            let cert = dir.join(format!("{host}.crt"));
            assert!(openssl_verify(&dir, &cert, "sslserver"), "{host}");
            let text = std::fs::read_to_string(&cert).unwrap();
            assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 2, "{host}");
            let key = std::fs::read_to_string(dir.join(format!("{host}.key"))).unwrap();
            assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{host}");
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(format!("{host}.key")))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{host}");
        }
        // rustls (webpki) accepts what openssl wrote, and checks the names.
        let root = dir.join("root-ca.crt");
        verify_server(
            &root,
            &dir.join("httpbin.example.com.crt"),
            "httpbin.example.com",
        )
        .unwrap();
        verify_server(
            &root,
            &dir.join("_wildcard.wild.example.com.crt"),
            "x.wild.example.com",
        )
        .unwrap();
        assert!(
            verify_server(&root, &dir.join("bookinfo.com.crt"), "httpbin.example.com").is_err()
        );
        verify_client(&root, &dir.join("client.crt")).unwrap();
        assert!(verify_client(&root, &dir.join("other-client.crt")).is_err());
        assert!(openssl_verify(&dir, &dir.join("client.crt"), "sslclient"));
        assert!(!openssl_verify(
            &dir,
            &dir.join("other-client.crt"),
            "sslclient"
        ));
        let chain = std::fs::read_to_string(dir.join("ca-chain.pem")).unwrap();
        let intermediate = std::fs::read_to_string(dir.join("intermediate-ca.crt")).unwrap();
        let root = std::fs::read_to_string(dir.join("root-ca.crt")).unwrap();
        assert_eq!(chain, format!("{intermediate}{root}"));
        // The SAN is the host, and the wildcard's too.
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(dir.join("_wildcard.wild.example.com.crt"))
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&text.stdout).contains("DNS:*.wild.example.com"));
    }

    #[test]
    fn gen_certs_script_prints_usage_without_hosts() {
        let output = Command::new("bash").arg(script()).output().unwrap();
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains("usage:"));
    }
}
