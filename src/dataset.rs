//! Labelled image sets in the MNIST idx format (Fashion-MNIST as Debian ships it:
//! `t10k-images-idx3-ubyte.gz` + `t10k-labels-idx1-ubyte.gz`, gzipped or not), read
//! directly so anyone can re-check an accuracy figure.
#![forbid(unsafe_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

use image::GrayImage;

/// Refuse files that would decompress past this (the 10k test set is 7.8 MB).
const MAX_BYTES: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{dir}: no {what} file (looked for {names})")]
    Missing { dir: PathBuf, what: &'static str, names: String },
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
}

/// Grey images with their class labels.
pub struct Dataset {
    pub images: Vec<GrayImage>,
    pub labels: Vec<u8>,
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DatasetError> {
    let io = |e| DatasetError::Io { path: path.to_path_buf(), err: e };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::new();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(file).take(MAX_BYTES + 1).read_to_end(&mut out).map_err(io)?;
    } else {
        file.take(MAX_BYTES + 1).read_to_end(&mut out).map_err(io)?;
    }
    if out.len() as u64 > MAX_BYTES {
        return Err(DatasetError::Format { path: path.to_path_buf(), msg: format!("larger than {MAX_BYTES} bytes") });
    }
    Ok(out)
}

fn find(dir: &Path, split: &str, kind: &str, what: &'static str) -> Result<PathBuf, DatasetError> {
    let names = [format!("{split}-{kind}-ubyte.gz"), format!("{split}-{kind}-ubyte")];
    names.iter().map(|n| dir.join(n)).find(|p| p.exists()).ok_or_else(|| DatasetError::Missing {
        dir: dir.to_path_buf(),
        what,
        names: names.join(" or "),
    })
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Loads split `split` (`t10k` or `train`) from `dir`, at most `limit` examples.
pub fn load_idx(dir: &Path, split: &str, limit: Option<usize>) -> Result<Dataset, DatasetError> {
    let ip = find(dir, split, "images-idx3", "images")?;
    let lp = find(dir, split, "labels-idx1", "labels")?;
    let img = read_maybe_gz(&ip)?;
    let lab = read_maybe_gz(&lp)?;
    let fmt = |path: &Path, msg: String| DatasetError::Format { path: path.to_path_buf(), msg };
    if img.len() < 16 || be32(&img, 0) != 0x0803 {
        return Err(fmt(&ip, "not an idx3 image file (bad magic)".into()));
    }
    if lab.len() < 8 || be32(&lab, 0) != 0x0801 {
        return Err(fmt(&lp, "not an idx1 label file (bad magic)".into()));
    }
    let (n, rows, cols) = (be32(&img, 4) as usize, be32(&img, 8) as usize, be32(&img, 12) as usize);
    if rows == 0 || cols == 0 || rows > 4096 || cols > 4096 {
        return Err(fmt(&ip, format!("implausible image size {rows}×{cols}")));
    }
    if img.len() != 16 + n * rows * cols {
        return Err(fmt(&ip, format!("holds {} bytes, header says {n} images of {rows}×{cols}", img.len() - 16)));
    }
    let nl = be32(&lab, 4) as usize;
    if nl != n || lab.len() != 8 + n {
        return Err(fmt(&lp, format!("has {nl} labels ({} bytes) for {n} images", lab.len() - 8)));
    }
    let take = limit.unwrap_or(n).min(n);
    let images = (0..take)
        .map(|i| {
            let px = img[16 + i * rows * cols..16 + (i + 1) * rows * cols].to_vec();
            GrayImage::from_raw(cols as u32, rows as u32, px).expect("buffer size checked")
        })
        .collect();
    Ok(Dataset { images, labels: lab[8..8 + take].to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(body);
        v
    }

    fn write(dir: &Path, name: &str, bytes: &[u8], gz: bool) {
        if gz {
            let f = std::fs::File::create(dir.join(format!("{name}.gz"))).unwrap();
            let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            e.finish().unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    #[test]
    fn reads_gzipped_and_plain_files_and_honours_limit() {
        for gz in [true, false] {
            let d = tempfile::tempdir().unwrap();
            let px: Vec<u8> = (0..3 * 2 * 4).map(|i| i as u8).collect();
            write(d.path(), "t10k-images-idx3-ubyte", &idx(0x803, &[3, 2, 4], &px), gz);
            write(d.path(), "t10k-labels-idx1-ubyte", &idx(0x801, &[3], &[7, 1, 9]), gz);
            let ds = load_idx(d.path(), "t10k", None).unwrap();
            assert_eq!(ds.labels, vec![7, 1, 9]);
            assert_eq!((ds.images[1].width(), ds.images[1].height()), (4, 2));
            assert_eq!(ds.images[1].as_raw(), &px[8..16]);
            assert_eq!(load_idx(d.path(), "t10k", Some(2)).unwrap().images.len(), 2);
        }
    }

    #[test]
    fn malformed_files_are_named() {
        let cases: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
            (idx(0x801, &[1, 2, 2], &[0; 4]), idx(0x801, &[1], &[0]), "bad magic"),
            (idx(0x803, &[2, 2, 2], &[0; 4]), idx(0x801, &[2], &[0, 0]), "header says 2 images"),
            (idx(0x803, &[1, 2, 2], &[0; 4]), idx(0x801, &[3], &[0]), "labels"),
            (idx(0x803, &[1, 0, 2], &[]), idx(0x801, &[1], &[0]), "implausible"),
        ];
        for (img, lab, needle) in cases {
            let d = tempfile::tempdir().unwrap();
            write(d.path(), "t10k-images-idx3-ubyte", &img, false);
            write(d.path(), "t10k-labels-idx1-ubyte", &lab, false);
            let e = load_idx(d.path(), "t10k", None).err().expect(needle).to_string();
            assert!(e.contains(needle), "{needle:?} not in {e:?}");
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("t10k-images-idx3-ubyte.gz"), b"not gzip").unwrap();
        write(d.path(), "t10k-labels-idx1-ubyte", &idx(0x801, &[1], &[0]), false);
        assert!(load_idx(d.path(), "t10k", None).is_err());
    }
}
