//! A point's output: each pipe cut into whole lines (the first matching one can say a
//! process is ready), and the one thread that writes them, prefixed, to the terminal and
//! to the per-stream files.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::{Display, Event, Line, OUTPUT_BUFFER};
use crate::run::escape;
use crate::run::lines::{LineBuffer, Prefix};
use crate::run::plan::Plan;

/// Reads one output pipe, cutting it into lines for the printer; when `ready` is given,
/// the first line that matches says the process is ready.
pub(super) async fn read_lines(
    i: usize,
    fd: OwnedFd,
    stderr: bool,
    lines: mpsc::Sender<Line>,
    count: Arc<AtomicU64>,
    mut ready: Option<(regex::bytes::Regex, mpsc::UnboundedSender<Event>)>,
) {
    let Ok(pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
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
        if pipe.readable().await.is_err() {
            break;
        }
        // Read into the thread's one buffer and keep only the lines: an idle process
        // costs no buffer of its own (a thousand of them would cost 32 MiB).
        let read = READ_BUFFER.with_borrow_mut(|buf| match pipe.try_read(buf) {
            Ok(0) => None,
            Ok(n) => Some(Ok((n, cut.push(&buf[..n])))),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(Err(())),
            Err(_) => None,
        });
        let (n, complete) = match read {
            None => break,
            Some(Err(())) => continue,
            Some(Ok(got)) => got,
        };
        count.fetch_add(n as u64, Ordering::Relaxed);
        for line in complete {
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

thread_local! {
    /// The output readers' buffer: they run on one thread and never hold it across an
    /// await.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; OUTPUT_BUFFER]);
}

pub(super) fn prefixes(plan: &Plan, display: &Display) -> Vec<Prefix> {
    let width = plan
        .procs
        .iter()
        .map(|p| plan.hosts[p.host].address.len() + 1 + p.label().len())
        .max()
        .unwrap_or(0);
    let colours = colours(plan);
    plan.procs
        .iter()
        .zip(colours)
        .map(|(p, c)| {
            let c = display.colour.then_some(c);
            Prefix::new(&plan.hosts[p.host].address, &p.label(), width, c)
        })
        .collect()
}

/// Per process, files for stdout and stderr when the plan asks for them.
pub(super) fn output_files(plan: &Plan) -> Vec<Option<(std::fs::File, std::fs::File)>> {
    plan.procs
        .iter()
        .map(|p| {
            let (out, err) = plan.output_paths(p)?;
            std::fs::create_dir_all(out.parent()?).ok()?;
            Some((
                super::fetch::create_new(&out).ok()?,
                super::fetch::create_new(&err).ok()?,
            ))
        })
        .collect()
}

/// How many lines the printer writes at once, with the status line moved out of the way
/// only once for all of them.
const BATCH: usize = 256;

/// The one writer of the terminal (and of the per-stream files).
pub(super) fn print_lines(
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

/// Per process, a colour per (host, process name), in order of appearance.
fn colours(plan: &Plan) -> Vec<usize> {
    let mut seen: HashMap<(usize, &str), usize> = HashMap::new();
    plan.procs
        .iter()
        .map(|p| {
            let next = seen.len();
            *seen.entry((p.host, p.name.as_str())).or_insert(next)
        })
        .collect()
}
