#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hitless::fuzz::response_head(data));
