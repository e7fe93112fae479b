//! The threads of hostile peers: a shared stop flag, joined on stop or drop, and the round
//! loop of peers that hold connections open and make again the ones the daemon closed.
//!
//! Everything here only paces and counts; what a connection sends is the caller's.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Threads that run until [`Workers::stop`] (or drop) sets their shared flag.
pub(crate) struct Workers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    pub(crate) fn new() -> Workers {
        Workers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }

    /// Runs `work` on a thread of its own; it returns once the flag it is given is set (and
    /// hands the flag on to the threads it starts).
    pub(crate) fn spawn(&mut self, work: impl FnOnce(Arc<AtomicBool>) + Send + 'static) {
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || work(stop)));
    }

    /// Sets the flag and waits for every thread.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Holds `n` connections that `open` makes (`None`: it failed; tried again next round), until
/// `stop`: a round a second, each round counts in `closed` and drops the ones the peer
/// closed, and opens at most `per_round` (new ones and replacements).
pub(crate) fn hold_connections(
    stop: &AtomicBool,
    n: usize,
    per_round: usize,
    closed: &AtomicU64,
    mut open: impl FnMut() -> Option<TcpStream>,
) {
    let mut held: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        let mut fresh = 0;
        for slot in held.iter_mut() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some(s) = slot {
                if !is_closed(s) {
                    continue;
                }
                closed.fetch_add(1, Ordering::Relaxed);
                *slot = None;
            }
            if fresh >= per_round {
                continue;
            }
            fresh += 1;
            *slot = open();
        }
        let spent = round.elapsed();
        if spent < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_secs(1) - spent);
        }
    }
}

/// True when the peer closed or reset `s`.
fn is_closed(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    let _ = s.set_nonblocking(true);
    let gone = match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = s.set_nonblocking(false);
    gone
}
