//! The one rounding rule, saturation, and requantisation by a dyadic multiplier.
//!
//! Every narrowing in the integer path goes through this file (`docs/integer-format.md`
//! §2): values are divided by a power of two with **round half up** (toward +∞), computed
//! as add-half-then-arithmetic-shift, and saturated to the *symmetric* range of the target
//! type (int8 `±127`, int16 `±32767`, int32 `±(2^31 − 1)`).
#![forbid(unsafe_code)]

use super::QuantError;

/// Fractional bits of the fixed-point format the nonlinearities use (Q·.16).
pub const FRAC_BITS: u32 = 16;
/// 1.0 in Q·.16.
pub const ONE_Q16: i64 = 1 << FRAC_BITS;

/// Largest magnitude of an int8 value after any narrowing (symmetric range).
pub const I8_MAX: i64 = 127;
/// Largest magnitude of an int16 value after any narrowing (symmetric range).
pub const I16_MAX: i64 = 32767;
/// Largest magnitude of an int32 value after any narrowing (symmetric range).
pub const I32_MAX: i64 = i32::MAX as i64;
/// Largest magnitude of a quantised bias: with `|Σ a·w| < 2^30` (k ≤ 65536, int8
/// operands) `acc + bias` then never overflows int32.
pub const BIAS_MAX: i64 = 1 << 30;

/// `x / 2^sh` rounded half up: `⌊(x + 2^(sh−1)) / 2^sh⌋` (arithmetic shift = floor).
/// `sh == 0` returns `x`. Callers keep `|x| ≤ 2^62` and `sh ≤ 62`, so nothing overflows.
#[inline]
pub fn shift_round(x: i64, sh: u32) -> i64 {
    debug_assert!(sh <= 62 && x.unsigned_abs() <= 1 << 62, "shift_round({x}, {sh})");
    if sh == 0 {
        x
    } else {
        (x + (1i64 << (sh - 1))) >> sh
    }
}

/// `num / den` rounded half up, for `den > 0`: `⌊(2·num + den) / (2·den)⌋`, exact.
/// Callers keep `|num|, den ≤ 2^61`.
#[inline]
pub fn div_round(num: i64, den: i64) -> i64 {
    debug_assert!(den > 0, "div_round by {den}");
    if den & (den - 1) == 0 {
        // den = 2^k: ⌊(2·num + 2^k) / 2^(k+1)⌋ = ⌊(num + 2^(k−1)) / 2^k⌋, a shift (the
        // selectors' head means divide by the head width, a power of two in every DeiT).
        return shift_round(num, den.trailing_zeros());
    }
    (2 * num + den).div_euclid(2 * den)
}

#[inline]
pub fn sat_i8(x: i64) -> i8 {
    x.clamp(-I8_MAX, I8_MAX) as i8
}

#[inline]
pub fn sat_i16(x: i64) -> i16 {
    x.clamp(-I16_MAX, I16_MAX) as i16
}

#[inline]
pub fn sat_i32(x: i64) -> i32 {
    x.clamp(-I32_MAX, I32_MAX) as i32
}

/// `t` rounded half up to an integer, exactly (no double rounding), saturated to
/// `±(2^62)`; NaN gives 0. Works on f64 so the same function serves f32 inputs (`t as
/// f64` is exact).
///
/// `t − ⌊t⌋` is exact in f64 (Sterbenz: for `|t| ≥ 1` the two operands are within a
/// factor 2; for `t ∈ [−1, 0)` the sum `t + 1` may round, but rounding is monotone and 0.5
/// is representable, so the comparison with 0.5 is still exact).
pub fn round_half_up(t: f64) -> i64 {
    if t.is_nan() {
        return 0;
    }
    let limit = (1u64 << 62) as f64;
    let t = t.clamp(-limit, limit);
    // ⌊t⌋ without a libm call (x86-64 v1 has no SSE4.1 `roundsd`): truncate, then step
    // down for negative non-integers. Exact: |t| ≤ 2^62, and where `i as f64` could round
    // (|i| > 2^53) t is already an integer.
    let i = t as i64;
    let fi = if (i as f64) > t { i - 1 } else { i };
    let f = fi as f64;
    if t - f >= 0.5 {
        fi + 1
    } else {
        fi
    }
}

/// `sat8(round_half_up(t))` for an f32 `t`, the hot case of LayerNorm's output: the same
/// result as the general function, cheaper. Exact: after clamping to ±256 (the result
/// saturates at ±127 anyway) `t + 0.5` is exact in f64 (an f32 has 24 significant bits),
/// and rounding half up is `⌊t + 0.5⌋`. NaN gives 0, as [`round_half_up`].
#[inline(always)]
pub fn round_half_up_to_i8(t: f32) -> i8 {
    let u = (t as f64).clamp(-256.0, 256.0) + 0.5;
    let i = u as i32; // truncation toward 0; NaN → 0
    let f = if (i as f64) > u { i - 1 } else { i };
    f.clamp(-(I8_MAX as i32), I8_MAX as i32) as i8
}

/// `sat(round_half_up(x / scale))`: float → integer quantisation (`x / scale` is one IEEE
/// f32 division, then the exact rounding above). The caller narrows with `sat_*`.
#[inline]
pub fn quantize(x: f32, scale: f32) -> i64 {
    round_half_up((x / scale) as f64)
}

#[inline]
pub fn quantize_i8(x: f32, scale: f32) -> i8 {
    // = sat_i8(quantize(x, scale)) (tested below), without the 64-bit general rounding.
    round_half_up_to_i8(x / scale)
}

#[inline]
pub fn quantize_i16(x: f32, scale: f32) -> i16 {
    sat_i16(quantize(x, scale))
}

/// `q · scale` in f32 (one rounding for |q| < 2^24, two above: the conversion then the
/// product). The inverse of [`quantize`] up to half a step.
#[inline]
pub fn dequantize(q: i64, scale: f32) -> f32 {
    q as f32 * scale
}

/// A real ratio `r ≈ m · 2^−shift` with a 31-bit mantissa `m ∈ [2^30, 2^31)` and
/// `shift ∈ [1, 62]` (I-BERT's `batch_frexp`). Applied as
/// `y = ⌊(x·m + 2^(shift−1)) / 2^shift⌋` in i64, exact for every int32 `x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Multiplier {
    pub m: i32,
    pub shift: u32,
}

impl Multiplier {
    /// Smallest ratio representable with `shift ≤ 62` (below it every int32 input maps to 0).
    pub const MIN_RATIO: f64 = 1.0 / (1u64 << 32) as f64;
    /// Ratios must stay below this (`shift ≥ 1`).
    pub const MAX_RATIO: f64 = (1u64 << 30) as f64;

    /// Decomposes `ratio` deterministically: write the f64 as `mant · 2^e` with a 53-bit
    /// integer mantissa, round the mantissa half up to 31 bits (`m = ⌊(mant + 2^21) / 2^22⌋`,
    /// renormalising `m = 2^31` to `2^30` with `e + 1`), and `shift = −(e + 22)`. Pure
    /// integer work on the IEEE bits: the same `(m, shift)` on every machine.
    pub fn from_ratio(ratio: f64) -> Result<Multiplier, QuantError> {
        let out_of_range = || QuantError::RatioOutOfRange { ratio, min: Self::MIN_RATIO, max: Self::MAX_RATIO };
        if !ratio.is_finite() || ratio <= 0.0 {
            return Err(out_of_range());
        }
        let bits = ratio.to_bits();
        let exp_field = ((bits >> 52) & 0x7ff) as i64;
        if exp_field == 0 {
            return Err(out_of_range()); // subnormal: far below MIN_RATIO
        }
        let mant = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
        let mut m = (mant + (1 << 21)) >> 22;
        let mut e = exp_field - 1075 + 22;
        if m == 1 << 31 {
            m = 1 << 30;
            e += 1;
        }
        let shift = -e;
        if !(1..=62).contains(&shift) {
            return Err(out_of_range());
        }
        Ok(Multiplier { m: m as i32, shift: shift as u32 })
    }

    /// The ratio of a requantisation from scale `s_in` to scale `s_out`, formed in f64
    /// (`s_in as f64 / s_out as f64`, one correctly rounded division).
    pub fn from_scales(s_in: f64, s_out: f32) -> Result<Multiplier, QuantError> {
        Self::from_ratio(s_in / s_out as f64)
    }

    /// The GEMM case: accumulator scale `s_x · s_w` (exact product in f64) to `s_out`.
    pub fn for_gemm(s_x: f32, s_w: f32, s_out: f32) -> Result<Multiplier, QuantError> {
        Self::from_scales(s_x as f64 * s_w as f64, s_out)
    }

    /// The ratio this multiplier represents.
    pub fn ratio(self) -> f64 {
        self.m as f64 / (1u64 << self.shift) as f64
    }

    /// `x · ratio` rounded half up, before narrowing. `|result| < 2^31 · ratio + 1`.
    #[inline]
    pub fn apply(self, x: i32) -> i64 {
        shift_round(x as i64 * self.m as i64, self.shift)
    }

    #[inline]
    pub fn to_i8(self, x: i32) -> i8 {
        sat_i8(self.apply(x))
    }

    #[inline]
    pub fn to_i16(self, x: i32) -> i16 {
        sat_i16(self.apply(x))
    }

    #[inline]
    pub fn to_i32(self, x: i32) -> i32 {
        sat_i32(self.apply(x))
    }
}

/// A residual add onto the int16 stream: the branch accumulator (bias already added)
/// and the incoming residual are each rescaled to the new residual scale and rounded,
/// summed in i64, and saturated once: `sat16(branch·r_b + x·r_x)`.
#[inline]
pub fn residual_add(branch_acc: i32, to_res: Multiplier, x: i16, rescale: Multiplier) -> i16 {
    sat_i16(to_res.apply(branch_acc) + rescale.apply(x as i32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_half_up_to_i8_equals_the_general_rounding() {
        let mut t = -300.0f32;
        while t <= 300.0 {
            for v in
                [t, t + 0.5, t - 0.5, f32::from_bits(t.to_bits() + 1), f32::from_bits(t.to_bits().saturating_sub(1))]
            {
                assert_eq!(round_half_up_to_i8(v), sat_i8(round_half_up(v as f64)), "{v}");
            }
            t += 0.03125 + 1.0 / 1024.0;
        }
        for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30, -0.5, 0.5, -1.5, 126.5, -127.5, -0.0] {
            assert_eq!(round_half_up_to_i8(v), sat_i8(round_half_up(v as f64)), "{v}");
        }
    }

    proptest! {
        #[test]
        fn quantize_i8_is_the_general_quantisation_saturated(x in any::<f32>(), scale in 1e-6f32..10.0) {
            prop_assert_eq!(quantize_i8(x, scale), sat_i8(quantize(x, scale)));
        }
    }

    #[test]
    fn shift_round_is_round_half_up() {
        // Halves go toward +∞ for both signs; everything else to the nearest.
        let cases = [(3, 1, 2), (-3, 1, -1), (5, 2, 1), (6, 2, 2), (-6, 2, -1), (-7, 2, -2), (7, 0, 7)];
        for (x, sh, want) in cases {
            assert_eq!(shift_round(x, sh), want, "shift_round({x}, {sh})");
        }
        for x in -4000i64..4000 {
            for sh in 1..6 {
                let exact = x as f64 / (1u64 << sh) as f64;
                assert_eq!(shift_round(x, sh), (exact + 0.5).floor() as i64, "x {x} sh {sh}");
            }
        }
    }

    #[test]
    fn div_round_matches_exact_rational_rounding() {
        for num in -300i64..300 {
            for den in (1i64..40).chain([64, 128, 256, 1 << 20]) {
                // Exact in f64 (small integers): round half up of num/den.
                let want = ((num as f64 / den as f64) + 0.5).floor() as i64;
                let got = div_round(num, den);
                // Guard against f64 hiding a tie: check with integers too.
                assert!(2 * num + den >= 2 * den * got && 2 * num + den < 2 * den * (got + 1));
                assert_eq!(got, want, "{num}/{den}");
            }
        }
    }

    #[test]
    fn div_round_by_powers_of_two_is_the_division() {
        let nums = [
            i64::MIN / 4,
            -(1 << 61),
            -12345678901,
            -65,
            -64,
            -33,
            -32,
            -31,
            -1,
            0,
            1,
            31,
            32,
            33,
            64,
            98765432109,
            1 << 61,
        ];
        for num in nums {
            for k in 0..40 {
                let den = 1i64 << k;
                assert_eq!(div_round(num, den), (2 * num + den).div_euclid(2 * den), "{num}/{den}");
            }
        }
    }

    #[test]
    fn saturation_is_symmetric() {
        assert_eq!(sat_i8(-128), -127);
        assert_eq!(sat_i8(1000), 127);
        assert_eq!(sat_i16(-40000), -32767);
        assert_eq!(sat_i32(i64::MIN), -i32::MAX);
        assert_eq!(sat_i8(-5), -5);
    }

    #[test]
    fn round_half_up_is_exact_at_ties_and_near_them() {
        let next_down = |x: f32| f32::from_bits(x.to_bits() - 1);
        assert_eq!(round_half_up(0.5), 1);
        assert_eq!(round_half_up(-0.5), 0);
        assert_eq!(round_half_up(-1.5), -1);
        assert_eq!(round_half_up(2.5), 3);
        // The largest f32 below 0.5: `(t + 0.5).floor()` in f32 would give 1.
        assert_eq!(round_half_up(next_down(0.5) as f64), 0);
        assert_eq!(round_half_up(-next_down(0.5) as f64), 0);
        assert_eq!(round_half_up(-(0.5f32 + f32::EPSILON / 2.0) as f64), -1);
        assert_eq!(round_half_up(f64::NAN), 0);
        assert_eq!(round_half_up(1e300), 1 << 62);
        assert_eq!(round_half_up(-1e-300), 0);
    }

    #[test]
    fn quantize_and_dequantize_round_trip_within_half_a_step() {
        let s = 0.037f32;
        for i in -5000..5000 {
            let x = i as f32 * 0.001;
            let q = quantize(x, s);
            assert!((dequantize(q, s) - x).abs() <= s * 0.5 + 1e-6, "x {x} q {q}");
        }
        assert_eq!(quantize_i8(100.0, s), 127);
        assert_eq!(quantize_i8(-100.0, s), -127);
    }

    #[test]
    fn multiplier_of_powers_of_two_is_exact() {
        let one = Multiplier::from_ratio(1.0).unwrap();
        assert_eq!((one.m, one.shift), (1 << 30, 30));
        assert_eq!(one.apply(12345), 12345);
        let half = Multiplier::from_ratio(0.5).unwrap();
        assert_eq!(half.apply(3), 2); // 1.5 → 2
        assert_eq!(half.apply(-3), -1); // −1.5 → −1
    }

    #[test]
    fn multiplier_range_is_enforced() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-12, 2f64.powi(30), 1e-310] {
            assert!(Multiplier::from_ratio(bad).is_err(), "{bad}");
        }
        assert!(Multiplier::from_ratio(Multiplier::MIN_RATIO).is_ok());
        assert!(Multiplier::from_ratio(Multiplier::MAX_RATIO * 0.999).is_ok());
        // A mantissa that rounds up to 2^31 renormalises.
        let r = 1.0 - 2f64.powi(-40);
        let m = Multiplier::from_ratio(r).unwrap();
        assert_eq!((m.m, m.shift), (1 << 30, 30));
    }

    #[test]
    fn residual_add_rounds_each_term_then_saturates_once() {
        let half = Multiplier::from_ratio(0.5).unwrap();
        let one = Multiplier::from_ratio(1.0).unwrap();
        assert_eq!(residual_add(3, half, -7, one), -5); // 1.5 → 2, plus −7
        assert_eq!(residual_add(i32::MAX, half, 32767, one), 32767);
        assert_eq!(residual_add(-60000, half, -32767, one), -32767);
    }

    proptest! {
        #[test]
        fn multiplier_ratio_is_within_half_an_ulp_of_31_bits(r in 1e-9f64..1e9) {
            let m = Multiplier::from_ratio(r).unwrap();
            prop_assert!((1 << 30..1i64 << 31).contains(&(m.m as i64)));
            prop_assert!((m.ratio() - r).abs() <= r * 2f64.powi(-31));
        }

        #[test]
        fn multiplier_apply_is_the_rounded_exact_product(r in 1e-6f64..1e3, x in any::<i32>()) {
            let m = Multiplier::from_ratio(r).unwrap();
            let y = m.apply(x);
            // Exact: y = ⌊(x·m + 2^(s−1)) / 2^s⌋, checked in i128 without the shift trick.
            let num = x as i128 * m.m as i128;
            let den = 1i128 << m.shift;
            prop_assert!(2 * num + den >= 2 * den * y as i128);
            prop_assert!(2 * num + den < 2 * den * (y as i128 + 1));
        }
    }
}
