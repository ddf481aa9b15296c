//! A quantised HeatViT model (`docs/integer-format.md` §1–7): what the integer path
//! needs, prepared for the GEMM kernels, and its file `model.int8.safetensors`.
//!
//! A quantised model directory is an ordinary model directory plus
//! `model.int8.safetensors`. The file holds, for every Linear layer `L` (timm names):
//! `L.weight` I8 `[out, in]` (the patch embedding keeps `[D, 3, p, p]`), `L.weight_scale`
//! F32 `[out]` and `L.bias` I32 `[out]` at the accumulator scale; the LayerNorm affine
//! parameters, `cls_token` and `pos_embed` in F32 (LayerNorm runs in float on the CPU,
//! §3; the embeddings are quantised to the first residual scale at load); and one F32
//! `[1]` tensor `scale.<point>` per activation point of §7 (the names of
//! [`crate::model::vit::Observer`]). Everything is checked at load: dtypes, shapes,
//! weights in `[−127, 127]`, biases within `±2^30`, scales positive and finite, and every
//! requantisation ratio inside [`Multiplier`]'s range.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::fixed::{quantize_i16, BIAS_MAX};
use super::gelu::GeluTable;
use super::norm::LayerNormI16;
use super::tensor::{check_scale, quantize_bias, WeightsI8};
use super::{Multiplier, QuantError};
use crate::kernels::int8::PackedWeights;
use crate::model::{Config, Linear, Model, Norm, Weights};

/// File name of the integer weights inside a model directory.
pub const INT8_FILE: &str = "model.int8.safetensors";
/// `format` in the file's metadata.
pub const FORMAT: &str = "heatvit-int8";
/// `version` in the file's metadata. Version 2 added the GELU-input scales (the
/// `*_in` points of §7: GELUs take int8 inputs through a table, §4.1); version 1 files
/// lack them and are refused with a message to quantise again.
pub const VERSION: &str = "2";
/// The scale of a Q·.16 value.
pub const Q16_SCALE: f64 = 1.0 / 65536.0;
/// The scale of an attention probability entering `P·V` (Q0.7, §4.2).
pub const PROB_SCALE: f64 = 1.0 / 128.0;
/// Largest accepted activation or weight scale: far beyond any real tensor, small enough
/// that no product of two scales overflows f32.
pub const MAX_SCALE: f32 = 1e6;

/// What can be wrong with a quantised model file.
#[derive(Debug, thiserror::Error)]
pub enum QuantModelError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("{path}: tensor {name}: {msg}")]
    Tensor { path: PathBuf, name: String, msg: String },
    #[error("{path}: {name}: {err}")]
    Quant { path: PathBuf, name: String, err: QuantError },
}

/// Where an activation lives in the format (§1): int8 operand of a GEMM, int8 input of a
/// GELU (its scale set from the positive range, `gelu::GELU_ZERO_FROM`), or int16 residual.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointKind {
    I8,
    GeluIn,
    I16,
}

/// Every activation point of `cfg` that needs a scale, with its kind, in a fixed order.
pub fn scale_points(cfg: &Config) -> Vec<(String, PointKind)> {
    use PointKind::*;
    let mut v = vec![("image".to_string(), I8), ("embed".to_string(), I16)];
    for i in 0..cfg.depth {
        for (p, k) in [
            ("norm1", I8),
            ("q", I8),
            ("k", I8),
            ("v", I8),
            ("ctx", I8),
            ("res_attn", I16),
            ("norm2", I8),
            ("hidden_in", GeluIn),
            ("hidden", I8),
            ("res_mlp", I16),
        ] {
            v.push((format!("blocks.{i}.{p}"), k));
        }
    }
    for s in 0..cfg.pruning.locations.len() {
        for h in 0..cfg.num_heads {
            for (p, k) in [
                ("norm", I8),
                ("u_in", GeluIn),
                ("u", I8),
                ("f2_in", GeluIn),
                ("f2", I8),
                ("f3_in", GeluIn),
                ("f3", I8),
            ] {
                v.push((format!("selectors.{s}.heads.{h}.{p}"), k));
            }
        }
        v.push((format!("selectors.{s}.gate_in"), I8));
        v.push((format!("selectors.{s}.gate_hidden_in"), GeluIn));
        v.push((format!("selectors.{s}.gate_hidden"), I8));
    }
    v.push(("norm".to_string(), I8));
    v
}

/// The residual point the tokens are at when block `block` starts.
pub fn residual_before(block: usize) -> String {
    if block == 0 {
        "embed".into()
    } else {
        format!("blocks.{}.res_mlp", block - 1)
    }
}

/// A Linear layer ready for the integer GEMM: the stored integers, the packed weights
/// and one multiplier per output channel from the accumulator to the output scale.
#[derive(Debug, Clone)]
pub struct QLinear {
    pub weights: WeightsI8,
    pub bias: Vec<i32>,
    /// Scale of the int8 input.
    pub s_x: f32,
    pub packed: PackedWeights,
    /// Accumulator (bias added) → output scale, per output channel. Empty for the head,
    /// whose output leaves the integer path as f32.
    pub requant: Vec<Multiplier>,
}

impl QLinear {
    pub fn out_features(&self) -> usize {
        self.weights.out_features
    }

    pub fn in_features(&self) -> usize {
        self.weights.in_features
    }

    /// Accumulator scale of output channel `o`, in f64 (exact).
    pub fn acc_scale(&self, o: usize) -> f64 {
        self.s_x as f64 * self.weights.scales[o] as f64
    }

    /// `acc + bias` of channel `o`, requantised (before narrowing).
    #[inline]
    pub fn rescale(&self, o: usize, acc: i32) -> i64 {
        self.requant[o].apply(acc + self.bias[o])
    }
}

/// Output scale of a Linear layer: one for every channel, per channel, or f32 logits.
enum OutScale<'a> {
    One(f64),
    PerChannel(&'a [f64]),
    Float,
}

fn prepare(weights: WeightsI8, bias: Vec<i32>, s_x: f32, out: OutScale) -> Result<QLinear, QuantError> {
    check_scale("input activation", s_x)?;
    let (n, k) = (weights.out_features, weights.in_features);
    if bias.len() != n {
        return Err(QuantError::Shape { what: "bias".into(), got: bias.len(), want: n });
    }
    for &s in &weights.scales {
        check_scale("weight", s)?;
    }
    let requant = match out {
        OutScale::Float => Vec::new(),
        OutScale::One(s_out) => weights
            .scales
            .iter()
            .map(|&sw| Multiplier::from_ratio(s_x as f64 * sw as f64 / s_out))
            .collect::<Result<_, _>>()?,
        OutScale::PerChannel(s_out) => weights
            .scales
            .iter()
            .zip(s_out)
            .map(|(&sw, &so)| Multiplier::from_ratio(s_x as f64 * sw as f64 / so))
            .collect::<Result<_, _>>()?,
    };
    let packed = PackedWeights::new(&weights.q, n, k).map_err(|e| QuantError::Shape {
        what: format!("weights ({e})"),
        got: weights.q.len(),
        want: n * k,
    })?;
    Ok(QLinear { weights, bias, s_x, packed, requant })
}

/// One transformer block in the integer format.
#[derive(Debug, Clone)]
pub struct QBlock {
    pub norm1: LayerNormI16,
    /// Requantises Q, K and V to their own int8 scales.
    pub qkv: QLinear,
    /// `Q·Kᵀ` accumulator (`s_q·s_k`) times `1/√d_h` → Q·.16 logits.
    pub logits: Multiplier,
    /// `P·V` accumulator (`2^−7·s_v`) → int8 context (`s_ctx`).
    pub pv: Multiplier,
    /// Projection: accumulator → the residual scale after attention.
    pub proj: QLinear,
    /// Incoming residual → the residual scale after attention.
    pub res1: Multiplier,
    pub norm2: LayerNormI16,
    /// fc1 accumulator → int8 GELU input (`s_hidden_in`).
    pub fc1: QLinear,
    /// The int8 GELU: `s_hidden_in` → `s_hidden`.
    pub hidden: GeluTable,
    pub fc2: QLinear,
    /// Residual after attention → the residual scale after the MLP.
    pub res2: Multiplier,
}

/// One head of a token selector.
#[derive(Debug, Clone)]
pub struct QSelectorHead {
    pub norm: LayerNormI16,
    /// fc1, fc2, fc3 requantise to the int8 GELU inputs `u_in`, `f2_in`, `f3_in`; the
    /// tables give `u`, `f2`, `f3`.
    pub fc1: QLinear,
    pub u: GeluTable,
    pub fc2: QLinear,
    pub f2: GeluTable,
    pub fc3: QLinear,
    pub f3: GeluTable,
    /// The two logits in Q·.16.
    pub fc4: QLinear,
}

#[derive(Debug, Clone)]
pub struct QSelector {
    pub heads: Vec<QSelectorHead>,
    /// Channel mean of a head's slice (int16, residual scale) → int8 gate input.
    pub gate_in: Multiplier,
    /// Requantises to the int8 GELU input `gate_hidden_in`; the table gives `gate_hidden`.
    pub gate_fc1: QLinear,
    pub gate_hidden: GeluTable,
    /// Gate logits in Q·.16 (sigmoid input).
    pub gate_fc2: QLinear,
}

/// A whole model in the integer format.
#[derive(Debug, Clone)]
pub struct QuantModel {
    pub scales: BTreeMap<String, f32>,
    /// Patch embedding: int8 image (`s_image`) → int16 residual (`s_embed`).
    pub patch: QLinear,
    /// `(1 + N0) × D` int16 at `s_embed`: row 0 is CLS + its position, then the patch
    /// positions (added to the patch rows after requantisation).
    pub embed_rows: Vec<i16>,
    pub blocks: Vec<QBlock>,
    pub selectors: Vec<QSelector>,
    pub norm: LayerNormI16,
    /// Head: f32 logits `(acc + bias)·s_x·s_w[o]`.
    pub head: QLinear,
    /// The float parameters kept as they are (LayerNorms, embeddings), by tensor name;
    /// with the integer tensors this is exactly the file's content.
    float_params: FloatParams,
}

type FloatParams = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The stored pieces of one Linear layer.
struct StoredLinear {
    weights: WeightsI8,
    bias: Vec<i32>,
}

/// A source of the stored tensors: the float model plus scales (quantising), or a file.
trait Source {
    fn linear(&mut self, name: &str, out_f: usize, in_f: usize, s_x: f32) -> Result<StoredLinear, QuantModelError>;
    fn float(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, QuantModelError>;
    fn scale(&mut self, name: &str) -> Result<f32, QuantModelError>;
    fn path(&self) -> &Path;
    fn selectors_present(&self) -> bool;
    fn gate_width(&mut self, stage: usize, heads: usize) -> Result<usize, QuantModelError>;
}

impl QuantModel {
    /// Quantises a float model with calibrated activation scales (§1: per-channel weights
    /// by max-abs, biases at the accumulator scale).
    pub fn quantize(model: &Model, scales: &BTreeMap<String, f32>) -> Result<QuantModel, QuantModelError> {
        let mut src = FromFloat { path: model.dir.clone(), w: &model.weights, scales, cfg: &model.config };
        Self::build(&model.config, &mut src)
    }

    /// Reads `dir/model.int8.safetensors` for the model whose config is `cfg`.
    pub fn load(dir: &Path, cfg: &Config) -> Result<QuantModel, QuantModelError> {
        let path = dir.join(INT8_FILE);
        let file = |msg: String| QuantModelError::File { path: path.clone(), msg };
        let len = std::fs::metadata(&path).map_err(|e| file(e.to_string()))?.len();
        if len > crate::model::store::MAX_WEIGHTS_BYTES {
            return Err(file(format!("file is {len} bytes, more than the limit")));
        }
        let bytes = std::fs::read(&path).map_err(|e| file(e.to_string()))?;
        let (_, meta) =
            SafeTensors::read_metadata(&bytes).map_err(|e| file(format!("not a valid safetensors file: {e}")))?;
        let md = meta.metadata().clone().unwrap_or_default();
        if md.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(file(format!("metadata format is {:?}, expected {FORMAT:?}", md.get("format"))));
        }
        if md.get("version").map(String::as_str) == Some("1") {
            return Err(file(format!(
                "format version 1 has no GELU-input scales (version {VERSION} runs every GELU on int8 inputs); \
                 quantise the model again: heatvit-run quantize --model DIR --calib IMAGES --out DIR"
            )));
        }
        if md.get("version").map(String::as_str) != Some(VERSION) {
            return Err(file(format!(
                "format version {:?} is not supported (this build reads {VERSION})",
                md.get("version")
            )));
        }
        let st = SafeTensors::deserialize(&bytes).map_err(|e| file(format!("not a valid safetensors file: {e}")))?;
        let mut src = FromFile { path: path.clone(), st, used: Default::default() };
        let q = Self::build(cfg, &mut src)?;
        let unused: Vec<String> =
            src.st.names().into_iter().filter(|n| !src.used.contains(*n)).map(str::to_string).collect();
        if !unused.is_empty() {
            return Err(file(format!("unexpected tensors for this config: {}", unused.join(", "))));
        }
        Ok(q)
    }

    fn build(cfg: &Config, src: &mut dyn Source) -> Result<QuantModel, QuantModelError> {
        let path = src.path().to_path_buf();
        let qerr =
            |name: &str, err: QuantError| QuantModelError::Quant { path: path.clone(), name: name.to_string(), err };
        let mut scales = BTreeMap::new();
        for (name, _) in scale_points(cfg) {
            let s = src.scale(&name)?;
            scales.insert(name, s);
        }
        let sc = |n: &str| scales[n];
        let (d, p, n0, h) = (cfg.embed_dim, cfg.patch_size, cfg.num_patches(), cfg.num_heads);
        let hd = cfg.head_dim();
        let hidden = cfg.mlp_hidden();
        let eps = cfg.ln_eps as f32;
        let mut float_params = BTreeMap::new();
        let fl = |src: &mut dyn Source,
                  fp: &mut FloatParams,
                  name: String,
                  shape: Vec<usize>|
         -> Result<Vec<f32>, QuantModelError> {
            let v = src.float(&name, &shape)?;
            fp.insert(name, (shape, v.clone()));
            Ok(v)
        };
        let ln = |src: &mut dyn Source,
                  fp: &mut FloatParams,
                  name: &str,
                  dim: usize,
                  s_in: f32,
                  s_out: f32|
         -> Result<LayerNormI16, QuantModelError> {
            let g = fl(src, fp, format!("{name}.weight"), vec![dim])?;
            let b = fl(src, fp, format!("{name}.bias"), vec![dim])?;
            LayerNormI16::new(&g, &b, eps, s_in, s_out).map_err(|e| qerr(name, e))
        };
        let lin = |src: &mut dyn Source,
                   name: &str,
                   out_f: usize,
                   in_f: usize,
                   s_x: f32,
                   out: OutScale|
         -> Result<QLinear, QuantModelError> {
            let st = src.linear(name, out_f, in_f, s_x)?;
            prepare(st.weights, st.bias, s_x, out).map_err(|e| qerr(name, e))
        };
        let mult = |name: &str, ratio: f64| Multiplier::from_ratio(ratio).map_err(|e| qerr(name, e));
        // The int8 GELU from point `p_in` to point `p`: `s_in` into Q·.16, then to `s_out`.
        let gelu = |p_in: &str, p: &str| -> Result<GeluTable, QuantModelError> {
            Ok(GeluTable::new(mult(p_in, sc(p_in) as f64 / Q16_SCALE)?, mult(p, Q16_SCALE / sc(p) as f64)?))
        };

        let s_embed = sc("embed");
        let patch = lin(src, "patch_embed.proj", d, 3 * p * p, sc("image"), OutScale::One(s_embed as f64))?;
        let cls = fl(src, &mut float_params, "cls_token".into(), vec![1, 1, d])?;
        let pos = fl(src, &mut float_params, "pos_embed".into(), vec![1, 1 + n0, d])?;
        let mut embed_rows: Vec<i16> = pos.iter().map(|&v| quantize_i16(v, s_embed)).collect();
        for c in 0..d {
            embed_rows[c] = quantize_i16(cls[c] + pos[c], s_embed);
        }

        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let n = |s: &str| format!("blocks.{i}.{s}");
            let s_res_in = sc(&residual_before(i));
            let (s_q, s_k, s_v) = (sc(&n("q")), sc(&n("k")), sc(&n("v")));
            let (s_ra, s_rm) = (sc(&n("res_attn")), sc(&n("res_mlp")));
            let qkv_out: Vec<f64> = (0..3 * d).map(|o| [s_q, s_k, s_v][o / d] as f64).collect();
            let norm1 = ln(src, &mut float_params, &n("norm1"), d, s_res_in, sc(&n("norm1")))?;
            let qkv = lin(src, &n("attn.qkv"), 3 * d, d, sc(&n("norm1")), OutScale::PerChannel(&qkv_out))?;
            let logits = mult(&n("attn"), s_q as f64 * s_k as f64 / (hd as f64).sqrt() / Q16_SCALE)?;
            let pv = mult(&n("attn"), PROB_SCALE * s_v as f64 / sc(&n("ctx")) as f64)?;
            let proj = lin(src, &n("attn.proj"), d, d, sc(&n("ctx")), OutScale::One(s_ra as f64))?;
            let res1 = mult(&n("res_attn"), s_res_in as f64 / s_ra as f64)?;
            let norm2 = ln(src, &mut float_params, &n("norm2"), d, s_ra, sc(&n("norm2")))?;
            let fc1 = lin(src, &n("mlp.fc1"), hidden, d, sc(&n("norm2")), OutScale::One(sc(&n("hidden_in")) as f64))?;
            let hid = gelu(&n("hidden_in"), &n("hidden"))?;
            let fc2 = lin(src, &n("mlp.fc2"), d, hidden, sc(&n("hidden")), OutScale::One(s_rm as f64))?;
            let res2 = mult(&n("res_mlp"), s_ra as f64 / s_rm as f64)?;
            blocks.push(QBlock { norm1, qkv, logits, pv, proj, res1, norm2, fc1, hidden: hid, fc2, res2 });
        }

        let mut selectors = Vec::new();
        for (s, &loc) in cfg.pruning.locations.iter().enumerate() {
            if !src.selectors_present() {
                break;
            }
            let s_res = sc(&residual_before(loc));
            let mut heads = Vec::with_capacity(h);
            for hh in 0..h {
                let n = |x: &str| format!("selectors.{s}.heads.{hh}.{x}");
                let (s_n, s_u, s_f2, s_f3) = (sc(&n("norm")), sc(&n("u")), sc(&n("f2")), sc(&n("f3")));
                let to = |p: &str| OutScale::One(sc(&n(p)) as f64);
                heads.push(QSelectorHead {
                    norm: ln(src, &mut float_params, &n("norm"), hd, s_res, s_n)?,
                    fc1: lin(src, &n("fc1"), hd, hd, s_n, to("u_in"))?,
                    u: gelu(&n("u_in"), &n("u"))?,
                    fc2: lin(src, &n("fc2"), hd / 2, hd, s_u, to("f2_in"))?,
                    f2: gelu(&n("f2_in"), &n("f2"))?,
                    fc3: lin(src, &n("fc3"), hd / 4, hd / 2, s_f2, to("f3_in"))?,
                    f3: gelu(&n("f3_in"), &n("f3"))?,
                    fc4: lin(src, &n("fc4"), 2, hd / 4, s_f3, OutScale::One(Q16_SCALE))?,
                });
            }
            let n = |x: &str| format!("selectors.{s}.{x}");
            let gh = src.gate_width(s, h)?;
            let (s_gi, s_gh) = (sc(&n("gate_in")), sc(&n("gate_hidden")));
            selectors.push(QSelector {
                heads,
                gate_in: mult(&n("gate_in"), s_res as f64 / s_gi as f64)?,
                gate_fc1: lin(src, &n("gate.fc1"), gh, h, s_gi, OutScale::One(sc(&n("gate_hidden_in")) as f64))?,
                gate_hidden: gelu(&n("gate_hidden_in"), &n("gate_hidden"))?,
                gate_fc2: lin(src, &n("gate.fc2"), h, gh, s_gh, OutScale::One(Q16_SCALE))?,
            });
        }
        let norm = ln(src, &mut float_params, "norm", d, sc(&residual_before(cfg.depth)), sc("norm"))?;
        let head = lin(src, "head", cfg.num_classes, d, sc("norm"), OutScale::Float)?;
        Ok(QuantModel { scales, patch, embed_rows, blocks, selectors, norm, head, float_params })
    }

    /// Writes `dir/model.int8.safetensors` (atomically: temp file, then rename).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut lin = |name: &str, l: &QLinear, shape: Vec<usize>| {
            tensors.push((format!("{name}.weight"), Dtype::I8, shape, l.weights.q.iter().map(|&v| v as u8).collect()));
            tensors.push((
                format!("{name}.weight_scale"),
                Dtype::F32,
                vec![l.out_features()],
                l.weights.scales.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
            tensors.push((
                format!("{name}.bias"),
                Dtype::I32,
                vec![l.out_features()],
                l.bias.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
        };
        let d = self.patch.out_features();
        let p2 = self.patch.in_features() / 3;
        let p = (p2 as f64).sqrt().round() as usize;
        lin("patch_embed.proj", &self.patch, vec![d, 3, p, p]);
        for (i, b) in self.blocks.iter().enumerate() {
            for (n, l) in [("attn.qkv", &b.qkv), ("attn.proj", &b.proj), ("mlp.fc1", &b.fc1), ("mlp.fc2", &b.fc2)] {
                lin(&format!("blocks.{i}.{n}"), l, vec![l.out_features(), l.in_features()]);
            }
        }
        for (s, sel) in self.selectors.iter().enumerate() {
            for (h, hd) in sel.heads.iter().enumerate() {
                for (n, l) in [("fc1", &hd.fc1), ("fc2", &hd.fc2), ("fc3", &hd.fc3), ("fc4", &hd.fc4)] {
                    lin(&format!("selectors.{s}.heads.{h}.{n}"), l, vec![l.out_features(), l.in_features()]);
                }
            }
            for (n, l) in [("gate.fc1", &sel.gate_fc1), ("gate.fc2", &sel.gate_fc2)] {
                lin(&format!("selectors.{s}.{n}"), l, vec![l.out_features(), l.in_features()]);
            }
        }
        lin("head", &self.head, vec![self.head.out_features(), d]);
        for (name, (shape, v)) in &self.float_params {
            tensors.push((name.clone(), Dtype::F32, shape.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect()));
        }
        for (name, s) in &self.scales {
            tensors.push((format!("scale.{name}"), Dtype::F32, vec![1], s.to_le_bytes().to_vec()));
        }
        let views = tensors
            .iter()
            .map(|(n, dt, shape, data)| {
                Ok((n.clone(), safetensors::tensor::TensorView::new(*dt, shape.clone(), data)?))
            })
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
        let meta: std::collections::HashMap<String, String> =
            [("format".to_string(), FORMAT.to_string()), ("version".to_string(), VERSION.to_string())].into();
        let bytes = canonical_header(safetensors::serialize(views, Some(meta))?)?;
        let path = dir.join(INT8_FILE);
        let tmp = dir.join(format!(".{INT8_FILE}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }
}

/// Rewrites a safetensors file's JSON header with its keys sorted, so that saving the
/// same model twice gives the same bytes. `safetensors::serialize` takes the metadata as a
/// `HashMap`, whose iteration order (and so the header text) changes from run to run;
/// serde_json's default `Map` is a `BTreeMap`, so a parse and re-print sorts every object.
/// The re-printed header has the same length as the original (same content, compact
/// either way), and keeps the space padding that aligns the data to 8 bytes.
fn canonical_header(mut bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let bad = || anyhow::anyhow!("safetensors::serialize produced a file without a valid header");
    let n = u64::from_le_bytes(bytes.get(..8).ok_or_else(bad)?.try_into()?) as usize;
    let header = bytes.get(8..8 + n).ok_or_else(bad)?;
    let value: serde_json::Value = serde_json::from_slice(header)?;
    let sorted = serde_json::to_vec(&value)?;
    anyhow::ensure!(sorted.len() <= n, "re-printed safetensors header grew from {n} to {} bytes", sorted.len());
    bytes[8..8 + sorted.len()].copy_from_slice(&sorted);
    bytes[8 + sorted.len()..8 + n].fill(b' ');
    Ok(bytes)
}

// ---- sources ------------------------------------------------------------------------

struct FromFloat<'a> {
    path: PathBuf,
    w: &'a Weights,
    scales: &'a BTreeMap<String, f32>,
    cfg: &'a Config,
}

impl FromFloat<'_> {
    fn find_linear(&self, name: &str) -> Option<&Linear> {
        let w = self.w;
        if name == "patch_embed.proj" {
            return Some(&w.patch);
        }
        if name == "head" {
            return Some(&w.head);
        }
        let parts: Vec<&str> = name.split('.').collect();
        match parts.as_slice() {
            ["blocks", i, rest @ ..] => {
                let b = w.blocks.get(i.parse::<usize>().ok()?)?;
                Some(match rest {
                    ["attn", "qkv"] => &b.qkv,
                    ["attn", "proj"] => &b.proj,
                    ["mlp", "fc1"] => &b.fc1,
                    ["mlp", "fc2"] => &b.fc2,
                    _ => return None,
                })
            }
            ["selectors", s, "heads", h, fc] => {
                let hd = w.selectors.get(s.parse::<usize>().ok()?)?.heads.get(h.parse::<usize>().ok()?)?;
                Some(match *fc {
                    "fc1" => &hd.fc1,
                    "fc2" => &hd.fc2,
                    "fc3" => &hd.fc3,
                    "fc4" => &hd.fc4,
                    _ => return None,
                })
            }
            ["selectors", s, "gate", fc] => {
                let sel = w.selectors.get(s.parse::<usize>().ok()?)?;
                Some(match *fc {
                    "fc1" => &sel.gate_fc1,
                    "fc2" => &sel.gate_fc2,
                    _ => return None,
                })
            }
            _ => None,
        }
    }

    fn find_norm(&self, name: &str) -> Option<&Norm> {
        let w = self.w;
        let parts: Vec<&str> = name.split('.').collect();
        match parts.as_slice() {
            ["norm"] => Some(&w.norm),
            ["blocks", i, "norm1"] => Some(&w.blocks.get(i.parse::<usize>().ok()?)?.norm1),
            ["blocks", i, "norm2"] => Some(&w.blocks.get(i.parse::<usize>().ok()?)?.norm2),
            ["selectors", s, "heads", h, "norm"] => {
                Some(&w.selectors.get(s.parse::<usize>().ok()?)?.heads.get(h.parse::<usize>().ok()?)?.norm)
            }
            _ => None,
        }
    }
}

impl Source for FromFloat<'_> {
    fn linear(&mut self, name: &str, out_f: usize, in_f: usize, s_x: f32) -> Result<StoredLinear, QuantModelError> {
        let l = self.find_linear(name).ok_or_else(|| QuantModelError::Tensor {
            path: self.path.clone(),
            name: name.into(),
            msg: "no such layer in the float model".into(),
        })?;
        debug_assert_eq!((l.out_features, l.in_features), (out_f, in_f));
        let qe = |err| QuantModelError::Quant { path: self.path.clone(), name: name.into(), err };
        let weights = WeightsI8::quantize(&l.w, out_f, name).map_err(qe)?;
        let bias = quantize_bias(&l.b, s_x, &weights.scales).map_err(qe)?;
        Ok(StoredLinear { weights, bias })
    }

    fn float(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, QuantModelError> {
        let w = self.w;
        let v = match name {
            "cls_token" => w.cls_token.clone(),
            "pos_embed" => w.pos_embed.clone(),
            _ => {
                let (base, which) = name.rsplit_once('.').unwrap_or((name, ""));
                let n = self.find_norm(base).ok_or_else(|| QuantModelError::Tensor {
                    path: self.path.clone(),
                    name: name.into(),
                    msg: "no such tensor in the float model".into(),
                })?;
                if which == "weight" {
                    n.g.clone()
                } else {
                    n.b.clone()
                }
            }
        };
        debug_assert_eq!(v.len(), shape.iter().product::<usize>());
        Ok(v)
    }

    fn scale(&mut self, name: &str) -> Result<f32, QuantModelError> {
        let s = *self.scales.get(name).ok_or_else(|| QuantModelError::Tensor {
            path: self.path.clone(),
            name: format!("scale.{name}"),
            msg: "no calibrated scale for this point".into(),
        })?;
        check_activation_scale(&self.path, name, s)?;
        Ok(s)
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn selectors_present(&self) -> bool {
        !self.w.selectors.is_empty() && !self.cfg.pruning.locations.is_empty()
    }
    fn gate_width(&mut self, stage: usize, _heads: usize) -> Result<usize, QuantModelError> {
        Ok(self.w.selectors[stage].gate_hidden())
    }
}

fn check_activation_scale(path: &Path, name: &str, s: f32) -> Result<(), QuantModelError> {
    if !(s.is_finite() && s > 0.0 && s <= MAX_SCALE) {
        return Err(QuantModelError::Tensor {
            path: path.to_path_buf(),
            name: format!("scale.{name}"),
            msg: format!("scale {s} is not a positive finite number ≤ {MAX_SCALE}"),
        });
    }
    Ok(())
}

struct FromFile<'a> {
    path: PathBuf,
    st: SafeTensors<'a>,
    used: std::collections::BTreeSet<String>,
}

impl FromFile<'_> {
    fn raw(&mut self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<Vec<u8>, QuantModelError> {
        let err = |msg: String| QuantModelError::Tensor { path: self.path.clone(), name: name.into(), msg };
        let view = self.st.tensor(name).map_err(|_| err("missing".into()))?;
        if view.dtype() != dtype {
            return Err(err(format!("dtype {:?}, expected {dtype:?}", view.dtype())));
        }
        if view.shape() != shape {
            return Err(err(format!("shape {:?}, expected {shape:?}", view.shape())));
        }
        self.used.insert(name.to_string());
        Ok(view.data().to_vec())
    }

    fn f32s(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, QuantModelError> {
        let raw = self.raw(name, Dtype::F32, shape)?;
        let v: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(QuantModelError::Tensor {
                path: self.path.clone(),
                name: name.into(),
                msg: format!("element {i} is NaN or infinite"),
            });
        }
        Ok(v)
    }
}

impl Source for FromFile<'_> {
    fn linear(&mut self, name: &str, out_f: usize, in_f: usize, _s_x: f32) -> Result<StoredLinear, QuantModelError> {
        let wname = format!("{name}.weight");
        let shape = if name == "patch_embed.proj" {
            let p = ((in_f / 3) as f64).sqrt().round() as usize;
            vec![out_f, 3, p, p]
        } else {
            vec![out_f, in_f]
        };
        let q: Vec<i8> = self.raw(&wname, Dtype::I8, &shape)?.into_iter().map(|b| b as i8).collect();
        if let Some(i) = q.iter().position(|&v| v == i8::MIN) {
            return Err(QuantModelError::Tensor {
                path: self.path.clone(),
                name: wname,
                msg: format!("element {i} is −128; the format's weights lie in [−127, 127]"),
            });
        }
        let sname = format!("{name}.weight_scale");
        let scales = self.f32s(&sname, &[out_f])?;
        if let Some((i, s)) = scales.iter().enumerate().find(|(_, &s)| !(s > 0.0 && s <= MAX_SCALE)) {
            return Err(QuantModelError::Tensor {
                path: self.path.clone(),
                name: sname,
                msg: format!("channel {i}: scale {s} is not a positive finite number ≤ {MAX_SCALE}"),
            });
        }
        let bname = format!("{name}.bias");
        let bias: Vec<i32> = self
            .raw(&bname, Dtype::I32, &[out_f])?
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(i) = bias.iter().position(|&b| (b as i64).abs() > BIAS_MAX) {
            return Err(QuantModelError::Tensor {
                path: self.path.clone(),
                name: bname,
                msg: format!("element {i} is outside ±2^30"),
            });
        }
        Ok(StoredLinear { weights: WeightsI8 { q, scales, out_features: out_f, in_features: in_f }, bias })
    }

    fn float(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, QuantModelError> {
        self.f32s(name, shape)
    }

    fn scale(&mut self, name: &str) -> Result<f32, QuantModelError> {
        let v =
            self.f32s(&format!("scale.{name}"), &[1]).map_err(|e| match self.st.tensor(&format!("scale.{name}")) {
                Ok(_) => e,
                Err(_) => QuantModelError::Tensor {
                    path: self.path.clone(),
                    name: format!("scale.{name}"),
                    msg: "missing (every activation point needs a scale)".into(),
                },
            })?;
        check_activation_scale(&self.path, name, v[0])?;
        Ok(v[0])
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn selectors_present(&self) -> bool {
        self.st.tensor("selectors.0.gate.fc1.weight").is_ok()
    }
    fn gate_width(&mut self, stage: usize, heads: usize) -> Result<usize, QuantModelError> {
        let name = format!("selectors.{stage}.gate.fc1.weight");
        match self.st.tensor(&name).map(|v| v.shape().to_vec()) {
            Ok(s) if s.len() == 2 && s[0] > 0 && s[1] == heads => Ok(s[0]),
            Ok(s) => Err(QuantModelError::Tensor {
                path: self.path.clone(),
                name,
                msg: format!("shape {s:?}, expected [hidden, {heads}]"),
            }),
            Err(_) => Err(QuantModelError::Tensor { path: self.path.clone(), name, msg: "missing".into() }),
        }
    }
}
