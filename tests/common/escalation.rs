//! Privilege escalation for tests: sudo for the test user with `requiretty` and a password
//! to become root, NOPASSWD rules to become the second test user and the nologin service
//! accounts (`nobody`, [`SERVICE_USER`]), su between the users, and doas. System files are written once per run, atomically and validated.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use super::sshd::{TEST_USER, TestUser, ensure_account, ensure_user, test_user};

/// The second test user: sudo reaches it without a password; su and doas with one.
pub const SECOND_USER: &str = "mitossh-t2";

const SUDOERS: &str = "/etc/sudoers.d/mitossh-test";
/// The rules for service accounts, in a file of their own.
const SERVICE_SUDOERS: &str = "/etc/sudoers.d/mitossh-test-service";

/// A service account as packages make them: a system account whose login shell is
/// nologin and whose home is a data directory (www-data, postgres). The test user may
/// become it, and `nobody`, through sudo without a password.
pub const SERVICE_USER: &str = "mitossh-svc";
const NOLOGIN: &str = "/usr/sbin/nologin";
const DOAS_CONF: &str = "/etc/doas.conf";
const MARKER: &str = "# Written by mitossh's tests.";

pub struct Escalation {
    pub user: &'static TestUser,
    pub other: TestUser,
    /// [`SERVICE_USER`]: nologin shell, home under /var/lib.
    pub service: TestUser,
}

/// Sets everything up once per test process.
pub fn escalation() -> &'static Escalation {
    static E: OnceLock<Escalation> = OnceLock::new();
    E.get_or_init(|| {
        let user = test_user();
        let other = ensure_user(SECOND_USER);
        write_validated(
            SUDOERS,
            &format!(
                "{MARKER}\n\
                 Defaults:{TEST_USER} requiretty\n\
                 Defaults:{TEST_USER} use_pty\n\
                 Defaults:{TEST_USER} timestamp_timeout=0\n\
                 Defaults:{TEST_USER} !lecture\n\
                 {TEST_USER} ALL=(root) ALL\n\
                 {TEST_USER} ALL=({SECOND_USER}) NOPASSWD: ALL\n"
            ),
            0o440,
            Some(&["/usr/sbin/visudo", "-cf"]),
        );
        if Path::new("/usr/bin/doas").exists() {
            let current = std::fs::read_to_string(DOAS_CONF).unwrap_or_default();
            assert!(
                current.is_empty() || current.starts_with(MARKER),
                "{DOAS_CONF} exists and is not ours; refusing to overwrite it"
            );
            write_validated(
                DOAS_CONF,
                &format!("{MARKER}\npermit {TEST_USER} as root\npermit nopass {TEST_USER} as {SECOND_USER}\n"),
                0o600,
                Some(&["/usr/bin/doas", "-C"]),
            );
        }
        let service = ensure_account(
            SERVICE_USER,
            &[
                "--system",
                "-m",
                "-d",
                &format!("/var/lib/{SERVICE_USER}"),
                "-s",
                NOLOGIN,
            ],
        );
        assert_eq!(service.shell, std::path::Path::new(NOLOGIN));
        write_validated(
            SERVICE_SUDOERS,
            &format!("{MARKER}\n{TEST_USER} ALL=(nobody, {SERVICE_USER}) NOPASSWD: ALL\n"),
            0o440,
            Some(&["/usr/sbin/visudo", "-cf"]),
        );
        Escalation {
            user,
            other,
            service,
        }
    })
}

/// Writes `content` to `path` through a temporary file that `check` (a command taking the
/// file as last argument) must accept, then renames it into place.
fn write_validated(path: &str, content: &str, mode: u32, check: Option<&[&str]>) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = format!("{path}.tmp-{}", std::process::id());
    std::fs::write(&tmp, content).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    if let Some([program, args @ ..]) = check {
        let out = Command::new(program).args(args).arg(&tmp).output().unwrap();
        assert!(
            out.status.success(),
            "{program} rejected {path}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::rename(&tmp, path).unwrap();
}
