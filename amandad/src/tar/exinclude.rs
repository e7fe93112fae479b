//! Exclude and include lists: the DLE's patterns and list files merged into the temporary
//! files tar reads with `--exclude-from` / `--files-from` (client-src/client_util.c:
//! build_exclude, build_include, add_exclude, add_include, fixup_relative, build_name).
//!
//! * Exclude patterns (the `file` entries, and every non-empty line of each `list` file)
//!   are written one per line, in Amanda's quoting with the surrounding quotes removed
//!   (tar unquotes `\t`, `\\` etc. again).
//! * Include patterns must start with `./` (else message 4600005, an error unless the
//!   include is optional); a pattern with a `/` after the `./` is taken as is (Amanda-quoted,
//!   quotes removed); any other is expanded with `glob(3)` in the DLE's directory and every
//!   match is taken as `./<match>`. Nothing matched at all: message 4600008. The real client
//!   writes these lines for tar to unquote; tar reads our list with `--verbatim-files-from
//!   --null` (so that no line can be an option, issue 10), so each name is written already
//!   unquoted the way tar's `unquote_string` would ([`tar_unquote`]) and ends with a NUL.
//! * Relative list file names are relative to the DLE's directory. A list that cannot be
//!   opened is message 4600002/4600006, only informational when optional and missing.
//!
//! The temporary files live in the context's tmp directory, are named like the real ones
//! (`<prog>.<sanitised disk>.<YYYYMMDDhhmmss><nnn>.exclude`), created exclusively with mode
//! 0600, and deleted when the [`TempList`] guard is dropped.
//!
//! What this module must not do: run as root or follow a symlink when creating a file. (The
//! real amgtar globs as root; we glob as the Amanda user, so an include glob below a
//! directory the Amanda user cannot read finds nothing there.)

use std::ffi::{CStr, CString, OsStr};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use proto::dle::FileList;
use proto::quote::quote_string;

use crate::services::util::strerror;

/// A message about the lists (Amanda codes 4600002..4600008).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListMessage {
    /// The Amanda code.
    pub code: i32,
    /// Only informational (an optional list that is missing, an optional bad include).
    pub info: bool,
    /// The text.
    pub text: String,
}

/// A temporary pattern file, deleted on drop.
#[derive(Debug)]
pub struct TempList {
    path: PathBuf,
}

impl TempList {
    /// Its path (what tar is given).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempList {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The lists of one tar run.
#[derive(Debug, Default)]
pub struct ExInclude {
    /// `--exclude-from` file, when there is anything to exclude.
    pub exclude: Option<TempList>,
    /// `--files-from` file, when there is anything to include.
    pub include: Option<TempList>,
    /// What the real client would report about them.
    pub messages: Vec<ListMessage>,
}

impl ExInclude {
    /// Whether any message is an error.
    pub fn has_errors(&self) -> bool {
        self.messages.iter().any(|m| !m.info)
    }
}

/// Where and for whom the files are made.
#[derive(Debug, Clone, Copy)]
pub struct ListPlace<'a> {
    /// The tmp directory.
    pub tmp_dir: &'a Path,
    /// Program name in the file name (`amgtar`, `sendbackup`, `sendsize`).
    pub prog: &'a str,
    /// The DLE's disk name (sanitised into the file name).
    pub disk: &'a [u8],
    /// The directory relative list names and include globs are resolved in.
    pub dir: &'a Path,
}

/// `fixup_relative`: a relative list name is taken relative to the DLE's directory.
pub fn fixup_relative(name: &[u8], dir: &Path) -> PathBuf {
    let p = Path::new(OsStr::from_bytes(name));
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// One pattern as `add_exclude` writes it: Amanda-quoted, surrounding quotes removed.
pub fn exclude_line(pattern: &[u8]) -> Vec<u8> {
    let pattern = pattern.strip_suffix(b"\n").unwrap_or(pattern);
    let q = quote_string(pattern);
    let mut line = match q.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")) {
        Some(inner) => inner.to_vec(),
        None => q,
    };
    line.push(b'\n');
    line
}

/// What GNU tar's `unquote_string` makes of a name it reads from a `--files-from` line (`\\`,
/// `\a \b \f \n \r \t \v`, `\?` for DEL, up to three octal digits; any other escape
/// is kept), cut at a NUL as tar's C string would be.
pub fn tar_unquote(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' || i + 1 == s.len() {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let c = s[i + 1];
        i += 2;
        match c {
            b'\\' => out.push(b'\\'),
            b'a' => out.push(0x07),
            b'?' => out.push(0x7f),
            c if let Some(control) = proto::quote::c_control_escape(c) => out.push(control),
            b'0'..=b'7' => {
                let mut value = u32::from(c - b'0');
                for _ in 0..2 {
                    match s.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                // tar stores the value in a char: only its low byte counts
                out.push((value & 0xff) as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    if let Some(nul) = memchr::memchr(0, &out) {
        out.truncate(nul);
    }
    out
}

/// One `--files-from` entry: `line` as tar would have unquoted it, NUL-terminated.
fn include_entry(line: &[u8], out: &mut Vec<u8>) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    out.extend_from_slice(&tar_unquote(line));
    out.push(0);
}

/// The lines of a list file as `pgets` gives them (newline removed, empty lines skipped).
fn list_lines(content: &[u8]) -> impl Iterator<Item = &[u8]> {
    content.split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

fn create_temp(place: &ListPlace<'_>, kind: &str) -> std::io::Result<(std::fs::File, PathBuf)> {
    let stamp = timestamp_now();
    let disk = proto::quote::sanitise_filename(place.disk);
    let mut last = None;
    for n in 0..1000u32 {
        let mut name = format!("{}.", place.prog).into_bytes();
        name.extend_from_slice(&disk);
        let number = if n == 0 {
            String::new()
        } else {
            format!("{:03}", n - 1)
        };
        name.extend_from_slice(format!(".{stamp}{number}.{kind}").as_bytes());
        let path = place.tmp_dir.join(OsStr::from_bytes(&name));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AlreadyExists)))
}

/// `YYYYMMDDhhmmss` in local time, like Amanda's `get_timestamp_from_time`.
fn timestamp_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as libc::time_t);
    // SAFETY: localtime_r writes into `tm`, which we own; `now` is a valid time_t.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&now, &mut tm).is_null() };
    if !ok {
        return "19700101000000".to_owned();
    }
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// Creates the temporary list file of `kind` (`exclude` or `include`), or reports why not
/// (message 4600004, as amgtar words it).
fn open_list(
    place: &ListPlace<'_>,
    kind: &str,
    messages: &mut Vec<ListMessage>,
) -> Option<(std::fs::File, TempList)> {
    match create_temp(place, kind) {
        Ok((file, path)) => Some((file, TempList { path })),
        Err(e) => {
            messages.push(ListMessage {
                code: 4_600_004,
                info: false,
                text: format!(
                    "Can't create '{}': {}",
                    place.tmp_dir.display(),
                    strerror(&e)
                ),
            });
            None
        }
    }
}

/// `build_exclude`: `None` when the DLE excludes nothing.
fn build_exclude(
    list: &FileList,
    place: &ListPlace<'_>,
    messages: &mut Vec<ListMessage>,
) -> Option<TempList> {
    if list.files.is_empty() && list.lists.is_empty() {
        return None;
    }
    let (mut file, guard) = open_list(place, "exclude", messages)?;
    let mut out = Vec::new();
    for f in &list.files {
        out.extend_from_slice(&exclude_line(f));
    }
    for l in &list.lists {
        let name = fixup_relative(l, place.dir);
        match std::fs::read(&name) {
            Ok(content) => {
                for line in list_lines(&content) {
                    out.extend_from_slice(&exclude_line(line));
                }
            }
            Err(e) => messages.push(ListMessage {
                code: 4_600_002,
                info: list.optional && e.kind() == std::io::ErrorKind::NotFound,
                text: format!(
                    "Can't open exclude file '{}': {}",
                    name.display(),
                    strerror(&e)
                ),
            }),
        }
    }
    if let Err(e) = file.write_all(&out) {
        messages.push(ListMessage {
            code: 4_600_003,
            info: false,
            text: format!(
                "Can't create exclude file '{}': {}",
                guard.path.display(),
                strerror(&e)
            ),
        });
    }
    Some(guard)
}

/// Expands an include glob relative to `dir` (`glob(3)`, sorted, no special flags) and
/// returns the matches relative to `dir`.
pub fn glob_in(dir: &Path, pattern: &[u8]) -> Vec<Vec<u8>> {
    let mut full = Vec::new();
    for &b in dir.as_os_str().as_bytes() {
        if matches!(b, b'\\' | b'*' | b'?' | b'[') {
            full.push(b'\\');
        }
        full.push(b);
    }
    if full.last() != Some(&b'/') {
        full.push(b'/');
    }
    let prefix_len = {
        let mut d = dir.as_os_str().as_bytes().to_vec();
        if d.last() != Some(&b'/') {
            d.push(b'/');
        }
        d.len()
    };
    full.extend_from_slice(pattern);
    let Ok(c) = CString::new(full) else {
        return Vec::new();
    };
    // SAFETY: a zeroed glob_t is the documented initial state; glob fills it and globfree
    // releases it exactly once below.
    let mut g: libc::glob_t = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::glob(c.as_ptr(), 0, None, &mut g) };
    let mut out = Vec::new();
    if rc == 0 {
        for i in 0..g.gl_pathc {
            // SAFETY: gl_pathv holds gl_pathc valid NUL-terminated strings after a
            // successful glob.
            let s = unsafe { CStr::from_ptr(*g.gl_pathv.add(i)) }.to_bytes();
            if let Some(rel) = s.get(prefix_len..) {
                out.push(rel.to_vec());
            }
        }
    }
    // SAFETY: `g` was initialised by glob (also on failure) and is freed once.
    unsafe { libc::globfree(&mut g) };
    out
}

/// `add_include` for one pattern; returns how many lines it wrote.
fn add_include(
    pattern: &[u8],
    optional: bool,
    dir: &Path,
    out: &mut Vec<u8>,
    messages: &mut Vec<ListMessage>,
) -> usize {
    let pattern = pattern.strip_suffix(b"\n").unwrap_or(pattern);
    let Some(inc) = pattern.strip_prefix(b"./") else {
        messages.push(ListMessage {
            code: 4_600_005,
            info: optional,
            text: format!(
                "include must start with './' ({})",
                String::from_utf8_lossy(pattern)
            ),
        });
        return 0;
    };
    if inc.contains(&b'/') {
        // Not root: taken as is (Amanda-quoted, quotes removed).
        include_entry(&exclude_line(pattern), out);
        return 1;
    }
    let matches = glob_in(dir, inc);
    for m in &matches {
        // The real client means to quote these but writes them raw (it tests the wrong
        // pointer), and tar unquotes them; so do we.
        let mut line = b"./".to_vec();
        line.extend_from_slice(m);
        include_entry(&line, out);
    }
    matches.len()
}

/// `build_include`: `None` when the DLE includes nothing.
fn build_include(
    list: &FileList,
    place: &ListPlace<'_>,
    messages: &mut Vec<ListMessage>,
) -> Option<TempList> {
    if list.files.is_empty() && list.lists.is_empty() {
        return None;
    }
    let (mut file, guard) = open_list(place, "include", messages)?;
    let mut out = Vec::new();
    let mut found = 0;
    for f in &list.files {
        found += add_include(f, list.optional, place.dir, &mut out, messages);
    }
    for l in &list.lists {
        let name = fixup_relative(l, place.dir);
        match std::fs::read(&name) {
            Ok(content) => {
                for line in list_lines(&content) {
                    found += add_include(line, list.optional, place.dir, &mut out, messages);
                }
            }
            Err(e) => messages.push(ListMessage {
                code: 4_600_006,
                info: list.optional && e.kind() == std::io::ErrorKind::NotFound,
                text: format!(
                    "Can't open include file '{}': {}",
                    name.display(),
                    strerror(&e)
                ),
            }),
        }
    }
    if let Err(e) = file.write_all(&out) {
        messages.push(ListMessage {
            code: 4_600_007,
            info: false,
            text: format!(
                "Can't create include file '{}': {}",
                guard.path.display(),
                strerror(&e)
            ),
        });
    }
    if found == 0 {
        messages.push(ListMessage {
            code: 4_600_008,
            info: false,
            text: format!(
                "Nothing found to include for disk '{}'",
                String::from_utf8_lossy(place.disk)
            ),
        });
    }
    Some(guard)
}

/// Builds both lists.
pub fn build(exclude: &FileList, include: &FileList, place: &ListPlace<'_>) -> ExInclude {
    let mut messages = Vec::new();
    let exclude = build_exclude(exclude, place, &mut messages);
    let include = build_include(include, place, &mut messages);
    ExInclude {
        exclude,
        include,
        messages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fl(files: &[&str], lists: &[&str], optional: bool) -> FileList {
        FileList {
            files: files.iter().map(|s| (*s).into()).collect(),
            lists: lists.iter().map(|s| (*s).into()).collect(),
            optional,
        }
    }

    #[test]
    fn unquoting_is_tars() {
        assert_eq!(tar_unquote(b"./a\\tb"), b"./a\tb");
        assert_eq!(tar_unquote(b"./a\\\\b"), b"./a\\b");
        assert_eq!(tar_unquote(b"./\\101\\0612"), b"./A12");
        assert_eq!(tar_unquote(b"./\\q\\"), b"./\\q\\");
        assert_eq!(tar_unquote(b"./\\?\\a"), b"./\x7f\x07");
        assert_eq!(tar_unquote(b"./cut\\000here"), b"./cut");
        assert_eq!(tar_unquote(b"./\\777"), b"./\xff");
    }

    /// issue 10: the include list is read `--verbatim-files-from --null`; the names tar
    /// archives must be the ones it archived from the real client's newline list.
    #[test]
    fn verbatim_null_list_archives_what_the_quoted_list_did() {
        if !Path::new("/usr/bin/tar").exists() {
            crate::services::util::skip_unless_ci("no GNU tar at /usr/bin/tar");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        let lines: &[&[u8]] = &[
            b"./tab\\there",
            b"./back\\\\slash",
            b"./oct\\101",
            b"./keep\\q",
            b"./new\\nline",
            b"./dir/",
            b"./-dash",
            b"./plain name",
        ];
        std::fs::create_dir_all(data.join("dir")).unwrap();
        for l in lines {
            let name = tar_unquote(l);
            let p = data.join(OsStr::from_bytes(&name));
            if !p.exists() {
                std::fs::write(p, b"x").unwrap();
            }
        }
        let listing = |extra: &[&str], list: &[u8]| -> String {
            let lf = d.path().join("list");
            std::fs::write(&lf, list).unwrap();
            let out = std::process::Command::new("/usr/bin/tar")
                .env_clear()
                .arg("--create")
                .arg("--file=-")
                .arg(format!("--directory={}", data.display()))
                .args(extra)
                .arg(format!("--files-from={}", lf.display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            crate::tar::tests::tar_list(&out.stdout)
        };
        let mut quoted = Vec::new();
        let mut ours = Vec::new();
        for l in lines {
            quoted.extend_from_slice(l);
            quoted.push(b'\n');
            include_entry(l, &mut ours);
        }
        let want = listing(&[], &quoted);
        assert!(!want.is_empty());
        assert_eq!(listing(&["--verbatim-files-from", "--null"], &ours), want);
    }

    #[test]
    fn exclude_patterns_are_quoted_like_add_exclude() {
        assert_eq!(exclude_line(b"*.o"), b"*.o\n");
        assert_eq!(exclude_line(b"a b"), b"a b\n");
        assert_eq!(exclude_line(b"tab\there"), b"tab\\there\n");
        assert_eq!(exclude_line(b"x\n"), b"x\n");
    }

    #[test]
    fn lists_are_merged_and_temp_files_removed() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("a.c"), b"").unwrap();
        std::fs::write(data.join("b.c"), b"").unwrap();
        std::fs::write(data.join("list"), b"*.tmp\n\n./cache\n").unwrap();
        std::fs::write(data.join("incl"), b"./sub/x\n./*.c\n").unwrap();
        let place = ListPlace {
            tmp_dir: d.path(),
            prog: "amgtar",
            disk: b"/data",
            dir: &data,
        };
        let x = build(
            &fl(&["*.o"], &["list"], false),
            &fl(&["./sub"], &["incl", "missing"], true),
            &place,
        );
        let excl = x.exclude.as_ref().unwrap().path().to_path_buf();
        let incl = x.include.as_ref().unwrap().path().to_path_buf();
        assert!(
            excl.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("amgtar._data.")
        );
        assert!(excl.to_str().unwrap().ends_with(".exclude"));
        assert_eq!(std::fs::read(&excl).unwrap(), b"*.o\n*.tmp\n./cache\n");
        assert_eq!(
            std::fs::read(&incl).unwrap(),
            b"./sub\0./sub/x\0./a.c\0./b.c\0"
        );
        assert_eq!(x.messages.len(), 1);
        assert!(x.messages[0].info, "optional and missing: informational");
        assert!(x.messages[0].text.starts_with("Can't open include file '"));
        drop(x);
        assert!(!excl.exists() && !incl.exists());
    }

    #[test]
    fn bad_includes_are_reported_with_the_real_texts() {
        let d = tempfile::tempdir().unwrap();
        let place = ListPlace {
            tmp_dir: d.path(),
            prog: "sendbackup",
            disk: b"/x",
            dir: d.path(),
        };
        let x = build(
            &FileList::default(),
            &fl(&["nodot", "./nomatch*"], &[], false),
            &place,
        );
        let texts: Vec<_> = x
            .messages
            .iter()
            .map(|m| (m.code, m.info, m.text.clone()))
            .collect();
        assert_eq!(
            texts,
            vec![
                (
                    4_600_005,
                    false,
                    "include must start with './' (nodot)".to_owned()
                ),
                (
                    4_600_008,
                    false,
                    "Nothing found to include for disk '/x'".to_owned()
                ),
            ]
        );
        assert!(x.has_errors());
    }

    #[test]
    fn glob_metacharacters_in_the_directory_are_literal() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("we[ir]d *dir?");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("f1"), b"").unwrap();
        assert_eq!(glob_in(&dir, b"f*"), vec![b"f1".to_vec()]);
        assert!(glob_in(&dir, b"zz*").is_empty());
    }
}
