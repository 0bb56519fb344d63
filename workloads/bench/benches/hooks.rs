//! The cost of the per-poll hook pair, in nanoseconds per poll.
//!
//! A yield storm on a current-thread runtime: 1,000 tasks each yield in turn, so every poll is
//! an empty one and the runtime polls its driver only once per round of 1,000 polls (a storm of
//! a single task would make a system call per poll and measure cold caches instead of the hooks).
//! The storm runs plainly, under the recorder in each configuration, and under two reference
//! hook pairs: `empty_hooks` (tokio calls two closures that do nothing: the price of having hooks
//! at all) and `floor` (two TSC reads and one thread-local histogram record, the least a poll
//! timer can do; `floor_and_tokio_latency` adds tokio's schedule-latency tracking and records
//! its figure too, the least `full` can do). The difference between a configuration and `plain` is what it adds per poll.
//!
//! `cargo bench -p loopscope-bench --bench hooks` (`just bench-hooks`)

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

const TASKS: u64 = 1_000;

#[derive(Clone, Copy)]
enum Mode {
    Plain,
    EmptyHooks,
    Floor,
    FloorAndTokioLatency,
    Lean,
    LeanNoDetector,
    Full,
}

/// Runs at least `iters` empty polls (whole rounds, at least 20) and returns how long `iters` of
/// them took. With `two_sites`, the tasks come from two spawn sites, alternately, so consecutive
/// polls are of different sites (as in a ping-pong between a sender and a receiver).
fn storm(mode: Mode, two_sites: bool, iters: u64) -> Duration {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    match mode {
        Mode::EmptyHooks => {
            b.on_before_task_poll(|_| {}).on_after_task_poll(|_| {});
        }
        Mode::Floor => loopscope_bench::floor::install(&mut b, false),
        Mode::FloorAndTokioLatency => loopscope_bench::floor::install(&mut b, true),
        _ => {}
    }
    let session = match mode {
        Mode::Plain | Mode::EmptyHooks | Mode::Floor | Mode::FloorAndTokioLatency => None,
        Mode::Lean => Some(loopscope::Session::builder().profile(loopscope::Profile::Lean)),
        Mode::LeanNoDetector => {
            Some(loopscope::Session::builder().profile(loopscope::Profile::Lean).stall_detector(false))
        }
        Mode::Full => Some(loopscope::Session::builder().profile(loopscope::Profile::Full)),
    }
    .map(|s| s.install(&mut b).unwrap());
    let rt = b.build().unwrap();
    let rounds = iters.div_ceil(TASKS).max(20);
    let took = rt.block_on(async move {
        async fn yielder(rounds: u64) {
            for _ in 0..rounds {
                tokio::task::yield_now().await;
            }
        }
        // The branches differ in their spawn location, which is the point.
        #[allow(clippy::if_same_then_else)]
        let tasks: Vec<_> =
            (0..TASKS)
                .map(|i| {
                    if two_sites && i % 2 == 1 { tokio::spawn(yielder(rounds)) } else { tokio::spawn(yielder(rounds)) }
                })
                .collect();
        // The tasks first run when this future waits.
        let start = Instant::now();
        for t in tasks {
            t.await.unwrap();
        }
        start.elapsed()
    });
    drop(rt);
    if let Some(s) = session {
        s.finish().unwrap();
    }
    took.mul_f64(iters as f64 / (rounds * TASKS) as f64)
}

fn per_poll(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_poll");
    g.measurement_time(Duration::from_secs(4));
    for (name, mode) in [
        ("plain", Mode::Plain),
        ("empty_hooks", Mode::EmptyHooks),
        ("floor", Mode::Floor),
        ("floor_and_tokio_latency", Mode::FloorAndTokioLatency),
        ("lean_no_detector", Mode::LeanNoDetector),
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
