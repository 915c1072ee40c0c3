//! The master's contexts, by key and by id.
//!
//! The first request for a key starts a connection attempt as a task of its own; requests
//! arriving while it runs wait for the same attempt, so fifty simultaneous first calls
//! make one ssh connection. A failed attempt is forgotten at once, so the next request
//! tries again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::Master;
use super::context::{self, Context};
use super::key::{ContextKey, ssh_command};
use crate::bootstrap::ssh::ConnectError;
use crate::proto::{ContextId, Target};

type Attempt = Shared<BoxFuture<'static, Result<Arc<Context>, ConnectError>>>;

enum Entry {
    Connecting(ContextId, Attempt),
    Ready(Arc<Context>),
}

/// All contexts of a master.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<HashMap<ContextKey, Entry>>,
    next_id: AtomicU32,
}

impl Registry {
    /// The context for `target`, connecting if there is none yet.
    pub async fn get_or_connect(
        &self,
        master: &Arc<Master>,
        target: &Target,
    ) -> Result<Arc<Context>, ConnectError> {
        let key = ContextKey::for_target(target);
        let (id, attempt) = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            match entries.get(&key) {
                Some(Entry::Ready(ctx)) if ctx.usable() => return Ok(ctx.clone()),
                Some(Entry::Connecting(id, attempt)) => (*id, attempt.clone()),
                _ => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
                    let ssh = ssh_command(&master.ssh, target, &key);
                    let task = tokio::spawn({
                        let master = master.clone();
                        let key = key.clone();
                        async move { context::connect_ssh(&master, id, key, ssh).await }
                    });
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
            _ if ours => {
                entries.remove(&key);
            }
            _ => {}
        }
        result
    }

    /// The live context for `target`, if any; never connects.
    pub fn find(&self, target: &Target) -> Option<Arc<Context>> {
        let key = ContextKey::for_target(target);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&key) {
            Some(Entry::Ready(ctx)) if !ctx.dead.is_cancelled() => Some(ctx.clone()),
            _ => None,
        }
    }

    /// Forgets `ctx` (its link ended).
    pub fn remove(&self, ctx: &Context) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(entries.get(&ctx.key), Some(Entry::Ready(c)) if c.id == ctx.id) {
            entries.remove(&ctx.key);
        }
    }

    /// Every connected context.
    pub fn contexts(&self) -> Vec<Arc<Context>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = entries
            .values()
            .filter_map(|e| match e {
                Entry::Ready(ctx) => Some(ctx.clone()),
                Entry::Connecting(..) => None,
            })
            .collect();
        all.sort_by_key(|c| c.id);
        all
    }
}
