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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Master;
use super::key::ContextKey;
use crate::bootstrap::handshake;
use crate::bootstrap::ssh::{ConnectError, ConnectHooks, SshCommand, bootstrap};
use crate::credit::CreditGate;
use crate::guard::{Guard, Verdict, Violation};
use crate::link::{self, LinkClosed, LinkReader, LinkSender};
use crate::proto::{
    ContextId, ContextStatus, Fd, Frame, FrameError, Hello, Message, OpenSpec, Secret, StreamId,
};
use crate::pump::{self, Feed, Inbox, Input};
use crate::untrusted;

/// How long ssh may take to exit after its agent was told to shut down.
const EXIT_GRACE: Duration = Duration::from_secs(3);

/// One transport and the contexts it carries.
#[derive(Debug)]
pub(crate) struct Link {
    /// The host as the user named it, for log lines.
    name: String,
    sender: LinkSender,
    /// What the agent may say; shown every frame sent, under this lock, so that its view
    /// and the order on the wire agree.
    guard: Mutex<Guard>,
    contexts: Mutex<HashMap<ContextId, Arc<Context>>>,
    /// Why the link was dropped, when its agent broke the protocol.
    breach: Mutex<Option<String>>,
    /// Cancelled once the transport is gone.
    pub dead: CancellationToken,
}

impl Link {
    fn send(&self, frame: Frame) -> Result<(), LinkClosed> {
        let mut guard = self.guard.lock().unwrap_or_else(|p| p.into_inner());
        guard.sent(&frame);
        self.sender.send(frame)
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, Guard> {
        self.guard.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn context(&self, id: ContextId) -> Option<Arc<Context>> {
        self.contexts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn add(&self, ctx: Arc<Context>) {
        self.contexts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ctx.id, ctx);
    }

    fn take(&self, id: ContextId) -> Option<Arc<Context>> {
        self.contexts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
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
    streams: Mutex<HashMap<StreamId, StreamEntry>>,
    spawns: Mutex<HashMap<ContextId, mpsc::UnboundedSender<SpawnEvent>>>,
    /// Open streams plus live children; the idle watcher follows it.
    active: watch::Sender<usize>,
    /// Children started through this context's agent (a host reached through one of its
    /// TCP streams is not one: that stream keeps this context busy instead).
    children: AtomicUsize,
    /// Whether this context counts among its parent's `children`.
    counted: bool,
    /// Why this context is gone, when known.
    lost_reason: Mutex<Option<String>>,
    total_streams: AtomicU64,
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    opened: Instant,
    last_used: Mutex<Instant>,
    /// `ssh -O stop`, or shutting down: take no new streams.
    draining: AtomicBool,
    /// Passwords that worked for children of this context, by method and user, kept
    /// for as long as this context lives (sudo asks for the same one every time).
    passwords: Mutex<HashMap<(String, String), Secret>>,
    /// Cancelled once this context is gone.
    pub dead: CancellationToken,
}

/// Where the dispatcher puts what the agent sends on one stream.
#[derive(Debug)]
struct StreamEntry {
    /// `Opened`/`OpenFailed`, `Released`, `Exit`: a few at most (the guard sees to it).
    events: mpsc::UnboundedSender<Message>,
    /// Credit for stdin: the window in `Opened`, then `Credit`.
    stdin: Arc<CreditGate>,
    stdout: Option<Feed>,
    stderr: Option<Feed>,
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
            streams: Mutex::default(),
            spawns: Mutex::default(),
            active,
            children: AtomicUsize::new(0),
            counted,
            lost_reason: Mutex::default(),
            total_streams: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            opened: Instant::now(),
            last_used: Mutex::new(Instant::now()),
            draining: AtomicBool::new(false),
            passwords: Mutex::default(),
        })
    }

    /// Whether new streams (and children) may be started here.
    pub(crate) fn usable(&self) -> bool {
        !self.dead.is_cancelled() && !self.draining.load(Ordering::SeqCst)
    }

    fn recount(&self) {
        let streams = self.streams.lock().unwrap_or_else(|p| p.into_inner()).len();
        self.active
            .send_replace(streams.saturating_add(self.children.load(Ordering::SeqCst)));
    }

    /// Registers stream `id` and asks the agent to start it.
    pub(crate) fn open_stream(
        self: &Arc<Self>,
        id: StreamId,
        spec: OpenSpec,
    ) -> Result<StreamPort, LinkClosed> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let stdin = Arc::new(CreditGate::new(0));
        let (stdout_feed, stdout) = pump::inbox();
        let (stderr_feed, stderr) = pump::inbox();
        {
            let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
            if self.dead.is_cancelled() {
                return Err(LinkClosed);
            }
            let entry = StreamEntry {
                events: events_tx,
                stdin: stdin.clone(),
                stdout: Some(stdout_feed),
                stderr: Some(stderr_feed),
            };
            streams.insert(id, entry);
        }
        self.recount();
        self.total_streams.fetch_add(1, Ordering::Relaxed);
        self.touch();
        let port = StreamPort {
            id,
            events,
            stdin,
            stdout: Some(stdout),
            stderr: Some(stderr),
            ctx: self.clone(),
        };
        self.send(Message::Open {
            stream: id,
            spec: Box::new(spec),
        })?;
        Ok(port)
    }

    fn forget(&self, id: StreamId) {
        let removed = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
            .is_some();
        if removed {
            self.recount();
        }
        self.touch();
        // The agent may still run it: tell it, unless it ended there or was told.
        let open = self.link.guard().is_open(id);
        if open {
            let _ = self.send(Message::Close { stream: id });
        }
    }

    fn with_stream(&self, id: StreamId, f: impl FnOnce(&mut StreamEntry)) {
        if let Some(entry) = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&id)
        {
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
        self.bytes_down
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        if self.dead.is_cancelled() {
            return Err(LinkClosed);
        }
        self.link.send(Frame::with_data(self.id, msg, data))
    }

    /// The link's queue, for producers of bulk data to wait on ([`LinkSender::ready`]).
    pub(crate) fn link_sender(&self) -> &LinkSender {
        &self.link.sender
    }

    /// Why this context is gone, if it is and that is known.
    pub(crate) fn lost_reason(&self) -> Option<String> {
        self.lost_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks the agent to stop everything and exit. From here on the registry hands out a
    /// new context for the same key.
    pub(crate) fn shutdown(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let _ = self.send(Message::Shutdown);
    }

    /// `ssh -O stop`: finish the open streams, accept no new ones.
    pub(crate) fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.active.send_modify(|_| {});
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// A password that worked here before for `method` and `user`.
    pub(crate) fn known_password(&self, method: &str, user: &str) -> Option<Secret> {
        self.passwords
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(method.to_string(), user.to_string()))
            .cloned()
    }

    pub(crate) fn remember_password(&self, method: &str, user: &str, secret: Option<Secret>) {
        let mut passwords = self.passwords.lock().unwrap_or_else(|p| p.into_inner());
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
        self.spawns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        self.send(msg)?;
        Ok(rx)
    }

    /// Tells the spawner of `child` what happened; false if nobody waits any more.
    fn spawn_event(&self, child: ContextId, event: SpawnEvent) -> bool {
        let mut spawns = self.spawns.lock().unwrap_or_else(|p| p.into_inner());
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
        self.children.fetch_add(1, Ordering::SeqCst);
        self.recount();
        child
    }

    fn child_gone(&self) {
        let counted = self
            .children
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if counted.is_err() {
            tracing::error!(
                context = self.id,
                "{}: a child ended that was never counted",
                self.name
            );
        }
        self.recount();
    }

    /// This context is gone: its streams and spawns learn it by their channels closing.
    fn die(&self, reason: Option<String>) {
        if reason.is_some() {
            *self.lost_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason;
        }
        self.dead.cancel();
        let streams = std::mem::take(&mut *self.streams.lock().unwrap_or_else(|p| p.into_inner()));
        if !streams.is_empty() {
            tracing::warn!(
                context = self.id,
                "{}: lost with {} open streams",
                self.name,
                streams.len()
            );
        }
        self.spawns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.passwords
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.recount();
    }

    pub(crate) fn status(&self) -> ContextStatus {
        let now = Instant::now();
        let last = *self.last_used.lock().unwrap_or_else(|p| p.into_inner());
        ContextStatus {
            id: self.id,
            parent: self.parent,
            method: self.method.into(),
            name: self.name.clone(),
            user: self.agent.user.clone(),
            hostname: self.agent.hostname.clone(),
            agent_pid: self.agent.pid,
            age_secs: now.duration_since(self.opened).as_secs(),
            idle_secs: now.duration_since(last).as_secs(),
            open_streams: self.streams.lock().unwrap_or_else(|p| p.into_inner()).len() as u32,
            total_streams: self.total_streams.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
        }
    }
}

/// Connects a context over an ssh the master runs: bootstrap, hello, then the link's
/// dispatcher. `parent` is the context whose TCP stream ssh goes through, if any.
pub(crate) async fn connect_ssh(
    master: &Arc<Master>,
    id: ContextId,
    key: ContextKey,
    ssh: SshCommand,
    parent: ContextId,
    hooks: ConnectHooks,
) -> Result<Arc<Context>, ConnectError> {
    connect(master, id, key, ssh, parent, hooks, "ssh").await
}

/// Connects a context on the master's own host (execnet's popen gateway): `/bin/sh` runs
/// stage 1 as the login shell at the end of an ssh connection would, so the agent is
/// found, or stored, and started exactly as on a remote host; no ssh, nothing to ask.
pub(crate) async fn connect_local(
    master: &Arc<Master>,
    id: ContextId,
    key: ContextKey,
) -> Result<Arc<Context>, ConnectError> {
    let shell = SshCommand {
        program: "/bin/sh".into(),
        args: vec!["-c".into()],
        label: super::key::LOCAL.into(),
    };
    let hooks = ConnectHooks::none(master.config.connect_timeout);
    connect(master, id, key, shell, crate::proto::MASTER, hooks, "local").await
}

/// Bootstrap over `ssh` (or the local shell), hello, then the link's dispatcher.
async fn connect(
    master: &Arc<Master>,
    id: ContextId,
    key: ContextKey,
    ssh: SshCommand,
    parent: ContextId,
    hooks: ConnectHooks,
    method: &'static str,
) -> Result<Arc<Context>, ConnectError> {
    let boot = bootstrap(&ssh, &master.agents.offer, hooks).await?;
    match &boot.uploaded {
        Some(up) => tracing::info!(host = %ssh.label, "agent started ({up})"),
        None => tracing::info!(host = %ssh.label, "agent started (cached)"),
    }
    let (sender, writer) = link::spawn_writer(boot.writer);
    let mut reader = link::reader(boot.reader);
    let hello = handshake(&mut reader, &sender, id)
        .await
        .map_err(|why| ConnectError::Other(format!("{}: {why}", ssh.label)))?;
    let link = Arc::new(Link {
        name: ssh.label.clone(),
        sender,
        guard: Mutex::new(Guard::new(id)),
        contexts: Mutex::default(),
        breach: Mutex::default(),
        dead: CancellationToken::new(),
    });
    // Reached through `parent`'s TCP stream, not started by its agent: not its child.
    let ctx = Context::new(id, parent, key, method, hello, link.clone(), false);
    link.add(ctx.clone());
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
async fn dispatch<R: AsyncRead + Unpin>(
    link: Arc<Link>,
    mut reader: LinkReader<R>,
    mut child: Child,
    writer: tokio::task::JoinHandle<std::io::Result<()>>,
    master: Weak<Master>,
) {
    loop {
        let frame = tokio::select! {
            f = reader.next() => f,
            // The writer failing means the pipe to ssh broke: the link is gone too.
            _ = link.sender.closed() => None,
        };
        let breach = match frame {
            Some(Ok(frame)) => match route_up(&link, &master, frame) {
                Ok(()) => continue,
                Err(why) => why.to_string(),
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
        *link.breach.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        break;
    }
    // Whatever the agent still writes goes nowhere now.
    drop(reader);
    link.dead.cancel();
    let breach = link
        .breach
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let contexts: Vec<Arc<Context>> = link
        .contexts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .map(|(_, c)| c)
        .collect();
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

/// Hands one frame from the agent to whoever it is for, once it is clean and allowed.
fn route_up(link: &Link, master: &Weak<Master>, mut frame: Frame) -> Result<(), Violation> {
    untrusted::clean_message(&mut frame.msg);
    let verdict = link.guard().arrived(&mut frame)?;
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
                for waiter in link
                    .contexts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                {
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
        return Ok(());
    };
    match frame.msg {
        Message::Data { stream, fd } => {
            ctx.bytes_up
                .fetch_add(frame.data.len() as u64, Ordering::Relaxed);
            ctx.with_stream(stream, |e| e.output(fd, Input::Data(frame.data)));
        }
        Message::Eof { stream, fd } => ctx.with_stream(stream, |e| e.output(fd, Input::Eof)),
        Message::Credit { stream, bytes, .. } => ctx.with_stream(stream, |e| e.stdin.grant(bytes)),
        msg @ Message::Opened { stream, window, .. } => ctx.with_stream(stream, |e| {
            e.stdin.grant(window);
            let _ = e.events.send(msg);
        }),
        msg @ (Message::OpenFailed { stream, .. }
        | Message::Released { stream }
        | Message::Exit { stream, .. }) => ctx.with_stream(stream, |e| {
            let _ = e.events.send(msg);
        }),
        Message::NeedPassword { child, whose } => {
            ctx.spawn_event(child, SpawnEvent::NeedPassword(whose));
        }
        Message::Spawned { child, hello } => {
            if !ctx.spawn_event(child, SpawnEvent::Spawned(hello)) {
                // Its spawner gave up waiting: nobody will use it.
                tracing::warn!(
                    context = child,
                    "{}: a child started too late; stopping it",
                    ctx.name
                );
                let _ = link.send(Frame::new(child, Message::Shutdown));
            }
        }
        Message::SpawnFailed { child, error } => {
            ctx.spawn_event(child, SpawnEvent::Failed(error));
        }
        other => tracing::warn!(context = ctx.id, "ignoring {}", other.name()),
    }
    Ok(())
}

impl StreamEntry {
    fn output(&self, fd: Fd, input: Input) {
        let feed = match fd {
            Fd::Stdout => &self.stdout,
            Fd::Stderr => &self.stderr,
            Fd::Stdin => &None,
        };
        if let Some(feed) = feed {
            feed.send(input);
        }
    }
}

/// Closes the context after `idle` without streams or children, or at once when
/// draining and empty.
pub(crate) async fn watch_idle(ctx: Arc<Context>, idle: Duration) {
    let mut active = ctx.active.subscribe();
    loop {
        let busy = *active.borrow_and_update() > 0;
        if !busy && ctx.draining.load(Ordering::SeqCst) {
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
