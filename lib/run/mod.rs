//! `mitossh run`: many different processes on many hosts, started together, their output
//! interleaved line by line, stopped together, their files fetched, a summary at the end.
//!
//! - [`plan`]: the TOML plan (or the short form) and its templates;
//! - [`runner`]: opening held processes, the release barrier, stopping, fetching;
//! - [`lines`]: whole lines with `host name[i]` prefixes;
//! - [`report`]: the table and `--json`.

pub mod lines;
pub mod plan;
pub mod report;
pub mod runner;

use std::ffi::OsString;
use std::io::IsTerminal;

use crate::proto::Target;
use crate::shim::{args, target};
use crate::{config, daemon, paths};
use plan::Plan;

/// Exit status when the run itself could not be set up.
pub const RUN_FAILED: i32 = 2;

/// How to run a plan.
#[derive(Debug, Clone)]
pub struct Options {
    pub plan: Plan,
    pub json: bool,
    pub master: daemon::MasterOptions,
}

/// Runs the plan; returns the exit status: 0 when every process did its job, 1 when
/// one failed (or everything was stopped because one did), 130 when interrupted.
pub fn main(opts: Options) -> i32 {
    match try_main(opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mitossh run: {e}");
            RUN_FAILED
        }
    }
}

fn try_main(opts: Options) -> Result<i32, String> {
    let config = config::load()?;
    let targets: Vec<Target> = opts
        .plan
        .hosts
        .iter()
        .map(|h| host_target(&h.address, &h.ssh_args, &config))
        .collect::<Result<_, _>>()?;
    let real_ssh = paths::find_real("ssh").ok_or("ssh was not found on PATH")?;
    let dir = paths::scratch_dir("run").map_err(|e| e.to_string())?;
    let master = daemon::ensure(&opts.master, &dir, &real_ssh).map_err(|e| e.to_string())?;
    let terminal = if opts.json {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let colour = terminal && std::env::var_os("NO_COLOR").is_none();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let report = runtime.block_on(runner::run(
        &opts.plan,
        &targets,
        master.socket(),
        colour,
        opts.json,
    ));
    drop(runtime);
    master.finish();
    let _ = std::fs::remove_dir_all(&dir);
    if opts.json {
        println!("{}", report::json(&report, &opts.plan));
    } else {
        eprint!("{}", report::table(&report, &opts.plan));
    }
    Ok(match report.reason {
        runner::StopReason::Interrupted => 130,
        _ if report.procs.iter().any(|r| r.failed()) => 1,
        runner::StopReason::Failure(_) | runner::StopReason::StartFailed => 1,
        _ => 0,
    })
}

/// Where a plan's host is, exactly as the ssh shim would resolve `ssh ARGS ADDRESS`
/// (named contexts and `--become`/`--via` in the environment included).
fn host_target(
    address: &str,
    ssh_args: &[String],
    config: &config::Config,
) -> Result<Target, String> {
    let mut words: Vec<OsString> = ssh_args.iter().map(OsString::from).collect();
    words.push(address.into());
    let inv = args::parse(&words).map_err(|e| format!("host {address}: {e}"))?;
    target::resolve(&inv, None, config).map(|r| r.target)
}
