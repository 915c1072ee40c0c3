//! Handing descriptors to another process over a Unix socket (SCM_RIGHTS).

use std::io::{self, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use bytes::BytesMut;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use tokio::io::Interest;

/// At most this many descriptors travel with one message.
pub const MAX_FDS: usize = 3;

/// Writes `data`, with `fds` attached to its first byte.
pub fn send_with_fds(sock: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
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
pub async fn send_with_fds_async(
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
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
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

/// One `recvmsg` into `buf`'s spare capacity; descriptors that came along are appended to
/// `fds`. Returns the number of bytes read (0 at end of stream).
pub async fn recv_with_fds(
    sock: &tokio::net::UnixStream,
    buf: &mut BytesMut,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    buf.reserve(16 * 1024);
    loop {
        sock.readable().await?;
        let result = sock.try_io(Interest::READABLE, || {
            let spare = buf.spare_capacity_mut();
            // SAFETY: recvmsg writes at most `spare.len()` bytes, and we only count what it
            // reports as written.
            let slice = unsafe {
                std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<u8>(), spare.len())
            };
            let mut iov = [IoSliceMut::new(slice)];
            let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
            let msg = recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
            )
            .map_err(io::Error::from)?;
            let mut got = Vec::new();
            for cmsg in msg.cmsgs().map_err(io::Error::from)? {
                if let ControlMessageOwned::ScmRights(received) = cmsg {
                    got.extend(received);
                }
            }
            let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
            Ok((msg.bytes, got, truncated))
        });
        match result {
            Ok((n, got, truncated)) => {
                // SAFETY: each received descriptor is new and ours alone.
                fds.extend(
                    got.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
                // SAFETY: recvmsg initialised the first n bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
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
