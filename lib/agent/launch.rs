//! Starting a process the way sshd starts a session: the user's login shell, `-c` and the
//! command line, in the home directory, in a new session, with pipes or a pty.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use super::acceptenv::Policy;
use crate::proto::{OpenSpec, WinSize};
use crate::sys::fdio::FdIo;
use crate::sys::user::Account;
use crate::sys::vfork::{Child, Program};

/// Where sftp-server lives on common systems, for `Subsystem sftp internal-sftp` setups
/// and hosts whose sshd_config we cannot read.
const SFTP_SERVERS: &[&str] = &[
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/libexec/sftp-server",
    "/usr/lib/ssh/sftp-server",
    "/usr/lib/sftp-server",
    "/usr/local/libexec/sftp-server",
];

/// A started process and the agent's ends of its stdio.
pub(crate) struct Launched {
    pub child: Child,
    pub pid: u32,
    pub io: LaunchedIo,
    /// For a held process: writing a line here lets it run its command.
    pub go: Option<OwnedFd>,
}

/// How a held process waits: `/bin/sh` reads a line from descriptor 3, then becomes the
/// user's shell running the command (`$0` and `$1`). End of file instead of a line (the
/// agent died) means it never runs.
const HOLD: &str = r#"read _ <&3 && exec 3<&- && exec "$0" -c "$1""#;

/// The agent's ends of a process's stdio.
pub(crate) enum LaunchedIo {
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// stdin and stdout are the pty master; stderr is merged into it.
    Pty { master: FdIo, resize: OwnedFd },
}

/// What every process of this agent shares.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub account: Account,
    /// The shell that runs commands (`-c`), subsystems and held processes. Under sshd and
    /// su, the account's login shell. Under sudo and doas, which run a command themselves
    /// rather than through the target's shell, the shell of whoever ran them: the one that
    /// read the command line before sudo saw it. So a service account whose login shell
    /// is nologin can still run commands, as with sudo.
    pub command_shell: PathBuf,
    /// The agent's own environment as sshd (or sudo) gave it, minus mitossh's variables.
    pub env: Vec<(OsString, OsString)>,
    /// Which of a call's SendEnv/SetEnv variables sshd would have taken.
    pub accept_env: Policy,
}

impl Session {
    /// This agent's account and environment, without mitossh's own variables and those in
    /// `drop` (set by whoever started the agent, for its own purposes). `command_shell`:
    /// the shell its starter ran commands with, for an agent started by sudo or doas.
    pub(crate) fn current(drop: &[String], command_shell: Option<PathBuf>) -> Session {
        let env = std::env::vars_os()
            .filter(|(k, _)| !crate::bootstrap::image::is_private_env(k.as_bytes()))
            .filter(|(k, _)| !drop.iter().any(|d| d.as_bytes() == k.as_bytes()))
            .collect();
        let account = Account::current();
        let command_shell = match command_shell {
            Some(shell) if executable(&shell) => shell,
            Some(_) => PathBuf::from("/bin/sh"),
            None => account.shell.clone(),
        };
        Session {
            account,
            command_shell,
            env,
            accept_env: Policy::discover(),
        }
    }
}

/// Whether this process may execute `path`.
fn executable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// Starts the process `spec` describes.
pub(crate) fn launch(spec: &OpenSpec, session: &Session) -> io::Result<Launched> {
    let (mut cmd, shell) = shell_command(spec, session)?;
    set_environment(&mut cmd, spec, session);
    cmd.current_dir(&working_directory(spec, session)?);
    let pty = match &spec.pty {
        Some(p) => {
            cmd.env("TERM".into(), p.term.clone().into());
            Some(open_pty(p.size)?)
        }
        None => None,
    };
    let go = if spec.hold {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        cmd.place_fd(r.as_raw_fd(), 3);
        Some((r, w))
    } else {
        None
    };
    connect_stdio(&mut cmd, pty.as_ref().map(|(_, slave)| slave));
    // Started without fork: an agent serving many calls would copy its page tables for
    // each, and fault on every page it writes afterwards.
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {}: {e}", shell.display())))?;
    let pid = child.id().unwrap_or(0);
    // The read end now lives in the child only.
    let go = go.map(|(_, w)| w);
    let io = launched_io(&mut child, pty)?;
    Ok(Launched { child, pid, io, go })
}

/// The shell and its arguments, as sshd runs a session: the login shell for an
/// interactive login (`-sh`), else `shell -c command`; a held command waits in `/bin/sh`
/// first. Returns the command and the shell it runs.
fn shell_command<'a>(spec: &OpenSpec, session: &'a Session) -> io::Result<(Program, &'a Path)> {
    let interactive = spec.subsystem.is_none() && spec.command.is_none();
    let shell = if interactive {
        &session.account.shell
    } else {
        &session.command_shell
    };
    let shell_name = shell
        .file_name()
        .map(OsStr::to_os_string)
        .unwrap_or_else(|| OsString::from("sh"));
    let mut cmd = Program::new(shell);
    match (&spec.subsystem, &spec.command) {
        (Some(name), _) => {
            let program = subsystem_command(name).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("subsystem request failed: no {name} subsystem on this host"),
                )
            })?;
            cmd.arg0(&shell_name).args([OsStr::new("-c"), &program]);
        }
        (None, Some(command)) if spec.hold => {
            cmd = Program::new(Path::new("/bin/sh"));
            cmd.arg0("sh").args([
                OsStr::new("-c"),
                OsStr::new(HOLD),
                shell.as_os_str(),
                OsStr::from_bytes(command),
            ]);
        }
        (None, Some(command)) => {
            cmd.arg0(&shell_name)
                .args([OsStr::new("-c"), OsStr::from_bytes(command)]);
        }
        (None, None) if spec.hold => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "only a command can be held",
            ));
        }
        (None, None) => {
            let mut login = OsString::from("-");
            login.push(&shell_name);
            cmd.arg0(login);
        }
    }
    Ok((cmd, shell))
}

/// The session's environment, then the call's own and what `AcceptEnv` lets through of
/// what ssh sent.
fn set_environment(cmd: &mut Program, spec: &OpenSpec, session: &Session) {
    cmd.env_clear();
    for (k, v) in &session.env {
        cmd.env(k.clone(), v.clone());
    }
    let sent = spec
        .ssh_env
        .iter()
        .filter(|(k, _)| session.accept_env.allows(k));
    for (k, v) in spec.env.iter().chain(sent) {
        cmd.env(OsString::from_vec(k.clone()), OsString::from_vec(v.clone()));
    }
}

/// Where the process starts: the directory asked for (relative: to the home directory),
/// else the home directory, else `/`.
fn working_directory(spec: &OpenSpec, session: &Session) -> io::Result<PathBuf> {
    let home = &session.account.home;
    let cwd = match &spec.cwd {
        // A relative directory is the home directory's, where the command would start.
        Some(dir) => home.join(OsString::from_vec(dir.clone())),
        None if home.is_dir() => home.clone(),
        None => PathBuf::from("/"),
    };
    if spec.cwd.is_some() && !cwd.is_dir() {
        // Said here: a failed chdir in the child would read as "cannot run the shell".
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "cannot change to directory {}: not a directory here",
                cwd.display()
            ),
        ));
    }
    Ok(cwd)
}

/// Stdio on the pty's slave (then the controlling terminal), or on pipes; a new session.
/// A new session and process group, as sshd gives every session: signals to the group
/// reach everything the command started. As sshd would start it, with the descriptor
/// limit the user has, not ours (`Program` restores it).
fn connect_stdio(cmd: &mut Program, pty_slave: Option<&OwnedFd>) {
    cmd.new_session();
    match pty_slave {
        Some(slave) => {
            // The slave becomes the controlling terminal.
            cmd.terminal(slave.as_raw_fd())
                .parent_death_signal(Signal::SIGHUP);
        }
        None => {
            cmd.parent_death_signal(Signal::SIGKILL);
        }
    }
}

/// The started process's side of its stdio: the pty's master, or the three pipes.
fn launched_io(child: &mut Child, pty: Option<(OwnedFd, OwnedFd)>) -> io::Result<LaunchedIo> {
    Ok(match pty {
        Some((master, slave)) => {
            drop(slave);
            let resize = master.try_clone()?;
            LaunchedIo::Pty {
                master: FdIo::pty(master)?,
                resize,
            }
        }
        None => {
            let stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            let stderr = child.stderr.take().expect("piped");
            LaunchedIo::Pipes {
                stdin,
                stdout,
                stderr,
            }
        }
    })
}

fn open_pty(size: WinSize) -> io::Result<(OwnedFd, OwnedFd)> {
    let ws = to_winsize(size);
    let pty = nix::pty::openpty(Some(&ws), None).map_err(io::Error::from)?;
    // openpty leaves both inheritable: they would leak into every process started while
    // they are open, and a slave held elsewhere keeps the session's output from ending.
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(io::Error::from)?;
    }
    Ok((pty.master, pty.slave))
}

fn to_winsize(size: WinSize) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: size.xpixel,
        ws_ypixel: size.ypixel,
    }
}

/// Applies a new window size to a pty.
pub(crate) fn resize(pty: &OwnedFd, size: WinSize) {
    crate::sys::term::set_window_size(pty, &to_winsize(size));
}

/// The command line for a subsystem: sshd_config's `Subsystem` line if readable, with
/// `internal-sftp` (which only sshd can run) replaced by the sftp-server binary.
fn subsystem_command(name: &str) -> Option<OsString> {
    let configured = std::fs::read("/etc/ssh/sshd_config")
        .ok()
        .and_then(|text| configured_subsystem(&text, name));
    match configured {
        Some(cmd)
            if cmd.as_bytes() != b"internal-sftp"
                && !cmd.as_bytes().starts_with(b"internal-sftp ") =>
        {
            Some(cmd)
        }
        _ if name == "sftp" => SFTP_SERVERS
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
            .map(|p| p.as_os_str().to_os_string()),
        _ => None,
    }
}

fn configured_subsystem(config: &[u8], name: &str) -> Option<OsString> {
    fn word(s: &[u8]) -> (&[u8], &[u8]) {
        let s = s.trim_ascii_start();
        let end = s
            .iter()
            .position(u8::is_ascii_whitespace)
            .unwrap_or(s.len());
        (&s[..end], &s[end..])
    }
    config.split(|b| *b == b'\n').find_map(|line| {
        let (keyword, rest) = word(line);
        let (subsystem, rest) = word(rest);
        let command = rest.trim_ascii();
        (keyword.eq_ignore_ascii_case(b"subsystem")
            && subsystem == name.as_bytes()
            && !command.is_empty())
        .then(|| OsString::from_vec(command.to_vec()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_subsystem_lines() {
        let config = b"# comment\nSubsystem \t sftp\t/usr/lib/openssh/sftp-server -l INFO\nsubsystem other /bin/other\n";
        assert_eq!(
            configured_subsystem(config, "sftp").unwrap(),
            "/usr/lib/openssh/sftp-server -l INFO"
        );
        assert_eq!(configured_subsystem(config, "other").unwrap(), "/bin/other");
        assert_eq!(configured_subsystem(config, "none"), None);
    }
}
