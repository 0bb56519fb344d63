//! The cost of the per-poll hook pair, in nanoseconds per poll.
//!
//! A yield storm on a current-thread runtime: 1,000 tasks each yield in turn, so every poll is
//! an empty one and the runtime polls its driver only once per round of 1,000 polls (a storm of
//! a single task would make a system call per poll and measure cold caches instead of the hooks).
//! The storm runs plainly, under the recorder in each configuration, and under two reference
//! hook pairs: `empty_hooks` (tokio calls two closures that do nothing: the price of having hooks
//! at all) and `floor` (two TSC reads and one thread-local histogram record, the least a poll
//! timer can do). The difference between a configuration and `plain` is what it adds per poll.
//!
//! `cargo bench -p loopscope --bench hooks` (`just bench-hooks`)

use std::cell::Cell;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

const TASKS: u64 = 1_000;

#[derive(Clone, Copy)]
enum Mode {
    Plain,
    EmptyHooks,
    Floor,
    Lean,
    LeanNoDetector,
    Full,
}

thread_local! {
    static FLOOR_START: Cell<u64> = const { Cell::new(0) };
    static FLOOR_BUCKETS: [Cell<u32>; 2048] = const { [const { Cell::new(0) }; 2048] };
}

fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reading the TSC has no preconditions on x86-64.
    return unsafe { core::arch::x86_64::_rdtsc() };
    #[cfg(not(target_arch = "x86_64"))]
    return quanta::Instant::now().elapsed().as_nanos() as u64;
}

fn floor_record(ticks: u64) {
    let b = (64 - ticks.leading_zeros()) as usize * 32 + (ticks & 31) as usize;
    FLOOR_BUCKETS.with(|buckets| {
        let c = &buckets[b & 2047];
        c.set(c.get().wrapping_add(1));
    });
}

/// Runs at least `iters` empty polls (whole rounds, at least 20) and returns how long `iters` of
/// them took.
fn storm(mode: Mode, iters: u64) -> Duration {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    match mode {
        Mode::EmptyHooks => {
            b.on_before_task_poll(|_| {}).on_after_task_poll(|_| {});
        }
        Mode::Floor => {
            b.on_before_task_poll(|_| FLOOR_START.with(|s| s.set(tsc())))
                .on_after_task_poll(|_| floor_record(tsc().wrapping_sub(FLOOR_START.with(Cell::get))));
        }
        _ => {}
    }
    let session = match mode {
        Mode::Plain | Mode::EmptyHooks | Mode::Floor => None,
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
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                tokio::spawn(async move {
                    for _ in 0..rounds {
                        tokio::task::yield_now().await;
                    }
                })
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
        ("lean_no_detector", Mode::LeanNoDetector),
        ("lean", Mode::Lean),
        ("full", Mode::Full),
    ] {
        g.bench_function(name, |b| b.iter_custom(|iters| storm(mode, iters)));
    }
    g.finish();
}

criterion_group!(benches, per_poll);
criterion_main!(benches);
