//! Shard threads: one per core, pinned, each with its own ring, listeners and pools.
