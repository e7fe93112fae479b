//! Loopback ports: a free one, and waiting until something listens on one.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// A port that is free on 127.0.0.1 for both UDP and TCP right now.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

/// Waits until `addr` accepts TCP connections (or answers nothing but is bound, for UDP).
pub fn wait_listening_tcp(addr: SocketAddr, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on tcp {addr} after {limit:?}");
}

/// Waits until something is bound to UDP `port` on 127.0.0.1.
pub fn wait_bound_udp(port: u16, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing is bound to udp 127.0.0.1:{port} after {limit:?}");
}
