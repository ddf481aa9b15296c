//! aarch64 int8 kernels (the GEMM, the GELU table lookup). ARMv8.0 only: the ZCU102's
//! Cortex-A53 has no `sdot`, so nothing here may use the dotprod extension (CI runs the
//! tests under `qemu-aarch64 -cpu cortex-a53`, where `sdot` faults).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod lut;
pub mod neon;
