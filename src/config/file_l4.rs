//! The raw `tls[]` and `tcp[]` routes of a VirtualService, as written in the file
//! (Istio's `TLSRoute`, `TCPRoute`, `TLSMatchAttributes`, `L4MatchAttributes`,
//! `RouteDestination`); `validate/l4.rs` checks them into [`super::L4Route`].

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::file::{FileDestination, FileRouteDestination};

/// A `tls[]` or `tcp[]` rule (Istio's `TLSRoute`, `TCPRoute`: the same shape).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileL4Route {
    #[serde(rename = "match", default)]
    pub(crate) matches: Vec<FileL4Match>,
    pub(crate) route: Option<Vec<FileL4Destination>>,
}

/// Istio's `TLSMatchAttributes` and `L4MatchAttributes` in one: `sniHosts` belongs to
/// the first, `sourceSubnet` to the second (validation refuses each in the other's
/// place). The mesh-only selectors are read only to be refused with the reason.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileL4Match {
    #[serde(rename = "sniHosts")]
    pub(crate) sni_hosts: Option<Vec<String>>,
    pub(crate) port: Option<i64>,
    pub(crate) gateways: Option<Vec<String>>,
    #[serde(rename = "destinationSubnets")]
    pub(crate) destination_subnets: Option<IgnoredAny>,
    #[serde(rename = "sourceLabels")]
    pub(crate) source_labels: Option<IgnoredAny>,
    #[serde(rename = "sourceNamespace")]
    pub(crate) source_namespace: Option<IgnoredAny>,
    #[serde(rename = "sourceSubnet")]
    pub(crate) source_subnet: Option<IgnoredAny>,
}

/// Istio's `RouteDestination` (an HTTP route's destination without `headers`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileL4Destination {
    pub(crate) destination: Option<FileDestination>,
    pub(crate) weight: Option<i64>,
}

impl From<FileL4Destination> for FileRouteDestination {
    fn from(d: FileL4Destination) -> Self {
        FileRouteDestination {
            destination: d.destination,
            weight: d.weight,
        }
    }
}
