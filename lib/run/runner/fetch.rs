//! Commands beside a point's processes: fetching their files afterwards (`cat` into the
//! local file), and each host's setup and teardown.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::{Fetched, ProcReport, Shared, request_session};
use crate::client::{self, MasterConn};
use crate::proto::flow::DEFAULT_WINDOW;
use crate::proto::{OpenSpec, Target};
use crate::run::plan::Plan;

/// Brings back every process's fetch list into its fetch directory.
pub(super) async fn fetch_all(plan: &Plan, shared: &Shared<'_>, reports: &mut [ProcReport]) {
    let mut jobs = tokio::task::JoinSet::new();
    for (i, p) in plan.procs.iter().enumerate() {
        for (remote, local) in plan.fetch_paths(p) {
            let (socket, target) = (shared.socket.to_path_buf(), shared.targets[p.host].clone());
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
    let file = create_new(local)?;
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
            // Made by `create_new` above: ours to remove.
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
    let stderr = create_new(errors)?;
    let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
    let mut conn = MasterConn::connect(socket).map_err(|e| e.to_string())?;
    let spec = OpenSpec {
        command: Some(command.as_bytes().to_vec()),
        window: DEFAULT_WINDOW,
        ..OpenSpec::default()
    };
    let fds = [null.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()];
    let opened = request_session(&mut conn, target, spec, &fds);
    drop((stdout, stderr));
    opened?;
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
            let file = create_new(&out)?;
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

/// A new file at `path`; an existing one is an error, never overwritten.
pub(super) fn create_new(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format!(
                "{} exists: mitossh does not overwrite files (remove it, or choose another directory)",
                path.display()
            ),
            _ => format!("{}: {e}", path.display()),
        })
}
