//! The float reference backend: spec §1–3 in f32 on the CPU.
#![forbid(unsafe_code)]

use std::ops::Range;
use std::sync::Arc;

use super::{Backend, BackendError, Layout};
use crate::model::pruning::{compact_f32, Decision};
use crate::model::vit::{self, NoObserver, Observer, Tokens};
use crate::model::Model;

pub struct CpuF32 {
    model: Arc<Model>,
    state: Option<(Tokens, Layout)>,
    observer: Box<dyn Observer + Send>,
    /// CLS attention of the last block run (all rows).
    cls_attn: Vec<f32>,
}

impl CpuF32 {
    pub const NAME: &'static str = "cpu-f32";

    pub fn new(model: Arc<Model>) -> CpuF32 {
        CpuF32 { model, state: None, observer: Box::new(NoObserver), cls_attn: Vec::new() }
    }

    /// A float backend that shows its activations to `observer` (calibration).
    pub fn with_observer(model: Arc<Model>, observer: Box<dyn Observer + Send>) -> CpuF32 {
        CpuF32 { model, state: None, observer, cls_attn: Vec::new() }
    }

    /// Gives the observer back (after the images ran).
    pub fn into_observer(self) -> Box<dyn Observer + Send> {
        self.observer
    }

    fn state(&mut self, what: &str) -> Result<&mut (Tokens, Layout), BackendError> {
        self.state
            .as_mut()
            .ok_or_else(|| BackendError::Protocol { backend: Self::NAME, msg: format!("{what} before begin") })
    }
}

impl Backend for CpuF32 {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn begin(&mut self, image: &[f32]) -> Result<Layout, BackendError> {
        let cfg = &self.model.config;
        super::check_image(Self::NAME, cfg, image)?;
        let tokens = vit::embed(cfg, &self.model.weights, image, self.observer.as_mut());
        let layout = Layout { live: cfg.num_patches(), packages: 0 };
        self.state = Some((tokens, layout));
        Ok(layout)
    }

    fn run_blocks(&mut self, blocks: Range<usize>) -> Result<(), BackendError> {
        let model = Arc::clone(&self.model);
        let obs = &mut self.observer;
        let (tokens, _) = self
            .state
            .as_mut()
            .ok_or_else(|| BackendError::Protocol { backend: Self::NAME, msg: "run_blocks before begin".into() })?;
        for b in blocks {
            self.cls_attn = vit::block(&model.config, &model.weights.blocks[b], b, tokens, obs.as_mut());
        }
        Ok(())
    }

    fn score(&mut self, stage: usize) -> Result<Vec<f32>, BackendError> {
        let model = Arc::clone(&self.model);
        let sel = model.weights.selectors.get(stage).ok_or_else(|| BackendError::Failed {
            backend: Self::NAME,
            msg: format!("model has no selector for stage {stage}"),
        })?;
        let obs = &mut self.observer;
        let (tokens, layout) = self
            .state
            .as_mut()
            .ok_or_else(|| BackendError::Protocol { backend: Self::NAME, msg: "score before begin".into() })?;
        Ok(vit::selector_scores(&model.config, sel, stage, tokens, layout.live, obs.as_mut()))
    }

    fn compact(&mut self, decision: &Decision, scores: &[f32]) -> Result<Layout, BackendError> {
        let (tokens, layout) = self.state("compact")?;
        let data = compact_f32(&tokens.data, tokens.dim, layout.live, decision, scores);
        *layout =
            Layout { live: decision.kept.len(), packages: layout.packages + usize::from(decision.makes_package()) };
        tokens.rows = layout.rows();
        tokens.data = data;
        Ok(*layout)
    }

    fn cls_attention(&mut self) -> Result<Vec<f32>, BackendError> {
        let live = self
            .state
            .as_ref()
            .map(|(_, l)| l.live)
            .ok_or_else(|| BackendError::Protocol { backend: Self::NAME, msg: "cls_attention before begin".into() })?;
        if self.cls_attn.len() < 1 + live {
            return Err(BackendError::Protocol {
                backend: Self::NAME,
                msg: "cls_attention before any block ran".into(),
            });
        }
        Ok(self.cls_attn[1..=live].to_vec())
    }

    fn logits(&mut self) -> Result<Vec<f32>, BackendError> {
        let model = Arc::clone(&self.model);
        let obs = &mut self.observer;
        let (tokens, _) = self
            .state
            .as_mut()
            .ok_or_else(|| BackendError::Protocol { backend: Self::NAME, msg: "logits before begin".into() })?;
        let logits = vit::head(&model.config, &model.weights, tokens, obs.as_mut());
        self.state = None;
        Ok(logits)
    }
}
