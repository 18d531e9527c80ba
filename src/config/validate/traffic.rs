//! Checks of a VirtualService rule's traffic policies (`corsPolicy`, `fault`) into
//! [`RoutePolicies`], with Istio's validation rules and its translation for Envoy:
//! lists joined with `,`, `maxAge` in whole seconds, a fault without `percentage`
//! applying to no request.

use super::*;
use crate::config::file_traffic::*;
use crate::config::model_traffic::*;

/// gRPC's status names, at their codes (Istio's `grpcStatus` values).
const GRPC_STATUSES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The methods Istio accepts in `allowMethods`.
const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

/// A rule's policy fields as read.
pub(super) struct RawPolicies {
    pub(super) cors: Option<FileCorsPolicy>,
    pub(super) fault: Option<FileFault>,
    pub(super) mirror: Option<FileDestination>,
    pub(super) mirror_percentage: Option<FilePercent>,
    pub(super) mirror_percent: Option<i64>,
    pub(super) mirrors: Option<Vec<FileMirrorPolicy>>,
}

impl Check<'_, '_> {
    /// The policies of the rule at `p`, whose action is `action` (`route`,
    /// `redirect`, `directResponse`; `None` when that is in error); `None` after
    /// reporting a problem.
    pub(super) fn route_policies(
        &mut self,
        raw: RawPolicies,
        action: Option<&str>,
        p: &Path,
    ) -> Option<RoutePolicies> {
        let mut ok = true;
        if raw.fault.is_some()
            && let Some(other @ ("redirect" | "directResponse")) = action
        {
            let other = if other == "redirect" {
                "redirect"
            } else {
                "direct_response"
            };
            self.rule(
                &p.key("fault"),
                format!("HTTP route cannot contain both fault and {other}"),
            );
            ok = false;
        }
        let cors = raw.cors.map(|c| self.cors_policy(c, &p.key("corsPolicy")));
        let fault = raw.fault.map(|f| self.fault(f, &p.key("fault")));
        let mirrors = self.mirrors(
            raw.mirror,
            raw.mirror_percentage,
            raw.mirror_percent,
            raw.mirrors,
            p,
        );
        let policies = RoutePolicies {
            cors: valid_if_set(cors)?,
            fault: valid_if_set(fault)?,
            mirrors: mirrors?,
        };
        ok.then_some(policies)
    }

    /// One mirror's destination (at `p`) with its share, both checked.
    fn mirror(
        &mut self,
        destination: FileDestination,
        share: Option<Share>,
        p: &Path,
    ) -> Option<Mirror> {
        let subset = destination.subset.clone();
        let (host, port) = self.destination(destination, p)?;
        Some(Mirror {
            host,
            port,
            subset,
            share: share?,
        })
    }

    /// `mirror` with `mirrorPercentage` (or the deprecated `mirrorPercent`), or
    /// `mirrors[]`, with Istio's shares: 100 % when none is given, and a mirror of 0 %
    /// left out.
    fn mirrors(
        &mut self,
        mirror: Option<FileDestination>,
        percentage: Option<FilePercent>,
        percent: Option<i64>,
        mirrors: Option<Vec<FileMirrorPolicy>>,
        p: &Path,
    ) -> Option<Vec<Mirror>> {
        let mut out = Vec::new();
        let mut ok = true;
        if mirror.is_some() && mirrors.as_ref().is_some_and(|m| !m.is_empty()) {
            self.rule(p, "HTTP route cannot contain both mirror and mirrors");
            ok = false;
        }
        if let Some(destination) = mirror {
            let keys = ("mirrorPercentage", "mirrorPercent");
            let share = self.share(percentage, percent, keys, p, Share::ALL);
            match self.mirror(destination, share, &p.key("mirror")) {
                Some(mirror) => out.push(mirror),
                None => ok = false,
            }
        }
        for (i, policy) in mirrors.unwrap_or_default().into_iter().enumerate() {
            let mp = p.key("mirrors").index(i);
            let share = match policy.percentage {
                Some(value) => self.percentage(value, &mp.key("percentage")),
                None => Some(Share::ALL),
            };
            let Some(destination) = policy.destination else {
                self.err(&mp.key("destination"), Problem::Missing);
                ok = false;
                continue;
            };
            match self.mirror(destination, share, &mp.key("destination")) {
                Some(mirror) => out.push(mirror),
                None => ok = false,
            }
        }
        // Istio sends no mirror policy for a share of 0.
        out.retain(|m| m.share.per_million > 0);
        ok.then_some(out)
    }

    fn cors_policy(&mut self, raw: FileCorsPolicy, p: &Path) -> Option<CorsPolicy> {
        let mut ok = true;
        let mut allow_origins = Vec::new();
        if let Some(origins) = raw.allow_origins {
            for (i, m) in origins.into_iter().enumerate() {
                let mp = p.key("allowOrigins").index(i);
                let written = m
                    .exact
                    .as_deref()
                    .or(m.prefix.as_deref())
                    .or(m.regex.as_deref());
                if written == Some("") {
                    self.invalid(&mp, "\"\"", "an allowed origin cannot be empty");
                    ok = false;
                    continue;
                }
                match self.string_match(m, &mp, false) {
                    Some(m) => allow_origins.push(m),
                    None => ok = false,
                }
            }
        } else if let Some(origins) = raw.allow_origin {
            // Deprecated; Istio reads it only without `allowOrigins`.
            allow_origins.extend(origins.into_iter().map(StringMatch::Exact));
        }
        for (i, method) in raw.allow_methods.iter().enumerate() {
            if !CORS_METHODS.contains(&method.as_str()) {
                self.invalid(
                    &p.key("allowMethods").index(i),
                    format!("{method:?}"),
                    format!("expected one of {}", CORS_METHODS.join(", ")),
                );
                ok = false;
            }
        }
        for field in ["allowHeaders", "exposeHeaders"] {
            let names = match field {
                "allowHeaders" => &raw.allow_headers,
                _ => &raw.expose_headers,
            };
            for (i, name) in names.iter().enumerate() {
                let token = !name.is_empty() && name.bytes().all(is_token_byte);
                if name != "*" && !token {
                    self.invalid(
                        &p.key(field).index(i),
                        format!("{name:?}"),
                        "expected an HTTP header name (letters, digits and !#$%&'*+-.^_`|~) or *",
                    );
                    ok = false;
                }
            }
        }
        let max_age = match raw.max_age.as_deref() {
            None => None,
            Some(raw_age) => match self.duration(raw_age, &p.key("maxAge")) {
                Some(d) if d.subsec_nanos() != 0 => {
                    self.invalid(
                        &p.key("maxAge"),
                        format!("{raw_age:?}"),
                        "max_age duration is accurate only to seconds precision",
                    );
                    ok = false;
                    None
                }
                Some(d) => Some(d.as_secs()),
                None => {
                    ok = false;
                    None
                }
            },
        };
        let forward_unmatched_preflights = match raw.unmatched_preflights.as_deref() {
            None | Some("UNSPECIFIED" | "FORWARD") => true,
            Some("IGNORE") => false,
            Some(other) => {
                self.invalid(
                    &p.key("unmatchedPreflights"),
                    format!("{other:?}"),
                    "expected FORWARD or IGNORE",
                );
                ok = false;
                true
            }
        };
        ok.then(|| CorsPolicy {
            allow_origins,
            allow_methods: raw.allow_methods.join(","),
            allow_headers: raw.allow_headers.join(","),
            expose_headers: raw.expose_headers.join(","),
            max_age,
            allow_credentials: raw.allow_credentials,
            forward_unmatched_preflights,
        })
    }

    fn fault(&mut self, raw: FileFault, p: &Path) -> Option<Fault> {
        if raw.delay.is_none() && raw.abort.is_none() {
            self.rule(p, "HTTP fault injection must have an abort and/or a delay");
            return None;
        }
        let delay = raw.delay.map(|d| self.fault_delay(d, &p.key("delay")));
        let abort = raw.abort.map(|a| self.fault_abort(a, &p.key("abort")));
        Some(Fault {
            delay: valid_if_set(delay)?,
            abort: valid_if_set(abort)?,
        })
    }

    fn fault_delay(&mut self, raw: FileFaultDelay, p: &Path) -> Option<FaultDelay> {
        // Istio's translation: no percentage, no delayed request.
        let keys = ("percentage", "percent");
        let share = self.share(raw.percentage, raw.percent, keys, p, Share::NONE);
        let fixed = match raw.fixed_delay.as_deref() {
            None => {
                self.err(&p.key("fixedDelay"), Problem::Missing);
                None
            }
            Some(raw_delay) => match self.duration(raw_delay, &p.key("fixedDelay")) {
                Some(d) if d < Duration::from_millis(1) => {
                    self.invalid(
                        &p.key("fixedDelay"),
                        format!("{raw_delay:?}"),
                        "duration must be greater than 1ms",
                    );
                    None
                }
                d => d,
            },
        };
        Some(FaultDelay {
            fixed: fixed?,
            share: share?,
        })
    }

    fn fault_abort(&mut self, raw: FileFaultAbort, p: &Path) -> Option<FaultAbort> {
        let share = match raw.percentage {
            Some(percentage) => self.percentage(percentage, &p.key("percentage")),
            // Istio's translation: no percentage, no aborted request.
            None => Some(Share::NONE),
        };
        let (status, grpc_status) = match (raw.http_status, raw.grpc_status) {
            (Some(_), Some(_)) => {
                self.rule(p, "httpStatus and grpcStatus are exclusive; use one");
                return None;
            }
            (None, Some(name)) => match GRPC_STATUSES.iter().position(|s| *s == name) {
                Some(code) => (Some(200), u32::try_from(code).ok()),
                None => {
                    self.invalid(
                        &p.key("grpcStatus"),
                        format!("{name:?}"),
                        format!(
                            "not a gRPC status; expected one of {}",
                            GRPC_STATUSES.join(", ")
                        ),
                    );
                    (None, None)
                }
            },
            (status, None) => (self.http_status(status, p), None),
        };
        Some(FaultAbort {
            status: status?,
            grpc_status,
            share: share?,
        })
    }

    /// An abort's `httpStatus`, 200 to 599.
    fn http_status(&mut self, status: Option<i64>, p: &Path) -> Option<u16> {
        match status {
            None => {
                self.err(&p.key("httpStatus"), Problem::Missing);
                None
            }
            Some(s) if (200..=599).contains(&s) => u16::try_from(s).ok(),
            Some(s) => {
                self.invalid(
                    &p.key("httpStatus"),
                    s.to_string(),
                    format!("HTTP status {s} is not in range 200-599"),
                );
                None
            }
        }
    }

    /// The share a `Percent` (at `p.keys.0`) gives, or else the deprecated integer
    /// percentage (at `p.keys.1`), or else `absent`.
    fn share(
        &mut self,
        percentage: Option<FilePercent>,
        percent: Option<i64>,
        keys: (&str, &str),
        p: &Path,
        absent: Share,
    ) -> Option<Share> {
        match (percentage, percent) {
            (Some(value), _) => self.percentage(value, &p.key(keys.0)),
            (None, Some(n)) if (0..=100).contains(&n) => Some(Share {
                per_million: u32::try_from(n * 10_000).unwrap_or(0),
            }),
            (None, Some(n)) => {
                self.invalid(&p.key(keys.1), n.to_string(), "percentage is 0 to 100");
                None
            }
            (None, None) => Some(absent),
        }
    }

    /// Istio's `Percent`: `value` 0 to 100 (unset is 0).
    fn percentage(&mut self, raw: FilePercent, p: &Path) -> Option<Share> {
        let value = raw.value.unwrap_or(0.0);
        if (0.0..=100.0).contains(&value) {
            Some(Share::of_percent(value))
        } else {
            self.invalid(
                &p.key("value"),
                value.to_string(),
                format!("percentage {value} is not in range 0..100"),
            );
            None
        }
    }
}
