//! Running one point's plan: every process is opened *held* (forked on its host, waiting
//! just before its command); then phase by phase they are released together — the first
//! phase at once, each later one when every process it waits for is ready — so start
//! times within a phase are close. Output is interleaved line by line; everything is
//! stopped together at the deadline, on ^C, when one fails or is not ready in time; files
//! are fetched; a report is made.
//!
//! Each process is an ordinary session on its host's context: the master writes its stdout
//! and stderr into pipes this process reads, and its control connection carries
//! `Release`, `Stop` and, back, `Released` and the exit status. A readiness check on a port
//! is a TCP stream opened by the agent of the process's host, so nothing is needed there.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

use super::escape;
use super::lines::{LineBuffer, Prefix};
use super::plan::{Plan, Proc, Ready};
use super::progress::Progress;
use crate::client::{self, MasterConn};
use crate::link::{self, LinkSender};
use crate::proto::flow::DEFAULT_WINDOW;
use crate::proto::{
    Caller, Endpoint, ExitStatus, Frame, FrameCodec, MASTER, Message, OpenSpec, Reply, Request,
    Target,
};

/// After stopping, how long beyond the grace to wait for processes to report back.
const STOP_SLACK: Duration = Duration::from_secs(10);
/// Read buffers per process: its control connection, and each of its output pipes.
const CONTROL_BUFFER: usize = 4 * 1024;
const OUTPUT_BUFFER: usize = 16 * 1024;
/// Between attempts to connect to a readiness port: from the first to the last.
const PROBE_FIRST: Duration = Duration::from_millis(20);
const PROBE_MAX: Duration = Duration::from_millis(100);

/// How a process ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// It never started: the message says why.
    NotStarted(String),
    Exited(ExitStatus),
    /// Its connection went away before it reported an exit.
    Lost(String),
}

/// A fetched file: its remote path, and where it landed or why not.
pub(crate) type Fetched = (String, Result<PathBuf, String>);

/// Why everything was stopped, if it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// Everything ended on its own.
    None,
    Deadline,
    Interrupted,
    /// This process (index into the plan's processes) failed.
    Failure(usize),
    /// Some processes could not be started.
    StartFailed,
    /// This process was not ready in time (or ended first), and others waited for it.
    NotReady(usize, String),
}

/// One process's story.
#[derive(Debug, Clone)]
pub(crate) struct ProcReport {
    pub ending: Ending,
    /// Stopped by us (deadline, ^C, another's failure): its signal death is no failure.
    pub stopped: bool,
    /// Its phase was released (so it ran its command).
    pub released: bool,
    /// From the release of its phase to its exit.
    pub runtime: Option<Duration>,
    pub bytes_out: u64,
    pub bytes_err: u64,
    pub fetched: Vec<Fetched>,
}

impl ProcReport {
    /// Whether this process counts as failed.
    pub(crate) fn failed(&self) -> bool {
        match &self.ending {
            Ending::NotStarted(_) | Ending::Lost(_) => true,
            Ending::Exited(ExitStatus::Code(c)) => *c != 0 && !self.stopped,
            Ending::Exited(ExitStatus::Signal { .. }) => !self.stopped,
        }
    }
}

/// One phase's release.
#[derive(Debug, Clone, Default)]
pub(crate) struct PhaseReport {
    /// From the start of the point to the phase's release; `None`: never released.
    pub released_after: Option<Duration>,
    /// From the first to the last `Released` of its processes.
    pub spread: Option<Duration>,
    pub processes: usize,
}

/// The whole point.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub procs: Vec<ProcReport>,
    pub phases: Vec<PhaseReport>,
    pub reason: StopReason,
    /// The largest release spread of any phase.
    pub start_spread: Option<Duration>,
    /// From the start until the first phase was released.
    pub startup: Duration,
    pub total: Duration,
}

/// How lines reach the terminal.
#[derive(Clone)]
pub(crate) struct Display {
    pub colour: bool,
    /// Output lines go to stderr (stdout carries a JSON report).
    pub to_stderr: bool,
    /// Escape control characters in remote output (the destination is a terminal).
    pub escape: bool,
    pub progress: Progress,
}

/// What every point of a run shares.
pub(crate) struct Shared<'a> {
    /// `targets[h]` is where host `h` is.
    pub targets: &'a [Target],
    pub socket: &'a Path,
    pub display: Display,
    /// Becomes true on ^C.
    pub interrupted: watch::Receiver<bool>,
}

enum Event {
    Released(usize, Instant),
    Exited(usize, ExitStatus, Instant),
    Lost(usize, String),
    Ready(usize),
    NotReady(usize, String),
}

/// An opened (held) process.
struct Opened {
    control: LinkSender,
    frames: link::LinkReader<tokio::net::unix::OwnedReadHalf>,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// A line to print: which process, which stream, the bytes.
type Line = (usize, bool, Vec<u8>);

/// The state of a point while it runs, for the main loop.
struct Run<'a> {
    plan: &'a Plan,
    shared: &'a Shared<'a>,
    reports: Vec<ProcReport>,
    controls: Vec<Option<LinkSender>>,
    reason: StopReason,
    stopping: bool,
    /// When each phase was released.
    phase_released: Vec<Option<Instant>>,
    /// When each process's `Released` arrived.
    released: Vec<Option<Instant>>,
    ready: Vec<bool>,
    running: usize,
    events: mpsc::UnboundedSender<Event>,
    /// Readiness checks and timers, cancelled when the point ends.
    checks: Vec<tokio::task::JoinHandle<()>>,
    stop_deadline: tokio::time::Instant,
    deadline: Option<tokio::time::Instant>,
}

/// Runs one point's `plan`.
pub(crate) async fn run(plan: &Plan, shared: &Shared<'_>) -> Report {
    let started = Instant::now();
    let n = plan.procs.len();
    let (opened, mut reports, start_failed) = open_all(plan, shared).await;

    // The printer: one writer, so lines never interleave mid-line.
    let (lines_tx, lines_rx) = mpsc::channel::<Line>(1024);
    let printer = {
        let (prefixes, files, display) = (
            prefixes(plan, &shared.display),
            output_files(plan),
            shared.display.clone(),
        );
        std::thread::spawn(move || print_lines(lines_rx, prefixes, files, display))
    };

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let counters: Vec<(Arc<AtomicU64>, Arc<AtomicU64>)> =
        (0..n).map(|_| Default::default()).collect();
    let mut controls: Vec<Option<LinkSender>> = (0..n).map(|_| None).collect();
    let mut readers = Vec::new();
    for (i, o) in opened.into_iter().enumerate() {
        let Some(o) = o else { continue };
        let watch_line = match &plan.procs[i].ready {
            Some(Ready::Line(pattern)) => regex::bytes::Regex::new(pattern).ok(),
            _ => None,
        };
        for (fd, stderr, counter) in [
            (o.stdout, false, counters[i].0.clone()),
            (o.stderr, true, counters[i].1.clone()),
        ] {
            let ready = watch_line.clone().map(|re| (re, events_tx.clone()));
            readers.push(tokio::spawn(read_lines(
                i,
                fd,
                stderr,
                lines_tx.clone(),
                counter,
                ready,
            )));
        }
        tokio::spawn(follow(i, o.frames, events_tx.clone()));
        controls[i] = Some(o.control);
    }
    drop(lines_tx);

    let running = controls.iter().filter(|c| c.is_some()).count();
    let mut run = Run {
        plan,
        shared,
        reports: std::mem::take(&mut reports),
        controls,
        reason: StopReason::None,
        stopping: false,
        phase_released: vec![None; plan.phases.len()],
        released: vec![None; n],
        ready: vec![false; n],
        running,
        events: events_tx,
        checks: Vec::new(),
        stop_deadline: tokio::time::Instant::now(),
        deadline: None,
    };
    if start_failed {
        // Held processes that are stopped never run their command.
        run.stop(StopReason::StartFailed, Duration::ZERO);
    } else {
        run.release_ready_phases();
    }
    let startup = started.elapsed();
    run.follow(&mut events).await;
    for c in &run.checks {
        c.abort();
    }
    let Run {
        mut reports,
        reason,
        phase_released,
        released,
        ..
    } = run;
    for r in readers {
        let _ = tokio::time::timeout(STOP_SLACK, r).await;
    }
    let _ = tokio::task::spawn_blocking(move || printer.join()).await;
    for (i, (out, err)) in counters.iter().enumerate() {
        reports[i].bytes_out = out.load(Ordering::Relaxed);
        reports[i].bytes_err = err.load(Ordering::Relaxed);
    }
    let phases = phase_reports(plan, started, &phase_released, &released);
    fetch_all(plan, shared, &mut reports).await;
    Report {
        procs: reports,
        start_spread: phases.iter().filter_map(|p| p.spread).max(),
        phases,
        reason,
        startup,
        total: started.elapsed(),
    }
}

/// Opens every process, held, in parallel. Returns them, their reports so far, and
/// whether any could not be opened.
async fn open_all(
    plan: &Plan,
    shared: &Shared<'_>,
) -> (Vec<Option<Opened>>, Vec<ProcReport>, bool) {
    let n = plan.procs.len();
    let mut opening = tokio::task::JoinSet::new();
    for (i, p) in plan.procs.iter().enumerate() {
        let socket = shared.socket.to_path_buf();
        let target = shared.targets[p.host].clone();
        let spec = held_spec(p);
        opening.spawn(async move { (i, open(&socket, target, spec).await) });
    }
    let mut opened: Vec<Option<Opened>> = (0..n).map(|_| None).collect();
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
    let mut start_failed = false;
    while let Some(joined) = opening.join_next().await {
        let Ok((i, result)) = joined else { continue };
        match result {
            Ok(o) => opened[i] = Some(o),
            Err(why) => {
                reports[i].ending = Ending::NotStarted(why);
                start_failed = true;
            }
        }
    }
    (opened, reports, start_failed)
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

impl Run<'_> {
    /// Follows events until every process has ended (or the stop took too long).
    async fn follow(&mut self, events: &mut mpsc::UnboundedReceiver<Event>) {
        let mut interrupted = self.shared.interrupted.clone();
        while self.running > 0 {
            tokio::select! {
                event = events.recv() => match event {
                    Some(e) => self.on_event(e),
                    None => break,
                },
                _ = sleep_until(self.deadline), if !self.stopping => {
                    self.stop(StopReason::Deadline, self.plan.grace);
                }
                _ = interrupted.wait_for(|i| *i), if !self.stopping => {
                    self.stop(StopReason::Interrupted, self.plan.grace);
                }
                _ = tokio::time::sleep_until(self.stop_deadline), if self.stopping => break,
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Released(i, at) => {
                self.released[i] = Some(at);
                self.reports[i].released = true;
                self.start_readiness(i);
                self.show_counts();
            }
            Event::Exited(i, status, at) => {
                // Counted from the barrier's fall, as the deadline is: a late
                // `Released` reply says nothing about when the process began.
                let phase = self.plan.procs[i].phase;
                self.reports[i].runtime = self.released[i]
                    .and(self.phase_released[phase])
                    .map(|t| at.duration_since(t));
                self.reports[i].ending = Ending::Exited(status.clone());
                self.controls[i] = None;
                self.running -= 1;
                if self.reports[i].failed() && self.plan.stop_on_failure {
                    self.stop(StopReason::Failure(i), self.plan.grace);
                } else if !self.ready[i] && self.awaited(i) {
                    let status = match status {
                        ExitStatus::Code(c) => format!("exit {c}"),
                        ExitStatus::Signal { signal, .. } => format!("signal {signal}"),
                    };
                    let why = format!("it ended ({status}) before it was ready");
                    self.stop(StopReason::NotReady(i, why), self.plan.grace);
                }
                self.show_counts();
            }
            Event::Lost(i, why) => {
                self.reports[i].ending = Ending::Lost(why.clone());
                self.controls[i] = None;
                self.running -= 1;
                if self.plan.stop_on_failure {
                    self.stop(StopReason::Failure(i), self.plan.grace);
                } else if !self.ready[i] && self.awaited(i) {
                    let why = format!("it was lost before it was ready: {why}");
                    self.stop(StopReason::NotReady(i, why), self.plan.grace);
                }
                self.show_counts();
            }
            Event::Ready(i) => {
                if !self.ready[i] {
                    self.ready[i] = true;
                    self.release_ready_phases();
                }
            }
            Event::NotReady(i, why) => {
                if !self.ready[i] {
                    self.stop(StopReason::NotReady(i, why), self.plan.grace);
                }
            }
        }
    }

    /// Whether a phase not yet released waits for process `i`.
    fn awaited(&self, i: usize) -> bool {
        let name = &self.plan.procs[i].name;
        self.plan
            .phases
            .iter()
            .zip(&self.phase_released)
            .any(|(ph, at)| at.is_none() && ph.after.contains(name))
    }

    /// Releases every phase whose processes to wait for are all ready; once all are
    /// released, the duration starts.
    fn release_ready_phases(&mut self) {
        if self.stopping {
            return;
        }
        let mut changed = true;
        while changed {
            changed = false;
            for k in 0..self.plan.phases.len() {
                if self.phase_released[k].is_some() {
                    continue;
                }
                let after = &self.plan.phases[k].after;
                let waiting = self
                    .plan
                    .procs
                    .iter()
                    .enumerate()
                    .any(|(i, p)| after.contains(&p.name) && !self.ready[i]);
                if !waiting {
                    self.release(k);
                    changed = true;
                }
            }
        }
        if self.deadline.is_none() && self.phase_released.iter().all(Option::is_some) {
            self.deadline = self.plan.duration.map(|d| tokio::time::Instant::now() + d);
        }
    }

    fn release(&mut self, k: usize) {
        self.phase_released[k] = Some(Instant::now());
        for (i, p) in self.plan.procs.iter().enumerate() {
            if p.phase == k
                && let Some(c) = &self.controls[i]
            {
                let _ = c.send(Frame::new(MASTER, Message::Release { stream: 0 }));
            }
        }
    }

    /// Process `i` runs: start whatever tells when it is ready.
    fn start_readiness(&mut self, i: usize) {
        let p = &self.plan.procs[i];
        let events = self.events.clone();
        let timeout = p.ready_timeout;
        match &p.ready {
            None => self.on_event(Event::Ready(i)),
            Some(Ready::Delay(d)) => {
                let d = *d;
                self.checks.push(tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = events.send(Event::Ready(i));
                }));
            }
            Some(Ready::Line(pattern)) => {
                let why = format!(
                    "no line of its output matched /{pattern}/ within {}",
                    secs(timeout)
                );
                self.checks.push(tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    let _ = events.send(Event::NotReady(i, why));
                }));
            }
            Some(Ready::Port { host, port }) => {
                let endpoint = Endpoint {
                    host: host.clone(),
                    port: *port,
                };
                let socket = self.shared.socket.to_path_buf();
                let target = self.shared.targets[p.host].clone();
                self.checks.push(tokio::spawn(probe_port(
                    i, socket, target, endpoint, timeout, events,
                )));
            }
        }
    }

    /// Stops everything (once): SIGTERM to every process, SIGKILL after `grace`.
    fn stop(&mut self, reason: StopReason, grace: Duration) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.reason = reason;
        self.stop_deadline = tokio::time::Instant::now() + grace + STOP_SLACK;
        let grace_ms = grace.as_millis() as u64;
        for (i, c) in self.controls.iter().enumerate() {
            if let Some(c) = c {
                self.reports[i].stopped = true;
                let _ = c.send(Frame::new(
                    MASTER,
                    Message::Stop {
                        stream: 0,
                        grace_ms,
                    },
                ));
            }
        }
    }

    fn show_counts(&self) {
        let running = self
            .released
            .iter()
            .zip(&self.controls)
            .filter(|(r, c)| r.is_some() && c.is_some())
            .count();
        // A process still running has no ending yet; only those that ended can have failed.
        let failed = self
            .reports
            .iter()
            .zip(&self.controls)
            .filter(|(r, c)| c.is_none() && r.failed())
            .count();
        self.shared.display.progress.counts(running, failed);
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Tries to connect to `endpoint` from the process's host until it accepts (ready) or
/// `timeout` passes (not ready, with the last refusal).
async fn probe_port(
    i: usize,
    socket: PathBuf,
    target: Target,
    endpoint: Endpoint,
    timeout: Duration,
    events: mpsc::UnboundedSender<Event>,
) {
    let give_up = Instant::now() + timeout;
    let mut wait = PROBE_FIRST;
    loop {
        let (s, t, e) = (socket.clone(), target.clone(), endpoint.clone());
        // An attempt that hangs (a filtered port) must not outlast the timeout.
        let left = give_up.saturating_duration_since(Instant::now());
        let attempt = tokio::task::spawn_blocking(move || connect_once(&s, t, e));
        let last = match tokio::time::timeout(left, attempt).await {
            Ok(Ok(Ok(()))) => {
                let _ = events.send(Event::Ready(i));
                return;
            }
            Ok(Ok(Err(why))) => why,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the last attempt did not finish".into(),
        };
        if Instant::now() + wait >= give_up {
            let why = format!(
                "nothing accepted connections on {}:{} within {} ({})",
                endpoint.host,
                endpoint.port,
                secs(timeout),
                last
            );
            let _ = events.send(Event::NotReady(i, why));
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(PROBE_MAX);
    }
}

/// One TCP connection from the target's agent to `endpoint`, closed as soon as it is made.
fn connect_once(socket: &Path, target: Target, endpoint: Endpoint) -> Result<(), String> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| e.to_string())?;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| e.to_string())?;
    let mut conn = MasterConn::connect(socket).map_err(|e| e.to_string())?;
    let spec = OpenSpec {
        connect: Some(endpoint),
        ..OpenSpec::default()
    };
    let fd = theirs.as_raw_fd();
    client::open(
        &mut conn,
        Request::Session {
            target,
            spec,
            caller: Caller::default(),
        },
        &[fd, fd, null.as_raw_fd()],
        None,
    )
    .map_err(|e| e.message)?;
    drop((ours, theirs, conn));
    Ok(())
}

fn phase_reports(
    plan: &Plan,
    started: Instant,
    phase_released: &[Option<Instant>],
    released: &[Option<Instant>],
) -> Vec<PhaseReport> {
    (0..plan.phases.len())
        .map(|k| {
            let times: Vec<Instant> = plan
                .procs
                .iter()
                .zip(released)
                .filter(|(p, _)| p.phase == k)
                .filter_map(|(_, r)| *r)
                .collect();
            PhaseReport {
                released_after: phase_released[k].map(|t| t.duration_since(started)),
                spread: times
                    .iter()
                    .max()
                    .zip(times.iter().min())
                    .map(|(max, min)| max.duration_since(*min)),
                processes: plan.procs.iter().filter(|p| p.phase == k).count(),
            }
        })
        .collect()
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Opens one held process: its control connection, and the read ends of its output.
async fn open(socket: &Path, target: Target, spec: OpenSpec) -> Result<Opened, String> {
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string());
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let socket = socket.to_path_buf();
    // The request and its password dialogue are the shim's own, done on a blocking thread.
    let (stream, leftover) = tokio::task::spawn_blocking(move || {
        let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
        let mut conn =
            MasterConn::connect(&socket).map_err(|e| format!("cannot reach the master: {e}"))?;
        let fds = [null.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
        client::open(
            &mut conn,
            Request::Session {
                target,
                spec,
                caller: Caller::default(),
            },
            &fds,
            None,
        )
        .map_err(|e| e.message)?;
        // The master has its own copies of the write ends; ours would keep the pipes open.
        drop((out_w, err_w, null));
        Ok::<_, String>(conn.into_parts())
    })
    .await
    .map_err(|e| e.to_string())??;
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    let stream = tokio::net::UnixStream::from_std(stream).map_err(|e| e.to_string())?;
    let (r, w) = stream.into_split();
    // Only small control frames come here: no need for a link's large read buffer.
    let mut frames = link::LinkReader::with_capacity(r, FrameCodec::default(), CONTROL_BUFFER);
    frames.read_buffer_mut().extend_from_slice(&leftover);
    let (control, _writer) = link::spawn_writer(w);
    Ok(Opened {
        control,
        frames,
        stdout: out_r,
        stderr: err_r,
    })
}

/// Follows a process's control connection until it reports its exit.
async fn follow(
    i: usize,
    mut frames: link::LinkReader<tokio::net::unix::OwnedReadHalf>,
    events: mpsc::UnboundedSender<Event>,
) {
    while let Some(frame) = frames.next().await {
        match frame.map(|f| f.msg) {
            Ok(Message::Released { .. }) => {
                let _ = events.send(Event::Released(i, Instant::now()));
            }
            Ok(Message::Exit { status, .. }) => {
                let _ = events.send(Event::Exited(i, status, Instant::now()));
                return;
            }
            Ok(Message::Reply(reply)) => {
                let why = match *reply {
                    Reply::Failed { message, .. } => message,
                    other => format!("{other:?}"),
                };
                let _ = events.send(Event::Lost(i, why));
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = events.send(Event::Lost(i, e.to_string()));
                return;
            }
        }
    }
    let _ = events.send(Event::Lost(i, "the master closed the connection".into()));
}

/// Reads one output pipe, cutting it into lines for the printer; when `ready` is given,
/// the first line that matches says the process is ready.
async fn read_lines(
    i: usize,
    fd: OwnedFd,
    stderr: bool,
    lines: mpsc::Sender<Line>,
    count: Arc<AtomicU64>,
    mut ready: Option<(regex::bytes::Regex, mpsc::UnboundedSender<Event>)>,
) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut buf = vec![0u8; OUTPUT_BUFFER];
    let mut cut = LineBuffer::default();
    let mut check = |line: &[u8]| {
        if let Some((re, events)) = &ready {
            let text = line.strip_suffix(b"\n").unwrap_or(line);
            if re.is_match(text.strip_suffix(b"\r").unwrap_or(text)) {
                let _ = events.send(Event::Ready(i));
                ready = None;
            }
        }
    };
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        count.fetch_add(n as u64, Ordering::Relaxed);
        for line in cut.push(&buf[..n]) {
            check(&line);
            // Waiting here when the terminal is slow holds the process back, as it should.
            if lines.send((i, stderr, line)).await.is_err() {
                return;
            }
        }
    }
    if let Some(line) = cut.finish() {
        check(&line);
        let _ = lines.send((i, stderr, line)).await;
    }
}

fn prefixes(plan: &Plan, display: &Display) -> Vec<Prefix> {
    let width = plan
        .procs
        .iter()
        .map(|p| plan.hosts[p.host].address.len() + 1 + p.label().len())
        .max()
        .unwrap_or(0);
    plan.procs
        .iter()
        .map(|p| {
            let c = display.colour.then(|| colour_of(plan, p));
            Prefix::new(&plan.hosts[p.host].address, &p.label(), width, c)
        })
        .collect()
}

/// Per process, files for stdout and stderr when the plan asks for them.
fn output_files(plan: &Plan) -> Vec<Option<(std::fs::File, std::fs::File)>> {
    plan.procs
        .iter()
        .map(|p| {
            let (out, err) = plan.output_paths(p)?;
            std::fs::create_dir_all(out.parent()?).ok()?;
            Some((
                std::fs::File::create(out).ok()?,
                std::fs::File::create(err).ok()?,
            ))
        })
        .collect()
}

/// How many lines the printer writes at once, with the status line moved out of the way
/// only once for all of them.
const BATCH: usize = 256;

/// The one writer of the terminal (and of the per-stream files).
fn print_lines(
    mut lines: mpsc::Receiver<Line>,
    prefixes: Vec<Prefix>,
    mut files: Vec<Option<(std::fs::File, std::fs::File)>>,
    display: Display,
) {
    use std::io::Write;
    let mut terminal: Box<dyn Write> = if display.to_stderr {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let mut batch = Vec::new();
    while let Some(first) = lines.blocking_recv() {
        batch.clear();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some((i, stderr, line)) = next {
            let shown = if display.escape {
                escape::line(&line)
            } else {
                std::borrow::Cow::Borrowed(line.as_slice())
            };
            batch.extend_from_slice(&prefixes[i].line(&shown, stderr));
            if let Some((out, err)) = files[i].as_mut() {
                let _ = if stderr {
                    err.write_all(&line)
                } else {
                    out.write_all(&line)
                };
            }
            taken += 1;
            next = if taken < BATCH {
                lines.try_recv().ok()
            } else {
                None
            };
        }
        display.progress.suspend(|| {
            let _ = terminal.write_all(&batch);
            let _ = terminal.flush();
        });
    }
}

/// A colour per (host, process name), in order of appearance.
fn colour_of(plan: &Plan, p: &Proc) -> usize {
    let mut seen: Vec<(usize, &str)> = Vec::new();
    for q in &plan.procs {
        if !seen.contains(&(q.host, q.name.as_str())) {
            seen.push((q.host, q.name.as_str()));
        }
    }
    seen.iter()
        .position(|k| *k == (p.host, p.name.as_str()))
        .unwrap_or(0)
}

/// Where a fetched file goes: its name in the process's directory, made unique among the
/// process's files (`log`, `log.1`, …; `stdout` and `stderr` are taken by the output).
fn fetch_name(remote: &str, taken: &mut HashSet<String>) -> String {
    let base = Path::new(remote)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let mut name = base.clone();
    let mut k = 1;
    while !taken.insert(name.clone()) {
        name = format!("{base}.{k}");
        k += 1;
    }
    name
}

/// Brings back every process's fetch list into its fetch directory.
async fn fetch_all(plan: &Plan, shared: &Shared<'_>, reports: &mut [ProcReport]) {
    let mut jobs = tokio::task::JoinSet::new();
    for (i, p) in plan.procs.iter().enumerate() {
        let mut taken: HashSet<String> = ["stdout", "stderr"].map(String::from).into();
        for remote in &p.fetch {
            let local = plan.fetch_dir(p).join(fetch_name(remote, &mut taken));
            let (socket, target, remote) = (
                shared.socket.to_path_buf(),
                shared.targets[p.host].clone(),
                remote.clone(),
            );
            jobs.spawn_blocking(move || {
                let got = fetch(&socket, target, &remote, &local).map(|_| local);
                (i, remote, got)
            });
        }
    }
    let mut fetched: HashMap<usize, Vec<Fetched>> = HashMap::new();
    while let Some(Ok((i, remote, got))) = jobs.join_next().await {
        fetched.entry(i).or_default().push((remote, got));
    }
    for (i, mut f) in fetched {
        f.sort_by(|a, b| a.0.cmp(&b.0));
        reports[i].fetched = f;
    }
}

/// `cat` of one remote file into a local one, written by the master straight into it.
fn fetch(socket: &Path, target: Target, remote: &str, local: &Path) -> Result<(), String> {
    if let Some(dir) = local.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let file = std::fs::File::create(local).map_err(|e| format!("{}: {e}", local.display()))?;
    let command = format!("cat -- {}", shell_quote(remote));
    match run_command(
        socket,
        target,
        &command,
        file,
        &local.with_extension(format!("stderr-{}", std::process::id())),
        true,
    ) {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(local);
            Err(e)
        }
    }
}

/// Runs `command` on `target` with stdout into `stdout` and stderr into the file `errors`
/// (removed afterwards if `scratch`). A non-zero exit is an error with stderr's first line.
fn run_command(
    socket: &Path,
    target: Target,
    command: &str,
    stdout: std::fs::File,
    errors: &Path,
    scratch: bool,
) -> Result<(), String> {
    let stderr = std::fs::File::create(errors).map_err(|e| format!("{}: {e}", errors.display()))?;
    let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
    let mut conn = MasterConn::connect(socket).map_err(|e| e.to_string())?;
    let spec = OpenSpec {
        command: Some(command.as_bytes().to_vec()),
        window: DEFAULT_WINDOW,
        ..OpenSpec::default()
    };
    let opened = client::open(
        &mut conn,
        Request::Session {
            target,
            spec,
            caller: Caller::default(),
        },
        &[null.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()],
        None,
    );
    drop((stdout, stderr));
    opened.map_err(|e| e.message)?;
    let code = client::wait_exit(&mut conn);
    let said = std::fs::read_to_string(errors).unwrap_or_default();
    if scratch {
        let _ = std::fs::remove_file(errors);
    }
    if code == 0 {
        Ok(())
    } else {
        let first = said.lines().next().unwrap_or("");
        Err(format!(
            "exit {code}{}{first}",
            if first.is_empty() { "" } else { ": " }
        ))
    }
}

/// Runs each host's command (a point's setup or teardown) on every host at once; output
/// goes to `dir/<host>/<what>.out|.err`. Returns the failures, one line each.
pub(crate) async fn on_every_host(
    plan: &Plan,
    commands: &[String],
    what: &str,
    dir: &Path,
    shared: &Shared<'_>,
) -> Vec<String> {
    let mut jobs = tokio::task::JoinSet::new();
    for (h, command) in commands.iter().enumerate() {
        let host = plan.hosts[h].address.clone();
        let dir = dir.join(&host);
        let (socket, target, command, what) = (
            shared.socket.to_path_buf(),
            shared.targets[h].clone(),
            command.clone(),
            what.to_string(),
        );
        jobs.spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let out = dir.join(format!("{what}.out"));
            let file =
                std::fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            run_command(
                &socket,
                target,
                &command,
                file,
                &dir.join(format!("{what}.err")),
                false,
            )
            .map_err(|e| format!("{what} on {host} failed ({e})"))
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = jobs.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    failures.sort();
    failures
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetched_names_never_collide() {
        let mut taken: HashSet<String> = ["stdout", "stderr"].map(String::from).into();
        assert_eq!(fetch_name("/var/log/app.log", &mut taken), "app.log");
        assert_eq!(fetch_name("/tmp/app.log", &mut taken), "app.log.1");
        assert_eq!(fetch_name("/tmp/stdout", &mut taken), "stdout.1");
        assert_eq!(fetch_name("/", &mut taken), "file");
    }
}
