//! x86-64 int8 GEMM kernels, chosen at run time by CPU feature detection.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod avx2;
pub mod avx512vnni;
pub mod epilogue;
