//! OpenSSH's `ssh` command line: options, destination and remote command, read exactly as
//! ssh reads them.
//!
//! The shim stands in for `/usr/bin/ssh`, and rsync, scp, sftp, git and Ansible all build
//! ssh command lines of their own, so argv must be read exactly as OpenSSH 9.2p1 (Debian)
//! reads it. This module reproduces, without any I/O:
//!
//! * `ssh.c:main`'s option loop: OpenSSH's own BSD getopt (no GNU permutation, clusters,
//!   `--`), the destination (`[user@]host` split at the *last* `@`, or `ssh://` URIs) and the
//!   second option run over the words after the destination;
//! * `readconf.c:process_config_line` for `-o`: its tokeniser (`strdelim`, `argv_split`:
//!   quotes and backslashes removed, one `=` or spaces between keyword and value), the 9.x
//!   keyword table and the value checks that need nothing but the word itself;
//! * the checks ssh makes on argv alone before it reads any file (conflicting `-N`/`-s`,
//!   second `-J`, bad `-p`, bad forwarding specifications, ...), including those Debian
//!   backported into 9.2p1-2+deb12u10 from 9.6 and 10.3: no shell metacharacters in the
//!   destination's host, in the user, or in `-J`/`ProxyJump` hops.
//!
//! Note that in 9.2 `-P` is an ignored flag: `-P tag` only came with 9.4.
//!
//! Where ssh's verdict depends on the machine rather than on argv it is not reproduced:
//! port *names* (`-p ssh` goes through getservbyname; here only numbers are ports), the
//! algorithm lists of `-c`, `-m`, `Ciphers=` and friends (they depend on the crypto build),
//! forwarding specifications holding `${VAR}` (ssh expands them from its environment
//! first), and checks made after the configuration files are read.
//!
//! Precedence, verified against `/usr/bin/ssh -G`: for most settings the *first* value
//! wins, counting `-l`/`-p`, `-o User=`/`-o Port=` and the destination's `user@`/`:port` in
//! argv order (ssh only fills a field that is still unset). Options that ssh assigns
//! unconditionally (`-S`, `-b`, `-e`, ...) are won by the last one; see [`Invocation::arg`].
//!
//! Split like ssh's own sources (and ripgrep's `flags/`):
//!
//! - this module: what a parsed command line is ([`Invocation`], [`Opt`]), [`parse`] and
//!   [`ArgError`];
//! - [`invocation`]: what ssh makes of one (precedence of `-l`/`-p`/`-o`/`user@`, pty
//!   request, session type, the options that matter to the connection);
//! - [`getopt`]: `ssh.c`'s option loop and the checks each option makes;
//! - [`keywords`]: `readconf.c`'s keyword table and how each keyword's value is read;
//! - [`line`]: `-o` words tokenised as `process_config_line` does;
//! - [`values`]: the value checks, forwarding specifications among them;
//! - [`numbers`]: ports, intervals, sizes and C's number parsing, as misc.c has them;
//! - [`destination`]: `[user@]host`, `ssh://` URIs, `-J` hops, host and user names.
//!
//! Nothing here does I/O; the shim, the master (what shares a context) and `mitossh run`
//! (a plan's per-host options) all read ssh options through it.

mod destination;
mod getopt;
mod invocation;
mod keywords;
mod line;
mod numbers;
mod values;

#[cfg(test)]
mod tests;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

use getopt::{Parser, Run};
pub(crate) use line::glob;

/// One option, as ssh's getopt delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Opt {
    /// A flag without argument: one of 4 6 A a C f G g K k M N n q s T t V v X x Y y (and 2).
    /// Also `P`: in OpenSSH 9.2 `-P` is a deprecated flag that is ignored (it takes a
    /// tag argument only from 9.4 on).
    Flag(char),
    /// An option with an argument other than -o: B b c D E e F I i J L l m O p Q R S W w.
    Arg(char, OsString),
    /// A -o option: `key` lower-case canonical keyword, `value` after ssh's tokenisation
    /// (quotes removed), `raw` the original -o argument word (without the "-o" prefix) so it
    /// can be passed on verbatim.
    ///
    /// `key` is the canonical name of aliases (`challengeresponseauthentication` becomes
    /// `kbdinteractiveauthentication`, `identityfile2` becomes `identityfile`...), and empty
    /// for a word ssh ignores (blank, or a `#` comment). `value` is the words joined by
    /// single spaces, except for the command keywords (`ProxyCommand`, `RemoteCommand`,
    /// `LocalCommand`, `KnownHostsCommand`) and `ProxyJump`, which ssh takes verbatim from
    /// the rest of the line (quotes kept).
    Config {
        key: String,
        value: OsString,
        raw: OsString,
    },
}

/// The destination word, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    /// The user written in the destination; whether ssh uses it is [`Invocation::user`]'s call.
    pub user: Option<OsString>,
    pub host: OsString,
    /// Only `ssh://host:port` carries a port.
    pub port: Option<u16>,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invocation {
    /// All options in argv order, before and after the destination.
    pub options: Vec<Opt>,
    /// How many of `options` came before the destination: the destination's `user@` and
    /// `:port` compete with `-l`/`-p`/`-o` in argv order.
    pub options_before_destination: usize,
    /// None only when the command line legitimately has none (e.g. `ssh -V`, `ssh -Q cipher`).
    pub destination: Option<Destination>,
    /// The words after the destination and its trailing options.
    pub command: Vec<OsString>,
}

/// Whether the session asks for a pseudo-terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TtyRequest {
    /// No -t/-T/RequestTTY: a tty only for an interactive login (no command).
    Auto,
    /// `-T`, `-N`, `-W` or `RequestTTY=no`.
    No,
    /// `-t` or `RequestTTY=yes`: a tty if stdin is one.
    Yes,
    /// `-tt` or `RequestTTY=force`.
    Force,
}

/// What the session runs once connected (ssh's `SessionType`, `-s`, `-N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionType {
    /// A shell or the remote command.
    Default,
    /// No session at all (`-N`, `-W`, `SessionType=none`).
    None,
    /// The command is a subsystem name (`-s`, `SessionType=subsystem`).
    Subsystem,
}

/// An error with ssh's wording where ssh has one; Display is a single line like ssh prints.
///
/// ssh exits with status 255 for all of them; [`ArgError::report`] prints what ssh prints:
/// the message, [`USAGE`] after it, or (where ssh calls `usage()` alone) only the usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArgError {
    message: String,
    shown: Shown,
}

/// What ssh prints for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    Message,
    MessageAndUsage,
    /// The message only explains (to callers other than the shim, such as a plan's host).
    Usage,
}

impl ArgError {
    /// An error after which ssh prints its usage text.
    fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            shown: Shown::MessageAndUsage,
        }
    }

    /// An error for which ssh prints its usage text and nothing else; `why` says what
    /// was wrong, for other callers.
    fn usage_only(why: impl Into<String>) -> Self {
        Self {
            message: why.into(),
            shown: Shown::Usage,
        }
    }

    /// An error ssh reports with `fatal()` or `error()` alone.
    fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            shown: Shown::Message,
        }
    }

    /// An error `process_config_line` reports for a `-o` word.
    fn config(message: impl fmt::Display) -> Self {
        Self::fatal(format!("command-line line 0: {message}"))
    }

    /// Whether ssh prints [`USAGE`] for this error.
    pub(crate) fn shows_usage(&self) -> bool {
        self.shown != Shown::Message
    }

    /// Whether ssh prints a message for this error.
    pub(crate) fn shows_message(&self) -> bool {
        self.shown != Shown::Usage
    }

    /// Prints the error on stderr as ssh does.
    pub(crate) fn report(&self) {
        if self.shows_message() {
            eprintln!("ssh: {}", self.message);
        }
        if self.shows_usage() {
            eprintln!("{USAGE}");
        }
    }
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ArgError {}

/// ssh 9.2's usage text verbatim, without the final newline: `eprintln!("{USAGE}")`
/// prints exactly what ssh prints.
pub(crate) const USAGE: &str = "\
usage: ssh [-46AaCfGgKkMNnqsTtVvXxYy] [-B bind_interface]
           [-b bind_address] [-c cipher_spec] [-D [bind_address:]port]
           [-E log_file] [-e escape_char] [-F configfile] [-I pkcs11]
           [-i identity_file] [-J [user@]host[:port]] [-L address]
           [-l login_name] [-m mac_spec] [-O ctl_cmd] [-o option] [-p port]
           [-Q query_option] [-R address] [-S ctl_path] [-W host:port]
           [-w local_tun[:remote_tun]] destination [command [argument ...]]";

/// Parses ssh's argv (without argv[0]) the way OpenSSH 9.2's `main` does.
///
/// `-V` and `-Q` end the parse where they stand, as ssh prints and exits there: the
/// rest of argv is neither looked at nor checked.
pub(crate) fn parse(args: &[OsString]) -> Result<Invocation, ArgError> {
    let words: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let mut parser = Parser::default();

    let first = match parser.getopt(&words)? {
        Run::Exited => return Ok(parser.finish_early(None)),
        Run::Stopped(at) => at,
    };
    let Some((&dest_word, after)) = words[first..].split_first() else {
        return Err(ArgError::usage_only("no destination given"));
    };
    // ssh's test: `optind > 1 && strcmp(av[optind - 1], "--") == 0`. It also holds when
    // "--" was an option's argument (`-F -- host -p 1`): then, as in ssh, no options
    // are read after the destination.
    let terminated = first > 0 && words[first - 1] == b"--";
    let destination = parser.destination(dest_word)?;
    let options_before_destination = parser.options.len();

    // ssh restarts getopt on the words after the destination unless "--" ended the first
    // run; whatever the second run does not take is the command.
    let command_words = if !after.is_empty() && !terminated {
        match parser.getopt(after)? {
            Run::Exited => return Ok(parser.finish_early(Some(destination))),
            Run::Stopped(at) => &after[at..],
        }
    } else {
        after
    };

    let invocation = Invocation {
        options: parser.options,
        options_before_destination,
        destination: Some(destination),
        command: command_words.iter().map(|w| os(w)).collect(),
    };
    invocation.check(parser.syslog && parser.logfile)?;
    Ok(invocation)
}

impl Opt {
    /// The option as argv words again (`-o` options in their original spelling).
    pub(crate) fn to_words(&self) -> Vec<OsString> {
        match self {
            Opt::Flag(c) => vec![format!("-{c}").into()],
            Opt::Arg(c, v) => vec![format!("-{c}").into(), v.clone()],
            Opt::Config { raw, .. } => vec!["-o".into(), raw.clone()],
        }
    }
}

/// Parses option words (without a destination), keeps the options `keep` accepts and
/// renders them back as argv words. Words that do not parse come back unchanged.
pub(crate) fn filter_options(words: &[OsString], keep: impl Fn(&Opt) -> bool) -> Vec<OsString> {
    let mut parsed = words.to_vec();
    parsed.extend([OsString::from("--"), OsString::from("h")]);
    match parse(&parsed) {
        Ok(inv) => inv
            .options
            .iter()
            .filter(|o| keep(o))
            .flat_map(Opt::to_words)
            .collect(),
        Err(_) => words.to_vec(),
    }
}

fn os(bytes: &[u8]) -> OsString {
    OsStr::from_bytes(bytes).to_os_string()
}
