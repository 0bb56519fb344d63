//! The benchmark harness end to end, tiny: real runner processes, CPU time and peak memory from
//! `wait4`, ratios to plain, the Markdown and JSON written. Speeds are not judged here (that is
//! `just bench`'s job); the plumbing is.

use std::process::Command;

#[test]
fn the_driver_runs_each_pair_in_its_own_process_and_tabulates() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--runs", "2", "--reps", "1", "--for-ms", "300"])
        .args(["--workloads", "yield-storm,scraper", "--instruments", "lean,tokio-metrics,console"])
        .args(["--runner", env!("CARGO_BIN_EXE_bench-runner")])
        .args(["--console-runner", "/nonexistent/bench-runner"])
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let md = std::fs::read_to_string(dir.path().join("bench.md")).unwrap();
    assert_eq!(md, String::from_utf8_lossy(&out.stdout), "the table printed is the one written");
    assert!(md.contains("Skipped: console"), "{md}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("bench.json")).unwrap()).unwrap();
    let cells = json["cells"].as_array().unwrap();
    let cell = |w: &str, i: &str| cells.iter().find(|c| c["workload"] == w && c["instrument"] == i);
    // tokio-metrics wraps each task: only our own micro-workload lets it.
    assert!(cell("scraper", "tokio-metrics").is_none());
    assert!(md.contains("n/a"), "{md}");
    for (w, i) in [
        ("yield-storm", "plain"),
        ("yield-storm", "lean"),
        ("yield-storm", "tokio-metrics"),
        ("scraper", "plain"),
        ("scraper", "lean"),
    ] {
        let c = cell(w, i).unwrap_or_else(|| panic!("{w} {i}: {json}"));
        assert_eq!(c["samples"].as_array().unwrap().len(), 2, "{c}");
        for s in c["samples"].as_array().unwrap() {
            assert!(s["cpu_s"].as_f64().unwrap() > 0.0 && s["max_rss_kib"].as_u64().unwrap() > 1024, "{s}");
            assert!(s["wall_s"].as_f64().unwrap() > 0.0, "{s}");
        }
        let ratio = c["wall_ratio"].as_f64().unwrap();
        let range: Vec<f64> = c["wall_ratio_range"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(ratio.is_finite() && range[0] <= ratio && ratio <= range[1], "{c}");
        // Paired by round: the two ratios are each sample over plain's sample of its round.
        let plain_walls: Vec<f64> = cell(w, "plain").unwrap()["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["wall_s"].as_f64().unwrap())
            .collect();
        let ratios: Vec<f64> = c["samples"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&plain_walls)
            .map(|(s, p)| s["wall_s"].as_f64().unwrap() / p)
            .collect();
        assert!((ratio - (ratios[0] + ratios[1]) / 2.0).abs() < 1e-9, "{c} vs {ratios:?}");
        if i == "plain" {
            assert_eq!(ratio, 1.0);
            assert_eq!(range, [1.0, 1.0]);
        }
    }
    // loopscope's own threads are measured (names as the kernel keeps them: 15 bytes).
    let threads = &cell("yield-storm", "lean").unwrap()["recorder_threads_cpu_s"];
    for name in ["loopscope-flush", "loopscope-watch"] {
        assert!(threads[name].as_f64().is_some_and(|t| t > 0.0), "{name}: {threads}");
    }
    assert_eq!(cell("yield-storm", "plain").unwrap()["recorder_threads_cpu_s"], serde_json::json!({}));
    assert!(md.contains("loopscope's own threads") && md.contains("yield-storm lean: loopscope-flush"), "{md}");
    let loss = cell("scraper", "lean").unwrap()["throughput_loss_percent"].as_f64().unwrap();
    assert!(loss.is_finite() && loss < 100.0, "{loss}");
    assert!(cell("scraper", "plain").unwrap()["throughput"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_runner_failure_is_reported_with_its_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_bench-runner")).args(["scraper", "tokio-metrics"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wraps each task"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
