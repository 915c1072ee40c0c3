//! The `scp` and `sftp` shims. Both programs run `/usr/bin/ssh` by absolute path, so a
//! PATH entry alone would never reach our `ssh`; instead these run the real programs with
//! `-S <our ssh>` in front of the user's arguments.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use super::ssh::exec;
use crate::paths;
use crate::proto::SSH_ERROR;

/// getopt strings of OpenSSH 9's scp and sftp: which letters take an argument.
const SCP_OPTS: &str = "12346ABCTdfOpqRrstvD:F:J:M:P:S:c:i:l:o:X:";
const SFTP_OPTS: &str = "1246AafhNpqrvCc:D:i:l:o:s:S:b:B:F:J:P:R:X:";

/// Runs the real `program` ("scp" or "sftp") through the ssh shim.
pub fn main(program: &str, argv: Vec<OsString>) -> i32 {
    let Some(real) = paths::find_real(program) else {
        eprintln!(
            "mitossh: the real {program} was not found on PATH (set {})",
            paths::real_env(program)
        );
        return SSH_ERROR;
    };
    let optstring = if program == "scp" {
        SCP_OPTS
    } else {
        SFTP_OPTS
    };
    // Without a master, or when the user chose their own transport, stay out of the way.
    if paths::socket_from_env().is_none() || gives_option(&argv, optstring, b'S') {
        return exec(real, program, &argv);
    }
    let ssh = match paths::sibling("ssh") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mitossh: {e}");
            return SSH_ERROR;
        }
    };
    let mut args = vec![OsString::from("-S"), ssh.into_os_string()];
    args.extend(argv);
    exec(real, program, &args)
}

/// Whether `argv` sets option `letter`, parsing as getopt does with `optstring`.
fn gives_option(argv: &[OsString], optstring: &str, letter: u8) -> bool {
    let takes_arg = |c: u8| {
        optstring
            .as_bytes()
            .windows(2)
            .any(|w| w[0] == c && w[1] == b':')
    };
    let mut words = argv.iter().map(|a| a.as_os_str().as_bytes());
    while let Some(word) = words.next() {
        if word == b"--" || !word.starts_with(b"-") || word == b"-" {
            return false;
        }
        for (i, &c) in word.iter().enumerate().skip(1) {
            if c == letter {
                return true;
            }
            if takes_arg(c) {
                if i + 1 == word.len() {
                    words.next();
                }
                break;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(|w| OsStr::new(w).to_os_string()).collect()
    }

    #[test]
    fn finds_s_only_as_an_option() {
        assert!(gives_option(
            &args(&["-S", "/x/ssh", "a", "h:b"]),
            SCP_OPTS,
            b'S'
        ));
        assert!(gives_option(
            &args(&["-rS/x/ssh", "a", "h:b"]),
            SCP_OPTS,
            b'S'
        ));
        assert!(!gives_option(
            &args(&["-o", "-S", "a", "h:b"]),
            SCP_OPTS,
            b'S'
        ));
        assert!(!gives_option(&args(&["-i-S", "a"]), SCP_OPTS, b'S'));
        assert!(!gives_option(&args(&["--", "-S", "h:b"]), SCP_OPTS, b'S'));
        assert!(!gives_option(&args(&["-b", "-", "host"]), SFTP_OPTS, b'S'));
        assert!(!gives_option(&args(&["file", "-S"]), SCP_OPTS, b'S'));
    }
}
