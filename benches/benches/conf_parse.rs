//! conf: parse a large amanda.conf (stages 1+2) and resolve a 10,000-line disklist.
//! CI smoke run: `cargo bench -p amanda-benches --bench conf_parse -- --test`.

use std::hint::black_box;
use std::time::Duration;

use conf::{Config, Disklist};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// An amanda.conf with `n` dumptypes in inheritance chains, applications, holding disks
/// and interfaces: the shape of a large site's configuration.
fn big_amanda_conf(n: usize) -> String {
    let mut s = String::from(
        "org \"bench\"\ninparallel 20\nnetusage 1000000 Kbps\ndumpcycle 1 week\ntapecycle 20 tapes\n\
         reserved-udp-port 840,860\n\
         define application-tool app_amgtar {\n    plugin \"amgtar\"\n    property \"ATIME-PRESERVE\" \"no\"\n}\n\
         define dumptype global {\n    index yes\n    record yes\n    auth \"bsdtcp\"\n    estimate client calcsize\n}\n",
    );
    for i in 0..n {
        let parent = if i == 0 {
            "global".to_string()
        } else {
            format!("dt{}", i - 1)
        };
        s.push_str(&format!(
            "define dumptype dt{i} {{\n    {parent}\n    comment \"dumptype number {i}\"\n    program \"APPLICATION\"\n    application \"app_amgtar\"\n    compress client fast\n    exclude list \"/etc/amanda/exclude.{i}\"\n    exclude append \"./tmp{i}\"\n    property \"X-{i}\" \"v\"\n    maxdumps {m}\n    priority high\n}}\n",
            m = 1 + i % 4
        ));
        if i % 10 == 0 {
            s.push_str(&format!(
                "define holdingdisk hd{i} {{\n    directory \"/holding/{i}\"\n    use 500 mbytes\n    chunksize 1 Gb\n}}\nholdingdisk \"hd{i}\"\ndefine interface if{i} {{\n    use 400 kbps\n}}\n"
            ));
        }
    }
    s
}

fn disklist(lines: usize, dumptypes: usize) -> String {
    let mut s = String::new();
    for i in 0..lines {
        let host = format!("host{}.example.com", i % 250);
        if i % 100 == 0 {
            s.push_str(&format!(
                "{host} \"/data/dle {i}\" {{\n    dt{}\n    compress server fast\n}} {} if0\n",
                i % dumptypes,
                i % 4
            ));
        } else {
            s.push_str(&format!(
                "{host} /export/disk{i} /dev/sd{i} dt{} # dle {i}\n",
                i % dumptypes
            ));
        }
    }
    s
}

fn bench(c: &mut Criterion) {
    let conf_text = big_amanda_conf(500);
    let config = Config::parse_str("amanda.conf", &conf_text)
        .expect("bench config parses")
        .value;
    let dl_text = disklist(10_000, 500);
    Disklist::parse(&config, "disklist", dl_text.as_bytes()).expect("bench disklist parses");

    let mut g = c.benchmark_group("conf_parse");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_millis(500));
    g.sample_size(20);
    g.throughput(Throughput::Bytes(conf_text.len() as u64));
    g.bench_function("amanda_conf_500_dumptypes", |b| {
        b.iter(|| Config::parse_str("amanda.conf", black_box(&conf_text)))
    });
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("disklist_10000_lines", |b| {
        b.iter(|| Disklist::parse(&config, "disklist", black_box(dl_text.as_bytes())))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
