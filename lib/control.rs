//! `mitossh status`, `mitossh tree` and `mitossh stop`: requests to a running master from
//! the command line.

use std::io;
use std::path::{Path, PathBuf};

use crate::client::MasterConn;
use crate::paths;
use crate::proto::{ContextStatus, Reply, Request, StatusReport};
use crate::untrusted::{MAX_NAME, clean};

/// `mitossh status`: the master's contexts, one per line. Returns the exit status.
pub fn status(socket: Option<PathBuf>) -> i32 {
    show(socket, format_status)
}

/// `mitossh tree`: the master's contexts as a tree. Returns the exit status.
pub fn tree(socket: Option<PathBuf>) -> i32 {
    show(socket, format_tree)
}

/// `mitossh stop`: the master stops its agents and exits. Returns the exit status.
pub fn stop(socket: Option<PathBuf>) -> i32 {
    match paths::socket_or_default(socket).and_then(|s| ask(&s, Request::Shutdown)) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("mitossh: {e}");
            1
        }
    }
}

/// The master's report, printed by `format`.
fn show(socket: Option<PathBuf>, format: fn(&StatusReport) -> String) -> i32 {
    match paths::socket_or_default(socket).and_then(|s| ask(&s, Request::Status)) {
        Ok(Reply::Status(report)) => {
            print!("{}", format(&report));
            0
        }
        Ok(other) => {
            eprintln!("mitossh: unexpected answer: {other:?}");
            1
        }
        Err(e) => {
            eprintln!("mitossh: {e}");
            1
        }
    }
}

/// Sends one request and returns the master's reply.
fn ask(socket: &Path, request: Request) -> io::Result<Reply> {
    let mut conn = MasterConn::connect(socket).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "no master answers at {} ({e}); start one with `mitossh master` or `mitossh-env`",
                socket.display()
            ),
        )
    })?;
    conn.request(request)?;
    conn.reply()
}

/// The status table, one context per line.
pub(crate) fn format_status(report: &StatusReport) -> String {
    let mut out = format!(
        "master {} on {} (up {})\n",
        report.master_pid,
        report.socket,
        duration(report.uptime_secs)
    );
    out.push_str(&connects(report));
    if report.contexts.is_empty() {
        out.push_str("no contexts\n");
        return out;
    }
    let contexts: Vec<ContextStatus> = report.contexts.iter().map(shown).collect();
    let name = |c: &ContextStatus| format!("{} ({}@{})", c.name, c.user, c.hostname);
    // Wide enough for the longest name (an exec prefix can be long), so columns line up.
    let w = contexts
        .iter()
        .map(|c| name(c).chars().count())
        .max()
        .unwrap_or(0)
        .max(28);
    out.push_str(&format!(
        "{:>4} {:>6} {:<6} {:<w$} {:>8} {:>7} {:>7} {:>7} {:>10} {:>10}\n",
        "ID", "PARENT", "METHOD", "NAME", "PID", "AGE", "IDLE", "STREAMS", "SENT", "RECEIVED"
    ));
    for c in &contexts {
        out.push_str(&format!(
            "{:>4} {:>6} {:<6} {:<w$} {:>8} {:>7} {:>7} {:>7} {:>10} {:>10}\n",
            c.id,
            c.parent,
            c.method,
            name(c),
            c.agent_pid,
            duration(c.age_secs),
            duration(c.idle_secs),
            format!("{}/{}", c.open_streams, c.total_streams),
            bytes(c.bytes_down),
            bytes(c.bytes_up),
        ));
    }
    out
}

/// How connecting goes, what failed lately, and the master's descriptors: a line or two,
/// then one per recent failure. Nothing on a quiet master (no connect under way or
/// waiting, none failed, descriptors well below the limit).
fn connects(report: &StatusReport) -> String {
    let c = &report.connects;
    let (open, limit) = report.descriptors;
    let busy = c.handshaking > 0 || c.queued > 0 || c.failed > 0;
    if !busy && open.saturating_mul(4) <= limit.saturating_mul(3) {
        return String::new();
    }
    let mut out = format!(
        "connecting: {} under way, {} waiting (window {}) · {} connected, {} failed since start · descriptors {open} of {limit}\n",
        c.handshaking, c.queued, c.window, c.connected, c.failed
    );
    if !c.recent_failures.is_empty() {
        out.push_str("latest failures:\n");
        for f in &c.recent_failures {
            out.push_str(&format!(
                "  {:<28} {:<11} {} ago: {}\n",
                clean(&f.name, MAX_NAME * 2),
                f.kind.name(),
                duration(f.ago_secs),
                crate::untrusted::clean(&f.message, MAX_NAME * 4)
            ));
        }
    }
    out
}

/// The contexts as a tree, children under their parents.
pub(crate) fn format_tree(report: &StatusReport) -> String {
    let mut out = format!(
        "master {} on {} (up {})\n",
        report.master_pid,
        report.socket,
        duration(report.uptime_secs)
    );
    let roots: Vec<_> = report
        .contexts
        .iter()
        .filter(|c| !report.contexts.iter().any(|p| p.id == c.parent))
        .collect();
    for (i, c) in roots.iter().enumerate() {
        tree_node(report, c, "", i + 1 == roots.len(), &mut out);
    }
    out
}

fn tree_node(
    report: &StatusReport,
    c: &crate::proto::ContextStatus,
    indent: &str,
    last: bool,
    out: &mut String,
) {
    let shown = shown(c);
    let (branch, next) = if last {
        ("└─ ", "   ")
    } else {
        ("├─ ", "│  ")
    };
    out.push_str(&format!(
        "{indent}{branch}[{}] {} {}@{} ({}) pid {} · up {} · streams {} open, {} total · sent {} · received {}\n",
        c.id,
        shown.method,
        shown.user,
        shown.hostname,
        shown.name,
        c.agent_pid,
        duration(c.age_secs),
        c.open_streams,
        c.total_streams,
        bytes(c.bytes_down),
        bytes(c.bytes_up),
    ));
    let children: Vec<_> = report
        .contexts
        .iter()
        .filter(|k| k.parent == c.id)
        .collect();
    for (i, k) in children.iter().enumerate() {
        tree_node(
            report,
            k,
            &format!("{indent}{next}"),
            i + 1 == children.len(),
            out,
        );
    }
}

/// A context's texts as they may be printed. The master cleans what agents say when it
/// arrives; this makes sure of it, whatever master answers.
fn shown(c: &ContextStatus) -> ContextStatus {
    ContextStatus {
        method: clean(&c.method, MAX_NAME),
        name: clean(&c.name, MAX_NAME * 2),
        user: clean(&c.user, MAX_NAME),
        hostname: clean(&c.hostname, MAX_NAME),
        ..c.clone()
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_puts_children_under_parents() {
        use crate::proto::ContextStatus;
        let ctx = |id, parent, method: &str, user: &str| ContextStatus {
            id,
            parent,
            method: method.into(),
            name: format!("n{id}"),
            user: user.into(),
            hostname: "h".into(),
            ..ContextStatus::default()
        };
        let report = StatusReport {
            master_pid: 1,
            socket: "/s".into(),
            uptime_secs: 0,
            ..StatusReport::default()
        };
        let report = StatusReport {
            contexts: vec![
                ctx(1, 0, "ssh", "alice"),
                ctx(2, 1, "ssh", "bob"),
                ctx(3, 2, "sudo", "root"),
                ctx(4, 0, "ssh", "carol"),
            ],
            ..report
        };
        let tree = format_tree(&report);
        let lines: Vec<&str> = tree.lines().collect();
        assert!(lines[1].starts_with("├─ [1] ssh alice@h"), "{tree}");
        assert!(lines[2].starts_with("│  └─ [2] ssh bob@h"), "{tree}");
        assert!(lines[3].starts_with("│     └─ [3] sudo root@h"), "{tree}");
        assert!(lines[4].starts_with("└─ [4] ssh carol@h"), "{tree}");
    }

    #[test]
    fn what_agents_say_is_printed_escaped() {
        use crate::proto::ContextStatus;
        let report = StatusReport {
            contexts: vec![ContextStatus {
                id: 1,
                method: "ssh".into(),
                name: "web1".into(),
                user: "u\u{1b}[31m".into(),
                hostname: "h\u{1b}]0;x\u{7}\n   2 fake".into(),
                ..ContextStatus::default()
            }],
            ..StatusReport::default()
        };
        for text in [format_status(&report), format_tree(&report)] {
            assert!(!text.contains('\u{1b}'), "{text}");
            assert!(
                text.contains(r"u\x1b[31m@h\x1b]0;x\x07\x0a   2 fake"),
                "{text}"
            );
            assert!(!text.contains("\n   2 fake"), "{text}");
        }
    }

    #[test]
    fn columns_line_up_past_a_long_name() {
        let ctx = |id, name: &str| ContextStatus {
            id,
            method: "exec".into(),
            name: name.into(),
            user: "root".into(),
            hostname: "h".into(),
            agent_pid: 4242,
            ..ContextStatus::default()
        };
        let report = StatusReport {
            contexts: vec![
                ctx(1, "web1"),
                ctx(
                    2,
                    "unshare --mount --pid --fork --mount-proc --root /srv/rootfs",
                ),
            ],
            ..StatusReport::default()
        };
        let text = format_status(&report);
        // The table follows the master's line and how connecting goes.
        let lines: Vec<&str> = text.lines().collect();
        let h = lines.iter().position(|l| l.contains("PARENT")).unwrap();
        let pid_at: Vec<usize> = lines[h + 1..]
            .iter()
            .map(|l| l.find("4242").unwrap())
            .collect();
        assert_eq!(pid_at.len(), 2, "{text}");
        assert_eq!(pid_at[0], pid_at[1], "{text}");
        let header = lines[h];
        assert_eq!(header.find("PID").unwrap() + 3, pid_at[0] + 4, "{text}");
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0MiB");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(600), "10m");
        assert_eq!(duration(7200), "2h");
    }
}
