//! One remote process and the pumps between its stdio and the link.
//!
//! Each stream runs three kinds of task: an output pump per output descriptor (reads only
//! as much as the client granted, so a stalled client stalls the process, not the agent),
//! an input pump (writes what arrives, then returns credit) and a supervisor (reaps the
//! process, waits for its output to drain, then reports the exit status).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::launch::{self, Launched, LaunchedIo, Session};
use crate::credit::CreditGate;
use crate::link::LinkSender;
use crate::proto::flow::{DEFAULT_WINDOW, FlowViolation};
use crate::proto::{
    ContextId, Endpoint, ExitStatus, Fd, Frame, Message, OpenSpec, StreamId, WinSize,
};
use crate::pump::{self, Chunk, Dst, Feed, Inbox, Input, Source};
use crate::sys::fdio::FdIo;
use crate::sys::process::{kill, kill_group, signal_name};

/// After `Close`, how long a process may take to exit on SIGHUP before SIGKILL.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// After a pty session's process exits, how long to keep relaying what others write to
/// the terminal.
const PTY_DRAIN: Duration = Duration::from_millis(500);

/// Counts processes not yet reaped, so shutdown can wait for them.
#[derive(Debug, Default)]
pub(crate) struct Live {
    count: AtomicUsize,
    changed: Notify,
}

impl Live {
    pub(crate) fn add(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn remove(&self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Waits until no process is left or `limit` passes; true if none is left.
    pub(crate) async fn wait_empty(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count.load(Ordering::SeqCst) == 0;
            }
        }
    }
}

/// The agent's handle on one stream.
pub(crate) struct StreamHandle {
    /// The process (and its process group); `None` for a TCP stream.
    pub pid: Option<u32>,
    input: Option<Arc<Feed>>,
    stdout: Arc<CreditGate>,
    stderr: Arc<CreditGate>,
    pty: Option<OwnedFd>,
    /// Ends a TCP stream at once.
    cancel: CancellationToken,
    /// A held process's go signal.
    go: Option<OwnedFd>,
}

/// Where a stream reports.
#[derive(Clone)]
pub(crate) struct Reporting {
    pub me: ContextId,
    pub up: LinkSender,
    /// Receives the stream id once the stream has ended and reported its exit.
    pub done: mpsc::UnboundedSender<StreamId>,
    pub live: Arc<Live>,
}

impl Reporting {
    fn send(&self, msg: Message) {
        let _ = self.up.send(Frame::new(self.me, msg));
    }

    fn finished(&self, stream: StreamId) {
        let _ = self.done.send(stream);
    }
}

impl StreamHandle {
    /// Starts the process and its pumps. Errors are for the `OpenFailed` message.
    pub(crate) fn start(
        stream: StreamId,
        spec: &OpenSpec,
        session: &Session,
        report: Reporting,
    ) -> std::io::Result<StreamHandle> {
        let Launched { child, pid, io, go } = launch::launch(spec, session)?;
        let stdout = Arc::new(CreditGate::new(spec.window));
        let stderr = Arc::new(CreditGate::new(spec.window));
        let (input_tx, input_rx) = pump::inbox(DEFAULT_WINDOW);
        let mut pty = None;
        let (input, outputs) = match io {
            LaunchedIo::Pipes {
                stdin,
                stdout: out,
                stderr: err,
            } => {
                // The process's pipes are the agent's alone: spliced to and from.
                let stdin = Dst::<tokio::io::Empty>::Pipe(FdIo::new(stdin)?.grown());
                let out = FdIo::new(out)?.grown();
                let err = FdIo::new(err)?;
                let input =
                    tokio::spawn(pump_input(stream, input_rx, stdin, report.clone(), false));
                let output = |fd, pipe, gate: &Arc<CreditGate>| {
                    let (gate, report) = (gate.clone(), report.clone());
                    tokio::spawn(async move {
                        let source = Source::pipe(pipe);
                        pump_output(stream, fd, source, gate, report).await
                    })
                };
                (
                    input,
                    vec![
                        output(Fd::Stdout, out, &stdout),
                        output(Fd::Stderr, err, &stderr),
                    ],
                )
            }
            LaunchedIo::Pty { master, resize } => {
                pty = Some(resize);
                let (mut r, w) = tokio::io::split(master);
                let w = Dst::Stream(w);
                let input = tokio::spawn(pump_input(stream, input_rx, w, report.clone(), true));
                let (gate, report) = (stdout.clone(), report.clone());
                // A pty merges stderr into its output: say so up front. From a task, so
                // that it follows the `Opened` the caller sends once this returns.
                (
                    input,
                    vec![tokio::spawn(async move {
                        report.send(Message::Eof {
                            stream,
                            fd: Fd::Stderr,
                        });
                        let source = Source::stream(&mut r);
                        pump_output(stream, Fd::Stdout, source, gate, report).await
                    })],
                )
            }
        };
        let is_pty = pty.is_some();
        // Counted once nothing can fail: `supervise` uncounts it.
        report.live.add();
        tokio::spawn(supervise(stream, child, outputs, input, is_pty, report));
        Ok(StreamHandle {
            pid: Some(pid),
            input: Some(Arc::new(input_tx)),
            stdout,
            stderr,
            pty,
            cancel: CancellationToken::new(),
            go,
        })
    }

    /// A TCP connection from this host to `endpoint`, as `ssh -W` opens: its bytes are
    /// the stream's stdin and stdout. Answers `Opened` or `OpenFailed` itself, once the
    /// connection is made or refused.
    pub(crate) fn connect(
        stream: StreamId,
        endpoint: Endpoint,
        window: u32,
        report: Reporting,
    ) -> StreamHandle {
        let stdout = Arc::new(CreditGate::new(window));
        let stderr = Arc::new(CreditGate::new(window));
        let (input_tx, input_rx) = pump::inbox(DEFAULT_WINDOW);
        let cancel = CancellationToken::new();
        tokio::spawn(run_tcp(
            stream,
            endpoint,
            input_rx,
            stdout.clone(),
            cancel.clone(),
            report,
        ));
        StreamHandle {
            pid: None,
            input: Some(Arc::new(input_tx)),
            stdout,
            stderr,
            pty: None,
            cancel,
            go: None,
        }
    }

    /// Lets a held process run its command. False if it was not held (or already let go).
    pub(crate) fn release(&mut self) -> bool {
        match self.go.take() {
            Some(go) => {
                let mut go = std::fs::File::from(go);
                std::io::Write::write_all(&mut go, b"\n").is_ok()
            }
            None => false,
        }
    }

    /// SIGTERM to the process group now, SIGKILL after `grace` to whatever is left.
    pub(crate) fn stop(&mut self, grace: Duration) {
        // A held process that is stopped must never start.
        self.go = None;
        let Some(pid) = self.pid else {
            self.cancel.cancel();
            return;
        };
        kill_group(pid, Signal::SIGTERM);
        kill_group(pid, Signal::SIGCONT);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            kill_group(pid, Signal::SIGKILL);
        });
    }

    /// Queues stdin for the process; refuses data beyond the window the master was given.
    pub(crate) fn input(&self, input: Input) -> Result<(), FlowViolation> {
        match &self.input {
            Some(tx) => tx.send(input),
            None => Ok(()),
        }
    }

    /// Where stdin bytes go, for a delivery straight from the link.
    pub(crate) fn input_feed(&self) -> Option<Arc<Feed>> {
        self.input.clone()
    }

    pub(crate) fn credit(&self, fd: Fd, bytes: u32) {
        match fd {
            Fd::Stdout => self.stdout.grant(bytes),
            Fd::Stderr => self.stderr.grant(bytes),
            Fd::Stdin => tracing::warn!("ignoring credit for stdin from upstream"),
        }
    }

    /// Nobody reads `fd` any more: stop relaying it and close our end of the pipe, so the
    /// process gets SIGPIPE on its next write, as under sshd.
    pub(crate) fn stop_output(&self, fd: Fd) {
        match fd {
            Fd::Stdout => self.stdout.close(),
            Fd::Stderr => self.stderr.close(),
            Fd::Stdin => {}
        }
    }

    /// ssh delivers signals to the session's process itself, not its group.
    pub(crate) fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid {
            kill(pid, sig);
        }
    }

    pub(crate) fn resize(&self, size: WinSize) {
        if let Some(pty) = &self.pty {
            launch::resize(pty, size);
        }
    }

    /// The client is gone: hang up on the process group, stop relaying, and kill the group
    /// if it outlives the grace period.
    pub(crate) fn close(&mut self) {
        self.input = None;
        self.stdout.close();
        self.stderr.close();
        self.cancel.cancel();
        let Some(pid) = self.pid else { return };
        kill_group(pid, Signal::SIGHUP);
        kill_group(pid, Signal::SIGCONT);
        tokio::spawn(async move {
            tokio::time::sleep(CLOSE_GRACE).await;
            kill_group(pid, Signal::SIGKILL);
        });
    }

    /// Sends `sig` to the whole process group and stops relaying output.
    pub(crate) fn terminate(&mut self, sig: Signal) {
        self.input = None;
        self.stdout.close();
        self.stderr.close();
        self.cancel.cancel();
        let Some(pid) = self.pid else { return };
        kill_group(pid, sig);
        if sig != Signal::SIGKILL {
            kill_group(pid, Signal::SIGCONT);
        }
    }
}

/// Reads one of the process's outputs as far as the client granted and sends it up.
async fn pump_output<R: AsyncRead + Unpin + ?Sized>(
    stream: StreamId,
    fd: Fd,
    src: Source<'_, R>,
    gate: Arc<CreditGate>,
    report: Reporting,
) {
    let up = &report.up;
    pump::read_with_credit(src, &gate, up, |chunk| {
        let sent = match chunk {
            Chunk::Bytes(data) => up.send(Frame::with_data(
                report.me,
                Message::Data { stream, fd },
                data,
            )),
            Chunk::Staged(staged) => {
                up.send_staged(Frame::new(report.me, Message::Data { stream, fd }), staged)
            }
            Chunk::End => up.send(Frame::new(report.me, Message::Eof { stream, fd })),
        };
        sent.is_ok()
    })
    .await;
}

/// Writes what the master sends to the process's stdin and returns credit as it goes.
async fn pump_input<W: AsyncWrite + Unpin>(
    stream: StreamId,
    rx: Inbox,
    dst: Dst<W>,
    report: Reporting,
    is_pty: bool,
) {
    let sink = pump::Sink {
        dst,
        keep_open_on_eof: is_pty,
    };
    let grant = |bytes| {
        report.send(Message::Credit {
            stream,
            fd: Fd::Stdin,
            bytes,
        })
    };
    pump::write_with_credit(rx, sink, grant, || {}).await;
}

/// How long a TCP connection may take to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A TCP stream from start to end: connect, pump both ways until the far side closes or
/// the stream is cancelled, report.
async fn run_tcp(
    stream: StreamId,
    endpoint: Endpoint,
    input: Inbox,
    gate: Arc<CreditGate>,
    cancel: CancellationToken,
    report: Reporting,
) {
    let to = format!("{}:{}", endpoint.host, endpoint.port);
    let connect = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port));
    let sock = tokio::select! {
        r = tokio::time::timeout(CONNECT_TIMEOUT, connect) => match r {
            Ok(Ok(sock)) => sock,
            Ok(Err(e)) => {
                report.send(Message::OpenFailed { stream, error: format!("connect to {to}: {e}") });
                return report.finished(stream);
            }
            Err(_) => {
                report.send(Message::OpenFailed { stream, error: format!("connect to {to}: timed out") });
                return report.finished(stream);
            }
        },
        _ = cancel.cancelled() => {
            // Closed before it was made: the stream still ends with an answer.
            report.send(Message::OpenFailed { stream, error: format!("connect to {to}: closed") });
            return report.finished(stream);
        }
    };
    let _ = sock.set_nodelay(true);
    report.send(Message::Opened {
        stream,
        pid: 0,
        window: DEFAULT_WINDOW,
    });
    report.send(Message::Eof {
        stream,
        fd: Fd::Stderr,
    });
    let (mut r, w) = sock.into_split();
    let writer = tokio::spawn(pump_input(
        stream,
        input,
        Dst::Stream(w),
        report.clone(),
        false,
    ));
    // The stream ends when the far side closes (or on cancel); the client may half-close
    // its direction earlier without ending it.
    let source = Source::stream(&mut r);
    tokio::select! {
        _ = pump_output(stream, Fd::Stdout, source, gate, report.clone()) => {}
        _ = cancel.cancelled() => {}
    }
    writer.abort();
    report.send(Message::Exit {
        stream,
        status: ExitStatus::Code(0),
    });
    report.finished(stream);
}

/// Reaps the process, waits for its output to be sent, then reports how it ended.
async fn supervise(
    stream: StreamId,
    mut child: crate::sys::vfork::Child,
    outputs: Vec<tokio::task::JoinHandle<()>>,
    input: tokio::task::JoinHandle<()>,
    is_pty: bool,
    report: Reporting,
) {
    let status = child.wait().await;
    report.live.remove();
    for mut output in outputs {
        if !is_pty {
            let _ = output.await;
        } else if tokio::time::timeout(PTY_DRAIN, &mut output).await.is_err() {
            // Background jobs still hold the terminal; like sshd, end the session anyway.
            output.abort();
            report.send(Message::Eof {
                stream,
                fd: Fd::Stdout,
            });
        }
    }
    // Nothing of the stream's may follow its Exit, not even stdin credit.
    input.abort();
    let status = match status {
        Ok(s) => exit_status(s),
        Err(e) => {
            tracing::warn!("stream {stream}: waiting for the process: {e}");
            ExitStatus::Code(255)
        }
    };
    report.send(Message::Exit { stream, status });
    report.finished(stream);
}

/// How a process ended, in the protocol's form.
fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        ExitStatus::Code(code)
    } else if let Some(sig) = status.signal() {
        ExitStatus::Signal {
            signal: signal_name(sig),
            core_dumped: status.core_dumped(),
        }
    } else {
        ExitStatus::Code(255)
    }
}
