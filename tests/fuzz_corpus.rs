//! The fuzz targets' entry points (`hitless::fuzz`, what `fuzz/` runs under libFuzzer) on
//! every input of the committed corpus (`fuzz/corpus/<target>/`, regressions included), and a
//! bounded, seeded mutation run from those inputs: so that a stable toolchain without
//! cargo-fuzz still runs them on every `cargo test`. A panic is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 5] = [
    ("request_head", hitless::fuzz::request_head),
    ("response_head", hitless::fuzz::response_head),
    ("chunked", hitless::fuzz::chunked),
    ("header_rewrite", hitless::fuzz::header_rewrite),
    ("config", hitless::fuzz::config),
];

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn every_corpus_input_passes_its_target() {
    for (name, target) in TARGETS {
        let inputs = corpus(name);
        assert!(!inputs.is_empty(), "{name}: empty corpus");
        for input in &inputs {
            target(input);
        }
    }
}

/// A seeded xorshift: `next(n)` is in `0..n`.
fn rng(mut state: u64) -> impl FnMut(usize) -> usize {
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n.max(1) as u64) as usize
    }
}

#[test]
fn mutations_of_the_corpus_pass_their_targets() {
    const ROUNDS: usize = 3000;
    let interesting: &[u8] = b"\r\n :;,=\"\\\t\x00\x7f\xff0123456789abcdefABCDEF_-chunkedContent-LengthTransfer-EncodingHostConnection";
    for (name, target) in TARGETS {
        let inputs = corpus(name);
        let mut next = rng(0x2545_f491_4f6c_dd1d ^ name.len() as u64);
        for _ in 0..ROUNDS {
            let mut data = inputs[next(inputs.len())].clone();
            for _ in 0..1 + next(8) {
                let at = next(data.len() + 1);
                match next(4) {
                    0 if at < data.len() => data[at] = interesting[next(interesting.len())],
                    1 => data.insert(at, interesting[next(interesting.len())]),
                    2 if at < data.len() => {
                        data.remove(at);
                    }
                    _ => {
                        let other = &inputs[next(inputs.len())];
                        let from = next(other.len() + 1);
                        let to = (from + next(32)).min(other.len());
                        let piece = other[from..to].to_vec();
                        data.splice(at..at, piece);
                    }
                }
            }
            target(&data);
        }
    }
}
