//! The first stage: a short `/bin/sh` script that starts a cached agent or receives one.
//!
//! It is handed to the remote login shell (which may be bash, zsh, csh or fish) wrapped as
//! `/bin/sh -c '<script>'`, so the script is one line without single quotes or `!`. It
//! needs only `/bin/sh`, `id`, `mkdir`, `chmod`, `head`, `wc`, `mv` and `rm`.
//!
//! Where the agent is kept: the first usable of `$XDG_RUNTIME_DIR/mitossh`,
//! `~/.cache/mitossh`, `${TMPDIR:-/tmp}/mitossh-$UID` and `/dev/shm/mitossh-$UID`. A
//! directory is usable when it is ours, not a symlink, mode 0700, writable, and allows
//! executing files (an empty file is run as a probe: on a `noexec` mount that fails).
//! The file is named after the image's content hash, written under a temporary name and
//! renamed into place, so concurrent connects never see half an agent.

use super::UPLOAD_MARKER;

/// Inputs to the script.
#[derive(Debug, Clone)]
pub(crate) struct Stage1<'a> {
    /// Content hash of the image, hex; names the cached file.
    pub hash: &'a str,
    /// Size of the image in bytes.
    pub size: u64,
    /// Random token echoed in markers so that stray output cannot fake them.
    pub nonce: &'a str,
    /// Arguments for the agent after the executable path.
    pub agent_args: &'a [&'a str],
}

impl Stage1<'_> {
    /// The script, one line.
    pub(crate) fn script(&self) -> String {
        for s in [self.hash, self.nonce].iter().chain(self.agent_args) {
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b)),
                "stage 1 arguments must be plain words: {s:?}"
            );
        }
        let run = format!("agent {}", self.agent_args.join(" "));
        let dirs = r#""${XDG_RUNTIME_DIR:+$XDG_RUNTIME_DIR/mitossh}" "${HOME:+$HOME/.cache/mitossh}" "${TMPDIR:-/tmp}/mitossh-$u" "/dev/shm/mitossh-$u""#;
        let n = self.size;
        let nonce = self.nonce;
        [
            // Not x86_64: say so plainly; the master reports it as "cannot serve this host".
            r#"a=$(uname -m 2>/dev/null); case "$a" in x86_64|amd64) ;; *) echo "mitossh: no agent for the $a architecture" >&2; exit 97;; esac"#.to_string(),
            "u=$(id -u) || exit 97".into(),
            format!("m=mitossh-agent-{}", self.hash),
            // Cached: start it.
            format!(r#"for d in {dirs}; do if test -n "$d" && test -O "$d" && test -f "$d/$m" && test -x "$d/$m"; then test -L "$d" || exec "$d/$m" {run}; fi; done"#),
            // Not cached: pick a directory, ask for the image, store it, start it.
            format!(
                r#"for d in {dirs}; do test -n "$d" || continue; mkdir -p -m 700 "$d" 2>/dev/null; test -L "$d" && continue; test -d "$d" && test -O "$d" || continue; chmod 700 "$d" 2>/dev/null || continue; t="$d/.$m.$$"; rm -f "$t"; (: > "$t" && chmod 700 "$t" && "$t") 2>/dev/null || {{ rm -f "$t"; continue; }}; echo "{UPLOAD_MARKER} {nonce}"; if head -c {n} > "$t"; then s=$(wc -c < "$t"); if test "$((s))" = {n} && mv -f "$t" "$d/$m"; then exec "$d/$m" {run}; fi; fi; rm -f "$t"; echo "mitossh: could not store the agent in $d" >&2; exit 97; done"#
            ),
            r#"echo "mitossh: no private writable directory to keep the agent in (tried XDG_RUNTIME_DIR, ~/.cache, TMPDIR or /tmp, /dev/shm)" >&2; exit 97"#.into(),
        ]
        .join("; ")
    }

    /// The remote command for ssh: the script wrapped for whatever the login shell is.
    pub(crate) fn remote_command(&self) -> String {
        format!("/bin/sh -c '{}'", self.script())
    }
}

/// Exit status stage 1 uses for "this host cannot run an agent".
pub(crate) const CANNOT_SERVE: i32 = 97;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Command, Stdio};

    fn stage1(hash: &str, size: u64) -> Stage1<'_> {
        Stage1 {
            hash,
            size,
            nonce: "n0nce",
            agent_args: &["--nonce", "n0nce"],
        }
    }

    /// Runs the script with /bin/sh in a private HOME, feeding `upload` if asked.
    fn run(home: &std::path::Path, hash: &str, upload: &[u8]) -> (bool, String) {
        let s = stage1(hash, upload.len() as u64);
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(s.script())
            .env_clear()
            .env("HOME", home)
            .env("PATH", "/usr/bin:/bin")
            .env("TMPDIR", home.join("tmp"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let uploaded = first == format!("{UPLOAD_MARKER} n0nce\n");
        let mut rest = String::new();
        if uploaded {
            stdin.write_all(upload).unwrap();
        } else {
            rest.push_str(&first);
        }
        drop(stdin);
        out.read_to_string(&mut rest).unwrap();
        assert!(child.wait().unwrap().success(), "stage 1 failed: {rest}");
        (uploaded, rest)
    }

    #[test]
    fn script_has_no_single_quote_or_bang() {
        let s = stage1("abc123", 1000).script();
        assert!(!s.contains('\''));
        assert!(!s.contains('!'));
        assert!(!s.contains('\n'));
    }

    #[test]
    fn uploads_once_then_runs_from_cache() {
        let home = tempfile::tempdir().unwrap();
        let fake_agent = b"#!/bin/sh\necho \"agent ran with $*\"\n";
        let (uploaded, out) = run(home.path(), "h1", fake_agent);
        assert!(uploaded, "first connect must ask for the image");
        assert_eq!(out, "agent ran with agent --nonce n0nce\n");

        let (uploaded, out) = run(home.path(), "h1", fake_agent);
        assert!(!uploaded, "second connect must use the cache");
        assert_eq!(out, "agent ran with agent --nonce n0nce\n");

        let cached = home.path().join(".cache/mitossh/mitossh-agent-h1");
        let mode = std::fs::metadata(&cached).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o700);
        let dir_mode = std::fs::metadata(cached.parent().unwrap()).unwrap();
        assert_eq!(dir_mode.permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_new_hash_uploads_again() {
        let home = tempfile::tempdir().unwrap();
        let (uploaded, _) = run(home.path(), "h1", b"#!/bin/sh\necho one\n");
        assert!(uploaded);
        let (uploaded, out) = run(home.path(), "h2", b"#!/bin/sh\necho two\n");
        assert!(uploaded);
        assert_eq!(out, "two\n");
    }

    #[test]
    fn a_short_upload_is_not_cached() {
        let home = tempfile::tempdir().unwrap();
        let s = stage1("h3", 100);
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(s.script())
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"#!/bin/sh\n").unwrap();
        drop(stdin); // EOF after 10 of 100 bytes
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(CANNOT_SERVE));
        assert!(String::from_utf8_lossy(&out.stderr).contains("could not store the agent"));
        assert!(!home.path().join(".cache/mitossh/mitossh-agent-h3").exists());
    }
}
