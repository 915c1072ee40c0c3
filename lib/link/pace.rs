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

/// The capacity of `fd`'s pipe, if it is one large enough to pace.
fn pacable(fd: &impl std::os::fd::AsRawFd) -> Option<usize> {
    crate::sys::pipesize::capacity(fd).filter(|&c| c >= MIN_CAPACITY)
}

/// A rate measured over sleeps and the timer to sleep on: what a writer into a full pipe
/// ([`Pacer`]) and a reader waiting for the rest of a payload ([`ReadPacer`]) share.
#[derive(Debug, Default)]
struct Pace {
    /// Bytes per second the peer moved during the last sleep, once measured.
    rate: Option<f64>,
    /// Made at the first sleep: a link that never paces holds no timer.
    timer: Option<Timer>,
    /// No timer could be made or used: no pacing.
    no_timer: bool,
    /// Times pacing was not worth it since the rate was measured (a slow peer).
    unpaced: u32,
}

impl Pace {
    /// How long the peer should take to move `bytes`, if that is worth a sleep (a short
    /// probe while the rate is unknown).
    fn sleep_for(&mut self, bytes: usize) -> Option<Duration> {
        if self.no_timer {
            return None;
        }
        let sleep = match self.rate {
            Some(rate) => Duration::from_secs_f64(bytes as f64 / rate),
            None => PROBE,
        };
        let worth = (MIN_SLEEP..=MAX_SLEEP).contains(&sleep);
        if !worth {
            self.unpaced += 1;
            if self.unpaced >= PROBE_AGAIN {
                (self.rate, self.unpaced) = (None, 0);
            }
        }
        worth.then_some(sleep)
    }

    /// Sleeps for `d`, then asks `moved` how many bytes the peer moved meanwhile and
    /// whether that was all it could (the pipe ran dry, the payload was all there): then
    /// the peer may be faster than that. Without a timer it returns at once: no pacing.
    async fn sleep(
        &mut self,
        d: Duration,
        moved: impl FnOnce() -> io::Result<(usize, bool)>,
    ) -> io::Result<()> {
        if self.timer.is_none() && !self.no_timer {
            self.timer = Timer::new().ok();
            self.no_timer = self.timer.is_none();
        }
        let Some(timer) = &self.timer else {
            return Ok(());
        };
        let start = Instant::now();
        if timer.sleep(d).await.is_err() {
            (self.timer, self.no_timer) = (None, true);
            return Ok(());
        }
        let (moved, all) = moved()?;
        self.measured(moved, start.elapsed(), all);
        Ok(())
    }

    /// The peer moved `moved` bytes in `elapsed`; `all`: all there was to move, so its
    /// rate is at least that.
    fn measured(&mut self, moved: usize, elapsed: Duration, all: bool) {
        let secs = elapsed.as_secs_f64();
        if moved == 0 || secs <= 0.0 {
            self.rate = None;
            return;
        }
        let rate = moved as f64 / secs;
        self.rate = match self.rate {
            // A bound from below is no measure of its own: probe again next time.
            None if all => None,
            None => Some(rate),
            // Nor does it lower the estimate (a sleep that ended late would otherwise
            // lengthen every sleep after it).
            Some(before) if all => Some(before.max(rate)),
            // Smoothed a little: one sleep can end late.
            Some(before) => Some((before + rate) / 2.0),
        };
    }
}

/// When a writer tops up a full pipe (see the module's comment).
#[derive(Debug)]
pub(crate) struct Pacer {
    /// What the pipe holds at most, in bytes.
    capacity: usize,
    pace: Pace,
}

impl Pacer {
    /// A pacer for writes into `fd`; `None` when it is no pipe or too small a one.
    pub(crate) fn new(fd: &FdIo) -> Option<Pacer> {
        Some(Pacer {
            capacity: pacable(fd.get_ref())?,
            pace: Pace::default(),
        })
    }

    /// Called when a write left `fd`'s pipe full: returns once it is time to top it up.
    /// Errors are `fd`'s; a timer that cannot be had only means no pacing.
    pub(crate) async fn full(&mut self, fd: &FdIo) -> io::Result<()> {
        fd.writable().await?;
        let held = splice::pending(fd.get_ref().as_fd())?;
        let Some(sleep) = self.sleep_for(held) else {
            return Ok(());
        };
        let left = || splice::pending(fd.get_ref().as_fd());
        let taken = || left().map(|left| (held.saturating_sub(left), left == 0));
        self.pace.sleep(sleep, taken).await
    }

    /// How long to leave a pipe holding `held` bytes before topping it up, if at all.
    fn sleep_for(&mut self, held: usize) -> Option<Duration> {
        if held <= self.capacity / 2 {
            // The consumer is well ahead (or the pipe is full of small buffers).
            return None;
        }
        self.pace.sleep_for(held - self.capacity / 4)
    }
}

/// When a link's reader, with part of a large payload in the pipe, goes on: the rest
/// comes in 32 KiB writes (sshd's, ssh's), each of which would wake it to splice 32 KiB
/// on. It sleeps instead, with the link's descriptor taken off the event loop (every
/// write to a pipe that epoll watches wakes its watcher), until the rest should be
/// there at the rate measured last time.
#[derive(Debug)]
pub(crate) struct ReadPacer {
    /// What may come while the reader sleeps: the link's capacity less a page; `None`
    /// for a link too small to pace (or no pipe).
    room: Option<usize>,
    pace: Pace,
}

impl ReadPacer {
    /// A pacer for reads from `link`.
    pub(crate) fn new(link: &impl std::os::fd::AsRawFd) -> ReadPacer {
        ReadPacer {
            room: pacable(link).map(|c| c - 4096),
            pace: Pace::default(),
        }
    }

    /// How much of a payload may be waited for, if pacing at all.
    pub(crate) fn room(&self) -> Option<usize> {
        self.room
    }

    /// How long to wait for the `missing` bytes of a payload, if at all.
    pub(crate) fn wait_for(&mut self, missing: usize) -> Option<Duration> {
        self.pace.sleep_for(missing)
    }

    /// Sleeps `d`, then measures the rate by `arrived`: the bytes that came meanwhile,
    /// and whether that was all that was missing.
    pub(crate) async fn sleep(
        &mut self,
        d: Duration,
        arrived: impl FnOnce() -> io::Result<(usize, bool)>,
    ) -> io::Result<()> {
        self.pace.sleep(d, arrived).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer(capacity: usize, rate: Option<f64>) -> Pacer {
        Pacer {
            capacity,
            pace: Pace {
                rate,
                ..Pace::default()
            },
        }
    }

    #[test]
    fn a_full_pipe_is_left_until_a_quarter_remains_at_the_measured_rate() {
        let mib = 1 << 20;
        // 400 MB/s, 1 MiB held: (1 MiB - 256 KiB) / 400 MB/s = 1.97 ms.
        let mut p = pacer(mib, Some(400e6));
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
        let mut p = Pace::default();
        p.measured(400_000, Duration::from_millis(1), false);
        assert_eq!(p.rate, Some(400e6));
        p.measured(200_000, Duration::from_millis(1), false);
        assert_eq!(p.rate, Some(300e6));
        p.measured(100_000, Duration::from_millis(1), true);
        assert_eq!(p.rate, Some(300e6), "a pipe that ran dry says 'at least'");
        p.measured(500_000, Duration::from_millis(1), true);
        assert_eq!(p.rate, Some(500e6));
        p.measured(0, Duration::from_millis(1), false);
        assert_eq!(p.rate, None, "a peer that stopped is probed anew");
        p.measured(100_000, Duration::from_millis(1), true);
        assert_eq!(p.rate, None, "a bound from below is no first measure");
    }

    #[test]
    fn a_slow_peer_is_measured_again_after_a_while() {
        let mut p = Pace {
            rate: Some(1e6),
            ..Pace::default()
        };
        for _ in 1..PROBE_AGAIN {
            assert_eq!(p.sleep_for(64 * 1024), None, "64 ms: not worth a sleep");
        }
        assert_eq!(p.sleep_for(64 * 1024), None);
        assert_eq!(p.sleep_for(64 * 1024), Some(PROBE), "probed again");
    }

    #[tokio::test]
    async fn a_pipe_too_small_or_no_pipe_is_not_paced() {
        let small = splice_pipe_of(64 * 1024);
        assert!(Pacer::new(&small).is_none());
        assert_eq!(ReadPacer::new(small.get_ref()).room(), None);
        let (socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(Pacer::new(&FdIo::new(socket.into()).unwrap()).is_none());
    }

    #[tokio::test]
    async fn a_full_pipe_waits_for_its_reader_and_learns_its_rate() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let grown = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(MIN_CAPACITY as i32));
        if grown == Err(nix::errno::Errno::EPERM) {
            eprintln!("skipped: the user's allowance of pipe pages is spent");
            return;
        }
        grown.unwrap();
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
        // The first wait ends once the reader has read; a reader kept off the CPU through
        // a whole probe leaves the rate unknown: fill and probe again, for a while.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let waited = tokio::time::timeout(Duration::from_secs(10), p.full(&w)).await;
            waited.unwrap().unwrap();
            if p.pace.rate.is_some() {
                break;
            }
            fill(&w);
        }
        assert!(p.pace.rate.is_some(), "measured over a probe");
        drop(w);
        assert!(
            reader.join().unwrap() >= MIN_CAPACITY,
            "the reader had it all"
        );
    }

    /// The write end of a new pipe of `size` bytes (its read end leaked: a test's only).
    fn splice_pipe_of(size: usize) -> FdIo {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size as i32)).unwrap();
        std::mem::forget(r);
        FdIo::new(w).unwrap()
    }
}
