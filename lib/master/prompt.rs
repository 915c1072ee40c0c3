//! Asking the user through the shim whose call needs an answer: the master has no
//! terminal, but the shim usually does (or a password file for become passwords), as an
//! ssh askpass helper would.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::link::LinkSender;
use crate::proto::{Frame, MASTER, Message, PromptKind, Secret};

/// One waiting shim: questions go to it and are answered in order; what the master's ssh
/// says while connecting is passed on to it. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Prompter {
    shim: Option<LinkSender>,
    /// A person can answer there (the shim has a terminal or the user's askpass).
    can_prompt: bool,
    /// Shared by the clones; a mutex because the session task and the attempt's tasks
    /// both use it.
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<oneshot::Sender<Option<Secret>>>,
    /// The shim is gone: every question is answered with `None` from now on.
    closed: bool,
}

impl Prompter {
    /// Asks the shim behind `to`.
    pub(crate) fn for_shim(to: LinkSender, can_prompt: bool) -> Prompter {
        Prompter {
            shim: Some(to),
            can_prompt,
            state: Arc::default(),
        }
    }

    /// Whether a person could answer what ssh asks.
    pub(crate) fn can_prompt(&self) -> bool {
        self.can_prompt && !self.is_closed()
    }

    fn is_closed(&self) -> bool {
        self.shim.is_none() || self.lock().closed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Shows `text` to the user and returns what they typed; `None` if they could not be
    /// asked (no terminal, no password file) or went away.
    pub(crate) async fn ask(&self, text: String, kind: PromptKind) -> Option<Secret> {
        let shim = self.shim.as_ref()?;
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.lock();
            if state.closed {
                return None;
            }
            state.waiting.push_back(tx);
        }
        shim.send(Frame::new(MASTER, Message::Prompt { text, kind }))
            .ok()?;
        rx.await.ok().flatten()
    }

    /// The shim's answer to the oldest open question.
    pub(crate) fn answer(&self, secret: Option<Secret>) {
        let next = self.lock().waiting.pop_front();
        if let Some(tx) = next {
            let _ = tx.send(secret);
        }
    }

    /// Passes on a line of what the master's ssh said.
    pub(crate) fn say(&self, text: &[u8]) {
        if let Some(shim) = &self.shim {
            let text = text.to_vec();
            let _ = shim.send(Frame::new(MASTER, Message::Diagnostic { text }));
        }
    }

    /// The shim is gone: open and future questions get `None`, so whoever asked moves on.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        for tx in state.waiting.drain(..) {
            let _ = tx.send(None);
        }
    }
}
