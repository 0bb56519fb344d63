//! `loopscope record -- CMD`: this test binary plays the program, a tokio program using
//! `#[loopscope::main]`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{loopscope, text};

/// Set in the environment of the re-run that plays the program: `exit:N` (ends with
/// `std::process::exit(N)` after `main` returned), `exit-inside:N` (calls it from inside the
/// async `main`, while the runtime and the recorder are running) or `term`.
const CHILD: &str = "LOOPSCOPE_RECORD_TEST_CHILD";

/// A program with a few sleepers and one accidental synchronous sleep of 40 ms.
#[loopscope::main(worker_threads = 2)]
async fn program(wait_for_sigterm: bool) -> std::io::Result<()> {
    if wait_for_sigterm {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        println!("READY");
        term.recv().await;
        println!("SIGTERM handled");
    }
    let sleepers: Vec<_> =
        (0..50).map(|i| tokio::spawn(async move { tokio::time::sleep(Duration::from_millis(i % 7)).await })).collect();
    for s in sleepers {
        s.await?;
    }
    tokio::spawn(async { std::thread::sleep(Duration::from_millis(40)) }).await?;
    Ok(())
}

#[test]
#[ignore = "the program run by the tests below, in a child process"]
fn child_program() {
    let Ok(mode) = std::env::var(CHILD) else { return };
    match mode.split_once(':') {
        Some(("exit", code)) => {
            program(false).unwrap();
            // The program's own peak memory, for the test that it never symbolizes.
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            println!("{}", status.lines().find(|l| l.starts_with("VmHWM")).unwrap());
            std::process::exit(code.parse().unwrap());
        }
        Some(("exit-inside", code)) => exit_inside(code.parse().unwrap()),
        _ => program(true).unwrap(),
    }
}

/// A program that ends with `std::process::exit` from inside its async `main`: no destructor
/// runs, the runtime is never dropped.
#[loopscope::main(worker_threads = 2)]
async fn exit_inside(code: i32) {
    tokio::spawn(async { std::thread::sleep(Duration::from_millis(40)) }).await.unwrap();
    for i in 0..20 {
        tokio::spawn(async move { tokio::time::sleep(Duration::from_millis(i)).await }).await.unwrap();
    }
    std::process::exit(code);
}

fn record(out: &Path, mode: &str) -> Command {
    let mut cmd = loopscope();
    cmd.args(["record", "--out", out.to_str().unwrap(), "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_program", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .env_remove("LOOPSCOPE_RECORD")
        .env_remove("LOOPSCOPE_SERVE");
    cmd
}

#[test]
fn record_returns_the_programs_exit_code_and_prints_the_report_of_its_recording() {
    let _turn = support::one_workload_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("prog.loopscope");
    let out = record(&out_path, "exit:7").stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("loopscope report"), "{stdout}");
    // The stall is named at its line in this file.
    assert!(stdout.contains("Stalls: 1 poll blocked a worker"), "{stdout}");
    assert!(stdout.contains("tests/record.rs:"), "{stdout}");
    assert!(text(&out.stderr).contains("exited with code 7"), "{}", text(&out.stderr));
    let report = loopscope::core::report::Report::from_file(&out_path).expect("a recording");
    assert!(report.runtime.polls >= 50);
    assert_eq!(report.stalls.iter().map(|g| g.count).sum::<u64>(), 1);
    assert_eq!(report.stalls[0].category, loopscope::core::model::StallCategory::SyncSleep);

    // JSON, and a file left from a run before is not taken for this run's.
    let out = loopscope()
        .args(["record", "--json", "--out", out_path.to_str().unwrap(), "--", "sh", "-c", "exit 0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "no recording from this run: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("does not embed loopscope"), "{}", text(&out.stderr));
}

#[test]
fn a_program_without_the_recorder_is_told_how_to_add_it_and_keeps_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = loopscope().current_dir(dir.path()).args(["record", "--", "sh", "-c", "exit 5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("sh wrote no recording to sh.loopscope") && stderr.contains("#[loopscope::main]"),
        "{stderr}"
    );

    let out = loopscope().args(["record", "--", "/nonexistent/program"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot run `/nonexistent/program`"), "{}", text(&out.stderr));
    let out = loopscope().args(["record", "--interval", "1ms", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--interval"), "{}", text(&out.stderr));
}

#[test]
fn sigterm_sent_to_loopscope_reaches_the_program_which_ends_cleanly() {
    let _turn = support::one_workload_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("term.loopscope");
    let mut child = record(&out_path, "term").stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if line.contains("READY") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        panic!("the program never got ready");
    }
    // SAFETY: a signal to the loopscope process this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("SIGTERM was not passed on: the program is still running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("SIGTERM handled"), "{stdout}");
    assert!(stdout.contains("loopscope report"), "the report follows the program's end: {stdout}");
}

#[test]
fn the_profiled_program_never_parses_debug_information() {
    let _turn = support::one_workload_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("prog.loopscope");
    let out = record(&out_path, "exit:0").stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // Named at its line, by loopscope reading this test binary's debug information...
    assert!(stdout.contains("Stalls: 1 poll blocked a worker") && stdout.contains("tests/record.rs:"), "{stdout}");
    // ...which the program itself never loaded: the recording holds addresses, and the program's
    // peak memory stays far below what parsing this binary's debug information takes (hundreds of
    // megabytes).
    let rec = loopscope::core::format::Recording::read(&out_path).unwrap();
    use loopscope::core::model::Event;
    // The stall's stack: taken when it was raised, or (a thread the host had not run yet, or
    // inside a system call) by the look that got it.
    let (frames, stack) = rec
        .events
        .iter()
        .find_map(|e| match e {
            Event::StallBegin(s) if !s.frames.is_empty() => Some((&s.frames, &s.stack)),
            Event::StallLook { frames, stack, .. } if !frames.is_empty() => Some((frames, stack)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a stall with a stack: {:?}", rec.events));
    assert!(!frames.is_empty() && stack.is_empty(), "raw frames only: {frames:?} {stack:?}");
    assert!(rec.modules.iter().any(|m| m.main && m.build_id.is_some()), "{:?}", rec.modules);
    let hwm_kib: u64 = stdout
        .lines()
        .find_map(|l| l.split_once("VmHWM:").map(|(_, v)| v))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("the program printed its peak memory");
    assert!(hwm_kib < 64 * 1024, "the program's peak RSS was {} MiB: did it parse debug information?", hwm_kib / 1024);
}

#[test]
fn a_program_that_calls_exit_inside_main_keeps_its_whole_recording() {
    let _turn = support::one_workload_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("exit.loopscope");
    let out = record(&out_path, "exit-inside:7").stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let rec = loopscope::core::format::Recording::read(&out_path).unwrap();
    assert!(rec.is_complete(), "the footer was written at exit: {:?}", rec.completeness);
    assert_eq!(rec.header.flavor, loopscope::core::model::Flavor::MultiThread);
    let report = loopscope::core::report::Report::from_file(&out_path).unwrap();
    assert!(report.runtime.polls >= 21, "the last partial interval was flushed: {} polls", report.runtime.polls);
    assert_eq!(report.runtime.stalls.count, 1, "{:?}", report.stalls);
    assert!(text(&out.stdout).contains("tests/record.rs:"), "{}", text(&out.stdout));
}
