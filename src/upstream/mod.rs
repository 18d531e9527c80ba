//! Upstream clusters: endpoints, load balancing and per-shard keep-alive pools.
//!
//! Routing picks a [`ClusterId`]; the shard's [`Balancer`] for that cluster picks an
//! endpoint; the shard's pool connects to it (or reuses a kept-alive connection).

pub mod balance;
pub mod cluster;
pub mod pool;

pub use balance::Balancer;
pub use cluster::{Cluster, ClusterError, ClusterId, Clusters};
pub use pool::{ConnectError, Pool, PoolPolicy, UpstreamConn};
