//! cargo-fuzz target `udp_datagram`: see `proto::fuzz::wire::udp_datagram`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::fuzz::wire::udp_datagram(data);
});
