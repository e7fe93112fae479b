//! The simulator's printed report and the search for the smallest sufficient range.
//! Pure functions of the parameters and outcomes: the same input prints the same text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::sim::{Outcome, Policy, SimParams, run};
use portpool_alloc::core::fmt_duration;
use proto::ports::{PortRange, Transport};

/// The range (same first port, fewest ports) with which `policy` finishes the night
/// within its window without failures, and that night's outcome. Searched by bisection
/// over the last port (more ports never hurt), up to 1023 for a reserved range.
pub fn smallest_range(
    params: &SimParams,
    policy: Policy,
    proto: Transport,
) -> Option<(PortRange, Outcome)> {
    let base = match proto {
        Transport::Udp => params.udp_range,
        Transport::Tcp => params.tcp_range,
    };
    let limit: u16 = if base.lo() < 1024 { 1023 } else { u16::MAX };
    let try_hi = |hi: u16| -> Option<(PortRange, Outcome)> {
        let range = PortRange::new(base.lo(), hi).ok()?;
        let mut p = params.clone();
        p.record = false;
        match proto {
            Transport::Udp => p.udp_range = range,
            Transport::Tcp => p.tcp_range = range,
        }
        let (_, usable, _) = p.effective(proto);
        if usable == 0 {
            return None;
        }
        let outcome = run(&p, policy);
        outcome.within(p.window).then_some((range, outcome))
    };
    let mut best = try_hi(limit.max(base.lo()))?;
    let (mut lo, mut hi) = (base.lo(), best.0.hi());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match try_hi(mid) {
            Some(found) => {
                hi = mid;
                best = found;
            }
            None => lo = mid + 1,
        }
    }
    Some(best)
}

fn gb(bytes: f64) -> String {
    if bytes >= 1e12 {
        format!("{:.1} TB", bytes / 1e12)
    } else if bytes >= 1e9 {
        format!("{:.1} GB", bytes / 1e9)
    } else {
        format!("{:.0} MB", bytes / 1e6)
    }
}

fn rate(bytes_per_s: f64) -> String {
    format!("{:.0} MB/s", bytes_per_s / 1e6)
}

/// A policy, the protocol whose range was searched, and what was found.
pub type SmallestRange = (Policy, Transport, Option<(PortRange, Outcome)>);

/// The report `portpool --simulate` prints.
/// `unconstrained` is the makespan of the portpool night with a port for every request
/// (see [`unconstrained`]), for the line on the time cost of backpressure.
pub fn render(
    params: &SimParams,
    outcomes: &[Outcome],
    smallest: &[SmallestRange],
    unconstrained: Option<Duration>,
) -> String {
    let mut out = String::new();
    let total: f64 = params.dles.iter().map(|d| d.size as f64).sum();
    let n = params.dles.len();
    let mut auths: Vec<&str> = params.dles.iter().map(|d| d.auth.name()).collect();
    auths.sort_unstable();
    auths.dedup();
    let _ = writeln!(
        out,
        "portpool --simulate: seed {} (same seed, same night)",
        params.seed
    );
    let _ = writeln!(
        out,
        "night: {n} DLEs ({}, mean {}) on {} hosts, auth {}, {} config(s) x inparallel {}, maxdumps {}",
        gb(total),
        gb(if n > 0 { total / n as f64 } else { 0.0 }),
        params.hosts.len(),
        auths.join("+"),
        params.configs.max(1),
        params.inparallel,
        params.maxdumps
    );
    let _ = writeln!(
        out,
        "       bandwidth {} ({} per dump at most), window {}, TIME_WAIT {}",
        rate(params.bandwidth),
        rate(params.client_rate),
        fmt_duration(params.window),
        fmt_duration(params.time_wait)
    );
    for proto in params.control_protos() {
        let (range, usable, unusable) = params.effective(proto);
        let mut why: Vec<String> = unusable
            .iter()
            .take(4)
            .map(|(p, u)| format!("{p} is {}", u.describe()))
            .collect();
        if unusable.len() > 4 {
            why.push(format!("and {} more", unusable.len() - 4));
        }
        let _ = writeln!(
            out,
            "effective pool: {proto} {range}: {usable} usable{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join(", "))
            }
        );
    }
    if let Some(pp) = outcomes.iter().find(|o| o.policy == Policy::Portpool) {
        let _ = writeln!(
            out,
            "peak demand: {} control ports wanted at once ({} held)",
            pp.peak_demand, pp.peak_held
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<11} {:>5} {:>6} {:>6} {:>10} {:>8} {:>11} {:>8} {:>9}  within window",
        "policy",
        "done",
        "failed",
        "waits",
        "total wait",
        "longest",
        "blind retry",
        "outside",
        "makespan"
    );
    for o in outcomes {
        let dash = |show: bool, text: String| if show { text } else { "-".to_owned() };
        let pp = o.policy == Policy::Portpool;
        let _ = writeln!(
            out,
            "{:<11} {:>5} {:>6} {:>6} {:>10} {:>8} {:>11} {:>8} {:>9}  {}",
            o.policy.name(),
            o.done,
            o.failed,
            dash(pp, o.waits.to_string()),
            dash(pp, fmt_duration(o.total_wait)),
            dash(pp, fmt_duration(o.longest_wait)),
            dash(o.policy == Policy::Amanda35, fmt_duration(o.blind_retry)),
            dash(o.policy == Policy::Amanda24, o.outside.to_string()),
            fmt_duration(o.makespan),
            if o.within(params.window) {
                "yes".to_owned()
            } else if o.failed > 0 {
                format!("no: {} of {} DLEs failed", o.failed, n)
            } else {
                "no: too long".to_owned()
            }
        );
    }
    if let Some(pp) = outcomes.iter().find(|o| o.policy == Policy::Portpool)
        && let Some(unconstrained) = unconstrained
    {
        let cost = pp.makespan.saturating_sub(unconstrained);
        let _ = writeln!(
            out,
            "\ntime cost of backpressure: portpool ends the night in {} with no failure; with a port for every \
             request it would take {} (+{}); {} requests waited {} in all",
            fmt_duration(pp.makespan),
            fmt_duration(unconstrained),
            fmt_duration(cost),
            pp.waits,
            fmt_duration(pp.total_wait),
        );
    }
    let failing: Vec<&Outcome> = outcomes.iter().filter(|o| !o.failures.is_empty()).collect();
    if !failing.is_empty() {
        let _ = writeln!(out, "\nfailures:");
        for o in failing {
            for (why, count) in &o.failures {
                let _ = writeln!(out, "  {:<11} {count:>5} x {why}", o.policy.name());
            }
        }
    }
    if !smallest.is_empty() {
        let _ = writeln!(
            out,
            "\nsmallest range (same first port) that ends the night within {} without failures:",
            fmt_duration(params.window)
        );
        for (policy, proto, found) in smallest {
            match found {
                Some((range, o)) => {
                    let mut p = params.clone();
                    match proto {
                        Transport::Udp => p.udp_range = *range,
                        Transport::Tcp => p.tcp_range = *range,
                    }
                    let (_, usable, _) = p.effective(*proto);
                    let _ = writeln!(
                        out,
                        "  {:<11} {proto} {range} ({usable} usable; amanda.conf: {}), makespan {}",
                        policy.name(),
                        range.amanda_notation(),
                        fmt_duration(o.makespan)
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "  {:<11} none up to the end of the port space",
                        policy.name()
                    );
                }
            }
        }
    }
    out
}

/// The same night with so many control ports that nobody ever waits.
pub fn unconstrained(params: &SimParams) -> SimParams {
    let mut p = params.clone();
    p.record = false;
    let wide =
        |r: PortRange| PortRange::new(r.lo(), r.lo().saturating_add(8191).max(r.hi())).unwrap_or(r);
    p.udp_range = wide(p.udp_range);
    p.tcp_range = wide(p.tcp_range);
    p
}

/// Run every policy and the range search, and render.
///
/// The nights are independent, so they run on up to `available_parallelism` threads
/// (a large site's night takes seconds); each result goes back to its fixed place, so the
/// text does not depend on the thread count.
pub fn simulate(params: &SimParams, search: bool) -> (Vec<Outcome>, String) {
    #[derive(Clone, Copy)]
    enum Job {
        Night(Policy),
        Search(Policy),
        Unconstrained,
    }
    enum Done {
        Night(Outcome),
        Search(Policy, Option<(PortRange, Outcome)>),
        Unconstrained(Duration),
    }
    let proto = primary_proto(params);
    // Longest first: amanda-3.5's blind retries make its night the slowest to simulate.
    let mut jobs: Vec<Job> = Vec::new();
    for policy in [Policy::Amanda35, Policy::Portpool, Policy::Amanda24] {
        jobs.push(Job::Night(policy));
        if search {
            jobs.push(Job::Search(policy));
        }
    }
    jobs.push(Job::Unconstrained);
    let run_job = |job: Job| match job {
        Job::Night(policy) => Done::Night(run(params, policy)),
        Job::Search(policy) => Done::Search(policy, smallest_range(params, policy, proto)),
        Job::Unconstrained => {
            Done::Unconstrained(run(&unconstrained(params), Policy::Portpool).makespan)
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, jobs.len());
    let next = AtomicUsize::new(0);
    let finished: Vec<Done> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    while let Some(&job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                        mine.push(run_job(job));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a simulation thread panicked"))
            .collect()
    });
    let mut nights: Vec<Option<Outcome>> = Policy::ALL.iter().map(|_| None).collect();
    let mut found: Vec<Option<SmallestRange>> = Policy::ALL.iter().map(|_| None).collect();
    let mut free_ports = None;
    let slot = |policy: Policy| {
        Policy::ALL
            .iter()
            .position(|&p| p == policy)
            .expect("every policy is in Policy::ALL")
    };
    for done in finished {
        match done {
            Done::Night(o) => {
                let i = slot(o.policy);
                nights[i] = Some(o);
            }
            Done::Search(policy, s) => found[slot(policy)] = Some((policy, proto, s)),
            Done::Unconstrained(m) => free_ports = Some(m),
        }
    }
    let outcomes: Vec<Outcome> = nights.into_iter().flatten().collect();
    let smallest: Vec<SmallestRange> = found.into_iter().flatten().collect();
    let text = render(params, &outcomes, &smallest, free_ports);
    (outcomes, text)
}

/// The protocol most DLEs' control sockets use.
pub fn primary_proto(params: &SimParams) -> Transport {
    let udp = params
        .dles
        .iter()
        .filter(|d| d.auth.transport() == Transport::Udp)
        .count();
    if udp * 2 >= params.dles.len() {
        Transport::Udp
    } else {
        Transport::Tcp
    }
}

/// For tests and benches: the seed case's outcome of one policy.
pub fn makespan_of(outcomes: &[Outcome], policy: Policy) -> Option<Duration> {
    outcomes
        .iter()
        .find(|o| o.policy == policy)
        .map(|o| o.makespan)
}
