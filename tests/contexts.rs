//! Contexts beyond ssh and become: the exec method into real isolated roots (a chroot, a
//! new mount and pid namespace with `unshare --root`, a podman container), reached through
//! sudo with `requiretty` and a password on the test host over one ssh connection; and
//! `local`, the master's own host, with no ssh at all.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(180);

/// A password file readable only by us.
fn password_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("become-password");
    std::fs::write(&p, format!("{TEST_PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A configuration file of named contexts: each `(name, lines)` on the test host (sudo's
/// password in `pw`), then whatever `lines` add.
fn contexts_on(sshd: &Sshd, dir: &Path, pw: &Path, contexts: &[(&str, String)]) -> PathBuf {
    let mut text = String::new();
    for (name, lines) in contexts {
        text.push_str(&format!(
            "[contexts.{name}]\nhost = \"{}\"\nssh_args = [\"-F\", \"{}\"]\npassword_file = \"{}\"\n{lines}\n\n",
            sshd.alias(),
            sshd.ssh_config().display(),
            pw.display()
        ));
    }
    let p = dir.join("config.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// `program` under `master` with the configuration `config`.
fn with_config(master: &Master, config: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = master.command(program);
    cmd.env("MITOSSH_CONFIG", config);
    cmd
}

/// `mitossh-env --become root`, as it reaches the tools it runs.
const BECOME_ROOT: &[(&str, &str)] = &[("MITOSSH_BECOME", "root")];

fn ssh_in(master: &Master, config: &Path, context: &str, command: &str) -> std::process::Output {
    ssh_with(master, config, &[], context, command)
}

fn ssh_with(
    master: &Master,
    config: &Path,
    env: &[(&str, &str)],
    context: &str,
    command: &str,
) -> std::process::Output {
    output_within(
        with_config(master, config, bin("ssh"))
            .envs(env.iter().copied())
            .args([context, command]),
        b"",
        T,
    )
}

fn rsync_to(master: &Master, config: &Path, src: &Path, dst: &str) {
    rsync_with(master, config, &[], src, dst)
}

fn rsync_with(master: &Master, config: &Path, env: &[(&str, &str)], src: &Path, dst: &str) {
    let out = output_within(
        with_config(master, config, "rsync")
            .envs(env.iter().copied())
            .args(["-a", "-e", "ssh"])
            .arg(format!("{}/", src.display()))
            .arg(dst),
        b"",
        T,
    );
    check(&out);
}

/// Asserts that `dir` holds exactly what `src` holds, by content.
fn same_tree(src: &Path, dir: &Path) {
    assert_eq!(tree_digest(dir), tree_digest(src), "{}", dir.display());
}

/// rsync into a chroot and into a fresh mount and pid namespace rooted at the same
/// directory, both below sudo (requiretty, a password) on the test host: one ssh
/// connection for everything, the sudo context shared as their parent.
#[test]
fn rsync_into_a_chroot_and_a_namespace_through_sudo_over_one_connection() {
    escalation();
    let sshd = Sshd::start();
    let master = Master::start();
    let work = tempfile::tempdir().unwrap();
    let rootfs = Rootfs::build(&unique_marker());
    let root = rootfs.path().display().to_string();
    let pw = password_file(work.path());
    let config = contexts_on(
        &sshd,
        work.path(),
        &pw,
        &[
            ("jail", format!("become = \"root\"\nchroot = \"{root}\"")),
            (
                "jail-ns",
                format!(
                    "exec = [\"unshare\", \"--mount\", \"--pid\", \"--fork\", \"--mount-proc\", \"--root\", \"{root}\"]"
                ),
            ),
        ],
    );
    let src = work.path().join("src");
    make_tree(&src, 2 << 20, 30);

    rsync_to(&master, &config, &src, "jail:/srv/app/");
    same_tree(&src, &rootfs.join("srv/app"));
    // Inside: the root's own files, as root, none of the host's.
    let out = ssh_in(
        &master,
        &config,
        "jail",
        "cat /etc/mitossh-rootfs; id -u; test -e /usr/bin/ssh || echo isolated",
    );
    assert_eq!(check(&out), format!("{}\n0\nisolated\n", rootfs.marker));
    assert_eq!(
        ssh_in(&master, &config, "jail", "exit 7").status.code(),
        Some(7)
    );

    // jail-ns names no user: `--become root` supplies the sudo step before its prefix.
    rsync_with(&master, &config, BECOME_ROOT, &src, "jail-ns:/srv/app2/");
    same_tree(&src, &rootfs.join("srv/app2"));
    // A pid namespace of its own: its agent is process 1 there, commands come right after.
    let out = ssh_with(
        &master,
        &config,
        BECOME_ROOT,
        "jail-ns",
        "echo $$; id -u; cat /etc/mitossh-rootfs",
    );
    let said = check(&out);
    let said: Vec<&str> = said.lines().collect();
    assert!(said[0].parse::<u32>().unwrap() < 20, "{said:?}");
    assert_eq!(said[1..], ["0", rootfs.marker.as_str()]);

    // Both below the one sudo context.
    let shown = master.tree();
    assert_eq!(shown.matches("sudo:root").count(), 1, "{shown}");
    assert!(shown.contains(&format!("chroot {root}")), "{shown}");
    assert!(shown.contains("unshare --mount"), "{shown}");
    assert_eq!(sshd.accepted_connections(), 1, "{}", sshd.log());
    // The agents inside end with the master, and leave nothing running in the root.
    assert!(processes_matching(|p| rootfs.holds(p)).len() >= 2);
    let mut master = master;
    master.stop();
    wait_until_none(Duration::from_secs(10), "processes in the root", |p| {
        rootfs.holds(p)
    });
}

/// An exec prefix that fails says why in one line (the tool's own words), and costs
/// nothing else: the sudo context below which it was tried still serves.
#[test]
fn a_failing_exec_prefix_is_one_clear_line() {
    escalation();
    let sshd = Sshd::start();
    let master = Master::start();
    let work = tempfile::tempdir().unwrap();
    let pw = password_file(work.path());
    let missing = format!("/nonexistent-{}", unique_marker());
    let config = contexts_on(
        &sshd,
        work.path(),
        &pw,
        &[
            ("gone", format!("become = \"root\"\nchroot = \"{missing}\"")),
            ("root", "become = \"root\"".into()),
        ],
    );
    let out = ssh_in(&master, &config, "gone", "true");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "mitossh: exec on {}: chroot {missing}",
            sshd.alias()
        )) && err.contains("cannot change root directory"),
        "{err}"
    );
    assert_eq!(check(&ssh_in(&master, &config, "root", "id -u")), "0\n");
    assert_eq!(sshd.accepted_connections(), 1);
}

/// A real container runtime: rsync into a podman container on the test host, as root
/// through sudo (podman wants root here), over the one ssh connection.
#[test]
fn rsync_into_a_podman_container_through_sudo_over_one_connection() {
    escalation();
    let rootfs = Rootfs::build(&unique_marker());
    let container = Container::start(&rootfs);
    let sshd = Sshd::start();
    let master = Master::start();
    let work = tempfile::tempdir().unwrap();
    let pw = password_file(work.path());
    let config = contexts_on(
        &sshd,
        work.path(),
        &pw,
        &[(
            "box",
            format!("become = \"root\"\npodman = \"{}\"", container.name),
        )],
    );
    let src = work.path().join("src");
    make_tree(&src, 2 << 20, 30);
    rsync_to(&master, &config, &src, "box:/srv/app/");
    let copied = work.path().join("copied");
    container.copy_out("/srv/app", &copied);
    same_tree(&src, &copied);

    let out = ssh_in(
        &master,
        &config,
        "box",
        "hostname; cat /etc/mitossh-rootfs; id -u",
    );
    assert_eq!(
        check(&out),
        format!("{}\n{}\n0\n", container.hostname(), rootfs.marker)
    );
    // Whole bytes both ways, and exit codes.
    let data = random_bytes(3 << 20, 9);
    let out = output_within(
        with_config(&master, &config, bin("ssh")).args(["box", "cat; exit 3"]),
        &data,
        T,
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout == data, "{} bytes back", out.stdout.len());
    let shown = master.tree();
    assert!(
        shown.contains(&format!("podman exec -i {}", container.name)),
        "{shown}"
    );
    assert_eq!(sshd.accepted_connections(), 1, "{}", sshd.log());
    // The agent inside ends with the master: only the container's own process is left.
    assert!(
        container.processes().len() >= 2,
        "{:?}",
        container.processes()
    );
    let mut master = master;
    master.stop();
    wait_until(
        Duration::from_secs(10),
        "the container's agent to end",
        || container.processes() == ["/bin/sleep 3600"],
    );
}

/// `host = "local"`: the master's own host, with no ssh anywhere (no sshd runs), alone,
/// as another user through sudo, and into a chroot.
#[test]
fn local_contexts_need_no_ssh_and_compose_with_become_and_exec() {
    escalation();
    let master = Master::start();
    let work = tempfile::tempdir().unwrap();
    let rootfs = Rootfs::build(&unique_marker());
    let config = work.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[contexts.here]\nhost = \"local\"\n\n\
             [contexts.here-t2]\nhost = \"local\"\nbecome = \"{SECOND_USER}\"\n\n\
             [contexts.here-jail]\nhost = \"local\"\nchroot = \"{}\"\n",
            rootfs.path().display()
        ),
    )
    .unwrap();
    let me = check(&Command::new("id").arg("-un").output().unwrap());
    assert_eq!(check(&ssh_in(&master, &config, "here", "id -un")), me);
    assert_eq!(
        check(&ssh_in(&master, &config, "here-t2", "id -un")),
        format!("{SECOND_USER}\n")
    );
    assert_eq!(
        check(&ssh_in(
            &master,
            &config,
            "here-jail",
            "cat /etc/mitossh-rootfs"
        )),
        format!("{}\n", rootfs.marker)
    );
    let src = work.path().join("src");
    make_tree(&src, 1 << 20, 10);
    let dst = work.path().join("dst");
    rsync_to(&master, &config, &src, &format!("here:{}/", dst.display()));
    same_tree(&src, &dst);
    // One local agent, the master's own child process; sudo and chroot below it.
    let status = master.status();
    let rows: Vec<Vec<&str>> = status
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("ID "))
        .skip(1)
        .map(|l| l.split_whitespace().take(4).collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["1", "0", "local", "local"],
            ["2", "1", "sudo", &format!("sudo:{SECOND_USER}")],
            ["3", "1", "exec", "chroot"],
        ],
        "{status}"
    );
    let local_pid: i32 = status
        .lines()
        .nth(2)
        .unwrap()
        .split_whitespace()
        .nth(5)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        descendants(master.pid()).iter().any(|p| p.pid == local_pid),
        "the local agent {local_pid} is not the master's child\n{status}"
    );
}
