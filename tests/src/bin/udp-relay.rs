//! `udp-relay`: a misbehaving path for Amanda's UDP control datagrams, for the firewall
//! tests. It listens where the server sends its requests, forwards each datagram to the
//! daemon, and relays the answers back, duplicating some datagrams and holding others back
//! so that they arrive after later ones (reordering). Each server peer gets its own upstream
//! socket on a reserved port, so the daemon still sees a reserved source port and answers
//! reach the right peer.
//!
//! ```text
//! udp-relay --listen ADDR:PORT --target ADDR:PORT [--dup PERCENT] [--reorder PERCENT]
//!           [--hold-ms N] [--seed N] [--ports LO-HI] [--stats FILE] [--drop-first]
//!
//! `--drop-first` loses the first datagram of each server peer, so that every peer's first
//! request has to be sent again (a deterministic retransmission on top of the random ones).
//! ```
//!
//! Deterministic for a seed (a xorshift generator). With `--stats FILE` it keeps a line of
//! counts in FILE. It runs until killed.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn percent(&mut self, p: u64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % 100 < p
    }
}

struct Held {
    due: Instant,
    from_server: bool,
    peer: SocketAddr,
    bytes: Vec<u8>,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen: SocketAddr = arg(&args, "--listen")
        .and_then(|a| a.parse().ok())
        .expect("--listen ADDR:PORT");
    let target: SocketAddr = arg(&args, "--target")
        .and_then(|a| a.parse().ok())
        .expect("--target ADDR:PORT");
    let num = |n: &str, d: u64| arg(&args, n).and_then(|v| v.parse().ok()).unwrap_or(d);
    let dup = num("--dup", 10);
    let reorder = num("--reorder", 10);
    let hold = Duration::from_millis(num("--hold-ms", 300));
    let mut rng = Rng(num("--seed", 1).max(1));
    let (lo, hi) = arg(&args, "--ports")
        .and_then(|r| {
            let (a, b) = r.split_once('-')?;
            Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?))
        })
        .unwrap_or((600, 700));

    let front = UdpSocket::bind(listen).expect("bind the listening address");
    front.set_nonblocking(true).expect("nonblocking");
    let mut upstream: HashMap<SocketAddr, UdpSocket> = HashMap::new();
    let mut held: Vec<Held> = Vec::new();
    let mut counts = [0u64; 4]; // forwarded, duplicated, reordered, replies
    let mut buf = vec![0u8; 65536];
    let mut next_port = lo;
    let stats = arg(&args, "--stats");
    let drop_first = args.iter().any(|a| a == "--drop-first");
    let mut written = [u64::MAX; 4];
    let send = |sock: &UdpSocket, to: SocketAddr, bytes: &[u8]| {
        let _ = sock.send_to(bytes, to);
    };
    loop {
        let mut idle = true;
        // From the server: forward to the daemon from this peer's upstream socket.
        while let Ok((n, peer)) = front.recv_from(&mut buf) {
            idle = false;
            if let std::collections::hash_map::Entry::Vacant(slot) = upstream.entry(peer) {
                let sock = loop {
                    let port = next_port;
                    next_port = if next_port >= hi { lo } else { next_port + 1 };
                    if let Ok(s) = UdpSocket::bind((target.ip(), port)) {
                        break s;
                    }
                };
                sock.set_nonblocking(true).expect("nonblocking");
                slot.insert(sock);
                if drop_first {
                    counts[0] += 1;
                    continue;
                }
            }
            let bytes = buf[..n].to_vec();
            counts[0] += 1;
            if rng.percent(reorder) {
                counts[2] += 1;
                held.push(Held {
                    due: Instant::now() + hold,
                    from_server: true,
                    peer,
                    bytes,
                });
                continue;
            }
            let sock = &upstream[&peer];
            send(sock, target, &bytes);
            if rng.percent(dup) {
                counts[1] += 1;
                send(sock, target, &bytes);
            }
        }
        // From the daemon: back to the server from the listening address.
        for (peer, sock) in &upstream {
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                idle = false;
                counts[3] += 1;
                let bytes = buf[..n].to_vec();
                if rng.percent(reorder) {
                    counts[2] += 1;
                    held.push(Held {
                        due: Instant::now() + hold,
                        from_server: false,
                        peer: *peer,
                        bytes,
                    });
                    continue;
                }
                send(&front, *peer, &bytes);
                if rng.percent(dup) {
                    counts[1] += 1;
                    send(&front, *peer, &bytes);
                }
            }
        }
        // Held datagrams go out late, after others that came behind them.
        let now = Instant::now();
        let mut i = 0;
        while i < held.len() {
            if held[i].due <= now {
                let h = held.swap_remove(i);
                if h.from_server {
                    if let Some(sock) = upstream.get(&h.peer) {
                        send(sock, target, &h.bytes);
                    }
                } else {
                    send(&front, h.peer, &h.bytes);
                }
            } else {
                i += 1;
            }
        }
        if let Some(path) = &stats
            && counts != written
        {
            let line = format!(
                "forwarded={} duplicated={} reordered={} replies={}\n",
                counts[0], counts[1], counts[2], counts[3]
            );
            let _ = std::fs::write(path, line);
            written = counts;
        }
        if idle {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
