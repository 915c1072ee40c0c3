//! A timer with microsecond precision for the event loop: a timerfd. tokio's own timers
//! count whole milliseconds, too coarse for pacing a pipe that a consumer empties in two.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;

/// A one-shot timer on the monotonic clock, armed anew by each [`Timer::sleep`].
#[derive(Debug)]
pub(crate) struct Timer {
    fd: AsyncFd<Raw>,
}

/// nix's timerfd, which tokio wants as a raw descriptor.
#[derive(Debug)]
struct Raw(TimerFd);

impl AsRawFd for Raw {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Timer {
    pub(crate) fn new() -> io::Result<Timer> {
        let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, flags)?;
        // SAFETY: the TimerFd keeps the descriptor open and unchanged for the AsyncFd's life.
        let fd =
            unsafe { AsyncFd::register_with_interest(Raw(timer), tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?;
        Ok(Timer { fd })
    }

    /// Waits for `d` (at least a microsecond).
    pub(crate) async fn sleep(&self, d: Duration) -> io::Result<()> {
        let d = d.max(Duration::from_micros(1));
        let once = Expiration::OneShot(TimeSpec::from_duration(d));
        self.fd.get_ref().0.set(once, TimerSetTimeFlags::empty())?;
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            match nix::unistd::read(self.fd.get_ref().0.as_fd(), &mut expirations) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(_) => {
                    // One-shot: nothing more comes until it is armed again.
                    guard.clear_ready();
                    return Ok(());
                }
                Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
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
