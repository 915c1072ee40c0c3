//! Many hosts from one private sshd, for tests and benchmarks at scale: N aliases in one
//! client configuration, each its own ssh connection (a `HostKeyAlias` of its own sets
//! them apart, as distinct hosts are: mitossh shares a context between aliases of one
//! host, as `%C` does). Also descriptor limits and memory figures of a process.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::sshd::Sshd;

/// `extra` lines for tests that connect hundreds of hosts: the classic key exchange costs
/// half the CPU of OpenSSH's default post-quantum one, which is most of a handshake's.
pub const FAST_KEX: &str = "  KexAlgorithms curve25519-sha256";

/// A client configuration being written: groups of aliases, each group one sshd.
#[derive(Default)]
pub struct FleetConfig {
    text: String,
}

impl FleetConfig {
    pub fn new() -> FleetConfig {
        FleetConfig::default()
    }

    /// `names` on `sshd`, each with `extra` lines (ssh's `%n` is the alias).
    pub fn hosts(&mut self, sshd: &Sshd, names: &[String], extra: &str) -> &mut FleetConfig {
        self.hosts_with_key(sshd, names, sshd.key(), extra)
    }

    /// Like [`FleetConfig::hosts`], logging in with `key` (one a gateway's agent, running
    /// as the test user, can read: [`key_for_test_user`]).
    pub fn hosts_with_key(
        &mut self,
        sshd: &Sshd,
        names: &[String],
        key: &Path,
        extra: &str,
    ) -> &mut FleetConfig {
        for name in names {
            let _ = write!(
                self.text,
                "Host {name}\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  \
                 IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  \
                 LogLevel ERROR\n  BatchMode yes\n  HostKeyAlias {name}\n{extra}\n",
                sshd.port(),
                sshd.user().name,
                key.display(),
            );
        }
        self
    }

    /// Raw lines (a host block of one's own).
    pub fn raw(&mut self, text: &str) -> &mut FleetConfig {
        self.text.push_str(text);
        self.text.push('\n');
        self
    }

    /// Writes it as `dir/ssh_config`, readable by everyone (a gateway's agent reads it as
    /// the test user).
    pub fn write(&self, dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("ssh_config");
        std::fs::write(&p, &self.text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }
}

/// A copy of `sshd`'s client key in `dir`, owned by its user (0600): what an ssh run by
/// that user's agent on a gateway logs in with. `dir` becomes 0755 so that the user can
/// reach the key and a configuration written there.
pub fn key_for_test_user(sshd: &Sshd, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = dir.join("gateway_key");
    std::fs::copy(sshd.key(), &key).unwrap();
    let user = sshd.user();
    std::os::unix::fs::chown(&key, Some(user.uid), Some(user.gid)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    key
}

/// `prefix` + 001, 002, … (as wide as `n` needs, at least 3 digits).
pub fn host_names(prefix: &str, n: usize) -> Vec<String> {
    let width = n.to_string().len().max(3);
    (1..=n).map(|i| format!("{prefix}{i:0width$}")).collect()
}

/// Sets this process's soft descriptor limit (the hard one stays): what the programs it
/// starts inherit, as from a login with the common default of 1024.
pub fn set_soft_descriptor_limit(soft: u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = soft.min(l.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
    }
}

/// Makes `cmd` start with these descriptor limits (a user whose hard limit is low too).
pub fn with_descriptor_limits(cmd: &mut Command, soft: u64, hard: u64) -> &mut Command {
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let l = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// How many descriptors process `pid` has open.
pub fn open_descriptors(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// (Rss, Pss) in KiB from `/proc/PID/smaps_rollup`.
pub fn memory(pid: i32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

/// The soft descriptor limit of process `pid`, from `/proc/PID/limits`.
pub fn soft_descriptor_limit(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
