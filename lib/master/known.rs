//! What the master knows of the agents on hosts, kept between masters: for each context
//! it reached over its own ssh, the architecture and content hash of the agent that ran
//! there, and whether the host keeps its copy between connections.
//!
//! One decision rests on it: whether to send the image unasked ([`KnownHosts::push_for`]),
//! which saves a round trip on a host that needs it and costs the image's bytes on one
//! that does not. A record can only be wrong in what it costs: stage 1 and the agent check
//! what arrives. A file per context (named by a hash of its identity, never by the host's
//! name) in `cache_dir()/hosts`, written whole under a temporary name and renamed.

use std::path::{Path, PathBuf};

use crate::bootstrap::ReadyNote;
use crate::bootstrap::image::{Arch, Offer, content_hash};
use crate::master::key::ContextKey;

/// The records, or none when there is nowhere to keep them (then every connect that can
/// pushes, as to a host never seen).
#[derive(Debug)]
pub(crate) struct KnownHosts {
    dir: Option<PathBuf>,
}

/// What was last seen of one host's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    arch: Arch,
    hash: String,
    kept: bool,
}

impl Record {
    fn text(&self) -> String {
        let keeps = if self.kept { "kept" } else { "volatile" };
        format!("{} {} {keeps}\n", self.arch.name(), self.hash)
    }

    /// Reads [`text`](Record::text); `None` for anything else.
    fn parse(text: &str) -> Option<Record> {
        let mut words = text.split_ascii_whitespace();
        let arch = Arch::from_name(words.next()?)?;
        let hash = words.next()?;
        let kept = match words.next()? {
            "kept" => true,
            "volatile" => false,
            _ => return None,
        };
        let plain = hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        (plain && words.next().is_none()).then(|| Record {
            arch,
            hash: hash.to_string(),
            kept,
        })
    }
}

impl KnownHosts {
    /// The records in the user's cache directory.
    pub(crate) fn open() -> KnownHosts {
        let dir = crate::paths::cache_dir().and_then(|d| {
            let hosts = d.join("hosts");
            crate::paths::private_dir(&hosts).map(|()| hosts)
        });
        match dir {
            Ok(dir) => KnownHosts::at(dir),
            Err(e) => {
                tracing::debug!("no record of agents on hosts: {e}");
                KnownHosts { dir: None }
            }
        }
    }

    fn at(dir: PathBuf) -> KnownHosts {
        KnownHosts { dir: Some(dir) }
    }

    /// The architecture whose image to send unasked when connecting `key`: a host never
    /// seen (this machine's architecture, the likeliest), one last seen with another
    /// build's agent, or one whose copy goes with its sessions. `None`: it has this one.
    pub(crate) fn push_for(&self, key: &ContextKey, offer: &Offer) -> Option<Arch> {
        let Some(record) = self.read(key) else {
            return Some(Arch::native());
        };
        let current = offer.image(record.arch).map(|i| i.hash.as_str());
        (!record.kept || current != Some(record.hash.as_str())).then_some(record.arch)
    }

    /// Notes what the agent that now runs for `key` said of itself.
    pub(crate) fn note(&self, key: &ContextKey, offer: &Offer, note: ReadyNote) {
        let (Some(path), Some(arch)) = (self.path(key), note.arch) else {
            return;
        };
        let Some(image) = offer.image(arch) else {
            return;
        };
        let record = Record {
            arch,
            hash: image.hash.clone(),
            kept: note.kept,
        };
        if read(&path).as_ref() == Some(&record) {
            return;
        }
        if let Err(e) = write(&path, &record.text()) {
            tracing::debug!("cannot keep the record of {}: {e}", key.label());
        }
    }

    fn read(&self, key: &ContextKey) -> Option<Record> {
        read(&self.path(key)?)
    }

    fn path(&self, key: &ContextKey) -> Option<PathBuf> {
        Some(
            self.dir
                .as_ref()?
                .join(content_hash(key.identity().as_bytes())),
        )
    }
}

fn read(path: &Path) -> Option<Record> {
    // A record is one short line; anything longer is not ours.
    let text = std::fs::read(path).ok().filter(|t| t.len() <= 128)?;
    Record::parse(std::str::from_utf8(&text).ok()?)
}

/// Writes `text` to `path` whole: a temporary file of this process, renamed into place.
fn write(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = path.with_file_name(format!(".{name}.{}", std::process::id()));
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::image::AgentImage;
    use crate::master::key::{SshKey, StepKey};
    use std::sync::Arc;

    fn key(host: &str, written: &str) -> ContextKey {
        ContextKey {
            steps: vec![StepKey::Ssh(SshKey {
                user: Some(b"u".to_vec()),
                host: host.as_bytes().to_vec(),
                port: Some(22),
                routing: Vec::new(),
                written: written.into(),
            })],
        }
    }

    fn offer(text: &str) -> Offer {
        let image = |arch| {
            Arc::new(AgentImage::new(
                arch,
                text.as_bytes().to_vec().into(),
                PathBuf::new(),
            ))
        };
        Offer {
            images: vec![image(Arch::X86_64), image(Arch::Aarch64)],
            gzip: None,
        }
    }

    fn note(arch: Arch, kept: bool) -> ReadyNote {
        ReadyNote {
            arch: Some(arch),
            kept,
            skipped: false,
        }
    }

    #[test]
    fn a_host_is_sent_the_image_until_it_is_known_to_keep_this_build() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownHosts::at(dir.path().to_path_buf());
        let (web, one) = (key("10.0.0.1", "web"), offer("one"));
        assert_eq!(
            known.push_for(&web, &one),
            Some(Arch::native()),
            "never seen"
        );
        known.note(&web, &one, note(Arch::Aarch64, true));
        assert_eq!(known.push_for(&web, &one), None, "it has this build's");
        assert_eq!(
            known.push_for(&key("10.0.0.1", "another alias"), &one),
            None,
            "the host is what it resolves to, not its alias"
        );
        assert_eq!(
            known.push_for(&web, &offer("two")),
            Some(Arch::Aarch64),
            "a new build"
        );
        known.note(&web, &one, note(Arch::Aarch64, false));
        assert_eq!(
            known.push_for(&web, &one),
            Some(Arch::Aarch64),
            "its copy goes with its sessions"
        );
        assert_eq!(
            known.push_for(&key("10.0.0.2", "db"), &one),
            Some(Arch::native())
        );
    }

    #[test]
    fn what_is_not_a_record_reads_as_none() {
        let good = Record {
            arch: Arch::X86_64,
            hash: "0123456789abcdef0123456789abcdef".into(),
            kept: true,
        };
        assert_eq!(Record::parse(&good.text()), Some(good.clone()));
        for bad in [
            "",
            "x86_64",
            "sparc 0123456789abcdef0123456789abcdef kept",
            "x86_64 0123 kept",
            "x86_64 0123456789abcdef0123456789abcdef maybe",
            "x86_64 0123456789abcdef0123456789abcdef kept more",
        ] {
            assert_eq!(Record::parse(bad), None, "{bad:?}");
        }
        // No file name says which host it is for.
        let dir = tempfile::tempdir().unwrap();
        let known = KnownHosts::at(dir.path().to_path_buf());
        known.note(
            &key("secret.example", "secret"),
            &offer("x"),
            note(Arch::X86_64, true),
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(!names[0].to_string_lossy().contains("secret"));
    }
}
