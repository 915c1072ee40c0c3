//! The master's contexts, by key, and how a missing one is made.
//!
//! A target's context is reached through a path (see [`super::key`]); each context on it is
//! looked up and, if missing, made from the one before. The first request for a key starts
//! the attempt as a task of its own; requests arriving while it runs wait for the same
//! attempt, so fifty simultaneous first calls make one connection. A failed attempt is
//! forgotten at once, so the next request tries again.
//!
//! Each attempt is an [`Attempt`]: every request waiting for it joins it, so whoever of
//! them can answer is asked the attempt's questions, and all of them see what its ssh said.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::Master;
use super::attempt::Attempt;
use super::context::{self, Context, EarlyOpen, SpawnEvent};
use super::key::{self, ContextKey, How};
use super::prompt::Prompter;
use crate::bootstrap::ssh::{ConnectError, ConnectHooks};
use crate::proto::{Become, ContextId, MASTER, Message, Method, PromptKind, SshHop, Target};
use crate::sshargs;

type Outcome = Shared<BoxFuture<'static, Result<Arc<Context>, ConnectError>>>;

/// An attempt under way: its outcome, and what its waiters share.
struct Pending {
    id: ContextId,
    outcome: Outcome,
    attempt: Arc<Attempt>,
}

enum Entry {
    Connecting(Pending),
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
pub(crate) struct Registry {
    entries: Mutex<HashMap<ContextKey, Entry>>,
    next_id: AtomicU32,
    /// Attempts whose ssh may run mitossh's askpass helper, by the token it carries.
    askpass: Mutex<HashMap<String, Weak<Attempt>>>,
}

/// An askpass token the master answers for, until this drops.
struct AskpassToken<'a> {
    registry: &'a Registry,
    token: &'a str,
}

impl Drop for AskpassToken<'_> {
    fn drop(&mut self) {
        let mut askpass = (self.registry.askpass.lock()).unwrap_or_else(|p| p.into_inner());
        askpass.remove(self.token);
    }
}

/// A context found or made for a request.
pub(crate) struct Found {
    pub ctx: Arc<Context>,
    /// Whether the request waited for a new connection (else it reused one).
    pub waited: bool,
}

impl Registry {
    /// The context for `target`, making whatever is missing on the way. `prompter` asks
    /// the questions (the terminal of the command that needs the connection). `early`:
    /// the caller's first stream, opened with the connection if this call makes the
    /// target's ssh connection (its port then arrives on `early.port`).
    pub(crate) async fn get_or_connect(
        &self,
        master: &Arc<Master>,
        target: &Target,
        prompter: &Prompter,
        mut early: Option<EarlyOpen>,
    ) -> Result<Found, ConnectError> {
        let mut parent: Option<Arc<Context>> = None;
        let mut waited = false;
        let plan = key::plan(target);
        let last = plan.len().saturating_sub(1);
        for (i, (key, how)) in plan.into_iter().enumerate() {
            let early = if i == last { early.take() } else { None };
            let (ctx, new) = self.step(master, key, how, parent, prompter, early).await?;
            waited |= new;
            parent = Some(ctx);
        }
        let ctx =
            parent.ok_or_else(|| ConnectError::Other("mitossh: no destination given".into()))?;
        Ok(Found { ctx, waited })
    }

    /// The attempt whose ssh runs the askpass helper with `token`.
    pub(crate) fn askpass_attempt(&self, token: &str) -> Option<Arc<Attempt>> {
        let askpass = self.askpass.lock().unwrap_or_else(|p| p.into_inner());
        askpass.get(token).and_then(Weak::upgrade)
    }

    /// Lets the askpass helper run with `token` reach `attempt` until the returned guard
    /// drops: ssh asks nothing once it is connected, and a table of only the handshakes
    /// under way stays small on a fleet of a thousand hosts.
    fn expect_askpass<'a>(&'a self, token: &'a str, attempt: &Arc<Attempt>) -> AskpassToken<'a> {
        let mut askpass = self.askpass.lock().unwrap_or_else(|p| p.into_inner());
        askpass.insert(token.to_string(), Arc::downgrade(attempt));
        AskpassToken {
            registry: self,
            token,
        }
    }

    /// One context on the path: found, being made, or made now. Also says whether the
    /// request waited for an attempt.
    async fn step(
        &self,
        master: &Arc<Master>,
        key: ContextKey,
        how: How,
        parent: Option<Arc<Context>>,
        prompter: &Prompter,
        early: Option<EarlyOpen>,
    ) -> Result<(Arc<Context>, bool), ConnectError> {
        let (id, outcome) = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            match entries.get(&key) {
                Some(Entry::Ready(ctx)) if ctx.usable() => return Ok((ctx.clone(), false)),
                Some(Entry::Connecting(pending)) => {
                    pending.attempt.join(prompter);
                    (pending.id, pending.outcome.clone())
                }
                Some(Entry::CannotServe(e, at)) if at.elapsed() < CANNOT_SERVE_MEMORY => {
                    return Err(e.clone());
                }
                _ => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
                    let attempt = Attempt::new(is_verbose(&how));
                    attempt.join(prompter);
                    let batch = !prompter.can_prompt();
                    let task = tokio::spawn(make(
                        master.clone(),
                        id,
                        key.clone(),
                        how,
                        parent,
                        attempt.clone(),
                        Starter { batch, early },
                    ));
                    let outcome = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(ConnectError::Other(format!(
                                "connection attempt failed: {e}"
                            )))
                        })
                    }
                    .boxed()
                    .shared();
                    let pending = Pending {
                        id,
                        outcome: outcome.clone(),
                        attempt,
                    };
                    entries.insert(key.clone(), Entry::Connecting(pending));
                    (id, outcome)
                }
            }
        };
        let result = outcome.await;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let ours = matches!(entries.get(&key), Some(Entry::Connecting(p)) if p.id == id);
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
        result.map(|ctx| (ctx, true))
    }

    /// The live context for `target`, if any; never connects.
    pub(crate) fn find(&self, target: &Target) -> Option<Arc<Context>> {
        let key = key::key_of(target)?;
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&key) {
            Some(Entry::Ready(ctx)) if !ctx.dead.is_cancelled() => Some(ctx.clone()),
            _ => None,
        }
    }

    /// The live context for `target` and every live context started from it (sudo on
    /// that host, hosts reached through it); never connects.
    pub(crate) fn find_with_descendants(&self, target: &Target) -> Vec<Arc<Context>> {
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
    pub(crate) fn by_id(&self, id: ContextId) -> Option<Arc<Context>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.values().find_map(|e| match e {
            Entry::Ready(ctx) if ctx.id == id && !ctx.dead.is_cancelled() => Some(ctx.clone()),
            _ => None,
        })
    }

    /// Forgets `ctx` (it is gone).
    pub(crate) fn remove(&self, ctx: &Context) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(entries.get(&ctx.key), Some(Entry::Ready(c)) if c.id == ctx.id) {
            entries.remove(&ctx.key);
        }
    }

    /// Every connected context, by id.
    pub(crate) fn contexts(&self) -> Vec<Arc<Context>> {
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

/// Whether ssh's output should be shown as it comes: the first caller asked for `-v`.
fn is_verbose(how: &How) -> bool {
    let hop = match how {
        How::Ssh(hop) => hop,
        How::SshOnHop(_) | How::Become(_) | How::Local | How::Exec(_) => return false,
    };
    let mut words: Vec<std::ffi::OsString> = hop
        .ssh_args
        .iter()
        .map(|w| std::ffi::OsStr::from_bytes(w).to_os_string())
        .collect();
    words.extend(["--".into(), "h".into()]);
    sshargs::parse(&words).is_ok_and(|inv| inv.count('v') > 0)
}

/// What the request that starts an attempt brings to it.
struct Starter {
    /// It cannot be asked anything.
    batch: bool,
    /// Its first stream, to open with the connection.
    early: Option<EarlyOpen>,
}

/// Makes the context `key` from `parent` as `how` says, and watches it for idleness.
async fn make(
    master: Arc<Master>,
    id: ContextId,
    key: ContextKey,
    how: How,
    parent: Option<Arc<Context>>,
    attempt: Arc<Attempt>,
    Starter { batch, early }: Starter,
) -> Result<Arc<Context>, ConnectError> {
    let label = key.label();
    let name = key.path_label();
    let made = match (how, parent) {
        (How::Ssh(hop), parent) => {
            let ssh = Ssh {
                hop: &hop,
                label,
                batch,
                early,
            };
            connect_ssh(&master, id, key, ssh, parent, &attempt).await
        }
        (How::SshOnHop(hop), Some(parent)) => {
            // Nobody can answer an ssh on another host: it must not ask (or guess).
            let args = key::ssh_args(&hop, None, true)
                .iter()
                .map(|a| a.as_bytes().to_vec())
                .collect();
            let method = Method::Ssh {
                args,
                label: label.clone(),
            };
            // The handshake's CPU is the gateway's: its own window, not the master's.
            let _slot = parent.spawn_window(master.connects.size).enter().await;
            spawn(&parent, id, key, method, "ssh", &attempt).await
        }
        (How::Become(role), Some(parent)) => {
            let method = Method::Become(role.clone());
            spawn(&parent, id, key, method, role.method.name(), &attempt).await
        }
        (How::Exec(argv), Some(parent)) => {
            let method = Method::Exec {
                argv,
                label: label.clone(),
            };
            spawn(&parent, id, key, method, "exec", &attempt).await
        }
        (How::Local, None) => context::connect_local(&master, id, key).await,
        (How::Local, Some(_)) | (_, None) => Err(ConnectError::Other(
            "mitossh: a path must start with an ssh hop or the local host".into(),
        )),
    };
    // What ssh said goes to the callers now, unless they are about to run the real ssh,
    // which will say it again.
    if !matches!(made, Err(ConnectError::CannotServe(_))) {
        attempt.show();
    }
    match &made {
        Ok(_) => master.connects.succeeded(),
        Err(e) => master.connects.failed(name, e),
    }
    let ctx = made?;
    tokio::spawn(context::watch_idle(ctx.clone(), master.config.idle_timeout));
    Ok(ctx)
}

/// What the master's own ssh to a hop is made of.
struct Ssh<'a> {
    hop: &'a SshHop,
    label: String,
    /// Nobody can be asked anything.
    batch: bool,
    early: Option<EarlyOpen>,
}

/// The master's own ssh to `hop`: directly, or through a TCP stream `parent`'s agent opens.
async fn connect_ssh(
    master: &Arc<Master>,
    id: ContextId,
    key: ContextKey,
    Ssh {
        hop,
        label,
        batch,
        early,
    }: Ssh<'_>,
    parent: Option<Arc<Context>>,
    attempt: &Arc<Attempt>,
) -> Result<Arc<Context>, ConnectError> {
    let exe = std::env::current_exe()
        .map_err(|e| ConnectError::Other(format!("mitossh: cannot find itself: {e}")))?;
    let socket = master.config.socket.as_path();
    let proxy = parent.as_ref().map(|p| (exe.as_path(), socket, p.id));
    let ssh = key::ssh_command(&master.ssh, hop, label, proxy, batch);
    let token = crate::bootstrap::ssh::random_token();
    let hooks = ConnectHooks {
        say: {
            let attempt = attempt.clone();
            Box::new(move |line| attempt.say(line))
        },
        flush: attempt.flush_requests(),
        abandoned: attempt.abandoned.clone(),
        expired: {
            let attempt = attempt.clone();
            let timeout = master.config.connect_timeout;
            async move { attempt.expired(timeout).await }.boxed()
        },
        env: crate::askpass::environment(&exe, socket, &token),
    };
    let parent_id = parent.map_or(MASTER, |p| p.id);
    // Behind those who came first; the connect timeout starts once through.
    let _slot = master.connects.window.enter().await;
    let _askpass = master.registry.expect_askpass(&token, attempt);
    context::connect_ssh(master, id, key, ssh, parent_id, hooks, early).await
}

/// What the user is asked: where, to become whom, and whose password it is (sudo wants
/// the user's own by default, su the target's), as the tool's own prompt says.
fn password_prompt(method: &str, role: &str, host: &str, whose: &str) -> String {
    // `whose` comes from the agent: one short line of printable text only.
    let whose: String = whose.chars().filter(|c| !c.is_control()).take(64).collect();
    format!("[mitossh] {method} to {role} on {host}: password for {whose}: ")
}

/// Starts a child below `parent` and sees the password dialogue through.
async fn spawn(
    parent: &Arc<Context>,
    id: ContextId,
    key: ContextKey,
    method: Method,
    method_name: &'static str,
    attempt: &Attempt,
) -> Result<Arc<Context>, ConnectError> {
    let host = key.host_label();
    let role = match &method {
        Method::Become(Become { user, .. }) => user.clone(),
        Method::Ssh { label, .. } | Method::Exec { label, .. } => label.clone(),
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
            Some(SpawnEvent::NeedPassword(whose)) => {
                // A password that worked before on this host, else ask the user.
                let secret = match (tried.is_none(), parent.known_password(method_name, &role)) {
                    (true, Some(known)) => Some(known),
                    _ => {
                        let text = password_prompt(method_name, &role, &host, &whose);
                        attempt.ask(&text, PromptKind::Become).await
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
