//! Random-weight models built in memory, for benchmarks at real DeiT geometry without a
//! large file in the repository. Deterministic: the same seed gives the same weights.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::Path;

use super::{Config, Interpolation, Model, ModelCard, PruningConfig, PruningMode, Tensor, TensorStore, Weights};

/// DeiT geometry (224², patch 16, MLP ratio 4) with the default HeatViT schedule.
pub fn deit_config(embed_dim: usize, num_heads: usize, depth: usize, num_classes: usize) -> Config {
    Config {
        arch: "deit".into(),
        image_size: 224,
        patch_size: 16,
        embed_dim,
        depth,
        num_heads,
        mlp_ratio: 4,
        num_classes,
        ln_eps: 1e-6,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        crop_pct: 0.875,
        interpolation: Interpolation::Bicubic,
        labels: "labels.txt".into(),
        pruning: PruningConfig {
            locations: vec![3, 6, 9],
            mode: PruningMode::Adaptive,
            threshold: 0.5,
            keep_ratios: vec![0.7, 0.49, 0.343],
            min_keep: None,
            max_keep: None,
        },
    }
}

/// The named geometries `deit-tiny`, `deit-small`, `deit-base`.
pub fn named_config(name: &str) -> Option<Config> {
    match name {
        "deit-tiny" => Some(deit_config(192, 3, 12, 1000)),
        "deit-small" => Some(deit_config(384, 6, 12, 1000)),
        "deit-base" => Some(deit_config(768, 12, 12, 1000)),
        _ => None,
    }
}

/// SplitMix64: a tiny, well-mixed deterministic generator.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // Uniform in [-1, 1).
        ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

/// All tensor names and shapes a config calls for (with selectors when it has locations).
pub fn tensor_shapes(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let (d, p, h) = (cfg.embed_dim, cfg.patch_size, cfg.num_heads);
    let hd = cfg.head_dim();
    let hidden = cfg.mlp_hidden();
    let mut v: Vec<(String, Vec<usize>)> = vec![
        ("patch_embed.proj.weight".into(), vec![d, 3, p, p]),
        ("patch_embed.proj.bias".into(), vec![d]),
        ("cls_token".into(), vec![1, 1, d]),
        ("pos_embed".into(), vec![1, 1 + cfg.num_patches(), d]),
        ("norm.weight".into(), vec![d]),
        ("norm.bias".into(), vec![d]),
        ("head.weight".into(), vec![cfg.num_classes, d]),
        ("head.bias".into(), vec![cfg.num_classes]),
    ];
    let lin = |v: &mut Vec<(String, Vec<usize>)>, name: String, o: usize, i: usize| {
        v.push((format!("{name}.weight"), vec![o, i]));
        v.push((format!("{name}.bias"), vec![o]));
    };
    for b in 0..cfg.depth {
        for n in ["norm1", "norm2"] {
            v.push((format!("blocks.{b}.{n}.weight"), vec![d]));
            v.push((format!("blocks.{b}.{n}.bias"), vec![d]));
        }
        lin(&mut v, format!("blocks.{b}.attn.qkv"), 3 * d, d);
        lin(&mut v, format!("blocks.{b}.attn.proj"), d, d);
        lin(&mut v, format!("blocks.{b}.mlp.fc1"), hidden, d);
        lin(&mut v, format!("blocks.{b}.mlp.fc2"), d, hidden);
    }
    let g = (h / 2).max(1);
    for s in 0..cfg.pruning.locations.len() {
        for i in 0..h {
            let n = format!("selectors.{s}.heads.{i}");
            v.push((format!("{n}.norm.weight"), vec![hd]));
            v.push((format!("{n}.norm.bias"), vec![hd]));
            lin(&mut v, format!("{n}.fc1"), hd, hd);
            lin(&mut v, format!("{n}.fc2"), hd / 2, hd);
            lin(&mut v, format!("{n}.fc3"), hd / 4, hd / 2);
            lin(&mut v, format!("{n}.fc4"), 2, hd / 4);
        }
        lin(&mut v, format!("selectors.{s}.gate.fc1"), g, h);
        lin(&mut v, format!("selectors.{s}.gate.fc2"), h, g);
    }
    v
}

/// Random tensors for `cfg`: LayerNorm weights 1 and biases 0, everything else uniform
/// with a fan-in scale, so activations stay in a realistic range.
pub fn random_tensors(cfg: &Config, seed: u64) -> BTreeMap<String, Tensor> {
    let mut rng = Rng(seed);
    tensor_shapes(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let is_norm = name.contains("norm");
            let data = if is_norm && name.ends_with(".weight") {
                vec![1.0; n]
            } else if is_norm {
                vec![0.0; n]
            } else {
                let fan_in = if shape.len() >= 2 { shape[1..].iter().product::<usize>() } else { 64 };
                let scale = 1.0 / (fan_in as f32).sqrt();
                (0..n).map(|_| rng.next_f32() * scale).collect()
            };
            (name, Tensor::new(shape, data))
        })
        .collect()
}

/// A complete random-weight model with generic labels.
pub fn random_model(cfg: Config, seed: u64) -> Model {
    let store = TensorStore::from_tensors(Path::new("<synthetic>"), random_tensors(&cfg, seed));
    let weights = Weights::from_store(&cfg, &store).expect("synthetic tensors match their own config");
    let labels = (0..cfg.num_classes).map(|i| format!("class {i}")).collect();
    Model {
        quant: None,
        dir: Path::new("<synthetic>").to_path_buf(),
        config: cfg,
        labels,
        card: ModelCard {
            name: Some("synthetic".into()),
            trained: false,
            description: Some("random weights generated in memory".into()),
        },
        weights,
    }
}
