//! Checks of a DestinationRule's `trafficPolicy`: one function for the top level and
//! for every `portLevelSettings[]` entry ([`Check::traffic_policy`]), so both yield
//! the same [`TrafficPolicy`]; and the upstream TLS settings (`tls`, Istio's
//! `ClientTLSSettings`) with Istio's rules: `credentialName` excludes the file fields,
//! MUTUAL without it needs `clientCertificate` and `privateKey`, ISTIO_MUTUAL needs a
//! mesh and is refused.

use super::*;
use crate::config::file_destination::{FileClientTls, FilePortTrafficPolicy};

impl Check<'_, '_> {
    /// A `trafficPolicy` or one `portLevelSettings[]` entry read as one (whose
    /// `port_level_settings` is always `None`).
    pub(super) fn traffic_policy(
        &mut self,
        raw: FileTrafficPolicy,
        path: &Path,
    ) -> Option<TrafficPolicy> {
        // Each: `None` when absent, `Some(None)` when invalid (reported).
        let load_balancer = raw
            .load_balancer
            .map(|lb| self.load_balancer(lb, &path.key("loadBalancer")));
        let connection_pool = raw
            .connection_pool
            .map(|pool| self.connection_pool(Some(pool), &path.key("connectionPool")));
        let outlier_detection = raw
            .outlier_detection
            .map(|od| self.outlier_detection(od, &path.key("outlierDetection")));
        let tls = raw.tls.map(|tls| self.client_tls(tls, &path.key("tls")));
        Some(TrafficPolicy {
            load_balancer: valid_if_set(load_balancer)?,
            connection_pool: valid_if_set(connection_pool)?,
            outlier_detection: valid_if_set(outlier_detection)?,
            tls: valid_if_set(tls)?,
        })
    }

    /// A DestinationRule's or a subset's `trafficPolicy` at `path` (absent: says
    /// nothing), and its `portLevelSettings`.
    pub(super) fn traffic_policy_and_ports(
        &mut self,
        raw: Option<FileTrafficPolicy>,
        path: &Path,
    ) -> (Option<TrafficPolicy>, Option<Vec<PortTrafficPolicy>>) {
        let Some(mut policy) = raw else {
            return (Some(TrafficPolicy::default()), Some(Vec::new()));
        };
        let ports = policy.port_level_settings.take();
        let traffic_policy = self.traffic_policy(policy, path);
        let port_level_settings = match ports {
            Some(ports) => self.port_level_settings(ports, &path.key("portLevelSettings")),
            None => Some(Vec::new()),
        };
        (traffic_policy, port_level_settings)
    }

    /// `trafficPolicy.portLevelSettings`: one entry per `port.number`.
    pub(super) fn port_level_settings(
        &mut self,
        raw: Vec<FilePortTrafficPolicy>,
        path: &Path,
    ) -> Option<Vec<PortTrafficPolicy>> {
        let mut settings: Vec<PortTrafficPolicy> = Vec::new();
        let mut ok = true;
        for (i, entry) in raw.into_iter().enumerate() {
            let p = path.index(i);
            let (selector, policy) = entry.into_policy();
            let port = match selector {
                Some(selector) => self.port(selector.number, &p.key("port").key("number")),
                None => {
                    self.err(&p.key("port"), Problem::Missing);
                    None
                }
            };
            let policy = self.traffic_policy(policy, &p);
            let (Some(port), Some(policy)) = (port, policy) else {
                ok = false;
                continue;
            };
            if settings.iter().any(|s| s.port == port) {
                self.rule(
                    &p.key("port").key("number"),
                    format!("port {port} already has portLevelSettings"),
                );
                ok = false;
                continue;
            }
            settings.push(PortTrafficPolicy { port, policy });
        }
        ok.then_some(settings)
    }

    /// `tls` of a `trafficPolicy` (or of a port's).
    fn client_tls(&mut self, raw: FileClientTls, p: &Path) -> Option<ClientTls> {
        let mode = match raw.mode.as_deref() {
            None | Some("DISABLE") => ClientTlsMode::Disable,
            Some("SIMPLE") => ClientTlsMode::Simple,
            Some("MUTUAL") => ClientTlsMode::Mutual,
            Some("ISTIO_MUTUAL") => {
                self.err(
                    &p.key("mode"),
                    Problem::ValueNotImplemented {
                        what: "tls mode ISTIO_MUTUAL (it needs a mesh's workload certificates)"
                            .to_owned(),
                        accepted: "DISABLE, SIMPLE, MUTUAL".to_owned(),
                    },
                );
                return None;
            }
            Some(other) => {
                self.invalid(
                    &p.key("mode"),
                    format!("{other:?}"),
                    "accepted tls modes: DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL",
                );
                return None;
            }
        };
        let mut ok = true;
        let credential_name = raw
            .credential_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        let credential = match credential_name {
            Some(name) => {
                let fields = [
                    ("clientCertificate", &raw.client_certificate),
                    ("privateKey", &raw.private_key),
                    ("caCertificates", &raw.ca_certificates),
                    ("caCrl", &raw.ca_crl),
                ];
                for (field, value) in fields {
                    if value.is_some() {
                        self.rule(
                            &p.key(field),
                            format!(
                                "credentialName and {field} are both set; the credential holds the client certificate, its key and the CA (Istio: cannot specify client certificates or CA certificate or CA Crl if credentialName is set)"
                            ),
                        );
                        ok = false;
                    }
                }
                ok &= self.secret_name(name, &p.key("credentialName"));
                ClientCredential::Named(name.to_owned())
            }
            None => {
                let mut file = |raw: &Option<String>, field: &str| match raw.as_deref() {
                    Some(v) => {
                        let path = self.file_path(v, &p.key(field));
                        ok &= path.is_some();
                        path
                    }
                    None => None,
                };
                let cert = file(&raw.client_certificate, "clientCertificate");
                let key = file(&raw.private_key, "privateKey");
                let ca = file(&raw.ca_certificates, "caCertificates");
                // Istio uses the client certificate in MUTUAL only, and ignores it
                // otherwise.
                let cert_and_key = match (mode, cert, key) {
                    (ClientTlsMode::Mutual, Some(cert), Some(key)) => Some((cert, key)),
                    (ClientTlsMode::Mutual, _, _) => {
                        let fields = [
                            ("clientCertificate", &raw.client_certificate),
                            ("privateKey", &raw.private_key),
                        ];
                        // A path given but empty was reported by `file_path`.
                        for (field, _) in fields.iter().filter(|(_, v)| v.is_none()) {
                            self.rule(
                                &p.key(field),
                                format!("tls mode MUTUAL needs {field}, or credentialName"),
                            );
                        }
                        ok = false;
                        None
                    }
                    _ => None,
                };
                ClientCredential::Files { cert_and_key, ca }
            }
        };
        let ca_crl = match (&credential, raw.ca_crl.as_deref()) {
            (ClientCredential::Files { .. }, Some(crl)) => {
                let path = self.file_path(crl, &p.key("caCrl"));
                ok &= path.is_some();
                path
            }
            _ => None,
        };
        let sni = match raw.sni.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(name) => {
                if rustls::pki_types::ServerName::try_from(name).is_err() {
                    self.invalid(
                        &p.key("sni"),
                        format!("{name:?}"),
                        "expected a DNS name or an IP address",
                    );
                    ok = false;
                }
                Some(name.to_ascii_lowercase())
            }
        };
        for (i, san) in raw.subject_alt_names.iter().enumerate() {
            if san.trim().is_empty() {
                self.invalid(
                    &p.key("subjectAltNames").index(i),
                    "\"\"",
                    "expected a name the upstream's certificate carries",
                );
                ok = false;
            }
        }
        ok.then(|| ClientTls {
            mode,
            credential,
            ca_crl,
            sni,
            subject_alt_names: raw.subject_alt_names,
            insecure_skip_verify: raw.insecure_skip_verify.unwrap_or(false),
        })
    }
}
