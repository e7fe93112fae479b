//! Fuzz entry points of the crate, reachable from stable Rust.
//!
//! Every parser has a `pub fn name(data: &[u8])` here that must never panic on any input and
//! asserts the parser's invariants. [`wire`] covers the codecs (datagrams, frames, packets,
//! security checks, CRC texts), [`bodies`] the request/reply bodies. The cargo-fuzz crate in
//! `<repo>/fuzz` calls them (one `fuzz_targets/<name>.rs` per entry of the tables), and the
//! test below replays the committed corpora `<repo>/fuzz/corpus/<name>/` in `cargo test`.
//!
//! What this module must not do: hold parsing logic of its own.

pub mod bodies;
pub mod wire;

/// A fuzz target: its name (the directory under `fuzz/corpus/` and the cargo-fuzz binary)
/// and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// Every fuzz target of the crate, `(name, entry point)`: [`wire::TARGETS`] then
/// [`bodies::TARGETS`].
pub fn targets() -> impl Iterator<Item = (&'static str, fn(&[u8]))> {
    wire::TARGETS.iter().chain(bodies::TARGETS).copied()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::path::{Path, PathBuf};

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("fuzz")
    }

    #[test]
    fn target_names_are_unique() {
        let mut seen = BTreeSet::new();
        for (name, _) in super::targets() {
            assert!(seen.insert(name), "fuzz target {name} is listed twice");
        }
    }

    #[test]
    fn every_target_has_a_cargo_fuzz_binary() {
        let dir = fuzz_dir().join("fuzz_targets");
        for (name, _) in super::targets() {
            let file = dir.join(format!("{name}.rs"));
            assert!(file.is_file(), "{} is missing", file.display());
        }
    }

    /// Replays every committed corpus file. A listed target without a corpus directory (or
    /// with an empty one) fails: corpora must stay committed.
    #[test]
    fn committed_corpora_replay_without_panics() {
        let root = fuzz_dir().join("corpus");
        let mut problems = Vec::new();
        let mut replayed = 0usize;
        for (name, entry) in super::targets() {
            let dir = root.join(name);
            let files = match fs::read_dir(&dir) {
                Ok(rd) => {
                    let mut files: Vec<PathBuf> =
                        rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
                    files.sort();
                    files
                }
                Err(e) => {
                    problems.push(format!("{}: {e}", dir.display()));
                    continue;
                }
            };
            if files.is_empty() {
                problems.push(format!("{}: empty corpus", dir.display()));
            }
            for file in files.iter().filter(|f| f.is_file()) {
                let data = match fs::read(file) {
                    Ok(d) => d,
                    Err(e) => {
                        problems.push(format!("{}: {e}", file.display()));
                        continue;
                    }
                };
                if catch_unwind(AssertUnwindSafe(|| entry(&data))).is_err() {
                    problems.push(format!("{}: target {name} panicked", file.display()));
                }
                replayed += 1;
            }
        }
        assert!(
            problems.is_empty(),
            "fuzz corpus replay failed:\n{}",
            problems.join("\n")
        );
        assert!(replayed > 0, "no corpus file replayed");
    }
}
