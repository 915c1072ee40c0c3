//! The shims: drop-in `ssh`, `scp` and `sftp` that route through a mitossh master.
//!
//! - [`args`]: OpenSSH's command-line grammar;
//! - [`ssh`]: the `ssh` shim;
//! - [`wrap`]: `scp` and `sftp`, which run the real programs with `-S <ssh shim>`;
//! - [`client`]: the connection to the master and the stdio relay;
//! - [`tty`]: the local terminal under `-t`.

pub mod args;
pub mod client;
pub mod ssh;
pub mod tty;
pub mod wrap;
