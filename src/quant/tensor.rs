//! Quantised tensors: int8 weights with one scale per output channel, int32 biases at
//! the accumulator scale, per-tensor activation scales (`docs/integer-format.md` §1).
#![forbid(unsafe_code)]

use super::fixed::{round_half_up, sat_i8, BIAS_MAX, I16_MAX, I8_MAX};
use super::{Multiplier, QuantError};

/// The per-tensor scale that maps `max_abs` onto the largest int8 (`bits = 8`) or int16
/// (`bits = 16`) magnitude: `max_abs / (2^(bits−1) − 1)` in f32. A zero range gives 1.0
/// (any positive scale represents an all-zero tensor).
pub fn scale_for_max_abs(max_abs: f32, bits: u32) -> Result<f32, QuantError> {
    let qmax = match bits {
        8 => I8_MAX,
        16 => I16_MAX,
        _ => panic!("scale_for_max_abs: {bits}-bit tensors are not part of the format"),
    } as f32;
    if !max_abs.is_finite() || max_abs < 0.0 {
        return Err(QuantError::BadScale { what: "calibrated range".into(), value: max_abs });
    }
    Ok(if max_abs == 0.0 { 1.0 } else { max_abs / qmax })
}

pub(crate) fn check_scale(what: &str, s: f32) -> Result<(), QuantError> {
    if s.is_finite() && s > 0.0 {
        Ok(())
    } else {
        Err(QuantError::BadScale { what: what.to_string(), value: s })
    }
}

/// int8 weights in PyTorch's `[out, in]` layout with one symmetric scale per output
/// channel: `w[o, i] ≈ q[o, i] · scales[o]`, `q ∈ [−127, 127]`.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsI8 {
    pub q: Vec<i8>,
    pub scales: Vec<f32>,
    pub out_features: usize,
    pub in_features: usize,
}

impl WeightsI8 {
    /// `scales[o] = max_i |w[o, i]| / 127` (f32), `q = sat(round_half_up(w / scales[o]))`.
    pub fn quantize(w: &[f32], out_features: usize, what: &str) -> Result<WeightsI8, QuantError> {
        if out_features == 0 || !w.len().is_multiple_of(out_features) {
            return Err(QuantError::Rows { what: what.into(), len: w.len(), out_features });
        }
        if let Some((index, &value)) = w.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(QuantError::NotFinite { what: what.into(), index, value });
        }
        let k = w.len() / out_features;
        let mut q = Vec::with_capacity(w.len());
        let mut scales = Vec::with_capacity(out_features);
        for row in w.chunks_exact(k.max(1)).take(out_features) {
            let max_abs = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let s = scale_for_max_abs(max_abs, 8)?;
            scales.push(s);
            q.extend(row.iter().map(|&v| sat_i8(round_half_up((v / s) as f64))));
        }
        Ok(WeightsI8 { q, scales, out_features, in_features: k })
    }

    /// The float weights these integers stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        let k = self.in_features;
        self.q.iter().enumerate().map(|(i, &q)| q as f32 * self.scales[i / k.max(1)]).collect()
    }
}

/// `b[o] / (s_x · s_w[o])` rounded half up in f64 and saturated to `±2^30`
/// ([`BIAS_MAX`]), so that `acc + bias` stays inside int32.
pub fn quantize_bias(b: &[f32], s_x: f32, w_scales: &[f32]) -> Result<Vec<i32>, QuantError> {
    if b.len() != w_scales.len() {
        return Err(QuantError::Shape { what: "bias".into(), got: b.len(), want: w_scales.len() });
    }
    check_scale("input activation", s_x)?;
    Ok(b.iter()
        .zip(w_scales)
        .map(|(&b, &sw)| {
            let t = b as f64 / (s_x as f64 * sw as f64);
            round_half_up(t).clamp(-BIAS_MAX, BIAS_MAX) as i32
        })
        .collect())
}

/// A Linear layer in the integer format: int8 weights, int32 bias at the accumulator
/// scale, and one requantisation multiplier per output channel from the accumulator
/// scale `s_x · s_w[o]` to the output scale `s_y` (int8, int16 or Q·.16 alike).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantLinear {
    pub weights: WeightsI8,
    pub bias: Vec<i32>,
    pub s_x: f32,
    pub s_y: f32,
    pub requant: Vec<Multiplier>,
}

impl QuantLinear {
    pub fn new(
        w: &[f32],
        b: &[f32],
        out_features: usize,
        s_x: f32,
        s_y: f32,
        what: &str,
    ) -> Result<QuantLinear, QuantError> {
        check_scale(what, s_x)?;
        check_scale(what, s_y)?;
        let weights = WeightsI8::quantize(w, out_features, what)?;
        let bias = quantize_bias(b, s_x, &weights.scales)?;
        let requant =
            weights.scales.iter().map(|&sw| Multiplier::for_gemm(s_x, sw, s_y)).collect::<Result<Vec<_>, _>>()?;
        Ok(QuantLinear { weights, bias, s_x, s_y, requant })
    }

    /// Output channel `o` of an accumulator row before narrowing: `(acc + bias) · ratio`.
    #[inline]
    pub fn rescale(&self, o: usize, acc: i32) -> i64 {
        // |acc| < 2^30 and |bias| ≤ 2^30 (module invariants), so the sum fits int32.
        self.requant[o].apply(acc + self.bias[o])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_weights_use_the_full_symmetric_range() {
        let w = [0.5, -1.0, 0.25, /* row 1 */ 0.0, 0.0, 0.0, /* row 2 */ 3.0, 1.5, -0.75];
        let q = WeightsI8::quantize(&w, 3, "t").unwrap();
        assert_eq!(q.q, vec![64, -127, 32, 0, 0, 0, 127, 64, -32]);
        assert_eq!(q.scales[1], 1.0);
        for (d, w) in q.dequantize().iter().zip(w) {
            assert!((d - w).abs() <= 3.0 / 127.0 / 2.0 + 1e-7);
        }
        assert!(q.q.iter().all(|&v| v != -128));
        assert!(WeightsI8::quantize(&[1.0, f32::NAN], 1, "t").is_err());
        assert!(matches!(WeightsI8::quantize(&[1.0, 2.0, 3.0], 2, "t"), Err(QuantError::Rows { len: 3, .. })));
    }

    #[test]
    fn bias_is_at_the_accumulator_scale_and_saturates() {
        let b = quantize_bias(&[1.0, -1.0, 1e12], 0.5, &[0.01, 0.02, 0.01]).unwrap();
        assert_eq!(b, vec![200, -100, 1 << 30]);
    }

    #[test]
    fn quant_linear_multipliers_carry_the_scale_ratio() {
        let l = QuantLinear::new(&[1.0, -2.0, 0.5, 0.25], &[0.1, 0.0], 2, 0.05, 0.1, "fc").unwrap();
        for (o, m) in l.requant.iter().enumerate() {
            let want = 0.05 * l.weights.scales[o] as f64 / 0.1;
            assert!((m.ratio() - want).abs() <= want * 1e-9);
        }
        // x = [20, −10] (real 1.0, −0.5): y0 = 1·1 + −0.5·−2 + 0.1 = 2.1 → 21 at s_y 0.1.
        let acc0 = 20 * l.weights.q[0] as i32 + -10 * l.weights.q[1] as i32;
        assert_eq!(l.rescale(0, acc0), 21);
        assert!(QuantLinear::new(&[1.0], &[0.0], 1, 0.0, 1.0, "fc").is_err());
    }
}
