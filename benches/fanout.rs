//! 48 processes on 2 hosts started together: `mitossh run` against a Fabric-style baseline
//! of one `ssh` per process, all started in parallel. Each process prints its own start
//! time (the hosts share a clock) and sleeps 2 s. Prints the spread of start times and the
//! overhead beyond the 2 s of work, side by side.
//!
//! `cargo bench --bench fanout` (needs root: the harness starts sshd and a test user).
//! `MITOSSH_BENCH_QUICK=1` runs 12 processes instead of 48. Also prints the peak memory of
//! the `mitossh run` process (RSS and PSS from smaps_rollup, sampled every 20 ms).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const WORK: Duration = Duration::from_secs(2);
const COMMAND: &str = "date +%s%N; sleep 2";

fn epoch_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// (spread of start times, overhead beyond the work) from start stamps and the wall time.
fn figures(stamps: &[u128], wall: Duration) -> (Duration, Duration) {
    let min = *stamps.iter().min().unwrap();
    let max = *stamps.iter().max().unwrap();
    (
        Duration::from_nanos((max - min) as u64),
        wall.saturating_sub(WORK),
    )
}

fn baseline(hosts: &[&Sshd], cfg: &Path, per_host: usize) -> (Vec<u128>, Duration) {
    let t = Instant::now();
    let children: Vec<_> = hosts
        .iter()
        .flat_map(|h| (0..per_host).map(move |_| h))
        .map(|h| {
            Command::new("/usr/bin/ssh")
                .arg("-F")
                .arg(cfg)
                .arg(h.alias())
                .arg(COMMAND)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let stamps = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u128>()
                .expect("a start stamp")
        })
        .collect();
    (stamps, t.elapsed())
}

fn mitossh_run(
    hosts: &[&Sshd],
    cfg: &Path,
    per_host: usize,
    socket: Option<&Path>,
) -> (Vec<u128>, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = format!("ssh_args = [\"-F\", \"{}\"]\n", cfg.display());
    for h in hosts {
        plan.push_str(&format!(
            "[[host]]\naddress = \"{}\"\n[[host.process]]\nname = \"p\"\ncount = {per_host}\ncommand = \"{COMMAND}\"\n",
            h.alias()
        ));
    }
    let plan_file = dir.path().join("plan.toml");
    std::fs::write(&plan_file, plan).unwrap();
    let mut cmd = Command::new(bin("mitossh"));
    cmd.arg("run").arg(&plan_file).arg("--json");
    match socket {
        Some(s) => cmd.env("MITOSSH_SOCKET", s),
        None => cmd.env_remove("MITOSSH_SOCKET"),
    };
    let t = Instant::now();
    let (out, peak) = output_sampling_memory(&mut cmd);
    let wall = t.elapsed();
    println!(
        "  mitossh run, {} processes: peak RSS {:.1} MiB, PSS {:.1} MiB ({:.0} KiB PSS per process)",
        hosts.len() * per_host,
        peak.0 as f64 / 1024.0,
        peak.1 as f64 / 1024.0,
        peak.1 as f64 / (hosts.len() * per_host) as f64
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stamps = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.split_once(" | "))
        .filter_map(|(_, v)| v.trim().parse::<u128>().ok())
        .collect::<Vec<_>>();
    assert_eq!(stamps.len(), hosts.len() * per_host);
    (stamps, wall)
}

/// Runs `cmd` to the end like `output()`, sampling its memory every 20 ms; returns the
/// output and the peak (RSS, PSS) in KiB.
fn output_sampling_memory(cmd: &mut Command) -> (std::process::Output, (u64, u64)) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = (0, 0);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((rss, pss)) = memory(pid) {
                    peak = (peak.0.max(rss), peak.1.max(pss));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let out = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    (out, sampler.join().unwrap())
}

fn main() {
    // What ships is measured: masters log at the default level.
    log_as_shipped();
    let per_host = if support::quick() { 6 } else { 24 };
    let a = Sshd::start();
    let b = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = joint_config(dir.path(), &[&a, &b]);
    let hosts = [&a, &b];
    let n = 2 * per_host;
    let _ = epoch_ns();

    let (stamps, wall) = baseline(&hosts, &cfg, per_host);
    let (b_spread, b_over) = figures(&stamps, wall);
    let (stamps, wall) = mitossh_run(&hosts, &cfg, per_host, None);
    let (c_spread, c_over) = figures(&stamps, wall);
    // A master that already holds both connections, as after earlier data points.
    let master = Master::start();
    mitossh_run(&hosts, &cfg, per_host, Some(&master.socket));
    let (stamps, wall) = mitossh_run(&hosts, &cfg, per_host, Some(&master.socket));
    let (w_spread, w_over) = figures(&stamps, wall);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("{n} processes on 2 hosts, each `{COMMAND}`:");
    println!(
        "{:<44} {:>14} {:>16}",
        "", "start spread", "overhead (>2 s)"
    );
    println!(
        "{:<44} {:>11.1} ms {:>13.0} ms",
        format!("Fabric-style: {n} × ssh in parallel"),
        ms(b_spread),
        ms(b_over)
    );
    println!(
        "{:<44} {:>11.1} ms {:>13.0} ms   ({:.2}x / {:.2}x of Fabric-style)",
        "mitossh run, new master (2 connections)",
        ms(c_spread),
        ms(c_over),
        ms(c_spread) / ms(b_spread),
        ms(c_over) / ms(b_over)
    );
    println!(
        "{:<44} {:>11.1} ms {:>13.0} ms   ({:.2}x / {:.2}x of Fabric-style)",
        "mitossh run, master already connected",
        ms(w_spread),
        ms(w_over),
        ms(w_spread) / ms(b_spread),
        ms(w_over) / ms(b_over)
    );
}
