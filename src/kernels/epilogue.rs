//! What follows an int8 GEMM: per-channel requantisation of the int32 accumulators into
//! int8 (then, for a GELU layer, the layer's int8 → int8 GELU table), into Q·.16, or onto
//! the int16 residual stream (`docs/integer-format.md` §2, §4.1). Plain integer code; on
//! x86-64 the same code is also compiled with AVX2 enabled (`arch::x86_64::epilogue`) and
//! chosen at run time, which lets the compiler vectorise it, and the int8 requantisation,
//! the residual add and the table lookup have AVX-512 intrinsics. The integer operations
//! are identical, so the results are bit for bit the same (tested below).
#![forbid(unsafe_code)]

use crate::quant::fixed::{residual_add, sat_i32, sat_i8};
use crate::quant::gelu::GeluTable;
use crate::quant::Multiplier;

/// `out[i] = quantize_i8(x[i], scale)`: the image's (or any f32 tensor's) int8 quantisation.
pub fn quantize_i8_slice(x: &[f32], scale: f32, out: &mut [i8]) {
    assert_eq!(x.len(), out.len(), "quantize_i8_slice: sizes");
    #[cfg(target_arch = "x86_64")]
    if super::arch::x86_64::epilogue::available() {
        return super::arch::x86_64::epilogue::quantize_i8_slice(x, scale, out);
    }
    quantize_i8_slice_generic(x, scale, out)
}

pub(crate) fn quantize_i8_slice_generic(x: &[f32], scale: f32, out: &mut [i8]) {
    assert_eq!(x.len(), out.len(), "quantize_i8_slice: sizes");
    for (o, &v) in out.iter_mut().zip(x) {
        *o = crate::quant::fixed::quantize_i8(v, scale);
    }
}

/// The im2col matrix of a CHW image (`3 × size × size`, patches `p × p`; layout of
/// [`super::im2col_runs`]), quantised: `out[j] = quantize_i8(image[i], scale)` for each
/// pixel `i` and its place `j` in the matrix. One pass over the image (no int8 or f32 copy
/// of it in between).
pub fn quantize_im2col_i8(image: &[f32], size: usize, p: usize, scale: f32, out: &mut [i8]) {
    assert!(p > 0 && size.is_multiple_of(p), "quantize_im2col_i8: {size} is not whole patches of {p}");
    assert_eq!(image.len(), 3 * size * size, "quantize_im2col_i8: image size");
    assert_eq!(out.len(), image.len(), "quantize_im2col_i8: matrix size");
    #[cfg(target_arch = "x86_64")]
    if super::arch::x86_64::epilogue::available() {
        return super::arch::x86_64::epilogue::quantize_im2col_i8(image, size, p, scale, out);
    }
    quantize_im2col_i8_generic(image, size, p, scale, out)
}

#[inline(always)]
pub(crate) fn quantize_im2col_i8_generic(image: &[f32], size: usize, p: usize, scale: f32, out: &mut [i8]) {
    super::im2col_runs(size, p, |src, dst| {
        quantize_i8_slice_generic(&image[src..src + p], scale, &mut out[dst..dst + p])
    });
}

/// `out[r, o] = sat8(requant[o](acc[r, o] + bias[o]))`.
pub fn requant_i8(acc: &[i32], bias: &[i32], requant: &[Multiplier], out: &mut [i8]) {
    #[cfg(target_arch = "x86_64")]
    if super::arch::x86_64::epilogue::available() {
        return super::arch::x86_64::epilogue::requant_i8(acc, bias, requant, out);
    }
    requant_i8_generic(acc, bias, requant, out)
}

/// `out[r, o] = sat32(requant[o](acc[r, o] + bias[o]))` (Q·.16 outputs).
pub fn requant_i32(acc: &[i32], bias: &[i32], requant: &[Multiplier], out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if super::arch::x86_64::epilogue::available() {
        return super::arch::x86_64::epilogue::requant_i32(acc, bias, requant, out);
    }
    requant_i32_generic(acc, bias, requant, out)
}

/// `out[r, o] = gelu[sat8(requant[o](acc[r, o] + bias[o]))]`: the int8 GELU input (the
/// layer's GELU-input scale), then the layer's table (§4.1).
pub fn requant_gelu_i8(acc: &[i32], bias: &[i32], requant: &[Multiplier], gelu: &GeluTable, out: &mut [i8]) {
    requant_i8(acc, bias, requant, out);
    gelu_table_i8(gelu, out);
}

/// `x[i] = gelu[x[i]]` for every byte.
pub fn gelu_table_i8(gelu: &GeluTable, x: &mut [i8]) {
    #[cfg(target_arch = "x86_64")]
    if super::arch::x86_64::epilogue::vbmi_available() {
        return super::arch::x86_64::epilogue::gelu_table_i8(gelu, x);
    }
    #[cfg(target_arch = "aarch64")]
    if super::int8::selected_isa() == super::int8::Isa::Neon {
        return super::arch::aarch64::lut::gelu_table_i8(gelu, x);
    }
    gelu_table_i8_generic(gelu, x)
}

pub(crate) fn gelu_table_i8_generic(gelu: &GeluTable, x: &mut [i8]) {
    for v in x {
        *v = gelu.get(*v);
    }
}

/// `x[r, o] = residual_add(acc[r, o] + bias[o], requant[o], x[r, o], rescale)`.
pub fn residual(acc: &[i32], bias: &[i32], requant: &[Multiplier], rescale: Multiplier, x: &mut [i16]) {
    #[cfg(target_arch = "x86_64")]
    if super::arch::x86_64::epilogue::available() {
        return super::arch::x86_64::epilogue::residual(acc, bias, requant, rescale, x);
    }
    residual_generic(acc, bias, requant, rescale, x)
}

fn check(acc: usize, out: usize, n: usize, bias: usize) {
    assert_eq!(acc, out, "epilogue: accumulator and output sizes");
    assert_eq!(n, bias, "epilogue: one bias per multiplier");
    assert!(n == 0 || acc.is_multiple_of(n), "epilogue: rows are not whole");
}

#[inline(always)]
pub(crate) fn requant_i8_generic(acc: &[i32], bias: &[i32], requant: &[Multiplier], out: &mut [i8]) {
    check(acc.len(), out.len(), requant.len(), bias.len());
    let n = requant.len();
    if n == 0 {
        return;
    }
    for (arow, orow) in acc.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        for (((o, &a), &b), m) in orow.iter_mut().zip(arow).zip(bias).zip(requant) {
            *o = sat_i8(m.apply(a + b));
        }
    }
}

#[inline(always)]
pub(crate) fn requant_i32_generic(acc: &[i32], bias: &[i32], requant: &[Multiplier], out: &mut [i32]) {
    check(acc.len(), out.len(), requant.len(), bias.len());
    let n = requant.len();
    if n == 0 {
        return;
    }
    for (arow, orow) in acc.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        for (((o, &a), &b), m) in orow.iter_mut().zip(arow).zip(bias).zip(requant) {
            *o = sat_i32(m.apply(a + b));
        }
    }
}

#[inline(always)]
pub(crate) fn residual_generic(acc: &[i32], bias: &[i32], requant: &[Multiplier], rescale: Multiplier, x: &mut [i16]) {
    check(acc.len(), x.len(), requant.len(), bias.len());
    let n = requant.len();
    if n == 0 {
        return;
    }
    for (arow, xrow) in acc.chunks_exact(n).zip(x.chunks_exact_mut(n)) {
        for (((xv, &a), &b), &m) in xrow.iter_mut().zip(arow).zip(bias).zip(requant) {
            *xv = residual_add(a + b, m, *xv, rescale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::strategies::any_multiplier;
    use proptest::prelude::*;

    fn mults(n: usize, seed: u64) -> Vec<Multiplier> {
        (0..n)
            .map(|i| Multiplier::from_ratio(1e-4 * (1.0 + ((seed as usize + i * 37) % 1000) as f64)).unwrap())
            .collect()
    }

    fn requant_multiplier() -> impl Strategy<Value = Multiplier> {
        prop_oneof![(1e-9f64..1e4).prop_map(|r| Multiplier::from_ratio(r).unwrap()), any_multiplier()]
    }

    /// Accumulators and biases whose sum stays in int32 (as `docs/integer-format.md`
    /// guarantees: |acc| < 2^30, |bias| ≤ 2^30), small and large.
    fn acc_value() -> impl Strategy<Value = i32> {
        prop_oneof![
            -5000i32..5000,
            -(1i32 << 20)..(1 << 20),
            -(1i32 << 30)..(1 << 30),
            Just(-(1i32 << 30)),
            Just((1 << 30) - 1),
            Just(0)
        ]
    }

    /// The AVX-512 LayerNorm's output rounding against `round_half_up_to_i8` on every
    /// half-step in ±300 and its neighbouring floats, random bit patterns and the specials.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn rounding_lanes_512_equal_round_half_up_to_i8() {
        use crate::kernels::arch::x86_64::epilogue::{avx512_available, round_half_up_to_i8_x16};
        use crate::quant::fixed::round_half_up_to_i8;
        if !avx512_available() {
            eprintln!("skipped: the AVX-512 kernels are not selected on this CPU");
            return;
        }
        let mut ts = vec![f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN, 0.0, -0.0];
        ts.extend([8388607.5f32, 8388608.0, -8388607.5, 16777217.0, 0.49999997, -0.50000006, f32::MIN_POSITIVE]);
        for i in -600 * 8..=600 * 8 {
            let t = i as f32 / 16.0;
            ts.extend([t, f32::from_bits(t.to_bits() + 1), f32::from_bits(t.to_bits().saturating_sub(1))]);
        }
        let mut bits = 0x9e37_79b9u32;
        for _ in 0..200_000 {
            bits ^= bits << 13;
            bits ^= bits >> 17;
            bits ^= bits << 5;
            ts.push(f32::from_bits(bits));
        }
        for c in ts.chunks(16) {
            let mut lanes = [0f32; 16];
            lanes[..c.len()].copy_from_slice(c);
            for (r, &t) in round_half_up_to_i8_x16(lanes).iter().zip(&lanes) {
                assert_eq!(*r, round_half_up_to_i8(t) as i32, "round_half_up_to_i8({t:e})");
            }
        }
    }

    /// A table whose every entry differs from its neighbours' (so a lane that reads the
    /// wrong entry shows), and one made by the format (`GeluTable::new`).
    fn tables() -> Vec<GeluTable> {
        let mut t = [0i8; 256];
        for (i, v) in t.iter_mut().enumerate() {
            *v = (i as u8).wrapping_mul(167).wrapping_add(13) as i8;
        }
        let to_q16 = Multiplier::from_ratio(0.05 * 65536.0).unwrap();
        let to_i8 = Multiplier::from_ratio(1.0 / 65536.0 / 0.04).unwrap();
        vec![GeluTable(t), GeluTable::new(to_q16, to_i8)]
    }

    #[test]
    fn gelu_table_lookup_equals_the_generic_code_on_every_byte_and_length() {
        let all: Vec<i8> = (0..=255u8).map(|b| b as i8).collect();
        for t in tables() {
            // Every byte value in every lane position, and every length up to 3 vectors
            // (whole and partial 64-byte vectors).
            for len in 0..=200 {
                for rot in [0usize, 1, 63, 64, 100] {
                    let x: Vec<i8> = (0..len).map(|i| all[(i * 7 + rot) % 256]).collect();
                    let (mut a, mut b) = (x.clone(), x);
                    gelu_table_i8(&t, &mut a);
                    gelu_table_i8_generic(&t, &mut b);
                    assert_eq!(a, b, "len {len} rot {rot}");
                }
            }
        }
    }

    proptest! {
        // The dispatched int8 requantisation and residual add (hand-written for AVX-512)
        // equal the generic code for any multipliers, in-range accumulators, any residual
        // stream values and rows of any width (tails of 1..15 channels included).
        #[test]
        fn requant_and_residual_epilogues_equal_the_generic_code(
            (acc, bias, m, x0) in (1usize..100, 1usize..4).prop_flat_map(|(n, rows)| (
                prop::collection::vec(acc_value(), n * rows),
                prop::collection::vec(acc_value(), n),
                prop::collection::vec(requant_multiplier(), n),
                prop::collection::vec(any::<i16>(), n * rows),
            )),
            rescale in requant_multiplier(),
        ) {
            let (mut a, mut b) = (vec![0i8; acc.len()], vec![0i8; acc.len()]);
            requant_i8(&acc, &bias, &m, &mut a);
            requant_i8_generic(&acc, &bias, &m, &mut b);
            prop_assert_eq!(a, b);
            let (mut x1, mut x2) = (x0.clone(), x0);
            residual(&acc, &bias, &m, rescale, &mut x1);
            residual_generic(&acc, &bias, &m, rescale, &mut x2);
            prop_assert_eq!(x1, x2);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        // The dispatched (possibly AVX2-compiled) epilogues equal the generic code.
        #[test]
        fn dispatched_epilogues_equal_the_generic_code(
            rows in 1usize..5, n in 1usize..70, seed in any::<u64>(),
            acc_seed in any::<i32>(),
        ) {
            let acc: Vec<i32> = (0..rows * n).map(|i| acc_seed.wrapping_mul(i as i32 + 1).wrapping_add(i as i32 * 7919) >> 2).collect();
            let bias: Vec<i32> = (0..n).map(|i| (i as i32 - 30) * 1000).collect();
            let m = mults(n, seed);
            let (mut a, mut b) = (vec![0i8; acc.len()], vec![0i8; acc.len()]);
            requant_i8(&acc, &bias, &m, &mut a);
            requant_i8_generic(&acc, &bias, &m, &mut b);
            prop_assert_eq!(&a, &b);
            for t in tables() {
                requant_gelu_i8(&acc, &bias, &m, &t, &mut a);
                requant_i8_generic(&acc, &bias, &m, &mut b);
                gelu_table_i8_generic(&t, &mut b);
                prop_assert_eq!(&a, &b);
            }
            let (mut c, mut d) = (vec![0i32; acc.len()], vec![0i32; acc.len()]);
            requant_i32(&acc, &bias, &m, &mut c);
            requant_i32_generic(&acc, &bias, &m, &mut d);
            prop_assert_eq!(&c, &d);
            let x0: Vec<i16> = (0..acc.len()).map(|i| (i as i16).wrapping_mul(977)).collect();
            let (mut x1, mut x2) = (x0.clone(), x0.clone());
            let r = Multiplier::from_ratio(0.75).unwrap();
            residual(&acc, &bias, &m, r, &mut x1);
            residual_generic(&acc, &bias, &m, r, &mut x2);
            prop_assert_eq!(&x1, &x2);
        }

        // The dispatched image quantisation equals the generic code on any floats (NaN,
        // infinities, subnormals and exact half-steps included), any length (partial
        // vectors) and any positive scale.
        #[test]
        fn dispatched_quantisation_equals_the_generic_code(
            x in prop::collection::vec(prop_oneof![
                4 => -3.0f32..3.0,
                2 => (-600i32..600).prop_map(|i| i as f32 * 0.5 * 0.02),
                1 => any::<f32>(),
            ], 0..70),
            scale in prop_oneof![Just(0.02f32), 1e-6f32..10.0],
        ) {
            let (mut a, mut b) = (vec![0i8; x.len()], vec![0i8; x.len()]);
            quantize_i8_slice(&x, scale, &mut a);
            quantize_i8_slice_generic(&x, scale, &mut b);
            prop_assert_eq!(a, b);
        }

        // The dispatched quantised im2col (AVX-512: four 16-pixel runs per 64-byte store)
        // puts `quantize_i8` of every pixel where the im2col layout says, for patch widths
        // that take the vector path (16, 32) and others (4, 8, 12).
        #[test]
        fn dispatched_quantised_im2col_equals_pixel_by_pixel_quantisation(
            (p, g) in prop_oneof![Just((16usize, 1usize)), Just((16, 3)), Just((32, 2)), Just((4, 7)), Just((8, 3)), Just((12, 2))],
            seed in any::<u32>(),
            scale in prop_oneof![Just(0.02f32), 1e-3f32..1.0],
        ) {
            let size = p * g;
            let mut bits = seed | 1;
            let image: Vec<f32> = (0..3 * size * size).map(|i| {
                bits ^= bits << 13;
                bits ^= bits >> 17;
                bits ^= bits << 5;
                match i % 11 {
                    0 => f32::from_bits(bits),
                    1 => (bits % 1200) as f32 * 0.5 * scale - 300.0 * scale,
                    _ => (bits % 20001) as f32 / 10000.0 - 1.0,
                }
            }).collect();
            let mut got = vec![0i8; image.len()];
            quantize_im2col_i8(&image, size, p, scale, &mut got);
            let k = 3 * p * p;
            for (gy, gx, c, ky, kx) in patch_grid(g, p) {
                let want = crate::quant::fixed::quantize_i8(image[c * size * size + (gy * p + ky) * size + gx * p + kx], scale);
                prop_assert_eq!(got[(gy * g + gx) * k + (c * p + ky) * p + kx], want, "patch ({}, {}) c {} ({}, {})", gy, gx, c, ky, kx);
            }
        }
    }

    /// Every (patch row, patch column, channel, row in patch, column in patch).
    fn patch_grid(g: usize, p: usize) -> impl Iterator<Item = (usize, usize, usize, usize, usize)> {
        (0..g * g * 3 * p * p)
            .map(move |i| (i / (g * 3 * p * p), i / (3 * p * p) % g, i / (p * p) % 3, i / p % p, i % p))
    }
}
