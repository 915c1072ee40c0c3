//! Shared integration-test harness: a real private `sshd` and test user (`sshd`), process inspection for
//! leak tests (`procs`), and bounded waits (`wait`). Include it from a test file with `mod common;`.

// Each test binary uses its own subset of the harness.
#![allow(dead_code, unused_imports)]

pub mod procs;
pub mod sshd;
pub mod wait;

pub use procs::*;
pub use sshd::*;
pub use wait::*;
pub mod master;
pub use master::*;
pub mod files;
pub use files::*;
pub mod escalation;
pub use escalation::*;
pub mod terminal;
pub use terminal::*;
pub mod tmux;
pub use tmux::*;
pub mod ansible;
pub use ansible::*;
pub mod helpers;
pub use helpers::*;
pub mod agents;
pub use agents::*;
pub mod wan;
pub use wan::*;
pub mod rootfs;
pub use rootfs::*;
