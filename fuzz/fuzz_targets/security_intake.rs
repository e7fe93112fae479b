//! cargo-fuzz target `security_intake`: see `proto::fuzz::wire::security_intake`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::fuzz::wire::security_intake(data);
});
