//! x86-64 kernels (int8 GEMMs, epilogues, attention), chosen at run time by CPU feature
//! detection.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod attention;
pub mod avx2;
pub mod avx512vnni;
pub mod epilogue;
pub mod fixed;
