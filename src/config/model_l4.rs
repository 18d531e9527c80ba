//! The validated `tls[]` and `tcp[]` routes of a VirtualService: what a TLS
//! passthrough or TCP Gateway server does with a connection (`route::l4` compiles them
//! per port, `proxy::passthrough` serves them).

use super::{HostPattern, WeightedDestination};

/// One `tls[]` or `tcp[]` rule: the first rule with a match entry that holds (or with
/// no entries) takes the connection.
#[derive(Debug, Clone)]
pub struct L4Route {
    /// Empty means every connection (a `tcp[]` rule without `match`).
    pub matches: Vec<L4Match>,
    /// Weighted destinations (weights sum to 100, or a single destination).
    pub route: Vec<WeightedDestination>,
}

/// One `match[]` entry of a `tls[]` (with `sniHosts`) or `tcp[]` rule.
#[derive(Debug, Clone, Default)]
pub struct L4Match {
    /// `sniHosts` (tls only): the ClientHello's server name must match one; each is
    /// covered by the VirtualService's hosts.
    pub sni_hosts: Vec<HostPattern>,
    /// `port`: the gateway port the connection came in on.
    pub port: Option<u16>,
    /// `gateways`: some of the VirtualService's own.
    pub gateways: Vec<String>,
}

impl L4Match {
    /// Whether the entry applies on `port` to a connection through one of `gateways`.
    pub(crate) fn applies<'g>(
        &self,
        port: u16,
        mut gateways: impl Iterator<Item = &'g str>,
    ) -> bool {
        self.port.is_none_or(|p| p == port)
            && (self.gateways.is_empty() || gateways.any(|g| self.gateways.iter().any(|m| m == g)))
    }
}
