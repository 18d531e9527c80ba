//! Checks of what TLS passthrough and TCP take: a Gateway server's `tls` block when
//! its protocol is `TLS` or `TCP` (or `HTTPS` with `mode: PASSTHROUGH`), and a
//! VirtualService's `tls[]` and `tcp[]` rules, as Istio validates them (a `tls[]` rule
//! needs a match, every match needs `sniHosts`, each covered by the VirtualService's
//! hosts; a `tcp[]` rule needs a `route`).

use serde::de::IgnoredAny;

use super::*;
use crate::config::file_l4::{FileL4Destination, FileL4Match, FileL4Route};
use crate::config::{L4Match, L4Route};

/// Why a TLS mode that needs a mesh is refused.
pub(super) fn mesh_tls_mode_reason(mode: &str) -> String {
    match mode {
        "AUTO_PASSTHROUGH" => "tls mode AUTO_PASSTHROUGH routes by an SNI that encodes a mesh service's cluster name (outbound_.PORT_._.HOST), which only a mesh's service registry defines; ringress serves gateway traffic only: use PASSTHROUGH with tls routes".to_owned(),
        _ => format!(
            "tls mode {mode} uses certificates issued to workloads by the mesh's CA (istiod); ringress has no mesh: use SIMPLE or MUTUAL with your own certificates"
        ),
    }
}

/// The fields of a server's tls block that are set, by their Istio names.
pub(super) fn tls_fields_set(tls: &FileServerTls) -> impl Iterator<Item = &'static str> {
    [
        ("mode", tls.mode.is_some()),
        ("serverCertificate", tls.server_certificate.is_some()),
        ("privateKey", tls.private_key.is_some()),
        ("caCertificates", tls.ca_certificates.is_some()),
        ("caCrl", tls.ca_crl.is_some()),
        ("credentialName", tls.credential_name.is_some()),
        ("subjectAltNames", !tls.subject_alt_names.is_empty()),
        ("minProtocolVersion", tls.min_protocol_version.is_some()),
        ("maxProtocolVersion", tls.max_protocol_version.is_some()),
        ("cipherSuites", !tls.cipher_suites.is_empty()),
    ]
    .into_iter()
    .filter_map(|(field, set)| set.then_some(field))
}

impl Check<'_, '_> {
    /// The tls block of a `TLS` passthrough or `TCP` server; `None` after reporting.
    pub(super) fn l4_server_tls(
        &mut self,
        protocol: Protocol,
        tls: Option<&FileServerTls>,
        p: &Path,
    ) -> Option<()> {
        let Some(tls) = tls else {
            if protocol == Protocol::Tcp {
                return Some(());
            }
            self.rule(
                p,
                "a TLS server needs tls with mode PASSTHROUGH (the upstream terminates TLS)",
            );
            return None;
        };
        if protocol == Protocol::Tcp {
            self.rule(
                p,
                "a TCP server takes no tls block; for TLS routed by SNI use protocol TLS with tls.mode PASSTHROUGH",
            );
            return None;
        }
        match tls.mode.as_deref() {
            Some("PASSTHROUGH") => {}
            None => {
                self.err(&p.key("mode"), Problem::Missing);
                return None;
            }
            Some(m @ ("AUTO_PASSTHROUGH" | "ISTIO_MUTUAL")) => {
                self.rule(&p.key("mode"), mesh_tls_mode_reason(m));
                return None;
            }
            Some(m @ ("SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL")) => {
                self.err(
                    &p.key("mode"),
                    Problem::ValueNotImplemented {
                        what: format!(
                            "tls mode {m} on a TLS server (TLS terminated, then tcp routes)"
                        ),
                        accepted: "PASSTHROUGH; to terminate TLS, use protocol HTTPS".to_owned(),
                    },
                );
                return None;
            }
            Some(other) => {
                self.invalid(
                    &p.key("mode"),
                    format!("{other:?}"),
                    "accepted tls modes for a TLS server: PASSTHROUGH",
                );
                return None;
            }
        }
        let mut ok = true;
        for field in tls_fields_set(tls).filter(|f| *f != "mode") {
            ok = false;
            self.rule(
                &p.key(field),
                format!(
                    "`{field}` has no effect with mode PASSTHROUGH: the upstream terminates TLS with its own certificate"
                ),
            );
        }
        if tls.https_redirect == Some(true) {
            ok = false;
            self.rule(
                &p.key("httpsRedirect"),
                "httpsRedirect applies to HTTP servers only; this server passes TLS through",
            );
        }
        ok.then_some(())
    }

    /// A VirtualService's `tls[]` (`hosts` given: its `sniHosts` must be covered by
    /// them) or `tcp[]` rules.
    pub(super) fn l4_routes(
        &mut self,
        section: &str,
        raw: Vec<FileL4Route>,
        hosts: Option<&[HostPattern]>,
        gateways: &[String],
    ) -> Vec<L4Route> {
        let mut out = Vec::new();
        for (i, rule) in raw.into_iter().enumerate() {
            let p = spec().key(section).index(i);
            let mut ok = true;
            if hosts.is_some() && rule.matches.is_empty() {
                ok = false;
                self.rule(
                    &p.key("match"),
                    "a tls route needs at least one match with sniHosts (Istio requires it)",
                );
            }
            let mut matches = Vec::new();
            for (j, m) in rule.matches.into_iter().enumerate() {
                match self.l4_match(m, hosts, gateways, &p.key("match").index(j)) {
                    Some(m) => matches.push(m),
                    None => ok = false,
                }
            }
            let route = self.l4_destinations(rule.route, &p.key("route"));
            if let (true, Some(route)) = (ok, route) {
                out.push(L4Route { matches, route });
            }
        }
        out
    }

    /// One `match[]` entry of a `tls[]` rule (`hosts` given) or a `tcp[]` rule.
    fn l4_match(
        &mut self,
        m: FileL4Match,
        hosts: Option<&[HostPattern]>,
        gateways: &[String],
        p: &Path,
    ) -> Option<L4Match> {
        let mut ok = self.mesh_selectors(
            p,
            [
                ("destinationSubnets", &m.destination_subnets),
                ("sourceLabels", &m.source_labels),
                ("sourceNamespace", &m.source_namespace),
            ],
        );
        let sni_hosts = match hosts {
            Some(hosts) => {
                if m.source_subnet.is_some() {
                    ok = false;
                    self.rule(
                        &p.key("sourceSubnet"),
                        "sourceSubnet is a field of tcp matches only",
                    );
                }
                self.sni_hosts(m.sni_hosts, hosts, &p.key("sniHosts"))
            }
            None => {
                ok &= self.mesh_selectors(p, [("sourceSubnet", &m.source_subnet)]);
                if m.sni_hosts.is_some() {
                    ok = false;
                    self.rule(
                        &p.key("sniHosts"),
                        "sniHosts applies to tls routes only; a tcp connection has no SNI to match",
                    );
                }
                Some(Vec::new())
            }
        };
        let port = self.match_port(m.port, &p.key("port"));
        let names = self.match_gateways(m.gateways, gateways, &p.key("gateways"));
        let m = L4Match {
            sni_hosts: sni_hosts?,
            port: port.ok()?,
            gateways: names?,
        };
        ok.then_some(m)
    }

    /// Refuses each mesh-only selector present; whether none was.
    fn mesh_selectors<const N: usize>(
        &mut self,
        p: &Path,
        fields: [(&str, &Option<IgnoredAny>); N],
    ) -> bool {
        let mut ok = true;
        for (field, value) in fields {
            if value.is_some() {
                ok = false;
                self.rule(
                    &p.key(field),
                    format!(
                        "`{field}` selects by where a connection comes from or goes to inside a mesh (workload labels, namespaces, the address a sidecar intercepted); ringress serves gateway traffic only: match by sniHosts, port or gateways"
                    ),
                );
            }
        }
        ok
    }

    /// `sniHosts`: required, each a host pattern the VirtualService's hosts cover.
    fn sni_hosts(
        &mut self,
        raw: Option<Vec<String>>,
        hosts: &[HostPattern],
        p: &Path,
    ) -> Option<Vec<HostPattern>> {
        let raw = raw.unwrap_or_default();
        if raw.is_empty() {
            self.rule(
                p,
                "a tls match needs at least one SNI host (Istio requires it)",
            );
            return None;
        }
        let mut ok = true;
        let mut out = Vec::new();
        for (k, h) in raw.iter().enumerate() {
            let Some(pattern) = self.host_pattern(h, &p.index(k)) else {
                ok = false;
                continue;
            };
            let covered = hosts
                .iter()
                .any(|vs| crate::route::intersect(vs, &pattern).as_ref() == Some(&pattern));
            if !covered {
                ok = false;
                let hosts: Vec<String> = hosts.iter().map(ToString::to_string).collect();
                self.rule(
                    &p.index(k),
                    format!(
                        "SNI host {pattern} is not covered by this VirtualService's hosts ({}), as Istio requires",
                        hosts.join(", ")
                    ),
                );
            }
            out.push(pattern);
        }
        ok.then_some(out)
    }

    /// A `tls[]` or `tcp[]` rule's `route`: required, weighted as an HTTP route's.
    fn l4_destinations(
        &mut self,
        raw: Option<Vec<FileL4Destination>>,
        p: &Path,
    ) -> Option<Vec<WeightedDestination>> {
        let Some(raw) = raw else {
            self.err(p, Problem::Missing);
            return None;
        };
        let route = self.destinations(raw.into_iter().map(Into::into).collect(), p)?;
        for (k, d) in route.iter().enumerate() {
            if d.subset.is_some() {
                self.err(
                    &p.index(k).key("destination").key("subset"),
                    Problem::FieldNotImplemented("subset".to_owned()),
                );
                return None;
            }
        }
        Some(route)
    }
}
