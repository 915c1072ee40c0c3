//! `mitossh-agent`: the remote side, uploaded by a master over ssh (or started by another
//! agent through sudo, su or doas). Only what runs remotely is linked in: no argument
//! parser, no configuration, no shim, no `mitossh run`; the master's own binary never
//! runs remotely.

#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match mitossh::AgentOptions::parse(&args) {
        Ok(opts) => {
            mitossh::init_agent_logging();
            mitossh::agent(opts)
        }
        Err(e) => {
            eprintln!("mitossh-agent: {e}");
            2
        }
    };
    std::process::ExitCode::from(code as u8)
}
