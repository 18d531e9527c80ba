//! Upstream clusters: endpoints, load balancing and per-shard keep-alive pools.
