//! The checks `process_config_line` makes on a `-o` value, and on forwarding and tunnel
//! specifications wherever they come from (`-L`, `-R`, `-D`, `-W`, `-w`, their keywords).

use super::ArgError;
use super::destination::{hpdelim2, valid_domain, valid_jump};
use super::keywords::{DIGESTS, FLAG, IPQOS, Kind, LOG_FACILITIES, LOG_LEVELS};
use super::line::Words;
use super::numbers::{a2port, a2port_raw, atoi, convtime, scan_scaled, strtol};

/// Checks a -o value as `process_config_line`'s switch does. Returns the value to record
/// when ssh takes it verbatim from the line rather than as words.
pub(super) fn check_value(
    kind: Kind,
    keyword: &str,
    rest: &[u8],
    args: &mut Words<'_>,
) -> Result<Option<Vec<u8>>, ArgError> {
    match kind {
        Kind::Choice(choices) => choice(args, choices)?,
        Kind::Text => {
            args.required().ok_or_else(missing)?;
        }
        Kind::Time => check_time(args.next())?,
        Kind::Int => int(args)?,
        Kind::Port => port(args)?,
        Kind::Command | Kind::ProxyJump => return verbatim(kind, rest, args).map(Some),
        Kind::Files | Kind::CanonicalDomains => files(kind, keyword, args)?,
        Kind::PermittedCnames => permitted_cnames(keyword, args)?,
        Kind::PermitRemoteOpen => permit_remote_open(keyword, args)?,
        Kind::SendEnv => send_env(args)?,
        Kind::SetEnv => set_env(args)?,
        Kind::LocalForward | Kind::RemoteForward | Kind::DynamicForward => forward(kind, args)?,
        Kind::TunnelDevice => tunnel_device(args)?,
        Kind::IpQos => ip_qos(args)?,
        Kind::BindMask => bind_mask(args)?,
        Kind::FingerprintHash => fingerprint_hash(args)?,
        Kind::LogLevel | Kind::LogFacility => log(kind, args)?,
        Kind::EscapeChar => escape_char(args)?,
        Kind::ControlPersist => control_persist(args)?,
        Kind::AddKeysToAgent => add_keys_to_agent(args)?,
        Kind::RekeyLimit => rekey_limit(args)?,
        Kind::ForwardAgent | Kind::IdentityAgent => agent_socket(kind, args)?,
        Kind::Words => args.consume_all(),
        Kind::FileOnly(message) => return Err(ArgError::fatal(message)),
    }
    Ok(None)
}

fn lossy(w: &[u8]) -> String {
    String::from_utf8_lossy(w).into_owned()
}

fn missing() -> ArgError {
    ArgError::config("Missing argument.")
}

/// One word of `choices` (`parse_flag`, `parse_multistate`).
fn choice(args: &mut Words<'_>, choices: &[&str]) -> Result<(), ArgError> {
    let arg = args
        .required()
        .ok_or_else(|| ArgError::config("missing argument."))?;
    if !one_of(arg, choices) {
        return Err(ArgError::config(format!(
            "unsupported option \"{}\".",
            lossy(arg)
        )));
    }
    Ok(())
}

/// `parse_int`: a non-negative int.
fn int(args: &mut Words<'_>) -> Result<(), ArgError> {
    if let Err(e) = atoi(args.next()) {
        return Err(ArgError::config(format!("integer value {e}.")));
    }
    Ok(())
}

/// A port number.
fn port(args: &mut Words<'_>) -> Result<(), ArgError> {
    let arg = args.required().ok_or_else(missing)?;
    if a2port(arg).is_none() {
        return Err(ArgError::config(format!("Bad port '{}'.", lossy(arg))));
    }
    Ok(())
}

/// `parse_command` (and `ProxyJump`): the rest of the line as it is, which is what ssh records.
fn verbatim(kind: Kind, rest: &[u8], args: &mut Words<'_>) -> Result<Vec<u8>, ArgError> {
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
    Ok(verbatim)
}

/// Non-empty words, `none` only alone (known-hosts files, `LogVerbose`), or domain names.
fn files(kind: Kind, keyword: &str, args: &mut Words<'_>) -> Result<(), ArgError> {
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
    Ok(())
}

/// `CanonicalizePermittedCNAMEs`: `from:to` rules, `*`, or `none` alone.
fn permitted_cnames(keyword: &str, args: &mut Words<'_>) -> Result<(), ArgError> {
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
    Ok(())
}

/// `PermitRemoteOpen`: `host:port` (port `*` too), or `none`/`any` alone.
fn permit_remote_open(keyword: &str, args: &mut Words<'_>) -> Result<(), ArgError> {
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
    Ok(())
}

/// `SendEnv`: variable names (patterns), no `=`.
fn send_env(args: &mut Words<'_>) -> Result<(), ArgError> {
    while let Some(arg) = args.next() {
        if arg.is_empty() || arg.contains(&b'=') {
            return Err(ArgError::config("Invalid environment name."));
        }
    }
    Ok(())
}

/// `SetEnv`: `NAME=value` words.
fn set_env(args: &mut Words<'_>) -> Result<(), ArgError> {
    while let Some(arg) = args.next() {
        if !arg.contains(&b'=') {
            return Err(ArgError::config("Invalid SetEnv."));
        }
    }
    Ok(())
}

/// `LocalForward`, `RemoteForward`, `DynamicForward`: one or two words, a valid specification.
fn forward(kind: Kind, args: &mut Words<'_>) -> Result<(), ArgError> {
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
    Ok(())
}

/// `TunnelDevice`: `a2tun`'s `local[:remote]`.
fn tunnel_device(args: &mut Words<'_>) -> Result<(), ArgError> {
    let arg = args.required().ok_or_else(missing)?;
    if !valid_tun(arg) {
        return Err(ArgError::config("Bad tun device."));
    }
    Ok(())
}

/// `IPQoS`: one or two DSCP names or numbers.
fn ip_qos(args: &mut Words<'_>) -> Result<(), ArgError> {
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
    Ok(())
}

/// `StreamLocalBindMask`: an octal mask up to 0777.
fn bind_mask(args: &mut Words<'_>) -> Result<(), ArgError> {
    let arg = args
        .required()
        .ok_or_else(|| ArgError::config("Missing StreamLocalBindMask argument."))?;
    // strtol(arg, &end, 8): trailing garbage is allowed, no digits is not.
    if !matches!(strtol(arg, 8), Some((mask, _)) if (0..=0o777).contains(&mask)) {
        return Err(ArgError::config("Bad mask."));
    }
    Ok(())
}

/// `FingerprintHash`: a digest name.
fn fingerprint_hash(args: &mut Words<'_>) -> Result<(), ArgError> {
    let arg = args.required().ok_or_else(missing)?;
    if !one_of(arg, DIGESTS) {
        return Err(ArgError::config(format!(
            "Invalid hash algorithm \"{}\".",
            lossy(arg)
        )));
    }
    Ok(())
}

/// `LogLevel` or `SyslogFacility`: a name from ssh's table.
fn log(kind: Kind, args: &mut Words<'_>) -> Result<(), ArgError> {
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
    Ok(())
}

/// `EscapeChar`: one character, `^X`, or `none`.
fn escape_char(args: &mut Words<'_>) -> Result<(), ArgError> {
    let arg = args.required().ok_or_else(missing)?;
    let ok = arg == b"none" || arg.len() == 1 || matches!(arg, [b'^', c] if (64..128).contains(c));
    if !ok {
        return Err(ArgError::config("Bad escape character."));
    }
    Ok(())
}

/// `ControlPersist`: yes/no (case-sensitive) or a time.
fn control_persist(args: &mut Words<'_>) -> Result<(), ArgError> {
    let arg = args
        .required()
        .ok_or_else(|| ArgError::config("Missing ControlPersist argument."))?;
    // Case-sensitive here, unlike the multistate keywords.
    let word = matches!(arg, b"yes" | b"no" | b"true" | b"false");
    if !word && convtime(arg).is_none() {
        return Err(ArgError::config("Bad ControlPersist argument."));
    }
    Ok(())
}

/// `AddKeysToAgent`: a choice, `confirm` with a lifetime, or a bare lifetime.
fn add_keys_to_agent(args: &mut Words<'_>) -> Result<(), ArgError> {
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
    Ok(())
}

/// `RekeyLimit`: a size (or `default`), then perhaps `none` or a time.
fn rekey_limit(args: &mut Words<'_>) -> Result<(), ArgError> {
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
    Ok(())
}

/// `ForwardAgent` (a flag or a socket) and `IdentityAgent` (a socket): a legacy `$NAME` must name a variable.
fn agent_socket(kind: Kind, args: &mut Words<'_>) -> Result<(), ArgError> {
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
        let valid =
            !name.is_empty() && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(ArgError::config(format!(
                "Invalid environment name {}.",
                lossy(arg)
            )));
        }
    }
    Ok(())
}

pub(super) fn one_of(word: &[u8], choices: &[&str]) -> bool {
    choices
        .iter()
        .any(|c| c.as_bytes().eq_ignore_ascii_case(word))
}

/// `parse_time`: "none" or a `convtime` interval.
pub(super) fn check_time(arg: Option<&[u8]>) -> Result<(), ArgError> {
    let arg = arg
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ArgError::config("missing time value."))?;
    if arg != b"none" && convtime(arg).is_none() {
        return Err(ArgError::config("invalid time value."));
    }
    Ok(())
}

/// readconf.c `parse_forward`'s verdict on a forwarding specification: `dynamic` for -D,
/// -W and one-argument RemoteForward, `remote` for -R.
///
/// ssh first expands `${VAR}` from its environment; a specification holding `${` is
/// accepted unchecked.
pub(super) fn valid_forward(spec: &[u8], dynamic: bool, remote: bool) -> bool {
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
pub(super) fn forward_fields(mut s: &[u8]) -> Option<Vec<(Vec<u8>, bool)>> {
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
pub(super) fn valid_tun(s: &[u8]) -> bool {
    let one = |s: &[u8]| {
        s.eq_ignore_ascii_case(b"any") || super::numbers::strtonum(s, 0, 0x7fff_fffd).is_ok()
    };
    match s.iter().position(|&b| b == b':') {
        Some(colon) => one(&s[..colon]) && one(&s[colon + 1..]),
        None => one(s),
    }
}

pub(super) fn valid_ipqos(s: &[u8]) -> bool {
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
