//! Starting a child context from an agent: another user on this host (`sudo`, `su`,
//! `doas`), an ssh connection made from this host, or something entered by a command
//! prefix on this host (a container, a chroot, a namespace).
//!
//! - [`escalate`]: the become methods, each run with a pty as nothing but its controlling
//!   terminal (for its prompt), while the new agent speaks over a socket;
//! - [`dialect`]: what those tools print, and what it means;
//! - [`ssh`]: ssh from the agent's host, with that host's configuration and keys;
//! - [`exec`]: a command prefix (`docker exec -i app`, `chroot DIR`) that runs stage 1
//!   inside, the image going over its pipe.
//!
//! Either way the new agent is this agent's own image. A become child runs it from a
//! descriptor, so nothing is written on the host; over ssh or an exec prefix the far side
//! has a filesystem of its own, and stage 1 caches the image there.

pub(crate) mod dialect;
pub(crate) mod escalate;
pub(crate) mod exec;
pub(crate) mod ssh;

use futures::future::BoxFuture;
use tokio::io::AsyncRead;

use crate::link::{LinkReader, LinkSender};
use crate::proto::{Hello, Secret};
use crate::sys::pipesize::PipeGrant;

/// How long a child has to start, password dialogue aside.
pub(crate) const SPAWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a password may take to arrive (a person typing it on a terminal).
pub(crate) const PASSWORD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

pub(crate) type BoxReader = Box<dyn AsyncRead + Send + Unpin>;

/// The program a child agent runs under, held only to be killed when dropped: become
/// methods need a terminal set up between fork and exec; ssh is started without fork
/// (`sys::vfork`).
#[derive(Debug)]
pub(crate) enum Process {
    Forked(tokio::process::Child),
    Spawned(crate::sys::vfork::Child),
}

impl Process {
    /// The pid, while it has not been reaped.
    pub(crate) fn id(&self) -> Option<u32> {
        match self {
            Process::Forked(c) => c.id(),
            Process::Spawned(c) => c.id(),
        }
    }

    pub(crate) async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Process::Forked(c) => c.wait().await,
            Process::Spawned(c) => c.wait().await,
        }
    }
}

/// A child agent that runs and has introduced itself.
pub(crate) struct Child {
    pub reader: LinkReader<BoxReader>,
    pub sender: LinkSender,
    /// sudo, su, doas, ssh or the exec prefix: killed when dropped.
    pub process: Process,
    pub hello: Hello,
    /// The growth of the link's pipes, if it made any: held as long as they are.
    pub pipes: [Option<PipeGrant>; 2],
}

/// Asks for the password of the account named; `None` when there is none to be had.
pub(crate) type AskPassword = Box<dyn FnMut(String) -> BoxFuture<'static, Option<Secret>> + Send>;

/// Why a child did not start. The text is one line for the user (the host and method are
/// added by the master) and never contains a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SpawnError {
    #[error("incorrect password")]
    Incorrect,
    #[error(
        "a password is needed and none was given (set MITOSSH_BECOME_PASSWORD_FILE or run from a terminal)"
    )]
    NoPassword,
    #[error("{0}")]
    Refused(String),
    #[error("no answer within {0}s")]
    Timeout(u64),
    #[error("{0}")]
    Failed(String),
}
