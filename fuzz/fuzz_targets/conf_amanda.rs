#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| conf::fuzz::conf_amanda(data));
