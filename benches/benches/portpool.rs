//! portpool: lease/release per second (core alone, the threaded pool uncontended, with
//! real UDP binds, and 2-64 threads on 10 ports), and a 10,000-DLE simulated night.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use portpool::sim::{self, Policy, SimParams};
use portpool_alloc::{CoreConfig, ModelBinder, Pool, PoolConfig, PoolCore};
use proto::Auth;
use proto::ports::{PortRange, Transport};

fn config(lo: u16, hi: u16) -> PoolConfig {
    let mut cfg = PoolConfig::new(Transport::Udp, PortRange::new(lo, hi).unwrap());
    cfg.skip_services = false;
    cfg.run_dir = None;
    cfg
}

fn core_lease_release(c: &mut Criterion) {
    let mut g = c.benchmark_group("portpool/core");
    g.throughput(Throughput::Elements(1));
    let mut core = PoolCore::new(CoreConfig::new(
        Transport::Udp,
        PortRange::new(850, 859).unwrap(),
    ));
    let now = Instant::now();
    g.bench_function("request+bound+release", |b| {
        b.iter(|| {
            let t = core.request(None, now).unwrap();
            let grant = core.poll_grant().unwrap();
            core.bound(t, now).unwrap();
            core.release(black_box(grant.port), false, now).unwrap();
        })
    });
    g.finish();
}

fn pool_uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("portpool/pool");
    g.throughput(Throughput::Elements(1));
    let pool = Pool::with_binder(config(850, 859), ModelBinder::new()).unwrap();
    g.bench_function("lease+drop, model binder", |b| {
        b.iter(|| drop(black_box(pool.try_lease().unwrap())))
    });
    let base = 42_000 + (std::process::id() % 4000) as u16 * 4;
    let real = Pool::new(config(base, base + 3)).unwrap();
    g.bench_function("lease+drop, real UDP bind", |b| {
        b.iter(|| drop(black_box(real.try_lease().unwrap())))
    });
    g.finish();
}

fn pool_contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("portpool/contended-10-ports");
    const PER_THREAD: u64 = 2_000;
    for threads in [2u64, 4, 16, 64] {
        g.throughput(Throughput::Elements(threads * PER_THREAD));
        g.bench_with_input(
            BenchmarkId::from_parameter(threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let pool = Arc::new(
                            Pool::with_binder(config(850, 859), ModelBinder::new()).unwrap(),
                        );
                        let start = Arc::new(Barrier::new(threads as usize + 1));
                        let handles: Vec<_> = (0..threads)
                            .map(|_| {
                                let (pool, start) = (Arc::clone(&pool), Arc::clone(&start));
                                thread::spawn(move || {
                                    start.wait();
                                    let deadline = Instant::now() + Duration::from_secs(60);
                                    for _ in 0..PER_THREAD {
                                        drop(black_box(pool.lease(deadline).unwrap()));
                                    }
                                })
                            })
                            .collect();
                        start.wait();
                        let t0 = Instant::now();
                        for h in handles {
                            h.join().unwrap();
                        }
                        total += t0.elapsed();
                    }
                    total
                })
            },
        );
    }
    g.finish();
}

fn night_of_10000_dles(c: &mut Criterion) {
    let mut g = c.benchmark_group("portpool/simulate");
    g.sample_size(10);
    let mut p = SimParams::seed_case();
    p.inparallel = 40;
    p.generate(10_000, 500, 2e9, 1.0, Auth::Bsd);
    g.throughput(Throughput::Elements(10_000));
    for policy in Policy::ALL {
        g.bench_with_input(
            BenchmarkId::new("10000-dles", policy.name()),
            &policy,
            |b, &policy| b.iter(|| black_box(sim::run(&p, policy))),
        );
    }
    g.bench_function("10000-dles/all-policies+report", |b| {
        b.iter(|| black_box(sim::report::simulate(&p, false)))
    });
    g.finish();
}

criterion_group!(
    benches,
    core_lease_release,
    pool_uncontended,
    pool_contended,
    night_of_10000_dles
);
criterion_main!(benches);
