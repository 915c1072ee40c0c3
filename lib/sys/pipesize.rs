//! Growing pipes within a budget. Larger pipes mean fewer wake-ups per byte along the
//! chain of processes a stream crosses, but every page of pipe capacity counts against the
//! user's allowance (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB by default), and past
//! that allowance the kernel gives *every* new pipe of the user, theirs as well as ours,
//! two pages and refuses to grow any. So a process grows its pipes only while what it has
//! grown stays within an eighth of the allowance ([`budget_pages`]), and each growth is
//! given back when the pipe that holds it closes ([`PipeGrant`]).

use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The capacities asked for, largest first: 1 MiB is the unprivileged maximum
/// (`/proc/sys/fs/pipe-max-size`) on stock kernels; 256 KiB still holds a whole frame.
const SIZES: [usize; 2] = [1 << 20, 1 << 18];

const PAGE: usize = 4096;

/// The kernel's default capacity: what a pipe has before it is grown.
const DEFAULT_PAGES: usize = 16;

/// The allowance assumed where `/proc` does not say, or says there is none (0).
const ALLOWANCE_UNKNOWN: usize = 16384;

/// Pages this process has grown its open pipes by.
static GROWN: AtomicUsize = AtomicUsize::new(0);

/// Growth held by one pipe: given back to the budget when dropped, which is to be when the
/// pipe's descriptor closes (keep the two together).
#[derive(Debug)]
#[must_use = "dropping the grant gives the growth back while the pipe still holds it"]
pub(crate) struct PipeGrant {
    pages: usize,
    from: &'static AtomicUsize,
}

impl Drop for PipeGrant {
    fn drop(&mut self) {
        self.from.fetch_sub(self.pages, Ordering::SeqCst);
    }
}

/// How many pages of growth this process may hold: an eighth of the user's allowance, so
/// that the user's own pipes keep their size beside a master and several agents.
pub(crate) fn budget_pages() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let allowance = std::fs::read_to_string("/proc/sys/fs/pipe-user-pages-soft")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(ALLOWANCE_UNKNOWN);
        allowance / 8
    })
}

/// Grows `fd`'s pipe as far as the budget allows (see [`SIZES`]); `None` when it cannot
/// be grown (the budget is spent, the kernel refused, or `fd` is no pipe).
pub(crate) fn grow_pipe(fd: &impl AsRawFd) -> Option<PipeGrant> {
    grow_within(fd, budget_pages(), &GROWN)
}

/// What `fd`'s pipe holds at most, in bytes; `None` when `fd` is no pipe.
pub(crate) fn capacity(fd: &impl AsRawFd) -> Option<usize> {
    // SAFETY: F_GETPIPE_SZ takes no argument; -1 on a descriptor that is no pipe.
    usize::try_from(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) }).ok()
}

/// Like [`grow_pipe`], with `grown` counting what this budget holds.
fn grow_within(fd: &impl AsRawFd, budget: usize, grown: &'static AtomicUsize) -> Option<PipeGrant> {
    let now = capacity(fd)?;
    for size in SIZES {
        if now >= size {
            // As large already (someone else's, grown by its owner): never made smaller.
            return None;
        }
        let pages = size / PAGE - DEFAULT_PAGES;
        if !reserve(grown, pages, budget) {
            continue;
        }
        let grant = PipeGrant { pages, from: grown };
        // SAFETY: F_SETPIPE_SZ takes an int.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) } >= 0 {
            return Some(grant);
        }
    }
    None
}

/// Takes `pages` from the budget if they fit.
fn reserve(grown: &AtomicUsize, pages: usize, budget: usize) -> bool {
    grown
        .try_update(Ordering::SeqCst, Ordering::SeqCst, |grown| {
            (grown + pages <= budget).then_some(grown + pages)
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_stops_at_the_budget_and_comes_back_when_the_grant_goes() {
        // A counter of its own: other tests grow pipes meanwhile.
        static COUNTED: AtomicUsize = AtomicUsize::new(0);
        let grown = || COUNTED.load(Ordering::SeqCst);
        let budget = 2 * (256 - DEFAULT_PAGES) + (64 - DEFAULT_PAGES);
        let pipes: Vec<_> = (0..4).map(|_| nix::unistd::pipe().unwrap()).collect();
        let grants: Vec<_> = pipes
            .iter()
            .map(|(_, w)| grow_within(w, budget, &COUNTED))
            .collect();
        let sizes: Vec<_> = pipes.iter().map(|(_, w)| capacity(w).unwrap()).collect();
        // Two of 1 MiB, then 256 KiB where 1 MiB no longer fits, then none.
        assert_eq!(sizes, [1 << 20, 1 << 20, 1 << 18, 1 << 16]);
        assert!(grants[3].is_none());
        assert_eq!(grown(), budget);
        drop(grants);
        assert_eq!(grown(), 0);
        let (_, w) = &pipes[3];
        let again = grow_within(w, budget, &COUNTED);
        assert_eq!(capacity(w), Some(1 << 20));
        drop(again);
        // A pipe as large already (its grant gone: grown by someone else) costs nothing.
        let (_, big) = &pipes[0];
        assert!(grow_within(big, budget, &COUNTED).is_none());
        assert_eq!((capacity(big), grown()), (Some(1 << 20), 0));
        // Not a pipe: nothing is held.
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(grow_within(&file, budget, &COUNTED).is_none());
        assert_eq!((capacity(&file), grown()), (None, 0));
        assert!(budget_pages() > 0);
    }
}
