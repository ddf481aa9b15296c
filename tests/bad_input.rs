//! Bad input of every kind gets a one-line error naming the file and the problem, a
//! documented exit code, and no panic: images (exit 1, others still processed) and model
//! directories (exit 2).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

use heatvit::model::{Model, ModelError};
use heatvit::preprocess::{self, InputError};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tiny() -> PathBuf {
    root().join("tests/fixtures/tiny")
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    common::heatvit_run()
        .args(args)
        .env_remove("HEATVIT_MODEL")
        .env("RUST_LOG", "off")
        .output()
        .expect("run heatvit-run")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_no_panic(o: &Output) {
    let e = stderr(o);
    assert!(!e.contains("panicked"), "panic: {e}");
}

// ---------- images ----------

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

/// A PNG whose header declares `w × h` RGB pixels with a tiny compressed body: a
/// decompression bomb for any decoder that allocates what the header declares.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    v.extend_from_slice(&13u32.to_be_bytes());
    v.extend_from_slice(&ihdr);
    v.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // A few bytes of a zlib stream of zeros: a real bomb's IDAT is tiny too.
    let idat = b"IDATx\x9c\xed\xc1\x01\x01\x00\x00\x00\x80\x90\xfe\xaf";
    v.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
    v.extend_from_slice(idat);
    v.extend_from_slice(&crc32(idat).to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(b"IEND");
    v.extend_from_slice(&crc32(b"IEND").to_be_bytes());
    v
}

struct BadImages {
    _dir: tempfile::TempDir,
    files: Vec<(PathBuf, &'static str)>,
}

/// Each bad image with a fragment its error message must contain.
fn bad_images() -> BadImages {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = std::fs::read(root().join("tests/images/chelsea.png")).unwrap();
    let jpeg = std::fs::read(root().join("tests/images/rocket.jpg")).unwrap();
    let mut files = Vec::new();
    let mut put = |name: &str, bytes: &[u8], needle: &'static str| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        files.push((p, needle));
    };
    put("empty.png", b"", "file is empty");
    put("truncated.png", &good[..good.len() / 3], "cannot decode");
    put("truncated.jpg", &jpeg[..200], "cannot decode");
    put("notes.txt", b"this is not an image\n", "not a PNG or JPEG");
    put("bomb.png", &png_header_only(100_000, 100_000), "over the decoding limit");
    put("wide-bomb.png", &png_header_only(16_000, 16_000), "over the decoding limit");
    files.push((d.join("missing.png"), "No such file"));
    BadImages { _dir: dir, files }
}

#[test]
fn bad_images_are_refused_by_the_library_with_the_file_named() {
    let bad = bad_images();
    for (path, needle) in &bad.files {
        let err: InputError = preprocess::decode(path).expect_err(&format!("{} should fail", path.display()));
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(needle), "{}: expected {needle:?} in {msg:?}", path.display());
        assert_eq!(msg.lines().count(), 1, "{msg}");
    }
}

#[test]
fn cli_reports_each_bad_image_and_still_processes_the_good_ones() {
    let bad = bad_images();
    let good = root().join("tests/images/chelsea.png");
    let mut args: Vec<&std::ffi::OsStr> = vec!["--model".as_ref(), tiny().into_os_string().leak(), "--json".as_ref()];
    for (p, _) in &bad.files {
        args.push(p.as_os_str());
    }
    args.push(good.as_os_str());
    let out = run(&args);
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), bad.files.len() + 1);
    for (line, (path, needle)) in lines.iter().zip(&bad.files) {
        assert_eq!(line["image"], path.display().to_string());
        assert!(line["error"].as_str().unwrap().contains(needle), "{line}");
    }
    let last = lines.last().unwrap();
    assert!(last.get("error").is_none(), "{last}");
    assert_eq!(last["top5"].as_array().unwrap().len(), 5);
    // One stderr line per failed image.
    assert_eq!(stderr(&out).lines().count(), bad.files.len(), "{}", stderr(&out));
}

// ---------- model directories ----------

fn read_tensors(path: &Path) -> BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec()))).collect()
}

fn write_tensors(path: &Path, t: &BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = t
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A copy of the tiny model in a temp dir, changed by `f`.
fn broken_model(f: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["config.json", "model.safetensors", "imagenet_classes.txt", "model_card.json"] {
        std::fs::copy(tiny().join(name), dir.path().join(name)).unwrap();
    }
    f(dir.path());
    dir
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn edit_tensors(dir: &Path, f: impl FnOnce(&mut BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>)) {
    let p = dir.join("model.safetensors");
    let mut t = read_tensors(&p);
    f(&mut t);
    write_tensors(&p, &t);
}

type Breakage = (&'static str, Box<dyn Fn(&Path)>, &'static str);

fn breakages() -> Vec<Breakage> {
    vec![
        ("missing config", Box::new(|d: &Path| std::fs::remove_file(d.join("config.json")).unwrap()), "config.json"),
        (
            "config not json",
            Box::new(|d: &Path| std::fs::write(d.join("config.json"), "{arch: deit").unwrap()),
            "config.json",
        ),
        (
            "unknown config key",
            Box::new(|d: &Path| edit_config(d, |v| v["embed_dims"] = 64.into())),
            "unknown field `embed_dims`",
        ),
        (
            "selector location outside depth",
            Box::new(|d: &Path| edit_config(d, |v| v["pruning"]["locations"] = serde_json::json!([1, 2, 4]))),
            "outside the model's depth",
        ),
        (
            "missing safetensors",
            Box::new(|d: &Path| std::fs::remove_file(d.join("model.safetensors")).unwrap()),
            "model.safetensors",
        ),
        (
            "truncated safetensors",
            Box::new(|d: &Path| {
                let p = d.join("model.safetensors");
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() / 2]).unwrap();
            }),
            "not a valid safetensors file",
        ),
        (
            "garbage safetensors",
            Box::new(|d: &Path| {
                std::fs::write(d.join("model.safetensors"), b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk").unwrap()
            }),
            "not a valid safetensors file",
        ),
        (
            "missing tensor",
            Box::new(|d: &Path| edit_tensors(d, |t| drop(t.remove("blocks.2.mlp.fc1.weight")))),
            "missing tensor blocks.2.mlp.fc1.weight",
        ),
        (
            "missing selector tensor",
            Box::new(|d: &Path| edit_tensors(d, |t| drop(t.remove("selectors.1.heads.0.fc3.bias")))),
            "missing tensor selectors.1.heads.0.fc3.bias",
        ),
        (
            "wrong shape",
            Box::new(|d: &Path| {
                edit_tensors(d, |t| {
                    let e = t.get_mut("head.bias").unwrap();
                    e.1 = vec![500, 2];
                })
            }),
            "head.bias has shape [500, 2], expected [1000]",
        ),
        (
            "wrong dtype",
            Box::new(|d: &Path| {
                edit_tensors(d, |t| {
                    let e = t.get_mut("norm.weight").unwrap();
                    e.0 = safetensors::Dtype::I32;
                })
            }),
            "norm.weight has dtype I32",
        ),
        (
            "NaN weight",
            Box::new(|d: &Path| {
                edit_tensors(d, |t| {
                    let e = t.get_mut("blocks.0.attn.proj.bias").unwrap();
                    e.2[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
                })
            }),
            "blocks.0.attn.proj.bias holds a NaN",
        ),
        (
            "unexpected tensor",
            Box::new(|d: &Path| {
                edit_tensors(d, |t| {
                    let e = t["head.bias"].clone();
                    t.insert("head_dist.bias".into(), e);
                })
            }),
            "unexpected tensors",
        ),
        (
            "labels count",
            Box::new(|d: &Path| std::fs::write(d.join("imagenet_classes.txt"), "cat\ndog\n").unwrap()),
            "has 2 labels, config num_classes is 1000",
        ),
        (
            "bad model card",
            Box::new(|d: &Path| std::fs::write(d.join("model_card.json"), "[").unwrap()),
            "model_card.json",
        ),
    ]
}

#[test]
fn broken_models_are_refused_with_a_named_problem() {
    for (what, breakage, needle) in breakages() {
        let dir = broken_model(|d| breakage(d));
        let err: ModelError = Model::load(dir.path()).expect_err(what);
        let msg = err.to_string();
        assert!(msg.contains(needle), "{what}: expected {needle:?} in {msg:?}");
        assert_eq!(msg.lines().count(), 1, "{what}: {msg}");
    }
}

#[test]
fn cli_exits_2_on_a_broken_model_without_panicking() {
    let image = root().join("tests/images/chelsea.png");
    for (what, breakage, needle) in breakages() {
        let dir = broken_model(|d| breakage(d));
        let out = run(&["--model".as_ref(), dir.path().as_os_str(), image.as_os_str()]);
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
        let e = stderr(&out);
        assert!(e.contains(needle), "{what}: expected {needle:?} in {e:?}");
        assert_eq!(e.lines().count(), 1, "{what}: {e}");
        assert!(out.stdout.is_empty(), "{what}: nothing should run");
    }
}

#[test]
fn usage_errors_exit_2() {
    let image = root().join("tests/images/chelsea.png");
    let model = tiny();
    for args in [
        vec!["--pruning".as_ref(), "sometimes".as_ref(), image.as_os_str()],
        vec!["--no-such-flag".as_ref(), image.as_os_str()],
        vec!["--model".as_ref(), model.as_os_str()],
        vec!["--model".as_ref(), model.as_os_str(), "--threshold".as_ref(), "1.5".as_ref(), image.as_os_str()],
        vec!["--model".as_ref(), "/nonexistent/model".as_ref(), image.as_os_str()],
    ] {
        let out = run(&args);
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}
