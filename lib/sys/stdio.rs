//! This process's own descriptors: the standard ones, and those it was started with.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Points stdin and stdout at /dev/null once their descriptors were handed on or
/// duplicated, so that whoever is at the other end sees end of file when the copies close,
/// and nothing this process starts later can read or write them.
pub(crate) fn null_stdin_stdout() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    Ok(())
}

/// Takes descriptor `fd`, which whoever started this program left open for it (a
/// `--ready-fd`), if it is open and not a standard one. Call it once per descriptor, at
/// startup, before anything else in the process could own that number.
pub(crate) fn inherited(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is a standard one"),
        ));
    }
    // SAFETY: F_GETFD only asks whether the descriptor is open; no memory is passed.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("descriptor {fd}: {e}")));
    }
    // SAFETY: the descriptor is open, and by this function's contract nothing else in the
    // process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
