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
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::key::ContextKey;
use super::window::Window;
use crate::credit::CreditGate;
use crate::guard::Guard;
use crate::link::{LinkClosed, LinkSender, Staged};
use crate::proto::flow::DEFAULT_WINDOW;
use crate::proto::{
    ContextId, ContextStatus, Fd, Frame, Hello, Message, OpenSpec, Secret, StreamId,
};
use crate::pump::{self, Feed, Inbox};

mod connect;
mod dispatch;

pub(crate) use connect::{EarlyOpen, connect_local, connect_ssh};

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
