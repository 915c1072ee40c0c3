//! `mitossh`: the master, the agent, and commands to inspect or stop a master.

#![deny(unsafe_code)]

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::StyledStr;
use clap::{Parser, Subcommand};
use mitossh::proto::{Reply, Request, StatusReport};
use mitossh::{control, master, paths};

#[derive(Parser)]
#[command(
    name = "mitossh",
    version,
    about = "Tunnel every `ssh host command` through one connection per host.",
    long_about = "Tunnel every `ssh host command` through one connection per host.\n\n\
        A master keeps one agent per host, started over your own ssh client; the `ssh`, `scp` \
        and `sftp` shims (first on PATH under `mitossh-env`) run their sessions through it.\n\n\
        Most people only need `mitossh-env CMD...`, which starts a master, runs CMD with the \
        shims and stops the master afterwards.",
    after_help = "Environment:\n  MITOSSH_SOCKET   the master's socket (set by mitossh-env)\n  \
        MITOSSH_LOG      log filter for the master, e.g. debug\n  \
        MITOSSH_STRICT   1: shims fail instead of running the real ssh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a master in the foreground until stopped.
    Master {
        /// Listen here [default: $MITOSSH_SOCKET, else $XDG_RUNTIME_DIR/mitossh/master.sock
        /// or /tmp/mitossh-UID/master.sock].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Close a context after this long without streams (e.g. 300, 5m, 1h).
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        idle_timeout: Duration,
        /// Give up starting an agent after this long (authentication included).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        connect_timeout: Duration,
        /// Write "ready" to this descriptor once listening (for supervisors).
        #[arg(long, hide = true)]
        ready_fd: Option<i32>,
        /// Shut down when this descriptor reaches end of file.
        #[arg(long, hide = true)]
        lifeline_fd: Option<i32>,
    },
    /// Show the master's contexts and their streams, one per line.
    Status {
        /// The master's socket [default: $MITOSSH_SOCKET, else the default of `master`].
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Show the master's contexts as a tree: method, user, host, pid, age, streams, bytes.
    Tree {
        /// The master's socket [default: $MITOSSH_SOCKET, else the default of `master`].
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Connect stdin and stdout to HOST:PORT through context ID's agent (like `ssh -W`);
    /// the master uses it as the ProxyCommand of hosts reached through another.
    Proxy {
        /// The master's socket [default: $MITOSSH_SOCKET, else the default of `master`].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// The context whose host makes the connection (see `mitossh tree`).
        #[arg(long, value_name = "ID")]
        context: u32,
        /// The host to connect to, as seen from the context's host.
        host: String,
        /// The TCP port to connect to.
        port: u16,
    },
    /// Stop the master: its agents stop their processes and exit.
    Stop {
        /// The master's socket [default: $MITOSSH_SOCKET, else the default of `master`].
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Start many processes on many hosts together, interleave their output, stop them
    /// together, fetch their files, and summarise.
    #[command(after_help = verbatim("Examples:\n  mitossh run plan.toml\n  \
            mitossh run -H node1,node2 -n 4 -d 30s -- 'worker --id {i} --on {host}'\n\n\
            In commands, {i} is a unique index per process name, {n} the index on its host,\n\
            {host} the host, {name} the process name, and plan variables by name.\n\
            Exit status: 0 when every process did its job, 1 when one failed, 130 on ^C."))]
    Run {
        /// A TOML plan: hosts, processes per host, duration, files to fetch.
        #[arg(required_unless_present = "hosts", conflicts_with = "hosts")]
        plan: Option<PathBuf>,
        /// Short form: these hosts (comma separated) …
        #[arg(short = 'H', long, value_delimiter = ',', requires = "command")]
        hosts: Vec<String>,
        /// … each running this many copies of COMMAND.
        #[arg(short = 'n', long, default_value_t = 1)]
        count: u32,
        /// Stop everything after this long (e.g. 30s, 5m); overrides the plan.
        #[arg(short = 'd', long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Between SIGTERM and SIGKILL when stopping; overrides the plan.
        #[arg(long, value_parser = parse_duration)]
        grace: Option<Duration>,
        /// Keep going when a process fails (default: stop everything).
        #[arg(long)]
        continue_on_failure: bool,
        /// Short form: an ssh config file for every host.
        #[arg(short = 'F', long = "ssh-config", value_name = "FILE")]
        ssh_config: Option<PathBuf>,
        /// Also write each process's stdout and stderr to DIR/<host>/<name>-<i>.out|.err.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
        /// Where fetched files go (DIR/<host>/<name>-<i>/).
        #[arg(long, value_name = "DIR")]
        fetch_dir: Option<PathBuf>,
        /// Print the summary as JSON on stdout (output lines go to stderr).
        #[arg(long)]
        json: bool,
        /// Use (or start) the master at this socket [default: $MITOSSH_SOCKET, else a
        /// master of its own for the run].
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Short form: the command template.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Run as an agent on the far side of a pipe (started by a master, not by hand).
    #[command(hide = true)]
    Agent {
        #[arg(long)]
        nonce: String,
        /// Started by another agent through sudo/su/doas: the link is the socket on stdout.
        #[arg(long)]
        hop: bool,
        /// Remove this variable from the environment (set by the starter for itself).
        #[arg(long)]
        drop_env: Vec<String>,
        /// Run commands with this shell rather than the account's login shell (started by
        /// sudo or doas, which run commands themselves).
        #[arg(long, value_name = "PATH")]
        command_shell: Option<PathBuf>,
    },
}

/// Help text shown as written. clap turns `{n}` into a line break wherever it appears (a
/// clap 2 leftover), and `mitossh run` has a `{n}` placeholder: an empty style between
/// `{` and `n}` keeps it (escapes are dropped when help does not go to a terminal).
fn verbatim(text: &str) -> StyledStr {
    let reset = clap::builder::styling::Reset.render().to_string();
    StyledStr::from(text.replace("{n}", &format!("{{{reset}n}}")))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    mitossh::config::parse_duration(s)
}

/// `mitossh status` and `mitossh tree`: the master's report, printed by `format`.
fn show_status(socket: Option<PathBuf>, format: fn(&StatusReport) -> String) -> i32 {
    match socket_or_default(socket).and_then(|s| control::ask(&s, Request::Status)) {
        Ok(Reply::Status(report)) => {
            print!("{}", format(&report));
            0
        }
        Ok(other) => {
            eprintln!("mitossh: unexpected answer: {other:?}");
            1
        }
        Err(e) => {
            eprintln!("mitossh: {e}");
            1
        }
    }
}

fn socket_or_default(socket: Option<PathBuf>) -> std::io::Result<PathBuf> {
    match socket.or_else(paths::socket_from_env) {
        Some(s) => Ok(s),
        None => paths::default_socket(),
    }
}

fn main() -> ExitCode {
    // Run by a master's ssh as its SSH_ASKPASS: one argument, the prompt.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(prompt) = mitossh::askpass::invoked(&argv) {
        return ExitCode::from(mitossh::askpass::main(&prompt) as u8);
    }
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Agent {
            nonce,
            hop,
            drop_env,
            command_shell,
        } => {
            mitossh::logging::init("warn");
            mitossh::agent::main(mitossh::agent::Options {
                nonce,
                hop,
                drop_env,
                command_shell,
            })
        }
        Command::Run {
            plan,
            hosts,
            count,
            duration,
            grace,
            continue_on_failure,
            ssh_config,
            output_dir,
            fetch_dir,
            json,
            socket,
            command,
        } => {
            let loaded = match plan {
                Some(path) => std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))
                    .and_then(|text| {
                        mitossh::run::plan::parse(&text)
                            .map_err(|e| format!("{}: {e}", path.display()))
                    }),
                None => {
                    let ssh_args: Vec<String> = ssh_config
                        .iter()
                        .flat_map(|f| ["-F".to_string(), f.display().to_string()])
                        .collect();
                    mitossh::run::plan::short(
                        &hosts,
                        count,
                        &command.join(" "),
                        &ssh_args,
                        duration,
                    )
                }
            };
            match loaded {
                Ok(mut plan) => {
                    if duration.is_some() {
                        plan.duration = duration;
                    }
                    if let Some(g) = grace {
                        plan.grace = g;
                    }
                    if continue_on_failure {
                        plan.stop_on_failure = false;
                    }
                    if output_dir.is_some() {
                        plan.output_dir = output_dir;
                    }
                    if let Some(d) = fetch_dir {
                        plan.fetch_dir = d;
                    }
                    mitossh::run::main(mitossh::run::Options {
                        plan,
                        json,
                        master: mitossh::daemon::MasterOptions {
                            socket,
                            ..Default::default()
                        },
                    })
                }
                Err(e) => {
                    eprintln!("mitossh run: {e}");
                    mitossh::run::RUN_FAILED
                }
            }
        }
        Command::Tree { socket } => show_status(socket, control::format_tree),
        Command::Proxy {
            socket,
            context,
            host,
            port,
        } => match socket_or_default(socket) {
            Ok(s) => mitossh::shim::proxy::main(&s, context, host, port),
            Err(e) => {
                eprintln!("mitossh: {e}");
                255
            }
        },
        Command::Master {
            socket,
            idle_timeout,
            connect_timeout,
            ready_fd,
            lifeline_fd,
        } => run_master(socket, idle_timeout, connect_timeout, ready_fd, lifeline_fd),
        Command::Status { socket } => show_status(socket, control::format_status),
        Command::Stop { socket } => {
            match socket_or_default(socket).and_then(|s| control::ask(&s, Request::Shutdown)) {
                Ok(_) => 0,
                Err(e) => {
                    eprintln!("mitossh: {e}");
                    1
                }
            }
        }
    };
    ExitCode::from(code as u8)
}

fn run_master(
    socket: Option<PathBuf>,
    idle_timeout: Duration,
    connect_timeout: Duration,
    ready_fd: Option<i32>,
    lifeline_fd: Option<i32>,
) -> i32 {
    mitossh::logging::init("info");
    let socket = match socket_or_default(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mitossh: {e}");
            return 1;
        }
    };
    let Some(ssh) = paths::find_real("ssh") else {
        eprintln!(
            "mitossh: ssh was not found on PATH; install openssh-client or set MITOSSH_REAL_SSH"
        );
        return 1;
    };
    let take = |fd: Option<i32>| fd.map(mitossh::sys::stdio::inherited).transpose();
    let (ready, lifeline) = match (take(ready_fd), take(lifeline_fd)) {
        (Ok(ready), Ok(lifeline)) => (ready, lifeline),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("mitossh: {e}");
            return 1;
        }
    };
    let config = master::Config {
        socket,
        idle_timeout,
        connect_timeout,
        ssh,
        ready,
        lifeline,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mitossh: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(master::run(config));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mitossh: {e}");
            1
        }
    }
}
