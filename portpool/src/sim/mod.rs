//! `portpool --simulate`: one backup night in virtual time, under three port policies.
//!
//! The model (deliberately simple; every constant is a [`SimParams`] field):
//!
//! - **Estimates.** Each config's planner asks every host for estimates at t=0; a host
//!   answers after `estimate_per_dle + size / estimate_rate` per DLE. With bsd/bsdudp the
//!   planner holds one reserved UDP port for the whole phase; with bsdtcp it holds one
//!   reserved TCP connection per host (to host:10080) while that host estimates. The
//!   driver starts dumping when its planner is done.
//! - **Dumps.** The driver gives the largest waiting DLE whose host runs fewer than
//!   `maxdumps` dumps to the lowest-numbered idle dumper (`inparallel` per config). A dump
//!   is a control exchange (`exchange`), then a transfer. Transfers share `bandwidth`
//!   equally, each capped at `client_rate`. bsd opens 4 data connections (DATA, MESG,
//!   INDEX, STATE), bsdudp 1, from the unreserved TCP range; bsdtcp carries the data on
//!   its control connection, which it closes actively at the end: its port is then held
//!   from that client for `time_wait`.
//! - **Policies** (control ports only; data ports always come from a portpool):
//!   - `amanda-2.4`: every dumper binds its UDP port when it starts (while the planner
//!     holds one) and keeps it; dumpers beyond the range get ports outside the
//!     firewall's hole, and each request they make times out after `req_timeout`: that
//!     DLE fails (spec §5.6). TCP connections beyond the range fail the same way.
//!   - `amanda-3.5`: a dumper binds its UDP port at its first request and keeps it until
//!     the night ends. Without a port it rescans every 15 s, 120 times, then the request
//!     fails; `connect_tries` such cycles, then TRY-AGAIN, and the driver retries the DLE
//!     up to `retry_dump` attempts. bsdtcp: a connect without a free port fails at once,
//!     `connect_tries` times 5 s apart, then TRY-AGAIN.
//!   - `portpool`: every exchange leases a port for as long as it needs it (a UDP
//!     exchange until its REP, a bsdtcp connection until it closes) and waits in FIFO
//!     order when there is none. Nothing fails for lack of a port.
//!
//! Every policy drives the same [`PoolCore`] the daemons use, with a virtual clock and a
//! binder that always succeeds. The same parameters and seed give the same output.
//! What this module must NOT do: read the clock, sockets or files.

pub mod report;
pub mod rng;
pub mod svg;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::site::AMANDA_PORT;
use portpool_alloc::core::{CoreConfig, Dest, PoolCore, Ticket, Unusable};
use portpool_alloc::services::Services;
use proto::Auth;
use proto::ports::{PortRange, Transport};

use rng::Rng;

/// The port policies compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Policy {
    Amanda24,
    Amanda35,
    Portpool,
}

impl Policy {
    pub const ALL: [Policy; 3] = [Policy::Amanda24, Policy::Amanda35, Policy::Portpool];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Amanda24 => "amanda-2.4",
            Policy::Amanda35 => "amanda-3.5",
            Policy::Portpool => "portpool",
        }
    }
}

/// One DLE of the night.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDle {
    pub host: usize,
    pub config: usize,
    pub size: u64,
    pub auth: Auth,
}

/// Everything the night depends on.
#[derive(Debug, Clone)]
pub struct SimParams {
    pub seed: u64,
    pub configs: usize,
    /// Dumpers per config.
    pub inparallel: u32,
    /// Concurrent dumps per host.
    pub maxdumps: u32,
    pub hosts: Vec<String>,
    pub dles: Vec<SimDle>,
    pub udp_range: PortRange,
    pub tcp_range: PortRange,
    pub data_range: PortRange,
    /// Ports no policy may use (`/etc/services`), per protocol.
    pub services: Services,
    pub skip_services: bool,
    /// Total bytes per second through the server's network.
    pub bandwidth: f64,
    /// Bytes per second one dump can reach on its own.
    pub client_rate: f64,
    pub time_wait: Duration,
    /// The night must end within this.
    pub window: Duration,
    pub exchange: Duration,
    pub req_timeout: Duration,
    pub bind_retry: Duration,
    pub bind_retries: u32,
    pub connect_tries: u32,
    pub connect_retry_gap: Duration,
    pub retry_dump: u32,
    pub estimate_per_dle: Duration,
    pub estimate_rate: f64,
    /// Record port occupancy for the plot.
    pub record: bool,
}

/// Sizes: `1GiB`, `500M`, `2T`, `123` (bytes); binary and decimal suffixes alike.
pub fn parse_size(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with an optional unit (2GiB, 500MB)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        other => return Err(format!("{text:?}: unknown unit {other:?}")),
    };
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{text:?}: not a size"));
    }
    Ok(n * mult)
}

/// Rates: `1Gbit/s`, `100Mbit`, `80MB/s`, `50MiB/s` → bytes per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let body = lower
        .strip_suffix("/s")
        .or_else(|| lower.strip_suffix("ps"))
        .unwrap_or(&lower);
    if let Some(bits) = body.strip_suffix("bit") {
        let prefix = bits.trim_end();
        let value = parse_size(if prefix.is_empty() { "1" } else { prefix })?;
        return Ok(value / 8.0);
    }
    parse_size(body)
}

/// `8h`, `90m`, `45s`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total = 0u64;
    let mut num = String::new();
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{text:?}: expected e.g. 8h, 90m, 1h30m"))?;
        num.clear();
        total = total.saturating_add(match c {
            'h' => n * 3600,
            'm' => n * 60,
            's' => n,
            _ => return Err(format!("{text:?}: unknown unit {c:?} (use h, m, s)")),
        });
    }
    if !num.is_empty() {
        let n: u64 = num.parse().map_err(|_| format!("{text:?}: bad number"))?;
        total = total.saturating_add(n);
    }
    Ok(Duration::from_secs(total))
}

impl SimParams {
    /// The seed case of the issue: bsd, range 850-859, inparallel 20, and a night of 40
    /// DLEs on 40 hosts. Callers change what they need.
    pub fn seed_case() -> Self {
        SimParams {
            seed: 1,
            configs: 1,
            inparallel: 20,
            maxdumps: 1,
            hosts: Vec::new(),
            dles: Vec::new(),
            udp_range: PortRange::new(850, 859).expect("constant"),
            tcp_range: PortRange::new(850, 859).expect("constant"),
            data_range: PortRange::new(1024, 65535).expect("constant"),
            services: Services::empty(),
            skip_services: true,
            bandwidth: 125e6,
            client_rate: 40e6,
            time_wait: Duration::from_secs(60),
            window: Duration::from_secs(8 * 3600),
            exchange: Duration::from_secs(1),
            req_timeout: Duration::from_secs(30),
            bind_retry: Duration::from_secs(15),
            bind_retries: 120,
            connect_tries: 3,
            connect_retry_gap: Duration::from_secs(5),
            retry_dump: 2,
            estimate_per_dle: Duration::from_secs(2),
            estimate_rate: 1e9,
            record: false,
        }
    }

    /// Generate `n` DLEs on `hosts` hosts (round robin), sizes log-normal around `mean`
    /// with shape `spread`, split round robin over the configs.
    pub fn generate(&mut self, n: usize, hosts: usize, mean: f64, spread: f64, auth: Auth) {
        let hosts = hosts.max(1);
        let mut rng = Rng::new(self.seed);
        self.hosts = (0..hosts).map(|i| format!("client{:02}", i + 1)).collect();
        self.dles = (0..n)
            .map(|i| SimDle {
                host: i % hosts,
                config: i % self.configs.max(1),
                size: rng.lognormal(mean, spread).max(1e6) as u64,
                auth,
            })
            .collect();
    }

    fn unusable(&self, proto: Transport, range: PortRange) -> Vec<(u16, Unusable)> {
        if !self.skip_services {
            return Vec::new();
        }
        self.services
            .foreign_in(range, proto)
            .into_iter()
            .map(|(port, name)| {
                (
                    port,
                    Unusable::Service {
                        name,
                        file: self.services.path.clone(),
                    },
                )
            })
            .collect()
    }

    fn core(&self, proto: Transport, range: PortRange) -> PoolCore {
        let mut cfg = CoreConfig::new(proto, range);
        cfg.time_wait = self.time_wait;
        cfg.unusable = self.unusable(proto, range);
        PoolCore::new(cfg)
    }

    /// Usable ports of the control range of `proto`, and the unusable ones.
    pub fn effective(&self, proto: Transport) -> (PortRange, u32, Vec<(u16, Unusable)>) {
        let range = match proto {
            Transport::Udp => self.udp_range,
            Transport::Tcp => self.tcp_range,
        };
        let unusable = self.unusable(proto, range);
        (range, range.len() - unusable.len() as u32, unusable)
    }

    /// The protocols the DLEs' control sockets use.
    pub fn control_protos(&self) -> Vec<Transport> {
        let mut p: Vec<Transport> = self.dles.iter().map(|d| d.auth.transport()).collect();
        p.sort();
        p.dedup();
        p
    }
}

/// What one policy did with the night.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub policy: Policy,
    pub done: usize,
    pub failed: usize,
    pub done_bytes: u64,
    /// Control-port requests that waited (portpool), and their waiting time.
    pub waits: u64,
    pub total_wait: Duration,
    pub longest_wait: Duration,
    /// Time dumpers spent rescanning without a port (amanda-3.5).
    pub blind_retry: Duration,
    /// Dumpers that got a port outside the firewall's range (amanda-2.4).
    pub outside: u32,
    /// End of the last dump, failed or not.
    pub makespan: Duration,
    /// Most control ports held at once, and most held or wanted at once.
    pub peak_held: u32,
    pub peak_demand: u32,
    /// Failure messages, by count.
    pub failures: Vec<(String, usize)>,
    pub trace: Option<Trace>,
}

impl Outcome {
    pub fn within(&self, window: Duration) -> bool {
        self.failed == 0 && self.makespan <= window
    }
}

/// Port occupancy over the night, for the plot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trace {
    /// (row label, port or None for "outside the range", start ms, end ms, kind)
    pub spans: Vec<Span>,
    /// (ms, requests waiting or rescanning)
    pub waiting: Vec<(u64, u32)>,
    pub rows: Vec<(Transport, u16)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Planner,
    Dumper,
    /// Held by a dumper between dumps (Amanda keeps its UDP socket).
    Idle,
    TimeWait,
    /// A dumper holding a port outside the firewall's range (amanda-2.4).
    Outside,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub proto: Transport,
    /// `None`: outside the range.
    pub port: Option<u16>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub kind: SpanKind,
}

/// Run the night under one policy.
pub fn run(params: &SimParams, policy: Policy) -> Outcome {
    Night::new(params, policy).run()
}

/// Run the night under every policy.
pub fn run_all(params: &SimParams) -> Vec<Outcome> {
    Policy::ALL.iter().map(|&p| run(params, p)).collect()
}

// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    EstimateDone { config: usize, host: usize },
    ExchangeDone { dle: usize },
    RequestTimeout { dle: usize },
    Retry { dle: usize },
    PlannerRetry { config: usize },
    HostEstimateRetry { config: usize, host: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Owner {
    PlannerUdp { config: usize },
    PlannerTcp { config: usize, host: usize },
    Control { dle: usize },
    Data { dle: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PoolId {
    Udp,
    Tcp,
    Data,
}

#[derive(Debug, Clone, Default)]
struct Dumper {
    busy: Option<usize>,
    /// amanda-2.4 / amanda-3.5 UDP: the port kept for the dumper's life.
    udp_port: Option<u16>,
    /// amanda-2.4: the port is outside the firewall's range.
    outside: bool,
    idle_since: Option<u64>,
}

#[derive(Debug, Clone)]
struct ConfigState {
    dumpers: Vec<Dumper>,
    queue: VecDeque<usize>,
    planner_done: bool,
    hosts_pending: usize,
    /// amanda-2.4/3.5: the planner's UDP port.
    planner_udp: Option<u16>,
    planner_udp_failed: bool,
    planner_tries: u32,
    planner_connect_try: u32,
    udp_hosts: Vec<usize>,
    /// Every host with a DLE in this config, ascending, with what its estimate costs.
    hosts: BTreeMap<usize, HostInfo>,
    host_estimate_tries: HashMap<usize, u32>,
    estimate_failed_hosts: HashSet<usize>,
    finished: bool,
}

/// What the planner needs of one host of one config, computed once from the DLEs (the
/// night used to rescan every DLE per host: quadratic in the site's size).
#[derive(Debug, Clone, Copy, Default)]
struct HostInfo {
    /// Some DLE of the host uses a UDP control protocol (bsd, bsdudp).
    udp: bool,
    /// The host's estimate time, ms.
    estimate_ms: u64,
}

#[derive(Debug, Clone, Default)]
struct DleState {
    dumper: Option<usize>,
    attempts: u32,
    bind_tries: u32,
    connect_try: u32,
    retry_started: Option<u64>,
    control_port: Option<u16>,
    data_ports: Vec<u16>,
    data_wanted: u32,
    transferring: bool,
    finished: bool,
}

struct Night<'a> {
    p: &'a SimParams,
    policy: Policy,
    base: Instant,
    now: u64,
    seq: u64,
    events: Events,
    udp: PoolCore,
    tcp: PoolCore,
    data: PoolCore,
    owners: HashMap<(PoolId, Ticket), Owner>,
    configs: Vec<ConfigState>,
    dles: Vec<DleState>,
    host_running: Vec<u32>,
    /// The DLEs transferring now, in start order, and beside them (same index) the bytes
    /// each has left: a dense array, because every event moves them all.
    transferring: Vec<usize>,
    remaining: Vec<f64>,
    /// The least of `remaining` (infinite when nothing transfers), kept current so that
    /// finding the next transfer end costs nothing per event.
    least_remaining: f64,
    /// Bytes per second of each transfer ([`Night::set_rate`]).
    rate: f64,
    rng: Rng,
    out: Outcome,
    failures: HashMap<String, usize>,
    lease_start: HashMap<(Transport, u16), (u64, SpanKind)>,
    retrying: u32,
    tcp_estimates: HashMap<(usize, usize), u16>,
    trace: Option<Trace>,
}

/// The night's pending events in `(time, seq)` order. Most are scheduled with one of a few
/// fixed delays (Amanda's blind retries, exchanges, timeouts); each such delay has its own
/// FIFO, which is already sorted because `now` never goes back, so those events skip the
/// heap. The order is exactly the single heap's.
struct Events {
    /// Per fixed delay (ms), its FIFO.
    fixed: Vec<(u64, VecDeque<Scheduled>)>,
    heap: BinaryHeap<Reverse<Scheduled>>,
}

/// An event at `(time ms, sequence number, event)`; the sequence number breaks ties in
/// scheduling order.
type Scheduled = (u64, u64, Ev);

impl Events {
    fn new(delays: [u64; 4]) -> Self {
        let mut fixed: Vec<(u64, VecDeque<Scheduled>)> = Vec::new();
        for d in delays {
            if !fixed.iter().any(|(x, _)| *x == d) {
                fixed.push((d, VecDeque::new()));
            }
        }
        Events {
            fixed,
            heap: BinaryHeap::new(),
        }
    }

    fn push(&mut self, delay: u64, entry: Scheduled) {
        match self.fixed.iter_mut().find(|(d, _)| *d == delay) {
            Some((_, q)) => q.push_back(entry),
            None => self.heap.push(Reverse(entry)),
        }
    }

    /// Where the first event is: `None` for the heap, `Some(i)` for FIFO `i`.
    fn first(&self) -> Option<(Option<usize>, (u64, u64))> {
        let mut best = self.heap.peek().map(|Reverse((t, s, _))| (None, (*t, *s)));
        for (i, (_, q)) in self.fixed.iter().enumerate() {
            if let Some(&(t, s, _)) = q.front()
                && best.is_none_or(|(_, k)| (t, s) < k)
            {
                best = Some((Some(i), (t, s)));
            }
        }
        best
    }

    /// When the first event is due.
    fn next_time(&self) -> Option<u64> {
        self.first().map(|(_, (t, _))| t)
    }

    fn pop(&mut self) -> Option<Scheduled> {
        match self.first()?.0 {
            None => self.heap.pop().map(|Reverse(e)| e),
            Some(i) => self.fixed[i].1.pop_front(),
        }
    }
}

/// `x.ceil() as u64` for `x >= 0` (NaN gives 0, like the cast), without a call to libm's
/// `ceil` (the baseline x86-64 target has no rounding instruction), on the night's
/// hottest path.
fn ceil_ms(x: f64) -> u64 {
    let t = x as u64;
    if (t as f64) < x {
        t.saturating_add(1)
    } else {
        t
    }
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl<'a> Night<'a> {
    fn new(p: &'a SimParams, policy: Policy) -> Self {
        let configs = p.configs.max(1);
        let mut state: Vec<ConfigState> = (0..configs)
            .map(|_| ConfigState {
                dumpers: vec![Dumper::default(); p.inparallel.max(1) as usize],
                queue: VecDeque::new(),
                planner_done: false,
                hosts_pending: 0,
                planner_udp: None,
                planner_udp_failed: false,
                planner_tries: 0,
                planner_connect_try: 0,
                udp_hosts: Vec::new(),
                hosts: BTreeMap::new(),
                host_estimate_tries: HashMap::new(),
                estimate_failed_hosts: HashSet::new(),
                finished: false,
            })
            .collect();
        // Dump order: largest first, ties by index (deterministic).
        let mut order: Vec<usize> = (0..p.dles.len()).collect();
        order.sort_by(|&a, &b| p.dles[b].size.cmp(&p.dles[a].size).then(a.cmp(&b)));
        for i in order {
            let c = p.dles[i].config.min(configs - 1);
            state[c].queue.push_back(i);
        }
        for d in &p.dles {
            // DLEs of a config number beyond the last belong to their own (empty) planner:
            // only the queue clamps the config, as before.
            let Some(cs) = state.get_mut(d.config) else {
                continue;
            };
            let info = cs.hosts.entry(d.host).or_default();
            info.udp |= d.auth != Auth::Bsdtcp;
            info.estimate_ms +=
                ms(p.estimate_per_dle) + (d.size as f64 / p.estimate_rate * 1000.0) as u64;
        }
        let base = Instant::now();
        Night {
            p,
            policy,
            base,
            now: 0,
            seq: 0,
            events: Events::new([
                ms(p.bind_retry),
                ms(p.connect_retry_gap),
                ms(p.exchange),
                ms(p.req_timeout),
            ]),
            udp: p.core(Transport::Udp, p.udp_range),
            tcp: p.core(Transport::Tcp, p.tcp_range),
            data: p.core(Transport::Tcp, p.data_range),
            owners: HashMap::new(),
            configs: state,
            dles: vec![DleState::default(); p.dles.len()],
            host_running: vec![0; p.hosts.len().max(1)],
            transferring: Vec::new(),
            remaining: Vec::new(),
            least_remaining: f64::INFINITY,
            rate: 0.0,
            rng: Rng::new(p.seed ^ 0x5EED),
            out: Outcome {
                policy,
                done: 0,
                failed: 0,
                done_bytes: 0,
                waits: 0,
                total_wait: Duration::ZERO,
                longest_wait: Duration::ZERO,
                blind_retry: Duration::ZERO,
                outside: 0,
                makespan: Duration::ZERO,
                peak_held: 0,
                peak_demand: 0,
                failures: Vec::new(),
                trace: None,
            },
            failures: HashMap::new(),
            lease_start: HashMap::new(),
            retrying: 0,
            tcp_estimates: HashMap::new(),
            trace: p.record.then(Trace::default),
        }
    }

    fn at(&self, t: u64) -> Instant {
        self.base + Duration::from_millis(t)
    }

    fn schedule(&mut self, delay: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(delay, (self.now + delay, self.seq, ev));
    }

    fn pool(&mut self, id: PoolId) -> &mut PoolCore {
        match id {
            PoolId::Udp => &mut self.udp,
            PoolId::Tcp => &mut self.tcp,
            PoolId::Data => &mut self.data,
        }
    }

    fn control_pool(auth: Auth) -> PoolId {
        match auth.transport() {
            Transport::Udp => PoolId::Udp,
            Transport::Tcp => PoolId::Tcp,
        }
    }

    fn host_dest(&self, host: usize) -> Dest {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from(0xC612_0000u32 + host as u32 + 2)),
            AMANDA_PORT,
        )
    }

    /// Queue a request; the grant is routed in `route_grants`.
    fn request(&mut self, id: PoolId, dest: Option<Dest>, owner: Owner) {
        let now = self.at(self.now);
        if let Ok(ticket) = self.pool(id).request(dest, now) {
            self.owners.insert((id, ticket), owner);
        }
        // A pool without usable ports cannot happen here: `run` checks first.
    }

    /// Take a port now or not at all (Amanda's scans). Returns the port.
    fn try_take(&mut self, id: PoolId, dest: Option<Dest>, kind: SpanKind) -> Option<u16> {
        let now = self.at(self.now);
        let pool = self.pool(id);
        // A scan that cannot succeed changes nothing the night reports: skip the pool's
        // request/cancel pair (most events of a long amanda-3.5 night are such scans).
        if !pool.could_grant_now(dest, now) {
            return None;
        }
        let ticket = pool.request(dest, now).ok()?;
        // Grants are FIFO and nobody else waits under the Amanda policies, so the grant,
        // if any, is ours.
        match pool.poll_grant() {
            Some(g) if g.ticket == ticket => {
                let _ = pool.bound(ticket, now);
                self.span_start(id, g.port, kind);
                Some(g.port)
            }
            Some(other) => {
                // Someone else's grant (mixed waiting): give it back to the queue order.
                let _ = pool.bound(other.ticket, now);
                let _ = pool.release(other.port, false, now);
                pool.cancel(ticket, now);
                None
            }
            None => {
                pool.cancel(ticket, now);
                None
            }
        }
    }

    fn release(&mut self, id: PoolId, port: u16, active_close: bool) {
        let now = self.at(self.now);
        let _ = self.pool(id).release(port, active_close, now);
        self.span_end(id, port);
        if active_close && id == PoolId::Tcp && self.trace.is_some() {
            let end = self.now + ms(self.p.time_wait);
            self.push_span(
                Transport::Tcp,
                Some(port),
                self.now,
                end,
                SpanKind::TimeWait,
            );
        }
    }

    /// The control pool whose leases are plotted, when a plot is being recorded.
    fn plotted(&self, id: PoolId) -> Option<Transport> {
        // Spans only feed the plot.
        match id {
            _ if self.trace.is_none() => None,
            PoolId::Data => None,
            PoolId::Udp => Some(Transport::Udp),
            PoolId::Tcp => Some(Transport::Tcp),
        }
    }

    fn span_start(&mut self, id: PoolId, port: u16, kind: SpanKind) {
        if let Some(proto) = self.plotted(id) {
            self.lease_start.insert((proto, port), (self.now, kind));
        }
    }

    fn span_end(&mut self, id: PoolId, port: u16) {
        if let Some(proto) = self.plotted(id)
            && let Some((start, kind)) = self.lease_start.remove(&(proto, port))
        {
            self.push_span(proto, Some(port), start, self.now, kind);
        }
    }

    fn push_span(
        &mut self,
        proto: Transport,
        port: Option<u16>,
        start_ms: u64,
        end_ms: u64,
        kind: SpanKind,
    ) {
        if let Some(t) = self.trace.as_mut() {
            t.spans.push(Span {
                proto,
                port,
                start_ms,
                end_ms,
                kind,
            });
        }
    }

    fn fail(&mut self, dle: usize, why: &str) {
        let d = &mut self.dles[dle];
        if d.finished {
            return;
        }
        d.finished = true;
        self.out.failed += 1;
        *self.failures.entry(why.to_owned()).or_default() += 1;
    }

    // ----- estimates -----

    fn start_estimates(&mut self) {
        for c in 0..self.configs.len() {
            let hosts = &self.configs[c].hosts;
            let (udp_hosts, tcp_hosts): (Vec<usize>, Vec<usize>) =
                hosts.keys().partition(|h| hosts[h].udp);
            self.configs[c].hosts_pending = hosts.len();
            self.configs[c].udp_hosts = udp_hosts.clone();
            if !udp_hosts.is_empty() {
                match self.policy {
                    Policy::Portpool => {
                        self.request(PoolId::Udp, None, Owner::PlannerUdp { config: c })
                    }
                    Policy::Amanda24 | Policy::Amanda35 => self.planner_udp_try(c),
                }
            }
            for h in tcp_hosts {
                self.host_estimate_start(c, h);
            }
            // amanda-2.4: the driver starts its dumpers now; each binds its UDP port at once.
            if self.policy == Policy::Amanda24 && self.configs[c].hosts.values().any(|h| h.udp) {
                for i in 0..self.configs[c].dumpers.len() {
                    match self.try_take(PoolId::Udp, None, SpanKind::Idle) {
                        Some(port) => self.configs[c].dumpers[i].udp_port = Some(port),
                        None => {
                            self.configs[c].dumpers[i].outside = true;
                            self.out.outside += 1;
                            self.push_span(Transport::Udp, None, 0, u64::MAX, SpanKind::Outside);
                        }
                    }
                }
            }
        }
        if self.configs.iter().all(|c| c.hosts_pending == 0) {
            for c in 0..self.configs.len() {
                self.planner_finished(c);
            }
        }
    }

    fn host_estimate_time(&self, c: usize, h: usize) -> u64 {
        self.configs[c].hosts.get(&h).map_or(0, |i| i.estimate_ms)
    }

    fn planner_udp_try(&mut self, c: usize) {
        match self.try_take(PoolId::Udp, None, SpanKind::Planner) {
            Some(port) => {
                self.configs[c].planner_udp = Some(port);
                self.planner_udp_granted(c);
            }
            None if self.policy == Policy::Amanda24 => {
                // Outside the hole: every estimate request times out.
                self.configs[c].planner_udp_failed = true;
                let hosts = self.configs[c].udp_hosts.clone();
                for h in hosts {
                    self.schedule(
                        ms(self.p.req_timeout),
                        Ev::EstimateDone { config: c, host: h },
                    );
                }
            }
            None => {
                let cs = &mut self.configs[c];
                cs.planner_tries += 1;
                if cs.planner_tries <= self.p.bind_retries {
                    self.schedule(ms(self.p.bind_retry), Ev::PlannerRetry { config: c });
                } else {
                    cs.planner_tries = 0;
                    cs.planner_connect_try += 1;
                    if cs.planner_connect_try < self.p.connect_tries {
                        self.schedule(ms(self.p.connect_retry_gap), Ev::PlannerRetry { config: c });
                    } else {
                        cs.planner_udp_failed = true;
                        let hosts = cs.udp_hosts.clone();
                        for h in hosts {
                            self.schedule(0, Ev::EstimateDone { config: c, host: h });
                        }
                    }
                }
            }
        }
    }

    fn planner_udp_granted(&mut self, c: usize) {
        let hosts = self.configs[c].udp_hosts.clone();
        for h in hosts {
            let t = self.host_estimate_time(c, h);
            self.schedule(t, Ev::EstimateDone { config: c, host: h });
        }
    }

    fn host_estimate_start(&mut self, c: usize, h: usize) {
        let dest = Some(self.host_dest(h));
        match self.policy {
            Policy::Portpool => {
                self.request(PoolId::Tcp, dest, Owner::PlannerTcp { config: c, host: h })
            }
            _ => match self.try_take(PoolId::Tcp, dest, SpanKind::Planner) {
                Some(port) => self.host_estimate_granted(c, h, port),
                None if self.policy == Policy::Amanda24 => {
                    self.configs[c].estimate_failed_hosts.insert(h);
                    self.schedule(
                        ms(self.p.req_timeout),
                        Ev::EstimateDone { config: c, host: h },
                    );
                }
                None => {
                    let tries = self.configs[c].host_estimate_tries.entry(h).or_default();
                    *tries += 1;
                    if *tries < self.p.connect_tries {
                        self.schedule(
                            ms(self.p.connect_retry_gap),
                            Ev::HostEstimateRetry { config: c, host: h },
                        );
                    } else {
                        self.configs[c].estimate_failed_hosts.insert(h);
                        self.schedule(0, Ev::EstimateDone { config: c, host: h });
                    }
                }
            },
        }
    }

    fn host_estimate_granted(&mut self, c: usize, h: usize, port: u16) {
        let t = self.host_estimate_time(c, h);
        self.tcp_estimates.insert((c, h), port);
        self.schedule(t, Ev::EstimateDone { config: c, host: h });
    }

    fn estimate_done(&mut self, c: usize, h: usize) {
        if let Some(port) = self.tcp_estimates.remove(&(c, h)) {
            self.release(PoolId::Tcp, port, true);
        }
        let cs = &mut self.configs[c];
        cs.hosts_pending = cs.hosts_pending.saturating_sub(1);
        if cs.hosts_pending == 0 {
            self.planner_finished(c);
        }
    }

    fn planner_finished(&mut self, c: usize) {
        if self.configs[c].planner_done {
            return;
        }
        self.configs[c].planner_done = true;
        if let Some(port) = self.configs[c].planner_udp.take() {
            self.release(PoolId::Udp, port, false);
        }
        // DLEs whose estimates failed are not dumped.
        let p = self.p;
        let udp_failed = self.configs[c].planner_udp_failed;
        let failed_hosts = std::mem::take(&mut self.configs[c].estimate_failed_hosts);
        let queue: Vec<usize> = self.configs[c].queue.drain(..).collect();
        for dle in queue {
            let d = &p.dles[dle];
            let lost = (d.auth != Auth::Bsdtcp && udp_failed) || failed_hosts.contains(&d.host);
            if lost {
                let why = match self.policy {
                    Policy::Amanda24 => {
                        "estimate request timed out (port outside the firewall range)"
                    }
                    _ => "no estimate: no port for the planner's request",
                };
                self.fail(dle, why);
            } else {
                self.configs[c].queue.push_back(dle);
            }
        }
        self.start_some(c);
    }

    // ----- dumps -----

    fn start_some(&mut self, c: usize) {
        let mut started = Vec::new();
        let maxdumps = self.p.maxdumps.max(1);
        // The lowest-numbered idle dumper takes the first DLE whose host has room.
        while let Some(d) = self.configs[c]
            .dumpers
            .iter()
            .position(|d| d.busy.is_none())
        {
            let Some(pos) = self.configs[c]
                .queue
                .iter()
                .position(|&i| self.host_running[self.p.dles[i].host] < maxdumps)
            else {
                break;
            };
            let Some(dle) = self.configs[c].queue.remove(pos) else {
                break;
            };
            self.host_running[self.p.dles[dle].host] += 1;
            self.configs[c].dumpers[d].busy = Some(dle);
            self.dles[dle].dumper = Some(d);
            started.push((d, dle));
        }
        // Amanda's dumpers race for the ports (which of them binds first is up to the
        // scheduler); portpool serves them in the order the driver started them.
        if self.policy != Policy::Portpool {
            self.rng.shuffle(&mut started);
        }
        for (d, dle) in started {
            self.begin_dump(c, d, dle);
        }
        self.check_config_finished(c);
    }

    fn begin_dump(&mut self, c: usize, d: usize, dle: usize) {
        let auth = self.p.dles[dle].auth;
        let pool = Self::control_pool(auth);
        let dest = (auth == Auth::Bsdtcp).then(|| self.host_dest(self.p.dles[dle].host));
        match (self.policy, auth.transport()) {
            (Policy::Portpool, _) => self.request(pool, dest, Owner::Control { dle }),
            (Policy::Amanda24, Transport::Udp) => {
                if self.configs[c].dumpers[d].outside {
                    self.schedule(ms(self.p.req_timeout), Ev::RequestTimeout { dle });
                } else {
                    self.mark_dumper_port_busy(c, d);
                    self.schedule(ms(self.p.exchange), Ev::ExchangeDone { dle });
                }
            }
            (Policy::Amanda35, Transport::Udp) => {
                if self.configs[c].dumpers[d].udp_port.is_some() {
                    self.mark_dumper_port_busy(c, d);
                    self.schedule(ms(self.p.exchange), Ev::ExchangeDone { dle });
                } else {
                    self.dle_retry(dle);
                }
            }
            (_, Transport::Tcp) => match self.try_take(pool, dest, SpanKind::Dumper) {
                Some(port) => {
                    self.dles[dle].control_port = Some(port);
                    self.schedule(ms(self.p.exchange), Ev::ExchangeDone { dle });
                }
                None if self.policy == Policy::Amanda24 => {
                    self.schedule(ms(self.p.req_timeout), Ev::RequestTimeout { dle });
                }
                None => self.dle_retry(dle),
            },
        }
    }

    /// amanda-2.4/3.5: the dumper's kept UDP port is "in a dump" (for the plot).
    fn mark_dumper_port_busy(&mut self, c: usize, d: usize) {
        if let Some(port) = self.configs[c].dumpers[d].udp_port {
            self.span_end(PoolId::Udp, port);
            self.span_start(PoolId::Udp, port, SpanKind::Dumper);
        }
    }

    fn mark_dumper_port_idle(&mut self, c: usize, d: usize) {
        if let Some(port) = self.configs[c].dumpers[d].udp_port {
            self.span_end(PoolId::Udp, port);
            self.span_start(PoolId::Udp, port, SpanKind::Idle);
        }
    }

    /// amanda-3.5: one more scan for a port (UDP: 15 s × 120 per cycle; TCP: 5 s apart).
    fn dle_retry(&mut self, dle: usize) {
        let auth = self.p.dles[dle].auth;
        let c = self.p.dles[dle].config.min(self.configs.len() - 1);
        let Some(d) = self.dles[dle].dumper else {
            return;
        };
        if self.dles[dle].retry_started.is_none() {
            self.dles[dle].retry_started = Some(self.now);
            self.retrying += 1;
        }
        if auth.transport() == Transport::Udp {
            if let Some(port) = self.try_take(PoolId::Udp, None, SpanKind::Dumper) {
                self.configs[c].dumpers[d].udp_port = Some(port);
                self.end_retry(dle);
                self.schedule(ms(self.p.exchange), Ev::ExchangeDone { dle });
                return;
            }
            let s = &mut self.dles[dle];
            s.bind_tries += 1;
            if s.bind_tries <= self.p.bind_retries {
                self.schedule(ms(self.p.bind_retry), Ev::Retry { dle });
                return;
            }
            s.bind_tries = 0;
            s.connect_try += 1;
            if s.connect_try < self.p.connect_tries {
                self.schedule(ms(self.p.connect_retry_gap), Ev::Retry { dle });
                return;
            }
        } else {
            let dest = Some(self.host_dest(self.p.dles[dle].host));
            if let Some(port) = self.try_take(PoolId::Tcp, dest, SpanKind::Dumper) {
                self.dles[dle].control_port = Some(port);
                self.end_retry(dle);
                self.schedule(ms(self.p.exchange), Ev::ExchangeDone { dle });
                return;
            }
            let s = &mut self.dles[dle];
            s.connect_try += 1;
            if s.connect_try < self.p.connect_tries {
                self.schedule(ms(self.p.connect_retry_gap), Ev::Retry { dle });
                return;
            }
        }
        self.end_retry(dle);
        self.try_again(dle);
    }

    fn end_retry(&mut self, dle: usize) {
        if let Some(start) = self.dles[dle].retry_started.take() {
            self.out.blind_retry += Duration::from_millis(self.now - start);
            self.retrying -= 1;
        }
        let s = &mut self.dles[dle];
        s.bind_tries = 0;
        s.connect_try = 0;
    }

    /// The dumper reports TRY-AGAIN; the driver requeues the DLE up to `retry_dump`
    /// attempts.
    fn try_again(&mut self, dle: usize) {
        let c = self.p.dles[dle].config.min(self.configs.len() - 1);
        self.dles[dle].attempts += 1;
        self.free_dumper(dle);
        if self.dles[dle].attempts < self.p.retry_dump.max(1) {
            self.configs[c].queue.push_front(dle);
        } else {
            let why = match self.p.dles[dle].auth.transport() {
                Transport::Udp => {
                    "[request failed: Can't bind a socket to connect to <host>] after blind retries"
                }
                Transport::Tcp => "[request failed: no free reserved TCP port]",
            };
            self.fail(dle, why);
        }
        self.start_some(c);
    }

    fn free_dumper(&mut self, dle: usize) {
        let c = self.p.dles[dle].config.min(self.configs.len() - 1);
        if let Some(d) = self.dles[dle].dumper.take() {
            self.configs[c].dumpers[d].busy = None;
            self.configs[c].dumpers[d].idle_since = Some(self.now);
            self.mark_dumper_port_idle(c, d);
        }
        let h = self.p.dles[dle].host;
        self.host_running[h] = self.host_running[h].saturating_sub(1);
    }

    fn control_granted(&mut self, dle: usize, port: u16) {
        self.dles[dle].control_port = Some(port);
        self.schedule(ms(self.p.exchange), Ev::ExchangeDone { dle });
    }

    fn exchange_done(&mut self, dle: usize) {
        let auth = self.p.dles[dle].auth;
        // portpool: a UDP exchange ends with the REP; the port goes back now.
        if self.policy == Policy::Portpool
            && auth.transport() == Transport::Udp
            && let Some(port) = self.dles[dle].control_port.take()
        {
            self.release(PoolId::Udp, port, false);
        }
        let n = auth.data_connections();
        self.dles[dle].data_wanted = n;
        if n == 0 {
            self.start_transfer(dle);
            return;
        }
        for _ in 0..n {
            self.request(PoolId::Data, None, Owner::Data { dle });
        }
    }

    fn data_granted(&mut self, dle: usize, port: u16) {
        let s = &mut self.dles[dle];
        s.data_ports.push(port);
        if s.data_ports.len() as u32 == s.data_wanted {
            self.start_transfer(dle);
        }
    }

    fn start_transfer(&mut self, dle: usize) {
        let size = self.p.dles[dle].size as f64;
        self.dles[dle].transferring = true;
        self.transferring.push(dle);
        self.remaining.push(size);
        self.least_remaining = self.least_remaining.min(size);
        self.set_rate();
    }

    fn rate(&self) -> f64 {
        self.rate
    }

    /// The per-transfer rate changes only when a transfer starts or ends.
    fn set_rate(&mut self) {
        let n = self.transferring.len().max(1) as f64;
        self.rate = (self.p.bandwidth / n).min(self.p.client_rate).max(1.0);
    }

    fn transfer_done(&mut self, dle: usize) {
        self.dles[dle].transferring = false;
        let ports = std::mem::take(&mut self.dles[dle].data_ports);
        for port in ports {
            // The client's listening port is new for every dump: no 4-tuple is reused,
            // so no TIME_WAIT hold is recorded for data connections.
            self.release(PoolId::Data, port, false);
        }
        if let Some(port) = self.dles[dle].control_port.take() {
            // bsdtcp: the server closes the connection first: TIME_WAIT towards the client.
            self.release(PoolId::Tcp, port, true);
        }
        self.dles[dle].finished = true;
        self.out.done += 1;
        self.out.done_bytes += self.p.dles[dle].size;
        let c = self.p.dles[dle].config.min(self.configs.len() - 1);
        self.free_dumper(dle);
        self.start_some(c);
    }

    fn check_config_finished(&mut self, c: usize) {
        let cs = &self.configs[c];
        if cs.finished
            || !cs.planner_done
            || !cs.queue.is_empty()
            || cs.dumpers.iter().any(|d| d.busy.is_some())
        {
            return;
        }
        self.configs[c].finished = true;
        // The dumpers exit: Amanda's kept UDP ports go back.
        for d in 0..self.configs[c].dumpers.len() {
            if let Some(port) = self.configs[c].dumpers[d].udp_port.take() {
                self.release(PoolId::Udp, port, false);
            }
        }
    }

    // ----- the loop -----

    fn route_grants(&mut self) {
        // The pools' log events are the daemons' business; the night reads the metrics.
        // Left queued they would grow with every blind retry of the Amanda policies.
        for id in [PoolId::Udp, PoolId::Tcp, PoolId::Data] {
            while self.pool(id).poll_event().is_some() {}
        }
        loop {
            let mut any = false;
            for id in [PoolId::Udp, PoolId::Tcp, PoolId::Data] {
                while let Some(g) = self.pool(id).poll_grant() {
                    any = true;
                    let now = self.at(self.now);
                    let _ = self.pool(id).bound(g.ticket, now);
                    let Some(owner) = self.owners.remove(&(id, g.ticket)) else {
                        continue;
                    };
                    let kind = match owner {
                        Owner::PlannerUdp { .. } | Owner::PlannerTcp { .. } => SpanKind::Planner,
                        _ => SpanKind::Dumper,
                    };
                    self.span_start(id, g.port, kind);
                    match owner {
                        Owner::PlannerUdp { config } => {
                            self.configs[config].planner_udp = Some(g.port);
                            self.planner_udp_granted(config);
                        }
                        Owner::PlannerTcp { config, host } => {
                            self.host_estimate_granted(config, host, g.port)
                        }
                        Owner::Control { dle } => self.control_granted(dle, g.port),
                        Owner::Data { dle } => self.data_granted(dle, g.port),
                    }
                }
            }
            if !any {
                break;
            }
        }
        self.observe_demand();
    }

    fn observe_demand(&mut self) {
        let held = self.udp.in_use()
            + self.tcp.in_use()
            + if self.policy == Policy::Amanda24 {
                self.out.outside
            } else {
                0
            };
        let wanted = held + self.udp.waiting() as u32 + self.tcp.waiting() as u32 + self.retrying;
        self.out.peak_held = self.out.peak_held.max(held);
        self.out.peak_demand = self.out.peak_demand.max(wanted);
        let waiting = self.udp.waiting() as u32 + self.tcp.waiting() as u32 + self.retrying;
        let now = self.now;
        if let Some(t) = self.trace.as_mut()
            && t.waiting.last().is_none_or(|&(_, w)| w != waiting)
        {
            t.waiting.push((now, waiting));
        }
    }

    fn advance(&mut self, to: u64) {
        if to > self.now && !self.transferring.is_empty() {
            let dt = (to - self.now) as f64 / 1000.0;
            let moved = self.rate() * dt;
            let mut least = f64::INFINITY;
            for r in &mut self.remaining {
                *r -= moved;
                // Not f64::min: no value is NaN, and the plain compare vectorises.
                if *r < least {
                    least = *r;
                }
            }
            self.least_remaining = least;
        }
        self.now = self.now.max(to);
    }

    fn next_transfer_end(&self) -> Option<u64> {
        let min = self.least_remaining;
        if !min.is_finite() {
            return None;
        }
        let secs = (min.max(0.0) / self.rate()).max(0.0);
        Some(self.now + ceil_ms(secs * 1000.0).max(if min > 0.5 { 1 } else { 0 }))
    }

    fn core_timer(&self) -> Option<u64> {
        if self.udp.waiting() + self.tcp.waiting() + self.data.waiting() == 0 {
            return None;
        }
        [&self.udp, &self.tcp, &self.data]
            .iter()
            .filter_map(|c| c.poll_timeout())
            .map(|t| ms(t.saturating_duration_since(self.base)))
            .min()
    }

    fn run(mut self) -> Outcome {
        self.start_estimates();
        self.route_grants();
        loop {
            let next_event = self.events.next_time();
            let next_transfer = self.next_transfer_end();
            let next_timer = self.core_timer();
            let Some(next) = min_some(min_some(next_event, next_transfer), next_timer) else {
                break;
            };
            self.advance(next);
            if next_transfer == Some(next) {
                let done: Vec<usize> = self
                    .transferring
                    .iter()
                    .zip(&self.remaining)
                    .filter(|&(_, &r)| r <= 0.5)
                    .map(|(&d, _)| d)
                    .collect();
                if !done.is_empty() {
                    let mut i = 0;
                    while i < self.transferring.len() {
                        if self.remaining[i] <= 0.5 {
                            self.transferring.remove(i);
                            self.remaining.remove(i);
                        } else {
                            i += 1;
                        }
                    }
                    self.least_remaining =
                        self.remaining.iter().copied().fold(f64::INFINITY, f64::min);
                    self.set_rate();
                    for dle in done {
                        self.transfer_done(dle);
                    }
                    self.route_grants();
                    continue;
                }
            }
            if next_timer == Some(next) && next_event != Some(next) {
                let now = self.at(self.now);
                self.udp.tick(now);
                self.tcp.tick(now);
                self.data.tick(now);
                self.route_grants();
                continue;
            }
            let Some((_, _, ev)) = self.events.pop() else {
                continue;
            };
            self.handle(ev);
            self.route_grants();
        }
        self.finish()
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::EstimateDone { config, host } => self.estimate_done(config, host),
            Ev::ExchangeDone { dle } => self.exchange_done(dle),
            Ev::RequestTimeout { dle } => {
                self.fail(
                    dle,
                    "request timed out: source port outside the firewall's range",
                );
                let c = self.p.dles[dle].config.min(self.configs.len() - 1);
                self.free_dumper(dle);
                self.start_some(c);
            }
            Ev::Retry { dle } => self.dle_retry(dle),
            Ev::PlannerRetry { config } => self.planner_udp_try(config),
            Ev::HostEstimateRetry { config, host } => self.host_estimate_start(config, host),
        }
    }

    fn finish(mut self) -> Outcome {
        self.out.makespan = Duration::from_millis(self.now);
        for c in 0..self.configs.len() {
            self.check_config_finished(c);
        }
        // DLEs never started (a config that could not finish) count as failed.
        for i in 0..self.dles.len() {
            if !self.dles[i].finished {
                self.fail(i, "never dumped");
            }
        }
        let mut control = self.udp.metrics();
        let tcp = self.tcp.metrics();
        control.waits += tcp.waits;
        control.total_wait += tcp.total_wait;
        control.longest_wait = control.longest_wait.max(tcp.longest_wait);
        if self.policy == Policy::Portpool {
            self.out.waits = control.waits;
            self.out.total_wait = control.total_wait;
            self.out.longest_wait = control.longest_wait;
        }
        let mut failures: Vec<(String, usize)> = self.failures.into_iter().collect();
        failures.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        self.out.failures = failures;
        if let Some(mut trace) = self.trace.take() {
            let end = self.now;
            for ((proto, port), (start, kind)) in std::mem::take(&mut self.lease_start) {
                trace.spans.push(Span {
                    proto,
                    port: Some(port),
                    start_ms: start,
                    end_ms: end,
                    kind,
                });
            }
            for s in &mut trace.spans {
                s.end_ms = s.end_ms.min(end.max(1));
            }
            trace
                .spans
                .sort_by_key(|s| (s.proto, s.port, s.start_ms, s.end_ms));
            let mut rows = Vec::new();
            for proto in self.p.control_protos() {
                let (range, _, _) = self.p.effective(proto);
                rows.extend(range.ports().map(|p| (proto, p)));
            }
            trace.rows = rows;
            self.out.trace = Some(trace);
        }
        self.out
    }
}

#[cfg(test)]
mod tests;
