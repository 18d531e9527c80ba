//! The immutable snapshot a shard reads: listeners, TLS configs, route tables and
//! clusters, compiled from a validated [`Config`] on the control thread.
//!
//! Building a snapshot does all the slow and fallible work (certificate files, key
//! checks, DNS, regex compilation already done by `config`), so that a shard only ever
//! swaps one `Arc<Snapshot>` for another and never fails on the request path. A snapshot
//! that fails to build changes nothing: the caller keeps the one it had.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;

use crate::auth::{Authn, Authz};
use crate::config::{Config, Credential, HostPattern, Origin, Protocol, ServerTls, TlsMode};
use crate::route::RouteTable;
use crate::route::l4::L4Table;
use crate::tls::{self, CertInfo, CertifiedMaterial, SniSelector, Ticketers};
use crate::upstream::{ClusterError, Clusters};

/// Why a configuration could not become a snapshot.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotError {
    #[error("{origin}: spec.servers[{server}] (port {port}): {source}")]
    Tls {
        origin: Box<Origin>,
        server: usize,
        port: u16,
        source: Box<tls::TlsError>,
    },
    #[error("{origin}: spec.servers[{server}] (port {port}) host {host}: {source}")]
    HostNotCovered {
        origin: Box<Origin>,
        server: usize,
        port: u16,
        host: HostPattern,
        source: Box<tls::TlsError>,
    },
    #[error(
        "port {port}: servers bind both {first} and {second}; ringress binds one address per port"
    )]
    ConflictingBind {
        port: u16,
        first: IpAddr,
        second: IpAddr,
    },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Route(#[from] crate::route::RouteError),
}

/// One TLS server of a listener, as `ringress check` and the logs describe it.
#[derive(Debug, Clone)]
pub(crate) struct ServedCertificate {
    pub(crate) hosts: Vec<HostPattern>,
    /// The server's TLS settings: a request whose Host belongs to a server with other
    /// settings than the one its handshake chose is misdirected (421).
    pub(crate) settings: Arc<ServerTls>,
    pub(crate) mode: TlsMode,
    pub(crate) source: String,
    /// The certificate's `path` as Envoy's `/certs` shows it: the file, or `<inline>`
    /// for a credential (as Istio's gateway shows a `credentialName`).
    pub(crate) path: String,
    pub(crate) leaf: Option<CertInfo>,
    /// The whole chain sent to clients, leaf first (certificates that cannot be
    /// parsed are left out).
    pub(crate) chain: Vec<CertInfo>,
    /// For MUTUAL and OPTIONAL_MUTUAL: where the client CA comes from (the
    /// `caCertificates` path or the credential's CA) and its certificates.
    pub(crate) client_ca: Option<ClientCa>,
}

/// The CA a MUTUAL or OPTIONAL_MUTUAL server verifies client certificates with.
#[derive(Debug, Clone)]
pub(crate) struct ClientCa {
    pub(crate) source: String,
    /// As [`ServedCertificate::path`]: the `caCertificates` file or `<inline>`.
    pub(crate) path: String,
    pub(crate) certificates: Vec<CertInfo>,
}

/// One listening socket every shard opens (with `SO_REUSEPORT`).
pub(crate) struct ListenerSpec {
    pub(crate) addr: SocketAddr,
    pub(crate) protocol: Protocol,
    /// For HTTPS listeners: the server chosen by the ClientHello's SNI.
    pub(crate) tls: Option<SniSelector>,
    pub(crate) certificates: Vec<ServedCertificate>,
}

impl ListenerSpec {
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Everything a shard needs to serve traffic, immutable once built.
pub(crate) struct Snapshot {
    /// Increases by one with every successful build (reloads).
    pub(crate) generation: u64,
    pub(crate) listeners: Vec<ListenerSpec>,
    pub(crate) routes: BTreeMap<u16, RouteTable>,
    /// The `tls[]`/`tcp[]` routes of each TLS passthrough or TCP port.
    pub(crate) l4_routes: BTreeMap<u16, L4Table>,
    pub(crate) clusters: Clusters,
    /// End-user authentication (`RequestAuthentication`, v1alpha1 `Policy`), when
    /// the configuration declares any.
    pub(crate) authn: Option<Authn>,
    /// `AuthorizationPolicy`, when the configuration declares any.
    pub(crate) authz: Option<Authz>,
}

impl Snapshot {
    /// Compiles `config` into a snapshot: loads every certificate and key, checks each
    /// certificate covers its server's hosts, resolves every destination and compiles
    /// the route tables. Session-ticket keys come from `ticketers`, by trust setting.
    pub(crate) fn build(
        config: &Config,
        secrets_dir: Option<&Path>,
        ticketers: &mut Ticketers,
        generation: u64,
    ) -> Result<Snapshot, SnapshotError> {
        let built = Self::compile(config, secrets_dir, ticketers, generation);
        ticketers.finish_build(built.is_ok());
        built
    }

    fn compile(
        config: &Config,
        secrets_dir: Option<&Path>,
        ticketers: &mut Ticketers,
        generation: u64,
    ) -> Result<Snapshot, SnapshotError> {
        let clusters = Clusters::build_with_secrets(config, secrets_dir)?;
        let routes = RouteTable::build_all(config, &clusters)?;
        let l4_routes = L4Table::build_all(config, &clusters)?;
        let listeners = build_listeners(config, secrets_dir, ticketers)?;
        Ok(Snapshot {
            generation,
            listeners,
            routes,
            l4_routes,
            clusters,
            authn: Authn::new(config, generation),
            authz: Authz::new(config),
        })
    }

    /// The route table of a listener port (every listener has one, possibly empty).
    pub(crate) fn routes(&self, port: u16) -> Option<&RouteTable> {
        self.routes.get(&port)
    }
}

/// One TLS server of a port as the SNI selector takes it: its hosts and config.
type SniServer = (Vec<HostPattern>, Arc<ServerConfig>);

/// Servers grouped by port, in the order their ports first appear.
fn build_listeners(
    config: &Config,
    secrets_dir: Option<&Path>,
    ticketers: &mut Ticketers,
) -> Result<Vec<ListenerSpec>, SnapshotError> {
    let mut by_port: Vec<ListenerSpec> = Vec::new();
    let mut tls_servers: HashMap<u16, Vec<SniServer>> = HashMap::new();
    let mut loaded: HashMap<Credential, Arc<CertifiedMaterial>> = HashMap::new();

    for gateway in &config.gateways {
        for (index, server) in gateway.servers.iter().enumerate() {
            let ip = server.bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let listener = match by_port.iter_mut().find(|l| l.port() == server.port) {
                Some(existing) => {
                    if existing.addr.ip() != ip {
                        return Err(SnapshotError::ConflictingBind {
                            port: server.port,
                            first: existing.addr.ip(),
                            second: ip,
                        });
                    }
                    existing
                }
                None => {
                    by_port.push(ListenerSpec {
                        addr: SocketAddr::new(ip, server.port),
                        protocol: server.protocol,
                        tls: None,
                        certificates: Vec::new(),
                    });
                    by_port.last_mut().expect("just pushed")
                }
            };
            let Some(server_tls) = server.tls.as_ref() else {
                continue;
            };
            if server.protocol != Protocol::Https {
                continue;
            }
            let tls_error = |source| SnapshotError::Tls {
                origin: Box::new(gateway.origin.clone()),
                server: index,
                port: server.port,
                source: Box::new(source),
            };
            let material = match loaded.get(&server_tls.credential) {
                Some(material) => material.clone(),
                None => {
                    let material = Arc::new(
                        tls::load_credential(&server_tls.credential, secrets_dir)
                            .map_err(tls_error)?,
                    );
                    loaded.insert(server_tls.credential.clone(), material.clone());
                    material
                }
            };
            for host in &server.hosts {
                tls::check_covers(&material, host).map_err(|source| {
                    SnapshotError::HostNotCovered {
                        origin: Box::new(gateway.origin.clone()),
                        server: index,
                        port: server.port,
                        host: host.clone(),
                        source: Box::new(source),
                    }
                })?;
            }
            let ticketer = ticketers
                .for_server(server_tls, &material)
                .map_err(tls_error)?;
            let server_config =
                tls::server_config(server_tls, &material, &ticketer).map_err(tls_error)?;
            listener.certificates.push(ServedCertificate {
                hosts: server.hosts.clone(),
                settings: Arc::new(server_tls.clone()),
                mode: server_tls.mode,
                source: material.source.clone(),
                path: match &server_tls.credential {
                    Credential::Files { cert, .. } => cert.display().to_string(),
                    Credential::Named(_) => INLINE.to_owned(),
                },
                leaf: material.chain.first().and_then(|c| tls::describe(c).ok()),
                chain: material
                    .chain
                    .iter()
                    .filter_map(|c| tls::describe(c).ok())
                    .collect(),
                client_ca: describe_client_ca(server_tls, &material),
            });
            tls_servers
                .entry(server.port)
                .or_default()
                .push((server.hosts.clone(), server_config));
        }
    }

    for listener in &mut by_port {
        if let Some(servers) = tls_servers.remove(&listener.port()) {
            let selector = SniSelector::new(servers).map_err(|source| SnapshotError::Tls {
                origin: Box::new(first_origin(config, listener.port())),
                server: 0,
                port: listener.port(),
                source: Box::new(source),
            })?;
            listener.tls = Some(selector);
        }
    }
    Ok(by_port)
}

/// Envoy's `/certs` `path` of a certificate that came from a secret, not a file.
const INLINE: &str = "<inline>";

/// The client CA of a MUTUAL or OPTIONAL_MUTUAL server, described for `/certs`. The
/// `caCertificates` file was just loaded by `server_config`; should it fail to load
/// again, the CA is described as empty rather than failing the snapshot.
fn describe_client_ca(server_tls: &ServerTls, material: &CertifiedMaterial) -> Option<ClientCa> {
    if server_tls.mode == TlsMode::Simple {
        return None;
    }
    let describe_all = |certs: &[CertificateDer<'_>]| -> Vec<CertInfo> {
        certs.iter().filter_map(|c| tls::describe(c).ok()).collect()
    };
    match (&server_tls.ca_certificates, &material.ca) {
        (Some(path), _) => Some(ClientCa {
            source: path.display().to_string(),
            path: path.display().to_string(),
            certificates: tls::credential::load_certificates(path)
                .map(|certs| describe_all(&certs))
                .unwrap_or_default(),
        }),
        (None, Some(ca)) => Some(ClientCa {
            source: format!("the CA of {}", material.source),
            path: INLINE.to_owned(),
            certificates: describe_all(ca),
        }),
        (None, None) => None,
    }
}

/// The first Gateway declaring a server on `port`, to name in an error.
fn first_origin(config: &Config, port: u16) -> Origin {
    config
        .gateways
        .iter()
        .find(|g| g.servers.iter().any(|s| s.port == port))
        .map(|g| g.origin.clone())
        .unwrap_or_else(|| Origin {
            file: config.source.clone(),
            document: 0,
            kind: "Gateway".into(),
            name: String::new(),
        })
}
