//! The hang catalogue under the recorder (with task dumps): each mistake shows where it should,
//! and its fix shows nothing. Each scenario runs on a 2-worker runtime recorded to a temporary
//! file at 250 ms intervals; the report is read back from the file, as `loopscope report` would.

use std::time::Duration;

use hangs::{PANICS, Scenario};
use loopscope::Session;
use loopscope::core::report::Report;
use loopscope::core::workload::WorkloadResult;

/// The line of `src/lib.rs` that carries the marker `// hang: NAME`.
fn marker(name: &str) -> u32 {
    let tag = format!("// hang: {name}");
    let at = include_str!("../src/lib.rs").lines().position(|l| l.trim_end().ends_with(&tag)).expect(name);
    at as u32 + 1
}

/// The line of `src/lib.rs` that contains `code` (exactly once).
fn line_with(code: &str) -> u32 {
    let lines: Vec<usize> =
        include_str!("../src/lib.rs").lines().enumerate().filter(|(_, l)| l.contains(code)).map(|(i, _)| i).collect();
    assert_eq!(lines.len(), 1, "{code}: {lines:?}");
    lines[0] as u32 + 1
}

/// `workloads/hangs/src/lib.rs:LINE:` (a spawn site) or `...:LINE` (an await point) suffix match.
fn at(line: u32) -> String {
    format!("hangs/src/lib.rs:{line}")
}

fn record(scenario: Scenario, fixed: bool, run_for: Duration) -> Report {
    record_with_result(scenario, fixed, run_for).0
}

/// The report, and the workload's own figures.
fn record_with_result(scenario: Scenario, fixed: bool, run_for: Duration) -> (Report, WorkloadResult) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hang.loopscope");
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    let session = Session::builder()
        .record_to(&path)
        .interval(Duration::from_millis(250))
        .workload(hangs::NAME)
        .dump_when_idle(Some(loopscope::DEFAULT_DUMP_IDLE))
        .install(&mut b)
        .unwrap();
    let rt = b.build().unwrap();
    let result = rt.block_on(hangs::run_scenario(scenario, fixed, run_for)).unwrap();
    session.record_workload(&result);
    // The stuck tasks are still alive: the runtime drops them at shutdown.
    rt.shutdown_background();
    session.finish().unwrap();
    (Report::from_file(&path).unwrap(), result)
}

#[test]
fn a_deadlock_is_named_by_both_await_points_and_spawn_sites_within_five_seconds() {
    let report = record(Scenario::Deadlock, false, Duration::from_secs(5));
    let spawns = [line_with("tokio::spawn(transfer_a_to_b("), line_with("tokio::spawn(transfer_b_to_a(")];
    let awaits = [marker("deadlock-a"), marker("deadlock-b")];
    let dump = report
        .dumps
        .iter()
        .find(|d| d.trigger == "idle" && d.outcome == "complete")
        .unwrap_or_else(|| panic!("an automatic dump: {:#?}", report.dumps));
    // The deadlock begins as the run starts (both tasks meet at a barrier, then wait).
    assert!(dump.at <= Duration::from_secs(5), "taken at {:?}", dump.at);
    for (spawn, wait) in spawns.iter().zip(awaits) {
        let group = dump
            .groups
            .iter()
            .find(|g| g.spawn_site.as_deref().is_some_and(|s| s.contains(&format!("{}:", at(*spawn)))))
            .unwrap_or_else(|| panic!("the task spawned at line {spawn}: {:#?}", dump.groups));
        assert_eq!(group.count, 1);
        let lines: Vec<&str> = group.await_points.iter().filter_map(|p| p.line.as_deref()).collect();
        assert!(lines.iter().any(|l| l.ends_with(&at(wait))), "waits at line {wait}: {lines:?}");
        assert!(group.waiting_at(str::to_string).contains("Mutex::lock"), "{}", group.waiting_at(str::to_string));
    }
    for spawn in spawns {
        let w = report.waiting.iter().find(|w| w.spawn_site.as_deref().is_some_and(|s| s.contains(&at(spawn))));
        let w = w.unwrap_or_else(|| panic!("waiting tasks of line {spawn}: {:#?}", report.waiting));
        assert_eq!(w.alive, 1);
        assert!(w.idle.max >= Duration::from_secs(4), "idle the whole run: {:?}", w.idle);
    }
}

#[test]
fn the_fixed_transfers_run_thirty_seconds_and_nothing_is_stuck() {
    let report = record(Scenario::Deadlock, true, Duration::from_secs(30));
    assert!(report.dumps.iter().all(|d| d.trigger != "idle"), "no automatic dump: {:#?}", report.dumps);
    let transfers = report.workload.as_ref().and_then(|w| w.metrics.iter().find(|m| m.name == "transfers"));
    assert!(transfers.is_some_and(|m| m.value > 1000.0), "{transfers:?}");
    for w in &report.waiting {
        assert!(w.idle.max < Duration::from_secs(1), "nothing waits for long: {w:#?}");
    }
}

#[test]
fn a_lost_waker_leaves_its_task_idle_with_no_tokio_resource_in_its_trace() {
    let report = record(Scenario::LostWaker, false, Duration::from_secs(4));
    let dump = report.dumps.iter().find(|d| d.trigger == "idle").expect("an automatic dump");
    assert_eq!(dump.outcome, "complete");
    // The waiter's trace has no leaf: it waits on a future of its own that nobody will wake.
    let waiter = report.waiting.iter().find(|w| w.idle.max >= Duration::from_secs(3)).expect("an idle task");
    let group = dump.groups.iter().find(|g| g.spawn_site == waiter.spawn_site).expect("the waiter in the dump");
    assert!(group.await_points.is_empty(), "{group:#?}");
    assert!(group.waiting_at(str::to_string).contains("lost waker"));
}

#[test]
fn a_leak_per_request_is_flagged_within_ten_seconds_and_its_fix_is_not() {
    let spawn = marker("leak-spawn");
    let (report, result) = record_with_result(Scenario::LeakPerRequest, false, Duration::from_secs(10));
    let leak = report.growing.iter().find(|g| g.spawn_site.as_deref().is_some_and(|s| s.contains(&at(spawn))));
    let leak = leak.unwrap_or_else(|| panic!("line {spawn} growing: {:#?}", report.growing));
    assert!(leak.growth.per_second > 20.0, "about 50 a second: {:?}", leak.growth);
    let w = report.waiting.iter().find(|w| w.spawn_site == leak.spawn_site).expect("its waiting tasks");
    // Every request left its helper waiting; the figures are those of the last interval before
    // the end (250 ms: a dozen requests fewer at most, more on a busy machine's slower pace).
    let requests = result.get_metric("requests").expect("requests");
    assert!(w.alive as f64 >= requests * 0.8 && w.alive as f64 <= requests, "{requests} requests: {w:#?}");

    let report = record(Scenario::LeakPerRequest, true, Duration::from_secs(10));
    assert!(report.growing.is_empty(), "{:#?}", report.growing);
}

#[test]
fn forgotten_handles_pile_up_and_kept_ones_do_not() {
    let spawn = marker("forgotten-spawn");
    let report = record(Scenario::ForgottenHandle, false, Duration::from_secs(10));
    assert!(
        report.growing.iter().any(|g| g.spawn_site.as_deref().is_some_and(|s| s.contains(&at(spawn)))),
        "line {spawn} growing: {:#?}",
        report.growing
    );
    let report = record(Scenario::ForgottenHandle, true, Duration::from_secs(10));
    assert!(report.growing.is_empty(), "{:#?}", report.growing);
}

#[test]
fn panics_of_detached_tasks_are_counted_exactly_with_message_and_line() {
    let report = record(Scenario::DetachedPanic, false, Duration::from_secs(2));
    assert_eq!(report.panics.len(), 1, "{:#?}", report.panics);
    let p = &report.panics[0];
    assert_eq!(p.count, PANICS as u64);
    assert_eq!(p.message, "order 7 has no customer");
    assert!(p.location.as_deref().is_some_and(|l| l.contains(&format!("{}:", at(marker("panic"))))), "{p:?}");
    assert!(p.spawn_site.as_deref().is_some_and(|s| s.contains(&at(marker("panic-spawn")))), "{p:?}");

    let report = record(Scenario::DetachedPanic, true, Duration::from_secs(2));
    assert!(report.panics.is_empty(), "{:#?}", report.panics);
}
