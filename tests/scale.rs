//! Many hosts at once, under the descriptor limit most logins have (a soft limit of
//! 1024): every host of a 200-host run connects and runs; at most K handshakes are under
//! way at any time, and `mitossh status` and the status line show how connecting goes;
//! hosts that cannot be connected are listed once with their reason while the rest run;
//! a master whose hard limit is too low fails single requests with a clear message and
//! keeps serving the others.
//!
//! The hosts are aliases of one private sshd, each its own connection (see
//! `common::fleet`).

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(600);

/// The limit a plain login has: every program of these tests starts with it.
const SOFT_LIMIT: u64 = 1024;

fn plain_login_limits() {
    set_soft_descriptor_limit(SOFT_LIMIT);
}

/// Samples `pid`'s open descriptors every few milliseconds until stopped; the peak.
struct PeakDescriptors {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl PeakDescriptors {
    fn watch(pid: i32) -> PeakDescriptors {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak = 0;
                while !stop.load(Ordering::Relaxed) {
                    peak = peak.max(open_descriptors(pid));
                    std::thread::sleep(Duration::from_millis(5));
                }
                peak
            })
        };
        PeakDescriptors { stop, thread }
    }

    fn peak(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn two_hundred_hosts_under_a_soft_limit_of_1024_all_connect_and_run() {
    plain_login_limits();
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let hosts = host_names("h", 200);
    let cfg = FleetConfig::new()
        .hosts(&sshd, &hosts, FAST_KEX)
        .write(work.path());
    let master = Master::start();
    wait_until(
        Duration::from_secs(10),
        "the master to raise its limit",
        || master.log().contains("descriptor limit raised from 1024"),
    );
    assert!(soft_descriptor_limit(master.pid()).unwrap() > SOFT_LIMIT);

    // What a remote command sees through plain ssh, for comparison.
    let plain = output_within(
        Command::new("/usr/bin/ssh")
            .arg("-F")
            .arg(&cfg)
            .arg(&hosts[0])
            .arg("ulimit -Sn"),
        b"",
        T,
    );
    let plain_limit = check(&plain).trim().to_string();
    assert_eq!(plain_limit, "1024");

    let peak = PeakDescriptors::watch(master.pid());
    let started = Instant::now();
    let out = output_within(
        Command::new(bin("mitossh"))
            .arg("run")
            .arg("-H")
            .arg(hosts.join(","))
            .arg("-F")
            .arg(&cfg)
            .arg("--socket")
            .arg(&master.socket)
            .arg("--json")
            // All 200 at once, for a while: every session open together.
            .args(["--", "echo limit $(ulimit -Sn) on {host}; sleep 2"]),
        b"",
        T,
    );
    let took = started.elapsed();
    let peak = peak.peak();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{said}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let procs = report["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 200);
    for p in procs {
        assert_eq!(p["status"], "exit 0", "{p}");
    }
    assert_eq!(report["unreachable"].as_array().unwrap().len(), 0);
    // Each line from its own host; remote commands got the limit plain ssh gives them.
    let mut seen = HashMap::new();
    for line in said.lines() {
        if let Some((who, text)) = line.split_once(" | ") {
            let host = who.split_whitespace().next().unwrap();
            assert_eq!(text, format!("limit {plain_limit} on {host}"), "{line}");
            *seen.entry(host.to_string()).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), 200, "{said}");
    // The master needed more than the soft limit it was started with.
    assert!(
        peak > SOFT_LIMIT as usize,
        "the master peaked at {peak} descriptors: this run did not need the raised limit"
    );
    let log = master.log();
    assert!(!log.contains("file descriptors"), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
    // All 200 connected; nothing failed, nothing still connecting (no line about it).
    let status = master.status();
    let rows = status
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("ssh"))
        .count();
    assert_eq!(rows, 200, "{status}");
    assert!(!status.contains("connecting:"), "{status}");
    eprintln!("200 hosts, cold: {took:?}; the master peaked at {peak} descriptors");
}

/// A ProxyCommand that logs when each ssh starts and takes `delay` before it connects:
/// every handshake lasts at least that long.
fn slow_proxy(log: &std::path::Path, delay: &str) -> String {
    format!(
        "  ProxyCommand sh -c 'echo \"$(date +%%s%%N) %n\" >> {}; sleep {delay}; exec nc 127.0.0.1 %p'",
        log.display()
    )
}

/// Start times (seconds) of the ssh processes the proxy saw, in order, with their hosts.
fn proxy_starts(log: &std::path::Path) -> Vec<(f64, String)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut starts: Vec<(f64, String)> = text
        .lines()
        .filter_map(|l| {
            let (t, host) = l.split_once(' ')?;
            Some((t.parse::<f64>().ok()? / 1e9, host.to_string()))
        })
        .collect();
    starts.sort_by(|a, b| a.0.total_cmp(&b.0));
    starts
}

#[test]
fn at_most_k_handshakes_at_once_the_rest_wait_and_progress_shows() {
    plain_login_limits();
    const K: usize = 3;
    const DELAY: f64 = 0.6;
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("proxy.log");
    let hosts = host_names("w", 12);
    let cfg = FleetConfig::new()
        .hosts(&sshd, &hosts, &slow_proxy(&log, &DELAY.to_string()))
        .write(work.path());
    let master = Master::start_with(&["--connect-window", &K.to_string()]);

    // On a terminal, with the status line; `mitossh status` meanwhile.
    let mut cmd = Command::new(bin("mitossh"));
    cmd.arg("run")
        .arg("-H")
        .arg(hosts.join(","))
        .arg("-F")
        .arg(&cfg)
        .arg("--socket")
        .arg(&master.socket)
        .args(["--", "echo up {host}"]);
    let (term, mut child) = Terminal::spawn(&mut cmd, 30, 160);
    let mut window_seen = false;
    wait_until(
        Duration::from_secs(60),
        "mitossh status to show the window full and hosts waiting",
        || {
            let status = master.status();
            let line = status.lines().nth(1).unwrap_or("").to_string();
            window_seen = line.contains(&format!("{K} under way"))
                && line.contains(&format!("(window {K})"))
                && !line.contains(" 0 waiting");
            window_seen
        },
    );
    term.expect("connecting: ", Duration::from_secs(60));
    term.expect("/12 hosts connected", Duration::from_secs(60));
    let status = wait_child(&mut child, T, "mitossh run");
    let shown = term.text();
    assert_eq!(status.code(), Some(0), "{shown}");
    for h in &hosts {
        assert!(shown.contains(&format!("up {h}")), "{shown}");
    }

    assert_window(&proxy_starts(&log), hosts.len(), K, DELAY);
}

/// Seen from the ssh side: every handshake takes at least `delay`, so K + 1 starts within
/// `delay` would mean K + 1 at once; and the window was used (K started together).
fn assert_window(starts: &[(f64, String)], hosts: usize, k: usize, delay: f64) {
    assert_eq!(starts.len(), hosts, "{starts:?}");
    for w in starts.windows(k + 1) {
        let span = w[k].0 - w[0].0;
        assert!(
            span >= delay * 0.9,
            "{} ssh handshakes started within {span:.3}s (window {k}): {starts:?}",
            k + 1
        );
    }
    assert!(
        starts[k - 1].0 - starts[0].0 < delay * 0.8,
        "the first {k} did not start together: {starts:?}"
    );
    let total = starts[starts.len() - 1].0 - starts[0].0;
    assert!(
        total >= delay * ((hosts / k - 1) as f64) * 0.9,
        "{hosts} hosts through a window of {k} in {total:.2}s"
    );
}

/// The window holds on a gateway as well: its agent, running the ssh to each host below
/// it, has at most K handshakes under way at once.
#[test]
fn a_gateway_runs_at_most_k_handshakes_at_once() {
    plain_login_limits();
    const K: usize = 3;
    const DELAY: f64 = 0.6;
    let sshd = Sshd::start();
    let work = tempfile::Builder::new()
        .prefix("mitossh-tier-window-")
        .tempdir()
        .unwrap();
    let gateway_key = key_for_test_user(&sshd, work.path());
    // The proxies run as the test user, on the gateway.
    let log = work.path().join("proxy.log");
    std::fs::write(&log, "").unwrap();
    let user = sshd.user();
    std::os::unix::fs::chown(&log, Some(user.uid), Some(user.gid)).unwrap();
    let hosts = host_names("g", 9);
    let cfg = FleetConfig::new()
        .hosts(&sshd, &["gw".to_string()], "")
        .hosts_with_key(
            &sshd,
            &hosts,
            &gateway_key,
            &slow_proxy(&log, &DELAY.to_string()),
        )
        .write(work.path());
    let master = Master::start_with(&["--connect-window", &K.to_string()]);
    let out = output_within(
        Command::new(bin("mitossh"))
            .arg("run")
            .arg("-H")
            .arg(hosts.join(","))
            .arg("-F")
            .arg(&cfg)
            .args(["--via", "gw", "--via-mode", "ssh", "--socket"])
            .arg(&master.socket)
            .args(["--", "echo up {host}"]),
        b"",
        T,
    );
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    for h in &hosts {
        assert!(said.contains(&format!("up {h}")), "{said}");
    }
    assert_window(&proxy_starts(&log), hosts.len(), K, DELAY);
}

#[test]
fn hosts_that_cannot_connect_are_listed_once_with_their_reason_and_the_rest_run() {
    plain_login_limits();
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let good = host_names("ok", 8);
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let wrong_key = work.path().join("wrong_key");
    check(&output_within(
        Command::new("/usr/bin/ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&wrong_key),
        b"",
        T,
    ));
    let mut cfg = FleetConfig::new();
    cfg.hosts(&sshd, &good, "");
    let block = |name: &str, lines: &str| {
        format!(
            "Host {name}\n  HostName 127.0.0.1\n  User {}\n  StrictHostKeyChecking no\n  \
             UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n  HostKeyAlias {name}\n{lines}",
            sshd.user().name
        )
    };
    // Nothing listens there.
    for name in ["down1", "down2"] {
        cfg.raw(&block(name, &format!("  Port {closed_port}\n")));
    }
    // The server does not know this key.
    cfg.raw(&block(
        "badkey",
        &format!(
            "  Port {}\n  IdentityFile {}\n  IdentitiesOnly yes\n",
            sshd.port(),
            wrong_key.display()
        ),
    ));
    // A server that never says a word: the master's connect timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    cfg.raw(&block(
        "blackhole",
        &format!("  Port {}\n", silent.local_addr().unwrap().port()),
    ));
    let cfg = cfg.write(work.path());
    let master = Master::start_with(&["--connect-timeout", "4s"]);
    let mut hosts = good.clone();
    hosts.extend(["down1", "badkey", "down2", "blackhole"].map(String::from));
    let out = output_within(
        Command::new(bin("mitossh"))
            .arg("run")
            .arg("-H")
            .arg(hosts.join(","))
            .args(["-n", "2"])
            .arg("-F")
            .arg(&cfg)
            .arg("--socket")
            .arg(&master.socket)
            .arg("--json")
            .args(["--", "echo ran {host}"]),
        b"",
        T,
    );
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Once per host, with its reason.
    let unreachable: HashMap<String, String> = report["unreachable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["host"].as_str().unwrap().to_string(),
                u["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: HashMap<String, String> = [
        ("down1", "unreachable"),
        ("down2", "unreachable"),
        ("badkey", "auth"),
        ("blackhole", "timeout"),
    ]
    .into_iter()
    .map(|(h, r)| (h.to_string(), r.to_string()))
    .collect();
    assert_eq!(unreachable, expected, "{said}");
    assert_eq!(report["unreachable"].as_array().unwrap().len(), 4);
    for u in report["unreachable"].as_array().unwrap() {
        assert!(!u["message"].as_str().unwrap().is_empty(), "{u}");
    }
    // The rest ran, and the summary on stderr lists each failed host once.
    for p in report["processes"].as_array().unwrap() {
        let host = p["host"].as_str().unwrap();
        match expected.get(host) {
            Some(reason) => {
                assert_eq!(p["status"], format!("not connected ({reason})"), "{p}");
                assert_eq!(p["failed"], true, "{p}");
            }
            None => assert_eq!(p["status"], "exit 0", "{p}"),
        }
    }
    for h in &good {
        assert_eq!(said.matches(&format!("ran {h}")).count(), 2, "{said}");
    }
    assert!(
        said.contains("4 of 12 hosts could not be connected:"),
        "{said}"
    );
    for h in expected.keys() {
        let listed = said
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("{h} ")))
            .count();
        assert_eq!(listed, 1, "{h} listed once:\n{said}");
    }
    assert!(said.contains("Connection refused"), "{said}");
    assert!(said.contains("Permission denied"), "{said}");
    // `mitossh status` keeps them too.
    let status = master.status();
    assert!(status.contains("4 failed since start"), "{status}");
    assert!(
        status.contains("blackhole") && status.contains("timeout"),
        "{status}"
    );
}

#[test]
fn a_master_out_of_descriptors_fails_single_calls_clearly_and_serves_the_rest() {
    plain_login_limits();
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let hosts = host_names("f", 40);
    let cfg = FleetConfig::new()
        .hosts(&sshd, &hosts, "")
        .write(work.path());
    // A user whose hard limit is low: raising the soft one does not help.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("master.sock");
    let log = dir.path().join("master.log");
    let mut cmd = Command::new(bin("mitossh"));
    cmd.arg("master")
        .arg("--socket")
        .arg(&socket)
        .args(["--connect-window", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    with_descriptor_limits(&mut cmd, 48, 48);
    let mut master = StopOnDrop(cmd.spawn().unwrap());
    wait_until(Duration::from_secs(20), "the master to listen", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let shims = shim_dir(dir.path());

    let ok = Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = hosts
        .iter()
        .map(|h| {
            let mut c = Command::new(shims.join("ssh"));
            c.env("MITOSSH_SOCKET", &socket)
                .env("MITOSSH_STRICT", "1")
                .arg("-F")
                .arg(&cfg)
                .arg(h)
                .arg(format!("echo ok-{h}; sleep 1"));
            std::thread::spawn(move || output_within(&mut c, b"", T))
        })
        .collect();
    let mut failures = Vec::new();
    for (h, call) in hosts.iter().zip(calls) {
        let out = call.join().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            assert_eq!(stdout, format!("ok-{h}\n"));
            ok.fetch_add(1, Ordering::Relaxed);
        } else {
            // Never a broken pipe or an end of file: the reason, and ssh's status.
            assert_eq!(out.status.code(), Some(255), "{stderr}");
            assert!(
                stderr.contains("out of file descriptors"),
                "{h}: {stderr}\nthe master's log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(stdout.is_empty(), "{h}: a failed call printed {stdout:?}");
            failures.push(stderr);
        }
    }
    let ok = ok.load(Ordering::Relaxed);
    assert!(ok > 0, "no call succeeded: {failures:?}");
    assert!(!failures.is_empty(), "all 40 succeeded under a limit of 48");
    // The master carries on, and did not spin or flood its log meanwhile.
    let again = output_within(
        Command::new(shims.join("ssh"))
            .env("MITOSSH_SOCKET", &socket)
            .env("MITOSSH_STRICT", "1")
            .arg("-F")
            .arg(&cfg)
            .arg(&hosts[0])
            .arg("echo still"),
        b"",
        T,
    );
    assert_eq!(check(&again), "still\n");
    let text = std::fs::read_to_string(&log).unwrap();
    let accept_warnings = text.lines().filter(|l| l.contains("accept:")).count();
    assert!(
        accept_warnings < 20,
        "{accept_warnings} accept warnings:\n{text}"
    );
    assert!(
        text.len() < 256 * 1024,
        "the log grew to {} bytes",
        text.len()
    );
    eprintln!("{ok} of 40 calls ran, {} refused clearly", failures.len());
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(master.0.id() as i32, libc::SIGTERM) };
    wait_child(&mut master.0, Duration::from_secs(20), "the master to stop");
}

/// Two tiers: the master's one ssh goes to a gateway, whose agent runs the ssh to each of
/// 50 hosts (`--via gw --via-mode ssh`). Each line comes attributed to its host, from an
/// agent of that host's own; the master runs one ssh in all; ^C stops every process on
/// every host.
#[test]
fn fifty_hosts_through_a_gateway_one_ssh_from_the_master_and_stop_leaves_nothing() {
    plain_login_limits();
    let sshd = Sshd::start();
    let work = tempfile::Builder::new()
        .prefix("mitossh-tier-")
        .tempdir()
        .unwrap();
    // The gateway's agent runs as the test user: its ssh needs a key and a configuration
    // of its own to read.
    let gateway_key = key_for_test_user(&sshd, work.path());
    let hosts = host_names("t", 50);
    let cfg = FleetConfig::new()
        .hosts(&sshd, &["gw".to_string()], "")
        .hosts_with_key(&sshd, &hosts, &gateway_key, FAST_KEX)
        .write(work.path());
    let master = Master::start();
    let marker = unique_marker();
    let mut run = Command::new(bin("mitossh"))
        .arg("run")
        .arg("-H")
        .arg(hosts.join(","))
        .arg("-F")
        .arg(&cfg)
        .args(["--via", "gw", "--via-mode", "ssh", "--socket"])
        .arg(&master.socket)
        .arg("--json")
        .args([
            "--",
            &format!("echo up {{host}} agent $PPID; exec -a {marker} sleep 1000"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = LineReader::new(run.stderr.take().unwrap());
    lines.wait_for(T, "every host to say it is up", |text| {
        text.matches(" agent ").count() >= hosts.len()
    });

    // Each line from its own host, by an agent of its own.
    let mut agents = HashMap::new();
    for line in lines.text().lines() {
        if let Some((who, text)) = line.split_once(" | ") {
            let host = who.split_whitespace().next().unwrap();
            let (said_host, agent) = text
                .strip_prefix("up ")
                .and_then(|t| t.split_once(" agent "))
                .unwrap_or_else(|| panic!("{line}"));
            assert_eq!(said_host, host, "{line}");
            assert!(agents.insert(host.to_string(), agent.to_string()).is_none());
        }
    }
    assert_eq!(agents.len(), hosts.len(), "{}", lines.text());
    let distinct: std::collections::HashSet<_> = agents.values().collect();
    assert_eq!(distinct.len(), hosts.len(), "{agents:?}");

    // The master's own ssh: one, to the gateway. The other 50 run under the gateway's
    // agent, as the test user; sshd saw 51 logins.
    let master_ssh: Vec<_> = descendants(master.pid())
        .into_iter()
        .filter(|p| p.exe.as_deref() == Some(std::path::Path::new("/usr/bin/ssh")))
        .collect();
    assert_eq!(master_ssh.len(), 1, "{master_ssh:?}");
    assert!(
        master_ssh[0].cmdline.iter().any(|a| a == "gw"),
        "{master_ssh:?}"
    );
    let cfg_arg = cfg.display().to_string();
    let uid = sshd.user().uid;
    let tier_ssh = processes_matching(|p| {
        p.uid == uid
            && p.exe.as_deref() == Some(std::path::Path::new("/usr/bin/ssh"))
            && p.cmdline.contains(&cfg_arg)
    });
    assert_eq!(tier_ssh.len(), hosts.len(), "{tier_ssh:?}");
    assert_eq!(sshd.accepted_connections(), hosts.len() + 1);

    // ^C: everything stops, on every host.
    // SAFETY: signalling the process this test started.
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    let status = wait_child(&mut run, T, "mitossh run to stop on ^C");
    let mut json = String::new();
    std::io::Read::read_to_string(&mut run.stdout.take().unwrap(), &mut json).unwrap();
    assert_eq!(status.code(), Some(130), "{}", lines.text());
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["processes"].as_array().unwrap().len(), hosts.len());
    assert_eq!(report["unreachable"].as_array().unwrap().len(), 0);
    let left = processes_matching(|p| p.cmdline.iter().any(|a| a.contains(&marker)));
    assert!(left.is_empty(), "left running after the run: {left:?}");
    let log = master.log();
    assert!(!log.contains("file descriptors"), "{log}");
}

/// Collects a child's output lines on a thread of its own, for waiting on what it said.
struct LineReader {
    text: Arc<std::sync::Mutex<String>>,
}

impl LineReader {
    fn new(from: impl std::io::Read + Send + 'static) -> LineReader {
        let text = Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(from);
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        LineReader { text }
    }

    fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    fn wait_for(&self, timeout: Duration, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.text()) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}:\n{}",
                self.text()
            );
            std::thread::sleep(POLL);
        }
    }
}
