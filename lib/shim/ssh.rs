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

use super::forward;
use super::signals;
use crate::client::askpass;
use crate::client::target::{self, Resolved};
use crate::client::tty;
use crate::client::{self, MasterConn};
use crate::config;
use crate::paths;
use crate::proto::flow::DEFAULT_WINDOW;
use crate::proto::{
    Caller, HopConfig, Message, OpenSpec, PtySpec, Reply, Request, SSH_ERROR, Target, ViaMode,
};
use crate::sshargs::glob;
use crate::sshargs::{self as args, Invocation, Opt, SessionType, TtyRequest};
use crate::sshconfig;

/// Runs the shim; returns the exit status (or does not return, having exec'd ssh).
pub fn main(argv: Vec<OsString>) -> i32 {
    let inv = match args::parse(&argv) {
        Ok(inv) => inv,
        Err(e) => {
            e.report();
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
    let mut resolved = match target::resolve(&inv, inv.remote_command(), &config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mitossh: {e}");
            return SSH_ERROR;
        }
    };
    let mut conn = match MasterConn::connect(&socket) {
        Ok(c) => c,
        Err(e) => {
            let why = format!(
                "cannot reach the mitossh master at {}: {e}",
                socket.display()
            );
            return exec_real(&argv, Some(&why));
        }
    };
    let preamble = match resolve_hops(&mut conn, &mut resolved.target, inv.count('v') > 0) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Some(ctl) = inv.arg('O') {
        return control(conn, ctl, resolved.target, &argv);
    }
    let settings = Settings::of(
        &inv,
        resolved.target.hops.last().and_then(|h| h.config.as_ref()),
    );
    let forwards_only = settings.session_type == SessionType::None && inv.arg('W').is_none();
    if forwards_only {
        // Like ssh -N: the forwards serve until a signal ends them.
        signals::handle(ending(&inv), None, |_| {});
        signals::session_started();
    }
    if resolved.command.is_none() {
        resolved.command = settings.remote_command.clone();
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
    let caller = Caller {
        can_prompt: askpass::can_prompt(),
        preamble,
        escape: None,
        quiet: settings.quiet,
    };
    session(conn, &inv, &settings, resolved, caller, &argv)
}

/// Gives every hop the master's own ssh connects to what the user's configuration makes of
/// it (`ssh -G`, run here, where a `Match exec` must run), unless the master has that
/// answer cached. With `-v`, ssh's own lines about its configuration are returned, for the
/// master to show if it reuses a connection. A configuration ssh rejects fails the call
/// as ssh would: its message, status 255.
fn resolve_hops(conn: &mut MasterConn, target: &mut Target, verbose: bool) -> Result<Vec<u8>, i32> {
    let local: Vec<usize> = (0..target.hops.len())
        .filter(|&i| i == 0 || target.via == ViaMode::Tcp)
        .collect();
    let hops = local.iter().map(|&i| target.hops[i].clone()).collect();
    let cached = conn.lookup(hops).map_err(|e| {
        eprintln!("mitossh: cannot talk to the master: {e}");
        SSH_ERROR
    })?;
    let Some(real) = paths::find_real("ssh") else {
        return Ok(Vec::new());
    };
    let mut preamble = Vec::new();
    let last = target.hops.len() - 1;
    for (&i, cached) in local.iter().zip(cached) {
        let hop = &mut target.hops[i];
        if cached.is_some() && !(verbose && i == last) {
            hop.config = cached;
            continue;
        }
        match sshconfig::resolve_here(&real, hop) {
            Ok(dump) => {
                hop.config = Some(dump.config);
                if verbose && i == last {
                    preamble = without_tty_notice(&dump.stderr);
                }
            }
            Err(message) => {
                eprintln!("{message}");
                return Err(SSH_ERROR);
            }
        }
    }
    Ok(preamble)
}

/// `ssh -G`'s stderr without the pty notice it prints because its stdin is not a terminal.
fn without_tty_notice(stderr: &[u8]) -> Vec<u8> {
    stderr
        .split_inclusive(|b| *b == b'\n')
        .filter(|l| !l.starts_with(b"Pseudo-terminal will not be allocated"))
        .flatten()
        .copied()
        .collect()
}

/// How the session runs: the command line first, then the configuration, as ssh decides.
struct Settings {
    tty: TtyRequest,
    session_type: SessionType,
    remote_command: Option<Vec<u8>>,
    /// `-q`, or a `LogLevel` below INFO.
    quiet: bool,
    /// `-e`, else `EscapeChar`.
    escape: Option<u8>,
    env: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Settings {
    fn of(inv: &Invocation, config: Option<&HopConfig>) -> Settings {
        let tty = match (inv.tty_request(), config) {
            (TtyRequest::Auto, Some(c)) => match c.request_tty.as_str() {
                "no" | "false" => TtyRequest::No,
                "yes" | "true" => TtyRequest::Yes,
                "force" => TtyRequest::Force,
                _ => TtyRequest::Auto,
            },
            (tty, _) => tty,
        };
        let session_type = match (explicit_session_type(inv), config) {
            (Some(t), _) => t,
            (None, Some(c)) => match c.session_type.as_str() {
                "none" => SessionType::None,
                "subsystem" => SessionType::Subsystem,
                _ => SessionType::Default,
            },
            (None, None) => inv.session_type(),
        };
        let remote_command = config.and_then(|c| c.remote_command.clone()).or_else(|| {
            inv.config("remotecommand")
                .filter(|c| *c != "none")
                .map(|c| c.as_bytes().to_vec())
        });
        let quiet = inv.count('q') > 0
            || config.is_some_and(|c| matches!(c.log_level.as_str(), "QUIET" | "FATAL" | "ERROR"));
        // The command line's SendEnv/SetEnv are session options, not part of the
        // connection the configuration was resolved for: ssh reads them first.
        let mut send_env = argv_send_env(inv);
        let mut set_env = argv_set_env(inv);
        if let Some(c) = config {
            send_env.extend(c.send_env.iter().cloned());
            for (k, v) in &c.set_env {
                if !set_env.iter().any(|(name, _)| name == k) {
                    set_env.push((k.clone(), v.clone()));
                }
            }
        }
        let env = forwarded_env(&send_env, &set_env);
        let escape = match inv.arg('e') {
            Some(e) => escape_char(e.as_bytes()),
            None => config.map_or(Some(b'~'), |c| c.escape_char),
        };
        Settings {
            tty,
            session_type,
            remote_command,
            quiet,
            escape,
            env,
        }
    }
}

/// `-e`'s value as ssh reads it: `none`, `^X` for a control character, or one character.
fn escape_char(value: &[u8]) -> Option<u8> {
    match value {
        b"none" => None,
        [b'^', c] => Some(c & 0x1f),
        [c] => Some(*c),
        _ => Some(b'~'),
    }
}

/// The session type the command line sets (`-N`, `-W`, `-s`, `-o SessionType`), if any.
fn explicit_session_type(inv: &Invocation) -> Option<SessionType> {
    let set = inv.options.iter().any(|o| {
        matches!(o, Opt::Flag('N' | 's') | Opt::Arg('W', _))
            || matches!(o, Opt::Config { key, .. } if key == "sessiontype")
    });
    set.then(|| inv.session_type())
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

fn session(
    mut conn: MasterConn,
    inv: &Invocation,
    settings: &Settings,
    resolved: Resolved,
    mut caller: Caller,
    argv: &[OsString],
) -> i32 {
    let subsystem = settings.session_type == SessionType::Subsystem;
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
        pty_request(settings, command.is_none() && !subsystem)
    };
    // As in ssh, escape sequences only on a session with a pty.
    caller.escape = settings.escape.filter(|_| pty.is_some());
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
        ssh_env: settings.env.clone(),
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
        caller,
    };
    let opened = client::Stdio::ours(stdin_null)
        .map_err(|e| client::NotOpened::local(format!("mitossh: {e}")))
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
        e.report();
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
fn pty_request(settings: &Settings, interactive: bool) -> Option<PtySpec> {
    let local_tty = std::io::stdin().is_terminal();
    let want = match settings.tty {
        TtyRequest::No => false,
        TtyRequest::Force => true,
        TtyRequest::Yes => {
            if !local_tty && !settings.quiet {
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

/// Environment to send, as ssh sends it: this process's variables matching the SendEnv
/// patterns, then the SetEnv assignments.
fn forwarded_env(send_env: &[Vec<u8>], set_env: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut env: Vec<(Vec<u8>, Vec<u8>)> = std::env::vars_os()
        .filter(|(k, _)| send_env.iter().any(|p| glob(p, k.as_bytes())))
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    env.extend(set_env.iter().cloned());
    env
}

/// SendEnv patterns from the command line alone (`-o SendEnv`, `-pattern` removing).
fn argv_send_env(inv: &Invocation) -> Vec<Vec<u8>> {
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
    patterns
}

/// SetEnv assignments from the command line alone.
fn argv_set_env(inv: &Invocation) -> Vec<(Vec<u8>, Vec<u8>)> {
    inv.configs("setenv")
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|b| b.is_ascii_whitespace()))
        .filter_map(|word| {
            let eq = word.iter().position(|b| *b == b'=')?;
            Some((word[..eq].to_vec(), word[eq + 1..].to_vec()))
        })
        .collect()
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
pub(crate) fn exec(program: PathBuf, arg0: &str, argv: &[OsString]) -> i32 {
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
