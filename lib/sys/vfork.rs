//! Starting a program without copying this process: `clone(CLONE_VM | CLONE_VFORK)`, as
//! `posix_spawn` does, with the setup steps of [`super::spawn`] run in the child.
//!
//! `fork` copies the page tables of the whole process and makes every page of it
//! copy-on-write, so the parent takes a fault on each page it writes afterwards; a master
//! holding hundreds of hosts pays that for every ssh it starts, and an agent for every
//! process a call runs (std's `Command` forks whenever a `pre_exec` hook is set). Here the
//! child runs on a stack of its own, in the parent's memory, while the spawning thread
//! waits for the exec.
//!
//! The child also shares the parent's descriptor table (`CLONE_FILES`) until its first
//! step, which takes a private copy of only the lowest few descriptors
//! (`close_range(CLOSE_RANGE_UNSHARE)`): the program's own descriptors are first copied into
//! low numbers kept for them ([`Slots`]). Without this the kernel copies every descriptor
//! at the clone and closes each again at the exec, about 0.1 µs apiece: a master holding a
//! thousand hosts (four descriptors each, and each waiting call's) paid half a millisecond
//! for every ssh it started, half its own CPU.
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
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;

/// The child's stack: it runs a few system calls and exec.
const STACK: usize = 64 * 1024;

/// A program to start: its stdin, stdout and stderr piped to us or on a terminal, this
/// process's environment (or only the one given), and the user's descriptor limit (see
/// [`super::limits::restore_in_child`]).
#[derive(Debug)]
pub(crate) struct Program {
    program: PathBuf,
    arg0: Option<OsString>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    clear_env: bool,
    cwd: Option<PathBuf>,
    new_session: bool,
    terminal: Option<RawFd>,
    extra: Option<(RawFd, RawFd)>,
    death_signal: Option<Signal>,
    /// Waits as on a kernel without pidfds.
    #[cfg(test)]
    without_pidfd: bool,
}

impl Program {
    /// `program`: a path, or a name looked for on this process's PATH.
    pub(crate) fn new(program: &Path) -> Program {
        Program {
            program: program.to_owned(),
            arg0: None,
            args: Vec::new(),
            env: Vec::new(),
            clear_env: false,
            cwd: None,
            new_session: false,
            terminal: None,
            extra: None,
            death_signal: None,
            #[cfg(test)]
            without_pidfd: false,
        }
    }

    /// What the program sees as its name (`argv[0]`); by default the program as given.
    pub(crate) fn arg0(&mut self, arg0: impl AsRef<OsStr>) -> &mut Self {
        self.arg0 = Some(arg0.as_ref().to_owned());
        self
    }

    /// Appends to the program's arguments.
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

    /// The program gets only the variables set by [`Program::env`], none of ours.
    pub(crate) fn env_clear(&mut self) -> &mut Self {
        self.clear_env = true;
        self
    }

    /// The directory the program starts in.
    pub(crate) fn current_dir(&mut self, dir: &Path) -> &mut Self {
        self.cwd = Some(dir.to_owned());
        self
    }

    /// As [`super::spawn::ChildSetup::new_session`].
    pub(crate) fn new_session(&mut self) -> &mut Self {
        self.new_session = true;
        self
    }

    /// stdin, stdout and stderr on the terminal `slave` (open here until the spawn), made
    /// the program's controlling terminal: only with [`Program::new_session`]. No pipes.
    pub(crate) fn terminal(&mut self, slave: RawFd) -> &mut Self {
        self.terminal = Some(slave);
        self
    }

    /// As [`super::spawn::ChildSetup::place_fds`], for one descriptor besides stdio.
    pub(crate) fn place_fd(&mut self, fd: RawFd, at: RawFd) -> &mut Self {
        self.extra = Some((fd, at));
        self
    }

    /// As [`super::spawn::ChildSetup::parent_death_signal`]: `sig` when the spawning
    /// thread dies.
    pub(crate) fn parent_death_signal(&mut self, sig: Signal) -> &mut Self {
        self.death_signal = Some(sig);
        self
    }

    /// Starts the program; the error is exec's (or chdir's) when it could not be run.
    pub(crate) fn spawn(&self) -> io::Result<Child> {
        if self.terminal.is_some() && !self.new_session {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a controlling terminal needs a new session",
            ));
        }
        let path = find_program(&self.program)?;
        let arg0 = self.arg0.as_deref().unwrap_or(self.program.as_os_str());
        let image = Image::new(&path, arg0, &self.args, &self.environment())?;
        let cwd = self
            .cwd
            .as_ref()
            .map(|dir| c_string(dir.as_os_str().as_bytes()))
            .transpose()?;
        // The program's ends of its pipes (kept open until it has them) and ours, or the
        // terminal alone.
        let (theirs, ours, stdio) = match self.terminal {
            Some(slave) => (None, [None, None, None], [slave; 3]),
            None => {
                let [
                    (stdin_r, stdin_w),
                    (stdout_r, stdout_w),
                    (stderr_r, stderr_w),
                ] = [pipe_cloexec()?, pipe_cloexec()?, pipe_cloexec()?];
                let theirs = [stdin_r, stdout_w, stderr_w];
                let stdio = theirs.each_ref().map(AsRawFd::as_raw_fd);
                let ours = [Some(stdin_w), Some(stdout_r), Some(stderr_r)];
                (Some(theirs), ours, stdio)
            }
        };
        let setup = Setup {
            stdio,
            extra: self.extra,
            cwd,
            new_session: self.new_session,
            terminal: self.terminal.is_some(),
            death_signal: self.death_signal,
            private_below: None,
        };
        let pid = match Slots::get() {
            Some(slots) => slots.with_program_fds(setup, |setup| clone_and_exec(&image, setup)),
            None => clone_and_exec(&image, &setup),
        }?;
        drop(theirs);
        // Our own unreaped child: its pid cannot be reused while we hold it.
        // SAFETY: `OwnedFd` keeps the descriptor open and unchanged for the AsyncFd's life.
        let pidfd = pidfd_open(pid).and_then(|fd| unsafe { AsyncFd::register(fd) }.ok());
        #[cfg(test)]
        let pidfd = pidfd.filter(|_| !self.without_pidfd);
        let sigchld = match pidfd {
            Some(_) => None,
            None => tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok(),
        };
        let [stdin, stdout, stderr] = ours;
        Ok(Child {
            pid,
            exited: None,
            pidfd,
            sigchld,
            stdin,
            stdout,
            stderr,
        })
    }

    /// Ours with the program's own over it, or the program's own alone.
    /// Ours with the program's own over it, or the program's own alone.
    fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = if self.clear_env {
            Vec::new()
        } else {
            std::env::vars_os().collect()
        };
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
    /// Readable once the program has exited (`None` on kernels before 5.3, or where
    /// seccomp forbids it).
    pidfd: Option<AsyncFd<OwnedFd>>,
    /// Without a pidfd: every SIGCHLD from the start, so that none is missed between a
    /// look at the program and the wait.
    sigchld: Option<tokio::signal::unix::Signal>,
    /// Our ends of its pipes (none when it runs on a terminal).
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
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
            match (&self.pidfd, &mut self.sigchld) {
                (Some(fd), _) => fd.readable().await?.clear_ready(),
                (None, Some(sigchld)) => {
                    sigchld.recv().await;
                }
                (None, None) => {
                    // Neither pidfd nor signal: a thread waits (never seen on Linux).
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
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
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
        arg0: &OsStr,
        args: &[OsString],
        env: &[(OsString, OsString)],
    ) -> io::Result<Image> {
        let c = c_string;
        let argv: Vec<CString> = std::iter::once(arg0)
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

/// A NUL-terminated copy of `bytes`, which may hold no NUL.
fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a command line"))
}

/// The child's setup steps, prepared before the clone.
struct Setup {
    /// What becomes its stdin, stdout and stderr.
    stdio: [RawFd; 3],
    /// One more descriptor and where it goes.
    extra: Option<(RawFd, RawFd)>,
    /// Where it starts.
    cwd: Option<CString>,
    /// `setsid` before exec.
    new_session: bool,
    /// stdin is a terminal to make the controlling one.
    terminal: bool,
    /// What it gets when the spawning thread dies.
    death_signal: Option<Signal>,
    /// It shares our descriptor table until it takes a copy of those below this number
    /// (every descriptor it keeps is there); `None`: it has a copy of all from the clone.
    private_below: Option<RawFd>,
}

/// Low descriptor numbers kept (open on `/dev/null`) for a starting program's own
/// descriptors, so that it can take a private copy of only the table's first few entries.
/// Taken at the first spawn, when the table is still small; one spawn uses them at a time.
struct Slots {
    null: RawFd,
    fds: [RawFd; 4],
    /// Above the highest slot: what the child's private table stops short of.
    below: RawFd,
    busy: std::sync::Mutex<()>,
}

impl Slots {
    /// The process's slots, `None` if they could not be had (the clone then copies the
    /// whole table, as fork does).
    fn get() -> Option<&'static Slots> {
        static SLOTS: std::sync::OnceLock<Option<Slots>> = std::sync::OnceLock::new();
        SLOTS.get_or_init(Slots::take).as_ref()
    }

    fn take() -> Option<Slots> {
        let null = std::fs::File::open("/dev/null").ok()?;
        let low = || {
            // SAFETY: fcntl copies a descriptor we hold; no memory is passed.
            let fd = unsafe { libc::fcntl(null.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
            (fd >= 0).then_some(fd)
        };
        // Kept for the process's life: never closed, so never reused for anything else.
        let fds = [low()?, low()?, low()?, low()?];
        Some(Slots {
            null: low()?,
            fds,
            below: fds.iter().max()? + 1,
            busy: std::sync::Mutex::new(()),
        })
    }

    /// Runs `spawn` with `setup`'s descriptors copied into the slots (and `setup` saying
    /// so; as it was if a copy fails), then puts `/dev/null` back in them: the copies are
    /// the program's, not ours.
    fn with_program_fds<T>(&self, mut setup: Setup, spawn: impl FnOnce(&Setup) -> T) -> T {
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let mut sources: Vec<RawFd> = Vec::with_capacity(self.fds.len());
        let mut slot_of = |fd: RawFd| {
            let i = sources.iter().position(|&s| s == fd).unwrap_or_else(|| {
                sources.push(fd);
                sources.len() - 1
            });
            let slot = self.fds[i];
            // SAFETY: dup3 onto a slot we own; no memory is passed.
            (unsafe { libc::dup3(fd, slot, libc::O_CLOEXEC) } == slot).then_some(slot)
        };
        let [i, o, e] = setup.stdio;
        let placed = (|| {
            let stdio = [slot_of(i)?, slot_of(o)?, slot_of(e)?];
            let extra = match setup.extra {
                Some((fd, at)) => Some((slot_of(fd)?, at)),
                None => None,
            };
            Some((stdio, extra))
        })();
        if let Some((stdio, extra)) = placed {
            (setup.stdio, setup.extra) = (stdio, extra);
            setup.private_below = Some(self.below);
        }
        let spawned = spawn(&setup);
        for &slot in &self.fds[..sources.len()] {
            // SAFETY: as above.
            unsafe { libc::dup3(self.null, slot, libc::O_CLOEXEC) };
        }
        spawned
    }
}

/// Everything the child reads, and where it says why exec failed.
struct ChildArgs<'a> {
    image: &'a Image,
    setup: &'a Setup,
    parent: libc::pid_t,
    mask: libc::sigset_t,
    errno: AtomicI32,
}

fn clone_and_exec(image: &Image, setup: &Setup) -> io::Result<libc::pid_t> {
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
        setup,
        parent: std::process::id() as libc::pid_t,
        mask,
        errno: AtomicI32::new(0),
    };
    // qemu-user refuses CLONE_FILES beside CLONE_VFORK (EINVAL): then, and from then on,
    // the child gets a copy of the whole table, and closes what it does not keep.
    static NO_SHARED_FILES: AtomicBool = AtomicBool::new(false);
    let clone = |flags: libc::c_int| {
        // SAFETY: with CLONE_VFORK this thread waits until the child has exec'd or exited,
        // so `stack` and `args` outlive its use of them; the child only makes system
        // calls, and with CLONE_FILES none on a descriptor before it has a table of its own.
        unsafe {
            libc::clone(
                child_main,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD | flags,
                &args as *const ChildArgs as *mut libc::c_void,
            )
        }
    };
    let share = setup.private_below.is_some() && !NO_SHARED_FILES.load(Ordering::Relaxed);
    let mut pid = clone(if share { libc::CLONE_FILES } else { 0 });
    if pid < 0 && share && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        NO_SHARED_FILES.store(true, Ordering::Relaxed);
        pid = clone(0);
    }
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

/// Gives the child a table of its own holding only our descriptors below `below` (or, on
/// a copy it already has, closes the rest); on kernels before 5.9, a copy of them all.
fn private_descriptors(below: RawFd) -> io::Result<()> {
    const CLOSE_RANGE_UNSHARE: libc::c_uint = 1 << 1;
    // SAFETY: close_range and unshare take no memory; the child's own table only.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            below as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_UNSHARE,
        ) == 0
            || libc::unshare(libc::CLONE_FILES) == 0
        {
            return Ok(());
        }
    }
    Err(io::Error::last_os_error())
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
    let setup = args.setup;
    if let Some(below) = setup.private_below {
        private_descriptors(below)?;
    }
    reset_signal_handlers();
    if let Some(sig) = setup.death_signal {
        super::spawn::parent_death_signal(sig, args.parent)?;
    }
    let [stdin, stdout, stderr] = setup.stdio;
    let stdio = [(stdin, 0), (stdout, 1), (stderr, 2)];
    match setup.extra {
        Some(extra) => super::spawn::place_fds([stdio[0], stdio[1], stdio[2], extra])?,
        None => super::spawn::place_fds(stdio)?,
    }
    if let Some(dir) = &setup.cwd {
        // SAFETY: chdir reads a NUL-terminated path that outlives the call.
        if unsafe { libc::chdir(dir.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if setup.new_session {
        super::spawn::new_session()?;
    }
    if setup.terminal {
        super::spawn::controlling_terminal(0)?;
    }
    // SAFETY: async-signal-safe system calls only (see the function).
    unsafe { super::limits::restore_in_child()? };
    // SAFETY: sigemptyset writes the set it is given; sigprocmask and execve read what
    // they are given, all alive and terminated.
    unsafe {
        // No signal blocked, as std's Command starts a program.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(
            args.image.path.as_ptr(),
            args.image.argv.as_ptr(),
            args.image.envp.as_ptr(),
        );
    }
    Err(io::Error::last_os_error())
}

/// Every caught signal back to its default (and SIGPIPE, which Rust ignores), in the
/// child only (no `CLONE_SIGHAND`): the parent's handlers would run on the parent's data. Raw `rt_sigaction`, whose first word
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
            // Rust ignores SIGPIPE in its own processes; a program gets the default, as
            // std's Command gives it, or `yes | head -1` would end in write errors.
            let ignored_pipe = sig == libc::SIGPIPE && old[0] == libc::SIG_IGN;
            if r == 0 && (old[0] > libc::SIG_IGN || ignored_pipe) {
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
    use std::io::{Read, Write};

    /// Everything until end of file on `fd`.
    fn read_all(fd: Option<OwnedFd>) -> String {
        let mut text = String::new();
        std::fs::File::from(fd.unwrap())
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    #[tokio::test]
    async fn stdio_environment_and_status_arrive_as_with_command() {
        let mut cmd = Program::new(Path::new("sh"));
        cmd.args(["-c", "cat; echo \"$MITOSSH_VFORK_TEST\" >&2; exit 3"])
            .env("MITOSSH_VFORK_TEST".into(), "from the parent".into());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = std::fs::File::from(child.stdin.take().unwrap());
        stdin.write_all(b"through\n").unwrap();
        drop(stdin);
        let out = read_all(child.stdout.take());
        let err = read_all(child.stderr.take());
        let status = child.wait().await.unwrap();
        assert_eq!(
            (out.as_str(), err.as_str()),
            ("through\n", "from the parent\n")
        );
        assert_eq!(status.code(), Some(3));
    }

    #[tokio::test]
    async fn name_directory_environment_session_and_descriptor_are_the_ones_asked_for() {
        let (r, w) = pipe_cloexec().unwrap();
        let dir = std::env::temp_dir();
        let mut cmd = Program::new(Path::new("/bin/sh"));
        cmd.arg0("-mitossh-test")
            .args([
                "-c",
                "echo \"$0 $(pwd) ${HOME-unset} $MITOSSH_VFORK_TEST\"; \
                 cut -d' ' -f6 /proc/$$/stat; echo $$; echo fd3 >&3",
            ])
            .env_clear()
            .env("MITOSSH_VFORK_TEST".into(), "only".into())
            .env("PATH".into(), "/usr/bin:/bin".into())
            .current_dir(&dir)
            .new_session()
            .place_fd(w.as_raw_fd(), 3);
        let mut child = cmd.spawn().unwrap();
        drop(w);
        let out = read_all(child.stdout.take());
        assert!(child.wait().await.unwrap().success(), "{out}");
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        let dir = dir.canonicalize().unwrap();
        assert_eq!(
            lines[0],
            format!("-mitossh-test {} unset only", dir.display())
        );
        assert_eq!(lines[1], lines[2], "the program leads a session of its own");
        assert_eq!(read_all(Some(r)), "fd3\n");
    }

    #[tokio::test]
    async fn the_program_gets_none_of_our_descriptors_above_the_slots() {
        // Not close-on-exec, and far above the slots: a table copied whole (as fork
        // copies it) would pass it on.
        let null = std::fs::File::open("/dev/null").unwrap();
        let far = nix::fcntl::fcntl(&null, nix::fcntl::FcntlArg::F_DUPFD(900));
        // SAFETY: a descriptor fcntl just made, ours alone.
        let far = unsafe { OwnedFd::from_raw_fd(far.unwrap()) };
        let n = far.as_raw_fd();
        let mut cmd = Program::new(Path::new("/bin/sh"));
        cmd.args([
            "-c",
            &format!("test -e /proc/$$/fd/{n} && echo leaked; echo ran"),
        ]);
        let mut child = cmd.spawn().unwrap();
        let out = read_all(child.stdout.take());
        assert!(child.wait().await.unwrap().success(), "{out}");
        assert_eq!(out, "ran\n", "descriptor {n} reached the program");
        let link = |fd: RawFd| std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        assert_eq!(link(n), Path::new("/dev/null"), "ours is still open");
        for slot in Slots::get().expect("slots on this kernel").fds {
            assert_eq!(link(slot), Path::new("/dev/null"), "slot {slot} given back");
        }
    }

    #[tokio::test]
    async fn a_terminal_becomes_stdio_and_the_controlling_terminal() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut child = Program::new(Path::new("/bin/sh"))
            .args(["-c", "exec 3</dev/tty && test -t 0 && test -t 2 && echo ok"])
            .new_session()
            .terminal(pty.slave.as_raw_fd())
            .spawn()
            .unwrap();
        assert!(child.stdin.is_none() && child.stdout.is_none());
        drop(pty.slave);
        let mut out = Vec::new();
        // The master reads EIO once the last slave descriptor has closed.
        let _ = std::fs::File::from(pty.master).read_to_end(&mut out);
        assert!(child.wait().await.unwrap().success());
        assert_eq!(String::from_utf8_lossy(&out).trim(), "ok");
    }

    #[tokio::test]
    async fn a_program_that_cannot_run_is_an_error_not_a_child() {
        let e = Program::new(Path::new("/nonexistent/mitossh-test"))
            .spawn()
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let e = Program::new(Path::new("/etc/passwd")).spawn().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        let e = Program::new(Path::new("/bin/sh"))
            .current_dir(Path::new("/nonexistent/mitossh-test"))
            .spawn()
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
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
        let mut child = Program::new(Path::new("sh"))
            .args(["-c", "ulimit -n"])
            .spawn()
            .unwrap();
        let out = read_all(child.stdout.take());
        assert!(child.wait().await.unwrap().success());
        assert_eq!(out, String::from_utf8_lossy(&forked.stdout));
    }

    #[tokio::test]
    async fn the_program_gets_sigpipe_and_no_blocked_signal_as_with_command() {
        // Read by the shell itself: a grep it forked could catch it blocking every
        // signal around the fork (dash does), before it puts its mask back.
        let mut child = Program::new(Path::new("/bin/sh"))
            .args([
                "-c",
                "while read -r k v; do case $k in SigBlk:|SigIgn:) echo \"$k $v\";; esac; \
                 done < /proc/$$/status; kill -PIPE $$; echo alive",
            ])
            .spawn()
            .unwrap();
        let out = read_all(child.stdout.take());
        let status = child.wait().await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGPIPE), "{out}");
        assert!(out.contains("SigBlk:") && out.contains("SigIgn:"), "{out}");
        for line in out.lines() {
            let mask = u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap();
            assert_eq!(mask & (1 << (libc::SIGPIPE - 1)), 0, "{line}");
            if line.starts_with("SigBlk") {
                assert_eq!(mask, 0, "{line}");
            }
        }
    }

    #[tokio::test]
    async fn without_a_pidfd_the_exit_is_heard_by_sigchld() {
        let mut cmd = Program::new(Path::new("/bin/sh"));
        cmd.args(["-c", "exit 7"]);
        cmd.without_pidfd = true;
        let mut child = cmd.spawn().unwrap();
        assert!(child.pidfd.is_none() && child.sigchld.is_some());
        let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
            .await
            .expect("the exit is heard")
            .unwrap();
        assert_eq!(status.code(), Some(7));
    }

    #[tokio::test]
    async fn a_terminal_without_a_new_session_is_refused() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let e = Program::new(Path::new("/bin/sh"))
            .terminal(pty.slave.as_raw_fd())
            .spawn()
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    #[tokio::test]
    async fn a_killed_child_reports_its_signal() {
        let mut child = Program::new(Path::new("sleep"))
            .args(["60"])
            .spawn()
            .unwrap();
        child.start_kill().unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
