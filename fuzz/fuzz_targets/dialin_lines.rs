//! cargo-fuzz target `dialin_lines`: see `proto::fuzz::wire::dialin_lines`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::fuzz::wire::dialin_lines(data);
});
