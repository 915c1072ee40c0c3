//! Text from an agent, made safe to show: what a remote host says about itself (its
//! hostname, its user), why something failed there, a signal's name.
//!
//! A compromised host can put anything into these strings. Printed raw, an escape
//! sequence would retitle or clear the user's terminal, and a newline would forge a whole
//! line of `mitossh status` or of an error message. So, as OpenSSH does with what a server
//! says, the master cleans each one once, when it arrives: control characters (C0, DEL,
//! C1) and the invisible characters that reorder or hide text (bidirectional overrides,
//! zero-width ones) are shown escaped (`\x1b`, `\u{202e}`), and the length is capped.
//! Cleaning is idempotent: clean text stays as it is.

use crate::proto::{ExitStatus, Hello, Message};

/// Longest name kept (hostname, user, version, signal), in characters.
pub(crate) const MAX_NAME: usize = 128;

/// Longest message kept (an error, a reason, a prompt), in characters.
pub(crate) const MAX_TEXT: usize = 512;

/// `text` with unsafe characters escaped, at most `max` characters long (a cut is marked
/// with `…`).
pub(crate) fn clean(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut len = 0;
    // Where the text would be cut to leave room for the mark.
    let mut cut = 0;
    for c in text.chars() {
        let n = if is_unsafe(c) {
            let escaped = escape(c);
            out.push_str(&escaped);
            escaped.len()
        } else {
            out.push(c);
            1
        };
        len += n;
        if len > max {
            out.truncate(cut);
            out.push('…');
            return out;
        }
        if len < max {
            cut = out.len();
        }
    }
    out
}

/// Like [`clean`] for text of several lines (ssh's own messages): newlines stay, each line
/// is cleaned, and at most `max` characters are kept in all.
pub(crate) fn clean_lines(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, line) in text.split('\n').enumerate() {
        let room = max.saturating_sub(out.chars().count() + usize::from(i > 0));
        if room == 0 {
            break;
        }
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&clean(line, room));
    }
    out
}

/// Cleans `text` in place (see [`clean`]).
pub(crate) fn clean_in_place(text: &mut String, max: usize) {
    if needs_cleaning(text, max) {
        *text = clean(text, max);
    }
}

fn needs_cleaning(text: &str, max: usize) -> bool {
    text.chars().any(is_unsafe) || text.chars().count() > max
}

/// Characters a terminal acts on, or that hide or reorder what it shows.
pub(crate) fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

fn escape(c: char) -> String {
    if c.is_ascii() {
        format!("\\x{:02x}", c as u32)
    } else {
        format!("\\u{{{:x}}}", c as u32)
    }
}

/// Cleans every string of a message that came from an agent and may be shown to the user
/// or logged.
pub(crate) fn clean_message(msg: &mut Message) {
    match msg {
        Message::Hello(hello) | Message::Spawned { hello, .. } => clean_hello(hello),
        Message::OpenFailed { error, .. } | Message::SpawnFailed { error, .. } => {
            clean_in_place(error, MAX_TEXT)
        }
        Message::ContextLost { reason, .. } => clean_in_place(reason, MAX_TEXT),
        Message::NeedPassword { whose, .. } => clean_in_place(whose, MAX_TEXT),
        Message::Exit {
            status: ExitStatus::Signal { signal, .. },
            ..
        } => clean_in_place(signal, MAX_NAME),
        _ => {}
    }
}

/// Cleans what an agent says about itself.
pub(crate) fn clean_hello(hello: &mut Hello) {
    for field in [&mut hello.version, &mut hello.user, &mut hello.hostname] {
        clean_in_place(field, MAX_NAME);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_controls_and_keeps_the_rest() {
        assert_eq!(clean("web1.example", 64), "web1.example");
        assert_eq!(clean("héllo wörld ✓", 64), "héllo wörld ✓");
        assert_eq!(
            clean("evil\u{1b}]0;pwned\u{7}\nline", 64),
            r"evil\x1b]0;pwned\x07\x0aline"
        );
        assert_eq!(
            clean("a\u{9b}1m\u{202e}b\u{7f}", 64),
            r"a\u{9b}1m\u{202e}b\x7f"
        );
        assert_eq!(clean("tab\there", 64), r"tab\x09here");
    }

    #[test]
    fn several_lines_keep_their_newlines_only() {
        assert_eq!(
            clean_lines("ssh: one\n\u{1b}[2Jtwo\r\n", 100),
            "ssh: one\n\\x1b[2Jtwo\\x0d\n"
        );
        assert!(clean_lines(&"line\n".repeat(1000), 50).chars().count() <= 50);
    }

    #[test]
    fn long_text_is_cut_and_marked() {
        let long = "x".repeat(1000);
        let cut = clean(&long, 10);
        assert_eq!(cut, format!("{}…", "x".repeat(9)));
        assert_eq!(cut.chars().count(), 10);
        assert_eq!(
            clean(&"x".repeat(10), 10),
            "x".repeat(10),
            "exactly max fits"
        );
        // An escape is never cut in half.
        let cut = clean("abcdefgh\u{1b}[2J", 10);
        assert_eq!(cut, "abcdefgh…");
    }

    #[test]
    fn messages_from_agents_are_cleaned() {
        let mut msg = Message::Exit {
            stream: 1,
            status: ExitStatus::Signal {
                signal: "TERM\u{1b}[5m".into(),
                core_dumped: false,
            },
        };
        clean_message(&mut msg);
        let Message::Exit {
            status: ExitStatus::Signal { signal, .. },
            ..
        } = msg
        else {
            unreachable!()
        };
        assert_eq!(signal, r"TERM\x1b[5m");

        let mut msg = Message::OpenFailed {
            stream: 1,
            error: "no\r\nssh: fine".into(),
        };
        clean_message(&mut msg);
        assert_eq!(
            msg,
            Message::OpenFailed {
                stream: 1,
                error: r"no\x0d\x0assh: fine".into()
            }
        );

        let mut hello = Hello {
            protocol: 1,
            version: "0.1".into(),
            ctx: 1,
            pid: 1,
            user: "u\u{1b}".repeat(100),
            hostname: "h\n".into(),
        };
        clean_hello(&mut hello);
        assert_eq!(hello.hostname, r"h\x0a");
        assert!(hello.user.chars().count() <= MAX_NAME);
        assert!(hello.user.ends_with('…'));
        assert!(!hello.user.contains('\u{1b}'));
    }

    proptest! {
        #[test]
        fn clean_text_is_safe_short_and_stable(text in "(?s).{0,300}", max in 1usize..200) {
            let once = clean(&text, max);
            prop_assert!(!once.chars().any(is_unsafe), "{:?}", once);
            prop_assert!(once.chars().count() <= max);
            prop_assert_eq!(clean(&once, max), once.clone());
        }
    }
}
