//! Who gets in: the caps on client connections, per shard (`--max-connections`) and
//! per client address (`--max-connections-per-client`). A connection over a cap is
//! reset at once (the client sees ECONNRESET, never a half-served request), counted
//! in `ringress_connections_refused_total` by reason, and logged at most once a
//! second per shard ([`LogLimit`](super::LogLimit)). An admitted connection holds its place for as
//! long as its task lives ([`Admitted`]), also when the task ends by a panic.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

use super::{ShardContext, ShardStats};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The shard has `--max-connections` open.
    ShardFull,
    /// The client address has `--max-connections-per-client` open on this shard.
    ClientFull,
}

impl Refusal {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::ShardFull => "shard_limit",
            Refusal::ClientFull => "client_limit",
        }
    }
}

/// Open connections per client address, when they are capped. Keys come from the
/// network, so the map keeps std's keyed hash.
#[derive(Debug, Default)]
pub(crate) struct Clients(RefCell<HashMap<IpAddr, u32>>);

/// An admitted connection's place; given back when dropped. Every connection task
/// keeps one for its whole life, so it is small: the client address is boxed, and
/// only kept when addresses are capped.
pub(crate) struct Admitted {
    ctx: Rc<ShardContext>,
    client: Option<Box<IpAddr>>,
}

impl Admitted {
    pub(crate) fn ctx(&self) -> &Rc<ShardContext> {
        &self.ctx
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        ShardStats::sub(&self.ctx.stats.active_connections);
        if let Some(ip) = self.client.take() {
            let mut clients = self.ctx.clients.0.borrow_mut();
            if let Some(open) = clients.get_mut(&*ip) {
                *open -= 1;
                if *open == 0 {
                    clients.remove(&*ip);
                }
            }
        }
    }
}

impl ShardContext {
    /// Admits a connection from `ip` within the caps, or says which one it is over.
    pub(crate) fn admit(self: &Rc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        let limits = self.settings.limits;
        let active = ShardStats::get(&self.stats.active_connections);
        if usize::try_from(active).unwrap_or(usize::MAX) >= limits.max_connections {
            return Err(self.refused(Refusal::ShardFull, ip));
        }
        let client = match limits.max_connections_per_client {
            None => None,
            Some(cap) => {
                let ip = ip.to_canonical();
                let mut clients = self.clients.0.borrow_mut();
                let open = clients.entry(ip).or_insert(0);
                if usize::try_from(*open).unwrap_or(usize::MAX) >= cap {
                    drop(clients);
                    return Err(self.refused(Refusal::ClientFull, ip));
                }
                *open += 1;
                Some(Box::new(ip))
            }
        };
        ShardStats::add(&self.stats.active_connections);
        Ok(Admitted {
            ctx: self.clone(),
            client,
        })
    }

    fn refused(&self, refusal: Refusal, ip: IpAddr) -> Refusal {
        let counter = match refusal {
            Refusal::ShardFull => &self.stats.refused_shard_full,
            Refusal::ClientFull => &self.stats.refused_client_full,
        };
        ShardStats::add(counter);
        if let Some(left_out) = self.refusals_log.allow() {
            let limits = self.settings.limits;
            tracing::warn!(
                shard = self.id,
                client = %ip,
                reason = refusal.label(),
                max_connections = limits.max_connections,
                max_connections_per_client = ?limits.max_connections_per_client,
                also_refused = left_out,
                "connection refused: over the connection cap (raise --max-connections or --max-connections-per-client)"
            );
        }
        refusal
    }
}
