//! The taper's part of a night (`dumper run`) or of a flush (`dumper flush`): it owns the
//! [`sched::TaperSched`], the writer thread and the trace log, and is fed by the run's
//! main thread with the same events that go into the SQLite catalog (a dump finished or
//! failed). It keeps both catalogs: SQLite (`store`) and Amanda's (`amcatalog`: trace log,
//! tapelist through the writer, curinfo, index header), and removes a holding file only
//! after its copy is synced on the volume and recorded in both.
//!
//! What this module must not do: schedule dumps, or decide which volume to write.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use proto::header::{DumpHeader, HEADER_SIZE};

use super::TaperError;
use super::changer::Changer;
use super::sched::{Action, Input, Refused, SchedConfig, TaperSched};
use super::store::{self, PartRow};
use super::writer::{self, Event, Labels, Replaced, TapeJob, WriterConfig};
use crate::amcatalog::log::{self as tlog, Crcs, DumpId, PartLine, TraceLog};
use crate::amcatalog::{self, curinfo};
use crate::catalog::{Catalog, DumpRecord};
use crate::plan::Plan;

/// How the night is set up.
pub struct Setup<'a> {
    /// The configuration.
    pub plan: &'a Plan,
    /// This run's datestamp.
    pub datestamp: &'a str,
    /// amanda-rs settings (the taper's rate limit).
    pub settings: &'a conf::Settings,
    /// `dumper flush`: no thresholds, the log says amflush.
    pub flush: bool,
}

/// What the taper did, for the report.
#[derive(Clone, Debug, Default)]
pub struct TapeReport {
    /// One line per event worth reading (volumes, overwrites, dumps kept on holding).
    pub lines: Vec<String>,
    /// A dump could not be written (amdump's tape bit).
    pub failed: bool,
    /// Dumps written to volumes.
    pub taped: usize,
    /// Dumps left on the holding disk.
    pub kept: usize,
    /// Volumes written.
    pub volumes: Vec<String>,
    /// Bytes written to volumes.
    pub bytes: u64,
}

struct Queued {
    dump_id: i64,
    host: String,
    disk: Vec<u8>,
    level: i32,
    datestamp: String,
    holding: PathBuf,
    orig_kb: i64,
    bytes: u64,
}

impl Queued {
    /// The dump of `rec`, in `holding`.
    fn of(rec: &DumpRecord, holding: PathBuf, orig_kb: i64, bytes: u64) -> Queued {
        Queued {
            dump_id: rec.id,
            host: rec.host.clone(),
            disk: rec.disk.clone(),
            level: rec.level,
            datestamp: rec.timestamp.clone(),
            holding,
            orig_kb,
            bytes,
        }
    }

    /// `host:disk level L` for messages.
    fn what(&self) -> String {
        format!(
            "{}:{} level {}",
            self.host,
            String::from_utf8_lossy(&self.disk),
            self.level
        )
    }
}

/// The taper of one night.
pub struct TapeNight {
    storage: String,
    datestamp: String,
    sched: TaperSched,
    jobs: Option<Sender<TapeJob>>,
    events: Receiver<Event>,
    thread: Option<std::thread::JoinHandle<()>>,
    log: Option<TraceLog>,
    infofile: PathBuf,
    indexdir: PathBuf,
    queued: HashMap<usize, Queued>,
    next_id: usize,
    report: TapeReport,
    freed: Vec<(PathBuf, u64)>,
    started: std::time::Instant,
}

impl TapeNight {
    /// Starts the taper of a night, or `Ok(None)` when the configuration has no changer
    /// (holding disk only). An error names the setting (a changer amanda-rs cannot drive,
    /// a bad labelstr).
    pub fn start(s: &Setup<'_>, catalog: &Catalog) -> Result<Option<TapeNight>, TaperError> {
        let cfg = &s.plan.config;
        let Some(wcfg) = writer_config(s.plan, s.datestamp, s.settings, catalog)? else {
            return Ok(None);
        };
        let volume_bytes = wcfg.volume_bytes;
        store::ensure(catalog.connection()).map_err(|e| TaperError::Catalog {
            path: catalog.path().to_owned(),
            source: Arc::new(e),
        })?;
        let (jobs_tx, jobs_rx) = bounded(1);
        let (ev_tx, ev_rx) = unbounded();
        let thread =
            writer::spawn(wcfg, jobs_rx, ev_tx).map_err(|e| TaperError::Thread(Arc::new(e)))?;
        let logdir = cfg.path(&cfg.logdir);
        let mut report = TapeReport::default();
        if cfg.taperalgo != conf::value::TaperAlgo::First && !s.flush {
            report.lines.push(format!(
                "taperalgo {:?} is not supported: dumps are written in the order they finish (first)",
                cfg.taperalgo
            ));
        }
        let log = match TraceLog::create(&logdir, s.datestamp) {
            Ok(l) => Some(l),
            Err(e) => {
                report.lines.push(format!(
                    "cannot create the trace log in {}: {e} (Amanda's tools will not see tonight's dumps)",
                    logdir.display()
                ));
                None
            }
        };
        let sched = if s.flush {
            SchedConfig {
                volume_bytes,
                ..SchedConfig::default()
            }
        } else {
            SchedConfig {
                volume_bytes,
                taperflush: cfg.taperflush,
                threshold_dumped: cfg.flush_threshold_dumped,
                threshold_scheduled: cfg.flush_threshold_scheduled,
            }
        };
        let mut n = TapeNight {
            storage: s.plan.config_name.clone(),
            datestamp: s.datestamp.to_owned(),
            sched: TaperSched::new(sched),
            jobs: Some(jobs_tx),
            events: ev_rx,
            thread: Some(thread),
            log,
            infofile: cfg.path(&cfg.infofile),
            indexdir: cfg.path(&cfg.indexdir),
            queued: HashMap::new(),
            next_id: 0,
            report,
            freed: Vec::new(),
            started: std::time::Instant::now(),
        };
        let pid = std::process::id();
        let ds = s.datestamp;
        if s.flush {
            n.line(&format!("INFO amflush amflush pid {pid}"));
            n.line(&format!("START amflush date {ds}"));
        } else {
            n.line(&format!("INFO amdump amdump pid {pid}"));
            n.line(&format!("START planner date {ds}"));
            for d in &s.plan.dles {
                n.line(&tlog::disk_planner(&d.host, &d.disk));
            }
        }
        n.line(&format!("START driver date {ds}"));
        Ok(Some(n))
    }

    fn line(&mut self, text: &str) {
        if let Some(l) = &mut self.log {
            l.line(text);
        }
    }

    /// The run's catalog event: a dump ended (`rec` as just written to SQLite). A complete
    /// dump is logged, recorded in curinfo and queued for the taper.
    pub fn dumped(&mut self, rec: &DumpRecord) {
        let id = DumpId {
            host: &rec.host,
            disk: &rec.disk,
            datestamp: &rec.timestamp,
            level: rec.level,
        };
        let bytes = rec.bytes.unwrap_or(0).max(0) as u64;
        let secs = rec.duration_ms.unwrap_or(0) as f64 / 1000.0;
        let Some(holding) = rec
            .holding_file
            .clone()
            .filter(|h| rec.status.is_success() && h.exists())
        else {
            let e = rec
                .error
                .clone()
                .unwrap_or_else(|| "[unknown error]".into());
            self.line(&tlog::fail_dumper(id, &e));
            return;
        };
        let orig_kb = rec.orig_kb.unwrap_or((bytes / 1024) as i64);
        self.line(&tlog::success_dumper(
            id,
            rec.native_crc,
            rec.client_crc,
            secs,
            bytes,
            orig_kb,
        ));
        let _ = curinfo::record(
            &self.infofile,
            &rec.host,
            &rec.disk,
            curinfo::Stat {
                level: rec.level,
                orig_kb,
                out_kb: (bytes / 1024) as i64,
                secs: secs as i64,
                date: crate::clock::unix_of_timestamp(&rec.timestamp).unwrap_or(rec.started),
                location: None,
            },
        );
        if let Some(text) = header_text(&holding) {
            let p = amcatalog::index_header_path(
                &self.indexdir,
                &rec.host,
                &rec.disk,
                &rec.timestamp,
                rec.level,
            );
            let _ = amcatalog::write_index_header(&p, &text);
        }
        self.queue(Queued::of(rec, holding, orig_kb, bytes));
    }

    /// Queues a dump of an earlier run still on the holding disk (`dumper flush`,
    /// `autoflush`).
    pub fn leftover(&mut self, d: &DumpRecord) {
        let Some(holding) = d.holding_file.clone() else {
            return;
        };
        let bytes = std::fs::metadata(&holding)
            .map(|m| m.len().saturating_sub(HEADER_SIZE as u64))
            .unwrap_or(0);
        let orig_kb = d.orig_kb.unwrap_or((bytes / 1024) as i64);
        self.queue(Queued::of(d, holding, orig_kb, bytes));
    }

    fn queue(&mut self, q: Queued) {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = q.bytes + HEADER_SIZE as u64;
        self.queued.insert(id, q);
        self.sched.handle(Input::Dumped { id, bytes });
    }

    /// What is still to be dumped tonight, in bytes (for `flush-threshold-scheduled`).
    pub fn scheduled(&mut self, bytes: u64) {
        self.sched.handle(Input::Scheduled(bytes));
    }

    /// Something queued or being written will free holding-disk space.
    pub fn will_free(&self) -> bool {
        self.sched.will_free()
    }

    /// Holding files removed since the last call, with their sizes.
    pub fn take_freed(&mut self) -> Vec<(PathBuf, u64)> {
        std::mem::take(&mut self.freed)
    }

    /// Handles what the writer reported and what the scheduler wants; never blocks.
    /// Returns progress messages.
    pub fn poll(&mut self, catalog: &Catalog) -> Vec<String> {
        let mut msgs = Vec::new();
        while let Ok(ev) = self.events.try_recv() {
            self.on_event(catalog, ev, &mut msgs);
        }
        self.act(&mut msgs);
        msgs
    }

    fn act(&mut self, msgs: &mut Vec<String>) {
        while let Some(a) = self.sched.poll_action() {
            match a {
                Action::Tape(id) => {
                    let Some(q) = self.queued.get(&id) else {
                        continue;
                    };
                    let job = TapeJob {
                        id,
                        host: q.host.clone(),
                        disk: q.disk.clone(),
                        level: q.level,
                        holding: q.holding.clone(),
                    };
                    msgs.push(format!("taping {}", q.what()));
                    let sent = self.jobs.as_ref().map(|j| j.send(job).is_ok());
                    if sent != Some(true) {
                        self.sched.handle(Input::NotTaped(Refused {
                            id,
                            reason: "the taper thread stopped".into(),
                            stop: true,
                            volume_open: false,
                        }));
                    }
                }
                Action::Keep { id, reason, error } => {
                    let Some(q) = self.queued.remove(&id) else {
                        continue;
                    };
                    self.report.kept += 1;
                    self.report.failed |= error;
                    let l = format!(
                        "{} of {}: not taped, kept on the holding disk ({}): {reason}",
                        q.what(),
                        q.datestamp,
                        q.holding.display()
                    );
                    msgs.push(l.clone());
                    self.report.lines.push(l);
                }
            }
        }
    }

    fn on_event(&mut self, catalog: &Catalog, ev: Event, msgs: &mut Vec<String>) {
        match ev {
            Event::VolumeStarted {
                label,
                slot,
                tape,
                replaced,
                kept,
            } => {
                for k in kept {
                    self.report.lines.push(format!("volume {k}"));
                }
                let what = match replaced {
                    Replaced::Nothing => format!("volume {label}: new, labelled in {slot}"),
                    Replaced::Foreign(w) => {
                        format!(
                            "volume {label}: labelled in {slot} over what autolabel allowed ({w})"
                        )
                    }
                    Replaced::Reused { written } => {
                        let lost = store::overwrite(catalog.connection(), &label)
                            .unwrap_or_else(|e| vec![format!("(catalog: {e})")]);
                        if lost.is_empty() {
                            format!("volume {label} ({slot}, last written {written}) reused")
                        } else {
                            format!(
                                "volume {label} ({slot}, last written {written}) reused: overwritten {}",
                                lost.join(", ")
                            )
                        }
                    }
                };
                let line =
                    tlog::start_taper(&self.datestamp, &self.storage, &self.storage, &label, tape);
                self.line(&line);
                self.report.volumes.push(label);
                msgs.push(what.clone());
                self.report.lines.push(what);
            }
            Event::Taped {
                id,
                parts,
                secs,
                header,
                volume_open,
            } => {
                self.taped(catalog, id, &parts, secs, &header, msgs);
                self.sched.handle(Input::Taped { id, volume_open });
            }
            Event::NotTaped(r) => self.sched.handle(Input::NotTaped(r)),
            Event::VolumeDone { label, kb, files } => {
                self.line(&tlog::tape_done(&label, kb, files));
                self.report
                    .lines
                    .push(format!("volume {label}: {files} file(s), {kb} KiB"));
            }
        }
    }

    fn taped(
        &mut self,
        catalog: &Catalog,
        id: usize,
        parts: &[PartRow],
        secs: f64,
        header: &DumpHeader,
        msgs: &mut Vec<String>,
    ) {
        let Some(q) = self.queued.remove(&id) else {
            return;
        };
        if let Err(e) = store::record_copy(catalog.connection(), q.dump_id, parts, &self.datestamp)
        {
            // Without the record the copy is unknown to us: keep the holding file.
            self.report.failed = true;
            self.report.lines.push(format!(
                "{}: taped, but the catalog could not record it ({e}); kept on the holding disk ({})",
                q.what(),
                q.holding.display()
            ));
            return;
        }
        let did = DumpId {
            host: &q.host,
            disk: &q.disk,
            datestamp: &q.datestamp,
            level: q.level,
        };
        let total: u64 = parts.iter().map(|p| p.bytes).sum();
        let per = if parts.is_empty() {
            0.0
        } else {
            secs / parts.len() as f64
        };
        for p in parts {
            let line = tlog::part_taper(
                did,
                PartLine {
                    storage: &self.storage,
                    pool: &self.storage,
                    label: &p.label,
                    filenum: p.filenum,
                    part: p.part,
                    secs: per,
                    bytes: p.bytes,
                    orig_kb: q.orig_kb,
                },
            );
            self.line(&line);
        }
        let done = tlog::done_taper(
            &self.storage,
            &self.storage,
            did,
            parts.len() as u32,
            Crcs {
                native: header.native_crc,
                client: header.client_crc,
                server: header.server_crc,
            },
            secs,
            total,
            q.orig_kb,
        );
        self.line(&done);
        if let Some(l) = &mut self.log {
            l.sync();
        }
        if let Some(first) = parts.first() {
            let _ = curinfo::record(
                &self.infofile,
                &q.host,
                &q.disk,
                curinfo::Stat {
                    level: q.level,
                    orig_kb: q.orig_kb,
                    out_kb: (q.bytes / 1024) as i64,
                    secs: secs as i64,
                    date: crate::clock::unix_of_timestamp(&q.datestamp).unwrap_or(0),
                    location: Some((first.filenum, first.label.clone())),
                },
            );
        }
        // The copy is synced and recorded: the holding file can go.
        let size = std::fs::metadata(&q.holding).map(|m| m.len()).unwrap_or(0);
        match std::fs::remove_file(&q.holding) {
            Ok(()) => {
                if let Some(dir) = q.holding.parent() {
                    super::volume::sync_dir(dir);
                    // The run's directory goes when it is empty (fails otherwise).
                    let _ = std::fs::remove_dir(dir);
                }
                self.freed.push((q.holding.clone(), size));
            }
            Err(e) => self.report.lines.push(format!(
                "{}: taped, but not removed from the holding disk: {e}",
                q.holding.display()
            )),
        }
        self.report.taped += 1;
        self.report.bytes += total;
        let labels: Vec<String> = parts
            .iter()
            .map(|p| format!("{}:{}", p.label, p.filenum))
            .collect();
        msgs.push(format!(
            "taped {} to {} in {secs:.1}s",
            q.what(),
            labels.join(" ")
        ));
    }

    /// The run was interrupted: nothing more is written; the dump being written finishes
    /// (its copy is not recorded and its holding file stays).
    fn abandon(&mut self) {
        for q in self.queued.values() {
            self.report.lines.push(format!(
                "{}: not taped (interrupted), kept on the holding disk ({})",
                q.what(),
                q.holding.display()
            ));
        }
        self.report.kept += self.queued.len();
        self.report.failed |= !self.queued.is_empty();
        self.queued.clear();
        self.jobs = None;
    }

    /// Dumping is over: writes what the thresholds allow, waits for the writer, and ends
    /// the trace log. `interrupted`: keep everything not yet written.
    pub fn finish(
        mut self,
        catalog: &Catalog,
        interrupted: bool,
        show: &mut dyn FnMut(&str),
    ) -> TapeReport {
        if interrupted {
            self.abandon();
        }
        self.sched.handle(Input::DumpingDone);
        loop {
            for m in self.poll(catalog) {
                show(&m);
            }
            if self.sched.is_finished() || self.jobs.is_none() {
                break;
            }
            // A signal while the taper finishes the night: what is not written yet stays.
            if crate::interrupt::received().is_some() {
                self.abandon();
                continue;
            }
            if let Ok(ev) = self.events.recv_timeout(Duration::from_millis(250)) {
                let mut msgs = Vec::new();
                self.on_event(catalog, ev, &mut msgs);
                for m in msgs {
                    show(&m);
                }
            }
        }
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut msgs = Vec::new();
        while let Ok(ev) = self.events.try_recv() {
            self.on_event(catalog, ev, &mut msgs);
        }
        let secs = self.started.elapsed().as_secs_f64();
        let ds = self.datestamp.clone();
        self.line(&format!("FINISH driver date {ds} time {secs:.3}"));
        if let Some(l) = &mut self.log {
            l.sync();
        }
        self.report.clone()
    }
}

/// The header text of a holding file (for the index's `.header` file).
fn header_text(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut b = vec![0u8; HEADER_SIZE];
    std::fs::File::open(path).ok()?.read_exact(&mut b).ok()?;
    DumpHeader::parse(&b).ok()?.build_text().ok()
}

/// The writer's settings from the configuration, or `None` without a changer.
pub fn writer_config(
    plan: &Plan,
    datestamp: &str,
    settings: &conf::Settings,
    catalog: &Catalog,
) -> Result<Option<WriterConfig>, TaperError> {
    let cfg = &plan.config;
    let Some(changer) = Changer::from_config(cfg)? else {
        return Ok(None);
    };
    let labels = Labels::from_config(cfg, &plan.config_name)?;
    let tt = cfg.tapetype_def();
    let length_kib = tt.map_or(conf::defaults::TAPE_LENGTH_KIB, |t| t.length_kib);
    let part_kib = tt.map_or(0, |t| t.part_size_kib);
    Ok(Some(WriterConfig {
        changer,
        tapelist: cfg.path(&cfg.tapelist),
        catalog: PathBuf::from(catalog.path()),
        config: plan.config_name.clone(),
        org: cfg.org.clone(),
        tapecycle: cfg.tapecycle,
        runtapes: cfg.runtapes,
        autolabel: cfg.autolabel.clone(),
        labels,
        volume_bytes: (length_kib.max(64) as u64) * 1024,
        part_bytes: (part_kib.max(0) as u64) * 1024,
        rate_kibps: settings.taper.rate_limit_kibps,
        datestamp: datestamp.to_owned(),
    }))
}

/// `dumper check`'s view of the taper: `Ok(None)` without a changer, else the volume the
/// next night would write, or why none can be used (with the amanda.conf location of a bad
/// setting).
pub fn check(
    plan: &Plan,
    settings: &conf::Settings,
    catalog: &Catalog,
) -> Result<Option<String>, TaperError> {
    match writer_config(plan, "0", settings, catalog)? {
        None => Ok(None),
        Some(w) => writer::next_volume(&w).map(Some),
    }
}

/// The taper of `dumper run`: `(taper, None)`, `(None, None)` without a changer, or
/// `(None, report)` when it cannot start (the dumps then stay on the holding disk and the
/// report says why, with amdump's tape bit). With `autoflush`, dumps of earlier runs still
/// on the holding disk are queued first.
pub fn for_run(
    plan: &Plan,
    datestamp: &str,
    settings: &conf::Settings,
    catalog: &Catalog,
) -> (Option<TapeNight>, Option<TapeReport>) {
    let setup = Setup {
        plan,
        datestamp,
        settings,
        flush: false,
    };
    match TapeNight::start(&setup, catalog) {
        Ok(Some(mut t)) => {
            if plan.config.autoflush != conf::value::NoYesAll::No
                && let Ok(left) = store::untaped(catalog.connection())
            {
                for d in &left {
                    t.leftover(d);
                }
            }
            (Some(t), None)
        }
        Ok(None) => (None, None),
        Err(e) => (
            None,
            Some(TapeReport {
                lines: vec![format!(
                    "the taper cannot run; every dump stays on the holding disk: {e}"
                )],
                failed: true,
                ..TapeReport::default()
            }),
        ),
    }
}

/// Ids of the dumps with a complete copy on volumes (empty when there are none yet).
pub fn taped_dumps(catalog: &Catalog) -> std::collections::HashSet<i64> {
    let c = catalog.connection();
    store::ensure(c)
        .and_then(|()| store::taped_ids(c))
        .unwrap_or_default()
}
