//! The HeatViT model: config, weights by hierarchical (timm) name, the float ViT and token
//! selector, and the backend-independent pruning decision. No device code lives here.
#![forbid(unsafe_code)]

pub mod config;
pub mod macs;
pub mod pruning;
pub mod store;
pub mod synthetic;
pub mod vit;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use config::{Config, Interpolation, PruningConfig, PruningMode};
pub use store::{Tensor, TensorStore};

/// Everything that can be wrong with a model directory. Each variant names the file or
/// tensor, so the one-line message is enough to fix the problem.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// (`err` is shown in the message, so it is deliberately not the error `source`.)
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    Weights { path: PathBuf, msg: String },
    #[error("{path}: missing tensor {name}")]
    MissingTensor { path: PathBuf, name: String },
    #[error("tensor {name} has shape {found:?}, expected {expected:?}")]
    Shape { name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("tensor {name} has dtype {dtype}; expected a float type (F32, F16, BF16 or F64)")]
    Dtype { name: String, dtype: String },
    #[error("tensor {name} holds a NaN or infinite value (element {index})")]
    NonFinite { name: String, index: usize },
    #[error("{path}: unexpected tensors not used by a deit model with this config: {}", list(names))]
    UnexpectedTensors { path: PathBuf, names: Vec<String> },
    #[error("{path}: {msg}")]
    Labels { path: PathBuf, msg: String },
    #[error("model has no token selector weights (selectors.*); run it with --pruning none")]
    NoSelectors,
    #[error(transparent)]
    Quant(#[from] crate::quant::model::QuantModelError),
}

fn list(names: &[String]) -> String {
    let mut s = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        s.push_str(&format!(" and {} more", names.len() - 5));
    }
    s
}

/// A linear layer in PyTorch layout: `w` is `[out, in]` row-major.
#[derive(Debug, Clone)]
pub struct Linear {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub out_features: usize,
    pub in_features: usize,
}

#[derive(Debug, Clone)]
pub struct Norm {
    pub g: Vec<f32>,
    pub b: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct BlockWeights {
    pub norm1: Norm,
    pub qkv: Linear,
    pub proj: Linear,
    pub norm2: Norm,
    pub fc1: Linear,
    pub fc2: Linear,
}

/// One head's score branch of a token selector (spec §2 steps 1–4).
#[derive(Debug, Clone)]
pub struct SelectorHead {
    pub norm: Norm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub fc3: Linear,
    pub fc4: Linear,
}

/// A multi-head token selector with its head-importance gate.
#[derive(Debug, Clone)]
pub struct SelectorWeights {
    pub heads: Vec<SelectorHead>,
    pub gate_fc1: Linear,
    pub gate_fc2: Linear,
}

impl SelectorWeights {
    pub fn gate_hidden(&self) -> usize {
        self.gate_fc1.out_features
    }
}

#[derive(Debug, Clone)]
pub struct Weights {
    /// Patch embedding as a linear layer over flattened (c, ky, kx) patches.
    pub patch: Linear,
    pub cls_token: Vec<f32>,
    /// `(1 + N0) × D`, CLS position first.
    pub pos_embed: Vec<f32>,
    pub blocks: Vec<BlockWeights>,
    pub norm: Norm,
    pub head: Linear,
    /// One per pruning location; empty when the model has no selectors.
    pub selectors: Vec<SelectorWeights>,
}

/// Optional `model_card.json`: provenance a user should see.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModelCard {
    #[serde(default)]
    pub name: Option<String>,
    /// `false` for random-weight models whose predictions mean nothing.
    #[serde(default = "yes")]
    pub trained: bool,
    #[serde(default)]
    pub description: Option<String>,
}

fn yes() -> bool {
    true
}

/// A loaded model directory.
#[derive(Debug, Clone)]
pub struct Model {
    pub dir: PathBuf,
    pub config: Config,
    pub labels: Vec<String>,
    pub card: ModelCard,
    pub weights: Weights,
    /// The integer model, when the directory holds `model.int8.safetensors`.
    pub quant: Option<std::sync::Arc<crate::quant::model::QuantModel>>,
}

impl Model {
    /// Loads `dir/config.json`, `dir/model.safetensors`, the labels file and the optional
    /// `model_card.json`.
    pub fn load(dir: &Path) -> Result<Model, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::Io {
                path: dir.to_path_buf(),
                err: std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
            });
        }
        let config = Config::load(&dir.join("config.json"))?;
        let labels = load_labels(&dir.join(&config.labels), config.num_classes)?;
        let card_path = dir.join("model_card.json");
        let card = if card_path.exists() {
            let text =
                std::fs::read_to_string(&card_path).map_err(|e| ModelError::Io { path: card_path.clone(), err: e })?;
            serde_json::from_str(&text)
                .map_err(|e| ModelError::Config { path: card_path.clone(), msg: e.to_string() })?
        } else {
            ModelCard { trained: true, ..Default::default() }
        };
        let store = TensorStore::open(&dir.join("model.safetensors"))?;
        let weights = Weights::from_store(&config, &store)?;
        store.finish()?;
        let quant = if dir.join(crate::quant::model::INT8_FILE).exists() {
            Some(std::sync::Arc::new(crate::quant::model::QuantModel::load(dir, &config)?))
        } else {
            None
        };
        Ok(Model { dir: dir.to_path_buf(), config, labels, card, weights, quant })
    }

    /// The name to show for this model.
    pub fn name(&self) -> String {
        self.card
            .name
            .clone()
            .unwrap_or_else(|| self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
    }

    pub fn has_selectors(&self) -> bool {
        !self.weights.selectors.is_empty()
    }
}

fn load_labels(path: &Path, num_classes: usize) -> Result<Vec<String>, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io { path: path.to_path_buf(), err: e })?;
    let labels: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
    let labels: Vec<String> = match labels.iter().rposition(|l| !l.is_empty()) {
        Some(last) => labels[..=last].to_vec(),
        None => Vec::new(),
    };
    if labels.len() != num_classes {
        return Err(ModelError::Labels {
            path: path.to_path_buf(),
            msg: format!("has {} labels, config num_classes is {num_classes}", labels.len()),
        });
    }
    Ok(labels)
}

fn linear(store: &TensorStore, name: &str, out_f: usize, in_f: usize) -> Result<Linear, ModelError> {
    Ok(Linear {
        w: store.get(&format!("{name}.weight"), &[out_f, in_f])?,
        b: store.get(&format!("{name}.bias"), &[out_f])?,
        out_features: out_f,
        in_features: in_f,
    })
}

fn norm(store: &TensorStore, name: &str, d: usize) -> Result<Norm, ModelError> {
    Ok(Norm { g: store.get(&format!("{name}.weight"), &[d])?, b: store.get(&format!("{name}.bias"), &[d])? })
}

impl Weights {
    /// Reads every tensor the config calls for, checking shapes (timm key names, spec §1–2).
    pub fn from_store(cfg: &Config, store: &TensorStore) -> Result<Weights, ModelError> {
        let d = cfg.embed_dim;
        let p = cfg.patch_size;
        let n0 = cfg.num_patches();
        let hidden = cfg.mlp_hidden();
        let patch_w = store.get("patch_embed.proj.weight", &[d, 3, p, p])?;
        let patch = Linear {
            w: patch_w,
            b: store.get("patch_embed.proj.bias", &[d])?,
            out_features: d,
            in_features: 3 * p * p,
        };
        let cls_token = store.get("cls_token", &[1, 1, d])?;
        let pos_embed = store.get("pos_embed", &[1, 1 + n0, d])?;
        let blocks = (0..cfg.depth)
            .map(|i| {
                let n = |s: &str| format!("blocks.{i}.{s}");
                Ok(BlockWeights {
                    norm1: norm(store, &n("norm1"), d)?,
                    qkv: linear(store, &n("attn.qkv"), 3 * d, d)?,
                    proj: linear(store, &n("attn.proj"), d, d)?,
                    norm2: norm(store, &n("norm2"), d)?,
                    fc1: linear(store, &n("mlp.fc1"), hidden, d)?,
                    fc2: linear(store, &n("mlp.fc2"), d, hidden)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let norm_w = norm(store, "norm", d)?;
        let head = linear(store, "head", cfg.num_classes, d)?;

        let stages = cfg.pruning.locations.len();
        let has_any = store.contains("selectors.0.gate.fc1.weight");
        let needs = matches!(cfg.pruning.mode, PruningMode::Adaptive | PruningMode::Topk);
        let selectors = if stages > 0 && (has_any || needs) {
            (0..stages).map(|s| selector(cfg, store, s)).collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        Ok(Weights { patch, cls_token, pos_embed, blocks, norm: norm_w, head, selectors })
    }
}

fn selector(cfg: &Config, store: &TensorStore, s: usize) -> Result<SelectorWeights, ModelError> {
    let h = cfg.num_heads;
    let d = cfg.head_dim();
    let heads = (0..h)
        .map(|i| {
            let n = |x: &str| format!("selectors.{s}.heads.{i}.{x}");
            Ok(SelectorHead {
                norm: norm(store, &n("norm"), d)?,
                fc1: linear(store, &n("fc1"), d, d)?,
                fc2: linear(store, &n("fc2"), d / 2, d)?,
                fc3: linear(store, &n("fc3"), d / 4, d / 2)?,
                fc4: linear(store, &n("fc4"), 2, d / 4)?,
            })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    let g1 = format!("selectors.{s}.gate.fc1.weight");
    let hidden = match store.shape(&g1)? {
        [out, _] if *out > 0 => *out,
        other => return Err(ModelError::Shape { name: g1, expected: vec![(h / 2).max(1), h], found: other.to_vec() }),
    };
    Ok(SelectorWeights {
        heads,
        gate_fc1: linear(store, &format!("selectors.{s}.gate.fc1"), hidden, h)?,
        gate_fc2: linear(store, &format!("selectors.{s}.gate.fc2"), h, hidden)?,
    })
}
