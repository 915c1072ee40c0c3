//! Thin wrappers over the operating system: non-blocking descriptors, process control,
//! signals, resource limits, memory and user accounts. Everything `unsafe` in mitossh lives here.

pub mod adopt;
pub mod fdio;
pub mod limits;
pub mod memory;
pub mod passfd;
pub mod process;
pub mod splice;
pub mod user;
