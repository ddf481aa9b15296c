//! CPU compute. One entry point per operation; the model code never calls a BLAS directly,
//! so later backends and SIMD kernels change only this module.
//!
//! [`int8`] is the integer GEMM of the 8-bit path (`docs/integer-format.md` §6): a scalar
//! reference and AVX2 / AVX-512 VNNI / NEON kernels chosen at start-up.
//!
//! The nonlinearities here are plain scalar f32 code on purpose: IEEE single-precision
//! operations in a fixed order give the same bits on x86-64 and aarch64.

pub mod arch;
pub mod attention;
pub mod epilogue;
pub mod int8;

pub use arch::sgemm::{sgemm, MatMut, MatRef};
pub use int8::{gemm_i8, gemm_i8_packed, GemmError, Isa, PackedWeights};

/// The runs of the im2col matrix of a CHW image (`3 × size × size`, patches `p × p`):
/// calls `f(src, dst)` for every run of `p` contiguous pixels, `src` its offset in the image
/// and `dst` in the matrix (row per patch, in raster order; within a row `[c][ky][kx]`).
/// The runs of one patch and channel are contiguous in the matrix (`p·p` values from
/// `dst` of its `ky = 0` run).
#[inline(always)]
pub fn im2col_runs(size: usize, p: usize, mut f: impl FnMut(usize, usize)) {
    let g = size / p;
    let k = 3 * p * p;
    for gy in 0..g {
        for gx in 0..g {
            for c in 0..3 {
                for ky in 0..p {
                    f(c * size * size + (gy * p + ky) * size + gx * p, (gy * g + gx) * k + (c * p + ky) * p);
                }
            }
        }
    }
}

/// `y[m×out] = x[m×in] · Wᵀ + b`, with `w` in PyTorch's `[out, in]` row-major layout.
pub fn linear(x: &[f32], m: usize, w: &[f32], b: &[f32], out_features: usize, y: &mut [f32]) {
    assert_eq!(b.len(), out_features, "linear: bias length");
    assert!(out_features > 0 && w.len().is_multiple_of(out_features), "linear: weight shape");
    let k = w.len() / out_features;
    assert_eq!(x.len(), m * k, "linear: input shape");
    assert_eq!(y.len(), m * out_features, "linear: output shape");
    for row in y.chunks_exact_mut(out_features) {
        row.copy_from_slice(b);
    }
    sgemm(
        1.0,
        MatRef { data: x, rows: m, cols: k, rs: k, cs: 1 },
        // Wᵀ viewed through strides: element (i, j) of Wᵀ is w[j * k + i].
        MatRef { data: w, rows: k, cols: out_features, rs: 1, cs: k },
        1.0,
        MatMut { data: y, rows: m, cols: out_features, rs: out_features, cs: 1 },
    );
}

/// LayerNorm over each row of `x` (`rows × g.len()`), in place.
pub fn layer_norm(x: &mut [f32], g: &[f32], b: &[f32], eps: f32) {
    let d = g.len();
    assert_eq!(b.len(), d);
    assert_eq!(x.len() % d, 0);
    for row in x.chunks_exact_mut(d) {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(g).zip(b) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// Exact (erf) GELU, as PyTorch's `nn.GELU()` default.
pub fn gelu(x: f32) -> f32 {
    let x64 = x as f64;
    (0.5 * x64 * (1.0 + libm::erf(x64 * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

pub fn gelu_inplace(x: &mut [f32]) {
    for v in x {
        *v = gelu(*v);
    }
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Softmax of each row of `x` (`rows × n`), in place, max-subtracted.
pub fn softmax_rows(x: &mut [f32], n: usize) {
    for row in x.chunks_exact_mut(n) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// Strategies shared by the kernels' property tests.
#[cfg(test)]
pub(crate) mod strategies {
    use crate::quant::Multiplier;
    use proptest::prelude::*;

    /// Any multiplier the struct can hold with `shift ≤ 62` (not only those `from_ratio`
    /// makes): mantissas of every size and sign, shifts small, mid and large.
    pub fn any_multiplier() -> impl Strategy<Value = Multiplier> {
        let m = prop_oneof![
            1 << 30..i32::MAX,
            Just(i32::MAX),
            Just(1 << 30),
            any::<i32>(),
            Just(i32::MIN),
            Just(1),
            Just(0),
        ];
        (m, prop_oneof![0u32..=62, 1u32..8, 12u32..24, 28u32..40, 58u32..=62])
            .prop_map(|(m, shift)| Multiplier { m, shift })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_linear(x: &[f32], m: usize, w: &[f32], b: &[f32], n: usize) -> Vec<f32> {
        let k = w.len() / n;
        let mut y = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = b[j] as f64;
                for t in 0..k {
                    acc += x[i * k + t] as f64 * w[j * k + t] as f64;
                }
                y[i * n + j] = acc as f32;
            }
        }
        y
    }

    #[test]
    fn linear_matches_naive() {
        let (m, k, n) = (7, 13, 5);
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0).collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32 - 2.0).collect();
        let mut y = vec![0.0; m * n];
        linear(&x, m, &w, &b, n, &mut y);
        for (a, e) in y.iter().zip(naive_linear(&x, m, &w, &b, n)) {
            assert!((a - e).abs() <= 1e-4 * (1.0 + e.abs()), "{a} vs {e}");
        }
    }

    #[test]
    fn gelu_known_values() {
        // torch.nn.functional.gelu(torch.tensor([-3., -1., 0., 0.5, 2.]))
        let want = [-0.004049696, -0.15865526, 0.0, 0.34573123, 1.9544997];
        for (x, w) in [-3.0f32, -1.0, 0.0, 0.5, 2.0].iter().zip(want) {
            assert!((gelu(*x) - w).abs() < 1e-6, "gelu({x}) = {} want {w}", gelu(*x));
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_survive_large_inputs() {
        let mut x = vec![1000.0, 1001.0, 999.0, -5.0, 0.0, 5.0];
        softmax_rows(&mut x, 3);
        for row in x.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(row.iter().all(|v| v.is_finite()));
        }
        assert!(x[1] > x[0] && x[0] > x[2]);
    }

    #[test]
    fn layer_norm_normalises() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        layer_norm(&mut x, &[1.0; 4], &[0.0; 4], 1e-6);
        let mean: f32 = x.iter().sum::<f32>() / 4.0;
        let var: f32 = x.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-4);
    }
}
