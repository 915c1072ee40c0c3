//! `mitossh proxy --context ID HOST PORT`: a TCP connection made by context ID's agent,
//! on this process's stdin and stdout. The master uses it as the ProxyCommand of an ssh
//! that reaches a host through another (`--via`), like `ssh -W` through that host.

use std::path::PathBuf;

use crate::client::{self, MasterConn, Stdio};
use crate::paths;
use crate::proto::{ContextId, Endpoint, Request, SSH_ERROR};

/// Runs `mitossh proxy` with the master at `socket` (else `$MITOSSH_SOCKET`, else the
/// default); returns the exit status, ssh's own (255) for its failures.
pub fn main(socket: Option<PathBuf>, ctx: ContextId, host: String, port: u16) -> i32 {
    let socket = match paths::socket_or_default(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mitossh: {e}");
            return SSH_ERROR;
        }
    };
    let mut conn = match MasterConn::connect(&socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "mitossh proxy: cannot reach the master at {}: {e}",
                socket.display()
            );
            return SSH_ERROR;
        }
    };
    let request = Request::Proxy {
        ctx,
        endpoint: Endpoint { host, port },
    };
    let opened = Stdio::ours(false)
        .map_err(|e| client::NotOpened::local(format!("mitossh proxy: {e}")))
        .and_then(|stdio| client::open(&mut conn, request, &stdio.raw(), None));
    if let Err(e) = opened {
        eprintln!("{}", e.message);
        return e.exit_code;
    }
    client::release_stdin_stdout();
    client::wait_exit(&mut conn)
}
