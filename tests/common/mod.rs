//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// A `Command` for the `heatvit-run` binary under test. When the tests are cross-built
/// and run under qemu-user (CI's aarch64 job), the binary cannot be exec'd directly:
/// `HEATVIT_TEST_RUNNER` names the emulator command line to put in front of it, e.g.
/// `qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a53`.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn heatvit_run() -> Command {
    let bin = env!("CARGO_BIN_EXE_heatvit-run");
    match std::env::var("HEATVIT_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut parts = runner.split_whitespace();
            let mut cmd = Command::new(parts.next().expect("non-empty runner"));
            cmd.args(parts).arg(bin);
            cmd
        }
        _ => Command::new(bin),
    }
}

/// The preprocessed inputs of the tiny fixture cases (`tests/fixtures/tiny-cases/inputs.safetensors`,
/// timm's eval transform of every test image, `[3, 224, 224]` f32), by image name. Read by the
/// float conformance test and the integer golden test.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn tiny_case_inputs() -> BTreeMap<String, Vec<f32>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-cases/inputs.safetensors");
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32);
            let data = v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            (name, data)
        })
        .collect()
}
