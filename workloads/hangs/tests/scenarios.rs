//! Each mistake really hangs and each fix really does not, on a plain tokio runtime (no
//! loopscope). A hang is shown by what has not happened by a deadline: the scenario's `run_for`,
//! with the whole call bounded by a timeout so that a scenario which itself hung would fail the
//! test instead of stalling it. Alive tasks are counted with the runtime's own metrics.

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hangs::{PANICS, Scenario};
use loopscope_core::workload::WorkloadResult;

/// Tasks alive on the test's runtime.
fn alive() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

fn metric(r: &WorkloadResult, name: &str) -> f64 {
    r.get_metric(name).unwrap_or_else(|| panic!("metric {name} in {r:?}"))
}

/// Runs a scenario, failing the test if the call itself does not return soon after `run_for`.
async fn run(scenario: Scenario, fixed: bool, run_for: Duration) -> WorkloadResult {
    let call = hangs::run_scenario(scenario, fixed, run_for);
    tokio::time::timeout(run_for + Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| panic!("{} (fixed: {fixed}) did not return after its run", scenario.name()))
        .unwrap_or_else(|e| panic!("{} (fixed: {fixed}): {e}", scenario.name()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlock_holds_both_transfers_forever_and_one_lock_order_fixes_it() {
    let before = alive();
    let r = run(Scenario::Deadlock, false, Duration::from_secs(2)).await;
    assert_eq!(metric(&r, "transfers"), 0.0, "neither transfer finished within 2 s");
    assert_eq!(metric(&r, "tasks_stuck"), 2.0);
    assert_eq!(alive() - before, 2, "both transfers are still alive, each waiting for the other's lock");

    let r = run(Scenario::Deadlock, true, Duration::from_millis(300)).await;
    assert!(metric(&r, "transfers") > 10.0, "the fixed transfers completed rounds: {r:?}");
    assert_eq!(metric(&r, "tasks_stuck"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_waker_never_wakes_the_waiter_and_a_kept_one_does() {
    // The flag is set 50 ms into the run: the waiter has had more than a second to notice.
    let before = alive();
    let r = run(Scenario::LostWaker, false, Duration::from_millis(1200)).await;
    assert_eq!(metric(&r, "flags_set"), 1.0, "the other task set the flag");
    assert_eq!(metric(&r, "waits_completed"), 0.0, "the waiter never finished waiting");
    assert_eq!(metric(&r, "tasks_stuck"), 1.0);
    assert_eq!(alive() - before, 1, "the waiter is still alive");

    let r = run(Scenario::LostWaker, true, Duration::from_millis(500)).await;
    assert!(metric(&r, "waits_completed") >= 3.0, "each wait finished and the next began: {r:?}");
    assert_eq!(metric(&r, "waits_completed"), metric(&r, "flags_set"));
    assert_eq!(metric(&r, "tasks_stuck"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_sender_leaks_one_helper_per_request_and_dropping_it_does_not() {
    let before = alive();
    let r = run(Scenario::LeakPerRequest, false, Duration::from_secs(1)).await;
    let requests = metric(&r, "requests");
    assert!(requests >= 20.0, "about 50 requests in a second: {r:?}");
    let grown = alive() as f64 - before as f64;
    assert!((grown - requests).abs() <= 2.0, "one helper left alive per request: {grown} for {requests} requests");
    assert!((metric(&r, "helpers_alive") - requests).abs() <= 2.0, "{r:?}");

    let before = alive();
    let r = run(Scenario::LeakPerRequest, true, Duration::from_secs(1)).await;
    assert!(metric(&r, "requests") >= 20.0, "{r:?}");
    let grown = alive() as f64 - before as f64;
    assert!(grown <= 3.0, "the helpers end with their requests: {grown} left alive after {r:?}");
}

/// Panics with the scenario's message, counted by a panic hook (and not printed).
static ORDER_7_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_order_7_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload_as_str() == Some("order 7 has no customer") {
                ORDER_7_PANICS.fetch_add(1, Ordering::SeqCst);
            } else {
                previous(info);
            }
        }));
    });
}

// The only test that makes the `detached-panic` mistake, so that the count is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_panics_go_unseen_and_the_workload_goes_on_while_errors_get_handled() {
    count_order_7_panics();
    let before = ORDER_7_PANICS.load(Ordering::SeqCst);
    let r = run(Scenario::DetachedPanic, false, Duration::from_millis(200)).await;
    assert_eq!(ORDER_7_PANICS.load(Ordering::SeqCst) - before, PANICS, "every task panicked");
    assert_eq!(metric(&r, "tasks_ended"), PANICS as f64);
    assert_eq!(metric(&r, "errors_handled"), 0.0, "nobody saw the panics");
    assert_eq!(metric(&r, "outcomes_lost"), PANICS as f64);

    let before = ORDER_7_PANICS.load(Ordering::SeqCst);
    let r = run(Scenario::DetachedPanic, true, Duration::from_millis(200)).await;
    assert_eq!(ORDER_7_PANICS.load(Ordering::SeqCst), before, "the fix does not panic");
    assert_eq!(metric(&r, "errors_handled"), PANICS as f64);
    assert_eq!(metric(&r, "outcomes_lost"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_heartbeats_pile_up_and_aborted_ones_do_not() {
    let before = alive();
    let r = run(Scenario::ForgottenHandle, false, Duration::from_secs(1)).await;
    let requests = metric(&r, "requests");
    assert!(requests >= 10.0, "about 20 requests in a second: {r:?}");
    let grown = alive() as f64 - before as f64;
    assert!((grown - requests).abs() <= 2.0, "one heartbeat left alive per request: {grown} for {requests} requests");

    let before = alive();
    let r = run(Scenario::ForgottenHandle, true, Duration::from_secs(1)).await;
    assert!(metric(&r, "requests") >= 10.0, "{r:?}");
    let grown = alive() as f64 - before as f64;
    assert!(grown <= 3.0, "each heartbeat ends with its request: {grown} left alive after {r:?}");
}

#[test]
fn every_scenario_has_its_kebab_case_name_on_the_command_line() {
    use clap::ValueEnum;
    for s in Scenario::ALL {
        assert_eq!(Scenario::from_str(s.name(), false), Ok(s));
    }
}

#[test]
fn every_marker_is_on_exactly_one_line() {
    let source = include_str!("../src/lib.rs");
    for marker in [
        "deadlock-a",
        "deadlock-b",
        "lost-waker",
        "leak-spawn",
        "leak-wait",
        "panic-spawn",
        "panic",
        "forgotten-spawn",
        "forgotten-wait",
    ] {
        let tag = format!("// hang: {marker}");
        let lines: Vec<&str> = source.lines().filter(|l| l.trim_end().ends_with(&tag)).collect();
        assert_eq!(lines.len(), 1, "{tag}: {lines:?}");
        assert!(!lines[0].trim_start().starts_with("//"), "{tag} is on a line of code: {lines:?}");
    }
}
