//! Fuzz entry points of the crate, reachable from stable Rust.
//!
//! Every parser has a `pub fn name(data: &[u8])` here that must never panic on any input and
//! asserts the parser's invariants. [`wire`] covers the codecs (datagrams, frames, packets,
//! security checks, CRC texts), [`bodies`] the request/reply bodies. The cargo-fuzz crate in
//! `<repo>/fuzz` calls them (one `fuzz_targets/<name>.rs` per entry of the tables), and the
//! integration test `fuzz_corpora` replays the committed corpora `<repo>/fuzz/corpus/<name>/`
//! through [`targets`], with every other crate's table.
//!
//! What this module must not do: hold parsing logic of its own.

pub mod bodies;
pub mod wire;

/// A fuzz target: its name (the directory under `fuzz/corpus/` and the cargo-fuzz binary)
/// and its entry point. Every crate's `fuzz::TARGETS` table is made of these.
pub type Target = (&'static str, fn(&[u8]));

/// Every fuzz target of the crate, `(name, entry point)`: [`wire::TARGETS`] then
/// [`bodies::TARGETS`].
pub fn targets() -> impl Iterator<Item = (&'static str, fn(&[u8]))> {
    wire::TARGETS.iter().chain(bodies::TARGETS).copied()
}
