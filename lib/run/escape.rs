//! Making remote output safe for a terminal: a line a remote process wrote must not be
//! able to move the cursor, erase or recolour what is already on the screen, or change the
//! terminal's settings — so one stream can never overwrite another stream's prefix.
//!
//! Control characters (C0 but tab, DEL, C1), bytes that are not UTF-8, and the characters
//! that hide or reorder text (the set `untrusted` uses for all an agent says) become
//! visible escapes (`\r`, `\e`, `\x9b`, `\u{202e}`); a backslash stays as it is. Files
//! and pipes get the bytes as they came; `--raw` turns this off on a terminal too.

use std::borrow::Cow;

use crate::untrusted;

/// `line` (ending in `\n`, as [`super::lines::LineBuffer`] makes them) as a terminal
/// should show it. A `\r` right before the final `\n` is kept: it cannot overwrite
/// anything, and Windows-style lines would otherwise all end in `\r`.
pub(crate) fn line(line: &[u8]) -> Cow<'_, [u8]> {
    let (body, end): (&[u8], &[u8]) = match line {
        [body @ .., b'\r', b'\n'] => (body, b"\r\n"),
        [body @ .., b'\n'] => (body, b"\n"),
        _ => (line, b""),
    };
    if body.iter().all(|b| (0x20..0x7f).contains(b) || *b == b'\t') {
        return Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len() + 16);
    text(body, &mut out);
    out.extend_from_slice(end);
    Cow::Owned(out)
}

/// A one-line message that may carry remote text (an error from the far side), made safe
/// for a terminal as everything else an agent says is.
pub(crate) fn message(s: &str) -> String {
    untrusted::clean(s, untrusted::MAX_TEXT)
}

/// Appends `bytes` to `out` with every dangerous character escaped.
fn text(bytes: &[u8], out: &mut Vec<u8>) {
    for chunk in bytes.utf8_chunks() {
        chars(chunk.valid(), out);
        for b in chunk.invalid() {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
}

fn chars(s: &str, out: &mut Vec<u8>) {
    for c in s.chars() {
        match c {
            '\t' => out.push(b'\t'),
            '\r' => out.extend_from_slice(b"\\r"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\x1b' => out.extend_from_slice(b"\\e"),
            '\0'..='\x1f' | '\x7f' => {
                out.extend_from_slice(format!("\\x{:02x}", c as u32).as_bytes())
            }
            // C1 controls, and what hides or reorders text: the same set as
            // everything else an agent says (`untrusted`).
            c if untrusted::is_unsafe(c) => {
                out.extend_from_slice(format!("\\u{{{:x}}}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(b: &[u8]) -> String {
        String::from_utf8(line(b).into_owned()).unwrap()
    }

    #[test]
    fn plain_lines_are_not_copied() {
        assert!(matches!(line(b"hello\tworld\n"), Cow::Borrowed(_)));
        assert!(matches!(line(b"dos line\r\n"), Cow::Borrowed(_)));
        assert_eq!(shown("héllo ✓\n".as_bytes()), "héllo ✓\n");
    }

    #[test]
    fn nothing_can_move_the_cursor_or_change_the_terminal() {
        // A carriage return in the middle would overwrite the prefix.
        assert_eq!(shown(b"10%\r20%\n"), "10%\\r20%\n");
        // Colours, cursor moves, clearing, window titles: all visible, none obeyed.
        assert_eq!(shown(b"\x1b[31mred\x1b[0m\n"), "\\e[31mred\\e[0m\n");
        assert_eq!(
            shown(b"\x1b[2K\x1b[1A\x1b]0;title\x07\n"),
            "\\e[2K\\e[1A\\e]0;title\\x07\n"
        );
        assert_eq!(
            shown(b"back\x08\x08space\x7f\n"),
            "back\\x08\\x08space\\x7f\n"
        );
        assert_eq!(shown(b"nul\0\n"), "nul\\x00\n");
        // 8-bit CSI, raw or UTF-8 encoded, and bidi overrides.
        assert_eq!(shown(b"\x9b2J\n"), "\\x9b2J\n");
        assert_eq!(shown("\u{9b}2J\n".as_bytes()), "\\u{9b}2J\n");
        assert_eq!(shown("abc\u{202e}fed\n".as_bytes()), "abc\\u{202e}fed\n");
        // Invalid UTF-8 is shown byte by byte, valid text around it intact.
        assert_eq!(shown(b"a\xffb\xe2\x9c\n"), "a\\xffb\\xe2\\x9c\n");
    }

    #[test]
    fn escaped_output_has_no_control_bytes_whatever_the_input() {
        let mut all: Vec<u8> = (0..=255u8).collect();
        all.extend_from_slice("\u{85}\u{2067}".as_bytes());
        all.push(b'\n');
        let out = line(&all);
        let body = &out[..out.len() - 1];
        assert!(
            body.iter().all(|b| *b >= 0x20 && *b != 0x7f || *b == b'\t'),
            "{body:?}"
        );
        let s = std::str::from_utf8(body).unwrap();
        assert!(!s.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)));
        assert!(!s.contains('\u{2067}'));
    }

    #[test]
    fn a_sequence_split_across_reads_is_still_escaped_and_never_reaches_a_prefix() {
        use super::super::lines::{LineBuffer, Prefix};
        let prefix = Prefix::new("node1", "replica[0]", 0, None);
        let mut cut = LineBuffer::default();
        let mut printed = Vec::new();
        for chunk in [
            &b"ok\x1b["[..],
            b"1A\x1b[2K",
            b"\rnode2 fake | x\n",
            b"tail\r",
        ] {
            for l in cut.push(chunk) {
                printed.extend(prefix.line(&line(&l), false));
            }
        }
        printed.extend(prefix.line(&line(&cut.finish().unwrap()), false));
        assert_eq!(
            String::from_utf8(printed).unwrap(),
            "node1 replica[0] | ok\\e[1A\\e[2K\\rnode2 fake | x\nnode1 replica[0] | tail\r\n"
        );
    }

    #[test]
    fn messages_stay_on_one_line() {
        assert_eq!(message("cat: x\nno\x1b[2J"), "cat: x\\x0ano\\x1b[2J");
    }
}
