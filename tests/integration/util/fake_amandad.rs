//! A fake amandad that speaks just enough bsdtcp for the dumper's tests: it answers noop,
//! sendsize and sendbackup like the real one, then plays a [`Script`] on the sendbackup
//! streams: a well-behaved dump (optionally slow), or one of the hostile clients of issue 10
//! (endless MESG lines, a MESG byte trickle, a huge INDEX generated on the fly, no CRC lines,
//! a wrong `size` line, DATA before `info end`). Each DLE picks its script by disk name.
//! [`Script::GnuTar`] sends a real GNU tar stream of the DLE's directory, with the client's
//! incremental state kept per DLE under names that never collide (our amandad and the real
//! client name those files after the sanitised disk name, so DLEs such as `/x/a/b` and
//! `/x/a_b` share one).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::{Duration, Instant};

use proto::crc::Crc32c;
use proto::frame::{FrameReader, encode_frame};
use proto::pkt::PacketType;
use proto::security::SecurityLine;
use proto::tcp::Packet;

use super::Noise;
use super::workers::Workers;

/// What the client does once its sendbackup REP was ACKed.
#[derive(Clone, Debug)]
pub enum Script {
    /// A correct dump of `bytes` DATA bytes, sleeping `delay` after each 32 KiB frame.
    Good { bytes: usize, delay: Duration },
    /// MESG lines as fast as the server reads them, forever; no `info end`, no DATA.
    EndlessMesg,
    /// One MESG byte (never a newline) every 200 ms, forever.
    MesgTrickle,
    /// A correct start, then `bytes` of INDEX lines generated on the fly.
    HugeIndex { bytes: u64 },
    /// A correct dump without the CRC lines.
    NoCrc,
    /// A correct dump whose `size` line is 100 KiB too large.
    WrongSize,
    /// `bytes` of DATA before `sendbackup: info end`.
    EarlyData { bytes: usize },
    /// The header lines and 512 KiB of DATA, then the connection drops (`hang`: first it goes
    /// quiet, the connection open, until the fake is dropped): a client that dies mid-dump.
    Dies { hang: bool },
    /// A real dump of the directory named by the disk: GNU tar, incremental by level, with
    /// its state files in `state`.
    GnuTar { state: PathBuf },
}

const DATA: u32 = 499_999;
const MESG: u32 = 499_998;
const INDEX: u32 = 499_997;

/// The fake, serving until dropped.
pub struct FakeAmandad {
    pub port: u16,
    /// The accept loop, stopped on drop.
    _accept: Workers,
}

impl FakeAmandad {
    /// Listens on a free 127.0.0.1 port; DLEs not in `scripts` get `default`.
    pub fn start(scripts: HashMap<String, Script>, default: Script) -> FakeAmandad {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake amandad");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let scripts = Arc::new(scripts);
        let mut accept = Workers::new();
        accept.spawn(move |stop| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (stop, scripts, default) =
                            (Arc::clone(&stop), Arc::clone(&scripts), default.clone());
                        std::thread::spawn(move || serve(s, &scripts, &default, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeAmandad {
            port,
            _accept: accept,
        }
    }
}

/// Every `<tag>...</tag>` of a request body.
fn elements(body: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else {
            break;
        };
        out.push(after[..j].to_owned());
        rest = &after[j..];
    }
    out
}

fn disks(body: &str) -> Vec<String> {
    elements(body, "disk")
}

/// Writes `p` as one frame on `handle`.
pub fn send_packet(s: &mut TcpStream, handle: u32, p: Packet<'_>) -> io::Result<()> {
    let mut out = Vec::new();
    p.encode_frame(handle, &mut out).map_err(io::Error::other)?;
    s.write_all(&out)
}

/// A frame's packet as a fake client takes it: its type and body (without the SECURITY
/// line), a REQ already ACKed; `None` when the payload is no packet.
pub fn take_packet(s: &mut TcpStream, f: &proto::frame::Frame<'_>) -> Option<(PacketType, String)> {
    let p = Packet::parse(&f.payload).ok()?;
    let body = String::from_utf8_lossy(p.body_without_security()).into_owned();
    if p.ptype == PacketType::Req {
        let _ = send_packet(s, f.handle, Packet::ack());
    }
    Some((p.ptype, body))
}

fn serve(mut s: TcpStream, scripts: &HashMap<String, Script>, default: &Script, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let features = proto::features::Features::amanda_3_5_1().to_hex();
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 65536];
    let mut sendbackup: Option<(u32, Script, String, u32)> = None;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut input = &buf[..n];
        while let Ok(Some(f)) = reader.next(&mut input) {
            if f.is_eof() {
                continue;
            }
            let Some((ptype, body)) = take_packet(&mut s, &f) else {
                continue;
            };
            match ptype {
                PacketType::Req => {
                    let rep = if body.starts_with("SERVICE noop") {
                        format!("OPTIONS features={features};\n")
                    } else if body.starts_with("SERVICE sendsize") {
                        let mut r = format!("OPTIONS features={features};\n");
                        for d in disks(&body) {
                            r.push_str(&format!("{d} 0 SIZE 64\n{d} 1 SIZE 64\n"));
                        }
                        r
                    } else {
                        let disk = disks(&body).into_iter().next().unwrap_or_default();
                        let level = elements(&body, "level")
                            .first()
                            .and_then(|l| l.trim().get(..1)?.parse().ok())
                            .unwrap_or(0);
                        let script = scripts.get(&disk).unwrap_or(default).clone();
                        sendbackup = Some((f.handle, script, disk, level));
                        format!(
                            "CONNECT DATA {DATA} MESG {MESG} INDEX {INDEX}\nOPTIONS features={features};\n"
                        )
                    };
                    let _ = send_packet(
                        &mut s,
                        f.handle,
                        Packet::new(PacketType::Rep, rep.into_bytes()),
                    );
                }
                PacketType::Ack if sendbackup.as_ref().is_some_and(|b| b.0 == f.handle) => {
                    if let Some((handle, script, disk, level)) = sendbackup.take() {
                        let _ = play(&mut s, handle, &script, &disk, level, stop);
                    }
                    return;
                }
                // The REP of noop or sendsize was ACKed: the exchange's handle is closed.
                PacketType::Ack => {
                    let _ = frame(&mut s, f.handle, &[]);
                }
                _ => {}
            }
        }
    }
}

/// Writes one frame (`payload` empty: the end of `handle`).
pub fn frame(s: &mut TcpStream, handle: u32, payload: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    encode_frame(handle, payload, &mut out).map_err(io::Error::other)?;
    s.write_all(&out)
}

fn stopped(stop: &AtomicBool) -> io::Result<()> {
    if stop.load(Ordering::Relaxed) {
        Err(io::Error::other("stopped"))
    } else {
        Ok(())
    }
}

/// Deterministic, not very compressible bytes.
fn payload(n: usize, seed: &str) -> Vec<u8> {
    let seed = seed.bytes().fold(0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    Noise::new(seed).low_bytes(n)
}

/// A GNU tar stream of `disk` at `level` (0 or 1), its state kept in `state` under a name
/// made of the disk's bytes in hex, as the real client would keep it for one DLE.
fn gnutar(disk: &str, level: u32, state: &Path) -> io::Result<Vec<u8>> {
    let key: String = disk.bytes().map(|b| format!("{b:02x}")).collect();
    let snap = |l: u32| state.join(format!("{key}_{l}"));
    let new = state.join(format!("{key}_{level}.new"));
    std::fs::create_dir_all(state)?;
    let _ = std::fs::remove_file(&new);
    if level > 0 {
        std::fs::copy(snap(level - 1), &new)?;
    }
    let out = Command::new("tar")
        .arg("--create")
        .arg("--file=-")
        .arg(format!("--directory={disk}"))
        .arg(format!("--listed-incremental={}", new.display()))
        .args([
            "--one-file-system",
            "--sparse",
            "--atime-preserve=system",
            ".",
        ])
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    std::fs::rename(&new, snap(level))?;
    Ok(out.stdout)
}

fn play(
    s: &mut TcpStream,
    control: u32,
    script: &Script,
    disk: &str,
    level: u32,
    stop: &AtomicBool,
) -> io::Result<()> {
    // The client closes the request's handle, as the real one does.
    frame(s, control, &[])?;
    let start = format!(
        "sendbackup: start [127.0.0.1:{disk} level {level}]\nsendbackup: info BACKUP=/bin/tar\nsendbackup: info RECOVER_CMD=/bin/tar -xpGf - ...\n"
    );
    match script {
        Script::EndlessMesg => {
            frame(s, MESG, start.as_bytes())?;
            let lines: String = (0..1000)
                .map(|i| format!("| chatter line {i} of an endless stream\n"))
                .collect();
            loop {
                stopped(stop)?;
                frame(s, MESG, lines.as_bytes())?;
            }
        }
        Script::MesgTrickle => {
            frame(s, MESG, start.as_bytes())?;
            loop {
                stopped(stop)?;
                frame(s, MESG, b"x")?;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Script::Dies { hang } => {
            frame(s, MESG, format!("{start}sendbackup: info end\n").as_bytes())?;
            for _ in 0..16 {
                frame(s, DATA, &[0x5a; 32768])?;
            }
            while *hang && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            std::thread::sleep(Duration::from_millis(200));
            s.shutdown(Shutdown::Both)
        }
        Script::EarlyData { bytes } => {
            frame(s, MESG, start.as_bytes())?;
            let chunk = vec![0x5a; 65536];
            let mut sent = 0;
            while sent < *bytes {
                stopped(stop)?;
                frame(s, DATA, &chunk)?;
                sent += chunk.len();
            }
            frame(s, MESG, b"sendbackup: info end\n")?;
            finish_streams(s)
        }
        Script::Good { .. }
        | Script::NoCrc
        | Script::WrongSize
        | Script::HugeIndex { .. }
        | Script::GnuTar { .. } => {
            frame(s, MESG, format!("{start}sendbackup: info end\n").as_bytes())?;
            let (data, delay) = match script {
                Script::Good { bytes, delay } => (payload(*bytes, disk), *delay),
                Script::GnuTar { state } => match gnutar(disk, level, state) {
                    Ok(d) => (d, Duration::ZERO),
                    Err(e) => {
                        let e = format!("sendbackup: error [fake tar: {e}]\n");
                        frame(s, MESG, e.as_bytes())?;
                        return finish_streams(s);
                    }
                },
                _ => (payload(200_000, disk), Duration::ZERO),
            };
            let bytes = data.len();
            let mut crc = Crc32c::new();
            for chunk in data.chunks(32 * 1024) {
                stopped(stop)?;
                frame(s, DATA, chunk)?;
                crc.update(chunk);
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
            }
            frame(s, INDEX, b"/\n/file\n")?;
            if let Script::HugeIndex { bytes } = script {
                // One block sent again and again: building lines one by one in a debug build
                // on a loaded machine was slower than `dtimeout`, and the dump then ended in a
                // data timeout before it reached the index limit under test.
                let mut block = String::new();
                for i in 0u64.. {
                    if block.len() >= 60_000 {
                        break;
                    }
                    block.push_str(&format!("/a/directory/with/a/file-{i:012}\n"));
                }
                let mut sent = 0u64;
                while sent < *bytes {
                    stopped(stop)?;
                    frame(s, INDEX, block.as_bytes())?;
                    sent += block.len() as u64;
                }
            }
            let c = crc.value();
            let mut trailer = format!("| Total bytes written: {bytes}\n");
            if !matches!(script, Script::NoCrc) {
                trailer.push_str(&format!(
                    "sendbackup: native-CRC {c}\nsendbackup: client-CRC {c}\n"
                ));
            }
            let kb = bytes.div_ceil(1024)
                + if matches!(script, Script::WrongSize) {
                    100
                } else {
                    0
                };
            trailer.push_str(&format!("sendbackup: size {kb}\nsendbackup: end\n"));
            frame(s, MESG, trailer.as_bytes())?;
            finish_streams(s)
        }
    }
}

/// Ends DATA, INDEX and MESG, waits for the server to answer each with its own end (so
/// that the client closes first, as a real one does), then closes.
fn finish_streams(s: &mut TcpStream) -> io::Result<()> {
    for h in [DATA, INDEX, MESG] {
        frame(s, h, &[])?;
    }
    let until = Instant::now() + Duration::from_secs(10);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reader = FrameReader::new();
    let mut ended = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until && ended.len() < 3 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut input = &buf[..n];
                while let Ok(Some(f)) = reader.next(&mut input) {
                    if f.is_eof() && [DATA, INDEX, MESG].contains(&f.handle) {
                        ended.push(f.handle);
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = s.shutdown(Shutdown::Both);
    Ok(())
}
