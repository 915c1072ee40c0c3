//! From a tool's host string to the context a command runs in.
//!
//! In order of precedence:
//! 1. a **named context** from the configuration file (`web1-root` = ssh to web1, then
//!    sudo to root; `web1-app` = then into a container; `here` = the master's own host),
//!    when the destination host is such a name;
//! 2. **`mitossh-env --become USER --via HOST`**, which reach the shim as
//!    `MITOSSH_BECOME`, `MITOSSH_BECOME_METHOD`, `MITOSSH_VIA` and `MITOSSH_VIA_MODE`
//!    (`--become` also for a named context that names no user of its own);
//! 3. a leading **`sudo [-u USER] [flags]`** in the remote command, as Ansible's
//!    synchronize with become (`sudo -u root rsync --server …`) and rsync's
//!    `--rsync-path="sudo rsync"` send: the rest runs in the sudo context of that host.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::config::{self, Config};
use crate::proto::{Become, BecomeMethod, SshHop, Target, ViaMode};
use crate::sshargs::{self as args, Invocation, Opt};

pub(crate) const BECOME_ENV: &str = "MITOSSH_BECOME";
pub(crate) const BECOME_METHOD_ENV: &str = "MITOSSH_BECOME_METHOD";
pub(crate) const VIA_ENV: &str = "MITOSSH_VIA";
pub(crate) const VIA_MODE_ENV: &str = "MITOSSH_VIA_MODE";

/// Where and what to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub target: Target,
    /// The remote command, with a recognised leading `sudo …` removed.
    pub command: Option<Vec<u8>>,
    /// Where the become password is, if the configuration names a file.
    pub password_file: Option<PathBuf>,
}

/// Resolves an invocation. Errors are one line for the user.
pub(crate) fn resolve(
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
        if !named.is_local() {
            hops.push(hop_from(&named.host, named.port, &ssh_args)?);
        }
        let exec = named
            .exec_prefix()?
            .map(|argv| argv.into_iter().map(String::into_bytes).collect());
        return Ok(Resolved {
            target: Target {
                hops,
                via: named.via_mode()?,
                // A context that names no user takes `--become`'s: `mitossh-env --become
                // root` then reaches its container as root, as every other host.
                become_as: named.become_as()?.or(env_become()?),
                exec,
                local: named.is_local(),
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
    let mut become_as = env_become()?;
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
            ..Target::default()
        },
        command,
        password_file: None,
    })
}

/// `target` reached through `via` instead (in order, by `mode`): a plan's gateways. The
/// hops take the destination's ssh options.
pub(crate) fn through(mut target: Target, via: &[String], mode: ViaMode) -> Result<Target, String> {
    let dest = target.hops.pop().ok_or("no destination")?;
    let mut hops = via
        .iter()
        .map(|v| hop_from(v, None, &dest.ssh_args))
        .collect::<Result<Vec<_>, _>>()?;
    hops.push(dest);
    target.hops = hops;
    target.via = mode;
    Ok(target)
}

/// `mitossh-env --become USER [--become-method M]`, as the environment carries it.
fn env_become() -> Result<Option<Become>, String> {
    env(BECOME_ENV)
        .map(|user| {
            let method = env(BECOME_METHOD_ENV).unwrap_or_else(|| "sudo".into());
            Ok(Become {
                method: config::parse_method(&method)?,
                user,
            })
        })
        .transpose()
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
/// command line, as the remote shell would split it (quotes removed, so `-u '#0'` and
/// clustered flags such as `-nHu root` work): returns the user (root by default, in any
/// form sudo takes: a name or `#uid`) and the rest of the line, which still goes to a
/// shell. Anything it does not fully understand (expansions, globs, a comment, `-i`, `-s`,
/// `-g`, `-S` which would feed a password through stdin) is left alone.
pub(crate) fn sudo_prefix(command: &[u8]) -> Option<(String, &[u8])> {
    let mut rest = command.trim_ascii_start();
    let first = shell_word(&mut rest)?;
    if first != b"sudo" && first != b"/usr/bin/sudo" && first != b"/bin/sudo" {
        return None;
    }
    let mut user = b"root".to_vec();
    loop {
        let before = rest;
        let word = shell_word(&mut rest)?;
        match word.as_slice() {
            b"--" => break,
            b"-u" | b"--user" => user = shell_word(&mut rest)?,
            w if w.starts_with(b"--user=") => user = w[7..].to_vec(),
            b"--preserve-env" | b"--non-interactive" | b"--set-home" | b"--reset-timestamp" => {}
            w if w.starts_with(b"--preserve-env=") => {}
            w if w.starts_with(b"--") => return None,
            [b'-', flags @ ..] if !flags.is_empty() => {
                // Short options may cluster; -u takes the rest of the word, or the next.
                for (i, flag) in flags.iter().enumerate() {
                    match flag {
                        b'H' | b'n' | b'E' | b'k' | b'P' => {}
                        b'u' if i + 1 < flags.len() => {
                            user = flags[i + 1..].to_vec();
                            break;
                        }
                        b'u' => {
                            user = shell_word(&mut rest)?;
                            break;
                        }
                        _ => return None,
                    }
                }
            }
            _ => {
                rest = before.trim_ascii_start();
                break;
            }
        }
        if user.is_empty() {
            return None;
        }
    }
    let user = String::from_utf8(user).ok()?;
    (!rest.is_empty() && !user.is_empty()).then_some((user, rest))
}

/// The next word of `s` as `/bin/sh` would read it, if it is a plain one: unquoted text
/// without expansions, globs or operators, and text in single quotes, or in double
/// quotes without `$`, `` ` ``, `\` or `!`; quotes removed. Advances `s` past it and the
/// blanks after. `None` for no word, or one the shell would change or that ends the
/// command (`;`, `|`, a `#` comment, …).
fn shell_word(s: &mut &[u8]) -> Option<Vec<u8>> {
    const SPECIAL: &[u8] = b"\\$`;&|<>(){}*?[]~!";
    let t = s.trim_ascii_start();
    if t.is_empty() || t[0] == b'#' {
        return None;
    }
    let mut word = Vec::new();
    let mut i = 0;
    while i < t.len() && !t[i].is_ascii_whitespace() {
        match t[i] {
            quote @ (b'\'' | b'"') => {
                let end = i + 1 + t[i + 1..].iter().position(|b| *b == quote)?;
                let inner = &t[i + 1..end];
                if quote == b'"' && inner.iter().any(|b| b"$`\\!".contains(b)) {
                    return None;
                }
                word.extend_from_slice(inner);
                i = end + 1;
            }
            b if SPECIAL.contains(&b) => return None,
            b => {
                word.push(b);
                i += 1;
            }
        }
    }
    *s = t[i..].trim_ascii_start();
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
    fn takes_every_user_form_sudo_takes() {
        for (line, user) in [
            ("sudo -u '#0' id", "#0"),
            ("sudo -u \"#1001\" id", "#1001"),
            ("sudo -u#0 id", "#0"),
            ("sudo --user='#33' id", "#33"),
            ("sudo -nHu www-data id", "www-data"),
            ("sudo -Hu#0 id", "#0"),
            ("sudo -u 'svc.user@corp' id", "svc.user@corp"),
            ("'sudo' -n id", "root"),
        ] {
            assert_eq!(strip(line), Some((user.into(), "id".into())), "{line}");
        }
        // What follows keeps its quoting: it still goes to a shell.
        assert_eq!(
            strip("sudo -u '#0' sh -c 'echo \"$HOME\"'"),
            Some(("#0".into(), "sh -c 'echo \"$HOME\"'".into()))
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
            "sudo -nS rsync",
            "sudo -g staff id",
            "sudo -u $WHO id",
            "sudo -u #0 id",
            "sudo -u \"$WHO\" id",
            "sudo -u 'unterminated id",
            "sudo -u ~bob id",
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
