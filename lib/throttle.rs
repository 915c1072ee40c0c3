//! Rate limits for log lines that can repeat without end: a host's ssh writing on stderr,
//! an accept loop out of descriptors, a thousand hosts failing the same way. A token
//! bucket lets a burst through, then a steady few a second, and counts what it held back
//! so that the next line that passes can say so.

use std::sync::Mutex;
use std::time::Instant;

/// A token bucket: `per_sec` a second, bursts of twice that.
#[derive(Debug)]
pub(crate) struct Throttle {
    per_sec: u32,
    tokens: f64,
    last: Instant,
    /// Held back since the last line that passed.
    held: u64,
    /// Held back in all.
    dropped: u64,
}

impl Throttle {
    pub(crate) fn new(per_sec: u32) -> Throttle {
        Throttle {
            per_sec,
            tokens: f64::from(per_sec * 2),
            last: Instant::now(),
            held: 0,
            dropped: 0,
        }
    }

    /// Whether one more line may pass now.
    pub(crate) fn allow(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * f64::from(self.per_sec);
        self.tokens = (self.tokens + refill).min(f64::from(self.per_sec * 2));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.held += 1;
            self.dropped += 1;
            false
        }
    }

    /// Lines held back in all.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Lines held back since the last one that passed, and from now on none.
    fn take_held(&mut self) -> u64 {
        std::mem::take(&mut self.held)
    }
}

/// One kind of warning, shared by the tasks that may give it.
#[derive(Debug)]
pub(crate) struct Warning {
    /// A mutex: taken only to decide, never across an await.
    throttle: Mutex<Throttle>,
}

impl Warning {
    /// At most `per_sec` warnings a second (bursts of twice that).
    pub(crate) fn new(per_sec: u32) -> Warning {
        Warning {
            throttle: Mutex::new(Throttle::new(per_sec)),
        }
    }

    /// Calls `log` unless too many went out lately; it is told how many were held back
    /// since the last one (see [`suppressed`]).
    pub(crate) fn emit(&self, log: impl FnOnce(u64)) {
        let held = {
            let mut t = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
            if !t.allow() {
                return;
            }
            t.take_held()
        };
        log(held);
    }
}

/// `" (and 12 more like it)"`, or nothing: for the end of a throttled line.
pub(crate) fn suppressed(held: u64) -> String {
    if held == 0 {
        String::new()
    } else {
        format!(" (and {held} more like it)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rest_is_counted() {
        let w = Warning::new(5);
        let mut passed = Vec::new();
        for _ in 0..1000 {
            w.emit(|held| passed.push(held));
        }
        assert_eq!(passed.len(), 10, "a burst of twice the rate");
        assert!(passed.iter().all(|h| *h == 0));
        let t = w.throttle.lock().unwrap();
        assert_eq!(t.dropped(), 990);
        assert_eq!(suppressed(0), "");
        assert_eq!(suppressed(3), " (and 3 more like it)");
    }
}
