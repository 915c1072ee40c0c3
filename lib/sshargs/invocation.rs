//! What ssh makes of a parsed command line: which of competing settings wins (`-l`, `-p`,
//! `-o User`/`Port` and the destination's `user@`/`:port` in argv order), the pty request,
//! the session type, and the options that matter to the connection rather than the
//! session.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use super::destination::{valid_hostname, valid_ruser};
use super::keywords::{SESSION_KEYS, canonical};
use super::numbers::{a2port, atoi};
use super::{ArgError, Destination, Invocation, Opt, SessionType, TtyRequest};

impl Invocation {
    /// The checks ssh makes once argv is read and before it reads any file.
    pub(super) fn check(&self, syslog_and_logfile: bool) -> Result<(), ArgError> {
        // The user is checked first (ssh -G -l 'a;b' 'ho,st' complains about the user).
        if self.user().is_some_and(|u| !valid_ruser(u.as_bytes())) {
            return Err(ArgError::fatal(
                "remote username contains invalid characters",
            ));
        }
        if let Some(dest) = &self.destination
            && !valid_hostname(dest.host.as_bytes())
        {
            return Err(ArgError::fatal("hostname contains invalid characters"));
        }
        if self.command.is_empty() && self.session_type() == SessionType::Subsystem {
            return Err(ArgError::usage("You must specify a subsystem to invoke."));
        }
        if syslog_and_logfile {
            return Err(ArgError::fatal("Can't specify both -y and -E"));
        }
        // These two come after the configuration files in ssh, but the files cannot change
        // a value the command line set (first one wins).
        if self
            .config("connectionattempts")
            .is_some_and(|n| atoi(Some(n.as_bytes())) == Ok(0))
        {
            return Err(ArgError::fatal("Invalid number of ConnectionAttempts"));
        }
        let remote_command = self.config("remotecommand");
        if self.remote_command().is_some()
            && remote_command.is_some_and(|c| !c.as_bytes().eq_ignore_ascii_case(b"none"))
        {
            return Err(ArgError::fatal(
                "Cannot execute command-line and remote command.",
            ));
        }
        Ok(())
    }

    /// How many times a flag was given (`-tt` -> 2).
    pub(crate) fn count(&self, flag: char) -> usize {
        self.options
            .iter()
            .filter(|o| **o == Opt::Flag(flag))
            .count()
    }

    /// The value ssh would use for an `Arg` option.
    ///
    /// The first one for `-l`, `-p`, `-Q` (ssh fills these only while unset; `-J`, `-O`, `-W`
    /// can only be given once) and for the repeatable `-L`, `-R`, `-D`, `-i` (see
    /// [`Invocation::args`]); the last one for the rest (`-b`, `-B`, `-c`, `-E`, `-e`, `-F`,
    /// `-I`, `-m`, `-S`, `-w`), which ssh overwrites. This looks at the option alone: `-l`
    /// and `-p` compete with `-o` and the destination in [`Invocation::user`] and
    /// [`Invocation::port`].
    pub(crate) fn arg(&self, opt: char) -> Option<&OsStr> {
        let mut values = self.args(opt).into_iter();
        if "lpQJOWLRDi".contains(opt) {
            values.next()
        } else {
            values.next_back()
        }
    }

    /// All values of an option in argv order; for `'o'` the raw -o words.
    pub(crate) fn args(&self, opt: char) -> Vec<&OsStr> {
        self.options
            .iter()
            .filter_map(|o| match o {
                Opt::Arg(c, v) if *c == opt => Some(v.as_os_str()),
                Opt::Config { raw, .. } if opt == 'o' => Some(raw.as_os_str()),
                _ => None,
            })
            .collect()
    }

    /// The value ssh would use for -o `key` (any case, aliases included): the first one,
    /// as ssh only fills unset settings, except `StreamLocalBindMask`, which ssh overwrites.
    /// Only -o options are looked at, not the flags that set the same thing.
    pub(crate) fn config(&self, key: &str) -> Option<&OsStr> {
        let key = key.to_ascii_lowercase();
        let mut values = self.configs(&key).into_iter();
        if canonical(&key) == "streamlocalbindmask" {
            values.next_back()
        } else {
            values.next()
        }
    }

    /// Every value given for -o `key`, in argv order (SendEnv, SetEnv, IdentityFile ...).
    pub(crate) fn configs(&self, key: &str) -> Vec<&OsStr> {
        let key = key.to_ascii_lowercase();
        let key = canonical(&key);
        self.options
            .iter()
            .filter_map(|o| match o {
                Opt::Config { key: k, value, .. } if k == key => Some(value.as_os_str()),
                _ => None,
            })
            .collect()
    }

    /// The options and, at its place among them, the destination, in the order ssh reads
    /// them (the destination's `user@`/`:port` only fill what earlier options left unset).
    fn in_order(&self) -> impl Iterator<Item = Setting<'_>> {
        let before = self.options_before_destination.min(self.options.len());
        let (head, tail) = self.options.split_at(before);
        head.iter()
            .map(Setting::Opt)
            .chain(self.destination.iter().map(Setting::Destination))
            .chain(tail.iter().map(Setting::Opt))
    }

    /// The user per ssh's precedence: the first of `-l`, `-o User`, `user@host` and
    /// `ssh://user@` in argv order. `None` leaves it to the configuration files.
    pub(crate) fn user(&self) -> Option<OsString> {
        self.in_order().find_map(|s| match s {
            Setting::Opt(Opt::Arg('l', v)) => Some(v.clone()),
            Setting::Opt(Opt::Config { key, value, .. }) if key == "user" => Some(value.clone()),
            Setting::Destination(d) => d.user.clone(),
            Setting::Opt(_) => None,
        })
    }

    /// The port per ssh's precedence: the first of `-p`, `-o Port` and `ssh://host:port` in
    /// argv order. `None` leaves it to the configuration files (or 22).
    pub(crate) fn port(&self) -> Result<Option<u16>, ArgError> {
        let bad = |v: &OsStr| ArgError::fatal(format!("Bad port '{}'", v.to_string_lossy()));
        for setting in self.in_order() {
            match setting {
                Setting::Opt(Opt::Arg('p', v)) => {
                    return a2port(v.as_bytes()).map(Some).ok_or_else(|| bad(v));
                }
                Setting::Opt(Opt::Config { key, value, .. }) if key == "port" => {
                    return a2port(value.as_bytes()).map(Some).ok_or_else(|| bad(value));
                }
                Setting::Destination(Destination { port: Some(p), .. }) => return Ok(Some(*p)),
                _ => {}
            }
        }
        Ok(None)
    }

    /// The host as written in the destination (before any `Hostname` from the configuration).
    pub(crate) fn host(&self) -> Option<&OsStr> {
        self.destination.as_ref().map(|d| d.host.as_os_str())
    }

    /// The pty request: `-t` asks for one, a `-t` after another `-t` forces it (a third
    /// goes back to plain yes, as in ssh), `-T`, `-N` and `-W` refuse it, all in argv
    /// order; `-o RequestTTY` only counts if none of these came before it.
    pub(crate) fn tty_request(&self) -> TtyRequest {
        let mut tty = None;
        for o in &self.options {
            match o {
                Opt::Flag('t') => {
                    tty = Some(if tty == Some(TtyRequest::Yes) {
                        TtyRequest::Force
                    } else {
                        TtyRequest::Yes
                    });
                }
                Opt::Flag('T' | 'N') | Opt::Arg('W', _) => tty = Some(TtyRequest::No),
                Opt::Config { key, value, .. } if key == "requesttty" && tty.is_none() => {
                    tty = Some(match value.as_bytes().to_ascii_lowercase().as_slice() {
                        b"yes" | b"true" => TtyRequest::Yes,
                        b"no" | b"false" => TtyRequest::No,
                        b"force" => TtyRequest::Force,
                        _ => TtyRequest::Auto,
                    });
                }
                _ => {}
            }
        }
        tty.unwrap_or(TtyRequest::Auto)
    }

    /// The command words joined by single spaces, as ssh sends them. `None` when there is
    /// no command, including the empty one (`ssh host ""`): ssh tests the joined length,
    /// so that opens a login shell.
    pub(crate) fn remote_command(&self) -> Option<Vec<u8>> {
        let joined = self
            .command
            .iter()
            .map(|w| w.as_bytes())
            .collect::<Vec<_>>()
            .join(&b' ');
        (!joined.is_empty()).then_some(joined)
    }

    /// The session type: `-N`/`-W` give none and `-s` a subsystem; `-o SessionType` only
    /// counts when none of those came before it.
    pub(crate) fn session_type(&self) -> SessionType {
        let mut session = None;
        for o in &self.options {
            match o {
                Opt::Flag('N') | Opt::Arg('W', _) => session = Some(SessionType::None),
                Opt::Flag('s') => session = Some(SessionType::Subsystem),
                Opt::Config { key, value, .. } if key == "sessiontype" && session.is_none() => {
                    session = Some(match value.as_bytes().to_ascii_lowercase().as_slice() {
                        b"none" => SessionType::None,
                        b"subsystem" => SessionType::Subsystem,
                        _ => SessionType::Default,
                    });
                }
                _ => {}
            }
        }
        session.unwrap_or(SessionType::Default)
    }

    /// The options to hand to a real ssh that opens the *connection* for this host: every
    /// option in original order as argv words, except those that only matter to a session
    /// or to multiplexing. -o options are passed as the two words "-o", raw.
    ///
    /// Left out:
    /// * flags `t T n N s f G V M`; `A a` (agent forwarding, like ForwardAgent), `X x Y`
    ///   (X11 forwarding, like ForwardX11), `g` (like GatewayPorts), and `P`: ignored by 9.2
    ///   but `-P tag` from 9.4 on, so it would swallow the next word of a newer ssh;
    /// * `-L -R -D -W -w` (forwardings and tunnels are per session), `-O -S` (multiplexing),
    ///   `-e` (the escape character is read by the session), `-Q` (ssh exits on it);
    /// * the -o keys of `SESSION_KEYS`.
    ///
    /// Kept, among others: `-E` and `-y`, because the connection's own diagnostics (host
    /// keys, authentication) belong where the user sent the log; `-q`/`-v`; `-F`, `-J`,
    /// `-i`, `-l`, `-p`; `-C`, `-4`, `-6`, `-K`, `-k`.
    pub(crate) fn connection_args(&self) -> Vec<OsString> {
        const SESSION_FLAGS: &str = "tTnNsfGVMAaXxYgP";
        const SESSION_ARGS: &str = "LRDWwOSeQ";
        let mut out = Vec::new();
        for o in &self.options {
            match o {
                Opt::Flag(c) if !SESSION_FLAGS.contains(*c) => {
                    out.push(OsString::from(format!("-{c}")))
                }
                Opt::Arg(c, v) if !SESSION_ARGS.contains(*c) => {
                    out.push(OsString::from(format!("-{c}")));
                    out.push(v.clone());
                }
                Opt::Config { key, raw, .. } if !SESSION_KEYS.contains(&key.as_str()) => {
                    out.push(OsString::from("-o"));
                    out.push(raw.clone());
                }
                _ => {}
            }
        }
        out
    }
}

/// One step of [`Invocation::in_order`].
pub(super) enum Setting<'a> {
    Opt(&'a Opt),
    Destination(&'a Destination),
}
