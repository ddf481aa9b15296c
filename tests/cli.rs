//! The `heatvit-run` interface other programs rely on: JSON fields, --logits, --trace,
//! --heatmap, overrides, the untrained-model notice, and the default model lookup.

use std::path::PathBuf;
use std::process::Output;

mod common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn heatvit(args: &[&str]) -> Output {
    common::heatvit_run()
        .current_dir(root())
        .args(args)
        .env_remove("HEATVIT_MODEL")
        .env("RUST_LOG", "off")
        .output()
        .expect("run heatvit-run")
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

const MODEL: &str = "tests/fixtures/tiny";

#[test]
fn json_has_the_documented_fields() {
    let out = heatvit(&["--model", MODEL, "--json", "tests/images/chelsea.png", "tests/images/rocket.jpg"]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    for v in &lines {
        for key in ["image", "backend", "top5", "stages", "macs", "dense_macs", "timings_ms"] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["backend"], "cpu-f32");
        assert_eq!(v["trained"], false);
        let top5 = v["top5"].as_array().unwrap();
        assert_eq!(top5.len(), 5);
        let probs: Vec<f64> = top5.iter().map(|t| t["prob"].as_f64().unwrap()).collect();
        assert!(probs.windows(2).all(|w| w[0] >= w[1]), "top5 not sorted: {probs:?}");
        for t in top5 {
            assert!(t["class"].as_u64().unwrap() < 1000);
            assert!(!t["label"].as_str().unwrap().is_empty());
        }
        let stages = v["stages"].as_array().unwrap();
        assert_eq!(stages.len(), 3);
        let mut live = 196;
        for (s, st) in stages.iter().enumerate() {
            assert_eq!(st["block"], [1, 2, 3][s]);
            assert_eq!(st["tokens_in"].as_u64().unwrap(), live);
            live = st["kept"].as_u64().unwrap();
            assert!(st.get("kept_patch_indices").is_none(), "indices only with --trace");
        }
        assert!(v["macs"].as_u64().unwrap() < v["dense_macs"].as_u64().unwrap());
        for key in ["decode_ms", "preprocess_ms", "forward_ms", "total_ms"] {
            assert!(v["timings_ms"][key].as_f64().unwrap() >= 0.0);
        }
        assert!(v.get("logits").is_none());
    }
}

#[test]
fn logits_and_trace_are_added_on_request() {
    let out = heatvit(&["--model", MODEL, "--json", "--logits", "--trace", "tests/images/coffee.png"]);
    let v = &json_lines(&out)[0];
    let logits = v["logits"].as_array().unwrap();
    assert_eq!(logits.len(), 1000);
    // The top-1 class is the argmax of the logits.
    let argmax = logits
        .iter()
        .map(|l| l.as_f64().unwrap())
        .enumerate()
        .fold((0, f64::MIN), |b, (i, l)| if l > b.1 { (i, l) } else { b })
        .0;
    assert_eq!(v["top5"][0]["class"].as_u64().unwrap() as usize, argmax);
    let mut prev: Option<Vec<u64>> = None;
    for st in v["stages"].as_array().unwrap() {
        let idx: Vec<u64> = st["kept_patch_indices"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap()).collect();
        assert_eq!(idx.len() as u64, st["kept"].as_u64().unwrap());
        assert!(idx.windows(2).all(|w| w[0] < w[1]), "ascending");
        if let Some(p) = &prev {
            assert!(idx.iter().all(|i| p.contains(i)), "a pruned token came back");
        }
        prev = Some(idx);
    }
}

#[test]
fn pruning_overrides_change_the_schedule() {
    let none = &json_lines(&heatvit(&["--model", MODEL, "--json", "--pruning", "none", "tests/images/chelsea.png"]))[0];
    assert!(none["stages"].as_array().unwrap().is_empty());
    assert_eq!(none["macs"], none["dense_macs"]);
    let topk = &json_lines(&heatvit(&["--model", MODEL, "--json", "--pruning", "topk", "tests/images/chelsea.png"]))[0];
    let kept: Vec<u64> = topk["stages"].as_array().unwrap().iter().map(|s| s["kept"].as_u64().unwrap()).collect();
    assert_eq!(kept, vec![138, 97, 68]);
    let low =
        &json_lines(&heatvit(&["--model", MODEL, "--json", "--threshold", "0.05", "tests/images/chelsea.png"]))[0];
    let high =
        &json_lines(&heatvit(&["--model", MODEL, "--json", "--threshold", "0.95", "tests/images/chelsea.png"]))[0];
    assert!(low["macs"].as_u64().unwrap() > high["macs"].as_u64().unwrap());
}

#[test]
fn evit_mode_keeps_the_topk_counts_by_attention_without_selector_macs() {
    let run = |extra: &[&str]| {
        let mut args = vec!["--model", MODEL, "--json", "--trace"];
        args.extend_from_slice(extra);
        args.push("tests/images/chelsea.png");
        json_lines(&heatvit(&args))[0].clone()
    };
    let evit = run(&["--pruning", "evit"]);
    let topk = run(&["--pruning", "topk"]);
    let counts = |v: &serde_json::Value| -> Vec<u64> {
        v["stages"].as_array().unwrap().iter().map(|s| s["kept"].as_u64().unwrap()).collect()
    };
    assert_eq!(counts(&evit), counts(&topk), "same keep ratios, same counts");
    assert_eq!(evit["pruning"], "evit");
    // Same token counts, so the difference in MACs is exactly the selectors' work.
    assert!(evit["macs"].as_u64().unwrap() < topk["macs"].as_u64().unwrap());
    // The attention ranking differs from the selector's on this random model.
    assert_ne!(evit["stages"][0]["kept_patch_indices"], topk["stages"][0]["kept_patch_indices"]);
    let o = heatvit(&["--model", MODEL, "--pruning", "evit", "--backend", "cpu-int8", "tests/images/chelsea.png"]);
    assert_eq!(o.status.code(), Some(2), "the float model has no integer weights");
}

#[test]
fn heatmap_is_written_as_a_png_of_the_input_crop() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.png");
    let out = heatvit(&["--model", MODEL, "--heatmap", one.to_str().unwrap(), "tests/images/chelsea.png"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let img = image::open(&one).unwrap();
    assert_eq!((img.width(), img.height()), (224, 224));
    // Shading changed pixels relative to the plain crop.
    let cfg = heatvit::model::Config::load(&root().join(MODEL).join("config.json")).unwrap();
    let plain = heatvit::preprocess::load(&cfg, &root().join("tests/images/chelsea.png")).unwrap().crop;
    let changed = img.to_rgb8().pixels().zip(plain.pixels()).filter(|(a, b)| a != b).count();
    assert!(changed > 224 * 224 / 4, "only {changed} pixels differ");

    let many = dir.path().join("map.png");
    let out = heatvit(&[
        "--model",
        MODEL,
        "--heatmap",
        many.to_str().unwrap(),
        "tests/images/chelsea.png",
        "tests/images/coffee.png",
    ]);
    assert!(out.status.success());
    assert!(dir.path().join("map-chelsea.png").exists() && dir.path().join("map-coffee.png").exists());
}

#[test]
fn human_output_names_backend_tokens_macs_and_untrained_weights() {
    let out = heatvit(&["--model", MODEL, "tests/images/chelsea.png"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in ["backend cpu-f32", "UNTRAINED", "tokens: block 1: 196 →", "MACs:", "saved", "forward"] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert_eq!(text.lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())).count(), 5);
}

#[test]
fn default_model_is_the_trained_fashion_mnist_model_on_the_integer_backend() {
    // No --model: ./models/default (the README's first command).
    let out = heatvit(&["tests/images/fmnist/0000-ankle-boot.png", "tests/images/fmnist/0002-trouser.png"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in ["model fmnist-heatvit", "backend cpu-int8", "tokens: block 2: 49 →", "Ankle boot", "Trouser"] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(!text.contains("UNTRAINED"), "{text}");
}

#[test]
fn bench_reports_json() {
    let out = heatvit(&["bench", "--model", MODEL, "--runs", "2", "--warmup", "0", "--json"]);
    let v = &json_lines(&out)[0];
    for key in ["median_ms", "min_ms", "macs", "dense_macs", "gmacs_per_s", "peak_rss_mb"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert!(v["min_ms"].as_f64().unwrap() <= v["median_ms"].as_f64().unwrap());
    let names: Vec<&str> = v["spans"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "embed",
            "blocks 0-0",
            "selector 0",
            "blocks 1-1",
            "selector 1",
            "blocks 2-2",
            "selector 2",
            "blocks 3-3",
            "head"
        ]
    );
}

#[test]
fn bench_block_lut_lists_decreasing_token_counts() {
    let rows =
        json_lines(&heatvit(&["bench", "--model", MODEL, "--block-lut", "--runs", "1", "--warmup", "0", "--json"]));
    assert!(rows.len() >= 10);
    assert_eq!(rows[0]["tokens"], 197);
    let macs: Vec<u64> = rows.iter().map(|r| r["macs"].as_u64().unwrap()).collect();
    assert!(macs.windows(2).all(|w| w[0] > w[1]), "{macs:?}");
    assert!(rows.iter().all(|r| r["median_us"].as_f64().unwrap() > 0.0 && r["backend"] == "cpu-f32"));
}

#[test]
fn subcommands_survive_a_closed_stdout() {
    // `heatvit-run bench | head -0`: the reader is gone before anything is printed.
    for args in [
        vec!["bench", "--model", MODEL, "--runs", "2", "--warmup", "0"],
        vec!["eval", "--model", MODEL, "--dataset", "tests/fixtures/fmnist-subset", "--limit", "2"],
    ] {
        let mut child = common::heatvit_run()
            .current_dir(root())
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(o.status.code(), Some(0), "{args:?}: {stderr}");
    }
}
