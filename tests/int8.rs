//! The integer path end to end: calibration and quantisation of the tiny fixture model,
//! the written directory loading back, `cpu-int8` through the engine in every pruning
//! mode, thread-count invariance, agreement with the float model, and refusal of broken
//! quantised models and calibration folders.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use heatvit::backend::{cpu_f32::CpuF32, cpu_int8::CpuInt8, select, BackendChoice};
use heatvit::engine::{top_k, Engine};
use heatvit::model::{Model, PruningMode};
use heatvit::preprocess;
use heatvit::quant::model::{QuantModel, INT8_FILE};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tiny() -> PathBuf {
    root().join("tests/fixtures/tiny")
}

fn images() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png" || e == "jpg"))
        .collect();
    v.sort();
    v
}

fn tensors(model: &Model) -> Vec<Vec<f32>> {
    images().iter().map(|p| preprocess::load(&model.config, p).unwrap().tensor).collect()
}

/// The tiny model quantised once (calibrated on the bundled photos) into a temp dir.
fn quantized() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let model = Arc::new(Model::load(&tiny()).unwrap());
        let (q, _) = heatvit::quant::calibrate::calibrate_and_quantize(&model, &tensors(&model)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for f in ["config.json", "model.safetensors", "imagenet_classes.txt", "model_card.json"] {
            std::fs::copy(tiny().join(f), dir.path().join(f)).unwrap();
        }
        q.save(dir.path()).unwrap();
        dir
    })
    .path()
}

fn engine(model: &Arc<Model>, mode: PruningMode, threads: usize) -> Engine {
    let mut p = model.config.pruning.clone();
    p.mode = mode;
    Engine::new(Arc::clone(model), p, Box::new(CpuInt8::new(Arc::clone(model), threads).unwrap())).unwrap()
}

#[test]
fn quantized_directory_loads_and_auto_picks_the_integer_backend() {
    let model = Arc::new(Model::load(quantized()).unwrap());
    assert!(model.quant.is_some());
    assert_eq!(select(BackendChoice::Auto, Arc::clone(&model), 1).unwrap().name(), "cpu-int8");
    assert_eq!(select(BackendChoice::Cpu, Arc::clone(&model), 1).unwrap().name(), "cpu-int8");
    assert_eq!(select(BackendChoice::CpuF32, Arc::clone(&model), 1).unwrap().name(), "cpu-f32");
    // A float-only model: auto stays on f32, and asking for int8 is a clear error.
    let float = Arc::new(Model::load(&tiny()).unwrap());
    assert_eq!(select(BackendChoice::Auto, Arc::clone(&float), 1).unwrap().name(), "cpu-f32");
    let err = select(BackendChoice::CpuInt8, float, 1).err().unwrap().to_string();
    assert!(err.contains("not quantised") && err.contains("quantize"), "{err}");
}

#[test]
fn saving_and_loading_is_lossless() {
    // The model quantised in memory and the one read back from disk give identical logits.
    let float = Model::load(&tiny()).unwrap();
    let loaded = Arc::new(Model::load(quantized()).unwrap());
    let q = loaded.quant.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    q.save(dir.path()).unwrap();
    let again = QuantModel::load(dir.path(), &float.config).unwrap();
    let m2 = Arc::new(Model { quant: Some(Arc::new(again)), ..(*loaded).clone() });
    for t in tensors(&float).iter().take(3) {
        let a = engine(&loaded, PruningMode::Adaptive, 1).run(t).unwrap();
        let b = engine(&m2, PruningMode::Adaptive, 1).run(t).unwrap();
        assert_eq!(a.logits, b.logits);
        assert_eq!(a.stages, b.stages);
    }
    assert_eq!(read_tensors(&dir.path().join(INT8_FILE)), read_tensors(&quantized().join(INT8_FILE)));
    // Byte for byte: the header is written with sorted keys, so a re-quantised model that
    // did not change does not show up as a changed file. Several writes, because an
    // unsorted two-key metadata map comes out in either order about half the time.
    let first = std::fs::read(quantized().join(INT8_FILE)).unwrap();
    for _ in 0..6 {
        let d = tempfile::tempdir().unwrap();
        q.save(d.path()).unwrap();
        assert!(
            std::fs::read(d.path().join(INT8_FILE)).unwrap() == first,
            "saving the same model twice gave different bytes"
        );
    }
    let n = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&first[8..8 + n]).unwrap();
    assert!(header.find("\"format\"").unwrap() < header.find("\"version\"").unwrap(), "{header}");
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let model = Arc::new(Model::load(quantized()).unwrap());
    for mode in [PruningMode::Adaptive, PruningMode::Topk, PruningMode::None] {
        for t in tensors(&model).iter().take(2) {
            let one = engine(&model, mode, 1).run(t).unwrap();
            let three = engine(&model, mode, 3).run(t).unwrap();
            assert_eq!(one.logits, three.logits, "{mode:?}");
            assert_eq!(one.stages, three.stages, "{mode:?}");
        }
    }
}

#[test]
fn integer_path_tracks_the_float_model() {
    // Random weights give nearly tied logits, so top-1 agreement is not meaningful here
    // (docs/performance.md reports it on the trained model). What must hold on any model:
    // the integer logits stay close to the float ones relative to their spread, the kept
    // token sets mostly agree, and the MACs follow the token counts.
    let model = Arc::new(Model::load(quantized()).unwrap());
    for mode in [PruningMode::None, PruningMode::Topk, PruningMode::Adaptive] {
        let mut p = model.config.pruning.clone();
        p.mode = mode;
        let mut fe = Engine::new(Arc::clone(&model), p, Box::new(CpuF32::new(Arc::clone(&model)))).unwrap();
        let mut ie = engine(&model, mode, 1);
        for t in tensors(&model) {
            let f = fe.run(&t).unwrap();
            let i = ie.run(&t).unwrap();
            let spread = f.logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
                - f.logits.iter().fold(f32::INFINITY, |m, &v| m.min(v));
            let err = f.logits.iter().zip(&i.logits).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= 0.25 * spread, "{mode:?}: max logit error {err} vs spread {spread}");
            assert_eq!(f.stages.len(), i.stages.len());
            if let (Some(fs), Some(is)) = (f.stages.first(), i.stages.first()) {
                // The first selector sees the same tokens on both paths: its scores are
                // close and the kept sets nearly equal (later stages see different token
                // sets once one decision differs, so only the first is compared).
                // This fixture's selector has large random weights (fc4 up to ±9), so int8
                // rounding moves single scores a lot; the mean error is what is bounded.
                let perr = fs.keep_probs.iter().zip(&is.keep_probs).map(|(a, b)| (a - b).abs()).sum::<f32>()
                    / fs.keep_probs.len().max(1) as f32;
                let a: std::collections::BTreeSet<_> = fs.kept_patch_indices.iter().collect();
                let b: std::collections::BTreeSet<_> = is.kept_patch_indices.iter().collect();
                let common = a.intersection(&b).count();
                let union = a.union(&b).count().max(1);
                eprintln!("{mode:?}: stage 0 mean |p error| {perr}, kept {common}/{union}, logit error {err} of spread {spread}");
                assert!(perr <= 0.1, "{mode:?}: first-stage keep scores differ by {perr} on average");
                assert!(
                    common as f64 / union as f64 >= 0.85,
                    "{mode:?}: first-stage kept sets differ: {common}/{union}"
                );
            }
            for is in &i.stages {
                // Integer keep scores are Q0.16.
                assert!(is.keep_probs.iter().all(|p| (p * 65536.0).fract() == 0.0));
            }
            if mode == PruningMode::Topk {
                assert_eq!(f.macs, i.macs, "top-k keeps the same counts, so the same MACs");
            }
        }
    }
}

#[test]
fn package_tokens_are_built_from_the_integer_scores() {
    // Adaptive at a high threshold prunes a lot: the run must still be well formed.
    let model = Arc::new(Model::load(quantized()).unwrap());
    let mut p = model.config.pruning.clone();
    p.threshold = 0.9;
    let mut e = Engine::new(Arc::clone(&model), p, Box::new(CpuInt8::new(Arc::clone(&model), 2).unwrap())).unwrap();
    for t in tensors(&model).iter().take(2) {
        let r = e.run(t).unwrap();
        assert!(r.logits.iter().all(|v| v.is_finite()));
        assert!(r.stages.iter().all(|s| s.kept <= s.tokens_in));
    }
}

// ---------- broken quantised models ----------

type Tensors = BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>;

fn read_tensors(path: &Path) -> (Tensors, Option<std::collections::HashMap<String, String>>) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensors().into_iter().map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec()))).collect();
    (t, meta.metadata().clone())
}

fn broken(f: impl FnOnce(&mut Tensors, &mut std::collections::HashMap<String, String>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(quantized()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let path = dir.path().join(INT8_FILE);
    let (mut t, meta) = read_tensors(&path);
    let mut meta = meta.unwrap_or_default();
    f(&mut t, &mut meta);
    let views: Vec<(String, safetensors::tensor::TensorView)> = t
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, Some(meta), &path).unwrap();
    dir
}

fn set_scale(t: &mut Tensors, name: &str, v: f32) {
    t.get_mut(name).unwrap().2 = v.to_le_bytes().to_vec();
}

#[test]
fn broken_quantized_models_are_refused_with_a_named_problem() {
    type Edit = Box<dyn Fn(&mut Tensors, &mut std::collections::HashMap<String, String>)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("scale missing", Box::new(|t, _| drop(t.remove("scale.blocks.1.q"))), "scale.blocks.1.q"),
        ("scale zero", Box::new(|t, _| set_scale(t, "scale.blocks.0.hidden", 0.0)), "scale.blocks.0.hidden"),
        ("scale negative", Box::new(|t, _| set_scale(t, "scale.embed", -0.5)), "scale.embed"),
        ("scale NaN", Box::new(|t, _| set_scale(t, "scale.norm", f32::NAN)), "scale.norm"),
        ("scale huge", Box::new(|t, _| set_scale(t, "scale.image", 1e30)), "scale.image"),
        // Finite and positive, but it makes a requantisation ratio impossible.
        ("scale out of range", Box::new(|t, _| set_scale(t, "scale.blocks.2.ctx", 1e-30)), "outside"),
        (
            "weight scale zero",
            Box::new(|t, _| {
                t.get_mut("blocks.0.attn.qkv.weight_scale").unwrap().2[..4].copy_from_slice(&0f32.to_le_bytes())
            }),
            "blocks.0.attn.qkv.weight_scale",
        ),
        (
            "weights stored as float",
            Box::new(|t, _| {
                let e = t.get_mut("blocks.0.mlp.fc1.weight").unwrap();
                e.0 = safetensors::Dtype::F32;
                e.2 = e.2.iter().flat_map(|&b| (b as i8 as f32).to_le_bytes()).collect();
            }),
            "blocks.0.mlp.fc1.weight: dtype F32, expected I8",
        ),
        (
            "bias stored as int8",
            Box::new(|t, _| {
                let e = t.get_mut("head.bias").unwrap();
                e.0 = safetensors::Dtype::I8;
                e.2 = e.2.chunks(4).map(|c| c[0]).collect();
            }),
            "head.bias: dtype I8, expected I32",
        ),
        ("weight -128", Box::new(|t, _| t.get_mut("head.weight").unwrap().2[5] = 0x80), "−128"),
        (
            "bias beyond 2^30",
            Box::new(|t, _| {
                t.get_mut("blocks.1.attn.proj.bias").unwrap().2[..4].copy_from_slice(&i32::MAX.to_le_bytes())
            }),
            "blocks.1.attn.proj.bias",
        ),
        (
            "wrong shape",
            Box::new(|t, _| t.get_mut("blocks.0.mlp.fc2.weight_scale").unwrap().1 = vec![32, 2]),
            "blocks.0.mlp.fc2.weight_scale",
        ),
        ("tensor missing", Box::new(|t, _| drop(t.remove("selectors.1.gate.fc2.bias"))), "selectors.1.gate.fc2.bias"),
        (
            "extra tensor",
            Box::new(|t, _| drop(t.insert("scale.blocks.9.q".into(), t["scale.embed"].clone()))),
            "unexpected",
        ),
        ("wrong format", Box::new(|_, m| drop(m.insert("format".into(), "onnx".into()))), "format"),
        ("future version", Box::new(|_, m| drop(m.insert("version".into(), "3".into()))), "version"),
        // A version-1 file (GELUs from Q·.16, no GELU-input scales) is told to re-quantise.
        ("version 1", Box::new(|_, m| drop(m.insert("version".into(), "1".into()))), "quantise the model again"),
        (
            "GELU-input scale missing",
            Box::new(|t, _| drop(t.remove("scale.selectors.0.heads.1.f2_in"))),
            "scale.selectors.0.heads.1.f2_in",
        ),
        // Beyond 2^30/2^16 a GELU input scale has no multiplier into Q·.16.
        ("GELU-input scale out of range", Box::new(|t, _| set_scale(t, "scale.blocks.1.hidden_in", 1e5)), "outside"),
    ];
    for (what, edit, want) in cases {
        let dir = broken(|t, m| edit(t, m));
        let err = match Model::load(dir.path()) {
            Ok(_) => panic!("{what}: loaded"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{what}: {err:?} does not mention {want:?}");
        assert!(err.contains(INT8_FILE), "{what}: {err:?} does not name the file");
    }
    // A truncated file.
    let dir = broken(|_, _| {});
    let p = dir.path().join(INT8_FILE);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let err = Model::load(dir.path()).err().unwrap().to_string();
    assert!(err.contains(INT8_FILE) && err.contains("safetensors"), "{err}");
}

// ---------- the quantize command ----------

fn heatvit(args: &[&std::ffi::OsStr]) -> std::process::Output {
    common::heatvit_run().args(args).current_dir(root()).output().unwrap()
}

#[test]
fn quantize_command_writes_a_model_that_runs_and_refuses_bad_folders() {
    let calib = tempfile::tempdir().unwrap();
    for p in images().iter().take(3) {
        std::fs::copy(p, calib.path().join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(calib.path().join("broken.png"), b"not a png").unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("q");
    let o = heatvit(&[
        "quantize".as_ref(),
        "--model".as_ref(),
        tiny().as_os_str(),
        "--calib".as_ref(),
        calib.path().as_os_str(),
        "--out".as_ref(),
        dest.as_os_str(),
        "--json".as_ref(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("broken.png"), "the unreadable image is named: {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["calibration_images"], 3);
    assert_eq!(r["skipped_images"], 1);
    assert!(dest.join(INT8_FILE).exists() && dest.join("quantization.json").exists());
    // The quantised directory's card says what was done (the tiny model has no card: one is started).
    let card = std::fs::read_to_string(dest.join("MODEL_CARD.md")).unwrap();
    assert!(
        card.contains("## Quantisation")
            && card.contains("3 PNG/JPEG images")
            && card.contains("1 unreadable file(s) skipped"),
        "{card}"
    );
    let img = images()[0].clone();
    let o = heatvit(&["--model".as_ref(), dest.as_os_str(), "--json".as_ref(), img.as_os_str()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(line["backend"], "cpu-int8");
    // eval compares the two backends example by example.
    let ds = root().join("tests/fixtures/fmnist-subset");
    let o = heatvit(&[
        "eval".as_ref(),
        "--model".as_ref(),
        dest.as_os_str(),
        "--dataset".as_ref(),
        ds.as_os_str(),
        "--limit".as_ref(),
        "4".as_ref(),
        "--compare-backend".as_ref(),
        "cpu-f32".as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["backend"], "cpu-int8");
    assert_eq!(r["compare"]["backend"], "cpu-f32");
    let a = r["compare"]["top1_agreement"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&a) && r["compare"]["max_abs_logit_diff"].as_f64().unwrap() > 0.0);
    // A second run into the same, now non-empty, directory is refused without --force.
    let o = heatvit(&[
        "quantize".as_ref(),
        "--model".as_ref(),
        tiny().as_os_str(),
        "--calib".as_ref(),
        calib.path().as_os_str(),
        "--out".as_ref(),
        dest.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));

    // Empty, missing and all-unreadable calibration folders: a message, exit 2, no panic.
    let empty = tempfile::tempdir().unwrap();
    let junk = tempfile::tempdir().unwrap();
    std::fs::write(junk.path().join("a.jpg"), b"\xff\xd8 truncated").unwrap();
    let missing = out.path().join("does-not-exist");
    for (dir, want) in [
        (empty.path(), "no PNG or JPEG"),
        (junk.path(), "could be read"),
        (missing.as_path(), "cannot read calibration folder"),
    ] {
        let dest = out.path().join("never");
        let o = heatvit(&[
            "quantize".as_ref(),
            "--model".as_ref(),
            tiny().as_os_str(),
            "--calib".as_ref(),
            dir.as_os_str(),
            "--out".as_ref(),
            dest.as_os_str(),
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!dest.exists(), "nothing is written when calibration fails");
    }
}

#[test]
fn top1_on_the_bundled_photos_is_reported_the_same_by_both_paths_when_margins_are_large() {
    // Where the float model's top-1 margin is large compared with the integer error, the
    // integer path must pick the same class.
    let model = Arc::new(Model::load(quantized()).unwrap());
    let mut fe =
        Engine::new(Arc::clone(&model), model.config.pruning.clone(), Box::new(CpuF32::new(Arc::clone(&model))))
            .unwrap();
    let mut ie = engine(&model, PruningMode::Adaptive, 1);
    for t in tensors(&model) {
        let f = fe.run(&t).unwrap();
        let i = ie.run(&t).unwrap();
        let err = f.logits.iter().zip(&i.logits).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        let mut sorted = f.logits.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > 2.0 * err {
            assert_eq!(top_k(&f.logits, 1)[0].0, top_k(&i.logits, 1)[0].0);
        }
    }
}
