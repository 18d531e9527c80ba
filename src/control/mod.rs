//! The control thread: builds snapshots, starts and supervises shards.
