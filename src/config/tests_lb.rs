//! Tests of DestinationRule `subsets[]`, `loadBalancer.consistentHash` and ServiceEntry
//! endpoint `labels`: what loads into the model and the exact message of each mistake.

use std::time::Duration;

use super::tests::{error, load_ok};
use super::*;

fn dr(body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: dr\nspec:\n  host: httpbin\n{body}"
    )
}

#[test]
fn subsets_with_labels_and_their_own_policy() {
    let config = load_ok(&dr(
        "  trafficPolicy:\n    loadBalancer:\n      simple: RANDOM\n  subsets:\n  - name: v1\n    labels: {version: v1, app.kubernetes.io/name: httpbin}\n  - name: v2\n    labels: {version: v2}\n    trafficPolicy:\n      loadBalancer:\n        consistentHash:\n          httpHeaderName: X-User\n      connectionPool:\n        tcp: {maxConnections: 3}\n",
    ));
    let rule = &config.destination_rules[0];
    assert_eq!(
        rule.traffic_policy.load_balancer,
        Some(LoadBalancer::Random.into())
    );
    assert_eq!(rule.subsets.len(), 2);
    let v1 = &rule.subsets[0];
    assert_eq!(v1.name, "v1");
    assert_eq!(v1.labels.get("version").map(String::as_str), Some("v1"));
    assert_eq!(v1.traffic_policy, TrafficPolicy::default());
    let v2 = &rule.subsets[1];
    let lb = v2.traffic_policy.load_balancer.as_ref().unwrap();
    assert_eq!(lb.simple, LoadBalancer::RoundRobin);
    assert_eq!(
        lb.consistent_hash,
        Some(ConsistentHash {
            key: HashKey::Header("x-user".into()),
            table: HashTable::RingHash {
                minimum_ring_size: DEFAULT_MINIMUM_RING_SIZE
            },
        })
    );
    assert_eq!(
        v2.traffic_policy.connection_pool.unwrap().max_connections,
        Some(3)
    );
    let selects = |labels: &[(&str, &str)]| {
        v1.selects(
            &labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    };
    assert!(selects(&[
        ("version", "v1"),
        ("app.kubernetes.io/name", "httpbin"),
        ("zone", "a")
    ]));
    assert!(!selects(&[("version", "v1")]));
}

#[test]
fn subset_mistakes() {
    let e = |body: &str| error(&dr(body));
    assert_eq!(
        e("  subsets:\n  - labels: {version: v1}\n"),
        "/etc/ringress/gw.yaml:8:5: document 1 (DestinationRule dr): spec.subsets[0].name: required field is missing"
    );
    assert_eq!(
        e("  subsets:\n  - name: V1\n"),
        "/etc/ringress/gw.yaml:8:5: document 1 (DestinationRule dr): spec.subsets[0].name: invalid value \"V1\": a subset name is a DNS-1123 label: lower-case letters, digits and '-', at most 63"
    );
    assert_eq!(
        e("  subsets:\n  - name: v1\n  - name: v1\n"),
        "/etc/ringress/gw.yaml:9:5: document 1 (DestinationRule dr): spec.subsets[1].name: subset v1 is defined twice"
    );
    assert_eq!(
        e("  subsets:\n  - name: v1\n    labels: {version: \"-v1\"}\n"),
        "/etc/ringress/gw.yaml:9:14: document 1 (DestinationRule dr): spec.subsets[0].labels.version: invalid value \"-v1\": a label value is at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    );
    assert_eq!(
        e(
            "  subsets:\n  - name: v1\n    trafficPolicy:\n      loadBalancer:\n        simple: FASTEST\n"
        ),
        "/etc/ringress/gw.yaml:11:9: document 1 (DestinationRule dr): spec.subsets[0].trafficPolicy.loadBalancer.simple: invalid value \"FASTEST\": accepted: ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM"
    );
    assert!(
        e("  subsets:\n  - name: v1\n    trafficPolicy:\n      tunnel: {}\n")
            .ends_with("spec.subsets[0].trafficPolicy.tunnel: field `tunnel` is not implemented by ringress yet")
    );
}

#[test]
fn consistent_hash_keys_and_tables() {
    let hash = |body: &str| {
        let config = load_ok(&dr(&format!(
            "  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n{body}"
        )));
        config.destination_rules[0]
            .traffic_policy
            .load_balancer
            .clone()
            .and_then(|b| b.consistent_hash)
            .unwrap()
    };
    assert_eq!(
        hash("        useSourceIp: true\n        maglev: {tableSize: 7}\n"),
        ConsistentHash {
            key: HashKey::SourceIp,
            table: HashTable::Maglev { table_size: 7 },
        }
    );
    assert_eq!(
        hash("        httpQueryParameterName: user\n        ringHash: {minimumRingSize: 64}\n"),
        ConsistentHash {
            key: HashKey::QueryParameter("user".into()),
            table: HashTable::RingHash {
                minimum_ring_size: 64
            },
        }
    );
    assert_eq!(
        hash(
            "        httpCookie: {name: sticky, path: /, ttl: 60s}\n        minimumRingSize: 10\n"
        ),
        ConsistentHash {
            key: HashKey::Cookie {
                name: "sticky".into(),
                path: Some("/".into()),
                ttl: Duration::from_secs(60),
            },
            table: HashTable::RingHash {
                minimum_ring_size: 10
            },
        }
    );
    assert_eq!(
        hash("        httpHeaderName: x-user\n        maglev: {}\n").table,
        HashTable::Maglev {
            table_size: DEFAULT_MAGLEV_TABLE_SIZE
        }
    );
}

#[test]
fn consistent_hash_mistakes() {
    let e = |body: &str| error(&dr(&format!("  trafficPolicy:\n    loadBalancer:\n{body}")));
    let prefix = "document 1 (DestinationRule dr): spec.trafficPolicy.loadBalancer";
    let cases = [
        (
            "      simple: RANDOM\n      consistentHash: {useSourceIp: true}\n",
            ".consistentHash: loadBalancer takes one of simple and consistentHash, not both",
        ),
        (
            "      consistentHash: {useSourceIp: false}\n",
            ".consistentHash: consistentHash needs one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
        ),
        (
            "      consistentHash: {httpHeaderName: a, useSourceIp: true}\n",
            ".consistentHash.useSourceIp: consistentHash takes one hash key; httpHeaderName is set already",
        ),
        (
            "      consistentHash: {httpCookie: {name: a}}\n",
            ".consistentHash.httpCookie.ttl: ttl required for httpCookie",
        ),
        (
            "      consistentHash: {httpCookie: {ttl: 0s}}\n",
            ".consistentHash.httpCookie.name: name required for httpCookie",
        ),
        (
            "      consistentHash: {httpHeaderName: \"a b\"}\n",
            ".consistentHash.httpHeaderName: invalid value \"a b\": expected an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)",
        ),
        (
            "      consistentHash: {useSourceIp: true, maglev: {tableSize: 100}}\n",
            ".consistentHash.maglev.tableSize: invalid value 100: tableSize must be a prime number up to 5000011",
        ),
        (
            "      consistentHash: {useSourceIp: true, maglev: {}, ringHash: {}}\n",
            ".consistentHash.maglev: consistentHash takes one of ringHash and maglev",
        ),
        (
            "      consistentHash: {useSourceIp: true, minimumRingSize: 5, ringHash: {}}\n",
            ".consistentHash.minimumRingSize: only one of minimumRingSize and ringHash or maglev can be set",
        ),
        (
            "      consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 99999999}}\n",
            ".consistentHash.ringHash.minimumRingSize: invalid value 99999999: expected a ring size from 1 to 8388608",
        ),
        (
            "      consistentHash: {httpCookie: {name: a, ttl: 1s, attributes: []}}\n",
            ".consistentHash.httpCookie.attributes: field `attributes` is not implemented by ringress yet",
        ),
    ];
    for (body, expected) in cases {
        let message = e(body);
        assert!(
            message.contains(&format!("{prefix}{expected}")),
            "{body}: {message}"
        );
    }
}

#[test]
fn endpoint_labels_are_read_and_checked() {
    let se = |labels: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se\nspec:\n  hosts: [httpbin]\n  ports:\n  - {{number: 80, name: http}}\n  resolution: STATIC\n  endpoints:\n  - address: 10.0.0.1\n    labels: {labels}\n"
        )
    };
    let config = load_ok(&se("{version: v1, track: \"\"}"));
    let labels = &config.service_entries[0].endpoints[0].labels;
    assert_eq!(labels.get("version").map(String::as_str), Some("v1"));
    assert_eq!(labels.get("track").map(String::as_str), Some(""));
    assert_eq!(
        error(&se("{\"/x\": v1}")),
        "/etc/ringress/gw.yaml:12:14: document 1 (ServiceEntry se): spec.endpoints[0].labels./x: invalid value \"/x\": expected a label name"
    );
}

#[test]
fn connection_pool_request_limits() {
    let pool = |http: &str| {
        let config = load_ok(&dr(&format!(
            "  trafficPolicy:\n    connectionPool:\n      http: {http}\n"
        )));
        config.destination_rules[0]
            .traffic_policy
            .connection_pool
            .unwrap_or_default()
            .requests
    };
    assert_eq!(
        pool(
            "{http1MaxPendingRequests: 5, maxRequestsPerConnection: 1, maxRetries: 2, http2MaxRequests: 7}"
        ),
        RequestLimits {
            max_pending: Some(5),
            max_requests_per_connection: Some(1),
            max_retries: Some(2),
            max_requests: Some(7),
        }
    );
    // 0 is Istio's unset.
    assert_eq!(
        pool("{http1MaxPendingRequests: 0, maxRequestsPerConnection: 0, maxRetries: 0}"),
        RequestLimits::default()
    );
    assert_eq!(
        error(&dr(
            "  trafficPolicy:\n    connectionPool:\n      http: {maxRetries: -1}\n"
        )),
        "/etc/ringress/gw.yaml:9:14: document 1 (DestinationRule dr): spec.trafficPolicy.connectionPool.http.maxRetries: invalid value -1: expected a number from 0 (unset) to 4294967295"
    );
    assert!(
        error(&dr(
            "  trafficPolicy:\n    connectionPool:\n      http: {useClientProtocol: true}\n"
        ))
        .ends_with("field `useClientProtocol` is not implemented by ringress yet")
    );
}

#[test]
fn outlier_detection_with_istios_defaults() {
    let od = |body: &str| {
        let config = load_ok(&dr(&format!(
            "  trafficPolicy:\n    outlierDetection: {body}\n"
        )));
        config.destination_rules[0]
            .traffic_policy
            .outlier_detection
            .unwrap()
    };
    assert_eq!(
        od("{}"),
        OutlierDetection {
            consecutive_5xx: Some(DEFAULT_CONSECUTIVE_5XX),
            consecutive_gateway: None,
            interval: DEFAULT_OUTLIER_INTERVAL,
            base_ejection_time: DEFAULT_BASE_EJECTION_TIME,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
            min_health_percent: 0,
        }
    );
    assert_eq!(
        od(
            "{consecutive5xxErrors: 0, consecutiveGatewayErrors: 3, interval: 2s, baseEjectionTime: 1m, maxEjectionPercent: 100, minHealthPercent: 50}"
        ),
        OutlierDetection {
            consecutive_5xx: None,
            consecutive_gateway: Some(3),
            interval: Duration::from_secs(2),
            base_ejection_time: Duration::from_secs(60),
            max_ejection_percent: 100,
            min_health_percent: 50,
        }
    );
    let e = |body: &str| {
        error(&dr(&format!(
            "  trafficPolicy:\n    outlierDetection: {body}\n"
        )))
    };
    let prefix = "spec.trafficPolicy.outlierDetection.";
    for (body, expected) in [
        (
            "{maxEjectionPercent: 101}",
            "maxEjectionPercent: invalid value 101: expected a percentage from 0 to 100",
        ),
        (
            "{minHealthPercent: -1}",
            "minHealthPercent: invalid value -1: expected a percentage from 0 to 100",
        ),
        (
            "{consecutive5xxErrors: -2}",
            "consecutive5xxErrors: invalid value -2: expected a number of errors from 0 (disabled) to 4294967295",
        ),
        (
            "{interval: 0s}",
            "interval: invalid value \"0s\": expected a duration of at least 1ms",
        ),
        (
            "{splitExternalLocalOriginErrors: true}",
            "splitExternalLocalOriginErrors: field `splitExternalLocalOriginErrors` is not implemented by ringress yet",
        ),
    ] {
        let message = e(body);
        assert!(
            message.ends_with(&format!("{prefix}{expected}")),
            "{body}: {message}"
        );
    }
    // A subset's outlierDetection is its own.
    let config = load_ok(&dr(
        "  subsets:\n  - name: v1\n    trafficPolicy:\n      outlierDetection: {consecutive5xxErrors: 1}\n",
    ));
    let subset = &config.destination_rules[0].subsets[0];
    assert_eq!(
        subset
            .traffic_policy
            .outlier_detection
            .unwrap()
            .consecutive_5xx,
        Some(1)
    );
}

#[test]
fn health_check_annotations() {
    let annotated = |annotations: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: dr\n  annotations:\n{annotations}spec:\n  host: httpbin\n"
        )
    };
    let config = load_ok(&annotated(
        "    ringress.io/health-check-path: /healthz\n    ringress.io/health-check-interval: 2s\n    ringress.io/health-check-healthy-threshold: \"3\"\n    other.io/x: y\n",
    ));
    assert_eq!(
        config.destination_rules[0].health_check,
        Some(HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 2,
            healthy_threshold: 3,
        })
    );
    let config = load_ok(&annotated("    other.io/x: y\n"));
    assert_eq!(config.destination_rules[0].health_check, None);
    let prefix = "metadata.annotations";
    for (annotations, expected) in [
        (
            "    ringress.io/health-check-interval: 2s\n",
            ": ringress.io/health-check-path is required to turn health checks on",
        ),
        (
            "    ringress.io/health-check-path: healthz\n",
            ".ringress.io/health-check-path: invalid value \"healthz\": expected a path starting with /",
        ),
        (
            "    ringress.io/health-check-path: /h\n    ringress.io/health-check-timeout: 0s\n",
            ".ringress.io/health-check-timeout: invalid value \"0s\": expected a duration above 0s",
        ),
        (
            "    ringress.io/health-check-path: /h\n    ringress.io/health-check-unhealthy-threshold: \"0\"\n",
            ".ringress.io/health-check-unhealthy-threshold: invalid value \"0\": expected a count from 1",
        ),
        (
            "    ringress.io/health-check-port: \"8080\"\n",
            ".ringress.io/health-check-port: invalid value \"ringress.io/health-check-port\": the ringress.io/health-check-* annotations are path, interval, timeout, unhealthy-threshold, healthy-threshold",
        ),
    ] {
        let message = error(&annotated(annotations));
        assert!(
            message.contains(&format!("{prefix}{expected}")),
            "{annotations}: {message}"
        );
    }
}

#[test]
fn a_subset_and_port_level_settings_merge_in_istios_order() {
    let config = load_ok(&dr(
        "  trafficPolicy:\n    loadBalancer: {simple: RANDOM}\n    connectionPool:\n      tcp: {maxConnections: 1}\n    outlierDetection: {consecutive5xxErrors: 7}\n    portLevelSettings:\n    - port: {number: 8080}\n      connectionPool:\n        tcp: {maxConnections: 2}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy:\n      loadBalancer: {simple: LEAST_REQUEST}\n      connectionPool:\n        tcp: {maxConnections: 3}\n      portLevelSettings:\n      - port: {number: 9090}\n        outlierDetection: {consecutive5xxErrors: 9}\n",
    ));
    let rule = &config.destination_rules[0];
    let max = |p: &TrafficPolicy| p.connection_pool.and_then(|c| c.max_connections);
    let consecutive = |p: &TrafficPolicy| p.outlier_detection.and_then(|o| o.consecutive_5xx);
    let simple = |p: &TrafficPolicy| p.load_balancer.clone().map(|b| b.simple);
    let v1 = Some(&rule.subsets[0]);
    // The subset's fields replace the rule's.
    let policy = rule.policy_for(80, v1);
    assert_eq!(simple(&policy), Some(LoadBalancer::LeastRequest));
    assert_eq!((max(&policy), consecutive(&policy)), (Some(3), Some(7)));
    // The subset's port-level settings replace those.
    let policy = rule.policy_for(9090, v1);
    assert_eq!((max(&policy), consecutive(&policy)), (Some(3), Some(9)));
    // The rule's port-level settings come before the subset's fields, which win.
    let policy = rule.policy_for(8080, v1);
    assert_eq!(max(&policy), Some(3));
    assert_eq!(simple(&policy), Some(LoadBalancer::LeastRequest));
    // Without the subset: the rule's, then its port's.
    assert_eq!(max(&rule.policy_for(80, None)), Some(1));
    assert_eq!(max(&rule.policy_for(8080, None)), Some(2));
}
