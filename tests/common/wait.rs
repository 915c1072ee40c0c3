//! Bounded waiting for integration tests: poll a condition until a deadline, run a command with a time limit,
//! and make unique markers to tag remote commands with. Nothing here sleeps as a means of synchronisation:
//! every wait is for an event and fails the test with a clear message when the deadline passes.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often bounded waits re-check their condition.
pub const POLL: Duration = Duration::from_millis(10);

/// Takes an exclusive flock on `file`, waiting at most `timeout` for whoever holds it
/// (`what` names the lock in the failure). The lock lasts as long as the returned value.
pub fn lock_within(
    file: std::fs::File,
    timeout: Duration,
    what: &str,
) -> nix::fcntl::Flock<std::fs::File> {
    use nix::fcntl::{Flock, FlockArg};
    let mut file = Some(file);
    let mut locked = None;
    wait_until(timeout, what, || {
        match Flock::lock(
            file.take().expect("unlocked"),
            FlockArg::LockExclusiveNonblock,
        ) {
            Ok(lock) => locked = Some(lock),
            Err((unlocked, _)) => file = Some(unlocked),
        }
        locked.is_some()
    });
    locked.expect("locked")
}

/// Polls `cond` until it returns true; panics with `what` if that takes longer than `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(POLL);
    }
}

/// A token unique across threads, processes and runs, for tagging remote commands (`echo <marker>`,
/// `exec -a <marker> sleep 60`) so that a test can find exactly its own processes and output.
pub fn unique_marker() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("mitossh-mark-{}-{nanos:x}-{n}", std::process::id())
}

/// Runs `cmd` with `stdin` as its input and returns its output, like [`Command::output`] but bounded:
/// if it has not exited within `timeout` it is killed and the test fails showing what it printed so far.
/// Also fails if its stdout/stderr stay open after it exited (a background process it left holds them).
pub fn output_within(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    // A command that exits without reading its input gives EPIPE here: not an error for the caller.
    thread::spawn(move || drop(input.write_all(&stdin)));
    let stdout = read_in_background(child.stdout.take().expect("piped stdout"));
    let stderr = read_in_background(child.stderr.take().expect("piped stderr"));

    let status = loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            let out = stdout
                .recv_timeout(Duration::from_secs(1))
                .unwrap_or_default();
            let err = stderr
                .recv_timeout(Duration::from_secs(1))
                .unwrap_or_default();
            panic!(
                "{cmd:?} did not finish within {timeout:?}; killed it.\nstdout so far:\n{}\nstderr so far:\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        thread::sleep(POLL);
    };
    let collect = |rx: mpsc::Receiver<Vec<u8>>, name: &str| {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!("{cmd:?} exited ({status}) but its {name} stayed open: a background process it started holds it")
        })
    };
    let stdout = collect(stdout, "stdout");
    let stderr = collect(stderr, "stderr");
    Output {
        status,
        stdout,
        stderr,
    }
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        pipe.read_to_end(&mut buf).ok();
        tx.send(buf).ok();
    });
    rx
}

/// Waits (bounded) for a child to exit; panics with `what` if it does not.
pub fn wait_child(
    child: &mut std::process::Child,
    timeout: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(timeout, what, || {
        status = child.try_wait().expect("waitpid");
        status.is_some()
    });
    status.expect("exited")
}
