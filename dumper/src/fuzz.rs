//! Fuzz entry points of the dumper's parsers, reachable from stable Rust.
//!
//! - `dumper_tar_scan`: the restore's tar member reader ([`crate::tarscan`]), fed in two
//!   chunks split at a data-chosen offset, then again as a second archive of a chain;
//! - `dumper_estimates`: reading a sendsize REP body for a set of requested DLEs
//!   ([`crate::estimate::read_estimates`]).
//!
//! The cargo-fuzz crate in `<repo>/fuzz` calls them (`fuzz_targets/<name>.rs`), and the
//! integration test `fuzz_corpora` replays the committed corpora `<repo>/fuzz/corpus/<name>/`
//! through [`TARGETS`]. What this module must not do: hold parsing logic of its own.

use crate::estimate::{EstimateDle, read_estimates};
use crate::tarscan::{Scanner, TarError, normalize};

/// A fuzz target: its name (the directory under `fuzz/corpus/` and the cargo-fuzz binary)
/// and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// `(name, entry point)` of every target.
pub const TARGETS: &[Target] = &[
    ("dumper_tar_scan", tar_scan),
    ("dumper_estimates", estimates),
];

/// The tar reader never panics, splits anywhere give the same verdict, and every member it
/// accepts has a safe, normalised path.
pub fn tar_scan(data: &[u8]) {
    let split = data.first().map_or(0, |b| usize::from(*b) * 7) % (data.len() + 1);
    let whole = {
        let mut s = Scanner::new();
        let r = s.feed(data).and_then(|()| s.finish());
        (r, s.members().to_vec())
    };
    let parts = {
        let mut s = Scanner::new();
        let r = s
            .feed(&data[..split])
            .and_then(|()| s.feed(&data[split..]))
            .and_then(|()| s.finish());
        (r, s.members().to_vec())
    };
    assert_eq!(
        whole.0.is_ok(),
        parts.0.is_ok(),
        "chunking changed the verdict"
    );
    if whole.0.is_ok() {
        assert_eq!(whole.1, parts.1);
    }
    for m in &whole.1 {
        assert_eq!(normalize(&m.path).as_deref(), Ok(m.path.as_slice()));
        assert!(!m.path.starts_with(b"/"));
    }
    // As the second archive of a chain.
    let mut s = Scanner::new();
    if s.feed(data).and_then(|()| s.finish()).is_ok() {
        s.next_archive();
        let r: Result<(), TarError> = s.feed(data).and_then(|()| s.finish());
        let _ = r;
    }
}

/// Reading estimates never panics and answers once per requested DLE.
pub fn estimates(data: &[u8]) {
    let dles: Vec<EstimateDle> = ["/home", "/x y", "C:/"]
        .iter()
        .enumerate()
        .map(|(i, d)| EstimateDle {
            id: i,
            dle: proto::dle::Dle {
                program: "GNUTAR".into(),
                disk: Some((*d).into()),
                ..proto::dle::Dle::default()
            },
            level: i as i32 % 2,
            dumpdate: "1970:1:1:0:0:0".into(),
            client: true,
        })
        .collect();
    let asked: Vec<&EstimateDle> = dles.iter().collect();
    let r = read_estimates("client", data, &asked);
    assert_eq!(r.len(), asked.len());
}
