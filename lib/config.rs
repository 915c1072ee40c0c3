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
//! ```
//!
//! Names carry no colon (rsync splits `host:path` at the first one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::proto::{Become, BecomeMethod, ViaMode};

/// The variable that names the configuration file, overriding the XDG location.
pub(crate) const CONFIG_ENV: &str = "MITOSSH_CONFIG";

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
}

impl NamedContext {
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
