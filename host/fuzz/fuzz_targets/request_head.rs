//! cargo-fuzz target: [`weir::fuzz::request_head`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzz::request_head(data));
