//! A context as the master sees it: one agent, its link, and the streams open on it.
//!
//! A dispatcher task per context reads the link and hands each frame to the session that
//! owns its stream. Senders never block: the queues are bounded by flow control. When the
//! link ends, the dispatcher drops every stream's queue, which tells each waiting session
//! that its connection is gone, and removes the context from the registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncRead, BufReader};
use tokio::process::Child;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Master;
use super::key::ContextKey;
use crate::bootstrap::ssh::{ConnectError, SshCommand, bootstrap};
use crate::link::{self, LinkClosed, LinkReader, LinkSender};
use crate::proto::{
    ContextId, ContextStatus, Frame, Hello, MASTER, Message, OpenSpec, PROTOCOL_VERSION, StreamId,
};

/// How long an agent has to introduce itself once its ready marker arrived.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long ssh may take to exit after its agent was told to shut down.
const EXIT_GRACE: Duration = Duration::from_secs(3);

/// One agent and its link.
#[derive(Debug)]
pub struct Context {
    pub id: ContextId,
    pub parent: ContextId,
    pub key: ContextKey,
    /// `user@host:port` as addressed, for messages.
    pub name: String,
    pub method: &'static str,
    pub agent: Hello,
    link: LinkSender,
    streams: Mutex<HashMap<StreamId, mpsc::UnboundedSender<Frame>>>,
    /// Number of open streams; the idle watcher follows it.
    active: watch::Sender<usize>,
    total_streams: AtomicU64,
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    opened: Instant,
    last_used: Mutex<Instant>,
    /// `ssh -O stop`: take no new streams, close when the last one ends.
    draining: AtomicBool,
    /// Cancelled once the link is gone.
    pub dead: CancellationToken,
}

/// A stream's end in the master: frames from the agent for this stream arrive on `rx`.
/// Dropping it forgets the stream.
#[derive(Debug)]
pub struct StreamPort {
    pub id: StreamId,
    pub rx: mpsc::UnboundedReceiver<Frame>,
    ctx: Arc<Context>,
}

impl Drop for StreamPort {
    fn drop(&mut self) {
        self.ctx.forget(self.id);
    }
}

impl Context {
    /// Whether new streams may be opened here.
    pub fn usable(&self) -> bool {
        !self.dead.is_cancelled() && !self.draining.load(Ordering::SeqCst)
    }

    /// Registers stream `id` and asks the agent to start it.
    pub fn open_stream(
        self: &Arc<Self>,
        id: StreamId,
        spec: OpenSpec,
    ) -> Result<StreamPort, LinkClosed> {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
            if self.dead.is_cancelled() {
                return Err(LinkClosed);
            }
            streams.insert(id, tx);
            self.active.send_replace(streams.len());
        }
        self.total_streams.fetch_add(1, Ordering::Relaxed);
        self.touch();
        let port = StreamPort {
            id,
            rx,
            ctx: self.clone(),
        };
        self.send(Message::Open {
            stream: id,
            spec: Box::new(spec),
        })?;
        Ok(port)
    }

    fn forget(&self, id: StreamId) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if streams.remove(&id).is_some() {
            self.active.send_replace(streams.len());
        }
        drop(streams);
        self.touch();
    }

    /// Sends a message to the agent.
    pub fn send(&self, msg: Message) -> Result<(), LinkClosed> {
        self.link.send(Frame::new(self.id, msg))
    }

    /// Sends stdin bytes to the agent.
    pub fn send_data(&self, msg: Message, data: bytes::Bytes) -> Result<(), LinkClosed> {
        self.bytes_down
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.link.send(Frame::with_data(self.id, msg, data))
    }

    /// Asks the agent to stop everything and exit; the dispatcher cleans up after it.
    /// From here on the registry hands out a new context for the same key.
    pub fn shutdown(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let _ = self.send(Message::Shutdown);
    }

    /// `ssh -O stop`: finish the open streams, accept no new ones.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.active.send_modify(|_| {});
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub fn status(&self) -> ContextStatus {
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
            open_streams: *self.active.borrow() as u32,
            total_streams: self.total_streams.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
        }
    }
}

/// Connects a new context over ssh: bootstrap, hello exchange, then the dispatcher.
pub async fn connect_ssh(
    master: &Arc<Master>,
    id: ContextId,
    key: ContextKey,
    ssh: SshCommand,
) -> Result<Arc<Context>, ConnectError> {
    let boot = bootstrap(&ssh, &master.image, master.config.connect_timeout).await?;
    tracing::info!(
        host = %ssh.label,
        "agent started ({})",
        if boot.uploaded { "uploaded" } else { "cached" }
    );
    let (link, writer) = link::spawn_writer(boot.writer);
    let mut reader = boot.reader;
    let _ = link.send(Frame::new(
        id,
        Message::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").into(),
            ctx: id,
            pid: std::process::id(),
            user: crate::sys::user::Account::current().name,
            hostname: crate::sys::user::hostname(),
        }),
    ));
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, reader.next()).await {
        Ok(Some(Ok(Frame {
            msg: Message::Hello(h),
            ..
        }))) if h.protocol == PROTOCOL_VERSION => h,
        Ok(Some(Ok(Frame {
            msg: Message::Hello(h),
            ..
        }))) => {
            return Err(ConnectError::CannotServe(format!(
                "{}: the agent speaks protocol {} (mitossh {}), the master {}",
                ssh.label, h.protocol, h.version, PROTOCOL_VERSION
            )));
        }
        other => {
            let why = match other {
                Err(_) => "timed out".to_string(),
                Ok(None) => boot
                    .stderr
                    .last()
                    .unwrap_or_else(|| "the connection closed".into()),
                Ok(Some(Err(e))) => e.to_string(),
                Ok(Some(Ok(f))) => format!("unexpected {:?}", f.msg),
            };
            return Err(ConnectError::Other(format!(
                "{}: agent handshake failed: {why}",
                ssh.label
            )));
        }
    };
    let (active, _) = watch::channel(0);
    let ctx = Arc::new(Context {
        id,
        parent: MASTER,
        key,
        name: ssh.label.clone(),
        method: "ssh",
        agent: hello,
        link,
        streams: Mutex::new(HashMap::new()),
        active,
        total_streams: AtomicU64::new(0),
        bytes_down: AtomicU64::new(0),
        bytes_up: AtomicU64::new(0),
        opened: Instant::now(),
        last_used: Mutex::new(Instant::now()),
        draining: AtomicBool::new(false),
        dead: CancellationToken::new(),
    });
    master.tasks.spawn(dispatch(
        ctx.clone(),
        reader,
        boot.child,
        writer,
        Arc::downgrade(master),
    ));
    tokio::spawn(watch_idle(ctx.clone(), master.config.idle_timeout));
    Ok(ctx)
}

/// Routes frames from the agent to their streams until the link ends, then cleans up.
async fn dispatch<R: AsyncRead + Unpin>(
    ctx: Arc<Context>,
    mut reader: LinkReader<BufReader<R>>,
    mut child: Child,
    writer: tokio::task::JoinHandle<std::io::Result<()>>,
    master: Weak<Master>,
) {
    loop {
        let frame = tokio::select! {
            f = reader.next() => f,
            // The writer failing means the pipe to ssh broke: the link is gone too.
            _ = ctx.link.closed() => None,
        };
        match frame {
            Some(Ok(frame)) => route_up(&ctx, frame),
            Some(Err(e)) => {
                tracing::error!(host = %ctx.name, "dropping the link: {e}");
                break;
            }
            None => break,
        }
    }
    ctx.dead.cancel();
    let orphaned = std::mem::take(&mut *ctx.streams.lock().unwrap_or_else(|p| p.into_inner()));
    if !orphaned.is_empty() {
        tracing::warn!(host = %ctx.name, "link lost with {} open streams", orphaned.len());
    }
    drop(orphaned);
    if let Some(master) = master.upgrade() {
        master.registry.remove(&ctx);
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
    tracing::info!(host = %ctx.name, "context {} closed", ctx.id);
}

fn route_up(ctx: &Context, frame: Frame) {
    let stream = match &frame.msg {
        Message::Data { stream, .. } => {
            ctx.bytes_up
                .fetch_add(frame.data.len() as u64, Ordering::Relaxed);
            *stream
        }
        Message::Opened { stream, .. }
        | Message::OpenFailed { stream, .. }
        | Message::Exit { stream, .. }
        | Message::Eof { stream, .. }
        | Message::Credit { stream, .. } => *stream,
        other => {
            tracing::warn!(host = %ctx.name, "ignoring unexpected {other:?} from the agent");
            return;
        }
    };
    let streams = ctx.streams.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tx) = streams.get(&stream) {
        let _ = tx.send(frame);
    }
}

/// Closes the context after `idle` without streams, or at once when draining and empty.
async fn watch_idle(ctx: Arc<Context>, idle: Duration) {
    let mut active = ctx.active.subscribe();
    loop {
        let open = *active.borrow_and_update();
        if open == 0 && ctx.draining.load(Ordering::SeqCst) {
            ctx.shutdown();
            return;
        }
        if open == 0 {
            tokio::select! {
                _ = tokio::time::sleep(idle) => {
                    tracing::info!(host = %ctx.name, "closing after {}s idle", idle.as_secs());
                    ctx.shutdown();
                    return;
                }
                r = active.changed() => if r.is_err() { return },
                _ = ctx.dead.cancelled() => return,
            }
        } else {
            tokio::select! {
                r = active.changed() => if r.is_err() { return },
                _ = ctx.dead.cancelled() => return,
            }
        }
    }
}
