//! PLAN sigmoid (Amin, Curtis, Hayes-Gill 1997) in fixed point (`docs/integer-format.md`
//! §4.3): three slopes that are powers of two, so the fabric needs only shifts and adds.
//!
//! For `a = |x|`: `y = 1` (a ≥ 5), `a/32 + 27/32` (2.375 ≤ a < 5), `a/8 + 5/8`
//! (1 ≤ a < 2.375), `a/4 + 1/2` (a < 1); `σ(x) = y` for x ≥ 0, `1 − y` for x < 0.
#![forbid(unsafe_code)]

use super::fixed::{shift_round, ONE_Q16};

/// Segment starts in Q·.16: 1, 2.375, 5 (all exact).
pub const T1_Q16: i64 = 1 << 16;
pub const T2_Q16: i64 = 155648;
pub const T3_Q16: i64 = 5 << 16;

/// PLAN σ of `x` (Q·.16, any int32) in UQ0.16 (`0..=65536`): each slope is a rounded
/// right shift of `|x|`, each offset exact, and `1 − y` is exact, so the result is the
/// real PLAN value rounded half up (half down for negative `x`).
#[inline]
pub fn sigmoid_q16(x: i32) -> u32 {
    let a = (x as i64).abs();
    let y = if a >= T3_Q16 {
        ONE_Q16
    } else if a >= T2_Q16 {
        shift_round(a, 5) + 55296 // 27/32
    } else if a >= T1_Q16 {
        shift_round(a, 3) + 40960 // 5/8
    } else {
        shift_round(a, 2) + 32768 // 1/2
    };
    (if x < 0 { ONE_Q16 - y } else { y }) as u32
}

/// The float twin: PLAN with real arithmetic (f64).
pub fn sigmoid_plan(x: f64) -> f64 {
    let a = x.abs();
    let y = if a >= 5.0 {
        1.0
    } else if a >= 2.375 {
        a / 32.0 + 27.0 / 32.0
    } else if a >= 1.0 {
        a / 8.0 + 5.0 / 8.0
    } else {
        a / 4.0 + 0.5
    };
    if x < 0.0 {
        1.0 - y
    } else {
        y
    }
}

pub fn sigmoid_exact(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: f64 = 65536.0;

    #[test]
    fn thresholds_are_exact() {
        assert_eq!(T2_Q16 as f64, 2.375 * Q);
        assert_eq!(sigmoid_q16(0), 32768);
        assert_eq!(sigmoid_q16(5 << 16), 65536);
        assert_eq!(sigmoid_q16(-(5 << 16)), 0);
        assert_eq!(sigmoid_q16(i32::MIN), 0);
        assert_eq!(sigmoid_q16(i32::MAX), 65536);
        assert_eq!(sigmoid_q16(1 << 16), 49152); // 0.75 from both neighbouring segments
    }

    #[test]
    fn plan_error_over_the_whole_int32_range() {
        // Every Q·.16 value in ±6 (all segments), then a stride through the rest.
        let xs = (-(6 << 16)..=(6 << 16)).chain((i32::MIN..=i32::MAX).step_by(4099));
        let (mut e_twin, mut e_exact, mut e_plan) = (0.0f64, 0.0f64, 0.0f64);
        for x in xs {
            let y = sigmoid_q16(x) as f64 / Q;
            let xr = x as f64 / Q;
            e_twin = e_twin.max((y - sigmoid_plan(xr)).abs());
            e_exact = e_exact.max((y - sigmoid_exact(xr)).abs());
            e_plan = e_plan.max((sigmoid_plan(xr) - sigmoid_exact(xr)).abs());
        }
        eprintln!("PLAN σ: |int − twin| ≤ {e_twin:.3e}, |int − exact| ≤ {e_exact:.3e}, |twin − exact| ≤ {e_plan:.3e}");
        assert!(e_twin <= 0.5 / Q, "int vs twin {e_twin}");
        assert!(e_plan <= 0.0190, "PLAN vs exact {e_plan}");
        assert!(e_exact <= e_plan + 0.5 / Q, "int vs exact {e_exact}");
    }

    #[test]
    fn plan_is_symmetric_and_monotone() {
        let mut prev = 0u32;
        for x in -(7 << 16)..=(7 << 16) {
            let y = sigmoid_q16(x);
            assert_eq!(y + sigmoid_q16(-x), 65536, "σ(x) + σ(−x) at {x}");
            // PLAN steps down by 1/256 at ±2.375: the one place it is not monotone.
            let a = (x as i64).abs();
            if a != T2_Q16 && a != T2_Q16 - 1 {
                assert!(y + 1 >= prev, "σ decreases at {x}: {prev} → {y}");
            }
            prev = y;
        }
    }
}
