//! The master: holds one context per host (an agent at the far end of the user's own ssh
//! connection) and serves shims over a private Unix socket.
//!
//! - [`server`]: the socket, peer checks, request dispatch;
//! - [`session`]: one shim invocation relayed to one stream;
//! - [`registry`]: contexts by key, shared connection attempts;
//! - [`context`]: one agent's link and the streams on it;
//! - [`key`]: which invocations share a context, and the ssh command line;
//! - [`attempt`]: what the requests waiting for one connection attempt share (questions,
//!   ssh's output);
//! - [`resolve`]: the cache of `ssh -G` answers that contexts are keyed by;
//! - [`window`]: at most K handshakes at once, the rest queued in order.
//!
//! Shutdown (SIGTERM, SIGINT, SIGHUP, `mitossh stop`, or the lifeline closing) is one
//! cancellation token: the listener stops, every agent is told to stop its processes and
//! exit, and the master waits (bounded) for the ssh clients to end before it returns.

pub(crate) mod attempt;
pub(crate) mod context;
pub(crate) mod escape;
pub(crate) mod key;
pub(crate) mod prompt;
pub(crate) mod registry;
pub(crate) mod resolve;
pub(crate) mod server;
pub(crate) mod session;
pub(crate) mod window;

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bootstrap::image::AgentImages;
use crate::proto::{StatusReport, StreamId};
use crate::throttle::Warning;
use registry::Registry;
use resolve::Resolutions;
use window::Connects;

/// How long shutdown waits for agents and ssh clients to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How the master runs.
#[derive(Debug)]
pub(crate) struct Config {
    pub socket: PathBuf,
    /// Close a context after this long without streams.
    pub idle_timeout: Duration,
    /// Limit on starting an agent, authentication included.
    pub connect_timeout: Duration,
    /// The real ssh client.
    pub ssh: PathBuf,
    /// Written to and closed once the socket accepts connections.
    pub ready: Option<OwnedFd>,
    /// The master shuts down when this descriptor reaches end of file (its starter died).
    pub lifeline: Option<OwnedFd>,
    /// At most this many ssh handshakes at once (and as many on each gateway).
    pub connect_window: usize,
}

/// State shared by every task of the master.
pub(crate) struct Master {
    pub config: Config,
    pub ssh: PathBuf,
    /// The agents it uploads, by architecture.
    pub agents: AgentImages,
    pub registry: Registry,
    pub resolutions: Resolutions,
    pub connects: Connects,
    /// Warnings that can repeat at scale, each rate-limited.
    pub warnings: Warnings,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    started: Instant,
    next_stream: AtomicU32,
}

impl Master {
    pub(crate) fn next_stream_id(&self) -> StreamId {
        self.next_stream
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
    }

    pub(crate) fn status(&self) -> StatusReport {
        let contexts = self.registry.contexts();
        let gateways = contexts.iter().filter_map(|c| c.spawn_load());
        let limit = crate::sys::limits::descriptor_limit().map_or(0, |l| l.soft);
        StatusReport {
            master_pid: std::process::id(),
            socket: self.config.socket.display().to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            connects: self.connects.status(gateways),
            descriptors: (crate::sys::limits::open_descriptors() as u64, limit),
            contexts: contexts.iter().map(|c| c.status()).collect(),
        }
    }
}

/// The master's warnings that a thousand hosts or clients could repeat without end.
pub(crate) struct Warnings {
    pub accept: Warning,
    pub clients: Warning,
}

impl Default for Warnings {
    fn default() -> Warnings {
        Warnings {
            accept: Warning::new(1),
            clients: Warning::new(5),
        }
    }
}

/// How `mitossh master` was asked to run.
#[derive(Debug)]
pub struct Options {
    /// Listen here; default `$MITOSSH_SOCKET`, else the default socket.
    pub socket: Option<PathBuf>,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// At most this many ssh handshakes at once; more hosts wait their turn, in order.
    pub connect_window: usize,
    /// Descriptors its starter left open: write "ready" to this one once listening…
    pub ready_fd: Option<i32>,
    /// … and shut down when this one reaches end of file.
    pub lifeline_fd: Option<i32>,
}

/// Runs `mitossh master` until it is stopped; returns the exit status.
pub fn main(opts: Options) -> i32 {
    // mimalloc keeps what a burst of connects or sessions freed; an idle master gives it
    // back (see `sys::memory`).
    #[cfg(feature = "mimalloc")]
    crate::sys::memory::set_collector(crate::sys::memory::mimalloc_collect);
    match Config::of(opts).and_then(|config| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let result = runtime.block_on(run(config));
        runtime.shutdown_timeout(Duration::from_secs(1));
        result
    }) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mitossh: {e}");
            1
        }
    }
}

impl Config {
    fn of(opts: Options) -> io::Result<Config> {
        let socket = crate::paths::socket_or_default(opts.socket)?;
        let ssh = crate::paths::find_real("ssh").ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "ssh was not found on PATH; install openssh-client or set MITOSSH_REAL_SSH",
            )
        })?;
        let take = |fd: Option<i32>| fd.map(crate::sys::stdio::inherited).transpose();
        Ok(Config {
            socket,
            idle_timeout: opts.idle_timeout,
            connect_timeout: opts.connect_timeout,
            connect_window: opts.connect_window,
            ssh,
            ready: take(opts.ready_fd)?,
            lifeline: take(opts.lifeline_fd)?,
        })
    }
}

/// Runs a master until it is told to stop.
async fn run(mut config: Config) -> io::Result<()> {
    // Each host costs a few descriptors (see `bootstrap::ssh`), each session a few more:
    // far past the usual soft limit of 1024 at a few hundred hosts.
    match crate::sys::limits::raise_descriptor_limit() {
        Ok((before, after)) if before.soft != after.soft => {
            tracing::info!(
                "descriptor limit raised from {} to {}",
                before.soft,
                after.soft
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the descriptor limit: {e}"),
    }
    let agents = AgentImages::find()?;
    agents.compress_ahead();
    tracing::info!(
        "agents for {} from {}",
        agents.arches(),
        agents.dir.display()
    );
    let (listener, socket_file) = bind(&config.socket).await?;
    let ready = config.ready.take();
    let lifeline = config.lifeline.take();
    let window = config.connect_window;
    // Kept beside the sockets, for the next master (of the same user and ssh).
    let answers = crate::paths::runtime_dir().map(|d| d.join("ssh-answers"));
    let resolutions = Resolutions::new(
        crate::sys::user::Account::current().home,
        answers.ok().map(|f| (f, config.ssh.as_path())),
    );
    let master = Arc::new(Master {
        ssh: config.ssh.clone(),
        config,
        agents,
        registry: Registry::default(),
        resolutions,
        connects: Connects::new(window),
        warnings: Warnings::default(),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        started: Instant::now(),
        next_stream: AtomicU32::new(0),
    });
    tracing::info!(
        "master {} listening on {}",
        std::process::id(),
        master.config.socket.display()
    );

    if let Some(fd) = lifeline {
        tokio::spawn(watch_lifeline(fd, master.shutdown.clone()));
    }
    tokio::spawn(watch_signals(master.shutdown.clone()));
    if let Some(fd) = ready {
        let mut f = std::fs::File::from(fd);
        let _ = std::io::Write::write_all(&mut f, b"ready\n");
    }

    server::serve(master.clone(), listener).await;

    tracing::info!("shutting down");
    socket_file.remove();
    for ctx in master.registry.contexts() {
        ctx.shutdown();
    }
    master.tasks.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        for ctx in master.registry.contexts() {
            ctx.dead.cancelled().await;
        }
        master.tasks.wait().await;
    })
    .await;
    Ok(())
}

/// The socket file this master made, to be removed on exit only if it is still the same
/// file (someone may have replaced it meanwhile).
struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    fn remove(&self) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the socket. A live master there is left alone (an error says how to use it); a
/// stale socket of ours is replaced; anything else (a file, a directory, a link, someone
/// else's socket) is refused, never removed. The directory must exist.
async fn bind(path: &Path) -> io::Result<(UnixListener, SocketFile)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    crate::paths::socket_dir(dir)?;
    // Two masters starting on one path must not both find it stale and remove each
    // other's socket: the check, the removal and the bind happen under a lock on the
    // directory (no file of ours is added to it).
    let _lock = DirLock::take(dir)?;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", path.display()),
            ));
        }
        Ok(meta) => {
            let me = nix::unistd::getuid().as_raw();
            if !meta.file_type().is_socket() || meta.uid() != me {
                let what = if meta.file_type().is_socket() {
                    "another user's socket"
                } else if meta.is_dir() {
                    "a directory"
                } else if meta.file_type().is_symlink() {
                    "a symbolic link"
                } else {
                    "not a socket"
                };
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is {what}; refusing to replace it (choose another --socket or MITOSSH_SOCKET)",
                        path.display()
                    ),
                ));
            }
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "a master already listens on {}; use it (export MITOSSH_SOCKET={}) or stop it with `mitossh stop`",
                        path.display(),
                        path.display()
                    ),
                ));
            }
            // A socket of ours that nobody answers: a master that was killed.
            std::fs::remove_file(path)?;
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", path.display()),
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let meta = std::fs::symlink_metadata(path)?;
    let file = SocketFile {
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    };
    Ok((listener, file))
}

/// An exclusive flock on a directory, released on drop. Bounded: a directory someone
/// else keeps locked is an error, not a hang.
struct DirLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

impl DirLock {
    const WAIT: Duration = Duration::from_secs(5);

    fn take(dir: &Path) -> io::Result<DirLock> {
        use nix::fcntl::{Flock, FlockArg};
        let mut file = std::fs::File::open(dir)?;
        let deadline = Instant::now() + Self::WAIT;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(DirLock(lock)),
                Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    file = f;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((_, e)) => {
                    return Err(io::Error::new(
                        io::Error::from(e).kind(),
                        format!("cannot lock {}: {e}", dir.display()),
                    ));
                }
            }
        }
    }
}

async fn watch_signals(shutdown: CancellationToken) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = hup.recv() => {}
        _ = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}

/// Shuts the master down when the lifeline pipe closes: whoever started it has died.
async fn watch_lifeline(fd: OwnedFd, shutdown: CancellationToken) {
    use tokio::io::AsyncReadExt;
    let Ok(mut io) = crate::sys::fdio::FdIo::new(fd) else {
        return;
    };
    let mut buf = [0u8; 64];
    loop {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    tracing::info!("the process that started this master is gone");
    shutdown.cancel();
}
