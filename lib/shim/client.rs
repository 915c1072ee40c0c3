//! A shim's connection to the master: one request, and for a session the hand-over of this
//! process's stdin, stdout and stderr.
//!
//! As with an OpenSSH ControlMaster, the descriptors themselves travel to the master
//! (SCM_RIGHTS), which does the I/O: a transfer's bytes never pass through the shim. The
//! shim waits for the exit status, forwards window-size changes, and by exiting (or being
//! killed) tells the master to stop the remote process.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::proto::frame::encode_into;
use crate::proto::{
    ExitStatus, Frame, FrameCodec, Hello, HopConfig, MASTER, Message, PROTOCOL_VERSION, Reply,
    Request, SshHop,
};
use crate::sys::fdio::read_buf;
use crate::sys::passfd::send_with_fds;

/// Exit status ssh uses for its own failures.
pub(crate) const SSH_ERROR: i32 = 255;

/// An open connection to the master.
pub(crate) struct MasterConn {
    stream: UnixStream,
    codec: FrameCodec,
    buf: BytesMut,
    /// Our `Hello` went out.
    introduced: bool,
}

impl MasterConn {
    pub(crate) fn connect(socket: &Path) -> io::Result<MasterConn> {
        Ok(MasterConn {
            stream: UnixStream::connect(socket)?,
            codec: FrameCodec::default(),
            buf: BytesMut::with_capacity(16 * 1024),
            introduced: false,
        })
    }

    /// Introduces this process (the first time) and sends its request.
    pub(crate) fn request(&mut self, request: Request) -> io::Result<()> {
        self.request_with_fds(request, &[])
    }

    /// Sends the request with descriptors attached (a session's stdin, stdout, stderr).
    pub(crate) fn request_with_fds(&mut self, request: Request, fds: &[RawFd]) -> io::Result<()> {
        let mut buf = BytesMut::new();
        if !self.introduced {
            let hello = Message::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                version: env!("CARGO_PKG_VERSION").into(),
                ctx: MASTER,
                pid: std::process::id(),
                user: String::new(),
                hostname: String::new(),
            });
            encode_into(&Frame::new(MASTER, hello), &mut buf).map_err(io::Error::other)?;
        }
        let request = Message::Request(Box::new(request));
        encode_into(&Frame::new(MASTER, request), &mut buf).map_err(io::Error::other)?;
        send_with_fds(&self.stream, &buf, fds)?;
        self.introduced = true;
        Ok(())
    }

    /// The master's cached resolutions of `hops` (`None` where it has none).
    pub(crate) fn lookup(&mut self, hops: Vec<SshHop>) -> io::Result<Vec<Option<HopConfig>>> {
        let n = hops.len();
        self.request(Request::Lookup { hops })?;
        match self.reply()? {
            Reply::Lookup(found) if found.len() == n => Ok(found),
            other => Err(io::Error::other(format!(
                "unexpected answer from the master: {other:?}"
            ))),
        }
    }

    /// Sends a frame (a signal or a new window size).
    pub(crate) fn send(&self, msg: Message) -> io::Result<()> {
        let mut buf = BytesMut::new();
        encode_into(&Frame::new(MASTER, msg), &mut buf).map_err(io::Error::other)?;
        (&self.stream).write_all(&buf)
    }

    /// The socket itself, for a caller that continues asynchronously, with the bytes
    /// already read from it but not yet decoded.
    pub(crate) fn into_parts(self) -> (UnixStream, BytesMut) {
        (self.stream, self.buf)
    }

    /// A second handle for sending from another thread.
    pub(crate) fn sender(&self) -> io::Result<MasterConn> {
        Ok(MasterConn {
            stream: self.stream.try_clone()?,
            codec: FrameCodec::default(),
            buf: BytesMut::new(),
            introduced: true,
        })
    }

    /// The next frame, or `None` at end of connection.
    pub(crate) fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).map_err(io::Error::other)? {
                return Ok(Some(frame));
            }
            if read_buf(&self.stream, &mut self.buf, 16 * 1024)? == 0 {
                return Ok(None);
            }
        }
    }

    /// The master's reply to a request.
    pub(crate) fn reply(&mut self) -> io::Result<Reply> {
        match self.next_frame()? {
            Some(Frame {
                msg: Message::Reply(r),
                ..
            }) => Ok(*r),
            Some(other) => Err(io::Error::other(format!(
                "unexpected answer from the master: {:?}",
                other.msg
            ))),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the master closed the connection without answering",
            )),
        }
    }
}

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
    let broken = |e: io::Error| NotOpened {
        message: format!("mitossh: cannot talk to the master: {e}"),
        exit_code: SSH_ERROR,
        fallback: false,
        shown: false,
    };
    conn.request_with_fds(request, fds).map_err(broken)?;
    loop {
        let frame = conn
            .next_frame()
            .map_err(broken)?
            .ok_or_else(|| broken(io::ErrorKind::UnexpectedEof.into()))?;
        match frame.msg {
            Message::Prompt { text, kind } => {
                let secret = super::askpass::answer(&text, kind, password_file);
                conn.send(Message::PromptReply { secret }).map_err(broken)?;
            }
            Message::Diagnostic { mut text } => {
                text.push(b'\n');
                let _ = std::io::stderr().write_all(&text);
            }
            Message::Reply(reply) => {
                return match *reply {
                    Reply::Opened { .. } => Ok(()),
                    Reply::Failed {
                        message,
                        exit_code,
                        fallback,
                        shown,
                    } => Err(NotOpened {
                        message,
                        exit_code,
                        fallback,
                        shown,
                    }),
                    other => Err(NotOpened {
                        message: format!("mitossh: unexpected answer from the master: {other:?}"),
                        exit_code: SSH_ERROR,
                        fallback: false,
                        shown: false,
                    }),
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
                Message::Diagnostic { mut text } => {
                    text.push(b'\n');
                    let _ = std::io::stderr().write_all(&text);
                }
                other => tracing::debug!("ignoring {other:?}"),
            },
            Ok(None) | Err(_) => {
                eprintln!("mitossh: lost the connection to the master");
                return SSH_ERROR;
            }
        }
    }
}
