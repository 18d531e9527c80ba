//! The immutable snapshot a shard reads: listeners, TLS configs, routes, clusters.
