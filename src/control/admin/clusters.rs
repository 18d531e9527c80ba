//! `GET /clusters`: Envoy's admin text format of the clusters being served, one
//! `CLUSTER::…` line per fact: the cluster's limits, then for each endpoint its
//! request counts and `health_flags` (`healthy`, or `/failed_active_hc` while it
//! fails its health check and `/failed_outlier_check` while outlier detection has it
//! ejected), as `istioctl proxy-config endpoint` and scripts
//! written for Envoy read them.

use std::fmt::Write as _;
use std::time::Instant;

use crate::snapshot::Snapshot;

/// The text of `/clusters`.
pub(super) fn render(snapshot: &Snapshot, now: Instant) -> String {
    let mut out = String::new();
    for (_, c) in snapshot.clusters.iter() {
        let name = &c.istio_name;
        let _ = writeln!(out, "{name}::observability_name::{name}");
        let limits = [
            ("max_connections", c.pool.max_connections),
            ("max_pending_requests", c.pool.max_pending),
            ("max_requests", c.pool.max_requests),
            ("max_retries", c.pool.max_retries),
        ];
        for (limit, value) in limits {
            let _ = writeln!(out, "{name}::default_priority::{limit}::{value}");
        }
        let _ = writeln!(out, "{name}::added_via_api::false");
        for (i, addr) in c.endpoints.iter().enumerate() {
            let (total, errors) = c.health.counts(i);
            let host = format!("{name}::{addr}");
            let _ = writeln!(out, "{host}::rq_error::{errors}");
            let _ = writeln!(out, "{host}::rq_success::{}", total - errors.min(total));
            let _ = writeln!(out, "{host}::rq_total::{total}");
            let _ = writeln!(out, "{host}::hostname::");
            let mut flags = String::new();
            if c.health.failed_active_hc(i) {
                flags.push_str("/failed_active_hc");
            }
            if c.health.is_ejected(i, now) {
                flags.push_str("/failed_outlier_check");
            }
            if flags.is_empty() {
                flags.push_str("healthy");
            }
            let _ = writeln!(out, "{host}::health_flags::{flags}");
            let _ = writeln!(out, "{host}::weight::1");
            let _ = writeln!(out, "{host}::priority::0");
        }
    }
    out
}
