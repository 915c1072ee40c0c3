//! Parsing of OpenSSH's `ssh` command line: options, destination and remote command.
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

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

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

/// ssh 9.2's getopt string. `P` has no `:` here: 9.4 turned `-P` into `-P tag`.
const OPTSTRING: &[u8] = b"1246ab:c:e:fgi:kl:m:no:p:qstvxAB:CD:E:F:GI:J:KL:MNO:PQ:R:S:TVw:W:XYy";

/// Every keyword `-o` accepts (lower-case): OpenSSH 9.x's readconf table, with its
/// deprecated and unsupported entries (accepted, and ignored by ssh), Debian's additions,
/// and the three keywords added after 9.2 so that a client written for a newer 9.x is not
/// turned away here.
const KEYWORDS: &[&str] = &[
    // Deprecated (ssh logs a debug line and ignores them) and ignored ("protocol").
    "protocol",
    "cipher",
    "fallbacktorsh",
    "globalknownhostsfile2",
    "rhostsauthentication",
    "userknownhostsfile2",
    "useroaming",
    "usersh",
    "useprivilegedport",
    // Unsupported (ssh prints "Unsupported option" and goes on).
    "afstokenpassing",
    "kerberosauthentication",
    "kerberostgtpassing",
    "rsaauthentication",
    "rhostsrsaauthentication",
    "compressionlevel",
    // The live table.
    "gssapiauthentication",
    "gssapidelegatecredentials",
    "pkcs11provider",
    "smartcarddevice",
    "forwardagent",
    "forwardx11",
    "forwardx11trusted",
    "forwardx11timeout",
    "exitonforwardfailure",
    "xauthlocation",
    "gatewayports",
    "passwordauthentication",
    "kbdinteractiveauthentication",
    "kbdinteractivedevices",
    "challengeresponseauthentication",
    "skeyauthentication",
    "tisauthentication",
    "pubkeyauthentication",
    "dsaauthentication",
    "hostbasedauthentication",
    "identityfile",
    "identityfile2",
    "identitiesonly",
    "certificatefile",
    "addkeystoagent",
    "identityagent",
    "hostname",
    "hostkeyalias",
    "proxycommand",
    "port",
    "ciphers",
    "macs",
    "remoteforward",
    "localforward",
    "permitremoteopen",
    "user",
    "host",
    "match",
    "escapechar",
    "globalknownhostsfile",
    "userknownhostsfile",
    "connectionattempts",
    "batchmode",
    "checkhostip",
    "stricthostkeychecking",
    "compression",
    "tcpkeepalive",
    "keepalive",
    "numberofpasswordprompts",
    "syslogfacility",
    "loglevel",
    "logverbose",
    "dynamicforward",
    "preferredauthentications",
    "hostkeyalgorithms",
    "casignaturealgorithms",
    "bindaddress",
    "bindinterface",
    "clearallforwardings",
    "enablesshkeysign",
    "verifyhostkeydns",
    "nohostauthenticationforlocalhost",
    "rekeylimit",
    "connecttimeout",
    "addressfamily",
    "serveraliveinterval",
    "serveralivecountmax",
    "sendenv",
    "setenv",
    "controlpath",
    "controlmaster",
    "controlpersist",
    "hashknownhosts",
    "include",
    "tunnel",
    "tunneldevice",
    "localcommand",
    "permitlocalcommand",
    "remotecommand",
    "visualhostkey",
    "kexalgorithms",
    "ipqos",
    "requesttty",
    "sessiontype",
    "stdinnull",
    "forkafterauthentication",
    "proxyusefdpass",
    "canonicaldomains",
    "canonicalizefallbacklocal",
    "canonicalizehostname",
    "canonicalizemaxdots",
    "canonicalizepermittedcnames",
    "streamlocalbindmask",
    "streamlocalbindunlink",
    "revokedhostkeys",
    "fingerprinthash",
    "updatehostkeys",
    "hostbasedacceptedalgorithms",
    "hostbasedkeytypes",
    "pubkeyacceptedalgorithms",
    "pubkeyacceptedkeytypes",
    "ignoreunknown",
    "proxyjump",
    "securitykeyprovider",
    "knownhostscommand",
    "requiredrsasize",
    "enableescapecommandline",
    // Debian's patches (GSSAPI key exchange, keepalive aliases, the old blacklist).
    "gssapikeyexchange",
    "gssapiclientidentity",
    "gssapiserveridentity",
    "gssapirenewalforcesrekey",
    "gssapitrustdns",
    "gssapikexalgorithms",
    "protocolkeepalives",
    "setuptimeout",
    "useblacklistedkeys",
    // Added in 9.4-9.6; ssh 9.2 itself rejects them.
    "tag",
    "obscurekeystroketiming",
    "channeltimeout",
];

/// The -o keys that only matter to a session or to multiplexing, which
/// [`Invocation::connection_args`] leaves out.
const SESSION_KEYS: &[&str] = &[
    "requesttty",
    "remotecommand",
    "sessiontype",
    "stdinnull",
    "forkafterauthentication",
    "controlmaster",
    "controlpath",
    "controlpersist",
    "localforward",
    "remoteforward",
    "dynamicforward",
    "clearallforwardings",
    "exitonforwardfailure",
    "permitlocalcommand",
    "localcommand",
    "forwardx11",
    "forwardx11trusted",
    "forwardx11timeout",
    "forwardagent",
    "sendenv",
    "setenv",
    "escapechar",
    "tunnel",
    "tunneldevice",
    "gatewayports",
];

/// The name a keyword's ssh opcode is known by, so aliases are looked up as one.
fn canonical(keyword: &str) -> &str {
    match keyword {
        "smartcarddevice" => "pkcs11provider",
        "challengeresponseauthentication" | "skeyauthentication" | "tisauthentication" => {
            "kbdinteractiveauthentication"
        }
        "dsaauthentication" => "pubkeyauthentication",
        "identityfile2" => "identityfile",
        "keepalive" => "tcpkeepalive",
        "hostbasedkeytypes" => "hostbasedacceptedalgorithms",
        "pubkeyacceptedkeytypes" => "pubkeyacceptedalgorithms",
        // Debian maps both onto ServerAliveInterval (`ssh -G -o SetupTimeOut=5` shows it).
        "protocolkeepalives" | "setuptimeout" => "serveraliveinterval",
        other => other,
    }
}

const FLAG: &[&str] = &["true", "false", "yes", "no"];
const YES_NO_ASK: &[&str] = &["true", "false", "yes", "no", "ask"];
const STRICT_HOST_KEY: &[&str] = &["true", "false", "yes", "no", "ask", "off", "accept-new"];
const ADDRESS_FAMILY: &[&str] = &["inet", "inet6", "any"];
const CONTROL_MASTER: &[&str] = &["true", "yes", "false", "no", "auto", "ask", "autoask"];
const TUNNEL: &[&str] = &["ethernet", "point-to-point", "true", "yes", "false", "no"];
const REQUEST_TTY: &[&str] = &["true", "yes", "false", "no", "force", "auto"];
const SESSION_TYPE: &[&str] = &["none", "subsystem", "default"];
const CANONICALIZE: &[&str] = &["true", "false", "yes", "no", "always"];
const PUBKEY_AUTH: &[&str] = &["true", "false", "yes", "no", "unbound", "host-bound"];
// ssh's table has no true/false for Compression.
const COMPRESSION: &[&str] = &["yes", "no"];
const LOG_LEVELS: &[&str] = &[
    "quiet", "fatal", "error", "info", "verbose", "debug", "debug1", "debug2", "debug3",
];
const LOG_FACILITIES: &[&str] = &[
    "daemon", "user", "auth", "authpriv", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];
const DIGESTS: &[&str] = &["md5", "sha1", "sha256", "sha384", "sha512"];
const IPQOS: &[&str] = &[
    "none",
    "af11",
    "af12",
    "af13",
    "af21",
    "af22",
    "af23",
    "af31",
    "af32",
    "af33",
    "af41",
    "af42",
    "af43",
    "cs0",
    "cs1",
    "cs2",
    "cs3",
    "cs4",
    "cs5",
    "cs6",
    "cs7",
    "ef",
    "le",
    "lowdelay",
    "throughput",
    "reliability",
];

/// How `process_config_line` reads a keyword's value.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// One word out of a fixed set, case-insensitive (`parse_flag`, `parse_multistate`).
    Choice(&'static [&'static str]),
    /// One non-empty word (`parse_string` and the algorithm lists, which are not checked).
    Text,
    /// `none` or a time interval (`parse_time`).
    Time,
    /// A non-negative int (`parse_int`).
    Int,
    Port,
    /// The rest of the line verbatim (`parse_command`).
    Command,
    ProxyJump,
    /// Any number of non-empty words, `none` only alone (known-hosts files, LogVerbose).
    Files,
    CanonicalDomains,
    PermittedCnames,
    PermitRemoteOpen,
    SendEnv,
    SetEnv,
    LocalForward,
    RemoteForward,
    DynamicForward,
    TunnelDevice,
    IpQos,
    BindMask,
    FingerprintHash,
    LogLevel,
    LogFacility,
    EscapeChar,
    ControlPersist,
    AddKeysToAgent,
    RekeyLimit,
    ForwardAgent,
    IdentityAgent,
    /// Whatever follows, unchecked (deprecated, unsupported and ignored keywords).
    Words,
    /// A directive only a configuration file may hold; the message is ssh's.
    FileOnly(&'static str),
}

/// The value rules for a canonical keyword of [`KEYWORDS`].
fn kind(keyword: &str) -> Kind {
    use Kind::*;
    match keyword {
        "protocol"
        | "cipher"
        | "fallbacktorsh"
        | "globalknownhostsfile2"
        | "rhostsauthentication"
        | "userknownhostsfile2"
        | "useroaming"
        | "usersh"
        | "useprivilegedport"
        | "useblacklistedkeys"
        | "afstokenpassing"
        | "kerberosauthentication"
        | "kerberostgtpassing"
        | "rsaauthentication"
        | "rhostsrsaauthentication"
        | "compressionlevel"
        | "channeltimeout" => Words,
        "host" | "match" => FileOnly("Host directive not supported as a command-line option"),
        "include" => FileOnly("Include directive not supported as a command-line option"),
        "forwardx11"
        | "forwardx11trusted"
        | "exitonforwardfailure"
        | "gatewayports"
        | "passwordauthentication"
        | "kbdinteractiveauthentication"
        | "hostbasedauthentication"
        | "gssapiauthentication"
        | "gssapidelegatecredentials"
        | "batchmode"
        | "checkhostip"
        | "tcpkeepalive"
        | "nohostauthenticationforlocalhost"
        | "clearallforwardings"
        | "enablesshkeysign"
        | "identitiesonly"
        | "hashknownhosts"
        | "permitlocalcommand"
        | "visualhostkey"
        | "stdinnull"
        | "forkafterauthentication"
        | "proxyusefdpass"
        | "canonicalizefallbacklocal"
        | "streamlocalbindunlink"
        | "enableescapecommandline"
        | "gssapikeyexchange"
        | "gssapirenewalforcesrekey"
        | "gssapitrustdns" => Choice(FLAG),
        "pubkeyauthentication" => Choice(PUBKEY_AUTH),
        "verifyhostkeydns" | "updatehostkeys" => Choice(YES_NO_ASK),
        "stricthostkeychecking" => Choice(STRICT_HOST_KEY),
        "compression" => Choice(COMPRESSION),
        "addressfamily" => Choice(ADDRESS_FAMILY),
        "controlmaster" => Choice(CONTROL_MASTER),
        "tunnel" => Choice(TUNNEL),
        "requesttty" => Choice(REQUEST_TTY),
        "sessiontype" => Choice(SESSION_TYPE),
        "canonicalizehostname" => Choice(CANONICALIZE),
        "forwardx11timeout" | "connecttimeout" | "serveraliveinterval" => Time,
        "numberofpasswordprompts"
        | "connectionattempts"
        | "serveralivecountmax"
        | "canonicalizemaxdots"
        | "requiredrsasize" => Int,
        "port" => Port,
        "proxycommand" | "localcommand" | "remotecommand" | "knownhostscommand" => Command,
        "proxyjump" => ProxyJump,
        "globalknownhostsfile" | "userknownhostsfile" | "logverbose" => Files,
        "canonicaldomains" => CanonicalDomains,
        "canonicalizepermittedcnames" => PermittedCnames,
        "permitremoteopen" => PermitRemoteOpen,
        "sendenv" => SendEnv,
        "setenv" => SetEnv,
        "localforward" => LocalForward,
        "remoteforward" => RemoteForward,
        "dynamicforward" => DynamicForward,
        "tunneldevice" => TunnelDevice,
        "ipqos" => IpQos,
        "streamlocalbindmask" => BindMask,
        "fingerprinthash" => FingerprintHash,
        "loglevel" => LogLevel,
        "syslogfacility" => LogFacility,
        "escapechar" => EscapeChar,
        "controlpersist" => ControlPersist,
        "addkeystoagent" => AddKeysToAgent,
        "rekeylimit" => RekeyLimit,
        "forwardagent" => ForwardAgent,
        "identityagent" => IdentityAgent,
        // parse_string and the unchecked lists: user, hostname, identityfile, ciphers, ...
        _ => Text,
    }
}

/// The `-Q` queries ssh answers; the rest are answered with "Unsupported query".
fn is_query(q: &[u8]) -> bool {
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

impl Invocation {
    /// The checks ssh makes once argv is read and before it reads any file.
    fn check(&self, syslog_and_logfile: bool) -> Result<(), ArgError> {
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
enum Setting<'a> {
    Opt(&'a Opt),
    Destination(&'a Destination),
}

/// Where a getopt run ended.
enum Run {
    /// At this index of its words: the first one that is not an option (or past `--`).
    Stopped(usize),
    /// On `-V` or `-Q`, after which ssh prints and exits.
    Exited,
}

/// The parts of ssh's `options` that decide whether a later word is accepted.
#[derive(Default)]
struct Parser {
    options: Vec<Opt>,
    /// `options.port` is set: only the first -p is checked at all.
    port_set: bool,
    session: Option<SessionType>,
    mux_command: bool,
    stdio_forward: bool,
    jump_host: bool,
    proxy_command: bool,
    /// The first `IgnoreUnknown` pattern list: later unknown keywords it matches are accepted.
    ignored_unknown: Option<Vec<u8>>,
    syslog: bool,
    logfile: bool,
}

impl Parser {
    fn finish_early(self, destination: Option<Destination>) -> Invocation {
        Invocation {
            options_before_destination: self.options.len(),
            options: self.options,
            destination,
            command: Vec::new(),
        }
    }

    /// One run of OpenSSH's BSD getopt (openbsd-compat/getopt_long.c, no permutation) over
    /// `words`.
    fn getopt(&mut self, words: &[&[u8]]) -> Result<Run, ArgError> {
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

    fn option_with_arg(&mut self, c: u8, value: &[u8]) -> Result<Flow, ArgError> {
        let quoted = || String::from_utf8_lossy(value).into_owned();
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
                        quoted()
                    )));
                }
                self.options.push(Opt::Arg('Q', os(value)));
                return Ok(Flow::Exit);
            }
            b'O' => {
                if self.stdio_forward {
                    return Err(ArgError::fatal(
                        "Cannot specify multiplexing command with -W",
                    ));
                }
                if self.mux_command {
                    return Err(ArgError::fatal("Multiplexing command already specified"));
                }
                const COMMANDS: &[&[u8]] =
                    &[b"check", b"forward", b"exit", b"stop", b"cancel", b"proxy"];
                if !COMMANDS.contains(&value) {
                    return Err(ArgError::fatal("Invalid multiplex command."));
                }
                self.mux_command = true;
            }
            b'W' => {
                if self.stdio_forward {
                    return Err(ArgError::fatal("stdio forward already specified"));
                }
                if self.mux_command {
                    return Err(ArgError::fatal("Cannot specify stdio forward with -O"));
                }
                if !valid_forward(value, true, false) {
                    return Err(ArgError::fatal(format!(
                        "Bad stdio forwarding specification '{}'",
                        quoted()
                    )));
                }
                self.stdio_forward = true;
                // -W overrides rather than conflicts (it sets SESSION_TYPE_NONE outright).
                self.session = Some(SessionType::None);
            }
            b'J' => {
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
            }
            // Only the first port is looked at: `-p 22 -p bogus` is fine.
            b'p' if !self.port_set => {
                if a2port(value).is_none() {
                    return Err(ArgError::fatal(format!("Bad port '{}'", quoted())));
                }
                self.port_set = true;
            }
            b'w' if !valid_tun(value) => {
                return Err(ArgError::fatal(format!("Bad tun device '{}'", quoted())));
            }
            b'e' => {
                let ok = matches!(value, [b'^', c] if (64..128).contains(c))
                    || value.len() == 1
                    || value == b"none";
                if !ok {
                    return Err(ArgError::fatal(format!(
                        "Bad escape character '{}'.",
                        quoted()
                    )));
                }
            }
            b'L' | b'R' | b'D' => {
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
                        quoted()
                    )));
                }
            }
            b'E' => self.logfile = true,
            _ => {}
        }
        self.options.push(Opt::Arg(char::from(c), os(value)));
        Ok(Flow::Continue)
    }

    /// `process_config_line` for one `-o` word: returns the canonical key and the value.
    fn config_line(&mut self, raw: &[u8]) -> Result<(String, Vec<u8>), ArgError> {
        let Some((keyword, rest)) = split_config_line(raw) else {
            return Ok((String::new(), Vec::new()));
        };
        let shown = String::from_utf8_lossy(&keyword).into_owned();
        if rest.is_empty() {
            return Err(ArgError::config(format!(
                "no argument after keyword \"{shown}\""
            )));
        }
        let known = std::str::from_utf8(&keyword)
            .ok()
            .filter(|k| KEYWORDS.contains(k));
        let (key, kind) = match known {
            Some(k) => (canonical(k).to_owned(), kind(canonical(k))),
            None if self
                .ignored_unknown
                .as_deref()
                .is_some_and(|patterns| match_pattern_list(&keyword, patterns)) =>
            {
                (shown.clone(), Kind::Words)
            }
            None => {
                return Err(ArgError::fatal(format!(
                    "command-line: line 0: Bad configuration option: {shown}"
                )));
            }
        };
        let words = argv_split(&rest).ok_or_else(|| ArgError::config("invalid quotes"))?;
        let mut args = Words {
            words: &words,
            used: 0,
        };
        let verbatim = check_value(kind, &shown, &rest, &mut args)?;
        if args.used < words.len() {
            return Err(ArgError::config(format!(
                "keyword {shown} extra arguments at end of line"
            )));
        }
        let value = verbatim.unwrap_or_else(|| words.join(&b' '));
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
    fn destination(&mut self, word: &[u8]) -> Result<Destination, ArgError> {
        let shown = || String::from_utf8_lossy(word).into_owned();
        match parse_ssh_uri(word) {
            Uri::Invalid => Err(ArgError::usage_only(format!(
                "invalid ssh:// destination '{}'",
                shown()
            ))),
            Uri::Valid { user, host, port } => {
                if port.is_some() {
                    self.port_set = true;
                }
                Ok(Destination {
                    user: user.map(|u| os(&u)),
                    host: os(&host),
                    port,
                })
            }
            Uri::Plain => match word.iter().rposition(|&b| b == b'@') {
                Some(0) => Err(ArgError::usage_only(format!(
                    "empty user name in '{}'",
                    shown()
                ))),
                Some(at) => Ok(Destination {
                    user: Some(os(&word[..at])),
                    host: os(&word[at + 1..]),
                    port: None,
                }),
                None => Ok(Destination {
                    user: None,
                    host: os(word),
                    port: None,
                }),
            },
        }
    }
}

#[derive(Clone, Copy)]
enum Flow {
    Continue,
    Exit,
}

/// `Some(takes_argument)` for a letter of [`OPTSTRING`].
fn option_takes_arg(c: u8) -> Option<bool> {
    if c == b':' {
        return None;
    }
    let at = OPTSTRING.iter().position(|&b| b == c)?;
    Some(OPTSTRING.get(at + 1) == Some(&b':'))
}

fn show_byte(c: u8) -> String {
    if c.is_ascii_graphic() || c == b' ' {
        char::from(c).to_string()
    } else {
        format!("\\x{c:02x}")
    }
}

fn os(bytes: &[u8]) -> OsString {
    OsStr::from_bytes(bytes).to_os_string()
}

/// The words of a -o value, handed out as ssh's `argv_next` does.
struct Words<'a> {
    words: &'a [Vec<u8>],
    used: usize,
}

impl<'a> Words<'a> {
    fn next(&mut self) -> Option<&'a [u8]> {
        let word = self.words.get(self.used)?;
        self.used += 1;
        Some(word)
    }

    fn peek(&self) -> Option<&'a [u8]> {
        self.words.get(self.used).map(Vec::as_slice)
    }

    fn left(&self) -> usize {
        self.words.len() - self.used
    }

    fn consume_all(&mut self) {
        self.used = self.words.len();
    }

    /// The next word if there is one and it is not empty.
    fn required(&mut self) -> Option<&'a [u8]> {
        self.next().filter(|w| !w.is_empty())
    }
}

/// Checks a -o value as `process_config_line`'s switch does. Returns the value to record
/// when ssh takes it verbatim from the line rather than as words.
fn check_value(
    kind: Kind,
    keyword: &str,
    rest: &[u8],
    args: &mut Words<'_>,
) -> Result<Option<Vec<u8>>, ArgError> {
    let lossy = |w: &[u8]| String::from_utf8_lossy(w).into_owned();
    let missing = || ArgError::config("Missing argument.");
    match kind {
        Kind::Choice(choices) => {
            let arg = args
                .required()
                .ok_or_else(|| ArgError::config("missing argument."))?;
            if !one_of(arg, choices) {
                return Err(ArgError::config(format!(
                    "unsupported option \"{}\".",
                    lossy(arg)
                )));
            }
        }
        Kind::Text => {
            args.required().ok_or_else(missing)?;
        }
        Kind::Time => check_time(args.next())?,
        Kind::Int => {
            if let Err(e) = atoi(args.next()) {
                return Err(ArgError::config(format!("integer value {e}.")));
            }
        }
        Kind::Port => {
            let arg = args.required().ok_or_else(missing)?;
            if a2port(arg).is_none() {
                return Err(ArgError::config(format!("Bad port '{}'.", lossy(arg))));
            }
        }
        Kind::Command | Kind::ProxyJump => {
            args.consume_all();
            let start = rest
                .iter()
                .position(|b| !b" \t\r\n=".contains(b))
                .unwrap_or(rest.len());
            let verbatim = rest[start..].to_vec();
            if matches!(kind, Kind::ProxyJump) && !valid_jump(&verbatim) {
                return Err(ArgError::config(format!(
                    "Invalid ProxyJump \"{}\"",
                    lossy(&verbatim)
                )));
            }
            return Ok(Some(verbatim));
        }
        Kind::Files | Kind::CanonicalDomains => {
            let mut seen = 0;
            while let Some(arg) = args.next() {
                if arg.is_empty() {
                    return Err(ArgError::config(format!(
                        "keyword {keyword} empty argument"
                    )));
                }
                if arg.eq_ignore_ascii_case(b"none") && (seen > 0 || args.left() > 0) {
                    return Err(ArgError::config(format!(
                        "keyword {keyword} \"none\" argument must appear alone."
                    )));
                }
                seen += 1;
                if matches!(kind, Kind::CanonicalDomains) {
                    valid_domain(arg).map_err(ArgError::config)?;
                }
            }
        }
        Kind::PermittedCnames => {
            let mut seen = 0;
            while let Some(arg) = args.next() {
                if arg.eq_ignore_ascii_case(b"none") {
                    if seen > 0 || args.left() > 0 {
                        return Err(ArgError::config(format!(
                            "keyword {keyword} \"none\" argument must appear alone."
                        )));
                    }
                } else if arg != b"*" {
                    let ok = arg
                        .iter()
                        .position(|&b| b == b':')
                        .is_some_and(|c| c + 1 < arg.len());
                    if !ok {
                        let lower = arg.to_ascii_lowercase();
                        return Err(ArgError::config(format!(
                            "Invalid permitted CNAME \"{}\"",
                            lossy(&lower)
                        )));
                    }
                }
                seen += 1;
            }
        }
        Kind::PermitRemoteOpen => {
            let mut seen = 0;
            while let Some(arg) = args.next() {
                if arg.eq_ignore_ascii_case(b"none") || arg.eq_ignore_ascii_case(b"any") {
                    if seen > 0 || args.left() > 0 {
                        return Err(ArgError::config(format!(
                            "keyword {keyword} \"{}\" argument must appear alone.",
                            lossy(arg)
                        )));
                    }
                } else {
                    let Some((_, delim, port)) = hpdelim2(arg).filter(|h| h.1 != Some(b'/')) else {
                        return Err(ArgError::config("missing host in permitremoteopen"));
                    };
                    let port_ok = delim.is_some() && (port == b"*" || a2port(port).is_some());
                    if !port_ok {
                        return Err(ArgError::config("bad port number in permitremoteopen"));
                    }
                }
                seen += 1;
            }
            if seen == 0 {
                return Err(ArgError::config("missing permitremoteopen specification"));
            }
        }
        Kind::SendEnv => {
            while let Some(arg) = args.next() {
                if arg.is_empty() || arg.contains(&b'=') {
                    return Err(ArgError::config("Invalid environment name."));
                }
            }
        }
        Kind::SetEnv => {
            while let Some(arg) = args.next() {
                if !arg.contains(&b'=') {
                    return Err(ArgError::config("Invalid SetEnv."));
                }
            }
        }
        Kind::LocalForward | Kind::RemoteForward | Kind::DynamicForward => {
            let listen = args.required().ok_or_else(missing)?;
            let remote = matches!(kind, Kind::RemoteForward);
            let target = match kind {
                Kind::DynamicForward => None,
                _ => args.required(),
            };
            if target.is_none() && matches!(kind, Kind::LocalForward) {
                return Err(ArgError::config("Missing target argument."));
            }
            // ssh joins the two words with ':' into a 256-byte buffer.
            let mut spec = listen.to_vec();
            if let Some(target) = target {
                spec.push(b':');
                spec.extend_from_slice(target);
            }
            spec.truncate(255);
            if !valid_forward(&spec, target.is_none(), remote) {
                return Err(ArgError::config("Bad forwarding specification."));
            }
        }
        Kind::TunnelDevice => {
            let arg = args.required().ok_or_else(missing)?;
            if !valid_tun(arg) {
                return Err(ArgError::config("Bad tun device."));
            }
        }
        Kind::IpQos => {
            let first = args.next();
            for (n, arg) in [first, args.next()].into_iter().enumerate() {
                // The second value is optional; the first is not.
                if n == 1 && arg.is_none() {
                    break;
                }
                if !arg.is_some_and(valid_ipqos) {
                    let shown = arg.map_or_else(|| "(null)".to_owned(), lossy);
                    return Err(ArgError::config(format!("Bad IPQoS value: {shown}")));
                }
            }
        }
        Kind::BindMask => {
            let arg = args
                .required()
                .ok_or_else(|| ArgError::config("Missing StreamLocalBindMask argument."))?;
            // strtol(arg, &end, 8): trailing garbage is allowed, no digits is not.
            if !matches!(strtol(arg, 8), Some((mask, _)) if (0..=0o777).contains(&mask)) {
                return Err(ArgError::config("Bad mask."));
            }
        }
        Kind::FingerprintHash => {
            let arg = args.required().ok_or_else(missing)?;
            if !one_of(arg, DIGESTS) {
                return Err(ArgError::config(format!(
                    "Invalid hash algorithm \"{}\".",
                    lossy(arg)
                )));
            }
        }
        Kind::LogLevel | Kind::LogFacility => {
            let arg = args.next();
            let (table, what) = match kind {
                Kind::LogLevel => (LOG_LEVELS, "level"),
                _ => (LOG_FACILITIES, "facility"),
            };
            if !arg.is_some_and(|a| one_of(a, table)) {
                let shown = arg.map_or_else(|| "<NONE>".to_owned(), lossy);
                return Err(ArgError::config(format!(
                    "unsupported log {what} '{shown}'"
                )));
            }
        }
        Kind::EscapeChar => {
            let arg = args.required().ok_or_else(missing)?;
            let ok = arg == b"none"
                || arg.len() == 1
                || matches!(arg, [b'^', c] if (64..128).contains(c));
            if !ok {
                return Err(ArgError::config("Bad escape character."));
            }
        }
        Kind::ControlPersist => {
            let arg = args
                .required()
                .ok_or_else(|| ArgError::config("Missing ControlPersist argument."))?;
            // Case-sensitive here, unlike the multistate keywords.
            let word = matches!(arg, b"yes" | b"no" | b"true" | b"false");
            if !word && convtime(arg).is_none() {
                return Err(ArgError::config("Bad ControlPersist argument."));
            }
        }
        Kind::AddKeysToAgent => {
            const CHOICES: &[&str] = &["true", "false", "yes", "no", "ask", "confirm"];
            let arg = args
                .required()
                .ok_or_else(|| ArgError::config("missing argument."))?;
            let lifetime = args.next();
            let choice = one_of(arg, CHOICES);
            let ok = match (choice, lifetime) {
                (true, None) => true,
                (true, Some(t)) if arg.eq_ignore_ascii_case(b"confirm") => {
                    if convtime(t).is_none() {
                        return Err(ArgError::config("invalid time value."));
                    }
                    true
                }
                // A bare lifetime means "yes, for that long".
                (false, None) => convtime(arg).is_some(),
                _ => false,
            };
            if !ok {
                return Err(ArgError::config("unsupported option"));
            }
        }
        Kind::RekeyLimit => {
            let arg = args.required().ok_or_else(missing)?;
            if arg != b"default" {
                let limit = scan_scaled(arg)
                    .map_err(|e| ArgError::config(format!("Bad number '{}': {e}", lossy(arg))))?;
                if limit != 0 && limit < 16 {
                    return Err(ArgError::config("RekeyLimit too small"));
                }
            }
            match args.peek() {
                Some(b"none") => {
                    args.next();
                }
                Some(_) => check_time(args.next())?,
                None => {}
            }
        }
        Kind::ForwardAgent | Kind::IdentityAgent => {
            let arg = match kind {
                Kind::ForwardAgent => args
                    .required()
                    .ok_or_else(|| ArgError::config("missing argument."))?,
                _ => args.required().ok_or_else(missing)?,
            };
            let is_flag = matches!(kind, Kind::ForwardAgent) && one_of(arg, FLAG);
            // A socket path; the legacy "$NAME" form must name a variable. (Whether a
            // "${NAME}" is set is up to the environment and not checked here.)
            if !is_flag && arg.first() == Some(&b'$') && arg.get(1) != Some(&b'{') {
                let name = &arg[1..];
                let valid = !name.is_empty()
                    && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid {
                    return Err(ArgError::config(format!(
                        "Invalid environment name {}.",
                        lossy(arg)
                    )));
                }
            }
        }
        Kind::Words => args.consume_all(),
        Kind::FileOnly(message) => return Err(ArgError::fatal(message)),
    }
    Ok(None)
}

fn one_of(word: &[u8], choices: &[&str]) -> bool {
    choices
        .iter()
        .any(|c| c.as_bytes().eq_ignore_ascii_case(word))
}

/// `parse_time`: "none" or a `convtime` interval.
fn check_time(arg: Option<&[u8]>) -> Result<(), ArgError> {
    let arg = arg
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ArgError::config("missing time value."))?;
    if arg != b"none" && convtime(arg).is_none() {
        return Err(ArgError::config("invalid time value."));
    }
    Ok(())
}

/// Splits a -o word into its lower-cased keyword and the rest of the line, as the start of
/// `process_config_line` does; `None` for a word ssh silently ignores (blank, comment, or an
/// unterminated quote in the keyword).
fn split_config_line(raw: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    // Trailing whitespace goes, except at index 0.
    let mut len = raw.len();
    while len > 1 && b" \t\r\n\x0c".contains(&raw[len - 1]) {
        len -= 1;
    }
    let mut line = raw[..len].to_vec();
    let mut cursor = Some(0);
    let mut keyword = strdelim(&mut line, &mut cursor)?;
    if keyword.is_empty() {
        keyword = strdelim(&mut line, &mut cursor)?;
    }
    if keyword.is_empty() || keyword[0] == b'\n' || keyword[0] == b'#' {
        return None;
    }
    keyword.make_ascii_lowercase();
    let rest = cursor.map_or(&[][..], |at| &line[at..]);
    let start = rest
        .iter()
        .position(|b| !b" \t\r\n".contains(b))
        .unwrap_or(rest.len());
    Some((keyword, rest[start..].to_vec()))
}

/// misc.c `strdelim`: the next token of `line` from `cursor`, split at whitespace, a quote
/// or one `=`. `cursor` becomes `None` at the end of the line. Returns `None` for an
/// unterminated quote. A quote is removed from `line` itself, as ssh's memmove does.
fn strdelim(line: &mut Vec<u8>, cursor: &mut Option<usize>) -> Option<Vec<u8>> {
    const WS: &[u8] = b" \t\r\n";
    let start = (*cursor)?;
    let span_ws = |line: &[u8], from: usize| {
        from + line
            .get(from..)
            .map_or(0, |s| s.iter().take_while(|b| WS.contains(b)).count())
    };
    let Some(delim) = line[start..]
        .iter()
        .position(|b| WS.contains(b) || *b == b'"' || *b == b'=')
    else {
        *cursor = None;
        return Some(line[start..].to_vec());
    };
    let at = start + delim;
    if line[at] == b'"' {
        line.remove(at);
        let close = at + line[at..].iter().position(|&b| b == b'"')?;
        let token = line[start..close].to_vec();
        *cursor = Some(span_ws(line, close + 1));
        return Some(token);
    }
    let had_equals = line[at] == b'=';
    let token = line[start..at].to_vec();
    let mut next = span_ws(line, at + 1);
    // Only one '=' may separate keyword and value ("Port = 22", not "Port==22").
    if !had_equals && line.get(next) == Some(&b'=') {
        next = span_ws(line, next + 1);
    }
    *cursor = Some(next);
    Some(token)
}

/// misc.c `argv_split` with comments on: words split at spaces and tabs, `"` and `'` quote,
/// a backslash escapes a quote, a backslash or (outside quotes) a space; an unquoted `#`
/// starting a word ends the line. `None` for an unterminated quote.
fn argv_split(s: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut words = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b' ' || s[i] == b'\t' {
            i += 1;
            continue;
        }
        if s[i] == b'#' {
            break;
        }
        let mut word = Vec::new();
        let mut quote = None;
        while let Some(&c) = s.get(i) {
            match (c, quote) {
                (b'\\', _) => match s.get(i + 1) {
                    Some(&n)
                        if n == b'\''
                            || n == b'"'
                            || n == b'\\'
                            || (n == b' ' && quote.is_none()) =>
                    {
                        word.push(n);
                        i += 1;
                    }
                    _ => word.push(c),
                },
                (b' ' | b'\t', None) => break,
                (b'"' | b'\'', None) => quote = Some(c),
                (_, Some(q)) if c == q => quote = None,
                _ => word.push(c),
            }
            i += 1;
        }
        if i >= s.len() && quote.is_some() {
            return None;
        }
        words.push(word);
        i += 1;
    }
    Some(words)
}

/// misc.c `match_pattern_list` with `dolower`: comma-separated `*`/`?` globs, `!` negates.
fn match_pattern_list(s: &[u8], patterns: &[u8]) -> bool {
    let mut positive = false;
    for sub in patterns.split(|&b| b == b',') {
        let (negated, sub) = match sub.strip_prefix(b"!") {
            Some(rest) => (true, rest),
            None => (false, sub),
        };
        // ssh gives up on (fails to match) a sub-pattern of 1023 bytes or more.
        if sub.len() >= 1023 {
            return false;
        }
        if glob(s, &sub.to_ascii_lowercase()) {
            if negated {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// `*` and `?` glob, iteratively so that no pattern can make it exponential.
fn glob(s: &[u8], pattern: &[u8]) -> bool {
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match pattern.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&p) if p == b'?' || p == s[si] => {
                si += 1;
                pi += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    pattern[pi.min(pattern.len())..].iter().all(|&b| b == b'*')
}

/// The result of misc.c `parse_uri("ssh", ...)` as `parse_ssh_uri` uses it.
enum Uri {
    /// Not an `ssh://` word: a plain `[user@]host`.
    Plain,
    Invalid,
    Valid {
        user: Option<Vec<u8>>,
        host: Vec<u8>,
        port: Option<u16>,
    },
}

fn parse_ssh_uri(word: &[u8]) -> Uri {
    let Some(mut rest) = word.strip_prefix(b"ssh://") else {
        return Uri::Plain;
    };
    let mut user = None;
    // The *first* '@' here, unlike a plain destination.
    if let Some(at) = rest.iter().position(|&b| b == b'@') {
        let info = &rest[..at];
        // Connection parameters after ';' are ignored.
        let name = info.split(|&b| b == b';').next().unwrap_or(info);
        if name.is_empty() {
            return Uri::Invalid;
        }
        let Some(name) = urldecode(name) else {
            return Uri::Invalid;
        };
        user = Some(name);
        rest = &rest[at + 1..];
    }
    let Some((host, delim, tail)) = hpdelim2(rest) else {
        return Uri::Invalid;
    };
    if host.is_empty() {
        return Uri::Invalid;
    }
    let mut host = clean_hostname(host).to_vec();
    // valid_domain: so no IPv6 literal, even bracketed, gets through.
    if valid_domain(&host).is_err() {
        return Uri::Invalid;
    }
    if host.last() == Some(&b'.') {
        host.pop();
    }
    let mut port = None;
    let mut path = tail;
    if delim == Some(b':') && !tail.is_empty() {
        let (number, after) = match tail.iter().position(|&b| b == b'/') {
            Some(slash) => (&tail[..slash], &tail[slash + 1..]),
            None => (tail, &[][..]),
        };
        let Some(p) = a2port(number) else {
            return Uri::Invalid;
        };
        port = Some(p);
        path = after;
    }
    // A path is not allowed (a trailing '/' alone is).
    if !path.is_empty() {
        return Uri::Invalid;
    }
    Uri::Valid { user, host, port }
}

/// misc.c `urldecode` (`+` is a space); a decoded NUL ends the string, as in C.
fn urldecode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&c) = s.get(i) {
        match c {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                let text = std::str::from_utf8(hex).ok()?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 2;
            }
            _ => out.push(c),
        }
        i += 1;
    }
    if let Some(nul) = out.iter().position(|&b| b == 0) {
        out.truncate(nul);
    }
    Some(out)
}

/// misc.c `hpdelim2`: splits `host[:rest]`, `host[/rest]` or `[v6][:rest]`. Returns the host
/// part, the delimiter found and what follows it.
fn hpdelim2(s: &[u8]) -> Option<(&[u8], Option<u8>, &[u8])> {
    let end = if s.first() == Some(&b'[') {
        s.iter().position(|&b| b == b']')? + 1
    } else {
        s.iter()
            .position(|&b| b == b':' || b == b'/')
            .unwrap_or(s.len())
    };
    match s.get(end) {
        None => Some((s, None, &[])),
        Some(&d @ (b':' | b'/')) => Some((&s[..end], Some(d), &s[end + 1..])),
        Some(_) => None,
    }
}

fn clean_hostname(host: &[u8]) -> &[u8] {
    match host {
        [b'[', inner @ .., b']'] => inner,
        _ => host,
    }
}

/// misc.c `valid_domain` without lower-casing; the error is ssh's text (first problem met).
fn valid_domain(name: &[u8]) -> Result<(), String> {
    let shown = || String::from_utf8_lossy(&name[..name.len().min(100)]).into_owned();
    let Some(first) = name.first() else {
        return Err("empty domain name".to_owned());
    };
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "domain name \"{}\" starts with invalid character",
            shown()
        ));
    }
    let mut last = 0;
    for &c in name {
        if last == b'.' && c == b'.' {
            return Err(format!(
                "domain name \"{}\" contains consecutive separators",
                shown()
            ));
        }
        if !(c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'_') {
            return Err(format!(
                "domain name \"{}\" contains invalid characters",
                shown()
            ));
        }
        last = c;
    }
    Ok(())
}

/// readconf.c `parse_jump`'s verdict on a `-J`/`ProxyJump` value given on the command line:
/// `none`, or comma separated `[user@]host[:port]` or `ssh://` hops whose host and user
/// names pass Debian's backport of 10.3's checks.
fn valid_jump(s: &[u8]) -> bool {
    if s.eq_ignore_ascii_case(b"none") {
        return true;
    }
    let mut hops = s.split(|&b| b == b'#').next().unwrap_or(s);
    // ssh's rtrim() clears every whitespace byte after index 0, so the value ends at the
    // first of them.
    if let Some(ws) = hops
        .iter()
        .skip(1)
        .position(|b| b" \t\n\x0b\x0c\r".contains(b))
    {
        hops = &hops[..ws + 1];
    }
    hops.split(|&b| b == b',').all(|hop| {
        let parsed = match parse_ssh_uri(hop) {
            Uri::Valid { user, host, .. } => Some((user, host)),
            Uri::Invalid => None,
            Uri::Plain => user_host_port(hop),
        };
        parsed.is_some_and(|(user, host)| {
            valid_hostname(&host) && user.is_none_or(|u| valid_ruser(&u))
        })
    })
}

/// misc.c `parse_user_host_port`: the user and host of `[user@]host[:port]`.
fn user_host_port(s: &[u8]) -> Option<(Option<Vec<u8>>, Vec<u8>)> {
    let (user, hostport) = match s.iter().rposition(|&b| b == b'@') {
        Some(0) => return None,
        Some(at) => (Some(s[..at].to_vec()), &s[at + 1..]),
        None => (None, s),
    };
    match hpdelim2(hostport) {
        Some((host, delim, port)) if !host.is_empty() && delim != Some(b'/') => (port.is_empty()
            || a2port(port).is_some())
        .then(|| (user, clean_hostname(host).to_vec())),
        _ => None,
    }
}

/// misc.c `a2port` as callers use it: 1-65535. Service names (getservbyname) are not
/// looked up.
fn a2port(s: &[u8]) -> Option<u16> {
    a2port_raw(s)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p > 0)
}

/// misc.c `a2port` itself: 0 is a port here (a remote forward's "allocate one").
fn a2port_raw(s: &[u8]) -> Option<i64> {
    strtonum(s, 0, 65535).ok()
}

/// readconf.c `parse_forward`'s verdict on a forwarding specification: `dynamic` for -D,
/// -W and one-argument RemoteForward, `remote` for -R.
///
/// ssh first expands `${VAR}` from its environment; a specification holding `${` is
/// accepted unchecked.
fn valid_forward(spec: &[u8], dynamic: bool, remote: bool) -> bool {
    // Longest host name (NI_MAXHOST) and unix socket path (sun_path) ssh accepts.
    const MAX_HOST: usize = 1025;
    const MAX_PATH: usize = 108;
    if spec.windows(2).any(|w| w == b"${") {
        return true;
    }
    let start = spec
        .iter()
        .take_while(|b| b" \t\n\x0b\x0c\r".contains(b))
        .count();
    let Some(fields) = forward_fields(&spec[start..]) else {
        return false;
    };
    let port = |f: &(Vec<u8>, bool)| a2port_raw(&f.0).unwrap_or(-1);
    // The listen port (-2 for a socket path, ssh's PORT_STREAMLOCAL), the connect port (0
    // when there is none), and which fields ssh then takes as paths and as host names.
    type Field = (Vec<u8>, bool);
    let (listen, connect, paths, hosts): (i64, i64, Vec<&Field>, Vec<&Field>) =
        match fields.as_slice() {
            [a] if a.1 => (-2, 0, vec![a], vec![]),
            [a] => (port(a), 0, vec![], vec![]),
            [a, b] if a.1 && b.1 => (-2, -2, vec![a, b], vec![]),
            [a, b] if b.1 => (port(a), -2, vec![b], vec![]),
            [a, b] => (port(b), 0, vec![], vec![a]),
            [a, b, c] if a.1 => (-2, port(c), vec![a], vec![b]),
            [a, b, c] if c.1 => (port(b), -2, vec![c], vec![a]),
            [a, b, c] => (port(a), port(c), vec![], vec![b]),
            [a, b, c, d] => (port(b), port(d), vec![], vec![a, c]),
            _ => return false,
        };
    let (listen_path, connect_path) = (listen == -2, connect == -2);
    let n = fields.len();
    if dynamic {
        if n > 2 {
            return false;
        }
    } else {
        if n < 3 && !listen_path && !connect_path {
            return false;
        }
        if connect <= 0 && !connect_path {
            return false;
        }
    }
    if (listen < 0 && !listen_path) || (!remote && listen == 0) {
        return false;
    }
    paths.iter().all(|f| f.0.len() < MAX_PATH) && hosts.iter().all(|f| f.0.len() < MAX_HOST)
}

/// readconf.c `parse_fwd_field` run up to four times: the fields and whether each looks
/// like a path. `None` where ssh finds garbage.
fn forward_fields(mut s: &[u8]) -> Option<Vec<(Vec<u8>, bool)>> {
    let mut fields = Vec::new();
    while !s.is_empty() {
        if fields.len() == 4 {
            return None;
        }
        if let Some(inner) = s.strip_prefix(b"[") {
            // A bracketed field is literal, and must be followed by ':' or the end.
            let close = inner.iter().position(|&b| b == b']')?;
            match inner.get(close + 1) {
                None => s = &[],
                Some(b':') => s = &inner[close + 2..],
                Some(_) => return None,
            }
            let field = &inner[..close];
            fields.push((field.to_vec(), field.contains(&b'/')));
            continue;
        }
        let mut field = Vec::new();
        let mut is_path = false;
        let mut i = 0;
        let mut ended_by_colon = false;
        while let Some(&c) = s.get(i) {
            match c {
                // A backslash makes the next byte literal (and may not end the field).
                b'\\' => {
                    let &next = s.get(i + 1)?;
                    field.push(next);
                    i += 1;
                }
                b'/' => {
                    is_path = true;
                    field.push(c);
                }
                b':' => {
                    ended_by_colon = true;
                    break;
                }
                _ => field.push(c),
            }
            i += 1;
        }
        fields.push((field, is_path));
        s = if ended_by_colon { &s[i + 1..] } else { &[] };
    }
    Some(fields)
}

/// misc.c `a2tun`: `any`, a number, or `local:remote` of those.
fn valid_tun(s: &[u8]) -> bool {
    let one = |s: &[u8]| s.eq_ignore_ascii_case(b"any") || strtonum(s, 0, 0x7fff_fffd).is_ok();
    match s.iter().position(|&b| b == b':') {
        Some(colon) => one(&s[..colon]) && one(&s[colon + 1..]),
        None => one(s),
    }
}

fn valid_ipqos(s: &[u8]) -> bool {
    if one_of(s, IPQOS) {
        return true;
    }
    // strtol(cp, &ep, 0) over all of it: whitespace, sign, then decimal, 0x hex or 0 octal.
    let start = s
        .iter()
        .take_while(|b| b" \t\n\x0b\x0c\r".contains(b))
        .count();
    let (negative, body) = match &s[start..] {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        rest => (false, rest),
    };
    let (radix, digits) = match body {
        [b'0', b'x' | b'X', rest @ ..] if rest.first().is_some_and(u8::is_ascii_hexdigit) => {
            (16, rest)
        }
        [b'0', rest @ ..] if !rest.is_empty() => (8, rest),
        _ => (10, body),
    };
    if digits.first().is_some_and(|b| !b.is_ascii_alphanumeric()) {
        return false;
    }
    match strtol(digits, radix) {
        Some((v, n)) if n == digits.len() => (0..=255).contains(&v) && !(negative && v != 0),
        _ => false,
    }
}

/// C `strtol`: optional leading whitespace and sign, then digits of `radix`. Returns the
/// value (saturated) and how many bytes were used, or `None` when there are no digits.
fn strtol(s: &[u8], radix: u32) -> Option<(i64, usize)> {
    let mut i = s
        .iter()
        .take_while(|b| b" \t\n\x0b\x0c\r".contains(b))
        .count();
    let negative = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits = s[i..]
        .iter()
        .take_while(|b| char::from(**b).is_digit(radix))
        .count();
    if digits == 0 {
        return None;
    }
    let mut value: i64 = 0;
    for &b in &s[i..i + digits] {
        let d = i64::from(char::from(b).to_digit(radix).unwrap_or(0));
        value = value.saturating_mul(i64::from(radix)).saturating_add(d);
    }
    Some((if negative { -value } else { value }, i + digits))
}

/// OpenBSD `strtonum` (base 10, whole string), with its error strings.
fn strtonum(s: &[u8], min: i64, max: i64) -> Result<i64, &'static str> {
    match strtol(s, 10) {
        Some((v, used)) if used == s.len() => {
            if v < min {
                Err("too small")
            } else if v > max {
                Err("too large")
            } else {
                Ok(v)
            }
        }
        _ => Err("invalid"),
    }
}

/// misc.c `atoi_err`: an int from 0 to INT_MAX.
fn atoi(arg: Option<&[u8]>) -> Result<i64, &'static str> {
    match arg {
        None | Some(b"") => Err("missing"),
        Some(s) => strtonum(s, 0, i64::from(i32::MAX)),
    }
}

/// misc.c `convtime`: `1h30m`-style intervals up to INT_MAX seconds.
fn convtime(s: &[u8]) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let (secs, used) = strtol(rest, 10)?;
        if secs < 0 {
            return None;
        }
        let (multiplier, unit_len) = match rest.get(used) {
            None => (1, 0),
            Some(b's' | b'S') => (1, 1),
            Some(b'm' | b'M') => (60, 1),
            Some(b'h' | b'H') => (3600, 1),
            Some(b'd' | b'D') => (86400, 1),
            Some(b'w' | b'W') => (604_800, 1),
            Some(_) => return None,
        };
        let max = i64::from(i32::MAX);
        if secs > max / multiplier {
            return None;
        }
        total += secs * multiplier;
        if total > max {
            return None;
        }
        rest = &rest[used + unit_len..];
    }
    Some(total)
}

/// fmt_scaled.c `scan_scaled` (RekeyLimit): a decimal number with an optional
/// B/K/M/G/T/P/E suffix. The error is the strerror text ssh prints.
fn scan_scaled(s: &[u8]) -> Result<i128, &'static str> {
    const EINVAL: &str = "Invalid argument";
    const ERANGE: &str = "Numerical result out of range";
    let mut i = s
        .iter()
        .take_while(|b| b" \t\n\x0b\x0c\r".contains(b))
        .count();
    let mut sign = 0i128;
    while let Some(&c @ (b'-' | b'+')) = s.get(i) {
        if sign != 0 {
            return Err(EINVAL);
        }
        sign = if c == b'-' { -1 } else { 1 };
        i += 1;
    }
    let (mut whole, mut fraction, mut fraction_digits, mut digits) = (0i128, 0i128, 0u32, 0);
    let mut in_fraction = false;
    while let Some(&c) = s.get(i).filter(|c| c.is_ascii_digit() || **c == b'.') {
        i += 1;
        if c == b'.' {
            if in_fraction {
                return Err(EINVAL);
            }
            in_fraction = true;
            continue;
        }
        let d = i128::from(c - b'0');
        if in_fraction {
            if fraction_digits < 18 {
                fraction = fraction * 10 + d;
                fraction_digits += 1;
            }
        } else {
            digits += 1;
            whole = whole * 10 + d;
            if digits >= 21 || whole > i128::from(i64::MAX) {
                return Err(ERANGE);
            }
        }
    }
    if sign != 0 {
        whole *= sign;
    }
    let Some(&unit) = s.get(i) else {
        return Ok(whole);
    };
    let scale: i128 = match unit.to_ascii_uppercase() {
        b'B' => 1,
        b'K' => 1 << 10,
        b'M' => 1 << 20,
        b'G' => 1 << 30,
        b'T' => 1 << 40,
        b'P' => 1 << 50,
        b'E' => 1 << 60,
        _ => return Err(EINVAL),
    };
    if s.get(i + 1).is_some_and(u8::is_ascii_alphanumeric) {
        return Err(EINVAL);
    }
    let scaled = whole * scale;
    if scaled > i128::from(i64::MAX) || scaled < i128::from(i64::MIN) {
        return Err(ERANGE);
    }
    let fraction = fraction * scale / 10i128.pow(fraction_digits);
    Ok(if sign == -1 {
        scaled - fraction
    } else {
        scaled + fraction
    })
}

/// `ssh_valid_hostname`, which Debian backported from 10.3: no shell metacharacters, comma,
/// whitespace or control characters, and no leading '-'.
fn valid_hostname(s: &[u8]) -> bool {
    s.first() != Some(&b'-')
        && !s
            .iter()
            .any(|&c| b"'`\"$\\;&<>|(){},".contains(&c) || c == b' ' || c.is_ascii_control())
}

/// `ssh_valid_ruser`, likewise backported.
fn valid_ruser(s: &[u8]) -> bool {
    if s.first() == Some(&b'-') {
        return false;
    }
    s.iter().enumerate().all(|(i, &c)| {
        let next = s.get(i + 1);
        let bad = c.is_ascii_control()
            || b"'`\";&<>|(){}".contains(&c)
            // No '-' after whitespace, no '\\' at the end.
            || (c == b' ' && next == Some(&b'-'))
            || (c == b'\\' && next.is_none());
        !bad
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::Strategy;

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
            glob(b"abc", b"a*c")
                && glob(b"abc", b"*")
                && glob(b"abc", b"a?c")
                && !glob(b"abc", b"a?")
        );
        assert!(!glob(&[b'a'; 64], &b"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b"[..]));
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

    // ---- Against the real thing ----

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
                let address = host.contains([':', '%'])
                    || host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
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
            "User", "USER", "Port", "port", "=", "==", " ", "  ", "\t", "\"", "'", "\\", "#",
            "bob", "22", "a b", "\\ ", "\\\"", "\\'", "=bob", "x#y", "2\"2\"", "'al ice'",
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
}
