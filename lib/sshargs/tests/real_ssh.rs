//! The grammar against `/usr/bin/ssh -G` itself (OpenSSH 9.2p1 Debian; skipped elsewhere).

use super::*;

/// A tiny deterministic generator, so that failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).unwrap_or(0)
    }
}

/// What `/usr/bin/ssh -G` said: exit status and the settings we compare.
fn real_ssh(args: &[OsString]) -> Option<(bool, std::collections::HashMap<String, String>)> {
    let out = std::process::Command::new("/usr/bin/ssh")
        .arg("-G")
        .args(args)
        .stdin(std::process::Stdio::null())
        .env("LC_ALL", "C")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let settings = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Some((out.status.success(), settings))
}

fn have_ssh_9_2() -> bool {
    std::process::Command::new("/usr/bin/ssh")
        .arg("-V")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stderr).starts_with("OpenSSH_9.2p1 Debian"))
}

#[test]
fn matches_real_ssh() {
    if !have_ssh_9_2() {
        eprintln!("skipped: /usr/bin/ssh is not OpenSSH_9.2p1 Debian");
        return;
    }
    let usage = std::process::Command::new("/usr/bin/ssh")
        .output()
        .expect("ssh runs");
    assert_eq!(String::from_utf8_lossy(&usage.stderr), format!("{USAGE}\n"));

    const OPTIONS: &[&str] = &[
        "-p",
        "2222",
        "-p2200",
        "-l",
        "bob",
        "-lcarol",
        "-o",
        "User=dave",
        "-oPort=3333",
        "-oUser=\"eve\"",
        "-oRequestTTY=force",
        "-oRequestTTY=no",
        "-t",
        "-tt",
        "-T",
        "-N",
        "-s",
        "-x",
        "-C",
        "-4Cp2201",
        "-qT",
        "-z",
        "-1",
        "-2",
        "-P",
        "-V",
        "-Q",
        "cipher",
        "bogus",
        "-O",
        "check",
        "-W",
        "h:22",
        "-J",
        "jump1",
        "-Jbad/x",
        "-e",
        "~",
        "xx",
        "-oSessionType=none",
        "-oSessionType=subsystem",
        "-oForwardX11 no",
        "Bogus=1",
        "Port",
        "-oUser",
        "-v",
        "-A",
        "-S",
        "/tmp/x",
        "-l--",
        "-t-",
        "--",
        "-",
        "-oIgnoreUnknown=bog*",
        "-oBogus=2",
        "-oRemoteCommand=none",
        "-oRemoteCommand=ls",
        "-oConnectionAttempts=0",
        "-oControlPersist=YES",
        "-oControlPersist=yes",
        "-oProxyJump=j2",
        "-oProxyCommand=nc %h %p",
        "-w",
        "any:1",
        "-oUser=a;b",
        "-oRequestTTY=maybe",
        "-oCompression=true",
        "-oPort=0",
        "0",
        "65536",
        "-oPort 44",
        "-o Port=45",
        "-oUser=\"x y\"",
        "-oUser x y",
        "-o#c",
        "-o",
        "-oSetEnv=A=1",
        "-oSendEnv=A=1",
        "/dev/null",
        "-L",
        "1:h:1",
        "-L0:h:1",
        "-L/a:/b",
        "-R",
        "0:h:1",
        "-R0",
        "-R/s",
        "-D",
        "1080",
        "-Dx",
        "-D[a]:5",
        "-W",
        "h",
        "-J",
        "a,-b",
        "-Jx;y@a",
        "-J[a]:22",
        "-Ja b",
        "-J,a",
        "-oProxyJump=none",
        "-oProxyJump=a,b",
        "-oLocalForward=1 h:2",
        "-oLocalForward 1",
        "-oRemoteForward=0",
        "-oDynamicForward=1080",
        "-oDynamicForward=x",
        "-e",
        "^a",
        "-w",
        "any",
        "-oTunnelDevice=any:x",
        "-oSendEnv=A B",
        "-oSetEnv=A",
        "-oEscapeChar=ab",
        "-oAddKeysToAgent=confirm 5m",
        "-oAddKeysToAgent=1x",
        "-oIPQoS=af11 0x1",
        "-oIPQoS=0x100",
        "-oRekeyLimit=1G 1h",
        "-oRekeyLimit=1",
        "-oRekeyLimit=1.5K",
        "-oStreamLocalBindMask=0777x",
        "-oCanonicalDomains=a..b",
        "-oCanonicalDomains=a.b c",
        "-oPermitRemoteOpen=h:22",
        "-oPermitRemoteOpen=h",
        "-oUserKnownHostsFile=none /x",
        "-oHost=x",
        "-oMatch=all",
        "-oInclude=x",
        "-oUseRoaming=no",
        "-oRSAAuthentication=yes",
        "-o=User=u",
        "-o\"User\" zz",
        "-oUser='q r'",
        "-oUser=\"unterminated",
        "-oUser b\\ c",
        "-oPort=22 33",
        "-oControlPath=/x",
        "-oGSSAPIKeyExchange=yes",
        "-oSetupTimeOut=5",
        "-oConnectTimeout=1h2m",
        "-oConnectTimeout=-1",
        "-oServerAliveCountMax=x",
        "-oLogLevel=debug3",
        "-oSyslogFacility=local9",
        "-oFingerprintHash=md5",
        "-oForwardAgent=$X-Y",
        "-oIdentityAgent=none",
        "-oCanonicalizePermittedCNAMEs=a",
        "-oControlMaster=autoask",
        "-oStrictHostKeyChecking=accept-new",
        "-oLogVerbose=kex.c:*:1000",
        "-oKnownHostsCommand=/bin/true %h",
        "-oIgnoreUnknown=bogus",
        "-M",
        "-K",
    ];
    const DESTINATIONS: &[&str] = &[
        "host",
        "bob@host",
        "ssh://alice@h2:2200",
        "ssh://h3",
        "ssh://[::1]",
        "@h",
        "a@b@h",
        "Host.Example",
        "bob@",
        "ssh://h4/",
        "ssh://h5/x",
        "x;y@h6",
        "ho st",
        "ssh://h7:ssh2",
        "-x@h8",
    ];
    const COMMANDS: &[&str] = &["run-it", "ls -l", "", "-p", "7", "--", "-l", "zed"];

    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let pick = |rng: &mut XorShift, from: &[&str]| from[rng.next(from.len())].to_owned();
    let default_user = real_ssh(&argv(&["-F", "/dev/null", "h"]))
        .and_then(|(_, s)| s.get("user").cloned())
        .expect("ssh -G h prints a user");
    let mut compared = 0;
    for case in 0..2000 {
        let mut words = vec!["-F".to_owned(), "/dev/null".to_owned()];
        for _ in 0..rng.next(4) {
            words.push(pick(&mut rng, OPTIONS));
        }
        if rng.next(8) != 0 {
            words.push(pick(&mut rng, DESTINATIONS));
        }
        for _ in 0..rng.next(4) {
            let from = if rng.next(2) == 0 { OPTIONS } else { COMMANDS };
            words.push(pick(&mut rng, from));
        }
        // Port *names* ("ssh" in "-W ssh://h/") are looked up by ssh, not here.
        if words.windows(2).any(|w| {
            ["-W", "-J", "-L", "-R", "-D"].contains(&w[0].as_str()) && w[1].starts_with("ssh:")
        }) {
            continue;
        }
        // The same line with a RemoteCommand in front tells whether ssh saw a command.
        let probe = |w: &[String]| -> Vec<OsString> {
            ["-o", "RemoteCommand=probe"]
                .iter()
                .map(OsString::from)
                .chain(w.iter().map(OsString::from))
                .collect()
        };
        let plain: Vec<OsString> = words.iter().map(OsString::from).collect();
        for args in [plain.clone(), probe(&words)] {
            let Some((ssh_ok, settings)) = real_ssh(&args) else {
                return;
            };
            let mine = parse(&args);
            assert_eq!(
                mine.is_ok(),
                ssh_ok,
                "case {case}: {args:?}: ours {mine:?}, ssh {settings:?}"
            );
            let Ok(inv) = mine else { continue };
            if inv.count('V') > 0 || inv.arg('Q').is_some() {
                continue;
            }
            let lower = |s: &OsStr| s.to_string_lossy().to_lowercase();
            let tty = match inv.tty_request() {
                TtyRequest::Auto => "auto",
                TtyRequest::No => "false",
                TtyRequest::Yes => "true",
                TtyRequest::Force => "force",
            };
            let session = match inv.session_type() {
                SessionType::Default => "default",
                SessionType::None => "none",
                SessionType::Subsystem => "subsystem",
            };
            // ssh canonicalises what can only be an address ("65536" is 0.1.0.0).
            let host = inv.host().map(lower).unwrap_or_default();
            let address =
                host.contains([':', '%']) || host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            let hostname = if address {
                settings.get("hostname").cloned().unwrap_or_default()
            } else {
                host
            };
            let expected = [
                (
                    "user",
                    inv.user()
                        .map_or(default_user.clone(), |u| u.to_string_lossy().into_owned()),
                ),
                ("port", inv.port().ok().flatten().unwrap_or(22).to_string()),
                ("hostname", hostname),
                ("requesttty", tty.to_owned()),
                ("sessiontype", session.to_owned()),
            ];
            for (key, want) in expected {
                assert_eq!(
                    settings.get(key),
                    Some(&want),
                    "case {case}: {args:?}: {key}"
                );
            }
            compared += 1;
        }
    }
    eprintln!("compared {compared} accepted lines with ssh -G");
    assert!(
        compared > 300,
        "only {compared} accepted lines were compared"
    );
}

#[test]
fn config_tokens_match_real_ssh() {
    if !have_ssh_9_2() {
        eprintln!("skipped: /usr/bin/ssh is not OpenSSH_9.2p1 Debian");
        return;
    }
    const PIECES: &[&str] = &[
        "User", "USER", "Port", "port", "=", "==", " ", "  ", "\t", "\"", "'", "\\", "#", "bob",
        "22", "a b", "\\ ", "\\\"", "\\'", "=bob", "x#y", "2\"2\"", "'al ice'",
    ];
    let mut rng = XorShift(0x51ab_7e11_0bad_f00d);
    let default_user = real_ssh(&argv(&["-F", "/dev/null", "h"]))
        .and_then(|(_, s)| s.get("user").cloned())
        .expect("ssh -G h prints a user");
    let mut accepted = 0;
    for case in 0..600 {
        let word: String = (0..1 + rng.next(6))
            .map(|_| PIECES[rng.next(PIECES.len())])
            .collect();
        let args = argv(&["-F", "/dev/null", "-o", &word, "h"]);
        let Some((ssh_ok, settings)) = real_ssh(&args) else {
            return;
        };
        let mine = parse(&args);
        assert_eq!(
            mine.is_ok(),
            ssh_ok,
            "case {case}: -o {word:?}: ours {mine:?}"
        );
        let Ok(inv) = mine else { continue };
        let user = inv
            .user()
            .map_or(default_user.clone(), |u| u.to_string_lossy().into_owned());
        assert_eq!(
            settings.get("user"),
            Some(&user),
            "case {case}: -o {word:?}"
        );
        let port = inv.port().ok().flatten().unwrap_or(22).to_string();
        assert_eq!(
            settings.get("port"),
            Some(&port),
            "case {case}: -o {word:?}"
        );
        accepted += 1;
    }
    assert!(accepted > 50, "only {accepted} words were accepted");
}
