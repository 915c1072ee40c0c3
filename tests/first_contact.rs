//! First contact with hosts that are not pre-arranged, side by side with the real ssh:
//! unknown host keys, password / passphrase / keyboard-interactive logins asked on the
//! caller's terminal, no empty password ever sent without one, ssh's warnings and `-v`
//! reaching the caller, contexts keyed by what the configuration resolves to, and the
//! configuration's SendEnv.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use common::*;
use mitossh::ChildSetup;

const T: Duration = Duration::from_secs(60);
const REAL_SSH: &str = "/usr/bin/ssh";

/// Runs `cmd` on a new terminal; returns the terminal and the running program.
fn on_terminal(cmd: &mut Command) -> (Terminal, std::process::Child) {
    Terminal::spawn(cmd, 24, 200)
}

/// Runs `cmd` with no controlling terminal at all (as under cron or CI), stdin empty.
fn without_terminal(cmd: &mut Command) -> std::process::Output {
    // A session with no terminal.
    cmd.new_session();
    output_within(cmd, b"", T)
}

/// Waits for the program on `term` to exit and for everything it wrote to be read.
fn finish(term: &Terminal, mut child: std::process::Child) -> ExitStatus {
    let status = wait_child(&mut child, T, "the ssh on the terminal to exit");
    term.wait_closed(T);
    status
}

/// Like `term.expect`, but shows the master's log when the text never comes.
fn expect(term: &Terminal, needle: &str, master: &Master) {
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| term.expect(needle, T)));
    if found.is_err() {
        panic!(
            "{needle:?} never appeared; the terminal:\n{}\nthe master's log:\n{}",
            term.text(),
            master.log()
        );
    }
}

fn text_of(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `ssh -O exit` through the master: the next call to `alias` is a new connection.
fn close_connection(master: &Master, cfg: &Path, alias: &str) -> std::process::Output {
    output_within(
        master.ssh().arg("-F").arg(cfg).args(["-O", "exit", alias]),
        b"",
        T,
    )
}

/// The line of `text` that contains `needle` (trimmed), for comparing two terminals.
fn line_with(text: &str, needle: &str) -> String {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
        .trim()
        .to_string()
}

fn key_lines(sshd: &Sshd) -> String {
    format!(
        "  IdentityFile {}\n  IdentitiesOnly yes\n",
        sshd.key().display()
    )
}

const NO_HOST_KEY_CHECKS: &str = "  StrictHostKeyChecking no\n";

/// A client configuration for `sshd` in `dir` that logs in by the test key, trusts any host
/// key (known hosts: /dev/null), and has `extra` lines (each `  Keyword value\n`).
fn keyed_config(sshd: &Sshd, dir: &Path, extra: &str) -> std::path::PathBuf {
    sshd.plain_client_config(
        dir,
        Path::new("/dev/null"),
        &format!("{NO_HOST_KEY_CHECKS}{}{extra}", key_lines(sshd)),
    )
}

#[test]
fn an_unknown_host_key_is_confirmed_on_the_terminal_as_ssh_asks() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let question = "Are you sure you want to continue connecting (yes/no/[fingerprint])?";
    for answer in ["yes", "no"] {
        // A master of its own: a context open to this host would be reused unasked.
        let master = Master::start();
        let mut seen = Vec::new();
        for real in [false, true] {
            let known = dir.path().join(format!("known-{answer}-{real}"));
            let cfg = sshd.plain_client_config(dir.path(), &known, &key_lines(&sshd));
            let marker = unique_marker();
            let mut cmd = if real {
                Command::new(REAL_SSH)
            } else {
                master.ssh()
            };
            cmd.arg("-F")
                .arg(&cfg)
                .args([sshd.alias(), "echo", &marker]);
            let (mut term, child) = on_terminal(&mut cmd);
            expect(&term, question, &master);
            term.send(format!("{answer}\n").as_bytes());
            let status = finish(&term, child);
            let text = term.text();
            let in_known_hosts = Command::new("ssh-keygen")
                .arg("-F")
                .arg(format!("[127.0.0.1]:{}", sshd.port()))
                .arg("-f")
                .arg(&known)
                .output()
                .unwrap()
                .status
                .success();
            if answer == "yes" {
                assert!(status.success(), "real={real}: {text}");
                assert!(text.contains(&marker), "real={real}: {text}");
                assert!(in_known_hosts, "real={real}: the key was not recorded");
            } else {
                assert_eq!(status.code(), Some(255), "real={real}: {text}");
                assert!(
                    text.contains("Host key verification failed."),
                    "real={real}: {text}"
                );
                assert!(!in_known_hosts, "real={real}");
            }
            seen.push((
                line_with(&text, "key fingerprint is"),
                line_with(&text, "The authenticity of host"),
                status.code(),
            ));
        }
        assert_eq!(seen[0], seen[1], "mitossh and ssh differ for {answer:?}");
    }
}

/// A password-only client configuration for `sshd`.
fn password_config(sshd: &Sshd, dir: &Path, extra: &str) -> PathBuf {
    sshd.plain_client_config(
        dir,
        Path::new("/dev/null"),
        &format!("{NO_HOST_KEY_CHECKS}  PubkeyAuthentication no\n{extra}"),
    )
}

/// A host that takes only passwords: its sshd and a client configuration for it.
struct PasswordHost {
    sshd: Sshd,
    cfg: PathBuf,
    dir: tempfile::TempDir,
}

impl PasswordHost {
    fn start() -> PasswordHost {
        let logins = Logins {
            password: true,
            ..Logins::default()
        };
        let sshd = Sshd::start_with(test_user(), logins);
        let dir = tempfile::tempdir().unwrap();
        let cfg = password_config(&sshd, dir.path(), "");
        PasswordHost { sshd, cfg, dir }
    }

    /// ssh's own password prompt for it.
    fn prompt(&self) -> String {
        format!("{}@127.0.0.1's password: ", self.sshd.user().name)
    }
}

#[test]
fn a_password_is_asked_on_the_terminal_and_never_guessed_without_one() {
    let host = PasswordHost::start();
    let (sshd, cfg, prompt) = (&host.sshd, host.cfg.clone(), host.prompt());

    // The right password, then three wrong ones, through mitossh and through ssh.
    for real in [false, true] {
        let master = Master::start();
        let ssh = || {
            let mut cmd = if real {
                Command::new(REAL_SSH)
            } else {
                master.ssh()
            };
            cmd.arg("-F")
                .arg(&cfg)
                .args([sshd.alias(), "echo", "logged-$((6*7))"]);
            cmd
        };
        let (mut term, child) = on_terminal(&mut ssh());
        expect(&term, &prompt, &master);
        term.send(format!("{TEST_PASSWORD}\n").as_bytes());
        assert!(
            finish(&term, child).success(),
            "real={real}: {}",
            term.text()
        );
        assert!(term.text().contains("logged-42"), "real={real}");
        assert!(
            !term.text().contains(TEST_PASSWORD),
            "the password was echoed"
        );

        // The connection just made would be reused; start afresh.
        let out = close_connection(&master, &cfg, sshd.alias());
        assert!(real || out.status.success(), "{}", text_of(&out).1);
        let master = Master::start();
        let ssh = || {
            let mut cmd = if real {
                Command::new(REAL_SSH)
            } else {
                master.ssh()
            };
            cmd.arg("-F").arg(&cfg).args([sshd.alias(), "true"]);
            cmd
        };
        let (mut term, child) = on_terminal(&mut ssh());
        for round in 1..=3 {
            let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                wait_until(T, "the next password prompt", || {
                    term.text().matches(&prompt).count() == round
                })
            }));
            assert!(
                found.is_ok(),
                "round {round}, real={real}:\n{}\n{}",
                term.text(),
                master.log()
            );
            term.send(b"wrong-password\n");
        }
        let status = finish(&term, child);
        let text = term.text();
        assert_eq!(status.code(), Some(255), "real={real}: {text}");
        assert!(
            text.contains("Permission denied, please try again."),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{}@127.0.0.1: Permission denied (",
                sshd.user().name
            )),
            "{text}"
        );
        assert_eq!(text.matches(&prompt).count(), 3, "real={real}: {text}");
    }

    // No terminal, and BatchMode=yes on one: ssh's refusal at once, and sshd saw no
    // password at all (ssh alone would have sent empty ones here).
    let master = Master::start();
    let failed_before = sshd.failed_passwords();
    let out = without_terminal(
        master
            .ssh()
            .arg("-F")
            .arg(&cfg)
            .args([sshd.alias(), "true"]),
    );
    let (_, err) = text_of(&out);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(
        !err.contains("password:"),
        "asked without a terminal: {err}"
    );

    let batch = password_config(sshd, host.dir.path(), "  BatchMode yes\n");
    let (term, child) = on_terminal(
        master
            .ssh()
            .arg("-F")
            .arg(&batch)
            .args([sshd.alias(), "true"]),
    );
    assert_eq!(finish(&term, child).code(), Some(255), "{}", term.text());
    assert!(!term.text().contains("password:"), "{}", term.text());
    assert_eq!(
        sshd.failed_passwords(),
        failed_before,
        "sshd saw a password attempt:\n{}",
        sshd.log()
    );
}

#[test]
fn ten_calls_that_need_a_password_ask_once_and_share_one_connection() {
    let host = PasswordHost::start();
    let (sshd, cfg) = (&host.sshd, host.cfg.clone());
    let master = Master::start();
    let script = format!(
        "for i in 0 1 2 3 4 5 6 7 8 9; do ssh -F {} {} echo call-$i-done & done; wait; echo all-$((5+5))-waited",
        cfg.display(),
        sshd.alias()
    );
    let (mut term, child) = on_terminal(master.command("sh").args(["-c", &script]));
    term.expect("password: ", T);
    term.send(format!("{TEST_PASSWORD}\n").as_bytes());
    assert!(finish(&term, child).success(), "{}", term.text());
    let text = term.text();
    assert!(text.contains("all-10-waited"), "{text}");
    for i in 0..10 {
        assert!(text.contains(&format!("call-{i}-done")), "call {i}: {text}");
    }
    assert_eq!(text.matches("password: ").count(), 1, "{text}");
    assert_eq!(sshd.accepted_logins(), 1, "{}", sshd.log());
}

#[test]
fn a_passphrase_is_asked_for_a_key_without_an_agent() {
    let sshd = Sshd::start();
    let master = Master::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("locked_ed25519");
    let made = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "open sesame",
            "-C",
            "locked",
            "-f",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    sshd.authorize(&std::fs::read_to_string(key.with_extension("pub")).unwrap());
    let cfg = sshd.plain_client_config(
        dir.path(),
        Path::new("/dev/null"),
        &format!(
            "{NO_HOST_KEY_CHECKS}  IdentityFile {}\n  IdentitiesOnly yes\n",
            key.display()
        ),
    );
    for real in [false, true] {
        let mut cmd = if real {
            Command::new(REAL_SSH)
        } else {
            master.ssh()
        };
        cmd.env_remove("SSH_AUTH_SOCK").arg("-F").arg(&cfg).args([
            sshd.alias(),
            "echo",
            "unlocked-$((1+1))",
        ]);
        let (mut term, child) = on_terminal(&mut cmd);
        term.expect(
            &format!("Enter passphrase for key '{}': ", key.display()),
            T,
        );
        term.send(b"open sesame\n");
        assert!(
            finish(&term, child).success(),
            "real={real}: {}",
            term.text()
        );
        assert!(term.text().contains("unlocked-2"), "{}", term.text());
    }
}

#[test]
fn keyboard_interactive_through_pam_is_asked_on_the_terminal() {
    let logins = Logins {
        keyboard_interactive: true,
        ..Logins::default()
    };
    let sshd = Sshd::start_with(test_user(), logins);
    let master = Master::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = password_config(
        &sshd,
        dir.path(),
        "  PreferredAuthentications keyboard-interactive\n",
    );
    for real in [false, true] {
        let mut cmd = if real {
            Command::new(REAL_SSH)
        } else {
            master.ssh()
        };
        cmd.arg("-F")
            .arg(&cfg)
            .args([sshd.alias(), "echo", "kbd-$((3*3))"]);
        let (mut term, child) = on_terminal(&mut cmd);
        term.expect("Password: ", T);
        term.send(format!("{TEST_PASSWORD}\n").as_bytes());
        assert!(
            finish(&term, child).success(),
            "real={real}: {}",
            term.text()
        );
        assert!(term.text().contains("kbd-9"), "{}", term.text());
    }
}

/// What one login through a keyboard-interactive sshd asked on the terminal, in order
/// ("password" or "code"), and how the client ended.
fn answer_until_done(
    term: &mut Terminal,
    mut child: std::process::Child,
    otp_prompt: &str,
    code: &str,
) -> (Vec<&'static str>, ExitStatus) {
    let prompts = |text: &str| {
        let mut asked = Vec::new();
        let mut rest = text;
        loop {
            let p = rest.find("Password: ");
            let c = rest.find(otp_prompt);
            let (which, at, len) = match (p, c) {
                (Some(p), Some(c)) if c < p => ("code", c, otp_prompt.len()),
                (Some(p), _) => ("password", p, "Password: ".len()),
                (None, Some(c)) => ("code", c, otp_prompt.len()),
                (None, None) => return asked,
            };
            asked.push(which);
            rest = &rest[at + len..];
        }
    };
    let mut answered = 0;
    loop {
        let mut exited = None;
        wait_until(T, "a prompt or the client's exit", || {
            exited = child.try_wait().unwrap();
            exited.is_some() || prompts(&term.text()).len() > answered
        });
        if let Some(status) = exited {
            term.wait_closed(T);
            return (prompts(&term.text()), status);
        }
        let asked = prompts(&term.text());
        for which in &asked[answered..] {
            let answer = if *which == "password" {
                TEST_PASSWORD
            } else {
                code
            };
            term.send(format!("{answer}\n").as_bytes());
        }
        answered = asked.len();
    }
}

/// A one-time password asked after the password, as an OATH PAM module asks (the path an
/// authenticator app's codes take): every connection is a new challenge with its own
/// answer, nothing is remembered or sent again, and a code used once is refused the
/// next time — through mitossh exactly as through ssh.
#[test]
fn a_one_time_password_is_asked_anew_for_each_connection_and_never_replayed() {
    let logins = Logins {
        keyboard_interactive: true,
        one_time_password: true,
        ..Logins::default()
    };
    let sshd = Sshd::start_with(test_user(), logins);
    let dir = tempfile::tempdir().unwrap();
    let cfg = password_config(
        &sshd,
        dir.path(),
        "  PreferredAuthentications keyboard-interactive\n",
    );
    let otp_prompt = format!("One-time password (OATH) for `{}': ", sshd.user().name);
    let mut logins_so_far = 0;
    let mut refused = Vec::new();
    for real in [false, true] {
        let master = Master::start();
        let ssh = |command: &str| {
            let mut cmd = if real {
                Command::new(REAL_SSH)
            } else {
                master.ssh()
            };
            cmd.arg("-F").arg(&cfg).args([sshd.alias(), command]);
            cmd
        };
        for _ in 0..2 {
            let code = one_time_password(logins_so_far);
            let (mut term, child) = on_terminal(&mut ssh("echo otp-$((6*7))"));
            let (asked, status) = answer_until_done(&mut term, child, &otp_prompt, code);
            let text = term.text();
            let users = std::fs::read_to_string(sshd.dir().join("users.oath"));
            assert!(status.success(), "real={real}: {text}\n{users:?}");
            assert_eq!(asked, ["password", "code"], "real={real}: {text}");
            assert!(text.contains("otp-42"), "real={real}: {text}");
            assert!(!text.contains(code), "the code was echoed: {text}");
            assert!(!master.log().contains(code), "the code is in the log");
            logins_so_far += 1;
            // The next call must be a new connection, with a new challenge.
            if !real {
                let out = close_connection(&master, &cfg, sshd.alias());
                assert!(out.status.success(), "{}", text_of(&out).1);
            }
        }
        // The last code again: refused as often as ssh asks, then ssh's refusal.
        let used = one_time_password(logins_so_far - 1);
        let (mut term, child) = on_terminal(&mut ssh("true"));
        let (asked, status) = answer_until_done(&mut term, child, &otp_prompt, used);
        let text = term.text();
        assert_eq!(status.code(), Some(255), "real={real}: {text}");
        assert!(
            text.contains(&format!(
                "{}@127.0.0.1: Permission denied (publickey,keyboard-interactive).",
                sshd.user().name
            )),
            "real={real}: {text}"
        );
        assert!(asked.len() >= 2, "real={real}: {text}");
        refused.push(asked);
    }
    assert_eq!(refused[0], refused[1], "mitossh and ssh asked differently");
}

#[test]
fn the_users_own_askpass_is_honoured_without_a_terminal() {
    let host = PasswordHost::start();
    let (sshd, cfg, dir) = (&host.sshd, host.cfg.clone(), &host.dir);
    let master = Master::start();
    let askpass = dir.path().join("askpass");
    std::fs::write(&askpass, format!("#!/bin/sh\necho '{TEST_PASSWORD}'\n")).unwrap();
    std::fs::set_permissions(
        &askpass,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    for real in [false, true] {
        let mut cmd = if real {
            Command::new(REAL_SSH)
        } else {
            master.ssh()
        };
        cmd.env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .arg("-F")
            .arg(&cfg)
            .args([sshd.alias(), "echo", "askpass-$((2*2))"]);
        let out = without_terminal(&mut cmd);
        let (stdout, stderr) = text_of(&out);
        assert!(out.status.success(), "real={real}: {stderr}");
        assert_eq!(stdout.trim(), "askpass-4");
    }
}

#[test]
fn a_changed_host_key_is_shown_to_the_caller() {
    let sshd = Sshd::start();
    let master = Master::start();
    let dir = tempfile::tempdir().unwrap();
    // known_hosts with another key for this server.
    let other = dir.path().join("other_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(made.success());
    let known = dir.path().join("known_hosts");
    let wrong = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    std::fs::write(&known, format!("[127.0.0.1]:{} {wrong}", sshd.port())).unwrap();
    let cfg = sshd.plain_client_config(dir.path(), &known, &key_lines(&sshd));
    for real in [false, true] {
        let mut cmd = if real {
            Command::new(REAL_SSH)
        } else {
            master.ssh()
        };
        cmd.arg("-F").arg(&cfg).args([
            "-o",
            "StrictHostKeyChecking=no",
            sshd.alias(),
            "echo",
            "in",
        ]);
        let out = output_within(&mut cmd, b"", T);
        let (stdout, stderr) = text_of(&out);
        assert!(out.status.success(), "real={real}: {stderr}");
        assert_eq!(stdout.trim(), "in");
        assert!(
            stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED!"),
            "real={real}: {stderr}"
        );
        assert!(
            stderr.contains(
                "Password authentication is disabled to avoid man-in-the-middle attacks."
            ),
            "real={real}: {stderr}"
        );
    }
}

#[test]
fn verbose_output_and_proxy_errors_reach_the_caller() {
    let sshd = Sshd::start();
    let master = Master::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = keyed_config(&sshd, dir.path(), "");
    let verbose = |cmd: &mut Command| {
        cmd.arg("-v")
            .arg("-F")
            .arg(&cfg)
            .args([sshd.alias(), "true"]);
        let out = output_within(cmd, b"", T);
        assert!(out.status.success(), "{}", text_of(&out).1);
        text_of(&out).1
    };
    let real = verbose(&mut Command::new(REAL_SSH));
    let first = verbose(&mut master.ssh());
    for line in [
        "debug1: Reading configuration data",
        &format!(
            "debug1: Connecting to 127.0.0.1 [127.0.0.1] port {}.",
            sshd.port()
        ),
        "Authenticated to 127.0.0.1",
    ] {
        assert!(real.contains(line), "ssh: {line:?} missing:\n{real}");
        assert!(
            first.contains(line),
            "mitossh, new connection: {line:?} missing:\n{first}"
        );
    }
    // On the connection already open: ssh's configuration lines, then which connection.
    let again = verbose(&mut master.ssh());
    assert!(
        again.contains("debug1: Reading configuration data"),
        "{again}"
    );
    assert!(
        again.contains("debug1: mitossh: using the connection to"),
        "{again}"
    );
    assert!(!again.contains("debug1: Connecting to"), "{again}");

    // A ProxyCommand that fails says why, through mitossh as through ssh.
    let marker = unique_marker();
    let proxy = format!("ProxyCommand=sh -c 'echo {marker}-proxy-broke >&2; exit 3'");
    for real in [false, true] {
        let mut cmd = if real {
            Command::new(REAL_SSH)
        } else {
            master.ssh()
        };
        cmd.arg("-F").arg(&cfg).args([
            "-o",
            &proxy,
            "-o",
            "HostName=proxied.invalid",
            sshd.alias(),
            "true",
        ]);
        let out = output_within(&mut cmd, b"", T);
        let (_, stderr) = text_of(&out);
        assert_eq!(out.status.code(), Some(255), "real={real}: {stderr}");
        assert!(
            stderr.contains(&format!("{marker}-proxy-broke")),
            "real={real}: {stderr}"
        );
    }
}

/// `echo $SSH_CONNECTION`'s server port, through `cmd`.
fn server_port(cmd: &mut Command) -> u16 {
    let out = output_within(cmd, b"", T);
    let (stdout, stderr) = text_of(&out);
    assert!(out.status.success(), "{stderr}");
    stdout
        .split_whitespace()
        .nth(3)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no SSH_CONNECTION in {stdout:?}"))
}

#[test]
fn contexts_follow_the_resolved_configuration() {
    let one = Sshd::start();
    let two = Sshd::start();
    let master = Master::start();
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("use-the-second");
    let cfg = dir.path().join("ssh_config");
    let common = format!(
        "  User {}\n  IdentityFile {}\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
         StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n",
        one.user().name,
        one.key().display(),
        two.key().display()
    );
    std::fs::write(
        &cfg,
        format!(
            "Match host switch exec \"test -e {}\"\n  Port {}\n\
             Host switch first-alias second-alias\n  HostName 127.0.0.1\n  Port {}\n{common}",
            flag.display(),
            two.port(),
            one.port()
        ),
    )
    .unwrap();
    let call = |real: bool, host: &str| {
        let mut cmd = if real {
            Command::new(REAL_SSH)
        } else {
            master.ssh()
        };
        cmd.arg("-F").arg(&cfg).args([host, "echo $SSH_CONNECTION"]);
        server_port(&mut cmd)
    };
    // `Match exec` decides per call, through mitossh as through ssh.
    assert_eq!(call(true, "switch"), one.port());
    assert_eq!(call(false, "switch"), one.port());
    std::fs::write(&flag, "").unwrap();
    assert_eq!(call(true, "switch"), two.port());
    assert_eq!(call(false, "switch"), two.port());
    std::fs::remove_file(&flag).unwrap();
    assert_eq!(call(false, "switch"), one.port());

    // Two aliases of one host share the connection `switch` made.
    let before = one.accepted_connections();
    assert_eq!(call(false, "first-alias"), one.port());
    assert_eq!(call(false, "second-alias"), one.port());
    assert_eq!(
        one.accepted_connections(),
        before,
        "the aliases opened connections of their own:\n{}",
        master.status()
    );
}

#[test]
fn answers_of_the_configuration_outlive_the_master_while_its_files_stand() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    // The real ssh, with a note of each `ssh -G` (whoever runs it: shim or master).
    let asked_log = dir.path().join("asked");
    let ssh = dir.path().join("ssh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\nfor a; do [ \"$a\" = -G ] && echo \"$*\" >> '{}'; done\n\
             exec {REAL_SSH} \"$@\"\n",
            asked_log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = keyed_config(&sshd, dir.path(), "");
    let env = [
        ("MITOSSH_REAL_SSH", ssh.as_os_str()),
        ("XDG_RUNTIME_DIR", runtime.as_os_str()),
    ];
    let asked = || std::fs::read_to_string(&asked_log).map_or(0, |t| t.lines().count());
    let call = |master: &Master| {
        let mut cmd = master.ssh();
        cmd.env("MITOSSH_REAL_SSH", &ssh)
            .arg("-F")
            .arg(&cfg)
            .args([sshd.alias(), "echo ok"]);
        let out = output_within(&mut cmd, b"", T);
        let (stdout, stderr) = text_of(&out);
        assert!(
            out.status.success() && stdout == "ok\n",
            "{stdout:?} {stderr}"
        );
    };
    let saved = runtime.join("mitossh/ssh-answers");
    {
        let master = Master::start_with_env(&env);
        call(&master);
        assert_eq!(asked(), 1);
        wait_until(T, "the answers to be kept", || saved.exists());
    }
    let master = Master::start_with_env(&env);
    call(&master);
    assert_eq!(asked(), 1, "the next master asked again:\n{}", master.log());
    drop(master);

    // Once the configuration changes, the kept answer is no longer believed.
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("# edited\n");
    std::fs::write(&cfg, text).unwrap();
    let master = Master::start_with_env(&env);
    call(&master);
    assert_eq!(asked(), 2, "{}", master.log());
}

#[test]
fn send_env_from_the_configuration_is_applied_as_ssh_applies_it() {
    let sshd = Sshd::start();
    let master = Master::start();
    let dir = tempfile::tempdir().unwrap();
    // sshd's AcceptEnv (the harness's: LANG LC_* GIT_PROTOCOL) refuses the second.
    let cfg = keyed_config(&sshd, dir.path(), "  SendEnv LANG MITOSSH_REFUSED\n");
    let lang = format!("C.UTF-8-{}", unique_marker());
    for real in [false, true] {
        let mut cmd = if real {
            Command::new(REAL_SSH)
        } else {
            master.ssh()
        };
        cmd.env("LANG", &lang)
            .env("MITOSSH_NOT_SENT", "x")
            .env("MITOSSH_REFUSED", "x")
            .arg("-F")
            .arg(&cfg)
            .args([
                sshd.alias(),
                "echo \"$LANG|${MITOSSH_NOT_SENT:-unset}|${MITOSSH_REFUSED:-refused}\"",
            ]);
        let out = output_within(&mut cmd, b"", T);
        let (stdout, stderr) = text_of(&out);
        assert!(out.status.success(), "real={real}: {stderr}");
        assert_eq!(
            stdout.trim(),
            format!("{lang}|unset|refused"),
            "real={real}"
        );
    }
}

#[test]
fn remote_command_and_set_env_from_the_configuration_apply() {
    let sshd = Sshd::start();
    let master = Master::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = keyed_config(
        &sshd,
        dir.path(),
        "  SetEnv LC_MITOSSH=seven\n  \
         RemoteCommand echo from-config-$((1+2)) \"$LC_MITOSSH\"\n  RequestTTY no\n",
    );
    for real in [false, true] {
        let mut cmd = if real {
            Command::new(REAL_SSH)
        } else {
            master.ssh()
        };
        cmd.arg("-F").arg(&cfg).arg(sshd.alias());
        let out = output_within(&mut cmd, b"", T);
        let (stdout, stderr) = text_of(&out);
        assert!(out.status.success(), "real={real}: {stderr}");
        assert_eq!(stdout.trim(), "from-config-3 seven", "real={real}");
    }
}

/// Whether any process's command line holds `needle`.
fn in_some_command_line(needle: &str) -> bool {
    !processes_matching(|p| p.cmdline.iter().any(|a| a.contains(needle))).is_empty()
}

#[test]
fn a_first_call_carries_its_open_in_the_command_but_never_a_sent_variable() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = keyed_config(&sshd, dir.path(), "  SendEnv LANG GIT_PROTOCOL\n");
    let marker = unique_marker();
    // `public`: only LANG is sent, and the first frames ride in stage 1's command.
    for public in [true, false] {
        let master = Master::start();
        let tag = unique_marker();
        let command = format!("echo \"<${{GIT_PROTOCOL:-none}}>\"; read line; exit 0 # {tag}");
        let mut cmd = master.ssh();
        cmd.env_remove("GIT_PROTOCOL").env("LANG", "C.UTF-8");
        if !public {
            cmd.env("GIT_PROTOCOL", &marker);
        }
        cmd.arg("-F")
            .arg(&cfg)
            .args([sshd.alias(), command.as_str()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        let sent = if public { "none" } else { marker.as_str() };
        assert_eq!(line.trim(), format!("<{sent}>"), "public={public}");
        // The session runs. Its command is in the master's ssh's arguments (hex) when
        // the frames went with stage 1, and in no remote process's but the shell's
        // running it, as with plain ssh (the agent got it in its environment).
        let ours = |procs: Vec<Proc>| {
            procs.iter().any(|p| {
                p.cmdline
                    .iter()
                    .any(|a| a.contains(&hex(command.as_bytes())))
            })
        };
        assert_eq!(ours(descendants(master.pid())), public, "public={public}");
        assert!(
            !ours(descendants(sshd.pid())),
            "public={public}: in a remote command line"
        );
        assert!(
            !in_some_command_line(&marker) && !in_some_command_line(&hex(marker.as_bytes())),
            "a sent variable's value is in a command line"
        );
        drop(child.stdin.take());
        let status = wait_child(&mut child, T, "the session to end");
        assert!(status.success(), "public={public}: {status:?}");
    }
}

#[test]
fn mitossh_run_asks_for_a_hosts_password_on_the_terminal_once_per_host() {
    let host = PasswordHost::start();
    // ssh's own prompt, as the real ssh shows it (first test above).
    let (sshd, cfg, prompt) = (&host.sshd, host.cfg.clone(), host.prompt());
    let master = Master::start();
    let mut cmd = Command::new(bin("mitossh"));
    cmd.args(["run", "-H", sshd.alias(), "-n", "2", "-F"])
        .arg(&cfg)
        .arg("--socket")
        .arg(&master.socket)
        .args(["--", "echo run-$((6*7))"]);
    let (mut term, child) = on_terminal(&mut cmd);
    expect(&term, &prompt, &master);
    term.send(format!("{TEST_PASSWORD}\n").as_bytes());
    let status = finish(&term, child);
    let text = term.text();
    assert!(status.success(), "{text}\n{}", master.log());
    assert_eq!(text.matches("run-42").count(), 2, "{text}");
    assert_eq!(
        text.matches(&prompt).count(),
        1,
        "two processes, one host: {text}"
    );
    assert_eq!(sshd.failed_passwords(), 0, "{text}");
}
