//! The 8-bit fixed-point format that the CPU integer path and the FPGA fabric share
//! (issue 4). The full specification is `docs/integer-format.md`; this module is its
//! executable form and the golden model of the accelerator's post-processing, so every
//! operation here is integer (or, for LayerNorm, fixed-order scalar float) and gives the
//! same bits on x86-64 and aarch64.
//!
//! - [`fixed`]: the one rounding rule, saturation, dyadic requantisation multipliers.
//! - [`tensor`]: per-output-channel int8 weights, int32 biases, per-tensor scales.
//! - [`gelu`], [`softmax`], [`sigmoid`]: integer nonlinearities in Q·.16 with float twins.
//! - [`select`]: the token selector's keep score, head fusion and the package token.
//! - [`norm`]: LayerNorm on int16 tokens, in deterministic float, to int8.
#![forbid(unsafe_code)]

pub mod calibrate;
pub mod fixed;
pub mod gelu;
pub mod model;
pub mod norm;
pub mod select;
pub mod sigmoid;
pub mod softmax;
pub mod tensor;

pub use fixed::{Multiplier, FRAC_BITS, ONE_Q16};
pub use tensor::{QuantLinear, WeightsI8};

/// Why a tensor or scale cannot be put into the integer format.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    #[error("requantisation ratio {ratio:e} is outside [{min:e}, {max:e}); the scales are inconsistent (check the calibration)")]
    RatioOutOfRange { ratio: f64, min: f64, max: f64 },
    #[error("{what}: scale {value} is not a positive finite number")]
    BadScale { what: String, value: f32 },
    #[error("{what}: {got} values, expected {want}")]
    Shape { what: String, got: usize, want: usize },
    #[error("{what}: {len} weights do not split into {out_features} output channels")]
    Rows { what: String, len: usize, out_features: usize },
    #[error("{what}: value {value} at index {index} is not finite")]
    NotFinite { what: String, index: usize, value: f32 },
}
