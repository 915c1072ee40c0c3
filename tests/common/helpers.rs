//! Small things several tests need: asserting a command succeeded, a client config naming
//! several test sshds, a bare git repository owned by a test user.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::sshd::{Sshd, TestUser};

/// Asserts `out` is a success, showing everything it said otherwise; returns its stdout.
pub fn check(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One client configuration naming several test sshds (each harness config names one),
/// readable by everyone (an agent on a hop may read it as the test user).
pub fn joint_config(dir: &Path, servers: &[&Sshd]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let text: String = servers
        .iter()
        .map(|s| std::fs::read_to_string(s.ssh_config()).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let p = dir.join("ssh_config");
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

/// A bare git repository `name` (branch `main`) in `user`'s home, owned by `user`.
pub fn bare_repo(user: &TestUser, name: &str) -> PathBuf {
    let repo = user.home.join(name);
    let ok = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&repo)
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", user.uid, user.gid))
        .arg(&repo)
        .status()
        .unwrap();
    assert!(ok.success());
    repo
}
