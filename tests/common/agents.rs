//! The agent images as they ship (`scripts/build-agents`: size-optimised, one per
//! architecture), qemu-user for running the aarch64 one here, and a `uname` that says
//! another architecture, so that a test host can pose as another kind of machine.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

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

/// A directory for `MITOSSH_AGENT_DIR` holding only the given images (links to them).
pub fn agent_dir(images: &[PathBuf]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mitossh-agents-")
        .tempdir()
        .unwrap();
    for (i, image) in images.iter().enumerate() {
        std::os::unix::fs::symlink(image, dir.path().join(format!("mitossh-agent-{i}"))).unwrap();
    }
    dir
}

/// A directory (readable by test users) whose `uname -m` says `arch`; everything else
/// `uname` answers as the real one does. Put it first on a test host's PATH.
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
    dir
}

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
