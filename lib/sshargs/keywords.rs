//! `readconf.c`'s keyword table: every keyword `-o` accepts, the aliases, and how each
//! keyword's value is read ([`Kind`]).

/// Every keyword `-o` accepts (lower-case): OpenSSH 9.x's readconf table, with its
/// deprecated and unsupported entries (accepted, and ignored by ssh), Debian's additions,
/// and the three keywords added after 9.2 so that a client written for a newer 9.x is not
/// turned away here.
pub(super) const KEYWORDS: &[&str] = &[
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
pub(super) const SESSION_KEYS: &[&str] = &[
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
pub(super) fn canonical(keyword: &str) -> &str {
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

pub(super) const FLAG: &[&str] = &["true", "false", "yes", "no"];
pub(super) const YES_NO_ASK: &[&str] = &["true", "false", "yes", "no", "ask"];
pub(super) const STRICT_HOST_KEY: &[&str] =
    &["true", "false", "yes", "no", "ask", "off", "accept-new"];
pub(super) const ADDRESS_FAMILY: &[&str] = &["inet", "inet6", "any"];
pub(super) const CONTROL_MASTER: &[&str] =
    &["true", "yes", "false", "no", "auto", "ask", "autoask"];
pub(super) const TUNNEL: &[&str] = &["ethernet", "point-to-point", "true", "yes", "false", "no"];
pub(super) const REQUEST_TTY: &[&str] = &["true", "yes", "false", "no", "force", "auto"];
pub(super) const SESSION_TYPE: &[&str] = &["none", "subsystem", "default"];
pub(super) const CANONICALIZE: &[&str] = &["true", "false", "yes", "no", "always"];
pub(super) const PUBKEY_AUTH: &[&str] = &["true", "false", "yes", "no", "unbound", "host-bound"];
// ssh's table has no true/false for Compression.
pub(super) const COMPRESSION: &[&str] = &["yes", "no"];
pub(super) const LOG_LEVELS: &[&str] = &[
    "quiet", "fatal", "error", "info", "verbose", "debug", "debug1", "debug2", "debug3",
];
pub(super) const LOG_FACILITIES: &[&str] = &[
    "daemon", "user", "auth", "authpriv", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];
pub(super) const DIGESTS: &[&str] = &["md5", "sha1", "sha256", "sha384", "sha512"];
pub(super) const IPQOS: &[&str] = &[
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
pub(super) enum Kind {
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
pub(super) fn kind(keyword: &str) -> Kind {
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
