//! The GMarkup-compatible tokenizer and `amxml.c`'s element callbacks (see the parent
//! module for the rules).

use base64::Engine as _;

use super::XmlErrorKind;
use crate::dle::{
    Application, Compress, DataPath, Dle, Encrypt, Estimate, ExecuteWhere, FileList, Level,
    Property, Script,
};
use crate::quote::{ByteString, atoi, is_space, until_nul};

/// One parse: the input (with newlines removed in the services' mode), GMarkup's element
/// stack, and amxml's state.
pub(super) struct Parser<'a> {
    original: &'a [u8],
    src: Vec<u8>,
    /// For newline-stripped input: filtered offsets at which a newline was removed.
    removed: Vec<usize>,
    pos: usize,
    stack: Vec<String>,
    amxml: Amxml,
}

type Res<T> = Result<T, XmlErrorKind>;

impl<'a> Parser<'a> {
    pub(super) fn new(input: &'a [u8], strip_newlines: bool) -> Parser<'a> {
        let original = until_nul(input);
        let mut src = Vec::with_capacity(original.len());
        let mut removed = Vec::new();
        for &b in original {
            if strip_newlines && b == b'\n' {
                removed.push(src.len());
            } else {
                src.push(b);
            }
        }
        Parser {
            original,
            src,
            removed,
            pos: 0,
            stack: Vec::new(),
            amxml: Amxml::default(),
        }
    }

    fn error_at(&self, kind: XmlErrorKind, pos: usize) -> super::XmlError {
        let orig = pos + self.removed.partition_point(|&r| r <= pos);
        let orig = orig.min(self.original.len());
        let before = &self.original[..orig];
        let line = 1 + memchr::memchr_iter(b'\n', before).count();
        let column = 1 + orig - memchr::memrchr(b'\n', before).map_or(0, |n| n + 1);
        super::XmlError { kind, line, column }
    }

    pub(super) fn run(mut self) -> Result<Vec<Dle>, super::XmlError> {
        let mut seen_element = false;
        loop {
            if self.stack.is_empty() {
                self.skip_spaces();
                if self.pos >= self.src.len() {
                    break;
                }
            }
            let start = self.pos;
            let step = match self.src.get(self.pos) {
                Some(b'<') => self.markup().map(|elem| seen_element |= elem),
                Some(_) if self.stack.is_empty() => Err(XmlErrorKind::MustBeginWithElement),
                _ => self.text(),
            };
            if let Err(kind) = step {
                return Err(self.error_at(kind, start));
            }
        }
        if !seen_element {
            return Err(self.error_at(XmlErrorKind::Empty, self.src.len()));
        }
        Ok(self.amxml.dles)
    }

    /// Text up to the next `<` (inside an element). Reaching the end is an error.
    fn text(&mut self) -> Res<()> {
        let rest = &self.src[self.pos..];
        let Some(len) = memchr::memchr(b'<', rest) else {
            self.pos = self.src.len();
            return Err(XmlErrorKind::UnexpectedEnd {
                open: self.stack.last().cloned(),
            });
        };
        let raw = &rest[..len];
        let text = unescape(raw, false)?;
        std::str::from_utf8(&text).map_err(|_| XmlErrorKind::InvalidUtf8)?;
        self.pos += len;
        self.amxml.text(&self.stack, &text)
    }

    /// Markup starting at `<`. Returns whether it was an element (start or empty tag).
    fn markup(&mut self) -> Res<bool> {
        let rest = &self.src[self.pos..];
        let skip_to = |pat: &[u8], from: usize| -> Res<usize> {
            memchr::memmem::find(rest.get(from..).unwrap_or_default(), pat)
                .map(|n| from + n + pat.len())
                .ok_or(XmlErrorKind::UnexpectedEnd { open: None })
        };
        // Comments, CDATA, declarations and processing instructions are skipped (the first
        // match wins, so `<!--` and `<![CDATA[` come before `<!`).
        for (open, close) in [
            (&b"<!--"[..], &b"-->"[..]),
            (b"<![CDATA[", b"]]>"),
            (b"<!", b">"),
            (b"<?", b"?>"),
        ] {
            if rest.starts_with(open) {
                self.pos += skip_to(close, open.len())?;
                return Ok(false);
            }
        }
        if rest.starts_with(b"</") {
            self.pos += 2;
            let name = self.name()?;
            self.skip_spaces();
            match self.src.get(self.pos) {
                Some(b'>') => self.pos += 1,
                Some(_) => {
                    return Err(XmlErrorKind::Syntax(
                        "Odd character in closing tag, expected '>'",
                    ));
                }
                None => {
                    return Err(XmlErrorKind::UnexpectedEnd {
                        open: self.stack.last().cloned(),
                    });
                }
            }
            self.close(name)?;
            return Ok(false);
        }
        self.pos += 1;
        let name = self.name()?;
        let mut attributes: Vec<(String, Vec<u8>)> = Vec::new();
        loop {
            let had_space = self.skip_spaces();
            match self.src.get(self.pos) {
                None => {
                    return Err(XmlErrorKind::UnexpectedEnd {
                        open: self.stack.last().cloned(),
                    });
                }
                Some(b'>') => {
                    self.pos += 1;
                    self.open(name, &attributes)?;
                    return Ok(true);
                }
                Some(b'/') => {
                    self.pos += 1;
                    match self.src.get(self.pos) {
                        Some(b'>') => self.pos += 1,
                        None => return Err(XmlErrorKind::UnexpectedEnd { open: None }),
                        Some(_) => {
                            return Err(XmlErrorKind::Syntax(
                                "Odd character after '/', expected '>'",
                            ));
                        }
                    }
                    self.open(name.clone(), &attributes)?;
                    self.close(name)?;
                    return Ok(true);
                }
                Some(_) if !had_space && !attributes.is_empty() => {
                    return Err(XmlErrorKind::Syntax(
                        "Attributes must be separated by whitespace",
                    ));
                }
                Some(_) => {
                    let attr = self.name()?;
                    self.skip_spaces();
                    if self.src.get(self.pos) != Some(&b'=') {
                        return Err(match self.src.get(self.pos) {
                            None => XmlErrorKind::UnexpectedEnd { open: None },
                            Some(_) => XmlErrorKind::Syntax(
                                "Odd character after attribute name, expected '='",
                            ),
                        });
                    }
                    self.pos += 1;
                    self.skip_spaces();
                    let quote = match self.src.get(self.pos) {
                        Some(&q @ (b'"' | b'\'')) => q,
                        None => return Err(XmlErrorKind::UnexpectedEnd { open: None }),
                        Some(_) => {
                            return Err(XmlErrorKind::Syntax(
                                "Odd character, expected an open quote mark",
                            ));
                        }
                    };
                    self.pos += 1;
                    let value_rest = &self.src[self.pos..];
                    let Some(len) = memchr::memchr(quote, value_rest) else {
                        self.pos = self.src.len();
                        return Err(XmlErrorKind::UnexpectedEnd { open: None });
                    };
                    let value = unescape(&value_rest[..len], true)?;
                    std::str::from_utf8(&value).map_err(|_| XmlErrorKind::InvalidUtf8)?;
                    self.pos += len + 1;
                    attributes.push((attr, value));
                }
            }
        }
    }

    fn skip_spaces(&mut self) -> bool {
        let start = self.pos;
        while self.src.get(self.pos).is_some_and(|&b| is_space(b)) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// An XML name (GMarkup's rule: letter, `_` or `:` first; then letters, digits,
    /// `.`, `-`, `_`, `:`; non-ASCII UTF-8 accepted as letters).
    fn name(&mut self) -> Res<String> {
        let rest = &self.src[self.pos..];
        let len = rest
            .iter()
            .position(|&b| is_space(b) || matches!(b, b'=' | b'/' | b'>' | b'<'))
            .unwrap_or(rest.len());
        if len == rest.len() {
            self.pos = self.src.len();
            return Err(XmlErrorKind::UnexpectedEnd {
                open: self.stack.last().cloned(),
            });
        }
        let raw = &rest[..len];
        let name = std::str::from_utf8(raw).map_err(|_| XmlErrorKind::InvalidUtf8)?;
        let mut chars = name.chars();
        let valid_first = chars
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_' || c == ':');
        let valid_rest = chars.all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !valid_first || !valid_rest {
            return Err(XmlErrorKind::InvalidName(raw.into()));
        }
        self.pos += len;
        Ok(name.to_owned())
    }

    fn open(&mut self, name: String, attributes: &[(String, Vec<u8>)]) -> Res<()> {
        self.amxml.start(&self.stack, &name, attributes)?;
        self.stack.push(name);
        Ok(())
    }

    fn close(&mut self, name: String) -> Res<()> {
        match self.stack.last() {
            None => return Err(XmlErrorKind::CloseWithoutOpen(name)),
            Some(open) if *open != name => {
                return Err(XmlErrorKind::MismatchedClose {
                    closed: name,
                    open: open.clone(),
                });
            }
            Some(_) => {}
        }
        self.stack.pop();
        self.amxml.end(&name)
    }
}

/// GMarkup's `unescape_gstring_inplace`: CR LF and lone CR become LF; in attributes tab
/// and LF become a space; entities and character references are decoded.
fn unescape(raw: &[u8], attribute: bool) -> Res<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        i += 1;
        let mut c = b;
        if c == b'\r' {
            c = b'\n';
            if raw.get(i) == Some(&b'\n') {
                i += 1;
            }
        }
        if attribute && (c == b'\t' || c == b'\n') {
            c = b' ';
        }
        if c != b'&' {
            out.push(c);
            continue;
        }
        let rest = raw.get(i..).unwrap_or_default();
        let Some(semi) = memchr::memchr(b';', rest) else {
            return Err(XmlErrorKind::BadEntity(
                rest.iter().take(16).copied().collect::<Vec<_>>().into(),
            ));
        };
        let entity = &rest[..semi];
        i += semi + 1;
        match entity {
            b"lt" => out.push(b'<'),
            b"gt" => out.push(b'>'),
            b"amp" => out.push(b'&'),
            b"quot" => out.push(b'"'),
            b"apos" => out.push(b'\''),
            [b'#', digits @ ..] => {
                let (radix, digits) = match digits {
                    [b'x', hex @ ..] => (16, hex),
                    _ => (10, digits),
                };
                let value = std::str::from_utf8(digits)
                    .ok()
                    .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|d| u32::from_str_radix(d, radix).ok())
                    .filter(|&v| matches!(v, 1..=0xD7FF | 0xE000..=0xFFFD | 0x1_0000..=0x10_FFFF))
                    .and_then(char::from_u32)
                    .ok_or_else(|| XmlErrorKind::BadEntity(entity.into()))?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(value.encode_utf8(&mut buf).as_bytes());
            }
            [] => return Err(XmlErrorKind::BadEntity(b"&;".into())),
            other => return Err(XmlErrorKind::UnknownEntity(other.into())),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// amxml.c's callbacks.

/// Which table a `<property>` goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PropertyTarget {
    Dle,
    Application,
    Script,
}

#[derive(Debug, Default)]
struct DleState {
    dle: Dle,
    /// amxml's `dle->program`: the `<program>` text, or the backup-program plugin.
    program: Option<ByteString>,
    application_api: bool,
    has_program_text: bool,
    has_calcsize: bool,
    has_estimate: bool,
    has_record: bool,
    has_spindle: bool,
    has_compress: bool,
    has_encrypt: bool,
    has_kencrypt: bool,
    has_datapath: bool,
    has_exclude: bool,
    has_include: bool,
    has_index: bool,
    has_backup_program: bool,
    has_plugin: bool,
    has_optional: bool,
    compprog: Option<ByteString>,
    encrypt_kind: u8, // 0 none, 1 custom, 2 server-custom
    clnt_encrypt: Option<ByteString>,
    clnt_decrypt: Option<ByteString>,
    srv_encrypt: Option<ByteString>,
    srv_decrypt: Option<ByteString>,
    application: Option<Application>,
    script: Option<Script>,
    property: Option<(Option<ByteString>, Property)>,
    property_target: Option<PropertyTarget>,
    level: Option<Level>,
    data_path: Option<DataPath>,
}

#[derive(Debug, Default)]
struct Amxml {
    dles: Vec<Dle>,
    current: Option<DleState>,
    /// The decoded `raw` attribute of the last start tag (amxml keeps it until the next).
    raw: Option<Vec<u8>>,
}

const DLE_CHILDREN: [&str; 17] = [
    "disk",
    "diskdevice",
    "calcsize",
    "estimate",
    "program",
    "auth",
    "index",
    "dumpdate",
    "level",
    "record",
    "spindle",
    "compress",
    "encrypt",
    "kencrypt",
    "datapath",
    "exclude",
    "include",
];

fn invalid(name: &str) -> XmlErrorKind {
    XmlErrorKind::InvalidElement(name.to_owned())
}

fn duplicate(name: &str) -> XmlErrorKind {
    XmlErrorKind::DuplicateElement(name.to_owned())
}

fn yes_no(element: &str, text: &[u8]) -> Res<bool> {
    if text.eq_ignore_ascii_case(b"yes") {
        Ok(true)
    } else if text.eq_ignore_ascii_case(b"no") {
        Ok(false)
    } else {
        Err(XmlErrorKind::InvalidValue {
            element: element.to_owned(),
            value: text.into(),
        })
    }
}

impl Amxml {
    fn state(&mut self, element: &str) -> Res<&mut DleState> {
        self.current.as_mut().ok_or_else(|| invalid(element))
    }

    fn start(&mut self, stack: &[String], name: &str, attributes: &[(String, Vec<u8>)]) -> Res<()> {
        let parent = stack.last().map(String::as_str);
        self.raw = None;
        for (attr, value) in attributes {
            match attr.as_str() {
                "encoding" => {}
                "raw" => {
                    self.raw = base64::engine::general_purpose::STANDARD
                        .decode(value)
                        .ok()
                        .map(|mut v| {
                            v.truncate(until_nul(&v).len());
                            v
                        });
                }
                _ => {
                    return Err(XmlErrorKind::InvalidAttribute {
                        attribute: attr.clone(),
                        element: name.to_owned(),
                    });
                }
            }
        }
        if name == "dle" {
            if parent.is_some() {
                return Err(invalid("dle"));
            }
            self.current = Some(DleState::default());
            self.raw = None;
            return Ok(());
        }
        if DLE_CHILDREN.contains(&name) {
            if parent != Some("dle") {
                return Err(invalid(name));
            }
            let s = self.state(name)?;
            let dup = match name {
                "disk" => s.dle.disk.is_some(),
                "diskdevice" => s.dle.device.is_some(),
                "calcsize" => s.has_calcsize,
                "estimate" => s.has_estimate,
                "record" => s.has_record,
                "spindle" => s.has_spindle,
                "program" => s.program.is_some(),
                "auth" => s.dle.auth.is_some(),
                "index" => s.has_index,
                "dumpdate" => s.dle.dumpdate.is_some(),
                "compress" => s.has_compress,
                "encrypt" => s.has_encrypt,
                "kencrypt" => s.has_kencrypt,
                "datapath" => s.has_datapath,
                "exclude" => s.has_exclude,
                "include" => s.has_include,
                _ => false,
            };
            if dup {
                return Err(duplicate(name));
            }
            match name {
                "calcsize" => s.has_calcsize = true,
                "estimate" => s.has_estimate = true,
                "record" => s.has_record = true,
                "spindle" => s.has_spindle = true,
                "index" => s.has_index = true,
                "compress" => s.has_compress = true,
                "encrypt" => s.has_encrypt = true,
                "kencrypt" => s.has_kencrypt = true,
                "datapath" => s.has_datapath = true,
                "exclude" => {
                    s.has_exclude = true;
                    s.has_optional = false;
                    s.dle.exclude.get_or_insert_with(FileList::default);
                }
                "include" => {
                    s.has_include = true;
                    s.has_optional = false;
                    s.dle.include.get_or_insert_with(FileList::default);
                }
                "level" => s.level = Some(Level::new(0)),
                _ => {}
            }
            return Ok(());
        }
        match name {
            "server" => {
                if parent != Some("level") {
                    return Err(invalid(name));
                }
            }
            "custom-compress-program" => {
                if parent != Some("compress") {
                    return Err(invalid(name));
                }
                if self.state(name)?.compprog.is_some() {
                    return Err(duplicate(name));
                }
            }
            "custom-encrypt-program" | "decrypt-option" => {
                if parent != Some("encrypt") {
                    return Err(invalid(name));
                }
                let s = self.state(name)?;
                let dup = if name == "custom-encrypt-program" {
                    s.clnt_encrypt.is_some()
                } else {
                    s.clnt_decrypt.is_some()
                };
                if dup {
                    return Err(duplicate(name));
                }
            }
            "plugin" => {
                if !matches!(parent, Some("backup-program" | "script")) {
                    return Err(invalid(name));
                }
                if self.state(name)?.has_plugin {
                    return Err(XmlErrorKind::DuplicateIn {
                        element: name.to_owned(),
                        parent: parent.unwrap_or_default().to_owned(),
                    });
                }
            }
            "property" => {
                let target = match parent {
                    Some("backup-program") => PropertyTarget::Application,
                    Some("script") => PropertyTarget::Script,
                    Some("dle") => PropertyTarget::Dle,
                    _ => return Err(invalid(name)),
                };
                let s = self.state(name)?;
                s.property = Some((None, Property::default()));
                s.property_target = Some(target);
            }
            "name" => {
                if parent != Some("property") {
                    return Err(invalid(name));
                }
                let s = self.state(name)?;
                if s.property.as_ref().is_some_and(|(n, _)| n.is_some()) {
                    return Err(XmlErrorKind::DuplicateIn {
                        element: name.to_owned(),
                        parent: "property".to_owned(),
                    });
                }
            }
            "priority" | "value" => {
                if parent != Some("property") {
                    return Err(invalid(name));
                }
            }
            "file" | "list" | "optional" => {
                if !matches!(parent, Some("exclude" | "include")) {
                    return Err(invalid(name));
                }
                let s = self.state(name)?;
                if name == "optional" {
                    if s.has_optional {
                        return Err(duplicate(name));
                    }
                    s.has_optional = true;
                }
            }
            "backup-program" => {
                if parent != Some("dle") {
                    return Err(invalid(name));
                }
                let s = self.state(name)?;
                if s.has_backup_program {
                    return Err(duplicate(name));
                }
                s.has_backup_program = true;
                s.has_plugin = false;
                s.application = Some(Application::default());
            }
            "script" => {
                // 3.5.1 accepts a script anywhere and crashes outside a dle; we refuse.
                if parent != Some("dle") {
                    return Err(invalid(name));
                }
                let s = self.state(name)?;
                s.script = Some(Script::default());
                s.has_plugin = false;
            }
            "execute_on" | "execute_where" => {
                if parent != Some("script") {
                    return Err(XmlErrorKind::Outside {
                        element: "execute_on/execute_where",
                        parent: "script",
                    });
                }
            }
            "directtcp" => {
                if parent != Some("datapath") {
                    return Err(invalid(name));
                }
            }
            "client_name" => {
                if !matches!(parent, Some("backup-program" | "script")) {
                    return Err(XmlErrorKind::Outside {
                        element: "client_name",
                        parent: "script or backup-program",
                    });
                }
            }
            _ => return Err(invalid(name)),
        }
        Ok(())
    }

    fn end(&mut self, name: &str) -> Res<()> {
        match name {
            "property" => {
                let s = self.state(name)?;
                let (prop_name, mut prop) = s.property.take().unwrap_or_default();
                prop.name = prop_name.ok_or(XmlErrorKind::PropertyWithoutName)?;
                let list = match s.property_target.take() {
                    Some(PropertyTarget::Application) => {
                        s.application.as_mut().map(|a| &mut a.properties)
                    }
                    Some(PropertyTarget::Script) => s.script.as_mut().map(|a| &mut a.properties),
                    _ => Some(&mut s.dle.properties),
                };
                if let Some(list) = list {
                    // amxml keeps properties in a hash table: a repeated name replaces.
                    match list.iter_mut().find(|p| p.name == prop.name) {
                        Some(old) => *old = prop,
                        None => list.push(prop),
                    }
                }
            }
            "dle" => {
                let mut s = self.current.take().ok_or_else(|| invalid(name))?;
                if s.application_api && s.program.is_none() {
                    return Err(XmlErrorKind::ApplicationWithoutPlugin);
                }
                if s.application_api {
                    s.dle.program = "APPLICATION".into();
                } else if let Some(p) = s.program.take().filter(|_| s.has_program_text) {
                    s.dle.program = p;
                }
                s.dle.application = s.application.take();
                s.dle.compress = match std::mem::take(&mut s.dle.compress) {
                    Compress::Custom(_) => Compress::Custom(s.compprog.clone().unwrap_or_default()),
                    Compress::ServerCustom(_) => {
                        Compress::ServerCustom(s.compprog.clone().unwrap_or_default())
                    }
                    other => other,
                };
                s.dle.encrypt = match s.encrypt_kind {
                    1 => Encrypt::Custom {
                        program: s.clnt_encrypt.take().unwrap_or_default(),
                        decrypt_option: s.clnt_decrypt.take(),
                    },
                    2 => Encrypt::ServerCustom {
                        program: s.srv_encrypt.take().unwrap_or_default(),
                        decrypt_option: s.srv_decrypt.take(),
                    },
                    _ => Encrypt::None,
                };
                s.dle.data_path = s.data_path.take();
                if s.dle.estimates.is_empty() {
                    s.dle.estimates.push(Estimate::Client);
                }
                self.dles.push(s.dle);
            }
            "backup-program" => {
                let s = self.state(name)?;
                if s.program.is_none() {
                    return Err(XmlErrorKind::NoPluginForApplication);
                }
            }
            "script" => {
                let s = self.state(name)?;
                let script = s.script.take().unwrap_or_default();
                if script.plugin.is_empty() {
                    return Err(XmlErrorKind::NoPluginForScript);
                }
                s.dle.scripts.push(script);
            }
            "level" => {
                let s = self.state(name)?;
                if let Some(level) = s.level.take() {
                    s.dle.levels.push(level);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn text(&mut self, stack: &[String], text: &[u8]) -> Res<()> {
        let Some(element) = stack.last().map(String::as_str) else {
            return Err(XmlErrorKind::Syntax("XML: Invalid text"));
        };
        let parent = stack
            .len()
            .checked_sub(2)
            .and_then(|i| stack.get(i))
            .map(String::as_str);
        if is_blank(text) {
            return Ok(());
        }
        let mut tt: Vec<u8> = match &self.raw {
            Some(raw) => raw.clone(),
            None => {
                let end = text.iter().rposition(|&b| b != b' ').map_or(0, |p| p + 1);
                text[..end].to_vec()
            }
        };
        if is_blank(&tt) {
            return Ok(());
        }
        let s = self.current.as_mut().ok_or_else(|| invalid(element))?;
        match element {
            "dle" | "backup-program" | "exclude" | "include" => {
                return Err(XmlErrorKind::NoTextAllowed {
                    element: element.to_owned(),
                    text: tt.into(),
                });
            }
            "disk" => {
                if s.dle.disk.is_some() {
                    return Err(XmlErrorKind::MultipleText(element.to_owned()));
                }
                s.dle.disk = Some(tt.into());
            }
            "diskdevice" => {
                if s.dle.device.is_some() {
                    return Err(XmlErrorKind::MultipleText(element.to_owned()));
                }
                s.dle.device = Some(tt.into());
            }
            "calcsize" => {
                if tt.eq_ignore_ascii_case(b"yes") {
                    s.dle.estimates.push(Estimate::Calcsize);
                }
            }
            "estimate" => {
                let mut rest: &[u8] = &tt;
                while !rest.is_empty() {
                    let (kind, len) = if rest.starts_with(b"CLIENT") {
                        (Some(Estimate::Client), 6)
                    } else if rest.starts_with(b"CALCSIZE") {
                        ((!s.has_calcsize).then_some(Estimate::Calcsize), 8)
                    } else if rest.starts_with(b"SERVER") {
                        (Some(Estimate::Server), 6)
                    } else {
                        return Err(XmlErrorKind::BadEstimate(tt.into()));
                    };
                    s.dle.estimates.extend(kind);
                    rest = &rest[len..];
                    while rest.first() == Some(&b' ') {
                        rest = &rest[1..];
                    }
                }
            }
            "program" => {
                if s.program.is_some() {
                    return Err(XmlErrorKind::MultipleText(element.to_owned()));
                }
                if tt == b"APPLICATION" {
                    s.application_api = true;
                } else {
                    s.program = Some(tt.into());
                    s.has_program_text = true;
                }
            }
            "plugin" => {
                match parent {
                    Some("backup-program") => {
                        s.program = Some(tt.clone().into());
                        if let Some(app) = s.application.as_mut() {
                            app.plugin = tt.into();
                        }
                    }
                    Some("script") => {
                        if let Some(script) = s.script.as_mut() {
                            script.plugin = tt.into();
                        }
                    }
                    _ => {
                        return Err(XmlErrorKind::Outside {
                            element: "plugin",
                            parent: "backup-program",
                        });
                    }
                }
                s.has_plugin = true;
            }
            "name" => {
                if let Some((n, _)) = s.property.as_mut() {
                    *n = Some(tt.into());
                }
            }
            "priority" => {
                if tt.eq_ignore_ascii_case(b"yes")
                    && let Some((_, p)) = s.property.as_mut()
                {
                    p.priority = true;
                }
            }
            "value" => {
                if let Some((_, p)) = s.property.as_mut() {
                    p.values.push(tt.into());
                }
            }
            "auth" => {
                if s.dle.auth.is_some() {
                    return Err(XmlErrorKind::MultipleText(element.to_owned()));
                }
                s.dle.auth = Some(tt.into());
            }
            "level" => {
                if let Some(level) = s.level.as_mut() {
                    level.level = atoi(&tt);
                }
            }
            "server" => {
                let v = yes_no(element, &tt)?;
                if let Some(level) = s.level.as_mut() {
                    level.server = v;
                }
            }
            "index" => s.dle.index = yes_no(element, &tt)?,
            "dumpdate" => {
                if s.dle.dumpdate.is_some() {
                    return Err(XmlErrorKind::MultipleText(element.to_owned()));
                }
                s.dle.dumpdate = Some(tt.into());
            }
            "record" => s.dle.record = yes_no(element, &tt)?,
            "spindle" => s.dle.spindle = atoi(&tt),
            "compress" => {
                s.dle.compress = match tt.as_slice() {
                    b"FAST" => Compress::Fast,
                    b"BEST" => Compress::Best,
                    b"SERVER-FAST" => Compress::ServerFast,
                    b"SERVER-BEST" => Compress::ServerBest,
                    t if t.starts_with(b"CUSTOM") => Compress::Custom(ByteString::new()),
                    t if t.starts_with(b"SERVER-CUSTOM") => {
                        Compress::ServerCustom(ByteString::new())
                    }
                    _ => {
                        return Err(XmlErrorKind::InvalidValue {
                            element: element.to_owned(),
                            value: tt.into(),
                        });
                    }
                };
            }
            "custom-compress-program" => {
                if s.compprog.is_some() {
                    return Err(XmlErrorKind::MultipleText(element.to_owned()));
                }
                s.compprog = Some(tt.into());
            }
            "encrypt" => {
                s.encrypt_kind = if tt.starts_with(b"NO") {
                    0
                } else if tt.starts_with(b"CUSTOM") {
                    1
                } else if tt.starts_with(b"SERVER-CUSTOM") {
                    2
                } else {
                    return Err(XmlErrorKind::InvalidValue {
                        element: element.to_owned(),
                        value: tt.into(),
                    });
                };
            }
            "kencrypt" => s.dle.kencrypt = yes_no(element, &tt)?,
            "custom-encrypt-program" => {
                let slot = if s.encrypt_kind == 2 {
                    &mut s.srv_encrypt
                } else {
                    &mut s.clnt_encrypt
                };
                *slot = Some(tt.into());
            }
            "decrypt-option" => {
                let slot = if s.encrypt_kind == 2 {
                    &mut s.srv_decrypt
                } else {
                    &mut s.clnt_decrypt
                };
                *slot = Some(tt.into());
            }
            "file" | "list" => {
                let list = match parent {
                    Some("exclude") => s.dle.exclude.get_or_insert_with(FileList::default),
                    _ => s.dle.include.get_or_insert_with(FileList::default),
                };
                if element == "file" {
                    list.files.push(tt.into());
                } else {
                    list.lists.push(tt.into());
                }
            }
            "optional" => {
                // Any text, even "NO", makes the list optional in 3.5.1.
                let list = match parent {
                    Some("exclude") => s.dle.exclude.get_or_insert_with(FileList::default),
                    _ => s.dle.include.get_or_insert_with(FileList::default),
                };
                list.optional = true;
                s.has_optional = true;
            }
            "script" => {}
            "execute_on" => {
                if let Some(script) = s.script.as_mut() {
                    script.execute_on = tt.split(|&b| b == b',').map(ByteString::from).collect();
                }
            }
            "execute_where" => {
                if let Some(script) = s.script.as_mut() {
                    script.execute_where = if tt == b"CLIENT" {
                        ExecuteWhere::Client
                    } else {
                        ExecuteWhere::Server
                    };
                }
            }
            "datapath" => {
                s.data_path = Some(match tt.as_slice() {
                    b"AMANDA" => DataPath::Amanda,
                    b"DIRECTTCP" => DataPath::DirectTcp(Vec::new()),
                    _ => return Err(XmlErrorKind::BadDatapath(tt.into())),
                });
            }
            "directtcp" => match s.data_path.as_mut() {
                Some(DataPath::DirectTcp(list)) => list.push(tt.into()),
                _ => s.data_path = Some(DataPath::DirectTcp(vec![tt.into()])),
            },
            "client_name" => match parent {
                Some("backup-program") => {
                    if let Some(app) = s.application.as_mut() {
                        app.client_name = Some(std::mem::take(&mut tt).into());
                    }
                }
                _ => {
                    if let Some(script) = s.script.as_mut() {
                        script.client_name = Some(std::mem::take(&mut tt).into());
                    }
                }
            },
            _ => return Err(XmlErrorKind::TextNotDefined(element.to_owned())),
        }
        Ok(())
    }
}

/// amxml's `^[ \f\n\r\t\v]*$`.
pub(super) fn is_blank(s: &[u8]) -> bool {
    s.iter()
        .all(|&b| matches!(b, b' ' | 0x0c | b'\n' | b'\r' | b'\t' | 0x0b))
}
