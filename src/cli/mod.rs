//! `heatvit-run`: the command-line front end. The binary only calls [`main`].
//!
//! Exit codes: 0 every image ran; 1 at least one input failed (the others were still
//! processed and reported); 2 usage, model or configuration error (nothing ran).
#![forbid(unsafe_code)]

mod bench;
mod eval;
mod heatmap;
mod output;
mod quantize;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::backend::{self, BackendChoice};
use crate::engine::Engine;
use crate::model::{Model, PruningConfig, PruningMode};
use crate::preprocess;

/// `println!` that ignores a closed stdout (`heatvit-run bench | head -1` must not
/// panic); output is best effort once the reader has gone.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}
pub(crate) use out;

pub const EXIT_OK: u8 = 0;
pub const EXIT_INPUT: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// Where the default model is looked for, in order, after `--model` and `$HEATVIT_MODEL`.
pub const DEFAULT_MODEL_DIRS: &[&str] = &["models/default", "/usr/share/heatvit/models/default"];

#[derive(Parser, Debug)]
#[command(
    name = "heatvit-run",
    version,
    about = "Classify images with a Vision Transformer using HeatViT token pruning",
    args_conflicts_with_subcommands = true,
    after_help = "Exit codes: 0 all images ran, 1 an input failed (others still processed), 2 usage or model error.\n\
                  Logging: RUST_LOG=info (or debug) on stderr."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure forward latency (warm-up, then N timed runs).
    Bench(bench::BenchArgs),
    /// Top-1 accuracy, tokens kept and MACs on a labelled idx data set (e.g. Fashion-MNIST).
    Eval(eval::EvalArgs),
    /// Calibrate on images and write a quantised (int8) model directory.
    Quantize(quantize::QuantizeArgs),
}

/// Options that choose the model, backend and pruning schedule.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model directory (config.json, model.safetensors, labels). Default: $HEATVIT_MODEL,
    /// then ./models/default, then /usr/share/heatvit/models/default.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Compute backend. `auto` uses the FPGA when present, else the best CPU path.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Override the model's pruning mode.
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub pruning: Option<PruningMode>,
    /// Override the adaptive keep threshold (0..1).
    #[arg(long, value_name = "F")]
    pub threshold: Option<f64>,
    /// Override the cumulative keep ratios of `topk` mode, one per selector
    /// (e.g. 0.7,0.49,0.343).
    #[arg(long, value_name = "R,R,..", value_delimiter = ',')]
    pub keep_ratios: Option<Vec<f64>>,
    /// Threads one image may use (the integer backend splits its GEMMs and attention
    /// heads; results do not depend on it).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
}

fn parse_mode(s: &str) -> Result<PruningMode, String> {
    s.parse()
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// One JSON object per image per line on stdout.
    #[arg(long)]
    json: bool,
    /// Add all logits to the JSON output.
    #[arg(long, requires = "json")]
    logits: bool,
    /// Add the kept original patch indices of each stage to the JSON output.
    #[arg(long, requires = "json")]
    trace: bool,
    /// Write the input with pruned patches shaded per stage to this PNG (with several
    /// images, the image's name is added: OUT-NAME.png).
    #[arg(long, value_name = "OUT.png")]
    heatmap: Option<PathBuf>,
    /// Images (PNG or JPEG).
    #[arg(value_name = "IMAGE")]
    images: Vec<PathBuf>,
}

impl ModelArgs {
    /// The model directory to use.
    pub fn model_dir(&self) -> Result<PathBuf> {
        if let Some(dir) = &self.model {
            return Ok(dir.clone());
        }
        if let Some(dir) = std::env::var_os("HEATVIT_MODEL") {
            return Ok(PathBuf::from(dir));
        }
        DEFAULT_MODEL_DIRS.iter().map(PathBuf::from).find(|p| p.join("config.json").exists()).with_context(|| {
            format!(
                "no model given and no default model found (looked in {}); pass --model DIR",
                DEFAULT_MODEL_DIRS.join(", ")
            )
        })
    }

    /// The model's own schedule with the command-line overrides applied.
    pub fn pruning(&self, model: &Model) -> PruningConfig {
        let mut p = model.config.pruning.clone();
        if let Some(mode) = self.pruning {
            p.mode = mode;
        }
        if let Some(t) = self.threshold {
            p.threshold = t;
        }
        if let Some(r) = &self.keep_ratios {
            p.keep_ratios = r.clone();
        }
        p
    }

    /// Loads the model and binds it to the chosen backend.
    pub fn engine(&self) -> Result<Engine> {
        let dir = self.model_dir()?;
        let model = Arc::new(Model::load(&dir).with_context(|| format!("cannot load model {}", dir.display()))?);
        self.engine_for(model)
    }

    pub fn engine_for(&self, model: Arc<Model>) -> Result<Engine> {
        let pruning = self.pruning(&model);
        let backend = backend::select(self.backend, Arc::clone(&model), self.threads as usize)?;
        Ok(Engine::new(model, pruning, backend)?)
    }
}

/// Entry point of the `heatvit-run` binary.
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let result = match cli.command {
        Some(Command::Bench(args)) => bench::run(&args),
        Some(Command::Eval(args)) => eval::run(&args),
        Some(Command::Quantize(args)) => quantize::run(&args),
        None => run(&cli.run),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("heatvit-run: error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn heatmap_path(base: &Path, image: &Path, many: bool) -> PathBuf {
    if !many {
        return base.to_path_buf();
    }
    let stem = base.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "heatmap".into());
    let name = image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    base.with_file_name(format!("{stem}-{name}.png"))
}

fn run(args: &RunArgs) -> Result<u8> {
    if args.images.is_empty() {
        anyhow::bail!("no images given (usage: heatvit-run [OPTIONS] IMAGE...; see --help)");
    }
    let mut engine = args.model.engine()?;
    let model = Arc::clone(engine.model());
    log::info!("model {} from {}, backend {}", model.name(), model.dir.display(), engine.backend_name());
    let mut out = output::Printer::new(&model, args.json, args.logits, args.trace);
    out.header(engine.backend_name(), engine.pruning());
    let mut failed = 0usize;
    for path in &args.images {
        let t0 = Instant::now();
        let decoded = preprocess::decode(path);
        let t1 = Instant::now();
        let result = decoded.map_err(anyhow::Error::from).and_then(|img| {
            let pre = preprocess::preprocess(&model.config, &img);
            let t2 = Instant::now();
            let inf = engine.run(&pre.tensor).with_context(|| format!("{}: inference failed", path.display()))?;
            Ok((pre, inf, t2))
        });
        match result {
            Ok((pre, inf, t2)) => {
                let timings = output::Timings {
                    decode_ms: ms(t1 - t0),
                    preprocess_ms: ms(t2 - t1),
                    forward_ms: inf.forward_ms,
                    total_ms: ms(t0.elapsed()),
                };
                out.image(path, &inf, &timings);
                if let Some(base) = &args.heatmap {
                    let dest = heatmap_path(base, path, args.images.len() > 1);
                    if let Err(e) = heatmap::write(&dest, &pre.crop, model.config.patch_size, &inf.stages) {
                        eprintln!("heatvit-run: {}: cannot write heatmap {}: {e:#}", path.display(), dest.display());
                        failed += 1;
                    }
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("heatvit-run: {e:#}");
                out.failure(path, &e);
            }
        }
    }
    Ok(if failed > 0 { EXIT_INPUT } else { EXIT_OK })
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
