//! Source files, spans and locations.
//!
//! Every token the parsers produce carries a [`Span`]: which file, which bytes, and the
//! 1-based line and column where it starts. A [`SourceMap`] owns the text of every file read
//! for one configuration (the main file, each `includefile`, the disklist) so that messages
//! can quote the offending text. A [`Location`] is the self-contained, printable form
//! (`path:line:column`) that errors and warnings carry, so they can be shown without the map.
//!
//! What this module must not do: read files (see [`crate::fs`]).

use std::fmt;
use std::sync::Arc;

/// Index of a file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub(crate) u32);

impl FileId {
    /// The pseudo-file `<built-in>` that holds Amanda's predefined dumptypes.
    pub const BUILTIN: FileId = FileId(0);
}

/// A range of bytes in one source file, with the line and column of its first byte.
///
/// Columns count characters: bytes that are not UTF-8 continuation bytes, so a Latin-1
/// file counts bytes and a UTF-8 file counts code points. Tabs count as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    /// The file.
    pub file: FileId,
    /// First byte (offset into the file).
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
    /// 1-based line of `start`.
    pub line: u32,
    /// 1-based column of `start`.
    pub column: u32,
}

impl Span {
    /// The span of `<built-in>` definitions.
    pub const BUILTIN: Span = Span {
        file: FileId::BUILTIN,
        start: 0,
        end: 0,
        line: 0,
        column: 0,
    };

    /// The smallest span covering `self` and `other` (same file; `self` must start first).
    pub fn to(self, other: Span) -> Span {
        Span {
            end: other.end.max(self.end),
            ..self
        }
    }
}

/// One source file: the path it was read from (as shown in messages) and its bytes.
#[derive(Clone, Debug)]
pub struct SourceFile {
    path: Arc<str>,
    text: Vec<u8>,
}

impl SourceFile {
    /// The path as shown in messages.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The file's bytes.
    pub fn text(&self) -> &[u8] {
        &self.text
    }
}

/// The files of one configuration, addressed by [`FileId`].
#[derive(Clone, Debug)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl Default for SourceMap {
    fn default() -> Self {
        Self::new()
    }
}

impl SourceMap {
    /// An empty map (holding only `<built-in>`).
    pub fn new() -> Self {
        SourceMap {
            files: vec![SourceFile {
                path: Arc::from("<built-in>"),
                text: Vec::new(),
            }],
        }
    }

    /// Adds a file and returns its id. Files larger than 4 GiB are truncated: spans are u32.
    pub fn add(&mut self, path: impl Into<String>, mut text: Vec<u8>) -> FileId {
        text.truncate(u32::MAX as usize);
        let id = FileId(u32::try_from(self.files.len()).unwrap_or(u32::MAX));
        self.files.push(SourceFile {
            path: Arc::from(path.into()),
            text,
        });
        id
    }

    /// The file with this id. Ids come from [`SourceMap::add`] on this map; an unknown id
    /// gives the `<built-in>` file rather than a panic.
    pub fn file(&self, id: FileId) -> &SourceFile {
        self.files
            .get(id.0 as usize)
            .unwrap_or_else(|| &self.files[0])
    }

    /// All files, `<built-in>` first.
    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(i as u32), f))
    }

    /// The bytes a span covers (empty if the span does not fit the file).
    pub fn bytes(&self, span: Span) -> &[u8] {
        self.file(span.file)
            .text
            .get(span.start as usize..span.end as usize)
            .unwrap_or(&[])
    }

    /// The text a span covers, lossily decoded, for messages.
    pub fn snippet(&self, span: Span) -> String {
        String::from_utf8_lossy(self.bytes(span)).into_owned()
    }

    /// The printable location of a span's start.
    pub fn location(&self, span: Span) -> Location {
        Location {
            file: self.file(span.file).path.clone(),
            line: span.line,
            column: span.column,
        }
    }
}

/// A printable place in a file: `path:line:column`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file's path as it was opened.
    pub file: Arc<str>,
    /// 1-based line (0 for `<built-in>`).
    pub line: u32,
    /// 1-based column (0 for `<built-in>`).
    pub column: u32,
}

impl Location {
    /// A location with no line, e.g. for a file that could not be opened.
    pub fn file_only(file: &str) -> Location {
        Location {
            file: Arc::from(file),
            line: 0,
            column: 0,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

/// A value together with the span it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}
