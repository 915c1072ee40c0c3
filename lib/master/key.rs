//! Which invocations share a context, and the ssh command that opens one.
//!
//! Like an OpenSSH ControlMaster, a context is shared by every invocation for the same
//! user, host and port; unlike it, options that change *where* the connection goes
//! (config file, HostName, ProxyJump, ProxyCommand, bind address, address family, host key
//! alias) also separate contexts. Options that only affect authentication or timing do not:
//! an Ansible connection and Ansible's synchronize, which pass different ones, share one.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::bootstrap::ssh::SshCommand;
use crate::proto::Target;
use crate::shim::args::{self, Opt};

/// `-o` keywords (lower case) that change where a connection goes.
const ROUTING_KEYWORDS: &[&str] = &[
    "hostname",
    "proxyjump",
    "proxycommand",
    "bindaddress",
    "bindinterface",
    "addressfamily",
    "hostkeyalias",
];

/// Options the master always gives its ssh, ahead of the user's (ssh takes the first value
/// of an option): the connection carries one non-interactive session and nothing else.
const FORCED: &[&str] = &[
    "-T",
    "-oRequestTTY=no",
    "-oRemoteCommand=none",
    "-oSessionType=default",
    "-oStdinNull=no",
    "-oForkAfterAuthentication=no",
    "-oControlMaster=no",
    "-oClearAllForwardings=yes",
    "-oForwardX11=no",
    "-oForwardAgent=no",
    "-oPermitLocalCommand=no",
    "-oEscapeChar=none",
];

/// Defaults after the user's options, so theirs win: notice dead links, keep ssh's
/// informational chatter out of error messages.
const DEFAULTS: &[&str] = &[
    "-oServerAliveInterval=15",
    "-oServerAliveCountMax=3",
    "-oLogLevel=ERROR",
];

/// What identifies a context.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContextKey {
    pub user: Option<Vec<u8>>,
    pub host: Vec<u8>,
    pub port: Option<u16>,
    /// Routing options, lower-case keyword and value, in order given.
    pub routing: Vec<(String, Vec<u8>)>,
}

impl ContextKey {
    pub fn for_target(target: &Target) -> ContextKey {
        let words: Vec<OsString> = target
            .ssh_args
            .iter()
            .map(|w| OsStr::from_bytes(w).to_os_string())
            .chain([
                OsString::from("--"),
                OsStr::from_bytes(&target.host).to_os_string(),
            ])
            .collect();
        let mut routing = Vec::new();
        if let Ok(inv) = args::parse(&words) {
            for opt in &inv.options {
                let (key, value) = match opt {
                    Opt::Arg('F', v) => ("configfile", v.as_bytes().to_vec()),
                    Opt::Arg('J', v) => ("proxyjump", v.as_bytes().to_vec()),
                    Opt::Arg('b', v) => ("bindaddress", v.as_bytes().to_vec()),
                    Opt::Arg('B', v) => ("bindinterface", v.as_bytes().to_vec()),
                    Opt::Flag('4') => ("addressfamily", b"inet".to_vec()),
                    Opt::Flag('6') => ("addressfamily", b"inet6".to_vec()),
                    Opt::Config { key, value, .. } if ROUTING_KEYWORDS.contains(&key.as_str()) => {
                        (key.as_str(), value.as_bytes().to_vec())
                    }
                    _ => continue,
                };
                routing.push((key.to_string(), value));
            }
        }
        ContextKey {
            user: target.user.clone(),
            host: target.host.clone(),
            port: target.port,
            routing,
        }
    }

    /// `user@host:port`, showing only what was given.
    pub fn label(&self) -> String {
        let mut s = String::new();
        if let Some(u) = &self.user {
            s.push_str(&String::from_utf8_lossy(u));
            s.push('@');
        }
        s.push_str(&String::from_utf8_lossy(&self.host));
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s
    }
}

/// The real ssh command that opens a context for `target`.
pub fn ssh_command(program: &Path, target: &Target, key: &ContextKey) -> SshCommand {
    let mut args: Vec<OsString> = FORCED.iter().map(OsString::from).collect();
    args.extend(
        target
            .ssh_args
            .iter()
            .map(|w| OsStr::from_bytes(w).to_os_string()),
    );
    if let Some(user) = &target.user {
        args.push("-l".into());
        args.push(OsStr::from_bytes(user).to_os_string());
    }
    if let Some(port) = target.port {
        args.push("-p".into());
        args.push(port.to_string().into());
    }
    args.extend(DEFAULTS.iter().map(OsString::from));
    args.push("--".into());
    args.push(OsStr::from_bytes(&target.host).to_os_string());
    SshCommand {
        program: program.to_path_buf(),
        args,
        label: key.label(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(args: &[&str], host: &str) -> Target {
        Target {
            ssh_args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            host: host.as_bytes().to_vec(),
            user: Some(b"bob".to_vec()),
            port: Some(2222),
        }
    }

    #[test]
    fn authentication_options_do_not_split_contexts() {
        // Ansible's own connection and its synchronize module, for the same host.
        let ansible = target(
            &[
                "-C",
                "-o",
                "ControlMaster=auto",
                "-o",
                "IdentityFile=\"/k/id\"",
                "-o",
                "PasswordAuthentication=no",
                "-o",
                "ConnectTimeout=10",
            ],
            "web1",
        );
        let synchronize = target(
            &[
                "-i",
                "/k/id",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ],
            "web1",
        );
        assert_eq!(
            ContextKey::for_target(&ansible),
            ContextKey::for_target(&synchronize)
        );
    }

    #[test]
    fn routing_options_split_contexts() {
        let plain = ContextKey::for_target(&target(&[], "web1"));
        for args in [
            &["-J", "bastion"][..],
            &["-F", "/other/config"][..],
            &["-o", "HostName=10.0.0.9"][..],
            &["-oProxyCommand nc %h %p"][..],
            &["-6"][..],
        ] {
            assert_ne!(
                plain,
                ContextKey::for_target(&target(args, "web1")),
                "{args:?}"
            );
        }
        assert_ne!(plain, ContextKey::for_target(&target(&[], "web2")));
    }

    #[test]
    fn forced_options_come_first_and_defaults_last() {
        let t = target(&["-o", "ServerAliveInterval=5"], "web1");
        let cmd = ssh_command(Path::new("/usr/bin/ssh"), &t, &ContextKey::for_target(&t));
        let args: Vec<String> = cmd
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let user_opt = args
            .iter()
            .position(|a| a == "ServerAliveInterval=5")
            .unwrap();
        let default = args
            .iter()
            .position(|a| a == "-oServerAliveInterval=15")
            .unwrap();
        assert!(
            user_opt < default,
            "the user's value must come first: {args:?}"
        );
        assert_eq!(args[0], "-T");
        assert_eq!(&args[args.len() - 2..], ["--", "web1"]);
        assert!(args.windows(2).any(|w| w == ["-l", "bob"]));
        assert!(args.windows(2).any(|w| w == ["-p", "2222"]));
        assert_eq!(cmd.label, "bob@web1:2222");
    }
}
