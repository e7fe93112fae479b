//! Golden tests of the body codecs (`proto::{options, request, dle, sendsize, sendbackup,
//! selfcheck, mesg, header}`) against the real Amanda 3.5.1 traces and the spec's test
//! vectors, plus a check of our dump-file header with Debian's real `amrestore`.
//!
//! What they prove: every REQ/REP/PREP/NAK body of every trace (UDP datagrams and bsdtcp
//! frames) parses into typed values, and re-encodes byte-identically (OPTIONS lines, the DLE
//! XML in each of the server's three layouts, sendsize PREP/REP, sendbackup REP, selfcheck
//! JSON); the MESG stream of every dump parses and the outcome tracker says DONE with the
//! CRC-32C of the DATA bytes; the dump-file headers parse and are rebuilt byte for byte, both
//! from their parsed fields and from what the dumper knows (REQ DLE + MESG info lines);
//! the spec's test vectors TV-3..TV-10 and TV-14 hold; and `amrestore` reads a file made of
//! our header plus a GNU tar archive and gives back exactly the tar bytes.
//!
//! The frame and datagram splitting here is deliberately minimal and local: the wire codecs
//! have their own golden tests (`proto_golden`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use proto::crc::{Crc32c, CrcValue};
use proto::dle::xml::{self, XmlLayout};
use proto::dle::{Compress, Dle, Estimate, Level, legacy};
use proto::features::{Feature, Features};
use proto::header::{DumpHeader, HEADER_SIZE};
use proto::mesg::{DataSummary, DumpStatus, DumpTracker, LineSplitter, SplitLine};
use proto::options::{self, Options};
use proto::pkt::PacketType;
use proto::request::{self, RequestBody, Service, ServiceInput};
use proto::selfcheck;
use proto::sendbackup::{self, Reply, StreamIds};
use proto::sendsize::{EstimateLine, EstimateResult, SendsizeReply};

const F: &str = "ffffffff9efefbfffffffffffffff3fffbf71f";

fn f() -> Features {
    Features::amanda_3_5_1()
}

/// The OPTIONS of the golden requests: server features `f()`, maxdumps 1, the test host and
/// configuration, with the dump's timestamp when `timestamped`.
fn golden_options(client: &Features, timestamped: bool) -> Options {
    let timestamp: Option<&[u8]> = timestamped.then_some(b"20240101020304");
    Options::for_request(
        &f(),
        client,
        1,
        b"client.example.com",
        b"DailySet1",
        timestamp,
    )
}

fn traces() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("traces")
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// One control packet of a trace: where it was, its type, its body (SECURITY line removed)
/// and the exchange key (UDP handle+seq, or TCP connection+handle).
#[derive(Debug, Clone)]
struct Packet {
    at: String,
    kind: PacketType,
    key: String,
    body: Vec<u8>,
}

fn strip_security(body: &[u8]) -> Vec<u8> {
    match body.strip_prefix(b"SECURITY ") {
        Some(rest) => rest
            .splitn(2, |&b| b == b'\n')
            .nth(1)
            .unwrap_or_default()
            .to_vec(),
        None => body.to_vec(),
    }
}

/// Frames `[u32 len][u32 handle][payload]` of an Amanda-framed stream; `None` if the stream
/// is not framed (raw bsd data streams, dump-file headers).
fn frames(d: &[u8]) -> Option<Vec<(u32, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = d;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let handle = u32::from_be_bytes(rest.get(4..8)?.try_into().ok()?);
        if len > 4 << 20 {
            return None;
        }
        out.push((handle, rest.get(8..8 + len)?.to_vec()));
        rest = &rest[8 + len..];
    }
    Some(out)
}

/// Every control packet of every trace, in capture order per trace.
fn packets() -> BTreeMap<String, Vec<Packet>> {
    let mut all = BTreeMap::new();
    for entry in fs::read_dir(traces()).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let trace = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut list = Vec::new();
        for name in names {
            let data = read(&dir.join(&name));
            if name.starts_with("udp-") {
                let nl = data.iter().position(|&b| b == b'\n').unwrap();
                let header: Vec<&[u8]> = data[..nl].split(|&b| b == b' ').collect();
                let kind = PacketType::from_name(header[2]).unwrap();
                let key = format!(
                    "{}/{}",
                    String::from_utf8_lossy(header[4]),
                    String::from_utf8_lossy(header[6])
                );
                list.push(Packet {
                    at: format!("{trace}/{name}"),
                    kind,
                    key,
                    body: strip_security(&data[nl + 1..]),
                });
            } else if name.starts_with("tcp") {
                let Some(fr) = frames(&data) else { continue };
                let conn = name.split('-').next().unwrap().to_owned();
                for (i, (handle, payload)) in fr.into_iter().enumerate() {
                    if handle >= 10_000 || payload.len() < 2 {
                        continue;
                    }
                    let kind = PacketType::from_code(payload[0]).unwrap();
                    let body = &payload[1..payload.len() - 1];
                    assert_eq!(payload.last(), Some(&0), "TCP packet bodies end in NUL");
                    list.push(Packet {
                        at: format!("{trace}/{name}#{i}"),
                        kind,
                        key: format!("{conn}/{handle}"),
                        body: strip_security(body),
                    });
                }
            }
        }
        all.insert(trace, list);
    }
    all
}

fn split_request(body: &[u8]) -> (Service, Vec<u8>, Vec<u8>) {
    let req = RequestBody::parse(body).unwrap();
    let service = req.known_service().unwrap();
    let args = req.arguments.as_bytes();
    let nl = args.iter().position(|&b| b == b'\n').unwrap();
    (service, args[..=nl].to_vec(), args[nl + 1..].to_vec())
}

#[test]
fn every_request_body_parses_and_reencodes_byte_identically() {
    let mut counts = BTreeMap::new();
    for (trace, list) in packets() {
        for p in list.iter().filter(|p| p.kind == PacketType::Req) {
            let (service, options_line, rest) = split_request(&p.body);
            *counts.entry(service.name()).or_insert(0) += 1;
            // SERVICE line + arguments round trip
            let req = RequestBody::parse(&p.body).unwrap();
            assert_eq!(req.encode(), p.body, "{}", p.at);
            // OPTIONS line: parses cleanly, re-encodes identically
            let value = options_line
                .strip_prefix(b"OPTIONS ")
                .unwrap()
                .strip_suffix(b"\n")
                .unwrap();
            let parsed = Options::parse(value);
            assert!(
                parsed.diagnostics.is_empty(),
                "{}: {:?}",
                p.at,
                parsed.diagnostics
            );
            assert_eq!(parsed.options.features, Some(f()), "{}", p.at);
            assert_eq!(parsed.options.encode(), options_line, "{}", p.at);
            if service == Service::Noop {
                assert!(rest.is_empty());
                continue;
            }
            let o = &parsed.options;
            let built = Options::for_request(
                &f(),
                &f(),
                o.maxdumps.unwrap(),
                o.hostname.as_ref().unwrap(),
                o.config.as_ref().unwrap(),
                o.timestamp.as_deref(),
            );
            assert_eq!(
                built.encode(),
                options_line,
                "{}: the server's gating",
                p.at
            );
            // the client's view of its stdin
            let input = ServiceInput::split(&req.arguments, &f());
            assert_eq!(input.xml.as_deref(), Some(rest.as_slice()), "{}", p.at);
            // the DLEs, re-encoded in the layout of this request
            let dles = xml::parse_dles(&rest).unwrap_or_else(|e| panic!("{}: {e}", p.at));
            let layout = match service {
                Service::Selfcheck => XmlLayout::Selfcheck,
                Service::Sendsize => XmlLayout::Sendsize,
                Service::Sendbackup => XmlLayout::Sendbackup,
                other => panic!("{}: unexpected service {other}", p.at),
            };
            assert_eq!(
                String::from_utf8_lossy(&xml::encode_dles(&dles, layout, &f())),
                String::from_utf8_lossy(&rest),
                "{}: {layout:?}",
                p.at
            );
            if service == Service::Sendbackup {
                assert_eq!(dles.len(), 1);
                assert_eq!(xml::parse_single_dle(&rest).unwrap(), dles[0]);
            }
            // what the traces back up: amgtar DLEs, one with a space and UTF-8 in its name
            for d in &dles {
                assert_eq!(d.program, "APPLICATION", "{}", p.at);
                assert_eq!(d.application.as_ref().unwrap().plugin, "amgtar");
                let auth = trace
                    .trim_start_matches("xinetd-")
                    .split('-')
                    .next()
                    .unwrap();
                assert_eq!(d.auth.as_ref().unwrap(), auth, "{}", p.at);
                assert!(
                    d.disk
                        .as_ref()
                        .unwrap()
                        .starts_with(b"/tmp/amanda-harness/")
                );
            }
        }
    }
    assert!(counts.get("noop").copied().unwrap_or(0) >= 8, "{counts:?}");
    assert!(
        counts.get("selfcheck").copied().unwrap_or(0) >= 6,
        "{counts:?}"
    );
    assert!(
        counts.get("sendsize").copied().unwrap_or(0) >= 3,
        "{counts:?}"
    );
    assert!(
        counts.get("sendbackup").copied().unwrap_or(0) >= 6,
        "{counts:?}"
    );
}

#[test]
fn every_reply_body_parses_and_reencodes_byte_identically() {
    let mut seen = BTreeMap::new();
    for (trace, list) in packets() {
        let mut services: BTreeMap<String, Service> = BTreeMap::new();
        for p in &list {
            match p.kind {
                PacketType::Req => {
                    services.insert(p.key.clone(), split_request(&p.body).0);
                }
                PacketType::Ack => assert!(p.body.is_empty()),
                PacketType::Nak => {
                    *seen.entry("NAK").or_insert(0) += 1;
                    let text = p.body.strip_prefix(b"ERROR ").unwrap();
                    let text = text.strip_suffix(b"\n").unwrap();
                    assert_eq!(request::nak_security(text), p.body, "{}", p.at);
                    let want = "NAK: user backup from localhost is not allowed to execute the service noop: \
                                Please add the line \"localhost backup amdump\" to /var/backups/.amandahosts on the client";
                    let e = sendbackup::parse_reply(PacketType::Nak, &p.body, &f()).unwrap_err();
                    assert!(
                        matches!(e, sendbackup::ReplyError::Nak(_)) && e.retryable(),
                        "{}",
                        p.at
                    );
                    assert_eq!(e.to_string(), want, "{}", p.at);
                }
                PacketType::Rep | PacketType::Prep => {
                    let service = services[&p.key];
                    *seen.entry(service.name()).or_insert(0) += 1;
                    match service {
                        Service::Noop => assert_eq!(options::noop_reply(&f()), p.body, "{}", p.at),
                        Service::Selfcheck => {
                            let msgs = selfcheck::parse_json_reply(&p.body)
                                .unwrap_or_else(|e| panic!("{}: {e}", p.at));
                            assert_eq!(selfcheck::encode_json_reply(&msgs), p.body, "{}", p.at);
                            let read = selfcheck::read_reply(&p.body);
                            assert!(read.json);
                            assert_eq!(read.results.len(), msgs.len());
                            let problems: Vec<_> =
                                read.problems().map(|r| r.message.to_string()).collect();
                            if trace.contains("missing-dle") {
                                assert_eq!(
                                    problems,
                                    [
                                        "can not stat '/tmp/amanda-harness/no-such-dir': No such file or directory"
                                    ],
                                    "{}",
                                    p.at
                                );
                            } else {
                                assert!(problems.is_empty(), "{}: {problems:?}", p.at);
                            }
                        }
                        Service::Sendsize => {
                            let r = SendsizeReply::parse(&p.body)
                                .unwrap_or_else(|e| panic!("{}: {e}", p.at));
                            assert_eq!(r.encode(), p.body, "{}", p.at);
                            assert_eq!(r.features(), Some(Ok(f())));
                            assert!(r.estimates().all(|e| e.level == 0
                                && matches!(e.result, EstimateResult::Size(n) if n > 0)));
                        }
                        Service::Sendbackup => {
                            assert_eq!(p.kind, PacketType::Rep);
                            let Ok(Reply::Connect { ids, features }) =
                                sendbackup::parse_reply(PacketType::Rep, &p.body, &f())
                            else {
                                panic!("{}: no CONNECT", p.at)
                            };
                            assert_eq!(features, Some(f()));
                            assert!(ids.state.is_some());
                            let options_line =
                                options::sendbackup_reply_options(&f(), &f(), b"localhost");
                            assert_eq!(
                                sendbackup::encode_reply(&ids, &options_line),
                                p.body,
                                "{}",
                                p.at
                            );
                            // what amandad made of the service's labels
                            let service_out =
                                sendbackup::service_reply(false, true, &f(), &options_line);
                            let want = [ids.data, ids.mesg, ids.index, ids.state.unwrap()];
                            let mut i = 0;
                            let r = sendbackup::rewrite_connect(&service_out, |_| {
                                i += 1;
                                u32::try_from(want[i - 1]).ok()
                            });
                            assert_eq!(r.body, p.body, "{}", p.at);
                        }
                        other => panic!("{}: reply for {other}", p.at),
                    }
                }
            }
        }
    }
    for key in ["noop", "selfcheck", "sendsize", "sendbackup", "NAK"] {
        assert!(
            seen.get(key).copied().unwrap_or(0) > 0,
            "no {key} reply checked: {seen:?}"
        );
    }
}

#[test]
fn sendsize_prep_is_a_prefix_of_the_rep() {
    for list in packets().values() {
        let preps: Vec<&Packet> = list.iter().filter(|p| p.kind == PacketType::Prep).collect();
        for prep in preps {
            let rep = list
                .iter()
                .find(|p| p.kind == PacketType::Rep && p.key == prep.key)
                .unwrap();
            assert!(
                rep.body.starts_with(&prep.body),
                "{}: PREP bodies are cumulative",
                prep.at
            );
        }
    }
}

/// The streams of every dump: (trace, MESG bytes, DATA bytes), from raw bsd connections and
/// from the multiplexed bsdtcp/bsdudp connections.
fn dumps() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    // bsd: one raw TCP connection per stream; the REP says which port is which.
    let dir = traces().join("bsd-amdump");
    let manifest = String::from_utf8(read(&dir.join("MANIFEST"))).unwrap();
    let by_port = |port: &str| -> Vec<u8> {
        let line = manifest
            .lines()
            .find(|l| l.contains(&format!(":{port} -> ")) && l.contains("-b2a.bin"))
            .unwrap();
        read(&dir.join(line.split(' ').next().unwrap()))
    };
    for p in &packets()["bsd-amdump"] {
        if let Ok(Reply::Connect { ids, .. }) = sendbackup::parse_reply(p.kind, &p.body, &f()) {
            out.push((
                "bsd-amdump".to_owned(),
                by_port(&ids.mesg.to_string()),
                by_port(&ids.data.to_string()),
            ));
        }
    }
    // bsdtcp and bsdudp: frames; MESG/DATA handles from the REP
    for trace in ["bsdtcp-amdump", "bsdudp-amdump"] {
        let dir = traces().join(trace);
        let reps: Vec<StreamIds> = packets()[trace]
            .iter()
            .filter_map(|p| match sendbackup::parse_reply(p.kind, &p.body, &f()) {
                Ok(Reply::Connect { ids, .. }) => Some(ids),
                _ => None,
            })
            .collect();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names.iter().filter(|n| n.ends_with("-b2a.bin")) {
            let Some(fr) = frames(&read(&dir.join(name))) else {
                continue;
            };
            for ids in &reps {
                let (Ok(mesg_h), Ok(data_h)) = (u32::try_from(ids.mesg), u32::try_from(ids.data))
                else {
                    continue;
                };
                let mesg: Vec<u8> = fr
                    .iter()
                    .filter(|(h, _)| *h == mesg_h)
                    .flat_map(|(_, p)| p.clone())
                    .collect();
                let data: Vec<u8> = fr
                    .iter()
                    .filter(|(h, _)| *h == data_h)
                    .flat_map(|(_, p)| p.clone())
                    .collect();
                if mesg.starts_with(b"sendbackup:") && !data.is_empty() {
                    // bsdtcp dumps reuse the same handles on their own connections
                    out.push((format!("{trace}/{name}"), mesg, data));
                    break;
                }
            }
        }
    }
    out
}

#[test]
fn every_traced_dump_is_done_with_matching_crc() {
    let dumps = dumps();
    assert_eq!(
        dumps.len(),
        6,
        "two dumps in each of the three amdump traces"
    );
    for (at, mesg, data) in dumps {
        let mut crc = Crc32c::new();
        crc.update(&data);
        // Feed MESG in odd-sized chunks, as the network delivers it.
        let mut splitter = LineSplitter::default();
        let mut tracker = DumpTracker::new();
        let mut header_at = None;
        for (i, chunk) in mesg.chunks(7).enumerate() {
            splitter.push(chunk);
            while let Some(line) = splitter.next_line() {
                let SplitLine::Line(line) = line else {
                    panic!("{at}: over-long line")
                };
                tracker.on_line(&line);
                if header_at.is_none() && tracker.header_complete() {
                    header_at = Some(i);
                }
            }
        }
        assert!(header_at.is_some(), "{at}: sendbackup: info end");
        let tail = splitter.finish();
        assert_eq!(tail, None, "{at}: MESG ends with a newline");
        tracker.on_mesg_eof(None);
        assert_eq!(tracker.info().backup.as_deref(), Some(&b"APPLICATION"[..]));
        assert_eq!(tracker.info().application.as_deref(), Some(&b"amgtar"[..]));
        let out = tracker.finish(DataSummary {
            received: crc.value(),
        });
        assert_eq!(out.status, DumpStatus::Done, "{at}: {:?}", out.error);
        assert_eq!(out.error, None);
        assert_eq!(
            out.client_crc,
            crc.value(),
            "{at}: the client-CRC line equals the CRC-32C of DATA"
        );
        assert_eq!(out.kb, (data.len() as u64).div_ceil(1024));
        assert!(out.orig_kb.unwrap() > 0);
    }
}

/// The dump-file headers of the traces: (trace/file, bytes).
fn headers() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for trace in ["bsd-amdump", "bsdtcp-amdump", "bsdudp-amdump"] {
        let dir = traces().join(trace);
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let d = read(&dir.join(&name));
            if d.len() == HEADER_SIZE && d.starts_with(b"AMANDA: FILE ") {
                out.push((format!("{trace}/{name}"), d));
            }
        }
    }
    out
}

#[test]
fn dump_file_headers_parse_and_rebuild_identically() {
    let headers = headers();
    assert_eq!(headers.len(), 6);
    for (at, block) in headers {
        let h = DumpHeader::parse(&block).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(h.host, "localhost");
        assert_eq!(h.program, "APPLICATION");
        assert_eq!(h.application.as_deref(), Some(&b"amgtar"[..]));
        assert_eq!(h.blocksize, Some(32768));
        assert_eq!(
            h.recover_cmd.as_deref(),
            Some(&b"/usr/lib/amanda/application/amgtar restore [./file-to-restore]+"[..])
        );
        assert_eq!(h.build().unwrap(), block, "{at}");
        // The embedded DLE is the sendbackup request's, in the uncleaned layout.
        let dle_text = h.dle.clone().unwrap();
        let dles = xml::parse_dles_text(&dle_text).unwrap();
        assert_eq!(dles.len(), 1);
        assert_eq!(
            dles[0].to_xml(XmlLayout::HeaderDle, &f()),
            dle_text.as_bytes(),
            "{at}"
        );
    }
}

#[test]
fn dumper_header_from_request_and_mesg_matches_the_real_dumpers_bytes() {
    // For each dump: the REQ's DLE and the MESG info lines give exactly the header the real
    // dumper wrote (the header connections are in dump order, like the REPs).
    let headers = headers();
    let mut checked = 0;
    for trace in ["bsd-amdump", "bsdtcp-amdump", "bsdudp-amdump"] {
        let reqs: Vec<Vec<u8>> = packets()[trace]
            .iter()
            .filter(|p| {
                p.kind == PacketType::Req && split_request(&p.body).0 == Service::Sendbackup
            })
            .map(|p| p.body.clone())
            .collect();
        let mesgs: Vec<Vec<u8>> = dumps()
            .into_iter()
            .filter(|(at, ..)| at.starts_with(trace))
            .map(|(_, m, _)| m)
            .collect();
        let blocks: Vec<&Vec<u8>> = headers
            .iter()
            .filter(|(at, _)| at.starts_with(trace))
            .map(|(_, b)| b)
            .collect();
        for ((req, mesg), block) in reqs.iter().zip(&mesgs).zip(blocks) {
            let (_, options_line, xml_part) = split_request(req);
            let opts = Options::parse(&options_line[8..options_line.len() - 1]).options;
            let dle = xml::parse_single_dle(&xml_part).unwrap();
            let mut tracker = DumpTracker::new();
            for line in mesg.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                tracker.on_line(line);
            }
            let header = DumpHeader::for_dump(
                opts.timestamp.as_ref().unwrap(),
                opts.hostname.as_ref().unwrap(),
                &dle,
                dle.levels[0].level,
                tracker.info(),
                Some(&dle.to_xml(XmlLayout::HeaderDle, &f())),
            );
            // the header of this dump is the one naming its disk
            let parsed = DumpHeader::parse(block).unwrap();
            if parsed.disk != header.disk {
                continue;
            }
            assert_eq!(header.build().unwrap(), **block, "{trace}");
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "only {checked} headers matched a request in order"
    );
}

/// Our header followed by a GNU tar archive is a dump file that Debian's `amrestore` reads:
/// it prints the header summary and writes exactly the tar bytes.
#[test]
fn real_amrestore_reads_our_header_and_returns_the_tar_bytes() {
    const AMRESTORE: &str = "/usr/sbin/amrestore";
    if !Path::new(AMRESTORE).exists() {
        eprintln!(
            "\n*** SKIPPED real_amrestore_reads_our_header: {AMRESTORE} is not installed ***\n"
        );
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "\n*** SKIPPED real_amrestore_reads_our_header: needs root to run amrestore as `backup` ***\n"
        );
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("amrs-proto-bodies-")
        .tempdir()
        .unwrap();
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a file.txt"), b"hello amanda\n").unwrap();
    fs::write(src.join("héllo.bin"), (0..=255u8).collect::<Vec<u8>>()).unwrap();
    let tar = dir.path().join("x.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let tar_bytes = read(&tar);

    let dle = Dle {
        program: "GNUTAR".into(),
        estimates: vec![Estimate::Client],
        disk: Some("/srv/data with space é".into()),
        levels: vec![Level::new(0)],
        auth: Some("bsdtcp".into()),
        compress: Compress::None,
        index: true,
        data_path: Some(proto::dle::DataPath::Amanda),
        ..Dle::default()
    };
    let mut tracker = DumpTracker::new();
    for line in [
        "sendbackup: start [client.example.com:/srv/data with space é level 0]",
        "sendbackup: info BACKUP=/bin/tar",
        "sendbackup: info RECOVER_CMD=/bin/tar -xpGf - ...",
        "sendbackup: info end",
    ] {
        tracker.on_line(line.as_bytes());
    }
    let header = DumpHeader::for_dump(
        b"20240101020304",
        b"client.example.com",
        &dle,
        0,
        tracker.info(),
        Some(&dle.to_xml(XmlLayout::HeaderDle, &f())),
    );
    let mut file = header.build().unwrap();
    file.extend_from_slice(&tar_bytes);
    let dump = dir.path().join("dump.bin");
    fs::write(&dump, &file).unwrap();
    fs::set_permissions(&dump, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();

    let out = Command::new("runuser")
        .args(["-u", "backup", "--", AMRESTORE, "-p"])
        .arg(&dump)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "amrestore failed: {stderr}");
    assert!(
        out.stdout == tar_bytes,
        "amrestore -p did not return the tar bytes ({} vs {} bytes); stderr: {stderr}",
        out.stdout.len(),
        tar_bytes.len()
    );
    assert!(
        stderr.contains("FILE: date 20240101020304 host client.example.com disk \"/srv/data with space é\" lev 0 comp N program /bin/tar"),
        "amrestore's summary: {stderr}"
    );

    // -h keeps the header: amrestore writes our 32 KiB block back, then the tar bytes.
    let out = crate::util::run_ok(
        Command::new("runuser")
            .args(["-u", "backup", "--", AMRESTORE, "-h", "-p"])
            .arg(&dump)
            .current_dir(dir.path()),
    );
    assert_eq!(out.stdout.len(), HEADER_SIZE + tar_bytes.len());
    // amrestore rebuilds the header from what it parsed; its heredoc reader drops empty
    // lines, so the DLE loses its final newline. Everything else is ours unchanged.
    let theirs = DumpHeader::parse(&out.stdout[..HEADER_SIZE]).unwrap();
    let mut ours = DumpHeader::parse(&file[..HEADER_SIZE]).unwrap();
    ours.dle = ours
        .dle
        .map(|d| d.strip_suffix(b"\n").unwrap_or(&d).to_vec().into());
    assert_eq!(theirs, ours);
    assert!(out.stdout[HEADER_SIZE..] == tar_bytes[..]);
}

// ---------------------------------------------------------------------------------------
// Spec test vectors.

#[test]
fn tv3_selfcheck_request_for_a_legacy_client() {
    let client = Features::amanda_3_5_1().without(Feature::REQ_XML);
    let opts = golden_options(&client, false);
    let dle = Dle {
        program: "GNUTAR".into(),
        disk: Some("/home".into()),
        auth: Some("bsd".into()),
        compress: Compress::Fast,
        index: true,
        ..Dle::default()
    };
    let mut args = opts.encode();
    args.extend_from_slice(&legacy::selfcheck_line(&dle, &client));
    assert_eq!(
        String::from_utf8(request::request_body(b"selfcheck", &args)).unwrap(),
        format!(
            "SERVICE selfcheck\nOPTIONS features={F};maxdumps=1;hostname=client.example.com;config=DailySet1;\n\
             GNUTAR /home 0 OPTIONS |;auth=bsd;compress-fast;index;\n"
        )
    );
}

/// [`home`] as sendbackup gets it: with its one level, 0.
fn sendbackup_home(auth: &str) -> Dle {
    Dle {
        levels: vec![Level::new(0)],
        ..home(auth)
    }
}

fn home(auth: &str) -> Dle {
    Dle {
        program: "GNUTAR".into(),
        estimates: vec![Estimate::Client],
        disk: Some("/home".into()),
        auth: Some(auth.into()),
        compress: Compress::Fast,
        index: true,
        data_path: Some(proto::dle::DataPath::Amanda),
        ..Dle::default()
    }
}

fn req(service: &str, opts: &Options, dles: &[u8]) -> String {
    let mut args = opts.encode();
    args.extend_from_slice(dles);
    String::from_utf8(request::request_body(service.as_bytes(), &args)).unwrap()
}

#[test]
fn tv4_selfcheck_xml_request_and_legacy_reply() {
    let opts = golden_options(&f(), false);
    let body = req(
        "selfcheck",
        &opts,
        &home("bsdtcp").to_xml(XmlLayout::Selfcheck, &f()),
    );
    assert_eq!(
        body,
        format!(
            "SERVICE selfcheck\nOPTIONS features={F};maxdumps=1;hostname=client.example.com;config=DailySet1;\n\
             <dle>\n  <program>GNUTAR</program>\n  <estimate>CLIENT </estimate>\n  <disk>/home</disk>\n  \
             <auth>bsdtcp</auth>\n  <compress>FAST</compress>\n  <record>YES</record>\n  <index>YES</index>\n  \
             <datapath>AMANDA</datapath>\n</dle>\n"
        )
    );
    // The reply to a server without fe_selfcheck_message: legacy lines.
    let server = f().without(Feature::SELFCHECK_MESSAGE);
    let mut w = selfcheck::ReplyWriter::new(&server);
    let mut rep = w.header().to_vec();
    for m in [
        selfcheck::msg::version(b"client.example.com"),
        selfcheck::msg::distro(b"Debian", b"client.example.com"),
        selfcheck::msg::platform(b"Debian GNU/Linux 10 (buster)", b"client.example.com"),
        selfcheck::msg::options(F.as_bytes(), b"client.example.com"),
        selfcheck::msg::disk_ok(b"client.example.com", b"/home", b"/home"),
    ] {
        rep.extend_from_slice(&w.message(&m));
    }
    assert_eq!(
        String::from_utf8(rep.clone()).unwrap(),
        format!(
            "OK version '3.5.1\nOK distro Debian\nOK platform \"Debian GNU/Linux 10 (buster)\"\n\
             OPTIONS features={F};hostname=client.example.com;\nOK /home\n"
        )
    );
    let read = selfcheck::read_reply(&rep);
    assert_eq!(read.features, Some(Ok(f())));
    assert_eq!(read.problems().count(), 0);
}

#[test]
fn tv5_sendsize_legacy_request() {
    let client = f()
        .without(Feature::REQ_XML)
        .without(Feature::REQ_OPTIONS_TIMESTAMP);
    let opts = golden_options(&client, true);
    let dle = Dle {
        levels: vec![Level::new(0), Level::new(1)],
        spindle: -1,
        ..home("bsd")
    };
    let body = req(
        "sendsize",
        &opts,
        &legacy::sendsize_lines(&dle, &[b"1970:1:1:0:0:0", b"2023:12:31:2:3:4"], &client),
    );
    assert_eq!(
        body,
        format!(
            "SERVICE sendsize\nOPTIONS features={F};maxdumps=1;hostname=client.example.com;config=DailySet1;\n\
             GNUTAR /home  0 1970:1:1:0:0:0 -1  OPTIONS |;auth=bsd;compress-fast;index;\n\
             GNUTAR /home  1 2023:12:31:2:3:4 -1  OPTIONS |;auth=bsd;compress-fast;index;\n"
        )
    );
    // and the client reads both lines back
    let input = ServiceInput::split(body.split_once('\n').unwrap().1.as_bytes(), &client);
    assert_eq!(input.legacy_lines.len(), 2);
    let l = legacy::LegacyLine::parse_sendsize(&input.legacy_lines[1], &f()).unwrap();
    assert_eq!(l.dle.levels, vec![Level::new(1)]);
    assert_eq!(l.dumpdate.unwrap(), "2023:12:31:2:3:4");
    assert_eq!(l.dle.spindle, -1);
}

#[test]
fn tv6_sendsize_xml_request_prep_and_rep() {
    let opts = golden_options(&f(), true);
    let dle = Dle {
        levels: vec![Level::new(0), Level::new(1)],
        spindle: -1,
        ..home("bsdtcp")
    };
    assert_eq!(
        req("sendsize", &opts, &dle.to_xml(XmlLayout::Sendsize, &f())),
        format!(
            "SERVICE sendsize\nOPTIONS features={F};maxdumps=1;hostname=client.example.com;config=DailySet1;timestamp=20240101020304;\n\
             <dle>\n  <program>GNUTAR</program>\n  <estimate>CLIENT </estimate>\n  <disk>/home</disk>\n  \
             <level>0</level>\n  <level>1</level>\n    <spindle>-1</spindle>\n  <auth>bsdtcp</auth>\n  \
             <compress>FAST</compress>\n  <record>YES</record>\n  <index>YES</index>\n  <datapath>AMANDA</datapath>\n</dle>\n"
        )
    );
    let mut rep = proto::sendsize::CumulativeReply::new(&options::sendsize_reply_options(
        &f(),
        &f(),
        1,
        b"client.example.com",
    ));
    rep.push(&EstimateLine {
        disk: "/home".into(),
        level: 0,
        result: EstimateResult::Size(1048576),
    });
    assert_eq!(
        String::from_utf8(rep.body().to_vec()).unwrap(),
        format!("OPTIONS features={F};\n/home 0 SIZE 1048576\n")
    );
    rep.push(&EstimateLine {
        disk: "/home".into(),
        level: 1,
        result: EstimateResult::Size(2048),
    });
    assert_eq!(
        String::from_utf8(rep.body().to_vec()).unwrap(),
        format!("OPTIONS features={F};\n/home 0 SIZE 1048576\n/home 1 SIZE 2048\n")
    );
    let r = SendsizeReply::parse(rep.body()).unwrap();
    assert_eq!(r.first_unexpected(|d| d == b"/home", |_, l| l <= 1), None);
}

#[test]
fn tv7_sendbackup_xml_request_and_reply() {
    let opts = golden_options(&f(), true);
    let dle = sendbackup_home("bsdtcp");
    assert_eq!(
        req(
            "sendbackup",
            &opts,
            &dle.to_xml(XmlLayout::Sendbackup, &f())
        ),
        format!(
            "SERVICE sendbackup\nOPTIONS features={F};maxdumps=1;hostname=client.example.com;config=DailySet1;timestamp=20240101020304;\n\
             <dle>\n  <program>GNUTAR</program>\n  <disk>/home</disk>\n  <level>0</level>\n  <auth>bsdtcp</auth>\n  \
             <compress>FAST</compress>\n  <record>YES</record>\n  <index>YES</index>\n  <datapath>AMANDA</datapath>\n</dle>\n"
        )
    );
    let options_line = options::sendbackup_reply_options(&f(), &f(), b"client.example.com");
    let mut next = 500_000;
    let rep = sendbackup::rewrite_connect(
        &sendbackup::service_reply(false, true, &f(), &options_line),
        |_| {
            next -= 1;
            Some(next)
        },
    );
    assert_eq!(
        String::from_utf8(rep.body.clone()).unwrap(),
        format!(
            "CONNECT DATA 499999 MESG 499998 INDEX 499997 STATE 499996\nOPTIONS features={F};\n"
        )
    );
    // a client without bit 117 gets no STATE from the service
    let server_without_state = f().without(Feature::SENDBACKUP_STREAM_STATE);
    let old = sendbackup::service_reply(false, true, &server_without_state, &options_line);
    assert!(old.starts_with(b"CONNECT DATA 150 MESG 151 INDEX 152\n"));
}

#[test]
fn tv8_sendbackup_legacy_request_and_reply() {
    let client = Features::minimal_gnutar_client();
    let opts = golden_options(&client, false);
    let dle = sendbackup_home("bsd");
    assert_eq!(
        req(
            "sendbackup",
            &opts,
            &legacy::sendbackup_line(&dle, b"1970:1:1:0:0:0", &client)
        ),
        format!(
            "SERVICE sendbackup\nOPTIONS features={F};maxdumps=1;hostname=client.example.com;config=DailySet1;\n\
             GNUTAR /home  0 1970:1:1:0:0:0 OPTIONS |;auth=bsd;compress-fast;index;\n"
        )
    );
    let body = b"CONNECT DATA 41207 MESG 41208 INDEX 41209\nOPTIONS features=dfbfe67f1c0000001040000000000000000000;\n";
    let r = sendbackup::parse_reply(PacketType::Rep, body, &client).unwrap();
    assert_eq!(
        r,
        Reply::Connect {
            ids: StreamIds {
                data: 41207,
                mesg: 41208,
                index: 41209,
                state: None
            },
            features: Some(client)
        }
    );
}

#[test]
fn tv9_bsdudp_reply() {
    let body = format!("CONNECT DATA 43917 MESG 499999 INDEX 499998\nOPTIONS features={F};\n");
    let client = f().without(Feature::SENDBACKUP_STREAM_STATE);
    let Reply::Connect { ids, .. } =
        sendbackup::parse_reply(PacketType::Rep, body.as_bytes(), &client).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        ids.to_connect().collect::<Vec<_>>(),
        vec![
            (sendbackup::Stream::Data, 43917),
            (sendbackup::Stream::Mesg, 499999),
            (sendbackup::Stream::Index, 499998)
        ]
    );
}

#[test]
fn tv10_mesg_stream_of_a_legacy_gnutar_dump() {
    let mesg = "sendbackup: start [client.example.com:/home level 0]\n\
                sendbackup: info BACKUP=/bin/tar\n\
                sendbackup: info RECOVER_CMD=/bin/gzip -dc |/bin/tar -xpGf - ...\n\
                sendbackup: info COMPRESS_SUFFIX=.gz\n\
                sendbackup: info end\n\
                | Total bytes written: 20480 (20KiB, 9.6MiB/s)\n\
                sendbackup: native-CRC 0a1b2c3d:20480\n\
                sendbackup: client-CRC 4e5f6a7b:1187\n\
                sendbackup: size 20\n\
                sendbackup: end\n";
    // the first MESG frame of the TV: the five lines up to info end are 209 bytes
    let five: usize = mesg.lines().take(5).map(|l| l.len() + 1).sum();
    assert_eq!(five, 209);
    let mut t = DumpTracker::new();
    for line in mesg.lines() {
        t.on_line(line.as_bytes());
    }
    assert!(t.header_complete());
    t.on_mesg_eof(None);
    let o = t.finish(DataSummary {
        received: CrcValue {
            crc: 0x4e5f6a7b,
            size: 1187,
        },
    });
    assert_eq!(o.status, DumpStatus::Done);
    assert_eq!(o.error, None);
    assert_eq!((o.orig_kb, o.kb), (Some(20), 2));
    assert_eq!(o.info.compress_suffix.unwrap(), ".gz");
    assert_eq!(
        o.native_crc,
        Some(CrcValue {
            crc: 0x0a1b2c3d,
            size: 20480
        })
    );
}

#[test]
fn tv14_rep_carrying_an_error() {
    let body = b"ERROR FORMAT ERROR IN REQUEST PACKET 'no OPTIONS keyword'\n";
    let e = legacy::LegacyLine::parse_sendbackup(b"GNUTAR /home  0 1970:1:1:0:0:0 NOPE", &f())
        .unwrap_err();
    assert_eq!(e.error_line(), body);
    assert_eq!(
        sendbackup::parse_reply(PacketType::Rep, body, &f()),
        Err(sendbackup::ReplyError::Client(
            "FORMAT ERROR IN REQUEST PACKET 'no OPTIONS keyword'".into()
        ))
    );
    assert_eq!(
        request::rep_service_failed(
            b"/usr/lib/amanda/sendbackup",
            4242,
            request::ServiceExit::Code(1)
        ),
        b"ERROR service /usr/lib/amanda/sendbackup failed: pid 4242 exited with code 1\n"
    );
}

/// The whole selfcheck reply of the `bsd-error-missing-dle-amcheck` trace (23 messages, 9.6
/// KB), rebuilt from our message constructors, is byte-identical to what the real client sent.
#[test]
fn selfcheck_constructors_rebuild_a_whole_real_reply() {
    use selfcheck::{Origin, msg};
    let body = read(&traces().join("bsd-error-missing-dle-amcheck/udp-006.bin"));
    let body = &body[body.iter().position(|&b| b == b'\n').unwrap() + 1..];
    let h: &[u8] = b"localhost";
    // amgtar's access checks, as root (ruid 0) with the euid given.
    let amgtar_access = |path: &[u8], noun, adjective, euid| {
        msg::access(Origin::AMGTAR, path, noun, adjective, None, 0, euid)
    };
    let amgtar_dle = |dir: &[u8], ok: bool| {
        let mut v = vec![
            msg::amgtar_disk(dir, dir, h),
            msg::amgtar_version(dir, dir, h),
            msg::amgtar_ok(dir, dir, h),
            amgtar_access(b"/bin/tar", "execute", "executable", 34),
            msg::amgtar_gtar_version(b"1.34", dir, dir, h),
            amgtar_access(
                b"/var/lib/amanda/gnutar-lists/.",
                "read/write",
                "read/writable",
                34,
            ),
        ];
        if ok {
            let dot = [dir, b"/."].concat();
            v.push(amgtar_access(&dot, "access", "accessible", 0));
        } else {
            v.push(msg::cannot_stat_dir(Origin::AMGTAR, dir, 2).relayed());
        }
        v
    };
    let mut msgs = vec![
        msg::version(h),
        msg::distro(b"Debian", h),
        msg::platform(b"Debian GNU/Linux 12 (bookworm)", h),
        msg::options(F.as_bytes(), h),
    ];
    msgs.extend(amgtar_dle(b"/tmp/amanda-harness/no-such-dir", false));
    msgs.extend(amgtar_dle(b"/tmp/amanda-harness/data/plain", true));
    msgs.push(msg::access(
        Origin::SELFCHECK,
        b"/dev/null",
        "read/write",
        "read/writable",
        None,
        34,
        34,
    ));
    for dir in ["/tmp/amanda", "/var/log/amanda", "/var/lib", "/etc"] {
        msgs.push(msg::space(dir.as_bytes(), Ok(81821696), 64, h));
    }
    let ours = selfcheck::encode_json_reply(&msgs);
    assert_eq!(
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(body)
    );
}
