//! Benchmarks of the wire codecs: UDP datagram parse/encode on a real selfcheck REQ, frame
//! decoding of a DATA stream of 32 KiB frames (whole-frame and streaming, plus streaming with
//! CRC-32C as a relaying dumper does), and TCP control packet parsing.
//!
//! Run: `cargo bench -p amanda-benches --bench proto_codec` (add `-- --test` for a smoke run).

use std::hint::black_box;

use amanda_benches::{Reads, bytes_group};
use criterion::Criterion;
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
    let mut g = bytes_group(c, "udp", SELFCHECK_REQ.len());
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
    let mut g = bytes_group(c, "frame", wire.len());
    let reads = Reads::new(&wire, READ_SIZE);
    reads.bench(&mut g, "whole frames, 64 KiB reads", |chunks| {
        let mut reader = FrameReader::new();
        let mut payload = 0usize;
        for mut input in chunks {
            while let Some(f) = reader.next(&mut input).unwrap() {
                payload += f.payload.len();
            }
        }
        payload
    });
    reads.bench(&mut g, "streaming, 64 KiB reads", |chunks| {
        let mut dec = Decoder::new();
        let mut payload = 0usize;
        for mut input in chunks {
            while let Some(ev) = dec.next(&mut input).unwrap() {
                if let Event::Data { chunk, .. } = ev {
                    payload += chunk.len();
                }
            }
        }
        payload
    });
    reads.bench(
        &mut g,
        "streaming + CRC-32C of DATA, 64 KiB reads",
        |chunks| {
            let mut dec = Decoder::new();
            let mut crc = Crc32c::new();
            for mut input in chunks {
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
        },
    );
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
    let mut g = bytes_group(c, "tcp", payload.len());
    g.bench_function("parse selfcheck REQ payload", |b| {
        b.iter(|| tcp::Packet::parse(black_box(&payload)).unwrap())
    });
    g.finish();
}

amanda_benches::quick_main!(udp, frames, tcp_packets);
