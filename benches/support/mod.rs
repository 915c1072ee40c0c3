//! What every benchmark here shares: the quick switch, running a command that must work,
//! medians, and the way figures are printed. Included with `#[path]` (a folder, so that
//! cargo does not take it for a benchmark of its own).

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Proc, Sshd, descendants_running};

/// `MITOSSH_BENCH_QUICK=1`: every measure shrunk, for a smoke run.
pub fn quick() -> bool {
    std::env::var_os("MITOSSH_BENCH_QUICK").is_some()
}

/// Runs `cmd` with an empty stdin; it must succeed.
pub fn run_ok(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops the ControlMaster at `control_path` (started with `ssh_args`), as its user would.
pub fn stop_control_master(control_path: &std::path::Path, ssh_args: &[String]) {
    let _ = Command::new("/usr/bin/ssh")
        .args(["-O", "exit", "-S"])
        .arg(control_path)
        .args(ssh_args)
        .stderr(Stdio::null())
        .status();
}

pub fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}x", a / b)
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The agents below `sshd` (run from their cached copy, or from a memfd).
pub fn agents_below(sshd: &Sshd) -> Vec<Proc> {
    descendants_running(sshd.pid(), "mitossh-agent")
}

/// User plus system CPU time of a process so far, from `/proc/PID/stat`.
pub fn process_cpu(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // After the command: state is field 0, utime 11, stime 12.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

/// Times a process's threads have been switched out so far (voluntary and not), from
/// `/proc/PID/task/*/status`: on a bulk path, about the number of its wake-ups.
pub fn process_switches(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// CPU time the machine has spent since boot, all cores, idle and iowait excluded.
pub fn machine_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let ticks: u64 = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .enumerate()
        // user nice system idle iowait irq softirq steal: all but idle and iowait.
        .filter(|(i, _)| ![3, 4].contains(i) && *i < 8)
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum();
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

/// The kernel's clock ticks per second, as `/proc` counts CPU time.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}
