//! `mitossh`: the master, and commands to inspect or stop a master or to run many
//! processes at once. The agent is `mitossh-agent`, a binary of its own.

#![deny(unsafe_code)]

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::StyledStr;
use clap::{Args, Parser, Subcommand};

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

// Parsed once per process: the size of its largest variant (`run`'s options) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a master in the foreground until stopped.
    Master(MasterArgs),
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
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// A TOML plan: hosts, processes per host, duration, files to fetch.
    #[arg(required_unless_present = "hosts", conflicts_with = "hosts")]
    plan: Option<PathBuf>,
    /// Short form: these hosts (comma separated; `local` is this machine) …
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
    /// Short form: reach every host through HOST first (repeat for more hops).
    #[arg(long, value_name = "HOST", requires = "hosts")]
    via: Vec<String>,
    /// Short form: how to go through --via hosts: tcp (the master's ssh through the
    /// hop) or ssh (the hop's agent runs ssh to each host: a tier; its CPU, its keys).
    #[arg(long, value_name = "MODE", requires = "via")]
    via_mode: Option<String>,
    /// For a master started for the run: at most K ssh handshakes at once, the rest
    /// waiting in order [default: 64].
    #[arg(long, value_name = "K", value_parser = parse_window)]
    connect_window: Option<usize>,
    /// Also write each process's stdout and stderr to DIR/<host>/<name>-<i>.out|.err.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Where fetched files go (DIR/<host>/<name>-<i>/).
    #[arg(long, value_name = "DIR")]
    fetch_dir: Option<PathBuf>,
    /// Print the summary as JSON on stdout (output lines go to stderr).
    #[arg(long)]
    json: bool,
    /// Keep each data point's output, fetched files and summary in DIR/<point>/
    /// (default for a sweep: the plan's `results`, else ./results).
    #[arg(long, value_name = "DIR")]
    results: Option<PathBuf>,
    /// Run only these points: names, numbers from 1, ranges (e.g. 2-4), comma separated.
    #[arg(long, value_name = "LIST")]
    points: Option<String>,
    /// Go on with an earlier sweep in the results directory: skip the points it completed.
    #[arg(long)]
    resume: bool,
    /// No status line on the terminal.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Pass remote output to the terminal as it is, control characters included.
    #[arg(long)]
    raw: bool,
    /// Use (or start) the master at this socket [default: $MITOSSH_SOCKET, else a
    /// master of its own for the run].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Short form: the command template.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

impl From<RunArgs> for mitossh::RunArgs {
    fn from(a: RunArgs) -> Self {
        let plan = match a.plan {
            Some(path) => mitossh::RunPlan::File(path),
            None => mitossh::RunPlan::Short {
                hosts: a.hosts,
                count: a.count,
                command: a.command.join(" "),
                ssh_config: a.ssh_config,
                via: a.via,
                via_mode: a.via_mode,
            },
        };
        let overrides = mitossh::RunOverrides {
            duration: a.duration,
            grace: a.grace,
            continue_on_failure: a.continue_on_failure,
            output_dir: a.output_dir,
            fetch_dir: a.fetch_dir,
            results: a.results,
        };
        let show = mitossh::RunShow {
            json: a.json,
            quiet: a.quiet,
            raw: a.raw,
        };
        mitossh::RunArgs {
            plan,
            overrides,
            show,
            points: a.points,
            resume: a.resume,
            socket: a.socket,
            connect_window: a.connect_window,
        }
    }
}

#[derive(Args)]
struct MasterArgs {
    /// Listen here [default: $MITOSSH_SOCKET, else $XDG_RUNTIME_DIR/mitossh/master.sock
    /// or /tmp/mitossh-UID/master.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Close a context after this long without streams (e.g. 300, 5m, 1h).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Give up starting an agent after this long (authentication included), counted
    /// from when its handshake starts.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// At most this many ssh handshakes at once; more hosts wait their turn, in order
    /// (a gateway that runs ssh for the master gets the same window).
    #[arg(long, value_name = "K", default_value_t = mitossh::DEFAULT_CONNECT_WINDOW,
          value_parser = parse_window)]
    connect_window: usize,
    /// Write "ready" to this descriptor once listening (for supervisors).
    #[arg(long, hide = true)]
    ready_fd: Option<i32>,
    /// Shut down when this descriptor reaches end of file.
    #[arg(long, hide = true)]
    lifeline_fd: Option<i32>,
}

impl From<MasterArgs> for mitossh::ServeOptions {
    fn from(a: MasterArgs) -> Self {
        mitossh::ServeOptions {
            socket: a.socket,
            idle_timeout: a.idle_timeout,
            connect_timeout: a.connect_timeout,
            connect_window: a.connect_window,
            ready_fd: a.ready_fd,
            lifeline_fd: a.lifeline_fd,
        }
    }
}

/// Help text shown as written. clap turns `{n}` into a line break wherever it appears (a
/// clap 2 leftover), and `mitossh run` has a `{n}` placeholder: an empty style between
/// `{` and `n}` keeps it (escapes are dropped when help does not go to a terminal).
fn verbatim(text: &str) -> StyledStr {
    let reset = clap::builder::styling::Reset.render().to_string();
    StyledStr::from(text.replace("{n}", &format!("{{{reset}n}}")))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    mitossh::parse_duration(s)
}

fn main() -> ExitCode {
    // Run by a master's ssh as its SSH_ASKPASS: one argument, the prompt.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(prompt) = mitossh::askpass_prompt(&argv) {
        return ExitCode::from(mitossh::askpass(&prompt) as u8);
    }
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run(args) => mitossh::run(args.into()),
        Command::Tree { socket } => mitossh::tree(socket),
        Command::Proxy {
            socket,
            context,
            host,
            port,
        } => mitossh::proxy(socket, context, host, port),
        Command::Master(args) => {
            mitossh::init_logging("info");
            mitossh::serve(args.into())
        }
        Command::Status { socket } => mitossh::status(socket),
        Command::Stop { socket } => mitossh::stop(socket),
    };
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
