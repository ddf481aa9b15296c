//! `heatvit-run bench`: forward latency over repeated runs, for `docs/`. Speed is measured
//! here, never asserted in tests.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use super::out;
use super::{ModelArgs, EXIT_OK};
use crate::model::{synthetic, Model};
use crate::preprocess;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Use a random-weight model of this geometry instead of a model directory:
    /// deit-tiny, deit-small or deit-base (selectors before blocks 3, 6, 9).
    #[arg(long, value_name = "NAME", conflicts_with = "model")]
    synthetic: Option<String>,
    /// Input image (default: a deterministic synthetic image).
    #[arg(long, value_name = "IMAGE")]
    image: Option<std::path::PathBuf>,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Also time the int8 GEMM kernel on the DeiT-T shapes and measure this core's int8
    /// peak (the kernel's inner loop on registers).
    #[arg(long)]
    gemm: bool,
    /// Instead of the whole forward pass, time one transformer block at token counts from
    /// 1 + N0 down to 2 (about 12 steps) on the chosen backend: the keep-ratio → block
    /// latency table of HeatViT's latency-aware schedule. Prints JSON lines.
    #[arg(long)]
    block_lut: bool,
}

#[derive(Serialize)]
struct Report {
    model: String,
    backend: String,
    pruning: String,
    runs: usize,
    median_ms: f64,
    min_ms: f64,
    mean_ms: f64,
    macs: u64,
    dense_macs: u64,
    gmacs_per_s: f64,
    kept_per_stage: Vec<usize>,
    peak_rss_mb: Option<f64>,
    /// Median and min of each part of the forward pass, in order.
    spans: Vec<SpanStats>,
    /// With `--gemm`: the int8 kernel on the DeiT-T shapes.
    #[serde(skip_serializing_if = "Option::is_none")]
    gemm: Option<GemmReport>,
    /// In a build with the `op-timers` feature: the integer backend's time per image in
    /// each kind of operation (mean over the timed runs, ms), in the order of a block.
    #[serde(skip_serializing_if = "Option::is_none")]
    ops_ms: Option<Vec<(String, f64)>>,
}

#[derive(Serialize)]
struct GemmReport {
    isa: String,
    /// Peak of the kernel's inner instruction sequence on registers, GMAC/s.
    peak_gmacs: Option<f64>,
    shapes: Vec<GemmShape>,
}

#[derive(Serialize)]
struct GemmShape {
    name: String,
    m: usize,
    k: usize,
    n: usize,
    median_gmacs: f64,
    best_gmacs: f64,
    pct_of_peak: Option<f64>,
}

fn gemm_report(runs: usize) -> Result<GemmReport> {
    use crate::kernels::int8::{bench, selected_isa};
    let isa = selected_isa();
    let peak = bench::peak_gmacs(isa, 2_000_000, 5);
    let mut shapes = Vec::new();
    for (name, m, k, n) in bench::DEIT_TINY_SHAPES {
        let t = bench::time_gemm(isa, name, m, k, n, 5, runs.max(20))?;
        shapes.push(GemmShape {
            name: name.to_string(),
            m,
            k,
            n,
            median_gmacs: t.gmacs_median,
            best_gmacs: t.gmacs_best,
            pct_of_peak: peak.map(|p| 100.0 * t.gmacs_median / p),
        });
    }
    Ok(GemmReport { isa: isa.to_string(), peak_gmacs: peak, shapes })
}

/// A one-line progress indicator on stderr, only when stderr is a terminal and the runs
/// take long enough to wonder about.
struct Progress {
    on: bool,
    total: usize,
    start: Instant,
}

impl Progress {
    fn new(total: usize) -> Progress {
        use std::io::IsTerminal;
        Progress { on: std::io::stderr().is_terminal(), total, start: Instant::now() }
    }

    fn tick(&self, done: usize) {
        if self.on && self.start.elapsed().as_secs_f64() > 2.0 {
            let width = 30;
            let filled = width * done / self.total.max(1);
            eprint!("\r[{}{}] {done}/{} runs", "#".repeat(filled), " ".repeat(width - filled), self.total);
            if done == self.total {
                eprintln!();
            }
        }
    }
}

#[derive(Serialize)]
struct SpanStats {
    name: String,
    median_ms: f64,
    min_ms: f64,
}

/// A deterministic input tensor (values in [−1, 1)), different per `seed`.
fn synthetic_image(size: usize, seed: usize) -> Vec<f32> {
    (0..3 * size * size).map(|i| (((i + 131 * seed) * 7919 % 1000) as f32 / 500.0) - 1.0).collect()
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Peak resident set size from /proc (Linux), in MiB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(args: &BenchArgs) -> Result<u8> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let model = match &args.synthetic {
        Some(name) => {
            let cfg = synthetic::named_config(name)
                .with_context(|| format!("unknown --synthetic {name:?} (deit-tiny, deit-small, deit-base)"))?;
            let mut m = synthetic::random_model(cfg, 0x5eed);
            if args.model.backend == crate::backend::BackendChoice::CpuInt8 {
                // Quantise in memory, calibrated on a few deterministic synthetic images.
                let m0 = Arc::new(m.clone());
                let images: Vec<Vec<f32>> = (0..4).map(|seed| synthetic_image(m.config.image_size, seed)).collect();
                let (q, _) = crate::quant::calibrate::calibrate_and_quantize(&m0, &images)?;
                m.quant = Some(Arc::new(q));
            }
            Arc::new(m)
        }
        None => {
            let dir = args.model.model_dir()?;
            Arc::new(Model::load(&dir).with_context(|| format!("cannot load model {}", dir.display()))?)
        }
    };
    if args.block_lut {
        return block_lut(args, &model);
    }
    let mut engine = args.model.engine_for(Arc::clone(&model))?;
    let cfg = &model.config;
    let tensor = match &args.image {
        Some(p) => preprocess::load(cfg, p)?.tensor,
        None => synthetic_image(cfg.image_size, 0),
    };
    for _ in 0..args.warmup {
        engine.run(&tensor)?;
    }
    crate::backend::op_timers::reset();
    let mut times = Vec::with_capacity(args.runs);
    let mut span_times: Vec<(String, Vec<f64>)> = Vec::new();
    let mut last = None;
    let progress = Progress::new(args.runs);
    for run in 0..args.runs {
        let t = Instant::now();
        let inf = engine.run(&tensor)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if span_times.is_empty() {
            span_times = inf.spans.iter().map(|s| (s.name.clone(), Vec::new())).collect();
        }
        // Same input, same schedule: the spans line up run after run.
        for ((name, v), s) in span_times.iter_mut().zip(&inf.spans) {
            debug_assert_eq!(name, &s.name);
            v.push(s.ms);
        }
        last = Some(inf);
        progress.tick(run + 1);
    }
    let inf = last.expect("runs ≥ 1");
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median_ms = median(&sorted);
    let spans = span_times
        .into_iter()
        .map(|(name, mut v)| {
            v.sort_by(f64::total_cmp);
            SpanStats { name, median_ms: median(&v), min_ms: v[0] }
        })
        .collect();
    let report = Report {
        model: model.name(),
        backend: engine.backend_name().to_string(),
        pruning: engine.pruning().mode.as_str().to_string(),
        runs: args.runs,
        median_ms,
        min_ms: sorted[0],
        mean_ms: times.iter().sum::<f64>() / times.len() as f64,
        macs: inf.macs,
        dense_macs: inf.dense_macs,
        gmacs_per_s: inf.macs as f64 / (median_ms * 1e-3) / 1e9,
        kept_per_stage: inf.stages.iter().map(|s| s.kept).collect(),
        peak_rss_mb: peak_rss_mb(),
        spans,
        ops_ms: crate::backend::op_timers::read()
            .filter(|ops| ops.iter().any(|&(_, ms)| ms > 0.0))
            .map(|ops| ops.into_iter().map(|(name, ms)| (name.to_string(), ms / args.runs as f64)).collect()),
        gemm: if args.gemm { Some(gemm_report(args.runs)?) } else { None },
    };
    if args.json {
        out!("{}", serde_json::to_string(&report)?);
    } else {
        out!(
            "{} [{}] pruning {}: median {:.2} ms, min {:.2} ms over {} runs; {:.3} GMAC ({:.1}% of dense), {:.1} GMAC/s; kept {:?}; peak RSS {}",
            report.model,
            report.backend,
            report.pruning,
            report.median_ms,
            report.min_ms,
            report.runs,
            report.macs as f64 / 1e9,
            100.0 * report.macs as f64 / report.dense_macs as f64,
            report.gmacs_per_s,
            report.kept_per_stage,
            report.peak_rss_mb.map(|m| format!("{m:.0} MiB")).unwrap_or_else(|| "n/a".into())
        );
        let parts: Vec<String> =
            report.spans.iter().map(|s| format!("{} {:.2}/{:.2}", s.name, s.median_ms, s.min_ms)).collect();
        out!("  per part (median/min ms): {}", parts.join(", "));
        if let Some(ops) = &report.ops_ms {
            let total: f64 = ops.iter().map(|(_, ms)| ms).sum();
            let ops: Vec<String> = ops.iter().map(|(name, ms)| format!("{name} {ms:.3}")).collect();
            out!("  per operation (ms per image, mean; {total:.2} in all): {}", ops.join(", "));
        }
        if let Some(g) = &report.gemm {
            out!(
                "  int8 GEMM ({}), peak {}:",
                g.isa,
                g.peak_gmacs.map(|p| format!("{p:.1} GMAC/s")).unwrap_or_else(|| "n/a".into())
            );
            for sh in &g.shapes {
                out!(
                    "    {:<6} {}×{}×{}: median {:.1} GMAC/s, best {:.1}{}",
                    sh.name,
                    sh.m,
                    sh.k,
                    sh.n,
                    sh.median_gmacs,
                    sh.best_gmacs,
                    sh.pct_of_peak.map(|p| format!(" ({p:.0}% of peak)")).unwrap_or_default()
                );
            }
        }
    }
    Ok(EXIT_OK)
}

#[derive(Serialize)]
struct LutRow {
    backend: &'static str,
    tokens: usize,
    keep_ratio: f64,
    median_us: f64,
    min_us: f64,
    macs: u64,
}

/// Times block 0 at decreasing token counts (the tokens are the embedded synthetic image,
/// truncated), float or integer; the integer block on reused buffers.
fn block_lut(args: &BenchArgs, model: &Arc<Model>) -> Result<u8> {
    use crate::model::{macs, vit};
    let cfg = &model.config;
    let n0 = cfg.num_patches();
    let image = synthetic_image(cfg.image_size, 0);
    let int8 = match args.model.backend {
        crate::backend::BackendChoice::CpuF32 => false,
        crate::backend::BackendChoice::CpuInt8 => true,
        _ => model.quant.is_some(),
    };
    let steps = 12usize;
    let mut counts: Vec<usize> = (0..=steps).map(|i| 1 + n0 - (n0 - 1) * i / steps).collect();
    counts.dedup();
    // The integer block runs on buffers reused from run to run, as in the runtime (which
    // keeps them from block to block and image to image): the table is the block's cost,
    // not that of allocating its buffers.
    let mut scratch = crate::backend::cpu_int8::Scratch::default();
    for &n in &counts {
        let mut times = Vec::with_capacity(args.runs);
        for run in 0..args.warmup + args.runs {
            let t = if int8 {
                let q = model.quant.as_ref().context("--backend cpu-int8 needs a quantised model")?;
                let mut x = crate::backend::cpu_int8::embed(q, cfg, &image, args.model.threads as usize)?;
                x.truncate(n * cfg.embed_dim);
                let t = Instant::now();
                let threads = args.model.threads as usize;
                crate::backend::cpu_int8::block_with(
                    &q.blocks[0],
                    cfg.num_heads,
                    &mut x,
                    n,
                    threads,
                    &mut scratch,
                    None,
                )?;
                t.elapsed()
            } else {
                let mut x = vit::embed(cfg, &model.weights, &image, &mut vit::NoObserver);
                x.data.truncate(n * cfg.embed_dim);
                x.rows = n;
                let t = Instant::now();
                vit::block(cfg, &model.weights.blocks[0], 0, &mut x, &mut vit::NoObserver);
                t.elapsed()
            };
            if run >= args.warmup {
                times.push(t.as_secs_f64() * 1e6);
            }
        }
        times.sort_by(f64::total_cmp);
        let row = LutRow {
            backend: if int8 { "cpu-int8" } else { "cpu-f32" },
            tokens: n,
            keep_ratio: (n - 1) as f64 / n0 as f64,
            median_us: median(&times),
            min_us: times[0],
            macs: macs::block(cfg, n),
        };
        if args.json {
            out!("{}", serde_json::to_string(&row)?);
        } else {
            out!(
                "{} block at {:>4} tokens (keep {:.2}): median {:>9.1} µs, min {:>9.1} µs, {:.2} MMAC",
                row.backend,
                row.tokens,
                row.keep_ratio,
                row.median_us,
                row.min_us,
                row.macs as f64 / 1e6
            );
        }
    }
    Ok(EXIT_OK)
}
