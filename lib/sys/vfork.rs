//! Starting a program without copying this process: `clone(CLONE_VM | CLONE_VFORK)`, as
//! `posix_spawn` does, with the setup steps of [`super::spawn`] run in the child.
//!
//! `fork` copies the page tables of the whole process and makes every page of it
//! copy-on-write, so the parent takes a fault on each page it writes afterwards; a master
//! holding hundreds of hosts pays that for every ssh it starts (std's `Command` forks
//! whenever a `pre_exec` hook is set). Here the child runs on a stack of its own, in the
//! parent's memory, while the spawning thread waits for the exec.
//!
//! The child shares the parent's memory and the spawning thread's TLS, so it makes only
//! system calls: it takes no lock and allocates nothing; what it needs is prepared before
//! the clone. Signals are blocked across the clone, and the child resets every caught
//! signal to its default before it unblocks them, so no handler of the parent runs in it.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// The child's stack: it runs a few system calls and exec.
const STACK: usize = 64 * 1024;

/// A program to start with its stdin, stdout and stderr piped to us, the rest of this
/// process's environment, and the user's descriptor limit (see
/// [`super::limits::restore_in_child`]).
#[derive(Debug)]
pub(crate) struct Piped {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    death_signal: Option<Signal>,
}

impl Piped {
    pub(crate) fn new(program: &Path) -> Piped {
        Piped {
            program: program.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            death_signal: None,
        }
    }

    pub(crate) fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(
        &mut self,
        args: I,
    ) -> &mut Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets `key` in the program's environment (over this process's value).
    pub(crate) fn env(&mut self, key: OsString, value: OsString) -> &mut Self {
        self.env.push((key, value));
        self
    }

    /// As [`super::spawn::ChildSetup::parent_death_signal`]: `sig` when the spawning
    /// thread dies.
    pub(crate) fn parent_death_signal(&mut self, sig: Signal) -> &mut Self {
        self.death_signal = Some(sig);
        self
    }

    /// Starts the program; the error is exec's when it could not be run.
    pub(crate) fn spawn(&self) -> io::Result<Child> {
        let path = find_program(&self.program)?;
        let image = Image::new(&path, &self.program, &self.args, &self.environment())?;
        let (stdin_r, stdin_w) = pipe_cloexec()?;
        let (stdout_r, stdout_w) = pipe_cloexec()?;
        let (stderr_r, stderr_w) = pipe_cloexec()?;
        let stdio = [
            stdin_r.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
        ];
        let pid = clone_and_exec(&image, stdio, self.death_signal)?;
        drop((stdin_r, stdout_w, stderr_w));
        // Our own unreaped child: its pid cannot be reused while we hold it.
        // SAFETY: `OwnedFd` keeps the descriptor open and unchanged for the AsyncFd's life.
        let pidfd = pidfd_open(pid).and_then(|fd| unsafe { AsyncFd::register(fd) }.ok());
        Ok(Child {
            pid,
            exited: None,
            pidfd,
            stdin: Some(pipe::Sender::from_owned_fd(stdin_w)?),
            stdout: Some(pipe::Receiver::from_owned_fd(stdout_r)?),
            stderr: Some(pipe::Receiver::from_owned_fd(stderr_r)?),
        })
    }

    fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        for (key, value) in &self.env {
            env.retain(|(k, _)| k != key);
            env.push((key.clone(), value.clone()));
        }
        env
    }
}

/// A started program. Dropping it kills the program (if it still runs) and reaps it.
#[derive(Debug)]
pub(crate) struct Child {
    pid: libc::pid_t,
    exited: Option<ExitStatus>,
    /// Readable once the program has exited (`None` on kernels before 5.3).
    pidfd: Option<AsyncFd<OwnedFd>>,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

impl Child {
    /// The pid, while it has not been reaped.
    pub(crate) fn id(&self) -> Option<u32> {
        self.exited.is_none().then_some(self.pid as u32)
    }

    /// Sends SIGKILL, unless the program has been reaped already.
    pub(crate) fn start_kill(&mut self) -> io::Result<()> {
        if self.exited.is_some() {
            return Ok(());
        }
        // SAFETY: kill takes no memory; the pid is our unreaped child's.
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for the program to exit, and reaps it.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            match &self.pidfd {
                Some(fd) => fd.readable().await?.clear_ready(),
                None => {
                    let pid = self.pid;
                    let status = tokio::task::spawn_blocking(move || reap(pid, 0))
                        .await
                        .map_err(io::Error::other)??;
                    self.exited = status;
                }
            }
        }
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = reap(self.pid, libc::WNOHANG)?;
        }
        Ok(self.exited)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if matches!(self.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        let _ = self.start_kill();
        // Killed, so it goes at once; reaped on a thread of its own, which needs no
        // runtime (this may run while one shuts down).
        let pid = self.pid;
        let _ = std::thread::Builder::new()
            .name("reap".into())
            .spawn(move || reap(pid, 0));
    }
}

/// `waitpid(pid, flags)`: the status once it has exited.
fn reap(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the int it is given.
        match unsafe { libc::waitpid(pid, &mut status, flags) } {
            0 => return Ok(None),
            n if n > 0 => return Ok(Some(ExitStatus::from_raw(status))),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes no memory; a descriptor it returns is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// `program` as exec takes it: a name without `/` is looked up in `PATH`, as
/// `Command` does.
fn find_program(program: &Path) -> io::Result<PathBuf> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return Ok(program.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file())
        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
}

/// What exec needs, in C's form, made before the clone.
struct Image {
    path: CString,
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl Image {
    fn new(
        path: &Path,
        arg0: &Path,
        args: &[OsString],
        env: &[(OsString, OsString)],
    ) -> io::Result<Image> {
        let c = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a command line")
            })
        };
        let argv: Vec<CString> = std::iter::once(arg0.as_os_str())
            .chain(args.iter().map(OsString::as_os_str))
            .map(|a| c(a.as_bytes()))
            .collect::<io::Result<_>>()?;
        let envp: Vec<CString> = env
            .iter()
            .map(|(k, v)| c(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<io::Result<_>>()?;
        let pointers = |v: &[CString]| {
            let mut p: Vec<*const libc::c_char> = v.iter().map(|s| s.as_ptr()).collect();
            p.push(std::ptr::null());
            p
        };
        let (argv_p, envp_p) = (pointers(&argv), pointers(&envp));
        Ok(Image {
            path: c(path.as_os_str().as_bytes())?,
            _strings: argv.into_iter().chain(envp).collect(),
            argv: argv_p,
            envp: envp_p,
        })
    }
}

/// Everything the child reads, and where it says why exec failed.
struct ChildArgs<'a> {
    image: &'a Image,
    stdio: [RawFd; 3],
    death_signal: Option<Signal>,
    parent: libc::pid_t,
    mask: libc::sigset_t,
    errno: AtomicI32,
}

fn clone_and_exec(
    image: &Image,
    stdio: [RawFd; 3],
    death_signal: Option<Signal>,
) -> io::Result<libc::pid_t> {
    let mut stack = vec![0u8; STACK];
    // SAFETY: the top of our own buffer, aligned down as every ABI wants.
    let top = unsafe { stack.as_mut_ptr().add(STACK) };
    let top = (top as usize & !15) as *mut libc::c_void;
    // SAFETY: sigset_t is plain data that sigfillset and pthread_sigmask fill in.
    let (mut all, mut mask) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut mask);
    }
    let args = ChildArgs {
        image,
        stdio,
        death_signal,
        parent: std::process::id() as libc::pid_t,
        mask,
        errno: AtomicI32::new(0),
    };
    // SAFETY: with CLONE_VFORK this thread waits until the child has exec'd or exited, so
    // `stack` and `args` outlive its use of them; the child only makes system calls.
    let pid = unsafe {
        libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: as above, restoring what was saved.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &args.mask, std::ptr::null_mut()) };
    drop(stack);
    if pid < 0 {
        return Err(clone_error);
    }
    match args.errno.load(Ordering::SeqCst) {
        0 => Ok(pid),
        errno => {
            let _ = reap(pid, 0);
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// The child: setup, then exec; on failure the reason in `errno` and exit 127.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive while the parent waits.
    let args = unsafe { &*(arg as *const ChildArgs) };
    let error = match setup_and_exec(args) {
        Err(e) => e.raw_os_error().unwrap_or(libc::EINVAL),
        Ok(()) => libc::EINVAL,
    };
    args.errno.store(error.max(1), Ordering::SeqCst);
    // SAFETY: _exit ends the child at once.
    unsafe { libc::_exit(127) }
}

/// Returns only when something failed.
fn setup_and_exec(args: &ChildArgs) -> io::Result<()> {
    reset_signal_handlers();
    if let Some(sig) = args.death_signal {
        super::spawn::parent_death_signal(sig, args.parent)?;
    }
    super::spawn::place_fds([(args.stdio[0], 0), (args.stdio[1], 1), (args.stdio[2], 2)])?;
    // SAFETY: async-signal-safe system calls only (see the function).
    unsafe { super::limits::restore_in_child()? };
    // SAFETY: sigprocmask and execve read what they are given, all alive and terminated.
    unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, &args.mask, std::ptr::null_mut());
        libc::execve(
            args.image.path.as_ptr(),
            args.image.argv.as_ptr(),
            args.image.envp.as_ptr(),
        );
    }
    Err(io::Error::last_os_error())
}

/// Every caught signal back to its default, in the child only (no `CLONE_SIGHAND`): the
/// parent's handlers would run on the parent's data. Raw `rt_sigaction`, whose first word
/// is the handler on every architecture; a zeroed one is SIG_DFL without flags.
fn reset_signal_handlers() {
    const SET_SIZE: usize = 8; // the kernel's sigset_t
    for sig in 1..65 {
        let mut old = [0usize; 8];
        let default = [0usize; 8];
        // SAFETY: the kernel writes at most its struct sigaction, smaller than `old`.
        unsafe {
            let r = libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<usize>(),
                old.as_mut_ptr(),
                SET_SIZE,
            );
            if r == 0 && old[0] > libc::SIG_IGN {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    default.as_ptr(),
                    std::ptr::null_mut::<usize>(),
                    SET_SIZE,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn stdio_environment_and_status_arrive_as_with_command() {
        let mut cmd = Piped::new(Path::new("sh"));
        cmd.args(["-c", "cat; echo \"$MITOSSH_VFORK_TEST\" >&2; exit 3"])
            .env("MITOSSH_VFORK_TEST".into(), "from the parent".into());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"through\n").await.unwrap();
        drop(stdin);
        let (mut out, mut err) = (String::new(), String::new());
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(
            (out.as_str(), err.as_str()),
            ("through\n", "from the parent\n")
        );
        assert_eq!(status.code(), Some(3));
    }

    #[tokio::test]
    async fn a_program_that_cannot_run_is_an_error_not_a_child() {
        let e = Piped::new(Path::new("/nonexistent/mitossh-test"))
            .spawn()
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let e = Piped::new(Path::new("/etc/passwd")).spawn().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    }

    #[tokio::test]
    async fn the_program_gets_the_descriptor_limit_a_forked_one_gets() {
        use super::super::spawn::ChildSetup;
        super::super::limits::raise_descriptor_limit().unwrap();
        let forked = std::process::Command::new("sh")
            .args(["-c", "ulimit -n"])
            .restore_descriptor_limit()
            .output()
            .unwrap();
        let mut child = Piped::new(Path::new("sh"))
            .args(["-c", "ulimit -n"])
            .spawn()
            .unwrap();
        let mut out = Vec::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert!(child.wait().await.unwrap().success());
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&forked.stdout)
        );
    }

    #[tokio::test]
    async fn a_killed_child_reports_its_signal() {
        let mut child = Piped::new(Path::new("sleep")).args(["60"]).spawn().unwrap();
        child.start_kill().unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
