//! int8 × int8 → int32 GEMM for the integer path (`docs/integer-format.md` §6).
//!
//! `out[i, j] = Σ_k a[i, k] · w[j, k]` with `a` row-major `m × k` (activations) and `w` in
//! PyTorch's `[out, in]` layout (`n × k`). The result is the exact integer sum: every
//! kernel is bit-identical to [`gemm_i8_scalar`], the reference the tests hold them to.
//!
//! Operand contract: weights in [−127, 127] (the format's symmetric range; the NEON kernel
//! relies on it and packing checks it), activations any int8, `k ≤` [`MAX_K`] (so the
//! sum, and the sum plus an int32 bias of at most 2^30, fits int32).
//!
//! One kernel table is chosen at start-up ([`selected_isa`]): AVX-512 VNNI, else AVX2 on
//! x86-64; NEON (ARMv8.0 `smull`/`smlal2`/`sadalp`, no dotprod) on aarch64; else scalar.
//! `HEATVIT_GEMM_ISA=scalar|avx2|avx512vnni|neon` overrides the choice (for comparisons);
//! an ISA this CPU lacks is refused with a warning.
#![forbid(unsafe_code)]

use crate::quant::Multiplier;
use std::fmt;
use std::sync::OnceLock;

pub mod bench;

/// Deepest reduction: `65536 · 128 · 127 < 2^30`.
pub const MAX_K: usize = 1 << 16;

/// Why a GEMM cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GemmError {
    #[error("gemm_i8: {what} has {got} elements, expected {want} for m={m}, k={k}, n={n}")]
    Shape { what: &'static str, got: usize, want: usize, m: usize, k: usize, n: usize },
    #[error("gemm_i8: k = {k} exceeds {MAX_K}; the int32 accumulator could overflow")]
    TooDeep { k: usize },
    #[error("gemm_i8: weight [{row}, {col}] is −128; int8 weights must lie in [−127, 127] (re-quantise the model)")]
    WeightRange { row: usize, col: usize },
    #[error("gemm_i8: this CPU cannot run the {isa} kernel")]
    Unsupported { isa: Isa },
}

/// An instruction set with an int8 GEMM kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Isa {
    /// (The default only of an empty [`PackedWeights`], which `reset` replaces.)
    #[default]
    Scalar,
    Avx2,
    Avx512Vnni,
    Neon,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Neon];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
        }
    }

    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == name)
    }

    /// Whether this CPU can run the kernel (run-time detection).
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => super::arch::x86_64::avx2::available(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => super::arch::x86_64::avx512vnni::available(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => super::arch::aarch64::neon::available(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every kernel this CPU can run, best last.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The best kernel for this CPU.
    pub fn detect() -> Isa {
        [Isa::Avx512Vnni, Isa::Avx2, Isa::Neon].into_iter().find(|i| i.is_available()).unwrap_or(Isa::Scalar)
    }

    /// `(k granularity, output channels per packed block)` of the kernel's layout.
    fn layout(self) -> (usize, usize) {
        match self {
            Isa::Scalar => (1, 1),
            Isa::Avx2 => (2, 16),
            Isa::Avx512Vnni => (4, 32),
            Isa::Neon => (16, 4),
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kernel chosen for this process: detected once, logged once.
pub fn selected_isa() -> Isa {
    static SELECTED: OnceLock<Isa> = OnceLock::new();
    *SELECTED.get_or_init(|| {
        let detected = Isa::detect();
        let isa = match std::env::var("HEATVIT_GEMM_ISA") {
            Ok(name) => match Isa::from_name(&name) {
                Some(isa) if isa.is_available() => isa,
                _ => {
                    log::warn!("HEATVIT_GEMM_ISA={name}: not a kernel this CPU can run; using {detected}");
                    detected
                }
            },
            Err(_) => detected,
        };
        log::info!("int8 GEMM kernel: {isa} (available: {:?})", Isa::available());
        isa
    })
}

/// Weights packed once for one kernel's layout (`n × k` in, see the arch modules for
/// the packed order), with the per-channel `128 · Σ_k w` the VNNI kernel subtracts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackedWeights {
    isa: Isa,
    n: usize,
    k: usize,
    kp: usize,
    data: Vec<i8>,
    corr: Vec<i32>,
}

impl PackedWeights {
    /// The bytes of the first 32-channel block of VNNI-packed weights (what a GEMM on them
    /// reads first).
    #[cfg(target_arch = "x86_64")]
    fn first_vnni_block(&self) -> &[i8] {
        &self.data[..(self.kp * super::arch::x86_64::avx512vnni::NR).min(self.data.len())]
    }

    /// Packs `w` (`[n, k]`, PyTorch's `[out, in]`) for the [`selected_isa`].
    pub fn new(w: &[i8], n: usize, k: usize) -> Result<PackedWeights, GemmError> {
        Self::with_isa(selected_isa(), w, n, k)
    }

    /// Packs `w_t` given as `[k, n]` (e.g. `V` for `P·V`, where `Vᵀ` is the `[out, in]`
    /// operand) for the [`selected_isa`].
    pub fn new_transposed(w_t: &[i8], k: usize, n: usize) -> Result<PackedWeights, GemmError> {
        check_len("w", w_t.len(), k * n, 0, k, n)?;
        Self::pack_cols(selected_isa(), n, k, |t| &w_t[t * n..(t + 1) * n])
    }

    /// Packs the `[n, k]` matrix whose row `j` is `src[j·stride..j·stride + k]` (e.g. one
    /// head's `K` inside the fused `qkv` rows) for the [`selected_isa`], without copying
    /// it out first. The same result as [`Self::new`] on the gathered rows.
    pub fn new_strided(src: &[i8], n: usize, k: usize, stride: usize) -> Result<PackedWeights, GemmError> {
        check_strided("w", src.len(), n, k, stride)?;
        Self::pack_rows(selected_isa(), n, k, |j| &src[j * stride..j * stride + k])
    }

    /// Packs the transpose of the `[k, n]` matrix whose row `t` is
    /// `src[t·stride..t·stride + n]` (e.g. one head's `V` inside the fused `qkv` rows, for
    /// `P·V`) for the [`selected_isa`]. The same result as [`Self::new_transposed`] on the
    /// gathered rows.
    pub fn new_transposed_strided(src: &[i8], k: usize, n: usize, stride: usize) -> Result<PackedWeights, GemmError> {
        check_strided("w", src.len(), k, n, stride)?;
        Self::pack_cols(selected_isa(), n, k, |t| &src[t * stride..t * stride + n])
    }

    /// [`Self::new_strided`] into this value's storage, which is reused (no allocation
    /// once it is large enough: one head's K, packed per image and block).
    pub fn repack_strided(&mut self, src: &[i8], n: usize, k: usize, stride: usize) -> Result<(), GemmError> {
        check_strided("w", src.len(), n, k, stride)?;
        self.reset(selected_isa(), n, k)?;
        self.fill_rows_any(|j| &src[j * stride..j * stride + k])
    }

    /// [`Self::new_transposed_strided`] into this value's storage, which is reused.
    pub fn repack_transposed_strided(
        &mut self,
        src: &[i8],
        k: usize,
        n: usize,
        stride: usize,
    ) -> Result<(), GemmError> {
        check_strided("w", src.len(), k, n, stride)?;
        self.reset(selected_isa(), n, k)?;
        self.fill_cols_any(|t| &src[t * stride..t * stride + n])
    }

    /// Packs `w` (`[n, k]`) for a given kernel (tests and benchmarks compare kernels).
    pub fn with_isa(isa: Isa, w: &[i8], n: usize, k: usize) -> Result<PackedWeights, GemmError> {
        check_len("w", w.len(), n * k, 0, k, n)?;
        Self::pack_rows(isa, n, k, |j| &w[j * k..(j + 1) * k])
    }

    /// Packs the `[n, k]` matrix whose row `j` is `row(j)` (`k` elements).
    fn pack_rows<'a>(
        isa: Isa,
        n: usize,
        k: usize,
        row: impl Fn(usize) -> &'a [i8],
    ) -> Result<PackedWeights, GemmError> {
        let mut p = Self::empty(isa, n, k)?;
        p.fill_rows_any(row)?;
        Ok(p)
    }

    /// [`Self::fill_rows`] for this kernel's k-group.
    fn fill_rows_any<'a>(&mut self, row: impl Fn(usize) -> &'a [i8]) -> Result<(), GemmError> {
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512Vnni && self.k.is_multiple_of(64) && is_x86_feature_detected!("avx512bw") {
            let (n, k) = (self.n, self.k);
            if super::arch::x86_64::avx512vnni::pack_rows_k64(n, k, &row, &mut self.data, &mut self.corr) {
                return Ok(());
            }
            // A −128 somewhere: the element packing names it.
        }
        match self.isa.layout().0 {
            1 => self.fill_rows::<1>(row),
            2 => self.fill_rows::<2>(row),
            4 => self.fill_rows::<4>(row),
            16 => self.fill_rows::<16>(row),
            kg => unreachable!("k-group of {kg}"),
        }
    }

    /// [`Self::pack_rows`] for k-groups of `KG` (a constant, so that each group is one
    /// fixed-size move rather than a `memcpy` call or a byte loop).
    fn fill_rows<'a, const KG: usize>(&mut self, row: impl Fn(usize) -> &'a [i8]) -> Result<(), GemmError> {
        let nr = self.isa.layout().1;
        let kq = self.kp / KG;
        let k = self.k;
        for j in 0..self.n {
            let r = &row(j)[..k];
            // A branch-free scan (it vectorises); the position only on failure.
            if r.iter().fold(false, |bad, &v| bad | (v == i8::MIN)) {
                let col = r.iter().position(|&v| v == i8::MIN).unwrap_or(0);
                return Err(GemmError::WeightRange { row: j, col });
            }
            self.corr[j] = 128 * r.iter().map(|&v| v as i32).sum::<i32>();
            // Tile (j/nr, q) holds this row's k-group q at offset j%nr·KG.
            let base = (j / nr) * kq * nr + j % nr;
            let (groups, tail) = r.split_at(k / KG * KG);
            for (q, grp) in groups.chunks_exact(KG).enumerate() {
                let at = (base + q * nr) * KG;
                let dst: &mut [i8; KG] = (&mut self.data[at..at + KG]).try_into().expect("KG bytes");
                *dst = grp.try_into().expect("KG bytes");
            }
            if !tail.is_empty() {
                let at = (base + (k / KG) * nr) * KG;
                self.data[at..at + tail.len()].copy_from_slice(tail);
            }
        }
        Ok(())
    }

    /// Packs the `[n, k]` matrix whose column `t` is `col(t)` (`n` elements), i.e. the
    /// transpose of the `[k, n]` matrix with rows `col(t)`.
    fn pack_cols<'a>(
        isa: Isa,
        n: usize,
        k: usize,
        col: impl Fn(usize) -> &'a [i8],
    ) -> Result<PackedWeights, GemmError> {
        let mut p = Self::empty(isa, n, k)?;
        p.fill_cols_any(col)?;
        Ok(p)
    }

    /// [`Self::fill_cols`] for this kernel's k-group.
    fn fill_cols_any<'a>(&mut self, col: impl Fn(usize) -> &'a [i8]) -> Result<(), GemmError> {
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512Vnni && self.n.is_multiple_of(16) && is_x86_feature_detected!("avx512bw") {
            let (n, k) = (self.n, self.k);
            if super::arch::x86_64::avx512vnni::pack_cols_n16(n, k, &col, &mut self.data, &mut self.corr) {
                return Ok(());
            }
            // A −128 somewhere: the element packing names it.
        }
        match self.isa.layout().0 {
            1 => self.fill_cols::<1>(col),
            2 => self.fill_cols::<2>(col),
            4 => self.fill_cols::<4>(col),
            16 => self.fill_cols::<16>(col),
            kg => unreachable!("k-group of {kg}"),
        }
    }

    /// [`Self::pack_cols`] for k-groups of `KG`: one k-group (`KG` columns) at a time, each
    /// tile written in order, channel by channel (`KG` bytes gathered from the group's
    /// columns).
    fn fill_cols<'a, const KG: usize>(&mut self, col: impl Fn(usize) -> &'a [i8]) -> Result<(), GemmError> {
        let (n, k) = (self.n, self.k);
        let nr = self.isa.layout().1;
        let kq = self.kp / KG;
        let mut sums = vec![0i32; n];
        for q in 0..kq {
            let t0 = q * KG;
            let g = (k - t0).min(KG);
            let mut cols: [&[i8]; KG] = [&[]; KG];
            for (tt, c) in cols[..g].iter_mut().enumerate() {
                let v = &col(t0 + tt)[..n];
                if v.iter().fold(false, |bad, &x| bad | (x == i8::MIN)) {
                    let j = v.iter().position(|&x| x == i8::MIN).unwrap_or(0);
                    return Err(GemmError::WeightRange { row: j, col: t0 + tt });
                }
                for (s, &x) in sums.iter_mut().zip(v) {
                    *s += x as i32;
                }
                *c = v;
            }
            for (jb, j0) in (0..n).step_by(nr).enumerate() {
                let jn = (n - j0).min(nr);
                let at = (jb * kq + q) * nr * KG;
                let tile = &mut self.data[at..at + jn * KG];
                #[cfg(target_arch = "x86_64")]
                if KG == 4 && g == KG && jn == nr && self.isa == Isa::Avx512Vnni {
                    let rows = std::array::from_fn(|t| &cols[t][j0..j0 + nr]);
                    super::arch::x86_64::avx512vnni::transpose_quad(rows, tile);
                    continue;
                }
                if g == KG {
                    for (jj, dst) in tile.chunks_exact_mut(KG).enumerate() {
                        let dst: &mut [i8; KG] = dst.try_into().expect("KG bytes");
                        *dst = std::array::from_fn(|tt| cols[tt][j0 + jj]);
                    }
                } else {
                    // The last, partial k-group: the rest of each group stays 0.
                    for (jj, dst) in tile.chunks_exact_mut(KG).enumerate() {
                        for (d, c) in dst.iter_mut().zip(&cols[..g]) {
                            *d = c[j0 + jj];
                        }
                    }
                }
            }
        }
        for (c, s) in self.corr.iter_mut().zip(sums) {
            *c = 128 * s;
        }
        Ok(())
    }

    /// All-zero packed storage for `isa`'s layout (padding stays 0).
    fn empty(isa: Isa, n: usize, k: usize) -> Result<PackedWeights, GemmError> {
        let mut p = PackedWeights::default();
        p.reset(isa, n, k)?;
        Ok(p)
    }

    /// Makes this value all-zero packed storage for `isa`'s layout, reusing its buffers.
    fn reset(&mut self, isa: Isa, n: usize, k: usize) -> Result<(), GemmError> {
        if !isa.is_available() {
            return Err(GemmError::Unsupported { isa });
        }
        if k > MAX_K {
            return Err(GemmError::TooDeep { k });
        }
        let (kg, nr) = isa.layout();
        let kp = k.div_ceil(kg) * kg;
        let np = n.div_ceil(nr) * nr;
        let len = if isa == Isa::Scalar { n * k } else { np * kp };
        (self.isa, self.n, self.k, self.kp) = (isa, n, k, kp);
        self.data.clear();
        self.data.resize(len, 0);
        self.corr.clear();
        self.corr.resize(n, 0);
        Ok(())
    }

    /// Packs for `isa`'s layout whether or not this CPU can run it, one element at a time
    /// (the tests emulate every layout on every host, and hold the fast packers above to
    /// this one).
    #[cfg(test)]
    fn pack_layout(isa: Isa, n: usize, k: usize, at: impl Fn(usize, usize) -> i8) -> Result<PackedWeights, GemmError> {
        if k > MAX_K {
            return Err(GemmError::TooDeep { k });
        }
        let (kg, nr) = isa.layout();
        let kp = k.div_ceil(kg) * kg;
        let np = n.div_ceil(nr) * nr;
        // Every layout is tiles of `nr` output channels × `kg` consecutive k, tile-major:
        // element (j, t) goes to ((j/nr · kp/kg + t/kg) · nr + j%nr) · kg + t%kg. (Scalar:
        // nr = kg = 1, i.e. row-major.) Padding stays 0. One pass also checks the −128
        // rule and forms the VNNI correction 128·Σ_t w[j, t].
        let mut data = vec![0i8; if isa == Isa::Scalar { n * k } else { np * kp }];
        let mut corr = vec![0i32; n];
        let kq = kp / kg;
        // Tile sizes are powers of two: shifts and masks instead of divisions.
        debug_assert!(kg.is_power_of_two() && nr.is_power_of_two());
        let (kg_sh, kg_mask) = (kg.trailing_zeros(), kg - 1);
        for (j, c) in corr.iter_mut().enumerate() {
            let base = (j / nr) * kq * nr + (j & (nr - 1));
            let mut sum = 0i32;
            let mut bad = false;
            for t in 0..k {
                let v = at(j, t);
                bad |= v == i8::MIN;
                sum += v as i32;
                data[((base + (t >> kg_sh) * nr) << kg_sh) | (t & kg_mask)] = v;
            }
            if bad {
                let col = (0..k).find(|&t| at(j, t) == i8::MIN).unwrap_or(0);
                return Err(GemmError::WeightRange { row: j, col });
            }
            *c = 128 * sum;
        }
        Ok(PackedWeights { isa, n, k, kp, data, corr })
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn out_features(&self) -> usize {
        self.n
    }

    pub fn in_features(&self) -> usize {
        self.k
    }
}

/// The NEON order for `rows` (a multiple of 4) rows of `kp` (a multiple of 16) columns.
fn pack_neon(data: &mut Vec<i8>, rows: usize, kp: usize, get: impl Fn(usize, usize) -> i8) {
    for b in 0..rows / 4 {
        for q in 0..kp / 16 {
            for r in 0..4 {
                data.extend((0..16).map(|t| get(b * 4 + r, 16 * q + t)));
            }
        }
    }
}

/// A for the AVX2 kernel: `[m][kp]` int16, zero padding, into `ap` (whose old contents
/// are discarded; its allocation is reused).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn pack_a_avx2(a: &[i8], m: usize, k: usize, kp: usize, ap: &mut Vec<i16>) {
    ap.clear();
    ap.reserve(m * kp);
    if k == 0 {
        ap.resize(m * kp, 0);
        return;
    }
    for src in a.chunks_exact(k).take(m) {
        ap.extend(src.iter().map(|&s| s as i16));
        ap.extend(std::iter::repeat_n(0i16, kp - k));
    }
}

thread_local! {
    /// The packed-A buffers of this thread's AVX2 and VNNI GEMMs, reused from call to call
    /// (the activations are re-packed for every product; allocating and filling a fresh
    /// buffer each time cost more than the packing itself).
    static PACKED_A16: std::cell::RefCell<Vec<i16>> = const { std::cell::RefCell::new(Vec::new()) };
    static PACKED_AU8: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on the buffer `pack` fills, which is this thread's `buf` when it is free.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn with_reused_buffer<T, R>(
    buf: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>,
    pack: impl FnOnce(&mut Vec<T>),
    f: impl FnOnce(&[T]) -> R,
) -> R {
    buf.with(|cell| match cell.try_borrow_mut() {
        Ok(mut b) => {
            pack(&mut b);
            f(&b)
        }
        // Re-entered (not done today): a buffer of its own.
        Err(_) => {
            let mut b = Vec::new();
            pack(&mut b);
            f(&b)
        }
    })
}

/// A for the VNNI kernel: `[m][kp]` u8 = `a + 128` (`a ^ 0x80`), into `ap` (old contents
/// discarded, allocation reused); the padding is 128 (= 0 after the offset) and meets zero
/// weights either way.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn pack_a_vnni(a: &[i8], m: usize, k: usize, kp: usize, ap: &mut Vec<u8>) {
    ap.clear();
    ap.resize(m * kp, 128);
    if k == 0 {
        return;
    }
    for (dst, src) in ap.chunks_exact_mut(kp).zip(a.chunks_exact(k)) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = (s as u8) ^ 0x80;
        }
    }
}

/// A for the NEON kernel: rows padded to a multiple of 4 with zeros, in the NEON order.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
fn pack_a_neon(a: &[i8], m: usize, k: usize, kp: usize) -> Vec<i8> {
    let mp = m.div_ceil(4) * 4;
    let mut ap = Vec::with_capacity(mp * kp);
    pack_neon(&mut ap, mp, kp, |i, t| if i < m && t < k { a[i * k + t] } else { 0 });
    ap
}

/// `rows` rows of `cols` at a row pitch of `stride` need `(rows − 1)·stride + cols` elements.
fn check_strided(what: &'static str, len: usize, rows: usize, cols: usize, stride: usize) -> Result<(), GemmError> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let want = (rows - 1) * stride + cols;
    if cols <= stride && len >= want {
        Ok(())
    } else {
        Err(GemmError::Shape { what, got: len, want, m: 0, k: cols, n: rows })
    }
}

fn check_len(what: &'static str, got: usize, want: usize, m: usize, k: usize, n: usize) -> Result<(), GemmError> {
    if got == want {
        Ok(())
    } else {
        Err(GemmError::Shape { what, got, want, m, k, n })
    }
}

/// The reference: a plain triple loop in i32. The test oracle for every SIMD kernel.
pub fn gemm_i8_scalar(m: usize, k: usize, n: usize, a: &[i8], w: &[i8], out: &mut [i32]) -> Result<(), GemmError> {
    check_len("a", a.len(), m * k, m, k, n)?;
    check_len("w", w.len(), n * k, m, k, n)?;
    check_len("out", out.len(), m * n, m, k, n)?;
    if k > MAX_K {
        return Err(GemmError::TooDeep { k });
    }
    for (arow, orow) in a.chunks_exact(k.max(1)).zip(out.chunks_exact_mut(n.max(1))) {
        for (o, wrow) in orow.iter_mut().zip(w.chunks_exact(k.max(1))) {
            *o = arow.iter().zip(wrow).map(|(&x, &y)| x as i32 * y as i32).sum();
        }
    }
    if k == 0 {
        out.fill(0);
    }
    Ok(())
}

/// `out = a · wᵀ` with `a` `m × k` and prepacked weights.
pub fn gemm_i8_packed(m: usize, a: &[i8], w: &PackedWeights, out: &mut [i32]) -> Result<(), GemmError> {
    gemm_i8_packed_then(m, a, w, out, None)
}

/// [`gemm_i8_packed`], telling the kernel which weights the next GEMM will use, so that it
/// can fetch them into the cache while it computes (the AVX-512 VNNI kernel does; the
/// others ignore the hint). Results are the same with or without it.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub fn gemm_i8_packed_then(
    m: usize,
    a: &[i8],
    w: &PackedWeights,
    out: &mut [i32],
    next: Option<&PackedWeights>,
) -> Result<(), GemmError> {
    let (k, n) = (w.k, w.n);
    check_len("a", a.len(), m * k, m, k, n)?;
    check_len("out", out.len(), m * n, m, k, n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        out.fill(0);
        return Ok(());
    }
    let kp = w.kp;
    match w.isa {
        Isa::Scalar => gemm_i8_scalar(m, k, n, a, &w.data, out)?,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => with_reused_buffer(
            &PACKED_A16,
            |ap| pack_a_avx2(a, m, k, kp, ap),
            |ap| super::arch::x86_64::avx2::gemm(m, n, kp, ap, &w.data, out),
        ),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => with_reused_buffer(
            &PACKED_AU8,
            |ap| pack_a_vnni(a, m, k, kp, ap),
            |ap| {
                let then = next.map_or(&[][..], |p| p.first_vnni_block());
                super::arch::x86_64::avx512vnni::gemm(m, n, kp, ap, &w.data, &w.corr, out, then)
            },
        ),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => super::arch::aarch64::neon::gemm(m, n, kp, &pack_a_neon(a, m, k, kp), &w.data, out),
        #[allow(unreachable_patterns)]
        isa => return Err(GemmError::Unsupported { isa }),
    }
    Ok(())
}

/// What follows a GEMM in [`gemm_i8_fused_then`]: the int8 requantisation into `out`, or
/// the residual add onto `x` (the epilogues `kernels::epilogue::requant_i8` and
/// `kernels::epilogue::residual`, with the layer's bias and multipliers).
pub enum Epilogue<'a> {
    RequantI8(&'a mut [i8]),
    Residual { x: &'a mut [i16], rescale: Multiplier },
}

impl Epilogue<'_> {
    /// The number of outputs (`m × n`).
    pub fn len(&self) -> usize {
        match self {
            Epilogue::RequantI8(o) => o.len(),
            Epilogue::Residual { x, .. } => x.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// [`gemm_i8_packed_then`] followed by `epilogue` with the per-channel `bias` and
/// `requant`: the same integers whatever the kernel. The AVX-512 VNNI kernel applies the
/// epilogue to each tile in registers when the channels come in groups of 16 (no int32
/// matrix is stored); otherwise the accumulators go through `acc` (resized).
#[allow(clippy::too_many_arguments)]
pub fn gemm_i8_fused_then(
    m: usize,
    a: &[i8],
    w: &PackedWeights,
    bias: &[i32],
    requant: &[Multiplier],
    epilogue: Epilogue,
    next: Option<&PackedWeights>,
    acc: &mut Vec<i32>,
) -> Result<(), GemmError> {
    let (k, n) = (w.k, w.n);
    check_len("a", a.len(), m * k, m, k, n)?;
    check_len("out", epilogue.len(), m * n, m, k, n)?;
    check_len("bias", bias.len(), n, m, k, n)?;
    check_len("requant", requant.len(), n, m, k, n)?;
    #[cfg(target_arch = "x86_64")]
    if w.isa == Isa::Avx512Vnni
        && m > 0
        && k > 0
        && n.is_multiple_of(16)
        && super::arch::x86_64::epilogue::avx512_available()
    {
        let kp = w.kp;
        with_reused_buffer(
            &PACKED_AU8,
            |ap| pack_a_vnni(a, m, k, kp, ap),
            |ap| {
                let then = next.map_or(&[][..], |p| p.first_vnni_block());
                super::arch::x86_64::avx512vnni::gemm_fused(
                    m, n, kp, ap, &w.data, &w.corr, bias, requant, epilogue, then,
                )
            },
        );
        return Ok(());
    }
    acc.clear();
    acc.resize(m * n, 0);
    gemm_i8_packed_then(m, a, w, acc, next)?;
    match epilogue {
        Epilogue::RequantI8(out) => crate::kernels::epilogue::requant_i8(acc, bias, requant, out),
        Epilogue::Residual { x, rescale } => crate::kernels::epilogue::residual(acc, bias, requant, rescale, x),
    }
    Ok(())
}

/// `out = a · wᵀ` with `a` `m × k` and `w` `n × k` (PyTorch's `[out, in]`), on the
/// [`selected_isa`]. Packs `w` on every call (O(n·k), small next to the O(m·n·k) product
/// for m ≫ 1); use [`PackedWeights`] for weights that are reused.
pub fn gemm_i8(m: usize, k: usize, n: usize, a: &[i8], w: &[i8], out: &mut [i32]) -> Result<(), GemmError> {
    gemm_i8_with(selected_isa(), m, k, n, a, w, out)
}

/// [`gemm_i8`] on a given kernel.
pub fn gemm_i8_with(
    isa: Isa,
    m: usize,
    k: usize,
    n: usize,
    a: &[i8],
    w: &[i8],
    out: &mut [i32],
) -> Result<(), GemmError> {
    check_len("a", a.len(), m * k, m, k, n)?;
    check_len("out", out.len(), m * n, m, k, n)?;
    let packed = PackedWeights::with_isa(isa, w, n, k)?;
    gemm_i8_packed(m, a, &packed, out)
}

#[cfg(test)]
mod tests;
