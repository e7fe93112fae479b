//! The pool as a value: a sans-IO state machine over the ports of one range.
//!
//! Every port is in exactly one state: unusable (listed in `/etc/services` for another
//! service, or outside what the site allows), free, binding (granted to a waiter whose
//! shell is calling `bind` right now), leased, or busy elsewhere (a bind found it in use,
//! by another process or another pool; retried after `busy_retry`). Besides, a TCP port
//! that actively closed a connection is *held* for that destination until its TIME_WAIT
//! ends, and may serve other destinations meanwhile.
//!
//! Requests queue in a FIFO of tickets. After every change the pool grants free ports to
//! the oldest waiters that can use them (a waiter is passed over only for a port that is
//! held for its own destination), and the grants are pulled with [`PoolCore::poll_grant`].
//! The shell binds the port and reports back with [`PoolCore::bound`],
//! [`PoolCore::bind_busy`] or [`PoolCore::bind_failed`]. Time comes in as `now`;
//! [`PoolCore::poll_timeout`] says when the pool next needs a [`PoolCore::tick`].
//!
//! What this module must NOT do: touch a socket, a file, a clock or a lock. The daemons'
//! [`crate::Pool`] and the simulator (`portpool::sim`) both drive this same type.
//! LIFECYCLE.md beside this file draws the states.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proto::ports::{PortRange, Transport};

/// Who a TCP lease talks to (client:10080 for a bsdtcp control connection).
pub type Dest = SocketAddr;

/// A place in the FIFO. Tickets are issued in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

impl Ticket {
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A port granted to a waiter; the shell must now bind it and report the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub ticket: Ticket,
    pub port: u16,
    /// How long the waiter waited for this grant.
    pub waited: Duration,
    /// Grants are numbered in the order they are made (0, 1, 2...).
    pub serial: u64,
}

/// Why a port of the range can never be leased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unusable {
    /// `/etc/services` lists it for another service (Amanda's rule).
    Service { name: String, file: String },
    /// Outside the range a security file allows (e.g. `udp_port_range` of
    /// `/etc/amanda-security.conf`, which the real Amanda's ambind enforces).
    OutsideAllowed { allowed: PortRange, source: String },
    /// Excluded by the operator or the caller.
    Excluded { why: String },
}

impl Unusable {
    /// Short text for lists: `domain-s in /etc/services`.
    pub fn describe(&self) -> String {
        match self {
            Unusable::Service { name, file } => format!("{name} in {file}"),
            Unusable::OutsideAllowed { allowed, source } => {
                format!("outside {allowed} allowed by {source}")
            }
            Unusable::Excluded { why } => why.clone(),
        }
    }
}

/// The configuration of one pool core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub proto: Transport,
    pub range: PortRange,
    /// Ports that are never leased, with the reason (kept for messages).
    pub unusable: Vec<(u16, Unusable)>,
    /// How long a TCP port that actively closed towards a destination is held back from
    /// that destination (Linux TIME_WAIT: 60 s).
    pub time_wait: Duration,
    /// How long a port found in use elsewhere is left alone before it is tried again.
    pub busy_retry: Duration,
}

impl CoreConfig {
    pub fn new(proto: Transport, range: PortRange) -> Self {
        CoreConfig {
            proto,
            range,
            unusable: Vec::new(),
            time_wait: Duration::from_secs(60),
            busy_retry: Duration::from_secs(5),
        }
    }
}

/// Something worth telling an operator, pulled with [`PoolCore::poll_event`].
#[derive(Debug, Clone, PartialEq)]
pub enum PoolEvent {
    /// A request had to wait: an exhaustion episode starts.
    Exhausted(Shortage),
    /// The last waiter left (granted or gave up): the episode is over.
    Recovered(Episode),
}

/// The summary of one exhaustion episode.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub proto: Transport,
    pub range: PortRange,
    pub duration: Duration,
    pub usable: u32,
    pub unusable: Vec<(u16, Unusable)>,
    /// Requests that waited during the episode.
    pub waiters: u64,
    /// Most requests waiting at once.
    pub peak_waiting: u32,
    pub total_wait: Duration,
    pub longest_wait: Duration,
    /// Requests that gave up (deadline) during the episode.
    pub timeouts: u64,
    /// Ports found busy elsewhere during the episode.
    pub busy_elsewhere: u64,
}

impl fmt::Display for Episode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} port pool {} was exhausted for {}: {} usable{}; {} requests waited (at most {} at once), \
             longest wait {}, total wait {}",
            self.proto,
            self.range,
            fmt_duration(self.duration),
            self.usable,
            fmt_unusable(&self.unusable),
            self.waiters,
            self.peak_waiting,
            fmt_duration(self.longest_wait),
            fmt_duration(self.total_wait),
        )?;
        if self.timeouts > 0 {
            write!(f, ", {} gave up", self.timeouts)?;
        }
        if self.busy_elsewhere > 0 {
            write!(f, ", {} ports found in use elsewhere", self.busy_elsewhere)?;
        }
        Ok(())
    }
}

/// Why a request waits: data for the dumper's messages, and a Display for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Shortage {
    pub proto: Transport,
    pub range: PortRange,
    pub usable: u32,
    pub unusable: Vec<(u16, Unusable)>,
    pub leased: u32,
    /// Ports a bind found in use by someone else (another process, another pool), with
    /// the pid holding it when known.
    pub busy_elsewhere: Vec<(u16, Option<u32>)>,
    /// Free ports held back in TIME_WAIT from the destination of the oldest waiter.
    pub held_for_dest: Option<(Dest, u32)>,
    pub waiting: u32,
}

impl fmt::Display for Shortage {
    /// `no ports: 9 usable in udp 850-859 (853 is domain-s in /etc/services); 9 leased, 11 waiting`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no ports: {} usable in {} {}{}; {} leased, {} waiting",
            self.usable,
            self.proto,
            self.range,
            fmt_unusable(&self.unusable),
            self.leased,
            self.waiting
        )?;
        if !self.busy_elsewhere.is_empty() {
            let list: Vec<String> = self
                .busy_elsewhere
                .iter()
                .map(|(port, pid)| match pid {
                    Some(pid) => format!("{port} (pid {pid})"),
                    None => port.to_string(),
                })
                .collect();
            write!(f, ", in use elsewhere: {}", list.join(", "))?;
        }
        if let Some((dest, n)) = self.held_for_dest {
            write!(f, ", {n} in TIME_WAIT towards {dest}")?;
        }
        Ok(())
    }
}

fn fmt_unusable(unusable: &[(u16, Unusable)]) -> String {
    if unusable.is_empty() {
        return String::new();
    }
    const SHOWN: usize = 4;
    let mut parts: Vec<String> = unusable
        .iter()
        .take(SHOWN)
        .map(|(port, why)| match why {
            Unusable::Service { name, file } => format!("{port} is {name} in {file}"),
            other => format!("{port} is {}", other.describe()),
        })
        .collect();
    if unusable.len() > SHOWN {
        parts.push(format!("and {} more", unusable.len() - SHOWN));
    }
    format!(" ({})", parts.join(", "))
}

/// `1h02m`, `3m05s`, `42s`, `250ms`.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Counters; a copy is cheap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Ports of the range that can be leased at all.
    pub usable: u32,
    /// Ports skipped for good (`/etc/services`, outside the allowed range, excluded).
    pub skipped_ports: u32,
    /// Leased or being bound right now.
    pub in_use: u32,
    /// Most ports in use at once.
    pub high_water: u32,
    /// Requests waiting now.
    pub waiting: u32,
    /// Ports currently believed in use elsewhere.
    pub busy_now: u32,
    /// Leases granted (bound).
    pub granted: u64,
    /// Granted leases that had to wait.
    pub waits: u64,
    pub total_wait: Duration,
    pub longest_wait: Duration,
    /// Requests that gave up before a port came.
    pub timeouts: u64,
    /// Binds that found the port in use elsewhere (EADDRINUSE, or the host registry).
    pub bind_busy: u64,
    /// Binds that failed for another reason (EACCES...), ending the request.
    pub bind_errors: u64,
    /// TIME_WAIT holds recorded.
    pub time_wait_holds: u64,
    /// Exhaustion episodes started.
    pub episodes: u64,
}

impl Metrics {
    /// All bind failures (busy or not).
    pub fn bind_failures(&self) -> u64 {
        self.bind_busy + self.bind_errors
    }
}

/// The shell used the core wrongly (a bug in the shell, reported instead of panicking).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misuse {
    #[error("ticket {0} has no port being bound")]
    NotBinding(u64),
    #[error("port {0} is not leased")]
    NotLeased(u16),
    #[error("the pool has no usable port ({0} ports excluded)")]
    Empty(u32),
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Unusable,
    Free,
    Binding(Ticket),
    Leased { dest: Option<Dest> },
    Busy { until: Instant, by: Option<u32> },
}

#[derive(Debug, Clone)]
struct Waiter {
    ticket: Ticket,
    dest: Option<Dest>,
    since: Instant,
}

#[derive(Debug, Clone)]
struct EpisodeState {
    start: Instant,
    waiters: u64,
    /// Tickets below this were already counted in `waiters`.
    counted_upto: u64,
    peak_waiting: u32,
    total_wait: Duration,
    longest_wait: Duration,
    timeouts: u64,
    busy_elsewhere: u64,
}

/// The sans-IO pool. See the module documentation.
#[derive(Debug, Clone)]
pub struct PoolCore {
    proto: Transport,
    range: PortRange,
    time_wait: Duration,
    busy_retry: Duration,
    unusable: Vec<(u16, Unusable)>,
    states: Vec<State>,
    /// Free ports, least recently used first.
    free: VecDeque<u16>,
    /// Busy ports and when they may be tried again.
    busy: Vec<(Instant, u16)>,
    /// TIME_WAIT holds: port → (destination, until).
    holds: BTreeMap<u16, Vec<(Dest, Instant)>>,
    waiters: VecDeque<Waiter>,
    /// Waiters whose grant is being bound (kept to put them back on EADDRINUSE).
    binding: HashMap<Ticket, (u16, Waiter, Duration)>,
    grants: VecDeque<Grant>,
    events: VecDeque<PoolEvent>,
    next_ticket: u64,
    grants_issued: u64,
    in_use: u32,
    episode: Option<EpisodeState>,
    metrics: Metrics,
    last_now: Option<Instant>,
}

impl PoolCore {
    /// A pool over `config.range`; every port not listed as unusable starts free, in
    /// ascending order.
    pub fn new(config: CoreConfig) -> Self {
        let CoreConfig {
            proto,
            range,
            unusable,
            time_wait,
            busy_retry,
        } = config;
        let mut states = vec![State::Free; range.len() as usize];
        let mut kept: BTreeMap<u16, Unusable> = BTreeMap::new();
        for (port, why) in unusable {
            if let Some(index) = range.index_of(port) {
                states[index] = State::Unusable;
                kept.entry(port).or_insert(why);
            }
        }
        let free: VecDeque<u16> = range
            .ports()
            .filter(|&p| range.index_of(p).is_some_and(|i| states[i] == State::Free))
            .collect();
        let usable = free.len() as u32;
        let core = PoolCore {
            proto,
            range,
            time_wait,
            busy_retry,
            unusable: kept.into_iter().collect(),
            states,
            free,
            busy: Vec::new(),
            holds: BTreeMap::new(),
            waiters: VecDeque::new(),
            binding: HashMap::new(),
            grants: VecDeque::new(),
            events: VecDeque::new(),
            next_ticket: 0,
            grants_issued: 0,
            in_use: 0,
            episode: None,
            metrics: Metrics {
                usable,
                skipped_ports: range.len() - usable,
                ..Metrics::default()
            },
            last_now: None,
        };
        core.debug_check();
        core
    }

    pub fn proto(&self) -> Transport {
        self.proto
    }

    pub fn range(&self) -> PortRange {
        self.range
    }

    pub fn time_wait(&self) -> Duration {
        self.time_wait
    }

    /// The ports that are never leased, with why.
    pub fn unusable(&self) -> &[(u16, Unusable)] {
        &self.unusable
    }

    pub fn usable(&self) -> u32 {
        self.metrics.usable
    }

    /// Queue a request (for a destination, if it is a TCP source port). The grant, now
    /// or later, comes out of [`PoolCore::poll_grant`].
    pub fn request(&mut self, dest: Option<Dest>, now: Instant) -> Result<Ticket, Misuse> {
        if self.metrics.usable == 0 {
            return Err(Misuse::Empty(self.metrics.skipped_ports));
        }
        let now = self.observe(now);
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.waiters.push_back(Waiter {
            ticket,
            dest,
            since: now,
        });
        self.assign(now);
        self.after_change(now);
        Ok(ticket)
    }

    /// The next grant, in FIFO order of the tickets.
    pub fn poll_grant(&mut self) -> Option<Grant> {
        self.grants.pop_front()
    }

    /// The next event for the log.
    pub fn poll_event(&mut self) -> Option<PoolEvent> {
        self.events.pop_front()
    }

    /// The shell reports on the bind of `ticket`'s port: the observed time, and the port,
    /// its waiter and how long that waited for its grant.
    fn end_binding(
        &mut self,
        ticket: Ticket,
        now: Instant,
    ) -> Result<(Instant, (u16, Waiter, Duration)), Misuse> {
        let now = self.observe(now);
        let binding = self
            .binding
            .remove(&ticket)
            .ok_or(Misuse::NotBinding(ticket.0))?;
        Ok((now, binding))
    }

    /// The bind of a granted port succeeded: the port is leased.
    pub fn bound(&mut self, ticket: Ticket, now: Instant) -> Result<u16, Misuse> {
        let (now, (port, waiter, waited)) = self.end_binding(ticket, now)?;
        self.set_state(port, State::Leased { dest: waiter.dest });
        // The wait is what the request spent queued, up to its grant; the bind itself
        // is not waiting for a port.
        let m = &mut self.metrics;
        m.granted += 1;
        if !waited.is_zero() {
            m.waits += 1;
            m.total_wait += waited;
            m.longest_wait = m.longest_wait.max(waited);
            if let Some(ep) = self.episode.as_mut() {
                ep.total_wait += waited;
                ep.longest_wait = ep.longest_wait.max(waited);
            }
        }
        self.after_change(now);
        Ok(port)
    }

    /// The bind found the port in use (EADDRINUSE, or held in the host registry by pid
    /// `by`): the port is left alone for `busy_retry` and the waiter keeps its place.
    pub fn bind_busy(
        &mut self,
        ticket: Ticket,
        by: Option<u32>,
        now: Instant,
    ) -> Result<u16, Misuse> {
        let (now, (port, waiter, _)) = self.end_binding(ticket, now)?;
        let until = now + self.busy_retry;
        self.set_state(port, State::Busy { until, by });
        self.busy.push((until, port));
        self.metrics.bind_busy += 1;
        if let Some(ep) = self.episode.as_mut() {
            ep.busy_elsewhere += 1;
        }
        self.requeue(waiter);
        self.assign(now);
        self.after_change(now);
        Ok(port)
    }

    /// The bind failed for a reason that is not the port's fault (EACCES...): the port
    /// is free again and the request ends.
    pub fn bind_failed(&mut self, ticket: Ticket, now: Instant) -> Result<u16, Misuse> {
        let (now, (port, _, _)) = self.end_binding(ticket, now)?;
        self.set_state(port, State::Free);
        self.free.push_front(port);
        self.metrics.bind_errors += 1;
        self.assign(now);
        self.after_change(now);
        Ok(port)
    }

    /// A waiter gives up (deadline). Returns false when the ticket is not waiting (it may
    /// have a grant in flight: the shell must take that grant instead).
    pub fn cancel(&mut self, ticket: Ticket, now: Instant) -> bool {
        let now = self.observe(now);
        let Some(pos) = self.waiters.iter().position(|w| w.ticket == ticket) else {
            return false;
        };
        self.waiters.remove(pos);
        self.metrics.timeouts += 1;
        if let Some(ep) = self.episode.as_mut() {
            ep.timeouts += 1;
        }
        // The waiter may have been the one holding others back (TIME_WAIT bypass
        // aside, grants are strictly FIFO), so re-run the assignment.
        self.assign(now);
        self.after_change(now);
        true
    }

    /// A lease ends. `active_close` says whether this side closed a TCP connection first
    /// (then the port is held from the lease's destination for the TIME_WAIT interval).
    pub fn release(&mut self, port: u16, active_close: bool, now: Instant) -> Result<(), Misuse> {
        let now = self.observe(now);
        let index = self.range.index_of(port).ok_or(Misuse::NotLeased(port))?;
        let State::Leased { dest } = self.states[index] else {
            return Err(Misuse::NotLeased(port));
        };
        if let (Transport::Tcp, Some(dest), true) = (self.proto, dest, active_close) {
            self.hold(port, dest, now + self.time_wait, now);
        }
        self.set_state(port, State::Free);
        self.free.push_back(port);
        self.assign(now);
        self.after_change(now);
        Ok(())
    }

    /// Record that `port` cannot reach `dest` until `until` (a connect failed with
    /// EADDRNOTAVAIL: a TIME_WAIT the pool did not know of). The port's state is unchanged.
    pub fn hold(&mut self, port: u16, dest: Dest, until: Instant, now: Instant) {
        if self.proto != Transport::Tcp || !self.range.contains(port) {
            return;
        }
        let holds = self.holds.entry(port).or_default();
        holds.retain(|&(d, u)| u > now && d != dest);
        holds.push((dest, until));
        self.metrics.time_wait_holds += 1;
    }

    /// Let time pass: busy ports whose retry time came are free again, expired holds end,
    /// and waiters are served.
    pub fn tick(&mut self, now: Instant) {
        let now = self.observe(now);
        self.assign(now);
        self.after_change(now);
    }

    /// When the pool next needs a [`PoolCore::tick`]: only while someone waits, the
    /// earliest instant a busy port may be retried or a TIME_WAIT hold ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.waiters.is_empty() {
            return None;
        }
        let now = self.last_now;
        let busy = self.busy.iter().map(|&(until, _)| until);
        let holds = self
            .holds
            .values()
            .flatten()
            .map(|&(_, until)| until)
            .filter(|&until| now.is_none_or(|n| until > n));
        busy.chain(holds).min()
    }

    /// Counters and gauges.
    pub fn metrics(&self) -> Metrics {
        let mut m = self.metrics;
        m.in_use = self.in_use;
        m.waiting = self.waiters.len() as u32;
        m.busy_now = self.busy.len() as u32;
        m
    }

    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// Free ports right now (some may be held from particular destinations).
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// The port granted to `ticket` and being bound, if any.
    pub fn binding_port(&self, ticket: Ticket) -> Option<u16> {
        self.binding.get(&ticket).map(|(port, _, _)| *port)
    }

    /// The port's lease destination, when leased.
    pub fn leased_dest(&self, port: u16) -> Option<Option<Dest>> {
        match self.range.index_of(port).map(|i| &self.states[i]) {
            Some(State::Leased { dest }) => Some(*dest),
            _ => None,
        }
    }

    /// True when `port` may not be used towards `dest` at `now` (TIME_WAIT hold).
    /// Whether a request made now, with nobody else waiting, would be granted at once:
    /// a free port not held from `dest` (or a busy port whose retry time has come, which
    /// the request would free first). Lets a caller that gives up at once (Amanda's blind
    /// scans in the simulator) skip the request/cancel pair that could not succeed.
    pub fn could_grant_now(&self, dest: Option<Dest>, now: Instant) -> bool {
        if !self.waiters.is_empty() || self.busy.iter().any(|&(until, _)| until <= now) {
            return true;
        }
        match dest {
            None => !self.free.is_empty(),
            Some(dest) => self.free.iter().any(|&p| !self.is_held(p, dest, now)),
        }
    }

    pub fn is_held(&self, port: u16, dest: Dest, now: Instant) -> bool {
        self.holds
            .get(&port)
            .is_some_and(|h| h.iter().any(|&(d, u)| d == dest && u > now))
    }

    /// Why requests wait right now.
    pub fn shortage(&self) -> Shortage {
        let now = self.last_now;
        let held_for_dest = self.waiters.front().and_then(|w| w.dest).and_then(|dest| {
            let n = self
                .free
                .iter()
                .filter(|&&p| now.is_some_and(|now| self.is_held(p, dest, now)))
                .count() as u32;
            (n > 0).then_some((dest, n))
        });
        let busy_elsewhere = self
            .busy
            .iter()
            .map(|&(_, port)| {
                let by = match self.range.index_of(port).map(|i| &self.states[i]) {
                    Some(State::Busy { by, .. }) => *by,
                    _ => None,
                };
                (port, by)
            })
            .collect();
        Shortage {
            proto: self.proto,
            range: self.range,
            usable: self.metrics.usable,
            unusable: self.unusable.clone(),
            leased: self.in_use,
            busy_elsewhere,
            held_for_dest,
            waiting: self.waiters.len() as u32,
        }
    }

    /// Check every invariant; panics with a description of the first violation.
    pub fn check_invariants(&self) {
        if let Err(why) = self.invariants() {
            panic!("port pool invariant violated: {why}\n{self:#?}");
        }
    }

    /// Debug builds check every invariant after every change. The full check is linear
    /// in the range, so pools of thousands of ports (unreserved ranges) are checked
    /// after every 1024th change only.
    fn debug_check(&self) {
        if cfg!(debug_assertions)
            && (self.range.len() <= 4096 || self.metrics.granted.is_multiple_of(1024))
        {
            self.check_invariants();
        }
    }

    fn invariants(&self) -> Result<(), String> {
        let n = self.range.len() as usize;
        if self.states.len() != n {
            return Err(format!("{} states for {n} ports", self.states.len()));
        }
        // The index of a listed port, which must be in the range and listed once.
        let once = |seen: &mut Vec<bool>, port: u16, list: &str| {
            let i = self
                .range
                .index_of(port)
                .ok_or(format!("{list} port {port} outside range"))?;
            if std::mem::replace(&mut seen[i], true) {
                return Err(format!("port {port} twice in the {list} list"));
            }
            Ok(i)
        };
        let mut in_free = vec![false; n];
        for &port in &self.free {
            once(&mut in_free, port, "free")?;
        }
        let mut in_busy = vec![false; n];
        for &(until, port) in &self.busy {
            let i = once(&mut in_busy, port, "busy")?;
            match self.states[i] {
                State::Busy { until: u, .. } if u == until => {}
                ref other => return Err(format!("busy list has port {port} in state {other:?}")),
            }
        }
        let (mut usable, mut in_use) = (0u32, 0u32);
        for (i, state) in self.states.iter().enumerate() {
            let port = self.range.port_at(i).ok_or("index outside range")?;
            if *state != State::Unusable {
                usable += 1;
            }
            match state {
                State::Free if !in_free[i] => {
                    return Err(format!("free port {port} not in the free list"));
                }
                State::Free => {}
                _ if in_free[i] => {
                    return Err(format!("port {port} in the free list but {state:?}"));
                }
                State::Busy { .. } if !in_busy[i] => {
                    return Err(format!("busy port {port} not in the busy list"));
                }
                State::Binding(t) => {
                    in_use += 1;
                    match self.binding.get(t) {
                        Some((p, w, _)) if *p == port && w.ticket == *t => {}
                        _ => return Err(format!("port {port} binding for {t:?} without a record")),
                    }
                }
                State::Leased { .. } => in_use += 1,
                State::Unusable => {
                    if !self.unusable.iter().any(|(p, _)| *p == port) {
                        return Err(format!("port {port} unusable without a reason"));
                    }
                }
                State::Busy { .. } => {}
            }
        }
        if usable != self.metrics.usable {
            return Err(format!(
                "{usable} usable ports, metrics say {}",
                self.metrics.usable
            ));
        }
        if in_use != self.in_use {
            return Err(format!(
                "{in_use} ports in use, counter says {}",
                self.in_use
            ));
        }
        if self.in_use > self.metrics.high_water {
            return Err("high-water mark below use".into());
        }
        if self.binding.len() as u32 > self.in_use {
            return Err("more bindings than ports in use".into());
        }
        for (t, (port, _, _)) in &self.binding {
            let i = self
                .range
                .index_of(*port)
                .ok_or("binding port outside range")?;
            if self.states[i] != State::Binding(*t) {
                return Err(format!(
                    "binding record {t:?} → {port} but state {:?}",
                    self.states[i]
                ));
            }
        }
        let mut previous: Option<Ticket> = None;
        for w in &self.waiters {
            if previous.is_some_and(|p| p >= w.ticket) {
                return Err("waiters not in ticket order".into());
            }
            if self.binding.contains_key(&w.ticket) {
                return Err(format!("{:?} both waiting and binding", w.ticket));
            }
            previous = Some(w.ticket);
        }
        if !self.holds.is_empty() && self.proto != Transport::Tcp {
            return Err("TIME_WAIT holds on a UDP pool".into());
        }
        // Work conservation: no waiter could use a free port.
        if let Some(now) = self.last_now {
            for w in &self.waiters {
                if let Some(port) = self.free.iter().find(|&&p| self.eligible(p, w.dest, now)) {
                    return Err(format!(
                        "{:?} waits although port {port} is free for it",
                        w.ticket
                    ));
                }
            }
            if let Some(&(until, port)) = self.busy.iter().find(|&&(u, _)| u <= now) {
                return Err(format!(
                    "port {port} still busy after its retry time {until:?}"
                ));
            }
        }
        let busy_queue = !self.waiters.is_empty() || !self.binding.is_empty();
        if (!self.waiters.is_empty() && self.episode.is_none())
            || (self.episode.is_some() && !busy_queue)
        {
            return Err(format!(
                "episode open: {}, waiters: {}, binding: {}",
                self.episode.is_some(),
                self.waiters.len(),
                self.binding.len()
            ));
        }
        Ok(())
    }

    /// The core's "now": time never goes backwards for it, so a caller passing an older
    /// instant (threads that read the clock, then raced for the lock) gets the latest
    /// caller's. Every operation must use the returned instant, not its argument: with the
    /// argument, a port whose retry time lies between the two stayed busy after it (the
    /// "still busy after its retry time" invariant failure seen under load, issue 10).
    fn observe(&mut self, now: Instant) -> Instant {
        let now = self.last_now.map_or(now, |t| t.max(now));
        self.last_now = Some(now);
        now
    }

    fn eligible(&self, port: u16, dest: Option<Dest>, now: Instant) -> bool {
        match dest {
            None => true,
            Some(dest) => !self.is_held(port, dest, now),
        }
    }

    fn set_state(&mut self, port: u16, state: State) {
        let Some(i) = self.range.index_of(port) else {
            return;
        };
        let was_in_use = matches!(self.states[i], State::Binding(_) | State::Leased { .. });
        let is_in_use = matches!(state, State::Binding(_) | State::Leased { .. });
        match (was_in_use, is_in_use) {
            (false, true) => {
                self.in_use += 1;
                self.metrics.high_water = self.metrics.high_water.max(self.in_use);
            }
            (true, false) => self.in_use -= 1,
            _ => {}
        }
        self.states[i] = state;
    }

    fn requeue(&mut self, waiter: Waiter) {
        let pos = self
            .waiters
            .iter()
            .position(|w| w.ticket > waiter.ticket)
            .unwrap_or(self.waiters.len());
        self.waiters.insert(pos, waiter);
    }

    fn refresh(&mut self, now: Instant) {
        if self.busy.iter().any(|&(until, _)| until <= now) {
            let mut expired: Vec<(Instant, u16)> = Vec::new();
            self.busy.retain(|&entry| {
                if entry.0 <= now {
                    expired.push(entry);
                    false
                } else {
                    true
                }
            });
            expired.sort();
            for (_, port) in expired {
                self.set_state(port, State::Free);
                self.free.push_back(port);
            }
        }
    }

    /// Serve waiters, oldest first, while free ports remain.
    fn assign(&mut self, now: Instant) {
        self.refresh(now);
        let mut i = 0;
        while i < self.waiters.len() && !self.free.is_empty() {
            let dest = self.waiters[i].dest;
            let pick = match dest {
                None => Some(0),
                Some(dest) => self.pick_for(dest, now),
            };
            let Some(slot) = pick else {
                i += 1;
                continue;
            };
            let Some(port) = self.free.remove(slot) else {
                break;
            };
            let Some(waiter) = self.waiters.remove(i) else {
                break;
            };
            self.set_state(port, State::Binding(waiter.ticket));
            let waited = now.saturating_duration_since(waiter.since);
            self.grants.push_back(Grant {
                ticket: waiter.ticket,
                port,
                waited,
                serial: self.grants_issued,
            });
            self.grants_issued += 1;
            self.binding.insert(waiter.ticket, (port, waiter, waited));
        }
    }

    /// The least recently used free port not held from `dest`; prunes expired holds.
    fn pick_for(&mut self, dest: Dest, now: Instant) -> Option<usize> {
        let mut found = None;
        for (slot, &port) in self.free.iter().enumerate() {
            match self.holds.get_mut(&port) {
                None => {
                    found = Some(slot);
                    break;
                }
                Some(holds) => {
                    holds.retain(|&(_, until)| until > now);
                    let blocked = holds.iter().any(|&(d, _)| d == dest);
                    if holds.is_empty() {
                        self.holds.remove(&port);
                    }
                    if !blocked {
                        found = Some(slot);
                        break;
                    }
                }
            }
        }
        found
    }

    /// Episode bookkeeping and the debug invariant check after every change.
    fn after_change(&mut self, now: Instant) {
        let waiting = self.waiters.len() as u32;
        if self.episode.is_none() && waiting > 0 {
            self.metrics.episodes += 1;
            self.episode = Some(EpisodeState {
                start: now,
                waiters: 0,
                counted_upto: 0,
                peak_waiting: 0,
                total_wait: Duration::ZERO,
                longest_wait: Duration::ZERO,
                timeouts: 0,
                busy_elsewhere: 0,
            });
            self.events.push_back(PoolEvent::Exhausted(self.shortage()));
        }
        if let Some(ep) = self.episode.as_mut() {
            // Waiters are in ticket order: the ones not counted yet are at the back.
            for w in self.waiters.iter().rev() {
                if w.ticket.0 < ep.counted_upto {
                    break;
                }
                ep.waiters += 1;
            }
            if let Some(last) = self.waiters.back() {
                ep.counted_upto = ep.counted_upto.max(last.ticket.0 + 1);
            }
            ep.peak_waiting = ep.peak_waiting.max(waiting);
        }
        // The episode lasts until the last waiter's bind is through, so that its wait
        // counts in the episode.
        if waiting == 0
            && self.binding.is_empty()
            && let Some(ep) = self.episode.take()
        {
            self.events.push_back(PoolEvent::Recovered(Episode {
                proto: self.proto,
                range: self.range,
                duration: now.saturating_duration_since(ep.start),
                usable: self.metrics.usable,
                unusable: self.unusable.clone(),
                waiters: ep.waiters,
                peak_waiting: ep.peak_waiting,
                total_wait: ep.total_wait,
                longest_wait: ep.longest_wait,
                timeouts: ep.timeouts,
                busy_elsewhere: ep.busy_elsewhere,
            }));
        }
        self.debug_check();
    }
}

#[cfg(test)]
mod tests;
