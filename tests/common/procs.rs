//! Process inspection from `/proc` for leak tests: list processes, find the ones a test started (by marker,
//! user or ancestry), and wait, bounded, until they are gone.

use std::fs;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use super::wait::POLL;

/// Sends signal `sig` to process `pid` (kill(2)); a process already gone is fine.
pub fn send_signal(pid: i32, sig: i32) {
    if let Ok(sig) = nix::sys::signal::Signal::try_from(sig) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// One process, as `/proc` showed it when scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    /// Real user id.
    pub uid: u32,
    /// Argument vector; empty for kernel threads. Processes that retitle themselves (sshd) show the new title.
    pub cmdline: Vec<String>,
    /// Target of `/proc/<pid>/exe`, when readable.
    pub exe: Option<PathBuf>,
    /// State letter from `/proc/<pid>/stat`: R, S, D, T, t, ... (zombies are never listed).
    pub state: char,
    /// Start time in clock ticks since boot: together with `pid` it identifies the process despite pid reuse.
    pub start_time: u64,
}

impl Proc {
    /// Whether this very process (same pid and start time) still runs; a zombie counts as gone.
    pub fn is_alive(&self) -> bool {
        read_proc(self.pid).is_some_and(|now| now.start_time == self.start_time)
    }

    /// The command line joined with spaces, for messages and substring matching.
    pub fn command(&self) -> String {
        self.cmdline.join(" ")
    }
}

/// Every living process (zombies are skipped: they have exited). Processes that vanish mid-scan are skipped.
pub fn all_processes() -> Vec<Proc> {
    let Ok(entries) = fs::read_dir("/proc") else {
        panic!("cannot read /proc: the leak tests need a Linux /proc")
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(read_proc)
        .collect()
}

/// The living processes for which `f` is true.
pub fn processes_matching(f: impl Fn(&Proc) -> bool) -> Vec<Proc> {
    all_processes().into_iter().filter(|p| f(p)).collect()
}

/// The descendants of `pid` whose executable's path contains `exe`.
pub fn descendants_running(pid: i32, exe: &str) -> Vec<Proc> {
    descendants(pid)
        .into_iter()
        .filter(|p| {
            p.exe
                .as_ref()
                .is_some_and(|e| e.to_string_lossy().contains(exe))
        })
        .collect()
}

/// The living descendants of `pid` (children, grandchildren, ...), not `pid` itself.
pub fn descendants(pid: i32) -> Vec<Proc> {
    let all = all_processes();
    let mut found: Vec<Proc> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for p in all.iter().filter(|p| p.ppid == parent) {
            frontier.push(p.pid);
            found.push(p.clone());
        }
    }
    found
}

/// Waits until no living process matches `f`; after `timeout` panics listing the survivors.
pub fn wait_until_none(timeout: Duration, what: &str, f: impl Fn(&Proc) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let survivors = processes_matching(&f);
        if survivors.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            let list: Vec<String> = survivors
                .iter()
                .map(|p| {
                    format!(
                        "  pid {} ppid {} uid {} [{}] {}",
                        p.pid,
                        p.ppid,
                        p.uid,
                        p.state,
                        p.command()
                    )
                })
                .collect();
            panic!(
                "{what}: still running after {timeout:?}:\n{}",
                list.join("\n")
            );
        }
        thread::sleep(POLL);
    }
}

/// The process `pid`, if it is alive (not a zombie).
pub fn process(pid: i32) -> Option<Proc> {
    read_proc(pid)
}

/// Reads one process; `None` if it is gone, a zombie, or unreadable.
fn read_proc(pid: i32) -> Option<Proc> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    if state == 'Z' || state == 'X' {
        return None;
    }
    let ppid = fields.get(1)?.parse().ok()?;
    let start_time = fields.get(19)?.parse().ok()?; // field 22 of stat(5)
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut cmdline: Vec<String> = raw
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    while cmdline.last().is_some_and(String::is_empty) {
        cmdline.pop(); // the terminating NUL, and the padding of retitled processes
    }
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok();
    Some(Proc {
        pid,
        ppid,
        uid,
        cmdline,
        exe,
        state,
        start_time,
    })
}

/// Whether a process named `marker` (its argv[0], as `exec -a` sets it) is blocked
/// writing into a full pipe: flow control holding a remote writer back.
pub fn blocked_writing_a_pipe(marker: &str) -> bool {
    processes_matching(|p| p.cmdline.first().is_some_and(|a| a == marker))
        .iter()
        .any(|p| {
            std::fs::read_to_string(format!("/proc/{}/wchan", p.pid))
                .is_ok_and(|w| w.ends_with("pipe_write"))
        })
}

/// A child of the test's own, stopped however the test ends (SIGTERM, a bounded wait,
/// then SIGKILL): a failed assertion must not leave it running.
pub struct StopOnDrop(pub std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        send_signal(self.0.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(POLL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
