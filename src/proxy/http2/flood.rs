//! The control-frame budget of an HTTP/2 client connection: PING, SETTINGS and
//! PRIORITY frames cost their sender nine bytes each and ringress an answer or a
//! state change, so a client may send only so many of them without opening a stream.
//! More than [`BUDGET`] within [`WINDOW`] with no request among them is a flood: the
//! connection gets GOAWAY `ENHANCE_YOUR_CALM` and is closed, as Envoy closes a
//! connection over its control-frame limits. (Empty DATA, CONTINUATION and RST_STREAM
//! floods are the `h2` crate's to refuse.)
//!
//! [`FloodGuard::scan`] reads the frame headers in the client's plaintext as it
//! arrives, over any split, skipping payloads in bulk: constant work per frame.

use std::time::{Duration, Instant};

/// Control frames a connection may send within [`WINDOW`] without a request: far
/// above what any client sends (a browser: a SETTINGS and a PING or two; a gRPC
/// client's keepalive: a PING every few seconds at most).
pub(crate) const BUDGET: u32 = 1000;
/// How long the budget lasts before it is given again.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// The client's connection preface (RFC 9113 §3.4), before the first frame.
const PREFACE_LEN: usize = 24;

const TYPE_HEADERS: u8 = 0x1;
const TYPE_PRIORITY: u8 = 0x2;
const TYPE_SETTINGS: u8 = 0x4;
const TYPE_PING: u8 = 0x6;
const FLAG_ACK: u8 = 0x1;

/// Counts a client's control frames (see the module doc).
#[derive(Debug)]
pub(crate) struct FloodGuard {
    /// Preface bytes still to pass.
    preface: usize,
    /// The frame header being read, and how much of it is.
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    skip: usize,
    /// Control frames since the window began or the last request.
    count: u32,
    window_start: Option<Instant>,
}

impl Default for FloodGuard {
    fn default() -> Self {
        FloodGuard {
            preface: PREFACE_LEN,
            header: [0; 9],
            have: 0,
            skip: 0,
            count: 0,
            window_start: None,
        }
    }
}

impl FloodGuard {
    /// Reads `data`, the next plaintext from the client. `Some(n)` once the
    /// connection is over its budget: `n` bytes of `data` came before the frame
    /// that broke it (what `h2` still reads: the preface and the first frames, so
    /// that even a flood in the connection's first read is answered with GOAWAY).
    /// `now` is asked only when the count passes the budget.
    pub(crate) fn scan(&mut self, data: &[u8], now: impl Fn() -> Instant) -> Option<usize> {
        let mut at = self.preface.min(data.len());
        self.preface -= at;
        while at < data.len() {
            if self.skip > 0 {
                let pass = self.skip.min(data.len() - at);
                self.skip -= pass;
                at += pass;
                continue;
            }
            let take = (9 - self.have).min(data.len() - at);
            self.header[self.have..self.have + take].copy_from_slice(&data[at..at + take]);
            self.have += take;
            at += take;
            if self.have < 9 {
                break;
            }
            self.have = 0;
            let [a, b, c, kind, flags, ..] = self.header;
            self.skip = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
            let control = match kind {
                TYPE_HEADERS => {
                    self.count = 0;
                    self.window_start = None;
                    false
                }
                TYPE_PRIORITY => true,
                TYPE_SETTINGS | TYPE_PING => flags & FLAG_ACK == 0,
                _ => false,
            };
            if control && self.over_budget(&now) {
                // The frame's header may have begun in an earlier read.
                return Some(at.saturating_sub(9));
            }
        }
        None
    }

    fn over_budget(&mut self, now: &impl Fn() -> Instant) -> bool {
        self.count += 1;
        let start = *self.window_start.get_or_insert_with(now);
        if self.count <= BUDGET {
            return false;
        }
        let now = now();
        if now.saturating_duration_since(start) < WINDOW {
            return true;
        }
        // The window is over: a new one, this frame its first.
        self.window_start = Some(now);
        self.count = 1;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            0,
        ];
        f.extend_from_slice(payload);
        f
    }

    fn ping() -> Vec<u8> {
        frame(TYPE_PING, 0, b"12345678")
    }

    #[test]
    fn a_ping_flood_is_found_at_any_split_and_requests_renew_the_budget() {
        let start = Instant::now();
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(frame(TYPE_SETTINGS, 0, &[0, 4, 0, 0, 255, 255]));
        for _ in 0..BUDGET - 1 {
            wire.extend(ping());
        }
        // ACKs and other frames never count.
        wire.extend(frame(TYPE_PING, FLAG_ACK, b"12345678"));
        wire.extend(frame(0x8, 0, &[0, 0, 1, 0]));
        for split in [1, 7, 9, 17, 4096] {
            let mut guard = FloodGuard::default();
            for piece in wire.chunks(split) {
                assert_eq!(guard.scan(piece, || start), None, "split {split}");
            }
            assert_eq!(guard.scan(&ping(), || start), Some(0), "split {split}");
            // A request starts the count again.
            let mut guard = FloodGuard::default();
            guard.scan(&wire, || start);
            guard.scan(&frame(TYPE_HEADERS, 0x5, &[0x82]), || start);
            assert_eq!(
                guard.scan(&ping().repeat(10), || start),
                None,
                "split {split}"
            );
        }
    }

    #[test]
    fn the_budget_comes_back_after_the_window() {
        let start = Instant::now();
        let fresh = || FloodGuard {
            preface: 0,
            ..FloodGuard::default()
        };
        let pings = ping().repeat(BUDGET as usize);
        let mut guard = fresh();
        assert_eq!(guard.scan(&pings, || start), None);
        assert_eq!(guard.scan(&ping(), || start + WINDOW / 2), Some(0));
        let mut guard = fresh();
        assert_eq!(guard.scan(&pings, || start), None);
        assert_eq!(guard.scan(&ping(), || start + WINDOW), None);
        assert_eq!(
            guard.scan(&ping().repeat(BUDGET as usize - 1), || start + WINDOW),
            None
        );
        assert_eq!(guard.scan(&ping(), || start + WINDOW), Some(0));
    }

    #[test]
    fn a_flood_in_the_first_read_leaves_the_preface_and_the_frames_before_it() {
        let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        wire.extend(frame(TYPE_SETTINGS, 0, &[0, 4, 0, 0, 255, 255]));
        let before = wire.len() + (BUDGET as usize - 1) * ping().len();
        wire.extend(ping().repeat(BUDGET as usize + 50));
        let start = Instant::now();
        assert_eq!(FloodGuard::default().scan(&wire, || start), Some(before));
        // Split inside the breaking frame's header: what this read holds of it stays.
        let mut guard = FloodGuard::default();
        assert_eq!(guard.scan(&wire[..before + 4], || start), None);
        assert_eq!(guard.scan(&wire[before + 4..], || start), Some(0));
    }
}
