//! In-process gzip for `compress client|server fast|best`: independent gzip members of
//! [`MEMBER_SIZE`] bytes, compressed by libdeflate on a bounded pool of threads and handed
//! back strictly in order.
//!
//! The output is an ordinary multi-member gzip file (RFC 1952 §2.2): `gzip -dc`, Debian's
//! `amrestore` (which runs `/bin/gzip -dc`) and [`crate::gunzip`] read it back as one stream.
//!
//! Why this shape (measured on this 2-core machine, `tar -cf - -C / usr/share`, 589 MB,
//! on tmpfs; CPU seconds of the compressing process, all threads; the rows with gzip and
//! ours are `benches/compare-gzip.sh`, the zlib-rs/zlib-ng rows a one-off program over the
//! same members; `cargo bench -p amanda-benches --bench filters` gives per-sample rates):
//!
//! | compressor                            | output bytes | vs `gzip -1` | CPU s |
//! |---------------------------------------|-------------:|-------------:|------:|
//! | `gzip -1` (what Amanda runs for fast) |  266,135,501 |        1.000 |  12.0 |
//! | zlib-rs level 1, 1 MiB members        |  305,196,009 |        1.147 |   4.0 |
//! | zlib-rs level 2, 1 MiB members        |  260,138,890 |        0.977 |   7.5 |
//! | libdeflate level 1, 1 MiB members     |  255,435,734 |        0.960 |   4.4 |
//! | `gzip -9` (what Amanda runs for best) |  243,030,576 |        0.913 |  62.4 |
//! | libdeflate level 9, 1 MiB members     |  240,503,547 |        0.904 |  24.3 |
//!
//! zlib-ng through flate2 gives byte-identical output to zlib-rs at the same CPU within
//! 10%, so it brings nothing over zlib-rs; level 1 of both is zlib-ng's `deflate_quick`,
//! 15% larger than `gzip -1`, over the 5% the issue allows, and their level 2 costs 1.7x
//! libdeflate level 1's CPU for a larger output. So `fast` = libdeflate level 1 (4% smaller
//! than `gzip -1` at a third of its CPU); `best` = level 9, smaller than `gzip -9` at
//! 40% of its CPU (on a 150 MB sample, levels 10-12 were 1.6% smaller still but cost
//! 1.8-3.7x `gzip -9`'s CPU, which no one asked for). Member size (150 MB sample, level
//! 1): 64 KiB members are 1.8% larger than 4 MiB ones, 1 MiB members 0.08% larger; 1 MiB
//! keeps a stream's memory at a few MiB and its first output early.
//!
//! Threads: a [`GzipPool`] is shared by every stream of a daemon, so `compress_threads`
//! bounds the cores compression takes whatever the number of concurrent dumps. The default
//! ([`default_threads`]) is `min(available cores, 2)`: one libdeflate thread already
//! compresses faster than `gzip -1` by 3x, two keep up with a gigabit link (about 250 MB/s
//! of original data at this ratio), and a backup client is usually a machine with other
//! work to do at night: it should not lose every core to its backup. A client with idle
//! cores and a faster network can raise it.
//!
//! What this module must not do: block the caller of [`GzipStream`]'s methods (the one
//! amandad loop runs them), hold more than [`GzipStream::max_buffered_bytes`] per stream,
//! or reorder output. It knows nothing of sockets, pipes, CRC-32C or Amanda's headers.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

/// Bytes of input per gzip member.
pub const MEMBER_SIZE: usize = 1 << 20;

/// Amanda's two in-process compression levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// `compress ... fast` (Amanda runs `gzip --fast`): libdeflate level 1.
    Fast,
    /// `compress ... best` (Amanda runs `gzip --best`): libdeflate level 9.
    Best,
}

impl Level {
    /// The libdeflate level this maps to (see the module header for the measurements).
    pub fn libdeflate_level(self) -> i32 {
        match self {
            Level::Fast => 1,
            Level::Best => 9,
        }
    }

    fn index(self) -> usize {
        match self {
            Level::Fast => 0,
            Level::Best => 1,
        }
    }
}

/// The default number of compression threads: `min(available cores, 2)` (why: module
/// header).
pub fn default_threads() -> NonZeroUsize {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    NonZeroUsize::new(cores.min(2)).unwrap_or(NonZeroUsize::MIN)
}

/// Called from a compression thread whenever a member of the stream is done: cheap, must
/// not block (`mio::Waker::wake` fits; so does unparking a thread). Spurious calls are
/// harmless: the caller then finds [`GzipOutput::Pending`].
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// What went wrong in a gzip stream.
#[derive(Debug, thiserror::Error)]
pub enum GzipError {
    /// The pool could not start its threads.
    #[error("cannot start the gzip compression threads: {0}")]
    Threads(#[source] io::Error),
    /// A compression thread died (a bug: libdeflate does not fail with a large enough
    /// output buffer); the stream's output is incomplete.
    #[error("a gzip compression thread failed; the compressed stream is incomplete")]
    WorkerLost,
    /// Input after [`GzipStream::finish`] (a bug in the caller).
    #[error("input given to a gzip stream after finish()")]
    AfterFinish,
}

impl From<GzipError> for io::Error {
    fn from(e: GzipError) -> io::Error {
        io::Error::other(e)
    }
}

struct Job {
    seq: u64,
    level: Level,
    input: Vec<u8>,
    output: Vec<u8>,
    reply: Sender<Done>,
    waker: Option<Waker>,
}

struct Done {
    seq: u64,
    input: Vec<u8>,
    /// `None` when compression panicked.
    output: Option<Vec<u8>>,
}

/// A bounded set of compression threads, shared by streams (clone it freely). The threads
/// start with the first stream and end when the pool and all its streams are dropped.
#[derive(Clone)]
pub struct GzipPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    threads: NonZeroUsize,
    jobs: OnceLock<Result<Sender<Job>, String>>,
}

impl std::fmt::Debug for GzipPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipPool")
            .field("threads", &self.inner.threads)
            .finish()
    }
}

impl GzipPool {
    /// A pool of `threads` compression threads (the daemons' `compress_threads`; see
    /// [`default_threads`]). No thread starts before the first stream.
    pub fn new(threads: NonZeroUsize) -> GzipPool {
        GzipPool {
            inner: Arc::new(PoolInner {
                threads,
                jobs: OnceLock::new(),
            }),
        }
    }

    /// The number of threads.
    pub fn threads(&self) -> NonZeroUsize {
        self.inner.threads
    }

    fn sender(&self) -> Result<Sender<Job>, GzipError> {
        let r = self.inner.jobs.get_or_init(|| {
            let (tx, rx) = crossbeam_channel::unbounded::<Job>();
            for i in 0..self.inner.threads.get() {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("gzip-{i}"))
                    .spawn(move || worker(&rx))
                    .map_err(|e| e.to_string())?;
            }
            Ok(tx)
        });
        r.clone()
            .map_err(|e| GzipError::Threads(io::Error::other(e)))
    }

    /// A stream at `level` with the default member size and in-flight bound; `waker` is
    /// called when output may be ready (`None` for callers that use the blocking methods
    /// or poll).
    pub fn stream(&self, level: Level, waker: Option<Waker>) -> Result<GzipStream, GzipError> {
        self.stream_with(GzipOptions::new(level), waker)
    }

    /// A stream with explicit options.
    pub fn stream_with(
        &self,
        options: GzipOptions,
        waker: Option<Waker>,
    ) -> Result<GzipStream, GzipError> {
        let jobs = self.sender()?;
        let (reply, results) = crossbeam_channel::unbounded();
        let member_size = options.member_size.max(1);
        let max_in_flight = options
            .max_in_flight
            .unwrap_or(self.inner.threads.get() + 1)
            .max(1);
        Ok(GzipStream {
            level: options.level,
            jobs,
            reply,
            results,
            waker,
            member_size,
            max_in_flight,
            filling: Vec::new(),
            spare_inputs: Vec::new(),
            next_seq: 0,
            next_out: 0,
            ready: BTreeMap::new(),
            in_flight: 0,
            finished: false,
            closing: false,
            bytes_in: 0,
            bytes_out: 0,
        })
    }
}

fn worker(jobs: &Receiver<Job>) {
    // One compressor per level, made on first use (level 9's tables are large).
    let mut compressors: [Option<libdeflater::Compressor>; 2] = [None, None];
    while let Ok(job) = jobs.recv() {
        let Job {
            seq,
            level,
            mut input,
            mut output,
            reply,
            waker,
        } = job;
        let out = catch_unwind(AssertUnwindSafe(|| {
            let c = compressors[level.index()].get_or_insert_with(|| {
                let lvl =
                    libdeflater::CompressionLvl::new(level.libdeflate_level()).unwrap_or_default();
                libdeflater::Compressor::new(lvl)
            });
            let bound = c.gzip_compress_bound(input.len());
            output.clear();
            output.resize(bound, 0);
            let n = c
                .gzip_compress(&input, &mut output)
                .expect("the output buffer has libdeflate's bound");
            output.truncate(n);
            output
        }))
        .ok();
        if out.is_none() {
            // The compressor's state is unknown after a panic.
            compressors[level.index()] = None;
        }
        input.clear();
        // The stream may be gone (dropped mid-dump): nothing to do then.
        let _ = reply.send(Done {
            seq,
            input,
            output: out,
        });
        if let Some(w) = waker {
            w();
        }
    }
}

/// Settings of one stream.
#[derive(Debug, Clone, Copy)]
pub struct GzipOptions {
    /// The level.
    pub level: Level,
    /// Input bytes per gzip member (default [`MEMBER_SIZE`]).
    pub member_size: usize,
    /// Members submitted and not yet taken by the caller, at most (default: the pool's
    /// threads + 1, so every thread has work while the caller sends the previous output).
    pub max_in_flight: Option<usize>,
}

impl GzipOptions {
    /// Defaults for `level`.
    pub fn new(level: Level) -> GzipOptions {
        GzipOptions {
            level,
            member_size: MEMBER_SIZE,
            max_in_flight: None,
        }
    }
}

/// What [`GzipStream::poll_output`] has.
#[derive(Debug, PartialEq, Eq)]
pub enum GzipOutput {
    /// The next compressed bytes, in order (one or more whole gzip members). The caller
    /// may give the buffer back with [`GzipStream::recycle`].
    Chunk(Vec<u8>),
    /// Nothing yet: the waker will be called when a member is done (or, when nothing is in
    /// flight, the stream needs more input or [`GzipStream::finish`]).
    Pending,
    /// Everything after [`GzipStream::finish`] has been handed out.
    Finished,
}

/// One gzip stream: push input without blocking, take output in order.
///
/// Protocol: [`push`](Self::push) while [`wants_input`](Self::wants_input); take output
/// with [`poll_output`](Self::poll_output) when the waker fires (and after each push); at
/// the end of the input call [`finish`](Self::finish) and take output until
/// [`GzipOutput::Finished`]. Memory: at most `(max_in_flight + 1)` input members and
/// `max_in_flight` output members ([`max_buffered_bytes`](Self::max_buffered_bytes)).
/// Dropping a stream mid-way is fine: its threads' results are discarded.
pub struct GzipStream {
    level: Level,
    jobs: Sender<Job>,
    reply: Sender<Done>,
    results: Receiver<Done>,
    waker: Option<Waker>,
    member_size: usize,
    max_in_flight: usize,
    /// The member being filled.
    filling: Vec<u8>,
    spare_inputs: Vec<Vec<u8>>,
    next_seq: u64,
    next_out: u64,
    /// Members done out of order, waiting for their predecessors.
    ready: BTreeMap<u64, Vec<u8>>,
    /// Members submitted and not yet handed out.
    in_flight: usize,
    finished: bool,
    /// `filling` must be submitted even if not full (flush or finish).
    closing: bool,
    bytes_in: u64,
    bytes_out: u64,
}

impl std::fmt::Debug for GzipStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipStream")
            .field("level", &self.level)
            .field("in_flight", &self.in_flight)
            .field("bytes_in", &self.bytes_in)
            .field("bytes_out", &self.bytes_out)
            .field("finished", &self.finished)
            .finish()
    }
}

impl GzipStream {
    /// Copies as much of `input` as the in-flight bound allows and returns how much; 0
    /// means full: take output first ([`poll_output`](Self::poll_output); when it says
    /// `Pending`, wait for the waker). Never blocks.
    pub fn push(&mut self, input: &[u8]) -> Result<usize, GzipError> {
        if self.finished {
            return Err(GzipError::AfterFinish);
        }
        let mut taken = 0;
        while taken < input.len() {
            if self.filling.len() >= self.member_size && !self.submit()? {
                break;
            }
            if self.filling.capacity() == 0 {
                self.filling = self.spare_inputs.pop().unwrap_or_default();
                self.filling.reserve_exact(self.member_size);
            }
            let n = (self.member_size - self.filling.len()).min(input.len() - taken);
            self.filling.extend_from_slice(&input[taken..taken + n]);
            taken += n;
        }
        // Start a full member now rather than at the next call.
        if self.filling.len() >= self.member_size {
            self.submit()?;
        }
        self.bytes_in += taken as u64;
        Ok(taken)
    }

    /// Whether [`push`](Self::push) would take at least one byte now.
    pub fn wants_input(&self) -> bool {
        !self.finished
            && (self.filling.len() < self.member_size || self.in_flight < self.max_in_flight)
    }

    /// Ends the current member now, so that everything pushed so far comes out without
    /// waiting for more input (the members get smaller, the stream stays valid).
    pub fn flush(&mut self) -> Result<(), GzipError> {
        if !self.filling.is_empty() {
            self.closing = true;
            self.submit()?;
        }
        Ok(())
    }

    /// No more input. An empty stream still gives one (empty) gzip member, as `gzip` does,
    /// so that the output is a valid gzip file.
    pub fn finish(&mut self) -> Result<(), GzipError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.closing = true;
        if self.bytes_in == 0 && self.next_seq == 0 {
            // Submitted as an empty member below.
            self.filling = Vec::new();
            return self.submit_empty();
        }
        self.submit().map(drop)
    }

    fn submit_empty(&mut self) -> Result<(), GzipError> {
        self.send(Vec::new())
    }

    /// Submits `filling` if it is full (or closing) and the bound allows; says whether it
    /// was submitted.
    fn submit(&mut self) -> Result<bool, GzipError> {
        if self.filling.is_empty()
            || (self.filling.len() < self.member_size && !self.closing)
            || self.in_flight >= self.max_in_flight
        {
            return Ok(false);
        }
        let input = std::mem::take(&mut self.filling);
        self.send(input)?;
        if !self.finished {
            self.closing = false;
        }
        Ok(true)
    }

    fn send(&mut self, input: Vec<u8>) -> Result<(), GzipError> {
        let job = Job {
            seq: self.next_seq,
            level: self.level,
            input,
            output: Vec::new(),
            reply: self.reply.clone(),
            waker: self.waker.clone(),
        };
        self.jobs.send(job).map_err(|_| GzipError::WorkerLost)?;
        self.next_seq += 1;
        self.in_flight += 1;
        Ok(())
    }

    fn take_done(&mut self, d: Done) -> Result<(), GzipError> {
        if self.spare_inputs.len() <= self.max_in_flight {
            self.spare_inputs.push(d.input);
        }
        let out = d.output.ok_or(GzipError::WorkerLost)?;
        self.ready.insert(d.seq, out);
        Ok(())
    }

    fn hand_out(&mut self) -> Result<Option<GzipOutput>, GzipError> {
        if let Some(out) = self.ready.remove(&self.next_out) {
            self.next_out += 1;
            self.in_flight -= 1;
            self.bytes_out += out.len() as u64;
            // Room again: a full (or final) member may be waiting for it.
            self.submit()?;
            return Ok(Some(GzipOutput::Chunk(out)));
        }
        if self.finished && self.in_flight == 0 && self.filling.is_empty() {
            return Ok(Some(GzipOutput::Finished));
        }
        Ok(None)
    }

    /// The next output in order, without blocking.
    pub fn poll_output(&mut self) -> Result<GzipOutput, GzipError> {
        self.submit()?;
        loop {
            match self.results.try_recv() {
                Ok(d) => self.take_done(d)?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(GzipError::WorkerLost),
            }
        }
        Ok(self.hand_out()?.unwrap_or(GzipOutput::Pending))
    }

    /// The next output in order, waiting for a compression thread if a member is in
    /// flight; `Pending` only when nothing is in flight and the stream needs input. For
    /// blocking callers ([`GzipWriter`]); never call it on an event loop.
    pub fn wait_output(&mut self) -> Result<GzipOutput, GzipError> {
        loop {
            match self.poll_output()? {
                GzipOutput::Pending if self.in_flight > 0 => {
                    let d = self.results.recv().map_err(|_| GzipError::WorkerLost)?;
                    self.take_done(d)?;
                    if let Some(o) = self.hand_out()? {
                        return Ok(o);
                    }
                }
                other => return Ok(other),
            }
        }
    }

    /// Gives an output buffer back for reuse (optional; saves an allocation per member).
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare_inputs.len() <= self.max_in_flight && buf.capacity() >= self.member_size {
            buf.clear();
            self.spare_inputs.push(buf);
        }
    }

    /// Input bytes taken so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Output bytes handed out so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// The level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The most memory the stream's buffers can hold: input members being filled or
    /// compressed, plus output members done and not yet taken.
    pub fn max_buffered_bytes(&self) -> usize {
        let out_bound = self.member_size + self.member_size / 16 + 1024;
        (self.max_in_flight + 1) * self.member_size + self.max_in_flight * out_bound
    }
}

/// A blocking gzip writer over a [`GzipStream`], for simple callers (the dumper's index
/// files, tests, tools): `write` compresses into `inner` in order. Call
/// [`finish`](Self::finish) at the end: dropping it without `finish` loses the tail.
pub struct GzipWriter<W: Write> {
    stream: GzipStream,
    inner: W,
}

impl<W: Write> GzipWriter<W> {
    /// A writer at `level` on `pool`.
    pub fn new(pool: &GzipPool, level: Level, inner: W) -> Result<GzipWriter<W>, GzipError> {
        Ok(GzipWriter {
            stream: pool.stream(level, None)?,
            inner,
        })
    }

    /// Writes out every member that is ready, without waiting.
    fn drain_ready(&mut self) -> io::Result<()> {
        while let GzipOutput::Chunk(c) = self.stream.poll_output()? {
            self.inner.write_all(&c)?;
            self.stream.recycle(c);
        }
        Ok(())
    }

    /// Compresses everything left, writes it out and returns the inner writer (not
    /// flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.stream.finish()?;
        loop {
            match self.stream.wait_output()? {
                GzipOutput::Chunk(c) => {
                    self.inner.write_all(&c)?;
                    self.stream.recycle(c);
                }
                GzipOutput::Finished => return Ok(self.inner),
                GzipOutput::Pending => return Err(GzipError::WorkerLost.into()),
            }
        }
    }

    /// Input bytes taken so far.
    pub fn bytes_in(&self) -> u64 {
        self.stream.bytes_in()
    }
}

impl<W: Write> Write for GzipWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let n = self.stream.push(buf)?;
            self.drain_ready()?;
            if n > 0 {
                return Ok(n);
            }
            // Full: wait for the oldest member and write it.
            match self.stream.wait_output()? {
                GzipOutput::Chunk(c) => {
                    self.inner.write_all(&c)?;
                    self.stream.recycle(c);
                }
                GzipOutput::Pending | GzipOutput::Finished => {
                    return Err(GzipError::WorkerLost.into());
                }
            }
        }
    }

    /// Ends the current member and writes out everything written so far.
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()?;
        while let GzipOutput::Chunk(c) = self.stream.wait_output()? {
            self.inner.write_all(&c)?;
            self.stream.recycle(c);
        }
        self.inner.flush()
    }
}

/// Compresses `data` into one gzip file at `level` on `pool` (a convenience over
/// [`GzipWriter`]).
pub fn compress(pool: &GzipPool, level: Level, data: &[u8]) -> Result<Vec<u8>, GzipError> {
    let mut w = GzipWriter::new(pool, level, Vec::with_capacity(data.len() / 2 + 64))?;
    let r = w.write_all(data).and_then(|()| w.finish());
    r.map_err(|_| GzipError::WorkerLost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gunzip::GunzipReader;
    use proptest::prelude::*;
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn pool(threads: usize) -> GzipPool {
        GzipPool::new(NonZeroUsize::new(threads).unwrap())
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GunzipReader::new(data)
            .read_to_end(&mut out)
            .expect("our gunzip reads it");
        let mut theirs = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut theirs)
            .expect("flate2 reads it");
        assert_eq!(out, theirs);
        out
    }

    /// Text-like data that compresses, with some variety.
    fn sample(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        let mut x = 12345u32;
        while v.len() < n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let word = [
                "usr", "share", "doc", "amanda", "backup", "\n", "/", "tar", " ",
            ][(x >> 16) as usize % 9];
            v.extend_from_slice(word.as_bytes());
        }
        v.truncate(n);
        v
    }

    /// Drives a stream the way an event loop does: push what it takes, take what is ready,
    /// wait (here: spin on the waker count) only when full.
    fn drive(stream: &mut GzipStream, input: &[u8], chunks: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let want = chunks
                .get(i % chunks.len().max(1))
                .copied()
                .unwrap_or(4096)
                .max(1);
            i += 1;
            let n = stream.push(&rest[..want.min(rest.len())]).unwrap();
            rest = &rest[n..];
            loop {
                match stream.poll_output().unwrap() {
                    GzipOutput::Chunk(c) => out.extend_from_slice(&c),
                    GzipOutput::Pending if n == 0 => {
                        if let GzipOutput::Chunk(c) = stream.wait_output().unwrap() {
                            out.extend_from_slice(&c);
                        }
                        break;
                    }
                    _ => break,
                }
            }
        }
        stream.finish().unwrap();
        loop {
            match stream.wait_output().unwrap() {
                GzipOutput::Chunk(c) => out.extend_from_slice(&c),
                GzipOutput::Finished => break,
                GzipOutput::Pending => panic!("pending after finish with nothing in flight"),
            }
        }
        out
    }

    #[test]
    fn fast_and_best_round_trip_through_gunzip_as_many_members() {
        let data = sample(3 * MEMBER_SIZE + 12345);
        for level in [Level::Fast, Level::Best] {
            let gz = compress(&pool(2), level, &data).unwrap();
            assert!(gz.len() < data.len() / 2, "{level:?} did not compress");
            assert_eq!(gunzip(&gz), data);
            // Four members, each starting with the gzip magic.
            assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        }
    }

    #[test]
    fn an_empty_stream_is_one_valid_empty_member() {
        let gz = compress(&pool(1), Level::Fast, b"").unwrap();
        assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(gunzip(&gz), b"");
    }

    #[test]
    fn push_says_full_at_the_in_flight_bound_and_memory_stays_bounded() {
        let p = pool(1);
        let opts = GzipOptions {
            level: Level::Fast,
            member_size: 1000,
            max_in_flight: Some(2),
        };
        let mut s = p.stream_with(opts, None).unwrap();
        // 2 members in flight + 1 being filled, then nothing more until output is taken.
        let data = sample(10_000);
        let mut taken = 0;
        loop {
            let n = s.push(&data[taken..]).unwrap();
            if n == 0 {
                break;
            }
            taken += n;
        }
        assert_eq!(taken, 3000);
        assert!(!s.wants_input());
        assert!(s.max_buffered_bytes() < 10_000);
        // Taking one member makes room for one more.
        assert!(matches!(s.wait_output().unwrap(), GzipOutput::Chunk(_)));
        assert!(s.wants_input());
        assert_eq!(s.push(&data[taken..]).unwrap(), 1000);
    }

    #[test]
    fn the_waker_fires_once_per_member_and_output_stays_in_order() {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let waker: Waker = Arc::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        let opts = GzipOptions {
            level: Level::Fast,
            member_size: 4096,
            max_in_flight: Some(8),
        };
        let mut s = pool(2).stream_with(opts, Some(waker)).unwrap();
        let data = sample(40_000);
        let gz = drive(&mut s, &data, &[40_000]);
        assert_eq!(gunzip(&gz), data);
        assert_eq!(count.load(Ordering::SeqCst), 10);
        assert_eq!(s.bytes_in(), 40_000);
        assert_eq!(s.bytes_out(), gz.len() as u64);
    }

    #[test]
    fn flush_ends_a_member_so_everything_pushed_comes_out() {
        let mut s = pool(1).stream(Level::Fast, None).unwrap();
        s.push(b"hello ").unwrap();
        s.flush().unwrap();
        let GzipOutput::Chunk(first) = s.wait_output().unwrap() else {
            panic!("no member after flush");
        };
        assert_eq!(gunzip(&first), b"hello ");
        s.push(b"world").unwrap();
        s.finish().unwrap();
        let GzipOutput::Chunk(second) = s.wait_output().unwrap() else {
            panic!("no member after finish");
        };
        assert_eq!(s.wait_output().unwrap(), GzipOutput::Finished);
        assert_eq!(gunzip(&[first, second].concat()), b"hello world");
        assert!(matches!(s.push(b"x"), Err(GzipError::AfterFinish)));
    }

    #[test]
    fn streams_share_one_pool_and_a_dropped_stream_does_not_stop_it() {
        let p = pool(2);
        let mut a = p.stream(Level::Fast, None).unwrap();
        a.push(&sample(3 * MEMBER_SIZE)).unwrap();
        drop(a);
        let data = sample(100_000);
        let mut w = GzipWriter::new(&p, Level::Best, Vec::new()).unwrap();
        w.write_all(&data).unwrap();
        assert_eq!(gunzip(&w.finish().unwrap()), data);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Any input, any chunking of the push calls, any member size: gunzip gives the
        /// input back (ours and flate2's decoder alike).
        #[test]
        fn any_input_any_chunking_round_trips(
            data in proptest::collection::vec(any::<u8>(), 0..20_000),
            repeat in 1usize..4,
            chunks in proptest::collection::vec(1usize..5000, 1..8),
            member_size in 1usize..6000,
            in_flight in 1usize..4,
            best in any::<bool>(),
        ) {
            let data = data.repeat(repeat);
            let opts = GzipOptions {
                level: if best { Level::Best } else { Level::Fast },
                member_size,
                max_in_flight: Some(in_flight),
            };
            let mut s = pool(2).stream_with(opts, None).unwrap();
            let gz = drive(&mut s, &data, &chunks);
            prop_assert_eq!(gunzip(&gz), data);
        }
    }
}
