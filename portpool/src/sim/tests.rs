//! The simulator's promises: the seed case, determinism, and the policies' signatures.

use super::*;
use crate::sim::report::{simulate, smallest_range};

fn seed_case(seed: u64) -> SimParams {
    let mut p = SimParams::seed_case();
    p.seed = seed;
    p.services = Services::parse("/etc/services", "domain-s 853/tcp\ndomain-s 853/udp\n").unwrap();
    p.generate(40, 20, 2e9, 1.0, Auth::Bsd);
    p
}

fn outcome(outcomes: &[Outcome], policy: Policy) -> &Outcome {
    outcomes.iter().find(|o| o.policy == policy).unwrap()
}

#[test]
fn seed_case_fails_about_half_under_amanda_24_and_none_under_portpool() {
    let p = seed_case(1);
    assert_eq!(
        p.effective(Transport::Udp).1,
        9,
        "853 is domain-s: 9 usable"
    );
    let outcomes = run_all(&p);
    let old = outcome(&outcomes, Policy::Amanda24);
    let share = old.failed as f64 / p.dles.len() as f64;
    assert!(
        (0.4..=0.7).contains(&share),
        "amanda-2.4 failed {} of 40",
        old.failed
    );
    assert_eq!(
        old.outside, 12,
        "20 dumpers, 9 ports, one held by the planner"
    );
    let pp = outcome(&outcomes, Policy::Portpool);
    assert_eq!((pp.failed, pp.done), (0, 40));
    assert!(pp.waits > 0, "backpressure is visible as waits");
    assert!(pp.within(p.window));
    let mid = outcome(&outcomes, Policy::Amanda35);
    assert!(
        mid.blind_retry >= Duration::from_secs(1800),
        "3.5 rescans for 30 minutes"
    );
    assert!(mid.makespan > pp.makespan);
}

#[test]
fn the_same_seed_prints_the_same_night_and_another_seed_another() {
    let a = simulate(&seed_case(7), false).1;
    let b = simulate(&seed_case(7), false).1;
    assert_eq!(a, b);
    assert!(a.contains("seed 7"));
    assert_ne!(a, simulate(&seed_case(8), false).1);
}

#[test]
fn the_smallest_range_for_portpool_is_smaller_than_for_amanda() {
    let p = seed_case(1);
    let (pp, _) = smallest_range(&p, Policy::Portpool, Transport::Udp).unwrap();
    let (old, _) = smallest_range(&p, Policy::Amanda24, Transport::Udp).unwrap();
    assert!(pp.len() < old.len());
    // 2.4 needs a port for each of the 20 dumpers and the planner, and 853 is lost.
    assert_eq!(old, PortRange::new(850, 871).unwrap());
}

/// `n` bsdtcp DLEs of `size` bytes on `hosts` hosts, `maxdumps` each, whose connections
/// have only `tcp_range` to bind.
fn bsdtcp_case(
    tcp_range: PortRange,
    n: usize,
    hosts: usize,
    size: f64,
    maxdumps: u32,
) -> SimParams {
    let mut p = SimParams::seed_case();
    p.tcp_range = tcp_range;
    p.generate(n, hosts, size, 0.0, Auth::Bsdtcp);
    p.maxdumps = maxdumps;
    p
}

#[test]
fn bsdtcp_holds_ports_in_time_wait_per_client() {
    let mut p = bsdtcp_case(PortRange::new(600, 601).unwrap(), 6, 1, 1e7, 2);
    p.record = true;
    let o = run(&p, Policy::Portpool);
    assert_eq!(o.failed, 0);
    // One client, two ports, each held 60 s after every dump: the third dump waits.
    assert!(
        o.longest_wait >= Duration::from_secs(50),
        "{:?}",
        o.longest_wait
    );
    let trace = o.trace.unwrap();
    assert!(trace.spans.iter().any(|s| s.kind == SpanKind::TimeWait));
}

#[test]
fn amanda_35_fails_bsdtcp_connects_at_once_without_ports() {
    let p = bsdtcp_case(PortRange::new(600, 600).unwrap(), 4, 4, 1e9, 1);
    let o = run(&p, Policy::Amanda35);
    assert!(o.failed > 0, "{o:?}");
    assert!(
        o.failures
            .iter()
            .any(|(why, _)| why.contains("no free reserved TCP port"))
    );
}

#[test]
fn the_plot_is_an_svg_with_a_panel_per_policy() {
    let mut p = seed_case(1);
    p.record = true;
    let outcomes = run_all(&p);
    let svg = svg::render(&p, &outcomes);
    assert!(svg.starts_with("<?xml"));
    assert!(svg.trim_end().ends_with("</svg>"));
    for policy in Policy::ALL {
        assert!(svg.contains(policy.name()));
    }
    assert!(svg.contains("outside"));
}

#[test]
fn sizes_rates_and_durations_parse() {
    assert_eq!(parse_size("2GiB").unwrap(), 2.0 * 1024f64.powi(3));
    assert_eq!(parse_size("500MB").unwrap(), 5e8);
    assert_eq!(parse_rate("1Gbit/s").unwrap(), 125e6);
    assert_eq!(parse_rate("80MB/s").unwrap(), 8e7);
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
    assert!(parse_size("lots").is_err());
    assert!(parse_duration("8d").is_err());
}

/// Nights whose printed text was recorded on f8d43a5, before the simulator was made to
/// scale (issue 11): the faster night must print exactly the same numbers for every policy.
/// `PORTPOOL_WRITE_GOLDEN=1` rewrites the files (only ever from the reference commit).
#[test]
fn faster_simulation_prints_the_recorded_nights() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sim/golden");
    type Case = (&'static str, usize, u32, u32, Auth, (u16, u16));
    let cases: [Case; 4] = [
        ("bsd-500-ip60", 500, 60, 1, Auth::Bsd, (850, 859)),
        ("bsdtcp-600-ip30", 600, 30, 1, Auth::Bsdtcp, (600, 609)),
        ("bsdudp-800-ip40-md2", 800, 40, 2, Auth::Bsdudp, (850, 855)),
        ("bsd-300-ip20-wide", 300, 20, 1, Auth::Bsd, (850, 900)),
    ];
    for (name, dles, inparallel, maxdumps, auth, (lo, hi)) in cases {
        let mut p = seed_case(3);
        p.generate(dles, dles.div_ceil(2), 2e9, 1.0, auth);
        p.inparallel = inparallel;
        p.maxdumps = maxdumps;
        let range = PortRange::new(lo, hi).unwrap();
        p.udp_range = range;
        p.tcp_range = range;
        // The range search over TCP ranges runs the pool's debug invariants hundreds of
        // thousands of times: too slow for a debug-build test, and the same code as UDP's.
        let text = simulate(&p, auth != Auth::Bsdtcp).1;
        let path = dir.join(format!("{name}.txt"));
        if std::env::var_os("PORTPOOL_WRITE_GOLDEN").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text, want,
            "{name}: the night differs from the recorded one"
        );
    }
}
