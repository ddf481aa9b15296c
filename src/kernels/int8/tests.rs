//! Every SIMD kernel against the scalar reference, bit for bit: proptest over shapes and
//! values, plus named cases for the edges (tails, extremes, the deepest k).

use super::*;
use proptest::prelude::*;

/// The SIMD kernels this CPU can run; says on stderr which ones are not covered here.
fn simd_isas() -> Vec<Isa> {
    let all = [Isa::Avx2, Isa::Avx512Vnni, Isa::Neon];
    for isa in all.iter().filter(|i| !i.is_available()) {
        eprintln!("int8 GEMM: {isa} not tested on this machine (CPU or architecture lacks it)");
    }
    all.into_iter().filter(|i| i.is_available()).collect()
}

fn reference(m: usize, k: usize, n: usize, a: &[i8], w: &[i8]) -> Vec<i32> {
    let mut out = vec![0; m * n];
    gemm_i8_scalar(m, k, n, a, w, &mut out).unwrap();
    out
}

fn check_all(m: usize, k: usize, n: usize, a: &[i8], w: &[i8]) {
    let want = reference(m, k, n, a, w);
    for isa in simd_isas() {
        let mut out = vec![i32::MIN; m * n];
        gemm_i8_with(isa, m, k, n, a, w, &mut out).unwrap();
        if let Some(i) = (0..m * n).find(|&i| out[i] != want[i]) {
            panic!("{isa} m={m} k={k} n={n}: out[{}, {}] = {} want {}", i / n, i % n, out[i], want[i]);
        }
    }
}

/// A deterministic fill in [lo, hi] (xorshift).
fn fill(len: usize, seed: u64, lo: i8, hi: i8) -> Vec<i8> {
    let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    let span = (hi as i64 - lo as i64 + 1) as u64;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (lo as i64 + (s % span) as i64) as i8
        })
        .collect()
}

#[test]
fn the_architecture_has_its_simd_kernel() {
    if cfg!(target_arch = "aarch64") {
        assert!(Isa::Neon.is_available(), "NEON is part of ARMv8.0");
        assert_eq!(Isa::detect(), Isa::Neon);
    }
    assert!(selected_isa().is_available());
    eprintln!("int8 GEMM kernels here: {:?}, selected {}", Isa::available(), selected_isa());
}

#[test]
fn odd_sizes_and_every_tail() {
    for m in 1..=10 {
        for k in [1, 2, 3, 4, 5, 7, 15, 16, 17, 31, 33, 63, 64, 65, 129] {
            for n in [1, 3, 4, 5, 15, 16, 17, 31, 32, 33, 47, 65] {
                let a = fill(m * k, (m * 1000 + k * 10 + n) as u64, -128, 127);
                let w = fill(n * k, (n * 7 + k) as u64, -127, 127);
                check_all(m, k, n, &a, &w);
            }
        }
    }
}

#[test]
fn deit_tiny_shapes() {
    // qkv, fc1, fc2, the head on CLS alone, and one attention head (Q·Kᵀ).
    for (m, k, n) in [(197, 192, 576), (197, 192, 768), (197, 768, 192), (1, 192, 1000), (197, 64, 197)] {
        let a = fill(m * k, (m + k + n) as u64, -128, 127);
        let w = fill(n * k, (m * k * n) as u64, -127, 127);
        check_all(m, k, n, &a, &w);
    }
}

#[test]
fn extreme_values_at_the_deepest_k() {
    let k = MAX_K;
    // Largest positive, most negative, and a sign pattern that alternates per element.
    let cases: [(i8, i8); 4] = [(-128, -127), (-128, 127), (127, 127), (127, -127)];
    for (av, wv) in cases {
        let a = vec![av; 2 * k];
        let w = vec![wv; 3 * k];
        let want = k as i64 * av as i64 * wv as i64;
        let mut out = vec![0; 6];
        gemm_i8_scalar(2, k, 3, &a, &w, &mut out).unwrap();
        assert!(out.iter().all(|&o| o as i64 == want), "scalar {out:?} want {want}");
        check_all(2, k, 3, &a, &w);
    }
    let a: Vec<i8> = (0..k).map(|i| if i % 2 == 0 { -128 } else { 127 }).collect();
    let w: Vec<i8> = (0..k).map(|i| if i % 3 == 0 { -127 } else { 127 }).collect();
    check_all(1, k, 1, &a, &w);
}

#[test]
fn saturated_operands_in_every_lane_position() {
    // All 128 × 127 products in a 16-wide chunk (the NEON kernel pairs lanes i and i + 8).
    for k in [16, 32, 48] {
        let a = vec![-128i8; 5 * k];
        let w: Vec<i8> = (0..7 * k).map(|i| if (i / 8) % 2 == 0 { -127 } else { 127 }).collect();
        check_all(5, k, 7, &a, &w);
    }
}

#[test]
fn empty_shapes() {
    for isa in Isa::available() {
        let mut out = vec![7; 6];
        gemm_i8_with(isa, 2, 0, 3, &[], &[], &mut out).unwrap();
        assert_eq!(out, vec![0; 6], "{isa}: k = 0 gives zeros");
        gemm_i8_with(isa, 0, 4, 3, &[], &[1; 12], &mut []).unwrap();
        gemm_i8_with(isa, 2, 4, 0, &[1; 8], &[], &mut []).unwrap();
    }
}

#[test]
fn contract_violations_are_errors() {
    for isa in Isa::available() {
        let mut out = vec![0; 2];
        let err = gemm_i8_with(isa, 1, 3, 2, &[1, 2, 3], &[1, 2, 3, 4, -128, 6], &mut out).unwrap_err();
        assert_eq!(err, GemmError::WeightRange { row: 1, col: 1 });
        assert!(matches!(
            gemm_i8_with(isa, 1, 3, 2, &[1, 2], &[0; 6], &mut out),
            Err(GemmError::Shape { what: "a", .. })
        ));
        assert!(matches!(
            gemm_i8_with(isa, 1, 3, 2, &[0; 3], &[0; 5], &mut out),
            Err(GemmError::Shape { what: "w", .. })
        ));
        let deep = MAX_K + 1;
        assert_eq!(PackedWeights::with_isa(isa, &vec![0; deep], 1, deep).unwrap_err(), GemmError::TooDeep { k: deep });
    }
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        assert_eq!(PackedWeights::with_isa(isa, &[1], 1, 1).unwrap_err(), GemmError::Unsupported { isa });
    }
}

#[test]
fn transposed_packing_is_the_same_operand() {
    // Partial and whole 32-channel blocks and k-quads (the VNNI packer transposes whole
    // 4 × 32 tiles with SIMD interleaves, the rest byte by byte).
    for (k, n) in [(37, 21), (37, 64), (200, 70), (4, 32), (197, 64)] {
        let w = fill(n * k, 5 + k as u64, -127, 127);
        let mut w_t = vec![0i8; k * n];
        for j in 0..n {
            for t in 0..k {
                w_t[t * n + j] = w[j * k + t];
            }
        }
        assert_eq!(
            PackedWeights::new_transposed(&w_t, k, n).unwrap(),
            PackedWeights::new(&w, n, k).unwrap(),
            "k {k} n {n}"
        );
    }
}

/// Packing rows (or, transposed, columns) in place inside wider rows — one head of the
/// fused qkv matrix — equals packing the gathered matrix; too short a source is an error.
#[test]
fn strided_packing_is_the_same_operand() {
    let (rows, hd, pitch) = (13, 10, 3 * 40);
    let qkv = fill(rows * pitch, 11, -127, 127);
    for off in [0, 7, 40 + 3 * hd, 2 * 40 + 3 * hd] {
        let gathered: Vec<i8> = qkv.chunks_exact(pitch).flat_map(|r| r[off..off + hd].to_vec()).collect();
        let src = &qkv[off..];
        assert_eq!(
            PackedWeights::new_strided(src, rows, hd, pitch).unwrap(),
            PackedWeights::new(&gathered, rows, hd).unwrap()
        );
        assert_eq!(
            PackedWeights::new_transposed_strided(src, rows, hd, pitch).unwrap(),
            PackedWeights::new_transposed(&gathered, rows, hd).unwrap()
        );
    }
    let short = &qkv[..(rows - 1) * pitch + hd - 1];
    assert!(matches!(PackedWeights::new_strided(short, rows, hd, pitch), Err(GemmError::Shape { .. })));
    assert!(matches!(PackedWeights::new_transposed_strided(short, rows, hd, pitch), Err(GemmError::Shape { .. })));
    assert!(matches!(PackedWeights::new_strided(&qkv, 2, 5, 4), Err(GemmError::Shape { .. })));
}

/// Repacking into a reused value gives what packing afresh gives, whatever it held
/// before (larger or smaller: the padding is zeroed again).
#[test]
fn repacking_into_reused_storage_is_packing_afresh() {
    let pitch = 3 * 40;
    let qkv = fill(70 * pitch, 13, -127, 127);
    let (mut kp, mut vp) = (PackedWeights::default(), PackedWeights::default());
    for (rows, hd, off) in [(70, 40, 40), (13, 10, 7), (1, 3, 0), (65, 33, 80), (5, 40, 2 * 40)] {
        let src = &qkv[off..];
        kp.repack_strided(src, rows, hd, pitch).unwrap();
        vp.repack_transposed_strided(src, rows, hd, pitch).unwrap();
        assert_eq!(kp, PackedWeights::new_strided(src, rows, hd, pitch).unwrap(), "K rows {rows} hd {hd}");
        assert_eq!(vp, PackedWeights::new_transposed_strided(src, rows, hd, pitch).unwrap(), "V rows {rows} hd {hd}");
    }
    assert!(matches!(kp.repack_strided(&qkv[..10], 2, 5, 40), Err(GemmError::Shape { .. })));
}

#[test]
fn peak_loops_do_the_work_they_are_credited_with() {
    for isa in simd_isas() {
        let (got, want) = bench::peak_checksum(isa, 1000).unwrap();
        assert_eq!(got, want, "{isa}");
        assert!(bench::peak_gmacs(isa, 1000, 1).unwrap() > 0.0);
    }
    assert_eq!(bench::peak_gmacs(Isa::Scalar, 10, 1), None);
}

#[test]
fn gemm_timing_reports_the_shape() {
    for isa in Isa::available() {
        let t = bench::time_gemm(isa, "tiny", 3, 5, 7, 0, 2).unwrap();
        assert_eq!((t.m, t.k, t.n, t.runs), (3, 5, 7, 2));
        assert!(t.min_us <= t.median_us && t.gmacs_best >= t.gmacs_median);
    }
}

#[test]
fn isa_names_round_trip() {
    for isa in Isa::ALL {
        assert_eq!(Isa::from_name(isa.name()), Some(isa));
    }
    assert_eq!(Isa::from_name("sdot"), None);
}

/// A scalar model of each SIMD kernel that reads the packed operands exactly as the
/// kernel does (lane by lane). It checks the packing, the VNNI offset correction and the
/// NEON int16 pair bound on every host, including ones that cannot run the kernel.
fn emulate(isa: Isa, m: usize, a: &[i8], w: &PackedWeights) -> Vec<i32> {
    let (n, k, kp) = (w.n, w.k, w.kp);
    let mut out = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = match isa {
                Isa::Scalar => (0..k).map(|t| a[i * k + t] as i32 * w.data[j * k + t] as i32).sum(),
                Isa::Avx2 => {
                    let mut ap = vec![-1i16; 3]; // stale contents must not leak through
                    pack_a_avx2(a, m, k, kp, &mut ap);
                    assert_eq!(ap.len(), m * kp);
                    let (blk, h, c) = (j / 16, (j % 16) / 8, j % 8);
                    (0..kp / 2)
                        .map(|q| {
                            // vpmaddwd: one int32 lane = two int16 products.
                            (0..2)
                                .map(|t| {
                                    ap[i * kp + 2 * q + t] as i32
                                        * w.data[blk * kp * 16 + q * 32 + h * 16 + c * 2 + t] as i32
                                })
                                .sum::<i32>()
                        })
                        .sum()
                }
                Isa::Avx512Vnni => {
                    let mut ap = vec![7u8; 5]; // stale contents must not leak through
                    pack_a_vnni(a, m, k, kp, &mut ap);
                    assert_eq!(ap.len(), m * kp);
                    let (blk, h, c) = (j / 32, (j % 32) / 16, j % 16);
                    let biased: i32 = (0..kp / 4)
                        .map(|q| {
                            // vpdpbusd: u8 × s8, four per int32 lane.
                            (0..4)
                                .map(|t| {
                                    ap[i * kp + 4 * q + t] as i32
                                        * w.data[blk * kp * 32 + q * 128 + h * 64 + c * 4 + t] as i32
                                })
                                .sum::<i32>()
                        })
                        .fold(0i32, |acc, v| acc.wrapping_add(v));
                    biased.wrapping_sub(w.corr[j])
                }
                Isa::Neon => {
                    let ap = pack_a_neon(a, m, k, kp);
                    let at = |buf: &[i8], r: usize, t: usize| {
                        buf[(r / 4) * kp * 4 + (t / 16) * 64 + (r % 4) * 16 + t % 16] as i32
                    };
                    let mut acc = 0i32;
                    for q in 0..kp / 16 {
                        for lane in 0..8 {
                            // smull + smlal2: lanes l and l + 8 share one int16.
                            let (t0, t1) = (16 * q + lane, 16 * q + lane + 8);
                            let p = at(&ap, i, t0) * at(&w.data, j, t0) + at(&ap, i, t1) * at(&w.data, j, t1);
                            assert!(i16::try_from(p).is_ok(), "int16 pair overflow {p}");
                            acc += p;
                        }
                    }
                    acc
                }
            };
        }
    }
    out
}

#[test]
fn every_layout_emulated_matches_the_reference() {
    for (m, k, n) in [(1, 1, 1), (5, 17, 33), (9, 64, 65), (3, 129, 7), (2, 200, 40)] {
        for (lo, hi) in [(-128, 127), (-128, -128), (127, 127)] {
            let a = fill(m * k, (m * k) as u64, lo, hi);
            let w = fill(n * k, (n + k) as u64, -127, 127);
            let want = reference(m, k, n, &a, &w);
            for isa in Isa::ALL {
                let packed = PackedWeights::pack_layout(isa, n, k, |j, t| w[j * k + t]).unwrap();
                assert_eq!(emulate(isa, m, &a, &packed), want, "{isa} m={m} k={k} n={n}");
            }
        }
    }
}

fn operands() -> impl Strategy<Value = (usize, usize, usize, Vec<i8>, Vec<i8>)> {
    (1usize..24, 0usize..200, 1usize..70).prop_flat_map(|(m, k, n)| {
        (
            Just(m),
            Just(k),
            Just(n),
            prop::collection::vec(any::<i8>(), m * k),
            prop::collection::vec(-127i8..=127, n * k),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn simd_kernels_are_bit_exact((m, k, n, a, w) in operands()) {
        let want = reference(m, k, n, &a, &w);
        for isa in simd_isas() {
            let mut out = vec![0; m * n];
            gemm_i8_with(isa, m, k, n, &a, &w, &mut out).unwrap();
            prop_assert_eq!(&out, &want, "{} m={} k={} n={}", isa, m, k, n);
        }
    }

    #[test]
    fn emulated_layouts_are_bit_exact((m, k, n, a, w) in operands()) {
        let want = reference(m, k, n, &a, &w);
        for isa in [Isa::Avx2, Isa::Avx512Vnni, Isa::Neon] {
            let packed = PackedWeights::pack_layout(isa, n, k, |j, t| w[j * k + t]).unwrap();
            prop_assert_eq!(&emulate(isa, m, &a, &packed), &want, "{} m={} k={} n={}", isa, m, k, n);
        }
    }

    #[test]
    fn packed_weights_reused_across_inputs((m, k, n, a, w) in operands(), seed in any::<u64>()) {
        let a2 = fill(m * k, seed, -128, 127);
        for isa in Isa::available() {
            let packed = PackedWeights::with_isa(isa, &w, n, k).unwrap();
            for a in [&a, &a2] {
                let mut out = vec![0; m * n];
                gemm_i8_packed(m, a, &packed, &mut out).unwrap();
                prop_assert_eq!(out, reference(m, k, n, a, &w));
            }
        }
    }
}

/// The row and column packers (every constructor) put each element where the
/// element-at-a-time reference packing puts it, for every layout this CPU runs, across
/// shapes that leave partial k-groups and channel blocks.
#[test]
fn fast_packers_match_the_element_packing() {
    for isa in Isa::available() {
        // (The VNNI packers transpose blocks when k is a multiple of 64 (rows) or n of 16
        // (columns).)
        for (n, k) in [
            (1, 1),
            (3, 5),
            (16, 32),
            (17, 33),
            (21, 37),
            (64, 197),
            (197, 64),
            (5, 64),
            (33, 128),
            (100, 64),
            (32, 9),
            (48, 1),
        ] {
            let w = fill(n * k, (n * 31 + k) as u64, -127, 127);
            let want = PackedWeights::pack_layout(isa, n, k, |j, t| w[j * k + t]).unwrap();
            assert_eq!(PackedWeights::with_isa(isa, &w, n, k).unwrap(), want, "{isa} rows {n}x{k}");
            let mut w_t = vec![0i8; k * n];
            for j in 0..n {
                for t in 0..k {
                    w_t[t * n + j] = w[j * k + t];
                }
            }
            let cols = PackedWeights::pack_cols(isa, n, k, |t| &w_t[t * n..(t + 1) * n]).unwrap();
            assert_eq!(cols, want, "{isa} cols {n}x{k}");
        }
    }
}

#[test]
fn packers_refuse_minus_128_with_its_position() {
    // Shapes the VNNI packers transpose in blocks (k a multiple of 64 for rows, n of 16
    // for columns) and others.
    for (n, k, j, t) in [(5, 64, 3, 60), (48, 128, 37, 70), (16, 9, 15, 8)] {
        let mut w = fill(n * k, 3, -127, 127);
        w[j * k + t] = i8::MIN;
        let mut w_t = vec![0i8; k * n];
        for jj in 0..n {
            for tt in 0..k {
                w_t[tt * n + jj] = w[jj * k + tt];
            }
        }
        for isa in Isa::available() {
            let got = PackedWeights::with_isa(isa, &w, n, k).unwrap_err();
            assert_eq!(got, GemmError::WeightRange { row: j, col: t }, "{isa} rows {n}x{k}");
            let got = PackedWeights::pack_cols(isa, n, k, |tt| &w_t[tt * n..(tt + 1) * n]).unwrap_err();
            assert_eq!(got, GemmError::WeightRange { row: j, col: t }, "{isa} cols {n}x{k}");
        }
    }
    let (n, k) = (5, 7);
    let mut w = fill(n * k, 3, -127, 127);
    w[3 * k + 4] = i8::MIN;
    assert_eq!(PackedWeights::new(&w, n, k).unwrap_err(), GemmError::WeightRange { row: 3, col: 4 });
    let mut w_t = vec![0i8; k * n];
    for j in 0..n {
        for t in 0..k {
            w_t[t * n + j] = w[j * k + t];
        }
    }
    assert_eq!(PackedWeights::new_transposed(&w_t, k, n).unwrap_err(), GemmError::WeightRange { row: 3, col: 4 });
}

/// Bias values in the range the epilogues take (|bias| ≤ 2^30), the extremes included.
fn bias_value() -> impl Strategy<Value = i32> {
    prop_oneof![-5000i32..5000, -(1i32 << 30)..=(1 << 30), Just(1 << 30), Just(-(1 << 30)), Just(0)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    // The GEMM with its epilogue (fused into the tiles on AVX-512 VNNI when the channels
    // are groups of 16) equals the reference GEMM then the generic epilogue, for the int8
    // requantisation and the residual add, on every kernel this CPU has, for any shapes
    // (multiples of 16 and not), weights, activations, biases, multipliers and residuals.
    #[test]
    fn fused_gemm_equals_gemm_then_epilogue(
        (m, k, n, a, w, bias, requant, x0) in
            (1usize..20, 0usize..150, prop_oneof![Just(16usize), Just(32), Just(48), Just(80), 1usize..70])
            .prop_flat_map(|(m, k, n)| (
                Just(m), Just(k), Just(n),
                prop::collection::vec(any::<i8>(), m * k),
                prop::collection::vec(-127i8..=127, n * k),
                prop::collection::vec(bias_value(), n),
                prop::collection::vec(crate::kernels::strategies::any_multiplier(), n),
                prop::collection::vec(any::<i16>(), m * n),
            )),
        rescale in crate::kernels::strategies::any_multiplier(),
    ) {
        let acc = reference(m, k, n, &a, &w);
        let mut want = vec![0i8; m * n];
        crate::kernels::epilogue::requant_i8_generic(&acc, &bias, &requant, &mut want);
        let mut want_x = x0.clone();
        crate::kernels::epilogue::residual_generic(&acc, &bias, &requant, rescale, &mut want_x);
        for isa in std::iter::once(Isa::Scalar).chain(simd_isas()) {
            let packed = PackedWeights::with_isa(isa, &w, n, k).unwrap();
            let mut got = vec![i8::MIN; m * n];
            gemm_i8_fused_then(m, &a, &packed, &bias, &requant, Epilogue::RequantI8(&mut got), None, &mut Vec::new()).unwrap();
            prop_assert_eq!(&got, &want, "{} m={} k={} n={}", isa, m, k, n);
            let mut x = x0.clone();
            let e = Epilogue::Residual { x: &mut x, rescale };
            gemm_i8_fused_then(m, &a, &packed, &bias, &requant, e, None, &mut Vec::new()).unwrap();
            prop_assert_eq!(&x, &want_x, "{} residual m={} k={} n={}", isa, m, k, n);
        }
    }
}

#[test]
fn fused_gemm_refuses_wrong_sizes() {
    let w = PackedWeights::new(&fill(32 * 8, 1, -127, 127), 32, 8).unwrap();
    let a = fill(3 * 8, 2, -127, 127);
    let ok_m = vec![Multiplier { m: 1 << 30, shift: 31 }; 32];
    let mut out = vec![0i8; 3 * 32];
    let mut acc = Vec::new();
    assert!(matches!(
        gemm_i8_fused_then(3, &a, &w, &[0; 31], &ok_m, Epilogue::RequantI8(&mut out), None, &mut acc),
        Err(GemmError::Shape { what: "bias", .. })
    ));
    assert!(matches!(
        gemm_i8_fused_then(3, &a, &w, &[0; 32], &ok_m[..30], Epilogue::RequantI8(&mut out), None, &mut acc),
        Err(GemmError::Shape { what: "requant", .. })
    ));
    assert!(matches!(
        gemm_i8_fused_then(3, &a, &w, &[0; 32], &ok_m, Epilogue::RequantI8(&mut out[..95]), None, &mut acc),
        Err(GemmError::Shape { what: "out", .. })
    ));
}
