//! Load balancing: after routing has chosen a cluster, a shard's [`Balancer`] for that
//! cluster picks the endpoint its pool connects to (or takes an idle connection to).
//!
//! A balancer belongs to one shard and one cluster; it is mutable and never shared
//! between threads, so picking takes no lock. Policies, as DestinationRule
//! `loadBalancer.simple` names them:
//! - `ROUND_ROBIN`: a cursor over the endpoints, starting at a random one so shards
//!   do not all begin with the first endpoint;
//! - `LEAST_REQUEST`: power of two choices: two distinct random endpoints, the one
//!   with fewer requests in flight on this shard wins (as Envoy does);
//! - `RANDOM`: a uniformly random endpoint;
//! - `consistentHash`: the request's hash looked up in the cluster's table
//!   (`super::hash`), the same on every shard.

use crate::config::LoadBalancer;
use crate::upstream::cluster::Cluster;

/// One shard's endpoint chooser for one cluster.
#[derive(Debug, Clone)]
pub(crate) struct Balancer {
    rng: fastrand::Rng,
    cursor: usize,
    /// Requests in flight per endpoint, counted by [`Balancer::started`] and
    /// [`Balancer::finished`].
    active: Vec<u32>,
    /// Retries of the cluster's requests in flight on this shard (its share of
    /// `connectionPool.http.maxRetries` is the limit).
    pub(crate) retrying: u32,
}

impl Balancer {
    pub(crate) fn new(cluster: &Cluster) -> Self {
        let mut rng = fastrand::Rng::new();
        let cursor = rng.usize(..cluster.endpoints.len().max(1));
        Balancer {
            rng,
            cursor,
            active: vec![0; cluster.endpoints.len()],
            retrying: 0,
        }
    }

    /// The index in `cluster.endpoints` of the endpoint the next request goes to.
    /// `cluster` must be the one this balancer was made for; a cluster without
    /// endpoints (a subset no endpoint matches) gives 0. A cluster with a consistent
    /// hash looks `hash` up in its table (a random point for a request without one).
    pub(crate) fn pick(&mut self, cluster: &Cluster, hash: Option<u64>) -> usize {
        let n = cluster.endpoints.len();
        if n <= 1 {
            return 0;
        }
        if let Some(table) = &cluster.hash {
            return table.pick(hash.unwrap_or_else(|| self.rng.u64(..)));
        }
        match cluster.lb {
            LoadBalancer::RoundRobin => {
                let pick = self.cursor % n;
                self.cursor = (pick + 1) % n;
                pick
            }
            LoadBalancer::Random => self.rng.usize(..n),
            LoadBalancer::LeastRequest => {
                let first = self.rng.usize(..n);
                let mut second = self.rng.usize(..n - 1);
                if second >= first {
                    second += 1;
                }
                if self.active_on(second) < self.active_on(first) {
                    second
                } else {
                    first
                }
            }
        }
    }

    /// A request to `endpoint` has started (counts toward LEAST_REQUEST).
    pub(crate) fn started(&mut self, endpoint: usize) {
        if let Some(active) = self.active.get_mut(endpoint) {
            *active = active.saturating_add(1);
        }
    }

    /// A request to `endpoint` has finished, successfully or not.
    pub(crate) fn finished(&mut self, endpoint: usize) {
        if let Some(active) = self.active.get_mut(endpoint) {
            *active = active.saturating_sub(1);
        }
    }

    /// Requests in flight to `endpoint` from this shard.
    pub(crate) fn active_on(&self, endpoint: usize) -> u32 {
        self.active.get(endpoint).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn cluster(endpoints: usize, lb: LoadBalancer) -> Cluster {
        Cluster {
            name: "httpbin:8000".to_owned(),
            istio_name: "outbound|8000||httpbin".to_owned(),
            host: "httpbin".to_owned(),
            port: 8000,
            endpoints: (0..endpoints)
                .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)))
                .collect(),
            subset: None,
            lb,
            pool: Default::default(),
            protocol: Default::default(),
            hash: None,
        }
    }

    #[test]
    fn round_robin_cycles_through_every_endpoint() {
        let c = cluster(3, LoadBalancer::RoundRobin);
        let mut b = Balancer::new(&c);
        let first = b.pick(&c, None);
        let picks: Vec<usize> = (0..9).map(|_| b.pick(&c, None)).collect();
        for (i, pick) in picks.iter().enumerate() {
            assert_eq!(*pick, (first + 1 + i) % 3);
        }
    }

    #[test]
    fn round_robin_ignores_requests_in_flight() {
        let c = cluster(2, LoadBalancer::RoundRobin);
        let mut b = Balancer::new(&c);
        let first = b.pick(&c, None);
        b.started(1 - first);
        b.started(1 - first);
        assert_eq!(b.pick(&c, None), 1 - first);
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let c = cluster(2, LoadBalancer::LeastRequest);
        let mut b = Balancer::new(&c);
        b.started(0);
        for _ in 0..100 {
            assert_eq!(b.pick(&c, None), 1);
        }
        b.finished(0);
        b.started(1);
        for _ in 0..100 {
            assert_eq!(b.pick(&c, None), 0);
        }
        // With three endpoints the idle one is in the pair two times in three.
        let c = cluster(3, LoadBalancer::LeastRequest);
        let mut b = Balancer::new(&c);
        for _ in 0..5 {
            b.started(0);
            b.started(2);
        }
        let idle = (0..3000).filter(|_| b.pick(&c, None) == 1).count();
        assert!(
            (1700..=2300).contains(&idle),
            "idle endpoint picked {idle} of 3000"
        );
    }

    #[test]
    fn counts_saturate_and_ignore_unknown_endpoints() {
        let c = cluster(2, LoadBalancer::LeastRequest);
        let mut b = Balancer::new(&c);
        b.finished(0);
        assert_eq!(b.active_on(0), 0);
        b.started(7);
        b.finished(7);
        assert_eq!(b.active_on(7), 0);
        b.started(1);
        assert_eq!(b.active_on(1), 1);
    }

    #[test]
    fn random_reaches_every_endpoint() {
        let c = cluster(4, LoadBalancer::Random);
        let mut b = Balancer::new(&c);
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[b.pick(&c, None)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 700), "{seen:?}");
    }

    #[test]
    fn single_and_empty_clusters_pick_zero() {
        for lb in [
            LoadBalancer::RoundRobin,
            LoadBalancer::LeastRequest,
            LoadBalancer::Random,
        ] {
            for n in [0, 1] {
                let c = cluster(n, lb);
                let mut b = Balancer::new(&c);
                assert_eq!(b.pick(&c, None), 0);
            }
        }
    }
}
