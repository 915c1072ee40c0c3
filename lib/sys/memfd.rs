//! Anonymous memory files that can be executed: where an agent runs from, so that it
//! depends on no file on the host. Also the read-only mapping of the executable being run.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::memfd::{MFdFlags, memfd_create};

/// A new, empty, executable memfd named `name`, inherited across exec (the agent's new
/// image adopts it with [`adopt_inherited`]). Kernels with `vm.memfd_noexec` want
/// `MFD_EXEC`; older ones reject it with EINVAL, so it is retried without.
pub(crate) fn executable(name: &str) -> io::Result<OwnedFd> {
    let exec = MFdFlags::from_bits_retain(libc::MFD_EXEC);
    match memfd_create(name, exec) {
        Err(Errno::EINVAL) => Ok(memfd_create(name, MFdFlags::empty())?),
        other => Ok(other?),
    }
}

/// Like [`executable`], but close-on-exec: a copy handed to one child as a standard
/// stream, which nothing else it starts should inherit.
pub(crate) fn executable_cloexec(name: &str) -> io::Result<OwnedFd> {
    let exec = MFdFlags::from_bits_retain(libc::MFD_EXEC) | MFdFlags::MFD_CLOEXEC;
    match memfd_create(name, exec) {
        Err(Errno::EINVAL) => Ok(memfd_create(name, MFdFlags::MFD_CLOEXEC)?),
        other => Ok(other?),
    }
}

/// Takes ownership of descriptor `fd`, which the previous image of this process left
/// open for it (its number came through the environment), and makes it close-on-exec so
/// that nothing this process starts inherits it. `None` for stdio or a closed number.
pub(crate) fn adopt_inherited(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only asks whether `fd` is open; nothing is changed.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the previous image of this process opened `fd` for us alone and named it
    // in the environment; nothing else in this process knows of it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: setting a flag on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(owned)
}

/// A read-only shared mapping of `file`, the executable this process runs.
pub(crate) fn map_running_executable(file: &std::fs::File) -> io::Result<memmap2::Mmap> {
    // SAFETY: a read-only shared mapping of an executable being run, which the kernel
    // refuses to open for writing while it runs (ETXTBSY); nothing truncates it meanwhile.
    unsafe { memmap2::Mmap::map(file) }
}
