//! int8 GEMM with AVX2: operands widened to int16, `vpmaddwd` (exact: two int8×int8
//! products per int32 lane, never saturating), `vpaddd` into int32 accumulators.
//!
//! Packed operands (made by `kernels::int8`):
//! - A: `[m][kp]` int16 (sign-extended, zero padding), `kp` a multiple of [`KG`];
//! - W: per block of [`NR`] output channels, per k-pair `q`, 32 bytes
//!   `[half 0..2][channel 0..8][t 0..2] = w[block·16 + half·8 + channel][2q + t]`
//!   (zero rows pad `n` to a multiple of 16).
#![deny(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

/// Output channels per packed block.
pub const NR: usize = 16;
/// Rows of A per micro-kernel call.
pub const MR: usize = 4;
/// k granularity of the packing.
pub const KG: usize = 2;

pub fn available() -> bool {
    is_x86_feature_detected!("avx2")
}

/// `out[m×n] = A · Wᵀ` on packed operands. Panics if the CPU lacks AVX2 or a slice does
/// not match the shapes (both are bugs of the safe caller in `kernels::int8`).
pub fn gemm(m: usize, n: usize, kp: usize, a: &[i16], w: &[i8], out: &mut [i32]) {
    assert!(available(), "avx2 kernel called on a CPU without AVX2");
    let np = n.div_ceil(NR) * NR;
    assert!(kp.is_multiple_of(KG), "avx2: kp {kp} is not a multiple of {KG}");
    assert_eq!(a.len(), m * kp, "avx2: packed A size");
    assert_eq!(w.len(), np * kp, "avx2: packed W size");
    assert_eq!(out.len(), m * n, "avx2: output size");
    // SAFETY: AVX2 is present (asserted above with run-time detection).
    unsafe { gemm_avx2(m, n, kp, a, w, out) }
}

#[target_feature(enable = "avx2")]
fn gemm_avx2(m: usize, n: usize, kp: usize, a: &[i16], w: &[i8], out: &mut [i32]) {
    for (jb, wblock) in w.chunks_exact((kp * NR).max(1)).enumerate().take(n.div_ceil(NR)) {
        let j0 = jb * NR;
        let cols = NR.min(n - j0);
        let mut i0 = 0;
        while i0 < m {
            let rows = MR.min(m - i0);
            let a_rows = &a[i0 * kp..(i0 + rows) * kp];
            let out_rows = &mut out[i0 * n..(i0 + rows) * n];
            match rows {
                4 => tile::<4>(a_rows, kp, wblock, out_rows, n, j0, cols),
                3 => tile::<3>(a_rows, kp, wblock, out_rows, n, j0, cols),
                2 => tile::<2>(a_rows, kp, wblock, out_rows, n, j0, cols),
                _ => tile::<1>(a_rows, kp, wblock, out_rows, n, j0, cols),
            }
            i0 += rows;
        }
    }
}

/// One `R × cols` output tile (columns `j0..j0 + cols` of the `R` rows of `out`, row
/// pitch `n`): full 16-column tiles are stored straight from the registers, a partial
/// last tile through a small buffer.
#[target_feature(enable = "avx2")]
#[inline]
fn tile<const R: usize>(a: &[i16], kp: usize, w: &[i8], out: &mut [i32], n: usize, j0: usize, cols: usize) {
    let acc = kernel::<R>(a, kp, w);
    for (r, acc) in acc.iter().enumerate() {
        let dst = &mut out[r * n + j0..r * n + j0 + cols];
        if cols == NR {
            // SAFETY: `dst` holds exactly 16 i32 = two 32-byte vectors; storeu is unaligned.
            unsafe {
                let p = dst.as_mut_ptr() as *mut __m256i;
                _mm256_storeu_si256(p, acc[0]);
                _mm256_storeu_si256(p.add(1), acc[1]);
            }
        } else {
            let mut t = [0i32; NR];
            // SAFETY: `t` holds 16 i32 = two 32-byte vectors; storeu is unaligned.
            unsafe {
                let p = t.as_mut_ptr() as *mut __m256i;
                _mm256_storeu_si256(p, acc[0]);
                _mm256_storeu_si256(p.add(1), acc[1]);
            }
            dst.copy_from_slice(&t[..cols]);
        }
    }
}

/// The accumulators of one `R × 16` tile: `Σ_k a[r][k] · w[c][k]` for `c` in `0..8`
/// (`[r][0]`) and `8..16` (`[r][1]`).
#[target_feature(enable = "avx2")]
#[inline]
fn kernel<const R: usize>(a: &[i16], kp: usize, w: &[i8]) -> [[__m256i; 2]; R] {
    assert!(R <= MR && a.len() >= R * kp && w.len() >= kp * NR);
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    for q in 0..kp / 2 {
        // SAFETY: bytes q·32 .. q·32 + 32 of `w` are in bounds: q < kp/2 and
        // w.len() ≥ kp·16 (asserted above); loadu has no alignment requirement.
        let (w0, w1) = unsafe {
            let p = w.as_ptr().add(q * 32) as *const __m128i;
            (_mm256_cvtepi8_epi16(_mm_loadu_si128(p)), _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(1))))
        };
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: elements r·kp + 2q and r·kp + 2q + 1 of `a` are in bounds (r < R,
            // 2q + 1 < kp, a.len() ≥ R·kp); read_unaligned has no alignment requirement.
            let pair = unsafe { (a.as_ptr().add(r * kp + 2 * q) as *const i32).read_unaligned() };
            let av = _mm256_set1_epi32(pair);
            acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(av, w0));
            acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(av, w1));
        }
    }
    acc
}

/// MACs per iteration of [`peak`]: 6 independent `vpmaddwd` (16 MACs each; 6 chains of
/// operand + accumulator fit the 16 ymm registers without spilling).
pub const PEAK_MACS_PER_ITER: u64 = 6 * 16;

/// The instruction-throughput ceiling of this kernel's inner step: `iters` rounds of 6
/// independent `vpmaddwd` + `vpaddd` chains on register operands (all 1s). Returns the sum
/// of all lanes (`PEAK_MACS_PER_ITER · iters`, wrapping) so the work cannot be elided.
pub fn peak(iters: u64) -> i32 {
    assert!(available(), "avx2 peak called on a CPU without AVX2");
    // SAFETY: AVX2 is present (asserted above with run-time detection).
    unsafe { peak_avx2(iters) }
}

#[target_feature(enable = "avx2")]
fn peak_avx2(iters: u64) -> i32 {
    let mut ops = [_mm256_set1_epi16(std::hint::black_box(1)); 6];
    let mut acc = [_mm256_setzero_si256(); 6];
    for _ in 0..iters {
        for (a, op) in acc.iter_mut().zip(ops.iter_mut()) {
            // SAFETY: an empty asm block that only claims to modify the register it is
            // given: each chain's operand is then opaque, so the compiler can neither hoist
            // `vpmaddwd` out of the loop nor merge the chains' identical products.
            unsafe { std::arch::asm!("/* {0} */", inout(ymm_reg) * op, options(nomem, nostack, preserves_flags)) };
            *a = _mm256_add_epi32(*a, _mm256_madd_epi16(*op, *op));
        }
    }
    let mut lanes = [0i32; 8];
    let mut total = 0i32;
    for a in acc {
        // SAFETY: `lanes` holds 8 i32 = one 32-byte vector; storeu is unaligned.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, a) };
        total = lanes.iter().fold(total, |t, &l| t.wrapping_add(l));
    }
    total
}
