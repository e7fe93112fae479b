//! Virtual-time tests of the scheduler: a simulated night where dumps take as long as their
//! size says, so every rule (inparallel, maxdumps, netusage, retries, order) is checked in
//! milliseconds.

use super::*;
use crate::net::exchange::{Awaited, RequestFailure};

/// A failure the driver retries (no ACK), or one it does not (the client's own error).
fn failure(retryable: bool) -> DumpFailure {
    if retryable {
        DumpFailure::Control {
            auth: proto::Auth::Bsd,
            host: "h".into(),
            port: 10080,
            failure: Box::new(RequestFailure::Unanswered {
                awaited: Awaited::Ack,
                wait: Duration::from_secs(10),
                hop: None,
                sends: 3,
            }),
        }
    } else {
        DumpFailure::Client(proto::mesg::DumpError::Client(
            "tar: /x: Cannot open".into(),
        ))
    }
}

fn cfg(inparallel: usize) -> DriverConfig {
    DriverConfig {
        inparallel,
        netusage_kibps: 0,
        order: Order::SmallestFirst,
        retry_delay: Duration::from_secs(30),
        max_estimates: 4,
        holding: vec![],
    }
}

fn host(name: &str, maxdumps: u32) -> HostSched {
    HostSched {
        name: name.into(),
        maxdumps,
    }
}

fn dle(host: usize, group: Option<usize>) -> DleSched {
    DleSched {
        host,
        group,
        priority: 1,
        retry: Retry {
            times: 2,
            broken_link: false,
        },
        size_hint: None,
        rate_kibps: None,
        failed: None,
    }
}

/// A simulated night: `duration(dle, attempt)` says how long a dump takes and whether it
/// succeeds; estimates come back after 1 s with `sizes[dle]`.
struct Night {
    d: Driver,
    t0: Instant,
    now: Instant,
    /// (end time, dle, ok, retryable)
    running: Vec<(Instant, usize, bool, bool)>,
    estimating: Vec<(Instant, usize)>,
    /// (dle, worker, start offset)
    starts: Vec<(usize, usize, Duration)>,
    max_parallel: usize,
    max_per_host: Vec<usize>,
    failures: Vec<(usize, String)>,
}

impl Night {
    fn new(c: DriverConfig, hosts: Vec<HostSched>, dles: Vec<DleSched>) -> Night {
        let t0 = Instant::now();
        let n = hosts.len();
        Night {
            d: Driver::new(c, hosts, dles),
            t0,
            now: t0,
            running: vec![],
            estimating: vec![],
            starts: vec![],
            max_parallel: 0,
            max_per_host: vec![0; n],
            failures: vec![],
        }
    }

    fn run(
        &mut self,
        sizes: &[Option<u64>],
        mut outcome: impl FnMut(usize, u32) -> (Duration, bool, bool),
    ) {
        self.d.start(self.now);
        for _ in 0..100_000 {
            while let Some(a) = self.d.poll_action() {
                match a {
                    Action::StartEstimate { group } => {
                        self.estimating
                            .push((self.now + Duration::from_secs(1), group));
                    }
                    Action::StartDump {
                        dle,
                        worker,
                        attempt,
                        ..
                    } => {
                        let (dur, ok, retry) = outcome(dle, attempt);
                        self.running.push((self.now + dur, dle, ok, retry));
                        self.starts
                            .push((dle, worker, self.now.duration_since(self.t0)));
                        self.max_parallel = self.max_parallel.max(self.running.len());
                        let mut per_host = vec![0; self.max_per_host.len()];
                        for (_, d, _, _) in &self.running {
                            per_host[self.d.dles[*d].host] += 1;
                        }
                        for (m, p) in self.max_per_host.iter_mut().zip(per_host) {
                            *m = (*m).max(p);
                        }
                    }
                    Action::Failed { dle, reason } => self.failures.push((dle, reason)),
                    Action::Finished => return,
                }
            }
            // Next event: an estimate, a dump end, or the driver's timer.
            let next = self
                .estimating
                .iter()
                .map(|(t, _)| *t)
                .chain(self.running.iter().map(|(t, ..)| *t))
                .chain(self.d.poll_timeout())
                .min()
                .expect("the night stalled with nothing to wait for");
            self.now = next;
            if let Some(i) = self.estimating.iter().position(|(t, _)| *t <= self.now) {
                let (_, group) = self.estimating.remove(i);
                let results = self.d.groups[group]
                    .iter()
                    .map(|&d| (d, Ok(sizes.get(d).copied().flatten())))
                    .collect();
                self.d
                    .handle(self.now, Input::EstimateDone { group, results });
            } else if let Some(i) = self.running.iter().position(|(t, ..)| *t <= self.now) {
                let (_, dle, ok, retryable) = self.running.remove(i);
                self.d.handle(
                    self.now,
                    Input::DumpFinished {
                        dle,
                        result: if ok {
                            Ok(1000)
                        } else {
                            Err(failure(retryable))
                        },
                    },
                );
            } else {
                self.d.handle_timeout(self.now);
            }
        }
        panic!("the night did not finish");
    }
}

#[test]
fn inparallel_caps_running_dumps_and_every_dle_is_dumped() {
    let hosts = (0..10).map(|i| host(&format!("h{i}"), 4)).collect();
    let dles = (0..20).map(|i| dle(i % 10, Some(i % 10))).collect();
    let mut n = Night::new(cfg(3), hosts, dles);
    n.run(&[], |_, _| (Duration::from_secs(10), true, false));
    assert_eq!(n.max_parallel, 3);
    assert_eq!(n.starts.len(), 20);
    assert!((0..20).all(|d| n.d.track(d).unwrap().state == State::Done));
    // Waits for workers were recorded with their reason.
    let waited: Vec<&Wait> = (0..20)
        .flat_map(|d| n.d.track(d).unwrap().waits.iter())
        .collect();
    assert!(!waited.is_empty());
    assert!(
        waited
            .iter()
            .all(|w| w.what == "workers" && w.waited.is_some())
    );
}

#[test]
fn maxdumps_per_host_is_respected() {
    let hosts = vec![host("busy", 2), host("other", 1)];
    let mut dles: Vec<DleSched> = (0..6).map(|_| dle(0, Some(0))).collect();
    dles.extend((0..2).map(|_| dle(1, Some(1))));
    let mut n = Night::new(cfg(8), hosts, dles);
    n.run(&[], |_, _| (Duration::from_secs(5), true, false));
    assert_eq!(n.max_per_host, vec![2, 1]);
    let w = &n.d.track(2).unwrap().waits;
    assert!(
        w.iter()
            .any(|w| w.what == "maxdumps" && w.reason.contains("maxdumps 2")),
        "{w:?}"
    );
}

#[test]
fn netusage_admits_dumps_by_their_expected_rate_but_never_blocks_a_lone_dump() {
    let hosts = vec![host("h", 8)];
    let mut dles: Vec<DleSched> = (0..4).map(|_| dle(0, None)).collect();
    for d in &mut dles {
        d.rate_kibps = Some(600);
    }
    let mut c = cfg(4);
    c.netusage_kibps = 1000;
    let mut n = Night::new(c, hosts, dles);
    n.run(&[], |_, _| (Duration::from_secs(10), true, false));
    // 600 + 600 > 1000: one at a time.
    assert_eq!(n.max_parallel, 1);
    // A single dump faster than netusage still runs.
    let hosts = vec![host("h", 8)];
    let mut d = dle(0, None);
    d.rate_kibps = Some(5000);
    let mut c = cfg(4);
    c.netusage_kibps = 1000;
    let mut n = Night::new(c, hosts, vec![d]);
    n.run(&[], |_, _| (Duration::from_secs(10), true, false));
    assert_eq!(n.starts.len(), 1);
    let w = &n.d.track(0).unwrap().waits;
    assert!(w.is_empty());
}

#[test]
fn retryable_failures_are_retried_after_the_delay_then_fail_for_good() {
    let hosts = vec![host("h", 1)];
    let mut d = dle(0, None);
    d.retry.times = 2;
    let mut n = Night::new(cfg(2), hosts, vec![d, dle(0, None)]);
    n.run(&[], |dle, _| (Duration::from_secs(1), dle == 1, dle == 0));
    let t = n.d.track(0).unwrap();
    assert_eq!(t.attempts, 3);
    assert_eq!(t.retried_errors.len(), 2);
    assert!(matches!(t.state, State::Failed(ref e) if e.contains("timeout waiting for ACK")));
    // The retries came 30 s after each failure.
    let starts: Vec<Duration> = n.starts.iter().filter(|s| s.0 == 0).map(|s| s.2).collect();
    assert!(
        starts[1] >= starts[0] + Duration::from_secs(31),
        "{starts:?}"
    );
    assert_eq!(n.d.track(1).unwrap().state, State::Done);
}

// issue 14: a dial-in client's broken link is retried; the same failure from a client we
// connect to is final.
#[test]
fn a_broken_link_is_retried_only_for_a_dialin_client() {
    let broken = || DumpFailure::Link {
        peer: "198.18.0.254:40000".parse().unwrap(),
        op: crate::failure::LinkOp::ReadData,
        source: std::sync::Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
    };
    assert!(broken().broke_link() && !broken().retryable());
    for (dialin, attempts) in [(false, 1), (true, 2)] {
        let mut x = dle(0, None);
        x.retry.broken_link = dialin;
        let mut d = Driver::new(cfg(1), vec![host("h", 1)], vec![x]);
        let t0 = Instant::now();
        d.start(t0);
        let mut now = t0;
        let mut tries = 0;
        for _ in 0..10 {
            let started = std::iter::from_fn(|| d.poll_action())
                .any(|a| matches!(a, Action::StartDump { .. }));
            if started {
                tries += 1;
                let result = if tries == 1 { Err(broken()) } else { Ok(1) };
                d.handle(now, Input::DumpFinished { dle: 0, result });
            }
            now += Duration::from_secs(31);
            d.handle_timeout(now);
        }
        assert_eq!(tries, attempts, "dialin {dialin}");
        let done = d.track(0).unwrap().state == State::Done;
        assert_eq!(done, dialin, "dialin {dialin}");
    }
}

#[test]
fn final_failures_are_not_retried() {
    let hosts = vec![host("h", 1)];
    let mut n = Night::new(cfg(1), hosts, vec![dle(0, None)]);
    n.run(&[], |_, _| (Duration::from_secs(1), false, false));
    assert_eq!(n.d.track(0).unwrap().attempts, 1);
}

#[test]
fn order_is_priority_then_size_then_disklist() {
    let hosts = vec![host("h", 1)];
    let mut dles: Vec<DleSched> = (0..4).map(|_| dle(0, Some(0))).collect();
    dles[3].priority = 2;
    let mut n = Night::new(cfg(1), hosts.clone(), dles.clone());
    n.run(&[Some(300), Some(100), Some(200), Some(900)], |_, _| {
        (Duration::from_secs(1), true, false)
    });
    let order: Vec<usize> = n.starts.iter().map(|s| s.0).collect();
    assert_eq!(order, vec![3, 1, 2, 0]);
    let mut c = cfg(1);
    c.order = Order::LargestFirst;
    let mut n = Night::new(c, hosts, dles);
    n.run(&[Some(300), Some(100), Some(200), Some(900)], |_, _| {
        (Duration::from_secs(1), true, false)
    });
    let order: Vec<usize> = n.starts.iter().map(|s| s.0).collect();
    assert_eq!(order, vec![3, 0, 2, 1]);
}

#[test]
fn estimate_errors_fail_the_dle_and_dumps_start_per_group() {
    let hosts = vec![host("a", 1), host("b", 1)];
    let dles = vec![dle(0, Some(0)), dle(1, Some(1)), dle(1, Some(1))];
    let mut d = Driver::new(cfg(2), hosts, dles);
    let t = Instant::now();
    d.start(t);
    let mut acts = vec![];
    while let Some(a) = d.poll_action() {
        acts.push(a);
    }
    assert_eq!(
        acts,
        vec![
            Action::StartEstimate { group: 0 },
            Action::StartEstimate { group: 1 }
        ]
    );
    d.handle(
        t,
        Input::EstimateDone {
            group: 1,
            results: vec![
                (1, Ok(Some(10))),
                (
                    2,
                    Err(EstimateFailure::Client("estimate: no such dir".into())),
                ),
            ],
        },
    );
    let acts: Vec<Action> = std::iter::from_fn(|| d.poll_action()).collect();
    assert_eq!(
        acts,
        vec![
            Action::Failed {
                dle: 2,
                reason: "[estimate: no such dir]".into()
            },
            Action::StartDump {
                dle: 1,
                worker: 0,
                attempt: 1,
                holding: 0
            }
        ]
    );
}

#[test]
fn port_waits_are_kept_for_the_report() {
    let mut d = Driver::new(cfg(1), vec![host("h", 1)], vec![dle(0, None)]);
    let t = Instant::now();
    d.start(t);
    assert!(matches!(d.poll_action(), Some(Action::StartDump { .. })));
    d.handle(
        t,
        Input::PortWait {
            dle: 0,
            pool: "udp 850-859".into(),
            reason: "no ports: 9 usable in udp 850-859; 9 leased, 11 waiting".into(),
        },
    );
    d.handle(
        t,
        Input::PortGranted {
            dle: 0,
            pool: "udp 850-859".into(),
            waited: Duration::from_millis(1500),
        },
    );
    let w = &d.track(0).unwrap().waits;
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].waited, Some(Duration::from_millis(1500)));
    assert!(w[0].reason.starts_with("no ports: 9 usable"));
}

#[test]
fn unsupported_dles_fail_without_scheduling_and_the_run_finishes() {
    let mut x = dle(0, Some(0));
    x.failed = Some("auth \"ssh\" is not supported".into());
    let mut d = Driver::new(cfg(1), vec![host("h", 1)], vec![x]);
    d.start(Instant::now());
    assert_eq!(d.poll_action(), Some(Action::Finished));
    assert!(d.is_finished());
}

fn sized(host: usize, bytes: u64) -> DleSched {
    let mut x = dle(host, None);
    x.size_hint = Some(bytes);
    x
}

fn starts(d: &mut Driver) -> Vec<(usize, usize)> {
    std::iter::from_fn(|| d.poll_action())
        .filter_map(|a| match a {
            Action::StartDump { dle, holding, .. } => Some((dle, holding)),
            _ => None,
        })
        .collect()
}

fn space(d: &mut Driver, at: Instant, free: &[u64], taper: Taper) {
    d.handle(
        at,
        Input::HoldingSpace {
            free: free.iter().map(|&f| Some(f)).collect(),
            taper,
        },
    );
}

fn finished(d: &mut Driver, at: Instant, dle: usize, result: Result<u64, DumpFailure>) {
    d.handle(at, Input::DumpFinished { dle, result });
}

/// issue 15: a holding disk too small for the night makes dumps wait for the taper to free
/// space instead of failing; with nothing to free, a dump starts anyway.
#[test]
fn dumps_wait_for_holding_space_while_the_taper_frees_it() {
    let t0 = Instant::now();
    let mut c = cfg(4);
    c.holding = vec![HoldingDisk::from_use_kib(1)];
    c.holding[0].cap = Some(1500);
    let mut d = Driver::new(
        c,
        vec![host("a", 4)],
        (0..3).map(|_| sized(0, 1000)).collect(),
    );
    space(&mut d, t0, &[1 << 30], Taper::Idle);
    d.start(t0);
    // One fits; the others wait while it runs.
    assert_eq!(starts(&mut d), vec![(0, 0)]);
    assert_eq!(d.holding_room(0), 500);
    // Done and queued for the taper (the shell says so before the dump's end): still no
    // room, but the taper will free it.
    space(
        &mut d,
        t0 + Duration::from_secs(5),
        &[1 << 30],
        Taper::WillFree,
    );
    finished(&mut d, t0 + Duration::from_secs(5), 0, Ok(1000));
    assert_eq!(starts(&mut d), vec![]);
    // The taper wrote it and removed the file.
    d.handle(
        t0 + Duration::from_secs(9),
        Input::HoldingFreed {
            disk: 0,
            bytes: 1000,
        },
    );
    space(&mut d, t0 + Duration::from_secs(9), &[1 << 30], Taper::Idle);
    assert_eq!(starts(&mut d), vec![(1, 0)]);
    let w = &d.track(1).unwrap().waits;
    assert!(
        w.iter()
            .any(|w| w.what == "holding" && w.reason.contains("waiting for the taper")),
        "{w:?}"
    );
    finished(&mut d, t0 + Duration::from_secs(12), 1, Ok(1000));
    // Nothing runs and nothing will free space: the last one starts and will say why.
    space(&mut d, t0 + Duration::from_secs(12), &[10], Taper::Idle);
    assert_eq!(starts(&mut d), vec![(2, 0)]);
    assert_eq!(d.holding_written(), vec![2000]);
}

// issue 11: `holding::choose` ignored the estimate; the driver places dumps by it.
#[test]
fn a_dump_goes_to_a_holding_disk_where_its_estimate_fits() {
    let t0 = Instant::now();
    let mut c = cfg(4);
    c.holding = vec![HoldingDisk::UNBOUNDED, HoldingDisk::UNBOUNDED];
    let dles = vec![sized(0, 4000), sized(0, 2000), sized(0, 5000)];
    let mut d = Driver::new(c.clone(), vec![host("a", 4)], dles);
    space(&mut d, t0, &[10_000, 3000], Taper::None);
    d.start(t0);
    // Smallest first: 2000 fits both and goes to the idle disk with the most room; 4000
    // then fits only disk 0; 5000 fits disk 0 no more (10000 - 2000 - 4000 = 4000)...
    let got = starts(&mut d);
    assert_eq!(got[..2], [(1, 0), (0, 0)]);
    // ...and waits, as other dumps run whose reservations may shrink.
    assert_eq!(got.len(), 2, "{got:?}");
    let waiting = d.track(2).unwrap();
    assert_eq!(waiting.state, State::Ready);
    // dle 1 was much smaller than estimated: its real size frees the rest.
    finished(&mut d, t0 + Duration::from_secs(1), 1, Ok(100));
    assert_eq!(starts(&mut d), vec![(2, 0)]);
    let w = &d.track(2).unwrap().waits;
    assert!(
        w.iter().any(|w| w.what == "holding"
            && w.reason.contains("needs about 5000 bytes, 4000 are free")
            && w.reason.contains("waiting for the running dumps to end")),
        "{w:?}"
    );

    // With room on both, a dump goes to the disk with fewer running dumps.
    let dles = vec![sized(0, 100), sized(0, 100)];
    let mut d = Driver::new(c, vec![host("a", 4)], dles);
    space(&mut d, t0, &[10_000, 3000], Taper::None);
    d.start(t0);
    assert_eq!(starts(&mut d), vec![(0, 0), (1, 1)]);
}

#[test]
fn reservations_follow_the_real_size_failures_and_the_taper() {
    let t0 = Instant::now();
    let mut c = cfg(1);
    c.holding = vec![HoldingDisk::from_use_kib(10)];
    let mut d = Driver::new(c, vec![host("a", 4)], vec![sized(0, 4096), sized(0, 4096)]);
    space(&mut d, t0, &[1 << 30], Taper::None);
    d.start(t0);
    assert_eq!(starts(&mut d), vec![(0, 0)]);
    assert_eq!(
        d.holding_room(0),
        10 * 1024 - 4096,
        "the estimate is reserved"
    );
    // A failed dump leaves nothing: its reservation goes.
    finished(&mut d, t0, 0, Err(failure(false)));
    assert_eq!(starts(&mut d), vec![(1, 0)]);
    assert_eq!(d.holding_room(0), 10 * 1024 - 4096);
    // A dump larger than estimated counts what it wrote.
    finished(&mut d, t0, 1, Ok(6000));
    assert_eq!(d.holding_room(0), 10 * 1024 - 6000);
    assert_eq!(d.holding_written(), vec![6000]);
    d.handle(
        t0,
        Input::HoldingFreed {
            disk: 0,
            bytes: 6000,
        },
    );
    assert_eq!(d.holding_room(0), 10 * 1024);
    assert_eq!(
        d.holding_written(),
        vec![6000],
        "written stays for the report"
    );
}

#[test]
fn the_file_system_and_use_minus_n_bound_the_room() {
    let t0 = Instant::now();
    let mut c = cfg(2);
    c.holding = vec![HoldingDisk::from_use_kib(-1)];
    let mut d = Driver::new(c, vec![host("a", 4)], vec![sized(0, 2000), sized(0, 2000)]);
    // 1024 bytes must stay free: 5000 - 1024 leaves room for one dump.
    space(&mut d, t0, &[5000], Taper::None);
    d.start(t0);
    assert_eq!(starts(&mut d), vec![(0, 0)]);
    assert_eq!(d.holding_room(0), 5000 - 1024 - 2000);
    // The file system filled as the dump wrote; when it ends, the fresh free space counts.
    space(&mut d, t0 + Duration::from_secs(1), &[3100], Taper::None);
    finished(&mut d, t0 + Duration::from_secs(1), 0, Ok(1900));
    assert_eq!(starts(&mut d), vec![(1, 0)], "3100 - 1024 >= 2000");
}
