//! cargo-fuzz target `tcp_packet`: see `proto::fuzz::wire::tcp_packet`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::fuzz::wire::tcp_packet(data);
});
