//! The agent's children: contexts it started (sudo, su, doas, ssh from here, an exec
//! prefix into a container or chroot) and the routes to every context below them.
//!
//! Frames from above for a context below go down the child link it lives behind. Frames
//! from a child link are untrusted (the child may run as another user, or on a host of
//! its own): each child link has a [`Guard`] that sees what went down and judges what
//! comes up, so a child speaks only for itself and the contexts below it, within the
//! credit it was given. A breach drops that child link, and only it. `Spawned` and
//! `ContextLost` messages that pass teach the routes, so a grandchild is reachable as soon
//! as its parent reports it. A child link that ends takes its whole subtree with it, and
//! each lost context is reported upward so that nobody waits on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};

use super::stream::Live;
use crate::guard::{Guard, Verdict};
use crate::link::{self, LinkReader, LinkSender};
use crate::method::{self, AskPassword, BoxReader, SpawnError};
use crate::proto::{ContextId, Frame, Message, Method, Secret};
use crate::route::{Hop, Routes};
use crate::sys::process::kill;

/// Names one child link of this agent.
pub(crate) type LinkId = u32;

/// What the tree's tasks report to the agent's loop.
pub(crate) enum TreeEvent {
    /// A child started and said hello.
    Up {
        child: ContextId,
        spawned: Box<method::Child>,
    },
    Failed {
        child: ContextId,
        error: SpawnError,
    },
    /// A child link ended; `breach` says why it was dropped, if it broke the protocol.
    Gone {
        link: LinkId,
        breach: Option<String>,
    },
}

struct ChildLink {
    sender: LinkSender,
    /// sudo, su, doas, ssh or the exec prefix: the process that holds the child.
    pid: Option<u32>,
    /// Shared with the task reading the link: what the child may say.
    guard: Arc<Mutex<Guard>>,
}

type Passwords = Arc<Mutex<HashMap<ContextId, oneshot::Sender<Option<Secret>>>>>;

/// The children of one agent.
pub(crate) struct Tree {
    routes: Arc<Mutex<Routes<LinkId>>>,
    links: HashMap<LinkId, ChildLink>,
    next_link: LinkId,
    up: LinkSender,
    events: mpsc::UnboundedSender<TreeEvent>,
    passwords: Passwords,
    live: Arc<Live>,
}

impl Tree {
    pub(crate) fn new(
        me: ContextId,
        up: LinkSender,
        events: mpsc::UnboundedSender<TreeEvent>,
        live: Arc<Live>,
    ) -> Tree {
        Tree {
            routes: Arc::new(Mutex::new(Routes::new(me))),
            links: HashMap::new(),
            next_link: 0,
            up,
            events,
            passwords: Arc::default(),
            live,
        }
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes<LinkId>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn me(&self) -> ContextId {
        self.routes().me()
    }

    pub(crate) fn set_me(&self, me: ContextId) {
        self.routes().set_me(me);
    }

    fn send_up(&self, msg: Message) {
        let _ = self.up.send(Frame::new(self.me(), msg));
    }

    /// Where a frame from above goes: returned if it is for this agent, passed down
    /// otherwise. A frame for a context that is not (or no longer) below is answered with
    /// `ContextLost`, so its sender stops waiting.
    pub(crate) fn route_down(&self, frame: Frame) -> Option<Frame> {
        let hop = self.routes().down(frame.ctx);
        match hop {
            Hop::Local => Some(frame),
            Hop::Down(link) => {
                if let Some(child) = self.links.get(&link) {
                    let mut guard = child.guard.lock().unwrap_or_else(|p| p.into_inner());
                    guard.sent(&frame);
                    let _ = child.sender.send(frame);
                }
                None
            }
            Hop::Unknown => {
                self.send_up(Message::ContextLost {
                    ctx: frame.ctx,
                    reason: "no such context below this agent".into(),
                });
                None
            }
        }
    }

    /// Starts child `child` by `method`, in the background. `shell`: this agent's command
    /// shell, which a sudo or doas child keeps.
    pub(crate) fn spawn(&self, child: ContextId, method: Method, shell: std::path::PathBuf) {
        let me = self.me();
        let up = self.up.clone();
        let passwords = self.passwords.clone();
        let events = self.events.clone();
        let ask: AskPassword = Box::new(move |whose| {
            let (tx, rx) = oneshot::channel();
            passwords
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(child, tx);
            let _ = up.send(Frame::new(me, Message::NeedPassword { child, whose }));
            Box::pin(async move { rx.await.ok().flatten() })
        });
        tokio::spawn(async move {
            let started = match method {
                Method::Become(role) => method::escalate::start(child, &role, &shell, ask).await,
                Method::Ssh { args, label } => method::ssh::start(child, &args, &label).await,
                Method::Exec { argv, label } => method::exec::start(child, &argv, &label).await,
            };
            let _ = events.send(match started {
                Ok(spawned) => TreeEvent::Up {
                    child,
                    spawned: Box::new(spawned),
                },
                Err(error) => TreeEvent::Failed { child, error },
            });
        });
    }

    /// The master's answer to a password question.
    pub(crate) fn password(&self, child: ContextId, secret: Option<Secret>) {
        let waiting = self
            .passwords
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&child);
        if let Some(tx) = waiting {
            let _ = tx.send(secret);
        }
    }

    pub(crate) fn event(&mut self, event: TreeEvent) {
        match event {
            TreeEvent::Up { child, spawned } => self.adopt(child, *spawned),
            TreeEvent::Failed { child, error } => self.send_up(Message::SpawnFailed {
                child,
                error: error.to_string(),
            }),
            TreeEvent::Gone { link, breach } => {
                let lost = self.routes().remove_link(&link);
                let reason = match &breach {
                    Some(why) => format!("its agent broke the protocol: {why}"),
                    None => "its agent exited".into(),
                };
                for ctx in lost {
                    self.send_up(Message::ContextLost {
                        ctx,
                        reason: reason.clone(),
                    });
                }
                // Dropping the sender closes our end of the link; the process that holds
                // a child that broke the rules gets no second chance either.
                if let Some(child) = self.links.remove(&link)
                    && breach.is_some()
                    && let Some(pid) = child.pid
                {
                    kill(pid, Signal::SIGKILL);
                }
            }
        }
    }

    fn adopt(&mut self, child: ContextId, spawned: method::Child) {
        let link = self.next_link;
        self.next_link += 1;
        let method::Child {
            reader,
            sender,
            mut process,
            hello,
            pipes,
        } = spawned;
        if !self.routes().add(child, link) {
            tracing::warn!("context {child} already exists; refusing a second one");
            return;
        }
        let pid = process.id();
        self.live.add();
        let live = self.live.clone();
        tokio::spawn(async move {
            let _ = process.wait().await;
            live.remove();
            drop(pipes); // the link's pipes are done with once its process is
        });
        let guard = Arc::new(Mutex::new(Guard::new(child)));
        tokio::spawn(forward_up(
            reader,
            link,
            guard.clone(),
            self.routes.clone(),
            self.up.clone(),
            self.events.clone(),
        ));
        self.links.insert(link, ChildLink { sender, pid, guard });
        self.send_up(Message::Spawned { child, hello });
    }

    /// Asks every child to stop: SIGTERM to the process holding it (sudo passes it on)
    /// and the end of its link.
    pub(crate) fn shutdown(&mut self, sig: Signal) {
        for child in self.links.values() {
            if let Some(pid) = child.pid {
                kill(pid, sig);
            }
        }
        if sig == Signal::SIGKILL {
            self.links.clear();
        }
    }
}

/// Passes a child's frames up, as far as its guard allows, and only while the link up
/// has room (a child cannot make this agent hold more than the link's queue).
async fn forward_up(
    mut reader: LinkReader<BoxReader>,
    link: LinkId,
    guard: Arc<Mutex<Guard>>,
    routes: Arc<Mutex<Routes<LinkId>>>,
    up: LinkSender,
    events: mpsc::UnboundedSender<TreeEvent>,
) {
    let mut breach = None;
    loop {
        up.ready().await;
        link::trim(&mut reader);
        let mut frame = match reader.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                breach = Some(e.to_string());
                break;
            }
            None => break,
        };
        let verdict = guard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .arrived(&mut frame);
        match verdict {
            Err(why) => {
                breach = Some(why.to_string());
                break;
            }
            Ok(Verdict::Ignore) => continue,
            Ok(Verdict::Lost(gone)) => {
                let mut routes = routes.lock().unwrap_or_else(|p| p.into_inner());
                for ctx in gone {
                    routes.remove(ctx);
                }
            }
            Ok(Verdict::Pass) => {
                if let Message::Spawned { child, .. } = frame.msg {
                    let mut routes = routes.lock().unwrap_or_else(|p| p.into_inner());
                    if !routes.add(child, link) {
                        breach = Some(format!("context {child} already exists"));
                        break;
                    }
                }
            }
        }
        if up.send(frame).is_err() {
            break;
        }
    }
    if let Some(why) = &breach {
        eprintln!("mitossh agent: dropping the link to a child: {why}");
    }
    let _ = events.send(TreeEvent::Gone { link, breach });
}
