//! The local terminal under `ssh -t`: raw mode while the session runs, its size, and
//! the signals that change or end it.

use std::os::fd::BorrowedFd;
use std::sync::Mutex;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::termios::{self, SetArg, Termios};

use crate::proto::WinSize;

/// The terminal settings to put back, shared with the signal thread.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

fn stdin() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(0) }
}

/// Raw mode on stdin until dropped (or until [`restore`] runs).
pub struct RawMode(());

impl RawMode {
    /// Switches stdin to raw mode; `None` if it is not a terminal.
    pub fn enter() -> Option<RawMode> {
        let original = termios::tcgetattr(stdin()).ok()?;
        let mut raw = original.clone();
        termios::cfmakeraw(&mut raw);
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(original);
        termios::tcsetattr(stdin(), SetArg::TCSADRAIN, &raw).ok()?;
        Some(RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the terminal back as it was, if raw mode is on.
pub fn restore() {
    if let Some(t) = SAVED.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = termios::tcsetattr(stdin(), SetArg::TCSADRAIN, &t);
    }
}

/// The size of the terminal on stdin, stdout or stderr, whichever is one.
pub fn window_size() -> Option<WinSize> {
    for fd in [0, 1, 2] {
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ fills the struct we pass.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
            return Some(WinSize {
                rows: ws.ws_row,
                cols: ws.ws_col,
                xpixel: ws.ws_xpixel,
                ypixel: ws.ws_ypixel,
            });
        }
    }
    None
}

/// Blocks SIGWINCH, SIGTERM and SIGHUP in this thread (and the threads it starts) and
/// handles them in a dedicated thread: a new size goes to `on_resize`; termination
/// restores the terminal and exits with ssh's failure status.
pub fn handle_signals(on_resize: impl Fn(WinSize) + Send + 'static) {
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
                    if let Some(size) = window_size() {
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
