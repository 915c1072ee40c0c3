//! From a tool's host string to the context a command runs in.
//!
//! In order of precedence:
//! 1. a **named context** from the configuration file (`web1-root` = ssh to web1, then
//!    sudo to root), when the destination host is such a name;
//! 2. **`mitossh-env --become USER --via HOST`**, which reach the shim as
//!    `MITOSSH_BECOME`, `MITOSSH_BECOME_METHOD`, `MITOSSH_VIA` and `MITOSSH_VIA_MODE`;
//! 3. a leading **`sudo [-u USER] [flags]`** in the remote command, as Ansible's
//!    synchronize with become (`sudo -u root rsync --server …`) and rsync's
//!    `--rsync-path="sudo rsync"` send: the rest runs in the sudo context of that host.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::args::{self, Invocation, Opt};
use crate::config::{self, Config};
use crate::proto::{Become, BecomeMethod, SshHop, Target};

pub const BECOME_ENV: &str = "MITOSSH_BECOME";
pub const BECOME_METHOD_ENV: &str = "MITOSSH_BECOME_METHOD";
pub const VIA_ENV: &str = "MITOSSH_VIA";
pub const VIA_MODE_ENV: &str = "MITOSSH_VIA_MODE";

/// Where and what to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub target: Target,
    /// The remote command, with a recognised leading `sudo …` removed.
    pub command: Option<Vec<u8>>,
    /// Where the become password is, if the configuration names a file.
    pub password_file: Option<PathBuf>,
}

/// Resolves an invocation. Errors are one line for the user.
pub fn resolve(
    inv: &Invocation,
    command: Option<Vec<u8>>,
    config: &Config,
) -> Result<Resolved, String> {
    let host = inv.host().ok_or("no destination")?;
    let shim_args = connection_args(inv);
    if let Some(name) = host.to_str()
        && let Some(named) = config.contexts.get(name)
    {
        let mut ssh_args: Vec<Vec<u8>> = named
            .ssh_args
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
        ssh_args.extend(shim_args);
        let mut hops: Vec<SshHop> = named
            .via
            .iter()
            .map(|v| hop_from(v, None, &ssh_args))
            .collect::<Result<_, _>>()?;
        hops.push(hop_from(&named.host, named.port, &ssh_args)?);
        return Ok(Resolved {
            target: Target {
                hops,
                via: named.via_mode()?,
                become_as: named.become_as()?,
            },
            command,
            password_file: named.password_file.clone(),
        });
    }

    let destination = SshHop {
        ssh_args: shim_args.clone(),
        host: host.as_bytes().to_vec(),
        user: inv.user().map(|u| u.as_bytes().to_vec()),
        port: inv.port().ok().flatten(),
        config: None,
    };
    let mut hops = Vec::new();
    if let Some(via) = env(VIA_ENV) {
        for v in via.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            hops.push(hop_from(v, None, &shim_args)?);
        }
    }
    hops.push(destination);
    let via = config::parse_via_mode(&env(VIA_MODE_ENV).unwrap_or_else(|| "tcp".into()))?;
    let mut become_as = match env(BECOME_ENV) {
        Some(user) => Some(Become {
            method: config::parse_method(&env(BECOME_METHOD_ENV).unwrap_or_else(|| "sudo".into()))?,
            user,
        }),
        None => None,
    };
    let mut command = command;
    if let Some((user, rest)) = command.as_deref().and_then(sudo_prefix) {
        become_as = Some(Become {
            method: BecomeMethod::Sudo,
            user,
        });
        command = Some(rest.to_vec());
    }
    Ok(Resolved {
        target: Target {
            hops,
            via,
            become_as,
        },
        command,
        password_file: None,
    })
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// The shim's options that matter for the connection, without -l, -p, User and Port: the
/// master passes each hop's user and port itself.
fn connection_args(inv: &Invocation) -> Vec<Vec<u8>> {
    args::filter_options(&inv.connection_args(), |o| match o {
        Opt::Arg('l' | 'p', _) => false,
        Opt::Config { key, .. } => key != "user" && key != "port",
        _ => true,
    })
    .into_iter()
    .map(|w| w.as_bytes().to_vec())
    .collect()
}

/// A hop written `[user@]host[:port]` or `ssh://…`, with the given options.
fn hop_from(spec: &str, port: Option<u16>, ssh_args: &[Vec<u8>]) -> Result<SshHop, String> {
    let (spec, port_in_spec) = match spec.rsplit_once(':') {
        Some((h, p)) if !spec.starts_with("ssh://") && !h.contains(':') => {
            let p: u16 = p.parse().map_err(|_| format!("bad port in {spec:?}"))?;
            (h, Some(p))
        }
        _ => (spec, None),
    };
    let inv = args::parse(&[OsString::from(spec)]).map_err(|e| format!("{spec}: {e}"))?;
    let dest = inv
        .destination
        .ok_or_else(|| format!("{spec}: not a destination"))?;
    Ok(SshHop {
        ssh_args: ssh_args.to_vec(),
        host: dest.host.as_bytes().to_vec(),
        user: dest.user.map(|u| OsStr::as_bytes(&u).to_vec()),
        port: port.or(port_in_spec).or(dest.port),
        config: None,
    })
}

/// Recognises `sudo [-u USER] [-H] [-n] [-E] [-k] [-P] [--] CMD…` at the start of a
/// command line: returns the user (root by default) and the rest of the line. Anything
/// it does not fully understand (quoting, `-i`, `-s`, `-S` which would feed a password
/// through stdin) is left alone.
pub fn sudo_prefix(command: &[u8]) -> Option<(String, &[u8])> {
    let mut rest = command.trim_ascii_start();
    let first = next_word(&mut rest)?;
    if first != b"sudo" && first != b"/usr/bin/sudo" && first != b"/bin/sudo" {
        return None;
    }
    let mut user = "root".to_string();
    loop {
        let before = rest;
        let word = next_word(&mut rest)?;
        if word.iter().any(|b| b"'\"\\$`;&|<>(){}".contains(b)) {
            return None;
        }
        match word {
            b"--" => return (!rest.is_empty()).then_some((user, rest)),
            b"-u" | b"--user" => user = String::from_utf8(next_word(&mut rest)?.to_vec()).ok()?,
            w if w.starts_with(b"--user=") => user = String::from_utf8(w[7..].to_vec()).ok()?,
            w if w.starts_with(b"-u") => user = String::from_utf8(w[2..].to_vec()).ok()?,
            b"-H" | b"-n" | b"-E" | b"-k" | b"-P" | b"--preserve-env" | b"--non-interactive"
            | b"--set-home" => {}
            w if w.starts_with(b"-") => return None,
            _ => return Some((user, before.trim_ascii_start())),
        }
        if user.is_empty() {
            return None;
        }
    }
}

/// The next whitespace-separated word; advances `s` past it and the blanks after it.
fn next_word<'a>(s: &mut &'a [u8]) -> Option<&'a [u8]> {
    let t = s.trim_ascii_start();
    if t.is_empty() {
        return None;
    }
    let end = t
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(t.len());
    let (word, after) = t.split_at(end);
    *s = after.trim_ascii_start();
    Some(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(s: &str) -> Option<(String, String)> {
        sudo_prefix(s.as_bytes()).map(|(u, r)| (u, String::from_utf8(r.to_vec()).unwrap()))
    }

    #[test]
    fn recognises_the_sudo_prefixes_real_clients_send() {
        // rsync --rsync-path="sudo rsync"
        assert_eq!(
            strip("sudo rsync --server -logDtpre.iLsfxCIvu . /root/dst/"),
            Some((
                "root".into(),
                "rsync --server -logDtpre.iLsfxCIvu . /root/dst/".into()
            ))
        );
        // Ansible's synchronize with become
        assert_eq!(
            strip("sudo -u root rsync --server -logDtpre.iLsfxCIvu . /dst/"),
            Some((
                "root".into(),
                "rsync --server -logDtpre.iLsfxCIvu . /dst/".into()
            ))
        );
        assert_eq!(
            strip("sudo -H -n -uwww-data -- ls -la"),
            Some(("www-data".into(), "ls -la".into()))
        );
        assert_eq!(
            strip("/usr/bin/sudo --user=backup tar c /srv"),
            Some(("backup".into(), "tar c /srv".into()))
        );
    }

    #[test]
    fn leaves_what_it_does_not_understand() {
        for s in [
            "rsync --server . /dst",
            "sudo",
            "sudo -u",
            "sudo -i",
            "sudo -s",
            "sudo -S rsync",
            "sudo -p 'pw:' rsync",
            "sudo \"rsync\"",
            "sudoedit /etc/hosts",
            "sudo --",
        ] {
            assert_eq!(strip(s), None, "{s}");
        }
    }

    #[test]
    fn hops_are_written_like_destinations() {
        let h = hop_from("bob@bastion:2200", None, &[]).unwrap();
        assert_eq!(h.host, b"bastion");
        assert_eq!(h.user.as_deref(), Some(&b"bob"[..]));
        assert_eq!(h.port, Some(2200));
        let h = hop_from("ssh://carol@jump:22", None, &[]).unwrap();
        assert_eq!(h.host, b"jump");
        assert_eq!(h.port, Some(22));
        assert!(hop_from("bastion:notaport", None, &[]).is_err());
    }
}
