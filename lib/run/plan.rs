//! A run plan: hosts, and per host the processes to start together.
//!
//! ```toml
//! duration = "30s"          # optional: stop everything after this long
//! grace = "5s"              # SIGTERM, then SIGKILL after this long (default 5s)
//! on_failure = "stop"       # "stop" (default) or "continue" when a process fails
//! ssh_args = ["-F", "cluster.conf"]   # optional, for every host
//! output_dir = "out"        # optional: each stream also to out/<host>/<name>-<i>.out|.err
//! fetch_dir = "results"     # where fetched files go (default ./mitossh-run)
//!
//! [[host]]
//! address = "node1"         # as ssh takes it: alias, user@host, a named context
//!
//! [[host.process]]
//! name = "replica"
//! count = 12
//! command = "replica --id {i} --listen {host}:{port}"
//! vars = { port = "70{i}" }
//! fetch = ["/tmp/replica-{i}.log"]
//! ```
//!
//! In templates, `{i}` is the process's index among all processes of that name in the
//! plan (0, 1, …, in host order), `{n}` its index on its host, `{host}` the host's
//! address, `{name}` the process name, and any variable of `vars` (themselves templates
//! of the built-in ones). `{{` and `}}` are literal braces. An unknown name is an error.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::parse_duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    duration: Option<String>,
    grace: Option<String>,
    on_failure: Option<String>,
    #[serde(default)]
    ssh_args: Vec<String>,
    output_dir: Option<PathBuf>,
    fetch_dir: Option<PathBuf>,
    #[serde(rename = "host", default)]
    hosts: Vec<HostEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostEntry {
    address: String,
    #[serde(default)]
    ssh_args: Vec<String>,
    #[serde(rename = "process", default)]
    processes: Vec<ProcessEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessEntry {
    name: String,
    #[serde(default = "one")]
    count: u32,
    command: String,
    #[serde(default)]
    vars: BTreeMap<String, toml::Value>,
    #[serde(default)]
    fetch: Vec<String>,
}

fn one() -> u32 {
    1
}

/// A plan, expanded: everything needed to start, stop and collect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub duration: Option<Duration>,
    pub grace: Duration,
    pub stop_on_failure: bool,
    pub output_dir: Option<PathBuf>,
    pub fetch_dir: PathBuf,
    pub hosts: Vec<Host>,
    pub procs: Vec<Proc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub address: String,
    /// ssh options for this host (the plan's, then the host's).
    pub ssh_args: Vec<String>,
}

/// One process to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Index into [`Plan::hosts`].
    pub host: usize,
    pub name: String,
    /// `{i}`: its index among processes of its name.
    pub index: u32,
    pub command: String,
    /// Remote paths to bring back afterwards.
    pub fetch: Vec<String>,
}

impl Proc {
    /// `name[i]`, as output lines and the summary show it.
    pub fn label(&self) -> String {
        format!("{}[{}]", self.name, self.index)
    }
}

pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Parses and expands a plan file's text.
pub fn parse(text: &str) -> Result<Plan, String> {
    let file: PlanFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let stop_on_failure = match file.on_failure.as_deref() {
        None | Some("stop") => true,
        Some("continue") => false,
        Some(other) => {
            return Err(format!(
                "on_failure = {other:?}: use \"stop\" or \"continue\""
            ));
        }
    };
    let mut plan = Plan {
        duration: file.duration.as_deref().map(parse_duration).transpose()?,
        grace: file
            .grace
            .as_deref()
            .map(parse_duration)
            .transpose()?
            .unwrap_or(DEFAULT_GRACE),
        stop_on_failure,
        output_dir: file.output_dir,
        fetch_dir: file.fetch_dir.unwrap_or_else(|| "mitossh-run".into()),
        hosts: Vec::new(),
        procs: Vec::new(),
    };
    let mut next_index: HashMap<String, u32> = HashMap::new();
    for host in file.hosts {
        if host.address.is_empty() {
            return Err("a host has an empty address".into());
        }
        let h = plan.hosts.len();
        let mut ssh_args = file.ssh_args.clone();
        ssh_args.extend(host.ssh_args);
        plan.hosts.push(Host {
            address: host.address.clone(),
            ssh_args,
        });
        for p in host.processes {
            let vars: Vec<(String, String)> = p
                .vars
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect();
            for n in 0..p.count {
                let counter = next_index.entry(p.name.clone()).or_insert(0);
                let index = *counter;
                *counter += 1;
                let mut values: HashMap<String, String> = HashMap::from([
                    ("i".into(), index.to_string()),
                    ("n".into(), n.to_string()),
                    ("host".into(), host.address.clone()),
                    ("name".into(), p.name.clone()),
                ]);
                for (k, v) in &vars {
                    let expanded =
                        expand(v, &values).map_err(|e| format!("{} var {k}: {e}", p.name))?;
                    values.insert(k.clone(), expanded);
                }
                let command =
                    expand(&p.command, &values).map_err(|e| format!("{}: {e}", p.name))?;
                let fetch = p
                    .fetch
                    .iter()
                    .map(|f| expand(f, &values))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("{} fetch: {e}", p.name))?;
                plan.procs.push(Proc {
                    host: h,
                    name: p.name.clone(),
                    index,
                    command,
                    fetch,
                });
            }
        }
    }
    if plan.procs.is_empty() {
        return Err("the plan starts no process (add [[host]] and [[host.process]] tables)".into());
    }
    Ok(plan)
}

/// The short form: `count` copies of `command` on each host.
pub fn short(
    hosts: &[String],
    count: u32,
    command: &str,
    ssh_args: &[String],
    duration: Option<Duration>,
) -> Result<Plan, String> {
    let mut text = String::new();
    if let Some(d) = duration {
        text.push_str(&format!("duration = \"{}ms\"\n", d.as_millis()));
    }
    text.push_str(&format!("ssh_args = {}\n", toml_list(ssh_args)));
    for h in hosts {
        text.push_str(&format!(
            "[[host]]\naddress = {}\n[[host.process]]\nname = \"p\"\ncount = {count}\ncommand = {}\n",
            toml_string(h),
            toml_string(command)
        ));
    }
    parse(&text)
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_list(items: &[String]) -> String {
    toml::Value::Array(
        items
            .iter()
            .map(|s| toml::Value::String(s.clone()))
            .collect(),
    )
    .to_string()
}

/// Replaces `{name}` by its value; `{{` and `}}` are literal braces.
pub fn expand(template: &str, values: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                match values.get(&name) {
                    Some(v) => out.push_str(v),
                    None => {
                        let mut known: Vec<&String> = values.keys().collect();
                        known.sort();
                        return Err(format!(
                            "unknown {{{name}}} in {template:?} (known: {known:?})"
                        ));
                    }
                }
            }
            '}' => return Err(format!("a lone '}}' in {template:?} (write '}}}}')")),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"
        duration = "2s"
        grace = "500ms"
        ssh_args = ["-F", "cfg"]

        [[host]]
        address = "a"
        [[host.process]]
        name = "replica"
        count = 2
        command = "replica --id {i} --port {port} --on {host}"
        vars = { port = "70{i}" }
        fetch = ["/tmp/r-{i}.log"]
        [[host.process]]
        name = "load"
        command = "load --target {host} --n {n}"

        [[host]]
        address = "b"
        ssh_args = ["-p", "2222"]
        [[host.process]]
        name = "replica"
        count = 2
        command = "replica --id {i} --port {port} --on {host}"
        vars = { port = "70{i}" }
    "#;

    #[test]
    fn expands_indices_hosts_and_vars() {
        let plan = parse(PLAN).unwrap();
        assert_eq!(plan.duration, Some(Duration::from_secs(2)));
        assert_eq!(plan.grace, Duration::from_millis(500));
        assert!(plan.stop_on_failure);
        assert_eq!(plan.hosts[1].ssh_args, ["-F", "cfg", "-p", "2222"]);
        let commands: Vec<(usize, String, String)> = plan
            .procs
            .iter()
            .map(|p| (p.host, p.label(), p.command.clone()))
            .collect();
        assert_eq!(
            commands,
            [
                (
                    0,
                    "replica[0]".into(),
                    "replica --id 0 --port 700 --on a".into()
                ),
                (
                    0,
                    "replica[1]".into(),
                    "replica --id 1 --port 701 --on a".into()
                ),
                (0, "load[0]".into(), "load --target a --n 0".into()),
                (
                    1,
                    "replica[2]".into(),
                    "replica --id 2 --port 702 --on b".into()
                ),
                (
                    1,
                    "replica[3]".into(),
                    "replica --id 3 --port 703 --on b".into()
                ),
            ]
        );
        assert_eq!(plan.procs[1].fetch, ["/tmp/r-1.log"]);
    }

    #[test]
    fn templates() {
        let values = HashMap::from([("i".to_string(), "3".to_string())]);
        assert_eq!(expand("x{i}y", &values).unwrap(), "x3y");
        assert_eq!(
            expand("awk '{{print $1}}' {i}", &values).unwrap(),
            "awk '{print $1}' 3"
        );
        assert!(
            expand("{nope}", &values)
                .unwrap_err()
                .contains("unknown {nope}")
        );
        assert!(expand("a } b", &values).is_err());
    }

    #[test]
    fn mistakes_are_reported() {
        assert!(parse("").unwrap_err().contains("starts no process"));
        assert!(
            parse("on_failure = \"maybe\"\n")
                .unwrap_err()
                .contains("on_failure")
        );
        assert!(
            parse(
                "[[host]]\naddress = \"a\"\n[[host.process]]\nname = \"x\"\ncommand = \"{who}\"\n"
            )
            .unwrap_err()
            .contains("unknown {who}")
        );
        assert!(parse("duration = \"soon\"\n[[host]]\naddress = \"a\"\n").is_err());
    }

    #[test]
    fn the_short_form() {
        let plan = short(
            &["h1".into(), "h2".into()],
            2,
            "work -i {i}",
            &["-F".into(), "c".into()],
            None,
        )
        .unwrap();
        let commands: Vec<&str> = plan.procs.iter().map(|p| p.command.as_str()).collect();
        assert_eq!(
            commands,
            ["work -i 0", "work -i 1", "work -i 2", "work -i 3"]
        );
        assert_eq!(plan.hosts[1].address, "h2");
        assert_eq!(plan.hosts[0].ssh_args, ["-F", "c"]);
    }
}
