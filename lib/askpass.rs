//! mitossh's own askpass helper, for the ssh clients a master runs.
//!
//! The master's ssh has no terminal. It is started with `SSH_ASKPASS` naming the mitossh
//! executable and `SSH_ASKPASS_REQUIRE=force`, so every question ssh (or an ssh in its
//! ProxyCommand/ProxyJump) would ask on a terminal — a password, a key's passphrase, a
//! keyboard-interactive round, an unknown host key — runs `mitossh "<prompt>"` instead.
//! That process asks the master, which asks a shim waiting for the connection, which asks
//! the person at its terminal (see `master::attempt`). The answer comes back on stdout, as
//! the askpass protocol wants; it is never in argv, the environment or a log.
//!
//! The token in the environment names the connection attempt; it is not a secret (only
//! the user's own processes can reach the master's socket).

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::client::MasterConn;
use crate::proto::{Reply, Request};

/// Names the connection attempt whose ssh runs the helper.
pub(crate) const TOKEN_ENV: &str = "MITOSSH_ASKPASS_TOKEN";
/// The master's socket, for the helper.
pub(crate) const SOCKET_ENV: &str = "MITOSSH_ASKPASS_SOCKET";

/// The environment that makes an ssh ask through `exe` (this program) and the master.
pub(crate) fn environment(exe: &Path, socket: &Path, token: &str) -> Vec<(OsString, OsString)> {
    vec![
        ("SSH_ASKPASS".into(), exe.as_os_str().to_os_string()),
        ("SSH_ASKPASS_REQUIRE".into(), "force".into()),
        (TOKEN_ENV.into(), token.into()),
        (SOCKET_ENV.into(), socket.as_os_str().to_os_string()),
    ]
}

/// The prompt, if this process was started by ssh as the askpass helper: exactly one
/// argument, argv[0] as `SSH_ASKPASS` names it, and a token in the environment.
pub fn invoked(argv: &[OsString]) -> Option<OsString> {
    let [program, prompt] = argv else {
        return None;
    };
    let askpass = std::env::var_os("SSH_ASKPASS")?;
    (std::env::var_os(TOKEN_ENV).is_some() && *program == askpass).then(|| prompt.clone())
}

/// Asks the master and prints the answer. Exit 1 when there is none (ssh then gives up on
/// this question; the master has already stopped it from guessing).
pub fn main(prompt: &OsStr) -> i32 {
    let (Some(token), Some(socket)) = (std::env::var(TOKEN_ENV).ok(), std::env::var_os(SOCKET_ENV))
    else {
        return 1;
    };
    let answer = MasterConn::connect(Path::new(&socket)).and_then(|mut conn| {
        conn.request(Request::Askpass {
            token,
            prompt: String::from_utf8_lossy(prompt.as_bytes()).into_owned(),
        })?;
        conn.reply()
    });
    match answer {
        Ok(Reply::Askpass(Some(secret))) => {
            let mut out = std::io::stdout().lock();
            let written = out
                .write_all(secret.expose())
                .and_then(|_| out.write_all(b"\n"))
                .and_then(|_| out.flush());
            if written.is_ok() { 0 } else { 1 }
        }
        _ => 1,
    }
}

/// Whether ssh's question is a confirmation, whose answer is shown as typed (the host-key
/// question: yes, no or a fingerprint), rather than a secret.
pub(crate) fn is_confirmation(prompt: &str) -> bool {
    prompt.contains("(yes/no")
}
