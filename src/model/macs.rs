//! Multiply-accumulate accounting (spec §4). Counts the GEMM work only: LayerNorm, softmax,
//! GELU and the package token are not counted.
#![forbid(unsafe_code)]

use super::Config;

/// Patch embedding: `N0 · 3P² · D`.
pub fn embed(cfg: &Config) -> u64 {
    (cfg.num_patches() * 3 * cfg.patch_size * cfg.patch_size * cfg.embed_dim) as u64
}

/// One block on `n` tokens (CLS, live patches and packages): `(4 + 2r)·N·D² + 2·N²·D`,
/// which is the spec's `12·N·D² + 2·N²·D` for the usual MLP ratio r = 4.
pub fn block(cfg: &Config, n: usize) -> u64 {
    let (n, d, r) = (n as u64, cfg.embed_dim as u64, cfg.mlp_ratio as u64);
    (4 + 2 * r) * n * d * d + 2 * n * n * d
}

/// One selector on `n` live patch tokens with a gate of hidden width `gate_hidden`.
pub fn selector(cfg: &Config, gate_hidden: usize, n: usize) -> u64 {
    let (h, d, g, n) = (cfg.num_heads as u64, cfg.head_dim() as u64, gate_hidden as u64, n as u64);
    n * h * (d * d + d * (d / 2) + (d / 2) * (d / 4) + (d / 4) * 2) + n * (h * g + g * h)
}

/// Classifier head on CLS.
pub fn head(cfg: &Config) -> u64 {
    (cfg.embed_dim * cfg.num_classes) as u64
}

/// The dense backbone: every block on all `1 + N0` tokens, no selectors.
pub fn dense(cfg: &Config) -> u64 {
    embed(cfg) + cfg.depth as u64 * block(cfg, 1 + cfg.num_patches()) + head(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deit_geometries_match_published_gmacs() {
        // heatvit-facts §5: DeiT-T/S/B dense 1.254 / 4.599 / 17.564 GMACs.
        for (d, h, want) in [(192, 3, 1.254), (384, 6, 4.599), (768, 12, 17.564)] {
            let cfg = crate::model::synthetic::deit_config(d, h, 12, 1000);
            let g = dense(&cfg) as f64 / 1e9;
            assert!((g - want).abs() < 0.0015, "D={d}: {g} GMACs, want {want}");
        }
    }
}
