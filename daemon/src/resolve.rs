//! The peer's name and amandad's forward-confirmed reverse DNS check (spec §4.1 steps 1-2),
//! answered off the event loop.
//!
//! The name is what `getnameinfo` gives (the numeric address when reverse DNS fails); the
//! check then resolves that name with a canonical name and requires the name to be a
//! case-insensitive prefix of the canonical name and one of its addresses to be the peer's.
//! The error texts are amandad's.
//!
//! Those lookups block (seconds, with an unreachable name server), so they run on a small
//! pool of threads ([`Names`]): the loop asks, gets the cached answer or "pending", and is
//! woken when the answer arrives. The queues are bounded (a flood of new source addresses
//! gets "busy", never a thread or an unbounded queue) and have two lanes: peers on a
//! reserved source port (what auth bsd requires of an Amanda server, and what an
//! unprivileged user cannot send from) and addresses that already made an accepted request
//! go before everyone else, and with two threads or more one thread serves only them, so a
//! name server that never answers holds up the flood, not the servers. The cache
//! ([`NameCache`]) is bounded and
//! drops the least recently used entry, never the whole table; failures are cached too
//! (negative caching), and the addresses of servers that made accepted requests are kept
//! apart from the flood and served while a refresh is under way.
//!
//! What this module must not do: decide what a failure means (the UDP path drops the
//! datagram silently, the bsdtcp path sends a refusal frame; that is the loop's call), or
//! block the loop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CStr;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, select_biased, unbounded};

/// The result of resolving one peer address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerName {
    /// The name amandad uses for the peer (reverse DNS or the numeric address).
    pub name: String,
    /// `Err(text)` when the forward-confirmed check fails, with amandad's text (the port in
    /// the text is the one of the lookup that filled the cache).
    pub check: Result<(), String>,
}

impl PeerName {
    /// No reverse name, or a failed check: cached for the negative time.
    fn is_negative(&self, ip: IpAddr) -> bool {
        self.check.is_err() || self.name == ip.to_string()
    }
}

/// The cache's bounds and times (settings `name_cache_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Entries in all (least recently used dropped first).
    pub entries: usize,
    /// How long a name is reused.
    pub ttl: Duration,
    /// How long a failure (no reverse name, failed check) is reused.
    pub negative_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            entries: 4096,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
        }
    }
}

/// How long a trusted entry may be served past its time while a refresh is pending.
const STALE_LIMIT: Duration = Duration::from_secs(3600);

/// What the cache knows about an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cached {
    /// A fresh answer.
    Fresh(PeerName),
    /// The answer of a server that made accepted requests, past its time: use it, and
    /// refresh it.
    Stale(PeerName),
    /// Nothing usable.
    Miss,
}

struct Entry {
    name: PeerName,
    expires: Instant,
    trusted: bool,
    /// Position in the recency order.
    tick: u64,
}

/// A bounded LRU cache of peer names with positive and negative lifetimes, and a protected
/// share for the addresses of servers that made accepted requests (a flood of new
/// addresses evicts other flood entries, not them). Sans-IO: time is an argument.
pub struct NameCache {
    cfg: CacheConfig,
    map: HashMap<IpAddr, Entry>,
    /// Recency order of untrusted and trusted entries, least recent first.
    order: BTreeMap<u64, IpAddr>,
    trusted_order: BTreeMap<u64, IpAddr>,
    tick: u64,
}

impl NameCache {
    pub fn new(cfg: CacheConfig) -> NameCache {
        NameCache {
            cfg,
            map: HashMap::new(),
            order: BTreeMap::new(),
            trusted_order: BTreeMap::new(),
            tick: 0,
        }
    }

    /// At most this many entries are trusted (an eighth of the cache).
    fn trusted_cap(&self) -> usize {
        (self.cfg.entries / 8).max(1)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn touch(&mut self, ip: IpAddr) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.map.get_mut(&ip) {
            let order = if e.trusted {
                &mut self.trusted_order
            } else {
                &mut self.order
            };
            order.remove(&e.tick);
            order.insert(tick, ip);
            e.tick = tick;
        }
    }

    /// The entry for `ip`, marked as recently used.
    pub fn get(&mut self, now: Instant, ip: IpAddr) -> Cached {
        let Some(e) = self.map.get(&ip) else {
            return Cached::Miss;
        };
        let result = if now < e.expires {
            Cached::Fresh(e.name.clone())
        } else if e.trusted && now < e.expires + STALE_LIMIT {
            Cached::Stale(e.name.clone())
        } else {
            Cached::Miss
        };
        if result == Cached::Miss {
            self.remove(ip);
        } else {
            self.touch(ip);
        }
        result
    }

    fn remove(&mut self, ip: IpAddr) {
        if let Some(e) = self.map.remove(&ip) {
            if e.trusted {
                self.trusted_order.remove(&e.tick);
            } else {
                self.order.remove(&e.tick);
            }
        }
    }

    /// Stores an answer (keeping the entry's trust).
    pub fn insert(&mut self, now: Instant, ip: IpAddr, name: PeerName) {
        let ttl = if name.is_negative(ip) {
            self.cfg.negative_ttl
        } else {
            self.cfg.ttl
        };
        let trusted = self.map.get(&ip).is_some_and(|e| e.trusted);
        self.remove(ip);
        if !trusted {
            // Make room among the untrusted entries first; trusted ones only if there are
            // no others.
            while self.map.len() >= self.cfg.entries {
                let victim = self
                    .order
                    .first_key_value()
                    .or_else(|| self.trusted_order.first_key_value())
                    .map(|(_, ip)| *ip);
                match victim {
                    Some(v) => self.remove(v),
                    None => break,
                }
            }
        }
        self.tick += 1;
        let tick = self.tick;
        if trusted {
            self.trusted_order.insert(tick, ip);
        } else {
            self.order.insert(tick, ip);
        }
        self.map.insert(
            ip,
            Entry {
                name,
                expires: now + ttl,
                trusted,
                tick,
            },
        );
    }

    /// Marks `ip` as a server that made an accepted request: it moves to the protected
    /// share (the least recently used trusted entry goes back to the common one when full).
    pub fn trust(&mut self, ip: IpAddr) {
        let Some(e) = self.map.get(&ip) else { return };
        if e.trusted {
            self.touch(ip);
            return;
        }
        if self.trusted_order.len() >= self.trusted_cap()
            && let Some((_, old)) = self.trusted_order.pop_first()
            && let Some(o) = self.map.get_mut(&old)
        {
            o.trusted = false;
            self.tick += 1;
            o.tick = self.tick;
            self.order.insert(self.tick, old);
        }
        if let Some(e) = self.map.get_mut(&ip) {
            self.order.remove(&e.tick);
            e.trusted = true;
            self.tick += 1;
            e.tick = self.tick;
            self.trusted_order.insert(self.tick, ip);
        }
    }

    /// Whether `ip` is in the protected share.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.map.get(&ip).is_some_and(|e| e.trusted)
    }
}

/// How to look a peer up (the real `getnameinfo`/`getaddrinfo`, or a stand-in in tests).
pub type LookupFn = Arc<dyn Fn(SocketAddr) -> PeerName + Send + Sync>;

/// The real lookup: reverse name, then the forward check unless `dns_check` is off.
pub fn system_lookup(dns_check: bool) -> LookupFn {
    Arc::new(move |peer: SocketAddr| {
        let name = reverse_name(peer);
        let check = if dns_check {
            forward_confirm(&name, peer)
        } else {
            Ok(())
        };
        PeerName { name, check }
    })
}

/// The pool's size and queue (settings `resolver_threads`, `resolver_queue`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    pub threads: usize,
    /// Lookups waiting, per lane.
    pub queue: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            threads: 2,
            queue: 256,
        }
    }
}

/// Which lane a lookup waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Reserved source ports, and known servers' refreshes.
    Urgent,
    /// Everyone else.
    Normal,
}

impl Lane {
    /// The lane of a peer: an Amanda server sends from a reserved port; a flood from an
    /// unprivileged user cannot.
    pub fn of(peer: SocketAddr) -> Lane {
        if peer.port() < 1024 {
            Lane::Urgent
        } else {
            Lane::Normal
        }
    }
}

/// The answer to [`Names::lookup`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Known: go on with this.
    Known(PeerName),
    /// A lookup is under way; the answer comes through [`Names::take_results`].
    Pending,
    /// The queue is full: the caller drops the packet or closes the connection.
    Busy,
}

/// The names of peers, for the loop: the cache, the lookup threads and what is in flight.
pub struct Names {
    cache: NameCache,
    urgent: Sender<SocketAddr>,
    normal: Sender<SocketAddr>,
    results: Receiver<(SocketAddr, PeerName)>,
    in_flight: HashSet<IpAddr>,
}

impl Names {
    /// Starts `pool.threads` lookup threads (the first of two or more serves the urgent lane
    /// only); each answer wakes the loop through `wake`.
    pub fn new(
        cache: CacheConfig,
        pool: PoolConfig,
        lookup: LookupFn,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Names> {
        let (urgent, urgent_rx) = bounded::<SocketAddr>(pool.queue.max(1));
        let (normal, normal_rx) = bounded::<SocketAddr>(pool.queue.max(1));
        let (out_tx, results) = unbounded();
        let threads = pool.threads.max(1);
        for i in 0..threads {
            let urgent_only = i == 0 && threads > 1;
            let (urgent_rx, normal_rx) = (urgent_rx.clone(), normal_rx.clone());
            let out_tx: Sender<(SocketAddr, PeerName)> = out_tx.clone();
            let (lookup, wake) = (lookup.clone(), wake.clone());
            std::thread::Builder::new()
                .name(format!("amandad-resolver-{i}"))
                .spawn(move || {
                    loop {
                        let peer = if urgent_only {
                            urgent_rx.recv()
                        } else {
                            select_biased! {
                                recv(urgent_rx) -> m => m,
                                recv(normal_rx) -> m => m,
                            }
                        };
                        // Both senders gone: the daemon is shutting down.
                        let Ok(peer) = peer else { return };
                        let name = lookup(peer);
                        if out_tx.send((peer, name)).is_err() {
                            return;
                        }
                        wake();
                    }
                })?;
        }
        Ok(Names {
            cache: NameCache::new(cache),
            urgent,
            normal,
            results,
            in_flight: HashSet::new(),
        })
    }

    /// The name of `peer`: from the cache, or "pending" after queueing a lookup in `lane`
    /// (once per address), or "busy". A trusted entry past its time is returned and
    /// refreshed.
    pub fn lookup(&mut self, now: Instant, peer: SocketAddr, lane: Lane) -> Lookup {
        let ip = unmap(peer.ip());
        let peer = SocketAddr::new(ip, peer.port());
        let trusted = self.cache.is_trusted(ip);
        match self.cache.get(now, ip) {
            Cached::Fresh(n) => Lookup::Known(n),
            Cached::Stale(n) => {
                let _ = self.submit(peer, Lane::Urgent);
                Lookup::Known(n)
            }
            Cached::Miss => self.submit(peer, if trusted { Lane::Urgent } else { lane }),
        }
    }

    fn submit(&mut self, peer: SocketAddr, lane: Lane) -> Lookup {
        if self.in_flight.contains(&peer.ip()) {
            return Lookup::Pending;
        }
        let tx = match lane {
            Lane::Urgent => &self.urgent,
            Lane::Normal => &self.normal,
        };
        match tx.try_send(peer) {
            Ok(()) => {
                self.in_flight.insert(peer.ip());
                Lookup::Pending
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Lookup::Busy,
        }
    }

    /// The answers that arrived, now in the cache.
    pub fn take_results(&mut self, now: Instant) -> Vec<(IpAddr, PeerName)> {
        let mut out = Vec::new();
        while let Ok((peer, name)) = self.results.try_recv() {
            let ip = peer.ip();
            self.in_flight.remove(&ip);
            self.cache.insert(now, ip, name.clone());
            out.push((ip, name));
        }
        out
    }

    /// `ip` made an accepted request: keep its name apart from the flood.
    pub fn trust(&mut self, ip: IpAddr) {
        self.cache.trust(unmap(ip));
    }

    /// Lookups queued or running.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

// Amanda's name check and address un-mapping are shared with auth ssl's certificate checks.
pub use ssl::names::{forward_confirm, unmap};

/// `getnameinfo` without `NI_NAMEREQD`: the host name, or the numeric address.
pub fn reverse_name(peer: SocketAddr) -> String {
    let storage = socket2::SockAddr::from(peer);
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: storage holds a valid sockaddr of the given length; host is a writable buffer
    // of the given size; no service buffer is requested.
    let rc = unsafe {
        libc::getnameinfo(
            storage.as_ptr().cast(),
            storage.len(),
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            0,
        )
    };
    if rc != 0 {
        return peer.ip().to_string();
    }
    // SAFETY: on success getnameinfo wrote a NUL-terminated string into host.
    unsafe { CStr::from_ptr(host.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_localhost_and_confirms() {
        // forward_confirm's own tests are in ssl::names.
        let peer: SocketAddr = "127.0.0.1:516".parse().unwrap();
        assert_eq!(reverse_name(peer), "localhost");
        assert_eq!(forward_confirm("localhost", peer), Ok(()));
    }

    fn name(n: &str) -> PeerName {
        PeerName {
            name: n.into(),
            check: Ok(()),
        }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0000 + n))
    }

    fn small_cache() -> NameCache {
        NameCache::new(CacheConfig {
            entries: 16,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(10),
        })
    }

    /// A small cache that knows 127.0.0.1 as `server` and trusts it, and when it learnt it.
    fn small_cache_trusting_server() -> (NameCache, Instant) {
        let mut c = small_cache();
        let t0 = Instant::now();
        c.insert(t0, ip(1), name("server"));
        c.trust(ip(1));
        (c, t0)
    }

    #[test]
    fn answers_live_for_their_ttl_and_failures_for_the_negative_ttl() {
        let mut c = small_cache();
        let t0 = Instant::now();
        c.insert(t0, ip(1), name("server"));
        // No reverse name: the numeric address, cached for the negative time only.
        c.insert(t0, ip(2), name("127.0.0.2"));
        let s = Duration::from_secs;
        assert_eq!(c.get(t0 + s(9), ip(2)), Cached::Fresh(name("127.0.0.2")));
        assert_eq!(c.get(t0 + s(11), ip(2)), Cached::Miss);
        assert_eq!(c.get(t0 + s(59), ip(1)), Cached::Fresh(name("server")));
        assert_eq!(c.get(t0 + s(61), ip(1)), Cached::Miss);
    }

    /// Issue 10: the old cache was dropped whole at 4096 entries; a flood of new addresses
    /// must only push out the least recently used entries, never a trusted server's.
    #[test]
    fn a_flood_of_new_addresses_evicts_lru_entries_not_trusted_servers() {
        let (mut c, t0) = small_cache_trusting_server();
        c.insert(t0, ip(2), name("recent"));
        for n in 100..10_100 {
            c.insert(
                t0,
                ip(n),
                name(&format!("127.0.{}.{}", n >> 8 & 255, n & 255)),
            );
            if n % 4 == 0 {
                // ip(2) is used all along: it stays.
                assert!(matches!(c.get(t0, ip(2)), Cached::Fresh(_)));
            }
            assert!(c.len() <= 16);
        }
        assert_eq!(c.get(t0, ip(1)), Cached::Fresh(name("server")));
        assert!(matches!(c.get(t0, ip(2)), Cached::Fresh(_)));
        assert_eq!(
            c.get(t0, ip(100)),
            Cached::Miss,
            "least recently used went first"
        );
        assert!(matches!(c.get(t0, ip(10_099)), Cached::Fresh(_)));
    }

    #[test]
    fn a_trusted_entry_is_served_stale_while_it_is_refreshed() {
        let (mut c, t0) = small_cache_trusting_server();
        let later = t0 + Duration::from_secs(120);
        assert_eq!(c.get(later, ip(1)), Cached::Stale(name("server")));
        c.insert(later, ip(1), name("server2"));
        assert!(c.is_trusted(ip(1)), "a refresh keeps the trust");
        assert_eq!(c.get(later, ip(1)), Cached::Fresh(name("server2")));
        assert_eq!(c.get(later + STALE_LIMIT * 2, ip(1)), Cached::Miss);
    }

    #[test]
    fn trusted_entries_are_bounded_too() {
        let mut c = small_cache();
        let t0 = Instant::now();
        for n in 0..10 {
            c.insert(t0, ip(n), name("s"));
            c.trust(ip(n));
        }
        let trusted = (0..10).filter(|n| c.is_trusted(ip(*n))).count();
        assert_eq!(trusted, 2, "an eighth of 16");
        assert!(c.is_trusted(ip(9)) && c.is_trusted(ip(8)));
    }

    fn wait_results(names: &mut Names, want: usize) -> Vec<(IpAddr, PeerName)> {
        let until = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < want && Instant::now() < until {
            got.extend(names.take_results(Instant::now()));
            std::thread::sleep(Duration::from_millis(5));
        }
        got
    }

    /// A name server that does not answer until the test opens the gate (at the latest when
    /// the gate is dropped, so no lookup thread outlives its test).
    struct Gate(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

    impl Gate {
        fn open(&self) {
            *self.0.0.lock().unwrap() = true;
            self.0.1.notify_all();
        }
    }

    impl Drop for Gate {
        fn drop(&mut self) {
            self.open();
        }
    }

    /// A resolver whose lookups of every address but 127.0.0.1 wait until the gate opens.
    fn gated(threads: usize, queue: usize) -> (Gate, Names) {
        let gate = Gate(Arc::default());
        let g = gate.0.clone();
        let lookup: LookupFn = Arc::new(move |peer: SocketAddr| {
            if peer.ip() != ip(1) {
                let (open, opened) = &*g;
                let _open = opened.wait_while(open.lock().unwrap(), |o| !*o).unwrap();
            }
            name(&peer.ip().to_string())
        });
        let names = Names::new(
            CacheConfig::default(),
            PoolConfig { threads, queue },
            lookup,
            Arc::new(|| {}),
        )
        .unwrap();
        (gate, names)
    }

    /// Asks for 127.0.0.2 to 127.0.0.19 (from `port`) on the normal lane.
    fn queue_normal_lookups(names: &mut Names, t0: Instant, port: u16) {
        for n in 2..20 {
            names.lookup(t0, SocketAddr::new(ip(n), port), Lane::Normal);
        }
    }

    /// Issue 10: getnameinfo/getaddrinfo ran on the event loop for every new address. Now a
    /// lookup that takes seconds costs the caller nothing, a flood of new addresses gets
    /// "busy" beyond the bounded queue, and a known server's TCP lookup is not stuck behind
    /// them.
    #[test]
    fn slow_lookups_never_block_the_caller_and_the_queue_is_bounded() {
        let (gate, mut names) = gated(2, 8);
        let t0 = Instant::now();
        let started = Instant::now();
        let mut busy = 0;
        for n in 2..10_002 {
            match names.lookup(t0, SocketAddr::new(ip(n), 700), Lane::Normal) {
                Lookup::Pending => {}
                Lookup::Busy => busy += 1,
                Lookup::Known(_) => panic!("nothing is known yet"),
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "10,000 lookups cost the loop {:?}",
            started.elapsed()
        );
        assert!(busy >= 10_000 - 8 - 2, "bounded queue: {busy} busy");
        assert!(names.in_flight() <= 8 + 2);
        // The same address again is not queued twice.
        assert_eq!(
            names.lookup(t0, SocketAddr::new(ip(2), 701), Lane::Normal),
            Lookup::Pending
        );
        gate.open();
        let pending = names.in_flight();
        let got = wait_results(&mut names, pending);
        assert!(!got.is_empty());
        assert_eq!(names.in_flight(), 0);
        assert_eq!(
            names.lookup(Instant::now(), SocketAddr::new(ip(2), 702), Lane::Normal),
            Lookup::Known(name("127.0.0.2"))
        );
    }

    /// A name server that never answers holds up every thread that serves the normal lane;
    /// a server on a reserved port is still answered at once.
    #[test]
    fn with_two_threads_a_stuck_normal_lane_never_delays_the_urgent_one() {
        let (_gate, mut names) = gated(2, 4);
        let t0 = Instant::now();
        queue_normal_lookups(&mut names, t0, 40_000);
        let peer = SocketAddr::new(ip(1), 700);
        assert_eq!(Lane::of(peer), Lane::Urgent);
        assert_eq!(names.lookup(t0, peer, Lane::of(peer)), Lookup::Pending);
        let got = wait_results(&mut names, 1);
        assert_eq!(got.first().map(|g| g.0), Some(ip(1)), "{got:?}");
    }

    #[test]
    fn urgent_lookups_overtake_the_normal_lane() {
        let (gate, mut names) = gated(1, 4);
        let t0 = Instant::now();
        queue_normal_lookups(&mut names, t0, 700);
        // The one thread is stuck on the first normal lookup; free it, and the urgent one
        // comes next although four normal ones were queued before it.
        assert_eq!(
            names.lookup(t0, SocketAddr::new(ip(1), 700), Lane::Urgent),
            Lookup::Pending
        );
        gate.open();
        let got = wait_results(&mut names, 2);
        assert!(
            got.iter().take(2).any(|g| g.0 == ip(1)),
            "the urgent lookup is among the first two answers: {got:?}"
        );
    }
}
