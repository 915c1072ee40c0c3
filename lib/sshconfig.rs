//! What the user's ssh configuration makes of a destination, as OpenSSH itself decides it.
//!
//! Contexts are shared the way OpenSSH's `%C` shares a ControlMaster: by the *resolved*
//! user, host name and port (plus the settings that route the connection), not by the
//! name typed. Only ssh knows what its configuration means (`Match host/user/exec/final`,
//! `Include`, `Host` patterns, canonicalisation), so we ask it: `ssh -G` prints the
//! configuration it would use, and [`parse_dump`] reads that.
//!
//! `ssh -G` costs a process (about 5 ms), so answers are cached by the master, keyed by
//! the destination as given, and kept for the next master. An answer stays valid while
//! the configuration files it was read from are unchanged ([`Sources`]) — unless what it
//! says can change without them: `Match exec`, whose outcome can change at any time,
//! `${VAR}` expansions (of the caller's environment), or a `-F` file named relative to
//! the caller's directory. Such answers are never reused.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};

use crate::proto::{HopConfig, SshHop};
use crate::sshargs::{self, glob};

/// The routing keywords of a [`HopConfig`], in the order they are kept.
const ROUTING: &[&str] = &[
    "proxyjump",
    "proxycommand",
    "bindaddress",
    "bindinterface",
    "addressfamily",
    "hostkeyalias",
];

/// How deep `Include` directives are followed (ssh's own limit is 16).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Reads `ssh -G` output into a [`HopConfig`]. Errors are one line.
pub(crate) fn parse_dump(text: &[u8]) -> Result<HopConfig, String> {
    let mut c = HopConfig {
        request_tty: "auto".into(),
        session_type: "default".into(),
        log_level: "INFO".into(),
        escape_char: Some(b'~'),
        ..HopConfig::default()
    };
    let mut routing: Vec<(String, Vec<u8>)> = Vec::new();
    let (mut have_host, mut have_port) = (false, false);
    for line in text.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(space) = line.iter().position(|b| *b == b' ') else {
            continue;
        };
        let (key, value) = (&line[..space], &line[space + 1..]);
        let key = String::from_utf8_lossy(key).to_ascii_lowercase();
        match key.as_str() {
            "user" => c.user = value.to_vec(),
            "hostname" => {
                c.hostname = value.to_vec();
                have_host = true;
            }
            "port" => {
                c.port = std::str::from_utf8(value)
                    .ok()
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| format!("ssh -G printed a bad port {value:?}"))?;
                have_port = true;
            }
            "batchmode" => c.batch_mode = is_yes(value),
            "sendenv" => c.send_env.push(value.to_vec()),
            "setenv" => {
                if let Some(eq) = value.iter().position(|b| *b == b'=') {
                    c.set_env
                        .push((value[..eq].to_vec(), value[eq + 1..].to_vec()));
                }
            }
            "requesttty" => c.request_tty = lossy_lower(value),
            "sessiontype" => c.session_type = lossy_lower(value),
            "remotecommand" if !value.eq_ignore_ascii_case(b"none") => {
                c.remote_command = Some(value.to_vec());
            }
            "loglevel" => c.log_level = String::from_utf8_lossy(value).to_ascii_uppercase(),
            "escapechar" => c.escape_char = escape_char(value),
            k if ROUTING.contains(&k) => {
                let default = match k {
                    "addressfamily" => value == b"any",
                    _ => value.eq_ignore_ascii_case(b"none"),
                };
                if !default {
                    routing.push((k.to_string(), value.to_vec()));
                }
            }
            _ => {}
        }
    }
    if !have_host || !have_port {
        return Err("ssh -G printed no hostname or port".into());
    }
    routing.sort_by_key(|(k, _)| ROUTING.iter().position(|r| r == k));
    c.routing = routing;
    Ok(c)
}

fn is_yes(v: &[u8]) -> bool {
    v.eq_ignore_ascii_case(b"yes") || v.eq_ignore_ascii_case(b"true")
}

fn lossy_lower(v: &[u8]) -> String {
    String::from_utf8_lossy(v).to_ascii_lowercase()
}

/// ssh prints the escape character as itself, `^X` for a control character, or `none`
/// (and `-e` takes it so).
pub(crate) fn escape_char(v: &[u8]) -> Option<u8> {
    match v {
        b"none" => None,
        [b'^', c] => Some(c & 0x1f),
        [c] => Some(*c),
        _ => Some(b'~'),
    }
}

/// The words after `ssh` that make it print its configuration for `hop`.
pub(crate) fn dump_args(hop: &SshHop) -> Vec<OsString> {
    let mut words: Vec<OsString> = vec!["-G".into()];
    words.extend(
        hop.ssh_args
            .iter()
            .map(|w| OsStr::from_bytes(w).to_os_string()),
    );
    if let Some(user) = &hop.user {
        words.push("-l".into());
        words.push(OsStr::from_bytes(user).to_os_string());
    }
    if let Some(port) = hop.port {
        words.push("-p".into());
        words.push(port.to_string().into());
    }
    words.push("--".into());
    words.push(OsStr::from_bytes(&hop.host).to_os_string());
    words
}

/// What `ssh -G` said: its configuration, and what it wrote on stderr (the `-v` lines).
pub(crate) struct Dump {
    pub config: HopConfig,
    pub stderr: Vec<u8>,
}

/// Runs `ssh -G` for `hop` here (the caller's directory and environment, where a `Match
/// exec` must run). Errors are ssh's own message (it exits 255 on a bad configuration).
pub(crate) fn resolve_here(real_ssh: &Path, hop: &SshHop) -> Result<Dump, String> {
    let out = std::process::Command::new(real_ssh)
        .args(dump_args(hop))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", real_ssh.display()))?;
    finish(out.status.success(), &out.stdout, out.stderr)
}

/// [`resolve_here`] for the master, without blocking its runtime.
pub(crate) async fn resolve_async(real_ssh: &Path, hop: &SshHop) -> Result<Dump, String> {
    let out = tokio::process::Command::new(real_ssh)
        .args(dump_args(hop))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", real_ssh.display()))?;
    finish(out.status.success(), &out.stdout, out.stderr)
}

fn finish(ok: bool, stdout: &[u8], stderr: Vec<u8>) -> Result<Dump, String> {
    if !ok {
        let why = String::from_utf8_lossy(&stderr);
        let last = why.lines().rev().find(|l| !l.trim().is_empty());
        return Err(last.unwrap_or("ssh -G failed").to_string());
    }
    Ok(Dump {
        config: parse_dump(stdout)?,
        stderr,
    })
}

/// The configuration files an answer of `ssh -G` came from, with their state then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sources {
    files: Vec<(PathBuf, Option<Stamp>)>,
    /// A `Match exec` (or another condition of the moment or of the caller's
    /// environment) appears: never reuse the answer.
    pub volatile: bool,
}

/// Enough of a file's metadata to notice that it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

pub(crate) fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

impl Sources {
    /// The files ssh reads for a command line with these options (`-F`, else the user's
    /// and the system's configuration), following `Include`. `home` is the user's home
    /// from the password database: ssh ignores `$HOME`.
    pub(crate) fn of(ssh_args: &[Vec<u8>], home: &Path) -> Sources {
        let mut sources = Sources {
            files: Vec::new(),
            volatile: false,
        };
        let ssh_dir = home.join(".ssh");
        match config_file_option(ssh_args) {
            Some(f) if f.as_bytes().eq_ignore_ascii_case(b"none") => {}
            Some(f) => {
                let path = expand_tilde(&f, home);
                // Relative to the caller's directory, which the next caller need not share.
                sources.volatile |= path.is_relative();
                sources.read(&path, &ssh_dir, home, 0);
            }
            None => {
                sources.read(&ssh_dir.join("config"), &ssh_dir, home, 0);
                let etc = Path::new("/etc/ssh");
                sources.read(&etc.join("ssh_config"), etc, home, 0);
            }
        }
        sources
    }

    /// Whether every file is as it was when these sources were read.
    pub(crate) fn unchanged(&self) -> bool {
        !self.volatile && self.files.iter().all(|(p, s)| stamp(p) == *s)
    }

    fn read(&mut self, path: &Path, base: &Path, home: &Path, depth: usize) {
        if self.files.iter().any(|(p, _)| p == path) {
            return;
        }
        self.files.push((path.to_path_buf(), stamp(path)));
        let Ok(text) = std::fs::read(path) else {
            return;
        };
        for line in text.split(|b| *b == b'\n') {
            let words = config_words(line);
            let Some((keyword, rest)) = words.split_first() else {
                continue;
            };
            if keyword.eq_ignore_ascii_case(b"match") && runs_commands(rest) {
                self.volatile = true;
            }
            // `${VAR}`: the answer follows the environment of whoever ran `ssh -G`.
            if rest.iter().any(|w| w.windows(2).any(|p| p == b"${")) {
                self.volatile = true;
            }
            if keyword.eq_ignore_ascii_case(b"include") {
                if depth >= MAX_INCLUDE_DEPTH {
                    self.volatile = true;
                    continue;
                }
                for pattern in rest {
                    self.include(pattern, base, home, depth);
                }
            }
        }
    }

    /// An `Include` pattern: relative ones are under `~/.ssh` (user files) or `/etc/ssh`.
    fn include(&mut self, pattern: &[u8], base: &Path, home: &Path, depth: usize) {
        let pattern = expand_tilde(OsStr::from_bytes(pattern), home);
        let pattern = if pattern.is_absolute() {
            pattern
        } else {
            base.join(pattern)
        };
        // A file appearing in the directory later changes what the glob matches.
        if let Some(dir) = pattern.parent() {
            self.files.push((dir.to_path_buf(), stamp(dir)));
        }
        let mut matched = glob_files(&pattern);
        matched.sort();
        for file in matched {
            self.read(&file, base, home, depth + 1);
        }
    }
}

/// The last `-F` value of a command line (ssh keeps the last one).
fn config_file_option(ssh_args: &[Vec<u8>]) -> Option<OsString> {
    let mut words: Vec<OsString> = ssh_args
        .iter()
        .map(|w| OsStr::from_bytes(w).to_os_string())
        .collect();
    words.extend(["--".into(), "h".into()]);
    let inv = sshargs::parse(&words).ok()?;
    inv.arg('F').map(OsStr::to_os_string)
}

fn expand_tilde(path: &OsStr, home: &Path) -> PathBuf {
    match path.as_bytes().strip_prefix(b"~/") {
        Some(rest) => home.join(OsStr::from_bytes(rest)),
        None if path.as_bytes() == b"~" => home.to_path_buf(),
        None => PathBuf::from(path),
    }
}

/// A configuration line as words: comments and the `=` after the keyword removed, quotes
/// kept out (enough to find keywords and file names; values are ssh's business).
fn config_words(line: &[u8]) -> Vec<&[u8]> {
    let line = line.trim_ascii();
    if line.starts_with(b"#") {
        return Vec::new();
    }
    line.split(|b| b.is_ascii_whitespace() || *b == b'=')
        .map(unquote)
        .filter(|w| !w.is_empty())
        .collect()
}

fn unquote(w: &[u8]) -> &[u8] {
    let w = w.strip_prefix(b"\"").unwrap_or(w);
    w.strip_suffix(b"\"").unwrap_or(w)
}

/// Whether a `Match` line's criteria include one decided at run time (`exec`, or
/// `localnetwork` of newer releases).
fn runs_commands(criteria: &[&[u8]]) -> bool {
    criteria.iter().any(|w| {
        let w = w.strip_prefix(b"!").unwrap_or(w);
        w.eq_ignore_ascii_case(b"exec") || w.eq_ignore_ascii_case(b"localnetwork")
    })
}

/// Files matching a glob whose wildcards (`*`, `?`) are only in the last component.
fn glob_files(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern.file_name().map(OsStr::as_bytes).unwrap_or_default();
    if !name.iter().any(|b| *b == b'*' || *b == b'?') {
        return vec![pattern.to_path_buf()];
    }
    let Some(dir) = pattern.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            !n.as_bytes().starts_with(b".") && glob(name, n.as_bytes())
        })
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "host web\nuser bob\nhostname 10.0.0.5\nport 2222\naddressfamily any\n\
        batchmode no\nrequesttty auto\nsessiontype default\nloglevel INFO\n\
        proxyjump bastion\nbindaddress 127.0.0.2\nsendenv LANG\nsendenv LC_*\n\
        setenv A=1\nsetenv B=x=y\nescapechar ~\nremotecommand none\n";

    #[test]
    fn reads_what_ssh_g_prints() {
        let c = parse_dump(DUMP.as_bytes()).unwrap();
        assert_eq!(c.user, b"bob");
        assert_eq!(c.hostname, b"10.0.0.5");
        assert_eq!(c.port, 2222);
        assert_eq!(
            c.routing,
            vec![
                ("proxyjump".to_string(), b"bastion".to_vec()),
                ("bindaddress".to_string(), b"127.0.0.2".to_vec()),
            ]
        );
        assert_eq!(c.send_env, vec![b"LANG".to_vec(), b"LC_*".to_vec()]);
        assert_eq!(
            c.set_env,
            vec![
                (b"A".to_vec(), b"1".to_vec()),
                (b"B".to_vec(), b"x=y".to_vec())
            ]
        );
        assert_eq!(c.remote_command, None);
        assert_eq!(c.escape_char, Some(b'~'));
        assert!(!c.batch_mode);
    }

    #[test]
    fn routing_keeps_a_fixed_order_and_drops_defaults() {
        let a =
            parse_dump(b"hostname h\nport 22\nhostkeyalias k\nproxycommand nc %h %p\n").unwrap();
        let b =
            parse_dump(b"proxycommand nc %h %p\nhostname h\nport 22\nhostkeyalias k\n").unwrap();
        assert_eq!(a.routing, b.routing);
        assert_eq!(a.routing[0].0, "proxycommand");
        let plain =
            parse_dump(b"hostname h\nport 22\nproxyjump none\naddressfamily any\n").unwrap();
        assert!(plain.routing.is_empty());
        assert!(parse_dump(b"user x\n").is_err());
    }

    #[test]
    fn escape_characters() {
        assert_eq!(escape_char(b"none"), None);
        assert_eq!(escape_char(b"^]"), Some(0x1d));
        assert_eq!(escape_char(b"%"), Some(b'%'));
    }

    #[test]
    fn sources_follow_includes_and_notice_match_exec() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        std::fs::create_dir_all(home.join(".ssh/conf.d")).unwrap();
        std::fs::write(
            home.join("main"),
            "Include conf.d/*.conf\nHost x\n  Port 1\n",
        )
        .unwrap();
        std::fs::write(home.join(".ssh/conf.d/a.conf"), "Host a\n  User u\n").unwrap();
        let args = vec![
            b"-F".to_vec(),
            home.join("main").as_os_str().as_bytes().to_vec(),
        ];
        let s = Sources::of(&args, home);
        assert!(!s.volatile);
        assert!(s.unchanged());
        assert!(s.files.iter().any(|(p, _)| p.ends_with("conf.d/a.conf")));

        // A new file in the included directory changes the answer.
        std::fs::write(
            home.join(".ssh/conf.d/b.conf"),
            "Match exec \"test -e /x\"\n",
        )
        .unwrap();
        assert!(!s.unchanged());
        let s = Sources::of(&args, home);
        assert!(s.volatile, "Match exec in an included file");
        assert!(!s.unchanged());

        // A comment does not count; -F none reads nothing.
        std::fs::write(home.join(".ssh/conf.d/b.conf"), "# Match exec true\n").unwrap();
        assert!(!Sources::of(&args, home).volatile);
        let none = Sources::of(&[b"-F".to_vec(), b"none".to_vec()], home);
        assert!(none.files.is_empty());
    }

    #[test]
    fn answers_that_follow_the_caller_are_volatile() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        let file = home.join("cfg");
        let args = vec![b"-F".to_vec(), file.as_os_str().as_bytes().to_vec()];
        std::fs::write(
            &file,
            "Host x
  IdentityFile ~/.ssh/id_${ROLE}
",
        )
        .unwrap();
        assert!(Sources::of(&args, home).volatile, "${{VAR}} expansion");
        std::fs::write(
            &file,
            "Host x
  IdentityFile ~/.ssh/id_$ROLE
",
        )
        .unwrap();
        assert!(
            !Sources::of(&args, home).volatile,
            "no expansion without braces"
        );
        let relative = Sources::of(&[b"-F".to_vec(), b"conf/cfg".to_vec()], home);
        assert!(relative.volatile, "-F relative to the caller's directory");
        let tilde = Sources::of(&[b"-F".to_vec(), b"~/cfg".to_vec()], home);
        assert!(!tilde.volatile && tilde.unchanged());
    }

    #[test]
    fn dump_args_pass_the_destination_last() {
        let hop = SshHop {
            ssh_args: vec![b"-F".to_vec(), b"/c".to_vec()],
            host: b"web".to_vec(),
            user: Some(b"bob".to_vec()),
            port: Some(2200),
            config: None,
        };
        let words: Vec<String> = dump_args(&hop)
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            words,
            ["-G", "-F", "/c", "-l", "bob", "-p", "2200", "--", "web"]
        );
    }
}
