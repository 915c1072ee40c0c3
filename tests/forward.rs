//! Forwarding through a context: `ssh -W host:port` (also as another ssh's ProxyCommand)
//! and `ssh -L`, each connection made by the agent on the far host.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

/// A TCP server on loopback that answers each connection with what it received, after
/// the client half-closes.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let _ = conn.read_to_end(&mut got);
                let _ = conn.write_all(b"echo:");
                let _ = conn.write_all(&got);
            });
        }
    });
    port
}

#[test]
fn w_connects_stdio_to_a_port_on_the_far_side() {
    let sshd = Sshd::start();
    let master = Master::start();
    let port = echo_server();
    let out = output_within(
        master
            .ssh()
            .arg("-W")
            .arg(format!("127.0.0.1:{port}"))
            .args(sshd.ssh_args()),
        b"ping",
        T,
    );
    assert_eq!(
        out.stdout,
        b"echo:ping",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    // A port with nothing behind it: ssh's failure status and a message.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = output_within(
        master
            .ssh()
            .arg("-W")
            .arg(format!("127.0.0.1:{closed}"))
            .args(sshd.ssh_args()),
        b"",
        T,
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Connection refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn w_serves_as_another_ssh_s_proxy_command() {
    let sshd = Sshd::start();
    let master = Master::start();
    let cfg = sshd.ssh_config().display().to_string();
    // The real ssh reaches the host through a stream of the existing context.
    let proxy = format!(
        "{} -F {cfg} -W %h:%p {}",
        bin("ssh").display(),
        sshd.alias()
    );
    let out = output_within(
        master
            .command("/usr/bin/ssh")
            .args(["-F", &cfg, "-o"])
            .arg(format!("ProxyCommand={proxy}"))
            .arg(sshd.alias())
            .arg("echo through-$((2*21))"),
        b"",
        T,
    );
    assert_eq!(
        out.stdout,
        b"through-42\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two SSH connections: the context's and the proxied one.
    assert_eq!(sshd.accepted_connections(), 2);
}

#[test]
fn l_forwards_local_connections_through_the_context() {
    let sshd = Sshd::start();
    let master = Master::start();
    let port = echo_server();
    let local = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut fwd = master
        .ssh()
        .arg("-N")
        .arg("-L")
        .arg(format!("{local}:127.0.0.1:{port}"))
        .args(sshd.ssh_args())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(T, "the forward to listen", || {
        TcpStream::connect(("127.0.0.1", local)).is_ok()
    });
    for i in 0..5 {
        let mut conn = TcpStream::connect(("127.0.0.1", local)).unwrap();
        conn.set_read_timeout(Some(T)).unwrap();
        conn.write_all(format!("message {i}").as_bytes()).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = String::new();
        conn.read_to_string(&mut got).unwrap();
        assert_eq!(got, format!("echo:message {i}"));
    }
    fwd.kill().unwrap();
    fwd.wait().unwrap();
    assert_eq!(sshd.accepted_connections(), 1);
}
