//! What a child process does between fork and exec: a new session, a controlling
//! terminal, a parent-death signal, descriptors at fixed numbers, the user's descriptor
//! limit back.
//!
//! Each step is a `pre_exec` hook made only of async-signal-safe calls, registered in the
//! order the methods are called (the hooks run in that order, after the child's stdin,
//! stdout and stderr are in place), so callers build a child's setup without `unsafe`.

use std::io;
use std::os::fd::RawFd;

use nix::sys::signal::Signal;

/// Setup steps for a child about to exec, for `std::process::Command` and
/// `tokio::process::Command` alike.
pub trait ChildSetup {
    /// A new session and process group (`setsid`): no controlling terminal, untouched by
    /// the terminal's ^C, and a signal to the group reaches everything the program starts.
    fn new_session(&mut self) -> &mut Self;

    /// Makes the terminal on the child's descriptor `fd` (its stdin, stdout or stderr) its
    /// controlling terminal (`TIOCSCTTY`). Only after [`ChildSetup::new_session`].
    fn controlling_terminal(&mut self, fd: RawFd) -> &mut Self;

    /// Has the kernel send `sig` to the child when the thread that spawns it dies, and
    /// sends it at once if that thread died before the child got this far.
    fn parent_death_signal(&mut self, sig: Signal) -> &mut Self;

    /// Puts each `(fd, at)`'s descriptor `fd` (open in this process until the spawn) at
    /// number `at` in the program, open across exec. Placing one never clobbers another,
    /// whatever the numbers.
    fn place_fds<const N: usize>(&mut self, fds: [(RawFd, RawFd); N]) -> &mut Self;

    /// Gives the program the soft descriptor limit this process started with (the master
    /// and agents raise their own; the tools they start get the user's).
    fn restore_descriptor_limit(&mut self) -> &mut Self;
}

macro_rules! child_setup {
    ($command:ty) => {
        impl ChildSetup for $command {
            fn new_session(&mut self) -> &mut Self {
                // SAFETY: the hook makes only async-signal-safe calls.
                unsafe { self.pre_exec(new_session) }
            }

            fn controlling_terminal(&mut self, fd: RawFd) -> &mut Self {
                // SAFETY: as above.
                unsafe { self.pre_exec(move || controlling_terminal(fd)) }
            }

            fn parent_death_signal(&mut self, sig: Signal) -> &mut Self {
                let parent = std::process::id() as libc::pid_t;
                // SAFETY: as above.
                unsafe { self.pre_exec(move || parent_death_signal(sig, parent)) }
            }

            fn place_fds<const N: usize>(&mut self, fds: [(RawFd, RawFd); N]) -> &mut Self {
                // SAFETY: as above.
                unsafe { self.pre_exec(move || place_fds(fds)) }
            }

            fn restore_descriptor_limit(&mut self) -> &mut Self {
                // SAFETY: as above.
                unsafe { self.pre_exec(|| super::limits::restore_in_child()) }
            }
        }
    };
}

use std::os::unix::process::CommandExt as _;
child_setup!(std::process::Command);
child_setup!(tokio::process::Command);

fn result(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub(super) fn new_session() -> io::Result<()> {
    // SAFETY: setsid is async-signal-safe.
    result(unsafe { libc::setsid() })
}

pub(super) fn controlling_terminal(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument; ioctl is async-signal-safe.
    result(unsafe { libc::ioctl(fd, libc::TIOCSCTTY as _, 0) })
}

/// `parent`: this process's parent as it was before the fork.
pub(super) fn parent_death_signal(sig: Signal, parent: libc::pid_t) -> io::Result<()> {
    let sig = sig as libc::c_int;
    // SAFETY: prctl, getppid, getpid and kill are async-signal-safe.
    unsafe {
        result(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            sig as libc::c_ulong,
            0,
            0,
            0,
        ))?;
        if libc::getppid() != parent {
            // Not raise(3): musl's names the thread by its TLS, which a child started by
            // vfork shares with its parent's thread.
            libc::kill(libc::getpid(), sig);
        }
    }
    Ok(())
}

/// Copies every descriptor above the highest target first (close-on-exec), then puts the
/// copies in place: `dup2` clears close-on-exec on the placed descriptor only.
pub(super) fn place_fds<const N: usize>(fds: [(RawFd, RawFd); N]) -> io::Result<()> {
    let above = fds.iter().map(|&(_, at)| at + 1).max().unwrap_or(0);
    let mut copies = [0; N];
    for (copy, &(fd, _)) in copies.iter_mut().zip(&fds) {
        // SAFETY: fcntl is async-signal-safe; no memory is passed.
        *copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) };
        result(*copy)?;
    }
    for (&copy, &(_, at)) in copies.iter().zip(&fds) {
        // SAFETY: as above, for dup2.
        result(unsafe { libc::dup2(copy, at) })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::process::{Command, Stdio};

    #[test]
    fn descriptors_land_where_asked_even_when_swapped() {
        // Write ends placed crosswise at 3 and 4: naive dup2s in this order could clobber
        // one with the other when the pipes themselves got those numbers.
        let (r1, w1) = nix::unistd::pipe().unwrap();
        let (r2, w2) = nix::unistd::pipe().unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "echo one >&3; echo two >&4"])
            .stdout(Stdio::null())
            .place_fds([(w1.as_raw_fd(), 4), (w2.as_raw_fd(), 3)]);
        let status = cmd.status().unwrap();
        drop((w1, w2));
        assert!(status.success());
        let mut one = String::new();
        let mut two = String::new();
        std::fs::File::from(r1).read_to_string(&mut one).unwrap();
        std::fs::File::from(r2).read_to_string(&mut two).unwrap();
        assert_eq!((one.as_str(), two.as_str()), ("two\n", "one\n"));
    }

    #[test]
    fn a_new_session_leads_its_own_group() {
        // Field 6 of /proc/PID/stat is the session id; a session leader's is its pid.
        let out = Command::new("/bin/sh")
            .args(["-c", "cut -d' ' -f6 /proc/$$/stat; echo $$"])
            .new_session()
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(words.len(), 2, "{text}");
        assert_eq!(words[0], words[1], "{text}");
    }
}
