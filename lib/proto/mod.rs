//! The wire protocol spoken on every mitossh link: master ↔ agent, agent ↔ agent and
//! shim ↔ master. See `docs/PROTOCOL.md` for the prose description.
//!
//! - [`frame`]: length-delimited frames, the only thing that touches raw bytes;
//! - [`message`]: the typed messages a frame carries;
//! - [`flow`]: per-stream credit accounting, pure state machines.

pub(crate) mod flow;
pub(crate) mod frame;
mod message;

pub use flow::DEFAULT_WINDOW;
pub use frame::{Frame, FrameCodec, FrameError, MAX_DATA, MAX_FRAME, encode_into};
pub use message::*;
