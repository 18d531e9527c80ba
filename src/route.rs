//! Compiled route tables: (listener port, host, path, headers) to an action.
//!
//! Sits between the HTTP head parser and the upstream pool: once a request head has
//! been read, the shard asks its listener port's [`RouteTable`] for the [`Route`] that
//! serves it and then forwards, redirects or answers directly; `None` means 404.
//!
//! Tables are compiled on the control thread from the validated configuration, with
//! Istio's gateway semantics:
//! - a VirtualService applies to a port when its `gateways` name a Gateway with a
//!   server on that port; its `hosts` are intersected with that server's `hosts` (a VS
//!   host `*` on a server for `httpbin.example.com` serves that host only, and a VS host
//!   no server on the port covers is not served there);
//! - each resulting host pattern is a bucket holding the rules of every VirtualService
//!   that reaches it, VirtualServices in config order, rules in order;
//! - a `match[]` entry with a `port` or `gateways` is kept only in the tables of that
//!   port and of host patterns served through those Gateways; a rule left without
//!   entries there is not in the table;
//! - lookup picks one bucket (the exact host, else the longest matching `*.suffix`,
//!   else `*`; no fallback to a less specific bucket), then the first rule that matches;
//! - an HTTP server with `tls.httpsRedirect` makes its hosts answer 301 to https.
//!
//! [`RouteTable::find`] allocates nothing: one FNV hash lookup for the host (plus one
//! per label for wildcard hosts), then a scan of the bucket's precompiled rules. Regex
//! conditions use the `regex` crate's per-regex cache pool; a shard that wants its own
//! caches can clone its table (a cloned `Regex` gets a fresh pool).

pub(crate) mod l4;

use crate::fast_hash::FastMap;
use crate::shard::StatusCounters;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use regex::Regex;
use thiserror::Error;

use crate::config::{
    Config, HeaderOperations, HostPattern, HttpRoute, Origin, Protocol, Redirect, Retries, Rewrite,
    RouteAction, RouteMatch, RoutePolicies, Share, StringMatch, VirtualService,
    WeightedDestination,
};
use crate::upstream::cluster::{ClusterId, Clusters};

/// Request headers as the HTTP layer holds them. Names are asked for in lower case.
pub trait Headers {
    /// The value of the first header named `name`, if any.
    fn get(&self, name: &str) -> Option<&[u8]>;
}

/// A request without headers (tests, benchmarks, requests that have none).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHeaders;

impl Headers for NoHeaders {
    fn get(&self, _name: &str) -> Option<&[u8]> {
        None
    }
}

/// What routing looks at in a request.
#[derive(Clone, Copy)]
pub struct RouteRequest<'a> {
    /// Lower-case, port removed.
    pub host: &'a str,
    /// Path and query as received (origin form: `/status/418?x=1`).
    pub path: &'a str,
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    pub headers: &'a dyn Headers,
}

/// What a matched rule says to do with the request.
#[derive(Debug, Clone)]
pub struct Route {
    /// The VirtualService the rule comes from; for [`Action::HttpsRedirect`] the
    /// Gateway whose server asked for it.
    pub(crate) virtual_service: String,
    /// Index of the rule in the VirtualService's `http[]` (0 for a redirect).
    pub rule: usize,
    /// The rule's `name`.
    pub(crate) name: Option<String>,
    pub(crate) action: Action,
    pub(crate) rewrite: Option<Rewrite>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: Option<Retries>,
    pub(crate) headers: HeaderOperations,
    /// `corsPolicy` and `fault` (see `proxy/policies.rs`).
    pub(crate) policies: RoutePolicies,
    /// The clusters requests are mirrored to, each with its share (`proxy/mirror.rs`).
    pub(crate) mirrors: Box<[(ClusterId, Share)]>,
    /// Responses to requests this route matched, by status class (all shards).
    pub(crate) stats: StatusCounters,
}

#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Proxy to one of these clusters.
    Forward(WeightedClusters),
    /// Answer `redirect.code` with [`redirect_location`].
    Redirect(Redirect),
    /// Answer 301 with [`https_redirect_location`] (the server's `tls.httpsRedirect`).
    HttpsRedirect,
    /// `directResponse`.
    Direct { status: u16, body: Option<String> },
}

/// The destinations of a `route[]`, with their weights.
#[derive(Debug, Clone)]
pub(crate) struct WeightedClusters {
    first: ClusterId,
    /// Each cluster with the cumulative weight up to and including it; clusters of
    /// weight 0 are left out unless every weight is 0 (then all count equally).
    choices: Box<[(ClusterId, u32)]>,
    total: u32,
}

impl WeightedClusters {
    /// From (cluster, weight) pairs; `None` when there are none.
    pub(crate) fn new(weighted: &[(ClusterId, u32)]) -> Option<WeightedClusters> {
        let (first, _) = *weighted.first()?;
        let all_zero = weighted.iter().all(|(_, w)| *w == 0);
        let mut total = 0u32;
        let mut choices = Vec::with_capacity(weighted.len());
        for &(cluster, weight) in weighted {
            let weight = if all_zero { 1 } else { weight };
            if weight > 0 {
                total = total.saturating_add(weight);
                choices.push((cluster, total));
            }
        }
        let first = choices.first().map(|(c, _)| *c).unwrap_or(first);
        Some(WeightedClusters {
            first,
            choices: choices.into_boxed_slice(),
            total,
        })
    }

    /// A cluster chosen at random in proportion to the weights.
    pub(crate) fn pick(&self) -> ClusterId {
        if self.choices.len() <= 1 || self.total == 0 {
            return self.first;
        }
        let r = fastrand::u32(..self.total);
        self.choices
            .iter()
            .find(|(_, upto)| r < *upto)
            .map_or(self.first, |(c, _)| *c)
    }

    /// The cluster, when there is only one to choose from.
    #[cfg(test)]
    pub(crate) fn single(&self) -> Option<ClusterId> {
        match *self.choices {
            [(c, _)] => Some(c),
            _ => None,
        }
    }

    /// Each cluster that can be picked, with its weight.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ClusterId, u32)> + '_ {
        let mut previous = 0;
        self.choices.iter().map(move |&(c, upto)| {
            let weight = upto - previous;
            previous = upto;
            (c, weight)
        })
    }
}

/// How a rule's uri condition matched the path, which decides what `rewrite.uri`
/// replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MatchedUri {
    /// A `prefix` condition matched the first this-many bytes of the path. A rule or
    /// match entry without a uri condition counts as Istio's implicit `prefix: /`.
    Prefix(usize),
    /// An `exact` or `regex` condition matched the whole path.
    Whole,
}

/// A found route and how its uri matched.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Selected<'t> {
    pub(crate) route: &'t Route,
    pub(crate) matched_uri: MatchedUri,
}

/// Why a configuration's routes cannot be compiled.
#[derive(Debug, Error)]
pub enum RouteError {
    #[error(
        "{origin}: {section}[{rule}].route[{destination}]: destination {host}{port} has no cluster"
    )]
    MissingCluster {
        origin: Box<Origin>,
        /// `http`, `tls` or `tcp`.
        section: &'static str,
        rule: usize,
        destination: usize,
        host: String,
        /// `:8000`, or empty when the route names no port.
        port: String,
    },
    #[error("{origin}: http[{rule}] mirror {mirror}: destination {host}{port} has no cluster")]
    MissingMirrorCluster {
        origin: Box<Origin>,
        rule: usize,
        mirror: usize,
        host: String,
        port: String,
    },
    #[error("{origin}: {section}[{rule}].route is empty")]
    NoDestination {
        origin: Box<Origin>,
        section: &'static str,
        rule: usize,
    },
}

/// A uri condition, with `ignoreUriCase` folded in at compile time.
#[derive(Debug, Clone)]
enum UriCondition {
    Exact(String),
    Prefix(String),
    /// Lower-case pattern, compared ASCII-case-insensitively.
    ExactIgnoreCase(String),
    PrefixIgnoreCase(String),
    Regex(Regex),
}

impl UriCondition {
    fn matches(&self, path: &str) -> Option<MatchedUri> {
        let matched = match self {
            UriCondition::Exact(p) => path == p,
            UriCondition::ExactIgnoreCase(p) => path.eq_ignore_ascii_case(p),
            UriCondition::Prefix(p) => {
                return path
                    .starts_with(p.as_str())
                    .then_some(MatchedUri::Prefix(p.len()));
            }
            UriCondition::PrefixIgnoreCase(p) => {
                let head = path.as_bytes().get(..p.len())?;
                return head
                    .eq_ignore_ascii_case(p.as_bytes())
                    .then_some(MatchedUri::Prefix(p.len()));
            }
            UriCondition::Regex(r) => r.is_match(path),
        };
        matched.then_some(MatchedUri::Whole)
    }
}

/// One `match[]` entry: every present condition must hold.
#[derive(Debug, Clone)]
struct Condition {
    uri: Option<UriCondition>,
    authority: Option<StringMatch>,
    method: Option<StringMatch>,
    scheme: Option<StringMatch>,
    headers: Box<[(String, StringMatch)]>,
    without_headers: Box<[(String, StringMatch)]>,
    query_params: Box<[(String, StringMatch)]>,
    /// Where the entry applies, decided when a port's table is built.
    port: Option<u16>,
    gateways: Box<[String]>,
}

impl Condition {
    fn matches(&self, req: &RouteRequest<'_>, path: &str) -> Option<MatchedUri> {
        let matched_uri = match &self.uri {
            Some(uri) => uri.matches(path)?,
            None => implicit_root(path),
        };
        let holds =
            |m: &Option<StringMatch>, value: &str| m.as_ref().is_none_or(|m| m.matches(value));
        if !(holds(&self.method, req.method)
            && holds(&self.authority, req.host)
            && holds(&self.scheme, req.scheme))
        {
            return None;
        }
        for (name, m) in &self.headers {
            let value = req.headers.get(name)?;
            if !matches_bytes(m, value) {
                return None;
            }
        }
        // Envoy's inverted header match: an absent header does not match, so the
        // entry holds.
        for (name, m) in &self.without_headers {
            if req.headers.get(name).is_some_and(|v| matches_bytes(m, v)) {
                return None;
            }
        }
        for (name, m) in &self.query_params {
            if !matches_bytes(m, query_param(req.path, name)?) {
                return None;
            }
        }
        Some(matched_uri)
    }

    /// Whether the entry applies on `port` to a request through one of `gateways`.
    fn applies(&self, port: u16, gateways: &BTreeSet<&str>) -> bool {
        self.port.is_none_or(|p| p == port)
            && (self.gateways.is_empty()
                || self.gateways.iter().any(|g| gateways.contains(g.as_str())))
    }
}

/// The first value of the query parameter `name` in `path`, as sent
/// ([`crate::http::query_pairs`]).
fn query_param<'a>(path: &'a str, name: &str) -> Option<&'a [u8]> {
    crate::http::query_pairs(path)
        .find_map(|(key, value)| (key == name).then_some(value.as_bytes()))
}

/// Istio's implicit `prefix: /` for a rule without a uri condition.
fn implicit_root(path: &str) -> MatchedUri {
    MatchedUri::Prefix(usize::from(path.starts_with('/')))
}

fn matches_bytes(m: &StringMatch, value: &[u8]) -> bool {
    match m {
        StringMatch::Exact(s) => value == s.as_bytes(),
        StringMatch::Prefix(p) => value.starts_with(p.as_bytes()),
        StringMatch::Regex(r) => std::str::from_utf8(value).is_ok_and(|v| r.is_match(v)),
    }
}

/// One compiled `http[]` rule.
#[derive(Debug, Clone)]
struct Rule {
    /// Empty: the rule matches every request.
    conditions: Box<[Condition]>,
    route: Route,
}

impl Rule {
    /// The rule as it stands on `port` for requests through `gateways`: only its
    /// `match[]` entries that apply there, or `None` when it had some and none does.
    fn applying(&self, port: u16, gateways: &BTreeSet<&str>) -> Option<Rule> {
        if self.conditions.iter().all(|c| c.applies(port, gateways)) {
            return Some(self.clone());
        }
        let conditions: Box<[Condition]> = self
            .conditions
            .iter()
            .filter(|c| c.applies(port, gateways))
            .cloned()
            .collect();
        (!conditions.is_empty()).then(|| Rule {
            conditions,
            route: self.route.clone(),
        })
    }

    fn matches(&self, req: &RouteRequest<'_>, path: &str) -> Option<MatchedUri> {
        if self.conditions.is_empty() {
            return Some(implicit_root(path));
        }
        self.conditions.iter().find_map(|c| c.matches(req, path))
    }
}

/// Everything served for one host pattern on one port.
#[derive(Debug, Clone, Default)]
struct Bucket {
    /// Set when a server with `tls.httpsRedirect` covers the pattern: every request
    /// gets this route.
    https_redirect: Option<Route>,
    rules: Vec<Rule>,
}

impl Bucket {
    fn select(&self, req: &RouteRequest<'_>) -> Option<Selected<'_>> {
        if let Some(route) = &self.https_redirect {
            return Some(Selected {
                route,
                matched_uri: MatchedUri::Whole,
            });
        }
        let path = path_without_query(req.path);
        self.rules.iter().find_map(|rule| {
            rule.matches(req, path).map(|matched_uri| Selected {
                route: &rule.route,
                matched_uri,
            })
        })
    }
}

fn path_without_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

/// Host names from the configuration: see [`crate::fast_hash`].
pub(crate) type HostMap<V> = FastMap<Box<str>, V>;

/// Everything one listener port serves: the routes of all Gateway servers on it.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    #[cfg(test)]
    port: u16,
    exact: HostMap<Bucket>,
    /// Keyed by the suffix with its leading dot (`.example.com`).
    suffix: HostMap<Bucket>,
    any: Option<Bucket>,
}

impl RouteTable {
    /// One table per port any Gateway server listens on.
    pub fn build_all(
        config: &Config,
        clusters: &Clusters,
    ) -> Result<BTreeMap<u16, RouteTable>, RouteError> {
        let ports: BTreeSet<u16> = config
            .gateways
            .iter()
            .flat_map(|g| g.servers.iter().map(|s| s.port))
            .collect();
        let mut compiled = vec![None; config.virtual_services.len()];
        ports
            .into_iter()
            .map(|port| Ok((port, Self::build(config, clusters, port, &mut compiled)?)))
            .collect()
    }

    /// The table for `port`; `compiled` caches each VirtualService's compiled rules
    /// (indexed like `config.virtual_services`) across ports.
    fn build(
        config: &Config,
        clusters: &Clusters,
        port: u16,
        compiled: &mut [Option<Vec<Rule>>],
    ) -> Result<RouteTable, RouteError> {
        let mut buckets: BTreeMap<HostPattern, Bucket> = BTreeMap::new();

        for gateway in &config.gateways {
            for server in &gateway.servers {
                if server.port == port && server.https_redirect && server.protocol == Protocol::Http
                {
                    for host in &server.hosts {
                        buckets.entry(host.clone()).or_default().https_redirect =
                            Some(https_redirect_route(&gateway.name));
                    }
                }
            }
        }

        for (index, vs) in config.virtual_services.iter().enumerate() {
            // Host patterns this VirtualService serves on the port, and whether a
            // redirecting server covers them.
            let mut served: BTreeMap<HostPattern, (Option<&str>, BTreeSet<&str>)> = BTreeMap::new();
            for gateway in config
                .gateways
                .iter()
                .filter(|g| vs.gateways.contains(&g.name))
            {
                for server in gateway.servers.iter().filter(|s| s.port == port) {
                    let redirect = (server.https_redirect && server.protocol == Protocol::Http)
                        .then_some(gateway.name.as_str());
                    for vs_host in &vs.hosts {
                        for server_host in &server.hosts {
                            if let Some(pattern) = intersect(vs_host, server_host) {
                                let (redirects, through) = served.entry(pattern).or_default();
                                *redirects = redirects.or(redirect);
                                through.insert(gateway.name.as_str());
                            }
                        }
                    }
                }
            }
            if served.is_empty() {
                continue;
            }
            let rules = match compiled.get_mut(index) {
                Some(Some(rules)) => rules,
                Some(slot) => slot.insert(compile_rules(vs, clusters)?),
                None => continue,
            };
            for (pattern, (redirect, through)) in served {
                let bucket = buckets.entry(pattern).or_default();
                bucket
                    .rules
                    .extend(rules.iter().filter_map(|r| r.applying(port, &through)));
                if let Some(gateway) = redirect {
                    bucket
                        .https_redirect
                        .get_or_insert_with(|| https_redirect_route(gateway));
                }
            }
        }

        let mut table = RouteTable {
            #[cfg(test)]
            port,
            ..RouteTable::default()
        };
        for (pattern, bucket) in buckets {
            insert_host(
                (&mut table.exact, &mut table.suffix, &mut table.any),
                pattern,
                bucket,
            );
        }
        Ok(table)
    }

    /// The listener port this table serves.
    #[cfg(test)]
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The route for a request; `None` means 404.
    pub fn find(&self, req: &RouteRequest<'_>) -> Option<&Route> {
        self.select(req).map(|s| s.route)
    }

    /// Like [`RouteTable::find`], also saying how the uri matched (for
    /// [`rewrite_path`]).
    pub(crate) fn select(&self, req: &RouteRequest<'_>) -> Option<Selected<'_>> {
        self.bucket(req.host)?.select(req)
    }

    /// The bucket for a host: exact, else the longest `*.suffix`, else `*`.
    fn bucket(&self, host: &str) -> Option<&Bucket> {
        lookup_host(&self.exact, &self.suffix, self.any.as_ref(), host)
    }

    /// Every route of the table (rules of every host pattern, then https redirects), in
    /// no particular order. A rule served for several host patterns appears once per
    /// pattern, each with its own counters (for the admin endpoint's per-route stats).
    pub(crate) fn routes(&self) -> impl Iterator<Item = &Route> {
        self.exact
            .values()
            .chain(self.suffix.values())
            .chain(self.any.iter())
            .flat_map(|bucket| {
                bucket
                    .rules
                    .iter()
                    .map(|rule| &rule.route)
                    .chain(bucket.https_redirect.iter())
            })
    }

    /// The host patterns served, most specific first, each with its rule count and
    /// whether it redirects to https.
    #[cfg(test)]
    pub(crate) fn hosts(&self) -> Vec<(HostPattern, usize, bool)> {
        let describe = |p: HostPattern, b: &Bucket| (p, b.rules.len(), b.https_redirect.is_some());
        let mut exact: Vec<_> = self
            .exact
            .iter()
            .map(|(h, b)| describe(HostPattern::Exact(h.to_string()), b))
            .collect();
        exact.sort_by(|a, b| a.0.cmp(&b.0));
        let mut suffix: Vec<_> = self
            .suffix
            .iter()
            .map(|(s, b)| describe(HostPattern::Suffix(s.to_string()), b))
            .collect();
        suffix.sort_by(|a, b| a.0.cmp(&b.0));
        exact
            .into_iter()
            .chain(suffix)
            .chain(self.any.iter().map(|b| describe(HostPattern::Any, b)))
            .collect()
    }
}

/// The value for `host` among values by host pattern (`exact` by name, `suffix` by
/// suffix with its leading dot, `any` for `*`): the exact name, else the longest
/// matching suffix, else `any`; no fallback from a more specific match that exists.
pub(crate) fn lookup_host<'t, V>(
    exact: &'t HostMap<V>,
    suffix: &'t HostMap<V>,
    any: Option<&'t V>,
    host: &str,
) -> Option<&'t V> {
    if let Some(value) = exact.get(host) {
        return Some(value);
    }
    if !suffix.is_empty() {
        // Leftmost dot first: the longest suffix. A suffix needs at least one
        // character before it, so the dot at 0 is skipped.
        for (dot, _) in host.match_indices('.').filter(|(i, _)| *i > 0) {
            if let Some(value) = host.get(dot..).and_then(|s| suffix.get(s)) {
                return Some(value);
            }
        }
    }
    any
}

/// Puts `value` under `pattern` in the maps [`lookup_host`] reads.
pub(crate) fn insert_host<V>(
    (exact, suffix, any): (&mut HostMap<V>, &mut HostMap<V>, &mut Option<V>),
    pattern: HostPattern,
    value: V,
) {
    match pattern {
        HostPattern::Exact(host) => {
            exact.insert(host.into_boxed_str(), value);
        }
        HostPattern::Suffix(s) => {
            suffix.insert(s.into_boxed_str(), value);
        }
        HostPattern::Any => *any = Some(value),
    }
}

/// The hosts both a VirtualService host and a Gateway server host cover, as one
/// pattern (the more specific of the two), or `None` when they share none.
pub(crate) fn intersect(vs: &HostPattern, server: &HostPattern) -> Option<HostPattern> {
    use HostPattern::{Any, Exact, Suffix};
    match (vs, server) {
        (Any, other) | (other, Any) => Some(other.clone()),
        (Exact(a), Exact(b)) => (a == b).then(|| vs.clone()),
        (Exact(host), pattern @ Suffix(_)) | (pattern @ Suffix(_), Exact(host)) => {
            pattern.matches(host).then(|| Exact(host.clone()))
        }
        (Suffix(a), Suffix(b)) => {
            if a.ends_with(b.as_str()) {
                Some(vs.clone())
            } else if b.ends_with(a.as_str()) {
                Some(server.clone())
            } else {
                None
            }
        }
    }
}

fn https_redirect_route(gateway: &str) -> Route {
    Route {
        virtual_service: gateway.to_owned(),
        rule: 0,
        name: None,
        action: Action::HttpsRedirect,
        rewrite: None,
        timeout: None,
        retries: None,
        headers: HeaderOperations::default(),
        policies: RoutePolicies::default(),
        mirrors: Box::default(),
        stats: StatusCounters::default(),
    }
}

fn compile_rules(vs: &VirtualService, clusters: &Clusters) -> Result<Vec<Rule>, RouteError> {
    vs.http
        .iter()
        .enumerate()
        .map(|(index, http)| compile_rule(vs, index, http, clusters))
        .collect()
}

fn compile_rule(
    vs: &VirtualService,
    index: usize,
    http: &HttpRoute,
    clusters: &Clusters,
) -> Result<Rule, RouteError> {
    let action = match &http.action {
        RouteAction::Route(destinations) => Action::Forward(weighted_clusters(
            vs,
            "http",
            index,
            destinations,
            clusters,
        )?),
        RouteAction::Redirect(redirect) => Action::Redirect(redirect.clone()),
        RouteAction::DirectResponse { status, body } => Action::Direct {
            status: *status,
            body: body.clone(),
        },
    };
    let mut mirrors = Vec::new();
    if matches!(action, Action::Forward(_)) {
        for (m, mirror) in http.policies.mirrors.iter().enumerate() {
            let subset = mirror.subset.as_deref();
            let cluster = clusters
                .lookup(&mirror.host, subset, mirror.port)
                .ok_or_else(|| RouteError::MissingMirrorCluster {
                    origin: Box::new(vs.origin.clone()),
                    rule: index,
                    mirror: m,
                    host: mirror.host.clone(),
                    port: mirror.port.map(|p| format!(":{p}")).unwrap_or_default(),
                })?;
            mirrors.push((cluster, mirror.share));
        }
    }
    let mirrors = mirrors.into_boxed_slice();
    let conditions = http.matches.iter().map(compile_condition).collect();
    Ok(Rule {
        conditions,
        route: Route {
            virtual_service: vs.name.clone(),
            rule: index,
            name: http.name.clone(),
            action,
            rewrite: http.rewrite.clone(),
            timeout: http.timeout,
            retries: http.retries.clone(),
            headers: http.headers.clone(),
            policies: http.policies.clone(),
            mirrors,
            stats: StatusCounters::default(),
        },
    })
}

/// The clusters of a rule's weighted destinations (`section[rule]` of `vs`).
pub(crate) fn weighted_clusters(
    vs: &VirtualService,
    section: &'static str,
    rule: usize,
    destinations: &[WeightedDestination],
    clusters: &Clusters,
) -> Result<WeightedClusters, RouteError> {
    let mut weighted = Vec::with_capacity(destinations.len());
    for (d, destination) in destinations.iter().enumerate() {
        let subset = destination.subset.as_deref();
        let cluster = clusters
            .lookup(&destination.host, subset, destination.port)
            .ok_or_else(|| RouteError::MissingCluster {
                origin: Box::new(vs.origin.clone()),
                section,
                rule,
                destination: d,
                host: destination.host.clone(),
                port: destination
                    .port
                    .map(|p| format!(":{p}"))
                    .unwrap_or_default(),
            })?;
        weighted.push((cluster, destination.weight));
    }
    WeightedClusters::new(&weighted).ok_or_else(|| RouteError::NoDestination {
        origin: Box::new(vs.origin.clone()),
        section,
        rule,
    })
}

/// Compiles one `match[]` entry. As in Istio, `ignoreUriCase` applies to `exact` and
/// `prefix` uris only; a `regex` says for itself whether case matters (`(?i)`).
fn compile_condition(m: &RouteMatch) -> Condition {
    let uri = match (&m.uri, m.ignore_uri_case) {
        (None, _) => None,
        (Some(StringMatch::Regex(r)), _) => Some(UriCondition::Regex(r.clone())),
        (Some(StringMatch::Exact(p)), false) => Some(UriCondition::Exact(p.clone())),
        (Some(StringMatch::Prefix(p)), false) => Some(UriCondition::Prefix(p.clone())),
        (Some(StringMatch::Exact(p)), true) => {
            Some(UriCondition::ExactIgnoreCase(p.to_ascii_lowercase()))
        }
        (Some(StringMatch::Prefix(p)), true) => {
            Some(UriCondition::PrefixIgnoreCase(p.to_ascii_lowercase()))
        }
    };
    Condition {
        uri,
        authority: m.authority.clone(),
        method: m.method.clone(),
        scheme: m.scheme.clone(),
        headers: m.headers.clone().into_boxed_slice(),
        without_headers: m.without_headers.clone().into_boxed_slice(),
        query_params: m.query_params.clone().into_boxed_slice(),
        port: m.port,
        gateways: m.gateways.clone().into_boxed_slice(),
    }
}

/// The path to send upstream under `rewrite.uri`, or `None` when the route does not
/// rewrite it. A prefix match (including Istio's implicit `prefix: /` of a rule
/// without a uri condition) has the matched prefix replaced; an exact or regex match
/// has the whole path replaced. The query string is kept.
pub(crate) fn rewrite_path(route: &Route, matched: MatchedUri, path: &str) -> Option<String> {
    let replacement = route.rewrite.as_ref()?.uri.as_deref()?;
    let query_start = path.find('?').unwrap_or(path.len());
    let rest = match matched {
        MatchedUri::Prefix(len) if len <= query_start => path.get(len..),
        MatchedUri::Prefix(_) | MatchedUri::Whole => None,
    }
    .unwrap_or_else(|| path.get(query_start..).unwrap_or(""));
    let mut rewritten = String::with_capacity(replacement.len() + rest.len());
    rewritten.push_str(replacement);
    rewritten.push_str(rest);
    Some(rewritten)
}

/// The `location` of a `redirect` rule, with Istio's semantics: `uri` replaces the
/// path (the query is kept unless `uri` has its own), `authority` the host, `scheme`
/// and `port` as given. Without `port`, the listener's port is kept unless the scheme
/// changes away from that port's default; a port that is the scheme's default is
/// left out.
pub(crate) fn redirect_location(
    redirect: &Redirect,
    req: &RouteRequest<'_>,
    listener_port: u16,
) -> String {
    let scheme = redirect.scheme.as_deref().unwrap_or(req.scheme);
    let host = redirect.authority.as_deref().unwrap_or(req.host);
    let port = redirect.port.or_else(|| {
        let scheme_changed = !scheme.eq_ignore_ascii_case(req.scheme);
        (!(scheme_changed && default_port(req.scheme) == Some(listener_port)))
            .then_some(listener_port)
    });
    let path = match &redirect.uri {
        Some(uri) if uri.contains('?') => uri.as_str(),
        Some(uri) => {
            let query = req
                .path
                .find('?')
                .and_then(|i| req.path.get(i..))
                .unwrap_or("");
            return format_location(scheme, host, port, &[uri.as_str(), query]);
        }
        None => req.path,
    };
    format_location(scheme, host, port, &[path])
}

/// The `location` of an [`Action::HttpsRedirect`]: the same host and path on https's
/// default port.
pub(crate) fn https_redirect_location(req: &RouteRequest<'_>) -> String {
    format_location("https", req.host, None, &[req.path])
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    }
}

fn format_location(scheme: &str, host: &str, port: Option<u16>, path: &[&str]) -> String {
    let mut location = format!("{scheme}://{host}");
    if let Some(port) = port.filter(|p| default_port(scheme) != Some(*p)) {
        location.push(':');
        location.push_str(&port.to_string());
    }
    for part in path {
        location.push_str(part);
    }
    location
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        Gateway, Resolution, Server, ServiceEntry, ServicePort, WeightedDestination,
    };
    use std::path::PathBuf;

    // ---- builders -------------------------------------------------------------

    fn origin(kind: &str, name: &str) -> Origin {
        Origin {
            file: PathBuf::from("gateway.yaml"),
            document: 1,
            kind: kind.to_owned(),
            name: name.to_owned(),
        }
    }

    fn host(pattern: &str) -> HostPattern {
        if pattern == "*" {
            HostPattern::Any
        } else if let Some(suffix) = pattern.strip_prefix('*') {
            HostPattern::Suffix(suffix.to_owned())
        } else {
            HostPattern::Exact(pattern.to_owned())
        }
    }

    fn server(port: u16, hosts: &[&str]) -> Server {
        Server {
            port,
            port_name: format!("p{port}"),
            protocol: if port == 443 {
                Protocol::Https
            } else {
                Protocol::Http
            },
            bind: None,
            hosts: hosts.iter().map(|h| host(h)).collect(),
            tls: None,
            https_redirect: false,
        }
    }

    fn gateway(name: &str, servers: Vec<Server>) -> Gateway {
        Gateway {
            origin: origin("Gateway", name),
            name: name.to_owned(),
            namespace: None,
            servers,
        }
    }

    fn vs(name: &str, hosts: &[&str], gateways: &[&str], http: Vec<HttpRoute>) -> VirtualService {
        VirtualService {
            origin: origin("VirtualService", name),
            name: name.to_owned(),
            namespace: None,
            hosts: hosts.iter().map(|h| host(h)).collect(),
            gateways: gateways.iter().map(|g| (*g).to_owned()).collect(),
            http,
            tls: vec![],
            tcp: vec![],
        }
    }

    fn to(destinations: &[(&str, u16, u32)]) -> RouteAction {
        RouteAction::Route(
            destinations
                .iter()
                .map(|(host, port, weight)| WeightedDestination {
                    host: (*host).to_owned(),
                    port: Some(*port),
                    subset: None,
                    weight: *weight,
                })
                .collect(),
        )
    }

    fn rule(matches: Vec<RouteMatch>, action: RouteAction) -> HttpRoute {
        HttpRoute {
            name: None,
            matches,
            action,
            rewrite: None,
            timeout: None,
            retries: None,
            headers: HeaderOperations::default(),
            policies: Default::default(),
        }
    }

    fn uri(m: StringMatch) -> RouteMatch {
        RouteMatch {
            uri: Some(m),
            ..RouteMatch::default()
        }
    }

    fn prefix(p: &str) -> StringMatch {
        StringMatch::Prefix(p.to_owned())
    }

    fn exact(p: &str) -> StringMatch {
        StringMatch::Exact(p.to_owned())
    }

    fn regex(p: &str) -> StringMatch {
        StringMatch::Regex(Regex::new(&format!("^(?:{p})$")).unwrap())
    }

    fn direct(status: u16) -> RouteAction {
        RouteAction::DirectResponse { status, body: None }
    }

    /// Static upstreams for every destination host the tests use.
    fn service_entries() -> Vec<ServiceEntry> {
        ["httpbin", "v1", "v2", "other"]
            .iter()
            .enumerate()
            .map(|(i, h)| ServiceEntry {
                origin: origin("ServiceEntry", h),
                name: (*h).to_owned(),
                hosts: vec![(*h).to_owned()],
                ports: vec![ServicePort {
                    number: 8000,
                    name: "http".to_owned(),
                    protocol: "HTTP".to_owned(),
                    target_port: None,
                }],
                resolution: Resolution::Static,
                endpoints: vec![crate::config::Endpoint {
                    address: format!("127.0.0.{}", i + 1),
                    ports: Default::default(),
                    weight: None,
                    labels: Default::default(),
                }],
            })
            .collect()
    }

    fn config(gateways: Vec<Gateway>, virtual_services: Vec<VirtualService>) -> Config {
        Config {
            source: PathBuf::from("gateway.yaml"),
            gateways,
            virtual_services,
            service_entries: service_entries(),
            ..Config::default()
        }
    }

    struct Built {
        clusters: Clusters,
        tables: BTreeMap<u16, RouteTable>,
    }

    fn build(config: &Config) -> Built {
        let clusters = Clusters::build(config).unwrap();
        let tables = RouteTable::build_all(config, &clusters).unwrap();
        Built { clusters, tables }
    }

    struct TestHeaders(Vec<(&'static str, &'static [u8])>);

    impl Headers for TestHeaders {
        fn get(&self, name: &str) -> Option<&[u8]> {
            self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        }
    }

    fn request<'a>(host: &'a str, path: &'a str) -> RouteRequest<'a> {
        RouteRequest {
            host,
            path,
            method: "GET",
            scheme: "https",
            headers: &NoHeaders,
        }
    }

    impl Built {
        fn find(&self, port: u16, req: &RouteRequest<'_>) -> Option<&Route> {
            self.tables.get(&port)?.find(req)
        }

        /// `(virtual service, rule)` the request on `port` for `host` + `path` hits.
        fn hit(&self, port: u16, host: &str, path: &str) -> Option<(String, usize)> {
            self.find(port, &request(host, path))
                .map(|r| (r.virtual_service.clone(), r.rule))
        }

        fn cluster_name(&self, route: &Route) -> String {
            match &route.action {
                Action::Forward(w) => self.clusters.get(w.single().unwrap()).name.clone(),
                other => panic!("not a forward: {other:?}"),
            }
        }
    }

    fn hit(vs: &str, rule: usize) -> Option<(String, usize)> {
        Some((vs.to_owned(), rule))
    }

    // ---- tests ----------------------------------------------------------------

    /// Istio's "Control Ingress Traffic" task: /status and /delay of
    /// httpbin.example.com go to httpbin:8000, anything else is 404.
    #[test]
    fn walkthrough_status_and_delay_go_to_httpbin() {
        let config = config(
            vec![gateway(
                "httpbin-gateway",
                vec![server(443, &["httpbin.example.com"])],
            )],
            vec![vs(
                "httpbin",
                &["httpbin.example.com"],
                &["httpbin-gateway"],
                vec![rule(
                    vec![uri(prefix("/status")), uri(prefix("/delay"))],
                    to(&[("httpbin", 8000, 0)]),
                )],
            )],
        );
        let built = build(&config);
        assert_eq!(built.tables.keys().copied().collect::<Vec<_>>(), vec![443]);
        for path in ["/status/418", "/delay/1", "/status", "/status/200?x=1"] {
            let route = built
                .find(443, &request("httpbin.example.com", path))
                .unwrap_or_else(|| panic!("{path} not routed"));
            assert_eq!(built.cluster_name(route), "httpbin:8000");
            assert_eq!(route.virtual_service, "httpbin");
        }
        assert!(
            built
                .find(443, &request("httpbin.example.com", "/headers"))
                .is_none()
        );
        assert!(
            built
                .find(443, &request("other.example.com", "/status/418"))
                .is_none()
        );
        assert!(
            built
                .find(80, &request("httpbin.example.com", "/status/418"))
                .is_none()
        );
    }

    #[test]
    fn exact_prefix_and_regex_uris() {
        let config = config(
            vec![gateway("gw", vec![server(80, &["*"])])],
            vec![vs(
                "paths",
                &["example.com"],
                &["gw"],
                vec![
                    rule(vec![uri(exact("/login"))], direct(200)),
                    rule(vec![uri(regex("/items/[0-9]+"))], direct(201)),
                    rule(vec![uri(prefix("/static/"))], direct(202)),
                    rule(
                        vec![RouteMatch {
                            uri: Some(prefix("/CaSe")),
                            ignore_uri_case: true,
                            ..RouteMatch::default()
                        }],
                        direct(203),
                    ),
                    rule(
                        vec![RouteMatch {
                            uri: Some(regex("/upper/[a-z]+")),
                            ignore_uri_case: true,
                            ..RouteMatch::default()
                        }],
                        direct(204),
                    ),
                    rule(
                        vec![RouteMatch {
                            uri: Some(exact("/Exact")),
                            ignore_uri_case: true,
                            ..RouteMatch::default()
                        }],
                        direct(205),
                    ),
                ],
            )],
        );
        let built = build(&config);
        let rule_for = |path| built.hit(80, "example.com", path).map(|(_, r)| r);
        assert_eq!(rule_for("/login"), Some(0));
        assert_eq!(rule_for("/login?next=/x"), Some(0));
        assert_eq!(rule_for("/login/"), None);
        assert_eq!(rule_for("/items/42"), Some(1));
        assert_eq!(rule_for("/items/42?q=1"), Some(1));
        assert_eq!(rule_for("/items/42/x"), None);
        assert_eq!(rule_for("/static/app.js"), Some(2));
        assert_eq!(rule_for("/static"), None);
        assert_eq!(rule_for("/case/x"), Some(3));
        assert_eq!(rule_for("/CASE"), Some(3));
        assert_eq!(rule_for("/cas"), None);
        // ignoreUriCase does not apply to regex (as in Istio).
        assert_eq!(rule_for("/upper/abc"), Some(4));
        assert_eq!(rule_for("/UPPER/ABC"), None);
        assert_eq!(rule_for("/exact"), Some(5));
        assert_eq!(rule_for("/EXACT?x"), Some(5));
        assert_eq!(rule_for("/"), None);
    }

    #[test]
    fn headers_method_scheme_and_authority() {
        let config = config(
            vec![gateway("gw", vec![server(80, &["*.example.com"])])],
            vec![vs(
                "conditions",
                &["*.example.com"],
                &["gw"],
                vec![
                    rule(
                        vec![RouteMatch {
                            headers: vec![
                                ("x-user".to_owned(), exact("jason")),
                                ("x-tier".to_owned(), regex("gold|silver")),
                            ],
                            ..RouteMatch::default()
                        }],
                        direct(200),
                    ),
                    rule(
                        vec![RouteMatch {
                            method: Some(exact("POST")),
                            uri: Some(prefix("/api")),
                            ..RouteMatch::default()
                        }],
                        direct(201),
                    ),
                    rule(
                        vec![RouteMatch {
                            scheme: Some(exact("http")),
                            authority: Some(prefix("admin.")),
                            ..RouteMatch::default()
                        }],
                        direct(202),
                    ),
                    rule(vec![], direct(203)),
                ],
            )],
        );
        let built = build(&config);
        let table = &built.tables[&80];
        let rule_for = |host, method, scheme, headers: &TestHeaders| {
            table
                .find(&RouteRequest {
                    host,
                    path: "/api/v1",
                    method,
                    scheme,
                    headers,
                })
                .map(|r| r.rule)
        };
        let none = TestHeaders(vec![]);
        let jason = TestHeaders(vec![("x-user", b"jason"), ("x-tier", b"gold")]);
        let jason_bronze = TestHeaders(vec![("x-user", b"jason"), ("x-tier", b"bronze")]);
        let not_utf8 = TestHeaders(vec![("x-user", b"jason"), ("x-tier", b"g\xffold")]);
        let h = "www.example.com";
        assert_eq!(rule_for(h, "GET", "https", &jason), Some(0));
        assert_eq!(rule_for(h, "GET", "https", &jason_bronze), Some(3));
        assert_eq!(rule_for(h, "GET", "https", &not_utf8), Some(3));
        assert_eq!(rule_for(h, "POST", "https", &none), Some(1));
        assert_eq!(rule_for(h, "post", "https", &none), Some(3));
        assert_eq!(rule_for("admin.example.com", "GET", "http", &none), Some(2));
        assert_eq!(
            rule_for("admin.example.com", "GET", "https", &none),
            Some(3)
        );
        assert_eq!(rule_for("example.com", "GET", "https", &none), None);
    }

    #[test]
    fn exact_host_beats_longest_suffix_beats_any() {
        let config = config(
            vec![gateway("gw", vec![server(80, &["*"])])],
            vec![
                vs("any", &["*"], &["gw"], vec![rule(vec![], direct(200))]),
                vs("com", &["*.com"], &["gw"], vec![rule(vec![], direct(200))]),
                vs(
                    "example",
                    &["*.example.com"],
                    &["gw"],
                    vec![rule(vec![], direct(200))],
                ),
                vs(
                    "www",
                    &["www.example.com"],
                    &["gw"],
                    vec![rule(vec![uri(prefix("/www"))], direct(200))],
                ),
            ],
        );
        let built = build(&config);
        assert_eq!(built.hit(80, "www.example.com", "/www"), hit("www", 0));
        // The exact host's bucket has no catch-all; no fallback to the wildcard.
        assert_eq!(built.hit(80, "www.example.com", "/other"), None);
        assert_eq!(built.hit(80, "a.b.example.com", "/"), hit("example", 0));
        assert_eq!(built.hit(80, "api.example.com", "/"), hit("example", 0));
        assert_eq!(built.hit(80, "example.com", "/"), hit("com", 0));
        assert_eq!(built.hit(80, "localhost", "/"), hit("any", 0));
        assert_eq!(built.hit(80, ".example.com", "/"), hit("com", 0));
        let hosts = built.tables[&80].hosts();
        assert_eq!(
            hosts
                .iter()
                .map(|(h, _, _)| h.to_string())
                .collect::<Vec<_>>(),
            vec!["www.example.com", "*.com", "*.example.com", "*"]
        );
    }

    #[test]
    fn first_match_wins_across_virtual_services_in_config_order() {
        let config = config(
            vec![gateway("gw", vec![server(80, &["bookinfo.com"])])],
            vec![
                vs(
                    "first",
                    &["bookinfo.com"],
                    &["gw"],
                    vec![
                        rule(vec![uri(prefix("/reviews"))], to(&[("v1", 8000, 0)])),
                        rule(vec![uri(exact("/login"))], to(&[("v1", 8000, 0)])),
                    ],
                ),
                vs(
                    "second",
                    &["bookinfo.com"],
                    &["gw"],
                    vec![
                        rule(vec![uri(prefix("/reviews/2"))], to(&[("v2", 8000, 0)])),
                        rule(vec![], to(&[("other", 8000, 0)])),
                    ],
                ),
            ],
        );
        let built = build(&config);
        assert_eq!(built.hit(80, "bookinfo.com", "/reviews/2"), hit("first", 0));
        assert_eq!(built.hit(80, "bookinfo.com", "/login"), hit("first", 1));
        assert_eq!(
            built.hit(80, "bookinfo.com", "/productpage"),
            hit("second", 1)
        );
        let route = built
            .find(80, &request("bookinfo.com", "/anything"))
            .unwrap();
        assert_eq!(built.cluster_name(route), "other:8000");
    }

    #[test]
    fn hosts_are_intersected_with_the_gateway_server() {
        let config = config(
            vec![gateway(
                "gw",
                vec![server(80, &["httpbin.example.com", "*.bookinfo.com"])],
            )],
            vec![
                vs("star", &["*"], &["gw"], vec![rule(vec![], direct(200))]),
                vs(
                    "uncovered",
                    &["other.org", "bookinfo.com", "*.reviews.bookinfo.com"],
                    &["gw"],
                    vec![rule(vec![], direct(201))],
                ),
            ],
        );
        let built = build(&config);
        assert_eq!(built.hit(80, "httpbin.example.com", "/"), hit("star", 0));
        assert_eq!(built.hit(80, "x.bookinfo.com", "/"), hit("star", 0));
        // `*` on a server for these hosts serves only them.
        assert_eq!(built.hit(80, "other.example.com", "/"), None);
        assert_eq!(built.hit(80, "localhost", "/"), None);
        // VS hosts no server covers are not served.
        assert_eq!(built.hit(80, "other.org", "/"), None);
        assert_eq!(built.hit(80, "bookinfo.com", "/"), None);
        // A narrower wildcard than the server's is served, and is more specific.
        assert_eq!(
            built.hit(80, "v1.reviews.bookinfo.com", "/"),
            hit("uncovered", 0)
        );
        // A VS naming an unknown gateway is served nowhere.
        let config = Config {
            virtual_services: vec![vs(
                "lost",
                &["*"],
                &["nope"],
                vec![rule(vec![], direct(200))],
            )],
            ..config
        };
        let built = build(&config);
        assert_eq!(built.hit(80, "httpbin.example.com", "/"), None);
    }

    #[test]
    fn intersection_of_host_patterns() {
        let cases = [
            ("*", "a.com", Some("a.com")),
            ("a.com", "*", Some("a.com")),
            ("*", "*", Some("*")),
            ("a.com", "a.com", Some("a.com")),
            ("a.com", "b.com", None),
            ("x.a.com", "*.a.com", Some("x.a.com")),
            ("*.a.com", "x.a.com", Some("x.a.com")),
            ("a.com", "*.a.com", None),
            ("*.x.a.com", "*.a.com", Some("*.x.a.com")),
            ("*.a.com", "*.x.a.com", Some("*.x.a.com")),
            ("*.a.com", "*.b.com", None),
            ("*.a.com", "*", Some("*.a.com")),
        ];
        for (a, b, expected) in cases {
            assert_eq!(
                intersect(&host(a), &host(b)),
                expected.map(host),
                "{a} ∩ {b}"
            );
        }
    }

    #[test]
    fn ports_are_separate() {
        let config = config(
            vec![
                gateway("tls-only", vec![server(443, &["*"])]),
                gateway("plain", vec![server(80, &["*"])]),
            ],
            vec![
                vs(
                    "secure",
                    &["secure.com"],
                    &["tls-only"],
                    vec![rule(vec![], direct(200))],
                ),
                vs(
                    "both",
                    &["both.com"],
                    &["tls-only", "plain"],
                    vec![rule(vec![], direct(200))],
                ),
            ],
        );
        let built = build(&config);
        assert_eq!(
            built.tables.keys().copied().collect::<Vec<_>>(),
            vec![80, 443]
        );
        assert_eq!(built.tables[&443].port(), 443);
        assert_eq!(built.hit(443, "secure.com", "/"), hit("secure", 0));
        assert_eq!(built.hit(80, "secure.com", "/"), None);
        assert_eq!(built.hit(80, "both.com", "/"), hit("both", 0));
        assert_eq!(built.hit(443, "both.com", "/"), hit("both", 0));
    }

    #[test]
    fn a_port_without_virtual_services_has_an_empty_table() {
        let config = config(vec![gateway("gw", vec![server(8080, &["*"])])], vec![]);
        let built = build(&config);
        assert!(built.tables[&8080].hosts().is_empty());
        assert_eq!(built.hit(8080, "a.com", "/"), None);
    }

    #[test]
    fn https_redirect_server_redirects_its_hosts() {
        let mut redirecting = server(80, &["httpbin.example.com"]);
        redirecting.https_redirect = true;
        let config = config(
            vec![gateway(
                "gw",
                vec![
                    redirecting,
                    server(80, &["plain.example.com"]),
                    server(443, &["*.example.com"]),
                ],
            )],
            vec![vs(
                "httpbin",
                &["*.example.com"],
                &["gw"],
                vec![rule(vec![], to(&[("httpbin", 8000, 0)]))],
            )],
        );
        let built = build(&config);
        let req = request("httpbin.example.com", "/status/418?x=1");
        let route = built.find(80, &req).unwrap();
        assert!(matches!(route.action, Action::HttpsRedirect));
        assert_eq!(route.virtual_service, "gw");
        assert_eq!(
            https_redirect_location(&req),
            "https://httpbin.example.com/status/418?x=1"
        );
        assert_eq!(built.hit(80, "plain.example.com", "/"), hit("httpbin", 0));
        assert_eq!(
            built.hit(443, "httpbin.example.com", "/"),
            hit("httpbin", 0)
        );
        // A redirecting server redirects its hosts even with no VirtualService bound.
        let config = Config {
            virtual_services: vec![],
            ..config
        };
        let built = build(&config);
        let route = built
            .find(80, &request("httpbin.example.com", "/"))
            .unwrap();
        assert!(matches!(route.action, Action::HttpsRedirect));
        assert!(built.find(80, &request("plain.example.com", "/")).is_none());
    }

    #[test]
    fn rewrite_replaces_the_matched_prefix_or_the_whole_path() {
        let rewrite_rule = |m: Vec<RouteMatch>, to_uri: &str| HttpRoute {
            rewrite: Some(Rewrite {
                uri: Some(to_uri.to_owned()),
                authority: None,
            }),
            ..rule(m, direct(200))
        };
        let config = config(
            vec![gateway("gw", vec![server(80, &["*"])])],
            vec![vs(
                "rewrite",
                &["a.com"],
                &["gw"],
                vec![
                    rewrite_rule(vec![uri(prefix("/v1/"))], "/api/"),
                    rewrite_rule(vec![uri(exact("/old"))], "/new"),
                    rewrite_rule(vec![uri(regex("/r/[0-9]+"))], "/regex"),
                    rule(vec![uri(prefix("/keep"))], direct(200)),
                    rewrite_rule(
                        vec![RouteMatch {
                            uri: Some(prefix("/up")),
                            ignore_uri_case: true,
                            ..RouteMatch::default()
                        }],
                        "/down",
                    ),
                    rewrite_rule(vec![], "/root/"),
                ],
            )],
        );
        let built = build(&config);
        let table = &built.tables[&80];
        let rewrite = |path| {
            let selected = table.select(&request("a.com", path)).unwrap();
            rewrite_path(selected.route, selected.matched_uri, path)
        };
        assert_eq!(
            rewrite("/v1/users?id=7").as_deref(),
            Some("/api/users?id=7")
        );
        assert_eq!(rewrite("/v1/").as_deref(), Some("/api/"));
        assert_eq!(rewrite("/old").as_deref(), Some("/new"));
        assert_eq!(rewrite("/old?a=b").as_deref(), Some("/new?a=b"));
        assert_eq!(rewrite("/r/12?q").as_deref(), Some("/regex?q"));
        assert_eq!(rewrite("/keep/this"), None);
        assert_eq!(rewrite("/UP/x").as_deref(), Some("/down/x"));
        // Istio's implicit `prefix: /`.
        assert_eq!(rewrite("/other?z").as_deref(), Some("/root/other?z"));
        // Out-of-range match lengths do not panic.
        let route = &table.find(&request("a.com", "/old")).unwrap().clone();
        assert_eq!(
            rewrite_path(route, MatchedUri::Prefix(99), "/old?q").as_deref(),
            Some("/new?q")
        );
    }

    #[test]
    fn redirect_locations() {
        let req = RouteRequest {
            host: "old.com",
            path: "/a/b?x=1",
            method: "GET",
            scheme: "http",
            headers: &NoHeaders,
        };
        let redirect =
            |uri: Option<&str>, authority: Option<&str>, scheme: Option<&str>, port| Redirect {
                uri: uri.map(str::to_owned),
                authority: authority.map(str::to_owned),
                scheme: scheme.map(str::to_owned),
                port,
                code: 301,
            };
        assert_eq!(
            redirect_location(&redirect(Some("/new"), None, None, None), &req, 80),
            "http://old.com/new?x=1"
        );
        assert_eq!(
            redirect_location(&redirect(Some("/new?y=2"), None, None, None), &req, 8080),
            "http://old.com:8080/new?y=2"
        );
        assert_eq!(
            redirect_location(&redirect(None, Some("new.com"), None, None), &req, 80),
            "http://new.com/a/b?x=1"
        );
        assert_eq!(
            redirect_location(&redirect(None, None, Some("https"), None), &req, 80),
            "https://old.com/a/b?x=1"
        );
        assert_eq!(
            redirect_location(&redirect(None, None, Some("https"), Some(8443)), &req, 80),
            "https://old.com:8443/a/b?x=1"
        );
        assert_eq!(
            redirect_location(&redirect(None, None, Some("https"), None), &req, 8080),
            "https://old.com:8080/a/b?x=1"
        );
        assert_eq!(
            redirect_location(&redirect(None, None, None, Some(80)), &req, 8080),
            "http://old.com/a/b?x=1"
        );
    }

    #[test]
    fn weighted_picks_follow_the_weights() {
        let config = config(
            vec![gateway("gw", vec![server(80, &["*"])])],
            vec![vs(
                "canary",
                &["*"],
                &["gw"],
                vec![rule(
                    vec![],
                    to(&[("v1", 8000, 80), ("v2", 8000, 20), ("other", 8000, 0)]),
                )],
            )],
        );
        let built = build(&config);
        let route = built.find(80, &request("a.com", "/")).unwrap();
        let Action::Forward(weighted) = &route.action else {
            panic!("not a forward");
        };
        assert_eq!(weighted.single(), None);
        let v1 = built.clusters.lookup("v1", None, Some(8000)).unwrap();
        let v2 = built.clusters.lookup("v2", None, Some(8000)).unwrap();
        assert_eq!(
            weighted.iter().collect::<Vec<_>>(),
            vec![(v1, 80), (v2, 20)]
        );
        let picks = 10_000;
        let to_v1 = (0..picks).filter(|_| weighted.pick() == v1).count();
        assert!(
            (7_500..=8_500).contains(&to_v1),
            "v1 got {to_v1} of {picks}"
        );

        let one = WeightedClusters::new(&[(v2, 0)]).unwrap();
        assert_eq!(one.single(), Some(v2));
        assert_eq!(one.pick(), v2);
        let even = WeightedClusters::new(&[(v1, 0), (v2, 0)]).unwrap();
        assert_eq!(even.iter().collect::<Vec<_>>(), vec![(v1, 1), (v2, 1)]);
        assert!(WeightedClusters::new(&[]).is_none());
    }

    #[test]
    fn rule_settings_are_carried_into_the_route() {
        let mut forward = rule(vec![uri(prefix("/api"))], to(&[("httpbin", 8000, 0)]));
        forward.name = Some("api".to_owned());
        forward.timeout = Some(Duration::from_secs(3));
        forward.retries = Some(Retries {
            attempts: 2,
            per_try_timeout: None,
            retry_on: vec!["5xx".to_owned()],
        });
        forward.headers.request.set = vec![("x-env".to_owned(), "prod".to_owned())];
        let moved = rule(
            vec![uri(exact("/old"))],
            RouteAction::Redirect(Redirect {
                uri: Some("/new".to_owned()),
                code: 308,
                ..Redirect::default()
            }),
        );
        let teapot = rule(
            vec![],
            RouteAction::DirectResponse {
                status: 418,
                body: Some("teapot".to_owned()),
            },
        );
        let config = config(
            vec![gateway("gw", vec![server(80, &["*"])])],
            vec![vs("all", &["*"], &["gw"], vec![forward, moved, teapot])],
        );
        let built = build(&config);
        let api = built.find(80, &request("a.com", "/api")).unwrap();
        assert_eq!(api.name.as_deref(), Some("api"));
        assert_eq!(api.timeout, Some(Duration::from_secs(3)));
        assert_eq!(api.retries.as_ref().map(|r| r.attempts), Some(2));
        assert_eq!(api.headers.request.set.len(), 1);
        let old = built.find(80, &request("a.com", "/old")).unwrap();
        assert!(matches!(&old.action, Action::Redirect(r) if r.code == 308));
        let other = built.find(80, &request("a.com", "/x")).unwrap();
        assert!(matches!(
            &other.action,
            Action::Direct { status: 418, body: Some(b) } if b == "teapot"
        ));
    }

    #[test]
    fn tables_can_be_shared_with_shards() {
        fn shared<T: Send + Sync>() {}
        shared::<RouteTable>();
        shared::<Clusters>();
    }

    #[test]
    fn missing_cluster_is_an_error() {
        let config = config(
            vec![gateway("gw", vec![server(80, &["*"])])],
            vec![vs(
                "broken",
                &["*"],
                &["gw"],
                vec![rule(vec![], to(&[("httpbin", 8000, 0)]))],
            )],
        );
        let message = RouteTable::build_all(&config, &Clusters::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "gateway.yaml document 1 (VirtualService broken): http[0].route[0]: \
             destination httpbin:8000 has no cluster"
        );
    }

    #[test]
    fn query_params_and_without_headers_are_conditions_of_the_request() {
        let by_query = RouteMatch {
            query_params: vec![("v".into(), exact("2")), ("id".into(), regex("[0-9]+"))],
            ..RouteMatch::default()
        };
        let not_canary = RouteMatch {
            without_headers: vec![("x-canary".into(), exact("yes"))],
            ..RouteMatch::default()
        };
        let config = config(
            vec![gateway("gw", vec![server(80, &["*"])])],
            vec![vs(
                "a",
                &["a.com"],
                &["gw"],
                vec![
                    rule(vec![by_query], direct(201)),
                    rule(vec![not_canary], direct(202)),
                    rule(vec![], direct(203)),
                ],
            )],
        );
        let built = build(&config);
        let status = |path: &str, headers: &TestHeaders| {
            let req = RouteRequest {
                headers,
                ..request("a.com", path)
            };
            match built.find(80, &req).map(|r| &r.action) {
                Some(Action::Direct { status, .. }) => *status,
                other => panic!("{path}: {other:?}"),
            }
        };
        let none = TestHeaders(vec![]);
        let canary = TestHeaders(vec![("x-canary", b"yes")]);
        let other = TestHeaders(vec![("x-canary", b"no")]);
        // Both parameters, the first value of each, as sent.
        assert_eq!(status("/?v=2&id=17", &canary), 201);
        assert_eq!(status("/p?id=17&x&v=2#top", &canary), 201);
        assert_eq!(status("/?v=2&id=17&v=3", &canary), 201);
        assert_eq!(status("/?v=3&v=2&id=17", &canary), 203);
        assert_eq!(status("/?v=2&id=1x", &canary), 203);
        assert_eq!(status("/?v=2", &canary), 203);
        assert_eq!(status("/?v%3D2&id=1", &canary), 203);
        // withoutHeaders: an absent header, or another value, lets the match hold.
        assert_eq!(status("/", &none), 202);
        assert_eq!(status("/", &other), 202);
        assert_eq!(status("/", &canary), 203);
    }

    #[test]
    fn port_and_gateways_choose_where_a_match_applies() {
        let on_8080 = RouteMatch {
            port: Some(8080),
            ..uri(prefix("/p"))
        };
        let through_internal = RouteMatch {
            gateways: vec!["internal".into()],
            ..uri(prefix("/g"))
        };
        let config = config(
            vec![
                gateway("public", vec![server(80, &["*"]), server(8080, &["*"])]),
                gateway("internal", vec![server(9090, &["*"])]),
            ],
            vec![vs(
                "a",
                &["a.com"],
                &["public", "internal"],
                vec![
                    rule(vec![on_8080], direct(201)),
                    rule(vec![through_internal], direct(202)),
                    rule(vec![], direct(203)),
                ],
            )],
        );
        let built = build(&config);
        let status = |port: u16, path: &str| match built.find(port, &request("a.com", path)) {
            Some(Route {
                action: Action::Direct { status, .. },
                ..
            }) => *status,
            other => panic!("{port} {path}: {other:?}"),
        };
        assert_eq!(status(8080, "/p"), 201);
        assert_eq!(status(80, "/p"), 203);
        assert_eq!(status(9090, "/p"), 203);
        assert_eq!(status(9090, "/g"), 202);
        assert_eq!(status(80, "/g"), 203);
        assert_eq!(status(8080, "/g"), 203);
    }
}
