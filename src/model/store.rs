//! A name → tensor store read from safetensors, handed out by hierarchical name with the
//! shape checked at the point of use (in the spirit of candle's `VarBuilder`).
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::ModelError;

/// Largest weights file we will read: far above DeiT-B (346 MB), far below anything absurd.
pub const MAX_WEIGHTS_BYTES: u64 = 2 << 30;

/// A dense f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data }
    }
}

/// All tensors of one file, converted to f32, with a record of which were used.
pub struct TensorStore {
    path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
    used: RefCell<BTreeSet<String>>,
}

impl TensorStore {
    /// Reads a safetensors file. F32, F16, BF16 and F64 tensors are accepted (converted to
    /// f32); any other dtype, a truncated file or a bad header is an error naming the file.
    pub fn open(path: &Path) -> Result<TensorStore, ModelError> {
        let io = |e| ModelError::Io { path: path.to_path_buf(), err: e };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_WEIGHTS_BYTES {
            return Err(ModelError::Weights {
                path: path.to_path_buf(),
                msg: format!("file is {len} bytes, more than the {MAX_WEIGHTS_BYTES} byte limit"),
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Self::from_bytes(path, &bytes)
    }

    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<TensorStore, ModelError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| ModelError::Weights {
            path: path.to_path_buf(),
            msg: format!("not a valid safetensors file: {e}"),
        })?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = convert(&name, view.dtype(), view.data())?;
            if let Some(bad) = data.iter().position(|v| !v.is_finite()) {
                return Err(ModelError::NonFinite { name, index: bad });
            }
            tensors.insert(name, Tensor::new(view.shape().to_vec(), data));
        }
        Ok(TensorStore { path: path.to_path_buf(), tensors, used: RefCell::new(BTreeSet::new()) })
    }

    /// A store built in memory (synthetic models, tests).
    pub fn from_tensors(path: &Path, tensors: BTreeMap<String, Tensor>) -> TensorStore {
        TensorStore { path: path.to_path_buf(), tensors, used: RefCell::new(BTreeSet::new()) }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name`, which must have exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor { path: self.path.clone(), name: name.to_string() })?;
        if t.shape != shape {
            return Err(ModelError::Shape { name: name.to_string(), expected: shape.to_vec(), found: t.shape.clone() });
        }
        self.used.borrow_mut().insert(name.to_string());
        Ok(t.data.clone())
    }

    /// The shape of `name`, when the config does not fix it (e.g. the gate's hidden width).
    pub fn shape(&self, name: &str) -> Result<&[usize], ModelError> {
        self.tensors
            .get(name)
            .map(|t| t.shape.as_slice())
            .ok_or_else(|| ModelError::MissingTensor { path: self.path.clone(), name: name.to_string() })
    }

    /// Errors if the file holds tensors the model did not use: a different architecture
    /// or a misspelt name must not load silently.
    pub fn finish(self) -> Result<(), ModelError> {
        let used = self.used.into_inner();
        let unused: Vec<String> = self.tensors.into_keys().filter(|k| !used.contains(k)).collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(ModelError::UnexpectedTensors { path: self.path, names: unused })
        }
    }
}

fn convert(name: &str, dtype: Dtype, raw: &[u8]) -> Result<Vec<f32>, ModelError> {
    let bad = || ModelError::Dtype { name: name.to_string(), dtype: format!("{dtype:?}") };
    Ok(match dtype {
        Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F64 => {
            raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f32).collect()
        }
        Dtype::F16 => raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        _ => return Err(bad()),
    })
}
