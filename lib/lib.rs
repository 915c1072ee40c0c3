//! mitossh: every tool that speaks `ssh host command` tunnels through one connection per
//! host, held by a master process, with agents bootstrapped over that connection.
//!
//! See `ARCHITECTURE.md` for the map of modules and their invariants.

// Everything `unsafe` is in `sys`, behind safe wrappers; nowhere else may have any.
#![deny(unsafe_code)]
// Modules are private and the public surface is the list below, so the compiler reports
// what nothing uses, and what is public is public on purpose.
#![warn(unreachable_pub)]

/// This build's version as master and agent say it in `Hello`: the package version and a
/// hash of the sources (see `build.rs`). A master talks only to agents of its own build.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("MITOSSH_BUILD"));

mod agent;
mod askpass;
mod bootstrap;
mod client;
mod config;
mod control;
mod credit;
mod daemon;
mod env;
mod guard;
mod link;
mod logging;
mod master;
mod method;
mod paths;
pub mod proto;
mod pump;
mod route;
mod run;
mod shim;
mod sshargs;
mod sshconfig;
mod sys;
mod throttle;
mod untrusted;

// The programs. `bins/` and `shims/` are thin `main`s over these: argument parsing (clap)
// or none, then one call that returns the exit status.
pub use agent::{Options as AgentOptions, main as agent};
pub use askpass::{invoked as askpass_prompt, main as askpass};
pub use config::parse_duration;
pub use control::{status, stop, tree};
pub use env::{Options as EnvOptions, run as env};
pub use logging::{
    init as init_logging, init_agent as init_agent_logging, init_shim as init_shim_logging,
};
pub use master::{Options as ServeOptions, main as serve};
pub use run::{
    Args as RunArgs, Overrides as RunOverrides, PlanSource as RunPlan, Show as RunShow, main as run,
};
pub use shim::proxy::main as proxy;
pub use shim::ssh::main as ssh;
pub use shim::wrap::main as wrap;

// For the tests and benches: the wire protocol (`proto`); the agent images, their
// architectures and names on a host, which the hostile agent needs to pass for an agent;
// a child's setup before exec.
pub use bootstrap::image::{AgentImage, Arch, cache_name, content_hash};
pub use master::window::DEFAULT_WINDOW as DEFAULT_CONNECT_WINDOW;
pub use sys::spawn::ChildSetup;
