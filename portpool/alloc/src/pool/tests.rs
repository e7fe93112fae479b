//! Tests of the threaded pool with the model binder (no kernel involved).

use super::*;
use crate::binder::{ModelBinder, ModelSocket, Outcome};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

fn config(lo: u16, hi: u16) -> PoolConfig {
    let mut cfg = PoolConfig::new(Transport::Udp, PortRange::new(lo, hi).unwrap());
    cfg.skip_services = false;
    cfg.run_dir = None;
    cfg
}

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

#[test]
fn sixty_four_threads_share_ten_ports_in_fifo_order_without_double_leases() {
    const PORTS: u16 = 10;
    const THREADS: usize = 64;
    let pool =
        Arc::new(Pool::with_binder(config(20000, 20000 + PORTS - 1), ModelBinder::new()).unwrap());
    let held: Arc<Vec<AtomicBool>> = Arc::new((0..PORTS).map(|_| AtomicBool::new(false)).collect());
    // Take every port so that all 64 requests queue, in a known order.
    let blockers: Vec<Lease<ModelSocket>> = (0..PORTS).map(|_| pool.try_lease().unwrap()).collect();
    let mut handles = Vec::new();
    for i in 0..THREADS {
        let (shared_pool, held) = (Arc::clone(&pool), Arc::clone(&held));
        handles.push(thread::spawn(move || {
            let lease = shared_pool
                .lease(soon(60_000))
                .expect("every lease is eventually granted");
            let slot = usize::from(lease.port() - 20000);
            assert!(
                !held[slot].swap(true, Ordering::SeqCst),
                "port {} held twice",
                lease.port()
            );
            assert_eq!(lease.socket().port, lease.port());
            thread::sleep(Duration::from_micros(200));
            held[slot].store(false, Ordering::SeqCst);
            (i, lease.serial())
        }));
        // The next thread requests only once this one is queued.
        while pool.metrics().waiting as usize != i + 1 {
            thread::yield_now();
        }
        pool.check_invariants();
    }
    drop(blockers);
    let mut served: Vec<(usize, u64)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    served.sort();
    for pair in served.windows(2) {
        assert!(
            pair[0].1 < pair[1].1,
            "request {} was served after request {}",
            pair[0].0,
            pair[1].0
        );
    }
    pool.check_invariants();
    let m = pool.metrics();
    assert_eq!(
        (m.in_use, m.waiting, m.high_water),
        (0, 0, u32::from(PORTS))
    );
    assert_eq!(
        (m.granted, m.waits),
        ((THREADS + usize::from(PORTS)) as u64, THREADS as u64)
    );
}

#[test]
fn contended_pool_never_leases_a_port_twice() {
    let pool = Arc::new(Pool::with_binder(config(21000, 21003), ModelBinder::new()).unwrap());
    let held: Arc<Vec<AtomicBool>> = Arc::new((0..4).map(|_| AtomicBool::new(false)).collect());
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (pool, held) = (Arc::clone(&pool), Arc::clone(&held));
            thread::spawn(move || {
                for _ in 0..200 {
                    let lease = pool.lease(soon(60_000)).unwrap();
                    let slot = usize::from(lease.port() - 21000);
                    assert!(!held[slot].swap(true, Ordering::SeqCst));
                    held[slot].store(false, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    pool.check_invariants();
    assert_eq!(pool.metrics().granted, 16 * 200);
}

/// A UDP pool of 850..=`last` whose binds of port 850 end in `outcome`.
fn pool_where_850_is(outcome: Outcome, last: u16) -> Pool<ModelBinder> {
    let binder = ModelBinder::new();
    binder.set(Transport::Udp, 850, outcome);
    Pool::with_binder(config(850, last), binder).unwrap()
}

#[test]
fn eaddrinuse_moves_on_to_the_next_port_and_remembers_it() {
    let pool = pool_where_850_is(Outcome::InUse, 852);
    let a = pool.try_lease().unwrap();
    assert_eq!(a.port(), 851);
    let b = pool.try_lease().unwrap();
    assert_eq!(
        b.port(),
        852,
        "850 is remembered as busy, not tried again at once"
    );
    let m = pool.metrics();
    assert_eq!((m.bind_busy, m.busy_now), (1, 1));
    let err = pool.try_lease().unwrap_err();
    assert!(
        err.to_string().contains("in use elsewhere: 850"),
        "the reason names the busy port: {err}"
    );
}

#[test]
fn eacces_is_a_clear_error_and_frees_the_port() {
    let pool = pool_where_850_is(Outcome::Denied, 851);
    let err = pool.try_lease().unwrap_err();
    assert_eq!(
        err.to_string(),
        "binding port 850 needs root or CAP_NET_BIND_SERVICE (udp pool 850-851)"
    );
    assert!(matches!(
        err,
        LeaseError::PermissionDenied { port: 850, .. }
    ));
    let m = pool.metrics();
    assert_eq!((m.in_use, m.bind_errors), (0, 1));
    pool.binder().clear(Transport::Udp, 850);
    assert_eq!(pool.try_lease().unwrap().port(), 850);
}

#[test]
fn a_deadline_ends_the_wait_with_the_reason() {
    let mut cfg = config(850, 853);
    cfg.skip_services = true;
    cfg.services = Some(Services::parse("/etc/services", "domain-s 853/udp\n").unwrap());
    let pool = Pool::with_binder(cfg, ModelBinder::new()).unwrap();
    let _held: Vec<_> = (0..3).map(|_| pool.try_lease().unwrap()).collect();
    let started = Instant::now();
    let err = pool.lease(soon(50)).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(50));
    let text = err.to_string();
    assert!(
        text.starts_with(
            "no ports: 3 usable in udp 850-853 (853 is domain-s in /etc/services); 3 leased, 1 waiting"
        ),
        "{text}"
    );
    let m = pool.metrics();
    assert_eq!((m.timeouts, m.waiting, m.episodes), (1, 0, 1));
    pool.check_invariants();
}

#[test]
fn a_blocked_lease_is_granted_when_a_port_is_released() {
    let pool = Arc::new(Pool::with_binder(config(850, 850), ModelBinder::new()).unwrap());
    let first = pool.try_lease().unwrap();
    let waiter = {
        let pool = Arc::clone(&pool);
        thread::spawn(move || pool.lease(soon(10_000)).map(|l| (l.port(), l.waited())))
    };
    while pool.metrics().waiting == 0 {
        thread::yield_now();
    }
    assert!(pool.shortage().is_some());
    thread::sleep(Duration::from_millis(20));
    drop(first);
    let (port, waited) = waiter.join().unwrap().unwrap();
    assert_eq!(port, 850);
    assert!(waited >= Duration::from_millis(20));
}

#[test]
fn a_busy_port_is_retried_after_busy_retry_while_someone_waits() {
    let binder = ModelBinder::new();
    binder.set(Transport::Udp, 850, Outcome::InUseFor(1));
    let mut cfg = config(850, 850);
    cfg.busy_retry = Duration::from_millis(30);
    let pool = Pool::with_binder(cfg, binder).unwrap();
    let lease = pool.lease(soon(5_000)).unwrap();
    assert_eq!(lease.port(), 850);
    assert!(lease.waited() >= Duration::from_millis(30));
}

#[test]
fn tcp_lease_for_a_destination_skips_ports_in_time_wait_towards_it() {
    let mut cfg = config(850, 851);
    cfg.proto = Transport::Tcp;
    let pool = Pool::with_binder(cfg, ModelBinder::new()).unwrap();
    let x: Dest = "198.18.0.2:10080".parse().unwrap();
    let y: Dest = "198.18.0.3:10080".parse().unwrap();
    let first = pool.lease_for(x, Instant::now()).unwrap();
    assert_eq!(first.port(), 850);
    drop(first); // active close: 850 is held from x for 60 s
    let again = pool.lease_for(x, Instant::now()).unwrap();
    assert_eq!(again.port(), 851);
    drop(again);
    assert!(
        pool.lease_for(x, Instant::now()).is_err(),
        "both ports in TIME_WAIT towards x"
    );
    assert_eq!(
        pool.lease_for(y, Instant::now()).unwrap().port(),
        850,
        "y may use them"
    );
    let mut passive = pool.lease_for(y, Instant::now()).unwrap();
    passive.set_no_time_wait();
    let port = passive.port();
    drop(passive);
    assert_eq!(pool.lease_for(y, Instant::now()).unwrap().port(), port);
}

#[test]
fn two_pools_sharing_a_run_dir_never_lease_the_same_port() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(850, 852);
    cfg.run_dir = Some(dir.path().to_owned());
    let nightly = Pool::with_binder(cfg.clone(), ModelBinder::new()).unwrap();
    let by_hand = Pool::with_binder(cfg, ModelBinder::new()).unwrap();
    let a = nightly.try_lease().unwrap();
    let b = by_hand.try_lease().unwrap();
    assert_ne!(a.port(), b.port());
    assert_eq!((a.port(), b.port()), (850, 851));
    let c = by_hand.try_lease().unwrap();
    assert_eq!(c.port(), 852);
    let busy = by_hand.try_lease().unwrap_err().to_string();
    assert!(
        busy.contains(&format!("850 (pid {})", std::process::id())),
        "{busy}"
    );
    drop((a, b, c));
}

#[test]
fn map_keeps_the_port_leased_and_try_map_gives_it_back_on_error() {
    let pool = Pool::with_binder(config(850, 850), ModelBinder::new()).unwrap();
    let lease = pool.try_lease().unwrap().map(|s| s.port);
    assert_eq!(*lease.socket(), 850);
    assert!(pool.try_lease().is_err());
    let failed: Result<Lease<()>, &str> = lease.try_map(|_| Err("no"));
    assert!(failed.is_err());
    assert!(pool.try_lease().is_ok());
}
