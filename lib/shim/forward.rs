//! Port forwarding through a context: `-W host:port` (stdio) and `-L` (local listeners).
//!
//! Each forwarded connection is a stream of its own on the context, a TCP connection the
//! agent opens on the far host; the shim hands the master the local socket (or its own
//! stdin/stdout for `-W`) exactly as it hands over stdio for a command.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::client::{self, MasterConn};
use crate::proto::{Caller, Endpoint, OpenSpec, Request, Target};

/// A `-L [bind_address:]port:host:hostport` forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalForward {
    /// `None`: loopback only, as ssh without GatewayPorts.
    pub bind: Option<String>,
    pub port: u16,
    pub to: Endpoint,
}

/// Parses `host:port` as `-W` takes it (`[v6addr]:port` allowed).
pub(crate) fn parse_endpoint(spec: &str) -> Option<Endpoint> {
    let mut fields = split_fields(spec)?;
    if fields.len() != 2 {
        return None;
    }
    let port = fields.pop()?.parse().ok()?;
    let host = fields.pop()?;
    (!host.is_empty()).then_some(Endpoint { host, port })
}

/// Parses a `-L` argument, or a `LocalForward` value (`[bind:]port host:hostport`).
/// Unix-socket forms are not supported (`None`).
pub(crate) fn parse_local(spec: &str) -> Option<LocalForward> {
    let spec = spec.trim().replacen(char::is_whitespace, ":", 1);
    let mut fields = split_fields(&spec)?;
    let bind = match fields.len() {
        3 => None,
        4 => Some(fields.remove(0)),
        _ => return None,
    };
    let port = fields[0].parse().ok()?;
    let to = Endpoint {
        host: fields[1].clone(),
        port: fields[2].parse().ok()?,
    };
    (!to.host.is_empty()).then_some(LocalForward { bind, port, to })
}

/// Splits at colons outside `[...]`, removing the brackets.
fn split_fields(spec: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut bracket = false;
    for c in spec.chars() {
        match c {
            '[' if current.is_empty() && !bracket => bracket = true,
            ']' if bracket => bracket = false,
            ':' if !bracket => fields.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    if bracket {
        return None;
    }
    fields.push(current);
    Some(fields)
}

/// Where a forward listens: loopback unless a bind address is given (`*` or empty: all).
fn listen_addrs(fwd: &LocalForward) -> Vec<SocketAddr> {
    let host = match fwd.bind.as_deref() {
        None | Some("localhost") => {
            return vec![
                SocketAddr::from(([127, 0, 0, 1], fwd.port)),
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, fwd.port)),
            ];
        }
        Some("" | "*") => "0.0.0.0",
        Some(h) => h,
    };
    (host, fwd.port)
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default()
}

/// Binds every forward and serves each in a thread of its own. Failures are reported as
/// ssh reports them; returns false if none could be bound (for ExitOnForwardFailure).
pub(crate) fn start(forwards: &[LocalForward], socket: &Path, target: &Target) -> bool {
    let mut all_bound = true;
    for fwd in forwards {
        let mut bound = false;
        for addr in listen_addrs(fwd) {
            match TcpListener::bind(addr) {
                Ok(listener) => {
                    bound = true;
                    let (socket, target, to) =
                        (socket.to_path_buf(), target.clone(), fwd.to.clone());
                    std::thread::spawn(move || serve(listener, socket, target, to));
                }
                // The IPv6 loopback may simply not exist; only IPv4 failing counts.
                Err(e) if addr.is_ipv6() && fwd.bind.is_none() => {
                    tracing::debug!("bind {addr}: {e}");
                }
                Err(e) => eprintln!("bind [{}]:{}: {e}", addr.ip(), addr.port()),
            }
        }
        if !bound {
            eprintln!(
                "channel_setup_fwd_listener_tcpip: cannot listen to port: {}",
                fwd.port
            );
            eprintln!("Could not request local forwarding.");
            all_bound = false;
        }
    }
    all_bound
}

fn serve(listener: TcpListener, socket: PathBuf, target: Target, to: Endpoint) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let (socket, target, to) = (socket.clone(), target.clone(), to.clone());
        std::thread::spawn(move || {
            let Ok(mut master) = MasterConn::connect(&socket) else {
                return;
            };
            let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") else {
                return;
            };
            let spec = OpenSpec {
                connect: Some(to.clone()),
                ..OpenSpec::default()
            };
            let fd = conn.as_raw_fd();
            let request = Request::Session {
                target,
                spec,
                caller: Caller::default(),
            };
            match client::open(&mut master, request, &[fd, fd, null.as_raw_fd()], None) {
                Ok(()) => {
                    drop(conn);
                    client::wait_exit(&mut master);
                }
                Err(e) => eprintln!(
                    "channel: open failed: connect to {}:{}: {}",
                    to.host, to.port, e.message
                ),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn parses_w_specs() {
        assert_eq!(parse_endpoint("db1:5432"), Some(ep("db1", 5432)));
        assert_eq!(parse_endpoint("[::1]:22"), Some(ep("::1", 22)));
        assert_eq!(parse_endpoint("db1"), None);
        assert_eq!(parse_endpoint(":22"), None);
        assert_eq!(parse_endpoint("db1:http"), None);
    }

    #[test]
    fn parses_l_specs() {
        assert_eq!(
            parse_local("8080:localhost:80"),
            Some(LocalForward {
                bind: None,
                port: 8080,
                to: ep("localhost", 80)
            })
        );
        assert_eq!(
            parse_local("*:8080:[fe80::1]:80"),
            Some(LocalForward {
                bind: Some("*".into()),
                port: 8080,
                to: ep("fe80::1", 80)
            })
        );
        // LocalForward's own syntax.
        assert_eq!(
            parse_local("127.0.0.1:5000 db:5432"),
            Some(LocalForward {
                bind: Some("127.0.0.1".into()),
                port: 5000,
                to: ep("db", 5432)
            })
        );
        assert_eq!(parse_local("/tmp/sock:host:80"), None);
        assert_eq!(parse_local("8080:/run/app.sock"), None);
    }
}
