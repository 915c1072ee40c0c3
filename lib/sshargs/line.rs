//! `-o` words as `readconf.c:process_config_line` reads them: the keyword split off (one
//! `=` or spaces between keyword and value), the value tokenised by misc.c's `strdelim`
//! and `argv_split` (quotes and backslashes removed), and `IgnoreUnknown`'s patterns.

use super::ArgError;
use super::keywords::{KEYWORDS, Kind, canonical, kind};
use super::values::check_value;

/// One `-o` word: its canonical (lower-case) keyword and its value, or ssh's error.
/// `ignored_unknown`: the `IgnoreUnknown` patterns set so far. A word ssh ignores (blank,
/// a comment) gives an empty keyword.
pub(super) fn process(
    raw: &[u8],
    ignored_unknown: Option<&[u8]>,
) -> Result<(String, Vec<u8>), ArgError> {
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
        None if ignored_unknown.is_some_and(|patterns| match_pattern_list(&keyword, patterns)) => {
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
    Ok((key, verbatim.unwrap_or_else(|| words.join(&b' '))))
}

/// The words of a -o value, handed out as ssh's `argv_next` does.
pub(super) struct Words<'a> {
    words: &'a [Vec<u8>],
    used: usize,
}

impl<'a> Words<'a> {
    pub(super) fn next(&mut self) -> Option<&'a [u8]> {
        let word = self.words.get(self.used)?;
        self.used += 1;
        Some(word)
    }

    pub(super) fn peek(&self) -> Option<&'a [u8]> {
        self.words.get(self.used).map(Vec::as_slice)
    }

    pub(super) fn left(&self) -> usize {
        self.words.len() - self.used
    }

    pub(super) fn consume_all(&mut self) {
        self.used = self.words.len();
    }

    /// The next word if there is one and it is not empty.
    pub(super) fn required(&mut self) -> Option<&'a [u8]> {
        self.next().filter(|w| !w.is_empty())
    }
}

/// Splits a -o word into its lower-cased keyword and the rest of the line, as the start of
/// `process_config_line` does; `None` for a word ssh silently ignores (blank, comment, or an
/// unterminated quote in the keyword).
pub(super) fn split_config_line(raw: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
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
pub(super) fn strdelim(line: &mut Vec<u8>, cursor: &mut Option<usize>) -> Option<Vec<u8>> {
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
pub(super) fn argv_split(s: &[u8]) -> Option<Vec<Vec<u8>>> {
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
pub(super) fn match_pattern_list(s: &[u8], patterns: &[u8]) -> bool {
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
        if glob(&sub.to_ascii_lowercase(), s) {
            if negated {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// ssh's `*` and `?` wildcards: whether `s` matches `pattern`, iteratively so that no
/// pattern can make it exponential. (`-o` keywords, `SendEnv`, `AcceptEnv`, `Include`.)
pub(crate) fn glob(pattern: &[u8], s: &[u8]) -> bool {
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
