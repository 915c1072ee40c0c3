//! A shim's connection to the master: one request, and for sessions the relay between
//! this process's stdin, stdout and stderr and the remote process.
//!
//! Plain threads and blocking I/O: the shim's descriptors are inherited and shared with
//! its parent, so their flags (O_NONBLOCK) are never touched. One thread reads stdin as
//! far as credit allows; one thread each writes stdout and stderr, returning credit as
//! bytes leave; the main thread reads the socket and dispatches. A stalled stdout thus
//! never holds up stdin or stderr.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::credit::BlockingCredit;
use crate::proto::flow::RecvWindow;
use crate::proto::frame::encode_into;
use crate::proto::{
    ExitStatus, Fd, Frame, FrameCodec, Hello, MASTER, MAX_DATA, Message, PROTOCOL_VERSION, Reply,
    Request,
};

/// Exit status ssh uses for its own failures.
pub const SSH_ERROR: i32 = 255;

/// An open connection to the master.
pub struct MasterConn {
    reader: UnixStream,
    writer: Arc<Mutex<UnixStream>>,
    codec: FrameCodec,
    buf: BytesMut,
}

impl MasterConn {
    pub fn connect(socket: &Path) -> io::Result<MasterConn> {
        let stream = UnixStream::connect(socket)?;
        let writer = stream.try_clone()?;
        Ok(MasterConn {
            reader: stream,
            writer: Arc::new(Mutex::new(writer)),
            codec: FrameCodec::default(),
            buf: BytesMut::with_capacity(256 * 1024),
        })
    }

    /// Introduces this process and sends its request.
    pub fn request(&self, request: Request) -> io::Result<()> {
        let hello = Message::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").into(),
            ctx: MASTER,
            pid: std::process::id(),
            user: String::new(),
            hostname: String::new(),
        });
        send(&self.writer, &Frame::new(MASTER, hello))?;
        send(
            &self.writer,
            &Frame::new(MASTER, Message::Request(Box::new(request))),
        )
    }

    /// The next frame, or `None` at end of connection.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).map_err(io::Error::other)? {
                return Ok(Some(frame));
            }
            self.buf.reserve(64 * 1024);
            let spare = self.buf.spare_capacity_mut();
            // SAFETY: read initialises the first n bytes of the spare capacity.
            let n = unsafe {
                libc::read(
                    self.reader.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(None);
            }
            // SAFETY: the kernel wrote n bytes.
            unsafe { self.buf.set_len(self.buf.len() + n as usize) };
        }
    }

    /// The master's reply to a request that carries no stream.
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

fn send(writer: &Mutex<UnixStream>, frame: &Frame) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(frame.data.len() + 64);
    encode_into(frame, &mut buf).map_err(io::Error::other)?;
    writer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .write_all(&buf)
}

/// How to relay a session.
pub struct SessionIo {
    /// Read stdin and send it (false for `ssh -n`).
    pub stdin: bool,
    /// Window granted to the remote for stdout and stderr (as sent in the Open request).
    pub window: u32,
    /// Follow the local terminal's size (a pty session on a terminal).
    pub resize: bool,
}

/// Relays an opened session until the remote process exits. Returns ssh's exit status.
pub fn relay(mut conn: MasterConn, stdin_window: u32, io: SessionIo) -> i32 {
    if io.resize {
        let writer = conn.writer.clone();
        super::tty::handle_signals(move |size| {
            let _ = send(
                &writer,
                &Frame::new(MASTER, Message::Resize { stream: 0, size }),
            );
        });
    }
    let credit = Arc::new(BlockingCredit::new(stdin_window));
    if io.stdin {
        let writer = conn.writer.clone();
        let credit = credit.clone();
        std::thread::spawn(move || pump_stdin(writer, credit));
    } else {
        let _ = send(
            &conn.writer,
            &Frame::new(
                MASTER,
                Message::Eof {
                    stream: 0,
                    fd: Fd::Stdin,
                },
            ),
        );
    }
    let stdout = Output::spawn(1, Fd::Stdout, io.window, conn.writer.clone());
    let stderr = Output::spawn(2, Fd::Stderr, io.window, conn.writer.clone());

    let code = loop {
        let frame = match conn.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => {
                stdout.finish();
                stderr.finish();
                eprintln!("mitossh: lost the connection to the master");
                break SSH_ERROR;
            }
        };
        match frame.msg {
            Message::Data { fd: Fd::Stdout, .. } => stdout.send(Chunk::Data(frame.data)),
            Message::Data { fd: Fd::Stderr, .. } => stderr.send(Chunk::Data(frame.data)),
            Message::Eof { fd: Fd::Stdout, .. } => stdout.send(Chunk::Eof),
            Message::Eof { fd: Fd::Stderr, .. } => stderr.send(Chunk::Eof),
            Message::Credit {
                fd: Fd::Stdin,
                bytes,
                ..
            } => credit.grant(bytes),
            Message::Exit { status, .. } => {
                stdout.finish();
                stderr.finish();
                break match status {
                    ExitStatus::Code(c) => c & 0xff,
                    // ssh reports death by signal as its own failure status.
                    ExitStatus::Signal { .. } => SSH_ERROR,
                };
            }
            Message::Reply(reply) => {
                stdout.finish();
                stderr.finish();
                if let Reply::Failed {
                    message, exit_code, ..
                } = *reply
                {
                    eprintln!("{message}");
                    break exit_code;
                }
                break SSH_ERROR;
            }
            other => tracing::debug!("ignoring {other:?}"),
        }
    };
    credit.close();
    code
}

/// Reads stdin as far as credit allows and sends it; `Eof` at end of input.
fn pump_stdin(writer: Arc<Mutex<UnixStream>>, credit: Arc<BlockingCredit>) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; MAX_DATA];
    loop {
        let Some(allowed) = credit.acquire(MAX_DATA) else {
            return;
        };
        let mut n = read_some(&mut stdin, &mut buf[..allowed]);
        // Gather what is already waiting into one frame: writers like `head` hand over
        // 8 KiB at a time, and every frame costs a wake-up in each process downstream.
        while n > 0 && n < allowed && readable_now(0) {
            match read_some(&mut stdin, &mut buf[n..allowed]) {
                0 => break,
                more => n += more,
            }
        }
        credit.give_back(allowed - n);
        let frame = if n == 0 {
            Frame::new(
                MASTER,
                Message::Eof {
                    stream: 0,
                    fd: Fd::Stdin,
                },
            )
        } else {
            Frame::with_data(
                MASTER,
                Message::Data {
                    stream: 0,
                    fd: Fd::Stdin,
                },
                Bytes::copy_from_slice(&buf[..n]),
            )
        };
        if send(&writer, &frame).is_err() || n == 0 {
            return;
        }
    }
}

/// One read; 0 at end of input or on an error that ends input (EIO from a terminal that
/// went away, a closed descriptor).
fn read_some(r: &mut impl Read, buf: &mut [u8]) -> usize {
    loop {
        match r.read(buf) {
            Ok(n) => return n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return 0,
        }
    }
}

/// Whether `fd` has input right now (so a read will not block).
fn readable_now(fd: RawFd) -> bool {
    // SAFETY: fd is open for the life of the process.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut fds = [nix::poll::PollFd::new(
        borrowed,
        nix::poll::PollFlags::POLLIN,
    )];
    matches!(
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
        Ok(1)
    ) && fds[0]
        .revents()
        .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLIN))
}

enum Chunk {
    Data(Bytes),
    Eof,
}

/// A thread writing one of our output descriptors.
struct Output {
    tx: Option<mpsc::Sender<Chunk>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Output {
    fn spawn(fd: RawFd, which: Fd, window: u32, writer: Arc<Mutex<UnixStream>>) -> Output {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || write_output(fd, which, window, rx, writer));
        Output {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn send(&self, chunk: Chunk) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(chunk);
        }
    }

    /// Waits until everything queued is written.
    fn finish(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_output(
    fd: RawFd,
    which: Fd,
    window: u32,
    rx: mpsc::Receiver<Chunk>,
    writer: Arc<Mutex<UnixStream>>,
) {
    let mut window = RecvWindow::new(window);
    let mut broken = false;
    while let Ok(chunk) = rx.recv() {
        match chunk {
            Chunk::Data(data) => {
                let _ = window.received(data.len());
                if !broken && write_all_fd(fd, &data).is_err() {
                    // Like ssh: tell the remote side nobody reads this any more, so its
                    // writer gets SIGPIPE; discard what is still in flight.
                    broken = true;
                    let _ = send(
                        &writer,
                        &Frame::new(
                            MASTER,
                            Message::Eof {
                                stream: 0,
                                fd: which,
                            },
                        ),
                    );
                }
                if let Some(grant) = window.consumed(data.len()) {
                    let _ = send(
                        &writer,
                        &Frame::new(
                            MASTER,
                            Message::Credit {
                                stream: 0,
                                fd: which,
                                bytes: grant,
                            },
                        ),
                    );
                }
            }
            // ssh closes its stdout at the remote's EOF; stderr stays for its own messages.
            Chunk::Eof if which == Fd::Stdout => close_output(fd),
            Chunk::Eof => {}
        }
    }
}

/// Writes everything, waiting out EAGAIN in case someone else made the descriptor
/// non-blocking (the flag is shared with every process holding the same open file).
fn write_all_fd(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writing from a valid slice.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    // SAFETY: fd is open for the life of this process.
                    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
                    let mut fds = [nix::poll::PollFd::new(
                        borrowed,
                        nix::poll::PollFlags::POLLOUT,
                    )];
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE);
                    continue;
                }
                _ => return Err(e),
            }
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// The remote closed this output: close ours (as ssh does), keeping the descriptor number
/// occupied by /dev/null so it is never reused by accident.
fn close_output(fd: RawFd) {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto a standard descriptor of this process.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
}
