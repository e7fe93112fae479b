//! What the criterion benchmarks in benches/ share: the quick configuration of the codec
//! benchmarks and the harness that feeds a decoder one socket read at a time.
//!
//! What this library must not do: hold anything a benchmark measures (fixtures and the code
//! under test stay in each bench file, next to the numbers they explain).

use std::hint::black_box;
use std::slice::Chunks;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};

/// The configuration of the codec benchmarks: each case runs in microseconds, so a short
/// warm-up and one second of measurement give stable numbers.
pub fn quick() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

/// A benchmark group whose throughput is `bytes` per iteration.
pub fn bytes_group<'a>(
    c: &'a mut Criterion,
    name: &str,
    bytes: usize,
) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(bytes as u64));
    g
}

/// An input cut into reads of one size, as a shell hands a streaming decoder what each
/// socket read returned.
pub struct Reads<'a> {
    input: &'a [u8],
    size: usize,
}

impl<'a> Reads<'a> {
    /// `input` in reads of `size` bytes.
    pub fn new(input: &'a [u8], size: usize) -> Reads<'a> {
        Reads { input, size }
    }

    /// Benchmarks `decode` fed the reads, one at a time.
    pub fn bench<T>(
        &self,
        g: &mut BenchmarkGroup<'_, WallTime>,
        name: &str,
        mut decode: impl FnMut(Chunks<'_, u8>) -> T,
    ) {
        g.bench_function(name, |b| {
            b.iter(|| decode(black_box(self.input).chunks(self.size)))
        });
    }
}

/// The `main` of a bench file whose groups all run with [`quick`]:
/// `amanda_benches::quick_main!(udp, frames);`.
#[macro_export]
macro_rules! quick_main {
    ($($target:path),+ $(,)?) => {
        criterion::criterion_group! {
            name = benches;
            config = $crate::quick();
            targets = $($target),+
        }
        criterion::criterion_main!(benches);
    };
}
