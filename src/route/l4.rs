//! Compiled `tls[]` and `tcp[]` routes of one TLS passthrough or TCP listener port:
//! SNI (or nothing, for TCP) to the weighted clusters a connection is relayed to.
//!
//! Built on the control thread with Istio's gateway semantics:
//! - a VirtualService applies to a port when its `gateways` name a Gateway with a
//!   server on that port, and (as Istio checks for TCP too) one of its hosts
//!   intersects one of that server's hosts;
//! - on a passthrough port, each `tls[]` match entry that applies there (its `port`,
//!   its `gateways`) claims the intersections of its `sniHosts` with the server's
//!   hosts; as Istio dedups SNI filter chains, the first rule (VirtualServices in
//!   config order, rules in order) to claim a pattern keeps it. A ClientHello's name
//!   then picks, as Envoy's filter-chain match does, the exact name, else the longest
//!   `*.suffix`, else `*` (which also takes a hello without SNI);
//! - on a TCP port, the first `tcp[]` rule with no match entries or one that applies
//!   takes every connection.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    HostMap, RouteError, WeightedClusters, insert_host, intersect, lookup_host, weighted_clusters,
};
use crate::config::{Config, HostPattern, L4Match, L4Route, Protocol, VirtualService};
use crate::upstream::cluster::Clusters;

/// Where a matched connection goes, and which rule said so (for the log and `check`).
#[derive(Debug, Clone)]
pub(crate) struct L4Target {
    pub(crate) virtual_service: String,
    /// `tls` or `tcp`.
    pub(crate) section: &'static str,
    /// Index of the rule in that section.
    pub(crate) rule: usize,
    pub(crate) clusters: WeightedClusters,
}

/// The routes of one passthrough or TCP port.
#[derive(Debug, Clone, Default)]
pub(crate) struct L4Table {
    exact: HostMap<L4Target>,
    /// Keyed by the suffix with its leading dot (`.example.com`).
    suffix: HostMap<L4Target>,
    /// `*`: any name, and a ClientHello without one. On a TCP port, the one route.
    any: Option<L4Target>,
}

impl L4Table {
    /// One table per port a TLS passthrough or TCP server listens on.
    pub(crate) fn build_all(
        config: &Config,
        clusters: &Clusters,
    ) -> Result<BTreeMap<u16, L4Table>, RouteError> {
        let mut ports: BTreeMap<u16, Protocol> = BTreeMap::new();
        for server in config.gateways.iter().flat_map(|g| &g.servers) {
            if server.protocol.is_l4() {
                ports.insert(server.port, server.protocol);
            }
        }
        ports
            .into_iter()
            .map(|(port, protocol)| Ok((port, Self::build(config, clusters, port, protocol)?)))
            .collect()
    }

    fn build(
        config: &Config,
        clusters: &Clusters,
        port: u16,
        protocol: Protocol,
    ) -> Result<L4Table, RouteError> {
        let mut claimed: BTreeMap<HostPattern, L4Target> = BTreeMap::new();
        let mut tcp = None;
        for vs in &config.virtual_services {
            let (server_hosts, through) = served(config, vs, port);
            if through.is_empty() {
                continue;
            }
            let applies = |m: &L4Match| m.applies(port, through.iter().copied());
            if protocol == Protocol::Tcp {
                if tcp.is_some() {
                    break;
                }
                if let Some((rule, route)) = vs
                    .tcp
                    .iter()
                    .enumerate()
                    .find(|(_, r)| r.matches.is_empty() || r.matches.iter().any(applies))
                {
                    tcp = Some(target(vs, "tcp", rule, route, clusters)?);
                }
                continue;
            }
            for (rule, route) in vs.tls.iter().enumerate() {
                let mut compiled = None;
                for m in route.matches.iter().filter(|m| applies(m)) {
                    for sni in &m.sni_hosts {
                        for host in &server_hosts {
                            let Some(pattern) = intersect(sni, host) else {
                                continue;
                            };
                            if claimed.contains_key(&pattern) {
                                continue;
                            }
                            let t = match &compiled {
                                Some(t) => t,
                                None => compiled.insert(target(vs, "tls", rule, route, clusters)?),
                            };
                            claimed.insert(pattern, t.clone());
                        }
                    }
                }
            }
        }
        let mut table = L4Table {
            any: tcp,
            ..L4Table::default()
        };
        for (pattern, t) in claimed {
            insert_host(
                (&mut table.exact, &mut table.suffix, &mut table.any),
                pattern,
                t,
            );
        }
        Ok(table)
    }

    /// The route of a connection whose ClientHello named `sni` (`None`: no name, or a
    /// TCP port); `None` means the connection is closed (Envoy's `NR`).
    pub(crate) fn find(&self, sni: Option<&str>) -> Option<&L4Target> {
        match sni {
            Some(name) => lookup_host(&self.exact, &self.suffix, self.any.as_ref(), name),
            None => self.any.as_ref(),
        }
    }

    /// Every (pattern, target) of the table, most specific first (for `check`).
    pub(crate) fn entries(&self) -> Vec<(HostPattern, &L4Target)> {
        let mut exact: Vec<_> = self
            .exact
            .iter()
            .map(|(h, t)| (HostPattern::Exact(h.to_string()), t))
            .collect();
        exact.sort_by(|a, b| a.0.cmp(&b.0));
        let mut suffix: Vec<_> = self
            .suffix
            .iter()
            .map(|(s, t)| (HostPattern::Suffix(s.to_string()), t))
            .collect();
        suffix.sort_by(|a, b| a.0.cmp(&b.0));
        exact
            .into_iter()
            .chain(suffix)
            .chain(self.any.iter().map(|t| (HostPattern::Any, t)))
            .collect()
    }
}

/// The hosts of the L4 servers on `port` of the Gateways `vs` is bound to that share
/// a host with `vs`, and the names of those Gateways.
fn served<'c>(
    config: &'c Config,
    vs: &VirtualService,
    port: u16,
) -> (Vec<&'c HostPattern>, BTreeSet<&'c str>) {
    let mut hosts = Vec::new();
    let mut through = BTreeSet::new();
    for gateway in config
        .gateways
        .iter()
        .filter(|g| vs.gateways.contains(&g.name))
    {
        for server in gateway
            .servers
            .iter()
            .filter(|s| s.port == port && s.protocol.is_l4())
        {
            let shares = server
                .hosts
                .iter()
                .any(|h| vs.hosts.iter().any(|v| intersect(v, h).is_some()));
            if shares {
                hosts.extend(&server.hosts);
                through.insert(gateway.name.as_str());
            }
        }
    }
    (hosts, through)
}

fn target(
    vs: &VirtualService,
    section: &'static str,
    rule: usize,
    route: &L4Route,
    clusters: &Clusters,
) -> Result<L4Target, RouteError> {
    Ok(L4Target {
        virtual_service: vs.name.clone(),
        section,
        rule,
        clusters: weighted_clusters(vs, section, rule, &route.route, clusters)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the L4 tables of a configuration whose destinations are IP addresses.
    fn tables(yaml: &str) -> (BTreeMap<u16, L4Table>, Clusters) {
        let config = crate::config::load_str(yaml, std::path::Path::new("/l4.yaml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let clusters = Clusters::build(&config).expect("clusters");
        (
            L4Table::build_all(&config, &clusters).expect("tables"),
            clusters,
        )
    }

    fn gateway(servers: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  servers:\n{servers}"
        )
    }

    fn vs(name: &str, hosts: &str, routes: &str) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: {hosts}\n  gateways: [gw]\n{routes}"
        )
    }

    /// `tls[]` rule sending `sni` to `127.0.0.N:443`.
    fn tls_rule(sni: &str, n: u8) -> String {
        format!(
            "  - match:\n    - sniHosts: [\"{sni}\"]\n    route:\n    - destination: {{host: 127.0.0.{n}, port: {{number: 443}}}}\n"
        )
    }

    /// Which `127.0.0.N` a lookup ends at, as `(virtual service, rule, N)`.
    fn hit(
        table: &L4Table,
        clusters: &Clusters,
        sni: Option<&str>,
    ) -> Option<(String, usize, String)> {
        let t = table.find(sni)?;
        let (id, _) = t.clusters.iter().next()?;
        Some((
            t.virtual_service.clone(),
            t.rule,
            clusters.get(id).host.clone(),
        ))
    }

    #[test]
    fn sni_picks_exact_then_longest_suffix_then_any_and_first_rule_wins() {
        let servers = "  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [\"*\"]\n    tls: {mode: PASSTHROUGH}\n";
        let yaml = format!(
            "{}{}{}",
            gateway(servers),
            vs(
                "first",
                "[\"*.example.com\"]",
                &format!(
                    "  tls:\n{}{}{}",
                    tls_rule("a.example.com", 1),
                    tls_rule("*.example.com", 2),
                    tls_rule("a.example.com", 9)
                ),
            ),
            vs(
                "second",
                "[\"*\"]",
                &format!(
                    "  tls:\n{}{}{}",
                    tls_rule("*.example.com", 8),
                    tls_rule("*.b.example.com", 3),
                    tls_rule("*", 4)
                ),
            ),
        );
        let (tables, clusters) = tables(&yaml);
        let table = &tables[&443];
        let at = |sni| hit(table, &clusters, sni);
        let expect = |vs: &str, rule, n: u8| Some((vs.to_owned(), rule, format!("127.0.0.{n}")));
        assert_eq!(at(Some("a.example.com")), expect("first", 0, 1));
        assert_eq!(at(Some("c.example.com")), expect("first", 1, 2));
        assert_eq!(at(Some("x.b.example.com")), expect("second", 1, 3));
        assert_eq!(at(Some("example.com")), expect("second", 2, 4));
        // `*` takes a hello without SNI too.
        assert_eq!(at(None), expect("second", 2, 4));
    }

    #[test]
    fn sni_hosts_are_narrowed_to_the_server_hosts_and_nothing_else_routes() {
        let servers = "  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: [a.example.com]\n    tls: {mode: PASSTHROUGH}\n";
        let yaml = format!(
            "{}{}",
            gateway(servers),
            vs(
                "vs",
                "[\"*.example.com\"]",
                &format!("  tls:\n{}", tls_rule("*.example.com", 1))
            ),
        );
        let (tables, clusters) = tables(&yaml);
        let table = &tables[&443];
        assert_eq!(
            table
                .entries()
                .into_iter()
                .map(|(p, _)| p.to_string())
                .collect::<Vec<_>>(),
            ["a.example.com"]
        );
        assert!(hit(table, &clusters, Some("b.example.com")).is_none());
        assert!(hit(table, &clusters, None).is_none());
    }

    #[test]
    fn tcp_takes_the_first_rule_that_applies_on_the_port() {
        let servers = "  - port: {number: 5432, name: a, protocol: TCP}\n    hosts: [\"*\"]\n  - port: {number: 5433, name: b, protocol: TCP}\n    hosts: [\"*\"]\n";
        let tcp = "  tcp:\n  - match:\n    - port: 5433\n    route:\n    - destination: {host: 127.0.0.1, port: {number: 1}}\n  - route:\n    - destination: {host: 127.0.0.2, port: {number: 1}}\n";
        let yaml = format!(
            "{}{}{}",
            gateway(servers),
            vs("a", "[\"*\"]", tcp),
            vs("b", "[\"*\"]", tcp)
        );
        let (tables, clusters) = tables(&yaml);
        let host = |port| {
            hit(&tables[&port], &clusters, None)
                .map(|(vs, rule, host)| format!("{vs}.{rule} {host}"))
        };
        assert_eq!(host(5433).as_deref(), Some("a.0 127.0.0.1"));
        assert_eq!(host(5432).as_deref(), Some("a.1 127.0.0.2"));
    }
}
