//! Side-by-side benchmark: mitossh's shim against plain ssh and an OpenSSH ControlMaster,
//! all against the same private loopback sshd, in one run. Prints times and ratios;
//! absolute numbers on a shared machine mean little, the ratios are the point.
//!
//! `cargo bench --bench tunnel` (needs root: the harness starts sshd and a test user).
//! `MITOSSH_BENCH_QUICK=1` shrinks every measure for a smoke run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Setup {
    sshd: Sshd,
    control_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn quick() -> bool {
    std::env::var_os("MITOSSH_BENCH_QUICK").is_some()
}

fn run_ok(cmd: &mut Command) {
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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}x", a / b)
}

/// Empties the test user's agent cache so the next connect uploads.
fn clear_agent_cache(home: &Path) {
    let uid = test_user().uid;
    for dir in [
        home.join(".cache/mitossh"),
        format!("/tmp/mitossh-{uid}").into(),
        format!("/dev/shm/mitossh-{uid}").into(),
    ] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start();
    let setup = Setup {
        control_path: dir.path().join("cm"),
        sshd,
        _dir: dir,
    };
    let n = if quick() { 10 } else { 100 };
    let gib: u64 = if quick() { 64 << 20 } else { 1 << 30 };

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

    // ---- per-invocation latency -------------------------------------------------------
    let master = Master::start();
    run_ok(shim(&master, &setup).arg("true")); // context up, agent cached
    let lat_plain = median(times(n, || {
        let mut c = plain(&setup);
        c.arg("true");
        c
    }));
    let lat_cm = median(times(n, || {
        let mut c = control_master(&setup);
        c.arg("true");
        c
    }));
    let lat_shim = median(times(n, || {
        let mut c = shim(&master, &setup);
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

    // ---- new-context connect ---------------------------------------------------------
    let rounds = if quick() { 2 } else { 5 };
    let mut cold = Vec::new();
    let mut cached = Vec::new();
    for _ in 0..rounds {
        clear_agent_cache(&test_user().home);
        let m = Master::start();
        let t = Instant::now();
        run_ok(shim(&m, &setup).arg("true"));
        cold.push(t.elapsed());
        drop(m);
        let m = Master::start();
        let t = Instant::now();
        run_ok(shim(&m, &setup).arg("true"));
        cached.push(t.elapsed());
    }
    let (cold, cached) = (median(cold), median(cached));
    println!("first call on a new context (connect + agent + `true`), median of {rounds}:");
    println!("  plain `ssh host true`   {:>10}", ms(lat_plain));
    println!(
        "  mitossh, agent uploaded {:>10}   = {} of ssh true",
        ms(cold),
        ratio(cold.as_secs_f64(), lat_plain.as_secs_f64())
    );
    println!(
        "  mitossh, agent cached   {:>10}   = {} of ssh true (goal <= 1.20x)",
        ms(cached),
        ratio(cached.as_secs_f64(), lat_plain.as_secs_f64())
    );
    println!(
        "  (agent image: {} KiB)",
        std::fs::metadata(bin("mitossh")).unwrap().len() >> 10
    );
    println!();

    // ---- throughput ----------------------------------------------------------------
    let runs = if quick() { 1 } else { 3 };
    let pipe = |mut ssh: Command| -> Duration {
        let t = Instant::now();
        let mut feeder = Command::new("head")
            .args(["-c", &gib.to_string(), "/dev/zero"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let status = ssh
            .arg("cat >/dev/null")
            .stdin(feeder.stdout.take().unwrap())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        feeder.wait().unwrap();
        t.elapsed()
    };
    let best = |f: &dyn Fn() -> Duration| (0..runs).map(|_| f()).min().unwrap();
    let t_plain = best(&|| pipe(plain(&setup)));
    let t_cm = best(&|| pipe(control_master(&setup)));
    let t_shim = best(&|| pipe(shim(&master, &setup)));
    let mbps = |t: Duration| gib as f64 / t.as_secs_f64() / 1e6;
    println!(
        "{} MiB `cat | ssh host 'cat >/dev/null'`, best of {runs}:",
        gib >> 20
    );
    println!("  plain ssh      {:>8.0} MB/s", mbps(t_plain));
    println!("  ControlMaster  {:>8.0} MB/s", mbps(t_cm));
    println!(
        "  mitossh        {:>8.0} MB/s   = {} of plain ssh (goal >= 0.95x), {} of ControlMaster",
        mbps(t_shim),
        ratio(mbps(t_shim), mbps(t_plain)),
        ratio(mbps(t_shim), mbps(t_cm))
    );

    // ---- a legacy script ---------------------------------------------------------------
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

    // ---- done ----------------------------------------------------------------------
    let _ = Command::new("/usr/bin/ssh")
        .args(["-O", "exit", "-S"])
        .arg(&setup.control_path)
        .args(setup.sshd.ssh_args())
        .stderr(Stdio::null())
        .status();
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
