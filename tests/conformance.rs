//! Conformance against the independent PyTorch reference (`tools/make_fixtures.py`):
//! logits within 1e-4, identical kept-token indices, identical MAC counts, for every case
//! in `tests/fixtures/tiny-cases/expected.json` (adaptive, topk and none), and our
//! preprocessing against timm's eval transform on the same image files.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use heatvit::backend::cpu_f32::CpuF32;
use heatvit::model::{Model, PruningConfig};
use heatvit::{preprocess, Engine};
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    input: String,
    pruning: PruningConfig,
    logits: Vec<f32>,
    keep_probs: Vec<Vec<f32>>,
    stages: Vec<Stage>,
    macs: u64,
    dense_macs: u64,
}

#[derive(Deserialize)]
struct Stage {
    block: usize,
    tokens_in: usize,
    kept: usize,
    packages: usize,
    kept_patch_indices: Vec<usize>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(root().join("tests/fixtures/tiny-cases/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn model() -> Arc<Model> {
    Arc::new(Model::load(&root().join("tests/fixtures/tiny")).unwrap())
}

#[test]
fn float_forward_matches_reference_in_every_mode() {
    let model = model();
    let inputs = common::tiny_case_inputs();
    let exp = expected();
    let mut modes = std::collections::BTreeSet::new();
    let mut worst = 0.0f32;
    for case in &exp.cases {
        modes.insert(case.pruning.mode.as_str());
        let backend = Box::new(CpuF32::new(Arc::clone(&model)));
        let mut engine = Engine::new(Arc::clone(&model), case.pruning.clone(), backend).unwrap();
        let inf = engine.run(&inputs[&case.input]).unwrap();
        let n = &case.name;
        assert_eq!(inf.logits.len(), case.logits.len(), "{n}");
        let diff = inf.logits.iter().zip(&case.logits).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        worst = worst.max(diff);
        assert!(diff <= 1e-4, "{n}: max |logit diff| {diff}");
        assert_eq!(inf.stages.len(), case.stages.len(), "{n}: stage count");
        for (s, (got, want)) in inf.stages.iter().zip(&case.stages).enumerate() {
            assert_eq!(got.block, want.block, "{n} stage {s}");
            assert_eq!(got.tokens_in, want.tokens_in, "{n} stage {s} tokens_in");
            assert_eq!(got.kept, want.kept, "{n} stage {s} kept");
            assert_eq!(got.packages, want.packages, "{n} stage {s} packages");
            assert_eq!(got.kept_patch_indices, want.kept_patch_indices, "{n} stage {s} kept indices");
            let pd = got.keep_probs.iter().zip(&case.keep_probs[s]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            // The fixture keeps every decision ≥ 2e-3 from the threshold (and top-k gaps
            // ≥ 2e-3), so a probability error 20× smaller can never flip a decision.
            assert!(pd <= 1e-4, "{n} stage {s}: max |keep prob diff| {pd}");
        }
        assert_eq!(inf.macs, case.macs, "{n}: macs");
        assert_eq!(inf.dense_macs, case.dense_macs, "{n}: dense macs");
    }
    assert_eq!(modes.len(), 3, "fixture must cover adaptive, topk and none: {modes:?}");
    eprintln!("{} cases, worst |logit diff| {worst:e}", exp.cases.len());
}

fn image_for(name: &str) -> Option<PathBuf> {
    let dir = root().join("tests/images");
    ["png", "jpg"].iter().map(|ext| dir.join(format!("{name}.{ext}"))).find(|p| p.exists())
}

#[test]
fn preprocessing_matches_timm_eval_transform() {
    let model = model();
    let mut checked = 0;
    for (name, want) in common::tiny_case_inputs() {
        let Some(path) = image_for(&name) else { continue };
        let got = preprocess::load(&model.config, &path).unwrap().tensor;
        assert_eq!(got.len(), want.len());
        let max = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        let jpeg = path.extension() == Some("jpg".as_ref());
        // PNG decoding is exact, so the whole transform must agree to float rounding.
        // JPEG decoders (libjpeg-turbo in PIL, zune-jpeg here) may differ by a level or two.
        let tol = if jpeg { 12.0 / 255.0 / 0.225 } else { 1e-6 };
        eprintln!("{name}: max |diff| {max:e}");
        assert!(max <= tol, "{}: max |diff| {max} over {tol}", path.display());
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} images checked");
}

#[test]
fn full_pipeline_from_png_file_matches_reference() {
    // End to end from the file, so decoding + preprocessing + forward are all covered.
    let model = model();
    let exp = expected();
    let case = exp.cases.iter().find(|c| c.name == "chelsea/adaptive").expect("chelsea/adaptive case");
    let pre = preprocess::load(&model.config, Path::new(&root().join("tests/images/chelsea.png"))).unwrap();
    let backend = Box::new(CpuF32::new(Arc::clone(&model)));
    let mut engine = Engine::new(Arc::clone(&model), case.pruning.clone(), backend).unwrap();
    let inf = engine.run(&pre.tensor).unwrap();
    let diff = inf.logits.iter().zip(&case.logits).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(diff <= 1e-4, "max |logit diff| {diff}");
    let kept: Vec<_> = inf.stages.iter().map(|s| s.kept_patch_indices.clone()).collect();
    let want: Vec<_> = case.stages.iter().map(|s| s.kept_patch_indices.clone()).collect();
    assert_eq!(kept, want);
}
