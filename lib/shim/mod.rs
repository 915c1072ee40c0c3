//! The shims: drop-in `ssh`, `scp` and `sftp` that route through a mitossh master.
//!
//! - [`ssh`]: the `ssh` shim, which carries out what [`decide`] makes of its command line;
//! - [`wrap`]: `scp` and `sftp`, which run the real programs with `-S <ssh shim>`;
//! - [`proxy`]: `mitossh proxy`, the ProxyCommand for hosts reached through another;
//! - [`forward`]: `-W` and `-L`, TCP connections made by the context's agent;
//! - [`signals`]: ending a session on a signal as ssh does, and window-size changes.
//!
//! OpenSSH's command line is [`crate::sshargs`]; the connection to the master, the
//! descriptor hand-over and the answers to its questions are [`crate::client`].

pub(crate) mod decide;
pub(crate) mod forward;
pub(crate) mod proxy;
pub(crate) mod signals;
pub(crate) mod ssh;
pub(crate) mod wrap;
