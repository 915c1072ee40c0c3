//! Answering the master's questions in the shim, as ssh itself would ask them.
//!
//! * A become password: from a password file if one is named, else on the controlling
//!   terminal with echo off. Never from argv or the value of an environment variable.
//! * What the master's ssh asks (login password, passphrase, keyboard-interactive, host
//!   key): only a person answers, and where ssh would ask — ssh's `read_passphrase` rules
//!   applied to this process's environment: the user's `SSH_ASKPASS` when
//!   `SSH_ASKPASS_REQUIRE` (or the lack of a terminal with `DISPLAY` set) says so, else
//!   `/dev/tty`. Echo is on only for confirmations (yes/no/fingerprint). Never a file.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::termios::{self, LocalFlags, SetArg};

use crate::proto::{PromptKind, Secret};

/// Names a file whose first line is the become password.
pub(crate) const PASSWORD_FILE_ENV: &str = "MITOSSH_BECOME_PASSWORD_FILE";

/// ssh's default askpass program, used when `SSH_ASKPASS` is unset.
const DEFAULT_ASKPASS: &str = "/usr/bin/ssh-askpass";

/// The answer to `prompt`; `None` when nobody can give one here.
pub(crate) fn answer(prompt: &str, kind: PromptKind, file: Option<&Path>) -> Option<Secret> {
    match kind {
        PromptKind::Become => match password_file(file) {
            Some(path) => from_file(&path),
            None => from_terminal(prompt, false),
        },
        PromptKind::Ssh { echo } => match Asker::here() {
            Asker::Program(program) => from_program(&program, prompt),
            Asker::Terminal => from_terminal(prompt, echo),
            Asker::Nobody => None,
        },
    }
}

/// Whether a person can answer ssh's questions here: a terminal, or an askpass program
/// ssh would run.
pub(crate) fn can_prompt() -> bool {
    !matches!(Asker::here(), Asker::Nobody)
}

fn password_file(file: Option<&Path>) -> Option<PathBuf> {
    file.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(PASSWORD_FILE_ENV)
            .filter(|v| !v.is_empty())
            .map(Into::into)
    })
}

/// Where ssh would ask, by its `read_passphrase` rules.
enum Asker {
    Program(PathBuf),
    Terminal,
    Nobody,
}

impl Asker {
    fn here() -> Asker {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let tty = has_terminal();
        let choice = askpass_choice(
            env("SSH_ASKPASS_REQUIRE").map(|v| v.to_string_lossy().to_ascii_lowercase()),
            env("DISPLAY").is_some() || env("WAYLAND_DISPLAY").is_some(),
            tty,
        );
        match choice {
            Choice::Program => {
                let program = env("SSH_ASKPASS")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_ASKPASS));
                if program.exists() || program.components().count() == 1 {
                    Asker::Program(program)
                } else if tty {
                    Asker::Terminal
                } else {
                    Asker::Nobody
                }
            }
            Choice::Terminal if tty => Asker::Terminal,
            Choice::Terminal => Asker::Nobody,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Choice {
    Program,
    Terminal,
}

/// OpenSSH's readpass.c: askpass is allowed with a display (or when forced), used when
/// forced, preferred (and allowed), or when there is no terminal.
fn askpass_choice(require: Option<String>, display: bool, tty: bool) -> Choice {
    let (mut use_askpass, mut allow) = (false, display);
    match require.as_deref() {
        Some("force") => (use_askpass, allow) = (true, true),
        Some("prefer") => use_askpass = allow,
        Some("never") => allow = false,
        _ => {}
    }
    if !tty {
        use_askpass = true;
    }
    if use_askpass && allow {
        Choice::Program
    } else {
        Choice::Terminal
    }
}

fn has_terminal() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

fn from_file(path: &Path) -> Option<Secret> {
    match std::fs::read(path) {
        Ok(mut bytes) => {
            let line = first_line(&bytes);
            bytes.iter_mut().for_each(|b| *b = 0);
            Some(line)
        }
        Err(e) => {
            eprintln!(
                "mitossh: cannot read the password file {}: {e}",
                path.display()
            );
            None
        }
    }
}

fn first_line(bytes: &[u8]) -> Secret {
    let end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(bytes.len());
    let mut line = bytes[..end].to_vec();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Secret::new(line)
}

/// Runs the user's askpass program with the prompt, as ssh does; its first line of output
/// is the answer, unless it fails.
fn from_program(program: &Path, prompt: &str) -> Option<Secret> {
    let out = std::process::Command::new(program)
        .arg(prompt)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    let mut stdout = out.stdout;
    let answer = out.status.success().then(|| first_line(&stdout));
    stdout.iter_mut().for_each(|b| *b = 0);
    answer
}

/// Asks on the controlling terminal, with echo as asked; the terminal's settings are
/// restored however the read ends.
fn from_terminal(prompt: &str, echo: bool) -> Option<Secret> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let saved = termios::tcgetattr(tty.as_fd()).ok()?;
    let mut quiet = saved.clone();
    if !echo {
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
    }
    (&tty).write_all(prompt.as_bytes()).ok()?;
    // A signal during the prompt must not leave echo off (see shim::signals).
    super::tty::remember(tty.as_fd(), saved.clone());
    if termios::tcsetattr(tty.as_fd(), SetArg::TCSAFLUSH, &quiet).is_err() {
        super::tty::forget();
        return None;
    }
    let mut line = Vec::new();
    let read = BufReader::new(&tty).read_until(b'\n', &mut line);
    let _ = termios::tcsetattr(tty.as_fd(), SetArg::TCSAFLUSH, &saved);
    super::tty::forget();
    read.ok()?;
    if line.is_empty() {
        return None; // end of input (^D): nothing typed, nothing to send
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Some(Secret::new(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_s_first_line_is_the_become_password() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, b"s3cret\r\nignored\n").unwrap();
        let become_pw = |p: &Path| answer("x", PromptKind::Become, Some(p));
        assert_eq!(become_pw(&p).unwrap().expose(), b"s3cret");
        std::fs::write(&p, b"no-newline").unwrap();
        assert_eq!(become_pw(&p).unwrap().expose(), b"no-newline");
    }

    #[test]
    fn askpass_is_chosen_as_ssh_chooses_it() {
        use Choice::*;
        let f = |r: Option<&str>, display, tty| askpass_choice(r.map(String::from), display, tty);
        assert_eq!(f(None, false, true), Terminal);
        assert_eq!(f(None, true, true), Terminal, "a terminal wins by default");
        assert_eq!(f(None, true, false), Program, "no terminal, a display");
        assert_eq!(
            f(None, false, false),
            Terminal,
            "nothing: ssh tries the tty and fails"
        );
        assert_eq!(f(Some("force"), false, true), Program);
        assert_eq!(f(Some("prefer"), true, true), Program);
        assert_eq!(f(Some("prefer"), false, true), Terminal);
        assert_eq!(f(Some("never"), true, false), Terminal);
    }
}
