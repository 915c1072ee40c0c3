//! `mitossh-env`: run a command with the mitossh shims first on PATH and a master at hand.

#![deny(unsafe_code)]

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "mitossh-env",
    version,
    about = "Run CMD with ssh, scp and sftp going through one connection per host.",
    long_about = "Run CMD with ssh, scp and sftp going through one connection per host.\n\n\
        Puts mitossh's ssh, scp and sftp shims first on PATH and makes sure a master is \
        running: the one named by --socket or $MITOSSH_SOCKET if it answers, else a new one \
        that is stopped when CMD exits. Exits with CMD's status.",
    after_help = "Examples:\n  mitossh-env rsync -a src/ host:dst/\n  \
        mitossh-env ansible-playbook site.yml\n  \
        mitossh-env --become root rsync -a etc/ web1:/etc/app/\n  \
        mitossh-env --via bastion ssh db1 uptime\n  \
        mitossh-env --keep bash        # keep the master for later commands"
)]
struct Cli {
    /// Leave the master running after CMD exits (and print its socket).
    #[arg(long)]
    keep: bool,
    /// Use the master at this socket, starting one there if none answers.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// For a started master: close a context after this long without streams.
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// For a started master: give up starting an agent after this long.
    #[arg(long, value_name = "DURATION")]
    connect_timeout: Option<String>,
    /// For a started master: at most K ssh handshakes at once, the rest waiting in order
    /// [default: 64].
    #[arg(long, value_name = "K", value_parser = parse_window)]
    connect_window: Option<usize>,
    /// Enter every host CMD reaches as USER (through sudo unless --become-method says
    /// otherwise), also a named context that names no user (before its container).
    /// The password comes from $MITOSSH_BECOME_PASSWORD_FILE or the terminal.
    #[arg(long = "become", value_name = "USER")]
    become_user: Option<String>,
    /// How to become USER: sudo, su or doas.
    #[arg(long, value_name = "METHOD", requires = "become_user")]
    become_method: Option<String>,
    /// Reach every host through HOST first ([user@]host[:port]); repeat for more hops.
    #[arg(long, value_name = "HOST")]
    via: Vec<String>,
    /// How to go through --via hosts: tcp (the master's ssh through a TCP stream the hop
    /// opens; keys stay here) or ssh (ssh runs on the hop, with its config and keys).
    #[arg(long, value_name = "MODE", requires = "via")]
    via_mode: Option<String>,
    /// The command to run, and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    mitossh::init_logging("warn");
    let code = mitossh::env(mitossh::EnvOptions {
        keep: cli.keep,
        socket: cli.socket,
        idle_timeout: cli.idle_timeout,
        connect_timeout: cli.connect_timeout,
        connect_window: cli.connect_window,
        become_user: cli.become_user,
        become_method: cli.become_method,
        via: cli.via,
        via_mode: cli.via_mode,
        command: cli.command,
    });
    ExitCode::from(code as u8)
}

/// A connect window: a whole number, at least 1.
fn parse_window(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(k) if k >= 1 => Ok(k),
        _ => Err(format!(
            "{s:?}: give the number of handshakes at once, 1 or more"
        )),
    }
}
