//! Pacing a link's writer into a pipe that its consumer (ssh, sshd) empties 32 KiB at a
//! time.
//!
//! A writer that keeps such a pipe full is woken by each of the consumer's reads: 32,000
//! wake-ups per GiB, each an epoll return, a task's poll and a splice of 32 KiB, and on 2
//! cores each one takes the CPU from ssh or sshd. Once the pipe is full the [`Pacer`] lets
//! the consumer take most of it first: woken by the consumer's first read, it sleeps
//! until the pipe should be down to a quarter, at the rate the consumer drained it last
//! time, so that one wake-up moves most of a pipe. The consumer does not wait for it: a
//! quarter of the pipe is still there when the writer comes back, and a consumer that
//! reads faster than measured only shortens the next sleep.

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::sys::fdio::FdIo;
use crate::sys::splice;
use crate::sys::timer::Timer;

/// Smaller pipes are not paced: a quarter of one would be gone before the writer woke.
const MIN_CAPACITY: usize = 256 * 1024;

/// The first sleep, before the consumer's rate is known.
const PROBE: Duration = Duration::from_micros(200);

/// Sleeps shorter than this are not worth a wake-up of their own.
const MIN_SLEEP: Duration = Duration::from_micros(100);

/// The longest sleep. A consumer slower than that is left to wake the writer with its own
/// reads, which then come seldom enough; its rate is measured again after
/// [`PROBE_AGAIN`] fills, in case it has sped up.
const MAX_SLEEP: Duration = Duration::from_millis(4);

/// Fills of the pipe left unpaced (a slow consumer) before its rate is measured again.
const PROBE_AGAIN: u32 = 64;

/// When a writer tops up a full pipe (see the module's comment).
#[derive(Debug)]
pub(crate) struct Pacer {
    /// What the pipe holds at most, in bytes.
    capacity: usize,
    /// Bytes per second the consumer took during the last sleep, once measured.
    rate: Option<f64>,
    /// Made at the first sleep: a link that never fills its pipe holds no timer.
    timer: Option<Timer>,
    /// Fills left unpaced since the rate was measured (the consumer was slow).
    unpaced: u32,
}

impl Pacer {
    /// A pacer for writes into `fd`; `None` when it is no pipe or too small a one.
    pub(crate) fn new(fd: &FdIo) -> Option<Pacer> {
        let capacity = crate::sys::pipesize::capacity(fd.get_ref())?;
        (capacity >= MIN_CAPACITY).then_some(Pacer {
            capacity,
            rate: None,
            timer: None,
            unpaced: 0,
        })
    }

    /// Called when a write left `fd`'s pipe full: returns once it is time to top it up.
    /// Errors are `fd`'s; a timer that cannot be had only means no pacing.
    pub(crate) async fn full(&mut self, fd: &FdIo) -> io::Result<()> {
        fd.writable().await?;
        let held = splice::pending(fd.get_ref().as_fd())?;
        let Some(sleep) = self.sleep_for(held) else {
            self.unpaced += 1;
            if self.unpaced >= PROBE_AGAIN {
                (self.rate, self.unpaced) = (None, 0);
            }
            return Ok(());
        };
        if self.timer.is_none() {
            self.timer = Timer::new().ok();
        }
        let Some(timer) = &self.timer else {
            return Ok(());
        };
        let start = Instant::now();
        timer.sleep(sleep).await?;
        let left = splice::pending(fd.get_ref().as_fd())?;
        self.measured(held.saturating_sub(left), start.elapsed());
        Ok(())
    }

    /// How long to leave a pipe holding `held` bytes before topping it up, if at all.
    fn sleep_for(&self, held: usize) -> Option<Duration> {
        let floor = self.capacity / 4;
        if held <= self.capacity / 2 {
            // The consumer is well ahead (or the pipe is full of small buffers).
            return None;
        }
        let sleep = match self.rate {
            Some(rate) => Duration::from_secs_f64((held - floor) as f64 / rate),
            None => PROBE,
        };
        (MIN_SLEEP..=MAX_SLEEP).contains(&sleep).then_some(sleep)
    }

    /// The consumer took `taken` bytes in `elapsed`.
    fn measured(&mut self, taken: usize, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        self.rate = (taken > 0 && secs > 0.0).then(|| {
            let rate = taken as f64 / secs;
            // Smoothed a little: one sleep can end late.
            self.rate.map_or(rate, |before| (before + rate) / 2.0)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer(capacity: usize, rate: Option<f64>) -> Pacer {
        Pacer {
            capacity,
            rate,
            timer: None,
            unpaced: 0,
        }
    }

    #[test]
    fn a_full_pipe_is_left_until_a_quarter_remains_at_the_measured_rate() {
        let mib = 1 << 20;
        // 400 MB/s, 1 MiB held: (1 MiB - 256 KiB) / 400 MB/s = 1.97 ms.
        let p = pacer(mib, Some(400e6));
        let d = p.sleep_for(mib).unwrap();
        assert!((1900..2000).contains(&d.as_micros()), "{d:?}");
        // Half or less held: the consumer is ahead, top up at once.
        assert_eq!(p.sleep_for(mib / 2), None);
        // Not measured yet: a short probe.
        assert_eq!(pacer(mib, None).sleep_for(mib), Some(PROBE));
        // A slow consumer wakes the writer itself; for a very fast one it is not worth it.
        assert_eq!(pacer(mib, Some(100e6)).sleep_for(mib), None);
        assert_eq!(pacer(mib, Some(100e9)).sleep_for(mib), None);
    }

    #[test]
    fn the_rate_is_measured_over_each_sleep_and_forgotten_when_nothing_moved() {
        let mut p = pacer(1 << 20, None);
        p.measured(400_000, Duration::from_millis(1));
        assert_eq!(p.rate, Some(400e6));
        p.measured(200_000, Duration::from_millis(1));
        assert_eq!(p.rate, Some(300e6));
        p.measured(0, Duration::from_millis(1));
        assert_eq!(p.rate, None, "a consumer that stopped is probed anew");
    }

    #[tokio::test]
    async fn a_pipe_too_small_or_no_pipe_is_not_paced() {
        let small = splice_pipe_of(64 * 1024);
        assert!(Pacer::new(&small).is_none());
        let (socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(Pacer::new(&FdIo::new(socket.into()).unwrap()).is_none());
    }

    #[tokio::test]
    async fn a_full_pipe_waits_for_its_reader_and_learns_its_rate() {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(MIN_CAPACITY as i32)).unwrap();
        let w = FdIo::new(w).unwrap();
        let mut p = Pacer::new(&w).unwrap();
        let chunk = vec![7u8; 4096];
        let fill = |w: &FdIo| while splice::write(w.get_ref().as_fd(), &chunk).is_ok() {};
        fill(&w);
        // A reader that takes 32 KiB at a time, as ssh does, until the pipe is empty.
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            let mut total = 0;
            while let Ok(n @ 1..) = nix::unistd::read(&r, &mut buf) {
                total += n;
                std::thread::sleep(Duration::from_micros(50));
            }
            total
        });
        // Each wait ends once the reader has read (a reader kept off the CPU through a
        // whole probe leaves the rate unknown: fill and wait again).
        let bound = Duration::from_secs(10);
        for _ in 0..100 {
            let waited = tokio::time::timeout(bound, p.full(&w)).await;
            waited.unwrap().unwrap();
            if p.rate.is_some() {
                break;
            }
            fill(&w);
        }
        assert!(p.rate.is_some(), "measured over a probe");
        drop(w);
        assert!(
            reader.join().unwrap() >= MIN_CAPACITY,
            "the reader had it all"
        );
    }

    /// The write end of a new pipe of `size` bytes (its read end leaked: a test's only).
    fn splice_pipe_of(size: usize) -> FdIo {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size as i32)).unwrap();
        std::mem::forget(r);
        FdIo::new(w).unwrap()
    }
}
