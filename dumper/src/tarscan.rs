//! A streaming reader of GNU tar member names, for the restore's safety check: every member
//! of every archive in a level chain is listed and judged **before** anything is extracted.
//!
//! Refused: absolute names, `..` components, hard-link targets with either, names (or
//! hard-link targets) that go through a symlink an earlier member of the chain created,
//! GNU incremental directory listings (`D` members) naming `..` or containing `/`, and
//! rename records (`R`/`T`) with absolute or `..` paths. A malformed archive (bad checksum,
//! truncated member, oversized meta data) is an error too: nothing is extracted from an
//! archive we cannot read ourselves.
//!
//! Understood: ustar and GNU headers (POSIX `prefix` only with the `ustar\0` magic), GNU
//! long names and long link names (`L`, `K`), PAX extended headers (`x`: `path`,
//! `linkpath`, `size`; `g` is skipped), GNU sparse members (`S`, with extension blocks),
//! base-256 sizes, and the end-of-archive zero blocks.
//!
//! What this module must not do: extract, or touch the file system. Parsing takes bytes in
//! chunks of any size ([`Scanner::feed`]), holds at most one header block plus the data of a
//! meta member (bounded by [`MAX_META`]), and never panics.

use std::collections::HashSet;

/// Largest long-name, PAX or dumpdir member we read.
pub const MAX_META: u64 = 64 * 1024 * 1024;

const BLOCK: usize = 512;

/// One archive member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The normalised path (no leading `./`, no trailing `/`; empty for the DLE root).
    pub path: Vec<u8>,
    /// The type flag (`0` file, `5` dir, `2` symlink, `1` hard link, `D` dumpdir, ...).
    pub kind: u8,
    /// The link target as written (symlinks and hard links).
    pub link: Option<Vec<u8>>,
}

/// Why an archive is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    /// A member name that would land outside the target directory.
    #[error("member {name:?} at byte {offset}: {reason}")]
    Unsafe {
        /// The name as written (lossy).
        name: String,
        /// Where its header starts.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// Not a tar archive we can read.
    #[error("not a readable tar archive at byte {offset}: {reason}")]
    Malformed {
        /// Where.
        offset: u64,
        /// Why.
        reason: String,
    },
}

/// Normalises a member path: refuses absolute paths and `..`, drops `.` and empty
/// components.
pub fn normalize(path: &[u8]) -> Result<Vec<u8>, &'static str> {
    if path.first() == Some(&b'/') {
        return Err("absolute path");
    }
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("`..` component"),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

/// The proper prefixes of a normalised path (`a`, `a/b` for `a/b/c`).
pub fn prefixes(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(move |(i, _)| &path[..i])
}

enum Want {
    Header,
    /// Skip `n` data bytes.
    Skip(u64),
    /// Collect `n` bytes of a meta member of `kind`, then skip `pad`.
    Meta {
        kind: u8,
        n: u64,
        pad: u64,
    },
    /// Extension blocks of a GNU sparse header.
    SparseExt,
    End,
}

/// The streaming scanner. Feed it an archive (or several, one after the other: the symlinks
/// seen persist, as they do on disk).
pub struct Scanner {
    want: Want,
    block: Vec<u8>,
    meta: Vec<u8>,
    offset: u64,
    header_offset: u64,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
    pax_size: Option<u64>,
    after_sparse: Option<Want>,
    zero_blocks: u32,
    symlinks: HashSet<Vec<u8>>,
    members: Vec<Member>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner::new()
    }
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    if let Some(&first) = field.first()
        && first & 0x80 != 0
    {
        // GNU base-256: big-endian, first byte's high bit is the marker.
        let mut v: u64 = u64::from(first & 0x3f);
        if first & 0x40 != 0 {
            return None; // negative
        }
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| *b != 0 && *b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

fn cstr(field: &[u8]) -> &[u8] {
    match memchr::memchr(0, field) {
        Some(n) => &field[..n],
        None => field,
    }
}

fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64)
}

impl Scanner {
    /// A scanner at the start of an archive.
    pub fn new() -> Scanner {
        Scanner {
            want: Want::Header,
            block: Vec::with_capacity(BLOCK),
            meta: Vec::new(),
            offset: 0,
            header_offset: 0,
            long_name: None,
            long_link: None,
            pax_path: None,
            pax_link: None,
            pax_size: None,
            after_sparse: None,
            zero_blocks: 0,
            symlinks: HashSet::new(),
            members: Vec::new(),
        }
    }

    /// Starts the next archive of a chain (symlinks seen so far are kept).
    pub fn next_archive(&mut self) {
        let symlinks = std::mem::take(&mut self.symlinks);
        let members = std::mem::take(&mut self.members);
        *self = Scanner::new();
        self.symlinks = symlinks;
        self.members = members;
    }

    /// The members seen so far, in order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    fn malformed(&self, reason: impl Into<String>) -> TarError {
        TarError::Malformed {
            offset: self.header_offset,
            reason: reason.into(),
        }
    }

    fn unsafe_name(&self, name: &[u8], reason: impl Into<String>) -> TarError {
        TarError::Unsafe {
            name: String::from_utf8_lossy(name).into_owned(),
            offset: self.header_offset,
            reason: reason.into(),
        }
    }

    /// Feeds the next bytes of the archive.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), TarError> {
        while !data.is_empty() {
            match &mut self.want {
                Want::End => {
                    // Anything after the end marker is padding (tar writes whole records).
                    self.offset += data.len() as u64;
                    return Ok(());
                }
                Want::Skip(n) => {
                    let k = (*n).min(data.len() as u64) as usize;
                    *n -= k as u64;
                    data = &data[k..];
                    self.offset += k as u64;
                    if *n == 0 {
                        self.want = Want::Header;
                    }
                }
                Want::Meta { kind, n, pad } => {
                    let k = (*n).min(data.len() as u64) as usize;
                    self.meta.extend_from_slice(&data[..k]);
                    *n -= k as u64;
                    data = &data[k..];
                    self.offset += k as u64;
                    if *n == 0 {
                        let (kind, pad) = (*kind, *pad);
                        self.want = if pad > 0 {
                            Want::Skip(pad)
                        } else {
                            Want::Header
                        };
                        self.meta_done(kind)?;
                    }
                }
                Want::Header | Want::SparseExt => {
                    let k = (BLOCK - self.block.len()).min(data.len());
                    self.block.extend_from_slice(&data[..k]);
                    data = &data[k..];
                    self.offset += k as u64;
                    if self.block.len() == BLOCK {
                        let block = std::mem::take(&mut self.block);
                        if matches!(self.want, Want::SparseExt) {
                            // byte 504: more extension blocks follow.
                            if block.get(504).copied().unwrap_or(0) == 0 {
                                self.want = self.after_sparse.take().unwrap_or(Want::Header);
                            }
                        } else {
                            self.header(&block)?;
                        }
                        self.block = block;
                        self.block.clear();
                    }
                }
            }
        }
        Ok(())
    }

    /// The end of the input: the archive must end between members.
    pub fn finish(&mut self) -> Result<(), TarError> {
        match self.want {
            Want::End => Ok(()),
            Want::Header if self.block.is_empty() && self.zero_blocks > 0 => Ok(()),
            // GNU tar always writes the zero blocks; an archive cut short is suspicious.
            Want::Header if self.block.is_empty() => {
                Err(self.malformed("no end-of-archive blocks"))
            }
            _ => Err(self.malformed("archive ends inside a member")),
        }
    }

    fn header(&mut self, b: &[u8]) -> Result<(), TarError> {
        self.header_offset = self.offset - BLOCK as u64;
        if b.iter().all(|&x| x == 0) {
            self.zero_blocks += 1;
            if self.zero_blocks >= 2 {
                self.want = Want::End;
            }
            return Ok(());
        }
        if self.zero_blocks > 0 {
            return Err(self.malformed("data after an end-of-archive block"));
        }
        // Checksum: the header with the checksum field read as spaces, unsigned (or signed,
        // as old tars wrote it).
        let stored =
            parse_octal(&b[148..156]).ok_or_else(|| self.malformed("bad checksum field"))?;
        let mut unsigned: u64 = 0;
        let mut signed: i64 = 0;
        for (i, &x) in b.iter().enumerate() {
            let x = if (148..156).contains(&i) { b' ' } else { x };
            unsigned += u64::from(x);
            signed += i64::from(x as i8);
        }
        if stored != unsigned && i64::try_from(stored).ok() != Some(signed) {
            return Err(self.malformed(format!(
                "header checksum {stored} does not match {unsigned}"
            )));
        }
        let kind = b[156];
        let size = match self.pax_size.take() {
            Some(s) => s,
            None => parse_octal(&b[124..136]).ok_or_else(|| self.malformed("bad size field"))?,
        };
        let magic = &b[257..263];
        let raw_name = cstr(&b[0..100]);
        let name: Vec<u8> = if magic == b"ustar\0" && b[345] != 0 {
            let mut n = cstr(&b[345..500]).to_vec();
            n.push(b'/');
            n.extend_from_slice(raw_name);
            n
        } else {
            raw_name.to_vec()
        };
        match kind {
            b'L' | b'K' | b'x' | b'g' => {
                if size > MAX_META {
                    return Err(self.malformed(format!("meta member of {size} bytes")));
                }
                self.meta.clear();
                let pad = padded(size) - size;
                self.want = if size == 0 {
                    self.meta_done(kind)?;
                    Want::Header
                } else {
                    Want::Meta { kind, n: size, pad }
                };
                return Ok(());
            }
            _ => {}
        }
        let name = self
            .pax_path
            .take()
            .or_else(|| self.long_name.take())
            .unwrap_or(name);
        let link = self
            .pax_link
            .take()
            .or_else(|| self.long_link.take())
            .or_else(|| {
                let l = cstr(&b[157..257]);
                (!l.is_empty()).then(|| l.to_vec())
            });
        let path = normalize(&name).map_err(|r| self.unsafe_name(&name, r))?;
        for p in prefixes(&path) {
            if self.symlinks.contains(p) {
                return Err(self.unsafe_name(
                    &name,
                    format!(
                        "goes through the symlink {:?} an earlier member created",
                        String::from_utf8_lossy(p)
                    ),
                ));
            }
        }
        match kind {
            b'1' => {
                let target = link.clone().unwrap_or_default();
                let t = normalize(&target)
                    .map_err(|r| self.unsafe_name(&name, format!("hard link target {r}")))?;
                if prefixes(&t)
                    .chain(std::iter::once(t.as_slice()))
                    .any(|p| self.symlinks.contains(p))
                {
                    return Err(self.unsafe_name(&name, "hard link target goes through a symlink"));
                }
                self.symlinks.remove(&path);
            }
            b'2' => {
                self.symlinks.insert(path.clone());
            }
            _ => {
                self.symlinks.remove(&path);
            }
        }
        // Like GNU tar's own reader, the size field is the data length whatever the type.
        let data_len = size;
        self.members.push(Member { path, kind, link });
        if kind == b'D' {
            if size > MAX_META {
                return Err(self.malformed(format!("directory listing of {size} bytes")));
            }
            self.meta.clear();
            let pad = padded(size) - size;
            self.want = if size == 0 {
                Want::Header
            } else {
                Want::Meta { kind, n: size, pad }
            };
            return Ok(());
        }
        let skip = padded(data_len);
        let after = if skip > 0 {
            Want::Skip(skip)
        } else {
            Want::Header
        };
        // GNU sparse: extension blocks come before the data.
        if kind == b'S' && b[482] != 0 {
            self.after_sparse = Some(after);
            self.want = Want::SparseExt;
        } else {
            self.want = after;
        }
        Ok(())
    }

    fn meta_done(&mut self, kind: u8) -> Result<(), TarError> {
        let data = std::mem::take(&mut self.meta);
        match kind {
            b'L' => self.long_name = Some(cstr(&data).to_vec()),
            b'K' => self.long_link = Some(cstr(&data).to_vec()),
            b'x' => self.pax(&data)?,
            b'D' => self.dumpdir(&data)?,
            _ => {}
        }
        Ok(())
    }

    /// `%d key=value\n` records.
    fn pax(&mut self, mut data: &[u8]) -> Result<(), TarError> {
        while !data.is_empty() {
            let sp = memchr::memchr(b' ', data).ok_or_else(|| self.malformed("bad PAX record"))?;
            let len: usize = std::str::from_utf8(&data[..sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .filter(|&l| l > sp + 1 && l <= data.len())
                .ok_or_else(|| self.malformed("bad PAX record length"))?;
            let rec = &data[sp + 1..len];
            let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
            if let Some(eq) = memchr::memchr(b'=', rec) {
                let (k, v) = (&rec[..eq], &rec[eq + 1..]);
                match k {
                    b"path" => self.pax_path = Some(v.to_vec()),
                    b"linkpath" => self.pax_link = Some(v.to_vec()),
                    b"size" => {
                        self.pax_size = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
                    }
                    _ => {}
                }
            }
            data = &data[len..];
        }
        Ok(())
    }

    /// A GNU incremental directory listing: `Y|N|D<name>\0` ... `\0`, with `R<from>\0T<to>\0`
    /// rename records.
    fn dumpdir(&mut self, data: &[u8]) -> Result<(), TarError> {
        let dir = self
            .members
            .last()
            .map(|m| String::from_utf8_lossy(&m.path).into_owned())
            .unwrap_or_default();
        for entry in data.split(|&b| b == 0) {
            let Some((&code, name)) = entry.split_first() else {
                continue;
            };
            match code {
                b'Y' | b'N' | b'D' if name.contains(&b'/') || name == b".." || name == b"." => {
                    return Err(self.unsafe_name(
                        name,
                        format!("bad name in the directory listing of {dir:?}"),
                    ));
                }
                b'R' | b'T' => {
                    normalize(name).map_err(|r| {
                        self.unsafe_name(name, format!("rename record in {dir:?}: {r}"))
                    })?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GNU-style header block.
    fn header(name: &[u8], kind: u8, size: u64, link: &[u8]) -> Vec<u8> {
        testkit::tar_header(name, kind, size, link).to_vec()
    }

    /// (name, type, data, link target)
    type Spec<'a> = (&'a [u8], u8, &'a [u8], &'a [u8]);

    fn archive(members: &[Spec<'_>]) -> Vec<u8> {
        let mut a = Vec::new();
        for (name, kind, data, link) in members {
            a.extend(header(name, *kind, data.len() as u64, link));
            a.extend_from_slice(data);
            a.resize(padded(a.len() as u64) as usize, 0);
        }
        a.extend(vec![0u8; BLOCK * 2]);
        a
    }

    fn scan(a: &[u8], chunk: usize) -> Result<Vec<Member>, TarError> {
        let mut s = Scanner::new();
        for c in a.chunks(chunk.max(1)) {
            s.feed(c)?;
        }
        s.finish()?;
        Ok(s.members().to_vec())
    }

    #[test]
    fn names_are_normalised_and_listed_in_any_chunking() {
        let a = archive(&[
            (b"./", b'5', b"", b""),
            (b"./a/", b'5', b"", b""),
            (b"./a/f.txt", b'0', b"hello", b""),
            (b"./l", b'2', b"", b"/etc"),
        ]);
        for chunk in [1, 7, 512, 100_000] {
            let m = scan(&a, chunk).unwrap();
            let names: Vec<&[u8]> = m.iter().map(|m| m.path.as_slice()).collect();
            assert_eq!(names, vec![&b""[..], b"a", b"a/f.txt", b"l"]);
        }
    }

    #[test]
    fn absolute_and_dotdot_names_are_refused() {
        for bad in [&b"/etc/passwd"[..], b"../x", b"a/../../x"] {
            let a = archive(&[(bad, b'0', b"x", b"")]);
            let e = scan(&a, 512).unwrap_err();
            assert!(matches!(e, TarError::Unsafe { .. }), "{e}");
        }
        let a = archive(&[(b"x", b'1', b"", b"../../etc/shadow")]);
        assert!(scan(&a, 512).unwrap_err().to_string().contains("hard link"));
    }

    #[test]
    fn members_through_an_archived_symlink_are_refused_even_in_a_later_archive() {
        let a = archive(&[(b"./evil", b'2', b"", b"/etc")]);
        let b = archive(&[(b"./evil/passwd", b'0', b"x", b"")]);
        let mut s = Scanner::new();
        s.feed(&a).unwrap();
        s.finish().unwrap();
        s.next_archive();
        let e = s.feed(&b).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        // A directory replacing the symlink makes its contents fine again.
        let c = archive(&[(b"./evil/", b'5', b"", b""), (b"./evil/x", b'0', b"", b"")]);
        let mut s = Scanner::new();
        s.feed(&a).unwrap();
        s.finish().unwrap();
        s.next_archive();
        s.feed(&c).unwrap();
        s.finish().unwrap();
    }

    #[test]
    fn gnu_long_names_and_dumpdirs_are_read() {
        let long = b"d/".repeat(80);
        let mut name = long.clone();
        name.extend_from_slice(b"file");
        let mut ln = name.clone();
        ln.push(0);
        let a = archive(&[
            (b"././@LongLink", b'L', &ln, b""),
            (b"truncated", b'0', b"data", b""),
            (b"./dir/", b'D', b"Yfile\0Ddir\0\0", b""),
        ]);
        let m = scan(&a, 33).unwrap();
        assert_eq!(m[0].path, normalize(&name).unwrap());
        assert_eq!(m[1].kind, b'D');
        let bad = archive(&[(b"./dir/", b'D', b"Y../x\0\0", b"")]);
        assert!(scan(&bad, 512).is_err());
    }

    #[test]
    fn corrupt_or_truncated_archives_are_errors() {
        let mut a = archive(&[(b"f", b'0', b"abc", b"")]);
        a[0] ^= 1;
        assert!(matches!(scan(&a, 512), Err(TarError::Malformed { .. })));
        let a = archive(&[(b"f", b'0', &[7u8; 2000], b"")]);
        assert!(scan(&a[..1024], 512).is_err());
    }

    #[test]
    fn committed_real_archives_get_the_expected_verdicts() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/dumper_tar_scan");
        for (file, ok) in [
            ("gnu-plain.tar", true),
            ("gnu-incremental.tar", true),
            ("pax.tar", true),
            ("ustar.tar", true),
            ("sparse.tar", true),
            ("absolute.tar", false),
            ("truncated.tar", false),
        ] {
            let data = std::fs::read(dir.join(file)).unwrap();
            let r = scan(&data, 1000);
            assert_eq!(r.is_ok(), ok, "{file}: {r:?}");
        }
    }

    #[test]
    fn real_tar_output_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t/sub")).unwrap();
        std::fs::write(dir.path().join("t/sub/f"), b"x").unwrap();
        std::os::unix::fs::symlink("sub/f", dir.path().join("t/link")).unwrap();
        let out = std::process::Command::new("tar")
            .args(["--create", "--file=-"])
            .arg(format!(
                "--listed-incremental={}",
                dir.path().join("snap").display()
            ))
            .arg("-C")
            .arg(dir.path().join("t"))
            .arg(".")
            .output();
        let Ok(out) = out else {
            eprintln!("tar is not installed; skipped");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m = scan(&out.stdout, 4096).unwrap();
        assert!(m.iter().any(|m| m.path == b"sub/f"));
        assert!(m.iter().any(|m| m.kind == b'D'));
    }
}
