//! `config.json`: the model geometry and pruning schedule (spec §5).
//!
//! Parsed strictly: an unknown key is an error, so a typo never silently changes a model.
#![forbid(unsafe_code)]

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;

/// How the selectors turn keep probabilities into decisions (spec §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PruningMode {
    /// HeatViT: keep a token when its fused keep probability reaches the threshold.
    Adaptive,
    /// DynamicViT-style fixed cost: keep `ceil(keep_ratio × N0)` tokens by descending score.
    Topk,
    /// Skip the selectors; run the dense backbone.
    None,
    /// EViT-style baseline (not HeatViT): at each selector location keep
    /// `ceil(keep_ratio × N0)` patch tokens by the CLS attention (mean over heads) of the
    /// block just before it, and fuse the rest into a package token weighted by that
    /// attention. The selectors are not run. A comparison mode for the same backbone.
    Evit,
}

impl PruningMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PruningMode::Adaptive => "adaptive",
            PruningMode::Topk => "topk",
            PruningMode::None => "none",
            PruningMode::Evit => "evit",
        }
    }
}

impl std::str::FromStr for PruningMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "adaptive" => Ok(PruningMode::Adaptive),
            "topk" => Ok(PruningMode::Topk),
            "none" => Ok(PruningMode::None),
            "evit" => Ok(PruningMode::Evit),
            other => Err(format!("unknown pruning mode {other:?} (expected adaptive, topk, none or evit)")),
        }
    }
}

fn default_mode() -> PruningMode {
    PruningMode::Adaptive
}
fn default_threshold() -> f64 {
    0.5
}

/// The `pruning` object of `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruningConfig {
    /// 0-based block indices; the selector of stage `s` runs before block `locations[s]`.
    #[serde(default)]
    pub locations: Vec<usize>,
    #[serde(default = "default_mode")]
    pub mode: PruningMode,
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Cumulative fractions of the N0 patch tokens kept at each stage (`topk`).
    #[serde(default)]
    pub keep_ratios: Vec<f64>,
    /// Optional per-stage lower bound on kept patch tokens (`adaptive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_keep: Option<Vec<usize>>,
    /// Optional per-stage upper bound on kept patch tokens (`adaptive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keep: Option<Vec<usize>>,
}

impl Default for PruningConfig {
    fn default() -> Self {
        PruningConfig {
            locations: Vec::new(),
            mode: PruningMode::None,
            threshold: 0.5,
            keep_ratios: Vec::new(),
            min_keep: None,
            max_keep: None,
        }
    }
}

/// Resampling filter of the resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Bicubic,
    Bilinear,
}

/// The whole `config.json` (spec §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub arch: String,
    pub image_size: usize,
    pub patch_size: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_ratio: usize,
    pub num_classes: usize,
    pub ln_eps: f64,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    pub crop_pct: f64,
    pub interpolation: Interpolation,
    /// Labels file, relative to the model directory.
    pub labels: String,
    #[serde(default)]
    pub pruning: PruningConfig,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io { path: path.to_path_buf(), err: e })?;
        let cfg: Config = serde_json::from_str(&text)
            .map_err(|e| ModelError::Config { path: path.to_path_buf(), msg: e.to_string() })?;
        cfg.validate().map_err(|msg| ModelError::Config { path: path.to_path_buf(), msg })?;
        Ok(cfg)
    }

    /// Checks every invariant the forward pass relies on. The message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.arch != "deit" {
            return Err(format!("arch {:?} is not supported (only \"deit\")", self.arch));
        }
        for (name, v) in [
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
            ("embed_dim", self.embed_dim),
            ("depth", self.depth),
            ("num_heads", self.num_heads),
            ("mlp_ratio", self.mlp_ratio),
            ("num_classes", self.num_classes),
        ] {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if self.image_size > 4096 || self.embed_dim > 8192 || self.depth > 256 || self.num_classes > 1_000_000 {
            return Err("geometry is implausibly large (image_size ≤ 4096, embed_dim ≤ 8192, depth ≤ 256)".into());
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(format!("image_size {} is not a multiple of patch_size {}", self.image_size, self.patch_size));
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(format!("embed_dim {} is not a multiple of num_heads {}", self.embed_dim, self.num_heads));
        }
        if !(self.ln_eps.is_finite() && self.ln_eps > 0.0) {
            return Err(format!("ln_eps must be a positive number, got {}", self.ln_eps));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err("mean must be finite".into());
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err("std values must be positive".into());
        }
        if !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) {
            return Err(format!("crop_pct must be in (0, 1], got {}", self.crop_pct));
        }
        if self.labels.is_empty() {
            return Err("labels must name a file".into());
        }
        let p = &self.pruning;
        let stages = p.locations.len();
        for w in p.locations.windows(2) {
            if w[0] >= w[1] {
                return Err(format!("pruning.locations must be strictly increasing, got {:?}", p.locations));
            }
        }
        if let Some(&loc) = p.locations.iter().find(|&&l| l >= self.depth) {
            return Err(format!(
                "pruning.locations has block {loc}, outside the model's depth {} (blocks 0..{})",
                self.depth,
                self.depth - 1
            ));
        }
        if stages > 0 {
            let d = self.head_dim();
            if !d.is_multiple_of(4) {
                return Err(format!(
                    "head dim {d} (embed_dim / num_heads) must be a multiple of 4 for the token selector"
                ));
            }
        }
        if !(p.threshold.is_finite() && (0.0..=1.0).contains(&p.threshold)) {
            return Err(format!("pruning.threshold must be in [0, 1], got {}", p.threshold));
        }
        if !p.keep_ratios.is_empty() && p.keep_ratios.len() != stages {
            return Err(format!("pruning.keep_ratios has {} entries for {} locations", p.keep_ratios.len(), stages));
        }
        if matches!(p.mode, PruningMode::Topk | PruningMode::Evit) && stages > 0 && p.keep_ratios.is_empty() {
            return Err(format!("pruning.mode \"{}\" needs pruning.keep_ratios", p.mode.as_str()));
        }
        if p.mode == PruningMode::Evit && p.locations.first() == Some(&0) {
            return Err(
                "pruning.mode \"evit\" scores tokens by the previous block's attention: no location may be 0".into()
            );
        }
        if let Some(r) = p.keep_ratios.iter().find(|r| !(r.is_finite() && **r > 0.0 && **r <= 1.0)) {
            return Err(format!("pruning.keep_ratios must be in (0, 1], got {r}"));
        }
        for (name, v) in [("min_keep", &p.min_keep), ("max_keep", &p.max_keep)] {
            if let Some(v) = v {
                if v.len() != stages {
                    return Err(format!("pruning.{name} has {} entries for {} locations", v.len(), stages));
                }
            }
        }
        if let (Some(lo), Some(hi)) = (&p.min_keep, &p.max_keep) {
            if let Some(s) = (0..stages).find(|&s| lo[s] > hi[s]) {
                return Err(format!("pruning.min_keep[{s}] = {} exceeds pruning.max_keep[{s}] = {}", lo[s], hi[s]));
            }
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// N0: the number of patch tokens.
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    pub fn mlp_hidden(&self) -> usize {
        self.embed_dim * self.mlp_ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        serde_json::from_str(
            r#"{"arch":"deit","image_size":224,"patch_size":16,"embed_dim":192,"depth":12,
            "num_heads":3,"mlp_ratio":4,"num_classes":1000,"ln_eps":1e-6,
            "mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225],"crop_pct":0.875,
            "interpolation":"bicubic","labels":"imagenet_classes.txt",
            "pruning":{"locations":[3,6,9],"mode":"adaptive","threshold":0.5,"keep_ratios":[0.7,0.49,0.343]}}"#,
        )
        .unwrap()
    }

    #[test]
    fn spec_example_parses_and_validates() {
        let c = base();
        c.validate().unwrap();
        assert_eq!(c.num_patches(), 196);
        assert_eq!(c.head_dim(), 64);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let e = serde_json::from_str::<Config>(
            r#"{"arch":"deit","image_size":224,"patch_size":16,"embed_dim":192,"depth":12,
            "num_heads":3,"mlp_ratio":4,"num_classes":1000,"ln_eps":1e-6,
            "mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225],"crop_pct":0.875,
            "interpolation":"bicubic","labels":"x","pruning":{"locatoins":[3]}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("locatoins"), "{e}");
    }

    #[test]
    fn invalid_values_are_named() {
        type Edit = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|c| c.pruning.locations = vec![3, 12]), "outside the model's depth"),
            (Box::new(|c| c.pruning.locations = vec![6, 3, 9]), "strictly increasing"),
            (Box::new(|c| c.pruning.keep_ratios = vec![0.7]), "keep_ratios has 1"),
            (Box::new(|c| c.pruning.keep_ratios = vec![0.7, 1.5, 0.3]), "keep_ratios must be in"),
            (Box::new(|c| c.pruning.threshold = f64::NAN), "threshold"),
            (Box::new(|c| c.patch_size = 15), "multiple of patch_size"),
            (Box::new(|c| c.num_heads = 5), "multiple of num_heads"),
            (Box::new(|c| c.std = [0.2, 0.0, 0.2]), "std"),
            (Box::new(|c| c.crop_pct = 1.2), "crop_pct"),
            (Box::new(|c| c.arch = "swin".into()), "arch"),
            (Box::new(|c| c.pruning.min_keep = Some(vec![10, 10])), "min_keep has 2"),
            (
                Box::new(|c| {
                    c.pruning.min_keep = Some(vec![10, 10, 10]);
                    c.pruning.max_keep = Some(vec![10, 5, 10]);
                }),
                "exceeds",
            ),
        ];
        for (mutate, needle) in cases {
            let mut c = base();
            mutate(&mut c);
            let err = c.validate().unwrap_err();
            assert!(err.contains(needle), "expected {needle:?} in {err:?}");
        }
    }
}
