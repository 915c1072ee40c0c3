//! Contexts as the master sees them, and the links that carry them.
//!
//! A [`Link`] is one transport the master holds: an ssh connection to an agent. It
//! carries the context at its end and every context started below that one (sudo on that
//! host, a host reached by ssh from there). A dispatcher task per link reads it and hands
//! each frame to its context: stream data straight into the queue of the descriptor it is
//! for, other stream events to the session that owns the stream, reports about a child
//! being started to whoever waits for that child. When the link ends, every context on
//! it dies, which tells each waiting session and spawner.
//!
//! Everything on a link comes from its agent and is untrusted: each frame is cleaned of
//! unsafe text ([`crate::untrusted`]) and judged by the link's [`Guard`] on arrival. A
//! frame that breaks the rules drops the link it came on, and only that link.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::Master;
use super::key::ContextKey;
use super::window::Window;
use crate::bootstrap::ssh::{ConnectError, ConnectHooks, SshCommand, bootstrap};
use crate::bootstrap::{hello_frame, receive_hello};
use crate::credit::CreditGate;
use crate::guard::{Guard, Verdict, Violation};
use crate::link::inbound::{Incoming, LinkIn};
use crate::link::{self, LinkClosed, LinkSender, Staged};
use crate::proto::flow::DEFAULT_WINDOW;
use crate::proto::frame::encode_into;
use crate::proto::{
    ContextId, ContextStatus, Fd, Frame, FrameError, Hello, Message, OpenSpec, Secret, StreamId,
};
use crate::pump::{self, DeliverError, Feed, Inbox, Input};
use crate::sys::fdio::FdIo;
use crate::untrusted;

/// How long ssh may take to exit after its agent was told to shut down.
const EXIT_GRACE: Duration = Duration::from_secs(3);

// Locking. The master runs on one thread (a current-thread runtime), so the locks here are
// never contended: they are `Mutex`es rather than `RefCell`s only because the tasks that
// share a link or a context must be `Send`. Each link and each context keeps all its
// changing state under one lock, taken for a few statements and never across an await.
// The order is link, then context: nothing takes a link's lock while holding a
// context's. A change under either lock is whole before anything that could panic, so a
// poisoned lock still guards consistent state and is simply taken (`lock`, once).

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One transport and the contexts it carries.
#[derive(Debug)]
pub(crate) struct Link {
    /// The host as the user named it, for log lines.
    name: String,
    sender: LinkSender,
    state: Mutex<LinkState>,
    /// Cancelled once the transport is gone.
    pub dead: CancellationToken,
}

#[derive(Debug)]
struct LinkState {
    /// What the agent may say; shown every frame sent, under the lock, so that its view
    /// and the order on the wire agree.
    guard: Guard,
    contexts: HashMap<ContextId, Arc<Context>>,
    /// Why the link was dropped, when its agent broke the protocol.
    breach: Option<String>,
}

impl Link {
    fn send(&self, frame: Frame) -> Result<(), LinkClosed> {
        let mut state = lock(&self.state);
        state.guard.sent(&frame);
        self.sender.send(frame)
    }

    fn send_staged(&self, frame: Frame, staged: Staged) -> Result<(), LinkClosed> {
        let mut state = lock(&self.state);
        state.guard.sent_with_payload(&frame, staged.len());
        self.sender.send_staged(frame, staged)
    }

    fn is_open(&self, stream: StreamId) -> bool {
        lock(&self.state).guard.is_open(stream)
    }

    fn context(&self, id: ContextId) -> Option<Arc<Context>> {
        lock(&self.state).contexts.get(&id).cloned()
    }

    fn add(&self, ctx: Arc<Context>) {
        lock(&self.state).contexts.insert(ctx.id, ctx);
    }

    fn take(&self, id: ContextId) -> Option<Arc<Context>> {
        lock(&self.state).contexts.remove(&id)
    }
}

/// What a spawner hears about the child it waits for.
#[derive(Debug)]
pub(crate) enum SpawnEvent {
    /// A password is needed: whose (an account name, untrusted).
    NeedPassword(String),
    Spawned(Hello),
    Failed(String),
}

/// One agent, at the end of a link or somewhere below it.
#[derive(Debug)]
pub(crate) struct Context {
    pub id: ContextId,
    /// The context this one was started from (`MASTER` for a first ssh hop). A host reached
    /// through another's TCP stream has that one as parent, though its link is its own.
    pub parent: ContextId,
    pub key: ContextKey,
    /// The last step as people write it: `user@host:port`, `sudo:root`.
    pub name: String,
    pub method: &'static str,
    pub agent: Hello,
    link: Arc<Link>,
    /// Whether this context counts among its parent's `children`.
    counted: bool,
    opened: Instant,
    state: Mutex<State>,
    /// Open streams plus live children; the idle watcher follows it.
    active: watch::Sender<usize>,
    /// The connect window of the hosts this context's agent runs ssh to (made the first
    /// time it is a gateway).
    spawn_window: OnceLock<Window>,
    /// Cancelled once this context is gone.
    pub dead: CancellationToken,
}

/// What changes in a context (see "Locking" above).
#[derive(Debug)]
struct State {
    streams: HashMap<StreamId, StreamEntry>,
    spawns: HashMap<ContextId, mpsc::UnboundedSender<SpawnEvent>>,
    /// Children started through this context's agent (a host reached through one of its
    /// TCP streams is not one: that stream keeps this context busy instead).
    children: usize,
    /// Why this context is gone, when known.
    lost_reason: Option<String>,
    total_streams: u64,
    bytes_down: u64,
    bytes_up: u64,
    last_used: Instant,
    /// `ssh -O stop`, or shutting down: take no new streams.
    draining: bool,
    /// Passwords that worked for children of this context, by method and user, kept
    /// for as long as this context lives (sudo asks for the same one every time).
    passwords: HashMap<(String, String), Secret>,
}

impl State {
    /// Tells the idle watcher how busy the context is now.
    fn recount(&self, active: &watch::Sender<usize>) {
        active.send_replace(self.streams.len().saturating_add(self.children));
    }
}

/// Where the dispatcher puts what the agent sends on one stream.
#[derive(Debug)]
struct StreamEntry {
    /// `Opened`/`OpenFailed`, `Released`, `Exit`: a few at most (the guard sees to it).
    events: mpsc::UnboundedSender<Message>,
    /// Credit for stdin: the window in `Opened`, then `Credit`.
    stdin: Arc<CreditGate>,
    stdout: Option<Arc<Feed>>,
    stderr: Option<Arc<Feed>>,
}

/// A stream's end in the master. Dropping it forgets the stream (and closes it on the
/// agent, unless it ended there).
#[derive(Debug)]
pub(crate) struct StreamPort {
    pub id: StreamId,
    /// Everything but data: `Opened` or `OpenFailed` first, then perhaps `Released`, then
    /// `Exit`.
    pub events: mpsc::UnboundedReceiver<Message>,
    pub stdin: Arc<CreditGate>,
    /// The process's output, for the writers (taken by the session).
    pub stdout: Option<Inbox>,
    pub stderr: Option<Inbox>,
    ctx: Arc<Context>,
}

impl StreamPort {
    /// No more output comes (the process exited): the writers finish what is queued.
    pub(crate) fn end_output(&self) {
        self.ctx.with_stream(self.id, |e| {
            e.stdout = None;
            e.stderr = None;
        });
    }
}

impl Drop for StreamPort {
    fn drop(&mut self) {
        self.ctx.forget(self.id);
    }
}

impl Context {
    fn new(
        id: ContextId,
        parent: ContextId,
        key: ContextKey,
        method: &'static str,
        agent: Hello,
        link: Arc<Link>,
        counted: bool,
    ) -> Arc<Context> {
        let (active, _) = watch::channel(0);
        Arc::new(Context {
            id,
            parent,
            name: key.label(),
            key,
            method,
            agent,
            dead: link.dead.child_token(),
            link,
            counted,
            opened: Instant::now(),
            state: Mutex::new(State {
                streams: HashMap::new(),
                spawns: HashMap::new(),
                children: 0,
                lost_reason: None,
                total_streams: 0,
                bytes_down: 0,
                bytes_up: 0,
                last_used: Instant::now(),
                draining: false,
                passwords: HashMap::new(),
            }),
            active,
            spawn_window: OnceLock::new(),
        })
    }

    /// The window for ssh handshakes run by this context's agent (of `size`, the first
    /// time).
    pub(crate) fn spawn_window(&self, size: usize) -> &Window {
        self.spawn_window.get_or_init(|| Window::new(size))
    }

    /// (waiting, under way) in this context's window, if it has one.
    pub(crate) fn spawn_load(&self) -> Option<(usize, usize)> {
        self.spawn_window.get().map(Window::load)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Whether new streams (and children) may be started here.
    pub(crate) fn usable(&self) -> bool {
        !self.dead.is_cancelled() && !self.state().draining
    }

    fn draining(&self) -> bool {
        self.state().draining
    }

    /// Registers stream `id` and asks the agent to start it.
    pub(crate) fn open_stream(
        self: &Arc<Self>,
        id: StreamId,
        spec: OpenSpec,
    ) -> Result<StreamPort, LinkClosed> {
        let port = self.register_stream(id)?;
        self.send(Message::Open {
            stream: id,
            spec: Box::new(spec),
        })?;
        Ok(port)
    }

    /// Registers stream `id`, whose `Open` is (or is about to be) on its way.
    fn register_stream(self: &Arc<Self>, id: StreamId) -> Result<StreamPort, LinkClosed> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let stdin = Arc::new(CreditGate::new(0));
        let (stdout_feed, stdout) = pump::inbox(DEFAULT_WINDOW);
        let (stderr_feed, stderr) = pump::inbox(DEFAULT_WINDOW);
        {
            let mut state = self.state();
            if self.dead.is_cancelled() {
                return Err(LinkClosed);
            }
            let entry = StreamEntry {
                events: events_tx,
                stdin: stdin.clone(),
                stdout: Some(Arc::new(stdout_feed)),
                stderr: Some(Arc::new(stderr_feed)),
            };
            state.streams.insert(id, entry);
            state.total_streams += 1;
            state.last_used = Instant::now();
            state.recount(&self.active);
        }
        Ok(StreamPort {
            id,
            events,
            stdin,
            stdout: Some(stdout),
            stderr: Some(stderr),
            ctx: self.clone(),
        })
    }

    fn forget(&self, id: StreamId) {
        {
            let mut state = self.state();
            if state.streams.remove(&id).is_some() {
                state.recount(&self.active);
            }
            state.last_used = Instant::now();
        }
        // The agent may still run it: tell it, unless it ended there or was told.
        if self.link.is_open(id) {
            let _ = self.send(Message::Close { stream: id });
        }
    }

    /// Runs `f` on stream `id`'s entry, if it has one, under the context's lock (`f` must
    /// not take the link's).
    fn with_stream(&self, id: StreamId, f: impl FnOnce(&mut StreamEntry)) {
        if let Some(entry) = self.state().streams.get_mut(&id) {
            f(entry);
        }
    }

    /// Sends a message to this context's agent.
    pub(crate) fn send(&self, msg: Message) -> Result<(), LinkClosed> {
        if self.dead.is_cancelled() {
            return Err(LinkClosed);
        }
        self.link.send(Frame::new(self.id, msg))
    }

    /// Sends stdin bytes to the agent.
    pub(crate) fn send_data(&self, msg: Message, data: bytes::Bytes) -> Result<(), LinkClosed> {
        self.state().bytes_down += data.len() as u64;
        if self.dead.is_cancelled() {
            return Err(LinkClosed);
        }
        self.link.send(Frame::with_data(self.id, msg, data))
    }

    /// Sends stdin bytes staged in a pipe to the agent.
    pub(crate) fn send_staged(&self, msg: Message, staged: Staged) -> Result<(), LinkClosed> {
        self.state().bytes_down += staged.len() as u64;
        if self.dead.is_cancelled() {
            return Err(LinkClosed);
        }
        self.link.send_staged(Frame::new(self.id, msg), staged)
    }

    /// The link's queue, for producers of bulk data to wait on ([`LinkSender::ready`]).
    pub(crate) fn link_sender(&self) -> &LinkSender {
        &self.link.sender
    }

    /// Why this context is gone, if it is and that is known.
    pub(crate) fn lost_reason(&self) -> Option<String> {
        self.state().lost_reason.clone()
    }

    /// Asks the agent to stop everything and exit. From here on the registry hands out a
    /// new context for the same key.
    pub(crate) fn shutdown(&self) {
        self.state().draining = true;
        let _ = self.send(Message::Shutdown);
    }

    /// `ssh -O stop`: finish the open streams, accept no new ones.
    pub(crate) fn drain(&self) {
        self.state().draining = true;
        self.active.send_modify(|_| {});
    }

    /// A password that worked here before for `method` and `user`.
    pub(crate) fn known_password(&self, method: &str, user: &str) -> Option<Secret> {
        let key = (method.to_string(), user.to_string());
        self.state().passwords.get(&key).cloned()
    }

    pub(crate) fn remember_password(&self, method: &str, user: &str, secret: Option<Secret>) {
        let passwords = &mut self.state().passwords;
        let key = (method.to_string(), user.to_string());
        match secret {
            Some(s) => passwords.insert(key, s),
            None => passwords.remove(&key),
        };
    }

    /// Starts child `id` below this context by `msg` (a `Spawn`), and returns what the
    /// agent says about it, in order.
    pub(crate) fn spawn(
        &self,
        id: ContextId,
        msg: Message,
    ) -> Result<mpsc::UnboundedReceiver<SpawnEvent>, LinkClosed> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.state().spawns.insert(id, tx);
        self.send(msg)?;
        Ok(rx)
    }

    /// Tells the spawner of `child` what happened; false if nobody waits any more.
    fn spawn_event(&self, child: ContextId, event: SpawnEvent) -> bool {
        let spawns = &mut self.state().spawns;
        let done = matches!(event, SpawnEvent::Spawned(_) | SpawnEvent::Failed(_));
        let heard = spawns.get(&child).is_some_and(|tx| tx.send(event).is_ok());
        if done {
            spawns.remove(&child);
        }
        heard
    }

    /// A child of this context now runs on `link`.
    pub(crate) fn adopt(
        self: &Arc<Self>,
        id: ContextId,
        key: ContextKey,
        method: &'static str,
        hello: Hello,
    ) -> Arc<Context> {
        let child = Context::new(id, self.id, key, method, hello, self.link.clone(), true);
        self.link.add(child.clone());
        let mut state = self.state();
        state.children += 1;
        state.recount(&self.active);
        drop(state);
        child
    }

    fn child_gone(&self) {
        let mut state = self.state();
        match state.children.checked_sub(1) {
            Some(n) => state.children = n,
            None => tracing::error!(
                context = self.id,
                "{}: a child ended that was never counted",
                self.name
            ),
        }
        state.recount(&self.active);
    }

    /// This context is gone: its streams and spawns learn it by their channels closing.
    fn die(&self, reason: Option<String>) {
        self.dead.cancel();
        let mut state = self.state();
        if reason.is_some() {
            state.lost_reason = reason;
        }
        let streams = std::mem::take(&mut state.streams);
        state.spawns.clear();
        state.passwords.clear();
        state.recount(&self.active);
        drop(state);
        if !streams.is_empty() {
            tracing::warn!(
                context = self.id,
                "{}: lost with {} open streams",
                self.name,
                streams.len()
            );
        }
    }

    pub(crate) fn status(&self) -> ContextStatus {
        let now = Instant::now();
        let state = self.state();
        ContextStatus {
            id: self.id,
            parent: self.parent,
            method: self.method.into(),
            name: self.name.clone(),
            user: self.agent.user.clone(),
            hostname: self.agent.hostname.clone(),
            agent_pid: self.agent.pid,
            age_secs: now.duration_since(self.opened).as_secs(),
            idle_secs: now.duration_since(state.last_used).as_secs(),
            open_streams: state.streams.len() as u32,
            total_streams: state.total_streams,
            bytes_down: state.bytes_down,
            bytes_up: state.bytes_up,
        }
    }
}

/// The first stream of a new connection, whose `Open` travels with the master's `Hello`
/// (so a first call costs no round trip more than `ssh host cmd`). Its port goes to the
/// request that asked, if that request still waits.
#[derive(Debug)]
pub(crate) struct EarlyOpen {
    pub stream: StreamId,
    pub spec: OpenSpec,
    pub port: oneshot::Sender<StreamPort>,
}

/// Connects a context over an ssh the master runs: bootstrap with the master's hello (and
/// `early`'s `Open`) sent at once, the agent's hello, then the link's dispatcher. `parent`
/// is the context whose TCP stream ssh goes through, if any.
pub(crate) async fn connect_ssh(
    master: &Arc<Master>,
    id: ContextId,
    key: ContextKey,
    ssh: SshCommand,
    parent: ContextId,
    hooks: ConnectHooks,
    early: Option<EarlyOpen>,
) -> Result<Arc<Context>, ConnectError> {
    let way = Way {
        command: ssh,
        parent,
        hooks,
        method: "ssh",
    };
    connect(master, id, key, way, early).await
}

/// Connects a context on the master's own host (execnet's popen gateway): `/bin/sh` runs
/// stage 1 as the login shell at the end of an ssh connection would, so the agent is
/// found, or stored, and started exactly as on a remote host; no ssh, nothing to ask.
pub(crate) async fn connect_local(
    master: &Arc<Master>,
    id: ContextId,
    key: ContextKey,
) -> Result<Arc<Context>, ConnectError> {
    let way = Way {
        command: SshCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into()],
            label: super::key::LOCAL.into(),
        },
        parent: crate::proto::MASTER,
        hooks: ConnectHooks::none(master.config.connect_timeout),
        method: "local",
    };
    connect(master, id, key, way, None).await
}

/// How a context's agent is reached: the command that runs stage 1 (ssh or the local
/// shell), the context it goes through, what it may ask, and the method as shown.
struct Way {
    command: SshCommand,
    parent: ContextId,
    hooks: ConnectHooks,
    method: &'static str,
}

/// Bootstrap with the master's hello (and `early`'s `Open`) sent at once, the agent's
/// hello, then the link's dispatcher.
async fn connect(
    master: &Arc<Master>,
    id: ContextId,
    key: ContextKey,
    Way {
        command: ssh,
        parent,
        hooks,
        method,
    }: Way,
    early: Option<EarlyOpen>,
) -> Result<Arc<Context>, ConnectError> {
    let mut guard = Guard::new(id);
    let mut first = BytesMut::new();
    let mut frames = vec![hello_frame(id)];
    let early = early.map(|e| {
        frames.push(Frame::new(
            id,
            Message::Open {
                stream: e.stream,
                spec: Box::new(e.spec),
            },
        ));
        (e.stream, e.port)
    });
    for frame in &frames {
        guard.sent(frame);
        encode_into(frame, &mut first).map_err(|e| ConnectError::Other(e.to_string()))?;
    }
    let boot = bootstrap(&ssh, &master.agents.offer, hooks, &first).await?;
    match &boot.uploaded {
        Some(up) => tracing::info!(host = %ssh.label, "agent started ({up})"),
        None => tracing::info!(host = %ssh.label, "agent started (cached)"),
    }
    let link_error = |e: std::io::Error| ConnectError::Other(format!("{}: {e}", ssh.label));
    let writer = FdIo::new(boot.writer.into_owned_fd().map_err(link_error)?).map_err(link_error)?;
    let already = boot.reader.buffer().to_vec();
    let reader = boot
        .reader
        .into_inner()
        .into_owned_fd()
        .map_err(link_error)?;
    let mut reader = LinkIn::new(FdIo::new(reader).map_err(link_error)?, &already);
    let (sender, writer) = link::spawn_fd_writer(writer);
    let hello = receive_hello(&mut reader)
        .await
        .map_err(|why| ConnectError::Other(format!("{}: {why}", ssh.label)))?;
    let link = Arc::new(Link {
        name: ssh.label.clone(),
        sender,
        state: Mutex::new(LinkState {
            guard,
            contexts: HashMap::new(),
            breach: None,
        }),
        dead: CancellationToken::new(),
    });
    // Reached through `parent`'s TCP stream, not started by its agent: not its child.
    let ctx = Context::new(id, parent, key, method, hello, link.clone(), false);
    link.add(ctx.clone());
    if let Some((stream, waiter)) = early
        && let Ok(port) = ctx.register_stream(stream)
    {
        // Nobody waits any more: dropping the port closes the stream.
        let _ = waiter.send(port);
    }
    master.tasks.spawn(dispatch(
        link,
        reader,
        boot.child,
        writer,
        Arc::downgrade(master),
    ));
    Ok(ctx)
}

/// Routes frames from the link to their contexts until it ends, then cleans up.
async fn dispatch(
    link: Arc<Link>,
    mut reader: LinkIn,
    mut child: Child,
    writer: tokio::task::JoinHandle<std::io::Result<()>>,
    master: Weak<Master>,
) {
    loop {
        let incoming = tokio::select! {
            f = reader.next() => f,
            // The writer failing means the pipe to ssh broke: the link is gone too.
            _ = link.sender.closed() => None,
        };
        let breach = match incoming {
            Some(Ok(incoming)) => match route_up(&link, &master, incoming, &mut reader).await {
                Ok(()) => continue,
                Err(Refused::Breach(why)) => why.to_string(),
                Err(Refused::Link(e)) => {
                    tracing::warn!("{}: the link broke: {e}", link.name);
                    break;
                }
            },
            Some(Err(FrameError::Io(e))) => {
                tracing::warn!("{}: the link broke: {e}", link.name);
                break;
            }
            Some(Err(e)) => e.to_string(),
            None => break,
        };
        let why = format!("its agent broke the protocol: {breach}");
        tracing::error!("dropping the link to {}: {why}", link.name);
        lock(&link.state).breach = Some(why);
        break;
    }
    // Whatever the agent still writes goes nowhere now.
    drop(reader);
    link.dead.cancel();
    let (breach, contexts) = {
        let mut state = lock(&link.state);
        let contexts: Vec<Arc<Context>> = state.contexts.drain().map(|(_, c)| c).collect();
        (state.breach.clone(), contexts)
    };
    for ctx in &contexts {
        lose(ctx, &master, breach.clone());
    }
    // Closing ssh's stdin ends the agent if it still runs; then ssh exits.
    writer.abort();
    if tokio::time::timeout(EXIT_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let names: Vec<&str> = contexts.iter().map(|c| c.name.as_str()).collect();
    tracing::info!("link closed (contexts {names:?})");
}

/// Why a frame ended its link.
enum Refused {
    /// It broke the protocol.
    Breach(Violation),
    /// Reading its payload failed.
    Link(FrameError),
}

impl From<Violation> for Refused {
    fn from(v: Violation) -> Refused {
        Refused::Breach(v)
    }
}

impl From<FrameError> for Refused {
    fn from(e: FrameError) -> Refused {
        Refused::Link(e)
    }
}

/// A context is gone: tell its waiters, its parent and the registry.
fn lose(ctx: &Arc<Context>, master: &Weak<Master>, reason: Option<String>) {
    ctx.die(reason);
    if let Some(master) = master.upgrade() {
        master.registry.remove(ctx);
        if ctx.counted
            && let Some(parent) = master.registry.by_id(ctx.parent)
        {
            parent.child_gone();
        }
    }
    tracing::info!(context = ctx.id, "{} closed", ctx.name);
}

/// Hands one frame from the agent to whoever it is for, once it is clean and allowed. Its
/// header is judged before any of its payload is taken off the link.
async fn route_up(
    link: &Link,
    master: &Weak<Master>,
    incoming: Incoming,
    reader: &mut LinkIn,
) -> Result<(), Refused> {
    let Incoming { mut frame, unread } = incoming;
    untrusted::clean_message(&mut frame.msg);
    let payload = frame.data.len() + unread;
    let verdict = lock(&link.state)
        .guard
        .judge(frame.ctx, &mut frame.msg, payload)?;
    match verdict {
        Verdict::Pass => {}
        Verdict::Ignore => return Ok(()),
        Verdict::Lost(gone) => {
            let Message::ContextLost { reason, .. } = frame.msg else {
                return Ok(());
            };
            tracing::info!(contexts = ?gone, "lost: {reason}");
            for id in gone {
                // A child that never finished starting: its spawner hears it failed.
                let waiters: Vec<Arc<Context>> =
                    lock(&link.state).contexts.values().cloned().collect();
                for waiter in waiters {
                    waiter.spawn_event(id, SpawnEvent::Failed(reason.clone()));
                }
                if let Some(ctx) = link.take(id) {
                    lose(&ctx, master, Some(reason.clone()));
                }
            }
            return Ok(());
        }
    }
    let Some(ctx) = link.context(frame.ctx) else {
        // Allowed, so a context the master started; not adopted yet, and nothing of it
        // is waited for.
        tracing::debug!(
            context = frame.ctx,
            "{} from a context not yet adopted",
            frame.msg.name()
        );
        reader.read_payload().await?;
        return Ok(());
    };
    if let Message::Data { stream, fd } = frame.msg {
        ctx.state().bytes_up += payload as u64;
        return ctx.output(stream, fd, frame.data, unread, reader).await;
    }
    ctx.event(link, frame.msg);
    Ok(())
}

impl Context {
    /// A stream's output: into its writer's queue, or spliced on from the link.
    async fn output(
        &self,
        stream: StreamId,
        fd: Fd,
        data: bytes::Bytes,
        unread: usize,
        reader: &mut LinkIn,
    ) -> Result<(), Refused> {
        let mut feed = None;
        self.with_stream(stream, |e| feed = e.feed(fd).cloned());
        let Some(feed) = feed else {
            reader.read_payload().await?;
            return Ok(());
        };
        if unread == 0 {
            feed.send(Input::Data(data)).map_err(Violation::from)?;
            return Ok(());
        }
        let delivered = match feed.deliver(data, unread, reader).await {
            Ok(delivered) => delivered,
            Err(DeliverError::Flow(e)) => return Err(Violation::from(e).into()),
            Err(DeliverError::Link(e)) => return Err(e.into()),
        };
        if let Some(bytes) = delivered.grant {
            let _ = self.send(Message::Credit { stream, fd, bytes });
        }
        if delivered.broken {
            let _ = self.send(Message::Eof { stream, fd });
        }
        Ok(())
    }

    /// Anything but data from the agent.
    fn event(&self, link: &Link, msg: Message) {
        match msg {
            Message::Eof { stream, fd } => self.with_stream(stream, |e| {
                if let Some(feed) = e.feed(fd) {
                    let _ = feed.send(Input::Eof); // an end is never over the window
                }
            }),
            Message::Credit { stream, bytes, .. } => {
                self.with_stream(stream, |e| e.stdin.grant(bytes))
            }
            msg @ Message::Opened { stream, window, .. } => self.with_stream(stream, |e| {
                e.stdin.grant(window);
                let _ = e.events.send(msg);
            }),
            msg @ (Message::OpenFailed { stream, .. }
            | Message::Released { stream }
            | Message::Exit { stream, .. }) => self.with_stream(stream, |e| {
                let _ = e.events.send(msg);
            }),
            Message::NeedPassword { child, whose } => {
                self.spawn_event(child, SpawnEvent::NeedPassword(whose));
            }
            Message::Spawned { child, hello } => {
                if !self.spawn_event(child, SpawnEvent::Spawned(hello)) {
                    // Its spawner gave up waiting: nobody will use it.
                    tracing::warn!(
                        context = child,
                        "{}: a child started too late; stopping it",
                        self.name
                    );
                    let _ = link.send(Frame::new(child, Message::Shutdown));
                }
            }
            Message::SpawnFailed { child, error } => {
                self.spawn_event(child, SpawnEvent::Failed(error));
            }
            other => tracing::warn!(context = self.id, "ignoring {}", other.name()),
        }
    }
}

impl StreamEntry {
    fn feed(&self, fd: Fd) -> Option<&Arc<Feed>> {
        match fd {
            Fd::Stdout => self.stdout.as_ref(),
            Fd::Stderr => self.stderr.as_ref(),
            Fd::Stdin => None,
        }
    }
}

/// Closes the context after `idle` without streams or children, or at once when
/// draining and empty.
pub(crate) async fn watch_idle(ctx: Arc<Context>, idle: Duration) {
    let mut active = ctx.active.subscribe();
    loop {
        let busy = *active.borrow_and_update() > 0;
        if !busy && ctx.draining() {
            ctx.shutdown();
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(idle), if !busy => {
                tracing::info!(context = ctx.id, "{}: closing after {}s idle", ctx.name, idle.as_secs());
                ctx.shutdown();
                return;
            }
            r = active.changed() => if r.is_err() { return },
            _ = ctx.dead.cancelled() => return,
        }
    }
}
