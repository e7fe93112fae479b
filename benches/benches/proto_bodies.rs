//! Benchmarks of the body codecs: DLE XML parsing and encoding of a sendsize request with 100
//! DLEs (the size of a busy client), MESG stream splitting and classification, and Amanda's
//! quoting.
//!
//! Run: `cargo bench -p amanda-benches --bench proto_bodies` (add `-- --test` for a smoke run).

use std::hint::black_box;

use amanda_benches::{Reads, bytes_group};
use criterion::{Criterion, Throughput};
use proto::dle::xml::{self, XmlLayout};
use proto::dle::{Application, DataPath, Dle, Estimate, Level, Property};
use proto::features::Features;
use proto::mesg::{LineSplitter, MesgLine, SplitLine};
use proto::quote;

/// 100 DLEs like the traces' amgtar DLEs, half of them with names that need the raw form.
fn dles() -> Vec<Dle> {
    (0..100)
        .map(|i| Dle {
            program: "APPLICATION".into(),
            application: Some(Application {
                plugin: "amgtar".into(),
                properties: vec![Property::new("atime-preserve", "no")],
                client_name: None,
            }),
            estimates: vec![Estimate::Client],
            disk: Some(
                if i % 2 == 0 {
                    format!("/srv/data/{i}")
                } else {
                    format!("/srv/data with space é/{i}")
                }
                .into(),
            ),
            levels: vec![Level::new(0), Level::new(1)],
            spindle: -1,
            auth: Some("bsdtcp".into()),
            index: true,
            data_path: Some(DataPath::Amanda),
            ..Dle::default()
        })
        .collect()
}

fn dle_xml(c: &mut Criterion) {
    let f = Features::amanda_3_5_1();
    let dles = dles();
    let body = xml::encode_dles(&dles, XmlLayout::Sendsize, &f);
    let mut g = c.benchmark_group("dle_xml");
    g.throughput(Throughput::Elements(dles.len() as u64));
    g.bench_function("parse sendsize REQ, 100 DLEs", |b| {
        b.iter(|| xml::parse_dles(black_box(&body)).unwrap())
    });
    g.bench_function("encode sendsize REQ, 100 DLEs", |b| {
        b.iter(|| xml::encode_dles(black_box(&dles), XmlLayout::Sendsize, &f))
    });
    g.finish();
}

/// A MESG stream: the header lines, then 20 000 tar output lines, then the trailer.
fn mesg_stream() -> Vec<u8> {
    let mut s = b"sendbackup: start [client:/home level 0]\nsendbackup: info BACKUP=/bin/tar\n\
                  sendbackup: info RECOVER_CMD=/bin/tar -xpGf - ...\nsendbackup: info end\n"
        .to_vec();
    for i in 0..20_000 {
        s.extend_from_slice(
            format!("| ./home/user/file-{i}.txt: file changed as we read it\n").as_bytes(),
        );
    }
    s.extend_from_slice(
        b"sendbackup: client-CRC 328bdcbf:10240\nsendbackup: size 10\nsendbackup: end\n",
    );
    s
}

fn mesg(c: &mut Criterion) {
    let stream = mesg_stream();
    let mut g = bytes_group(c, "mesg", stream.len());
    let reads = Reads::new(&stream, 4096);
    reads.bench(&mut g, "split + classify, 4 KiB reads", |chunks| {
        let mut splitter = LineSplitter::default();
        let mut n = 0usize;
        for chunk in chunks {
            splitter.push(chunk);
            while let Some(SplitLine::Line(line)) = splitter.next_line() {
                if !matches!(MesgLine::parse(&line), MesgLine::Unknown(_)) {
                    n += 1;
                }
            }
        }
        n
    });
    g.finish();
}

fn quoting(c: &mut Criterion) {
    let names: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                format!("/srv/data/{i}").into_bytes()
            } else {
                format!("/srv/data with \"quotes\" and tab\t é/{i}").into_bytes()
            }
        })
        .collect();
    let quoted: Vec<Vec<u8>> = names.iter().map(|n| quote::quote_string(n)).collect();
    let mut g = bytes_group(c, "quote", names.iter().map(Vec::len).sum());
    type Codec = fn(&[u8]) -> Vec<u8>;
    let cases: [(&str, &[Vec<u8>], Codec); 2] = [
        ("quote_string, 1000 names", &names, quote::quote_string),
        ("unquote_string, 1000 names", &quoted, quote::unquote_string),
    ];
    for (name, input, f) in cases {
        g.bench_function(name, |b| {
            b.iter(|| black_box(input).iter().map(|n| f(n).len()).sum::<usize>())
        });
    }
    g.finish();
}

amanda_benches::quick_main!(dle_xml, mesg, quoting);
