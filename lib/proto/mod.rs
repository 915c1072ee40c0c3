//! The wire protocol spoken on every mitossh link: master ↔ agent, agent ↔ agent and
//! shim ↔ master. See `docs/PROTOCOL.md` for the prose description.
//!
//! - [`frame`]: length-delimited frames, the only thing that touches raw bytes;
//! - [`message`]: the typed messages a frame carries;
//! - [`flow`]: per-stream credit accounting, pure state machines.
//!
//! The encoding is postcard's, so the declaration order of every enum here is part of the
//! protocol (append-only, `PROTOCOL_VERSION` bumped on change); a unit test pins it.

pub(crate) mod flow;
pub(crate) mod frame;
mod message;

#[cfg(test)]
mod encoding;

pub use flow::DEFAULT_WINDOW;
pub use frame::{Frame, FrameCodec, FrameError, MAX_DATA, MAX_FRAME, encode_into};
pub use message::*;
