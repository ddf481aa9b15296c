//! AVX2 attention kernels of [`crate::kernels::attention`]: the fused logits → Q·.16 →
//! softmax → int8 row kernel and the uniform int8 requantisation of `P·V`. Bit for bit
//! the scalar golden code (`quant::fixed`, `quant::softmax`); why each step is exact is
//! noted next to it, and `kernels::attention::tests` compares the two on random and
//! extreme inputs.
#![deny(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use super::fixed::{hmax_epi32, hsum_epu64, lane_mask, load_i32x8, load_partial_i32x8, pack_i8x8, store_i32x8, MulV};
use crate::quant::fixed::I32_MAX;
use crate::quant::softmax::{EXP_A_Q16, EXP_B_Q16, EXP_C_Q16, LN2_Q16};
use crate::quant::Multiplier;

/// `−x` from which [`crate::quant::softmax::exp_q16`] returns 0 (`z = ⌊−x / ln2⌋ ≥ 32`).
const EXP_ZERO_FROM: i64 = 32 * LN2_Q16;

/// `exp_q16(−nd)` on eight lanes, for `nd` (unsigned) in `0..=EXP_ZERO_FROM` (callers
/// clamp larger values to `EXP_ZERO_FROM`, which gives 0 as the scalar code does).
///
/// - `z = ⌊nd / 45426⌋` through one f32 division then truncation: `nd < 2^24` and 45426
///   are exact in f32; if `nd / 45426` is not an integer it is at least `1/45426` below the
///   next one, i.e. ≥ 6.8e-7 relative (`z ≤ 32`), far more than the 2^−24 of rounding, so
///   the rounded quotient never reaches the next integer (also checked exhaustively by
///   `kernels::attention::tests::exp_lanes_equal_exp_q16_on_every_input`).
/// - `t = p + b = z·ln2 − nd + b ∈ (43244, 88670]`, `a·t ≤ 23495·88670 < 2^31`; `(a·t)·t`
///   with `vpmuludq` is the exact u64 (`< 2^48`); `+2^31, >>32` is `shift_round(·, 32)`.
/// - `shift_round(poly, z)` as `(poly + (2^z >> 1)) >> z` with per-lane shifts; at
///   `z = 32` both shifts give 0, hence `e = 0`.
#[target_feature(enable = "avx2")]
#[inline]
fn exp_neg_q16(nd: __m256i) -> __m256i {
    let z = _mm256_cvttps_epi32(_mm256_div_ps(_mm256_cvtepi32_ps(nd), _mm256_set1_ps(LN2_Q16 as f32)));
    let t = _mm256_add_epi32(
        _mm256_sub_epi32(_mm256_mullo_epi32(z, _mm256_set1_epi32(LN2_Q16 as i32)), nd),
        _mm256_set1_epi32(EXP_B_Q16 as i32),
    );
    let at = _mm256_mullo_epi32(t, _mm256_set1_epi32(EXP_A_Q16 as i32));
    let round = _mm256_set1_epi64x(1 << 31);
    let sq_even = _mm256_add_epi64(_mm256_mul_epu32(at, t), round);
    let sq_odd = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64::<32>(at), _mm256_srli_epi64::<32>(t)), round);
    // Bits 32..64 of each sum: into the low dword for even lanes, kept in place for odd.
    let poly = _mm256_or_si256(
        _mm256_srli_epi64::<32>(sq_even),
        _mm256_and_si256(sq_odd, _mm256_set1_epi64x(0xffff_ffff_0000_0000u64 as i64)),
    );
    let poly = _mm256_add_epi32(poly, _mm256_set1_epi32(EXP_C_Q16 as i32));
    let half = _mm256_srli_epi32::<1>(_mm256_sllv_epi32(_mm256_set1_epi32(1), z));
    _mm256_srlv_epi32(_mm256_add_epi32(poly, half), z)
}

/// Test access to [`exp_neg_q16`]: `exp_q16(−nd[i])` for `nd[i] ≤ 32·ln2`.
#[cfg(test)]
pub fn exp_neg_q16_x8(nd: [u32; 8]) -> [u32; 8] {
    assert!(super::epilogue::available());
    assert!(nd.iter().all(|&v| v as i64 <= EXP_ZERO_FROM));
    // SAFETY: the CPU supports AVX2 (asserted above with run-time detection).
    unsafe { exp_neg_q16_x8_avx2(nd) }
}

#[cfg(test)]
#[target_feature(enable = "avx2")]
fn exp_neg_q16_x8_avx2(nd: [u32; 8]) -> [u32; 8] {
    let v = load_i32x8(&nd.map(|v| v as i32));
    let mut out = [0i32; 8];
    store_i32x8(&mut out, exp_neg_q16(v));
    out.map(|v| v as u32)
}

/// `probs[r, j] = prob_to_i8(softmax_q16(to_q16.to_i32(logits[r, ·]), 0)[j])` for rows
/// of `n`. The caller checks the shapes and AVX2 ([`super::epilogue::available`]).
pub fn softmax_rows_i8(logits: &[i32], n: usize, to_q16: Multiplier, probs: &mut [i8]) {
    assert!(super::epilogue::available());
    assert!(n > 0 && logits.len() == probs.len() && logits.len().is_multiple_of(n));
    // SAFETY: the CPU supports AVX2 (asserted above with run-time detection); the
    // function is safe Rust otherwise.
    unsafe { softmax_rows_i8_avx2(logits, n, to_q16, probs) }
}

#[target_feature(enable = "avx2")]
fn softmax_rows_i8_avx2(logits: &[i32], n: usize, to_q16: Multiplier, probs: &mut [i8]) {
    let mv = MulV::new(to_q16);
    let (full, rem) = (n / 8, n % 8);
    let tail = lane_mask(rem);
    // The row in Q·.16, then its exponentials, padded to whole vectors.
    let mut buf = vec![0i32; n.div_ceil(8) * 8];
    for (lr, pr) in logits.chunks_exact(n).zip(probs.chunks_exact_mut(n)) {
        // 1. q = sat32(to_q16.apply(logit)) and the row maximum (padding lanes excluded).
        let mut vmax = _mm256_set1_epi32(i32::MIN);
        for (src, dst) in lr.chunks_exact(8).zip(buf.chunks_exact_mut(8)) {
            let q = mv.apply_sat(load_i32x8(src), I32_MAX as i32);
            vmax = _mm256_max_epi32(vmax, q);
            store_i32x8(dst, q);
        }
        if rem > 0 {
            let q = mv.apply_sat(load_partial_i32x8(&lr[full * 8..]), I32_MAX as i32);
            vmax = _mm256_max_epi32(vmax, _mm256_blendv_epi8(_mm256_set1_epi32(i32::MIN), q, tail));
            store_i32x8(&mut buf[full * 8..], q);
        }
        let max = _mm256_set1_epi32(hmax_epi32(vmax));
        // 2. e = exp_q16(q − max) and Σe in u64. `max − q` lies in 0..=2^32 − 2 (both
        // are within ±(2^31 − 1)): exact as the u32 of a wrapping i32 subtraction, and
        // `min_epu32` clamps it to where exp_q16 is 0 anyway.
        let lim = _mm256_set1_epi32(EXP_ZERO_FROM as i32);
        let low = _mm256_set1_epi64x(0xffff_ffff);
        let mut sum = _mm256_setzero_si256();
        for (c, chunk) in buf.chunks_exact_mut(8).enumerate() {
            let nd = _mm256_min_epu32(_mm256_sub_epi32(max, load_i32x8(chunk)), lim);
            let mut e = exp_neg_q16(nd);
            if c == full {
                e = _mm256_and_si256(e, tail);
            }
            sum = _mm256_add_epi64(sum, _mm256_add_epi64(_mm256_and_si256(e, low), _mm256_srli_epi64::<32>(e)));
            store_i32x8(chunk, e);
        }
        // Σe ≥ exp_q16(0) = 65554 (the maximum's own term), so the factor is < 2^32 and
        // e·factor ≤ 2^48 is exact with vpmuludq.
        let factor = _mm256_set1_epi64x(((1u64 << 48) / hsum_epu64(sum)) as i64);
        // 3. p = shift_round(e·factor, 32) (UQ0.16), then prob_to_i8:
        // min(shift_round(p, 9), 127). p ≤ 2^16, so the i32 arithmetic cannot overflow.
        let round = _mm256_set1_epi64x(1 << 31);
        for (c, chunk) in buf.chunks_exact(8).enumerate() {
            let e = load_i32x8(chunk);
            let pe = _mm256_srli_epi64::<32>(_mm256_add_epi64(_mm256_mul_epu32(e, factor), round));
            let po = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64::<32>(e), factor), round);
            let p = _mm256_blend_epi32::<0b1010_1010>(pe, po);
            let q7 = _mm256_srli_epi32::<9>(_mm256_add_epi32(p, _mm256_set1_epi32(256)));
            let bytes = pack_i8x8(_mm256_min_epi32(q7, _mm256_set1_epi32(127)));
            let dst = &mut pr[c * 8..(c * 8 + 8).min(n)];
            for (d, &b) in dst.iter_mut().zip(&bytes) {
                *d = b as i8;
            }
        }
    }
}

/// `out[i] = m.to_i8(acc[i])` (a uniform multiplier, saturated to ±127).
pub fn requant_uniform_i8(acc: &[i32], m: Multiplier, out: &mut [i8]) {
    assert!(super::epilogue::available());
    assert_eq!(acc.len(), out.len());
    // SAFETY: the CPU supports AVX2 (asserted above with run-time detection); the
    // function is safe Rust otherwise.
    unsafe { requant_uniform_i8_avx2(acc, m, out) }
}

#[target_feature(enable = "avx2")]
fn requant_uniform_i8_avx2(acc: &[i32], m: Multiplier, out: &mut [i8]) {
    let mv = MulV::new(m);
    let full = acc.len() / 8 * 8;
    for (src, dst) in acc[..full].chunks_exact(8).zip(out[..full].chunks_exact_mut(8)) {
        let bytes = pack_i8x8(mv.apply_sat(load_i32x8(src), 127));
        for (d, &b) in dst.iter_mut().zip(&bytes) {
            *d = b as i8;
        }
    }
    if full < acc.len() {
        let bytes = pack_i8x8(mv.apply_sat(load_partial_i32x8(&acc[full..]), 127));
        for (d, &b) in out[full..].iter_mut().zip(&bytes) {
            *d = b as i8;
        }
    }
}
