//! Getting an agent running at the far end of a pipe that only promises `/bin/sh`.
//!
//! - [`stage1`]: the one-line shell script that finds a cached agent or receives one;
//! - [`image`]: the agent binary itself (this executable), its hash, and running it
//!   from memory;
//! - [`ssh`]: the master's side, over the user's real `ssh` client.
//!
//! The exchange on the pipe, before frames start:
//!
//! ```text
//! master                         remote /bin/sh (stage 1)            agent
//!   ── ssh host "/bin/sh -c '…'" ─▶
//!                                 cached?  ── exec ─────────────────▶
//!                                 else  ◀── "MITOSSH-UPLOAD <nonce>"
//!   ── <size> bytes of image ────▶ stored in a private 0700 dir ─exec▶
//!                                                  ◀── "MITOSSH-READY <nonce> <version>"
//!   ◀═══════════════════════════ frames both ways ═══════════════════▶
//! ```

pub(crate) mod image;
pub(crate) mod ssh;
pub(crate) mod stage1;

use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncRead;

use crate::link::{LinkReader, LinkSender};
use crate::proto::{ContextId, Frame, Hello, Message, PROTOCOL_VERSION};

/// Marker line: stage 1 wants the image.
pub(crate) const UPLOAD_MARKER: &str = "MITOSSH-UPLOAD";
/// Marker line: the agent runs; frames follow the newline.
pub(crate) const READY_MARKER: &str = "MITOSSH-READY";

/// How long a new agent has to introduce itself once its ready marker arrived.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The first frames on a new link: tells the agent its id, and returns its own `Hello`.
/// Errors are one line for the user.
pub(crate) async fn handshake<R: AsyncRead + Unpin>(
    reader: &mut LinkReader<R>,
    writer: &LinkSender,
    ctx: ContextId,
) -> Result<Hello, String> {
    let _ = writer.send(Frame::new(
        ctx,
        Message::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").into(),
            ctx,
            pid: std::process::id(),
            user: crate::sys::user::Account::current().name,
            hostname: crate::sys::user::hostname(),
        }),
    ));
    let first = tokio::time::timeout(HELLO_TIMEOUT, reader.next()).await;
    match first {
        Ok(Some(Ok(Frame {
            msg: Message::Hello(mut h),
            ..
        }))) if h.protocol == PROTOCOL_VERSION => {
            // What an agent says about itself is shown to the user: clean it on arrival.
            crate::untrusted::clean_hello(&mut h);
            Ok(h)
        }
        Ok(Some(Ok(Frame {
            msg: Message::Hello(h),
            ..
        }))) => Err(format!(
            "the agent speaks protocol {} (mitossh {}), this side {} (mitossh {})",
            h.protocol,
            crate::untrusted::clean(&h.version, crate::untrusted::MAX_NAME),
            PROTOCOL_VERSION,
            env!("CARGO_PKG_VERSION")
        )),
        Ok(Some(Ok(f))) => Err(format!(
            "agent handshake failed: unexpected {}",
            f.msg.name()
        )),
        Ok(Some(Err(e))) => Err(format!("agent handshake failed: {e}")),
        Ok(None) => Err("agent handshake failed: the connection closed".into()),
        Err(_) => Err(format!(
            "agent handshake failed: no answer within {}s",
            HELLO_TIMEOUT.as_secs()
        )),
    }
}
