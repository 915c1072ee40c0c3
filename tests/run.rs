//! `mitossh run`: 2 hosts × 24 processes of two kinds, started together, output lines whole
//! and attributed, stopped together at the deadline, files fetched, nothing left behind;
//! and a failure that stops everything.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(180);

/// A plan: on each host, 12 "replica" and 12 "load" processes with different arguments.
fn plan(a: &Sshd, b: &Sshd, cfg: &Path, marker: &str, extra: &str) -> String {
    let mut text = format!(
        "duration = \"3s\"\ngrace = \"2s\"\nssh_args = [\"-F\", \"{}\"]\n{extra}\n",
        cfg.display()
    );
    for host in [a.alias(), b.alias()] {
        text.push_str(&format!(
            r#"
[[host]]
address = "{host}"

[[host.process]]
name = "replica"
count = 12
command = "mkdir -p /tmp/{marker}; echo replica-{{i}} > /tmp/{marker}/replica-{{i}}.txt; echo start {{i}} replica port={{port}}; while :; do echo tick {{i}}; sleep 0.2; done"
vars = {{ port = "70{{i}}" }}
fetch = ["/tmp/{marker}/replica-{{i}}.txt"]

[[host.process]]
name = "load"
count = 12
command = "echo start {{i}} load target={{host}} n={{n}} >&2; while :; do echo tick {{i}}; sleep 0.3; done"
"#
        ));
    }
    text
}

/// Two hosts, a client config naming both, a scratch directory and a unique marker.
struct Setup {
    a: Sshd,
    b: Sshd,
    work: tempfile::TempDir,
    cfg: std::path::PathBuf,
    marker: String,
    plan_file: std::path::PathBuf,
}

impl Setup {
    /// Call from the test's own thread: the sshds live as long as it.
    fn new() -> Setup {
        let a = Sshd::start();
        let b = Sshd::start();
        let work = tempfile::tempdir().unwrap();
        let cfg = joint_config(work.path(), &[&a, &b]);
        let plan_file = work.path().join("plan.toml");
        Setup {
            a,
            b,
            work,
            cfg,
            marker: unique_marker(),
            plan_file,
        }
    }
}

#[test]
fn forty_eight_processes_start_together_and_stop_together() {
    let Setup {
        a,
        b,
        work,
        cfg,
        marker,
        plan_file,
    } = Setup::new();
    std::fs::write(&plan_file, plan(&a, &b, &cfg, &marker, "")).unwrap();
    let fetched = work.path().join("fetched");
    let out = output_within(
        Command::new(bin("mitossh"))
            .arg("run")
            .arg(&plan_file)
            .arg("--json")
            .arg("--fetch-dir")
            .arg(&fetched)
            .env_remove("MITOSSH_SOCKET"),
        b"",
        T,
    );
    let lines = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{lines}{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let procs = report["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 48);

    // Every process started, and every line is whole and attributed to its writer.
    let mut starts = std::collections::HashSet::new();
    for line in lines.lines() {
        let Some((who, text)) = line.split_once(" | ").or_else(|| line.split_once(" ! ")) else {
            continue; // the master's own messages, if any
        };
        let mut words = who.split_whitespace();
        let (host, label) = (words.next().unwrap(), words.next().unwrap());
        assert!(host == a.alias() || host == b.alias(), "{line}");
        let index = label.split_once('[').unwrap().1.trim_end_matches(']');
        let mut said = text.split_whitespace();
        let first = said.next().unwrap();
        assert!(
            first == "start" || first == "tick",
            "torn or foreign line: {line:?}"
        );
        assert_eq!(said.next(), Some(index), "{line}");
        if first == "start" {
            let kind = said.next().unwrap();
            assert!(label.starts_with(kind), "{line}");
            starts.insert(format!("{host} {label}"));
        }
    }
    assert_eq!(starts.len(), 48, "every process said start:\n{lines}");

    // Released together, stopped together at the deadline.
    let spread = report["start_spread_ms"].as_f64().unwrap();
    assert!(spread < 2000.0, "start spread {spread} ms");
    assert_eq!(report["stopped_because"], "the duration was over");
    for p in procs {
        assert_eq!(p["stopped"], true, "{p}");
        assert_eq!(p["failed"], false, "{p}");
        let runtime = p["runtime_ms"].as_f64().unwrap();
        assert!((2900.0..8000.0).contains(&runtime), "{p}");
        assert!(p["stdout_bytes"].as_u64().unwrap() + p["stderr_bytes"].as_u64().unwrap() > 0);
    }
    eprintln!(
        "48 processes: start spread {spread:.1} ms, startup {:.0} ms, total {:.0} ms",
        report["startup_ms"].as_f64().unwrap(),
        report["total_ms"].as_f64().unwrap()
    );

    // Files came back, per host and process.
    for host in [a.alias(), b.alias()] {
        for p in procs
            .iter()
            .filter(|p| p["host"] == host && p["name"] == "replica")
        {
            let i = p["index"].as_u64().unwrap();
            let local = fetched
                .join(host)
                .join(format!("replica-{i}"))
                .join(format!("replica-{i}.txt"));
            assert_eq!(
                std::fs::read_to_string(&local).unwrap(),
                format!("replica-{i}\n")
            );
        }
    }
    // Nothing is left running, on either host.
    let uid = test_user().uid;
    wait_until_none(Duration::from_secs(5), "processes of the run", |p| {
        p.uid == uid && p.cmdline.iter().any(|a| a.contains("tick"))
    });
    assert_eq!(a.accepted_connections(), 1);
    assert_eq!(b.accepted_connections(), 1);
    let _ = std::fs::remove_dir_all(format!("/tmp/{marker}"));
}

#[test]
fn a_failure_stops_everything_and_the_status_says_so() {
    let Setup {
        a,
        b,
        work,
        cfg,
        marker,
        plan_file,
    } = Setup::new();
    let mut text =
        plan(&a, &b, &cfg, &marker, "").replace("duration = \"3s\"", "duration = \"60s\"");
    text.push_str(&format!(
        "\n[[host]]\naddress = \"{}\"\n[[host.process]]\nname = \"flaky\"\ncommand = \"sleep 1; echo giving up >&2; exit 3\"\n",
        a.alias()
    ));
    std::fs::write(&plan_file, text).unwrap();
    let out = output_within(
        Command::new(bin("mitossh"))
            .arg("run")
            .arg(&plan_file)
            .arg("--json")
            .arg("--fetch-dir")
            .arg(work.path().join("fetched"))
            .env_remove("MITOSSH_SOCKET"),
        b"",
        T,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let because = report["stopped_because"].as_str().unwrap();
    assert!(
        because.contains("flaky[0]") && because.contains("exit 3"),
        "{because}"
    );
    let procs = report["processes"].as_array().unwrap();
    let failed: Vec<_> = procs.iter().filter(|p| p["failed"] == true).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["exit_code"], 3);
    for p in procs.iter().filter(|p| p["name"] != "flaky") {
        assert_eq!(p["stopped"], true, "{p}");
        assert!(
            p["runtime_ms"].as_f64().unwrap() < 30_000.0,
            "stopped early: {p}"
        );
    }
    let uid = test_user().uid;
    wait_until_none(Duration::from_secs(5), "processes of the run", |p| {
        p.uid == uid && p.cmdline.iter().any(|a| a.contains("tick"))
    });
    let _ = std::fs::remove_dir_all(format!("/tmp/{marker}"));
}

#[test]
fn interrupt_stops_everything_and_output_files_keep_each_stream() {
    let a = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let outputs = work.path().join("out");
    let mut run = Command::new(bin("mitossh"))
        .args(["run", "-H", a.alias(), "-n", "3", "-F"])
        .arg(a.ssh_config())
        .arg("--output-dir")
        .arg(&outputs)
        .args([
            "--",
            "echo err {i} >&2; echo ready {i}; while :; do sleep 0.2; done",
        ])
        .env_remove("MITOSSH_SOCKET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once all three said they are ready, press ^C. Each wrote its stderr line before it
    // said so, so that line must be in its file however late it travelled.
    let mut seen = String::new();
    let mut reader = std::io::BufReader::new(run.stdout.take().unwrap());
    while seen.matches("ready").count() < 3 {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap() > 0,
            "{seen}"
        );
        seen.push_str(&line);
    }
    send_signal(run.id() as i32, libc::SIGINT);
    let status = wait_child(&mut run, T, "mitossh run to stop on ^C");
    let mut summary = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut summary).unwrap();
    assert_eq!(status.code(), Some(130), "{summary}");
    assert!(summary.contains("stopped because interrupted"), "{summary}");
    let uid = test_user().uid;
    wait_until_none(Duration::from_secs(5), "processes of the run", |p| {
        p.uid == uid && p.cmdline.iter().any(|a| a.contains("ready"))
    });
    for i in 0..3 {
        let dir = outputs.join(a.alias());
        assert_eq!(
            std::fs::read_to_string(dir.join(format!("p-{i}.out"))).unwrap(),
            format!("ready {i}\n")
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(format!("p-{i}.err"))).unwrap(),
            format!("err {i}\n")
        );
    }
}

/// Kills, however the test ends, the process groups whose leader's command line holds
/// the marker: what a test started in a session of its own on a host.
struct KillMarked(String);

impl KillMarked {
    fn groups(&self) -> Vec<Proc> {
        processes_matching(|p| p.cmdline.iter().any(|a| a.contains(&self.0)))
    }
}

impl Drop for KillMarked {
    fn drop(&mut self) {
        for p in self.groups() {
            send_signal(-p.pid, libc::SIGKILL);
        }
    }
}

/// A process whose output stays open after the stop (held by a daemon it started in a
/// session of its own, which the stop does not reach) does not keep the run waiting: the
/// run ends and says which process it stopped reading. The daemon is left as ssh leaves
/// it (and then stopped by this test).
#[test]
fn output_held_open_by_a_daemon_does_not_keep_the_run_waiting() {
    let a = Sshd::start();
    let daemon = KillMarked(unique_marker());
    let out = output_within(
        Command::new(bin("mitossh"))
            .args(["run", "-H", a.alias(), "-d", "2s", "--grace", "1s", "-F"])
            .arg(a.ssh_config())
            .args([
                "--",
                &format!(
                    "setsid sh -c 'sleep 1000; : {}' & echo started; sleep 1000",
                    daemon.0
                ),
            ])
            .env_remove("MITOSSH_SOCKET"),
        b"",
        Duration::from_secs(60),
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(daemon.groups().len(), 1, "the daemon runs: {said}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("p[0] | started"));
    assert!(
        said.contains(&format!(
            "{} p[0]: output still open after the run ended",
            a.alias()
        )),
        "{said}"
    );
    drop(daemon);
}

/// A free TCP port on loopback (the hosts of these tests share one network).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A replica (listens on a port half a second after it starts, says so, accepts and
/// closes connections) and a client (connects once, fails if nobody listens), written
/// where the test user can run them.
fn experiment_tools(marker: &str) -> std::path::PathBuf {
    let bin = Path::new("/tmp").join(format!("{marker}-bin"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        bin.join("replica.py"),
        "import socket, sys, time\n\
         time.sleep(0.5)\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', int(sys.argv[1])))\n\
         s.listen(64)\n\
         print('listening', sys.argv[1], flush=True)\n\
         while True:\n    s.accept()[0].close()\n",
    )
    .unwrap();
    std::fs::write(
        bin.join("client.py"),
        "import socket, sys\n\
         socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5).close()\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// The seed scenario in small: per host a replica (phase 1) and `{clients}` clients that
/// need it (phase 2), swept over clients = 1, 2, 3. Host a's replica is ready when its
/// port accepts, host b's when it says "listening".
fn sweep_plan(a: &Sshd, b: &Sshd, cfg: &Path, results: &Path, marker: &str, bin: &Path) -> String {
    let mut text = format!(
        "duration = \"2s\"\ngrace = \"1s\"\nssh_args = [\"-F\", \"{}\"]\nresults = \"{}\"\n\
         setup = \"mkdir -p /tmp/{marker}/{{point}}/{{host}}\"\n\
         [sweep]\nclients = [1, 2, 3]\n",
        cfg.display(),
        results.display()
    );
    for (host, ready) in [
        (a.alias(), "{ port = \"{port}\" }"),
        (b.alias(), "{ line = \"^listening [0-9]+$\" }"),
    ] {
        let port = free_port();
        text.push_str(&format!(
            r#"
[[host]]
address = "{host}"

[[host.process]]
name = "replica"
command = "exec python3 {bin}/replica.py {{port}}"
vars = {{ port = "{port}" }}
ready = {ready}
ready_timeout = "20s"

[[host.process]]
name = "client"
count = "{{clients}}"
after = "replica"
vars = {{ port = "{port}" }}
env = {{ CLIENT_ID = "{{i}}", POINT = "{{point}}" }}
cwd = "/tmp/{marker}/{{point}}/{{host}}"
command = 'python3 {bin}/client.py {{port}} && echo "$CLIENT_ID $POINT $(pwd)" > client-{{i}}.txt && echo connected $CLIENT_ID'
fetch = ["/tmp/{marker}/{{point}}/{{host}}/client-{{i}}.txt"]
"#,
            bin = bin.display()
        ));
    }
    text
}

fn point_json(results: &Path, point: &str) -> serde_json::Value {
    let path = results.join(point).join("point.json");
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap()
}

#[test]
fn a_sweep_runs_phases_on_the_same_connections_and_resumes_after_an_interrupt() {
    let Setup {
        a,
        b,
        work,
        cfg,
        marker,
        plan_file,
    } = Setup::new();
    let tools = experiment_tools(&marker);
    let results = work.path().join("results");
    std::fs::write(
        &plan_file,
        sweep_plan(&a, &b, &cfg, &results, &marker, &tools),
    )
    .unwrap();
    // One master for both runs, as a user keeps one across an interrupted sweep.
    let master = Master::start();

    // Run, and press ^C once point 2's clients are connecting.
    let mut run = Command::new(bin("mitossh"))
        .arg("run")
        .arg(&plan_file)
        .env("MITOSSH_SOCKET", &master.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = run.stderr.take().unwrap();
    let said = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let mut seen = String::new();
    let mut reader = std::io::BufReader::new(run.stdout.take().unwrap());
    // Point 1 has 2 clients; a third "connected" comes from point 2.
    while seen.matches(" connected ").count() < 3 {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap() > 0,
            "{seen}"
        );
        seen.push_str(&line);
    }
    // SAFETY: signalling the process this test started.
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    let status = wait_child(&mut run, T, "mitossh run to stop on ^C");
    let said = said.join().unwrap();
    assert_eq!(status.code(), Some(130), "{said}");
    assert_eq!(
        point_json(&results, "clients-1")["status"],
        "completed",
        "{said}"
    );
    assert_eq!(
        point_json(&results, "clients-2")["status"],
        "interrupted",
        "{said}"
    );
    assert!(!results.join("clients-3").exists(), "{said}");
    let first = std::fs::read(results.join("clients-1").join("point.json")).unwrap();

    // Resume: points 2 and 3 only, on the same connections.
    let out = output_within(
        Command::new(bin("mitossh"))
            .arg("run")
            .arg(&plan_file)
            .arg("--resume")
            .arg("--json")
            .env("MITOSSH_SOCKET", &master.socket),
        b"",
        T,
    );
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("point 1/3 clients-1: completed earlier, skipped"),
        "{said}"
    );
    assert!(said.contains("point 2/3 clients-2 starts"), "{said}");
    assert!(said.contains("point 3/3 clients-3 starts"), "{said}");
    assert!(!said.contains("point 1/3 clients-1 starts"), "{said}");
    assert_eq!(
        std::fs::read(results.join("clients-1").join("point.json")).unwrap(),
        first
    );
    // The interrupted attempt is kept, not removed.
    assert!(
        results
            .join("clients-2.attempt-1")
            .join("point.json")
            .exists()
    );
    let sweep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sweep["points"].as_array().unwrap().len(), 3);

    for (k, clients) in [(1, 1), (2, 2), (3, 3)] {
        let point = format!("clients-{k}");
        let p = point_json(&results, &point);
        assert_eq!(p["status"], "completed", "{p}");
        assert_eq!(p["vars"]["clients"], clients.to_string());
        // Phase 2 started only once the replicas were ready (they listen after 0.5 s).
        let phases = p["phases"].as_array().unwrap();
        assert_eq!(phases.len(), 2, "{p}");
        assert_eq!(phases[1]["phase"], "2 (client, after replica)");
        let gap = phases[1]["released_after_ms"].as_f64().unwrap()
            - phases[0]["released_after_ms"].as_f64().unwrap();
        assert!(gap >= 450.0, "phase 2 released {gap} ms after phase 1: {p}");
        eprintln!(
            "{point}: release spread phase 1 {:.1} ms, phase 2 {:.1} ms, phase 2 after {gap:.0} ms",
            phases[0]["spread_ms"].as_f64().unwrap(),
            phases[1]["spread_ms"].as_f64().unwrap()
        );
        let procs = p["processes"].as_array().unwrap();
        assert_eq!(procs.len(), 2 + 2 * clients, "{p}");
        for c in procs.iter().filter(|c| c["name"] == "client") {
            assert_eq!(c["exit_code"], 0, "{c}");
            let (host, i) = (c["host"].as_str().unwrap(), c["index"].as_u64().unwrap());
            let dir = results.join(&point).join(host).join(format!("client-{i}"));
            // env and cwd reached the process; its file came back; its output is kept.
            assert_eq!(
                std::fs::read_to_string(dir.join(format!("client-{i}.txt"))).unwrap(),
                format!("{i} {point} /tmp/{marker}/{point}/{host}\n")
            );
            assert_eq!(
                std::fs::read_to_string(dir.join("stdout")).unwrap(),
                format!("connected {i}\n")
            );
        }
        for r in procs.iter().filter(|c| c["name"] == "replica") {
            assert_eq!(r["stopped"], true, "{r}");
            assert_eq!(r["failed"], false, "{r}");
        }
    }

    // One CSV row per point × process, with the sweep's variable as a column.
    let csv = std::fs::read_to_string(results.join("summary.csv")).unwrap();
    let mut rows = csv.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = rows.map(|r| r.split(',').collect()).collect();
    assert_eq!(rows.len(), 4 + 6 + 8, "{csv}");
    for r in &rows {
        assert_eq!(
            r[col("point")],
            format!("clients-{}", r[col("clients")]),
            "{csv}"
        );
        assert_eq!(r[col("point_status")], "completed");
    }
    assert_eq!(
        rows.iter()
            .filter(|r| r[col("process")] == "client")
            .count(),
        2 + 4 + 6
    );

    // The whole sweep, interrupted and resumed, used one connection per host.
    assert_eq!(a.accepted_connections(), 1);
    assert_eq!(b.accepted_connections(), 1);
    let uid = test_user().uid;
    wait_until_none(Duration::from_secs(5), "processes of the sweep", |p| {
        p.uid == uid && p.cmdline.iter().any(|w| w.contains(&marker))
    });
    let _ = std::fs::remove_dir_all(format!("/tmp/{marker}"));
    let _ = std::fs::remove_dir_all(&tools);
}

#[test]
fn a_readiness_timeout_names_the_phase_and_host_and_fails_the_point() {
    let a = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let marker = unique_marker();
    let port = free_port();
    let results = work.path().join("results");
    let plan_file = work.path().join("plan.toml");
    std::fs::write(
        &plan_file,
        format!(
            r#"duration = "60s"
ssh_args = ["-F", "{cfg}"]
results = "{results}"
[[host]]
address = "{host}"
[[host.process]]
name = "replica"
command = "exec -a {marker}-replica sleep 60"
ready = {{ port = "{port}" }}
ready_timeout = "1s"
[[host.process]]
name = "client"
after = "replica"
command = "echo {marker} should not run"
"#,
            cfg = a.ssh_config().display(),
            results = results.display(),
            host = a.alias(),
        ),
    )
    .unwrap();
    let t = std::time::Instant::now();
    let out = output_within(
        Command::new(bin("mitossh"))
            .arg("run")
            .arg(&plan_file)
            .env_remove("MITOSSH_SOCKET"),
        b"",
        T,
    );
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(t.elapsed() < Duration::from_secs(30), "{said}");
    let expected = format!(
        "replica[0] on {} in phase 1 (replica) was not ready: nothing accepted connections on localhost:{port} within 1.0s",
        a.alias()
    );
    assert!(said.contains(&expected), "{said}");
    assert!(
        said.contains("phase 2 (client, after replica) never started"),
        "{said}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("should not run"));
    let p = point_json(&results, "run");
    assert_eq!(p["status"], "failed", "{p}");
    let client = &p["processes"][1];
    assert_eq!(client["released"], false, "{p}");
    assert_eq!(p["processes"][0]["stopped"], true, "{p}");
    let uid = test_user().uid;
    wait_until_none(Duration::from_secs(5), "the replica", |p| {
        p.uid == uid && p.cmdline.iter().any(|w| w.contains(&marker))
    });
}

/// A plan whose process writes control sequences: a screen clear and a carriage return.
fn noisy_plan(a: &Sshd, dir: &Path) -> std::path::PathBuf {
    let plan_file = dir.join("plan.toml");
    std::fs::write(
        &plan_file,
        format!(
            r#"duration = "2s"
ssh_args = ["-F", "{cfg}"]
results = "{results}"
[sweep]
k = [1, 2]
[[host]]
address = "{host}"
[[host.process]]
name = "noisy"
command = '''printf 'clear\033[2Jscreen\nover\rwrite\n'; sleep 30'''
"#,
            cfg = a.ssh_config().display(),
            results = dir.join("results").display(),
            host = a.alias(),
        ),
    )
    .unwrap();
    plan_file
}

#[test]
fn the_status_line_shows_on_a_terminal_only_and_remote_control_codes_are_escaped() {
    let a = Sshd::start();
    let status_line = " running · 0 failed";

    // On a terminal: the status line, and the remote escape sequences made visible.
    let work = tempfile::tempdir().unwrap();
    let plan = noisy_plan(&a, work.path());
    let mut cmd = Command::new(bin("mitossh"));
    cmd.arg("run").arg(&plan).env_remove("MITOSSH_SOCKET");
    let (term, mut child) = Terminal::spawn(&mut cmd, 30, 120);
    term.expect(
        "point 1/2 k-1 · 1 running · 0 failed",
        Duration::from_secs(20),
    );
    term.expect("points completed", T);
    let status = wait_child(&mut child, T, "mitossh run on a terminal");
    let shown = term.text();
    assert_eq!(status.code(), Some(0), "{shown}");
    assert!(shown.contains("point 2/2 k-2 ·"), "{shown}");
    assert!(shown.contains("clear\\e[2Jscreen"), "{shown}");
    assert!(shown.contains("over\\rwrite"), "{shown}");
    assert!(!shown.contains("\x1b[2J"), "{shown}");
    assert!(!shown.contains("over\rwrite"), "{shown}");

    // --quiet: no status line; --raw: the bytes as they came.
    let work = tempfile::tempdir().unwrap();
    let plan = noisy_plan(&a, work.path());
    let mut cmd = Command::new(bin("mitossh"));
    cmd.arg("run")
        .arg(&plan)
        .args(["--quiet", "--raw"])
        .env_remove("MITOSSH_SOCKET");
    let (term, mut child) = Terminal::spawn(&mut cmd, 30, 120);
    term.expect("points completed", T);
    let status = wait_child(&mut child, T, "mitossh run --quiet --raw");
    let shown = term.text();
    assert_eq!(status.code(), Some(0), "{shown}");
    assert!(!shown.contains(status_line), "{shown}");
    assert!(shown.contains("clear\x1b[2Jscreen"), "{shown}");

    // In a pipe: no status line, and the output as it came.
    let work = tempfile::tempdir().unwrap();
    let plan = noisy_plan(&a, work.path());
    let out = output_within(
        Command::new(bin("mitossh"))
            .arg("run")
            .arg(&plan)
            .env_remove("MITOSSH_SOCKET"),
        b"",
        T,
    );
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(!said.contains(status_line), "{said}");
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(lines.contains("clear\x1b[2Jscreen"), "{lines}");
    // The results keep the bytes too.
    let kept = std::fs::read_to_string(
        work.path()
            .join("results/k-1")
            .join(a.alias())
            .join("noisy-0/stdout"),
    )
    .unwrap();
    assert_eq!(kept, "clear\x1b[2Jscreen\nover\rwrite\n");
}

#[test]
fn without_phases_the_clients_start_too_early_and_fail() {
    // The control for the sweep test: its clients really need the replicas first.
    let Setup {
        a,
        b,
        work,
        cfg,
        marker,
        plan_file,
    } = Setup::new();
    let tools = experiment_tools(&marker);
    let results = work.path().join("results");
    let text =
        sweep_plan(&a, &b, &cfg, &results, &marker, &tools).replace("after = \"replica\"\n", "");
    std::fs::write(&plan_file, text).unwrap();
    let out = output_within(
        Command::new(bin("mitossh"))
            .arg("run")
            .arg(&plan_file)
            .args(["--points", "1"])
            .env_remove("MITOSSH_SOCKET"),
        b"",
        T,
    );
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    let p = point_json(&results, "clients-1");
    assert_eq!(p["status"], "failed", "{p}");
    assert_eq!(p["phases"].as_array().unwrap().len(), 1, "{p}");
    assert!(
        p["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "client" && c["exit_code"] == 1),
        "{p}"
    );
    let _ = std::fs::remove_dir_all(format!("/tmp/{marker}"));
    let _ = std::fs::remove_dir_all(&tools);
}

#[test]
fn a_missing_working_directory_is_a_clear_error() {
    let a = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let plan_file = work.path().join("plan.toml");
    let missing = format!("/nonexistent-{}", unique_marker());
    std::fs::write(
        &plan_file,
        format!(
            "ssh_args = [\"-F\", \"{}\"]\n[[host]]\naddress = \"{}\"\n[[host.process]]\nname = \"p\"\ncwd = \"{missing}\"\ncommand = \"pwd\"\n",
            a.ssh_config().display(),
            a.alias()
        ),
    )
    .unwrap();
    let out = output_within(
        Command::new(bin("mitossh"))
            .arg("run")
            .arg(&plan_file)
            .env_remove("MITOSSH_SOCKET"),
        b"",
        T,
    );
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "cannot change to directory {missing}: not a directory here"
        )),
        "{said}"
    );
    assert!(
        said.contains("some processes could not be started"),
        "{said}"
    );
}

/// `local` in a plan: processes on the master's own host (no ssh) next to remote ones,
/// in phases across them — a server here, a client on the test host that waits until the
/// server accepts — their output interleaved and attributed, files fetched from both.
#[test]
fn local_processes_run_next_to_remote_ones() {
    let a = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let marker = unique_marker();
    let served = work.path().join("served");
    std::fs::create_dir(&served).unwrap();
    std::fs::write(served.join("hello.txt"), format!("{marker}\n")).unwrap();
    let port = free_port();
    let plan_file = work.path().join("plan.toml");
    std::fs::write(
        &plan_file,
        format!(
            r#"duration = "2s"
grace = "2s"
ssh_args = ["-F", "{cfg}"]

[[host]]
address = "local"

[[host.process]]
name = "server"
command = "echo who=$(id -un); exec python3 -m http.server {port} --bind 127.0.0.1"
cwd = "{served}"
ready = {{ port = "{port}" }}
fetch = ["{served}/hello.txt"]

[[host]]
address = "{host}"

[[host.process]]
name = "client"
after = "server"
command = "echo who=$(id -un); python3 -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:{port}/hello.txt\").read().decode().strip())'"
"#,
            cfg = a.ssh_config().display(),
            served = served.display(),
            host = a.alias(),
        ),
    )
    .unwrap();
    let fetched = work.path().join("fetched");
    let out = output_within(
        Command::new(bin("mitossh"))
            .arg("run")
            .arg(&plan_file)
            .arg("--fetch-dir")
            .arg(&fetched)
            .env_remove("MITOSSH_SOCKET"),
        b"",
        T,
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{said}");
    // Prefixes are padded to one width: compare with blanks collapsed.
    let lines: Vec<String> = said
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    for line in [
        format!("local server[0] | who={}", me.trim()),
        format!("{} client[0] | who={TEST_USER}", a.alias()),
        format!("{} client[0] | {marker}", a.alias()),
    ] {
        assert!(lines.contains(&line), "no {line:?} in\n{said}");
    }
    // The server saw the client's request (python's log, on its stderr).
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("local server[0] ! ") && l.contains("GET /hello.txt")),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(fetched.join("local/server-0/hello.txt")).unwrap(),
        format!("{marker}\n")
    );
    assert_eq!(a.accepted_connections(), 1, "{}", a.log());
}

#[test]
fn a_second_run_into_the_same_output_dir_overwrites_nothing() {
    let a = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let outputs = work.path().join("out");
    let run = || {
        output_within(
            Command::new(bin("mitossh"))
                .args(["run", "-H", a.alias(), "-F"])
                .arg(a.ssh_config())
                .arg("--output-dir")
                .arg(&outputs)
                .args(["--", "echo hello"])
                .env_remove("MITOSSH_SOCKET"),
            b"",
            T,
        )
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let out_file = std::fs::read_dir(outputs.join(a.alias()))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "out"))
        .expect("an .out file");
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "hello\n");
    std::fs::write(&out_file, "keep me").unwrap();

    let second = run();
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "one line: {said}");
    assert!(
        said.contains("exists") && said.contains("does not overwrite"),
        "{said}"
    );
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "keep me");
}
