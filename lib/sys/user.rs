//! The account a process runs as: what sshd would use to start a session.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// Name, home directory and login shell of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    pub name: String,
    pub uid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl Account {
    /// The account of the current process: the password database first (as sshd does),
    /// then the environment sshd or sudo set up, then safe defaults. The agent is a static
    /// binary whose libc reads only `/etc/passwd`; on hosts with users in LDAP or sssd the
    /// environment fills the gap.
    pub(crate) fn current() -> Account {
        let uid = nix::unistd::getuid();
        let from_db = nix::unistd::User::from_uid(uid).ok().flatten();
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let name = from_db
            .as_ref()
            .map(|u| u.name.clone())
            .or_else(|| env("USER").or_else(|| env("LOGNAME")).map(lossy))
            .unwrap_or_else(|| uid.to_string());
        let home = from_db
            .as_ref()
            .map(|u| u.dir.clone())
            .filter(|d| !d.as_os_str().is_empty())
            .or_else(|| env("HOME").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/"));
        let shell = from_db
            .as_ref()
            .map(|u| u.shell.clone())
            .filter(|s| !s.as_os_str().is_empty())
            .or_else(|| env("SHELL").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/bin/sh"));
        Account {
            name,
            uid: uid.as_raw(),
            home,
            shell,
        }
    }
}

fn lossy(s: OsString) -> String {
    String::from_utf8_lossy(&s.into_vec()).into_owned()
}

/// This machine's host name, or "localhost" if it cannot be read.
pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}
