//! The cost of the per-poll hook pair, in nanoseconds per poll.
//!
//! The storm of `loopscope_bench::storm` (1,000 tasks yielding in turn on a current-thread
//! runtime: every poll an empty one) runs plainly, under the recorder in each configuration, and under two reference
//! hook pairs: `empty_hooks` (tokio calls two closures that do nothing: the price of having hooks
//! at all) and `floor` (two TSC reads and one thread-local histogram record, the least a poll
//! timer can do; `floor_and_tokio_latency` adds tokio's schedule-latency tracking and records
//! its figure too, the least `full` can do). The difference between a configuration and `plain` is what it adds per poll.
//!
//! `cargo bench -p loopscope-bench --bench hooks` (`just bench-hooks`)

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use loopscope_bench::storm::{Mode, storm};

fn per_poll(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_poll");
    g.measurement_time(Duration::from_secs(4));
    for (name, mode) in [
        ("plain", Mode::Plain),
        ("empty_hooks", Mode::EmptyHooks),
        ("floor", Mode::Floor),
        ("floor_and_tokio_latency", Mode::FloorAndTokioLatency),
        ("lean_no_detector", Mode::LeanNoDetector),
        ("lean_no_tasks", Mode::LeanNoTasks),
        ("lean", Mode::Lean),
        ("full", Mode::Full),
    ] {
        g.bench_function(name, |b| b.iter_custom(|iters| storm(mode, false, iters)));
    }
    g.finish();
    let mut g = c.benchmark_group("per_poll_two_sites");
    g.measurement_time(Duration::from_secs(4));
    for (name, mode) in [("plain", Mode::Plain), ("floor", Mode::Floor), ("lean", Mode::Lean)] {
        g.bench_function(name, |b| b.iter_custom(|iters| storm(mode, true, iters)));
    }
    g.finish();
}

criterion_group!(benches, per_poll);
criterion_main!(benches);
