//! Moving bytes between descriptors inside the kernel: private pipes and splice(2), so
//! that a stream's payload goes from one pipe to the next without passing through
//! mitossh's memory. Every call here is non-blocking; waiting is [`super::fdio`]'s job.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use bytes::BytesMut;

use super::pipesize::PipeGrant;

/// The two ends of a pipe of our own.
#[derive(Debug)]
pub(crate) struct Pipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
    /// Its growth, given back when the pipe closes.
    _grant: Option<PipeGrant>,
}

/// A new pipe, both ends non-blocking and close-on-exec, grown as far as the process's
/// budget permits ([`super::pipesize`]; it stays at the kernel's default otherwise).
pub(crate) fn pipe() -> io::Result<Pipe> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors that nobody else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let _grant = super::pipesize::grow_pipe(&write);
    Ok(Pipe {
        read,
        write,
        _grant,
    })
}

/// Moves up to `len` bytes from `from` to `to` (one of them a pipe) without copying them
/// and without waiting on a pipe: `Ok(0)` is the end of `from`'s input, `WouldBlock` means
/// `from` is empty or `to` is full. The other end must be non-blocking itself.
pub(crate) fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: splice on two descriptors we hold, without offsets.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Bytes waiting to be read in a pipe or a socket (FIONREAD).
pub(crate) fn pending(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

/// Whether reading `fd` would not wait: data, end of input or an error is there.
pub(crate) fn readable_now(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own, without waiting.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents != 0
}

/// Whether `fd` is a pipe (a FIFO).
pub(crate) fn is_pipe(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: fstat fills the struct it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let ok = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0;
    ok && st.st_mode & libc::S_IFMT == libc::S_IFIFO
}

/// One write(2) of `data` to a non-blocking `fd`: how much went (`WouldBlock` when none).
pub(crate) fn write(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: writing from a valid slice.
        let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One read(2) of at most `max` bytes from a non-blocking `fd` onto the end of `buf`,
/// into its spare capacity (nothing is zeroed first): how much came, 0 at the end.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let max = max.min(spare.len());
    loop {
        // SAFETY: reading into `max` bytes of the buffer's spare capacity.
        let n = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), max) };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: the kernel initialised the first `n` spare bytes.
            unsafe { buf.set_len(buf.len() + n) };
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn splice_moves_bytes_between_pipes_in_order() {
        let a = pipe().unwrap();
        let b = pipe().unwrap();
        let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        assert_eq!(write(a.write.as_fd(), &data).unwrap(), data.len());
        assert_eq!(pending(a.read.as_fd()).unwrap(), data.len());
        // Moved in pieces; when `b` is full (its size is the kernel's to grant), drain it.
        let mut moved = 0;
        let mut got = BytesMut::new();
        while moved < data.len() {
            match splice(a.read.as_fd(), b.write.as_fd(), 7777) {
                Ok(n) => moved += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    read(b.read.as_fd(), &mut got, 1 << 16).unwrap();
                }
                Err(e) => panic!("splice: {e}"),
            }
        }
        while got.len() < data.len() {
            read(b.read.as_fd(), &mut got, 1 << 16).unwrap();
        }
        assert!(got[..] == data[..]);
        let e = splice(a.read.as_fd(), b.write.as_fd(), 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "empty, writer open");
        drop(a.write);
        // A child another test is forking holds a copy of the write end until it execs.
        let mut end = libc::pollfd {
            fd: a.read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one pollfd we own, for at most 10 s.
        assert_eq!(
            unsafe { libc::poll(&mut end, 1, 10_000) },
            1,
            "the end comes"
        );
        assert_eq!(splice(a.read.as_fd(), b.write.as_fd(), 1).unwrap(), 0);
        assert!(readable_now(a.read.as_fd()), "the end is readable");
        assert!(!readable_now(b.read.as_fd()), "empty with a writer is not");
        assert!(is_pipe(b.read.as_fd()));
    }

    #[test]
    fn a_full_pipe_says_would_block() {
        let a = pipe().unwrap();
        let b = pipe().unwrap();
        let chunk = vec![1u8; 1 << 16];
        while write(b.write.as_fd(), &chunk).is_ok() {}
        write(a.write.as_fd(), b"x").unwrap();
        let e = splice(a.read.as_fd(), b.write.as_fd(), 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(pending(a.read.as_fd()).unwrap(), 1, "nothing was taken");
    }
}
