//! The rules of `amandad-runtar`, the small setuid-root helper that lets GNU tar read every
//! file while the network-facing daemon runs as the Amanda user (like Amanda's runtar).
//!
//! Command line: `amandad-runtar <tar-path> <tar arguments>...`. The helper runs tar as root
//! only if every check below passes, otherwise it prints one line
//! `amandad-runtar: error [<reason>]` on stderr and exits with [`EXIT_REFUSED`]. The checks
//! hold against GNU tar's own parsing (tar 1.34: argp with `ARGP_IN_ORDER`, getopt_long's
//! abbreviations, old-style option clusters), not only against names:
//!
//! 1. the caller's **real** uid is root or the Amanda user ([`AMANDA_USER`]), and the
//!    environment has no `TAR_OPTIONS` (tar would read options from it; the helper runs tar
//!    with an empty environment anyway);
//! 2. `<tar-path>` is allowed by /etc/amanda-security.conf (`amandad-runtar:gnutar_path=`
//!    lines; when there is none, only [`DEFAULT_GNUTAR`]), compared after resolving
//!    symlinks, and the binary and every directory above it belong to root and are not
//!    group/world writable;
//! 3. the first tar argument is exactly `--create` (tar reads a first argument without a
//!    dash as a cluster of short options: `I <cmd>` would be `--use-compress-program`);
//! 4. every option is one of [`ALLOWED`], spelled in full (tar would expand abbreviations
//!    such as `--to-com`), with its value attached as `--name=value` (never as the next
//!    argument, never a short option or a cluster), and the value checked as tar will read
//!    it (see `check_value`); exactly one `--file`, which is `-` or `/dev/null`; no option
//!    after the first operand (tar would still take it as an option);
//! 5. operands come last (after the options, or after `--`): relative names that do not
//!    start with `-`;
//! 6. every `--files-from` is preceded by `--verbatim-files-from`, so that lines of the
//!    list are names, never options (tar obeys `--directory`, `--exclude-vcs-ignores` ...
//!    lines otherwise); nothing that turns it off (`--no-verbatim-files-from`, `--no-null`)
//!    is allowed. `--exclude-from` lists are patterns only (tar never parses options there);
//! 7. the files the caller names (`--listed-incremental`, `--files-from`, `--exclude-from`)
//!    are resolved, checked and opened **with the caller's identity** (fsuid/fsgid of the
//!    real ids, see [`as_caller`]), never as root: first with `O_PATH | O_NOFOLLOW`, which
//!    opens no device or FIFO, then, if `fstat` says it is a regular file owned by the
//!    caller with one link, reopened through `/proc/self/fd`. `--listed-incremental` must
//!    also name an existing file directly inside an allowed list directory
//!    (`amandad-runtar:gnutar_list_dir=` lines, else [`DEFAULT_LIST_DIR`]).
//!
//! The checked files reach tar as `/dev/fd/N`, so nobody can swap them between the check and
//! tar's open. tar is then executed (not forked) as root (real and effective uid/gid 0, no
//! supplementary groups) with an empty environment.
//!
//! This module holds the pure validation ([`parse_args`]) and the file-system checks
//! ([`prepare`]); the binary is `src/bin/amandad-runtar.rs`.
//!
//! What this module must not do: accept anything it cannot prove harmless; touch a file
//! the caller named with root's identity; when in doubt, refuse.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where packages install the helper (mode 4750, owner root, group of the Amanda user).
pub const INSTALLED_PATH: &str = "/usr/lib/amanda-rs/amandad-runtar";

/// The Amanda user (Amanda's `CLIENT_LOGIN`; Debian: `backup`); override at build time
/// with `AMANDA_RS_USER`.
pub const AMANDA_USER: &str = match option_env!("AMANDA_RS_USER") {
    Some(u) => u,
    None => "backup",
};

/// The tar the helper runs when amanda-security.conf has no `amandad-runtar:gnutar_path=`.
pub const DEFAULT_GNUTAR: &str = "/usr/bin/tar";

/// The list directory allowed when amanda-security.conf has no
/// `amandad-runtar:gnutar_list_dir=` line (the client's default `gnutar_list_dir`).
pub const DEFAULT_LIST_DIR: &str = conf::defaults::GNUTAR_LIST_DIR;

/// The amanda-security.conf key for tar paths.
pub const KEY_GNUTAR_PATH: &str = "amandad-runtar:gnutar_path";

/// The amanda-security.conf key for list directories.
pub const KEY_LIST_DIR: &str = "amandad-runtar:gnutar_list_dir";

/// Exit status when the helper refuses (tar's own "fatal error" status, so callers treat it
/// as a failed tar).
pub const EXIT_REFUSED: i32 = 2;

/// The environment variable through which tar reads extra options.
pub const TAR_OPTIONS: &str = "TAR_OPTIONS";

/// What a long option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    Nothing,
    /// A value, only as `--opt=v`.
    Value(Check),
    /// An optional value, only as `--opt=v`.
    OptionalValue(Check),
}

/// How a value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// `-` or `/dev/null`.
    ArchiveFile,
    /// An absolute directory.
    Directory,
    /// A snapshot file inside an allowed list directory.
    ListedIncremental,
    /// A list file of the caller's.
    CallerFile,
    /// A date, not a file name (`--newer`: values starting with `/` or `.` name files).
    Date,
    /// A blocking factor, 1..=4096.
    BlockingFactor,
    /// `--atime-preserve=replace|system`.
    AtimeMethod,
    /// `s/regex/replacement/flags` expressions with tar's own flags only.
    Transform,
    /// A shell pattern tar only matches names with.
    Pattern,
}

/// Every option the helper passes to tar: what amandad generates (the legacy GNUTAR program,
/// amgtar, estimates, selfcheck's probe), plus what amgtar's COMMAND-OPTIONS validation lets
/// through that can neither run a program, nor write or open a file of the caller's choosing
/// as root. Not here although Amanda's runtar lets them through: `--exclude-tag*` (tar opens
/// the tag name as root in every directory it walks, and a name with a `/` anywhere: a
/// rewinding tape device would be opened), `--exclude-vcs-ignores` and `--exclude-ignore*`
/// (read pattern files as root).
pub const ALLOWED: &[&str] = &[
    "--create",
    "--file",
    "--directory",
    "--one-file-system",
    "--listed-incremental",
    "--incremental",
    "--newer",
    "--newer-mtime",
    "--atime-preserve",
    "--sparse",
    "--ignore-failed-read",
    "--totals",
    "--numeric-owner",
    "--verbose",
    "--block-number",
    "--blocking-factor",
    "--no-unquote",
    "--no-check-device",
    "--acls",
    "--selinux",
    "--xattrs",
    "--exclude-from",
    "--verbatim-files-from",
    "--null",
    "--files-from",
    "--exclude",
    "--exclude-caches",
    "--exclude-caches-all",
    "--exclude-caches-under",
    "--exclude-vcs",
    "--exclude-backups",
    "--transform",
    "--dereference",
    "--no-recursion",
];

fn takes(name: &str) -> Option<Takes> {
    use Check::*;
    Some(match name {
        "--file" => Takes::Value(ArchiveFile),
        "--directory" => Takes::Value(Directory),
        "--listed-incremental" => Takes::Value(ListedIncremental),
        "--exclude-from" | "--files-from" => Takes::Value(CallerFile),
        "--newer" | "--newer-mtime" => Takes::Value(Date),
        "--blocking-factor" => Takes::Value(BlockingFactor),
        "--atime-preserve" => Takes::OptionalValue(AtimeMethod),
        "--transform" => Takes::Value(Transform),
        "--exclude" => Takes::Value(Pattern),
        n if ALLOWED.contains(&n) => Takes::Nothing,
        _ => return None,
    })
}

/// Why the helper refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No tar path argument.
    #[error("usage: amandad-runtar <tar-path> --create <tar options>... <names>...")]
    Usage,
    /// The real uid is neither root nor the Amanda user.
    #[error("must be run by root or {user}, not uid {uid}")]
    Caller { uid: u32, user: String },
    /// `TAR_OPTIONS` in the environment.
    #[error("environment variable {0} refused (tar would read options from it)")]
    Environment(String),
    /// The first tar argument is not `--create`.
    #[error(
        "the first tar argument must be --create, not {0:?} (tar reads a first argument without a dash as short options)"
    )]
    FirstNotCreate(String),
    /// A short option or an option cluster.
    #[error("short option {0:?} refused (use long options)")]
    ShortOption(String),
    /// An option not on the allow-list (also every abbreviation).
    #[error("option {0:?} refused")]
    Option(String),
    /// An option that needs a value was not written `--name=value`.
    #[error("option {0} must be written {0}=VALUE")]
    SeparateValue(String),
    /// An option that takes no value got `=value`.
    #[error("option {0} takes no value")]
    UnexpectedValue(String),
    /// A value that fails its check.
    #[error("{option}={value:?} refused: {why}")]
    Value {
        option: String,
        value: String,
        why: String,
    },
    /// A second `--create`.
    #[error("only one --create is allowed")]
    NotCreate,
    /// Not exactly one `--file`.
    #[error("exactly one --file=- or --file=/dev/null is required")]
    Archive,
    /// An operand that is not a plain relative name.
    #[error("operand {operand:?} refused: {why}")]
    Operand { operand: String, why: String },
    /// Something starting with `-` after the first operand.
    #[error("{0:?} after an operand refused (tar would still read it as an option)")]
    AfterOperand(String),
    /// `--files-from` without `--verbatim-files-from` before it.
    #[error(
        "--files-from needs --verbatim-files-from before it (tar obeys option lines in the list otherwise)"
    )]
    NotVerbatim,
    /// The tar binary is not allowed or not safe.
    #[error("{0}")]
    Tar(String),
    /// amanda-security.conf could not be used, or the helper cannot do its job.
    #[error("{0}")]
    SecurityFile(String),
}

fn lossy(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

/// A validated argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// An option and its value (`Some` for options that take one).
    Opt {
        name: &'static str,
        value: Option<OsString>,
    },
    /// `--`.
    EndOfOptions,
    /// A name to archive.
    Operand(OsString),
}

/// The checked command line, before the file-system checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarRequest {
    /// The tar binary asked for.
    pub tar: PathBuf,
    /// The arguments, in order (the first is always `--create`).
    pub args: Vec<Arg>,
}

/// tar's transform flags (`g`, `i`, `x`, an occurrence number, and the `r R h H s S`
/// scopes); anything else (GNU sed's `e`, `w`, ...) is refused.
const TRANSFORM_FLAGS: &[u8] = b"gixrRhHsS0123456789";

/// Scans `s/regex/replacement/flags[;s...]` the way tar's transform parser does (any
/// delimiter, `\` protects the next byte, expressions separated by `;` after the flags).
fn check_transform(v: &[u8]) -> Result<(), String> {
    const FORM: &str = "must be s/REGEX/REPLACEMENT/FLAGS[;...]";
    let mut rest = v;
    loop {
        let (Some(b's'), Some(&delim)) = (rest.first(), rest.get(1)) else {
            return Err(FORM.to_owned());
        };
        // the regex, then the replacement: each ends at an unescaped delimiter
        let mut i = 2;
        for _ in 0..2 {
            while i < rest.len() && rest[i] != delim {
                if rest[i] == b'\\' && i + 1 < rest.len() {
                    i += 1;
                }
                i += 1;
            }
            if i >= rest.len() {
                return Err(FORM.to_owned());
            }
            i += 1;
        }
        let flags_end = memchr::memchr(b';', &rest[i..]).map_or(rest.len(), |n| i + n);
        if let Some(bad) = rest[i..flags_end]
            .iter()
            .find(|f| !TRANSFORM_FLAGS.contains(f))
        {
            return Err(format!("unknown transform flag {:?}", char::from(*bad)));
        }
        match rest.get(flags_end + 1..) {
            None | Some([]) => return Ok(()),
            Some(next) => rest = next,
        }
    }
}

/// Checks one option value as tar will read it.
fn check_value(option: &str, check: Check, value: &OsStr) -> Result<(), Refusal> {
    let bytes = value.as_bytes();
    let refuse = |why: &str| Refusal::Value {
        option: option.to_owned(),
        value: lossy(value),
        why: why.to_owned(),
    };
    match check {
        Check::ArchiveFile => {
            // Anything else is a file tar creates as root, a device it opens, or
            // `host:file`, which tar reaches with --rsh-command.
            if bytes != b"-" && bytes != b"/dev/null" {
                return Err(refuse("the archive must be - or /dev/null"));
            }
        }
        Check::Directory => {
            if bytes.first() != Some(&b'/') {
                return Err(refuse("must be an absolute path"));
            }
        }
        Check::ListedIncremental | Check::CallerFile => {
            let p = Path::new(value);
            if !p.is_absolute() {
                return Err(refuse("must be an absolute path"));
            }
            if bytes
                .split(|b| *b == b'/')
                .any(|seg| seg == b"." || seg == b"..")
            {
                return Err(refuse("must not contain . or .. components"));
            }
            if p.file_name().is_none() || bytes.ends_with(b"/") {
                return Err(refuse("must name a file"));
            }
        }
        Check::Date => {
            // tar stats (as root) a value starting with `/` or `.`: an existence oracle.
            if matches!(bytes.first(), Some(b'/' | b'.')) || bytes.is_empty() {
                return Err(refuse("must be a date, not a file name"));
            }
        }
        Check::BlockingFactor => {
            let ok = !bytes.is_empty()
                && bytes.len() <= 4
                && bytes.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                    .is_some_and(|n| (1..=4096).contains(&n));
            if !ok {
                return Err(refuse("must be a number from 1 to 4096"));
            }
        }
        Check::AtimeMethod => {
            if bytes != b"replace" && bytes != b"system" {
                return Err(refuse("must be replace or system"));
            }
        }
        Check::Transform => check_transform(bytes).map_err(|why| refuse(&why))?,
        Check::Pattern => {}
    }
    Ok(())
}

/// An operand: a name relative to `--directory` that tar cannot take for an option.
fn check_operand(arg: &OsStr) -> Result<(), Refusal> {
    let bytes = arg.as_bytes();
    let why = match bytes.first() {
        None => "empty",
        Some(b'-') => "starts with -",
        Some(b'/') => "must be relative to --directory",
        Some(_) => return Ok(()),
    };
    Err(Refusal::Operand {
        operand: lossy(arg),
        why: why.to_owned(),
    })
}

/// Checks the command line after the program name: `<tar-path> --create <options>...
/// [--] <names>...`. Pure: touches no file.
pub fn parse_args(argv: &[OsString]) -> Result<TarRequest, Refusal> {
    let (tar, rest) = argv.split_first().ok_or(Refusal::Usage)?;
    if !Path::new(tar).is_absolute() {
        return Err(Refusal::Tar(format!(
            "tar path {:?} must be absolute",
            lossy(tar)
        )));
    }
    let (first, rest) = rest.split_first().ok_or(Refusal::Usage)?;
    if first.as_bytes() != b"--create" {
        return Err(Refusal::FirstNotCreate(lossy(first)));
    }
    let mut args = vec![Arg::Opt {
        name: "--create",
        value: None,
    }];
    let mut archives = 0;
    let mut verbatim = false;
    let mut options_done = false;
    let mut operands_seen = false;
    for arg in rest {
        let bytes = arg.as_bytes();
        if options_done || operands_seen {
            if bytes.first() == Some(&b'-') && !options_done {
                return Err(Refusal::AfterOperand(lossy(arg)));
            }
            check_operand(arg)?;
            args.push(Arg::Operand(arg.clone()));
            continue;
        }
        if bytes == b"--" {
            options_done = true;
            args.push(Arg::EndOfOptions);
            continue;
        }
        if let Some(long) = bytes.strip_prefix(b"--") {
            let (name_bytes, inline) = match memchr::memchr(b'=', long) {
                Some(eq) => (&bytes[..eq + 2], Some(OsStr::from_bytes(&long[eq + 1..]))),
                None => (bytes, None),
            };
            let Some(&name) = ALLOWED.iter().find(|n| n.as_bytes() == name_bytes) else {
                return Err(Refusal::Option(
                    String::from_utf8_lossy(name_bytes).into_owned(),
                ));
            };
            let value = match takes(name).ok_or_else(|| Refusal::Option(name.to_owned()))? {
                Takes::Nothing => {
                    if inline.is_some() {
                        return Err(Refusal::UnexpectedValue(name.to_owned()));
                    }
                    None
                }
                Takes::Value(check) => {
                    let v = inline.ok_or_else(|| Refusal::SeparateValue(name.to_owned()))?;
                    check_value(name, check, v)?;
                    Some(v.to_owned())
                }
                Takes::OptionalValue(check) => {
                    if let Some(v) = inline {
                        check_value(name, check, v)?;
                    }
                    inline.map(OsStr::to_owned)
                }
            };
            match name {
                "--create" => return Err(Refusal::NotCreate),
                "--file" => archives += 1,
                "--verbatim-files-from" => verbatim = true,
                "--files-from" if !verbatim => return Err(Refusal::NotVerbatim),
                _ => {}
            }
            args.push(Arg::Opt { name, value });
            continue;
        }
        if bytes.first() == Some(&b'-') {
            return Err(Refusal::ShortOption(lossy(arg)));
        }
        check_operand(arg)?;
        operands_seen = true;
        args.push(Arg::Operand(arg.clone()));
    }
    if archives != 1 {
        return Err(Refusal::Archive);
    }
    Ok(TarRequest {
        tar: PathBuf::from(tar),
        args,
    })
}

/// Refuses an environment that carries `TAR_OPTIONS` (tar never sees the helper's
/// environment, but nothing legitimate sets it: amandad clears it).
pub fn check_environment<K: AsRef<OsStr>>(
    names: impl IntoIterator<Item = K>,
) -> Result<(), Refusal> {
    match names.into_iter().find(|k| k.as_ref() == TAR_OPTIONS) {
        Some(_) => Err(Refusal::Environment(TAR_OPTIONS.to_owned())),
        None => Ok(()),
    }
}

/// What the helper allows, from amanda-security.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Tar binaries (as written; resolved when compared).
    pub tars: Vec<PathBuf>,
    /// List directories (as written; resolved when compared).
    pub list_dirs: Vec<PathBuf>,
}

impl Policy {
    /// From a parsed amanda-security.conf: the `amandad-runtar:*` lines, or the defaults.
    pub fn from_security_conf(conf: &conf::SecurityConf) -> Policy {
        let values = |key: &str| -> Vec<PathBuf> {
            conf.program_paths
                .iter()
                .filter(|e| e.value.0 == key)
                .map(|e| PathBuf::from(&e.value.1))
                .collect()
        };
        let mut tars = values(KEY_GNUTAR_PATH);
        if tars.is_empty() {
            tars.push(PathBuf::from(DEFAULT_GNUTAR));
        }
        let mut list_dirs = values(KEY_LIST_DIR);
        if list_dirs.is_empty() {
            list_dirs.push(PathBuf::from(DEFAULT_LIST_DIR));
        }
        Policy { tars, list_dirs }
    }
}

/// The invocation to execute: tar's path, its argv (with `/dev/fd/N` for checked files) and
/// the descriptors that must stay open across `exec`.
#[derive(Debug)]
pub struct Prepared {
    /// The resolved tar binary.
    pub tar: PathBuf,
    /// argv[1..] for tar.
    pub args: Vec<OsString>,
    /// Files tar reads through `/dev/fd/N`; they must be inherited (not close-on-exec).
    pub keep_open: Vec<OwnedFd>,
}

/// Whether `path` and every directory above it belong to root and are not writable by
/// group or others (what Amanda's check_exec_for_suid demands of a program run as root).
pub fn check_root_owned_chain(path: &Path) -> Result<(), String> {
    let mut cur = Some(path);
    while let Some(p) = cur {
        let md = std::fs::symlink_metadata(p).map_err(|e| {
            format!(
                "can not stat {}: {}",
                p.display(),
                crate::services::util::strerror(&e)
            )
        })?;
        if md.uid() != 0 {
            return Err(format!("{} is not owned by root", p.display()));
        }
        if md.mode() & 0o002 != 0 {
            return Err(format!("{} is writable by everyone", p.display()));
        }
        if md.mode() & 0o020 != 0 {
            return Err(format!("{} is writable by the group", p.display()));
        }
        cur = p.parent();
    }
    Ok(())
}

fn resolve(p: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(p).ok()
}

/// Resolves `tar` and checks it is allowed and safe to run as root.
pub fn check_tar(tar: &Path, policy: &Policy) -> Result<PathBuf, Refusal> {
    let real =
        resolve(tar).ok_or_else(|| Refusal::Tar(format!("can not find tar {}", tar.display())))?;
    let allowed = policy
        .tars
        .iter()
        .filter_map(|t| resolve(t))
        .any(|t| t == real);
    if !allowed {
        return Err(Refusal::Tar(format!(
            "{} is not allowed by the security file (add \"{KEY_GNUTAR_PATH}={}\")",
            tar.display(),
            real.display()
        )));
    }
    check_root_owned_chain(&real).map_err(Refusal::Tar)?;
    Ok(real)
}

fn open_checked(
    option: &str,
    value: &OsStr,
    caller_uid: u32,
    write: bool,
) -> Result<File, Refusal> {
    let refuse = |why: String| Refusal::Value {
        option: option.to_owned(),
        value: lossy(value),
        why,
    };
    let io_refuse = |what: &str, e: std::io::Error| {
        refuse(format!("{what}: {}", crate::services::util::strerror(&e)))
    };
    // O_PATH pins the inode without opening it: no device is opened (a tape would rewind
    // on close), no FIFO blocks. O_NOFOLLOW: a symlink yields the link itself, refused below.
    let pinned = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(value)
        .map_err(|e| io_refuse("can not open it", e))?;
    let md = pinned
        .metadata()
        .map_err(|e| io_refuse("can not stat it", e))?;
    let kind = md.file_type();
    if kind.is_symlink() {
        return Err(refuse("is a symbolic link".to_owned()));
    }
    if !kind.is_file() {
        return Err(refuse(
            "not a regular file (a device, FIFO, socket or directory)".to_owned(),
        ));
    }
    if caller_uid != 0 && md.uid() != caller_uid {
        return Err(refuse(format!(
            "owned by uid {}, not by the caller",
            md.uid()
        )));
    }
    if md.nlink() != 1 {
        return Err(refuse("has more than one link".to_owned()));
    }
    // Reopening the pinned inode (with the caller's permissions) cannot reach another file.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", pinned.as_raw_fd()))
        .map_err(|e| io_refuse("can not open it", e))?;
    let again = file
        .metadata()
        .map_err(|e| io_refuse("can not stat it", e))?;
    if (again.dev(), again.ino()) != (md.dev(), md.ino()) {
        return Err(refuse("changed while it was opened".to_owned()));
    }
    Ok(file)
}

fn check_list_location(value: &OsStr, policy: &Policy) -> Result<(), Refusal> {
    let refuse = |why: &str| Refusal::Value {
        option: "--listed-incremental".to_owned(),
        value: lossy(value),
        why: why.to_owned(),
    };
    let p = Path::new(value);
    let parent = p
        .parent()
        .and_then(resolve)
        .ok_or_else(|| refuse("its directory does not exist"))?;
    let ok = policy
        .list_dirs
        .iter()
        .filter_map(|d| resolve(d))
        .any(|d| d == parent);
    if !ok {
        return Err(refuse("not directly inside an allowed gnutar_list_dir"));
    }
    Ok(())
}

/// The file-system half of the checks: resolves and checks tar, opens the snapshot and
/// list files, and rewrites their arguments to `/dev/fd/N`. The setuid helper calls it
/// inside [`as_caller`], so that every name is resolved with the caller's permissions.
pub fn prepare(req: TarRequest, policy: &Policy, caller_uid: u32) -> Result<Prepared, Refusal> {
    let tar = check_tar(&req.tar, policy)?;
    let mut args = Vec::new();
    let mut keep_open = Vec::new();
    for arg in req.args {
        match arg {
            Arg::Opt {
                name,
                value: Some(v),
            } if matches!(
                name,
                "--listed-incremental" | "--exclude-from" | "--files-from"
            ) =>
            {
                let listed = name == "--listed-incremental";
                if listed {
                    check_list_location(&v, policy)?;
                }
                let file = open_checked(name, &v, caller_uid, listed)?;
                let fd: OwnedFd = file.into();
                let mut a = OsString::from(name);
                a.push(format!("=/dev/fd/{}", fd.as_raw_fd()));
                args.push(a);
                keep_open.push(fd);
            }
            Arg::Opt {
                name,
                value: Some(v),
            } => {
                let mut a = OsString::from(name);
                a.push("=");
                a.push(v);
                args.push(a);
            }
            Arg::Opt { name, value: None } => args.push(OsString::from(name)),
            Arg::EndOfOptions => args.push(OsString::from("--")),
            Arg::Operand(o) => args.push(o),
        }
    }
    Ok(Prepared {
        tar,
        args,
        keep_open,
    })
}

/// Runs `f` with the caller's file-system identity (`setfsuid`/`setfsgid` to the real ids;
/// the supplementary groups are the caller's already), then restores the previous one.
/// Paths the caller names are thus resolved, checked and opened as the caller would, which
/// gives away nothing the caller could not learn alone. Only this thread changes identity
/// (the helper has no other).
pub fn as_caller<T>(uid: u32, gid: u32, f: impl FnOnce() -> T) -> Result<T, Refusal> {
    // SAFETY: setfsgid/setfsuid take plain ids and only change this thread's credentials;
    // each returns the previous id, and a second call reads back the current one.
    let (old_gid, now_gid, old_uid, now_uid) = unsafe {
        let old_gid = libc::setfsgid(gid);
        let now_gid = libc::setfsgid(gid);
        let old_uid = libc::setfsuid(uid);
        let now_uid = libc::setfsuid(uid);
        (old_gid, now_gid, old_uid, now_uid)
    };
    let restore = || {
        // SAFETY: as above, back to the ids read before.
        unsafe {
            libc::setfsuid(old_uid as libc::uid_t);
            libc::setfsgid(old_gid as libc::gid_t);
        }
    };
    if now_uid as u32 != uid || now_gid as u32 != gid {
        restore();
        return Err(Refusal::SecurityFile(format!(
            "can not take the caller's identity (uid {uid}, gid {gid})"
        )));
    }
    let out = f();
    restore();
    Ok(out)
}

/// The uid of the Amanda user, if it exists.
pub fn amanda_uid() -> Option<u32> {
    nix::unistd::User::from_name(AMANDA_USER)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

/// Check 1: the caller's real uid.
pub fn check_caller(real_uid: u32, amanda_uid: Option<u32>) -> Result<(), Refusal> {
    if real_uid == 0 || Some(real_uid) == amanda_uid {
        Ok(())
    } else {
        Err(Refusal::Caller {
            uid: real_uid,
            user: AMANDA_USER.to_owned(),
        })
    }
}

/// The line the helper prints before exiting with [`EXIT_REFUSED`].
pub fn refusal_line(r: &Refusal) -> Vec<u8> {
    let mut line = b"amandad-runtar: error [".to_vec();
    line.extend_from_slice(r.to_string().as_bytes());
    line.extend_from_slice(b"]\n");
    line
}

/// Builds the helper's command line for `tar` and `args` (what the services run).
pub fn helper_argv(tar: &Path, args: &[OsString]) -> Vec<OsString> {
    let mut v = Vec::with_capacity(args.len() + 1);
    v.push(tar.as_os_str().to_owned());
    v.extend(args.iter().cloned());
    v
}

/// `OsString` from bytes (test helper and callers building argv from wire data).
pub fn os(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::services::util::skip_unless_ci;

    fn argv(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn parse(list: &[&str]) -> Result<TarRequest, Refusal> {
        let mut v = vec!["/usr/bin/tar"];
        v.extend_from_slice(list);
        parse_args(&argv(&v))
    }

    /// A valid invocation with `extra` before the operand.
    fn with(extra: &[&str]) -> Result<TarRequest, Refusal> {
        let mut v = vec!["--create", "--file=-", "--directory=/home"];
        v.extend_from_slice(extra);
        v.push(".");
        parse(&v)
    }

    /// What amgtar's backup asks of the helper (tar's arguments, after the tar path).
    pub(crate) const GOOD: &[&str] = &[
        "--create",
        "--verbose",
        "--block-number",
        "--file=-",
        "--directory=/home",
        "--one-file-system",
        "--atime-preserve=system",
        "--listed-incremental=/var/lib/amanda/gnutar-lists/host_home_0.new",
        "--sparse",
        "--ignore-failed-read",
        "--totals",
        "--exclude-from=/tmp/amanda/x.exclude",
        "--verbatim-files-from",
        "--null",
        "--files-from=/tmp/amanda/x.include",
    ];

    #[test]
    fn amgtar_and_sendbackup_invocations_are_accepted() {
        let r = parse(GOOD).unwrap();
        assert_eq!(r.args.len(), GOOD.len());
        let mut dot = GOOD.to_vec();
        dot.truncate(GOOD.len() - 3);
        dot.push(".");
        let r = parse(&dot).unwrap();
        assert_eq!(r.args.last(), Some(&Arg::Operand(".".into())));
        parse(&[
            "--create",
            "--file=/dev/null",
            "--numeric-owner",
            "--directory=/x",
            "--incremental",
            "--newer=1970-01-01  0:00:00 GMT",
            "--totals",
            ".",
        ])
        .unwrap();
        parse(&[
            "--create",
            "--file=-",
            "--blocking-factor=64",
            "--no-unquote",
            "--no-check-device",
            "--acls",
            "--selinux",
            "--xattrs",
            "--exclude=*.o",
            "--exclude=-I",
            "--transform=s,^\\./,x/,gx;s/a/b/",
            "--",
            "weird name",
            "sub/dir",
        ])
        .unwrap();
        // selfcheck's probe
        parse(&[
            "--create",
            "--file=/dev/null",
            "--no-recursion",
            "--directory=/etc",
            ".",
        ])
        .unwrap();
    }

    // issue 10: `amandad-runtar /usr/bin/tar I 'id > OUT; cat >/dev/null' --create ...`
    // ran `id` as root: tar reads a first argument without a dash as a cluster of short
    // options, and `I` is --use-compress-program.
    #[test]
    fn an_operand_or_cluster_before_create_is_refused() {
        for first in [
            &[
                "I",
                "id > OUT; cat >/dev/null",
                "--create",
                "--file=/dev/null",
            ][..],
            &["cIf", "touch OUT", "-", "."],
            &["hostname", "--create", "--file=-"],
            &[".", "--create", "--file=-"],
            &["--file=-", "--create", "."],
            &["-c", "--file=-", "."],
            &["--cre", "--file=-", "."],
            &["--create=x", "--file=-", "."],
        ] {
            let e = parse(first).unwrap_err();
            assert!(matches!(e, Refusal::FirstNotCreate(_)), "{first:?}: {e:?}");
        }
        assert_eq!(parse(&[]), Err(Refusal::Usage));
        assert!(
            refusal_line(&parse(&["I", "id"]).unwrap_err())
                .starts_with(b"amandad-runtar: error [the first tar argument must be --create")
        );
    }

    #[test]
    fn every_program_running_or_file_opening_option_is_refused() {
        for bad in [
            "--to-command=sh",
            "--use-compress-program=sh",
            "--checkpoint-action=exec=sh",
            "--checkpoint=1",
            "--rsh-command=sh",
            "--rmt-command=sh",
            "--info-script=sh",
            "--new-volume-script=sh",
            "--index-file=/etc/passwd",
            "--volno-file=/etc/x",
            "--backup",
            "--extract",
            "--delete",
            "--append",
            "--update",
            "--remove-files",
            "--owner=root",
            "--lzma",
            "--gzip",
            "--compress",
            "--zstd",
            "--to-stdout",
            "--unlink-first",
            "--absolute-names",
            "--format=posix",
            "--multi-volume",
            "--tape-length=1",
            "--restrict",
            "--hard-dereference",
            "--exclude-vcs-ignores",
            "--exclude-ignore=.x",
            "--exclude-ignore-recursive=.x",
            "--exclude-tag=.nobackup",
            "--exclude-tag-all=../../dev/st0",
            "--exclude-tag-under=st0",
            "--no-verbatim-files-from",
            "--no-null",
            "--add-file=x",
            "--mtime=/etc/shadow",
            "--group-map=/etc/shadow",
            "--owner-map=/etc/shadow",
            "--xform=s/a/b/",
            "--after-date=1970-01-01",
            "--label=x",
            "--force-local",
        ] {
            let e = with(&[bad]).unwrap_err();
            assert!(matches!(e, Refusal::Option(_)), "{bad}: {e:?}");
        }
    }

    #[test]
    fn abbreviations_and_short_options_are_refused() {
        for abbrev in [
            "--to-com=sh",
            "--use=sh",
            "--checkpoint-a=exec=sh",
            "--fil=-",
        ] {
            assert!(
                matches!(with(&[abbrev]), Err(Refusal::Option(_))),
                "{abbrev}"
            );
        }
        for short in [
            "-I",
            "-Isomething",
            "-F",
            "-T",
            "-X",
            "-cf",
            "-z",
            "-",
            "-C/root",
        ] {
            assert!(
                matches!(with(&[short]), Err(Refusal::ShortOption(_))),
                "{short}"
            );
        }
    }

    #[test]
    fn values_must_be_attached_with_equals() {
        for (opt, val) in [
            ("--file", "-"),
            ("--directory", "/etc"),
            ("--exclude", "-Itouch x"),
            ("--listed-incremental", "/var/lib/amanda/gnutar-lists/x"),
            ("--files-from", "/tmp/x"),
            ("--newer", "1970-01-01"),
        ] {
            let e = parse(&["--create", "--file=-", opt, val, "."]).unwrap_err();
            assert_eq!(e, Refusal::SeparateValue(opt.to_owned()), "{opt}");
        }
        // An optional value is never the next argument: tar would read it as an option.
        assert!(matches!(
            with(&["--atime-preserve", "-Itouch x"]),
            Err(Refusal::ShortOption(_))
        ));
        assert!(matches!(
            with(&["--sparse=yes"]),
            Err(Refusal::UnexpectedValue(_))
        ));
    }

    #[test]
    fn operands_come_last_and_look_like_names() {
        // tar parses options in order among operands (ARGP_IN_ORDER): still options
        for (args, want) in [
            (
                &["--create", "--file=-", ".", "--to-command=sh"][..],
                "after",
            ),
            (&["--create", "--file=-", ".", "-Ish"], "after"),
            (&["--create", "--file=-", ".", "--"], "after"),
            (&["--create", "--file=-", "--", "-Ish"], "starts with -"),
            (
                &["--create", "--file=-", "--", "--to-command=sh"],
                "starts with -",
            ),
            (&["--create", "--file=-", "--", "-"], "starts with -"),
            (&["--create", "--file=-", "/etc/shadow"], "relative"),
            (&["--create", "--file=-", ""], "empty"),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        parse(&["--create", "--file=-", "--", "a", "b/c"]).unwrap();
    }

    #[test]
    fn files_from_needs_verbatim_before_it() {
        let list = "--files-from=/tmp/amanda/l";
        assert_eq!(with(&[list]), Err(Refusal::NotVerbatim));
        assert_eq!(
            with(&[list, "--verbatim-files-from"]),
            Err(Refusal::NotVerbatim)
        );
        // --null implies it in tar, but the rule is explicit
        assert_eq!(with(&["--null", list]), Err(Refusal::NotVerbatim));
        with(&["--verbatim-files-from", list, list]).unwrap();
        with(&["--verbatim-files-from", "--exclude=x", list]).unwrap();
        // --exclude-from lists are patterns: tar parses no options there
        with(&["--exclude-from=/tmp/amanda/x"]).unwrap();
    }

    #[test]
    fn archive_must_be_stdout_or_dev_null_exactly_once() {
        for bad in [
            "--file=/etc/passwd",
            "--file=/dev/tcp/1.2.3.4/1",
            "--file=host:/x",
            "--file=./x",
            "--file=",
            "--file=/dev/st0",
        ] {
            let e = parse(&["--create", bad, "."]).unwrap_err();
            assert!(matches!(e, Refusal::Value { .. }), "{bad}: {e:?}");
        }
        assert_eq!(parse(&["--create", "."]), Err(Refusal::Archive));
        assert_eq!(
            parse(&["--create", "--file=-", "--file=-", "."]),
            Err(Refusal::Archive)
        );
        assert!(parse(&["--create", "--file=-", "--file=/etc/shadow", "."]).is_err());
        assert_eq!(
            parse(&["--create", "--file=-", "--create", "."]),
            Err(Refusal::NotCreate)
        );
    }

    #[test]
    fn transforms_are_checked_like_tar_reads_them() {
        for good in [
            "s/a/b/",
            "s/a/b/g",
            "s,a,b,gixrRhHsS1",
            "s/a\\/b/c/",
            "s;a;b;",
            "s/a/b/;s/c/d/x",
            "s/a/b/;",
            "s//x/",
        ] {
            with(&[&format!("--transform={good}")]).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "s/a/b/e",
            "s/a/b/;s/c/d/e",
            "s/a/b/w/tmp/x",
            "flags=r;s/a/b/",
            "x/a/b/",
            "s/a",
            "s",
            "",
            ";s/a/b/",
            "s/a/b/\\e",
        ] {
            let e = with(&[&format!("--transform={bad}")]).unwrap_err();
            assert!(matches!(e, Refusal::Value { .. }), "{bad}: {e:?}");
        }
    }

    #[test]
    fn values_are_checked() {
        for bad in [
            "--directory=relative",
            "--directory=",
            "--newer=/etc/shadow",
            "--newer=./x",
            "--newer-mtime=/etc/shadow",
            "--newer=",
            "--blocking-factor=0",
            "--blocking-factor=99999",
            "--blocking-factor=x",
            "--atime-preserve=evil",
            "--listed-incremental=relative/x",
            "--listed-incremental=/var/lib/amanda/gnutar-lists/../../x",
            "--exclude-from=/a/./b",
            "--exclude-from=-",
            "--files-from=/",
            "--files-from=/tmp/",
        ] {
            assert!(
                with(&["--verbatim-files-from", bad]).is_err(),
                "{bad} accepted"
            );
        }
        with(&["--atime-preserve"]).unwrap();
        with(&["--atime-preserve=replace"]).unwrap();
        assert!(parse_args(&argv(&["tar", "--create", "--file=-"])).is_err());
        assert!(matches!(parse_args(&[]), Err(Refusal::Usage)));
    }

    #[test]
    fn tar_options_in_the_environment_is_refused() {
        assert!(check_environment(["PATH", "LC_ALL"]).is_ok());
        assert_eq!(
            check_environment(["PATH", "TAR_OPTIONS"]),
            Err(Refusal::Environment("TAR_OPTIONS".into()))
        );
    }

    #[test]
    fn caller_must_be_root_or_the_amanda_user() {
        assert!(check_caller(0, Some(34)).is_ok());
        assert!(check_caller(34, Some(34)).is_ok());
        assert!(check_caller(1000, Some(34)).is_err());
        assert!(check_caller(1000, None).is_err());
        assert_eq!(
            refusal_line(&check_caller(1000, Some(34)).unwrap_err()),
            format!("amandad-runtar: error [must be run by root or {AMANDA_USER}, not uid 1000]\n")
                .into_bytes()
        );
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        policy: Policy,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let lists = root.join("lists");
        std::fs::create_dir(&lists).unwrap();
        let policy = Policy {
            tars: vec![PathBuf::from("/usr/bin/tar")],
            list_dirs: vec![lists],
        };
        Fixture {
            _dir: dir,
            root,
            policy,
        }
    }

    impl Fixture {
        /// Asserts that the helper refuses `<option>=<path>` from caller `uid` with a reason
        /// that contains `why`.
        fn assert_refused(&self, option: &str, path: &Path, uid: u32, why: &str) {
            let r = req(&[format!("{option}={}", path.display())]);
            let e = prepare(r, &self.policy, uid).unwrap_err();
            assert!(
                e.to_string().contains(why),
                "{option}={}: {e}",
                path.display()
            );
        }
    }

    fn uid() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    fn req(list: &[String]) -> TarRequest {
        let mut v = vec![
            "/usr/bin/tar".to_owned(),
            "--create".to_owned(),
            "--file=-".to_owned(),
            "--verbatim-files-from".to_owned(),
        ];
        v.extend_from_slice(list);
        v.push(".".to_owned());
        parse_args(&v.iter().map(OsString::from).collect::<Vec<_>>()).unwrap()
    }

    /// Whether /usr/bin/tar can pass check 2; if not, the test is skipped (failed under CI).
    fn tar_is_root_owned() -> bool {
        let ok =
            std::fs::canonicalize("/usr/bin/tar").is_ok_and(|t| check_root_owned_chain(&t).is_ok());
        if !ok {
            skip_unless_ci("/usr/bin/tar is not a root-owned GNU tar here");
        }
        ok
    }

    #[test]
    fn snapshot_inside_the_list_dir_is_passed_as_dev_fd() {
        if !tar_is_root_owned() {
            return;
        }
        let f = fixture();
        let snap = f.root.join("lists/host_disk_1.new");
        std::fs::write(&snap, b"").unwrap();
        let p = prepare(
            req(&[format!("--listed-incremental={}", snap.display())]),
            &f.policy,
            uid(),
        )
        .unwrap();
        assert_eq!(p.keep_open.len(), 1);
        let fd = p.keep_open[0].as_raw_fd();
        assert!(p.args.contains(&OsString::from(format!(
            "--listed-incremental=/dev/fd/{fd}"
        ))));
        assert_eq!(p.args[0], OsString::from("--create"));
    }

    #[test]
    fn snapshot_outside_the_list_dir_or_through_a_symlink_is_refused() {
        if !tar_is_root_owned() {
            return;
        }
        let f = fixture();
        let other = f.root.join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("x"), b"").unwrap();
        let refused = |path: &Path, why| f.assert_refused("--listed-incremental", path, uid(), why);
        // outside
        refused(&other.join("x"), "not directly inside");
        // a symlinked directory inside the list dir pointing elsewhere
        std::os::unix::fs::symlink(&other, f.root.join("lists/escape")).unwrap();
        refused(&f.root.join("lists/escape/x"), "not directly inside");
        // a symlinked file inside the list dir
        std::os::unix::fs::symlink("/etc/passwd", f.root.join("lists/link_0.new")).unwrap();
        refused(&f.root.join("lists/link_0.new"), "symbolic link");
        // a file that does not exist (the helper never creates files as root)
        refused(&f.root.join("lists/none"), "can not open");
        assert!(!f.root.join("lists/none").exists());
        // a hard link
        std::fs::write(f.root.join("lists/a"), b"").unwrap();
        std::fs::hard_link(f.root.join("lists/a"), f.root.join("lists/b")).unwrap();
        refused(&f.root.join("lists/b"), "more than one link");
        // a directory
        std::fs::create_dir(f.root.join("lists/dir")).unwrap();
        refused(&f.root.join("lists/dir"), "not a regular file");
    }

    #[test]
    fn list_files_must_be_regular_files_of_the_caller() {
        if !tar_is_root_owned() {
            return;
        }
        let f = fixture();
        let mine = f.root.join("mine.exclude");
        std::fs::write(&mine, b"./x\n").unwrap();
        prepare(
            req(&[format!("--exclude-from={}", mine.display())]),
            &f.policy,
            uid(),
        )
        .unwrap();
        // as seen by another caller uid, the file is not theirs
        f.assert_refused("--files-from", &mine, uid() + 4242, "not by the caller");
        std::os::unix::fs::symlink(&mine, f.root.join("link")).unwrap();
        let e = prepare(
            req(&[format!("--exclude-from={}", f.root.join("link").display())]),
            &f.policy,
            uid(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    // issue 10: the helper opened caller-named files as root before checking them; a FIFO
    // blocked it, and a tape device opened as root rewinds. With O_PATH neither is opened.
    #[test]
    fn fifos_and_devices_are_refused_without_being_opened() {
        if !tar_is_root_owned() {
            return;
        }
        let f = fixture();
        let fifo = f.root.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for (opt, path) in [
            ("--files-from", fifo.clone()),
            ("--exclude-from", fifo.clone()),
            ("--files-from", PathBuf::from("/dev/null")),
            ("--exclude-from", PathBuf::from("/dev/zero")),
        ] {
            // a plain open of the FIFO would block this test forever
            let e = prepare(
                req(&[format!("{opt}={}", path.display())]),
                &f.policy,
                uid(),
            )
            .unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{opt} {e}");
        }
    }

    // issue 10: a caller-named file is checked with the caller's identity, so the helper
    // is no oracle for files the caller cannot read.
    #[test]
    fn list_files_are_opened_with_the_callers_permissions() {
        if uid() != 0 {
            skip_unless_ci("needs root (setfsuid to another user)");
            return;
        }
        let f = fixture();
        let secret = f.root.join("secret");
        std::fs::write(&secret, b"./x\n").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        // root can, nobody (65534) cannot
        let r = req(&[format!("--exclude-from={}", secret.display())]);
        prepare(r.clone(), &f.policy, 0).unwrap();
        let e = as_caller(65534, 65534, || prepare(r, &f.policy, 0))
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("Permission denied"), "{e}");
        // and the identity is back to root afterwards
        assert!(std::fs::File::open(&secret).is_ok());
    }

    #[test]
    fn tar_must_be_allowed_and_root_owned() {
        let f = fixture();
        let e = check_tar(Path::new("/bin/sh"), &f.policy).unwrap_err();
        assert!(e.to_string().contains("not allowed"), "{e}");
        // allowed but not root owned: a copy in a temp dir (only meaningful when not root-owned)
        let fake = f.root.join("tar");
        std::fs::write(&fake, b"").unwrap();
        let policy = Policy {
            tars: vec![fake.clone()],
            list_dirs: vec![],
        };
        if uid() != 0 {
            assert!(
                check_tar(&fake, &policy)
                    .unwrap_err()
                    .to_string()
                    .contains("not owned by root")
            );
        } else {
            // tmp dirs are world writable (sticky): refused for that
            let e = check_tar(&fake, &policy).unwrap_err().to_string();
            assert!(e.contains("writable") || e.contains("not owned"), "{e}");
        }
    }

    #[test]
    fn policy_comes_from_the_security_file_or_defaults() {
        let c = conf::SecurityConf::parse(
            "/etc/amanda-security.conf",
            b"runtar:gnutar_path=/bin/tar\n",
        )
        .unwrap()
        .value;
        let p = Policy::from_security_conf(&c);
        assert_eq!(p.tars, vec![PathBuf::from(DEFAULT_GNUTAR)]);
        assert_eq!(p.list_dirs, vec![PathBuf::from(DEFAULT_LIST_DIR)]);
        let c = conf::SecurityConf::parse(
            "/etc/amanda-security.conf",
            b"amandad-runtar:gnutar_path=/opt/tar\namandad-runtar:gnutar_path=/bin/tar\namandad-runtar:gnutar_list_dir=/srv/lists\n",
        )
        .unwrap()
        .value;
        let p = Policy::from_security_conf(&c);
        assert_eq!(
            p.tars,
            vec![PathBuf::from("/opt/tar"), PathBuf::from("/bin/tar")]
        );
        assert_eq!(p.list_dirs, vec![PathBuf::from("/srv/lists")]);
    }
}
