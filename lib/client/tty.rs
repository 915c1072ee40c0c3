//! The local terminal under `ssh -t`: raw mode while the session runs, and its size.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use nix::sys::termios::{self, SetArg, Termios};

use crate::proto::WinSize;

/// The terminal settings to put back, shared with the signal thread.
static SAVED: Mutex<Option<Saved>> = Mutex::new(None);

/// Terminal settings to put back, and whether they were changed for a password prompt
/// (rather than for raw mode).
struct Saved {
    /// Our own descriptor of the terminal, so it cannot close before the settings are back.
    fd: OwnedFd,
    settings: Termios,
    prompt: bool,
}

/// Our own handle on the terminal that was stdin, kept after stdin itself is handed over.
pub(crate) struct Terminal(OwnedFd);

impl Terminal {
    /// A handle on stdin if it is a terminal.
    pub(crate) fn stdin() -> Option<Terminal> {
        let stdin = io::stdin();
        let stdin = stdin.as_fd();
        if !nix::unistd::isatty(stdin).unwrap_or(false) {
            return None;
        }
        stdin.try_clone_to_owned().ok().map(Terminal)
    }

    /// Switches the terminal to raw mode until the returned guard is dropped (or
    /// [`restore`] runs from the signal thread, see `shim::signals`).
    pub(crate) fn raw_mode(&self) -> Option<RawMode> {
        let original = termios::tcgetattr(self.0.as_fd()).ok()?;
        let mut raw = original.clone();
        termios::cfmakeraw(&mut raw);
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(Saved {
            fd: self.0.try_clone().ok()?,
            settings: original,
            prompt: false,
        });
        termios::tcsetattr(self.0.as_fd(), SetArg::TCSADRAIN, &raw).ok()?;
        Some(RawMode(()))
    }

    /// The terminal's window size.
    pub(crate) fn size(&self) -> Option<WinSize> {
        window_size(&self.0)
    }
}

/// Raw mode until dropped.
pub(crate) struct RawMode(());

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = restore();
    }
}

/// Remembers `settings` as the ones to put back on `fd` if a signal ends the shim during
/// a password prompt (echo is off); [`forget`] once they are back.
pub(crate) fn remember(fd: BorrowedFd<'_>, settings: Termios) {
    let Ok(fd) = fd.try_clone_to_owned() else {
        return;
    };
    *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(Saved {
        fd,
        settings,
        prompt: true,
    });
}

/// Drops what [`remember`] kept, without touching the terminal.
pub(crate) fn forget() {
    SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
}

/// Puts the terminal back as it was, if raw mode (or a prompt) changed it. Returns
/// whether a password prompt was interrupted.
pub(crate) fn restore() -> bool {
    // Held while the settings are written: one writer at a time.
    let mut guard = SAVED.lock().unwrap_or_else(|p| p.into_inner());
    let Some(saved) = guard.take() else {
        return false;
    };
    let _ = termios::tcsetattr(&saved.fd, SetArg::TCSADRAIN, &saved.settings);
    saved.prompt
}

fn window_size(fd: impl AsFd) -> Option<WinSize> {
    crate::sys::term::window_size(fd).map(|ws| WinSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
        xpixel: ws.ws_xpixel,
        ypixel: ws.ws_ypixel,
    })
}

/// The size of the terminal on stdin, stdout or stderr, whichever is one.
pub(crate) fn stdio_window_size() -> Option<WinSize> {
    window_size(io::stdin())
        .or_else(|| window_size(io::stdout()))
        .or_else(|| window_size(io::stderr()))
}

/// Whether stdin is a terminal whose foreground is another process group (we run as a
/// background job).
pub(crate) fn in_background() -> bool {
    match nix::unistd::tcgetpgrp(io::stdin()) {
        Ok(fg) => fg != nix::unistd::getpgrp(),
        Err(_) => false,
    }
}
