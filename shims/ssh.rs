//! The `ssh` shim: OpenSSH's `ssh` command line, run through a mitossh master.

#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    if std::env::var_os("MITOSSH_LOG").is_some() {
        mitossh::init_shim_logging();
    }
    let code = mitossh::ssh(std::env::args_os().skip(1).collect());
    std::process::ExitCode::from(code as u8)
}
