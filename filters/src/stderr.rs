//! A filter program's stderr as lines, with bounds: the daemon turns each line into a MESG
//! line (`sendbackup: error [<line>]`) or a message in the dump's report, so a program
//! that writes endless stderr, or one endless line, must cost a fixed amount of memory.
//!
//! [`StderrLines`] is sans-IO: the caller reads the pipe (blocking or from its event loop)
//! and pushes the bytes. Lines longer than `max_line_bytes` are cut there (the rest of the
//! line is skipped, and the line is marked [`StderrLine::truncated`]); after `max_lines`
//! lines the rest are only counted ([`StderrLines::dropped`]).
//!
//! What this module must not do: read file descriptors, or decide what a line means.

/// One line a program wrote to stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StderrLine {
    /// The text, without its newline (and without a trailing CR), invalid UTF-8 replaced.
    pub text: String,
    /// The line was longer than the bound and was cut.
    pub truncated: bool,
}

/// Default bound on one line's bytes.
pub const MAX_LINE_BYTES: usize = 1024;
/// Default bound on the lines kept per program.
pub const MAX_LINES: usize = 100;

/// Splits stderr bytes into bounded lines (see the module header).
#[derive(Debug, Clone)]
pub struct StderrLines {
    max_line_bytes: usize,
    max_lines: usize,
    partial: Vec<u8>,
    /// The current line passed the bound: skip to its newline.
    cut: bool,
    emitted: usize,
    dropped: u64,
}

impl Default for StderrLines {
    fn default() -> Self {
        StderrLines::new(MAX_LINE_BYTES, MAX_LINES)
    }
}

impl StderrLines {
    /// Lines of at most `max_line_bytes` bytes (at least 1), at most `max_lines` of them.
    pub fn new(max_line_bytes: usize, max_lines: usize) -> StderrLines {
        StderrLines {
            max_line_bytes: max_line_bytes.max(1),
            max_lines,
            partial: Vec::new(),
            cut: false,
            emitted: 0,
            dropped: 0,
        }
    }

    /// Lines not returned because `max_lines` had been reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Feeds bytes read from the pipe; appends the complete lines to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<StderrLine>) {
        while !bytes.is_empty() {
            match memchr::memchr(b'\n', bytes) {
                Some(nl) => {
                    self.take_part(&bytes[..nl]);
                    self.end_line(out);
                    bytes = &bytes[nl + 1..];
                }
                None => {
                    self.take_part(bytes);
                    bytes = &[];
                }
            }
        }
    }

    /// The end of the stream: a last line without a newline, if any.
    pub fn finish(&mut self, out: &mut Vec<StderrLine>) {
        if !self.partial.is_empty() || self.cut {
            self.end_line(out);
        }
    }

    fn take_part(&mut self, part: &[u8]) {
        let room = self.max_line_bytes - self.partial.len();
        if part.len() > room {
            self.cut = true;
        }
        self.partial
            .extend_from_slice(&part[..part.len().min(room)]);
    }

    fn end_line(&mut self, out: &mut Vec<StderrLine>) {
        if self.emitted >= self.max_lines {
            self.dropped += 1;
        } else {
            let mut bytes = &self.partial[..];
            if !self.cut && bytes.last() == Some(&b'\r') {
                bytes = &bytes[..bytes.len() - 1];
            }
            out.push(StderrLine {
                text: String::from_utf8_lossy(bytes).into_owned(),
                truncated: self.cut,
            });
            self.emitted += 1;
        }
        self.partial.clear();
        self.cut = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &mut StderrLines, chunks: &[&[u8]]) -> Vec<StderrLine> {
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn lines_split_across_reads_come_out_whole() {
        let mut s = StderrLines::default();
        let out = lines(
            &mut s,
            &[b"*** WARNING : dep", b"recated\r\nsecond\n", b"last"],
        );
        let texts: Vec<&str> = out.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["*** WARNING : deprecated", "second", "last"]);
        assert!(out.iter().all(|l| !l.truncated));
    }

    #[test]
    fn an_endless_line_is_cut_at_the_bound_and_costs_no_more() {
        let mut s = StderrLines::new(8, 10);
        let mut out = Vec::new();
        for _ in 0..10_000 {
            s.push(&[b'x'; 1000], &mut out);
        }
        assert!(out.is_empty());
        assert!(
            s.partial.capacity() < 64,
            "buffer grew to {}",
            s.partial.capacity()
        );
        s.push(b"\nnext\n", &mut out);
        assert_eq!(out[0].text, "xxxxxxxx");
        assert!(out[0].truncated);
        assert_eq!(out[1].text, "next");
    }

    #[test]
    fn lines_past_the_count_bound_are_only_counted() {
        let mut s = StderrLines::new(100, 3);
        let out = lines(&mut s, &[b"a\nb\nc\nd\ne\nf"]);
        assert_eq!(out.len(), 3);
        assert_eq!(s.dropped(), 3);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_refused() {
        let mut s = StderrLines::default();
        let out = lines(&mut s, &[b"bad \xff byte\n"]);
        assert_eq!(out[0].text, "bad \u{fffd} byte");
    }
}
