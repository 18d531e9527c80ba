//! Upstream clusters: endpoints, load balancing and per-shard keep-alive pools.
//!
//! Routing picks a [`ClusterId`]; the shard's [`Balancer`] for that cluster picks an
//! endpoint; the shard's pool connects to it (or reuses a kept-alive connection), or,
//! for a cluster that speaks HTTP/2, opens a stream on a multiplexed connection
//! (`http2/`).

pub(crate) mod balance;
pub(crate) mod cluster;
pub(crate) mod hash;
pub(crate) mod health;
pub(crate) mod http2;
pub(crate) mod pool;
mod stream;

pub(crate) use balance::Balancer;
pub(crate) use cluster::UpstreamProtocol;
pub use cluster::{Cluster, ClusterError, ClusterId, Clusters};
pub(crate) use pool::{ConnectError, Pool, PoolPolicy, UpstreamConn};
pub(crate) use stream::{Received, UpstreamStream};
