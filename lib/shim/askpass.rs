//! Answering the master's password questions, as ssh's askpass would: from a password
//! file if one is named, else on the controlling terminal with echo off. The password is
//! never taken from argv or from the value of an environment variable.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::Path;

use nix::sys::termios::{self, LocalFlags, SetArg};

use crate::proto::Secret;

/// Names a file whose first line is the become password.
pub const PASSWORD_FILE_ENV: &str = "MITOSSH_BECOME_PASSWORD_FILE";

/// The answer to `prompt`: from `file` (or `$MITOSSH_BECOME_PASSWORD_FILE`), else typed on
/// the terminal; `None` when neither is available.
pub fn answer(prompt: &str, file: Option<&Path>) -> Option<Secret> {
    let named = file.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(PASSWORD_FILE_ENV)
            .filter(|v| !v.is_empty())
            .map(Into::into)
    });
    match named {
        Some(path) => from_file(&path),
        None => from_terminal(prompt),
    }
}

fn from_file(path: &Path) -> Option<Secret> {
    match std::fs::read(path) {
        Ok(mut bytes) => {
            let end = bytes
                .iter()
                .position(|b| *b == b'\n')
                .unwrap_or(bytes.len());
            let mut line = bytes[..end].to_vec();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            bytes.iter_mut().for_each(|b| *b = 0);
            Some(Secret::new(line))
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

fn from_terminal(prompt: &str) -> Option<Secret> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let saved = termios::tcgetattr(tty.as_fd()).ok()?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
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
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Some(Secret::new(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_s_first_line_is_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, b"s3cret\r\nignored\n").unwrap();
        assert_eq!(answer("x", Some(&p)).unwrap().expose(), b"s3cret");
        std::fs::write(&p, b"no-newline").unwrap();
        assert_eq!(answer("x", Some(&p)).unwrap().expose(), b"no-newline");
    }
}
