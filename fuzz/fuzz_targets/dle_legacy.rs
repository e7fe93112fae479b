#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| proto::fuzz::bodies::dle_legacy(data));
