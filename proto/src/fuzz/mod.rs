//! Fuzz entry points, reachable from stable tests (being written).
pub mod bodies;
pub mod wire;
