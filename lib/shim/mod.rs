//! The shims: drop-in `ssh`, `scp` and `sftp` that route through a mitossh master.
//!
//! - [`args`]: OpenSSH's command-line grammar;
//! - [`ssh`]: the `ssh` shim;
//! - [`wrap`]: `scp` and `sftp`, which run the real programs with `-S <ssh shim>`;
//! - [`target`]: named contexts, `--become`/`--via`, a leading `sudo` in the command;
//! - [`client`]: the connection to the master and the descriptor hand-over;
//! - [`askpass`]: answering password questions (file or terminal);
//! - [`proxy`]: `mitossh proxy`, the ProxyCommand for hosts reached through another;
//! - [`forward`]: `-W` and `-L`, TCP connections made by the context's agent;
//! - [`tty`]: the local terminal under `-t`;
//! - [`signals`]: ending a session on a signal as ssh does, and window-size changes.

pub(crate) mod args;
pub(crate) mod askpass;
pub(crate) mod client;
pub(crate) mod forward;
pub(crate) mod proxy;
pub(crate) mod signals;
pub(crate) mod ssh;
pub(crate) mod target;
pub(crate) mod tty;
pub(crate) mod wrap;
