//! ssh from an agent's host: for a next hop that only this host can resolve or reach, with
//! this host's own ssh configuration and keys. The same bootstrap as the master's, with
//! this agent's image as the upload.

use super::{BoxReader, Child, SPAWN_TIMEOUT, SpawnError};
use crate::bootstrap::handshake;
use crate::bootstrap::image::AgentImage;
use crate::bootstrap::ssh::{ConnectHooks, SshCommand, bootstrap};
use crate::link;
use crate::proto::ContextId;

/// Runs `ssh ARGS` (options and destination) from this host and starts an agent there.
pub(crate) async fn start(
    child: ContextId,
    args: &[Vec<u8>],
    label: &str,
) -> Result<Child, SpawnError> {
    use std::os::unix::ffi::OsStrExt;
    let image = AgentImage::load()
        .map_err(|e| SpawnError::Failed(format!("cannot read the agent image: {e}")))?;
    let ssh = SshCommand {
        program: "ssh".into(),
        args: args
            .iter()
            .map(|a| std::ffi::OsStr::from_bytes(a).to_os_string())
            .collect(),
        label: label.to_string(),
    };
    let boot = bootstrap(&ssh, &image, ConnectHooks::none(SPAWN_TIMEOUT))
        .await
        .map_err(|e| SpawnError::Failed(e.to_string()))?;
    let (sender, _writer) = link::spawn_writer(boot.writer);
    let mut reader = link::reader(Box::new(boot.reader) as BoxReader);
    let hello = handshake(&mut reader, &sender, child)
        .await
        .map_err(SpawnError::Failed)?;
    Ok(Child {
        reader,
        sender,
        process: boot.child,
        hello,
    })
}
