//! Thin wrappers over the operating system: non-blocking descriptors, descriptor passing,
//! process control and signals, a child's setup before exec, terminals, memory files,
//! randomness and accounts. Everything `unsafe` in mitossh lives here (the crate denies
//! it elsewhere); each wrapper is safe to call, and says what it relies on.
//!
//! Knows nothing of mitossh: no protocol types, only the kernel's.
#![allow(unsafe_code)]

pub mod adopt;
pub mod fdio;
pub mod mem;
pub mod memfd;
pub mod passfd;
pub mod process;
pub mod random;
pub mod spawn;
pub mod stdio;
pub mod term;
pub mod user;
