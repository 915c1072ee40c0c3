//! What the `ssh` shim does with an invocation, decided in one pure function.
//!
//! [`decide`] maps the parsed command line and what this process knows ([`Environment`])
//! to an [`Action`]; [`super::ssh`] reads the environment and carries the action out.
//! Nothing here does I/O, so every branch (the hand-overs to the real ssh and their
//! reasons, `-O`, forwards, sessions) has a unit test below.
//!
//! The decision needs the master once: what the user's configuration makes of the
//! destination (`ssh -G`, cached by the master) can turn a call into one with no session
//! (`SessionType none`), a pty request or a remote command. Until the environment has
//! that [`Destination`], the answer is [`Action::AskMaster`]; the shim asks and decides
//! again.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::forward::{self, LocalForward};
use super::signals::Ending;
use crate::proto::{Endpoint, HopConfig};
use crate::sshargs::glob;
use crate::sshargs::{Invocation, Opt, SessionType, TtyRequest};
use crate::sshconfig::escape_char;

/// What the decision depends on besides the command line.
#[derive(Debug, Clone, Default)]
pub(crate) struct Environment {
    /// The master's socket (`MITOSSH_SOCKET`).
    pub socket: Option<PathBuf>,
    /// What the master and the configuration made of the destination; `None` until asked.
    pub destination: Option<Destination>,
    pub stdin_is_terminal: bool,
    /// Stdin is a terminal whose foreground is another process group.
    pub in_background: bool,
    /// `TERM`, if set (and UTF-8).
    pub term: Option<String>,
    /// This process's environment, for `SendEnv`.
    pub vars: Vec<(OsString, OsString)>,
}

/// The destination as the shim resolved it with the master's help.
#[derive(Debug, Clone, Default)]
pub(crate) struct Destination {
    /// The last hop's configuration (`ssh -G`), when known.
    pub config: Option<HopConfig>,
    /// The remote command, with a recognised leading `sudo …` removed.
    pub command: Option<Vec<u8>>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Hand the invocation to the real ssh: `why` says why it is a fallback (`None`: a
    /// question about ssh itself, `-V`, `-G`, `-Q`, which ssh answers best).
    RealSsh { why: Option<String> },
    /// No destination: ssh's usage, status 255.
    Usage,
    /// Connect to the master and resolve the destination, then decide again.
    AskMaster { socket: PathBuf },
    /// `ssh -O …`.
    Control(Control),
    /// No session (`-N`, `SessionType none`): the forwards serve until a signal.
    Forwards(Forwards),
    /// A command, a shell, a subsystem or `-W`, after starting the forwards.
    Session(Session),
}

/// An `-O` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    Check,
    Exit,
    Stop,
    /// One ssh has that the master does not (`forward`, `cancel`, `proxy`).
    Unsupported(String),
    /// One ssh does not know either.
    Invalid,
}

/// The local forwards (`-L`, `LocalForward`) and how a signal ends the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Forwards {
    pub local: Vec<LocalForward>,
    /// `ExitOnForwardFailure`: a forward that cannot listen fails the call.
    pub exit_on_failure: bool,
    pub ending: Ending,
}

/// A session as the master is to open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    pub forwards: Forwards,
    /// `-n`, `StdinNull`, or a background job: stdin is /dev/null.
    pub stdin_null: bool,
    /// `-W host:port`.
    pub connect: Option<Endpoint>,
    pub subsystem: Option<String>,
    pub command: Option<Vec<u8>>,
    /// `SendEnv` and `SetEnv`.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// A remote pty, for this `TERM` (the window size is read when the session starts).
    pub pty: Option<String>,
    /// `-t` without a local terminal: say that no pty will be allocated.
    pub warn_no_pty: bool,
    /// The escape character, only with a pty.
    pub escape: Option<u8>,
    /// `-q`, or a `LogLevel` below INFO.
    pub quiet: bool,
}

/// The one decision: fallback, usage, control command, forwards or session.
pub(crate) fn decide(inv: &Invocation, env: &Environment) -> Action {
    if inv.count('V') > 0 || inv.count('G') > 0 || inv.arg('Q').is_some() {
        return Action::RealSsh { why: None };
    }
    let Some(socket) = &env.socket else {
        return fallback("no mitossh master (MITOSSH_SOCKET is not set)".into());
    };
    if let Some(why) = unsupported(inv) {
        return fallback(why);
    }
    if inv.host().is_none() {
        return Action::Usage;
    }
    let Some(destination) = &env.destination else {
        return Action::AskMaster {
            socket: socket.clone(),
        };
    };
    if let Some(ctl) = inv.arg('O') {
        return Action::Control(control(ctl));
    }
    let settings = Settings::of(inv, destination.config.as_ref(), env);
    let forwards = Forwards {
        local: local_forwards(inv),
        exit_on_failure: inv.config("exitonforwardfailure").is_some_and(is_yes),
        ending: ending(inv),
    };
    if settings.session_type == SessionType::None && inv.arg('W').is_none() {
        return Action::Forwards(forwards);
    }
    Action::Session(session(inv, env, destination, settings, forwards))
}

fn fallback(why: String) -> Action {
    Action::RealSsh { why: Some(why) }
}

fn control(ctl: &OsStr) -> Control {
    match ctl.as_bytes() {
        b"check" => Control::Check,
        b"exit" => Control::Exit,
        b"stop" => Control::Stop,
        b"forward" | b"cancel" | b"proxy" => Control::Unsupported(ctl.to_string_lossy().into()),
        _ => Control::Invalid,
    }
}

fn session(
    inv: &Invocation,
    env: &Environment,
    destination: &Destination,
    settings: Settings,
    forwards: Forwards,
) -> Session {
    let subsystem = settings.session_type == SessionType::Subsystem;
    let command = destination
        .command
        .clone()
        .or(settings.remote_command.clone());
    // A background job must not take input from the terminal: ssh would be stopped by
    // SIGTTIN there; the master would silently steal the foreground's keystrokes.
    let stdin_null =
        inv.count('n') > 0 || inv.config("stdinnull").is_some_and(is_yes) || env.in_background;
    let connect = inv
        .arg('W')
        .and_then(|w| forward::parse_endpoint(&w.to_string_lossy()));
    let (pty, warn_no_pty) = if connect.is_some() {
        (false, false)
    } else {
        pty_request(&settings, env, command.is_none() && !subsystem)
    };
    let (subsystem, command) = if subsystem {
        (
            command.map(|c| String::from_utf8_lossy(&c).into_owned()),
            None,
        )
    } else {
        (None, command)
    };
    Session {
        forwards,
        stdin_null,
        connect,
        subsystem,
        command,
        env: settings.env,
        pty: pty.then(|| env.term.clone().unwrap_or_else(|| "dumb".into())),
        warn_no_pty,
        // As in ssh, escape sequences only on a session with a pty.
        escape: settings.escape.filter(|_| pty),
        quiet: settings.quiet,
    }
}

/// Whether to ask for a remote pty, as ssh decides: `-t` when stdin is a terminal, `-tt`
/// always, `-T` never, and by default only for an interactive login (no command). The
/// second answer: whether to say that `-t` gets none.
fn pty_request(settings: &Settings, env: &Environment, interactive: bool) -> (bool, bool) {
    let local_tty = env.stdin_is_terminal;
    match settings.tty {
        TtyRequest::No => (false, false),
        TtyRequest::Force => (true, false),
        TtyRequest::Yes => (local_tty, !local_tty && !settings.quiet),
        TtyRequest::Auto => (interactive && local_tty, false),
    }
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
    fn of(inv: &Invocation, config: Option<&HopConfig>, env: &Environment) -> Settings {
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
            env: session_env(inv, config, &env.vars),
        }
    }
}

/// Environment to send, as ssh sends it: the variables matching the SendEnv patterns,
/// then the SetEnv assignments. The command line's SendEnv/SetEnv are session options, not
/// part of the connection the configuration was resolved for: ssh reads them first.
fn session_env(
    inv: &Invocation,
    config: Option<&HopConfig>,
    vars: &[(OsString, OsString)],
) -> Vec<(Vec<u8>, Vec<u8>)> {
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
    let mut env: Vec<(Vec<u8>, Vec<u8>)> = vars
        .iter()
        .filter(|(k, _)| send_env.iter().any(|p| glob(p, k.as_bytes())))
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    env.extend(set_env);
    env
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
fn local_forwards(inv: &Invocation) -> Vec<LocalForward> {
    inv.args('L')
        .into_iter()
        .chain(inv.configs("localforward"))
        .filter_map(|s| forward::parse_local(&s.to_string_lossy()))
        .collect()
}

fn is_yes(value: &OsStr) -> bool {
    !matches!(value.as_bytes(), b"no" | b"false" | b"none")
}

/// How a signal ends this invocation (see [`super::signals`]).
fn ending(inv: &Invocation) -> Ending {
    let level = inv
        .config("loglevel")
        .map(|l| l.to_string_lossy().to_ascii_lowercase());
    let verbose_level = level.is_some_and(|l| l == "verbose" || l.starts_with("debug"));
    Ending {
        verbose: (inv.count('v') > 0 || verbose_level) && inv.count('q') == 0,
        no_shell: inv.count('N') > 0
            || inv.arg('W').is_some()
            || inv.session_type() == SessionType::None,
    }
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

#[cfg(test)]
mod tests;
