//! ssh from an agent's host: for a next hop that only this host can resolve or reach, with
//! this host's own ssh configuration and keys. The same bootstrap as the master's, with
//! this agent's own image as the upload: uncompressed (an agent carries no compressor),
//! and only for this host's architecture.

use std::sync::Arc;

use super::{BoxReader, Child, SPAWN_TIMEOUT, SpawnError};
use crate::bootstrap::image::{AgentImage, Offer};
use crate::bootstrap::ssh::{ConnectHooks, SshCommand, bootstrap};
use crate::bootstrap::{FirstFrames, handshake};
use crate::link;
use crate::proto::ContextId;

/// Runs `ssh ARGS` (options and destination) from this host and starts an agent there.
pub(crate) async fn start(
    child: ContextId,
    args: &[Vec<u8>],
    label: &str,
) -> Result<Child, SpawnError> {
    use std::os::unix::ffi::OsStrExt;
    let ssh = SshCommand {
        program: "ssh".into(),
        args: args
            .iter()
            .map(|a| std::ffi::OsStr::from_bytes(a).to_os_string())
            .collect(),
        label: label.to_string(),
    };
    over(child, &ssh).await
}

/// Runs `command` with stage 1 as its last word, uploads this agent's image when stage 1
/// asks, and says hello to the new agent.
pub(super) async fn over(child: ContextId, command: &SshCommand) -> Result<Child, SpawnError> {
    let image = AgentImage::own()
        .map_err(|e| SpawnError::Failed(format!("cannot read the agent image: {e}")))?;
    let offer = Offer {
        images: vec![Arc::new(image)],
        gzip: None,
    };
    let boot = bootstrap(
        command,
        &offer,
        ConnectHooks::none(SPAWN_TIMEOUT),
        FirstFrames::Stdin(Vec::new()),
    )
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
        process: super::Process::Spawned(boot.child),
        hello,
        pipes: boot.pipes,
    })
}
