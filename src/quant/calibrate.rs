//! Calibration: the float model runs on real images while an observer records the smallest
//! and largest value at every activation point; the scales follow
//! (`docs/integer-format.md` §7).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::gelu::GELU_ZERO_FROM;
use super::model::{scale_points, PointKind, QuantModel};
use super::tensor::scale_for_max_abs;
use crate::model::vit::Observer;
use crate::model::Config;

/// Headroom of the int16 residual scales over the calibrated range: images outside the
/// calibration set may carry larger residuals, and int16 has bits to spare (one bit of
/// fifteen buys a factor of two).
pub const RESIDUAL_HEADROOM: f32 = 2.0;

/// The smallest and largest value seen at each point, shared with the observer inside the
/// float backend.
#[derive(Debug, Clone, Default)]
pub struct Ranges(Arc<Mutex<BTreeMap<String, (f32, f32)>>>);

impl Ranges {
    pub fn new() -> Ranges {
        Ranges::default()
    }

    /// An observer that records into these ranges.
    pub fn observer(&self) -> Box<dyn Observer + Send> {
        Box::new(RangeObserver(self.clone()))
    }

    /// `(min, max)` per point seen so far.
    pub fn snapshot(&self) -> BTreeMap<String, (f32, f32)> {
        self.0.lock().expect("ranges lock").clone()
    }

    /// The scale of every point of `cfg`: int8 points `max|x|/127`; GELU inputs
    /// `max(max x, min(max(−x), GELU_ZERO_FROM))/127` (below −2.51 the integer GELU is 0,
    /// so saturating there loses nothing, and the int8 steps go to the positive side,
    /// where GELU passes values through); int16 points `RESIDUAL_HEADROOM·max|x|/32767`. A
    /// point never reached (e.g. a selector stage that no calibration image got to) is an
    /// error naming it.
    pub fn scales(&self, cfg: &Config) -> anyhow::Result<BTreeMap<String, f32>> {
        let seen = self.snapshot();
        let mut out = BTreeMap::new();
        for (name, kind) in scale_points(cfg) {
            let &(lo, hi) = seen.get(&name).ok_or_else(|| {
                anyhow::anyhow!("calibration never reached activation point {name} (no image got that far with this pruning schedule)")
            })?;
            let max_abs = hi.max(-lo);
            let s = match kind {
                PointKind::I8 => scale_for_max_abs(max_abs, 8)?,
                PointKind::GeluIn => scale_for_max_abs(hi.max((-lo).min(GELU_ZERO_FROM)), 8)?,
                PointKind::I16 => scale_for_max_abs(max_abs * RESIDUAL_HEADROOM, 16)?,
            };
            out.insert(name, s);
        }
        Ok(out)
    }
}

struct RangeObserver(Ranges);

impl Observer for RangeObserver {
    fn active(&self) -> bool {
        true
    }

    fn see(&mut self, name: &str, data: &[f32]) {
        // f32::min/max skip NaN; a NaN activation shows up in the logits instead.
        let (lo, hi) = data.iter().fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let mut map = (self.0).0.lock().expect("ranges lock");
        let e = map.entry(name.to_string()).or_insert((0.0, 0.0));
        *e = (e.0.min(lo), e.1.max(hi));
    }
}

/// Calibrates `model` on `images` (normalised CHW tensors) with its own pruning schedule
/// and with top-k at its keep ratios, and quantises it: the float logits of each image come back too, for comparisons.
pub fn calibrate_and_quantize(
    model: &std::sync::Arc<crate::model::Model>,
    images: &[Vec<f32>],
) -> anyhow::Result<(QuantModel, Vec<Vec<f32>>)> {
    use crate::backend::cpu_f32::CpuF32;
    use crate::engine::Engine;
    anyhow::ensure!(!images.is_empty(), "no calibration images");
    let ranges = Ranges::new();
    let backend = Box::new(CpuF32::with_observer(std::sync::Arc::clone(model), ranges.observer()));
    let mut engine = Engine::new(std::sync::Arc::clone(model), model.config.pruning.clone(), backend)?;
    let logits = images.iter().map(|t| engine.run(t).map(|i| i.logits)).collect::<Result<Vec<_>, _>>()?;
    // Top-k at the config's keep ratios as well: it reaches every selector even when the
    // adaptive schedule prunes everything early on some model, and its ranges are those
    // of a schedule users run.
    let mut topk = model.config.pruning.clone();
    if model.has_selectors() && !topk.locations.is_empty() && topk.mode != crate::model::PruningMode::Topk {
        topk.mode = crate::model::PruningMode::Topk;
        let backend = Box::new(CpuF32::with_observer(std::sync::Arc::clone(model), ranges.observer()));
        let mut engine = Engine::new(std::sync::Arc::clone(model), topk, backend)?;
        for t in images {
            engine.run(t)?;
        }
    }
    let scales = ranges.scales(&model.config)?;
    Ok((QuantModel::quantize(model, &scales)?, logits))
}
