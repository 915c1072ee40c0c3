//! The agent image: this very executable, which the master uploads as the agent.
//!
//! The suite is one static build, so what the master runs is exactly what its agents run;
//! the content hash names the cached copy on remote hosts. Once started, an agent moves
//! itself into an anonymous memory file (`memfd_create` + `fexecve`) when the kernel
//! allows, so the running agent depends on no file at all.

use std::ffi::CString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Set in the environment of an agent that re-executed itself from memory.
const IN_MEMORY_ENV: &str = "MITOSSH_AGENT_IN_MEMORY";

/// The bytes of this executable and their hash.
#[derive(Debug, Clone)]
pub struct AgentImage {
    pub bytes: Bytes,
    /// Hex SHA-256 prefix (128 bits): names the cached file remotely.
    pub hash: String,
}

impl AgentImage {
    /// Reads this process's own executable.
    pub fn load() -> io::Result<AgentImage> {
        let bytes = std::fs::read("/proc/self/exe")?;
        Ok(AgentImage::from_bytes(bytes.into()))
    }

    pub fn from_bytes(bytes: Bytes) -> AgentImage {
        let digest = Sha256::digest(&bytes);
        let hash = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        AgentImage { bytes, hash }
    }
}

/// In a freshly started agent: re-execute from a memfd unless already running from one.
/// Returns only when staying as is (already in memory, or the kernel refused).
pub(crate) fn run_from_memory() {
    if std::env::var_os(IN_MEMORY_ENV).is_some() {
        return;
    }
    if let Ok(exe) = std::fs::read_link("/proc/self/exe")
        && exe.as_os_str().as_bytes().starts_with(b"/memfd:")
    {
        return;
    }
    if let Err(e) = reexec_from_memfd() {
        tracing::debug!("staying on disk: cannot run from memory: {e}");
    }
}

fn reexec_from_memfd() -> io::Result<()> {
    let image = std::fs::read("/proc/self/exe")?;
    let fd = crate::sys::memfd::executable("mitossh-agent")?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&image)?;

    let argv: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes().to_vec()))
        .collect::<Result<_, _>>()?;
    let mut envp: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            CString::new(kv.as_bytes().to_vec())
        })
        .collect::<Result<_, _>>()?;
    envp.push(CString::new(format!("{IN_MEMORY_ENV}=1"))?);
    let Err(e) = nix::unistd::fexecve(&file, &argv, &envp);
    Err(e.into())
}

/// Removes mitossh's private variables from an environment about to be given to a child.
pub(crate) fn is_private_env(key: &[u8]) -> bool {
    key == IN_MEMORY_ENV.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_content() {
        let a = AgentImage::from_bytes(Bytes::from_static(b"one"));
        let b = AgentImage::from_bytes(Bytes::from_static(b"two"));
        assert_ne!(a.hash, b.hash);
        assert_eq!(a.hash.len(), 32);
        assert_eq!(
            a.hash,
            AgentImage::from_bytes(Bytes::from_static(b"one")).hash
        );
    }
}
