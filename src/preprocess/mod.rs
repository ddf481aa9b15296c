//! Image decoding and timm's eval transform (spec §1): shorter side to
//! `floor(S / crop_pct)`, centre crop S×S, RGB in [0, 1], normalise by mean/std.
//!
//! Decoding is bounded: files over [`MAX_FILE_BYTES`], images wider or taller than
//! [`MAX_SIDE`] and decodes needing more than [`MAX_ALLOC`] bytes are refused before any
//! large allocation, so a decompression bomb costs nothing.
#![forbid(unsafe_code)]

pub mod resample;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ImageReader, Limits, RgbImage};

use crate::model::Config;

pub const MAX_FILE_BYTES: u64 = 128 << 20;
pub const MAX_SIDE: u32 = 16384;
pub const MAX_ALLOC: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// (`err` is shown in the message, so it is deliberately not the error `source`.)
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: file is empty")]
    Empty { path: PathBuf },
    #[error("{path}: file is {bytes} bytes, over the {limit} byte limit")]
    FileTooLarge { path: PathBuf, bytes: u64, limit: u64 },
    #[error("{path}: not a PNG or JPEG image")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: image is {width}×{height}, over the decoding limit ({MAX_SIDE} px a side, {} MiB)", MAX_ALLOC >> 20)]
    TooLarge { path: PathBuf, width: u32, height: u32 },
    #[error("{path}: cannot decode image: {msg}")]
    Decode { path: PathBuf, msg: String },
}

/// A decoded image, ready for the model.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// Normalised CHW tensor, 3 × S × S.
    pub tensor: Vec<f32>,
    /// The resized, centre-cropped RGB image the tensor was made from (for heatmaps).
    pub crop: RgbImage,
    /// Width and height of the decoded file.
    pub original: (u32, u32),
}

/// Decodes `path` to 8-bit RGB: grey is replicated, alpha dropped (as PIL's
/// `convert('RGB')`), palettes expanded, 16-bit channels scaled to 8 bits.
pub fn decode(path: &Path) -> Result<RgbImage, InputError> {
    let io = |e| InputError::Io { path: path.to_path_buf(), err: e };
    let bytes = std::fs::metadata(path).map_err(io)?.len();
    if bytes == 0 {
        return Err(InputError::Empty { path: path.to_path_buf() });
    }
    if bytes > MAX_FILE_BYTES {
        return Err(InputError::FileTooLarge { path: path.to_path_buf(), bytes, limit: MAX_FILE_BYTES });
    }
    let data = std::fs::read(path).map_err(io)?;
    decode_bytes(path, &data)
}

/// [`decode`] on bytes already in memory; `path` only names the source in errors.
pub fn decode_bytes(path: &Path, data: &[u8]) -> Result<RgbImage, InputError> {
    if data.is_empty() {
        return Err(InputError::Empty { path: path.to_path_buf() });
    }
    let reader = |limited: bool| {
        let mut r = ImageReader::new(Cursor::new(data))
            .with_guessed_format()
            .map_err(|e| InputError::Io { path: path.to_path_buf(), err: e })?;
        if r.format().is_none() {
            return Err(InputError::UnknownFormat { path: path.to_path_buf() });
        }
        if limited {
            let mut limits = Limits::default();
            limits.max_image_width = Some(MAX_SIDE);
            limits.max_image_height = Some(MAX_SIDE);
            limits.max_alloc = Some(MAX_ALLOC);
            r.limits(limits);
        } else {
            // Reading the header allocates no pixels; our own check below names the size.
            r.no_limits();
        }
        Ok(r)
    };
    // Decoder messages can span lines; keep the report on one.
    let decode_err = |e: image::ImageError| InputError::Decode {
        path: path.to_path_buf(),
        msg: e.to_string().split_whitespace().collect::<Vec<_>>().join(" "),
    };
    // Read the header first, to refuse oversized images by their declared size.
    let (width, height) = reader(false)?.into_dimensions().map_err(decode_err)?;
    let pixels = width as u64 * height as u64;
    if width > MAX_SIDE || height > MAX_SIDE || pixels * 8 > MAX_ALLOC {
        return Err(InputError::TooLarge { path: path.to_path_buf(), width, height });
    }
    if width == 0 || height == 0 {
        return Err(InputError::Decode { path: path.to_path_buf(), msg: "image has no pixels".into() });
    }
    let img = reader(true)?.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => InputError::TooLarge { path: path.to_path_buf(), width, height },
        e => decode_err(e),
    })?;
    Ok(img.into_rgb8())
}

/// Python's `round()` (half to even) of `x / 2`, for torchvision's centre-crop offset.
fn half_round_even(x: usize) -> usize {
    let q = x / 2;
    if x % 2 == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

/// Resize (shorter side), centre crop and normalise, as timm's eval transform.
pub fn preprocess(cfg: &Config, img: &RgbImage) -> Preprocessed {
    let s = cfg.image_size;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let target = (s as f64 / cfg.crop_pct).floor() as usize;
    // torchvision: new_long = int(new_short * long / short).
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((target * long) as f64 / short as f64) as usize;
    let (rw, rh) = if w <= h { (target, new_long) } else { (new_long, target) };
    let resized = resample::resize_rgb8(img.as_raw(), w, h, rw, rh, cfg.interpolation);
    // torchvision CenterCrop: offset int(round((size - crop) / 2.0)); pads if smaller.
    let (top, left) = (half_round_even(rh.saturating_sub(s)), half_round_even(rw.saturating_sub(s)));
    let mut crop = RgbImage::new(s as u32, s as u32);
    for y in 0..s.min(rh) {
        for x in 0..s.min(rw) {
            let src = ((top + y) * rw + left + x) * 3;
            crop.put_pixel(x as u32, y as u32, image::Rgb([resized[src], resized[src + 1], resized[src + 2]]));
        }
    }
    let mut tensor = vec![0.0f32; 3 * s * s];
    let mean = cfg.mean.map(|v| v as f32);
    let std = cfg.std.map(|v| v as f32);
    for (i, p) in crop.pixels().enumerate() {
        for c in 0..3 {
            tensor[c * s * s + i] = (p[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    Preprocessed { tensor, crop, original: (w as u32, h as u32) }
}

/// Decode and preprocess a file.
pub fn load(cfg: &Config, path: &Path) -> Result<Preprocessed, InputError> {
    Ok(preprocess(cfg, &decode(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_png<P, C>(img: &image::ImageBuffer<P, C>) -> Vec<u8>
    where
        P: image::Pixel + image::PixelWithColorType,
        [P::Subpixel]: image::EncodableLayout,
        C: std::ops::Deref<Target = [P::Subpixel]>,
    {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn sixteen_bit_grey_and_rgba_inputs_become_the_same_rgb8() {
        let (w, h) = (5u32, 3u32);
        let v8 = |x: u32, y: u32| ((x * 50 + y * 17) % 256) as u8;
        let want = RgbImage::from_fn(w, h, |x, y| image::Rgb([v8(x, y); 3]));
        let p = Path::new("test.png");
        // 16-bit grey: v·257 is the exact 16-bit value of the 8-bit level v.
        let g16 = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(w, h, |x, y| {
            image::Luma([v8(x, y) as u16 * 257])
        });
        assert_eq!(decode_bytes(p, &encode_png(&g16)).unwrap(), want);
        let rgb16 = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(w, h, |x, y| {
            image::Rgb([v8(x, y) as u16 * 257; 3])
        });
        assert_eq!(decode_bytes(p, &encode_png(&rgb16)).unwrap(), want);
        let rgba16 = image::ImageBuffer::<image::Rgba<u16>, Vec<u16>>::from_fn(w, h, |x, y| {
            let v = v8(x, y) as u16 * 257;
            image::Rgba([v, v, v, (x as u16) * 9000])
        });
        assert_eq!(decode_bytes(p, &encode_png(&rgba16)).unwrap(), want, "alpha is dropped, not blended");
        let grey8 = image::GrayImage::from_fn(w, h, |x, y| image::Luma([v8(x, y)]));
        assert_eq!(decode_bytes(p, &encode_png(&grey8)).unwrap(), want);
    }

    #[test]
    fn crop_offset_rounds_half_to_even_like_python() {
        // round(0.5) = 0, round(1.5) = 2, round(16.5) = 16, round(17.5) = 18
        assert_eq!([1, 3, 33, 35, 160].map(half_round_even), [0, 2, 16, 18, 80]);
    }
}
