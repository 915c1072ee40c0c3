//! A timer with microsecond precision for the event loop: a timerfd. tokio's own timers
//! count whole milliseconds, too coarse for pacing a pipe that a consumer empties in two.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

/// A one-shot timer on the monotonic clock, armed anew by each [`Timer::sleep`].
#[derive(Debug)]
pub(crate) struct Timer {
    fd: AsyncFd<OwnedFd>,
}

impl Timer {
    pub(crate) fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create takes no pointers.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: `OwnedFd` keeps the descriptor open and unchanged for the AsyncFd's life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Timer { fd })
    }

    /// Waits for `d` (at least a microsecond).
    pub(crate) async fn sleep(&self, d: Duration) -> io::Result<()> {
        let d = d.max(Duration::from_micros(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                // Within what a 32-bit time_t holds, wherever it is one.
                tv_sec: d.as_secs().min(i32::MAX as u64) as _,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: timerfd_settime reads the spec it is given; no old value is asked for.
        let set =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if set < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = 0u64;
            // SAFETY: a timerfd read writes one u64 into the buffer given.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut expirations as *mut u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
            if n > 0 {
                // One-shot: nothing more comes until it is armed again.
                guard.clear_ready();
                return Ok(());
            }
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => guard.clear_ready(),
                io::ErrorKind::Interrupted => {}
                _ => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn sleeps_at_least_as_long_as_asked_and_again() {
        let timer = Timer::new().unwrap();
        for us in [300, 1500, 1] {
            let asked = Duration::from_micros(us);
            let t = Instant::now();
            timer.sleep(asked).await.unwrap();
            assert!(t.elapsed() >= asked, "{:?} < {asked:?}", t.elapsed());
        }
    }
}
