//! Giving freed memory back to the system. mimalloc keeps what a burst of work freed for
//! reuse and returns it only when it next runs its purge, which an idle process never
//! does: a master that carried 1,000 streams would stay at its peak. After work ends the
//! master asks for a collection once things have settled. Without mimalloc (the agents)
//! there is nothing to do: musl's malloc returns freed memory itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long after the last request the collection runs: a burst of sessions ending
/// costs one.
const SETTLE: Duration = Duration::from_secs(1);

static SCHEDULED: AtomicBool = AtomicBool::new(false);

#[cfg(feature = "mimalloc")]
unsafe extern "C" {
    /// mimalloc's own (in the library that `mimalloc`'s allocator links): frees what it
    /// holds unused, purging it from memory with `force`.
    fn mi_collect(force: bool);
}

/// Returns freed memory to the system now.
pub fn give_back() {
    // SAFETY: mi_collect only walks mimalloc's own structures of the calling thread.
    #[cfg(feature = "mimalloc")]
    unsafe {
        mi_collect(true)
    }
}

/// Returns freed memory a little later, once (from within a tokio runtime).
pub fn give_back_soon() {
    if SCHEDULED.swap(true, Ordering::SeqCst) {
        return;
    }
    tokio::spawn(async {
        tokio::time::sleep(SETTLE).await;
        SCHEDULED.store(false, Ordering::SeqCst);
        give_back();
    });
}
