//! Becoming another user and reaching hosts through others, against real sshd, sudo
//! (with `requiretty` and a password), su and doas.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(120);

/// A password file readable only by us.
fn password_file(dir: &Path, password: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("become-password");
    std::fs::write(&p, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// The ssh shim, run through `master`, entering `sshd`'s host as root with the password in
/// `pw`.
fn as_root(master: &Master, sshd: &Sshd, command: &str, pw: &Path) -> Command {
    let mut cmd = master.ssh();
    cmd.args(sshd.ssh_args())
        .arg(command)
        .env("MITOSSH_BECOME", "root")
        .env("MITOSSH_BECOME_PASSWORD_FILE", pw);
    cmd
}

#[test]
fn sudo_with_requiretty_and_a_password_runs_as_root() {
    escalation();
    let sshd = Sshd::start();
    let master = Master::start();
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), TEST_PASSWORD);
    let out = output_within(
        &mut as_root(&master, &sshd, "id -un; tty || true", &pw),
        b"",
        T,
    );
    let said = check(&out);
    assert!(said.starts_with("root\n"), "{said}\n{}", master.log());
    // The same context serves again without asking (no password file this time).
    let out = output_within(
        master
            .ssh()
            .args(sshd.ssh_args())
            .arg("id -u")
            .env("MITOSSH_BECOME", "root"),
        b"",
        T,
    );
    assert_eq!(check(&out), "0\n");
    assert_eq!(sshd.accepted_connections(), 1);
}

/// Runs `script` under `mitossh-env` with extra arguments (a fresh master, stopped after).
fn under_env(env_args: &[&str], script: &str) -> Command {
    let mut cmd = Command::new(bin("mitossh-env"));
    cmd.args(env_args)
        .args(["sh", "-ec", script])
        .env("MITOSSH_STRICT", "1")
        .env_remove("MITOSSH_SOCKET");
    cmd
}

#[test]
fn rsync_as_root_three_ways_over_one_connection() {
    escalation();
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src, 3 << 20, 40);
    let pw = password_file(work.path(), TEST_PASSWORD);
    let marker = unique_marker();
    let dst: Vec<PathBuf> = (1..=3)
        .map(|i| PathBuf::from(format!("/root/{marker}-{i}")))
        .collect();
    let config = work.path().join("config.toml");
    let cfg = sshd.ssh_config().display().to_string();
    std::fs::write(
        &config,
        format!(
            "[contexts.{alias}-root]\nhost = \"{alias}\"\nssh_args = [\"-F\", \"{cfg}\"]\nbecome = \"root\"\n",
            alias = sshd.alias()
        ),
    )
    .unwrap();
    let host = sshd.alias();
    let src_s = src.display();
    let script = format!(
        r#"
        # 1. --become root: every host is entered as root.
        MITOSSH_BECOME=root rsync -a -e "ssh -F {cfg}" {src_s}/ {host}:{d1}/
        # 2. a named context from the configuration file.
        rsync -a -e ssh {src_s}/ {host}-root:{d2}/
        # 3. rsync's own sudo, as people write it.
        rsync -a -e "ssh -F {cfg}" --rsync-path="sudo rsync" {src_s}/ {host}:{d3}/
        "#,
        d1 = dst[0].display(),
        d2 = dst[1].display(),
        d3 = dst[2].display(),
    );
    let out = output_within(
        under_env(&[], &script)
            .env("MITOSSH_BECOME_PASSWORD_FILE", &pw)
            .env("MITOSSH_CONFIG", &config),
        b"",
        T,
    );
    check(&out);
    let expected: Vec<(PathBuf, String)> = tree_digest(&src).into_iter().collect();
    for d in &dst {
        let got = owners_and_digests(d);
        assert_eq!(got.len(), expected.len(), "{}", d.display());
        for ((rel, uid, digest), (erel, edigest)) in got.iter().zip(&expected) {
            assert_eq!((rel, digest), (erel, edigest), "{}", d.display());
            assert_eq!(*uid, 0, "{} must be owned by root", d.join(rel).display());
        }
        std::fs::remove_dir_all(d).unwrap();
    }
    assert_eq!(sshd.accepted_connections(), 1, "{}", sshd.log());
}

#[test]
fn a_wrong_password_fails_fast_and_leaks_nowhere() {
    escalation();
    let sshd = Sshd::start();
    let master = Master::start();
    let dir = tempfile::tempdir().unwrap();
    let wrong = format!("wrong-{}", unique_marker());
    let pw = password_file(dir.path(), &wrong);
    let started = Instant::now();
    let out = output_within(&mut as_root(&master, &sshd, "id -un", &pw), b"", T);
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert_eq!(
        err.trim_end(),
        format!("mitossh: sudo on {}: incorrect password", sshd.alias())
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Neither the wrong nor the right password appears in any log or message.
    for (what, text) in [
        ("master log", master.log()),
        ("sshd log", sshd.log()),
        ("stderr", err.to_string()),
        ("stdout", String::from_utf8_lossy(&out.stdout).into_owned()),
    ] {
        assert!(!text.contains(&wrong), "the password is in the {what}");
        assert!(!text.contains(TEST_PASSWORD), "a password is in the {what}");
    }
    // The login context is fine, and a right password afterwards works.
    let right = password_file(dir.path(), TEST_PASSWORD);
    let out = output_within(&mut as_root(&master, &sshd, "id -un", &right), b"", T);
    assert_eq!(check(&out), "root\n");
}

/// `ssh -O stop` (Ansible's reset_connection) retires the host's connection *and* the sudo
/// context on it: open sessions finish, and the next call, become or not, logs in afresh.
#[test]
fn stop_retires_the_host_and_its_sudo_context() {
    escalation();
    let sshd = Sshd::start();
    let master = Master::start();
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), TEST_PASSWORD);
    let as_root = |command: &str| {
        let out = output_within(
            master
                .ssh()
                .args(sshd.ssh_args())
                .arg(command)
                .env("MITOSSH_BECOME", "root")
                .env("MITOSSH_BECOME_PASSWORD_FILE", &pw),
            b"",
            T,
        );
        check(&out)
    };
    assert_eq!(as_root("id -u"), "0\n");
    let tree_before = master.tree();
    assert!(tree_before.contains("sudo:root"), "{tree_before}");

    let out = output_within(
        master.ssh().args(["-O", "stop"]).args(sshd.ssh_args()),
        b"",
        T,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stderr, b"Stop listening request sent.\r\n");
    wait_until(T, "both contexts to close", || {
        master.status().contains("no contexts")
    });
    assert_eq!(as_root("id -u"), "0\n");
    assert_eq!(sshd.accepted_connections(), 2, "{}", sshd.log());
}

#[test]
fn nopasswd_su_and_doas() {
    let e = escalation();
    let sshd = Sshd::start();
    let master = Master::start();
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), TEST_PASSWORD);
    let run = |user: &str, method: &str, pw: Option<&Path>| {
        let mut cmd = master.ssh();
        cmd.args(sshd.ssh_args())
            .arg("id -un; echo $HOME; pwd")
            .env("MITOSSH_BECOME", user)
            .env("MITOSSH_BECOME_METHOD", method);
        if let Some(pw) = pw {
            cmd.env("MITOSSH_BECOME_PASSWORD_FILE", pw);
        }
        output_within(&mut cmd, b"", T)
    };
    let home = e.other.home.display().to_string();
    // NOPASSWD: no password file and no terminal, and it still works.
    let said = check(&run(&e.other.name, "sudo", None));
    assert_eq!(said, format!("{}\n{home}\n{home}\n", e.other.name));
    // su asks for the target's password.
    let said = check(&run(&e.other.name, "su", Some(&pw)));
    assert_eq!(said, format!("{}\n{home}\n{home}\n", e.other.name));
    // doas asks for our own.
    let said = check(&run("root", "doas", Some(&pw)));
    assert!(said.starts_with("root\n"), "{said}");
    assert_eq!(sshd.accepted_connections(), 1);
}

#[test]
fn without_a_password_or_terminal_the_error_says_what_to_do() {
    escalation();
    let sshd = Sshd::start();
    let master = Master::start();
    let out = output_within(
        master
            .ssh()
            .args(sshd.ssh_args())
            .arg("true")
            .env("MITOSSH_BECOME", "root")
            .env_remove("MITOSSH_BECOME_PASSWORD_FILE"),
        b"",
        T,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(err.contains("MITOSSH_BECOME_PASSWORD_FILE"), "{err}");
}

#[test]
fn a_chain_through_a_bastion_with_sudo_at_the_end_and_nothing_left_after_a_kill() {
    escalation();
    let a = Sshd::start();
    let b = Sshd::start();
    let mut master = Master::start();
    let work = tempfile::tempdir().unwrap();
    let cfg = joint_config(work.path(), &[&a, &b]);
    let pw = password_file(work.path(), TEST_PASSWORD);
    let src = work.path().join("src");
    make_tree(&src, 2 << 20, 30);
    let remote = format!("chain-{}", unique_marker());

    // rsync to B through A: the master's own ssh (and key) talks to B over a TCP stream
    // that A's agent opens.
    let out = output_within(
        master
            .command("rsync")
            .args(["-a", "-e"])
            .arg(format!("ssh -F {}", cfg.display()))
            .arg(format!("{}/", src.display()))
            .arg(format!("{}:{remote}/", b.alias()))
            .env("MITOSSH_VIA", a.alias()),
        b"",
        T,
    );
    check(&out);
    let landed = b.user().home.join(&remote);
    assert_eq!(tree_digest(&src), tree_digest(&landed));
    std::fs::remove_dir_all(&landed).unwrap();

    // A sudo context under B, and a long command at every level.
    let long = |via: Option<&str>, host: &str, as_root: bool| {
        let mut cmd = master.ssh();
        cmd.arg("-F")
            .arg(&cfg)
            .arg(host)
            .arg("echo ready; exec sleep 1000")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(v) = via {
            cmd.env("MITOSSH_VIA", v);
        }
        if as_root {
            cmd.env("MITOSSH_BECOME", "root")
                .env("MITOSSH_BECOME_PASSWORD_FILE", &pw);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "ready\n");
        child
    };
    let mut sessions = vec![
        long(None, a.alias(), false),
        long(Some(a.alias()), b.alias(), false),
        long(Some(a.alias()), b.alias(), true),
    ];

    let shown = master.tree();
    let lines: Vec<&str> = shown.lines().collect();
    let find = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in the tree:\n{shown}"))
    };
    let (ia, ib, is) = (
        find(&format!("({})", a.alias())),
        find(&format!("({})", b.alias())),
        find("sudo root@"),
    );
    assert!(
        ia < ib && ib < is,
        "A, then B under it, then sudo under B:\n{shown}"
    );
    let depth = |i: usize| lines[i].find('[').unwrap();
    assert!(
        depth(ia) < depth(ib) && depth(ib) < depth(is),
        "nesting:\n{shown}"
    );
    assert_eq!(a.accepted_connections(), 1, "{}", a.log());
    assert_eq!(b.accepted_connections(), 1, "{}", b.log());

    // Everything that exists now because of the master, on every level, root's included.
    let mut doomed = descendants(master.pid());
    doomed.extend(descendants(a.pid()));
    doomed.extend(descendants(b.pid()));
    let root_sleep = doomed
        .iter()
        .any(|p| p.uid == 0 && p.cmdline == ["sleep", "1000"]);
    assert!(root_sleep, "the root command runs: {doomed:?}");
    let root_agent = doomed
        .iter()
        .any(|p| p.uid == 0 && p.cmdline.iter().any(|a| a == "--hop"));
    assert!(root_agent, "the root agent runs: {doomed:?}");
    master.kill9();
    wait_until_none(Duration::from_secs(5), "processes of the chain", |p| {
        doomed
            .iter()
            .any(|d| d.pid == p.pid && d.start_time == p.start_time)
    });
    for s in &mut sessions {
        wait_child(s, T, "a session to end with its master");
    }
}

/// Starts `cmd` with stdout piped and waits for its first line, which must be `ready`.
fn started(cmd: &mut Command) -> std::process::Child {
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "ready\n");
    child
}

#[test]
fn a_bastion_stays_open_while_a_host_behind_it_works() {
    // A host behind a bastion is reached through one of the bastion's TCP streams, which
    // keeps the bastion busy; it is not a child of the bastion's agent. Its close used to
    // be counted as a child's all the same, wrapping the bastion's count of children, so
    // that a later stream through the bastion looked idle and the bastion closed under it.
    let a = Sshd::start();
    let b = Sshd::start();
    let master = Master::start_with(&["--idle-timeout", "2s"]);
    let work = tempfile::tempdir().unwrap();
    let cfg = joint_config(work.path(), &[&a, &b]);
    let on = |host: &Sshd, via: Option<&Sshd>, command: &str| {
        let mut cmd = master.ssh();
        cmd.arg("-F").arg(&cfg).arg(host.alias()).arg(command);
        if let Some(v) = via {
            cmd.env("MITOSSH_VIA", v.alias());
        }
        cmd
    };
    // The bastion stays busy with a stream of its own while B comes and goes (idle).
    let mut hold = started(&mut on(&a, None, "echo ready; cat >/dev/null"));
    check(&output_within(&mut on(&b, Some(&a), "true"), b"", T));
    wait_until(T, "B's context to close when idle", || {
        !master.tree().contains(&format!("({})", b.alias()))
    });
    // Now a stream through the bastion that outlives its idle timeout, after which
    // the bastion has nothing else to do.
    let mut long = started(&mut on(&b, Some(&a), "echo ready; sleep 6; echo done"));
    drop(hold.stdin.take());
    let status = wait_child(&mut hold, T, "the bastion's own stream to end");
    assert!(status.success());
    let status = wait_child(&mut long, T, "the stream behind the bastion to end");
    let mut rest = String::new();
    std::io::Read::read_to_string(long.stdout.as_mut().unwrap(), &mut rest).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(long.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status}: {err}\n{}", master.log());
    assert_eq!(rest, "done\n");
    assert_eq!(a.accepted_connections(), 1, "the bastion never closed");
    assert_eq!(b.accepted_connections(), 2);
}

#[test]
fn ssh_can_run_on_the_hop_instead() {
    use std::os::unix::fs::{PermissionsExt, chown};
    escalation();
    let a = Sshd::start();
    let b = Sshd::start();
    let master = Master::start();
    let work = tempfile::Builder::new()
        .prefix("mitossh-hop-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The hop's ssh runs as the test user with its own copy of B's key; the master only
    // needs A's.
    let user = test_user();
    let hop_key = work.path().join("hop_key");
    std::fs::copy(b.key(), &hop_key).unwrap();
    chown(&hop_key, Some(user.uid), Some(user.gid)).unwrap();
    std::fs::set_permissions(&hop_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let b_cfg = std::fs::read_to_string(b.ssh_config()).unwrap().replace(
        &b.key().display().to_string(),
        &hop_key.display().to_string(),
    );
    let cfg = work.path().join("ssh_config");
    std::fs::write(
        &cfg,
        format!(
            "{}\n{b_cfg}",
            std::fs::read_to_string(a.ssh_config()).unwrap()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = output_within(
        master
            .ssh()
            .arg("-F")
            .arg(&cfg)
            .arg(b.alias())
            .arg("id -un")
            .env("MITOSSH_VIA", a.alias())
            .env("MITOSSH_VIA_MODE", "ssh"),
        b"",
        T,
    );
    assert_eq!(check(&out), format!("{}\n", user.name));
    let shown = master.tree();
    assert!(shown.contains(&format!("({})", b.alias())), "{shown}");
    assert_eq!(a.accepted_connections(), 1);
    assert_eq!(b.accepted_connections(), 1);
}

/// The prompt says whose password it wants, as sudo's own does: the login user's, not
/// root's.
#[test]
fn the_password_is_asked_on_the_commands_terminal_naming_whose_it_is() {
    let e = escalation();
    let sshd = Sshd::start();
    let master = Master::start();

    // sudo's own prompt, through the real ssh with a terminal.
    let mut real = Command::new("/usr/bin/ssh");
    real.arg("-tt")
        .args(sshd.ssh_args())
        .arg("sudo -u root id -un");
    let (mut term, mut child) = Terminal::spawn(&mut real, 24, 80);
    let sudo_prompt = format!("[sudo] password for {}: ", e.user.name);
    term.expect(&sudo_prompt, T);
    term.send(format!("{TEST_PASSWORD}\n").as_bytes());
    assert!(wait_child(&mut child, T, "the real ssh").success());

    let mut cmd = master.ssh();
    cmd.args(sshd.ssh_args())
        .arg("id -un")
        .env("MITOSSH_BECOME", "root")
        .env_remove("MITOSSH_BECOME_PASSWORD_FILE");
    let (mut term, mut child) = Terminal::spawn(&mut cmd, 24, 80);
    let prompt = format!(
        "[mitossh] sudo to root on {}: password for {}: ",
        sshd.alias(),
        e.user.name
    );
    term.expect(&prompt, T);
    term.send(format!("{TEST_PASSWORD}\n").as_bytes());
    let status = wait_child(&mut child, T, "the command to finish");
    term.expect("root", T);
    let said = term.text();
    assert!(status.success(), "{said}\n{}", master.log());
    assert!(
        !said.contains(TEST_PASSWORD),
        "the password was echoed: {said}"
    );
}

/// ^C at the password prompt ends the shim by SIGINT with echo back on, as ssh's own
/// prompt does (so a script's loop stops there too).
#[test]
fn ctrl_c_at_the_password_prompt_restores_the_terminal_and_interrupts() {
    use nix::sys::termios::{LocalFlags, tcgetattr};
    use std::os::unix::process::ExitStatusExt;
    escalation();
    let sshd = Sshd::start();
    let master = Master::start();
    let mut cmd = master.ssh();
    cmd.args(sshd.ssh_args())
        .arg("id -un")
        .env("MITOSSH_BECOME", "root")
        .env_remove("MITOSSH_BECOME_PASSWORD_FILE");
    let (mut term, mut child) = Terminal::spawn(&mut cmd, 24, 80);
    term.expect("password for ", T);
    let pty = term.dup_fd();
    wait_until(T, "echo off at the prompt", || {
        !tcgetattr(&pty)
            .unwrap()
            .local_flags
            .contains(LocalFlags::ECHO)
    });
    term.send(b"\x03");
    let status = wait_child(&mut child, T, "the shim to end on ^C");
    assert_eq!(
        status.signal(),
        Some(libc::SIGINT),
        "{status:?}: {}",
        term.text()
    );
    let flags = tcgetattr(&pty).unwrap().local_flags;
    assert!(flags.contains(LocalFlags::ECHO), "echo left off");
}

/// Service accounts have nologin as their shell. sudo runs a command without it (only
/// `-i`/`-s` ask for the target's shell), so through mitossh it must work too: a leading
/// `sudo -u`, `--become`, rsync into the account's home, sftp as the account. su does run
/// the target's shell, and says so.
#[test]
fn nologin_service_accounts_run_commands_as_with_sudo() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let e = escalation();
    let sshd = Sshd::start();
    let master = Master::start();
    let svc = &e.service;

    // `sudo -u nobody id -un` as people type it; plain ssh needs -tt for requiretty.
    let out = output_within(
        master
            .ssh()
            .args(sshd.ssh_args())
            .arg("sudo -u nobody id -un"),
        b"",
        T,
    );
    let ours = check(&out);
    let real = output_within(
        Command::new("/usr/bin/ssh")
            .arg("-tt")
            .args(sshd.ssh_args())
            .arg("sudo -u nobody id -un"),
        b"",
        T,
    );
    assert_eq!(ours, "nobody\n");
    assert_eq!(check(&real).replace('\r', ""), ours, "vs the real ssh -tt");

    // --become, for a command, an sftp session, and rsync into the account's home.
    let work = tempfile::tempdir().unwrap();
    let secret = svc.home.join(format!("secret-{}", unique_marker()));
    std::fs::write(&secret, "only mitossh-svc reads this\n").unwrap();
    std::os::unix::fs::chown(&secret, Some(svc.uid), Some(svc.gid)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let src = work.path().join("src");
    make_tree(&src, 1 << 20, 20);
    let dst = svc.home.join(format!("dst-{}", unique_marker()));
    let dst2 = svc.home.join(format!("dst2-{}", unique_marker()));
    let got = work.path().join("got");
    let cfg = sshd.ssh_config().display();
    let host = sshd.alias();
    let script = format!(
        r#"
        test "$(ssh -F {cfg} {host} id -un)" = {svc_name}
        test "$(MITOSSH_BECOME=nobody ssh -F {cfg} {host} id -un)" = nobody
        echo 'get {secret} {got}' | sftp -q -F {cfg} -b - {host} >/dev/null
        rsync -a -e "ssh -F {cfg}" {src}/ {host}:{dst}/
        MITOSSH_BECOME= rsync -a -e "ssh -F {cfg}" --rsync-path="sudo -u {svc_name} rsync" {src}/ {host}:{dst2}/
        "#,
        svc_name = svc.name,
        secret = secret.display(),
        got = got.display(),
        src = src.display(),
        dst = dst.display(),
        dst2 = dst2.display(),
    );
    let out = output_within(&mut under_env(&["--become", &svc.name], &script), b"", T);
    check(&out);
    assert_eq!(
        std::fs::read_to_string(&got).unwrap(),
        "only mitossh-svc reads this\n"
    );
    for d in [&dst, &dst2] {
        assert_eq!(tree_digest(&src), tree_digest(d), "{}", d.display());
        for (rel, uid, _) in owners_and_digests(d) {
            assert_eq!(uid, svc.uid, "{} owned by {}", rel.display(), svc.name);
        }
        assert_eq!(std::fs::metadata(d).unwrap().uid(), svc.uid);
        std::fs::remove_dir_all(d).unwrap();
    }
    std::fs::remove_file(&secret).unwrap();
    // The shim's master, the real ssh, and mitossh-env's master: one each.
    assert_eq!(sshd.accepted_connections(), 3, "{}", sshd.log());

    // su runs the target's login shell: nologin refuses, and the error says it.
    let pw = password_file(work.path(), TEST_PASSWORD);
    let out = output_within(
        master
            .ssh()
            .args(sshd.ssh_args())
            .arg("id -un")
            .env("MITOSSH_BECOME", &svc.name)
            .env("MITOSSH_BECOME_METHOD", "su")
            .env("MITOSSH_BECOME_PASSWORD_FILE", &pw),
        b"",
        T,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "mitossh: su on {}: This account is currently not available.",
            sshd.alias()
        )
    );
}

/// sudo takes a user as `#uid` too, in a leading `sudo -u '#0'` (quoted, as the remote
/// shell needs it) and in `--become`.
#[test]
fn sudo_takes_a_user_by_uid() {
    let e = escalation();
    let sshd = Sshd::start();
    let master = Master::start();
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), TEST_PASSWORD);
    let run = |command: &str, become_user: Option<&str>| {
        let mut cmd = master.ssh();
        cmd.args(sshd.ssh_args())
            .arg(command)
            .env("MITOSSH_BECOME_PASSWORD_FILE", &pw);
        if let Some(u) = become_user {
            cmd.env("MITOSSH_BECOME", u);
        }
        check(&output_within(&mut cmd, b"", T))
    };
    assert_eq!(run("sudo -u '#0' id -un", None), "root\n");
    assert_eq!(run("sudo -nu#0 id -un", None), "root\n");
    let other = format!("sudo -u '#{}' id -un", e.other.uid);
    assert_eq!(run(&other, None), format!("{}\n", e.other.name));
    assert_eq!(run("id -un", Some("#0")), "root\n");
    assert_eq!(sshd.accepted_connections(), 1);
}
