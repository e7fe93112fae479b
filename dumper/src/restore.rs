//! `dumper restore CONFIG --host H --disk D [--level N | --date YYYY-MM-DD] --into DIR`:
//! extracts a level chain from the holding disk and the volumes.
//!
//! A dump is read from its holding file while it exists, else from its copy on volumes
//! (issue 15): the parts the catalog lists, found by label in the changer's slots, each
//! checked (a `SPLIT_FILE` of that dump, the expected part) and read after its header.
//!
//! The chain comes from the catalog ([`crate::catalog::chain`]): by default the latest full
//! plus the latest incremental of each next level made after it; `--date` restores the
//! state as of that day, `--level N` stops the chain at level N. Each holding file is
//! checked (its 32 KiB header must be a dump of that host, disk and level), then **listed
//! first** with our own tar reader ([`crate::tarscan`]): absolute names, `..`, hard links
//! out of DIR, members that go through a symlink (one the chain creates, or one already in
//! DIR) refuse the whole restore before anything is written. Then GNU tar extracts each
//! dump in order with `--listed-incremental=/dev/null` (incremental semantics: what was
//! deleted between the full and the incremental goes away), reading the file after its
//! header, its stages undone on the way (issue 12): decryption, then uncompression (gzip
//! in-process, a custom program with `-d`). A filter program runs only if a dumptype of the
//! configuration names it: the header of a file on the holding disk does not decide what
//! the restoring user runs.
//!
//! Restore runs with the caller's privileges (as root it restores owners; it does not switch
//! to the dumpuser). What this module must not do: contact clients, or write anywhere but
//! DIR.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use filters::gunzip::GunzipReader;
use filters::program::FilterCommand;
use proto::header::{DumpHeader, FileKind, HEADER_SIZE};

use crate::catalog::{self, Catalog, ChainSelector, DumpRecord};
use crate::clock;
use crate::plan;
use crate::taper::changer::Changer;
use crate::taper::{store, volume};
use crate::tarscan::{Scanner, prefixes};

/// What to restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// `CONFIG`.
    pub config: String,
    /// `--host`.
    pub host: String,
    /// `--disk`.
    pub disk: String,
    /// `--level N`.
    pub level: Option<i32>,
    /// `--date YYYY-MM-DD`.
    pub date: Option<String>,
    /// `--into DIR`.
    pub into: PathBuf,
    /// GNU tar.
    pub tar: PathBuf,
}

/// A restored dump.
#[derive(Clone, Debug)]
pub struct Restored {
    /// Its catalog record.
    pub record: DumpRecord,
    /// Members extracted.
    pub members: usize,
    /// Where it was read from (the holding file, or the volumes and file numbers).
    pub source: String,
}

/// Where a dump is read from.
#[derive(Clone, Debug)]
enum Source {
    /// Its holding file.
    Holding(PathBuf),
    /// Its parts on volumes: (part file, part number), in order.
    Volume(Vec<(PathBuf, u32)>, String),
}

impl Source {
    fn display(&self) -> String {
        match self {
            Source::Holding(p) => p.display().to_string(),
            Source::Volume(_, d) => d.clone(),
        }
    }
}

/// The part files of a dump's copy on volumes.
fn volume_source(
    catalog: &Catalog,
    changer: Option<&Changer>,
    r: &DumpRecord,
) -> Result<Source, RestoreError> {
    let parts = store::parts(catalog.connection(), r.id)
        .map_err(|e| RestoreError::Other(format!("catalog: {e}")))?;
    let Some(changer) = changer else {
        return Err(RestoreError::NotFound(
            "the configuration has no changer".into(),
        ));
    };
    let mut files = Vec::new();
    let mut desc = Vec::new();
    let mut slots: std::collections::HashMap<String, PathBuf> = std::collections::HashMap::new();
    for p in &parts {
        let dir = match slots.get(&p.label) {
            Some(d) => d.clone(),
            None => {
                let slot = changer
                    .find(&p.label)
                    .map_err(|e| RestoreError::Other(e.to_string()))?
                    .ok_or_else(|| {
                        RestoreError::NotFound(format!(
                            "volume {} (part {} of {}:{} level {}) is in no slot of {}",
                            p.label,
                            p.part,
                            r.host,
                            String::from_utf8_lossy(&r.disk),
                            r.level,
                            changer.name
                        ))
                    })?;
                slots.insert(p.label.clone(), slot.dir.clone());
                slot.dir
            }
        };
        let name = volume::part_file_name(p.filenum, &r.host, &r.disk, r.level);
        files.push((dir.join(std::ffi::OsStr::from_bytes(&name)), p.part));
        desc.push(format!("{}:{}", p.label, p.filenum));
    }
    if files.is_empty() {
        return Err(RestoreError::NotFound(format!(
            "{}:{} level {} of {}: neither its holding file nor a copy on volumes exists",
            r.host,
            String::from_utf8_lossy(&r.disk),
            r.level,
            r.timestamp
        )));
    }
    Ok(Source::Volume(files, format!("volume {}", desc.join(" "))))
}

/// Why a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Nothing to restore.
    #[error("{0}")]
    NotFound(String),
    /// A holding file is not what the catalog says.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The archive would write outside DIR (nothing was extracted).
    #[error("{path}: refusing to restore: {reason}")]
    Unsafe {
        /// The holding file.
        path: String,
        /// Why.
        reason: String,
    },
    /// tar failed.
    #[error("tar extracting {path} into {into}: {reason}")]
    Tar {
        /// The holding file.
        path: String,
        /// DIR.
        into: String,
        /// tar's message.
        reason: String,
    },
    /// Anything else (configuration, catalog).
    #[error("{0}")]
    Other(String),
}

/// Opens a file of a dump positioned after its header.
fn open_one(path: &Path) -> Result<(DumpHeader, BufReader<File>), RestoreError> {
    let bad = |reason: String| RestoreError::BadFile {
        path: path.display().to_string(),
        reason,
    };
    let f = File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut r = BufReader::with_capacity(1024 * 1024, f);
    let mut head = vec![0u8; HEADER_SIZE];
    r.read_exact(&mut head)
        .map_err(|e| bad(format!("reading the 32 KiB header: {e}")))?;
    let h = DumpHeader::parse(&head).map_err(|e| bad(format!("header: {e}")))?;
    Ok((h, r))
}

/// Opens a dump (its holding file, or its parts one after the other) positioned after its
/// header, with its compression and encryption undone.
fn open_dump(
    src: &Source,
    programs: &TrustedPrograms,
) -> Result<(DumpHeader, Box<dyn Read + Send>), RestoreError> {
    let (h, r) = open_raw(src)?;
    let body = undo(&h, r, programs).map_err(|e| RestoreError::BadFile {
        path: src.display(),
        reason: e.to_string(),
    })?;
    Ok((h, body))
}

/// Opens a dump positioned after its header, as stored.
fn open_raw(src: &Source) -> Result<(DumpHeader, Box<dyn Read + Send>), RestoreError> {
    let (h, r): (DumpHeader, Box<dyn Read + Send>) = match src {
        Source::Holding(path) => {
            let (mut h, r) = open_one(path)?;
            // A holding file a crash left linked into a volume (taper::writer::link_part).
            if h.kind == (FileKind::SplitFile { part: 1, total: -1 }) {
                h.kind = FileKind::File;
            }
            if h.kind != FileKind::File {
                return Err(RestoreError::BadFile {
                    path: path.display().to_string(),
                    reason: format!("not a whole dump ({:?})", h.kind),
                });
            }
            (h, Box::new(r))
        }
        Source::Volume(parts, _) => {
            let mut first: Option<DumpHeader> = None;
            let mut chained: Box<dyn Read + Send> = Box::new(io::empty());
            for (path, part) in parts {
                let (h, r) = open_one(path)?;
                let bad = |reason: String| RestoreError::BadFile {
                    path: path.display().to_string(),
                    reason,
                };
                match h.kind {
                    FileKind::SplitFile { part: p, .. } if p == *part as i32 => {}
                    k => {
                        return Err(bad(format!(
                            "expected part {part} of a split dump, found {k:?}"
                        )));
                    }
                }
                if let Some(f) = &first
                    && (f.host != h.host
                        || f.disk != h.disk
                        || f.level != h.level
                        || f.datestamp != h.datestamp)
                {
                    return Err(bad("a part of another dump".into()));
                }
                first.get_or_insert(h);
                chained = Box::new(chained.chain(r));
            }
            let Some(mut h) = first else {
                return Err(RestoreError::NotFound("no parts".into()));
            };
            h.kind = FileKind::File;
            (h, chained)
        }
    };
    Ok((h, r))
}

/// The filter programs a restore may run: those the configuration's dumptypes name (a
/// holding file's header is data; a program it names is run only if the configuration
/// could have used it, issue 12).
#[derive(Clone, Debug, Default)]
pub struct TrustedPrograms(Vec<Vec<u8>>);

impl TrustedPrograms {
    /// Every `client_custom_compress`, `server_custom_compress`, `client_encrypt` and
    /// `server_encrypt` of `config`'s dumptypes.
    pub fn of(config: &conf::Config) -> TrustedPrograms {
        let mut v = Vec::new();
        for dt in config.dumptypes.iter() {
            for p in [
                &dt.client_custom_compress,
                &dt.server_custom_compress,
                &dt.client_encrypt,
                &dt.server_encrypt,
            ] {
                if p.starts_with('/') {
                    v.push(p.as_bytes().to_vec());
                }
            }
        }
        v.sort();
        v.dedup();
        TrustedPrograms(v)
    }

    fn check(&self, program: &[u8]) -> Result<PathBuf, UndoError> {
        if !self.0.iter().any(|p| p == program) {
            return Err(UndoError::Untrusted(
                String::from_utf8_lossy(program).into_owned(),
            ));
        }
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(program)))
    }
}

/// Why a dump's filter stages cannot be undone (the reason of a [`RestoreError::BadFile`]).
#[derive(Debug, thiserror::Error)]
enum UndoError {
    /// The header names a program no dumptype names: a client-written header must not
    /// choose what the server runs.
    #[error(
        "its header names the filter program {0:?}, which no dumptype of the configuration names; not running it (use amrestore)"
    )]
    Untrusted(String),
    #[error("encrypted, but its header names no program")]
    NoDecryptProgram,
    #[error("compressed with a custom program its header does not name")]
    NoUncompressProgram,
    #[error("compressed with {0:?}, which dumper restore cannot undo (use amrestore)")]
    UnknownCompression(String),
    /// The pipe or the thread feeding the program.
    #[error("{0}: {1}")]
    Start(&'static str, io::Error),
}

/// The dump's payload with its stages undone in reverse (spec §11.5): decryption (the
/// header's `server_encrypt`/`client_encrypt` with its decrypt option), then
/// uncompression (gzip in-process, or the custom program with `-d`).
fn undo(
    h: &DumpHeader,
    r: Box<dyn Read + Send>,
    programs: &TrustedPrograms,
) -> Result<Box<dyn Read + Send>, UndoError> {
    let mut body = r;
    let f = &h.filters;
    if f.encrypt_suffix.as_deref().is_some_and(|s| s != b"N") {
        let (program, option) = match (&f.server.encrypt, &f.client.encrypt) {
            (Some(p), _) => (p, &f.server.decrypt_option),
            (None, Some(p)) => (p, &f.client.decrypt_option),
            (None, None) => return Err(UndoError::NoDecryptProgram),
        };
        let option = option.as_deref().unwrap_or(b"-d");
        let cmd = FilterCommand::decrypt(
            programs.check(program)?,
            std::ffi::OsStr::from_bytes(option),
        );
        body = Box::new(ProgramReader::start(cmd, body)?);
    }
    match f.comp_suffix.as_deref() {
        None | Some(b"N") => {}
        Some(b".gz") => body = Box::new(GunzipReader::new(body)),
        Some(b"cust") => {
            let program = f
                .server
                .custom_compress
                .as_ref()
                .or(f.client.custom_compress.as_ref())
                .ok_or(UndoError::NoUncompressProgram)?;
            let cmd = FilterCommand::uncompress(programs.check(program)?);
            body = Box::new(ProgramReader::start(cmd, body)?);
        }
        Some(other) => {
            return Err(UndoError::UnknownCompression(
                String::from_utf8_lossy(other).into_owned(),
            ));
        }
    }
    Ok(body)
}

/// A filter program's output as a reader: a thread feeds it `input`; its exit status is
/// checked at the end of its output (a failure is a read error naming it).
struct ProgramReader {
    out: io::PipeReader,
    run: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl ProgramReader {
    fn start(
        cmd: FilterCommand,
        mut input: Box<dyn Read + Send>,
    ) -> Result<ProgramReader, UndoError> {
        let (out, mut w) = io::pipe().map_err(|e| UndoError::Start("pipe", e))?;
        let run = std::thread::Builder::new()
            .name("restore-filter".into())
            .spawn(move || {
                cmd.run(&mut input, &mut w)
                    .map(|_| ())
                    .map_err(io::Error::other)
            })
            .map_err(|e| UndoError::Start("thread", e))?;
        Ok(ProgramReader {
            out,
            run: Some(run),
        })
    }
}

impl Read for ProgramReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.out.read(buf)?;
        if n == 0
            && !buf.is_empty()
            && let Some(t) = self.run.take()
        {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("the filter thread failed")),
            }
        }
        Ok(n)
    }
}

/// Lists and checks one archive; returns how many members it has.
fn scan(
    src: &Source,
    programs: &TrustedPrograms,
    scanner: &mut Scanner,
    into: &Path,
) -> Result<usize, RestoreError> {
    let path = src.display();
    let (_, mut body) = open_dump(src, programs)?;
    let before = scanner.members().len();
    let mut buf = vec![0u8; 1024 * 1024];
    let unsafe_err = |reason: String| RestoreError::Unsafe {
        path: path.clone(),
        reason,
    };
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(RestoreError::BadFile {
                    path: path.clone(),
                    reason: e.to_string(),
                });
            }
        };
        scanner
            .feed(&buf[..n])
            .map_err(|e| unsafe_err(e.to_string()))?;
    }
    scanner.finish().map_err(|e| unsafe_err(e.to_string()))?;
    // Symlinks already in DIR: a member may not go through one, unless the chain itself
    // makes that path a directory first (tar then replaces the symlink).
    let members = &scanner.members()[before..];
    let mut dirs = std::collections::HashSet::new();
    for m in members {
        for p in prefixes(&m.path) {
            if dirs.contains(p) {
                continue;
            }
            let on_disk = into.join(std::ffi::OsStr::from_bytes(p));
            if std::fs::symlink_metadata(&on_disk).is_ok_and(|md| md.file_type().is_symlink()) {
                return Err(unsafe_err(format!(
                    "member {:?} goes through the symlink {} already in the target directory",
                    String::from_utf8_lossy(&m.path),
                    on_disk.display()
                )));
            }
        }
        if matches!(m.kind, b'5' | b'D') {
            dirs.insert(m.path.clone());
        }
    }
    let n = members.len();
    scanner.next_archive();
    Ok(n)
}

/// Extracts one dump with GNU tar.
fn extract(
    src: &Source,
    programs: &TrustedPrograms,
    into: &Path,
    tar: &Path,
) -> Result<(), RestoreError> {
    let path = src.display();
    let (_, mut body) = open_dump(src, programs)?;
    let mut cmd = Command::new(tar);
    cmd.arg("--extract")
        .arg("--file=-")
        .arg("--listed-incremental=/dev/null")
        .arg("--preserve-permissions")
        .arg("--directory")
        .arg(into)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if crate::privs::is_root() {
        cmd.arg("--same-owner");
    } else {
        cmd.arg("--no-same-owner");
    }
    let tar_err = |reason: String| RestoreError::Tar {
        path: path.clone(),
        into: into.display().to_string(),
        reason,
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| tar_err(format!("cannot run {}: {e}", tar.display())))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| tar_err("no stdin".into()))?;
    let feeder = std::thread::spawn(move || -> io::Result<()> {
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = body.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            stdin.write_all(&buf[..n])?;
        }
    });
    let out = child
        .wait_with_output()
        .map_err(|e| tar_err(e.to_string()))?;
    let fed = feeder.join();
    if !out.status.success() {
        return Err(tar_err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    match fed {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(tar_err(format!("reading the dump: {e}"))),
        Err(_) => Err(tar_err("the reader thread failed".into())),
    }
}

/// Finds the chain in the catalog, checks it, extracts it into `into`.
pub fn restore(o: &RestoreOptions) -> Result<Vec<Restored>, RestoreError> {
    let location = plan::locate(&o.config);
    let config = conf::Config::load(&location)
        .map_err(|e| RestoreError::Other(e.to_string()))?
        .value;
    let cat_path = Catalog::path_for(&config.path(&config.infofile));
    if !cat_path.exists() {
        return Err(RestoreError::NotFound(format!(
            "no catalog at {} (has `dumper run {}` run yet?)",
            cat_path.display(),
            o.config
        )));
    }
    let catalog = Catalog::open(&cat_path).map_err(|e| RestoreError::Other(e.to_string()))?;
    let history = catalog
        .history(&o.host, o.disk.as_bytes())
        .map_err(|e| RestoreError::Other(e.to_string()))?;
    let until_date = match &o.date {
        Some(d) => Some(
            clock::parse_date(d)
                .ok_or_else(|| RestoreError::Other(format!("--date {d:?}: expected YYYY-MM-DD")))?,
        ),
        None => None,
    };
    let sel = ChainSelector {
        max_level: o.level,
        until_date,
    };
    // A dump counts while its holding file or its copy on volumes exists (issue 15).
    let taped = crate::taper::night::taped_dumps(&catalog);
    let taped_paths: std::collections::HashSet<&Path> = history
        .iter()
        .filter(|r| taped.contains(&r.id))
        .filter_map(|r| r.holding_file.as_deref())
        .collect();
    let chain = catalog::chain(&history, &sel, |p| p.exists() || taped_paths.contains(p));
    let changer = Changer::from_config(&config).ok().flatten();
    let programs = TrustedPrograms::of(&config);
    if chain.is_empty() {
        let known: Vec<String> = catalog
            .dles()
            .unwrap_or_default()
            .into_iter()
            .map(|(h, d)| format!("{h}:{}", String::from_utf8_lossy(&d)))
            .collect();
        return Err(RestoreError::NotFound(format!(
            "no complete full dump of {}:{} in {}{} (dumped: {})",
            o.host,
            o.disk,
            cat_path.display(),
            match &o.date {
                Some(d) => format!(" on or before {d}"),
                None => String::new(),
            },
            if known.is_empty() {
                "nothing yet".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    if let Some(l) = o.level
        && chain.last().map(|r| r.level) != Some(l)
    {
        return Err(RestoreError::NotFound(format!(
            "no level {l} dump of {}:{} on top of its latest full",
            o.host, o.disk
        )));
    }
    std::fs::create_dir_all(&o.into)
        .map_err(|e| RestoreError::Other(format!("cannot create {}: {e}", o.into.display())))?;
    // Pass 1: check every file and every member of the chain.
    let mut scanner = Scanner::new();
    let mut counts = Vec::new();
    let mut sources = Vec::new();
    for r in &chain {
        let src = match r.holding_file.clone().filter(|p| p.exists()) {
            Some(p) => Source::Holding(p),
            None => volume_source(&catalog, changer.as_ref(), r)?,
        };
        let path = src.display();
        let (h, _) = open_raw(&src)?;
        if h.host.as_bytes() != r.host.as_bytes()
            || h.disk.as_bytes() != r.disk.as_slice()
            || h.level != r.level
        {
            return Err(RestoreError::BadFile {
                path,
                reason: format!(
                    "its header says {}:{} level {}, the catalog {}:{} level {}",
                    h.host,
                    h.disk,
                    h.level,
                    r.host,
                    String::from_utf8_lossy(&r.disk),
                    r.level
                ),
            });
        }
        counts.push(scan(&src, &programs, &mut scanner, &o.into)?);
        sources.push(src);
    }
    // Pass 2: extract, full first.
    let mut out = Vec::new();
    for ((r, n), src) in chain.into_iter().zip(counts).zip(sources) {
        extract(&src, &programs, &o.into, &o.tar)?;
        out.push(Restored {
            record: r,
            members: n,
            source: src.display(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Status;
    use proto::dle::Dle;
    use proto::mesg::InfoFields;

    // issue 12: a holding file's header names the programs that undo its stages; restore
    // runs only those a dumptype names, and undoes gzip in-process.
    #[test]
    fn undo_runs_only_programs_the_configuration_names() {
        let dle = Dle {
            program: "GNUTAR".into(),
            disk: Some("/d".into()),
            compress: proto::dle::Compress::ServerCustom("/bin/cat".into()),
            ..Dle::default()
        };
        let header = |dle: &Dle| {
            DumpHeader::for_dump(
                b"20260101000000",
                b"h",
                dle,
                0,
                &InfoFields::default(),
                None,
            )
        };
        let h = header(&dle);
        let input = || Box::new(io::Cursor::new(b"payload".to_vec())) as Box<dyn Read + Send>;
        let e = undo(&h, input(), &TrustedPrograms::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("\"/bin/cat\", which no dumptype"), "{e}");
        // `/bin/cat -d` is not cat's undo, but it shows the trusted program runs.
        let trusted = TrustedPrograms(vec![b"/bin/cat".to_vec()]);
        let mut out = Vec::new();
        let r = undo(&h, input(), &trusted).unwrap().read_to_end(&mut out);
        assert!(r.is_err(), "cat -d fails: {out:?}");

        let gz = filters::gzip::compress(
            &filters::gzip::GzipPool::new(std::num::NonZeroUsize::new(1).unwrap()),
            filters::gzip::Level::Fast,
            b"payload",
        )
        .unwrap();
        let dle = Dle {
            compress: proto::dle::Compress::ServerFast,
            ..dle
        };
        let h = header(&dle);
        let mut out = Vec::new();
        undo(&h, Box::new(io::Cursor::new(gz)), &trusted)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"payload");
    }

    /// A configuration whose catalog holds one level-0 dump of `tar` bytes.
    fn setup(dir: &Path, tar: &[u8]) -> PathBuf {
        let conf = dir.join("amanda.conf");
        fs::write(
            &conf,
            format!(
                "infofile \"{0}/curinfo\"\nindexdir \"{0}/index\"\ndefine holdingdisk hd {{\n directory \"{0}/hold\"\n}}\nholdingdisk \"hd\"\n",
                dir.display()
            ),
        )
        .unwrap();
        let info = InfoFields {
            backup: Some("/bin/tar".into()),
            recover_cmd: Some("/bin/tar -xpGf - ...".into()),
            ..InfoFields::default()
        };
        let dle = Dle {
            program: "GNUTAR".into(),
            disk: Some("/d".into()),
            ..Dle::default()
        };
        let header = DumpHeader::for_dump(b"20260101000000", b"h", &dle, 0, &info, None)
            .build()
            .unwrap();
        let hold = dir.join("hold/20260101000000/h._d.0");
        fs::create_dir_all(hold.parent().unwrap()).unwrap();
        fs::write(&hold, [header, tar.to_vec()].concat()).unwrap();
        let mut cat = Catalog::open(&Catalog::path_for(&dir.join("curinfo"))).unwrap();
        let run = cat.begin_run("20260101000000", "t", 0).unwrap();
        let mut r = DumpRecord::started("h", b"/d", 0, "20260101000000", 0);
        r.status = Status::Done;
        r.holding_file = Some(hold);
        cat.insert_dump(run, &r).unwrap();
        conf
    }

    fn tar_of(args: &[&str], dir: &Path) -> Option<Vec<u8>> {
        let out = Command::new("tar")
            .args(["--create", "--file=-"])
            .args(args)
            .current_dir(dir)
            .output()
            .ok()?;
        out.status.success().then_some(out.stdout)
    }

    fn opts(conf: &Path, into: &Path) -> RestoreOptions {
        RestoreOptions {
            config: conf.display().to_string(),
            host: "h".into(),
            disk: "/d".into(),
            level: None,
            date: None,
            into: into.to_path_buf(),
            tar: PathBuf::from("tar"),
        }
    }

    use std::fs;

    /// `<dir>/src` holding `file` (and its directories) with `content`.
    fn source_tree(dir: &Path, file: &str, content: &[u8]) -> PathBuf {
        let src = dir.join("src");
        let path = src.join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
        src
    }

    #[test]
    fn a_holding_file_restores_through_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let src = source_tree(dir.path(), "sub/f", b"content");
        let snap = dir.path().join("snap");
        let Some(tar) = tar_of(
            &[&format!("--listed-incremental={}", snap.display()), "."],
            &src,
        ) else {
            eprintln!("no GNU tar; skipped");
            return;
        };
        let conf = setup(dir.path(), &tar);
        let into = dir.path().join("out");
        let done = restore(&opts(&conf, &into)).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(fs::read(into.join("sub/f")).unwrap(), b"content");
    }

    #[test]
    fn an_archive_with_absolute_names_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        fs::write(&victim, b"x").unwrap();
        let Some(tar) = tar_of(
            &["--absolute-names", &victim.display().to_string()],
            dir.path(),
        ) else {
            return;
        };
        let conf = setup(dir.path(), &tar);
        let into = dir.path().join("out");
        let err = restore(&opts(&conf, &into)).unwrap_err();
        assert!(matches!(err, RestoreError::Unsafe { .. }), "{err}");
        assert!(err.to_string().contains("absolute path"), "{err}");
        assert_eq!(fs::read_dir(&into).unwrap().count(), 0, "nothing extracted");
    }

    #[test]
    fn a_member_through_a_symlink_already_in_the_target_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = source_tree(dir.path(), "etc/passwd", b"x");
        // A plain (non-incremental) archive without a directory member for `etc`.
        let Some(tar) = tar_of(&["--no-recursion", "./etc/passwd"], &src) else {
            return;
        };
        let conf = setup(dir.path(), &tar);
        let into = dir.path().join("out");
        fs::create_dir_all(&into).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), into.join("etc")).unwrap();
        let err = restore(&opts(&conf, &into)).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
    }

    #[test]
    fn unknown_dles_say_what_the_catalog_has() {
        let dir = tempfile::tempdir().unwrap();
        let conf = setup(dir.path(), &[0u8; 1024]);
        let mut o = opts(&conf, &dir.path().join("out"));
        o.disk = "/nope".into();
        let err = restore(&o).unwrap_err().to_string();
        assert!(
            err.contains("no complete full dump of h:/nope") && err.contains("h:/d"),
            "{err}"
        );
    }
}
