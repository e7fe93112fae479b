//! Helpers the crates' unit tests, the benches and the integration tests share, so that each
//! is written once: deterministic incompressible bytes, a loopback socket pair, executable
//! scripts and hand-made tar headers.
//!
//! A dev-dependency only: nothing here may be reached from production code, and nothing
//! here touches the network beyond 127.0.0.1.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Deterministic, incompressible bytes: one xorshift64 (13, 7, 17) generator, so that a
/// seed always gives the same trees, payloads and volumes.
#[derive(Clone, Debug)]
pub struct Noise(u64);

impl Noise {
    /// The seed most tests use.
    pub const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

    /// The stream that starts after `seed` (0 is replaced: the generator would stay at 0).
    pub fn new(seed: u64) -> Noise {
        Noise(if seed == 0 { Self::SEED } else { seed })
    }

    /// The next 64 bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `n` bytes, the low byte of each step.
    pub fn low_bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// Fills `buf` eight bytes (little-endian) a step.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf.chunks_mut(8) {
            b.copy_from_slice(&self.next_u64().to_le_bytes()[..b.len()]);
        }
    }

    /// `n` bytes filled as [`Noise::fill`] does.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }

    /// Writes `files` files of `mib` MiB each, named `<prefix><i>`, under `dir` (created).
    pub fn write_files(
        &mut self,
        dir: &Path,
        prefix: &str,
        files: usize,
        mib: usize,
    ) -> io::Result<u64> {
        std::fs::create_dir_all(dir)?;
        let mut block = vec![0u8; 1 << 20];
        for f in 0..files {
            let mut out = std::fs::File::create(dir.join(format!("{prefix}{f}")))?;
            for _ in 0..mib {
                self.fill(&mut block);
                io::Write::write_all(&mut out, &block)?;
            }
        }
        Ok((files * mib) as u64 * (1 << 20))
    }
}

/// A connected pair of TCP sockets on loopback: (the connecting end, the accepted end).
pub fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let c = TcpStream::connect(l.local_addr().expect("local_addr")).expect("connect");
    let (s, _) = l.accept().expect("accept");
    (c, s)
}

/// Writes an executable `/bin/sh` script `dir/name` running `body`; returns its path.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
    p
}

/// A GNU tar header block (mode 0644, uid/gid 0, mtime 0) with its checksum, as tar writes
/// it: `kind` is the type flag (`b'0'` file, `b'5'` directory, ...), `link` the link name.
/// Names and links longer than 100 bytes are cut (use a GNU long-name member for those).
pub fn tar_header(name: &[u8], kind: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut b = [0u8; 512];
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    b[100..108].copy_from_slice(b"0000644\0");
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    b[136..148].copy_from_slice(b"00000000000\0");
    b[156] = kind;
    let l = link.len().min(100);
    b[157..157 + l].copy_from_slice(&link[..l]);
    b[257..265].copy_from_slice(b"ustar  \0");
    // The checksum counts its own field as spaces.
    let sum: u64 = b
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(x)
            }
        })
        .sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_deterministic_and_never_stuck_at_zero() {
        let a = Noise::new(7).bytes(64);
        assert_eq!(a, Noise::new(7).bytes(64));
        assert_ne!(a, Noise::new(8).bytes(64));
        assert_ne!(Noise::new(0).next_u64(), 0);
    }

    #[test]
    fn tar_header_checksum_is_what_tar_computes() {
        let h = tar_header(b"./a", b'0', 10, b"");
        let want: u64 = h[..148]
            .iter()
            .chain(&h[156..])
            .map(|&x| u64::from(x))
            .sum::<u64>()
            + 8 * 32;
        let field = std::str::from_utf8(&h[148..154]).unwrap();
        assert_eq!(u64::from_str_radix(field, 8).unwrap(), want);
    }
}
