//! The tricky test tree (names with spaces, tabs, quotes, UTF-8; links; modes; owners), its
//! comparison with a restored copy, and extracting a GNU tar stream into a directory.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Noise, pipe_through};

/// `n` small DLEs `dle00`, `dle01`... under `data`, readable by everyone (a text file and a
/// binary one in a subdirectory each).
pub fn small_dles(data: &super::Scratch, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let d = data.join(format!("dle{i:02}"));
            fs::create_dir_all(d.join("sub")).expect("mkdir");
            fs::write(d.join("a.txt"), format!("dle {i}\n").repeat(100)).expect("write");
            fs::write(d.join("sub/b.bin"), vec![i as u8; 20_000]).expect("write");
            d
        })
        .collect()
}

/// A directory under `data` named after each of `names`, in order, filled by `fill`.
pub fn dirs_named<'a>(
    data: &super::Scratch,
    names: impl IntoIterator<Item = &'a str>,
    fill: impl Fn(&Path),
) -> Vec<PathBuf> {
    names
        .into_iter()
        .map(|n| {
            let d = data.join(n);
            fill(&d);
            d
        })
        .collect()
}

/// The tricky tree (see [`make_tricky_tree`]) plus `compressible.txt`, `lines` numbered
/// lines of text: a tree worth compressing.
pub fn make_compressible_tree(root: &Path, lines: usize) {
    make_tricky_tree(root);
    let text: String = (0..lines)
        .map(|i| format!("line {i} of a file that compresses well\n"))
        .collect();
    fs::write(root.join("compressible.txt"), text).expect("write");
}

/// Builds the test tree: names with spaces, a tab, quotes, a backslash and UTF-8, a symlink,
/// empty file and directory, a 0700 directory, a 0600 file owned by root, a binary file, a
/// file with an old mtime. Deterministic.
pub fn make_tricky_tree(root: &Path) {
    fs::create_dir_all(root.join("sub dir/deeper")).expect("mkdir");
    fs::create_dir_all(root.join("empty dir")).expect("mkdir");
    let write = |rel: &str, data: &[u8]| fs::write(root.join(rel), data).expect("write");
    write("plain.txt", b"hello world\n");
    write("file with spaces.txt", b"spaces in name\n");
    write(
        "h\u{e9}llo w\u{f6}rld \u{2713}.txt",
        "unicode é ü 日本\n".as_bytes(),
    );
    write("sub dir/nested file.txt", b"nested\n");
    write("sub dir/deeper/x", b"deeper\n");
    write("empty-file", b"");
    write("tab\tin name.txt", b"tab\n");
    write("quote\"s and 'apos'.txt", b"quote\n");
    write("back\\slash.txt", b"backslash\n");
    let numbers: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    write("numbers.txt", numbers.as_bytes());
    write("random.bin", &Noise::new(42).low_bytes(65536));
    symlink("plain.txt", root.join("link-to-plain")).expect("symlink");
    fs::set_permissions(root.join("plain.txt"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::set_permissions(root.join("sub dir"), fs::Permissions::from_mode(0o700)).expect("chmod");
    set_mtime(&root.join("plain.txt"), 1_704_164_645); // 2024-01-02 03:04:05 UTC
}

/// Sets a file's mtime (and atime) to `secs` since the epoch.
pub fn set_mtime(path: &Path, secs: i64) {
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = [t, t];
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: c is a valid NUL-terminated path and times points at two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

/// One entry of a tree manifest.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    link: Option<PathBuf>,
    content: Option<Vec<u8>>,
}

/// Every entry under `root` (relative path → entry), directories' mtimes included.
pub fn manifest(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| e.expect("dirent").path())
            .collect();
        names.sort();
        for p in names {
            let md = fs::symlink_metadata(&p).expect("lstat");
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_file() {
                'f'
            } else {
                'o'
            };
            let rel = p.strip_prefix(root).expect("prefix").to_path_buf();
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    size: if kind == 'f' { md.size() } else { 0 },
                    mtime: md.mtime(),
                    link: (kind == 'l').then(|| fs::read_link(&p).expect("readlink")),
                    content: (kind == 'f').then(|| fs::read(&p).expect("read")),
                },
            );
            if kind == 'd' {
                walk(root, &p, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// Asserts that two trees are identical: names, types, modes, owners, sizes, mtimes (seconds),
/// symlink targets and contents. Directory mtimes are compared too unless `dir_mtimes` is false
/// (extracting into a directory changes its mtime, so callers that restore on top of an
/// existing tree pass false).
pub fn assert_same_tree(original: &Path, restored: &Path, dir_mtimes: bool) {
    let a = manifest(original);
    let b = manifest(restored);
    let mut problems = Vec::new();
    for (path, ea) in &a {
        match b.get(path) {
            None => problems.push(format!("missing in restore: {path:?}")),
            Some(eb) => {
                let same = if ea.kind == 'd' && !dir_mtimes {
                    Entry {
                        mtime: 0,
                        ..clone_entry(ea)
                    } == Entry {
                        mtime: 0,
                        ..clone_entry(eb)
                    }
                } else {
                    ea == eb
                };
                if !same {
                    problems.push(format!(
                        "differs: {path:?}: original {} restored {}",
                        describe(ea),
                        describe(eb)
                    ));
                }
            }
        }
    }
    for path in b.keys() {
        if !a.contains_key(path) {
            problems.push(format!("extra in restore: {path:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "trees {} and {} differ:\n  {}",
        original.display(),
        restored.display(),
        problems.join("\n  ")
    );
}

fn clone_entry(e: &Entry) -> Entry {
    Entry {
        kind: e.kind,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        size: e.size,
        mtime: e.mtime,
        link: e.link.clone(),
        content: e.content.clone(),
    }
}

fn describe(e: &Entry) -> String {
    format!(
        "{} mode {:o} uid {} gid {} size {} mtime {} link {:?} content {}",
        e.kind,
        e.mode,
        e.uid,
        e.gid,
        e.size,
        e.mtime,
        e.link,
        e.content.as_ref().map_or(0, Vec::len)
    )
}

/// Extracts a GNU tar stream into `into` as root, keeping permissions, owners and
/// incremental deletions.
pub fn extract_tar(tar: &[u8], into: &Path) {
    let out = pipe_through(
        Command::new("tar")
            .args([
                "--extract",
                "--preserve-permissions",
                "--same-owner",
                "--listed-incremental=/dev/null",
                "--file",
                "-",
                "-C",
            ])
            .arg(into)
            .stderr(Stdio::piped()),
        tar,
    );
    assert!(
        out.status.success(),
        "tar -x into {} failed: {}",
        into.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A GNU tar that stays quiet for `secs` before a real archive (the estimate and --version
/// calls go straight through): a dump whose connection carries nothing that long.
pub fn quiet_tar(dir: &Path, secs: u32) -> PathBuf {
    let path = dir.join("quiet-tar");
    fs::write(
        &path,
        format!("#!/bin/sh\ncase \"$*\" in *\"--file=-\"*) sleep {secs};; esac\nexec /usr/bin/tar \"$@\"\n"),
    )
    .expect("write quiet-tar");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}
