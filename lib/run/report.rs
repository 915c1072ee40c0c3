//! What `mitossh run` says at the end: a table for people, JSON for scripts.

use serde::Serialize;

use super::plan::Plan;
use super::runner::{Ending, Report, StopReason};
use crate::proto::ExitStatus;

#[derive(Serialize)]
struct JsonReport<'a> {
    stopped_because: String,
    start_spread_ms: Option<f64>,
    startup_ms: f64,
    total_ms: f64,
    failed: usize,
    processes: Vec<JsonProc<'a>>,
}

#[derive(Serialize)]
struct JsonProc<'a> {
    host: &'a str,
    name: &'a str,
    index: u32,
    command: &'a str,
    status: String,
    exit_code: Option<i32>,
    signal: Option<String>,
    stopped: bool,
    failed: bool,
    runtime_ms: Option<f64>,
    stdout_bytes: u64,
    stderr_bytes: u64,
    fetched: Vec<JsonFetch<'a>>,
}

#[derive(Serialize)]
struct JsonFetch<'a> {
    remote: &'a str,
    local: Option<String>,
    error: Option<&'a str>,
}

fn status(e: &Ending) -> String {
    match e {
        Ending::NotStarted(why) => format!("not started: {why}"),
        Ending::Exited(ExitStatus::Code(c)) => format!("exit {c}"),
        Ending::Exited(ExitStatus::Signal { signal, .. }) => format!("signal {signal}"),
        Ending::Lost(why) => format!("lost: {why}"),
    }
}

pub fn reason(report: &Report, plan: &Plan) -> String {
    match &report.reason {
        StopReason::None => "all processes ended".into(),
        StopReason::Deadline => "the duration was over".into(),
        StopReason::Interrupted => "interrupted".into(),
        StopReason::StartFailed => "some processes could not be started".into(),
        StopReason::Failure(i) => {
            let p = &plan.procs[*i];
            format!(
                "{} on {} failed ({})",
                p.label(),
                plan.hosts[p.host].address,
                status(&report.procs[*i].ending)
            )
        }
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The report as JSON.
pub fn json(report: &Report, plan: &Plan) -> String {
    let procs = plan
        .procs
        .iter()
        .zip(&report.procs)
        .map(|(p, r)| JsonProc {
            host: &plan.hosts[p.host].address,
            name: &p.name,
            index: p.index,
            command: &p.command,
            status: status(&r.ending),
            exit_code: match &r.ending {
                Ending::Exited(ExitStatus::Code(c)) => Some(*c),
                _ => None,
            },
            signal: match &r.ending {
                Ending::Exited(ExitStatus::Signal { signal, .. }) => Some(signal.clone()),
                _ => None,
            },
            stopped: r.stopped,
            failed: r.failed(),
            runtime_ms: r.runtime.map(ms),
            stdout_bytes: r.bytes_out,
            stderr_bytes: r.bytes_err,
            fetched: r
                .fetched
                .iter()
                .map(|(remote, got)| JsonFetch {
                    remote,
                    local: got.as_ref().ok().map(|p| p.display().to_string()),
                    error: got.as_ref().err().map(String::as_str),
                })
                .collect(),
        })
        .collect();
    let out = JsonReport {
        stopped_because: reason(report, plan),
        start_spread_ms: report.start_spread.map(ms),
        startup_ms: ms(report.startup),
        total_ms: ms(report.total),
        failed: report.procs.iter().filter(|r| r.failed()).count(),
        processes: procs,
    };
    serde_json::to_string_pretty(&out).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The report as a table.
pub fn table(report: &Report, plan: &Plan) -> String {
    let mut rows = vec![[
        "HOST".to_string(),
        "PROCESS".into(),
        "STATUS".into(),
        "RUNTIME".into(),
        "STDOUT".into(),
        "STDERR".into(),
        "FETCHED".into(),
    ]];
    for (p, r) in plan.procs.iter().zip(&report.procs) {
        let mut st = status(&r.ending);
        if r.stopped && matches!(r.ending, Ending::Exited(_)) {
            st.push_str(" (stopped)");
        }
        if r.failed() {
            st.push_str(" FAILED");
        }
        let fetched_ok = r.fetched.iter().filter(|(_, g)| g.is_ok()).count();
        rows.push([
            plan.hosts[p.host].address.clone(),
            p.label(),
            st,
            r.runtime
                .map(|d| format!("{:.2}s", d.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
            r.bytes_out.to_string(),
            r.bytes_err.to_string(),
            if r.fetched.is_empty() {
                "-".into()
            } else {
                format!("{fetched_ok}/{}", r.fetched.len())
            },
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, v)| format!("{v:<w$}", w = widths[c]))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for (p, r) in plan.procs.iter().zip(&report.procs) {
        for (remote, got) in &r.fetched {
            if let Err(e) = got {
                out.push_str(&format!(
                    "could not fetch {remote} from {} for {}: {e}\n",
                    plan.hosts[p.host].address,
                    p.label()
                ));
            }
        }
    }
    let failed = report.procs.iter().filter(|r| r.failed()).count();
    out.push_str(&format!(
        "{} processes on {} hosts; started in {:.0} ms, released within {}; stopped because {}; {} failed; {:.2}s in all\n",
        plan.procs.len(),
        plan.hosts.len(),
        ms(report.startup),
        report
            .start_spread
            .map(|d| format!("{:.1} ms", ms(d)))
            .unwrap_or_else(|| "-".into()),
        reason(report, plan),
        failed,
        report.total.as_secs_f64()
    ));
    out
}
