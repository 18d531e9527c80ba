//! Checks of a DestinationRule's `loadBalancer` (`simple`, or `consistentHash` with
//! its key and table) and `outlierDetection` (parts of the one `trafficPolicy`
//! check, `destination.rs`), `subsets[]` and the `labels` of subsets and
//! ServiceEntry endpoints.

use super::*;
use crate::config::file_lb::*;
use crate::config::model_lb::*;

/// What `loadBalancer.simple` accepts, for messages.
const SIMPLE_ACCEPTED: &str = "ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM";
/// Kubernetes' longest label value and label name (without its prefix).
const MAX_LABEL_LEN: usize = 63;

impl Check<'_, '_> {
    /// `outlierDetection`, with Istio's defaults.
    pub(super) fn outlier_detection(
        &mut self,
        raw: FileOutlierDetection,
        p: &Path,
    ) -> Option<OutlierDetection> {
        let mut count = |raw: Option<i64>, field: &str| match raw.map(u32::try_from) {
            None => Ok(None),
            Some(Ok(n)) => Ok(Some(n)),
            Some(Err(_)) => {
                self.invalid(
                    &p.key(field),
                    raw.unwrap_or_default().to_string(),
                    "expected a number of errors from 0 (disabled) to 4294967295",
                );
                Err(())
            }
        };
        let consecutive_5xx = count(raw.consecutive_5xx_errors, "consecutive5xxErrors");
        let consecutive_gateway = count(raw.consecutive_gateway_errors, "consecutiveGatewayErrors");
        let mut duration = |raw: Option<String>, field: &str, default: Duration| match raw {
            None => Some(default),
            Some(t) => match self.duration(&t, &p.key(field)) {
                Some(d) if d >= Duration::from_millis(1) => Some(d),
                Some(_) => {
                    self.invalid(
                        &p.key(field),
                        format!("{t:?}"),
                        "expected a duration of at least 1ms",
                    );
                    None
                }
                None => None,
            },
        };
        let interval = duration(raw.interval, "interval", DEFAULT_OUTLIER_INTERVAL);
        let base_ejection_time = duration(
            raw.base_ejection_time,
            "baseEjectionTime",
            DEFAULT_BASE_EJECTION_TIME,
        );
        let mut percent = |raw: Option<i64>, field: &str, default: u32| match raw {
            None => Some(default),
            Some(n @ 0..=100) => Some(n as u32),
            Some(n) => {
                self.invalid(
                    &p.key(field),
                    n.to_string(),
                    "expected a percentage from 0 to 100",
                );
                None
            }
        };
        let max_ejection_percent = percent(
            raw.max_ejection_percent,
            "maxEjectionPercent",
            DEFAULT_MAX_EJECTION_PERCENT,
        );
        let min_health_percent = percent(raw.min_health_percent, "minHealthPercent", 0);
        let (Ok(consecutive_5xx), Ok(consecutive_gateway)) = (consecutive_5xx, consecutive_gateway)
        else {
            return None;
        };
        Some(OutlierDetection {
            consecutive_5xx: consecutive_5xx
                .or(Some(DEFAULT_CONSECUTIVE_5XX))
                .filter(|n| *n > 0),
            consecutive_gateway: consecutive_gateway.filter(|n| *n > 0),
            interval: interval?,
            base_ejection_time: base_ejection_time?,
            max_ejection_percent: max_ejection_percent?,
            min_health_percent: min_health_percent?,
        })
    }

    /// `loadBalancer`: `simple` or `consistentHash`, not both.
    pub(super) fn load_balancer(
        &mut self,
        raw: FileLoadBalancer,
        path: &Path,
    ) -> Option<Balancing> {
        let sp = path.key("simple");
        let simple = match raw.simple.as_deref() {
            None | Some("ROUND_ROBIN" | "UNSPECIFIED") => Some(LoadBalancer::RoundRobin),
            Some("LEAST_REQUEST" | "LEAST_CONN") => Some(LoadBalancer::LeastRequest),
            Some("RANDOM") => Some(LoadBalancer::Random),
            Some("PASSTHROUGH") => {
                self.err(
                    &sp,
                    Problem::ValueNotImplemented {
                        what: "load balancer PASSTHROUGH".to_owned(),
                        accepted: SIMPLE_ACCEPTED.to_owned(),
                    },
                );
                None
            }
            Some(other) => {
                self.invalid(
                    &sp,
                    format!("{other:?}"),
                    format!("accepted: {SIMPLE_ACCEPTED}"),
                );
                None
            }
        };
        let consistent_hash = match raw.consistent_hash {
            Some(_) if raw.simple.is_some() => {
                self.rule(
                    &path.key("consistentHash"),
                    "loadBalancer takes one of simple and consistentHash, not both",
                );
                return None;
            }
            Some(hash) => Some(self.consistent_hash(hash, &path.key("consistentHash"))?),
            None => None,
        };
        Some(Balancing {
            simple: simple?,
            consistent_hash,
        })
    }

    /// `consistentHash`: exactly one key; `ringHash` or `maglev` (or the deprecated
    /// `minimumRingSize`), else a ring of Envoy's default size.
    fn consistent_hash(&mut self, raw: FileConsistentHash, p: &Path) -> Option<ConsistentHash> {
        let mut keys = Vec::new();
        if let Some(h) = &raw.http_header_name {
            let name = self.header_name(h, &p.key("httpHeaderName"));
            keys.push(("httpHeaderName", name.map(HashKey::Header)));
        }
        if let Some(cookie) = raw.http_cookie {
            keys.push(("httpCookie", self.hash_cookie(cookie, &p.key("httpCookie"))));
        }
        // `false` is proto3's default: as if absent.
        if raw.use_source_ip == Some(true) {
            keys.push(("useSourceIp", Some(HashKey::SourceIp)));
        }
        if let Some(q) = raw.http_query_parameter_name {
            let qp = p.key("httpQueryParameterName");
            let key = if q.is_empty() {
                self.invalid(&qp, "\"\"", "expected a query parameter name");
                None
            } else {
                Some(HashKey::QueryParameter(q))
            };
            keys.push(("httpQueryParameterName", key));
        }
        let key = match keys.as_slice() {
            [] => {
                self.rule(
                    p,
                    "consistentHash needs one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
                );
                None
            }
            [(_, key)] => key.clone(),
            [(first, _), (second, _), ..] => {
                self.rule(
                    &p.key(second),
                    format!("consistentHash takes one hash key; {first} is set already"),
                );
                None
            }
        };
        let table = match (raw.ring_hash, raw.maglev, raw.minimum_ring_size) {
            (Some(_), Some(_), _) => {
                self.rule(
                    &p.key("maglev"),
                    "consistentHash takes one of ringHash and maglev",
                );
                None
            }
            (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => {
                self.rule(
                    &p.key("minimumRingSize"),
                    "only one of minimumRingSize and ringHash or maglev can be set",
                );
                None
            }
            (Some(ring), None, None) => self
                .ring_size(
                    ring.minimum_ring_size,
                    &p.key("ringHash").key("minimumRingSize"),
                )
                .map(|minimum_ring_size| HashTable::RingHash { minimum_ring_size }),
            (None, None, size) => self
                .ring_size(size, &p.key("minimumRingSize"))
                .map(|minimum_ring_size| HashTable::RingHash { minimum_ring_size }),
            (None, Some(maglev), None) => self
                .maglev_size(maglev.table_size, &p.key("maglev").key("tableSize"))
                .map(|table_size| HashTable::Maglev { table_size }),
        };
        Some(ConsistentHash {
            key: key?,
            table: table?,
        })
    }

    /// `httpCookie`: `name` and `ttl` are required (as Istio's validation says).
    fn hash_cookie(&mut self, raw: FileHttpCookie, p: &Path) -> Option<HashKey> {
        let name = match raw.name {
            Some(n) if !n.is_empty() && n.bytes().all(is_token_byte) => Some(n),
            Some(n) => {
                self.invalid(&p.key("name"), format!("{n:?}"), "expected a cookie name");
                None
            }
            None => {
                self.rule(&p.key("name"), "name required for httpCookie");
                None
            }
        };
        let path = match raw.path {
            Some(path) if path.is_empty() => None,
            Some(path) if path.bytes().all(|b| b.is_ascii_graphic() && b != b';') => Some(path),
            Some(path) => {
                self.invalid(
                    &p.key("path"),
                    format!("{path:?}"),
                    "expected a cookie path",
                );
                return None;
            }
            None => None,
        };
        let ttl = match raw.ttl {
            Some(t) => self.duration(&t, &p.key("ttl")),
            None => {
                self.rule(&p.key("ttl"), "ttl required for httpCookie");
                None
            }
        };
        Some(HashKey::Cookie {
            name: name?,
            path,
            ttl: ttl?,
        })
    }

    fn ring_size(&mut self, raw: Option<i64>, path: &Path) -> Option<u64> {
        match raw {
            None | Some(0) => Some(DEFAULT_MINIMUM_RING_SIZE),
            Some(n) => match u64::try_from(n) {
                Ok(n) if n <= MAX_RING_SIZE => Some(n),
                _ => {
                    self.invalid(
                        path,
                        n.to_string(),
                        format!("expected a ring size from 1 to {MAX_RING_SIZE}"),
                    );
                    None
                }
            },
        }
    }

    fn maglev_size(&mut self, raw: Option<i64>, path: &Path) -> Option<u64> {
        match raw {
            None | Some(0) => Some(DEFAULT_MAGLEV_TABLE_SIZE),
            Some(n) => match u64::try_from(n) {
                Ok(n) if n <= MAX_MAGLEV_TABLE_SIZE && is_prime(n) => Some(n),
                _ => {
                    self.invalid(
                        path,
                        n.to_string(),
                        format!("tableSize must be a prime number up to {MAX_MAGLEV_TABLE_SIZE}"),
                    );
                    None
                }
            },
        }
    }

    /// `connectionPool.http`'s request limits: 0 (Istio's unset) or more.
    pub(super) fn request_limits(
        &mut self,
        http: &FileHttpSettings,
        path: &Path,
    ) -> Option<RequestLimits> {
        let mut ok = true;
        let mut limit = |raw: Option<i64>, field: &str| match raw.map(u32::try_from) {
            None | Some(Ok(0)) => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                self.invalid(
                    &path.key(field),
                    raw.unwrap_or_default().to_string(),
                    "expected a number from 0 (unset) to 4294967295",
                );
                ok = false;
                None
            }
        };
        let limits = RequestLimits {
            max_pending: limit(http.http1_max_pending_requests, "http1MaxPendingRequests"),
            max_requests_per_connection: limit(
                http.max_requests_per_connection,
                "maxRequestsPerConnection",
            ),
            max_retries: limit(http.max_retries, "maxRetries"),
            max_requests: limit(http.http2_max_requests, "http2MaxRequests"),
        };
        ok.then_some(limits)
    }

    /// The document's `ringress.io/health-check-*` annotations; `Some(None)` when it
    /// has none, `None` after reporting a bad one.
    pub(super) fn health_check(&mut self) -> Option<Option<HealthCheck>> {
        let path = root().key("metadata").key("annotations");
        let Some(node) = self
            .doc
            .root
            .get("metadata")
            .and_then(|m| m.get("annotations"))
        else {
            return Some(None);
        };
        // Only ringress's own are read: other annotations stay whatever they are.
        let Value::Map(entries) = &node.value else {
            return Some(None);
        };
        let mut annotations = Vec::new();
        for (key, value) in entries {
            if key.name.starts_with(HEALTH_CHECK_ANNOTATION) {
                let value: String = self.read(value, path.key(&key.name))?;
                annotations.push((key.name.clone(), value));
            }
        }
        let mut check = HealthCheck {
            path: String::new(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 2,
            healthy_threshold: 1,
        };
        let mut ok = true;
        let mut any = false;
        for (key, value) in annotations {
            let Some(field) = key.strip_prefix(HEALTH_CHECK_ANNOTATION) else {
                continue;
            };
            any = true;
            let ap = path.key(&key);
            let threshold = |v: &str| v.parse::<u32>().ok().filter(|n| *n >= 1);
            match field {
                "path" if value.starts_with('/') && value.bytes().all(|b| b.is_ascii_graphic()) => {
                    check.path = value
                }
                "interval" | "timeout" => match self.positive_duration(&value, &ap) {
                    Some(d) if field == "interval" => check.interval = d,
                    Some(d) => check.timeout = d,
                    None => ok = false,
                },
                "unhealthy-threshold" | "healthy-threshold" => match threshold(&value) {
                    Some(n) if field == "healthy-threshold" => check.healthy_threshold = n,
                    Some(n) => check.unhealthy_threshold = n,
                    None => {
                        self.invalid(&ap, format!("{value:?}"), "expected a count from 1");
                        ok = false;
                    }
                },
                "path" => {
                    self.invalid(&ap, format!("{value:?}"), "expected a path starting with /");
                    ok = false;
                }
                _ => {
                    self.invalid(
                        &ap,
                        format!("{key:?}"),
                        format!("the {HEALTH_CHECK_ANNOTATION}* annotations are path, interval, timeout, unhealthy-threshold, healthy-threshold"),
                    );
                    ok = false;
                }
            }
        }
        if !any {
            return Some(None);
        }
        if ok && check.path.is_empty() {
            self.rule(
                &path,
                format!("{HEALTH_CHECK_ANNOTATION}path is required to turn health checks on"),
            );
            return None;
        }
        ok.then_some(Some(check))
    }

    /// `subsets[]`: each named (a DNS-1123 label, unique), with labels and its own
    /// `trafficPolicy`.
    pub(super) fn subsets(&mut self, raw: Vec<FileSubset>, path: &Path) -> Option<Vec<Subset>> {
        let mut ok = true;
        let mut subsets: Vec<Subset> = Vec::with_capacity(raw.len());
        for (i, subset) in raw.into_iter().enumerate() {
            let sp = path.index(i);
            let name = match subset.name {
                None => {
                    self.err(&sp.key("name"), Problem::Missing);
                    None
                }
                Some(n) if !is_dns_label(&n) => {
                    self.invalid(
                        &sp.key("name"),
                        format!("{n:?}"),
                        "a subset name is a DNS-1123 label: lower-case letters, digits and '-', at most 63",
                    );
                    None
                }
                Some(n) if subsets.iter().any(|s| s.name == n) => {
                    self.rule(&sp.key("name"), format!("subset {n} is defined twice"));
                    None
                }
                Some(n) => Some(n),
            };
            let labels = self.labels(subset.labels, &sp.key("labels"));
            let (traffic_policy, port_level_settings) =
                self.traffic_policy_and_ports(subset.traffic_policy, &sp.key("trafficPolicy"));
            match (name, labels, traffic_policy, port_level_settings) {
                (Some(name), Some(labels), Some(traffic_policy), Some(port_level_settings)) => {
                    subsets.push(Subset {
                        name,
                        labels,
                        traffic_policy,
                        port_level_settings,
                    })
                }
                _ => ok = false,
            }
        }
        ok.then_some(subsets)
    }

    /// Kubernetes labels (a subset's or an endpoint's): `[prefix/]name`, the name and
    /// the value at most 63 alphanumerics, `-`, `_`, `.`, starting and ending
    /// alphanumeric (a value may be empty).
    pub(super) fn labels(
        &mut self,
        raw: Ordered<String>,
        path: &Path,
    ) -> Option<BTreeMap<String, String>> {
        let mut ok = true;
        let mut labels = BTreeMap::new();
        for (key, value) in raw.0 {
            let kp = path.key(&key);
            let name = key.rsplit_once('/').map_or(key.as_str(), |(prefix, name)| {
                if prefix.is_empty() || !valid_host_name(prefix) {
                    ""
                } else {
                    name
                }
            });
            if !is_label_value(name) || name.is_empty() {
                self.invalid(&kp, format!("{key:?}"), "expected a label name");
                ok = false;
            } else if !is_label_value(&value) {
                self.invalid(
                    &kp,
                    format!("{value:?}"),
                    "a label value is at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
                );
                ok = false;
            } else {
                labels.insert(key, value);
            }
        }
        ok.then_some(labels)
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_label_value(s: &str) -> bool {
    let edge = |b: Option<&u8>| b.is_none_or(u8::is_ascii_alphanumeric);
    s.len() <= MAX_LABEL_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && edge(s.as_bytes().first())
        && edge(s.as_bytes().last())
}
