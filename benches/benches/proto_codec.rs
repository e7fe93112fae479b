//! Benchmarks of the wire codecs: UDP datagram parse/encode on a real selfcheck REQ, frame
//! decoding of a DATA stream of 32 KiB frames (whole-frame and streaming, plus streaming with
//! CRC-32C as a relaying dumper does), and TCP control packet parsing.
//!
//! Run: `cargo bench -p amanda-benches --bench proto_codec` (add `-- --test` for a smoke run).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use proto::crc::Crc32c;
use proto::frame::{self, Decoder, Event, FrameReader, NETWORK_BLOCK_BYTES};
use proto::tcp;
use proto::udp::Datagram;

/// The real selfcheck REQ of `bsd-amcheck` (1035 bytes, XML DLEs).
const SELFCHECK_REQ: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/traces/bsd-amcheck/udp-004.bin"
));

/// The server side of the real `bsdtcp-amcheck` control connection.
const BSDTCP_CONTROL: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/traces/bsdtcp-amcheck/tcp0-a2b.bin"
));

/// Size of one socket read in the frame benchmarks.
const READ_SIZE: usize = 64 * 1024;

/// A DATA stream as amandad writes it: 8 MiB in 32 KiB frames on handle 499999, a MESG frame
/// every 32 frames, EOF frames at the end.
fn data_stream() -> Vec<u8> {
    let block: Vec<u8> = (0..NETWORK_BLOCK_BYTES)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut wire = Vec::new();
    for i in 0..256 {
        frame::encode_frame(499_999, &block, &mut wire).unwrap();
        if i % 32 == 0 {
            frame::encode_frame(499_998, b"| some tar output line\n", &mut wire).unwrap();
        }
    }
    wire.extend_from_slice(&frame::eof_frame(499_999));
    wire.extend_from_slice(&frame::eof_frame(499_998));
    wire
}

fn udp(c: &mut Criterion) {
    let mut g = c.benchmark_group("udp");
    g.throughput(Throughput::Bytes(SELFCHECK_REQ.len() as u64));
    g.bench_function("parse selfcheck REQ", |b| {
        b.iter(|| Datagram::parse(black_box(SELFCHECK_REQ)).unwrap())
    });
    let parsed = Datagram::parse(SELFCHECK_REQ).unwrap();
    let mut out = Vec::with_capacity(SELFCHECK_REQ.len());
    g.bench_function("encode selfcheck REQ", |b| {
        b.iter(|| {
            out.clear();
            black_box(&parsed).encode(&mut out).unwrap()
        })
    });
    g.finish();
}

fn frames(c: &mut Criterion) {
    let wire = data_stream();
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("whole frames, 64 KiB reads", |b| {
        b.iter(|| {
            let mut reader = FrameReader::new();
            let mut payload = 0usize;
            for read in black_box(&wire).chunks(READ_SIZE) {
                let mut input = read;
                while let Some(f) = reader.next(&mut input).unwrap() {
                    payload += f.payload.len();
                }
            }
            payload
        })
    });
    g.bench_function("streaming, 64 KiB reads", |b| {
        b.iter(|| {
            let mut dec = Decoder::new();
            let mut payload = 0usize;
            for read in black_box(&wire).chunks(READ_SIZE) {
                let mut input = read;
                while let Some(ev) = dec.next(&mut input).unwrap() {
                    if let Event::Data { chunk, .. } = ev {
                        payload += chunk.len();
                    }
                }
            }
            payload
        })
    });
    g.bench_function("streaming + CRC-32C of DATA, 64 KiB reads", |b| {
        b.iter(|| {
            let mut dec = Decoder::new();
            let mut crc = Crc32c::new();
            for read in black_box(&wire).chunks(READ_SIZE) {
                let mut input = read;
                while let Some(ev) = dec.next(&mut input).unwrap() {
                    if let Event::Data {
                        handle: 499_999,
                        chunk,
                        ..
                    } = ev
                    {
                        crc.update(chunk);
                    }
                }
            }
            crc.value()
        })
    });
    g.finish();
}

fn tcp_packets(c: &mut Criterion) {
    // The selfcheck REQ payload (handle 2) of the real bsdtcp amcheck.
    let mut reader = FrameReader::new();
    let mut input = BSDTCP_CONTROL;
    let mut payload = Vec::new();
    while let Some(f) = reader.next(&mut input).unwrap() {
        if f.handle == 2 && f.payload.len() > 2 {
            payload = f.payload.into_owned();
            break;
        }
    }
    assert!(payload.len() > 100, "selfcheck REQ not found");
    let mut g = c.benchmark_group("tcp");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("parse selfcheck REQ payload", |b| {
        b.iter(|| tcp::Packet::parse(black_box(&payload)).unwrap())
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = udp, frames, tcp_packets
}
criterion_main!(benches);
