//! The XML form of DLEs (spec §6.3): a GMarkup-compatible parser with `amxml.c`'s element
//! rules, and the real server's encoders.
//!
//! Parsing. The services read the XML part of their stdin line by line with `pgets`, which
//! drops every newline before GMarkup sees it; [`parse_dles`] does the same (so
//! `<disk>a\nb</disk>` names the disk `ab`), [`parse_dles_text`] keeps newlines (what
//! `amxml_parse_node_CHAR` sees, e.g. for the DLE of a dump-file header). The GMarkup part:
//! one or more top-level elements with only whitespace between them, entities `&lt; &gt;
//! &amp; &quot; &apos;` and character references, comments, processing instructions, CDATA
//! and `<!...>` declarations skipped (GMarkup passes them to a callback amxml does not set),
//! UTF-8 required. The amxml part: the element set and nesting of §6.3, singletons, the
//! `encoding="raw" raw="BASE64"` attribute whose decoded value replaces the text, no other
//! attribute, whitespace-only text ignored, trailing spaces trimmed. Errors carry amxml's text
//! ([`XmlErrorKind`]'s `Display`) plus the line and column in the input.
//!
//! Encoding. [`Dle::to_xml`] writes exactly what the 3.5.1 server writes for the same DLE
//! and the same client features, in the layout of each request ([`XmlLayout`]). Values that
//! amxml escapes (disk, device, plugin, property names and values, file names, ...) use the
//! raw/base64 rule of `amxml_format_tag`. Values the real server writes unescaped (program,
//! auth, custom compress/encrypt programs, decrypt option, execute_on) are written the same
//! way when they are safe, and with the raw rule when they contain a byte that would break
//! the XML (where 3.5.1 would send something its own clients cannot parse).
//!
//! What this module must not do: accept a DLE a 3.5.1 client would refuse, or panic.

use std::fmt;

use base64::Engine as _;

use super::Dle;
use crate::features::Features;
use crate::quote::ByteString;

/// What went wrong, with amxml's (or GMarkup's) wording in `Display`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlErrorKind {
    /// No element at all.
    Empty,
    /// Non-whitespace text outside any element.
    MustBeginWithElement,
    /// The input ended inside a tag, comment or element; `open` is the innermost element.
    UnexpectedEnd {
        /// The innermost open element, if any.
        open: Option<String>,
    },
    /// A malformed tag or attribute (GMarkup syntax error), described.
    Syntax(&'static str),
    /// An element or attribute name that is not a valid XML name.
    InvalidName(ByteString),
    /// Text, a name or an attribute value that is not UTF-8.
    InvalidUtf8,
    /// `&name;` with an unknown name.
    UnknownEntity(ByteString),
    /// A malformed entity or character reference.
    BadEntity(ByteString),
    /// `</b>` while `<a>` is open.
    MismatchedClose {
        /// The closing tag's name.
        closed: String,
        /// The open element.
        open: String,
    },
    /// A closing tag with no open element.
    CloseWithoutOpen(String),
    /// An attribute other than `encoding` and `raw`.
    InvalidAttribute {
        /// The attribute.
        attribute: String,
        /// Its element.
        element: String,
    },
    /// An unknown element, or one in the wrong place.
    InvalidElement(String),
    /// A second singleton element in a `<dle>`.
    DuplicateElement(String),
    /// A second `<plugin>` or `<name>` in its parent.
    DuplicateIn {
        /// The element.
        element: String,
        /// Its parent.
        parent: String,
    },
    /// Text directly inside `dle`, `backup-program`, `exclude` or `include`.
    NoTextAllowed {
        /// The element.
        element: String,
        /// The text.
        text: ByteString,
    },
    /// Two texts for one value.
    MultipleText(String),
    /// A value that is not allowed (e.g. `<index>MAYBE</index>`).
    InvalidValue {
        /// The element.
        element: String,
        /// The value.
        value: ByteString,
    },
    /// `<estimate>` with an unknown kind.
    BadEstimate(ByteString),
    /// `<datapath>` other than `AMANDA`/`DIRECTTCP`.
    BadDatapath(ByteString),
    /// `APPLICATION` without a `<backup-program>` plugin.
    ApplicationWithoutPlugin,
    /// `<backup-program>` without `<plugin>`.
    NoPluginForApplication,
    /// `<script>` without `<plugin>`.
    NoPluginForScript,
    /// `<property>` without `<name>` (3.5.1 crashes; we refuse).
    PropertyWithoutName,
    /// Text in an element that takes none (e.g. `<property>`).
    TextNotDefined(String),
    /// An element that 3.5.1 only handles inside a specific parent (3.5.1 aborts).
    Outside {
        /// The element.
        element: &'static str,
        /// Where it must be.
        parent: &'static str,
    },
}

impl fmt::Display for XmlErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XmlErrorKind::Empty => f.write_str("Document was empty or contained only whitespace"),
            XmlErrorKind::MustBeginWithElement => {
                f.write_str("Document must begin with an element (e.g. <book>)")
            }
            XmlErrorKind::UnexpectedEnd { open: Some(e) } => write!(
                f,
                "Document ended unexpectedly with elements still open — “{e}” was the last element opened"
            ),
            XmlErrorKind::UnexpectedEnd { open: None } => {
                f.write_str("Document ended unexpectedly")
            }
            XmlErrorKind::Syntax(what) => f.write_str(what),
            XmlErrorKind::InvalidName(n) => write!(f, "“{n}” is not a valid name"),
            XmlErrorKind::InvalidUtf8 => f.write_str("Invalid UTF-8 encoded text"),
            XmlErrorKind::UnknownEntity(n) => write!(f, "Entity name “{n}” is not known"),
            XmlErrorKind::BadEntity(n) => write!(f, "Bad entity or character reference “{n}”"),
            XmlErrorKind::MismatchedClose { closed, open } => {
                write!(
                    f,
                    "Element “{closed}” was closed, but the currently open element is “{open}”"
                )
            }
            XmlErrorKind::CloseWithoutOpen(e) => {
                write!(f, "Element “{e}” was closed, no element is currently open")
            }
            XmlErrorKind::InvalidAttribute { attribute, element } => {
                write!(
                    f,
                    "XML: Invalid attribute '{attribute}' for {element} element"
                )
            }
            XmlErrorKind::InvalidElement(e) if e == "dle" => {
                f.write_str("XML: Invalid dle element")
            }
            XmlErrorKind::InvalidElement(e) => write!(f, "XML: Invalid {e} element"),
            XmlErrorKind::DuplicateElement(e) => write!(f, "XML: Duplicate {e} element"),
            XmlErrorKind::DuplicateIn { element, parent } => {
                write!(f, "XML: Duplicate {element} element in '{parent}'")
            }
            XmlErrorKind::NoTextAllowed { element, text } => {
                write!(f, "XML: {element} doesn't have text '{text}'")
            }
            XmlErrorKind::MultipleText(e) => write!(f, "XML: multiple text in {e}"),
            XmlErrorKind::InvalidValue { element, value } => {
                write!(f, "XML: Invalid {element} ({value})")
            }
            XmlErrorKind::BadEstimate(v) => write!(f, "XML: bad estimate: {v}"),
            XmlErrorKind::BadDatapath(v) => write!(f, "XML: bad datapath value '{v}'"),
            XmlErrorKind::ApplicationWithoutPlugin => {
                f.write_str("XML: program set to APPLICATION but no application set")
            }
            XmlErrorKind::NoPluginForApplication => {
                f.write_str("XML: No plugin set for application")
            }
            XmlErrorKind::NoPluginForScript => f.write_str("XML: No plugin set for script"),
            XmlErrorKind::PropertyWithoutName => f.write_str("XML: No name set for property"),
            XmlErrorKind::TextNotDefined(e) => write!(f, "XML: amtext not defined for '{e}'"),
            XmlErrorKind::Outside { element, parent } => {
                write!(f, "XML: {element} outside of {parent}")
            }
        }
    }
}

/// A parse error: what and where (1-based line and column, in bytes, of the input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} (line {line}, column {column})")]
pub struct XmlError {
    /// What went wrong.
    pub kind: XmlErrorKind,
    /// 1-based line in the input.
    pub line: usize,
    /// 1-based byte column in that line.
    pub column: usize,
}

impl XmlError {
    /// The message a 3.5.1 client puts into `FORMAT ERROR IN REQUEST PACKET '<message>'`.
    pub fn amanda_message(&self) -> String {
        self.kind.to_string()
    }
}

/// Why a sendbackup request does not hold exactly one DLE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SingleDleError {
    /// The XML is invalid.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// No `<dle>`.
    #[error("One DLE required")]
    NoDle,
    /// More than one `<dle>`.
    #[error("Only one DLE allowed")]
    TooMany,
}

impl SingleDleError {
    /// The text the real sendbackup puts into `FORMAT ERROR IN REQUEST PACKET '<text>'`.
    pub fn amanda_message(&self) -> String {
        match self {
            SingleDleError::Xml(e) => e.amanda_message(),
            other => other.to_string(),
        }
    }
}

/// Parses the XML part of a service's stdin as the services do (newlines removed first).
pub fn parse_dles(input: &[u8]) -> Result<Vec<Dle>, XmlError> {
    parse::Parser::new(input, true).run()
}

/// Parses DLE XML with newlines kept (as `amxml_parse_node_CHAR`, e.g. a header's DLE).
pub fn parse_dles_text(input: &[u8]) -> Result<Vec<Dle>, XmlError> {
    parse::Parser::new(input, false).run()
}

/// Parses a sendbackup request's XML, which must hold exactly one DLE.
pub fn parse_single_dle(input: &[u8]) -> Result<Dle, SingleDleError> {
    let mut dles = parse_dles(input)?;
    match dles.len() {
        0 => Err(SingleDleError::NoDle),
        1 => dles.pop().ok_or(SingleDleError::NoDle),
        _ => Err(SingleDleError::TooMany),
    }
}

// ---------------------------------------------------------------------------------------
// Encoding.

/// Which request the XML is for: the real server lays the elements out differently in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XmlLayout {
    /// amcheck's selfcheck request: program, [backup-program], estimate, disk, [device],
    /// options; no levels.
    Selfcheck,
    /// planner's sendsize request: program, [backup-program], estimate, disk, [device],
    /// levels (with `<server>YES</server>` when set and supported), the oddly indented
    /// `    <spindle>`, options. (The planner's DLE text has no final newline; it adds one
    /// when joining DLEs, so the bytes are the same.)
    Sendsize,
    /// dumper's sendbackup request, cleaned for the client: program, disk, [device], level,
    /// options, [dumptype properties], [backup-program]; never `SERVER-CUSTOM` encryption,
    /// and dumptype properties only with `fe_dumptype_property` (or when scripts are present,
    /// a quirk of 3.5.1's cleaning).
    Sendbackup,
    /// The same as [`XmlLayout::Sendbackup`] before cleaning: what the dumper stores in the
    /// dump-file header (`DLE=<<ENDDLE`).
    HeaderDle,
    /// ambackupd's CHECK reply (spec §14.3): the selfcheck layout without `<auth>` and
    /// `<datapath>` (ambackupd writes neither; the client's own selfcheck reads the DLE).
    AmbackupdCheck,
    /// ambackupd's BACKUP reply (spec §14.3): program, [backup-program], disk, [device],
    /// levels, options without `<auth>` and `<datapath>`.
    AmbackupdBackup,
}

/// The rest of an opening tag that carries `value` raw: ` encoding="raw" raw="BASE64">`
/// and the value with every byte [`needs_raw`] as `_`.
pub(crate) fn push_raw(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(b" encoding=\"raw\" raw=\"");
    out.extend_from_slice(
        base64::engine::general_purpose::STANDARD
            .encode(value)
            .as_bytes(),
    );
    out.extend_from_slice(b"\">");
    out.extend(value.iter().map(|&b| if needs_raw(b) { b'_' } else { b }));
}

/// `amxml_format_tag`: `<tag>value</tag>`, or, when the value has a byte <= 0x20, >= 0x80
/// or one of `< > " & \ '`, `<tag encoding="raw" raw="BASE64">value-with-those-as-_</tag>`.
pub fn format_tag(tag: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * tag.len() + value.len() + 5);
    out.push(b'<');
    out.extend_from_slice(tag.as_bytes());
    if value.iter().copied().any(needs_raw) {
        push_raw(&mut out, value);
    } else {
        out.push(b'>');
        out.extend_from_slice(value);
    }
    out.extend_from_slice(b"</");
    out.extend_from_slice(tag.as_bytes());
    out.push(b'>');
    out
}

pub(super) fn needs_raw(b: u8) -> bool {
    b <= b' ' || b >= 0x80 || matches!(b, b'<' | b'>' | b'"' | b'&' | b'\\' | b'\'')
}

/// The DLE part of a request: each DLE's [`Dle::to_xml`], concatenated.
pub fn encode_dles(dles: &[Dle], layout: XmlLayout, client: &Features) -> Vec<u8> {
    dles.iter().flat_map(|d| d.to_xml(layout, client)).collect()
}

mod encode;
mod parse;

#[cfg(test)]
mod tests;
