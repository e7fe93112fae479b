//! Fuzz entry points of the filters, reachable from stable Rust.
//!
//! - `filters_gunzip`: [`crate::gunzip::Gunzip`] on arbitrary bytes, fed whole and in
//!   chunks split at data-chosen offsets with small output buffers: it never panics, every
//!   chunking gives the same bytes and the same verdict, and what it accepts is what
//!   flate2's own multi-member decoder reads (for inputs without NUL padding).
//!
//! The cargo-fuzz crate in `<repo>/fuzz` calls it (`fuzz_targets/filters_gunzip.rs`), and
//! the integration test `fuzz_corpora` replays the committed corpus
//! `<repo>/fuzz/corpus/filters_gunzip/`. What this module must not do: hold decoding logic of its own.

use std::io::Read;

use crate::gunzip::{Gunzip, GunzipError};

/// A fuzz target: its name (the directory under `fuzz/corpus/` and the cargo-fuzz binary)
/// and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// `(name, entry point)` of every target.
pub const TARGETS: &[Target] = &[("filters_gunzip", gunzip)];

/// Output is capped so that a small bomb in the corpus does not take minutes.
const MAX_OUT: usize = 8 << 20;

/// Decodes `data` fed in two parts (cut at `split`) into an output buffer of `out_buf` bytes:
/// what came out (at most a little over 8 MiB) and the verdict.
pub(crate) fn decode_all(
    data: &[u8],
    split: usize,
    out_buf: usize,
) -> (Vec<u8>, Result<(), GunzipError>) {
    let mut d = Gunzip::new();
    let mut out = Vec::new();
    let mut buf = vec![0u8; out_buf.max(1)];
    let parts = [&data[..split], &data[split..]];
    for part in parts {
        let mut rest = part;
        loop {
            match d.decode(rest, &mut buf) {
                Ok(p) => {
                    out.extend_from_slice(&buf[..p.produced]);
                    rest = &rest[p.consumed..];
                    if out.len() > MAX_OUT {
                        return (out, Ok(()));
                    }
                    if p.consumed == 0 && p.produced == 0 {
                        break;
                    }
                }
                Err(e) => return (out, Err(e)),
            }
        }
        assert!(rest.is_empty(), "input left unconsumed without an error");
    }
    (out, d.finish())
}

/// Equal results, except that the inflater's message may differ with the output buffer's
/// size (zlib-rs's fast path words some errors differently); the kind and place may not.
fn same_verdict(a: &Result<(), GunzipError>, b: &Result<(), GunzipError>) -> bool {
    match (a, b) {
        (
            Err(GunzipError::Deflate { member, offset, .. }),
            Err(GunzipError::Deflate {
                member: m2,
                offset: o2,
                ..
            }),
        ) => member == m2 && offset == o2,
        _ => a == b,
    }
}

/// See the module header.
pub fn gunzip(data: &[u8]) {
    let split = data.first().map_or(0, |b| usize::from(*b) * 13) % (data.len() + 1);
    let out_buf = data.get(1).map_or(1, |b| usize::from(*b) + 1);
    let (whole, whole_r) = decode_all(data, data.len(), 64 * 1024);
    let (parts, parts_r) = decode_all(data, split, out_buf);
    if whole.len() > MAX_OUT || parts.len() > MAX_OUT {
        return;
    }
    assert!(
        same_verdict(&whole_r, &parts_r),
        "chunking changed the verdict: {whole_r:?} / {parts_r:?}"
    );
    assert_eq!(whole, parts, "chunking changed the output");
    if whole_r.is_ok() && !data.contains(&0) {
        // Without NUL padding, flate2's decoder must read the same bytes.
        let mut theirs = Vec::new();
        let r = flate2::read::MultiGzDecoder::new(data)
            .take(MAX_OUT as u64 + 1)
            .read_to_end(&mut theirs);
        assert!(r.is_ok(), "we accepted what flate2 refuses: {r:?}");
        assert_eq!(theirs, whole, "we and flate2 read different bytes");
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use std::io::Write;

    /// Two members with header options, then NUL padding: the shape restores see.
    fn valid_stream() -> Vec<u8> {
        let mut v = Vec::new();
        for (i, part) in [&b"usr/share/doc/amanda\n"[..], &[7u8; 3000][..]]
            .iter()
            .enumerate()
        {
            let mut e = flate2::GzBuilder::new()
                .filename(format!("part{i}"))
                .comment("c")
                .extra(vec![1, 2, 3, 4])
                .write(Vec::new(), flate2::Compression::new(i as u32 * 9));
            e.write_all(part).expect("compress");
            v.extend(e.finish().expect("finish"));
        }
        v.extend([0u8; 16]);
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// The fuzz target's invariants on mutated valid streams: flipped bytes, cuts and
        /// insertions at any place (a stable-Rust stand-in for a libFuzzer run).
        #[test]
        fn mutated_streams_keep_the_targets_invariants(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
            insert in proptest::collection::vec(any::<u8>(), 0..8),
            at in any::<prop::sample::Index>(),
            head in any::<[u8; 2]>(),
        ) {
            let mut v = valid_stream();
            for (i, b) in flips {
                let k = i.index(v.len());
                v[k] ^= b;
            }
            let a = at.index(v.len() + 1);
            v.splice(a..a, insert);
            v.truncate(cut.index(v.len() + 1).max(v.len() / 2));
            // The target reads its split point and output size from the first two bytes.
            let mut data = head.to_vec();
            data.extend_from_slice(&v);
            super::gunzip(&v);
            super::gunzip(&data[..]);
        }
    }
}
