//! Interactive sessions in a real terminal (tmux): `ssh host` opens a login shell with the
//! terminal's size, follows resizes, delivers ^C to the remote program, and leaves the
//! local terminal as it found it; `ssh -t host prog` runs prog on a pty.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(60);

/// A local shell with the shims first on PATH and the master's socket, for tmux to run.
fn local_shell(master: &Master) -> String {
    format!(
        "env -i PATH={}:/usr/bin:/bin MITOSSH_SOCKET={} MITOSSH_STRICT=1 TERM=xterm-256color HOME=/root PS1='local$ ' bash --norc --noprofile",
        master.shims.display(),
        master.socket.display()
    )
}

#[test]
fn an_interactive_login_follows_the_terminal() {
    let sshd = Sshd::start();
    let master = Master::start();
    let work = tempfile::tempdir().unwrap();
    let before = work.path().join("stty-before");
    let tmux = Tmux::start(100, 30, &local_shell(&master));
    tmux.wait_for("local$ ", T);
    tmux.type_line(&format!("stty -g > {}", before.display()));
    tmux.type_line(&format!(
        "ssh -F {} {}; echo back-$((2+3))",
        sshd.ssh_config().display(),
        sshd.alias()
    ));
    // The remote login shell, on a pty of the terminal's size.
    tmux.wait_for(&format!("{}@", sshd.user().name), T);
    tmux.type_line("echo shell=$0 tty=$(tty | cut -c1-9); stty size");
    tmux.wait_for("shell=-bash tty=/dev/pts/", T);
    tmux.wait_for("30 100", T);

    tmux.resize(120, 40);
    tmux.type_line("stty size");
    tmux.wait_for("40 120", T);

    // ^C reaches the remote foreground program, not the local shim. As a person would,
    // press it once the program runs (the terminal is then in its hands), and type on
    // once it is gone.
    let uid = sshd.user().uid;
    let sleeping =
        || !processes_matching(|p| p.uid == uid && p.cmdline == ["sleep", "9876.5"]).is_empty();
    tmux.type_line("sleep 9876.5; echo not-$((1+1))-reached");
    wait_until(T, "the remote sleep to run", sleeping);
    tmux.keys(&["C-c"]);
    wait_until(T, "the remote sleep to die of ^C", || !sleeping());
    tmux.type_line("echo alive-$((40+2))");
    tmux.wait_for("alive-42", T);
    assert!(
        !tmux.screen().contains("not-2-reached"),
        "{}",
        tmux.screen()
    );

    tmux.type_line("exit");
    tmux.wait_for("back-5", T);
    tmux.type_line(&format!(
        "stty -g | cmp -s - {} && echo restored-$((1+1))",
        before.display()
    ));
    tmux.wait_for("restored-2", T);
    assert_eq!(sshd.accepted_connections(), 1);
}

#[test]
fn ssh_t_runs_a_program_on_a_pty() {
    let sshd = Sshd::start();
    let master = Master::start();
    let tmux = Tmux::start(90, 25, &local_shell(&master));
    tmux.wait_for("local$ ", T);
    tmux.type_line(&format!(
        "ssh -t -F {} {} 'stty size; test -t 0 && echo on-a-tty-$((6*7))'; echo status=$?",
        sshd.ssh_config().display(),
        sshd.alias()
    ));
    tmux.wait_for("25 90", T);
    tmux.wait_for("on-a-tty-42", T);
    tmux.wait_for("status=0", T);
}

#[test]
fn escape_sequences_work_as_with_ssh() {
    let sshd = Sshd::start();
    let master = Master::start();
    for (name, ssh) in [("real", "/usr/bin/ssh"), ("mitossh", "ssh")] {
        let tmux = Tmux::start(100, 30, &local_shell(&master));
        tmux.wait_for("local$ ", T);
        tmux.type_line(&format!(
            "{ssh} -o LogLevel=INFO -F {} {}; echo {name}-status=$?",
            sshd.ssh_config().display(),
            sshd.alias()
        ));
        tmux.wait_for(&format!("{}@", sshd.user().name), T);
        // `~~` sends one `~`; `~?` lists the sequences; `~.` ends the session.
        // (At a line's start: `~/../../bin/true` is /bin/true; `~~/…` would fail.)
        tmux.keys(&["-l", "~~"]);
        tmux.keys(&["-l", "/../../bin/true && echo tilde-$((1+1))"]);
        tmux.keys(&["Enter"]);
        tmux.wait_for("tilde-2", T);
        tmux.keys(&["-l", "~?"]);
        tmux.wait_for("Supported escape sequences:", T);
        tmux.keys(&["Enter"]);
        tmux.keys(&["-l", "~."]);
        tmux.wait_for("Connection to 127.0.0.1 closed.", T);
        tmux.wait_for(&format!("{name}-status=255"), T);
    }
}
