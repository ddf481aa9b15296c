//! AVX2 forms of [`crate::quant::fixed`]: round-half-up shifts, saturation and dyadic
//! multipliers on 64-bit lanes, exact for the same inputs as the scalar functions.
//!
//! Eight int32 values are handled as two vectors of four i64 lanes: the *even* half (the
//! int32 lanes 0, 2, 4, 6 sign-extended by `vpmuldq`, which reads the low dword of each
//! 64-bit lane) and the *odd* half (lanes 1, 3, 5, 7 moved down by 32 bits). [`merge`]
//! puts the low dwords of both halves back into eight int32 lanes.
//!
//! The helpers are safe `#[target_feature]` functions: callable only from code that is
//! itself compiled with AVX2 (and so was reached after run-time detection).
#![deny(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use crate::quant::Multiplier;

/// `⌊v / 2^sh⌋` on signed i64 lanes (arithmetic shift; AVX2 has none for 64-bit lanes):
/// `((v ^ s) >> sh) ^ s` with `s` the sign mask, a logical shift; one count (`0..=63`) in
/// the low 64 bits of `sh`.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn sra_epi64(v: __m256i, sh: __m128i) -> __m256i {
    let s = _mm256_cmpgt_epi64(_mm256_setzero_si256(), v);
    _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(v, s), sh), s)
}

/// `v` clamped to `[lo, hi]` on i64 lanes.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn clamp_epi64(v: __m256i, lo: __m256i, hi: __m256i) -> __m256i {
    let v = _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi));
    _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v))
}

/// The odd int32 lanes of `v` moved into the low dwords of the 64-bit lanes.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn odd(v: __m256i) -> __m256i {
    _mm256_srli_epi64::<32>(v)
}

/// Eight int32 lanes from the low dwords of an even and an odd half.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn merge(even: __m256i, odd: __m256i) -> __m256i {
    _mm256_blend_epi32::<0b1010_1010>(even, _mm256_slli_epi64::<32>(odd))
}

/// `2^(sh−1)` for `sh ≥ 1`, 0 for `sh == 0`: the rounding term of `shift_round`.
pub(crate) fn half(sh: u32) -> i64 {
    if sh == 0 {
        0
    } else {
        1i64 << (sh - 1)
    }
}

/// One [`Multiplier`] broadcast for [`MulV::apply_sat`].
#[derive(Clone, Copy)]
pub(crate) struct MulV {
    m: __m256i,
    half: __m256i,
    sh: __m128i,
}

impl MulV {
    /// Panics if `shift > 62` (outside the range [`crate::quant::fixed::shift_round`] allows).
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(crate) fn new(m: Multiplier) -> MulV {
        assert!(m.shift <= 62, "multiplier shift {} > 62", m.shift);
        MulV {
            m: _mm256_set1_epi32(m.m),
            half: _mm256_set1_epi64x(half(m.shift)),
            sh: _mm_cvtsi32_si128(m.shift as i32),
        }
    }

    /// `clamp(shift_round(x·m, shift), −lim, lim)` on the i64 lanes of one half (the low
    /// dword of each lane is `x`). `|x·m| ≤ 2^62`, so the rounding add cannot overflow.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(crate) fn apply_half(self, x: __m256i, lim: __m256i, neg_lim: __m256i) -> __m256i {
        let p = _mm256_mul_epi32(x, self.m);
        clamp_epi64(sra_epi64(_mm256_add_epi64(p, self.half), self.sh), neg_lim, lim)
    }

    /// `clamp(m.apply(x), −lim, lim)` on eight int32 lanes (`lim ≤ i32::MAX`): the
    /// vector form of `sat_i32(m.apply(x))` (`lim = i32::MAX`) and, because nested
    /// clamps to symmetric ranges compose, of `sat_i8(m.apply(x))` (`lim = 127`).
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(crate) fn apply_sat(self, x: __m256i, lim: i32) -> __m256i {
        let (hi, lo) = (_mm256_set1_epi64x(lim as i64), _mm256_set1_epi64x(-(lim as i64)));
        merge(self.apply_half(x, hi, lo), self.apply_half(odd(x), hi, lo))
    }
}

/// Eight int32 lanes holding values in `−128..=127` as eight bytes (little-endian order:
/// byte `i` is lane `i`).
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn pack_i8x8(v: __m256i) -> [u8; 8] {
    // Byte 0 of each dword to bytes 0..4 of each 128-bit half, then the two halves' first
    // dwords together.
    let pick = _mm256_setr_epi8(
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    );
    let t = _mm256_shuffle_epi8(v, pick);
    let t = _mm256_permutevar8x32_epi32(t, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
    (_mm_cvtsi128_si64(_mm256_castsi256_si128(t)) as u64).to_le_bytes()
}

/// Eight int32 lanes from a slice of at least 8 (only the first 8 are read).
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn load_i32x8(s: &[i32]) -> __m256i {
    assert!(s.len() >= 8);
    // SAFETY: the first 8 elements (32 bytes) of `s` are in bounds (asserted above);
    // loadu has no alignment requirement.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// Stores eight int32 lanes into the first 8 elements of `d`.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn store_i32x8(d: &mut [i32], v: __m256i) {
    assert!(d.len() >= 8);
    // SAFETY: the first 8 elements (32 bytes) of `d` are in bounds (asserted above) and
    // `d` is borrowed mutably; storeu has no alignment requirement.
    unsafe { _mm256_storeu_si256(d.as_mut_ptr().cast(), v) }
}

/// The first `n ≤ 8` values of `s`, zero-padded to eight lanes.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn load_partial_i32x8(s: &[i32]) -> __m256i {
    let mut t = [0i32; 8];
    t[..s.len()].copy_from_slice(s);
    load_i32x8(&t)
}

/// All-ones in lanes `0..n`, zero in lanes `n..8`.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn lane_mask(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
}

/// The largest of eight signed int32 lanes.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn hmax_epi32(v: __m256i) -> i32 {
    let m = _mm_max_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let m = _mm_max_epi32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
    let m = _mm_max_epi32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
    _mm_cvtsi128_si32(m)
}

/// The sum of four u64 lanes (wrapping; callers keep it below 2^64).
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn hsum_epu64(v: __m256i) -> u64 {
    let s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    (_mm_cvtsi128_si64(s) as u64).wrapping_add(_mm_extract_epi64::<1>(s) as u64)
}
