//! How the shim ends on a signal, as OpenSSH 9's ssh does. SIGHUP, SIGINT, SIGQUIT and
//! SIGTERM (each unless it was ignored at the start, as under `nohup` or in a script's
//! background job):
//! put the terminal back and exit with 255, saying `Killed by signal N.` at log level
//! VERBOSE and above (`-v`). Without a remote command (`-N`, `-W`) SIGTERM is a deliberate
//! end: status 0, silently. Exiting closes the connection to the master, which stops the
//! remote command (plain ssh leaves it running). At a password prompt, as ssh's own
//! prompt does, the terminal is put back and the shim dies by the signal, so that a
//! script's loop stops on ^C.
//!
//! With a terminal, SIGWINCH sends the new window size once the session runs.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;

use crate::client::Waiter;
use crate::client::tty::{self, Terminal};
use crate::proto::SSH_ERROR;
use crate::proto::WinSize;
use crate::sys::process::{default_action, is_ignored, signals_to_pipe};

/// The signals that end an ssh session.
const ENDING: [Signal; 4] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
];

/// Whether the session runs (set once, by [`session_started`]); before, the master has
/// nowhere to send a new window size.
static SESSION: AtomicBool = AtomicBool::new(false);

/// What ssh's end looks like for this invocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ending {
    /// Log level VERBOSE or above: say which signal it was.
    pub verbose: bool,
    /// No remote command or shell (`-N`, `-W`): SIGTERM ends with status 0.
    pub no_shell: bool,
}

impl Ending {
    /// The exit status for `sig` once the session runs.
    pub(crate) fn status(self, sig: Signal) -> i32 {
        if self.no_shell && sig == Signal::SIGTERM {
            0
        } else {
            SSH_ERROR
        }
    }

    /// What to print for `sig`, if anything. ssh's log lines end in CR LF.
    pub(crate) fn message(self, sig: Signal) -> Option<String> {
        (self.verbose && self.status(sig) != 0)
            .then(|| format!("Killed by signal {}.\r\n", sig as i32))
    }
}

/// Handles the signals from now on: while the shim waits for the master, on its main
/// thread ([`WAITER`]); before it blocks on anything else, in a thread of their own.
/// Install it before the session is requested: the remote command may start (and print)
/// before the shim hears that it did, and a signal in between must end the session like
/// any other.
pub(crate) fn handle(
    ending: Ending,
    terminal: Option<Arc<Terminal>>,
    on_resize: impl Fn(WinSize) + Send + 'static,
) {
    let mut signals: Vec<Signal> = ENDING.into_iter().filter(|s| !is_ignored(*s)).collect();
    if terminal.is_some() {
        signals.push(Signal::SIGWINCH);
    }
    let pipe = match signals_to_pipe(&signals) {
        Ok(pipe) => pipe,
        Err(e) => {
            tracing::warn!("cannot handle signals: {e}");
            // Those it did catch would go to a pipe nobody reads.
            restore_defaults(&signals);
            return;
        }
    };
    *watch() = Some(Watch {
        pipe: std::fs::File::from(pipe),
        signals,
        ending,
        terminal,
        on_resize: Box::new(on_resize),
    });
}

/// How the shim waits for the master once [`handle`] was called.
pub(crate) static WAITER: Waiter = Waiter {
    until_readable,
    elsewhere: to_thread,
};

/// Serves the signals on this thread for good (`-N`: nothing else to wait for).
pub(crate) fn serve() -> ! {
    let watch = watch().take();
    if let Some(watch) = watch {
        watch.serve();
    }
    loop {
        std::thread::park();
    }
}

/// The signals and how to act on them, held by whoever waits for them: the main thread
/// while it is here, else the thread [`to_thread`] started.
struct Watch {
    /// Where the handler writes each signal's number.
    pipe: std::fs::File,
    /// The signals it catches.
    signals: Vec<Signal>,
    ending: Ending,
    terminal: Option<Arc<Terminal>>,
    on_resize: Box<dyn Fn(WinSize) + Send>,
}

/// One lock for one owner at a time: the main thread takes it while it polls, and
/// [`to_thread`] moves the watch out of it.
fn watch() -> std::sync::MutexGuard<'static, Option<Watch>> {
    static WATCH: Mutex<Option<Watch>> = Mutex::new(None);
    WATCH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Watch {
    /// Acts on the next signal in the pipe; `false` once the pipe is gone.
    fn next(&self) -> bool {
        let mut byte = [0u8; 1];
        match (&self.pipe).read(&mut byte) {
            Ok(1) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return true,
            _ => return false,
        }
        let Ok(sig) = Signal::try_from(i32::from(byte[0])) else {
            return true;
        };
        if sig == Signal::SIGWINCH {
            if let Some(size) = self.terminal.as_deref().and_then(Terminal::size)
                && SESSION.load(Ordering::SeqCst)
            {
                (self.on_resize)(size);
            }
            return true;
        }
        if tty::restore() {
            die_by(sig);
        }
        if let Some(message) = self.ending.message(sig) {
            eprint!("{message}");
        }
        std::process::exit(self.ending.status(sig));
    }

    /// Acts on every signal until the pipe is gone (it never is).
    fn serve(self) {
        while self.next() {}
    }
}

/// Waits for `fd` to be readable, acting on the signals that come meanwhile.
fn until_readable(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let watch = watch();
    let Some(signals) = watch.as_ref() else {
        return Ok(());
    };
    loop {
        let mut polled = [
            PollFd::new(fd, PollFlags::POLLIN),
            PollFd::new(signals.pipe.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut polled, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready = |p: &PollFd| p.revents().is_some_and(|r| !r.is_empty());
        let (readable, signalled) = (ready(&polled[0]), ready(&polled[1]));
        if signalled && !signals.next() {
            // The pipe is gone (it never is): wait by reading alone.
            return Ok(());
        }
        if readable {
            return Ok(());
        }
    }
}

/// The shim is about to block elsewhere: the signals get a thread of their own.
fn to_thread() {
    let watch = watch().take();
    if let Some(watch) = watch {
        std::thread::spawn(move || watch.serve());
    }
}

/// Before this process becomes the real ssh: the signals get their default actions back
/// (as exec would give them), and one that came meanwhile is acted on now rather than
/// lost with the pipe.
pub(crate) fn before_exec() {
    let watch = watch().take();
    let Some(watch) = watch else {
        return;
    };
    restore_defaults(&watch.signals);
    let mut polled = [PollFd::new(watch.pipe.as_fd(), PollFlags::POLLIN)];
    while poll(&mut polled, PollTimeout::ZERO).is_ok_and(|n| n > 0) && watch.next() {}
}

/// The session runs: window-size changes go to it from now on.
pub(crate) fn session_started() {
    SESSION.store(true, Ordering::SeqCst);
}

/// The default actions of `signals` back (none of ours was ignored at the start).
fn restore_defaults(signals: &[Signal]) {
    signals.iter().copied().for_each(default_action);
}

/// Dies by `sig`, its default action restored.
fn die_by(sig: Signal) -> ! {
    default_action(sig);
    let _ = nix::sys::signal::raise(sig);
    std::process::exit(128 + sig as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_as_openssh_9_does() {
        let quiet = Ending::default();
        assert_eq!(quiet.status(Signal::SIGINT), 255);
        assert_eq!(quiet.message(Signal::SIGINT), None);
        let verbose = Ending {
            verbose: true,
            no_shell: false,
        };
        assert_eq!(verbose.status(Signal::SIGTERM), 255);
        assert_eq!(
            verbose.message(Signal::SIGHUP).as_deref(),
            Some("Killed by signal 1.\r\n")
        );
        let forwards = Ending {
            verbose: true,
            no_shell: true,
        };
        assert_eq!(forwards.status(Signal::SIGTERM), 0);
        assert_eq!(forwards.message(Signal::SIGTERM), None);
        assert_eq!(forwards.status(Signal::SIGINT), 255);
    }
}
