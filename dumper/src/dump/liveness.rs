//! The data timeout of one dump (`dtimeout`), as a value: told when DATA progresses and
//! when a MESG line arrives, it says when the dump has been idle too long.
//!
//! The real dumper restarts its timer on any byte of any stream, so a client that trickles
//! MESG bytes keeps a dump alive forever without sending data (issue 10). Here:
//! - DATA bytes consumed restart the timer;
//! - a complete MESG line restarts it too, but only within [`MESG_GRACE_FACTOR`] x
//!   `dtimeout` of the last DATA progress (or of the start): MESG alone can keep a dump alive
//!   for at most that long, however its lines are paced;
//! - bytes of an unfinished line, INDEX and STATE never count.
//!
//! What this module must not do: read a clock (the caller passes `now`) or sockets.

use std::time::{Duration, Instant};

/// MESG lines may keep a dump without DATA progress alive for this many `dtimeout`s.
pub const MESG_GRACE_FACTOR: u32 = 2;

/// The idle timer of one dump.
#[derive(Clone, Debug)]
pub struct Liveness {
    dtimeout: Duration,
    last_data: Instant,
    last_mesg: Option<Instant>,
}

impl Liveness {
    /// A timer started at `now`.
    pub fn new(now: Instant, dtimeout: Duration) -> Liveness {
        Liveness {
            dtimeout,
            last_data: now,
            last_mesg: None,
        }
    }

    /// DATA bytes were consumed.
    pub fn on_data(&mut self, now: Instant) {
        self.last_data = now;
        self.last_mesg = None;
    }

    /// A complete MESG line arrived.
    pub fn on_mesg_line(&mut self, now: Instant) {
        self.last_mesg = Some(now);
    }

    fn mesg_cap(&self) -> Instant {
        self.last_data + self.dtimeout * MESG_GRACE_FACTOR
    }

    /// When the dump times out unless something happens before.
    pub fn deadline(&self) -> Instant {
        let by_data = self.last_data + self.dtimeout;
        match self.last_mesg {
            Some(m) => by_data.max((m + self.dtimeout).min(self.mesg_cap())),
            None => by_data,
        }
    }

    /// `Some(timeout)` once `now` reached the deadline.
    pub fn expired(&self, now: Instant) -> Option<DataTimeout> {
        if now < self.deadline() {
            return None;
        }
        Some(DataTimeout {
            dtimeout: self.dtimeout,
            quiet: now.saturating_duration_since(self.last_data),
            mesg_kept_alive: self.deadline() >= self.mesg_cap(),
        })
    }
}

/// A dump idle for too long; `Display` is the report's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataTimeout {
    /// `dtimeout`.
    pub dtimeout: Duration,
    /// How long no DATA came.
    pub quiet: Duration,
    /// MESG lines kept the dump alive until their grace ran out.
    pub mesg_kept_alive: bool,
}

impl std::fmt::Display for DataTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.mesg_kept_alive {
            write!(
                f,
                "[data timeout: no DATA for {}s; MESG lines alone keep a dump alive for at most {}s ({MESG_GRACE_FACTOR} x dtimeout)]",
                self.quiet.as_secs(),
                (self.dtimeout * MESG_GRACE_FACTOR).as_secs()
            )
        } else {
            f.write_str("[data timeout]")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn quiet_for_dtimeout_is_a_data_timeout() {
        let t0 = Instant::now();
        let l = Liveness::new(t0, T);
        assert_eq!(l.expired(t0 + T - Duration::from_millis(1)), None);
        let e = l.expired(t0 + T).unwrap();
        assert_eq!(e.to_string(), "[data timeout]");
        assert_eq!((e.dtimeout, e.quiet), (T, T));
    }

    #[test]
    fn data_progress_keeps_a_dump_alive_indefinitely() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, T);
        for i in 1..1000u32 {
            let now = t0 + Duration::from_secs(9) * i;
            assert_eq!(l.expired(now), None);
            l.on_data(now);
        }
    }

    // issue 10: each MESG byte used to restart the timer, so a trickle kept a dump alive
    // forever without data.
    #[test]
    fn a_mesg_trickle_cannot_keep_a_dump_alive_past_the_grace() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, T);
        let mut now = t0;
        let end = loop {
            now += Duration::from_secs(9);
            if let Some(e) = l.expired(now) {
                break (now, e);
            }
            l.on_mesg_line(now);
            assert!(now < t0 + T * 5, "still alive at {:?}", now - t0);
        };
        assert!(end.0 - t0 <= T * MESG_GRACE_FACTOR + Duration::from_secs(9));
        assert!(end.0 - t0 >= T * MESG_GRACE_FACTOR);
        assert!(end.1.mesg_kept_alive);
        assert!(end.1.to_string().contains("MESG lines alone"), "{}", end.1);
        // DATA progress gives MESG its grace again.
        l.on_data(now);
        l.on_mesg_line(now + Duration::from_secs(9));
        assert_eq!(l.expired(now + Duration::from_secs(15)), None);
    }
}
