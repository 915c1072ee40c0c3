//! When mitossh cannot help, the shim is the real ssh: no master, a stale socket, a host
//! whose login shell cannot run an agent. `MITOSSH_STRICT=1` turns each into an error.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

/// The ssh shim with the shims first on PATH but no master.
fn shim_without_master(shims: &std::path::Path) -> Command {
    let mut cmd = Command::new(bin("ssh"));
    cmd.env("PATH", path_with(shims))
        .env_remove("MITOSSH_SOCKET")
        .env_remove("MITOSSH_STRICT");
    cmd
}

#[test]
fn without_a_master_the_shim_is_the_real_ssh() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let shims = shim_dir(dir.path());
    let out = output_within(
        shim_without_master(&shims)
            .args(sshd.ssh_args())
            .arg("echo via-$((1+1))-real"),
        b"",
        T,
    );
    assert_eq!(out.stdout, b"via-2-real\n");
    assert_eq!(out.status.code(), Some(0));

    // A socket left behind by a master that is gone: the same.
    let out = output_within(
        shim_without_master(&shims)
            .env("MITOSSH_SOCKET", dir.path().join("gone.sock"))
            .args(sshd.ssh_args())
            .arg("exit 7"),
        b"",
        T,
    );
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(sshd.accepted_connections(), 2);

    // Strict mode: an error instead, and no connection.
    let out = output_within(
        shim_without_master(&shims)
            .env("MITOSSH_STRICT", "1")
            .args(sshd.ssh_args())
            .arg("true"),
        b"",
        T,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        err.contains("MITOSSH_STRICT") && err.contains("master"),
        "{err}"
    );
    assert_eq!(sshd.accepted_connections(), 2);
}

#[test]
fn a_host_whose_shell_cannot_run_an_agent_gets_the_real_ssh() {
    // A git server: its user's login shell is git-shell, which runs git commands only.
    let user = ensure_user("mitossh-t3");
    let git_shell = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v git-shell"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let ok = Command::new("/usr/sbin/usermod")
        .args(["-s", git_shell.trim(), &user.name])
        .status()
        .unwrap();
    assert!(ok.success());
    let sshd = Sshd::start_for(&user);
    if !user.home.join("served.git").exists() {
        bare_repo(&user, "served.git");
    }
    let master = Master::start();
    let work = tempfile::tempdir().unwrap();
    let clone = |dest: &str, strict: bool| {
        let mut cmd = master.command("git");
        cmd.args(["clone", "-q", &format!("{}:served.git", sshd.alias()), dest])
            .current_dir(work.path())
            .env(
                "GIT_SSH_COMMAND",
                format!("ssh -F {}", sshd.ssh_config().display()),
            );
        if !strict {
            cmd.env_remove("MITOSSH_STRICT");
        }
        output_within(&mut cmd, b"", T)
    };
    let out = clone("one", false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = clone("two", false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One attempt to start an agent (refused by git-shell), remembered; then each clone
    // on a connection of the real ssh's own.
    assert_eq!(sshd.accepted_connections(), 3, "{}", sshd.log());

    let out = clone("three", true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("MITOSSH_STRICT"), "{err}");
}
