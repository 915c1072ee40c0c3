//! Readiness on a port: a TCP connection made by the agent of the process's host, tried
//! until one is accepted or the timeout passes.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Event, PROBE_FIRST, PROBE_MAX, request_session, secs};
use crate::client::MasterConn;
use crate::proto::{Endpoint, OpenSpec, Target};

/// Tries to connect to `endpoint` from the process's host until it accepts (ready) or
/// `timeout` passes (not ready, with the last refusal).
pub(super) async fn probe_port(
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
    request_session(&mut conn, target, spec, &[fd, fd, null.as_raw_fd()])?;
    drop((ours, theirs, conn));
    Ok(())
}
