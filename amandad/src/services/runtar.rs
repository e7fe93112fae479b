//! The rules of `amandad-runtar`, the small setuid-root helper that lets GNU tar read every
//! file while the network-facing daemon runs as the Amanda user (like Amanda's runtar).
//!
//! Command line: `amandad-runtar <tar-path> <tar arguments>...`. The helper runs tar as root
//! only if every check below passes, otherwise it prints one line
//! `amandad-runtar: error [<reason>]` on stderr and exits with [`EXIT_REFUSED`]:
//!
//! 1. the caller's **real** uid is root or the Amanda user ([`AMANDA_USER`]);
//! 2. `<tar-path>` is allowed by /etc/amanda-security.conf (`amandad-runtar:gnutar_path=`
//!    lines; when there is none, only [`DEFAULT_GNUTAR`]), compared after resolving
//!    symlinks, and the binary and every directory above it belong to root and are not
//!    group/world writable;
//! 3. the arguments are a create-mode tar invocation built only from [`ALLOWED`] long
//!    options (exact names: GNU tar's abbreviations such as `--to-com` are refused, and so
//!    are all short options). Nothing that runs a program or writes a file of the caller's
//!    choosing as root is on the list: no `--to-command`, `--use-compress-program`, `-I`,
//!    `--checkpoint-action`, `--rsh-command`, `--info-script`, `--new-volume-script`, `-F`,
//!    `--index-file`, `--volno-file`, `--backup`, ...;
//! 4. `--file` is `-` or `/dev/null`; `--directory` is absolute;
//! 5. `--listed-incremental` names a file directly inside an allowed list directory
//!    (`amandad-runtar:gnutar_list_dir=` lines, else [`DEFAULT_LIST_DIR`]; both sides
//!    compared after resolving symlinks, so a symlinked directory or `..` cannot escape),
//!    that already exists, is a regular file (not a symlink: opened with `O_NOFOLLOW`), has
//!    one link and belongs to the caller;
//! 6. `--exclude-from` / `--files-from` files are regular files (not symlinks) belonging to
//!    the caller.
//!
//! The checked files are opened by the helper and handed to tar as `/dev/fd/N`, so nobody
//! can swap them between the check and tar's open. tar is then executed (not forked) as
//! root (real and effective uid/gid 0, no supplementary groups) with an empty environment
//! (`TAR_OPTIONS` and locale variables cannot change its behaviour).
//!
//! This module holds the pure validation ([`parse_args`]) and the file-system checks
//! ([`prepare`]); the binary is `src/bin/amandad-runtar.rs`.
//!
//! What this module must not do: accept anything it cannot prove harmless; when in doubt,
//! refuse.

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
/// `amandad-runtar:gnutar_list_dir=` line (Debian's `gnutar_list_dir`).
pub const DEFAULT_LIST_DIR: &str = "/var/lib/amanda/gnutar-lists";

/// The amanda-security.conf key for tar paths.
pub const KEY_GNUTAR_PATH: &str = "amandad-runtar:gnutar_path";

/// The amanda-security.conf key for list directories.
pub const KEY_LIST_DIR: &str = "amandad-runtar:gnutar_list_dir";

/// Exit status when the helper refuses (tar's own "fatal error" status, so callers treat it
/// as a failed tar).
pub const EXIT_REFUSED: i32 = 2;

/// What a long option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    Nothing,
    /// A value, as `--opt=v` or `--opt v`.
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
    /// A pattern file of the caller's.
    CallerFile,
    /// A date, not a file name (`--newer`: values starting with `/` or `.` name files).
    Date,
    /// A blocking factor, 1..=4096.
    BlockingFactor,
    /// `--atime-preserve=replace|system`.
    AtimeMethod,
    /// Free text that tar only matches or transforms names with.
    Pattern,
}

/// Every option the helper passes to tar: what Amanda's runtar callers (sendbackup-gnutar,
/// sendsize, amgtar) generate, plus what amgtar's COMMAND-OPTIONS validation lets through
/// that cannot run programs or write files.
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
    "--files-from",
    "--exclude",
    "--exclude-caches",
    "--exclude-caches-all",
    "--exclude-caches-under",
    "--exclude-vcs",
    "--exclude-backups",
    "--exclude-tag",
    "--exclude-tag-all",
    "--exclude-tag-under",
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
        "--exclude"
        | "--exclude-tag"
        | "--exclude-tag-all"
        | "--exclude-tag-under"
        | "--transform" => Takes::Value(Pattern),
        n if ALLOWED.contains(&n) => Takes::Nothing,
        _ => return None,
    })
}

/// Why the helper refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No tar path argument.
    #[error("usage: amandad-runtar <tar-path> <tar arguments>...")]
    Usage,
    /// The real uid is neither root nor the Amanda user.
    #[error("must be run by root or {user}, not uid {uid}")]
    Caller { uid: u32, user: String },
    /// A short option or an option cluster.
    #[error("short option {0:?} refused (use long options)")]
    ShortOption(String),
    /// An option not on the allow-list (also every abbreviation).
    #[error("option {0:?} refused")]
    Option(String),
    /// An option that needs a value got none.
    #[error("option {0} needs a value")]
    MissingValue(String),
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
    /// Not exactly one `--create`.
    #[error("only one --create invocation is allowed")]
    NotCreate,
    /// An operand that looks like an option, or `-`.
    #[error("operand {0:?} refused")]
    Operand(String),
    /// The tar binary is not allowed or not safe.
    #[error("{0}")]
    Tar(String),
    /// amanda-security.conf could not be used.
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
    /// The arguments, in order.
    pub args: Vec<Arg>,
}

fn check_value(option: &str, check: Check, value: &OsStr) -> Result<(), Refusal> {
    let bytes = value.as_bytes();
    let refuse = |why: &str| Refusal::Value {
        option: option.to_owned(),
        value: lossy(value),
        why: why.to_owned(),
    };
    match check {
        Check::ArchiveFile => {
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
            if p.file_name().is_none() {
                return Err(refuse("must name a file"));
            }
        }
        Check::Date => {
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
        Check::Pattern => {}
    }
    Ok(())
}

/// Checks the command line after the program name: `<tar-path> <tar arguments>...`.
/// Pure: touches no file.
pub fn parse_args(argv: &[OsString]) -> Result<TarRequest, Refusal> {
    let (tar, rest) = argv.split_first().ok_or(Refusal::Usage)?;
    if !Path::new(tar).is_absolute() {
        return Err(Refusal::Tar(format!(
            "tar path {:?} must be absolute",
            lossy(tar)
        )));
    }
    let mut args = Vec::new();
    let mut creates = 0;
    let mut it = rest.iter();
    let mut options_done = false;
    while let Some(arg) = it.next() {
        let bytes = arg.as_bytes();
        if options_done {
            if bytes == b"-" {
                return Err(Refusal::Operand(lossy(arg)));
            }
            args.push(Arg::Operand(arg.clone()));
            continue;
        }
        if bytes == b"--" {
            options_done = true;
            args.push(Arg::EndOfOptions);
            continue;
        }
        if bytes.starts_with(b"--") {
            let (name_bytes, inline) = match memchr::memchr(b'=', bytes) {
                Some(eq) => (
                    &bytes[..eq],
                    Some(OsStr::from_bytes(&bytes[eq + 1..]).to_owned()),
                ),
                None => (bytes, None),
            };
            let name_str = String::from_utf8_lossy(name_bytes);
            let Some(&name) = ALLOWED.iter().find(|n| n.as_bytes() == name_bytes) else {
                return Err(Refusal::Option(name_str.into_owned()));
            };
            let value = match takes(name).ok_or_else(|| Refusal::Option(name.to_owned()))? {
                Takes::Nothing => {
                    if inline.is_some() {
                        return Err(Refusal::UnexpectedValue(name.to_owned()));
                    }
                    None
                }
                Takes::Value(check) => {
                    let v = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .cloned()
                            .ok_or_else(|| Refusal::MissingValue(name.to_owned()))?,
                    };
                    check_value(name, check, &v)?;
                    Some(v)
                }
                Takes::OptionalValue(check) => {
                    if let Some(v) = &inline {
                        check_value(name, check, v)?;
                    }
                    inline
                }
            };
            if name == "--create" {
                creates += 1;
            }
            args.push(Arg::Opt { name, value });
            continue;
        }
        if bytes.starts_with(b"-") {
            return Err(if bytes == b"-" {
                Refusal::Operand(lossy(arg))
            } else {
                Refusal::ShortOption(lossy(arg))
            });
        }
        args.push(Arg::Operand(arg.clone()));
    }
    if creates != 1 {
        return Err(Refusal::NotCreate);
    }
    Ok(TarRequest {
        tar: PathBuf::from(tar),
        args,
    })
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
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(value)
        .map_err(|e| {
            refuse(format!(
                "can not open it: {}",
                crate::services::util::strerror(&e)
            ))
        })?;
    let md = file
        .metadata()
        .map_err(|e| refuse(crate::services::util::strerror(&e)))?;
    if !md.file_type().is_file() {
        return Err(refuse("not a regular file".to_owned()));
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
/// pattern files, and rewrites their arguments to `/dev/fd/N`.
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
mod tests {
    use super::*;

    fn argv(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn parse(list: &[&str]) -> Result<TarRequest, Refusal> {
        let mut v = vec!["/usr/bin/tar"];
        v.extend_from_slice(list);
        parse_args(&argv(&v))
    }

    const GOOD: &[&str] = &[
        "--create",
        "--verbose",
        "--block-number",
        "--file",
        "-",
        "--directory",
        "/home",
        "--one-file-system",
        "--atime-preserve=system",
        "--listed-incremental",
        "/var/lib/amanda/gnutar-lists/host_home_0.new",
        "--sparse",
        "--ignore-failed-read",
        "--totals",
        "--exclude-from",
        "/tmp/amanda/x.exclude",
        ".",
    ];

    #[test]
    fn amgtar_and_sendbackup_invocations_are_accepted() {
        let r = parse(GOOD).unwrap();
        assert_eq!(
            r.args
                .iter()
                .filter(|a| matches!(a, Arg::Operand(_)))
                .count(),
            1
        );
        parse(&[
            "--create",
            "--file",
            "/dev/null",
            "--numeric-owner",
            "--directory",
            "/x",
            "--incremental",
            "--newer",
            "1970-01-01  0:00:00 GMT",
            "--totals",
            ".",
        ])
        .unwrap();
        parse(&[
            "--create",
            "--file=-",
            "--blocking-factor",
            "64",
            "--no-unquote",
            "--no-check-device",
            "--acls",
            "--selinux",
            "--xattrs",
            "--exclude=*.o",
            "--",
            "-weird-name",
        ])
        .unwrap();
    }

    #[test]
    fn every_program_running_or_file_writing_option_is_refused() {
        for bad in [
            "--to-command=sh",
            "--use-compress-program=sh",
            "--checkpoint-action=exec=sh",
            "--checkpoint=1",
            "--rsh-command=sh",
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
            "--null",
            "--format=posix",
            "--multi-volume",
            "--tape-length=1",
            "--restrict",
            "--hard-dereference",
        ] {
            let e = parse(&["--create", bad, "."]).unwrap_err();
            assert!(matches!(e, Refusal::Option(_)), "{bad}: {e:?}");
        }
    }

    #[test]
    fn abbreviations_and_short_options_are_refused() {
        assert!(matches!(
            parse(&["--create", "--to-com=sh", "."]),
            Err(Refusal::Option(_))
        ));
        assert!(matches!(
            parse(&["--create", "--use-comp=sh", "."]),
            Err(Refusal::Option(_))
        ));
        assert!(matches!(parse(&["--cre", "."]), Err(Refusal::Option(_))));
        for short in ["-I", "-F", "-T", "-X", "-cf", "-z", "-Isomething"] {
            assert!(
                matches!(
                    parse(&["--create", short, "."]),
                    Err(Refusal::ShortOption(_))
                ),
                "{short}"
            );
        }
        assert!(matches!(
            parse(&["--create", "-", "."]),
            Err(Refusal::Operand(_))
        ));
        assert!(matches!(
            parse(&["--create", "--", "-"]),
            Err(Refusal::Operand(_))
        ));
    }

    #[test]
    fn archive_must_be_stdout_or_dev_null() {
        for bad in [
            "--file=/etc/passwd",
            "--file=/dev/tcp/1.2.3.4/1",
            "--file=host:/x",
            "--file=./x",
        ] {
            assert!(
                matches!(parse(&["--create", bad, "."]), Err(Refusal::Value { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse(&["--create", "--file", "/tmp/x", "."]),
            Err(Refusal::Value { .. })
        ));
        assert!(matches!(
            parse(&["--create", "--file"]),
            Err(Refusal::MissingValue(_))
        ));
        // every occurrence is checked: the last --file wins in tar
        assert!(parse(&["--create", "--file=-", "--file=/etc/shadow", "."]).is_err());
    }

    #[test]
    fn exactly_one_create_is_required() {
        assert!(matches!(parse(&["--file=-", "."]), Err(Refusal::NotCreate)));
        assert!(matches!(
            parse(&["--create", "--create", "."]),
            Err(Refusal::NotCreate)
        ));
    }

    #[test]
    fn values_are_checked() {
        assert!(parse(&["--create", "--directory=relative", "."]).is_err());
        assert!(parse(&["--create", "--newer=/etc/shadow", "."]).is_err());
        assert!(parse(&["--create", "--newer=./x", "."]).is_err());
        assert!(parse(&["--create", "--blocking-factor=0", "."]).is_err());
        assert!(parse(&["--create", "--blocking-factor=99999", "."]).is_err());
        assert!(parse(&["--create", "--blocking-factor=x", "."]).is_err());
        assert!(parse(&["--create", "--atime-preserve=evil", "."]).is_err());
        assert!(parse(&["--create", "--atime-preserve", "."]).is_ok());
        assert!(parse(&["--create", "--sparse=yes", "."]).is_err());
        assert!(parse(&["--create", "--listed-incremental=relative/x", "."]).is_err());
        assert!(
            parse(&[
                "--create",
                "--listed-incremental=/var/lib/amanda/gnutar-lists/../../x",
                "."
            ])
            .is_err()
        );
        assert!(parse(&["--create", "--exclude-from=/a/./b", "."]).is_err());
        assert!(parse(&["--create", "--files-from=/", "."]).is_err());
        assert!(parse_args(&argv(&["tar", "--create"])).is_err());
        assert!(matches!(parse_args(&[]), Err(Refusal::Usage)));
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

    fn uid() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    fn req(list: &[String]) -> TarRequest {
        let mut v = vec![
            "/usr/bin/tar".to_owned(),
            "--create".to_owned(),
            "--file=-".to_owned(),
        ];
        v.extend_from_slice(list);
        v.push(".".to_owned());
        parse_args(&v.iter().map(OsString::from).collect::<Vec<_>>()).unwrap()
    }

    fn tar_is_root_owned() -> bool {
        std::fs::canonicalize("/usr/bin/tar").is_ok_and(|t| check_root_owned_chain(&t).is_ok())
    }

    #[test]
    fn snapshot_inside_the_list_dir_is_passed_as_dev_fd() {
        if !tar_is_root_owned() {
            eprintln!("SKIPPED: /usr/bin/tar is not a root-owned GNU tar here");
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
    }

    #[test]
    fn snapshot_outside_the_list_dir_or_through_a_symlink_is_refused() {
        if !tar_is_root_owned() {
            eprintln!("SKIPPED: /usr/bin/tar is not a root-owned GNU tar here");
            return;
        }
        let f = fixture();
        let other = f.root.join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("x"), b"").unwrap();
        // outside
        let e = prepare(
            req(&[format!(
                "--listed-incremental={}",
                other.join("x").display()
            )]),
            &f.policy,
            uid(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not directly inside"), "{e}");
        // a symlinked directory inside the list dir pointing elsewhere
        std::os::unix::fs::symlink(&other, f.root.join("lists/escape")).unwrap();
        let e = prepare(
            req(&[format!(
                "--listed-incremental={}",
                f.root.join("lists/escape/x").display()
            )]),
            &f.policy,
            uid(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not directly inside"), "{e}");
        // a symlinked file inside the list dir
        std::os::unix::fs::symlink("/etc/passwd", f.root.join("lists/link_0.new")).unwrap();
        let e = prepare(
            req(&[format!(
                "--listed-incremental={}",
                f.root.join("lists/link_0.new").display()
            )]),
            &f.policy,
            uid(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("can not open"), "{e}");
        // a file that does not exist (the helper never creates files as root)
        let e = prepare(
            req(&[format!(
                "--listed-incremental={}",
                f.root.join("lists/none").display()
            )]),
            &f.policy,
            uid(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("can not open"), "{e}");
        // a hard link
        std::fs::write(f.root.join("lists/a"), b"").unwrap();
        std::fs::hard_link(f.root.join("lists/a"), f.root.join("lists/b")).unwrap();
        let e = prepare(
            req(&[format!(
                "--listed-incremental={}",
                f.root.join("lists/b").display()
            )]),
            &f.policy,
            uid(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("more than one link"), "{e}");
        // a directory
        std::fs::create_dir(f.root.join("lists/dir")).unwrap();
        assert!(
            prepare(
                req(&[format!(
                    "--listed-incremental={}",
                    f.root.join("lists/dir").display()
                )]),
                &f.policy,
                uid()
            )
            .is_err()
        );
    }

    #[test]
    fn pattern_files_must_belong_to_the_caller() {
        if !tar_is_root_owned() {
            eprintln!("SKIPPED: /usr/bin/tar is not a root-owned GNU tar here");
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
        let e = prepare(
            req(&[format!("--files-from={}", mine.display())]),
            &f.policy,
            uid() + 4242,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not by the caller"), "{e}");
        std::os::unix::fs::symlink(&mine, f.root.join("link")).unwrap();
        assert!(
            prepare(
                req(&[format!("--exclude-from={}", f.root.join("link").display())]),
                &f.policy,
                uid()
            )
            .is_err()
        );
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
