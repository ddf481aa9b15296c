//! heatvit: Vision Transformers with HeatViT image-adaptive token pruning.
//!
//! - [`model`]: config, weights by timm name, the float ViT and token selector, the
//!   backend-independent pruning decision, MAC accounting.
//! - [`kernels`]: CPU compute behind one entry point per operation.
//! - [`backend`]: the coarse per-device trait and its implementations.
//! - [`engine`]: drives one image through the schedule on a backend.
//! - [`quant`]: the 8-bit fixed-point format shared by the CPU integer path and the
//!   fabric: rounding, requantisation, integer nonlinearities, LayerNorm to int8.
//! - [`preprocess`]: bounded image decoding and timm's eval transform.
//! - [`cli`]: the `heatvit-run` front end.

pub mod backend;
pub mod cli;
pub mod dataset;
pub mod engine;
pub mod kernels;
pub mod model;
pub mod preprocess;
pub mod quant;

pub use engine::{Engine, Inference};
pub use model::Model;
