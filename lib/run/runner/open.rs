//! Opening a point's processes, held: one control connection to the master per process,
//! its output into pipes read here, all requested at once (the master's connect window
//! paces new connections); and the control connection's sending half.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;

use super::super::progress::Progress;
use super::{Ending, ProcReport, Shared};
use crate::client;
use crate::link;
use crate::proto::flow::DEFAULT_WINDOW;
use crate::proto::{
    Caller, ConnectFailure, Frame, FrameCodec, MASTER, Message, OpenSpec, PromptKind, Reply,
    Request, Target,
};
use crate::run::plan::{Plan, Proc};

/// Read buffer of a process's control connection: only small frames come there.
const CONTROL_BUFFER: usize = 4 * 1024;

/// An opened (held) process.
pub(super) struct Opened {
    pub(super) control: Control,
    pub(super) frames: link::LinkReader<tokio::net::unix::OwnedReadHalf>,
    pub(super) stdout: OwnedFd,
    pub(super) stderr: OwnedFd,
}

/// Why a process could not be opened; `connect`: because its host could not be connected.
pub(super) struct NotOpened {
    message: String,
    connect: Option<ConnectFailure>,
}

impl From<String> for NotOpened {
    fn from(message: String) -> NotOpened {
        NotOpened {
            message,
            connect: None,
        }
    }
}

/// The sending half of a process's control connection. It carries two or three tiny
/// frames (`Release`, `Stop`) in all, so they are written straight into the socket
/// rather than through a writer task and queue per process; the rare write that would
/// block is finished by a task, and later frames queue behind it, in order.
#[derive(Clone)]
pub(super) struct Control(Arc<ControlInner>);

struct ControlInner {
    socket: tokio::net::unix::OwnedWriteHalf,
    /// Bytes a task is still writing, which later frames must follow. A mutex: taken
    /// only to append or take, never across an await.
    pending: std::sync::Mutex<Option<Vec<u8>>>,
}

impl Control {
    fn new(socket: tokio::net::unix::OwnedWriteHalf) -> Control {
        Control(Arc::new(ControlInner {
            socket,
            pending: std::sync::Mutex::new(None),
        }))
    }

    pub(super) fn send(&self, msg: Message) {
        let mut buf = bytes::BytesMut::new();
        if crate::proto::frame::encode_into(&Frame::new(MASTER, msg), &mut buf).is_err() {
            return;
        }
        let mut pending = self.0.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queued) = pending.as_mut() {
            queued.extend_from_slice(&buf);
            return;
        }
        let written = match self.0.socket.try_write(&buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(_) => return, // the master is gone; the follower hears it
        };
        if written < buf.len() {
            *pending = Some(buf[written..].to_vec());
            tokio::spawn(self.clone().finish());
        }
    }

    /// Writes what is pending until nothing is.
    async fn finish(self) {
        loop {
            if self.0.socket.writable().await.is_err() {
                return;
            }
            let mut pending = self.0.pending.lock().unwrap_or_else(|p| p.into_inner());
            let Some(buf) = pending.as_mut() else { return };
            match self.0.socket.try_write(buf) {
                Ok(n) if n == buf.len() => {
                    *pending = None;
                    return;
                }
                Ok(n) => {
                    buf.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    *pending = None;
                    return;
                }
            }
        }
    }
}

/// What opening a point's processes came to.
pub(super) struct Openings {
    pub(super) opened: Vec<Option<Opened>>,
    pub(super) reports: Vec<ProcReport>,
    /// Some process could not be started, for another reason than its host.
    pub(super) start_failed: bool,
    /// Per host, why it could not be connected (once, whatever its number of processes).
    pub(super) unreachable: Vec<Option<(ConnectFailure, String)>>,
}

/// Opens every process, held, all at once (the master's connect window paces the new
/// connections among them), showing on the status line how connecting goes.
pub(super) async fn open_all(plan: &Plan, shared: &Shared<'_>) -> Openings {
    let n = plan.procs.len();
    let mut reports: Vec<ProcReport> = (0..n)
        .map(|_| ProcReport {
            ending: Ending::Lost("never reported".into()),
            stopped: false,
            released: false,
            runtime: None,
            bytes_out: 0,
            bytes_err: 0,
            fetched: Vec::new(),
        })
        .collect();
    let mut openings = Openings {
        opened: (0..n).map(|_| None).collect(),
        reports: Vec::new(),
        start_failed: false,
        unreachable: vec![None; plan.hosts.len()],
    };
    // One /dev/null is every process's stdin.
    let null = match std::fs::File::open("/dev/null") {
        Ok(f) => Arc::new(f),
        Err(e) => {
            for r in &mut reports {
                r.ending = Ending::NotStarted(format!("/dev/null: {e}"));
            }
            openings.reports = reports;
            openings.start_failed = true;
            return openings;
        }
    };
    // Asked once: it opens the terminal, and a plan may hold a thousand processes.
    let can_prompt = client::askpass::can_prompt();
    let mut opening = tokio::task::JoinSet::new();
    for (i, p) in plan.procs.iter().enumerate() {
        let socket = shared.socket.to_path_buf();
        let target = shared.targets[p.host].clone();
        let spec = held_spec(p);
        let null = null.clone();
        let progress = shared.display.progress.clone();
        opening.spawn(async move {
            (
                i,
                open(&socket, target, spec, &null, can_prompt, progress).await,
            )
        });
    }
    let mut hosts = HostsConnecting::new(plan.hosts.len());
    let progress = &shared.display.progress;
    progress.connecting(hosts.counts());
    while let Some(joined) = opening.join_next().await {
        let Ok((i, result)) = joined else { continue };
        let h = plan.procs[i].host;
        match result {
            Ok(o) => {
                openings.opened[i] = Some(o);
                hosts.settle(h, true);
            }
            Err(NotOpened {
                message,
                connect: Some(kind),
            }) => {
                reports[i].ending = Ending::NotConnected(kind);
                openings.unreachable[h].get_or_insert((kind, message));
                hosts.settle(h, false);
            }
            Err(NotOpened { message, .. }) => {
                reports[i].ending = Ending::NotStarted(message);
                openings.start_failed = true;
                hosts.settle(h, true);
            }
        }
        progress.connecting(hosts.counts());
    }
    progress.connected();
    openings.reports = reports;
    openings
}

/// Which hosts have answered, for the status line while connecting.
struct HostsConnecting {
    /// Per host: `None` still pending, else whether it connected.
    state: Vec<Option<bool>>,
    connected: usize,
    failed: usize,
}

impl HostsConnecting {
    fn new(hosts: usize) -> HostsConnecting {
        HostsConnecting {
            state: vec![None; hosts],
            connected: 0,
            failed: 0,
        }
    }

    /// Host `h` answered (its first process opened or failed).
    fn settle(&mut self, h: usize, connected: bool) {
        if self.state[h].is_none() {
            self.state[h] = Some(connected);
            if connected {
                self.connected += 1;
            } else {
                self.failed += 1;
            }
        }
    }

    /// (connected, failed, pending)
    fn counts(&self) -> (usize, usize, usize) {
        let pending = self.state.len() - self.connected - self.failed;
        (self.connected, self.failed, pending)
    }
}

/// The process's command, environment and directory, held until released. The agent
/// sets the environment and directory itself: no shell of ours wraps the command.
fn held_spec(p: &Proc) -> OpenSpec {
    OpenSpec {
        command: Some(p.command.clone().into_bytes()),
        env: p
            .env
            .iter()
            .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
            .collect(),
        cwd: p.cwd.clone().map(String::into_bytes),
        hold: true,
        window: DEFAULT_WINDOW,
        ..OpenSpec::default()
    }
}

/// Asks `text` of the person at the terminal (or the user's askpass) as the shim would,
/// off this thread and one question at a time however many hosts ask, with the status
/// line out of the way; and sends the answer (none if nobody gave one).
async fn answer(control: &Control, text: String, kind: PromptKind, progress: Progress) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let secret = tokio::task::spawn_blocking(move || {
        let _asking = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        progress.suspend(|| client::askpass::answer(&text, kind, None))
    })
    .await
    .ok()
    .flatten();
    control.send(Message::PromptReply { secret });
}

/// Opens one held process: its control connection, and the read ends of its output. As
/// the shim does (`client::open`), but on this runtime rather than a thread per process:
/// a thousand processes may wait at once for their hosts to connect. Questions ssh asks
/// while its host connects (a host key, a password) are asked here when a person can
/// answer, as the shim asks them.
async fn open(
    socket: &Path,
    target: Target,
    spec: OpenSpec,
    null: &std::fs::File,
    can_prompt: bool,
    progress: Progress,
) -> Result<Opened, NotOpened> {
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string());
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("cannot reach the master: {e}"))?;
    let caller = Caller {
        can_prompt,
        ..Caller::default()
    };
    let request = Request::Session {
        target,
        spec,
        caller,
    };
    let bytes = client::encode_request(request, true).map_err(|e| e.to_string())?;
    let fds = [null.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
    crate::sys::passfd::send_with_fds_async(&stream, &bytes, &fds)
        .await
        .map_err(|e| format!("mitossh: cannot talk to the master: {e}"))?;
    // The master has its own copies of the write ends; ours would keep the pipes open.
    drop((out_w, err_w));
    let (r, w) = stream.into_split();
    let control = Control::new(w);
    // Only small control frames come here: no need for a link's large read buffer.
    let mut frames = link::LinkReader::with_capacity(r, FrameCodec::default(), CONTROL_BUFFER);
    loop {
        let frame = frames
            .next()
            .await
            .ok_or_else(|| {
                NotOpened::from(
                    "mitossh: the master closed the connection without answering".to_string(),
                )
            })?
            .map_err(|e| format!("mitossh: cannot talk to the master: {e}"))?;
        match frame.msg {
            Message::Reply(reply) => match *reply {
                Reply::Opened { .. } => break,
                Reply::Failed {
                    message, connect, ..
                } => return Err(NotOpened { message, connect }),
                other => return Err(format!("unexpected answer from the master: {other:?}").into()),
            },
            Message::Prompt { text, kind } => answer(&control, text, kind, progress.clone()).await,
            Message::Diagnostic { mut text } => {
                text.push(b'\n');
                let _ = std::io::Write::write_all(&mut std::io::stderr(), &text);
            }
            _ => {}
        }
    }
    Ok(Opened {
        control,
        frames,
        stdout: out_r,
        stderr: err_r,
    })
}
