//! amandad's DATA path: archive bytes from a pipe (tar's stdout) to a TCP socket, with the
//! CRC-32C of every byte, two ways: buffered (read into user space, CRC, write) and
//! zero-copy (tee for the count and the CRC pass, splice pipe to socket), plus zero-copy
//! without a CRC. Criterion reports bytes/s; the CPU time of the relaying thread per GiB is
//! printed at the end of each case (producer and drain threads are the same in all cases).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use amandad::server::datapath::ZeroCopy;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const TOTAL: usize = 256 << 20;
const STEP: usize = 256 << 10;

/// A pipe fed with TOTAL bytes by a producer thread, and a loopback socket drained by a
/// reader thread.
fn setup() -> (
    OwnedFd,
    TcpStream,
    std::thread::JoinHandle<()>,
    std::thread::JoinHandle<u64>,
) {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    // SAFETY: fcntl on our own pipe.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    let producer = std::thread::spawn(move || {
        let mut f = std::fs::File::from(w);
        let block: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
        let mut left = TOTAL;
        while left > 0 {
            let n = left.min(block.len());
            f.write_all(&block[..n]).expect("produce");
            left -= n;
        }
    });
    let l = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = l.local_addr().expect("addr");
    let drain = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return n,
                Ok(m) => n += m as u64,
            }
        }
    });
    let sock = TcpStream::connect(addr).expect("connect");
    (r, sock, producer, drain)
}

fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes into a zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn buffered(crc: &mut crc32c_state::State) {
    let (pipe, mut sock, producer, drain) = setup();
    let mut buf = vec![0u8; STEP];
    loop {
        // SAFETY: read into our buffer.
        let n = unsafe { libc::read(pipe.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        let chunk = &buf[..n as usize];
        crc.update(chunk);
        sock.write_all(chunk).expect("write");
    }
    drop(sock);
    producer.join().expect("producer");
    assert_eq!(drain.join().expect("drain"), TOTAL as u64);
}

fn zero_copy(crc: Option<&mut crc32c_state::State>) {
    let (pipe, sock, producer, drain) = setup();
    let mut side = ZeroCopy::new(STEP).expect("side pipe");
    let mut crc = crc;
    loop {
        let n = match crc.as_deref_mut() {
            Some(c) => side.take(pipe.as_raw_fd(), Some(&mut |b: &[u8]| c.update(b))),
            None => side.take(pipe.as_raw_fd(), None),
        };
        let n = match n {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::yield_now();
                continue;
            }
            Err(e) => panic!("tee: {e}"),
        };
        let mut left = n;
        while left > 0 {
            // SAFETY: splice between two open descriptors; no user memory.
            let m = unsafe {
                libc::splice(
                    pipe.as_raw_fd(),
                    std::ptr::null_mut(),
                    sock.as_raw_fd(),
                    std::ptr::null_mut(),
                    left,
                    libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE,
                )
            };
            assert!(m > 0, "splice: {}", std::io::Error::last_os_error());
            left -= m as usize;
        }
    }
    drop(sock);
    producer.join().expect("producer");
    assert_eq!(drain.join().expect("drain"), TOTAL as u64);
}

/// CRC-32C state for the benchmark (the same crate amandad uses, through proto).
mod crc32c_state {
    pub struct State(proto::crc::Crc32c);
    impl State {
        pub fn new() -> State {
            State(proto::crc::Crc32c::new())
        }
        pub fn update(&mut self, b: &[u8]) {
            self.0.update(b);
        }
    }
}

fn datapath(c: &mut Criterion) {
    let mut g = c.benchmark_group("amandad_datapath");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    let cases: [(&str, fn()); 3] = [
        ("buffered+crc", || buffered(&mut crc32c_state::State::new())),
        ("splice+crc", || {
            zero_copy(Some(&mut crc32c_state::State::new()))
        }),
        ("splice", || zero_copy(None)),
    ];
    for (name, f) in cases {
        let mut cpu = Duration::ZERO;
        let mut bytes = 0u64;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let c0 = thread_cpu();
                    f();
                    cpu += thread_cpu() - c0;
                    bytes += TOTAL as u64;
                }
                start.elapsed()
            })
        });
        if bytes > 0 {
            eprintln!(
                "amandad_datapath/{name}: relaying thread CPU {:.3} s per GiB",
                cpu.as_secs_f64() / (bytes as f64 / (1u64 << 30) as f64)
            );
        }
    }
    g.finish();
}

criterion_group!(benches, datapath);
criterion_main!(benches);
