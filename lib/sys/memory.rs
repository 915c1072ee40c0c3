//! Giving freed memory back to the system once a burst of work is over.
//!
//! Connecting a few hundred hosts, or a few hundred sessions at once, makes a master
//! allocate far more than it keeps. An allocator such as mimalloc holds on to what was
//! freed for reuse, so without this an idle master would show its peak, not what it
//! holds. Work that comes in bursts holds a [`Busy`] while it runs; when the last one
//! ends, the allocator is told to return what it can. Which allocator, and how, is the
//! program's choice ([`set_collector`]); without one this does nothing (musl's malloc,
//! the agents', returns memory by itself). Work that ends one piece at a time (the last
//! of 1,000 idle sessions) asks for it a moment later with [`give_back_soon`].

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

static COLLECTOR: OnceLock<fn()> = OnceLock::new();

/// Work under way now, across the process.
static BUSY: AtomicUsize = AtomicUsize::new(0);

/// The most work under way at once since memory was last given back.
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Only a burst of at least this much work at once is worth a collection: one call at a
/// time (a script's `ssh host cmd` in a loop) leaves little behind, and must not pay for
/// a walk over the heap each time.
const BURST: usize = 8;

/// How long after the last request [`give_back_soon`] gives memory back: a burst of
/// sessions ending costs one collection.
const SETTLE: Duration = Duration::from_secs(1);

static SCHEDULED: AtomicBool = AtomicBool::new(false);

/// Says how to make the allocator return freed memory. Called once, by `main`.
#[cfg_attr(not(feature = "mimalloc"), allow(dead_code))] // the agent keeps musl's malloc
pub(crate) fn set_collector(collect: fn()) {
    let _ = COLLECTOR.set(collect);
}

/// The collector for mimalloc: returns what its heaps hold free to the system.
#[cfg(feature = "mimalloc")]
pub(crate) fn mimalloc_collect() {
    // SAFETY: mi_collect only returns freed memory to the system; it takes no pointers.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// A piece of work (a handshake, a session) under way; memory is given back when the
/// last of a burst of them ends.
#[derive(Debug)]
pub(crate) struct Busy(());

impl Busy {
    pub(crate) fn enter() -> Busy {
        let now = BUSY.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(now, Ordering::SeqCst);
        Busy(())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if BUSY.fetch_sub(1, Ordering::SeqCst) == 1
            && PEAK.swap(0, Ordering::SeqCst) >= BURST
            && let Some(collect) = COLLECTOR.get()
        {
            collect();
        }
    }
}

/// Returns freed memory to the system now (if the program said how).
pub(crate) fn give_back() {
    if let Some(collect) = COLLECTOR.get() {
        collect();
    }
}

/// Returns freed memory a little later, once however often it is asked meanwhile (from
/// within a tokio runtime).
pub(crate) fn give_back_soon() {
    if SCHEDULED.swap(true, Ordering::SeqCst) {
        return;
    }
    tokio::spawn(async {
        tokio::time::sleep(SETTLE).await;
        SCHEDULED.store(false, Ordering::SeqCst);
        give_back();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    static COLLECTED: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn memory_is_given_back_when_the_last_of_a_burst_ends() {
        set_collector(|| {
            COLLECTED.fetch_add(1, Ordering::SeqCst);
        });
        // One at a time: nothing to give back.
        for _ in 0..BURST {
            drop(Busy::enter());
        }
        assert_eq!(COLLECTED.load(Ordering::SeqCst), 0);
        let mut burst: Vec<Busy> = (0..BURST).map(|_| Busy::enter()).collect();
        let last = burst.pop();
        drop(burst);
        assert_eq!(COLLECTED.load(Ordering::SeqCst), 0);
        drop(last);
        assert_eq!(COLLECTED.load(Ordering::SeqCst), 1);
    }
}
