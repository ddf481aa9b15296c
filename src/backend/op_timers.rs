//! Per-operation timers of the integer backend, compiled in only with the cargo feature
//! `op-timers` (`cargo build --release --features op-timers`): `heatvit-run bench` then
//! adds a line with the time of each kind of operation per image, summed over the blocks
//! and selectors. Without the feature, [`time`] is the operation alone and [`read`]
//! returns `None`. The timers are process-wide (every engine and thread adds to them);
//! each adds two clock reads per operation, which the bench's own figures then include.
#![forbid(unsafe_code)]

/// The operations timed, in the order of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Image quantisation, im2col, the patch GEMM and the add onto the positional rows.
    Embed,
    /// Both LayerNorms of each block.
    LayerNorm,
    /// The qkv GEMM and its requantisation to int8 (fused into the GEMM's tiles on
    /// AVX-512 VNNI).
    QkvGemm,
    /// Each head's Q gathered and K, V packed as GEMM operands.
    HeadPack,
    QkGemm,
    Softmax,
    PvGemm,
    /// P·V requantisation and the heads' contexts scattered into one matrix.
    PvRequant,
    /// The projection GEMM and its residual add (fused into the GEMM's tiles on AVX-512
    /// VNNI).
    ProjGemm,
    /// The fc1 GEMM and its requantisation to the int8 GELU input (fused as for qkv).
    Fc1Gemm,
    /// The GELU table on fc1's int8 outputs.
    Gelu,
    /// The fc2 GEMM and its residual add (fused as for the projection).
    Fc2Gemm,
    /// Token selectors (the scores, all layers).
    Selector,
}

/// Every [`Op`] with its name, in order.
pub const OPS: [(Op, &str); 13] = [
    (Op::Embed, "embed"),
    (Op::LayerNorm, "layernorm"),
    (Op::QkvGemm, "qkv gemm"),
    (Op::HeadPack, "q/k/v pack"),
    (Op::QkGemm, "q·kT gemm"),
    (Op::Softmax, "softmax"),
    (Op::PvGemm, "p·v gemm"),
    (Op::PvRequant, "p·v requant"),
    (Op::ProjGemm, "proj gemm"),
    (Op::Fc1Gemm, "fc1 gemm"),
    (Op::Gelu, "gelu"),
    (Op::Fc2Gemm, "fc2 gemm"),
    (Op::Selector, "selectors"),
];

#[cfg(feature = "op-timers")]
static NANOS: [std::sync::atomic::AtomicU64; OPS.len()] = [const { std::sync::atomic::AtomicU64::new(0) }; OPS.len()];

/// Runs `f`, adding its wall time to `op`'s timer when the feature is on.
#[inline(always)]
pub fn time<R>(op: Op, f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "op-timers")]
    {
        let t = std::time::Instant::now();
        let r = f();
        NANOS[op as usize].fetch_add(t.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        r
    }
    #[cfg(not(feature = "op-timers"))]
    {
        let _ = op;
        f()
    }
}

/// Sets every timer to 0.
pub fn reset() {
    #[cfg(feature = "op-timers")]
    for t in &NANOS {
        t.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Each operation's total in milliseconds since the last [`reset`] (`None` without the
/// feature).
pub fn read() -> Option<Vec<(&'static str, f64)>> {
    #[cfg(feature = "op-timers")]
    {
        Some(
            OPS.iter()
                .map(|&(op, name)| (name, NANOS[op as usize].load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6))
                .collect(),
        )
    }
    #[cfg(not(feature = "op-timers"))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_are_listed_in_their_own_order() {
        for (i, &(op, _)) in OPS.iter().enumerate() {
            assert_eq!(op as usize, i);
        }
        assert_eq!(time(Op::Gelu, || 41 + 1), 42);
    }

    #[cfg(feature = "op-timers")]
    #[test]
    fn timers_add_up_and_reset() {
        reset();
        time(Op::Selector, || std::thread::sleep(std::time::Duration::from_millis(2)));
        let ms = read().unwrap().into_iter().find(|&(n, _)| n == "selectors").unwrap().1;
        assert!(ms >= 2.0, "{ms}");
    }
}
