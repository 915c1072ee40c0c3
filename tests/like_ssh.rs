//! Where the shim must behave exactly as OpenSSH's ssh, side by side with the real one
//! against the same sshd: how a signal ends a session, the signals a remote command
//! starts with, and `-O` for one destination.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);
const REAL_SSH: &str = "/usr/bin/ssh";

/// Starts `cmd` (an ssh, real or shim, with `extra` options) running
/// `echo $$; exec sleep 1000` and returns it with the remote shell's pid, once the remote
/// command runs.
fn start_long(mut cmd: Command, extra: &[&str], sshd: &Sshd) -> (Child, i32) {
    let mut child = cmd
        .args(extra)
        .args(sshd.ssh_args())
        .arg("echo $$; exec sleep 1000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no pid: {line:?}"));
    (child, pid)
}

/// Sends `sig` to `child` and returns its exit code (None: killed by a signal) and the
/// last line of its stderr (ssh at log level VERBOSE says more before).
fn signal_and_wait(mut child: Child, sig: i32) -> (Option<i32>, String) {
    send_signal(child.id() as i32, sig);
    let status = wait_child(&mut child, T, "ssh to end on a signal");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let last = err.split_inclusive('\n').next_back().unwrap_or("");
    (status.code(), last.to_string())
}

#[test]
fn a_signal_ends_a_session_as_it_ends_ssh_and_stops_the_remote_command() {
    let sshd = Sshd::start();
    let master = Master::start();
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        for extra in [&[][..], &["-oLogLevel=VERBOSE"][..]] {
            let (real, real_remote) = start_long(Command::new(REAL_SSH), extra, &sshd);
            let real = signal_and_wait(real, sig);
            // Plain ssh leaves its remote command running; clean it up.
            send_signal(real_remote, libc::SIGKILL);

            let (ours, remote) = start_long(master.ssh(), extra, &sshd);
            let remote = process(remote).expect("the remote command runs");
            let ours = signal_and_wait(ours, sig);
            let expected = if extra.is_empty() {
                String::new()
            } else {
                format!("Killed by signal {sig}.\r\n")
            };
            assert_eq!(
                real,
                (Some(255), expected),
                "real ssh, signal {sig} {extra:?}"
            );
            assert_eq!(ours, real, "signal {sig} {extra:?}");
            // Unlike plain ssh, the remote command does not outlive the session.
            wait_until_none(T, "the remote command", |p| {
                p.pid == remote.pid && p.start_time == remote.start_time
            });
        }
    }
}

/// A script's next line runs after ^C, as with ssh: the shell sees status 255, not a
/// death by SIGINT (which would end the script too).
#[test]
fn after_ctrl_c_a_script_goes_on_with_255_as_with_ssh() {
    let sshd = Sshd::start();
    let master = Master::start();
    let ssh_args = sshd.ssh_args().join(" ");
    let script = format!("ssh {ssh_args} 'echo started; exec sleep 1000'; echo after=$?");
    let mut seen = Vec::new();
    for shim in [false, true] {
        let mut cmd = if shim {
            master.command("bash")
        } else {
            Command::new("bash")
        };
        cmd.args(["-c", &script]);
        let (mut term, mut child) = Terminal::spawn(&mut cmd, 24, 80);
        term.expect("started", T);
        term.send(b"\x03");
        let status = wait_child(&mut child, T, "the script to end");
        term.expect("after=", T);
        assert!(status.success(), "shim {shim}: {}", term.text());
        let text = term.text();
        let tail = text[text.find("started").unwrap()..].replace("^C", "");
        seen.push(tail);
    }
    assert_eq!(seen[0], "started\r\nafter=255\r\n", "real ssh");
    assert_eq!(seen[1], seen[0], "shim vs real ssh");
}

/// Without a remote command (`-N`), SIGTERM is a deliberate end (status 0) and SIGINT a
/// failure (255), as with ssh.
#[test]
fn forwards_only_end_on_a_signal_as_with_ssh() {
    let sshd = Sshd::start();
    let master = Master::start();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut results = Vec::new();
        for shim in [false, true] {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut cmd = if shim {
                master.ssh()
            } else {
                Command::new(REAL_SSH)
            };
            let child = cmd
                .args(["-v", "-N", "-L"])
                .arg(format!("{port}:127.0.0.1:{}", sshd.port()))
                .args(sshd.ssh_args())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            wait_until(T, "the forward to listen", || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            let (code, last) = signal_and_wait(child, sig);
            results.push((code, last.contains("Killed by signal")));
        }
        let expected = if sig == libc::SIGTERM {
            (Some(0), false)
        } else {
            (Some(255), true)
        };
        assert_eq!(results[0], expected, "real ssh, signal {sig}");
        assert_eq!(results[1], results[0], "shim vs real ssh, signal {sig}");
    }
}

fn run(cmd: &mut Command) -> Output {
    output_within(cmd, b"", T)
}

/// A remote command starts with the signal dispositions sshd gives it: nothing blocked,
/// SIGPIPE not ignored (or `yes | head -1` ends in write errors), whatever the agent
/// itself ignores.
#[test]
fn a_remote_command_starts_with_the_signals_sshd_gives_it() {
    let sshd = Sshd::start();
    let master = Master::start();
    // The shell reads its own status: a grep it forked could catch it blocking every
    // signal around the fork, before it puts its mask back.
    let script = "while read -r k v; do case $k in SigBlk:|SigIgn:) echo \"$k $v\";; esac; \
                  done < /proc/$$/status; yes | head -1";
    let real = run(Command::new(REAL_SSH).args(sshd.ssh_args()).arg(script));
    let ours = run(master.ssh().args(sshd.ssh_args()).arg(script));
    assert!(real.status.success(), "{real:?}");
    let text = |o: &Output| {
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert!(text(&real).0.ends_with("y\n"), "{real:?}");
    assert!(text(&real).0.starts_with("SigBlk:"), "{real:?}");
    assert_eq!(text(&ours), text(&real), "shim vs real ssh");
    assert_eq!(ours.status.code(), real.status.code());
}

/// The shim's and the real ssh's answer to the same `-O` command, without strict mode
/// (so that the shim may ask the real ssh, as it would for a user).
fn control_both(master: &Master, args: &[String]) -> (Output, Output) {
    let ours = run(master.ssh().env_remove("MITOSSH_STRICT").args(args));
    let real = run(Command::new(REAL_SSH).args(args));
    (ours, real)
}

#[test]
fn control_commands_answer_for_their_destination_like_ssh() {
    let a = Sshd::start();
    let b = Sshd::start();
    let master = Master::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = joint_config(dir.path(), &[&a, &b]);
    let cfg = cfg.to_str().unwrap();
    let control_path = format!("-oControlPath={}/cp-%C", dir.path().display());
    let opts = |op: &'static str, host: &str| -> Vec<String> {
        vec![
            "-F".into(),
            cfg.into(),
            control_path.clone(),
            "-O".into(),
            op.into(),
            host.into(),
        ]
    };

    // No connection to either host yet: exactly ssh's status and message.
    for op in ["check", "exit", "stop"] {
        let args = opts(op, a.alias());
        let (ours, real) = control_both(&master, &args);
        assert_eq!(real.status.code(), Some(255), "{op}");
        assert_eq!(ours.status.code(), real.status.code(), "{op}");
        assert_eq!(ours.stderr, real.stderr, "{op}");
    }
    // In strict mode the shim says so itself, with ssh's status.
    let out = run(master.ssh().args(opts("check", a.alias())));
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("no mitossh connection to {}", a.alias())),
        "{err}"
    );

    // A connection to A: check answers for A, and still not for B.
    check(&run(master.ssh().args(["-F", cfg, a.alias(), "true"])));
    let out = run(master.ssh().args(opts("check", a.alias())));
    assert_eq!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.starts_with("Master running (pid=") && said.ends_with(")\r\n"),
        "{said}"
    );
    let (ours, real) = control_both(&master, &opts("check", b.alias()));
    assert_eq!(ours.status.code(), Some(255));
    assert_eq!(ours.stderr, real.stderr);
    // Whatever user the call would become on A, the connection is A's.
    let out = run(master
        .ssh()
        .args(opts("check", a.alias()))
        .env("MITOSSH_BECOME", "root"));
    assert_eq!(out.status.code(), Some(0));

    // exit for B touches nothing; exit for A closes A's connection.
    let out = run(master.ssh().args(opts("exit", b.alias())));
    assert_eq!(out.status.code(), Some(255));
    assert!(master.status().contains(a.alias()));
    let out = run(master.ssh().args(opts("exit", a.alias())));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stderr, b"Exit request sent.\r\n");
    wait_until(T, "A's context to close", || {
        master.status().contains("no contexts")
    });
    let out = run(master.ssh().args(opts("check", a.alias())));
    assert_eq!(out.status.code(), Some(255));
}

/// What ssh printed for a bad command line: its status, whether a line came before the
/// usage text, and whether the usage text came.
fn rejection(out: &Output) -> (Option<i32>, bool, bool) {
    let err = String::from_utf8_lossy(&out.stderr);
    let usage = err.find("usage: ssh [");
    (
        out.status.code(),
        usage != Some(0) && !err.is_empty(),
        usage.is_some(),
    )
}

/// A bad command line ends as with ssh: status 255, ssh's usage text exactly where ssh
/// prints it (after getopt's errors and a missing subsystem, alone where there is no
/// destination), and not after the errors it reports on their own.
#[test]
fn bad_command_lines_show_the_usage_where_ssh_does() {
    let cases: &[&[&str]] = &[
        &[],
        &["-t"],
        &["-p"],
        &["-Z"],
        &["-z", "host"],
        &["host", "-l"],
        &["-:"],
        &["-s", "host"],
        &["@host"],
        &["ssh://@host"],
        &["-o", "Foo=bar", "host"],
        &["-o:"],
        &["-p", "99999", "host"],
        &["-w", "bad", "host"],
        &["-e", "xx", "host"],
        &["-J", "a:b:c", "host"],
        &["-L", "bad", "host"],
        &["-1", "host"],
        &["-O", "bogus", "host"],
        &["-Q", "nope"],
    ];
    for args in cases {
        let real = run(Command::new(REAL_SSH).args(*args));
        // Strict: a command line the shim accepted would fail differently, not pass.
        let ours = run(Command::new(bin("ssh"))
            .args(*args)
            .env_remove("MITOSSH_SOCKET")
            .env("MITOSSH_STRICT", "1"));
        assert_eq!(
            rejection(&ours),
            rejection(&real),
            "ssh {args:?}:\nreal: {}\nshim: {}",
            String::from_utf8_lossy(&real.stderr),
            String::from_utf8_lossy(&ours.stderr)
        );
    }
}
