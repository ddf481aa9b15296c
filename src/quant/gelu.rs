//! i-GELU: I-BERT's erf polynomial in Q·.16, with HeatViT's regularisation factor δ₁ as an
//! option (`docs/integer-format.md` §4.1).
//!
//! `L(u) = sign(u)·[a·(min(|u|, −b) + b)² + 1]`, `a = −0.2888`, `b = −1.769`;
//! `GELU(x) ≈ (x/2)·(1 + δ₁·L(x/√2))`, δ₁ = 1 for standard i-GELU (the default), 0.5 in
//! HeatViT's regularised variant (a different function: a model must be trained with it).
//!
//! The integer path evaluates it through [`GeluTable`]: a GEMM output is first
//! requantised to int8 (the layer's GELU-input scale), and the int8 → int8 GELU of that
//! layer is [`gelu_q16`] evaluated once per possible input byte (§4.1).
#![forbid(unsafe_code)]

use super::fixed::{sat_i32, shift_round, Multiplier, ONE_Q16};

/// `a = −0.2888` in Q·.16 (`round(a·2^16)`).
pub const A_Q16: i64 = -18927;
/// `−b = 1.769` in Q·.16.
pub const NEG_B_Q16: i64 = 115933;
/// `1/√2` in Q0.16.
pub const INV_SQRT2_Q16: i64 = 46341;

pub const A: f64 = -0.2888;
pub const B: f64 = -1.769;

/// The erf approximation's regularisation factor δ₁, in Q0.16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delta1(pub u32);

impl Delta1 {
    /// δ₁ = 1: standard i-GELU.
    pub const OFF: Delta1 = Delta1(1 << 16);
    /// δ₁ = 0.5: HeatViT's regularised GELU.
    pub const HEATVIT: Delta1 = Delta1(1 << 15);

    pub fn value(self) -> f64 {
        self.0 as f64 / ONE_Q16 as f64
    }
}

impl Default for Delta1 {
    fn default() -> Self {
        Delta1::OFF
    }
}

/// `L(u)` for `u` in Q·.16; the result is in Q0.16, within `[−2^16, 2^16]`.
/// `a·t²` is formed in Q·.48 (`t² < 2^34`, `|a·t²| < 2^49`) and rounded once to Q·.16.
#[inline]
pub fn erf_q16(u: i64) -> i64 {
    let m = u.abs().min(NEG_B_Q16);
    let t = m - NEG_B_Q16;
    let l = shift_round(A_Q16 * t * t, 32) + ONE_Q16;
    l * u.signum()
}

/// i-GELU of `x` (Q·.16, any int32) in Q·.16:
/// `u = round(x·(1/√2))`, `e = 2^16 + round(δ₁·L(u))` (skipped rounding when δ₁ = 1),
/// `y = round(x·e / 2^17)`. `|y| ≤ |x|`, so the result always fits int32.
#[inline]
pub fn gelu_q16(x: i32, delta1: Delta1) -> i32 {
    let x = x as i64;
    let u = shift_round(x * INV_SQRT2_Q16, 16);
    let l = erf_q16(u);
    let dl = if delta1 == Delta1::OFF { l } else { shift_round(delta1.0 as i64 * l, 16) };
    shift_round(x * (ONE_Q16 + dl), 17) as i32
}

/// Negative GELU inputs at or below `−GELU_ZERO_FROM` (real units) come out of
/// [`gelu_q16`] as exactly 0 (`u ≤ −1.769` saturates `L` at −1), so an int8 GELU input
/// scale needs to reach only this far below zero: calibration sets a GELU input's scale
/// from its largest *positive* value and `min(largest |negative|, GELU_ZERO_FROM)`
/// (`quant::calibrate`), and an input saturated at −127 still has the exact output 0.
pub const GELU_ZERO_FROM: f32 = 2.51;

/// The int8 → int8 GELU of one layer: `table[q as u8] = to_i8(gelu_q16(sat32(to_q16(q))))`
/// for every int8 input `q`, where `to_q16` takes the layer's GELU-input scale into Q·.16
/// and `to_i8` Q·.16 to its output scale (`docs/integer-format.md` §4.1). 256 bytes per
/// layer, built once at load; the same integers a polynomial unit evaluating
/// [`gelu_q16`] on each element would produce.
#[derive(Clone, PartialEq, Eq)]
pub struct GeluTable(pub [i8; 256]);

impl GeluTable {
    pub fn new(to_q16: Multiplier, to_i8: Multiplier) -> GeluTable {
        let mut t = [0i8; 256];
        for q in i8::MIN..=i8::MAX {
            t[q as u8 as usize] = to_i8.to_i8(gelu_q16(sat_i32(to_q16.apply(q as i32)), Delta1::OFF));
        }
        GeluTable(t)
    }

    #[inline]
    pub fn get(&self, q: i8) -> i8 {
        self.0[q as u8 as usize]
    }
}

impl std::fmt::Debug for GeluTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v: Vec<i8> = (-127..=127).map(|q| self.get(q)).collect();
        f.debug_tuple("GeluTable").field(&v).finish()
    }
}

/// The float twin: the same approximation with the real constants, in f64.
pub fn erf_poly(u: f64) -> f64 {
    let m = u.abs().min(-B);
    let l = A * (m + B) * (m + B) + 1.0;
    if u > 0.0 {
        l
    } else if u < 0.0 {
        -l
    } else {
        0.0
    }
}

/// The float twin of [`gelu_q16`]: `(x/2)·(1 + δ₁·L(x/√2))` in f64.
pub fn gelu_poly(x: f64, delta1: f64) -> f64 {
    0.5 * x * (1.0 + delta1 * erf_poly(x * std::f64::consts::FRAC_1_SQRT_2))
}

/// The exact function the approximation stands for: `(x/2)·(1 + δ₁·erf(x/√2))`
/// (δ₁ = 1 is PyTorch's exact GELU).
pub fn gelu_exact(x: f64, delta1: f64) -> f64 {
    0.5 * x * (1.0 + delta1 * libm::erf(x * std::f64::consts::FRAC_1_SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::fixed::round_half_up;

    const Q: f64 = 65536.0;

    /// Q·.16 inputs covering the whole int32 range: every value in ±8 (where the function
    /// bends), then a stride through the rest.
    fn sweep() -> impl Iterator<Item = i32> {
        (-(8 << 16)..=(8 << 16)).chain((i32::MIN..=i32::MAX).step_by(4099)).chain([i32::MIN, i32::MAX])
    }

    #[test]
    fn constants_are_the_rounded_reals() {
        assert_eq!(A_Q16, round_half_up(A * Q));
        assert_eq!(NEG_B_Q16, round_half_up(-B * Q));
        assert_eq!(INV_SQRT2_Q16, round_half_up(std::f64::consts::FRAC_1_SQRT_2 * Q));
        assert_eq!(Delta1::HEATVIT.value(), 0.5);
    }

    /// Returns (max |int − twin|, max |int − exact|, max |twin − exact|), all in real units.
    fn errors(delta1: Delta1) -> (f64, f64, f64) {
        let d = delta1.value();
        let (mut e_twin, mut e_exact, mut e_poly) = (0.0f64, 0.0f64, 0.0f64);
        for x in sweep() {
            let xr = x as f64 / Q;
            let y = gelu_q16(x, delta1) as f64 / Q;
            let twin = gelu_poly(xr, d);
            let exact = gelu_exact(xr, d);
            e_twin = e_twin.max((y - twin).abs());
            e_exact = e_exact.max((y - exact).abs());
            e_poly = e_poly.max((twin - exact).abs());
        }
        (e_twin, e_exact, e_poly)
    }

    #[test]
    fn standard_i_gelu_error_over_the_whole_int32_range() {
        let (e_twin, e_exact, e_poly) = errors(Delta1::OFF);
        eprintln!(
            "i-GELU δ₁=1: |int − twin| ≤ {e_twin:.3e}, |int − exact| ≤ {e_exact:.3e}, |twin − exact| ≤ {e_poly:.3e}"
        );
        // Fixed point adds at most 2 LSB (2^-16 = 1.5e-5) to the polynomial's error.
        assert!(e_twin <= 2.0 / Q, "int vs twin {e_twin}");
        assert!(e_poly <= 0.0185, "poly vs exact {e_poly}");
        assert!(e_exact <= e_poly + 2.0 / Q, "int vs exact {e_exact}");
    }

    #[test]
    fn heatvit_delta1_error_over_the_whole_int32_range() {
        let (e_twin, e_exact, e_poly) = errors(Delta1::HEATVIT);
        eprintln!(
            "i-GELU δ₁=0.5: |int − twin| ≤ {e_twin:.3e}, |int − exact| ≤ {e_exact:.3e}, |twin − exact| ≤ {e_poly:.3e}"
        );
        assert!(e_twin <= 2.0 / Q, "int vs twin {e_twin}");
        assert!(e_poly <= 0.0095, "poly vs exact {e_poly}");
        assert!(e_exact <= e_poly + 2.0 / Q, "int vs exact {e_exact}");
    }

    #[test]
    fn gelu_tails_are_exact_and_the_result_never_grows() {
        // Beyond |x| ≥ −b·√2 the polynomial saturates: x for positive, 0 for negative.
        for x in [3 << 16, 100 << 16, i32::MAX] {
            assert_eq!(gelu_q16(x, Delta1::OFF), x);
            assert_eq!(gelu_q16(-x, Delta1::OFF), 0);
        }
        assert_eq!(gelu_q16(i32::MIN, Delta1::OFF), 0);
        assert_eq!(gelu_q16(0, Delta1::OFF), 0);
        for x in sweep().step_by(7) {
            assert!(gelu_q16(x, Delta1::OFF).unsigned_abs() <= x.unsigned_abs());
            assert!(gelu_q16(x, Delta1::HEATVIT).unsigned_abs() <= x.unsigned_abs());
        }
    }

    #[test]
    fn inputs_below_minus_gelu_zero_from_give_zero() {
        let from = -(GELU_ZERO_FROM as f64 * Q).ceil() as i32;
        for x in (i32::MIN..=from).rev().step_by(997).chain([from, i32::MIN]) {
            assert_eq!(gelu_q16(x, Delta1::OFF), 0, "x = {x}");
        }
        // And the bound is not loose by much: just above −2.5 the output is not 0.
        assert_ne!(gelu_q16(-(2 << 16), Delta1::OFF), 0);
    }

    #[test]
    fn gelu_table_is_the_polynomial_at_every_int8_input() {
        // A GELU input scale of 0.05 and output scale of 0.04 (ratios into and out of Q·.16).
        let to_q16 = Multiplier::from_ratio(0.05 * Q).unwrap();
        let to_i8 = Multiplier::from_ratio(1.0 / (0.04 * Q)).unwrap();
        let t = GeluTable::new(to_q16, to_i8);
        let mut worst = 0.0f64;
        for q in -127i8..=127 {
            let x = sat_i32(to_q16.apply(q as i32));
            assert_eq!(t.get(q), to_i8.to_i8(gelu_q16(x, Delta1::OFF)));
            // Against the exact GELU of the dequantised input, saturated as the output is:
            // the polynomial's error plus half an output step.
            let exact = (gelu_exact(q as f64 * 0.05, 1.0) / 0.04).clamp(-127.0, 127.0);
            worst = worst.max((t.get(q) as f64 - exact).abs());
        }
        assert!(worst <= 0.5 + 0.0185 / 0.04 + 1e-6, "{worst}");
        assert_eq!(t.get(0), 0);
        assert_eq!(t.get(-128), t.get(-127));
        // Monotone where GELU is: increasing above its minimum near −0.75.
        for q in -14i8..127 {
            assert!(t.get(q) <= t.get(q + 1), "q = {q}");
        }
    }

    #[test]
    fn erf_poly_is_odd_bounded_and_saturates_at_minus_b() {
        let mut err = 0.0f64;
        for u in -(4 << 16)..=(4 << 16) {
            let l = erf_q16(u);
            assert_eq!(l, -erf_q16(-u));
            assert!(l.abs() <= ONE_Q16);
            err = err.max((l as f64 / Q - erf_poly(u as f64 / Q)).abs());
        }
        eprintln!("erf polynomial: |int − twin| ≤ {:.2} LSB", err * Q);
        // Half an LSB of rounding plus the Q·.16 constants' own rounding (a, b).
        assert!(err <= 1.25 / Q, "{}", err * Q);
        assert_eq!(erf_q16(NEG_B_Q16), ONE_Q16);
    }
}
