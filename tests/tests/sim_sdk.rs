//! The simulator against the official Python SDKs (`tests/sdk/sdk_check.py`
//! with the project venv's `openai` and `anthropic` packages). Never skipped:
//! a missing venv or package fails with instructions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;
use tollgate_tests::sim::{self, SimConfig};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_parse_the_simulator() {
    let root = root();
    let python = root.join(".venv/bin/python");
    let script = root.join("tests/sdk/sdk_check.py");
    let hint = "run `make setup` (or: python3 -m venv .venv && .venv/bin/pip install -r tests/sdk/requirements.txt)";
    assert!(python.exists(), "{} is missing: {hint}", python.display());
    let probe = tokio::process::Command::new(&python)
        .args(["-c", "import openai, anthropic"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {hint}", python.display()));
    assert!(
        probe.status.success(),
        "the openai/anthropic packages are missing from .venv ({}): {hint}",
        String::from_utf8_lossy(&probe.stderr).trim()
    );

    let sim = sim::spawn(SimConfig::default()).await.unwrap();
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(sim.base_url())
        .env("PYTHONWARNINGS", "ignore::DeprecationWarning")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("sdk_check.py timed out")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "sdk_check.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
