#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hitless::fuzz::request_head(data));
