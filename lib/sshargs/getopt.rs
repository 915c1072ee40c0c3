//! `ssh.c`'s option loop: OpenSSH's own BSD getopt (openbsd-compat/getopt_long.c: no
//! permutation, clusters, `--`) and the checks `main` makes on each option as it comes.

use super::destination::{self, valid_jump};
use super::numbers::a2port;
use super::values::{valid_forward, valid_tun};
use super::{ArgError, Destination, Invocation, Opt, SessionType, line, os};

/// ssh 9.2's getopt string. `P` has no `:` here: 9.4 turned `-P` into `-P tag`.
pub(super) const OPTSTRING: &[u8] =
    b"1246ab:c:e:fgi:kl:m:no:p:qstvxAB:CD:E:F:GI:J:KL:MNO:PQ:R:S:TVw:W:XYy";

/// The `-Q` queries ssh answers; the rest are answered with "Unsupported query".
pub(super) fn is_query(q: &[u8]) -> bool {
    const EXACT: &[&[u8]] = &[
        b"cipher",
        b"cipher-auth",
        b"mac",
        b"kex",
        b"kex-gss", // Debian
        b"key",
        b"key-cert",
        b"key-plain",
        b"key-sig",
        b"sig",
        b"protocol-version",
        b"compression",
        b"help",
    ];
    const ANY_CASE: &[&[u8]] = &[
        b"ciphers",
        b"macs",
        b"kexalgorithms",
        b"pubkeyacceptedkeytypes",
        b"pubkeyacceptedalgorithms",
        b"hostkeyalgorithms",
        b"hostbasedkeytypes",
        b"hostbasedacceptedkeytypes",
        b"hostbasedacceptedalgorithms",
    ];
    EXACT.contains(&q) || ANY_CASE.iter().any(|k| k.eq_ignore_ascii_case(q))
}

/// Where a getopt run ended.
pub(super) enum Run {
    /// At this index of its words: the first one that is not an option (or past `--`).
    Stopped(usize),
    /// On `-V` or `-Q`, after which ssh prints and exits.
    Exited,
}

/// The parts of ssh's `options` that decide whether a later word is accepted.
#[derive(Default)]
pub(super) struct Parser {
    pub(super) options: Vec<Opt>,
    /// `options.port` is set: only the first -p is checked at all.
    pub(super) port_set: bool,
    pub(super) session: Option<SessionType>,
    pub(super) mux_command: bool,
    pub(super) stdio_forward: bool,
    pub(super) jump_host: bool,
    pub(super) proxy_command: bool,
    /// The first `IgnoreUnknown` pattern list: later unknown keywords it matches are accepted.
    pub(super) ignored_unknown: Option<Vec<u8>>,
    pub(super) syslog: bool,
    pub(super) logfile: bool,
}

impl Parser {
    pub(super) fn finish_early(self, destination: Option<Destination>) -> Invocation {
        Invocation {
            options_before_destination: self.options.len(),
            options: self.options,
            destination,
            command: Vec::new(),
        }
    }

    /// One run of OpenSSH's BSD getopt (openbsd-compat/getopt_long.c, no permutation) over
    /// `words`.
    pub(super) fn getopt(&mut self, words: &[&[u8]]) -> Result<Run, ArgError> {
        let mut i = 0;
        while let Some(&word) = words.get(i) {
            // "-" alone and anything not starting with '-' end the options.
            if word.len() < 2 || word[0] != b'-' {
                return Ok(Run::Stopped(i));
            }
            if word == b"--" {
                return Ok(Run::Stopped(i + 1));
            }
            let mut next = i + 1;
            let mut j = 1;
            while let Some(&c) = word.get(j) {
                j += 1;
                let rest = &word[j..];
                let Some(takes_arg) = option_takes_arg(c) else {
                    // getopt treats a '-' ending a cluster ("-t-") as a non-option: the
                    // options end and the whole word becomes the destination.
                    if c == b'-' && rest.is_empty() {
                        return Ok(Run::Stopped(i));
                    }
                    return Err(ArgError::usage(format!(
                        "unknown option -- {}",
                        show_byte(c)
                    )));
                };
                let flow = if takes_arg {
                    // The rest of the cluster, else the next word whatever it looks like.
                    let value = if !rest.is_empty() {
                        rest
                    } else if let Some(&value) = words.get(i + 1) {
                        next = i + 2;
                        value
                    } else {
                        return Err(ArgError::usage(format!(
                            "option requires an argument -- {}",
                            show_byte(c)
                        )));
                    };
                    self.option_with_arg(c, value)?
                } else {
                    self.flag(c)?
                };
                if let Flow::Exit = flow {
                    return Ok(Run::Exited);
                }
                if takes_arg {
                    break;
                }
            }
            i = next;
        }
        Ok(Run::Stopped(i))
    }

    fn flag(&mut self, c: u8) -> Result<Flow, ArgError> {
        match c {
            b'1' => return Err(ArgError::fatal("SSH protocol v.1 is no longer supported")),
            b'N' => self.set_session(SessionType::None, "Cannot specify -N with -s/SessionType")?,
            b's' => self.set_session(
                SessionType::Subsystem,
                "Cannot specify -s with -N/SessionType",
            )?,
            b'y' => self.syslog = true,
            _ => {}
        }
        self.options.push(Opt::Flag(char::from(c)));
        Ok(if c == b'V' {
            Flow::Exit
        } else {
            Flow::Continue
        })
    }

    fn set_session(&mut self, to: SessionType, conflict: &str) -> Result<(), ArgError> {
        match self.session {
            Some(current) if current != to => Err(ArgError::fatal(conflict)),
            _ => {
                self.session = Some(to);
                Ok(())
            }
        }
    }

    /// An option with its argument, checked as `main` checks it.
    fn option_with_arg(&mut self, c: u8, value: &[u8]) -> Result<Flow, ArgError> {
        match c {
            b'o' => {
                let (key, parsed) = self.config_line(value)?;
                self.options.push(Opt::Config {
                    key,
                    value: os(&parsed),
                    raw: os(value),
                });
                return Ok(Flow::Continue);
            }
            b'Q' => {
                if !is_query(value) {
                    return Err(ArgError::fatal(format!(
                        "Unsupported query \"{}\"",
                        quoted(value)
                    )));
                }
                self.options.push(Opt::Arg('Q', os(value)));
                return Ok(Flow::Exit);
            }
            b'O' => self.mux_command(value)?,
            b'W' => self.stdio_forward(value)?,
            b'J' => self.jump_host(value)?,
            // Only the first port is looked at: `-p 22 -p bogus` is fine.
            b'p' if !self.port_set => {
                if a2port(value).is_none() {
                    return Err(ArgError::fatal(format!("Bad port '{}'", quoted(value))));
                }
                self.port_set = true;
            }
            b'w' if !valid_tun(value) => {
                return Err(ArgError::fatal(format!(
                    "Bad tun device '{}'",
                    quoted(value)
                )));
            }
            b'e' => check_escape_char(value)?,
            b'L' | b'R' | b'D' => check_forward(c, value)?,
            b'E' => self.logfile = true,
            _ => {}
        }
        self.options.push(Opt::Arg(char::from(c), os(value)));
        Ok(Flow::Continue)
    }

    /// `-O`: once, not with `-W`, one of ssh's commands.
    fn mux_command(&mut self, value: &[u8]) -> Result<(), ArgError> {
        if self.stdio_forward {
            return Err(ArgError::fatal(
                "Cannot specify multiplexing command with -W",
            ));
        }
        if self.mux_command {
            return Err(ArgError::fatal("Multiplexing command already specified"));
        }
        const COMMANDS: &[&[u8]] = &[b"check", b"forward", b"exit", b"stop", b"cancel", b"proxy"];
        if !COMMANDS.contains(&value) {
            return Err(ArgError::fatal("Invalid multiplex command."));
        }
        self.mux_command = true;
        Ok(())
    }

    /// `-W`: once, not with `-O`, a valid `host:port`; no session then.
    fn stdio_forward(&mut self, value: &[u8]) -> Result<(), ArgError> {
        if self.stdio_forward {
            return Err(ArgError::fatal("stdio forward already specified"));
        }
        if self.mux_command {
            return Err(ArgError::fatal("Cannot specify stdio forward with -O"));
        }
        if !valid_forward(value, true, false) {
            return Err(ArgError::fatal(format!(
                "Bad stdio forwarding specification '{}'",
                quoted(value)
            )));
        }
        self.stdio_forward = true;
        // -W overrides rather than conflicts (it sets SESSION_TYPE_NONE outright).
        self.session = Some(SessionType::None);
        Ok(())
    }

    /// `-J`: once, not after a ProxyCommand, valid hops.
    fn jump_host(&mut self, value: &[u8]) -> Result<(), ArgError> {
        if self.jump_host {
            return Err(ArgError::fatal(
                "Only a single -J option is permitted (use commas to separate multiple jump hops)",
            ));
        }
        if self.proxy_command {
            return Err(ArgError::fatal("Cannot specify -J with ProxyCommand"));
        }
        if !valid_jump(value) {
            return Err(ArgError::fatal("Invalid -J argument"));
        }
        self.jump_host = true;
        self.proxy_command = true;
        Ok(())
    }

    /// `process_config_line` for one `-o` word: returns the canonical key and the value.
    fn config_line(&mut self, raw: &[u8]) -> Result<(String, Vec<u8>), ArgError> {
        let (key, value) = line::process(raw, self.ignored_unknown.as_deref())?;
        self.note_config(&key, &value);
        Ok((key, value))
    }

    /// Records what an accepted -o sets that later words are checked against.
    fn note_config(&mut self, key: &str, value: &[u8]) {
        match key {
            "port" => self.port_set = true,
            "sessiontype" if self.session.is_none() => {
                self.session = Some(match value.to_ascii_lowercase().as_slice() {
                    b"none" => SessionType::None,
                    b"subsystem" => SessionType::Subsystem,
                    _ => SessionType::Default,
                });
            }
            // As in Debian's backport of 10.3: the first of ProxyCommand and ProxyJump wins
            // (a jump host sets ProxyCommand to "none"), and "ProxyJump none" only fills an
            // unset jump host.
            "proxycommand" => self.proxy_command = true,
            "proxyjump" if value.eq_ignore_ascii_case(b"none") => self.jump_host = true,
            "proxyjump" if !self.jump_host && !self.proxy_command => {
                self.jump_host = true;
                self.proxy_command = true;
            }
            "ignoreunknown" if self.ignored_unknown.is_none() => {
                self.ignored_unknown = Some(value.to_vec());
            }
            _ => {}
        }
    }

    /// The destination word: `ssh://[user@]host[:port]` or `[user@]host`.
    pub(super) fn destination(&mut self, word: &[u8]) -> Result<Destination, ArgError> {
        let destination = destination::parse(word)?;
        if destination.port.is_some() {
            self.port_set = true;
        }
        Ok(destination)
    }
}

#[derive(Clone, Copy)]
pub(super) enum Flow {
    Continue,
    Exit,
}

/// `-e`: one character, `^X` or `none`.
fn check_escape_char(value: &[u8]) -> Result<(), ArgError> {
    let ok =
        matches!(value, [b'^', c] if (64..128).contains(c)) || value.len() == 1 || value == b"none";
    if !ok {
        return Err(ArgError::fatal(format!(
            "Bad escape character '{}'.",
            quoted(value)
        )));
    }
    Ok(())
}

/// `-L`, `-R` (which may also be dynamic) and `-D`: a valid specification.
fn check_forward(c: u8, value: &[u8]) -> Result<(), ArgError> {
    let (ok, what) = match c {
        b'L' => (valid_forward(value, false, false), "local"),
        b'R' => (
            valid_forward(value, false, true) || valid_forward(value, true, true),
            "remote",
        ),
        _ => (valid_forward(value, true, false), "dynamic"),
    };
    if !ok {
        return Err(ArgError::fatal(format!(
            "Bad {what} forwarding specification '{}'",
            quoted(value)
        )));
    }
    Ok(())
}

fn quoted(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

/// `Some(takes_argument)` for a letter of [`OPTSTRING`].
pub(super) fn option_takes_arg(c: u8) -> Option<bool> {
    if c == b':' {
        return None;
    }
    let at = OPTSTRING.iter().position(|&b| b == c)?;
    Some(OPTSTRING.get(at + 1) == Some(&b':'))
}

pub(super) fn show_byte(c: u8) -> String {
    if c.is_ascii_graphic() || c == b' ' {
        char::from(c).to_string()
    } else {
        format!("\\x{c:02x}")
    }
}
