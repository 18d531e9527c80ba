//! Rate-limited log lines of one shard: events a peer can cause at will (refused
//! connections, failed accepts, failed TLS handshakes) are logged at most once a
//! second per kind, each line saying how many like it were left out since the last.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::uring;

/// How often one kind of event is logged at most.
const EVERY: Duration = Duration::from_secs(1);

/// The rate limit of one kind of event on one shard.
#[derive(Debug, Default)]
pub struct LogLimit {
    next: Cell<Option<Instant>>,
    left_out: Cell<u64>,
}

impl LogLimit {
    /// Whether to log this event: `Some(n)` with the `n` events left out since the
    /// last one logged, `None` to leave this one out.
    pub fn allow(&self) -> Option<u64> {
        let now = uring::now();
        match self.next.get() {
            Some(next) if now < next => {
                self.left_out.set(self.left_out.get() + 1);
                None
            }
            _ => {
                self.next.set(Some(now + EVERY));
                Some(self.left_out.replace(0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_counts_the_rest() {
        let limit = LogLimit::default();
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.allow(), None);
        limit.next.set(Some(Instant::now()));
        assert_eq!(limit.allow(), Some(2));
    }
}
