//! The master's side of a bootstrap over the user's real `ssh` client.
//!
//! Runs `ssh [options] host "/bin/sh -c '<stage 1>'"`, answers stage 1's request for the
//! image, and waits for the agent's ready marker. Everything the user's ssh setup provides
//! (config, keys, agent, ProxyJump) applies because it *is* the user's ssh.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::image::AgentImage;
use super::stage1::{CANNOT_SERVE, Stage1};
use super::{READY_MARKER, UPLOAD_MARKER};

/// Output before the markers (from login scripts, say) tolerated before giving up.
const MAX_NOISE: usize = 1 << 20;

/// How to reach the host.
#[derive(Debug, Clone)]
pub struct SshCommand {
    /// The real ssh client.
    pub program: PathBuf,
    /// Everything between the program and the remote command: options and destination.
    pub args: Vec<OsString>,
    /// For log lines and errors: the host as the user named it.
    pub label: String,
}

/// A running agent at the end of an ssh connection, frames not yet exchanged.
#[derive(Debug)]
pub struct Bootstrapped {
    pub child: Child,
    /// The agent's output; frames start at its read position.
    pub reader: BufReader<ChildStdout>,
    pub writer: ChildStdin,
    /// Whether the image had to be uploaded (no cached copy).
    pub uploaded: bool,
    /// The last lines ssh wrote on stderr, for error messages.
    pub stderr: StderrTail,
}

/// Why an agent could not be started.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// ssh itself failed (its exit status 255): its message, as ssh printed it.
    #[error("{0}")]
    Ssh(String),
    /// ssh worked but the host cannot run an agent (architecture, no writable directory,
    /// a restricted shell…).
    #[error("{0}")]
    CannotServe(String),
    #[error("{0}")]
    Other(String),
}

/// The last few lines of a child's stderr, also logged as they arrive.
#[derive(Debug, Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == 20 {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The most telling line: the last non-empty one.
    pub fn last(&self) -> Option<String> {
        let lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().rev().find(|l| !l.trim().is_empty()).cloned()
    }
}

/// Starts ssh with stage 1 and waits until the agent announces itself.
pub async fn bootstrap(
    ssh: &SshCommand,
    image: &AgentImage,
    timeout: Duration,
) -> Result<Bootstrapped, ConnectError> {
    let nonce = random_token();
    let stage1 = Stage1 {
        hash: &image.hash,
        size: image.bytes.len() as u64,
        nonce: &nonce,
        agent_args: &["--nonce", &nonce],
    };
    let mut cmd = Command::new(&ssh.program);
    cmd.args(&ssh.args)
        .arg(stage1.remote_command())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || crate::sys::process::set_parent_death_signal(libc::SIGTERM, parent));
    }
    tracing::debug!(host = %ssh.label, "starting {:?} {:?}", ssh.program, ssh.args);
    let mut child = cmd
        .spawn()
        .map_err(|e| ConnectError::Other(format!("cannot run {}: {e}", ssh.program.display())))?;

    let stderr = StderrTail::default();
    let stderr_done = child
        .stderr
        .take()
        .map(|err| tokio::spawn(log_stderr(err, stderr.clone(), ssh.label.clone())));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("piped");
    crate::sys::fdio::grow_pipe(&stdin);
    crate::sys::fdio::grow_pipe(&stdout);
    let mut stdout = BufReader::with_capacity(256 * 1024, stdout);

    let handshake = wait_for_agent(&mut stdout, &mut stdin, image, &nonce);
    let outcome = tokio::time::timeout(timeout, handshake).await;
    match outcome {
        Ok(Ok(uploaded)) => Ok(Bootstrapped {
            child,
            reader: stdout,
            writer: stdin,
            uploaded,
            stderr,
        }),
        Ok(Err(e)) => {
            let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            let code = match status {
                Ok(Ok(s)) => s.code(),
                _ => {
                    let _ = child.start_kill();
                    None
                }
            };
            // ssh has exited: its stderr reaches EOF unless a grandchild still holds it.
            if let Some(done) = stderr_done {
                let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
            }
            Err(failure(code, &stderr, &ssh.label, e))
        }
        Err(_) => {
            let _ = child.start_kill();
            Err(ConnectError::Other(format!(
                "{}: timed out after {}s waiting for the mitossh agent to start",
                ssh.label,
                timeout.as_secs()
            )))
        }
    }
}

/// Reads marker lines, uploading the image when asked. Returns whether it uploaded.
async fn wait_for_agent(
    stdout: &mut BufReader<ChildStdout>,
    stdin: &mut ChildStdin,
    image: &AgentImage,
    nonce: &str,
) -> io::Result<bool> {
    let upload = format!("{UPLOAD_MARKER} {nonce}\n");
    let ready = format!("{READY_MARKER} {nonce} ");
    let mut uploaded = false;
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
        if line == upload.as_bytes() {
            stdin.write_all(&image.bytes).await?;
            stdin.flush().await?;
            uploaded = true;
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

async fn log_stderr(err: tokio::process::ChildStderr, tail: StderrTail, label: String) {
    let mut lines = BufReader::new(err).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(host = %label, "{line}");
        tail.push(line);
    }
}

/// 64 random bits as hex, from the kernel.
pub fn random_token() -> String {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom fills the buffer it is given.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        // Not secret, only unlikely to collide with stray output.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        buf = (t.as_nanos() as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
