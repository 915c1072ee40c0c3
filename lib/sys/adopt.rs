//! I/O on descriptors another process handed us (a shim's stdin, stdout and stderr)
//! without changing them for everyone else who shares them.
//!
//! O_NONBLOCK belongs to the open file description, which the shim shares with its parent
//! and siblings: setting it would break them. So each kind of descriptor gets its own way:
//!
//! * pipes and terminals are reopened through `/proc/self/fd`, which yields a *new* open
//!   file description of the same pipe or terminal, ours to make non-blocking;
//! * sockets use `MSG_DONTWAIT` per call and leave the flags alone;
//! * regular files (and other devices) get blocking I/O on tokio's blocking threads, on
//!   the shared description, so file offsets advance for everyone as with ssh;
//! * `/dev/null` (`ssh -n`, `< /dev/null`, `> /dev/null`) is read and written here, as
//!   the device would answer: end of file, and everything taken. No thread, no syscall.
//!
//! A pipe comes back as such ([`Adopted::Pipe`]): the data path splices to and from it
//! (with `SPLICE_F_NONBLOCK`, on the description of our own). It is grown within the
//! process's budget ([`super::pipesize`], never made smaller): a writer such as `head`
//! hands over 8 KiB at a time, and the 64 KiB a pipe holds by default would cut every
//! frame to that size and cost a wake-up per 64 KiB; ssh reads the pipe itself, and a
//! ControlMaster's client passes it on to be read where it is.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::fdio::{FdIo, poll_read_with, poll_write_with};

pub(crate) type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub(crate) type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// An adopted descriptor: a pipe (a description of our own, non-blocking, which can be
/// spliced to and from) or anything else behind the generic traits.
pub(crate) enum Adopted<T> {
    Pipe(FdIo),
    /// `file`: a regular file or device, read on a blocking thread (large reads pay).
    Other {
        io: T,
        file: bool,
    },
}

/// Adopts `fd` for reading.
pub(crate) fn reader(fd: OwnedFd) -> io::Result<Adopted<Reader>> {
    Ok(match kind(&fd)? {
        Kind::Pipe => Adopted::Pipe(FdIo::new(reopen(&fd, libc::O_RDONLY)?)?.grown()),
        Kind::Terminal => other(Box::new(FdIo::new(reopen(&fd, libc::O_RDWR)?)?)),
        Kind::Socket => other(Box::new(SockIo::new(fd)?)),
        Kind::Null => other(Box::new(tokio::io::empty())),
        Kind::Other => Adopted::Other {
            io: Box::new(tokio::fs::File::from_std(std::fs::File::from(fd))),
            file: true,
        },
    })
}

/// Adopts `fd` for writing. A pipe whose reader is gone gives `BrokenPipe`.
pub(crate) fn writer(fd: OwnedFd) -> io::Result<Adopted<Writer>> {
    Ok(match kind(&fd)? {
        Kind::Pipe => Adopted::Pipe(
            FdIo::new(reopen(&fd, libc::O_WRONLY).map_err(|e| {
                match e.raw_os_error() {
                    // Opening a pipe for writing without a reader: what writing would say.
                    Some(libc::ENXIO) => io::Error::from(io::ErrorKind::BrokenPipe),
                    _ => e,
                }
            })?)?
            .grown(),
        ),
        Kind::Terminal => other(Box::new(FdIo::new(reopen(&fd, libc::O_RDWR)?)?)),
        Kind::Socket => other(Box::new(SockIo::new(fd)?)),
        Kind::Null => other(Box::new(tokio::io::sink())),
        Kind::Other => other(Box::new(tokio::fs::File::from_std(std::fs::File::from(fd)))),
    })
}

fn other<T>(io: T) -> Adopted<T> {
    Adopted::Other { io, file: false }
}

enum Kind {
    Pipe,
    Terminal,
    Socket,
    Null,
    Other,
}

fn kind(fd: &OwnedFd) -> io::Result<Kind> {
    let meta = std::fs::File::from(fd.try_clone()?).metadata()?;
    let file_type = meta.file_type();
    Ok(if file_type.is_fifo() {
        Kind::Pipe
    } else if file_type.is_socket() {
        Kind::Socket
    } else if file_type.is_char_device() && meta.rdev() == libc::makedev(1, 3) {
        Kind::Null
    } else if file_type.is_char_device() && nix::unistd::isatty(fd).unwrap_or(false) {
        Kind::Terminal
    } else {
        Kind::Other
    })
}

/// A new open file description of what `fd` refers to. `O_NOCTTY`: the master is a
/// session leader and must never acquire a user's terminal as its own.
fn reopen(fd: &OwnedFd, access: libc::c_int) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(access != libc::O_WRONLY)
        .write(access != libc::O_RDONLY)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    Ok(file.into())
}

/// A socket used with per-call `MSG_DONTWAIT`, its flags untouched.
struct SockIo {
    fd: AsyncFd<OwnedFd>,
}

impl SockIo {
    fn new(fd: OwnedFd) -> io::Result<SockIo> {
        // SAFETY: `OwnedFd` keeps the descriptor open and unchanged for the AsyncFd's life.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(SockIo { fd })
    }
}

impl AsyncRead for SockIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY (closure): receiving into an initialised buffer of the given length.
        poll_read_with(&self.fd, cx, buf, |fd, b| unsafe {
            libc::recv(fd, b.as_mut_ptr().cast(), b.len(), libc::MSG_DONTWAIT)
        })
    }
}

impl AsyncWrite for SockIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        // SAFETY (closure): sending from a valid slice.
        poll_write_with(&self.fd, cx, |fd| unsafe {
            libc::send(
                fd,
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Never `shutdown(2)`: the socket is shared, and a half-close would be everyone's.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
