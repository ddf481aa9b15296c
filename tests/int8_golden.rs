//! The integer path against an independent implementation of `docs/integer-format.md`:
//! `tools/int8_ref.py` (numpy, written from the document) ran the committed quantised
//! tiny model (`tests/fixtures/tiny-int8/model.int8.safetensors`) on the preprocessed
//! inputs of `tests/fixtures/tiny-cases/` in modes adaptive, topk and none, and wrote
//! `tests/fixtures/tiny-int8/expected.json`. Here `cpu-int8` runs the same model through
//! the engine, with 1 and 2 threads, and must reproduce it **bit for bit**: the integer
//! (UQ0.16) selector scores, the kept patch indices of every stage and the f32 logits.
//! Regenerating: tools/README.md.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use heatvit::backend::cpu_int8::CpuInt8;
use heatvit::model::{Model, PruningConfig};
use heatvit::Engine;
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    generator: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    input: String,
    pruning: PruningConfig,
    /// 8 hex digits per logit: the bits of the f32.
    logits_f32_hex: String,
    stages: Vec<Stage>,
}

#[derive(Deserialize)]
struct Stage {
    block: usize,
    tokens_in: usize,
    kept: usize,
    packages: usize,
    kept_patch_indices: Vec<usize>,
    scores_q16: Vec<u32>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(root().join("tests/fixtures/tiny-int8/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn logits(hex: &str) -> Vec<f32> {
    assert_eq!(hex.len() % 8, 0, "logits_f32_hex: not whole f32s");
    (0..hex.len() / 8).map(|i| f32::from_bits(u32::from_str_radix(&hex[8 * i..8 * i + 8], 16).unwrap())).collect()
}

/// The tiny fixture model with the committed integer weights, in a temp directory.
fn model() -> (tempfile::TempDir, Arc<Model>) {
    let dir = tempfile::tempdir().unwrap();
    let tiny = root().join("tests/fixtures/tiny");
    for f in ["config.json", "model.safetensors", "imagenet_classes.txt", "model_card.json"] {
        std::fs::copy(tiny.join(f), dir.path().join(f)).unwrap();
    }
    let int8 = heatvit::quant::model::INT8_FILE;
    std::fs::copy(root().join("tests/fixtures/tiny-int8").join(int8), dir.path().join(int8)).unwrap();
    let model = Arc::new(Model::load(dir.path()).unwrap());
    assert!(model.quant.is_some(), "the quantised model did not load its integer weights");
    (dir, model)
}

/// A keep probability from the engine as the UQ0.16 integer it stands for (exact:
/// `cpu-int8` reports `p / 65536`).
fn q16(p: f32) -> u32 {
    let v = p * 65536.0;
    assert!(v.fract() == 0.0 && (0.0..=65536.0).contains(&v), "score {p} is not a UQ0.16 value");
    v as u32
}

fn check(threads: usize) {
    let (_dir, model) = model();
    let inputs = common::tiny_case_inputs();
    let exp = expected();
    assert_eq!(exp.generator, "tools/int8_ref.py");
    let mut modes = BTreeSet::new();
    for case in &exp.cases {
        let n = format!("{} (threads {threads})", case.name);
        modes.insert(format!("{:?}", case.pruning.mode));
        let backend = Box::new(CpuInt8::new(Arc::clone(&model), threads).unwrap());
        let mut engine = Engine::new(Arc::clone(&model), case.pruning.clone(), backend).unwrap();
        let inf = engine.run(&inputs[&case.input]).unwrap();
        assert_eq!(inf.stages.len(), case.stages.len(), "{n}: stage count");
        for (s, (got, want)) in inf.stages.iter().zip(&case.stages).enumerate() {
            assert_eq!(got.block, want.block, "{n} stage {s}: block");
            let scores: Vec<u32> = got.keep_probs.iter().map(|&p| q16(p)).collect();
            if scores != want.scores_q16 {
                let first = scores.iter().zip(&want.scores_q16).position(|(a, b)| a != b);
                panic!(
                    "{n} stage {s}: integer keep scores differ ({} vs {} tokens; first difference at token {first:?}: {:?} vs {:?})",
                    scores.len(),
                    want.scores_q16.len(),
                    first.map(|i| scores[i]),
                    first.map(|i| want.scores_q16[i]),
                );
            }
            assert_eq!(got.tokens_in, want.tokens_in, "{n} stage {s}: tokens_in");
            assert_eq!(got.kept_patch_indices, want.kept_patch_indices, "{n} stage {s}: kept patch indices");
            assert_eq!(got.kept, want.kept, "{n} stage {s}: kept");
            assert_eq!(got.packages, want.packages, "{n} stage {s}: packages");
        }
        let want = logits(&case.logits_f32_hex);
        assert_eq!(inf.logits.len(), want.len(), "{n}: logit count");
        let diffs: Vec<usize> = (0..want.len()).filter(|&i| inf.logits[i].to_bits() != want[i].to_bits()).collect();
        assert!(
            diffs.is_empty(),
            "{n}: {} logits differ from the reference in their bits; first: class {} {:e} vs {:e}",
            diffs.len(),
            diffs[0],
            inf.logits[diffs[0]],
            want[diffs[0]],
        );
    }
    assert_eq!(modes.len(), 3, "the fixture must cover adaptive, topk and none: {modes:?}");
}

#[test]
fn integer_path_matches_the_independent_reference_bit_for_bit() {
    check(1);
}

#[test]
fn integer_path_matches_the_independent_reference_with_two_threads() {
    check(2);
}

#[test]
fn the_fixture_exercises_pruning_and_package_tokens() {
    // Every pruning case prunes at every stage (so package tokens are made and carried),
    // and adaptive and topk keep different token sets somewhere.
    let exp = expected();
    let mut adaptive = BTreeMap::new();
    let mut topk = BTreeMap::new();
    for case in &exp.cases {
        if case.stages.is_empty() {
            continue;
        }
        for (s, st) in case.stages.iter().enumerate() {
            assert!(st.kept < st.tokens_in && st.kept > 0, "{} stage {s}: {} of {}", case.name, st.kept, st.tokens_in);
            assert_eq!(st.packages, s + 1, "{} stage {s}", case.name);
            assert_eq!(st.scores_q16.len(), st.tokens_in, "{} stage {s}", case.name);
        }
        let kept: Vec<_> = case.stages.iter().map(|s| s.kept_patch_indices.clone()).collect();
        match case.pruning.mode {
            heatvit::model::PruningMode::Adaptive => adaptive.insert(case.input.clone(), kept),
            _ => topk.insert(case.input.clone(), kept),
        };
    }
    assert!(adaptive.iter().any(|(k, v)| topk.get(k) != Some(v)));
}
