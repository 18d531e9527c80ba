//! Route lookup cost: `RouteTable::find` on a port serving 50 exact hosts and 10
//! wildcard hosts, each with 10 rules (uri prefixes and exact paths, one header
//! condition, one regex), as a shard calls it once per request head. Cases: the first
//! rule of an exact host, the last rule (a scan of all ten), a wildcard host (a suffix
//! lookup per label), a header match, and a miss (404). It shows what host bucketing
//! and first-match scanning cost, and that no case allocates or grows with the number
//! of hosts.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use regex::Regex;
use ringress::config::{
    Config, Endpoint, Gateway, HeaderOperations, HostPattern, HttpRoute, Origin, Protocol,
    Resolution, RouteAction, RouteMatch, Server, ServiceEntry, ServicePort, StringMatch,
    VirtualService, WeightedDestination,
};
use ringress::route::{Headers, NoHeaders, RouteRequest, RouteTable};
use ringress::upstream::Clusters;

const HOSTS: usize = 50;
const WILDCARD_HOSTS: usize = 10;
const RULES: usize = 10;

fn origin(kind: &str, name: &str) -> Origin {
    Origin {
        file: PathBuf::from("bench.yaml"),
        document: 1,
        kind: kind.to_owned(),
        name: name.to_owned(),
    }
}

fn rule(i: usize) -> HttpRoute {
    let m = match i {
        0 => RouteMatch {
            uri: Some(StringMatch::Prefix("/status".to_owned())),
            ..RouteMatch::default()
        },
        3 => RouteMatch {
            uri: Some(StringMatch::Prefix("/api".to_owned())),
            headers: vec![("x-canary".to_owned(), StringMatch::Exact("yes".to_owned()))],
            ..RouteMatch::default()
        },
        7 => RouteMatch {
            uri: Some(StringMatch::Regex(
                Regex::new("^(?:/items/[0-9]+)$").unwrap(),
            )),
            ..RouteMatch::default()
        },
        i if i % 2 == 0 => RouteMatch {
            uri: Some(StringMatch::Exact(format!("/exact/{i}"))),
            ..RouteMatch::default()
        },
        i => RouteMatch {
            uri: Some(StringMatch::Prefix(format!("/prefix/{i}/"))),
            method: Some(StringMatch::Exact("GET".to_owned())),
            ..RouteMatch::default()
        },
    };
    HttpRoute {
        name: None,
        matches: vec![m],
        action: RouteAction::Route(vec![WeightedDestination {
            host: "httpbin".to_owned(),
            port: Some(8000),
            subset: None,
            weight: 0,
        }]),
        rewrite: None,
        timeout: None,
        retries: None,
        headers: HeaderOperations::default(),
        policies: Default::default(),
    }
}

fn config() -> Config {
    let mut hosts: Vec<HostPattern> = (0..HOSTS)
        .map(|i| HostPattern::Exact(format!("host{i}.example.com")))
        .collect();
    hosts.extend((0..WILDCARD_HOSTS).map(|i| HostPattern::Suffix(format!(".zone{i}.example.org"))));
    let virtual_services = hosts
        .iter()
        .map(|h| VirtualService {
            origin: origin("VirtualService", &h.to_string()),
            name: h.to_string(),
            namespace: None,
            hosts: vec![h.clone()],
            gateways: vec!["gw".to_owned()],
            http: (0..RULES).map(rule).collect(),
            tls: vec![],
            tcp: vec![],
        })
        .collect();
    Config {
        source: PathBuf::from("bench.yaml"),
        gateways: vec![Gateway {
            origin: origin("Gateway", "gw"),
            name: "gw".to_owned(),
            namespace: None,
            servers: vec![Server {
                port: 443,
                port_name: "https".to_owned(),
                protocol: Protocol::Https,
                bind: None,
                hosts: vec![HostPattern::Any],
                tls: None,
                https_redirect: false,
            }],
        }],
        virtual_services,
        service_entries: vec![ServiceEntry {
            origin: origin("ServiceEntry", "httpbin"),
            name: "httpbin".to_owned(),
            hosts: vec!["httpbin".to_owned()],
            ports: vec![ServicePort {
                number: 8000,
                name: "http".to_owned(),
                protocol: "HTTP".to_owned(),
                target_port: None,
            }],
            resolution: Resolution::Static,
            endpoints: vec![Endpoint {
                address: "127.0.0.1".to_owned(),
                ports: Default::default(),
                weight: None,
                labels: Default::default(),
            }],
        }],
        destination_rules: vec![],
        ..Config::default()
    }
}

struct Canary;

impl Headers for Canary {
    fn get(&self, name: &str) -> Option<&[u8]> {
        (name == "x-canary").then_some(b"yes".as_slice())
    }
}

fn request<'a>(host: &'a str, path: &'a str, headers: &'a dyn Headers) -> RouteRequest<'a> {
    RouteRequest {
        host,
        path,
        method: "GET",
        scheme: "https",
        headers,
    }
}

fn bench_find(c: &mut Criterion) {
    let config = config();
    let clusters = Clusters::build(&config).expect("bench clusters");
    let tables = RouteTable::build_all(&config, &clusters).expect("bench routes");
    let table = &tables[&443];
    let cases = [
        (
            "exact_host_first_rule",
            request("host37.example.com", "/status/418", &NoHeaders),
        ),
        (
            "exact_host_last_rule",
            request("host37.example.com", "/prefix/9/x?q=1", &NoHeaders),
        ),
        (
            "exact_host_regex_rule",
            request("host37.example.com", "/items/1234", &NoHeaders),
        ),
        (
            "exact_host_header_rule",
            request("host37.example.com", "/api/v1", &Canary),
        ),
        (
            "wildcard_host_first_rule",
            request("a.b.zone7.example.org", "/status/200", &NoHeaders),
        ),
        (
            "unknown_host",
            request("nowhere.example.net", "/status/200", &NoHeaders),
        ),
        (
            "no_rule_matches",
            request("host37.example.com", "/headers", &NoHeaders),
        ),
    ];
    let expected = [Some(0), Some(9), Some(7), Some(3), Some(0), None, None];
    for ((name, req), rule) in cases.iter().zip(expected) {
        assert_eq!(table.find(req).map(|r| r.rule), rule, "{name}");
    }
    let mut group = c.benchmark_group("route_find");
    for (name, req) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| black_box(table.find(black_box(req))).is_some())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_find);
criterion_main!(benches);
