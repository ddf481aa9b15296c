//! Backends run the heavy parts of one image's forward pass; the [`crate::engine::Engine`]
//! drives them through the schedule and makes every pruning decision itself.
//!
//! The split mirrors HeatViT's on the ZCU102: a backend computes (embedding, blocks,
//! selector scores, head) and holds the token matrix in its own number format and memory;
//! the engine decides which tokens survive (`model::pruning`) and asks the backend to
//! compact. A backend processes one image at a time; its state lives between `begin` and
//! `logits`.
#![forbid(unsafe_code)]

pub mod cpu_f32;
pub mod cpu_int8;
pub mod op_timers;

use std::ops::Range;

use crate::model::pruning::Decision;

/// A failure inside a backend. The engine may retry the image on another backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend {backend}: {msg}")]
    Failed { backend: &'static str, msg: String },
    #[error("backend {backend}: called out of order: {msg}")]
    Protocol { backend: &'static str, msg: String },
}

/// The token layout a backend currently holds: `[CLS, live patches, packages]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub live: usize,
    pub packages: usize,
}

impl Layout {
    pub fn rows(&self) -> usize {
        1 + self.live + self.packages
    }
}

/// One coarse interface per device. Implementations: [`cpu_f32::CpuF32`] (the float
/// reference); the integer CPU path and the fabric follow the same contract.
pub trait Backend {
    /// Short name shown to users and in JSON (`cpu-f32`, `cpu-int8`, `fabric`).
    fn name(&self) -> &'static str;
    /// Starts an image: patch embedding, CLS and positional embedding. `image` is the
    /// normalised CHW tensor (3 × S × S).
    fn begin(&mut self, image: &[f32]) -> Result<Layout, BackendError>;
    /// Runs blocks `blocks` on the current tokens.
    fn run_blocks(&mut self, blocks: Range<usize>) -> Result<(), BackendError>;
    /// Keep probability of each live patch token from selector `stage`. Values must be
    /// exactly representable in f32 (integer backends return Q0.16 / 2^16).
    fn score(&mut self, stage: usize) -> Result<Vec<f32>, BackendError>;
    /// Applies a decision: `[CLS, kept, packages, P_new]`, physically compacted.
    fn compact(&mut self, decision: &Decision, scores: &[f32]) -> Result<Layout, BackendError>;
    /// Final norm and head on CLS; ends the image.
    fn logits(&mut self) -> Result<Vec<f32>, BackendError>;
    /// The attention CLS paid to each live patch token in the last block run (mean over
    /// heads), for the EViT-style comparison mode. Backends that do not keep it say so.
    fn cls_attention(&mut self) -> Result<Vec<f32>, BackendError> {
        Err(BackendError::Failed {
            backend: self.name(),
            msg: "pruning mode evit is not supported by this backend".into(),
        })
    }
}

/// The input of [`Backend::begin`] must be the normalised 3 × S × S tensor.
pub(crate) fn check_image(
    backend: &'static str,
    cfg: &crate::model::Config,
    image: &[f32],
) -> Result<(), BackendError> {
    let want = 3 * cfg.image_size * cfg.image_size;
    if image.len() != want {
        return Err(BackendError::Failed {
            backend,
            msg: format!("input tensor has {} values, expected {want}", image.len()),
        });
    }
    Ok(())
}

/// The `--backend` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// The FPGA when one is present, else the best CPU backend for the model.
    Auto,
    /// The best CPU backend for the model: `cpu-int8` for a quantised model, else `cpu-f32`.
    Cpu,
    /// The float reference on the CPU.
    CpuF32,
    /// The 8-bit integer path on the CPU (needs a quantised model).
    CpuInt8,
}

/// Creates the backend for `choice`, logging why `auto` chose what it chose. `threads`
/// is the number of threads one image may use.
pub fn select(
    choice: BackendChoice,
    model: std::sync::Arc<crate::model::Model>,
    threads: usize,
) -> Result<Box<dyn Backend>, BackendError> {
    let best_cpu = |model: std::sync::Arc<crate::model::Model>| -> Result<Box<dyn Backend>, BackendError> {
        if model.quant.is_some() {
            Ok(Box::new(cpu_int8::CpuInt8::new(model, threads)?))
        } else {
            Ok(Box::new(cpu_f32::CpuF32::new(model)))
        }
    };
    match choice {
        BackendChoice::Auto => {
            let b = best_cpu(model)?;
            log::info!("backend auto: this build has no FPGA driver yet; using {}", b.name());
            Ok(b)
        }
        BackendChoice::Cpu => best_cpu(model),
        BackendChoice::CpuF32 => Ok(Box::new(cpu_f32::CpuF32::new(model))),
        BackendChoice::CpuInt8 => Ok(Box::new(cpu_int8::CpuInt8::new(model, threads)?)),
    }
}
