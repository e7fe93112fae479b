//! The dumper against hostile clients (issue 10): a fake bsdtcp amandad sends endless MESG
//! lines, a MESG byte trickle, a 4 GiB INDEX (generated, not stored), no CRC lines, a wrong
//! `size` line, or DATA before `info end`. Each hostile dump ends with a report line that
//! names the cause, the dumper's peak RSS stays at or below 64 MiB, and the well-behaved dump
//! of the same night (same fake client, good script) finishes.

use std::collections::HashMap;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::require_root;
use crate::util::fake_amandad::{FakeAmandad, Script};
use crate::util::{self, DumperConf};

/// The RSS bound of the acceptance.
const MAX_RSS_KIB: u64 = 64 * 1024;

/// What a measured `dumper run` gave.
pub struct Measured {
    pub status: ExitStatus,
    pub out: String,
    /// Peak resident set size of the dumper process (its last VmHWM), KiB.
    pub max_rss_kib: u64,
}

/// The `VmHWM` (peak RSS) of process `pid`, KiB, while it runs.
fn vm_hwm_kib(pid: libc::pid_t) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `dumper run`, sampling its VmHWM every 10 ms until it exits. VmHWM is the high-water
/// mark of the process's own memory since its exec, so the last sample is its peak up to
/// then (wait4's ru_maxrss would not do: it counts the test process's own RSS, which the
/// child's address space had before exec).
pub fn run_measured(conf: &DumperConf, limit: Duration) -> Measured {
    use std::io::Read;
    let mut child = conf.spawn_run();
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    })
    .collect();
    let deadline = Instant::now() + limit;
    let mut peak = 0;
    let status = loop {
        // Sampled before the exit check, so that the last sample is as late as can be.
        peak = vm_hwm_kib(pid).unwrap_or(0).max(peak);
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out: Vec<String> = readers
                .into_iter()
                .map(|t| t.join().unwrap_or_default())
                .collect();
            panic!(
                "dumper run did not end within {limit:?}:\n{}",
                out.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out: Vec<String> = readers
        .into_iter()
        .map(|t| t.join().unwrap_or_default())
        .collect();
    Measured {
        status,
        out: out.join("\n"),
        max_rss_kib: peak,
    }
}

/// One night against the fake: the DLE `/hostile` plays `script`, `/good` a correct dump,
/// concurrently. Returns the run, after checking that `/good` was dumped and the RSS bound.
fn night(tag: &str, script: Script, env: &[(&str, &str)]) -> Measured {
    let _guard = util::MACHINE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let fake = FakeAmandad::start(
        HashMap::from([("/hostile".to_owned(), script)]),
        Script::Good {
            bytes: 300_000,
            delay: Duration::ZERO,
        },
    );
    let globals = "dtimeout 3\ninparallel 4";
    let mut conf = DumperConf::for_fake(tag, globals, fake.port, 4, &["/hostile", "/good"]);
    conf.env
        .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let started = Instant::now();
    let m = run_measured(&conf, Duration::from_secs(120));
    eprintln!(
        "{tag}: dumper run took {:.1}s, peak RSS {} KiB ({:.1} MiB), {}\n{}",
        started.elapsed().as_secs_f64(),
        m.max_rss_kib,
        m.max_rss_kib as f64 / 1024.0,
        m.status,
        m.out
    );
    let (files, tmp) = conf.holding_files();
    assert!(tmp.is_empty(), "no .tmp left: {tmp:?}");
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().ends_with("127.0.0.1._good.0")),
        "the good dump of the night finished: {files:?}\n{}",
        m.out
    );
    assert!(
        !m.out.contains("127.0.0.1 /good lev 0  FAILED"),
        "the good dump did not fail:\n{}",
        m.out
    );
    assert!(
        m.max_rss_kib <= MAX_RSS_KIB,
        "peak RSS {} KiB > {MAX_RSS_KIB} KiB",
        m.max_rss_kib
    );
    m
}

fn assert_failed_with(m: &Measured, cause: &str) {
    assert_eq!(
        m.status.code().map(|c| c & 4),
        Some(4),
        "a failed dump sets bit 4 ({}):\n{}",
        m.status,
        m.out
    );
    let line = m
        .out
        .lines()
        .find(|l| l.contains("127.0.0.1 /hostile lev 0  FAILED"))
        .unwrap_or_else(|| panic!("no FAILED line for /hostile:\n{}", m.out));
    assert!(
        line.contains(cause),
        "the error names the cause ({cause}): {line}"
    );
}

// issue 10: DumpTracker kept every MESG line (256 MiB of lines: 269 MiB RSS), and each MESG
// byte restarted the data timeout, so such a dump never ended.
#[test]
fn endless_mesg_lines_end_in_a_data_timeout_with_bounded_memory() {
    require_root!();
    let m = night("dh-mesg", Script::EndlessMesg, &[]);
    assert_failed_with(&m, "[data timeout: no DATA for");
    assert!(
        m.out
            .contains("MESG lines alone keep a dump alive for at most 6s"),
        "{}",
        m.out
    );
    assert!(
        m.out.contains(" more lines"),
        "the details say how much was left out:\n{}",
        m.out
    );
}

// issue 10: each MESG byte restarted the data timeout, so one byte now and then kept a dump
// alive forever without data.
#[test]
fn a_mesg_byte_trickle_does_not_keep_a_dump_alive() {
    require_root!();
    let m = night("dh-trickle", Script::MesgTrickle, &[]);
    assert_failed_with(&m, "[data timeout]");
}

// issue 10: the INDEX stream had no limit.
#[test]
fn a_4_gib_index_fails_its_dump_at_the_index_limit() {
    require_root!();
    let m = night(
        "dh-index",
        Script::HugeIndex { bytes: 4 << 30 },
        &[("AMANDA_RS_DUMPER__MAX_INDEX_MIB", "32")],
    );
    assert_failed_with(
        &m,
        "the INDEX stream brought more than 32 MiB, the limit (amanda-rs setting dumper.max_index_mib)",
    );
}

// issue 10: a dump without client-CRC was accepted silently.
#[test]
fn a_dump_without_crc_lines_is_strange_and_says_why() {
    require_root!();
    let m = night("dh-nocrc", Script::NoCrc, &[]);
    assert_eq!(
        m.status.code().map(|c| c & 6),
        Some(2),
        "strange, not failed ({}):\n{}",
        m.status,
        m.out
    );
    assert!(
        m.out.contains("127.0.0.1 /hostile lev 0  STRANGE")
            && m.out.contains(
                "? dumper: strange [the client sent no client-CRC line: the DATA bytes could not be checked against what it sent]"
            ),
        "{}",
        m.out
    );
}

// issue 10: the `size` line was never compared with the bytes received.
#[test]
fn a_wrong_size_line_fails_the_dump_naming_both_numbers() {
    require_root!();
    let m = night("dh-size", Script::WrongSize, &[]);
    assert_failed_with(
        &m,
        "the size line says 296 KiB, but 200000 bytes (196 KiB) of DATA arrived",
    );
}

#[test]
fn early_data_past_the_bound_fails_the_dump() {
    require_root!();
    let m = night(
        "dh-early",
        Script::EarlyData {
            bytes: 24 * 1024 * 1024,
        },
        &[],
    );
    assert_failed_with(
        &m,
        "client sent more than 16777216 bytes of DATA before `sendbackup: info end`",
    );
}
