//! Output of many processes, interleaved without tearing lines: each stream is cut into
//! whole lines, and each line is printed with one write, prefixed with who wrote it.

/// A line longer than this is printed in pieces rather than held in memory forever.
pub(crate) const MAX_LINE: usize = 1 << 20;

/// Cuts a byte stream into whole lines, holding a partial line until it ends.
#[derive(Debug, Default)]
pub(crate) struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    /// Adds bytes; returns the lines they complete (each with its `\n`).
    pub(crate) fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut rest = data;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..=end]);
            lines.push(line);
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() >= MAX_LINE {
            let mut line = std::mem::take(&mut self.partial);
            line.push(b'\n');
            lines.push(line);
        }
        lines
    }

    /// End of stream: the unfinished last line, if any, given a `\n`.
    pub(crate) fn finish(&mut self) -> Option<Vec<u8>> {
        if self.partial.is_empty() {
            return None;
        }
        let mut line = std::mem::take(&mut self.partial);
        line.push(b'\n');
        Some(line)
    }
}

/// How a prefix looks: `host name[i] | `, or `host name[i] ! ` for stderr.
#[derive(Debug, Clone)]
pub(crate) struct Prefix {
    text: String,
    colour: Option<u8>,
    width: usize,
}

/// ANSI colours that read well on dark and light terminals.
const PALETTE: [u8; 6] = [32, 33, 34, 35, 36, 31];

impl Prefix {
    /// `width` pads every prefix to the same column; `colour` picks a colour by number
    /// when printing to a terminal.
    pub(crate) fn new(host: &str, label: &str, width: usize, colour: Option<usize>) -> Prefix {
        Prefix {
            text: format!("{host} {label}"),
            colour: colour.map(|c| PALETTE[c % PALETTE.len()]),
            width,
        }
    }

    /// The bytes of one output line with this prefix.
    pub(crate) fn line(&self, line: &[u8], stderr: bool) -> Vec<u8> {
        let mark = if stderr { '!' } else { '|' };
        let head = format!("{:<width$} {mark} ", self.text, width = self.width);
        let head = match self.colour {
            Some(c) => format!("\x1b[{c}m{head}\x1b[0m"),
            None => head,
        };
        let mut out = Vec::with_capacity(head.len() + line.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(line);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_whole_whatever_the_chunks() {
        let mut b = LineBuffer::default();
        assert!(b.push(b"hel").is_empty());
        assert_eq!(b.push(b"lo\nwor"), vec![b"hello\n".to_vec()]);
        assert_eq!(
            b.push(b"ld\n\nx"),
            vec![b"world\n".to_vec(), b"\n".to_vec()]
        );
        assert_eq!(b.finish(), Some(b"x\n".to_vec()));
        assert_eq!(b.finish(), None);
    }

    #[test]
    fn endless_lines_do_not_grow_without_bound() {
        let mut b = LineBuffer::default();
        let chunk = vec![b'a'; 64 * 1024];
        let mut emitted = 0;
        for _ in 0..40 {
            emitted += b.push(&chunk).len();
        }
        assert!(emitted >= 2);
        assert!(b.partial.len() < MAX_LINE);
    }

    #[test]
    fn prefixes() {
        let p = Prefix::new("node1", "replica[3]", 20, None);
        assert_eq!(p.line(b"up\n", false), b"node1 replica[3]     | up\n");
        assert_eq!(p.line(b"oops\n", true), b"node1 replica[3]     ! oops\n");
        let c = Prefix::new("n", "x[0]", 0, Some(0));
        assert_eq!(c.line(b"a\n", false), b"\x1b[32mn x[0] | \x1b[0ma\n");
    }
}
