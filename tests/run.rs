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
    assert_eq!(out.status.code(), Some(0), "{lines}");
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
            "echo ready {i}; echo err {i} >&2; while :; do sleep 0.2; done",
        ])
        .env_remove("MITOSSH_SOCKET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once all three said they are ready, press ^C.
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
