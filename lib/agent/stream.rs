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

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};

use super::launch::{self, Launched, LaunchedIo, Session};
use crate::credit::CreditGate;
use crate::link::LinkSender;
use crate::proto::flow::{DEFAULT_WINDOW, RecvWindow};
use crate::proto::{ContextId, Fd, Frame, MAX_DATA, Message, OpenSpec, StreamId, WinSize};
use crate::sys::process::{exit_status, kill, kill_group};

/// After `Close`, how long a process may take to exit on SIGHUP before SIGKILL.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// After a pty session's process exits, how long to keep relaying what others write to
/// the terminal.
const PTY_DRAIN: Duration = Duration::from_millis(500);

/// Bytes for a process's stdin.
#[derive(Debug)]
pub enum Input {
    Data(Bytes),
    Eof,
}

/// Counts processes not yet reaped, so shutdown can wait for them.
#[derive(Debug, Default)]
pub struct Live {
    count: AtomicUsize,
    changed: Notify,
}

impl Live {
    fn add(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn remove(&self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Waits until no process is left or `limit` passes; true if none is left.
    pub async fn wait_empty(&self, limit: Duration) -> bool {
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
pub struct StreamHandle {
    pub pid: u32,
    input: Option<mpsc::UnboundedSender<Input>>,
    stdout: Arc<CreditGate>,
    stderr: Arc<CreditGate>,
    pty: Option<OwnedFd>,
}

/// Where a stream reports.
#[derive(Clone)]
pub struct Reporting {
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
}

impl StreamHandle {
    /// Starts the process and its pumps. Errors are for the `OpenFailed` message.
    pub fn start(
        stream: StreamId,
        spec: &OpenSpec,
        session: &Session,
        report: Reporting,
    ) -> std::io::Result<StreamHandle> {
        let Launched { child, pid, io } = launch::launch(spec, session)?;
        report.live.add();
        let stdout = Arc::new(CreditGate::new(spec.window));
        let stderr = Arc::new(CreditGate::new(spec.window));
        let (input_tx, input_rx) = mpsc::unbounded_channel();
        let mut pty = None;
        let outputs = match io {
            LaunchedIo::Pipes {
                stdin,
                stdout: out,
                stderr: err,
            } => {
                tokio::spawn(pump_input(stream, input_rx, stdin, report.clone(), false));
                vec![
                    tokio::spawn(pump_output(
                        stream,
                        Fd::Stdout,
                        out,
                        stdout.clone(),
                        report.clone(),
                    )),
                    tokio::spawn(pump_output(
                        stream,
                        Fd::Stderr,
                        err,
                        stderr.clone(),
                        report.clone(),
                    )),
                ]
            }
            LaunchedIo::Pty { master, resize } => {
                pty = Some(resize);
                let (r, w) = tokio::io::split(master);
                tokio::spawn(pump_input(stream, input_rx, w, report.clone(), true));
                report.send(Message::Eof {
                    stream,
                    fd: Fd::Stderr,
                });
                vec![tokio::spawn(pump_output(
                    stream,
                    Fd::Stdout,
                    r,
                    stdout.clone(),
                    report.clone(),
                ))]
            }
        };
        let is_pty = pty.is_some();
        tokio::spawn(supervise(stream, child, outputs, is_pty, report));
        Ok(StreamHandle {
            pid,
            input: Some(input_tx),
            stdout,
            stderr,
            pty,
        })
    }

    pub fn input(&self, input: Input) {
        if let Some(tx) = &self.input {
            let _ = tx.send(input);
        }
    }

    pub fn credit(&self, fd: Fd, bytes: u32) {
        match fd {
            Fd::Stdout => self.stdout.grant(bytes),
            Fd::Stderr => self.stderr.grant(bytes),
            Fd::Stdin => tracing::warn!("ignoring credit for stdin from upstream"),
        }
    }

    /// Nobody reads `fd` any more: stop relaying it and close our end of the pipe, so the
    /// process gets SIGPIPE on its next write, as under sshd.
    pub fn stop_output(&self, fd: Fd) {
        match fd {
            Fd::Stdout => self.stdout.close(),
            Fd::Stderr => self.stderr.close(),
            Fd::Stdin => {}
        }
    }

    /// ssh delivers signals to the session's process itself, not its group.
    pub fn signal(&self, sig: Signal) {
        kill(self.pid, sig);
    }

    pub fn resize(&self, size: WinSize) {
        if let Some(pty) = &self.pty {
            launch::resize(pty, size);
        }
    }

    /// The client is gone: hang up on the process group, stop relaying, and kill the group
    /// if it outlives the grace period.
    pub fn close(&mut self) {
        self.input = None;
        self.stdout.close();
        self.stderr.close();
        kill_group(self.pid, Signal::SIGHUP);
        kill_group(self.pid, Signal::SIGCONT);
        let pid = self.pid;
        tokio::spawn(async move {
            tokio::time::sleep(CLOSE_GRACE).await;
            kill_group(pid, Signal::SIGKILL);
        });
    }

    /// Sends `sig` to the whole process group and stops relaying output.
    pub fn terminate(&mut self, sig: Signal) {
        self.input = None;
        self.stdout.close();
        self.stderr.close();
        kill_group(self.pid, sig);
        if sig != Signal::SIGKILL {
            kill_group(self.pid, Signal::SIGCONT);
        }
    }
}

/// Reads `src` as far as credit allows and sends it up, then `Eof`.
async fn pump_output(
    stream: StreamId,
    fd: Fd,
    mut src: impl AsyncRead + Unpin,
    gate: Arc<CreditGate>,
    report: Reporting,
) {
    loop {
        let Some(allowed) = gate.acquire(MAX_DATA).await else {
            return; // closed: nobody wants the rest
        };
        let mut buf = BytesMut::with_capacity(allowed);
        let mut n = match src.read_buf(&mut (&mut buf).limit(allowed)).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("stream {stream}: reading {fd:?}: {e}");
                0
            }
        };
        // Gather what is already in the pipe into the same frame.
        while n > 0 && n < allowed {
            match src
                .read_buf(&mut (&mut buf).limit(allowed - n))
                .now_or_never()
            {
                Some(Ok(more)) if more > 0 => n += more,
                _ => break,
            }
        }
        gate.give_back(allowed - n);
        if n == 0 {
            report.send(Message::Eof { stream, fd });
            return;
        }
        let frame = Frame::with_data(report.me, Message::Data { stream, fd }, buf.freeze());
        if report.up.send(frame).is_err() {
            return;
        }
    }
}

/// Writes what the master sends to the process's stdin and returns credit as it goes.
/// After a write error (the process closed its stdin) bytes are discarded but still
/// credited, as sshd does, so the client never blocks on a reader that is gone.
async fn pump_input(
    stream: StreamId,
    mut rx: mpsc::UnboundedReceiver<Input>,
    dst: impl AsyncWrite + Unpin,
    report: Reporting,
    is_pty: bool,
) {
    let mut window = RecvWindow::new(DEFAULT_WINDOW);
    let mut dst = Some(dst);
    while let Some(input) = rx.recv().await {
        match input {
            Input::Data(bytes) => {
                if let Err(e) = window.received(bytes.len()) {
                    tracing::warn!("stream {stream}: stdin: {e}");
                }
                if let Some(w) = dst.as_mut()
                    && w.write_all(&bytes).await.is_err()
                {
                    dst = None;
                }
                if let Some(grant) = window.consumed(bytes.len()) {
                    report.send(Message::Credit {
                        stream,
                        fd: Fd::Stdin,
                        bytes: grant,
                    });
                }
            }
            // A pty has no half-close: its one descriptor is also the output.
            Input::Eof if is_pty => {}
            Input::Eof => {
                if let Some(mut w) = dst.take() {
                    let _ = w.shutdown().await;
                }
            }
        }
    }
}

/// Reaps the process, waits for its output to be sent, then reports how it ended.
async fn supervise(
    stream: StreamId,
    mut child: tokio::process::Child,
    outputs: Vec<tokio::task::JoinHandle<()>>,
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
    let status = match status {
        Ok(s) => exit_status(s),
        Err(e) => {
            tracing::warn!("stream {stream}: waiting for the process: {e}");
            crate::proto::ExitStatus::Code(255)
        }
    };
    report.send(Message::Exit { stream, status });
    let _ = report.done.send(stream);
}
