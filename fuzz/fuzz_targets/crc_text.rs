//! cargo-fuzz target `crc_text`: see `proto::fuzz::wire::crc_text`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::fuzz::wire::crc_text(data);
});
