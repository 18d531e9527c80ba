//! A fast, unkeyed hash (FNV-1a) for the maps a shard reads on every request whose keys
//! never come from the network: configured host names, upstream endpoint addresses,
//! waiter ids. A keyed hash (std's SipHash) guards against chosen-key flooding, which
//! cannot happen when a request can only look keys up, never insert them; here it would
//! cost more than the rest of a lookup.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a, 64 bits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for FnvHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`FnvHasher`]: for keys only the configuration or ringress itself
/// inserts.
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FnvHasher>>;
