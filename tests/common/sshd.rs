//! A real, private OpenSSH `sshd` on 127.0.0.1 for integration tests, and the dedicated test user it logs in
//! by key. Each [`Sshd`] has its own port, host key, client key, config and log in its own temporary directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use mitossh::ChildSetup;

use super::procs::{self, Proc, send_signal};
use super::wait::{POLL, lock_within, output_within, wait_until};

pub const TEST_USER: &str = "mitossh-t1";
/// The password set on every test user (sudo tests need it; sshd itself only accepts keys).
pub const TEST_PASSWORD: &str = "mitossh-test-Passw0rd";

const SSHD: &str = "/usr/sbin/sshd";
const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
/// Serialises user creation across threads and test processes.
const USER_LOCK: &str = "/tmp/mitossh-test-users.lock";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const PORT_ATTEMPTS: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// The test user [`TEST_USER`], created on first use (see [`ensure_user`]).
pub fn test_user() -> &'static TestUser {
    static USER: OnceLock<TestUser> = OnceLock::new();
    USER.get_or_init(|| ensure_user(TEST_USER))
}

/// Makes sure the account `name` exists (`useradd -m -s /bin/bash`) with [`TEST_PASSWORD`] set: without a
/// password the account is locked ("!" in /etc/shadow) and sshd with `UsePAM no` refuses it even by key.
/// Idempotent, and safe across threads and processes (an flock on [`USER_LOCK`]).
pub fn ensure_user(name: &str) -> TestUser {
    ensure_account(name, &["-m", "-s", "/bin/bash"])
}

/// Like [`ensure_user`], with `useradd_args` for a new account (a service account's
/// nologin shell and system home, say).
pub fn ensure_account(name: &str, useradd_args: &[&str]) -> TestUser {
    require_root();
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(USER_LOCK)
        .unwrap_or_else(|e| panic!("cannot open the user-creation lock {USER_LOCK}: {e}"));
    let lock = lock_within(
        lock,
        Duration::from_secs(60),
        &format!("the user-creation lock {USER_LOCK}"),
    );
    if lookup_user(name).is_none() {
        run(
            Command::new("/usr/sbin/useradd")
                .args(useradd_args)
                .arg(name),
            b"",
        );
    }
    // Always (re)set it, so the password is the known one even on an account left by an older run.
    run(
        &mut Command::new("/usr/sbin/chpasswd"),
        format!("{name}:{TEST_PASSWORD}\n").as_bytes(),
    );
    let user = lookup_user(name).unwrap_or_else(|| panic!("user {name} missing after useradd"));
    drop(lock); // only now may another process look at or change the account
    user
}

fn lookup_user(name: &str) -> Option<TestUser> {
    let out = Command::new("/usr/bin/getent")
        .args(["passwd", name])
        .output()
        .expect("cannot run getent");
    let line = String::from_utf8(out.stdout).ok()?;
    let f: Vec<&str> = line.trim_end().split(':').collect();
    let [n, _, uid, gid, _, home, shell] = f.as_slice() else {
        return None;
    };
    (*n == name).then(|| TestUser {
        name: name.to_string(),
        uid: uid.parse().expect("uid"),
        gid: gid.parse().expect("gid"),
        home: home.into(),
        shell: shell.into(),
    })
}

/// A private sshd. Stopped (with everything it forked) on [`Sshd::stop`] or drop.
///
/// Lifetime: sshd gets SIGTERM when the *thread* that started it exits (PR_SET_PDEATHSIG), so a crashed test
/// cannot leak it. Start it in the thread that uses it: one started in a helper thread dies with that thread.
pub struct Sshd {
    child: Option<Child>,
    port: u16,
    user: TestUser,
    alias: String,
    dir: tempfile::TempDir,
    ssh_config: PathBuf,
    key: PathBuf,
    log: PathBuf,
}

/// How a test's sshd authenticates, beyond keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Logins {
    /// `PasswordAuthentication yes` (checked against the shadow file, no PAM).
    pub password: bool,
    /// keyboard-interactive through PAM (`UsePAM yes`): PAM asks for the password.
    pub keyboard_interactive: bool,
    /// With `keyboard_interactive`: after the password, PAM asks for a one-time password
    /// (Debian's `pam_oath`, HOTP with the RFC 4226 test key: the n-th login's code is
    /// [`one_time_password`]`(n)`), a new challenge for every login. sshd sees a PAM
    /// configuration of its own (a private mount namespace); nobody else's changes.
    pub one_time_password: bool,
}

/// The RFC 4226 test key ("12345678901234567890") and the codes of its first counters.
const HOTP_KEY: &str = "3132333435363738393031323334353637383930";
const HOTP_CODES: [&str; 10] = [
    "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871",
    "520489",
];

/// The one-time password of the `n`-th login (from 0) to an sshd started with
/// [`Logins::one_time_password`].
pub fn one_time_password(n: usize) -> &'static str {
    HOTP_CODES[n]
}

/// Whether PAM has the `pam_oath` module (Debian's `libpam-oath`) in a module directory.
fn have_pam_oath() -> bool {
    let arch_dirs = fs::read_dir("/usr/lib").into_iter().flatten().flatten();
    (arch_dirs.map(|e| e.path()))
        .chain([PathBuf::from("/usr/lib"), PathBuf::from("/lib64")])
        .any(|d| d.join("security/pam_oath.so").exists())
}

/// A PAM stack for sshd: the password (pam_unix), then a one-time password from the
/// HOTP users file `users` (pam_oath: the file keeps the counter last used, so a window
/// of 1 takes exactly the next code; a code once used is refused as replayed).
fn one_time_password_stack(users: &Path) -> String {
    format!(
        "auth requisite pam_unix.so\n\
         auth required pam_oath.so usersfile={} window=1 digits=6\n\
         account required pam_unix.so\n\
         session required pam_unix.so\n\
         password required pam_deny.so\n",
        users.display()
    )
}

impl Sshd {
    /// Starts a private sshd for [`test_user()`] on a free loopback port.
    pub fn start() -> Sshd {
        Sshd::start_for(test_user())
    }

    /// Starts a private sshd that logs `user` in by key, on a free loopback port.
    pub fn start_for(user: &TestUser) -> Sshd {
        Sshd::launch_with(user, Logins::default(), "")
    }

    /// Starts a private sshd that also accepts the given logins.
    pub fn start_with(user: &TestUser, logins: Logins) -> Sshd {
        Sshd::launch_with(user, logins, "")
    }

    /// Like [`Sshd::start_for`], with `extra` appended to sshd_config (e.g. `SetEnv NAME=value`
    /// lines, which sshd puts into every session's environment).
    pub fn start_with_config(user: &TestUser, extra: &str) -> Sshd {
        Sshd::launch_with(user, Logins::default(), extra)
    }

    /// Like [`Sshd::start_with_config`], in a private mount namespace set up as `mounts`
    /// says: what its sessions see of the filesystem changes, nobody else's does, and it
    /// is all gone when sshd and its sessions are.
    pub fn start_with_mounts(user: &TestUser, extra: &str, mounts: &Mounts) -> Sshd {
        Sshd::launch_in(user, Logins::default(), extra, mounts)
    }

    fn launch_with(user: &TestUser, logins: Logins, extra: &str) -> Sshd {
        Sshd::launch_in(user, logins, extra, &Mounts::default())
    }

    fn launch_in(user: &TestUser, logins: Logins, extra: &str, mounts: &Mounts) -> Sshd {
        require_root();
        for (path, package) in [(SSHD, "openssh-server"), (SSH_KEYGEN, "openssh-client")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: install {package} (apt-get install {package})"
            );
        }
        // sshd's privilege-separation directory; normally made by the service unit, which we do not use.
        fs::create_dir_all("/run/sshd").expect("cannot create /run/sshd");
        // Another test may take the port between our probe and sshd's bind: then retry with a new one.
        for _ in 0..PORT_ATTEMPTS {
            let mut sshd = Sshd::launch(user, free_port(), logins, extra, mounts);
            if sshd.wait_ready() {
                return sshd;
            }
        }
        panic!("sshd could not bind a free port on 127.0.0.1 in {PORT_ATTEMPTS} attempts")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of the listening sshd (0 once stopped).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn user(&self) -> &TestUser {
        &self.user
    }

    /// The `Host` alias defined in [`Sshd::ssh_config`]: `sshd-<port>` (no colon, so `alias:path` works in rsync/scp).
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// A client config for `ssh -F`, defining [`Sshd::alias`] with host, port, user, key and no host-key checks.
    pub fn ssh_config(&self) -> &Path {
        &self.ssh_config
    }

    /// The client's ed25519 private key (mode 0600, owned by the invoking user).
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// The harness's private directory for this sshd (0755: sshd reads authorized_keys there as the user).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything sshd and its per-connection children have logged so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// How many SSH connections have logged in ("Accepted publickey for ..." lines). A connection's line is
    /// in the log before its first command runs, so after an `ssh` that ran a command the count includes it.
    pub fn accepted_connections(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("Accepted publickey for "))
            .count()
    }

    /// `["-F", <ssh_config>, <alias>]`: prefix a remote command with these to run it with the real ssh.
    pub fn ssh_args(&self) -> Vec<String> {
        vec![
            "-F".into(),
            self.ssh_config.display().to_string(),
            self.alias.clone(),
        ]
    }

    /// Stops sshd and every process it forked (connection handlers and the sessions under them): SIGTERM,
    /// a bounded wait, then SIGKILL. Idempotent; never panics (it runs from `drop`).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as i32;
        // Freeze the listener so that it forks no new handler while we collect the ones it has: handlers call
        // setsid(), so after the listener dies they are re-parented and no longer recognisable as ours.
        // Our own child, unreaped, so its pid cannot have been reused.
        send_signal(pid, libc::SIGSTOP);
        let stopped = || procs::process(pid).is_none_or(|p| p.state == 'T');
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !stopped() && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        let forked = procs::descendants(pid);
        send_signal(pid, libc::SIGTERM);
        send_signal(pid, libc::SIGCONT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                eprintln!("sshd {pid} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it");
                child.kill().ok();
                child.wait().ok();
                break;
            }
            thread::sleep(POLL);
        }
        terminate(forked);
    }

    /// The server's public host key, as `ssh-keygen` wrote it (`ssh-ed25519 AAAA… comment`).
    pub fn host_key_pub(&self) -> String {
        fs::read_to_string(self.dir.path().join("host_ed25519.pub")).expect("host key")
    }

    /// Lets `public_key` (a `.pub` file's contents) log in too.
    pub fn authorize(&self, public_key: &str) {
        let mut f = OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("authorized_keys"))
            .expect("authorized_keys");
        f.write_all(public_key.as_bytes())
            .expect("append to authorized_keys");
    }

    /// A client config as a new user would have one: `Host <alias>` with host name, port
    /// and user only, known hosts in `known_hosts` (created empty if missing), no batch
    /// mode, no host-key shortcuts, then `extra` lines (e.g. `IdentityFile …`).
    pub fn plain_client_config(&self, dir: &Path, known_hosts: &Path, extra: &str) -> PathBuf {
        if !known_hosts.exists() {
            write_file(known_hosts, "", 0o600);
        }
        let text = format!(
            "Host {}\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  UserKnownHostsFile {}\n{extra}\n",
            self.alias,
            self.port,
            self.user.name,
            known_hosts.display()
        );
        let path = dir.join(format!("ssh_config-{}", unique_suffix()));
        write_file(&path, &text, 0o600);
        path
    }

    /// How many password logins sshd refused so far ("Failed password" / PAM failures).
    pub fn failed_passwords(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("Failed password") || l.contains("Failed keyboard-interactive"))
            .count()
    }

    /// How many connections logged in by any method so far.
    pub fn accepted_logins(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("Accepted "))
            .count()
    }

    /// Writes keys and configs into a fresh directory and spawns sshd on `port`, without waiting for it.
    fn launch(user: &TestUser, port: u16, logins: Logins, extra: &str, mounts: &Mounts) -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("mitossh-sshd-")
            // Not $TMPDIR: sshd reads authorized_keys as the test user, who must be able to reach it.
            .tempdir_in("/tmp")
            .expect("cannot create a temporary directory under /tmp");
        let path = |name: &str| dir.path().join(name);
        set_mode(dir.path(), 0o755);
        let (host_key, key) = (path("host_ed25519"), path("client_ed25519"));
        for k in [&host_key, &key] {
            run(
                Command::new(SSH_KEYGEN)
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", "mitossh-test", "-f"])
                    .arg(k),
                b"",
            );
        }
        let authorized_keys = path("authorized_keys");
        fs::copy(path("client_ed25519.pub"), &authorized_keys)
            .expect("cannot write authorized_keys");
        set_mode(&authorized_keys, 0o644);

        let sshd_config = path("sshd_config");
        write_file(
            &sshd_config,
            &(sshd_config_text(port, &host_key, &authorized_keys, logins) + extra),
            0o644,
        );
        // Validate first: on a bad config this shows sshd's own complaint.
        run(
            Command::new(SSHD).arg("-t").arg("-f").arg(&sshd_config),
            b"",
        );

        let alias = format!("sshd-{port}");
        let ssh_config = path("ssh_config");
        let client = format!(
            "Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {}\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
             StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n",
            user.name,
            key.display()
        );
        write_file(&ssh_config, &client, 0o600);

        // sshd -e logs to stderr, and so do the handlers it forks: send it all to one file, appended, so
        // `log()` always shows everything written so far (a pipe read by a thread could lag behind).
        let mut mounts = mounts.clone();
        if logins.one_time_password {
            mounts
                .bind
                .push(one_time_password_pam(dir.path(), &user.name));
        }
        let log = path("sshd.log");
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("cannot create sshd.log");
        let mut cmd = Command::new(SSHD);
        cmd.args(["-D", "-e", "-f"]).arg(&sshd_config);
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup"))
            .stderr(log_file);
        let parent = std::process::id() as i32;
        let namespace = mounts.prepared();
        // SAFETY: prctl, getppid, unshare, mount and statvfs are async-signal-safe system
        // calls on data prepared before the fork; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let signal = libc::SIGTERM as libc::c_ulong;
                if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(io::Error::other(
                        "the test process died while starting sshd",
                    ));
                }
                if let Some(ns) = &namespace {
                    ns.enter()?;
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}"));
        Sshd {
            child: Some(child),
            port,
            user: user.clone(),
            alias,
            dir,
            ssh_config,
            key,
            log,
        }
    }

    /// Waits for "Server listening on 127.0.0.1 port N."; false if the port was taken meanwhile.
    fn wait_ready(&mut self) -> bool {
        let ready = format!("Server listening on 127.0.0.1 port {}.", self.port);
        let taken = format!("Bind to port {} on 127.0.0.1 failed", self.port);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = self
                .child
                .as_mut()
                .expect("running")
                .try_wait()
                .expect("waitpid");
            let log = self.log();
            if log.contains(&ready) {
                return true;
            }
            match exited {
                Some(_) if log.contains(&taken) => return false,
                Some(status) => panic!("sshd exited ({status}) before listening; its log:\n{log}"),
                None if Instant::now() >= deadline => {
                    panic!("sshd did not log `{ready}` within {START_TIMEOUT:?}; its log:\n{log}")
                }
                None => thread::sleep(POLL),
            }
        }
    }
}

/// Writes, under `dir`, a PAM configuration directory for sshd that asks `user` for a
/// one-time password after the password, and its HOTP users file; returns the bind that
/// shows the directory to sshd as `/etc/pam.d`.
fn one_time_password_pam(dir: &Path, user: &str) -> (PathBuf, PathBuf) {
    assert!(
        have_pam_oath(),
        "PAM's pam_oath module is missing: install libpam-oath (apt-get install libpam-oath)"
    );
    let users = dir.join("users.oath");
    write_file(&users, &format!("HOTP {user} - {HOTP_KEY}\n"), 0o600);
    let pam = dir.join("pam.d");
    fs::create_dir(&pam).expect("cannot create pam.d");
    write_file(&pam.join("sshd"), &one_time_password_stack(&users), 0o644);
    (pam, PathBuf::from("/etc/pam.d"))
}

/// How a private mount namespace differs from the machine's (see [`Sshd::start_with_mounts`]).
#[derive(Debug, Clone, Default)]
pub struct Mounts {
    /// `(source, target)`: the directory `source` is seen at `target` (which must exist).
    pub bind: Vec<(PathBuf, PathBuf)>,
    /// Directories whose files cannot be executed (mounted `noexec`), after the binds.
    pub noexec: Vec<PathBuf>,
}

/// [`Mounts`] as C strings, made before the fork: between fork and exec nothing allocates.
struct Namespace {
    bind: Vec<(std::ffi::CString, std::ffi::CString)>,
    noexec: Vec<std::ffi::CString>,
}

impl Mounts {
    fn prepared(&self) -> Option<Namespace> {
        if self.bind.is_empty() && self.noexec.is_empty() {
            return None;
        }
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        Some(Namespace {
            bind: self.bind.iter().map(|(s, t)| (c(s), c(t))).collect(),
            noexec: self.noexec.iter().map(|p| c(p)).collect(),
        })
    }
}

impl Namespace {
    /// In the child, before exec: a mount namespace of its own whose changes never
    /// propagate back, then the binds, then `noexec` on top of each directory's own
    /// flags (a remount replaces them all).
    fn enter(&self) -> io::Result<()> {
        let check = |r: libc::c_int| {
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        let none = std::ptr::null::<libc::c_char>();
        // SAFETY: plain system calls on valid C strings (or null where the kernel allows).
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (source, target) in &self.bind {
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
            }
            for dir in &self.noexec {
                check(libc::mount(
                    dir.as_ptr(),
                    dir.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                let mut st: libc::statvfs = std::mem::zeroed();
                check(libc::statvfs(dir.as_ptr(), &mut st))?;
                // ST_RDONLY, ST_NOSUID, ST_NODEV, ST_NOATIME, ST_NODIRATIME and
                // ST_RELATIME have the values of their MS_ twins.
                let kept = st.f_flag
                    & (libc::ST_RDONLY
                        | libc::ST_NOSUID
                        | libc::ST_NODEV
                        | libc::ST_NOATIME
                        | libc::ST_NODIRATIME
                        | libc::MS_RELATIME);
                let flags =
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOEXEC | kept as libc::c_ulong;
                check(libc::mount(
                    none,
                    dir.as_ptr(),
                    none,
                    flags,
                    std::ptr::null(),
                ))?;
            }
        }
        Ok(())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sshd_config_text(port: u16, host_key: &Path, authorized_keys: &Path, logins: Logins) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    format!(
        "ListenAddress 127.0.0.1
Port {port}
HostKey {}
PidFile none
AuthorizedKeysFile {}
StrictModes no
UsePAM {}
PasswordAuthentication {}
KbdInteractiveAuthentication {}
PubkeyAuthentication yes
PermitRootLogin prohibit-password
LogLevel VERBOSE
Subsystem sftp /usr/lib/openssh/sftp-server
AcceptEnv LANG LC_* GIT_PROTOCOL
MaxStartups 200
MaxSessions 200
PrintMotd no
X11Forwarding no
AllowTcpForwarding yes
",
        host_key.display(),
        authorized_keys.display(),
        yes_no(logins.keyboard_interactive),
        yes_no(logins.password),
        yes_no(logins.keyboard_interactive),
    )
}

/// A suffix unique within this test process.
fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// SIGTERM `procs` and whatever they fork meanwhile, then SIGKILL those still alive after [`STOP_TIMEOUT`].
fn terminate(mut procs: Vec<Proc>) {
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            // Keep those still alive (same pid *and* start time), then add their children, grandchildren, ...
            let all = procs::all_processes();
            let known = |p: &Proc| {
                procs
                    .iter()
                    .any(|k| k.pid == p.pid && k.start_time == p.start_time)
            };
            let mut alive: Vec<Proc> = all.iter().filter(|p| known(p)).cloned().collect();
            let mut i = 0;
            while let Some(parent) = alive.get(i).map(|p| p.pid) {
                for p in &all {
                    if p.ppid == parent && !alive.iter().any(|k| k.pid == p.pid) {
                        alive.push(p.clone());
                    }
                }
                i += 1;
            }
            procs = alive;
            if procs.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            for p in &procs {
                // The scan just above showed this pid to be this process.
                send_signal(p.pid, signal);
            }
            thread::sleep(POLL);
        }
    }
    let left: Vec<String> = procs
        .iter()
        .map(|p| format!("{} {}", p.pid, p.command()))
        .collect();
    eprintln!("warning: processes of a stopped sshd survived SIGKILL: {left:?}");
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

fn require_root() {
    let euid = nix::unistd::geteuid().as_raw();
    assert!(
        euid == 0,
        "integration tests must run as root (they create a test user and start sshd); euid is {euid}"
    );
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {:o} {}: {e}", mode, path.display()));
}

fn write_file(path: &Path, text: &str, mode: u32) {
    let mut f =
        File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    set_mode(path, mode);
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Runs a setup command with `stdin`, panicking with its output if it fails or takes over 30 s.
fn run(cmd: &mut Command, stdin: &[u8]) {
    let out = output_within(cmd, stdin, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
