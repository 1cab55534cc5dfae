//! cargo-fuzz target: [`weir::fuzz::h2_frames`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzz::h2_frames(data));
