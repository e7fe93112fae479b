//! The scheduler of a run ("driver", after Amanda's): a sans-IO state machine.
//!
//! Inputs are events with `now` ([`Driver::handle`], [`Driver::handle_timeout`]); outputs
//! are actions ([`Driver::poll_action`]) and one timer ([`Driver::poll_timeout`]). The shell
//! (`run.rs`) starts estimates and dumps when told, on threads, and feeds their results
//! back. No clock, no threads, no I/O here, so every scheduling rule has a virtual-time
//! test (`tests.rs`). See `LIFECYCLE.md` beside this file for the states, timers and who
//! owns what.
//!
//! Rules:
//! - estimates: at most `max_estimates` groups (host, auth, port) at once; a DLE becomes
//!   ready when its group's estimate is back; an estimate error fails the DLE;
//! - dumps: a ready DLE starts on the lowest-numbered idle worker when
//!   * a worker is idle (`inparallel` workers),
//!   * its host runs fewer than `maxdumps` dumps,
//!   * `netusage` allows it: the running dumps' expected rates plus its own stay within
//!     `netusage` KiB/s, or nothing runs at all (so a lone dump always goes). The expected
//!     rate is the DLE's last measured rate from the catalog, else `netusage / inparallel`;
//! - order among ready DLEs: higher `priority` first, then by estimated size (smallest
//!   first, or largest first when `dumporder` starts with an upper-case letter), then
//!   disklist order;
//! - holding disks ([`holding`]): a dump goes to a disk where its estimate fits (the one
//!   with the fewest running dumps, then the most room), and reserves its estimate there;
//!   the reservation goes when it ends, and what it wrote counts until the taper removes
//!   it ([`Input::HoldingFreed`]). The shell reports the file systems' free space
//!   ([`Input::HoldingSpace`]). A dump that fits nowhere waits while something will free
//!   space (the taper will, or other dumps run and their reservations may shrink); when
//!   nothing will, it starts anyway on the disk with the most room, and its failure says
//!   why (issue 15);
//! - a retryable failure (no REP, NAK, a stream that could not be connected) is retried
//!   after `retry_delay`, at most `retry-dump` times; other failures are final;
//! - every time a ready DLE cannot start, the reason is kept; when it starts, how long it
//!   waited and why go into its [`Track`] for the report (with the port waits its worker
//!   reported).
//!
//! What this module must not do: know about sockets, files or the catalog.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::failure::{DumpFailure, EstimateFailure};

pub mod holding;

pub use holding::HoldingDisk;
use holding::{Choice, Disks};

/// Which ready DLE goes first (after priority).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Smallest estimate first (`dumporder` starting with s, t or b).
    SmallestFirst,
    /// Largest estimate first (S, T or B).
    LargestFirst,
}

impl Order {
    /// From amanda.conf's `dumporder` (its first letter).
    pub fn from_dumporder(s: &str) -> Order {
        match s.chars().next() {
            Some('S' | 'T' | 'B') => Order::LargestFirst,
            _ => Order::SmallestFirst,
        }
    }
}

/// The driver's knobs.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Dump workers (`inparallel`).
    pub inparallel: usize,
    /// `netusage` in KiB/s; 0 means no limit.
    pub netusage_kibps: u64,
    /// Order among ready DLEs.
    pub order: Order,
    /// Pause before a retry.
    pub retry_delay: Duration,
    /// Estimate groups asked at once.
    pub max_estimates: usize,
    /// The holding disks, in configuration order (none: one without limits).
    pub holding: Vec<HoldingDisk>,
}

/// A client host.
#[derive(Clone, Debug)]
pub struct HostSched {
    /// Its name (for messages).
    pub name: String,
    /// `maxdumps`.
    pub maxdumps: u32,
}

/// One DLE as the driver sees it.
#[derive(Clone, Debug)]
pub struct DleSched {
    /// Index into the hosts.
    pub host: usize,
    /// Estimate group (`None`: no estimate needed, ready at once).
    pub group: Option<usize>,
    /// `priority` (higher first).
    pub priority: i32,
    /// Which failures are retried, and how often.
    pub retry: Retry,
    /// Size known before estimates (server estimate from the catalog), bytes.
    pub size_hint: Option<u64>,
    /// Last measured rate, KiB/s.
    pub rate_kibps: Option<u64>,
    /// Already failed (unsupported, level skip...): never scheduled.
    pub failed: Option<String>,
}

/// A DLE's retry policy: how many times (`retry_dump`), and for which failures.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// How many retries a DLE gets.
    pub times: u32,
    /// A broken link is retried too (`dialin yes`, issue 14; see [`DumpFailure::broke_link`]).
    pub broken_link: bool,
}

impl Retry {
    /// Whether `f` earns a retry under this policy (the count aside).
    pub fn covers(&self, f: &DumpFailure) -> bool {
        f.retryable() || self.broken_link && f.broke_link()
    }
}

/// What happened to an estimate of one DLE: its size in bytes (`None`: unknown), or why
/// there is none.
pub type EstimateResult = crate::estimate::Estimate;

/// An event for the driver.
#[derive(Clone, Debug)]
pub enum Input {
    /// A group's estimates came back; one entry per DLE of the group.
    EstimateDone {
        /// The group.
        group: usize,
        /// Estimated bytes per DLE (`Ok(None)`: unknown), or why not.
        results: Vec<(usize, EstimateResult)>,
    },
    /// A worker is waiting for a port.
    PortWait {
        /// The DLE.
        dle: usize,
        /// The pool (`udp 850-859`).
        pool: String,
        /// portpool's reason.
        reason: String,
    },
    /// The worker got its port.
    PortGranted {
        /// The DLE.
        dle: usize,
        /// The pool.
        pool: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The holding disks' file systems: `free[i]` bytes free on disk `i` now (statvfs;
    /// what running dumps wrote so far is already off; `None`: it cannot be read, and only
    /// `use` bounds the disk), and what the taper does.
    HoldingSpace {
        /// Free bytes per disk, in configuration order.
        free: Vec<Option<u64>>,
        /// The taper.
        taper: Taper,
    },
    /// The taper removed `bytes` of this run's files from holding disk `disk`.
    HoldingFreed {
        /// The disk.
        disk: usize,
        /// The bytes.
        bytes: u64,
    },
    /// A dump ended.
    DumpFinished {
        /// The DLE.
        dle: usize,
        /// DONE or STRANGE with the bytes its holding file takes (header included), or
        /// why it failed (and whether a retry may help).
        result: Result<u64, DumpFailure>,
    },
}

/// The taper, as far as holding space goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Taper {
    /// No taper tonight: space comes back only when running dumps end smaller than their
    /// reservations (or fail).
    #[default]
    None,
    /// A taper runs, with nothing to write now.
    Idle,
    /// The taper is writing or holds dumps it will write: space will come back.
    WillFree,
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ask the hosts of this group for noop and estimates.
    StartEstimate {
        /// The group.
        group: usize,
    },
    /// Dump this DLE on this worker, to this holding disk.
    StartDump {
        /// The DLE.
        dle: usize,
        /// The worker (0-based).
        worker: usize,
        /// 1 for the first try.
        attempt: u32,
        /// The holding disk (index in [`DriverConfig::holding`]).
        holding: usize,
    },
    /// The DLE failed for good without (another) dump attempt.
    Failed {
        /// The DLE.
        dle: usize,
        /// Why.
        reason: String,
    },
    /// Nothing is left to do.
    Finished,
}

/// Where a DLE is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for its estimate.
    Estimating,
    /// Can start.
    Ready,
    /// Waiting for a retry time.
    RetryAt(Instant),
    /// Dumping on a worker.
    Running {
        /// The worker.
        worker: usize,
    },
    /// Dumped.
    Done,
    /// Failed for good.
    Failed(String),
}

/// A wait of a DLE, for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wait {
    /// What it waited for: `workers`, `maxdumps`, `netusage`, or a port pool.
    pub what: String,
    /// Why, in words.
    pub reason: String,
    /// How long (`None` while it still waits).
    pub waited: Option<Duration>,
}

/// Everything the driver knows about a DLE, for the report.
#[derive(Clone, Debug)]
pub struct Track {
    /// Where it is.
    pub state: State,
    /// Estimated bytes.
    pub estimate: Option<u64>,
    /// Dump attempts so far.
    pub attempts: u32,
    /// Retries left.
    pub retries_left: u32,
    /// Scheduling and port waits, in order.
    pub waits: Vec<Wait>,
    /// Errors of attempts that were retried.
    pub retried_errors: Vec<String>,
    blocked: Option<(Instant, String, String)>,
    /// While it runs: its holding disk and the bytes reserved there.
    reservation: Option<(usize, u64)>,
}

/// The scheduler. See the module docs.
#[derive(Debug)]
pub struct Driver {
    cfg: DriverConfig,
    hosts: Vec<HostSched>,
    dles: Vec<DleSched>,
    tracks: Vec<Track>,
    groups: Vec<Vec<usize>>,
    groups_pending: VecDeque<usize>,
    estimates_running: usize,
    workers: Vec<Option<usize>>,
    host_running: Vec<u32>,
    actions: VecDeque<Action>,
    finished_sent: bool,
    started: bool,
    disks: Disks,
    taper: Taper,
}

impl Driver {
    /// A driver for `dles` on `hosts`. Nothing happens before [`Driver::start`].
    pub fn new(cfg: DriverConfig, hosts: Vec<HostSched>, dles: Vec<DleSched>) -> Driver {
        let ngroups = dles
            .iter()
            .filter_map(|d| d.group)
            .max()
            .map_or(0, |g| g + 1);
        let mut groups = vec![Vec::new(); ngroups];
        let tracks = dles
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let state = match (&d.failed, d.group) {
                    (Some(r), _) => State::Failed(r.clone()),
                    (None, Some(g)) => {
                        if let Some(v) = groups.get_mut(g) {
                            v.push(i);
                        }
                        State::Estimating
                    }
                    (None, None) => State::Ready,
                };
                Track {
                    state,
                    estimate: d.size_hint,
                    attempts: 0,
                    retries_left: d.retry.times,
                    waits: Vec::new(),
                    retried_errors: Vec::new(),
                    blocked: None,
                    reservation: None,
                }
            })
            .collect();
        let workers = vec![None; cfg.inparallel.max(1)];
        Driver {
            host_running: vec![0; hosts.len()],
            groups_pending: (0..ngroups).collect(),
            estimates_running: 0,
            workers,
            actions: VecDeque::new(),
            finished_sent: false,
            started: false,
            disks: Disks::new(&cfg.holding),
            taper: Taper::None,
            cfg,
            hosts,
            dles,
            tracks,
            groups,
        }
    }

    /// Starts the run: estimates, and dumps that need none.
    pub fn start(&mut self, now: Instant) {
        self.started = true;
        self.step(now);
    }

    /// Feeds an event.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::EstimateDone { group, results } => {
                self.estimates_running = self.estimates_running.saturating_sub(1);
                let members = self.groups.get(group).cloned().unwrap_or_default();
                let mut results = results;
                for dle in members {
                    let r = match results.iter().position(|(d, _)| *d == dle) {
                        Some(i) => results.swap_remove(i).1,
                        None => Err(EstimateFailure::NotReturned),
                    };
                    let Some(t) = self.tracks.get_mut(dle) else {
                        continue;
                    };
                    if t.state != State::Estimating {
                        continue;
                    }
                    match r {
                        Ok(size) => {
                            if size.is_some() {
                                t.estimate = size;
                            }
                            t.state = State::Ready;
                        }
                        Err(failure) => {
                            let reason = failure.to_string();
                            t.state = State::Failed(reason.clone());
                            self.actions.push_back(Action::Failed { dle, reason });
                        }
                    }
                }
            }
            Input::PortWait { dle, pool, reason } => {
                if let Some(t) = self.tracks.get_mut(dle) {
                    t.waits.push(Wait {
                        what: pool,
                        reason,
                        waited: None,
                    });
                }
            }
            Input::PortGranted { dle, pool, waited } => {
                if let Some(t) = self.tracks.get_mut(dle)
                    && let Some(w) = t
                        .waits
                        .iter_mut()
                        .rev()
                        .find(|w| w.what == pool && w.waited.is_none())
                {
                    w.waited = Some(waited);
                }
            }
            Input::HoldingSpace { free, taper } => {
                self.disks.report(&free);
                self.taper = taper;
            }
            Input::HoldingFreed { disk, bytes } => self.disks.freed(disk, bytes),
            Input::DumpFinished { dle, result } => {
                let Some(t) = self.tracks.get_mut(dle) else {
                    return;
                };
                let State::Running { worker } = t.state else {
                    return;
                };
                if let Some(w) = self.workers.get_mut(worker) {
                    *w = None;
                }
                if let Some(d) = self.dles.get(dle)
                    && let Some(n) = self.host_running.get_mut(d.host)
                {
                    *n = n.saturating_sub(1);
                }
                if let Some((disk, reserved)) = t.reservation.take() {
                    let written = *result.as_ref().unwrap_or(&0);
                    self.disks.release(disk, reserved, written);
                }
                let retry = self.dles.get(dle).map(|d| d.retry);
                t.state = match result {
                    Ok(_) => State::Done,
                    Err(f) if retry.is_some_and(|r| r.covers(&f)) && t.retries_left > 0 => {
                        t.retries_left -= 1;
                        t.retried_errors.push(f.report_text());
                        State::RetryAt(now + self.cfg.retry_delay)
                    }
                    Err(f) => State::Failed(f.report_text()),
                };
            }
        }
        self.step(now);
    }

    /// Call when [`Driver::poll_timeout`] has passed (early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.step(now);
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call [`Driver::handle_timeout`]: the earliest retry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tracks
            .iter()
            .filter_map(|t| match t.state {
                State::RetryAt(at) => Some(at),
                _ => None,
            })
            .min()
    }

    /// Whether every DLE is done or failed.
    pub fn is_finished(&self) -> bool {
        self.tracks
            .iter()
            .all(|t| matches!(t.state, State::Done | State::Failed(_)))
    }

    /// What the driver knows about a DLE.
    pub fn track(&self, dle: usize) -> Option<&Track> {
        self.tracks.get(dle)
    }

    /// Dumps running now.
    pub fn running(&self) -> usize {
        self.workers.iter().filter(|w| w.is_some()).count()
    }

    /// Estimated bytes of the DLEs not done or failed yet (for the taper's
    /// `flush-threshold-scheduled`).
    pub fn scheduled_bytes(&self) -> u64 {
        self.tracks
            .iter()
            .filter(|t| !matches!(t.state, State::Done | State::Failed(_)))
            .filter_map(|t| t.estimate)
            .sum()
    }

    /// Bytes this run's finished dumps wrote to each holding disk.
    pub fn holding_written(&self) -> Vec<u64> {
        self.disks.written()
    }

    /// Room on holding disk `disk` for a new dump now.
    pub fn holding_room(&self, disk: usize) -> u64 {
        self.disks.room(disk)
    }

    fn step(&mut self, now: Instant) {
        if !self.started {
            return;
        }
        for t in &mut self.tracks {
            if let State::RetryAt(at) = t.state
                && at <= now
            {
                t.state = State::Ready;
            }
        }
        while self.estimates_running < self.cfg.max_estimates.max(1) {
            let Some(g) = self.groups_pending.pop_front() else {
                break;
            };
            // A group whose DLEs all failed already needs no estimate.
            let live = self
                .groups
                .get(g)
                .is_some_and(|m| m.iter().any(|&d| self.tracks[d].state == State::Estimating));
            if !live {
                continue;
            }
            self.estimates_running += 1;
            self.actions.push_back(Action::StartEstimate { group: g });
        }
        self.schedule(now);
        if self.is_finished() && !self.finished_sent && self.estimates_running == 0 {
            self.finished_sent = true;
            self.actions.push_back(Action::Finished);
        }
    }

    fn charge(&self, dle: usize) -> u64 {
        let fair = self.cfg.netusage_kibps / self.cfg.inparallel.max(1) as u64;
        self.dles
            .get(dle)
            .and_then(|d| d.rate_kibps)
            .unwrap_or(fair)
            .min(self.cfg.netusage_kibps)
    }

    fn netusage_in_use(&self) -> u64 {
        self.workers.iter().flatten().map(|&d| self.charge(d)).sum()
    }

    fn ready_in_order(&self) -> Vec<usize> {
        let mut ready: Vec<usize> = (0..self.tracks.len())
            .filter(|&i| self.tracks[i].state == State::Ready)
            .collect();
        let order = self.cfg.order;
        ready.sort_by(|&a, &b| {
            let (da, db) = (&self.dles[a], &self.dles[b]);
            let (sa, sb) = (
                self.tracks[a].estimate.unwrap_or(0),
                self.tracks[b].estimate.unwrap_or(0),
            );
            db.priority
                .cmp(&da.priority)
                .then_with(|| match order {
                    Order::SmallestFirst => sa.cmp(&sb),
                    Order::LargestFirst => sb.cmp(&sa),
                })
                .then(a.cmp(&b))
        });
        ready
    }

    fn schedule(&mut self, now: Instant) {
        for dle in self.ready_in_order() {
            let host = self.dles[dle].host;
            let need = self.tracks[dle].estimate.unwrap_or(0);
            let maxdumps = self.hosts.get(host).map_or(1, |h| h.maxdumps.max(1));
            let running_on_host = self.host_running.get(host).copied().unwrap_or(0);
            let idle = self.workers.iter().position(Option::is_none);
            let blocked: Option<(&str, String)> = if idle.is_none() {
                Some((
                    "workers",
                    format!("all {} workers busy (inparallel)", self.workers.len()),
                ))
            } else if running_on_host >= maxdumps {
                Some((
                    "maxdumps",
                    format!(
                        "{} already runs {running_on_host} dump(s) (maxdumps {maxdumps})",
                        self.hosts.get(host).map_or("?", |h| h.name.as_str())
                    ),
                ))
            } else if self.cfg.netusage_kibps > 0 && self.running() > 0 && {
                self.netusage_in_use() + self.charge(dle) > self.cfg.netusage_kibps
            } {
                Some((
                    "netusage",
                    format!(
                        "netusage: {} of {} KiB/s expected in use, this dump needs {}",
                        self.netusage_in_use(),
                        self.cfg.netusage_kibps,
                        self.charge(dle)
                    ),
                ))
            } else if let Choice::Tightest { room, .. } = self.disks.choose(need)
                && (self.taper == Taper::WillFree || self.running() > 0)
            {
                let until = match self.taper {
                    Taper::None => "the running dumps to end",
                    Taper::Idle | Taper::WillFree => "the taper to free space",
                };
                Some((
                    "holding",
                    format!(
                        "holding disk: the dump needs about {need} bytes, {room} are free; waiting for {until}"
                    ),
                ))
            } else {
                None
            };
            let t = &mut self.tracks[dle];
            match (blocked, idle) {
                (Some((what, reason)), _) => {
                    if t.blocked.is_none() {
                        t.blocked = Some((now, what.to_owned(), reason));
                    }
                }
                (None, Some(worker)) => {
                    if let Some((since, what, reason)) = t.blocked.take() {
                        let waited = now.saturating_duration_since(since);
                        if !waited.is_zero() {
                            t.waits.push(Wait {
                                what,
                                reason,
                                waited: Some(waited),
                            });
                        }
                    }
                    t.attempts += 1;
                    t.state = State::Running { worker };
                    let disk = match self.disks.choose(need) {
                        Choice::Fits(d) | Choice::Tightest { disk: d, .. } => d,
                    };
                    self.disks.reserve(disk, need);
                    t.reservation = Some((disk, need));
                    self.workers[worker] = Some(dle);
                    if let Some(n) = self.host_running.get_mut(host) {
                        *n += 1;
                    }
                    self.actions.push_back(Action::StartDump {
                        dle,
                        worker,
                        attempt: t.attempts,
                        holding: disk,
                    });
                }
                (None, None) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
