//! Which tokens survive a selector (spec §3). This is the one place the decision is made:
//! every backend hands its keep probabilities here and applies the returned [`Decision`],
//! so all backends keep exactly the same tokens for the same scores.
#![forbid(unsafe_code)]

use super::{PruningConfig, PruningMode};

/// The outcome of one selector stage, as positions among the live patch tokens
/// (0-based, ascending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub kept: Vec<usize>,
    pub pruned: Vec<usize>,
}

impl Decision {
    /// Whether a package token is appended (at least one token pruned).
    pub fn makes_package(&self) -> bool {
        !self.pruned.is_empty()
    }
}

/// Why a set of scores cannot be decided on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoreError {
    #[error("selector {stage} returned {got} scores for {live} live tokens")]
    Count { stage: usize, live: usize, got: usize },
    #[error("selector {stage} returned a score outside [0, 1] for token {index}: {value}")]
    Range { stage: usize, index: usize, value: f32 },
}

/// Checks scores from a backend before trusting them (a fabric can lie).
pub fn check_scores(stage: usize, live: usize, scores: &[f32]) -> Result<(), ScoreError> {
    if scores.len() != live {
        return Err(ScoreError::Count { stage, live, got: scores.len() });
    }
    if let Some((index, &value)) = scores.iter().enumerate().find(|(_, v)| !(0.0..=1.0).contains(*v)) {
        return Err(ScoreError::Range { stage, index, value });
    }
    Ok(())
}

/// `k_s = ceil(keep_ratio × N0)`, computed in f64 as the spec's reference does.
pub fn topk_count(keep_ratio: f64, n0: usize) -> usize {
    (keep_ratio * n0 as f64).ceil() as usize
}

/// Positions of the `k` highest scores (ties: lower position first), ascending.
fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Stable sort by descending score keeps lower positions first among equals.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order.truncate(k.min(scores.len()));
    order.sort_unstable();
    order
}

/// Decides stage `stage` for the given keep probabilities of the live patch tokens.
/// `n0` is the model's patch count. Mode `none` keeps everything.
pub fn decide(cfg: &PruningConfig, stage: usize, n0: usize, scores: &[f32]) -> Decision {
    let n = scores.len();
    let kept: Vec<usize> = match cfg.mode {
        PruningMode::None => (0..n).collect(),
        PruningMode::Topk | PruningMode::Evit => {
            let k = topk_count(cfg.keep_ratios[stage], n0);
            if k >= n {
                (0..n).collect()
            } else {
                top_k(scores, k)
            }
        }
        PruningMode::Adaptive => {
            // Compared in f32, as the threshold is when a float32 tensor meets a scalar.
            let t = cfg.threshold as f32;
            let mut kept: Vec<usize> = (0..n).filter(|&j| scores[j] >= t).collect();
            let lo = cfg.min_keep.as_ref().map(|v| v[stage]).unwrap_or(0);
            let hi = cfg.max_keep.as_ref().map(|v| v[stage]).unwrap_or(usize::MAX);
            if kept.len() < lo {
                kept = top_k(scores, lo);
            } else if kept.len() > hi {
                kept = top_k(scores, hi);
            }
            kept
        }
    };
    let mut is_kept = vec![false; n];
    for &j in &kept {
        is_kept[j] = true;
    }
    let pruned = (0..n).filter(|&j| !is_kept[j]).collect();
    Decision { kept, pruned }
}

/// Applies a decision to a float token matrix `[CLS, live…, packages…]` (`dim` columns):
/// returns `[CLS, kept…, packages…, P_new]`, dense. `P_new = Σ p_j x_j / Σ p_j` over the
/// pruned tokens (their plain mean when `Σ p_j` is 0); no package when nothing is pruned.
pub fn compact_f32(data: &[f32], dim: usize, live: usize, decision: &Decision, scores: &[f32]) -> Vec<f32> {
    compact_rows(data, dim, live, decision, || {
        let wsum: f32 = decision.pruned.iter().map(|&j| scores[j]).sum();
        let mut pkg = vec![0.0f32; dim];
        let (weights, norm): (Vec<f32>, f32) = if wsum > 0.0 {
            (decision.pruned.iter().map(|&j| scores[j]).collect(), wsum)
        } else {
            (vec![1.0; decision.pruned.len()], decision.pruned.len() as f32)
        };
        for (&j, w) in decision.pruned.iter().zip(&weights) {
            for (p, x) in pkg.iter_mut().zip(&data[(1 + j) * dim..(2 + j) * dim]) {
                *p += w * x;
            }
        }
        pkg.iter().map(|p| p / norm).collect()
    })
}

/// The row movement of a compaction, for any element type: `[CLS, kept, packages,
/// P_new]` where `package` computes `P_new` (called only when something was pruned).
pub fn compact_rows<T: Copy>(
    data: &[T],
    dim: usize,
    live: usize,
    decision: &Decision,
    package: impl FnOnce() -> Vec<T>,
) -> Vec<T> {
    let rows = data.len() / dim;
    let packages = rows - 1 - live;
    let new_rows = 1 + decision.kept.len() + packages + usize::from(decision.makes_package());
    let mut out = Vec::with_capacity(new_rows * dim);
    out.extend_from_slice(&data[..dim]);
    for &j in &decision.kept {
        out.extend_from_slice(&data[(1 + j) * dim..(2 + j) * dim]);
    }
    out.extend_from_slice(&data[(1 + live) * dim..]);
    if decision.makes_package() {
        let pkg = package();
        assert_eq!(pkg.len(), dim, "compact_rows: package width");
        out.extend_from_slice(&pkg);
    }
    debug_assert_eq!(out.len(), new_rows * dim);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: PruningMode) -> PruningConfig {
        PruningConfig {
            locations: vec![1, 2],
            mode,
            threshold: 0.5,
            keep_ratios: vec![0.5, 0.25],
            min_keep: None,
            max_keep: None,
        }
    }

    #[test]
    fn adaptive_keeps_at_or_above_threshold() {
        let d = decide(&cfg(PruningMode::Adaptive), 0, 8, &[0.1, 0.5, 0.49, 0.9]);
        assert_eq!(d.kept, vec![1, 3]);
        assert_eq!(d.pruned, vec![0, 2]);
    }

    #[test]
    fn adaptive_clamps_with_min_and_max() {
        let mut c = cfg(PruningMode::Adaptive);
        c.min_keep = Some(vec![3, 0]);
        c.max_keep = Some(vec![4, 1]);
        // Only one above threshold; min 3 takes the top three, tie at 0.3 goes to index 1.
        let d = decide(&c, 0, 8, &[0.2, 0.3, 0.6, 0.3, 0.1]);
        assert_eq!(d.kept, vec![1, 2, 3]);
        let d = decide(&c, 1, 8, &[0.7, 0.9, 0.8]);
        assert_eq!(d.kept, vec![1]);
    }

    #[test]
    fn topk_uses_ceil_of_ratio_times_n0_and_breaks_ties_low_first() {
        assert_eq!(topk_count(0.7, 196), 138);
        assert_eq!(topk_count(0.49, 196), 97);
        assert_eq!(topk_count(0.343, 196), 68);
        let d = decide(&cfg(PruningMode::Topk), 0, 4, &[0.4, 0.4, 0.9, 0.4]);
        assert_eq!(d.kept, vec![0, 2]);
        // Fewer alive than k: keep all.
        let d = decide(&cfg(PruningMode::Topk), 0, 20, &[0.1, 0.2]);
        assert_eq!(d.kept, vec![0, 1]);
        assert!(!d.makes_package());
    }

    #[test]
    fn package_is_score_weighted_mean_of_pruned() {
        // CLS, 3 live tokens, 1 old package; dim 2.
        let data = [9.0, 9.0, 1.0, 0.0, 3.0, 4.0, 0.0, 2.0, 7.0, 7.0];
        let scores = [0.25, 0.9, 0.75];
        let d = Decision { kept: vec![1], pruned: vec![0, 2] };
        let out = compact_f32(&data, 2, 3, &d, &scores);
        // (0.25·[1,0] + 0.75·[0,2]) / 1.0 = [0.25, 1.5]
        assert_eq!(out, vec![9.0, 9.0, 3.0, 4.0, 7.0, 7.0, 0.25, 1.5]);
    }

    #[test]
    fn package_falls_back_to_plain_mean_when_weights_are_zero() {
        let data = [0.0, 2.0, 4.0, 6.0];
        let d = Decision { kept: vec![], pruned: vec![0, 1, 2] };
        let out = compact_f32(&data, 1, 3, &d, &[0.0, 0.0, 0.0]);
        assert_eq!(out, vec![0.0, 4.0]);
    }

    #[test]
    fn lying_scores_are_refused() {
        assert!(check_scores(0, 3, &[0.1, 0.2]).is_err());
        assert!(check_scores(0, 2, &[0.1, f32::NAN]).is_err());
        assert!(check_scores(0, 2, &[0.1, 1.5]).is_err());
        assert!(check_scores(0, 2, &[0.0, 1.0]).is_ok());
    }
}
