//! Terminal calls nix has no safe wrapper for: reading and setting the window size.

use std::os::fd::{AsFd, AsRawFd};

pub(crate) use nix::pty::Winsize;

/// The window size of the terminal on `fd`; `None` if it is not a terminal or has no
/// size (zero columns).
pub(crate) fn window_size(fd: impl AsFd) -> Option<Winsize> {
    let mut ws = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize struct it is given, which we own.
    let ok = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(ws)
}

/// Sets the window size of the terminal (or pty master) on `fd`. Not a terminal: nothing
/// happens.
pub(crate) fn set_window_size(fd: impl AsFd, ws: &Winsize) {
    // SAFETY: TIOCSWINSZ reads the winsize struct it is given.
    unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, ws) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pty_has_the_size_it_is_given() {
        let ws = Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&ws), None).unwrap();
        assert_eq!(
            window_size(&pty.slave).map(|w| (w.ws_row, w.ws_col)),
            Some((24, 80))
        );
        set_window_size(
            &pty.master,
            &Winsize {
                ws_row: 50,
                ws_col: 132,
                ..ws
            },
        );
        assert_eq!(
            window_size(&pty.slave).map(|w| (w.ws_row, w.ws_col)),
            Some((50, 132))
        );
        let file = tempfile::tempfile().unwrap();
        assert!(window_size(&file).is_none());
    }
}
