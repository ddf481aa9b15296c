//! LayerNorm of int16 residual tokens to int8 GEMM inputs, on the CPU
//! (`docs/integer-format.md` §3). HeatViT runs LayerNorm on the ZCU102's ARM cores; so do
//! we, and since the fabric simulator must reproduce it bit for bit, the float part is
//! small and fully specified:
//!
//! 1. exact integer statistics per row: `S = Σ x_i` (i64), `c_i = D·x_i − S` (i64, the
//!    centred value times D), `V = Σ c_i²` (i128);
//! 2. one f64 factor per row: `k = f32( s_in / (D · sqrt(V / D³ · s_in² + eps)) )`,
//!    evaluated exactly in that order;
//! 3. per element, f32: `t_i = (f32(c_i) · k) · g'_i + b'_i` with `g' = γ / s_out`,
//!    `b' = β / s_out` (f32 divisions at load), then `q_i = sat8(round_half_up(t_i))`.
//!
//! Every step is an IEEE operation with a single correctly rounded result (conversions,
//! `+ − × ÷ sqrt`); Rust never contracts `a·b + c` into a fused multiply-add and this code
//! calls no libm function, so x86-64 and aarch64 give the same bits.
#![forbid(unsafe_code)]

use super::fixed::round_half_up_to_i8;
use super::tensor::check_scale;
use super::QuantError;

/// A LayerNorm with its affine parameters folded into the int8 output scale.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNormI16 {
    /// `γ / s_out`.
    g: Vec<f32>,
    /// `β / s_out`.
    b: Vec<f32>,
    s_in: f32,
    eps: f32,
}

impl LayerNormI16 {
    /// `s_in`: the residual (int16) scale; `s_out`: the int8 output scale.
    pub fn new(gamma: &[f32], beta: &[f32], eps: f32, s_in: f32, s_out: f32) -> Result<LayerNormI16, QuantError> {
        if gamma.len() != beta.len() || gamma.is_empty() {
            return Err(QuantError::Shape { what: "LayerNorm beta".into(), got: beta.len(), want: gamma.len() });
        }
        check_scale("LayerNorm input", s_in)?;
        check_scale("LayerNorm output", s_out)?;
        Ok(LayerNormI16 {
            g: gamma.iter().map(|g| g / s_out).collect(),
            b: beta.iter().map(|b| b / s_out).collect(),
            s_in,
            eps,
        })
    }

    pub fn dim(&self) -> usize {
        self.g.len()
    }

    /// Normalises every row of `x` (`rows × D`) into `out`. On x86-64 with AVX2 the same
    /// code runs compiled for AVX2 (`kernels::arch::x86_64::epilogue`); every operation is
    /// the same IEEE or integer operation, so the result is identical.
    pub fn apply(&self, x: &[i16], out: &mut [i8]) {
        let d = self.dim();
        assert_eq!(x.len() % d, 0, "LayerNormI16: input is not rows × {d}");
        self.apply_rows(x, d, out, &mut [])
    }

    /// [`Self::apply`] on `out.len() / D` rows that start `stride` values apart in `x`
    /// (e.g. one head's slice of each token), also writing each row's `S = Σ x_i` into
    /// `sums` unless it is empty.
    pub fn apply_rows(&self, x: &[i16], stride: usize, out: &mut [i8], sums: &mut [i64]) {
        let d = self.dim();
        check_rows(x.len(), stride, d, out.len(), sums.len());
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::arch::x86_64::epilogue::available() {
            return crate::kernels::arch::x86_64::epilogue::layer_norm(self, x, stride, out, sums);
        }
        self.apply_generic(x, stride, out, sums)
    }

    #[inline(always)]
    pub(crate) fn apply_generic(&self, x: &[i16], stride: usize, out: &mut [i8], sums: &mut [i64]) {
        let d = self.dim();
        check_rows(x.len(), stride, d, out.len(), sums.len());
        let d3 = (d as f64) * (d as f64) * (d as f64);
        let s_in = self.s_in as f64;
        for (r, orow) in out.chunks_exact_mut(d).enumerate() {
            let row = &x[r * stride..r * stride + d];
            if d < 1290 {
                // The same integers in narrower types (so that they vectorise): |S| ≤
                // 1290·2^15 and |D·x − S| ≤ 2·1290·2^15 fit i32, and
                // V = Σ (D·x_i − S)² = D²·Σ x_i² − D·S² (expand the square; Σ x_i = S)
                // with D²·Σ x_i² ≤ D³·2^30 < 2^63.
                let sum: i32 = row.iter().map(|&v| v as i32).sum();
                if let Some(s) = sums.get_mut(r) {
                    *s = sum as i64;
                }
                let sq: i64 = row.iter().map(|&v| (v as i32 * v as i32) as i64).sum();
                let var = (d * d) as i64 * sq - d as i64 * (sum as i64 * sum as i64);
                let k = self.factor(var as f64, d3, s_in, d);
                let di = d as i32;
                for (((o, &v), g), b) in orow.iter_mut().zip(row).zip(&self.g).zip(&self.b) {
                    let c = (di * v as i32 - sum) as f32;
                    *o = round_half_up_to_i8((c * k) * g + b);
                }
                continue;
            }
            let sum: i64 = row.iter().map(|&v| v as i64).sum();
            if let Some(s) = sums.get_mut(r) {
                *s = sum;
            }
            // |c| ≤ 2·d·2^15: Σ c² needs i128 for rows this wide.
            let var: i128 = row
                .iter()
                .map(|&v| {
                    let c = d as i64 * v as i64 - sum;
                    c as i128 * c as i128
                })
                .sum();
            let k = self.factor(var as f64, d3, s_in, d);
            for (((o, &v), g), b) in orow.iter_mut().zip(row).zip(&self.g).zip(&self.b) {
                let c = (d as i64 * v as i64 - sum) as f32;
                *o = round_half_up_to_i8((c * k) * g + b);
            }
        }
    }

    /// `(g', b')`: the affine parameters folded into the output scale (for the SIMD
    /// kernels, which compute step 3 themselves).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn folded_affine(&self) -> (&[f32], &[f32]) {
        (&self.g, &self.b)
    }

    /// Step 2 for a row of this LayerNorm's width whose exact `V` fits an i64 (`D < 1290`).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn row_factor(&self, var: i64) -> f32 {
        let d = self.dim();
        self.factor(var as f64, (d as f64) * (d as f64) * (d as f64), self.s_in as f64, d)
    }

    /// Step 2: `k = f32(s_in / (D · sqrt(V / D³ · s_in² + eps)))` from the exact `V`.
    #[inline(always)]
    fn factor(&self, var: f64, d3: f64, s_in: f64, d: usize) -> f32 {
        let var_real = (var / d3) * (s_in * s_in);
        (s_in / (d as f64 * (var_real + self.eps as f64).sqrt())) as f32
    }
}

/// The shape contract of [`LayerNormI16::apply_rows`]: whole rows of `d` out, each row's
/// `d` inputs inside `x` at a pitch of at least `d`, and no sums or one per row.
#[track_caller]
pub(crate) fn check_rows(x: usize, stride: usize, d: usize, out: usize, sums: usize) {
    assert_eq!(out % d, 0, "LayerNormI16: output is not rows × {d}");
    let rows = out / d;
    assert!(stride >= d, "LayerNormI16: row pitch {stride} < {d}");
    assert!(
        rows == 0 || x >= (rows - 1) * stride + d,
        "LayerNormI16: {rows} rows at pitch {stride} need more than {x} inputs"
    );
    assert!(sums == 0 || sums == rows, "LayerNormI16: {sums} sums for {rows} rows");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels;
    use crate::quant::fixed::dequantize;
    use proptest::prelude::*;

    /// A deterministic pseudo-random int16 token matrix (xorshift).
    fn tokens(rows: usize, d: usize, seed: u64, amp: i64) -> Vec<i16> {
        let mut s = seed | 1;
        (0..rows * d)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s % (2 * amp as u64 + 1)) as i64 - amp) as i16
            })
            .collect()
    }

    proptest! {
        #[test]
        fn matches_float_layer_norm_within_one_step(
            seed in any::<u64>(), amp in 1i64..=32767, d in 2usize..80,
            s_in in 1e-4f32..1.0, s_out in 0.01f32..0.2,
        ) {
            let x = tokens(3, d, seed, amp);
            let gamma: Vec<f32> = (0..d).map(|i| 0.5 + (i % 7) as f32 * 0.25).collect();
            let beta: Vec<f32> = (0..d).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
            let ln = LayerNormI16::new(&gamma, &beta, 1e-6, s_in, s_out).unwrap();
            let mut q = vec![0i8; x.len()];
            ln.apply(&x, &mut q);
            let mut f: Vec<f32> = x.iter().map(|&v| dequantize(v as i64, s_in)).collect();
            kernels::layer_norm(&mut f, &gamma, &beta, 1e-6);
            for (i, (&q, &f)) in q.iter().zip(&f).enumerate() {
                let want = (f / s_out).clamp(-127.0, 127.0);
                // One output step of rounding plus the float reference's own f32 error.
                prop_assert!((q as f32 - want).abs() <= 0.5 + 2e-3 * want.abs().max(1.0), "{i}: {q} vs {want}");
            }
        }
    }

    /// The specification's formula in the widest types: `c_i = D·x_i − S` (i64),
    /// `V = Σ c_i²` (i128). The kernel computes the same integers in narrower types.
    fn reference_i128(ln: &LayerNormI16, x: &[i16]) -> Vec<i8> {
        let d = ln.dim();
        let d3 = (d as f64).powi(3);
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks_exact(d) {
            let sum: i64 = row.iter().map(|&v| v as i64).sum();
            let var: i128 = row.iter().map(|&v| (d as i64 * v as i64 - sum) as i128).map(|c| c * c).sum();
            let k = ln.factor(var as f64, d3, ln.s_in as f64, d);
            for ((&v, g), b) in row.iter().zip(&ln.g).zip(&ln.b) {
                out.push(round_half_up_to_i8(((d as i64 * v as i64 - sum) as f32 * k) * g + b));
            }
        }
        out
    }

    proptest! {
        #[test]
        fn narrow_integer_types_give_the_bits_of_the_i128_formula(
            seed in any::<u64>(), amp in prop_oneof![Just(32767i64), 1i64..=32767], d in prop_oneof![2usize..80, Just(192), Just(768), 1280usize..1300],
        ) {
            let mut x = tokens(2, d, seed, amp);
            // Extreme rows: all at the limit, and alternating signs.
            x.extend((0..d).map(|_| 32767i16));
            x.extend((0..d).map(|i| if i % 2 == 0 { 32767 } else { -32767 }));
            let gamma: Vec<f32> = (0..d).map(|i| 0.5 + (i % 7) as f32 * 0.25).collect();
            let beta: Vec<f32> = (0..d).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
            let ln = LayerNormI16::new(&gamma, &beta, 1e-6, 3e-3, 0.05).unwrap();
            let mut q = vec![0i8; x.len()];
            ln.apply(&x, &mut q);
            prop_assert_eq!(q, reference_i128(&ln, &x));
        }
    }

    proptest! {
        // Rows at a pitch (a head's slice of each token, as the selectors read them) give
        // the bits of the same rows gathered, on the dispatched kernel and the generic
        // code, and their sums are Σ x of each row.
        #[test]
        fn strided_rows_equal_gathered_rows_and_give_their_sums(
            seed in any::<u64>(), d in prop_oneof![Just(16usize), Just(64), 2usize..40], extra in 0usize..40, rows in 0usize..9,
        ) {
            let stride = d + extra;
            let x = tokens(rows.max(1), stride, seed, 32767);
            let x = &x[..(rows.max(1) - 1) * stride + d];
            let gathered: Vec<i16> = (0..rows).flat_map(|r| x[r * stride..r * stride + d].to_vec()).collect();
            let gamma: Vec<f32> = (0..d).map(|i| 0.5 + (i % 7) as f32 * 0.25).collect();
            let beta: Vec<f32> = (0..d).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
            let ln = LayerNormI16::new(&gamma, &beta, 1e-6, 3e-3, 0.05).unwrap();
            let mut want = vec![0i8; rows * d];
            ln.apply(&gathered, &mut want);
            let want_sums: Vec<i64> = gathered.chunks_exact(d).map(|r| r.iter().map(|&v| v as i64).sum()).collect();
            let (mut q, mut sums) = (vec![0i8; rows * d], vec![0i64; rows]);
            ln.apply_rows(x, stride, &mut q, &mut sums);
            prop_assert_eq!(&q, &want);
            prop_assert_eq!(&sums, &want_sums);
            let (mut q, mut sums) = (vec![0i8; rows * d], vec![0i64; rows]);
            ln.apply_generic(x, stride, &mut q, &mut sums);
            prop_assert_eq!(&q, &want);
            prop_assert_eq!(&sums, &want_sums);
        }
    }

    #[test]
    #[should_panic(expected = "need more than")]
    fn strided_rows_beyond_the_input_are_refused() {
        let ln = LayerNormI16::new(&[1.0; 4], &[0.0; 4], 1e-6, 0.01, 0.1).unwrap();
        ln.apply_rows(&[1; 9], 6, &mut [0; 8], &mut []);
    }

    #[test]
    fn constant_rows_give_beta() {
        let ln = LayerNormI16::new(&[1.0; 4], &[0.5, -0.5, 0.0, 1.0], 1e-6, 0.01, 0.1).unwrap();
        let mut q = [0i8; 8];
        ln.apply(&[300, 300, 300, 300, -32767, -32767, -32767, -32767], &mut q);
        assert_eq!(q, [5, -5, 0, 10, 5, -5, 0, 10]);
    }

    /// Cross-architecture check: CI runs this on x86-64 and under qemu for the A53; both
    /// must produce this digest. If the formula changes on purpose, the new digest is
    /// printed by the failing assertion — update it and say why in the commit.
    #[test]
    fn golden_digest_is_the_same_on_every_architecture() {
        let mut h: u64 = 0xcbf29ce484222325;
        for (seed, d, amp, s_in, s_out) in
            [(1u64, 192, 32767, 3e-3f32, 0.05f32), (2, 64, 4000, 1e-2, 0.03), (3, 768, 200, 0.2, 0.11)]
        {
            let x = tokens(17, d, seed, amp);
            let gamma: Vec<f32> = (0..d).map(|i| 0.3 + (i % 11) as f32 * 0.173).collect();
            let beta: Vec<f32> = (0..d).map(|i| (i % 13) as f32 * 0.071 - 0.4).collect();
            let ln = LayerNormI16::new(&gamma, &beta, 1e-6, s_in, s_out).unwrap();
            let mut q = vec![0i8; x.len()];
            ln.apply(&x, &mut q);
            for v in q {
                h = (h ^ v as u8 as u64).wrapping_mul(0x100000001b3);
            }
        }
        assert_eq!(h, GOLDEN_LN_DIGEST, "LayerNormI16 digest changed: {h:#018x}");
    }

    const GOLDEN_LN_DIGEST: u64 = 0xc2b95f2e3153d946;
}
