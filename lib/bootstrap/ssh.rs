//! The master's side of a bootstrap over the user's real `ssh` client.
//!
//! Runs `ssh [options] host "/bin/sh -c '<stage 1>'"`, answers stage 1's request for the
//! image, and waits for the agent's ready marker. Everything the user's ssh setup provides
//! (config, keys, agent, ProxyJump) applies because it *is* the user's ssh.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::image::{Arch, Offer};
use super::stage1::{CANNOT_SERVE, Stage1};
use super::{FirstFrames, READY_MARKER, UPLOAD_MARKER};
use crate::sys::pipesize::{PipeGrant, grow_pipe};
use crate::sys::vfork::{Child, Program};
use crate::throttle::Throttle;

/// Output before the markers (from login scripts, say) tolerated before giving up.
const MAX_NOISE: usize = 1 << 20;

/// How to reach the host.
#[derive(Debug, Clone)]
pub(crate) struct SshCommand {
    /// The real ssh client.
    pub program: PathBuf,
    /// Everything between the program and the remote command: options and destination.
    pub args: Vec<OsString>,
    /// For log lines and errors: the host as the user named it.
    pub label: String,
}

/// Descriptors one host's ssh costs this process while it connects (its three pipes, both
/// ends until the spawn is done) and once connected (this side of each pipe).
pub(crate) const DESCRIPTORS_CONNECTING: usize = 8;
pub(crate) const DESCRIPTORS_CONNECTED: usize = 3;

/// Longest line of ssh's stderr passed on whole; the rest of a longer one is dropped.
const MAX_LINE: usize = 4096;

/// What the bootstrap reads ssh's stdout through: one marker line at a time.
const BOOTSTRAP_BUFFER: usize = 2 * MAX_LINE;

/// ssh's stderr is logged at most this many lines a second (a burst of twice as many).
const LOG_LINES_PER_SEC: u32 = 50;

/// Where each line ssh writes on stderr goes while it connects.
pub(crate) type LineSink = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Who is told what while ssh connects (see `master::attempt`), so that this module knows
/// nothing of the master.
pub(crate) struct ConnectHooks {
    /// Each line ssh writes on stderr until the agent runs: bounded, control characters
    /// escaped. After that, its lines go only to the log.
    pub say: LineSink,
    /// Requests to pass on everything ssh wrote so far (a prompt is about to be shown).
    pub flush: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    /// Cancelled: nobody can answer ssh's question; kill it rather than let it guess.
    pub abandoned: CancellationToken,
    /// Resolves when the attempt has taken too long.
    pub expired: BoxFuture<'static, ()>,
    /// Extra environment for ssh (mitossh's askpass helper).
    pub env: Vec<(OsString, OsString)>,
}

impl ConnectHooks {
    /// Nobody listens; only `timeout` bounds the attempt.
    pub(crate) fn none(timeout: Duration) -> ConnectHooks {
        ConnectHooks {
            say: Box::new(|_| {}),
            flush: mpsc::unbounded_channel().1,
            abandoned: CancellationToken::new(),
            expired: tokio::time::sleep(timeout).boxed(),
            env: Vec::new(),
        }
    }
}

/// A running agent at the end of an ssh connection, frames not yet exchanged.
#[derive(Debug)]
pub(crate) struct Bootstrapped {
    pub child: Child,
    /// The agent's output; frames start at its read position.
    pub reader: BufReader<pipe::Receiver>,
    pub writer: pipe::Sender,
    /// The growth of the writer's and the reader's pipes: to be held as long as they are.
    pub pipes: [Option<PipeGrant>; 2],
    /// What had to be uploaded (no cached copy), if anything.
    pub uploaded: Option<Uploaded>,
}

/// An image sent to a host that had no copy.
#[derive(Debug, Clone)]
pub(crate) struct Uploaded {
    pub arch: Arch,
    /// `xz`, `gz` or `raw`, as stage 1 asked.
    pub format: &'static str,
    /// Bytes sent (compressed or not).
    pub sent: usize,
    /// The image's own size.
    pub size: usize,
}

impl std::fmt::Display for Uploaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "uploaded the {} agent: {} KiB ({}, {} KiB as it is)",
            self.arch.name(),
            self.sent >> 10,
            self.format,
            self.size >> 10
        )
    }
}

/// Why an agent could not be started.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ConnectError {
    /// ssh itself failed (its exit status 255): its message, as ssh printed it.
    #[error("{0}")]
    Ssh(String),
    /// ssh worked but the host cannot run an agent (architecture, no writable directory,
    /// a restricted shell…).
    #[error("{0}")]
    CannotServe(String),
    /// The agent was not running within the connect timeout.
    #[error("{0}")]
    Timeout(String),
    /// This process has no descriptors left to start ssh with.
    #[error("{0}")]
    Descriptors(String),
    #[error("{0}")]
    Other(String),
}

/// The last few lines of a child's stderr, also logged as they arrive.
#[derive(Debug, Clone, Default)]
pub(crate) struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == 20 {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The most telling line: the last non-empty one.
    pub(crate) fn last(&self) -> Option<String> {
        let lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().rev().find(|l| !l.trim().is_empty()).cloned()
    }
}

/// Starts ssh with stage 1 and waits until the agent announces itself. `first` (the
/// encoded first frames for the agent) goes at once, in the agent's arguments or written
/// ahead on stdin, so that an agent already on the host finds them waiting; stage 1 skips
/// those on stdin when it has to receive the image, and they are sent again after it.
pub(crate) async fn bootstrap(
    ssh: &SshCommand,
    offer: &Offer,
    hooks: ConnectHooks,
    first: FirstFrames,
) -> Result<Bootstrapped, ConnectError> {
    let ConnectHooks {
        say,
        flush,
        abandoned,
        expired,
        env,
    } = hooks;
    let nonce = random_token();
    let agent_args = ["--nonce", nonce.as_str()];
    let command = |first: &FirstFrames| {
        Stage1 {
            offer,
            nonce: &nonce,
            agent_args: &agent_args,
            first,
        }
        .remote_command()
    };
    let (first, command) = within_command_limit(command, first, super::MAX_REMOTE_COMMAND);
    let first = first.on_stdin();
    let mut child = spawn(ssh, command, env)?;
    let (mut stdin, stdout, err) = async_stdio(&mut child).map_err(|e| spawn_failure(ssh, &e))?;

    let stderr = StderrTail::default();
    let connecting = Arc::new(AtomicBool::new(true));
    let stderr_done = {
        let reader = StderrReader {
            tail: stderr.clone(),
            label: ssh.label.clone(),
            say,
            connecting: connecting.clone(),
        };
        tokio::spawn(reader.run(err, flush))
    };
    let pipes = [grow_pipe(&stdin), grow_pipe(&stdout)];
    // The pipe holds them whatever ssh does; an ssh that dies says so below.
    if let Err(e) = stdin.write_all(first).await {
        tracing::debug!(host = %ssh.label, "writing the first frames: {e}");
    }
    // Small: it reads the marker lines, then stays under the link's reader for the link's
    // life (tokio zeroes all of it), and reads larger than it go past it.
    let mut stdout = BufReader::with_capacity(BOOTSTRAP_BUFFER, stdout);

    let handshake = wait_for_agent(&mut stdout, &mut stdin, offer, &nonce, first);
    let started = Instant::now();
    let outcome = tokio::select! {
        r = handshake => Ok(r),
        _ = expired => Err(None),
        _ = abandoned.cancelled() => Err(Some(())),
    };
    match outcome {
        Ok(Ok(uploaded)) => {
            connecting.store(false, Ordering::SeqCst);
            Ok(Bootstrapped {
                child,
                reader: stdout,
                writer: stdin,
                pipes,
                uploaded,
            })
        }
        Ok(Err(e)) => Err(failed(child, stderr_done, &stderr, &ssh.label, e).await),
        Err(abandoned) => {
            // Killed before it can act on a question nobody answered.
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(gave_up(&ssh.label, abandoned.is_some(), started.elapsed()))
        }
    }
}

/// `first`, or the same frames on stdin when in the script they would make the remote
/// command longer than `limit` (dropbear refuses long exec requests); with the command.
fn within_command_limit(
    command: impl Fn(&FirstFrames) -> String,
    first: FirstFrames,
    limit: usize,
) -> (FirstFrames, String) {
    let script = command(&first);
    if script.len() <= limit || matches!(first, FirstFrames::Stdin(_)) {
        return (first, script);
    }
    let first = first.to_stdin();
    let script = command(&first);
    (first, script)
}

/// Starts ssh running stage 1, its stdio piped to us. Without fork: a master holding
/// many hosts would copy its page tables for every ssh (see `sys::vfork`).
fn spawn(
    ssh: &SshCommand,
    stage1: String,
    env: Vec<(OsString, OsString)>,
) -> Result<Child, ConnectError> {
    let mut cmd = Program::new(&ssh.program);
    cmd.args(&ssh.args).args([stage1]);
    for (key, value) in env {
        cmd.env(key, value);
    }
    // ssh gets the descriptor limit the user gave us (Program restores it), not ours.
    cmd.parent_death_signal(nix::sys::signal::Signal::SIGTERM);
    tracing::debug!(host = %ssh.label, "starting {:?} {:?}", ssh.program, ssh.args);
    cmd.spawn().map_err(|e| spawn_failure(ssh, &e))
}

/// ssh's stdin, stdout and stderr, for the runtime.
fn async_stdio(child: &mut Child) -> io::Result<(pipe::Sender, pipe::Receiver, pipe::Receiver)> {
    let missing = || io::Error::other("ssh's stdio is not piped");
    Ok((
        pipe::Sender::from_owned_fd(child.stdin.take().ok_or_else(missing)?)?,
        pipe::Receiver::from_owned_fd(child.stdout.take().ok_or_else(missing)?)?,
        pipe::Receiver::from_owned_fd(child.stderr.take().ok_or_else(missing)?)?,
    ))
}

/// The bootstrap failed with ssh still running or just exited: wait briefly for its exit
/// status and its last words, then explain.
async fn failed(
    mut child: Child,
    stderr_done: tokio::task::JoinHandle<()>,
    stderr: &StderrTail,
    label: &str,
    e: io::Error,
) -> ConnectError {
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let code = match status {
        Ok(Ok(s)) => s.code(),
        _ => {
            let _ = child.start_kill();
            None
        }
    };
    // ssh has exited: its stderr reaches EOF unless a grandchild still holds it.
    let _ = tokio::time::timeout(Duration::from_secs(2), stderr_done).await;
    failure(code, stderr, label, e)
}

/// Nobody could answer ssh's question (`abandoned`), or the connect timeout passed.
fn gave_up(label: &str, abandoned: bool, waited: Duration) -> ConnectError {
    if abandoned {
        return ConnectError::Other(format!(
            "{label}: ssh asked a question and nobody could answer it (no terminal); \
             use a key with an ssh-agent, or run the command on a terminal"
        ));
    }
    ConnectError::Timeout(format!(
        "{label}: timed out after {}s waiting for the mitossh agent to start",
        waited.as_secs()
    ))
}

/// Why ssh could not even be started: out of descriptors (say how many and what to do),
/// or something else.
fn spawn_failure(ssh: &SshCommand, e: &io::Error) -> ConnectError {
    use crate::sys::limits;
    if !limits::is_exhaustion(e) {
        return ConnectError::Other(format!("cannot run {}: {e}", ssh.program.display()));
    }
    let limit = limits::descriptor_limit().map_or(0, |l| l.soft);
    ConnectError::Descriptors(format!(
        "{}: cannot start ssh: out of file descriptors ({} open, limit {limit}); each host \
         needs about {} while it connects and {} once connected: raise the limit \
         (ulimit -n, up to ulimit -Hn) or connect fewer hosts at once",
        ssh.label,
        limits::open_descriptors(),
        DESCRIPTORS_CONNECTING,
        DESCRIPTORS_CONNECTED,
    ))
}

/// Reads marker lines, uploading an image when asked. Returns what it uploaded.
async fn wait_for_agent(
    stdout: &mut BufReader<pipe::Receiver>,
    stdin: &mut pipe::Sender,
    offer: &Offer,
    nonce: &str,
    first: &[u8],
) -> io::Result<Option<Uploaded>> {
    let upload = format!("{UPLOAD_MARKER} {nonce} ");
    let ready = format!("{READY_MARKER} {nonce} ");
    let mut uploaded = None;
    let mut noise = 0usize;
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        let n = (&mut *stdout)
            .take(4096)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(words) = line.strip_prefix(upload.as_bytes()) {
            let sent = send_image(stdin, offer, words).await?;
            // Stage 1 skipped the first frames to read the image: they come again.
            stdin.write_all(first).await?;
            stdin.flush().await?;
            tracing::debug!("{sent}");
            uploaded = Some(sent);
        } else if line.starts_with(ready.as_bytes()) {
            return Ok(uploaded);
        } else {
            noise += n;
            tracing::debug!("ignoring remote output: {}", String::from_utf8_lossy(&line));
            if noise > MAX_NOISE {
                return Err(io::Error::other(
                    "too much output before the agent started (a login script printing?)",
                ));
            }
        }
    }
}

/// Answers stage 1's `<arch> <format>`: the byte count on a line, then the bytes.
async fn send_image(stdin: &mut pipe::Sender, offer: &Offer, words: &[u8]) -> io::Result<Uploaded> {
    let words = String::from_utf8_lossy(words);
    let (arch, format) = words.trim_end().split_once(' ').unwrap_or_default();
    let image = Arch::from_name(arch)
        .and_then(|a| offer.image(a))
        .ok_or_else(|| io::Error::other(format!("stage 1 asked for an agent for {arch:?}")))?
        .clone();
    let (format, bytes) = match (format, offer.gzip, &image.xz) {
        ("gz", Some(gzip), _) => {
            let compressing = image.clone();
            let gz = tokio::task::spawn_blocking(move || gzip(&compressing))
                .await
                .map_err(io::Error::other)?;
            ("gz", gz)
        }
        ("xz", _, Some(xz)) => ("xz", xz.clone()),
        ("raw", _, _) => ("raw", image.bytes.clone()),
        (other, _, _) => {
            return Err(io::Error::other(format!(
                "stage 1 asked for the agent as {other:?}"
            )));
        }
    };
    stdin
        .write_all(format!("{}\n", bytes.len()).as_bytes())
        .await?;
    stdin.write_all(&bytes).await?;
    stdin.flush().await?;
    Ok(Uploaded {
        arch: image.arch,
        format,
        sent: bytes.len(),
        size: image.bytes.len(),
    })
}

/// Explains a failed bootstrap from ssh's exit status and stderr.
fn failure(code: Option<i32>, stderr: &StderrTail, label: &str, e: io::Error) -> ConnectError {
    match (code, stderr.last()) {
        (Some(255), Some(msg)) => ConnectError::Ssh(msg),
        (Some(255), None) => ConnectError::Ssh(format!("ssh: connection to {label} failed")),
        (Some(CANNOT_SERVE), Some(msg)) => {
            ConnectError::CannotServe(format!("{label}: {}", msg.trim_start_matches("mitossh: ")))
        }
        (Some(c), Some(msg)) => ConnectError::CannotServe(format!(
            "{label}: the mitossh agent did not start (exit {c}): {msg}"
        )),
        (None, Some(msg)) => ConnectError::Other(format!("{label}: {msg}")),
        (c, None) => ConnectError::CannotServe(format!(
            "{label}: the mitossh agent did not start ({}: {e})",
            c.map_or("no exit status".to_string(), |c| format!("exit {c}"))
        )),
    }
}

/// Reads ssh's stderr: lines of bounded length, passed on while connecting, logged at a
/// bounded rate, the last ones kept for error messages. ssh's stderr is also where the
/// remote agent's own stderr ends up, so none of it is trusted.
struct StderrReader {
    tail: StderrTail,
    label: String,
    say: LineSink,
    connecting: Arc<AtomicBool>,
}

impl StderrReader {
    async fn run(
        self,
        err: pipe::Receiver,
        mut flush: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    ) {
        let mut err = BufReader::with_capacity(MAX_LINE, err);
        let mut line = Vec::with_capacity(256);
        let mut rate = Throttle::new(LOG_LINES_PER_SEC);
        loop {
            tokio::select! {
                more = read_line(&mut err, &mut line) => match more {
                    Ok(true) => self.line(&mut line, &mut rate),
                    _ => break,
                },
                Some(done) = flush.recv() => {
                    // Whatever is already in the pipe, without waiting for more.
                    while let Some(Ok(true)) = read_line(&mut err, &mut line).now_or_never() {
                        self.line(&mut line, &mut rate);
                    }
                    let _ = done.send(());
                }
            }
        }
        if !line.is_empty() {
            self.line(&mut line, &mut rate);
        }
        if rate.dropped() > 0 {
            tracing::warn!(host = %self.label, "{} lines of ssh's stderr were not logged", rate.dropped());
        }
    }

    fn line(&self, line: &mut Vec<u8>, rate: &mut Throttle) {
        let text = printable(line);
        line.clear();
        if self.connecting.load(Ordering::SeqCst) {
            (self.say)(text.as_bytes());
        }
        if rate.allow() {
            tracing::info!(host = %self.label, "{text}");
        }
        self.tail.push(text);
    }
}

/// Appends the rest of a line to `line` (without its newline), keeping at most
/// [`MAX_LINE`] bytes of it. `Ok(false)` at end of input with nothing read.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
) -> io::Result<bool> {
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(!line.is_empty());
        }
        let (part, used, end) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&part[..part.len().min(room)]);
        r.consume(used);
        if end {
            return Ok(true);
        }
    }
}

/// A line fit for a terminal and a log: invalid UTF-8 replaced, a trailing carriage
/// return dropped, the rest cleaned as any untrusted text.
pub(crate) fn printable(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    crate::untrusted::clean(&String::from_utf8_lossy(line), MAX_LINE)
}

/// 64 random bits as hex, from the kernel.
pub(crate) fn random_token() -> String {
    let mut buf = [0u8; 8];
    if !crate::sys::random::fill(&mut buf) {
        // Not secret, only unlikely to collide with stray output.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        buf = (t.as_nanos() as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    super::to_hex(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_frames_that_would_make_the_command_too_long_go_on_stdin() {
        let offer = Offer {
            images: Vec::new(),
            gzip: None,
        };
        let command = |first: &FirstFrames| {
            Stage1 {
                offer: &offer,
                nonce: "n",
                agent_args: &["--nonce", "n"],
                first,
            }
            .remote_command()
        };
        let first = FirstFrames::Command("ab".repeat(100));
        let short = command(&FirstFrames::Stdin(Vec::new())).len();
        assert_eq!(
            within_command_limit(command, first.clone(), short + 1000).0,
            first
        );
        assert_eq!(
            within_command_limit(command, first, short + 100).0,
            FirstFrames::Stdin(vec![0xab; 100])
        );
    }
}
