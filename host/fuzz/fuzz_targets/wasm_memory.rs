//! cargo-fuzz target: [`weir::fuzz::wasm_memory`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzz::wasm_memory(data));
