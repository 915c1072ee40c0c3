//! The master's Unix socket: who may connect, and what each connection asks for.
//!
//! Only processes of the master's own uid are served (checked with SO_PEERCRED); the
//! socket also lives in a 0700 directory. Each connection carries a `Hello`, one `Request`
//! and, for sessions, the stream's frames.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::net::{UnixListener, UnixStream};

use super::Master;
use super::session::{self, fail, reply};
use crate::link;
use crate::proto::{Frame, Message, PROTOCOL_VERSION, Reply, Request};

/// A client that connects and says nothing is dropped after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until the master shuts down.
pub async fn serve(master: Arc<Master>, listener: UnixListener) {
    let me = nix::unistd::getuid().as_raw();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = master.shutdown.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("accept: {e}");
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == me => {}
            Ok(cred) => {
                tracing::warn!("refusing a connection from uid {}", cred.uid());
                continue;
            }
            Err(e) => {
                tracing::warn!("refusing a connection whose uid is unknown: {e}");
                continue;
            }
        }
        master.tasks.spawn(client(master.clone(), stream));
    }
}

async fn client(master: Arc<Master>, stream: UnixStream) {
    let (r, w) = stream.into_split();
    let mut frames = link::reader(r);
    let (to_client, _writer) = link::spawn_writer(w);

    let first = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let hello = frames.next().await;
        let request = frames.next().await;
        (hello, request)
    })
    .await;
    let request = match first {
        Ok((
            Some(Ok(Frame {
                msg: Message::Hello(hello),
                ..
            })),
            Some(Ok(Frame {
                msg: Message::Request(request),
                ..
            })),
        )) => {
            if hello.protocol != PROTOCOL_VERSION {
                return fail(
                    &to_client,
                    format!(
                        "mitossh: this program speaks protocol {} (mitossh {}) but the master {} (mitossh {}); restart the master",
                        hello.protocol,
                        hello.version,
                        PROTOCOL_VERSION,
                        env!("CARGO_PKG_VERSION")
                    ),
                );
            }
            *request
        }
        _ => {
            tracing::debug!("dropping a client that sent no valid request");
            return;
        }
    };

    let pid = std::process::id();
    match request {
        Request::Session { target, spec } => {
            session::run(master, target, spec, frames, to_client).await;
        }
        Request::Check { .. } => reply(
            &to_client,
            Reply::Done {
                master_pid: pid,
                message: format!("Master running (pid={pid})"),
            },
        ),
        Request::ExitContext { target } => {
            if let Some(ctx) = master.registry.find(&target) {
                ctx.shutdown();
            }
            reply(
                &to_client,
                Reply::Done {
                    master_pid: pid,
                    message: "Exit request sent.".into(),
                },
            );
        }
        Request::StopContext { target } => {
            if let Some(ctx) = master.registry.find(&target) {
                ctx.drain();
            }
            reply(
                &to_client,
                Reply::Done {
                    master_pid: pid,
                    message: "Stop listening request sent.".into(),
                },
            );
        }
        Request::Status => reply(&to_client, Reply::Status(master.status())),
        Request::Shutdown => {
            reply(
                &to_client,
                Reply::Done {
                    master_pid: pid,
                    message: "Master shutting down.".into(),
                },
            );
            master.shutdown.cancel();
        }
    }
}
