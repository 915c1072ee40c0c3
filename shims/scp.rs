//! The `scp` shim: the real scp, with the mitossh `ssh` shim as its transport.

#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    let code = mitossh::wrap("scp", std::env::args_os().skip(1).collect());
    std::process::ExitCode::from(code as u8)
}
