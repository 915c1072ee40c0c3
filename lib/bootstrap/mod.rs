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

pub mod image;
pub mod ssh;
pub mod stage1;

/// Marker line: stage 1 wants the image.
pub const UPLOAD_MARKER: &str = "MITOSSH-UPLOAD";
/// Marker line: the agent runs; frames follow the newline.
pub const READY_MARKER: &str = "MITOSSH-READY";
