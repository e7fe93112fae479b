//! Unit and property tests of the sans-IO pool, in virtual time.

use super::*;
use proptest::prelude::*;

fn t(base: Instant, secs: u64) -> Instant {
    base + Duration::from_secs(secs)
}

fn udp_850_859() -> PoolCore {
    let mut cfg = CoreConfig::new(Transport::Udp, PortRange::new(850, 859).unwrap());
    cfg.unusable.push((
        853,
        Unusable::Service {
            name: "domain-s".into(),
            file: "/etc/services".into(),
        },
    ));
    PoolCore::new(cfg)
}

/// A pool of `transport` ports `lo..=hi`, all usable.
fn core_of(transport: Transport, lo: u16, hi: u16) -> PoolCore {
    PoolCore::new(CoreConfig::new(transport, PortRange::new(lo, hi).unwrap()))
}

fn dest(last: u8) -> Dest {
    SocketAddr::from(([198, 18, 0, last], 10080))
}

/// Request and bind at once; returns the port.
fn lease_now(core: &mut PoolCore, d: Option<Dest>, now: Instant) -> Option<u16> {
    let ticket = core.request(d, now).unwrap();
    let grant = core.poll_grant()?;
    assert_eq!(grant.ticket, ticket);
    core.bound(ticket, now).unwrap();
    core.check_invariants();
    Some(grant.port)
}

#[test]
fn domain_s_leaves_nine_usable_ports_and_the_tenth_request_waits() {
    let base = Instant::now();
    let mut core = udp_850_859();
    assert_eq!(core.usable(), 9);
    let ports: Vec<u16> = (0..9)
        .map(|_| lease_now(&mut core, None, base).unwrap())
        .collect();
    assert_eq!(ports, vec![850, 851, 852, 854, 855, 856, 857, 858, 859]);
    let ticket = core.request(None, base).unwrap();
    assert!(core.poll_grant().is_none(), "no tenth port");
    let shortage = core.shortage();
    assert_eq!(
        shortage.to_string(),
        "no ports: 9 usable in udp 850-859 (853 is domain-s in /etc/services); 9 leased, 1 waiting"
    );
    assert!(matches!(core.poll_event(), Some(PoolEvent::Exhausted(_))));
    core.release(854, false, t(base, 7)).unwrap();
    let grant = core.poll_grant().unwrap();
    assert_eq!(
        (grant.ticket, grant.port, grant.waited),
        (ticket, 854, Duration::from_secs(7))
    );
    core.bound(ticket, t(base, 7)).unwrap();
    let Some(PoolEvent::Recovered(ep)) = core.poll_event() else {
        panic!("episode must end")
    };
    assert_eq!((ep.waiters, ep.longest_wait), (1, Duration::from_secs(7)));
    let m = core.metrics();
    assert_eq!(
        (m.in_use, m.high_water, m.waits, m.granted, m.skipped_ports),
        (9, 9, 1, 10, 1)
    );
    core.check_invariants();
}

#[test]
fn waiters_are_served_first_come_first_served() {
    let base = Instant::now();
    let mut core = udp_850_859();
    for _ in 0..9 {
        lease_now(&mut core, None, base);
    }
    let tickets: Vec<Ticket> = (0..5).map(|_| core.request(None, base).unwrap()).collect();
    let mut served = Vec::new();
    for (i, port) in [850, 851, 852, 854, 855].into_iter().enumerate() {
        core.release(port, false, t(base, i as u64 + 1)).unwrap();
        let grant = core.poll_grant().unwrap();
        core.bound(grant.ticket, t(base, i as u64 + 1)).unwrap();
        served.push(grant.ticket);
    }
    assert_eq!(served, tickets);
}

#[test]
fn eaddrinuse_marks_the_port_busy_and_the_waiter_keeps_its_place() {
    let base = Instant::now();
    let mut core = core_of(Transport::Udp, 850, 851);
    let a = core.request(None, base).unwrap();
    let b = core.request(None, base).unwrap();
    let ga = core.poll_grant().unwrap();
    let gb = core.poll_grant().unwrap();
    assert_eq!((ga.port, gb.port), (850, 851));
    // 850 is taken by another process: a is put back first in line, nothing free.
    assert_eq!(core.bind_busy(a, Some(4242), base).unwrap(), 850);
    assert!(core.poll_grant().is_none());
    core.bound(b, base).unwrap();
    assert!(
        core.shortage()
            .to_string()
            .contains("in use elsewhere: 850 (pid 4242)")
    );
    assert_eq!(core.poll_timeout(), Some(base + Duration::from_secs(5)));
    // The retry time comes: 850 is offered again, to a.
    core.tick(t(base, 5));
    let again = core.poll_grant().unwrap();
    assert_eq!((again.ticket, again.port), (a, 850));
    core.bound(a, t(base, 5)).unwrap();
    assert_eq!(core.metrics().bind_busy, 1);
    core.check_invariants();
}

#[test]
fn a_failed_bind_frees_the_port_and_ends_the_request() {
    let base = Instant::now();
    let mut core = core_of(Transport::Udp, 850, 850);
    let a = core.request(None, base).unwrap();
    core.poll_grant().unwrap();
    assert_eq!(core.bind_failed(a, base).unwrap(), 850);
    assert_eq!((core.free(), core.in_use(), core.waiting()), (1, 0, 0));
    assert_eq!(core.metrics().bind_errors, 1);
    assert_eq!(core.bound(a, base), Err(Misuse::NotBinding(a.get())));
}

#[test]
fn time_wait_holds_a_port_from_its_destination_only() {
    let base = Instant::now();
    let mut core = core_of(Transport::Tcp, 850, 850);
    let port = lease_now(&mut core, Some(dest(2)), base).unwrap();
    core.release(port, true, t(base, 1)).unwrap();
    assert!(core.is_held(850, dest(2), t(base, 1)));
    // Another destination may use it at once...
    let other = lease_now(&mut core, Some(dest(3)), t(base, 2)).unwrap();
    assert_eq!(other, 850);
    core.release(other, false, t(base, 3)).unwrap();
    // ...but the first destination waits until TIME_WAIT ends (released at 1 s + 60 s).
    let ticket = core.request(Some(dest(2)), t(base, 3)).unwrap();
    assert!(core.poll_grant().is_none());
    assert_eq!(core.poll_timeout(), Some(t(base, 61)));
    assert!(
        core.shortage()
            .to_string()
            .contains("1 in TIME_WAIT towards 198.18.0.2:10080")
    );
    core.tick(t(base, 60));
    assert!(core.poll_grant().is_none(), "still held at 60 s");
    core.tick(t(base, 61));
    let grant = core.poll_grant().unwrap();
    assert_eq!((grant.ticket, grant.port), (ticket, 850));
}

#[test]
fn a_passive_close_or_udp_leaves_no_hold() {
    let base = Instant::now();
    let mut core = core_of(Transport::Tcp, 850, 850);
    lease_now(&mut core, Some(dest(2)), base);
    core.release(850, false, base).unwrap();
    assert_eq!(lease_now(&mut core, Some(dest(2)), base), Some(850));
    let mut udp = udp_850_859();
    lease_now(&mut udp, Some(dest(2)), base);
    udp.release(850, true, base).unwrap();
    assert!(!udp.is_held(850, dest(2), base));
}

#[test]
fn a_waiter_held_by_time_wait_does_not_block_other_destinations() {
    let base = Instant::now();
    let mut core = core_of(Transport::Tcp, 850, 850);
    lease_now(&mut core, Some(dest(2)), base);
    core.release(850, true, base).unwrap();
    let held = core.request(Some(dest(2)), base).unwrap();
    let other = core.request(Some(dest(3)), base).unwrap();
    let grant = core.poll_grant().unwrap();
    assert_eq!(
        grant.ticket, other,
        "dest 3 may take the port dest 2 cannot use"
    );
    core.bound(other, base).unwrap();
    assert!(core.cancel(held, t(base, 1)));
    assert_eq!(core.metrics().timeouts, 1);
    core.check_invariants();
}

#[test]
fn released_ports_are_reused_least_recently_used_first() {
    let base = Instant::now();
    let mut core = core_of(Transport::Udp, 850, 852);
    let a = lease_now(&mut core, None, base).unwrap();
    core.release(a, false, base).unwrap();
    assert_eq!(lease_now(&mut core, None, base), Some(851));
    assert_eq!(lease_now(&mut core, None, base), Some(852));
    assert_eq!(lease_now(&mut core, None, base), Some(850));
}

#[test]
fn an_empty_pool_refuses_requests_instead_of_blocking() {
    let mut cfg = CoreConfig::new(Transport::Udp, PortRange::new(853, 853).unwrap());
    cfg.unusable
        .push((853, Unusable::Excluded { why: "test".into() }));
    let mut core = PoolCore::new(cfg);
    assert_eq!(core.request(None, Instant::now()), Err(Misuse::Empty(1)));
}

#[test]
fn releasing_a_port_that_is_not_leased_is_reported() {
    let mut core = udp_850_859();
    assert_eq!(
        core.release(850, false, Instant::now()),
        Err(Misuse::NotLeased(850))
    );
    assert_eq!(
        core.release(9999, false, Instant::now()),
        Err(Misuse::NotLeased(9999))
    );
}

/// One step of a random workload.
#[derive(Debug, Clone)]
enum Op {
    Request(Option<u8>),
    BindOk,
    BindBusy,
    BindFail,
    Release(usize, bool),
    Cancel(usize),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::option::of(0u8..3).prop_map(Op::Request),
        4 => Just(Op::BindOk),
        1 => Just(Op::BindBusy),
        1 => Just(Op::BindFail),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(i, c)| Op::Release(i, c)),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => (0u16..20_000).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Invariants hold after every change, no port is ever leased twice, and grants go
    /// out in ticket order among waiters for the same destination.
    #[test]
    fn random_workloads_keep_every_invariant(
        tcp in any::<bool>(),
        size in 1u16..8,
        excluded in proptest::collection::vec(0u16..8, 0..3),
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let base = Instant::now();
        let proto = if tcp { Transport::Tcp } else { Transport::Udp };
        let range = PortRange::new(1000, 1000 + size - 1).unwrap();
        let mut cfg = CoreConfig::new(proto, range);
        cfg.time_wait = Duration::from_secs(3);
        cfg.busy_retry = Duration::from_secs(1);
        for e in excluded {
            cfg.unusable.push((1000 + e, Unusable::Excluded { why: "test".into() }));
        }
        let mut core = PoolCore::new(cfg);
        let mut now = base;
        let mut pending: VecDeque<(Grant, Option<u8>)> = VecDeque::new();
        let mut leased: Vec<u16> = Vec::new();
        let mut waiting: Vec<(Ticket, Option<u8>)> = Vec::new();
        let mut last_granted: HashMap<Option<u8>, Ticket> = HashMap::new();
        for op in ops {
            match op {
                Op::Request(d) => {
                    match core.request(d.map(dest), now) {
                        Ok(ticket) => waiting.push((ticket, d)),
                        Err(Misuse::Empty(_)) => prop_assert_eq!(core.usable(), 0),
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                Op::BindOk => if let Some((g, _)) = pending.pop_front() {
                    let port = core.bound(g.ticket, now).unwrap();
                    prop_assert!(!leased.contains(&port), "port {} leased twice", port);
                    leased.push(port);
                },
                Op::BindBusy => if let Some((g, d)) = pending.pop_front() {
                    core.bind_busy(g.ticket, None, now).unwrap();
                    waiting.push((g.ticket, d));
                    waiting.sort();
                    last_granted.remove(&d);
                },
                Op::BindFail => if let Some((g, _)) = pending.pop_front() {
                    core.bind_failed(g.ticket, now).unwrap();
                },
                Op::Release(i, close) => if !leased.is_empty() {
                    let port = leased.swap_remove(i % leased.len());
                    core.release(port, close, now).unwrap();
                },
                Op::Cancel(i) => if !waiting.is_empty() {
                    let (ticket, _) = waiting.remove(i % waiting.len());
                    prop_assert!(core.cancel(ticket, now), "a waiting ticket can be cancelled");
                },
                Op::Advance(ms) => {
                    now += Duration::from_millis(u64::from(ms));
                    core.tick(now);
                }
            }
            while let Some(g) = core.poll_grant() {
                let d = waiting.iter().position(|(t, _)| *t == g.ticket).map(|i| waiting.remove(i).1);
                prop_assert!(d.is_some(), "grant for a ticket nobody waits for");
                let d = d.flatten();
                if let Some(prev) = last_granted.get(&d) {
                    prop_assert!(*prev < g.ticket, "same-destination grants out of order");
                }
                last_granted.insert(d, g.ticket);
                pending.push_back((g, d));
            }
            core.check_invariants();
            prop_assert_eq!(core.in_use() as usize, leased.len() + pending.len());
            let m = core.metrics();
            prop_assert!(m.high_water >= m.in_use);
            prop_assert!(m.in_use <= m.usable);
        }
    }
}

/// Issue 10: under load a thread that read the clock before another one took the lock calls
/// the core with an older `now`. The core must act at its latest `now`: a bind that fails with
/// EADDRINUSE reported at an older time made the port busy until a retry time already past,
/// and nothing freed it ("still busy after its retry time", a panic in debug builds).
#[test]
fn an_older_now_from_a_racing_thread_does_not_leave_a_port_busy_past_its_retry_time() {
    let base = Instant::now();
    let mut cfg = CoreConfig::new(Transport::Udp, PortRange::new(850, 851).unwrap());
    cfg.busy_retry = Duration::from_secs(1);
    let mut core = PoolCore::new(cfg);
    let a = core.request(None, t(base, 0)).unwrap();
    core.poll_grant().unwrap();
    // Another thread, later, at 7 s.
    core.tick(t(base, 7));
    // The first thread's bind failed; it read the clock at 5 s.
    core.bind_busy(a, None, t(base, 5)).unwrap();
    core.check_invariants();
    let g = core.poll_grant().expect("the other port is free");
    assert_eq!(g.ticket, a);
}
