//! The connect window: at most K ssh handshakes in flight, the rest waiting in the order
//! they came (as pdsh's and clush's fanout). A thousand hosts connected at once would
//! share the CPU a thousand ways and all run into their connect timeout; through a
//! window each handshake gets the CPU it needs, and its timeout starts when it does.
//!
//! The master's own ssh processes go through its window; each gateway that runs ssh for
//! the master (`via_mode = "ssh"`) has a window of its own, since the handshakes' CPU is
//! spent there. [`Connects`] also keeps what `mitossh status` shows: what waits, what is
//! under way, and the latest failures with their reason.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::bootstrap::ssh::ConnectError;
use crate::proto::{ConnectFailure, ConnectStatus, FailedConnect};

/// The window unless configured: clush's fanout.
pub const DEFAULT_WINDOW: usize = 64;

/// How many failures `mitossh status` lists.
const RECENT_FAILURES: usize = 64;

/// One window: permits handed out first come, first served (tokio's semaphore is fair).
#[derive(Debug)]
pub(crate) struct Window {
    permits: Arc<Semaphore>,
    queued: AtomicUsize,
    handshaking: Arc<AtomicUsize>,
}

/// A place in a window: the handshake may proceed while it is held.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    handshaking: Arc<AtomicUsize>,
    /// From the moment it queued: a large connect gives memory back when it is over.
    _busy: crate::sys::memory::Busy,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.handshaking.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Window {
    pub(crate) fn new(size: usize) -> Window {
        Window {
            permits: Arc::new(Semaphore::new(size.max(1))),
            queued: AtomicUsize::new(0),
            handshaking: Arc::default(),
        }
    }

    /// Waits for a place, behind everyone who asked before.
    pub(crate) async fn enter(&self) -> Slot {
        let busy = crate::sys::memory::Busy::enter();
        self.queued.fetch_add(1, Ordering::SeqCst);
        // Counted down however the wait ends (the attempt may be dropped while queued).
        let _waiting = Decrement(&self.queued);
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the window's semaphore is never closed");
        self.handshaking.fetch_add(1, Ordering::SeqCst);
        Slot {
            _permit: permit,
            handshaking: self.handshaking.clone(),
            _busy: busy,
        }
    }

    /// (waiting, under way)
    pub(crate) fn load(&self) -> (usize, usize) {
        (
            self.queued.load(Ordering::SeqCst),
            self.handshaking.load(Ordering::SeqCst),
        )
    }
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The master's connecting, for its status.
#[derive(Debug)]
pub(crate) struct Connects {
    pub size: usize,
    /// The master's own ssh processes.
    pub window: Window,
    connected: AtomicU64,
    failed: AtomicU64,
    /// Newest last. A mutex: pushed to once per failed attempt, read by `status`.
    recent: Mutex<VecDeque<(Instant, String, ConnectFailure, String)>>,
}

impl Connects {
    pub(crate) fn new(size: usize) -> Connects {
        Connects {
            size: size.max(1),
            window: Window::new(size),
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            recent: Mutex::default(),
        }
    }

    pub(crate) fn succeeded(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    /// Context `name` could not be made.
    pub(crate) fn failed(&self, name: String, e: &ConnectError) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_FAILURES {
            recent.pop_front();
        }
        recent.push_back((Instant::now(), name, classify(e), e.to_string()));
    }

    /// The status, with the load of the other windows (the gateways') added in.
    pub(crate) fn status(&self, others: impl Iterator<Item = (usize, usize)>) -> ConnectStatus {
        let (mut queued, mut handshaking) = self.window.load();
        for (q, h) in others {
            queued += q;
            handshaking += h;
        }
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        ConnectStatus {
            window: self.size as u32,
            queued: queued as u32,
            handshaking: handshaking as u32,
            connected: self.connected.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            recent_failures: recent
                .iter()
                .map(|(at, name, kind, message)| FailedConnect {
                    name: name.clone(),
                    kind: *kind,
                    message: message.clone(),
                    ago_secs: at.elapsed().as_secs(),
                })
                .collect(),
        }
    }
}

/// What kind of failure a connect error is.
pub(crate) fn classify(e: &ConnectError) -> ConnectFailure {
    match e {
        ConnectError::CannotServe(_) => ConnectFailure::NoAgent,
        ConnectError::Timeout(_) => ConnectFailure::Timeout,
        ConnectError::Descriptors(_) => ConnectFailure::Descriptors,
        ConnectError::Ssh(text) => classify_text(text).unwrap_or(ConnectFailure::Other),
        ConnectError::Other(text) => classify_text(text).unwrap_or(ConnectFailure::Other),
    }
}

/// Recognises what ssh (here, or on a gateway) and mitossh say when connecting fails.
fn classify_text(text: &str) -> Option<ConnectFailure> {
    let t = text.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if any(&["file descriptors", "too many open files"]) {
        Some(ConnectFailure::Descriptors)
    } else if any(&["timed out", "timeout"]) {
        Some(ConnectFailure::Timeout)
    } else if any(&[
        "permission denied",
        "host key verification failed",
        "too many authentication failures",
        "authentication failed",
        "nobody could answer",
        "password is needed",
        "incorrect password",
    ]) {
        Some(ConnectFailure::Auth)
    } else if any(&[
        "connection refused",
        "no route to host",
        "could not resolve",
        "name or service not known",
        "network is unreachable",
        "connection closed by",
        "connection reset",
        "kex_exchange_identification",
        "unable to negotiate",
        "proxycommand",
    ]) {
        Some(ConnectFailure::Unreachable)
    } else if any(&[
        "agent did not start",
        "cannot serve",
        "handshake failed",
        "mitossh agent",
    ]) {
        Some(ConnectFailure::NoAgent)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_grouped_as_people_read_them() {
        let ssh = |t: &str| classify(&ConnectError::Ssh(t.into()));
        assert_eq!(
            ssh("ssh: connect to host 10.0.0.9 port 22: Connection refused"),
            ConnectFailure::Unreachable
        );
        assert_eq!(
            ssh("ssh: Could not resolve hostname nowhere: Name or service not known"),
            ConnectFailure::Unreachable
        );
        assert_eq!(
            ssh("mitossh-t1@127.0.0.1: Permission denied (publickey)."),
            ConnectFailure::Auth
        );
        assert_eq!(
            ssh("ssh: connect to host 10.0.0.9 port 22: Connection timed out"),
            ConnectFailure::Timeout
        );
        assert_eq!(ssh("something new"), ConnectFailure::Other);
        assert_eq!(
            classify(&ConnectError::CannotServe("h: cannot serve".into())),
            ConnectFailure::NoAgent
        );
        // Through a gateway, its agent's words.
        assert_eq!(
            classify(&ConnectError::Other(
                "mitossh: ssh on gw: h7: timed out after 30s waiting for the mitossh agent to start"
                    .into()
            )),
            ConnectFailure::Timeout
        );
        assert_eq!(
            classify(&ConnectError::Other(
                "mitossh: ssh on gw: ssh: connect to host 127.0.0.1 port 9: Connection refused"
                    .into()
            )),
            ConnectFailure::Unreachable
        );
    }

    #[tokio::test]
    async fn the_window_lets_k_through_and_queues_the_rest_in_order() {
        let w = Arc::new(Window::new(2));
        let a = w.enter().await;
        let _b = w.enter().await;
        assert_eq!(w.load(), (0, 2));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..3 {
            let (w, order) = (w.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let slot = w.enter().await;
                order.lock().unwrap().push(i);
                slot
            }));
            // Each asks before the next.
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        assert_eq!(w.load(), (3, 2));
        drop(a);
        let first = waiters.remove(0).await.unwrap();
        assert_eq!(w.load(), (2, 2));
        drop(first);
        let second = waiters.remove(0).await.unwrap();
        drop(second);
        let _third = waiters.remove(0).await.unwrap();
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
    }
}
