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

use super::{Backend, BackendError, Layout};
use crate::kernels::{attention, epilogue};
use crate::kernels::int8::{gemm_i8_packed, PackedWeights};
use crate::model::pruning::{compact_rows, Decision};
use crate::model::Model;
use crate::quant::fixed::{div_round, quantize_i8, sat_i16, sat_i8};
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
        Ok(CpuInt8 { model, q, threads: threads.max(1), state: None, last_scores: Vec::new() })
    }

    fn state(&mut self, what: &str) -> Result<&mut (Vec<i16>, Layout), BackendError> {
        self.state.as_mut().ok_or_else(|| BackendError::Protocol { backend: Self::NAME, msg: format!("{what} before begin") })
    }
}

/// `a (m × k) · Wᵀ` into int32, rows split over `threads`.
fn gemm(threads: usize, w: &PackedWeights, a: &[i8], m: usize) -> Result<Vec<i32>, BackendError> {
    let (k, n) = (w.in_features(), w.out_features());
    let mut out = vec![0i32; m * n];
    let t = threads.min(m / MIN_ROWS_PER_THREAD).max(1);
    if t == 1 || n == 0 || k == 0 {
        gemm_i8_packed(m, a, w, &mut out).map_err(gemm_err)?;
        return Ok(out);
    }
    let per = m.div_ceil(t);
    std::thread::scope(|sc| {
        let jobs: Vec<_> = a
            .chunks(per * k)
            .zip(out.chunks_mut(per * n))
            .map(|(ac, oc)| sc.spawn(move || gemm_i8_packed(ac.len() / k, ac, w, oc)))
            .collect();
        jobs.into_iter().try_for_each(|j| j.join().expect("GEMM thread panicked")).map_err(gemm_err)
    })?;
    Ok(out)
}

/// A Linear layer whose outputs go to int8 through a per-channel multiplier.
fn linear_i8(threads: usize, l: &QLinear, a: &[i8], m: usize) -> Result<Vec<i8>, BackendError> {
    let acc = gemm(threads, &l.packed, a, m)?;
    let mut out = vec![0i8; acc.len()];
    epilogue::requant_i8(&acc, &l.bias, &l.requant, &mut out);
    Ok(out)
}

/// A Linear layer into Q·.16, then GELU (Q·.16), then int8 through `to_i8`.
fn linear_gelu_i8(threads: usize, l: &QLinear, a: &[i8], m: usize, to_i8: crate::quant::Multiplier) -> Result<Vec<i8>, BackendError> {
    let acc = gemm(threads, &l.packed, a, m)?;
    let mut out = vec![0i8; acc.len()];
    epilogue::requant_gelu_i8(&acc, &l.bias, &l.requant, to_i8, &mut out);
    Ok(out)
}

/// A Linear layer into Q·.16.
fn linear_q16(threads: usize, l: &QLinear, a: &[i8], m: usize) -> Result<Vec<i32>, BackendError> {
    let acc = gemm(threads, &l.packed, a, m)?;
    let mut out = vec![0i32; acc.len()];
    epilogue::requant_i32(&acc, &l.bias, &l.requant, &mut out);
    Ok(out)
}

/// Patch embedding + CLS + positions into the int16 residual stream.
pub fn embed(q: &QuantModel, cfg: &crate::model::Config, image: &[f32], threads: usize) -> Result<Vec<i16>, BackendError> {
    let d = cfg.embed_dim;
    let n0 = cfg.num_patches();
    let s_img = q.scales["image"];
    let cols = crate::model::vit::im2col(cfg, image, |v| quantize_i8(v, s_img));
    let acc = gemm(threads, &q.patch.packed, &cols, n0)?;
    let mut x = q.embed_rows.clone();
    for (arow, xrow) in acc.chunks_exact(d).zip(x[d..].chunks_exact_mut(d)) {
        for (c, (xv, &a)) in xrow.iter_mut().zip(arow).enumerate() {
            *xv = sat_i16(q.patch.rescale(c, a) + *xv as i64);
        }
    }
    Ok(x)
}

/// One transformer block on `rows` tokens, in place.
pub fn block(b: &QBlock, heads: usize, x: &mut [i16], rows: usize, threads: usize) -> Result<(), BackendError> {
    let d = b.norm1.dim();
    let hd = d / heads;
    let mut y = vec![0i8; rows * d];
    b.norm1.apply(x, &mut y);
    let qkv = linear_i8(threads, &b.qkv, &y, rows)?;
    // Attention, one head at a time (heads split over threads).
    let head_ctx = |h: usize| -> Result<Vec<i8>, BackendError> {
        // Q is the GEMM's row operand and is gathered; K and V are packed straight from
        // the qkv rows (row pitch 3·d).
        let mut qh = vec![0i8; rows * hd];
        for (dst, src) in qh.chunks_exact_mut(hd).zip(qkv.chunks_exact(3 * d)) {
            dst.copy_from_slice(&src[h * hd..(h + 1) * hd]);
        }
        let kp = PackedWeights::new_strided(qkv.get(d + h * hd..).unwrap_or_default(), rows, hd, 3 * d).map_err(gemm_err)?;
        let mut logits = vec![0i32; rows * rows];
        gemm_i8_packed(rows, &qh, &kp, &mut logits).map_err(gemm_err)?;
        let mut probs = vec![0i8; rows * rows];
        attention::softmax_rows_i8(&logits, rows, b.logits, &mut probs);
        let vp = PackedWeights::new_transposed_strided(qkv.get(2 * d + h * hd..).unwrap_or_default(), rows, hd, 3 * d).map_err(gemm_err)?;
        let mut pv = vec![0i32; rows * hd];
        gemm_i8_packed(rows, &probs, &vp, &mut pv).map_err(gemm_err)?;
        let mut ctx = vec![0i8; rows * hd];
        attention::requant_uniform_i8(&pv, b.pv, &mut ctx);
        Ok(ctx)
    };
    let per_head: Vec<Vec<i8>> = if threads > 1 && heads > 1 && rows >= MIN_ROWS_PER_THREAD {
        let chunk = heads.div_ceil(threads.min(heads));
        std::thread::scope(|sc| {
            let jobs: Vec<_> = (0..heads)
                .collect::<Vec<_>>()
                .chunks(chunk)
                .map(|hs| {
                    let hs = hs.to_vec();
                    let f = &head_ctx;
                    sc.spawn(move || hs.into_iter().map(f).collect::<Result<Vec<_>, _>>())
                })
                .collect();
            let mut all = Vec::with_capacity(heads);
            for j in jobs {
                all.extend(j.join().expect("attention thread panicked")?);
            }
            Ok::<_, BackendError>(all)
        })?
    } else {
        (0..heads).map(head_ctx).collect::<Result<_, _>>()?
    };
    let mut ctx = vec![0i8; rows * d];
    for (h, c) in per_head.iter().enumerate() {
        for (r, src) in c.chunks_exact(hd).enumerate() {
            ctx[r * d + h * hd..r * d + (h + 1) * hd].copy_from_slice(src);
        }
    }
    let acc = gemm(threads, &b.proj.packed, &ctx, rows)?;
    epilogue::residual(&acc, &b.proj.bias, &b.proj.requant, b.res1, x);
    // MLP.
    b.norm2.apply(x, &mut y);
    let hid = linear_gelu_i8(threads, &b.fc1, &y, rows, b.hidden)?;
    let acc = gemm(threads, &b.fc2.packed, &hid, rows)?;
    epilogue::residual(&acc, &b.fc2.bias, &b.fc2.requant, b.res2, x);
    Ok(())
}

/// Fused Q0.16 keep scores of the `live` patch tokens (rows `1..=live`).
pub fn selector_scores(sel: &QSelector, x: &[i16], d: usize, live: usize, threads: usize) -> Result<Vec<u32>, BackendError> {
    if live == 0 {
        return Ok(Vec::new());
    }
    let heads = sel.heads.len();
    let hd = d / heads;
    let patches = &x[d..(1 + live) * d];
    let mut t = vec![0u32; live * heads];
    let mut means = vec![0i8; live * heads];
    let mut xh = vec![0i16; live * hd];
    let mut y = vec![0i8; live * hd];
    for (h, hw) in sel.heads.iter().enumerate() {
        for j in 0..live {
            let src = &patches[j * d + h * hd..][..hd];
            xh[j * hd..(j + 1) * hd].copy_from_slice(src);
            let sum: i64 = src.iter().map(|&v| v as i64).sum();
            means[j * heads + h] = sel.gate_in.to_i8(div_round(sum, hd as i64) as i32);
        }
        hw.norm.apply(&xh, &mut y);
        let mut u = linear_gelu_i8(threads, &hw.fc1, &y, live, hw.u)?;
        let half = hd / 2;
        for c in half..hd {
            let sum: i64 = (0..live).map(|j| u[j * hd + c] as i64).sum();
            let g = sat_i8(div_round(sum, live as i64));
            for j in 0..live {
                u[j * hd + c] = g;
            }
        }
        let f2 = linear_gelu_i8(threads, &hw.fc2, &u, live, hw.f2)?;
        let f3 = linear_gelu_i8(threads, &hw.fc3, &f2, live, hw.f3)?;
        let l = linear_q16(threads, &hw.fc4, &f3, live)?;
        for (j, lj) in l.chunks_exact(2).enumerate() {
            t[j * heads + h] = keep_score_q16(lj[0], lj[1]);
        }
    }
    let gh = linear_gelu_i8(threads, &sel.gate_fc1, &means, live, sel.gate_hidden)?;
    let ga = linear_q16(threads, &sel.gate_fc2, &gh, live)?;
    let a: Vec<u32> = ga.iter().map(|&v| sigmoid_q16(v)).collect();
    Ok((0..live)
        .map(|j| fuse_heads_q16(&a[j * heads..(j + 1) * heads], &t[j * heads..(j + 1) * heads]))
        .collect())
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
        let x = embed(&self.q, cfg, image, self.threads)?;
        let layout = Layout { live: cfg.num_patches(), packages: 0 };
        self.state = Some((x, layout));
        Ok(layout)
    }

    fn run_blocks(&mut self, blocks: Range<usize>) -> Result<(), BackendError> {
        let (q, heads, threads) = (Arc::clone(&self.q), self.model.config.num_heads, self.threads);
        let (x, layout) = self.state("run_blocks")?;
        let rows = layout.rows();
        for b in blocks {
            let blk = q.blocks.get(b).ok_or_else(|| failed(format!("model has no block {b}")))?;
            block(blk, heads, x, rows, threads)?;
        }
        Ok(())
    }

    fn score(&mut self, stage: usize) -> Result<Vec<f32>, BackendError> {
        let (q, d, threads) = (Arc::clone(&self.q), self.model.config.embed_dim, self.threads);
        let sel = q.selectors.get(stage).ok_or_else(|| failed(format!("model has no selector for stage {stage}")))?;
        let (x, layout) = self.state("score")?;
        let live = layout.live;
        let p = selector_scores(sel, x, d, live, threads)?;
        let out = p.iter().map(|&v| score_to_f32(v)).collect();
        self.last_scores = p;
        Ok(out)
    }

    fn compact(&mut self, decision: &Decision, _scores: &[f32]) -> Result<Layout, BackendError> {
        let d = self.model.config.embed_dim;
        let weights: Vec<u32> = decision.pruned.iter().map(|&j| self.last_scores.get(j).copied().unwrap_or(0)).collect();
        let (x, layout) = self.state.as_mut().ok_or_else(|| BackendError::Protocol {
            backend: Self::NAME,
            msg: "compact before begin".into(),
        })?;
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
        *layout = Layout { live: decision.kept.len(), packages: layout.packages + usize::from(decision.makes_package()) };
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
