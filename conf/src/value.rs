//! Typed parameter values, and the readers that turn a statement's tokens into them.
//!
//! One reader per [`Kind`], each following the matching `read_*` function of Amanda 3.5.1's
//! common-src/conffile.c (facts only): which words are accepted, how units multiply, what
//! `append` does, what a missing value means. The readers are pure: tokens in, a [`Value`]
//! or an error with the span to blame out.
//!
//! What this module must not do: know where a parameter is allowed (see
//! [`crate::keywords`]) or apply inheritance (see [`crate::resolve`]).

/// The wire model's: a dumptype's `estimate`, a script's `execute_where`, and `exclude` /
/// `include` (`exclude "pat"` or `exclude file "pat"` are [`FileList::files`], `exclude list
/// "file"` its [`FileList::lists`]) mean what the DLE the server sends says.
pub use proto::dle::{Estimate, ExecuteWhere, FileList};
use proto::ports::PortRange;
use std::collections::BTreeMap;

use crate::diag::ErrorKind;
use crate::keywords::{self, Kind, PortClass, Unit};
use crate::source::{SourceMap, Span};
use crate::syntax::{Tok, Token, describe};

/// `compress` (conffile.c: read_compress).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Compress {
    None,
    ClientFast,
    ClientBest,
    ClientCustom,
    ServerFast,
    ServerBest,
    ServerCustom,
}

/// `encrypt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Encrypt {
    None,
    Client,
    Server,
}

/// A dumptype's `holdingdisk` policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum HoldingPolicy {
    Never,
    Auto,
    Required,
}

/// `strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Strategy {
    Standard,
    Nofull,
    Noinc,
    Skip,
    Hanoi,
    Incronly,
}

/// `taperalgo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum TaperAlgo {
    First,
    Firstfit,
    Largest,
    Largestfit,
    Smallest,
    Last,
}

/// `send_amreport_on`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum SendAmreportOn {
    All,
    Strange,
    Error,
    Never,
}

/// `data_path`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum DataPath {
    Amanda,
    Directtcp,
}

/// `part_cache_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum PartCacheType {
    None,
    Disk,
    Memory,
}

/// `autoflush`: no, yes or all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum NoYesAll {
    No,
    Yes,
    All,
}

/// One `property "name" "value" ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    /// The values, in order.
    pub values: Vec<String>,
    /// Written with `append`: inheriting appends rather than replaces.
    pub append: bool,
    /// Written with `priority`.
    pub priority: bool,
    /// Sent to the client (`visible`) or not (`hidden`).
    pub visible: bool,
}

/// Properties by name. Names are folded like Amanda does (lower case, `_` → `-`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties(pub BTreeMap<String, Property>);

impl Properties {
    /// The property named `name` (any case, `_` or `-`).
    pub fn get(&self, name: &str) -> Option<&Property> {
        self.0.get(&property_name(name))
    }
    /// Its first value.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.get(name)
            .and_then(|p| p.values.first())
            .map(String::as_str)
    }
    /// Number of properties.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// No property.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Merges an inherited definition's properties into these (conffile.c:
    /// merge_proplist_foreach_fn): a parent's `append` property appends its values,
    /// any other replaces ours.
    pub(crate) fn merge_from(&mut self, parent: &Properties) {
        for (k, p) in &parent.0 {
            match self.0.get_mut(k) {
                Some(mine) if p.append => mine.values.extend(p.values.iter().cloned()),
                _ => {
                    self.0.insert(k.clone(), p.clone());
                }
            }
        }
    }
}

/// Amanda's property-name folding (conffile.c: amandaify_property_name).
pub fn property_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// `autolabel`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Autolabel {
    /// The label template.
    pub template: Option<String>,
    /// Which volumes may be labelled: `other_config`, `non_amanda`, `volume_error`, `empty`.
    pub when: Vec<&'static str>,
}

/// `labelstr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Labelstr {
    /// A regular expression.
    Regex(String),
    /// `match-autolabel`.
    MatchAutolabel,
}

/// `recovery_limit` / `dump_limit`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostLimit {
    /// Host patterns.
    pub patterns: Vec<String>,
    /// `same-host`.
    pub same_host: bool,
    /// `server`.
    pub server: bool,
}

/// One `dump_selection` of a storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpSelection {
    /// A tag, or `None` for `all`/`other`.
    pub tag: Option<String>,
    /// `all`, `other` or the tag.
    pub tag_type: &'static str,
    /// `all`, `full` or `incr`.
    pub level: &'static str,
}

/// A parameter's value, after units and validation.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Value {
    /// An integer, in the parameter's unit (KiB for kilobyte parameters).
    Int(i64),
    Real(f64),
    Str(String),
    Bool(bool),
    NoYesAll(NoYesAll),
    /// hhmm.
    Time(i64),
    Compress(Compress),
    Encrypt(Encrypt),
    Holding(HoldingPolicy),
    Estimates(Vec<Estimate>),
    Strategy(Strategy),
    TaperAlgo(TaperAlgo),
    SendAmreportOn(SendAmreportOn),
    DataPath(DataPath),
    /// low = 0, medium = 1, high = 2, or any integer.
    Priority(i32),
    /// Full and incremental compression rates.
    Rate(f64, f64),
    ExInclude(FileList),
    Properties(Properties),
    /// An application name ("" = none).
    Application(String),
    /// Script names.
    Scripts(Vec<String>),
    /// `execute_on` events, canonical names with `-`.
    ExecuteOn(Vec<&'static str>),
    ExecuteWhere(ExecuteWhere),
    Autolabel(Autolabel),
    Labelstr(Labelstr),
    PartCacheType(PartCacheType),
    HostLimit(HostLimit),
    StrList(Vec<String>),
    /// Names (storage lists, holding-disk selection).
    Names(Vec<String>),
    DumpSelection(Vec<DumpSelection>),
    /// (storage, days).
    VaultList(Vec<(String, i32)>),
    PortRange(PortRange),
    /// A named reference to an interactivity/taperscan/policy ("" = none).
    Ref(String),
}

/// A failure to read a value: what, and the span to blame.
pub(crate) type ReadError = (Span, ErrorKind);

/// The tokens of one statement after its keyword.
pub(crate) struct Args<'t> {
    toks: &'t [Token],
    pos: usize,
    /// Where "end of line" is (just after the keyword or the last token).
    eol: Span,
}

impl<'t> Args<'t> {
    pub fn new(toks: &'t [Token], after: Span) -> Self {
        let last = toks.last().map(|t| t.span).unwrap_or(after);
        let eol = Span {
            start: last.end,
            column: last
                .column
                .saturating_add(last.end.saturating_sub(last.start)),
            ..last
        };
        Args { toks, pos: 0, eol }
    }
    pub fn peek(&self) -> Option<&'t Token> {
        self.toks.get(self.pos)
    }
    pub fn next(&mut self) -> Option<&'t Token> {
        let t = self.toks.get(self.pos)?;
        self.pos += 1;
        Some(t)
    }
    pub fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }
    /// The span of the next token, or of the end of the line.
    pub fn here(&self) -> Span {
        self.peek().map(|t| t.span).unwrap_or(self.eol)
    }
    /// The span from the next token to the last one.
    pub fn rest_span(&self) -> Span {
        match (self.peek(), self.toks.last()) {
            (Some(a), Some(b)) => a.span.to(b.span),
            _ => self.eol,
        }
    }
    fn next_word(&mut self) -> Option<&'t str> {
        match self.peek() {
            Some(Token {
                tok: Tok::Word(w), ..
            }) => {
                self.pos += 1;
                Some(w)
            }
            _ => None,
        }
    }
    fn next_word_if(&mut self, canonical: &str) -> bool {
        match self.peek() {
            Some(Token {
                tok: Tok::Word(w), ..
            }) if keywords::is(w, canonical) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }
}

/// What the reader needs besides the tokens.
pub(crate) struct Cx<'a> {
    pub sources: &'a SourceMap,
    /// The keyword as written, for messages.
    pub keyword: &'a str,
    /// The default visibility of properties read here.
    pub visible: bool,
}

impl Cx<'_> {
    fn expected(&self, args: &Args<'_>, what: &str) -> ReadError {
        let found = match args.peek() {
            Some(t) => describe(self.sources, t),
            None => "end of line".to_string(),
        };
        (
            args.here(),
            ErrorKind::Expected {
                expected: what.to_string(),
                found,
            },
        )
    }
}

/// A unit word's multiplier class (conffile.c: numb_keytable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mult {
    One,
    K,
    M,
    G,
    T,
    Week,
}

fn unit_word(w: &str) -> Option<Mult> {
    let f = keywords::fold(w)?;
    Some(match f.as_str() {
        "b" | "bps" | "byte" | "bytes" | "day" | "days" | "tape" | "tapes" => Mult::One,
        "k" | "kb" | "kbps" | "kbyte" | "kbytes" | "kilobyte" | "kilobytes" | "kps" => Mult::K,
        "m" | "mb" | "mbps" | "mbyte" | "mbytes" | "meg" | "megabyte" | "megabytes" | "mps" => {
            Mult::M
        }
        "g" | "gb" | "gbps" | "gbyte" | "gbytes" | "gig" | "gigabyte" | "gigabytes" => Mult::G,
        "t" | "tb" | "tbps" | "tbyte" | "tbytes" | "tera" | "terabyte" | "terabytes" => Mult::T,
        "week" | "weeks" => Mult::Week,
        _ => return None,
    })
}

fn apply_unit(v: i64, m: Mult, unit: Unit) -> Option<i64> {
    const KI: i64 = 1024;
    match (m, unit) {
        (Mult::One, Unit::K) => Some(v / KI),
        (Mult::One, Unit::None) | (Mult::K, Unit::K) => Some(v),
        (Mult::Week, _) => v.checked_mul(7),
        (Mult::K, Unit::None) | (Mult::M, Unit::K) => v.checked_mul(KI),
        (Mult::M, Unit::None) | (Mult::G, Unit::K) => v.checked_mul(KI * KI),
        (Mult::G, Unit::None) | (Mult::T, Unit::K) => v.checked_mul(KI * KI * KI),
        (Mult::T, Unit::None) => v.checked_mul(KI * KI * KI * KI),
    }
}

/// Reads a number with an optional unit (conffile.c: get_int/get_int64/get_size and
/// get_multiplier). `max` is the largest value the parameter's C type holds.
fn number(args: &mut Args<'_>, cx: &Cx<'_>, unit: Unit, max: i64) -> Result<i64, ReadError> {
    let start = args.here();
    let v = match args.peek().map(|t| &t.tok) {
        Some(Tok::Int(v)) => *v,
        Some(Tok::Word(w)) if keywords::is(w, "inf") => max,
        Some(Tok::BigInt) => {
            return Err((
                start,
                ErrorKind::TooLarge {
                    keyword: cx.keyword.to_string(),
                    found: cx.sources.snippet(start),
                },
            ));
        }
        _ => return Err(cx.expected(args, "an integer")),
    };
    args.next();
    let mut end = start;
    let v = match args.peek() {
        Some(Token {
            tok: Tok::Word(w),
            span,
        }) => match unit_word(w) {
            Some(m) => {
                args.next();
                end = *span;
                apply_unit(v, m, unit)
            }
            None => Some(v),
        },
        _ => Some(v),
    };
    let whole = start.to(end);
    match v {
        Some(v) if v <= max && v >= -max - 1 => Ok(v),
        _ => Err((
            whole,
            ErrorKind::TooLarge {
                keyword: cx.keyword.to_string(),
                found: cx.sources.snippet(whole),
            },
        )),
    }
}

fn bool_word(w: &str) -> Option<bool> {
    let f = keywords::fold(w)?;
    match f.as_str() {
        "y" | "yes" | "t" | "true" | "on" => Some(true),
        "n" | "no" | "f" | "false" | "off" => Some(false),
        _ => None,
    }
}

fn string(args: &mut Args<'_>, cx: &Cx<'_>) -> Result<String, ReadError> {
    match args.peek() {
        Some(Token {
            tok: Tok::Str(s), ..
        }) => {
            args.next();
            Ok(s.clone())
        }
        Some(Token {
            tok: Tok::Word(w), ..
        }) => Err(cx.expected(args, &format!("a quoted string like \"{w}\""))),
        _ => Err(cx.expected(args, "a quoted string")),
    }
}

/// Picks one of `choices` (canonical spellings) from the next word.
fn choice<T: Copy>(
    args: &mut Args<'_>,
    cx: &Cx<'_>,
    choices: &[(&str, T)],
    what: &str,
) -> Result<T, ReadError> {
    if let Some(Token {
        tok: Tok::Word(w), ..
    }) = args.peek()
        && let Some((_, v)) = choices.iter().find(|(name, _)| keywords::is(w, name))
    {
        args.next();
        return Ok(*v);
    }
    Err(cx.expected(args, what))
}

fn real(args: &mut Args<'_>, cx: &Cx<'_>) -> Result<f64, ReadError> {
    match args.peek().map(|t| &t.tok) {
        Some(Tok::Int(v)) => {
            let v = *v as f64;
            args.next();
            Ok(v)
        }
        Some(Tok::Real(v)) => {
            let v = *v;
            args.next();
            Ok(v)
        }
        _ => Err(cx.expected(args, "a number")),
    }
}

const EXECUTE_ON: &[&str] = &[
    "pre-amcheck",
    "pre-dle-amcheck",
    "pre-host-amcheck",
    "post-amcheck",
    "post-dle-amcheck",
    "post-host-amcheck",
    "pre-estimate",
    "pre-dle-estimate",
    "pre-host-estimate",
    "post-estimate",
    "post-dle-estimate",
    "post-host-estimate",
    "pre-backup",
    "pre-dle-backup",
    "pre-host-backup",
    "post-backup",
    "post-dle-backup",
    "post-host-backup",
    "pre-recover",
    "post-recover",
    "pre-level-recover",
    "post-level-recover",
    "inter-level-recover",
];

/// Reads the value of a parameter of kind `kind`. `current` is the value it has now (for
/// `append` and the per-key kinds). On success every token the value uses is consumed; the
/// caller reports leftovers.
pub(crate) fn read(
    kind: Kind,
    args: &mut Args<'_>,
    cx: &Cx<'_>,
    current: Option<&Value>,
) -> Result<Value, ReadError> {
    Ok(match kind {
        Kind::Int(u) => Value::Int(number(args, cx, u, i64::from(i32::MAX))?),
        Kind::Int64(u) | Kind::Size(u) => Value::Int(number(args, cx, u, i64::MAX)?),
        Kind::Real => Value::Real(real(args, cx)?),
        Kind::Str => Value::Str(string(args, cx)?),
        Kind::Ident => match args.peek().map(|t| &t.tok) {
            Some(Tok::Word(w) | Tok::Str(w)) => {
                let w = w.clone();
                args.next();
                Value::Str(w)
            }
            _ => return Err(cx.expected(args, "a name")),
        },
        Kind::Bool => Value::Bool(match args.peek().map(|t| &t.tok) {
            // A bare keyword means yes (get_bool returns 2, "most likely TRUE").
            None => true,
            Some(Tok::Int(v)) => {
                let v = *v != 0;
                args.next();
                v
            }
            Some(Tok::Word(w)) if bool_word(w).is_some() => {
                let v = bool_word(w).unwrap_or(true);
                args.next();
                v
            }
            _ => {
                return Err(cx.expected(args, "yes, no, true, false, on, off, y, n, t, f, 0 or 1"));
            }
        }),
        Kind::NoYesAll => Value::NoYesAll(match args.peek().map(|t| &t.tok) {
            None => NoYesAll::Yes,
            Some(Tok::Int(v)) => {
                let v = *v;
                args.next();
                match v {
                    0 => NoYesAll::No,
                    2 => NoYesAll::All,
                    _ => NoYesAll::Yes,
                }
            }
            Some(Tok::Word(w)) if keywords::is(w, "all") => {
                args.next();
                NoYesAll::All
            }
            Some(Tok::Word(w)) if bool_word(w).is_some() => {
                let v = bool_word(w) == Some(true);
                args.next();
                if v { NoYesAll::Yes } else { NoYesAll::No }
            }
            _ => return Err(cx.expected(args, "yes, no or all")),
        }),
        Kind::Time => match args.peek().map(|t| &t.tok) {
            Some(Tok::Int(v)) => {
                let v = *v;
                args.next();
                Value::Time(v)
            }
            Some(Tok::Word(w)) if keywords::is(w, "inf") => {
                args.next();
                Value::Time(i64::MAX)
            }
            _ => return Err(cx.expected(args, "a time (hhmm)")),
        },
        Kind::Compress => Value::Compress(compress(args, cx)?),
        Kind::Encrypt => Value::Encrypt(choice(
            args,
            cx,
            &[
                ("none", Encrypt::None),
                ("client", Encrypt::Client),
                ("server", Encrypt::Server),
            ],
            "none, client or server",
        )?),
        Kind::Holding => Value::Holding(match args.peek().map(|t| &t.tok) {
            None => HoldingPolicy::Auto,
            Some(Tok::Int(v)) => {
                let v = *v;
                args.next();
                if v == 0 {
                    HoldingPolicy::Never
                } else {
                    HoldingPolicy::Auto
                }
            }
            Some(Tok::Word(w)) if bool_word(w).is_some() => {
                let v = bool_word(w) == Some(true);
                args.next();
                if v {
                    HoldingPolicy::Auto
                } else {
                    HoldingPolicy::Never
                }
            }
            _ => choice(
                args,
                cx,
                &[
                    ("never", HoldingPolicy::Never),
                    ("auto", HoldingPolicy::Auto),
                    ("required", HoldingPolicy::Required),
                ],
                "never, auto or required",
            )?,
        }),
        Kind::EstimateList => {
            let mut v = Vec::new();
            loop {
                v.push(choice(
                    args,
                    cx,
                    &[
                        ("client", Estimate::Client),
                        ("server", Estimate::Server),
                        ("calcsize", Estimate::Calcsize),
                    ],
                    "client, server or calcsize",
                )?);
                if args.at_end() {
                    break;
                }
            }
            Value::Estimates(v)
        }
        Kind::Strategy => Value::Strategy(choice(
            args,
            cx,
            &[
                ("skip", Strategy::Skip),
                ("standard", Strategy::Standard),
                ("nofull", Strategy::Nofull),
                ("noinc", Strategy::Noinc),
                ("hanoi", Strategy::Hanoi),
                ("incronly", Strategy::Incronly),
            ],
            "a dump strategy (standard, nofull, noinc, skip, hanoi or incronly)",
        )?),
        Kind::TaperAlgo => Value::TaperAlgo(choice(
            args,
            cx,
            &[
                ("first", TaperAlgo::First),
                ("firstfit", TaperAlgo::Firstfit),
                ("largest", TaperAlgo::Largest),
                ("largestfit", TaperAlgo::Largestfit),
                ("smallest", TaperAlgo::Smallest),
                ("last", TaperAlgo::Last),
            ],
            "first, firstfit, largest, largestfit, smallest or last",
        )?),
        Kind::SendAmreportOn => Value::SendAmreportOn(choice(
            args,
            cx,
            &[
                ("all", SendAmreportOn::All),
                ("strange", SendAmreportOn::Strange),
                ("error", SendAmreportOn::Error),
                ("never", SendAmreportOn::Never),
            ],
            "all, strange, error or never",
        )?),
        Kind::DataPath => Value::DataPath(choice(
            args,
            cx,
            &[
                ("amanda", DataPath::Amanda),
                ("directtcp", DataPath::Directtcp),
            ],
            "amanda or directtcp",
        )?),
        Kind::Priority => match args.peek().map(|t| &t.tok) {
            Some(Tok::Int(v)) => {
                let v = i32::try_from(*v).map_err(|_| {
                    (
                        args.here(),
                        ErrorKind::TooLarge {
                            keyword: cx.keyword.to_string(),
                            found: cx.sources.snippet(args.here()),
                        },
                    )
                })?;
                args.next();
                Value::Priority(v)
            }
            _ => Value::Priority(choice(
                args,
                cx,
                &[("low", 0), ("medium", 1), ("high", 2)],
                "low, medium, high or an integer",
            )?),
        },
        Kind::Rate => {
            let full_span = args.here();
            let full = real(args, cx)?;
            if full < 0.0 {
                return Err((
                    full_span,
                    ErrorKind::Other("full compression rate must be >= 0".into()),
                ));
            }
            if args.at_end() {
                Value::Rate(full, full)
            } else {
                if matches!(args.peek().map(|t| &t.tok), Some(Tok::Comma)) {
                    args.next();
                }
                let incr_span = args.here();
                let incr = real(args, cx)?;
                if incr < 0.0 {
                    return Err((
                        incr_span,
                        ErrorKind::Other("incremental compression rate must be >= 0".into()),
                    ));
                }
                Value::Rate(full, incr)
            }
        }
        Kind::ExInclude => {
            let mut v = match current {
                Some(Value::ExInclude(e)) => e.clone(),
                _ => FileList::default(),
            };
            let list = if args.next_word_if("list") {
                true
            } else {
                args.next_word_if("file");
                false
            };
            v.optional = args.next_word_if("optional");
            let append = args.next_word_if("append");
            let target = if list { &mut v.lists } else { &mut v.files };
            if !append {
                target.clear();
            }
            while let Some(Token {
                tok: Tok::Str(s), ..
            }) = args.peek()
            {
                target.push(s.as_str().into());
                args.next();
            }
            Value::ExInclude(v)
        }
        Kind::Property => {
            let mut props = match current {
                Some(Value::Properties(p)) => p.clone(),
                _ => Properties::default(),
            };
            let priority = args.next_word_if("priority");
            let append = args.next_word_if("append");
            let visible = if args.next_word_if("hidden") {
                false
            } else if args.next_word_if("visible") {
                true
            } else {
                cx.visible
            };
            let key = match args.peek() {
                Some(Token {
                    tok: Tok::Str(s), ..
                }) => {
                    args.next();
                    property_name(s)
                }
                _ => return Err(cx.expected(args, "a quoted property name")),
            };
            let mut values = Vec::new();
            while let Some(Token {
                tok: Tok::Str(s), ..
            }) = args.peek()
            {
                values.push(s.clone());
                args.next();
            }
            if values.is_empty() {
                if !args.at_end() {
                    return Err(cx.expected(args, "a quoted property value"));
                }
                // A name without value removes the property.
                props.0.remove(&key);
            } else {
                let mut prop = Property {
                    values,
                    append,
                    priority,
                    visible,
                };
                if append && let Some(old) = props.0.get(&key) {
                    prop.priority |= old.priority;
                    let mut all = old.values.clone();
                    all.append(&mut prop.values);
                    prop.values = all;
                }
                props.0.insert(key, prop);
            }
            Value::Properties(props)
        }
        Kind::Application | Kind::Interactivity | Kind::Taperscan | Kind::Policy => {
            // Inline blocks are handled by the resolver; here only the name form.
            let name = string(args, cx)?;
            if kind == Kind::Application {
                Value::Application(name)
            } else {
                Value::Ref(name)
            }
        }
        Kind::Scripts => {
            let mut v = match current {
                Some(Value::Scripts(s)) => s.clone(),
                _ => Vec::new(),
            };
            let mut any = false;
            while let Some(Token {
                tok: Tok::Str(s) | Tok::Word(s),
                ..
            }) = args.peek()
            {
                any = true;
                if s.is_empty() {
                    v.clear();
                } else {
                    v.push(s.clone());
                }
                args.next();
            }
            if !any {
                return Err(cx.expected(args, "a script name"));
            }
            Value::Scripts(v)
        }
        Kind::ExecuteOn => {
            let mut v = Vec::new();
            loop {
                let w = args.next_word();
                let found = w.and_then(|w| {
                    EXECUTE_ON
                        .iter()
                        .find(|e| keywords::is(w, &e.replace('-', "_")))
                });
                match found {
                    Some(e) => v.push(*e),
                    None => {
                        if w.is_some() {
                            args.pos -= 1;
                        }
                        return Err(cx.expected(
                            args,
                            "an execute-on event (pre-dle-amcheck, post-host-backup, ...)",
                        ));
                    }
                }
                if matches!(args.peek().map(|t| &t.tok), Some(Tok::Comma)) {
                    args.next();
                } else {
                    break;
                }
            }
            Value::ExecuteOn(v)
        }
        Kind::ExecuteWhere => Value::ExecuteWhere(choice(
            args,
            cx,
            &[
                ("client", ExecuteWhere::Client),
                ("server", ExecuteWhere::Server),
            ],
            "client or server",
        )?),
        Kind::IntOrStr => match args.peek().map(|t| &t.tok) {
            Some(Tok::Int(v)) => {
                let v = v.to_string();
                args.next();
                Value::Str(v)
            }
            Some(Tok::Str(s)) => {
                let s = s.clone();
                args.next();
                Value::Str(s)
            }
            _ => return Err(cx.expected(args, "an integer or a quoted string")),
        },
        Kind::Autolabel => {
            let mut a = Autolabel::default();
            if let Some(Token {
                tok: Tok::Str(s), ..
            }) = args.peek()
            {
                a.template = Some(s.clone());
                args.next();
            }
            let mut data = a.template.is_some();
            while !args.at_end() {
                data = true;
                let w = match args.peek().map(|t| &t.tok) {
                    Some(Tok::Word(w)) => keywords::fold(w).unwrap_or_default(),
                    _ => String::new(),
                };
                let add: &[&'static str] = match w.as_str() {
                    "any" => &["other_config", "non_amanda", "volume_error", "empty"],
                    "other_config" => &["other_config"],
                    "non_amanda" => &["non_amanda"],
                    "volume_error" => &["volume_error"],
                    "empty" => &["empty"],
                    _ => {
                        return Err(cx.expected(
                            args,
                            "any, other-config, non-amanda, volume-error or empty",
                        ));
                    }
                };
                args.next();
                for x in add {
                    if !a.when.contains(x) {
                        a.when.push(x);
                    }
                }
            }
            if !data {
                a.template = None;
            } else if a.when.is_empty() {
                a.when = vec!["volume_error", "empty"];
            }
            Value::Autolabel(a)
        }
        Kind::Labelstr => match args.peek().map(|t| &t.tok) {
            Some(Tok::Str(s)) => {
                let s = s.clone();
                args.next();
                Value::Labelstr(Labelstr::Regex(s))
            }
            Some(Tok::Word(w)) if keywords::is(w, "match_autolabel") => {
                args.next();
                Value::Labelstr(Labelstr::MatchAutolabel)
            }
            _ => return Err(cx.expected(args, "a quoted regex or match-autolabel")),
        },
        Kind::PartCacheType => Value::PartCacheType(choice(
            args,
            cx,
            &[
                ("none", PartCacheType::None),
                ("disk", PartCacheType::Disk),
                ("memory", PartCacheType::Memory),
            ],
            "none, disk or memory",
        )?),
        Kind::HostLimit => {
            let mut h = HostLimit::default();
            while let Some(t) = args.peek() {
                match &t.tok {
                    Tok::Str(s) => h.patterns.push(s.clone()),
                    Tok::Word(w) if keywords::is(w, "same_host") => h.same_host = true,
                    Tok::Word(w) if keywords::is(w, "server") => h.server = true,
                    _ => return Err(cx.expected(args, "same-host, server or a quoted string")),
                }
                args.next();
            }
            Value::HostLimit(h)
        }
        Kind::StrList => {
            let mut v = match (args.next_word_if("append"), current) {
                (true, Some(Value::StrList(l))) => l.clone(),
                _ => Vec::new(),
            };
            while let Some(Token {
                tok: Tok::Str(s), ..
            }) = args.peek()
            {
                v.push(s.clone());
                args.next();
            }
            Value::StrList(v)
        }
        Kind::StorageList | Kind::HoldingdiskSel => {
            let mut v = Vec::new();
            while let Some(Token {
                tok: Tok::Str(s) | Tok::Word(s),
                ..
            }) = args.peek()
            {
                if s.is_empty() {
                    v.clear();
                } else {
                    v.push(s.clone());
                }
                args.next();
            }
            Value::Names(v)
        }
        Kind::DumpSelection => {
            let mut v = match current {
                Some(Value::DumpSelection(d)) => d.clone(),
                _ => Vec::new(),
            };
            if args.at_end() {
                return Ok(Value::DumpSelection(Vec::new()));
            }
            let (tag, tag_type) = match args.peek().map(|t| &t.tok) {
                Some(Tok::Str(s)) => (Some(s.clone()), "name"),
                Some(Tok::Word(w)) if keywords::is(w, "all") => (None, "all"),
                Some(Tok::Word(w)) if keywords::is(w, "other") => (None, "other"),
                _ => return Err(cx.expected(args, "a quoted tag, all or other")),
            };
            args.next();
            let level = choice(
                args,
                cx,
                &[("all", "all"), ("full", "full"), ("incr", "incr")],
                "all, full or incr",
            )?;
            match v
                .iter_mut()
                .find(|d| d.tag_type == tag_type && d.tag == tag)
            {
                Some(d) => d.level = level,
                None => v.push(DumpSelection {
                    tag,
                    tag_type,
                    level,
                }),
            }
            Value::DumpSelection(v)
        }
        Kind::VaultList => {
            let mut v = match current {
                Some(Value::VaultList(l)) => l.clone(),
                _ => Vec::new(),
            };
            let mut n = 0;
            while let Some(Token {
                tok: Tok::Str(s) | Tok::Word(s),
                ..
            }) = args.peek()
            {
                let s = s.clone();
                args.next();
                let days = number(args, cx, Unit::None, i64::from(i32::MAX))?;
                let days = i32::try_from(days).unwrap_or(i32::MAX);
                n += 1;
                match v.iter_mut().find(|(name, _)| *name == s) {
                    Some(e) => e.1 = days,
                    None => v.push((s, days)),
                }
            }
            if n == 0 {
                v.clear();
            }
            Value::VaultList(v)
        }
        Kind::PortRange(class) => Value::PortRange(port_range(args, cx, class)?),
    })
}

fn compress(args: &mut Args<'_>, cx: &Cx<'_>) -> Result<Compress, ReadError> {
    let start = args.here();
    let (mut serv, mut clie, mut none, mut fast, mut best, mut custom) =
        (false, false, false, false, false, false);
    while let Some(t) = args.peek() {
        let Tok::Word(w) = &t.tok else { break };
        match keywords::fold(w).as_deref() {
            Some("none") => none = true,
            Some("fast") => fast = true,
            Some("best") => best = true,
            Some("client") => clie = true,
            Some("server") => serv = true,
            Some("custom") => custom = true,
            _ => break,
        }
        args.next();
    }
    let what =
        "none, client fast, client best, client custom, server fast, server best or server custom";
    if !args.at_end() {
        return Err(cx.expected(args, what));
    }
    if !serv && !clie {
        clie = true;
    }
    if !(none || fast || best || custom) {
        fast = true;
    }
    let which = [none, fast, best, custom];
    let one = which.iter().filter(|b| **b).count() == 1;
    let r = match (serv, clie, one) {
        (false, true, true) if none => Some(Compress::None),
        (false, true, true) if fast => Some(Compress::ClientFast),
        (false, true, true) if best => Some(Compress::ClientBest),
        (false, true, true) => Some(Compress::ClientCustom),
        (true, false, true) if none => Some(Compress::None),
        (true, false, true) if fast => Some(Compress::ServerFast),
        (true, false, true) if best => Some(Compress::ServerBest),
        (true, false, true) => Some(Compress::ServerCustom),
        _ => None,
    };
    r.ok_or_else(|| {
        let span = start.to(args.rest_span());
        (
            span,
            ErrorKind::Expected {
                expected: what.into(),
                found: format!("{:?}", cx.sources.snippet(span)),
            },
        )
    })
}

/// `lo,hi` (or `lo hi`, or a single port), validated (conffile.c: read_intrange,
/// validate_port_range). Both ends are range-checked; Amanda 3.5.1 checks only the first.
fn port_range(args: &mut Args<'_>, cx: &Cx<'_>, class: PortClass) -> Result<PortRange, ReadError> {
    let whole = args.rest_span();
    let bad = |cx: &Cx<'_>| {
        (
            whole,
            ErrorKind::Expected {
                expected: "a port range \"lo,hi\"".into(),
                found: format!("{:?}", cx.sources.snippet(whole)),
            },
        )
    };
    let lo = match args.peek().map(|t| &t.tok) {
        Some(Tok::Int(v)) => *v,
        _ => return Err(bad(cx)),
    };
    args.next();
    let hi = match args.peek().map(|t| &t.tok) {
        None => lo,
        Some(Tok::Comma) => {
            args.next();
            match args.peek().map(|t| &t.tok) {
                Some(Tok::Int(v)) if *v >= 0 => {
                    let v = *v;
                    args.next();
                    v
                }
                _ => return Err(bad(cx)),
            }
        }
        // `850 859` is accepted by Amanda; `850-859` lexes as 850, -859 and is not.
        Some(Tok::Int(v)) if *v >= 0 => {
            let v = *v;
            args.next();
            v
        }
        _ => return Err(bad(cx)),
    };
    if !args.at_end() {
        return Err(bad(cx));
    }
    let (min, max) = match class {
        PortClass::Reserved => (1, 1023),
        PortClass::Unreserved => (1024, 65535),
    };
    let found = cx.sources.snippet(whole);
    if !(min..=max).contains(&lo) || !(min..=max).contains(&hi) {
        return Err((
            whole,
            ErrorKind::Invalid {
                keyword: cx.keyword.to_string(),
                constraint: format!("must be within {min}..{max}"),
                found,
            },
        ));
    }
    if lo > hi {
        return Err((
            whole,
            ErrorKind::Invalid {
                keyword: cx.keyword.to_string(),
                constraint: "must go from low to high".into(),
                found,
            },
        ));
    }
    // Both ends are within 1..=65535 and in order here.
    PortRange::new(lo as u16, hi as u16).map_err(|e| {
        (
            whole,
            ErrorKind::Invalid {
                keyword: cx.keyword.to_string(),
                constraint: e.to_string(),
                found: cx.sources.snippet(whole),
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Sink;
    use crate::syntax::{Item, parse_file};

    fn read_one(kind: Kind, line: &str, current: Option<&Value>) -> Result<Value, String> {
        let mut sources = SourceMap::new();
        let id = sources.add("t", format!("kw {line}\n").into_bytes());
        let mut sink = Sink::default();
        let f = parse_file(&sources, id, &mut sink);
        assert!(sink.errors.is_empty());
        let Item::Statement(s) = &f.items[0] else {
            panic!()
        };
        let cx = Cx {
            sources: &sources,
            keyword: "kw",
            visible: false,
        };
        let mut args = Args::new(&s.args, s.head.span);
        let v = read(kind, &mut args, &cx, current)
            .map_err(|(sp, e)| format!("{}:{}: {e}", sp.line, sp.column))?;
        if !args.at_end() {
            return Err("leftover".into());
        }
        Ok(v)
    }

    #[test]
    fn units_follow_amanda_multipliers() {
        let k = Kind::Int64(Unit::K);
        let n = Kind::Int(Unit::None);
        assert_eq!(read_one(k, "-100 Mb", None), Ok(Value::Int(-102400)));
        assert_eq!(read_one(k, "1Gb", None), Ok(Value::Int(1048576)));
        assert_eq!(read_one(k, "681984000 bytes", None), Ok(Value::Int(666000)));
        assert_eq!(read_one(n, "4 weeks", None), Ok(Value::Int(28)));
        assert_eq!(read_one(n, "25 tapes", None), Ok(Value::Int(25)));
        assert_eq!(
            read_one(Kind::Int(Unit::K), "8000 Kbps", None),
            Ok(Value::Int(8000))
        );
        assert_eq!(
            read_one(Kind::Size(Unit::None), "1280k", None),
            Ok(Value::Int(1310720))
        );
        assert_eq!(
            read_one(n, "3000000 g", None),
            Err("1:4: value too large for kw: 3000000 g".into())
        );
        assert_eq!(
            read_one(n, "inf", None),
            Ok(Value::Int(i64::from(i32::MAX)))
        );
    }

    #[test]
    fn booleans_accept_all_amanda_spellings_and_bare_means_yes() {
        for (s, v) in [
            ("", true),
            ("yes", true),
            ("Y", true),
            ("t", true),
            ("ON", true),
            ("1", true),
            ("no", false),
            ("f", false),
            ("OFF", false),
            ("0", false),
        ] {
            assert_eq!(read_one(Kind::Bool, s, None), Ok(Value::Bool(v)), "{s}");
        }
        assert!(read_one(Kind::Bool, "maybe", None).is_err());
    }

    #[test]
    fn compress_words_combine_like_amanda() {
        assert_eq!(
            read_one(Kind::Compress, "none", None),
            Ok(Value::Compress(Compress::None))
        );
        assert_eq!(
            read_one(Kind::Compress, "client best", None),
            Ok(Value::Compress(Compress::ClientBest))
        );
        assert_eq!(
            read_one(Kind::Compress, "server", None),
            Ok(Value::Compress(Compress::ServerFast))
        );
        assert!(read_one(Kind::Compress, "client server", None).is_err());
    }

    #[test]
    fn exclude_list_and_append_edit_the_right_sublist() {
        let v = read_one(Kind::ExInclude, r#"list "a" "b""#, None).unwrap();
        let v2 = read_one(Kind::ExInclude, r#"append "p""#, Some(&v)).unwrap();
        let v3 = read_one(Kind::ExInclude, r#"list optional append "c""#, Some(&v2)).unwrap();
        let Value::ExInclude(e) = v3 else { panic!() };
        assert_eq!(e.lists, [&b"a"[..], b"b", b"c"]);
        assert_eq!(e.files, [&b"p"[..]]);
        assert!(e.optional);
    }

    #[test]
    fn properties_fold_names_append_and_remove() {
        let v = read_one(Kind::Property, r#""GNUTAR_PATH" "/bin/tar""#, None).unwrap();
        let v = read_one(Kind::Property, r#"append "gnutar-path" "x""#, Some(&v)).unwrap();
        let Value::Properties(p) = &v else { panic!() };
        assert_eq!(p.get("Gnutar_Path").unwrap().values, ["/bin/tar", "x"]);
        let v = read_one(Kind::Property, r#""gnutar-path""#, Some(&v)).unwrap();
        assert_eq!(v, Value::Properties(Properties::default()));
    }

    #[test]
    fn port_ranges_name_what_is_wrong() {
        let r = Kind::PortRange(PortClass::Reserved);
        assert_eq!(
            read_one(r, "840,860", None),
            Ok(Value::PortRange(PortRange::new(840, 860).unwrap()))
        );
        assert_eq!(
            read_one(r, "840 860", None),
            Ok(Value::PortRange(PortRange::new(840, 860).unwrap()))
        );
        assert_eq!(
            read_one(r, "850-859", None),
            Err("1:4: expected a port range \"lo,hi\", found \"850-859\"".into())
        );
        assert_eq!(
            read_one(r, "840,2000", None),
            Err("1:4: kw must be within 1..1023, found 840,2000".into())
        );
        assert_eq!(
            read_one(r, "900,800", None),
            Err("1:4: kw must go from low to high, found 900,800".into())
        );
    }

    #[test]
    fn estimate_lists_and_strings() {
        assert_eq!(
            read_one(Kind::EstimateList, "client calcsize server", None),
            Ok(Value::Estimates(vec![
                Estimate::Client,
                Estimate::Calcsize,
                Estimate::Server
            ]))
        );
        assert_eq!(
            read_one(Kind::Str, "bsdtcp", None),
            Err("1:4: expected a quoted string like \"bsdtcp\", found \"bsdtcp\"".into())
        );
        assert_eq!(
            read_one(Kind::IntOrStr, "10080", None),
            Ok(Value::Str("10080".into()))
        );
    }
}
