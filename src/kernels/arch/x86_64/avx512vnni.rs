//! int8 GEMM with AVX-512 VNNI: `vpdpbusd` multiplies unsigned by signed bytes, four per
//! int32 lane, without saturation. A is offset by 128 (`a ^ 0x80` = `a + 128` as u8), so
//! `Σ (a + 128)·w = Σ a·w + 128·Σ w`; the per-channel `128·Σ w` is precomputed at packing
//! and subtracted. Exact: the true result fits int32 (k ≤ 65536), and int32 addition wraps
//! modulo 2^32, so even an intermediate wrap would cancel.
//!
//! Packed operands (made by `kernels::int8`):
//! - A: `[m][kp]` u8 (`a + 128`), `kp` a multiple of [`KG`];
//! - W: per block of [`NR`] output channels, per k-quad `q`, 128 bytes
//!   `[half 0..2][channel 0..16][t 0..4] = w[block·32 + half·16 + channel][4q + t]`.
#![deny(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use crate::kernels::int8::Epilogue;
use crate::quant::Multiplier;

pub const NR: usize = 32;
pub const MR: usize = 8;
pub const KG: usize = 4;

pub fn available() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni")
}

/// `out[m×n] = A · Wᵀ` on packed operands; `corr[j] = 128 · Σ_k w[j][k]`. `then`: bytes
/// the next GEMM starts with (its first weight block), fetched while this one computes
/// its last block (a hint: prefetches change no result).
#[allow(clippy::too_many_arguments)]
pub fn gemm(m: usize, n: usize, kp: usize, a: &[u8], w: &[i8], corr: &[i32], out: &mut [i32], then: &[i8]) {
    assert!(available(), "avx512vnni kernel called on a CPU without AVX-512 VNNI");
    let np = n.div_ceil(NR) * NR;
    assert!(kp.is_multiple_of(KG), "avx512vnni: kp {kp} is not a multiple of {KG}");
    assert_eq!(a.len(), m * kp, "avx512vnni: packed A size");
    assert_eq!(w.len(), np * kp, "avx512vnni: packed W size");
    assert!(corr.len() >= n, "avx512vnni: column corrections");
    assert_eq!(out.len(), m * n, "avx512vnni: output size");
    // SAFETY: AVX-512F and VNNI are present (asserted above with run-time detection).
    unsafe { gemm_vnni(m, n, kp, a, w, corr, out, then) }
}

#[target_feature(enable = "avx512f,avx512vnni")]
#[allow(clippy::too_many_arguments)]
fn gemm_vnni(m: usize, n: usize, kp: usize, a: &[u8], w: &[i8], corr: &[i32], out: &mut [i32], then: &[i8]) {
    let block = (kp * NR).max(1);
    let blocks = n.div_ceil(NR);
    let tiles = m.div_ceil(MR).max(1);
    for (jb, wblock) in w.chunks_exact(block).enumerate().take(blocks) {
        let j0 = jb * NR;
        let cols = NR.min(n - j0);
        let corr = &corr[j0..j0 + cols];
        let next = fetched_ahead(w, block, jb, blocks, then);
        let mut i0 = 0;
        while i0 < m {
            prefetch_share(next, i0 / MR, tiles);
            let rows = MR.min(m - i0);
            let a_rows = &a[i0 * kp..(i0 + rows) * kp];
            let out = &mut out[i0 * n + j0..];
            match rows {
                8 => tile::<8>(a_rows, kp, wblock, corr, n, out),
                7 => tile::<7>(a_rows, kp, wblock, corr, n, out),
                6 => tile::<6>(a_rows, kp, wblock, corr, n, out),
                5 => tile::<5>(a_rows, kp, wblock, corr, n, out),
                4 => tile::<4>(a_rows, kp, wblock, corr, n, out),
                3 => tile::<3>(a_rows, kp, wblock, corr, n, out),
                2 => tile::<2>(a_rows, kp, wblock, corr, n, out),
                _ => tile::<1>(a_rows, kp, wblock, corr, n, out),
            }
            i0 += rows;
        }
    }
}

/// [`gemm`] with `out`'s epilogue done on each tile in registers, so that the int32
/// accumulators are never stored: the int8 requantisation
/// (`out[r][j] = sat8(requant[j].apply(acc + bias[j]))`) or the residual add
/// (`x[r][j] = residual_add(acc + bias[j], requant[j], x[r][j], rescale)`), with the lane
/// operations of the stand-alone AVX-512 epilogues. `n` a multiple of 16.
#[allow(clippy::too_many_arguments)]
pub fn gemm_fused(
    m: usize,
    n: usize,
    kp: usize,
    a: &[u8],
    w: &[i8],
    corr: &[i32],
    bias: &[i32],
    requant: &[Multiplier],
    out: Epilogue,
    then: &[i8],
) {
    assert!(available() && super::epilogue::avx512_available(), "gemm_fused without AVX-512 VNNI/BW/DQ/VL");
    let np = n.div_ceil(NR) * NR;
    assert!(n.is_multiple_of(16), "gemm_fused: {n} channels are not groups of 16");
    assert!(kp.is_multiple_of(KG), "avx512vnni: kp {kp} is not a multiple of {KG}");
    assert_eq!(a.len(), m * kp, "avx512vnni: packed A size");
    assert_eq!(w.len(), np * kp, "avx512vnni: packed W size");
    assert!(corr.len() >= n && bias.len() == n && requant.len() == n, "gemm_fused: per-channel values");
    assert_eq!(out.len(), m * n, "avx512vnni: output size");
    // SAFETY: AVX-512 F/BW/DQ/VL and VNNI are present (asserted above with run-time
    // detection); every access is a bounds-checked slice (see the function).
    unsafe { gemm_fused_vnni(m, n, kp, a, w, corr, bias, requant, out, then) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
fn gemm_fused_vnni(
    m: usize,
    n: usize,
    kp: usize,
    a: &[u8],
    w: &[i8],
    corr: &[i32],
    bias: &[i32],
    requant: &[Multiplier],
    mut out: Epilogue,
    then: &[i8],
) {
    use super::epilogue::{requant16_lanes, residual16_lanes, ResidualRescale};
    let chans = super::epilogue::channels16(requant);
    let (lo, hi) = (_mm512_set1_epi64(-127), _mm512_set1_epi64(127));
    let rescale = match &out {
        Epilogue::Residual { rescale, .. } => ResidualRescale::new(*rescale),
        // Unused by the requantisation.
        Epilogue::RequantI8(_) => ResidualRescale::new(Multiplier { m: 0, shift: 0 }),
    };
    let block = (kp * NR).max(1);
    let blocks = n.div_ceil(NR);
    let tiles = m.div_ceil(MR).max(1);
    for (jb, wblock) in w.chunks_exact(block).enumerate().take(blocks) {
        let j0 = jb * NR;
        let halves = (n - j0).min(NR) / 16;
        // bias − correction per channel of this block (the accumulators carry +corr);
        // the second half's is unused when the block has only 16 channels.
        let (c, b) = (&corr[j0..j0 + 16 * halves], &bias[j0..j0 + 16 * halves]);
        // SAFETY: `c` and `b` hold 16·halves i32 (64 bytes per half); loadu has no
        // alignment requirement.
        let cb = unsafe {
            let sub = |h: usize| {
                _mm512_sub_epi32(
                    _mm512_loadu_si512(b.as_ptr().add(16 * h).cast()),
                    _mm512_loadu_si512(c.as_ptr().add(16 * h).cast()),
                )
            };
            [sub(0), if halves == 2 { sub(1) } else { _mm512_setzero_si512() }]
        };
        let ch = [&chans[j0 / 16], &chans[j0 / 16 + halves - 1]];
        let next = fetched_ahead(w, block, jb, blocks, then);
        let mut i0 = 0;
        while i0 < m {
            prefetch_share(next, i0 / MR, tiles);
            let rows = MR.min(m - i0);
            let a_rows = &a[i0 * kp..(i0 + rows) * kp];
            // Half h (16 channels) of row i of the output, from its accumulators `v`.
            macro_rules! finish {
                ($i:expr, $h:expr, $v:expr) => {{
                    let (h, o) = ($h, $i * n + j0 + 16 * $h);
                    let v = _mm512_add_epi32($v, cb[h]);
                    match &mut out {
                        Epilogue::RequantI8(dst) => {
                            let dst = &mut dst[o..o + 16];
                            let q = requant16_lanes(v, ch[h], lo, hi);
                            // SAFETY: `dst` holds 16 bytes; storeu has no alignment requirement.
                            unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(q)) };
                        }
                        Epilogue::Residual { x, .. } => {
                            let xs = &mut x[o..o + 16];
                            // SAFETY: `xs` holds 16 int16 (32 bytes); loadu/storeu have no
                            // alignment requirement.
                            unsafe {
                                let r = _mm512_cvtepi16_epi32(_mm256_loadu_si256(xs.as_ptr().cast()));
                                _mm256_storeu_si256(xs.as_mut_ptr().cast(), residual16_lanes(v, r, ch[h], &rescale));
                            }
                        }
                    }
                }};
            }
            macro_rules! run {
                ($r:literal) => {
                    if halves == 2 {
                        let acc = kernel::<$r>(a_rows, kp, wblock);
                        for r in 0..$r {
                            finish!(i0 + r, 0, acc[r][0]);
                            finish!(i0 + r, 1, acc[r][1]);
                        }
                    } else {
                        let acc = kernel_half::<$r>(a_rows, kp, wblock);
                        for r in 0..$r {
                            finish!(i0 + r, 0, acc[r]);
                        }
                    }
                };
            }
            match rows {
                8 => run!(8),
                7 => run!(7),
                6 => run!(6),
                5 => run!(5),
                4 => run!(4),
                3 => run!(3),
                2 => run!(2),
                _ => run!(1),
            }
            i0 += rows;
        }
    }
}

/// Packs the `n × k` matrix with rows `row(j)` (`k` a multiple of 64) into the layout above
/// (`data`: `np·k` bytes, zeroed padding channels stay 0) and sets `corr[j] = 128·Σ row(j)`:
/// per 16 channels and 64 columns, a 16 × 16 transpose of dwords (one k-quad of 16
/// channels per output vector), the row sums by `vpdpbusd` of ones with those vectors.
/// `false` (the packing incomplete) if a value is −128, which the kernel's correction
/// cannot take; the caller finds its position.
pub fn pack_rows_k64<'a>(
    n: usize,
    k: usize,
    row: impl Fn(usize) -> &'a [i8],
    data: &mut [i8],
    corr: &mut [i32],
) -> bool {
    assert!(available() && is_x86_feature_detected!("avx512bw"), "pack_rows_k64 without AVX-512 VNNI/BW");
    assert!(k.is_multiple_of(64) && data.len() == n.div_ceil(NR) * NR * k && corr.len() == n, "pack_rows_k64: sizes");
    // SAFETY: AVX-512 F/BW and VNNI are present (asserted above); every access is a
    // bounds-checked slice (see the function).
    unsafe { pack_rows_k64_avx512(n, k, row, data, corr) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn pack_rows_k64_avx512<'a>(
    n: usize,
    k: usize,
    row: impl Fn(usize) -> &'a [i8],
    data: &mut [i8],
    corr: &mut [i32],
) -> bool {
    let kq = k / KG;
    let (ones, min) = (_mm512_set1_epi8(1), _mm512_set1_epi8(i8::MIN));
    let mut bad: __mmask64 = 0;
    for j0 in (0..n).step_by(16) {
        let (jb, h) = (j0 / NR, j0 % NR / 16);
        let mut sums = _mm512_setzero_si512();
        for kc in 0..k / 64 {
            let r: [__m512i; 16] =
                std::array::from_fn(|i| match (j0 + i < n).then(|| &row(j0 + i)[kc * 64..kc * 64 + 64]) {
                    Some(v) => {
                        // SAFETY: `v` holds 64 bytes; loadu has no alignment requirement.
                        let x = unsafe { _mm512_loadu_si512(v.as_ptr().cast()) };
                        bad |= _mm512_cmpeq_epi8_mask(x, min);
                        x
                    }
                    _ => _mm512_setzero_si512(),
                });
            for (q, v) in transpose16x16_epi32(r).into_iter().enumerate() {
                sums = _mm512_dpbusd_epi32(sums, ones, v);
                let at = ((jb * kq + kc * 16 + q) * NR + h * 16) * KG;
                let dst = &mut data[at..at + 64];
                // SAFETY: `dst` holds 64 bytes; storeu has no alignment requirement.
                unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), v) };
            }
        }
        set_corrections(sums, &mut corr[j0..(j0 + 16).min(n)]);
    }
    bad == 0
}

/// [`pack_rows_k64`] for the transpose: packs the `n × k` matrix whose column `t` is
/// `col(t)` (`n` a multiple of 16; e.g. one head's `V` for `P·V`, rows of `V` as columns)
/// and sets `corr`. Per k-quad and 16 channels, byte and word interleaves of the quad's
/// four columns give the 64 packed bytes; the sums by `vpdpbusd` of ones with them.
/// `false` if a value is −128.
pub fn pack_cols_n16<'a>(
    n: usize,
    k: usize,
    col: impl Fn(usize) -> &'a [i8],
    data: &mut [i8],
    corr: &mut [i32],
) -> bool {
    assert!(available() && is_x86_feature_detected!("avx512bw"), "pack_cols_n16 without AVX-512 VNNI/BW");
    let kq = k.div_ceil(KG);
    assert!(
        n.is_multiple_of(16) && data.len() == n.div_ceil(NR) * NR * kq * KG && corr.len() == n,
        "pack_cols_n16: sizes"
    );
    // SAFETY: AVX-512 F/BW and VNNI are present (asserted above); every access is a
    // bounds-checked slice (see the function).
    unsafe { pack_cols_n16_avx512(n, k, col, data, corr) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn pack_cols_n16_avx512<'a>(
    n: usize,
    k: usize,
    col: impl Fn(usize) -> &'a [i8],
    data: &mut [i8],
    corr: &mut [i32],
) -> bool {
    let kq = k.div_ceil(KG);
    let (ones, min) = (_mm512_set1_epi8(1), _mm_set1_epi8(i8::MIN));
    let mut sums = vec![_mm512_setzero_si512(); n / 16];
    let mut bad = 0u16;
    for q in 0..kq {
        let cols: [&[i8]; KG] = std::array::from_fn(|t| if KG * q + t < k { &col(KG * q + t)[..n] } else { &[] });
        for (hb, sum) in sums.iter_mut().enumerate() {
            let c0 = 16 * hb;
            let x: [__m128i; KG] = std::array::from_fn(|t| match cols[t].get(c0..c0 + 16) {
                Some(v) => {
                    // SAFETY: `v` holds 16 bytes; loadu has no alignment requirement.
                    let x = unsafe { _mm_loadu_si128(v.as_ptr().cast()) };
                    bad |= _mm_cmpeq_epi8_mask(x, min);
                    x
                }
                None => _mm_setzero_si128(),
            });
            let (lo01, hi01) = (_mm_unpacklo_epi8(x[0], x[1]), _mm_unpackhi_epi8(x[0], x[1]));
            let (lo23, hi23) = (_mm_unpacklo_epi8(x[2], x[3]), _mm_unpackhi_epi8(x[2], x[3]));
            // Channels 0-3, 4-7, 8-11, 12-15 of this half, four bytes (the quad) each.
            let v = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_set_m128i(
                    _mm_unpackhi_epi16(lo01, lo23),
                    _mm_unpacklo_epi16(lo01, lo23),
                )),
                _mm256_set_m128i(_mm_unpackhi_epi16(hi01, hi23), _mm_unpacklo_epi16(hi01, hi23)),
            );
            *sum = _mm512_dpbusd_epi32(*sum, ones, v);
            let at = ((c0 / NR * kq + q) * NR + c0 % NR) * KG;
            let dst = &mut data[at..at + 64];
            // SAFETY: `dst` holds 64 bytes; storeu has no alignment requirement.
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), v) };
        }
    }
    for (hb, sum) in sums.iter().enumerate() {
        set_corrections(*sum, &mut corr[16 * hb..16 * hb + 16]);
    }
    bad == 0
}

/// `corr[c] = 128 · sums[c]` for the first `corr.len() ≤ 16` lanes of `sums` (the
/// channels' weight sums).
#[target_feature(enable = "avx512f")]
#[inline]
fn set_corrections(sums: __m512i, corr: &mut [i32]) {
    let mut lanes = [0i32; 16];
    // SAFETY: `lanes` holds 16 i32 (64 bytes); storeu has no alignment requirement.
    unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), sums) };
    for (c, s) in corr.iter_mut().zip(lanes) {
        *c = 128 * s;
    }
}

/// `out[q]` lane `i` = dword `q` of `r[i]`: the 16 × 16 dword transpose (unpack pairs of
/// dwords, then of qwords, within 128-bit lanes; then two rounds of 128-bit lane shuffles).
#[target_feature(enable = "avx512f")]
#[inline]
fn transpose16x16_epi32(r: [__m512i; 16]) -> [__m512i; 16] {
    // t[2p], t[2p+1]: rows 2p, 2p+1 interleaved (dwords 4L, 4L+1 | 4L+2, 4L+3 per lane L).
    let t: [__m512i; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_epi32(a, b)
        } else {
            _mm512_unpackhi_epi32(a, b)
        }
    });
    // u[4g + s], lane L: dword 4L + s of rows 4g .. 4g + 4.
    let u: [__m512i; 16] = std::array::from_fn(|i| {
        let (g, s) = (i / 4, i % 4);
        let (a, b) = (t[4 * g + s / 2], t[4 * g + 2 + s / 2]);
        if s % 2 == 0 {
            _mm512_unpacklo_epi64(a, b)
        } else {
            _mm512_unpackhi_epi64(a, b)
        }
    });
    // out[4L + s] = lanes L of u[s], u[4 + s], u[8 + s], u[12 + s].
    std::array::from_fn(|q| {
        let (l, s) = (q / 4, q % 4);
        let (v, x) = if l < 2 {
            (_mm512_shuffle_i32x4::<0x44>(u[s], u[4 + s]), _mm512_shuffle_i32x4::<0x44>(u[8 + s], u[12 + s]))
        } else {
            (_mm512_shuffle_i32x4::<0xEE>(u[s], u[4 + s]), _mm512_shuffle_i32x4::<0xEE>(u[8 + s], u[12 + s]))
        };
        if l % 2 == 0 {
            _mm512_shuffle_i32x4::<0x88>(v, x)
        } else {
            _mm512_shuffle_i32x4::<0xDD>(v, x)
        }
    })
}

/// What a GEMM fetches while it computes weight block `jb` of `blocks`: the next block
/// (the weights of a layer come from L3 once per image), or after the last block `then`,
/// the next GEMM's first (which would otherwise start cold).
fn fetched_ahead<'a>(w: &'a [i8], block: usize, jb: usize, blocks: usize, then: &'a [i8]) -> &'a [i8] {
    w.get((jb + 1) * block..(jb + 2) * block).filter(|_| jb + 1 < blocks).unwrap_or(then)
}

/// Tile `t` of `tiles`' share of the cache lines of `next`, fetched into L1 (the whole of
/// `next` over the tiles of one block).
#[inline]
fn prefetch_share(next: &[i8], t: usize, tiles: usize) {
    let lines = next.len() / 64;
    let per = lines.div_ceil(tiles.max(1));
    for l in t * per..((t + 1) * per).min(lines) {
        // SAFETY: byte 64·l of `next` is in bounds (l < next.len() / 64); a prefetch never
        // faults and changes no state visible to the program.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(next.as_ptr().add(64 * l).cast()) };
    }
}

/// One packed tile of a transposed operand: `out[4c + t] = rows[t][c]` for 32 channels
/// `c` and the 4 rows `t` of a k-quad (the `[half][channel][t]` order above), by byte and
/// word interleaves (AVX2, which every VNNI CPU has).
pub fn transpose_quad(rows: [&[i8]; 4], out: &mut [i8]) {
    assert!(rows.iter().all(|r| r.len() >= NR) && out.len() == NR * KG, "transpose_quad: sizes");
    assert!(is_x86_feature_detected!("avx2"), "transpose_quad without AVX2");
    // SAFETY: AVX2 is present (asserted above); the loads read 32 bytes of each row and
    // the stores write the 128 bytes of `out` (lengths asserted above).
    unsafe { transpose_quad_avx2(rows, out) }
}

#[target_feature(enable = "avx2")]
fn transpose_quad_avx2(rows: [&[i8]; 4], out: &mut [i8]) {
    // SAFETY: each row holds at least 32 bytes (asserted by the caller); loadu has no
    // alignment requirement.
    let r = rows.map(|row| unsafe { _mm256_loadu_si256(row.as_ptr().cast()) });
    // Per 128-bit lane (channels 0..16 | 16..32): bytes of rows 0,1 and 2,3 interleaved,
    // then the pairs interleaved into quads: A = ch 0-3 | 16-19, B = 4-7 | 20-23,
    // C = 8-11 | 24-27, D = 12-15 | 28-31.
    let (lo01, hi01) = (_mm256_unpacklo_epi8(r[0], r[1]), _mm256_unpackhi_epi8(r[0], r[1]));
    let (lo23, hi23) = (_mm256_unpacklo_epi8(r[2], r[3]), _mm256_unpackhi_epi8(r[2], r[3]));
    let (a, b) = (_mm256_unpacklo_epi16(lo01, lo23), _mm256_unpackhi_epi16(lo01, lo23));
    let (c, d) = (_mm256_unpacklo_epi16(hi01, hi23), _mm256_unpackhi_epi16(hi01, hi23));
    let parts = [
        _mm256_permute2x128_si256::<0x20>(a, b),
        _mm256_permute2x128_si256::<0x20>(c, d),
        _mm256_permute2x128_si256::<0x31>(a, b),
        _mm256_permute2x128_si256::<0x31>(c, d),
    ];
    for (i, v) in parts.into_iter().enumerate() {
        // SAFETY: bytes 32i .. 32i + 32 of `out` (128 bytes) are in bounds; storeu has no
        // alignment requirement.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(32 * i).cast(), v) };
    }
}

/// One `R × cols` output tile (`cols = corr.len() ≤ 32`): rows `r` of `out` start at
/// `r·n`. Goes from the registers to `out` with the correction subtracted, the last
/// partial 16 columns under a lane mask; a tile of at most 16 columns (the last column
/// block of most shapes, e.g. the 197 keys of a DeiT-T head) computes only those.
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
fn tile<const R: usize>(a: &[u8], kp: usize, w: &[i8], corr: &[i32], n: usize, out: &mut [i32]) {
    let cols = corr.len();
    assert!((1..=NR).contains(&cols), "avx512vnni: tile of {cols} columns");
    assert!(out.len() >= (R - 1) * n + cols, "avx512vnni: output tile out of bounds");
    // Lanes of the last 16-column half (`cols` is 1..=16 in it, or 17..=32 over both).
    let tail = (cols - 1) % 16 + 1;
    let k: __mmask16 = if tail == 16 { 0xffff } else { (1u16 << tail) - 1 };
    // SAFETY: the lanes set in `k` are the last `tail` of the `cols` values of `corr`
    // (masked-off lanes are not read); the first half, when there are two, is 16 values.
    let (c0, c1) = unsafe {
        let p = corr.as_ptr();
        if cols > 16 {
            (_mm512_loadu_si512(p.cast()), _mm512_maskz_loadu_epi32(k, p.add(16).cast()))
        } else {
            (_mm512_maskz_loadu_epi32(k, p.cast()), _mm512_setzero_si512())
        }
    };
    if cols <= 16 {
        for (r, acc) in kernel_half::<R>(a, kp, w).iter().enumerate() {
            // SAFETY: elements r·n .. r·n + cols of `out` are in bounds (asserted above for
            // r < R) and `k` covers exactly `cols` lanes; masked-off lanes are not written.
            unsafe { _mm512_mask_storeu_epi32(out.as_mut_ptr().add(r * n).cast(), k, _mm512_sub_epi32(*acc, c0)) };
        }
        return;
    }
    for (r, acc) in kernel::<R>(a, kp, w).iter().enumerate() {
        // SAFETY: elements r·n .. r·n + cols of `out` are in bounds (asserted above for
        // r < R): 16 from r·n, then the `tail` lanes of `k` from r·n + 16.
        unsafe {
            let p = out.as_mut_ptr().add(r * n);
            _mm512_storeu_si512(p.cast(), _mm512_sub_epi32(acc[0], c0));
            _mm512_mask_storeu_epi32(p.add(16).cast(), k, _mm512_sub_epi32(acc[1], c1));
        }
    }
}

/// One `R × 32` tile of biased sums `Σ_k (a[r][k] + 128) · w[c][k]`, in registers.
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
fn kernel<const R: usize>(a: &[u8], kp: usize, w: &[i8]) -> [[__m512i; 2]; R] {
    assert!(R <= MR && a.len() >= R * kp && w.len() >= kp * NR);
    let mut acc = [[_mm512_setzero_si512(); 2]; R];
    for q in 0..kp / 4 {
        // SAFETY: bytes q·128 .. q·128 + 128 of `w` are in bounds: q < kp/4 and
        // w.len() ≥ kp·32 (asserted above); loadu has no alignment requirement.
        let (w0, w1) = unsafe {
            let p = w.as_ptr().add(q * 128) as *const __m512i;
            (_mm512_loadu_si512(p), _mm512_loadu_si512(p.add(1)))
        };
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: bytes r·kp + 4q .. + 4 of `a` are in bounds (r < R, 4q + 3 < kp,
            // a.len() ≥ R·kp); read_unaligned has no alignment requirement.
            let quad = unsafe { (a.as_ptr().add(r * kp + 4 * q) as *const i32).read_unaligned() };
            let av = _mm512_set1_epi32(quad);
            acc[0] = _mm512_dpbusd_epi32(acc[0], av, w0);
            acc[1] = _mm512_dpbusd_epi32(acc[1], av, w1);
        }
    }
    acc
}

/// [`kernel`] for the first 16 channels of the block only (half 0 of each k-quad's 128
/// bytes).
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
fn kernel_half<const R: usize>(a: &[u8], kp: usize, w: &[i8]) -> [__m512i; R] {
    assert!(R <= MR && a.len() >= R * kp && w.len() >= kp * NR);
    let mut acc = [_mm512_setzero_si512(); R];
    for q in 0..kp / 4 {
        // SAFETY: bytes q·128 .. q·128 + 64 of `w` are in bounds (as in `kernel`).
        let w0 = unsafe { _mm512_loadu_si512(w.as_ptr().add(q * 128).cast()) };
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: as in `kernel`.
            let quad = unsafe { (a.as_ptr().add(r * kp + 4 * q) as *const i32).read_unaligned() };
            *acc = _mm512_dpbusd_epi32(*acc, _mm512_set1_epi32(quad), w0);
        }
    }
    acc
}

/// MACs per iteration of [`peak`]: 12 independent `vpdpbusd` (64 MACs each).
pub const PEAK_MACS_PER_ITER: u64 = 12 * 64;

/// The instruction-throughput ceiling of this kernel's inner step: `iters` rounds of 12
/// independent `vpdpbusd` chains on register operands (all bytes 1). Returns the sum of
/// all lanes (`PEAK_MACS_PER_ITER · iters`, wrapping) so the work cannot be elided.
pub fn peak(iters: u64) -> i32 {
    assert!(available(), "avx512vnni peak called on a CPU without AVX-512 VNNI");
    // SAFETY: AVX-512F and VNNI are present (asserted above with run-time detection).
    unsafe { peak_vnni(iters) }
}

#[target_feature(enable = "avx512f,avx512vnni")]
fn peak_vnni(iters: u64) -> i32 {
    let ones = _mm512_set1_epi8(std::hint::black_box(1));
    let mut acc = [_mm512_setzero_si512(); 12];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_dpbusd_epi32(*a, ones, ones);
        }
    }
    acc.iter().fold(0i32, |t, &a| t.wrapping_add(_mm512_reduce_add_epi32(a)))
}
