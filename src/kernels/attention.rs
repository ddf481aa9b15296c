//! The integer attention's element-wise steps around its two GEMMs
//! (`docs/integer-format.md` §4.2): `Q·Kᵀ` logits → Q·.16 → softmax → int8 probabilities,
//! and the `P·V` accumulators → int8. The generic functions are the specification (they
//! call the scalar golden code in [`crate::quant`]); on x86-64 hand-written AVX2 versions
//! (`arch::x86_64::attention`) are chosen at run time, bit for bit the same (tested below).
#![forbid(unsafe_code)]

use crate::quant::softmax::{prob_to_i8, softmax_q16};
use crate::quant::Multiplier;

/// `probs[r, ·] = prob_to_i8(softmax_q16(to_q16.to_i32(logits[r, ·]), δ₂ = 1))` for each
/// row of `n` int32 `Q·Kᵀ` accumulators.
pub fn softmax_rows_i8(logits: &[i32], n: usize, to_q16: Multiplier, probs: &mut [i8]) {
    check(logits.len(), probs.len(), n);
    if logits.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::arch::x86_64::epilogue::available() {
        return super::arch::x86_64::attention::softmax_rows_i8(logits, n, to_q16, probs);
    }
    softmax_rows_i8_generic(logits, n, to_q16, probs)
}

/// `out[i] = m.to_i8(acc[i])`.
pub fn requant_uniform_i8(acc: &[i32], m: Multiplier, out: &mut [i8]) {
    assert_eq!(acc.len(), out.len(), "requant_uniform_i8: sizes");
    #[cfg(target_arch = "x86_64")]
    if super::arch::x86_64::epilogue::available() {
        return super::arch::x86_64::attention::requant_uniform_i8(acc, m, out);
    }
    requant_uniform_i8_generic(acc, m, out)
}

fn check(logits: usize, probs: usize, n: usize) {
    assert_eq!(logits, probs, "softmax_rows_i8: logits and probabilities sizes");
    assert!(n > 0 || logits == 0, "softmax_rows_i8: empty rows");
    assert!(n == 0 || logits.is_multiple_of(n), "softmax_rows_i8: rows are not whole");
}

pub(crate) fn softmax_rows_i8_generic(logits: &[i32], n: usize, to_q16: Multiplier, probs: &mut [i8]) {
    check(logits.len(), probs.len(), n);
    if logits.is_empty() {
        return;
    }
    let mut row_q16 = vec![0i32; n];
    let mut row_p = vec![0u32; n];
    for (lr, pr) in logits.chunks_exact(n).zip(probs.chunks_exact_mut(n)) {
        for (o, &v) in row_q16.iter_mut().zip(lr) {
            *o = to_q16.to_i32(v);
        }
        softmax_q16(&row_q16, 0, &mut row_p);
        for (o, &p) in pr.iter_mut().zip(&row_p) {
            *o = prob_to_i8(p);
        }
    }
}

pub(crate) fn requant_uniform_i8_generic(acc: &[i32], m: Multiplier, out: &mut [i8]) {
    assert_eq!(acc.len(), out.len(), "requant_uniform_i8: sizes");
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = m.to_i8(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::strategies::any_multiplier as multiplier;
    use proptest::prelude::*;

    /// A realistic attention-logit multiplier (`s_q·s_k/√d_h` → Q·.16), or any.
    fn logit_multiplier() -> impl Strategy<Value = Multiplier> {
        prop_oneof![(1e-3f64..10.0).prop_map(|r| Multiplier::from_ratio(r).unwrap()), multiplier()]
    }

    fn logit() -> impl Strategy<Value = i32> {
        prop_oneof![
            4 => -3000i32..3000,
            2 => -(1i32 << 22)..(1 << 22),
            2 => any::<i32>(),
            1 => prop_oneof![Just(i32::MIN), Just(i32::MAX), Just(i32::MIN + 1), Just(i32::MAX - 1), Just(0)],
        ]
    }

    /// Rows of 1..=300 logits: random, all equal, or one huge value among small ones.
    fn rows() -> impl Strategy<Value = (usize, Vec<i32>)> {
        (1usize..=300, 1usize..4).prop_flat_map(|(n, r)| {
            let len = n * r;
            let rows = prop_oneof![
                3 => prop::collection::vec(logit(), len),
                1 => logit().prop_map(move |v| vec![v; len]),
                1 => (prop::collection::vec(-100i32..100, len), 0..len, prop_oneof![Just(i32::MIN), Just(i32::MAX)])
                    .prop_map(|(mut v, i, x)| { v[i] = x; v }),
            ];
            (Just(n), rows)
        })
    }

    #[test]
    fn named_cases_equal_the_generic_code() {
        let one = Multiplier::from_ratio(1.0).unwrap();
        let big = Multiplier { m: i32::MAX, shift: 1 };
        let cases: Vec<(usize, Vec<i32>, Multiplier)> = vec![
            (1, vec![i32::MIN], one),
            (1, vec![i32::MAX], big),
            (3, vec![i32::MIN, i32::MAX, 0], big),
            (9, vec![7; 9], one),
            (8, vec![0, -45426, -45427, -45425, -1453631, -1453632, -1453633, i32::MIN + 1], one),
            (197, (0..197).map(|i| i * 3001 - 300_000).collect(), Multiplier::from_ratio(0.37).unwrap()),
            (300, (0..300i32).map(|i| i.wrapping_mul(0x9e37_79b9u32 as i32)).collect(), big),
        ];
        for (n, x, m) in cases {
            let (mut a, mut b) = (vec![0i8; x.len()], vec![0i8; x.len()]);
            softmax_rows_i8(&x, n, m, &mut a);
            softmax_rows_i8_generic(&x, n, m, &mut b);
            assert_eq!(a, b, "n {n} m {m:?} x {x:?}");
            if let Some(c) = softmax_rows_avx2(&x, n, m) {
                assert_eq!(c, b, "AVX2: n {n} m {m:?} x {x:?}");
            }
            requant_uniform_i8(&x, m, &mut a);
            requant_uniform_i8_generic(&x, m, &mut b);
            assert_eq!(a, b, "requant m {m:?} x {x:?}");
        }
        softmax_rows_i8(&[], 0, one, &mut []);
        requant_uniform_i8(&[], one, &mut []);
    }

    /// The vector exponentials (8 lanes for AVX2, 16 for AVX-512, each where this CPU
    /// runs it) on every input where they are not 0 (and the first where they are).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp_lanes_equal_exp_q16_on_every_input() {
        use crate::kernels::arch::x86_64::attention::{exp_neg_q16_x16, exp_neg_q16_x8};
        use crate::kernels::arch::x86_64::epilogue::{available, avx512_available};
        use crate::quant::softmax::{exp_q16, LN2_Q16};
        let last = 32 * LN2_Q16 as u32;
        let check = |lanes: &[u32], got: &[u32]| {
            for (g, &v) in got.iter().zip(lanes) {
                assert_eq!(*g, exp_q16(-(v as i64)), "{} lanes: exp_q16(-{v})", lanes.len());
            }
        };
        if !available() {
            eprintln!("skipped: no AVX2 on this CPU");
            return;
        }
        for nd in (0..=last).step_by(16) {
            let lanes: [u32; 16] = std::array::from_fn(|i| (nd + i as u32).min(last));
            for half in lanes.chunks_exact(8) {
                let h: [u32; 8] = half.try_into().unwrap();
                check(half, &exp_neg_q16_x8(h));
            }
            if avx512_available() {
                check(&lanes, &exp_neg_q16_x16(lanes));
            }
        }
    }

    /// The AVX2 row kernel, also where the dispatcher picks the AVX-512 one (so both are
    /// checked on AVX-512 machines); `None` without AVX2.
    fn softmax_rows_avx2(x: &[i32], n: usize, m: Multiplier) -> Option<Vec<i8>> {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::arch::x86_64::epilogue::available() && n > 0 {
            let mut p = vec![0i8; x.len()];
            crate::kernels::arch::x86_64::attention::softmax_rows_i8_avx2_only(x, n, m, &mut p);
            return Some(p);
        }
        let _ = (x, n, m);
        None
    }

    proptest! {
        #[test]
        fn dispatched_softmax_rows_equal_the_generic_code((n, x) in rows(), m in logit_multiplier()) {
            let (mut a, mut b) = (vec![0i8; x.len()], vec![0i8; x.len()]);
            softmax_rows_i8(&x, n, m, &mut a);
            softmax_rows_i8_generic(&x, n, m, &mut b);
            if let Some(c) = softmax_rows_avx2(&x, n, m) {
                prop_assert_eq!(&c, &b, "AVX2 row kernel");
            }
            prop_assert_eq!(a, b);
        }

        #[test]
        fn dispatched_uniform_requant_equals_the_generic_code(x in prop::collection::vec(logit(), 0..300), m in multiplier()) {
            let (mut a, mut b) = (vec![0i8; x.len()], vec![0i8; x.len()]);
            requant_uniform_i8(&x, m, &mut a);
            requant_uniform_i8_generic(&x, m, &mut b);
            #[cfg(target_arch = "x86_64")]
            if crate::kernels::arch::x86_64::epilogue::available() {
                let mut c = vec![0i8; x.len()];
                crate::kernels::arch::x86_64::attention::requant_uniform_i8_avx2_only(&x, m, &mut c);
                prop_assert_eq!(&c, &b, "AVX2 requantisation");
            }
            prop_assert_eq!(a, b);
        }
    }
}
