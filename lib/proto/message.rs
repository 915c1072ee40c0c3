//! The typed messages carried by frames.
//!
//! One enum serves every link; each variant documents which way it travels. A peer that
//! receives a message it has no business receiving treats it as a protocol error for that
//! stream (or, for link-level messages, that link) and says so in its log.
//!
//! Byte strings that come from the operating system (commands, paths, environment) are
//! `Vec<u8>`: they need not be UTF-8.

use serde::{Deserialize, Serialize};

/// Identifies a context (one agent process) in the master's tree. The master is 0; ids
/// are assigned by the master and never reused while it runs.
pub type ContextId = u32;

/// Identifies a stream. Assigned by the master, unique among its open streams.
pub type StreamId = u32;

/// The master's own context id.
pub const MASTER: ContextId = 0;

/// The exit status ssh gives for its own failures (and a shim for the master's): the
/// `exit_code` of most [`Reply::Failed`]s.
pub const SSH_ERROR: i32 = 255;

/// Bumped whenever a message changes shape. Peers with different versions refuse to talk.
pub const PROTOCOL_VERSION: u32 = 3;

/// The three standard descriptors of a remote process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Fd {
    Stdin,
    Stdout,
    Stderr,
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    // ----- link level -----
    /// First message in each direction on every link.
    Hello(Hello),
    /// Orderly end: the receiver stops everything it runs for the sender and exits or
    /// closes the link.
    Shutdown,

    // ----- streams: master → agent -----
    /// Start a process. Answered by `Opened` or `OpenFailed`.
    Open {
        stream: StreamId,
        spec: Box<OpenSpec>,
    },
    /// Deliver a signal (name without `SIG`, as ssh does) to the stream's process.
    Signal {
        stream: StreamId,
        signal: String,
    },
    /// The local terminal changed size.
    Resize {
        stream: StreamId,
        size: WinSize,
    },
    /// The stream's client went away: stop the process (SIGHUP to its process group,
    /// SIGKILL after a grace period) and forget the stream.
    Close {
        stream: StreamId,
    },
    /// Start a process opened with `hold` (the barrier of `mitossh run`). Answered by
    /// `Released`.
    Release {
        stream: StreamId,
    },
    /// Stop the process: SIGTERM to its process group, SIGKILL after `grace_ms`. Its
    /// `Exit` follows as usual.
    Stop {
        stream: StreamId,
        grace_ms: u64,
    },

    // ----- streams: agent → master -----
    /// The process runs. `window` is the initial credit for its stdin.
    Opened {
        stream: StreamId,
        pid: u32,
        window: u32,
    },
    /// The process could not be started; `error` is one line for the user.
    OpenFailed {
        stream: StreamId,
        error: String,
    },
    /// A held process was let go.
    Released {
        stream: StreamId,
    },
    /// The process ended and all of its output has been sent.
    Exit {
        stream: StreamId,
        status: ExitStatus,
    },

    // ----- streams: both ways -----
    /// Bytes for `fd`; the payload follows the header in the frame.
    Data {
        stream: StreamId,
        fd: Fd,
    },
    /// No more bytes will follow for `fd` (half-close).
    Eof {
        stream: StreamId,
        fd: Fd,
    },
    /// The receiver of `fd`'s bytes consumed `bytes` more: the sender may send that much more.
    Credit {
        stream: StreamId,
        fd: Fd,
        bytes: u32,
    },

    // ----- contexts: master → agent -----
    /// Start a child context below the receiver. Answered, up, by `Spawned` or
    /// `SpawnFailed`, perhaps after a `NeedPassword` and its `Password`.
    Spawn {
        child: ContextId,
        method: Box<Method>,
    },
    /// The answer to `NeedPassword`; `None`: there is none to be had, give up.
    Password {
        child: ContextId,
        secret: Option<Secret>,
    },

    // ----- contexts: agent → master -----
    /// Starting `child` met a password prompt, for the password of the account `whose`
    /// (as the tool's prompt names it: sudo's and doas's own user by default, su's target).
    NeedPassword {
        child: ContextId,
        whose: String,
    },
    /// `child` runs. Each agent this passes on its way up learns that `child` lives below
    /// the link it arrived on.
    Spawned {
        child: ContextId,
        hello: Hello,
    },
    /// `child` could not be started; `error` is one line for the user.
    SpawnFailed {
        child: ContextId,
        error: String,
    },
    /// A context below the sender is gone; each agent this passes forgets its route.
    ContextLost {
        ctx: ContextId,
        reason: String,
    },

    // ----- shim ↔ master -----
    /// What a shim (or the `mitossh` command) asks the master. Shim → master, first frame.
    Request(Box<Request>),
    /// The master's answer to a `Request`.
    Reply(Box<Reply>),
    /// Master → shim, while a session request waits: a question for the user (a become
    /// password, or whatever the master's ssh asks while connecting). Answered by
    /// `PromptReply`.
    Prompt {
        text: String,
        kind: PromptKind,
    },
    PromptReply {
        secret: Option<Secret>,
    },
    /// Master → shim, while a session request waits: what the master's ssh wrote on its
    /// stderr while connecting (warnings, banners, `-v` output, errors), for the shim's
    /// stderr. Already bounded and sanitised by the master.
    Diagnostic {
        text: Vec<u8>,
    },
}

/// Who may answer a [`Message::Prompt`], and how it is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromptKind {
    /// A become password (sudo, su, doas): from the password file if one is named, else
    /// typed on the terminal with echo off.
    Become,
    /// The master's ssh asks (a login password, a key's passphrase, a keyboard-interactive
    /// round, a host key to confirm): only a person answers, on the terminal or through the
    /// user's own `SSH_ASKPASS`, never from a file. `echo`: the answer is not secret
    /// (yes/no or a fingerprint).
    Ssh { echo: bool },
}

impl Message {
    /// The variant's name, for log lines and errors that must not quote what a peer sent.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Shutdown => "Shutdown",
            Message::Open { .. } => "Open",
            Message::Signal { .. } => "Signal",
            Message::Resize { .. } => "Resize",
            Message::Close { .. } => "Close",
            Message::Release { .. } => "Release",
            Message::Stop { .. } => "Stop",
            Message::Opened { .. } => "Opened",
            Message::OpenFailed { .. } => "OpenFailed",
            Message::Released { .. } => "Released",
            Message::Exit { .. } => "Exit",
            Message::Data { .. } => "Data",
            Message::Eof { .. } => "Eof",
            Message::Credit { .. } => "Credit",
            Message::Spawn { .. } => "Spawn",
            Message::Password { .. } => "Password",
            Message::NeedPassword { .. } => "NeedPassword",
            Message::Spawned { .. } => "Spawned",
            Message::SpawnFailed { .. } => "SpawnFailed",
            Message::ContextLost { .. } => "ContextLost",
            Message::Request(_) => "Request",
            Message::Reply(_) => "Reply",
            Message::Prompt { .. } => "Prompt",
            Message::PromptReply { .. } => "PromptReply",
            Message::Diagnostic { .. } => "Diagnostic",
        }
    }
}

/// How a child context is started by its parent agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// `sudo -u USER`, `su USER` or `doas -u USER` on the parent's host.
    Become(Become),
    /// The parent's host runs ssh (its own client, configuration and keys) to reach the
    /// child: `args` are everything between `ssh` and the remote command.
    Ssh { args: Vec<Vec<u8>>, label: String },
    /// The parent's host runs `argv` (a command prefix that gives a shell inside something
    /// else: `docker exec -i app`, `chroot /srv/jail`, …) followed by `/bin/sh -c <stage 1>`,
    /// and the image goes over its stdin, as over ssh.
    Exec { argv: Vec<Vec<u8>>, label: String },
}

impl Method {
    /// Whether starting a child this way may ask for a password (`NeedPassword`): only
    /// the become tools do; ssh from a hop runs with `BatchMode`, an exec prefix is
    /// given no terminal.
    pub fn may_ask(&self) -> bool {
        matches!(self, Method::Become(_))
    }
}

/// Becoming another user on the same host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Become {
    pub method: BecomeMethod,
    pub user: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BecomeMethod {
    Sudo,
    Su,
    Doas,
}

impl BecomeMethod {
    pub fn name(self) -> &'static str {
        match self {
            BecomeMethod::Sudo => "sudo",
            BecomeMethod::Su => "su",
            BecomeMethod::Doas => "doas",
        }
    }

    pub fn parse(s: &str) -> Option<BecomeMethod> {
        match s {
            "sudo" => Some(BecomeMethod::Sudo),
            "su" => Some(BecomeMethod::Su),
            "doas" => Some(BecomeMethod::Doas),
            _ => None,
        }
    }
}

/// A password. Its `Debug` says nothing, and its bytes are wiped when it is dropped, so
/// it cannot end up in a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        crate::sys::mem::wipe(&mut self.0);
    }
}

/// Introduces a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// The crate version of the sender, for messages about mismatches.
    pub version: String,
    /// Master → agent: the id the agent now has. Agent → master: echoed back.
    pub ctx: ContextId,
    pub pid: u32,
    /// The user the sender runs as.
    pub user: String,
    pub hostname: String,
}

/// How to start a remote process, mirroring what an ssh session request can ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OpenSpec {
    /// The command line, run by the user's login shell with `-c` as sshd does. `None` starts
    /// the login shell itself.
    pub command: Option<Vec<u8>>,
    /// A subsystem such as `sftp`; takes precedence over `command`.
    pub subsystem: Option<String>,
    /// Extra environment, set as given (`mitossh run`'s per-process `env`).
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// What an ssh call sends (SendEnv/SetEnv): set only as far as the `AcceptEnv` of the
    /// sshd the agent came through allows, when the agent can read it.
    pub ssh_env: Vec<(Vec<u8>, Vec<u8>)>,
    /// Working directory; `None` means the user's home, as sshd does.
    pub cwd: Option<Vec<u8>>,
    /// A pseudo-terminal for the process, as `ssh -t` asks.
    pub pty: Option<PtySpec>,
    /// Initial credit the opener grants for each of stdout and stderr.
    pub window: u32,
    /// Instead of a process: a TCP connection from the agent's host (as `ssh -W`); its
    /// bytes are the stream's stdin and stdout.
    pub connect: Option<Endpoint>,
    /// Start the process but hold it just before it runs the command, until `Release`.
    pub hold: bool,
}

/// A TCP destination, resolved on the agent's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// A pseudo-terminal request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtySpec {
    pub term: String,
    pub size: WinSize,
}

/// A terminal size in characters and pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
    pub xpixel: u16,
    pub ypixel: u16,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Code(i32),
    /// Killed by a signal, named without `SIG` as ssh's exit-signal does.
    Signal {
        signal: String,
        core_dumped: bool,
    },
}

/// Where a session should run, as the shim (or the configuration) describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Target {
    /// ssh hops: the first is reached from the master, the last is the destination.
    pub hops: Vec<SshHop>,
    /// How each hop after the first is reached from the one before.
    pub via: ViaMode,
    /// Then become another user on the destination.
    pub become_as: Option<Become>,
    /// Then run the agent inside something else on that host: this command prefix
    /// (`docker exec -i app`) followed by `/bin/sh -c …`.
    pub exec: Option<Vec<Vec<u8>>>,
    /// Start on the master's own host (an agent it runs as a local child process)
    /// instead of an ssh hop; `hops` is then empty.
    pub local: bool,
}

impl Target {
    /// A plain destination: one hop, no become.
    pub fn ssh(hop: SshHop) -> Target {
        Target {
            hops: vec![hop],
            ..Target::default()
        }
    }
}

/// One ssh destination exactly as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct SshHop {
    /// The ssh options (as argv words, in order) that matter for the connection.
    pub ssh_args: Vec<Vec<u8>>,
    /// The destination host as written (an alias, a name or an address).
    pub host: Vec<u8>,
    pub user: Option<Vec<u8>>,
    pub port: Option<u16>,
    /// What the user's ssh configuration makes of this destination (`ssh -G`), when the
    /// caller resolved it; the master resolves it itself otherwise.
    pub config: Option<HopConfig>,
}

/// A destination as the user's ssh resolves it (`ssh -G`): where the connection goes,
/// which decides what shares a context, and the session settings a call applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct HopConfig {
    pub user: Vec<u8>,
    pub hostname: Vec<u8>,
    pub port: u16,
    /// Settings that change where the connection goes, as (keyword, value) in a fixed
    /// order: proxyjump, proxycommand, bindaddress, bindinterface, addressfamily,
    /// hostkeyalias. Absent or default ones are left out.
    pub routing: Vec<(String, Vec<u8>)>,
    /// `BatchMode yes`: ssh asks nothing.
    pub batch_mode: bool,
    /// `SendEnv` patterns, in order.
    pub send_env: Vec<Vec<u8>>,
    /// `SetEnv` assignments.
    pub set_env: Vec<(Vec<u8>, Vec<u8>)>,
    /// `RequestTTY`: auto, no, yes or force.
    pub request_tty: String,
    /// `RemoteCommand`, unless none.
    pub remote_command: Option<Vec<u8>>,
    /// `SessionType`: default, none or subsystem.
    pub session_type: String,
    /// `LogLevel`, upper case (QUIET, INFO, DEBUG1, …).
    pub log_level: String,
    /// `EscapeChar`: `None` for none.
    pub escape_char: Option<u8>,
}

/// How a hop behind another is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ViaMode {
    /// The master's own ssh, through a TCP connection the previous hop's agent opens (as
    /// `ssh -W` does): keys and agent stay on the master.
    #[default]
    Tcp,
    /// ssh runs on the previous hop, with that host's configuration and keys: for names
    /// only the hop can resolve or reach.
    Ssh,
}

/// What the master is asked to do. (Made once per connection: boxing the large
/// `Session` would buy nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Run a process in the context for `target`; the stream frames that follow use stream 0.
    Session {
        target: Target,
        spec: OpenSpec,
        caller: Caller,
    },
    /// `ssh -O check`: is a master serving this target?
    Check { target: Target },
    /// `ssh -O exit`: close the context for this target now.
    ExitContext { target: Target },
    /// `ssh -O stop`: close the context once its streams are done.
    StopContext { target: Target },
    /// A TCP stream from context `ctx`'s host to `host:port`, on the descriptors sent
    /// along (`mitossh proxy`, the ProxyCommand of hops reached through another).
    Proxy { ctx: ContextId, endpoint: Endpoint },
    /// `mitossh status`.
    Status,
    /// `mitossh stop`: shut the master down.
    Shutdown,
    /// The resolutions the master has cached for these destinations (answered by
    /// `Reply::Lookup`, one entry per hop, `None` where the caller must run `ssh -G`). May be
    /// followed by another request on the same connection.
    Lookup { hops: Vec<SshHop> },
    /// From mitossh's askpass helper, run by a master's ssh: ask `prompt` of whoever waits
    /// for the connection attempt `token` names. Answered by `Reply::Askpass`.
    Askpass { token: String, prompt: String },
}

/// What the master should know of the process behind a session request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Caller {
    /// A person can answer questions there (a terminal, or the user's own askpass). When
    /// the call that starts a connection cannot, its ssh runs with `BatchMode=yes`: ssh's
    /// own failure instead of a guessed (empty) password.
    pub can_prompt: bool,
    /// What ssh would print before connecting at this call's `-v` level (its configuration
    /// lines): shown when the session reuses a context, as a ControlMaster client shows it.
    pub preamble: Vec<u8>,
    /// The escape character of a session with a pty (`EscapeChar`, `-e`), if any: the
    /// master interprets ssh's escape sequences on its input.
    pub escape: Option<u8>,
    /// ssh's log level there is below INFO (`-q`, `LogLevel ERROR`…): messages ssh prints
    /// at INFO (such as "Connection to host closed.") are not shown.
    pub quiet: bool,
}

/// The master's answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The session runs; `window` is the initial credit for stdin.
    Opened {
        window: u32,
    },
    /// The request failed: a one-line message and the exit status ssh would give.
    /// `fallback`: mitossh cannot serve this host (though ssh can reach it), so a shim may
    /// hand the invocation to the real ssh instead.
    Failed {
        message: String,
        exit_code: i32,
        fallback: bool,
        /// The message is ssh's own and was already sent as a `Diagnostic`.
        shown: bool,
        /// The context could not be made (the host not connected), and why; `None`: the
        /// request failed otherwise (the process could not start, say).
        connect: Option<ConnectFailure>,
    },
    /// A request that needs no data succeeded; `master_pid` for `-O check`.
    Done {
        master_pid: u32,
        message: String,
    },
    Status(StatusReport),
    /// The answer to `Request::Lookup`.
    Lookup(Vec<Option<HopConfig>>),
    /// The answer to `Request::Askpass`: `None` when nobody could answer.
    Askpass(Option<Secret>),
}

/// Why a host could not be connected, as people group such failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnectFailure {
    /// No ssh connection: refused, no route, unknown name, closed before logging in.
    Unreachable,
    /// The connection was made but logging in failed (or the host key was not trusted,
    /// or a question nobody could answer).
    Auth,
    /// ssh's own connect timeout, or the agent not running within the master's.
    Timeout,
    /// Logged in, but no agent runs there (architecture, no writable directory, a
    /// restricted shell, a broken handshake).
    NoAgent,
    /// The master has no file descriptors left for it.
    Descriptors,
    Other,
}

impl ConnectFailure {
    /// How summaries name it.
    pub fn name(self) -> &'static str {
        match self {
            ConnectFailure::Unreachable => "unreachable",
            ConnectFailure::Auth => "auth",
            ConnectFailure::Timeout => "timeout",
            ConnectFailure::NoAgent => "no agent",
            ConnectFailure::Descriptors => "descriptors",
            ConnectFailure::Other => "other",
        }
    }
}

/// What `mitossh status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatusReport {
    pub master_pid: u32,
    pub socket: String,
    pub uptime_secs: u64,
    pub contexts: Vec<ContextStatus>,
    pub connects: ConnectStatus,
    /// Descriptors open in the master, and its (soft) limit.
    pub descriptors: (u64, u64),
}

/// How connecting goes: the window, what waits and what is under way, what failed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConnectStatus {
    /// At most this many ssh handshakes at once (the master's own; the same again for each
    /// gateway that runs ssh for the master).
    pub window: u32,
    /// Connections waiting for a place in a window.
    pub queued: u32,
    /// Handshakes under way.
    pub handshaking: u32,
    /// Since the master started.
    pub connected: u64,
    pub failed: u64,
    /// The latest failures, newest last.
    pub recent_failures: Vec<FailedConnect>,
}

/// One host that could not be connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedConnect {
    /// The path as people write it: `gw => web1`.
    pub name: String,
    pub kind: ConnectFailure,
    pub message: String,
    pub ago_secs: u64,
}

/// One context in a [`StatusReport`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContextStatus {
    pub id: ContextId,
    pub parent: ContextId,
    /// `ssh`, `sudo`, …
    pub method: String,
    /// `user@host:port` as the user addressed it.
    pub name: String,
    pub user: String,
    pub hostname: String,
    pub agent_pid: u32,
    pub age_secs: u64,
    pub idle_secs: u64,
    pub open_streams: u32,
    pub total_streams: u64,
    /// Payload bytes sent to the context and received from it.
    pub bytes_down: u64,
    pub bytes_up: u64,
}
