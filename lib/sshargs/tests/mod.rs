//! The grammar against the command lines real clients send, ssh's own error texts and
//! precedence (checked against `ssh -G` by hand), and a property test that it never panics.

mod real_ssh;

use proptest::prelude::Strategy;

use super::keywords::{KEYWORDS, SESSION_KEYS, canonical};
use super::line::glob;
use super::*;

fn argv(words: &[&str]) -> Vec<OsString> {
    words.iter().map(OsString::from).collect()
}

fn ok(words: &[&str]) -> Invocation {
    match parse(&argv(words)) {
        Ok(inv) => inv,
        Err(e) => panic!("{words:?} was refused: {e}"),
    }
}

fn err(words: &[&str]) -> ArgError {
    match parse(&argv(words)) {
        Ok(inv) => panic!("{words:?} was accepted: {inv:?}"),
        Err(e) => e,
    }
}

fn command(inv: &Invocation) -> Vec<&str> {
    inv.command
        .iter()
        .map(|w| w.to_str().unwrap_or("<non-utf8>"))
        .collect()
}

fn config(key: &str, value: &str, raw: &str) -> Opt {
    Opt::Config {
        key: key.into(),
        value: value.into(),
        raw: raw.into(),
    }
}

fn arg(c: char, v: &str) -> Opt {
    Opt::Arg(c, v.into())
}

fn user(inv: &Invocation) -> Option<String> {
    inv.user().map(|u| u.to_string_lossy().into_owned())
}

// ---- The command lines real clients send ----

#[test]
fn rsync() {
    let inv = ok(&[
        "-l",
        "bob",
        "host",
        "rsync",
        "--server",
        "-vlogDtpre.iLsfxCIvu",
        ".",
        "dst/",
    ]);
    assert_eq!(inv.options, vec![arg('l', "bob")]);
    assert_eq!(inv.host(), Some(OsStr::new("host")));
    assert_eq!(user(&inv).as_deref(), Some("bob"));
    assert_eq!(inv.port(), Ok(None));
    // "rsync" is not an option, so the second option run stops at once.
    assert_eq!(
        command(&inv),
        ["rsync", "--server", "-vlogDtpre.iLsfxCIvu", ".", "dst/"]
    );
    assert_eq!(
        inv.remote_command().as_deref(),
        Some(&b"rsync --server -vlogDtpre.iLsfxCIvu . dst/"[..])
    );
    assert_eq!(inv.tty_request(), TtyRequest::Auto);

    let inv = ok(&[
        "-p", "2222", "-l", "bob", "host", "rsync", "--server", "-e.Lsf", ".", "d",
    ]);
    assert_eq!(inv.port(), Ok(Some(2222)));
    assert_eq!(user(&inv).as_deref(), Some("bob"));
    assert_eq!(command(&inv), ["rsync", "--server", "-e.Lsf", ".", "d"]);
}

#[test]
fn sftp_and_scp() {
    let words = [
        "-x",
        "-oPermitLocalCommand=no",
        "-oClearAllForwardings=yes",
        "-oRemoteCommand=none",
        "-oRequestTTY=no",
        "-oForwardAgent=no",
        "-l",
        "bob",
        "-s",
        "--",
        "host",
        "sftp",
    ];
    let inv = ok(&words);
    assert_eq!(inv.options.len(), 8);
    assert_eq!(
        inv.options[1],
        config("permitlocalcommand", "no", "PermitLocalCommand=no")
    );
    assert_eq!(
        inv.options[3],
        config("remotecommand", "none", "RemoteCommand=none")
    );
    assert_eq!(inv.host(), Some(OsStr::new("host")));
    assert_eq!(command(&inv), ["sftp"]);
    assert_eq!(inv.session_type(), SessionType::Subsystem);
    assert_eq!(inv.tty_request(), TtyRequest::No);
    assert_eq!(user(&inv).as_deref(), Some("bob"));
    assert_eq!(inv.config("remotecommand"), Some(OsStr::new("none")));
    // Everything session-only goes; -l stays.
    assert_eq!(inv.connection_args(), argv(&["-l", "bob"]));

    // scp passes "-oForwardX11 no" as one word with a space.
    let mut words = words.to_vec();
    words[0] = "-oForwardX11 no";
    let inv = ok(&words);
    assert_eq!(inv.options[0], config("forwardx11", "no", "ForwardX11 no"));
    assert_eq!(inv.config("ForwardX11"), Some(OsStr::new("no")));
    assert_eq!(inv.session_type(), SessionType::Subsystem);
}

#[test]
fn git() {
    let inv = ok(&[
        "-o",
        "SendEnv=GIT_PROTOCOL",
        "git@host",
        "git-upload-pack '/repo.git'",
    ]);
    assert_eq!(
        inv.options,
        vec![config("sendenv", "GIT_PROTOCOL", "SendEnv=GIT_PROTOCOL")]
    );
    assert_eq!(user(&inv).as_deref(), Some("git"));
    assert_eq!(inv.host(), Some(OsStr::new("host")));
    assert_eq!(
        inv.remote_command().as_deref(),
        Some(&b"git-upload-pack '/repo.git'"[..])
    );
    assert_eq!(inv.configs("sendenv"), vec![OsStr::new("GIT_PROTOCOL")]);
    assert!(inv.connection_args().is_empty(), "SendEnv is per session");

    let inv = ok(&["-G", "host"]);
    assert_eq!(inv.count('G'), 1);
    assert_eq!(inv.host(), Some(OsStr::new("host")));
    assert_eq!(inv.remote_command(), None);

    let inv = ok(&["-V"]);
    assert_eq!(inv.options, vec![Opt::Flag('V')]);
    assert_eq!(inv.destination, None);
    assert!(inv.command.is_empty());
}

#[test]
fn ansible() {
    let inv = ok(&[
        "-C",
        "-o",
        "ControlMaster=auto",
        "-o",
        "ControlPersist=60s",
        "-o",
        "Port=2222",
        "-o",
        "IdentityFile=\"/k/id\"",
        "-o",
        "KbdInteractiveAuthentication=no",
        "-o",
        "PreferredAuthentications=gssapi-with-mic,gssapi-keyex,hostbased,publickey",
        "-o",
        "PasswordAuthentication=no",
        "-o",
        "User=\"bob\"",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "ControlPath=\"/home/u/.ansible/cp/abc\"",
        "-tt",
        "host",
        "/bin/sh -c 'echo ~bob && sleep 0'",
    ]);
    assert_eq!(inv.port(), Ok(Some(2222)));
    assert_eq!(user(&inv).as_deref(), Some("bob"));
    assert_eq!(inv.config("identityfile"), Some(OsStr::new("/k/id")));
    assert_eq!(
        inv.config("ControlPath"),
        Some(OsStr::new("/home/u/.ansible/cp/abc"))
    );
    assert_eq!(inv.config("controlpersist"), Some(OsStr::new("60s")));
    assert_eq!(inv.count('t'), 2);
    assert_eq!(inv.tty_request(), TtyRequest::Force);
    assert_eq!(
        inv.remote_command().as_deref(),
        Some(&b"/bin/sh -c 'echo ~bob && sleep 0'"[..])
    );
    // The raw word, quotes and all, is what goes on.
    assert_eq!(
        inv.connection_args(),
        argv(&[
            "-C",
            "-o",
            "Port=2222",
            "-o",
            "IdentityFile=\"/k/id\"",
            "-o",
            "KbdInteractiveAuthentication=no",
            "-o",
            "PreferredAuthentications=gssapi-with-mic,gssapi-keyex,hostbased,publickey",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "User=\"bob\"",
            "-o",
            "ConnectTimeout=10",
        ])
    );
}

#[test]
fn ansible_synchronize() {
    let inv = ok(&[
        "-S",
        "none",
        "-i",
        "/k/id",
        "-o",
        "Port=2222",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-l",
        "bob",
        "host",
        "sudo -u root rsync",
        "--server",
        "-logDtpre.iLsfxCIvu",
        ".",
        "/dst/",
    ]);
    assert_eq!(inv.arg('S'), Some(OsStr::new("none")));
    assert_eq!(inv.args('i'), vec![OsStr::new("/k/id")]);
    assert_eq!(inv.port(), Ok(Some(2222)));
    assert_eq!(user(&inv).as_deref(), Some("bob"));
    assert_eq!(
        inv.remote_command().as_deref(),
        Some(&b"sudo -u root rsync --server -logDtpre.iLsfxCIvu . /dst/"[..])
    );
    assert_eq!(
        inv.connection_args(),
        argv(&[
            "-i",
            "/k/id",
            "-o",
            "Port=2222",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-l",
            "bob",
        ])
    );
}

// ---- getopt ----

#[test]
fn options_after_the_destination() {
    let inv = ok(&["host", "-p", "2222", "-l", "bob", "uptime", "-p", "3"]);
    assert_eq!(inv.options_before_destination, 0);
    assert_eq!(inv.options, vec![arg('p', "2222"), arg('l', "bob")]);
    assert_eq!(command(&inv), ["uptime", "-p", "3"]);
    assert_eq!(inv.port(), Ok(Some(2222)));

    // Options only, no command.
    let inv = ok(&["host", "-t"]);
    assert_eq!(inv.count('t'), 1);
    assert!(inv.command.is_empty());
}

#[test]
fn double_dash() {
    // Before the destination, "--" also stops the second run: "-p 22" is the command.
    let inv = ok(&["--", "host", "-p", "22"]);
    assert!(inv.options.is_empty());
    assert_eq!(command(&inv), ["-p", "22"]);
    // After it, it ends the second run.
    let inv = ok(&["host", "--", "-p", "22"]);
    assert!(inv.options.is_empty());
    assert_eq!(command(&inv), ["-p", "22"]);
    let inv = ok(&["host", "-p", "2222", "--", "ls", "--", "-l"]);
    assert_eq!(inv.port(), Ok(Some(2222)));
    assert_eq!(command(&inv), ["ls", "--", "-l"]);
    // ssh's test looks at the word before the destination, even when it was an
    // argument: `-F --` ends the options too (checked with ssh -G).
    let inv = ok(&["-F", "--", "host", "-p", "7"]);
    assert_eq!(inv.arg('F'), Some(OsStr::new("--")));
    assert_eq!(command(&inv), ["-p", "7"]);
    assert_eq!(inv.port(), Ok(None));
    // "--" alone or twice: no destination, or a destination "--".
    assert_eq!(err(&["--"]).to_string(), "no destination given");
    assert_eq!(
        err(&["--", "--"]).to_string(),
        "hostname contains invalid characters"
    );
}

#[test]
fn clusters() {
    let inv = ok(&["-4Cp2222", "host"]);
    assert_eq!(
        inv.options,
        vec![Opt::Flag('4'), Opt::Flag('C'), arg('p', "2222")]
    );
    let inv = ok(&["-qT", "-tt", "-vvv", "host"]);
    assert_eq!(inv.count('q'), 1);
    assert_eq!(inv.count('t'), 2);
    assert_eq!(inv.count('v'), 3);
    // An argument option takes the rest of the cluster, or the next word as it is.
    let inv = ok(&["-tp22", "-F", "-x", "-o", "User=u", "host"]);
    assert_eq!(
        inv.options,
        vec![
            Opt::Flag('t'),
            arg('p', "22"),
            arg('F', "-x"),
            config("user", "u", "User=u")
        ]
    );
    // A user taken that way is then refused (Debian's valid_ruser: no leading '-').
    assert_eq!(
        err(&["-l", "-x", "host"]).to_string(),
        "remote username contains invalid characters"
    );
    let inv = ok(&["-oPort=2", "host"]);
    assert_eq!(inv.options, vec![config("port", "2", "Port=2")]);
}

#[test]
fn dash_alone_and_dash_in_a_cluster() {
    // "-" ends the options; as a host it then fails Debian's hostname check.
    assert_eq!(
        err(&["-"]).to_string(),
        "hostname contains invalid characters"
    );
    // getopt stops at a '-' ending a cluster, after taking the flags before it, and the
    // whole word becomes the destination (ssh -G: "hostname contains invalid characters").
    assert_eq!(
        err(&["-t-", "host"]).to_string(),
        "hostname contains invalid characters"
    );
    assert_eq!(err(&["--x", "host"]).to_string(), "unknown option -- -");
    assert_eq!(err(&["-t-x", "host"]).to_string(), "unknown option -- -");
}

#[test]
fn protocol_flags_and_p() {
    let e = err(&["-1", "host"]);
    assert_eq!(e.to_string(), "SSH protocol v.1 is no longer supported");
    assert!(!e.shows_usage());
    assert_eq!(ok(&["-2", "host"]).options, vec![Opt::Flag('2')]);
    // 9.2's -P is a flag: "host" stays the destination.
    let inv = ok(&["-P", "host", "cmd"]);
    assert_eq!(inv.options, vec![Opt::Flag('P')]);
    assert_eq!(inv.host(), Some(OsStr::new("host")));
    assert!(inv.connection_args().is_empty());
}

#[test]
fn usage_errors() {
    let e = err(&["-z", "host"]);
    assert_eq!(e.to_string(), "unknown option -- z");
    assert!(e.shows_usage());
    assert_eq!(err(&["host", "-z"]).to_string(), "unknown option -- z");
    let e = err(&["-p"]);
    assert_eq!(e.to_string(), "option requires an argument -- p");
    assert!(e.shows_usage());
    assert_eq!(
        err(&["host", "-l"]).to_string(),
        "option requires an argument -- l"
    );
    assert_eq!(
        err(&["-o:"]).to_string(),
        "command-line line 0: no argument after keyword \":\""
    );
    assert_eq!(err(&["-:", "h"]).to_string(), "unknown option -- :");
    // No destination, or an empty user name: ssh prints its usage and nothing else.
    for words in [&[][..], &["-t"], &["-p", "22"], &["@host"], &["ssh://@h"]] {
        let e = err(words);
        assert!(e.shows_usage() && !e.shows_message(), "{words:?}");
    }
    let e = err(&["-p", "99999", "h"]);
    assert!(!e.shows_usage() && e.shows_message());
    let e = err(&["-s", "host"]);
    assert_eq!(e.to_string(), "You must specify a subsystem to invoke.");
    assert!(e.shows_usage());
    assert!(USAGE.starts_with("usage: ssh [-46AaCfGgKkMNnqsTtVvXxYy] [-B bind_interface]\n"));
    assert!(USAGE.ends_with("destination [command [argument ...]]"));
}

#[test]
fn version_and_query_end_the_parse() {
    // ssh prints and exits at -V/-Q: nothing after them is read.
    let inv = ok(&["-V", "-z", "@"]);
    assert_eq!(inv.options, vec![Opt::Flag('V')]);
    assert_eq!(err(&["-z", "-V"]).to_string(), "unknown option -- z");
    let inv = ok(&["-Q", "cipher"]);
    assert_eq!(inv.arg('Q'), Some(OsStr::new("cipher")));
    assert_eq!(inv.destination, None);
    assert!(ok(&["-QCiphers"]).arg('Q').is_some());
    assert!(ok(&["-Q", "kex-gss"]).arg('Q').is_some());
    assert_eq!(
        err(&["-Q", "Cipher"]).to_string(),
        "Unsupported query \"Cipher\""
    );
    let inv = ok(&["host", "-V", "cmd"]);
    assert_eq!(inv.host(), Some(OsStr::new("host")));
    assert!(inv.command.is_empty());
}

#[test]
fn option_checks() {
    assert_eq!(
        err(&["-O", "bogus", "h"]).to_string(),
        "Invalid multiplex command."
    );
    assert_eq!(
        err(&["-O", "check", "-O", "exit", "h"]).to_string(),
        "Multiplexing command already specified"
    );
    assert_eq!(
        err(&["-W", "a:1", "-O", "exit", "h"]).to_string(),
        "Cannot specify multiplexing command with -W"
    );
    assert_eq!(
        err(&["-O", "exit", "-W", "a:1", "h"]).to_string(),
        "Cannot specify stdio forward with -O"
    );
    assert_eq!(
        err(&["-W", "a:1", "-W", "b:1", "h"]).to_string(),
        "stdio forward already specified"
    );
    assert_eq!(
        err(&["-J", "a", "h", "-J", "b"]).to_string(),
        "Only a single -J option is permitted (use commas to separate multiple jump hops)"
    );
    assert_eq!(
        err(&["-oProxyJump=a", "-J", "b", "h"]).to_string(),
        err(&["-J", "a", "-J", "b", "h"]).to_string()
    );
    assert_eq!(
        err(&["-oProxyCommand=nc %h %p", "-J", "b", "h"]).to_string(),
        "Cannot specify -J with ProxyCommand"
    );
    assert_eq!(err(&["-J", "a/b", "h"]).to_string(), "Invalid -J argument");
    assert_eq!(err(&["-J", "@a", "h"]).to_string(), "Invalid -J argument");
    assert_eq!(err(&["-J", "a:0", "h"]).to_string(), "Invalid -J argument");
    ok(&["-J", "u@a:22,ssh://v@b:23,[::1]:24", "h"]);
    ok(&["-J", "none", "h"]);
    assert_eq!(
        err(&["-N", "-s", "h", "x"]).to_string(),
        "Cannot specify -s with -N/SessionType"
    );
    assert_eq!(
        err(&["-s", "-N", "h", "x"]).to_string(),
        "Cannot specify -N with -s/SessionType"
    );
    assert_eq!(
        err(&["-oSessionType=default", "-N", "h"]).to_string(),
        "Cannot specify -N with -s/SessionType"
    );
    // -W overrides instead.
    assert_eq!(
        ok(&["-s", "-W", "a:1", "h"]).session_type(),
        SessionType::None
    );
    assert_eq!(
        err(&["-e", "ab", "h"]).to_string(),
        "Bad escape character 'ab'."
    );
    ok(&["-e", "^a", "-e", "none", "-e", "~", "-e", "^", "h"]);
    assert_eq!(err(&["-w", "x", "h"]).to_string(), "Bad tun device 'x'");
    ok(&["-w", "any:1", "-w", "0", "h"]);
    assert_eq!(
        err(&["-y", "-E", "/l", "h"]).to_string(),
        "Can't specify both -y and -E"
    );
}

// ---- Destination ----

#[test]
fn destinations() {
    let d = |w: &str| ok(&[w]).destination.expect("a destination");
    assert_eq!(
        d("a@b@host").user,
        Some("a@b".into()),
        "the last '@' splits"
    );
    assert_eq!(d("a@b@host").host, "host");
    assert_eq!(d("bob@").host, "", "ssh accepts an empty host here");
    assert!(err(&["@host"]).shows_usage());
    // Not a URI unless the scheme is exactly "ssh://".
    assert_eq!(d("SSH://bob@host").user, Some("SSH://bob".into()));

    let u = d("ssh://bob@host:2222");
    assert_eq!(
        u,
        Destination {
            user: Some("bob".into()),
            host: "host".into(),
            port: Some(2222)
        }
    );
    assert_eq!(d("ssh://bob@host:2222/").port, Some(2222));
    assert_eq!(d("ssh://host/").port, None);
    assert_eq!(d("ssh://host:").port, None);
    assert_eq!(d("ssh://host.").host, "host");
    assert_eq!(d("ssh://b%41b+x@host").user, Some("bAb x".into()));
    assert_eq!(d("ssh://bob;fingerprint=x@host").user, Some("bob".into()));
    for bad in [
        "ssh://bob@host/path",
        "ssh://@host",
        "ssh://a@b@host",
        "ssh://[::1]",
        "ssh://[::1]:22",
        "ssh://host:0",
        "ssh://host:99999",
        "ssh://ho$t",
        "ssh://b%4@host",
        "ssh://",
    ] {
        assert!(err(&[bad]).shows_usage(), "{bad}");
    }
    // Debian's checks on host and user.
    assert_eq!(
        err(&["ho st"]).to_string(),
        "hostname contains invalid characters"
    );
    assert_eq!(
        err(&["bob;x@host"]).to_string(),
        "remote username contains invalid characters"
    );
    // ...on the user ssh uses: -l came first, so "x;y" is never looked at.
    assert_eq!(
        user(&ok(&["-l", "bob", "x;y@host"])).as_deref(),
        Some("bob")
    );
}

// ---- Precedence (each case checked with /usr/bin/ssh -G) ----

#[test]
fn user_and_port_precedence() {
    let both = |w: &[&str]| {
        let inv = ok(w);
        (user(&inv), inv.port().ok().flatten())
    };
    let s = |u: &str| Some(u.to_owned());
    assert_eq!(
        both(&[
            "-p",
            "2222",
            "-l",
            "bob",
            "-o",
            "User=alice",
            "-o",
            "Port=1",
            "host"
        ]),
        (s("bob"), Some(2222))
    );
    assert_eq!(
        both(&[
            "-o",
            "User=alice",
            "-o",
            "Port=1",
            "-p",
            "2222",
            "-l",
            "bob",
            "host"
        ]),
        (s("alice"), Some(1))
    );
    assert_eq!(both(&["-l", "bob", "alice@host"]), (s("bob"), None));
    assert_eq!(both(&["alice@host", "-l", "bob"]), (s("alice"), None));
    assert_eq!(
        both(&["host", "-l", "bob", "-l", "carol"]),
        (s("bob"), None)
    );
    assert_eq!(
        both(&["-o", "User=x", "ssh://bob@host:2200"]),
        (s("x"), Some(2200))
    );
    assert_eq!(
        both(&["ssh://bob@host:2200", "-p", "1", "-l", "carol"]),
        (s("bob"), Some(2200))
    );
    assert_eq!(
        both(&["-p", "1", "ssh://bob@host:2200"]),
        (s("bob"), Some(1))
    );
    assert_eq!(both(&["host", "-p", "5", "-o", "Port=6"]), (None, Some(5)));
    assert_eq!(
        both(&["-o", "User bob", "host", "-o", "User alice", "-l", "carol"]),
        (s("bob"), None)
    );
    // Only the first -p is checked at all.
    assert_eq!(both(&["-p", "22", "-p", "bogus", "host"]), (None, Some(22)));
    assert_eq!(both(&["-p", " +22", "host"]), (None, Some(22)));
    assert_eq!(both(&["-p", "022", "host"]), (None, Some(22)));
    assert_eq!(
        err(&["-p", "bogus", "-p", "22", "host"]).to_string(),
        "Bad port 'bogus'"
    );
    assert_eq!(err(&["-p", "0", "host"]).to_string(), "Bad port '0'");
    assert_eq!(
        err(&["-p", "65536", "host"]).to_string(),
        "Bad port '65536'"
    );
    assert_eq!(err(&["-p", "22 ", "host"]).to_string(), "Bad port '22 '");
    // -o Port is checked every time.
    assert_eq!(
        err(&["-p", "22", "-o", "Port=bogus", "host"]).to_string(),
        "command-line line 0: Bad port 'bogus'."
    );
    // port() re-checks a hand-made Invocation.
    let mut inv = ok(&["host"]);
    inv.options.push(arg('p', "x"));
    assert_eq!(
        inv.port().map_err(|e| e.to_string()),
        Err("Bad port 'x'".to_owned())
    );
}

#[test]
fn other_precedence() {
    // -S overwrites; ControlPath only fills.
    assert_eq!(
        ok(&["-o", "ControlPath=/b", "-S", "/a", "h"]).arg('S'),
        Some(OsStr::new("/a"))
    );
    assert_eq!(
        ok(&["-S", "/a", "-S", "/c", "h"]).arg('S'),
        Some(OsStr::new("/c"))
    );
    assert_eq!(
        ok(&["-b", "1.1.1.1", "-b", "2.2.2.2", "h"]).arg('b'),
        Some(OsStr::new("2.2.2.2"))
    );
    assert_eq!(
        ok(&["-l", "a", "-l", "b", "h"]).arg('l'),
        Some(OsStr::new("a"))
    );
    let inv = ok(&["-L", "1:a:1", "-L", "2:b:2", "-R", "3:c:3", "h"]);
    assert_eq!(
        inv.args('L'),
        vec![OsStr::new("1:a:1"), OsStr::new("2:b:2")]
    );
    assert_eq!(inv.args('R'), vec![OsStr::new("3:c:3")]);
    let inv = ok(&[
        "-o",
        "StreamLocalBindMask=0111",
        "-o",
        "StreamLocalBindMask=0222",
        "h",
    ]);
    assert_eq!(inv.config("streamlocalbindmask"), Some(OsStr::new("0222")));
    let inv = ok(&[
        "-oSendEnv=A B",
        "-o",
        "SendEnv C",
        "-oIdentityFile=/1",
        "-oIdentityFile2=/2",
        "h",
    ]);
    assert_eq!(
        inv.configs("SENDENV"),
        vec![OsStr::new("A B"), OsStr::new("C")]
    );
    assert_eq!(
        inv.configs("identityfile"),
        vec![OsStr::new("/1"), OsStr::new("/2")]
    );
    assert_eq!(inv.config("identityfile2"), Some(OsStr::new("/1")));
    assert_eq!(inv.args('o').len(), 4);
    // Debian maps SetupTimeOut onto ServerAliveInterval.
    assert_eq!(
        ok(&["-oSetupTimeOut=5", "h"]).config("ServerAliveInterval"),
        Some(OsStr::new("5"))
    );
}

#[test]
fn tty_precedence() {
    let tty = |w: &[&str]| ok(w).tty_request();
    assert_eq!(tty(&["h"]), TtyRequest::Auto);
    assert_eq!(tty(&["-t", "-T", "h"]), TtyRequest::No);
    assert_eq!(tty(&["-T", "-t", "h"]), TtyRequest::Yes);
    assert_eq!(tty(&["-t", "-t", "h"]), TtyRequest::Force);
    assert_eq!(
        tty(&["-ttt", "h"]),
        TtyRequest::Yes,
        "ssh -G -ttt says true"
    );
    assert_eq!(tty(&["-t", "-o", "RequestTTY=no", "h"]), TtyRequest::Yes);
    assert_eq!(tty(&["-o", "RequestTTY=no", "-t", "h"]), TtyRequest::Yes);
    assert_eq!(tty(&["-o", "RequestTTY=no", "-tt", "h"]), TtyRequest::Force);
    assert_eq!(tty(&["-o", "RequestTTY=yes", "-t", "h"]), TtyRequest::Force);
    assert_eq!(tty(&["-T", "-o", "RequestTTY=yes", "h"]), TtyRequest::No);
    assert_eq!(tty(&["-o", "RequestTTY=auto", "-N", "h"]), TtyRequest::No);
    assert_eq!(tty(&["-o", "RequestTTY=FORCE", "h"]), TtyRequest::Force);
    assert_eq!(
        tty(&["-o", "RequestTTY=false", "-o", "RequestTTY=yes", "h"]),
        TtyRequest::No
    );
    assert_eq!(tty(&["-W", "a:1", "h"]), TtyRequest::No);
}

// ---- -o tokenising (each case checked with /usr/bin/ssh -G) ----

#[test]
fn config_words() {
    let value = |word: &str| match ok(&["-o", word, "h"]).options.pop() {
        Some(Opt::Config { key, value, .. }) => (key, value.to_string_lossy().into_owned()),
        other => panic!("{other:?}"),
    };
    let kv = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(value("User=bob"), kv("user", "bob"));
    assert_eq!(value("User bob"), kv("user", "bob"));
    assert_eq!(value("User = bob"), kv("user", "bob"));
    assert_eq!(value("  User   bob  "), kv("user", "bob"));
    assert_eq!(
        value("User==bob"),
        kv("user", "=bob"),
        "only one '=' is skipped"
    );
    assert_eq!(value("=User=bob"), kv("user", "bob"));
    assert_eq!(value("\"User\" bob"), kv("user", "bob"));
    assert_eq!(value("User=\"bob\""), kv("user", "bob"));
    assert_eq!(value("User='bob'"), kv("user", "bob"));
    assert_eq!(value("User b\\ ob"), kv("user", "b ob"));
    assert_eq!(value("IdentityFile 'b\\'o'"), kv("identityfile", "b'o"));
    assert_eq!(
        value("User b\\o"),
        kv("user", "b\\o"),
        "an unknown escape stays"
    );
    assert_eq!(value("User bob # a comment"), kv("user", "bob"));
    assert_eq!(value("User b#ob"), kv("user", "b#ob"));
    assert_eq!(
        value("IdentityFile=\"/a b/id\""),
        kv("identityfile", "/a b/id")
    );
    assert_eq!(value("PORT=3"), kv("port", "3"));
    assert_eq!(value("port\t4"), kv("port", "4"));
    assert_eq!(
        value("ChallengeResponseAuthentication no"),
        kv("kbdinteractiveauthentication", "no")
    );
    // Command keywords keep the rest of the line verbatim.
    assert_eq!(
        value("RemoteCommand=  =ls  \"-l\"  "),
        kv("remotecommand", "ls  \"-l\"")
    );
    assert_eq!(
        value("ProxyCommand ssh -W %h:%p 'gw'"),
        kv("proxycommand", "ssh -W %h:%p 'gw'")
    );
    assert_eq!(value("ProxyJump=a,b"), kv("proxyjump", "a,b"));
    // Words ssh ignores without a word of complaint.
    for ignored in ["", " ", "#x", "# User bob", "foo\"bar"] {
        assert_eq!(value(ignored), kv("", ""), "{ignored:?}");
    }
    // ssh-accepted deprecated and unsupported keywords.
    assert_eq!(value("UseRoaming no"), kv("useroaming", "no"));
    assert_eq!(
        value("RSAAuthentication=yes"),
        kv("rsaauthentication", "yes")
    );
    assert_eq!(value("Protocol 2,1"), kv("protocol", "2,1"));
    assert_eq!(
        value("GSSAPIKeyExchange=yes"),
        kv("gssapikeyexchange", "yes")
    );
}

#[test]
fn config_errors() {
    let e = |word: &str| err(&["-o", word, "h"]).to_string();
    assert_eq!(
        e("Foo=1"),
        "command-line: line 0: Bad configuration option: foo"
    );
    assert_eq!(
        e("FOO 1"),
        "command-line: line 0: Bad configuration option: foo"
    );
    assert_eq!(
        e("User"),
        "command-line line 0: no argument after keyword \"user\""
    );
    assert_eq!(
        e("User="),
        "command-line line 0: no argument after keyword \"user\""
    );
    assert_eq!(
        e("foo"),
        "command-line line 0: no argument after keyword \"foo\""
    );
    assert_eq!(e("User \"\""), "command-line line 0: Missing argument.");
    assert_eq!(e("User #bob"), "command-line line 0: Missing argument.");
    assert_eq!(e("User \"bob"), "command-line line 0: invalid quotes");
    assert_eq!(
        e("User bob alice"),
        "command-line line 0: keyword user extra arguments at end of line"
    );
    assert_eq!(
        e("ForwardX11 maybe"),
        "command-line line 0: unsupported option \"maybe\"."
    );
    assert_eq!(
        e("Compression=true"),
        "command-line line 0: unsupported option \"true\"."
    );
    assert_eq!(
        e("ControlPersist=YES"),
        "command-line line 0: Bad ControlPersist argument."
    );
    assert_eq!(
        e("ConnectTimeout=soon"),
        "command-line line 0: invalid time value."
    );
    assert_eq!(
        e("ConnectionAttempts=-1"),
        "command-line line 0: integer value too small."
    );
    assert_eq!(
        e("ConnectionAttempts=0"),
        "Invalid number of ConnectionAttempts"
    );
    assert_eq!(e("Port=0"), "command-line line 0: Bad port '0'.");
    assert_eq!(
        e("Host=x"),
        "Host directive not supported as a command-line option"
    );
    assert_eq!(
        e("Match all"),
        "Host directive not supported as a command-line option"
    );
    assert_eq!(
        e("Include x"),
        "Include directive not supported as a command-line option"
    );
    assert_eq!(
        e("SendEnv A=B"),
        "command-line line 0: Invalid environment name."
    );
    assert_eq!(e("SetEnv A"), "command-line line 0: Invalid SetEnv.");
    assert_eq!(
        e("LocalForward 1"),
        "command-line line 0: Missing target argument."
    );
    assert_eq!(
        e("LogLevel LOUD"),
        "command-line line 0: unsupported log level 'LOUD'"
    );
    assert_eq!(
        e("EscapeChar ab"),
        "command-line line 0: Bad escape character."
    );
    assert_eq!(
        e("UserKnownHostsFile none /x"),
        "command-line line 0: keyword userknownhostsfile \"none\" argument must appear alone."
    );
    assert_eq!(
        e("ProxyJump a/b"),
        "command-line line 0: Invalid ProxyJump \"a/b\""
    );
    assert_eq!(e("StreamLocalBindMask 8"), "command-line line 0: Bad mask.");
    assert_eq!(
        e("RekeyLimit 1"),
        "command-line line 0: RekeyLimit too small"
    );
    assert_eq!(
        e("RekeyLimit 1X"),
        "command-line line 0: Bad number '1X': Invalid argument"
    );
    assert_eq!(e("IPQoS af11 x"), "command-line line 0: Bad IPQoS value: x");
    assert_eq!(
        e("CanonicalDomains a..b"),
        "command-line line 0: domain name \"a..b\" contains consecutive separators"
    );
    assert_eq!(
        e("PermitRemoteOpen host"),
        "command-line line 0: bad port number in permitremoteopen"
    );
    assert_eq!(
        e("IdentityAgent $A-B"),
        "command-line line 0: Invalid environment name $A-B."
    );
    assert_eq!(
        e("AddKeysToAgent yes 5m"),
        "command-line line 0: unsupported option"
    );
    // A value ssh then refuses to combine with a command.
    assert_eq!(
        err(&["-oRemoteCommand=ls", "h", "x"]).to_string(),
        "Cannot execute command-line and remote command."
    );
    ok(&["-oRemoteCommand=NONE", "h", "x"]);
    ok(&["-oRemoteCommand=ls", "h"]);
    // Keywords that came after 9.2 and a good value of each kind.
    for good in [
        "Tag=x",
        "ChannelTimeout session=5m",
        "ObscureKeystrokeTiming=no",
        "AddKeysToAgent confirm 5m",
        "AddKeysToAgent 1h",
        "RekeyLimit 1G 1h",
        "RekeyLimit default none",
        "IPQoS af21 0x20",
        "StreamLocalBindMask 0177",
        "FingerprintHash sha1",
        "SyslogFacility local7",
        "CanonicalizePermittedCNAMEs *.a:*.b",
        "PermitRemoteOpen any",
        "PermitRemoteOpen h:22 [::1]:*",
        "UserKnownHostsFile /a /b",
        "TunnelDevice any:1",
        "ForwardAgent $SSH_AUTH_SOCK",
        "EscapeChar ^A",
        "ControlPersist 10m",
        "ServerAliveInterval none",
        "StrictHostKeyChecking accept-new",
        "PubkeyAuthentication host-bound",
        "SetEnv A=1 B=2",
        "SendEnv LC_* -LANG",
        "IgnoreUnknown x",
    ] {
        ok(&["-o", good, "h"]);
    }
}

#[test]
fn every_keyword_is_accepted() {
    for &k in KEYWORDS {
        let inv = parse(&argv(&["-o", &format!("{k}=x"), "h"]));
        match inv {
            Ok(_) => {}
            Err(e) => assert!(
                !e.to_string().contains("Bad configuration option"),
                "{k}: {e}"
            ),
        }
        assert!(
            KEYWORDS.contains(&canonical(k)),
            "{k} maps to an unknown keyword"
        );
    }
    for k in SESSION_KEYS {
        assert!(KEYWORDS.contains(k), "{k}");
    }
}

#[test]
fn ignore_unknown() {
    let inv = ok(&["-o", "IgnoreUnknown=Foo*,!foobaz", "-o", "FooBar=1", "h"]);
    assert_eq!(inv.options[1], config("foobar", "1", "FooBar=1"));
    assert!(
        err(&["-o", "IgnoreUnknown=Foo*,!foobaz", "-o", "FooBaz=1", "h"])
            .to_string()
            .contains("foobaz")
    );
    // Only for later words.
    assert!(
        err(&["-o", "FooBar=1", "-o", "IgnoreUnknown=Foo*", "h"])
            .to_string()
            .contains("foobar")
    );
    assert!(
        glob(b"a*c", b"abc") && glob(b"*", b"abc") && glob(b"a?c", b"abc") && !glob(b"a?", b"abc")
    );
    assert!(!glob(&b"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b"[..], &[b'a'; 64]));
}

// ---- Bytes ----

#[test]
fn non_utf8_words() {
    use std::os::unix::ffi::OsStringExt;
    let name = OsString::from_vec(b"caf\xe9.txt".to_vec());
    let host = OsString::from_vec(b"h\xff".to_vec());
    let user = OsString::from_vec(b"\xfeu".to_vec());
    let inv = parse(&[
        OsString::from("-l"),
        user.clone(),
        host.clone(),
        OsString::from("cat"),
        name,
    ])
    .expect("accepted");
    assert_eq!(inv.host(), Some(host.as_os_str()));
    assert_eq!(inv.user(), Some(user));
    assert_eq!(
        inv.remote_command().as_deref(),
        Some(&b"cat caf\xe9.txt"[..])
    );
    let e = parse(&[OsString::from_vec(b"-\xe9".to_vec()), host.clone()]).expect_err("refused");
    assert_eq!(e.to_string(), "unknown option -- \\xe9");
    let e = parse(&[
        OsString::from("-o"),
        OsString::from_vec(b"\xe9=1".to_vec()),
        host.clone(),
    ])
    .expect_err("refused");
    assert_eq!(
        e.to_string(),
        "command-line: line 0: Bad configuration option: \u{fffd}"
    );
    let inv = parse(&[
        OsString::from("-o"),
        OsString::from_vec(b"User=\xe9".to_vec()),
        host,
    ])
    .expect("accepted");
    assert_eq!(inv.user(), Some(OsString::from_vec(vec![0xe9])));
}

#[test]
fn empty_command_is_no_command() {
    let inv = ok(&["h", ""]);
    assert_eq!(inv.command.len(), 1);
    assert_eq!(inv.remote_command(), None);
    assert_eq!(
        ok(&["h", "", ""]).remote_command().as_deref(),
        Some(&b" "[..])
    );
}

#[test]
fn connection_args_drop_session_options() {
    let inv = ok(&[
        "-tt",
        "-N",
        "-n",
        "-f",
        "-M",
        "-A",
        "-X",
        "-g",
        "-q",
        "-v",
        "-C",
        "-4",
        "-L",
        "1:h:1",
        "-R",
        "2:h:2",
        "-D",
        "3",
        "-S",
        "/s",
        "-O",
        "check",
        "-e",
        "none",
        "-w",
        "any",
        "-E",
        "/log",
        "-F",
        "/cfg",
        "-i",
        "/id",
        "-J",
        "j",
        "-o",
        "ForwardAgent=yes",
        "-o",
        "BatchMode=yes",
        "-oControlPath=/x",
        "h",
        "-p",
        "22",
    ]);
    assert_eq!(
        inv.connection_args(),
        argv(&[
            "-q",
            "-v",
            "-C",
            "-4",
            "-E",
            "/log",
            "-F",
            "/cfg",
            "-i",
            "/id",
            "-J",
            "j",
            "-o",
            "BatchMode=yes",
            "-p",
            "22",
        ])
    );
}

// ---- Never panics ----

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

    #[test]
    fn parse_never_panics(words in proptest::collection::vec(
        proptest::prop_oneof![
            proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
            proptest::sample::select(vec![
                "-o", "-p", "-l", "--", "-", "-t", "-s", "-N", "-W", "-J", "-V", "-Q", "host", "u@h",
                "ssh://u@h:1/", "User=\"a\"", "Port 1", "RemoteCommand=x", "IgnoreUnknown=*", "x",
            ]).prop_map(|s| s.as_bytes().to_vec()),
            "[-a-zA-Z0-9=\"' #\\\\:@/,.;%\\[\\]*?!]{0,16}".prop_map(String::into_bytes),
        ],
        0..10,
    )) {
        use std::os::unix::ffi::OsStringExt;
        let args: Vec<OsString> = words.into_iter().map(OsString::from_vec).collect();
        if let Ok(inv) = parse(&args) {
            // The accessors must not panic either.
            let _ = (inv.user(), inv.port(), inv.tty_request(), inv.remote_command(), inv.session_type());
            let _ = (inv.connection_args(), inv.arg('p'), inv.config("user"), inv.count('t'));
        }
    }
}
