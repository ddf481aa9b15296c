//! Kernels that need `unsafe`: foreign or SIMD code behind safe, bounds-checked wrappers.
//! Everything outside this folder and `fabric/` is `#![forbid(unsafe_code)]`.

pub mod sgemm;
