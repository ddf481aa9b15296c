//! i-exp and softmax in Q·.16 (`docs/integer-format.md` §4.2): ln 2 range reduction,
//! I-BERT's second-order polynomial, a shift by the reduction count, and normalisation
//! by one reciprocal multiply per row. Probabilities come out in UQ0.16 (`2^16` = 1.0).
#![forbid(unsafe_code)]

use super::fixed::{shift_round, ONE_Q16};

/// `ln 2` in Q·.16.
pub const LN2_Q16: i64 = 45426;
/// `0.3585` in Q·.16.
pub const EXP_A_Q16: i64 = 23495;
/// `1.353` in Q·.16.
pub const EXP_B_Q16: i64 = 88670;
/// `0.344` in Q·.16.
pub const EXP_C_Q16: i64 = 22544;

pub const EXP_A: f64 = 0.3585;
pub const EXP_B: f64 = 1.353;
pub const EXP_C: f64 = 0.344;

/// The largest value [`exp_q16`] returns (at `x = 0`): `poly(0)` ≈ 1.00027.
pub const EXP_MAX_Q16: u32 = 65554;

/// Reciprocal precision: `factor = ⌊2^48 / Σe⌋`.
const RECIP_BITS: u32 = 48;

/// `exp(x)` for `x ≤ 0` in Q·.16 (any i64 ≥ −2^62), result in Q·.16 (`0..=EXP_MAX_Q16`):
/// `z = ⌊−x / ln2⌋`, `p = x + z·ln2 ∈ (−ln2, 0]`,
/// `poly = round(0.3585·(p + 1.353)² / 2^32) + 0.344` (constants in Q·.16, the square
/// in Q·.32, the product in Q·.48, one rounding), `e = round(poly / 2^z)`; `z ≥ 32` gives 0.
#[inline]
pub fn exp_q16(x: i64) -> u32 {
    assert!(x <= 0, "exp_q16 takes x ≤ 0 (max-subtracted logits), got {x}");
    let z = (-x) / LN2_Q16;
    if z >= 32 {
        return 0;
    }
    let p = x + z * LN2_Q16;
    let t = p + EXP_B_Q16;
    let poly = shift_round(EXP_A_Q16 * t * t, 32) + EXP_C_Q16;
    shift_round(poly, z as u32) as u32
}

/// The float twin of [`exp_q16`]: the same reduction and polynomial with the real
/// constants, in f64 (`x ≤ 0`, real units).
pub fn exp_poly(x: f64) -> f64 {
    let ln2 = std::f64::consts::LN_2;
    let z = (-x / ln2).floor();
    let p = x + z * ln2;
    (EXP_A * (p + EXP_B) * (p + EXP_B) + EXP_C) * (-z).exp2()
}

/// Softmax of one row of Q·.16 logits into UQ0.16 probabilities scaled by
/// `δ₂ = 2^−delta2_shift` (0 = plain softmax; 1 = HeatViT's δ₂ = 0.5).
///
/// `e_i = exp_q16(x_i − max)` (the difference in i64), `S = Σ e_i`,
/// `factor = ⌊2^48 / S⌋`, `p_i = round(e_i · factor / 2^(32 + delta2_shift))`.
/// `S ≥ EXP_MAX_Q16` (the max element), so `e_i·factor ≤ 2^48` and `p_i ≤ 2^16 · δ₂`.
pub fn softmax_q16(logits: &[i32], delta2_shift: u32, out: &mut [u32]) {
    assert_eq!(logits.len(), out.len(), "softmax_q16: row lengths");
    assert!(delta2_shift <= 16, "softmax_q16: δ₂ = 2^-{delta2_shift} is below the UQ0.16 grid");
    let Some(&max) = logits.iter().max() else { return };
    let mut sum = 0u64;
    for (o, &x) in out.iter_mut().zip(logits) {
        *o = exp_q16(x as i64 - max as i64);
        sum += *o as u64;
    }
    let factor = (1u64 << RECIP_BITS) / sum;
    for o in out.iter_mut() {
        *o = shift_round((*o as u64 * factor) as i64, 32 + delta2_shift) as u32;
    }
}

/// The float twin of [`softmax_q16`]: [`exp_poly`] and an exact division, in f64, on the
/// same Q·.16 inputs. Probabilities as reals (not scaled by 2^16), times δ₂.
pub fn softmax_poly(logits: &[i32], delta2: f64) -> Vec<f64> {
    let max = logits.iter().copied().max().unwrap_or(0) as f64;
    let e: Vec<f64> = logits.iter().map(|&x| exp_poly((x as f64 - max) / ONE_Q16 as f64)).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| delta2 * v / s).collect()
}

/// The exact softmax (f64) of the same Q·.16 logits, times δ₂.
pub fn softmax_exact(logits: &[i32], delta2: f64) -> Vec<f64> {
    let max = logits.iter().copied().max().unwrap_or(0) as f64;
    let e: Vec<f64> = logits.iter().map(|&x| ((x as f64 - max) / ONE_Q16 as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| delta2 * v / s).collect()
}

/// Narrows a UQ0.16 attention probability to the int8 operand of the `P·V` GEMM:
/// Q0.7 (`round(p / 2^9)`, saturated to 127, so 1.0 becomes 127/128). Bit for bit this
/// is HeatViT's δ₂ = 0.5 stored in UQ0.8.
#[inline]
pub fn prob_to_i8(p_q16: u32) -> i8 {
    shift_round(p_q16 as i64, 9).min(127) as i8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::fixed::round_half_up;
    use proptest::prelude::*;

    const Q: f64 = 65536.0;

    #[test]
    fn constants_are_the_rounded_reals() {
        assert_eq!(LN2_Q16, round_half_up(std::f64::consts::LN_2 * Q));
        assert_eq!(EXP_A_Q16, round_half_up(EXP_A * Q));
        assert_eq!(EXP_B_Q16, round_half_up(EXP_B * Q));
        assert_eq!(EXP_C_Q16, round_half_up(EXP_C * Q));
        assert_eq!(exp_q16(0), EXP_MAX_Q16);
    }

    #[test]
    fn exp_error_over_the_whole_input_range() {
        // Every x in [−24, 0] (beyond, both the exact value and ours are below 2^−17 and
        // z ≥ 32 returns 0), then a stride through the rest of the i32 range.
        let xs = (-(24i64 << 16)..=0).chain((i32::MIN as i64..0).step_by(65521));
        let (mut e_twin, mut e_exact, mut e_poly, mut rel_poly) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        let mut max_step_back = 0i64;
        let mut prev = 0u32;
        for x in xs {
            let y = exp_q16(x);
            let xr = x as f64 / Q;
            let twin = exp_poly(xr);
            let exact = xr.exp();
            e_twin = e_twin.max((y as f64 / Q - twin).abs());
            e_exact = e_exact.max((y as f64 / Q - exact).abs());
            e_poly = e_poly.max((twin - exact).abs());
            rel_poly = rel_poly.max((twin - exact).abs() / exact.max(f64::MIN_POSITIVE));
            if x > -(24 << 16) {
                max_step_back = max_step_back.max(prev as i64 - y as i64);
            }
            prev = y;
        }
        eprintln!(
            "i-exp: |int − twin| ≤ {e_twin:.3e}, |int − exact| ≤ {e_exact:.3e}, |twin − exact| ≤ {e_poly:.3e} \
             (relative {rel_poly:.3e}); largest step back {max_step_back} LSB"
        );
        // Rounding (1 LSB) plus the Q·.16 constants (ln 2 moves the z boundaries).
        assert!(e_twin <= 3.0 / Q, "int vs twin {e_twin}");
        assert!(rel_poly <= 3.2e-3, "poly relative {rel_poly}");
        assert!(e_exact <= 2.2e-3, "int vs exact {e_exact}");
        // Not monotone where z changes (poly(−ln2) < poly(0)/2): a few LSB back.
        assert!(max_step_back <= 3, "step back {max_step_back}");
    }

    #[test]
    fn softmax_of_equal_logits_is_uniform_and_of_a_single_logit_is_one() {
        let mut out = [0u32; 4];
        softmax_q16(&[7, 7, 7, 7], 0, &mut out);
        assert_eq!(out, [16384; 4]);
        let mut one = [0u32; 1];
        softmax_q16(&[-123456], 0, &mut one);
        assert_eq!(one, [65536]);
        softmax_q16(&[-123456], 1, &mut one);
        assert_eq!(one, [32768]);
        softmax_q16(&[], 0, &mut []);
    }

    #[test]
    fn prob_to_i8_is_q0_7_saturating() {
        assert_eq!(prob_to_i8(65536), 127);
        assert_eq!(prob_to_i8(32768), 64);
        assert_eq!(prob_to_i8(255), 0);
        assert_eq!(prob_to_i8(256), 1);
        assert_eq!(prob_to_i8(0), 0);
    }

    /// Measured bounds over many random rows (deterministic xorshift), for the report.
    #[test]
    fn softmax_error_over_random_rows() {
        let mut s = 0x9e3779b97f4a7c15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let (mut e_twin, mut e_exact) = (0.0f64, 0.0f64);
        for _ in 0..3000 {
            let n = 1 + (next() % 197) as usize;
            let spread = 1 + (next() % (32 << 16)) as i64;
            let x: Vec<i32> = (0..n).map(|_| ((next() % (2 * spread as u64 + 1)) as i64 - spread) as i32).collect();
            let mut out = vec![0u32; n];
            softmax_q16(&x, 0, &mut out);
            for ((p, t), e) in out.iter().zip(softmax_poly(&x, 1.0)).zip(softmax_exact(&x, 1.0)) {
                e_twin = e_twin.max((*p as f64 / Q - t).abs());
                e_exact = e_exact.max((*p as f64 / Q - e).abs());
            }
        }
        eprintln!("softmax: |int − twin| ≤ {:.2} LSB, |int − exact| ≤ {e_exact:.3e}", e_twin * Q);
        assert!(e_twin <= 3.5 / Q && e_exact <= 1.2e-3, "{e_twin} {e_exact}");
    }

    fn row() -> impl Strategy<Value = Vec<i32>> {
        // Logits up to ±32 in Q·.16 (attention logits of DeiT stay within ±20).
        prop::collection::vec(-(32 << 16)..(32 << 16), 1..200)
    }

    proptest! {
        #[test]
        fn softmax_error_against_twin_and_exact(x in row(), half in any::<bool>()) {
            let (shift, d2) = if half { (1, 0.5) } else { (0, 1.0) };
            let mut out = vec![0u32; x.len()];
            softmax_q16(&x, shift, &mut out);
            let twin = softmax_poly(&x, d2);
            let exact = softmax_exact(&x, d2);
            let total: u64 = out.iter().map(|&v| v as u64).sum();
            for i in 0..x.len() {
                let p = out[i] as f64 / Q;
                prop_assert!((p - twin[i]).abs() <= 3.5 / Q, "twin {} vs {p}", twin[i]);
                prop_assert!((p - exact[i]).abs() <= 1.2e-3, "exact {} vs {p}", exact[i]);
            }
            // Each p_i is rounded once: the sum is off 2^16·δ₂ by at most n/2 LSB + the
            // reciprocal's floor.
            let want = (Q * d2) as i64;
            prop_assert!((total as i64 - want).abs() <= x.len() as i64 / 2 + 1);
        }

        #[test]
        fn softmax_is_invariant_to_shifting_all_logits(x in row(), c in -(1i32 << 20)..(1 << 20)) {
            let shifted: Vec<i32> = x.iter().map(|v| v + c).collect();
            let (mut a, mut b) = (vec![0u32; x.len()], vec![0u32; x.len()]);
            softmax_q16(&x, 0, &mut a);
            softmax_q16(&shifted, 0, &mut b);
            prop_assert_eq!(a, b);
        }
    }
}
