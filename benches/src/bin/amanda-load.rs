//! `amanda-load`: a load generator for Amanda client daemons (the real amandad or ours), for
//! the comparison scripts in benches/. It speaks just enough of the protocol to run noop
//! exchanges as fast as the daemon answers, hold many exchanges open at once, or run one
//! sendbackup and throw the data away.
//!
//! It must not be the bottleneck: one thread per connection slot for bsdtcp, one socket
//! with many handles in flight for bsd, no allocation per packet beyond the send buffer.
//! Needs root (requests must come from reserved ports).
//!
//! ```text
//! amanda-load noop --auth bsd|bsdtcp [--host ADDR] --port P [--concurrency 16] [--seconds 5]
//! amanda-load hold --port P [--count 1000] [--seconds 5]      (bsd: REPs are never ACKed)
//! amanda-load sendbackup --auth bsdtcp --port P --dir DIR      (amgtar level 0, data discarded)
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const FEATURES: &str = "ffffffff9efefbfffffffffffffff3fffbf71f";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let num = |name: &str, default: u64| -> Result<u64> {
        get(name).map_or(Ok(default), |v| {
            v.parse().with_context(|| format!("{name} {v}"))
        })
    };
    let port = num("--port", 10080)? as u16;
    let host: std::net::IpAddr = get("--host")
        .unwrap_or_else(|| "127.0.0.1".into())
        .parse()
        .context("--host ADDR")?;
    let auth = get("--auth").unwrap_or_else(|| "bsd".into());
    match args.first().map(String::as_str) {
        Some("noop") => {
            let c = num("--concurrency", 16)? as usize;
            let secs = num("--seconds", 5)?;
            let r = if auth == "bsdtcp" {
                noop_tcp(SocketAddr::new(host, port), c, Duration::from_secs(secs))?
            } else {
                noop_udp(SocketAddr::new(host, port), c, Duration::from_secs(secs))?
            };
            println!(
                "auth={auth} concurrency={c} exchanges={} failures={} rate={:.0}/s median={:.3}ms p99={:.3}ms",
                r.done,
                r.failed,
                r.done as f64 / r.elapsed.as_secs_f64(),
                r.quantile(0.5) * 1e3,
                r.quantile(0.99) * 1e3
            );
        }
        Some("hold") => hold_udp(
            SocketAddr::new(host, port),
            num("--count", 1000)? as usize,
            num("--seconds", 5)?,
        )?,
        Some("sendbackup") => {
            let dir = get("--dir").context("--dir DIR")?;
            sendbackup_tcp(SocketAddr::new(host, port), &dir)?;
        }
        _ => bail!("usage: amanda-load noop|hold|sendbackup ... (see the source header)"),
    }
    Ok(())
}

struct Run {
    done: u64,
    failed: u64,
    elapsed: Duration,
    latencies: Vec<f64>,
}

impl Run {
    fn quantile(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let mut v = self.latencies.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() - 1) as f64 * q) as usize]
    }
}

fn reserved_udp() -> Result<UdpSocket> {
    // A different port each run: a daemon may still be retransmitting REPs of an earlier
    // run to the port the previous one used.
    let start = (handle_base() >> 8) % 400;
    for i in 0..400 {
        let p = 600 + ((start + i) % 400) as u16;
        if let Ok(s) = UdpSocket::bind(("0.0.0.0", p)) {
            return Ok(s);
        }
    }
    bail!("no free reserved UDP port (run as root)")
}

fn handle_base() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_secs() & 0xffff) << 16 | u64::from(std::process::id() & 0xff) << 8
}

fn udp_req(handle: u64, service: &str) -> Vec<u8> {
    format!(
        "Amanda 3.5 REQ HANDLE 000-{handle:08x} SEQ 1\nSECURITY USER backup\nSERVICE {service}\nOPTIONS features={FEATURES};\n"
    )
    .into_bytes()
}

/// Parses `Amanda 3.5 <TYPE> HANDLE 000-<hex> SEQ ...`: (type, handle).
fn udp_header(d: &[u8]) -> Option<(&[u8], u64)> {
    let line = d.split(|&b| b == b'\n').next()?;
    let mut w = line.split(|&b| b == b' ');
    let _amanda = w.next()?;
    let _ver = w.next()?;
    let ty = w.next()?;
    let _h = w.next()?;
    let handle = std::str::from_utf8(w.next()?.strip_prefix(b"000-")?).ok()?;
    Some((ty, u64::from_str_radix(handle, 16).ok()?))
}

fn noop_udp(dest: SocketAddr, concurrency: usize, length: Duration) -> Result<Run> {
    let sock = reserved_udp()?;
    sock.connect(dest)?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    // Handles unique to this run: a daemon may still hold exchanges of an earlier run from
    // the same source port.
    let mut next = handle_base();
    let mut in_flight = std::collections::HashMap::new();
    let start = Instant::now();
    let mut run = Run {
        done: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    let mut buf = vec![0u8; 65536];
    while in_flight.len() < concurrency {
        sock.send(&udp_req(next, "noop"))?;
        in_flight.insert(next, Instant::now());
        next += 1;
    }
    while start.elapsed() < length {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let Some((ty, h)) = udp_header(&buf[..n]) else {
                    continue;
                };
                if ty != b"REP" {
                    continue;
                }
                let ack = format!("Amanda 3.5 ACK HANDLE 000-{h:08x} SEQ 1\n");
                sock.send(ack.as_bytes())?;
                if let Some(t) = in_flight.remove(&h) {
                    run.done += 1;
                    run.latencies.push(t.elapsed().as_secs_f64());
                    sock.send(&udp_req(next, "noop"))?;
                    in_flight.insert(next, Instant::now());
                    next += 1;
                }
            }
            Err(_) => {
                // Lost exchanges are replaced so the concurrency stays constant.
                let stale: Vec<u64> = in_flight
                    .iter()
                    .filter(|(_, t)| t.elapsed() > Duration::from_secs(2))
                    .map(|(h, _)| *h)
                    .collect();
                for h in stale {
                    in_flight.remove(&h);
                    run.failed += 1;
                    sock.send(&udp_req(next, "noop"))?;
                    in_flight.insert(next, Instant::now());
                    next += 1;
                }
            }
        }
    }
    run.elapsed = start.elapsed();
    Ok(run)
}

fn reserved_tcp(dest: SocketAddr, slot: usize, attempt: u64) -> Result<TcpStream> {
    // Each slot cycles through its own share of 512..1023 so slots never compete.
    for i in 0..500u64 {
        let p = 512 + ((slot as u64 * 31 + attempt * 7 + i) % 500) as u16;
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        // Closing with RST leaves no TIME_WAIT behind, so ports are reusable at once.
        s.set_linger(Some(Duration::ZERO))?;
        if s.bind(&SocketAddr::from(([0, 0, 0, 0], p)).into()).is_err() {
            continue;
        }
        if s.connect(&dest.into()).is_ok() {
            let t: TcpStream = s.into();
            t.set_nodelay(true)?;
            return Ok(t);
        }
    }
    bail!("no reserved TCP source port could connect")
}

fn frame(handle: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(&handle.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn read_frame(s: &mut TcpStream) -> Result<(u32, Vec<u8>)> {
    let mut h = [0u8; 8];
    s.read_exact(&mut h)?;
    let len = u32::from_be_bytes(h[0..4].try_into()?) as usize;
    let handle = u32::from_be_bytes(h[4..8].try_into()?);
    let mut p = vec![0u8; len];
    s.read_exact(&mut p)?;
    Ok((handle, p))
}

fn tcp_req_payload(service: &str, extra: &str) -> Vec<u8> {
    let mut p = vec![0u8];
    p.extend_from_slice(
        format!("SECURITY USER backup\nSERVICE {service}\nOPTIONS features={FEATURES};{extra}\n")
            .as_bytes(),
    );
    p.push(0);
    p
}

fn noop_tcp(dest: SocketAddr, concurrency: usize, length: Duration) -> Result<Run> {
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut threads = Vec::new();
    for slot in 0..concurrency {
        let stop = stop.clone();
        let failed = failed.clone();
        threads.push(std::thread::spawn(move || {
            let mut lat = Vec::new();
            let req = frame(1, &tcp_req_payload("noop", ""));
            let ack = frame(1, &[3, 0]);
            let mut attempt = 0u64;
            while !stop.load(Ordering::Relaxed) {
                attempt += 1;
                let t = Instant::now();
                let ok = (|| -> Result<()> {
                    let mut s = reserved_tcp(dest, slot, attempt)?;
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    s.write_all(&req)?;
                    loop {
                        let (_, p) = read_frame(&mut s)?;
                        if p.first() == Some(&1) {
                            s.write_all(&ack)?;
                            return Ok(());
                        }
                    }
                })();
                match ok {
                    Ok(()) => lat.push(t.elapsed().as_secs_f64()),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    std::thread::sleep(length);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in threads {
        latencies.extend(t.join().unwrap_or_default());
    }
    Ok(Run {
        done: latencies.len() as u64,
        failed: failed.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
        latencies,
    })
}

/// Opens `count` noop exchanges whose REPs are never ACKed (the daemon keeps each one for
/// its REP retransmissions), prints how many REPs came back, then waits so that the RSS of
/// the daemon can be read while they are all in flight.
fn hold_udp(dest: SocketAddr, count: usize, secs: u64) -> Result<()> {
    let sock = reserved_udp()?;
    sock.connect(dest)?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    let base = handle_base();
    for h in base..base + count as u64 {
        sock.send(&udp_req(h, "noop"))?;
    }
    let mut reps = std::collections::HashSet::new();
    let mut buf = vec![0u8; 65536];
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if let Ok(n) = sock.recv(&mut buf)
            && let Some((b"REP", h)) = udp_header(&buf[..n])
        {
            reps.insert(h);
        }
    }
    println!("in_flight={count} reps={}", reps.len());
    Ok(())
}

/// A frame reader that discards payload without copying it out of one large buffer.
struct FrameStream {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

enum Piece<'a> {
    /// A whole control or MESG frame (small), or the end of a stream (empty).
    Frame(u32, &'a [u8]),
    /// `n` payload bytes of a frame on `handle` that the caller wants counted, not kept.
    Skipped(usize),
}

impl FrameStream {
    fn new() -> FrameStream {
        FrameStream {
            buf: vec![0; 4 << 20],
            start: 0,
            end: 0,
        }
    }

    fn fill(&mut self, s: &mut TcpStream) -> Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = s.read(&mut self.buf[self.end..])?;
        if n == 0 {
            bail!("connection closed");
        }
        self.end += n;
        Ok(())
    }

    /// The next piece; frames on `skip` handles are counted, never buffered whole.
    fn next(&mut self, s: &mut TcpStream, skip: u32) -> Result<Piece<'_>> {
        while self.end - self.start < 8 {
            self.fill(s)?;
        }
        let h = &self.buf[self.start..self.start + 8];
        let len = u32::from_be_bytes(h[0..4].try_into()?) as usize;
        let handle = u32::from_be_bytes(h[4..8].try_into()?);
        if handle == skip && len > 0 {
            self.start += 8;
            let mut left = len;
            while left > 0 {
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                    self.fill(s)?;
                }
                let take = left.min(self.end - self.start);
                self.start += take;
                left -= take;
            }
            return Ok(Piece::Skipped(len));
        }
        while self.end - self.start < 8 + len {
            self.fill(s)?;
        }
        let from = self.start + 8;
        self.start = from + len;
        Ok(Piece::Frame(handle, &self.buf[from..from + len]))
    }
}

/// Runs one amgtar level-0 sendbackup of `dir` over bsdtcp and discards the data. Prints the
/// byte count and the rate.
fn sendbackup_tcp(dest: SocketAddr, dir: &str) -> Result<()> {
    let mut s = reserved_tcp(dest, 0, 1)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let _ = socket2::SockRef::from(&s).set_recv_buffer_size(4 << 20);
    let dle = format!(
        "<dle>\n  <program>APPLICATION</program>\n  <disk>{dir}</disk>\n  <level>0</level>\n  <auth>bsdtcp</auth>\n  <record>NO</record>\n  <index>YES</index>\n  <datapath>AMANDA</datapath>\n  <backup-program>\n    <plugin>amgtar</plugin>\n  </backup-program>\n</dle>\n"
    );
    let mut payload = tcp_req_payload("sendbackup", "maxdumps=1;hostname=localhost;config=bench;");
    payload.pop();
    payload.extend_from_slice(dle.as_bytes());
    payload.push(0);
    let start = Instant::now();
    s.write_all(&frame(1, &payload))?;
    let mut reader = FrameStream::new();
    let mut streams = std::collections::HashMap::<u32, &str>::new();
    let mut data_handle = u32::MAX;
    let mut open = 0usize;
    let mut data = 0u64;
    let mut mesg = Vec::new();
    let mut to_send = Vec::new();
    loop {
        let piece = reader.next(&mut s, data_handle)?;
        let (h, p) = match piece {
            Piece::Skipped(n) => {
                data += n as u64;
                continue;
            }
            Piece::Frame(h, p) => (h, p),
        };
        if h == 1 {
            if p.first() == Some(&1) {
                to_send.push(frame(1, &[3, 0]));
                let text = String::from_utf8_lossy(&p[1..]).into_owned();
                let mut w = text.split_whitespace();
                if w.next() != Some("CONNECT") {
                    bail!("sendbackup refused: {text}");
                }
                while let (Some(name), Some(id)) = (w.next(), w.next()) {
                    if let Ok(id) = id.parse::<u32>() {
                        let name: &'static str = match name {
                            "DATA" => "DATA",
                            "MESG" => "MESG",
                            "INDEX" => "INDEX",
                            _ => "STATE",
                        };
                        if name == "DATA" {
                            data_handle = id;
                        }
                        streams.insert(id, name);
                        open += 1;
                    }
                    if name == "STATE" {
                        break;
                    }
                }
            }
        } else {
            match streams.get(&h) {
                Some(_) if p.is_empty() => {
                    to_send.push(frame(h, &[]));
                    open -= 1;
                }
                Some(&"MESG") => mesg.extend_from_slice(p),
                _ => {}
            }
        }
        for f in to_send.drain(..) {
            s.write_all(&f)?;
        }
        if open == 0 && !streams.is_empty() {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&mesg);
    let ok = text.contains("sendbackup: end");
    println!(
        "bytes={data} seconds={secs:.3} rate={:.1}MiB/s mesg_end={ok}",
        data as f64 / secs / (1 << 20) as f64
    );
    Ok(())
}
