//! The tokenizer of Amanda's configuration language (amanda.conf, amanda-client.conf, and
//! the inline dumptype blocks of a disklist).
//!
//! Facts (common-src/conffile.c: get_conftoken, Amanda 3.5.1):
//! * blanks are the ASCII white space other than newline (so CRLF files work);
//! * `#` where a token could start comments out the rest of the line;
//! * a word starts with an ASCII letter and goes on with letters, digits, `_` and `-`
//!   (keywords are then looked up case-insensitively with `-` folded to `_`);
//! * a number is ASCII digits with an optional `.digits` fraction; `-` directly followed
//!   by a digit makes it negative (so `850-859` is the two numbers 850 and -859);
//! * a string is `"..."`; `\"` does not end it, a backslash-newline continues it on the
//!   next line (the newline is kept), a bare newline inside it is an error; the content is
//!   then unquoted (see [`crate::quote`]);
//! * `{`, `}`, `,` and the newline are tokens of their own; any other byte is an
//!   "unknown" token, an error wherever it appears.
//!
//! What this module must not do: know keywords or grammar.

use crate::quote;
use crate::source::{FileId, Span};

/// One token kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// An identifier or keyword, as written.
    Word(String),
    /// An integer.
    Int(i64),
    /// A number with a fraction.
    Real(f64),
    /// Digits that do not fit in 64 bits.
    BigInt,
    /// A quoted string, unquoted.
    Str(String),
    /// `{`
    LBrace,
    /// `}`
    RBrace,
    /// `,`
    Comma,
    /// End of line.
    Newline,
    /// End of file.
    Eof,
    /// A `"` whose string runs into the end of the line.
    Unterminated,
    /// Any other byte.
    Other(u8),
}

/// A token and where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// What.
    pub tok: Tok,
    /// Where.
    pub span: Span,
}

/// A byte cursor over one file with line/column tracking (columns count UTF-8 characters):
/// what the lexer and the disklist's own field syntax both walk with.
#[derive(Clone, Debug)]
pub(crate) struct Cursor<'a> {
    src: &'a [u8],
    file: FileId,
    pos: usize,
    line: u32,
    col: u32,
}

impl<'a> Cursor<'a> {
    /// A cursor that starts at `at` (byte offset, line, column) of `src`.
    pub(crate) fn resume(src: &'a [u8], file: FileId, at: (usize, u32, u32)) -> Self {
        Cursor {
            src,
            file,
            pos: at.0.min(src.len()),
            line: at.1,
            col: at.2,
        }
    }

    /// The current position: (byte offset, line, column).
    pub(crate) fn position(&self) -> (usize, u32, u32) {
        (self.pos, self.line, self.col)
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    pub(crate) fn peek2(&self) -> Option<u8> {
        self.src.get(self.pos + 1).copied()
    }

    pub(crate) fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        if c == b'\n' {
            self.line = self.line.saturating_add(1);
            self.col = 1;
        } else if c & 0xC0 != 0x80 {
            self.col = self.col.saturating_add(1);
        }
        Some(c)
    }

    /// The bytes from offset `start` to here.
    pub(crate) fn since(&self, start: usize) -> &'a [u8] {
        self.src.get(start..self.pos).unwrap_or(&[])
    }

    /// The span from `start` (a [`Cursor::position`]) to here.
    pub(crate) fn span_from(&self, start: (usize, u32, u32)) -> Span {
        Span {
            file: self.file,
            start: start.0 as u32,
            end: self.pos as u32,
            line: start.1,
            column: start.2,
        }
    }
}

/// A cursor over one file's bytes that yields [`Token`]s.
#[derive(Clone, Debug)]
pub(crate) struct Lexer<'a> {
    c: Cursor<'a>,
}

fn is_blank(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | 0x0b | 0x0c)
}

impl<'a> Lexer<'a> {
    /// A lexer at the start of `src`.
    pub fn new(src: &'a [u8], file: FileId) -> Self {
        Self::resume(src, file, (0, 1, 1))
    }

    /// The current position: (byte offset, line, column).
    pub fn position(&self) -> (usize, u32, u32) {
        self.c.position()
    }

    /// A lexer that resumes at a position obtained from [`Lexer::position`] (possibly of
    /// another lexer over the same bytes).
    pub fn resume(src: &'a [u8], file: FileId, at: (usize, u32, u32)) -> Self {
        Lexer {
            c: Cursor::resume(src, file, at),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.c.peek()
    }

    fn bump(&mut self) -> Option<u8> {
        self.c.bump()
    }

    fn span_from(&self, start: (usize, u32, u32)) -> Span {
        self.c.span_from(start)
    }

    /// Skips to just before the next newline (or the end).
    pub fn skip_line(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'\n' {
                break;
            }
            self.bump();
        }
    }

    /// The next token.
    pub fn next_token(&mut self) -> Token {
        while self.peek().is_some_and(is_blank) {
            self.bump();
        }
        if self.peek() == Some(b'#') {
            self.skip_line();
        }
        let start = self.position();
        let Some(c) = self.bump() else {
            return Token {
                tok: Tok::Eof,
                span: self.span_from(start),
            };
        };
        let tok = match c {
            b'\n' => Tok::Newline,
            b'{' => Tok::LBrace,
            b'}' => Tok::RBrace,
            b',' => Tok::Comma,
            b'"' => self.string(),
            b'-' if self.peek().is_some_and(|d| d.is_ascii_digit()) => self.number(start.0),
            b'0'..=b'9' => self.number(start.0),
            c if c.is_ascii_alphabetic() => {
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
                {
                    self.bump();
                }
                // The word is ASCII by construction.
                let bytes = self.c.since(start.0);
                Tok::Word(String::from_utf8_lossy(bytes).into_owned())
            }
            other => Tok::Other(other),
        };
        Token {
            tok,
            span: self.span_from(start),
        }
    }

    fn number(&mut self, start: usize) -> Tok {
        while self.peek().is_some_and(|d| d.is_ascii_digit()) {
            self.bump();
        }
        let mut real = false;
        if self.peek() == Some(b'.') {
            real = true;
            self.bump();
            while self.peek().is_some_and(|d| d.is_ascii_digit()) {
                self.bump();
            }
        }
        let text = self.c.since(start);
        // ASCII digits, '-' and '.' only, so this is valid UTF-8.
        let text = std::str::from_utf8(text).unwrap_or("0");
        if real {
            // "1." is accepted by Amanda as 1.0; Rust's parser accepts it too.
            Tok::Real(text.parse().unwrap_or(0.0))
        } else {
            match text.parse::<i64>() {
                Ok(v) => Tok::Int(v),
                Err(_) => Tok::BigInt,
            }
        }
    }

    fn string(&mut self) -> Tok {
        // Collect the raw bytes (with backslashes) up to the closing quote, then unquote.
        let mut raw = Vec::new();
        let mut escape = false;
        loop {
            match self.peek() {
                None => return Tok::Unterminated,
                Some(b'\n') => {
                    if !escape {
                        return Tok::Unterminated;
                    }
                    // backslash-newline: drop the backslash, keep the newline
                    raw.pop();
                    raw.push(b'\n');
                    escape = false;
                    self.bump();
                }
                Some(c) => {
                    self.bump();
                    if c == b'"' && !escape {
                        return Tok::Str(quote::unquote_lossy(&raw));
                    }
                    escape = c == b'\\' && !escape;
                    raw.push(c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        let mut l = Lexer::new(s.as_bytes(), FileId(1));
        let mut v = Vec::new();
        loop {
            let t = l.next_token();
            if t.tok == Tok::Eof {
                return v;
            }
            v.push(t.tok);
        }
    }

    #[test]
    fn port_range_with_dash_lexes_as_two_numbers_like_amanda() {
        assert_eq!(toks("850-859"), vec![Tok::Int(850), Tok::Int(-859)]);
        assert_eq!(
            toks("850,859"),
            vec![Tok::Int(850), Tok::Comma, Tok::Int(859)]
        );
    }

    #[test]
    fn units_glued_to_numbers_are_separate_words() {
        assert_eq!(
            toks("1280k 1Gb"),
            vec![
                Tok::Int(1280),
                Tok::Word("k".into()),
                Tok::Int(1),
                Tok::Word("Gb".into())
            ]
        );
    }

    #[test]
    fn comments_and_crlf_are_blanks() {
        assert_eq!(
            toks("index yes # c\r\n}"),
            vec![
                Tok::Word("index".into()),
                Tok::Word("yes".into()),
                Tok::Newline,
                Tok::RBrace
            ]
        );
    }

    #[test]
    fn strings_unquote_and_continue_over_escaped_newlines() {
        assert_eq!(toks(r#""a \"b\" c""#), vec![Tok::Str("a \"b\" c".into())]);
        assert_eq!(toks("\"a\\\nb\""), vec![Tok::Str("a\nb".into())]);
        assert_eq!(
            toks("\"abc\ndef"),
            vec![Tok::Unterminated, Tok::Newline, Tok::Word("def".into())]
        );
    }

    #[test]
    fn words_keep_dashes_and_columns_count_characters() {
        let mut l = Lexer::new("é application-tool".as_bytes(), FileId(1));
        let t = l.next_token();
        assert_eq!(t.tok, Tok::Other(0xc3));
        let t = l.next_token();
        assert_eq!(t.tok, Tok::Other(0xa9));
        let t = l.next_token();
        assert_eq!(t.tok, Tok::Word("application-tool".into()));
        assert_eq!((t.span.line, t.span.column), (1, 3));
    }

    #[test]
    fn reals_and_big_numbers() {
        assert_eq!(
            toks("1.5 99999999999999999999"),
            vec![Tok::Real(1.5), Tok::BigInt]
        );
    }
}
