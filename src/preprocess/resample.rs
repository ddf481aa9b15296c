//! Separable resampling with the same arithmetic as Pillow's `ImagingResample` (8 bits per
//! channel): double-precision filter weights normalised per output pixel, converted to
//! 22-bit fixed point, horizontal pass first, each pass rounded and clipped to u8.
//! torchvision's `Resize` on a PIL image (timm's eval transform) runs exactly this, so the
//! tensors we feed the model are the ones the reference feeds it.
#![forbid(unsafe_code)]

use crate::model::Interpolation;

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Per output pixel: first input index and fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    k: Vec<i32>,
}

fn precompute(in_size: usize, out_size: usize, interp: Interpolation) -> Coeffs {
    let (filter, support0): (fn(f64) -> f64, f64) = match interp {
        Interpolation::Bicubic => (bicubic, 2.0),
        Interpolation::Bilinear => (triangle, 1.0),
    };
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut k = vec![0i32; out_size * ksize];
    let ss = 1.0 / filterscale;
    let mut w = vec![0.0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) cast truncates toward zero; negatives are then clamped to 0.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(count) {
            *wx = filter((x as f64 + xmin as f64 - center + 0.5) * ss);
            ww += *wx;
        }
        for x in 0..count {
            let v = if ww != 0.0 { w[x] / ww } else { w[x] };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            k[xx * ksize + x] = if v < 0.0 { (-0.5 + f) as i32 } else { (0.5 + f) as i32 };
        }
        bounds.push((xmin, count));
    }
    Coeffs { bounds, ksize, k }
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes a packed RGB8 image (`w × h × 3`) to `ow × oh`.
pub fn resize_rgb8(src: &[u8], w: usize, h: usize, ow: usize, oh: usize, interp: Interpolation) -> Vec<u8> {
    assert_eq!(src.len(), w * h * 3);
    if (w, h) == (ow, oh) {
        return src.to_vec();
    }
    // Horizontal pass (only when the width changes), over every row.
    let (tmp, tw) = if ow != w {
        let c = precompute(w, ow, interp);
        let mut out = vec![0u8; ow * h * 3];
        for y in 0..h {
            let row = &src[y * w * 3..(y + 1) * w * 3];
            for (xx, &(xmin, count)) in c.bounds.iter().enumerate() {
                let kk = &c.k[xx * c.ksize..xx * c.ksize + count];
                let mut ss = [1i64 << (PRECISION_BITS - 1); 3];
                for (x, &kv) in kk.iter().enumerate() {
                    let p = &row[(xmin + x) * 3..(xmin + x) * 3 + 3];
                    for ch in 0..3 {
                        ss[ch] += p[ch] as i64 * kv as i64;
                    }
                }
                for ch in 0..3 {
                    out[(y * ow + xx) * 3 + ch] = clip8(ss[ch]);
                }
            }
        }
        (out, ow)
    } else {
        (src.to_vec(), w)
    };
    if oh == h {
        return tmp;
    }
    let c = precompute(h, oh, interp);
    let mut out = vec![0u8; tw * oh * 3];
    for (yy, &(ymin, count)) in c.bounds.iter().enumerate() {
        let kk = &c.k[yy * c.ksize..yy * c.ksize + count];
        for x in 0..tw {
            let mut ss = [1i64 << (PRECISION_BITS - 1); 3];
            for (y, &kv) in kk.iter().enumerate() {
                let p = &tmp[((ymin + y) * tw + x) * 3..((ymin + y) * tw + x) * 3 + 3];
                for ch in 0..3 {
                    ss[ch] += p[ch] as i64 * kv as i64;
                }
            }
            for ch in 0..3 {
                out[(yy * tw + x) * 3 + ch] = clip8(ss[ch]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_a_copy() {
        let src: Vec<u8> = (0..4 * 3 * 3).map(|i| i as u8).collect();
        assert_eq!(resize_rgb8(&src, 4, 3, 4, 3, Interpolation::Bicubic), src);
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![77u8; 37 * 23 * 3];
        for (ow, oh) in [(10, 7), (80, 50), (37, 11)] {
            let out = resize_rgb8(&src, 37, 23, ow, oh, Interpolation::Bicubic);
            assert!(out.iter().all(|&v| v == 77), "{ow}x{oh}");
            let out = resize_rgb8(&src, 37, 23, ow, oh, Interpolation::Bilinear);
            assert!(out.iter().all(|&v| v == 77), "{ow}x{oh}");
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(451, 384), (300, 256), (28, 28), (10, 256)] {
            let c = precompute(i, o, Interpolation::Bicubic);
            for (xx, &(_, count)) in c.bounds.iter().enumerate() {
                let s: i64 = c.k[xx * c.ksize..xx * c.ksize + count].iter().map(|&v| v as i64).sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= count as i64, "{i}->{o} px {xx}: {s}");
            }
        }
    }
}
