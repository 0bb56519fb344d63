//! The catalogue under `#[loopscope::test]`: each mistake's test fails with the category of its
//! blocking (`#[should_panic]`), each fix's test passes, and the message of each mistake is kept
//! as a snapshot (`tests/snapshots/`), with what differs from run to run left out.
//!
//! Every scenario runs once, on a two-worker runtime as `loopscope run blocking` runs it.

use blocking::{Scenario, run_scenario};
use loopscope::testing::TestRun;

/// Runs one scenario (the mistake, or with `fixed` its fix) once.
async fn scenario(s: Scenario, fixed: bool) -> loopscope::WorkloadResult {
    run_scenario(s, fixed, 1).await.unwrap_or_else(|e| panic!("{} did not run: {e}", s.name()))
}

macro_rules! mistake_and_fix {
    ($mistake:ident, $fix:ident, $scenario:expr, $expected:literal) => {
        #[loopscope::test(flavor = "multi_thread", worker_threads = 2)]
        #[should_panic(expected = $expected)]
        async fn $mistake() {
            scenario($scenario, false).await;
        }

        #[loopscope::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $fix() {
            scenario($scenario, true).await;
        }
    };
}

mistake_and_fix!(sync_sleep, sync_sleep_fixed, Scenario::SyncSleep, "sync-sleep: a poll blocked its thread");
mistake_and_fix!(cpu_loop, cpu_loop_fixed, Scenario::CpuLoop, "cpu-bound: a poll blocked its thread");
mistake_and_fix!(blocking_fs, blocking_fs_fixed, Scenario::BlockingFs, "file-io: a poll blocked its thread");
mistake_and_fix!(blocking_dns, blocking_dns_fixed, Scenario::BlockingDns, "dns: a poll blocked its thread");
mistake_and_fix!(blocking_net, blocking_net_fixed, Scenario::BlockingNet, "network-io: a poll blocked its thread");
mistake_and_fix!(std_mutex, std_mutex_fixed, Scenario::StdMutex, "lock-wait: a poll blocked its thread");
mistake_and_fix!(
    nested_runtime,
    nested_runtime_fixed,
    Scenario::NestedRuntime,
    "nested-runtime: tokio panicked: a runtime was started inside a runtime"
);
mistake_and_fix!(
    executor_block_on,
    executor_block_on_fixed,
    Scenario::ExecutorBlockOn,
    "nested-executor: a poll blocked its thread"
);

/// Forgetting `.await` blocks nothing: the work silently never happens. No profiler sees it (the
/// compiler does: `tests/forgot_await_lint.rs`); the attribute passes, the lost work is counted.
#[loopscope::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgot_await_blocks_nothing_and_loses_the_work() {
    let lost = scenario(Scenario::ForgotAwait, false).await;
    assert_eq!(lost.get_metric("lost_work"), Some(1.0));
    let kept = scenario(Scenario::ForgotAwait, true).await;
    assert_eq!(kept.get_metric("lost_work"), Some(0.0));
}

/// The category each mistake's message names.
fn category(s: Scenario) -> &'static str {
    match s {
        Scenario::SyncSleep => "sync-sleep",
        Scenario::CpuLoop => "cpu-bound",
        Scenario::BlockingFs => "file-io",
        Scenario::BlockingDns => "dns",
        Scenario::BlockingNet => "network-io",
        Scenario::StdMutex => "lock-wait",
        Scenario::NestedRuntime => "nested-runtime",
        Scenario::ExecutorBlockOn => "nested-executor",
        Scenario::ForgotAwait => "none",
    }
}

/// The message of a failing test, as the attribute would panic with it.
///
/// On a loaded machine the stack of a stall may not be captured (the signal's handler did not run
/// in time on the stuck thread): the test still fails, but its message names no line and the
/// category is the kernel's alone. The snapshot is of the message with the stack, so such a run
/// is tried again, at most five times.
fn message(s: Scenario) -> String {
    let mut last = String::new();
    for _ in 0..5 {
        let verdict = verdict(s);
        assert!(!verdict.passed(), "{verdict}");
        last = stable(&verdict.to_string());
        let complete = verdict.findings().iter().all(|f| f.blocking_site.is_some() && f.category.name() == category(s));
        if complete {
            return last;
        }
    }
    last
}

fn verdict(s: Scenario) -> loopscope::testing::Verdict {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Without the LIFO slot, a task spawned by the test's body wakes the other worker, which
    // then drives the timer: `futures::executor::block_on` of a tokio timer returns instead of
    // waiting forever (the attribute's test above gives up on it after 5 s), so that its message
    // is always the same.
    builder.worker_threads(2).disable_lifo_slot();
    // A threshold well under each mistake's blocking, and over the time a computing poll spends
    // filling its buffer before it hashes: the look that names a computing poll's line is in
    // its hashing on any machine.
    let checked = TestRun::new(format!("catalogue::{}", s.name()))
        .flavor(tokio::runtime::RuntimeFlavor::MultiThread)
        .stall_threshold(std::time::Duration::from_millis(10))
        .run(builder, async move { run_scenario(s, false, 1).await.map(drop) })
        .unwrap();
    checked.output.unwrap();
    checked.verdict
}

/// The message without what differs between runs and machines: durations, temporary paths, the
/// system call a look happened to catch, the host's share of stalls (and the blank line before
/// it).
fn stable(message: &str) -> String {
    let tmp = std::env::temp_dir().to_string_lossy().trim_end_matches('/').to_string();
    let lines: Vec<String> = message
        .lines()
        .filter(|l| !l.starts_with("Not failures:") && !l.starts_with("Note:"))
        .map(|l| {
            if l.starts_with("loopscope: test") {
                return l.to_string();
            }
            let l = match l.find(" (the thread was in ") {
                Some(at) if l.trim_start().starts_with("calling") => &l[..at],
                _ => l,
            };
            let l = l.replace(&tmp, "[tmp]");
            durations(&l)
        })
        .collect();
    let mut out: Vec<&str> = Vec::new();
    for l in &lines {
        if !(l.is_empty() && out.last().is_some_and(|last| last.is_empty())) {
            out.push(l);
        }
    }
    out.join("\n")
}

/// Replaces each duration (`30.2ms`, `840µs`, `1.50s`) with `[duration]`.
fn durations(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        let (before, from) = rest.split_at(start);
        let number = from.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(from.len());
        let unit = ["ns", "µs", "ms", "s"].into_iter().find(|u| {
            from[number..].starts_with(u)
                && !from[number + u.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        });
        let preceded = before.ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':' || c == '.');
        match unit {
            Some(u) if !preceded => {
                out.push_str(before);
                out.push_str("[duration]");
                rest = &from[number + u.len()..];
            }
            _ => {
                out.push_str(before);
                out.push_str(&from[..number]);
                rest = &from[number..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn durations_and_only_durations_are_left_out() {
    assert_eq!(
        durations("blocked for 30.2ms at src/lib.rs:250, 2 polls, 840µs, 1.50s; x2ms"),
        "blocked for [duration] at src/lib.rs:250, 2 polls, [duration], [duration]; x2ms"
    );
}

macro_rules! snapshot {
    ($name:ident, $scenario:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(message($scenario));
        }
    };
}

snapshot!(message_of_sync_sleep, Scenario::SyncSleep);
snapshot!(message_of_cpu_loop, Scenario::CpuLoop);
snapshot!(message_of_blocking_fs, Scenario::BlockingFs);
snapshot!(message_of_blocking_dns, Scenario::BlockingDns);
snapshot!(message_of_blocking_net, Scenario::BlockingNet);
snapshot!(message_of_std_mutex, Scenario::StdMutex);
snapshot!(message_of_nested_runtime, Scenario::NestedRuntime);
snapshot!(message_of_executor_block_on, Scenario::ExecutorBlockOn);
