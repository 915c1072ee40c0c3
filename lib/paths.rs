//! Where things are: the private runtime directory, the master's socket, the real OpenSSH
//! programs and the shim directory. Everything is found through the environment (and the
//! uid), never through `$HOME`, which tools and test suites change freely.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The master's socket. Set by `mitossh-env` for everything it runs.
pub(crate) const SOCKET_ENV: &str = "MITOSSH_SOCKET";
/// The directory holding the `ssh`, `scp` and `sftp` shims (first on PATH under mitossh-env).
pub(crate) const SHIM_DIR_ENV: &str = "MITOSSH_SHIM_DIR";
/// `1`: a shim that cannot use a master fails instead of running the real program.
pub(crate) const STRICT_ENV: &str = "MITOSSH_STRICT";
/// Log filter for the master (tracing's env-filter syntax), e.g. `debug`.
pub(crate) const LOG_ENV: &str = "MITOSSH_LOG";

/// The environment variable that may name the real `program` (`MITOSSH_REAL_SSH`, …).
pub(crate) fn real_env(program: &str) -> String {
    format!("MITOSSH_REAL_{}", program.to_ascii_uppercase())
}

/// The per-user runtime directory: `$XDG_RUNTIME_DIR/mitossh` when that is set, else
/// `/tmp/mitossh-<uid>`. Created 0700; refused if it is not ours or is open to others.
pub(crate) fn runtime_dir() -> io::Result<PathBuf> {
    let uid = nix::unistd::getuid().as_raw();
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty() && Path::new(d).is_dir())
        .map(|d| PathBuf::from(d).join("mitossh"))
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/mitossh-{uid}")));
    private_dir(&base)?;
    Ok(base)
}

/// Creates `dir` (mode 0700) if needed and checks that it is a real directory owned by us
/// and closed to everyone else.
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", dir.display()),
            ));
        }
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let uid = nix::unistd::getuid().as_raw();
    if !meta.is_dir() || meta.uid() != uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory owned by uid {uid}; remove it or set XDG_RUNTIME_DIR",
                dir.display()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Checks that the directory of a socket someone named exists. It is left exactly as it
/// is (it may be a shared directory such as /tmp; the socket itself is 0600 and the master
/// checks every peer's uid), and never created: mitossh makes only its own directories.
pub(crate) fn socket_dir(dir: &Path) -> io::Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", dir.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(io::Error::new(
            e.kind(),
            format!(
                "the directory {} does not exist; create it first (mitossh creates only its own directories)",
                dir.display()
            ),
        )),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    }
}

/// The files mitossh puts in a scratch directory (the shims are symlinks in `bin`).
const SCRATCH_FILES: &[&str] = &["master.sock", "master.log", "bin"];

/// A private directory for this process under the runtime directory (`env-<pid>`,
/// `run-<pid>`). Leftovers of processes that were killed before they could clean up are
/// removed on the way: only directories holding nothing but what mitossh puts there, whose
/// process is gone and whose socket no master answers (`mitossh-env --keep` leaves one).
pub(crate) fn scratch_dir(kind: &str) -> io::Result<PathBuf> {
    let runtime = runtime_dir()?;
    if let Ok(entries) = std::fs::read_dir(&runtime) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(kind))
                .and_then(|n| n.strip_prefix('-'))
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if !crate::sys::process::exists(pid) && is_leftover(&entry.path()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = runtime.join(format!("{kind}-{}", std::process::id()));
    private_dir(&dir)?;
    Ok(dir)
}

/// Whether `dir` is a scratch directory of ours that nothing uses any more.
fn is_leftover(dir: &Path) -> bool {
    let ours = |p: &Path| {
        std::fs::symlink_metadata(p)
            .is_ok_and(|m| m.is_dir() && m.uid() == nix::unistd::getuid().as_raw())
    };
    let only = |p: &Path, allowed: &dyn Fn(&std::fs::DirEntry) -> bool| {
        std::fs::read_dir(p).is_ok_and(|entries| entries.flatten().all(|e| allowed(&e)))
    };
    let shims_only = |e: &std::fs::DirEntry| {
        e.file_type().is_ok_and(|t| t.is_symlink())
            && e.file_name()
                .to_str()
                .is_some_and(|n| SHIM_DIR_PROGRAMS.contains(&n))
    };
    let scratch_only = |e: &std::fs::DirEntry| {
        let name = e.file_name();
        match name.to_str() {
            Some("bin") => ours(&e.path()) && only(&e.path(), &shims_only),
            Some(n) => SCRATCH_FILES.contains(&n) && !e.file_type().is_ok_and(|t| t.is_dir()),
            None => false,
        }
    };
    let socket = dir.join("master.sock");
    let in_use = std::os::unix::net::UnixStream::connect(&socket).is_ok();
    ours(dir) && !in_use && only(dir, &scratch_only)
}

/// The programs `mitossh-env` puts first on PATH (symlinks to its siblings).
pub(crate) const SHIM_DIR_PROGRAMS: &[&str] = &["ssh", "scp", "sftp", "mitossh", "mitossh-env"];

/// The socket a shim should use: `$MITOSSH_SOCKET`, if set and non-empty.
pub(crate) fn socket_from_env() -> Option<PathBuf> {
    std::env::var_os(SOCKET_ENV)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}

/// Where `mitossh master` listens when not told otherwise.
pub(crate) fn default_socket() -> io::Result<PathBuf> {
    Ok(runtime_dir()?.join("master.sock"))
}

/// The master's socket for a `mitossh` subcommand: `given` (`--socket`), else
/// `$MITOSSH_SOCKET`, else the default.
pub(crate) fn socket_or_default(given: Option<PathBuf>) -> io::Result<PathBuf> {
    match given.or_else(socket_from_env) {
        Some(s) => Ok(s),
        None => default_socket(),
    }
}

/// Finds the real `program` (ssh, scp, sftp): `$MITOSSH_REAL_<PROGRAM>` if set, else the
/// first match on PATH that is not a mitossh shim.
pub(crate) fn find_real(program: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(real_env(program)).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    let ours = our_programs(program);
    let shim_dir = std::env::var_os(SHIM_DIR_ENV).map(PathBuf::from);
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .filter(|dir| shim_dir.as_deref() != Some(dir.as_path()))
        .map(|dir| dir.join(program))
        .find(|candidate| {
            is_executable(candidate)
                && !candidate
                    .canonicalize()
                    .is_ok_and(|real| ours.contains(&real))
        })
}

/// Canonical paths of mitossh's own executables that could be named `program`: this
/// executable and its sibling of that name.
fn our_programs(program: &str) -> Vec<PathBuf> {
    let mut ours = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(sibling) = exe.parent().map(|d| d.join(program))
            && let Ok(real) = sibling.canonicalize()
        {
            ours.push(real);
        }
        if let Ok(real) = exe.canonicalize() {
            ours.push(real);
        }
    }
    ours
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// A sibling executable of this one (`mitossh`, `ssh`, …), as built together.
pub(crate) fn sibling(program: &str) -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| io::Error::other("the executable has no directory"))?;
    let p = dir.join(program);
    if is_executable(&p) {
        Ok(p)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} is missing: mitossh's programs must stay together in one directory",
                p.display()
            ),
        ))
    }
}
