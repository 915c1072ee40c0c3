//! git over mitossh: clone, push and fetch through the shim, protocol v2 negotiated (so
//! GIT_PROTOCOL reached the remote), all over one connection.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(120);

fn git(master: &Master, cfg: &Path, dir: &Path, args: &[&str]) -> std::process::Output {
    let out = output_within(
        master
            .command("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_SSH_COMMAND", format!("ssh -F {}", cfg.display()))
            .env("GIT_TRACE_PACKET", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.org")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.org")
            .env("HOME", dir),
        b"",
        T,
    );
    assert!(
        out.status.success(),
        "git {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn clone_push_and_fetch_over_one_connection() {
    let sshd = Sshd::start();
    let master = Master::start();
    let user = sshd.user();
    let name = format!("repo-{}.git", unique_marker());
    let bare = bare_repo(user, &name);

    let work = tempfile::tempdir().unwrap();
    let url = format!("{}:{name}", sshd.alias());
    let cfg = sshd.ssh_config();
    let out = git(&master, cfg, work.path(), &["clone", "-q", &url, "a"]);
    // Protocol v2 is only spoken when GIT_PROTOCOL reached git-upload-pack.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("< version 2"),
        "protocol v2 not negotiated:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = work.path().join("a");
    std::fs::write(a.join("hello.txt"), "hello through mitossh\n").unwrap();
    git(&master, cfg, &a, &["add", "hello.txt"]);
    git(&master, cfg, &a, &["commit", "-q", "-m", "first"]);
    git(&master, cfg, &a, &["push", "-q", "origin", "HEAD:main"]);

    git(&master, cfg, work.path(), &["clone", "-q", &url, "b"]);
    let b = work.path().join("b");
    assert_eq!(
        std::fs::read_to_string(b.join("hello.txt")).unwrap(),
        "hello through mitossh\n"
    );
    std::fs::write(a.join("second.txt"), "two\n").unwrap();
    git(&master, cfg, &a, &["add", "second.txt"]);
    git(&master, cfg, &a, &["commit", "-q", "-m", "second"]);
    git(&master, cfg, &a, &["push", "-q", "origin", "HEAD:main"]);
    git(&master, cfg, &b, &["fetch", "-q", "origin"]);
    let out = git(&master, cfg, &b, &["log", "--format=%s", "origin/main"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "second\nfirst\n");
    assert_eq!(sshd.accepted_connections(), 1, "{}", sshd.log());
    std::fs::remove_dir_all(&bare).unwrap();
}
