//! The integer backend: `docs/integer-format.md` on the CPU. It is also the golden model
//! of the accelerator, so every operation here is specified bit for bit by that document
//! (int8 GEMMs through [`crate::kernels::int8`], Q·.16 nonlinearities, int16 residual
//! stream, LayerNorm in deterministic float).
//!
//! Threads: with `threads > 1` the GEMMs split their rows and attention its heads over
//! scoped threads. The split never changes a result: every output element is computed by
//! exactly the same integer operations whichever thread computes it.
#![forbid(unsafe_code)]

use std::ops::Range;
use std::sync::Arc;

use super::op_timers::{time, Op};
use super::{Backend, BackendError, Layout};
use crate::kernels::int8::{gemm_i8_fused_then, gemm_i8_packed, Epilogue, PackedWeights};
use crate::kernels::{attention, epilogue};
use crate::model::pruning::{compact_rows, Decision};
use crate::model::Model;
use crate::quant::fixed::{div_round, sat_i8};
use crate::quant::gelu::GeluTable;
use crate::quant::model::{QBlock, QLinear, QSelector, QuantModel};
use crate::quant::select::{fuse_heads_q16, keep_score_q16, package_i16, score_to_f32};
use crate::quant::sigmoid::sigmoid_q16;

/// Rows below which a GEMM is not split over threads (spawning costs more than it saves).
const MIN_ROWS_PER_THREAD: usize = 16;

pub struct CpuInt8 {
    model: Arc<Model>,
    q: Arc<QuantModel>,
    threads: usize,
    /// The int16 token matrix and its layout; `None` between images.
    state: Option<(Vec<i16>, Layout)>,
    /// The integer keep scores of the last `score` call (for the package token).
    last_scores: Vec<u32>,
    /// Buffers the blocks reuse from image to image.
    scratch: Scratch,
    sel_scratch: SelectorScratch,
}

fn failed(msg: impl Into<String>) -> BackendError {
    BackendError::Failed { backend: CpuInt8::NAME, msg: msg.into() }
}

fn gemm_err(e: impl std::fmt::Display) -> BackendError {
    failed(format!("int8 GEMM: {e}"))
}

impl CpuInt8 {
    pub const NAME: &'static str = "cpu-int8";

    /// A backend for a quantised model (`model.quant` must be present).
    pub fn new(model: Arc<Model>, threads: usize) -> Result<CpuInt8, BackendError> {
        let q = model.quant.clone().ok_or_else(|| {
            failed(format!(
                "model {} is not quantised (no {}); run `heatvit-run quantize` first",
                model.dir.display(),
                crate::quant::model::INT8_FILE
            ))
        })?;
        Ok(CpuInt8 {
            model,
            q,
            threads: threads.max(1),
            state: None,
            last_scores: Vec::new(),
            scratch: Scratch::default(),
            sel_scratch: SelectorScratch::default(),
        })
    }

    fn state(&mut self, what: &str) -> Result<&mut (Vec<i16>, Layout), BackendError> {
        self.state
            .as_mut()
            .ok_or_else(|| BackendError::Protocol { backend: Self::NAME, msg: format!("{what} before begin") })
    }
}

/// Buffers the blocks of one image reuse: sized on first use, grown when a larger image
/// needs it, never cleared (every kernel writes all of what is read back), so a block
/// allocates and zeroes nothing in the steady state.
#[derive(Default)]
pub struct Scratch {
    y: Vec<i8>,
    qkv: Vec<i8>,
    ctx: Vec<i8>,
    hid: Vec<i8>,
    acc: Vec<i32>,
    head: HeadScratch,
}

/// One attention head's buffers (one per thread that runs heads).
#[derive(Default)]
struct HeadScratch {
    qh: Vec<i8>,
    /// This head's K and V, packed as GEMM weights (storage reused).
    kp: PackedWeights,
    vp: PackedWeights,
    logits: Vec<i32>,
    probs: Vec<i8>,
    pv: Vec<i32>,
    ctx: Vec<i8>,
}

/// The first `n` elements of `v`, growing it (with zeros) only if it is shorter.
fn sized<T: Copy + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    if v.len() < n {
        v.resize(n, T::default());
    }
    &mut v[..n]
}

/// `a (m × k) · Wᵀ` into `out` (int32, `m × n`), rows split over `threads`.
fn gemm_into(threads: usize, w: &PackedWeights, a: &[i8], m: usize, out: &mut [i32]) -> Result<(), BackendError> {
    let (k, n) = (w.in_features(), w.out_features());
    let t = threads.min(m / MIN_ROWS_PER_THREAD).max(1);
    if t == 1 || n == 0 || k == 0 {
        return gemm_i8_packed(m, a, w, out).map_err(gemm_err);
    }
    let per = m.div_ceil(t);
    std::thread::scope(|sc| {
        let jobs: Vec<_> = a
            .chunks(per * k)
            .zip(out.chunks_mut(per * n))
            .map(|(ac, oc)| sc.spawn(move || gemm_i8_packed(ac.len() / k, ac, w, oc)))
            .collect();
        jobs.into_iter().try_for_each(|j| j.join().expect("GEMM thread panicked")).map_err(gemm_err)
    })
}

/// The Linear layer `l` on `m` rows followed by `epilogue` (its int8 requantisation, or
/// the residual add), rows split over `threads` ([`gemm_i8_fused_then`]: done in the
/// GEMM's tiles where the kernel can, else through `acc`).
fn gemm_fused(
    threads: usize,
    l: &QLinear,
    a: &[i8],
    m: usize,
    epilogue: Epilogue,
    next: Option<&PackedWeights>,
    acc: &mut Vec<i32>,
) -> Result<(), BackendError> {
    let (w, k, n) = (&l.packed, l.packed.in_features(), l.out_features());
    let t = threads.min(m / MIN_ROWS_PER_THREAD).max(1);
    if t == 1 || n == 0 || k == 0 {
        return gemm_i8_fused_then(m, a, w, &l.bias, &l.requant, epilogue, next, acc).map_err(gemm_err);
    }
    let per = m.div_ceil(t);
    // The output rows of each thread.
    let parts: Vec<Epilogue> = match epilogue {
        Epilogue::RequantI8(out) => out.chunks_mut(per * n).map(Epilogue::RequantI8).collect(),
        Epilogue::Residual { x, rescale } => x.chunks_mut(per * n).map(|x| Epilogue::Residual { x, rescale }).collect(),
    };
    std::thread::scope(|sc| {
        let jobs: Vec<_> = a
            .chunks(per * k)
            .zip(parts)
            .map(|(ac, e)| {
                sc.spawn(move || gemm_i8_fused_then(ac.len() / k, ac, w, &l.bias, &l.requant, e, next, &mut Vec::new()))
            })
            .collect();
        jobs.into_iter().try_for_each(|j| j.join().expect("GEMM thread panicked")).map_err(gemm_err)
    })
}

/// [`gemm_into`] into a new buffer.
fn gemm(threads: usize, w: &PackedWeights, a: &[i8], m: usize) -> Result<Vec<i32>, BackendError> {
    let mut out = vec![0i32; m * w.out_features()];
    gemm_into(threads, w, a, m, &mut out)?;
    Ok(out)
}

/// Patch embedding + CLS + positions into the int16 residual stream.
pub fn embed(
    q: &QuantModel,
    cfg: &crate::model::Config,
    image: &[f32],
    threads: usize,
) -> Result<Vec<i16>, BackendError> {
    let d = cfg.embed_dim;
    let n0 = cfg.num_patches();
    let s_img = q.scales["image"];
    let mut cols = vec![0i8; image.len()];
    epilogue::quantize_im2col_i8(image, cfg.image_size, cfg.patch_size, s_img, &mut cols);
    let mut x = q.embed_rows.clone();
    // x = sat16(patch.rescale(c, acc) + x): the residual add with the identity multiplier
    // (m = 2^30, shift 30: exactly x for every int32 x).
    let one = crate::quant::Multiplier::from_ratio(1.0).expect("1 is a valid ratio");
    debug_assert!(one.apply(i32::MIN) == i32::MIN as i64 && one.apply(i32::MAX) == i32::MAX as i64);
    let e = Epilogue::Residual { x: &mut x[d..(1 + n0) * d], rescale: one };
    gemm_fused(threads, &q.patch, &cols, n0, e, q.blocks.first().map(|b| &b.qkv.packed), &mut Vec::new())?;
    Ok(x)
}

/// One transformer block on `rows` tokens, in place (with buffers of its own; see
/// [`block_with`]).
pub fn block(b: &QBlock, heads: usize, x: &mut [i16], rows: usize, threads: usize) -> Result<(), BackendError> {
    block_with(b, heads, x, rows, threads, &mut Scratch::default(), None)
}

/// One attention head: `ctx (rows × hd) = requant(softmax(Q_h·K_hᵀ)·V_h)`, with `Q_h`
/// gathered and `K_h`, `V_h` packed straight from the qkv rows (row pitch 3·d).
fn head_ctx(
    b: &QBlock,
    qkv: &[i8],
    rows: usize,
    d: usize,
    hd: usize,
    h: usize,
    s: &mut HeadScratch,
) -> Result<(), BackendError> {
    let qh = sized(&mut s.qh, rows * hd);
    let (kp, vp) = (&mut s.kp, &mut s.vp);
    time(Op::HeadPack, || {
        for (dst, src) in qh.chunks_exact_mut(hd).zip(qkv.chunks_exact(3 * d)) {
            dst.copy_from_slice(&src[h * hd..(h + 1) * hd]);
        }
        kp.repack_strided(qkv.get(d + h * hd..).unwrap_or_default(), rows, hd, 3 * d)?;
        vp.repack_transposed_strided(qkv.get(2 * d + h * hd..).unwrap_or_default(), rows, hd, 3 * d)
    })
    .map_err(gemm_err)?;
    let logits = sized(&mut s.logits, rows * rows);
    time(Op::QkGemm, || gemm_i8_packed(rows, qh, kp, logits)).map_err(gemm_err)?;
    let probs = sized(&mut s.probs, rows * rows);
    time(Op::Softmax, || attention::softmax_rows_i8(logits, rows, b.logits, probs));
    let pv = sized(&mut s.pv, rows * hd);
    time(Op::PvGemm, || gemm_i8_packed(rows, probs, vp, pv)).map_err(gemm_err)?;
    time(Op::PvRequant, || attention::requant_uniform_i8(pv, b.pv, sized(&mut s.ctx, rows * hd)));
    Ok(())
}

/// Writes one head's `rows × hd` context into columns `h·hd..` of the `rows × d` matrix.
fn scatter_head(ctx: &mut [i8], head: &[i8], d: usize, hd: usize, h: usize) {
    for (dst, src) in ctx.chunks_exact_mut(d).zip(head.chunks_exact(hd)) {
        dst[h * hd..(h + 1) * hd].copy_from_slice(src);
    }
}

/// One transformer block on `rows` tokens, in place, on reused buffers. `next`: the block
/// that runs after this one, whose first weights are fetched while this one ends.
pub fn block_with(
    b: &QBlock,
    heads: usize,
    x: &mut [i16],
    rows: usize,
    threads: usize,
    s: &mut Scratch,
    next: Option<&QBlock>,
) -> Result<(), BackendError> {
    let d = b.norm1.dim();
    let hd = d / heads;
    let y = sized(&mut s.y, rows * d);
    time(Op::LayerNorm, || b.norm1.apply(x, y));
    let qkv = sized(&mut s.qkv, rows * 3 * d);
    let e = Epilogue::RequantI8(qkv);
    time(Op::QkvGemm, || gemm_fused(threads, &b.qkv, y, rows, e, Some(&b.proj.packed), &mut s.acc))?;
    let qkv = &*qkv;
    let ctx = sized(&mut s.ctx, rows * d);
    // Attention, one head at a time (heads split over threads).
    if threads > 1 && heads > 1 && rows >= MIN_ROWS_PER_THREAD {
        let chunk = heads.div_ceil(threads.min(heads));
        let per_thread = std::thread::scope(|sc| {
            let jobs: Vec<_> = (0..heads)
                .step_by(chunk)
                .map(|h0| {
                    sc.spawn(move || {
                        let mut hs = HeadScratch::default();
                        (h0..(h0 + chunk).min(heads))
                            .map(|h| {
                                head_ctx(b, qkv, rows, d, hd, h, &mut hs).map(|()| (h, hs.ctx[..rows * hd].to_vec()))
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            jobs.into_iter().map(|j| j.join().expect("attention thread panicked")).collect::<Result<Vec<_>, _>>()
        })?;
        for (h, head) in per_thread.iter().flatten() {
            scatter_head(ctx, head, d, hd, *h);
        }
    } else {
        for h in 0..heads {
            head_ctx(b, qkv, rows, d, hd, h, &mut s.head)?;
            time(Op::PvRequant, || scatter_head(ctx, &s.head.ctx[..rows * hd], d, hd, h));
        }
    }
    let e = Epilogue::Residual { x: &mut *x, rescale: b.res1 };
    time(Op::ProjGemm, || gemm_fused(threads, &b.proj, ctx, rows, e, Some(&b.fc1.packed), &mut s.acc))?;
    // MLP.
    let y = sized(&mut s.y, rows * d);
    time(Op::LayerNorm, || b.norm2.apply(x, y));
    let hid = sized(&mut s.hid, rows * b.fc1.out_features());
    let e = Epilogue::RequantI8(hid);
    time(Op::Fc1Gemm, || gemm_fused(threads, &b.fc1, y, rows, e, Some(&b.fc2.packed), &mut s.acc))?;
    time(Op::Gelu, || epilogue::gelu_table_i8(&b.hidden, hid));
    let e = Epilogue::Residual { x, rescale: b.res2 };
    time(Op::Fc2Gemm, || gemm_fused(threads, &b.fc2, hid, rows, e, next.map(|n| &n.qkv.packed), &mut s.acc))?;
    Ok(())
}

/// The token selectors' buffers, reused like [`Scratch`].
#[derive(Default)]
pub struct SelectorScratch {
    t: Vec<u32>,
    means: Vec<i8>,
    sums: Vec<i64>,
    y: Vec<i8>,
    acc: Vec<i32>,
    u: Vec<i8>,
    f2: Vec<i8>,
    f3: Vec<i8>,
    l: Vec<i32>,
    gh: Vec<i8>,
    ga: Vec<i32>,
    col_sums: Vec<i64>,
    col_part: Vec<i32>,
    g: Vec<i8>,
}

/// A Linear layer on `m` rows into its int8 GELU input, then the GELU table, into `out`
/// (resized; the accumulators in `acc`).
fn linear_gelu_into(
    threads: usize,
    l: &QLinear,
    a: &[i8],
    m: usize,
    gelu: &GeluTable,
    acc: &mut Vec<i32>,
    out: &mut Vec<i8>,
) -> Result<(), BackendError> {
    let out = sized(out, m * l.out_features());
    gemm_fused(threads, l, a, m, Epilogue::RequantI8(out), None, acc)?;
    epilogue::gelu_table_i8(gelu, out);
    Ok(())
}

/// A Linear layer on `m` rows into Q·.16, into `out` (resized; accumulators in `acc`).
fn linear_q16_into(
    threads: usize,
    l: &QLinear,
    a: &[i8],
    m: usize,
    acc: &mut Vec<i32>,
    out: &mut Vec<i32>,
) -> Result<(), BackendError> {
    let n = l.out_features();
    let acc = sized(acc, m * n);
    gemm_into(threads, &l.packed, a, m, acc)?;
    epilogue::requant_i32(acc, &l.bias, &l.requant, sized(out, m * n));
    Ok(())
}

/// Fused Q0.16 keep scores of the `live` patch tokens (rows `1..=live`).
pub fn selector_scores(
    sel: &QSelector,
    x: &[i16],
    d: usize,
    live: usize,
    threads: usize,
    s: &mut SelectorScratch,
) -> Result<Vec<u32>, BackendError> {
    if live == 0 {
        return Ok(Vec::new());
    }
    let heads = sel.heads.len();
    let hd = d / heads;
    let patches = &x[d..(1 + live) * d];
    let t = sized(&mut s.t, live * heads);
    let means = sized(&mut s.means, live * heads);
    for (h, hw) in sel.heads.iter().enumerate() {
        // The LayerNorm reads this head's slice of each patch token in place and gives
        // the slice's sums for the head means.
        let (y, sums) = (sized(&mut s.y, live * hd), sized(&mut s.sums, live));
        hw.norm.apply_rows(&patches[h * hd..], d, y, sums);
        for (j, &sum) in sums.iter().enumerate() {
            // |Σ| ≤ hd·32767: the rounded mean fits i32.
            means[j * heads + h] = sel.gate_in.to_i8(div_round(sum, hd as i64) as i32);
        }
        linear_gelu_into(threads, &hw.fc1, y, live, &hw.u, &mut s.acc, &mut s.u)?;
        let u = &mut s.u[..live * hd];
        let half = hd / 2;
        // Column sums row by row (contiguous rows rather than a strided walk per column),
        // in i32 over at most 2^24 rows at a time (|Σ| < 127·2^24 < 2^31), which the
        // compiler vectorises, then in i64.
        let (sums, part) = (sized(&mut s.col_sums, hd - half), sized(&mut s.col_part, hd - half));
        sums.fill(0);
        for rows in u.chunks(hd << 24) {
            part.fill(0);
            for row in rows.chunks_exact(hd) {
                for (p, &v) in part.iter_mut().zip(&row[half..]) {
                    *p += v as i32;
                }
            }
            for (s, &p) in sums.iter_mut().zip(&*part) {
                *s += p as i64;
            }
        }
        let g = sized(&mut s.g, hd - half);
        for (g, &sum) in g.iter_mut().zip(&*sums) {
            *g = sat_i8(div_round(sum, live as i64));
        }
        for row in u.chunks_exact_mut(hd) {
            row[half..].copy_from_slice(g);
        }
        linear_gelu_into(threads, &hw.fc2, u, live, &hw.f2, &mut s.acc, &mut s.f2)?;
        linear_gelu_into(threads, &hw.fc3, &s.f2[..live * hw.fc2.out_features()], live, &hw.f3, &mut s.acc, &mut s.f3)?;
        linear_q16_into(threads, &hw.fc4, &s.f3[..live * hw.fc3.out_features()], live, &mut s.acc, &mut s.l)?;
        for (j, lj) in s.l[..live * 2].chunks_exact(2).enumerate() {
            t[j * heads + h] = keep_score_q16(lj[0], lj[1]);
        }
    }
    linear_gelu_into(threads, &sel.gate_fc1, means, live, &sel.gate_hidden, &mut s.acc, &mut s.gh)?;
    let gh = &s.gh[..live * sel.gate_fc1.out_features()];
    linear_q16_into(threads, &sel.gate_fc2, gh, live, &mut s.acc, &mut s.ga)?;
    let a: Vec<u32> = s.ga[..live * heads].iter().map(|&v| sigmoid_q16(v)).collect();
    Ok((0..live).map(|j| fuse_heads_q16(&a[j * heads..(j + 1) * heads], &t[j * heads..(j + 1) * heads])).collect())
}

/// Final LayerNorm on CLS and the head, as f32 logits.
pub fn head(q: &QuantModel, x: &[i16], d: usize) -> Result<Vec<f32>, BackendError> {
    let mut y = vec![0i8; d];
    q.norm.apply(&x[..d], &mut y);
    let acc = gemm(1, &q.head.packed, &y, 1)?;
    Ok(acc
        .iter()
        .enumerate()
        .map(|(o, &a)| ((a as i64 + q.head.bias[o] as i64) as f64 * q.head.acc_scale(o)) as f32)
        .collect())
}

impl Backend for CpuInt8 {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn begin(&mut self, image: &[f32]) -> Result<Layout, BackendError> {
        let cfg = &self.model.config;
        super::check_image(Self::NAME, cfg, image)?;
        let x = time(Op::Embed, || embed(&self.q, cfg, image, self.threads))?;
        let layout = Layout { live: cfg.num_patches(), packages: 0 };
        self.state = Some((x, layout));
        Ok(layout)
    }

    fn run_blocks(&mut self, blocks: Range<usize>) -> Result<(), BackendError> {
        let (q, heads, threads) = (Arc::clone(&self.q), self.model.config.num_heads, self.threads);
        let (x, layout) = self
            .state
            .as_mut()
            .ok_or_else(|| BackendError::Protocol { backend: Self::NAME, msg: "run_blocks before begin".into() })?;
        let rows = layout.rows();
        for b in blocks {
            let blk = q.blocks.get(b).ok_or_else(|| failed(format!("model has no block {b}")))?;
            // The block after this range runs next too (a selector between them touches
            // little memory), so its weights are worth fetching.
            block_with(blk, heads, x, rows, threads, &mut self.scratch, q.blocks.get(b + 1))?;
        }
        Ok(())
    }

    fn score(&mut self, stage: usize) -> Result<Vec<f32>, BackendError> {
        let (q, d, threads) = (Arc::clone(&self.q), self.model.config.embed_dim, self.threads);
        let sel = q.selectors.get(stage).ok_or_else(|| failed(format!("model has no selector for stage {stage}")))?;
        let (x, layout) = self
            .state
            .as_ref()
            .ok_or_else(|| BackendError::Protocol { backend: Self::NAME, msg: "score before begin".into() })?;
        let live = layout.live;
        let scratch = &mut self.sel_scratch;
        let p = time(Op::Selector, || selector_scores(sel, x, d, live, threads, scratch))?;
        let out = p.iter().map(|&v| score_to_f32(v)).collect();
        self.last_scores = p;
        Ok(out)
    }

    fn compact(&mut self, decision: &Decision, _scores: &[f32]) -> Result<Layout, BackendError> {
        let d = self.model.config.embed_dim;
        let weights: Vec<u32> =
            decision.pruned.iter().map(|&j| self.last_scores.get(j).copied().unwrap_or(0)).collect();
        let (x, layout) = self
            .state
            .as_mut()
            .ok_or_else(|| BackendError::Protocol { backend: Self::NAME, msg: "compact before begin".into() })?;
        if self.last_scores.len() != layout.live {
            return Err(BackendError::Protocol {
                backend: Self::NAME,
                msg: format!("compact of {} live tokens after scoring {}", layout.live, self.last_scores.len()),
            });
        }
        let data = compact_rows(x, d, layout.live, decision, || {
            let mut pkg = vec![0i16; d];
            package_i16(x, d, &decision.pruned.iter().map(|j| j + 1).collect::<Vec<_>>(), &weights, &mut pkg);
            pkg
        });
        *layout =
            Layout { live: decision.kept.len(), packages: layout.packages + usize::from(decision.makes_package()) };
        *x = data;
        Ok(*layout)
    }

    fn logits(&mut self) -> Result<Vec<f32>, BackendError> {
        let (q, d) = (Arc::clone(&self.q), self.model.config.embed_dim);
        let (x, _) = self.state("logits")?;
        let out = head(&q, x, d)?;
        self.state = None;
        Ok(out)
    }
}
