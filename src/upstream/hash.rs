//! Consistent hashing (DestinationRule `loadBalancer.consistentHash`): the table a
//! request's hash is looked up in, built once per cluster on the control thread and
//! shared by every shard in the snapshot, so one key reaches one endpoint on every
//! shard and across requests; and the hash of a request's key.
//!
//! - **Ring hash** (Envoy's `RING_HASH`, Istio's default): each endpoint is placed on
//!   a 64-bit ring `ceil(minimumRingSize / endpoints)` times, at the hashes of
//!   `"<address>_<i>"`; a request goes to the first entry at or after its hash
//!   (wrapping round). Removing an endpoint moves only the keys that were on it.
//! - **Maglev** (`MAGLEV`): a lookup table of a prime size filled from each endpoint's
//!   permutation (offset and skip from two hashes of its address); a request goes to
//!   `table[hash % size]`.
//!
//! The hash is FNV-1a finished with SplitMix64's mixer: stable across processes and
//! shards (unlike std's keyed SipHash), and spread well enough for the ring. A key
//! that only the network chooses can move a request to another endpoint, nothing more.

use std::fmt::Write as _;
use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};

use crate::config::{HashKey, HashTable, MAX_RING_SIZE};
use crate::fast_hash::FnvHasher;
use crate::http::RequestHead;

/// A stable 64-bit hash of `bytes`.
pub(crate) fn hash64(bytes: &[u8]) -> u64 {
    let mut fnv = FnvHasher::default();
    fnv.write(bytes);
    mix(fnv.finish())
}

/// SplitMix64's finaliser: every input bit reaches every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A cluster's consistent-hash policy: the request key and the built table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointHash {
    pub(crate) key: HashKey,
    pub(crate) algorithm: HashTable,
    table: Table,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Table {
    /// (hash, endpoint index), sorted by hash.
    Ring(Box<[(u64, u32)]>),
    /// Endpoint index per slot.
    Maglev(Box<[u32]>),
}

impl EndpointHash {
    /// The table for `endpoints` (may be empty: then [`EndpointHash::pick_where`] gives 0).
    pub(crate) fn build(key: HashKey, algorithm: HashTable, endpoints: &[SocketAddr]) -> Self {
        let table = match algorithm {
            HashTable::RingHash { minimum_ring_size } => {
                Table::Ring(ring(endpoints, minimum_ring_size))
            }
            HashTable::Maglev { table_size } => Table::Maglev(maglev(endpoints, table_size)),
        };
        EndpointHash {
            key,
            algorithm,
            table,
        }
    }

    /// The endpoint index for a request hash, the first from there that `usable`
    /// accepts: on the ring, the next point of another endpoint (as if the ring had
    /// been built without the unusable ones); in a Maglev table, the next slot. 0 when
    /// none is.
    pub(crate) fn pick_where(&self, hash: u64, usable: impl Fn(usize) -> bool) -> usize {
        let (start, len) = match &self.table {
            Table::Ring(ring) => (ring.partition_point(|(h, _)| *h < hash), ring.len()),
            Table::Maglev(table) => match table.len() {
                0 => (0, 0),
                n => ((hash % n as u64) as usize, n),
            },
        };
        for step in 0..len {
            let at = (start + step) % len;
            let index = match &self.table {
                Table::Ring(ring) => ring[at].1 as usize,
                Table::Maglev(table) => table[at] as usize,
            };
            if usable(index) {
                return index;
            }
        }
        0
    }

    /// The endpoint index for a request hash.
    #[cfg(test)]
    pub(crate) fn pick(&self, hash: u64) -> usize {
        match &self.table {
            Table::Ring(ring) => {
                if ring.is_empty() {
                    return 0;
                }
                let at = ring.partition_point(|(h, _)| *h < hash);
                ring.get(at).unwrap_or(&ring[0]).1 as usize
            }
            Table::Maglev(table) => match table.len() {
                0 => 0,
                n => table[(hash % n as u64) as usize] as usize,
            },
        }
    }

    /// The hash of a connection relayed as bytes (a `tls`/`tcp` route): only
    /// `useSourceIp` has something to hash there, as with Envoy's TCP proxy.
    pub(crate) fn connection_hash(&self, client: SocketAddr) -> Option<u64> {
        match &self.key {
            HashKey::SourceIp => Some(source_ip_hash(client)),
            _ => None,
        }
    }

    /// The hash of a request's key, `None` when the request has none (it then goes
    /// to a random endpoint). A request without the `httpCookie` cookie gets one
    /// generated, hashed as if it had come with it; the second value is then the
    /// `Set-Cookie` for its response.
    pub(crate) fn request_hash(
        &self,
        head: &RequestHead,
        client: SocketAddr,
    ) -> (Option<u64>, Option<String>) {
        let hash = match &self.key {
            HashKey::Header(name) => head.header(name).map(hash64),
            HashKey::SourceIp => Some(source_ip_hash(client)),
            HashKey::QueryParameter(name) => crate::http::query_pairs(head.path())
                .find(|(n, _)| n == name)
                .map(|(_, v)| hash64(v.as_bytes())),
            HashKey::Cookie { name, .. } => match head.cookies(name).next() {
                Some(v) => Some(hash64(unquote(v).as_bytes())),
                None => {
                    let value = cookie_value(client);
                    return (
                        Some(hash64(value.as_bytes())),
                        set_cookie(&self.key, &value),
                    );
                }
            },
        };
        (hash, None)
    }
}

/// The hash of the client's address, without its port.
fn source_ip_hash(client: SocketAddr) -> u64 {
    match client.ip() {
        IpAddr::V4(v4) => hash64(&v4.octets()),
        IpAddr::V6(v6) => hash64(&v6.octets()),
    }
}

/// A cookie value as Envoy compares it: without the double quotes it may carry.
fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// The value of the cookie generated for a request without one: as Envoy does, the
/// hex of a hash of the client's address (so one client keeps one value).
fn cookie_value(client: SocketAddr) -> String {
    format!("{:016x}", hash64(client.to_string().as_bytes()))
}

/// `Set-Cookie` for a generated cookie, in Envoy's form:
/// `name="value"; Max-Age=ttl; Path=path; HttpOnly` (no `Max-Age` for a 0s ttl: a
/// session cookie).
fn set_cookie(key: &HashKey, value: &str) -> Option<String> {
    let HashKey::Cookie { name, path, ttl } = key else {
        return None;
    };
    let mut out = format!("{name}=\"{value}\"");
    if !ttl.is_zero() {
        out.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if let Some(path) = path {
        out.push_str(&format!("; Path={path}"));
    }
    out.push_str("; HttpOnly");
    Some(out)
}

fn ring(endpoints: &[SocketAddr], minimum_ring_size: u64) -> Box<[(u64, u32)]> {
    if endpoints.is_empty() {
        return Box::new([]);
    }
    let n = endpoints.len() as u64;
    let per_endpoint = minimum_ring_size
        .max(n)
        .div_ceil(n)
        .min(MAX_RING_SIZE / n)
        .max(1);
    let mut ring = Vec::with_capacity((per_endpoint * n) as usize);
    // One key buffer for every point: `ADDR_I`, the address written once per endpoint.
    let mut key = String::new();
    for (index, addr) in endpoints.iter().enumerate() {
        key.clear();
        let _ = write!(key, "{addr}_");
        let prefix = key.len();
        for i in 0..per_endpoint {
            key.truncate(prefix);
            let _ = write!(key, "{i}");
            ring.push((hash64(key.as_bytes()), index as u32));
        }
    }
    ring.sort_unstable();
    ring.into_boxed_slice()
}

fn maglev(endpoints: &[SocketAddr], size: u64) -> Box<[u32]> {
    if endpoints.is_empty() || size == 0 {
        return Box::new([]);
    }
    let permutations: Vec<(u64, u64)> = endpoints
        .iter()
        .map(|addr| {
            let addr = addr.to_string();
            let offset = hash64(format!("offset:{addr}").as_bytes()) % size;
            let skip = hash64(format!("skip:{addr}").as_bytes()) % (size - 1).max(1) + 1;
            (offset, skip)
        })
        .collect();
    let mut table = vec![u32::MAX; size as usize];
    let mut next = vec![0u64; endpoints.len()];
    let mut filled = 0u64;
    'fill: loop {
        for (index, &(offset, skip)) in permutations.iter().enumerate() {
            // A prime size makes each permutation visit every slot: this ends.
            loop {
                let slot = ((offset + next[index] % size * skip) % size) as usize;
                next[index] += 1;
                if table[slot] == u32::MAX {
                    table[slot] = index as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == size {
                break 'fill;
            }
        }
    }
    table.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn endpoints(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, 0, 1], 9000 + i)))
            .collect()
    }

    fn tables() -> [HashTable; 2] {
        [
            HashTable::RingHash {
                minimum_ring_size: 1024,
            },
            HashTable::Maglev { table_size: 65537 },
        ]
    }

    #[test]
    fn one_key_one_endpoint_and_every_endpoint_used() {
        for algorithm in tables() {
            let table = EndpointHash::build(HashKey::SourceIp, algorithm, &endpoints(4));
            let mut seen = HashSet::new();
            for key in 0..400u32 {
                let h = hash64(&key.to_be_bytes());
                let pick = table.pick(h);
                assert_eq!(table.pick(h), pick);
                assert!(pick < 4);
                seen.insert(pick);
            }
            assert_eq!(seen.len(), 4, "{algorithm:?}");
        }
    }

    #[test]
    fn removing_an_endpoint_moves_only_its_keys() {
        for algorithm in tables() {
            let four = EndpointHash::build(HashKey::SourceIp, algorithm, &endpoints(4));
            let three = EndpointHash::build(HashKey::SourceIp, algorithm, &endpoints(3));
            let mut moved = 0;
            for key in 0..2000u32 {
                let h = hash64(&key.to_be_bytes());
                let before = four.pick(h);
                if before != 3 && three.pick(h) != before {
                    moved += 1;
                }
            }
            // Of the 1500 keys on the endpoints that stay, rehashing modulo the count
            // would move 1000; the ring moves those its new points take (each
            // endpoint gets more points), Maglev a few more.
            assert!(moved < 400, "{algorithm:?}: {moved} keys moved");
        }
    }

    #[test]
    fn small_tables_and_no_endpoints() {
        let none = EndpointHash::build(HashKey::SourceIp, tables()[0], &[]);
        assert_eq!(none.pick(7), 0);
        let none = EndpointHash::build(HashKey::SourceIp, HashTable::Maglev { table_size: 7 }, &[]);
        assert_eq!(none.pick(7), 0);
        let small = EndpointHash::build(
            HashKey::SourceIp,
            HashTable::Maglev { table_size: 7 },
            &endpoints(3),
        );
        let picks: HashSet<usize> = (0..7).map(|h| small.pick(h)).collect();
        assert_eq!(picks.len(), 3);
        let ring = EndpointHash::build(
            HashKey::SourceIp,
            HashTable::RingHash {
                minimum_ring_size: 1,
            },
            &endpoints(3),
        );
        assert!((0..100).all(|h| ring.pick(hash64(&[h])) < 3));
    }

    #[test]
    fn set_cookie_has_envoys_form() {
        let key = HashKey::Cookie {
            name: "sticky".into(),
            path: Some("/app".into()),
            ttl: std::time::Duration::from_secs(60),
        };
        assert_eq!(
            set_cookie(&key, "00ab").unwrap(),
            "sticky=\"00ab\"; Max-Age=60; Path=/app; HttpOnly"
        );
        let session = HashKey::Cookie {
            name: "s".into(),
            path: None,
            ttl: std::time::Duration::ZERO,
        };
        assert_eq!(set_cookie(&session, "1").unwrap(), "s=\"1\"; HttpOnly");
        assert_eq!(set_cookie(&HashKey::SourceIp, "1"), None);
        assert_eq!(unquote("\"v\""), "v");
        assert_eq!(unquote("v"), "v");
        assert_eq!(cookie_value("1.2.3.4:5".parse().unwrap()).len(), 16);
    }
}
