//! Asking the user for a password through the shim whose command needs it: the master
//! has no terminal, but the shim usually does (or has a password file), as an ssh askpass
//! helper would.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::link::LinkSender;
use crate::proto::{Frame, MASTER, Message, Secret};

/// Asks one shim. Cheap to clone; questions are answered in order.
#[derive(Clone, Default)]
pub struct Prompter {
    shim: Option<LinkSender>,
    waiting: Arc<Mutex<VecDeque<oneshot::Sender<Option<Secret>>>>>,
}

impl Prompter {
    /// Asks the shim behind `to`.
    pub fn for_shim(to: LinkSender) -> Prompter {
        Prompter {
            shim: Some(to),
            waiting: Arc::default(),
        }
    }

    /// Nobody to ask: every question is answered with "no password".
    pub fn nobody() -> Prompter {
        Prompter::default()
    }

    /// Shows `text` to the user and returns what they typed; `None` if they could not be
    /// asked (no terminal, no password file) or went away.
    pub async fn ask(&self, text: String) -> Option<Secret> {
        let shim = self.shim.as_ref()?;
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(tx);
        shim.send(Frame::new(MASTER, Message::Prompt { text }))
            .ok()?;
        rx.await.ok().flatten()
    }

    /// The shim's answer to the oldest open question.
    pub fn answer(&self, secret: Option<Secret>) {
        let next = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        if let Some(tx) = next {
            let _ = tx.send(secret);
        }
    }
}
