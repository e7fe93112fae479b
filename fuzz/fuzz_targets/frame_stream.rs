//! cargo-fuzz target `frame_stream`: see `proto::fuzz::wire::frame_stream`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::fuzz::wire::frame_stream(data);
});
