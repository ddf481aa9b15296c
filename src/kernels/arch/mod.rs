//! Kernels that need `unsafe`: foreign or SIMD code behind safe, bounds-checked wrappers.
//! Everything outside this folder and `fabric/` is `#![forbid(unsafe_code)]`.
//!
//! The int8 GEMM micro-kernels read operands packed by [`crate::kernels::int8`]; their
//! layouts are described there and next to each kernel.

pub mod sgemm;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;
