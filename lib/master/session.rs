//! One shim invocation: a stream on a context, pumped straight from and to the stdin,
//! stdout and stderr the shim handed over.
//!
//! Like an OpenSSH ControlMaster, the master does the I/O on the client's own descriptors,
//! so the bytes of a transfer cross no extra process. The shim stays connected for
//! control: it forwards signals and window sizes, receives the exit status, and its
//! disconnection (it was killed) stops the remote process.
//!
//! Sending never waits: frames to the agent are queued on its link, bytes for stdout and
//! stderr are queued (by the link's dispatcher) to their writer tasks. What sits in those
//! queues is bounded by the credit each end granted, one window per direction, which is
//! checked as the agent's frames arrive (see [`crate::guard`]).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::net::unix::OwnedReadHalf;
use tokio::task::JoinHandle;

use super::Master;
use super::context::{Context, EarlyOpen, StreamPort};
use super::escape::{Escape, Escapes};
use super::prompt::Prompter;
use super::registry::Found;
use crate::bootstrap::ssh::ConnectError;
use crate::credit::CreditGate;
use crate::link::{LinkReader, LinkSender};
use crate::proto::MAX_DATA;
use crate::proto::flow::DEFAULT_WINDOW;
use crate::proto::{
    Caller, ContextId, ExitStatus, Fd, Frame, MASTER, Message, OpenSpec, Reply, SSH_ERROR,
    StreamId, Target,
};
use crate::pump::{self, Chunk, Dst, Inbox, Sink, Source};
use crate::sys::adopt::{self, Adopted};
use crate::untrusted;

/// Descriptors a session holds in the master: the shim's connection and the stdin,
/// stdout and stderr it handed over.
pub(crate) const DESCRIPTORS_PER_SESSION: usize = 4;
/// How long an agent may take to answer `Open`: it connects a TCP stream within 30 s.
const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) fn reply(to: &LinkSender, mut reply: Reply) {
    // A failure goes to the user's terminal, and its text may quote a remote host (an
    // agent's error, a line the remote shell wrote on ssh's stderr).
    if let Reply::Failed { message, .. } = &mut reply {
        *message = untrusted::clean_lines(message, 8 * untrusted::MAX_TEXT);
    }
    let _ = to.send(Frame::new(MASTER, Message::Reply(Box::new(reply))));
}

pub(crate) fn fail(to: &LinkSender, message: String) {
    reply(
        to,
        Reply::Failed {
            message,
            exit_code: SSH_ERROR,
            fallback: false,
            shown: false,
            connect: None,
        },
    );
}

/// Where a session runs.
#[derive(Debug)]
pub(crate) enum Place {
    /// The context of a target, made if missing.
    Target(Target),
    /// An existing context, by id (`mitossh proxy`).
    Context(ContextId),
}

/// Runs a session until the remote process exits or the shim goes away.
pub(crate) async fn run(
    master: Arc<Master>,
    place: Place,
    mut spec: OpenSpec,
    caller: Caller,
    stdio: [OwnedFd; 3],
    mut from_shim: LinkReader<OwnedReadHalf>,
    to_shim: LinkSender,
) {
    // A few hundred sessions at once (`mitossh run`) give their memory back when over.
    let _busy = crate::sys::memory::Busy::enter();
    let prompter = Prompter::for_shim(to_shim.clone(), caller.can_prompt);
    // However this ends, questions to this shim are not answered any more.
    let _closed = ClosePrompter(prompter.clone());
    let id = master.next_stream_id();
    spec.window = DEFAULT_WINDOW;
    // If this call makes the connection, its stream opens with it.
    let (early_port, mut early_opened) = tokio::sync::oneshot::channel();
    let early = EarlyOpen {
        stream: id,
        spec: spec.clone(),
        port: early_port,
    };
    let Some(found) = connect(&master, place, &prompter, early, &mut from_shim).await else {
        return;
    };
    // The descriptors are dropped unused on failure, so a shim that falls back to the
    // real ssh finds its stdin intact.
    let ctx = match found {
        Ok(found) => announce(&master, &prompter, &caller, found),
        Err(e) => return reply(&to_shim, connect_failed(&e)),
    };
    // A TCP stream (`ssh -W`, a hop's ProxyCommand) has no stderr, as an SSH direct-tcpip
    // channel has none: nothing the agent says reaches the shim's real stderr.
    let tcp = spec.connect.is_some();
    let stdio = match SessionStdio::adopt(stdio, tcp, &ctx) {
        Ok(stdio) => stdio,
        Err(failed) => return reply(&to_shim, *failed),
    };
    let port = match early_opened.try_recv() {
        Ok(port) => Ok(port),
        Err(_) => ctx.open_stream(id, spec),
    };
    let mut port = match port {
        Ok(port) => port,
        Err(_) => return fail(&to_shim, lost(&ctx)),
    };
    let Some(stdin_window) = opened(&ctx, &mut port, &to_shim).await else {
        return;
    };
    reply(
        &to_shim,
        Reply::Opened {
            window: stdin_window,
        },
    );
    let (disconnect_tx, disconnect) = tokio::sync::oneshot::channel();
    let escapes = caller.escape.map(|ch| EscapeInput {
        escapes: Escapes::new(ch),
        to_shim: to_shim.clone(),
        disconnect: Some(disconnect_tx),
    });
    let stdin_credit = port.stdin.clone();
    let pumps = stdio.pump(&ctx, id, &mut port, escapes);
    let live = Live {
        ctx,
        id,
        to_shim,
        pumps,
        stdin_credit,
        quiet: caller.quiet,
    };
    live.serve(from_shim, port, disconnect, caller.escape.is_some())
        .await;
}

/// The context found; a reused one is announced as ssh's `-v` would (the caller's
/// preamble), a new one already said what it did while connecting.
fn announce(master: &Master, prompter: &Prompter, caller: &Caller, found: Found) -> Arc<Context> {
    let Found { ctx, waited } = found;
    if !waited && !caller.preamble.is_empty() {
        reused(
            prompter,
            &caller.preamble,
            &ctx,
            master.config.socket.as_path(),
        );
    }
    ctx
}

/// The shim's answer when no context could be had: fall back to the real ssh when the
/// host cannot run an agent, and say whether ssh already showed its own message.
fn connect_failed(e: &ConnectError) -> Reply {
    Reply::Failed {
        message: e.to_string(),
        exit_code: SSH_ERROR,
        fallback: matches!(e, ConnectError::CannotServe(_)),
        shown: matches!(e, ConnectError::Ssh(_)),
        connect: Some(super::window::classify(e)),
    }
}

/// The shim's descriptors, adopted into the runtime before the process starts: out of
/// descriptors, the call fails saying so rather than run with its output going nowhere.
struct SessionStdio {
    stdin: std::io::Result<Adopted<adopt::Reader>>,
    stdout: std::io::Result<Adopted<adopt::Writer>>,
    /// `None` for a TCP stream.
    stderr: Option<std::io::Result<Adopted<adopt::Writer>>>,
}

impl SessionStdio {
    fn adopt(
        [stdin, stdout, stderr]: [OwnedFd; 3],
        tcp: bool,
        ctx: &Context,
    ) -> Result<Self, Box<Reply>> {
        let stdio = SessionStdio {
            stdin: adopt::reader(stdin),
            stdout: adopt::writer(stdout),
            stderr: (!tcp).then(|| adopt::writer(stderr)),
        };
        let exhausted = [stdio.stdin.as_ref().err(), stdio.stdout.as_ref().err()]
            .into_iter()
            .chain(stdio.stderr.as_ref().map(|e| e.as_ref().err()))
            .flatten()
            .any(crate::sys::limits::is_exhaustion);
        if !exhausted {
            return Ok(stdio);
        }
        let message = format!(
            "mitossh: {}: the master is out of file descriptors (limit {}); raise its \
             limit (ulimit -n, up to ulimit -Hn) or run fewer sessions at once",
            ctx.name,
            crate::sys::limits::descriptor_limit().map_or(0, |l| l.soft)
        );
        Err(Box::new(Reply::Failed {
            message,
            exit_code: SSH_ERROR,
            fallback: false,
            shown: false,
            connect: Some(crate::proto::ConnectFailure::Descriptors),
        }))
    }

    /// One pump per descriptor, between it and the stream's queues.
    fn pump(
        self,
        ctx: &Arc<Context>,
        id: StreamId,
        port: &mut StreamPort,
        escapes: Option<EscapeInput>,
    ) -> Pumps {
        let stdout_queue = port.stdout.take().expect("taken once");
        let stderr_queue = port.stderr.take().expect("taken once");
        Pumps {
            stdin: pump_stdin(ctx.clone(), id, self.stdin, port.stdin.clone(), escapes),
            stdout: Some(pump_output(
                ctx.clone(),
                id,
                Fd::Stdout,
                self.stdout,
                stdout_queue,
            )),
            stderr: (self.stderr)
                .map(|w| pump_output(ctx.clone(), id, Fd::Stderr, w, stderr_queue)),
        }
    }
}

/// Finds or makes the context, answering the questions it asks the shim meanwhile;
/// `early` is the session's stream, opened with the connection if this call makes it.
/// `None`: the shim went away (the attempt carries on for others in its own task).
async fn connect(
    master: &Arc<Master>,
    place: Place,
    prompter: &Prompter,
    early: EarlyOpen,
    from_shim: &mut LinkReader<OwnedReadHalf>,
) -> Option<Result<Found, ConnectError>> {
    let connect = find(master, place, prompter, early);
    tokio::pin!(connect);
    loop {
        tokio::select! {
            found = &mut connect => return Some(found),
            frame = from_shim.next() => match frame {
                Some(Ok(Frame { msg: Message::PromptReply { secret }, .. })) => prompter.answer(secret),
                Some(Ok(frame)) => tracing::warn!("shim sent {:?} before its session started", frame.msg),
                _ => return None,
            },
        }
    }
}

/// The agent's answer to `Open` (its guard on the link sees that it comes first): the
/// stdin window it grants, or `None` once the shim was told why not.
async fn opened(ctx: &Context, port: &mut StreamPort, to_shim: &LinkSender) -> Option<u32> {
    let answer = tokio::time::timeout(OPEN_TIMEOUT, port.events.recv()).await;
    let why = match answer {
        Ok(Some(Message::Opened { window, .. })) => return Some(window),
        Ok(Some(Message::OpenFailed { error, .. })) => format!("mitossh: {}: {error}", ctx.name),
        Ok(Some(other)) => {
            tracing::error!(host = %ctx.name, "agent answered Open with {}", other.name());
            format!("mitossh: {}: agent protocol error", ctx.name)
        }
        Ok(None) => lost(ctx),
        Err(_) => format!(
            "mitossh: {}: the agent did not answer within {}s",
            ctx.name,
            OPEN_TIMEOUT.as_secs()
        ),
    };
    fail(to_shim, why);
    None
}

/// A session whose process runs: what its control loop works with.
struct Live {
    ctx: Arc<Context>,
    id: StreamId,
    to_shim: LinkSender,
    pumps: Pumps,
    stdin_credit: Arc<CreditGate>,
    /// `-q`: no "Connection closed" after `~.`.
    quiet: bool,
}

impl Live {
    /// Forwards the shim's signals and window sizes to the process and its events to the
    /// shim, until it exits, the shim goes away, or `~.` (only with escape sequences:
    /// without them the sender of `disconnect` is gone at once).
    async fn serve(
        mut self,
        mut from_shim: LinkReader<OwnedReadHalf>,
        mut port: StreamPort,
        mut disconnect: tokio::sync::oneshot::Receiver<()>,
        escaping: bool,
    ) {
        loop {
            tokio::select! {
                Ok(()) = &mut disconnect, if escaping => return self.hang_up(),
                frame = from_shim.next() => {
                    let Some(Ok(frame)) = frame else {
                        // The shim is gone (killed, or its process exited): stop the process.
                        let _ = self.ctx.send(Message::Close { stream: self.id });
                        return self.pumps.abort();
                    };
                    if !self.forward(frame.msg) {
                        return;
                    }
                }
                event = port.events.recv() => {
                    let Some(event) = event else {
                        self.pumps.abort();
                        return fail(&self.to_shim, lost(&self.ctx));
                    };
                    match event {
                        Message::Released { .. } => {
                            let _ = self.to_shim.send(Frame::new(MASTER, Message::Released { stream: 0 }));
                        }
                        Message::Exit { status, .. } => {
                            return self.exited(status, &mut port, &mut from_shim).await;
                        }
                        other => tracing::warn!(host = %self.ctx.name, "stream {}: unexpected {}", self.id, other.name()),
                    }
                }
            }
        }
    }

    /// `~.`: as ssh, end the session; the remote process is hung up on.
    fn hang_up(mut self) {
        let _ = self.ctx.send(Message::Close { stream: self.id });
        self.pumps.abort();
        if !self.quiet {
            let text = format!("Connection to {} closed.\r", self.ctx.key.host_name());
            let text = text.into_bytes();
            let _ = self
                .to_shim
                .send(Frame::new(MASTER, Message::Diagnostic { text }));
        }
        let status = ExitStatus::Signal {
            signal: "HUP".into(),
            core_dumped: false,
        };
        let _ = self
            .to_shim
            .send(Frame::new(MASTER, Message::Exit { stream: 0, status }));
    }

    /// Passes a message from the shim on to the process; false when the session ended.
    fn forward(&mut self, msg: Message) -> bool {
        let (ctx, id) = (&self.ctx, self.id);
        let forwarded = match msg {
            Message::Signal { signal, .. } => ctx.send(Message::Signal { stream: id, signal }),
            Message::Resize { size, .. } => ctx.send(Message::Resize { stream: id, size }),
            Message::Release { .. } => ctx.send(Message::Release { stream: id }),
            Message::Stop { grace_ms, .. } => ctx.send(Message::Stop {
                stream: id,
                grace_ms,
            }),
            other => {
                tracing::warn!("shim sent {other:?} mid-session; closing it");
                let _ = ctx.send(Message::Close { stream: id });
                self.pumps.abort();
                return false;
            }
        };
        if forwarded.is_err() {
            self.pumps.abort();
            fail(&self.to_shim, lost(ctx));
            return false;
        }
        true
    }

    /// Everything the process wrote goes out before its exit status, unless the shim
    /// disappears meanwhile.
    async fn exited(
        mut self,
        status: ExitStatus,
        port: &mut StreamPort,
        from_shim: &mut LinkReader<OwnedReadHalf>,
    ) {
        self.stdin_credit.close();
        port.end_output();
        tokio::select! {
            _ = self.pumps.drain() => {}
            _ = from_shim.next() => return self.pumps.abort(),
        }
        let _ = self
            .to_shim
            .send(Frame::new(MASTER, Message::Exit { stream: 0, status }));
    }
}

/// Finds or makes the context a session runs in.
async fn find(
    master: &Arc<Master>,
    place: Place,
    prompter: &Prompter,
    early: EarlyOpen,
) -> Result<Found, ConnectError> {
    match place {
        Place::Target(mut target) => {
            master.resolutions.complete(&master.ssh, &mut target).await;
            master
                .registry
                .get_or_connect(master, &target, prompter, Some(early))
                .await
        }
        Place::Context(id) => master
            .registry
            .by_id(id)
            .map(|ctx| Found { ctx, waited: false })
            .ok_or_else(|| ConnectError::Other(format!("mitossh: no context {id} (it closed?)"))),
    }
}

/// What a ControlMaster client prints at `-v` when it uses an existing master: ssh's own
/// lines about its configuration (the shim's `ssh -G -v`), then which connection it uses.
fn reused(prompter: &Prompter, preamble: &[u8], ctx: &Context, socket: &std::path::Path) {
    for line in preamble.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        prompter.say(crate::bootstrap::ssh::printable(line).as_bytes());
    }
    prompter.say(
        format!(
            "debug1: mitossh: using the connection to {} of the master at {} (context {})",
            ctx.name,
            socket.display(),
            ctx.id
        )
        .as_bytes(),
    );
}

/// Closes a session's prompter when the session ends.
struct ClosePrompter(Prompter);

impl Drop for ClosePrompter {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn lost(ctx: &Context) -> String {
    match ctx.lost_reason() {
        Some(why) => format!("mitossh: connection to {} lost: {why}", ctx.name),
        None => format!("mitossh: connection to {} lost", ctx.name),
    }
}

/// The tasks moving a session's bytes.
struct Pumps {
    stdin: JoinHandle<()>,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<()>>,
}

impl Pumps {
    /// Waits until stdout and stderr have written everything queued (their queues end
    /// once the stream's output ended).
    async fn drain(&mut self) {
        for task in [self.stdout.take(), self.stderr.take()]
            .into_iter()
            .flatten()
        {
            let _ = task.await;
        }
        self.stdin.abort();
    }

    fn abort(&mut self) {
        self.stdin.abort();
        for task in [self.stdout.take(), self.stderr.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

/// Reads the client's stdin as far as the agent's credit allows and sends it on.
/// A pty session's input as ssh reads it: with escape sequences (`~.`, `~?`, `~~`).
struct EscapeInput {
    escapes: Escapes,
    to_shim: LinkSender,
    /// Fired on `~.`.
    disconnect: Option<tokio::sync::oneshot::Sender<()>>,
}

impl EscapeInput {
    /// What of `data` goes to the remote side; acts on the sequences in it.
    fn filter(&mut self, data: Bytes, credit: &CreditGate) -> Option<Bytes> {
        let mut out = Vec::with_capacity(data.len());
        let asked = self.escapes.filter(&data, &mut out);
        // Bytes not sent are not owed to the agent: their credit comes back.
        credit.give_back(data.len().saturating_sub(out.len()));
        match asked {
            Some(Escape::Disconnect) => {
                if let Some(tx) = self.disconnect.take() {
                    let _ = tx.send(());
                }
                return None;
            }
            Some(Escape::Help) => {
                for line in self.escapes.help() {
                    let text = format!("{line}\r").into_bytes();
                    let _ = self
                        .to_shim
                        .send(Frame::new(MASTER, Message::Diagnostic { text }));
                }
            }
            None => {}
        }
        Some(Bytes::from(out))
    }
}

fn pump_stdin(
    ctx: Arc<Context>,
    id: StreamId,
    src: std::io::Result<Adopted<adopt::Reader>>,
    credit: Arc<CreditGate>,
    mut escapes: Option<EscapeInput>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let eof = Message::Eof {
            stream: id,
            fd: Fd::Stdin,
        };
        let src = match src {
            Ok(src) => src,
            Err(e) => {
                tracing::warn!(host = %ctx.name, "stream {id}: cannot read stdin: {e}");
                let _ = ctx.send(eof);
                return;
            }
        };
        let data = Message::Data {
            stream: id,
            fd: Fd::Stdin,
        };
        let link = ctx.link_sender().clone();
        let escaping = escapes.is_some();
        let emit = |chunk| match chunk {
            Chunk::Bytes(data) => {
                let data = match escapes.as_mut() {
                    Some(e) => match e.filter(data, &credit) {
                        Some(data) => data,
                        None => return false,
                    },
                    None => data,
                };
                data.is_empty()
                    || ctx
                        .send_data(
                            Message::Data {
                                stream: id,
                                fd: Fd::Stdin,
                            },
                            data,
                        )
                        .is_ok()
            }
            Chunk::Staged(staged) => ctx.send_staged(data.clone(), staged).is_ok(),
            Chunk::End => ctx.send(eof.clone()).is_ok(),
        };
        match src {
            // Escape sequences are looked for in the bytes, so those come through memory.
            Adopted::Pipe(pipe) if !escaping => {
                let source = Source::pipe(pipe);
                pump::read_with_credit(source, &credit, &link, emit).await;
            }
            Adopted::Pipe(mut pipe) => {
                let source = Source::stream(&mut pipe);
                pump::read_with_credit(source, &credit, &link, emit).await;
            }
            Adopted::Other { mut io, file } => {
                let source = match file {
                    true => Source::Stream {
                        io: &mut io,
                        first: MAX_DATA,
                    },
                    false => Source::stream(&mut io),
                };
                pump::read_with_credit(source, &credit, &link, emit).await;
            }
        }
    })
}

/// Writes one of the process's outputs to the client's descriptor, returning credit.
/// A client that stops reading (a closed pipe) is reported to the agent, so the process
/// gets SIGPIPE as under ssh.
fn pump_output(
    ctx: Arc<Context>,
    id: StreamId,
    fd: Fd,
    dst: std::io::Result<Adopted<adopt::Writer>>,
    queue: Inbox,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let dst = match dst {
            Ok(Adopted::Pipe(pipe)) => Dst::Pipe(pipe),
            Ok(Adopted::Other { io, .. }) => Dst::Stream(io),
            Err(e) => {
                tracing::debug!(host = %ctx.name, "stream {id}: cannot write {fd:?}: {e}");
                Dst::Gone
            }
        };
        let sink = Sink {
            dst,
            keep_open_on_eof: false,
        };
        let grant = |bytes| {
            let _ = ctx.send(Message::Credit {
                stream: id,
                fd,
                bytes,
            });
        };
        let broken = || {
            let _ = ctx.send(Message::Eof { stream: id, fd });
        };
        pump::write_with_credit(queue, sink, grant, broken).await;
    })
}
