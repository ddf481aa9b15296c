//! `heatvit-run quantize`: calibrates activation ranges on real images with the float
//! model and writes a quantised model directory that loads directly.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use super::out;
use super::EXIT_OK;
use crate::backend::cpu_int8::CpuInt8;
use crate::engine::{top_k, Engine};
use crate::model::Model;
use crate::preprocess;
use crate::quant::calibrate::{calibrate_and_quantize, RESIDUAL_HEADROOM};
use crate::quant::model::INT8_FILE;

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// The float model directory.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Calibration images: a directory of PNG/JPEG files, or (with --calib-split) a
    /// directory holding an idx data set such as Fashion-MNIST.
    #[arg(long, value_name = "DIR")]
    calib: PathBuf,
    /// Read --calib as an idx data set and use this split (e.g. train).
    #[arg(long, value_name = "SPLIT")]
    calib_split: Option<String>,
    /// Use at most this many calibration images.
    #[arg(long, value_name = "N", default_value_t = 256)]
    calib_count: usize,
    /// Output directory (created; must be empty or absent unless --force).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Overwrite the files in a non-empty output directory.
    #[arg(long)]
    force: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    model: String,
    out: String,
    calibration_images: usize,
    skipped_images: usize,
    /// On the calibration images: cpu-int8 top-1 equal to cpu-f32's.
    top1_agreement: f64,
    max_abs_logit_error: f64,
    residual_headroom: f32,
    scales: std::collections::BTreeMap<String, f32>,
}

fn calibration_tensors(args: &QuantizeArgs, model: &Model) -> Result<(Vec<Vec<f32>>, usize)> {
    let cfg = &model.config;
    if let Some(split) = &args.calib_split {
        let data = crate::dataset::load_idx(&args.calib, split, Some(args.calib_count))
            .with_context(|| format!("cannot read calibration data set {}", args.calib.display()))?;
        let t = data
            .images
            .iter()
            .map(|img| preprocess::preprocess(cfg, &image::DynamicImage::ImageLuma8(img.clone()).into_rgb8()).tensor)
            .collect();
        return Ok((t, 0));
    }
    let entries = std::fs::read_dir(&args.calib)
        .with_context(|| format!("cannot read calibration folder {}", args.calib.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("calibration folder {} has no PNG or JPEG images", args.calib.display());
    }
    let (mut out, mut skipped) = (Vec::new(), 0);
    for p in paths.iter().take(args.calib_count) {
        match preprocess::load(cfg, p) {
            Ok(pre) => out.push(pre.tensor),
            Err(e) => {
                log::warn!("calibration: skipping {}: {e}", p.display());
                eprintln!("heatvit-run: quantize: skipping {}: {e}", p.display());
                skipped += 1;
            }
        }
    }
    if out.is_empty() {
        bail!("none of the {} images in {} could be read", paths.len().min(args.calib_count), args.calib.display());
    }
    Ok((out, skipped))
}

/// Writes the float model's `MODEL_CARD.md` (or a new one) plus what quantisation did, so the
/// quantised directory documents itself. It starts from the float model's card, never from
/// the output's, so re-quantising with --force gives the same file (no timestamps either).
fn write_card_section(args: &QuantizeArgs, r: &Report) -> Result<()> {
    let src = args.model.join("MODEL_CARD.md");
    let path = args.out.join("MODEL_CARD.md");
    let mut card = match std::fs::read_to_string(&src) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!("# {}\n", r.model),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", src.display())),
    };
    if !card.ends_with('\n') {
        card.push('\n');
    }
    let source = match &args.calib_split {
        Some(split) => format!(
            "the first {} images of the `{split}` split of the idx data set in `{}`",
            r.calibration_images,
            args.calib.display()
        ),
        None => format!(
            "{} PNG/JPEG images of `{}` (in file-name order{})",
            r.calibration_images,
            args.calib.display(),
            if r.skipped_images > 0 {
                format!("; {} unreadable file(s) skipped", r.skipped_images)
            } else {
                String::new()
            }
        ),
    };
    card.push_str(&format!(
        "\n## Quantisation (written by `heatvit-run quantize`)\n\n\
         - Format: `docs/integer-format.md` — int8 weights per output channel, int8 activations per \
         tensor, int32 accumulators, requantisation by integer multiplier and shift; the \
         integer tensors are in `{INT8_FILE}`, the activation scales in `quantization.json`.\n\
         - Calibration: {source}, run through the float model with its own pruning schedule.\n\
         - On the calibration images, `cpu-int8` top-1 agrees with `cpu-f32` on {:.1}%; largest \
         |logit error| {:.4}.\n\
         - `heatvit-run --model DIR` (backend `auto`) runs this directory on `cpu-int8`; \
         `--backend cpu-f32` runs the float weights it still carries.\n",
        100.0 * r.top1_agreement,
        r.max_abs_logit_error
    ));
    std::fs::write(&path, card).with_context(|| format!("cannot write {}", path.display()))
}

fn prepare_out(out: &Path, src: &Path, force: bool) -> Result<()> {
    if out.exists() {
        if out.canonicalize()? == src.canonicalize()? {
            bail!("--out {} is the float model's own directory; choose another", out.display());
        }
        let non_empty = std::fs::read_dir(out).with_context(|| format!("{}", out.display()))?.next().is_some();
        if non_empty && !force {
            bail!("output directory {} is not empty (use --force to overwrite)", out.display());
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    Ok(())
}

pub fn run(args: &QuantizeArgs) -> Result<u8> {
    let model =
        Arc::new(Model::load(&args.model).with_context(|| format!("cannot load model {}", args.model.display()))?);
    if args.calib_count == 0 {
        bail!("--calib-count must be at least 1");
    }
    let (images, skipped) = calibration_tensors(args, &model)?;
    // Calibrate with the model's own pruning schedule, so package tokens and the later
    // stages see what they see at inference.
    let (q, float_logits) = calibrate_and_quantize(&model, &images)?;
    let scales = q.scales.clone();
    prepare_out(&args.out, &args.model, args.force)?;
    let copy = |name: &str| -> Result<()> {
        let from = args.model.join(name);
        if from.exists() {
            std::fs::copy(&from, args.out.join(name)).with_context(|| format!("cannot copy {}", from.display()))?;
        }
        Ok(())
    };
    for f in ["config.json", "model.safetensors", "model_card.json"] {
        copy(f)?;
    }
    copy(&model.config.labels)?;
    q.save(&args.out).with_context(|| format!("cannot write {}", args.out.join(INT8_FILE).display()))?;

    // The written directory must load as it is, and the integer path must agree.
    let qmodel = Arc::new(
        Model::load(&args.out).with_context(|| format!("the written model {} does not load", args.out.display()))?,
    );
    let backend = Box::new(CpuInt8::new(Arc::clone(&qmodel), 1)?);
    let mut ie = Engine::new(Arc::clone(&qmodel), qmodel.config.pruning.clone(), backend)?;
    let (mut agree, mut max_err) = (0usize, 0.0f64);
    for (t, fl) in images.iter().zip(&float_logits) {
        let il = ie.run(t)?.logits;
        agree += usize::from(top_k(&il, 1)[0].0 == top_k(fl, 1)[0].0);
        for (a, b) in il.iter().zip(fl) {
            max_err = max_err.max((a - b).abs() as f64);
        }
    }
    let r = Report {
        model: model.name(),
        out: args.out.display().to_string(),
        calibration_images: images.len(),
        skipped_images: skipped,
        top1_agreement: agree as f64 / images.len() as f64,
        max_abs_logit_error: max_err,
        residual_headroom: RESIDUAL_HEADROOM,
        scales,
    };
    std::fs::write(args.out.join("quantization.json"), serde_json::to_string_pretty(&r)? + "\n")?;
    write_card_section(args, &r)?;
    if args.json {
        out!("{}", serde_json::to_string(&r)?);
    } else {
        out!(
            "wrote {} ({} calibration images{}); on them cpu-int8 top-1 agrees with cpu-f32 on {:.1}%, max |logit error| {:.4}",
            args.out.display(),
            r.calibration_images,
            if skipped > 0 { format!(", {skipped} skipped") } else { String::new() },
            100.0 * r.top1_agreement,
            r.max_abs_logit_error
        );
    }
    Ok(EXIT_OK)
}
