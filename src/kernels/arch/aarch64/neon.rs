//! int8 GEMM with NEON (ARMv8.0): `smull` + `smlal2` form, per int16 lane, the sum of two
//! int8×int8 products, then `sadalp` adds adjacent int16 pairs into int32 accumulators
//! (gemmlowp's "accumulate two within 16 bits"). Exact because weights lie in
//! [−127, 127]: `|a·w| ≤ 128·127 = 16256`, and two of them fit in int16 (32512). The
//! packing refuses −128 weights for this reason.
//!
//! Packed operands (made by `kernels::int8`), `kp` a multiple of [`KG`]:
//! - A: per block of [`MR`] rows, per 16-wide k chunk `q`, 64 bytes
//!   `[row 0..4][t 0..16] = a[block·4 + row][16q + t]` (zero rows pad `m`);
//! - W: the same with [`NR`] output channels: `[channel 0..4][t 0..16]`.
#![deny(unsafe_op_in_unsafe_fn)]

use std::arch::aarch64::*;

pub const MR: usize = 4;
pub const NR: usize = 4;
pub const KG: usize = 16;

pub fn available() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

/// `out[m×n] = A · Wᵀ` on packed operands.
pub fn gemm(m: usize, n: usize, kp: usize, a: &[i8], w: &[i8], out: &mut [i32]) {
    assert!(available(), "neon kernel called on a CPU without NEON");
    let (mp, np) = (m.div_ceil(MR) * MR, n.div_ceil(NR) * NR);
    assert!(kp.is_multiple_of(KG), "neon: kp {kp} is not a multiple of {KG}");
    assert_eq!(a.len(), mp * kp, "neon: packed A size");
    assert_eq!(w.len(), np * kp, "neon: packed W size");
    assert_eq!(out.len(), m * n, "neon: output size");
    if kp == 0 {
        out.fill(0);
        return;
    }
    // SAFETY: NEON is present (asserted above with run-time detection).
    unsafe { gemm_neon(m, n, kp, a, w, out) }
}

#[target_feature(enable = "neon")]
fn gemm_neon(m: usize, n: usize, kp: usize, a: &[i8], w: &[i8], out: &mut [i32]) {
    for (ib, ablock) in a.chunks_exact(kp * MR).enumerate() {
        let i0 = ib * MR;
        let rows = MR.min(m - i0);
        for (jb, wblock) in w.chunks_exact(kp * NR).enumerate() {
            let j0 = jb * NR;
            let cols = NR.min(n - j0);
            let tile = kernel(ablock, wblock, kp);
            for (r, trow) in tile.iter().enumerate().take(rows) {
                let o = (i0 + r) * n + j0;
                out[o..o + cols].copy_from_slice(&trow[..cols]);
            }
        }
    }
}

/// One 4×4 tile: `tile[r][c] = Σ_k a[r][k] · w[c][k]`.
#[target_feature(enable = "neon")]
fn kernel(a: &[i8], w: &[i8], kp: usize) -> [[i32; NR]; MR] {
    assert!(a.len() >= kp * MR && w.len() >= kp * NR);
    let mut acc = [[vdupq_n_s32(0); NR]; MR];
    for q in 0..kp / KG {
        let mut av = [vdupq_n_s8(0); MR];
        let mut wv = [vdupq_n_s8(0); NR];
        for (t, v) in av.iter_mut().enumerate() {
            // SAFETY: bytes q·64 + t·16 .. + 16 of `a` are in bounds (q < kp/16, t < 4,
            // a.len() ≥ 4·kp); vld1q_s8 has no alignment requirement.
            *v = unsafe { vld1q_s8(a.as_ptr().add(q * 64 + t * 16)) };
        }
        for (t, v) in wv.iter_mut().enumerate() {
            // SAFETY: as for `a`: w.len() ≥ 4·kp.
            *v = unsafe { vld1q_s8(w.as_ptr().add(q * 64 + t * 16)) };
        }
        for (accr, &ar) in acc.iter_mut().zip(&av) {
            for (acc, &wc) in accr.iter_mut().zip(&wv) {
                let p = vmull_s8(vget_low_s8(ar), vget_low_s8(wc));
                let p = vmlal_high_s8(p, ar, wc);
                *acc = vpadalq_s16(*acc, p);
            }
        }
    }
    let mut tile = [[0i32; NR]; MR];
    for (trow, accr) in tile.iter_mut().zip(&acc) {
        for (t, &acc) in trow.iter_mut().zip(accr) {
            *t = vaddvq_s32(acc);
        }
    }
    tile
}

/// MACs per iteration of [`peak`]: 8 independent `smull` + `smlal2` + `sadalp` chains
/// (16 MACs each).
pub const PEAK_MACS_PER_ITER: u64 = 8 * 16;

/// The instruction-throughput ceiling of this kernel's inner step on register operands
/// (all bytes 1). Returns the sum of all lanes (`PEAK_MACS_PER_ITER · iters`, wrapping)
/// so the work cannot be elided.
pub fn peak(iters: u64) -> i32 {
    assert!(available(), "neon peak called on a CPU without NEON");
    // SAFETY: NEON is present (asserted above with run-time detection).
    unsafe { peak_neon(iters) }
}

#[target_feature(enable = "neon")]
fn peak_neon(iters: u64) -> i32 {
    let mut ops = [vdupq_n_s8(std::hint::black_box(1)); 8];
    let mut acc = [vdupq_n_s32(0); 8];
    for _ in 0..iters {
        for (a, op) in acc.iter_mut().zip(ops.iter_mut()) {
            // SAFETY: an empty asm block that only claims to modify the register it is
            // given: each chain's operand is then opaque, so the compiler can neither hoist
            // the products out of the loop nor merge the chains' identical ones.
            unsafe { std::arch::asm!("/* {0:v} */", inout(vreg) * op, options(nomem, nostack, preserves_flags)) };
            let p = vmull_s8(vget_low_s8(*op), vget_low_s8(*op));
            let p = vmlal_high_s8(p, *op, *op);
            *a = vpadalq_s16(*a, p);
        }
    }
    acc.iter().fold(0i32, |t, &a| t.wrapping_add(vaddvq_s32(a)))
}
