//! The GEMM epilogues of [`crate::kernels::epilogue`] with AVX2 (and AVX-512 where the VNNI
//! GEMM runs). Most are the same
//! generic integer code compiled with AVX2 enabled, which the compiler may vectorise here
//! (bit-exact by construction: identical integer operations). The AVX-512 int8
//! requantisation and residual add are written with intrinsics on 64-bit lanes, the GELU
//! table lookup with VBMI byte permutes; why each step is exact is noted next to it. All
//! are compared with the generic code in `epilogue::tests`.
#![deny(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use super::fixed::half;
use crate::kernels::epilogue::{
    quantize_i8_slice_generic, quantize_im2col_i8_generic, requant_i32_generic, requant_i8_generic, residual_generic,
};
use crate::quant::fixed::sat_i8;
use crate::quant::gelu::GeluTable;
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

/// Whether the AVX-512 compilations below are used: the CPU has AVX-512 F/BW/DQ/VL and the
/// VNNI GEMM is the selected kernel (`HEATVIT_GEMM_ISA=avx2` gives the AVX2 path whole).
pub fn avx512_available() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        available()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl")
            && crate::kernels::int8::selected_isa() == crate::kernels::int8::Isa::Avx512Vnni
    })
}

/// Whether the GELU table lookup runs on AVX-512 VBMI byte permutes: the AVX-512 kernels
/// are selected ([`avx512_available`]) and the CPU has VBMI (Ice Lake, Zen 4 and later).
pub fn vbmi_available() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| avx512_available() && is_x86_feature_detected!("avx512vbmi"))
}

/// `x[i] = gelu[x[i]]`, 64 bytes at a time: each byte, read as an index 0..255, picks its
/// entry from the table's first 128 bytes (`vpermi2b` on two registers, index bits 0..6)
/// and from its last 128, and its bit 7 chooses between the two. The row's last partial
/// vector is loaded and stored under a byte mask.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn gelu_table_i8_vbmi(gelu: &GeluTable, x: &mut [i8]) {
    // SAFETY: the table is 256 bytes; each load reads 64 of them (no alignment needed).
    let t: [__m512i; 4] = std::array::from_fn(|k| unsafe { _mm512_loadu_si512(gelu.0.as_ptr().add(64 * k).cast()) });
    let look = |v: __m512i| {
        let lo = _mm512_permutex2var_epi8(t[0], v, t[1]);
        let hi = _mm512_permutex2var_epi8(t[2], v, t[3]);
        _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), lo, hi)
    };
    let mut chunks = x.chunks_exact_mut(64);
    for c in &mut chunks {
        // SAFETY: `c` holds 64 bytes; loadu/storeu have no alignment requirement.
        unsafe { _mm512_storeu_si512(c.as_mut_ptr().cast(), look(_mm512_loadu_si512(c.as_ptr().cast()))) };
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let k: __mmask64 = (1u64 << rest.len()) - 1;
        // SAFETY: the mask covers exactly the `rest.len() < 64` bytes of `rest`; masked-off
        // bytes are neither read nor written.
        unsafe {
            let v = _mm512_maskz_loadu_epi8(k, rest.as_ptr().cast());
            _mm512_mask_storeu_epi8(rest.as_mut_ptr().cast(), k, look(v));
        }
    }
}

/// `round_half_up_to_i8` on sixteen f32 lanes: `⌊t⌋ + (t − ⌊t⌋ ≥ ½)` clamped to ±127, NaN
/// to 0. The same integer as `⌊t + ½⌋` (the f64 sum of the scalar code): `⌊t⌋` and, for
/// `|t| < 2^23`, `t − ⌊t⌋` are exact in f32; larger finite `t` are integers (fraction 0)
/// beyond the clamp either way; `±∞` give a NaN fraction (compares false) and clamp to ±127.
#[target_feature(enable = "avx512f")]
#[inline]
fn round_half_up_to_i8_512(t: __m512) -> __m512i {
    let fl = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(t);
    let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_sub_ps(t, fl), _mm512_set1_ps(0.5));
    let r = _mm512_mask_add_ps(fl, up, fl, _mm512_set1_ps(1.0));
    let r = _mm512_min_ps(_mm512_max_ps(r, _mm512_set1_ps(-127.0)), _mm512_set1_ps(127.0));
    _mm512_maskz_cvttps_epi32(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(t, t), r)
}

/// Test access to [`round_half_up_to_i8_512`] on sixteen values.
#[cfg(test)]
pub fn round_half_up_to_i8_x16(t: [f32; 16]) -> [i32; 16] {
    assert!(avx512_available());
    // SAFETY: the CPU supports AVX-512 F (asserted above); the loads and stores are of
    // 64-byte arrays.
    unsafe {
        let r = round_half_up_to_i8_512(_mm512_loadu_ps(t.as_ptr()));
        let mut out = [0i32; 16];
        _mm512_storeu_si512(out.as_mut_ptr().cast(), r);
        out
    }
}

/// `quantize_i8(x, scale)` on sixteen lanes at a time: the same IEEE f32 division, then
/// [`round_half_up_to_i8_512`]; the last partial vector through masked loads and stores.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn quantize_i8_avx512(x: &[f32], scale: f32, out: &mut [i8]) {
    assert_eq!(x.len(), out.len(), "quantize_i8_slice: sizes");
    let sv = _mm512_set1_ps(scale);
    for (src, dst) in x.chunks(16).zip(out.chunks_mut(16)) {
        let k: __mmask16 = if src.len() == 16 { 0xffff } else { (1u16 << src.len()) - 1 };
        // SAFETY: the lanes set in `k` are the `src.len()` floats of `src`; masked-off
        // lanes are not read.
        let v = unsafe { _mm512_maskz_loadu_ps(k, src.as_ptr()) };
        let bytes = _mm512_cvtepi32_epi8(round_half_up_to_i8_512(_mm512_div_ps(v, sv)));
        // SAFETY: the bytes set in `k` are the `dst.len()` (= `src.len()`) bytes of `dst`;
        // masked-off bytes are not written.
        unsafe { _mm_mask_storeu_epi8(dst.as_mut_ptr().cast(), k, bytes) };
    }
}

#[target_feature(enable = "avx2")]
unsafe fn quantize_i8_avx2(x: &[f32], scale: f32, out: &mut [i8]) {
    quantize_i8_slice_generic(x, scale, out)
}

pub fn quantize_i8_slice(x: &[f32], scale: f32, out: &mut [i8]) {
    assert!(available());
    if avx512_available() {
        // SAFETY: the CPU supports AVX-512 F/BW/DQ/VL (checked); the masked loads and
        // stores stay inside the slices (see the function).
        return unsafe { quantize_i8_avx512(x, scale, out) };
    }
    // SAFETY: the CPU supports AVX2 (checked above); safe Rust otherwise.
    unsafe { quantize_i8_avx2(x, scale, out) }
}

/// Four vectors of int32 lanes in `−128..=127` as 64 bytes, `a` first: the saturating
/// packs interleave the four per 128-bit lane, the dword permute puts them back in order.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
pub(super) fn pack_i8x64(a: __m512i, b: __m512i, c: __m512i, d: __m512i) -> __m512i {
    // After the packs, dword 4L + v holds elements 4L..4L + 4 of vector v (a, b, c, d).
    let bytes = _mm512_packs_epi16(_mm512_packs_epi32(a, b), _mm512_packs_epi32(c, d));
    _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), bytes)
}

/// [`crate::kernels::epilogue::quantize_im2col_i8`]. With AVX-512 and patches a multiple
/// of 16 wide (DeiT's 16): per patch and channel the `p·p` values are contiguous in the
/// matrix, so four 16-pixel runs are quantised ([`quantize_i8_avx512`]'s operations) and
/// stored as one 64-byte vector. Other widths: the generic code compiled with AVX2.
pub fn quantize_im2col_i8(image: &[f32], size: usize, p: usize, scale: f32, out: &mut [i8]) {
    assert!(available());
    assert!(p > 0 && size.is_multiple_of(p) && image.len() == 3 * size * size && out.len() == image.len());
    if avx512_available() && p.is_multiple_of(16) {
        // SAFETY: the CPU supports AVX-512 F/BW/DQ/VL (checked); every load and store is
        // bounds-checked slicing (see the function).
        return unsafe { quantize_im2col_i8_avx512(image, size, p, scale, out) };
    }
    // SAFETY: the CPU supports AVX2 (asserted above); safe Rust otherwise.
    unsafe { quantize_im2col_i8_avx2(image, size, p, scale, out) }
}

#[target_feature(enable = "avx2")]
unsafe fn quantize_im2col_i8_avx2(image: &[f32], size: usize, p: usize, scale: f32, out: &mut [i8]) {
    quantize_im2col_i8_generic(image, size, p, scale, out)
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn quantize_im2col_i8_avx512(image: &[f32], size: usize, p: usize, scale: f32, out: &mut [i8]) {
    let (g, per_run) = (size / p, p / 16);
    let sv = _mm512_set1_ps(scale);
    let quant = |src: usize| {
        let x = &image[src..src + 16];
        // SAFETY: `x` holds 16 f32 (64 bytes); loadu has no alignment requirement.
        round_half_up_to_i8_512(_mm512_div_ps(unsafe { _mm512_loadu_ps(x.as_ptr()) }, sv))
    };
    let k = 3 * p * p;
    // In image order (channel, patch row, four-chunk group, patch column), so that the
    // image is read as a few sequential streams; each group is one 64-byte store.
    for c in 0..3 {
        for gy in 0..g {
            for q in 0..p * p / 64 {
                // Chunk j of a patch's block: row j / per_run of the patch, columns from
                // 16·(j % per_run); the group's four chunks start at column gx·p.
                let src = |j: usize| c * size * size + (gy * p + j / per_run) * size + 16 * (j % per_run);
                let s4 = [src(4 * q), src(4 * q + 1), src(4 * q + 2), src(4 * q + 3)];
                for gx in 0..g {
                    let v = pack_i8x64(
                        quant(s4[0] + gx * p),
                        quant(s4[1] + gx * p),
                        quant(s4[2] + gx * p),
                        quant(s4[3] + gx * p),
                    );
                    let dst = &mut out[(gy * g + gx) * k + c * p * p + 64 * q..][..64];
                    // SAFETY: `dst` holds 64 bytes; storeu has no alignment requirement.
                    unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), v) };
                }
            }
        }
    }
}

/// `LayerNormI16::apply_generic` with intrinsics for rows whose width is a multiple of 16
/// (and `< 1290`, where `V` fits an i64); other widths run the generic code compiled with
/// AVX-512. The statistics are the same integers (Σx in i32, Σx² from exact i64 products);
/// step 3 is the same IEEE f32 operations in the same order (no fused multiply-add).
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn layer_norm_avx512(ln: &LayerNormI16, x: &[i16], stride: usize, out: &mut [i8], sums: &mut [i64]) {
    let d = ln.dim();
    if !d.is_multiple_of(16) || d >= 1290 {
        return ln.apply_generic(x, stride, out, sums);
    }
    crate::quant::norm::check_rows(x.len(), stride, d, out.len(), sums.len());
    let (g, b) = ln.folded_affine();
    let dv = _mm512_set1_epi32(d as i32);
    for (r, orow) in out.chunks_exact_mut(d).enumerate() {
        let row = &x[r * stride..r * stride + d];
        let (mut s, mut sq) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        for c in row.chunks_exact(16) {
            // SAFETY: `c` holds 16 int16 (32 bytes); loadu has no alignment requirement.
            let v = _mm512_cvtepi16_epi32(unsafe { _mm256_loadu_si256(c.as_ptr().cast()) });
            s = _mm512_add_epi32(s, v);
            let vo = _mm512_srli_epi64::<32>(v);
            sq = _mm512_add_epi64(sq, _mm512_add_epi64(_mm512_mul_epi32(v, v), _mm512_mul_epi32(vo, vo)));
        }
        let sum = _mm512_reduce_add_epi32(s);
        if let Some(s) = sums.get_mut(r) {
            *s = sum as i64;
        }
        let var = (d * d) as i64 * _mm512_reduce_add_epi64(sq) - d as i64 * (sum as i64 * sum as i64);
        let k = _mm512_set1_ps(ln.row_factor(var));
        let sv = _mm512_set1_epi32(sum);
        for (i, c) in row.chunks_exact(16).enumerate() {
            let o = i * 16;
            // SAFETY: `c` holds 16 int16 and `g`, `b` (d values each) 16 f32 from `o`.
            let (v, gv, bv) = unsafe {
                (
                    _mm512_cvtepi16_epi32(_mm256_loadu_si256(c.as_ptr().cast())),
                    _mm512_loadu_ps(g[o..o + 16].as_ptr()),
                    _mm512_loadu_ps(b[o..o + 16].as_ptr()),
                )
            };
            let cf = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_mullo_epi32(dv, v), sv));
            let t = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(cf, k), gv), bv);
            let bytes = _mm512_cvtepi32_epi8(round_half_up_to_i8_512(t));
            let dst = &mut orow[o..o + 16];
            // SAFETY: `dst` holds 16 bytes; storeu has no alignment requirement.
            unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), bytes) };
        }
    }
}

/// Per 16 channels: mantissas as int32 lanes; rounding terms and shifts per half (even
/// channels 0, 2, .., 14 and odd 1, 3, .., 15) as i64 lanes.
#[target_feature(enable = "avx512f")]
pub(super) fn channels16(requant: &[Multiplier]) -> Vec<[__m512i; 5]> {
    assert!(requant.iter().all(|m| m.shift <= 62), "requant multipliers: shift > 62");
    requant
        .chunks_exact(16)
        .map(|c| {
            let h = |k: usize| std::array::from_fn::<i64, 8, _>(|i| half(c[2 * i + k].shift));
            let sh = |k: usize| std::array::from_fn::<i64, 8, _>(|i| c[2 * i + k].shift as i64);
            let m: [i32; 16] = std::array::from_fn(|i| c[i].m);
            // SAFETY: each array is 64 bytes; loadu has no alignment requirement.
            unsafe {
                [
                    _mm512_loadu_si512(m.as_ptr().cast()),
                    _mm512_loadu_si512(h(0).as_ptr().cast()),
                    _mm512_loadu_si512(h(1).as_ptr().cast()),
                    _mm512_loadu_si512(sh(0).as_ptr().cast()),
                    _mm512_loadu_si512(sh(1).as_ptr().cast()),
                ]
            }
        })
        .collect()
}

/// The shape checks of a 16-channel epilogue and its per-channel constants: `None` for
/// no channels, else (channels per row, channels in whole groups of 16, [`channels16`]).
#[target_feature(enable = "avx512f")]
fn layout16(acc: usize, out: usize, requant: &[Multiplier], bias: usize) -> Option<(usize, usize, Vec<[__m512i; 5]>)> {
    assert_eq!(acc, out, "epilogue: accumulator and output sizes");
    assert_eq!(requant.len(), bias, "epilogue: one bias per multiplier");
    let n = requant.len();
    if n == 0 {
        return None;
    }
    assert!(acc.is_multiple_of(n), "epilogue: rows are not whole");
    let full = n / 16 * 16;
    Some((n, full, channels16(&requant[..full])))
}

/// `clamp(requant[o].apply(acc + bias), lo, hi)` for 16 channels `ch` ([`channels16`]),
/// per half on i64 lanes (native variable arithmetic shifts and 64-bit min/max), merged
/// back into int32 lanes. `lo`, `hi` are i64 lanes within the int32 range.
#[target_feature(enable = "avx512f")]
#[inline]
fn requant16(acc: &[i32], bias: &[i32], ch: &[__m512i; 5], lo: __m512i, hi: __m512i) -> __m512i {
    let (a, b) = (&acc[..16], &bias[..16]);
    // SAFETY: `a` and `b` hold 16 int32 (64 bytes); loadu has no alignment requirement.
    // acc + bias wraps as the scalar i32 addition does in release builds (callers keep it
    // in range: |acc| < 2^30, |bias| ≤ 2^30).
    let x = unsafe { _mm512_add_epi32(_mm512_loadu_si512(a.as_ptr().cast()), _mm512_loadu_si512(b.as_ptr().cast())) };
    requant16_lanes(x, ch, lo, hi)
}

/// [`requant16`] on `acc + bias` already in a register.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) fn requant16_lanes(x: __m512i, ch: &[__m512i; 5], lo: __m512i, hi: __m512i) -> __m512i {
    let q = |xh: __m512i, mh: __m512i, k: usize| {
        let p = _mm512_add_epi64(_mm512_mul_epi32(xh, mh), ch[1 + k]);
        _mm512_min_epi64(_mm512_max_epi64(_mm512_srav_epi64(p, ch[3 + k]), lo), hi)
    };
    let qe = q(x, ch[0], 0);
    let qo = q(_mm512_srli_epi64::<32>(x), _mm512_srli_epi64::<32>(ch[0]), 1);
    _mm512_mask_blend_epi32(0xAAAA, qe, _mm512_slli_epi64::<32>(qo))
}

/// The per-channel int8 requantisation, 16 channels at a time by [`requant16`].
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn requant_i8_avx512(acc: &[i32], bias: &[i32], requant: &[Multiplier], out: &mut [i8]) {
    let Some((n, full, chans)) = layout16(acc.len(), out.len(), requant, bias.len()) else {
        return;
    };
    let (lo, hi) = (_mm512_set1_epi64(-127), _mm512_set1_epi64(127));
    for (arow, orow) in acc.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        for (c, ch) in chans.iter().enumerate() {
            let o = c * 16;
            let bytes = _mm512_cvtepi32_epi8(requant16(&arow[o..], &bias[o..], ch, lo, hi));
            let dst = &mut orow[o..o + 16];
            // SAFETY: `dst` holds 16 bytes; storeu has no alignment requirement.
            unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), bytes) };
        }
        for o in full..n {
            orow[o] = sat_i8(requant[o].apply(arow[o] + bias[o]));
        }
    }
}

// The generic integer code compiled with AVX-512 enabled: 64-bit lanes get native
// variable shifts and min/max (vpsravq, vpminsq), so the compiler vectorises the
// requantisation arithmetic that AVX2 needs intrinsics for. Identical integer operations:
// bit-exact by construction, and compared with the generic code in `epilogue::tests` on
// CPUs that have it. (The int8 requantisation, the residual add, LayerNorm and the image
// quantisation have intrinsics of their own: compiled generic code was slower, e.g. the int8
// requantisation by 0.08 ms per DeiT-T image on Zen 5.)
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn requant_i32_avx512(acc: &[i32], bias: &[i32], requant: &[Multiplier], out: &mut [i32]) {
    requant_i32_generic(acc, bias, requant, out)
}

/// The residual's incoming rescale and its clamp, as vectors for [`residual16_lanes`].
pub(super) struct ResidualRescale {
    m: __m512i,
    half: __m512i,
    shift: __m128i,
    lo: __m512i,
    hi: __m512i,
}

impl ResidualRescale {
    #[target_feature(enable = "avx512f")]
    pub(super) fn new(rescale: Multiplier) -> ResidualRescale {
        assert!(rescale.shift <= 62, "requant multipliers: shift > 62");
        ResidualRescale {
            m: _mm512_set1_epi32(rescale.m),
            half: _mm512_set1_epi64(half(rescale.shift)),
            shift: _mm_cvtsi32_si128(rescale.shift as i32),
            lo: _mm512_set1_epi64(-(i16::MAX as i64)),
            hi: _mm512_set1_epi64(i16::MAX as i64),
        }
    }
}

/// The residual add on 16 channels `ch` ([`channels16`]): `v` = acc + bias, `r` = the
/// incoming residual values (int32 lanes); per half on i64 lanes, the branch
/// `requant[o].apply(v)` (per-channel shifts), the rescaled residual, their exact sum
/// (|·| < 2^62) saturated to ±(2^15 − 1); the 16 results as int16.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
pub(super) fn residual16_lanes(v: __m512i, r: __m512i, ch: &[__m512i; 5], c: &ResidualRescale) -> __m256i {
    let sum = |vh: __m512i, mh: __m512i, rh: __m512i, k: usize| {
        let branch = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mul_epi32(vh, mh), ch[1 + k]), ch[3 + k]);
        let res = _mm512_sra_epi64(_mm512_add_epi64(_mm512_mul_epi32(rh, c.m), c.half), c.shift);
        _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(branch, res), c.lo), c.hi)
    };
    let se = sum(v, ch[0], r, 0);
    let so = sum(_mm512_srli_epi64::<32>(v), _mm512_srli_epi64::<32>(ch[0]), _mm512_srli_epi64::<32>(r), 1);
    _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(0xAAAA, se, _mm512_slli_epi64::<32>(so)))
}

/// The residual add, 16 channels at a time by [`residual16_lanes`].
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn residual_avx512(acc: &[i32], bias: &[i32], requant: &[Multiplier], rescale: Multiplier, x: &mut [i16]) {
    let Some((n, full, chans)) = layout16(acc.len(), x.len(), requant, bias.len()) else {
        return;
    };
    let c = ResidualRescale::new(rescale);
    for (arow, xrow) in acc.chunks_exact(n).zip(x.chunks_exact_mut(n)) {
        for (k, ch) in chans.iter().enumerate() {
            let o = k * 16;
            let (a, b, xs) = (&arow[o..o + 16], &bias[o..o + 16], &mut xrow[o..o + 16]);
            // SAFETY: `a`, `b` hold 16 int32 and `xs` 16 int16; loadu/storeu have no
            // alignment requirement. acc + bias wraps as the scalar i32 addition does in
            // release builds (callers keep it in range).
            unsafe {
                let v = _mm512_add_epi32(_mm512_loadu_si512(a.as_ptr().cast()), _mm512_loadu_si512(b.as_ptr().cast()));
                let r = _mm512_cvtepi16_epi32(_mm256_loadu_si256(xs.as_ptr().cast()));
                _mm256_storeu_si256(xs.as_mut_ptr().cast(), residual16_lanes(v, r, ch, &c));
            }
        }
        for o in full..n {
            xrow[o] = crate::quant::fixed::residual_add(arow[o] + bias[o], requant[o], xrow[o], rescale);
        }
    }
}

#[target_feature(enable = "avx2")]
unsafe fn layer_norm_avx2(ln: &LayerNormI16, x: &[i16], stride: usize, out: &mut [i8], sums: &mut [i64]) {
    ln.apply_generic(x, stride, out, sums)
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
unsafe fn residual_avx2(acc: &[i32], bias: &[i32], requant: &[Multiplier], rescale: Multiplier, x: &mut [i16]) {
    residual_generic(acc, bias, requant, rescale, x)
}

pub fn requant_i8(acc: &[i32], bias: &[i32], requant: &[Multiplier], out: &mut [i8]) {
    assert!(available());
    if avx512_available() {
        // SAFETY: the CPU supports AVX-512 F/BW/DQ/VL (checked); safe Rust otherwise.
        return unsafe { requant_i8_avx512(acc, bias, requant, out) };
    }
    // SAFETY: the CPU supports AVX2 (checked above); the function is safe Rust otherwise.
    unsafe { requant_i8_avx2(acc, bias, requant, out) }
}

pub fn requant_i32(acc: &[i32], bias: &[i32], requant: &[Multiplier], out: &mut [i32]) {
    assert!(available());
    if avx512_available() {
        // SAFETY: the CPU supports AVX-512 F/BW/DQ/VL (checked); safe Rust otherwise.
        return unsafe { requant_i32_avx512(acc, bias, requant, out) };
    }
    // SAFETY: the CPU supports AVX2 (checked above); the function is safe Rust otherwise.
    unsafe { requant_i32_avx2(acc, bias, requant, out) }
}

/// `x[i] = gelu[x[i]]` with AVX-512 VBMI ([`vbmi_available`]).
pub fn gelu_table_i8(gelu: &GeluTable, x: &mut [i8]) {
    assert!(vbmi_available());
    // SAFETY: the CPU supports AVX-512 F/BW/VBMI (checked); the loads and stores are of
    // in-bounds bytes (see the function).
    unsafe { gelu_table_i8_vbmi(gelu, x) }
}

pub fn residual(acc: &[i32], bias: &[i32], requant: &[Multiplier], rescale: Multiplier, x: &mut [i16]) {
    assert!(available());
    if avx512_available() {
        // SAFETY: the CPU supports AVX-512 F/BW/DQ/VL (checked); safe Rust otherwise.
        return unsafe { residual_avx512(acc, bias, requant, rescale, x) };
    }
    // SAFETY: the CPU supports AVX2 (checked above); the function is safe Rust otherwise.
    unsafe { residual_avx2(acc, bias, requant, rescale, x) }
}

/// [`LayerNormI16::apply_rows`] (rows `stride` apart, row sums into `sums` unless empty).
pub fn layer_norm(ln: &LayerNormI16, x: &[i16], stride: usize, out: &mut [i8], sums: &mut [i64]) {
    assert!(available());
    if avx512_available() {
        // SAFETY: the CPU supports AVX-512 F/BW/DQ/VL (checked); safe Rust otherwise.
        return unsafe { layer_norm_avx512(ln, x, stride, out, sums) };
    }
    // SAFETY: the CPU supports AVX2 (checked above); the function is safe Rust otherwise.
    unsafe { layer_norm_avx2(ln, x, stride, out, sums) }
}
