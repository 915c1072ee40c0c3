//! Process control: parent-death signals, process groups, signal names and exit statuses.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::proto::ExitStatus;

/// In a `pre_exec` hook: have the kernel send `sig` to this process when its parent thread
/// dies, and close the race where the parent died before the call.
///
/// # Safety
/// Only async-signal-safe calls; meant for use between fork and exec.
pub unsafe fn set_parent_death_signal(
    sig: libc::c_int,
    expected_parent: libc::pid_t,
) -> io::Result<()> {
    // SAFETY: prctl and getppid are async-signal-safe.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::getppid() != expected_parent {
            libc::raise(sig);
        }
    }
    Ok(())
}

/// In a `pre_exec` hook: makes `fd` descriptor number `at` in the new program, open across
/// exec. (dup2 clears close-on-exec on the copy, but does nothing if `fd == at`.)
///
/// # Safety
/// Only async-signal-safe calls; meant for use between fork and exec.
pub unsafe fn place_fd(fd: libc::c_int, at: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl and dup2 are async-signal-safe.
    let ok = unsafe {
        if fd == at {
            libc::fcntl(at, libc::F_SETFD, 0) >= 0
        } else {
            libc::dup2(fd, at) >= 0
        }
    };
    if ok {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `sig` to every process of the group `pgid`. A group that no longer exists is fine.
pub fn kill_group(pgid: u32, sig: Signal) {
    let _ = nix::sys::signal::killpg(Pid::from_raw(pgid as i32), sig);
}

/// Sends `sig` to one process. A process that no longer exists is fine.
pub fn kill(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), sig);
}

/// The name of a signal without its `SIG` prefix, as ssh's exit-signal names it.
pub fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => s.as_str().trim_start_matches("SIG").to_string(),
        Err(_) => format!("{sig}"),
    }
}

/// Parses a signal name with or without `SIG` prefix, or a number.
pub fn signal_from_name(name: &str) -> Option<Signal> {
    if let Ok(n) = name.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}

/// Whether `sig` is ignored (SIG_IGN) in this process, as a shell leaves SIGINT for a
/// background job or nohup leaves SIGHUP.
pub fn is_ignored(sig: Signal) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig as libc::c_int, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Where [`signals_to_pipe`]'s handler writes; -1 until it is installed.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn write_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    let byte = sig as u8;
    // SAFETY: errno access and write(2) are async-signal-safe; errno is put back so the
    // interrupted code does not see ours.
    unsafe {
        let errno = *libc::__errno_location();
        libc::write(fd, (&byte as *const u8).cast(), 1);
        *libc::__errno_location() = errno;
    }
}

/// Replaces the action of `signals` by a handler that writes each signal's number (one
/// byte) to a pipe, and returns the pipe's read end: a thread can then act on a signal
/// outside signal context, whichever thread it was delivered to. Once per process; the
/// handlers do not survive exec.
pub fn signals_to_pipe(signals: &[Signal]) -> io::Result<OwnedFd> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // A full pipe must never block the handler (a burst of signals needs only one byte).
    fcntl(&write, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    SIGNAL_PIPE.store(write.as_raw_fd(), Ordering::Relaxed);
    std::mem::forget(write);
    let action = SigAction::new(
        SigHandler::Handler(write_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for &sig in signals {
        // SAFETY: the handler only makes async-signal-safe calls.
        unsafe { sigaction(sig, &action) }?;
    }
    Ok(read)
}

/// Converts how a child ended into the protocol's form.
pub fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        ExitStatus::Code(code)
    } else if let Some(sig) = status.signal() {
        ExitStatus::Signal {
            signal: signal_name(sig),
            core_dumped: status.core_dumped(),
        }
    } else {
        ExitStatus::Code(255)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_roundtrip() {
        assert_eq!(signal_name(libc::SIGTERM), "TERM");
        assert_eq!(signal_from_name("TERM"), Some(Signal::SIGTERM));
        assert_eq!(signal_from_name("sigint"), Some(Signal::SIGINT));
        assert_eq!(signal_from_name("9"), Some(Signal::SIGKILL));
        assert_eq!(signal_from_name("NOPE"), None);
    }
}
