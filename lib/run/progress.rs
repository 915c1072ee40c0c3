//! The status line of `mitossh run` on a terminal: which point of how many, elapsed time,
//! while connecting how many hosts are connected, failed and pending, then running and
//! failed processes, and an estimate of the time left, kept below the
//! interleaved output by `indicatif`. Hidden when stderr is not a terminal or with
//! `--quiet`; then messages are plain lines on stderr.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A handle to the status line; clones share it (the printer thread and the runner).
#[derive(Clone)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    /// The printer thread writes lines while the runner updates counts: one lock for both.
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    points: usize,
    /// 1-based number of the current point, and its name.
    current: usize,
    name: String,
    /// Points that ran (not skipped) and how long each took, for the estimate.
    took: Vec<Duration>,
    point_started: Option<Instant>,
    /// The current point's duration, if the plan has one.
    duration: Option<Duration>,
    /// Points still to run after the current one.
    left: usize,
    running: usize,
    failed: usize,
    /// While the point's processes are being opened: hosts connected, failed, pending.
    connecting: Option<(usize, usize, usize)>,
}

impl Progress {
    /// A status line on stderr if `enabled` and stderr is a terminal.
    pub(crate) fn new(enabled: bool, points: usize) -> Progress {
        let bar = enabled.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar
        });
        let bar = bar.filter(|b| !b.is_hidden());
        if let Some(b) = &bar {
            b.enable_steady_tick(Duration::from_millis(250));
        }
        Progress {
            bar,
            state: Arc::new(Mutex::new(State {
                points,
                ..State::default()
            })),
        }
    }

    /// Point `k` (0-based) starts; `left` points will run after it.
    pub(crate) fn start_point(
        &self,
        k: usize,
        name: &str,
        duration: Option<Duration>,
        left: usize,
    ) {
        let mut s = self.lock();
        s.current = k + 1;
        s.name = name.to_string();
        s.duration = duration;
        s.left = left;
        s.point_started = Some(Instant::now());
        s.running = 0;
        s.failed = 0;
        self.show(&s);
    }

    /// The current point is over.
    pub(crate) fn end_point(&self) {
        let mut s = self.lock();
        if let Some(t) = s.point_started.take() {
            s.took.push(t.elapsed());
        }
        s.running = 0;
        self.show(&s);
    }

    /// Hosts connected, failed and pending while the point's processes are opened.
    pub(crate) fn connecting(&self, (connected, failed, pending): (usize, usize, usize)) {
        let mut s = self.lock();
        s.connecting = Some((connected, failed, pending));
        self.show(&s);
    }

    /// Every host answered.
    pub(crate) fn connected(&self) {
        let mut s = self.lock();
        s.connecting = None;
        self.show(&s);
    }

    /// Whether there is a status line to show anything on.
    pub(crate) fn shown(&self) -> bool {
        self.bar.is_some()
    }

    pub(crate) fn counts(&self, running: usize, failed: usize) {
        let mut s = self.lock();
        s.running = running;
        s.failed = failed;
        self.show(&s);
    }

    /// A message line on stderr, above the status line.
    pub(crate) fn println(&self, msg: &str) {
        self.suspend(|| eprintln!("{msg}"));
    }

    /// Runs `f` (which writes to the terminal) with the status line out of the way.
    pub(crate) fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    /// Removes the status line for good.
    pub(crate) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn show(&self, s: &State) {
        if let Some(b) = &self.bar {
            b.set_message(s.message());
        }
    }
}

impl State {
    fn message(&self) -> String {
        if let Some((connected, failed, pending)) = self.connecting {
            let hosts = connected + failed + pending;
            return format!(
                "point {}/{} {} · connecting: {connected}/{hosts} hosts connected · {failed} failed · {pending} pending",
                self.current, self.points, self.name
            );
        }
        let mut msg = format!(
            "point {}/{} {} · {} running · {} failed",
            self.current, self.points, self.name, self.running, self.failed
        );
        if let Some(eta) = self.eta() {
            msg.push_str(&format!(" · ETA {}", human(eta)));
        }
        msg
    }

    /// What is left of this point (its duration, or the average point so far), plus the
    /// points after it at the average of those that ran.
    fn eta(&self) -> Option<Duration> {
        let average = (!self.took.is_empty())
            .then(|| self.took.iter().sum::<Duration>() / self.took.len() as u32)
            .or(self.duration)?;
        let elapsed = self.point_started.map(|t| t.elapsed()).unwrap_or_default();
        let this = self.duration.unwrap_or(average).saturating_sub(elapsed);
        Some(this + average * self.left as u32)
    }
}

/// `1h02m`, `3m05s`, `42s`.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(human(Duration::from_secs(185)), "3m05s");
        assert_eq!(human(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn the_estimate_uses_the_points_that_ran() {
        let mut s = State {
            points: 4,
            current: 2,
            name: "c-2".into(),
            left: 2,
            duration: Some(Duration::from_secs(60)),
            ..State::default()
        };
        // Nothing ran yet: the plan's duration for every point.
        assert_eq!(s.eta(), Some(Duration::from_secs(180)));
        s.took.push(Duration::from_secs(70));
        s.point_started = Some(Instant::now());
        let eta = s.eta().unwrap();
        assert!(
            eta <= Duration::from_secs(200) && eta > Duration::from_secs(195),
            "{eta:?}"
        );
        assert!(
            s.message()
                .starts_with("point 2/4 c-2 · 0 running · 0 failed · ETA 3m")
        );
        s.duration = None;
        s.took.clear();
        assert_eq!(s.eta(), None);
        s.connecting = Some((120, 3, 377));
        assert_eq!(
            s.message(),
            "point 2/4 c-2 · connecting: 120/500 hosts connected · 3 failed · 377 pending"
        );
    }
}
