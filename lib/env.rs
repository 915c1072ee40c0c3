//! `mitossh-env CMD…`: run CMD with the shims first on PATH and a master at hand.
//!
//! If `$MITOSSH_SOCKET` (or `--socket`) names a live master, CMD uses it and it is left
//! running. Otherwise a master is started in a private directory, CMD runs, and the master
//! is stopped afterwards (unless `--keep`). The started master holds a *lifeline*: a pipe
//! whose other end only this process has, so the master also goes away if this process
//! is killed. Nothing is left behind either way.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::paths;
use crate::proto::{Reply, Request};
use crate::shim::client::MasterConn;
use crate::shim::target;

/// Exit status when mitossh-env itself fails, as GNU env uses.
pub const ENV_FAILED: i32 = 125;

/// How long a new master may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a master may take to shut down before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of `mitossh-env`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Leave a started master running after CMD exits.
    pub keep: bool,
    /// Use (or start) the master at this socket.
    pub socket: Option<PathBuf>,
    /// Passed to a started master.
    pub idle_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    /// Enter every host as this user (`--become`), by this method.
    pub become_user: Option<String>,
    pub become_method: Option<String>,
    /// Reach every host through these hops, in order (`--via`), and how.
    pub via: Vec<String>,
    pub via_mode: Option<String>,
    /// The command and its arguments.
    pub command: Vec<OsString>,
}

/// A master this process started.
struct Started {
    child: Child,
    /// Dropping it tells the master its starter is gone.
    lifeline: Option<OwnedFd>,
    log: PathBuf,
}

/// Runs `mitossh-env`; returns the exit status.
pub fn run(opts: Options) -> i32 {
    match try_run(opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mitossh-env: {e}");
            ENV_FAILED
        }
    }
}

fn try_run(opts: Options) -> io::Result<i32> {
    if let Some(m) = &opts.become_method {
        crate::config::parse_method(m).map_err(io::Error::other)?;
    }
    if let Some(m) = &opts.via_mode {
        crate::config::parse_via_mode(m).map_err(io::Error::other)?;
    }
    let Some((program, args)) = opts.command.split_first() else {
        return Err(io::Error::other(
            "no command given (usage: mitossh-env [OPTIONS] CMD [ARGS]...)",
        ));
    };
    let real_ssh = paths::find_real("ssh").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "ssh was not found on PATH; install openssh-client or set MITOSSH_REAL_SSH",
        )
    })?;
    let dir = paths::runtime_dir()?.join(format!("env-{}", std::process::id()));
    paths::private_dir(&dir)?;
    let result = with_dir(&opts, &dir, &real_ssh, program, args);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn with_dir(
    opts: &Options,
    dir: &Path,
    real_ssh: &Path,
    program: &OsString,
    args: &[OsString],
) -> io::Result<i32> {
    let requested = opts.socket.clone().or_else(paths::socket_from_env);
    let (socket, mut started) = match requested {
        Some(s) if master_answers(&s) => (s, None),
        Some(s) => {
            let m = start_master(opts, &s, dir, real_ssh)?;
            (s, Some(m))
        }
        None => {
            let s = dir.join("master.sock");
            let m = start_master(opts, &s, dir, real_ssh)?;
            (s, Some(m))
        }
    };
    let shims = make_shim_dir(dir)?;

    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    let mut new_path = shims.clone().into_os_string();
    new_path.push(":");
    new_path.push(&path);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("PATH", new_path)
        .env(paths::SOCKET_ENV, &socket)
        .env(paths::SHIM_DIR_ENV, &shims)
        .env(paths::real_env("ssh"), real_ssh);
    let addressing = [
        (target::BECOME_ENV, opts.become_user.clone()),
        (target::BECOME_METHOD_ENV, opts.become_method.clone()),
        (
            target::VIA_ENV,
            (!opts.via.is_empty()).then(|| opts.via.join(",")),
        ),
        (target::VIA_MODE_ENV, opts.via_mode.clone()),
    ];
    for (key, value) in addressing {
        if let Some(v) = value {
            cmd.env(key, v);
        }
    }
    for prog in ["scp", "sftp"] {
        if let Some(real) = paths::find_real(prog) {
            cmd.env(paths::real_env(prog), real);
        }
    }
    let status = match cmd.spawn() {
        Ok(mut child) => {
            // Like system(3): the terminal's ^C and ^\ are for CMD; we wait for it either
            // way. (Ignored only after the spawn: CMD must not inherit SIG_IGN.)
            let _ignored = IgnoreInterrupts::new();
            child
                .wait()
                .map(|s| s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)))
        }
        Err(e) => {
            let code = if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            eprintln!("mitossh-env: {}: {e}", program.to_string_lossy());
            Ok(code)
        }
    };

    if let Some(master) = started.take() {
        if opts.keep {
            eprintln!(
                "mitossh-env: master {} keeps running; export MITOSSH_SOCKET={}",
                master.child.id(),
                socket.display()
            );
            // The lifeline is not kept with --keep; forget the child without waiting.
            std::mem::forget(master.child);
        } else {
            stop_master(master, &socket);
        }
    }
    status
}

/// Whether a master answers on `socket`.
fn master_answers(socket: &Path) -> bool {
    let Ok(mut conn) = MasterConn::connect(socket) else {
        return false;
    };
    conn.request(Request::Status).is_ok() && matches!(conn.reply(), Ok(Reply::Status(_)))
}

fn start_master(opts: &Options, socket: &Path, dir: &Path, real_ssh: &Path) -> io::Result<Started> {
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
    let ready_fd = ready_w.as_raw_fd();
    let life_fd = lifeline.as_ref().map(|(r, _)| r.as_raw_fd());
    // SAFETY: only async-signal-safe calls (setsid, fcntl, dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Its own session: no controlling terminal, untouched by the terminal's ^C.
            libc::setsid();
            // Move the inherited ends above 10 first so the dup2s cannot clobber each other.
            let ready = libc::fcntl(ready_fd, libc::F_DUPFD, 10);
            let life = life_fd.map(|fd| libc::fcntl(fd, libc::F_DUPFD, 10));
            if ready < 0 || libc::dup2(ready, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(life) = life
                && (life < 0 || libc::dup2(life, 4) < 0)
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", exe.display())))?;
    drop(ready_w);
    let lifeline = lifeline.map(|(r, w)| {
        drop(r);
        w
    });

    // The master writes "ready" once it listens; EOF first means it failed.
    let started = Instant::now();
    let mut line = String::new();
    let mut reader = BufReader::new(std::fs::File::from(ready_r));
    let outcome = wait_line(&mut reader, &mut line, START_TIMEOUT);
    if !(outcome && line.starts_with("ready")) {
        let _ = child.kill();
        let _ = child.wait();
        let why = std::fs::read_to_string(&log)
            .ok()
            .and_then(|l| {
                l.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "it exited without a message".into());
        return Err(io::Error::other(format!("the master did not start: {why}")));
    }
    tracing::debug!("master {} ready after {:?}", child.id(), started.elapsed());
    Ok(Started {
        child,
        lifeline,
        log,
    })
}

/// Reads one line with a deadline (poll, then read).
fn wait_line(reader: &mut BufReader<std::fs::File>, line: &mut String, timeout: Duration) -> bool {
    use std::os::fd::AsFd;
    let fd = reader.get_ref().as_fd();
    let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    match nix::poll::poll(
        &mut fds,
        nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
    ) {
        Ok(n) if n > 0 => reader.read_line(line).is_ok(),
        _ => false,
    }
}

/// Asks the master to stop, waits for it, and kills it if it does not go.
fn stop_master(mut master: Started, socket: &Path) {
    if let Ok(mut conn) = MasterConn::connect(socket) {
        let _ = conn.request(Request::Shutdown).and_then(|_| conn.reply());
    }
    drop(master.lifeline.take());
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match master.child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => break,
        }
    }
    eprintln!(
        "mitossh-env: the master did not stop within {}s; killing it (log: {})",
        STOP_TIMEOUT.as_secs(),
        master.log.display()
    );
    let _ = master.child.kill();
    let _ = master.child.wait();
}

/// A directory with only `ssh`, `scp` and `sftp` in it, pointing at the shims built next
/// to this executable, to put first on PATH.
fn make_shim_dir(dir: &Path) -> io::Result<PathBuf> {
    let bin = dir.join("bin");
    paths::private_dir(&bin)?;
    for prog in ["ssh", "scp", "sftp"] {
        let target = paths::sibling(prog)?;
        let link = bin.join(prog);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)?;
    }
    Ok(bin)
}

/// Ignores SIGINT and SIGQUIT while alive; the previous dispositions come back on drop.
struct IgnoreInterrupts {
    int: Option<nix::sys::signal::SigAction>,
    quit: Option<nix::sys::signal::SigAction>,
}

impl IgnoreInterrupts {
    fn new() -> IgnoreInterrupts {
        use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: installing SIG_IGN runs no code in signal context.
        unsafe {
            IgnoreInterrupts {
                int: sigaction(Signal::SIGINT, &ignore).ok(),
                quit: sigaction(Signal::SIGQUIT, &ignore).ok(),
            }
        }
    }
}

impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, sigaction};
        // SAFETY: restoring the dispositions we replaced.
        unsafe {
            if let Some(a) = &self.int {
                let _ = sigaction(Signal::SIGINT, a);
            }
            if let Some(a) = &self.quit {
                let _ = sigaction(Signal::SIGQUIT, a);
            }
        }
    }
}
