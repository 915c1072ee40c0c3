//! A link's dispatcher: reads frames from the agent, judges each on arrival, and hands it
//! to its context; when the link ends, every context on it dies.

use std::sync::{Arc, Weak};

use super::{Context, EXIT_GRACE, Link, SpawnEvent, lock};
use crate::guard::{Verdict, Violation};
use crate::link::inbound::{Incoming, LinkIn};
use crate::master::Master;
use crate::proto::{Fd, Frame, FrameError, Message, StreamId};
use crate::pump::{DeliverError, Input};
use crate::sys::vfork::Child;
use crate::untrusted;

/// Routes frames from the link to their contexts until it ends, then cleans up.
pub(super) async fn dispatch(
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
