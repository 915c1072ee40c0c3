//! Async I/O on a raw descriptor we own: pipes, sockets and pty masters alike (and one
//! blocking read into a buffer's spare capacity, for the shim's connection to the master).
//!
//! tokio's own types each want one kind of descriptor; an agent's link may be a pipe or a
//! socket depending on how sshd or sudo set it up, and a pty master is neither. The
//! descriptor is switched to non-blocking mode, which is safe only because it is ours
//! alone: callers pass descriptors whose open file description nobody else uses.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::pipesize::PipeGrant;
use super::splice;

/// An owned descriptor usable with tokio.
#[derive(Debug)]
pub(crate) struct FdIo {
    fd: AsyncFd<OwnedFd>,
    kept: Kept,
}

/// What an [`FdIo`] knows of its descriptor, kept while it is off the event loop.
#[derive(Debug, Default)]
struct Kept {
    /// A pty master reports EIO once the last slave is closed; that is its EOF.
    eio_is_eof: bool,
    /// The growth of its pipe, held as long as the descriptor.
    grant: Option<PipeGrant>,
    /// Whether it is a pipe, once asked.
    pipe: OnceLock<bool>,
}

impl FdIo {
    /// Takes ownership of `fd` and makes it non-blocking.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<FdIo> {
        set_nonblocking(&fd, true)?;
        Ok(FdIo {
            fd: register(fd)?,
            kept: Kept::default(),
        })
    }

    /// Grows its pipe within the process's budget ([`super::pipesize`]); not a pipe, or
    /// no budget left: as it was.
    pub(crate) fn grown(mut self) -> FdIo {
        if self.kept.grant.is_none() {
            self.kept.grant = super::pipesize::grow_pipe(self.fd.get_ref());
        }
        self
    }

    /// Holds `grant`, the growth of its pipe made before it was ours, as long as the
    /// descriptor.
    pub(crate) fn holding(mut self, grant: Option<PipeGrant>) -> FdIo {
        self.kept.grant = grant.or(self.kept.grant);
        self
    }

    /// Like [`FdIo::new`] for a pty master, whose EIO means end of file.
    pub(crate) fn pty(fd: OwnedFd) -> io::Result<FdIo> {
        let mut io = FdIo::new(fd)?;
        io.kept.eio_is_eof = true;
        Ok(io)
    }

    fn is_pipe(&self) -> bool {
        *self.kept.pipe.get_or_init(|| splice::is_pipe(self.raw()))
    }

    pub(crate) fn get_ref(&self) -> &OwnedFd {
        self.fd.get_ref()
    }

    fn raw(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }

    /// Waits until a read would not wait; returns how many bytes are waiting. 0: the end
    /// (or an error) is there, or bytes came just now: read to know.
    pub(crate) async fn ready_to_read(&self) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let n = splice::pending(self.raw())?;
            if n > 0 {
                return Ok(n);
            }
            if splice::readable_now(self.raw()) {
                // Bytes may have come between the two looks: counted, they can be
                // spliced; 0 only for the end or an error.
                return splice::pending(self.raw());
            }
            guard.clear_ready();
        }
    }

    /// Reads at most `max` bytes onto the end of `buf`, waiting for some; 0 at the end.
    pub(crate) async fn read_into(&self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            loop {
                let mut guard = ready!(self.fd.poll_read_ready(cx))?;
                match guard.try_io(|inner| splice::read(inner.get_ref().as_fd(), buf, max)) {
                    Ok(result) => return Poll::Ready(result),
                    Err(_would_block) => continue,
                }
            }
        })
        .await
    }

    /// Writes some of `data`, waiting for room.
    pub(crate) async fn write_some(&self, data: &[u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            loop {
                let mut guard = ready!(self.fd.poll_write_ready(cx))?;
                match guard.try_io(|inner| splice::write(inner.get_ref().as_fd(), data)) {
                    Ok(result) => return Poll::Ready(result),
                    Err(_would_block) => continue,
                }
            }
        })
        .await
    }

    /// Moves up to `max` bytes of this descriptor's input into `to`, a pipe that is never
    /// waited for: waits for input only.
    pub(crate) async fn splice_to(&self, to: BorrowedFd<'_>, max: usize) -> io::Result<Spliced> {
        loop {
            let mut guard = self.fd.readable().await?;
            match splice::splice(self.raw(), to, max) {
                Ok(0) => return Ok(Spliced::End),
                Ok(n) => return Ok(Spliced::Moved(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if splice::pending(self.raw())? > 0 {
                        return Ok(Spliced::Full);
                    }
                    guard.clear_ready();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until a write would not wait (readiness is kept for the write that follows).
    pub(crate) async fn writable(&self) -> io::Result<()> {
        self.fd.writable().await?.retain_ready();
        Ok(())
    }

    /// Moves up to `len` bytes from the pipe `from`, which holds at least that many, into
    /// this descriptor, waiting for room; returns how many moved (at least one).
    pub(crate) async fn splice_from(&self, from: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.writable().await?;
            match splice::splice(from, self.raw(), len) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    if n < len && self.is_pipe() {
                        // `from` held all `len`, so a pipe that took less is full, and its
                        // reader's next read will say when it is not (readiness that came
                        // after the guard is kept). Spares the splice that says "full":
                        // a bulk writer comes here each time ssh takes 32 KiB.
                        guard.clear_ready();
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if splice::pending(from)? == 0 {
                        // Only a bug leaves a staged pipe short; never wait for it.
                        return Err(io::Error::other("staged bytes are missing"));
                    }
                    guard.clear_ready();
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// An [`FdIo`] taken off the event loop for a while ([`FdIo::unwatch`]): what happens on
/// the descriptor meanwhile wakes nobody.
#[derive(Debug)]
pub(crate) struct Unwatched {
    fd: OwnedFd,
    kept: Kept,
}

impl FdIo {
    /// Stops watching the descriptor (every write into a pipe that epoll watches wakes
    /// the watcher, wanted or not).
    pub(crate) fn unwatch(self) -> Unwatched {
        Unwatched {
            fd: self.fd.into_inner(),
            kept: self.kept,
        }
    }
}

impl Unwatched {
    /// Watched again, as it was.
    pub(crate) fn watch(self) -> io::Result<FdIo> {
        Ok(FdIo {
            fd: register(self.fd)?,
            kept: self.kept,
        })
    }
}

/// A descriptor that its owner takes off the event loop while it waits for something
/// else, watched again at its next use.
#[derive(Debug)]
pub(crate) enum Watch {
    Watched(FdIo),
    Unwatched(Unwatched),
    /// Watching it again failed: it is closed, and every use is an error.
    Lost,
}

impl Watch {
    pub(crate) fn new(fd: FdIo) -> Watch {
        Watch::Watched(fd)
    }

    /// The descriptor, watched again if it was not (a wait cancelled half-way included).
    pub(crate) fn watched(&mut self) -> io::Result<&FdIo> {
        *self = match std::mem::replace(self, Watch::Lost) {
            Watch::Unwatched(fd) => Watch::Watched(fd.watch()?),
            as_it_was => as_it_was,
        };
        match self {
            Watch::Watched(fd) => Ok(fd),
            _ => Err(lost()),
        }
    }

    /// Takes it off the event loop until its next use.
    pub(crate) fn unwatch(&mut self) {
        *self = match std::mem::replace(self, Watch::Lost) {
            Watch::Watched(fd) => Watch::Unwatched(fd.unwatch()),
            as_it_was => as_it_was,
        };
    }

    fn raw(&self) -> io::Result<BorrowedFd<'_>> {
        match self {
            Watch::Watched(fd) => Ok(fd.raw()),
            Watch::Unwatched(fd) => Ok(fd.fd.as_fd()),
            Watch::Lost => Err(lost()),
        }
    }

    /// Bytes waiting in it (FIONREAD), watched or not.
    pub(crate) fn pending(&self) -> io::Result<usize> {
        splice::pending(self.raw()?)
    }

    /// Like [`FdIo::splice_to`], without waiting and watched or not: `None` when there
    /// is no input now.
    pub(crate) fn try_splice_to(
        &self,
        to: BorrowedFd<'_>,
        max: usize,
    ) -> io::Result<Option<Spliced>> {
        try_splice(self.raw()?, to, max)
    }
}

/// `fd` on the event loop.
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `OwnedFd` keeps the descriptor open and unchanged for the AsyncFd's life.
    unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
}

fn lost() -> io::Error {
    io::Error::other("a descriptor could not be watched again")
}

/// What one splice into a pipe that is never waited for did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spliced {
    Moved(usize),
    /// The input ended.
    End,
    /// The destination is full.
    Full,
}

fn try_splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, max: usize) -> io::Result<Option<Spliced>> {
    match splice::splice(from, to, max) {
        Ok(0) => Ok(Some(Spliced::End)),
        Ok(n) => Ok(Some(Spliced::Moved(n))),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            if splice::pending(from)? > 0 {
                Ok(Some(Spliced::Full))
            } else {
                Ok(None)
            }
        }
        Err(e) => Err(e),
    }
}

/// Sets or clears O_NONBLOCK on `fd`.
pub(crate) fn set_nonblocking(fd: &impl AsRawFd, on: bool) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we hold; no memory is passed.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    if new != flags && unsafe { libc::fcntl(raw, libc::F_SETFL, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Polls a read-like system call until it succeeds or would block: `call` gets the
/// descriptor and an initialised buffer and returns what read(2) returns.
pub(crate) fn poll_read_with(
    fd: &AsyncFd<OwnedFd>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
    mut call: impl FnMut(RawFd, &mut [u8]) -> isize,
) -> Poll<io::Result<()>> {
    loop {
        let mut guard = ready!(fd.poll_read_ready(cx))?;
        let unfilled = buf.initialize_unfilled();
        match guard.try_io(|inner| syscall_result(call(inner.as_raw_fd(), unfilled))) {
            Ok(Ok(n)) => {
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            Ok(Err(e)) => return Poll::Ready(Err(e)),
            Err(_would_block) => continue,
        }
    }
}

/// Polls a write-like system call until it succeeds or would block.
pub(crate) fn poll_write_with(
    fd: &AsyncFd<OwnedFd>,
    cx: &mut Context<'_>,
    mut call: impl FnMut(RawFd) -> isize,
) -> Poll<io::Result<usize>> {
    loop {
        let mut guard = ready!(fd.poll_write_ready(cx))?;
        match guard.try_io(|inner| syscall_result(call(inner.as_raw_fd()))) {
            Ok(r) => return Poll::Ready(r),
            Err(_would_block) => continue,
        }
    }
}

fn syscall_result(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl AsyncRead for FdIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY (closure): reading into an initialised buffer of the given length.
        let polled = poll_read_with(&self.fd, cx, buf, |fd, b| unsafe {
            libc::read(fd, b.as_mut_ptr().cast(), b.len())
        });
        match polled {
            Poll::Ready(Err(e)) if self.kept.eio_is_eof && e.raw_os_error() == Some(libc::EIO) => {
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for FdIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        // SAFETY (closure): writing from a valid slice.
        poll_write_with(&self.fd, cx, |fd| unsafe {
            libc::write(fd, data.as_ptr().cast(), data.len())
        })
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let count = bufs.len().min(1024) as libc::c_int;
        // SAFETY (closure): IoSlice is ABI-compatible with iovec; the slices outlive the call.
        poll_write_with(&self.fd, cx, |fd| unsafe {
            libc::writev(fd, bufs.as_ptr().cast(), count)
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Sockets get a real half-close; for pipes the peer sees EOF when the fd is dropped.
        // SAFETY: shutdown on a descriptor we hold; ENOTSOCK is expected for pipes.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) };
        Poll::Ready(Ok(()))
    }
}

/// One blocking `read(2)` from `fd` into `buf`'s spare capacity, after reserving at least
/// `want` bytes there: returns the number of bytes read, 0 at end of file. Interrupted
/// reads are retried.
pub(crate) fn read_buf(fd: impl AsFd, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
    buf.reserve(want);
    loop {
        let spare = buf.spare_capacity_mut();
        // SAFETY: read(2) writes at most `spare.len()` bytes into the spare capacity.
        let n = unsafe {
            libc::read(
                fd.as_fd().as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
            )
        };
        match syscall_result(n) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(n) => {
                // SAFETY: the kernel initialised the first n bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                return Ok(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unwatched_pipe_keeps_its_bytes_and_is_watched_again_at_its_next_use() {
        let pipe = splice::pipe().unwrap();
        let mut src = Watch::new(FdIo::new(pipe.read).unwrap());
        src.unwatch();
        assert!(matches!(src, Watch::Unwatched(_)));
        assert_eq!(splice::write(pipe.write.as_fd(), b"hello").unwrap(), 5);
        assert_eq!(src.pending().unwrap(), 5, "seen without being watched");
        let out = splice::pipe().unwrap();
        let moved = src.try_splice_to(out.write.as_fd(), 2).unwrap();
        assert_eq!(moved, Some(Spliced::Moved(2)));
        let io = src.watched().unwrap();
        assert_eq!(io.ready_to_read().await.unwrap(), 3);
        let mut buf = BytesMut::new();
        assert_eq!(io.read_into(&mut buf, 16).await.unwrap(), 3);
        assert_eq!(&buf[..], b"llo");
        src.unwatch();
        drop(pipe.write);
        let io = src.watched().unwrap();
        assert_eq!(
            io.read_into(&mut buf, 16).await.unwrap(),
            0,
            "the end, watched"
        );
    }
}
