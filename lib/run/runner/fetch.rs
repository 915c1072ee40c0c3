//! Commands beside a point's processes: fetching their files afterwards (`cat` into the
//! local file), and each host's setup and teardown.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::{Fetched, ProcReport, Shared, request_session};
use crate::client::{self, MasterConn};
use crate::proto::flow::DEFAULT_WINDOW;
use crate::proto::{OpenSpec, Target};
use crate::run::plan::Plan;

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
pub(super) async fn fetch_all(plan: &Plan, shared: &Shared<'_>, reports: &mut [ProcReport]) {
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
