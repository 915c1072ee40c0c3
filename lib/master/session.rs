//! One shim invocation relayed to one stream on a context.
//!
//! The shim speaks the same frames as agents, always with stream 0; the relay renumbers
//! them and passes them on. Both directions only ever enqueue, never wait on a slow
//! writer, so a stalled shim cannot hold up its own stdin or anybody else's stream; what
//! sits in the queues is bounded by the credit each end granted.

use std::sync::Arc;

use futures::StreamExt;
use tokio::net::unix::OwnedReadHalf;

use super::Master;
use crate::bootstrap::ssh::ConnectError;
use crate::link::{LinkReader, LinkSender};
use crate::proto::{Fd, Frame, MASTER, Message, OpenSpec, Reply, Target};

/// Exit status ssh uses for its own failures.
pub const SSH_ERROR: i32 = 255;

pub fn reply(to: &LinkSender, reply: Reply) {
    let _ = to.send(Frame::new(MASTER, Message::Reply(Box::new(reply))));
}

pub fn fail(to: &LinkSender, message: String) {
    reply(
        to,
        Reply::Failed {
            message,
            exit_code: SSH_ERROR,
            fallback: false,
        },
    );
}

/// Runs a session until the remote process exits or the shim goes away.
pub async fn run(
    master: Arc<Master>,
    target: Target,
    spec: OpenSpec,
    mut from_shim: LinkReader<OwnedReadHalf>,
    to_shim: LinkSender,
) {
    let ctx = match master.registry.get_or_connect(&master, &target).await {
        Ok(ctx) => ctx,
        Err(e) => {
            let fallback = matches!(e, ConnectError::CannotServe(_));
            return reply(
                &to_shim,
                Reply::Failed {
                    message: e.to_string(),
                    exit_code: SSH_ERROR,
                    fallback,
                },
            );
        }
    };
    let id = master.next_stream_id();
    let mut port = match ctx.open_stream(id, spec) {
        Ok(port) => port,
        Err(_) => {
            return fail(
                &to_shim,
                format!("mitossh: connection to {} lost", ctx.name),
            );
        }
    };

    // The agent answers Open first; anything else before it is a broken agent.
    match port.rx.recv().await.map(|f| f.msg) {
        Some(Message::Opened { window, .. }) => reply(&to_shim, Reply::Opened { window }),
        Some(Message::OpenFailed { error, .. }) => {
            return fail(&to_shim, format!("mitossh: {}: {error}", ctx.name));
        }
        Some(other) => {
            tracing::error!(host = %ctx.name, "agent answered Open with {other:?}");
            return fail(
                &to_shim,
                format!("mitossh: {}: agent protocol error", ctx.name),
            );
        }
        None => {
            return fail(
                &to_shim,
                format!("mitossh: connection to {} lost", ctx.name),
            );
        }
    }

    loop {
        tokio::select! {
            frame = from_shim.next() => {
                let Some(Ok(frame)) = frame else {
                    // The shim is gone (killed, or its process exited): stop the process.
                    let _ = ctx.send(Message::Close { stream: id });
                    return;
                };
                let forwarded = match frame.msg {
                    Message::Data { fd: Fd::Stdin, .. } => {
                        ctx.send_data(Message::Data { stream: id, fd: Fd::Stdin }, frame.data)
                    }
                    // For stdout and stderr: nobody reads them any more.
                    Message::Eof { fd, .. } => ctx.send(Message::Eof { stream: id, fd }),
                    Message::Credit { fd, bytes, .. } => ctx.send(Message::Credit { stream: id, fd, bytes }),
                    Message::Signal { signal, .. } => ctx.send(Message::Signal { stream: id, signal }),
                    Message::Resize { size, .. } => ctx.send(Message::Resize { stream: id, size }),
                    other => {
                        tracing::warn!("shim sent {other:?} mid-session; closing it");
                        let _ = ctx.send(Message::Close { stream: id });
                        return;
                    }
                };
                if forwarded.is_err() {
                    return fail(&to_shim, format!("mitossh: connection to {} lost", ctx.name));
                }
            }
            frame = port.rx.recv() => {
                let Some(mut frame) = frame else {
                    return fail(&to_shim, format!("mitossh: connection to {} lost", ctx.name));
                };
                let exited = matches!(frame.msg, Message::Exit { .. });
                renumber(&mut frame.msg);
                frame.ctx = MASTER;
                if to_shim.send(frame).is_err() {
                    let _ = ctx.send(Message::Close { stream: id });
                    return;
                }
                if exited {
                    return;
                }
            }
        }
    }
}

/// Shims know their one stream as stream 0.
fn renumber(msg: &mut Message) {
    match msg {
        Message::Data { stream, .. }
        | Message::Eof { stream, .. }
        | Message::Credit { stream, .. }
        | Message::Exit { stream, .. } => *stream = 0,
        _ => {}
    }
}
