//! An independent model of how GNU tar 1.34 reads its command line, for the fuzz oracle of
//! `amandad-runtar`: old-style option clusters in the first argument, getopt_long's
//! abbreviations and separate values, short-option clusters, `--`, options among operands
//! (argp's `ARGP_IN_ORDER`). [`verdict`] says whether tar, reading an argv this way, would
//! do only what the helper promises (no command, no file of the caller's choosing).
//!
//! What this module must not do: use the helper's own tables or checks
//! (`crate::tar::runtar`); it is the second opinion.

/// tar 1.34's long options, as `tar --help` lists them: `name` takes no argument, `name=`
/// needs one, `name[=]` takes an optional one; `name:canonical` is another name of an option.
const LONG: &str = "
absolute-names acls add-file= after-date=:newer anchored append atime-preserve[=]
auto-compress backup[=] block-number blocking-factor= bzip2 catenate check-device
check-links checkpoint[=] checkpoint-action= clamp-mtime compare:diff compress
concatenate:catenate confirmation:interactive create delay-directory-restore delete
dereference diff directory= exclude= exclude-backups exclude-caches exclude-caches-all
exclude-caches-under exclude-from= exclude-ignore= exclude-ignore-recursive= exclude-tag=
exclude-tag-all= exclude-tag-under= exclude-vcs exclude-vcs-ignores extract file=
files-from= force-local format= full-time get:extract group= group-map= gunzip:gzip gzip
hard-dereference help hole-detection= ignore-case ignore-command-error ignore-failed-read
ignore-zeros incremental index-file= info-script= interactive keep-directory-symlink
keep-newer-files keep-old-files label= level= list listed-incremental= lzip lzma lzop mode=
mtime= multi-volume new-volume-script=:info-script newer= newer-mtime= no-acls no-anchored
no-auto-compress no-check-device no-delay-directory-restore no-ignore-case
no-ignore-command-error no-null no-overwrite-dir no-quote-chars= no-recursion no-same-owner
no-same-permissions no-seek no-selinux no-unquote no-verbatim-files-from no-wildcards
no-wildcards-match-slash no-xattrs null numeric-owner occurrence[=] old-archive
one-file-system one-top-level[=] overwrite overwrite-dir owner= owner-map= pax-option=
portability:old-archive posix preserve-order preserve-permissions quote-chars=
quoting-style= read-full-records record-size= recursion recursive-unlink remove-files
restrict rmt-command= rsh-command= same-order:preserve-order same-owner
same-permissions:preserve-permissions seek selinux show-defaults show-omitted-dirs
show-snapshot-field-ranges show-stored-names:show-transformed-names show-transformed-names
skip-old-files sort= sparse sparse-version= starting-file= strip-components= suffix=
tape-length= test-label to-command= to-stdout totals[=] touch transform= uncompress:compress
ungzip:gzip unlink-first unquote update usage use-compress-program= utc verbatim-files-from
verbose verify version volno-file= warning= wildcards wildcards-match-slash xattrs
xattrs-exclude= xattrs-include= xform=:transform xz zstd";

/// tar 1.34's short options: the letter, `=` when it needs an argument, `:` its long name.
const SHORT: &str = "
?:help A:catenate B:read-full-records C=:directory F=:info-script G:incremental H=:format
I=:use-compress-program J:xz K=:starting-file L=:tape-length M:multi-volume N=:newer
O:to-stdout P:absolute-names R:block-number S:sparse T=:files-from U:unlink-first V=:label
W:verify X=:exclude-from Z:compress a:auto-compress b=:blocking-factor c:create d:diff
f=:file g=:listed-incremental h:dereference i:ignore-zeros j:bzip2 k:keep-old-files
l:check-links m:touch n:seek o p:preserve-permissions r:append s:preserve-order t:list
u:update v:verbose w:interactive x:extract z:gzip";

/// Whether an option takes an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    No,
    Required,
    Optional,
}

/// One table entry: its name, what it takes, and the option it is (aliases share it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarOption {
    pub name: &'static str,
    pub takes: Takes,
    pub canonical: &'static str,
}

fn entry(word: &'static str) -> TarOption {
    let (spec, canonical) = word.split_once(':').unwrap_or((word, ""));
    let (name, takes) = if let Some(n) = spec.strip_suffix("[=]") {
        (n, Takes::Optional)
    } else if let Some(n) = spec.strip_suffix('=') {
        (n, Takes::Required)
    } else {
        (spec, Takes::No)
    };
    TarOption {
        name,
        takes,
        canonical: if canonical.is_empty() {
            name
        } else {
            canonical
        },
    }
}

/// The long options.
pub fn long_options() -> impl Iterator<Item = TarOption> {
    LONG.split_whitespace().map(entry)
}

fn short_option(letter: u8) -> Option<TarOption> {
    SHORT
        .split_whitespace()
        .map(entry)
        .find(|o| o.name.as_bytes() == [letter])
}

/// What tar makes of one argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An option (its canonical long name; `o` for the short-only `-o`) and its value.
    Opt(&'static str, Option<Vec<u8>>),
    /// A name to archive.
    Operand(Vec<u8>),
}

/// getopt_long's lookup: an exact name, else the one option all prefix matches are.
fn resolve_long(name: &[u8]) -> Result<TarOption, String> {
    if let Some(o) = long_options().find(|o| o.name.as_bytes() == name) {
        return Ok(o);
    }
    let found: Vec<TarOption> = long_options()
        .filter(|o| o.name.as_bytes().starts_with(name))
        .collect();
    match found.split_first() {
        None => Err(format!(
            "unrecognized option --{}",
            String::from_utf8_lossy(name)
        )),
        Some((first, rest)) => {
            if rest
                .iter()
                .all(|o| o.canonical == first.canonical && o.takes == first.takes)
            {
                Ok(*first)
            } else {
                Err(format!(
                    "option --{} is ambiguous",
                    String::from_utf8_lossy(name)
                ))
            }
        }
    }
}

/// Parses tar's arguments (after the program name) the way tar 1.34 does; `Err` when tar
/// would stop with a usage error before doing anything.
pub fn parse(args: &[&[u8]]) -> Result<Vec<Event>, String> {
    // Old-style: a first argument without a dash is a cluster of letters, whose arguments
    // are the next words, in order.
    let mut words: Vec<Vec<u8>> = Vec::new();
    let mut rest = args.iter();
    if let Some(first) = args.first().filter(|a| a.first() != Some(&b'-')) {
        rest.next();
        for &letter in first.iter() {
            words.push(vec![b'-', letter]);
            let o = short_option(letter)
                .ok_or_else(|| format!("invalid option -- '{}'", char::from(letter)))?;
            if o.takes == Takes::Required {
                let v = rest.next().ok_or("old option requires an argument")?;
                words.push(v.to_vec());
            }
        }
    }
    words.extend(rest.map(|a| a.to_vec()));
    let mut events = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        if w == b"--" {
            events.extend(it.by_ref().map(Event::Operand));
            break;
        }
        if let Some(long) = w.strip_prefix(b"--") {
            let (name, inline) = match long.iter().position(|b| *b == b'=') {
                Some(eq) => (&long[..eq], Some(long[eq + 1..].to_vec())),
                None => (long, None),
            };
            let o = resolve_long(name)?;
            let value = match (o.takes, inline) {
                (Takes::No, Some(_)) => return Err(format!("--{} takes no argument", o.name)),
                (Takes::No, None) => None,
                (Takes::Optional, v) => v,
                (Takes::Required, Some(v)) => Some(v),
                (Takes::Required, None) => Some(
                    it.next()
                        .ok_or(format!("--{} requires an argument", o.name))?,
                ),
            };
            events.push(Event::Opt(o.canonical, value));
        } else if w.len() > 1 && w[0] == b'-' {
            let mut i = 1;
            while i < w.len() {
                let o = short_option(w[i])
                    .ok_or_else(|| format!("invalid option -- '{}'", char::from(w[i])))?;
                i += 1;
                if o.takes == Takes::No {
                    events.push(Event::Opt(o.canonical, None));
                    continue;
                }
                let v = if i < w.len() {
                    w[i..].to_vec()
                } else {
                    it.next().ok_or("option requires an argument")?
                };
                events.push(Event::Opt(o.canonical, Some(v)));
                break;
            }
        } else {
            events.push(Event::Operand(w));
        }
    }
    Ok(events)
}

/// Options that neither run a program nor write, create or open (beyond reading the tree) a
/// file of the caller's choosing, given the value rules of [`verdict`].
const HARMLESS: &[&str] = &[
    "create",
    "file",
    "directory",
    "one-file-system",
    "listed-incremental",
    "incremental",
    "newer",
    "newer-mtime",
    "atime-preserve",
    "sparse",
    "ignore-failed-read",
    "totals",
    "numeric-owner",
    "verbose",
    "block-number",
    "blocking-factor",
    "no-unquote",
    "no-check-device",
    "acls",
    "selinux",
    "xattrs",
    "exclude-from",
    "verbatim-files-from",
    "null",
    "files-from",
    "exclude",
    "exclude-caches",
    "exclude-caches-all",
    "exclude-caches-under",
    "exclude-vcs",
    "exclude-backups",
    "transform",
    "dereference",
    "no-recursion",
];

/// Whether each `;`-separated `s<d>regex<d>replacement<d>flags` expression has only the
/// flags tar 1.34 knows (`e`, GNU sed's "execute", is not one of them).
fn transform_is_plain(v: &[u8]) -> bool {
    let mut expr = v;
    loop {
        if expr.len() < 2 || expr[0] != b's' {
            return false;
        }
        let delim = expr[1];
        let mut seen = 0;
        let mut escaped = false;
        let mut end = None;
        for (k, &c) in expr.iter().enumerate().skip(2) {
            if escaped {
                escaped = false;
            } else if c == b'\\' && k + 1 < expr.len() {
                escaped = true;
            } else if c == delim {
                seen += 1;
                if seen == 2 {
                    end = Some(k + 1);
                    break;
                }
            }
        }
        let Some(flags_at) = end else {
            return false;
        };
        let tail = &expr[flags_at..];
        let stop = tail.iter().position(|c| *c == b';').unwrap_or(tail.len());
        if !tail[..stop]
            .iter()
            .all(|c| c.is_ascii_digit() || b"gixrRhHsS".contains(c))
        {
            return false;
        }
        if stop + 1 >= tail.len() {
            return true;
        }
        expr = &tail[stop + 1..];
    }
}

/// `Ok` when tar, reading `args` (after the program name), would only archive: create mode
/// first, only `HARMLESS` options, the archive `-` or `/dev/null` (once), absolute
/// directories and list files, dates that are not file names, plain transforms, every
/// `--files-from` read verbatim. `Err` names what breaks it.
pub fn verdict(args: &[&[u8]]) -> Result<(), String> {
    let events = parse(args)?;
    if !matches!(events.first(), Some(Event::Opt("create", None))) {
        return Err(format!(
            "tar's first word is {:?}, not create",
            events.first()
        ));
    }
    let mut archives = 0;
    let mut verbatim = false;
    for event in &events {
        let Event::Opt(name, value) = event else {
            continue;
        };
        if !HARMLESS.contains(name) {
            return Err(format!("tar would obey --{name}"));
        }
        let v = value.as_deref().unwrap_or_default();
        let ok = match *name {
            "file" => {
                archives += 1;
                v == b"-" || v == b"/dev/null"
            }
            "directory" | "listed-incremental" | "exclude-from" => v.first() == Some(&b'/'),
            "files-from" => verbatim && v.first() == Some(&b'/'),
            "newer" | "newer-mtime" => !v.is_empty() && v[0] != b'/' && v[0] != b'.',
            "transform" => transform_is_plain(v),
            "verbatim-files-from" => {
                verbatim = true;
                true
            }
            _ => true,
        };
        if !ok {
            return Err(format!(
                "tar would read --{name}={:?}",
                String::from_utf8_lossy(v)
            ));
        }
    }
    if archives != 1 {
        return Err(format!("{archives} archives"));
    }
    Ok(())
}
