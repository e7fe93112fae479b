//! Issue 11: one replay of every committed fuzz corpus, through the crates' own tables of
//! fuzz entry points (`proto::fuzz::targets()`, `conf::fuzz::TARGETS`,
//! `portpool::fuzz::TARGETS`, `amandad::fuzz::TARGETS`, `dumper::fuzz::TARGETS`,
//! `filters::fuzz::TARGETS`), so every
//! input a fuzzer once found interesting stays a regression test on stable Rust.
//!
//! The inventory must match: a corpus directory under `fuzz/corpus/` that no table names, a
//! target without a corpus (or with an empty one), or a target without its cargo-fuzz binary
//! `fuzz/fuzz_targets/<name>.rs` fails, so a corpus cannot be silently skipped.

use std::collections::BTreeMap;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use proto::fuzz::Target;

/// `<repo>/fuzz`.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every crate's targets, by name; a name listed twice is a failure.
fn targets() -> BTreeMap<&'static str, fn(&[u8])> {
    let tables: [(&str, Vec<Target>); 6] = [
        ("proto", proto::fuzz::targets().collect()),
        ("conf", conf::fuzz::TARGETS.to_vec()),
        ("portpool", portpool::fuzz::TARGETS.to_vec()),
        ("amandad", amandad::fuzz::TARGETS.to_vec()),
        ("dumper", dumper::fuzz::TARGETS.to_vec()),
        ("filters", filters::fuzz::TARGETS.to_vec()),
    ];
    let mut all = BTreeMap::new();
    for (krate, table) in tables {
        assert!(!table.is_empty(), "{krate} lists no fuzz target");
        for (name, entry) in table {
            assert!(
                all.insert(name, entry).is_none(),
                "fuzz target {name} is listed twice ({krate})"
            );
        }
    }
    all
}

/// The names of the entries of `dir` (file stems with `strip`), sorted.
fn names_in(dir: &Path, strip: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.expect("dirent")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .map(|n| n.strip_suffix(strip).map_or(n.clone(), str::to_owned))
        .collect();
    names.sort();
    names
}

#[test]
fn every_corpus_has_a_target_and_every_target_a_corpus_and_a_cargo_fuzz_binary() {
    let targets = targets();
    let listed: Vec<&str> = targets.keys().copied().collect();
    let corpora = names_in(&fuzz_dir().join("corpus"), "");
    let binaries = names_in(&fuzz_dir().join("fuzz_targets"), ".rs");
    let mut problems = Vec::new();
    for c in &corpora {
        if !targets.contains_key(c.as_str()) {
            problems.push(format!(
                "fuzz/corpus/{c}: no crate lists a target of that name"
            ));
        }
    }
    for b in &binaries {
        if !targets.contains_key(b.as_str()) {
            problems.push(format!("fuzz/fuzz_targets/{b}.rs: no crate lists it"));
        }
    }
    for name in &listed {
        if !corpora.iter().any(|c| c == name) {
            problems.push(format!("target {name}: no fuzz/corpus/{name}"));
        }
        if !binaries.iter().any(|b| b == name) {
            problems.push(format!("target {name}: no fuzz/fuzz_targets/{name}.rs"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_committed_corpus_replays_through_its_target_without_a_panic() {
    let mut problems = Vec::new();
    let mut replayed = 0usize;
    for (name, entry) in targets() {
        let dir = fuzz_dir().join("corpus").join(name);
        let Ok(read) = fs::read_dir(&dir) else {
            problems.push(format!("{}: missing", dir.display()));
            continue;
        };
        let mut files: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        if files.is_empty() {
            problems.push(format!("{}: empty corpus", dir.display()));
        }
        for file in files {
            match fs::read(&file) {
                Ok(data) => {
                    if catch_unwind(AssertUnwindSafe(|| entry(&data))).is_err() {
                        problems.push(format!("{}: target {name} panicked", file.display()));
                    }
                    replayed += 1;
                }
                Err(e) => problems.push(format!("{}: {e}", file.display())),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(replayed > 0, "no corpus file replayed");
}
