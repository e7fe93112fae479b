//! The amandates file (client-src/amandates.c): the time of the last dump of each DLE at
//! each level, for the legacy GNUTAR program when no `gnutar_list_dir` is configured
//! (`tar --incremental --newer <date>`), kept up to date after every recorded backup like
//! the real client does.
//!
//! Format: one line per (disk, level) with a date: `<quoted disk> <level> <unix time>`,
//! disks in byte order, levels ascending, level dates of 0 omitted. Unparsable lines are
//! skipped. Writers take a POSIX write lock (fcntl `F_SETLKW`, like `amflock`) so the real
//! client and we can share the file; a process-wide mutex serialises our own threads
//! (POSIX locks do not exclude threads of one process).
//!
//! What this module must not do: lose other disks' entries, or move a date backwards (the
//! real client ignores an older date for a level, and so do we).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use proto::quote::{quote_string, quote_string_always, quoted_field_len, unquote_string};

/// Levels are 0..DUMP_LEVELS (Amanda's `DUMP_LEVELS`).
pub const DUMP_LEVELS: i32 = 400;

/// Dates per disk: level → unix time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Amandates {
    disks: BTreeMap<Vec<u8>, BTreeMap<i32, i64>>,
}

impl Amandates {
    /// Parses the file's text like `start_amandates`.
    pub fn parse(text: &[u8]) -> Amandates {
        let mut a = Amandates::default();
        for line in proto::request::AgetsLines::new(text) {
            let line = line.as_slice();
            let start = line
                .iter()
                .position(|b| !proto::quote::is_space(*b))
                .unwrap_or(line.len());
            let rest = &line[start..];
            if rest.is_empty() {
                continue;
            }
            let qlen = quoted_field_len(rest);
            let name = unquote_string(&rest[..qlen]);
            let mut fields = rest[qlen..]
                .split(|b| proto::quote::is_space(*b))
                .filter(|f| !f.is_empty());
            let (Some(level), Some(date)) = (fields.next(), fields.next()) else {
                continue;
            };
            let (Some(level), Some(date)) = (parse_leading_int(level), parse_leading_int(date))
            else {
                continue;
            };
            let Ok(level) = i32::try_from(level) else {
                continue;
            };
            if !(0..DUMP_LEVELS).contains(&level) {
                continue;
            }
            a.enter(&name, level, date);
        }
        a
    }

    /// `enter_record` / `amandates_updateone`: sets a date unless it is older than the one
    /// already there. Returns whether anything changed.
    pub fn enter(&mut self, disk: &[u8], level: i32, date: i64) -> bool {
        if !(0..DUMP_LEVELS).contains(&level) {
            return false;
        }
        let levels = self.disks.entry(disk.to_vec()).or_default();
        let cur = levels.get(&level).copied().unwrap_or(0);
        if date < cur {
            return false;
        }
        levels.insert(level, date);
        date != cur
    }

    /// The date recorded for `disk` at `level` (0 = never).
    pub fn date(&self, disk: &[u8], level: i32) -> i64 {
        self.disks
            .get(disk)
            .and_then(|l| l.get(&level))
            .copied()
            .unwrap_or(0)
    }

    /// The newest date of any level below `level`: what `--newer` is given (0 for level 0).
    pub fn dump_since(&self, disk: &[u8], level: i32) -> i64 {
        self.disks
            .get(disk)
            .map(|l| l.range(..level).map(|(_, d)| *d).max().unwrap_or(0))
            .unwrap_or(0)
            .max(0)
    }

    /// The file's text (`finish_amandates`).
    pub fn format(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (disk, levels) in &self.disks {
            for (level, date) in levels {
                if *date == 0 {
                    continue;
                }
                // A `#` would start a comment when the file is read back (by us or by the
                // real client's agets): such names are always quoted.
                if disk.contains(&b'#') {
                    out.extend_from_slice(&quote_string_always(disk));
                } else {
                    out.extend_from_slice(&quote_string(disk));
                }
                out.extend_from_slice(format!(" {level} {date}\n").as_bytes());
            }
        }
        out
    }
}

/// C `sscanf("%d")`/`"%ld"` on a field: optional sign, digits; trailing junk ignored.
fn parse_leading_int(f: &[u8]) -> Option<i64> {
    proto::quote::parse_c_int(f)
}

static LOCAL: Mutex<()> = Mutex::new(());

fn lock(file: &std::fs::File, write: bool) -> io::Result<()> {
    let flock = libc::flock {
        l_type: if write { libc::F_WRLCK } else { libc::F_RDLCK } as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_SETLKW(&flock))
        .map(|_| ())
        .map_err(io::Error::from)
}

/// Reads the file (missing = empty), under a read lock.
pub fn load(path: &Path) -> io::Result<Amandates> {
    let _guard = LOCAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Amandates::default()),
        Err(e) => return Err(e),
    };
    lock(&file, false)?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    Ok(Amandates::parse(&text))
}

/// `amandates_updateone` for one backup: records `date` for (`disk`, `level`), creating the
/// file if needed, under a write lock.
pub fn update(path: &Path, disk: &[u8], level: i32, date: i64) -> io::Result<()> {
    let _guard = LOCAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    lock(&file, true)?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    let mut a = Amandates::parse(&text);
    if a.enter(disk, level, date) {
        let out = a.format();
        file.seek(io::SeekFrom::Start(0))?;
        file.write_all(&out)?;
        file.set_len(out.len() as u64)?;
        file.sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REAL: &[u8] = "\"/tmp/amanda-harness/data/dle with space é\" 0 1795329713\n/tmp/amanda-harness/data/plain 0 1795329715\n/tmp/amanda-rs-tests/ref-data-17215-0/tree 0 1795329842\n".as_bytes();

    #[test]
    fn the_real_clients_file_round_trips() {
        let a = Amandates::parse(REAL);
        assert_eq!(
            a.date("/tmp/amanda-harness/data/dle with space é".as_bytes(), 0),
            1_795_329_713
        );
        assert_eq!(a.date(b"/tmp/amanda-harness/data/plain", 0), 1_795_329_715);
        assert_eq!(a.format(), REAL);
    }

    #[test]
    fn the_real_file_on_this_machine_round_trips_if_present() {
        if let Ok(text) = std::fs::read("/var/lib/amanda/amandates") {
            let a = Amandates::parse(&text);
            assert_eq!(Amandates::parse(&a.format()), a);
        }
    }

    #[test]
    fn dates_never_move_backwards_and_bad_lines_are_skipped() {
        let mut a =
            Amandates::parse(b"/a 0 100\n/a 1 50\n\n/b x 1\n/c 400 5\n/d -1 5\n   \n/e 2\n");
        assert_eq!(a.format(), b"/a 0 100\n/a 1 50\n");
        assert!(!a.enter(b"/a", 0, 99));
        assert!(a.enter(b"/a", 0, 101));
        assert_eq!(a.dump_since(b"/a", 0), 0);
        assert_eq!(a.dump_since(b"/a", 1), 101);
        assert_eq!(a.dump_since(b"/a", 2), 101);
        assert_eq!(a.dump_since(b"/zz", 3), 0);
    }

    #[test]
    fn update_creates_and_keeps_other_disks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("amandates");
        update(&p, b"/x", 1, 10).unwrap();
        update(&p, b"/a b", 0, 20).unwrap();
        update(&p, b"/x", 1, 5).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"\"/a b\" 0 20\n/x 1 10\n");
        assert_eq!(load(&p).unwrap().date(b"/x", 1), 10);
        assert_eq!(
            load(&dir.path().join("missing")).unwrap(),
            Amandates::default()
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_format_is_a_fixed_point(text in proptest::collection::vec(any::<u8>(), 0..400)) {
            let a = Amandates::parse(&text);
            let f = a.format();
            prop_assert_eq!(Amandates::parse(&f).format(), f);
        }
    }
}
