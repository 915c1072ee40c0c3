//! Handing descriptors to another process over a Unix socket (SCM_RIGHTS).

use std::io::{self, IoSlice, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use bytes::BytesMut;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tokio::io::Interest;

/// At most this many descriptors travel with one message.
pub(crate) const MAX_FDS: usize = 3;

/// Writes `data`, with `fds` attached to its first byte.
pub(crate) fn send_with_fds(sock: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let sent = loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(data)],
            cmsgs,
            MsgFlags::empty(),
            None,
        ) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    // The descriptors went with the first part; the rest is plain bytes.
    (&*sock).write_all(&data[sent..])
}

/// Like [`send_with_fds`], on a non-blocking socket of the runtime.
pub(crate) async fn send_with_fds_async(
    sock: &tokio::net::UnixStream,
    data: &[u8],
    fds: &[RawFd],
) -> io::Result<()> {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let sent = loop {
        sock.writable().await?;
        let tried = sock.try_io(Interest::WRITABLE, || {
            sendmsg::<()>(
                sock.as_raw_fd(),
                &[IoSlice::new(data)],
                cmsgs,
                MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from)
        });
        match tried {
            Ok(n) => break n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        }
    };
    let mut rest = &data[sent..];
    while !rest.is_empty() {
        sock.writable().await?;
        match sock.try_write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One `recvmsg` of data and `SCM_RIGHTS` into `data`: the bytes read, the descriptors
/// received and whether the kernel truncated them (`MSG_CTRUNC`: more were sent than fit,
/// or this process is out of descriptors). Plain libc, because nix will not read the
/// control messages of a truncated message, yet the descriptors they hold are ours to close.
fn recv_rights(
    sock: RawFd,
    data: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<(usize, Vec<OwnedFd>, bool)> {
    // Aligned for cmsghdr; CMSG_SPACE of MAX_FDS descriptors is 32 bytes on Linux.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) };
    debug_assert!(space as usize <= std::mem::size_of_val(&control));
    msg.msg_controllen = space as _;
    let flags = libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT;
    // SAFETY: msg describes live buffers of the lengths given.
    let n = unsafe { libc::recvmsg(sock, &mut msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the CMSG_* walk stays within msg_controllen as the kernel filled it; each
    // SCM_RIGHTS descriptor is new and ours alone.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let first = libc::CMSG_DATA(c);
                let len = (*c).cmsg_len as usize - (first as usize - c as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(first.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, fds, msg.msg_flags & libc::MSG_CTRUNC != 0))
}

/// One `recvmsg` into `buf`'s spare capacity; descriptors that came along are appended to
/// `fds`. Returns the number of bytes read (0 at end of stream).
pub(crate) async fn recv_with_fds(
    sock: &tokio::net::UnixStream,
    buf: &mut BytesMut,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    buf.reserve(16 * 1024);
    loop {
        sock.readable().await?;
        let result = sock.try_io(Interest::READABLE, || {
            recv_rights(sock.as_raw_fd(), buf.spare_capacity_mut())
        });
        match result {
            Ok((n, got, truncated)) => {
                let whole = got.len() == MAX_FDS;
                fds.extend(got);
                // SAFETY: recvmsg initialised the first n bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                if truncated && whole {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("more than {MAX_FDS} descriptors with one message"),
                    ));
                }
                if truncated {
                    // The kernel could not give us every descriptor sent: out of them.
                    return Err(io::Error::from_raw_os_error(libc::EMFILE));
                }
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}
