//! The master's contexts, by key, and how a missing one is made.
//!
//! A target's context is reached through a path (see [`super::key`]); each context on it is
//! looked up and, if missing, made from the one before. The first request for a key starts
//! the attempt as a task of its own; requests arriving while it runs wait for the same
//! attempt, so fifty simultaneous first calls make one connection. A failed attempt is
//! forgotten at once, so the next request tries again.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::Master;
use super::context::{self, Context, SpawnEvent};
use super::key::{self, ContextKey, How};
use super::prompt::Prompter;
use crate::bootstrap::ssh::ConnectError;
use crate::proto::{Become, ContextId, MASTER, Message, Method, Target};

type Attempt = Shared<BoxFuture<'static, Result<Arc<Context>, ConnectError>>>;

enum Entry {
    Connecting(ContextId, Attempt),
    Ready(Arc<Context>),
    /// ssh works but an agent cannot run there (a restricted shell, say): shims use the
    /// real ssh for a while instead of trying again on every call.
    CannotServe(ConnectError, Instant),
}

/// How long an agent may take to say how starting a child goes: its own limit for starting
/// one (sudo, or ssh from the hop), then for the child's hello, and some slack.
const SPAWN_ANSWER_TIMEOUT: Duration = Duration::from_secs(
    crate::method::SPAWN_TIMEOUT.as_secs() + crate::bootstrap::HELLO_TIMEOUT.as_secs() + 20,
);

/// How long "cannot serve this host" is remembered.
const CANNOT_SERVE_MEMORY: Duration = Duration::from_secs(60);

/// All contexts of a master.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<HashMap<ContextKey, Entry>>,
    next_id: AtomicU32,
}

impl Registry {
    /// The context for `target`, making whatever is missing on the way. `prompter` asks
    /// for passwords (the terminal of the command that needs them).
    pub async fn get_or_connect(
        &self,
        master: &Arc<Master>,
        target: &Target,
        prompter: &Prompter,
    ) -> Result<Arc<Context>, ConnectError> {
        let mut parent: Option<Arc<Context>> = None;
        for (key, how) in key::plan(target) {
            parent = Some(self.step(master, key, how, parent, prompter).await?);
        }
        parent.ok_or_else(|| ConnectError::Other("mitossh: no destination given".into()))
    }

    /// One context on the path: found, being made, or made now.
    async fn step(
        &self,
        master: &Arc<Master>,
        key: ContextKey,
        how: How,
        parent: Option<Arc<Context>>,
        prompter: &Prompter,
    ) -> Result<Arc<Context>, ConnectError> {
        let (id, attempt) = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            match entries.get(&key) {
                Some(Entry::Ready(ctx)) if ctx.usable() => return Ok(ctx.clone()),
                Some(Entry::Connecting(id, attempt)) => (*id, attempt.clone()),
                Some(Entry::CannotServe(e, at)) if at.elapsed() < CANNOT_SERVE_MEMORY => {
                    return Err(e.clone());
                }
                _ => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
                    let task = tokio::spawn(make(
                        master.clone(),
                        id,
                        key.clone(),
                        how,
                        parent,
                        prompter.clone(),
                    ));
                    let attempt = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(ConnectError::Other(format!(
                                "connection attempt failed: {e}"
                            )))
                        })
                    }
                    .boxed()
                    .shared();
                    entries.insert(key.clone(), Entry::Connecting(id, attempt.clone()));
                    (id, attempt)
                }
            }
        };
        let result = attempt.await;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let ours = matches!(entries.get(&key), Some(Entry::Connecting(i, _)) if *i == id);
        match &result {
            Ok(ctx) if ours && !ctx.dead.is_cancelled() => {
                entries.insert(key, Entry::Ready(ctx.clone()));
            }
            Err(e @ ConnectError::CannotServe(_)) if ours => {
                entries.insert(key, Entry::CannotServe(e.clone(), Instant::now()));
            }
            _ if ours => {
                entries.remove(&key);
            }
            _ => {}
        }
        result
    }

    /// The live context for `target`, if any; never connects.
    pub fn find(&self, target: &Target) -> Option<Arc<Context>> {
        let key = key::key_of(target)?;
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&key) {
            Some(Entry::Ready(ctx)) if !ctx.dead.is_cancelled() => Some(ctx.clone()),
            _ => None,
        }
    }

    /// The live context for `target` and every live context started from it (sudo on
    /// that host, hosts reached through it); never connects.
    pub fn find_with_descendants(&self, target: &Target) -> Vec<Arc<Context>> {
        let Some(key) = key::key_of(target) else {
            return Vec::new();
        };
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Ready(ctx) if key.leads_to(k) && !ctx.dead.is_cancelled() => {
                    Some(ctx.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// The live context with id `id`.
    pub fn by_id(&self, id: ContextId) -> Option<Arc<Context>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.values().find_map(|e| match e {
            Entry::Ready(ctx) if ctx.id == id && !ctx.dead.is_cancelled() => Some(ctx.clone()),
            _ => None,
        })
    }

    /// Forgets `ctx` (it is gone).
    pub fn remove(&self, ctx: &Context) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(entries.get(&ctx.key), Some(Entry::Ready(c)) if c.id == ctx.id) {
            entries.remove(&ctx.key);
        }
    }

    /// Every connected context, by id.
    pub fn contexts(&self) -> Vec<Arc<Context>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = entries
            .values()
            .filter_map(|e| match e {
                Entry::Ready(ctx) => Some(ctx.clone()),
                Entry::Connecting(..) | Entry::CannotServe(..) => None,
            })
            .collect();
        all.sort_by_key(|c| c.id);
        all
    }
}

/// Makes the context `key` from `parent` as `how` says, and watches it for idleness.
async fn make(
    master: Arc<Master>,
    id: ContextId,
    key: ContextKey,
    how: How,
    parent: Option<Arc<Context>>,
    prompter: Prompter,
) -> Result<Arc<Context>, ConnectError> {
    let label = key.label();
    let ctx = match (how, parent) {
        (How::Ssh(hop), None) => {
            let ssh = key::ssh_command(&master.ssh, &hop, label, None);
            context::connect_ssh(&master, id, key, ssh, MASTER).await?
        }
        (How::Ssh(hop), Some(parent)) => {
            // The master's own ssh, through a TCP stream `parent`'s agent opens.
            let exe = std::env::current_exe()
                .map_err(|e| ConnectError::Other(format!("mitossh: cannot find itself: {e}")))?;
            let proxy = (exe.as_path(), master.config.socket.as_path(), parent.id);
            let ssh = key::ssh_command(&master.ssh, &hop, label, Some(proxy));
            context::connect_ssh(&master, id, key, ssh, parent.id).await?
        }
        (How::SshOnHop(hop), Some(parent)) => {
            let args = key::ssh_args(&hop, None)
                .iter()
                .map(|a| a.as_bytes().to_vec())
                .collect();
            let method = Method::Ssh {
                args,
                label: label.clone(),
            };
            spawn(&parent, id, key, method, "ssh", &prompter).await?
        }
        (How::Become(role), Some(parent)) => {
            let method = Method::Become(role.clone());
            spawn(&parent, id, key, method, role.method.name(), &prompter).await?
        }
        (_, None) => {
            return Err(ConnectError::Other(
                "mitossh: a path must start with an ssh hop".into(),
            ));
        }
    };
    tokio::spawn(context::watch_idle(ctx.clone(), master.config.idle_timeout));
    Ok(ctx)
}

/// Starts a child below `parent` and sees the password dialogue through.
async fn spawn(
    parent: &Arc<Context>,
    id: ContextId,
    key: ContextKey,
    method: Method,
    method_name: &'static str,
    prompter: &Prompter,
) -> Result<Arc<Context>, ConnectError> {
    let host = key.host_label();
    let role = match &method {
        Method::Become(Become { user, .. }) => user.clone(),
        Method::Ssh { label, .. } => label.clone(),
    };
    let failed =
        |why: String| ConnectError::Other(format!("mitossh: {method_name} on {host}: {why}"));
    let mut events = parent
        .spawn(
            id,
            Message::Spawn {
                child: id,
                method: Box::new(method),
            },
        )
        .map_err(|_| failed("the connection to the host is gone".into()))?;
    let mut tried = None;
    loop {
        // The agent answers within its own limits (starting the tool, then its hello);
        // time spent asking the user is not spent here.
        let event = tokio::select! {
            e = tokio::time::timeout(SPAWN_ANSWER_TIMEOUT, events.recv()) => match e {
                Ok(e) => e,
                Err(_) => return Err(failed(format!(
                    "the agent did not answer within {}s",
                    SPAWN_ANSWER_TIMEOUT.as_secs()
                ))),
            },
            _ = parent.dead.cancelled() => None,
        };
        match event {
            Some(SpawnEvent::NeedPassword(_)) => {
                // A password that worked before on this host, else ask the user.
                let secret = match (tried.is_none(), parent.known_password(method_name, &role)) {
                    (true, Some(known)) => Some(known),
                    _ => {
                        prompter
                            .ask(format!(
                                "[mitossh] {method_name} password for {role} on {host}: "
                            ))
                            .await
                    }
                };
                tried = secret.clone();
                let _ = parent.send(Message::Password { child: id, secret });
            }
            Some(SpawnEvent::Spawned(hello)) => {
                if let Some(secret) = tried {
                    parent.remember_password(method_name, &role, Some(secret));
                }
                return Ok(parent.adopt(id, key, method_name, hello));
            }
            Some(SpawnEvent::Failed(why)) => {
                if tried.is_some() {
                    parent.remember_password(method_name, &role, None);
                }
                return Err(failed(why));
            }
            None => return Err(failed("the connection to the host is gone".into())),
        }
    }
}
