//! A mitossh master for integration tests: started on a private socket, with a shim
//! directory to put first on PATH, and stopped (by pid) when dropped.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mitossh::ChildSetup;

use super::procs::send_signal;
use super::wait::wait_until;

/// Paths of the binaries under test.
pub fn bin(name: &str) -> PathBuf {
    let p = match name {
        "mitossh" => env!("CARGO_BIN_EXE_mitossh"),
        "mitossh-agent" => env!("CARGO_BIN_EXE_mitossh-agent"),
        "mitossh-env" => env!("CARGO_BIN_EXE_mitossh-env"),
        "ssh" => env!("CARGO_BIN_EXE_ssh"),
        "scp" => env!("CARGO_BIN_EXE_scp"),
        "sftp" => env!("CARGO_BIN_EXE_sftp"),
        other => panic!("no binary {other}"),
    };
    PathBuf::from(p)
}

/// A directory holding only the ssh, scp and sftp shims.
pub fn shim_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("shims");
    std::fs::create_dir_all(&dir).unwrap();
    for prog in ["ssh", "scp", "sftp"] {
        let link = dir.join(prog);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(bin(prog), link).unwrap();
    }
    dir
}

/// PATH with `first` in front of the current one.
pub fn path_with(first: &Path) -> std::ffi::OsString {
    let mut p = first.as_os_str().to_os_string();
    p.push(":");
    p.push(std::env::var_os("PATH").unwrap_or_default());
    p
}

/// Set by [`log_as_shipped`]: masters log at the default level instead of `debug`.
static AS_SHIPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Masters started from now on log as a user's does (the default level), not at `debug`
/// for the test's log: benchmarks measure what ships (debug logging costs some 0.04 ms a
/// call).
pub fn log_as_shipped() {
    AS_SHIPPED.store(true, std::sync::atomic::Ordering::Relaxed);
}

pub struct Master {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub shims: PathBuf,
    pub log: PathBuf,
}

impl Master {
    pub fn start() -> Master {
        Master::start_with(&[])
    }

    /// Starts `mitossh master` with extra arguments and waits until its socket answers.
    pub fn start_with(args: &[&str]) -> Master {
        Master::launch(args, None, &[])
    }

    /// A master with these variables added to its environment.
    pub fn start_with_env(env: &[(&str, &OsStr)]) -> Master {
        Master::launch(&[], None, env)
    }

    /// A master whose agent images are those in `dir` (`MITOSSH_AGENT_DIR`), not the
    /// debug build's own beside it.
    pub fn start_with_agents(dir: &Path) -> Master {
        Master::launch(&[], Some(dir), &[])
    }

    fn launch(args: &[&str], agents: Option<&Path>, env: &[(&str, &OsStr)]) -> Master {
        let dir = tempfile::Builder::new()
            .prefix("mitossh-test-")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("master.sock");
        let log = dir.path().join("master.log");
        let shims = shim_dir(dir.path());
        let mut cmd = Command::new(bin("mitossh"));
        cmd.arg("master")
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .env("MITOSSH_LOG", "debug")
            .env_remove("MITOSSH_AGENT_DIR")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(dir) = agents {
            cmd.env("MITOSSH_AGENT_DIR", dir);
        }
        if AS_SHIPPED.load(std::sync::atomic::Ordering::Relaxed) {
            cmd.env_remove("MITOSSH_LOG");
        }
        // The master must not share our terminal, and must not outlive the test thread
        // that started it (a killed test never runs Drop).
        cmd.new_session()
            .parent_death_signal(nix::sys::signal::Signal::SIGTERM);
        let child = cmd.spawn().expect("start mitossh master");
        let m = Master {
            child: Some(child),
            dir,
            socket,
            shims,
            log,
        };
        wait_until(Duration::from_secs(20), "the master to listen", || {
            std::os::unix::net::UnixStream::connect(&m.socket).is_ok()
        });
        m
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// A command with the shims first on PATH and the master's socket in the environment.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("PATH", path_with(&self.shims))
            .env("MITOSSH_SOCKET", &self.socket)
            .env("MITOSSH_SHIM_DIR", &self.shims)
            .env("MITOSSH_STRICT", "1");
        cmd
    }

    /// The ssh shim with this master.
    pub fn ssh(&self) -> Command {
        self.command(bin("ssh"))
    }

    pub fn status(&self) -> String {
        self.report("status")
    }

    /// What `mitossh tree` says about this master.
    pub fn tree(&self) -> String {
        self.report("tree")
    }

    fn report(&self, what: &str) -> String {
        let out = self
            .command(bin("mitossh"))
            .arg(what)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then a bounded wait, then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            send_signal(c.id() as i32, libc::SIGTERM);
            for _ in 0..500 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.stop();
    }
}
