//! (being written)

/// Fuzz targets of this module: (name under fuzz/corpus/, entry point).
pub const TARGETS: &[(&str, fn(&[u8]))] = &[];
