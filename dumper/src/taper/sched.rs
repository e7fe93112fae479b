//! When the taper writes what: a sans-IO state machine between the dumps that land on the
//! holding disk and the volume writer, after Amanda's driver.
//!
//! Inputs: a dump is complete on the holding disk ([`Input::Dumped`]), what is still to be
//! dumped tonight ([`Input::Scheduled`]), the end of dumping ([`Input::DumpingDone`]), and
//! the writer's results ([`Input::Taped`], [`Input::NotTaped`]). Outputs: write a dump
//! ([`Action::Tape`], one at a time, first come first served: `taperalgo first`), or leave
//! it on the holding disk with the reason ([`Action::Keep`]).
//!
//! Rules:
//! - while a volume is loaded with room, every finished dump goes to it at once;
//! - a **new** volume is started only when the holding disk holds at least
//!   `flush-threshold-dumped` percent of a volume, and that plus what is still scheduled
//!   tonight at least `flush-threshold-scheduled` percent;
//! - once dumping is over, a new volume is started for what remains only when it is at
//!   least `taperflush` percent of a volume; otherwise it stays for the next run (with
//!   `autoflush`) or `dumper flush`;
//! - when the writer says no volume can be had (`runtapes` used up, no usable slot),
//!   everything still queued is kept, with that reason.
//!
//! What this module must not do: touch files, volumes or the clock.

use std::collections::VecDeque;

/// The knobs.
#[derive(Clone, Debug, Default)]
pub struct SchedConfig {
    /// A volume's capacity in bytes (tapetype `length`).
    pub volume_bytes: u64,
    /// `taperflush` percent.
    pub taperflush: u32,
    /// `flush-threshold-dumped` percent.
    pub threshold_dumped: u32,
    /// `flush-threshold-scheduled` percent.
    pub threshold_scheduled: u32,
}

/// An event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Dump `id` is complete on the holding disk: `bytes` to write.
    Dumped {
        /// The dump.
        id: usize,
        /// Its size.
        bytes: u64,
    },
    /// Bytes still to be dumped tonight (estimates of the dumps not finished).
    Scheduled(u64),
    /// No more dumps tonight.
    DumpingDone,
    /// The writer finished dump `id`; `volume_open`: a volume with room is still loaded.
    Taped {
        /// The dump.
        id: usize,
        /// A volume is loaded.
        volume_open: bool,
    },
    /// The writer could not write a dump.
    NotTaped(Refused),
}

/// A dump the writer could not write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The dump.
    pub id: usize,
    /// Why.
    pub reason: String,
    /// No volume can be had tonight: keep everything else too.
    pub stop: bool,
    /// A volume is loaded.
    pub volume_open: bool,
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send dump `id` to the writer.
    Tape(usize),
    /// Leave dump `id` on the holding disk.
    Keep {
        /// The dump.
        id: usize,
        /// Why.
        reason: String,
        /// A failure (amdump's tape bit), not a choice such as `taperflush`.
        error: bool,
    },
}

/// The taper's scheduler. See the module docs.
#[derive(Debug)]
pub struct TaperSched {
    cfg: SchedConfig,
    queue: VecDeque<(usize, u64)>,
    in_flight: Option<usize>,
    volume_open: bool,
    dumping_done: bool,
    scheduled: u64,
    stopped: Option<String>,
    actions: VecDeque<Action>,
    waiting: Option<String>,
}

fn pct(p: u32, of: u64) -> u64 {
    (u128::from(of) * u128::from(p) / 100) as u64
}

impl TaperSched {
    /// A scheduler with nothing queued.
    pub fn new(cfg: SchedConfig) -> TaperSched {
        TaperSched {
            cfg,
            queue: VecDeque::new(),
            in_flight: None,
            volume_open: false,
            dumping_done: false,
            scheduled: 0,
            stopped: None,
            actions: VecDeque::new(),
            waiting: None,
        }
    }

    /// Feeds an event.
    pub fn handle(&mut self, input: Input) {
        match input {
            Input::Dumped { id, bytes } => self.queue.push_back((id, bytes)),
            Input::Scheduled(b) => self.scheduled = b,
            Input::DumpingDone => {
                self.dumping_done = true;
                self.scheduled = 0;
            }
            Input::Taped { id, volume_open } => {
                if self.in_flight == Some(id) {
                    self.in_flight = None;
                }
                self.volume_open = volume_open;
            }
            Input::NotTaped(Refused {
                id,
                reason,
                stop,
                volume_open,
            }) => {
                if self.in_flight == Some(id) {
                    self.in_flight = None;
                }
                self.volume_open = volume_open;
                self.actions.push_back(Action::Keep {
                    id,
                    reason: reason.clone(),
                    error: true,
                });
                if stop {
                    self.stopped = Some(reason);
                }
            }
        }
        self.step();
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Nothing queued, nothing being written, and no more dumps coming.
    pub fn is_finished(&self) -> bool {
        self.dumping_done && self.queue.is_empty() && self.in_flight.is_none()
    }

    /// Something queued or being written will free holding space (for the driver's
    /// holding-disk gate).
    pub fn will_free(&self) -> bool {
        self.in_flight.is_some() || (!self.queue.is_empty() && self.stopped.is_none())
    }

    /// Why queued dumps wait (a threshold), if they do.
    pub fn waiting(&self) -> Option<&str> {
        self.waiting.as_deref()
    }

    fn queued(&self) -> u64 {
        self.queue.iter().map(|(_, b)| b).sum()
    }

    fn start_allowed(&mut self) -> bool {
        let cap = self.cfg.volume_bytes;
        let q = self.queued();
        if self.dumping_done {
            let need = pct(self.cfg.taperflush, cap);
            return q >= need;
        }
        let need_d = pct(self.cfg.threshold_dumped, cap);
        let need_s = pct(self.cfg.threshold_scheduled, cap);
        if q >= need_d && q + self.scheduled >= need_s {
            self.waiting = None;
            return true;
        }
        self.waiting = Some(format!(
            "waiting for flush-threshold-dumped {}% ({need_d} bytes) / flush-threshold-scheduled {}% ({need_s} bytes) of a volume: {q} bytes dumped, {} scheduled",
            self.cfg.threshold_dumped, self.cfg.threshold_scheduled, self.scheduled
        ));
        false
    }

    fn step(&mut self) {
        if let Some(reason) = &self.stopped {
            while let Some((id, _)) = self.queue.pop_front() {
                self.actions.push_back(Action::Keep {
                    id,
                    reason: reason.clone(),
                    error: true,
                });
            }
            return;
        }
        if self.in_flight.is_some() || self.queue.is_empty() {
            return;
        }
        if self.volume_open || self.start_allowed() {
            if let Some((id, _)) = self.queue.pop_front() {
                self.in_flight = Some(id);
                self.actions.push_back(Action::Tape(id));
            }
            return;
        }
        if self.dumping_done {
            let reason = format!(
                "taperflush {}%: the {} bytes left on the holding disk are less than {}% of a volume ({} bytes); kept for the next run (autoflush) or `dumper flush`",
                self.cfg.taperflush,
                self.queued(),
                self.cfg.taperflush,
                self.cfg.volume_bytes
            );
            while let Some((id, _)) = self.queue.pop_front() {
                self.actions.push_back(Action::Keep {
                    id,
                    reason: reason.clone(),
                    error: false,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &mut TaperSched) -> Vec<Action> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    const MB: u64 = 1024 * 1024;

    fn cfg(dumped: u32, scheduled: u32, taperflush: u32) -> SchedConfig {
        SchedConfig {
            volume_bytes: 100 * MB,
            taperflush,
            threshold_dumped: dumped,
            threshold_scheduled: scheduled,
        }
    }

    #[test]
    fn with_zero_thresholds_every_dump_is_taped_as_it_lands_one_at_a_time() {
        let mut s = TaperSched::new(cfg(0, 0, 0));
        s.handle(Input::Dumped { id: 0, bytes: MB });
        s.handle(Input::Dumped { id: 1, bytes: MB });
        assert_eq!(drain(&mut s), [Action::Tape(0)]);
        assert!(s.will_free());
        s.handle(Input::Taped {
            id: 0,
            volume_open: true,
        });
        assert_eq!(drain(&mut s), [Action::Tape(1)]);
        s.handle(Input::DumpingDone);
        assert!(!s.is_finished());
        s.handle(Input::Taped {
            id: 1,
            volume_open: true,
        });
        assert!(s.is_finished() && drain(&mut s).is_empty());
    }

    #[test]
    fn a_new_volume_waits_for_both_flush_thresholds() {
        let mut s = TaperSched::new(cfg(20, 50, 0));
        s.handle(Input::Scheduled(60 * MB));
        s.handle(Input::Dumped {
            id: 0,
            bytes: 10 * MB,
        });
        assert!(drain(&mut s).is_empty(), "10% dumped < 20%");
        assert!(s.waiting().unwrap().contains("flush-threshold-dumped 20%"));
        s.handle(Input::Dumped {
            id: 1,
            bytes: 10 * MB,
        });
        // 20 MB dumped (>= 20%), 20 + 60 scheduled >= 50%.
        assert_eq!(drain(&mut s), [Action::Tape(0)]);
        s.handle(Input::Taped {
            id: 0,
            volume_open: true,
        });
        // The volume is loaded: no threshold applies to it.
        assert_eq!(drain(&mut s), [Action::Tape(1)]);
        let mut s = TaperSched::new(cfg(0, 50, 0));
        s.handle(Input::Scheduled(10 * MB));
        s.handle(Input::Dumped {
            id: 0,
            bytes: 10 * MB,
        });
        assert!(
            drain(&mut s).is_empty(),
            "20% < flush-threshold-scheduled 50%"
        );
    }

    #[test]
    fn at_the_end_taperflush_decides_and_the_rest_is_kept_with_the_reason() {
        let mut s = TaperSched::new(cfg(90, 90, 30));
        s.handle(Input::Dumped {
            id: 0,
            bytes: 10 * MB,
        });
        s.handle(Input::DumpingDone);
        let a = drain(&mut s);
        assert!(
            matches!(&a[..], [Action::Keep { id: 0, reason, error: false }] if reason.contains("taperflush 30%")),
            "{a:?}"
        );
        assert!(s.is_finished());
        let mut s = TaperSched::new(cfg(90, 90, 5));
        s.handle(Input::Dumped {
            id: 0,
            bytes: 10 * MB,
        });
        s.handle(Input::DumpingDone);
        assert_eq!(drain(&mut s), [Action::Tape(0)]);
    }

    #[test]
    fn no_volume_keeps_everything_queued() {
        let mut s = TaperSched::new(cfg(0, 0, 0));
        for id in 0..3 {
            s.handle(Input::Dumped { id, bytes: MB });
        }
        assert_eq!(drain(&mut s), [Action::Tape(0)]);
        s.handle(Input::NotTaped(Refused {
            id: 0,
            reason: "runtapes 1: no more volumes tonight".into(),
            stop: true,
            volume_open: false,
        }));
        let a = drain(&mut s);
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|x| matches!(x, Action::Keep { reason, error: true, .. } if reason.contains("runtapes 1"))));
        assert!(!s.will_free());
        s.handle(Input::Dumped { id: 3, bytes: MB });
        assert!(matches!(drain(&mut s)[..], [Action::Keep { id: 3, .. }]));
    }
}
