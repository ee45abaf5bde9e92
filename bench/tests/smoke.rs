//! Runs the whole harness in smoke mode against a freshly started `floe standalone`: every
//! scenario must produce its figures and Floe's answers must match the baseline's. No
//! timing is asserted. Needs the `floe` binary next to this test's target dir
//! (`cargo build --bin floe` first, as scripts/test.sh does), or `FLOE_BIN`.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn smoke_run_produces_every_scenario() {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_floe-bench"));
    cmd.args(["all", "--docs", "5000", "--smoke", "--batch", "1000"])
        .arg("--out")
        .arg(out.path());
    if let Ok(bin) = std::env::var("FLOE_BIN") {
        cmd.arg("--floe-bin").arg(bin);
    }
    let result = cmd.output().expect("run floe-bench");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "floe-bench failed:\n{stderr}");

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("smoke.json")).unwrap()).unwrap();
    let scenarios: Vec<&str> = json["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        scenarios,
        [
            "baseline",
            "ingest",
            "storage",
            "ingest-async",
            "freshness",
            "query",
            "memory",
            "recovery"
        ]
    );
    for s in json["scenarios"].as_array().unwrap() {
        assert!(s.get("error").is_none(), "{s}");
        assert!(!s["figures"].as_array().unwrap().is_empty(), "{s}");
    }
    let md = PathBuf::from(out.path()).join("smoke.md");
    assert!(std::fs::read_to_string(md)
        .unwrap()
        .contains("| ingest throughput |"));
    assert!(out.path().join("smoke.svg").is_file());
}
