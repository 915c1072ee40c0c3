//! N hosts from one machine, side by side with pdsh and ClusterShell (`clush`): `true` on
//! N host aliases of one private sshd (each alias its own connection), N = 50, 200, 500
//! and 1,000, every tool with the same window of 64 handshakes at once and the soft
//! descriptor limit of a plain login (1024).
//!
//! - **Wall time**: pdsh, clush and mitossh cold take turns, [`rounds`] runs each (every
//!   run's figure printed), and the run with the median wall time counts for the tables.
//!   pdsh and clush log in anew on every run. mitossh *cold* is a new master (the agent
//!   image already cached on the host, and what ssh's configuration makes of each host
//!   kept by the master before, as on a user's second run); *first* is a cold run with
//!   nothing kept (`ssh -G` for every host), once; *warm* is the last cold run again on
//!   the connections it left open.
//! - **Machine CPU**: what every process on the machine spent meanwhile (`/proc/stat`):
//!   the tool, ssh, sshd and the remote shells, and for mitossh the master and agents;
//!   with the master's own share of a cold run, and that of the kernel's DAMON monitor
//!   (`kdamond`), where the kernel runs one: its work grows with the memory in use, which
//!   a thousand kept ssh clients raise. On 2 cores a cold run is CPU-bound, so
//!   this says where its wall time goes.
//! - **Memory** (KiB, from `/proc/PID/smaps_rollup`): the master's RSS and PSS with no
//!   host, then idle with N hosts connected (after the cold run, and again once it has
//!   been quiet for 2 s), per host; the ssh clients it keeps (PSS, their own processes);
//!   the remote agents idle (RSS each, PSS in all); the peak of the `mitossh run` process
//!   against a one-host run, per process; the peak of the pdsh and clush processes.
//!   Budgets (issue 11): master ≤ 100 KiB per idle host, agent ≤ 4 MiB RSS idle,
//!   `mitossh run` ≤ 64 KiB per process.
//!
//! `cargo bench --bench scale` (root: the harness starts sshd and a test user).
//! `MITOSSH_BENCH_N=50,200` chooses the sizes, `MITOSSH_BENCH_ROUNDS=5` the runs per
//! tool (3); `MITOSSH_BENCH_QUICK=1` is N = 50 with one run.
//! pdsh and clush are Debian's `pdsh` and `clustershell`; the bench installs them with
//! apt-get when it can and otherwise leaves them out, saying so.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use support::{clock_ticks, machine_cpu, process_cpu};

/// Handshakes at once, for every tool (clush's default, and mitossh's; pdsh's is 32).
const WINDOW: usize = mitossh::DEFAULT_CONNECT_WINDOW;

/// No run of any size may take longer than this.
const LIMIT: Duration = Duration::from_secs(1800);

/// (RSS, PSS) in KiB.
type Mem = (u64, u64);

struct Timed {
    wall: Duration,
    /// CPU the whole machine spent meanwhile (every process: the tool, ssh, sshd, the
    /// remote shells; and for mitossh the master and agents), from `/proc/stat`.
    cpu: Duration,
    /// Of it, the kernel's DAMON monitors (see [`memory_monitor_cpu`]).
    monitor: Duration,
    peak: Mem,
    out: Output,
    /// When it ran, in seconds of `CLOCK_MONOTONIC`: to find the run in a
    /// `perf record -a -k CLOCK_MONOTONIC` of the bench (`perf report --time a,b`).
    span: (f64, f64),
}

/// Seconds of `CLOCK_MONOTONIC`, the clock `perf record -k CLOCK_MONOTONIC` stamps with.
fn monotonic() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9
}

/// CPU time spent by the kernel's DAMON monitor threads (`kdamond.N`), where the kernel
/// runs one: its work grows with the memory in use, so a run that keeps a thousand ssh
/// clients alive pays for it and one whose processes end at once does not. Said apart,
/// since it is this machine's setting, not the tools' work.
fn memory_monitor_cpu() -> Duration {
    let ticks: u64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|stat| {
            let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            comm.starts_with("kdamond").then_some(())?;
            // After the command: state is field 3; utime and stime are fields 14 and 15.
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

/// Runs `cmd` to its end (killed after [`LIMIT`]), sampling its own memory every 20 ms.
fn timed(cmd: &mut Command) -> Timed {
    let started = Instant::now();
    let from = monotonic();
    let cpu_before = machine_cpu();
    let monitor_before = memory_monitor_cpu();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id() as i32;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = (0, 0);
            let deadline = Instant::now() + LIMIT;
            while !done.load(Ordering::Relaxed) {
                if let Some((rss, pss)) = memory(pid) {
                    peak = (peak.0.max(rss), peak.1.max(pss));
                }
                if Instant::now() > deadline {
                    // SAFETY: signalling the child this bench started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let (o, e) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let status = child.wait().unwrap();
    let wall = started.elapsed();
    let span = (from, monotonic());
    let cpu = machine_cpu().saturating_sub(cpu_before);
    let monitor = memory_monitor_cpu().saturating_sub(monitor_before);
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let out = Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    };
    Timed {
        wall,
        cpu,
        monitor,
        peak,
        out,
        span,
    }
}

fn ok(what: &str, t: &Timed) {
    assert!(
        t.out.status.success(),
        "{what} failed ({:?}):\n{}",
        t.out.status,
        String::from_utf8_lossy(&t.out.stderr)
            .lines()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The program, installed from Debian's `package` if missing and we may; `None` (and why,
/// printed) if it cannot be had.
fn tool(program: &str, package: &str) -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin").join(program);
    if path.exists() {
        return Some(path);
    }
    println!("{program}: not installed; installing Debian's {package}");
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed && path.exists() {
        Some(path)
    } else {
        println!("{program}: skipped (apt-get install {package} did not work)");
        None
    }
}

fn pdsh(pdsh: &Path, cfg: &Path, hosts: &[String]) -> Timed {
    let t = timed(
        Command::new(pdsh)
            .args(["-S", "-R", "ssh", "-f", &WINDOW.to_string(), "-w"])
            .arg(hosts.join(","))
            .arg("true")
            // pdsh's default adds `-l <local user>`, which would override the config's User.
            .env("PDSH_SSH_ARGS", format!("-F {} %h", cfg.display())),
    );
    ok("pdsh", &t);
    t
}

fn clush(clush: &Path, cfg: &Path, hosts: &[String]) -> Timed {
    let t = timed(
        Command::new(clush)
            .args(["-S", "-f", &WINDOW.to_string(), "-o"])
            .arg(format!("-F {}", cfg.display()))
            .arg("-w")
            .arg(hosts.join(","))
            .arg("true"),
    );
    ok("clush", &t);
    t
}

fn mitossh_run(socket: &Path, cfg: &Path, hosts: &[String], command: &str) -> Timed {
    let t = timed(
        Command::new(bin("mitossh"))
            .args(["run", "-q", "-H"])
            .arg(hosts.join(","))
            .arg("-F")
            .arg(cfg)
            .arg("--socket")
            .arg(socket)
            .args(["--", command]),
    );
    ok("mitossh run", &t);
    t
}

/// Sum of PSS and the largest RSS over `procs`.
fn total(procs: &[Proc]) -> (u64, u64, usize) {
    let mut pss = 0;
    let mut max_rss = 0;
    let mut n = 0;
    for p in procs {
        if let Some((rss, p_pss)) = memory(p.pid) {
            pss += p_pss;
            max_rss = max_rss.max(rss);
            n += 1;
        }
    }
    (max_rss, pss, n)
}

fn is_ssh(p: &Proc) -> bool {
    p.exe.as_deref() == Some(Path::new("/usr/bin/ssh"))
}

fn is_agent(p: &Proc) -> bool {
    p.cmdline.iter().any(|a| a == "agent") && p.cmdline.iter().any(|a| a == "--nonce")
}

fn per(kib: i64, n: usize) -> f64 {
    kib as f64 / n as f64
}

struct Row {
    n: usize,
    pdsh: Option<Timed>,
    clush: Option<Timed>,
    /// A cold run with no answers of `ssh -G` kept.
    first: Timed,
    cold: Timed,
    warm: Timed,
    /// The master's RSS idle after the cold run, KiB.
    master_idle: u64,
}

/// What every size shares: the sshd, its host aliases, the tools to compare with.
struct Fleet {
    sshd: Sshd,
    cfg: PathBuf,
    all: Vec<String>,
    pdsh: Option<PathBuf>,
    clush: Option<PathBuf>,
    /// `mitossh run` with one host: what the per-process figures are counted from.
    single: Timed,
    _dir: tempfile::TempDir,
}

fn main() {
    // What ships is measured: masters log at the default level.
    log_as_shipped();
    let sizes: Vec<usize> = if support::quick() {
        vec![50]
    } else if let Ok(list) = std::env::var("MITOSSH_BENCH_N") {
        list.split(',').map(|n| n.trim().parse().unwrap()).collect()
    } else {
        vec![50, 200, 500, 1000]
    };
    let fleet = Fleet::start(*sizes.iter().max().unwrap());
    let rows: Vec<Row> = sizes.iter().map(|&n| one_size(&fleet, n)).collect();
    print_wall_times(&rows);
    print_cpu_times(&rows);
    print_master_slope(&rows);
    print_tool_memory(&rows);
}

impl Fleet {
    fn start(max: usize) -> Fleet {
        let pdsh = tool("pdsh", "pdsh");
        let clush = tool("clush", "clustershell");
        // What a plain login has; every tool here starts with it.
        set_soft_descriptor_limit(1024);
        let sshd = Sshd::start();
        let dir = tempfile::tempdir().unwrap();
        let all = host_names("h", max);
        let cfg = FleetConfig::new().hosts(&sshd, &all, "").write(dir.path());
        println!(
            "`true` on N host aliases of one sshd, window {WINDOW}, soft descriptor limit 1024:"
        );
        // The agent's image in the host's cache, and a one-host run to measure `mitossh
        // run` against. The agents as they ship: scripts/build-agents' (size-optimised,
        // with xz copies), which scripts/build puts beside mitossh.
        let mut one = Master::start_with_agents(shipped_agents());
        mitossh_run(&one.socket, &cfg, &all[..1], "true");
        // Long enough for the sampler to see it at its peak.
        let single = mitossh_run(&one.socket, &cfg, &all[..1], "sleep 1");
        one.stop();
        Fleet {
            sshd,
            cfg,
            all,
            pdsh,
            clush,
            single,
            _dir: dir,
        }
    }
}

fn per_host_ms(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1000.0 / n as f64
}

/// Rounds per size in which pdsh, clush and a new mitossh master take turns
/// (`MITOSSH_BENCH_ROUNDS`, default 3; 1 when quick): the run with the median wall time
/// of each is reported. One run each swings by ±10% on this kind of machine, more than
/// the tools differ.
fn rounds() -> usize {
    match std::env::var("MITOSSH_BENCH_ROUNDS") {
        Ok(n) => n.trim().parse().expect("MITOSSH_BENCH_ROUNDS: a number"),
        Err(_) if support::quick() => 1,
        Err(_) => 3,
    }
}

/// The run with the median wall time.
fn median_run(mut runs: Vec<Timed>) -> Timed {
    runs.sort_by_key(|t| t.wall);
    runs.swap_remove(runs.len() / 2)
}

/// The wall times of `runs`, in the order they ran, and when they ran.
fn walls(runs: &[Timed]) -> String {
    let w: Vec<String> = runs.iter().map(|t| format!("{:.2}", wall(t))).collect();
    let at: Vec<String> = (runs.iter())
        .map(|t| format!("{:.1},{:.1}", t.span.0, t.span.1))
        .collect();
    format!("{}   (monotonic {})", w.join(" / "), at.join(" "))
}

/// mitossh cold against `name`, round by round: a round's runs follow one another, so
/// the machine's drift over the bench (which moves one tool's runs by ±8%) mostly cancels
/// in their ratio. The median of the rounds' ratios, and the ratio of all rounds' time.
fn print_paired(name: &str, colds: &[Timed], theirs: &[Timed]) {
    let pairs = colds.iter().zip(theirs);
    let mut ratios: Vec<f64> = pairs.clone().map(|(a, b)| wall(a) / wall(b)).collect();
    if ratios.is_empty() {
        return;
    }
    let (ours, others) = pairs.fold((0.0, 0.0), |(x, y), (a, b)| (x + wall(a), y + wall(b)));
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "  cold/{name:<7} by round {}   median {:.3}x, all rounds {:.3}x",
        each.join(" / "),
        ratios[ratios.len() / 2],
        ours / others
    );
}

/// mitossh first (nothing kept), then [`rounds`] of pdsh, clush and mitossh cold taking
/// turns, then warm on the last cold run's connections, with memory.
fn one_size(fleet: &Fleet, n: usize) -> Row {
    let hosts = &fleet.all[..n];
    let cfg = &fleet.cfg;
    println!("\nN = {n}");
    // Its default window is WINDOW. A runtime directory of its own for each size: the
    // first master keeps there what ssh's configuration says of each host; the next reads it.
    // The agents as they ship (size-optimised, with their xz copies), not the bench
    // build's beside it, which a master would gzip at every start.
    let runtime = tempfile::tempdir().unwrap();
    let env = [
        ("XDG_RUNTIME_DIR", runtime.path().as_os_str()),
        ("MITOSSH_AGENT_DIR", shipped_agents().as_os_str()),
    ];
    let mut master = Master::start_with_env(&env);
    let first = mitossh_run(&master.socket, cfg, hosts, "true");
    master.stop();
    sessions_ended(fleet);
    let (mut ps, mut cs, mut colds) = (Vec::new(), Vec::new(), Vec::new());
    let rounds = rounds();
    for round in 1..=rounds {
        if let Some(b) = fleet.pdsh.as_deref() {
            ps.push(pdsh(b, cfg, hosts));
            sessions_ended(fleet);
        }
        if let Some(b) = fleet.clush.as_deref() {
            cs.push(clush(b, cfg, hosts));
            sessions_ended(fleet);
        }
        if round < rounds {
            let mut master = Master::start_with_env(&env);
            colds.push(mitossh_run(&master.socket, cfg, hosts, "true"));
            master.stop();
            sessions_ended(fleet);
        }
    }
    // The last cold run's master is the one measured and kept for the warm run.
    let mut master = Master::start_with_env(&env);
    let empty = memory(master.pid()).unwrap();
    let master_cpu = process_cpu(master.pid());
    colds.push(mitossh_run(&master.socket, cfg, hosts, "true"));
    let master_cpu = process_cpu(master.pid()).saturating_sub(master_cpu);
    let after = memory(master.pid()).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let idle = memory(master.pid()).unwrap();
    let warm = mitossh_run(&master.socket, cfg, hosts, "true");
    for (name, runs) in [("pdsh", &ps), ("clush", &cs), ("mitossh cold", &colds)] {
        if !runs.is_empty() {
            println!("  {name:<13} runs {} s", walls(runs));
        }
    }
    print_paired("clush", &colds, &cs);
    print_paired("pdsh", &colds, &ps);
    let p = (!ps.is_empty()).then(|| median_run(ps));
    let c = (!cs.is_empty()).then(|| median_run(cs));
    let cold = median_run(colds);
    for (name, t) in [("pdsh", &p), ("clush", &c)] {
        if let Some(t) = t {
            let wall = t.wall.as_secs_f64();
            println!(
                "  {name:<10} {wall:>8.2} s   machine CPU {:.2} s ({:.1} ms per host; kdamond \
                 {:.2} s)   peak RSS {} KiB",
                t.cpu.as_secs_f64(),
                per_host_ms(t.cpu, n),
                t.monitor.as_secs_f64(),
                t.peak.0
            );
        }
    }
    println!(
        "  mitossh    first {:.2} s, cold {:.2} s, warm {:.2} s",
        first.wall.as_secs_f64(),
        cold.wall.as_secs_f64(),
        warm.wall.as_secs_f64()
    );
    println!(
        "             machine CPU cold {:.2} s ({:.1} ms per host; the master itself {:.1}; \
         kdamond {:.2} s), warm {:.2} s",
        cold.cpu.as_secs_f64(),
        per_host_ms(cold.cpu, n),
        per_host_ms(master_cpu, n),
        cold.monitor.as_secs_f64(),
        warm.cpu.as_secs_f64()
    );
    println!(
        "  master     RSS/PSS KiB: {}/{} with no host, {}/{} after the cold run, {}/{} idle",
        empty.0, empty.1, after.0, after.1, idle.0, idle.1
    );
    let (rss_per, pss_per) = (
        per(idle.0 as i64 - empty.0 as i64, n),
        per(idle.1 as i64 - empty.1 as i64, n),
    );
    println!(
        "             per idle host: {rss_per:.0} KiB RSS, {pss_per:.0} KiB PSS \
         (budget 100: {})",
        if rss_per <= 100.0 { "met" } else { "NOT met" }
    );
    print_kept_processes(fleet, &master);
    print_run_memory(fleet, n, &cold, &warm);
    master.stop();
    sessions_ended(fleet);
    Row {
        n,
        pdsh: p,
        clush: c,
        first,
        cold,
        warm,
        master_idle: idle.0,
    }
}

/// Agents end with their links, and sshd's sessions with them: the next run starts from
/// none, and does not pay for the last one's teardown.
fn sessions_ended(fleet: &Fleet) {
    wait_until(Duration::from_secs(120), "the sessions to end", || {
        descendants(fleet.sshd.pid()).is_empty()
    });
}

/// The ssh clients the master keeps and the agents at their ends.
fn print_kept_processes(fleet: &Fleet, master: &Master) {
    let clients = total(
        &descendants(master.pid())
            .into_iter()
            .filter(is_ssh)
            .collect::<Vec<_>>(),
    );
    let agents = total(
        &descendants(fleet.sshd.pid())
            .into_iter()
            .filter(is_agent)
            .collect::<Vec<_>>(),
    );
    println!(
        "  ssh        {} clients kept by the master: {:.0} KiB PSS each (RSS {} max)",
        clients.2,
        per(clients.1 as i64, clients.2.max(1)),
        clients.0
    );
    println!(
        "  agents     {} idle: RSS {} KiB at most (budget 4096: {}), PSS {:.0} KiB each",
        agents.2,
        agents.0,
        if agents.0 <= 4096 { "met" } else { "NOT met" },
        per(agents.1 as i64, agents.2.max(1))
    );
}

/// `mitossh run`'s own peak, per process beyond the one-host run.
fn print_run_memory(fleet: &Fleet, n: usize, cold: &Timed, warm: &Timed) {
    let single = &fleet.single;
    let run_per = |t: &Timed| {
        (
            per(t.peak.0 as i64 - single.peak.0 as i64, n.max(2) - 1),
            per(t.peak.1 as i64 - single.peak.1 as i64, n.max(2) - 1),
        )
    };
    let (cr, cp) = run_per(cold);
    let (wr, wp) = run_per(warm);
    println!(
        "  run        peak RSS/PSS KiB: {}/{} cold, {}/{} warm, {}/{} for one host: \
         {cr:.1}/{cp:.1} cold, {wr:.1}/{wp:.1} warm per process (budget 64: {})",
        cold.peak.0,
        cold.peak.1,
        warm.peak.0,
        warm.peak.1,
        single.peak.0,
        single.peak.1,
        if cr.max(wr) <= 64.0 { "met" } else { "NOT met" }
    );
}

fn wall(t: &Timed) -> f64 {
    t.wall.as_secs_f64()
}

fn cpu(t: &Timed) -> f64 {
    t.cpu.as_secs_f64()
}

fn cpu_without_monitor(t: &Timed) -> f64 {
    t.cpu.saturating_sub(t.monitor).as_secs_f64()
}

/// A tool's figure in a table, or `-` when the tool was left out.
fn cell(t: &Option<Timed>, measure: fn(&Timed) -> f64) -> String {
    t.as_ref()
        .map_or("-".into(), |t| format!("{:.2}", measure(t)))
}

/// mitossh's figure over another tool's, or `-` when that tool was left out.
fn ratio_cell(a: &Timed, b: &Option<Timed>, measure: fn(&Timed) -> f64) -> String {
    b.as_ref()
        .map_or("-".into(), |b| format!("{:.3}x", measure(a) / measure(b)))
}

fn print_wall_times(rows: &[Row]) {
    println!("\nWall time, s (ratio: mitossh / other; below 1 is faster)");
    println!(
        "{:>6} {:>9} {:>9} {:>13} {:>12} {:>12} {:>12} {:>11} {:>11} {:>11}",
        "N",
        "pdsh",
        "clush",
        "mitossh first",
        "mitossh cold",
        "mitossh warm",
        "first/clush",
        "cold/pdsh",
        "cold/clush",
        "warm/clush"
    );
    let s = wall;
    let fmt = |t: &Option<Timed>| cell(t, s);
    let ratio = |a: &Timed, b: &Option<Timed>| ratio_cell(a, b, s);
    for r in rows {
        println!(
            "{:>6} {:>9} {:>9} {:>13.2} {:>12.2} {:>12.2} {:>12} {:>11} {:>11} {:>11}",
            r.n,
            fmt(&r.pdsh),
            fmt(&r.clush),
            s(&r.first),
            s(&r.cold),
            s(&r.warm),
            ratio(&r.first, &r.clush),
            ratio(&r.cold, &r.pdsh),
            ratio(&r.cold, &r.clush),
            ratio(&r.warm, &r.clush)
        );
    }
}

fn print_cpu_times(rows: &[Row]) {
    println!(
        "\nMachine CPU, s (every process on the machine; ratio: mitossh / other; the last \
         without the kernel's DAMON monitor, kdamond, whose work grows with the memory kept)"
    );
    println!(
        "{:>6} {:>9} {:>9} {:>13} {:>12} {:>12} {:>11} {:>11} {:>15}",
        "N",
        "pdsh",
        "clush",
        "mitossh first",
        "mitossh cold",
        "first/clush",
        "cold/pdsh",
        "cold/clush",
        "w/o kdamond"
    );
    let s = cpu;
    let fmt = |t: &Option<Timed>| cell(t, s);
    let ratio = |a: &Timed, b: &Option<Timed>| ratio_cell(a, b, s);
    for r in rows {
        println!(
            "{:>6} {:>9} {:>9} {:>13.2} {:>12.2} {:>12} {:>11} {:>11} {:>15}",
            r.n,
            fmt(&r.pdsh),
            fmt(&r.clush),
            s(&r.first),
            s(&r.cold),
            ratio(&r.first, &r.clush),
            ratio(&r.cold, &r.pdsh),
            ratio(&r.cold, &r.clush),
            ratio_cell(&r.cold, &r.clush, cpu_without_monitor),
        );
    }
}

/// What one more idle host costs the master, between consecutive sizes: the per-host
/// average above also carries the master's one-time growth (runtime, allocator arenas),
/// which a small N divides by little.
fn print_master_slope(rows: &[Row]) {
    if rows.len() < 2 {
        return;
    }
    println!("\nMaster RSS per additional idle host, KiB (budget 100)");
    for w in rows.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let slope = per(b.master_idle as i64 - a.master_idle as i64, b.n - a.n);
        let met = if slope <= 100.0 { "met" } else { "NOT met" };
        println!("  N {:>4} -> {:>4}: {slope:>6.1} ({met})", a.n, b.n);
    }
}

fn print_tool_memory(rows: &[Row]) {
    println!("\nPeak RSS of the tool's own process, KiB (mitossh run / other)");
    for r in rows {
        let m = |t: &Option<Timed>| {
            t.as_ref().map_or("-".into(), |t| {
                format!(
                    "{} ({:.2}x)",
                    t.peak.0,
                    r.cold.peak.0.max(r.warm.peak.0) as f64 / t.peak.0 as f64
                )
            })
        };
        println!(
            "{:>6}  mitossh run {:>7}  pdsh {:>16}  clush {:>16}",
            r.n,
            r.cold.peak.0.max(r.warm.peak.0),
            m(&r.pdsh),
            m(&r.clush)
        );
    }
}
