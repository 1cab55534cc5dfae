//! A short run of every fuzz target on each `cargo test`, without nightly or libFuzzer: its
//! corpus (`host/fuzz/corpus/<target>/`, the seeds and every input a fuzzer found a bug with),
//! then mutations of it from a fixed-seed generator, within a time bound.

use super::TARGETS;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Mutated inputs per target, at most.
const MUTATIONS: usize = 2_000;
/// Time for the mutations of one target; the corpus itself always runs whole.
const TIME_BOUND: Duration = Duration::from_secs(5);
/// Mutations that must have run within the bound for the smoke to mean something.
const AT_LEAST: usize = 100;

/// SplitMix64: a small generator whose sequence is fixed by its seed, so a smoke that fails
/// fails again the same way.
struct Generator(u64);

impl Generator {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `bound` (0 when `bound` is 0).
    fn below(&mut self, bound: usize) -> usize {
        if bound == 0 {
            0
        } else {
            (self.next() % bound as u64) as usize
        }
    }
}

/// One input made from the corpus: a seed changed in one to four ways, as libFuzzer's own
/// mutators do (flip, set to an edge value, insert, delete, repeat a piece, splice another
/// seed in).
fn mutate(corpus: &[Vec<u8>], generator: &mut Generator) -> Vec<u8> {
    let mut input = corpus[generator.below(corpus.len())].clone();
    for _ in 0..=generator.below(4) {
        let at = generator.below(input.len() + 1);
        match generator.below(6) {
            0 if at < input.len() => input[at] ^= 1 << generator.below(8),
            1 if at < input.len() => {
                input[at] = [0, 0x7f, 0x80, 0xff, b'\r', b'\n', b':', b' '][generator.below(8)]
            }
            2 => {
                let count = 1 + generator.below(8);
                let bytes: Vec<u8> = (0..count).map(|_| generator.next() as u8).collect();
                input.splice(at..at, bytes);
            }
            3 => {
                let end = (at + 1 + generator.below(16)).min(input.len());
                input.drain(at.min(end)..end);
            }
            4 => {
                let end = (at + 1 + generator.below(32)).min(input.len());
                let piece = input[at.min(end)..end].to_vec();
                let times = 1 + generator.below(8);
                for _ in 0..times {
                    input.splice(at..at, piece.iter().copied());
                }
            }
            _ => {
                let other = &corpus[generator.below(corpus.len())];
                let from = generator.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
        }
    }
    input
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
        .iter()
        .map(|file| std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display())))
        .collect()
}

fn smoke(name: &str) {
    let (_, body) = TARGETS
        .iter()
        .find(|(target, _)| *target == name)
        .unwrap_or_else(|| panic!("no target {name}"));
    let corpus = corpus(name);
    assert!(corpus.len() >= 3, "{name}: a few seeds at least");
    for input in &corpus {
        body(input);
    }
    let mut generator = Generator(0x5eed_f022);
    let started = Instant::now();
    let mut ran = 0;
    while ran < MUTATIONS && started.elapsed() < TIME_BOUND {
        let input = mutate(&corpus, &mut generator);
        if let Err(panic) = std::panic::catch_unwind(|| body(&input)) {
            // Kept for a look and for the corpus, once fixed, as a regression input.
            let kept = std::env::temp_dir().join(format!("weir-fuzz-smoke-{name}"));
            let _ = std::fs::write(&kept, &input);
            eprintln!(
                "{name}: mutation {ran} failed; its input is in {}",
                kept.display()
            );
            std::panic::resume_unwind(panic);
        }
        ran += 1;
    }
    eprintln!(
        "{name}: {} corpus inputs, {ran} mutations in {:?}",
        corpus.len(),
        started.elapsed()
    );
    assert!(
        ran >= AT_LEAST,
        "{name}: only {ran} mutations in {TIME_BOUND:?}"
    );
}

#[test]
fn config_loader_smoke() {
    smoke("config_loader");
}

#[test]
fn request_head_smoke() {
    smoke("request_head");
}

#[test]
fn h2_frames_smoke() {
    smoke("h2_frames");
}

#[test]
fn wasm_memory_smoke() {
    smoke("wasm_memory");
}

/// Each target has its cargo-fuzz binary, and `make fuzz` runs it.
#[test]
fn every_target_has_a_fuzz_binary_that_make_fuzz_runs() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let makefile = std::fs::read_to_string(manifest.join("../Makefile")).unwrap_or_default();
    let listed = makefile
        .lines()
        .find_map(|line| line.strip_prefix("FUZZ_TARGETS :="))
        .unwrap_or_default();
    for (name, _) in TARGETS {
        let binary = manifest
            .join("fuzz/fuzz_targets")
            .join(format!("{name}.rs"));
        assert!(binary.is_file(), "{} is missing", binary.display());
        assert!(
            listed.split_whitespace().any(|t| t == *name),
            "the Makefile's FUZZ_TARGETS lacks {name}"
        );
    }
}
