//! How GNU tar is run for a DLE: the two dumptype forms, the amgtar properties, the tar
//! command lines, and the choice between the privileged helper and plain tar.
//!
//! * `program "GNUTAR"`: the legacy client (client-src/sendbackup-gnutar.c,
//!   sendsize.c getsize_gnutar). tar runs in the directory `amname_to_dirname(device)` with
//!   `--one-file-system --sparse --ignore-failed-read --totals` and `--listed-incremental`
//!   (or, without a `gnutar_list_dir`, `--incremental --newer <date from amandates>`);
//!   estimates add `--numeric-owner`. We also pass `--verbose --block-number` when the DLE
//!   has an index, to build the index from tar's own listing (the real client runs a
//!   second `tar -tf -` over the archive; the names are the same).
//! * `program "APPLICATION"` with the `amgtar` plugin (application-src/amgtar.c): the
//!   properties below change the command line exactly as amgtar does.
//!
//! Properties are matched like amgtar's `getopt_long` sees them: lower-cased, `_` as `-`,
//! exact names or unambiguous prefixes (so `ACL` means `ACLS`); an unknown or ambiguous
//! name is reported with getopt's text, which the real client turns into an error.
//!
//! What this module must not do: start processes other than tar (through the helper or
//! directly), or put anything on a tar command line that did not come from this table.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use proto::dle::{Dle, FileList, Property};

use crate::services::ServiceContext;
use crate::services::messages::UserRules;
use crate::services::util::lossy;
use crate::tar::exinclude::ExInclude;

/// The two dumptype forms we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `program "GNUTAR"`.
    Gnutar,
    /// `program "APPLICATION"` + `amgtar`.
    Amgtar,
}

/// What a tar run is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--file /dev/null`.
    Estimate,
    /// `--file -`.
    Backup,
}

/// amgtar's long options: (name, takes an argument).
const AMGTAR_OPTIONS: &[(&str, bool)] = &[
    ("config", true),
    ("host", true),
    ("disk", true),
    ("device", true),
    ("level", true),
    ("index", true),
    ("message", true),
    ("collection", false),
    ("record", false),
    ("gnutar-path", true),
    ("gnutar-listdir", true),
    ("one-file-system", true),
    ("sparse", true),
    ("atime-preserve", true),
    ("check-device", true),
    ("include-file", true),
    ("include-list", true),
    ("include-optional", true),
    ("exclude-file", true),
    ("exclude-list", true),
    ("exclude-optional", true),
    ("directory", true),
    ("normal", true),
    ("ignore", true),
    ("strange", true),
    ("exit-handling", true),
    ("calcsize", false),
    ("tar-blocksize", true),
    ("no-unquote", true),
    ("acls", true),
    ("selinux", true),
    ("xattrs", true),
    ("command-options", true),
    ("include-list-glob", true),
    ("exclude-list-glob", true),
    ("verbose", true),
    ("ignore-zeros", true),
    ("amfeatures", true),
    ("recover-dump-state-file", true),
    ("dar", true),
    ("state-stream", true),
    ("target", true),
    ("timestamp", true),
];

/// `getopt_long`'s lookup: exact name, else the one option the name is a prefix of.
fn lookup_option(name: &str) -> Result<&'static str, String> {
    if let Some(&(n, _)) = AMGTAR_OPTIONS.iter().find(|(n, _)| *n == name) {
        return Ok(n);
    }
    let candidates: Vec<&str> = AMGTAR_OPTIONS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| n.starts_with(name))
        .collect();
    match candidates.as_slice() {
        [one] => Ok(one),
        [] => Err(format!("amgtar: unrecognized option '--{name}'")),
        many => Err(format!(
            "amgtar: option '--{name}' is ambiguous; possibilities: {}",
            many.iter()
                .map(|c| format!("'--{c}'"))
                .collect::<Vec<_>>()
                .join(" ")
        )),
    }
}

/// A problem with the amgtar properties, as amgtar reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropProblem {
    /// A bad yes/no value: amgtar message `code` (3700007..3700011, 3700015) for `value`,
    /// with `text`.
    BadValue {
        code: i32,
        value: String,
        text: String,
    },
    /// getopt's complaint on stderr (unknown or ambiguous property).
    Getopt(String),
    /// A COMMAND-OPTIONS value amgtar refuses (message 3700014).
    CommandOption(String),
    /// GNUTAR-PATH or GNUTAR-LISTDIR not allowed by the security file.
    NotAllowed(String),
}

impl PropProblem {
    /// The text.
    pub fn text(&self) -> &str {
        match self {
            PropProblem::BadValue { text, .. }
            | PropProblem::Getopt(text)
            | PropProblem::CommandOption(text)
            | PropProblem::NotAllowed(text) => text,
        }
    }
}

/// amgtar's `validate_command_options`: the prefixes a COMMAND-OPTIONS value may have.
pub fn command_option_allowed(opt: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "--create",
        "--totals",
        "--dereference",
        "--no-recursion",
        "--one-file-system",
        "--incremental",
        "--atime-preserve",
        "--sparse",
        "--ignore-failed-read",
        "--numeric-owner",
        "--verbose",
        "--blocking-factor",
        "--file",
        "--directory",
        "--exclude",
        "--transform",
        "--listed-incremental",
        "--newer",
        "--exclude-from",
        "--files-from",
    ];
    PREFIXES.iter().any(|p| opt.starts_with(p))
}

/// The amgtar settings after the properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmgtarProps {
    /// GNUTAR-PATH.
    pub gnutar_path: Option<PathBuf>,
    /// GNUTAR-LISTDIR.
    pub gnutar_listdir: Option<PathBuf>,
    /// TARGET / DIRECTORY.
    pub target: Option<PathBuf>,
    /// DEVICE (overrides the DLE's).
    pub device: Option<Vec<u8>>,
    /// ONE-FILE-SYSTEM (default yes).
    pub one_file_system: bool,
    /// SPARSE (default yes; off for tar < 1.28).
    pub sparse: bool,
    /// ATIME-PRESERVE (default yes): `--atime-preserve=system`.
    pub atime_preserve: bool,
    /// CHECK-DEVICE (default yes; no adds `--no-check-device`).
    pub check_device: bool,
    /// NO-UNQUOTE (default no).
    pub no_unquote: bool,
    /// ACLS / SELINUX / XATTRS (default no).
    pub acls: bool,
    /// SELINUX.
    pub selinux: bool,
    /// XATTRS.
    pub xattrs: bool,
    /// TAR-BLOCKSIZE: `--blocking-factor <v>`.
    pub tar_blocksize: Option<String>,
    /// COMMAND-OPTIONS, in order.
    pub command_options: Vec<String>,
    /// NORMAL / IGNORE / STRANGE.
    pub rules: UserRules,
    /// EXIT-HANDLING: which tar exit statuses are good (0 and 1 by default).
    pub exit_good: Vec<bool>,
    /// EXCLUDE-FILE / EXCLUDE-LIST / EXCLUDE-OPTIONAL, added to the DLE's.
    pub exclude: FileList,
    /// INCLUDE-FILE / INCLUDE-LIST / INCLUDE-OPTIONAL, added to the DLE's.
    pub include: FileList,
    /// What amgtar would complain about.
    pub problems: Vec<PropProblem>,
}

impl Default for AmgtarProps {
    fn default() -> AmgtarProps {
        let mut exit_good = vec![false; 256];
        exit_good[0] = true;
        exit_good[1] = true;
        AmgtarProps {
            gnutar_path: None,
            gnutar_listdir: None,
            target: None,
            device: None,
            one_file_system: true,
            sparse: true,
            atime_preserve: true,
            check_device: true,
            no_unquote: false,
            acls: false,
            selinux: false,
            xattrs: false,
            tar_blocksize: None,
            command_options: Vec::new(),
            rules: UserRules::default(),
            exit_good,
            exclude: FileList::default(),
            include: FileList::default(),
            problems: Vec::new(),
        }
    }
}

fn yes_no(value: &str) -> Option<bool> {
    if value.eq_ignore_ascii_case("yes") {
        Some(true)
    } else if value.eq_ignore_ascii_case("no") {
        Some(false)
    } else {
        None
    }
}

impl AmgtarProps {
    /// Applies `<backup-program>` properties like amgtar's option parsing (each value of a
    /// property is one `--name value` pair; later ones win for single settings).
    pub fn from_properties(props: &[Property]) -> AmgtarProps {
        let mut p = AmgtarProps::default();
        let mut pending_yes_no: Vec<(&'static str, String)> = Vec::new();
        let mut exit_handling: Option<String> = None;
        for prop in props {
            let name: String = lossy(&prop.name).to_ascii_lowercase().replace('_', "-");
            let option = match lookup_option(&name) {
                Ok(o) => o,
                Err(text) => {
                    p.problems.push(PropProblem::Getopt(text));
                    continue;
                }
            };
            let takes_arg = AMGTAR_OPTIONS.iter().any(|(n, a)| *n == option && *a);
            for value in &prop.values {
                let v = lossy(value);
                if !takes_arg {
                    continue;
                }
                match option {
                    "gnutar-path" => p.gnutar_path = Some(PathBuf::from(OsStr::from_bytes(value))),
                    "gnutar-listdir" => {
                        p.gnutar_listdir = Some(PathBuf::from(OsStr::from_bytes(value)))
                    }
                    "directory" | "target" => {
                        p.target = Some(PathBuf::from(OsStr::from_bytes(value)))
                    }
                    "device" => p.device = Some(value.to_vec()),
                    "one-file-system" | "sparse" | "atime-preserve" | "check-device"
                    | "no-unquote" | "dar" => {
                        pending_yes_no.retain(|(o, _)| *o != option);
                        pending_yes_no.push((option, v));
                    }
                    "acls" => p.acls = v.eq_ignore_ascii_case("yes"),
                    "selinux" => p.selinux = v.eq_ignore_ascii_case("yes"),
                    "xattrs" => p.xattrs = v.eq_ignore_ascii_case("yes"),
                    "include-file" => p.include.files.push(value.clone()),
                    "include-list" => p.include.lists.push(value.clone()),
                    "include-optional" => p.include.optional = true,
                    "exclude-file" => p.exclude.files.push(value.clone()),
                    "exclude-list" => p.exclude.lists.push(value.clone()),
                    "exclude-optional" => p.exclude.optional = true,
                    "normal" => p.rules.normal.push(v),
                    "ignore" => p.rules.ignore.push(v),
                    "strange" => p.rules.strange.push(v),
                    "exit-handling" => exit_handling = Some(v),
                    "tar-blocksize" => p.tar_blocksize = Some(v),
                    "command-options" => p.command_options.push(v),
                    // Set by sendbackup itself, restore-only, or without effect on a backup.
                    _ => {}
                }
            }
        }
        for (option, value) in pending_yes_no {
            let (code, label) = match option {
                "one-file-system" => (3_700_007, "ONE-FILE-SYSTEM"),
                "sparse" => (3_700_008, "SPARSE"),
                "atime-preserve" => (3_700_009, "ATIME-PRESERVE"),
                "check-device" => (3_700_010, "CHECK-DEVICE"),
                "no-unquote" => (3_700_011, "NO-UNQUOTE"),
                _ => (3_700_015, "DAR"),
            };
            match yes_no(&value) {
                Some(b) => match option {
                    "one-file-system" => p.one_file_system = b,
                    "sparse" => p.sparse = b,
                    "atime-preserve" => p.atime_preserve = b,
                    "check-device" => p.check_device = b,
                    "no-unquote" => p.no_unquote = b,
                    _ => {}
                },
                None => p.problems.push(PropProblem::BadValue {
                    code,
                    text: format!("bad {label} property value '{value}'"),
                    value,
                }),
            }
        }
        if let Some(eh) = exit_handling {
            p.apply_exit_handling(&eh);
        }
        if let Some(bad) = p
            .command_options
            .iter()
            .find(|o| !command_option_allowed(o))
        {
            p.problems.push(PropProblem::CommandOption(format!(
                "Invalid '{bad}' COMMAND-OPTIONS"
            )));
        }
        p
    }

    /// EXIT-HANDLING: `"<n>=GOOD <m>=BAD ..."`; only `GOOD` changes anything (as in amgtar).
    fn apply_exit_handling(&mut self, spec: &str) {
        let b = spec.as_bytes();
        let mut start = Some(0usize);
        while let Some(s) = start {
            let rest = &b[s..];
            if let Some(eq) = memchr::memchr(b'=', rest) {
                let j = proto::quote::atoi(rest);
                if (0..256).contains(&j)
                    && rest[eq + 1..].len() >= 4
                    && rest[eq + 1..eq + 5].eq_ignore_ascii_case(b"GOOD")
                {
                    self.exit_good[j as usize] = true;
                }
            }
            start = b
                .get(s + 1..)
                .and_then(|r| memchr::memchr(b' ', r))
                .map(|i| s + 1 + i);
        }
    }
}

/// Cached `tar --version` first lines, per binary.
static VERSIONS: Mutex<Option<HashMap<PathBuf, Option<String>>>> = Mutex::new(None);

/// The first line of `<tar> --version` (cached), e.g. `tar (GNU tar) 1.34`.
pub fn version_line(tar: &Path) -> Option<String> {
    if let Some(v) = VERSIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(tar)
    {
        return v.clone();
    }
    let line = Command::new(tar)
        .arg("--version")
        .env_clear()
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| o.stdout.split(|b| *b == b'\n').next().map(lossy))
        .filter(|l| !l.is_empty());
    VERSIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(tar.to_path_buf(), line.clone());
    line
}

/// The version number in a `--version` line: from the first digit on (`1.34`).
pub fn version_number(line: &str) -> &str {
    line.find(|c: char| c.is_ascii_digit())
        .map_or("", |i| &line[i..])
}

/// `(major, minor)` of a version number like `1.34` or `1.35.90`.
pub fn major_minor(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split('.');
    let major = it.next()?.trim().parse().ok()?;
    let minor = it
        .next()
        .map(|m| {
            m.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    Some((major, minor))
}

/// `amname_to_dirname`: a device node becomes its mount point (from /proc/self/mounts);
/// anything else is itself.
pub fn amname_to_dirname(device: &[u8]) -> PathBuf {
    let path = PathBuf::from(OsStr::from_bytes(device));
    let Ok(st) = std::fs::metadata(&path) else {
        return path;
    };
    let mounts = std::fs::read("/proc/self/mounts").unwrap_or_default();
    for line in mounts.split(|b| *b == b'\n') {
        let mut f = line.split(|b| *b == b' ');
        let (Some(fsname), Some(dir)) = (f.next(), f.next()) else {
            continue;
        };
        let fsname = unescape_mount(fsname);
        let dir = unescape_mount(dir);
        let same = |p: &[u8]| {
            p.first() == Some(&b'/')
                && std::fs::metadata(OsStr::from_bytes(p))
                    .is_ok_and(|m| m.dev() == st.dev() && m.ino() == st.ino())
        };
        if same(&fsname) || same(&dir) {
            return PathBuf::from(OsStr::from_bytes(&dir));
        }
    }
    path
}

/// /proc/mounts escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && s.get(i + 1..i + 4)
                .is_some_and(|o| o.iter().all(|d| (b'0'..=b'7').contains(d)))
        {
            let o = &s[i + 1..i + 4];
            out.push((o[0] - b'0') * 64 + (o[1] - b'0') * 8 + (o[2] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Everything needed to run tar for one DLE, resolved from the request and the context.
#[derive(Debug, Clone)]
pub struct TarSetup {
    /// Which form.
    pub form: Form,
    /// The tar binary (as configured; what is printed and run).
    pub tar: PathBuf,
    /// The directory tar archives (`--directory`).
    pub directory: PathBuf,
    /// The DLE name.
    pub disk: Vec<u8>,
    /// The device as the request gave it (or DEVICE).
    pub device: Vec<u8>,
    /// The gnutar-lists chain stem, `None` when the legacy form uses amandates.
    pub list_base: Option<PathBuf>,
    /// The list directory used.
    pub list_dir: Option<PathBuf>,
    /// amgtar settings (defaults for the GNUTAR form, where they are fixed).
    pub props: AmgtarProps,
    /// The DLE's exclude list, merged with the properties'.
    pub exclude: FileList,
    /// The DLE's include list, merged with the properties'.
    pub include: FileList,
}

/// Why a DLE cannot be backed up or estimated by us.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// DUMP, or an application other than amgtar.
    #[error("{0}")]
    Unsupported(String),
}

fn merge_lists(a: Option<&FileList>, b: &FileList) -> FileList {
    let mut out = a.cloned().unwrap_or_default();
    out.files.extend(b.files.iter().cloned());
    out.lists.extend(b.lists.iter().cloned());
    out.optional |= b.optional;
    out
}

/// Which form a DLE is, without touching the file system (what `start` may do on the event
/// loop); an error for what we do not implement.
pub fn form_of(dle: &Dle) -> Result<Form, SetupError> {
    Ok(if dle.program == "GNUTAR" {
        Form::Gnutar
    } else if dle.program == "APPLICATION" {
        match &dle.application {
            Some(app) if app.plugin == "amgtar" => Form::Amgtar,
            Some(app) => {
                return Err(SetupError::Unsupported(format!(
                    "Application '{}': not supported by this client (amanda-rs implements amgtar)",
                    lossy(&app.plugin)
                )));
            }
            None => {
                return Err(SetupError::Unsupported(
                    "XML: program set to APPLICATION but no application set".into(),
                ));
            }
        }
    } else {
        return Err(SetupError::Unsupported(format!(
            "program {} is not supported by this client (amanda-rs implements GNUTAR and amgtar)",
            lossy(&dle.program)
        )));
    })
}

impl TarSetup {
    /// Resolves the DLE: properties, directories, state-file names (this reads the file
    /// system: call it from a job or at spawn time, not from `start`). `host` names the
    /// state files (the request's `hostname=`).
    pub fn new(ctx: &ServiceContext, dle: &Dle, host: &[u8]) -> Result<TarSetup, SetupError> {
        let disk = dle.disk.as_ref().map(|d| d.to_vec()).unwrap_or_default();
        let device = dle
            .effective_device()
            .map(|d| d.to_vec())
            .unwrap_or_else(|| disk.clone());
        let form = form_of(dle)?;
        let no_list = FileList::default();
        match form {
            Form::Gnutar => {
                let list_dir = ctx.tar.list_dir().map(Path::to_path_buf);
                Ok(TarSetup {
                    form,
                    tar: ctx.tar.gnutar_path.clone(),
                    directory: amname_to_dirname(&device),
                    list_base: list_dir
                        .as_deref()
                        .map(|d| crate::tar::listed::chain_base(d, host, &disk)),
                    list_dir,
                    disk,
                    device,
                    props: AmgtarProps::default(),
                    exclude: merge_lists(dle.exclude.as_ref(), &no_list),
                    include: merge_lists(dle.include.as_ref(), &no_list),
                })
            }
            Form::Amgtar => {
                let app = dle
                    .application
                    .as_ref()
                    .map(|a| a.properties.as_slice())
                    .unwrap_or_default();
                let mut props = AmgtarProps::from_properties(app);
                let device = props.device.clone().unwrap_or(device);
                let directory = props
                    .target
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(OsStr::from_bytes(&device)));
                let mut tar = ctx.tar.gnutar_path.clone();
                let security = load_security(ctx);
                if let Some(p) = props.gnutar_path.clone() {
                    let real = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
                    if security.as_ref().is_some_and(|c| {
                        c.allows_path("amgtar:gnutar_path", &real.to_string_lossy())
                    }) {
                        tar = p;
                    } else {
                        props.problems.push(PropProblem::NotAllowed(format!(
                            "security file '{}' do not allow to run '{}' as root for amgtar:GNUTAR_PATH",
                            ctx.security_file().display(),
                            real.display()
                        )));
                    }
                }
                let mut list_dir = ctx.tar.list_dir().map(Path::to_path_buf);
                if let Some(d) = props.gnutar_listdir.clone() {
                    let allowed_extra = security.as_ref().is_some_and(|c| {
                        c.program_paths.iter().any(|e| {
                            e.value.0 == crate::tar::runtar::KEY_LIST_DIR
                                && std::fs::canonicalize(&e.value.1).ok()
                                    == std::fs::canonicalize(&d).ok()
                        })
                    });
                    let same = list_dir.as_ref().is_some_and(|l| {
                        std::fs::canonicalize(l).ok() == std::fs::canonicalize(&d).ok()
                    });
                    if d.as_os_str().is_empty() {
                        list_dir = None;
                    } else if same || allowed_extra {
                        list_dir = Some(d);
                    } else {
                        props.problems.push(PropProblem::NotAllowed(format!(
                            "GNUTAR-LISTDIR '{}' is not allowed by the security file '{}' (add \"{}={}\")",
                            d.display(),
                            ctx.security_file().display(),
                            crate::tar::runtar::KEY_LIST_DIR,
                            d.display()
                        )));
                    }
                }
                if props.sparse
                    && let Some(line) = version_line(&tar)
                    && let Some((maj, min)) = major_minor(version_number(&line))
                    && (maj < 1 || (maj == 1 && min < 28))
                {
                    props.sparse = false;
                }
                let exclude = merge_lists(dle.exclude.as_ref(), &props.exclude);
                let include = merge_lists(dle.include.as_ref(), &props.include);
                Ok(TarSetup {
                    form,
                    tar,
                    directory,
                    list_base: list_dir
                        .as_deref()
                        .map(|d| crate::tar::listed::chain_base(d, host, &disk)),
                    list_dir,
                    disk,
                    device,
                    props,
                    exclude,
                    include,
                })
            }
        }
    }

    /// Whether the run has exclude or include lists.
    pub fn has_lists(&self) -> bool {
        !self.exclude.files.is_empty()
            || !self.exclude.lists.is_empty()
            || !self.include.files.is_empty()
            || !self.include.lists.is_empty()
    }

    /// tar's arguments (after the program name). `snapshot`: the `.new` state file
    /// (`--listed-incremental`); `newer`: the amandates date (legacy form without a list
    /// directory); `index`: add `--verbose --block-number` (backups only). Every value is
    /// attached as `--name=value` and `--create` comes first: the form `amandad-runtar`
    /// demands (issue 10), which tar reads the same way when it runs directly.
    pub fn args(
        &self,
        mode: Mode,
        snapshot: Option<&Path>,
        newer: Option<&str>,
        lists: &ExInclude,
        index: bool,
    ) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let opt = |name: &str, value: &OsStr| {
            let mut o = OsString::from(name);
            o.push("=");
            o.push(value);
            o
        };
        a.push("--create".into());
        if mode == Mode::Backup && index {
            a.push("--verbose".into());
            a.push("--block-number".into());
        }
        a.push(if mode == Mode::Estimate {
            "--file=/dev/null".into()
        } else {
            "--file=-".into()
        });
        match self.form {
            Form::Gnutar => {
                if mode == Mode::Estimate {
                    a.push("--numeric-owner".into());
                }
                a.push(opt("--directory", self.directory.as_os_str()));
                a.push("--one-file-system".into());
                match (snapshot, newer) {
                    (Some(s), _) => a.push(opt("--listed-incremental", s.as_os_str())),
                    (None, n) => {
                        a.push("--incremental".into());
                        a.push(opt(
                            "--newer",
                            OsStr::new(n.unwrap_or("1970-01-01  0:00:00 GMT")),
                        ));
                    }
                }
                a.push("--sparse".into());
                a.push("--ignore-failed-read".into());
                a.push("--totals".into());
            }
            Form::Amgtar => {
                let p = &self.props;
                if p.no_unquote {
                    a.push("--no-unquote".into());
                }
                a.push(opt("--directory", self.directory.as_os_str()));
                if p.one_file_system {
                    a.push("--one-file-system".into());
                }
                if p.atime_preserve {
                    a.push("--atime-preserve=system".into());
                }
                if !p.check_device {
                    a.push("--no-check-device".into());
                }
                if p.acls {
                    a.push("--acls".into());
                }
                if p.selinux {
                    a.push("--selinux".into());
                }
                if p.xattrs {
                    a.push("--xattrs".into());
                }
                if let Some(s) = snapshot {
                    a.push(opt("--listed-incremental", s.as_os_str()));
                }
                if p.sparse {
                    a.push("--sparse".into());
                }
                if let Some(bs) = &p.tar_blocksize {
                    a.push(opt("--blocking-factor", OsStr::new(bs)));
                }
                a.push("--ignore-failed-read".into());
                a.push("--totals".into());
                for o in &p.command_options {
                    a.push(o.into());
                }
            }
        }
        if let Some(e) = &lists.exclude {
            a.push(opt("--exclude-from", e.path().as_os_str()));
        }
        match &lists.include {
            Some(i) => {
                // The list holds NUL-terminated names, taken verbatim: a line of it is
                // never an option (exinclude.rs writes it so).
                a.push("--verbatim-files-from".into());
                a.push("--null".into());
                a.push(opt("--files-from", i.path().as_os_str()));
            }
            None => a.push(".".into()),
        }
        a
    }

    /// The blocking factor tar will use (20 unless TAR-BLOCKSIZE says otherwise), `None`
    /// when TAR-BLOCKSIZE is not a plain positive number (tar will judge it).
    pub fn blocking_factor(&self) -> Option<u64> {
        match &self.props.tar_blocksize {
            None => Some(20),
            Some(v) => v.parse::<u64>().ok().filter(|n| (1..=4096).contains(n)),
        }
    }

    /// Whether tar's exit status counts as success (EXIT-HANDLING; 0 and 1 by default).
    pub fn exit_is_good(&self, code: i32) -> bool {
        usize::try_from(code)
            .ok()
            .and_then(|c| self.props.exit_good.get(c))
            .copied()
            .unwrap_or(false)
    }
}

/// /etc/amanda-security.conf, if it exists and is safe; `None` otherwise (then nothing
/// beyond the configured defaults is allowed).
pub fn load_security(ctx: &ServiceContext) -> Option<conf::SecurityConf> {
    conf::security::load(ctx.security_file())
        .ok()
        .map(|l| l.value)
}

/// How tar is started: through the setuid helper when it is installed and usable, else
/// directly (as the Amanda user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// `amandad-runtar <tar> <args>`.
    Helper(PathBuf),
    /// `<tar> <args>`.
    Direct,
}

/// Why the helper is not used, if it is configured but unusable.
pub fn helper_problem(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Err(e) => Some(format!(
            "{}: {}",
            path.display(),
            crate::services::util::strerror(&e)
        )),
        Ok(m) if m.uid() != 0 => Some(format!("{} is not owned by root", path.display())),
        Ok(m) if m.permissions().mode() & 0o4000 == 0 => {
            Some(format!("{} is not SUID root", path.display()))
        }
        Ok(_) => crate::services::util::euid_access(path, libc::X_OK)
            .err()
            .map(|e| {
                format!(
                    "can not execute {}: {}",
                    path.display(),
                    crate::services::util::strerror_errno(e)
                )
            }),
    }
}

/// The launch to use now.
pub fn launch(ctx: &ServiceContext) -> Launch {
    match &ctx.tar.runtar_path {
        Some(p) if helper_problem(p).is_none() => Launch::Helper(p.clone()),
        _ => Launch::Direct,
    }
}

/// A `Command` for tar with `args`: a clean environment (tar must not read `TAR_OPTIONS`),
/// stdin from /dev/null, its own process group.
pub fn command(launch: &Launch, tar: &Path, args: &[OsString]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = match launch {
        Launch::Helper(h) => {
            let mut c = Command::new(h);
            c.arg(tar);
            c
        }
        Launch::Direct => Command::new(tar),
    };
    c.args(args)
        .env_clear()
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .process_group(0);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::exinclude;

    fn prop(name: &str, values: &[&str]) -> Property {
        Property {
            name: name.into(),
            priority: false,
            values: values.iter().map(|v| (*v).into()).collect(),
        }
    }

    #[test]
    fn properties_change_settings_like_amgtar() {
        let p = AmgtarProps::from_properties(&[
            prop("ONE-FILE-SYSTEM", &["no"]),
            prop("sparse", &["NO"]),
            prop("atime_preserve", &["no"]),
            prop("CHECK-DEVICE", &["no"]),
            prop("ACL", &["yes"]),
            prop("XATTRS", &["YES"]),
            prop("SELINUX", &["maybe"]),
            prop("TAR-BLOCKSIZE", &["64"]),
            prop("EXCLUDE-FILE", &["*.o", "*.tmp"]),
            prop("include-list", &["/etc/incl"]),
            prop("NORMAL", &[": file changed as we read it$"]),
            prop("EXIT-HANDLING", &["1=BAD 2=GOOD 300=GOOD"]),
            prop("COMMAND-OPTIONS", &["--exclude-vcs"]),
        ]);
        assert!(!p.one_file_system && !p.sparse && !p.atime_preserve && !p.check_device);
        assert!(p.acls && p.xattrs && !p.selinux);
        assert_eq!(p.tar_blocksize.as_deref(), Some("64"));
        assert_eq!(p.exclude.files.len(), 2);
        assert_eq!(p.include.lists.len(), 1);
        assert_eq!(
            p.rules.normal,
            vec![": file changed as we read it$".to_owned()]
        );
        assert!(p.exit_good[0] && p.exit_good[1] && p.exit_good[2] && !p.exit_good[3]);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
    }

    #[test]
    fn bad_values_and_unknown_properties_are_reported_with_amgtars_texts() {
        let p = AmgtarProps::from_properties(&[
            prop("ONE-FILE-SYSTEM", &["perhaps"]),
            prop("FROBNICATE", &["1"]),
            prop("exclude", &["x"]),
            prop("COMMAND-OPTIONS", &["--to-command=sh"]),
        ]);
        let texts: Vec<&str> = p.problems.iter().map(PropProblem::text).collect();
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("amgtar: option '--exclude' is ambiguous")),
            "{texts:?}"
        );
        for want in [
            "amgtar: unrecognized option '--frobnicate'",
            "bad ONE-FILE-SYSTEM property value 'perhaps'",
            "Invalid '--to-command=sh' COMMAND-OPTIONS",
        ] {
            assert!(texts.contains(&want), "{want}: {texts:?}");
        }
        assert!(p.one_file_system, "a bad value leaves the default");
    }

    /// A DLE `/home` of `form` with the default properties and no lists.
    fn home(form: Form) -> TarSetup {
        TarSetup {
            form,
            tar: "/usr/bin/tar".into(),
            directory: "/home".into(),
            disk: b"/home".to_vec(),
            device: b"/home".to_vec(),
            list_base: None,
            list_dir: None,
            props: AmgtarProps::default(),
            exclude: FileList::default(),
            include: FileList::default(),
        }
    }

    /// [`TarSetup::args`] (with the snapshot path as text), joined with spaces.
    fn argv(
        s: &TarSetup,
        mode: Mode,
        snapshot: Option<&str>,
        newer: Option<&str>,
        lists: &ExInclude,
        index: bool,
    ) -> String {
        let args = s.args(mode, snapshot.map(Path::new), newer, lists, index);
        let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        args.join(" ")
    }

    #[test]
    fn amgtar_argv_matches_amgtar_build_argv() {
        let mut s = home(Form::Amgtar);
        let none = ExInclude::default();
        assert_eq!(
            argv(&s, Mode::Backup, Some("/l/h_home_0.new"), None, &none, true),
            "--create --verbose --block-number --file=- --directory=/home --one-file-system --atime-preserve=system --listed-incremental=/l/h_home_0.new --sparse --ignore-failed-read --totals ."
        );
        s.props.no_unquote = true;
        s.props.check_device = false;
        s.props.tar_blocksize = Some("64".into());
        s.props.command_options = vec!["--exclude-vcs".into()];
        assert_eq!(
            argv(&s, Mode::Estimate, Some("/l/x_1.new"), None, &none, true),
            "--create --file=/dev/null --no-unquote --directory=/home --one-file-system --atime-preserve=system --no-check-device --listed-incremental=/l/x_1.new --sparse --blocking-factor=64 --ignore-failed-read --totals --exclude-vcs ."
        );
    }

    #[test]
    fn gnutar_argv_matches_sendbackup_gnutar_and_sendsize() {
        let d = tempfile::tempdir().unwrap();
        let s = TarSetup {
            exclude: FileList {
                files: vec!["*.o".into()],
                ..FileList::default()
            },
            ..home(Form::Gnutar)
        };
        let place = exinclude::ListPlace {
            tmp_dir: d.path(),
            prog: "sendbackup",
            disk: b"/home",
            dir: Path::new("/home"),
        };
        let lists = exinclude::build(&s.exclude, &s.include, &place);
        let excl = lists.exclude.as_ref().unwrap().path().display().to_string();
        assert_eq!(
            argv(
                &s,
                Mode::Backup,
                Some("/l/h_home_1.new"),
                None,
                &lists,
                false
            ),
            format!(
                "--create --file=- --directory=/home --one-file-system --listed-incremental=/l/h_home_1.new --sparse --ignore-failed-read --totals --exclude-from={excl} ."
            )
        );
        assert_eq!(
            argv(
                &s,
                Mode::Estimate,
                None,
                Some("2024-01-01  2:03:04 GMT"),
                &ExInclude::default(),
                false
            ),
            "--create --file=/dev/null --numeric-owner --directory=/home --one-file-system --incremental --newer=2024-01-01  2:03:04 GMT --sparse --ignore-failed-read --totals ."
        );
    }

    // issue 10: everything amandad generates passes the helper's stricter rules (first
    // --create, --name=value only, --verbatim-files-from before the include list).
    #[test]
    fn every_generated_argv_passes_the_helpers_rules() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.c"), b"").unwrap();
        let s = TarSetup {
            form: Form::Amgtar,
            tar: "/usr/bin/tar".into(),
            directory: d.path().to_path_buf(),
            disk: b"/home".to_vec(),
            device: b"/home".to_vec(),
            list_base: None,
            list_dir: None,
            props: AmgtarProps {
                acls: true,
                selinux: true,
                xattrs: true,
                no_unquote: true,
                check_device: false,
                tar_blocksize: Some("64".into()),
                command_options: vec!["--exclude-vcs".into(), "--exclude=*.tmp".into()],
                ..AmgtarProps::default()
            },
            exclude: FileList {
                files: vec!["*.o".into()],
                ..FileList::default()
            },
            include: FileList {
                files: vec!["./*.c".into()],
                ..FileList::default()
            },
        };
        let place = exinclude::ListPlace {
            tmp_dir: d.path(),
            prog: "sendbackup",
            disk: b"/home",
            dir: d.path(),
        };
        let with_lists = exinclude::build(&s.exclude, &s.include, &place);
        assert!(with_lists.include.is_some() && with_lists.exclude.is_some());
        let none = ExInclude::default();
        for lists in [&none, &with_lists] {
            for mode in [Mode::Backup, Mode::Estimate] {
                for form in [Form::Gnutar, Form::Amgtar] {
                    let s = TarSetup { form, ..s.clone() };
                    for (snap, newer) in [
                        (
                            Some(Path::new("/var/lib/amanda/gnutar-lists/h_0.new")),
                            None,
                        ),
                        (None, Some("1970-01-01  0:00:00 GMT")),
                    ] {
                        for index in [true, false] {
                            let mut argv = vec![OsString::from("/usr/bin/tar")];
                            argv.extend(s.args(mode, snap, newer, lists, index));
                            if let Err(e) = crate::tar::runtar::parse_args(&argv) {
                                panic!("{argv:?}: {e}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn versions_and_dirnames() {
        assert_eq!(version_number("tar (GNU tar) 1.34"), "1.34");
        assert_eq!(major_minor("1.34"), Some((1, 34)));
        assert_eq!(major_minor("1.27.1"), Some((1, 27)));
        assert_eq!(major_minor("x"), None);
        assert_eq!(
            amname_to_dirname(b"/nonexistent/x"),
            PathBuf::from("/nonexistent/x")
        );
        assert_eq!(unescape_mount(b"/a\\040b\\134"), b"/a b\\");
        assert_eq!(unescape_mount(b"\\04"), b"\\04");
    }

    #[test]
    fn getopt_prefixes() {
        assert_eq!(lookup_option("acl"), Ok("acls"));
        assert_eq!(lookup_option("one"), Ok("one-file-system"));
        assert_eq!(lookup_option("target"), Ok("target"));
        assert!(lookup_option("include").unwrap_err().contains("ambiguous"));
        assert!(lookup_option("zzz").unwrap_err().contains("unrecognized"));
    }
}
