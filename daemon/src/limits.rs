//! The loop's bounds as plain bookkeeping, with time as an argument: which bsdtcp control
//! connections have not yet made an accepted request and until when they may wait
//! ([`Admission`]), and one budget for all partial input ([`InputBudget`]).
//!
//! Admission beyond the cap closes the oldest unauthenticated connection rather than
//! refusing the new one: refusing would let anyone who holds `cap` idle connections lock
//! every server out until the timeout, over and over; evicting the oldest means a new
//! connection always gets in and lives at least until `cap` more arrive, while a
//! well-behaved server sends its REQ at once and is out of reach as soon as it is accepted.
//! Idle connections (nothing read yet, name known) go before busy ones (a name lookup or a
//! request under way).
//!
//! What this module must not do: touch sockets or decide what closing means (the loop's
//! job), or grow with anything but the connections and holders it is told about.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What [`Admission::admit`] decided for a new control connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Room for it.
    Accept,
    /// Accepted; close this older unauthenticated connection to make room.
    Evict(u64),
    /// Every slot holds an authenticated connection: close the new one.
    Refuse,
}

/// The cap on control connections and the deadline of those not yet authenticated.
#[derive(Debug)]
pub struct Admission {
    cap: usize,
    timeout: Duration,
    /// Every admitted control connection.
    all: HashSet<u64>,
    /// Not yet authenticated: id -> deadline. Ids grow with time, so the first is the oldest
    /// and has the earliest deadline.
    unauth: BTreeMap<u64, Instant>,
    /// The unauthenticated ones that have done nothing yet (evicted first).
    idle: BTreeSet<u64>,
}

impl Admission {
    pub fn new(cap: usize, timeout: Duration) -> Admission {
        Admission {
            cap: cap.max(1),
            timeout,
            all: HashSet::new(),
            unauth: BTreeMap::new(),
            idle: BTreeSet::new(),
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Control connections admitted and not closed.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Decides on connection `id` (larger than every earlier id), accepted at `now`. An
    /// evicted connection is forgotten here; the caller closes it.
    pub fn admit(&mut self, now: Instant, id: u64) -> Admit {
        let mut decision = Admit::Accept;
        if self.all.len() >= self.cap {
            let victim = self
                .idle
                .first()
                .or_else(|| self.unauth.keys().next())
                .copied();
            match victim {
                Some(v) => {
                    self.closed(v);
                    decision = Admit::Evict(v);
                }
                None => return Admit::Refuse,
            }
        }
        self.all.insert(id);
        self.unauth.insert(id, now + self.timeout);
        self.idle.insert(id);
        decision
    }

    /// The connection is doing something (bytes arrived, or its name is being looked up):
    /// it is no longer among the first to go.
    pub fn busy(&mut self, id: u64) {
        self.idle.remove(&id);
    }

    /// The connection made an accepted request: no deadline, never evicted.
    pub fn authenticated(&mut self, id: u64) {
        self.unauth.remove(&id);
        self.idle.remove(&id);
    }

    pub fn is_unauthenticated(&self, id: u64) -> bool {
        self.unauth.contains_key(&id)
    }

    /// The connection is gone.
    pub fn closed(&mut self, id: u64) {
        self.all.remove(&id);
        self.unauth.remove(&id);
        self.idle.remove(&id);
    }

    /// The oldest unauthenticated connection (to make room when descriptors run out).
    pub fn oldest_unauthenticated(&self) -> Option<u64> {
        self.idle
            .first()
            .or_else(|| self.unauth.keys().next())
            .copied()
    }

    /// Removes and returns the connections whose deadline has passed.
    pub fn expired(&mut self, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some((&id, &deadline)) = self.unauth.first_key_value() {
            if deadline > now {
                break;
            }
            self.closed(id);
            out.push(id);
        }
        out
    }

    /// The next deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.unauth.values().next().copied()
    }
}

/// Who holds partial input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Holder {
    /// A connection assembling a frame.
    Conn(u64),
    /// A datagram waiting for its sender's name.
    Datagram(IpAddr),
}

/// One budget for all partial input. When a holder's growth passes it, the largest holder
/// (the oldest among equals) is the one to close or drop.
#[derive(Debug)]
pub struct InputBudget {
    limit: usize,
    total: usize,
    /// Holder -> (bytes, order it started holding).
    held: HashMap<Holder, (usize, u64)>,
    /// Largest last; among equal sizes the oldest last.
    by_size: BTreeSet<(usize, Reverse<u64>, Holder)>,
    seq: u64,
}

impl InputBudget {
    pub fn new(limit: usize) -> InputBudget {
        InputBudget {
            limit,
            total: 0,
            held: HashMap::new(),
            by_size: BTreeSet::new(),
            seq: 0,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Records that `holder` now holds `bytes` (0 forgets it).
    pub fn set(&mut self, holder: Holder, bytes: usize) {
        let since = match self.held.remove(&holder) {
            Some((old, since)) => {
                self.by_size.remove(&(old, Reverse(since), holder));
                self.total -= old;
                since
            }
            None => {
                self.seq += 1;
                self.seq
            }
        };
        if bytes > 0 {
            self.held.insert(holder, (bytes, since));
            self.by_size.insert((bytes, Reverse(since), holder));
            self.total += bytes;
        }
    }

    /// Whether `extra` more bytes fit.
    pub fn fits(&self, extra: usize) -> bool {
        self.total.saturating_add(extra) <= self.limit
    }

    pub fn over(&self) -> bool {
        self.total > self.limit
    }

    /// The holder to give up first: the largest, the oldest among equals.
    pub fn victim(&self) -> Option<Holder> {
        self.by_size.last().map(|(_, _, h)| *h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);

    /// Issue 10: no cap and no idle timeout (400 idle connections starved a fresh noop).
    /// Past the cap the oldest idle unauthenticated connection goes, so the newest
    /// (a server about to send its REQ) always gets in.
    #[test]
    fn over_the_cap_the_oldest_idle_unauthenticated_connection_goes() {
        let t0 = Instant::now();
        let mut a = Admission::new(3, T);
        assert_eq!(a.admit(t0, 1), Admit::Accept);
        assert_eq!(a.admit(t0, 2), Admit::Accept);
        assert_eq!(a.admit(t0, 3), Admit::Accept);
        a.busy(1); // its name is being looked up
        assert_eq!(a.admit(t0, 4), Admit::Evict(2), "idle before busy");
        assert_eq!(a.admit(t0, 5), Admit::Evict(3));
        assert_eq!(a.admit(t0, 6), Admit::Evict(4));
        a.authenticated(6);
        a.authenticated(5);
        assert_eq!(
            a.admit(t0, 7),
            Admit::Evict(1),
            "busy ones go when no idle one is left"
        );
        a.authenticated(7);
        assert_eq!(
            a.admit(t0, 8),
            Admit::Refuse,
            "authenticated ones are never evicted"
        );
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn five_thousand_idle_connections_never_push_out_a_fresh_one_within_cap_arrivals() {
        let t0 = Instant::now();
        let mut a = Admission::new(256, T);
        let mut evicted = Vec::new();
        for id in 1..=5000 {
            if let Admit::Evict(v) = a.admit(t0, id) {
                evicted.push(v);
            }
        }
        assert_eq!(a.len(), 256);
        // The server connects, and 255 idle ones arrive after it before it is read.
        assert_eq!(a.admit(t0, 5001), Admit::Evict(4745));
        for id in 5002..5002 + 255 {
            a.admit(t0, id);
        }
        assert!(a.is_unauthenticated(5001), "still there");
        a.authenticated(5001);
        for id in 6000..7000 {
            a.admit(t0, id);
        }
        assert!(!a.is_unauthenticated(5001));
        assert_eq!(a.len(), 256);
        assert_eq!(evicted.len(), 5000 - 256);
    }

    #[test]
    fn unauthenticated_connections_expire_in_order() {
        let t0 = Instant::now();
        let mut a = Admission::new(10, T);
        a.admit(t0, 1);
        a.admit(t0 + Duration::from_secs(5), 2);
        a.admit(t0 + Duration::from_secs(6), 3);
        a.authenticated(2);
        assert_eq!(a.deadline(), Some(t0 + T));
        assert!(a.expired(t0 + Duration::from_secs(29)).is_empty());
        assert_eq!(a.expired(t0 + Duration::from_secs(40)), vec![1, 3]);
        assert_eq!(a.deadline(), None);
        assert_eq!(a.len(), 1, "the authenticated one stays");
    }

    /// Issue 10: 200 connections holding half a 4 MiB frame each took 408 MiB. One budget
    /// for all partial input; past it the largest holder goes.
    #[test]
    fn past_the_budget_the_largest_holder_goes_first() {
        let mut b = InputBudget::new(16 << 20);
        let mut closed = Vec::new();
        for id in 0..200u64 {
            b.set(Holder::Conn(id), (4 << 20) - 100);
            while b.over() {
                let v = b.victim().unwrap();
                b.set(v, 0);
                closed.push(v);
            }
            assert!(b.total() <= b.limit());
        }
        assert_eq!(closed.len(), 196, "four such frames fit in 16 MiB");
        // A small holder (a server's REQ half read) is never the one chosen.
        let mut b = InputBudget::new(10_000);
        b.set(Holder::Datagram("127.0.0.1".parse().unwrap()), 300);
        b.set(Holder::Conn(1), 6000);
        b.set(Holder::Conn(2), 6000);
        assert_eq!(
            b.victim(),
            Some(Holder::Conn(1)),
            "the oldest of the largest"
        );
        b.set(Holder::Conn(1), 0);
        assert!(!b.over());
        assert!(b.fits(3700) && !b.fits(3701));
    }
}
