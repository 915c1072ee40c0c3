//! The tunnel core against a real sshd: byte-exact stdio, exit codes, concurrency, flow
//! control, and what happens when the master dies.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(60);

fn ssh(master: &Master, sshd: &Sshd, command: &str) -> std::process::Output {
    output_within(master.ssh().args(sshd.ssh_args()).arg(command), b"", T)
}

#[test]
fn stdin_reaches_cat_and_comes_back_byte_exact() {
    let sshd = Sshd::start();
    let master = Master::start();
    // All 256 byte values, then 10 MiB of noise: no byte is translated or lost.
    let mut input: Vec<u8> = (0..=255u8).cycle().take(256 * 64).collect();
    input.extend(random_bytes(10 << 20, 9));
    let out = output_within(master.ssh().args(sshd.ssh_args()).arg("cat"), &input, T);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input, "stdout differs from stdin");

    // The same through stderr, with stdout kept apart.
    let out = output_within(
        master
            .ssh()
            .args(sshd.ssh_args())
            .arg("echo out; cat >&2; echo tail"),
        &input[..256 * 64],
        T,
    );
    assert_eq!(out.stdout, b"out\ntail\n");
    assert!(out.stderr == input[..256 * 64], "stderr differs from stdin");
    assert_eq!(sshd.accepted_connections(), 1);
}

#[test]
fn half_close_delivers_eof_and_output_after_it() {
    let sshd = Sshd::start();
    let master = Master::start();
    let out = output_within(
        master
            .ssh()
            .args(sshd.ssh_args())
            .arg("cat; echo after-eof"),
        b"abc",
        T,
    );
    assert_eq!(out.stdout, b"abcafter-eof\n");
    assert_eq!(out.status.code(), Some(0));
}

/// `/dev/null` as stdin and stdout, as `ssh -n host cmd > /dev/null` gives them: end of
/// file at once, and every byte taken (the master answers for the device itself).
#[test]
fn dev_null_reads_as_end_of_file_and_takes_everything_as_with_ssh() {
    let sshd = Sshd::start();
    let master = Master::start();
    let command = "wc -c >&2; head -c 5000000 /dev/zero; echo \"head $?\" >&2";
    let run = |mut cmd: Command| {
        let mut child = cmd
            .args(sshd.ssh_args())
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = String::new();
        let mut pipe = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            pipe.read_to_string(&mut stderr).unwrap();
            stderr
        });
        let status = wait_child(&mut child, T, "ssh with /dev/null to end");
        (status.code(), reader.join().unwrap())
    };
    let with_ssh = run(Command::new("/usr/bin/ssh"));
    assert_eq!(with_ssh, (Some(0), "0\nhead 0\n".to_string()));
    assert_eq!(run(master.ssh()), with_ssh);
}

#[test]
fn exit_codes_are_the_remote_commands() {
    let sshd = Sshd::start();
    let master = Master::start();
    for code in [0, 1, 42] {
        let out = ssh(&master, &sshd, &format!("exit {code}"));
        assert_eq!(out.status.code(), Some(code), "exit {code}");
    }
    // Death by signal is ssh's own failure status.
    let out = ssh(&master, &sshd, "kill -TERM $$");
    assert_eq!(out.status.code(), Some(255));
    // A missing command is the shell's 127, with its message on stderr.
    let out = ssh(&master, &sshd, "no-such-command-mitossh");
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    assert_eq!(sshd.accepted_connections(), 1);
}

#[test]
fn an_unreachable_host_is_255_with_an_ssh_style_message() {
    let master = Master::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = output_within(
        master.ssh().args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "BatchMode=yes",
            "-p",
            &port.to_string(),
            "127.0.0.1",
            "true",
        ]),
        b"",
        T,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert_eq!(
        err.trim_end(),
        format!("ssh: connect to host 127.0.0.1 port {port}: Connection refused")
    );
}

#[test]
fn the_command_runs_in_home_with_the_login_shell_as_sshd_does() {
    let sshd = Sshd::start();
    let master = Master::start();
    let out = ssh(&master, &sshd, "pwd; echo $0; id -un");
    let user = sshd.user();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\nbash\n{}\n", user.home.display(), user.name)
    );
    // Words are joined with spaces, then the shell parses them, as with ssh.
    let out = output_within(
        master
            .ssh()
            .args(sshd.ssh_args())
            .args(["echo", "a  b", "'c  d'"]),
        b"",
        T,
    );
    assert_eq!(out.stdout, b"a b c  d\n");
}

#[test]
fn fifty_concurrent_invocations_share_one_connection() {
    let sshd = Sshd::start();
    let master = Master::start();
    // All start cold: the first requests must share one connection attempt.
    let children: Vec<_> = (0..50)
        .map(|i| {
            master
                .ssh()
                .args(sshd.ssh_args())
                .arg(format!("echo out-{i}; echo err-{i} >&2; exit {}", i % 3))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + T;
    for (i, mut child) in children.into_iter().enumerate() {
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let left = deadline.saturating_duration_since(Instant::now());
        let status = wait_child(&mut child, left, &format!("invocation {i} to exit"));
        assert_eq!(out, format!("out-{i}\n"));
        assert_eq!(err, format!("err-{i}\n"));
        assert_eq!(status.code(), Some(i as i32 % 3));
    }
    assert_eq!(sshd.accepted_connections(), 1, "{}", sshd.log());
}

/// The capacity of a new pipe made by a process of `sshd`'s user, reached by plain ssh.
fn fresh_pipe_size(sshd: &Sshd) -> String {
    let probe =
        "/usr/bin/python3 -c 'import os, fcntl; r, w = os.pipe(); print(fcntl.fcntl(w, 1032))'";
    let mut plain = Command::new("/usr/bin/ssh");
    plain.args(sshd.ssh_args()).arg(probe);
    check(&output_within(&mut plain, b"", T)).trim().to_string()
}

#[test]
fn many_streams_leave_the_users_own_pipes_their_size() {
    // Past its allowance of pipe pages (64 MiB by default) the kernel gives every new
    // pipe of the user two pages. An agent whose 40 processes each had two 1 MiB pipes
    // took all of it; a user of its own, so that no other test's pipes count.
    let user = ensure_user("mitossh-pipes");
    let sshd = Sshd::start_for(&user);
    let master = Master::start();
    let before = fresh_pipe_size(&sshd);
    assert_eq!(before, "65536", "a new pipe of a user with nothing running");
    let streams: Vec<_> = (0..40)
        .map(|_| {
            master
                .ssh()
                .args(sshd.ssh_args())
                .arg("exec sleep 120")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let streams: Vec<_> = streams.into_iter().map(StopOnDrop).collect();
    wait_until(T, "40 remote sleeps", || {
        descendants_running(sshd.pid(), "sleep").len() >= 40
    });
    assert_eq!(
        fresh_pipe_size(&sshd),
        before,
        "a new pipe of the user while mitossh runs 40 processes for it"
    );
    drop(streams);
}

/// Resident memory of a process, in bytes.
fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_stalled_reader_stalls_only_its_stream_and_bounds_memory() {
    let sshd = Sshd::start();
    let master = Master::start();
    // Warm up the context so its own allocations are not counted.
    assert!(ssh(&master, &sshd, "true").status.success());
    let before = rss(master.pid());

    // A firehose whose stdout nobody reads.
    let marker = unique_marker();
    let mut stalled = master
        .ssh()
        .args(sshd.ssh_args())
        .arg(format!("exec -a {marker} cat /dev/zero"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Flow control has engaged when the remote writer blocks on its full pipe.
    let blocked = || blocked_writing_a_pipe(&marker);
    wait_until(T, "the remote writer to block", blocked);
    // Give a runaway buffer every chance to show: without flow control the agent would
    // push hundreds of MiB per second into the master.
    let start = Instant::now();
    let mut peak = 0;
    while start.elapsed() < Duration::from_secs(2) {
        peak = peak.max(rss(master.pid()));
        // Meanwhile other streams on the same context work normally.
        let out = ssh(&master, &sshd, "echo other");
        assert_eq!(out.stdout, b"other\n");
    }
    assert!(blocked(), "the remote writer must still be held back");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "master RSS grew by {} KiB with a stalled reader",
        growth >> 10
    );
    // The bound: one window (2 MiB) per direction per stream, plus allocator slack.
    assert!(
        growth < 16 << 20,
        "master grew by {} MiB with a stalled reader",
        growth >> 20
    );
    stalled.kill().unwrap();
    stalled.wait().unwrap();
    assert_eq!(sshd.accepted_connections(), 1);
}

#[test]
fn a_closed_stdout_stops_the_remote_writer() {
    let sshd = Sshd::start();
    let master = Master::start();
    // Like `ssh host yes | head -1`: the remote side must get SIGPIPE, not run forever.
    let out = output_within(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} {} yes | head -1",
                bin("ssh").display(),
                sshd.ssh_args().join(" ")
            ))
            .env("PATH", path_with(&master.shims))
            .env("MITOSSH_SOCKET", &master.socket)
            .env("MITOSSH_STRICT", "1"),
        b"",
        T,
    );
    assert_eq!(out.stdout, b"y\n");
}

#[test]
fn killing_the_master_leaves_no_agent_and_no_remote_process() {
    let sshd = Sshd::start();
    let mut master = Master::start();
    let marker = unique_marker();
    // One command that dies on SIGTERM, one that ignores it (SIGKILL must follow).
    let mut long = master
        .ssh()
        .args(sshd.ssh_args())
        .arg(format!("echo started; sleep 1000; echo {marker}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stubborn = master
        .ssh()
        .args(sshd.ssh_args())
        .arg(format!(
            "trap '' TERM; echo started; sleep 1000; echo {marker}"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for child in [&mut long, &mut stubborn] {
        let mut buf = [0u8; 8];
        child.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"started\n");
    }
    let uid = sshd.user().uid;
    // The agent and everything under it, identified now (pid and start time).
    // The two shells under the agent (not a fork of theirs caught before it execs sleep).
    let marked =
        processes_matching(|p| p.uid == uid && p.cmdline.iter().any(|a| a.contains(&marker)));
    let agents: Vec<_> = marked
        .iter()
        .filter(|p| !marked.iter().any(|q| q.pid == p.ppid))
        .cloned()
        .collect();
    assert_eq!(
        agents.len(),
        2,
        "expected the two remote shells: {agents:?}"
    );
    let agent_pid = agents[0].ppid;
    // Each shell said "started" just before it forks its sleep: wait for both sleeps.
    wait_until(Duration::from_secs(10), "the two remote sleeps", || {
        let below = descendants(agent_pid);
        below
            .iter()
            .filter(|p| p.cmdline.first().is_some_and(|c| c == "sleep"))
            .count()
            >= 2
    });
    let mut doomed = descendants(agent_pid);
    doomed.push(process(agent_pid).expect("agent alive"));
    assert!(doomed.len() >= 5, "agent, 2 shells, 2 sleeps: {doomed:?}");

    let killed = Instant::now();
    master.kill9();
    wait_until_none(Duration::from_secs(2), "agent and remote processes", |p| {
        doomed
            .iter()
            .any(|d| d.pid == p.pid && d.start_time == p.start_time)
    });
    eprintln!(
        "all remote processes gone {:?} after SIGKILL",
        killed.elapsed()
    );
    let _ = long.wait();
    let _ = stubborn.wait();
}

#[test]
fn status_lists_contexts_and_open_streams() {
    let sshd = Sshd::start();
    let master = Master::start();
    let mut long = master
        .ssh()
        .args(sshd.ssh_args())
        .arg("echo go; sleep 30")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 3];
    long.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
    let status = master.status();
    assert!(status.contains(sshd.alias()), "{status}");
    assert!(status.contains(" 1/1 "), "one open stream of one: {status}");
    assert!(status.contains(&sshd.user().name), "{status}");
    long.kill().unwrap();
    long.wait().unwrap();
    wait_until(T, "the stream to close", || {
        master.status().contains(" 0/1 ")
    });
}

#[test]
fn idle_contexts_close() {
    let sshd = Sshd::start();
    let master = Master::start_with(&["--idle-timeout", "1s"]);
    let out = ssh(&master, &sshd, "echo $PPID");
    let agent: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(process(agent).is_some());
    wait_until(Duration::from_secs(10), "the idle context to close", || {
        master.status().contains("no contexts") && process(agent).is_none()
    });
    // The next call reconnects.
    assert_eq!(ssh(&master, &sshd, "echo again").stdout, b"again\n");
    assert_eq!(sshd.accepted_connections(), 2);
}

#[test]
fn control_commands_answer_like_ssh() {
    let sshd = Sshd::start();
    let master = Master::start();
    assert!(ssh(&master, &sshd, "true").status.success());
    let out = output_within(
        master.ssh().args(["-O", "check"]).args(sshd.ssh_args()),
        b"",
        T,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("Master running (pid="));

    let out = output_within(
        master.ssh().args(["-O", "exit"]).args(sshd.ssh_args()),
        b"",
        T,
    );
    assert_eq!(out.status.code(), Some(0));
    wait_until(T, "the context to close", || {
        master.status().contains("no contexts")
    });

    // -G and -V are answered by the real ssh, exactly.
    for args in [&["-V"][..], &["-G", "example.org"][..]] {
        let ours = output_within(master.ssh().args(args), b"", T);
        let real = output_within(Command::new("/usr/bin/ssh").args(args), b"", T);
        assert_eq!(ours.status.code(), real.status.code(), "{args:?}");
        assert_eq!(ours.stdout, real.stdout, "{args:?}");
        assert_eq!(ours.stderr, real.stderr, "{args:?}");
    }
}

#[test]
fn bad_frames_drop_one_client_and_nothing_else() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let sshd = Sshd::start();
    let master = Master::start();
    let mut long = master
        .ssh()
        .args(sshd.ssh_args())
        .arg("echo go; read x; echo got $x")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 3];
    long.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();

    // Garbage body, oversized length, truncated frame: each connection is dropped.
    for junk in [
        &[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff][..],
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3][..],
        &[0, 0, 0, 9, 1][..],
    ] {
        let mut s = UnixStream::connect(&master.socket).unwrap();
        s.write_all(junk).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    // The session in progress is unaffected, and new ones work.
    long.stdin.take().unwrap().write_all(b"ok\n").unwrap();
    let mut out = String::new();
    long.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "got ok\n");
    assert!(long.wait().unwrap().success());
    assert_eq!(ssh(&master, &sshd, "echo fine").stdout, b"fine\n");
}

#[test]
fn the_agent_rejects_malformed_frames_cleanly() {
    use std::io::{BufRead, BufReader, Write};
    // An agent run by hand on a pipe: after its ready line, feed it garbage.
    let mut agent = Command::new(bin("mitossh-agent"))
        .args(["agent", "--nonce", "n1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(agent.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("MITOSSH-READY n1 "), "{line}");
    let mut stdin = agent.stdin.take().unwrap();
    stdin.write_all(&[0, 0, 0, 3, 0xfe, 0xfe, 0xfe]).unwrap();
    let output = {
        let deadline = Instant::now() + T;
        loop {
            if let Some(s) = agent.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the agent hangs on a malformed frame"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let mut err = String::new();
    agent
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("malformed frame"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(output.code().is_some(), "exited, not killed: {output:?}");
}

#[test]
fn an_unknown_host_is_255_with_ssh_s_own_message() {
    let master = Master::start();
    let out = output_within(
        master
            .ssh()
            .args(["-o", "BatchMode=yes", "nosuchhost.invalid", "true"]),
        b"",
        T,
    );
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("ssh: Could not resolve hostname nosuchhost.invalid"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn a_dead_link_fails_its_sessions_with_255_and_the_next_call_reconnects() {
    let sshd = Sshd::start();
    let master = Master::start();
    let mut long = master
        .ssh()
        .args(sshd.ssh_args())
        .arg("echo go; sleep 100")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 3];
    long.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
    // The master's own ssh client: its child running /usr/bin/ssh.
    let ssh_client = processes_matching(|p| {
        p.ppid == master.pid() && p.exe.as_deref() == Some(Path::new("/usr/bin/ssh"))
    });
    assert_eq!(ssh_client.len(), 1, "{ssh_client:?}");
    send_signal(ssh_client[0].pid, libc::SIGKILL);
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(s) = long.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the session hangs on a dead link"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    long.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(255));
    assert!(
        err.contains("connection to") && err.contains("lost"),
        "{err}"
    );
    assert_eq!(ssh(&master, &sshd, "echo again").stdout, b"again\n");
    assert_eq!(sshd.accepted_connections(), 2);
}

#[test]
fn a_missing_subsystem_is_a_clear_error() {
    let sshd = Sshd::start();
    let master = Master::start();
    let out = output_within(
        master
            .ssh()
            .arg("-s")
            .args(sshd.ssh_args())
            .arg("no-such-subsystem"),
        b"",
        T,
    );
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("subsystem request failed"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn without_a_command_the_login_shell_reads_stdin() {
    let sshd = Sshd::start();
    let master = Master::start();
    let out = output_within(
        master.ssh().args(sshd.ssh_args()),
        b"echo from-script; echo $0\n",
        T,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-script\n-bash\n");
    // -n: stdin is /dev/null, the command still runs.
    let out = output_within(
        master
            .ssh()
            .arg("-n")
            .args(sshd.ssh_args())
            .arg("cat; echo done"),
        b"ignored",
        T,
    );
    assert_eq!(out.stdout, b"done\n");
}

/// `ssh -tt` with a pipe for stdin, as Ansible's module runs and scripts send it: the remote
/// side has a terminal (which echoes the input and turns `\n` into `\r\n`), and everything
/// matches the real ssh byte for byte.
#[test]
fn a_forced_pty_fed_from_a_pipe_behaves_like_ssh() {
    let sshd = Sshd::start();
    let master = Master::start();
    let command = "read l; echo got $l; tty >/dev/null && echo tty; exit 3";
    let ours = output_within(
        master.ssh().arg("-tt").args(sshd.ssh_args()).arg(command),
        b"hi\n",
        T,
    );
    let real = output_within(
        Command::new("/usr/bin/ssh")
            .arg("-tt")
            .args(sshd.ssh_args())
            .arg(command),
        b"hi\n",
        T,
    );
    assert_eq!(
        String::from_utf8_lossy(&ours.stdout),
        "hi\r\ngot hi\r\ntty\r\n",
        "stderr: {}\n{}",
        String::from_utf8_lossy(&ours.stderr),
        master.log()
    );
    assert_eq!(ours.stdout, real.stdout);
    assert_eq!(ours.stderr, real.stderr);
    assert_eq!(ours.status.code(), Some(3));
    assert_eq!(real.status.code(), Some(3));
}
