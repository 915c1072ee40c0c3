//! The master's cache of what the user's ssh configuration makes of a destination (see
//! [`crate::sshconfig`]): answers are reused while the files they came from are unchanged,
//! and never when those files run commands.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::proto::{HopConfig, SshHop, Target, ViaMode};
use crate::sshconfig::{self, Sources};

/// More distinct destinations than this and the cache starts afresh.
const MAX_ENTRIES: usize = 4096;

pub(crate) struct Resolutions {
    /// Keyed by the destination as given (its `config` empty). A mutex: lookups are short
    /// and never held across an await.
    entries: Mutex<HashMap<SshHop, (Sources, HopConfig)>>,
    /// The user's home from the password database, which ssh reads `~/.ssh` from.
    home: PathBuf,
}

impl Resolutions {
    pub(crate) fn new(home: PathBuf) -> Resolutions {
        Resolutions {
            entries: Mutex::default(),
            home,
        }
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
            match sshconfig::resolve_async(real_ssh, hop).await {
                Ok(dump) => {
                    self.store(hop, &dump.config);
                    hop.config = Some(dump.config);
                }
                Err(e) => tracing::debug!("ssh -G {}: {e}", String::from_utf8_lossy(&hop.host)),
            }
        }
    }
}
