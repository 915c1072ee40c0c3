mod common;
use common::*;
use std::time::Duration;

#[test]
fn echo_through_the_master() {
    let sshd = Sshd::start();
    let master = Master::start();
    let out = output_within(
        master
            .ssh()
            .args(sshd.ssh_args())
            .arg("echo hello; echo err >&2; exit 3"),
        b"",
        Duration::from_secs(30),
    );
    eprintln!("{}", master.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(3));
}
