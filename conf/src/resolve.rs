//! Stage 2: statements get their meaning. Keywords are looked up in the tables of
//! [`crate::keywords`], values read by [`crate::value`], definitions collected with
//! Amanda's inheritance rules.
//!
//! Facts (common-src/conffile.c: read_confline, read_block, copy_dumptype & co,
//! merge_val_t, get_holdingdisk, init_defaults):
//! * a bare name (word or quoted string) inside a block inherits from an *earlier*
//!   definition of the same kind: the parent's explicitly set parameters are merged in at
//!   that point, in order, so later lines override them. Merging replaces a value, except
//!   properties (a parent's `append` property appends) and script/tag lists (appended);
//! * a dumptype's unset `dumpcycle`, `maxdumps`, `bumpsize`, `bumppercent`, `bumpdays`,
//!   `bumpmult` take the global values in force where the `define` starts;
//! * definition names are case-insensitive and may not be redefined; Amanda predefines the
//!   dumptypes NO-COMPRESS, COMPRESS-FAST, COMPRESS-BEST, COMPRESS-CUST, SRVCOMPRESS,
//!   BSD-AUTH, BSDTCP-AUTH, NO-RECORD, NO-HOLD and NO-FULL;
//! * `holdingdisk NAME { ... }` (old syntax) defines *and* selects a holding disk;
//!   `holdingdisk "a" "b"` selects; only selected holding disks are used (harness
//!   gotcha 5). A disk selected twice is an error; a selected disk must be defined by the
//!   end of the file.
//!
//! amanda-rs policy: a keyword unknown in its place is a warning (the line, and its block if
//! any, is skipped), never an error, because real configurations carry keywords amanda-rs
//! does not use. A bare name that is neither a keyword nor an earlier definition is an
//! error, as in Amanda, because silently losing an inherited `auth` is worse.
//!
//! What this module must not do: read files or build the public typed structs (see
//! [`crate::server`], [`crate::client`]).

use std::collections::{BTreeMap, HashMap};

use crate::diag::{ErrorKind, Sink, WarningKind};
use crate::keywords::{self, Check, Def, Kind};
use crate::loader::Document;
use crate::source::{FileId, Location, SourceMap, Span};
use crate::syntax::{Block, Item, Statement, Tok, Token, describe};
use crate::value::{self, Args, Cx, Value};

/// One explicitly set parameter: its value and where it was set.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// The value (numbers already in the parameter's unit).
    pub value: Value,
    /// Where it was set (for inherited ones, where the parent set it).
    pub location: Location,
}

/// The parameters a definition (or the global section) sets explicitly, by canonical
/// keyword. Defaults are not in here; the typed structs apply them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(BTreeMap<&'static str, Param>);

impl Params {
    /// The parameter spelled `keyword` (any case, `-` or `_`).
    pub fn get(&self, keyword: &str) -> Option<&Param> {
        let f = keywords::fold(keyword)?;
        self.0.get(f.as_str())
    }
    /// Its value.
    pub fn value(&self, keyword: &str) -> Option<&Value> {
        self.get(keyword).map(|p| &p.value)
    }
    /// Where it was set.
    pub fn location(&self, keyword: &str) -> Option<&Location> {
        self.get(keyword).map(|p| &p.location)
    }
    /// All parameters, by canonical keyword.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Param)> {
        self.0.iter().map(|(k, v)| (*k, v))
    }
    /// How many are set.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// None is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn set(&mut self, name: &'static str, p: Param) {
        self.0.insert(name, p);
    }

    pub(crate) fn raw(&self, name: &'static str) -> Option<&Value> {
        self.0.get(name).map(|p| &p.value)
    }

    /// Inheritance (conffile.c: merge_val_t).
    pub(crate) fn merge_from(&mut self, parent: &Params) {
        for (k, p) in &parent.0 {
            match (self.0.get_mut(k), &p.value) {
                (Some(mine), Value::Properties(theirs)) => {
                    if let Value::Properties(ours) = &mut mine.value {
                        ours.merge_from(theirs);
                    }
                }
                (Some(mine), Value::Scripts(theirs)) => {
                    if let Value::Scripts(ours) = &mut mine.value {
                        ours.extend(theirs.iter().cloned());
                    }
                }
                (Some(mine), Value::StrList(theirs)) => {
                    if let Value::StrList(ours) = &mut mine.value {
                        ours.extend(theirs.iter().cloned());
                    }
                }
                _ => {
                    self.0.insert(k, p.clone());
                }
            }
        }
    }
}

/// The kinds of `define`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum BlockKind {
    Dumptype,
    Tapetype,
    Holdingdisk,
    Interface,
    Application,
    Script,
    Device,
    Changer,
    Interactivity,
    Taperscan,
    Policy,
    Storage,
}

impl BlockKind {
    /// The parameter table.
    pub(crate) fn table(self) -> &'static [Def] {
        match self {
            BlockKind::Dumptype => keywords::DUMPTYPE,
            BlockKind::Tapetype => keywords::TAPETYPE,
            BlockKind::Holdingdisk => keywords::HOLDINGDISK,
            BlockKind::Interface => keywords::INTERFACE,
            BlockKind::Application => keywords::APPLICATION,
            BlockKind::Script => keywords::SCRIPT,
            BlockKind::Device => keywords::DEVICE,
            BlockKind::Changer => keywords::CHANGER,
            BlockKind::Interactivity => keywords::INTERACTIVITY,
            BlockKind::Taperscan => keywords::TAPERSCAN,
            BlockKind::Policy => keywords::POLICY,
            BlockKind::Storage => keywords::STORAGE,
        }
    }

    /// The word used in messages.
    pub fn name(self) -> &'static str {
        match self {
            BlockKind::Dumptype => "dumptype",
            BlockKind::Tapetype => "tapetype",
            BlockKind::Holdingdisk => "holdingdisk",
            BlockKind::Interface => "interface",
            BlockKind::Application => "application",
            BlockKind::Script => "script",
            BlockKind::Device => "device",
            BlockKind::Changer => "changer",
            BlockKind::Interactivity => "interactivity",
            BlockKind::Taperscan => "taperscan",
            BlockKind::Policy => "policy",
            BlockKind::Storage => "storage",
        }
    }

    fn context(self) -> &'static str {
        match self {
            BlockKind::Dumptype => "a dumptype block",
            BlockKind::Tapetype => "a tapetype block",
            BlockKind::Holdingdisk => "a holdingdisk block",
            BlockKind::Interface => "an interface block",
            BlockKind::Application => "an application block",
            BlockKind::Script => "a script block",
            BlockKind::Device => "a device block",
            BlockKind::Changer => "a changer block",
            BlockKind::Interactivity => "an interactivity block",
            BlockKind::Taperscan => "a taperscan block",
            BlockKind::Policy => "a policy block",
            BlockKind::Storage => "a storage block",
        }
    }

    /// Whether `property` lines default to `visible` here (conffile.c:
    /// read_visible_property vs read_hidden_property).
    fn visible_properties(self) -> bool {
        !matches!(self, BlockKind::Dumptype)
    }

    fn from_define_word(w: &str, client: bool) -> Option<BlockKind> {
        let f = keywords::fold(w)?;
        let k = match f.as_str() {
            "application" | "application_tool" => BlockKind::Application,
            "script" | "script_tool" => BlockKind::Script,
            _ if client => return None,
            "dumptype" => BlockKind::Dumptype,
            "tapetype" => BlockKind::Tapetype,
            "interface" => BlockKind::Interface,
            "device" => BlockKind::Device,
            "changer" => BlockKind::Changer,
            "holdingdisk" => BlockKind::Holdingdisk,
            "interactivity" => BlockKind::Interactivity,
            "taperscan" => BlockKind::Taperscan,
            "policy" => BlockKind::Policy,
            "storage" => BlockKind::Storage,
            _ => return None,
        };
        Some(k)
    }

    fn inline_kind(kind: Kind) -> Option<BlockKind> {
        match kind {
            Kind::Application => Some(BlockKind::Application),
            Kind::Scripts => Some(BlockKind::Script),
            Kind::Interactivity => Some(BlockKind::Interactivity),
            Kind::Taperscan => Some(BlockKind::Taperscan),
            Kind::Policy => Some(BlockKind::Policy),
            _ => None,
        }
    }
}

/// The global values a dumptype's unset parameters take (conffile.c:
/// init_dumptype_defaults reads them from the globals at the `define`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct DumptypeBase {
    pub dumpcycle: i64,
    pub maxdumps: i64,
    pub bumppercent: i64,
    pub bumpsize: i64,
    pub bumpdays: i64,
    pub bumpmult: f64,
}

impl DumptypeBase {
    pub fn from_globals(g: &Params) -> Self {
        let int = |k: &'static str, d: i64| match g.raw(k) {
            Some(Value::Int(v)) => *v,
            _ => d,
        };
        use crate::defaults as D;
        DumptypeBase {
            dumpcycle: int("dumpcycle", D::DUMPCYCLE),
            maxdumps: int("maxdumps", D::MAXDUMPS),
            bumppercent: int("bumppercent", D::BUMPPERCENT),
            bumpsize: int("bumpsize", D::BUMPSIZE_KIB),
            bumpdays: int("bumpdays", D::BUMPDAYS),
            bumpmult: match g.raw("bumpmult") {
                Some(Value::Real(v)) => *v,
                _ => D::BUMPMULT,
            },
        }
    }
}

/// A definition as read: name, place, explicit parameters.
#[derive(Clone, Debug)]
pub(crate) struct RawDef {
    pub name: String,
    pub location: Location,
    pub params: Params,
    pub base: Option<DumptypeBase>,
    /// Predefined by Amanda (cannot be redefined).
    pub builtin: bool,
}

/// Definitions of one kind, in order, looked up case-insensitively.
#[derive(Clone, Debug)]
pub(crate) struct NamedVec<T> {
    pub items: Vec<T>,
    index: HashMap<String, usize>,
}

impl<T> Default for NamedVec<T> {
    fn default() -> Self {
        NamedVec {
            items: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T> NamedVec<T> {
    pub fn get(&self, name: &str) -> Option<&T> {
        self.index
            .get(&name.to_ascii_lowercase())
            .and_then(|i| self.items.get(*i))
    }
    /// Adds `item`; returns the existing one if the name is taken.
    pub fn insert(&mut self, name: &str, item: T) -> Result<(), &T> {
        if let Some(i) = self.index.get(&name.to_ascii_lowercase()) {
            return Err(&self.items[*i]);
        }
        self.push(name, item);
        Ok(())
    }
    /// Adds `item` even if the name is taken; lookups keep finding the first.
    pub fn push(&mut self, name: &str, item: T) {
        self.index
            .entry(name.to_ascii_lowercase())
            .or_insert(self.items.len());
        self.items.push(item);
    }
}

/// All definitions, by kind.
#[derive(Clone, Debug, Default)]
pub(crate) struct Defs {
    by_kind: BTreeMap<BlockKind, NamedVec<RawDef>>,
}

impl Defs {
    pub fn get(&self, kind: BlockKind, name: &str) -> Option<&RawDef> {
        self.by_kind.get(&kind)?.get(name)
    }
    pub fn insert(&mut self, kind: BlockKind, def: RawDef) -> Result<(), &RawDef> {
        let name = def.name.clone();
        self.by_kind.entry(kind).or_default().insert(&name, def)
    }
    pub fn all(&self, kind: BlockKind) -> &[RawDef] {
        self.by_kind
            .get(&kind)
            .map(|v| v.items.as_slice())
            .unwrap_or(&[])
    }
}

/// Where inheritance and references look names up, and where inline definitions go.
pub(crate) trait Scope {
    fn find(&self, kind: BlockKind, name: &str) -> Option<&RawDef>;
    fn add_inline(&mut self, kind: BlockKind, def: RawDef);
    fn next_anon(&mut self) -> u64;
}

/// A [`Scope`] over one [`Defs`] (the configuration being read).
pub(crate) struct DefsScope<'d> {
    pub defs: &'d mut Defs,
    pub anon: &'d mut u64,
}

impl Scope for DefsScope<'_> {
    fn find(&self, kind: BlockKind, name: &str) -> Option<&RawDef> {
        self.defs.get(kind, name)
    }
    fn add_inline(&mut self, kind: BlockKind, def: RawDef) {
        let _ = self.defs.insert(kind, def);
    }
    fn next_anon(&mut self) -> u64 {
        *self.anon += 1;
        *self.anon
    }
}

/// A [`Scope`] that reads a finished configuration and keeps new inline definitions apart
/// (the inline dumptypes of a disklist).
pub(crate) struct OverlayScope<'d> {
    pub base: &'d Defs,
    pub extra: Defs,
    pub anon: u64,
}

impl Scope for OverlayScope<'_> {
    fn find(&self, kind: BlockKind, name: &str) -> Option<&RawDef> {
        self.extra
            .get(kind, name)
            .or_else(|| self.base.get(kind, name))
    }
    fn add_inline(&mut self, kind: BlockKind, def: RawDef) {
        let _ = self.extra.insert(kind, def);
    }
    fn next_anon(&mut self) -> u64 {
        self.anon += 1;
        self.anon
    }
}

/// Reads statements into [`Params`].
pub(crate) struct Reader<'a, 's> {
    pub sources: &'a SourceMap,
    pub sink: &'s mut Sink,
}

impl Reader<'_, '_> {
    fn loc(&self, span: Span) -> Location {
        self.sources.location(span)
    }

    fn error(&mut self, span: Span, kind: ErrorKind) {
        let loc = self.loc(span);
        self.sink.error(loc, kind);
    }

    fn warn(&mut self, span: Span, kind: WarningKind) {
        let loc = self.loc(span);
        self.sink.warn(loc, kind);
    }

    /// Reads a block body of `kind` into `params`.
    pub fn read_block(
        &mut self,
        scope: &mut dyn Scope,
        kind: BlockKind,
        owner: &str,
        block: &Block,
        params: &mut Params,
    ) {
        for stmt in &block.body {
            self.block_statement(scope, kind, owner, stmt, params);
        }
    }

    fn block_statement(
        &mut self,
        scope: &mut dyn Scope,
        kind: BlockKind,
        owner: &str,
        stmt: &Statement,
        params: &mut Params,
    ) {
        let head = stmt.head_text().to_string();
        let bare = stmt.args.is_empty() && stmt.block.is_none();
        if let Tok::Word(w) = &stmt.head.tok
            && let Some(def) = keywords::lookup(kind.table(), w)
        {
            self.param(scope, def, kind.visible_properties(), owner, stmt, params);
            return;
        }
        if bare && let Some(parent) = scope.find(kind, &head) {
            let parent = parent.params.clone();
            params.merge_from(&parent);
            return;
        }
        match &stmt.head.tok {
            Tok::Word(w) if keywords::REMOVED.iter().any(|r| keywords::is(w, r)) => {
                self.warn(stmt.head.span, WarningKind::Deprecated { keyword: head });
            }
            Tok::Word(w) if keywords::known_anywhere(w) => self.warn(
                stmt.head.span,
                WarningKind::NotValidHere {
                    keyword: head,
                    context: kind.context(),
                },
            ),
            Tok::Word(_) if !bare => self.warn(
                stmt.head.span,
                WarningKind::UnknownKeyword {
                    keyword: head,
                    context: kind.context(),
                },
            ),
            _ if bare => self.error(
                stmt.head.span,
                ErrorKind::Undefined {
                    kind: kind.name(),
                    name: head,
                    hint: format!(
                        " (a bare name in {} inherits from an earlier definition)",
                        kind.context()
                    ),
                },
            ),
            _ => {
                let found = describe(self.sources, &stmt.head);
                self.error(
                    stmt.head.span,
                    ErrorKind::Expected {
                        expected: format!("a {} parameter or a definition name", kind.name()),
                        found,
                    },
                );
            }
        }
    }

    /// Reads one `keyword value...` statement whose keyword is `def`.
    pub fn param(
        &mut self,
        scope: &mut dyn Scope,
        def: &'static Def,
        visible: bool,
        owner: &str,
        stmt: &Statement,
        params: &mut Params,
    ) {
        let keyword = stmt.head_text();
        let loc = self.loc(stmt.span);
        if def.deprecated {
            self.warn(
                stmt.head.span,
                WarningKind::Deprecated {
                    keyword: keyword.to_string(),
                },
            );
        }
        if let Some(block) = &stmt.block {
            match BlockKind::inline_kind(def.kind) {
                Some(bk) if stmt.args.is_empty() => {
                    let n = scope.next_anon();
                    let name = match bk {
                        BlockKind::Application | BlockKind::Script => {
                            format!("custom(DUMPTYPE:{owner}).{n}")
                        }
                        BlockKind::Interactivity => format!("custom(iv).{n}"),
                        BlockKind::Taperscan => format!("custom(ts).{n}"),
                        _ => format!("custom(po).{n}"),
                    };
                    let mut p = Params::default();
                    self.read_block(scope, bk, &name, block, &mut p);
                    scope.add_inline(
                        bk,
                        RawDef {
                            name: name.clone(),
                            location: self.loc(block.open),
                            params: p,
                            base: None,
                            builtin: false,
                        },
                    );
                    let value = match bk {
                        BlockKind::Application => Value::Application(name),
                        BlockKind::Script => {
                            let mut v = match params.raw(def.name) {
                                Some(Value::Scripts(s)) => s.clone(),
                                _ => Vec::new(),
                            };
                            v.push(name);
                            Value::Scripts(v)
                        }
                        _ => Value::Ref(name),
                    };
                    params.set(
                        def.name,
                        Param {
                            value,
                            location: loc,
                        },
                    );
                }
                _ => self.error(
                    block.open,
                    ErrorKind::Expected {
                        expected: "end of line".into(),
                        found: "\"{\"".into(),
                    },
                ),
            }
            return;
        }
        let cx = Cx {
            sources: self.sources,
            keyword,
            visible,
        };
        let mut args = Args::new(&stmt.args, stmt.head.span);
        let value = match value::read(def.kind, &mut args, &cx, params.raw(def.name)) {
            Ok(v) => v,
            Err((span, kind)) => {
                self.error(span, kind);
                return;
            }
        };
        if let Some(t) = args.peek() {
            let found = describe(self.sources, t);
            self.error(
                t.span,
                ErrorKind::Expected {
                    expected: "end of line".into(),
                    found,
                },
            );
            return;
        }
        let value = match self.check(scope, def, keyword, value, &stmt.args) {
            Some(v) => v,
            None => return,
        };
        params.set(
            def.name,
            Param {
                value,
                location: loc,
            },
        );
    }

    /// Validation after reading (conffile.c validate_*), and reference checks.
    fn check(
        &mut self,
        scope: &dyn Scope,
        def: &'static Def,
        keyword: &str,
        value: Value,
        args: &[Token],
    ) -> Option<Value> {
        let span = match (args.first(), args.last()) {
            (Some(a), Some(b)) => a.span.to(b.span),
            _ => Span::BUILTIN,
        };
        let found = self.sources.snippet(span);
        let invalid = |s: &mut Self, constraint: &str| {
            s.error(
                span,
                ErrorKind::Invalid {
                    keyword: keyword.to_string(),
                    constraint: constraint.to_string(),
                    found: found.clone(),
                },
            );
            None
        };
        let int = match &value {
            Value::Int(v) => Some(*v),
            _ => None,
        };
        match (def.check, int) {
            (Check::NonNegative, Some(v)) if v < 0 => return invalid(self, "must be nonnegative"),
            (Check::Positive, Some(v)) if v < 1 => return invalid(self, "must be positive"),
            (Check::NonZero, Some(0)) => return invalid(self, "must not be 0"),
            (Check::RunsPerCycle, Some(v)) if v < -1 => return invalid(self, "must be >= -1"),
            (Check::BumpPercent | Check::Reserve, Some(v)) if !(0..=100).contains(&v) => {
                return invalid(self, "must be between 0 and 100");
            }
            (Check::Debug, Some(v)) if !(0..=9).contains(&v) => {
                return invalid(self, "must be between 0 and 9");
            }
            (Check::Blocksize, Some(v)) if v < 32 => {
                return invalid(self, "must be at least 32 KBytes");
            }
            (Check::Use, Some(v)) => return Some(Value::Int(v / 32 * 32)),
            (Check::Chunksize, Some(v)) => {
                if v < 0 {
                    return invalid(
                        self,
                        "must not be negative (negative chunksizes are no longer supported)",
                    );
                }
                let v = if v == 0 {
                    i64::MAX / 1024 - 64
                } else {
                    v / 32 * 32
                };
                if v < 64 {
                    return invalid(self, "must be at least 64 KBytes");
                }
                return Some(Value::Int(v));
            }
            _ => {}
        }
        match (def.check, &value) {
            (Check::BumpMult, Value::Real(r)) if *r < 0.999 => {
                return invalid(self, "must be one or more");
            }
            (Check::DisplayUnit, Value::Str(s)) => {
                return match s.as_str() {
                    "k" | "m" | "g" | "t" | "K" | "M" | "G" | "T" => {
                        Some(Value::Str(s.to_ascii_uppercase()))
                    }
                    _ => invalid(self, "must be k, m, g or t"),
                };
            }
            (Check::Program, Value::Str(s))
                if !matches!(s.as_str(), "DUMP" | "GNUTAR" | "STAR" | "APPLICATION") =>
            {
                return invalid(
                    self,
                    "must be \"DUMP\", \"GNUTAR\", \"STAR\" or \"APPLICATION\"",
                );
            }
            (Check::NoSpaceDquote, v) => {
                let s = match v {
                    Value::Str(s) => Some(s.as_str()),
                    Value::Autolabel(a) => a.template.as_deref(),
                    Value::Labelstr(value::Labelstr::Regex(s)) => Some(s.as_str()),
                    _ => None,
                };
                if let Some(s) = s {
                    if s.contains(' ') {
                        return invalid(self, "must not contain spaces");
                    }
                    if s.contains('"') {
                        return invalid(self, "must not contain double quotes");
                    }
                }
            }
            (Check::DumpLimit, Value::HostLimit(h)) if !h.patterns.is_empty() => {
                return invalid(self, "can't specify hostnames");
            }
            _ => {}
        }
        // References to other definitions must exist where they are used.
        let reference = |s: &mut Self, kind: BlockKind, name: &str| -> Option<String> {
            if name.is_empty() {
                return Some(String::new());
            }
            match scope.find(kind, name) {
                Some(d) => Some(d.name.clone()),
                None => {
                    s.error(
                        span,
                        ErrorKind::Undefined {
                            kind: kind.name(),
                            name: name.to_string(),
                            hint: String::new(),
                        },
                    );
                    None
                }
            }
        };
        match value {
            Value::Application(n) => {
                reference(self, BlockKind::Application, &n).map(Value::Application)
            }
            Value::Ref(n) => {
                let kind = BlockKind::inline_kind(def.kind)?;
                reference(self, kind, &n).map(Value::Ref)
            }
            Value::Scripts(list) => {
                let mut out = Vec::with_capacity(list.len());
                for n in list {
                    out.push(reference(self, BlockKind::Script, &n)?);
                }
                Some(Value::Scripts(out))
            }
            v => Some(v),
        }
    }
}

/// The result of stage 2 over an amanda.conf or amanda-client.conf.
#[derive(Clone, Debug, Default)]
pub(crate) struct Raw {
    pub globals: Params,
    pub defs: Defs,
    /// `holdingdisk` selections, in order.
    pub holding: Vec<(String, Location)>,
    pub anon: u64,
}

/// Walks a document's items in order (descending into includes where they are).
pub(crate) fn walk(doc: &Document, client: bool, sink: &mut Sink) -> Raw {
    let mut raw = Raw::default();
    if !client {
        predefine_dumptypes(&mut raw.defs);
    }
    let mut w = Walker {
        reader: Reader {
            sources: &doc.sources,
            sink,
        },
        doc,
        client,
        raw: &mut raw,
    };
    if let Some(root) = doc.root {
        w.file(root, 0);
    }
    if !client {
        w.finish();
    }
    raw
}

fn predefine_dumptypes(defs: &mut Defs) {
    use crate::value::{Compress, HoldingPolicy, Strategy};
    let loc = Location {
        file: std::sync::Arc::from("<built-in>"),
        line: 0,
        column: 0,
    };
    let base = DumptypeBase::from_globals(&Params::default());
    let one = |name: &str, key: &'static str, value: Value| {
        let mut params = Params::default();
        params.set(
            key,
            Param {
                value,
                location: loc.clone(),
            },
        );
        RawDef {
            name: name.to_string(),
            location: loc.clone(),
            params,
            base: Some(base),
            builtin: true,
        }
    };
    let compress = [
        ("NO-COMPRESS", Compress::None),
        ("COMPRESS-FAST", Compress::ClientFast),
        ("COMPRESS-BEST", Compress::ClientBest),
        ("COMPRESS-CUST", Compress::ClientCustom),
        ("SRVCOMPRESS", Compress::ServerFast),
    ]
    .map(|(name, c)| one(name, "compress", Value::Compress(c)));
    for d in compress.into_iter().chain([
        one("BSD-AUTH", "auth", Value::Str("BSD".into())),
        one("BSDTCP-AUTH", "auth", Value::Str("BSDTCP".into())),
        one("NO-RECORD", "record", Value::Bool(false)),
        one(
            "NO-HOLD",
            "holdingdisk",
            Value::Holding(HoldingPolicy::Never),
        ),
        one("NO-FULL", "strategy", Value::Strategy(Strategy::Nofull)),
    ]) {
        let _ = defs.insert(BlockKind::Dumptype, d);
    }
}

struct Walker<'a, 's> {
    reader: Reader<'a, 's>,
    doc: &'a Document,
    client: bool,
    raw: &'a mut Raw,
}

impl<'a, 's> Walker<'a, 's> {
    fn file(&mut self, id: FileId, depth: usize) {
        let Some(f) = self.doc.files.get(&id) else {
            return;
        };
        for item in &f.items {
            match item {
                Item::Include(inc) => {
                    if let Some(t) = inc.target
                        && depth < crate::loader::MAX_INCLUDE_DEPTH
                    {
                        self.file(t, depth + 1);
                    }
                }
                Item::Statement(s) => self.statement(s),
            }
        }
    }

    fn scope<'w>(&'w mut self) -> (DefsScope<'w>, &'w mut Reader<'a, 's>) {
        (
            DefsScope {
                defs: &mut self.raw.defs,
                anon: &mut self.raw.anon,
            },
            &mut self.reader,
        )
    }

    fn statement(&mut self, s: &Statement) {
        let Tok::Word(head) = &s.head.tok else {
            let found = describe(self.reader.sources, &s.head);
            self.reader.error(
                s.head.span,
                ErrorKind::Expected {
                    expected: "a keyword".into(),
                    found,
                },
            );
            return;
        };
        if keywords::is(head, "define") {
            self.define(s);
            return;
        }
        if !self.client && keywords::is(head, "holdingdisk") {
            self.holdingdisk(s);
            return;
        }
        let table = if self.client {
            keywords::CLIENT
        } else {
            keywords::SERVER
        };
        let context = if self.client {
            "amanda-client.conf"
        } else {
            "amanda.conf"
        };
        match keywords::lookup(table, head) {
            Some(def) => {
                let previous = self.raw.globals.raw(def.name).is_some().then(|| {
                    self.raw
                        .globals
                        .location(def.name)
                        .cloned()
                        .unwrap_or_else(|| Location::file_only("?"))
                });
                let accumulates = matches!(
                    def.kind,
                    Kind::Property
                        | Kind::ExInclude
                        | Kind::StrList
                        | Kind::Scripts
                        | Kind::DumpSelection
                        | Kind::VaultList
                );
                let mut globals = std::mem::take(&mut self.raw.globals);
                {
                    let (mut scope, reader) = self.scope();
                    reader.param(&mut scope, def, false, "", s, &mut globals);
                }
                if let (Some(previous), false) = (previous, accumulates) {
                    self.reader.warn(
                        s.head.span,
                        WarningKind::SetTwice {
                            keyword: head.clone(),
                            previous,
                        },
                    );
                }
                self.raw.globals = globals;
            }
            None => {
                let kind = if keywords::REMOVED.iter().any(|r| keywords::is(head, r)) {
                    WarningKind::Deprecated {
                        keyword: head.clone(),
                    }
                } else if keywords::known_anywhere(head) {
                    WarningKind::NotValidHere {
                        keyword: head.clone(),
                        context,
                    }
                } else {
                    WarningKind::UnknownKeyword {
                        keyword: head.clone(),
                        context,
                    }
                };
                self.reader.warn(s.head.span, kind);
            }
        }
    }

    fn define(&mut self, s: &Statement) {
        let what = if self.client {
            "application or script"
        } else {
            "dumptype, tapetype, interface, holdingdisk, application, script, device, changer, interactivity, taperscan, policy or storage"
        };
        let kind = match s.args.first() {
            Some(Token {
                tok: Tok::Word(w), ..
            }) => BlockKind::from_define_word(w, self.client),
            _ => None,
        };
        let Some(kind) = kind else {
            let (span, found) = match s.args.first() {
                Some(t) => (t.span, describe(self.reader.sources, t)),
                None => (s.head.span, "end of line".into()),
            };
            self.reader.error(
                span,
                ErrorKind::Expected {
                    expected: what.into(),
                    found,
                },
            );
            return;
        };
        let (name, name_span) = match s.args.get(1) {
            Some(Token {
                tok: Tok::Word(n) | Tok::Str(n),
                span,
            }) => (n.clone(), *span),
            other => {
                let (span, found) = match other {
                    Some(t) => (t.span, describe(self.reader.sources, t)),
                    None => (s.span, "end of line".into()),
                };
                self.reader.error(
                    span,
                    ErrorKind::Expected {
                        expected: format!("a {} name", kind.name()),
                        found,
                    },
                );
                return;
            }
        };
        if let Some(t) = s.args.get(2) {
            let found = describe(self.reader.sources, t);
            self.reader.error(
                t.span,
                ErrorKind::Expected {
                    expected: "\"{\"".into(),
                    found,
                },
            );
            return;
        }
        self.define_named(kind, name, name_span, s);
    }

    fn define_named(&mut self, kind: BlockKind, name: String, name_span: Span, s: &Statement) {
        if name.contains(' ') || name.contains('"') || name.is_empty() {
            self.reader.error(
                name_span,
                ErrorKind::Invalid {
                    keyword: format!("{} name", kind.name()),
                    constraint: "must not be empty nor contain spaces or double quotes".into(),
                    found: format!("{name:?}"),
                },
            );
            return;
        }
        let Some(block) = &s.block else {
            self.reader.error(
                s.span,
                ErrorKind::Expected {
                    expected: "\"{\" at the end of the line".into(),
                    found: "end of line".into(),
                },
            );
            return;
        };
        if let Some(prev) = self.raw.defs.get(kind, &name) {
            let kind_err = if prev.builtin {
                ErrorKind::Other(format!(
                    "{} {} is defined by default and cannot be redefined",
                    kind.name(),
                    prev.name
                ))
            } else {
                ErrorKind::Duplicate {
                    kind: kind.name(),
                    name: name.clone(),
                    previous: prev.location.clone(),
                }
            };
            self.reader.error(name_span, kind_err);
            return;
        }
        let base =
            (kind == BlockKind::Dumptype).then(|| DumptypeBase::from_globals(&self.raw.globals));
        let mut params = Params::default();
        let location = self.reader.loc(s.head.span);
        {
            let (mut scope, reader) = self.scope();
            reader.read_block(&mut scope, kind, &name, block, &mut params);
        }
        let _ = self.raw.defs.insert(
            kind,
            RawDef {
                name,
                location,
                params,
                base,
                builtin: false,
            },
        );
    }

    /// Top-level `holdingdisk` (conffile.c: get_holdingdisk(0)).
    fn holdingdisk(&mut self, s: &Statement) {
        if s.block.is_some() {
            // Old syntax: `holdingdisk NAME { ... }` defines and selects.
            let (name, span) = match (s.args.first(), s.args.len()) {
                (
                    Some(Token {
                        tok: Tok::Word(n) | Tok::Str(n),
                        span,
                    }),
                    1,
                ) => (n.clone(), *span),
                _ => {
                    self.reader.error(
                        s.span,
                        ErrorKind::Expected {
                            expected: "holdingdisk NAME {".into(),
                            found: format!("{:?}", self.reader.sources.snippet(s.span)),
                        },
                    );
                    return;
                }
            };
            let had = self.raw.defs.get(BlockKind::Holdingdisk, &name).is_some();
            self.define_named(BlockKind::Holdingdisk, name.clone(), span, s);
            if !had && self.raw.defs.get(BlockKind::Holdingdisk, &name).is_some() {
                let loc = self.reader.loc(span);
                self.raw.holding.push((name, loc));
            }
            return;
        }
        if s.args.is_empty() {
            self.reader.error(
                s.head.span,
                ErrorKind::Expected {
                    expected: "a holding disk name".into(),
                    found: "end of line".into(),
                },
            );
            return;
        }
        for t in &s.args {
            match &t.tok {
                Tok::Word(n) | Tok::Str(n) => {
                    if self
                        .raw
                        .holding
                        .iter()
                        .any(|(h, _)| h.eq_ignore_ascii_case(n))
                    {
                        self.reader.error(
                            t.span,
                            ErrorKind::Other(format!("holding disk {n:?} is already in use")),
                        );
                    } else {
                        let loc = self.reader.loc(t.span);
                        self.raw.holding.push((n.clone(), loc));
                    }
                }
                _ => {
                    let found = describe(self.reader.sources, t);
                    self.reader.error(
                        t.span,
                        ErrorKind::Expected {
                            expected: "a holding disk name".into(),
                            found,
                        },
                    );
                    return;
                }
            }
        }
    }

    /// Checks at the end of the file (conffile.c: update_derived_values).
    fn finish(&mut self) {
        for (name, loc) in &self.raw.holding {
            if self.raw.defs.get(BlockKind::Holdingdisk, name).is_none() {
                self.reader.sink.error(
                    loc.clone(),
                    ErrorKind::Undefined {
                        kind: "holdingdisk",
                        name: name.clone(),
                        hint: String::new(),
                    },
                );
            }
        }
        if let Some(p) = self.raw.globals.get("tapetype")
            && let Value::Str(t) = &p.value
            && self.raw.defs.get(BlockKind::Tapetype, t).is_none()
        {
            self.reader.sink.error(
                p.location.clone(),
                ErrorKind::Undefined {
                    kind: "tapetype",
                    name: t.clone(),
                    hint: String::new(),
                },
            );
        }
    }
}
