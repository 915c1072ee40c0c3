//! mitossh: every tool that speaks `ssh host command` tunnels through one connection per
//! host, held by a master process, with agents bootstrapped over that connection.
//!
//! See `ARCHITECTURE.md` for the map of modules and their invariants.

pub mod proto;
