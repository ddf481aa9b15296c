//! `heatvit-run eval`: top-1 accuracy, tokens kept and MACs on a labelled idx data set,
//! measured by the runtime itself (the figures in `docs/results.md` come from here).
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use super::{ModelArgs, EXIT_OK};
use crate::dataset;
use crate::preprocess;

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Directory with `{split}-images-idx3-ubyte[.gz]` and `{split}-labels-idx1-ubyte[.gz]`
    /// (e.g. /usr/share/datasets/fashion-mnist).
    #[arg(long, value_name = "DIR")]
    dataset: PathBuf,
    /// Which split: t10k (test) or train.
    #[arg(long, default_value = "t10k")]
    split: String,
    /// Evaluate only the first N examples.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    model: String,
    backend: String,
    pruning: String,
    threshold: f64,
    images: usize,
    correct: usize,
    top1: f64,
    mean_kept_per_stage: Vec<f64>,
    mean_macs: f64,
    dense_macs: u64,
    macs_pct_of_dense: f64,
    mean_forward_ms: f64,
}

pub fn run(args: &EvalArgs) -> Result<u8> {
    let data = dataset::load_idx(&args.dataset, &args.split, args.limit)
        .with_context(|| format!("cannot read data set {}", args.dataset.display()))?;
    if data.images.is_empty() {
        bail!("{}: the data set has no images", args.dataset.display());
    }
    let mut engine = args.model.engine()?;
    let model = std::sync::Arc::clone(engine.model());
    if let Some(&bad) = data.labels.iter().find(|&&l| l as usize >= model.config.num_classes) {
        bail!("data set label {bad} is outside the model's {} classes", model.config.num_classes);
    }
    let stages = if engine.pruning().mode == crate::model::PruningMode::None { 0 } else { engine.pruning().locations.len() };
    let mut kept_sum = vec![0u64; stages];
    let (mut correct, mut macs, mut ms) = (0usize, 0u64, 0.0f64);
    let mut dense = 0;
    for (i, (img, &label)) in data.images.iter().zip(&data.labels).enumerate() {
        let rgb = image::DynamicImage::ImageLuma8(img.clone()).into_rgb8();
        let pre = preprocess::preprocess(&model.config, &rgb);
        let inf = engine.run(&pre.tensor).with_context(|| format!("example {i}"))?;
        let top = crate::engine::top_k(&inf.logits, 1)[0].0;
        correct += usize::from(top == label as usize);
        for (s, st) in inf.stages.iter().enumerate() {
            kept_sum[s] += st.kept as u64;
        }
        macs += inf.macs;
        dense = inf.dense_macs;
        ms += inf.forward_ms;
    }
    let n = data.images.len();
    let r = Report {
        model: model.name(),
        backend: engine.backend_name().into(),
        pruning: engine.pruning().mode.as_str().into(),
        threshold: engine.pruning().threshold,
        images: n,
        correct,
        top1: correct as f64 / n as f64,
        mean_kept_per_stage: kept_sum.iter().map(|&k| k as f64 / n as f64).collect(),
        mean_macs: macs as f64 / n as f64,
        dense_macs: dense,
        macs_pct_of_dense: 100.0 * macs as f64 / n as f64 / dense as f64,
        mean_forward_ms: ms / n as f64,
    };
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} [{}] pruning {}: top-1 {:.2}% ({}/{}), kept per stage {:?}, MACs {:.1}% of dense, {:.2} ms/image",
            r.model,
            r.backend,
            r.pruning,
            100.0 * r.top1,
            r.correct,
            r.images,
            r.mean_kept_per_stage.iter().map(|k| (k * 10.0).round() / 10.0).collect::<Vec<_>>(),
            r.macs_pct_of_dense,
            r.mean_forward_ms
        );
    }
    Ok(EXIT_OK)
}
