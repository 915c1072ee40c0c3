//! The agent: runs on a remote host (or as another user there), starts processes for the
//! master and relays their stdio over its one link.
//!
//! The link is the agent's own stdin and stdout, moved to private descriptors at startup
//! so that nothing the agent starts can write into the protocol. When the link ends (the
//! master died, the ssh connection dropped) the agent sends SIGTERM to every process group
//! it started, SIGKILL to whatever is left a second later, and exits.

pub mod launch;
pub mod stream;

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use crate::link::{self, LinkSender};
use crate::proto::flow::DEFAULT_WINDOW;
use crate::proto::{ContextId, Fd, Frame, Hello, MASTER, Message, PROTOCOL_VERSION, StreamId};
use crate::pump::Input;
use crate::sys::fdio::FdIo;
use launch::Session;
use stream::{Live, Reporting, StreamHandle};

/// On shutdown, how long processes get to exit on SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(1);

/// Entry point of `mitossh agent`. Returns the process exit status.
pub fn main(nonce: &str) -> i32 {
    crate::bootstrap::image::run_from_memory();
    let (link_in, link_out) = match take_stdio() {
        Ok(fds) => fds,
        Err(e) => {
            eprintln!("mitossh agent: cannot set up its link: {e}");
            return 1;
        }
    };
    let ready = format!(
        "{} {nonce} {}\n",
        crate::bootstrap::READY_MARKER,
        env!("CARGO_PKG_VERSION")
    );
    let mut out = std::fs::File::from(link_out);
    if out.write_all(ready.as_bytes()).is_err() {
        return 1;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mitossh agent: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        match Agent::run(link_in, OwnedFd::from(out)).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("mitossh agent: {e}");
                1
            }
        }
    })
}

/// Moves the link off fds 0 and 1 (to close-on-exec descriptors) and puts /dev/null there.
fn take_stdio() -> io::Result<(OwnedFd, OwnedFd)> {
    let dup = |fd: i32| -> io::Result<OwnedFd> {
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we then own.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if new < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `new` is a fresh descriptor owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(new) })
    };
    let link_in = dup(0)?;
    let link_out = dup(1)?;
    crate::sys::fdio::grow_pipe(&link_in);
    crate::sys::fdio::grow_pipe(&link_out);
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in [0, 1] {
        // SAFETY: dup2 onto the standard descriptors, which we own.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((link_in, link_out))
}

struct Agent {
    me: ContextId,
    up: LinkSender,
    session: Session,
    streams: HashMap<StreamId, StreamHandle>,
    done_tx: mpsc::UnboundedSender<StreamId>,
    live: Arc<Live>,
}

impl Agent {
    async fn run(link_in: OwnedFd, link_out: OwnedFd) -> io::Result<()> {
        let mut frames = link::reader(FdIo::new(link_in)?);
        let (up, writer) = link::spawn_writer(FdIo::new(link_out)?);
        let session = Session::current();
        up.send(Frame::new(
            MASTER,
            Message::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                version: env!("CARGO_PKG_VERSION").into(),
                ctx: MASTER,
                pid: std::process::id(),
                user: session.account.name.clone(),
                hostname: crate::sys::user::hostname(),
            }),
        ))
        .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut agent = Agent {
            me: MASTER,
            up,
            session,
            streams: HashMap::new(),
            done_tx,
            live: Arc::new(Live::default()),
        };
        loop {
            tokio::select! {
                frame = frames.next() => match frame {
                    Some(Ok(frame)) => {
                        if !agent.handle(frame) {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        eprintln!("mitossh agent: dropping the link: {e}");
                        break;
                    }
                    None => break,
                },
                Some(id) = done_rx.recv() => {
                    agent.streams.remove(&id);
                }
            }
        }
        agent.shutdown().await;
        drop(agent);
        let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
        Ok(())
    }

    /// Handles one frame from the master; false ends the agent.
    fn handle(&mut self, frame: Frame) -> bool {
        match frame.msg {
            Message::Hello(hello) => {
                if hello.protocol != PROTOCOL_VERSION {
                    eprintln!(
                        "mitossh agent: the master speaks protocol {} (mitossh {}), this agent {}",
                        hello.protocol, hello.version, PROTOCOL_VERSION
                    );
                    return false;
                }
                self.me = hello.ctx;
            }
            Message::Shutdown => return false,
            Message::Open { stream, spec } => {
                let report = Reporting {
                    me: self.me,
                    up: self.up.clone(),
                    done: self.done_tx.clone(),
                    live: self.live.clone(),
                };
                let reply = match StreamHandle::start(stream, &spec, &self.session, report) {
                    Ok(handle) => {
                        let pid = handle.pid;
                        self.streams.insert(stream, handle);
                        Message::Opened {
                            stream,
                            pid,
                            window: DEFAULT_WINDOW,
                        }
                    }
                    Err(e) => Message::OpenFailed {
                        stream,
                        error: e.to_string(),
                    },
                };
                self.send(reply);
            }
            Message::Data {
                stream,
                fd: Fd::Stdin,
            } => self.with_stream(stream, |s| s.input(Input::Data(frame.data))),
            Message::Eof {
                stream,
                fd: Fd::Stdin,
            } => self.with_stream(stream, |s| s.input(Input::Eof)),
            Message::Eof { stream, fd } => self.with_stream(stream, |s| s.stop_output(fd)),
            Message::Credit { stream, fd, bytes } => {
                self.with_stream(stream, |s| s.credit(fd, bytes))
            }
            Message::Signal { stream, signal } => {
                match crate::sys::process::signal_from_name(&signal) {
                    Some(sig) => self.with_stream(stream, |s| s.signal(sig)),
                    None => tracing::warn!("stream {stream}: unknown signal {signal:?}"),
                }
            }
            Message::Resize { stream, size } => self.with_stream(stream, |s| s.resize(size)),
            Message::Close { stream } => self.with_stream(stream, StreamHandle::close),
            other => eprintln!("mitossh agent: ignoring unexpected message {other:?}"),
        }
        true
    }

    fn with_stream(&mut self, stream: StreamId, f: impl FnOnce(&mut StreamHandle)) {
        // Frames for a stream that just ended are normal (they crossed its Exit).
        if let Some(s) = self.streams.get_mut(&stream) {
            f(s);
        }
    }

    fn send(&self, msg: Message) {
        let _ = self.up.send(Frame::new(self.me, msg));
    }

    /// Stops every process: SIGTERM to each group, SIGKILL to what is left after the grace.
    async fn shutdown(&mut self) {
        for s in self.streams.values_mut() {
            s.terminate(Signal::SIGTERM);
        }
        if !self.live.wait_empty(TERM_GRACE).await {
            tracing::debug!("killing processes that ignored SIGTERM");
        }
        // Also groups whose leader already exited but left members behind.
        for s in self.streams.values_mut() {
            s.terminate(Signal::SIGKILL);
        }
    }
}
