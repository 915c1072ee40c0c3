//! A compromised host against the real master, over real sshds. The hostile agent (see
//! `agent.rs`) is placed in the remote account's agent cache under the genuine agent's
//! content hash, so the master starts it as it would start mitossh's own agent. For each
//! attack: the master's peak memory stays under [`RSS_BOUND_KIB`], the hostile link is
//! dropped with a clear error, and a stream to another host (a genuine agent) carries on
//! byte-exact. A hostile agent below a genuine one (reached by ssh from a hop) is cut off
//! by that agent, and its parent's streams carry on. What a hostile agent says about
//! itself reaches `mitossh status`, `mitossh tree` and error messages escaped.
//!
//! This test has its own `main` (no libtest harness), because the same executable is
//! also the hostile agent: started as `mitossh-agent-<hash> agent --nonce N` it plays that
//! part instead.

#[path = "../common/mod.rs"]
mod common;

mod agent;

use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use agent::Attack;
use common::*;
use mitossh::proto::DEFAULT_WINDOW;
use mitossh::{Arch, cache_name, content_hash};

const T: Duration = Duration::from_secs(60);

/// How much an attack may add to a process's resident memory (VmHWM during the attack
/// against VmRSS when it starts): a few windows and read buffers. The attacks of the
/// review this answers took the master from 22 MB to 405 MB, 1.5 GB and 2.8 GB.
const GROWTH_BOUND_KIB: u64 = 16 * 1024;

/// The master's peak resident memory, whatever happens: it holds the agent image (27 MB
/// in a debug build) in memory, and its allocator keeps some of what the genuine streams
/// used.
const RSS_BOUND_KIB: u64 = 96 * 1024;

/// Bytes of stdin the master may take from a session whose agent never returns credit:
/// the window it grants at most, what one read may hold beyond, and the pipe.
const STDIN_BOUND: usize = DEFAULT_WINDOW as usize + (1 << 20);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "agent") {
        std::process::exit(agent::main(&args[2..]));
    }
    let tests: [(&str, fn()); 4] = [
        ("attacks_from_a_host_cost_only_its_link", root_attacks),
        (
            "a_hostile_agent_below_a_genuine_one_is_cut_off",
            child_attacks,
        ),
        ("what_an_agent_says_about_itself_is_shown_escaped", escapes),
        ("a_stderr_flood_costs_no_memory_and_no_log", stderr_flood),
    ];
    std::process::exit(run_tests(&args[1..], &tests));
}

/// A small stand-in for libtest: runs the tests whose names contain one of the filter
/// words (all without one), one after the other, each on a thread of its own (the
/// harness's sshd lives as long as the thread that started it). Flags are ignored.
fn run_tests(args: &[String], tests: &[(&str, fn())]) -> i32 {
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return 0;
    }
    let chosen: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", chosen.len());
    let mut failed = Vec::new();
    for (name, test) in chosen {
        let ok = thread::Builder::new()
            .name(name.to_string())
            .spawn(*test)
            .expect("spawn a test thread")
            .join()
            .is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(*name);
        }
    }
    if failed.is_empty() {
        println!("\ntest result: ok");
        0
    } else {
        println!("\nfailures: {failed:?}\ntest result: FAILED");
        1
    }
}

/// A host whose account's agent cache holds the hostile agent under the genuine hash.
/// The cache is private to this sshd (its sessions get their own `XDG_RUNTIME_DIR`, the
/// first place stage 1 looks), so other hosts of the same account keep the real agent.
struct HostileHost {
    sshd: Sshd,
    cache: PathBuf,
    _dir: tempfile::TempDir,
}

impl HostileHost {
    fn start() -> HostileHost {
        let user = test_user();
        let dir = tempfile::Builder::new()
            .prefix("mitossh-hostile-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let xdg = dir.path().join("xdg");
        let cache = xdg.join("mitossh");
        std::fs::create_dir_all(&cache).unwrap();
        let image = std::fs::read(bin("mitossh-agent")).unwrap();
        let copy = cache.join(cache_name(Arch::X86_64, &content_hash(&image)));
        std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
        for (path, mode) in [(&xdg, 0o700), (&cache, 0o700), (&copy, 0o700)] {
            chown(path, Some(user.uid), Some(user.gid)).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let sshd =
            Sshd::start_with_config(user, &format!("SetEnv XDG_RUNTIME_DIR={}\n", xdg.display()));
        HostileHost {
            sshd,
            cache,
            _dir: dir,
        }
    }

    /// What the next agent started on this host does.
    fn arm(&self, attack: Attack) {
        let mode = self.cache.join(agent::MODE_FILE);
        std::fs::write(&mode, attack.name()).unwrap();
        std::fs::set_permissions(&mode, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// A field of `/proc/PID/status` in KiB (`VmRSS:`, `VmHWM:`).
fn status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Starts a new peak: VmHWM becomes the current VmRSS.
fn reset_peak(pid: i32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// A `cat` on a genuine host, fed in halves around an attack elsewhere: it must echo every
/// byte, in order, and nothing else.
struct Echo {
    child: Child,
    stdin: Option<ChildStdin>,
    got: Arc<Mutex<Vec<u8>>>,
    reader: Option<thread::JoinHandle<()>>,
    sent: Vec<u8>,
}

impl Echo {
    fn start(cmd: &mut Command) -> Echo {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let reader = thread::spawn({
            let got = got.clone();
            move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = out.read(&mut buf) {
                    got.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }
        });
        Echo {
            stdin: child.stdin.take(),
            child,
            got,
            reader: Some(reader),
            sent: Vec::new(),
        }
    }

    /// Sends `data` and waits until all of it came back.
    fn feed(&mut self, data: &[u8]) {
        self.stdin.as_mut().unwrap().write_all(data).unwrap();
        self.sent.extend_from_slice(data);
        let want = self.sent.len();
        wait_until(T, "the echo on the genuine host", || {
            self.got.lock().unwrap().len() >= want
        });
    }

    /// Ends the stream: it must exit 0 having echoed exactly what it was sent.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = wait_child(&mut self.child, T, "the echo to end");
        self.reader.take().unwrap().join().unwrap();
        let got = self.got.lock().unwrap();
        assert!(
            status.success(),
            "the echo on the genuine host failed: {status}"
        );
        assert_eq!(got.len(), self.sent.len(), "echoed length");
        assert!(*got == self.sent, "the echo differs from its input");
    }
}

/// How a session on the hostile host ended.
struct Outcome {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
    /// Bytes of stdin the master took.
    stdin_taken: usize,
}

/// Runs a session whose stdout nobody reads until it ends (a slow reader: what the agent
/// sends piles up in the master, if anywhere), feeding `stdin_bytes` of stdin as fast as
/// the master takes them.
fn attack_session(cmd: &mut Command, stdin_bytes: usize) -> Outcome {
    let mut child = cmd
        .stdin(if stdin_bytes > 0 {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let taken = Arc::new(AtomicUsize::new(0));
    let writer = child.stdin.take().map(|mut stdin| {
        let taken = taken.clone();
        thread::spawn(move || {
            let chunk = vec![b's'; 64 * 1024];
            while taken.load(Ordering::SeqCst) < stdin_bytes {
                match stdin.write(&chunk) {
                    Ok(n) => taken.fetch_add(n, Ordering::SeqCst),
                    Err(_) => break,
                };
            }
        })
    });
    let stderr = in_background(child.stderr.take().unwrap());
    let status = wait_child(&mut child, T, "the attacked session to end");
    let stdout = in_background(child.stdout.take().unwrap());
    let collect = |rx: mpsc::Receiver<Vec<u8>>| rx.recv_timeout(T).expect("output closes");
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    if let Some(w) = writer {
        // It stops at EPIPE once the master let go of the session's stdin.
        w.join().unwrap();
    }
    Outcome {
        status,
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        stdin_taken: taken.load(Ordering::SeqCst),
    }
}

fn in_background(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Checks a process's peak memory during an attack against the bounds.
fn assert_bounded(who: &str, attack: Attack, before: u64, peak: u64) {
    assert_grows_at_most(who, attack, before, peak, 0);
}

/// Like [`assert_bounded`], allowing `extra` KiB more growth.
fn assert_grows_at_most(who: &str, attack: Attack, before: u64, peak: u64, extra: u64) {
    assert!(
        peak <= before + GROWTH_BOUND_KIB + extra,
        "{}: {who} grew from {before} KiB to {peak} KiB",
        attack.name()
    );
    assert!(
        peak <= RSS_BOUND_KIB + extra,
        "{}: {who}'s peak RSS was {peak} KiB",
        attack.name()
    );
}

/// Checks how an attacked session ended; returns the error line it showed.
fn assert_dropped(attack: Attack, out: &Outcome, master: &Master) -> String {
    let log = master.log();
    assert_eq!(
        out.status.code(),
        Some(255),
        "{}: the session must fail like a lost ssh connection\nstderr: {}\nmaster log tail:\n{}",
        attack.name(),
        out.stderr,
        tail(&log)
    );
    assert!(
        out.stderr.contains("broke the protocol"),
        "{}: a clear error, not {:?}\nmaster log tail:\n{}",
        attack.name(),
        out.stderr,
        tail(&log)
    );
    assert_eq!(out.stderr.lines().count(), 1, "one line: {:?}", out.stderr);
    assert!(!out.stderr.contains('\u{1b}'), "{:?}", out.stderr);
    out.stderr.trim_end().to_string()
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Per attack: the memory before it and at its peak, and the error shown.
fn report(title: &str, rows: &[(Attack, u64, u64, String)]) {
    eprintln!("{title}");
    for (attack, before, peak, error) in rows {
        eprintln!(
            "  {:<16} {before:>6} -> {peak:>6} KiB  {error}",
            attack.name()
        );
    }
}

fn root_attacks() {
    let genuine = Sshd::start();
    let hostile = HostileHost::start();
    let master = Master::start();
    // The genuine host first: its context and streams have the lower ids, which the
    // attacks aim at.
    check(&output_within(
        master.ssh().args(genuine.ssh_args()).arg("true"),
        b"",
        T,
    ));
    let idle = status_kib(master.pid(), "VmRSS:");
    let mut rows = Vec::new();
    for (i, attack) in Attack::FLOODS.into_iter().enumerate() {
        hostile.arm(attack);
        let mut echo = Echo::start(master.ssh().args(genuine.ssh_args()).arg("cat"));
        echo.feed(&random_bytes(4 << 20, 2 * i as u64 + 1));
        reset_peak(master.pid());
        let before = status_kib(master.pid(), "VmRSS:");
        let stdin_bytes = if attack == Attack::WindowMax {
            64 << 20
        } else {
            0
        };
        let out = attack_session(
            master.ssh().args(hostile.sshd.ssh_args()).arg("cat"),
            stdin_bytes,
        );
        let peak = status_kib(master.pid(), "VmHWM:");
        let error = assert_dropped(attack, &out, &master);
        assert!(
            error.contains(hostile.sshd.alias()),
            "the error names the host: {error}"
        );
        assert_bounded("the master", attack, before, peak);
        if attack == Attack::WindowMax {
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                format!("received {DEFAULT_WINDOW}\n"),
                "the master sends at most the window it allows itself, whatever the agent grants"
            );
            assert!(
                out.stdin_taken <= STDIN_BOUND,
                "the master took {} bytes of stdin for an agent that never returned credit",
                out.stdin_taken
            );
        }
        echo.feed(&random_bytes(4 << 20, 2 * i as u64 + 2));
        echo.finish();
        rows.push((attack, before, peak, error));
    }
    let drops = master.log().matches("dropping the link to").count();
    assert_eq!(drops, Attack::FLOODS.len(), "one dropped link per attack");
    assert_eq!(
        genuine.accepted_connections(),
        1,
        "the genuine host's connection carried on"
    );
    report(
        &format!("master RSS idle {idle} KiB; under attack from the host itself:"),
        &rows,
    );
}

/// The agent processes (running from their cached copy, or from memory) that `sshd`
/// started for the test user.
fn agents_of(sshd: &Sshd) -> Vec<i32> {
    descendants(sshd.pid())
        .into_iter()
        .filter(|p| {
            p.exe.as_ref().is_some_and(|e| {
                e.to_string_lossy().starts_with("/memfd:mitossh-agent")
                    || e.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("mitossh-agent-"))
            })
        })
        .map(|p| p.pid)
        .collect()
}

/// A client configuration in which `hop`'s agent reaches `target` with a key of its own,
/// as the test user (see `ssh_can_run_on_the_hop_instead` in tests/escalation.rs).
fn hop_config(dir: &Path, hop: &Sshd, target: &Sshd) -> PathBuf {
    let user = test_user();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hop_key = dir.join("hop_key");
    std::fs::copy(target.key(), &hop_key).unwrap();
    chown(&hop_key, Some(user.uid), Some(user.gid)).unwrap();
    std::fs::set_permissions(&hop_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let target_cfg = std::fs::read_to_string(target.ssh_config())
        .unwrap()
        .replace(
            &target.key().display().to_string(),
            &hop_key.display().to_string(),
        );
    let cfg = dir.join("ssh_config");
    let hop_cfg = std::fs::read_to_string(hop.ssh_config()).unwrap();
    std::fs::write(&cfg, format!("{hop_cfg}\n{target_cfg}")).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    cfg
}

fn child_attacks() {
    let hop = Sshd::start();
    let hostile = HostileHost::start();
    let master = Master::start();
    let work = tempfile::Builder::new()
        .prefix("mitossh-hostile-hop-")
        .tempdir()
        .unwrap();
    let cfg = hop_config(work.path(), &hop, &hostile.sshd);
    let on_hop = |cmd: &str| {
        let mut c = master.ssh();
        c.arg("-F").arg(&cfg).arg(hop.alias()).arg(cmd);
        c
    };
    check(&output_within(&mut on_hop("true"), b"", T));
    let image_kib = std::fs::metadata(bin("mitossh-agent")).unwrap().len() / 1024;
    let [hop_agent] = agents_of(&hop)[..] else {
        panic!("one agent on the hop: {:?}", agents_of(&hop));
    };
    let mut rows = Vec::new();
    for (i, attack) in Attack::FLOODS.into_iter().enumerate() {
        hostile.arm(attack);
        // A stream on the hostile agent's parent: the same link as the attack's.
        let mut echo = Echo::start(&mut on_hop("cat"));
        echo.feed(&random_bytes(4 << 20, 2 * i as u64 + 1));
        reset_peak(master.pid());
        reset_peak(hop_agent);
        let before = status_kib(master.pid(), "VmRSS:");
        let hop_before = status_kib(hop_agent, "VmRSS:");
        let stdin_bytes = if attack == Attack::WindowMax {
            64 << 20
        } else {
            0
        };
        let out = attack_session(
            master
                .ssh()
                .arg("-F")
                .arg(&cfg)
                .arg(hostile.sshd.alias())
                .arg("cat")
                .env("MITOSSH_VIA", hop.alias())
                .env("MITOSSH_VIA_MODE", "ssh"),
            stdin_bytes,
        );
        let peak = status_kib(master.pid(), "VmHWM:");
        let hop_peak = status_kib(hop_agent, "VmHWM:");
        let error = assert_dropped(attack, &out, &master);
        assert_bounded("the master", attack, before, peak);
        // Starting ssh from the hop, the agent maps its own image and reads it through
        // (its hash; the upload if the host has none), attack or not.
        assert_grows_at_most("the hop's agent", attack, hop_before, hop_peak, image_kib);
        if attack == Attack::WindowMax {
            assert!(out.stdin_taken <= STDIN_BOUND, "{}", out.stdin_taken);
        }
        echo.feed(&random_bytes(4 << 20, 2 * i as u64 + 2));
        echo.finish();
        rows.push((
            attack,
            before,
            peak,
            format!("hop agent {hop_before} -> {hop_peak} KiB; {error}"),
        ));
    }
    assert_eq!(
        hop.accepted_connections(),
        1,
        "the hop's context lived through every attack from below it"
    );
    assert_eq!(agents_of(&hop), [hop_agent], "the same agent on the hop");
    report("under attack from a context below a genuine agent:", &rows);
}

fn escapes() {
    let hostile = HostileHost::start();
    hostile.arm(Attack::Escapes);
    let master = Master::start();
    let out = output_within(
        master.ssh().args(hostile.sshd.ssh_args()).arg("true"),
        b"",
        T,
    );
    assert_eq!(check(&out), "ok\n");

    for view in ["status", "tree"] {
        let out = output_within(
            master
                .command(bin("mitossh"))
                .arg(view)
                .arg("--socket")
                .arg(&master.socket),
            b"",
            T,
        );
        let shown = check(&out);
        assert_safe(&shown);
        let lines: Vec<&str> = shown.lines().collect();
        let expected = if view == "status" { 3 } else { 2 };
        assert_eq!(lines.len(), expected, "no forged line in {view}:\n{shown}");
        let line = lines.last().unwrap();
        assert!(
            line.contains(r"evil\x1b]0;pwned\x07\x0a   9"),
            "the hostname escaped in {view}: {line}"
        );
        assert!(
            line.contains(r"mallory\x1b[31m\x1b[2J\u{9b}1m\u{202e}"),
            "{line}"
        );
        assert!(
            line.len() < 1000,
            "long names are cut short: {} bytes",
            line.len()
        );
    }

    let out = output_within(
        master.ssh().args(hostile.sshd.ssh_args()).arg("fail"),
        b"",
        T,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert_safe(&err);
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.contains(r"no such thing\x1b[2J\x0d\x0assh: everything is fine"),
        "{err}"
    );
}

/// Nothing in `text` that a terminal would act on: no control characters other than
/// newlines, no C1 controls, no bidirectional overrides.
fn assert_safe(text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|c| (c.is_control() && *c != '\n') || ('\u{202a}'..='\u{202e}').contains(c))
        .collect();
    assert!(bad.is_empty(), "unescaped {bad:?} in {text:?}");
}

/// The agent's stderr reaches the master through its ssh's stderr: hundreds of MiB in one
/// line with escape sequences must cost neither memory nor log space, nor another host's
/// stream, and the session itself still works.
fn stderr_flood() {
    let genuine = Sshd::start();
    let hostile = HostileHost::start();
    let master = Master::start();
    check(&output_within(
        master.ssh().args(genuine.ssh_args()).arg("true"),
        b"",
        T,
    ));
    hostile.arm(Attack::StderrFlood);
    let mut echo = Echo::start(master.ssh().args(genuine.ssh_args()).arg("cat"));
    echo.feed(&random_bytes(4 << 20, 99));
    reset_peak(master.pid());
    let before = status_kib(master.pid(), "VmRSS:");
    // The agent floods once the stream opens, after its connection is made.
    let out = output_within(master.ssh().args(hostile.sshd.ssh_args()).arg("ok"), b"", T);
    let peak = status_kib(master.pid(), "VmHWM:");
    echo.feed(&random_bytes(4 << 20, 100));
    echo.finish();
    assert_grows_at_most("the master", Attack::StderrFlood, before, peak, 16 << 10);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "ok\n");
    assert_safe(&stderr);
    let log = master.log();
    assert!(
        log.len() < 1 << 20,
        "the master's log grew to {} bytes",
        log.len()
    );
    assert_safe(&log);
    println!(
        "stderr flood (256 MiB, one line): master RSS {before} -> {peak} KiB, log {} bytes",
        log.len()
    );
}
