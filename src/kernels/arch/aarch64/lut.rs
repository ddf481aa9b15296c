//! The GELU table lookup of [`crate::kernels::epilogue::gelu_table_i8`] with NEON `tbl`/`tbx`
//! (ARMv8.0): each 16 bytes, read as indices 0..255, look up the first 64 table bytes with
//! `tbl` (indices ≥ 64 give 0) and the other three 64-byte quarters with `tbx` on the index
//! minus 64, 128 and 192 (wrapping: an index outside a quarter is ≥ 64 there and leaves the
//! lane as it was). Compared with the generic lookup on every byte value and length by
//! `kernels::epilogue::tests`, under `qemu-aarch64 -cpu cortex-a53` in CI.
#![deny(unsafe_op_in_unsafe_fn)]

use std::arch::aarch64::*;

use crate::quant::gelu::GeluTable;

/// `x[i] = gelu[x[i]]`.
pub fn gelu_table_i8(gelu: &GeluTable, x: &mut [i8]) {
    assert!(super::neon::available(), "neon kernel called on a CPU without NEON");
    // SAFETY: NEON is present (asserted above with run-time detection).
    unsafe { gelu_table_i8_neon(gelu, x) }
}

#[target_feature(enable = "neon")]
fn gelu_table_i8_neon(gelu: &GeluTable, x: &mut [i8]) {
    let tp = gelu.0.as_ptr().cast::<u8>();
    // SAFETY: the table is 256 bytes; quarter `q` reads bytes 64q..64q + 64.
    let t: [uint8x16x4_t; 4] = std::array::from_fn(|q| unsafe { vld1q_u8_x4(tp.add(64 * q)) });
    let (o64, o128, o192) = (vdupq_n_u8(64), vdupq_n_u8(128), vdupq_n_u8(192));
    let mut chunks = x.chunks_exact_mut(16);
    for c in &mut chunks {
        let p = c.as_mut_ptr().cast::<u8>();
        // SAFETY: `c` holds 16 bytes; vld1q/vst1q have no alignment requirement.
        unsafe {
            let v = vld1q_u8(p);
            let r = vqtbl4q_u8(t[0], v);
            let r = vqtbx4q_u8(r, t[1], vsubq_u8(v, o64));
            let r = vqtbx4q_u8(r, t[2], vsubq_u8(v, o128));
            vst1q_u8(p, vqtbx4q_u8(r, t[3], vsubq_u8(v, o192)));
        }
    }
    for v in chunks.into_remainder() {
        *v = gelu.get(*v);
    }
}
