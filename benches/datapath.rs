//! Data-path benchmark (issue 14), side by side in one run against plain ssh and an OpenSSH
//! ControlMaster, all on one private loopback sshd with the same (default) cipher:
//!
//! * bulk throughput: 1 GiB `cat | ssh host 'cat >/dev/null'`, median of 7, with the CPU
//!   time the master and the agent spent per GiB, the whole machine's for each tool, and
//!   the master's and agent's context switches; and the other way, `ssh host 'head -c 1G
//!   /dev/zero' | cat >/dev/null` (`download`);
//! * per-call latency: `ssh host true` one after another, median (mitossh and the
//!   ControlMaster taking turns call by call);
//! * 1,000 idle streams (`ssh host sleep`): the master's RSS and PSS idle, at peak and
//!   after, the agent's peak, and a waiting shim's private memory against an idle ssh
//!   client of the ControlMaster;
//! * 500 small files by rsync over an emulated WAN (50 ms round trip, 20 Mbit/s, the
//!   user-space proxy of `common::wan`), each side's connection already up.
//!
//! `cargo bench --bench datapath` (needs root: the harness starts sshd and a test user).
//! `MITOSSH_BENCH_QUICK=1` shrinks every measure for a smoke run; `MITOSSH_BENCH_ONLY=`
//! `throughput`, `download`, `latency`, `idle` or `rsync` runs those parts (comma-separated).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use support::{
    agents_below, machine_cpu, median, mib, ms, process_cpu, process_switches, quick, run_ok,
    stop_control_master,
};

const CIPHER: &str = "Ciphers=chacha20-poly1305@openssh.com";

fn wanted(part: &str) -> bool {
    std::env::var("MITOSSH_BENCH_ONLY").map_or(true, |only| only.split(',').any(|p| p == part))
}

struct Setup {
    sshd: Sshd,
    control_path: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Setup {
    fn plain(&self) -> Command {
        let mut c = Command::new("/usr/bin/ssh");
        c.args(["-o", CIPHER]).args(self.sshd.ssh_args());
        c
    }

    fn control_master(&self) -> Command {
        let mut c = Command::new("/usr/bin/ssh");
        c.args(["-o", CIPHER, "-S"])
            .arg(&self.control_path)
            .args(self.sshd.ssh_args());
        c
    }

    fn shim(&self, m: &Master) -> Command {
        let mut c = m.ssh();
        c.args(["-o", CIPHER]).args(self.sshd.ssh_args());
        c
    }
}

/// Fields of `/proc/PID/smaps_rollup` in KiB: `Rss:`, `Pss:`, `Private_Dirty:` …
fn smaps_kib(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn private_kib(pid: i32) -> u64 {
    smaps_kib(pid, "Private_Clean:") + smaps_kib(pid, "Private_Dirty:")
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit fill and read the struct they are given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(65536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

fn main() {
    // What ships is measured: masters log at the default level.
    log_as_shipped();
    raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        control_path: dir.path().join("cm"),
        sshd: Sshd::start(),
        dir,
    };
    run_ok(
        Command::new("/usr/bin/ssh")
            .args([
                "-o",
                "ControlMaster=yes",
                "-o",
                "ControlPersist=yes",
                "-o",
                CIPHER,
            ])
            .arg("-S")
            .arg(&setup.control_path)
            .args(setup.sshd.ssh_args())
            .arg("true"),
    );
    println!(
        "mitossh data-path benchmark: loopback sshd, chacha20-poly1305, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    if wanted("throughput") {
        throughput(&setup, "`cat | ssh host 'cat >/dev/null'`", pipe_through);
    }
    if wanted("download") {
        throughput(
            &setup,
            "`ssh host 'head -c N /dev/zero' | cat >/dev/null`",
            pull_through,
        );
    }
    if wanted("latency") {
        latency(&setup);
    }
    if wanted("idle") {
        idle_streams(&setup);
    }
    if wanted("rsync") {
        rsync_over_wan(&setup);
    }
    stop_control_master(&setup.control_path, &setup.sshd.ssh_args());
}

/// `head -c N /dev/zero | ssh 'cat >/dev/null'`: its duration.
fn pipe_through(mut ssh: Command, bytes: u64) -> Duration {
    let t = Instant::now();
    let mut feeder = Command::new("head")
        .args(["-c", &bytes.to_string(), "/dev/zero"])
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
}

/// `bytes` from the remote host's `head` through `ssh` into a local `cat`.
fn pull_through(mut ssh: Command, bytes: u64) -> Duration {
    let t = Instant::now();
    let mut ssh = ssh
        .arg(format!("head -c {bytes} /dev/zero"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let sink = Command::new("cat")
        .stdin(ssh.stdout.take().unwrap())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ssh.wait().unwrap().success() && sink.success());
    t.elapsed()
}

/// 1 GiB through plain ssh, a ControlMaster and the shim, `through` each in turn.
fn throughput(s: &Setup, what: &str, through: fn(Command, u64) -> Duration) {
    let bytes: u64 = if quick() { 128 << 20 } else { 1 << 30 };
    let runs = 7;
    let master = Master::start();
    run_ok(s.shim(&master).arg("true"));
    let agent = agents_below(&s.sshd).first().map_or(0, |p| p.pid);
    let (mut plain, mut cm, mut shim) = (Vec::new(), Vec::new(), Vec::new());
    let (mut master_cpu, mut agent_cpu) = (Vec::new(), Vec::new());
    let (mut master_switches, mut agent_switches) = (Vec::new(), Vec::new());
    // Interleaved, so that a noisy neighbour hurts all three alike.
    // The whole machine's CPU per run of each: on 2 cores ssh and sshd each take most
    // of one, so what the rest spends shows in the rate.
    let mut machine = [Vec::new(), Vec::new(), Vec::new()];
    let mut busy = |i: usize, run: &mut dyn FnMut() -> Duration| {
        let cpu = machine_cpu();
        let t = run();
        machine[i].push(machine_cpu().saturating_sub(cpu));
        t
    };
    for _ in 0..runs {
        plain.push(busy(0, &mut || through(s.plain(), bytes)));
        cm.push(busy(1, &mut || through(s.control_master(), bytes)));
        let (m0, a0) = (process_cpu(master.pid()), process_cpu(agent));
        let (ms0, as0) = (process_switches(master.pid()), process_switches(agent));
        shim.push(busy(2, &mut || through(s.shim(&master), bytes)));
        master_cpu.push(process_cpu(master.pid()) - m0);
        agent_cpu.push(process_cpu(agent) - a0);
        master_switches.push(process_switches(master.pid()).saturating_sub(ms0));
        agent_switches.push(process_switches(agent).saturating_sub(as0));
    }
    let mbps = |t: Duration| bytes as f64 / t.as_secs_f64() / 1e6;
    let (p, c, m) = (median(plain), median(cm), median(shim));
    let per_gib = |d: Duration| d.as_secs_f64() * (1u64 << 30) as f64 / bytes as f64;
    println!("{} MiB {what}, median of {runs}:", bytes >> 20);
    println!("  plain ssh      {:>8.0} MB/s", mbps(p));
    println!("  ControlMaster  {:>8.0} MB/s", mbps(c));
    println!(
        "  mitossh        {:>8.0} MB/s   = {:.2}x plain ssh, {:.2}x ControlMaster (goal >= 1.0x both)",
        mbps(m),
        mbps(m) / mbps(p),
        mbps(m) / mbps(c)
    );
    println!(
        "  CPU per GiB: master {:.2} s, agent {:.2} s",
        per_gib(median(master_cpu)),
        per_gib(median(agent_cpu))
    );
    let [machine_plain, machine_cm, machine_shim] = machine.map(median);
    println!(
        "  machine CPU per GiB: plain ssh {:.2} s, ControlMaster {:.2} s, mitossh {:.2} s",
        per_gib(machine_plain),
        per_gib(machine_cm),
        per_gib(machine_shim)
    );
    let per_gib_n = |n: u64| n as f64 * (1u64 << 30) as f64 / bytes as f64;
    println!(
        "  context switches per GiB: master {:.0}, agent {:.0}",
        per_gib_n(median(master_switches)),
        per_gib_n(median(agent_switches))
    );
    println!();
}

fn latency(s: &Setup) {
    let n = if quick() { 20 } else { 100 };
    let master = Master::start();
    run_ok(s.shim(&master).arg("true"));
    let once = |mut cmd: Command| {
        let t = Instant::now();
        run_ok(cmd.arg("true"));
        t.elapsed()
    };
    // The two being compared take turns, call by call: a drift of the machine's speed
    // during the run (it varies by 15% here) falls on both alike. Plain ssh (a whole
    // handshake, 200 ms of CPU) on its own after them.
    let (mut cm, mut shim) = (vec![], vec![]);
    for _ in 0..n {
        cm.push(once(s.control_master()));
        shim.push(once(s.shim(&master)));
    }
    let plain = median((0..n).map(|_| once(s.plain())).collect());
    let (cm, shim) = (median(cm), median(shim));
    println!("{n} calls of `ssh host true` each (ControlMaster and mitossh taking turns), median:");
    println!("  plain ssh      {:>10}", ms(plain));
    println!("  ControlMaster  {:>10}", ms(cm));
    println!(
        "  mitossh        {:>10}   = {:.2}x ControlMaster (goal <= 0.35x), {:.2}x plain ssh",
        ms(shim),
        shim.as_secs_f64() / cm.as_secs_f64(),
        shim.as_secs_f64() / plain.as_secs_f64()
    );
    println!();
}

/// A process in the background with its stdin and stdout held open as pipes.
fn idle(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[derive(Default, Clone, Copy)]
struct Memory {
    rss: u64,
    pss: u64,
}

fn memory(pid: i32) -> Memory {
    let (rss, pss) = common::memory(pid).unwrap_or_default();
    Memory { rss, pss }
}

/// Highest memory seen of the master and the agent.
#[derive(Default)]
struct Peaks {
    master: Memory,
    agent: Memory,
}

impl Peaks {
    fn sample(&mut self, master: i32, agent: i32) {
        for (peak, pid) in [(&mut self.master, master), (&mut self.agent, agent)] {
            let m = memory(pid);
            peak.rss = peak.rss.max(m.rss);
            peak.pss = peak.pss.max(m.pss);
        }
    }
}

fn idle_streams(s: &Setup) {
    let n = if quick() { 200 } else { 1000 };
    let master = Master::start();
    run_ok(s.shim(&master).arg("true"));
    let agent = agents_below(&s.sshd).first().map_or(0, |p| p.pid);
    let before = Peaks {
        master: memory(master.pid()),
        agent: memory(agent),
    };
    let marker = unique_marker();
    let mut children: Vec<Child> = (0..n)
        .map(|_| {
            let mut c = s.shim(&master);
            c.arg(format!("exec -a {marker} sleep 600"));
            idle(c)
        })
        .collect();
    let mut peak = Peaks::default();
    let running = || processes_matching(|p| p.cmdline.first().is_some_and(|a| a == &marker)).len();
    wait_until(
        Duration::from_secs(300),
        "every remote sleep to run",
        || {
            peak.sample(master.pid(), agent);
            running() >= n
        },
    );
    for _ in 0..20 {
        peak.sample(master.pid(), agent);
        std::thread::sleep(Duration::from_millis(50));
    }
    let shims: Vec<u64> = children
        .iter()
        .take(20)
        .map(|c| private_kib(c.id() as i32))
        .collect();
    let shim_private = median(shims);
    let (cm_private, mut cm_clients) = idle_cm_clients(s);
    for c in cm_clients.iter_mut().chain(children.iter_mut()) {
        let _ = c.kill();
    }
    for c in cm_clients.iter_mut().chain(children.iter_mut()) {
        let _ = c.wait();
    }
    wait_until(Duration::from_secs(120), "the remote sleeps to end", || {
        peak.sample(master.pid(), agent);
        running() == 0
    });
    // What the master gives back once the streams are gone.
    let ended = Instant::now();
    let mut after = Peaks {
        master: memory(master.pid()),
        agent: memory(agent),
    };
    while ended.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(250));
        after.master = memory(master.pid());
    }
    after.agent = memory(agent);
    println!("{n} idle `ssh host sleep` through one master (stdin, stdout: pipes):");
    print_idle_memory(n, &before, &peak, &after);
    println!(
        "  a waiting shim: {} KiB private (goal <= 1536), an idle ssh client of the ControlMaster: {} KiB = {:.2}x",
        shim_private,
        cm_private,
        shim_private as f64 / cm_private.max(1) as f64
    );
    println!();
}

/// The same wait through the ControlMaster (its sessions are limited by sshd's
/// MaxSessions): an idle ssh client's own memory, and the clients, still running.
fn idle_cm_clients(s: &Setup) -> (u64, Vec<Child>) {
    let cm_clients: Vec<Child> = (0..10)
        .map(|_| {
            let mut c = s.control_master();
            c.arg("sleep 600");
            idle(c)
        })
        .collect();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let private = median(
        cm_clients
            .iter()
            .map(|c| private_kib(c.id() as i32))
            .collect(),
    );
    (private, cm_clients)
}

fn print_idle_memory(n: usize, before: &Peaks, peak: &Peaks, after: &Peaks) {
    println!(
        "  master RSS  idle {:>9}  peak {:>9} (goal <= 40 MiB)  after {:>9} (goal <= 15 MiB)",
        mib(before.master.rss),
        mib(peak.master.rss),
        mib(after.master.rss)
    );
    println!(
        "  master PSS  idle {:>9}  peak {:>9}                   after {:>9}",
        mib(before.master.pss),
        mib(peak.master.pss),
        mib(after.master.pss)
    );
    println!(
        "  per idle stream: {:.1} KiB RSS",
        (peak.master.rss.saturating_sub(before.master.rss)) as f64 / n as f64
    );
    println!(
        "  agent RSS   idle {:>9}  peak {:>9} (goal <= 40 MiB)  after {:>9}",
        mib(before.agent.rss),
        mib(peak.agent.rss),
        mib(after.agent.rss)
    );
    println!(
        "  agent PSS   idle {:>9}  peak {:>9}",
        mib(before.agent.pss),
        mib(peak.agent.pss)
    );
}

/// 500 small files (1–8 KiB) by `rsync -a` into a new directory, over the WAN proxy.
fn rsync_over_wan(s: &Setup) {
    let runs = 7;
    let files = if quick() { 100 } else { 500 };
    let link = Link {
        rtt: Duration::from_millis(50),
        bandwidth: 20_000_000,
    };
    let wan = Wan::start(([127, 0, 0, 1], s.sshd.port()).into(), link);
    let src = tempfile::tempdir().unwrap();
    for i in 0..files {
        random_file(
            &src.path().join(format!("f{i:04}")),
            1024 + (i * 97) % 7168,
            i as u64,
        );
    }
    let cfg = s.sshd.ssh_config().display().to_string();
    let port = format!("Port={}", wan.port());
    let cm = s.dir.path().join("cm-wan");
    let rsh = |extra: &str| format!("ssh -F {cfg} -o {port} -o {CIPHER} {extra}");
    let mut n = 0;
    let mut copy = |mut rsync: Command, e: &str| {
        n += 1;
        let dest = format!(
            "{}:mitossh-bench-rsync-{}-{n}/",
            s.sshd.alias(),
            std::process::id()
        );
        let t = Instant::now();
        run_ok(
            rsync
                .args(["-a", "-e", e])
                .arg(format!("{}/", src.path().display()))
                .arg(&dest),
        );
        t.elapsed()
    };
    let master = Master::start();
    run_ok(
        Command::new("/usr/bin/ssh")
            .args(["-F", &cfg, "-o", &port])
            .args(["-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-S"])
            .arg(&cm)
            .arg(s.sshd.alias())
            .arg("true"),
    );
    run_ok(
        master
            .ssh()
            .args(["-F", &cfg, "-o", &port, s.sshd.alias(), "true"]),
    );
    let (mut plain, mut via_cm, mut shim) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        plain.push(copy(
            Command::new("rsync"),
            &format!("/usr/bin/{}", rsh("")),
        ));
        via_cm.push(copy(
            Command::new("rsync"),
            &format!("/usr/bin/{}", rsh(&format!("-S {}", cm.display()))),
        ));
        shim.push(copy(master.command("rsync"), &rsh("")));
    }
    let (p, c, m) = (median(plain), median(via_cm), median(shim));
    println!(
        "rsync -a of {files} small files over a WAN ({} ms, {} Mbit/s), median of {runs}:",
        link.rtt.as_millis(),
        link.bandwidth / 1_000_000
    );
    println!("  plain ssh      {:>10}", ms(p));
    println!("  ControlMaster  {:>10}", ms(c));
    println!(
        "  mitossh        {:>10}   = {:.2}x ControlMaster, {:.2}x plain ssh",
        ms(m),
        m.as_secs_f64() / c.as_secs_f64(),
        m.as_secs_f64() / p.as_secs_f64()
    );
    let _ = Command::new("/usr/bin/ssh")
        .args(["-F", &cfg, "-o", &port, "-O", "exit", "-S"])
        .arg(&cm)
        .arg(s.sshd.alias())
        .stderr(Stdio::null())
        .status();
    // Only the directories this run made.
    run_ok(master.ssh().args([
        "-F",
        &cfg,
        "-o",
        &port,
        s.sshd.alias(),
        &format!("rm -rf mitossh-bench-rsync-{}-*", std::process::id()),
    ]));
    println!();
}
