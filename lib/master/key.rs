//! Which invocations share a context, how the path to a context is made, and the ssh
//! command lines the master runs.
//!
//! A context is identified by its path from the master: ssh to a host, perhaps further
//! ssh hops, perhaps becoming another user at the end. Every prefix of a path is a context
//! of its own (the parent), so `web1 ⇒ sudo root` reuses the connection `web1` already has.
//!
//! Like an OpenSSH ControlMaster, an ssh step is shared by every invocation for the same
//! user, host and port; unlike it, options that change *where* the connection goes
//! (config file, HostName, ProxyJump, ProxyCommand, bind address, address family, host key
//! alias) also separate contexts. Options that only affect authentication or timing do not:
//! an Ansible connection and Ansible's synchronize, which pass different ones, share one.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::bootstrap::ssh::SshCommand;
use crate::proto::{Become, ContextId, SshHop, Target, ViaMode};
use crate::sshargs::{self, Opt};

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

/// Defaults after the user's options, so theirs win: notice dead links. ssh's log level
/// stays the user's: what it says while connecting is shown to the caller, as ssh would.
const DEFAULTS: &[&str] = &["-oServerAliveInterval=15", "-oServerAliveCountMax=3"];

/// What identifies an ssh step: like OpenSSH's `%C`, the user, host name and port the
/// user's configuration resolves the destination to, and the settings that route it.
#[derive(Debug, Clone)]
pub(crate) struct SshKey {
    pub user: Option<Vec<u8>>,
    pub host: Vec<u8>,
    pub port: Option<u16>,
    /// Routing options, lower-case keyword and value, in a fixed order.
    pub routing: Vec<(String, Vec<u8>)>,
    /// The destination as the first caller wrote it, for messages; not part of the key,
    /// so two aliases of one host share a context.
    pub written: String,
}

impl PartialEq for SshKey {
    fn eq(&self, other: &SshKey) -> bool {
        (self.user == other.user)
            && self.host == other.host
            && self.port == other.port
            && self.routing == other.routing
    }
}

impl Eq for SshKey {}

impl std::hash::Hash for SshKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (&self.user, &self.host, &self.port, &self.routing).hash(state)
    }
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum StepKey {
    /// ssh by the master: directly (first step) or through a TCP stream that the previous
    /// context opens.
    Ssh(SshKey),
    /// ssh run on the previous context's host.
    SshOnHop(SshKey),
    /// Another user on the previous context's host.
    Become(Become),
    /// The master's own host: an agent the master runs as a child process (first step).
    Local,
    /// Inside something else on the previous context's host (a container, a chroot, a
    /// namespace), entered by this command prefix.
    Exec(Vec<Vec<u8>>),
}

/// What identifies a context: its path from the master.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ContextKey {
    pub steps: Vec<StepKey>,
}

impl ContextKey {
    /// The context this one is started from; `None` for a first ssh step.
    #[cfg(test)]
    fn parent(&self) -> Option<ContextKey> {
        (self.steps.len() > 1).then(|| ContextKey {
            steps: self.steps[..self.steps.len() - 1].to_vec(),
        })
    }

    /// Whether `other` is this context or one started from it (directly or further down).
    pub(crate) fn leads_to(&self, other: &ContextKey) -> bool {
        other.steps.starts_with(&self.steps)
    }

    /// The last step as people write it: `user@host:port`, or `sudo:root`.
    pub(crate) fn label(&self) -> String {
        match self.steps.last() {
            Some(StepKey::Ssh(k) | StepKey::SshOnHop(k)) => ssh_label(k),
            Some(StepKey::Become(b)) => format!("{}:{}", b.method.name(), b.user),
            Some(StepKey::Local) => LOCAL.into(),
            Some(StepKey::Exec(argv)) => exec_label(argv),
            None => String::new(),
        }
    }

    /// The whole path, for messages: `bastion => web1 => sudo:root`.
    pub(crate) fn path_label(&self) -> String {
        (1..=self.steps.len())
            .map(|n| {
                ContextKey {
                    steps: self.steps[..n].to_vec(),
                }
                .label()
            })
            .collect::<Vec<_>>()
            .join(" => ")
    }

    /// The host name the last ssh step connects to (after the configuration's `HostName`),
    /// as ssh names it in "Connection to … closed.".
    pub(crate) fn host_name(&self) -> String {
        self.steps
            .iter()
            .rev()
            .find_map(|s| match s {
                StepKey::Ssh(k) | StepKey::SshOnHop(k) => {
                    Some(String::from_utf8_lossy(&k.host).into_owned())
                }
                StepKey::Local => Some(LOCAL.into()),
                StepKey::Become(_) | StepKey::Exec(_) => None,
            })
            .unwrap_or_default()
    }

    /// The host an ssh path ends on, for messages about become steps.
    pub(crate) fn host_label(&self) -> String {
        self.steps
            .iter()
            .rev()
            .find_map(|s| match s {
                StepKey::Ssh(k) | StepKey::SshOnHop(k) => Some(host_of(k)),
                StepKey::Local => Some(LOCAL.into()),
                StepKey::Become(_) | StepKey::Exec(_) => None,
            })
            .unwrap_or_default()
    }
}

/// How the master's own host is written, as a host and in messages.
pub(crate) const LOCAL: &str = "local";

/// An exec step as people write it: its command prefix, words joined by spaces.
pub(crate) fn exec_label(argv: &[Vec<u8>]) -> String {
    argv.iter()
        .map(|w| String::from_utf8_lossy(w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ssh_label(k: &SshKey) -> String {
    if !k.written.is_empty() {
        return k.written.clone();
    }
    let mut s = String::new();
    if let Some(u) = &k.user {
        s.push_str(&String::from_utf8_lossy(u));
        s.push('@');
    }
    s.push_str(&String::from_utf8_lossy(&k.host));
    if let Some(p) = k.port {
        s.push_str(&format!(":{p}"));
    }
    s
}

/// The host part of how a destination was written (`web1` of `bob@web1:22`).
fn host_of(k: &SshKey) -> String {
    let written = k
        .written
        .rsplit_once('@')
        .map_or(k.written.as_str(), |(_, h)| h);
    match written.rsplit_once(':') {
        Some((h, p)) if !written.is_empty() && p.parse::<u16>().is_ok() => h.to_string(),
        _ if !written.is_empty() => written.to_string(),
        _ => String::from_utf8_lossy(&k.host).into_owned(),
    }
}

/// How to make the last step of a path.
#[derive(Debug, Clone)]
pub(crate) enum How {
    Ssh(SshHop),
    SshOnHop(SshHop),
    Become(Become),
    Local,
    Exec(Vec<Vec<u8>>),
}

/// The path to a target's context, one entry per context on the way: its key, and how
/// to make it from the one before.
pub(crate) fn plan(target: &Target) -> Vec<(ContextKey, How)> {
    let mut steps: Vec<StepKey> = Vec::new();
    let mut out = Vec::new();
    if target.local {
        steps.push(StepKey::Local);
        out.push((
            ContextKey {
                steps: steps.clone(),
            },
            How::Local,
        ));
    }
    for (i, hop) in target.hops.iter().enumerate() {
        let key = ssh_key(hop);
        let (step, how) = if (i == 0 && !target.local) || target.via == ViaMode::Tcp {
            (StepKey::Ssh(key), How::Ssh(hop.clone()))
        } else {
            (StepKey::SshOnHop(key), How::SshOnHop(hop.clone()))
        };
        steps.push(step);
        out.push((
            ContextKey {
                steps: steps.clone(),
            },
            how,
        ));
    }
    if let Some(b) = &target.become_as {
        steps.push(StepKey::Become(b.clone()));
        out.push((
            ContextKey {
                steps: steps.clone(),
            },
            How::Become(b.clone()),
        ));
    }
    if let Some(argv) = &target.exec {
        steps.push(StepKey::Exec(argv.clone()));
        out.push((ContextKey { steps }, How::Exec(argv.clone())));
    }
    out
}

/// The key of the context a target runs in.
pub(crate) fn key_of(target: &Target) -> Option<ContextKey> {
    plan(target).pop().map(|(k, _)| k)
}

/// The identity of one ssh destination: its resolved configuration when it has one, else
/// the destination as written with the routing options given on the command line.
pub(crate) fn ssh_key(hop: &SshHop) -> SshKey {
    let written = ssh_label(&SshKey {
        user: hop.user.clone(),
        host: hop.host.clone(),
        port: hop.port,
        routing: Vec::new(),
        written: String::new(),
    });
    if let Some(c) = &hop.config {
        return SshKey {
            user: Some(c.user.clone()),
            host: c.hostname.clone(),
            port: Some(c.port),
            routing: c.routing.clone(),
            written,
        };
    }
    let words: Vec<OsString> = hop
        .ssh_args
        .iter()
        .map(|w| OsStr::from_bytes(w).to_os_string())
        .chain([
            OsString::from("--"),
            OsStr::from_bytes(&hop.host).to_os_string(),
        ])
        .collect();
    let mut routing = Vec::new();
    if let Ok(inv) = sshargs::parse(&words) {
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
    SshKey {
        user: hop.user.clone(),
        host: hop.host.clone(),
        port: hop.port,
        routing,
        written,
    }
}

/// The arguments for an ssh that opens a context for `hop` (everything between the
/// program and the remote command). `proxy`: reach the host through a TCP stream that
/// context `ctx` opens, via `mitossh proxy` on the master's socket. `batch`: nobody can
/// answer a question, so ssh must not ask one (it would otherwise send an empty password).
///
/// A resolved hop's host name, port and user are pinned ahead of the user's options (ssh
/// takes the first value), so the connection goes where the caller's `ssh -G` said even if
/// a `Match exec` decides differently in the master's directory.
pub(crate) fn ssh_args(
    hop: &SshHop,
    proxy: Option<(&Path, &Path, ContextId)>,
    batch: bool,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = FORCED.iter().map(OsString::from).collect();
    if batch {
        args.push("-oBatchMode=yes".into());
    }
    if let Some(c) = &hop.config {
        let mut host = OsString::from("-oHostName=");
        host.push(OsStr::from_bytes(&c.hostname));
        let mut user = OsString::from("-oUser=");
        user.push(OsStr::from_bytes(&c.user));
        args.extend([host, format!("-oPort={}", c.port).into(), user]);
    }
    let user_args: Vec<OsString> = hop
        .ssh_args
        .iter()
        .map(|w| OsStr::from_bytes(w).to_os_string())
        .collect();
    match proxy {
        None => args.extend(user_args),
        Some((exe, socket, ctx)) => {
            args.push(
                format!(
                    "-oProxyCommand={} proxy --socket {} --context {ctx} %h %p",
                    shell_quote(&exe.to_string_lossy()),
                    shell_quote(&socket.to_string_lossy())
                )
                .into(),
            );
            // The user's ProxyJump/ProxyCommand say how the *master* would reach the host;
            // through the hop they do not apply (and ssh refuses both at once).
            args.extend(without_proxies(user_args));
        }
    }
    if let Some(user) = &hop.user {
        args.push("-l".into());
        args.push(OsStr::from_bytes(user).to_os_string());
    }
    if let Some(port) = hop.port {
        args.push("-p".into());
        args.push(port.to_string().into());
    }
    args.extend(DEFAULTS.iter().map(OsString::from));
    args.push("--".into());
    args.push(OsStr::from_bytes(&hop.host).to_os_string());
    args
}

/// `words` (ssh options) without -J, ProxyJump and ProxyCommand.
fn without_proxies(words: Vec<OsString>) -> Vec<OsString> {
    sshargs::filter_options(&words, |o| match o {
        Opt::Arg('J', _) => false,
        Opt::Config { key, .. } => key != "proxyjump" && key != "proxycommand",
        _ => true,
    })
}

/// The ssh command the master runs for a first step.
pub(crate) fn ssh_command(
    program: &Path,
    hop: &SshHop,
    label: String,
    proxy: Option<(&Path, &Path, ContextId)>,
    batch: bool,
) -> SshCommand {
    SshCommand {
        program: program.to_path_buf(),
        args: ssh_args(hop, proxy, batch),
        label,
    }
}

/// Quotes a word for `/bin/sh` (ssh runs ProxyCommand through it).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::BecomeMethod;

    fn hop(args: &[&str], host: &str) -> SshHop {
        SshHop {
            ssh_args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            host: host.as_bytes().to_vec(),
            user: Some(b"bob".to_vec()),
            port: Some(2222),
            config: None,
        }
    }

    fn key(h: SshHop) -> ContextKey {
        key_of(&Target::ssh(h)).unwrap()
    }

    #[test]
    fn authentication_options_do_not_split_contexts() {
        // Ansible's own connection and its synchronize module, for the same host.
        let ansible = hop(
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
        let synchronize = hop(
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
        assert_eq!(key(ansible), key(synchronize));
    }

    #[test]
    fn routing_options_split_contexts() {
        let plain = key(hop(&[], "web1"));
        for args in [
            &["-J", "bastion"][..],
            &["-F", "/other/config"][..],
            &["-o", "HostName=10.0.0.9"][..],
            &["-oProxyCommand nc %h %p"][..],
            &["-6"][..],
        ] {
            assert_ne!(plain, key(hop(args, "web1")), "{args:?}");
        }
        assert_ne!(plain, key(hop(&[], "web2")));
    }

    #[test]
    fn a_path_is_a_chain_of_parents() {
        let target = Target {
            hops: vec![hop(&[], "bastion"), hop(&[], "web1")],
            via: ViaMode::Tcp,
            become_as: Some(Become {
                method: BecomeMethod::Sudo,
                user: "root".into(),
            }),
            ..Target::default()
        };
        let plan = plan(&target);
        assert_eq!(plan.len(), 3);
        let leaf = &plan[2].0;
        assert_eq!(leaf.parent().as_ref(), Some(&plan[1].0));
        assert_eq!(plan[1].0.parent().as_ref(), Some(&plan[0].0));
        assert_eq!(plan[0].0.parent(), None);
        assert_eq!(
            leaf.path_label(),
            "bob@bastion:2222 => bob@web1:2222 => sudo:root"
        );
        assert_eq!(leaf.host_label(), "web1");
        // `ssh -O stop` for a host retires what was started from it, and nothing else.
        assert!(plan[1].0.leads_to(leaf));
        assert!(plan[1].0.leads_to(&plan[1].0));
        assert!(!leaf.leads_to(&plan[1].0));
        assert!(!key(hop(&[], "web2")).leads_to(leaf));
        // The same destination without become shares the ssh context.
        let plain = Target {
            become_as: None,
            ..target.clone()
        };
        assert_eq!(key_of(&plain).as_ref(), Some(&plan[1].0));
        // ssh on the hop is a different path from the master's own ssh through it.
        let on_hop = Target {
            via: ViaMode::Ssh,
            ..target
        };
        assert_ne!(key_of(&on_hop), Some(leaf.clone()));
    }

    #[test]
    fn an_exec_step_comes_after_become_and_keeps_its_parents() {
        let sudo = Become {
            method: BecomeMethod::Sudo,
            user: "root".into(),
        };
        let docker = |name: &str| {
            ["docker", "exec", "-i", name]
                .iter()
                .map(|w| w.as_bytes().to_vec())
                .collect::<Vec<_>>()
        };
        let target = Target {
            hops: vec![hop(&[], "web1")],
            become_as: Some(sudo.clone()),
            exec: Some(docker("app")),
            ..Target::default()
        };
        let plan = plan(&target);
        assert_eq!(plan.len(), 3);
        assert!(matches!(plan[2].1, How::Exec(_)));
        let leaf = &plan[2].0;
        assert_eq!(
            leaf.path_label(),
            "bob@web1:2222 => sudo:root => docker exec -i app"
        );
        assert_eq!(leaf.host_label(), "web1");
        // The sudo context is its parent, shared with a plain `--become root` call.
        let as_root = Target {
            exec: None,
            ..target.clone()
        };
        assert_eq!(leaf.parent(), key_of(&as_root));
        // Another container is another context on the same parent.
        let other = Target {
            exec: Some(docker("db")),
            ..target.clone()
        };
        assert_ne!(key_of(&other).as_ref(), Some(leaf));
        assert_eq!(key_of(&other).unwrap().parent(), key_of(&as_root));
    }

    #[test]
    fn a_local_path_starts_on_the_masters_host() {
        let local = Target {
            local: true,
            become_as: Some(Become {
                method: BecomeMethod::Sudo,
                user: "root".into(),
            }),
            exec: Some(vec![b"chroot".to_vec(), b"/srv/jail".to_vec()]),
            ..Target::default()
        };
        let plan = plan(&local);
        assert!(matches!(plan[0].1, How::Local));
        assert_eq!(plan[0].0.parent(), None);
        assert_eq!(
            plan[2].0.path_label(),
            "local => sudo:root => chroot /srv/jail"
        );
        assert_eq!(plan[1].0.host_label(), "local");
        // Not the same as a host that happens to be called "local".
        let named_local = Target::ssh(hop(&[], "local"));
        assert_ne!(key_of(&named_local).as_ref(), Some(&plan[0].0));
    }

    #[test]
    fn forced_options_come_first_and_defaults_last() {
        let h = hop(&["-o", "ServerAliveInterval=5"], "web1");
        let args: Vec<String> = ssh_args(&h, None, false)
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
    }

    #[test]
    fn a_proxied_hop_goes_through_mitossh_proxy() {
        let h = hop(&["-J", "elsewhere"], "web1");
        let args: Vec<String> = ssh_args(
            &h,
            Some((
                Path::new("/opt/my tools/mitossh"),
                Path::new("/run/m.sock"),
                3,
            )),
            false,
        )
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
        let proxy = args
            .iter()
            .position(|a| a.starts_with("-oProxyCommand="))
            .unwrap();
        assert_eq!(
            args[proxy],
            "-oProxyCommand='/opt/my tools/mitossh' proxy --socket '/run/m.sock' --context 3 %h %p"
        );
        assert!(!args.iter().any(|a| a == "-J"), "no other proxy: {args:?}");
    }
}
