//! Numbers as ssh reads them: ports (misc.c `a2port`), C's `strtol` and OpenBSD's
//! `strtonum`, `atoi_err`, time intervals (`convtime`) and scaled sizes (`scan_scaled`).

/// misc.c `a2port` as callers use it: 1-65535. Service names (getservbyname) are not
/// looked up.
pub(super) fn a2port(s: &[u8]) -> Option<u16> {
    a2port_raw(s)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p > 0)
}

/// misc.c `a2port` itself: 0 is a port here (a remote forward's "allocate one").
pub(super) fn a2port_raw(s: &[u8]) -> Option<i64> {
    strtonum(s, 0, 65535).ok()
}

/// C `strtol`: optional leading whitespace and sign, then digits of `radix`. Returns the
/// value (saturated) and how many bytes were used, or `None` when there are no digits.
pub(super) fn strtol(s: &[u8], radix: u32) -> Option<(i64, usize)> {
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
pub(super) fn strtonum(s: &[u8], min: i64, max: i64) -> Result<i64, &'static str> {
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
pub(super) fn atoi(arg: Option<&[u8]>) -> Result<i64, &'static str> {
    match arg {
        None | Some(b"") => Err("missing"),
        Some(s) => strtonum(s, 0, i64::from(i32::MAX)),
    }
}

/// misc.c `convtime`: `1h30m`-style intervals up to INT_MAX seconds.
pub(super) fn convtime(s: &[u8]) -> Option<i64> {
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
pub(super) fn scan_scaled(s: &[u8]) -> Result<i128, &'static str> {
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
