//! The answers of `ssh -G` kept from one master to the next, in a file of the runtime
//! directory: each `mitossh run` or `mitossh-env` that starts a master of its own would
//! otherwise ask ssh again about every host (about 3 ms of CPU each: a second and a half
//! for 500 hosts on a cold run). A file written by another build, user, host name or ssh
//! binary is not read; every answer read is checked against its configuration files
//! before use, as the master's own are.

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::proto::{HopConfig, SshHop};
use crate::sshconfig::{Sources, Stamp, stamp};

/// What a larger file holds is not read (4,096 answers take well under 4 MiB).
const MAX_FILE: u64 = 16 << 20;

/// One answer: the destination as given, the files it came from, what ssh made of it.
pub(super) type Answer = (SshHop, Sources, HopConfig);

/// Whose answers a file holds: they are true only for the same of each.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Fingerprint {
    /// The wire format of this file is this build's.
    build: String,
    uid: u32,
    /// `%l` and `%L` in a configuration.
    node: Vec<u8>,
    /// The ssh that answered: another version reads configurations its own way.
    ssh: Vec<u8>,
    ssh_stamp: Option<Stamp>,
}

#[derive(Serialize, Deserialize)]
struct SavedFile {
    fingerprint: Fingerprint,
    /// Each an [`Answer`] encoded on its own: one that does not encode is left out.
    answers: Vec<Vec<u8>>,
}

/// The file of saved answers for one ssh binary.
pub(super) struct SavedAnswers {
    path: PathBuf,
    real_ssh: PathBuf,
}

impl SavedAnswers {
    pub(super) fn new(path: PathBuf, real_ssh: &Path) -> SavedAnswers {
        SavedAnswers {
            path,
            real_ssh: real_ssh.to_path_buf(),
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            build: crate::VERSION.to_string(),
            uid: nix::unistd::getuid().as_raw(),
            node: nix::unistd::gethostname()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default(),
            ssh: self.real_ssh.as_os_str().as_bytes().to_vec(),
            ssh_stamp: stamp(&self.real_ssh),
        }
    }

    /// The answers in the file, if it is there, readable and ours to believe.
    pub(super) fn load(&self) -> Vec<Answer> {
        let Ok(file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let mut bytes = Vec::new();
        if file.take(MAX_FILE + 1).read_to_end(&mut bytes).is_err() || bytes.len() as u64 > MAX_FILE
        {
            return Vec::new();
        }
        match postcard::from_bytes::<SavedFile>(&bytes) {
            Ok(saved) if saved.fingerprint == self.fingerprint() => saved
                .answers
                .iter()
                .filter_map(|a| postcard::from_bytes(a).ok())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Replaces the file with `answers`, by rename: a master reading it meanwhile reads
    /// the old one whole.
    pub(super) fn save<'a>(
        &self,
        answers: impl Iterator<Item = (&'a SshHop, &'a Sources, &'a HopConfig)>,
    ) -> std::io::Result<()> {
        let saved = SavedFile {
            fingerprint: self.fingerprint(),
            answers: answers
                .filter_map(|a| postcard::to_allocvec(&a).ok())
                .collect(),
        };
        let bytes = postcard::to_allocvec(&saved).map_err(std::io::Error::other)?;
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{}.new", std::process::id()));
        let new = self.path.with_file_name(name);
        // Ours: this process's name in our own directory, left by an earlier process of
        // the same pid that died while writing.
        let _ = std::fs::remove_file(&new);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&new)
            .and_then(|mut f| f.write_all(&bytes));
        match written.and_then(|()| std::fs::rename(&new, &self.path)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::fs::remove_file(&new);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sshconfig::parse_dump;

    fn answer(dir: &Path, host: &str) -> Answer {
        let cfg = dir.join("cfg");
        if !cfg.exists() {
            std::fs::write(&cfg, "Host *\n  Port 2222\n").unwrap();
        }
        let args = vec![b"-F".to_vec(), cfg.as_os_str().as_bytes().to_vec()];
        let hop = SshHop {
            host: host.as_bytes().to_vec(),
            ssh_args: args.clone(),
            ..SshHop::default()
        };
        let dump = format!("user u\nhostname {host}.example\nport 2222\n");
        let config = parse_dump(dump.as_bytes()).unwrap();
        (hop, Sources::of(&args, dir), config)
    }

    fn save_all(saved: &SavedAnswers, answers: &[Answer]) {
        saved
            .save(answers.iter().map(|(h, s, c)| (h, s, c)))
            .unwrap();
    }

    #[test]
    fn answers_come_back_for_the_same_ssh_only() {
        let dir = tempfile::tempdir().unwrap();
        let ssh = dir.path().join("ssh");
        std::fs::write(&ssh, "#!/bin/sh\n").unwrap();
        let file = dir.path().join("answers");
        let saved = SavedAnswers::new(file.clone(), &ssh);
        let answers = vec![answer(dir.path(), "a"), answer(dir.path(), "b")];
        save_all(&saved, &answers);
        assert_eq!(saved.load(), answers);
        assert!(
            !std::fs::read_dir(dir.path()).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".new")),
            "the file written first is renamed, not left beside it"
        );

        // Another ssh binary (or the same one replaced) reads configurations its own way.
        assert!(
            SavedAnswers::new(file.clone(), Path::new("/bin/true"))
                .load()
                .is_empty()
        );
        std::fs::write(&ssh, "#!/bin/sh\n# upgraded\n").unwrap();
        assert!(saved.load().is_empty());
    }

    #[test]
    fn a_damaged_or_oversized_file_is_no_answer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("answers");
        let saved = SavedAnswers::new(file.clone(), Path::new("/bin/sh"));
        assert!(saved.load().is_empty(), "no file yet");
        save_all(&saved, &[answer(dir.path(), "a")]);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&file, &bytes).unwrap();
        assert!(saved.load().is_empty(), "truncated");
        std::fs::write(&file, vec![0xff; 4096]).unwrap();
        assert!(saved.load().is_empty(), "garbage");
        let big = std::fs::File::create(&file).unwrap();
        big.set_len(MAX_FILE + 1).unwrap();
        assert!(saved.load().is_empty(), "oversized");
    }
}
