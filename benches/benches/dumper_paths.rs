//! Benchmarks of the dumper's own hot paths: the holding-file writer thread (bounded 1 MiB
//! buffers, the memory cap of a dump), the restore's tar member scan, and the scheduler
//! deciding a night of 1000 DLEs. The end-to-end rates against the real Amanda are measured
//! by `benches/compare-dumper.sh`.
//!
//! Run: `cargo bench -p amanda-benches --bench dumper_paths` (add `-- --test` for a smoke run).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dumper::driver::{Action, DleSched, Driver, DriverConfig, HostSched, Input, Order, Retry};
use dumper::holding::HoldingWriter;
use dumper::tarscan::Scanner;

const MIB: usize = 1024 * 1024;

fn holding_writer(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("dumper-bench-{}", std::process::id()));
    let total = 64 * MIB;
    let mut g = c.benchmark_group("holding_writer");
    g.throughput(Throughput::Bytes(total as u64));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("64MiB_in_1MiB_buffers", |b| {
        // A commit never replaces a finished file, so each one is removed again, untimed.
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let path = dir.join("bench.0");
                let start = Instant::now();
                let mut w =
                    HoldingWriter::create(path.clone(), 4, MIB).expect("create holding file");
                let mut left = total;
                while left > 0 {
                    let mut chunk = w.chunk().expect("chunk");
                    let n = chunk.buf.len().min(left);
                    chunk.filled = n;
                    left -= n;
                    w.submit(chunk).expect("submit");
                }
                black_box(w.commit().expect("commit"));
                timed += start.elapsed();
                std::fs::remove_file(&path).expect("remove the holding file");
            }
            timed
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A GNU tar archive of `n` 4 KiB files (headers written by hand, as tar does).
fn archive(n: usize) -> Vec<u8> {
    let mut a = Vec::with_capacity(n * 4608 + 1024);
    for i in 0..n {
        let name = format!("./dir{:03}/file{i:06}", i / 1000);
        let h = testkit::tar_header(name.as_bytes(), b'0', 4096, b"");
        a.extend_from_slice(&h);
        a.resize(a.len() + 4096, (i % 251) as u8);
    }
    a.resize(a.len() + 1024, 0);
    a
}

fn tar_scan(c: &mut Criterion) {
    let a = archive(2000);
    let mut g = c.benchmark_group("tar_scan");
    g.throughput(Throughput::Bytes(a.len() as u64));
    g.bench_function("2000_files_of_4KiB_in_1MiB_reads", |b| {
        b.iter(|| {
            let mut s = Scanner::new();
            for chunk in a.chunks(MIB) {
                s.feed(chunk).expect("feed");
            }
            s.finish().expect("finish");
            black_box(s.members().len())
        })
    });
    g.finish();
}

fn driver_night(c: &mut Criterion) {
    let hosts: Vec<HostSched> = (0..50)
        .map(|i| HostSched {
            name: format!("h{i}"),
            maxdumps: 2,
        })
        .collect();
    let dles: Vec<DleSched> = (0..1000)
        .map(|i| DleSched {
            host: i % 50,
            group: Some(i % 50),
            priority: 1,
            retry: Retry {
                times: 2,
                broken_link: false,
            },
            size_hint: None,
            rate_kibps: Some(10_000),
            failed: None,
        })
        .collect();
    let mut g = c.benchmark_group("driver");
    g.throughput(Throughput::Elements(dles.len() as u64));
    g.bench_function("night_of_1000_dles_inparallel_20", |b| {
        b.iter(|| {
            let mut d = Driver::new(
                DriverConfig {
                    inparallel: 20,
                    netusage_kibps: 1_000_000,
                    order: Order::LargestFirst,
                    retry_delay: Duration::from_secs(10),
                    max_estimates: 20,
                    holding: vec![],
                },
                hosts.clone(),
                dles.clone(),
            );
            let now = Instant::now();
            d.start(now);
            let mut running = std::collections::VecDeque::new();
            let mut done = 0;
            loop {
                while let Some(a) = d.poll_action() {
                    match a {
                        Action::StartEstimate { group } => {
                            let results = (0..1000)
                                .filter(|i| i % 50 == group)
                                .map(|i| (i, Ok(Some(1_000_000 + i as u64))))
                                .collect();
                            d.handle(now, Input::EstimateDone { group, results });
                        }
                        Action::StartDump { dle, .. } => running.push_back(dle),
                        Action::Failed { .. } | Action::Finished => {}
                    }
                }
                let Some(dle) = running.pop_front() else {
                    break;
                };
                d.handle(
                    now,
                    Input::DumpFinished {
                        dle,
                        result: Ok(1_000_000),
                    },
                );
                done += 1;
            }
            black_box(done)
        })
    });
    g.finish();
}

criterion_group!(benches, holding_writer, tar_scan, driver_night);
criterion_main!(benches);
