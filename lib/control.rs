//! `mitossh status` and `mitossh stop`: requests to a running master from the command line.

use std::io;
use std::path::Path;

use crate::proto::{Reply, Request, StatusReport};
use crate::shim::client::MasterConn;

/// Sends one request and returns the master's reply.
pub fn ask(socket: &Path, request: Request) -> io::Result<Reply> {
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
pub fn format_status(report: &StatusReport) -> String {
    let mut out = format!(
        "master {} on {} (up {})\n",
        report.master_pid,
        report.socket,
        duration(report.uptime_secs)
    );
    if report.contexts.is_empty() {
        out.push_str("no contexts\n");
        return out;
    }
    out.push_str(&format!(
        "{:>4} {:>6} {:<6} {:<28} {:>8} {:>7} {:>7} {:>7} {:>10} {:>10}\n",
        "ID", "PARENT", "METHOD", "NAME", "PID", "AGE", "IDLE", "STREAMS", "SENT", "RECEIVED"
    ));
    for c in &report.contexts {
        out.push_str(&format!(
            "{:>4} {:>6} {:<6} {:<28} {:>8} {:>7} {:>7} {:>7} {:>10} {:>10}\n",
            c.id,
            c.parent,
            c.method,
            format!("{} ({}@{})", c.name, c.user, c.hostname),
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
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0MiB");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(600), "10m");
        assert_eq!(duration(7200), "2h");
    }
}
