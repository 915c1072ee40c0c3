//! The `ssh` shim: accepts OpenSSH's command line and runs the session through the master.
//!
//! What it cannot do through a master (forwardings, X11, agent forwarding, `-f`, `-M`), and
//! every call when no master is reachable, it hands to the real ssh with the same
//! arguments, so that a shim on PATH never breaks a working setup. `MITOSSH_STRICT=1`
//! turns those hand-overs into errors instead.

use std::ffi::{OsStr, OsString};
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::args::{self, Invocation, Opt, TtyRequest};
use super::client::{self, MasterConn, SSH_ERROR};
use super::forward;
use super::target::{self, Resolved};
use super::{signals, tty};
use crate::config;
use crate::paths;
use crate::proto::flow::DEFAULT_WINDOW;
use crate::proto::{Message, OpenSpec, PtySpec, Reply, Request, Target};

/// Runs the shim; returns the exit status (or does not return, having exec'd ssh).
pub fn main(argv: Vec<OsString>) -> i32 {
    let inv = match args::parse(&argv) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("ssh: {e}");
            eprintln!("{}", args::USAGE);
            return SSH_ERROR;
        }
    };
    // Questions about ssh itself are best answered by ssh (git probes `-G` and `-V`).
    if inv.count('V') > 0 || inv.count('G') > 0 || inv.arg('Q').is_some() {
        return exec_real(&argv, None);
    }
    let Some(socket) = paths::socket_from_env() else {
        return exec_real(&argv, Some("no mitossh master (MITOSSH_SOCKET is not set)"));
    };
    if let Some(why) = unsupported(&inv) {
        return exec_real(&argv, Some(&why));
    }
    if inv.host().is_none() {
        eprintln!("{}", args::USAGE);
        return SSH_ERROR;
    }
    let config = match config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mitossh: {e}");
            return SSH_ERROR;
        }
    };
    let command = inv.remote_command().or_else(|| {
        inv.config("remotecommand")
            .filter(|c| *c != "none")
            .map(|c| c.as_bytes().to_vec())
    });
    let resolved = match target::resolve(&inv, command, &config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mitossh: {e}");
            return SSH_ERROR;
        }
    };
    let conn = match MasterConn::connect(&socket) {
        Ok(c) => c,
        Err(e) => {
            let why = format!(
                "cannot reach the mitossh master at {}: {e}",
                socket.display()
            );
            return exec_real(&argv, Some(&why));
        }
    };
    if let Some(ctl) = inv.arg('O') {
        return control(conn, ctl, resolved.target, &argv);
    }
    let no_command = inv.count('N') > 0 || inv.session_type() == args::SessionType::None;
    let forwards_only = no_command && inv.arg('W').is_none();
    if forwards_only {
        // Like ssh -N: the forwards serve until a signal ends them.
        signals::handle(ending(&inv), None, |_| {});
        signals::session_started();
    }
    let forwards = local_forwards(&inv);
    if !forwards.is_empty()
        && !forward::start(&forwards, &socket, &resolved.target)
        && inv.config("exitonforwardfailure").is_some_and(is_yes)
    {
        return SSH_ERROR;
    }
    if forwards_only {
        drop(conn);
        loop {
            std::thread::park();
        }
    }
    session(conn, &inv, resolved, &argv)
}

/// What the master cannot do for this invocation, if anything.
fn unsupported(inv: &Invocation) -> Option<String> {
    for opt in &inv.options {
        let why = match opt {
            Opt::Flag(c @ ('A' | 'X' | 'Y' | 'M' | 'f')) => format!("-{c}"),
            Opt::Arg(c @ ('R' | 'D' | 'w'), _) => format!("-{c}"),
            Opt::Arg('L', spec) if forward::parse_local(&spec.to_string_lossy()).is_none() => {
                format!("-L {}", spec.to_string_lossy())
            }
            Opt::Arg('W', spec) if forward::parse_endpoint(&spec.to_string_lossy()).is_none() => {
                format!("-W {}", spec.to_string_lossy())
            }
            Opt::Config { key, value, .. } => match key.as_str() {
                "remoteforward" | "dynamicforward" | "tunnel" => key.clone(),
                "localforward" if forward::parse_local(&value.to_string_lossy()).is_none() => {
                    key.clone()
                }
                "forwardagent" | "forwardx11" if is_yes(value) => key.clone(),
                "forkafterauthentication" if is_yes(value) => key.clone(),
                _ => continue,
            },
            _ => continue,
        };
        return Some(format!("{why} is not supported through a mitossh master"));
    }
    None
}

/// The `-L` and `LocalForward` forwards of an invocation (all parse: see `unsupported`).
fn local_forwards(inv: &Invocation) -> Vec<forward::LocalForward> {
    inv.args('L')
        .into_iter()
        .chain(inv.configs("localforward"))
        .filter_map(|s| forward::parse_local(&s.to_string_lossy()))
        .collect()
}

fn is_yes(value: &OsStr) -> bool {
    !matches!(value.as_bytes(), b"no" | b"false" | b"none")
}

/// `ssh -O check|exit|stop|…`, for the connection to the destination. When the master has
/// none, the real ssh answers (for a ControlMaster of the user's, or with its own error).
fn control(mut conn: MasterConn, ctl: &OsStr, target: Target, argv: &[OsString]) -> i32 {
    let request = match ctl.as_bytes() {
        b"check" => Request::Check { target },
        b"exit" => Request::ExitContext { target },
        b"stop" => Request::StopContext { target },
        b"forward" | b"cancel" | b"proxy" => {
            eprintln!(
                "mitossh: -O {} is not supported through a mitossh master",
                ctl.to_string_lossy()
            );
            return SSH_ERROR;
        }
        _ => {
            eprintln!("ssh: Invalid multiplex command.");
            return SSH_ERROR;
        }
    };
    let answer = conn.request(request).and_then(|_| conn.reply());
    match answer {
        Ok(Reply::Done { message, .. }) => {
            // ssh prints these on stderr with a CR, as its mux client does.
            eprint!("{message}\r\n");
            0
        }
        Ok(Reply::Failed {
            message,
            fallback: true,
            ..
        }) => exec_real(argv, Some(&message)),
        Ok(Reply::Failed {
            message, exit_code, ..
        }) => {
            eprintln!("{message}");
            exit_code
        }
        Ok(other) => {
            eprintln!("mitossh: unexpected answer from the master: {other:?}");
            SSH_ERROR
        }
        Err(e) => {
            eprintln!("mitossh: {e}");
            SSH_ERROR
        }
    }
}

fn session(mut conn: MasterConn, inv: &Invocation, resolved: Resolved, argv: &[OsString]) -> i32 {
    let subsystem = inv.subsystem();
    let command = resolved.command;
    // A background job must not take input from the terminal: ssh would be stopped by
    // SIGTTIN there; the master would silently steal the foreground's keystrokes.
    let stdin_null =
        inv.count('n') > 0 || inv.config("stdinnull").is_some_and(is_yes) || tty::in_background();
    let stdio_forward = inv
        .arg('W')
        .and_then(|w| forward::parse_endpoint(&w.to_string_lossy()));
    let pty = if stdio_forward.is_some() {
        None
    } else {
        pty_request(inv, command.is_none() && !subsystem)
    };
    let spec = OpenSpec {
        connect: stdio_forward,
        subsystem: if subsystem {
            command
                .as_ref()
                .map(|c| String::from_utf8_lossy(c).into_owned())
        } else {
            None
        },
        command: if subsystem { None } else { command },
        env: forwarded_env(inv),
        pty: pty.clone(),
        window: DEFAULT_WINDOW,
        ..OpenSpec::default()
    };
    // Keep the terminal at hand (raw mode, window size) before stdin goes to the master.
    let terminal = if pty.is_some() {
        tty::Terminal::stdin().map(Arc::new)
    } else {
        None
    };
    let resizes = conn.sender().ok();
    signals::handle(ending(inv), terminal.clone(), move |size| {
        if let Some(to) = &resizes {
            let _ = to.send(Message::Resize { stream: 0, size });
        }
    });
    let request = Request::Session {
        target: resolved.target,
        spec,
    };
    let opened = client::Stdio::ours(stdin_null)
        .map_err(|e| client::NotOpened {
            message: format!("mitossh: {e}"),
            exit_code: SSH_ERROR,
            fallback: false,
        })
        .and_then(|stdio| {
            client::open(
                &mut conn,
                request,
                &stdio.raw(),
                resolved.password_file.as_deref(),
            )
        });
    if let Err(e) = opened {
        if e.fallback {
            return exec_real(argv, Some(&e.message));
        }
        eprintln!("{}", e.message);
        return e.exit_code;
    }
    client::release_stdin_stdout();
    let _raw = terminal.as_deref().and_then(tty::Terminal::raw_mode);
    signals::session_started();
    client::wait_exit(&mut conn)
}

/// How a signal ends this invocation (see [`signals`]).
fn ending(inv: &Invocation) -> signals::Ending {
    let level = inv
        .config("loglevel")
        .map(|l| l.to_string_lossy().to_ascii_lowercase());
    let verbose_level = level.is_some_and(|l| l == "verbose" || l.starts_with("debug"));
    signals::Ending {
        verbose: (inv.count('v') > 0 || verbose_level) && inv.count('q') == 0,
        no_shell: inv.count('N') > 0
            || inv.arg('W').is_some()
            || inv.session_type() == args::SessionType::None,
    }
}

/// Whether to ask for a remote pty, as ssh decides: `-t` when stdin is a terminal, `-tt`
/// always, `-T` never, and by default only for an interactive login (no command).
fn pty_request(inv: &Invocation, interactive: bool) -> Option<PtySpec> {
    let local_tty = std::io::stdin().is_terminal();
    let want = match inv.tty_request() {
        TtyRequest::No => false,
        TtyRequest::Force => true,
        TtyRequest::Yes => {
            if !local_tty && inv.count('q') == 0 {
                eprintln!("Pseudo-terminal will not be allocated because stdin is not a terminal.");
            }
            local_tty
        }
        TtyRequest::Auto => interactive && local_tty,
    };
    want.then(|| PtySpec {
        term: std::env::var("TERM").unwrap_or_else(|_| "dumb".into()),
        size: tty::stdio_window_size().unwrap_or_default(),
    })
}

/// Environment to send: variables matching SendEnv patterns, then SetEnv assignments.
fn forwarded_env(inv: &Invocation) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut patterns: Vec<Vec<u8>> = Vec::new();
    for value in inv.configs("sendenv") {
        for word in value.as_bytes().split(|b| b.is_ascii_whitespace()) {
            if let Some(removed) = word.strip_prefix(b"-") {
                patterns.retain(|p| !glob(removed, p));
            } else if !word.is_empty() {
                patterns.push(word.to_vec());
            }
        }
    }
    let mut env: Vec<(Vec<u8>, Vec<u8>)> = std::env::vars_os()
        .filter(|(k, _)| patterns.iter().any(|p| glob(p, k.as_bytes())))
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    for value in inv.configs("setenv") {
        for word in value.as_bytes().split(|b| b.is_ascii_whitespace()) {
            if let Some(eq) = word.iter().position(|b| *b == b'=') {
                env.push((word[..eq].to_vec(), word[eq + 1..].to_vec()));
            }
        }
    }
    env
}

/// ssh's pattern matching: `*` and `?` wildcards.
fn glob(pattern: &[u8], s: &[u8]) -> bool {
    match (pattern.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&pattern[1..], s) || (!s.is_empty() && glob(pattern, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &s[1..]),
        (Some(p), Some(c)) if p == c => glob(&pattern[1..], &s[1..]),
        _ => false,
    }
}

/// Runs the real ssh with the same arguments. In strict mode, an error instead.
fn exec_real(argv: &[OsString], why: Option<&str>) -> i32 {
    if let Some(why) = why {
        if std::env::var_os(paths::STRICT_ENV).is_some_and(|v| v == "1") {
            eprintln!("mitossh: {why} (MITOSSH_STRICT=1 forbids running the real ssh)");
            return SSH_ERROR;
        }
        tracing::debug!("running the real ssh: {why}");
    }
    let Some(real) = paths::find_real("ssh") else {
        eprintln!("mitossh: the real ssh was not found on PATH (set MITOSSH_REAL_SSH)");
        return SSH_ERROR;
    };
    exec(real, "ssh", argv)
}

/// Replaces this process with `program`; returns only on failure.
pub fn exec(program: PathBuf, arg0: &str, argv: &[OsString]) -> i32 {
    let err = std::process::Command::new(&program)
        .arg0(arg0)
        .args(argv)
        .exec();
    eprintln!("mitossh: cannot run {}: {err}", program.display());
    SSH_ERROR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_ssh() {
        assert!(glob(b"LC_*", b"LC_ALL"));
        assert!(glob(b"LANG", b"LANG"));
        assert!(!glob(b"LANG", b"LANGUAGE"));
        assert!(glob(b"L?NG", b"LANG"));
        assert!(glob(b"*", b""));
        assert!(!glob(b"A*B", b"AC"));
    }
}
