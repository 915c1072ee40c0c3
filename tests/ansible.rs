//! Ansible end to end through mitossh: `mitossh-env ansible-playbook` runs a play with
//! command, shell, file, copy, template, fetch, synchronize (push, pull, and with become
//! into a root-owned path), Ansible's own become and reset_connection against a host whose
//! sudo has `requiretty` and a password, with pipelining off (files by `sftp -b -`) and on
//! (files by scp). Every ssh, sftp and scp call Ansible makes (and the ssh that
//! synchronize's rsync runs) goes through the shims (`MITOSSH_STRICT=1`: none may fall back
//! to the real ssh), over one SSH connection.
//!
//! Ansible (ansible-core 2.19 with ansible.posix, from PyPI) comes from a venv cached
//! outside the repository (`common::ansible`).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(300);

/// The play. Paths and switches come from `vars.yml`, written per run.
const PLAYBOOK: &str = r#"
- name: What Ansible does to a host, through mitossh
  hosts: target
  gather_facts: false
  tasks:
    - name: command
      ansible.builtin.command: id -un
      register: who

    - name: shell
      ansible.builtin.shell: echo "$HOME" | tr a-z A-Z
      register: home

    - name: Both ran as the login user
      ansible.builtin.assert:
        that:
          - who.stdout == 'mitossh-t1'
          - home.stdout == '/HOME/MITOSSH-T1'

    - name: file
      ansible.builtin.file:
        path: "{{ rdir }}"
        state: directory
        mode: "0750"

    - name: copy
      ansible.builtin.copy:
        src: "{{ src }}/a.txt"
        dest: "{{ rdir }}/copied.txt"
        mode: "0640"

    - name: template
      ansible.builtin.template:
        src: "{{ template }}"
        dest: "{{ rdir }}/templated.txt"
        mode: "0644"

    - name: fetch
      ansible.builtin.fetch:
        src: "{{ rdir }}/templated.txt"
        dest: "{{ fetched }}"
        flat: true

    - name: synchronize, push
      ansible.posix.synchronize:
        src: "{{ src }}/"
        dest: "{{ rdir }}/pushed/"

    - name: synchronize, pull
      ansible.posix.synchronize:
        mode: pull
        src: "{{ rdir }}/pushed/"
        dest: "{{ pulled }}/"

    # rsync's remote side runs as `sudo -u root rsync`, without a terminal: plain ssh fails
    # here ("sorry, you must have a tty"); mitossh runs it in its sudo context.
    - name: synchronize with become, into a root-owned path
      ansible.posix.synchronize:
        src: "{{ src }}/"
        dest: "{{ root_dir }}/"
      become: true

    # Ansible's own sudo answers the password prompt itself. Without pipelining it runs
    # modules under `ssh -tt`, whose terminal satisfies requiretty; with pipelining there
    # is no terminal and sudo refuses, through mitossh exactly as through plain ssh.
    - name: Ansible's own sudo
      ansible.builtin.command: id -u
      become: true
      register: ansible_sudo
      ignore_errors: "{{ pipelining }}"

    - name: Without pipelining, it ran as root
      ansible.builtin.assert:
        that: ansible_sudo.stdout == '0'
      when: not pipelining

    - name: With pipelining, sudo wanted a terminal, as with plain ssh
      ansible.builtin.assert:
        that:
          - ansible_sudo is failed
          - "'must have a tty' in ansible_sudo.module_stderr"
      when: pipelining

    - name: copy with Ansible's own sudo, into the root-owned path
      ansible.builtin.copy:
        content: "{{ marker }}\n"
        dest: "{{ root_dir }}/by-ansible-sudo.txt"
        mode: "0600"
      become: true
      when: not pipelining

    - name: reset_connection (ssh -O check, then ssh -O stop)
      ansible.builtin.meta: reset_connection
"#;

/// The contrast: synchronize with become alone, for a run without mitossh.
const SYNCHRONIZE_WITH_BECOME: &str = r#"
- name: synchronize with become
  hosts: target
  gather_facts: false
  tasks:
    - name: synchronize with become, into a root-owned path
      ansible.posix.synchronize:
        src: "{{ src }}/"
        dest: "{{ root_dir }}/"
      become: true
"#;

/// An Ansible project in a temporary directory, aimed at one sshd: configuration,
/// inventory, variables, playbooks, a template and a tree to send. Removes what the play
/// made on the host when dropped.
struct Project {
    dir: tempfile::TempDir,
    marker: String,
    /// Made by the play as the login user.
    rdir: PathBuf,
    /// Made by the play as root.
    root_dir: PathBuf,
    pipelining: bool,
}

impl Project {
    fn new(sshd: &Sshd, pipelining: bool) -> Project {
        let dir = tempfile::Builder::new()
            .prefix("mitossh-ansible-")
            .tempdir()
            .unwrap();
        let marker = unique_marker();
        let rdir = sshd.user().home.join(&marker);
        let root_dir = PathBuf::from(format!("/root/{marker}"));
        let p = Project {
            dir,
            marker,
            rdir,
            root_dir,
            pipelining,
        };
        let home = p.path("home");
        std::fs::create_dir_all(&home).unwrap();
        make_tree(&p.path("src"), 300 << 10, 12);
        std::fs::write(p.path("src/a.txt"), format!("copied {}\n", p.marker)).unwrap();
        std::fs::write(
            p.path("greeting.j2"),
            "Hello from {{ inventory_hostname }}, {{ marker }}\n",
        )
        .unwrap();
        // Nothing is read from the real home: HOME is the project's, and so are ~/.ansible
        // (local temporary files, control paths) and the configuration.
        std::fs::write(
            p.path("ansible.cfg"),
            format!(
                "[defaults]\n\
                 inventory = {inventory}\n\
                 host_key_checking = False\n\
                 retry_files_enabled = False\n\
                 local_tmp = {home}/.ansible/tmp\n\
                 nocolor = True\n",
                inventory = p.path("inventory").display(),
                home = home.display(),
            ),
        )
        .unwrap();
        // The become password is for Ansible's own sudo; it lives in a 0600 file, never in
        // an argument.
        write_private(
            &p.path("inventory"),
            &format!(
                "target ansible_host=127.0.0.1 ansible_port={port} ansible_user={user} \
                 ansible_ssh_private_key_file={key} ansible_python_interpreter=/usr/bin/python3 \
                 ansible_ssh_common_args='-o UserKnownHostsFile=/dev/null' \
                 ansible_become_password={TEST_PASSWORD}\n",
                port = sshd.port(),
                user = sshd.user().name,
                key = sshd.key().display(),
            ),
        );
        // mitossh's sudo context (synchronize with become) reads it from here.
        write_private(&p.path("become-password"), &format!("{TEST_PASSWORD}\n"));
        std::fs::write(
            p.path("vars.yml"),
            format!(
                "src: {src}\npulled: {pulled}\nfetched: {fetched}\ntemplate: {template}\n\
                 rdir: {rdir}\nroot_dir: {root_dir}\nmarker: {marker}\npipelining: {pipelining}\n",
                src = p.path("src").display(),
                pulled = p.path("pulled").display(),
                fetched = p.path("fetched.txt").display(),
                template = p.path("greeting.j2").display(),
                rdir = p.rdir.display(),
                root_dir = p.root_dir.display(),
                marker = p.marker,
            ),
        )
        .unwrap();
        std::fs::write(p.path("play.yml"), PLAYBOOK).unwrap();
        std::fs::write(p.path("contrast.yml"), SYNCHRONIZE_WITH_BECOME).unwrap();
        p
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `[wrapper] ansible-playbook -vvv <playbook>` in a clean environment: only PATH
    /// (Ansible's venv first), the project's HOME and configuration, a UTF-8 locale
    /// (Ansible refuses others) and the play's variables.
    fn playbook(&self, wrapper: Option<&Path>, playbook: &str) -> Command {
        let ansible = ansible();
        let mut cmd = match wrapper {
            Some(w) => {
                let mut cmd = Command::new(w);
                cmd.arg(ansible.playbook());
                cmd
            }
            None => Command::new(ansible.playbook()),
        };
        // -vvv shows the ssh command lines, and whether `-O check` said a master runs.
        cmd.args(["-vvv", "-e"])
            .arg(format!("@{}", self.path("vars.yml").display()))
            .arg(self.path(playbook))
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", path_with(&ansible.bin))
            .env("HOME", self.path("home"))
            .env("LC_ALL", "C.UTF-8")
            .env("ANSIBLE_CONFIG", self.path("ansible.cfg"))
            .env(
                "ANSIBLE_PIPELINING",
                if self.pipelining { "True" } else { "False" },
            )
            // Files go by `sftp -b -` in one run and by scp in the other.
            .env(
                "ANSIBLE_SSH_TRANSFER_METHOD",
                if self.pipelining { "scp" } else { "sftp" },
            );
        cmd
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        for d in [&self.rdir, &self.root_dir] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The last `n` lines, for failure messages (-vvv output is long).
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs the play through `mitossh-env` against a fresh sshd and checks what it did.
fn play_through_mitossh(pipelining: bool) {
    let sshd = Sshd::start();
    let project = Project::new(&sshd, pipelining);
    let started = Instant::now();
    let out = output_within(
        project
            .playbook(Some(&bin("mitossh-env")), "play.yml")
            .env("MITOSSH_STRICT", "1")
            .env(
                "MITOSSH_BECOME_PASSWORD_FILE",
                project.path("become-password"),
            ),
        b"",
        T,
    );
    let took = started.elapsed();
    let (stdout, stderr) = text(&out);
    let context = || {
        format!(
            "pipelining {pipelining}, status {:?}\nstdout (end):\n{}\nstderr:\n{stderr}\nsshd log (end):\n{}",
            out.status,
            tail(&stdout, 150),
            tail(&sshd.log(), 40)
        )
    };
    assert!(out.status.success(), "the play failed: {}", context());
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("target") && l.contains("unreachable=0    failed=0")),
        "no clean recap: {}",
        context()
    );
    eprintln!("pipelining {pipelining}: the play took {took:?} through mitossh");

    // What Ansible passed was taken: sftp batch transfers (or scp), -tt without pipelining,
    // and for reset_connection `-O check` answered "running" (else no stop is sent) and
    // `-O stop`.
    let transfer = if pipelining {
        "SSH: EXEC scp -C "
    } else {
        "SSH: EXEC sftp -b - -C "
    };
    assert!(stdout.contains(transfer), "{}", context());
    assert_eq!(
        stdout.contains(" -tt 127.0.0.1 "),
        !pipelining,
        "{}",
        context()
    );
    assert!(stdout.contains("sending connection stop"), "{}", context());
    assert!(
        !stdout.contains("Failed to reset connection"),
        "{}",
        context()
    );
    for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(!text.contains(TEST_PASSWORD), "the password is in {what}");
    }

    // One SSH connection and one session on it (the agent) carried every call.
    assert_eq!(sshd.accepted_connections(), 1, "{}", context());
    assert_eq!(
        sshd.log().matches("Starting session:").count(),
        1,
        "{}",
        context()
    );

    // The results, on disk: the host is this machine.
    let user = sshd.user();
    let meta = std::fs::metadata(&project.rdir).unwrap();
    assert!(meta.is_dir());
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (user.uid, 0o750));
    let copied = project.rdir.join("copied.txt");
    assert_eq!(
        std::fs::read_to_string(&copied).unwrap(),
        format!("copied {}\n", project.marker)
    );
    assert_eq!(std::fs::metadata(&copied).unwrap().mode() & 0o7777, 0o640);
    let greeting = format!("Hello from target, {}\n", project.marker);
    assert_eq!(
        std::fs::read_to_string(project.rdir.join("templated.txt")).unwrap(),
        greeting
    );
    assert_eq!(
        std::fs::read_to_string(project.path("fetched.txt")).unwrap(),
        greeting
    );
    let src = tree_digest(&project.path("src"));
    assert_eq!(tree_digest(&project.rdir.join("pushed")), src, "pushed");
    assert_eq!(tree_digest(&project.path("pulled")), src, "pulled");
    let mut as_root = owners_and_digests(&project.root_dir);
    if !pipelining {
        let by_sudo = project.root_dir.join("by-ansible-sudo.txt");
        let meta = std::fs::metadata(&by_sudo).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600));
        assert_eq!(
            std::fs::read_to_string(&by_sudo).unwrap(),
            format!("{}\n", project.marker)
        );
        as_root.retain(|(rel, _, _)| rel != Path::new("by-ansible-sudo.txt"));
    }
    let expected: Vec<(PathBuf, u32, String)> =
        src.into_iter().map(|(rel, d)| (rel, 0, d)).collect();
    assert_eq!(
        as_root, expected,
        "synchronize with become: root-owned copies"
    );
    assert_eq!(std::fs::metadata(&project.root_dir).unwrap().uid(), 0);
}

#[test]
fn a_playbook_runs_through_one_connection_without_pipelining() {
    escalation();
    ansible();
    play_through_mitossh(false);
}

#[test]
fn a_playbook_runs_through_one_connection_with_pipelining() {
    escalation();
    ansible();
    play_through_mitossh(true);
}

/// For contrast, the same synchronize with become through plain ssh: sudo's requiretty
/// refuses it, which is why mitossh's sudo context matters.
#[test]
fn without_mitossh_synchronize_with_become_fails_for_want_of_a_tty() {
    escalation();
    ansible();
    let sshd = Sshd::start();
    let project = Project::new(&sshd, false);
    let out = output_within(
        project
            .playbook(None, "contrast.yml")
            // No ControlPersist master left behind, should Ansible itself connect.
            .env("ANSIBLE_SSH_ARGS", "-C -o ControlMaster=no"),
        b"",
        T,
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("sorry, you must have a tty to run sudo"),
        "{}\n{stderr}",
        tail(&stdout, 60)
    );
    assert!(!project.root_dir.exists());
}
