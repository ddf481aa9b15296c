//! GEMM throughput for `heatvit-run bench` and `examples/int8_gemm.rs`: each kernel on the
//! DeiT-T shapes, next to the measured instruction ceiling of its inner step. Speed is
//! measured here, never asserted in tests.
#![forbid(unsafe_code)]

use std::time::Instant;

use serde::Serialize;

use super::{gemm_i8_packed, GemmError, Isa, PackedWeights};

/// The int8 GEMMs of one DeiT-T block over all 197 tokens, and the head on CLS:
/// `(name, m, k, n)`.
pub const DEIT_TINY_SHAPES: [(&str, usize, usize, usize); 7] = [
    ("qkv", 197, 192, 576),
    ("attn.q@kT (per head)", 197, 64, 197),
    ("attn.p@v (per head)", 197, 197, 64),
    ("proj", 197, 192, 192),
    ("fc1", 197, 192, 768),
    ("fc2", 197, 768, 192),
    ("head (CLS)", 1, 192, 1000),
];

/// Timing of one GEMM shape on one kernel (weights packed once, outside the timing, as
/// a backend holds them; packing the activations is inside it).
#[derive(Debug, Clone, Serialize)]
pub struct GemmTiming {
    pub isa: String,
    pub name: String,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub runs: usize,
    pub median_us: f64,
    pub min_us: f64,
    /// Multiply-accumulates per second at the median, in 10^9.
    pub gmacs_median: f64,
    pub gmacs_best: f64,
}

/// Times `gemm_i8_packed` on `isa` for an `m × k × n` product with fixed pseudo-random
/// operands: `warmup` untimed calls, then `runs` timed ones.
pub fn time_gemm(
    isa: Isa,
    name: &str,
    m: usize,
    k: usize,
    n: usize,
    warmup: usize,
    runs: usize,
) -> Result<GemmTiming, GemmError> {
    let a = pseudo_random(m * k, 1, -127);
    let w = pseudo_random(n * k, 2, -127);
    let packed = PackedWeights::with_isa(isa, &w, n, k)?;
    let mut out = vec![0i32; m * n];
    for _ in 0..warmup {
        gemm_i8_packed(m, &a, &packed, &mut out)?;
    }
    let mut times = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        gemm_i8_packed(m, std::hint::black_box(&a), &packed, &mut out)?;
        times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(&out);
    }
    times.sort_by(f64::total_cmp);
    let (median, min) = (times[times.len() / 2], times[0]);
    let macs = (m * k * n) as f64;
    Ok(GemmTiming {
        isa: isa.name().to_string(),
        name: name.to_string(),
        m,
        k,
        n,
        runs: times.len(),
        median_us: median * 1e6,
        min_us: min * 1e6,
        gmacs_median: macs / median / 1e9,
        gmacs_best: macs / min / 1e9,
    })
}

/// The measured ceiling of a kernel's inner instruction sequence on register operands
/// (no loads, no packing), in 10^9 MACs per second on one core; `None` for scalar or an
/// ISA this CPU lacks. Best of `rounds` runs of `iters` iterations.
pub fn peak_gmacs(isa: Isa, iters: u64, rounds: usize) -> Option<f64> {
    if !isa.is_available() {
        return None;
    }
    let (macs_per_iter, run): (u64, fn(u64) -> i32) = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => (super::super::arch::x86_64::avx2::PEAK_MACS_PER_ITER, super::super::arch::x86_64::avx2::peak),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => {
            (super::super::arch::x86_64::avx512vnni::PEAK_MACS_PER_ITER, super::super::arch::x86_64::avx512vnni::peak)
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => (super::super::arch::aarch64::neon::PEAK_MACS_PER_ITER, super::super::arch::aarch64::neon::peak),
        _ => return None,
    };
    let mut best = f64::INFINITY;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        std::hint::black_box(run(std::hint::black_box(iters)));
        best = best.min(t.elapsed().as_secs_f64());
    }
    Some((macs_per_iter * iters) as f64 / best / 1e9)
}

/// The checksum a kernel's peak loop returns for `iters` iterations (tests use it to
/// show the loop does the work it is credited with).
#[cfg(test)]
pub(super) fn peak_checksum(isa: Isa, iters: u64) -> Option<(i32, i32)> {
    let (per_iter, got) = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if isa.is_available() => {
            (super::super::arch::x86_64::avx2::PEAK_MACS_PER_ITER, super::super::arch::x86_64::avx2::peak(iters))
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni if isa.is_available() => (
            super::super::arch::x86_64::avx512vnni::PEAK_MACS_PER_ITER,
            super::super::arch::x86_64::avx512vnni::peak(iters),
        ),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon if isa.is_available() => {
            (super::super::arch::aarch64::neon::PEAK_MACS_PER_ITER, super::super::arch::aarch64::neon::peak(iters))
        }
        _ => return None,
    };
    Some((got, (per_iter * iters) as i32))
}

fn pseudo_random(len: usize, seed: u64, lo: i8) -> Vec<i8> {
    let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    let span = (127 - lo as i64 + 1) as u64;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (lo as i64 + (s % span) as i64) as i8
        })
        .collect()
}
