//! The local terminal under `ssh -t`: raw mode while the session runs, its size, and
//! the signals that change or end it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Mutex;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::termios::{self, SetArg, Termios};

use crate::proto::WinSize;

/// The terminal settings to put back, shared with the signal thread: (fd, settings).
static SAVED: Mutex<Option<(RawFd, Termios)>> = Mutex::new(None);

/// Our own handle on the terminal that was stdin, kept after stdin itself is handed over.
pub struct Terminal(OwnedFd);

impl Terminal {
    /// A handle on stdin if it is a terminal.
    pub fn stdin() -> Option<Terminal> {
        // SAFETY: fd 0 stays open for the duration of the borrow.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        if !nix::unistd::isatty(stdin).unwrap_or(false) {
            return None;
        }
        stdin.try_clone_to_owned().ok().map(Terminal)
    }

    /// Switches the terminal to raw mode until the returned guard is dropped (or
    /// [`restore`] runs from the signal thread).
    pub fn raw_mode(&self) -> Option<RawMode> {
        let original = termios::tcgetattr(self.0.as_fd()).ok()?;
        let mut raw = original.clone();
        termios::cfmakeraw(&mut raw);
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some((self.0.as_raw_fd(), original));
        termios::tcsetattr(self.0.as_fd(), SetArg::TCSADRAIN, &raw).ok()?;
        Some(RawMode(()))
    }

    fn size(&self) -> Option<WinSize> {
        window_size(self.0.as_raw_fd())
    }
}

/// Raw mode until dropped.
pub struct RawMode(());

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the terminal back as it was, if raw mode is on.
pub fn restore() {
    if let Some((fd, t)) = SAVED.lock().unwrap_or_else(|p| p.into_inner()).take() {
        // SAFETY: the descriptor belongs to the Terminal, which outlives raw mode.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = termios::tcsetattr(fd, SetArg::TCSADRAIN, &t);
    }
}

fn window_size(fd: RawFd) -> Option<WinSize> {
    // SAFETY: TIOCGWINSZ fills the struct we pass.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
        Some(WinSize {
            rows: ws.ws_row,
            cols: ws.ws_col,
            xpixel: ws.ws_xpixel,
            ypixel: ws.ws_ypixel,
        })
    } else {
        None
    }
}

/// The size of the terminal on stdin, stdout or stderr, whichever is one.
pub fn stdio_window_size() -> Option<WinSize> {
    [0, 1, 2].into_iter().find_map(window_size)
}

/// Whether stdin is a terminal whose foreground is another process group (we run as a
/// background job).
pub fn in_background() -> bool {
    // SAFETY: fd 0 stays open for the duration of the borrow.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    match nix::unistd::tcgetpgrp(stdin) {
        Ok(fg) => fg != nix::unistd::getpgrp(),
        Err(_) => false,
    }
}

/// Blocks SIGWINCH, SIGTERM and SIGHUP in this thread (and the threads it starts) and
/// handles them in a dedicated thread: a new size goes to `on_resize`; termination
/// restores the terminal and exits with ssh's failure status.
pub fn handle_signals(terminal: Terminal, on_resize: impl Fn(WinSize) + Send + 'static) {
    let mut set = SigSet::empty();
    set.add(Signal::SIGWINCH);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        loop {
            match set.wait() {
                Ok(Signal::SIGWINCH) => {
                    if let Some(size) = terminal.size() {
                        on_resize(size);
                    }
                }
                Ok(sig) => {
                    restore();
                    eprint!("Killed by signal {}.\r\n", sig as i32);
                    std::process::exit(255);
                }
                Err(_) => return,
            }
        }
    });
}
