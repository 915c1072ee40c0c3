//! Process control: process groups, whether a process exists, signal names and
//! dispositions. (What a child does before exec is [`super::spawn`].)

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::unistd::Pid;

/// Sends `sig` to every process of the group `pgid`. A group that no longer exists is fine.
pub(crate) fn kill_group(pgid: u32, sig: Signal) {
    let _ = nix::sys::signal::killpg(Pid::from_raw(pgid as i32), sig);
}

/// Sends `sig` to one process. A process that no longer exists is fine.
pub(crate) fn kill(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), sig);
}

/// Whether process `pid` exists (perhaps another user's).
pub(crate) fn exists(pid: i32) -> bool {
    match nix::sys::signal::kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

/// The name of a signal without its `SIG` prefix, as ssh's exit-signal names it.
pub(crate) fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => s.as_str().trim_start_matches("SIG").to_string(),
        Err(_) => format!("{sig}"),
    }
}

/// Parses a signal name with or without `SIG` prefix, or a number.
pub(crate) fn signal_from_name(name: &str) -> Option<Signal> {
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
pub(crate) fn is_ignored(sig: Signal) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig as libc::c_int, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Gives `sig` its default action back (a handler installed earlier goes).
pub(crate) fn default_action(sig: Signal) {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: the default action runs no code of ours in signal context.
    let _ = unsafe { sigaction(sig, &default) };
}

/// Signals ignored for as long as this lives (as system(3) ignores SIGINT and SIGQUIT
/// while it waits); their previous actions come back when it is dropped.
pub(crate) struct Ignored {
    previous: Vec<(Signal, SigAction)>,
}

impl Ignored {
    pub(crate) fn new(signals: &[Signal]) -> Ignored {
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        let previous = signals
            .iter()
            // SAFETY: SIG_IGN runs no code in signal context.
            .filter_map(|&sig| Some((sig, unsafe { sigaction(sig, &ignore) }.ok()?)))
            .collect();
        Ignored { previous }
    }
}

impl Drop for Ignored {
    fn drop(&mut self) {
        for (sig, action) in &self.previous {
            // SAFETY: putting back the actions we replaced.
            let _ = unsafe { sigaction(*sig, action) };
        }
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
pub(crate) fn signals_to_pipe(signals: &[Signal]) -> io::Result<OwnedFd> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
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
