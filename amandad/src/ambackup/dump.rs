//! One DLE's backup over the connection the BACKUP REP came on (spec §14.4): our own
//! sendbackup machinery runs here with the REP as its request, and its outputs go to the
//! server's stream handles: the archive on DATA, the MESG lines, the index on INDEX. The
//! server answers on MESG (`start backup:`, `backup done:` / `backup failed:`, `MESG END`).
//!
//! The data-phase rules (nothing on DATA before `sendbackup: info end`, the CRCs, when the
//! streams end, the server closing DATA early) are `proto::dataphase::Sender`'s; the MESG
//! lines and the state files are [`BackupRun`]'s, as for amandad. What stays here: the pipes,
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
use crate::services::backup::{BackupRun, Spawned, StreamOutput};
use crate::services::{self, ServiceContext, Start};

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
    let mut server = ServerMesg::new();
    let plan = match services::backup::start(ctx, &reply.request) {
        Start::Backup(plan) => plan,
        Start::Reply(rep) => {
            let text = String::from_utf8_lossy(&rep).trim_end().to_string();
            print(&text);
            return refuse(conn, &streams, &mut server, &text, print);
        }
        Start::Job(_) => {
            return refuse(conn, &streams, &mut server, "unexpected job", print);
        }
    };
    if !plan.spec.client_stages().is_empty() {
        let text = "ambackup cannot run client compression or encryption yet: use server-side compression for this DLE";
        print(&format!("ERROR {text}"));
        return refuse(conn, &streams, &mut server, text, print);
    }
    match BackupRun::spawn(plan.spec) {
        Ok(spawned) => relay(conn, &streams, spawned, &mut server, print),
        Err(e) => {
            print(&format!("ERROR {e}"));
            conn.queue(streams.mesg, &BackupRun::spawn_failure_mesg(&e));
            streams.end_outputs(conn);
            await_verdict(conn, &streams, &mut server, print)
        }
    }
}

/// The dump cannot start: tell the server on MESG, end the streams, take its verdict.
fn refuse(
    conn: &mut Conn,
    streams: &Streams,
    server: &mut ServerMesg,
    why: &str,
    print: Print<'_>,
) -> Result<Outcome, ConnError> {
    conn.queue(
        streams.mesg,
        &MesgLine::error(why.trim_start_matches("ERROR ").as_bytes()).encode(),
    );
    conn.queue(streams.mesg, &MesgLine::End.encode());
    streams.end_outputs(conn);
    await_verdict(conn, streams, server, print)
}

/// Takes the server's frames: MESG lines are printed; returns whether the server ended
/// DATA.
fn take_frames(
    conn: &mut Conn,
    streams: &Streams,
    server: &mut ServerMesg,
    print: Print<'_>,
) -> Result<bool, ConnError> {
    let mut data_closed = false;
    while let Some(f) = conn.next_frame() {
        if f.handle == streams.mesg && !f.is_eof() {
            let lines = server
                .push(&f.payload)
                .map_err(|e| ConnError::Exchange(e.to_string()))?;
            for l in lines {
                print(&l);
            }
        } else if f.handle == streams.data && f.is_eof() {
            data_closed = true;
        }
        // Anything else (the server's ends of INDEX/STATE, stray control frames) is noise.
    }
    Ok(data_closed)
}

/// Everything is sent: waits for `MESG END` (or the end of the connection), then ends MESG.
fn await_verdict(
    conn: &mut Conn,
    streams: &Streams,
    server: &mut ServerMesg,
    print: Print<'_>,
) -> Result<Outcome, ConnError> {
    let mut until = Instant::now() + VERDICT_WAIT;
    loop {
        take_frames(conn, streams, server, print)?;
        if server.ended() || conn.is_closed() {
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
    conn.queue_eof(streams.mesg);
    let _ = conn.flush();
    Ok(server.outcome())
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

fn relay(
    conn: &mut Conn,
    streams: &Streams,
    spawned: Spawned,
    server: &mut ServerMesg,
    print: Print<'_>,
) -> Result<Outcome, ConnError> {
    let Spawned {
        mut run,
        mut child,
        data,
        messages,
    } = spawned;
    set_nonblocking(&data);
    set_nonblocking(&messages);
    let mut links = vec![(Stream::Data, true), (Stream::Mesg, true)];
    links.extend(streams.others.iter().map(|(s, _)| (*s, true)));
    let mut sender = Sender::new(SenderConfig::default(), &links);
    sender.on_acked(Instant::now());
    let index = streams.index();
    let mut data_eof = false;
    let mut msg_eof = false;
    let mut finished = false;
    let mut buf = vec![0u8; DATA_READ];
    let kill = |child: &mut std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
    };
    let mut progress = Instant::now();
    loop {
        while let Some(ev) = sender.poll_event() {
            match ev {
                SenderEvent::Start => {
                    conn.queue(streams.mesg, run.mesg_header());
                    sender.header_sent();
                }
                SenderEvent::Close => streams.end_outputs(conn),
                SenderEvent::Abort(e) => {
                    kill(&mut child);
                    print(&format!("ERROR {e}"));
                    streams.end_outputs(conn);
                    return await_verdict(conn, streams, server, print);
                }
            }
        }
        if finished {
            return await_verdict(conn, streams, server, print);
        }
        if take_frames(conn, streams, server, print)? {
            sender.on_peer_closed(Stream::Data);
            continue;
        }
        if server.ended() || conn.is_closed() {
            // The server gave up on this dump (or the connection is gone): stop tar.
            kill(&mut child);
            if conn.is_closed() {
                return Ok(server.outcome());
            }
            streams.end_outputs(conn);
            return await_verdict(conn, streams, server, print);
        }
        if progress.elapsed() >= STALL {
            kill(&mut child);
            return Err(ConnError::Silent {
                peer: conn.peer(),
                waited: STALL,
            });
        }
        let mut fds = Vec::new();
        // A server that does not read stops both pipes (tar waits), so what we hold for it
        // stays near HIGH_WATER.
        let room = conn.pending() < HIGH_WATER;
        let want_data = room && !data_eof && sender.data_allowed();
        if want_data {
            fds.push(data.as_fd());
        }
        let want_msg = room && !msg_eof;
        if want_msg {
            fds.push(messages.as_fd());
        }
        let before = (conn.pending(), conn.queued_frames());
        let ready = conn.wait(&fds, Some(Instant::now() + Duration::from_secs(10)))?;
        if (conn.pending(), conn.queued_frames()) != before {
            progress = Instant::now();
        }
        let mut ready = ready.into_iter();
        if want_data && ready.next().unwrap_or(false) {
            progress = Instant::now();
            match read_fd(&data, &mut buf) {
                Ok(0) => data_eof = true,
                Ok(n) => {
                    sender.on_unfiltered(&buf[..n]);
                    conn.queue(streams.data, &buf[..n]);
                }
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
                    write_output(conn, streams.mesg, index, &out);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    sender.fail(format!("reading tar's messages: {e}"));
                    continue;
                }
            }
        }
        if data_eof && msg_eof && !finished {
            // Both pipes are at EOF: tar is done (or about to be).
            let status = child
                .wait()
                .map_err(|e| ConnError::Exchange(format!("waiting for tar: {e}")))?;
            let mut out = StreamOutput::default();
            run.finish(
                status,
                (sender.native_crc(), sender.client_crc()),
                None,
                &mut out,
            );
            write_output(conn, streams.mesg, index, &out);
            sender.on_application_done();
            finished = true;
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
