//! AVX2 (and AVX-512) attention kernels of [`crate::kernels::attention`]: the fused logits → Q·.16 →
//! softmax → int8 row kernel and the uniform int8 requantisation of `P·V`. Bit for bit
//! the scalar golden code (`quant::fixed`, `quant::softmax`); why each step is exact is
//! noted next to it, and `kernels::attention::tests` compares the two on random and
//! extreme inputs.
#![deny(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use super::epilogue::pack_i8x64;
use super::fixed::{
    half, hmax_epi32, hsum_epu64, lane_mask, load_i32x8, load_partial_i32x8, pack_i8x8, store_i32x8, MulV,
};
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
    if super::epilogue::avx512_available() {
        // SAFETY: the CPU supports AVX-512 F/BW/DQ/VL (run-time detection); the masked
        // loads and stores stay inside each row (see the function).
        return unsafe { softmax_rows_i8_avx512(logits, n, to_q16, probs) };
    }
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

/// [`exp_neg_q16`] on sixteen lanes: the same operations lane for lane (so exact for the
/// same reasons; the f32 quotient is the same IEEE division).
#[target_feature(enable = "avx512f")]
#[inline]
fn exp_neg_q16_512(nd: __m512i) -> __m512i {
    let z = _mm512_cvttps_epi32(_mm512_div_ps(_mm512_cvtepi32_ps(nd), _mm512_set1_ps(LN2_Q16 as f32)));
    let t = _mm512_add_epi32(
        _mm512_sub_epi32(_mm512_mullo_epi32(z, _mm512_set1_epi32(LN2_Q16 as i32)), nd),
        _mm512_set1_epi32(EXP_B_Q16 as i32),
    );
    let at = _mm512_mullo_epi32(t, _mm512_set1_epi32(EXP_A_Q16 as i32));
    let round = _mm512_set1_epi64(1 << 31);
    let sq_even = _mm512_add_epi64(_mm512_mul_epu32(at, t), round);
    let sq_odd = _mm512_add_epi64(_mm512_mul_epu32(_mm512_srli_epi64::<32>(at), _mm512_srli_epi64::<32>(t)), round);
    // Bits 32..64 of each sum: the even lanes' moved down, the odd lanes' kept in place.
    let poly = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64::<32>(sq_even), sq_odd);
    let poly = _mm512_add_epi32(poly, _mm512_set1_epi32(EXP_C_Q16 as i32));
    let half = _mm512_srli_epi32::<1>(_mm512_sllv_epi32(_mm512_set1_epi32(1), z));
    _mm512_srlv_epi32(_mm512_add_epi32(poly, half), z)
}

/// Test access to [`exp_neg_q16_512`]: `exp_q16(−nd[i])` for `nd[i] ≤ 32·ln2`.
#[cfg(test)]
pub fn exp_neg_q16_x16(nd: [u32; 16]) -> [u32; 16] {
    assert!(super::epilogue::avx512_available());
    assert!(nd.iter().all(|&v| v as i64 <= EXP_ZERO_FROM));
    // SAFETY: the CPU supports AVX-512 F/BW/DQ/VL (asserted above with run-time detection);
    // the loads and stores are of 64-byte arrays.
    unsafe {
        let v = exp_neg_q16_512(_mm512_loadu_si512(nd.as_ptr().cast()));
        let mut out = [0u32; 16];
        _mm512_storeu_si512(out.as_mut_ptr().cast(), v);
        out
    }
}

/// The AVX2 row kernel whatever the CPU has beyond AVX2 (for the tests that compare every
/// variant this CPU can run with the generic code).
#[cfg(test)]
pub fn softmax_rows_i8_avx2_only(logits: &[i32], n: usize, to_q16: Multiplier, probs: &mut [i8]) {
    assert!(super::epilogue::available());
    assert!(n > 0 && logits.len() == probs.len() && logits.len().is_multiple_of(n));
    // SAFETY: the CPU supports AVX2 (asserted above); safe Rust otherwise.
    unsafe { softmax_rows_i8_avx2(logits, n, to_q16, probs) }
}

/// The AVX2 uniform requantisation whatever the CPU has beyond AVX2 (for the tests).
#[cfg(test)]
pub fn requant_uniform_i8_avx2_only(acc: &[i32], m: Multiplier, out: &mut [i8]) {
    assert!(super::epilogue::available());
    assert_eq!(acc.len(), out.len());
    // SAFETY: the CPU supports AVX2 (asserted above); safe Rust otherwise.
    unsafe { requant_uniform_i8_avx2(acc, m, out) }
}

/// [`softmax_rows_i8_avx2`] on sixteen lanes, with AVX-512's masked loads and stores for
/// the row's last partial vector and native 64-bit arithmetic shifts and min/max for the
/// Q·.16 conversion.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn softmax_rows_i8_avx512(logits: &[i32], n: usize, to_q16: Multiplier, probs: &mut [i8]) {
    assert!(to_q16.shift <= 62, "multiplier shift {} > 62", to_q16.shift);
    let (m, rnd, sh) =
        (_mm512_set1_epi32(to_q16.m), _mm512_set1_epi64(half(to_q16.shift)), _mm_cvtsi32_si128(to_q16.shift as i32));
    let (hi, lo) = (_mm512_set1_epi64(I32_MAX), _mm512_set1_epi64(-I32_MAX));
    // sat32(to_q16.apply(x)) on the i64 lanes of one half (x in the low dwords).
    let apply = |xh: __m512i| {
        let p = _mm512_add_epi64(_mm512_mul_epi32(xh, m), rnd);
        _mm512_min_epi64(_mm512_max_epi64(_mm512_sra_epi64(p, sh), lo), hi)
    };
    let vecs = n.div_ceil(16);
    let rem = n - (vecs - 1) * 16;
    // The last vector's lanes (all 16 when n is a multiple of 16).
    let tail: __mmask16 = if rem == 16 { 0xffff } else { (1u16 << rem) - 1 };
    let mut buf = vec![0i32; vecs * 16];
    let lim = _mm512_set1_epi32(EXP_ZERO_FROM as i32);
    let round = _mm512_set1_epi64(1 << 31);
    for (lr, pr) in logits.chunks_exact(n).zip(probs.chunks_exact_mut(n)) {
        // 1. q = sat32(to_q16.apply(logit)) and the row maximum (padding lanes excluded).
        let mut vmax = _mm512_set1_epi32(i32::MIN);
        for (c, dst) in buf.chunks_exact_mut(16).enumerate() {
            let k = if c + 1 == vecs { tail } else { 0xffff };
            // SAFETY: lanes 16c..16c + 16 of the row where `k` is set are in bounds (the
            // row holds n = 16(vecs − 1) + rem values); masked-off lanes are not read.
            let x = unsafe { _mm512_maskz_loadu_epi32(k, lr.as_ptr().add(c * 16).cast()) };
            let q =
                _mm512_mask_blend_epi32(0xAAAA, apply(x), _mm512_slli_epi64::<32>(apply(_mm512_srli_epi64::<32>(x))));
            vmax = _mm512_mask_max_epi32(vmax, k, vmax, q);
            // SAFETY: `dst` holds 16 int32 (64 bytes).
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), q) };
        }
        let max = _mm512_set1_epi32(_mm512_reduce_max_epi32(vmax));
        // 2. e = exp_q16(q − max) and Σe in u64, as in the AVX2 kernel.
        let mut sum = _mm512_setzero_si512();
        for (c, chunk) in buf.chunks_exact_mut(16).enumerate() {
            let k = if c + 1 == vecs { tail } else { 0xffff };
            // SAFETY: `chunk` holds 16 int32 (64 bytes).
            let q = unsafe { _mm512_loadu_si512(chunk.as_ptr().cast()) };
            let nd = _mm512_min_epu32(_mm512_sub_epi32(max, q), lim);
            let e = _mm512_maskz_mov_epi32(k, exp_neg_q16_512(nd));
            sum =
                _mm512_add_epi64(sum, _mm512_add_epi64(_mm512_maskz_mov_epi32(0x5555, e), _mm512_srli_epi64::<32>(e)));
            // SAFETY: as above.
            unsafe { _mm512_storeu_si512(chunk.as_mut_ptr().cast(), e) };
        }
        // Σe ≥ exp_q16(0) = 65554, so the factor is < 2^32 and e·factor ≤ 2^48 is exact.
        let factor = _mm512_set1_epi64(((1u64 << 48) / _mm512_reduce_add_epi64(sum) as u64) as i64);
        // 3. p = shift_round(e·factor, 32), then min(shift_round(p, 9), 127): four vectors
        // to one 64-byte store while whole groups of four remain, then vector by vector.
        let prob = |chunk: &[i32]| {
            // SAFETY: `chunk` holds 16 int32 (64 bytes).
            let e = unsafe { _mm512_loadu_si512(chunk.as_ptr().cast()) };
            let pe = _mm512_srli_epi64::<32>(_mm512_add_epi64(_mm512_mul_epu32(e, factor), round));
            let po = _mm512_add_epi64(_mm512_mul_epu32(_mm512_srli_epi64::<32>(e), factor), round);
            let p = _mm512_mask_blend_epi32(0xAAAA, pe, po);
            let q7 = _mm512_srli_epi32::<9>(_mm512_add_epi32(p, _mm512_set1_epi32(256)));
            _mm512_min_epi32(q7, _mm512_set1_epi32(127))
        };
        let groups = n / 64;
        for (g, dst) in pr.chunks_exact_mut(64).enumerate() {
            let b = &buf[64 * g..];
            let v = pack_i8x64(prob(&b[..16]), prob(&b[16..32]), prob(&b[32..48]), prob(&b[48..64]));
            // SAFETY: `dst` holds 64 bytes; storeu has no alignment requirement.
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), v) };
        }
        for (c, chunk) in buf.chunks_exact(16).enumerate().skip(4 * groups) {
            let k = if c + 1 == vecs { tail } else { 0xffff };
            let bytes = _mm512_cvtepi32_epi8(prob(chunk));
            // SAFETY: bytes 16c..16c + 16 of the row where `k` is set are in bounds (the row
            // holds n = 16(vecs − 1) + rem values); masked-off bytes are not written.
            unsafe { _mm_mask_storeu_epi8(pr.as_mut_ptr().add(c * 16).cast(), k, bytes) };
        }
    }
}

/// `out[i] = m.to_i8(acc[i])` (a uniform multiplier, saturated to ±127).
pub fn requant_uniform_i8(acc: &[i32], m: Multiplier, out: &mut [i8]) {
    assert!(super::epilogue::available());
    assert_eq!(acc.len(), out.len());
    if super::epilogue::avx512_available() {
        // SAFETY: the CPU supports AVX-512 F/BW/DQ/VL (run-time detection); the masked
        // loads and stores stay inside the slices (see the function).
        return unsafe { requant_uniform_i8_avx512(acc, m, out) };
    }
    // SAFETY: the CPU supports AVX2 (asserted above with run-time detection); the
    // function is safe Rust otherwise.
    unsafe { requant_uniform_i8_avx2(acc, m, out) }
}

/// [`requant_uniform_i8_avx2`] on sixteen lanes: `clamp(shift_round(x·m, shift), ±127)` on
/// the i64 lanes of each half with native 64-bit shifts and min/max, the last partial
/// vector through masked loads and stores.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn requant_uniform_i8_avx512(acc: &[i32], m: Multiplier, out: &mut [i8]) {
    assert!(m.shift <= 62, "multiplier shift {} > 62", m.shift);
    let (mv, rnd, sh) = (_mm512_set1_epi32(m.m), _mm512_set1_epi64(half(m.shift)), _mm_cvtsi32_si128(m.shift as i32));
    let (hi, lo) = (_mm512_set1_epi64(127), _mm512_set1_epi64(-127));
    let apply = |xh: __m512i| {
        let p = _mm512_add_epi64(_mm512_mul_epi32(xh, mv), rnd);
        _mm512_min_epi64(_mm512_max_epi64(_mm512_sra_epi64(p, sh), lo), hi)
    };
    for (src, dst) in acc.chunks(16).zip(out.chunks_mut(16)) {
        let k: __mmask16 = if src.len() == 16 { 0xffff } else { (1u16 << src.len()) - 1 };
        // SAFETY: the lanes set in `k` are the `src.len()` values of `src`; masked-off
        // lanes are not read.
        let x = unsafe { _mm512_maskz_loadu_epi32(k, src.as_ptr().cast()) };
        let y = _mm512_mask_blend_epi32(0xAAAA, apply(x), _mm512_slli_epi64::<32>(apply(_mm512_srli_epi64::<32>(x))));
        // SAFETY: the bytes set in `k` are the `dst.len()` (= `src.len()`) bytes of `dst`;
        // masked-off bytes are not written.
        unsafe { _mm_mask_storeu_epi8(dst.as_mut_ptr().cast(), k, _mm512_cvtepi32_epi8(y)) };
    }
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
