//! Drives one image through the schedule: blocks on the backend, selector scores from the
//! backend, the pruning decision here (the same for every backend), compaction on the
//! backend, MAC accounting from the token counts.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::backend::{Backend, BackendError};
use crate::model::pruning::{self, ScoreError};
use crate::model::{macs, Model, ModelError, PruningConfig, PruningMode};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Scores(#[from] ScoreError),
    #[error("backend returned {got} logits, the model has {want} classes")]
    Logits { got: usize, want: usize },
    #[error("backend returned a NaN or infinite logit")]
    NonFiniteLogits,
}

/// What one selector stage did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageReport {
    /// The block the selector runs before.
    pub block: usize,
    /// Live patch tokens scored.
    pub tokens_in: usize,
    /// Live patch tokens kept.
    pub kept: usize,
    /// Package tokens in the matrix after this stage.
    pub packages: usize,
    /// Original 0-based patch indices of the kept tokens, ascending.
    pub kept_patch_indices: Vec<usize>,
    /// The fused keep probability of each scored token.
    pub keep_probs: Vec<f32>,
}

/// Wall time of one part of the forward pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span {
    /// `embed`, `blocks 0-2`, `selector 0`, `head`, …
    pub name: String,
    pub ms: f64,
}

/// The result of one forward pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inference {
    pub backend: &'static str,
    pub logits: Vec<f32>,
    pub stages: Vec<StageReport>,
    /// MACs executed (spec §4).
    pub macs: u64,
    /// MACs of the dense backbone for the same model.
    pub dense_macs: u64,
    pub forward_ms: f64,
    /// Where the forward time went, in order.
    pub spans: Vec<Span>,
}

/// Records consecutive spans of a forward pass.
struct Clock {
    last: Instant,
    spans: Vec<Span>,
}

impl Clock {
    fn new() -> Clock {
        Clock { last: Instant::now(), spans: Vec::new() }
    }

    fn lap(&mut self, name: impl Into<String>) {
        let now = Instant::now();
        self.spans.push(Span { name: name.into(), ms: (now - self.last).as_secs_f64() * 1e3 });
        self.last = now;
    }
}

fn blocks_name(range: std::ops::Range<usize>) -> String {
    format!("blocks {}-{}", range.start, range.end.saturating_sub(1))
}

/// A model bound to a backend and an effective pruning schedule.
pub struct Engine {
    model: Arc<Model>,
    pruning: PruningConfig,
    backend: Box<dyn Backend>,
}

impl Engine {
    /// `pruning` is the schedule to run (the model's own, possibly with overrides applied).
    pub fn new(model: Arc<Model>, pruning: PruningConfig, backend: Box<dyn Backend>) -> Result<Engine, ModelError> {
        let mut cfg = model.config.clone();
        cfg.pruning = pruning;
        cfg.validate().map_err(|msg| ModelError::Config { path: model.dir.join("config.json"), msg })?;
        let needs_selectors = matches!(cfg.pruning.mode, PruningMode::Adaptive | PruningMode::Topk);
        if needs_selectors && !cfg.pruning.locations.is_empty() && !model.has_selectors() {
            return Err(ModelError::NoSelectors);
        }
        if cfg.pruning.locations != model.config.pruning.locations && model.has_selectors() {
            return Err(ModelError::Config {
                path: model.dir.join("config.json"),
                msg: "selector locations cannot be overridden: the selectors were trained for the model's own".into(),
            });
        }
        Ok(Engine { model, pruning: cfg.pruning, backend })
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn pruning(&self) -> &PruningConfig {
        &self.pruning
    }

    /// Runs one normalised CHW image tensor.
    pub fn run(&mut self, image: &[f32]) -> Result<Inference, EngineError> {
        let start = Instant::now();
        let mut clock = Clock::new();
        let cfg = &self.model.config;
        let n0 = cfg.num_patches();
        let mut layout = self.backend.begin(image)?;
        clock.lap("embed");
        let mut macs = macs::embed(cfg);
        let mut origin: Vec<usize> = (0..n0).collect();
        let mut stages = Vec::new();
        let mut next = 0;
        let prune = self.pruning.mode != PruningMode::None;
        for (s, &loc) in self.pruning.locations.iter().enumerate() {
            if !prune {
                break;
            }
            self.backend.run_blocks(next..loc)?;
            if loc > next {
                clock.lap(blocks_name(next..loc));
            }
            macs += (loc - next) as u64 * macs::block(cfg, layout.rows());
            next = loc;
            let tokens_in = layout.live;
            if tokens_in == 0 {
                // Nothing left to score: the selector is skipped (project choice).
                stages.push(StageReport {
                    block: loc,
                    tokens_in: 0,
                    kept: 0,
                    packages: layout.packages,
                    kept_patch_indices: Vec::new(),
                    keep_probs: Vec::new(),
                });
                continue;
            }
            let scores = if self.pruning.mode == PruningMode::Evit {
                // The comparison baseline: CLS attention of the previous block, no selector.
                self.backend.cls_attention()?
            } else {
                let sc = self.backend.score(s)?;
                macs += macs::selector(cfg, self.model.weights.selectors[s].gate_hidden(), tokens_in);
                sc
            };
            pruning::check_scores(s, tokens_in, &scores)?;
            let decision = pruning::decide(&self.pruning, s, n0, &scores);
            let new_layout = self.backend.compact(&decision, &scores)?;
            let expect = crate::backend::Layout {
                live: decision.kept.len(),
                packages: layout.packages + usize::from(decision.makes_package()),
            };
            if new_layout != expect {
                return Err(BackendError::Failed {
                    backend: self.backend.name(),
                    msg: format!("compaction produced {new_layout:?}, expected {expect:?}"),
                }
                .into());
            }
            layout = new_layout;
            clock.lap(format!("selector {s}"));
            origin = decision.kept.iter().map(|&j| origin[j]).collect();
            stages.push(StageReport {
                block: loc,
                tokens_in,
                kept: layout.live,
                packages: layout.packages,
                kept_patch_indices: origin.clone(),
                keep_probs: scores,
            });
        }
        self.backend.run_blocks(next..cfg.depth)?;
        if cfg.depth > next {
            clock.lap(blocks_name(next..cfg.depth));
        }
        macs += (cfg.depth - next) as u64 * macs::block(cfg, layout.rows());
        let logits = self.backend.logits()?;
        clock.lap("head");
        macs += macs::head(cfg);
        if logits.len() != cfg.num_classes {
            return Err(EngineError::Logits { got: logits.len(), want: cfg.num_classes });
        }
        if logits.iter().any(|v| !v.is_finite()) {
            return Err(EngineError::NonFiniteLogits);
        }
        Ok(Inference {
            backend: self.backend.name(),
            logits,
            stages,
            macs,
            dense_macs: macs::dense(cfg),
            forward_ms: start.elapsed().as_secs_f64() * 1e3,
            spans: clock.spans,
        })
    }
}

/// Softmax probabilities and the `k` best classes, best first (ties: lower class first).
pub fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.into_iter().take(k).map(|i| (i, (exps[i] / sum) as f32)).collect()
}
