//! A master for the length of a command: the one the environment names if it answers,
//! else one started in the background and stopped afterwards.
//!
//! A started master holds a *lifeline*: a pipe whose other end only this process has, so
//! the master also goes away if this process is killed. It signals readiness on another
//! pipe once its socket accepts connections, so nobody polls for it.

use std::io::{self, BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::MasterConn;
use crate::paths;
use crate::proto::{Reply, Request};
use crate::sys::spawn::ChildSetup;

/// How long a new master may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a master that failed to start may take to exit (and say why in its log).
const FAIL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a master may take to shut down before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How to find or start a master.
#[derive(Debug, Clone, Default)]
pub(crate) struct MasterOptions {
    /// Use (or start) the master at this socket; default `$MITOSSH_SOCKET`.
    pub socket: Option<PathBuf>,
    /// Passed to a started master.
    pub idle_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub connect_window: Option<usize>,
    /// Leave a started master running.
    pub keep: bool,
}

/// The master in use; [`MasterGuard::finish`] stops it if it was started here.
pub(crate) struct MasterGuard {
    socket: PathBuf,
    started: Option<Started>,
    keep: bool,
}

/// A master this process started.
struct Started {
    child: Child,
    /// Dropping it tells the master its starter is gone.
    lifeline: Option<OwnedFd>,
    log: PathBuf,
}

/// Finds a live master or starts one (its files in `dir`, a private directory).
pub(crate) fn ensure(opts: &MasterOptions, dir: &Path, real_ssh: &Path) -> io::Result<MasterGuard> {
    let requested = opts.socket.clone().or_else(paths::socket_from_env);
    let (socket, started) = match requested {
        Some(s) if master_answers(&s) => (s, None),
        Some(s) => match start(opts, &s, dir, real_ssh) {
            Ok(m) => (s, Some(m)),
            // Another process started one there meanwhile: use it.
            Err(_) if master_answers(&s) => (s, None),
            Err(e) => return Err(e),
        },
        None => {
            let s = dir.join("master.sock");
            let m = start(opts, &s, dir, real_ssh)?;
            (s, Some(m))
        }
    };
    Ok(MasterGuard {
        socket,
        started,
        keep: opts.keep,
    })
}

impl MasterGuard {
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops a master started here, unless asked to keep it: then says where it is and
    /// returns true (its socket and log must stay where they are).
    pub(crate) fn finish(mut self) -> bool {
        let Some(master) = self.started.take() else {
            return false;
        };
        if self.keep {
            eprintln!(
                "mitossh: master {} keeps running (log: {}); export MITOSSH_SOCKET={}",
                master.child.id(),
                master.log.display(),
                shell_word(&self.socket.to_string_lossy())
            );
            // Without a lifeline; forget the child without waiting for it.
            std::mem::forget(master.child);
            true
        } else {
            stop(master, &self.socket);
            false
        }
    }
}

/// Whether a master answers on `socket`.
fn master_answers(socket: &Path) -> bool {
    let Ok(mut conn) = MasterConn::connect(socket) else {
        return false;
    };
    conn.request(Request::Status).is_ok() && matches!(conn.reply(), Ok(Reply::Status(_)))
}

fn start(opts: &MasterOptions, socket: &Path, dir: &Path, real_ssh: &Path) -> io::Result<Started> {
    let exe = paths::sibling("mitossh")?;
    let log = dir.join("master.log");
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let lifeline = if opts.keep {
        None
    } else {
        Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
    };
    let mut cmd = Command::new(&exe);
    cmd.arg("master")
        .arg("--socket")
        .arg(socket)
        .arg("--ready-fd")
        .arg("3")
        .env(paths::real_env("ssh"), real_ssh)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)?,
        );
    if lifeline.is_some() {
        cmd.arg("--lifeline-fd").arg("4");
    }
    if let Some(t) = &opts.idle_timeout {
        cmd.arg("--idle-timeout").arg(t);
    }
    if let Some(t) = &opts.connect_timeout {
        cmd.arg("--connect-timeout").arg(t);
    }
    if let Some(k) = opts.connect_window {
        cmd.arg("--connect-window").arg(k.to_string());
    }
    // Its own session: no controlling terminal, untouched by the terminal's ^C.
    cmd.new_session();
    // It raises its own limit, and gives its children back the user's.
    cmd.restore_descriptor_limit();
    match &lifeline {
        Some((life_r, _)) => cmd.place_fds([(ready_w.as_raw_fd(), 3), (life_r.as_raw_fd(), 4)]),
        None => cmd.place_fds([(ready_w.as_raw_fd(), 3)]),
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", exe.display())))?;
    drop(ready_w);
    let lifeline = lifeline.map(|(r, w)| {
        drop(r);
        w
    });

    // The master writes "ready" once it listens; EOF first means it failed.
    let mut line = String::new();
    let mut reader = BufReader::new(std::fs::File::from(ready_r));
    if !(read_line_within(&mut reader, &mut line, START_TIMEOUT) && line.starts_with("ready")) {
        // A master that failed says why on its way out (its readiness pipe may close first).
        if !exited_within(&mut child, FAIL_TIMEOUT) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let why = std::fs::read_to_string(&log)
            .ok()
            .and_then(|l| {
                l.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_string)
            })
            .map(|l| l.strip_prefix("mitossh: ").unwrap_or(&l).to_string())
            .unwrap_or_else(|| "it exited without a message".into());
        return Err(io::Error::other(format!("the master did not start: {why}")));
    }
    Ok(Started {
        child,
        lifeline,
        log,
    })
}

/// `word` as one word for a POSIX shell, quoted only if it needs to be.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Reads one line with a deadline (poll, then read).
fn read_line_within(
    reader: &mut BufReader<std::fs::File>,
    line: &mut String,
    timeout: Duration,
) -> bool {
    use std::os::fd::AsFd;
    let fd = reader.get_ref().as_fd();
    let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    let timeout = nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX);
    match nix::poll::poll(&mut fds, timeout) {
        Ok(n) if n > 0 => reader.read_line(line).is_ok(),
        _ => false,
    }
}

/// Whether `child` exits (and is reaped) within `timeout`.
fn exited_within(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => return false,
        }
    }
}

/// Asks the master to stop, waits for it, and kills it if it does not go.
fn stop(mut master: Started, socket: &Path) {
    if let Ok(mut conn) = MasterConn::connect(socket) {
        let _ = conn.request(Request::Shutdown).and_then(|_| conn.reply());
    }
    drop(master.lifeline.take());
    if exited_within(&mut master.child, STOP_TIMEOUT) {
        return;
    }
    eprintln!(
        "mitossh: the master did not stop within {}s; killing it (log: {})",
        STOP_TIMEOUT.as_secs(),
        master.log.display()
    );
    let _ = master.child.kill();
    let _ = master.child.wait();
}
