//! The destination and other host names: `[user@]host` (split at the last `@`), `ssh://`
//! URIs (misc.c `parse_uri`), `-J`/`ProxyJump` hops, and the host and user name checks
//! Debian backported from OpenSSH 10.3.

use super::numbers::a2port;
use super::{ArgError, Destination, os};

/// The destination word: `ssh://[user@]host[:port]` or `[user@]host`.
pub(super) fn parse(word: &[u8]) -> Result<Destination, ArgError> {
    let shown = || String::from_utf8_lossy(word).into_owned();
    match parse_ssh_uri(word) {
        Uri::Invalid => Err(ArgError::usage_only(format!(
            "invalid ssh:// destination '{}'",
            shown()
        ))),
        Uri::Valid { user, host, port } => Ok(Destination {
            user: user.map(|u| os(&u)),
            host: os(&host),
            port,
        }),
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

/// The result of misc.c `parse_uri("ssh", ...)` as `parse_ssh_uri` uses it.
pub(super) enum Uri {
    /// Not an `ssh://` word: a plain `[user@]host`.
    Plain,
    Invalid,
    Valid {
        user: Option<Vec<u8>>,
        host: Vec<u8>,
        port: Option<u16>,
    },
}

pub(super) fn parse_ssh_uri(word: &[u8]) -> Uri {
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
pub(super) fn urldecode(s: &[u8]) -> Option<Vec<u8>> {
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
pub(super) fn hpdelim2(s: &[u8]) -> Option<(&[u8], Option<u8>, &[u8])> {
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

pub(super) fn clean_hostname(host: &[u8]) -> &[u8] {
    match host {
        [b'[', inner @ .., b']'] => inner,
        _ => host,
    }
}

/// misc.c `valid_domain` without lower-casing; the error is ssh's text (first problem met).
pub(super) fn valid_domain(name: &[u8]) -> Result<(), String> {
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
pub(super) fn valid_jump(s: &[u8]) -> bool {
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
pub(super) fn user_host_port(s: &[u8]) -> Option<(Option<Vec<u8>>, Vec<u8>)> {
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

/// `ssh_valid_hostname`, which Debian backported from 10.3: no shell metacharacters, comma,
/// whitespace or control characters, and no leading '-'.
pub(super) fn valid_hostname(s: &[u8]) -> bool {
    s.first() != Some(&b'-')
        && !s
            .iter()
            .any(|&c| b"'`\"$\\;&<>|(){},".contains(&c) || c == b' ' || c.is_ascii_control())
}

/// `ssh_valid_ruser`, likewise backported.
pub(super) fn valid_ruser(s: &[u8]) -> bool {
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
