//! Stage 1 of amanda.conf / amanda-client.conf: syntax with locations, no meaning.
//!
//! Amanda's configuration language is line-structured. A file is a list of lines; a line is
//! empty or a *statement*: a head (a word, or a quoted string for an inherited definition),
//! then arguments up to the end of the line, and optionally a `{` as the last token, which
//! opens a block of statements closed by a `}` that starts a line of its own. `includefile
//! "path"` is recognised here because it is part of the language rather than a parameter.
//!
//! This stage knows no keyword: it produces a [`SyntaxFile`] of [`Statement`]s whose every
//! token has a [`Span`]. Stage 2 ([`crate::server`], [`crate::client`]) gives the statements
//! their meaning against the keyword tables, like ripgrep's `lowargs` then `hiargs`.
//!
//! Deliberate differences from Amanda 3.5.1 (which accepts these silently): a block left
//! open at the end of the file is an error; blocks may not nest deeper than
//! [`MAX_DEPTH`].
//!
//! What this module must not do: read files, resolve includes, or interpret keywords.

use crate::diag::{ErrorKind, Sink};
use crate::lex::Lexer;
pub use crate::lex::{Tok, Token};
use crate::source::{FileId, SourceMap, Span};

/// How deep `{ ... }` blocks may nest (Amanda's deepest legal nesting is 2: an inline
/// `application { }` inside a `define dumptype`).
pub const MAX_DEPTH: usize = 8;

/// One parsed file.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntaxFile {
    /// Which file.
    pub file: FileId,
    /// Its top-level items, in order.
    pub items: Vec<Item>,
}

/// A top-level item.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `includefile "path"`.
    Include(Include),
    /// Anything else.
    Statement(Statement),
}

/// `includefile "path"`.
#[derive(Clone, Debug, PartialEq)]
pub struct Include {
    /// The path as written (unquoted); relative paths are relative to the config directory.
    pub path: String,
    /// Where the path is written.
    pub path_span: Span,
    /// The whole statement.
    pub span: Span,
    /// The included file, once a loader has read it.
    pub target: Option<FileId>,
}

/// `head arg arg ... [{ block }]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    /// The first token: a [`Tok::Word`] or a [`Tok::Str`].
    pub head: Token,
    /// The other tokens of the line (never a newline, `{` or `}`).
    pub args: Vec<Token>,
    /// The block opened by a `{` that ends the line.
    pub block: Option<Block>,
    /// From the head to the last argument.
    pub span: Span,
}

impl Statement {
    /// The head word as written (or the string of a quoted head).
    pub fn head_text(&self) -> &str {
        match &self.head.tok {
            Tok::Word(w) | Tok::Str(w) => w,
            _ => "",
        }
    }
}

/// `{ ... }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    /// The `{`.
    pub open: Span,
    /// The `}` (or the end of the file if it is missing).
    pub close: Span,
    /// The statements inside.
    pub body: Vec<Statement>,
}

/// Parses one file of the configuration language. Errors go to `sink`; the tree holds every
/// statement that could be parsed.
pub(crate) fn parse_file(sources: &SourceMap, file: FileId, sink: &mut Sink) -> SyntaxFile {
    let text = sources.file(file).text();
    let mut p = Parser {
        lex: Lexer::new(text, file),
        peeked: None,
        sources,
        sink,
    };
    let mut items = Vec::new();
    loop {
        let t = p.next();
        match t.tok {
            Tok::Newline => {}
            Tok::Eof => break,
            Tok::Word(_) | Tok::Str(_) => {
                if let Some((stmt, _)) = p.statement(t, 0) {
                    items.push(p.top_item(stmt));
                }
            }
            Tok::RBrace => {
                p.error(t.span, ErrorKind::UnmatchedClose);
                p.skip_line();
            }
            _ => {
                p.expected(&t, "a keyword");
                p.skip_line();
            }
        }
    }
    SyntaxFile { file, items }
}

/// Parses the body of a block that starts at `at` (a [`Lexer::position`], at the start of
/// the line after the `{`), up to and including its closing `}`. Returns the block and the
/// position just after the `}`. Used for the inline dumptypes of a disklist.
pub(crate) fn parse_block_at(
    sources: &SourceMap,
    file: FileId,
    open: Span,
    at: (usize, u32, u32),
    sink: &mut Sink,
) -> (Block, (usize, u32, u32)) {
    let text = sources.file(file).text();
    let mut p = Parser {
        lex: Lexer::resume(text, file, at),
        peeked: None,
        sources,
        sink,
    };
    let block = p.block_body(open, 1);
    let end = p.lex.position();
    (block, end)
}

struct Parser<'a, 's> {
    lex: Lexer<'a>,
    peeked: Option<Token>,
    sources: &'a SourceMap,
    sink: &'s mut Sink,
}

/// How a statement ended.
enum End {
    /// At the end of its line.
    Line,
    /// At a `}` on its own line (already consumed): the enclosing block is closed.
    Close(Span),
}

impl Parser<'_, '_> {
    fn next(&mut self) -> Token {
        self.peeked.take().unwrap_or_else(|| self.lex.next_token())
    }

    fn push_back(&mut self, t: Token) {
        self.peeked = Some(t);
    }

    fn skip_line(&mut self) {
        if let Some(t) = self.peeked.take()
            && matches!(t.tok, Tok::Newline | Tok::Eof)
        {
            self.peeked = Some(t);
            return;
        }
        self.lex.skip_line();
    }

    fn error(&mut self, span: Span, kind: ErrorKind) {
        let loc = self.sources.location(span);
        self.sink.error(loc, kind);
    }

    fn found(&self, t: &Token) -> String {
        describe(self.sources, t)
    }

    /// Reports that `expected` was expected where `t` stands.
    fn expected(&mut self, t: &Token, expected: &str) {
        let found = self.found(t);
        self.error(
            t.span,
            ErrorKind::Expected {
                expected: expected.into(),
                found,
            },
        );
    }

    /// Consumes the end of the line after `brace`; anything else there is reported and the
    /// rest of the line skipped.
    fn end_of_line_after(&mut self, brace: &str) {
        let after = self.next();
        match after.tok {
            Tok::Newline => {}
            Tok::Eof => self.push_back(after),
            _ => {
                self.expected(&after, &format!("end of line after \"{brace}\""));
                self.skip_line();
            }
        }
    }

    fn top_item(&mut self, stmt: Statement) -> Item {
        if !is_includefile(&stmt) {
            return Item::Statement(stmt);
        }
        match (stmt.args.first(), stmt.args.len(), &stmt.block) {
            (
                Some(Token {
                    tok: Tok::Str(path),
                    span,
                }),
                1,
                None,
            ) => Item::Include(Include {
                path: path.clone(),
                path_span: *span,
                span: stmt.span,
                target: None,
            }),
            _ => {
                let (span, found) = match stmt.args.first() {
                    Some(t) if !matches!(t.tok, Tok::Str(_)) => (t.span, self.found(t)),
                    Some(_) => {
                        let t = &stmt.args[1.min(stmt.args.len() - 1)];
                        (t.span, self.found(t))
                    }
                    None => (stmt.head.span, "end of line".to_string()),
                };
                let expected = if stmt.args.len() > 1 {
                    "end of line after the included file name"
                } else {
                    "a quoted file name"
                };
                self.error(
                    span,
                    ErrorKind::Expected {
                        expected: expected.into(),
                        found,
                    },
                );
                // Keep it as a statement so stage 2 does not report it again as unknown.
                Item::Statement(Statement {
                    args: Vec::new(),
                    block: None,
                    ..stmt
                })
            }
        }
    }

    /// Parses the rest of a statement whose head was just read. Returns `None` when the line
    /// was broken (the error is already reported and the line skipped).
    fn statement(&mut self, head: Token, depth: usize) -> Option<(Statement, End)> {
        let mut span = head.span;
        let mut args = Vec::new();
        loop {
            let t = self.next();
            match t.tok {
                Tok::Newline | Tok::Eof => {
                    if t.tok == Tok::Eof {
                        self.push_back(t);
                    }
                    let stmt = Statement {
                        head,
                        args,
                        block: None,
                        span,
                    };
                    return Some((stmt, End::Line));
                }
                Tok::LBrace => {
                    let open = t.span;
                    self.end_of_line_after("{");
                    if depth + 1 > MAX_DEPTH {
                        self.error(
                            open,
                            ErrorKind::Other(format!("blocks nested more than {MAX_DEPTH} deep")),
                        );
                        // Skip everything: nothing sensible can follow.
                        loop {
                            let t = self.next();
                            if t.tok == Tok::Eof {
                                self.push_back(t);
                                break;
                            }
                        }
                        return None;
                    }
                    let block = self.block_body(open, depth + 1);
                    let mut end = End::Line;
                    if depth == 0 {
                        // After the outermost `}` only the end of the line may follow.
                        self.end_of_line_after("}");
                    } else {
                        let after = self.next();
                        match after.tok {
                            Tok::Newline => {}
                            Tok::Eof => self.push_back(after),
                            Tok::RBrace => {
                                // `}}`: the inner block closes, so does the outer one.
                                self.expected(&after, "end of line after \"}\"");
                                end = End::Close(after.span);
                            }
                            _ => {
                                self.expected(&after, "end of line after \"}\"");
                                self.skip_line();
                            }
                        }
                    }
                    let stmt = Statement {
                        head,
                        args,
                        block: Some(block),
                        span,
                    };
                    return Some((stmt, end));
                }
                Tok::RBrace => {
                    self.error(
                        t.span,
                        ErrorKind::Expected {
                            expected: "end of line (a \"}\" must be on a line of its own)".into(),
                            found: "\"}\"".into(),
                        },
                    );
                    self.skip_line();
                    let stmt = Statement {
                        head,
                        args,
                        block: None,
                        span,
                    };
                    // Treat it as closing the block, which is what the writer meant.
                    return Some((
                        stmt,
                        if depth > 0 {
                            End::Close(t.span)
                        } else {
                            End::Line
                        },
                    ));
                }
                Tok::Unterminated => {
                    self.error(t.span, ErrorKind::UnterminatedString);
                    self.skip_line();
                    return None;
                }
                Tok::Other(_) => {
                    self.expected(&t, "a word, a number or a quoted string");
                    self.skip_line();
                    return None;
                }
                Tok::Word(_)
                | Tok::Str(_)
                | Tok::Int(_)
                | Tok::Real(_)
                | Tok::BigInt
                | Tok::Comma => {
                    span = span.to(t.span);
                    args.push(t);
                }
            }
        }
    }

    fn block_body(&mut self, open: Span, depth: usize) -> Block {
        let mut body = Vec::new();
        loop {
            let t = self.next();
            match t.tok {
                Tok::Newline => {}
                Tok::Eof => {
                    self.error(open, ErrorKind::UnclosedBlock);
                    self.push_back(t.clone());
                    return Block {
                        open,
                        close: t.span,
                        body,
                    };
                }
                Tok::RBrace => {
                    return Block {
                        open,
                        close: t.span,
                        body,
                    };
                }
                Tok::Word(_) | Tok::Str(_) => {
                    if let Some((stmt, end)) = self.statement(t, depth) {
                        if is_includefile(&stmt) {
                            self.error(
                                stmt.head.span,
                                ErrorKind::Other(
                                    "includefile is only allowed outside blocks".into(),
                                ),
                            );
                        } else {
                            body.push(stmt);
                        }
                        if let End::Close(close) = end {
                            return Block { open, close, body };
                        }
                    }
                }
                _ => {
                    self.expected(&t, "a keyword, a definition name or \"}\"");
                    self.skip_line();
                }
            }
        }
    }
}

fn is_includefile(stmt: &Statement) -> bool {
    matches!(&stmt.head.tok, Tok::Word(w) if w.eq_ignore_ascii_case("includefile"))
}

/// How a token reads in an error message: its source text in quotes, or a description.
pub(crate) fn describe(sources: &SourceMap, t: &Token) -> String {
    match t.tok {
        Tok::Newline => "end of line".into(),
        Tok::Eof => "end of file".into(),
        Tok::Unterminated => "an unterminated string".into(),
        _ => format!("{:?}", sources.snippet(t.span)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (SyntaxFile, Vec<String>) {
        let mut sources = SourceMap::new();
        let id = sources.add("t.conf", text.as_bytes().to_vec());
        let mut sink = Sink::default();
        let f = parse_file(&sources, id, &mut sink);
        (f, sink.errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn statements_blocks_and_includes_have_spans() {
        let (f, errs) = parse(
            "org \"x\"\ndefine dumptype d {\n  global\n  index yes\n}\nincludefile \"a.conf\"\n",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(f.items.len(), 3);
        let Item::Statement(def) = &f.items[1] else {
            panic!()
        };
        assert_eq!(def.head_text(), "define");
        let block = def.block.as_ref().unwrap();
        assert_eq!(block.body.len(), 2);
        assert_eq!((block.close.line, block.close.column), (5, 1));
        let Item::Include(inc) = &f.items[2] else {
            panic!()
        };
        assert_eq!(inc.path, "a.conf");
        assert_eq!((inc.path_span.line, inc.path_span.column), (6, 13));
    }

    #[test]
    fn brace_must_end_its_line_and_close_brace_must_start_one() {
        let (_, errs) = parse("define dumptype d { x\n  index yes }\n");
        assert_eq!(
            errs,
            vec![
                "t.conf:1:21: expected end of line after \"{\", found \"x\"",
                "t.conf:2:13: expected end of line (a \"}\" must be on a line of its own), found \"}\"",
            ]
        );
    }

    #[test]
    fn unclosed_block_and_stray_close_are_errors() {
        let (_, errs) = parse("}\ndefine dumptype d {\n index\n");
        assert_eq!(
            errs,
            vec![
                "t.conf:1:1: \"}\" without a matching \"{\"",
                "t.conf:2:19: \"{\" is not closed by a \"}\" before the end of the file",
            ]
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_recursing_forever() {
        let text = "a {\n".repeat(1000);
        let (_, errs) = parse(&text);
        assert!(
            errs.iter().any(|e| e.contains("nested more than")),
            "{errs:?}"
        );
    }
}
