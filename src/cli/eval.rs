//! `heatvit-run eval`: top-1 accuracy, tokens kept and MACs on a labelled idx data set,
//! measured by the runtime itself (the figures in `docs/results.md` come from here).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use super::out;
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
    /// Also run every example on this backend (same model and schedule) and report how
    /// the two agree: top-1, top-5 overlap, largest logit difference, kept tokens.
    #[arg(long, value_enum, value_name = "BACKEND")]
    compare_backend: Option<crate::backend::BackendChoice>,
}

#[derive(Serialize, Default)]
struct Agreement {
    backend: String,
    top1_agreement: f64,
    mean_top5_overlap: f64,
    max_abs_logit_diff: f64,
    /// Examples whose kept-token sets differ at some stage.
    examples_with_different_kept_tokens: usize,
    /// The other backend's top-1 accuracy.
    other_top1: f64,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    compare: Option<Agreement>,
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
    let stages =
        if engine.pruning().mode == crate::model::PruningMode::None { 0 } else { engine.pruning().locations.len() };
    let mut kept_sum = vec![0u64; stages];
    let (mut correct, mut macs, mut ms) = (0usize, 0u64, 0.0f64);
    let mut dense = 0;
    let mut other = match args.compare_backend {
        Some(choice) => {
            let backend = crate::backend::select(choice, Arc::clone(&model), args.model.threads as usize)?;
            Some(crate::engine::Engine::new(Arc::clone(&model), engine.pruning().clone(), backend)?)
        }
        None => None,
    };
    let mut agree = Agreement::default();
    let mut other_correct = 0usize;
    for (i, (img, &label)) in data.images.iter().zip(&data.labels).enumerate() {
        let rgb = image::DynamicImage::ImageLuma8(img.clone()).into_rgb8();
        let pre = preprocess::preprocess(&model.config, &rgb);
        let inf = engine.run(&pre.tensor).with_context(|| format!("example {i}"))?;
        let top = crate::engine::top_k(&inf.logits, 1)[0].0;
        correct += usize::from(top == label as usize);
        for (s, st) in inf.stages.iter().enumerate() {
            kept_sum[s] += st.kept as u64;
        }
        if let Some(o) = other.as_mut() {
            let oi = o.run(&pre.tensor).with_context(|| format!("example {i} on the compared backend"))?;
            agree.backend = o.backend_name().into();
            let a5: Vec<usize> = crate::engine::top_k(&inf.logits, 5).iter().map(|t| t.0).collect();
            let b5: Vec<usize> = crate::engine::top_k(&oi.logits, 5).iter().map(|t| t.0).collect();
            agree.top1_agreement += f64::from(u8::from(a5[0] == b5[0]));
            other_correct += usize::from(b5[0] == label as usize);
            agree.mean_top5_overlap += a5.iter().filter(|c| b5.contains(c)).count() as f64 / 5.0;
            for (x, y) in inf.logits.iter().zip(&oi.logits) {
                agree.max_abs_logit_diff = agree.max_abs_logit_diff.max((x - y).abs() as f64);
            }
            let kept = |v: &crate::Inference| v.stages.iter().map(|s| s.kept_patch_indices.clone()).collect::<Vec<_>>();
            agree.examples_with_different_kept_tokens += usize::from(kept(&inf) != kept(&oi));
        }
        macs += inf.macs;
        dense = inf.dense_macs;
        ms += inf.forward_ms;
    }
    let n = data.images.len();
    let compare = other.map(|_| {
        agree.top1_agreement /= n as f64;
        agree.mean_top5_overlap /= n as f64;
        agree.other_top1 = other_correct as f64 / n as f64;
        agree
    });
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
        compare,
    };
    if args.json {
        out!("{}", serde_json::to_string(&r)?);
    } else {
        out!(
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
        if let Some(c) = &r.compare {
            out!(
                "  vs {}: top-1 agreement {:.2}%, mean top-5 overlap {:.3}, max |logit diff| {:.4}, kept tokens differ on {} examples, its top-1 {:.2}%",
                c.backend,
                100.0 * c.top1_agreement,
                c.mean_top5_overlap,
                c.max_abs_logit_diff,
                c.examples_with_different_kept_tokens,
                100.0 * c.other_top1
            );
        }
    }
    Ok(EXIT_OK)
}
