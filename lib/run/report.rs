//! What `mitossh run` says about a point and a sweep: a [`PointSummary`] (kept as
//! `point.json` in the point's directory, printed with `--json`), a table for people, and
//! across points `summary.csv` and `summary.json`, one row per point × process.
//!
//! Strings here may carry remote text (an agent's error, a remote `cat`'s complaint):
//! the table escapes them before they reach a terminal.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::escape;
use super::plan::{Plan, Point};
use super::runner::{Ending, Report, StopReason};
use crate::proto::ExitStatus;

/// A point's status as `--resume` reads it.
pub(crate) const COMPLETED: &str = "completed";
pub(crate) const FAILED: &str = "failed";
pub(crate) const INTERRUPTED: &str = "interrupted";

/// One point, as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PointSummary {
    pub point: String,
    pub vars: BTreeMap<String, String>,
    pub repeat: u32,
    /// [`COMPLETED`], [`FAILED`] or [`INTERRUPTED`].
    pub status: String,
    pub stopped_because: String,
    /// Setup and teardown failures.
    pub errors: Vec<String>,
    pub start_spread_ms: Option<f64>,
    pub startup_ms: f64,
    pub total_ms: f64,
    pub failed: usize,
    /// Hosts that could not be connected, once each, with why.
    #[serde(default)]
    pub unreachable: Vec<UnreachableSummary>,
    pub phases: Vec<PhaseSummary>,
    pub processes: Vec<ProcSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UnreachableSummary {
    pub host: String,
    /// `unreachable`, `auth`, `timeout`, `no agent`, `descriptors` or `other`.
    pub reason: String,
    /// What ssh (or mitossh) said.
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PhaseSummary {
    pub phase: String,
    pub processes: usize,
    /// From the point's start to the phase's release; `null`: never released.
    pub released_after_ms: Option<f64>,
    pub spread_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ProcSummary {
    pub host: String,
    pub name: String,
    pub index: u32,
    pub command: String,
    pub status: String,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub released: bool,
    pub stopped: bool,
    pub failed: bool,
    pub runtime_ms: Option<f64>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub fetched: Vec<FetchSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FetchSummary {
    pub remote: String,
    pub local: Option<String>,
    pub error: Option<String>,
}

fn status(e: &Ending) -> String {
    match e {
        Ending::NotStarted(why) => format!("not started: {why}"),
        Ending::NotConnected(kind) => format!("not connected ({})", kind.name()),
        Ending::Exited(ExitStatus::Code(c)) => format!("exit {c}"),
        Ending::Exited(ExitStatus::Signal { signal, .. }) => format!("signal {signal}"),
        Ending::Lost(why) => format!("lost: {why}"),
    }
}

/// Why the point stopped, in words.
pub(crate) fn reason(report: &Report, plan: &Plan) -> String {
    let who = |i: usize| {
        let p = &plan.procs[i];
        format!("{} on {}", p.label(), plan.hosts[p.host].address)
    };
    match &report.reason {
        StopReason::None => "all processes ended".into(),
        StopReason::Deadline => "the duration was over".into(),
        StopReason::Interrupted => "interrupted".into(),
        StopReason::StartFailed => "some processes could not be started".into(),
        StopReason::Unreachable => "some hosts could not be connected".into(),
        StopReason::Failure(i) => {
            format!("{} failed ({})", who(*i), status(&report.procs[*i].ending))
        }
        StopReason::NotReady(i, why) => {
            let phase = plan.procs[*i].phase;
            let mut text = format!(
                "{} in phase {} was not ready: {why}",
                who(*i),
                plan.phases[phase].label(phase)
            );
            let never: Vec<String> = plan
                .phases
                .iter()
                .enumerate()
                .filter(|(k, _)| report.phases[*k].released_after.is_none())
                .map(|(k, ph)| ph.label(k))
                .collect();
            if !never.is_empty() {
                text.push_str(&format!("; phase {} never started", never.join(", phase ")));
            }
            text
        }
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A point's summary from its report. `errors` are its setup/teardown failures.
pub(crate) fn summary(
    point: &Point,
    vars: &[String],
    report: &Report,
    errors: Vec<String>,
) -> PointSummary {
    let plan = &point.plan;
    let processes: Vec<ProcSummary> = plan
        .procs
        .iter()
        .zip(&report.procs)
        .map(|(p, r)| ProcSummary {
            host: plan.hosts[p.host].address.clone(),
            name: p.name.clone(),
            index: p.index,
            command: p.command.clone(),
            status: status(&r.ending),
            exit_code: match &r.ending {
                Ending::Exited(ExitStatus::Code(c)) => Some(*c),
                _ => None,
            },
            signal: match &r.ending {
                Ending::Exited(ExitStatus::Signal { signal, .. }) => Some(signal.clone()),
                _ => None,
            },
            released: r.released,
            stopped: r.stopped,
            failed: r.failed(),
            runtime_ms: r.runtime.map(ms),
            stdout_bytes: r.bytes_out,
            stderr_bytes: r.bytes_err,
            fetched: r
                .fetched
                .iter()
                .map(|(remote, got)| FetchSummary {
                    remote: remote.clone(),
                    local: got.as_ref().ok().map(|p| p.display().to_string()),
                    error: got.as_ref().err().cloned(),
                })
                .collect(),
        })
        .collect();
    let failed = processes.iter().filter(|p| p.failed).count();
    let status = match &report.reason {
        StopReason::Interrupted => INTERRUPTED,
        StopReason::None | StopReason::Deadline if failed == 0 && errors.is_empty() => COMPLETED,
        _ => FAILED,
    };
    PointSummary {
        point: point.name.clone(),
        vars: vars
            .iter()
            .cloned()
            .zip(point.values.iter().cloned())
            .collect(),
        repeat: point.repeat,
        status: status.into(),
        stopped_because: reason(report, plan),
        errors,
        start_spread_ms: report.start_spread.map(ms),
        startup_ms: ms(report.startup),
        total_ms: ms(report.total),
        failed,
        unreachable: report
            .unreachable
            .iter()
            .map(|(h, kind, message)| UnreachableSummary {
                host: plan.hosts[*h].address.clone(),
                reason: kind.name().into(),
                message: message.clone(),
            })
            .collect(),
        phases: plan
            .phases
            .iter()
            .zip(&report.phases)
            .enumerate()
            .map(|(k, (ph, r))| PhaseSummary {
                phase: ph.label(k),
                processes: r.processes,
                released_after_ms: r.released_after.map(ms),
                spread_ms: r.spread.map(ms),
            })
            .collect(),
        processes,
    }
}

/// A point that never got to start its processes (its setup failed, or ^C came first).
pub(crate) fn not_run(
    point: &Point,
    vars: &[String],
    status: &str,
    why: &str,
    errors: Vec<String>,
) -> PointSummary {
    PointSummary {
        point: point.name.clone(),
        vars: vars
            .iter()
            .cloned()
            .zip(point.values.iter().cloned())
            .collect(),
        repeat: point.repeat,
        status: status.into(),
        stopped_because: why.into(),
        errors,
        start_spread_ms: None,
        startup_ms: 0.0,
        total_ms: 0.0,
        failed: 0,
        unreachable: Vec::new(),
        phases: Vec::new(),
        processes: Vec::new(),
    }
}

pub(crate) fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Reads a point's `point.json`, if it is there and whole.
pub(crate) fn read_point(path: &Path) -> Option<PointSummary> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Lines laid out in columns.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..n)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, v)| format!("{v:<w$}", w = widths[c]))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A point as a table, with a closing line.
pub(crate) fn table(s: &PointSummary, hosts: usize) -> String {
    let mut rows = vec![
        [
            "HOST", "PROCESS", "STATUS", "RUNTIME", "STDOUT", "STDERR", "FETCHED",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in &s.processes {
        let mut st = escape::message(&p.status);
        if !p.released && p.stopped {
            st = "never started".into();
        } else if p.stopped && (p.exit_code.is_some() || p.signal.is_some()) {
            st.push_str(" (stopped)");
        }
        if p.failed {
            st.push_str(" FAILED");
        }
        let fetched_ok = p.fetched.iter().filter(|f| f.error.is_none()).count();
        rows.push(vec![
            p.host.clone(),
            format!("{}[{}]", p.name, p.index),
            st,
            p.runtime_ms
                .map(|t| format!("{:.2}s", t / 1000.0))
                .unwrap_or_else(|| "-".into()),
            p.stdout_bytes.to_string(),
            p.stderr_bytes.to_string(),
            if p.fetched.is_empty() {
                "-".into()
            } else {
                format!("{fetched_ok}/{}", p.fetched.len())
            },
        ]);
    }
    let mut out = columns(&rows);
    for p in &s.processes {
        for f in &p.fetched {
            if let Some(e) = &f.error {
                out.push_str(&format!(
                    "could not fetch {} from {} for {}[{}]: {}\n",
                    escape::message(&f.remote),
                    p.host,
                    p.name,
                    p.index,
                    escape::message(e)
                ));
            }
        }
    }
    out.push_str(&unreachable_list(s, hosts));
    for e in &s.errors {
        out.push_str(&escape::message(e));
        out.push('\n');
    }
    if s.phases.len() > 1 {
        for ph in &s.phases {
            out.push_str(&format!("phase {}: {}\n", ph.phase, phase_text(ph)));
        }
    }
    out.push_str(&format!(
        "{} processes on {hosts} hosts; started in {:.0} ms, released within {}; stopped because {}; {} failed; {:.2}s in all\n",
        s.processes.len(),
        s.startup_ms,
        s.start_spread_ms
            .map(|d| format!("{d:.1} ms"))
            .unwrap_or_else(|| "-".into()),
        escape::message(&s.stopped_because),
        s.failed,
        s.total_ms / 1000.0
    ));
    out
}

/// The hosts that could not be connected, one line each, grouped by reason.
pub(crate) fn unreachable_list(s: &PointSummary, hosts: usize) -> String {
    if s.unreachable.is_empty() {
        return String::new();
    }
    let mut sorted: Vec<&UnreachableSummary> = s.unreachable.iter().collect();
    sorted.sort_by(|a, b| (&a.reason, &a.host).cmp(&(&b.reason, &b.host)));
    let width = sorted.iter().map(|u| u.host.len()).max().unwrap_or(0);
    let mut out = format!(
        "{} of {hosts} hosts could not be connected:\n",
        s.unreachable.len()
    );
    for u in sorted {
        out.push_str(&format!(
            "  {:<width$}  {:<11}  {}\n",
            u.host,
            u.reason,
            escape::message(&u.message)
        ));
    }
    out
}

fn phase_text(ph: &PhaseSummary) -> String {
    match ph.released_after_ms {
        Some(at) => format!(
            "{} processes released at {at:.0} ms, within {}",
            ph.processes,
            ph.spread_ms
                .map(|d| format!("{d:.1} ms"))
                .unwrap_or_else(|| "-".into())
        ),
        None => format!("{} processes, never released", ph.processes),
    }
}

/// One line about a finished point, for a sweep's running commentary.
pub(crate) fn point_line(k: usize, n: usize, s: &PointSummary) -> String {
    let spreads: Vec<String> = s
        .phases
        .iter()
        .filter_map(|ph| Some(format!("{:.1} ms", ph.spread_ms?)))
        .collect();
    format!(
        "mitossh run: point {}/{n} {}: {}, {} processes, {} failed, released within {}; {:.2}s ({})",
        k + 1,
        s.point,
        s.status,
        s.processes.len(),
        s.failed,
        if spreads.is_empty() {
            "-".into()
        } else {
            spreads.join(" / ")
        },
        s.total_ms / 1000.0,
        escape::message(&s.stopped_because),
    )
}

/// The sweep as a table: one row per point.
pub(crate) fn sweep_table(points: &[PointSummary]) -> String {
    let mut rows = vec![
        ["POINT", "STATUS", "PROCESSES", "FAILED", "SPREAD", "TIME"]
            .map(String::from)
            .to_vec(),
    ];
    for s in points {
        rows.push(vec![
            s.point.clone(),
            s.status.clone(),
            s.processes.len().to_string(),
            s.failed.to_string(),
            s.start_spread_ms
                .map(|d| format!("{d:.1} ms"))
                .unwrap_or_else(|| "-".into()),
            format!("{:.2}s", s.total_ms / 1000.0),
        ]);
    }
    columns(&rows)
}

/// The whole sweep as JSON: every point's summary in plan order.
#[derive(Serialize)]
pub(crate) struct SweepSummary<'a> {
    pub vars: &'a [String],
    pub points: &'a [PointSummary],
}

/// `summary.csv`: one row per point × process, the sweep's variables as columns.
pub(crate) fn csv(vars: &[String], points: &[PointSummary]) -> Result<Vec<u8>, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<&str> = vec!["point", "point_status"];
    header.extend(vars.iter().map(String::as_str));
    header.extend([
        "repeat",
        "host",
        "process",
        "index",
        "status",
        "exit_code",
        "signal",
        "stopped",
        "failed",
        "runtime_ms",
        "stdout_bytes",
        "stderr_bytes",
        "fetched",
    ]);
    w.write_record(&header).map_err(|e| e.to_string())?;
    let opt = |v: Option<String>| v.unwrap_or_default();
    for s in points {
        for p in &s.processes {
            let mut row = vec![s.point.clone(), s.status.clone()];
            row.extend(
                vars.iter()
                    .map(|v| s.vars.get(v).cloned().unwrap_or_default()),
            );
            row.extend([
                s.repeat.to_string(),
                p.host.clone(),
                p.name.clone(),
                p.index.to_string(),
                p.status.clone(),
                opt(p.exit_code.map(|c| c.to_string())),
                opt(p.signal.clone()),
                p.stopped.to_string(),
                p.failed.to_string(),
                opt(p.runtime_ms.map(|t| format!("{t:.1}"))),
                p.stdout_bytes.to_string(),
                p.stderr_bytes.to_string(),
                p.fetched
                    .iter()
                    .filter(|f| f.error.is_none())
                    .count()
                    .to_string(),
            ]);
            w.write_record(&row).map_err(|e| e.to_string())?;
        }
    }
    w.into_inner().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(name: &str, clients: &str, procs: usize) -> PointSummary {
        let mut s = PointSummary {
            point: name.into(),
            vars: BTreeMap::from([("clients".to_string(), clients.to_string())]),
            repeat: 0,
            status: COMPLETED.into(),
            stopped_because: "the duration was over".into(),
            errors: Vec::new(),
            start_spread_ms: Some(1.5),
            startup_ms: 100.0,
            total_ms: 2100.0,
            failed: 0,
            phases: Vec::new(),
            processes: Vec::new(),
            unreachable: Vec::new(),
        };
        for i in 0..procs {
            s.processes.push(ProcSummary {
                host: "h".into(),
                name: "client".into(),
                index: i as u32,
                command: "c, with a comma".into(),
                status: "signal TERM".into(),
                exit_code: None,
                signal: Some("TERM".into()),
                released: true,
                stopped: true,
                failed: false,
                runtime_ms: Some(2000.0),
                stdout_bytes: 3,
                stderr_bytes: 0,
                fetched: Vec::new(),
            });
        }
        s
    }

    #[test]
    fn csv_has_a_row_per_point_and_process_with_the_variables() {
        let points = [point("clients-1", "1", 1), point("clients-2", "2", 2)];
        let text = String::from_utf8(csv(&["clients".into()], &points).unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("point,point_status,clients,repeat,host,process,index,status")
        );
        assert_eq!(
            lines[3],
            "clients-2,completed,2,0,h,client,1,signal TERM,,TERM,true,false,2000.0,3,0,0"
        );
    }

    #[test]
    fn summaries_read_back_as_written() {
        let s = point("p", "1", 2);
        let back: PointSummary = serde_json::from_str(&json(&s)).unwrap();
        assert_eq!(back.processes.len(), 2);
        assert_eq!(back.status, COMPLETED);
    }

    #[test]
    fn remote_text_in_the_table_is_escaped() {
        let mut s = point("p", "1", 1);
        s.processes[0].fetched.push(FetchSummary {
            remote: "/tmp/x".into(),
            local: None,
            error: Some("cat: \x1b[2Jgone".into()),
        });
        let t = table(&s, 1);
        assert!(t.contains("cat: \\x1b[2Jgone"), "{t}");
        assert!(!t.contains('\x1b'));
    }
}
