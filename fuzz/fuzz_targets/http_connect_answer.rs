//! cargo-fuzz target `http_connect_answer`: see `proto::fuzz::wire::http_connect_answer`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::fuzz::wire::http_connect_answer(data);
});
