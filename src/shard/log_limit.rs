//! Rate-limited log lines of one shard: events a peer can cause at will (refused
//! connections, failed accepts, failed TLS handshakes) are logged at most a few times
//! a second per kind, each line saying how many like it were left out since the last.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::uring;

/// The window the limit counts in.
const WINDOW: Duration = Duration::from_secs(1);

/// The rate limit of one kind of event on one shard: `per_second` lines in each
/// window of a second.
#[derive(Debug)]
pub(crate) struct LogLimit {
    per_second: u32,
    window_start: Cell<Option<Instant>>,
    logged: Cell<u32>,
    left_out: Cell<u64>,
}

impl LogLimit {
    pub(crate) fn new(per_second: u32) -> LogLimit {
        LogLimit {
            per_second,
            window_start: Cell::new(None),
            logged: Cell::new(0),
            left_out: Cell::new(0),
        }
    }

    /// Whether to log this event: `Some(n)` with the `n` events left out since the
    /// last one logged, `None` to leave this one out.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = uring::now();
        if self
            .window_start
            .get()
            .is_none_or(|start| now >= start + WINDOW)
        {
            self.window_start.set(Some(now));
            self.logged.set(0);
        }
        if self.logged.get() >= self.per_second {
            self.left_out.set(self.left_out.get() + 1);
            return None;
        }
        self.logged.set(self.logged.get() + 1);
        Some(self.left_out.replace(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_lines_a_second_and_the_count_of_the_rest() {
        let limit = LogLimit::new(2);
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.allow(), None);
        limit.window_start.set(Instant::now().checked_sub(WINDOW));
        assert_eq!(limit.allow(), Some(2));
    }
}
