//! Which environment variables a client may set, as the sshd this agent was reached
//! through decides (`AcceptEnv`).
//!
//! A call's `SendEnv`/`SetEnv` would reach sshd as "env" requests, and sshd drops those
//! its `AcceptEnv` does not list. The agent runs the command itself, so it applies the
//! same rule where it can learn it: it finds the sshd listener among its ancestors, reads
//! the configuration file that listener was started with (`-f`, else
//! `/etc/ssh/sshd_config`, with its `Include`s) and its `-o AcceptEnv=` options. When that
//! cannot be known (the file is unreadable, `AcceptEnv` depends on a `Match` block, no sshd
//! is found), the variables are applied as sent, as the README says.

use std::path::{Path, PathBuf};

use crate::sshargs::glob;

/// How far up the process tree the listener is looked for (agent → sshd session →
/// privileged monitor → listener, plus become and hop agents in between).
const MAX_ANCESTORS: usize = 32;

const DEFAULT_CONFIG: &str = "/etc/ssh/sshd_config";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Policy {
    /// sshd accepts variables matching these patterns (none: it accepts nothing).
    Known(Vec<Vec<u8>>),
    /// Nothing could be learnt: everything sent is applied.
    Unknown,
}

impl Policy {
    /// The policy of the sshd among this process's ancestors.
    pub(crate) fn discover() -> Policy {
        let Some(args) = listener_args(std::process::id()) else {
            return Policy::Unknown;
        };
        policy_of(&args, |p| std::fs::read(p).ok())
    }

    /// Whether a variable called `name` may be set.
    pub(crate) fn allows(&self, name: &[u8]) -> bool {
        match self {
            Policy::Known(patterns) => patterns.iter().any(|p| glob(p, name)),
            Policy::Unknown => true,
        }
    }
}

/// The command-line words of the sshd listener above `pid`, if one is found.
fn listener_args(pid: u32) -> Option<Vec<String>> {
    let mut pid = pid;
    for _ in 0..MAX_ANCESTORS {
        pid = parent_of(pid)?;
        if pid <= 1 {
            return None;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        if let Some(args) = sshd_listener(&cmdline) {
            return Some(args);
        }
    }
    None
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: look after the last one.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The arguments of an sshd listener's command line: sshd renames itself
/// `sshd: /usr/sbin/sshd -D -f FILE [listener] 0 of 10-100 startups`.
fn sshd_listener(cmdline: &[u8]) -> Option<Vec<String>> {
    let text = String::from_utf8_lossy(cmdline).replace('\0', " ");
    let rest = text.strip_prefix("sshd: ")?;
    let (args, _) = rest.split_once("[listener]")?;
    let mut words = args.split_whitespace();
    let program = words.next()?;
    program
        .ends_with("sshd")
        .then(|| words.map(str::to_string).collect())
}

/// The policy a listener started with `args` has, reading files with `read`.
fn policy_of(args: &[String], read: impl Fn(&Path) -> Option<Vec<u8>>) -> Policy {
    let mut patterns = Vec::new();
    let mut config = PathBuf::from(DEFAULT_CONFIG);
    let mut words = args.iter();
    while let Some(w) = words.next() {
        match w.as_str() {
            "-f" => config = PathBuf::from(words.next().map_or("", String::as_str)),
            "-o" => {
                let Some(option) = words.next() else { break };
                let (key, value) = option.split_once(['=', ' ']).unwrap_or((option, ""));
                if key.eq_ignore_ascii_case("acceptenv") {
                    patterns.extend(value.split_whitespace().map(|p| p.as_bytes().to_vec()));
                }
            }
            _ => {}
        }
    }
    let mut reader = ConfigReader {
        read: &read,
        patterns,
        depth: 0,
    };
    match reader.file(&config) {
        Some(()) => Policy::Known(reader.patterns),
        None => Policy::Unknown,
    }
}

struct ConfigReader<'a, F> {
    read: &'a F,
    patterns: Vec<Vec<u8>>,
    depth: usize,
}

impl<F: Fn(&Path) -> Option<Vec<u8>>> ConfigReader<'_, F> {
    /// Reads one file; `None` when the policy cannot be known from it.
    fn file(&mut self, path: &Path) -> Option<()> {
        self.depth += 1;
        if self.depth > 16 {
            return None;
        }
        let text = (self.read)(path)?;
        let mut in_match = false;
        for line in String::from_utf8_lossy(&text).lines() {
            let line = line.trim();
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once(|c: char| c.is_whitespace() || c == '=')
                .unwrap_or((line, ""));
            let value = value.trim_start_matches(|c: char| c.is_whitespace() || c == '=');
            match key.to_ascii_lowercase().as_str() {
                "match" => in_match = true,
                "acceptenv" if in_match => return None,
                "acceptenv" => self.patterns.extend(
                    value
                        .split_whitespace()
                        .map(|p| p.trim_matches('"').as_bytes().to_vec()),
                ),
                "include" => {
                    for pattern in value.split_whitespace() {
                        for file in include_files(pattern) {
                            self.file(&file)?;
                        }
                    }
                }
                _ => {}
            }
        }
        self.depth -= 1;
        Some(())
    }
}

/// Files an sshd `Include` names: relative ones are under /etc/ssh; `*` and `?` in the
/// last component.
fn include_files(pattern: &str) -> Vec<PathBuf> {
    let path = if pattern.starts_with('/') {
        PathBuf::from(pattern)
    } else {
        Path::new("/etc/ssh").join(pattern)
    };
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    if !name.contains(['*', '?']) {
        return vec![path];
    }
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| glob(name.as_bytes(), e.file_name().to_string_lossy().as_bytes()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn finds_the_listener_in_sshd_s_renamed_command_line() {
        let l = b"sshd: /usr/sbin/sshd -D -e -f /tmp/x/sshd_config [listener] 0 of 10-100 startups";
        assert_eq!(sshd_listener(l), Some(args("-D -e -f /tmp/x/sshd_config")));
        assert_eq!(sshd_listener(b"sshd: bob@notty"), None);
        assert_eq!(sshd_listener(b"/bin/bash\0-c\0x"), None);
    }

    #[test]
    fn reads_accept_env_from_the_configuration_and_the_command_line() {
        let files = |p: &Path| match p.to_str() {
            Some("/c") => {
                Some(b"AcceptEnv LANG LC_*\nacceptenv=GIT_PROTOCOL\n# AcceptEnv X\n".to_vec())
            }
            Some("/m") => Some(b"AcceptEnv LANG\nMatch user bob\n  AcceptEnv FOO\n".to_vec()),
            _ => None,
        };
        let p = policy_of(&args("-D -f /c -o AcceptEnv=EXTRA"), files);
        assert!(p.allows(b"LANG") && p.allows(b"LC_ALL") && p.allows(b"GIT_PROTOCOL"));
        assert!(p.allows(b"EXTRA"));
        assert!(!p.allows(b"LD_PRELOAD") && !p.allows(b"X"));
        // Conditional, or unreadable: unknown, so everything is applied.
        assert_eq!(policy_of(&args("-f /m"), files), Policy::Unknown);
        assert_eq!(policy_of(&args("-f /missing"), files), Policy::Unknown);
        // A readable file without AcceptEnv: sshd accepts nothing.
        let empty = |_: &Path| Some(b"Port 22\n".to_vec());
        assert!(!policy_of(&[], empty).allows(b"LANG"));
    }
}
