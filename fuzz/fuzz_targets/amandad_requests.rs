#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| amandad::fuzz::requests(data));
