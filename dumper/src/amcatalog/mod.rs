//! Amanda's own catalog, written beside the SQLite one from the same events, so that the
//! real Amanda 3.5.1 tools (`amadmin find/info`, `amfetchdump`, `amrecover` through
//! `amindexd`/`amidxtaped`, `amreport`) work on amanda-rs dumps (spec §12.4–12.7):
//!
//! * [`tapelist`]: one line per labelled volume, newest first;
//! * [`log`]: the trace log `log.<datestamp>.<n>` with the `START/PART/DONE taper` lines
//!   the catalog readers need, and the `DISK`/`SUCCESS`/`FAIL dumper` lines amreport reads;
//! * [`curinfo`]: `<infofile>/<host>/<disk>/info`, the planner's history of a DLE;
//! * [`write_index_header`]: the `<datestamp>_<level>.header` file beside the index.
//!
//! What this module must not do: decide anything (which volume, which level), or read
//! these files back for the dumper's own decisions (the SQLite catalog is the dumper's
//! truth; these files are for Amanda's tools).

pub mod curinfo;
pub mod log;
pub mod tapelist;

use std::io;
use std::path::{Path, PathBuf};

/// `<indexdir>/<host>/<disk>/<datestamp>_<level>.header`: the dump header's text without
/// its NUL padding (amindexd and amrecover show it; spec §12.7).
pub fn index_header_path(
    indexdir: &Path,
    host: &str,
    disk: &[u8],
    datestamp: &str,
    level: i32,
) -> PathBuf {
    // The key Amanda's amindexd looks under (a DLE whose sanitised name collides with an
    // earlier one's has its index under a suffixed key that Amanda never reads anyway).
    let key = crate::index::index_key(host, disk);
    crate::index::index_path(indexdir, &key, datestamp, level)
        .with_file_name(format!("{datestamp}_{level}.header"))
}

/// Writes the `.header` file of a dump (atomically: `.tmp`, then rename).
pub fn write_index_header(path: &Path, header_text: &[u8]) -> io::Result<()> {
    write_atomic(path, header_text)
}

/// Writes `data` to `<path>.tmp`, syncs it and renames it to `path` (creating the
/// directory).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = crate::holding::tmp_path(path);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}
