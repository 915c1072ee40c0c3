//! What the peer at the far end of a link may say, judged as each frame arrives.
//!
//! Every byte from an agent is untrusted: a compromised host can run a modified agent.
//! A [`Guard`] watches one link from the side that trusts itself — the master for each of
//! its links, an agent for each of its child links. It is shown every frame sent down the
//! link ([`Guard::sent`]) and judges every frame that comes up ([`Guard::arrived`]):
//!
//! - **Authority follows the tree.** The context at the far end (the root) and those
//!   started below it through this link may speak, each only for itself: `Spawned`,
//!   `NeedPassword` and `SpawnFailed` only for a child it was asked to start (whatever
//!   the method: become, ssh from a hop, an exec prefix; `NeedPassword` only for a become
//!   child, once), `ContextLost` only for a context below it.
//! - **Streams belong to their context** and follow the protocol's order: `Opened` (or
//!   `OpenFailed`) first, data and `Eof` after it, nothing after `Exit`.
//! - **Credit is charged on arrival**: output beyond the credit granted, or more than
//!   [`MAX_DATA`] in one frame, is a breach the moment it arrives, not when somebody gets
//!   round to reading it. Credit for stdin is accepted only for bytes actually sent, and
//!   the stdin window a peer announces is cut down to [`DEFAULT_WINDOW`].
//!
//! A breach is a [`Violation`], and its owner drops the link. So whatever a peer does,
//! what it can make the owner hold is at most one window of data per stream and direction
//! and a few control messages, and only its own link pays for it.

use std::collections::{HashMap, HashSet};

use crate::proto::flow::{DEFAULT_WINDOW, FlowViolation};
use crate::proto::{ContextId, Fd, Frame, MAX_DATA, Message, StreamId};

/// A peer broke the protocol. The text names ids and counts only, never what the peer
/// sent, so it is safe to log and to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Violation(String);

impl From<FlowViolation> for Violation {
    fn from(e: FlowViolation) -> Violation {
        Violation(format!("output beyond its window: {e}"))
    }
}

/// What to do with a frame that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Deliver it.
    Pass,
    /// Old news (a context already known to be gone): drop it quietly.
    Ignore,
    /// These contexts are gone (a `ContextLost`, with the subtree below it); pass it on.
    Lost(Vec<ContextId>),
}

#[derive(Debug)]
struct Pending {
    parent: ContextId,
    /// Started by a tool that asks for passwords (sudo, su, doas): ssh from a hop runs
    /// with `BatchMode`, an exec prefix has no terminal, so their children never ask,
    /// and a question for one would be the agent's own invention.
    may_ask: bool,
    asked: bool,
}

#[derive(Debug)]
struct Stream {
    ctx: ContextId,
    opened: bool,
    /// Closed from this side: the peer may still finish (its output and `Exit` follow).
    closing: bool,
    /// Output bytes the peer may still send: stdout, stderr.
    credit: [u64; 2],
    eof: [bool; 2],
    released: bool,
    stdin_sent: u64,
    stdin_credited: u64,
}

/// The rules of one link. See the module documentation.
#[derive(Debug)]
pub(crate) struct Guard {
    root: ContextId,
    /// Contexts below the root, with their parents.
    below: HashMap<ContextId, ContextId>,
    /// Contexts that were here and are gone: late news about them is not a breach.
    gone: HashSet<ContextId>,
    /// Children asked for and not yet reported.
    pending: HashMap<ContextId, Pending>,
    streams: HashMap<StreamId, Stream>,
}

macro_rules! breach {
    ($($arg:tt)*) => { Err(Violation(format!($($arg)*))) };
}

impl Guard {
    /// A link whose far end is context `root`.
    pub(crate) fn new(root: ContextId) -> Guard {
        Guard {
            root,
            below: HashMap::new(),
            gone: HashSet::new(),
            pending: HashMap::new(),
            streams: HashMap::new(),
        }
    }

    /// Whether stream `id` is open and not yet closed from this side.
    pub(crate) fn is_open(&self, id: StreamId) -> bool {
        self.streams.get(&id).is_some_and(|s| !s.closing)
    }

    /// A frame is being sent down the link: learn what it allows the peer.
    pub(crate) fn sent(&mut self, frame: &Frame) {
        self.sent_with_payload(frame, frame.data.len());
    }

    /// Like [`Guard::sent`], for a frame whose `payload` bytes travel apart from it
    /// (spliced after its header).
    pub(crate) fn sent_with_payload(&mut self, frame: &Frame, payload: usize) {
        match &frame.msg {
            Message::Open { stream, spec } => {
                // A TCP stream (`ssh -W`) has no stderr, as an SSH direct-tcpip channel.
                let stderr = if spec.connect.is_some() {
                    0
                } else {
                    spec.window
                };
                self.streams.insert(
                    *stream,
                    Stream {
                        ctx: frame.ctx,
                        opened: false,
                        closing: false,
                        credit: [u64::from(spec.window), u64::from(stderr)],
                        eof: [false; 2],
                        released: false,
                        stdin_sent: 0,
                        stdin_credited: 0,
                    },
                );
            }
            Message::Credit { stream, fd, bytes } => {
                if let (Some(s), Some(i)) = (self.streams.get_mut(stream), output(*fd)) {
                    s.credit[i] += u64::from(*bytes);
                }
            }
            Message::Data {
                stream,
                fd: Fd::Stdin,
            } => {
                if let Some(s) = self.streams.get_mut(stream) {
                    s.stdin_sent += payload as u64;
                }
            }
            Message::Close { stream } => {
                if let Some(s) = self.streams.get_mut(stream) {
                    s.closing = true;
                }
            }
            Message::Spawn { child, method } => {
                self.pending.insert(
                    *child,
                    Pending {
                        parent: frame.ctx,
                        may_ask: method.may_ask(),
                        asked: false,
                    },
                );
            }
            _ => {}
        }
    }

    /// Judges a frame that came up the link. An `Opened` window above [`DEFAULT_WINDOW`]
    /// is cut down to it in place.
    pub(crate) fn arrived(&mut self, frame: &mut Frame) -> Result<Verdict, Violation> {
        let payload = frame.data.len();
        self.judge(frame.ctx, &mut frame.msg, payload)
    }

    /// Judges a frame from `from` by its message and the length of its whole payload,
    /// before any of the payload is taken off the link (see [`crate::link::inbound`]).
    pub(crate) fn judge(
        &mut self,
        from: ContextId,
        msg: &mut Message,
        payload: usize,
    ) -> Result<Verdict, Violation> {
        if from != self.root && !self.below.contains_key(&from) {
            return breach!("a frame from context {from}, which does not live behind this link");
        }
        if payload > 0 && !matches!(msg, Message::Data { .. }) {
            return breach!("context {from} sent a payload with {}", msg.name());
        }
        let n = payload as u64;
        match msg {
            Message::Data { stream, fd } => {
                let (stream, fd) = (*stream, *fd);
                if n as usize > MAX_DATA {
                    return breach!(
                        "context {from} sent {n} bytes in one frame (at most {MAX_DATA})"
                    );
                }
                let s = self.stream(from, stream, true)?;
                let Some(i) = output(fd) else {
                    return breach!("context {from} sent stdin data on stream {stream}");
                };
                if s.eof[i] {
                    return breach!(
                        "context {from} sent data after the end of {fd:?} on stream {stream}"
                    );
                }
                if n > s.credit[i] {
                    return breach!(
                        "context {from} sent {n} bytes of {fd:?} on stream {stream} with {} bytes of credit",
                        s.credit[i]
                    );
                }
                s.credit[i] -= n;
            }
            Message::Eof { stream, fd } => {
                let (stream, fd) = (*stream, *fd);
                let s = self.stream(from, stream, true)?;
                match output(fd) {
                    Some(i) => s.eof[i] = true,
                    None => return breach!("context {from} ended stdin on stream {stream}"),
                }
            }
            Message::Credit { stream, fd, bytes } => {
                self.credit(from, *stream, *fd, u64::from(*bytes))?;
            }
            Message::Opened { stream, window, .. } => {
                let stream = *stream;
                let s = self.stream(from, stream, false)?;
                if s.opened {
                    return breach!("context {from} opened stream {stream} twice");
                }
                s.opened = true;
                *window = (*window).min(DEFAULT_WINDOW);
            }
            Message::OpenFailed { stream, .. } => {
                let stream = *stream;
                if self.stream(from, stream, false)?.opened {
                    return breach!(
                        "context {from} failed to open stream {stream} after opening it"
                    );
                }
                self.streams.remove(&stream);
            }
            Message::Released { stream } => {
                let stream = *stream;
                let s = self.stream(from, stream, true)?;
                if s.released {
                    return breach!("context {from} released stream {stream} twice");
                }
                s.released = true;
            }
            Message::Exit { stream, .. } => {
                let stream = *stream;
                self.stream(from, stream, true)?;
                self.streams.remove(&stream);
            }
            Message::NeedPassword { child, .. } => self.needs_password(from, *child)?,
            Message::Spawned { child, .. } => self.spawned(from, *child, true)?,
            Message::SpawnFailed { child, .. } => self.spawned(from, *child, false)?,
            Message::ContextLost { ctx: lost, .. } => return self.lost(from, *lost),
            other => return breach!("context {from} sent {}", other.name()),
        }
        Ok(Verdict::Pass)
    }

    /// Stdin credit the agent returns: no more than was sent and not yet credited.
    fn credit(
        &mut self,
        from: ContextId,
        stream: StreamId,
        fd: Fd,
        bytes: u64,
    ) -> Result<(), Violation> {
        let s = self.stream(from, stream, true)?;
        if fd != Fd::Stdin {
            return breach!("context {from} granted credit for {fd:?} on stream {stream}");
        }
        let owed = s.stdin_sent - s.stdin_credited;
        if bytes > owed {
            return breach!(
                "context {from} returned {bytes} bytes of stdin credit on stream {stream}, \
                 with {owed} bytes sent and not yet credited"
            );
        }
        s.stdin_credited += bytes;
        Ok(())
    }

    /// A context being started asks for its password, once.
    fn needs_password(&mut self, from: ContextId, child: ContextId) -> Result<(), Violation> {
        let p = self.pending(from, child)?;
        if !p.may_ask {
            return breach!(
                "context {from} asked for a password for context {child}, whose method asks none"
            );
        }
        if p.asked {
            return breach!("context {from} asked twice for a password for context {child}");
        }
        p.asked = true;
        Ok(())
    }

    /// A context being started answered (`started`: it runs, behind `from`).
    fn spawned(
        &mut self,
        from: ContextId,
        child: ContextId,
        started: bool,
    ) -> Result<(), Violation> {
        self.pending(from, child)?;
        self.pending.remove(&child);
        if started {
            self.below.insert(child, from);
        }
        Ok(())
    }

    /// The stream `id`, if context `from` may speak for it (and, with `opened`, it was
    /// opened).
    fn stream(
        &mut self,
        from: ContextId,
        id: StreamId,
        opened: bool,
    ) -> Result<&mut Stream, Violation> {
        match self.streams.get_mut(&id) {
            Some(s) if s.ctx != from => {
                breach!(
                    "context {from} spoke for stream {id}, which belongs to context {}",
                    s.ctx
                )
            }
            Some(s) if opened && !s.opened => {
                breach!("context {from} used stream {id} before opening it")
            }
            Some(s) => Ok(s),
            None => breach!("context {from} spoke for stream {id}, which is not open on it"),
        }
    }

    fn pending(&mut self, from: ContextId, child: ContextId) -> Result<&mut Pending, Violation> {
        match self.pending.get_mut(&child) {
            Some(p) if p.parent == from => Ok(p),
            _ => {
                breach!("context {from} spoke for context {child}, which it was not asked to start")
            }
        }
    }

    fn lost(&mut self, from: ContextId, lost: ContextId) -> Result<Verdict, Violation> {
        if self.gone.contains(&lost) {
            return Ok(Verdict::Ignore);
        }
        if self.is_below(lost, from) {
            return Ok(Verdict::Lost(self.remove_subtree(lost)));
        }
        let pending_below = self
            .pending
            .get(&lost)
            .is_some_and(|p| p.parent == from || self.is_below(p.parent, from));
        if pending_below {
            self.pending.remove(&lost);
            self.gone.insert(lost);
            return Ok(Verdict::Lost(vec![lost]));
        }
        breach!("context {from} reported context {lost} lost, which is not below it")
    }

    /// Whether `ctx` lives (strictly) below `ancestor` on this link.
    fn is_below(&self, ctx: ContextId, ancestor: ContextId) -> bool {
        let mut at = ctx;
        while let Some(&parent) = self.below.get(&at) {
            if parent == ancestor {
                return true;
            }
            at = parent;
        }
        false
    }

    /// Forgets `top` and everything below it; returns them, `top` first.
    fn remove_subtree(&mut self, top: ContextId) -> Vec<ContextId> {
        let mut gone = vec![top];
        let mut rest: Vec<ContextId> = self
            .below
            .keys()
            .copied()
            .filter(|c| self.is_below(*c, top))
            .collect();
        rest.sort_unstable();
        gone.extend(rest);
        for c in &gone {
            self.below.remove(c);
            self.gone.insert(*c);
        }
        self.streams.retain(|_, s| !gone.contains(&s.ctx));
        self.pending.retain(|_, p| !gone.contains(&p.parent));
        gone
    }
}

/// The index of an output descriptor; `None` for stdin.
fn output(fd: Fd) -> Option<usize> {
    match fd {
        Fd::Stdout => Some(0),
        Fd::Stderr => Some(1),
        Fd::Stdin => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Become, BecomeMethod, Endpoint, ExitStatus, Hello, Method, OpenSpec};
    use bytes::Bytes;

    const ROOT: ContextId = 1;

    fn open(ctx: ContextId, stream: StreamId, window: u32) -> Frame {
        Frame::new(
            ctx,
            Message::Open {
                stream,
                spec: Box::new(OpenSpec {
                    window,
                    ..OpenSpec::default()
                }),
            },
        )
    }

    fn opened(ctx: ContextId, stream: StreamId, window: u32) -> Frame {
        Frame::new(
            ctx,
            Message::Opened {
                stream,
                pid: 1,
                window,
            },
        )
    }

    fn data(ctx: ContextId, stream: StreamId, fd: Fd, n: usize) -> Frame {
        Frame::with_data(
            ctx,
            Message::Data { stream, fd },
            Bytes::from(vec![b'x'; n]),
        )
    }

    fn hello(ctx: ContextId) -> Hello {
        Hello {
            protocol: 1,
            version: "v".into(),
            ctx,
            pid: 1,
            user: "u".into(),
            hostname: "h".into(),
        }
    }

    fn spawn(parent: ContextId, child: ContextId) -> Frame {
        Frame::new(
            parent,
            Message::Spawn {
                child,
                method: Box::new(Method::Become(Become {
                    method: BecomeMethod::Sudo,
                    user: "root".into(),
                })),
            },
        )
    }

    fn spawned(parent: ContextId, child: ContextId) -> Frame {
        Frame::new(
            parent,
            Message::Spawned {
                child,
                hello: hello(child),
            },
        )
    }

    fn lost(from: ContextId, ctx: ContextId) -> Frame {
        Frame::new(
            from,
            Message::ContextLost {
                ctx,
                reason: "gone".into(),
            },
        )
    }

    fn pass(g: &mut Guard, mut f: Frame) -> Verdict {
        g.arrived(&mut f).unwrap_or_else(|v| panic!("{v}"))
    }

    fn refuse(g: &mut Guard, mut f: Frame) -> String {
        match g.arrived(&mut f) {
            Err(v) => v.to_string(),
            Ok(verdict) => panic!("accepted {:?}: {verdict:?}", f.msg),
        }
    }

    /// A guard with stream 7 opened on the root, window 100.
    fn with_stream() -> Guard {
        let mut g = Guard::new(ROOT);
        g.sent(&open(ROOT, 7, 100));
        assert_eq!(pass(&mut g, opened(ROOT, 7, 100)), Verdict::Pass);
        g
    }

    #[test]
    fn output_is_charged_against_credit_when_it_arrives() {
        let mut g = with_stream();
        pass(&mut g, data(ROOT, 7, Fd::Stdout, 60));
        pass(&mut g, data(ROOT, 7, Fd::Stdout, 40));
        let why = refuse(&mut g, data(ROOT, 7, Fd::Stdout, 1));
        assert!(why.contains("with 0 bytes of credit"), "{why}");
        // Credit granted down the link allows more; stderr has a window of its own.
        let mut g = with_stream();
        pass(&mut g, data(ROOT, 7, Fd::Stdout, 100));
        g.sent(&Frame::new(
            ROOT,
            Message::Credit {
                stream: 7,
                fd: Fd::Stdout,
                bytes: 50,
            },
        ));
        pass(&mut g, data(ROOT, 7, Fd::Stdout, 50));
        pass(&mut g, data(ROOT, 7, Fd::Stderr, 100));
    }

    #[test]
    fn oversized_and_misplaced_payloads_are_refused() {
        let mut g = Guard::new(ROOT);
        g.sent(&open(ROOT, 7, u32::MAX));
        pass(&mut g, opened(ROOT, 7, 1));
        refuse(&mut g, data(ROOT, 7, Fd::Stdout, MAX_DATA + 1));
        refuse(&mut g, data(ROOT, 7, Fd::Stdin, 1));
        let mut f = Frame::with_data(ROOT, Message::Shutdown, Bytes::from_static(b"x"));
        assert!(g.arrived(&mut f).is_err());
    }

    #[test]
    fn streams_follow_the_protocol_order() {
        let mut g = Guard::new(ROOT);
        g.sent(&open(ROOT, 7, 100));
        refuse(&mut g, data(ROOT, 7, Fd::Stdout, 1)); // before Opened
        let mut g = with_stream();
        refuse(&mut g, opened(ROOT, 7, 100)); // twice
        let mut g = with_stream();
        pass(
            &mut g,
            Frame::new(
                ROOT,
                Message::Eof {
                    stream: 7,
                    fd: Fd::Stdout,
                },
            ),
        );
        refuse(&mut g, data(ROOT, 7, Fd::Stdout, 1)); // after its Eof
        let mut g = with_stream();
        let exit = Message::Exit {
            stream: 7,
            status: ExitStatus::Code(0),
        };
        pass(&mut g, Frame::new(ROOT, exit.clone()));
        refuse(&mut g, Frame::new(ROOT, exit)); // nothing after Exit
        let released = Message::Released { stream: 7 };
        let mut g = with_stream();
        pass(&mut g, Frame::new(ROOT, released.clone()));
        refuse(&mut g, Frame::new(ROOT, released));
    }

    #[test]
    fn a_closed_stream_may_finish() {
        let mut g = with_stream();
        g.sent(&Frame::new(ROOT, Message::Close { stream: 7 }));
        assert!(!g.is_open(7));
        pass(&mut g, data(ROOT, 7, Fd::Stdout, 10));
        pass(
            &mut g,
            Frame::new(
                ROOT,
                Message::Exit {
                    stream: 7,
                    status: ExitStatus::Code(0),
                },
            ),
        );
    }

    #[test]
    fn streams_and_contexts_of_others_are_off_limits() {
        let mut g = with_stream();
        refuse(&mut g, data(ROOT, 8, Fd::Stdout, 1)); // never opened
        refuse(&mut g, data(2, 7, Fd::Stdout, 1)); // not behind this link
        refuse(&mut g, data(0, 7, Fd::Stdout, 1)); // the master is never below
        // A child may not speak for its parent's streams.
        g.sent(&spawn(ROOT, 2));
        pass(&mut g, spawned(ROOT, 2));
        let why = refuse(&mut g, data(2, 7, Fd::Stdout, 1));
        assert!(why.contains("belongs to context 1"), "{why}");
    }

    #[test]
    fn the_stdin_window_is_capped_and_credit_must_be_owed() {
        let mut g = Guard::new(ROOT);
        g.sent(&open(ROOT, 7, 100));
        let mut f = opened(ROOT, 7, u32::MAX);
        assert_eq!(g.arrived(&mut f), Ok(Verdict::Pass));
        assert!(matches!(f.msg, Message::Opened { window, .. } if window == DEFAULT_WINDOW));
        let credit = |bytes| {
            Frame::new(
                ROOT,
                Message::Credit {
                    stream: 7,
                    fd: Fd::Stdin,
                    bytes,
                },
            )
        };
        refuse(&mut g, credit(1));
        g.sent(&data(ROOT, 7, Fd::Stdin, 300));
        pass(&mut g, credit(200));
        pass(&mut g, credit(100));
        refuse(&mut g, credit(1));
    }

    #[test]
    fn a_tcp_stream_has_no_stderr() {
        let mut g = Guard::new(ROOT);
        g.sent(&Frame::new(
            ROOT,
            Message::Open {
                stream: 7,
                spec: Box::new(OpenSpec {
                    window: 100,
                    connect: Some(Endpoint {
                        host: "h".into(),
                        port: 1,
                    }),
                    ..OpenSpec::default()
                }),
            },
        ));
        pass(&mut g, opened(ROOT, 7, 100));
        pass(&mut g, data(ROOT, 7, Fd::Stdout, 100));
        refuse(&mut g, data(ROOT, 7, Fd::Stderr, 1));
    }

    #[test]
    fn children_are_reported_only_by_the_parent_that_was_asked() {
        let mut g = Guard::new(ROOT);
        refuse(&mut g, spawned(ROOT, 5)); // nobody asked
        g.sent(&spawn(ROOT, 2));
        let ask = |from| {
            Frame::new(
                from,
                Message::NeedPassword {
                    child: 2,
                    whose: "?".into(),
                },
            )
        };
        pass(&mut g, ask(ROOT));
        refuse(&mut g, ask(ROOT)); // once per start
        pass(&mut g, spawned(ROOT, 2));
        refuse(&mut g, spawned(ROOT, 2)); // not twice
        // 2's child, started through 2: only 2 may report it.
        g.sent(&spawn(2, 3));
        refuse(&mut g, spawned(ROOT, 3));
        pass(&mut g, spawned(2, 3));
        // A failure, likewise.
        g.sent(&spawn(2, 4));
        let failed = |from| {
            Frame::new(
                from,
                Message::SpawnFailed {
                    child: 4,
                    error: "no".into(),
                },
            )
        };
        refuse(&mut g, failed(3));
        pass(&mut g, failed(2));
    }

    /// An exec child (a container entered below a sudo context) is reported like any
    /// other, by its own parent only, and its streams belong to it; but nothing asks a
    /// password to start one, so an agent that claims it needs one is cut off.
    #[test]
    fn exec_children_follow_the_same_rules_and_never_ask_for_a_password() {
        let exec = |parent, child| {
            Frame::new(
                parent,
                Message::Spawn {
                    child,
                    method: Box::new(Method::Exec {
                        argv: vec![b"docker".to_vec(), b"exec".to_vec(), b"-i".to_vec()],
                        label: "docker".into(),
                    }),
                },
            )
        };
        let ask = |from, child| {
            Frame::new(
                from,
                Message::NeedPassword {
                    child,
                    whose: "root".into(),
                },
            )
        };
        let mut g = Guard::new(ROOT);
        g.sent(&spawn(ROOT, 2));
        pass(&mut g, spawned(ROOT, 2));
        g.sent(&exec(2, 3));
        refuse(&mut g, spawned(ROOT, 3)); // only the sudo context that was asked
        let why = refuse(&mut g, ask(2, 3));
        assert!(why.contains("asks none"), "{why}");
        let mut g = Guard::new(ROOT);
        g.sent(&spawn(ROOT, 2));
        pass(&mut g, spawned(ROOT, 2));
        g.sent(&exec(2, 3));
        pass(&mut g, spawned(2, 3));
        g.sent(&open(3, 9, 100));
        refuse(&mut g, opened(2, 9, 100)); // the container's stream, not its parent's
        pass(&mut g, opened(3, 9, 100));
        // The container is below its parent: lost with it.
        assert_eq!(pass(&mut g, lost(ROOT, 2)), Verdict::Lost(vec![2, 3]));
        // ssh from a hop does not ask either.
        let mut g = Guard::new(ROOT);
        g.sent(&Frame::new(
            ROOT,
            Message::Spawn {
                child: 4,
                method: Box::new(Method::Ssh {
                    args: Vec::new(),
                    label: "h".into(),
                }),
            },
        ));
        refuse(&mut g, ask(ROOT, 4));
    }

    #[test]
    fn only_a_context_above_may_report_one_lost() {
        let mut g = Guard::new(ROOT);
        g.sent(&spawn(ROOT, 2));
        pass(&mut g, spawned(ROOT, 2));
        g.sent(&spawn(2, 3));
        pass(&mut g, spawned(2, 3));
        g.sent(&spawn(ROOT, 4));
        pass(&mut g, spawned(ROOT, 4));
        g.sent(&open(3, 9, 100));
        // A child cannot report its parent, its sibling, itself or the root lost.
        refuse(&mut g, lost(3, 2));
        refuse(&mut g, lost(2, 4));
        refuse(&mut g, lost(2, 2));
        refuse(&mut g, lost(2, ROOT));
        refuse(&mut g, lost(2, 77));
        // The root may: 2 goes with 3 below it, and 3's streams.
        assert_eq!(pass(&mut g, lost(ROOT, 2)), Verdict::Lost(vec![2, 3]));
        refuse(&mut g, data(3, 9, Fd::Stdout, 1));
        // Late news of a context already gone is not a breach.
        assert_eq!(pass(&mut g, lost(ROOT, 3)), Verdict::Ignore);
        assert_eq!(pass(&mut g, lost(ROOT, 2)), Verdict::Ignore);
        // 4 lives on.
        assert_eq!(pass(&mut g, lost(ROOT, 4)), Verdict::Lost(vec![4]));
    }
}
