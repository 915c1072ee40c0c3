//! Running a plan: every process is opened *held* (forked on its host, waiting just before
//! its command), then all are released at once, so their start times are close; their
//! output is interleaved line by line; they are stopped together at the deadline, on ^C or
//! when one fails; files are fetched; a report is made.
//!
//! Each process is an ordinary session on its host's context: the master writes its stdout
//! and stderr into pipes this process reads, and its control connection carries
//! `Release`, `Stop` and, back, `Released` and the exit status.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::lines::{LineBuffer, Prefix};
use super::plan::{Plan, Proc};
use crate::link::{self, LinkSender};
use crate::proto::flow::DEFAULT_WINDOW;
use crate::proto::{Caller, ExitStatus, Frame, MASTER, Message, OpenSpec, Reply, Request, Target};
use crate::shim::client::{self, MasterConn};

/// After stopping, how long beyond the grace to wait for processes to report back.
const STOP_SLACK: Duration = Duration::from_secs(10);

/// How a process ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// It never started: the message says why.
    NotStarted(String),
    Exited(ExitStatus),
    /// Its connection went away before it reported an exit.
    Lost(String),
}

/// A fetched file: its remote path, and where it landed or why not.
pub type Fetched = (String, Result<PathBuf, String>);

/// Why everything was stopped, if it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Everything ended on its own.
    None,
    Deadline,
    Interrupted,
    /// This process (index into the plan's processes) failed.
    Failure(usize),
    /// Some processes could not be started.
    StartFailed,
}

/// One process's story.
#[derive(Debug, Clone)]
pub struct ProcReport {
    pub ending: Ending,
    /// Stopped by us (deadline, ^C, another's failure): its signal death is no failure.
    pub stopped: bool,
    /// From the release of all processes to its exit.
    pub runtime: Option<Duration>,
    pub bytes_out: u64,
    pub bytes_err: u64,
    pub fetched: Vec<Fetched>,
}

impl ProcReport {
    /// Whether this process counts as failed.
    pub fn failed(&self) -> bool {
        match &self.ending {
            Ending::NotStarted(_) | Ending::Lost(_) => true,
            Ending::Exited(ExitStatus::Code(c)) => *c != 0 && !self.stopped,
            Ending::Exited(ExitStatus::Signal { .. }) => !self.stopped,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub procs: Vec<ProcReport>,
    pub reason: StopReason,
    /// From the first to the last `Released` arriving.
    pub start_spread: Option<Duration>,
    /// From the start until every process was running.
    pub startup: Duration,
    pub total: Duration,
}

enum Event {
    Released(usize, Instant),
    Exited(usize, ExitStatus, Instant),
    Lost(usize, String),
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

/// Runs `plan` through the master at `socket`. `targets[h]` is where host `h` is.
/// Output lines go to stdout, or to stderr when `to_stderr` (stdout then carries a JSON
/// report).
pub async fn run(
    plan: &Plan,
    targets: &[Target],
    socket: &Path,
    colour: bool,
    to_stderr: bool,
) -> Report {
    let started = Instant::now();
    let n = plan.procs.len();

    // Open everything, held, in parallel.
    let mut opening = tokio::task::JoinSet::new();
    for (i, p) in plan.procs.iter().enumerate() {
        let (socket, target, command) = (
            socket.to_path_buf(),
            targets[p.host].clone(),
            p.command.clone(),
        );
        opening.spawn(async move { (i, open(&socket, target, command).await) });
    }
    let mut opened: Vec<Option<Opened>> = (0..n).map(|_| None).collect();
    let mut reports: Vec<ProcReport> = (0..n)
        .map(|_| ProcReport {
            ending: Ending::Lost("never reported".into()),
            stopped: false,
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

    // The printer: one writer, so lines never interleave mid-line.
    let width = plan
        .procs
        .iter()
        .map(|p| plan.hosts[p.host].address.len() + 1 + p.label().len())
        .max()
        .unwrap_or(0);
    let prefixes: Vec<Prefix> = plan
        .procs
        .iter()
        .map(|p| {
            let c = colour.then(|| colour_of(plan, p));
            Prefix::new(&plan.hosts[p.host].address, &p.label(), width, c)
        })
        .collect();
    let files = output_files(plan);
    let (lines_tx, lines_rx) = mpsc::channel::<Line>(1024);
    let printer = std::thread::spawn(move || print_lines(lines_rx, prefixes, files, to_stderr));

    // Release everyone at once, then follow them.
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let counters: Vec<(Arc<AtomicU64>, Arc<AtomicU64>)> =
        (0..n).map(|_| Default::default()).collect();
    let mut controls: Vec<Option<LinkSender>> = (0..n).map(|_| None).collect();
    let mut readers = Vec::new();
    for (i, o) in opened.into_iter().enumerate() {
        let Some(o) = o else { continue };
        if start_failed {
            // Held processes that are stopped never run their command.
            reports[i].stopped = true;
            let _ = o.control.send(Frame::new(
                MASTER,
                Message::Stop {
                    stream: 0,
                    grace_ms: 0,
                },
            ));
        } else {
            let _ = o
                .control
                .send(Frame::new(MASTER, Message::Release { stream: 0 }));
        }
        for (fd, stderr, counter) in [
            (o.stdout, false, counters[i].0.clone()),
            (o.stderr, true, counters[i].1.clone()),
        ] {
            readers.push(tokio::spawn(read_lines(
                i,
                fd,
                stderr,
                lines_tx.clone(),
                counter,
            )));
        }
        tokio::spawn(follow(i, o.frames, events_tx.clone()));
        controls[i] = Some(o.control);
    }
    drop(lines_tx);
    drop(events_tx);
    let startup = started.elapsed();

    let mut reason = if start_failed {
        StopReason::StartFailed
    } else {
        StopReason::None
    };
    let mut stopping = start_failed;
    let mut released: Vec<Option<Instant>> = vec![None; n];
    let mut running = controls.iter().filter(|c| c.is_some()).count();
    let release_time = Instant::now();
    let deadline = plan
        .duration
        .map(|d| tokio::time::Instant::from_std(release_time + d));
    let mut stop_deadline = tokio::time::Instant::now() + plan.grace + STOP_SLACK;
    let stop_all = |controls: &[Option<LinkSender>], reports: &mut [ProcReport]| {
        for (i, c) in controls.iter().enumerate() {
            if let Some(c) = c {
                reports[i].stopped = true;
                let grace_ms = plan.grace.as_millis() as u64;
                let _ = c.send(Frame::new(
                    MASTER,
                    Message::Stop {
                        stream: 0,
                        grace_ms,
                    },
                ));
            }
        }
    };
    while running > 0 {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Released(i, at)) => released[i] = Some(at),
                Some(Event::Exited(i, status, at)) => {
                    // Counted from the barrier's fall, as the deadline is: a late
                    // `Released` reply says nothing about when the process began.
                    reports[i].runtime = released[i].map(|_| at.duration_since(release_time));
                    reports[i].ending = Ending::Exited(status);
                    controls[i] = None;
                    running -= 1;
                    if reports[i].failed() && plan.stop_on_failure && !stopping {
                        reason = StopReason::Failure(i);
                        stopping = true;
                        stop_deadline = tokio::time::Instant::now() + plan.grace + STOP_SLACK;
                        stop_all(&controls, &mut reports);
                    }
                }
                Some(Event::Lost(i, why)) => {
                    reports[i].ending = Ending::Lost(why);
                    controls[i] = None;
                    running -= 1;
                }
                None => break,
            },
            _ = sleep_until(deadline), if !stopping => {
                reason = StopReason::Deadline;
                stopping = true;
                stop_deadline = tokio::time::Instant::now() + plan.grace + STOP_SLACK;
                stop_all(&controls, &mut reports);
            }
            _ = tokio::signal::ctrl_c(), if !stopping => {
                reason = StopReason::Interrupted;
                stopping = true;
                stop_deadline = tokio::time::Instant::now() + plan.grace + STOP_SLACK;
                stop_all(&controls, &mut reports);
            }
            _ = tokio::time::sleep_until(stop_deadline), if stopping => break,
        }
    }
    drop(controls);
    for r in readers {
        let _ = tokio::time::timeout(STOP_SLACK, r).await;
    }
    let _ = tokio::task::spawn_blocking(move || printer.join()).await;
    for (i, (out, err)) in counters.iter().enumerate() {
        reports[i].bytes_out = out.load(Ordering::Relaxed);
        reports[i].bytes_err = err.load(Ordering::Relaxed);
    }
    let times: Vec<Instant> = released.iter().flatten().copied().collect();
    let start_spread = times
        .iter()
        .max()
        .zip(times.iter().min())
        .map(|(max, min)| max.duration_since(*min));
    fetch_all(plan, targets, socket, &mut reports).await;
    Report {
        procs: reports,
        reason,
        start_spread,
        startup,
        total: started.elapsed(),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Opens one held process: its control connection, and the read ends of its output.
async fn open(socket: &Path, target: Target, command: String) -> Result<Opened, String> {
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string());
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let socket = socket.to_path_buf();
    // The request and its password dialogue are the shim's own, done on a blocking thread.
    let (stream, leftover) = tokio::task::spawn_blocking(move || {
        let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
        let mut conn =
            MasterConn::connect(&socket).map_err(|e| format!("cannot reach the master: {e}"))?;
        let spec = OpenSpec {
            command: Some(command.into_bytes()),
            hold: true,
            window: DEFAULT_WINDOW,
            ..OpenSpec::default()
        };
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
    let mut frames = link::reader(r);
    frames.read_buffer_mut().extend_from_slice(&leftover);
    let (control, _writer) = link::spawn_writer(w);
    Ok(Opened {
        control,
        frames,
        stdout: out_r,
        stderr: err_r,
    })
}

/// Follows a released process's control connection until it reports its exit.
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

/// Reads one output pipe, cutting it into lines for the printer.
async fn read_lines(
    i: usize,
    fd: OwnedFd,
    stderr: bool,
    lines: mpsc::Sender<Line>,
    count: Arc<AtomicU64>,
) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut cut = LineBuffer::default();
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        count.fetch_add(n as u64, Ordering::Relaxed);
        for line in cut.push(&buf[..n]) {
            // Waiting here when the terminal is slow holds the process back, as it should.
            if lines.send((i, stderr, line)).await.is_err() {
                return;
            }
        }
    }
    if let Some(line) = cut.finish() {
        let _ = lines.send((i, stderr, line)).await;
    }
}

/// Per process, files for stdout and stderr when the plan asks for them.
fn output_files(plan: &Plan) -> Vec<Option<(std::fs::File, std::fs::File)>> {
    plan.procs
        .iter()
        .map(|p| {
            let dir = plan.output_dir.as_ref()?.join(&plan.hosts[p.host].address);
            std::fs::create_dir_all(&dir).ok()?;
            let base = format!("{}-{}", p.name, p.index);
            let out = std::fs::File::create(dir.join(format!("{base}.out"))).ok()?;
            let err = std::fs::File::create(dir.join(format!("{base}.err"))).ok()?;
            Some((out, err))
        })
        .collect()
}

/// The one writer of the terminal (and of the per-stream files).
fn print_lines(
    mut lines: mpsc::Receiver<Line>,
    prefixes: Vec<Prefix>,
    mut files: Vec<Option<(std::fs::File, std::fs::File)>>,
    to_stderr: bool,
) {
    use std::io::Write;
    let mut terminal: Box<dyn Write> = if to_stderr {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    while let Some((i, stderr, line)) = lines.blocking_recv() {
        let _ = terminal.write_all(&prefixes[i].line(&line, stderr));
        if let Some((out, err)) = files[i].as_mut() {
            let _ = if stderr {
                err.write_all(&line)
            } else {
                out.write_all(&line)
            };
        }
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

/// Brings back every process's fetch list into `fetch_dir/<host>/<name>-<i>/`.
async fn fetch_all(plan: &Plan, targets: &[Target], socket: &Path, reports: &mut [ProcReport]) {
    let mut jobs = tokio::task::JoinSet::new();
    for (i, p) in plan.procs.iter().enumerate() {
        for remote in &p.fetch {
            let host = &plan.hosts[p.host].address;
            let base = Path::new(remote)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into());
            let local = plan
                .fetch_dir
                .join(host)
                .join(format!("{}-{}", p.name, p.index))
                .join(base);
            let (socket, target, remote) = (
                socket.to_path_buf(),
                targets[p.host].clone(),
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
    let errors = tempfile_in(local)?;
    let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
    let mut conn = MasterConn::connect(socket).map_err(|e| e.to_string())?;
    let spec = OpenSpec {
        command: Some(format!("cat -- {}", shell_quote(remote)).into_bytes()),
        window: DEFAULT_WINDOW,
        ..OpenSpec::default()
    };
    client::open(
        &mut conn,
        Request::Session {
            target,
            spec,
            caller: Caller::default(),
        },
        &[null.as_raw_fd(), file.as_raw_fd(), errors.0.as_raw_fd()],
        None,
    )
    .map_err(|e| e.message)?;
    drop(file);
    let code = client::wait_exit(&mut conn);
    let said = std::fs::read_to_string(&errors.1).unwrap_or_default();
    let _ = std::fs::remove_file(&errors.1);
    if code == 0 {
        Ok(())
    } else {
        let _ = std::fs::remove_file(local);
        Err(said.lines().next().unwrap_or("cat failed").to_string())
    }
}

/// A scratch file next to `near` for a command's stderr.
fn tempfile_in(near: &Path) -> Result<(std::fs::File, PathBuf), String> {
    let path = near.with_extension(format!("stderr-{}", std::process::id()));
    let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((file, path))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
