//! `mitossh-env CMD…`: run CMD with the shims first on PATH and a master at hand.
//!
//! The master is the one `$MITOSSH_SOCKET` (or `--socket`) names if it answers, else one
//! started for the length of CMD (see [`crate::daemon`]). Nothing is left behind.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;

use crate::client::target;
use crate::sys::process::Ignored;
use crate::{daemon, paths};

/// Exit status when mitossh-env itself fails, as GNU env uses.
pub(crate) const ENV_FAILED: i32 = 125;

/// Options of `mitossh-env`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Leave a started master running after CMD exits.
    pub keep: bool,
    /// Use (or start) the master at this socket.
    pub socket: Option<PathBuf>,
    /// Passed to a started master.
    pub idle_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub connect_window: Option<usize>,
    /// Enter every host as this user (`--become`), by this method.
    pub become_user: Option<String>,
    pub become_method: Option<String>,
    /// Reach every host through these hops, in order (`--via`), and how.
    pub via: Vec<String>,
    pub via_mode: Option<String>,
    /// The command and its arguments.
    pub command: Vec<OsString>,
}

/// Runs `mitossh-env`; returns the exit status.
pub fn run(opts: Options) -> i32 {
    match try_run(opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mitossh-env: {e}");
            ENV_FAILED
        }
    }
}

fn try_run(opts: Options) -> io::Result<i32> {
    if let Some(m) = &opts.become_method {
        crate::config::parse_method(m).map_err(io::Error::other)?;
    }
    if let Some(m) = &opts.via_mode {
        crate::config::parse_via_mode(m).map_err(io::Error::other)?;
    }
    let Some((program, args)) = opts.command.split_first() else {
        return Err(io::Error::other(
            "no command given (usage: mitossh-env [OPTIONS] CMD [ARGS]...)",
        ));
    };
    let real_ssh = paths::find_real("ssh").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "ssh was not found on PATH; install openssh-client or set MITOSSH_REAL_SSH",
        )
    })?;
    let dir = paths::scratch_dir("env")?;
    let mut kept = false;
    let result = with_dir(&opts, &dir, &real_ssh, program, args, &mut kept);
    // A kept master lives on in this directory (its socket and log); a later
    // mitossh-env removes it once that master is gone.
    if !kept {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn with_dir(
    opts: &Options,
    dir: &Path,
    real_ssh: &Path,
    program: &OsString,
    args: &[OsString],
    kept: &mut bool,
) -> io::Result<i32> {
    let master = daemon::ensure(
        &daemon::MasterOptions {
            socket: opts.socket.clone(),
            idle_timeout: opts.idle_timeout.clone(),
            connect_timeout: opts.connect_timeout.clone(),
            connect_window: opts.connect_window,
            keep: opts.keep,
        },
        dir,
        real_ssh,
    )?;
    let socket = master.socket().to_path_buf();
    let shims = make_shim_dir(dir)?;

    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    let mut new_path = shims.clone().into_os_string();
    new_path.push(":");
    new_path.push(&path);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("PATH", new_path)
        .env(paths::SOCKET_ENV, &socket)
        .env(paths::SHIM_DIR_ENV, &shims)
        .env(paths::real_env("ssh"), real_ssh);
    let addressing = [
        (target::BECOME_ENV, opts.become_user.clone()),
        (target::BECOME_METHOD_ENV, opts.become_method.clone()),
        (
            target::VIA_ENV,
            (!opts.via.is_empty()).then(|| opts.via.join(",")),
        ),
        (target::VIA_MODE_ENV, opts.via_mode.clone()),
    ];
    for (key, value) in addressing {
        if let Some(v) = value {
            cmd.env(key, v);
        }
    }
    for prog in ["scp", "sftp"] {
        if let Some(real) = paths::find_real(prog) {
            cmd.env(paths::real_env(prog), real);
        }
    }
    let status = match cmd.spawn() {
        Ok(mut child) => {
            // Like system(3): the terminal's ^C and ^\ are for CMD; we wait for it either
            // way. (Ignored only after the spawn: CMD must not inherit SIG_IGN.)
            let _ignored = Ignored::new(&[Signal::SIGINT, Signal::SIGQUIT]);
            child
                .wait()
                .map(|s| s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)))
        }
        Err(e) => {
            let code = if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            eprintln!("mitossh-env: {}: {e}", program.to_string_lossy());
            Ok(code)
        }
    };

    *kept = master.finish();
    status
}

/// A directory with only the `ssh`, `scp` and `sftp` shims and `mitossh` itself (and
/// `mitossh-env`) in it, pointing at the programs built next to this executable, to put
/// first on PATH.
fn make_shim_dir(dir: &Path) -> io::Result<PathBuf> {
    let bin = dir.join("bin");
    paths::private_dir(&bin)?;
    for &prog in paths::SHIM_DIR_PROGRAMS {
        let target = paths::sibling(prog)?;
        let link = bin.join(prog);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)?;
    }
    Ok(bin)
}
