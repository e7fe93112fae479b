//! The privileged tar helper (being written).
fn main() {}
