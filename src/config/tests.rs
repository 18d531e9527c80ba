//! Tests of `config::load`: every walkthrough manifest and example under `config/`
//! loads into the expected model, and every kind of mistake is reported with its exact
//! message (file, line, document, resource, field path, problem).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const FILE: &str = "/etc/ringress/gw.yaml";

pub(super) fn load_ok(text: &str) -> Config {
    match load_str(text, Path::new(FILE)) {
        Ok(c) => c,
        Err(e) => panic!("expected the configuration to load, got:\n{e}"),
    }
}

/// All issue lines.
fn errors(text: &str) -> Vec<String> {
    match load_str(text, Path::new(FILE)) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

pub(super) fn error(text: &str) -> String {
    let all = errors(text);
    assert_eq!(all.len(), 1, "expected exactly one issue, got {all:#?}");
    all.into_iter().next().unwrap_or_default()
}

/// A Gateway document whose `spec.servers` is `servers` (indented by two spaces).
fn gateway(servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  servers:\n{servers}"
    )
}

const HTTP_SERVER: &str = "  - port:\n      number: 80\n      name: http\n      protocol: HTTP\n    hosts:\n    - \"*\"\n";

/// A VirtualService document on gateway `gw` whose `spec.http` is `http`.
fn virtual_service(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs\nspec:\n  hosts:\n  - example.com\n  gateways:\n  - gw\n  http:\n{http}"
    )
}

/// Gateway + VirtualService, the VirtualService being document 2, starting at line 13.
fn with_routes(http: &str) -> String {
    format!("{}---\n{}", gateway(HTTP_SERVER), virtual_service(http))
}

/// The rest of an `http[]` rule after its first line.
const ROUTE: &str = "    route:\n    - destination:\n        host: httpbin\n";

/// A whole `http[]` rule.
const RULE: &str = "  - route:\n    - destination:\n        host: httpbin\n";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/config/testdata")
        .join(name)
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

fn load_path(path: &Path) -> Config {
    match load(path) {
        Ok(c) => c,
        Err(e) => panic!("{} does not load:\n{e}", path.display()),
    }
}

// ---------------------------------------------------------------------------------------
// Walkthrough manifests and examples

#[test]
fn every_walkthrough_manifest_loads() {
    for name in [
        "ingress-http.yaml",
        "ingress-https.yaml",
        "ingress-https-only.yaml",
        "secure-simple.yaml",
        "secure-mutual.yaml",
        "secure-multi-host.yaml",
        "sds-simple.yaml",
        "sds-multi-host.yaml",
        "sds-mutual.yaml",
        "bookinfo-credential.yaml",
    ] {
        let config = load_path(&fixture(name));
        assert!(!config.gateways.is_empty(), "{name}");
        assert!(!config.virtual_services.is_empty(), "{name}");
    }
}

#[test]
fn control_ingress_http_step() {
    let config = load_path(&fixture("ingress-http.yaml"));
    let gw = &config.gateways[0];
    assert_eq!(gw.name, "httpbin-gateway");
    assert_eq!(gw.origin.document, 1);
    assert_eq!(gw.origin.kind, "Gateway");
    let s = &gw.servers[0];
    assert_eq!(
        (s.port, s.port_name.as_str(), s.protocol),
        (80, "http", Protocol::Http)
    );
    assert_eq!(
        s.hosts,
        vec![HostPattern::Exact("httpbin.example.com".into())]
    );
    assert!(s.tls.is_none() && !s.https_redirect && s.bind.is_none());

    let vs = &config.virtual_services[0];
    assert_eq!(vs.origin.document, 2);
    assert_eq!(vs.gateways, vec!["httpbin-gateway".to_owned()]);
    let rule = &vs.http[0];
    assert_eq!(rule.matches.len(), 2);
    assert!(matches!(&rule.matches[0].uri, Some(StringMatch::Prefix(p)) if p == "/status"));
    assert!(matches!(&rule.matches[1].uri, Some(StringMatch::Prefix(p)) if p == "/delay"));
    let RouteAction::Route(dests) = &rule.action else {
        panic!("not a route: {:?}", rule.action)
    };
    assert_eq!(
        dests,
        &vec![WeightedDestination {
            host: "httpbin".into(),
            port: Some(8000),
            subset: None,
            weight: 100
        }]
    );
}

#[test]
fn relative_certificate_paths_resolve_against_the_file() {
    let path = fixture("ingress-https.yaml");
    let config = load_path(&path);
    let tls = config.gateways[0].servers[1].tls.as_ref().unwrap();
    let dir = path.parent().unwrap();
    assert_eq!(tls.mode, TlsMode::Simple);
    assert_eq!(
        tls.credential,
        Credential::Files {
            cert: dir.join("certs/tls.crt"),
            key: dir.join("certs/tls.key"),
        }
    );
    // Absolute paths stay as written.
    let config = load_path(&fixture("ingress-https-only.yaml"));
    let tls = config.gateways[0].servers[0].tls.as_ref().unwrap();
    assert_eq!(
        tls.credential,
        Credential::Files {
            cert: "/etc/istio/ingressgateway-certs/tls.crt".into(),
            key: "/etc/istio/ingressgateway-certs/tls.key".into(),
        }
    );
    // From memory, `source` is the base.
    let config = load_ok(&gateway(
        "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.com]\n    tls: {mode: SIMPLE, serverCertificate: c.pem, privateKey: k.pem}\n",
    ));
    let tls = config.gateways[0].servers[0].tls.as_ref().unwrap();
    assert_eq!(
        tls.credential,
        Credential::Files {
            cert: "/etc/ringress/c.pem".into(),
            key: "/etc/ringress/k.pem".into(),
        }
    );
}

#[test]
fn mutual_tls_with_files_and_with_credentials() {
    let path = fixture("secure-mutual.yaml");
    let config = load_path(&path);
    let tls = config.gateways[0].servers[0].tls.as_ref().unwrap();
    assert_eq!(tls.mode, TlsMode::Mutual);
    assert_eq!(
        tls.ca_certificates,
        Some(path.parent().unwrap().join("certs/ca-chain.cert.pem"))
    );

    let config = load_path(&fixture("sds-mutual.yaml"));
    let tls = config.gateways[0].servers[0].tls.as_ref().unwrap();
    assert_eq!(tls.mode, TlsMode::Mutual);
    assert_eq!(
        tls.credential,
        Credential::Named("httpbin-credential".into())
    );
    assert_eq!(tls.ca_certificates, None);
}

#[test]
fn sds_multi_host_uses_one_credential_per_server() {
    let config = load_path(&fixture("sds-multi-host.yaml"));
    let servers = &config.gateways[0].servers;
    let creds: Vec<&Credential> = servers
        .iter()
        .map(|s| &s.tls.as_ref().unwrap().credential)
        .collect();
    assert_eq!(
        creds,
        vec![
            &Credential::Named("httpbin-credential".into()),
            &Credential::Named("helloworld-credential".into())
        ]
    );
    assert_eq!(config.virtual_services.len(), 2);
}

#[test]
fn namespaces_are_kept_and_stripped_from_references() {
    let config = load_path(&fixture("bookinfo-credential.yaml"));
    assert_eq!(config.gateways[0].namespace.as_deref(), Some("default"));
    assert_eq!(
        config.virtual_services[0].gateways,
        vec!["bookinfo-gateway".to_owned()]
    );
    assert_eq!(config.gateways[1].name, "bookinfo-gateway-mutual");
}

#[test]
fn example_httpbin_gateway() {
    let path = example("httpbin-gateway.yaml");
    let config = load_path(&path);
    let servers = &config.gateways[0].servers;
    assert_eq!(servers.len(), 2);
    assert_eq!(
        (servers[0].port, servers[0].protocol),
        (8080, Protocol::Http)
    );
    assert_eq!(
        (servers[1].port, servers[1].protocol),
        (8443, Protocol::Https)
    );
    let dir = path.parent().unwrap();
    assert_eq!(
        servers[1].tls.as_ref().unwrap().credential,
        Credential::Files {
            cert: dir.join("certs/httpbin.example.com.crt"),
            key: dir.join("certs/httpbin.example.com.key"),
        }
    );
    let se = &config.service_entries[0];
    assert_eq!(se.hosts, vec!["httpbin".to_owned()]);
    assert_eq!(se.resolution, Resolution::Static);
    assert_eq!(se.ports[0].number, 8000);
    assert_eq!(se.endpoints[0].address, "127.0.0.1");
}

#[test]
fn example_multi_host() {
    let config = load_path(&example("multi-host.yaml"));
    let servers = &config.gateways[0].servers;
    assert_eq!(servers.len(), 2);
    assert!(servers.iter().all(|s| s.port == 8443));
    assert_eq!(config.virtual_services.len(), 2);
    assert_eq!(config.service_entries.len(), 2);
}

#[test]
fn example_https_only() {
    let config = load_path(&example("https-only.yaml"));
    let servers = &config.gateways[0].servers;
    assert_eq!(servers.len(), 1);
    let tls = servers[0].tls.as_ref().unwrap();
    assert_eq!(tls.min_protocol_version, Some(TlsVersion::V1_2));
}

#[test]
fn example_passthrough() {
    let config = load_path(&example("passthrough.yaml"));
    let protocols: Vec<Protocol> = config.gateways[0]
        .servers
        .iter()
        .map(|s| s.protocol)
        .collect();
    assert_eq!(protocols, [Protocol::TlsPassthrough, Protocol::Tcp]);
    let (nginx, postgres) = (&config.virtual_services[0], &config.virtual_services[1]);
    assert_eq!(
        nginx.tls[0].matches[0].sni_hosts,
        [HostPattern::Exact("nginx.example.com".into())]
    );
    assert_eq!(postgres.tcp[0].route[0].host, "postgres");
}

#[test]
fn example_mutual() {
    let config = load_path(&example("mutual.yaml"));
    let tls = config.gateways[0].servers[0].tls.as_ref().unwrap();
    assert_eq!(tls.mode, TlsMode::Mutual);
    assert!(
        tls.ca_certificates
            .as_ref()
            .unwrap()
            .ends_with("certs/root-ca.crt")
    );
}

#[test]
fn example_credential() {
    let config = load_path(&example("credential.yaml"));
    let tls = config.gateways[0].servers[0].tls.as_ref().unwrap();
    assert_eq!(
        tls.credential,
        Credential::Named("httpbin-credential".to_owned())
    );
}

// ---------------------------------------------------------------------------------------
// Documents

#[test]
fn empty_documents_are_skipped_but_counted() {
    let text = format!(
        "---\n---\n# nothing here\n---\n{}\n---\n",
        gateway(HTTP_SERVER)
    );
    let config = load_ok(&text);
    assert_eq!(config.gateways[0].origin.document, 3);

    let text = format!("---\n\n---\n{}", gateway("  - port: {number: 0}\n"));
    assert_eq!(
        errors(&text),
        vec![
            "/etc/ringress/gw.yaml:10:12: document 2 (Gateway gw): spec.servers[0].port.number: invalid value 0: a port number is 1 to 65535",
            "/etc/ringress/gw.yaml:10:5: document 2 (Gateway gw): spec.servers[0].port.protocol: required field is missing",
            "/etc/ringress/gw.yaml:10:5: document 2 (Gateway gw): spec.servers[0].hosts: a server needs at least one host; use \"*\" for any",
        ]
    );
}

#[test]
fn document_without_leading_marker_is_document_one() {
    let text = format!("{}---\n{}", gateway(HTTP_SERVER), virtual_service(RULE));
    let config = load_ok(&text);
    assert_eq!(config.virtual_services[0].origin.document, 2);
}

#[test]
fn empty_file_is_an_error() {
    assert_eq!(
        error(""),
        "/etc/ringress/gw.yaml: no Gateway, VirtualService, ServiceEntry or DestinationRule in the file"
    );
    assert_eq!(
        error("---\n# comment\n---\n"),
        "/etc/ringress/gw.yaml: no Gateway, VirtualService, ServiceEntry or DestinationRule in the file"
    );
}

#[test]
fn malformed_yaml_reports_line_and_column() {
    let text =
        "apiVersion: networking.istio.io/v1\nkind: Gateway\n---\nkind: [Gateway\nmetadata: x\n";
    let e = error(text);
    assert!(e.starts_with("/etc/ringress/gw.yaml:"), "{e}");
    assert!(e.contains(": document 2: invalid YAML: "), "{e}");
    let e2 = load_str(text, Path::new(FILE)).unwrap_err();
    let issue = &e2.issues()[0];
    let (line, column) = issue.line.expect("position");
    assert!(line >= 4, "{issue:?}");
    assert!(column >= 1);

    let e = error("a: b: c\n");
    assert!(e.starts_with("/etc/ringress/gw.yaml:1:"), "{e}");
    assert!(e.contains("document 1: invalid YAML"), "{e}");

    let e = error("a:\n  - x\n y: 1\n");
    assert!(e.contains("invalid YAML"), "{e}");
}

#[test]
fn duplicate_keys_are_an_error() {
    let e = error("kind: Gateway\nkind: VirtualService\n");
    assert!(e.contains("invalid YAML"), "{e}");
}

#[test]
fn document_that_is_not_a_mapping() {
    assert_eq!(
        error("- a\n- b\n"),
        "/etc/ringress/gw.yaml:1:1: document 1: expected a mapping, found a list"
    );
}

#[test]
fn unsupported_kinds_and_api_versions() {
    let text = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: strict\nspec: {}\n";
    assert_eq!(
        error(text),
        "/etc/ringress/gw.yaml:2:1: document 1 (PeerAuthentication strict): kind: kind PeerAuthentication is not supported yet; accepted: Gateway, VirtualService, ServiceEntry, DestinationRule, RequestAuthentication, AuthorizationPolicy, Policy (authentication.istio.io/v1alpha1)"
    );
    // Each kind under its own API group.
    let text = "apiVersion: networking.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\nspec: {}\n";
    assert_eq!(
        error(text),
        "/etc/ringress/gw.yaml:1:1: document 1 (RequestAuthentication jwt): apiVersion: apiVersion networking.istio.io/v1 is not supported for RequestAuthentication; accepted: security.istio.io/v1, security.istio.io/v1beta1"
    );
    // A Kubernetes Service from the same page.
    let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: httpbin\n  labels:\n    app: httpbin\nspec:\n  ports:\n  - name: http\n    port: 8000\n";
    assert!(error(text).ends_with("kind: kind Service is not supported yet; accepted: Gateway, VirtualService, ServiceEntry, DestinationRule, RequestAuthentication, AuthorizationPolicy, Policy (authentication.istio.io/v1alpha1)"));

    let text = gateway(HTTP_SERVER).replace("networking.istio.io/v1", "networking.istio.io/v2");
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:1:1: document 1 (Gateway gw): apiVersion: apiVersion networking.istio.io/v2 is not supported for Gateway; accepted: networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3"
    );
    for v in API_VERSIONS {
        let text = gateway(HTTP_SERVER).replace("networking.istio.io/v1\n", &format!("{v}\n"));
        load_ok(&text);
    }
}

#[test]
fn missing_header_fields() {
    assert_eq!(
        error("apiVersion: networking.istio.io/v1\nmetadata:\n  name: x\nspec: {}\n"),
        "/etc/ringress/gw.yaml:1:1: document 1 (x): kind: required field is missing"
    );
    assert_eq!(
        error("kind: Gateway\nmetadata:\n  name: x\nspec: {}\n"),
        "/etc/ringress/gw.yaml:1:1: document 1 (Gateway x): apiVersion: required field is missing"
    );
    assert_eq!(
        error(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  namespace: x\nspec: {}\n"
        ),
        "/etc/ringress/gw.yaml:3:1: document 1 (Gateway): metadata.name: required field is missing"
    );
    assert_eq!(
        error("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: x\n"),
        "/etc/ringress/gw.yaml:1:1: document 1 (Gateway x): spec: required field is missing"
    );
}

#[test]
fn metadata_labels_and_annotations_are_ignored_other_fields_are_not() {
    let text = gateway(HTTP_SERVER).replace(
        "  name: gw\n",
        "  name: gw\n  namespace: edge\n  labels: {app: x}\n  annotations: {a: b}\n",
    );
    assert_eq!(
        load_ok(&text).gateways[0].namespace.as_deref(),
        Some("edge")
    );
    let text = gateway(HTTP_SERVER).replace("  name: gw\n", "  name: gw\n  uid: 1234\n");
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:5:3: document 1 (Gateway gw): metadata.uid: unknown field `uid`; accepted: name, namespace, labels, annotations"
    );
}

#[test]
fn duplicate_names_in_one_kind() {
    let text = format!("{}---\n{}", gateway(HTTP_SERVER), gateway(HTTP_SERVER));
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:17:3: document 2 (Gateway gw): metadata.name: Gateway gw is already defined in document 1 (Gateway gw)"
    );
}

// ---------------------------------------------------------------------------------------
// Unknown and unimplemented fields

#[test]
fn unknown_field_lists_the_accepted_ones() {
    let text = gateway(&HTTP_SERVER.replace("    hosts:", "    hostz: [a]\n    hosts:"));
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:11:5: document 1 (Gateway gw): spec.servers[0].hostz: unknown field `hostz`; accepted: port, bind, hosts, tls, name"
    );
}

#[test]
fn several_problems_are_all_reported() {
    let text = format!(
        "{}---\n{}",
        gateway(&HTTP_SERVER.replace("    hosts:", "    foo: 1\n    bar: 2\n    hosts:")),
        virtual_service(&format!("  - delegate: {{}}\n{ROUTE}"))
    );
    assert_eq!(
        errors(&text),
        vec![
            "/etc/ringress/gw.yaml:11:5: document 1 (Gateway gw): spec.servers[0].foo: unknown field `foo`; accepted: port, bind, hosts, tls, name",
            "/etc/ringress/gw.yaml:12:5: document 1 (Gateway gw): spec.servers[0].bar: unknown field `bar`; accepted: port, bind, hosts, tls, name",
            "/etc/ringress/gw.yaml:26:5: document 2 (VirtualService vs): spec.http[0].delegate: field `delegate` is not implemented by ringress yet",
        ]
    );
}

#[test]
fn unimplemented_istio_fields() {
    let cases: &[(&str, &str)] = &[
        (
            "  - fault: {abort: {httpStatus: 503, http2Error: 1}}\n",
            "spec.http[0].fault.abort.http2Error",
        ),
        (
            "  - fault: {delay: {fixedDelay: 1s, exponentialDelay: 1s}}\n",
            "spec.http[0].fault.delay.exponentialDelay",
        ),
        (
            "  - websocketUpgrade: true\n",
            "spec.http[0].websocketUpgrade",
        ),
    ];
    for (extra, path) in cases {
        let e = error(&with_routes(&format!("{extra}{ROUTE}")));
        let field = path.rsplit('.').next().unwrap();
        assert!(
            e.ends_with(&format!(
                "{path}: field `{field}` is not implemented by ringress yet"
            )),
            "{e}"
        );
    }
}

#[test]
fn destination_rule_connection_pool() {
    let dr = |body: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: dr\nspec:\n  host: httpbin\n  trafficPolicy:\n    connectionPool:\n{body}"
        )
    };
    let config = load_ok(&dr(
        "      tcp:\n        maxConnections: 100\n        connectTimeout: 2s\n      http:\n        idleTimeout: 30s\n",
    ));
    assert_eq!(
        config.destination_rules[0]
            .traffic_policy
            .connection_pool
            .unwrap_or_default(),
        ConnectionPool {
            max_connections: Some(100),
            connect_timeout: Some(std::time::Duration::from_secs(2)),
            idle_timeout: Some(std::time::Duration::from_secs(30)),
            h2_upgrade: None,
            requests: Default::default(),
        }
    );
    for (policy, upgrade) in [
        ("UPGRADE", Some(true)),
        ("DO_NOT_UPGRADE", Some(false)),
        ("DEFAULT", None),
    ] {
        let config = load_ok(&dr(&format!(
            "      http:\n        h2UpgradePolicy: {policy}\n"
        )));
        assert_eq!(
            config.destination_rules[0]
                .traffic_policy
                .connection_pool
                .unwrap_or_default()
                .h2_upgrade,
            upgrade
        );
    }
    assert!(
        error(&dr("      http:\n        h2UpgradePolicy: ALWAYS\n")).ends_with(
            "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy: invalid value \"ALWAYS\": accepted: DEFAULT, DO_NOT_UPGRADE, UPGRADE"
        )
    );
    assert_eq!(
        error(&dr("      tcp:\n        maxConnections: 0\n")),
        "/etc/ringress/gw.yaml:10:9: document 1 (DestinationRule dr): spec.trafficPolicy.connectionPool.tcp.maxConnections: invalid value 0: expected a number of connections from 1 to 4294967295"
    );
    assert!(
        error(&dr("      http:\n        idleTimeout: 0s\n"))
            .ends_with("spec.trafficPolicy.connectionPool.http.idleTimeout: invalid value \"0s\": expected a duration above 0s"),
    );
    for (section, field) in [("http", "useClientProtocol"), ("tcp", "tcpKeepalive")] {
        let e = error(&dr(&format!("      {section}:\n        {field}: 1\n")));
        assert!(
            e.ends_with(&format!(
                "spec.trafficPolicy.connectionPool.{section}.{field}: field `{field}` is not implemented by ringress yet"
            )),
            "{e}"
        );
    }
}

#[test]
fn destination_rule_unimplemented_fields() {
    let dr = |body: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: dr\nspec:\n  host: httpbin\n{body}"
        )
    };
    let e = error(&dr("  trafficPolicy:\n    tunnel: {}\n"));
    assert!(
        e.ends_with("spec.trafficPolicy.tunnel: field `tunnel` is not implemented by ringress yet"),
        "{e}"
    );
    assert_eq!(
        error(&dr(
            "  trafficPolicy:\n    loadBalancer:\n      simple: PASSTHROUGH\n"
        )),
        "/etc/ringress/gw.yaml:9:7: document 1 (DestinationRule dr): spec.trafficPolicy.loadBalancer.simple: load balancer PASSTHROUGH is not implemented by ringress yet; accepted: ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM"
    );
    assert_eq!(
        error(&dr(
            "  trafficPolicy:\n    loadBalancer:\n      simple: FASTEST\n"
        )),
        "/etc/ringress/gw.yaml:9:7: document 1 (DestinationRule dr): spec.trafficPolicy.loadBalancer.simple: invalid value \"FASTEST\": accepted: ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM"
    );
    for (name, lb) in [
        ("ROUND_ROBIN", LoadBalancer::RoundRobin),
        ("LEAST_REQUEST", LoadBalancer::LeastRequest),
        ("LEAST_CONN", LoadBalancer::LeastRequest),
        ("RANDOM", LoadBalancer::Random),
    ] {
        let config = load_ok(&dr(&format!(
            "  exportTo: [\".\"]\n  trafficPolicy:\n    loadBalancer:\n      simple: {name}\n"
        )));
        assert_eq!(
            config.destination_rules[0].traffic_policy.load_balancer,
            Some(lb.into())
        );
        assert_eq!(config.destination_rules[0].host, "httpbin");
    }
    assert_eq!(
        load_ok(&dr("")).destination_rules[0]
            .traffic_policy
            .load_balancer,
        None
    );
    assert_eq!(
        error(&dr("").replace("host: httpbin", "host: \"*.example.com\"")),
        "/etc/ringress/gw.yaml:6:3: document 1 (DestinationRule dr): spec.host: wildcard DestinationRule host \"*.example.com\" is not implemented by ringress yet; accepted: host names like httpbin or api.example.com"
    );
    let text = format!("{}---\n{}", dr(""), dr("").replace("name: dr", "name: dr2"));
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:13:3: document 2 (DestinationRule dr2): spec.host: host httpbin already has a DestinationRule: document 1 (DestinationRule dr)"
    );
}

// ---------------------------------------------------------------------------------------
// Type errors

#[test]
fn wrong_types_name_what_was_expected() {
    let text = gateway(&HTTP_SERVER.replace("number: 80", "number: \"80\""));
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:8:7: document 1 (Gateway gw): spec.servers[0].port.number: expected an integer, found string \"80\""
    );
    let text = gateway(
        &HTTP_SERVER
            .replace("    - \"*\"\n", "")
            .replace("hosts:", "hosts: example.com"),
    );
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:11:5: document 1 (Gateway gw): spec.servers[0].hosts: expected a list, found string \"example.com\""
    );
    assert_eq!(
        error(&gateway("  - port: 80\n    hosts: [a]\n")),
        "/etc/ringress/gw.yaml:7:5: document 1 (Gateway gw): spec.servers[0].port: expected a mapping, found integer 80"
    );
    let text = with_routes(&format!(
        "  - headers:\n      request:\n        set:\n          x-version: 2\n{ROUTE}"
    ));
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:27:11: document 2 (VirtualService vs): spec.http[0].headers.request.set.x-version: expected a string, found integer 2"
    );
}

// ---------------------------------------------------------------------------------------
// Gateway servers

fn https_server(tls: &str) -> String {
    format!(
        "  - port:\n      number: 443\n      name: https\n      protocol: HTTPS\n    hosts:\n    - a.example.com\n    tls:\n{tls}"
    )
}

#[test]
fn hosts_are_lowercased_and_namespace_stripped() {
    let config = load_ok(&gateway(
        "  - port: {number: 80, name: http, protocol: http}\n    hosts: [\"ns/Api.Example.COM\", \"./*.Example.com\", \"*/*\"]\n",
    ));
    assert_eq!(
        config.gateways[0].servers[0].hosts,
        vec![
            HostPattern::Exact("api.example.com".into()),
            HostPattern::Suffix(".example.com".into()),
            HostPattern::Any
        ]
    );
    assert_eq!(
        error(&gateway(
            "  - port: {number: 80, protocol: HTTP}\n    hosts: [\"a..b\"]\n"
        )),
        "/etc/ringress/gw.yaml:8:13: document 1 (Gateway gw): spec.servers[0].hosts[0]: invalid value \"a..b\": expected a host name (httpbin.example.com), a wildcard (*.example.com) or *"
    );
    assert_eq!(
        error(&gateway(
            "  - port: {number: 80, protocol: HTTP}\n    hosts: []\n"
        )),
        "/etc/ringress/gw.yaml:8:5: document 1 (Gateway gw): spec.servers[0].hosts: a server needs at least one host; use \"*\" for any"
    );
}

#[test]
fn port_and_protocol_checks() {
    assert_eq!(
        error(&gateway(
            "  - port: {number: 70000, protocol: HTTP}\n    hosts: [a]\n"
        )),
        "/etc/ringress/gw.yaml:7:12: document 1 (Gateway gw): spec.servers[0].port.number: invalid value 70000: a port number is 1 to 65535"
    );
    assert_eq!(
        error(&gateway("  - port: {protocol: HTTP}\n    hosts: [a]\n")),
        "/etc/ringress/gw.yaml:7:5: document 1 (Gateway gw): spec.servers[0].port.number: required field is missing"
    );
    assert_eq!(
        error(&gateway(
            "  - port: {number: 443, protocol: MONGO}\n    hosts: [a]\n"
        )),
        "/etc/ringress/gw.yaml:7:25: document 1 (Gateway gw): spec.servers[0].port.protocol: protocol MONGO is not implemented by ringress yet; accepted: HTTP, HTTPS, TLS, TCP"
    );
    assert_eq!(
        error(&gateway(
            "  - port: {number: 443, protocol: QUIC}\n    hosts: [a]\n"
        )),
        "/etc/ringress/gw.yaml:7:25: document 1 (Gateway gw): spec.servers[0].port.protocol: invalid value \"QUIC\": accepted protocols: HTTP, HTTPS, TLS, TCP"
    );
    let config = load_ok(&gateway(
        "  - port: {number: 8080, protocol: HTTP}\n    hosts: [a]\n    bind: 127.0.0.1\n",
    ));
    let s = &config.gateways[0].servers[0];
    assert_eq!(s.port_name, "http-8080");
    assert_eq!(s.bind, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(
        error(&gateway(
            "  - port: {number: 8080, protocol: HTTP}\n    hosts: [a]\n    bind: localhost\n"
        )),
        "/etc/ringress/gw.yaml:9:5: document 1 (Gateway gw): spec.servers[0].bind: invalid value \"localhost\": expected an IP address like 0.0.0.0, 127.0.0.1 or ::"
    );
    assert_eq!(
        error(&gateway(
            "  - port: {number: 8080, protocol: HTTP, targetPort: 80}\n    hosts: [a]\n"
        )),
        "/etc/ringress/gw.yaml:7:42: document 1 (Gateway gw): spec.servers[0].port.targetPort: field `targetPort` is not implemented by ringress yet"
    );
}

#[test]
fn servers_sharing_a_port_must_agree() {
    let text = gateway(&format!(
        "{HTTP_SERVER}  - port: {{number: 80, protocol: HTTPS}}\n    hosts: [b]\n    tls: {{mode: SIMPLE, credentialName: b}}\n"
    ));
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:13:24: document 1 (Gateway gw): spec.servers[1].port.protocol: port 80 is already served as HTTP by document 1 (Gateway gw) spec.servers[0]; servers sharing a port must use the same protocol"
    );
    let text = gateway(&format!(
        "{HTTP_SERVER}  - port: {{number: 80, protocol: HTTP}}\n    hosts: [b]\n    bind: 10.0.0.1\n"
    ));
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:15:5: document 1 (Gateway gw): spec.servers[1].bind: port 80 is already bound to all addresses by document 1 (Gateway gw) spec.servers[0]; servers sharing a port must use the same bind"
    );
}

#[test]
fn same_host_twice_on_an_https_port() {
    let tls = "      mode: SIMPLE\n      credentialName: a\n";
    let second = gateway(&https_server(tls)).replace("name: gw", "name: gw2");
    let text = format!("{}---\n{}", gateway(&https_server(tls)), second);
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:28:7: document 2 (Gateway gw2): spec.servers[0].hosts[0]: host a.example.com is already served on HTTPS port 443 by document 1 (Gateway gw) spec.servers[0]; SNI could not choose between their certificates"
    );
    // The same host on HTTP twice is fine (routing picks by Host).
    let second = gateway(HTTP_SERVER).replace("name: gw", "name: gw2");
    load_ok(&format!("{}---\n{}", gateway(HTTP_SERVER), second));
}

#[test]
fn tls_modes() {
    for (mode, expected) in [
        ("SIMPLE", TlsMode::Simple),
        ("MUTUAL", TlsMode::Mutual),
        ("OPTIONAL_MUTUAL", TlsMode::OptionalMutual),
    ] {
        let config = load_ok(&gateway(&https_server(&format!(
            "      mode: {mode}\n      credentialName: a-cred\n"
        ))));
        assert_eq!(
            config.gateways[0].servers[0].tls.as_ref().unwrap().mode,
            expected
        );
    }
    // HTTPS with PASSTHROUGH is served as Istio serves it: like TLS.
    let config = load_ok(&gateway(&https_server("      mode: PASSTHROUGH\n")));
    let server = &config.gateways[0].servers[0];
    assert_eq!(server.protocol, Protocol::TlsPassthrough);
    assert!(server.tls.is_none());
    // The modes of a mesh say why they cannot be served.
    let e = error(&gateway(&https_server("      mode: AUTO_PASSTHROUGH\n")));
    assert!(
        e.starts_with("/etc/ringress/gw.yaml:14:7: document 1 (Gateway gw): spec.servers[0].tls.mode: tls mode AUTO_PASSTHROUGH routes by an SNI that encodes a mesh service's cluster name"),
        "{e}"
    );
    let e = error(&gateway(&https_server("      mode: ISTIO_MUTUAL\n")));
    assert!(
        e.ends_with("tls mode ISTIO_MUTUAL uses certificates issued to workloads by the mesh's CA (istiod); ringress has no mesh: use SIMPLE or MUTUAL with your own certificates"),
        "{e}"
    );
    assert_eq!(
        errors(&gateway(&https_server(
            "      mode: STRICT\n      credentialName: a\n"
        ))),
        vec![
            "/etc/ringress/gw.yaml:14:7: document 1 (Gateway gw): spec.servers[0].tls.mode: invalid value \"STRICT\": accepted tls modes: SIMPLE, MUTUAL, OPTIONAL_MUTUAL, PASSTHROUGH"
        ]
    );
    assert_eq!(
        error(&gateway(&https_server("      credentialName: a\n"))),
        "/etc/ringress/gw.yaml:13:5: document 1 (Gateway gw): spec.servers[0].tls.mode: required field is missing"
    );
}

#[test]
fn https_credentials() {
    assert_eq!(
        error(&gateway(
            "  - port: {number: 443, protocol: HTTPS}\n    hosts: [a]\n"
        )),
        "/etc/ringress/gw.yaml:7:5: document 1 (Gateway gw): spec.servers[0].tls: an HTTPS server needs tls with credentialName, or serverCertificate and privateKey"
    );
    assert_eq!(
        error(&gateway(&https_server("      mode: SIMPLE\n"))),
        "/etc/ringress/gw.yaml:13:5: document 1 (Gateway gw): spec.servers[0].tls: an HTTPS server needs credentialName, or serverCertificate and privateKey"
    );
    assert_eq!(
        error(&gateway(&https_server(
            "      mode: SIMPLE\n      serverCertificate: c.pem\n"
        ))),
        "/etc/ringress/gw.yaml:13:5: document 1 (Gateway gw): spec.servers[0].tls.privateKey: privateKey is required with serverCertificate"
    );
    assert_eq!(
        error(&gateway(&https_server(
            "      mode: SIMPLE\n      privateKey: k.pem\n"
        ))),
        "/etc/ringress/gw.yaml:13:5: document 1 (Gateway gw): spec.servers[0].tls.serverCertificate: serverCertificate is required with privateKey"
    );
    assert_eq!(
        errors(&gateway(&https_server(
            "      mode: SIMPLE\n      serverCertificate: c.pem\n      privateKey: k.pem\n      credentialName: a\n"
        ))),
        vec![
            "/etc/ringress/gw.yaml:15:7: document 1 (Gateway gw): spec.servers[0].tls.serverCertificate: credentialName and serverCertificate are both set; use credentialName or the file paths, not both (\"use sds\" is accepted as the placeholder older Istio releases required)",
            "/etc/ringress/gw.yaml:16:7: document 1 (Gateway gw): spec.servers[0].tls.privateKey: credentialName and privateKey are both set; use credentialName or the file paths, not both (\"use sds\" is accepted as the placeholder older Istio releases required)",
        ]
    );
    assert_eq!(
        error(&gateway(&https_server(
            "      mode: SIMPLE\n      credentialName: a/b\n"
        ))),
        "/etc/ringress/gw.yaml:15:7: document 1 (Gateway gw): spec.servers[0].tls.credentialName: invalid value \"a/b\": a credentialName names a directory in --secrets-dir and cannot contain '/'"
    );
    assert_eq!(
        error(&gateway(&https_server(
            "      mode: MUTUAL\n      serverCertificate: c.pem\n      privateKey: k.pem\n"
        ))),
        "/etc/ringress/gw.yaml:13:5: document 1 (Gateway gw): spec.servers[0].tls.caCertificates: tls mode MUTUAL with serverCertificate and privateKey needs caCertificates, the CA bundle client certificates are verified against"
    );
    assert_eq!(
        error(&gateway(&https_server(
            "      mode: SIMPLE\n      credentialName: a\n      subjectAltNames: [spiffe://x]\n"
        ))),
        "/etc/ringress/gw.yaml:16:7: document 1 (Gateway gw): spec.servers[0].tls.subjectAltNames: subjectAltNames is only used by tls modes MUTUAL and OPTIONAL_MUTUAL"
    );
    assert_eq!(
        error(&gateway(&https_server(
            "      mode: SIMPLE\n      serverCertificate: c.pem\n      privateKey: k.pem\n      caCertificates: ca.pem\n"
        ))),
        "/etc/ringress/gw.yaml:17:7: document 1 (Gateway gw): spec.servers[0].tls.caCertificates: caCertificates is only used by tls modes MUTUAL and OPTIONAL_MUTUAL"
    );
    assert_eq!(
        error(&gateway(&https_server(
            "      mode: SIMPLE\n      credentialName: a\n      httpsRedirect: true\n"
        ))),
        "/etc/ringress/gw.yaml:16:7: document 1 (Gateway gw): spec.servers[0].tls.httpsRedirect: httpsRedirect applies to HTTP servers only; this server is HTTPS"
    );
}

#[test]
fn https_redirect_on_http_servers() {
    let config = load_ok(&gateway(&format!(
        "{HTTP_SERVER}    tls:\n      httpsRedirect: true\n"
    )));
    let s = &config.gateways[0].servers[0];
    assert!(s.https_redirect);
    assert!(s.tls.is_none());
    assert_eq!(
        error(&gateway(&format!(
            "{HTTP_SERVER}    tls:\n      httpsRedirect: true\n      mode: SIMPLE\n"
        ))),
        "/etc/ringress/gw.yaml:15:7: document 1 (Gateway gw): spec.servers[0].tls.mode: `mode` applies to HTTPS servers only; the tls block of an HTTP server may only set httpsRedirect"
    );
}

#[test]
fn tls_versions_and_ciphers() {
    let base = "      mode: SIMPLE\n      credentialName: a\n";
    let config = load_ok(&gateway(&https_server(&format!(
        "{base}      minProtocolVersion: TLSV1_3\n      maxProtocolVersion: TLS_AUTO\n      cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]\n"
    ))));
    let tls = config.gateways[0].servers[0].tls.as_ref().unwrap();
    assert_eq!(tls.min_protocol_version, Some(TlsVersion::V1_3));
    assert_eq!(tls.max_protocol_version, None);
    assert_eq!(
        tls.cipher_suites,
        vec!["ECDHE-ECDSA-AES256-GCM-SHA384".to_owned()]
    );
    assert_eq!(
        error(&gateway(&https_server(&format!(
            "{base}      minProtocolVersion: TLSV1_1\n"
        )))),
        "/etc/ringress/gw.yaml:16:7: document 1 (Gateway gw): spec.servers[0].tls.minProtocolVersion: invalid value \"TLSV1_1\": ringress speaks TLS 1.2 and 1.3 only; accepted: TLS_AUTO, TLSV1_2, TLSV1_3"
    );
    assert_eq!(
        error(&gateway(&https_server(&format!(
            "{base}      maxProtocolVersion: TLSV1_0\n"
        )))),
        "/etc/ringress/gw.yaml:16:7: document 1 (Gateway gw): spec.servers[0].tls.maxProtocolVersion: invalid value \"TLSV1_0\": ringress speaks TLS 1.2 and 1.3 only; accepted: TLS_AUTO, TLSV1_2, TLSV1_3"
    );
    assert_eq!(
        error(&gateway(&https_server(&format!(
            "{base}      minProtocolVersion: TLSV1_3\n      maxProtocolVersion: TLSV1_2\n"
        )))),
        "/etc/ringress/gw.yaml:16:7: document 1 (Gateway gw): spec.servers[0].tls.minProtocolVersion: minProtocolVersion TLSV1_3 is above maxProtocolVersion TLSV1_2"
    );
    assert_eq!(
        error(&gateway(&https_server(&format!(
            "{base}      verifyCertificateHash: [ab]\n"
        )))),
        "/etc/ringress/gw.yaml:16:7: document 1 (Gateway gw): spec.servers[0].tls.verifyCertificateHash: field `verifyCertificateHash` is not implemented by ringress yet"
    );
}

// ---------------------------------------------------------------------------------------
// VirtualService

#[test]
fn gateways_must_be_listed_and_exist() {
    let text = with_routes(RULE).replace("  gateways:\n  - gw\n", "");
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:18:1: document 2 (VirtualService vs): spec.gateways: gateways is missing, which in Istio means the mesh only; ringress serves gateway traffic only: list the Gateways this VirtualService applies to"
    );
    let text = with_routes(RULE).replace("  gateways:\n  - gw\n", "  gateways: []\n");
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:21:3: document 2 (VirtualService vs): spec.gateways: gateways is empty; ringress serves gateway traffic only: list the Gateways this VirtualService applies to"
    );
    let text = with_routes(RULE).replace("  - gw\n", "  - gw\n  - mesh\n");
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:23:5: document 2 (VirtualService vs): spec.gateways[1]: `mesh` (traffic between sidecars) is not served: ringress serves gateway traffic only; list Gateways instead"
    );
    // A Gateway with its own error still counts as existing.
    let text = format!(
        "{}---\n{}",
        gateway("  - port: {number: 80, protocol: HTTP}\n    hosts: [\"a b\"]\n"),
        virtual_service(RULE)
    );
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:8:13: document 1 (Gateway gw): spec.servers[0].hosts[0]: invalid value \"a b\": expected a host name (httpbin.example.com), a wildcard (*.example.com) or *"
    );
    let text = with_routes(RULE).replace("  - gw\n", "  - istio-system/other\n");
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:22:5: document 2 (VirtualService vs): spec.gateways[0]: no Gateway named other in this file (Gateways: gw)"
    );
}

#[test]
fn matches_compile() {
    let http = format!(
        "  - name: all\n    match:\n    - name: m\n      uri:\n        regex: /api/v[0-9]+\n      ignoreUriCase: true\n      method:\n        exact: GET\n      scheme:\n        exact: https\n      authority:\n        prefix: api.\n      headers:\n        X-User:\n          exact: jason\n        cookie:\n          regex: \".*session=.*\"\n{ROUTE}"
    );
    let config = load_ok(&with_routes(&http));
    let rule = &config.virtual_services[0].http[0];
    assert_eq!(rule.name.as_deref(), Some("all"));
    let m = &rule.matches[0];
    assert_eq!(m.name.as_deref(), Some("m"));
    assert!(m.ignore_uri_case);
    let uri = m.uri.as_ref().unwrap();
    assert!(uri.matches("/API/V2"));
    assert!(!uri.matches("/api/v2/x"), "regexes are anchored");
    assert!(m.method.as_ref().unwrap().matches("GET"));
    assert!(m.scheme.as_ref().unwrap().matches("https"));
    assert!(m.authority.as_ref().unwrap().matches("api.example.com"));
    assert_eq!(m.headers[0].0, "x-user");
    assert_eq!(m.headers[1].0, "cookie");
    assert!(m.headers[1].1.matches("a=1; session=2"));
}

#[test]
fn match_errors() {
    let text = with_routes(&format!(
        "  - match:\n    - uri:\n        regex: \"/a(\"\n{ROUTE}"
    ));
    let e = error(&text);
    assert!(
        e.starts_with("/etc/ringress/gw.yaml:26:9: document 2 (VirtualService vs): spec.http[0].match[0].uri.regex: invalid value \"/a(\": not a valid regex: "),
        "{e}"
    );
    assert!(!e.contains('\n'));
    let text = with_routes(&format!(
        "  - match:\n    - uri:\n        exact: /a\n        prefix: /b\n{ROUTE}"
    ));
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:25:7: document 2 (VirtualService vs): spec.http[0].match[0].uri: exact, prefix and regex are exclusive; use one"
    );
    let text = with_routes(&format!("  - match:\n    - uri: {{}}\n{ROUTE}"));
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:25:7: document 2 (VirtualService vs): spec.http[0].match[0].uri: a string match needs one of exact, prefix or regex"
    );
    let text = with_routes(&format!(
        "  - match:\n    - sourceLabels:\n        app: b\n{ROUTE}"
    ));
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:25:7: document 2 (VirtualService vs): spec.http[0].match[0].sourceLabels: field `sourceLabels` is not implemented by ringress yet"
    );
    for (field, want) in [
        (
            "queryParams:\n        a: {prefix: b}",
            "spec.http[0].match[0].queryParams.a.prefix: Istio matches query parameters by exact or regex only",
        ),
        (
            "gateways: [other-gw]",
            "spec.http[0].match[0].gateways[0]: Gateway \"other-gw\" is not in this VirtualService's gateways (gw): the match could never apply",
        ),
        ("port: 70000", "spec.http[0].match[0].port"),
        (
            "gateways: [mesh]",
            "`mesh` (traffic between sidecars) is not served",
        ),
    ] {
        let got = error(&with_routes(&format!("  - match:\n    - {field}\n{ROUTE}")));
        assert!(got.contains(want), "{field}: {got}");
    }
    let text = with_routes(&format!(
        "  - match:\n    - headers:\n        \"bad header\": {{exact: b}}\n{ROUTE}"
    ));
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:26:9: document 2 (VirtualService vs): spec.http[0].match[0].headers.bad header: invalid value \"bad header\": expected an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"
    );
}

#[test]
fn exactly_one_action() {
    assert_eq!(
        error(&with_routes("  - name: nothing\n")),
        "/etc/ringress/gw.yaml:24:5: document 2 (VirtualService vs): spec.http[0]: an http route needs one of route, redirect or directResponse"
    );
    let text = with_routes(&format!("  - redirect:\n      uri: /x\n{ROUTE}"));
    assert_eq!(
        error(&text),
        "/etc/ringress/gw.yaml:24:5: document 2 (VirtualService vs): spec.http[0]: route, redirect and directResponse are exclusive; found route and redirect"
    );
}

#[test]
fn weighted_destinations() {
    let http = "  - route:\n    - destination: {host: v1, port: {number: 80}}\n      weight: 75\n    - destination: {host: V2.default.svc, subset: canary}\n      weight: 25\n";
    let config = load_ok(&with_routes(http));
    let RouteAction::Route(dests) = &config.virtual_services[0].http[0].action else {
        panic!()
    };
    assert_eq!(
        dests,
        &vec![
            WeightedDestination {
                host: "v1".into(),
                port: Some(80),
                subset: None,
                weight: 75
            },
            WeightedDestination {
                host: "v2.default.svc".into(),
                port: None,
                subset: Some("canary".into()),
                weight: 25
            },
        ]
    );
    let http = "  - route:\n    - destination: {host: v1}\n      weight: 70\n    - destination: {host: v2}\n";
    assert_eq!(
        error(&with_routes(http)),
        "/etc/ringress/gw.yaml:24:5: document 2 (VirtualService vs): spec.http[0].route: destination weights add up to 70 (70 + 0); they must add up to 100"
    );
    let http = "  - route:\n    - destination: {host: v1}\n      weight: 50\n";
    assert_eq!(
        error(&with_routes(http)),
        "/etc/ringress/gw.yaml:26:7: document 2 (VirtualService vs): spec.http[0].route[0].weight: a single destination takes all traffic; its weight must be 100 or omitted, found 50"
    );
    let http = "  - route:\n    - destination: {host: v1}\n      weight: 150\n    - destination: {host: v2}\n";
    assert_eq!(
        error(&with_routes(http)),
        "/etc/ringress/gw.yaml:26:7: document 2 (VirtualService vs): spec.http[0].route[0].weight: invalid value 150: a weight is 0 to 100"
    );
    let http = "  - route:\n    - destination: {port: {number: 80}}\n";
    assert_eq!(
        error(&with_routes(http)),
        "/etc/ringress/gw.yaml:25:7: document 2 (VirtualService vs): spec.http[0].route[0].destination.host: required field is missing"
    );
    let http = "  - route:\n    - destination: {host: \"*.x\"}\n";
    assert_eq!(
        error(&with_routes(http)),
        "/etc/ringress/gw.yaml:25:21: document 2 (VirtualService vs): spec.http[0].route[0].destination.host: invalid value \"*.x\": expected a host name like httpbin or httpbin.example.com (no wildcards)"
    );
    assert_eq!(
        error(&with_routes("  - route: []\n")),
        "/etc/ringress/gw.yaml:24:5: document 2 (VirtualService vs): spec.http[0].route: route is empty; list at least one destination"
    );
}

#[test]
fn redirect_direct_response_rewrite() {
    let http = "  - redirect:\n      uri: /new\n      authority: other.example.com\n      scheme: https\n      port: 8443\n      redirectCode: 308\n";
    let config = load_ok(&with_routes(http));
    let RouteAction::Redirect(r) = &config.virtual_services[0].http[0].action else {
        panic!()
    };
    assert_eq!(r.uri.as_deref(), Some("/new"));
    assert_eq!(r.authority.as_deref(), Some("other.example.com"));
    assert_eq!(r.scheme.as_deref(), Some("https"));
    assert_eq!((r.port, r.code), (Some(8443), 308));
    let config = load_ok(&with_routes("  - redirect:\n      uri: /x\n"));
    let RouteAction::Redirect(r) = &config.virtual_services[0].http[0].action else {
        panic!()
    };
    assert_eq!(r.code, 301);
    assert_eq!(
        error(&with_routes(
            "  - redirect:\n      uri: /x\n      redirectCode: 200\n"
        )),
        "/etc/ringress/gw.yaml:26:7: document 2 (VirtualService vs): spec.http[0].redirect.redirectCode: invalid value 200: accepted redirect codes: 301, 302, 303, 307, 308"
    );

    let config = load_ok(&with_routes(
        "  - directResponse:\n      status: 418\n      body:\n        string: teapot\n",
    ));
    let RouteAction::DirectResponse { status, body } = &config.virtual_services[0].http[0].action
    else {
        panic!()
    };
    assert_eq!((*status, body.as_deref()), (418, Some("teapot")));
    assert_eq!(
        error(&with_routes("  - directResponse:\n      status: 99\n")),
        "/etc/ringress/gw.yaml:25:7: document 2 (VirtualService vs): spec.http[0].directResponse.status: invalid value 99: a directResponse status is 200 to 599"
    );

    let config = load_ok(&with_routes(&format!(
        "  - rewrite:\n      uri: /v2\n      authority: internal\n{ROUTE}"
    )));
    let rw = config.virtual_services[0].http[0].rewrite.as_ref().unwrap();
    assert_eq!(
        (rw.uri.as_deref(), rw.authority.as_deref()),
        (Some("/v2"), Some("internal"))
    );
    assert_eq!(
        error(&with_routes(
            "  - rewrite:\n      uri: /v2\n    redirect:\n      uri: /x\n"
        )),
        "/etc/ringress/gw.yaml:24:5: document 2 (VirtualService vs): spec.http[0].rewrite: rewrite applies to route only, not to redirect"
    );
    assert_eq!(
        errors(&with_routes(&format!(
            "  - rewrite:\n      uriRegexRewrite: {{}}\n{ROUTE}"
        ))),
        vec![
            "/etc/ringress/gw.yaml:24:5: document 2 (VirtualService vs): spec.http[0].rewrite: rewrite needs uri or authority",
            "/etc/ringress/gw.yaml:25:7: document 2 (VirtualService vs): spec.http[0].rewrite.uriRegexRewrite: field `uriRegexRewrite` is not implemented by ringress yet",
        ]
    );
}

#[test]
fn timeouts_retries_headers() {
    let http = format!(
        "  - timeout: 1.5s\n    retries:\n      attempts: 3\n      perTryTimeout: 500ms\n      retryOn: connect-failure, refused-stream,503\n    headers:\n      request:\n        set: {{X-A: \"1\", x-b: two}}\n        add: {{x-c: three}}\n        remove: [X-Internal]\n      response:\n        remove: [server]\n{ROUTE}"
    );
    let config = load_ok(&with_routes(&http));
    let rule = &config.virtual_services[0].http[0];
    assert_eq!(rule.timeout, Some(Duration::from_millis(1500)));
    let r = rule.retries.as_ref().unwrap();
    assert_eq!(r.attempts, 3);
    assert_eq!(r.per_try_timeout, Some(Duration::from_millis(500)));
    assert_eq!(r.retry_on, vec!["connect-failure", "refused-stream", "503"]);
    assert_eq!(
        rule.headers.request.set,
        vec![
            ("x-a".to_owned(), "1".to_owned()),
            ("x-b".to_owned(), "two".to_owned())
        ]
    );
    assert_eq!(
        rule.headers.request.add,
        vec![("x-c".to_owned(), "three".to_owned())]
    );
    assert_eq!(rule.headers.request.remove, vec!["x-internal".to_owned()]);
    assert_eq!(rule.headers.response.remove, vec!["server".to_owned()]);

    assert_eq!(
        error(&with_routes(&format!("  - timeout: 10\n{ROUTE}"))),
        "/etc/ringress/gw.yaml:24:5: document 2 (VirtualService vs): spec.http[0].timeout: expected a string, found integer 10"
    );
    assert_eq!(
        error(&with_routes(&format!("  - timeout: 10x\n{ROUTE}"))),
        "/etc/ringress/gw.yaml:24:5: document 2 (VirtualService vs): spec.http[0].timeout: invalid duration \"10x\"; expected numbers with units h, m, s, ms, us, ns, like 1s, 500ms, 1.5s, 2m, 1h"
    );
    assert_eq!(
        error(&with_routes(&format!(
            "  - retries:\n      attempts: 50\n{ROUTE}"
        ))),
        "/etc/ringress/gw.yaml:25:7: document 2 (VirtualService vs): spec.http[0].retries.attempts: invalid value 50: attempts is 0 to 10"
    );
    let e = error(&with_routes(&format!(
        "  - retries:\n      attempts: 1\n      retryOn: sometimes\n{ROUTE}"
    )));
    assert!(
        e.starts_with("/etc/ringress/gw.yaml:26:7: document 2 (VirtualService vs): spec.http[0].retries.retryOn: invalid value \"sometimes\": accepted: 5xx, gateway-error, reset, connect-failure,"),
        "{e}"
    );
    assert_eq!(
        error(&with_routes(&format!(
            "  - headers:\n      request:\n        set: {{x-a: \"a\\nb\"}}\n{ROUTE}"
        ))),
        "/etc/ringress/gw.yaml:26:15: document 2 (VirtualService vs): spec.http[0].headers.request.set.x-a: invalid value \"a\\nb\": a header value cannot contain CR, LF or NUL"
    );
}

// ---------------------------------------------------------------------------------------
// ServiceEntry

fn service_entry(body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se\nspec:\n{body}"
    )
}

#[test]
fn service_entries() {
    let config = load_ok(&service_entry(
        "  hosts: [httpbin, httpbin.default.svc]\n  addresses: [10.0.0.1]\n  location: MESH_INTERNAL\n  exportTo: [\"*\"]\n  ports:\n  - {number: 8000, name: http, protocol: HTTP, targetPort: 80}\n  resolution: STATIC\n  endpoints:\n  - address: 10.1.0.1\n    ports: {http: 8080}\n    weight: 3\n    labels: {version: v1}\n  - address: \"::1\"\n",
    ));
    let se = &config.service_entries[0];
    assert_eq!(
        se.hosts,
        vec!["httpbin".to_owned(), "httpbin.default.svc".to_owned()]
    );
    assert_eq!(
        se.ports,
        vec![ServicePort {
            number: 8000,
            name: "http".into(),
            protocol: "HTTP".into(),
            target_port: Some(80)
        }]
    );
    assert_eq!(se.endpoints[0].ports.get("http"), Some(&8080));
    assert_eq!(se.endpoints[0].weight, Some(3));
    assert_eq!(se.endpoints[1].address, "::1");

    for resolution in ["DNS", "DNS_ROUND_ROBIN"] {
        let config = load_ok(&service_entry(&format!(
            "  hosts: [api.example.com]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: {resolution}\n"
        )));
        assert_eq!(config.service_entries[0].resolution, Resolution::Dns);
        assert!(config.service_entries[0].endpoints.is_empty());
    }
}

#[test]
fn service_entry_port_protocols() {
    // The protocol field, any case; without one, Istio's port-name prefixes.
    let config = load_ok(&service_entry(
        "  hosts: [svc]\n  ports:\n  - {number: 1, name: a, protocol: grpc}\n  - {number: 2, name: b, protocol: HTTP2}\n  - {number: 3, name: grpc-api}\n  - {number: 4, name: http2}\n  - {number: 5, name: web}\n  - {number: 6, name: grpc-web}\n  resolution: DNS\n",
    ));
    let protocols: Vec<&str> = config.service_entries[0]
        .ports
        .iter()
        .map(|p| p.protocol.as_str())
        .collect();
    assert_eq!(
        protocols,
        ["GRPC", "HTTP2", "GRPC", "HTTP2", "HTTP", "GRPC"]
    );
    assert!(config.service_entries[0].ports[0].speaks_http2());
    assert!(!config.service_entries[0].ports[4].speaks_http2());
    assert!(
        error(&service_entry(
            "  hosts: [svc]\n  ports: [{number: 1, name: a, protocol: GRPC-WEB}]\n  resolution: DNS\n"
        ))
        .ends_with("upstream protocol GRPC-WEB is not implemented by ringress yet; accepted: HTTP, HTTP2, GRPC, TCP, TLS")
    );
}

#[test]
fn service_entry_errors() {
    let ports = "  hosts: [httpbin]\n  ports: [{number: 8000, name: http, protocol: HTTP}]\n";
    assert_eq!(
        error(&service_entry(&format!(
            "{ports}  resolution: STATIC\n  endpoints:\n  - address: httpbin.local\n"
        ))),
        "/etc/ringress/gw.yaml:10:5: document 1 (ServiceEntry se): spec.endpoints[0].address: invalid value \"httpbin.local\": resolution STATIC needs IP addresses; use resolution DNS for host names"
    );
    assert_eq!(
        error(&service_entry(&format!("{ports}  resolution: NONE\n"))),
        "/etc/ringress/gw.yaml:8:3: document 1 (ServiceEntry se): spec.resolution: resolution NONE (forwarding to the original destination address) is not implemented by ringress yet; accepted: STATIC, DNS, DNS_ROUND_ROBIN"
    );
    assert_eq!(
        error(&service_entry(ports)),
        "/etc/ringress/gw.yaml:5:1: document 1 (ServiceEntry se): spec.resolution: resolution is missing; accepted: STATIC, DNS, DNS_ROUND_ROBIN"
    );
    assert_eq!(
        error(&service_entry(&format!("{ports}  resolution: STATIC\n"))),
        "/etc/ringress/gw.yaml:5:1: document 1 (ServiceEntry se): spec.endpoints: resolution STATIC needs endpoints with IP addresses"
    );
    assert_eq!(
        error(&service_entry(&format!(
            "{ports}  resolution: STATIC\n  endpoints:\n  - address: 127.0.0.1\n    ports: {{grpc: 9000}}\n"
        ))),
        "/etc/ringress/gw.yaml:11:13: document 1 (ServiceEntry se): spec.endpoints[0].ports.grpc: port name grpc is not one of the ServiceEntry's ports (http)"
    );
    assert_eq!(
        error(&service_entry(
            "  hosts: [httpbin]\n  ports: [{number: 8000, name: https, protocol: HTTPS}]\n  resolution: DNS\n"
        )),
        "/etc/ringress/gw.yaml:7:39: document 1 (ServiceEntry se): spec.ports[0].protocol: upstream protocol HTTPS is not implemented by ringress yet; accepted: HTTP, HTTP2, GRPC, TCP, TLS"
    );
    assert_eq!(
        error(&service_entry(&format!(
            "{ports}  resolution: DNS\n  workloadSelector: {{labels: {{app: x}}}}\n"
        ))),
        "/etc/ringress/gw.yaml:9:3: document 1 (ServiceEntry se): spec.workloadSelector: field `workloadSelector` is not implemented by ringress yet"
    );
    let two = format!(
        "{}---\n{}",
        service_entry(&format!("{ports}  resolution: DNS\n")),
        service_entry(&format!("{ports}  resolution: DNS\n")).replace("name: se", "name: se2")
    );
    assert_eq!(
        error(&two),
        "/etc/ringress/gw.yaml:15:11: document 2 (ServiceEntry se2): spec.hosts[0]: host httpbin is already declared by document 1 (ServiceEntry se)"
    );
}

#[test]
fn config_error_display_and_issues() {
    let e = load_str("- x\n", Path::new("a.yaml")).unwrap_err();
    assert_eq!(e.issues().len(), 1);
    assert_eq!(e.issues()[0].document, Some(1));
    let e = load(Path::new("/nonexistent/ringress.yaml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot read configuration file /nonexistent/ringress.yaml: "),
        "{e}"
    );
}

#[test]
fn yaml_error_messages() {
    assert_eq!(
        error("a: b: c\n"),
        "/etc/ringress/gw.yaml:1:5: document 1: invalid YAML: mapping values are not allowed in this context"
    );
    assert_eq!(
        error("kind: Gateway\nkind: VirtualService\n"),
        "/etc/ringress/gw.yaml:2:1: document 1: invalid YAML: duplicate mapping key: kind"
    );
    assert_eq!(
        error("a: *nope\n"),
        "/etc/ringress/gw.yaml:1:4: document 1: invalid YAML: alias references unknown anchor"
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let block = "a:\n".to_owned()
        + &(1..5000)
            .map(|i| format!("{}b:\n", " ".repeat(i)))
            .collect::<String>();
    let flow = "[".repeat(100_000);
    for text in [block, flow] {
        let e = error(&text);
        assert!(e.contains("document 1: invalid YAML: "), "{e}");
    }
    // Anchors and merge keys work as YAML defines them.
    let text = gateway(
        "  - &server\n    port: {number: 80, protocol: HTTP}\n    hosts: [a]\n  - <<: *server\n    port: {number: 81, protocol: HTTP}\n",
    );
    let config = load_ok(&text);
    assert_eq!(config.gateways[0].servers[1].port, 81);
    assert_eq!(
        config.gateways[0].servers[1].hosts,
        vec![HostPattern::Exact("a".into())]
    );
}

/// The loader must never panic, whatever prefix of a real file it is given.
#[test]
fn every_prefix_of_every_fixture_is_handled() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/testdata");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.push(example("multi-host.yaml"));
    for path in names {
        let text = std::fs::read_to_string(&path).unwrap();
        // Every character boundary of the smallest file, every line end of the others
        // (each cut is a full load; the machine is shared).
        let every_char = path.ends_with("ingress-http.yaml");
        for cut in (0..=text.len()).filter(|&i| {
            text.is_char_boundary(i)
                && (every_char || i == text.len() || text.as_bytes()[i] == b'\n')
        }) {
            let _ = load_str(&text[..cut], &path);
        }
        load_path(&path);
    }
}

#[test]
fn crlf_line_ends_and_byte_order_mark() {
    let text =
        format!("{}---\n{}", gateway(HTTP_SERVER), virtual_service(RULE)).replace('\n', "\r\n");
    let config = load_ok(&text);
    assert_eq!(config.virtual_services[0].origin.document, 2);
    let text = format!("\u{feff}{}", gateway(HTTP_SERVER));
    assert_eq!(load_ok(&text).gateways.len(), 1);
    let text = format!("\u{feff}---\n{}", gateway(HTTP_SERVER));
    assert_eq!(load_ok(&text).gateways[0].origin.document, 1);
}

/// The JWT policy of the "Securing Gateways with HTTPS" walkthrough, as written there.
const SEED_POLICY: &str = r#"apiVersion: "authentication.istio.io/v1alpha1"
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
      jwksUri: "https://raw.githubusercontent.com/istio/istio/release-1.0/security/tools/jwt/samples/jwks.json"
  principalBinding: USE_ORIGIN
"#;

#[test]
fn the_walkthrough_policy_loads() {
    let config = load_ok(SEED_POLICY);
    let policy = config.origin_policy.unwrap();
    assert!(policy.use_origin);
    assert!(!policy.optional);
    let provider = &policy.origins[0].provider;
    assert_eq!(provider.issuer, "testing@secure.istio.io");
    assert_eq!(
        provider.keys,
        JwksSource::Uri(
            "https://raw.githubusercontent.com/istio/istio/release-1.0/security/tools/jwt/samples/jwks.json".into()
        )
    );
    assert_eq!(
        provider.locations,
        [
            TokenLocation::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into()
            },
            TokenLocation::Param("access_token".into()),
        ]
    );
}

fn request_authentication(rules: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1beta1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\nspec:\n  selector:\n    matchLabels:\n      istio: ingressgateway\n  jwtRules:\n{rules}"
    )
}

#[test]
fn request_authentication_fields_load() {
    let config = load_ok(&request_authentication(
        "  - issuer: https://accounts.example.com\n    audiences: [app]\n    fromHeaders:\n    - name: X-Token\n      prefix: 'Token '\n    fromParams: [tok]\n    fromCookies: [session]\n    outputPayloadToHeader: x-jwt-payload\n    outputClaimToHeaders:\n    - header: X-Sub\n      claim: sub\n    forwardOriginalToken: true\n    timeout: 2s\n",
    ));
    let rule = &config.request_authentications[0].rules[0];
    assert_eq!(
        rule.keys,
        JwksSource::Discovery(
            "https://accounts.example.com/.well-known/openid-configuration".into()
        )
    );
    assert_eq!(rule.audiences, ["app"]);
    assert_eq!(
        rule.locations,
        [
            TokenLocation::Header {
                name: "x-token".into(),
                prefix: "Token ".into()
            },
            TokenLocation::Param("tok".into()),
            TokenLocation::Cookie("session".into()),
        ]
    );
    assert_eq!(
        rule.output_payload_to_header.as_deref(),
        Some("x-jwt-payload")
    );
    assert_eq!(
        rule.output_claim_to_headers,
        [("x-sub".to_owned(), "sub".to_owned())]
    );
    assert!(rule.forward_original_token);
    assert_eq!(rule.timeout, Duration::from_secs(2));
}

#[test]
fn authentication_mistakes_name_the_field() {
    let cases = [
        (
            "  - jwksUri: https://k.example.com/jwks\n",
            "spec.jwtRules[0].issuer: required field is missing",
        ),
        (
            "  - issuer: a\n    jwksUri: https://k.example.com/jwks\n    jwks: '{}'\n",
            "spec.jwtRules[0]: jwksUri and jwks are exclusive; use one",
        ),
        (
            "  - issuer: a\n    jwks: '{\"keys\": []}'\n",
            "spec.jwtRules[0].jwks: invalid value (inline key set): Jwks doesn't have any valid public key",
        ),
        (
            "  - issuer: a\n    jwksUri: ftp://k.example.com/jwks\n",
            "spec.jwtRules[0].jwksUri: invalid value \"ftp://k.example.com/jwks\": expected an https:// (or http://) URL",
        ),
        (
            "  - issuer: testing@secure.istio.io\n",
            "spec.jwtRules[0]: without jwksUri or jwks the keys are found through the issuer's OpenID discovery document",
        ),
        (
            "  - issuer: a\n    jwksUri: https://k.example.com/jwks\n    timeout: 0s\n",
            "spec.jwtRules[0].timeout: invalid value \"0s\": expected a duration above 0s",
        ),
        (
            "  - issuer: a\n    jwksUri: https://k.example.com/jwks\n  - issuer: a\n    jwksUri: https://k.example.com/jwks\n",
            "issuer \"a\" is already declared by",
        ),
    ];
    for (rules, want) in cases {
        let e = error(&request_authentication(rules));
        assert!(e.contains(want), "{rules}\n{e}");
    }
    let peers = SEED_POLICY.replace(
        "  principalBinding",
        "  peers:\n  - mtls: {}\n  principalBinding",
    );
    assert!(error(&peers).contains("peers"), "{}", error(&peers));
    let two = format!(
        "{SEED_POLICY}---\n{}",
        SEED_POLICY.replace("\"ingressgateway\"", "other")
    );
    assert!(
        error(&two).contains("one authentication Policy"),
        "{}",
        error(&two)
    );
    let binding = SEED_POLICY.replace("USE_ORIGIN", "USE_BOTH");
    assert!(
        error(&binding).contains("expected USE_PEER or USE_ORIGIN"),
        "{}",
        error(&binding)
    );
}

fn authorization_policy(spec: &str) -> String {
    format!(
        "{}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: authz\n  namespace: foo\nspec:\n{spec}",
        gateway(HTTP_SERVER)
    )
}

#[test]
fn authorization_policy_fields_load() {
    let text = authorization_policy(
        "  selector:\n    matchLabels:\n      istio: ingressgateway\n  action: DENY\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/default/sa/sleep\"]\n        notRequestPrincipals: [\"*\"]\n        ipBlocks: [\"10.0.0.0/8\", \"192.0.2.1\"]\n        notRemoteIpBlocks: [\"2001:db8::/32\"]\n        namespaces: [\"prod\"]\n    to:\n    - operation:\n        hosts: [\"App.Example.com\"]\n        ports: [\"443\"]\n        methods: [\"GET\", \"HEAD\"]\n        notPaths: [\"/public*\", \"*.css\"]\n    when:\n    - key: request.auth.claims[nested][key]\n      values: [\"v\"]\n    - key: source.ip\n      notValues: [\"10.1.0.0/16\"]\n    - key: destination.port\n      values: [\"443\"]\n    - key: request.headers[X-Token]\n      values: [\"*\"]\n",
    );
    let config = load_str(&text, Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"));
    let policy = &config.authorization_policies[0];
    assert_eq!(policy.action, AuthzAction::Deny);
    assert_eq!(policy.rule_name(0), "ns[foo]-policy[authz]-rule[0]");
    let rule = &policy.rules[0];
    let source = &rule.from[0];
    assert_eq!(source.ip_blocks.values.len(), 2);
    assert_eq!(source.request_principals.not_values, vec![ValueMatch::Any]);
    let operation = &rule.to[0];
    assert_eq!(
        operation.hosts.values,
        vec![ValueMatch::Exact("app.example.com".into())]
    );
    assert_eq!(operation.ports.values, vec![443]);
    assert_eq!(
        operation.paths.not_values,
        vec![
            ValueMatch::Prefix("/public".into()),
            ValueMatch::Suffix(".css".into())
        ]
    );
    assert_eq!(
        rule.when[0].key,
        ConditionKey::Claim(vec!["nested".into(), "key".into()])
    );
    assert_eq!(
        rule.when[3].key,
        ConditionKey::RequestHeader("x-token".into())
    );
}

#[test]
fn authorization_mistakes_name_the_field() {
    let cases = [
        (
            "  action: CUSTOM\n  provider:\n    name: ext-authz\n",
            "spec.action: action CUSTOM (an external authorizer) is not implemented by ringress yet; accepted: ALLOW, DENY, AUDIT",
        ),
        (
            "  action: ALOW\n",
            "spec.action: invalid value \"ALOW\": expected ALLOW, DENY, AUDIT or CUSTOM",
        ),
        (
            "  provider:\n    name: ext-authz\n",
            "spec.provider: provider \"ext-authz\" is only for action CUSTOM",
        ),
        (
            "  rules:\n  - from:\n    - source:\n        ipBlocks: [\"10.0.0.0/33\"]\n",
            "spec.rules[0].from[0].source.ipBlocks[0]: invalid value \"10.0.0.0/33\": a prefix length is 0 to 32",
        ),
        (
            "  rules:\n  - from:\n    - source:\n        notRemoteIpBlocks: [\"host\"]\n",
            "spec.rules[0].from[0].source.notRemoteIpBlocks[0]: invalid value \"host\": expected an IP address or a CIDR block like 10.0.0.0/8",
        ),
        (
            "  rules:\n  - from:\n    - source: {}\n",
            "spec.rules[0].from[0].source: a source needs at least one field",
        ),
        (
            "  rules:\n  - from:\n    - {}\n",
            "spec.rules[0].from[0].source: required field is missing",
        ),
        (
            "  rules:\n  - to:\n    - operation:\n        ports: [\"http\"]\n",
            "spec.rules[0].to[0].operation.ports[0]: invalid value \"http\": a port number is 1 to 65535",
        ),
        (
            "  rules:\n  - to:\n    - operation:\n        paths: [\"/a/*/b\"]\n",
            "spec.rules[0].to[0].operation.paths[0]: invalid value \"/a/*/b\": * may only begin or end a value",
        ),
        (
            "  rules:\n  - to:\n    - operation:\n        notPaths: [\"/api/{*}/x\"]\n",
            "spec.rules[0].to[0].operation.notPaths[0]: path templates ({*}, {**}) is not implemented by ringress yet",
        ),
        (
            "  rules:\n  - to:\n    - operation: {}\n",
            "spec.rules[0].to[0].operation: an operation needs at least one field",
        ),
        (
            "  rules:\n  - when:\n    - key: request.time\n      values: [\"x\"]\n",
            "spec.rules[0].when[0].key: invalid value \"request.time\": not a condition key ringress evaluates; accepted: request.headers[<name>]",
        ),
        (
            "  rules:\n  - when:\n    - key: request.auth.claims[]\n      values: [\"x\"]\n",
            "spec.rules[0].when[0].key: invalid value \"request.auth.claims[]\"",
        ),
        (
            "  rules:\n  - when:\n    - key: source.ip\n",
            "spec.rules[0].when[0]: condition \"source.ip\" needs values or notValues",
        ),
        (
            "  rules:\n  - when:\n    - key: destination.port\n      notValues: [\"0\"]\n",
            "spec.rules[0].when[0].notValues[0]: invalid value \"0\": a port number is 1 to 65535",
        ),
        (
            "  rules:\n  - from:\n    - source:\n        ipBlocks: [\"10.0.0.1\"]\n        serviceAccounts: [\"default/sleep\"]\n",
            "serviceAccounts` is not implemented by ringress yet",
        ),
    ];
    for (spec, want) in cases {
        let e = error(&authorization_policy(spec));
        assert!(e.contains(want), "{spec}\n{e}");
    }
    let wrong_api = authorization_policy("  action: DENY\n").replace(
        "security.istio.io/v1\nkind: AuthorizationPolicy",
        "networking.istio.io/v1\nkind: AuthorizationPolicy",
    );
    assert!(
        error(&wrong_api).contains("accepted: security.istio.io/v1, security.istio.io/v1beta1")
    );
}

#[test]
fn query_params_without_headers_port_and_gateways_load() {
    let text = with_routes(&format!(
        "  - match:\n    - queryParams:\n        v: {{exact: \"2\"}}\n        id: {{regex: \"[0-9]+\"}}\n      withoutHeaders:\n        x-canary: {{exact: \"no\"}}\n      port: 8080\n      gateways: [istio-system/gw]\n{ROUTE}"
    ));
    let config = load_ok(&text);
    let m = &config.virtual_services[0].http[0].matches[0];
    assert_eq!(m.query_params.len(), 2);
    assert_eq!(m.query_params[0].0, "v");
    assert!(matches!(&m.query_params[0].1, StringMatch::Exact(v) if v == "2"));
    assert!(matches!(&m.query_params[1].1, StringMatch::Regex(_)));
    assert_eq!(m.without_headers[0].0, "x-canary");
    assert_eq!(m.port, Some(8080));
    assert_eq!(m.gateways, ["gw"]);
}

/// The problem reported for one rule with `policy` (an `http[]` rule's fields),
/// without the location prefix.
fn policy_error(policy: &str) -> String {
    let e = error(&with_routes(&format!("  - {policy}\n{ROUTE}")));
    e.split_once("(VirtualService vs): ")
        .map(|(_, rest)| rest.to_owned())
        .unwrap_or(e)
}

/// Each (rule fields, problem) case is refused with that problem (its start).
fn assert_policy_errors(cases: &[(&str, &str)]) {
    for (policy, want) in cases {
        let got = policy_error(policy);
        assert!(got.starts_with(want), "{policy}:\n got {got}\nwant {want}");
    }
}

#[test]
fn fault_and_cors_policies_load_as_istio_translates_them() {
    let config = load_ok(&with_routes(&format!(
        "  - fault:\n      delay: {{fixedDelay: 2s, percent: 30}}\n      abort: {{httpStatus: 503, percentage: {{value: 0.5}}}}\n    corsPolicy:\n      allowOrigin: [https://old.example]\n      allowMethods: [GET, POST]\n      allowHeaders: [X-A, x-b]\n      maxAge: 1m\n{ROUTE}  - fault: {{abort: {{grpcStatus: RESOURCE_EXHAUSTED}}}}\n    corsPolicy:\n      allowOrigins: [{{regex: \"https://.*[.]example\"}}]\n      allowOrigin: [ignored]\n      unmatchedPreflights: IGNORE\n{ROUTE}"
    )));
    let http = &config.virtual_services[0].http;
    let fault = http[0].policies.fault.as_ref().unwrap();
    let delay = fault.delay.unwrap();
    assert_eq!(
        (delay.fixed, delay.share.per_million),
        (Duration::from_secs(2), 300_000)
    );
    let abort = fault.abort.unwrap();
    assert_eq!((abort.status, abort.share.per_million), (503, 5_000));
    assert_eq!(abort.grpc_status, None);
    let cors = http[0].policies.cors.as_ref().unwrap();
    assert!(cors.allows("https://old.example") && !cors.allows("https://new.example"));
    assert_eq!(cors.allow_methods, "GET,POST");
    assert_eq!(cors.allow_headers, "X-A,x-b");
    assert_eq!(cors.max_age, Some(60));
    assert!(cors.forward_unmatched_preflights);
    // An abort without a percentage aborts no request (Istio's translation).
    let fault = http[1].policies.fault.as_ref().unwrap();
    let abort = fault.abort.unwrap();
    assert_eq!((abort.status, abort.grpc_status), (200, Some(8)));
    assert_eq!(abort.share.per_million, 0);
    let cors = http[1].policies.cors.as_ref().unwrap();
    assert!(cors.allows("https://a.example") && !cors.allows("ignored"));
    assert!(!cors.forward_unmatched_preflights);
}

#[test]
fn fault_and_cors_policy_errors_name_their_field() {
    let cases = [
        (
            "fault: {}",
            "spec.http[0].fault: HTTP fault injection must have an abort and/or a delay",
        ),
        (
            "fault: {abort: {percentage: {value: 10}}}",
            "spec.http[0].fault.abort.httpStatus: required field is missing",
        ),
        (
            "fault: {abort: {httpStatus: 503, grpcStatus: UNAVAILABLE}}",
            "spec.http[0].fault.abort: httpStatus and grpcStatus are exclusive; use one",
        ),
        (
            "fault: {abort: {grpcStatus: UNAVAIL}}",
            "spec.http[0].fault.abort.grpcStatus: invalid value \"UNAVAIL\": not a gRPC status; expected one of OK, CANCELLED,",
        ),
        (
            "fault: {abort: {httpStatus: 600}}",
            "spec.http[0].fault.abort.httpStatus: invalid value 600: HTTP status 600 is not in range 200-599",
        ),
        (
            "fault: {abort: {httpStatus: 503, percentage: {value: 101}}}",
            "spec.http[0].fault.abort.percentage.value: invalid value 101: percentage 101 is not in range 0..100",
        ),
        (
            "fault: {delay: {percent: 50}}",
            "spec.http[0].fault.delay.fixedDelay: required field is missing",
        ),
        (
            "fault: {delay: {fixedDelay: 100us}}",
            "spec.http[0].fault.delay.fixedDelay: invalid value \"100us\": duration must be greater than 1ms",
        ),
        (
            "fault: {delay: {fixedDelay: 1s, percent: -1}}",
            "spec.http[0].fault.delay.percent: invalid value -1: percentage is 0 to 100",
        ),
        (
            "corsPolicy: {allowMethods: [FETCH]}",
            "spec.http[0].corsPolicy.allowMethods[0]: invalid value \"FETCH\": expected one of GET, HEAD, POST, PUT, PATCH, DELETE, CONNECT, OPTIONS, TRACE, *",
        ),
        (
            "corsPolicy: {allowHeaders: [\"x a\"]}",
            "spec.http[0].corsPolicy.allowHeaders[0]: invalid value \"x a\": expected an HTTP header name (letters, digits and !#$%&'*+-.^_`|~) or *",
        ),
        (
            "corsPolicy: {maxAge: 1500ms}",
            "spec.http[0].corsPolicy.maxAge: invalid value \"1500ms\": max_age duration is accurate only to seconds precision",
        ),
        (
            "corsPolicy: {unmatchedPreflights: DROP}",
            "spec.http[0].corsPolicy.unmatchedPreflights: invalid value \"DROP\": expected FORWARD or IGNORE",
        ),
        (
            "corsPolicy: {allowOrigins: [{exact: \"\"}]}",
            "spec.http[0].corsPolicy.allowOrigins[0]: invalid value \"\": an allowed origin cannot be empty",
        ),
        (
            "corsPolicy: {allowOrigins: [{regex: \"(\"}]}",
            "spec.http[0].corsPolicy.allowOrigins[0].regex",
        ),
    ];
    assert_policy_errors(&cases);
}

#[test]
fn mirrors_load_with_istios_shares() {
    let config = load_ok(&with_routes(&format!(
        "  - mirror: {{host: Shadow, port: {{number: 8000}}}}\n{ROUTE}\
         \x20 - mirror: {{host: shadow}}\n    mirrorPercentage: {{value: 12.5}}\n{ROUTE}\
         \x20 - mirror: {{host: shadow}}\n    mirror_percent: 30\n{ROUTE}\
         \x20 - mirror: {{host: shadow}}\n    mirrorPercentage: {{value: 0}}\n{ROUTE}\
         \x20 - mirrors:\n    - destination: {{host: a}}\n    - destination: {{host: b}}\n      percentage: {{value: 0}}\n    - destination: {{host: c}}\n      percentage: {{value: 1}}\n{ROUTE}"
    )));
    let shares = |i: usize| -> Vec<(String, Option<u16>, u32)> {
        config.virtual_services[0].http[i]
            .policies
            .mirrors
            .iter()
            .map(|m| (m.host.clone(), m.port, m.share.per_million))
            .collect()
    };
    assert_eq!(
        shares(0),
        vec![("shadow".to_owned(), Some(8000), 1_000_000)]
    );
    assert_eq!(shares(1), vec![("shadow".to_owned(), None, 125_000)]);
    assert_eq!(shares(2), vec![("shadow".to_owned(), None, 300_000)]);
    // A share of 0 is no mirror at all.
    assert_eq!(shares(3), vec![]);
    assert_eq!(
        shares(4),
        vec![
            ("a".to_owned(), None, 1_000_000),
            ("c".to_owned(), None, 10_000)
        ]
    );
}

#[test]
fn mirror_and_route_conflicts_are_errors() {
    let cases = [
        (
            "mirror: {host: a}\n    mirrors: [{destination: {host: b}}]",
            "spec.http[0]: HTTP route cannot contain both mirror and mirrors",
        ),
        (
            "mirrors: [{percentage: {value: 5}}]",
            "spec.http[0].mirrors[0].destination: required field is missing",
        ),
        (
            "mirror: {host: a}\n    mirrorPercentage: {value: 150}",
            "spec.http[0].mirrorPercentage.value: invalid value 150: percentage 150 is not in range 0..100",
        ),
        (
            "mirror: {host: \"*.a\"}",
            "spec.http[0].mirror.host: invalid value",
        ),
    ];
    assert_policy_errors(&cases);
    // Istio refuses a fault beside a redirect or a direct response.
    for (action, name) in [
        ("redirect: {uri: /x}", "redirect"),
        ("directResponse: {status: 200}", "direct_response"),
    ] {
        let text = with_routes(&format!(
            "  - fault: {{abort: {{httpStatus: 500}}}}\n    {action}\n"
        ));
        let e = error(&text);
        assert!(
            e.ends_with(&format!(
                "spec.http[0].fault: HTTP route cannot contain both fault and {name}"
            )),
            "{e}"
        );
    }
}
// ---------------------------------------------------------------------------------------
// TLS passthrough and TCP

const PASSTHROUGH_SERVER: &str = "  - port:\n      number: 443\n      name: tls\n      protocol: TLS\n    hosts:\n    - \"*.example.com\"\n    tls:\n      mode: PASSTHROUGH\n";

const TCP_SERVER: &str =
    "  - port:\n      number: 5432\n      name: db\n      protocol: TCP\n    hosts:\n    - \"*\"\n";

/// A Gateway with [`PASSTHROUGH_SERVER`] and [`TCP_SERVER`], and a VirtualService on it
/// for `*.example.com` whose `spec` goes on with `routes` (`tls:` or `tcp:`, from
/// line 31).
fn l4(routes: &str) -> String {
    format!(
        "{}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs\nspec:\n  hosts:\n  - \"*.example.com\"\n  gateways:\n  - gw\n{routes}",
        gateway(&format!("{PASSTHROUGH_SERVER}{TCP_SERVER}"))
    )
}

const TLS_ROUTE_TO_A: &str =
    "    route:\n    - destination:\n        host: a\n        port: {number: 443}\n";

#[test]
fn passthrough_and_tcp_servers_and_their_routes_load() {
    let config = load_ok(&l4(&format!(
        "  tls:\n  - match:\n    - sniHosts: [a.example.com, \"*.b.example.com\"]\n      port: 443\n      gateways: [gw]\n{TLS_ROUTE_TO_A}  tcp:\n  - match:\n    - port: 5432\n    route:\n    - destination: {{host: db}}\n      weight: 60\n    - destination: {{host: db2}}\n      weight: 40\n"
    )));
    let servers = &config.gateways[0].servers;
    assert_eq!(servers[0].protocol, Protocol::TlsPassthrough);
    assert_eq!(servers[1].protocol, Protocol::Tcp);
    let vs = &config.virtual_services[0];
    assert!(vs.http.is_empty());
    let m = &vs.tls[0].matches[0];
    assert_eq!(
        m.sni_hosts,
        [
            HostPattern::Exact("a.example.com".into()),
            HostPattern::Suffix(".b.example.com".into())
        ]
    );
    assert_eq!(
        (m.port, m.gateways.as_slice()),
        (Some(443), &["gw".to_owned()][..])
    );
    assert_eq!(vs.tls[0].route[0].port, Some(443));
    assert_eq!(vs.tcp[0].matches[0].port, Some(5432));
    let weights: Vec<u32> = vs.tcp[0].route.iter().map(|d| d.weight).collect();
    assert_eq!(weights, [60, 40]);
}

#[test]
fn tls_and_tcp_route_errors_name_their_fields() {
    // Istio requires a match with sniHosts on every tls route.
    assert_eq!(
        error(&l4(
            "  tls:\n  - route:\n    - destination:\n        host: a\n"
        )),
        "/etc/ringress/gw.yaml:32:5: document 2 (VirtualService vs): spec.tls[0].match: a tls route needs at least one match with sniHosts (Istio requires it)"
    );
    assert_eq!(
        error(&l4(&format!(
            "  tls:\n  - match:\n    - port: 443\n{TLS_ROUTE_TO_A}"
        ))),
        "/etc/ringress/gw.yaml:33:7: document 2 (VirtualService vs): spec.tls[0].match[0].sniHosts: a tls match needs at least one SNI host (Istio requires it)"
    );
    // An SNI host outside the VirtualService's hosts.
    assert_eq!(
        error(&l4(&format!(
            "  tls:\n  - match:\n    - sniHosts: [other.org]\n{TLS_ROUTE_TO_A}"
        ))),
        "/etc/ringress/gw.yaml:33:18: document 2 (VirtualService vs): spec.tls[0].match[0].sniHosts[0]: SNI host other.org is not covered by this VirtualService's hosts (*.example.com), as Istio requires"
    );
    // A match's Gateway must be one of the VirtualService's.
    assert_eq!(
        error(&l4(
            "  tcp:\n  - match:\n    - gateways: [other]\n    route:\n    - destination: {host: db}\n"
        )),
        "/etc/ringress/gw.yaml:33:18: document 2 (VirtualService vs): spec.tcp[0].match[0].gateways[0]: Gateway \"other\" is not in this VirtualService's gateways (gw): the match could never apply"
    );
    // The route is required; weights add up to 100 as for http.
    assert_eq!(
        error(&l4("  tcp:\n  - match:\n    - port: 5432\n")),
        "/etc/ringress/gw.yaml:32:5: document 2 (VirtualService vs): spec.tcp[0].route: required field is missing"
    );
    assert!(
        error(&l4("  tcp:\n  - route:\n    - destination: {host: a}\n      weight: 50\n    - destination: {host: b}\n      weight: 20\n"))
            .ends_with("spec.tcp[0].route: destination weights add up to 70 (50 + 20); they must add up to 100")
    );
    // RouteDestination has no headers (that is HTTPRouteDestination).
    assert!(
        error(&l4(
            "  tcp:\n  - route:\n    - destination: {host: a}\n      headers: {}\n"
        ))
        .contains("spec.tcp[0].route[0].headers: unknown field `headers`")
    );
    // Mesh-only selectors say why.
    for (section, field) in [
        ("tls", "sourceLabels"),
        ("tls", "destinationSubnets"),
        ("tcp", "sourceNamespace"),
        ("tcp", "sourceSubnet"),
    ] {
        let sni = if section == "tls" {
            "      sniHosts: [a.example.com]\n"
        } else {
            ""
        };
        let e = error(&l4(&format!(
            "  {section}:\n  - match:\n    - {field}: {{}}\n{sni}{TLS_ROUTE_TO_A}"
        )));
        assert!(
            e.contains(&format!("spec.{section}[0].match[0].{field}: `{field}` selects by where a connection comes from or goes to inside a mesh")),
            "{e}"
        );
    }
}

#[test]
fn passthrough_and_tcp_server_tls_blocks() {
    let tls_server = |tls: &str| {
        gateway(&format!(
            "  - port: {{number: 443, name: tls, protocol: TLS}}\n    hosts: [a.example.com]\n{tls}"
        ))
    };
    assert_eq!(
        error(&tls_server("")),
        "/etc/ringress/gw.yaml:7:5: document 1 (Gateway gw): spec.servers[0].tls: a TLS server needs tls with mode PASSTHROUGH (the upstream terminates TLS)"
    );
    assert_eq!(
        error(&tls_server(
            "    tls:\n      mode: SIMPLE\n      credentialName: c\n"
        )),
        "/etc/ringress/gw.yaml:10:7: document 1 (Gateway gw): spec.servers[0].tls.mode: tls mode SIMPLE on a TLS server (TLS terminated, then tcp routes) is not implemented by ringress yet; accepted: PASSTHROUGH; to terminate TLS, use protocol HTTPS"
    );
    assert!(
        error(&tls_server("    tls:\n      mode: AUTO_PASSTHROUGH\n"))
            .contains("AUTO_PASSTHROUGH routes by an SNI")
    );
    assert_eq!(
        error(&tls_server(
            "    tls:\n      mode: PASSTHROUGH\n      credentialName: c\n"
        )),
        "/etc/ringress/gw.yaml:11:7: document 1 (Gateway gw): spec.servers[0].tls.credentialName: `credentialName` has no effect with mode PASSTHROUGH: the upstream terminates TLS with its own certificate"
    );
    assert_eq!(
        error(&gateway(
            "  - port: {number: 5432, name: db, protocol: TCP}\n    hosts: [\"*\"]\n    tls:\n      mode: PASSTHROUGH\n"
        )),
        "/etc/ringress/gw.yaml:9:5: document 1 (Gateway gw): spec.servers[0].tls: a TCP server takes no tls block; for TLS routed by SNI use protocol TLS with tls.mode PASSTHROUGH"
    );
    // A port is either passthrough or terminated, not both.
    let both = format!(
        "{PASSTHROUGH_SERVER}  - port:\n      number: 443\n      name: https\n      protocol: HTTPS\n    hosts:\n    - a.example.org\n    tls:\n      mode: SIMPLE\n      credentialName: c\n"
    );
    assert!(
        error(&gateway(&both)).contains("port 443 is already served as TLS by document 1 (Gateway gw) spec.servers[0]; servers sharing a port must use the same protocol")
    );
}
#[test]
fn destination_rule_tls_and_port_level_settings() {
    let dr = |body: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: dr\nspec:\n  host: httpbin\n  trafficPolicy:\n{body}"
        )
    };
    let config = load_ok(&dr(
        "    tls:\n      mode: SIMPLE\n      caCertificates: ca.pem\n      sni: Backend.Internal\n      subjectAltNames: [backend.internal]\n    portLevelSettings:\n    - port:\n        number: 8080\n      tls:\n        mode: DISABLE\n    - port:\n        number: 9443\n      loadBalancer:\n        simple: RANDOM\n",
    ));
    let rule = &config.destination_rules[0];
    let tls = rule.traffic_policy.tls.as_ref().expect("tls");
    assert_eq!(tls.mode, ClientTlsMode::Simple);
    assert_eq!(tls.sni.as_deref(), Some("backend.internal"));
    assert_eq!(tls.subject_alt_names, ["backend.internal"]);
    assert_eq!(
        tls.credential,
        ClientCredential::Files {
            cert_and_key: None,
            ca: Some(PathBuf::from("/etc/ringress/ca.pem")),
        }
    );
    // A port's field replaces the top-level one whole; the others stay.
    let plain = rule.policy_for(8080, None);
    assert_eq!(plain.tls.map(|t| t.mode), Some(ClientTlsMode::Disable));
    let random = rule.policy_for(9443, None);
    assert_eq!(random.load_balancer, Some(LoadBalancer::Random.into()));
    assert_eq!(random.tls.as_ref(), Some(tls));
    assert_eq!(rule.policy_for(1, None), rule.traffic_policy);

    let mutual = load_ok(&dr(
        "    tls:\n      mode: MUTUAL\n      clientCertificate: /c.pem\n      privateKey: /k.pem\n      insecureSkipVerify: true\n",
    ));
    let tls = mutual.destination_rules[0]
        .traffic_policy
        .tls
        .clone()
        .expect("tls");
    assert!(tls.insecure_skip_verify);
    assert_eq!(
        tls.credential,
        ClientCredential::Files {
            cert_and_key: Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem"))),
            ca: None,
        }
    );
    let named = load_ok(&dr(
        "    tls:\n      mode: MUTUAL\n      credentialName: client\n",
    ));
    assert_eq!(
        named.destination_rules[0]
            .traffic_policy
            .tls
            .as_ref()
            .map(|t| &t.credential),
        Some(&ClientCredential::Named("client".into()))
    );

    for (body, want) in [
        (
            "    tls:\n      mode: ISTIO_MUTUAL\n",
            "spec.trafficPolicy.tls.mode: tls mode ISTIO_MUTUAL (it needs a mesh's workload certificates) is not implemented by ringress yet; accepted: DISABLE, SIMPLE, MUTUAL",
        ),
        (
            "    tls:\n      mode: STRICT\n",
            "spec.trafficPolicy.tls.mode: invalid value \"STRICT\": accepted tls modes: DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL",
        ),
        (
            "    tls:\n      mode: MUTUAL\n      clientCertificate: /c.pem\n",
            "spec.trafficPolicy.tls.privateKey: tls mode MUTUAL needs privateKey, or credentialName",
        ),
        (
            "    tls:\n      mode: SIMPLE\n      credentialName: c\n      caCertificates: /ca.pem\n",
            "spec.trafficPolicy.tls.caCertificates: credentialName and caCertificates are both set; the credential holds the client certificate, its key and the CA (Istio: cannot specify client certificates or CA certificate or CA Crl if credentialName is set)",
        ),
        (
            "    tls:\n      mode: SIMPLE\n      sni: \"not a name\"\n",
            "spec.trafficPolicy.tls.sni: invalid value \"not a name\": expected a DNS name or an IP address",
        ),
        (
            "    tls:\n      mode: SIMPLE\n      subjectAltNames: [\"\"]\n",
            "spec.trafficPolicy.tls.subjectAltNames[0]: invalid value \"\": expected a name the upstream's certificate carries",
        ),
        (
            "    portLevelSettings:\n    - tls:\n        mode: SIMPLE\n",
            "spec.trafficPolicy.portLevelSettings[0].port: required field is missing",
        ),
        (
            "    portLevelSettings:\n    - port:\n        number: 80\n      tls:\n        mode: ISTIO_MUTUAL\n",
            "spec.trafficPolicy.portLevelSettings[0].tls.mode: tls mode ISTIO_MUTUAL (it needs a mesh's workload certificates) is not implemented by ringress yet; accepted: DISABLE, SIMPLE, MUTUAL",
        ),
        (
            "    portLevelSettings:\n    - port:\n        number: 80\n    - port:\n        number: 80\n",
            "spec.trafficPolicy.portLevelSettings[1].port.number: port 80 already has portLevelSettings",
        ),
        (
            "    portLevelSettings:\n    - port:\n        number: 80\n      connectionPool:\n        tcp:\n          maxConnections: 0\n",
            "spec.trafficPolicy.portLevelSettings[0].connectionPool.tcp.maxConnections: invalid value 0: expected a number of connections from 1 to 4294967295",
        ),
    ] {
        let e = error(&dr(body));
        assert!(e.ends_with(want), "{body}\n{e}");
    }
}
