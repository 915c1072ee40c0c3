//! Ansible for integration tests: the `ansible` package from PyPI (ansible-core plus the
//! bundled collections, among them `ansible.posix` for synchronize; Galaxy is not needed)
//! in a virtual environment kept outside the repository, so that later runs, and CI on the
//! same machine, reuse it instead of installing again (about 20 s to a minute).
//!
//! The venv is `/var/cache/mitossh-tests/ansible-<version>` (`$MITOSSH_TEST_CACHE`
//! replaces `/var/cache/mitossh-tests`). It is made once, under an flock shared by every
//! test process, and marked complete only after pip succeeded; a venv that is unmarked or
//! no longer runs (a Python upgrade, a half-finished install) is removed and made again.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::wait::{lock_within, output_within, wait_until};

/// The PyPI release of `ansible` the tests use: ansible-core 2.19 with ansible.posix.
pub const ANSIBLE_VERSION: &str = "12.3.0";
/// What `ansible-playbook --version` must start with for that release.
const CORE_VERSION: &str = "ansible-playbook [core 2.19.";
const DEFAULT_CACHE: &str = "/var/cache/mitossh-tests";
/// Written into the venv once pip succeeded; holds the requirement it was made for.
const READY_MARK: &str = ".mitossh-ready";
/// Installing downloads about 50 MB; bounded generously for slow mirrors.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// A working Ansible installation.
#[derive(Debug)]
pub struct Ansible {
    /// The venv's `bin` directory: `ansible-playbook` and the Python it runs on.
    pub bin: PathBuf,
    /// How long making sure of it took in this process (an install, or only a check).
    pub took: Duration,
    /// Whether this process installed it.
    pub installed: bool,
}

impl Ansible {
    pub fn playbook(&self) -> PathBuf {
        self.bin.join("ansible-playbook")
    }
}

/// The cached Ansible, installed first if needed. Panics with pip's output when that fails.
pub fn ansible() -> &'static Ansible {
    static A: OnceLock<Ansible> = OnceLock::new();
    A.get_or_init(|| {
        let started = Instant::now();
        let cache = std::env::var_os("MITOSSH_TEST_CACHE")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from);
        fs::create_dir_all(&cache)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", cache.display()));
        let venv = cache.join(format!("ansible-{ANSIBLE_VERSION}"));
        let _lock = lock(&cache.join(format!("ansible-{ANSIBLE_VERSION}.lock")));
        let installed = if works(&venv) {
            false
        } else {
            install(&venv);
            assert!(
                works(&venv),
                "{} was installed but does not run; see above",
                venv.display()
            );
            true
        };
        let took = started.elapsed();
        eprintln!(
            "ansible {ANSIBLE_VERSION}: {} in {took:?} ({})",
            if installed { "installed" } else { "checked" },
            venv.display()
        );
        Ansible {
            bin: venv.join("bin"),
            took,
            installed,
        }
    })
}

/// Whether `venv` is a complete install of our version that runs.
fn works(venv: &Path) -> bool {
    let requirement = format!("ansible=={ANSIBLE_VERSION}\n");
    if fs::read_to_string(venv.join(READY_MARK)).ok().as_deref() != Some(&requirement) {
        return false;
    }
    let Ok(out) = Command::new(venv.join("bin/ansible-playbook"))
        .arg("--version")
        .env("LC_ALL", "C.UTF-8")
        .output()
    else {
        return false;
    };
    let posix = Command::new(venv.join("bin/python"))
        .args(["-c", "import ansible_collections.ansible.posix"])
        .status();
    out.status.success()
        && out.stdout.starts_with(CORE_VERSION.as_bytes())
        && posix.is_ok_and(|s| s.success())
}

/// Makes `venv` afresh and installs Ansible into it.
fn install(venv: &Path) {
    if venv.exists() {
        eprintln!(
            "{} is incomplete or broken; making it again",
            venv.display()
        );
        fs::remove_dir_all(venv)
            .unwrap_or_else(|e| panic!("cannot remove {}: {e}", venv.display()));
    }
    eprintln!(
        "installing ansible=={ANSIBLE_VERSION} into {} (once per machine)",
        venv.display()
    );
    // Debian's own Python rather than whatever python3 comes first on PATH (pyenv shims
    // and the like change under our feet); ansible-core 2.19 needs 3.11 or newer.
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let made = output_within(
        Command::new(python).args(["-m", "venv"]).arg(venv),
        b"",
        Duration::from_secs(120),
    );
    assert!(
        made.status.success(),
        "{python} -m venv {} failed (on Debian: apt-get install python3-venv):\n{}{}",
        venv.display(),
        String::from_utf8_lossy(&made.stdout),
        String::from_utf8_lossy(&made.stderr)
    );
    let pip = output_within(
        Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
            ])
            .arg(format!("ansible=={ANSIBLE_VERSION}")),
        b"",
        INSTALL_TIMEOUT,
    );
    assert!(
        pip.status.success(),
        "pip install ansible=={ANSIBLE_VERSION} failed:\n{}{}",
        String::from_utf8_lossy(&pip.stdout),
        String::from_utf8_lossy(&pip.stderr)
    );
    fs::write(
        venv.join(READY_MARK),
        format!("ansible=={ANSIBLE_VERSION}\n"),
    )
    .unwrap_or_else(|e| panic!("cannot mark {} ready: {e}", venv.display()));
}

/// An exclusive flock on `path`, held until the returned file is dropped: test processes
/// running at the same time install once, and never use a venv being made.
fn lock(path: &Path) -> nix::fcntl::Flock<fs::File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open the lock {}: {e}", path.display()));
    lock_within(
        file,
        INSTALL_TIMEOUT,
        &format!(
            "the lock {} (another test installing Ansible)",
            path.display()
        ),
    )
}
