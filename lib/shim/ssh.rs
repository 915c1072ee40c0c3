//! The `ssh` shim: accepts OpenSSH's command line and runs the session through the master.
//!
//! What it cannot do through a master (forwardings, X11, agent forwarding, `-f`, `-M`), and
//! every call when no master is reachable, it hands to the real ssh with the same
//! arguments, so that a shim on PATH never breaks a working setup. `MITOSSH_STRICT=1`
//! turns those hand-overs into errors instead.
//!
//! Parse ([`crate::sshargs`]), decide ([`super::decide`]: pure), act (here): this file
//! reads the process's environment, asks the master, and carries out the decision.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::decide::{Action, Control, Destination, Environment, Forwards, Session, decide};
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
    Caller, Message, OpenSpec, PtySpec, Reply, Request, SSH_ERROR, Target, ViaMode,
};
use crate::sshargs::{self as args, Invocation};
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
    let mut env = environment();
    let socket = match decide(&inv, &env) {
        Action::AskMaster { socket } => socket,
        action => return act_alone(action, &argv),
    };
    let (conn, mut resolved, preamble) = match ask_master(&inv, &socket, &argv) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    env.destination = Some(Destination {
        config: resolved.target.hops.last().and_then(|h| h.config.clone()),
        command: resolved.command.take(),
    });
    match decide(&inv, &env) {
        Action::Control(ctl) => control(conn, ctl, resolved.target, &argv),
        Action::Forwards(forwards) => serve_forwards(conn, &forwards, &socket, &resolved.target),
        Action::Session(session) => {
            if !start_forwards(&session.forwards, &socket, &resolved.target) {
                return SSH_ERROR;
            }
            let caller = Caller {
                can_prompt: askpass::can_prompt(),
                preamble,
                escape: session.escape,
                quiet: session.quiet,
            };
            run_session(conn, session, resolved, caller, &argv)
        }
        action => act_alone(action, &argv),
    }
}

/// What [`decide`] depends on, read from this process.
fn environment() -> Environment {
    Environment {
        socket: paths::socket_from_env(),
        destination: None,
        stdin_is_terminal: std::io::stdin().is_terminal(),
        in_background: tty::in_background(),
        term: std::env::var("TERM").ok(),
        vars: std::env::vars_os().collect(),
    }
}

/// The actions that need no master: the real ssh, or the usage.
fn act_alone(action: Action, argv: &[OsString]) -> i32 {
    match action {
        Action::RealSsh { why } => exec_real(argv, why.as_deref()),
        Action::Usage => {
            eprintln!("{}", args::USAGE);
            SSH_ERROR
        }
        other => {
            eprintln!("mitossh: internal error: {other:?} needs the master");
            SSH_ERROR
        }
    }
}

/// Resolves the destination (mitossh's configuration, then the master and `ssh -G`):
/// the connection, the target and what `-v` shows first. A master that cannot be
/// reached hands the call to the real ssh; other failures are the exit status.
fn ask_master(
    inv: &Invocation,
    socket: &Path,
    argv: &[OsString],
) -> Result<(MasterConn, Resolved, Vec<u8>), i32> {
    let config = config::load().map_err(|e| {
        eprintln!("mitossh: {e}");
        SSH_ERROR
    })?;
    let mut resolved = target::resolve(inv, inv.remote_command(), &config).map_err(|e| {
        eprintln!("mitossh: {e}");
        SSH_ERROR
    })?;
    let mut conn = MasterConn::connect(socket).map_err(|e| {
        let why = format!(
            "cannot reach the mitossh master at {}: {e}",
            socket.display()
        );
        exec_real(argv, Some(&why))
    })?;
    let preamble = resolve_hops(&mut conn, &mut resolved.target, inv.count('v') > 0)?;
    Ok((conn, resolved, preamble))
}

/// Like ssh -N: the forwards serve until a signal ends them.
fn serve_forwards(conn: MasterConn, forwards: &Forwards, socket: &Path, target: &Target) -> i32 {
    signals::handle(forwards.ending, None, |_| {});
    signals::session_started();
    if !start_forwards(forwards, socket, target) {
        return SSH_ERROR;
    }
    drop(conn);
    signals::serve()
}

/// Starts the local forwards; false when one failed and `ExitOnForwardFailure` says
/// that fails the call.
fn start_forwards(forwards: &Forwards, socket: &Path, target: &Target) -> bool {
    forwards.local.is_empty()
        || forward::start(&forwards.local, socket, target)
        || !forwards.exit_on_failure
}

/// Gives every hop the master's own ssh connects to what the user's configuration makes of
/// it (`ssh -G`, run here, where a `Match exec` must run), unless the master has that
/// answer cached. With `-v`, ssh's own lines about its configuration are returned, for the
/// master to show if it reuses a connection. A configuration ssh rejects fails the call
/// as ssh would: its message, status 255.
fn resolve_hops(conn: &mut MasterConn, target: &mut Target, verbose: bool) -> Result<Vec<u8>, i32> {
    if target.hops.is_empty() {
        // The master's own host: no ssh to resolve.
        return Ok(Vec::new());
    }
    let local: Vec<usize> = (0..target.hops.len())
        .filter(|&i| i == 0 || target.via == ViaMode::Tcp)
        .collect();
    let hops = local.iter().map(|&i| target.hops[i].clone()).collect();
    let cached = conn.lookup(hops).map_err(|e| {
        eprintln!("mitossh: cannot talk to the master: {e}");
        SSH_ERROR
    })?;
    let mut preamble = Vec::new();
    let last = target.hops.len() - 1;
    // Looked for only when a hop needs it: finding it costs a walk of PATH.
    let mut real = None;
    for (&i, cached) in local.iter().zip(cached) {
        let hop = &mut target.hops[i];
        if cached.is_some() && !(verbose && i == last) {
            hop.config = cached;
            continue;
        }
        if real.is_none() {
            real = paths::find_real("ssh");
        }
        let Some(real) = &real else {
            return Ok(Vec::new());
        };
        match sshconfig::resolve_here(real, hop) {
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

/// `ssh -O check|exit|stop|…`, for the connection to the destination. When the master has
/// none, the real ssh answers (for a ControlMaster of the user's, or with its own error).
fn control(mut conn: MasterConn, ctl: Control, target: Target, argv: &[OsString]) -> i32 {
    let request = match ctl {
        Control::Check => Request::Check { target },
        Control::Exit => Request::ExitContext { target },
        Control::Stop => Request::StopContext { target },
        Control::Unsupported(name) => {
            eprintln!("mitossh: -O {name} is not supported through a mitossh master");
            return SSH_ERROR;
        }
        Control::Invalid => {
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

/// Opens the session through the master, hands it stdio and waits for its exit status.
fn run_session(
    mut conn: MasterConn,
    session: Session,
    resolved: Resolved,
    caller: Caller,
    argv: &[OsString],
) -> i32 {
    if session.warn_no_pty {
        eprintln!("Pseudo-terminal will not be allocated because stdin is not a terminal.");
    }
    let pty = session.pty.map(|term| PtySpec {
        term,
        size: tty::stdio_window_size().unwrap_or_default(),
    });
    let spec = OpenSpec {
        connect: session.connect,
        subsystem: session.subsystem,
        command: session.command,
        ssh_env: session.env,
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
    signals::handle(session.forwards.ending, terminal.clone(), move |size| {
        if let Some(to) = &resizes {
            let _ = to.send(Message::Resize { stream: 0, size });
        }
    });
    conn.wait_with(&signals::WAITER);
    let request = Request::Session {
        target: resolved.target,
        spec,
        caller,
    };
    let opened = client::Stdio::ours(session.stdin_null)
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
    signals::before_exec();
    let err = std::process::Command::new(&program)
        .arg0(arg0)
        .args(argv)
        .exec();
    eprintln!("mitossh: cannot run {}: {err}", program.display());
    SSH_ERROR
}
