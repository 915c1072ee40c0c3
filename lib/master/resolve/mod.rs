//! The master's cache of what the user's ssh configuration makes of a destination (see
//! [`crate::sshconfig`]): answers are reused while the files they came from are unchanged,
//! and never when those files run commands; they are kept for the next master
//! ([`saved`]).

mod saved;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// New answers are written to the saved file this long after the first of them: a plan
/// of a thousand hosts writes it once or twice, not a thousand times.
const SAVE_DELAY: Duration = Duration::from_secs(1);

type Resolving = Shared<BoxFuture<'static, Result<HopConfig, String>>>;

type Entries = Mutex<HashMap<SshHop, (Sources, HopConfig)>>;

pub(crate) struct Resolutions {
    /// Keyed by the destination as given (its `config` empty). A mutex: lookups are short
    /// and never held across an await.
    entries: Arc<Entries>,
    /// `ssh -G` under way, by destination: requests for the same one share it.
    resolving: Mutex<HashMap<SshHop, Resolving>>,
    permits: Arc<Semaphore>,
    /// The user's home from the password database, which ssh reads `~/.ssh` from.
    home: PathBuf,
    /// Where answers are kept for the next master, if anywhere.
    saved: Option<Arc<Saver>>,
}

/// The saved answers' file, and whether a write of it is already due.
struct Saver {
    file: saved::SavedAnswers,
    due: AtomicBool,
}

impl Resolutions {
    /// `saved`: the file of answers kept between masters (read now, written as answers
    /// come), for `real_ssh`'s answers.
    pub(crate) fn new(home: PathBuf, saved: Option<(PathBuf, &Path)>) -> Resolutions {
        let saved = saved.map(|(path, real_ssh)| Saver {
            file: saved::SavedAnswers::new(path, real_ssh),
            due: AtomicBool::new(false),
        });
        let mut entries = HashMap::new();
        if let Some(saver) = &saved {
            let answers = saver.file.load();
            tracing::debug!("{} saved answers of ssh -G", answers.len());
            for (hop, sources, config) in answers.into_iter().take(MAX_ENTRIES) {
                entries.insert(Resolutions::key(&hop), (sources, config));
            }
        }
        Resolutions {
            entries: Arc::new(Mutex::new(entries)),
            resolving: Mutex::default(),
            permits: Arc::new(Semaphore::new(RESOLVE_WINDOW)),
            home,
            saved: saved.map(Arc::new),
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
                        tracing::debug!("ssh -G {}", String::from_utf8_lossy(&hop.host));
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
        {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(Resolutions::key(hop), (sources, config.clone()));
        }
        self.save_soon();
    }

    /// Writes the saved answers a moment from now, unless that is already due.
    fn save_soon(&self) {
        let Some(saver) = &self.saved else { return };
        if saver.due.swap(true, Ordering::SeqCst) {
            return;
        }
        let (saver, entries) = (saver.clone(), self.entries.clone());
        tokio::spawn(async move {
            tokio::time::sleep(SAVE_DELAY).await;
            saver.due.store(false, Ordering::SeqCst);
            let entries = entries.lock().unwrap_or_else(|p| p.into_inner());
            let answers = entries.iter().map(|(hop, (s, c))| (hop, s, c));
            if let Err(e) = saver.file.save(answers) {
                tracing::debug!("keeping the answers of ssh -G: {e}");
            }
        });
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
