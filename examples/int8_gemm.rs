//! int8 GEMM throughput on the DeiT-T shapes, every kernel this CPU can run, next to the
//! measured instruction ceiling of each kernel's inner step (one thread).
//!
//! `cargo run --release --example int8_gemm [-- --json] [--runs N]`
use heatvit::kernels::int8::{bench, Isa};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let runs = match args.iter().position(|a| a == "--runs") {
        Some(i) => args.get(i + 1).ok_or_else(|| anyhow::anyhow!("--runs needs a number"))?.parse()?,
        None => 200,
    };
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        eprintln!("{isa}: not available on this CPU");
    }
    let mut rows = Vec::new();
    for isa in Isa::available() {
        let peak = bench::peak_gmacs(isa, 2_000_000, 5);
        if !json {
            match peak {
                Some(p) => println!("{isa}: inner-step ceiling {p:.1} GMAC/s"),
                None => println!("{isa}: (no ceiling loop)"),
            }
        }
        let runs = if isa == Isa::Scalar { runs.min(20) } else { runs };
        for (name, m, k, n) in bench::DEIT_TINY_SHAPES {
            let t = bench::time_gemm(isa, name, m, k, n, 5, runs)?;
            if !json {
                println!(
                    "  {:<22} {m:>4}x{k:>4}x{n:>4}  median {:>8.1} us  min {:>8.1} us  {:>6.1} GMAC/s (best {:>6.1}){}",
                    name,
                    t.median_us,
                    t.min_us,
                    t.gmacs_median,
                    t.gmacs_best,
                    peak.map(|p| format!("  {:.0}% of ceiling", 100.0 * t.gmacs_best / p)).unwrap_or_default()
                );
            }
            rows.push((t, peak));
        }
    }
    if json {
        let out: Vec<_> = rows.iter().map(|(t, p)| serde_json::json!({"timing": t, "ceiling_gmacs": p})).collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
