//! End-to-end tests of the real `loopscope` binary: help, bad input, run → record → report,
//! a recording cut by `kill -9`, and the demo without a terminal.

use std::process::Stdio;
use std::time::{Duration, Instant};

use loopscope_core::format::Recording;

mod support;

use support::{loopscope, one_workload_at_a_time, record_short_run, run, text, workspace_file};

#[test]
fn help_describes_every_command_and_the_exit_codes() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in ["run", "report", "demo", "Exit codes", "usage or input error"] {
        assert!(help.contains(word), "--help lacks {word:?}:\n{help}");
    }
    let run_help = text(&run(&["run", "--help"]).stdout);
    for word in ["sleep-storm", "--for", "--record", "--workers", "--flavor", "--slow-poll"] {
        assert!(run_help.contains(word), "run --help lacks {word:?}:\n{run_help}");
    }
    let storm_help = text(&run(&["run", "sleep-storm", "--help"]).stdout);
    for word in ["--tasks", "--min-sleep", "--max-sleep", "--mode", "--seed"] {
        assert!(storm_help.contains(word), "sleep-storm --help lacks {word:?}:\n{storm_help}");
    }
    let report_help = text(&run(&["report", "--help"]).stdout);
    assert!(report_help.contains("--json"));
}

#[test]
fn bad_arguments_exit_2_and_name_the_flag() {
    for (args, needle) in [
        (&["run", "sleep-storm", "--for", "banana"][..], "--for"),
        (&["run", "sleep-storm", "--tasks", "0"][..], "--tasks"),
        (&["run", "sleep-storm", "--interval", "1ms"][..], "--interval"),
        (&["run", "no-such-workload"][..], "no-such-workload"),
        (&["frobnicate"][..], "frobnicate"),
        (&["report"][..], "FILE"),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(needle), "{args:?}: message does not name {needle:?}: {err}");
    }
    let out = run(&["run", "sleep-storm", "--for", "1s", "--min-sleep", "50ms", "--max-sleep", "1ms"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--min-sleep"));
}

#[test]
fn run_records_and_report_json_matches_its_schema() {
    let _turn = one_workload_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("storm.loopscope");
    let f = file.to_str().unwrap();
    let out = run(&["run", "sleep-storm", "--for", "1s", "--tasks", "500", "--interval", "100ms", "--record", f]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("Spawn sites") && table.contains("sleep-storm/src/lib.rs"), "{table}");
    assert!(table.contains("timer_lateness"), "{table}");

    let out = run(&["report", f, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report --json prints JSON");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workspace_file("docs/report.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the documented schema is valid");
    let errors: Vec<String> = validator.iter_errors(&report).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "report does not match docs/report.schema.json: {errors:#?}");

    assert_eq!(report["recording"]["completeness"]["state"], "complete");
    assert_eq!(report["recording"]["workload"], "sleep-storm");
    assert!(report["recording"]["intervals"].as_u64().unwrap() >= 5);
    let site = &report["sites"][0];
    assert!(site["location"].as_str().unwrap().contains("sleep-storm/src/lib.rs"));
    assert_eq!(site["tasks"]["spawned"], 500);
    assert!(report["runtime"]["polls"].as_u64().unwrap() > 500);
    let metrics = report["workload"]["metrics"].as_array().unwrap();
    assert!(metrics.iter().any(|m| m["name"] == "wakeups_per_s" && m["value"].as_f64().unwrap() > 0.0));

    // The schema is strict enough to catch drift: a renamed field fails it.
    let mut drifted = report.clone();
    drifted["runtime"]["poll"]["p99"] = drifted["runtime"]["poll"]["p99_ns"].take();
    assert!(!validator.is_valid(&drifted));
}

#[test]
fn missing_foreign_and_cut_recordings_are_reported_clearly() {
    let _turn = one_workload_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.loopscope");
    let out = run(&["report", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.loopscope"), "{}", text(&out.stderr));

    let foreign = dir.path().join("notes.txt");
    std::fs::write(&foreign, "just some text, not a recording\n").unwrap();
    let out = run(&["report", foreign.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("notes.txt") && err.contains("not a loopscope recording") && err.contains("byte 0"), "{err}");

    // A complete recording cut in the middle of its last frames still reports its prefix.
    let file = dir.path().join("full.loopscope");
    record_short_run(&file);
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.loopscope");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let out = run(&["report", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("cut short at byte") && err.contains("recovered"), "{err}");
    assert!(text(&out.stdout).contains("CUT SHORT"));
}

#[test]
fn a_run_killed_with_sigkill_leaves_a_readable_recording() {
    let _turn = one_workload_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("killed.loopscope");
    let mut child = loopscope()
        .args(["run", "sleep-storm", "--for", "60s", "--tasks", "200", "--interval", "50ms", "--record"])
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the event (three complete intervals on disk), with a deadline.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(rec) = Recording::read(&file)
            && rec.intervals.len() >= 3
        {
            break;
        }
        assert!(Instant::now() < deadline, "no three intervals recorded within 60 s");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let rec = Recording::read(&file).unwrap();
    assert!(!rec.is_complete());
    assert!(rec.intervals.len() >= 3);
    let out = run(&["report", file.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["recording"]["completeness"]["state"], "truncated");
    assert!(report["recording"]["intervals"].as_u64().unwrap() >= 3);
    assert!(report["runtime"]["polls"].as_u64().unwrap() > 0);
}

#[test]
fn demo_without_a_terminal_prints_the_report_and_its_findings() {
    let _turn = one_workload_at_a_time();
    let out = run(&["demo", "--for", "1s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for needle in [
        "Spawn sites",
        "What loopscope found",
        "busiest spawn site",
        "loopscope report",
        "sync-sleep",
        "mistakes caught",
    ] {
        assert!(stdout.contains(needle), "demo output lacks {needle:?}:\n{stdout}");
    }
    // The demo tells where its recording is; it must be a complete, readable recording.
    let path = stdout.lines().find_map(|l| l.strip_prefix("The recording is in ")).unwrap();
    let path = path.split(';').next().unwrap();
    let rec = Recording::read(path).unwrap();
    assert!(rec.is_complete());
    // In a private directory of its own, not at a name known in advance.
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::path::Path::new(path).parent().unwrap();
    assert_eq!(std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o700, "{}", dir.display());
    std::fs::remove_file(path).unwrap();
    std::fs::remove_dir(dir).unwrap();
}

#[test]
fn every_blocking_mistake_is_caught_and_every_fix_is_clean() {
    let _turn = one_workload_at_a_time();
    let out = run(&["run", "blocking", "--repeat", "2", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON rows");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 18, "nine scenarios, each mistake and fix");
    for r in rows {
        assert_eq!(r["ok"], true, "{r:#}");
        if r["variant"] == "mistake" && r["scenario"] != "forgot-await" {
            let site = r["blocking_site"].as_str().unwrap_or("");
            assert!(site.contains("workloads/blocking/src/lib.rs:"), "the stall names the workload's line: {r:#}");
        }
    }
    let category = |name: &str| {
        rows.iter().find(|r| r["scenario"] == name && r["variant"] == "mistake").unwrap()["category"].clone()
    };
    assert_eq!(category("sync-sleep"), "sync-sleep");
    assert_eq!(category("blocking-net"), "network-io");
    assert_eq!(category("std-mutex"), "lock-wait");
    assert_eq!(category("nested-runtime"), "nested-runtime");
    assert_eq!(category("executor-block-on"), "nested-executor");
    assert_eq!(category("blocking-dns"), "dns");
    assert_eq!(category("blocking-fs"), "file-io");
    assert_eq!(category("cpu-loop"), "cpu-bound");
}

#[test]
fn one_blocking_scenario_reports_its_stalls() {
    let _turn = one_workload_at_a_time();
    let out = run(&["run", "blocking", "--scenario", "sync-sleep", "--repeat", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Stalls: 3 polls blocked a worker"), "{stdout}");
    assert!(stdout.contains("workloads/blocking/src/lib.rs:"), "{stdout}");
}

/// Runs a workload briefly through the binary and returns its JSON report.
fn run_json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

fn metric(report: &serde_json::Value, name: &str) -> f64 {
    report["workload"]["metrics"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap()["value"]
        .as_f64()
        .unwrap()
}

#[test]
fn the_scraper_fetches_over_real_http_and_reports_throughput() {
    let _turn = one_workload_at_a_time();
    let r = run_json(&["run", "scraper", "--for", "1s", "--pages", "100", "--mode", "spawn", "--json"]);
    assert!(metric(&r, "pages") >= 100.0);
    assert!(metric(&r, "pages_per_s") > 0.0);
    assert_eq!(metric(&r, "errors"), 0.0);
    assert!(
        r["sites"].as_array().unwrap().iter().any(|s| s["location"].as_str().unwrap().contains("scraper/src/lib.rs"))
    );
}

#[test]
fn the_chat_server_delivers_over_real_sockets() {
    let _turn = one_workload_at_a_time();
    let r = run_json(&["run", "chat", "--for", "1s", "--clients", "100", "--rooms", "5", "--rate", "20", "--json"]);
    assert!(metric(&r, "messages_sent") > 0.0);
    assert!(metric(&r, "delivered_per_s") > 0.0);
    assert_eq!(metric(&r, "drops"), 0.0);
    assert!(metric(&r, "messages_delivered") >= metric(&r, "expected_deliveries") * 0.99);
}

#[test]
fn too_many_chat_clients_are_refused_before_starting() {
    let out = run(&["run", "chat", "--clients", "1000000", "--for", "1s"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("the largest count that fits is"), "{err}");
}

#[test]
fn console_serves_tokio_consoles_grpc_beside_the_recorder() {
    let _turn = one_workload_at_a_time();
    use std::io::{Read, Write};
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = loopscope()
        .args(["run", "sleep-storm", "--for", "3s", "--tasks", "100", "--console", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the console server (an HTTP/2 gRPC server) to answer a connection preface.
    let deadline = Instant::now() + Duration::from_secs(30);
    let settings = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").unwrap();
            let mut frame = [0u8; 9];
            if s.read_exact(&mut frame).is_ok() {
                break frame;
            }
        }
        assert!(Instant::now() < deadline, "the console server did not come up");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before the console server answered");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(settings[3], 0x4, "an HTTP/2 server answers with a SETTINGS frame: {settings:?}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("tokio-console http://127.0.0.1:{port}")));
}

#[test]
fn export_writes_a_standard_hdrhistogram_interval_log() {
    let _turn = one_workload_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("r.loopscope");
    let hlog = dir.path().join("r.hlog");
    record_short_run(&rec);
    let out = run(&["export", rec.to_str().unwrap(), "--hlog", hlog.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = std::fs::read_to_string(&hlog).unwrap();
    assert!(log.contains("#[StartTime: ") && log.contains("#[BaseTime: "), "{log}");
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("Tag=")).collect();
    assert!(lines.iter().any(|l| l.starts_with("Tag=poll,")), "{log}");
    assert!(lines.iter().any(|l| l.starts_with("Tag=poll@") && l.contains("sleep-storm/src/lib.rs")), "{log}");
    // Tag, start, length, max, base64 histogram.
    assert!(lines.iter().all(|l| l.split(',').count() == 5), "{log}");

    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "not a recording").unwrap();
    let out = run(&["export", garbage.to_str().unwrap(), "--hlog", "-"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a loopscope recording"));
}

#[test]
fn export_writes_stalls_as_a_chrome_trace() {
    let _turn = one_workload_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("sleep.loopscope");
    let out = run(&["run", "blocking", "--scenario", "sync-sleep", "--repeat", "3", "--record", rec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let trace = dir.path().join("trace.json");
    let out = run(&["export", rec.to_str().unwrap(), "--trace", trace.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("3 stalls"), "{}", text(&out.stderr));

    // The JSON object format of the Trace Event Format: `traceEvents`, each event with `name`,
    // `ph`, `pid`, `tid`; `ts` (microseconds) on all but metadata; `dur` on complete events; counter
    // events carry numeric `args`; metadata events name a process or thread in `args.name`.
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).expect("valid JSON");
    let events = doc["traceEvents"].as_array().expect("a traceEvents array");
    let mut threads = std::collections::HashSet::new();
    for e in events {
        assert!(e["name"].is_string() && e["pid"].is_u64() && e["tid"].is_u64(), "{e}");
        match e["ph"].as_str().unwrap() {
            "M" => {
                assert!(["process_name", "thread_name"].contains(&e["name"].as_str().unwrap()), "{e}");
                assert!(e["args"]["name"].is_string(), "{e}");
                if e["name"] == "thread_name" {
                    threads.insert(e["tid"].as_u64().unwrap());
                }
            }
            "C" => {
                assert!(e["ts"].as_f64().unwrap() >= 0.0, "{e}");
                assert!(e["args"].as_object().unwrap().values().all(|v| v.is_number()), "{e}");
            }
            "X" => {}
            other => panic!("unexpected phase {other}: {e}"),
        }
    }
    let stalls: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(stalls.len(), 3, "{doc}");
    for s in stalls {
        assert!(threads.contains(&s["tid"].as_u64().unwrap()), "a stall on a named worker track: {s}");
        assert!(s["ts"].as_f64().unwrap() >= 0.0 && s["cat"].as_str().unwrap().contains("sync-sleep"), "{s}");
        // At least the 10 ms threshold (the scenario sleeps 50 ms).
        assert!(s["dur"].as_f64().unwrap() >= 10_000.0, "{s}");
        assert_eq!(s["args"]["category"], "sync-sleep");
        assert!(s["args"]["blocking_site"].as_str().unwrap().contains("workloads/blocking/src/lib.rs:"), "{s}");
        assert!(s["name"].as_str().unwrap().contains("workloads/blocking/src/lib.rs:"), "{s}");
        assert!(!s["args"]["stack"].as_array().unwrap().is_empty(), "{s}");
    }
    assert!(events.iter().any(|e| e["ph"] == "C" && e["name"] == "polls"), "{doc}");

    // Both exports to standard output cannot be told apart: refused. No format: refused.
    let out = run(&["export", rec.to_str().unwrap(), "--trace", "-", "--hlog", "-"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = run(&["export", rec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--hlog") && text(&out.stderr).contains("--trace"), "{}", text(&out.stderr));
}

#[test]
fn slow_polls_are_sampled_and_exported_as_folded_stacks_and_a_flame_graph() {
    let _turn = one_workload_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("burst.loopscope");
    // 40 sleepers, each doing about 3 ms of CPU work per wake-up: slow polls, no stall.
    let out = run(&[
        "run",
        "sleep-storm",
        "--tasks",
        "40",
        "--work",
        "3000000",
        "--for",
        "2s",
        "--json",
        "--record",
        rec.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let samples = report["sampling"]["samples"].as_u64().unwrap();
    assert!(samples >= 20, "{}", report["sampling"]);
    let top = &report["hot_lines"][0];
    assert_eq!(top["function"], "sleep_storm::work", "{:#}", report["hot_lines"]);
    assert!(top["line"].as_str().unwrap().contains("workloads/sleep-storm/src/lib.rs:"), "{top:#}");

    let folded = dir.path().join("burst.folded");
    let svg = dir.path().join("burst.svg");
    let out = run(&[
        "export",
        rec.to_str().unwrap(),
        "--folded",
        folded.to_str().unwrap(),
        "--flamegraph",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Folded: `frame;frame;... count`, from the spawn site in; the counts add up to the samples
    // that have a stack.
    let folded = std::fs::read_to_string(&folded).unwrap();
    let mut total = 0u64;
    for line in folded.lines() {
        let (stack, count) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not folded: {line}"));
        assert!(stack.starts_with("spawn:workloads/sleep-storm/src/lib.rs:"), "{line}");
        total += count.parse::<u64>().unwrap();
    }
    let with_stack = samples - report["sampling"]["without_stack"].as_u64().unwrap();
    assert_eq!(total, with_stack);
    assert!(folded.contains(";sleep_storm::work "), "{folded}");
    // It round-trips through inferno, as any folded-stack tool reads it.
    let mut again = Vec::new();
    inferno::flamegraph::from_lines(&mut inferno::flamegraph::Options::default(), folded.lines(), &mut again).unwrap();
    assert!(String::from_utf8_lossy(&again).contains("sleep_storm::work"));
    // The flame graph is well-formed SVG naming the hot function.
    let svg = std::fs::read_to_string(&svg).unwrap();
    // inferno writes a DOCTYPE line.
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(&svg, options).expect("the flame graph parses as XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    assert!(doc.descendants().any(|n| n.text().is_some_and(|t| t.contains("sleep_storm::work"))), "{svg:.300}");
    // Stalls as folded stacks too, weighted by microseconds (a loaded host may have made some
    // polls stalls; none is said on stderr).
    let out = run(&["export", rec.to_str().unwrap(), "--folded", "-", "--of", "stalls"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stalls = text(&out.stdout);
    assert!(!stalls.is_empty() || text(&out.stderr).contains("no stalls"), "{}", text(&out.stderr));
    for line in stalls.lines() {
        assert!(line.starts_with("spawn:") && line.rsplit_once(' ').unwrap().1.parse::<u64>().is_ok(), "{line}");
    }
}

/// A program whose runtime has two workers answers `loopscope dump` once; a second request is
/// refused with the reason (tokio-rs/tokio#8370), and its answer shows the complete dump before.
#[test]
fn a_second_dump_of_two_workers_is_refused_and_shows_the_first() {
    let _turn = one_workload_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("hang.sock");
    let addr = format!("unix:{}", sock.display());
    let mut program = loopscope()
        .args(["run", "hangs", "--scenario", "deadlock", "--for", "60s", "--workers", "2", "--dump-idle", "off"])
        .args(["--serve", &addr])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answers = Vec::new();
    while answers.len() < 2 && Instant::now() < deadline {
        if !sock.exists() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let out = run(&["dump", "--attach", &addr]);
        answers.push((out.status.code(), text(&out.stdout)));
    }
    let _ = program.kill();
    let _ = program.wait();
    assert_eq!(answers.len(), 2, "two answers within 30 s: {answers:?}");
    let (code, first) = &answers[0];
    assert_eq!(*code, Some(0), "{first}");
    assert!(first.contains("tasks in") && !first.contains("unavailable"), "{first}");
    let (code, second) = &answers[1];
    assert_eq!(*code, Some(0), "{second}");
    assert!(second.contains("(request): unavailable") && second.contains("tokio-rs/tokio#8370"), "{second}");
    assert!(second.contains("The run's latest complete dump:"), "{second}");
}
