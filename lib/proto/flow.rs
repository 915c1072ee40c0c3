//! Per-stream, per-direction credit flow control, as pure state machines.
//!
//! The receiver of a byte stream grants the sender a *window* of bytes when the stream
//! opens. The sender never has more than that outstanding: it spends credit on every
//! `Data` frame and stops at zero. The receiver returns credit only once bytes have left
//! its buffer (written to a process, a pipe or a terminal), so a reader that stops reading
//! stalls exactly its own stream and the bytes buffered for it never exceed the window.
//!
//! Credit is returned in batches of at least a quarter window, which keeps `Credit`
//! messages rare without ever leaving a sender stuck: when the sender is out of credit,
//! everything it sent is buffered or consumed, and consuming it all releases a full window.

/// Default window per stream and direction, and so the bound on what the master and an
/// agent buffer for one stream in one direction. Chosen by measure (`benches/datapath.rs`,
/// 1 GiB through the shim, runs alternating in one session): with 1 MiB the pipe into the
/// master's ssh drains between credits (521 MB/s, mean of five runs); 2 MiB keeps ssh fed
/// (610 MB/s, three); with 4 MiB more of each window waits in the master's queue pipe
/// (567 MB/s, eight; the master's CPU per GiB 0.26 -> 0.40 s).
pub const DEFAULT_WINDOW: u32 = 2 << 20;

/// A peer broke the rules of flow control.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer sent {sent} bytes with only {allowed} bytes of credit")]
pub(crate) struct FlowViolation {
    pub sent: u64,
    pub allowed: u64,
}

/// The sending half: what the peer still allows us to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SendCredit {
    available: u64,
}

impl SendCredit {
    pub(crate) fn new(window: u32) -> SendCredit {
        SendCredit {
            available: u64::from(window),
        }
    }

    /// Bytes that may be sent now.
    #[cfg(test)]
    fn available(&self) -> u64 {
        self.available
    }

    /// Reserves up to `max` bytes; returns how many were reserved (0 when out of credit).
    pub(crate) fn take(&mut self, max: usize) -> usize {
        let n = self.available.min(max as u64);
        self.available -= n;
        n as usize
    }

    /// Returns the unused part of a reservation (after a short read).
    pub(crate) fn give_back(&mut self, n: usize) {
        self.available += n as u64;
    }

    /// The peer granted `n` more bytes.
    pub(crate) fn grant(&mut self, n: u32) {
        self.available = self.available.saturating_add(u64::from(n));
    }
}

/// The receiving half: enforces the window and decides when to return credit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecvWindow {
    window: u32,
    /// Received and not yet consumed.
    buffered: u64,
    /// Consumed but not yet granted back.
    ungranted: u64,
}

impl RecvWindow {
    pub(crate) fn new(window: u32) -> RecvWindow {
        RecvWindow {
            window,
            buffered: 0,
            ungranted: 0,
        }
    }

    /// Bytes received and not yet consumed: what this stream costs in memory right now.
    #[cfg(test)]
    fn buffered(&self) -> u64 {
        self.buffered
    }

    /// The peer sent `n` bytes. An error means it exceeded the credit it was given.
    pub(crate) fn received(&mut self, n: usize) -> Result<(), FlowViolation> {
        let outstanding = self.buffered + self.ungranted + n as u64;
        if outstanding > u64::from(self.window) {
            return Err(FlowViolation {
                sent: outstanding,
                allowed: u64::from(self.window),
            });
        }
        self.buffered += n as u64;
        Ok(())
    }

    /// `n` buffered bytes were consumed. Returns the credit to grant now, if it is time.
    pub(crate) fn consumed(&mut self, n: usize) -> Option<u32> {
        let n = (n as u64).min(self.buffered);
        self.buffered -= n;
        self.ungranted += n;
        let batch = u64::from(self.window / 4).max(1);
        if self.ungranted >= batch {
            let grant = self.ungranted;
            self.ungranted = 0;
            Some(grant as u32)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sender_stops_at_zero_and_resumes_on_grant() {
        let mut c = SendCredit::new(100);
        assert_eq!(c.take(64), 64);
        assert_eq!(c.take(64), 36);
        assert_eq!(c.take(64), 0);
        c.grant(10);
        assert_eq!(c.take(64), 10);
    }

    #[test]
    fn short_read_returns_unused_credit() {
        let mut c = SendCredit::new(100);
        let n = c.take(80);
        c.give_back(n - 30);
        assert_eq!(c.available(), 70);
    }

    #[test]
    fn receiver_rejects_more_than_the_window() {
        let mut w = RecvWindow::new(100);
        w.received(60).unwrap();
        w.received(40).unwrap();
        assert_eq!(
            w.received(1),
            Err(FlowViolation {
                sent: 101,
                allowed: 100
            })
        );
    }

    #[test]
    fn credit_returns_in_quarter_window_batches() {
        let mut w = RecvWindow::new(400);
        w.received(400).unwrap();
        assert_eq!(w.consumed(50), None);
        assert_eq!(w.consumed(50), Some(100));
        assert_eq!(w.consumed(99), None);
        assert_eq!(w.consumed(1), Some(100));
    }

    #[test]
    fn ungranted_bytes_still_count_against_the_window() {
        let mut w = RecvWindow::new(400);
        w.received(400).unwrap();
        assert_eq!(w.consumed(10), None);
        // The sender has no credit for these 10 bytes yet.
        assert!(w.received(10).is_err());
    }

    proptest! {
        // Drive a sender and a receiver against each other with random chunk sizes and
        // random consumption. Invariants: the receiver never buffers more than the window,
        // never reports a violation for an honest sender, and the transfer always completes
        // (no deadlock) once the receiver consumes everything.
        #[test]
        fn honest_sender_never_violates_and_never_deadlocks(
            window in 1u32..5000,
            total in 0usize..50_000,
            chunks in proptest::collection::vec(1usize..3000, 1..50),
            consume in proptest::collection::vec(0usize..3000, 1..50),
        ) {
            let mut tx = SendCredit::new(window);
            let mut rx = RecvWindow::new(window);
            let mut sent = 0usize;
            let mut delivered = 0usize;
            let mut step = 0usize;
            let mut idle_rounds = 0;
            while delivered < total {
                let want = chunks[step % chunks.len()].min(total - sent);
                let n = tx.take(want);
                if n > 0 {
                    rx.received(n).unwrap();
                    sent += n;
                }
                prop_assert!(rx.buffered() <= u64::from(window));
                // Consume a random amount, or everything when the sender is stuck.
                let stuck = n == 0;
                let c = if stuck { rx.buffered() as usize } else { consume[step % consume.len()].min(rx.buffered() as usize) };
                if let Some(g) = rx.consumed(c) {
                    tx.grant(g);
                }
                delivered += c;
                if n == 0 && c == 0 {
                    idle_rounds += 1;
                    prop_assert!(idle_rounds < 3, "deadlock: sent {} of {}, credit {}", sent, total, tx.available());
                } else {
                    idle_rounds = 0;
                }
                step += 1;
            }
            prop_assert_eq!(sent, total);
        }
    }
}
