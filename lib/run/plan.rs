//! A run plan: hosts, and per host the processes to start; optionally a sweep over data
//! points, phases with readiness, and a results directory.
//!
//! ```toml
//! duration = "30s"          # optional: stop everything this long after the last phase started
//! grace = "5s"              # SIGTERM, then SIGKILL after this long (default 5s)
//! on_failure = "stop"       # "stop" (default) or "continue" when a process fails
//! on_unreachable = "continue"  # (default) hosts that cannot be connected are reported,
//!                           # the others run; "stop": stop everything then
//! ssh_args = ["-F", "cluster.conf"]   # optional, for every host
//! via = "gw"                # optional: reach every host through gw (or a list of hops)
//! via_mode = "ssh"          # "tcp" (default: the master's ssh through gw) or "ssh":
//!                           # gw's agent runs the ssh to each host (a tier)
//! output_dir = "out"        # optional: each stream also to out/<host>/<name>-<i>.out|.err
//! fetch_dir = "fetched"     # where fetched files go (default ./mitossh-run)
//! results = "results"       # instead of the two above: results/<point>/<host>/<name>-<i>/
//! pause = "10s"             # between data points
//! setup = "rm -rf /tmp/db"  # on every host before each point (teardown = "…": after it)
//!
//! [sweep]                   # optional: data points (see `sweep`); {clients} in templates
//! clients = [1, 2, 4]
//!
//! [[host]]
//! address = "node1"         # as ssh takes it: alias, user@host, a named context, or
//!                           # "local": the master's own host, with no ssh
//! via = ["rack7-gw"]        # optional: overrides the plan's (via_mode too)
//!
//! [[host.process]]
//! name = "replica"
//! count = 12                # or a template: "{clients}"
//! command = "replica --id {i} --listen {host}:{port}"
//! vars = { port = "70{i}" }
//! env = { RUST_LOG = "info" }
//! cwd = "/srv/replica"      # relative: to the home directory
//! ready = { port = "{port}" }  # accepts on localhost (or host = "…"), from its host;
//!                              # or { line = "REGEX" } (of its output), or { delay = "2s" }
//! ready_timeout = "60s"
//! fetch = ["/tmp/replica-{i}.log"]
//!
//! [[host.process]]
//! name = "client"
//! after = "replica"         # started once every replica is ready
//! command = "load --target {host}:7000"
//! ```
//!
//! In templates, `{i}` is the process's index among all processes of that name in the
//! plan (0, 1, …, in host order), `{n}` its index on its host, `{host}` the host's
//! address, `{name}` the process name, the sweep's variables, `{point}` and `{repeat}`,
//! and any variable of `vars` (themselves templates of the others). `{{` and `}}` are
//! literal braces. An unknown name is an error.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::sweep::{self, Sweep, value_text};
use crate::config::{parse_duration, parse_via_mode};
use crate::proto::ViaMode;
use phases::phases;

mod phases;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    duration: Option<String>,
    grace: Option<String>,
    on_failure: Option<String>,
    on_unreachable: Option<String>,
    #[serde(default)]
    ssh_args: Vec<String>,
    via: Option<toml::Value>,
    via_mode: Option<String>,
    output_dir: Option<PathBuf>,
    fetch_dir: Option<PathBuf>,
    results: Option<PathBuf>,
    pause: Option<String>,
    setup: Option<String>,
    teardown: Option<String>,
    sweep: Option<toml::Table>,
    #[serde(rename = "host", default)]
    hosts: Vec<HostEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostEntry {
    address: String,
    #[serde(default)]
    ssh_args: Vec<String>,
    via: Option<toml::Value>,
    via_mode: Option<String>,
    #[serde(rename = "process", default)]
    processes: Vec<ProcessEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessEntry {
    name: String,
    count: Option<toml::Value>,
    command: String,
    #[serde(default)]
    vars: BTreeMap<String, toml::Value>,
    #[serde(default)]
    env: BTreeMap<String, toml::Value>,
    cwd: Option<String>,
    after: Option<toml::Value>,
    ready: Option<ReadyEntry>,
    ready_timeout: Option<String>,
    #[serde(default)]
    fetch: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadyEntry {
    port: Option<toml::Value>,
    /// Where to connect for `port`, from the process's host (default localhost).
    host: Option<String>,
    line: Option<String>,
    delay: Option<String>,
}

/// An experiment: data points run one after another over the same connections.
#[derive(Debug, Clone)]
pub(crate) struct Experiment {
    pub hosts: Vec<Host>,
    /// The sweep's variable names (columns of the summary).
    pub vars: Vec<String>,
    pub points: Vec<Point>,
    /// Where each point gets a directory; `None`: one run with the plain layout.
    pub results: Option<PathBuf>,
    pub pause: Duration,
}

/// One data point: its name, its variables' values, and its expanded plan.
#[derive(Debug, Clone)]
pub(crate) struct Point {
    pub name: String,
    pub values: Vec<String>,
    pub repeat: u32,
    pub plan: Plan,
}

/// One point's plan, expanded: everything needed to start, stop and collect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub duration: Option<Duration>,
    pub grace: Duration,
    pub stop_on_failure: bool,
    /// Stop everything when a host cannot be connected (else its processes are reported
    /// not connected, and the others run).
    pub stop_on_unreachable: bool,
    pub layout: Layout,
    pub hosts: Vec<Host>,
    pub procs: Vec<Proc>,
    pub phases: Vec<Phase>,
    /// Per host, the command to run before the point (empty: none).
    pub setup: Vec<String>,
    /// Per host, the command to run after the point (empty: none).
    pub teardown: Vec<String>,
}

/// Where a point's output files and fetched files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `output/<host>/<name>-<i>.out|.err` (if asked) and `fetch/<host>/<name>-<i>/`.
    Separate {
        output: Option<PathBuf>,
        fetch: PathBuf,
    },
    /// `dir/<host>/<name>-<i>/stdout|stderr`, and fetched files beside them.
    Point(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host {
    pub address: String,
    /// ssh options for this host (the plan's, then the host's).
    pub ssh_args: Vec<String>,
    /// Hosts to go through first, in order (the host's, else the plan's), and how.
    pub via: Vec<String>,
    pub via_mode: ViaMode,
}

/// One process to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proc {
    /// Index into [`Plan::hosts`].
    pub host: usize,
    pub name: String,
    /// `{i}`: its index among processes of its name.
    pub index: u32,
    pub command: String,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// How it says it is ready; `None`: as soon as it runs.
    pub ready: Option<Ready>,
    pub ready_timeout: Duration,
    /// Index into [`Plan::phases`].
    pub phase: usize,
    /// Remote paths to bring back afterwards.
    pub fetch: Vec<String>,
}

/// When a process counts as ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ready {
    /// A TCP connection to `host:port`, made from the process's host, is accepted.
    Port { host: String, port: u16 },
    /// A line of its stdout or stderr matches this regular expression.
    Line(String),
    /// This long after it started.
    Delay(Duration),
}

/// Processes released together: those that wait for the same names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Phase {
    /// The process names in this phase, in plan order.
    pub names: Vec<String>,
    /// It starts once every process of these names is ready.
    pub after: Vec<String>,
}

impl Phase {
    /// `1 (replica)` or `2 (client, after replica)`, for messages.
    pub(crate) fn label(&self, k: usize) -> String {
        if self.after.is_empty() {
            format!("{} ({})", k + 1, self.names.join(", "))
        } else {
            format!(
                "{} ({}, after {})",
                k + 1,
                self.names.join(", "),
                self.after.join(", ")
            )
        }
    }
}

impl Proc {
    /// `name[i]`, as output lines and the summary show it.
    pub(crate) fn label(&self) -> String {
        format!("{}[{}]", self.name, self.index)
    }
}

impl Plan {
    /// `<name>-<i>`: the process's directory or file stem.
    fn stem(p: &Proc) -> String {
        format!("{}-{}", p.name, p.index)
    }

    /// Where process `p`'s stdout and stderr are kept, if anywhere.
    pub(crate) fn output_paths(&self, p: &Proc) -> Option<(PathBuf, PathBuf)> {
        let host = &self.hosts[p.host].address;
        match &self.layout {
            Layout::Separate { output, .. } => {
                let dir = output.as_ref()?.join(host);
                let stem = Plan::stem(p);
                Some((
                    dir.join(format!("{stem}.out")),
                    dir.join(format!("{stem}.err")),
                ))
            }
            Layout::Point(dir) => {
                let dir = dir.join(host).join(Plan::stem(p));
                Some((dir.join("stdout"), dir.join("stderr")))
            }
        }
    }

    /// The directory process `p`'s fetched files go into.
    pub(crate) fn fetch_dir(&self, p: &Proc) -> PathBuf {
        let host = &self.hosts[p.host].address;
        match &self.layout {
            Layout::Separate { fetch, .. } => fetch.join(host).join(Plan::stem(p)),
            Layout::Point(dir) => dir.join(host).join(Plan::stem(p)),
        }
    }

    /// Each file `p` fetches and where it goes: its name in the process's directory, made
    /// unique among the process's files (`log`, `log.1`, …; `stdout` and `stderr` are
    /// taken by the output).
    pub(crate) fn fetch_paths(&self, p: &Proc) -> Vec<(String, PathBuf)> {
        let dir = self.fetch_dir(p);
        let mut taken: std::collections::HashSet<String> =
            ["stdout", "stderr"].map(String::from).into();
        (p.fetch.iter())
            .map(|remote| {
                let base = std::path::Path::new(remote)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "file".into());
                let mut name = base.clone();
                let mut k = 1;
                while !taken.insert(name.clone()) {
                    name = format!("{base}.{k}");
                    k += 1;
                }
                (remote.clone(), dir.join(name))
            })
            .collect()
    }

    /// Files this plan would write that exist already (a separate layout's output and
    /// fetched files: mitossh overwrites nothing it did not make in this run).
    pub(crate) fn existing_destinations(&self) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        for p in &self.procs {
            if let Some((out, err)) = self.output_paths(p) {
                paths.extend([out, err]);
            }
            paths.extend(self.fetch_paths(p).into_iter().map(|(_, local)| local));
        }
        paths.retain(|p| p.symlink_metadata().is_ok());
        paths
    }
}

pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// How long a process with `ready` may take to be ready, unless the plan says.
pub(crate) const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Where a sweep's results go unless the plan or `--results` says.
pub(crate) const DEFAULT_RESULTS: &str = "results";

/// What the command line changes in a plan.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub duration: Option<Duration>,
    pub grace: Option<Duration>,
    pub continue_on_failure: bool,
    pub output_dir: Option<PathBuf>,
    pub fetch_dir: Option<PathBuf>,
    pub results: Option<PathBuf>,
}

impl Experiment {
    /// Applies the command line's settings to every point.
    pub(crate) fn apply(&mut self, o: &Overrides) -> Result<(), String> {
        if o.results.is_some() {
            self.results = o.results.clone();
        }
        if self.results.is_some() && (o.output_dir.is_some() || o.fetch_dir.is_some()) {
            return Err(
                "--output-dir and --fetch-dir do not go with a results directory: each point keeps its output and files in it".into(),
            );
        }
        for point in &mut self.points {
            let plan = &mut point.plan;
            if o.duration.is_some() {
                plan.duration = o.duration;
            }
            if let Some(g) = o.grace {
                plan.grace = g;
            }
            if o.continue_on_failure {
                plan.stop_on_failure = false;
            }
            match (&self.results, &mut plan.layout) {
                (Some(results), layout) => *layout = Layout::Point(results.join(&point.name)),
                (None, Layout::Separate { output, fetch }) => {
                    if o.output_dir.is_some() {
                        output.clone_from(&o.output_dir);
                    }
                    if let Some(f) = &o.fetch_dir {
                        fetch.clone_from(f);
                    }
                }
                (None, Layout::Point(_)) => {}
            }
        }
        Ok(())
    }

    /// The point named `name`, by position.
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.points.iter().position(|p| p.name == name)
    }
}

/// Parses and expands a plan file's text into its points.
pub(crate) fn parse(text: &str) -> Result<Experiment, String> {
    let file: PlanFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let stop_on_failure = choice(
        file.on_failure.as_deref(),
        "on_failure",
        ("stop", "continue"),
    )?;
    let grace = file
        .grace
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .unwrap_or(DEFAULT_GRACE);
    let pause = file
        .pause
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .unwrap_or(Duration::ZERO);
    let sweep = match &file.sweep {
        Some(table) => sweep::parse(table)?,
        None => Sweep::single(),
    };
    let results = match (&file.results, &file.sweep) {
        (Some(r), _) => Some(r.clone()),
        (None, Some(_)) => Some(PathBuf::from(DEFAULT_RESULTS)),
        (None, None) => None,
    };
    if results.is_some() && (file.output_dir.is_some() || file.fetch_dir.is_some()) {
        return Err("output_dir and fetch_dir do not go with results (or a sweep): each point keeps its output and files in results/<point>/".into());
    }
    let stop_on_unreachable = !choice(
        file.on_unreachable.as_deref(),
        "on_unreachable",
        ("continue", "stop"),
    )?;
    let hosts = parse_hosts(&file)?;
    let mut points = Vec::new();
    for (k, spec) in sweep.points.iter().enumerate() {
        let values = sweep.values(k);
        let layout = match &results {
            Some(r) => Layout::Point(r.join(&spec.name)),
            None => Layout::Separate {
                output: file.output_dir.clone(),
                fetch: file
                    .fetch_dir
                    .clone()
                    .unwrap_or_else(|| "mitossh-run".into()),
            },
        };
        let stops = (stop_on_failure, stop_on_unreachable);
        let plan =
            point_plan(&file, &hosts, &values, layout, grace, stops).map_err(|e| {
                match &file.sweep {
                    Some(_) => format!("point {}: {e}", spec.name),
                    None => e,
                }
            })?;
        points.push(Point {
            name: spec.name.clone(),
            values: spec.values.clone(),
            repeat: spec.repeat,
            plan,
        });
    }
    Ok(Experiment {
        hosts,
        vars: sweep.vars,
        points,
        results,
        pause,
    })
}

/// A key with two values: `true` for the first (also the default), `false` for the second.
fn choice(value: Option<&str>, key: &str, (yes, no): (&str, &str)) -> Result<bool, String> {
    match value {
        None => Ok(true),
        Some(v) if v == yes => Ok(true),
        Some(v) if v == no => Ok(false),
        Some(other) => Err(format!("{key} = {other:?}: use \"{yes}\" or \"{no}\"")),
    }
}

/// The plan's hosts, each with its own ssh arguments after the plan's and its gateways.
fn parse_hosts(file: &PlanFile) -> Result<Vec<Host>, String> {
    let plan_via = via_list(file.via.as_ref(), "via")?;
    let mut hosts = Vec::new();
    for host in &file.hosts {
        if host.address.is_empty() {
            return Err("a host has an empty address".into());
        }
        let mut ssh_args = file.ssh_args.clone();
        ssh_args.extend(host.ssh_args.iter().cloned());
        let via = match &host.via {
            Some(v) => via_list(Some(v), &format!("host {} via", host.address))?,
            None => plan_via.clone(),
        };
        let mode = host.via_mode.as_deref().or(file.via_mode.as_deref());
        let via_mode = parse_via_mode(mode.unwrap_or("tcp"))
            .map_err(|e| format!("host {}: {e}", host.address))?;
        hosts.push(Host {
            address: host.address.clone(),
            ssh_args,
            via,
            via_mode,
        });
    }
    Ok(hosts)
}

/// One point's plan: every template expanded with the point's values.
fn point_plan(
    file: &PlanFile,
    hosts: &[Host],
    point: &HashMap<String, String>,
    layout: Layout,
    grace: Duration,
    (stop_on_failure, stop_on_unreachable): (bool, bool),
) -> Result<Plan, String> {
    let duration = file
        .duration
        .as_deref()
        .map(|d| expand(d, point).and_then(|d| parse_duration(&d)))
        .transpose()
        .map_err(|e| format!("duration: {e}"))?;
    let per_host = |template: &Option<String>, what: &str| -> Result<Vec<String>, String> {
        let Some(t) = template else {
            return Ok(Vec::new());
        };
        hosts
            .iter()
            .map(|h| {
                let mut values = point.clone();
                values.insert("host".into(), h.address.clone());
                expand(t, &values).map_err(|e| format!("{what}: {e}"))
            })
            .collect()
    };
    let mut plan = Plan {
        duration,
        grace,
        stop_on_failure,
        stop_on_unreachable,
        layout,
        hosts: hosts.to_vec(),
        procs: Vec::new(),
        phases: Vec::new(),
        setup: per_host(&file.setup, "setup")?,
        teardown: per_host(&file.teardown, "teardown")?,
    };
    let mut next_index: HashMap<String, u32> = HashMap::new();
    let mut afters: Vec<Vec<String>> = Vec::new();
    for (h, host) in file.hosts.iter().enumerate() {
        for p in &host.processes {
            let count = count(p, point)?;
            let after = after_names(p)?;
            for n in 0..count {
                let counter = next_index.entry(p.name.clone()).or_insert(0);
                let index = *counter;
                *counter += 1;
                let proc = expand_proc(p, h, &host.address, index, n, point)?;
                plan.procs.push(proc);
                afters.push(after.clone());
            }
        }
    }
    if plan.procs.is_empty() {
        return Err("the plan starts no process (add [[host]] and [[host.process]] tables)".into());
    }
    let declared: Vec<&str> = file
        .hosts
        .iter()
        .flat_map(|h| h.processes.iter().map(|p| p.name.as_str()))
        .collect();
    plan.phases = phases(&mut plan.procs, &afters, &declared)?;
    Ok(plan)
}

/// `via = "gw"` or `via = ["bastion", "gw"]`.
fn via_list(value: Option<&toml::Value>, what: &str) -> Result<Vec<String>, String> {
    match value {
        None => Ok(Vec::new()),
        Some(toml::Value::String(s)) if !s.is_empty() => Ok(vec![s.clone()]),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                toml::Value::String(s) if !s.is_empty() => Ok(s.clone()),
                other => Err(format!("{what}: {other} is not a host")),
            })
            .collect(),
        Some(other) => Err(format!(
            "{what} = {other}: give a host, or a list of hosts to go through in order"
        )),
    }
}

fn count(p: &ProcessEntry, point: &HashMap<String, String>) -> Result<u32, String> {
    let text = match &p.count {
        None => return Ok(1),
        Some(toml::Value::Integer(c)) if *c >= 0 && *c <= u32::MAX as i64 => {
            return Ok(*c as u32);
        }
        Some(toml::Value::String(t)) => {
            expand(t, point).map_err(|e| format!("{} count: {e}", p.name))?
        }
        Some(other) => other.to_string(),
    };
    text.trim().parse().map_err(|_| {
        format!(
            "{} count = {text:?}: give a whole number, or a template of one such as \"{{clients}}\"",
            p.name
        )
    })
}

fn after_names(p: &ProcessEntry) -> Result<Vec<String>, String> {
    let mut names = match &p.after {
        None => Vec::new(),
        Some(toml::Value::String(s)) => vec![s.clone()],
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s.clone()),
                other => Err(format!("{} after: {other} is not a process name", p.name)),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "{} after = {other}: give a process name or a list of them",
                p.name
            ));
        }
    };
    names.sort();
    names.dedup();
    Ok(names)
}

/// One process of an entry, its templates expanded.
fn expand_proc(
    p: &ProcessEntry,
    host: usize,
    address: &str,
    index: u32,
    n: u32,
    point: &HashMap<String, String>,
) -> Result<Proc, String> {
    let mut values = point.clone();
    values.extend([
        ("i".to_string(), index.to_string()),
        ("n".into(), n.to_string()),
        ("host".into(), address.to_string()),
        ("name".into(), p.name.clone()),
    ]);
    let name = &p.name;
    for (k, v) in &p.vars {
        let v = value_text(v).map_err(|e| format!("{name} var {k}: {e}"))?;
        let expanded = expand(&v, &values).map_err(|e| format!("{name} var {k}: {e}"))?;
        values.insert(k.clone(), expanded);
    }
    let field = |what: &str, t: &str| expand(t, &values).map_err(|e| format!("{name} {what}: {e}"));
    let env = p
        .env
        .iter()
        .map(|(k, v)| {
            if k.is_empty() || k.contains(['=', '\0']) {
                return Err(format!("{name} env: {k:?} is not a variable name"));
            }
            let v = value_text(v).map_err(|e| format!("{name} env {k}: {e}"))?;
            Ok((k.clone(), field(&format!("env {k}"), &v)?))
        })
        .collect::<Result<_, String>>()?;
    let ready = p.ready.as_ref().map(|r| ready(r, &field)).transpose()?;
    let ready_timeout = p
        .ready_timeout
        .as_deref()
        .map(|t| field("ready_timeout", t).and_then(|t| parse_duration(&t)))
        .transpose()?
        .unwrap_or(DEFAULT_READY_TIMEOUT);
    Ok(Proc {
        host,
        name: name.clone(),
        index,
        command: field("command", &p.command)?,
        env,
        cwd: p.cwd.as_deref().map(|c| field("cwd", c)).transpose()?,
        ready,
        ready_timeout,
        phase: 0,
        fetch: p
            .fetch
            .iter()
            .map(|f| field("fetch", f))
            .collect::<Result<_, _>>()?,
    })
}

fn ready(
    r: &ReadyEntry,
    field: &dyn Fn(&str, &str) -> Result<String, String>,
) -> Result<Ready, String> {
    let given = [r.port.is_some(), r.line.is_some(), r.delay.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err("ready: give exactly one of port, line or delay".into());
    }
    if r.host.is_some() && r.port.is_none() {
        return Err("ready: host goes with port".into());
    }
    if let Some(port) = &r.port {
        let text = field("ready port", &value_text(port)?)?;
        let port: u16 = text
            .trim()
            .parse()
            .map_err(|_| format!("ready port {text:?} is not a port number"))?;
        let host = match &r.host {
            Some(h) => field("ready host", h)?,
            None => "localhost".into(),
        };
        return Ok(Ready::Port { host, port });
    }
    if let Some(line) = &r.line {
        let pattern = field("ready line", line)?;
        regex::bytes::Regex::new(&pattern).map_err(|e| format!("ready line: {e}"))?;
        return Ok(Ready::Line(pattern));
    }
    let delay = r.delay.as_deref().unwrap_or_default();
    Ok(Ready::Delay(parse_duration(&field("ready delay", delay)?)?))
}

/// The short form of a plan (`mitossh run -H … -- COMMAND`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Short {
    pub hosts: Vec<String>,
    /// Copies of `command` on each host.
    pub count: u32,
    pub command: String,
    pub ssh_args: Vec<String>,
    pub duration: Option<Duration>,
    /// Every host is reached through these, in order, by `via_mode`.
    pub via: Vec<String>,
    pub via_mode: Option<String>,
}

/// The short form: `count` copies of `command` on each host.
pub(crate) fn short(s: &Short) -> Result<Experiment, String> {
    let mut text = String::new();
    if let Some(d) = s.duration {
        text.push_str(&format!("duration = \"{}ms\"\n", d.as_millis()));
    }
    text.push_str(&format!("ssh_args = {}\n", toml_list(&s.ssh_args)));
    if !s.via.is_empty() {
        text.push_str(&format!("via = {}\n", toml_list(&s.via)));
    }
    if let Some(mode) = &s.via_mode {
        text.push_str(&format!("via_mode = {}\n", toml_string(mode)));
    }
    for h in &s.hosts {
        text.push_str(&format!(
            "[[host]]\naddress = {}\n[[host.process]]\nname = \"p\"\ncount = {}\ncommand = {}\n",
            toml_string(h),
            s.count,
            toml_string(&s.command)
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
pub(crate) fn expand(template: &str, values: &HashMap<String, String>) -> Result<String, String> {
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
mod tests;
