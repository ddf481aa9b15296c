//! The float forward pass of spec §1–2, on a dense token matrix.
//!
//! Token matrix layout (spec §2–3): row 0 is CLS, rows `1..=live` the live patch tokens in
//! their original order, then the package tokens `P_1..P_s`. `D` columns, row-major.
#![forbid(unsafe_code)]

use super::{BlockWeights, Config, Linear, Norm, SelectorWeights, Weights};
use crate::kernels::{self, sgemm, MatMut, MatRef};

/// A dense `rows × dim` token matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    pub data: Vec<f32>,
    pub rows: usize,
    pub dim: usize,
}

/// Sees the float activations at the points where the integer format needs a scale
/// (`docs/integer-format.md` §7): calibration implements it; inference passes
/// [`NoObserver`]. Names are `image`, `embed`, `blocks.{i}.{norm1,q,k,v,ctx,res_attn,norm2,
/// hidden_in,hidden,res_mlp}`, `selectors.{s}.heads.{h}.{norm,u_in,u,f2_in,f2,f3_in,f3}`,
/// `selectors.{s}.{gate_in,gate_hidden_in,gate_hidden}` and `norm` (`X_in` is the input of
/// the GELU whose output is `X`).
pub trait Observer {
    /// Whether [`Observer::see`] wants to be called (saves building the names).
    fn active(&self) -> bool;
    fn see(&mut self, name: &str, data: &[f32]);
}

/// The observer of ordinary inference: sees nothing.
pub struct NoObserver;

impl Observer for NoObserver {
    fn active(&self) -> bool {
        false
    }
    fn see(&mut self, _name: &str, _data: &[f32]) {}
}

fn note(obs: &mut dyn Observer, name: impl FnOnce() -> String, data: &[f32]) {
    if obs.active() {
        obs.see(&name(), data);
    }
}

impl Tokens {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

fn apply_linear(l: &Linear, x: &[f32], rows: usize) -> Vec<f32> {
    let mut y = vec![0.0; rows * l.out_features];
    kernels::linear(x, rows, &l.w, &l.b, l.out_features, &mut y);
    y
}

fn apply_norm(n: &Norm, x: &[f32], eps: f32) -> Vec<f32> {
    let mut y = x.to_vec();
    kernels::layer_norm(&mut y, &n.g, &n.b, eps);
    y
}

/// The image's patches as rows (`N0 × 3P²`, in the conv weight's (c, ky, kx) order),
/// each value passed through `map` (identity for floats, quantisation for int8).
pub fn im2col<S: Copy, T: Copy + Default>(cfg: &Config, image: &[S], map: impl Fn(S) -> T) -> Vec<T> {
    let (s, p) = (cfg.image_size, cfg.patch_size);
    let mut cols = vec![T::default(); cfg.num_patches() * 3 * p * p];
    crate::kernels::im2col_runs(s, p, |src, dst| {
        for (o, &v) in cols[dst..dst + p].iter_mut().zip(&image[src..src + p]) {
            *o = map(v);
        }
    });
    cols
}

/// Patch embedding + CLS + positional embedding. `image` is the normalised CHW tensor
/// (3 × S × S).
pub fn embed(cfg: &Config, w: &Weights, image: &[f32], obs: &mut dyn Observer) -> Tokens {
    let (s, d) = (cfg.image_size, cfg.embed_dim);
    assert_eq!(image.len(), 3 * s * s, "embed: image tensor size");
    note(obs, || "image".into(), image);
    let g = cfg.grid();
    let n0 = g * g;
    let cols = im2col(cfg, image, |v| v);
    let patches = apply_linear(&w.patch, &cols, n0);
    let mut data = vec![0.0f32; (1 + n0) * d];
    for ((o, c), p) in data[..d].iter_mut().zip(&w.cls_token).zip(&w.pos_embed) {
        *o = c + p;
    }
    for (i, row) in patches.chunks_exact(d).enumerate() {
        let out = &mut data[(1 + i) * d..(2 + i) * d];
        let pos = &w.pos_embed[(1 + i) * d..(2 + i) * d];
        for ((o, x), pe) in out.iter_mut().zip(row).zip(pos) {
            *o = x + pe;
        }
    }
    note(obs, || "embed".into(), &data);
    Tokens { data, rows: 1 + n0, dim: d }
}

/// One pre-norm transformer block (number `index`), in place. Returns the attention of
/// CLS to every token (row 0 of the attention matrix, mean over heads).
pub fn block(cfg: &Config, b: &BlockWeights, index: usize, x: &mut Tokens, obs: &mut dyn Observer) -> Vec<f32> {
    let (n, d, h) = (x.rows, x.dim, cfg.num_heads);
    let hd = d / h;
    let eps = cfg.ln_eps as f32;
    // Attention.
    let y = apply_norm(&b.norm1, &x.data, eps);
    note(obs, || format!("blocks.{index}.norm1"), &y);
    let qkv = apply_linear(&b.qkv, &y, n);
    if obs.active() {
        for (part, name) in ["q", "k", "v"].iter().enumerate() {
            let cols: Vec<f32> = qkv.chunks_exact(3 * d).flat_map(|r| r[part * d..(part + 1) * d].to_vec()).collect();
            obs.see(&format!("blocks.{index}.{name}"), &cols);
        }
    }
    let mut ctx = vec![0.0f32; n * d];
    let mut scores = vec![0.0f32; n * n];
    let mut cls_attn = vec![0.0f32; n];
    let scale = (hd as f32).powf(-0.5);
    for head in 0..h {
        // scores = scale · Q_h K_hᵀ, Q_h and K_h read in place through strides.
        sgemm(
            scale,
            MatRef { data: &qkv[head * hd..], rows: n, cols: hd, rs: 3 * d, cs: 1 },
            MatRef { data: &qkv[d + head * hd..], rows: hd, cols: n, rs: 1, cs: 3 * d },
            0.0,
            MatMut { data: &mut scores, rows: n, cols: n, rs: n, cs: 1 },
        );
        kernels::softmax_rows(&mut scores, n);
        for (c, s) in cls_attn.iter_mut().zip(&scores[..n]) {
            *c += s / h as f32;
        }
        sgemm(
            1.0,
            MatRef { data: &scores, rows: n, cols: n, rs: n, cs: 1 },
            MatRef { data: &qkv[2 * d + head * hd..], rows: n, cols: hd, rs: 3 * d, cs: 1 },
            0.0,
            MatMut { data: &mut ctx[head * hd..], rows: n, cols: hd, rs: d, cs: 1 },
        );
    }
    note(obs, || format!("blocks.{index}.ctx"), &ctx);
    let attn = apply_linear(&b.proj, &ctx, n);
    for (v, a) in x.data.iter_mut().zip(&attn) {
        *v += a;
    }
    note(obs, || format!("blocks.{index}.res_attn"), &x.data);
    // MLP.
    let y = apply_norm(&b.norm2, &x.data, eps);
    note(obs, || format!("blocks.{index}.norm2"), &y);
    let mut hid = apply_linear(&b.fc1, &y, n);
    note(obs, || format!("blocks.{index}.hidden_in"), &hid);
    kernels::gelu_inplace(&mut hid);
    note(obs, || format!("blocks.{index}.hidden"), &hid);
    let out = apply_linear(&b.fc2, &hid, n);
    for (v, a) in x.data.iter_mut().zip(&out) {
        *v += a;
    }
    note(obs, || format!("blocks.{index}.res_mlp"), &x.data);
    cls_attn
}

/// Fused keep probability `p_j` of each of the `live` patch tokens (rows `1..=live`),
/// spec §2. Returns an empty vector when there is nothing to score.
pub fn selector_scores(
    cfg: &Config,
    sel: &SelectorWeights,
    stage: usize,
    x: &Tokens,
    live: usize,
    obs: &mut dyn Observer,
) -> Vec<f32> {
    if live == 0 {
        return Vec::new();
    }
    let (d_model, h) = (x.dim, cfg.num_heads);
    let d = d_model / h;
    let eps = cfg.ln_eps as f32;
    let patches = &x.data[d_model..(1 + live) * d_model];
    let mut keep = vec![0.0f32; live * h]; // t_h[j, 0], token-major
    let mut means = vec![0.0f32; live * h]; // channel mean of X_h per token
    let mut xh = vec![0.0f32; live * d];
    for (head, hw) in sel.heads.iter().enumerate() {
        for j in 0..live {
            let src = &patches[j * d_model + head * d..][..d];
            xh[j * d..(j + 1) * d].copy_from_slice(src);
            means[j * h + head] = src.iter().sum::<f32>() / d as f32;
        }
        let y = apply_norm(&hw.norm, &xh, eps);
        note(obs, || format!("selectors.{stage}.heads.{head}.norm"), &y);
        let mut u = apply_linear(&hw.fc1, &y, live);
        note(obs, || format!("selectors.{stage}.heads.{head}.u_in"), &u);
        kernels::gelu_inplace(&mut u);
        note(obs, || format!("selectors.{stage}.heads.{head}.u"), &u);
        // Global half: mean over the live tokens, broadcast to every row.
        let half = d / 2;
        let mut global = vec![0.0f32; half];
        for row in u.chunks_exact(d) {
            for (g, v) in global.iter_mut().zip(&row[half..]) {
                *g += v;
            }
        }
        for g in &mut global {
            *g /= live as f32;
        }
        for row in u.chunks_exact_mut(d) {
            row[half..].copy_from_slice(&global);
        }
        let mut f2 = apply_linear(&hw.fc2, &u, live);
        note(obs, || format!("selectors.{stage}.heads.{head}.f2_in"), &f2);
        kernels::gelu_inplace(&mut f2);
        note(obs, || format!("selectors.{stage}.heads.{head}.f2"), &f2);
        let mut f3 = apply_linear(&hw.fc3, &f2, live);
        note(obs, || format!("selectors.{stage}.heads.{head}.f3_in"), &f3);
        kernels::gelu_inplace(&mut f3);
        note(obs, || format!("selectors.{stage}.heads.{head}.f3"), &f3);
        let logits = apply_linear(&hw.fc4, &f3, live);
        for (j, l) in logits.chunks_exact(2).enumerate() {
            let mut t = [l[0], l[1]];
            kernels::softmax_rows(&mut t, 2);
            keep[j * h + head] = t[0];
        }
    }
    // Head-importance gate and fusion.
    note(obs, || format!("selectors.{stage}.gate_in"), &means);
    let mut a = apply_linear(&sel.gate_fc1, &means, live);
    note(obs, || format!("selectors.{stage}.gate_hidden_in"), &a);
    kernels::gelu_inplace(&mut a);
    note(obs, || format!("selectors.{stage}.gate_hidden"), &a);
    let a = apply_linear(&sel.gate_fc2, &a, live);
    (0..live)
        .map(|j| {
            let aj = &a[j * h..(j + 1) * h];
            let tj = &keep[j * h..(j + 1) * h];
            let mut num = 0.0f32;
            let mut den = 0.0f32;
            for (ai, ti) in aj.iter().zip(tj) {
                let s = kernels::sigmoid(*ai);
                num += s * ti;
                den += s;
            }
            num / den
        })
        .collect()
}

/// Final LayerNorm on CLS and the classifier head: the logits.
pub fn head(cfg: &Config, w: &Weights, x: &Tokens, obs: &mut dyn Observer) -> Vec<f32> {
    let cls = apply_norm(&w.norm, x.row(0), cfg.ln_eps as f32);
    note(obs, || "norm".into(), &cls);
    apply_linear(&w.head, &cls, 1)
}
