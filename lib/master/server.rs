//! The master's Unix socket: who may connect, and what each connection asks for.
//!
//! Only processes of the master's own uid are served (checked with SO_PEERCRED); the
//! socket also lives in a 0700 directory. Each connection carries a `Hello`, one `Request`
//! and, for sessions, the stream's frames.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::Decoder;

use super::session::{self, Place, fail, reply};
use super::{Master, key};
use crate::link;
use crate::proto::{
    Caller, FrameCodec, Hello, Message, OpenSpec, PROTOCOL_VERSION, PromptKind, Reply, Request,
    Secret, Target,
};
use crate::sys::passfd::recv_with_fds;

/// A client that connects and says nothing is dropped after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// After a failed accept, the loop waits this long before the next, doubling up to
/// [`ACCEPT_BACKOFF_MAX`]: a connection it cannot take stays in the backlog, so trying
/// again at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Accepts connections until the master shuts down.
pub(crate) async fn serve(master: Arc<Master>, listener: UnixListener) {
    let me = nix::unistd::getuid().as_raw();
    // One descriptor kept back: out of descriptors, it is given up to take the waiting
    // client and tell it why, instead of leaving it to hang in the backlog.
    let mut reserve = open_reserve();
    let mut backoff = ACCEPT_BACKOFF;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = master.shutdown.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF;
                stream
            }
            Err(e) => {
                let exhausted = crate::sys::limits::is_exhaustion(&e);
                if exhausted && reserve.take().is_some() {
                    turn_away(&listener).await;
                    reserve = open_reserve();
                }
                master.warnings.accept.emit(|held| {
                    tracing::warn!(
                        "accept: {e}{}{}",
                        if exhausted {
                            " (refusing clients until some close)"
                        } else {
                            ""
                        },
                        crate::throttle::suppressed(held)
                    )
                });
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = master.shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
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
        let master = master.clone();
        master.tasks.clone().spawn(async move {
            client(master, stream).await;
            // What the call used (a session's buffers above all) goes back.
            crate::sys::memory::give_back_soon();
        });
    }
}

fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Takes the next waiting client (with the one descriptor just freed) and tells it the
/// master is out of descriptors.
async fn turn_away(listener: &UnixListener) {
    use futures::FutureExt;
    let Some(Ok((stream, _))) = listener.accept().now_or_never() else {
        return;
    };
    let reply = Message::Reply(Box::new(out_of_descriptors()));
    let _ = tokio::time::timeout(Duration::from_millis(100), write_frame(&stream, reply)).await;
    // Read what it sent (its descriptors are dropped unreceived) so that closing does not
    // reset the connection before it reads the answer.
    let mut scratch = [0u8; 4096];
    while let Ok(n) = stream.try_read(&mut scratch) {
        if n == 0 {
            break;
        }
    }
}

/// The answer to a client the master has no descriptors for.
fn out_of_descriptors() -> Reply {
    let limit = crate::sys::limits::descriptor_limit().map_or(0, |l| l.soft);
    Reply::Failed {
        message: format!(
            "mitossh: the master is out of file descriptors (limit {limit}); each connected \
             host needs about {}, each session {}: raise its limit (ulimit -n, up to \
             ulimit -Hn) or use fewer hosts at once",
            crate::bootstrap::ssh::DESCRIPTORS_CONNECTED,
            session::DESCRIPTORS_PER_SESSION,
        ),
        exit_code: crate::proto::SSH_ERROR,
        fallback: false,
        shown: false,
        connect: Some(crate::proto::ConnectFailure::Descriptors),
    }
}

async fn client(master: Arc<Master>, stream: UnixStream) {
    let (first, fds, leftover) =
        match tokio::time::timeout(REQUEST_TIMEOUT, opening(&master, &stream)).await {
            Ok(Ok(opening)) => opening,
            Ok(Err(e)) => {
                if crate::sys::limits::is_exhaustion(&e) {
                    let reply = Message::Reply(Box::new(out_of_descriptors()));
                    let _ = write_frame(&stream, reply).await;
                }
                master.warnings.clients.emit(|held| {
                    tracing::warn!(
                        "dropping a client: {e}{}",
                        crate::throttle::suppressed(held)
                    )
                });
                return;
            }
            Err(_) => {
                master.warnings.clients.emit(|held| {
                    tracing::warn!(
                        "dropping a client that sent no request within {REQUEST_TIMEOUT:?}{}",
                        crate::throttle::suppressed(held)
                    )
                });
                return;
            }
        };
    let (r, w) = stream.into_split();
    let mut frames = link::control_reader(r);
    frames.read_buffer_mut().extend_from_slice(&leftover);
    let (to_client, _writer) = link::spawn_writer(w);

    let (hello, request) = first;
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

    answer(master, request, fds, frames, to_client).await;
}

/// Answers a client's one request; a session or a proxy runs on its connection.
async fn answer(
    master: Arc<Master>,
    request: Request,
    fds: Vec<OwnedFd>,
    frames: link::LinkReader<tokio::net::unix::OwnedReadHalf>,
    to_client: link::LinkSender,
) {
    match request {
        Request::Session {
            target,
            spec,
            caller,
        } => {
            let Ok(stdio) = <[OwnedFd; 3]>::try_from(fds) else {
                return fail(
                    &to_client,
                    "mitossh: a session needs stdin, stdout and stderr".into(),
                );
            };
            session::run(
                master,
                Place::Target(target),
                spec,
                caller,
                stdio,
                frames,
                to_client,
            )
            .await;
        }
        Request::Proxy { ctx, endpoint } => {
            let Ok(stdio) = <[OwnedFd; 3]>::try_from(fds) else {
                return fail(
                    &to_client,
                    "mitossh: a proxy needs stdin, stdout and stderr".into(),
                );
            };
            let spec = OpenSpec {
                connect: Some(endpoint),
                ..OpenSpec::default()
            };
            let caller = Caller::default();
            session::run(
                master,
                Place::Context(ctx),
                spec,
                caller,
                stdio,
                frames,
                to_client,
            )
            .await;
        }
        Request::Check { target } => check(&master, &target, &to_client),
        Request::ExitContext { target } => exit_context(&master, &target, &to_client),
        Request::StopContext { target } => stop_context(&master, &target, &to_client),
        Request::Status => reply(&to_client, Reply::Status(master.status())),
        Request::Askpass { token, prompt } => {
            let answer = askpass(&master, &token, &prompt).await;
            reply(&to_client, Reply::Askpass(answer));
        }
        // Answered while reading the opening; one never reaches here.
        Request::Lookup { .. } => {}
        Request::Shutdown => {
            done(&to_client, "Master shutting down.".into());
            master.shutdown.cancel();
        }
    }
}

fn done(to_client: &link::LinkSender, message: String) {
    reply(
        to_client,
        Reply::Done {
            master_pid: std::process::id(),
            message,
        },
    );
}

// Like ssh -O, these ask about the connection to a destination: the host's context,
// whatever user the invocation would become there.

/// `ssh -O check`.
fn check(master: &Master, target: &Target, to_client: &link::LinkSender) {
    match master.registry.find(&connection(target)) {
        Some(_) => done(
            to_client,
            format!("Master running (pid={})", std::process::id()),
        ),
        None => no_connection(to_client, target),
    }
}

/// `ssh -O exit`: the host's context and those started from it end.
fn exit_context(master: &Master, target: &Target, to_client: &link::LinkSender) {
    let found = master.registry.find_with_descendants(&connection(target));
    if found.is_empty() {
        return no_connection(to_client, target);
    }
    for ctx in found {
        ctx.shutdown();
    }
    done(to_client, "Exit request sent.".into());
}

/// `ssh -O stop`. Like a stopped ControlMaster, the host's connection takes no new
/// sessions; neither do the contexts started from it (sudo there), which live on it. So
/// the next call, become or not, logs in afresh (Ansible's reset_connection).
fn stop_context(master: &Master, target: &Target, to_client: &link::LinkSender) {
    let found = master.registry.find_with_descendants(&connection(target));
    if found.is_empty() {
        return no_connection(to_client, target);
    }
    for ctx in found {
        ctx.drain();
    }
    done(to_client, "Stop listening request sent.".into());
}

/// A question from the askpass helper of attempt `token`'s ssh, asked of a waiting shim.
/// Nobody to answer: the attempt is abandoned (its ssh killed) rather than let ssh send an
/// empty password.
async fn askpass(master: &Master, token: &str, prompt: &str) -> Option<Secret> {
    let attempt = master.registry.askpass_attempt(token)?;
    let echo = crate::askpass::is_confirmation(prompt);
    let text = crate::untrusted::clean_lines(prompt, crate::untrusted::MAX_TEXT * 4);
    let answer = attempt.ask(&text, PromptKind::Ssh { echo }).await;
    if answer.is_none() {
        tracing::warn!("nobody can answer ssh's question {text:?}; giving up the connection");
        attempt.abandoned.cancel();
    }
    answer
}

/// The connection a target's context lives on: the target without a user to become or
/// a container to enter.
fn connection(target: &Target) -> Target {
    Target {
        become_as: None,
        exec: None,
        ..target.clone()
    }
}

/// The answer to `ssh -O` for a destination the master has no connection to: a failure
/// the shim hands to the real ssh, which answers for a ControlMaster of the user's own
/// if there is one, and otherwise fails with its own message, as it would without mitossh.
fn no_connection(to_client: &link::LinkSender, target: &Target) {
    let label = key::key_of(&connection(target))
        .map(|k| k.path_label())
        .unwrap_or_default();
    reply(
        to_client,
        Reply::Failed {
            message: format!("no mitossh connection to {label}"),
            exit_code: crate::proto::SSH_ERROR,
            fallback: true,
            shown: false,
            connect: None,
        },
    );
}

/// Reads a client's `Hello` and `Request`, and the descriptors sent along (a session's
/// stdin, stdout and stderr). Returns them with whatever bytes followed. `Lookup`
/// requests are answered on the way: the shim asks before it makes its real request.
async fn opening(
    master: &Master,
    stream: &UnixStream,
) -> io::Result<((Hello, Request), Vec<OwnedFd>, BytesMut)> {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    let mut fds = Vec::new();
    let mut hello = None;
    loop {
        // Stop decoding right after the request: the rest belongs to the stream's reader,
        // and a fresh codec must start at a frame boundary.
        while let Some(frame) = codec.decode(&mut buf).map_err(io::Error::other)? {
            match (frame.msg, hello.take()) {
                (Message::Hello(h), None) => hello = Some(h),
                (Message::Request(r), Some(h)) => match *r {
                    Request::Lookup { hops } => {
                        let found = hops.iter().map(|hop| master.resolutions.lookup(hop));
                        write_frame(
                            stream,
                            Message::Reply(Box::new(Reply::Lookup(found.collect()))),
                        )
                        .await?;
                        hello = Some(h);
                    }
                    r => return Ok(((h, r), fds, buf)),
                },
                (other, _) => {
                    return Err(io::Error::other(format!(
                        "expected Hello then Request, got {other:?}"
                    )));
                }
            }
        }
        if fds.len() > crate::sys::passfd::MAX_FDS {
            return Err(io::Error::other("too many descriptors"));
        }
        if recv_with_fds(stream, &mut buf, &mut fds).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Writes one frame on a stream that has no writer task yet.
async fn write_frame(stream: &UnixStream, msg: Message) -> io::Result<()> {
    let mut buf = BytesMut::new();
    crate::proto::frame::encode_into(
        &crate::proto::Frame::new(crate::proto::MASTER, msg),
        &mut buf,
    )
    .map_err(io::Error::other)?;
    let mut written = 0;
    while written < buf.len() {
        stream.writable().await?;
        match stream.try_write(&buf[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
