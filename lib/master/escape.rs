//! ssh's escape sequences on the input of a session with a pty (`EscapeChar`, `-e`):
//! recognised only right after a newline (or at the very start), as ssh does. `~.` ends
//! the session, `~?` lists the sequences, `~~` sends one `~`; any other character after
//! the escape is sent with it. ssh's other sequences (`~^Z`, `~#`, `~&`, `~B`, `~R`,
//! `~C`, `~V`) concern a local client that mitossh does not have, and are sent on as typed.

/// What a sequence asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escape {
    Disconnect,
    Help,
}

/// The escape-sequence state of one session's input.
#[derive(Debug)]
pub(crate) struct Escapes {
    ch: u8,
    at_line_start: bool,
    /// The escape character was typed; the next byte decides.
    pending: bool,
}

impl Escapes {
    pub(crate) fn new(ch: u8) -> Escapes {
        Escapes {
            ch,
            at_line_start: true,
            pending: false,
        }
    }

    /// Appends to `out` what of `input` goes to the remote side; stops at a sequence that
    /// asks for something and says which (the rest of `input` is then dropped, as ssh
    /// drops what follows `~.`; after `~?` typing goes on in the next chunk).
    pub(crate) fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<Escape> {
        for &b in input {
            if self.pending {
                self.pending = false;
                match b {
                    b'.' => return Some(Escape::Disconnect),
                    b'?' => {
                        self.at_line_start = false;
                        return Some(Escape::Help);
                    }
                    b if b == self.ch => out.push(b),
                    b => out.extend([self.ch, b]),
                }
                self.at_line_start = false;
                continue;
            }
            if self.at_line_start && b == self.ch {
                self.pending = true;
                continue;
            }
            out.push(b);
            self.at_line_start = b == b'\r' || b == b'\n';
        }
        None
    }

    /// The list `~?` shows, lines ending in CR LF for a terminal in raw mode.
    pub(crate) fn help(&self) -> Vec<String> {
        let c = self.ch as char;
        vec![
            "Supported escape sequences:".into(),
            format!(" {c}.   - terminate connection (and any multiplexed sessions)"),
            format!(" {c}?   - this message"),
            format!(" {c}{c}   - send the escape character by typing it twice"),
            "(Note that escapes are only recognized immediately after newline.)".into(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(e: &mut Escapes, input: &[u8]) -> (Vec<u8>, Option<Escape>) {
        let mut out = Vec::new();
        let asked = e.filter(input, &mut out);
        (out, asked)
    }

    #[test]
    fn only_after_a_newline() {
        let mut e = Escapes::new(b'~');
        assert_eq!(run(&mut e, b"a~.b"), (b"a~.b".to_vec(), None));
        assert_eq!(
            run(&mut e, b"\r~."),
            (b"\r".to_vec(), Some(Escape::Disconnect))
        );
        let mut e = Escapes::new(b'~');
        assert_eq!(run(&mut e, b"~."), (Vec::new(), Some(Escape::Disconnect)));
    }

    #[test]
    fn doubled_and_unknown_sequences_are_sent() {
        let mut e = Escapes::new(b'~');
        assert_eq!(run(&mut e, b"~~x\n~z"), (b"~x\n~z".to_vec(), None));
        // Split across reads.
        let mut e = Escapes::new(b'~');
        assert_eq!(run(&mut e, b"ls\n~"), (b"ls\n".to_vec(), None));
        assert_eq!(run(&mut e, b"?"), (Vec::new(), Some(Escape::Help)));
        assert_eq!(
            run(&mut e, b"~."),
            (b"~.".to_vec(), None),
            "not at a line start"
        );
    }

    #[test]
    fn another_escape_character() {
        let mut e = Escapes::new(0x1d);
        assert_eq!(run(&mut e, b"~."), (b"~.".to_vec(), None));
        assert_eq!(
            run(&mut e, b"\n\x1d."),
            (b"\n".to_vec(), Some(Escape::Disconnect))
        );
    }
}
