//! A local client of the master (the shims, `mitossh-env`, `mitossh run`, `mitossh
//! status`/`stop`, mitossh's askpass helper): its connection to the master's socket, what
//! it asks for, and for a session the hand-over of its stdin, stdout and stderr.
//!
//! - this module: [`MasterConn`], a connection and its frames;
//! - [`session`]: opening a session (descriptors handed over, the master's questions
//!   answered, its ssh's diagnostics shown) and waiting for its exit status;
//! - [`target`]: from a destination to the [`Target`](crate::proto::Target) to ask for:
//!   named contexts, `--become`/`--via`, a leading `sudo`;
//! - [`askpass`]: who answers the master's questions here (a password file, the terminal,
//!   the user's `SSH_ASKPASS`), by ssh's own rules;
//! - [`tty`]: the local terminal: raw mode, window size, the settings to put back.
//!
//! Nothing here knows the master's insides; the master knows nothing of this module.

pub(crate) mod askpass;
pub(crate) mod session;
pub(crate) mod target;
pub(crate) mod tty;

pub(crate) use session::{NotOpened, Stdio, open, release_stdin_stdout, wait_exit};

use std::io::{self, ErrorKind, Write};
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::proto::frame::encode_into;
use crate::proto::{
    Frame, FrameCodec, Hello, HopConfig, MASTER, Message, PROTOCOL_VERSION, Reply, Request, SshHop,
};
use crate::sys::fdio::read_buf;
use crate::sys::passfd::send_with_fds;

/// An open connection to the master.
pub(crate) struct MasterConn {
    stream: UnixStream,
    codec: FrameCodec,
    buf: BytesMut,
    /// Our `Hello` went out.
    introduced: bool,
    /// The master closed the connection while a request was still going out (a master
    /// out of descriptors answers and closes at once): what sending said, reported once
    /// there is no answer to read either.
    unsent: Option<io::Error>,
    /// How this process waits for the master, if not by a blocking read.
    waiter: Option<&'static Waiter>,
}

/// A way of waiting for the master that does something else meanwhile: the shim acts on
/// signals on its main thread while it waits (a thread of their own would cost each call a
/// clone and its teardown), and hands them to a thread before it blocks elsewhere.
pub(crate) struct Waiter {
    /// Returns once the descriptor is readable.
    pub until_readable: fn(BorrowedFd<'_>) -> io::Result<()>,
    /// This process is about to block on something else (a question at the terminal).
    pub elsewhere: fn(),
}

impl MasterConn {
    pub(crate) fn connect(socket: &Path) -> io::Result<MasterConn> {
        Ok(MasterConn {
            stream: UnixStream::connect(socket)?,
            codec: FrameCodec::default(),
            buf: BytesMut::with_capacity(16 * 1024),
            introduced: false,
            unsent: None,
            waiter: None,
        })
    }

    /// Waits through `waiter` from now on.
    pub(crate) fn wait_with(&mut self, waiter: &'static Waiter) {
        self.waiter = Some(waiter);
    }

    /// This process is about to block on something other than the master: the waiter
    /// hands over what it did while waiting, and reads block from now on.
    pub(crate) fn blocking_elsewhere(&mut self) {
        if let Some(waiter) = self.waiter.take() {
            (waiter.elsewhere)();
        }
    }

    /// Introduces this process (the first time) and sends its request.
    pub(crate) fn request(&mut self, request: Request) -> io::Result<()> {
        self.request_with_fds(request, &[])
    }

    /// Sends the request with descriptors attached (a session's stdin, stdout, stderr).
    pub(crate) fn request_with_fds(&mut self, request: Request, fds: &[RawFd]) -> io::Result<()> {
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

    /// A second handle for sending from another thread.
    pub(crate) fn sender(&self) -> io::Result<MasterConn> {
        Ok(MasterConn {
            stream: self.stream.try_clone()?,
            codec: FrameCodec::default(),
            buf: BytesMut::new(),
            introduced: true,
            unsent: None,
            waiter: None,
        })
    }

    /// The next frame, or `None` at end of connection.
    pub(crate) fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).map_err(io::Error::other)? {
                return Ok(Some(frame));
            }
            if let Some(waiter) = self.waiter {
                (waiter.until_readable)(self.stream.as_fd())?;
            }
            match read_buf(&self.stream, &mut self.buf, 16 * 1024) {
                Ok(0) => return self.unsent.take().map_or(Ok(None), Err),
                Ok(_) => {}
                Err(e) => return Err(self.unsent.take().unwrap_or(e)),
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

/// A request as it goes to the master, after this process's `Hello` if `introduce`.
pub(crate) fn encode_request(request: Request, introduce: bool) -> io::Result<BytesMut> {
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
