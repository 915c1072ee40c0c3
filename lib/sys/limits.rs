//! The descriptor limit: raised for mitossh's own long-lived processes (a master holding a
//! thousand hosts needs thousands of descriptors; the common soft limit is 1024), and put
//! back for every program they start, which gets the limit it would have had without
//! mitossh (as under sshd: `ulimit -n` in a remote command says what it says over ssh).
//!
//! Also counts the descriptors open in this process, for `mitossh status` and for messages.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// The soft limit this process started with; `u64::MAX` until [`raise_descriptor_limit`]
/// ran (then children are left alone).
static ORIGINAL_SOFT: AtomicU64 = AtomicU64::new(u64::MAX);

/// The descriptor limits: soft (enforced) and hard (the ceiling for the soft one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    pub soft: u64,
    pub hard: u64,
}

fn get() -> io::Result<Limit> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Limit {
        soft: l.rlim_cur,
        hard: l.rlim_max,
    })
}

/// The current descriptor limit.
pub(crate) fn descriptor_limit() -> io::Result<Limit> {
    get()
}

/// Raises the soft descriptor limit to the hard one, once per process, and remembers the
/// original for [`restore_in_child`]. Returns the limits before and after.
pub(crate) fn raise_descriptor_limit() -> io::Result<(Limit, Limit)> {
    let before = get()?;
    // The first call records what children get back; later calls change nothing of it.
    let _ =
        ORIGINAL_SOFT.compare_exchange(u64::MAX, before.soft, Ordering::SeqCst, Ordering::SeqCst);
    if before.soft >= before.hard {
        return Ok((before, before));
    }
    let raised = libc::rlimit {
        rlim_cur: before.hard,
        rlim_max: before.hard,
    };
    // SAFETY: setrlimit reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((before, get()?))
}

/// In a `pre_exec` hook: gives the program about to run the soft descriptor limit this
/// process started with (nothing to do if it never raised its own).
///
/// # Safety
/// Only async-signal-safe calls; meant for use between fork and exec.
pub(crate) unsafe fn restore_in_child() -> io::Result<()> {
    let original = ORIGINAL_SOFT.load(Ordering::Relaxed);
    if original == u64::MAX {
        return Ok(());
    }
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit are async-signal-safe system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return Err(io::Error::last_os_error());
        }
        l.rlim_cur = original.min(l.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// How many descriptors this process has open (0 if `/proc` cannot say).
pub(crate) fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1)) // the directory's own descriptor
        .unwrap_or(0)
}

/// Whether `e` says this process (or the system) ran out of descriptors.
pub(crate) fn is_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_goes_to_the_hard_limit_and_counting_sees_new_descriptors() {
        let (before, after) = raise_descriptor_limit().unwrap();
        assert_eq!(after.soft, after.hard);
        assert_eq!(after.hard, before.hard);
        // Other tests open and close descriptors meanwhile: count ours only from below.
        let _files: Vec<_> = (0..64)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        assert!(open_descriptors() >= 64 + 3);
        assert!(is_exhaustion(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(!is_exhaustion(&io::Error::from_raw_os_error(libc::ENOENT)));
    }
}
