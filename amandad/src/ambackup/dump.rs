//! One DLE's backup over the connection the BACKUP REP came on (spec §14.4): our own
//! sendbackup machinery runs here with the REP as its request, and its outputs go to the
//! server's stream handles: the archive on DATA, the MESG lines, the index on INDEX. The
//! server answers on MESG (`start backup:`, `backup done:` / `backup failed:`, `MESG END`).
//!
//! The data-phase rules (nothing on DATA before `sendbackup: info end`, the CRCs, when the
//! streams end, the server closing DATA early) are `proto::dataphase::Sender`'s; the MESG
//! lines and the state files are [`BackupRun`]'s, and the client filters (`compress client`,
//! `encrypt client`) amandad's `ClientChain`, as for amandad. What stays here: the pipes,
//! the process and the bytes.
//!
//! What this module must not do: block on anything but `poll` (the connection's unwritten
//! output is the backpressure: the data pipe is not read above [`HIGH_WATER`]), or keep
//! running tar once the server ended the dump.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use proto::dataphase::{Sender, SenderConfig, SenderEvent};
use proto::mesg::MesgLine;
use proto::sendbackup::Stream;

use super::conn::{Conn, ConnError};
use super::wire::{BackupReply, Outcome, ServerMesg};
use crate::server::chain::ClientChain;
use crate::services::backup::{BackupRun, Spawned, StreamOutput};
use crate::services::{self, ServiceContext, Start};
use proto::dataphase::Stage;

/// Unwritten output above which the data pipe is not read.
pub const HIGH_WATER: usize = 4 << 20;

/// Largest read from the data pipe.
const DATA_READ: usize = 256 << 10;

/// How long to wait for the server's verdict once everything is sent (it writes the
/// holding file and the index first).
pub const VERDICT_WAIT: Duration = Duration::from_secs(600);

/// How long a dump may make no progress at all (nothing read from tar or the server,
/// nothing written) before it is abandoned.
pub const STALL: Duration = Duration::from_secs(600);

/// What a backup's lines are shown with.
pub type Print<'a> = &'a mut dyn FnMut(&str);

struct Streams {
    data: u32,
    mesg: u32,
    /// INDEX and STATE: ended with DATA (STATE carries nothing: we do not advertise it).
    others: Vec<(Stream, u32)>,
}

impl Streams {
    fn of(reply: &BackupReply) -> Option<Streams> {
        Some(Streams {
            data: reply.handle(Stream::Data)?,
            mesg: reply.handle(Stream::Mesg)?,
            others: reply
                .streams
                .iter()
                .copied()
                .filter(|(s, _)| matches!(s, Stream::Index | Stream::State))
                .collect(),
        })
    }

    fn index(&self) -> Option<u32> {
        self.others
            .iter()
            .find(|(s, _)| *s == Stream::Index)
            .map(|(_, h)| *h)
    }

    /// Ends every stream but MESG (MESG stays open until the server's `MESG END`, as the
    /// real client keeps it).
    fn end_outputs(&self, conn: &mut Conn) {
        conn.queue_eof(self.data);
        for (_, h) in &self.others {
            conn.queue_eof(*h);
        }
    }
}

/// Runs the backup `reply` asks for, printing the server's MESG lines; returns the
/// server's verdict.
pub fn run(
    conn: &mut Conn,
    reply: &BackupReply,
    ctx: &ServiceContext,
    print: Print<'_>,
) -> Result<Outcome, ConnError> {
    let Some(streams) = Streams::of(reply) else {
        return Ok(Outcome::Failed("no DATA or MESG stream".into()));
    };
    let mut server = Server {
        streams,
        mesg: ServerMesg::new(),
        print,
    };
    let plan = match services::backup::start(ctx, &reply.request) {
        Start::Backup(plan) => plan,
        Start::Reply(rep) => {
            let text = String::from_utf8_lossy(&rep).trim_end().to_string();
            (server.print)(&text);
            return server.refuse(conn, &text);
        }
        Start::Job(_) => return server.refuse(conn, "unexpected job"),
    };
    let stages = plan.spec.client_stages().to_vec();
    match BackupRun::spawn(plan.spec) {
        Ok(spawned) => relay(conn, spawned, &stages, &mut server),
        Err(e) => {
            (server.print)(&format!("ERROR {e}"));
            conn.queue(server.streams.mesg, &BackupRun::spawn_failure_mesg(&e));
            server.streams.end_outputs(conn);
            server.await_verdict(conn)
        }
    }
}

/// The server as one dump sees it: its stream handles, the MESG lines it sent (which
/// carry its verdict), and where those lines are shown.
struct Server<'p> {
    streams: Streams,
    mesg: ServerMesg,
    print: Print<'p>,
}

impl Server<'_> {
    /// The dump cannot start: tell the server on MESG, end the streams, take its verdict.
    fn refuse(&mut self, conn: &mut Conn, why: &str) -> Result<Outcome, ConnError> {
        let mesg = self.streams.mesg;
        conn.queue(
            mesg,
            &MesgLine::error(why.trim_start_matches("ERROR ").as_bytes()).encode(),
        );
        conn.queue(mesg, &MesgLine::End.encode());
        self.streams.end_outputs(conn);
        self.await_verdict(conn)
    }

    /// Takes the server's frames: MESG lines are printed; returns whether the server ended
    /// DATA.
    fn take_frames(&mut self, conn: &mut Conn) -> Result<bool, ConnError> {
        let mut data_closed = false;
        while let Some(f) = conn.next_frame() {
            if f.handle == self.streams.mesg && !f.is_eof() {
                let lines = self
                    .mesg
                    .push(&f.payload)
                    .map_err(|e| ConnError::Exchange(e.to_string()))?;
                for l in lines {
                    (self.print)(&l);
                }
            } else if f.handle == self.streams.data && f.is_eof() {
                data_closed = true;
            }
            // Anything else (the server's ends of INDEX/STATE, stray control frames) is
            // noise.
        }
        Ok(data_closed)
    }

    /// Everything is sent: waits for `MESG END` (or the end of the connection), then ends
    /// MESG.
    fn await_verdict(&mut self, conn: &mut Conn) -> Result<Outcome, ConnError> {
        let mut until = Instant::now() + VERDICT_WAIT;
        loop {
            self.take_frames(conn)?;
            if self.mesg.ended() || conn.is_closed() {
                break;
            }
            let before = conn.pending();
            conn.wait(&[], Some(until))?;
            if conn.pending() < before {
                until = Instant::now() + VERDICT_WAIT;
            }
            if Instant::now() >= until {
                return Err(ConnError::Silent {
                    peer: conn.peer(),
                    waited: VERDICT_WAIT,
                });
            }
        }
        conn.queue_eof(self.streams.mesg);
        let _ = conn.flush();
        Ok(self.mesg.outcome())
    }
}

fn set_nonblocking(fd: &OwnedFd) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    if let Ok(bits) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(bits) | OFlag::O_NONBLOCK),
        );
    }
}

/// Reads what `fd` has (non-blocking): `Ok(0)` at EOF, `Err(WouldBlock)` when empty.
fn read_fd(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match nix::unistd::read(fd, buf) {
            Err(nix::errno::Errno::EINTR) => {}
            r => return r.map_err(std::io::Error::from),
        }
    }
}

/// The client filters of a dump (`compress client ...`, `encrypt client`), run as amandad
/// runs them (`crate::server::chain`), and what wakes the loop when gzip has output.
struct Filters {
    chain: ClientChain,
    wake_r: OwnedFd,
    failure: Option<String>,
    // Keeps the gzip threads for the dump.
    _pool: filters::GzipPool,
}

impl Filters {
    fn start(stages: &[Stage]) -> Result<Filters, String> {
        let (wake_r, wake_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| format!("can't create pipe: {e}"))?;
        let wake_w = std::sync::Arc::new(wake_w);
        let waker: filters::Waker = std::sync::Arc::new(move || {
            // A full pipe already wakes the loop.
            let _ = nix::unistd::write(&*wake_w, &[1]);
        });
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get().min(2))
            .try_into()
            .unwrap_or(std::num::NonZeroUsize::MIN);
        let pool = filters::GzipPool::new(threads);
        let chain = ClientChain::start(stages, &pool, Some(waker))?;
        Ok(Filters {
            chain,
            wake_r,
            failure: None,
            _pool: pool,
        })
    }

    /// Moves bytes through the filters and their output onto DATA while the connection
    /// takes it; their stderr lines go to MESG as `? <filter>: <line>` (amandad's rule,
    /// issue 12).
    fn pump(&mut self, conn: &mut Conn, streams: &Streams, sender: &mut Sender) {
        let mut buf = [0u8; 64];
        while matches!(read_fd(&self.wake_r, &mut buf), Ok(n) if n > 0) {}
        loop {
            let mut progress = self.chain.pump().progress;
            while conn.pending() < HIGH_WATER {
                let n = self
                    .chain
                    .take_output(super::conn::MAX_DATA_FRAME, |bytes| {
                        sender.on_sent(bytes);
                        conn.queue(streams.data, bytes);
                    });
                if n == 0 {
                    break;
                }
                progress = true;
            }
            let text = crate::server::chain::mesg_of_lines(self.chain.take_lines());
            if !text.is_empty() {
                conn.queue(streams.mesg, &text);
            }
            if self.failure.is_none() {
                self.failure = self.chain.failure().map(str::to_owned);
            }
            if !progress {
                return;
            }
        }
    }

    /// Whether the filters are through (or failed).
    fn over(&self) -> bool {
        self.failure.is_some() || self.chain.is_done()
    }
}

fn relay(
    conn: &mut Conn,
    spawned: Spawned,
    stages: &[Stage],
    server: &mut Server<'_>,
) -> Result<Outcome, ConnError> {
    let Spawned {
        mut run,
        child,
        data,
        messages,
    } = spawned;
    // However the relay ends (an error included), tar does not outlive it.
    let mut child = Tar(child);
    set_nonblocking(&data);
    set_nonblocking(&messages);
    let mut links = vec![(Stream::Data, true), (Stream::Mesg, true)];
    links.extend(server.streams.others.iter().map(|(s, _)| (*s, true)));
    let mut sender = Sender::new(SenderConfig::default(), &links);
    sender.on_acked(Instant::now());
    let kill = |child: &mut Tar| {
        let _ = child.0.kill();
        let _ = child.0.wait();
    };
    let mut filters = None;
    let mut filter_error = None;
    if !stages.is_empty() {
        match Filters::start(stages) {
            Ok(f) => filters = Some(f),
            Err(e) => {
                // tar's output is drained and dropped; the dump fails with this.
                let _ = child.0.kill();
                filter_error = Some(e);
            }
        }
    }
    let index = server.streams.index();
    let mut data_eof = false;
    let mut msg_eof = false;
    let mut finished = false;
    let mut tar_stopped = filter_error.is_some();
    let mut buf = vec![0u8; DATA_READ];
    let mut progress = Instant::now();
    loop {
        while let Some(ev) = sender.poll_event() {
            match ev {
                SenderEvent::Start => {
                    conn.queue(server.streams.mesg, run.mesg_header());
                    sender.header_sent();
                }
                SenderEvent::Close => server.streams.end_outputs(conn),
                SenderEvent::Abort(e) => {
                    kill(&mut child);
                    (server.print)(&format!("ERROR {e}"));
                    server.streams.end_outputs(conn);
                    return server.await_verdict(conn);
                }
            }
        }
        if finished {
            return server.await_verdict(conn);
        }
        if server.take_frames(conn)? {
            sender.on_peer_closed(Stream::Data);
            continue;
        }
        if server.mesg.ended() || conn.is_closed() {
            // The server gave up on this dump (or the connection is gone): stop tar.
            kill(&mut child);
            if conn.is_closed() {
                return Ok(server.mesg.outcome());
            }
            server.streams.end_outputs(conn);
            return server.await_verdict(conn);
        }
        if let Some(f) = filters.as_mut() {
            f.pump(conn, &server.streams, &mut sender);
            if filter_error.is_none() {
                filter_error = f.failure.clone();
            }
        }
        if filter_error.is_some() && !tar_stopped {
            // A filter failed: tar is stopped, its output drained so its end is seen.
            tar_stopped = true;
            let _ = child.0.kill();
        }
        if progress.elapsed() >= STALL {
            kill(&mut child);
            return Err(ConnError::Silent {
                peer: conn.peer(),
                waited: STALL,
            });
        }
        let failed = filter_error.is_some();
        let mut fds = Vec::new();
        // A server that does not read stops both pipes (tar waits), so what we hold for it
        // stays near HIGH_WATER.
        let room = conn.pending() < HIGH_WATER;
        let filter_room = filters.as_ref().is_none_or(|f| f.chain.has_room());
        let want_data = (room && filter_room || failed) && !data_eof && sender.data_allowed();
        if want_data {
            fds.push((data.as_fd(), false));
        }
        let want_msg = (room || failed) && !msg_eof;
        if want_msg {
            fds.push((messages.as_fd(), false));
        }
        let extra = fds.len();
        if let Some(f) = filters.as_ref().filter(|_| !failed) {
            fds.push((f.wake_r.as_fd(), false));
            for (fd, writable) in f.chain.fds() {
                // SAFETY: the chain owns these descriptors and outlives this poll.
                fds.push((unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, writable));
            }
        }
        let before = (conn.pending(), conn.queued_frames());
        let ready = conn.wait_for(&fds, Some(Instant::now() + Duration::from_secs(10)))?;
        if (conn.pending(), conn.queued_frames()) != before || ready[extra..].iter().any(|r| *r) {
            progress = Instant::now();
        }
        let mut ready = ready.into_iter();
        if want_data && ready.next().unwrap_or(false) {
            progress = Instant::now();
            match read_fd(&data, &mut buf) {
                Ok(0) => {
                    data_eof = true;
                    if let Some(f) = filters.as_mut() {
                        f.chain.input_end();
                    }
                }
                Ok(n) if failed => {
                    let _ = n;
                }
                Ok(n) => match filters.as_mut() {
                    Some(f) => {
                        sender.on_native(&buf[..n]);
                        f.chain.push_input(&buf[..n]);
                    }
                    None => {
                        sender.on_unfiltered(&buf[..n]);
                        conn.queue(server.streams.data, &buf[..n]);
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    sender.fail(format!("reading the archive: {e}"));
                    continue;
                }
            }
        }
        if want_msg && ready.next().unwrap_or(false) {
            progress = Instant::now();
            match read_fd(&messages, &mut buf) {
                Ok(0) => msg_eof = true,
                Ok(n) => {
                    let mut out = StreamOutput::default();
                    run.on_messages(&buf[..n], &mut out);
                    write_output(conn, server.streams.mesg, index, &out);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    sender.fail(format!("reading tar's messages: {e}"));
                    continue;
                }
            }
        }
        let filters_over = filters.as_ref().is_none_or(Filters::over) || failed;
        if data_eof && msg_eof && filters_over && !finished {
            // Both pipes are at EOF and the filters are through: tar is done.
            let status = child
                .0
                .wait()
                .map_err(|e| ConnError::Exchange(format!("waiting for tar: {e}")))?;
            let mut out = StreamOutput::default();
            run.finish(
                status,
                (sender.native_crc(), sender.client_crc()),
                filter_error.as_deref(),
                &mut out,
            );
            write_output(conn, server.streams.mesg, index, &out);
            drop(filters.take());
            sender.on_application_done();
            finished = true;
        }
    }
}

/// tar, killed and reaped when the relay ends early.
struct Tar(std::process::Child);

impl Drop for Tar {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn write_output(conn: &mut Conn, mesg: u32, index: Option<u32>, out: &StreamOutput) {
    if !out.mesg.is_empty() {
        conn.queue(mesg, &out.mesg);
    }
    if let (Some(h), false) = (index, out.index.is_empty()) {
        conn.queue(h, &out.index);
    }
}

#[cfg(test)]
mod tests {
    //! The data phase against hostile servers (issue 14): one that stops reading, one that
    //! leaves mid-dump. Real GNU tar on a temporary tree.

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::*;
    use crate::services::context::tests::test_dle;

    /// A tree of incompressible bytes, `mib` MiB.
    fn noise_tree(root: &std::path::Path, mib: usize) {
        testkit::Noise::new(testkit::Noise::SEED)
            .write_files(root, "f", mib, 1)
            .unwrap();
    }

    fn reply_for(disk: &str) -> BackupReply {
        let request = format!(
            "OPTIONS features=ffffffff9efefbfffffffffffffff3fffbf71f;maxdumps=1;hostname=localhost;config=t\n<dle>\n  <program>APPLICATION</program>\n  <backup-program>\n    <plugin>amgtar</plugin>\n  </backup-program>\n  <disk>{disk}</disk>\n  <level>0</level>\n  <record>YES</record>\n  <index>YES</index>\n</dle>\n"
        );
        BackupReply {
            streams: vec![
                (Stream::Data, 499_999),
                (Stream::Mesg, 499_998),
                (Stream::Index, 499_997),
            ],
            request: request.into_bytes(),
        }
    }

    /// Our side of a loopback connection whose server runs `serve`.
    fn connected(
        serve: impl FnOnce(TcpStream) + Send + 'static,
    ) -> (Conn, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || serve(l.accept().unwrap().0));
        let sock = TcpStream::connect(addr).unwrap();
        (Conn::new(sock, None).unwrap(), t)
    }

    #[test]
    fn a_server_that_stops_reading_costs_at_most_the_high_water_mark_and_its_leaving_ends_the_dump()
    {
        let (_root, ctx, _data, disk) = test_dle(|d| noise_tree(d, 48));
        let (mut conn, t) = connected(|s| {
            // Reads nothing, then leaves.
            std::thread::sleep(Duration::from_secs(3));
            let _ = s.shutdown(std::net::Shutdown::Both);
        });
        let started = Instant::now();
        let mut lines = Vec::new();
        let r = run(&mut conn, &reply_for(&disk), &ctx, &mut |l| {
            lines.push(l.to_string())
        });
        assert!(
            !matches!(r, Ok(Outcome::Done)),
            "a server that left cannot have taken the dump: {r:?} {lines:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "the dump hung");
        let bound = HIGH_WATER + DATA_READ + 64 * 1024;
        // It did wait on the bound (the kernel's buffers took less than the tree).
        assert!(
            conn.peak_pending() >= HIGH_WATER,
            "peak {}",
            conn.peak_pending()
        );
        assert!(
            conn.peak_pending() <= bound,
            "{} bytes held for a server that does not read (bound {bound})",
            conn.peak_pending()
        );
        t.join().unwrap();
    }

    #[test]
    fn a_dump_goes_through_and_the_servers_verdict_is_taken() {
        let (_root, ctx, _data, disk) = test_dle(|d| noise_tree(d, 2));
        let (mut conn, t) = connected(|mut s| {
            // Reads every frame until the client's MESG shows `sendbackup: end`, then
            // answers like ambackupd.
            let mut reader = proto::frame::FrameReader::new();
            let mut mesg = Vec::new();
            let mut data = 0usize;
            let mut buf = vec![0u8; 1 << 16];
            while !mesg.ends_with(b"sendbackup: end\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "client closed early");
                let mut input = &buf[..n];
                while let Some(f) = reader.next(&mut input).unwrap() {
                    match f.handle {
                        499_998 => mesg.extend_from_slice(&f.payload),
                        499_999 => data += f.payload.len(),
                        _ => {}
                    }
                }
            }
            assert!(data > 2 << 20, "DATA carried {data} bytes");
            let mut out = Vec::new();
            for line in [
                &b"start backup: /d\n"[..],
                b"backup done: /d\n",
                b"MESG END\n",
            ] {
                proto::frame::encode_frame(499_998, line, &mut out).unwrap();
            }
            s.write_all(&out).unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
        });
        let mut lines = Vec::new();
        let r = run(&mut conn, &reply_for(&disk), &ctx, &mut |l| {
            lines.push(l.to_string())
        });
        assert_eq!(r.unwrap(), Outcome::Done, "{lines:?}");
        assert_eq!(lines, vec!["start backup: /d", "backup done: /d"]);
        drop(conn);
        t.join().unwrap();
    }
}
