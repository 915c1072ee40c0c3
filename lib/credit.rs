//! Waiting for send credit: [`proto::flow::SendCredit`](crate::proto::flow::SendCredit)
//! behind an async gate that a pump awaits and the receiver's `Credit` messages open.

use std::sync::Mutex;

use tokio::sync::Notify;

use crate::proto::flow::SendCredit;

/// Async credit for one direction of one stream.
#[derive(Debug)]
pub(crate) struct CreditGate {
    state: Mutex<(SendCredit, bool)>,
    notify: Notify,
}

impl CreditGate {
    pub(crate) fn new(window: u32) -> CreditGate {
        CreditGate {
            state: Mutex::new((SendCredit::new(window), false)),
            notify: Notify::new(),
        }
    }

    /// Waits until some credit is available and reserves up to `max` bytes of it.
    /// Returns `None` once the gate is closed.
    pub(crate) async fn acquire(&self, max: usize) -> Option<usize> {
        loop {
            {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.1 {
                    return None;
                }
                let n = state.0.take(max);
                if n > 0 {
                    return Some(n);
                }
            }
            self.notify.notified().await;
        }
    }

    /// Returns the unused part of a reservation.
    pub(crate) fn give_back(&self, n: usize) {
        if n > 0 {
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .give_back(n);
        }
    }

    /// The peer granted `n` more bytes.
    pub(crate) fn grant(&self, n: u32) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .grant(n);
        self.notify.notify_one();
    }

    /// Wakes the waiter for good: `acquire` returns `None` from now on.
    pub(crate) fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn acquire_waits_for_a_grant() {
        let gate = Arc::new(CreditGate::new(0));
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(100).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        gate.grant(30);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Some(30));
    }

    #[tokio::test]
    async fn close_releases_a_waiter() {
        let gate = Arc::new(CreditGate::new(0));
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(100).await }
        });
        gate.close();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, None);
    }
}
