//! `mitossh-env` and the master's own files: a named socket never replaces what is there,
//! `--keep` leaves a master that later shells can find and stop, and `mitossh` itself is
//! on PATH for the command.

mod common;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(120);

/// `mitossh-env ARGS…` with no master in the environment.
fn env_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("mitossh-env"));
    cmd.args(args)
        .env("MITOSSH_STRICT", "1")
        .env_remove("MITOSSH_SOCKET");
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that mitossh-env refused to start a master on `socket` with one line naming
/// `names`.
fn assert_refused(out: &Output, names: &Path) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&names.display().to_string()), "{err}");
}

#[test]
fn a_named_socket_never_replaces_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "important\n").unwrap();

    // --socket and MITOSSH_SOCKET alike, and `mitossh master` itself.
    let out = output_within(env_cmd(&["--socket"]).arg(&file).arg("true"), b"", T);
    assert_refused(&out, &file);
    assert!(stderr(&out).contains("not a socket"), "{}", stderr(&out));
    let out = output_within(env_cmd(&["true"]).env("MITOSSH_SOCKET", &file), b"", T);
    assert_refused(&out, &file);
    let out = output_within(
        Command::new(bin("mitossh"))
            .args(["master", "--socket"])
            .arg(&file),
        b"",
        T,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&file.display().to_string()));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "important\n");

    // A directory and a symbolic link stay as they are too.
    let sub = dir.path().join("d");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("inside"), "x").unwrap();
    let link = dir.path().join("l");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    for path in [&sub, &link] {
        let out = output_within(env_cmd(&["--socket"]).arg(path).arg("true"), b"", T);
        assert_refused(&out, path);
    }
    assert!(sub.join("inside").exists());
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "important\n");

    // A missing directory is not created.
    let missing = dir.path().join("no/such/dir");
    let out = output_within(
        env_cmd(&["true"]).env("MITOSSH_SOCKET", missing.join("x.sock")),
        b"",
        T,
    );
    assert_refused(&out, &missing);
    assert!(!dir.path().join("no").exists(), "a directory was created");

    // A stale socket of ours (its master was killed) is taken over, and removed after.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(is_socket(&stale));
    let out = output_within(
        env_cmd(&["--socket"])
            .arg(&stale)
            .args(["sh", "-c", "mitossh status"]),
        b"",
        T,
    );
    assert!(check(&out).starts_with("master "));
    assert!(!stale.exists());
}

#[test]
fn a_master_removes_only_the_socket_it_made() {
    let mut master = Master::start();
    // Someone moves the socket away and puts a file of theirs in its place.
    let moved = master.dir.path().join("moved.sock");
    std::fs::rename(&master.socket, &moved).unwrap();
    std::fs::write(&master.socket, "theirs\n").unwrap();
    master.stop();
    assert_eq!(std::fs::read_to_string(&master.socket).unwrap(), "theirs\n");
}

fn is_socket(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// Kills a process by pid when dropped, unless it is gone already: a kept master must not
/// outlive a failed test.
struct KillOnDrop(Option<Proc>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take().filter(Proc::is_alive) {
            send_signal(p.pid, libc::SIGKILL);
        }
    }
}

#[test]
fn keep_leaves_a_master_that_other_shells_find_and_stop() {
    let sshd = Sshd::start();
    // A runtime directory of our own, so that no other test's mitossh-env sweeps it.
    let runtime = tempfile::tempdir().unwrap();
    let cfg = sshd.ssh_config().display().to_string();
    let host = sshd.alias();
    let out = output_within(
        env_cmd(&["--keep", "sh", "-c"])
            .arg(format!("ssh -F {cfg} {host} 'echo $PPID'"))
            .env("XDG_RUNTIME_DIR", runtime.path()),
        b"",
        T,
    );
    let said = check(&out);
    let agent = process(said.trim().parse().unwrap()).expect("the agent runs");
    let err = stderr(&out);
    let socket = PathBuf::from(
        err.split("export MITOSSH_SOCKET=")
            .nth(1)
            .unwrap_or_else(|| panic!("no socket in {err:?}"))
            .trim(),
    );
    let master_pid: i32 = err
        .split_whitespace()
        .nth(2)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no master pid in {err:?}"));
    let _cleanup = KillOnDrop(process(master_pid));
    assert!(is_socket(&socket), "{err}");
    let log = socket.with_file_name("master.log");
    assert!(err.contains(&log.display().to_string()), "{err}");
    assert!(!std::fs::read_to_string(&log).unwrap().is_empty());

    // Another shell, knowing only the socket.
    let from_elsewhere = |args: &[&str]| {
        let mut cmd = Command::new(bin("mitossh"));
        cmd.args(args).env("MITOSSH_SOCKET", &socket);
        output_within(&mut cmd, b"", T)
    };
    let status = check(&from_elsewhere(&["status"]));
    assert!(status.contains(host), "{status}");

    // A later mitossh-env sweeps leftovers but not the kept master's directory, and one
    // told about the kept master uses it: still one connection.
    check(&output_within(
        env_cmd(&["true"]).env("XDG_RUNTIME_DIR", runtime.path()),
        b"",
        T,
    ));
    assert!(is_socket(&socket));
    let out = output_within(
        env_cmd(&["ssh", "-F", &cfg, host, "true"])
            .env("XDG_RUNTIME_DIR", runtime.path())
            .env("MITOSSH_SOCKET", &socket),
        b"",
        T,
    );
    check(&out);
    assert_eq!(sshd.accepted_connections(), 1, "{}", sshd.log());

    check(&from_elsewhere(&["stop"]));
    wait_until_none(T, "the kept master and its agent", |p| {
        (p.pid == master_pid) || (p.pid == agent.pid && p.start_time == agent.start_time)
    });
    assert!(!socket.exists());
    let out = from_elsewhere(&["status"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn mitossh_itself_is_on_path_inside_mitossh_env() {
    let out = output_within(
        env_cmd(&[
            "sh",
            "-c",
            "command -v mitossh; readlink -f \"$(command -v mitossh)\"; mitossh tree; mitossh status",
        ])
            .env("PATH", "/usr/bin:/bin"),
        b"",
        T,
    );
    let said = check(&out);
    let mut lines = said.lines();
    let found = PathBuf::from(lines.next().unwrap());
    assert!(found.ends_with("bin/mitossh"), "{said}");
    assert_eq!(
        PathBuf::from(lines.next().unwrap()),
        bin("mitossh").canonicalize().unwrap()
    );
    assert!(
        lines.all(|l| l.starts_with("master ")
            || l.starts_with("connecting: ")
            || l == "no contexts"),
        "{said}"
    );
}
