//! The token selector's integer end (`docs/integer-format.md` §5): the per-head 2-way keep
//! score in Q0.16, the gated fusion over heads, and the package token of the pruned ones.
//! With scores in Q0.16 the decision threshold 0.5 is exactly 32768, and
//! [`score_to_f32`] hands the backend-independent decision (`model::pruning`) a value
//! it compares exactly as the integer would.
#![forbid(unsafe_code)]

use super::fixed::{div_round, sat_i16};
use super::softmax::softmax_q16;

/// 0.5 in Q0.16: a token is kept iff its fused score is at least this.
pub const KEEP_THRESHOLD_Q16: u32 = 1 << 15;

/// The keep probability of one head: column 0 of the 2-way softmax of the Q·.16 logits
/// `(keep, drop)`, δ₂ = 1, in Q0.16 (`0..=65536`). Equal logits give exactly 32768, and
/// `keep ≥ drop` always gives at least 32768.
#[inline]
pub fn keep_score_q16(keep: i32, drop: i32) -> u32 {
    let mut p = [0u32; 2];
    softmax_q16(&[keep, drop], 0, &mut p);
    p[0]
}

/// The gated fusion `p = Σ_h a_h·t_h / Σ_h a_h` of per-head keep scores `t` (Q0.16) with
/// head weights `a` (the PLAN sigmoid's UQ0.16), as one exact integer division rounded
/// half up. When every `a_h` is 0 (PLAN returns 0 for x ≤ −5) it is the plain mean of
/// `t`, rounded the same way. The result is in Q0.16 and never exceeds `max t`.
pub fn fuse_heads_q16(a: &[u32], t: &[u32]) -> u32 {
    assert_eq!(a.len(), t.len(), "fuse_heads_q16: one weight per head");
    assert!(!t.is_empty(), "fuse_heads_q16: no heads");
    let num: i64 = a.iter().zip(t).map(|(&a, &t)| a as i64 * t as i64).sum();
    let den: i64 = a.iter().map(|&a| a as i64).sum();
    let p = if den > 0 { div_round(num, den) } else { div_round(t.iter().map(|&t| t as i64).sum(), t.len() as i64) };
    p as u32
}

/// The float twin of [`fuse_heads_q16`] on the same integers, in real units.
pub fn fuse_heads_f64(a: &[f64], t: &[f64]) -> f64 {
    let den: f64 = a.iter().sum();
    if den > 0.0 {
        a.iter().zip(t).map(|(a, t)| a * t).sum::<f64>() / den
    } else {
        t.iter().sum::<f64>() / t.len() as f64
    }
}

/// A Q0.16 score as the f32 the [`crate::backend::Backend`] contract asks for: exact
/// (17 significant bits at most).
#[inline]
pub fn score_to_f32(p_q16: u32) -> f32 {
    p_q16 as f32 / 65536.0
}

/// The package token `P = Σ_j w_j·x_j / Σ_j w_j` over the pruned `rows` of an int16 token
/// matrix (`dim` columns, residual scale unchanged), with Q0.16 weights `w_j` (the fused
/// keep scores): per channel one exact division rounded half up, saturated to int16. All
/// weights 0 gives the plain mean, rounded the same way. Sums are in i64: with
/// `w ≤ 2^16` and `|x| < 2^15`, up to 2^31 rows fit.
pub fn package_i16(data: &[i16], dim: usize, rows: &[usize], weights: &[u32], out: &mut [i16]) {
    assert_eq!(rows.len(), weights.len(), "package_i16: one weight per row");
    assert!(!rows.is_empty(), "package_i16: no pruned rows");
    assert_eq!(out.len(), dim, "package_i16: output width");
    let den: i64 = weights.iter().map(|&w| w as i64).sum();
    for (c, o) in out.iter_mut().enumerate() {
        let p = if den > 0 {
            let num: i64 = rows.iter().zip(weights).map(|(&r, &w)| w as i64 * data[r * dim + c] as i64).sum();
            div_round(num, den)
        } else {
            let sum: i64 = rows.iter().map(|&r| data[r * dim + c] as i64).sum();
            div_round(sum, rows.len() as i64)
        };
        *o = sat_i16(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::sigmoid::sigmoid_exact;
    use proptest::prelude::*;

    const Q: f64 = 65536.0;

    #[test]
    fn keep_score_error_and_threshold_band_over_logit_differences() {
        // Softmax is shift-invariant, so the score depends on d = keep − drop only: sweep
        // every d in ±20 (Q·.16) and a stride beyond.
        let ds = (-(20i32 << 16)..=(20 << 16)).chain((-(1i32 << 30)..(1 << 30)).step_by(65521));
        let (mut err, mut flip_band, mut step_back) = (0.0f64, 0i64, 0i64);
        let mut prev = 0u32;
        for d in ds {
            let (keep, drop) = if d >= 0 { (d, 0) } else { (0, d.abs()) };
            let p = keep_score_q16(keep, drop);
            // The exact 2-way softmax is σ(d).
            err = err.max((p as f64 / Q - sigmoid_exact(d as f64 / Q)).abs());
            if d >= 0 {
                assert!(p >= KEEP_THRESHOLD_Q16, "d = {d} ≥ 0 but p = {p}");
            } else if p >= KEEP_THRESHOLD_Q16 {
                flip_band = flip_band.max(-d as i64);
            }
            if d > -(20 << 16) && d <= 20 << 16 {
                step_back = step_back.max(prev as i64 - p as i64);
            }
            prev = p;
        }
        eprintln!(
            "keep score: |int − σ(d)| ≤ {err:.3e}; kept although d < 0 for d ≥ −{flip_band} LSB; \
             largest step back {step_back} LSB"
        );
        // i-exp is not monotone where z changes; the score inherits a few LSB of that.
        assert!(step_back <= 3, "{step_back}");
        assert_eq!(keep_score_q16(12345, 12345), KEEP_THRESHOLD_Q16);
        assert!(err <= 1.5e-3, "{err}");
        // Rounding alone keeps a token whose logit difference is a few 2^−16 below zero.
        assert!(flip_band <= 2, "{flip_band}");
    }

    #[test]
    fn fusion_falls_back_to_the_mean_when_all_gates_are_zero() {
        assert_eq!(fuse_heads_q16(&[0, 0, 0], &[1, 2, 4]), 2); // 7/3 = 2.33
        assert_eq!(fuse_heads_q16(&[0, 0], &[1, 2]), 2); // 1.5 rounds up
        assert_eq!(fuse_heads_q16(&[65536, 0], &[40000, 0]), 40000);
        assert_eq!(fuse_heads_f64(&[0.0, 0.0], &[0.25, 0.5]), 0.375);
    }

    #[test]
    fn package_is_the_weighted_mean_with_one_rounding() {
        // 4 rows, dim 2; pruned rows 1 and 3 with weights 0.25 and 0.75.
        let data = [9, 9, 1, -3, 7, 7, 2, 4];
        let mut out = [0i16; 2];
        package_i16(&data, 2, &[1, 3], &[16384, 49152], &mut out);
        assert_eq!(out, [2, 2]); // 1.75 → 2, 2.25 → 2
        package_i16(&data, 2, &[1, 3], &[0, 0], &mut out);
        assert_eq!(out, [2, 1]); // 1.5 → 2, 0.5 → 1
    }

    proptest! {
        #[test]
        fn fusion_is_the_exactly_rounded_weighted_mean(
            at in prop::collection::vec((0u32..=65536, 0u32..=65536), 1..13)
        ) {
            let (a, t): (Vec<u32>, Vec<u32>) = at.into_iter().unzip();
            let p = fuse_heads_q16(&a, &t);
            let af: Vec<f64> = a.iter().map(|&v| v as f64).collect();
            let tf: Vec<f64> = t.iter().map(|&v| v as f64).collect();
            let want = fuse_heads_f64(&af, &tf);
            prop_assert!((p as f64 - want).abs() <= 0.5 + 1e-9, "{p} vs {want}");
            prop_assert!(p <= *t.iter().max().unwrap());
        }

        #[test]
        fn package_matches_the_float_weighted_mean(
            rows in prop::collection::vec((prop::collection::vec(-32767i16..=32767, 3), 0u32..=65536), 1..40)
        ) {
            let dim = 3;
            let data: Vec<i16> = rows.iter().flat_map(|(x, _)| x.clone()).collect();
            let idx: Vec<usize> = (0..rows.len()).collect();
            let w: Vec<u32> = rows.iter().map(|(_, w)| *w).collect();
            let mut out = vec![0i16; dim];
            package_i16(&data, dim, &idx, &w, &mut out);
            for c in 0..dim {
                let col: Vec<f64> = rows.iter().map(|(x, _)| x[c] as f64).collect();
                let wf: Vec<f64> = w.iter().map(|&v| v as f64).collect();
                let want = fuse_heads_f64(&wf, &col);
                prop_assert!((out[c] as f64 - want).abs() <= 0.5 + 1e-9, "{} vs {want}", out[c]);
            }
        }
    }
}
