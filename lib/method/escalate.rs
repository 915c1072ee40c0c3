//! sudo, su and doas: becoming another user on this host.
//!
//! The tool runs with
//! - **stdin**: this agent's own image in a memory file (`image::image_for_others`: the
//!   cached copy it may run from is private to its user), which the new agent is started
//!   from: `exec /proc/self/fd/0 agent --hop`
//!   (su reads its password from stdin, so for su stdin is the pty and the image is fd 3);
//! - **stdout**: one end of a socketpair, which becomes the new agent's link, both ways;
//! - **stderr**: a pty slave, which is also its controlling terminal (so `requiretty` is
//!   met) and where it prompts for the password.
//!
//! sudo and friends close descriptors above 2 but keep these three, and only stderr is a
//! terminal: under sudo's `use_pty` only stderr is wrapped, and the protocol's bytes never
//! cross a line discipline. Nothing is written to disk on the host.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::dialect::{Dialect, Seen};
use super::{AskPassword, BoxReader, Child, PASSWORD_TIMEOUT, SPAWN_TIMEOUT, SpawnError};
use crate::bootstrap::{READY_MARKER, handshake, ssh::random_token};
use crate::link;
use crate::proto::{Become, BecomeMethod, ContextId};
use crate::sys::fdio::FdIo;
use crate::sys::spawn::ChildSetup;

/// At most this much of the tool's terminal output is kept for judging it.
const TRANSCRIPT_LIMIT: usize = 64 * 1024;

/// Starts a child agent as `role.user` and waits until it has said hello.
/// `shell` is the parent's command shell: sudo and doas run a command themselves, not
/// through the target's login shell, so their child keeps it (su's child uses its own).
pub(crate) async fn start(
    child: ContextId,
    role: &Become,
    shell: &Path,
    mut ask: AskPassword,
) -> Result<Child, SpawnError> {
    let nonce = random_token();
    let dialect = Dialect::new(role.method, &nonce);
    let mut launched = launch(role, &dialect, &nonce, shell)
        .map_err(|e| SpawnError::Failed(format!("cannot run {}: {e}", role.method.name())))?;

    let mut transcript = String::new();
    let mut answered = 0;
    let mut deadline = tokio::time::Instant::now() + SPAWN_TIMEOUT;
    let mut pty_open = true;
    let mut buf = vec![0u8; 4096];
    let mut line = Vec::new();
    let mut on_stdout = String::new();
    let failure = loop {
        tokio::select! {
            n = launched.pty.read(&mut buf), if pty_open => {
                let n = n.unwrap_or(0);
                if n == 0 {
                    pty_open = false;
                    continue;
                }
                transcript.push_str(&String::from_utf8_lossy(&buf[..n]));
                if transcript.len() > TRANSCRIPT_LIMIT {
                    break SpawnError::Failed(format!(
                        "{} printed too much before starting the agent",
                        role.method.name()
                    ));
                }
                match dialect.scan(&transcript) {
                    Seen::Nothing => {}
                    Seen::Incorrect => break SpawnError::Incorrect,
                    Seen::Refused(why) => break SpawnError::Refused(why),
                    Seen::Prompts(n) if n <= answered => {}
                    // A second prompt after an answer: the password was wrong.
                    Seen::Prompts(_) if answered > 0 => break SpawnError::Incorrect,
                    Seen::Prompts(n) => {
                        let invoker = crate::sys::user::Account::current().name;
                        let whose = dialect.whose_password(&transcript, &role.user, &invoker);
                        let secret = match tokio::time::timeout(PASSWORD_TIMEOUT, ask(whose)).await {
                            Ok(Some(secret)) => secret,
                            Ok(None) => break SpawnError::NoPassword,
                            Err(_) => break SpawnError::Timeout(PASSWORD_TIMEOUT.as_secs()),
                        };
                        // Tools print the prompt, then turn echo off with TCSAFLUSH, which
                        // discards anything typed before: answer only once echo is off.
                        wait_for_echo_off(&launched.pty).await;
                        let mut answer = secret.expose().to_vec();
                        answer.push(b'\n');
                        let written = launched.pty.write_all(&answer).await;
                        answer.iter_mut().for_each(|b| *b = 0);
                        if written.is_err() {
                            break SpawnError::Failed(format!("{} went away", role.method.name()));
                        }
                        answered = n;
                        deadline = tokio::time::Instant::now() + SPAWN_TIMEOUT;
                    }
                }
            }
            got = launched.link.read_until(b'\n', &mut line) => {
                match got {
                    Ok(0) | Err(_) => {
                        // The tool exited (or never started the agent): let its words say why,
                        // on the terminal and on stdout (nologin writes there).
                        let _ = tokio::time::timeout(Duration::from_secs(2), drain(&mut launched.pty, &mut transcript)).await;
                        transcript.push_str(&on_stdout);
                        break match dialect.scan(&transcript) {
                            Seen::Incorrect => SpawnError::Incorrect,
                            Seen::Refused(why) => SpawnError::Refused(why),
                            _ => SpawnError::Failed(dialect.last_words(&transcript)),
                        };
                    }
                    Ok(_) if line.starts_with(format!("{READY_MARKER} {nonce} ").as_bytes()) => {
                        return finish(child, launched).await;
                    }
                    Ok(_) => {
                        // Not ours; keep waiting, and keep it in case it says why it failed.
                        if on_stdout.len() + line.len() <= TRANSCRIPT_LIMIT {
                            on_stdout.push_str(&String::from_utf8_lossy(&line));
                        }
                        line.clear();
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => break SpawnError::Timeout(SPAWN_TIMEOUT.as_secs()),
        }
    };
    let _ = launched.process.start_kill();
    Err(failure)
}

/// The tool, the pty and the new agent's link, before the agent said hello.
struct Launched {
    process: tokio::process::Child,
    pty: FdIo,
    link: BufReader<tokio::net::unix::OwnedReadHalf>,
    link_write: tokio::net::unix::OwnedWriteHalf,
}

/// Runs the tool as described in the module documentation.
fn launch(role: &Become, dialect: &Dialect, nonce: &str, shell: &Path) -> io::Result<Launched> {
    // sudo and doas read the password from /dev/tty and close descriptors above 2, so the
    // image rides on stdin. su asks through PAM, which reads stdin: there stdin is the
    // terminal and the image rides on descriptor 3, which su leaves alone.
    let image_fd = if role.method == BecomeMethod::Su {
        3
    } else {
        0
    };
    // su and doas cannot be given a prompt: ask for their C-locale wording, and have the
    // agent drop the variable again so the user's commands do not inherit it.
    let plain_words = matches!(role.method, BecomeMethod::Su | BecomeMethod::Doas);
    let mut agent = format!("exec /proc/self/fd/{image_fd} agent --nonce {nonce} --hop");
    if plain_words {
        agent.push_str(" --drop-env LC_ALL");
    }
    if role.method != BecomeMethod::Su {
        agent.push_str(" --command-shell ");
        agent.push_str(&shell_quote(&shell.to_string_lossy()));
    }
    let mut cmd = match role.method {
        BecomeMethod::Sudo => {
            let mut c = Command::new("sudo");
            c.args([
                "-p",
                dialect.prompt(),
                "-u",
                &role.user,
                "--",
                "/bin/sh",
                "-c",
                &agent,
            ]);
            c
        }
        BecomeMethod::Su => {
            let mut c = Command::new("su");
            c.args([&role.user, "-c", &agent]);
            c
        }
        BecomeMethod::Doas => {
            let mut c = Command::new("doas");
            c.args(["-u", &role.user, "/bin/sh", "-c", &agent]);
            c
        }
    };
    if plain_words {
        cmd.env("LC_ALL", "C");
    }
    let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
    let (ours, theirs) = StdUnixStream::pair()?;
    let image = crate::bootstrap::image::image_for_others()?;
    let image_raw = image.as_raw_fd();
    if image_fd == 0 {
        cmd.stdin(Stdio::from(image));
    } else {
        cmd.stdin(Stdio::from(pty.slave.try_clone()?));
    }
    cmd.stdout(Stdio::from(OwnedFd::from(theirs)))
        .stderr(Stdio::from(pty.slave))
        .kill_on_drop(true);
    if image_fd == 3 {
        cmd.place_fds([(image_raw, 3)]);
    }
    // The tool and the child agent start from the limit the user has.
    cmd.restore_descriptor_limit();
    // The pty slave (stderr) becomes the controlling terminal sudo prompts on.
    cmd.new_session().controlling_terminal(2);
    let process = cmd.spawn()?;
    ours.set_nonblocking(true)?;
    let (read, write) = tokio::net::UnixStream::from_std(ours)?.into_split();
    Ok(Launched {
        process,
        pty: FdIo::pty(pty.master)?,
        link: BufReader::with_capacity(256 * 1024, read),
        link_write: write,
    })
}

/// Quotes a word for `/bin/sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// After the ready marker: the hello exchange, and a task that keeps the pty open and
/// logs what the child writes to its stderr.
async fn finish(child: ContextId, launched: Launched) -> Result<Child, SpawnError> {
    let Launched {
        process,
        mut pty,
        link: link_read,
        link_write,
    } = launched;
    let (sender, _writer) = link::spawn_writer(link_write);
    let mut reader = link::reader(Box::new(link_read) as BoxReader);
    let hello = handshake(&mut reader, &sender, child)
        .await
        .map_err(SpawnError::Failed)?;
    tokio::spawn(async move {
        // Closing the pty master early would hang up the child (SIGHUP): keep it until EOF.
        let mut lines = BufReader::new(&mut pty).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(context = child, "{line}");
        }
        let _ = pty.shutdown().await;
    });
    Ok(Child {
        reader,
        sender,
        process: super::Process::Forked(process),
        hello,
        pipes: [None, None],
    })
}

/// Waits (briefly, bounded) until the terminal no longer echoes: the tool is reading the
/// password. The pty master reports the slave's settings.
async fn wait_for_echo_off(pty: &FdIo) {
    use nix::sys::termios::{LocalFlags, tcgetattr};
    use std::os::fd::AsFd;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        match tcgetattr(pty.get_ref().as_fd()) {
            Ok(t) if !t.local_flags.contains(LocalFlags::ECHO) => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(_) => return,
        }
    }
}

/// Reads what is left on the pty until EOF.
async fn drain(pty: &mut FdIo, transcript: &mut String) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = pty.read(&mut buf).await {
        if n == 0 {
            break;
        }
        transcript.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}
