//! The shard's cache of tokens that verified, so that a keep-alive client presenting
//! the same token request after request pays one signature check, not one per
//! request (an RS256 verification costs more than proxying the request).
//!
//! An entry is the token's text and what was read of it; a hit still checks `exp`
//! and `nbf` against the clock, so a cached token expires when the token does. The
//! cache belongs to one snapshot generation and one key ring: a reload or a key
//! refresh empties it, so a token is never taken as verified by keys that are gone.
//! It is bounded by entries and by bytes (oldest out first), and very long tokens
//! are not kept at all.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use super::{KeyRing, Verified};

/// Tokens kept per shard at most.
pub(crate) const MAX_ENTRIES: usize = 4096;
/// Bytes of token text and claims kept per shard at most (about).
pub(crate) const MAX_BYTES: usize = 4 << 20;
/// Longer tokens are verified every time.
pub(crate) const MAX_TOKEN_LEN: usize = 8 * 1024;

/// One shard's verified tokens (see the module doc).
#[derive(Default)]
pub(crate) struct TokenCache {
    generation: u64,
    /// The ring the entries were verified with; held, so that a newer ring can never
    /// reuse its address.
    ring: Option<Arc<KeyRing>>,
    entries: HashMap<Rc<str>, Rc<Verified>>,
    /// Insertion order, for eviction.
    order: VecDeque<Rc<str>>,
    bytes: usize,
}

impl TokenCache {
    /// Empties the cache unless it was filled under `generation` and `ring`.
    pub(crate) fn enter(&mut self, generation: u64, ring: &Arc<KeyRing>) {
        let same_ring = self.ring.as_ref().is_some_and(|r| Arc::ptr_eq(r, ring));
        if self.generation != generation || !same_ring {
            self.entries.clear();
            self.order.clear();
            self.bytes = 0;
            self.generation = generation;
            self.ring = Some(ring.clone());
        }
    }

    pub(crate) fn get(&self, token: &str) -> Option<Rc<Verified>> {
        self.entries.get(token).cloned()
    }

    /// Keeps `verified` for `token`, making room by dropping the oldest entries.
    pub(crate) fn insert(&mut self, token: &str, verified: Rc<Verified>) {
        if token.len() > MAX_TOKEN_LEN || self.entries.contains_key(token) {
            return;
        }
        let size = token.len() + verified.weight();
        while !self.order.is_empty()
            && (self.entries.len() >= MAX_ENTRIES || self.bytes + size > MAX_BYTES)
        {
            if let Some(old) = self.order.pop_front()
                && let Some(gone) = self.entries.remove(&old)
            {
                self.bytes -= old.len() + gone.weight();
            }
        }
        let key: Rc<str> = Rc::from(token);
        self.order.push_back(key.clone());
        self.entries.insert(key, verified);
        self.bytes += size;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(subject: &str) -> Rc<Verified> {
        Rc::new(Verified {
            provider: 0,
            principal: format!("iss/{subject}"),
            ..Verified::default()
        })
    }

    #[test]
    fn a_new_generation_or_ring_empties_it() {
        let ring = Arc::new(KeyRing::default());
        let mut cache = TokenCache::default();
        cache.enter(1, &ring);
        cache.insert("a.b.c", verified("a"));
        assert_eq!(cache.get("a.b.c").unwrap().principal, "iss/a");
        cache.enter(1, &ring);
        assert_eq!(cache.len(), 1);
        cache.enter(2, &ring);
        assert!(cache.get("a.b.c").is_none());
        cache.insert("a.b.c", verified("a"));
        cache.enter(2, &Arc::new(KeyRing::default()));
        assert!(cache.get("a.b.c").is_none());
    }

    #[test]
    fn it_stays_within_its_bounds() {
        let ring = Arc::new(KeyRing::default());
        let mut cache = TokenCache::default();
        cache.enter(1, &ring);
        for i in 0..MAX_ENTRIES + 10 {
            cache.insert(&format!("token-{i}"), verified("x"));
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        // The oldest went first.
        assert!(cache.get("token-0").is_none());
        assert!(cache.get(&format!("token-{}", MAX_ENTRIES + 9)).is_some());
        // Big tokens fill the byte budget, not more.
        let big = "b".repeat(MAX_TOKEN_LEN - 8);
        for i in 0..2 * MAX_BYTES / MAX_TOKEN_LEN {
            cache.insert(&format!("{i:08}{big}"), verified("y"));
        }
        assert!(cache.len() < MAX_BYTES / MAX_TOKEN_LEN, "{}", cache.len());
        assert!(cache.bytes <= MAX_BYTES, "{}", cache.bytes);
        // Longer ones are not kept.
        cache.insert(&"c".repeat(MAX_TOKEN_LEN + 1), verified("z"));
        assert!(cache.get(&"c".repeat(MAX_TOKEN_LEN + 1)).is_none());
    }
}
