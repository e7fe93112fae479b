//! The `amandad` binary (being written).
fn main() {}
