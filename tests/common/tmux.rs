//! A private tmux server for tests of interactive sessions: a real terminal emulator we
//! can type into (`send-keys`), look at (`capture-pane`) and resize. Each instance has its
//! own socket, and its server is killed by pid when dropped.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::procs::send_signal;
use super::wait::wait_until;

pub struct Tmux {
    socket: PathBuf,
    pid: i32,
    _dir: tempfile::TempDir,
}

impl Tmux {
    /// Starts a `cols`×`rows` session running `command` (through `sh -c`).
    pub fn start(cols: u16, rows: u16, command: &str) -> Tmux {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let ok = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["-f", "/dev/null", "new-session", "-d", "-s", "t"])
            .args(["-x", &cols.to_string(), "-y", &rows.to_string()])
            .arg(command)
            .status()
            .expect("tmux is installed (scripts/prepare installs it)");
        assert!(ok.success(), "tmux new-session failed");
        let mut t = Tmux {
            pid: 0,
            socket,
            _dir: dir,
        };
        t.pid = t.query("#{pid}").trim().parse().expect("tmux server pid");
        // Keep the pane (and what it shows) after its program exits.
        t.tmux(&["set-option", "-g", "remain-on-exit", "on"]);
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn query(&self, format: &str) -> String {
        self.tmux(&["display-message", "-p", "-t", "t", format])
    }

    /// Types `text` literally, then Enter.
    pub fn type_line(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", text]);
        self.tmux(&["send-keys", "-t", "t", "Enter"]);
    }

    /// Sends key names (`C-c`, `Enter`, …).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// What the pane shows, scrollback included.
    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-S", "-2000", "-t", "t"])
    }

    /// Waits (bounded) until the pane shows `needle`; panics with the screen otherwise.
    pub fn wait_for(&self, needle: &str, timeout: Duration) {
        let mut screen = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(timeout, &format!("{needle:?} on screen"), || {
                screen = self.screen();
                screen.contains(needle)
            })
        }));
        if found.is_err() {
            panic!("{needle:?} never appeared; the screen:\n{}", self.screen());
        }
    }

    /// Whether the pane's program has exited.
    pub fn exited(&self) -> bool {
        self.query("#{pane_dead}").trim() == "1"
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        self.tmux(&[
            "resize-window",
            "-t",
            "t",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
        ]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if self.pid > 0 {
            send_signal(self.pid, libc::SIGTERM);
        }
    }
}
