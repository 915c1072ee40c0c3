//! The master's cache of what the user's ssh configuration makes of a destination (see
//! [`crate::sshconfig`]): answers are reused while the files they came from are unchanged,
//! and never when those files run commands.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::Semaphore;

use crate::proto::{HopConfig, SshHop, Target, ViaMode};
use crate::sshconfig::{self, Sources};

/// More distinct destinations than this and the cache starts afresh.
const MAX_ENTRIES: usize = 4096;

/// At most this many `ssh -G` at once: a plan of a thousand hosts would otherwise start a
/// thousand of them together (and hold three descriptors for each).
const RESOLVE_WINDOW: usize = 16;

type Resolving = Shared<BoxFuture<'static, Result<HopConfig, String>>>;

pub(crate) struct Resolutions {
    /// Keyed by the destination as given (its `config` empty). A mutex: lookups are short
    /// and never held across an await.
    entries: Mutex<HashMap<SshHop, (Sources, HopConfig)>>,
    /// `ssh -G` under way, by destination: requests for the same one share it.
    resolving: Mutex<HashMap<SshHop, Resolving>>,
    permits: Arc<Semaphore>,
    /// The user's home from the password database, which ssh reads `~/.ssh` from.
    home: PathBuf,
}

impl Resolutions {
    pub(crate) fn new(home: PathBuf) -> Resolutions {
        Resolutions {
            entries: Mutex::default(),
            resolving: Mutex::default(),
            permits: Arc::new(Semaphore::new(RESOLVE_WINDOW)),
            home,
        }
    }

    /// Runs `ssh -G` for `hop` here, or waits for the one already running for it.
    async fn resolve(&self, real_ssh: &Path, hop: &SshHop) -> Result<HopConfig, String> {
        let key = Resolutions::key(hop);
        let resolving = {
            let mut resolving = self.resolving.lock().unwrap_or_else(|p| p.into_inner());
            resolving
                .entry(key.clone())
                .or_insert_with(|| {
                    let (ssh, hop, permits) =
                        (real_ssh.to_path_buf(), hop.clone(), self.permits.clone());
                    async move {
                        let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
                        sshconfig::resolve_async(&ssh, &hop).await.map(|d| d.config)
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        let result = resolving.await;
        self.resolving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        result
    }

    fn key(hop: &SshHop) -> SshHop {
        SshHop {
            config: None,
            ..hop.clone()
        }
    }

    /// The cached answer for `hop`, if it is still true.
    pub(crate) fn lookup(&self, hop: &SshHop) -> Option<HopConfig> {
        let key = Resolutions::key(hop);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&key) {
            Some((sources, config)) if sources.unchanged() => Some(config.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers `config` as the answer for `hop`, unless it may change from call to call.
    pub(crate) fn store(&self, hop: &SshHop, config: &HopConfig) {
        let sources = Sources::of(&hop.ssh_args, &self.home);
        if sources.volatile {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(Resolutions::key(hop), (sources, config.clone()));
    }

    /// Gives every hop the master's own ssh connects to its resolved configuration: the
    /// caller's (stored for next time), a cached one, or `ssh -G` run here. Hops run by an
    /// agent on another host (`--via-mode ssh`) follow that host's configuration and stay
    /// as given; so does a hop whose `ssh -G` fails (the connection will say why).
    pub(crate) async fn complete(&self, real_ssh: &Path, target: &mut Target) {
        let via = target.via;
        for (i, hop) in target.hops.iter_mut().enumerate() {
            if i > 0 && via == ViaMode::Ssh {
                continue;
            }
            if let Some(config) = &hop.config {
                // The caller ran `ssh -G` because the cache had nothing (still) true.
                if self.lookup(hop).is_none() {
                    self.store(hop, config);
                }
                continue;
            }
            if let Some(config) = self.lookup(hop) {
                hop.config = Some(config);
                continue;
            }
            match self.resolve(real_ssh, hop).await {
                Ok(config) => {
                    self.store(hop, &config);
                    hop.config = Some(config);
                }
                Err(e) => tracing::debug!("ssh -G {}: {e}", String::from_utf8_lossy(&hop.host)),
            }
        }
    }
}
