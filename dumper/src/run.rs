//! `dumper run CONFIG`: the shell around the [`Driver`]: it plans, starts estimates on
//! threads and dumps on `inparallel` worker threads (fed over crossbeam channels), feeds
//! their events to the driver, the catalog (rows made by `catalog`), the taper and the
//! display (lines made by `progress`), tells the driver what the holding disks have free,
//! executes its actions, and renders the report.
//!
//! Threads: the main thread owns the driver, the catalog and the display; one thread per
//! running estimate group; `inparallel` dump workers, each with its own job channel, each
//! running one dump at a time ([`dump::run`]) with its own mio loop and holding-file writer
//! thread. Everything comes back to the main thread over one event channel. With a changer,
//! the taper (`taper::night`) is fed from the same dump events as the catalog; its writer
//! thread reports on a channel of its own, polled by the same loop, and the night ends when
//! it is done too.
//!
//! At the start of a run it cleans up after a run that was killed: `.tmp` holding and index
//! files nobody writes are removed; a finished holding file that no catalog row names (a
//! run died between the rename and the catalog update) is adopted into the catalog if it
//! verifies ([`holding::verify`]: header, size, CRC), else removed; the report's NOTES say
//! what was done ([`clean_up_after_killed_runs`]).
//!
//! What this module must not do: speak the protocol (see `dump`, `estimate`), or decide
//! what the driver decides (order, retries, which holding disk).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use proto::exchange::InitiatorConfig;
use proto::features::Features;
use proto::mesg::DumpStatus;

use crate::catalog::{Catalog, DumpRecord};
use crate::clock;
use crate::driver::{
    Action, DleSched, Driver, DriverConfig, HoldingDisk, HostSched, Input, Order, Retry, State,
    Taper,
};
use crate::dump::{self, DumpContext, DumpJob, DumpReport, Progress};
use crate::estimate::{self, EstimateContext, EstimateDle, EstimateGroup, GroupResult};
use crate::failure::{DumpFailure, EstimateFailure, Internal};
use crate::features::server_features;
use crate::holding;
use crate::index;
use crate::levels::{self, LevelChoice, LevelInput};
use crate::net::control::Link;
use crate::net::{PoolNeeds, Ports, Tuning, WaitEvent};
use crate::plan::{self, DleSpec, Plan};
use crate::privs;
use crate::progress::{self, View};
use crate::report::{self, DleLine, History, Measured, Summary, Verdict, WaitLine};

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The `CONFIG` argument.
    pub config: String,
    /// amanda-rs settings (run_dir, heartbeat, TIME_WAIT hold).
    pub settings: conf::Settings,
    /// Progress display.
    pub progress: progress::Mode,
    /// When root: become `dumpuser` keeping only CAP_NET_BIND_SERVICE (default true).
    pub drop_privileges: bool,
    /// Writer buffers per dump.
    pub buffers: usize,
    /// Bytes per writer buffer.
    pub buffer_size: usize,
    /// Pause before retrying a dump.
    pub retry_delay: Duration,
}

impl RunOptions {
    /// Defaults for `config`.
    pub fn new(config: &str, settings: conf::Settings) -> RunOptions {
        RunOptions {
            config: config.to_owned(),
            settings,
            progress: progress::Mode::detect(),
            drop_privileges: true,
            buffers: 4,
            buffer_size: 1024 * 1024,
            retry_delay: Duration::from_secs(10),
        }
    }
}

/// What a run produced.
pub struct RunResult {
    /// The rendered report.
    pub report: String,
    /// amdump's exit status bits.
    pub exit_status: i32,
    /// The summary (for tests and callers).
    pub summary: Summary,
}

enum Event {
    Estimate(usize, GroupResult),
    Wait(usize, WaitEvent),
    Dumped(usize, usize, Box<DumpReport>),
}

struct Planned {
    spec: Arc<DleSpec>,
    level: Option<i32>,
    level_reason: String,
    dumpdate: String,
    skipped: Option<String>,
    failed: Option<String>,
    group: Option<usize>,
    host: usize,
    size_hint: Option<u64>,
    rate_kibps: Option<u64>,
}

/// Runs a night: plan, estimates, dumps, report.
pub fn run(opts: RunOptions) -> anyhow::Result<RunResult> {
    let started = Instant::now();
    crate::interrupt::install();
    let plan = plan::load(&opts.config)?;
    let needs = PoolNeeds {
        udp: plan
            .dles
            .iter()
            .any(|d| d.unsupported.is_none() && d.auth.is_udp()),
        tcp: plan
            .dles
            .iter()
            .any(|d| d.unsupported.is_none() && d.auth.reserved_source_port() && !d.auth.is_udp()),
        ssl: plan
            .dles
            .iter()
            .any(|d| d.unsupported.is_none() && !d.auth.reserved_source_port()),
    };
    // The pools (and the host-wide registry directory) are made before the privilege drop.
    let ports = Ports::new(&plan.config, &opts.settings, needs)
        .map_err(|e| anyhow::anyhow!("port pools: {e}"))?;
    let user = plan.config.dumpuser.clone();
    if opts.drop_privileges && privs::is_root() {
        privs::drop_to(&user)?;
    }
    let now = clock::now_unix();
    let timestamp = proto::civil::timestamp(clock::local(now));
    let catalog_path = Catalog::path_for(&plan.config.path(&plan.config.infofile));
    let _run_lock = lock_run(&catalog_path)?;
    let mut catalog = Catalog::open(&catalog_path)?;
    let run_id = catalog.begin_run(&timestamp, &plan.config_name, now)?;

    let mut summary = Summary {
        notes: plan.warnings.clone(),
        ..Summary::heading(&plan, &timestamp)
    };
    let indexdir = plan.config.path(&plan.config.indexdir);
    summary.notes.extend(clean_up_after_killed_runs(
        &plan.holding,
        &indexdir,
        &mut catalog,
    ));

    let planned = plan_levels(&plan, &catalog, now)?;
    let groups = estimate_groups(&plan, &planned);
    let mut night = Night::new(&opts, &plan, planned, groups, ports, &timestamp, user);
    let (tape, tape_error) =
        crate::taper::night::for_run(&plan, &timestamp, &opts.settings, &catalog);
    night.tape = tape;
    night.drive(&mut catalog, run_id)?;
    // The night ends when the taper is done too (issue 15).
    summary.taper = match night.tape.take() {
        Some(t) => {
            let interrupted = crate::interrupt::received().is_some();
            let view = &mut night.view;
            Some(t.finish(&catalog, interrupted, &mut |m| view.event(m)))
        }
        None => tape_error,
    };
    let lines = night.lines();
    summary.dles = lines;
    summary.estimate_time = night.estimate_time.unwrap_or_default();
    summary.holding = night
        .driver
        .holding_written()
        .iter()
        .enumerate()
        .filter(|(_, b)| **b > 0)
        .map(|(i, b)| (plan.holding[i].dir.display().to_string(), *b))
        .collect();
    summary.notes.extend(night.notes.iter().cloned());
    summary.errors.extend(night.errors.iter().cloned());
    summary.wall = started.elapsed();
    let exit_status = summary.exit_status();
    let text = report::render(&summary);
    if let Err(e) = catalog.finish_run(run_id, clock::now_unix(), exit_status) {
        log::warn!("{e}");
    }
    write_report_file(&plan, &timestamp, &text);
    Ok(RunResult {
        report: text,
        exit_status,
        summary,
    })
}

/// What a run that was killed (cron's timeout, a reboot, SIGKILL) left: partial dumps and
/// indexes as `.tmp` files (removed), and finished holding files it renamed but never
/// recorded (adopted after [`holding::verify`], or removed if they do not verify). Only the
/// dump files of this catalog's runs (in their directories, with their datestamp in the
/// header) are considered for the latter. Returns the notes for the report.
pub fn clean_up_after_killed_runs(
    holding: &[plan::Holding],
    indexdir: &Path,
    catalog: &mut Catalog,
) -> Vec<String> {
    // The note for the partial `what` files a sweep of `place` removed, if any.
    let swept_note = |place: String, what: &str, removed: Vec<PathBuf>| {
        let first = removed.first()?;
        Some(format!(
            "{place}: removed {} partial {what} file(s) an interrupted run left (e.g. {})",
            removed.len(),
            first.display()
        ))
    };
    let mut notes = Vec::new();
    for h in holding {
        let place = format!("holding disk {}", h.dir.display());
        notes.extend(swept_note(place, "dump", holding::sweep_stale(&h.dir)));
    }
    let place = format!("index directory {}", indexdir.display());
    notes.extend(swept_note(place, "index", index::sweep_stale(indexdir)));
    let (ours, known) = match (catalog.run_timestamps(), catalog.holding_files()) {
        (Ok(t), Ok(f)) => (t, f),
        (Err(e), _) | (_, Err(e)) => {
            notes.push(format!("cannot look for unrecorded holding files: {e}"));
            return notes;
        }
    };
    for h in holding {
        let mut adopted = Vec::new();
        let mut swept = Vec::new();
        for run_dir in holding::subdirs(&h.dir) {
            let ts = run_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            if !ts.as_ref().is_some_and(|t| ours.contains(t)) {
                continue;
            }
            let ts = ts.unwrap_or_default();
            for file in holding::finished_files(&run_dir) {
                if known.contains(&file) {
                    continue;
                }
                // Only dump files of that run are ours: anything else (Amanda's `pid` lock
                // files, say) is left alone.
                let ours = holding::read_header(&file).is_ok_and(|h| {
                    h.kind == proto::header::FileKind::File
                        && h.datestamp.as_bytes() == ts.as_bytes()
                });
                if !ours {
                    continue;
                }
                match adopt(catalog, &ts, &file) {
                    Ok(()) => adopted.push(file),
                    Err(why) => {
                        if let Err(e) = std::fs::remove_file(&file) {
                            notes.push(format!(
                                "holding disk {}: cannot remove {}, an unrecorded file that does not verify ({why}): {e}",
                                h.dir.display(),
                                file.display()
                            ));
                        } else {
                            swept.push(format!("{} ({why})", file.display()));
                        }
                    }
                }
            }
        }
        if let Some(first) = adopted.first() {
            notes.push(format!(
                "holding disk {}: adopted {} complete dump file(s) an interrupted run had not recorded (header, size and CRC verified; e.g. {}); they are in the catalog now",
                h.dir.display(),
                adopted.len(),
                first.display()
            ));
        }
        if let Some(first) = swept.first() {
            notes.push(format!(
                "holding disk {}: removed {} unrecorded file(s) an interrupted run left that do not verify (e.g. {first})",
                h.dir.display(),
                swept.len(),
            ));
        }
    }
    notes
}

/// Why an unrecorded holding file was not adopted.
#[derive(Debug, thiserror::Error)]
enum AdoptError {
    #[error("{0}")]
    Verify(#[from] holding::VerifyError),
    #[error("{0}")]
    Catalog(#[from] crate::catalog::CatalogError),
}

/// Verifies an unrecorded holding file of run `ts` and records it in the catalog.
fn adopt(catalog: &mut Catalog, ts: &str, file: &Path) -> Result<(), AdoptError> {
    let v = holding::verify(file)?;
    catalog.adopt(&DumpRecord::adopted(ts, file, &v, clock::now_unix()))?;
    Ok(())
}

/// One `dumper run` per configuration at a time (amdump refuses to run twice too): an
/// exclusive lock on `<catalog>.lock`, held until the run ends.
pub(crate) fn lock_run(catalog: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let mut p = catalog.as_os_str().to_owned();
    p.push(".lock");
    let p = PathBuf::from(p);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| anyhow::anyhow!("run lock {}: {e}", p.display()))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!(
            "another `dumper run` of this configuration is running (lock {}: {e})",
            p.display()
        )
    })
}

/// Keeps a copy of the report in `logdir` (best effort).
fn write_report_file(plan: &Plan, timestamp: &str, text: &str) {
    let dir = plan.config.path(&plan.config.logdir);
    if std::fs::create_dir_all(&dir).is_ok() {
        let p = dir.join(format!("dumper.{timestamp}.report"));
        if let Err(e) = std::fs::write(&p, text) {
            log::warn!("{}: {e}", p.display());
        }
    }
}

/// The level of each DLE, its dumpdate, and what the catalog says about size and rate.
fn plan_levels(plan: &Plan, catalog: &Catalog, now: i64) -> anyhow::Result<Vec<Planned>> {
    let mut out = Vec::new();
    let taped = crate::taper::night::taped_dumps(catalog);
    for spec in &plan.dles {
        let host = plan
            .hosts
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(&spec.host))
            .unwrap_or(0);
        let history = catalog.history(&spec.host, &spec.disk)?;
        let LevelPlan {
            level,
            reason,
            skipped,
            dumpdate,
        } = level_plan(spec, &history, &taped, now);
        let same_level = history
            .iter()
            .rev()
            .find(|r| Some(r.level) == level && r.status.is_success());
        let size_hint = same_level.and_then(|r| r.bytes).map(|b| b.max(0) as u64);
        let rate_kibps = history
            .iter()
            .rev()
            .find(|r| r.status.is_success() && r.duration_ms.unwrap_or(0) > 0)
            .and_then(|r| {
                let kib = r.bytes? as f64 / 1024.0;
                let secs = r.duration_ms? as f64 / 1000.0;
                (secs > 0.0).then(|| (kib / secs) as u64)
            });
        out.push(Planned {
            spec: Arc::new(spec.clone()),
            level,
            level_reason: reason,
            dumpdate,
            failed: spec.unsupported.clone(),
            skipped,
            group: None,
            host,
            size_hint,
            rate_kibps,
        });
    }
    Ok(out)
}

/// The level of one DLE tonight (or why it is skipped) and its legacy dumpdate.
pub(crate) struct LevelPlan {
    /// The level, unless skipped.
    pub level: Option<i32>,
    /// Why this level (for the report).
    pub reason: String,
    /// Why the DLE is skipped, if it is.
    pub skipped: Option<String>,
    /// The last successful dump below the level, UTC `Y:M:D:h:m:s`.
    pub dumpdate: String,
}

/// The level policy ([`levels::choose`]) applied to a DLE's catalog `history`; `taped`
/// holds the ids of dumps with a copy on volumes. `dumper run` and ambackupd (issue 14)
/// decide levels the same way.
pub(crate) fn level_plan(
    spec: &DleSpec,
    history: &[DumpRecord],
    taped: &HashSet<i64>,
    now: i64,
) -> LevelPlan {
    // A full counts while its holding file or its copy on volumes exists (issue 15).
    let exists = |r: &DumpRecord| {
        r.holding_file.as_deref().is_some_and(Path::exists) || taped.contains(&r.id)
    };
    let last_full = history
        .iter()
        .rev()
        .find(|r| r.level == 0 && r.status.is_success() && exists(r));
    let choice = levels::choose(&LevelInput {
        now,
        last_full: last_full.map(|r| r.started),
        dumpcycle_days: spec.dumpcycle_days,
        strategy: spec.strategy,
        skip_full: spec.skip_full,
        skip_incr: spec.skip_incr,
    });
    let (level, reason, skipped) = match choice {
        LevelChoice::Dump { level, reason } => (Some(level), reason, None),
        LevelChoice::Skip { reason } => (None, String::new(), Some(reason)),
    };
    // The legacy dumpdate: the last successful dump below this level.
    let dumpdate = match level {
        Some(l) if l > 0 => history
            .iter()
            .rev()
            .find(|r| r.level < l && r.status.is_success())
            .map_or_else(
                || proto::civil::dumpdate(0),
                |r| proto::civil::dumpdate(r.started),
            ),
        _ => proto::civil::dumpdate(0),
    };
    LevelPlan {
        level,
        reason,
        skipped,
        dumpdate,
    }
}

/// Groups the schedulable DLEs by (host, auth, port): one noop + sendsize each.
fn estimate_groups(plan: &Plan, planned: &[Planned]) -> Vec<EstimateGroup> {
    let mut groups: Vec<EstimateGroup> = Vec::new();
    let mut index: HashMap<(String, &'static str, u16), usize> = HashMap::new();
    let _ = plan;
    for p in planned {
        let (Some(level), None, None) = (p.level, &p.failed, &p.skipped) else {
            continue;
        };
        let s = &p.spec;
        let key = (s.host.to_ascii_lowercase(), s.auth.name(), s.client_port);
        let g = *index.entry(key).or_insert_with(|| {
            groups.push(EstimateGroup {
                host: s.host.clone(),
                auth: s.auth,
                port: s.client_port,
                ssl: s.ssl.clone(),
                maxdumps: 1,
                dles: Vec::new(),
            });
            groups.len() - 1
        });
        groups[g].dles.push(EstimateDle {
            id: s.id,
            dle: s.dle.clone(),
            level,
            dumpdate: p.dumpdate.clone(),
            client: !s.estimate_server,
        });
    }
    for g in &mut groups {
        g.maxdumps = plan
            .hosts
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(&g.host))
            .map_or(1, |h| h.maxdumps);
    }
    groups
}

/// Per-DLE bookkeeping of the shell.
struct Outcome {
    report: Option<DumpReport>,
    record: Option<DumpRecord>,
    attempts: u32,
    /// sendbackup REQs sent again, over every attempt.
    resent: u32,
}

struct Night {
    planned: Vec<Planned>,
    groups: Vec<EstimateGroup>,
    group_features: Vec<Option<Features>>,
    driver: Driver,
    ectx: Arc<EstimateContext>,
    workers: Vec<Sender<(usize, DumpJob)>>,
    worker_threads: Vec<std::thread::JoinHandle<()>>,
    view: View,
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    outcomes: Vec<Outcome>,
    holding: Vec<plan::Holding>,
    indexdir: PathBuf,
    timestamp: String,
    estimates_left: usize,
    estimate_time: Option<Duration>,
    started: Instant,
    notes: Vec<String>,
    errors: Vec<String>,
    /// Per DLE, the `.tmp` holding file of its latest attempt (removed if interrupted).
    tmp_files: Vec<Option<PathBuf>>,
    /// Per DLE, its holding-file stem, unique in the night ([`holding::unique_names`]).
    stems: Vec<Vec<u8>>,
    /// Per DLE, its index directory relative to `indexdir`, unique too.
    index_keys: Vec<Vec<u8>>,
    /// Holding files claimed by this night's dumps (so no two get the same name).
    claimed: HashSet<PathBuf>,
    /// Per DLE, the holding file its latest attempt claimed.
    claims: Vec<Option<PathBuf>>,
    /// The taper, when the configuration has a changer.
    tape: Option<crate::taper::night::TapeNight>,
}

impl Night {
    fn new(
        opts: &RunOptions,
        plan: &Plan,
        mut planned: Vec<Planned>,
        groups: Vec<EstimateGroup>,
        ports: Ports,
        timestamp: &str,
        user: String,
    ) -> Night {
        let cfg = &plan.config;
        for (gi, g) in groups.iter().enumerate() {
            for d in &g.dles {
                planned[d.id].group = Some(gi);
            }
        }
        let initiator = InitiatorConfig {
            connect_tries: cfg.connect_tries.max(1),
            req_tries: cfg.req_tries.max(1),
            ..InitiatorConfig::default()
        };
        let tuning = Tuning::from_settings(&opts.settings);
        let ours = server_features();
        let link = Link {
            ours,
            config_name: plan.config_name.clone(),
            user,
            ports,
            tuning,
            initiator,
            dialin: crate::net::control::Dialin::of(
                plan.dles.iter().map(|d| (d.host.as_str(), d.dialin)),
                &opts.settings,
            ),
        };
        let ectx = Arc::new(EstimateContext {
            link: link.clone(),
            ctimeout: cfg.ctimeout,
            etimeout: cfg.etimeout,
            timestamp: timestamp.to_owned(),
        });
        let dctx = Arc::new(DumpContext {
            link,
            dtimeout: cfg.dtimeout,
            max_index_bytes: opts.settings.dumper.max_index_bytes(),
            buffers: opts.buffers,
            buffer_size: opts.buffer_size,
            gzip: Arc::new(filters::gzip::GzipPool::new(
                filters::gzip::default_threads(),
            )),
        });
        let hosts = plan
            .hosts
            .iter()
            .map(|h| HostSched {
                name: h.name.clone(),
                maxdumps: h.maxdumps,
            })
            .collect();
        let scheds = planned
            .iter()
            .map(|p| DleSched {
                host: p.host,
                group: p.group,
                priority: p.spec.priority,
                retry: Retry {
                    times: p.spec.retry_dump,
                    broken_link: p.spec.dialin,
                },
                size_hint: p.size_hint,
                rate_kibps: p.rate_kibps,
                failed: p.failed.clone().or_else(|| p.skipped.clone()),
            })
            .collect();
        let inparallel = cfg.inparallel.max(1) as usize;
        let driver = Driver::new(
            DriverConfig {
                inparallel,
                netusage_kibps: u64::from(cfg.netusage_kibps),
                order: Order::from_dumporder(&cfg.dumporder),
                retry_delay: opts.retry_delay,
                max_estimates: inparallel.max(4),
                holding: plan
                    .holding
                    .iter()
                    .map(|h| HoldingDisk::from_use_kib(h.use_kib))
                    .collect(),
            },
            hosts,
            scheds,
        );
        let (events_tx, events_rx) = unbounded();
        let mut workers = Vec::new();
        let mut worker_threads = Vec::new();
        let mut progress = Vec::new();
        for w in 0..inparallel {
            let (tx, rx) = bounded::<(usize, DumpJob)>(1);
            let p = Arc::new(Progress::default());
            let ctx = Arc::clone(&dctx);
            let ev = events_tx.clone();
            let prog = Arc::clone(&p);
            let t = std::thread::Builder::new()
                .name(format!("dumper-{w}"))
                .spawn(move || worker(w, ctx, rx, ev, prog))
                .expect("spawn a dump worker");
            workers.push(tx);
            worker_threads.push(t);
            progress.push(p);
        }
        let outcomes = planned
            .iter()
            .map(|_| Outcome {
                report: None,
                record: None,
                attempts: 0,
                resent: 0,
            })
            .collect();
        let ngroups = groups.len();
        let nplanned = planned.len();
        let (stems, index_keys, name_notes) = unique_names(&planned);
        Night {
            view: View::new(opts.progress, progress.clone()),
            group_features: vec![None; ngroups],
            estimates_left: ngroups,
            planned,
            groups,
            driver,
            ectx,
            workers,
            worker_threads,
            events_tx,
            events_rx,
            outcomes,
            holding: plan.holding.clone(),
            indexdir: cfg.path(&cfg.indexdir),
            timestamp: timestamp.to_owned(),
            estimate_time: None,
            started: Instant::now(),
            notes: name_notes,
            errors: Vec::new(),
            tmp_files: vec![None; nplanned],
            stems,
            index_keys,
            claimed: HashSet::new(),
            claims: vec![None; nplanned],
            tape: None,
        }
    }

    fn drive(&mut self, catalog: &mut Catalog, run_id: i64) -> anyhow::Result<()> {
        // The holding disks' space is known before the first dump is placed.
        self.tick(catalog);
        self.driver.start(Instant::now());
        let tick = Duration::from_millis(250);
        let mut interrupted = None;
        'run: loop {
            if let Some(sig) = crate::interrupt::received() {
                interrupted = Some(sig);
                break 'run;
            }
            self.tick(catalog);
            while let Some(a) = self.driver.poll_action() {
                match a {
                    Action::StartEstimate { group } => self.start_estimate(group),
                    Action::StartDump {
                        dle,
                        worker,
                        attempt,
                        holding,
                    } => self.start_dump(catalog, run_id, dle, worker, attempt, holding),
                    Action::Failed { dle, reason } => {
                        self.view.failed(&self.planned[dle].spec.label(), &reason);
                        self.record_failure(catalog, run_id, dle, &reason);
                    }
                    Action::Finished => break 'run,
                }
            }
            let timeout = match self.driver.poll_timeout() {
                Some(t) => t.saturating_duration_since(Instant::now()).min(tick),
                None => tick,
            };
            match self.events_rx.recv_timeout(timeout) {
                Ok(ev) => self.on_event(catalog, ev),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    self.view.tick();
                    self.driver.handle_timeout(Instant::now());
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.view.finish();
        if let Some(sig) = interrupted {
            self.abandon(catalog, sig);
            // The workers are left to die with the process: joining would wait for the
            // dumps the admin asked to stop.
            return Ok(());
        }
        // Stop the workers.
        self.workers.clear();
        for t in self.worker_threads.drain(..) {
            let _ = t.join();
        }
        Ok(())
    }

    /// After a signal: removes the partial holding files of the dumps in progress, records
    /// them as stopped, and says what was left undone. Their lines in the report come out
    /// as MISSING.
    fn abandon(&mut self, catalog: &mut Catalog, sig: &'static str) {
        let mut removed = 0;
        for tmp in self.tmp_files.iter().flatten() {
            if std::fs::remove_file(tmp).is_ok() {
                removed += 1;
            }
        }
        let stopped = DumpFailure::Interrupted { signal: sig };
        for dle in 0..self.planned.len() {
            let running = matches!(
                self.driver.track(dle).map(|t| &t.state),
                Some(State::Running { .. })
            );
            if let (true, Some(rec)) = (running, &mut self.outcomes[dle].record) {
                rec.stopped(&stopped);
                if let Err(e) = catalog.update_dump(rec) {
                    self.errors.push(e.to_string());
                }
            }
        }
        let undone = (0..self.planned.len())
            .filter(|&i| {
                self.planned[i].skipped.is_none()
                    && !matches!(
                        self.driver.track(i).map(|t| &t.state),
                        Some(State::Done | State::Failed(_))
                    )
            })
            .count();
        self.notes.push(format!(
            "interrupted by {sig} after {}s: {undone} DLE(s) not dumped ({removed} dump(s) in progress stopped, their partial holding files removed); what finished is in the catalog",
            self.started.elapsed().as_secs()
        ));
    }

    fn start_estimate(&mut self, group: usize) {
        let Some(g) = self.groups.get(group).cloned() else {
            return;
        };
        let ctx = Arc::clone(&self.ectx);
        let tx = self.events_tx.clone();
        self.view.estimating(&g.host, g.dles.len(), g.auth, g.port);
        let spawned = std::thread::Builder::new()
            .name(format!("estimate-{group}"))
            .spawn(move || {
                let mut sink = |_: WaitEvent| {};
                let r = estimate::estimate_group(&ctx, &g, &mut sink);
                let _ = tx.send(Event::Estimate(group, r));
            });
        if let Err(e) = spawned {
            let e = Arc::new(e);
            let results = self.groups[group]
                .dles
                .iter()
                .map(|d| (d.id, Err(EstimateFailure::Thread(Arc::clone(&e)))))
                .collect();
            self.driver
                .handle(Instant::now(), Input::EstimateDone { group, results });
        }
    }

    fn start_dump(
        &mut self,
        catalog: &mut Catalog,
        run_id: i64,
        dle: usize,
        worker: usize,
        attempt: u32,
        hd: usize,
    ) {
        let p = &self.planned[dle];
        let spec = Arc::clone(&p.spec);
        let level = p.level.unwrap_or(0);
        let features = p
            .group
            .and_then(|g| self.group_features.get(g).cloned().flatten())
            .unwrap_or_else(Features::default_2_4_2p2);
        // A name of its own: not another DLE's (unique stems), not one on the disk already
        // (a killed run of the same second, an adopted orphan).
        if let Some(old) = self.claims[dle].take() {
            self.claimed.remove(&old);
        }
        let holding_path = holding::pick_free(
            &self.holding[hd].dir.join(&self.timestamp),
            &self.stems[dle],
            level,
            &self.claimed,
        );
        self.claimed.insert(holding_path.clone());
        self.claims[dle] = Some(holding_path.clone());
        self.tmp_files[dle] = Some(holding::tmp_path(&holding_path));
        let index_path = spec.dle.index.then(|| {
            index::index_path(
                &self.indexdir,
                &self.index_keys[dle],
                &self.timestamp,
                level,
            )
        });
        let maxdumps = self
            .groups
            .get(p.group.unwrap_or(usize::MAX))
            .map_or(1, |g| g.maxdumps);
        let job = DumpJob {
            spec: Arc::clone(&spec),
            level,
            dumpdate: p.dumpdate.clone(),
            timestamp: self.timestamp.clone(),
            holding_path,
            index_path,
            client_features: features,
            maxdumps,
        };
        let mut rec = DumpRecord::started(
            &spec.host,
            &spec.disk,
            level,
            &self.timestamp,
            clock::now_unix(),
        );
        match catalog.insert_dump(run_id, &rec) {
            Ok(id) => rec.id = id,
            Err(e) => self.errors.push(e.to_string()),
        }
        let o = &mut self.outcomes[dle];
        o.record = Some(rec);
        o.attempts = attempt;
        self.view
            .dump_started(worker, &spec.label(), level, attempt, &p.level_reason);
        if self.workers[worker].send((dle, job)).is_err() {
            self.driver.handle(
                Instant::now(),
                Input::DumpFinished {
                    dle,
                    result: Err(DumpFailure::Internal(Internal::WorkerGone)),
                },
            );
        }
    }

    fn record_failure(&mut self, catalog: &mut Catalog, run_id: i64, dle: usize, reason: &str) {
        let p = &self.planned[dle];
        let rec = DumpRecord::not_dumped(
            &p.spec.host,
            &p.spec.disk,
            p.level.unwrap_or(0),
            &self.timestamp,
            clock::now_unix(),
            reason,
        );
        if let Err(e) = catalog.insert_dump(run_id, &rec) {
            self.errors.push(e.to_string());
        }
        if let Some(t) = &mut self.tape {
            t.dumped(&rec);
        }
    }

    /// Between events: the taper's share of the loop (issue 15: its events, what it freed,
    /// what is still scheduled), and the holding disks' free space for the driver.
    fn tick(&mut self, catalog: &Catalog) {
        let now = Instant::now();
        let mut taper = Taper::None;
        if let Some(t) = &mut self.tape {
            for m in t.poll(catalog) {
                self.view.event(&m);
            }
            for (path, bytes) in t.take_freed() {
                if let Some(disk) = self.holding.iter().position(|d| path.starts_with(&d.dir)) {
                    self.driver.handle(now, Input::HoldingFreed { disk, bytes });
                }
            }
            t.scheduled(self.driver.scheduled_bytes());
            taper = if t.will_free() {
                Taper::WillFree
            } else {
                Taper::Idle
            };
        }
        let free = self
            .holding
            .iter()
            .map(|h| holding::free_bytes(&h.dir))
            .collect();
        self.driver.handle(now, Input::HoldingSpace { free, taper });
    }

    /// Feeds an event to the driver, the catalog, the taper and the display.
    fn on_event(&mut self, catalog: &mut Catalog, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Estimate(group, r) => {
                if let Some(f) = self.group_features.get_mut(group) {
                    *f = r.features.clone();
                }
                self.notes.extend(r.notes.iter().cloned());
                self.estimates_left = self.estimates_left.saturating_sub(1);
                if self.estimates_left == 0 {
                    self.estimate_time = Some(self.started.elapsed());
                }
                self.driver.handle(
                    now,
                    Input::EstimateDone {
                        group,
                        results: r.results,
                    },
                );
            }
            Event::Wait(dle, w) => {
                let label = self.planned[dle].spec.label();
                match w {
                    WaitEvent::Waiting { pool, reason } => {
                        self.view.port_wait(&label, &pool, &reason);
                        self.driver
                            .handle(now, Input::PortWait { dle, pool, reason });
                    }
                    WaitEvent::Granted { pool, waited } => {
                        self.view.port_granted(&label, &pool, waited);
                        self.driver
                            .handle(now, Input::PortGranted { dle, pool, waited });
                    }
                }
            }
            Event::Dumped(dle, worker, report) => {
                let label = self.planned[dle].spec.label();
                self.view.dump_ended(worker, &label, &report);
                let waits = self.driver.track(dle).map_or(&[][..], |t| &t.waits[..]);
                let waited: Duration = waits.iter().filter_map(|w| w.waited).sum();
                let reason = waits.first().map(|w| w.reason.clone());
                if let Some(rec) = &mut self.outcomes[dle].record {
                    rec.finish(&report, waited, reason.as_deref());
                    if let Err(e) = catalog.update_dump(rec) {
                        self.errors.push(e.to_string());
                    }
                    if let Some(t) = &mut self.tape {
                        t.dumped(rec);
                    }
                }
                for w in &report.warnings {
                    self.notes.push(format!("{label}: {w}"));
                }
                // The taper has the dump now: the driver learns what it will free, and
                // the disks' space, before the dump's own end.
                self.tick(catalog);
                let result = match &report.failure {
                    None => Ok(report.bytes + proto::header::HEADER_SIZE as u64),
                    Some(f) => Err(f.clone()),
                };
                self.outcomes[dle].resent += report.resent;
                self.outcomes[dle].report = Some(*report);
                self.driver.handle(now, Input::DumpFinished { dle, result });
            }
        }
    }

    /// One report line per planned DLE.
    fn lines(&self) -> Vec<DleLine> {
        self.planned
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let track = self.driver.track(i);
                let o = &self.outcomes[i];
                let r = o.report.as_ref();
                let verdict = match (&p.skipped, track.map(|t| &t.state), r.map(|r| r.status)) {
                    (Some(_), _, _) => Verdict::Skipped,
                    (_, Some(State::Done), Some(DumpStatus::Strange)) => Verdict::Strange,
                    (_, Some(State::Done), _) => Verdict::Done,
                    (_, Some(State::Failed(_)), _) => Verdict::Failed,
                    _ => Verdict::Missing,
                };
                let error = match (&p.skipped, track.map(|t| &t.state)) {
                    (Some(s), _) => Some(s.clone()),
                    (_, Some(State::Failed(e))) => Some(e.clone()),
                    _ => None,
                };
                let ok = matches!(verdict, Verdict::Done | Verdict::Strange);
                DleLine {
                    host: p.spec.host.clone(),
                    disk: String::from_utf8_lossy(&p.spec.disk).into_owned(),
                    level: p.level,
                    verdict,
                    measured: r.map(|r| Measured::of(r, ok)).unwrap_or_default(),
                    history: History {
                        waits: track
                            .map(|t| {
                                t.waits
                                    .iter()
                                    .map(|w| WaitLine {
                                        what: w.what.clone(),
                                        reason: w.reason.clone(),
                                        waited: w.waited.unwrap_or_default(),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                        attempts: o.attempts,
                        retried: track.map(|t| t.retried_errors.clone()).unwrap_or_default(),
                        resent: o.resent,
                    },
                    error,
                    log: if ok && verdict == Verdict::Done {
                        Vec::new()
                    } else {
                        r.map(|r| r.log.clone()).unwrap_or_default()
                    },
                    holding: r
                        .and_then(|r| r.holding.as_ref())
                        .map(|h| h.display().to_string()),
                }
            })
            .collect()
    }
}

/// The holding-file stem and index key of every DLE, unique in the night, and a note for
/// each DLE whose Amanda name had to change because another DLE's sanitises the same.
fn unique_names(planned: &[Planned]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<String>) {
    let stems: Vec<Vec<u8>> = planned
        .iter()
        .map(|p| holding::stem(&p.spec.host, &p.spec.disk))
        .collect();
    let keys: Vec<Vec<u8>> = planned
        .iter()
        .map(|p| index::index_key(&p.spec.host, &p.spec.disk))
        .collect();
    let (unique_stems, unique_keys) = (holding::unique_names(&stems), holding::unique_names(&keys));
    let mut notes = Vec::new();
    for (i, p) in planned.iter().enumerate() {
        if unique_stems[i] == stems[i] && unique_keys[i] == keys[i] {
            continue;
        }
        let first = stems
            .iter()
            .position(|s| *s == stems[i])
            .map_or_else(String::new, |j| planned[j].spec.label());
        notes.push(format!(
            "{}: Amanda's file names for it are those of {first} (sanitising turns / : \\ into _; Amanda's disklist refuses such a pair): its holding files are {}.<level>, its index directory {} (amrecover finds only {first}'s index)",
            p.spec.label(),
            String::from_utf8_lossy(&unique_stems[i]),
            String::from_utf8_lossy(&unique_keys[i]),
        ));
    }
    (unique_stems, unique_keys, notes)
}

fn worker(
    w: usize,
    ctx: Arc<DumpContext>,
    rx: Receiver<(usize, DumpJob)>,
    events: Sender<Event>,
    progress: Arc<Progress>,
) {
    while let Ok((dle, job)) = rx.recv() {
        let ev = events.clone();
        let mut waits = |e: WaitEvent| {
            let _ = ev.send(Event::Wait(dle, e));
        };
        // A bug in one dump (a panic) fails that dump; it must not leave the night waiting
        // forever for a report that never comes.
        let started = Instant::now();
        let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dump::run(&ctx, &job, &progress, &mut waits)
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            let first = what.lines().next().unwrap_or_default();
            DumpReport::failed(
                DumpFailure::Internal(Internal::Panic(first.to_owned())),
                started,
            )
        });
        if events
            .send(Event::Dumped(dle, w, Box::new(report)))
            .is_err()
        {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Status;
    use proto::crc::Crc32c;
    use proto::header::DumpHeader;
    use std::fs;

    fn holding_file(path: &Path, disk: &str, payload: &[u8], finished: bool) {
        let dle = proto::dle::Dle {
            program: "GNUTAR".into(),
            disk: Some(disk.into()),
            ..proto::dle::Dle::default()
        };
        let info = proto::mesg::InfoFields {
            backup: Some("/bin/tar".into()),
            ..Default::default()
        };
        let mut h = DumpHeader::for_dump(b"20260101000000", b"h", &dle, 0, &info, None);
        if finished {
            let mut crc = Crc32c::new();
            crc.update(payload);
            h.server_crc = Some(crc.value());
        }
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, [h.build().unwrap(), payload.to_vec()].concat()).unwrap();
    }

    // issue 10: a run killed between the rename and the catalog update left a complete
    // holding file that nothing adopted or removed.
    #[test]
    fn the_next_run_adopts_complete_unrecorded_files_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let hd = plan::Holding {
            name: "hd".into(),
            dir: dir.path().join("hold"),
            use_kib: 0,
        };
        let run_dir = hd.dir.join("20260101000000");
        let mut cat = Catalog::open_in_memory().unwrap();
        let run = cat.begin_run("20260101000000", "t", 0).unwrap();
        let mut lost = DumpRecord::started("h", b"/a", 0, "20260101000000", 0);
        lost.id = cat.insert_dump(run, &lost).unwrap();
        // The killed run: /a renamed but not recorded; /b's file cut short; a partial .tmp;
        // a file in a directory that is not one of our runs stays.
        holding_file(&run_dir.join("h._a.0"), "/a", &[1; 5000], true);
        holding_file(&run_dir.join("h._b.0"), "/b", &[2; 5000], false);
        fs::write(run_dir.join("h._c.0.tmp"), b"partial").unwrap();
        holding_file(&hd.dir.join("20250101000000/h._z.0"), "/z", &[3; 10], false);
        fs::write(run_dir.join("pid"), b"4242").unwrap();
        let idx = dir.path().join("index/h/_a");
        fs::create_dir_all(&idx).unwrap();
        fs::write(idx.join("20260101000000_0.gz.tmp"), b"x").unwrap();

        cat.begin_run("20260102000000", "t", 1).unwrap();
        let notes = clean_up_after_killed_runs(
            std::slice::from_ref(&hd),
            &dir.path().join("index"),
            &mut cat,
        );
        let all = notes.join("\n");
        assert!(all.contains("removed 1 partial dump file(s)"), "{all}");
        assert!(all.contains("removed 1 partial index file(s)"), "{all}");
        assert!(
            all.contains("adopted 1 complete dump file(s)") && all.contains("h._a.0"),
            "{all}"
        );
        assert!(
            all.contains("removed 1 unrecorded file(s)") && all.contains("no SERVER-CRC"),
            "{all}"
        );
        let a = cat.history("h", b"/a").unwrap();
        assert_eq!(a.len(), 1, "the lost row itself is finished");
        assert_eq!(a[0].status, Status::Done);
        assert_eq!(
            a[0].holding_file.as_deref(),
            Some(run_dir.join("h._a.0").as_path())
        );
        assert_eq!(a[0].bytes, Some(5000));
        assert!(!run_dir.join("h._b.0").exists() && !run_dir.join("h._c.0.tmp").exists());
        assert!(
            hd.dir.join("20250101000000/h._z.0").exists(),
            "not our run: left alone"
        );
        assert!(run_dir.join("pid").exists(), "not a dump file: left alone");
        // Nothing is left to do the next time.
        assert!(clean_up_after_killed_runs(&[hd], &dir.path().join("index"), &mut cat).is_empty());
    }
}
