//! The agent: runs on a remote host (or as another user there), starts processes and child
//! contexts for the master, and relays their stdio over its one link.
//!
//! - [`launch`]: starting a process the way sshd starts a session;
//! - [`stream`]: one process (or TCP connection) and its pumps;
//! - [`tree`]: child contexts and the routes to them.
//!
//! The link is the agent's own stdin and stdout (or, under sudo/su/doas, a socket on
//! stdout), moved to private descriptors at startup so that nothing the agent starts can
//! write into the protocol. When the link ends (the master died, the ssh connection
//! dropped) the agent SIGTERMs every process group and child it started, SIGKILLs what is
//! left a second later, and exits.

pub(crate) mod acceptenv;
pub(crate) mod launch;
pub(crate) mod stream;
pub(crate) mod tree;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::link::inbound::{Incoming, LinkIn};
use crate::link::{self, LinkSender};
use crate::proto::flow::DEFAULT_WINDOW;
use crate::proto::{Fd, Frame, Hello, MASTER, Message, PROTOCOL_VERSION, StreamId};
use crate::pump::{Feed, Input};
use crate::sys::fdio::FdIo;
use launch::Session;
use stream::{Live, Reporting, StreamHandle};
use tree::{Tree, TreeEvent};

/// On shutdown, how long processes get to exit on SIGTERM before SIGKILL. Child agents
/// use the same grace for their own processes, so everything is gone within about this
/// long plus a little, at every depth.
const TERM_GRACE: Duration = Duration::from_secs(1);

/// How an agent was started.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Echoed in the ready marker.
    pub nonce: String,
    /// Started by another agent through sudo/su/doas: the link is the socket on stdout.
    pub hop: bool,
    /// Variables the starter set for its own purposes, to remove from the environment.
    pub drop_env: Vec<String>,
    /// Started by sudo or doas: the shell that runs commands (see [`launch::Session`]).
    pub command_shell: Option<std::path::PathBuf>,
}

impl Options {
    /// The agent's command line (after the program name), as its starters write it:
    /// `agent --nonce N [--hop] [--drop-env NAME]... [--command-shell PATH]`.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut words = args.iter();
        if words.next().map(String::as_str) != Some("agent") {
            return Err("started by a mitossh master, not by hand".into());
        }
        let mut opts = Options::default();
        let mut nonce = None;
        while let Some(word) = words.next() {
            let mut value = || {
                words
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{word} needs a value"))
            };
            match word.as_str() {
                "--nonce" => nonce = Some(value()?),
                "--hop" => opts.hop = true,
                "--drop-env" => opts.drop_env.push(value()?),
                "--command-shell" => opts.command_shell = Some(value()?.into()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        opts.nonce = nonce.ok_or("--nonce is required")?;
        Ok(opts)
    }
}

/// Entry point of `mitossh-agent`. Returns the process exit status.
pub fn main(mut opts: Options) -> i32 {
    crate::bootstrap::image::run_from_memory();
    // A gateway runs an ssh (three descriptors) per host behind it; what it starts gets
    // the user's own limit back.
    let _ = crate::sys::limits::raise_descriptor_limit();
    let first = match first_frames() {
        Ok(first) => first,
        Err(e) => {
            eprintln!("mitossh agent: {e}");
            return 1;
        }
    };
    // Stage 1's, for this process only.
    opts.drop_env.push(crate::bootstrap::FIRST_ENV.into());
    let (link_in, link_out) = match take_stdio(opts.hop) {
        Ok(fds) => fds,
        Err(e) => {
            eprintln!("mitossh agent: cannot set up its link: {e}");
            return 1;
        }
    };
    let ready = format!(
        "{} {} {}\n",
        crate::bootstrap::READY_MARKER,
        opts.nonce,
        crate::VERSION
    );
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
    let session = Session::current(&opts.drop_env, opts.command_shell);
    runtime.block_on(async move {
        match Agent::run(link_in, link_out, ready.into(), &first, session).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("mitossh agent: {e}");
                1
            }
        }
    })
}

/// How long the agent's first write waits for the first stream's answer: a quick
/// command's output and exit (a login shell running `true` takes a few milliseconds).
const FIRST_ANSWER_WAIT: Duration = Duration::from_millis(10);

/// The first stream's end or its failure to start: what a first call waits for (its
/// output is gathered on the way).
fn answers_first_stream(msg: &Message) -> bool {
    matches!(msg, Message::Exit { .. } | Message::OpenFailed { .. })
}

/// The master's first frames, when stage 1 passed them in [`FIRST_ENV`](crate::bootstrap::FIRST_ENV).
fn first_frames() -> Result<Vec<u8>, String> {
    match std::env::var(crate::bootstrap::FIRST_ENV) {
        Ok(hex) => crate::bootstrap::from_hex(&hex)
            .ok_or_else(|| format!("{} is not hex", crate::bootstrap::FIRST_ENV)),
        Err(_) => Ok(Vec::new()),
    }
}

/// A payload's two parts as one.
fn join(head: bytes::Bytes, rest: bytes::Bytes) -> bytes::Bytes {
    if head.is_empty() {
        return rest;
    }
    let mut all = bytes::BytesMut::with_capacity(head.len() + rest.len());
    all.extend_from_slice(&head);
    all.extend_from_slice(&rest);
    all.freeze()
}

/// Moves the link off fds 0 and 1 (to close-on-exec descriptors) and puts /dev/null there.
/// A hop agent's link is the socket on stdout (both ways); its stdin was its own image.
fn take_stdio(hop: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    // Duplicates are close-on-exec and numbered 3 or above.
    let stdin = || std::io::stdin().as_fd().try_clone_to_owned();
    let stdout = || std::io::stdout().as_fd().try_clone_to_owned();
    let (link_in, link_out) = if hop {
        (stdout()?, stdout()?)
    } else {
        (stdin()?, stdout()?)
    };
    crate::sys::stdio::null_stdin_stdout()?;
    Ok((link_in, link_out))
}

/// What the agent's loop waits on besides its link.
enum Event {
    Frame(Incoming),
    StreamDone(StreamId),
    Tree(TreeEvent),
}

struct Agent {
    up: LinkSender,
    session: Session,
    streams: HashMap<StreamId, StreamHandle>,
    tree: Tree,
    events: mpsc::UnboundedSender<StreamId>,
    live: Arc<Live>,
    greeted: bool,
}

impl Agent {
    /// Serves the link until it ends. `ready` (the ready line) leaves with the hello and
    /// the answer to a pipelined first `Open`, in one write (see [`link::Cork`]).
    async fn run(
        link_in: OwnedFd,
        link_out: OwnedFd,
        ready: bytes::Bytes,
        first: &[u8],
        session: Session,
    ) -> io::Result<()> {
        let mut frames = LinkIn::new(FdIo::new(link_in)?.grown(), first);
        // With the master's first stream among `first`, its answer leaves with the ready
        // line; else whoever started the agent waits for that line to say anything.
        let cork = link::Cork {
            prefix: ready,
            answers: answers_first_stream,
            max: if first.is_empty() {
                Duration::ZERO
            } else {
                FIRST_ANSWER_WAIT
            },
        };
        let (up, writer) = link::spawn_corked_fd_writer(FdIo::new(link_out)?.grown(), cork);
        up.send(Frame::new(
            MASTER,
            Message::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                version: crate::VERSION.into(),
                ctx: MASTER,
                pid: std::process::id(),
                user: session.account.name.clone(),
                hostname: crate::sys::user::hostname(),
            }),
        ))
        .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let (tree_tx, mut tree_rx) = mpsc::unbounded_channel();
        let live = Arc::new(Live::default());
        let mut agent = Agent {
            tree: Tree::new(MASTER, up.clone(), tree_tx, live.clone()),
            up,
            session,
            streams: HashMap::new(),
            events: done_tx,
            live,
            greeted: false,
        };
        // sudo passes SIGTERM on to a hop agent, and a hung-up terminal sends SIGHUP:
        // either way, stop everything in order rather than die and orphan processes.
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            let event = tokio::select! {
                _ = term.recv() => break,
                _ = hup.recv() => break,
                frame = frames.next() => match frame {
                    Some(Ok(incoming)) => Event::Frame(incoming),
                    Some(Err(e)) => {
                        eprintln!("mitossh agent: dropping the link: {e}");
                        break;
                    }
                    None => break,
                },
                Some(id) = done_rx.recv() => Event::StreamDone(id),
                Some(e) = tree_rx.recv() => Event::Tree(e),
            };
            match event {
                Event::Frame(incoming) => {
                    if !agent.on_incoming(incoming, &mut frames).await {
                        break;
                    }
                }
                Event::StreamDone(id) => {
                    agent.streams.remove(&id);
                }
                Event::Tree(e) => agent.tree.event(e),
            }
        }
        agent.shutdown().await;
        drop(agent);
        let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
        Ok(())
    }

    /// Handles one frame from the master's side, taking its payload off the link (a
    /// large one for a process's stdin is spliced straight to it); false ends the agent.
    async fn on_incoming(&mut self, incoming: Incoming, link: &mut LinkIn) -> bool {
        let Incoming { mut frame, unread } = incoming;
        if unread > 0 {
            if let Some((stream, feed)) = self.stdin_of(&frame) {
                return match feed.deliver(frame.data, unread, link).await {
                    Ok(delivered) => {
                        if let Some(bytes) = delivered.grant {
                            let credit = Message::Credit {
                                stream,
                                fd: Fd::Stdin,
                                bytes,
                            };
                            let _ = self.up.send(Frame::new(self.tree.me(), credit));
                        }
                        true
                    }
                    Err(e) => {
                        eprintln!("mitossh agent: dropping the link: {e}");
                        false
                    }
                };
            }
            match link.read_payload().await {
                Ok(rest) => frame.data = join(frame.data, rest),
                Err(e) => {
                    eprintln!("mitossh agent: dropping the link: {e}");
                    return false;
                }
            }
        }
        self.on_frame(frame)
    }

    /// The stdin of one of this agent's own streams, if `frame` carries data for it.
    fn stdin_of(&self, frame: &Frame) -> Option<(StreamId, Arc<Feed>)> {
        match frame.msg {
            Message::Data {
                stream,
                fd: Fd::Stdin,
            } if self.greeted && frame.ctx == self.tree.me() => {
                let feed = self.streams.get(&stream)?.input_feed()?;
                Some((stream, feed))
            }
            _ => None,
        }
    }

    /// Handles one frame from the master's side; false ends the agent.
    fn on_frame(&mut self, frame: Frame) -> bool {
        // The first frame names this agent; until then there is nothing to route by.
        if !self.greeted {
            let Message::Hello(hello) = frame.msg else {
                eprintln!("mitossh agent: expected Hello, got {:?}", frame.msg);
                return false;
            };
            if hello.protocol != PROTOCOL_VERSION {
                eprintln!(
                    "mitossh agent: the master speaks protocol {} (mitossh {}), this agent {}",
                    hello.protocol, hello.version, PROTOCOL_VERSION
                );
                return false;
            }
            self.tree.set_me(hello.ctx);
            self.greeted = true;
            return true;
        }
        match self.tree.route_down(frame) {
            Some(frame) => self.handle(frame),
            None => true,
        }
    }

    /// Handles a frame addressed to this agent; false ends the agent.
    fn handle(&mut self, frame: Frame) -> bool {
        match frame.msg {
            Message::Shutdown => return false,
            Message::Open { stream, spec } => self.open(stream, *spec),
            Message::Data {
                stream,
                fd: Fd::Stdin,
            } => {
                let mut refused = Ok(());
                self.with_stream(stream, |s| refused = s.input(Input::Data(frame.data)));
                if let Err(e) = refused {
                    // As the master does with an agent's output: the link is at fault.
                    eprintln!("mitossh agent: dropping the link: stdin of stream {stream}: {e}");
                    return false;
                }
            }
            Message::Eof {
                stream,
                fd: Fd::Stdin,
            } => self.with_stream(stream, |s| {
                let _ = s.input(Input::Eof); // an end is never over the window
            }),
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
            Message::Release { stream } => {
                let mut released = false;
                self.with_stream(stream, |s| released = s.release());
                if released {
                    let _ = self
                        .up
                        .send(Frame::new(self.tree.me(), Message::Released { stream }));
                }
            }
            Message::Stop { stream, grace_ms } => {
                self.with_stream(stream, |s| s.stop(Duration::from_millis(grace_ms)))
            }
            Message::Spawn { child, method } => {
                self.tree
                    .spawn(child, *method, self.session.command_shell.clone())
            }
            Message::Password { child, secret } => self.tree.password(child, secret),
            other => eprintln!("mitossh agent: ignoring unexpected message {other:?}"),
        }
        true
    }

    fn open(&mut self, stream: StreamId, spec: crate::proto::OpenSpec) {
        let report = Reporting {
            me: self.tree.me(),
            up: self.up.clone(),
            done: self.events.clone(),
            live: self.live.clone(),
        };
        if let Some(endpoint) = spec.connect {
            let handle = StreamHandle::connect(stream, endpoint, spec.window, report);
            self.streams.insert(stream, handle);
            return;
        }
        let reply = match StreamHandle::start(stream, &spec, &self.session, report) {
            Ok(handle) => {
                let pid = handle.pid.unwrap_or(0);
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
        let _ = self.up.send(Frame::new(self.tree.me(), reply));
    }

    fn with_stream(&mut self, stream: StreamId, f: impl FnOnce(&mut StreamHandle)) {
        // Frames for a stream that just ended are normal (they crossed its Exit).
        if let Some(s) = self.streams.get_mut(&stream) {
            f(s);
        }
    }

    /// Stops every process and child: SIGTERM, then SIGKILL to what is left after the grace.
    async fn shutdown(&mut self) {
        for s in self.streams.values_mut() {
            s.terminate(Signal::SIGTERM);
        }
        self.tree.shutdown(Signal::SIGTERM);
        if !self.live.wait_empty(TERM_GRACE).await {
            tracing::debug!("killing processes that ignored SIGTERM");
        }
        // Also groups whose leader already exited but left members behind.
        for s in self.streams.values_mut() {
            s.terminate(Signal::SIGKILL);
        }
        self.tree.shutdown(Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<Options, String> {
        Options::parse(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_what_its_starters_write() {
        let o = parse(&["agent", "--nonce", "n1"]).unwrap();
        assert_eq!((o.nonce.as_str(), o.hop), ("n1", false));
        let o = parse(&[
            "agent",
            "--nonce",
            "n2",
            "--hop",
            "--drop-env",
            "LC_ALL",
            "--command-shell",
            "/bin/bash",
        ])
        .unwrap();
        assert!(o.hop);
        assert_eq!(o.drop_env, ["LC_ALL"]);
        assert_eq!(o.command_shell.unwrap(), std::path::Path::new("/bin/bash"));
    }

    #[test]
    fn refuses_anything_else_with_a_reason() {
        assert!(parse(&[]).unwrap_err().contains("not by hand"));
        assert!(parse(&["agent"]).unwrap_err().contains("--nonce"));
        assert!(
            parse(&["agent", "--nonce"])
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(
            parse(&["agent", "--nonce", "n", "-x"])
                .unwrap_err()
                .contains("\"-x\"")
        );
    }
}
