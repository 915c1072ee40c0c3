//! A shim's connection to the master: one request, and for a session the hand-over of this
//! process's stdin, stdout and stderr.
//!
//! As with an OpenSSH ControlMaster, the descriptors themselves travel to the master
//! (SCM_RIGHTS), which does the I/O: a transfer's bytes never pass through the shim. The
//! shim waits for the exit status, forwards window-size changes, and by exiting (or being
//! killed) tells the master to stop the remote process.

use std::io::{self, ErrorKind, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::proto::frame::encode_into;
use crate::proto::{
    ConnectFailure, ExitStatus, Frame, FrameCodec, Hello, HopConfig, MASTER, Message,
    PROTOCOL_VERSION, Reply, Request, SshHop,
};
use crate::sys::passfd::send_with_fds;

/// Exit status ssh uses for its own failures.
pub const SSH_ERROR: i32 = 255;

/// An open connection to the master.
pub struct MasterConn {
    stream: UnixStream,
    codec: FrameCodec,
    buf: BytesMut,
    /// Our `Hello` went out.
    introduced: bool,
    /// The master closed the connection while a request was still going out (a master
    /// out of descriptors answers and closes at once): what sending said, reported once
    /// there is no answer to read either.
    unsent: Option<io::Error>,
}

impl MasterConn {
    pub fn connect(socket: &Path) -> io::Result<MasterConn> {
        Ok(MasterConn {
            stream: UnixStream::connect(socket)?,
            codec: FrameCodec::default(),
            buf: BytesMut::with_capacity(16 * 1024),
            introduced: false,
            unsent: None,
        })
    }

    /// Introduces this process (the first time) and sends its request.
    pub fn request(&mut self, request: Request) -> io::Result<()> {
        self.request_with_fds(request, &[])
    }

    /// Sends the request with descriptors attached (a session's stdin, stdout, stderr).
    pub fn request_with_fds(&mut self, request: Request, fds: &[RawFd]) -> io::Result<()> {
        let buf = encode_request(request, !self.introduced)?;
        match send_with_fds(&self.stream, &buf, fds) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                self.unsent = Some(e);
            }
            Err(e) => return Err(e),
        }
        self.introduced = true;
        Ok(())
    }

    /// The master's cached resolutions of `hops` (`None` where it has none).
    pub fn lookup(&mut self, hops: Vec<SshHop>) -> io::Result<Vec<Option<HopConfig>>> {
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
    pub fn send(&self, msg: Message) -> io::Result<()> {
        let mut buf = BytesMut::new();
        encode_into(&Frame::new(MASTER, msg), &mut buf).map_err(io::Error::other)?;
        (&self.stream).write_all(&buf)
    }

    /// The socket itself, for a caller that continues asynchronously, with the bytes
    /// already read from it but not yet decoded.
    pub fn into_parts(self) -> (UnixStream, BytesMut) {
        (self.stream, self.buf)
    }

    /// A second handle for sending from another thread.
    pub fn sender(&self) -> io::Result<MasterConn> {
        Ok(MasterConn {
            stream: self.stream.try_clone()?,
            codec: FrameCodec::default(),
            buf: BytesMut::new(),
            introduced: true,
            unsent: None,
        })
    }

    /// The next frame, or `None` at end of connection.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).map_err(io::Error::other)? {
                return Ok(Some(frame));
            }
            self.buf.reserve(16 * 1024);
            let spare = self.buf.spare_capacity_mut();
            // SAFETY: read initialises the first n bytes of the spare capacity.
            let n = unsafe {
                libc::read(
                    self.stream.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(self.unsent.take().unwrap_or(e));
            }
            if n == 0 {
                return self.unsent.take().map_or(Ok(None), Err);
            }
            // SAFETY: the kernel wrote n bytes.
            unsafe { self.buf.set_len(self.buf.len() + n as usize) };
        }
    }

    /// The master's reply to a request.
    pub fn reply(&mut self) -> io::Result<Reply> {
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

/// A request as it goes to the master, after this process's `Hello` if `introduce`.
pub fn encode_request(request: Request, introduce: bool) -> io::Result<BytesMut> {
    let mut buf = BytesMut::new();
    if introduce {
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
    Ok(buf)
}

/// How an opening request ended, when it did not open.
pub struct NotOpened {
    pub message: String,
    pub exit_code: i32,
    /// mitossh cannot serve the host; the real ssh may.
    pub fallback: bool,
    /// The message is ssh's own and is already on stderr.
    pub shown: bool,
    /// The host could not be connected, and why.
    pub connect: Option<ConnectFailure>,
}

impl NotOpened {
    /// A failure of this process itself, before or while talking to the master.
    pub fn local(message: String) -> NotOpened {
        NotOpened {
            message,
            exit_code: SSH_ERROR,
            fallback: false,
            shown: false,
            connect: None,
        }
    }

    /// Tells the user, unless ssh already did.
    pub fn report(&self) {
        if !self.shown {
            eprintln!("{}", self.message);
        }
    }
}

/// Sends a request that opens a stream, with the descriptors attached, and waits for the
/// master's answer, answering its questions on the way (see [`super::askpass`]) and
/// showing on stderr what the master's ssh says while it connects.
pub fn open(
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
                        connect,
                    } => Err(NotOpened {
                        message,
                        exit_code,
                        fallback,
                        shown,
                        connect,
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
pub struct Stdio {
    fds: [OwnedFd; 3],
}

impl Stdio {
    pub fn ours(stdin_null: bool) -> io::Result<Stdio> {
        let null = || -> io::Result<OwnedFd> {
            Ok(std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?
                .into())
        };
        let dup = |fd: RawFd| -> io::Result<OwnedFd> {
            // SAFETY: borrowing a standard descriptor only to duplicate it.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            match borrowed.try_clone_to_owned() {
                Ok(owned) => Ok(owned),
                Err(e) if e.raw_os_error() == Some(libc::EBADF) => null(),
                Err(e) => Err(e),
            }
        };
        let stdin = if stdin_null { null()? } else { dup(0)? };
        Ok(Stdio {
            fds: [stdin, dup(1)?, dup(2)?],
        })
    }

    pub fn raw(&self) -> [RawFd; 3] {
        [
            self.fds[0].as_raw_fd(),
            self.fds[1].as_raw_fd(),
            self.fds[2].as_raw_fd(),
        ]
    }
}

/// After the master took over stdin and stdout: let go of ours, so that the master
/// closing its copies is seen as end of file by whoever is at the other end.
pub fn release_stdin_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in [0, 1] {
            // SAFETY: dup2 onto standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// Waits for the end of an opened session. Returns ssh's exit status.
pub fn wait_exit(conn: &mut MasterConn) -> i32 {
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
