//! Anonymous memory files that can be executed: where an agent runs from, so that it
//! depends on no file on the host.

use std::io;
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::sys::memfd::{MFdFlags, memfd_create};

/// A new, empty, executable memfd named `name` (close-on-exec). Kernels with
/// `vm.memfd_noexec` want `MFD_EXEC`; older ones reject it with EINVAL, so it is retried
/// without.
pub(crate) fn executable(name: &str) -> io::Result<OwnedFd> {
    let exec = MFdFlags::from_bits_retain(libc::MFD_EXEC);
    match memfd_create(name, MFdFlags::MFD_CLOEXEC | exec) {
        Err(Errno::EINVAL) => Ok(memfd_create(name, MFdFlags::MFD_CLOEXEC)?),
        other => Ok(other?),
    }
}
