//! Thin wrappers over the operating system: non-blocking descriptors, descriptor passing,
//! process control and signals, resource limits, a child's setup before exec, starting
//! programs without fork's copy, terminals,
//! memory files, the allocator, pipe sizes within a budget, splicing between pipes and
//! sockets, a timer finer than tokio's, randomness and accounts. Everything `unsafe` in mitossh lives here (the crate denies it elsewhere);
//! each wrapper is safe to call, and says what it relies on.
//!
//! Knows nothing of mitossh: no protocol types, only the kernel's.
#![allow(unsafe_code)]

pub(crate) mod adopt;
pub(crate) mod fdio;
pub(crate) mod limits;
pub(crate) mod mem;
pub(crate) mod memfd;
pub(crate) mod memory;
pub(crate) mod passfd;
pub(crate) mod pipesize;
pub(crate) mod process;
pub(crate) mod random;
pub(crate) mod spawn;
pub(crate) mod splice;
pub(crate) mod stdio;
pub(crate) mod term;
pub(crate) mod timer;
pub(crate) mod user;
pub(crate) mod vfork;
