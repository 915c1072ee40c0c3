//! `mitossh run`: many different processes on many hosts, started together (in phases),
//! their output interleaved line by line, stopped together, their files fetched, a
//! summary at the end — for one data point, or a sweep of them over the same connections.
//!
//! - [`plan`]: the TOML plan (or the short form) and its templates;
//! - [`sweep`]: a plan's data points;
//! - [`runner`]: one point: held processes, phases and readiness, stopping, fetching;
//! - [`lines`]: whole lines with `host name[i]` prefixes; [`escape`]: safe for a terminal;
//! - [`progress`]: the status line on a terminal;
//! - [`report`]: tables, `point.json`, `summary.csv` and `summary.json`.
//!
//! This module runs the points one after another and keeps the results directory:
//! `results/<point>/point.json` says how a point went, which is what `--resume` reads.

pub(crate) mod escape;
pub(crate) mod lines;
pub(crate) mod plan;
pub(crate) mod progress;
pub(crate) mod report;
pub(crate) mod runner;
pub(crate) mod sweep;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use crate::client::target;
use crate::proto::Target;
use crate::sshargs as args;
use crate::{config, daemon, paths};
pub use plan::Overrides;
use plan::{Experiment, Plan};
use progress::Progress;
use report::PointSummary;

/// Exit status when the run itself could not be set up.
pub(crate) const RUN_FAILED: i32 = 2;
/// Threads for blocking work (opening sessions, readiness probes, fetches): each costs its
/// allocator's heap, so 48 at once made `mitossh run` 80 MiB; these few keep up.
const BLOCKING_THREADS: usize = 8;
/// A point's summary in its directory.
pub(crate) const POINT_FILE: &str = "point.json";

/// `mitossh run`'s command line.
#[derive(Debug, Clone)]
pub struct Args {
    pub plan: PlanSource,
    /// What the command line changes in the plan.
    pub overrides: Overrides,
    pub show: Show,
    /// Only these points (`--points`).
    pub points: Option<String>,
    /// Skip points whose summary says they completed (`--resume`).
    pub resume: bool,
    /// Use (or start) the master at this socket.
    pub socket: Option<PathBuf>,
    /// For a master started for the run: at most this many ssh handshakes at once.
    pub connect_window: Option<usize>,
}

/// Where the plan comes from.
#[derive(Debug, Clone)]
pub enum PlanSource {
    /// A TOML plan file.
    File(PathBuf),
    /// The short form: `count` copies of `command` on each of `hosts`, each host's ssh
    /// reading `ssh_config` if given, reached through `via` (in order, by `via_mode`).
    Short {
        hosts: Vec<String>,
        count: u32,
        command: String,
        ssh_config: Option<PathBuf>,
        via: Vec<String>,
        via_mode: Option<String>,
    },
}

/// How the run is shown.
#[derive(Debug, Clone, Copy, Default)]
pub struct Show {
    /// The summary as JSON on stdout; output lines on stderr.
    pub json: bool,
    /// No status line.
    pub quiet: bool,
    /// Remote output reaches a terminal as it came (no escaping).
    pub raw: bool,
}

/// How to run a plan.
#[derive(Debug, Clone)]
struct Options {
    experiment: Experiment,
    show: Show,
    points: Option<String>,
    resume: bool,
    master: daemon::MasterOptions,
}

/// Runs `mitossh run`; returns the exit status: 0 when every process did its job, 1 when
/// one failed (or everything was stopped because one did), 130 when interrupted, and
/// [`RUN_FAILED`] when the run could not be set up.
pub fn main(args: Args) -> i32 {
    match Options::of(args).and_then(try_main) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mitossh run: {e}");
            RUN_FAILED
        }
    }
}

impl Options {
    /// The plan (a file, or the short form) with the command line's overrides applied.
    fn of(args: Args) -> Result<Options, String> {
        let mut experiment = match &args.plan {
            PlanSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|text| {
                    plan::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
                })?,
            PlanSource::Short {
                hosts,
                count,
                command,
                ssh_config,
                via,
                via_mode,
            } => {
                let ssh_args: Vec<String> = ssh_config
                    .iter()
                    .flat_map(|f| ["-F".to_string(), f.display().to_string()])
                    .collect();
                plan::short(&plan::Short {
                    hosts: hosts.clone(),
                    count: *count,
                    command: command.clone(),
                    ssh_args,
                    duration: args.overrides.duration,
                    via: via.clone(),
                    via_mode: via_mode.clone(),
                })?
            }
        };
        experiment.apply(&args.overrides)?;
        Ok(Options {
            experiment,
            show: args.show,
            points: args.points,
            resume: args.resume,
            master: daemon::MasterOptions {
                socket: args.socket,
                connect_window: args.connect_window,
                ..Default::default()
            },
        })
    }
}

fn try_main(mut opts: Options) -> Result<i32, String> {
    // Three descriptors per process (its control connection and two output pipes): a
    // few hundred processes are past the usual soft limit of 1024.
    let _ = crate::sys::limits::raise_descriptor_limit();
    let exp = &opts.experiment;
    if exp.results.is_none() && (opts.points.is_some() || opts.resume) {
        return Err("--points and --resume need a sweep or a results directory (results = \"…\" in the plan, or --results DIR)".into());
    }
    let selected = match &opts.points {
        Some(spec) => select(exp, spec)?,
        None => (0..exp.points.len()).collect(),
    };
    let to_run = match &exp.results {
        Some(results) => prepare_results(exp, results, &selected, opts.resume)?,
        None => {
            refuse_existing_files(exp)?;
            selected.clone()
        }
    };
    let config = config::load()?;
    let targets: Vec<Target> = exp
        .hosts
        .iter()
        .map(|h| plan_target(h, &config))
        .collect::<Result<_, _>>()?;
    let real_ssh = paths::find_real("ssh").ok_or("ssh was not found on PATH")?;
    let dir = paths::scratch_dir("run").map_err(|e| e.to_string())?;
    // Between points no stream is open: a master we start must not close the
    // connections during a long pause.
    if exp.pause > Duration::from_secs(300) && opts.master.idle_timeout.is_none() {
        opts.master.idle_timeout = Some(format!("{}s", exp.pause.as_secs() + 600));
    }
    let master = daemon::ensure(&opts.master, &dir, &real_ssh).map_err(|e| e.to_string())?;
    let terminal = if opts.show.json {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let progress = Progress::new(
        !opts.show.quiet && std::io::stderr().is_terminal(),
        exp.points.len(),
    );
    let display = runner::Display {
        colour: terminal && std::env::var_os("NO_COLOR").is_none(),
        to_stderr: opts.show.json,
        escape: terminal && !opts.show.raw,
        progress: progress.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .map_err(|e| e.to_string())?;
    let code = runtime.block_on(async {
        let interrupted = watch_interrupts()?;
        let shared = runner::Shared {
            targets: &targets,
            socket: master.socket(),
            display,
            interrupted,
        };
        Ok::<_, String>(run_points(&opts, &selected, &to_run, &shared).await)
    });
    progress.finish();
    drop(runtime);
    master.finish();
    let _ = std::fs::remove_dir_all(&dir);
    let (code, summaries) = code?;
    if let Some(results) = &opts.experiment.results {
        finish_sweep(&opts, results, summaries)?;
    }
    Ok(code)
}

/// A watch that turns true on the first ^C; a second ^C ends the program at once.
fn watch_interrupts() -> Result<watch::Receiver<bool>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        if sigint.recv().await.is_some() {
            let _ = tx.send(true);
        }
        if sigint.recv().await.is_some() {
            eprintln!("mitossh run: interrupted twice; leaving now");
            std::process::exit(130);
        }
    });
    Ok(rx)
}

/// Runs the points `to_run` (of `selected`) one after another. Returns the exit status
/// and, per point run, its summary.
async fn run_points(
    opts: &Options,
    selected: &[usize],
    to_run: &[usize],
    shared: &runner::Shared<'_>,
) -> (i32, Vec<PointSummary>) {
    let exp = &opts.experiment;
    let progress = &shared.display.progress;
    let sweeping = exp.results.is_some();
    for k in selected.iter().filter(|k| !to_run.contains(k)) {
        progress.println(&format!(
            "mitossh run: point {}/{} {}: completed earlier, skipped",
            k + 1,
            exp.points.len(),
            exp.points[*k].name
        ));
    }
    let mut summaries = Vec::new();
    let mut interrupted = shared.interrupted.clone();
    let mut code = 0;
    for (ran, &k) in to_run.iter().enumerate() {
        if *interrupted.borrow() {
            break;
        }
        let point = &exp.points[k];
        if ran > 0 && !exp.pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(exp.pause) => {}
                _ = interrupted.wait_for(|i| *i) => break,
            }
        }
        progress.start_point(k, &point.name, point.plan.duration, to_run.len() - ran - 1);
        if sweeping {
            progress.println(&format!(
                "mitossh run: point {}/{} {} starts",
                k + 1,
                exp.points.len(),
                point.name
            ));
        }
        let summary = run_point(point, &exp.vars, shared).await;
        progress.end_point();
        if let Some(results) = &exp.results {
            let dir = results.join(&point.name);
            if let Err(e) =
                write_atomically(&dir.join(POINT_FILE), report::json(&summary).as_bytes())
            {
                progress.println(&format!("mitossh run: {e}"));
                code = 1;
            }
            progress.println(&report::point_line(k, exp.points.len(), &summary));
        } else if opts.show.json {
            println!("{}", report::json(&summary));
        } else {
            progress.suspend(|| eprint!("{}", report::table(&summary, exp.hosts.len())));
        }
        // The table has it; otherwise it goes to stderr on its own, once per host.
        if sweeping || opts.show.json {
            let list = report::unreachable_list(&summary, exp.hosts.len());
            if !list.is_empty() {
                progress.suspend(|| eprint!("{list}"));
            }
        }
        code = code.max(match summary.status.as_str() {
            report::INTERRUPTED => 130,
            report::COMPLETED => 0,
            _ => 1,
        });
        summaries.push(summary);
    }
    if *interrupted.borrow() {
        code = 130;
    }
    (code, summaries)
}

/// One point: setup, the processes, teardown.
async fn run_point(
    point: &plan::Point,
    vars: &[String],
    shared: &runner::Shared<'_>,
) -> PointSummary {
    let plan = &point.plan;
    let dir = point_dir(plan);
    let mut errors = Vec::new();
    if !plan.setup.is_empty() {
        errors = runner::on_every_host(plan, &plan.setup, "setup", &dir, shared).await;
    }
    if !errors.is_empty() {
        let teardown = teardown(plan, &dir, shared).await;
        errors.extend(teardown);
        return report::not_run(point, vars, report::FAILED, "its setup failed", errors);
    }
    let report = runner::run(plan, shared).await;
    errors.extend(teardown(plan, &dir, shared).await);
    report::summary(point, vars, &report, errors)
}

async fn teardown(plan: &Plan, dir: &Path, shared: &runner::Shared<'_>) -> Vec<String> {
    if plan.teardown.is_empty() {
        return Vec::new();
    }
    runner::on_every_host(plan, &plan.teardown, "teardown", dir, shared).await
}

/// Where a point's setup and teardown output goes.
fn point_dir(plan: &Plan) -> PathBuf {
    match &plan.layout {
        plan::Layout::Point(dir) => dir.clone(),
        plan::Layout::Separate {
            output: Some(o), ..
        } => o.clone(),
        plan::Layout::Separate { fetch, .. } => fetch.clone(),
    }
}

/// Checks the results directory before anything runs, and returns the points to run.
/// Without `resume`, earlier results are never overwritten: they are an error. With it,
/// completed points are skipped and an unfinished point's directory is moved aside
/// (`<point>.attempt-1`, …) so that nothing is lost.
fn prepare_results(
    exp: &Experiment,
    results: &Path,
    selected: &[usize],
    resume: bool,
) -> Result<Vec<usize>, String> {
    let mut to_run = Vec::new();
    for &k in selected {
        let dir = results.join(&exp.points[k].name);
        if !dir.exists() {
            to_run.push(k);
            continue;
        }
        if !resume {
            return Err(format!(
                "{} holds results of an earlier run: pass --resume to go on with that sweep (completed points are skipped), or choose another directory with --results",
                dir.display()
            ));
        }
        let done = report::read_point(&dir.join(POINT_FILE))
            .is_some_and(|s| s.status == report::COMPLETED);
        if done {
            continue;
        }
        let aside = (1..)
            .map(|a| results.join(format!("{}.attempt-{a}", exp.points[k].name)))
            .find(|p| !p.exists())
            .unwrap_or_default();
        std::fs::rename(&dir, &aside).map_err(|e| {
            format!(
                "cannot move {} aside to {}: {e}",
                dir.display(),
                aside.display()
            )
        })?;
        to_run.push(k);
    }
    std::fs::create_dir_all(results).map_err(|e| format!("{}: {e}", results.display()))?;
    Ok(to_run)
}

/// Writes `summary.csv` and `summary.json` from every point's `point.json` on disk (so
/// points completed by earlier runs are in them), and says so.
fn finish_sweep(opts: &Options, results: &Path, ran: Vec<PointSummary>) -> Result<(), String> {
    let exp = &opts.experiment;
    let points: Vec<PointSummary> = exp
        .points
        .iter()
        .filter_map(|p| {
            ran.iter()
                .find(|s| s.point == p.name)
                .cloned()
                .or_else(|| report::read_point(&results.join(&p.name).join(POINT_FILE)))
        })
        .collect();
    let csv = report::csv(&exp.vars, &points)?;
    write_atomically(&results.join("summary.csv"), &csv)?;
    let all = report::SweepSummary {
        vars: &exp.vars,
        points: &points,
    };
    let json = report::json(&all);
    write_atomically(&results.join("summary.json"), json.as_bytes())?;
    if opts.show.json {
        println!("{json}");
    } else {
        eprint!("{}", report::sweep_table(&points));
        eprintln!(
            "mitossh run: {} of {} points completed; results in {} (summary.csv, summary.json)",
            points
                .iter()
                .filter(|s| s.status == report::COMPLETED)
                .count(),
            exp.points.len(),
            results.display()
        );
    }
    Ok(())
}

/// Without a results directory, output and fetched files go where the plan says: none of
/// them may exist (an earlier run's, or anyone's), since mitossh overwrites nothing.
fn refuse_existing_files(exp: &Experiment) -> Result<(), String> {
    let existing: Vec<PathBuf> = (exp.points.iter())
        .flat_map(|p| p.plan.existing_destinations())
        .collect();
    match existing.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} exists{}: mitossh does not overwrite files; remove them, choose other directories (--output-dir, --fetch-dir), or keep each run apart with --results",
            first.display(),
            match existing.len() {
                1 => String::new(),
                n => format!(" (and {} more of this run's files)", n - 1),
            }
        )),
    }
}

/// Writes a file under a temporary name and renames it into place, so a reader (or
/// `--resume` after a crash) sees the old file or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `--points`: names, 1-based numbers and ranges (`2-4`), comma separated, in plan order.
pub(crate) fn select(exp: &Experiment, spec: &str) -> Result<Vec<usize>, String> {
    let n = exp.points.len();
    let mut chosen = vec![false; n];
    for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if let Some(k) = exp.position(word) {
            chosen[k] = true;
            continue;
        }
        let (a, b) = word.split_once('-').unwrap_or((word, word));
        let (a, b) = match (a.parse::<usize>(), b.parse::<usize>()) {
            (Ok(a), Ok(b)) if 1 <= a && a <= b && b <= n => (a, b),
            _ => {
                let names: Vec<&str> = exp.points.iter().map(|p| p.name.as_str()).collect();
                return Err(format!(
                    "--points {word:?}: not a point (points are 1-{n}: {})",
                    names.join(", ")
                ));
            }
        };
        for c in &mut chosen[a - 1..b] {
            *c = true;
        }
    }
    let selected: Vec<usize> = (0..n).filter(|k| chosen[*k]).collect();
    if selected.is_empty() {
        return Err("--points selects no point".into());
    }
    Ok(selected)
}

/// Where a plan's host is: as [`host_target`] has it, through the plan's `via` when it
/// names gateways (which replace the environment's; the master's own host has none).
fn plan_target(host: &plan::Host, config: &config::Config) -> Result<Target, String> {
    let resolved = host_target(&host.address, &host.ssh_args, config)?;
    if host.via.is_empty() || resolved.local {
        return Ok(resolved);
    }
    target::through(resolved, &host.via, host.via_mode)
        .map_err(|e| format!("host {}: {e}", host.address))
}

/// Where a plan's host is, exactly as the ssh shim would resolve `ssh ARGS ADDRESS`
/// (named contexts and `--become`/`--via` in the environment included); `local` is the
/// master's own host, unless a named context of that name says otherwise.
fn host_target(
    address: &str,
    ssh_args: &[String],
    config: &config::Config,
) -> Result<Target, String> {
    if address == config::LOCAL_HOST && !config.contexts.contains_key(address) {
        return Ok(Target {
            local: true,
            ..Target::default()
        });
    }
    let mut words: Vec<OsString> = ssh_args.iter().map(OsString::from).collect();
    words.push(address.into());
    let inv = args::parse(&words).map_err(|e| format!("host {address}: {e}"))?;
    target::resolve(&inv, None, config).map(|r| r.target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment() -> Experiment {
        plan::parse(
            "[sweep]\nclients = [1, 2, 4, 8]\n[[host]]\naddress = \"a\"\n[[host.process]]\nname = \"x\"\ncommand = \"c\"\n",
        )
        .unwrap()
    }

    #[test]
    fn local_is_the_masters_own_host_unless_a_context_is_called_so() {
        let none = config::Config::default();
        let t = host_target("local", &["-F".into(), "x".into()], &none).unwrap();
        assert!(t.local && t.hops.is_empty());
        let t = host_target("node1", &[], &none).unwrap();
        assert!(!t.local && t.hops.len() == 1);
        let named = config::parse("[contexts.local]\nhost = \"web1\"\n").unwrap();
        let t = host_target("local", &[], &named).unwrap();
        assert!(!t.local && t.hops[0].host == b"web1");
    }

    #[test]
    fn points_by_name_number_and_range() {
        let e = experiment();
        assert_eq!(select(&e, "clients-4").unwrap(), [2]);
        assert_eq!(select(&e, "4,1").unwrap(), [0, 3]);
        assert_eq!(select(&e, "2-3, clients-8").unwrap(), [1, 2, 3]);
        assert!(select(&e, "5").unwrap_err().contains("points are 1-4"));
        assert!(
            select(&e, "clients-3")
                .unwrap_err()
                .contains("clients-1, clients-2")
        );
        assert!(select(&e, ",").unwrap_err().contains("no point"));
    }

    #[test]
    fn earlier_results_are_kept() {
        let e = experiment();
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("r");
        assert_eq!(
            prepare_results(&e, &results, &[0, 1, 2], false).unwrap(),
            [0, 1, 2]
        );
        // Point 1 completed, point 2 was interrupted: without --resume, an error.
        let done = report::not_run(&e.points[0], &e.vars, report::COMPLETED, "", Vec::new());
        write_atomically(
            &results.join("clients-1").join(POINT_FILE),
            report::json(&done).as_bytes(),
        )
        .unwrap();
        std::fs::create_dir_all(results.join("clients-2")).unwrap();
        std::fs::write(results.join("clients-2").join("partial"), "x").unwrap();
        assert!(
            prepare_results(&e, &results, &[0, 1, 2], false)
                .unwrap_err()
                .contains("--resume")
        );
        // With it: point 1 skipped, point 2's directory moved aside, nothing removed.
        assert_eq!(
            prepare_results(&e, &results, &[0, 1, 2], true).unwrap(),
            [1, 2]
        );
        assert!(!results.join("clients-2").exists());
        assert_eq!(
            std::fs::read_to_string(results.join("clients-2.attempt-1").join("partial")).unwrap(),
            "x"
        );
    }
}
