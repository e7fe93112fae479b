//! The disklist: `host disk [device] dumptype|{ inline } [spindle [interface]]` per line.
//!
//! Facts (server-src/diskfile.c: read_diskfile, parse_diskline; common-src/file.c: agets;
//! Amanda 3.5.1):
//! * lines are read with agets: `#` outside quotes starts a comment anywhere, a backslash
//!   before the newline joins the next line, a quoted field may span lines;
//! * fields are separated by blanks; quotes group blanks into a field and a backslash
//!   protects the next character; the disk name, device and dumptype are then unquoted,
//!   the host, spindle and interface are taken as written;
//! * `includefile "path"` (exactly that spelling) reads another disklist, relative to the
//!   config directory;
//! * the third field is the dumptype if a dumptype of that name exists, else it is the
//!   device and the dumptype follows; a field starting with `{` opens an inline dumptype
//!   read with the amanda.conf grammar up to a `}` on its own line, which may be followed
//!   by the spindle and interface;
//! * the spindle is an integer (default -1); the interface must be defined (default
//!   `default`); hosts compare case-insensitively but must be spelled the same way each
//!   time; a host/disk pair may appear once.
//!
//! Stage 1 ([`DisklistSyntax`]) splits lines into fields with spans; stage 2
//! ([`Disklist::resolve`]) decides what each field is against a [`Config`].
//!
//! What this module must not do: resolve host names or match disks as globs (amanda-rs
//! checks duplicates by exact name only; Amanda also compares them as patterns).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::diag::{ErrorKind, Errors, Loaded, Sink};
use crate::fs::{FileSystem, RealFs, strerror};
use crate::lex::Cursor;
use crate::loader::resolve_relative;
use crate::model::{Dumptype, Interface, Program};
use crate::quote;
use crate::resolve::{BlockKind, Defs, OverlayScope, Params, RawDef, Reader};
use crate::server::Config;
use crate::source::{FileId, Location, SourceMap, Span};
use crate::syntax::{Block, parse_block_at};

/// One field of a disklist line.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    /// A word, as written (quotes and backslashes included).
    Word {
        /// The raw bytes.
        raw: Vec<u8>,
        /// Where.
        span: Span,
    },
    /// An inline dumptype `{ ... }`.
    Block(Block),
}

impl Field {
    fn span(&self) -> Span {
        match self {
            Field::Word { span, .. } => *span,
            Field::Block(b) => b.open,
        }
    }
}

/// One disk line, split.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskLine {
    /// The host, as written.
    pub host: String,
    /// Where the host is.
    pub host_span: Span,
    /// The disk name, unquoted (bytes: it names a directory).
    pub disk: Vec<u8>,
    /// Where the disk name is.
    pub disk_span: Span,
    /// The fields after the disk name.
    pub fields: Vec<Field>,
}

/// A disklist item.
#[derive(Clone, Debug, PartialEq)]
pub enum DiskItem {
    /// A disk line.
    Line(DiskLine),
    /// `includefile "path"`, with the included file's items.
    Include {
        /// The path as written.
        path: String,
        /// Where.
        span: Span,
        /// The included items (empty if it could not be read).
        items: Vec<DiskItem>,
    },
}

/// Stage 1: a disklist (and its includes) split into lines and fields.
#[derive(Clone, Debug)]
pub struct DisklistSyntax {
    /// The text of every file read.
    pub sources: SourceMap,
    /// Its items.
    pub items: Vec<DiskItem>,
}

/// One resolved DLE.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskEntry {
    /// The client host, as written.
    pub host: String,
    /// The disk name (a path or a name), unquoted.
    pub disk: Vec<u8>,
    /// The device, if given.
    pub device: Option<Vec<u8>>,
    /// The dumptype, resolved (inline ones are named `custom(<host>:<disk>).<n>`).
    pub dumptype: Arc<Dumptype>,
    /// The spindle (-1 = none).
    pub spindle: i32,
    /// The interface (`default` unless given).
    pub interface: Arc<Interface>,
    /// Where the line is.
    pub location: Location,
}

impl DiskEntry {
    /// The disk name for display (invalid UTF-8 replaced).
    pub fn disk_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.disk)
    }
}

/// A resolved disklist.
#[derive(Clone, Debug, Default)]
pub struct Disklist {
    /// The DLEs in file order.
    pub entries: Vec<DiskEntry>,
}

impl Disklist {
    /// Reads the configuration's `diskfile` from the file system.
    pub fn load(config: &Config) -> Result<Loaded<Disklist>, Errors> {
        Self::load_with(&RealFs, config)
    }

    /// Reads the configuration's `diskfile` through `fs`.
    pub fn load_with(fs: &dyn FileSystem, config: &Config) -> Result<Loaded<Disklist>, Errors> {
        let path = config.diskfile_path();
        let display = path.to_string_lossy().into_owned();
        let mut sink = Sink::default();
        let text = match fs.read(&path) {
            Ok(t) => t,
            Err(e) => {
                sink.error(
                    Location::file_only(&display),
                    ErrorKind::Io {
                        path: display,
                        reason: strerror(&e),
                    },
                );
                return sink.finish(Disklist::default());
            }
        };
        let dir = config.location.as_ref().map(|l| l.dir.clone());
        let syntax = DisklistSyntax::parse_into(fs, &display, text, dir.as_deref(), &mut sink);
        let list = Self::resolve_into(&syntax, config, &mut sink);
        sink.finish(list)
    }

    /// Parses disklist text named `name`, resolved against `config`. `includefile` is not
    /// available (it is an error).
    pub fn parse(config: &Config, name: &str, text: &[u8]) -> Result<Loaded<Disklist>, Errors> {
        let mut sink = Sink::default();
        let syntax = DisklistSyntax::parse_in_memory(name, text, &mut sink);
        let list = Self::resolve_into(&syntax, config, &mut sink);
        sink.finish(list)
    }

    /// Stage 2 over already split lines.
    pub fn resolve(syntax: &DisklistSyntax, config: &Config) -> Result<Loaded<Disklist>, Errors> {
        let mut sink = Sink::default();
        let list = Self::resolve_into(syntax, config, &mut sink);
        sink.finish(list)
    }

    fn resolve_into(syntax: &DisklistSyntax, config: &Config, sink: &mut Sink) -> Disklist {
        let mut r = Resolving {
            sources: &syntax.sources,
            config,
            sink,
            scope: OverlayScope {
                base: &config.defs,
                extra: Defs::default(),
                anon: 0,
            },
            hosts: HashMap::new(),
            disks: HashMap::new(),
            list: Disklist::default(),
        };
        r.items(&syntax.items);
        r.list
    }

    /// The DLEs of `host` (any case), in file order.
    pub fn host_entries<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a DiskEntry> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.host.eq_ignore_ascii_case(host))
    }

    /// The hosts, each once, in order of first appearance.
    pub fn hosts(&self) -> Vec<&str> {
        let mut seen = Vec::<&str>::new();
        for e in &self.entries {
            if !seen.iter().any(|h| h.eq_ignore_ascii_case(&e.host)) {
                seen.push(&e.host);
            }
        }
        seen
    }

    /// A host's `maxdumps`: Amanda takes the value of the host's last DLE
    /// (diskfile.c: `host->maxdumps = disk->maxdumps` for each disk added).
    pub fn host_maxdumps(&self, host: &str) -> Option<u32> {
        self.host_entries(host).last().map(|e| e.dumptype.maxdumps)
    }
}

impl DisklistSyntax {
    /// Splits disklist text (includes are an error here).
    pub fn parse(name: &str, text: &[u8]) -> Result<Loaded<DisklistSyntax>, Errors> {
        let mut sink = Sink::default();
        let s = Self::parse_in_memory(name, text, &mut sink);
        sink.finish(s)
    }

    /// Splits `text` with no file system behind it, so an `includefile` is an error.
    fn parse_in_memory(name: &str, text: &[u8], sink: &mut Sink) -> DisklistSyntax {
        Self::parse_into(&crate::fs::MemFs::new(), name, text.to_vec(), None, sink)
    }

    fn parse_into(
        fs: &dyn FileSystem,
        name: &str,
        text: Vec<u8>,
        dir: Option<&Path>,
        sink: &mut Sink,
    ) -> DisklistSyntax {
        let mut sources = SourceMap::new();
        let id = sources.add(name, text);
        let mut stack = vec![name.to_string()];
        let items = split_file(fs, &mut sources, id, dir, &mut stack, sink);
        DisklistSyntax { sources, items }
    }
}

/// The disklist's own field syntax, on the configuration lexer's cursor.
impl Cursor<'_> {
    /// Skips blanks and backslash-newlines; stops at a newline, a comment or a field.
    fn skip_blanks(&mut self) {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | 0x0b | 0x0c) => {
                    self.bump();
                }
                Some(b'\\') if self.peek2() == Some(b'\n') => {
                    self.bump();
                    self.bump();
                }
                _ => return,
            }
        }
    }
    /// At the end of the logical line (newline, comment or end of file)?
    fn at_eol(&self) -> bool {
        matches!(self.peek(), None | Some(b'\n' | b'#'))
    }
    /// Consumes the rest of the line, including its newline.
    fn finish_line(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'\\' && self.peek2() == Some(b'\n') {
                self.bump();
                self.bump();
                continue;
            }
            self.bump();
            if c == b'\n' {
                return;
            }
        }
    }
    /// One field. `quoted`: quotes group blanks (skip_quoted_string); else plain
    /// non-blank run (the host). Returns the raw bytes (escaped newlines removed) or
    /// `None` for an unterminated quote at the end of the file.
    fn field(&mut self, quoted: bool) -> Option<Vec<u8>> {
        let mut raw = Vec::new();
        let mut inq = false;
        loop {
            let Some(c) = self.peek() else {
                return if inq { None } else { Some(raw) };
            };
            if !inq {
                if matches!(c, b' ' | b'\t' | b'\r' | 0x0b | 0x0c | b'\n' | b'#') {
                    return Some(raw);
                }
                if c == b'\\' && self.peek2() == Some(b'\n') {
                    self.bump();
                    self.bump();
                    continue;
                }
            }
            self.bump();
            raw.push(c);
            if quoted {
                if c == b'"' {
                    inq = !inq;
                } else if c == b'\\'
                    && let Some(n) = self.peek()
                {
                    self.bump();
                    raw.push(n);
                }
            }
        }
    }
}

fn split_file(
    fs: &dyn FileSystem,
    sources: &mut SourceMap,
    id: FileId,
    dir: Option<&Path>,
    stack: &mut Vec<String>,
    sink: &mut Sink,
) -> Vec<DiskItem> {
    let text = sources.file(id).text().to_vec();
    let mut items = Vec::new();
    let mut c = Cursor::resume(&text, id, (0, 1, 1));
    while c.peek().is_some() {
        c.skip_blanks();
        if c.at_eol() {
            c.finish_line();
            continue;
        }
        let m = c.position();
        let host = c.field(false).unwrap_or_default();
        let host_span = c.span_from(m);
        let err = |sink: &mut Sink, sources: &SourceMap, span: Span, kind: ErrorKind| {
            sink.error(sources.location(span), kind);
        };
        if host == b"includefile" {
            c.skip_blanks();
            let m = c.position();
            let raw = if c.at_eol() { None } else { c.field(true) };
            let span = c.span_from(m);
            c.skip_blanks();
            let extra = !c.at_eol();
            c.finish_line();
            let Some(raw) = raw.filter(|r| !r.is_empty()) else {
                err(
                    sink,
                    sources,
                    host_span,
                    ErrorKind::Expected {
                        expected: "an include file name".into(),
                        found: "end of line".into(),
                    },
                );
                continue;
            };
            if extra {
                err(
                    sink,
                    sources,
                    span,
                    ErrorKind::Other("end of line expected after the include file name".into()),
                );
            }
            let path = quote::unquote_lossy(&raw);
            let full = resolve_relative(dir, &path);
            let display = full.to_string_lossy().into_owned();
            let sub = if stack.contains(&display) {
                err(
                    sink,
                    sources,
                    span,
                    ErrorKind::IncludeCycle {
                        path: display.clone(),
                        chain: stack.join(" -> "),
                    },
                );
                Vec::new()
            } else if stack.len() >= crate::loader::MAX_INCLUDE_DEPTH {
                err(
                    sink,
                    sources,
                    span,
                    ErrorKind::IncludeTooDeep {
                        limit: crate::loader::MAX_INCLUDE_DEPTH,
                    },
                );
                Vec::new()
            } else {
                match fs.read(&full) {
                    Ok(bytes) => {
                        let sid = sources.add(display.clone(), bytes);
                        stack.push(display);
                        let v = split_file(fs, sources, sid, dir, stack, sink);
                        stack.pop();
                        v
                    }
                    Err(e) => {
                        err(
                            sink,
                            sources,
                            span,
                            ErrorKind::Io {
                                path: display,
                                reason: strerror(&e),
                            },
                        );
                        Vec::new()
                    }
                }
            };
            items.push(DiskItem::Include {
                path,
                span,
                items: sub,
            });
            continue;
        }
        c.skip_blanks();
        if c.at_eol() {
            err(
                sink,
                sources,
                host_span,
                ErrorKind::Expected {
                    expected: "a disk name after the host".into(),
                    found: "end of line".into(),
                },
            );
            c.finish_line();
            continue;
        }
        let m = c.position();
        let Some(disk_raw) = c.field(true) else {
            err(sink, sources, c.span_from(m), ErrorKind::UnterminatedString);
            break;
        };
        let disk_span = c.span_from(m);
        let disk = quote::unquote(&disk_raw);
        if disk.is_empty() {
            err(
                sink,
                sources,
                disk_span,
                ErrorKind::Other("invalid empty disk name".into()),
            );
            c.finish_line();
            continue;
        }
        let mut fields = Vec::new();
        let mut broken = false;
        loop {
            c.skip_blanks();
            if c.at_eol() {
                c.finish_line();
                break;
            }
            let m = c.position();
            if c.peek() == Some(b'{') {
                c.bump();
                let open = c.span_from(m);
                c.skip_blanks();
                if !c.at_eol() {
                    let m2 = c.position();
                    let _ = c.field(true);
                    let s = c.span_from(m2);
                    err(
                        sink,
                        sources,
                        s,
                        ErrorKind::Expected {
                            expected: "end of line after \"{\" (an inline dumptype starts on the next line)".into(),
                            found: format!("{:?}", sources.snippet(s)),
                        },
                    );
                }
                c.finish_line();
                let (block, end) = parse_block_at(sources, id, open, c.position(), sink);
                c = Cursor::resume(&text, id, end);
                fields.push(Field::Block(block));
                continue;
            }
            let Some(raw) = c.field(true) else {
                err(sink, sources, c.span_from(m), ErrorKind::UnterminatedString);
                broken = true;
                break;
            };
            fields.push(Field::Word {
                raw,
                span: c.span_from(m),
            });
        }
        if broken {
            break;
        }
        if fields.is_empty() {
            err(
                sink,
                sources,
                disk_span,
                ErrorKind::Expected {
                    expected: "a dumptype after the disk name".into(),
                    found: "end of line".into(),
                },
            );
            continue;
        }
        items.push(DiskItem::Line(DiskLine {
            host: String::from_utf8_lossy(&host).into_owned(),
            host_span,
            disk,
            disk_span,
            fields,
        }));
    }
    items
}

struct Resolving<'a, 's> {
    sources: &'a SourceMap,
    config: &'a Config,
    sink: &'s mut Sink,
    scope: OverlayScope<'a>,
    /// lower-case host -> spelling
    hosts: HashMap<String, String>,
    /// (lower-case host, disk) -> line
    disks: HashMap<(String, Vec<u8>), u32>,
    list: Disklist,
}

impl Resolving<'_, '_> {
    fn error(&mut self, span: Span, kind: ErrorKind) {
        let loc = self.sources.location(span);
        self.sink.error(loc, kind);
    }

    fn items(&mut self, items: &[DiskItem]) {
        for item in items {
            match item {
                DiskItem::Line(l) => self.line(l),
                DiskItem::Include { items, .. } => self.items(items),
            }
        }
    }

    fn undefined_dumptype(&mut self, span: Span, name: String) {
        let kind = ErrorKind::Undefined {
            kind: "dumptype",
            name,
            hint: String::new(),
        };
        self.error(span, kind);
    }

    fn line(&mut self, l: &DiskLine) {
        let lower = l.host.to_ascii_lowercase();
        if let Some(first) = self.hosts.get(&lower)
            && *first != l.host
        {
            let msg = format!(
                "same host with different case: {:?} and {:?}",
                first, l.host
            );
            self.error(l.host_span, ErrorKind::Other(msg));
            return;
        }
        let disk_lossy = String::from_utf8_lossy(&l.disk).into_owned();
        let mut fields = l.fields.iter();
        let mut device = None;
        let first = fields.next();
        let dumptype = match first {
            Some(Field::Block(b)) => self.inline(l, b),
            Some(Field::Word { raw, span }) => {
                let name = quote::unquote_lossy(raw);
                if name.is_empty() {
                    self.error(*span, ErrorKind::Other("invalid empty disk device".into()));
                    return;
                }
                match self.config.dumptype(&name) {
                    Some(d) => Some(d.clone()),
                    None => {
                        device = Some(quote::unquote(raw));
                        match fields.next() {
                            None => {
                                self.undefined_dumptype(*span, name);
                                return;
                            }
                            Some(Field::Block(b)) => self.inline(l, b),
                            Some(Field::Word { raw, span }) => {
                                let name = quote::unquote_lossy(raw);
                                match self.config.dumptype(&name) {
                                    Some(d) => Some(d.clone()),
                                    None => {
                                        self.undefined_dumptype(*span, name);
                                        return;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            None => return,
        };
        let Some(dumptype) = dumptype else { return };
        let mut spindle = -1;
        let mut interface = None;
        if let Some(f) = fields.next() {
            let text = match f {
                Field::Word { raw, .. } => String::from_utf8_lossy(raw).into_owned(),
                Field::Block(_) => "{".into(),
            };
            let digits = text.strip_prefix('-').unwrap_or(&text);
            match text.parse::<i32>() {
                Ok(v) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                    spindle = v
                }
                _ => {
                    self.error(
                        f.span(),
                        ErrorKind::Expected {
                            expected: "an integer spindle".into(),
                            found: format!("{text:?}"),
                        },
                    );
                    return;
                }
            }
        }
        if let Some(f) = fields.next() {
            let name = match f {
                Field::Word { raw, .. } => String::from_utf8_lossy(raw).into_owned(),
                Field::Block(_) => "{".into(),
            };
            match self.config.interfaces.get(&name) {
                Some(i) => interface = Some(i.clone()),
                None => {
                    self.error(
                        f.span(),
                        ErrorKind::Undefined {
                            kind: "interface",
                            name,
                            hint: String::new(),
                        },
                    );
                    return;
                }
            }
        }
        if let Some(f) = fields.next() {
            let found = match f {
                Field::Word { span, .. } => format!("{:?}", self.sources.snippet(*span)),
                Field::Block(_) => "\"{\"".into(),
            };
            self.error(
                f.span(),
                ErrorKind::Expected {
                    expected: "end of line".into(),
                    found,
                },
            );
            return;
        }
        let key = (lower.clone(), l.disk.clone());
        if let Some(prev) = self.disks.get(&key) {
            let msg = format!("duplicate disk record, previous on line {prev}");
            self.error(l.disk_span, ErrorKind::Other(msg));
            return;
        }
        let program_is_app = dumptype.program == Program::Application;
        if dumptype.application.is_some()
            && !program_is_app
            && dumptype.params.get("program").is_some()
        {
            self.error(
                l.host_span,
                ErrorKind::Other(format!(
                    "dumptype {} sets both program and application",
                    dumptype.name
                )),
            );
        }
        if program_is_app {
            match &dumptype.application {
                None => self.error(
                    l.host_span,
                    ErrorKind::Other(format!(
                        "dumptype {} sets program \"APPLICATION\" but no application",
                        dumptype.name
                    )),
                ),
                Some(a) if a.plugin.is_empty() => self.error(
                    l.host_span,
                    ErrorKind::Other(format!("plugin not set for application {}", a.name)),
                ),
                _ => {}
            }
        }
        for s in &dumptype.scripts {
            if s.plugin.is_empty() {
                self.error(
                    l.host_span,
                    ErrorKind::Other(format!("plugin not set for script {}", s.name)),
                );
            }
        }
        // issue 14: a host is reached one way; DLEs that disagree would have the night
        // both connect to it and wait for it.
        if let Some(first) = self
            .list
            .entries
            .iter()
            .find(|e| e.host.eq_ignore_ascii_case(&l.host))
            && first.dumptype.dialin != dumptype.dialin
        {
            let yes_no = |b: bool| if b { "yes" } else { "no" };
            let msg = format!(
                "every DLE of host {} must agree on dialin: this one (dumptype {}) says {}, the one at {} (dumptype {}) says {}",
                l.host,
                dumptype.name,
                yes_no(dumptype.dialin),
                first.location,
                first.dumptype.name,
                yes_no(first.dumptype.dialin)
            );
            self.error(l.host_span, ErrorKind::Other(msg));
            return;
        }
        let _ = disk_lossy;
        self.disks.insert(key, l.host_span.line);
        self.hosts.insert(lower, l.host.clone());
        let interface = match interface {
            Some(i) => i,
            None => match self.config.interfaces.get("default") {
                Some(i) => i.clone(),
                None => return,
            },
        };
        self.list.entries.push(DiskEntry {
            host: l.host.clone(),
            disk: l.disk.clone(),
            device,
            dumptype,
            spindle,
            interface,
            location: self.sources.location(l.host_span),
        });
    }

    fn inline(&mut self, l: &DiskLine, b: &Block) -> Option<Arc<Dumptype>> {
        let n = self.scope.anon + 1;
        self.scope.anon = n;
        let name = format!(
            "custom({}:{}).{}",
            l.host,
            String::from_utf8_lossy(&l.disk),
            n
        );
        let before = self.sink.errors.len();
        let mut params = Params::default();
        {
            let mut reader = Reader {
                sources: self.sources,
                sink: self.sink,
            };
            reader.read_block(&mut self.scope, BlockKind::Dumptype, &name, b, &mut params);
        }
        if self.sink.errors.len() > before {
            return None;
        }
        let raw = RawDef {
            name,
            location: self.sources.location(b.open),
            params,
            base: None,
            builtin: false,
        };
        Some(Arc::new(Dumptype::build(
            &raw,
            self.config.dumptype_base(),
            &self.scope,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Compress;

    fn config() -> Config {
        Config::parse_str(
            "amanda.conf",
            concat!(
                "define dumptype comp-root {\n compress client fast\n}\n",
                "define dumptype user-tar {\n program \"GNUTAR\"\n maxdumps 2\n}\n",
                "define interface le0 {\n use 400 kbps\n}\n",
                "define dumptype dial {\n comp-root\n dialin yes\n}\n",
            ),
        )
        .unwrap()
        .value
    }

    fn list(text: &str) -> Result<Disklist, Vec<String>> {
        Disklist::parse(&config(), "disklist", text.as_bytes())
            .map(|l| l.value)
            .map_err(|e| e.messages())
    }

    #[test]
    fn lines_with_device_spindle_interface_and_inline_blocks() {
        let d = list(concat!(
            "# comment\n",
            "salty sd0a comp-root\n",
            "master sd0g /dev/sd0g user-tar -1 le0 # trailing\n",
            "slowsrv /usr {\n  user-tar\n  exclude list \".exclude\"\n  compress server fast\n} 2 le0\n",
            "h \"/dle with space\" comp-root\n",
            "h2 /a\\\n/b comp-root\n",
        ))
        .unwrap();
        assert_eq!(d.entries.len(), 5);
        assert_eq!(d.entries[1].device.as_deref(), Some(&b"/dev/sd0g"[..]));
        assert_eq!(d.entries[1].interface.name, "le0");
        assert_eq!(d.entries[1].interface.use_kibps, 400);
        let inline = &d.entries[2];
        assert_eq!(inline.spindle, 2);
        assert_eq!(inline.dumptype.compress, Compress::ServerFast);
        assert_eq!(inline.dumptype.maxdumps, 2);
        assert_eq!(inline.dumptype.exclude.lists, [&b".exclude"[..]]);
        assert_eq!(inline.dumptype.name, "custom(slowsrv:/usr).1");
        assert_eq!(d.entries[3].disk, b"/dle with space");
        assert_eq!(d.entries[4].disk, b"/a/b");
        assert_eq!(d.entries[0].interface.name, "default");
        assert_eq!(d.host_maxdumps("MASTER"), Some(2));
        assert_eq!(d.entries[4].location.to_string(), "disklist:10:1");
    }

    #[test]
    fn errors_name_the_field() {
        for (text, error) in [
            (
                "h /x nosuch\n",
                "disklist:1:6: dumptype \"nosuch\" is not defined",
            ),
            (
                "h /x comp-root x1\n",
                "disklist:1:16: expected an integer spindle, found \"x1\"",
            ),
            (
                "h /x comp-root 1 le1\n",
                "disklist:1:18: interface \"le1\" is not defined",
            ),
            (
                "h /x comp-root\nh /x comp-root\n",
                "disklist:2:3: duplicate disk record, previous on line 1",
            ),
            (
                "h /x comp-root\nH /y comp-root\n",
                "disklist:2:1: same host with different case: \"h\" and \"H\"",
            ),
            (
                "h /x { comp-root\n}\n",
                "disklist:1:8: expected end of line after \"{\" (an inline dumptype starts on the next line), found \"comp-root\"",
            ),
            (
                "h /x {\n  index yes\n",
                "disklist:1:6: \"{\" is not closed by a \"}\" before the end of the file",
            ),
            (
                "h\n",
                "disklist:1:1: expected a disk name after the host, found end of line",
            ),
        ] {
            assert_eq!(list(text).unwrap_err(), [error], "{text:?}");
        }
    }

    // issue 14: how a host is reached is one setting per host; DLEs that disagree are a
    // config error naming both lines.
    #[test]
    fn dialin_is_read_per_dumptype_and_every_dle_of_a_host_must_agree() {
        let d = list("nat /a dial\nnat /b dial\nlan /a comp-root\n").unwrap();
        assert!(d.entries[0].dumptype.dialin && d.entries[1].dumptype.dialin);
        assert!(!d.entries[2].dumptype.dialin);
        assert_eq!(
            list("nat /a dial\nx /a comp-root\nNAT2 /a dial\nnat /b comp-root\n").unwrap_err(),
            [
                "disklist:4:1: every DLE of host nat must agree on dialin: this one (dumptype comp-root) says no, the one at disklist:1:1 (dumptype dial) says yes"
            ]
        );
    }
}
