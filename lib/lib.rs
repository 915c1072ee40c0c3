//! mitossh: every tool that speaks `ssh host command` tunnels through one connection per
//! host, held by a master process, with agents bootstrapped over that connection.
//!
//! See `ARCHITECTURE.md` for the map of modules and their invariants.

// Everything `unsafe` is in `sys`, behind safe wrappers; nowhere else may have any.
#![deny(unsafe_code)]

pub mod agent;
pub mod askpass;
pub mod bootstrap;
pub mod config;
pub mod control;
pub mod credit;
pub mod daemon;
pub mod env;
pub mod guard;
pub mod link;
pub mod logging;
pub mod master;
pub mod method;
pub mod paths;
pub mod proto;
pub mod pump;
pub mod route;
pub mod run;
pub mod shim;
pub mod sshconfig;
pub mod sys;
pub mod untrusted;

pub use sys::spawn::ChildSetup;
