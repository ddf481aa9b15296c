//! The GEMM epilogues of [`crate::kernels::epilogue`] compiled with AVX2 enabled: the same
//! generic integer code, which the compiler may vectorise here. Bit-exact by construction
//! (identical integer operations) and by test (`epilogue::tests`).
#![deny(unsafe_op_in_unsafe_fn)]

use crate::kernels::epilogue::{requant_gelu_i8_generic, requant_i32_generic, requant_i8_generic, residual_generic};
use crate::quant::norm::LayerNormI16;
use crate::quant::Multiplier;

/// Whether this CPU runs the AVX2 versions (detected once; `HEATVIT_GEMM_ISA=scalar` also
/// turns them off, so the whole integer path can be forced to plain code).
pub fn available() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        is_x86_feature_detected!("avx2") && crate::kernels::int8::selected_isa() != crate::kernels::int8::Isa::Scalar
    })
}

#[target_feature(enable = "avx2")]
unsafe fn layer_norm_avx2(ln: &LayerNormI16, x: &[i16], out: &mut [i8]) {
    ln.apply_generic(x, out)
}

#[target_feature(enable = "avx2")]
unsafe fn requant_i8_avx2(acc: &[i32], bias: &[i32], requant: &[Multiplier], out: &mut [i8]) {
    requant_i8_generic(acc, bias, requant, out)
}

#[target_feature(enable = "avx2")]
unsafe fn requant_i32_avx2(acc: &[i32], bias: &[i32], requant: &[Multiplier], out: &mut [i32]) {
    requant_i32_generic(acc, bias, requant, out)
}

#[target_feature(enable = "avx2")]
unsafe fn requant_gelu_i8_avx2(acc: &[i32], bias: &[i32], requant: &[Multiplier], to_i8: Multiplier, out: &mut [i8]) {
    requant_gelu_i8_generic(acc, bias, requant, to_i8, out)
}

#[target_feature(enable = "avx2")]
unsafe fn residual_avx2(acc: &[i32], bias: &[i32], requant: &[Multiplier], rescale: Multiplier, x: &mut [i16]) {
    residual_generic(acc, bias, requant, rescale, x)
}

pub fn requant_i8(acc: &[i32], bias: &[i32], requant: &[Multiplier], out: &mut [i8]) {
    assert!(available());
    // SAFETY: the CPU supports AVX2 (checked above); the function is safe Rust otherwise.
    unsafe { requant_i8_avx2(acc, bias, requant, out) }
}

pub fn requant_i32(acc: &[i32], bias: &[i32], requant: &[Multiplier], out: &mut [i32]) {
    assert!(available());
    // SAFETY: the CPU supports AVX2 (checked above); the function is safe Rust otherwise.
    unsafe { requant_i32_avx2(acc, bias, requant, out) }
}

pub fn requant_gelu_i8(acc: &[i32], bias: &[i32], requant: &[Multiplier], to_i8: Multiplier, out: &mut [i8]) {
    assert!(available());
    // SAFETY: the CPU supports AVX2 (checked above); the function is safe Rust otherwise.
    unsafe { requant_gelu_i8_avx2(acc, bias, requant, to_i8, out) }
}

pub fn residual(acc: &[i32], bias: &[i32], requant: &[Multiplier], rescale: Multiplier, x: &mut [i16]) {
    assert!(available());
    // SAFETY: the CPU supports AVX2 (checked above); the function is safe Rust otherwise.
    unsafe { residual_avx2(acc, bias, requant, rescale, x) }
}

pub fn layer_norm(ln: &LayerNormI16, x: &[i16], out: &mut [i8]) {
    assert!(available());
    // SAFETY: the CPU supports AVX2 (checked above); the function is safe Rust otherwise.
    unsafe { layer_norm_avx2(ln, x, out) }
}
