//! The server's side of a dump's data phase (the dumper): what it does with the bytes of
//! each stream, when DATA may be consumed, when the dump is over, and what went wrong.
//!
//! Rules (spec §4.5, §6.7.4-§6.7.7), each written once, here:
//! - MESG is split into lines and read by the [`DumpTracker`]; `sendbackup: info end`
//!   completes the header information and from then on DATA is consumed
//!   ([`Receiver::data_enabled`], [`ReceiverEvent::HeaderReady`]).
//! - DATA that arrives before `info end` on a multiplexed connection (it cannot be left in
//!   the socket there) is kept, up to [`ReceiverConfig::early_data_max`] bytes, and handed
//!   back in one [`ReceiverEvent::EarlyData`] after the header; more fails the dump. A raw
//!   (bsd) DATA connection is simply not read before that: TCP holds the client back.
//! - INDEX bytes are counted against [`ReceiverConfig::index_max`]; crossing it fails the
//!   dump.
//! - `dtimeout`: DATA progress restarts the timer; a complete MESG line restarts it too, but
//!   only within [`MESG_GRACE_FACTOR`] x `dtimeout` of the last DATA, so MESG alone cannot
//!   keep a dump alive indefinitely (issue 10); partial lines, INDEX and STATE never count.
//! - Each stream ends on its own (a zero-length frame, or EOF of its raw connection). MESG
//!   ending before `info end` stops the dump ("no header information"); a connection lost
//!   while some of its streams are open fails it.
//! - The CRC-32C and byte count of exactly the DATA bytes consumed (the client-CRC's view)
//!   are kept here; [`Receiver::finish`] hands them to the tracker's verdict.
//!
//! Driving it (after quinn-proto): feed `on_*(now, ..)`, drain [`Receiver::poll_event`], arm
//! one timer at [`Receiver::poll_timeout`] and call [`Receiver::handle_timeout`]. What this
//! module must not do: read a clock or a socket, or store DATA (the shell writes consumed
//! bytes through its filters to the holding disk; the receiver only accounts for them).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::names;
use crate::crc::{Crc32c, CrcValue};
use crate::mesg::{DataSummary, DumpOutcome, DumpTracker, LineSplitter, SplitLine};
use crate::sendbackup::Stream;

/// MESG lines may keep a dump without DATA progress alive for this many `dtimeout`s.
pub const MESG_GRACE_FACTOR: u32 = 2;

/// The receiver's bounds.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// DATA kept before `info end` on a multiplexed connection (a correct client sends none).
    pub early_data_max: usize,
    /// INDEX bytes accepted for one dump.
    pub index_max: u64,
    /// `dtimeout`.
    pub dtimeout: Duration,
    /// The longest MESG line kept whole.
    pub max_mesg_line: usize,
    /// A client-initiated backup (ambackup, spec §14.4): the client keeps MESG open until
    /// the server's `MESG END`, so the data phase is complete once the client's
    /// `sendbackup: end` (or `error`) line came and every other stream ended.
    pub mesg_two_way: bool,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            early_data_max: 16 * 1024 * 1024,
            index_max: 1024 * 1024 * 1024,
            dtimeout: Duration::from_secs(1800),
            max_mesg_line: LineSplitter::DEFAULT_MAX_LINE,
            mesg_two_way: false,
        }
    }
}

/// Why the data phase failed (the client's own `sendbackup: error` lines are the tracker's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// More early DATA than [`ReceiverConfig::early_data_max`].
    #[error("[client sent more than {bound} bytes of DATA before `sendbackup: info end`]")]
    EarlyData {
        /// The bound.
        bound: usize,
    },
    /// More INDEX than [`ReceiverConfig::index_max`].
    #[error("[the INDEX stream brought more than {} MiB, the limit]", .limit / (1024 * 1024))]
    IndexCap {
        /// The limit in bytes.
        limit: u64,
    },
    /// `dtimeout` passed without progress.
    #[error("{}", data_timeout_text(*.quiet, *.mesg_cap))]
    DataTimeout {
        /// How long DATA had been quiet.
        quiet: Duration,
        /// `Some(cap)` when MESG lines had kept the dump alive up to their cap.
        mesg_cap: Option<Duration>,
    },
    /// A connection ended while streams on it were open.
    #[error("[connection closed by the client with {} still open{}]", names(.streams), .detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    ConnectionClosed {
        /// The streams it cut.
        streams: Vec<Stream>,
        /// What the shell knows more (a truncated frame, a reset).
        detail: Option<String>,
    },
}

fn data_timeout_text(quiet: Duration, cap: Option<Duration>) -> String {
    match cap {
        Some(cap) => format!(
            "[data timeout: no DATA for {}s; MESG lines alone keep a dump alive for at most {}s ({MESG_GRACE_FACTOR} x dtimeout)]",
            quiet.as_secs(),
            cap.as_secs()
        ),
        None => "[data timeout]".to_owned(),
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverEvent {
    /// `info end` arrived: write the dump-file header (from the tracker's info) before any
    /// DATA; from now on [`Receiver::data_enabled`].
    HeaderReady,
    /// DATA that arrived before `info end`, to be stored right after the header (already
    /// counted and checksummed).
    EarlyData(Vec<u8>),
    /// The dump stopped early (failure, retry request, no header): stop reading and drop the
    /// connections; [`Receiver::finish`] says why.
    Stop,
    /// Every stream ended: the dump is complete on the wire.
    Complete,
}

/// What became of DATA bytes passed to [`Receiver::on_data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDisposition {
    /// Consumed: store them now, in order.
    Store,
    /// Kept for after the header (see [`ReceiverEvent::EarlyData`]).
    Kept,
    /// Dropped: the dump has stopped.
    Dropped,
}

/// The idle timer of one dump (see the module rules).
#[derive(Debug, Clone)]
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

    /// The timeout error once `now` reached the deadline.
    pub fn expired(&self, now: Instant) -> Option<ReceiveError> {
        if now < self.deadline() {
            return None;
        }
        Some(ReceiveError::DataTimeout {
            quiet: now.saturating_duration_since(self.last_data),
            mesg_cap: (self.deadline() >= self.mesg_cap())
                .then_some(self.dtimeout * MESG_GRACE_FACTOR),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before `info end`.
    Header,
    /// DATA flows.
    Data,
    /// Stopped before every stream ended.
    Stopped,
    /// Every stream ended.
    Complete,
}

/// One dump's data phase, server side.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    /// Streams still open.
    open: Vec<Stream>,
    phase: Phase,
    tracker: DumpTracker,
    splitter: LineSplitter,
    mesg_ended: bool,
    liveness: Liveness,
    early: Vec<u8>,
    crc: Crc32c,
    index_bytes: u64,
    error: Option<ReceiveError>,
    first_data: Option<Instant>,
    last_data: Option<Instant>,
    events: VecDeque<ReceiverEvent>,
}

impl Receiver {
    /// A data phase whose client opened `streams` (STATE is drained and ignored), with the
    /// `tracker` the shell prepared (client filters known, see
    /// [`DumpTracker::set_client_filters`]).
    pub fn new(
        now: Instant,
        cfg: ReceiverConfig,
        streams: &[Stream],
        tracker: DumpTracker,
    ) -> Receiver {
        let mut open: Vec<Stream> = streams.to_vec();
        open.sort_by_key(|s| s.index());
        open.dedup();
        Receiver {
            splitter: LineSplitter::new(cfg.max_mesg_line),
            liveness: Liveness::new(now, cfg.dtimeout),
            cfg,
            open,
            phase: Phase::Header,
            tracker,
            mesg_ended: false,
            early: Vec::new(),
            crc: Crc32c::new(),
            index_bytes: 0,
            error: None,
            first_data: None,
            last_data: None,
            events: VecDeque::new(),
        }
    }

    /// Whether DATA is consumed now (after `info end`, until the dump stops). A raw DATA
    /// connection should not be read before.
    pub fn data_enabled(&self) -> bool {
        self.phase == Phase::Data
    }

    /// Whether the dump is over on the wire (complete or stopped): stop reading.
    pub fn is_over(&self) -> bool {
        matches!(self.phase, Phase::Stopped | Phase::Complete)
    }

    /// The streams still open.
    pub fn open_streams(&self) -> &[Stream] {
        &self.open
    }

    /// The tracker, for the header fields (`info()`) when [`ReceiverEvent::HeaderReady`]
    /// comes.
    pub fn tracker(&self) -> &DumpTracker {
        &self.tracker
    }

    /// The next thing the shell must do.
    pub fn poll_event(&mut self) -> Option<ReceiverEvent> {
        self.events.pop_front()
    }

    /// When [`Receiver::handle_timeout`] must be called, unless input comes first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.is_over()).then(|| self.liveness.deadline())
    }

    /// The timer fired (early calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_over() {
            return;
        }
        if let Some(e) = self.liveness.expired(now) {
            self.fail(e);
        }
    }

    /// MESG bytes.
    pub fn on_mesg(&mut self, now: Instant, bytes: &[u8]) {
        if self.is_over() || self.mesg_ended {
            return;
        }
        self.splitter.push(bytes);
        while let Some(line) = self.splitter.next_line() {
            self.liveness.on_mesg_line(now);
            match line {
                SplitLine::Line(l) => {
                    self.tracker.on_line(&l);
                }
                SplitLine::TooLong { len } => self.tracker.on_too_long(len),
            }
            if self.tracker.retry_requested() {
                self.stop();
                return;
            }
            if self.phase == Phase::Header && self.tracker.header_complete() {
                self.phase = Phase::Data;
                self.events.push_back(ReceiverEvent::HeaderReady);
                if !self.early.is_empty() {
                    let early = std::mem::take(&mut self.early);
                    self.account(now, &early);
                    self.events.push_back(ReceiverEvent::EarlyData(early));
                }
            }
        }
        self.maybe_complete();
    }

    /// Every stream ended (two-way MESG: every other stream, and the client's last line
    /// came): the dump is complete on the wire.
    fn maybe_complete(&mut self) {
        if self.is_over() || self.phase == Phase::Header {
            return;
        }
        let done = self.open.is_empty()
            || (self.cfg.mesg_two_way
                && self.tracker.ended()
                && self.open.as_slice() == [Stream::Mesg]);
        if done {
            self.phase = Phase::Complete;
            self.events.push_back(ReceiverEvent::Complete);
        }
    }

    fn account(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.crc.update(bytes);
        self.liveness.on_data(now);
        self.first_data.get_or_insert(now);
        self.last_data = Some(now);
    }

    /// DATA bytes, as read (the shell may have read them straight into its write buffer:
    /// on [`DataDisposition::Store`] it keeps them there, otherwise it drops them).
    pub fn on_data(&mut self, now: Instant, bytes: &[u8]) -> DataDisposition {
        match self.phase {
            Phase::Data => {
                self.account(now, bytes);
                DataDisposition::Store
            }
            Phase::Header => {
                if self.early.len() + bytes.len() > self.cfg.early_data_max {
                    self.fail(ReceiveError::EarlyData {
                        bound: self.cfg.early_data_max,
                    });
                    return DataDisposition::Dropped;
                }
                self.early.extend_from_slice(bytes);
                DataDisposition::Kept
            }
            Phase::Stopped | Phase::Complete => DataDisposition::Dropped,
        }
    }

    /// INDEX bytes: `true` to write them to the index, `false` when the dump stopped (the
    /// cap was crossed now or before).
    pub fn on_index(&mut self, len: usize) -> bool {
        if self.is_over() {
            return false;
        }
        self.index_bytes = self.index_bytes.saturating_add(len as u64);
        if self.index_bytes > self.cfg.index_max {
            self.fail(ReceiveError::IndexCap {
                limit: self.cfg.index_max,
            });
            return false;
        }
        true
    }

    /// `stream` ended cleanly (its zero-length frame, or EOF of its raw connection).
    pub fn on_stream_end(&mut self, stream: Stream) {
        let Some(i) = self.open.iter().position(|s| *s == stream) else {
            return;
        };
        self.open.remove(i);
        if stream == Stream::Mesg {
            self.end_mesg();
            if self.phase == Phase::Header {
                // The real dumper stops here: "no header information".
                self.stop();
                return;
            }
        }
        if self.open.is_empty() && !self.is_over() {
            self.phase = Phase::Complete;
            self.events.push_back(ReceiverEvent::Complete);
            return;
        }
        self.maybe_complete();
    }

    fn end_mesg(&mut self) {
        if self.mesg_ended {
            return;
        }
        self.mesg_ended = true;
        let rest = self.splitter.finish();
        let partial = match &rest {
            Some(Ok(p)) => Some(p.as_slice()),
            _ => None,
        };
        self.tracker.on_mesg_eof(partial);
    }

    /// A connection ended (EOF or error) while `streams` on it had not ended: they are cut.
    pub fn on_connection_lost(&mut self, streams: &[Stream], detail: Option<String>) {
        let cut: Vec<Stream> = streams
            .iter()
            .copied()
            .filter(|s| self.open.contains(s))
            .collect();
        if cut.is_empty() {
            return;
        }
        self.open.retain(|s| !cut.contains(s));
        // The tracker sees MESG's end first, so its own verdict is complete; ours wins.
        if cut.contains(&Stream::Mesg) {
            self.end_mesg();
        }
        self.fail(ReceiveError::ConnectionClosed {
            streams: cut,
            detail,
        });
    }

    fn fail(&mut self, e: ReceiveError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
        self.stop();
    }

    fn stop(&mut self) {
        if self.is_over() {
            return;
        }
        self.phase = Phase::Stopped;
        self.early = Vec::new();
        self.events.push_back(ReceiverEvent::Stop);
    }

    /// The DATA consumed so far: CRC-32C and byte count.
    pub fn received(&self) -> CrcValue {
        self.crc.value()
    }

    /// The verdict: the tracker's (MESG lines, CRC and size checks against the DATA
    /// received), with the data phase's own failure, if any, first.
    pub fn finish(mut self) -> Received {
        if !self.mesg_ended {
            self.end_mesg();
        }
        let received = self.crc.value();
        let outcome = self.tracker.finish(DataSummary { received });
        Received {
            outcome,
            error: self.error,
            received,
            data_time: match (self.first_data, self.last_data) {
                (Some(a), Some(b)) => b.saturating_duration_since(a),
                _ => Duration::ZERO,
            },
            complete: self.phase == Phase::Complete,
        }
    }
}

/// What a data phase produced.
#[derive(Debug, Clone)]
pub struct Received {
    /// The tracker's verdict.
    pub outcome: DumpOutcome,
    /// The data phase's own failure, which overrides a DONE verdict.
    pub error: Option<ReceiveError>,
    /// CRC-32C and size of the DATA consumed.
    pub received: CrcValue,
    /// From the first to the last DATA byte.
    pub data_time: Duration,
    /// Every stream ended cleanly.
    pub complete: bool,
}

impl fmt::Display for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            Some(e) => write!(f, "FAILED {e}"),
            None => write!(f, "{}", self.outcome.status),
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
        assert_eq!(
            e,
            ReceiveError::DataTimeout {
                quiet: T,
                mesg_cap: None
            }
        );
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
    // forever without data. (Moved here from the dumper, issue 12.)
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
        assert!(
            matches!(
                end.1,
                ReceiveError::DataTimeout {
                    mesg_cap: Some(_),
                    ..
                }
            ),
            "{}",
            end.1
        );
        assert!(end.1.to_string().contains("MESG lines alone"), "{}", end.1);
        // DATA progress gives MESG its grace again.
        l.on_data(now);
        l.on_mesg_line(now + Duration::from_secs(9));
        assert_eq!(l.expired(now + Duration::from_secs(15)), None);
    }
}
