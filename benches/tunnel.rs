//! Side-by-side benchmark: mitossh's shim against plain ssh and an OpenSSH ControlMaster,
//! all against the same private loopback sshd, in one run. Prints times and ratios;
//! absolute numbers on a shared machine mean little, the ratios are the point.
//!
//! The masters carry the agent images as they ship (`scripts/build-agents`, built first
//! if need be). Besides loopback: the images' sizes, the agent's memory (RSS and PSS)
//! idle and after the calls, and connects over an emulated WAN (50 ms round trip,
//! 20 Mbit/s; `common::wan`): cold, with the agent cached, per call, and the bytes a
//! cold connect sends. Bulk throughput is `benches/datapath`'s.
//!
//! `cargo bench --bench tunnel` (needs root: the harness starts sshd and a test user).
//! `MITOSSH_BENCH_QUICK=1` shrinks every measure for a smoke run.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mitossh::{AgentImage, Arch};
use support::{agents_below, median, ms, quick, ratio, run_ok, stop_control_master};

struct Setup {
    sshd: Sshd,
    control_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn plain(s: &Setup) -> Command {
    let mut c = Command::new("/usr/bin/ssh");
    c.args(s.sshd.ssh_args());
    c
}

fn control_master(s: &Setup) -> Command {
    let mut c = Command::new("/usr/bin/ssh");
    c.arg("-S").arg(&s.control_path).args(s.sshd.ssh_args());
    c
}

fn shim(m: &Master, s: &Setup) -> Command {
    let mut c = m.ssh();
    c.args(s.sshd.ssh_args());
    c
}

/// Times `n` sequential runs; returns every duration.
fn times(n: usize, mut make: impl FnMut() -> Command) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            run_ok(&mut make());
            t.elapsed()
        })
        .collect()
}

fn print_agent_memory(what: &str, sshd: &Sshd) {
    for agent in agents_below(sshd) {
        let (rss, pss) = memory(agent.pid).unwrap_or_default();
        println!("  agent {what:<28} RSS {rss:>6} KiB   PSS {pss:>6} KiB   (goal RSS <= 4096 KiB)");
    }
}

/// The images the masters carry, raw and as sent.
fn print_images() {
    println!("agent images (scripts/build-agents), as a master sends them:");
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let path = shipped_agent(arch.name());
        let image = AgentImage::new(arch, std::fs::read(&path).unwrap().into(), path);
        let xz = shipped_agents().join(format!("{}.xz", image.file_name()));
        println!(
            "  {:<8} {:>6} KiB as it is   {:>6} KiB gzip   {:>6} KiB xz",
            arch.name(),
            image.bytes.len() >> 10,
            image.gzip().len() >> 10,
            std::fs::metadata(xz).map_or(0, |m| m.len() >> 10)
        );
    }
    println!(
        "  (the master, which was once the image: {} KiB)",
        std::fs::metadata(bin("mitossh")).unwrap().len() >> 10
    );
    println!();
}

fn main() {
    // What ships is measured: masters log at the default level.
    log_as_shipped();
    // `cargo bench` passes --bench; nothing else is accepted.
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start();
    let setup = Setup {
        control_path: dir.path().join("cm"),
        sshd,
        _dir: dir,
    };
    let n = if quick() { 10 } else { 100 };

    // The ControlMaster, started as ssh users do, stopped by `-O exit` at the end.
    run_ok(
        Command::new("/usr/bin/ssh")
            .args(["-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-S"])
            .arg(&setup.control_path)
            .args(setup.sshd.ssh_args())
            .arg("true"),
    );

    println!("mitossh benchmark: loopback sshd, {} cores", num_cpus());
    println!();

    let master = Master::start_with_agents(shipped_agents());
    run_ok(shim(&master, &setup).arg("true")); // context up, agent cached
    latency(&setup, &master, n);
    new_context_connect(&setup);
    print_agent_memory("idle, after the calls", &setup.sshd);
    legacy_script(&setup, &master);

    stop_control_master(&setup.control_path, &setup.sshd.ssh_args());
}

/// Per-invocation latency: `ssh host true` in a row, plain, through a ControlMaster and
/// through mitossh (whose context is up).
fn latency(setup: &Setup, master: &Master, n: usize) {
    let lat_plain = median(times(n, || {
        let mut c = plain(setup);
        c.arg("true");
        c
    }));
    let lat_cm = median(times(n, || {
        let mut c = control_master(setup);
        c.arg("true");
        c
    }));
    let lat_shim = median(times(n, || {
        let mut c = shim(master, setup);
        c.arg("true");
        c
    }));
    println!("{n} sequential `ssh host true`, median per call:");
    println!("  plain ssh      {:>10}", ms(lat_plain));
    println!("  ControlMaster  {:>10}", ms(lat_cm));
    println!(
        "  mitossh        {:>10}   = {} of ControlMaster, {} of plain ssh (goal <= 0.50x CM)",
        ms(lat_shim),
        ratio(lat_shim.as_secs_f64(), lat_cm.as_secs_f64()),
        ratio(lat_shim.as_secs_f64(), lat_plain.as_secs_f64())
    );
    println!();
}

/// The first call on a new context, with the agent uploaded and with it cached, and the
/// same over an emulated WAN.
fn new_context_connect(setup: &Setup) {
    print_images();
    print_agent_memory("idle, after one call", &setup.sshd);
    let rounds = if quick() { 2 } else { 5 };
    let fresh = FreshHost::start("");
    let (mut plain, mut cold, mut cached) = (Vec::new(), Vec::new(), Vec::new());
    let timed = |cmd: &mut Command| {
        let t = Instant::now();
        run_ok(cmd.args(fresh.sshd.ssh_args()).arg("true"));
        t.elapsed()
    };
    for _ in 0..rounds {
        // The same host as the connects (its sshd runs in a mount namespace of its own).
        plain.push(timed(&mut Command::new("/usr/bin/ssh")));
        fresh.forget_agents();
        cold.push(timed(
            &mut Master::start_with_agents(shipped_agents()).ssh(),
        ));
        cached.push(timed(
            &mut Master::start_with_agents(shipped_agents()).ssh(),
        ));
    }
    let (lat_plain, cold, cached) = (median(plain), median(cold), median(cached));
    println!("first call on a new context (connect + agent + `true`), median of {rounds}:");
    println!("  plain `ssh host true`   {:>10}", ms(lat_plain));
    println!(
        "  mitossh, agent uploaded {:>10}   = {} of ssh true",
        ms(cold),
        ratio(cold.as_secs_f64(), lat_plain.as_secs_f64())
    );
    println!(
        "  mitossh, agent cached   {:>10}   = {} of ssh true (goal <= 1.05x)",
        ms(cached),
        ratio(cached.as_secs_f64(), lat_plain.as_secs_f64())
    );
    println!();
    wan_connects(&fresh, rounds);
}

/// A legacy shell script: `ssh host cmd` in a loop and in the background.
fn legacy_script(setup: &Setup, master: &Master) {
    let (loops, concurrent) = if quick() { (20, 10) } else { (200, 50) };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/legacy.sh");
    let cfg = setup.sshd.ssh_config().display().to_string();
    let run_script = |mut cmd: Command, opts: String| -> Duration {
        let out_dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        run_ok(
            cmd.args([
                script,
                setup.sshd.alias(),
                &loops.to_string(),
                &concurrent.to_string(),
            ])
            .arg(out_dir.path())
            .env("SSH_OPTS", opts),
        );
        t.elapsed()
    };
    let mut plain_sh = Command::new("sh");
    plain_sh.env("PATH", "/usr/bin:/bin");
    let s_plain = run_script(plain_sh, format!("-F {cfg}"));
    let mut cm_sh = Command::new("sh");
    cm_sh.env("PATH", "/usr/bin:/bin");
    let s_cm = run_script(
        cm_sh,
        format!("-F {cfg} -S {}", setup.control_path.display()),
    );
    let s_shim = run_script(master.command("sh"), format!("-F {cfg}"));
    println!();
    println!("a script with {loops} `ssh host cmd` in a loop and {concurrent} in the background:");
    println!("  plain ssh      {:>8.2} s", s_plain.as_secs_f64());
    println!("  ControlMaster  {:>8.2} s", s_cm.as_secs_f64());
    println!(
        "  mitossh        {:>8.2} s   = {} of ControlMaster, {} of plain ssh",
        s_shim.as_secs_f64(),
        ratio(s_shim.as_secs_f64(), s_cm.as_secs_f64()),
        ratio(s_shim.as_secs_f64(), s_plain.as_secs_f64())
    );
}

/// Connects over an emulated WAN to `host`: plain `ssh host true`, a ControlMaster's
/// call, and mitossh's first call with nothing cached, with the agent cached, and then
/// per call; with the bytes each first call sent and received.
fn wan_connects(host: &FreshHost, rounds: usize) {
    let link = Link {
        rtt: Duration::from_millis(50),
        bandwidth: 20_000_000,
    };
    let wan = Wan::start(([127, 0, 0, 1], host.sshd.port()).into(), link);
    let cfg = host.sshd.ssh_config().display().to_string();
    let port = format!("Port={}", wan.port());
    let args = ["-F", cfg.as_str(), "-o", port.as_str(), host.sshd.alias()];
    let timed = |cmd: &mut Command| {
        wan.reset();
        let t = Instant::now();
        run_ok(cmd);
        (t.elapsed(), wan.bytes())
    };
    let ssh = || {
        let mut c = Command::new("/usr/bin/ssh");
        c.args(args).arg("true");
        c
    };
    let plain: Vec<_> = (0..rounds).map(|_| timed(&mut ssh())).collect();

    let dir = tempfile::tempdir().unwrap();
    let cm = dir.path().join("cm");
    let cm_ssh = |extra: &[&str]| {
        let mut c = Command::new("/usr/bin/ssh");
        c.args(extra).arg("-S").arg(&cm).args(args);
        c
    };
    run_ok(cm_ssh(&["-o", "ControlMaster=yes", "-o", "ControlPersist=yes"]).arg("true"));
    let via_cm: Vec<_> = (0..rounds)
        .map(|_| timed(cm_ssh(&[]).arg("true")))
        .collect();
    let _ = cm_ssh(&["-O", "exit"]).stderr(Stdio::null()).status();

    let (mut cold, mut cached, mut per_call) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        host.forget_agents();
        let m = Master::start_with_agents(shipped_agents());
        cold.push(timed(m.ssh().args(args).arg("true")));
        per_call.push(timed(m.ssh().args(args).arg("true")));
        let m = Master::start_with_agents(shipped_agents());
        cached.push(timed(m.ssh().args(args).arg("true")));
    }
    let time = |v: &[(Duration, (u64, u64))]| median(v.iter().map(|x| x.0).collect());
    let bytes = |v: &[(Duration, (u64, u64))]| v.last().map(|x| x.1).unwrap_or_default();
    let base = time(&plain).as_secs_f64();
    println!(
        "over a WAN ({} ms round trip, {} Mbit/s, user-space proxy), median of {rounds}:",
        link.rtt.as_millis(),
        link.bandwidth / 1_000_000
    );
    let row = |name: &str, v: &[(Duration, (u64, u64))], goal: &str| {
        let (up, down) = bytes(v);
        println!(
            "  {name:<28} {:>10}   = {} of ssh true{goal}   sent {:>7} B, received {:>7} B",
            ms(time(v)),
            ratio(time(v).as_secs_f64(), base),
            up,
            down
        );
    };
    row("plain `ssh host true`", &plain, "");
    row("ControlMaster, per call", &via_cm, "");
    row("mitossh, first call, cold", &cold, " (goal <= 1.50x)");
    row("mitossh, first call, cached", &cached, " (goal <= 1.05x)");
    row("mitossh, per call", &per_call, "");
    let (cold_up, _) = bytes(&cold);
    println!(
        "  a cold connect sent {:.2} MB (goal <= 1.2 MB): {:.1}x what `ssh host true` sends",
        cold_up as f64 / 1e6,
        cold_up as f64 / bytes(&plain).0.max(1) as f64
    );
    println!();
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
