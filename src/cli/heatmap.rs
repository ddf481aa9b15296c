//! `--heatmap`: the model's input crop with the patches pruned at each stage shaded, one
//! colour per stage, so a person sees what the model looked at.
#![forbid(unsafe_code)]

use std::path::Path;

use anyhow::{Context, Result};
use image::{imageops, Rgb, RgbImage};

use crate::engine::StageReport;

/// Stage colours: red, amber, blue, magenta, then repeating.
const COLOURS: [[u8; 3]; 4] = [[220, 40, 40], [240, 170, 20], [40, 90, 230], [200, 40, 200]];

/// Shades each patch by the stage that pruned it; kept-to-the-end patches are untouched.
/// Small inputs are enlarged (nearest) to at least 224 px so patches stay visible.
pub fn render(crop: &RgbImage, patch: usize, stages: &[StageReport]) -> RgbImage {
    let s = crop.width() as usize;
    let grid = s / patch;
    // pruned_at[i] = stage that pruned patch i.
    let mut pruned_at: Vec<Option<usize>> = vec![None; grid * grid];
    let mut alive: Vec<usize> = (0..grid * grid).collect();
    for (st, report) in stages.iter().enumerate() {
        for &i in &alive {
            if report.kept_patch_indices.binary_search(&i).is_err() {
                pruned_at[i] = Some(st);
            }
        }
        alive = report.kept_patch_indices.clone();
    }
    let mut img = crop.clone();
    for (i, stage) in pruned_at.iter().enumerate() {
        let Some(st) = stage else { continue };
        let c = COLOURS[st % COLOURS.len()];
        let (gy, gx) = (i / grid, i % grid);
        for y in gy * patch..(gy + 1) * patch {
            for x in gx * patch..(gx + 1) * patch {
                let p = img.get_pixel_mut(x as u32, y as u32);
                for k in 0..3 {
                    p[k] = ((p[k] as u16 * 2 + c[k] as u16 * 3) / 5) as u8;
                }
            }
        }
    }
    let scale = (224 / s.max(1)).max(1) as u32;
    if scale > 1 {
        img = imageops::resize(&img, img.width() * scale, img.height() * scale, imageops::FilterType::Nearest);
    }
    // Patch grid lines, faint, so the token granularity is visible.
    let step = patch as u32 * scale;
    for y in 0..img.height() {
        for x in 0..img.width() {
            if x % step == 0 || y % step == 0 {
                let p = img.get_pixel_mut(x, y);
                *p = Rgb([p[0] / 2 + 64, p[1] / 2 + 64, p[2] / 2 + 64]);
            }
        }
    }
    img
}

pub fn write(dest: &Path, crop: &RgbImage, patch: usize, stages: &[StageReport]) -> Result<()> {
    render(crop, patch, stages)
        .save_with_format(dest, image::ImageFormat::Png)
        .with_context(|| format!("writing {}", dest.display()))
}
