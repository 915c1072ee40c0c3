//! The agent images on the wire and on hosts, against real sshds and the images as they
//! ship (`scripts/build-agents`): sent xz-compressed to a host with nothing cached,
//! gzipped to one whose xz cannot decode the copy, as they are to one without either,
//! then started from the cache; a host whose /tmp and $HOME are
//! `noexec`; the aarch64 agent under qemu-user on a host whose `uname -m` says aarch64
//! (rsync, every byte value, exit codes and sudo through it); and a host whose
//! architecture has no agent, which gets the real ssh.
//!
//! What a host's sessions see of the filesystem is changed in a private mount namespace
//! of its sshd (`Mounts`), so no other test, and nothing outside, sees the change.

mod common;

use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use mitossh::content_hash;

const T: Duration = Duration::from_secs(180);

/// What the master logged of its upload: `(KiB sent, format, KiB of the image)`.
fn upload(master: &Master) -> Option<(u64, String, u64)> {
    let log = master.log();
    let line = log
        .lines()
        .find(|l| l.contains("agent started (uploaded"))?;
    let rest = line.split("agent: ").nth(1)?;
    let words: Vec<&str> = rest
        .split([' ', '(', ','])
        .filter(|w| !w.is_empty())
        .collect();
    // "461 KiB (xz, 1214 KiB as it is))"
    Some((
        words[0].parse().ok()?,
        words[2].to_string(),
        words[3].parse().ok()?,
    ))
}

fn run(master: &Master, sshd: &Sshd, command: &str) -> Output {
    output_within(master.ssh().args(sshd.ssh_args()).arg(command), b"", T)
}

#[test]
fn a_host_with_nothing_cached_gets_the_agent_compressed_then_runs_it_from_its_cache() {
    let host = FreshHost::start("");
    let image = shipped_agent("x86_64");
    let bytes = std::fs::read(&image).unwrap();
    let master = Master::start_with_agents(shipped_agents());
    assert_eq!(
        check(&run(&master, &host.sshd, "echo cold-$((6*7))")),
        "cold-42\n"
    );

    let (sent, format, size) = upload(&master).unwrap_or_else(|| panic!("{}", master.log()));
    assert_eq!(format, "xz");
    assert_eq!(size, bytes.len() as u64 >> 10);
    assert!(sent * 10 < size * 4, "xz made {size} KiB into {sent} KiB");
    let cached = host
        .cache
        .path()
        .join("mitossh")
        .join(format!("mitossh-agent-x86_64-{}", content_hash(&bytes)));
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        bytes,
        "inflated byte for byte"
    );
    let mode = std::fs::metadata(&cached).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);

    // The next master finds it there: nothing is sent.
    let again = Master::start_with_agents(shipped_agents());
    assert_eq!(check(&run(&again, &host.sshd, "echo warm")), "warm\n");
    assert!(upload(&again).is_none(), "{}", again.log());
    assert!(
        again.log().contains("agent started (cached)"),
        "{}",
        again.log()
    );
    assert_eq!(host.sshd.accepted_connections(), 2);
}

/// A directory for a host's PATH holding only the tools stage 1 needs and `more`.
fn tools(more: &[&str]) -> tempfile::TempDir {
    let tools = tempfile::Builder::new()
        .prefix("mitossh-tools-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(tools.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let needed = ["uname", "id", "mkdir", "chmod", "head", "wc", "mv", "rm"];
    for tool in needed.iter().chain(more) {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap();
        std::os::unix::fs::symlink(real, tools.path().join(tool)).unwrap();
    }
    tools
}

/// busybox's xz has no BCJ filter: such a host gets gzip, as one without xz does.
#[test]
fn a_host_whose_xz_cannot_decode_the_copy_gets_the_agent_gzipped() {
    let tools = tools(&["gzip"]);
    std::os::unix::fs::symlink("/bin/busybox", tools.path().join("xz")).unwrap();
    let shipped = std::fs::read_dir(shipped_agents())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("x86_64-") && p.extension() == Some("xz".as_ref()))
        .expect("scripts/build-agents ships an xz copy");
    let decoded = Command::new(tools.path().join("xz"))
        .arg("-dc")
        .stdin(std::fs::File::open(&shipped).unwrap())
        .output()
        .unwrap();
    assert!(
        !decoded.status.success(),
        "this busybox decodes x86 BCJ: the test needs another xz"
    );

    let (sent, format, size) = first_connect_with_path(tools.path());
    assert_eq!(format, "gz");
    assert!(sent * 10 < size * 6, "gzip made {size} KiB into {sent} KiB");
}

#[test]
fn a_host_without_gzip_gets_the_agent_as_it_is() {
    // Only the tools stage 1 needs on the host's PATH: no xz or gzip among them.
    let tools = tools(&[]);
    let (sent, format, size) = first_connect_with_path(tools.path());
    assert_eq!((format.as_str(), sent), ("raw", size));
}

/// A first connect to a host whose sessions have only `path` on their PATH: the call runs,
/// the agent it was sent is cached there byte for byte. Returns what was uploaded.
fn first_connect_with_path(path: &Path) -> (u64, String, u64) {
    let host = FreshHost::start(&format!("PATH={}", path.display()));
    let bytes = std::fs::read(shipped_agent("x86_64")).unwrap();
    let master = Master::start_with_agents(shipped_agents());
    assert_eq!(check(&run(&master, &host.sshd, "echo ran")), "ran\n");
    let sent = upload(&master).unwrap_or_else(|| panic!("{}", master.log()));
    let cached = host.cache.path().join(format!(
        "mitossh/mitossh-agent-x86_64-{}",
        content_hash(&bytes)
    ));
    assert_eq!(std::fs::read(&cached).unwrap(), bytes);
    sent
}

#[test]
fn where_tmp_and_home_are_noexec_the_agent_runs_from_dev_shm_and_where_nothing_executes_ssh_does() {
    let user = test_user();
    let bytes = std::fs::read(shipped_agent("x86_64")).unwrap();
    let name = format!("mitossh-agent-x86_64-{}", content_hash(&bytes));
    // A copy cached before $HOME became noexec: stage 1 must not try to start it.
    let home_cache = user.home.join(".cache/mitossh");
    users_dir(user, &user.home.join(".cache"), 0o700);
    users_dir(user, &home_cache, 0o700);
    let stale = home_cache.join(&name);
    std::fs::write(&stale, &bytes).unwrap();
    chown(&stale, Some(user.uid), Some(user.gid)).unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o700)).unwrap();

    let shm = private_dir(user, "mitossh-shm-");
    std::fs::set_permissions(shm.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let noexec = vec![PathBuf::from("/tmp"), user.home.clone()];
    let sshd = Sshd::start_with_mounts(
        user,
        "",
        &Mounts {
            bind: vec![(shm.path().to_path_buf(), "/dev/shm".into())],
            noexec: noexec.clone(),
        },
    );
    let master = Master::start_with_agents(shipped_agents());
    // The host really is like that: nothing runs from /tmp or $HOME there.
    let probe = "cp /bin/true ~/.mitossh-probe && chmod 700 ~/.mitossh-probe; \
                 ~/.mitossh-probe; echo $?; rm -f ~/.mitossh-probe";
    let said = check(&output_within(
        Command::new("/usr/bin/ssh")
            .args(sshd.ssh_args())
            .arg(probe),
        b"",
        T,
    ));
    assert_eq!(said, "126\n", "$HOME is noexec for the host's sessions");

    assert_eq!(check(&run(&master, &sshd, "echo ran")), "ran\n");
    let (_, format, _) = upload(&master).unwrap_or_else(|| panic!("{}", master.log()));
    assert_eq!(format, "xz");
    let kept = shm.path().join(format!("mitossh-{}", user.uid)).join(&name);
    assert_eq!(std::fs::read(&kept).unwrap(), bytes, "kept in /dev/shm");
    // Nothing of the attempt stays in the directories it could not use.
    for dir in [
        home_cache.clone(),
        PathBuf::from(format!("/tmp/mitossh-{}", user.uid)),
    ] {
        let left: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            !left.iter().any(|n| n.starts_with(&format!(".{name}"))),
            "{}: {left:?}",
            dir.display()
        );
    }

    // /dev/shm noexec too: no place to run an agent from. The shim says why under
    // MITOSSH_STRICT=1, and is the real ssh otherwise.
    let shm2 = private_dir(user, "mitossh-shm-");
    let mut all = noexec;
    all.push("/dev/shm".into());
    let nowhere = Sshd::start_with_mounts(
        user,
        "",
        &Mounts {
            bind: vec![(shm2.path().to_path_buf(), "/dev/shm".into())],
            noexec: all,
        },
    );
    let out = run(&master, &nowhere, "echo strict");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(
        err.contains("no private writable directory to keep the agent in"),
        "{err}"
    );
    assert!(err.contains("MITOSSH_STRICT"), "{err}");
    let out = output_within(
        master
            .ssh()
            .env_remove("MITOSSH_STRICT")
            .args(nowhere.ssh_args())
            .arg("echo by-ssh"),
        b"",
        T,
    );
    assert_eq!(check(&out), "by-ssh\n");
    assert_eq!(
        nowhere.accepted_connections(),
        2,
        "the one attempt, then ssh's own"
    );
}

/// A host whose kernel says `arch` to its sessions: in `/proc/sys/kernel/arch` (a file
/// bound over it in sshd's own mount namespace) and in `uname -m` (a `uname` first on
/// their PATH).
fn host_saying(arch: &str) -> (Sshd, tempfile::TempDir) {
    let uname = uname_saying(arch);
    let config = format!(
        "SetEnv PATH={}:/usr/local/bin:/usr/bin:/bin\n",
        uname.path().display()
    );
    let mounts = Mounts {
        bind: vec![(uname.path().join("arch"), KERNEL_ARCH.into())],
        ..Mounts::default()
    };
    (
        Sshd::start_with_mounts(test_user(), &config, &mounts),
        uname,
    )
}

/// Processes below `sshd` that qemu runs for aarch64 (their executable is qemu's).
fn aarch64_agents(sshd: &Sshd) -> Vec<Proc> {
    descendants_running(sshd.pid(), "qemu-aarch64")
}

#[test]
fn an_aarch64_host_runs_the_aarch64_agent_for_rsync_bytes_exit_codes_and_sudo() {
    run_aarch64_with_qemu();
    escalation();
    let (sshd, _uname) = host_saying("aarch64");
    let master = Master::start_with_agents(shipped_agents());
    assert_eq!(check(&run(&master, &sshd, "uname -m")), "aarch64\n");
    let agents = aarch64_agents(&sshd);
    assert_eq!(
        agents.len(),
        1,
        "one agent, run by qemu: {agents:?}\n{}",
        master.log()
    );
    assert!(
        master.status().contains(&format!(" {} ", agents[0].pid)),
        "the master's agent is that process: {}",
        master.status()
    );

    // Every byte value, through the agent's stdin and stdout.
    let all: Vec<u8> = (0..=255u8).cycle().take(256 * 4099).collect();
    let out = output_within(master.ssh().args(sshd.ssh_args()).arg("cat"), &all, T);
    assert!(out.status.success());
    assert!(
        out.stdout == all,
        "{} bytes came back of {}",
        out.stdout.len(),
        all.len()
    );

    // Exit codes, and a death by signal as ssh reports it.
    for (command, code) in [
        ("exit 0", 0),
        ("exit 3", 3),
        ("exit 255", 255),
        ("kill -9 $$", 255),
    ] {
        assert_eq!(
            run(&master, &sshd, command).status.code(),
            Some(code),
            "{command}"
        );
    }

    // rsync both ways, through the shim.
    let work = tempfile::tempdir().unwrap();
    let (src, back) = (work.path().join("src"), work.path().join("back"));
    make_tree(&src, 1 << 20, 30);
    let remote = format!("/tmp/mitossh-arm-{}", unique_marker());
    let rsync = |from: String, to: String| {
        let mut cmd = master.command("rsync");
        cmd.args(["-a", "-e"])
            .arg(format!("ssh -F {}", sshd.ssh_config().display()))
            .arg(from)
            .arg(to);
        check(&output_within(&mut cmd, b"", T));
    };
    rsync(
        format!("{}/", src.display()),
        format!("{}:{remote}/", sshd.alias()),
    );
    rsync(
        format!("{}:{remote}/", sshd.alias()),
        format!("{}/", back.display()),
    );
    assert_eq!(tree_digest(&src), tree_digest(&back));
    check(&run(&master, &sshd, &format!("rm -rf {remote}")));

    // sudo (requiretty, a password): the root agent starts from the aarch64 image too
    // (its PATH is sudo's own, so it is seen in the process table, not by `uname`).
    let pw = work.path().join("pw");
    std::fs::write(&pw, format!("{TEST_PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = output_within(
        master
            .ssh()
            .args(sshd.ssh_args())
            .arg("id -u")
            .env("MITOSSH_BECOME", "root")
            .env("MITOSSH_BECOME_PASSWORD_FILE", &pw),
        b"",
        T,
    );
    assert_eq!(check(&out), "0\n");
    let agents = aarch64_agents(&sshd);
    assert!(
        agents.iter().any(|p| p.uid == 0) && agents.len() == 2,
        "a root agent under qemu beside the first: {agents:?}"
    );
    assert_eq!(
        sshd.accepted_connections(),
        1,
        "all of it over one connection"
    );
}

#[test]
fn a_host_of_an_architecture_without_an_agent_gets_the_real_ssh() {
    let (sshd, _uname) = host_saying("riscv64");
    let master = Master::start_with_agents(shipped_agents());
    let out = run(&master, &sshd, "echo strict");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(
        err.contains("no agent for the riscv64 architecture"),
        "{err}"
    );
    let out = output_within(
        master
            .ssh()
            .env_remove("MITOSSH_STRICT")
            .args(sshd.ssh_args())
            .arg("echo by-ssh; exit 4"),
        b"",
        T,
    );
    assert_eq!(out.stdout, b"by-ssh\n");
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        sshd.accepted_connections(),
        2,
        "the one attempt, then ssh's own"
    );
}
