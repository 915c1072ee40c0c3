//! Starting a link: stage 1 through ssh (or the local shell), the master's hello and the
//! first stream's `Open` sent at once, the agent's hello, then the link's dispatcher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::dispatch::dispatch;
use super::{Context, Link, LinkState, StreamPort};
use crate::bootstrap::ssh::{ConnectError, ConnectHooks, SshCommand, bootstrap};
use crate::bootstrap::{FirstFrames, hello_frame, open_is_public, receive_hello};
use crate::guard::Guard;
use crate::link::{self, inbound::LinkIn};
use crate::master::Master;
use crate::master::key::ContextKey;
use crate::proto::frame::encode_into;
use crate::proto::{ContextId, Frame, Message, OpenSpec, StreamId};
use crate::sys::fdio::FdIo;

/// The first stream of a new connection, whose `Open` travels with the master's `Hello`
/// (so a first call costs no round trip more than `ssh host cmd`). Its port goes to the
/// request that asked, if that request still waits.
#[derive(Debug)]
pub(crate) struct EarlyOpen {
    pub stream: StreamId,
    pub spec: OpenSpec,
    pub port: oneshot::Sender<StreamPort>,
}

/// Connects a context over an ssh the master runs: bootstrap with the master's hello (and
/// `early`'s `Open`) sent at once, the agent's hello, then the link's dispatcher. `parent`
/// is the context whose TCP stream ssh goes through, if any.
pub(crate) async fn connect_ssh(
    master: &Arc<Master>,
    id: ContextId,
    key: ContextKey,
    ssh: SshCommand,
    parent: ContextId,
    hooks: ConnectHooks,
    early: Option<EarlyOpen>,
) -> Result<Arc<Context>, ConnectError> {
    let way = Way {
        command: ssh,
        parent,
        hooks,
        method: "ssh",
    };
    connect(master, id, key, way, early).await
}

/// Connects a context on the master's own host (execnet's popen gateway): `/bin/sh` runs
/// stage 1 as the login shell at the end of an ssh connection would, so the agent is
/// found, or stored, and started exactly as on a remote host; no ssh, nothing to ask.
pub(crate) async fn connect_local(
    master: &Arc<Master>,
    id: ContextId,
    key: ContextKey,
) -> Result<Arc<Context>, ConnectError> {
    let way = Way {
        command: SshCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into()],
            label: crate::master::key::LOCAL.into(),
        },
        parent: crate::proto::MASTER,
        hooks: ConnectHooks::none(master.config.connect_timeout),
        method: "local",
    };
    connect(master, id, key, way, None).await
}

/// How a context's agent is reached: the command that runs stage 1 (ssh or the local
/// shell), the context it goes through, what it may ask, and the method as shown.
struct Way {
    command: SshCommand,
    parent: ContextId,
    hooks: ConnectHooks,
    method: &'static str,
}

/// Bootstrap with the master's hello (and `early`'s `Open`) sent at once, the agent's
/// hello, then the link's dispatcher.
async fn connect(
    master: &Arc<Master>,
    id: ContextId,
    key: ContextKey,
    Way {
        command: ssh,
        parent,
        hooks,
        method,
    }: Way,
    early: Option<EarlyOpen>,
) -> Result<Arc<Context>, ConnectError> {
    let mut guard = Guard::new(id);
    // In the command only with a first stream to answer: otherwise nothing is gained, and
    // the agent would hold its first write for an answer that never comes.
    let public = early.as_ref().is_some_and(|e| open_is_public(&e.spec));
    let mut frames = vec![hello_frame(id)];
    let early = early.map(|e| {
        frames.push(Frame::new(
            id,
            Message::Open {
                stream: e.stream,
                spec: Box::new(e.spec),
            },
        ));
        (e.stream, e.port)
    });
    let mut encoded = BytesMut::new();
    for frame in &frames {
        guard.sent(frame);
        encode_into(frame, &mut encoded).map_err(|e| ConnectError::Other(e.to_string()))?;
    }
    let first = FirstFrames::new(encoded.to_vec(), public);
    let boot = bootstrap(&ssh, &master.agents.offer, hooks, first).await?;
    match &boot.uploaded {
        Some(up) => tracing::info!(host = %ssh.label, "agent started ({up})"),
        None => tracing::info!(host = %ssh.label, "agent started (cached)"),
    }
    let link_error = |e: std::io::Error| ConnectError::Other(format!("{}: {e}", ssh.label));
    let [writer_pipe, reader_pipe] = boot.pipes;
    let writer = FdIo::new(boot.writer.into_nonblocking_fd().map_err(link_error)?)
        .map_err(link_error)?
        .holding(writer_pipe);
    let already = boot.reader.buffer().to_vec();
    let reader = boot
        .reader
        .into_inner()
        .into_nonblocking_fd()
        .map_err(link_error)?;
    let reader = FdIo::new(reader).map_err(link_error)?.holding(reader_pipe);
    let mut reader = LinkIn::new(reader, &already);
    let (sender, writer) = link::spawn_fd_writer(writer);
    let hello = receive_hello(&mut reader)
        .await
        .map_err(|why| ConnectError::Other(format!("{}: {why}", ssh.label)))?;
    let link = Arc::new(Link {
        name: ssh.label.clone(),
        sender,
        state: Mutex::new(LinkState {
            guard,
            contexts: HashMap::new(),
            breach: None,
        }),
        dead: CancellationToken::new(),
    });
    // Reached through `parent`'s TCP stream, not started by its agent: not its child.
    let ctx = Context::new(id, parent, key, method, hello, link.clone(), false);
    link.add(ctx.clone());
    if let Some((stream, waiter)) = early
        && let Ok(port) = ctx.register_stream(stream)
    {
        // Nobody waits any more: dropping the port closes the stream.
        let _ = waiter.send(port);
    }
    master.tasks.spawn(dispatch(
        link,
        reader,
        boot.child,
        writer,
        Arc::downgrade(master),
    ));
    Ok(ctx)
}
