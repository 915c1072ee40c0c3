//! A pseudo-terminal for tests that need a program to believe a person is at the keyboard:
//! the program gets the slave as stdin, stdout, stderr and controlling terminal; a thread
//! collects everything it writes, and waits on that are bounded.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mitossh::ChildSetup;

use super::wait::wait_until;

pub struct Terminal {
    writer: std::fs::File,
    seen: Arc<Mutex<Vec<u8>>>,
    /// Set once the reader saw the last slave descriptor close.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Terminal {
    /// Spawns `cmd` on a new pty (rows × cols) and starts collecting its output.
    pub fn spawn(cmd: &mut Command, rows: u16, cols: u16) -> (Terminal, Child) {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).unwrap();
        cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave));
        // The pty becomes the programs' /dev/tty.
        cmd.new_session().controlling_terminal(0);
        let child = cmd.spawn().unwrap();
        // Let go of our copies of the slave, so the terminal closes with its programs.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let master = pty.master;
        let writer = std::fs::File::from(master.try_clone().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let collected = seen.clone();
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = closed.clone();
        std::thread::spawn(move || {
            let mut reader = std::fs::File::from(master);
            let mut buf = [0u8; 4096];
            // EIO once the slave is closed everywhere: the program is gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                collected.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        (
            Terminal {
                writer,
                seen,
                closed,
            },
            child,
        )
    }

    /// Everything the program wrote so far, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Waits (bounded) until the output contains `needle`.
    pub fn expect(&self, needle: &str, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while !self.text().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {needle:?} on the terminal; it shows:\n{:?}",
                self.text()
            );
            std::thread::sleep(super::wait::POLL);
        }
    }

    /// Waits (bounded) until every program holding the terminal has closed it, so that
    /// [`Terminal::text`] holds all they wrote.
    pub fn wait_closed(&self, timeout: Duration) {
        wait_until(timeout, "the terminal to be closed by its programs", || {
            self.closed.load(std::sync::atomic::Ordering::SeqCst)
        });
    }

    /// Types `keys`.
    pub fn send(&mut self, keys: &[u8]) {
        self.writer.write_all(keys).unwrap();
    }

    pub fn fd(&self) -> i32 {
        self.writer.as_raw_fd()
    }

    /// A descriptor of the pty master of its own, to look at the terminal's settings
    /// while the terminal is in use.
    pub fn dup_fd(&self) -> std::os::fd::OwnedFd {
        self.writer.try_clone().expect("dup the pty master").into()
    }
}
