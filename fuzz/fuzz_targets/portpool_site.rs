#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| portpool::fuzz::portpool_site(data));
