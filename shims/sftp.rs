//! The `sftp` shim: the real sftp, with the mitossh `ssh` shim as its transport.

#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    let code = mitossh::wrap("sftp", std::env::args_os().skip(1).collect());
    std::process::ExitCode::from(code as u8)
}
