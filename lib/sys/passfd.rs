//! Handing descriptors to another process over a Unix socket (SCM_RIGHTS).

use std::io::{self, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use bytes::BytesMut;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
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
            Ok((msg.bytes, got))
        });
        match result {
            Ok((n, got)) => {
                // SAFETY: each received descriptor is new and ours alone.
                fds.extend(
                    got.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
                // SAFETY: recvmsg initialised the first n bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}
