//! Helpers shared by the integration tests.

use std::process::Command;

/// A `Command` for the `heatvit-run` binary under test. When the tests are cross-built
/// and run under qemu-user (CI's aarch64 job), the binary cannot be exec'd directly:
/// `HEATVIT_TEST_RUNNER` names the emulator command line to put in front of it, e.g.
/// `qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a53`.
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
