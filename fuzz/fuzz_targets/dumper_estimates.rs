#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dumper::fuzz::estimates(data));
