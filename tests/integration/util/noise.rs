//! Deterministic, incompressible test bytes: one xorshift64 (13, 7, 17) generator for the
//! trees, payloads and volumes the tests write, so that a seed always gives the same data.

/// An xorshift64 stream (never seed it with 0: the generator would stay at 0).
pub struct Noise(u64);

impl Noise {
    /// The stream that starts after `seed`.
    pub fn new(seed: u64) -> Noise {
        Noise(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
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
}
