//! A session through the master: the request with this process's stdin, stdout and
//! stderr attached, the master's questions answered and its ssh's diagnostics shown while
//! it connects, then the exit status.
//!
//! As with an OpenSSH ControlMaster, the descriptors themselves travel to the master
//! (SCM_RIGHTS), which does the I/O: a transfer's bytes never pass through the client. The
//! client waits for the exit status, forwards window-size changes, and by exiting (or being
//! killed) tells the master to stop the remote process.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use super::MasterConn;
use crate::proto::{ExitStatus, Message, Reply, Request, SSH_ERROR};

/// How an opening request ended, when it did not open.
pub(crate) struct NotOpened {
    pub message: String,
    pub exit_code: i32,
    /// mitossh cannot serve the host; the real ssh may.
    pub fallback: bool,
    /// The message is ssh's own and is already on stderr.
    pub shown: bool,
}

impl NotOpened {
    /// A failure of this process itself, before or while talking to the master.
    pub(crate) fn local(message: String) -> NotOpened {
        NotOpened {
            message,
            exit_code: SSH_ERROR,
            fallback: false,
            shown: false,
        }
    }

    /// Tells the user, unless ssh already did.
    pub(crate) fn report(&self) {
        if !self.shown {
            eprintln!("{}", self.message);
        }
    }
}

/// Sends a request that opens a stream, with the descriptors attached, and waits for the
/// master's answer, answering its questions on the way (see [`super::askpass`]) and
/// showing on stderr what the master's ssh says while it connects.
pub(crate) fn open(
    conn: &mut MasterConn,
    request: Request,
    fds: &[RawFd],
    password_file: Option<&std::path::Path>,
) -> Result<(), NotOpened> {
    let broken =
        |e: io::Error| NotOpened::local(format!("mitossh: cannot talk to the master: {e}"));
    conn.request_with_fds(request, fds).map_err(broken)?;
    loop {
        let frame = conn
            .next_frame()
            .map_err(broken)?
            .ok_or_else(|| broken(io::ErrorKind::UnexpectedEof.into()))?;
        match frame.msg {
            Message::Prompt { text, kind } => {
                conn.blocking_elsewhere();
                let secret = super::askpass::answer(&text, kind, password_file);
                conn.send(Message::PromptReply { secret }).map_err(broken)?;
            }
            Message::Diagnostic { text } => show_diagnostic(conn, text),
            Message::Reply(reply) => {
                return match *reply {
                    Reply::Opened { .. } => Ok(()),
                    Reply::Failed {
                        message,
                        exit_code,
                        fallback,
                        shown,
                        ..
                    } => Err(NotOpened {
                        message,
                        exit_code,
                        fallback,
                        shown,
                    }),
                    other => Err(NotOpened::local(format!(
                        "mitossh: unexpected answer from the master: {other:?}"
                    ))),
                };
            }
            other => tracing::debug!("ignoring {other:?}"),
        }
    }
}

/// The three descriptors a session hands over. Closed ones (and stdin under `-n`) are
/// replaced by /dev/null.
pub(crate) struct Stdio {
    fds: [OwnedFd; 3],
}

impl Stdio {
    pub(crate) fn ours(stdin_null: bool) -> io::Result<Stdio> {
        let null = || -> io::Result<OwnedFd> {
            Ok(std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?
                .into())
        };
        let dup = |fd: BorrowedFd<'_>| -> io::Result<OwnedFd> {
            match fd.try_clone_to_owned() {
                Ok(owned) => Ok(owned),
                Err(e) if e.raw_os_error() == Some(libc::EBADF) => null(),
                Err(e) => Err(e),
            }
        };
        let stdin = if stdin_null {
            null()?
        } else {
            dup(io::stdin().as_fd())?
        };
        Ok(Stdio {
            fds: [
                stdin,
                dup(io::stdout().as_fd())?,
                dup(io::stderr().as_fd())?,
            ],
        })
    }

    pub(crate) fn raw(&self) -> [RawFd; 3] {
        [
            self.fds[0].as_raw_fd(),
            self.fds[1].as_raw_fd(),
            self.fds[2].as_raw_fd(),
        ]
    }
}

/// After the master took over stdin and stdout: let go of ours, so that the master
/// closing its copies is seen as end of file by whoever is at the other end.
pub(crate) fn release_stdin_stdout() {
    let _ = crate::sys::stdio::null_stdin_stdout();
}

/// Waits for the end of an opened session. Returns ssh's exit status.
pub(crate) fn wait_exit(conn: &mut MasterConn) -> i32 {
    loop {
        match conn.next_frame() {
            Ok(Some(frame)) => match frame.msg {
                Message::Exit { status, .. } => {
                    return match status {
                        ExitStatus::Code(c) => c & 0xff,
                        // ssh reports death by signal as its own failure status.
                        ExitStatus::Signal { .. } => SSH_ERROR,
                    };
                }
                Message::Reply(reply) => {
                    if let Reply::Failed {
                        message, exit_code, ..
                    } = *reply
                    {
                        eprintln!("{message}");
                        return exit_code;
                    }
                    return SSH_ERROR;
                }
                Message::Diagnostic { text } => show_diagnostic(conn, text),
                other => tracing::debug!("ignoring {other:?}"),
            },
            Ok(None) | Err(_) => {
                eprintln!("mitossh: lost the connection to the master");
                return SSH_ERROR;
            }
        }
    }
}

/// What ssh said while the master connected, on our stderr as ssh would have put it.
fn show_diagnostic(conn: &mut MasterConn, mut text: Vec<u8>) {
    // stderr may be a pipe nobody reads for a while.
    conn.blocking_elsewhere();
    text.push(b'\n');
    let _ = std::io::stderr().write_all(&text);
}
