//! The bodies of weir's fuzz targets: plain functions from bytes to nothing that panic on a
//! bug. The cargo-fuzz targets in `host/fuzz/` call them under libFuzzer (`make fuzz`); a unit
//! test (`smoke`) feeds them the corpus in `host/fuzz/corpus/<target>/` and a few thousand
//! mutations of it on every `cargo test`, without nightly or libFuzzer.
//!
//! Not part of weir's API: public only for the fuzz crate.

mod connection;
#[cfg(test)]
mod smoke;

/// A target's body: it takes one input and panics on a bug.
pub type Body = fn(&[u8]);

/// Every target, by the name of its corpus folder and cargo-fuzz binary.
pub const TARGETS: &[(&str, Body)] = &[
    ("config_loader", config_loader),
    ("request_head", request_head),
    ("h2_frames", h2_frames),
    ("wasm_memory", wasm_memory),
];

/// The config loader: YAML text to a checked config (or a config error), never a panic, a
/// hang or unbounded memory, whatever the text.
pub fn config_loader(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Loaded or refused, both are fine; a refusal must name a field path. serde_yaml_ng's
    // own recursion limit (128) must never be what refuses: the pre-scan (64) counts nesting
    // conservatively, so a document that deep never reaches the parser. (Aliases nest what
    // they name where they are used, which no scan of the text sees: not checked with them.)
    if let Err(error) = crate::snapshot::load_str(text, "fuzz.yaml") {
        assert!(!error.path.is_empty(), "an error without a path: {error}");
        assert!(
            text.contains('*') || !error.message.starts_with("recursion limit exceeded"),
            "the nesting pre-scan let a document through that serde refused: {error}"
        );
    }
}

/// The request-head path up to routing: bytes from a client on an HTTP/1.1 connection of a
/// listener whose routes match by domain, path, regex and header (every route answers
/// directly), read by weir's codec, routed, answered, until the client's bytes end.
pub fn request_head(data: &[u8]) {
    connection::serve(connection::Codec::Http1, data);
}

/// The HTTP/2 frame path: the client preface, then bytes as frames, on weir's downstream
/// HTTP/2 codec with the same routes as [`request_head`].
pub fn h2_frames(data: &[u8]) {
    connection::serve(connection::Codec::Http2, data);
}

/// The Wasm ABI's memory accessors, with the pointers and lengths a hostile module passes:
/// the first two bytes size a memory (up to 64 KiB), then each 9 bytes are one access (a
/// read or a write; an `i32` pointer and length). Each must land exactly where a reference
/// model in 64-bit arithmetic says, or be refused with `BadArgument` where the model says
/// it is out of bounds.
pub fn wasm_memory(data: &[u8]) {
    use crate::wasm::memory::{slice, slice_mut, unsigned};
    let Some((size, ops)) = data.split_first_chunk::<2>() else {
        return;
    };
    let size = usize::from(u16::from_le_bytes(*size));
    let mut memory: Vec<u8> = (0..size).map(|i| i as u8).collect();
    for (index, op) in ops.chunks_exact(9).enumerate() {
        let ptr = i32::from_le_bytes([op[1], op[2], op[3], op[4]]);
        let len = i32::from_le_bytes([op[5], op[6], op[7], op[8]]);
        let start = u64::from(ptr as u32);
        let fits = |len: usize| start + len as u64 <= size as u64;
        if op[0] & 1 == 0 {
            let len = unsigned(len);
            match slice(&memory, ptr, len) {
                Ok(bytes) => {
                    assert!(fits(len), "read {ptr}+{len} of {size} accepted");
                    assert_eq!(bytes.len(), len);
                    assert_eq!(bytes.as_ptr(), memory[start as usize..].as_ptr());
                }
                Err(status) => {
                    assert!(!fits(len), "read {ptr}+{len} of {size} refused");
                    assert_eq!(status, weir_abi::Status::BadArgument);
                }
            }
        } else {
            let len = unsigned(len);
            let fill = index as u8;
            let (low, high) = (start as usize, start as usize + len);
            // The bytes either side of the range, which the write must leave alone.
            let edges = |memory: &[u8]| {
                (
                    low.checked_sub(1).and_then(|i| memory.get(i).copied()),
                    memory.get(high).copied(),
                )
            };
            let before = edges(&memory);
            match slice_mut(&mut memory, ptr, len) {
                Ok(target) => {
                    assert!(fits(len), "write {ptr}+{len} of {size} accepted");
                    target.fill(fill);
                    assert!(memory[low..high].iter().all(|&b| b == fill));
                    assert_eq!(edges(&memory), before, "write {ptr}+{len} spilled");
                }
                Err(status) => {
                    assert!(!fits(len), "write {ptr}+{len} of {size} refused");
                    assert_eq!(status, weir_abi::Status::BadArgument);
                }
            }
        }
    }
}
