//! Real clients through `mitossh-env` and the shims: rsync, scp, sftp, over one connection.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(300);

/// A command run under `mitossh-env` (a fresh master, stopped afterwards).
fn under_env(script: &str) -> Command {
    let mut cmd = Command::new(bin("mitossh-env"));
    cmd.args(["sh", "-ec", script]).env("MITOSSH_STRICT", "1");
    cmd.env_remove("MITOSSH_SOCKET");
    cmd
}

#[test]
fn rsync_push_pull_and_twenty_more_calls_use_one_connection() {
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let back = work.path().join("back");
    make_tree(&src, 110 << 20, 300);
    let remote = format!("rsync-{}", unique_marker());
    let cfg = sshd.ssh_config().display().to_string();
    let host = sshd.alias();
    let ssh = format!("ssh -F {cfg}");
    let script = format!(
        r#"
        rsync -a -e "{ssh}" {src}/ {host}:{remote}/
        rsync -a -e "{ssh}" {host}:{remote}/ {back}/
        for i in 1 2 3 4 5 6 7; do
            rsync -a -e "{ssh}" {src}/d1/ {host}:{remote}/copy$i/
            scp -F {cfg} -q {src}/empty {host}:{remote}/scp$i
            test "$(ssh -F {cfg} {host} cat {remote}/d0/e0/f0.txt | wc -c)" -gt 0
        done
        "#,
        src = src.display(),
        back = back.display(),
    );
    let out = output_within(&mut under_env(&script), b"", T);
    check(&out);
    assert_eq!(tree_digest(&src), tree_digest(&back), "pulled tree differs");
    assert_eq!(
        sshd.accepted_connections(),
        1,
        "2 + 21 invocations must share one SSH connection:\n{}",
        sshd.log()
    );
    // What arrived remotely is what we sent, checked on the remote side too.
    let out = output_within(
        Command::new("/usr/bin/ssh")
            .args(sshd.ssh_args())
            .arg(format!(
                "cd {remote} && sha256sum big.bin && ls copy7 | wc -l; rm -rf ~/{remote}"
            )),
        b"",
        T,
    );
    let local = tree_digest(&src)[Path::new("big.bin")].clone();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with(&local), "remote digest {said} != {local}");
}

#[test]
fn scp_and_sftp_go_through_their_shims() {
    let sshd = Sshd::start();
    let master = Master::start();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("payload.bin");
    random_file(&file, 3 << 20, 5);
    let remote = format!("xfer-{}", unique_marker());
    let cfg = sshd.ssh_config().display().to_string();
    let host = sshd.alias();

    // scp (SFTP protocol underneath, `-oKey value` style options from scp itself).
    let out = output_within(
        master.command("scp").args([
            "-F",
            &cfg,
            "-q",
            &file.display().to_string(),
            &format!("{host}:{remote}.scp"),
        ]),
        b"",
        T,
    );
    check(&out);
    let back = work.path().join("back.scp");
    let out = output_within(
        master.command("scp").args([
            "-F",
            &cfg,
            "-q",
            &format!("{host}:{remote}.scp"),
            &back.display().to_string(),
        ]),
        b"",
        T,
    );
    check(&out);
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&file).unwrap());

    // sftp in batch mode, batch on stdin as Ansible does.
    let back = work.path().join("back.sftp");
    let batch = format!(
        "put {} {remote}.sftp\nget {remote}.sftp {}\nrm {remote}.sftp\nrm {remote}.scp\n",
        file.display(),
        back.display()
    );
    let out = output_within(
        master.command("sftp").args(["-F", &cfg, "-b", "-", host]),
        batch.as_bytes(),
        T,
    );
    check(&out);
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&file).unwrap());
    assert_eq!(sshd.accepted_connections(), 1, "{}", sshd.log());
}

#[test]
fn mitossh_env_returns_the_commands_status_and_leaves_nothing_behind() {
    let sshd = Sshd::start();
    let cfg = sshd.ssh_config().display().to_string();
    let host = sshd.alias();
    // The remote shell's parent is the agent: print its pid, and the master's socket.
    let out = output_within(
        &mut under_env(&format!(
            "ssh -F {cfg} {host} 'echo $PPID'; echo $MITOSSH_SOCKET; exit 7"
        )),
        b"",
        T,
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let mut lines = said.lines();
    let agent: i32 = lines.next().unwrap().parse().unwrap();
    let socket = lines.next().unwrap().to_string();
    // mitossh-env waited for the master, which waited for its ssh: all gone already.
    wait_until_none(Duration::from_secs(2), "the master and its agent", |p| {
        p.pid == agent || p.cmdline.iter().any(|a| a.contains(&socket))
    });
    assert!(!Path::new(&socket).exists(), "socket {socket} left behind");

    // A missing command is 127, as with env(1).
    let out = output_within(
        Command::new(bin("mitossh-env")).arg("no-such-program-mitossh"),
        b"",
        T,
    );
    assert_eq!(out.status.code(), Some(127));
}

#[test]
fn a_killed_mitossh_env_takes_its_master_along() {
    let mut env = Command::new(bin("mitossh-env"))
        .args(["sh", "-c", "echo $MITOSSH_SOCKET $$; exec sleep 1000"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(env.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let mut words = line.split_whitespace();
    let socket = words.next().unwrap().to_string();
    let cmd_pid: i32 = words.next().unwrap().parse().unwrap();
    assert!(
        !processes_matching(|p| p.cmdline.iter().any(|a| a.contains(&socket))).is_empty(),
        "the master runs"
    );
    env.kill().unwrap();
    env.wait().unwrap();
    wait_until_none(Duration::from_secs(5), "the master", |p| {
        p.cmdline.iter().any(|a| a.contains(&socket))
    });
    // CMD itself is the user's process, as with env(1); clean it up by pid.
    send_signal(cmd_pid, libc::SIGKILL);
}

#[test]
fn a_legacy_script_runs_unchanged_over_one_connection() {
    let sshd = Sshd::start();
    let out_dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/legacy.sh");
    let out = output_within(
        Command::new(bin("mitossh-env"))
            .args(["sh", script, sshd.alias(), "200", "50"])
            .arg(out_dir.path())
            .env("SSH_OPTS", format!("-F {}", sshd.ssh_config().display()))
            .env("MITOSSH_STRICT", "1")
            .env_remove("MITOSSH_SOCKET"),
        b"",
        T,
    );
    check(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "all-good\n");
    assert_eq!(sshd.accepted_connections(), 1, "{}", sshd.log());
}

#[test]
fn a_named_socket_directory_keeps_its_mode_and_stale_runs_are_swept() {
    use std::os::unix::fs::PermissionsExt;
    // A shared directory for the socket: the master must not make it private.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = shared.path().join("m.sock");
    let out = output_within(
        Command::new(bin("mitossh-env"))
            .arg("--socket")
            .arg(&socket)
            .args(["sh", "-c", "test -S \"$MITOSSH_SOCKET\""]),
        b"",
        T,
    );
    check(&out);
    let mode = std::fs::metadata(shared.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o755);

    // The directory of a mitossh-env that was killed (its pid is gone) is removed by the next.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let runtime = std::path::PathBuf::from(format!("/tmp/mitossh-{}", nix::unistd::getuid()));
    let stale = runtime.join(format!("env-{dead_pid}"));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("master.log"), "old").unwrap();
    let out = output_within(
        Command::new(bin("mitossh-env"))
            .arg("true")
            .env_remove("MITOSSH_SOCKET")
            .env_remove("XDG_RUNTIME_DIR"),
        b"",
        T,
    );
    check(&out);
    assert!(!stale.exists(), "{} was left", stale.display());
}
