//! The agent images as they ship (`scripts/build-agents`: size-optimised, one per
//! architecture), hosts that have never seen an agent ([`FreshHost`]), qemu-user for
//! running the aarch64 one here, and a `uname` that says another architecture, so that a
//! test host can pose as another kind of machine.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use std::os::unix::fs::chown;

use super::sshd::{Mounts, Sshd, TestUser, test_user};
use super::wait::output_within;

/// Building the agents from scratch takes a few minutes on two busy cores.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The directory holding `mitossh-agent-<arch>` for every architecture, built (or found
/// up to date: cargo decides) by `scripts/build-agents` once per test process.
pub fn shipped_agents() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-agents");
        let out = output_within(Command::new("bash").arg(script), b"", BUILD_TIMEOUT);
        assert!(
            out.status.success(),
            "scripts/build-agents failed (scripts/prepare installs the rustup targets it needs):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stdout);
        let dir = PathBuf::from(said.lines().last().unwrap_or_default());
        assert!(dir.join("mitossh-agent-aarch64").is_file(), "{said}");
        dir
    })
}

/// The shipped image for `arch`.
pub fn shipped_agent(arch: &str) -> PathBuf {
    shipped_agents().join(format!("mitossh-agent-{arch}"))
}

/// A directory (readable by test users) whose `uname -m` says `arch`; everything else
/// `uname` answers as the real one does. Put it first on a test host's PATH. Its file
/// `arch` says `arch` too, for binding over what the kernel says ([`KERNEL_ARCH`]).
pub fn uname_saying(arch: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mitossh-uname-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let uname = dir.path().join("uname");
    std::fs::write(
        &uname,
        format!(
            "#!/bin/sh\ncase \"$*\" in -m) echo {arch} ;; *) exec /usr/bin/uname \"$@\" ;; esac\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&uname, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("arch"), format!("{arch}\n")).unwrap();
    dir
}

/// Where Linux says what `uname -m` would (stage 1 reads it before asking `uname`).
pub const KERNEL_ARCH: &str = "/proc/sys/kernel/arch";

/// Lets this machine run aarch64 executables through qemu-user, as Debian's
/// `qemu-user-static` does at boot with systemd: binfmt_misc mounted and the package's
/// rule registered (the interpreter opened once, `F`, so it works in any namespace).
/// A machine-wide setting, left in place: it changes nothing for native programs.
pub fn run_aarch64_with_qemu() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let rule = "/usr/lib/binfmt.d/qemu-aarch64.conf";
        let line = std::fs::read_to_string(rule).unwrap_or_else(|e| {
            panic!("{rule}: {e}: install qemu-user-static (scripts/prepare does)")
        });
        let fs = Path::new("/proc/sys/fs/binfmt_misc");
        if !fs.join("register").exists() {
            let out = output_within(
                Command::new("mount")
                    .args(["-t", "binfmt_misc", "binfmt_misc"])
                    .arg(fs),
                b"",
                Duration::from_secs(10),
            );
            assert!(out.status.success(), "mount binfmt_misc: {out:?}");
        }
        if !fs.join("qemu-aarch64").exists() {
            // Another test process may register it at the same moment: EEXIST is fine.
            let written = std::fs::write(fs.join("register"), line.trim_end());
            assert!(
                written.is_ok() || fs.join("qemu-aarch64").exists(),
                "registering {rule}: {written:?}"
            );
        }
    });
}

/// An empty directory owned by `user`, readable only by it, in /tmp.
pub fn private_dir(user: &TestUser, prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// `path` as a directory of `user`'s, made (with its parents) if missing.
pub fn users_dir(user: &TestUser, path: &Path, mode: u32) {
    if !path.is_dir() {
        std::fs::create_dir_all(path).unwrap();
        chown(path, Some(user.uid), Some(user.gid)).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// A host that has never seen an agent: its sessions see empty directories of their own
/// for `~/.cache` and `/dev/shm`, and `TMPDIR` set to a third (and `env`: sshd takes
/// only its first `SetEnv` line, so they share one).
pub struct FreshHost {
    pub sshd: Sshd,
    /// What its sessions see as `~/.cache`.
    pub cache: tempfile::TempDir,
    shm: tempfile::TempDir,
    tmp: tempfile::TempDir,
}

impl FreshHost {
    pub fn start(env: &str) -> FreshHost {
        let user = test_user();
        let (cache, shm, tmp) = (
            private_dir(user, "mitossh-cache-"),
            private_dir(user, "mitossh-shm-"),
            private_dir(user, "mitossh-tmpdir-"),
        );
        std::fs::set_permissions(shm.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let dot_cache = user.home.join(".cache");
        users_dir(user, &dot_cache, 0o700);
        let mounts = Mounts {
            bind: vec![
                (cache.path().to_path_buf(), dot_cache),
                (shm.path().to_path_buf(), "/dev/shm".into()),
            ],
            noexec: vec![],
        };
        let config = format!("SetEnv TMPDIR={} {env}\n", tmp.path().display());
        FreshHost {
            sshd: Sshd::start_with_mounts(user, &config, &mounts),
            cache,
            shm,
            tmp,
        }
    }

    /// Empties its agent caches again: the next connect is a first one.
    pub fn forget_agents(&self) {
        for dir in [self.cache.path(), self.shm.path(), self.tmp.path()] {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                std::fs::remove_dir_all(entry.path()).unwrap();
            }
        }
    }
}
