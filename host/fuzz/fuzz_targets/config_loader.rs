//! cargo-fuzz target: [`weir::fuzz::config_loader`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzz::config_loader(data));
