//! The configuration file: named contexts, usable wherever a tool takes a host.
//!
//! ```toml
//! # $XDG_CONFIG_HOME/mitossh/config.toml (or $MITOSSH_CONFIG)
//! [contexts.web1-root]          # `rsync -a src/ web1-root:/srv/` means:
//! host = "deploy@web1"          # ssh to this destination ([user@]host, an ssh alias…),
//! port = 2222                   # optional
//! ssh_args = ["-F", "/etc/ssh/cluster.conf"]   # optional options for every hop
//! via = ["bastion"]             # optional hops before it, in order
//! via_mode = "tcp"              # "tcp" (default: the master's ssh through the hop) or "ssh"
//! become = "root"               # then become root on it,
//! become_method = "sudo"        # with sudo (default), su or doas;
//! password_file = "/run/secrets/web1"   # optional: the become password, first line
//!
//! [contexts.web1-app]           # then, optionally, into something else on that host:
//! host = "web1"
//! become = "root"
//! podman = "app"                # podman exec -i app (see [`PRESETS`]), or the generic
//! # exec = ["nsenter", "-t", "4242", "-a"]      # form: any command prefix
//!
//! [contexts.here]
//! host = "local"                # the master's own host: no ssh
//! ```
//!
//! Names carry no colon (rsync splits `host:path` at the first one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::proto::{Become, BecomeMethod, ViaMode};

/// The variable that names the configuration file, overriding the XDG location.
pub(crate) const CONFIG_ENV: &str = "MITOSSH_CONFIG";

/// `host = "local"`: the master's own host.
pub(crate) const LOCAL_HOST: &str = "local";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    pub contexts: BTreeMap<String, NamedContext>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NamedContext {
    pub host: String,
    pub port: Option<u16>,
    #[serde(default)]
    pub ssh_args: Vec<String>,
    #[serde(default)]
    pub via: Vec<String>,
    pub via_mode: Option<String>,
    #[serde(rename = "become")]
    pub become_user: Option<String>,
    pub become_method: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Then start the agent through this command prefix on that host (as that user).
    pub exec: Option<Vec<String>>,
    pub docker: Option<Words>,
    pub podman: Option<Words>,
    pub kubectl: Option<Words>,
    pub lxc: Option<Words>,
    pub nsenter: Option<Pid>,
    pub chroot: Option<String>,
}

/// A preset's argument: a name, or a name with options (`["-u", "www", "app"]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum Words {
    One(String),
    Many(Vec<String>),
}

impl Words {
    fn list(&self) -> Vec<String> {
        match self {
            Words::One(w) => vec![w.clone()],
            Words::Many(ws) => ws.clone(),
        }
    }
}

/// A process id, written as a number or a string of digits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum Pid {
    Number(u32),
    Text(String),
}

/// The presets for entering something else on a host: the command prefix each stands
/// for, with its argument in the middle. All of them run the command on plain pipes (no
/// terminal), which the protocol needs.
pub(crate) const PRESETS: &[(&str, &[&str], &[&str])] = &[
    ("docker", &["docker", "exec", "-i"], &[]),
    ("podman", &["podman", "exec", "-i"], &[]),
    ("kubectl", &["kubectl", "exec", "-i"], &["--"]),
    ("lxc", &["lxc", "exec"], &["--"]),
    ("nsenter", &["nsenter", "-a", "-t"], &[]),
    ("chroot", &["chroot"], &[]),
];

impl NamedContext {
    /// Whether this is the master's own host (`host = "local"`).
    pub(crate) fn is_local(&self) -> bool {
        self.host == LOCAL_HOST
    }

    /// The command prefix into something else on the host, from `exec` or a preset.
    pub(crate) fn exec_prefix(&self) -> Result<Option<Vec<String>>, String> {
        let pid = |p: &Pid| match p {
            Pid::Number(n) => Ok(n.to_string()),
            Pid::Text(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => Ok(t.clone()),
            Pid::Text(t) => Err(format!("nsenter = {t:?}: give the process id, a number")),
        };
        let given: Vec<(&str, Vec<String>)> = [
            ("docker", self.docker.as_ref().map(Words::list)),
            ("podman", self.podman.as_ref().map(Words::list)),
            ("kubectl", self.kubectl.as_ref().map(Words::list)),
            ("lxc", self.lxc.as_ref().map(Words::list)),
            (
                "nsenter",
                self.nsenter.as_ref().map(pid).transpose()?.map(|p| vec![p]),
            ),
            ("chroot", self.chroot.clone().map(|d| vec![d])),
        ]
        .into_iter()
        .filter_map(|(name, words)| words.map(|w| (name, w)))
        .collect();
        let preset = match (given.as_slice(), &self.exec) {
            ([], None) => return Ok(None),
            ([], Some(exec)) => {
                if exec.first().is_none_or(|p| p.is_empty()) {
                    return Err(
                        "exec: give a command prefix, e.g. [\"docker\", \"exec\", \"-i\", \"app\"]"
                            .into(),
                    );
                }
                return Ok(Some(exec.clone()));
            }
            ([(name, words)], None) => (*name, words),
            _ => {
                let mut names: Vec<&str> = given.iter().map(|(n, _)| *n).collect();
                if self.exec.is_some() {
                    names.push("exec");
                }
                return Err(format!(
                    "{} each enter something: give one of them",
                    names.join(" and ")
                ));
            }
        };
        let (name, words) = preset;
        if words.is_empty() || words.iter().any(String::is_empty) {
            return Err(format!("{name}: give what to enter (a name)"));
        }
        let (_, before, after) = PRESETS
            .iter()
            .find(|(n, ..)| *n == name)
            .expect("every preset is in PRESETS");
        let mut argv: Vec<String> = before.iter().map(|w| w.to_string()).collect();
        argv.extend(words.iter().cloned());
        argv.extend(after.iter().map(|w| w.to_string()));
        Ok(Some(argv))
    }

    pub(crate) fn via_mode(&self) -> Result<ViaMode, String> {
        parse_via_mode(self.via_mode.as_deref().unwrap_or("tcp"))
    }

    pub(crate) fn become_as(&self) -> Result<Option<Become>, String> {
        self.become_user
            .as_ref()
            .map(|user| {
                let method = parse_method(self.become_method.as_deref().unwrap_or("sudo"))?;
                Ok(Become {
                    method,
                    user: user.clone(),
                })
            })
            .transpose()
    }
}

/// A duration as people write it: `30`, `30s`, `500ms`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 30, 30s, 500ms, 5m, 1h)"))?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(std::time::Duration::from_millis(ms))
}

pub(crate) fn parse_via_mode(s: &str) -> Result<ViaMode, String> {
    match s {
        "tcp" => Ok(ViaMode::Tcp),
        "ssh" => Ok(ViaMode::Ssh),
        other => Err(format!("via mode {other:?}: use \"tcp\" or \"ssh\"")),
    }
}

pub(crate) fn parse_method(s: &str) -> Result<BecomeMethod, String> {
    BecomeMethod::parse(s).ok_or_else(|| format!("become method {s:?}: use sudo, su or doas"))
}

/// Where the configuration file is: `$MITOSSH_CONFIG`, else
/// `$XDG_CONFIG_HOME/mitossh/config.toml`, else `~/.config/mitossh/config.toml`.
pub(crate) fn path() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = var(CONFIG_ENV) {
        return Some(PathBuf::from(p));
    }
    let base = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("mitossh/config.toml"))
}

/// Loads the configuration; a missing file is an empty configuration.
pub(crate) fn load() -> Result<Config, String> {
    let Some(path) = path() else {
        return Ok(Config::default());
    };
    load_from(&path)
}

pub(crate) fn load_from(path: &Path) -> Result<Config, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

pub(crate) fn parse(text: &str) -> Result<Config, String> {
    let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
    for (name, ctx) in &config.contexts {
        if name.contains(':') || name.is_empty() {
            return Err(format!(
                "context name {name:?}: names cannot be empty or contain ':'"
            ));
        }
        ctx.via_mode()
            .map_err(|e| format!("contexts.{name}: {e}"))?;
        ctx.become_as()
            .map_err(|e| format!("contexts.{name}: {e}"))?;
        ctx.exec_prefix()
            .map_err(|e| format!("contexts.{name}: {e}"))?;
        if ctx.is_local() && (ctx.port.is_some() || !ctx.ssh_args.is_empty() || !ctx.via.is_empty())
        {
            return Err(format!(
                "contexts.{name}: host = \"local\" is the master's own host, reached without ssh: it takes no port, ssh_args or via"
            ));
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn parses_a_named_context() {
        let c = parse(
            r#"
            [contexts.web1-root]
            host = "deploy@web1"
            port = 2222
            via = ["bastion"]
            become = "root"
            "#,
        )
        .unwrap();
        let ctx = &c.contexts["web1-root"];
        assert_eq!(ctx.host, "deploy@web1");
        assert_eq!(ctx.port, Some(2222));
        assert_eq!(ctx.via_mode().unwrap(), ViaMode::Tcp);
        assert_eq!(
            ctx.become_as().unwrap(),
            Some(Become {
                method: BecomeMethod::Sudo,
                user: "root".into()
            })
        );
    }

    fn prefix(text: &str) -> Result<Option<Vec<String>>, String> {
        let c = parse(&format!("[contexts.c]\nhost = \"web1\"\n{text}\n"))?;
        c.contexts["c"].exec_prefix()
    }

    #[test]
    fn presets_and_the_generic_form_give_a_command_prefix() {
        let words = |ws: &[&str]| Some(ws.iter().map(|w| w.to_string()).collect::<Vec<_>>());
        for (text, argv) in [
            ("docker = \"app\"", words(&["docker", "exec", "-i", "app"])),
            (
                "docker = [\"-u\", \"www\", \"app\"]",
                words(&["docker", "exec", "-i", "-u", "www", "app"]),
            ),
            ("podman = \"app\"", words(&["podman", "exec", "-i", "app"])),
            (
                "kubectl = [\"web-0\", \"-c\", \"app\"]",
                words(&["kubectl", "exec", "-i", "web-0", "-c", "app", "--"]),
            ),
            ("lxc = \"c1\"", words(&["lxc", "exec", "c1", "--"])),
            ("nsenter = 4242", words(&["nsenter", "-a", "-t", "4242"])),
            (
                "nsenter = \"4242\"",
                words(&["nsenter", "-a", "-t", "4242"]),
            ),
            ("chroot = \"/srv/jail\"", words(&["chroot", "/srv/jail"])),
            (
                "exec = [\"unshare\", \"--root\", \"/srv/r\"]",
                words(&["unshare", "--root", "/srv/r"]),
            ),
            ("", None),
        ] {
            assert_eq!(prefix(text).unwrap(), argv, "{text}");
        }
    }

    #[test]
    fn exec_mistakes_say_what_to_do() {
        for (text, says) in [
            ("docker = \"a\"\npodman = \"b\"", "docker and podman"),
            ("chroot = \"/x\"\nexec = [\"env\"]", "chroot and exec"),
            ("exec = []", "command prefix"),
            ("docker = \"\"", "docker: give"),
            ("nsenter = \"$(pidof x)\"", "process id"),
        ] {
            let e = prefix(text).unwrap_err();
            assert!(e.contains("contexts.c") && e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_local_context_takes_no_ssh_settings() {
        let c = parse("[contexts.here]\nhost = \"local\"\nbecome = \"root\"\n").unwrap();
        assert!(c.contexts["here"].is_local());
        for extra in ["port = 22", "via = [\"b\"]", "ssh_args = [\"-4\"]"] {
            let e = parse(&format!("[contexts.here]\nhost = \"local\"\n{extra}\n")).unwrap_err();
            assert!(e.contains("own host"), "{extra}: {e}");
        }
    }

    #[test]
    fn mistakes_are_reported_with_their_place() {
        let err =
            parse("[contexts.a]\nhost = \"h\"\nbecome = \"root\"\nbecome_method = \"runas\"\n")
                .unwrap_err();
        assert!(err.contains("contexts.a") && err.contains("runas"), "{err}");
        let err = parse("[contexts.\"a:b\"]\nhost = \"h\"\n").unwrap_err();
        assert!(err.contains("':'"), "{err}");
        let err = parse("[contexts.a]\nhots = \"h\"\n").unwrap_err();
        assert!(err.contains("hots"), "{err}");
    }
}
