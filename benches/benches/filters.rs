//! Benchmarks of the `filters` crate: in-process gzip (`compress fast|best`) through a
//! [`GzipWriter`] on 1 and 2 threads, and the streaming gunzip of restores, on a sample of
//! `/usr/share` (the first 32 MiB of its tar stream; generated text where it is missing).
//! The whole-corpus comparison with `gzip -1`/`gzip -9` is `benches/compare-gzip.sh`.
//!
//! Run: `cargo bench -p amanda-benches --bench filters` (add `-- --test` for a smoke run).

use std::hint::black_box;
use std::io::{Read, Write};
use std::num::NonZeroUsize;
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use filters::{GunzipReader, GzipPool, GzipWriter, Level};

const SAMPLE: usize = 32 << 20;

/// The first SAMPLE bytes of `tar -cf - -C / usr/share` (real files of a Debian system).
fn sample() -> Vec<u8> {
    let tar = Command::new("tar")
        .args(["-cf", "-", "-C", "/", "usr/share"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut data = Vec::with_capacity(SAMPLE);
    if let Ok(mut child) = tar {
        if let Some(out) = child.stdout.take() {
            let _ = out.take(SAMPLE as u64).read_to_end(&mut data);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    if data.len() < SAMPLE {
        let words = [
            "usr",
            "share",
            "doc",
            "/",
            "\n",
            "amanda",
            " ",
            "0644",
            "copyright",
        ];
        let mut x = 1u32;
        while data.len() < SAMPLE {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            data.extend_from_slice(words[(x >> 16) as usize % words.len()].as_bytes());
        }
        data.truncate(SAMPLE);
    }
    data
}

fn gzip(c: &mut Criterion) {
    let data = sample();
    let mut g = c.benchmark_group("filters_gzip");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    for (level, name) in [(Level::Fast, "fast"), (Level::Best, "best")] {
        for threads in [1, 2] {
            let pool = GzipPool::new(NonZeroUsize::new(threads).expect("non-zero"));
            g.bench_function(format!("{name}_{threads}_threads"), |b| {
                b.iter(|| {
                    let mut w = GzipWriter::new(&pool, level, Vec::with_capacity(SAMPLE / 2))
                        .expect("pool");
                    w.write_all(&data).expect("compress");
                    black_box(w.finish().expect("finish").len())
                })
            });
        }
    }
    g.finish();
}

fn gunzip(c: &mut Criterion) {
    let data = sample();
    let pool = GzipPool::new(NonZeroUsize::new(2).expect("non-zero"));
    let gz = filters::gzip::compress(&pool, Level::Fast, &data).expect("compress");
    let mut g = c.benchmark_group("filters_gunzip");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("members_of_fast", |b| {
        let mut out = vec![0u8; 256 * 1024];
        b.iter(|| {
            let mut r = GunzipReader::new(gz.as_slice());
            let mut n = 0;
            loop {
                let k = r.read(&mut out).expect("gunzip");
                if k == 0 {
                    break;
                }
                n += k;
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, gzip, gunzip);
criterion_main!(benches);
