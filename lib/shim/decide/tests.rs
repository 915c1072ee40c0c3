use super::*;
use crate::sshargs;

fn inv(words: &[&str]) -> Invocation {
    let argv: Vec<OsString> = words.iter().map(OsString::from).collect();
    sshargs::parse(&argv).expect("valid ssh arguments")
}

/// A master at hand, the destination not yet resolved.
fn before_master() -> Environment {
    Environment {
        socket: Some(PathBuf::from("/run/mitossh.sock")),
        ..Environment::default()
    }
}

/// The master asked: no configuration known, the command as the command line gives it.
fn resolved(inv: &Invocation) -> Environment {
    with_config(inv, None)
}

fn with_config(inv: &Invocation, config: Option<HopConfig>) -> Environment {
    Environment {
        destination: Some(Destination {
            config,
            command: inv.remote_command(),
        }),
        ..before_master()
    }
}

fn session_of(words: &[&str], env: impl Fn(&Invocation) -> Environment) -> Session {
    let inv = inv(words);
    match decide(&inv, &env(&inv)) {
        Action::Session(s) => s,
        other => panic!("{words:?}: expected a session, got {other:?}"),
    }
}

fn fallback_reason(words: &[&str]) -> Option<String> {
    match decide(&inv(words), &before_master()) {
        Action::RealSsh { why } => why,
        other => panic!("{words:?}: expected the real ssh, got {other:?}"),
    }
}

fn terminal(inv: &Invocation) -> Environment {
    Environment {
        stdin_is_terminal: true,
        term: Some("xterm".into()),
        ..resolved(inv)
    }
}

#[test]
fn questions_about_ssh_itself_go_to_ssh_without_a_reason() {
    for words in [&["-V"][..], &["-G", "host"], &["-Q", "cipher"]] {
        let no_master = Environment::default();
        assert_eq!(
            decide(&inv(words), &no_master),
            Action::RealSsh { why: None },
            "{words:?}"
        );
    }
}

#[test]
fn without_a_master_the_real_ssh_runs_and_says_why() {
    let action = decide(&inv(&["host", "true"]), &Environment::default());
    assert_eq!(
        action,
        Action::RealSsh {
            why: Some("no mitossh master (MITOSSH_SOCKET is not set)".into())
        }
    );
}

#[test]
fn what_the_master_cannot_do_goes_to_the_real_ssh() {
    let cases: &[(&[&str], &str)] = &[
        (&["-A", "h"], "-A"),
        (&["-X", "h"], "-X"),
        (&["-Y", "h"], "-Y"),
        (&["-M", "h"], "-M"),
        (&["-f", "h", "true"], "-f"),
        (&["-R", "8080:localhost:80", "h"], "-R"),
        (&["-D", "1080", "h"], "-D"),
        (&["-w", "0:0", "h"], "-w"),
        (&["-L", "/tmp/s:/tmp/t", "h"], "-L /tmp/s:/tmp/t"),
        (
            &["-o", "RemoteForward=80 localhost:80", "h"],
            "remoteforward",
        ),
        (&["-o", "DynamicForward=1080", "h"], "dynamicforward"),
        (&["-o", "Tunnel=yes", "h"], "tunnel"),
        (&["-o", "LocalForward=/tmp/s /tmp/t", "h"], "localforward"),
        (&["-o", "ForwardAgent=yes", "h"], "forwardagent"),
        (&["-o", "ForwardX11=yes", "h"], "forwardx11"),
        (
            &["-o", "ForkAfterAuthentication=yes", "h"],
            "forkafterauthentication",
        ),
    ];
    for (words, what) in cases {
        assert_eq!(
            fallback_reason(words),
            Some(format!("{what} is not supported through a mitossh master")),
            "{words:?}"
        );
    }
}

#[test]
fn options_switched_off_stay_with_the_master() {
    for words in [
        &["-o", "ForwardAgent=no", "h"][..],
        &["-o", "ForwardX11=no", "h"],
        &["-o", "ForkAfterAuthentication=no", "h"],
        &["-L", "8080:localhost:80", "h"],
        &["-W", "localhost:22", "h"],
    ] {
        assert!(
            matches!(
                decide(&inv(words), &before_master()),
                Action::AskMaster { .. }
            ),
            "{words:?}"
        );
    }
}

/// The parser accepts `words`; `edit` makes of it what only a bug in the parser would.
fn edited(words: &[&str], edit: impl FnOnce(&mut Invocation)) -> Invocation {
    let mut inv = inv(words);
    edit(&mut inv);
    inv
}

/// The value of the invocation's one option that takes an argument.
fn set_arg(inv: &mut Invocation, to: &str) {
    for opt in &mut inv.options {
        if let Opt::Arg(_, value) = opt {
            *value = to.into();
        }
    }
}

#[test]
fn no_destination_is_the_usage() {
    // The parser says so first; the decision does not rely on it.
    let no_host = edited(&["-v", "h"], |inv| inv.destination = None);
    assert_eq!(decide(&no_host, &before_master()), Action::Usage);
    // The real ssh's reasons come first.
    let no_host = edited(&["-A", "h"], |inv| inv.destination = None);
    assert!(matches!(
        decide(&no_host, &before_master()),
        Action::RealSsh { .. }
    ));
}

#[test]
fn a_stdio_forward_the_master_cannot_parse_goes_to_the_real_ssh() {
    let odd = edited(&["-W", "localhost:22", "h"], |inv| set_arg(inv, "nowhere"));
    assert_eq!(
        decide(&odd, &before_master()),
        Action::RealSsh {
            why: Some("-W nowhere is not supported through a mitossh master".into())
        }
    );
}

#[test]
fn the_master_is_asked_before_anything_that_depends_on_the_destination() {
    let action = decide(&inv(&["-O", "check", "h"]), &before_master());
    assert_eq!(
        action,
        Action::AskMaster {
            socket: PathBuf::from("/run/mitossh.sock")
        }
    );
}

#[test]
fn control_commands() {
    let cases = [
        ("check", Control::Check),
        ("exit", Control::Exit),
        ("stop", Control::Stop),
        ("forward", Control::Unsupported("forward".into())),
        ("cancel", Control::Unsupported("cancel".into())),
        ("proxy", Control::Unsupported("proxy".into())),
    ];
    for (word, expected) in cases {
        let inv = inv(&["-O", word, "h"]);
        assert_eq!(
            decide(&inv, &resolved(&inv)),
            Action::Control(expected),
            "-O {word}"
        );
    }
    // The parser rejects other words first; the decision does not rely on it.
    let bogus = edited(&["-O", "check", "h"], |inv| set_arg(inv, "bogus"));
    assert_eq!(
        decide(&bogus, &resolved(&bogus)),
        Action::Control(Control::Invalid)
    );
}

#[test]
fn no_session_means_forwards_only() {
    let inv = inv(&[
        "-N",
        "-L",
        "8080:localhost:80",
        "-o",
        "ExitOnForwardFailure=yes",
        "h",
    ]);
    let Action::Forwards(forwards) = decide(&inv, &resolved(&inv)) else {
        panic!("expected forwards only");
    };
    assert_eq!(forwards.local.len(), 1);
    assert_eq!(forwards.local[0].port, 8080);
    assert!(forwards.exit_on_failure);
    assert!(forwards.ending.no_shell);
}

#[test]
fn the_configuration_can_say_no_session() {
    let inv = inv(&["h"]);
    let config = HopConfig {
        session_type: "none".into(),
        ..HopConfig::default()
    };
    assert!(matches!(
        decide(&inv, &with_config(&inv, Some(config.clone()))),
        Action::Forwards(_)
    ));
    // The command line's session type wins over the configuration's.
    let inv = inv_s();
    assert!(matches!(
        decide(&inv, &with_config(&inv, Some(config))),
        Action::Session(_)
    ));
}

fn inv_s() -> Invocation {
    inv(&["-s", "h", "sftp"])
}

#[test]
fn forwards_start_before_a_session_too() {
    let s = session_of(
        &[
            "-L",
            "8080:localhost:80",
            "-o",
            "LocalForward=9090 db:5432",
            "h",
            "true",
        ],
        resolved,
    );
    let ports: Vec<u16> = s.forwards.local.iter().map(|f| f.port).collect();
    assert_eq!(ports, [8080, 9090]);
    assert!(!s.forwards.exit_on_failure);
    assert!(!s.forwards.ending.no_shell);
}

#[test]
fn a_command_runs_without_a_pty() {
    let s = session_of(&["h", "echo", "hi"], terminal);
    assert_eq!(s.command.as_deref(), Some(&b"echo hi"[..]));
    assert_eq!(s.subsystem, None);
    assert_eq!(s.pty, None);
    assert_eq!(s.escape, None, "escapes only with a pty");
    assert!(!s.warn_no_pty);
}

#[test]
fn an_interactive_login_on_a_terminal_gets_a_pty_and_escapes() {
    let s = session_of(&["h"], terminal);
    assert_eq!(s.command, None);
    assert_eq!(s.pty.as_deref(), Some("xterm"));
    assert_eq!(s.escape, Some(b'~'));
    // Without a terminal, no pty.
    assert_eq!(session_of(&["h"], resolved).pty, None);
}

#[test]
fn pty_requests_as_ssh_decides() {
    let forced = session_of(&["-tt", "h", "top"], resolved);
    assert_eq!(forced.pty.as_deref(), Some("dumb"), "TERM unset: dumb");
    assert!(!forced.warn_no_pty);

    let asked = session_of(&["-t", "h", "top"], resolved);
    assert_eq!(asked.pty, None);
    assert!(asked.warn_no_pty, "-t without a terminal says so");
    assert!(!session_of(&["-q", "-t", "h", "top"], resolved).warn_no_pty);
    assert!(session_of(&["-t", "h", "top"], terminal).pty.is_some());

    assert_eq!(session_of(&["-T", "h"], terminal).pty, None);
}

#[test]
fn request_tty_from_the_configuration_unless_the_command_line_says() {
    let config = HopConfig {
        request_tty: "force".into(),
        ..HopConfig::default()
    };
    let forced = |inv: &Invocation| with_config(inv, Some(config.clone()));
    assert!(session_of(&["h", "true"], forced).pty.is_some());
    assert_eq!(session_of(&["-T", "h", "true"], forced).pty, None);
}

#[test]
fn escape_characters() {
    let e = |value: &str| session_of(&["-e", value, "h"], terminal).escape;
    assert_eq!(e("none"), None);
    assert_eq!(e("^A"), Some(1));
    assert_eq!(e("%"), Some(b'%'));
    let config = HopConfig {
        escape_char: None,
        ..HopConfig::default()
    };
    let env = |inv: &Invocation| Environment {
        stdin_is_terminal: true,
        ..with_config(inv, Some(config.clone()))
    };
    assert_eq!(session_of(&["h"], env).escape, None, "EscapeChar none");
}

#[test]
fn a_subsystem_is_named_by_the_command() {
    let s = session_of(&["-s", "h", "sftp"], terminal);
    assert_eq!(s.subsystem.as_deref(), Some("sftp"));
    assert_eq!(s.command, None);
    assert_eq!(s.pty, None);
}

#[test]
fn stdio_forwarding_has_no_pty() {
    let s = session_of(&["-tt", "-W", "localhost:22", "h"], terminal);
    assert_eq!(
        s.connect,
        Some(Endpoint {
            host: "localhost".into(),
            port: 22
        })
    );
    assert_eq!(s.pty, None);
    assert!(s.forwards.ending.no_shell, "SIGTERM ends -W with status 0");
}

#[test]
fn the_resolved_command_wins_over_remote_command() {
    let s = session_of(&["-o", "RemoteCommand=uptime", "h"], resolved);
    assert_eq!(s.command.as_deref(), Some(&b"uptime"[..]));
    let config = HopConfig {
        remote_command: Some(b"hostname".to_vec()),
        ..HopConfig::default()
    };
    let s = session_of(&["h"], |inv| with_config(inv, Some(config.clone())));
    assert_eq!(s.command.as_deref(), Some(&b"hostname"[..]));
    let s = session_of(&["h", "date"], |inv| with_config(inv, Some(config.clone())));
    assert_eq!(s.command.as_deref(), Some(&b"date"[..]));
}

#[test]
fn stdin_is_null_with_n_stdinnull_or_in_the_background() {
    assert!(session_of(&["-n", "h", "true"], resolved).stdin_null);
    assert!(session_of(&["-o", "StdinNull=yes", "h", "true"], resolved).stdin_null);
    let background = |inv: &Invocation| Environment {
        in_background: true,
        ..resolved(inv)
    };
    assert!(session_of(&["h", "true"], background).stdin_null);
    assert!(!session_of(&["h", "true"], resolved).stdin_null);
}

#[test]
fn quiet_and_verbose() {
    assert!(session_of(&["-q", "h", "true"], resolved).quiet);
    let config = HopConfig {
        log_level: "ERROR".into(),
        ..HopConfig::default()
    };
    assert!(session_of(&["h", "true"], |inv| with_config(inv, Some(config.clone()))).quiet);
    assert!(
        session_of(&["-v", "h", "true"], resolved)
            .forwards
            .ending
            .verbose
    );
    assert!(
        session_of(&["-o", "LogLevel=DEBUG2", "h", "true"], resolved)
            .forwards
            .ending
            .verbose
    );
    assert!(
        !session_of(&["-v", "-q", "h", "true"], resolved)
            .forwards
            .ending
            .verbose
    );
}

#[test]
fn environment_sent_as_ssh_sends_it() {
    let env = |inv: &Invocation| Environment {
        vars: vec![
            ("LC_ALL".into(), "C".into()),
            ("LANG".into(), "en".into()),
            ("HOME".into(), "/root".into()),
        ],
        ..with_config(
            inv,
            Some(HopConfig {
                send_env: vec![b"LANG".to_vec()],
                set_env: vec![
                    (b"A".to_vec(), b"config".to_vec()),
                    (b"B".to_vec(), b"2".to_vec()),
                ],
                ..HopConfig::default()
            }),
        )
    };
    let s = session_of(
        &["-o", "SendEnv=LC_*", "-o", "SetEnv=A=argv", "h", "true"],
        env,
    );
    let sent: Vec<(&[u8], &[u8])> = s
        .env
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    assert_eq!(
        sent,
        [
            (&b"LC_ALL"[..], &b"C"[..]),
            (b"LANG", b"en"),
            (b"A", b"argv"),
            (b"B", b"2")
        ]
    );
    // `-pattern` removes what the command line added before it.
    let s = session_of(&["-o", "SendEnv=LC_* -LC_*", "h", "true"], |inv| {
        Environment {
            vars: vec![("LC_ALL".into(), "C".into())],
            ..resolved(inv)
        }
    });
    assert!(s.env.is_empty());
}

#[test]
fn glob_matches_like_ssh() {
    assert!(glob(b"LC_*", b"LC_ALL"));
    assert!(glob(b"LANG", b"LANG"));
    assert!(!glob(b"LANG", b"LANGUAGE"));
    assert!(glob(b"L?NG", b"LANG"));
    assert!(glob(b"*", b""));
    assert!(!glob(b"A*B", b"AC"));
}
