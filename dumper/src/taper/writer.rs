//! The volume writer: a thread that copies finished dumps from the holding disk to vtapes,
//! one at a time, in parts of `part_size`, each part a `SPLIT_FILE` with the dump's header
//! (spec §12.3). It owns the changer and the tapelist while the night runs: it chooses a
//! volume with [`planner::choose`], labels it, appends the tapelist entry, and reports
//! everything back over a channel to the run's main thread, which keeps the catalogs.
//!
//! Memory is bounded: the bytes go from the holding file to the part file with
//! `copy_file_range` (through `std::io::copy`), in slices of at most 8 MiB, never through
//! a buffer of the dump's size. Each part file is synced, and its directory, before the
//! dump is reported taped; only then may the holding file go.
//!
//! What this module must not do: touch the SQLite catalog except to read the copies the
//! retention rule needs, or remove holding files.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conf::value::Autolabel;
use crossbeam_channel::{Receiver, Sender};
use proto::header::{DumpHeader, FileKind};

use super::TaperError;
use super::changer::{Changer, Slot};
use super::planner::{self, Choice, Policy, SlotView};
use super::sched::Refused;
use super::store::{self, PartRow};
use super::volume::{self, BLOCK, Content};
use crate::amcatalog::tapelist::{TapeEntry, Tapelist};

/// Which labels are ours.
#[derive(Clone, Debug)]
pub enum Labels {
    /// No `labelstr`: any.
    Any,
    /// `labelstr "regex"` (or `match-autolabel`, turned into one).
    Regex(regex::Regex),
}

impl Labels {
    /// Whether `label` is ours.
    pub fn matches(&self, label: &str) -> bool {
        match self {
            Labels::Any => true,
            Labels::Regex(r) => r.is_match(label),
        }
    }

    /// From amanda.conf of configuration `name`; a bad regex is an error naming where it
    /// was set.
    pub fn from_config(cfg: &conf::Config, name: &str) -> Result<Labels, LabelsError> {
        use conf::value::Labelstr;
        let at = cfg
            .origin("labelstr")
            .map(|l| l.to_string())
            .unwrap_or_else(|| "amanda.conf".into());
        match &cfg.labelstr {
            None => Ok(Labels::Any),
            Some(Labelstr::Regex(r)) => {
                regex::Regex::new(r)
                    .map(Labels::Regex)
                    .map_err(|source| LabelsError::Labelstr {
                        at,
                        regex: r.clone(),
                        source,
                    })
            }
            Some(Labelstr::MatchAutolabel) => {
                let Some(t) = &cfg.autolabel.template else {
                    return Err(LabelsError::NoTemplate { at });
                };
                let mut re = String::from("^");
                let t = t.replace("$c", name).replace("$o", &cfg.org);
                for c in t.chars() {
                    if c == '%' {
                        re.push_str("[0-9]");
                    } else {
                        re.push_str(&regex::escape(&c.to_string()));
                    }
                }
                re.push('$');
                regex::Regex::new(&re)
                    .map(Labels::Regex)
                    .map_err(|source| LabelsError::Autolabel { at, source })
            }
        }
    }
}

/// A `labelstr` (or the `autolabel` it refers to) that cannot be used; `at` is where
/// amanda.conf sets it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LabelsError {
    /// Not a regular expression.
    #[error("{at}: labelstr {regex:?} is not a regular expression: {source}")]
    Labelstr {
        /// Where.
        at: String,
        /// The text.
        regex: String,
        /// Why.
        source: regex::Error,
    },
    /// `match-autolabel` without a template.
    #[error("{at}: labelstr match-autolabel needs an autolabel template")]
    NoTemplate {
        /// Where.
        at: String,
    },
    /// The autolabel template does not make a regular expression.
    #[error("{at}: autolabel: {source}")]
    Autolabel {
        /// Where.
        at: String,
        /// Why.
        source: regex::Error,
    },
}

/// What the writer needs.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// The changer.
    pub changer: Changer,
    /// The tapelist file.
    pub tapelist: PathBuf,
    /// The SQLite catalog (read for the retention rule).
    pub catalog: PathBuf,
    /// Configuration name (tapelist `CONFIG:`, `POOL:`, `STORAGE:`).
    pub config: String,
    /// `org`.
    pub org: String,
    /// `tapecycle`.
    pub tapecycle: u32,
    /// `runtapes`.
    pub runtapes: u32,
    /// `autolabel`.
    pub autolabel: Autolabel,
    /// `labelstr`.
    pub labels: Labels,
    /// Capacity of a volume (tapetype `length`), bytes.
    pub volume_bytes: u64,
    /// `part_size` in bytes (0: one part per dump).
    pub part_bytes: u64,
    /// Write at most this fast (KiB/s; 0: no limit).
    pub rate_kibps: u64,
    /// The run's datestamp (written into labels and the tapelist).
    pub datestamp: String,
}

/// A dump to write.
#[derive(Clone, Debug)]
pub struct TapeJob {
    /// The caller's key.
    pub id: usize,
    /// Host.
    pub host: String,
    /// Disk.
    pub disk: Vec<u8>,
    /// Level.
    pub level: i32,
    /// The complete holding file.
    pub holding: PathBuf,
}

/// What happened before a volume was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replaced {
    /// A new, empty slot.
    Nothing,
    /// One of our volumes, last written by this run.
    Reused {
        /// Its datestamp.
        written: String,
    },
    /// Something autolabel may take.
    Foreign(String),
}

/// What the writer reports.
#[derive(Debug)]
pub enum Event {
    /// A volume was labelled and loaded.
    VolumeStarted {
        /// Its label.
        label: String,
        /// Its slot.
        slot: String,
        /// 1 for tonight's first volume.
        tape: u32,
        /// What was on it.
        replaced: Replaced,
        /// Older volumes that were kept, and why.
        kept: Vec<String>,
    },
    /// A dump is on volumes, synced.
    Taped {
        /// The job.
        id: usize,
        /// Its parts.
        parts: Vec<PartRow>,
        /// Seconds writing it.
        secs: f64,
        /// Its header (CRCs, original size).
        header: Box<DumpHeader>,
        /// A volume with room is still loaded.
        volume_open: bool,
    },
    /// A dump could not be written; it stays on the holding disk.
    NotTaped(Refused),
    /// A volume is finished (full, or the night is over).
    VolumeDone {
        /// Its label.
        label: String,
        /// KiB of dump data on it.
        kb: u64,
        /// Dump files on it.
        files: u32,
    },
}

struct Open {
    slot: Slot,
    label: String,
    used: u64,
    next_file: u32,
    data_kb: u64,
}

struct Writer {
    cfg: WriterConfig,
    tx: Sender<Event>,
    tapelist: Tapelist,
    current: Option<Open>,
    used_labels: Vec<String>,
    stopped: Option<String>,
}

/// Starts the writer thread: it takes jobs until `jobs` is closed, then finishes its volume.
pub fn spawn(
    cfg: WriterConfig,
    jobs: Receiver<TapeJob>,
    events: Sender<Event>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("taper".into())
        .spawn(move || {
            let tapelist = Tapelist::load(&cfg.tapelist);
            let mut w = Writer {
                tapelist: tapelist.as_ref().cloned().unwrap_or_default(),
                stopped: tapelist
                    .err()
                    .map(|e| format!("cannot read the tapelist: {e}")),
                cfg,
                tx: events,
                current: None,
                used_labels: Vec::new(),
            };
            while let Ok(job) = jobs.recv() {
                let ev = w.tape(&job);
                if w.tx.send(ev).is_err() {
                    break;
                }
            }
            w.close();
        })
}

enum Fail {
    /// Give up on this dump only.
    Dump(String),
    /// No more volumes tonight.
    Night(String),
}

impl Writer {
    fn close(&mut self) {
        if let Some(o) = self.current.take() {
            let _ = self.tx.send(Event::VolumeDone {
                label: o.label,
                kb: o.data_kb,
                files: o.next_file - 1,
            });
        }
    }

    fn tape(&mut self, job: &TapeJob) -> Event {
        let started = Instant::now();
        match self.tape_parts(job) {
            Ok((parts, header)) => Event::Taped {
                id: job.id,
                parts,
                secs: started.elapsed().as_secs_f64(),
                header: Box::new(header),
                volume_open: self.current.is_some(),
            },
            Err(f) => {
                let (reason, stop) = match f {
                    Fail::Dump(r) => (r, false),
                    Fail::Night(r) => {
                        self.stopped = Some(r.clone());
                        (r, true)
                    }
                };
                Event::NotTaped(Refused {
                    id: job.id,
                    reason,
                    stop,
                    volume_open: self.current.is_some(),
                })
            }
        }
    }

    fn tape_parts(&mut self, job: &TapeJob) -> Result<(Vec<PartRow>, DumpHeader), Fail> {
        if let Some(r) = &self.stopped {
            return Err(Fail::Night(r.clone()));
        }
        let hold = job.holding.display().to_string();
        let mut src = File::open(&job.holding).map_err(|e| Fail::Dump(format!("{hold}: {e}")))?;
        let len = src
            .metadata()
            .map_err(|e| Fail::Dump(format!("{hold}: {e}")))?
            .len();
        let mut head = vec![0u8; BLOCK];
        src.read_exact(&mut head)
            .map_err(|e| Fail::Dump(format!("{hold}: reading its header: {e}")))?;
        let mut header =
            DumpHeader::parse(&head).map_err(|e| Fail::Dump(format!("{hold}: header: {e}")))?;
        // A holding file that a crash left linked into a volume (see `link_part`) is still
        // the whole dump.
        if header.kind == (FileKind::SplitFile { part: 1, total: -1 }) {
            header.kind = FileKind::File;
        }
        if header.kind != FileKind::File {
            return Err(Fail::Dump(format!(
                "{hold}: not a whole dump ({:?})",
                header.kind
            )));
        }
        let payload = len.saturating_sub(BLOCK as u64);
        let part_len = if self.cfg.part_bytes == 0 {
            payload.max(1)
        } else {
            self.cfg.part_bytes
        };
        let nparts = payload.div_ceil(part_len).max(1);
        let mut parts = Vec::new();
        for k in 0..nparts {
            let off = k * part_len;
            let n = part_len.min(payload - off.min(payload));
            let whole = (nparts == 1).then_some(job.holding.as_path());
            let row = self.write_part(job, &mut src, whole, &header, k as u32 + 1, off, n)?;
            parts.push(row);
        }
        Ok((parts, header))
    }

    /// Writes one part, on the loaded volume or a new one. `whole`: the part is the whole
    /// holding file, which may then be linked instead of copied.
    #[allow(clippy::too_many_arguments)]
    fn write_part(
        &mut self,
        job: &TapeJob,
        src: &mut File,
        whole: Option<&std::path::Path>,
        header: &DumpHeader,
        part: u32,
        off: u64,
        n: u64,
    ) -> Result<PartRow, Fail> {
        let need = BLOCK as u64 + n;
        let cap = self.cfg.volume_bytes;
        if need + BLOCK as u64 > cap {
            return Err(Fail::Dump(format!(
                "part {part} ({need} bytes with its header) is larger than a volume (tapetype length {} KiB){}",
                cap / 1024,
                if self.cfg.part_bytes == 0 {
                    "; set part_size in the tapetype to split dumps across volumes"
                } else {
                    ""
                }
            )));
        }
        let mut tries = 0;
        loop {
            tries += 1;
            if self.current.as_ref().is_some_and(|o| o.used + need > cap) {
                self.close();
            }
            if self.current.is_none() {
                self.start_volume()?;
            }
            let Some(o) = self.current.as_mut() else {
                return Err(Fail::Night("no volume".into()));
            };
            let filenum = o.next_file;
            let mut h = header.clone();
            h.kind = FileKind::SplitFile {
                part: part as i32,
                total: -1,
            };
            let block = h
                .build()
                .map_err(|e| Fail::Dump(format!("cannot build the part header: {e}")))?;
            let name = volume::part_file_name(filenum, &job.host, &job.disk, job.level);
            let path = o.slot.dir.join(std::ffi::OsStr::from_bytes(&name));
            let label = o.label.clone();
            // Without a rate limit (which stands for a drive of its own), a whole dump on the
            // same file system as the volume is linked, not copied.
            let linked = whole
                .filter(|_| self.cfg.rate_kibps == 0)
                .is_some_and(|h| link_part(h, &path, &block));
            let written = if linked {
                Ok(())
            } else {
                copy_part(
                    &path,
                    &block,
                    src,
                    BLOCK as u64 + off,
                    n,
                    self.cfg.rate_kibps,
                )
            };
            match written {
                Ok(()) => {
                    volume::sync_dir(&o.slot.dir);
                    o.used += need;
                    o.next_file += 1;
                    o.data_kb += n / 1024;
                    return Ok(PartRow {
                        part,
                        label,
                        filenum,
                        bytes: n,
                    });
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    let full = e.raw_os_error() == Some(libc::ENOSPC);
                    if full && tries < 2 {
                        // The file system under the vtapes is full: this volume is full.
                        log::warn!("{}: {e}; volume {label} is full", path.display());
                        self.close();
                        continue;
                    }
                    return Err(Fail::Dump(format!(
                        "writing {} on volume {label}: {e}",
                        path.display()
                    )));
                }
            }
        }
    }

    /// Chooses, labels and loads the next volume.
    fn start_volume(&mut self) -> Result<(), Fail> {
        if self.used_labels.len() as u32 >= self.cfg.runtapes.max(1) {
            return Err(Fail::Night(format!(
                "runtapes {}: tonight's volume(s) ({}) are full",
                self.cfg.runtapes.max(1),
                self.used_labels.join(", ")
            )));
        }
        let keep = protected(&self.cfg.catalog, &self.tapelist);
        let (choice, kept, inv) = pick(&self.cfg, &self.tapelist, &self.used_labels, &keep)
            .map_err(|e| Fail::Night(e.to_string()))?;
        let slot = inv[choice.slot()].0.clone();
        let replaced = match &choice {
            Choice::Reuse { written, .. } => Replaced::Reused {
                written: written.clone(),
            },
            Choice::Label { replaces: None, .. } => Replaced::Nothing,
            Choice::Label {
                replaces: Some(w), ..
            } => Replaced::Foreign(w.clone()),
        };
        let label = choice.label().to_owned();
        let io = |e: io::Error| {
            Fail::Night(format!(
                "labelling {} in {}: {e}",
                label,
                slot.dir.display()
            ))
        };
        volume::write_label(&slot.dir, &self.cfg.datestamp, &label).map_err(io)?;
        self.cfg
            .changer
            .load(&slot)
            .map_err(|e| Fail::Night(e.to_string()))?;
        self.tapelist.upsert(TapeEntry::ours(
            &self.cfg.datestamp,
            &label,
            &self.cfg.config,
        ));
        self.tapelist
            .save(&self.cfg.tapelist)
            .map_err(|e| Fail::Night(e.to_string()))?;
        self.used_labels.push(label.clone());
        let _ = self.tx.send(Event::VolumeStarted {
            label: label.clone(),
            slot: slot.name.clone(),
            tape: self.used_labels.len() as u32,
            replaced,
            kept,
        });
        self.current = Some(Open {
            slot,
            label,
            used: BLOCK as u64,
            next_file: 1,
            data_kb: 0,
        });
        Ok(())
    }
}

/// The retention rule's input, from the catalog; if it cannot be read, every volume of the
/// tapelist is kept.
fn protected(
    catalog: &std::path::Path,
    tapelist: &Tapelist,
) -> std::collections::BTreeMap<String, String> {
    let copies =
        rusqlite::Connection::open_with_flags(catalog, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| {
                c.busy_timeout(Duration::from_secs(30))?;
                store::copies(&c)
            });
    match copies {
        Ok(c) => planner::protected(&c),
        Err(e) => tapelist
            .entries
            .iter()
            .map(|t| (t.label.clone(), format!("the catalog cannot be read ({e})")))
            .collect(),
    }
}

/// The changer's inventory and the planner's choice over it.
type Picked = (Choice, Vec<String>, Vec<(Slot, Content)>);

/// Reads the changer and asks the planner for the next volume.
fn pick(
    cfg: &WriterConfig,
    tapelist: &Tapelist,
    used: &[String],
    keep: &std::collections::BTreeMap<String, String>,
) -> Result<Picked, TaperError> {
    let inv = cfg.changer.inventory()?;
    let views: Vec<(String, SlotView)> = inv
        .iter()
        .map(|(s, c)| {
            (
                s.name.clone(),
                match c {
                    Content::Empty => SlotView::Empty,
                    Content::Labeled { label, .. } => SlotView::Labeled {
                        label: label.clone(),
                    },
                    Content::NotAmanda(w) => SlotView::NotAmanda(w.clone()),
                },
            )
        })
        .collect();
    let labels = cfg.labels.clone();
    let matches = move |l: &str| labels.matches(l);
    let policy = Policy {
        config: &cfg.config,
        org: &cfg.org,
        tapecycle: cfg.tapecycle,
        autolabel: &cfg.autolabel,
        labelstr: &matches,
    };
    let (choice, kept) =
        planner::choose(&views, tapelist, used, keep, &policy).map_err(|reasons| {
            TaperError::NoVolume {
                changer: cfg.changer.name.clone(),
                reasons,
            }
        })?;
    Ok((choice, kept, inv))
}

/// What the next night would write to (for `dumper check`): `slot: label (new|reused...)`,
/// or why no volume can be used. Reads only.
pub fn next_volume(cfg: &WriterConfig) -> Result<String, TaperError> {
    let tapelist = Tapelist::load(&cfg.tapelist).map_err(|e| TaperError::Tapelist(Arc::new(e)))?;
    let keep = protected(&cfg.catalog, &tapelist);
    let (choice, kept, inv) = pick(cfg, &tapelist, &[], &keep)?;
    let slot = &inv[choice.slot()].0.name;
    let what = match &choice {
        Choice::Reuse { label, written, .. } => {
            format!("{label} in {slot} (reused, last written {written})")
        }
        Choice::Label {
            label,
            replaces: None,
            ..
        } => format!("a new volume {label} in {slot}"),
        Choice::Label {
            label,
            replaces: Some(w),
            ..
        } => format!("{label} in {slot}, labelled over {w}"),
    };
    let mut out = format!("the next volume is {what}");
    for k in kept {
        out.push_str(&format!("; {k}"));
    }
    Ok(out)
}

/// Makes the holding file `holding` the part file `path` without copying it: a hard link
/// (same file system only), then the part's header over the dump's, synced. The holding
/// name stays until the copy is recorded (the caller removes it); a crash in between leaves
/// a holding file with a `SPLIT_FILE 1/-1` header, which the writer and restore still take
/// as the whole dump. Returns false (and leaves nothing) when the link cannot be made.
fn link_part(holding: &std::path::Path, path: &std::path::Path, block: &[u8]) -> bool {
    use std::os::unix::fs::FileExt;
    if std::fs::hard_link(holding, path).is_err() {
        return false;
    }
    let done = OpenOptions::new().write(true).open(path).and_then(|f| {
        f.write_all_at(block, 0)?;
        f.sync_all()
    });
    if done.is_err() {
        let _ = std::fs::remove_file(path);
        return false;
    }
    true
}

/// Writes `block` then `n` bytes of `src` from `off` into a new file at `path`, synced.
fn copy_part(
    path: &std::path::Path,
    block: &[u8],
    src: &mut File,
    off: u64,
    n: u64,
    rate_kibps: u64,
) -> io::Result<()> {
    let mut out = OpenOptions::new().write(true).create_new(true).open(path)?;
    out.write_all(block)?;
    src.seek(SeekFrom::Start(off))?;
    let started = Instant::now();
    let mut done = 0u64;
    const SLICE: u64 = 8 * 1024 * 1024;
    while done < n {
        let want = (n - done).min(SLICE);
        let got = io::copy(&mut (&*src).take(want), &mut out)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the holding file is shorter than its size",
            ));
        }
        done += got;
        if rate_kibps > 0 {
            let due = Duration::from_secs_f64(done as f64 / 1024.0 / rate_kibps as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    out.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> conf::Config {
        conf::Config::parse_str("amanda.conf", text).unwrap().value
    }

    #[test]
    fn labelstr_errors_name_the_line_and_match_autolabel_follows_the_template() {
        let e = Labels::from_config(&cfg("org \"o\"\nlabelstr \"^vt-[0-9\"\n"), "c")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("amanda.conf:2:1: labelstr \"^vt-[0-9\" is not a regular expression"),
            "{e}"
        );
        let l = Labels::from_config(
            &cfg("autolabel \"$c-%%%\" empty\nlabelstr match-autolabel\n"),
            "daily",
        )
        .unwrap();
        assert!(l.matches("daily-001") && !l.matches("daily-01") && !l.matches("x-001"));
        assert!(
            Labels::from_config(&cfg(""), "c")
                .unwrap()
                .matches("anything")
        );
    }
}
