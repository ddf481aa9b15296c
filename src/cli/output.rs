//! Human and JSON output of `heatvit-run`.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::engine::{top_k, Inference};
use crate::model::{Model, PruningConfig, PruningMode};

#[derive(Debug, Clone, Serialize)]
pub struct Timings {
    pub decode_ms: f64,
    pub preprocess_ms: f64,
    pub forward_ms: f64,
    pub total_ms: f64,
}

#[derive(Serialize)]
struct Top {
    class: usize,
    label: String,
    prob: f32,
}

#[derive(Serialize)]
struct Stage {
    block: usize,
    tokens_in: usize,
    kept: usize,
    packages: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    kept_patch_indices: Option<Vec<usize>>,
}

#[derive(Serialize)]
struct Record<'a> {
    image: String,
    model: String,
    trained: bool,
    backend: &'a str,
    pruning: &'a str,
    top5: Vec<Top>,
    stages: Vec<Stage>,
    macs: u64,
    dense_macs: u64,
    timings_ms: &'a Timings,
    #[serde(skip_serializing_if = "Option::is_none")]
    logits: Option<&'a [f32]>,
}

pub struct Printer<'m> {
    model: &'m Model,
    json: bool,
    logits: bool,
    trace: bool,
    mode: PruningMode,
}

impl<'m> Printer<'m> {
    pub fn new(model: &'m Model, json: bool, logits: bool, trace: bool) -> Printer<'m> {
        Printer { model, json, logits, trace, mode: model.config.pruning.mode }
    }

    /// Printed once before the images (human output only).
    pub fn header(&mut self, backend: &str, pruning: &PruningConfig) {
        self.mode = pruning.mode;
        if self.json {
            return;
        }
        let m = self.model;
        out(&format!(
            "model {} ({}×{} px, {} blocks, D={}), backend {}, pruning {}{}\n",
            m.name(),
            m.config.image_size,
            m.config.image_size,
            m.config.depth,
            m.config.embed_dim,
            backend,
            pruning.mode.as_str(),
            match pruning.mode {
                PruningMode::Adaptive => format!(" (threshold {})", pruning.threshold),
                PruningMode::Topk | PruningMode::Evit => format!(" (keep ratios {:?})", pruning.keep_ratios),
                PruningMode::None => String::new(),
            }
        ));
        if !m.card.trained {
            out("note: this model's weights are UNTRAINED (random): its predictions are meaningless\n");
        }
    }

    pub fn image(&mut self, path: &Path, inf: &Inference, t: &Timings) {
        let top = top_k(&inf.logits, 5.min(inf.logits.len()));
        if self.json {
            let rec = Record {
                image: path.display().to_string(),
                model: self.model.name(),
                trained: self.model.card.trained,
                backend: inf.backend,
                pruning: self.mode.as_str(),
                top5: top
                    .iter()
                    .map(|&(class, prob)| Top { class, label: self.model.labels[class].clone(), prob })
                    .collect(),
                stages: inf
                    .stages
                    .iter()
                    .map(|s| Stage {
                        block: s.block,
                        tokens_in: s.tokens_in,
                        kept: s.kept,
                        packages: s.packages,
                        kept_patch_indices: self.trace.then(|| s.kept_patch_indices.clone()),
                    })
                    .collect(),
                macs: inf.macs,
                dense_macs: inf.dense_macs,
                timings_ms: t,
                logits: self.logits.then_some(inf.logits.as_slice()),
            };
            println_json(&rec);
            return;
        }
        let mut s = format!("{}\n", path.display());
        for (rank, (class, prob)) in top.iter().enumerate() {
            s += &format!("  {}. {:>5.1}%  {} ({})\n", rank + 1, prob * 100.0, self.model.labels[*class], class);
        }
        if inf.stages.is_empty() {
            s += &format!("  tokens: {} patches, no pruning\n", self.model.config.num_patches());
        } else {
            let st: Vec<String> = inf
                .stages
                .iter()
                .map(|st| format!("block {}: {} → {} (+{} pkg)", st.block, st.tokens_in, st.kept, st.packages))
                .collect();
            s += &format!("  tokens: {}\n", st.join(", "));
        }
        let pct = 100.0 * inf.macs as f64 / inf.dense_macs as f64;
        s += &format!(
            "  MACs: {} of {} dense ({:.1}%, {:.1}% saved)\n",
            giga(inf.macs),
            giga(inf.dense_macs),
            pct,
            100.0 - pct
        );
        s += &format!(
            "  time: decode {:.1} ms, preprocess {:.1} ms, forward {:.1} ms\n",
            t.decode_ms, t.preprocess_ms, t.forward_ms
        );
        out(&s);
    }

    pub fn failure(&mut self, path: &Path, e: &anyhow::Error) {
        if self.json {
            println_json(&serde_json::json!({ "image": path.display().to_string(), "error": format!("{e:#}") }));
        }
    }
}

fn giga(macs: u64) -> String {
    if macs >= 1_000_000_000 {
        format!("{:.3} GMAC", macs as f64 / 1e9)
    } else {
        format!("{:.2} MMAC", macs as f64 / 1e6)
    }
}

/// Writes to stdout, ignoring a closed pipe (e.g. `| head`) instead of panicking.
fn out(s: &str) {
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

fn println_json<T: Serialize>(v: &T) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not an error worth a panic.
    let _ = serde_json::to_writer(&mut out, v).map_err(std::io::Error::from).and_then(|_| writeln!(out));
}
