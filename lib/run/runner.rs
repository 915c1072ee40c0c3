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
//!
//! Here: the point's state machine ([`Run`]). Beside it, [`open`] (opening the held
//! processes), [`output`] (lines and the printer), [`probe`] (readiness on a port) and [`fetch`]
//! (fetched files, setup and teardown).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{mpsc, watch};

mod fetch;
mod open;
mod output;
mod probe;

use fetch::fetch_all;
pub(crate) use fetch::on_every_host;
use open::{Control, Opened, Openings, open_all};
use output::{output_files, prefixes, print_lines, read_lines};
use probe::probe_port;

use super::plan::{Plan, Ready};
use super::progress::Progress;
use crate::client::{self, MasterConn};
use crate::link;
use crate::proto::{
    Caller, ConnectFailure, Endpoint, ExitStatus, Message, OpenSpec, Reply, Request, Target,
};

/// After stopping, how long beyond the grace to wait for processes to report back.
const STOP_SLACK: Duration = Duration::from_secs(10);
/// After the stop's deadline, how long output already on its way may take to arrive.
const DRAIN: Duration = Duration::from_secs(1);
/// The one buffer all output pipes are read into.
const OUTPUT_BUFFER: usize = 64 * 1024;
/// Between attempts to connect to a readiness port: from the first to the last.
const PROBE_FIRST: Duration = Duration::from_millis(20);
const PROBE_MAX: Duration = Duration::from_millis(100);

/// How a process ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// It never started: the message says why.
    NotStarted(String),
    /// Its host could not be connected (the report says why, once per host).
    NotConnected(ConnectFailure),
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
    /// Some hosts could not be connected, and the plan says to stop then.
    Unreachable,
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
            Ending::NotStarted(_) | Ending::NotConnected(_) | Ending::Lost(_) => true,
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
    /// Hosts that could not be connected (index into the plan's hosts), once each.
    pub unreachable: Vec<(usize, ConnectFailure, String)>,
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

/// A line to print: which process, which stream, the bytes.
type Line = (usize, bool, Vec<u8>);

/// The state of a point while it runs, for the main loop.
struct Run<'a> {
    plan: &'a Plan,
    shared: &'a Shared<'a>,
    reports: Vec<ProcReport>,
    controls: Vec<Option<Control>>,
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
    let Openings {
        opened,
        reports,
        start_failed,
        unreachable,
    } = open_all(plan, shared).await;
    let (lines, printer) = start_printer(plan, &shared.display);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let following = follow_all(plan, opened, lines, &events_tx);
    let mut run = Run::new(plan, shared, reports, following.controls, events_tx);
    let unconnected = unreachable.iter().any(Option::is_some);
    // A process a later phase waits for, on a host that could not be connected.
    let awaited = (0..plan.procs.len())
        .find(|&i| matches!(run.reports[i].ending, Ending::NotConnected(_)) && run.awaited(i));
    if start_failed {
        // Held processes that are stopped never run their command.
        run.stop(StopReason::StartFailed, Duration::ZERO);
    } else if unconnected && plan.stop_on_unreachable {
        run.stop(StopReason::Unreachable, Duration::ZERO);
    } else if let Some(i) = awaited {
        let why = "its host could not be connected".to_string();
        run.stop(StopReason::NotReady(i, why), Duration::ZERO);
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
        stopping,
        stop_deadline,
        ..
    } = run;
    // Output a stop could not close by its deadline is held by something it did not
    // reach: what is in flight is drained, no more is awaited.
    let reading_deadline = match stopping {
        true => stop_deadline.max(tokio::time::Instant::now() + DRAIN),
        false => tokio::time::Instant::now() + STOP_SLACK,
    };
    let held = stop_reading(following.readers, reading_deadline).await;
    let _ = tokio::task::spawn_blocking(move || printer.join()).await;
    for i in held {
        let p = &plan.procs[i];
        eprintln!(
            "mitossh: {} {}: output still open after the run ended (a process it started \
             in the background holds it); stopped reading it",
            plan.hosts[p.host].address,
            p.label(),
        );
    }
    for (report, (out, err)) in reports.iter_mut().zip(&following.counters) {
        report.bytes_out = out.load(Ordering::Relaxed);
        report.bytes_err = err.load(Ordering::Relaxed);
    }
    let phases = phase_reports(plan, started, &phase_released, &released);
    fetch_all(plan, shared, &mut reports).await;
    Report {
        procs: reports,
        unreachable: unreachable
            .into_iter()
            .enumerate()
            .filter_map(|(h, u)| u.map(|(kind, message)| (h, kind, message)))
            .collect(),
        start_spread: phases.iter().filter_map(|p| p.spread).max(),
        phases,
        reason,
        startup,
        total: started.elapsed(),
    }
}

/// The printer: one writer, so lines never interleave mid-line.
fn start_printer(
    plan: &Plan,
    display: &Display,
) -> (mpsc::Sender<Line>, std::thread::JoinHandle<()>) {
    let (lines_tx, lines_rx) = mpsc::channel::<Line>(1024);
    let (prefixes, files, display) = (prefixes(plan, display), output_files(plan), display.clone());
    let printer = std::thread::spawn(move || print_lines(lines_rx, prefixes, files, display));
    (lines_tx, printer)
}

/// Waits for the output readers to reach the end of their pipes, all by `deadline`: a
/// process can leave its output open (held by something it started in the background
/// that a stop does not reach), and the run must end all the same. Those still reading
/// then are stopped, so the printer sees its last sender go; their processes are returned.
async fn stop_reading(
    readers: Vec<(usize, tokio::task::JoinHandle<()>)>,
    deadline: tokio::time::Instant,
) -> Vec<usize> {
    let mut held = Vec::new();
    for (i, reader) in readers {
        let abort = reader.abort_handle();
        if tokio::time::timeout_at(deadline, reader).await.is_err() {
            abort.abort();
            if held.last() != Some(&i) {
                held.push(i);
            }
        }
    }
    held
}

/// The opened processes as they are followed.
struct Following {
    /// Each process's control connection, while it runs.
    controls: Vec<Option<Control>>,
    /// Bytes of stdout and stderr, per process.
    counters: Vec<(Arc<AtomicU64>, Arc<AtomicU64>)>,
    /// The tasks reading the output pipes, with their process.
    readers: Vec<(usize, tokio::task::JoinHandle<()>)>,
}

/// Starts reading every opened process's output into `lines` and following its control
/// connection, which reports to `events`.
fn follow_all(
    plan: &Plan,
    opened: Vec<Option<Opened>>,
    lines: mpsc::Sender<Line>,
    events: &mpsc::UnboundedSender<Event>,
) -> Following {
    let n = plan.procs.len();
    let counters: Vec<(Arc<AtomicU64>, Arc<AtomicU64>)> =
        (0..n).map(|_| Default::default()).collect();
    let mut controls: Vec<Option<Control>> = (0..n).map(|_| None).collect();
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
            let ready = watch_line.clone().map(|re| (re, events.clone()));
            readers.push((
                i,
                tokio::spawn(read_lines(i, fd, stderr, lines.clone(), counter, ready)),
            ));
        }
        tokio::spawn(follow(i, o.frames, events.clone()));
        controls[i] = Some(o.control);
    }
    Following {
        controls,
        counters,
        readers,
    }
}

impl<'a> Run<'a> {
    fn new(
        plan: &'a Plan,
        shared: &'a Shared<'a>,
        reports: Vec<ProcReport>,
        controls: Vec<Option<Control>>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Run<'a> {
        let n = plan.procs.len();
        Run {
            plan,
            shared,
            reports,
            running: controls.iter().filter(|c| c.is_some()).count(),
            controls,
            reason: StopReason::None,
            stopping: false,
            phase_released: vec![None; plan.phases.len()],
            released: vec![None; n],
            ready: vec![false; n],
            events,
            checks: Vec::new(),
            stop_deadline: tokio::time::Instant::now(),
            deadline: None,
        }
    }

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
                let how = match &status {
                    ExitStatus::Code(c) => format!("exit {c}"),
                    ExitStatus::Signal { signal, .. } => format!("signal {signal}"),
                };
                self.reports[i].ending = Ending::Exited(status);
                self.ended(i, format!("it ended ({how}) before it was ready"));
            }
            Event::Lost(i, why) => {
                self.reports[i].ending = Ending::Lost(why.clone());
                self.ended(i, format!("it was lost before it was ready: {why}"));
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

    /// Process `i` has ended (its ending is in its report): a failure stops the point if
    /// the plan says so, and so does an end before it was ready when a phase waits for it
    /// (`unready`: how to say that).
    fn ended(&mut self, i: usize, unready: String) {
        self.controls[i] = None;
        self.running -= 1;
        if self.reports[i].failed() && self.plan.stop_on_failure {
            self.stop(StopReason::Failure(i), self.plan.grace);
        } else if !self.ready[i] && self.awaited(i) {
            self.stop(StopReason::NotReady(i, unready), self.plan.grace);
        }
        self.show_counts();
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
                c.send(Message::Release { stream: 0 });
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
                c.send(Message::Stop {
                    stream: 0,
                    grace_ms,
                });
            }
        }
    }

    /// The status line's counts: counted afresh (every process, at each release and end)
    /// only when there is a status line.
    fn show_counts(&self) {
        if !self.shared.display.progress.shown() {
            return;
        }
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

/// Asks the master for a session of `spec` on `target` with `fds` as its stdin, stdout
/// and stderr, as nobody who can answer questions: the one request every part of a run
/// makes. Errors are the master's one line.
fn request_session(
    conn: &mut MasterConn,
    target: Target,
    spec: OpenSpec,
    fds: &[std::os::fd::RawFd],
) -> Result<(), String> {
    let request = Request::Session {
        target,
        spec,
        caller: Caller::default(),
    };
    client::open(conn, request, fds, None).map_err(|e| e.message)
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
