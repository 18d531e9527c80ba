//! Upstream clusters: endpoints, load balancing and per-shard keep-alive pools.
//!
//! Routing picks a [`ClusterId`]; the shard's [`Balancer`] for that cluster picks an
//! endpoint; the shard's pool connects to it (or reuses a kept-alive connection).

pub(crate) mod balance;
pub(crate) mod cluster;
pub(crate) mod pool;

pub(crate) use balance::Balancer;
pub use cluster::{Cluster, ClusterError, ClusterId, Clusters};
pub(crate) use pool::{ConnectError, Pool, PoolPolicy, UpstreamConn};
