//! One attempt to make a context, as the sessions waiting for it share it: who is asked
//! when its ssh (or sudo) has a question, and what its ssh says while connecting.
//!
//! A ControlMaster's first connection is an ordinary ssh on the user's terminal, so the
//! user sees every prompt and warning. The master's ssh has no terminal; instead:
//!
//! * its questions come through mitossh's askpass helper and go to one waiting shim
//!   that can ask a person — the first that joined; if it goes away, the next. With
//!   nobody left the attempt is abandoned (its ssh killed), so ssh never answers a
//!   password prompt with an empty password;
//! * its stderr lines are kept and shown to every waiting shim. They are *held* until a
//!   prompt is about to be shown or the attempt ends (success, or ssh's own failure), and
//!   dropped if mitossh cannot serve the host and the shim falls back to the real ssh,
//!   which will say it all again. With `-v` they are shown as they come;
//! * time spent waiting for a person does not count against the connect timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::prompt::Prompter;
use crate::proto::{PromptKind, Secret};

/// At most this much of ssh's output is kept for the waiting shims.
const MAX_TRANSCRIPT: usize = 256 * 1024;

/// How long a prompt waits for ssh's earlier output to be read off its pipe.
const FLUSH_BOUND: Duration = Duration::from_secs(2);

/// Asks the stderr reader to pass on everything ssh wrote so far; answered when done.
pub(crate) type FlushRequest = oneshot::Sender<()>;

pub(crate) struct Attempt {
    /// A mutex, not a task: several tasks (sessions, the askpass handler, the stderr
    /// reader) touch it briefly, none holds it across an await.
    state: Mutex<State>,
    /// Cancelled when a question found nobody to answer it: the attempt gives up.
    pub abandoned: CancellationToken,
    /// How many questions wait for a person right now (the connect clock stops meanwhile).
    prompting: watch::Sender<usize>,
    flush: Mutex<Option<mpsc::UnboundedSender<FlushRequest>>>,
}

#[derive(Default)]
struct State {
    /// The waiting shims, in the order they came.
    askers: Vec<Prompter>,
    lines: Vec<Bytes>,
    /// `lines[..shown]` went to every asker.
    shown: usize,
    size: usize,
    /// Lines are shown as they come (`-v`).
    live: bool,
}

impl Attempt {
    pub(crate) fn new(live: bool) -> Arc<Attempt> {
        Arc::new(Attempt {
            state: Mutex::new(State {
                live,
                ..State::default()
            }),
            abandoned: CancellationToken::new(),
            prompting: watch::channel(0).0,
            flush: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session waits for this attempt: it sees what was shown so far, and may be asked.
    pub(crate) fn join(&self, prompter: &Prompter) {
        let mut state = self.lock();
        for line in &state.lines[..state.shown] {
            prompter.say(line);
        }
        state.askers.push(prompter.clone());
    }

    /// A line ssh wrote (already bounded and sanitised).
    pub(crate) fn say(&self, line: &[u8]) {
        let mut state = self.lock();
        if state.size + line.len() > MAX_TRANSCRIPT {
            return;
        }
        state.size += line.len();
        state.lines.push(Bytes::copy_from_slice(line));
        if state.live {
            show(&mut state);
        }
    }

    /// Shows what is held to every waiting shim.
    pub(crate) fn show(&self) {
        show(&mut self.lock());
    }

    /// Where the stderr reader takes requests to pass on what ssh wrote so far.
    pub(crate) fn flush_requests(&self) -> mpsc::UnboundedReceiver<FlushRequest> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.flush.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// Waits (bounded) until the stderr reader has passed on what ssh wrote so far, then
    /// shows it: ssh's "Permission denied, please try again." comes before its next prompt.
    async fn flush(&self) {
        let sender = self.flush.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(tx) = sender {
            let (done, wait) = oneshot::channel();
            if tx.send(done).is_ok() {
                let _ = tokio::time::timeout(FLUSH_BOUND, wait).await;
            }
        }
        self.show();
    }

    /// Asks the first waiting shim that can answer, then the next if that one went away.
    /// For ssh's questions only a shim with a person at it counts; a become password may
    /// also come from a shim's password file. `None`: nobody answered.
    pub(crate) async fn ask(&self, text: &str, kind: PromptKind) -> Option<Secret> {
        if matches!(kind, PromptKind::Ssh { .. }) {
            self.flush().await;
        }
        self.prompting.send_modify(|n| *n += 1);
        let _done = Finally(|| self.prompting.send_modify(|n| *n -= 1));
        let mut tried = 0;
        loop {
            let next = {
                let state = self.lock();
                state.askers[tried.min(state.askers.len())..]
                    .iter()
                    .position(|p| match kind {
                        PromptKind::Ssh { .. } => p.can_prompt(),
                        PromptKind::Become => true,
                    })
                    .map(|i| (tried + i, state.askers[tried + i].clone()))
            };
            let (index, prompter) = next?;
            if let Some(answer) = prompter.ask(text.to_string(), kind).await {
                return Some(answer);
            }
            tried = index + 1;
        }
    }

    /// Resolves once `timeout` has passed in which nobody was being asked anything.
    pub(crate) async fn expired(&self, timeout: Duration) {
        let mut prompting = self.prompting.subscribe();
        let mut left = timeout;
        loop {
            while *prompting.borrow_and_update() > 0 {
                if prompting.changed().await.is_err() {
                    return;
                }
            }
            let started = tokio::time::Instant::now();
            tokio::select! {
                _ = tokio::time::sleep(left) => return,
                changed = prompting.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    left = left.saturating_sub(started.elapsed());
                }
            }
        }
    }
}

fn show(state: &mut State) {
    for line in &state.lines[state.shown..] {
        for asker in &state.askers {
            asker.say(line);
        }
    }
    state.shown = state.lines.len();
}

/// Runs a closure when dropped (the prompting count must fall even if the ask is cancelled).
struct Finally<F: FnMut()>(F);

impl<F: FnMut()> Drop for Finally<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link;
    use crate::proto::{Frame, Message};
    use futures::StreamExt;

    /// A prompter whose shim is a duplex pipe we read.
    fn shim(can_prompt: bool) -> (Prompter, link::LinkReader<tokio::io::DuplexStream>) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (tx, _writer) = link::spawn_writer(a);
        (Prompter::for_shim(tx, can_prompt), link::reader(b))
    }

    async fn next(r: &mut link::LinkReader<tokio::io::DuplexStream>) -> Message {
        r.next().await.unwrap().unwrap().msg
    }

    #[tokio::test]
    async fn lines_are_held_until_a_prompt_and_late_joiners_see_them() {
        let attempt = Attempt::new(false);
        let (first, mut first_rx) = shim(true);
        attempt.join(&first);
        attempt.say(b"Banner text");
        let asking = {
            let attempt = attempt.clone();
            tokio::spawn(async move { attempt.ask("pw: ", PromptKind::Ssh { echo: false }).await })
        };
        assert_eq!(
            next(&mut first_rx).await,
            Message::Diagnostic {
                text: b"Banner text".to_vec()
            }
        );
        assert!(matches!(next(&mut first_rx).await, Message::Prompt { .. }));
        first.answer(Some(Secret::new(b"x".to_vec())));
        assert_eq!(asking.await.unwrap().unwrap().expose(), b"x");

        let (late, mut late_rx) = shim(true);
        attempt.join(&late);
        assert!(matches!(
            next(&mut late_rx).await,
            Message::Diagnostic { .. }
        ));
        let _ = Frame::new(0, Message::Shutdown);
    }

    #[tokio::test]
    async fn a_shim_that_goes_away_passes_the_question_on() {
        let attempt = Attempt::new(false);
        let (no_tty, _r0) = shim(false);
        let (gone, mut gone_rx) = shim(true);
        let (next_one, mut next_rx) = shim(true);
        for p in [&no_tty, &gone, &next_one] {
            attempt.join(p);
        }
        let asking = {
            let attempt = attempt.clone();
            tokio::spawn(async move { attempt.ask("pw: ", PromptKind::Ssh { echo: false }).await })
        };
        assert!(matches!(next(&mut gone_rx).await, Message::Prompt { .. }));
        gone.close();
        assert!(matches!(next(&mut next_rx).await, Message::Prompt { .. }));
        next_one.close();
        assert_eq!(asking.await.unwrap(), None, "nobody left to answer");
    }

    #[tokio::test(start_paused = true)]
    async fn the_connect_clock_stops_while_a_person_is_asked() {
        let attempt = Attempt::new(false);
        let (p, mut rx) = shim(true);
        attempt.join(&p);
        let clock = {
            let attempt = attempt.clone();
            tokio::spawn(async move {
                let t = tokio::time::Instant::now();
                attempt.expired(Duration::from_secs(10)).await;
                t.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_secs(4)).await;
        let asking = {
            let attempt = attempt.clone();
            tokio::spawn(async move { attempt.ask("pw: ", PromptKind::Ssh { echo: false }).await })
        };
        assert!(matches!(next(&mut rx).await, Message::Prompt { .. }));
        tokio::time::sleep(Duration::from_secs(30)).await;
        p.answer(None);
        asking.await.unwrap();
        let elapsed = clock.await.unwrap();
        assert!(elapsed >= Duration::from_secs(40), "{elapsed:?}");
    }
}
